//! Who holds a GPU and how much of that time it worked: the compute
//! processes (exported per process in `process.rs`), and the counters
//! integrated from every sample so that `rate()` is exact over any window:
//! busy seconds, allocated seconds, idle-while-allocated seconds.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, Nvml};

use super::sample::GpuSample;
use super::{jobs, process, GpuState};
use crate::kubernetes::PodMap;
use crate::shared::Topic;
use crate::FamilyDef;

pub const BUSY_SECONDS: FamilyDef = FamilyDef::counter(
    "accel_gpu_busy_seconds_total",
    "Seconds the GPU was busy (utilisation integrated over time).",
)
.labels(&["gpu", "uuid"])
.doc("seconds the GPU was busy: at each sample, `accel_gpu_utilization_ratio` × the seconds since the GPU's previous sample is added. `rate()` gives the mean utilisation over any window, however long the scrape interval")
.source("computed from `nvmlDeviceGetUtilizationRates`")
.equivalent("none (`avg_over_time(DCGM_FI_DEV_GPU_UTIL[...]) / 100` only sees the scraped values)");

pub const ALLOCATED: FamilyDef =
    FamilyDef::gauge("accel_gpu_allocated", "1 while a process holds the GPU.")
        .labels(&["gpu", "uuid"])
        .doc("1 while a compute process holds the GPU, else 0")
        .source("`nvmlDeviceGetComputeRunningProcesses_v3`");

pub const ALLOCATED_SECONDS: FamilyDef = FamilyDef::counter(
    "accel_gpu_allocated_seconds_total",
    "Seconds a process held the GPU.",
)
.labels(&["gpu", "uuid"])
.doc("seconds the GPU was allocated")
.source("computed");

pub const IDLE_ALLOCATED_SECONDS: FamilyDef = FamilyDef::counter(
    "accel_gpu_idle_allocated_seconds_total",
    "Seconds a process held the GPU while its utilisation was under the idle threshold.",
)
.labels(&["gpu", "uuid"])
.doc("seconds the GPU was allocated while its utilisation was under the idle threshold")
.source(
    "computed from `nvmlDeviceGetComputeRunningProcesses_v3` and `nvmlDeviceGetUtilizationRates`",
);

/// Where the processes of a GPU are looked up and what they are added to.
pub(super) struct Attribution<'a> {
    /// procfs root, for each process's comm and cgroup.
    pub(super) procfs: &'a Path,
    /// Most processes reported per GPU.
    pub(super) cap: usize,
    /// The kubernetes collector's pod map.
    pub(super) pods: &'a Topic<PodMap>,
    /// Compute process pids seen this sample.
    pub(super) pids: &'a mut Vec<u32>,
    /// Slurm jobs of the processes seen this sample.
    pub(super) jobs: &'a mut Vec<jobs::ProcessJob>,
    /// The raw NVML handle, for per-process utilisation in one call.
    pub(super) raw: Option<super::raw::Raw>,
    /// How often per-process utilisation is read, and this sample's time.
    pub(super) util_every: Duration,
    pub(super) now: Instant,
}

/// Exports the GPU's compute processes and records who holds it in
/// `state`; returns whether a process holds it (`None` when NVML cannot
/// list them).
pub(super) fn processes(
    g: &mut GpuSample<'_>,
    nvml: &Nvml,
    dev: &Device<'_>,
    state: &mut GpuState,
    at: Attribution<'_>,
) -> Option<bool> {
    let procs = g.get(
        "nvmlDeviceGetComputeRunningProcesses",
        dev.running_compute_processes(),
    );
    let allocated = procs.as_ref().map(|p| !p.is_empty());
    state.busy = allocated == Some(true);
    state.held = procs.iter().flatten().map(|p| p.pid).collect();
    if let Some(procs) = procs.as_ref().filter(|p| !p.is_empty()) {
        at.pids.extend(procs.iter().map(|p| p.pid));
        // Per-process utilisation (1.4 ms a call on an H200) only while
        // processes hold the GPU, every `util_every`: the mean of the
        // driver's samples since the previous read, repeated in between.
        let due = state
            .proc_util_at
            .map_or(true, |t| at.now.duration_since(t) >= at.util_every);
        if due {
            // One raw call with room for every process (nvml-wrapper makes
            // two); NotFound means no sample since the last one.
            let samples = match at.raw {
                Some(raw) => g.get_raw(
                    "nvmlDeviceGetProcessUtilization",
                    raw.process_utilization(dev, state.proc_util_seen, procs.len() * 2 + 8),
                ),
                None => {
                    let stats = match dev.process_utilization_stats(state.proc_util_seen) {
                        Err(NvmlError::NotFound) => Ok(Vec::new()),
                        r => r,
                    };
                    g.get("nvmlDeviceGetProcessUtilization", stats).map(|v| {
                        v.into_iter()
                            .map(|s| (s.pid, s.timestamp, s.sm_util))
                            .collect()
                    })
                }
            };
            if let Some(samples) = samples {
                state.proc_util_at = Some(at.now);
                let mut sums: HashMap<u32, (f64, u32)> = HashMap::new();
                for (pid, timestamp, sm_util) in samples {
                    state.proc_util_seen = state.proc_util_seen.max(timestamp);
                    let e = sums.entry(pid).or_default();
                    e.0 += f64::from(sm_util) / 100.0;
                    e.1 += 1;
                }
                state.proc_sm = sums
                    .into_iter()
                    .map(|(pid, (sum, n))| (pid, sum / f64::from(n)))
                    .collect();
            } else {
                state.proc_sm.clear();
            }
        }
        let sm: HashMap<u32, f64> = state
            .proc_sm
            .iter()
            .filter(|(pid, _)| procs.iter().any(|p| p.pid == **pid))
            .map(|(&pid, &v)| (pid, v))
            .collect();
        let ids = crate::GpuIds {
            index: g.index,
            uuid: state.uuid.clone(),
            busy: true,
            migs: state.migs.clone(),
            ..Default::default()
        };
        let pods = at.pods.latest();
        process::export(
            g,
            nvml,
            procs,
            &sm,
            at.procfs,
            at.cap,
            &|gi| pods.pod_of(&ids, gi),
            at.jobs,
        );
    } else if allocated.is_some() {
        g.add(&process::PROCESSES, 0.0);
    }
    allocated
}

/// Adds the time since the GPU's previous sample to its counters: busy
/// seconds by utilisation (`busy`, 0-1), allocated seconds while a process
/// holds it, idle-allocated seconds while it is held with utilisation
/// under `idle_threshold`.
pub(super) fn integrate(
    g: &mut GpuSample<'_>,
    state: &mut GpuState,
    busy: Option<f64>,
    allocated: Option<bool>,
    idle_threshold: f64,
    now: Instant,
) {
    let dt = state
        .last
        .map_or(0.0, |t| now.duration_since(t).as_secs_f64());
    state.last = Some(now);
    if let Some(b) = busy {
        state.busy_seconds += b * dt;
        g.add(&BUSY_SECONDS, state.busy_seconds);
    }
    if let Some(a) = allocated {
        if a {
            state.allocated_seconds += dt;
            if busy.is_some_and(|b| b < idle_threshold) {
                state.idle_allocated_seconds += dt;
            }
        }
        g.add(&ALLOCATED, if a { 1.0 } else { 0.0 });
        g.add(&ALLOCATED_SECONDS, state.allocated_seconds);
        g.add(&IDLE_ALLOCATED_SECONDS, state.idle_allocated_seconds);
    }
}
