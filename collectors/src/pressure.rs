//! `accel_pressure_*`: pressure stall information from /proc/pressure.
//!
//! The kernel counts, per resource, the microseconds in which some task
//! (`some`) or all non-idle tasks (`full`) were stalled on it. Exported as
//! node_exporter does: `some` as `waiting`, `full` as `stalled`, in seconds.
//! I/O pressure is the first sign of a training job starved by its input
//! pipeline.

use std::path::PathBuf;

use crate::options::{options, NoOptions};
use crate::util::{parse_u64, read_to_string};
use crate::{BuildContext, Built, CollectError, Collector, FamilyDef, Sample, Spec, HOST_INTERVAL};

/// Each resource's file and the families of its `some` and `full` totals.
/// The kernel writes a `full` line for cpu since 5.13, always 0 at the
/// system level, and a `some` line for irq; node_exporter ignores both and
/// so do we.
const RESOURCES: [(&str, Option<&FamilyDef>, Option<&FamilyDef>); 4] = [
    ("cpu", Some(&CPU_WAITING), None),
    ("io", Some(&IO_WAITING), Some(&IO_STALLED)),
    ("memory", Some(&MEMORY_WAITING), Some(&MEMORY_STALLED)),
    ("irq", None, Some(&IRQ_STALLED)),
];

/// The pressure collector.
pub struct Pressure {
    dir: PathBuf,
}

/// The pressure collector's registry entry.
pub const SPEC: Spec = Spec {
    name: "pressure",
    help: "CPU, I/O and memory stall time, from /proc/pressure",
    default_enabled: true,
    default_interval: HOST_INTERVAL,
    options: options::<NoOptions>(),
    detail: "",
    families: FAMILIES,
    prefixes: &["accel_pressure_"],
    outside: &[],
    build,
};

/// `some` of /proc/pressure/cpu: time some task waited for CPU.
pub const CPU_WAITING: FamilyDef = FamilyDef::counter(
    "accel_pressure_cpu_waiting_seconds_total",
    "Total time in seconds that processes have waited for CPU.",
)
.doc("seconds during which at least one task waited for CPU")
.source("`/proc/pressure/cpu` `some`; `collectors/src/pressure.rs`")
.equivalent("`node_pressure_cpu_waiting_seconds_total`");

/// `some` of /proc/pressure/io: time some task waited for I/O.
pub const IO_WAITING: FamilyDef = FamilyDef::counter(
    "accel_pressure_io_waiting_seconds_total",
    "Total time in seconds that processes have waited for I/O.",
)
.doc("seconds during which at least one task waited for I/O")
.source("`/proc/pressure/io` `some`; `collectors/src/pressure.rs`")
.equivalent("`node_pressure_io_waiting_seconds_total`");

/// `full` of /proc/pressure/io: time every non-idle task was stalled on I/O.
pub const IO_STALLED: FamilyDef = FamilyDef::counter(
    "accel_pressure_io_stalled_seconds_total",
    "Total time in seconds no process could make progress due to I/O.",
)
.doc("seconds during which all non-idle tasks were stalled on I/O")
.source("`/proc/pressure/io` `full`; `collectors/src/pressure.rs`")
.equivalent("`node_pressure_io_stalled_seconds_total`");

/// `some` of /proc/pressure/memory: time some task waited for memory.
pub const MEMORY_WAITING: FamilyDef = FamilyDef::counter(
    "accel_pressure_memory_waiting_seconds_total",
    "Total time in seconds that processes have waited for memory.",
)
.doc("seconds during which at least one task waited for memory")
.source("`/proc/pressure/memory` `some`; `collectors/src/pressure.rs`")
.equivalent("`node_pressure_memory_waiting_seconds_total`");

/// `full` of /proc/pressure/memory: time every non-idle task was stalled on memory.
pub const MEMORY_STALLED: FamilyDef = FamilyDef::counter(
    "accel_pressure_memory_stalled_seconds_total",
    "Total time in seconds no process could make progress due to memory.",
)
.doc("seconds during which all non-idle tasks were stalled on memory")
.source("`/proc/pressure/memory` `full`; `collectors/src/pressure.rs`")
.equivalent("`node_pressure_memory_stalled_seconds_total`");

/// `full` of /proc/pressure/irq: time every non-idle task was stalled on IRQ handling.
pub const IRQ_STALLED: FamilyDef = FamilyDef::counter(
    "accel_pressure_irq_stalled_seconds_total",
    "Total time in seconds no process could make progress due to IRQ handling.",
)
.doc("seconds during which all non-idle tasks were stalled by IRQ handling. Only when `/proc/pressure/irq` exists (Linux ≥ 6.1 with `CONFIG_IRQ_TIME_ACCOUNTING`); not in the fixture tree. An `irq` `some` line, if present, is ignored")
.source("`/proc/pressure/irq` `full`; `collectors/src/pressure.rs`")
.equivalent("`node_pressure_irq_stalled_seconds_total` (node_exporter ≥ 1.10.0; none in 1.5.0)");

/// Every family this collector exports.
pub const FAMILIES: &[FamilyDef] = &[
    CPU_WAITING,
    IO_WAITING,
    IO_STALLED,
    MEMORY_WAITING,
    MEMORY_STALLED,
    IRQ_STALLED,
];

/// Builds the collector; absent when the kernel has no PSI (no
/// /proc/pressure, or PSI disabled at boot).
fn build(ctx: &BuildContext) -> Result<Built, CollectError> {
    let opts = ctx.paths;
    let dir = opts.procfs.join("pressure");
    match std::fs::read_to_string(dir.join("cpu")) {
        Ok(_) => Ok(Built::Ready(Box::new(Pressure { dir }))),
        Err(e) => Ok(Built::Absent(format!(
            "{}: {e} (kernel without pressure stall information)",
            dir.join("cpu").display()
        ))),
    }
}

/// The `some` and `full` totals in microseconds from one pressure file.
pub fn parse(text: &str) -> Result<(Option<u64>, Option<u64>), CollectError> {
    let (mut some, mut full) = (None, None);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.split_ascii_whitespace();
        let which = fields.next().unwrap_or_default();
        let total = fields
            .find_map(|f| f.strip_prefix("total="))
            .ok_or_else(|| CollectError::parse(format!("pressure line without total: {line:?}")))?;
        let total = parse_u64(total, &"pressure total")?;
        match which {
            "some" => some = Some(total),
            "full" => full = Some(total),
            other => {
                return Err(CollectError::parse(format!(
                    "unknown pressure line {other:?}"
                )))
            }
        }
    }
    Ok((some, full))
}

impl Collector for Pressure {
    fn name(&self) -> &'static str {
        "pressure"
    }

    fn sample(&mut self, out: &mut Sample) -> Result<(), CollectError> {
        for (res, waiting, stalled) in RESOURCES {
            let path = self.dir.join(res);
            // cpu, io and memory are always there with PSI; irq only with
            // CONFIG_IRQ_TIME_ACCOUNTING (kernel >= 6.1).
            if res == "irq" && !path.exists() {
                continue;
            }
            let (some, full) = parse(&read_to_string(&path)?)?;
            for (family, total) in [(waiting, some), (stalled, full)] {
                if let (Some(family), Some(v)) = (family, total) {
                    out.add(family).add(&[], v as f64 / 1e6);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_some_and_full() {
        let t = "some avg10=0.00 avg60=0.82 avg300=0.81 total=4050151\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=17\n";
        assert_eq!(parse(t).unwrap(), (Some(4050151), Some(17)));
        assert_eq!(parse("some avg10=1 total=5\n").unwrap(), (Some(5), None));
    }

    #[test]
    fn rejects_bad_lines() {
        for bad in [
            "some avg10=0.00",
            "some total=x",
            "weird total=1",
            "some total=-1",
        ] {
            assert_eq!(
                parse(bad).unwrap_err().kind,
                crate::ErrorKind::Parse,
                "{bad}"
            );
        }
    }
}
