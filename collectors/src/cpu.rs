//! `accel_cpu_*`: CPU time per cpu and mode, from /proc/stat, as
//! node_exporter's cpu collector (`node_cpu_seconds_total{cpu, mode}`).
//!
//! iowait is there: high iowait with idle GPUs is an input-bound job.

use std::path::PathBuf;

use crate::options::{options, NoOptions};
use crate::util::{parse_u64, read_to_string};
use crate::{BuildContext, Built, CollectError, Collector, FamilyDef, Sample, Spec, HOST_INTERVAL};

/// Modes of the first eight /proc/stat columns, in kernel order.
const MODES: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];

/// The cpu collector.
pub struct Cpu {
    path: PathBuf,
    ticks_per_second: f64,
}

/// The cpu collector's registry entry.
pub const SPEC: Spec = Spec {
    name: "cpu",
    help: "CPU time per cpu and mode, from /proc/stat",
    default_enabled: true,
    default_interval: HOST_INTERVAL,
    options: options::<NoOptions>(),
    detail: "Also export accel_cpu_guest_seconds_total (time spent running virtual CPUs, 2 per CPU thread), as node_exporter does.",
    families: FAMILIES,
    prefixes: &["accel_cpu_"],
    outside: &[],
    build,
};

/// Seconds per cpu and mode.
pub const SECONDS: FamilyDef = FamilyDef::counter(
    "accel_cpu_seconds_total",
    "Seconds the CPUs spent in each mode.",
)
.labels(&["cpu", "mode"])
.doc("seconds each CPU spent in each `mode`: `user`, `nice`, `system`, `idle`, `iowait`, `irq`, `softirq`, `steal`. A kernel that writes fewer columns gets fewer modes (at least 4)")
.source("`/proc/stat` columns 1–8; `collectors/src/cpu.rs`")
.equivalent("`node_cpu_seconds_total`");

/// Seconds in guests per cpu and mode.
pub const GUEST_SECONDS: FamilyDef = FamilyDef::counter(
    "accel_cpu_guest_seconds_total",
    "Seconds the CPUs spent in guests (VMs) for each mode.",
)
.labels(&["cpu", "mode"])
.doc("seconds spent running guests (VMs): `mode=\"user\"` (guest), `mode=\"nice\"` (guest_nice). The kernel also counts this time in `user` / `nice` above")
.source("`/proc/stat` columns 9–10; `collectors/src/cpu.rs`")
.equivalent("`node_cpu_guest_seconds_total`")
.detail();

/// Every family this collector exports.
pub const FAMILIES: &[FamilyDef] = &[SECONDS, GUEST_SECONDS];

/// Builds the collector.
fn build(ctx: &BuildContext) -> Result<Built, CollectError> {
    let opts = ctx.paths;
    // SAFETY: sysconf has no preconditions; it returns -1 for an unknown name.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Ok(Built::Ready(Box::new(Cpu {
        path: opts.procfs.join("stat"),
        ticks_per_second: if hz > 0 { hz as f64 } else { 100.0 },
    })))
}

/// One per-cpu line of /proc/stat: the cpu number and its tick counters
/// (user, nice, system, idle, iowait, irq, softirq, steal, guest,
/// guest_nice; older kernels give fewer).
pub fn parse(text: &str) -> Result<Vec<(String, Vec<u64>)>, CollectError> {
    let mut cpus = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(id) = fields.next().and_then(|f| f.strip_prefix("cpu")) else {
            continue;
        };
        if id.is_empty() {
            continue; // the aggregate line
        }
        if !id.bytes().all(|b| b.is_ascii_digit()) || id.parse::<u32>().is_err() {
            return Err(CollectError::parse(format!(
                "/proc/stat: bad cpu line {line:?}"
            )));
        }
        let ticks = fields
            .map(|f| parse_u64(f, &format_args!("/proc/stat cpu{id}")))
            .collect::<Result<Vec<_>, _>>()?;
        if ticks.len() < 4 {
            return Err(CollectError::parse(format!(
                "/proc/stat: short cpu line {line:?}"
            )));
        }
        cpus.push((id.to_owned(), ticks));
    }
    if cpus.is_empty() {
        return Err(CollectError::parse("/proc/stat: no per-cpu lines"));
    }
    Ok(cpus)
}

impl Collector for Cpu {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn sample(&mut self, out: &mut Sample) -> Result<(), CollectError> {
        let cpus = parse(&read_to_string(&self.path)?)?;
        let hz = self.ticks_per_second;
        let secs = out.add(&SECONDS);
        for (cpu, ticks) in &cpus {
            for (mode, t) in MODES.iter().zip(ticks) {
                secs.add(&[("cpu", cpu), ("mode", mode)], *t as f64 / hz);
            }
        }
        let guest = out.add(&GUEST_SECONDS);
        for (cpu, ticks) in &cpus {
            for (mode, t) in ["user", "nice"].iter().zip(ticks.iter().skip(8)) {
                guest.add(&[("cpu", cpu), ("mode", mode)], *t as f64 / hz);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_per_cpu_lines_only() {
        let t = "cpu  10 0 5 100 1 0 0 0 0 0\ncpu0 552 1 601 14472 13 2 3 12 7 0\ncpu1 1 2 3 4\nintr 1 2\nctxt 9\n";
        let cpus = parse(t).unwrap();
        assert_eq!(cpus.len(), 2);
        assert_eq!(cpus[0].0, "0");
        assert_eq!(cpus[0].1[8], 7);
        assert_eq!(cpus[1].1, vec![1, 2, 3, 4]);
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["cpu0 1 2 x 4", "cpuX 1 2 3 4", "cpu0 1 2", "intr 1"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
