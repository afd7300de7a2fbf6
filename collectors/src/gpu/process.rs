//! Per-process GPU series: the compute processes holding each GPU, with
//! their command name, capped per GPU. Series of a process that exited
//! disappear with the next sample (every sample is built afresh).

use std::path::Path;

use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::struct_wrappers::device::ProcessInfo;

use super::GpuSample;

/// The command name of `pid` from procfs, or "" when it cannot be read (the
/// process ran in another pid namespace, or just exited).
fn comm(procfs: &Path, pid: u32) -> String {
    std::fs::read_to_string(procfs.join(pid.to_string()).join("comm"))
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_default()
}

pub(super) fn export(g: &mut GpuSample<'_>, procs: &[ProcessInfo], procfs: &Path, cap: usize) {
    let mut procs: Vec<&ProcessInfo> = procs.iter().collect();
    // Keep the biggest users when over the cap.
    procs.sort_by_key(|p| {
        std::cmp::Reverse(match p.used_gpu_memory {
            UsedGpuMemory::Used(b) => b,
            UsedGpuMemory::Unavailable => 0,
        })
    });
    g.gauge(
        "accel_gpu_processes",
        "Compute processes holding the GPU.",
        procs.len() as f64,
    );
    let (gpu, uuid) = (g.labels[0].1.clone(), g.labels[1].1.clone());
    for p in procs.into_iter().take(cap) {
        let pid = p.pid.to_string();
        let comm = comm(procfs, p.pid);
        let labels = [
            ("gpu", gpu.as_str()),
            ("uuid", uuid.as_str()),
            ("pid", pid.as_str()),
            ("comm", comm.as_str()),
        ];
        if let UsedGpuMemory::Used(bytes) = p.used_gpu_memory {
            g.out
                .gauge(
                    "accel_gpu_process_memory_used_bytes",
                    "GPU memory used by a process, in bytes.",
                )
                .add(&labels, bytes as f64);
        }
    }
}
