//! `accel_load{1,5,15}` and the kernel's process counters: load averages
//! from /proc/loadavg and context switches, forks, interrupts, runnable and
//! blocked processes and boot time from /proc/stat, named and computed as
//! node_exporter's `loadavg` and `stat` collectors (`node_load1`,
//! `node_context_switches_total`, ...).
//!
//! On a training node, `procs_blocked` rising with idle GPUs is the data
//! loader waiting on storage; a load far above the CPU count with idle GPUs
//! is a host-CPU-bound input pipeline.
//!
//! The first collector written on the framework: this module and its line in
//! the registry are all there is to it (docs/development.md).

use std::path::PathBuf;

use crate::options::{options, NoOptions};
use crate::util::{parse_u64, read_to_string};
use crate::{BuildContext, Built, CollectError, Collector, FamilyDef, Sample, Spec, HOST_INTERVAL};

/// The load collector's registry entry.
pub const SPEC: Spec = Spec {
    name: "load",
    help: "load averages from /proc/loadavg; context switches, forks, interrupts, running and blocked processes and boot time from /proc/stat",
    default_enabled: true,
    default_interval: HOST_INTERVAL,
    options: options::<NoOptions>(),
    detail: "",
    families: FAMILIES,
    prefixes: &[
        "accel_load",
        "accel_boot_time_",
        "accel_context_switches_",
        "accel_forks_",
        "accel_intr_",
        "accel_procs_",
    ],
    outside: &[],
    build,
};

/// `accel_load1`.
pub const LOAD1: FamilyDef = FamilyDef::gauge("accel_load1", "1m load average.")
    .doc("load average over 1 minute: runnable plus uninterruptible (D state) tasks")
    .source("`/proc/loadavg` field 1")
    .equivalent("`node_load1`");
/// `accel_load5`.
pub const LOAD5: FamilyDef = FamilyDef::gauge("accel_load5", "5m load average.")
    .doc("load average over 5 minutes")
    .source("`/proc/loadavg` field 2")
    .equivalent("`node_load5`");
/// `accel_load15`.
pub const LOAD15: FamilyDef = FamilyDef::gauge("accel_load15", "15m load average.")
    .doc("load average over 15 minutes")
    .source("`/proc/loadavg` field 3")
    .equivalent("`node_load15`");
/// `accel_boot_time_seconds`.
pub const BOOT_TIME: FamilyDef =
    FamilyDef::gauge("accel_boot_time_seconds", "Node boot time, in unixtime.")
        .doc("Unix time at which the machine booted")
        .source("`/proc/stat` `btime`")
        .equivalent("`node_boot_time_seconds`");
/// `accel_context_switches_total`.
pub const CONTEXT_SWITCHES: FamilyDef = FamilyDef::counter(
    "accel_context_switches_total",
    "Total number of context switches.",
)
.doc("context switches on every CPU since boot")
.source("`/proc/stat` `ctxt`")
.equivalent("`node_context_switches_total`");
/// `accel_forks_total`.
pub const FORKS: FamilyDef = FamilyDef::counter("accel_forks_total", "Total number of forks.")
    .doc("processes and threads created since boot")
    .source("`/proc/stat` `processes`")
    .equivalent("`node_forks_total`");
/// `accel_intr_total`.
pub const INTERRUPTS: FamilyDef =
    FamilyDef::counter("accel_intr_total", "Total number of interrupts serviced.")
        .doc("interrupts serviced since boot, all sources")
        .source("`/proc/stat` `intr` (first number)")
        .equivalent("`node_intr_total`");
/// `accel_procs_running`.
pub const PROCS_RUNNING: FamilyDef = FamilyDef::gauge(
    "accel_procs_running",
    "Number of processes in runnable state.",
)
.doc("tasks runnable now (running or waiting for a CPU)")
.source("`/proc/stat` `procs_running`")
.equivalent("`node_procs_running`");
/// `accel_procs_blocked`.
pub const PROCS_BLOCKED: FamilyDef = FamilyDef::gauge(
    "accel_procs_blocked",
    "Number of processes blocked waiting for I/O to complete.",
)
.doc("tasks blocked waiting for I/O now: a data loader stuck on storage shows here")
.source("`/proc/stat` `procs_blocked`")
.equivalent("`node_procs_blocked`");

/// Every family this collector exports.
pub const FAMILIES: &[FamilyDef] = &[
    LOAD1,
    LOAD5,
    LOAD15,
    BOOT_TIME,
    CONTEXT_SWITCHES,
    FORKS,
    INTERRUPTS,
    PROCS_RUNNING,
    PROCS_BLOCKED,
];

/// The /proc/stat keys read, in output order, and their families.
const STAT_KEYS: [(&str, &FamilyDef); 6] = [
    ("btime", &BOOT_TIME),
    ("ctxt", &CONTEXT_SWITCHES),
    ("processes", &FORKS),
    ("intr", &INTERRUPTS),
    ("procs_running", &PROCS_RUNNING),
    ("procs_blocked", &PROCS_BLOCKED),
];

/// The load collector.
pub struct Load {
    loadavg: PathBuf,
    stat: PathBuf,
}

fn build(ctx: &BuildContext) -> Result<Built, CollectError> {
    Ok(Built::Ready(Box::new(Load {
        loadavg: ctx.paths.procfs.join("loadavg"),
        stat: ctx.paths.procfs.join("stat"),
    })))
}

/// The three load averages of /proc/loadavg.
pub fn parse_loadavg(text: &str) -> Result<[f64; 3], CollectError> {
    let mut fields = text.split_ascii_whitespace();
    let mut out = [0.0; 3];
    for (i, v) in out.iter_mut().enumerate() {
        let f = fields
            .next()
            .ok_or_else(|| CollectError::parse(format!("/proc/loadavg: {} fields, want 3", i)))?;
        *v = f
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| CollectError::parse(format!("/proc/loadavg: bad load {f:?}")))?;
    }
    Ok(out)
}

/// The values of [`STAT_KEYS`] found in /proc/stat, by index; a key the
/// kernel does not write is `None`. A present key with a bad value is an
/// error.
pub fn parse_stat(text: &str) -> Result<[Option<u64>; 6], CollectError> {
    let mut out = [None; 6];
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(key) = fields.next() else { continue };
        if let Some(i) = STAT_KEYS.iter().position(|(k, _)| *k == key) {
            let v = fields
                .next()
                .ok_or_else(|| CollectError::parse(format!("/proc/stat: {key} without value")))?;
            out[i] = Some(parse_u64(v, &format_args!("/proc/stat {key}"))?);
        }
    }
    Ok(out)
}

impl Collector for Load {
    fn name(&self) -> &'static str {
        "load"
    }

    fn sample(&mut self, out: &mut Sample) -> Result<(), CollectError> {
        let [l1, l5, l15] = parse_loadavg(&read_to_string(&self.loadavg)?)?;
        out.add(&LOAD1).add(&[], l1);
        out.add(&LOAD5).add(&[], l5);
        out.add(&LOAD15).add(&[], l15);
        let stat = parse_stat(&read_to_string(&self.stat)?)?;
        if stat.iter().all(Option::is_none) {
            return Err(CollectError::parse(
                "/proc/stat: none of btime, ctxt, processes, intr, procs_running, procs_blocked",
            ));
        }
        out.add_known(STAT_KEYS.iter().map(|(_, f)| *f).zip(stat));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_loadavg() {
        assert_eq!(
            parse_loadavg("0.41 1.50 12.00 3/812 99182\n").unwrap(),
            [0.41, 1.5, 12.0]
        );
        for bad in ["", "0.4 0.3", "x 1 2", "-1 0 0", "NaN 1 1", "inf 1 1"] {
            assert!(parse_loadavg(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parses_stat_keys() {
        let text = "cpu  1 2 3 4\nintr 18346144 0 9 0\nctxt 9182736451\nbtime 1716200123\nprocesses 3827164\nprocs_running 5\nprocs_blocked 2\nsoftirq 1 2\n";
        assert_eq!(
            parse_stat(text).unwrap(),
            [
                Some(1716200123),
                Some(9182736451),
                Some(3827164),
                Some(18346144),
                Some(5),
                Some(2)
            ]
        );
        assert_eq!(parse_stat("cpu 1 2\n").unwrap(), [None; 6]);
        assert!(parse_stat("ctxt\n").is_err());
        assert!(parse_stat("ctxt -3\n").is_err());
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC{0,200}") {
            let _ = parse_loadavg(&s);
            let _ = parse_stat(&s);
        }

        #[test]
        fn stat_like_input_never_panics(
            lines in proptest::collection::vec(
                "(ctxt|btime|intr|processes|procs_running|procs_blocked|cpu0)( [0-9-]{0,22}){0,3}",
                0..10,
            )
        ) {
            let _ = parse_stat(&lines.join("\n"));
        }
    }
}
