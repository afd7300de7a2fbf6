//! `process_*`: the agent's own CPU time, memory, file descriptors and
//! threads, under the names every Prometheus client library uses, so the
//! agent's cost is on the Agent dashboard beside what it measures. Always
//! read from the real /proc/self, whatever `--path.procfs` says.
//!
//! `accel_process_*`: the training processes (see [`crate::workload`]).

use std::path::PathBuf;

use crate::options::{options, parse_regex};
use crate::procfs::parse_stat;
use crate::util::{parse_u64, read_to_string};
use crate::workload::{compile_match, WorkloadOptions, Workloads};
use crate::{BuildContext, Built, CollectError, Collector, FamilyDef, Sample, Spec, HOST_INTERVAL};

/// The process collector.
pub struct Process {
    proc: PathBuf,
    ticks_per_second: f64,
    page_size: f64,
    workloads: Workloads,
}

/// The process collector's options: which training processes it follows.
#[derive(clap::Args, Clone, Debug, PartialEq)]
pub struct ProcessOptions {
    /// Command names to follow besides the GPU processes.
    #[arg(
        id = "collector.process.match",
        long = "collector.process.match",
        value_name = "REGEX",
        help = "Also follow processes whose command name (/proc/PID/comm) matches this regexp, besides those holding GPUs (accel_process_*).",
        value_parser = parse_regex
    )]
    pub r#match: Option<String>,
    /// Most processes followed.
    #[arg(
        id = "collector.process.max",
        long = "collector.process.max",
        value_name = "N",
        help = "Most processes the process collector follows (GPU processes first).",
        default_value = "32"
    )]
    pub max: usize,
    /// Whether to count with perf events.
    #[arg(
        id = "collector.process.perf",
        long = "collector.process.perf",
        value_name = "BOOL",
        help = "Count the followed processes' task clock, cycles and instructions with perf events (true or false).",
        default_value = "true",
        action = clap::ArgAction::Set
    )]
    pub perf: bool,
    /// Processes always followed (`accel-agent profile --pid`); no flag.
    #[arg(skip)]
    pub pids: Vec<u32>,
}

/// The process collector's registry entry.
pub const SPEC: Spec = Spec {
    name: "process",
    help: "the agent's own CPU time, memory, file descriptors and threads (process_*), and the GPU and matched processes' CPU, memory, I/O and perf counters (accel_process_*)",
    default_enabled: true,
    default_interval: HOST_INTERVAL,
    options: options::<ProcessOptions>(),
    detail: "",
    families: FAMILIES,
    prefixes: &["process_", "accel_process_"],
    outside: &["accel_collector_feature_enabled"],
    build,
};

// The agent's own series (`process_*`).

/// The agent's CPU time.
pub const CPU_SECONDS: FamilyDef = FamilyDef::counter(
    "process_cpu_seconds_total",
    "Total user and system CPU time spent in seconds.",
)
.doc("user + system CPU time of the agent, seconds")
.source("`/proc/self/stat` fields 14, 15")
.equivalent("the same name in client_golang");

/// The agent's resident set.
pub const RESIDENT_MEMORY: FamilyDef = FamilyDef::gauge(
    "process_resident_memory_bytes",
    "Resident memory size in bytes.",
)
.doc("resident set size, bytes")
.source("`/proc/self/stat` field 24 x page size")
.equivalent("the same");

/// The agent's virtual memory.
pub const VIRTUAL_MEMORY: FamilyDef = FamilyDef::gauge(
    "process_virtual_memory_bytes",
    "Virtual memory size in bytes.",
)
.doc("virtual memory size, bytes")
.source("`/proc/self/stat` field 23")
.equivalent("the same");

/// The agent's threads.
pub const THREADS: FamilyDef =
    FamilyDef::gauge("process_threads", "Number of OS threads in the process.")
        .doc("OS threads (HTTP, one sampler per collector, the GPU event thread)")
        .source("`/proc/self/stat` field 20")
        .equivalent("`go_threads`");

/// When the agent started.
pub const START_TIME: FamilyDef = FamilyDef::gauge(
    "process_start_time_seconds",
    "Start time of the process since unix epoch in seconds.",
)
.doc("start time, Unix seconds")
.source("`/proc/stat` `btime` + field 22")
.equivalent("the same");

/// The agent's open files.
pub const OPEN_FDS: FamilyDef =
    FamilyDef::gauge("process_open_fds", "Number of open file descriptors.")
        .doc("open file descriptors")
        .source("`/proc/self/fd`")
        .equivalent("the same");

/// The agent's open-files limit.
pub const MAX_FDS: FamilyDef = FamilyDef::gauge(
    "process_max_fds",
    "Maximum number of open file descriptors.",
)
.doc("the open-files limit")
.source("`/proc/self/limits`")
.equivalent("the same");

// The training processes' series (`accel_process_*`, filled in
// [`crate::workload`]).

/// Each followed process and its owner.
pub const WORKLOAD_INFO: FamilyDef = FamilyDef::gauge(
    "accel_process_info",
    "A process the agent follows (it holds a GPU, or its command matches --collector.process.match), with its owner; always 1.",
)
.labels(&["pid", "comm", "unit", "container", "slurm_job", "reason"])
.doc("always 1")
.source("`/proc/PID/comm`, `/proc/PID/cgroup`");

/// CPU time by mode.
pub const WORKLOAD_CPU_SECONDS: FamilyDef = FamilyDef::counter(
    "accel_process_cpu_seconds_total",
    "CPU time of the process and its threads, by mode, in seconds (/proc/PID/stat).",
)
.labels(&["pid", "comm", "mode"])
.doc("CPU seconds of the process and its threads, by `mode` (`user`, `system`)")
.source("`/proc/PID/stat` 14, 15");

/// Threads.
pub const WORKLOAD_THREADS: FamilyDef =
    FamilyDef::gauge("accel_process_threads", "Threads of the process.")
        .labels(&["pid", "comm"])
        .doc("threads")
        .source("`/proc/PID/stat` 20");

/// Resident set.
pub const WORKLOAD_RESIDENT_MEMORY: FamilyDef = FamilyDef::gauge(
    "accel_process_resident_memory_bytes",
    "Resident memory of the process, in bytes.",
)
.labels(&["pid", "comm"])
.doc("resident set, bytes")
.source("`/proc/PID/stat` 24 x page size");

/// Page faults by kind.
pub const WORKLOAD_PAGE_FAULTS: FamilyDef = FamilyDef::counter(
    "accel_process_page_faults_total",
    "Page faults of the process, by kind: minor (no I/O) or major (read from storage).",
)
.labels(&["pid", "comm", "kind"])
.doc("page faults by `kind` (`minor`, `major`); major ones read from storage")
.source("`/proc/PID/stat` 10, 12");

/// Context switches by kind.
pub const WORKLOAD_CONTEXT_SWITCHES: FamilyDef = FamilyDef::counter(
    "accel_process_context_switches_total",
    "Context switches of the process's threads: voluntary (it waited, e.g. for I/O or a lock) or involuntary (preempted).",
)
.labels(&["pid", "comm", "kind"])
.doc("context switches by `kind` (`voluntary`, `involuntary`), summed over threads (exited threads kept)")
.source("`/proc/PID/task/*/status`");

/// Storage reads.
pub const WORKLOAD_READ_BYTES: FamilyDef = FamilyDef::counter(
    "accel_process_read_bytes_total",
    "Bytes the process caused to be read from storage (/proc/PID/io read_bytes).",
)
.labels(&["pid", "comm"])
.doc("bytes the process made the storage layer read (page-cache hits are not reads)")
.source("`/proc/PID/io` `read_bytes`");

/// Storage writes.
pub const WORKLOAD_WRITE_BYTES: FamilyDef = FamilyDef::counter(
    "accel_process_write_bytes_total",
    "Bytes the process caused to be written to storage (/proc/PID/io write_bytes).",
)
.labels(&["pid", "comm"])
.doc("bytes the process made the storage layer write")
.source("`/proc/PID/io` `write_bytes`");

/// perf task clock.
pub const WORKLOAD_TASK_CLOCK: FamilyDef = FamilyDef::counter(
    "accel_process_task_clock_seconds_total",
    "CPU time of the process's threads from the perf task clock (nanosecond precision), in seconds; threads that exited included.",
)
.labels(&["pid", "comm"])
.doc("CPU time from the perf task clock (ns precision, not ticks), since the agent began following the process; exited threads kept")
.source("`perf_event_open` `PERF_COUNT_SW_TASK_CLOCK`, one group per thread (at most 256 threads)");

/// perf cycles.
pub const WORKLOAD_CYCLES: FamilyDef = FamilyDef::counter(
    "accel_process_cycles_total",
    "CPU cycles of the process's threads (perf hardware counter, scaled for multiplexing).",
)
.labels(&["pid", "comm"])
.doc("CPU cycles, scaled for multiplexing; only where the kernel exposes a PMU (not in most VMs)")
.source("`PERF_COUNT_HW_CPU_CYCLES` in the same group");

/// perf instructions.
pub const WORKLOAD_INSTRUCTIONS: FamilyDef = FamilyDef::counter(
    "accel_process_instructions_total",
    "Instructions retired by the process's threads (perf hardware counter, scaled for multiplexing).",
)
.labels(&["pid", "comm"])
.doc("instructions retired, scaled for multiplexing; only where the kernel exposes a PMU (not in most VMs)")
.source("`PERF_COUNT_HW_INSTRUCTIONS` in the same group");

/// Which optional parts of the process collector work here.
pub const FEATURE_ENABLED: FamilyDef = FamilyDef::gauge(
    "accel_collector_feature_enabled",
    "1 where an optional part of a collector works on this machine, 0 where it does not (see the log for why).",
)
.labels(&["collector", "feature"])
.doc("1 where the part works here, 0 where not; the log says why, once. `collector=\"process\"`; `feature`: `perf_task_clock`, `perf_kernel_time`, `perf_hardware`")
.source("first `perf_event_open`");

/// Every family this collector exports.
pub const FAMILIES: &[FamilyDef] = &[
    CPU_SECONDS,
    RESIDENT_MEMORY,
    VIRTUAL_MEMORY,
    THREADS,
    START_TIME,
    OPEN_FDS,
    MAX_FDS,
    WORKLOAD_INFO,
    WORKLOAD_CPU_SECONDS,
    WORKLOAD_THREADS,
    WORKLOAD_RESIDENT_MEMORY,
    WORKLOAD_PAGE_FAULTS,
    WORKLOAD_CONTEXT_SWITCHES,
    WORKLOAD_READ_BYTES,
    WORKLOAD_WRITE_BYTES,
    WORKLOAD_TASK_CLOCK,
    WORKLOAD_CYCLES,
    WORKLOAD_INSTRUCTIONS,
    FEATURE_ENABLED,
];

/// Builds the collector.
fn build(ctx: &BuildContext) -> Result<Built, CollectError> {
    let o = ctx.options::<ProcessOptions>();
    let workload = WorkloadOptions {
        matcher: o
            .r#match
            .as_deref()
            .map(compile_match)
            .transpose()
            .map_err(CollectError::parse)?,
        max: o.max,
        perf: o.perf,
        pids: o.pids.clone(),
    };
    // SAFETY: sysconf has no preconditions; it returns -1 for an unknown name.
    let (hz, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let ticks_per_second = if hz > 0 { hz as f64 } else { 100.0 };
    let page_size = if page > 0 { page as f64 } else { 4096.0 };
    Ok(Built::Ready(Box::new(Process {
        proc: PathBuf::from("/proc"),
        ticks_per_second,
        page_size,
        workloads: Workloads::new(
            ctx.paths.procfs.clone(),
            workload,
            ctx.shared.gpus.clone(),
            ticks_per_second,
            page_size,
        ),
    })))
}

impl Collector for Process {
    fn name(&self) -> &'static str {
        "process"
    }

    fn sample(&mut self, out: &mut Sample) -> Result<(), CollectError> {
        let me = self.proc.join("self");
        let stat = parse_stat(&read_to_string(&me.join("stat"))?)?;
        let hz = self.ticks_per_second;
        out.add(&CPU_SECONDS)
            .add(&[], (stat.utime + stat.stime) as f64 / hz);
        out.add(&RESIDENT_MEMORY)
            .add(&[], stat.rss_pages as f64 * self.page_size);
        out.add(&VIRTUAL_MEMORY).add(&[], stat.vsize as f64);
        out.add(&THREADS).add(&[], stat.threads as f64);
        let btime = read_to_string(&self.proc.join("stat"))?
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .map(|v| parse_u64(v.trim(), &"btime"))
            .transpose()?;
        if let Some(btime) = btime {
            out.add(&START_TIME)
                .add(&[], btime as f64 + stat.starttime as f64 / hz);
        }
        if let Ok(fds) = std::fs::read_dir(me.join("fd")) {
            out.add(&OPEN_FDS).add(&[], fds.count() as f64);
        }
        let limits = read_to_string(&me.join("limits"))?;
        if let Some(max) = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_ascii_whitespace().nth(3))
            .and_then(|v| v.parse::<f64>().ok())
        {
            out.add(&MAX_FDS).add(&[], max);
        }
        self.workloads.sample(out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_process() {
        let opts = crate::options::defaults::<ProcessOptions>();
        let built = crate::build_with(&SPEC, &Default::default(), &opts, &Default::default());
        let Built::Ready(mut c) = built.unwrap() else {
            panic!()
        };
        let mut s = Sample::new();
        c.sample(&mut s).unwrap();
        let mut text = String::new();
        s.encode_text(&mut text);
        for f in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
            "process_threads ",
        ] {
            assert!(text.contains(f), "{f} missing:\n{text}");
        }
    }
}
