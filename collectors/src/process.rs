//! `process_*`: the agent's own CPU time, memory, file descriptors and
//! threads, under the names every Prometheus client library uses, so the
//! agent's cost is on the Agent dashboard beside what it measures. Always
//! read from the real /proc/self, whatever `--path.procfs` says.
//!
//! `accel_process_*`: the training processes (see [`crate::workload`]).

use std::path::PathBuf;

use crate::options::{options, parse_regex};
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
    families: FAMILIES,
    prefixes: &["process_", "accel_process_"],
    outside: &[],
    build,
};

/// Every family this collector exports.
pub const FAMILIES: &[FamilyDef] = &[];

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

/// The fields of /proc/PID/stat after the command name: utime, stime,
/// num_threads, starttime, vsize and rss (fields 14, 15, 20, 22, 23, 24).
pub fn parse_stat(text: &str) -> Result<[u64; 6], CollectError> {
    // The command name is in parentheses and may hold spaces or ')'.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| CollectError::parse("stat: no command name"))?;
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    // `rest` starts at field 3 (state).
    let at = |n: usize| {
        f.get(n - 3)
            .ok_or_else(|| CollectError::parse(format!("stat: no field {n}")))
            .and_then(|v| parse_u64(v, &format_args!("stat field {n}")))
    };
    Ok([at(14)?, at(15)?, at(20)?, at(22)?, at(23)?, at(24)?])
}

impl Collector for Process {
    fn name(&self) -> &'static str {
        "process"
    }

    fn sample(&mut self, out: &mut Sample) -> Result<(), CollectError> {
        let me = self.proc.join("self");
        let [utime, stime, threads, start, vsize, rss] =
            parse_stat(&read_to_string(&me.join("stat"))?)?;
        let hz = self.ticks_per_second;
        out.counter(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
        )
        .add(&[], (utime + stime) as f64 / hz);
        out.gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
        )
        .add(&[], rss as f64 * self.page_size);
        out.gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
        )
        .add(&[], vsize as f64);
        out.gauge("process_threads", "Number of OS threads in the process.")
            .add(&[], threads as f64);
        let btime = read_to_string(&self.proc.join("stat"))?
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .map(|v| parse_u64(v.trim(), &"btime"))
            .transpose()?;
        if let Some(btime) = btime {
            out.gauge(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
            )
            .add(&[], btime as f64 + start as f64 / hz);
        }
        if let Ok(fds) = std::fs::read_dir(me.join("fd")) {
            out.gauge("process_open_fds", "Number of open file descriptors.")
                .add(&[], fds.count() as f64);
        }
        let limits = read_to_string(&me.join("limits"))?;
        if let Some(max) = limits
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .and_then(|l| l.split_ascii_whitespace().nth(3))
            .and_then(|v| v.parse::<f64>().ok())
        {
            out.gauge(
                "process_max_fds",
                "Maximum number of open file descriptors.",
            )
            .add(&[], max);
        }
        self.workloads.sample(out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_names() {
        let line = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 7 0 123456 987654321 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n";
        assert_eq!(
            parse_stat(line).unwrap(),
            [250, 75, 7, 123456, 987654321, 2048]
        );
        assert!(parse_stat("4242 (x) S 1 2").is_err());
        assert!(parse_stat("no parens").is_err());
    }

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
