//! Per-process GPU series: the compute processes holding each GPU, with
//! their command name and what /proc/PID/cgroup says they belong to (a
//! systemd unit, a container, a Slurm job, a Kubernetes pod: see
//! [`crate::cgroup`]), capped per GPU. Every sample is
//! built afresh, so the series of a process that exited disappear with the
//! next sample.

use std::collections::HashMap;
use std::path::Path;

use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::struct_wrappers::device::ProcessInfo;
use nvml_wrapper::Nvml;

use super::jobs::ProcessJob;
use super::sample::GpuSample;
use crate::{cgroup, FamilyDef};

pub const PROCESSES: FamilyDef =
    FamilyDef::gauge("accel_gpu_processes", "Compute processes holding the GPU.")
        .labels(&["gpu", "uuid"])
        .doc("compute processes holding the GPU (0 when none)")
        .source("`nvmlDeviceGetComputeRunningProcesses_v3`");

pub const PROCESS_INFO: FamilyDef = FamilyDef::gauge(
    "accel_gpu_process_info",
    "A process holding the GPU, with its command and owner (systemd unit, container id, Kubernetes namespace and pod, Slurm job id); always 1.",
)
.labels(&["gpu", "uuid", "pid", "comm", "unit", "container", "namespace", "pod", "slurm_job", "gpu_instance"])
.doc("always 1, one per process (up to the cap). `gpu_instance` is the MIG GPU instance id, `\"\"` without MIG. `namespace` and `pod` are set when the process's cgroup is a Kubernetes pod's (`kubepods…pod<uid>`) and the `kubernetes` collector's last answer gives the GPU (or the process's MIG instance) to exactly one pod; `\"\"` otherwise (a host process, a GPU shared by several pods through replicas, the kubernetes collector off)")
.source("`nvmlDeviceGetComputeRunningProcesses_v3` (`pid`, `gpuInstanceId`); `/proc/PID/comm`, `/proc/PID/cgroup`")
.equivalent("none (dcgm-exporter has no per-process series; it labels GPUs with the Kubernetes pod that was allocated them)");

pub const PROCESS_MEMORY_USED_BYTES: FamilyDef = FamilyDef::gauge(
    "accel_gpu_process_memory_used_bytes",
    "GPU memory used by a process, in bytes.",
)
.labels(&["gpu", "uuid", "pid"])
.doc("GPU memory used by the process, bytes. Left out when NVML reports it unavailable")
.source("`nvmlDeviceGetComputeRunningProcesses_v3` (`usedGpuMemory`)");

pub const PROCESS_SM_UTILIZATION_RATIO: FamilyDef = FamilyDef::gauge(
    "accel_gpu_process_sm_utilization_ratio",
    "Fraction of the last sample period in which a kernel of the process ran (0-1).",
)
.labels(&["gpu", "uuid", "pid"])
.doc("fraction of the driver's sample period in which a kernel of the process ran. Left out for a process that has no new driver sample since the previous collector sample")
.source("`nvmlDeviceGetProcessUtilization` (`smUtil`) ÷ 100");

/// The command name of `pid` from procfs, or "" when it cannot be read (the
/// process ran in another pid namespace, or just exited).
pub(super) fn comm(procfs: &Path, pid: u32) -> String {
    std::fs::read_to_string(procfs.join(pid.to_string()).join("comm"))
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_default()
}

/// Exports one GPU's processes; `sm_util` maps pid to its SM utilisation
/// (0-1) where NVML gives it; `pod_of` gives the (namespace, pod) holding
/// the GPU (or the GPU instance a process runs in), when exactly one does.
/// The Slurm jobs of all its processes, the ones past the cap included, are
/// added to `jobs`.
// The attribution sources (pod map, job list) arrived from two features;
// bundling them in a struct would only rename the same arguments.
#[allow(clippy::too_many_arguments)]
pub(super) fn export(
    g: &mut GpuSample<'_>,
    nvml: &Nvml,
    procs: &[ProcessInfo],
    sm_util: &HashMap<u32, f64>,
    procfs: &Path,
    cap: usize,
    pod_of: &dyn Fn(Option<u32>) -> Option<(String, String)>,
    jobs: &mut Vec<ProcessJob>,
) {
    let mut procs: Vec<&ProcessInfo> = procs.iter().collect();
    // Keep the biggest users when over the cap.
    procs.sort_by_key(|p| {
        std::cmp::Reverse(match p.used_gpu_memory {
            UsedGpuMemory::Used(b) => b,
            UsedGpuMemory::Unavailable => 0,
        })
    });
    g.add(&PROCESSES, procs.len() as f64);
    for p in procs.iter().skip(cap) {
        let job = cgroup::owner(procfs, p.pid).job;
        if !job.is_empty() {
            jobs.push(ProcessJob {
                gpu: g.index,
                gpu_instance: p.gpu_instance_id,
                job,
            });
        }
    }
    for p in procs.into_iter().take(cap) {
        let pid = p.pid.to_string();
        let mut comm = comm(procfs, p.pid);
        if comm.is_empty() {
            // Not in our /proc (another pid namespace): NVML knows its name.
            comm = nvml
                .sys_process_name(p.pid, 256)
                .ok()
                .and_then(|n| n.rsplit('/').next().map(str::to_owned))
                .unwrap_or_default();
        }
        let o = cgroup::owner(procfs, p.pid);
        if !o.job.is_empty() {
            jobs.push(ProcessJob {
                gpu: g.index,
                gpu_instance: p.gpu_instance_id,
                job: o.job.clone(),
            });
        }
        // Under MIG, the instance the process runs in.
        let gi = p.gpu_instance_id.map(|i| i.to_string()).unwrap_or_default();
        // Only a process whose cgroup is a pod's is given the pod that the
        // kubelet says holds its GPU: a host process on that GPU is not.
        let (namespace, pod) = if o.pod_uid.is_empty() {
            Default::default()
        } else {
            pod_of(p.gpu_instance_id).unwrap_or_default()
        };
        let labels = [
            ("pid", pid.as_str()),
            ("comm", comm.as_str()),
            ("unit", o.unit.as_str()),
            ("container", o.container.as_str()),
            ("namespace", namespace.as_str()),
            ("pod", pod.as_str()),
            // Not `job`: Prometheus would rename it, as the target label `job` wins.
            ("slurm_job", o.job.as_str()),
            ("gpu_instance", gi.as_str()),
        ];
        g.put(&PROCESS_INFO, &labels, 1.0);
        let key = [("pid", pid.as_str())];
        if let UsedGpuMemory::Used(bytes) = p.used_gpu_memory {
            g.put(&PROCESS_MEMORY_USED_BYTES, &key, bytes as f64);
        }
        if let Some(u) = sm_util.get(&p.pid) {
            g.put(&PROCESS_SM_UTILIZATION_RATIO, &key, *u);
        }
    }
}
