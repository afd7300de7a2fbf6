//! The summary and the verdict as the text `accel-agent profile` prints
//! (and the HTML report embeds).

use super::diagnosis::{pct, Diagnosis};
use super::summary::{Stats, Summary};

fn fmt_stats(s: Option<Stats>, scale: f64, unit: &str) -> String {
    match s {
        None => "-".into(),
        Some(s) => format!(
            "{:.1}/{:.1}/{:.1}{unit}",
            s.mean * scale,
            s.p50 * scale,
            s.p95 * scale
        ),
    }
}

/// The summary as text.
pub fn render(s: &Summary, d: &Diagnosis) -> String {
    let mut o = String::new();
    o.push_str(&format!(
        "accel-agent profile: {:.1}s, {} samples; values are mean/p50/p95\n\n",
        s.duration_seconds, s.samples
    ));
    if !s.faults.is_empty() {
        o.push_str("faults:\n");
        for f in &s.faults {
            o.push_str(&format!(
                "  {:>6.1}s-{:<6} {:<16} {:<16} {}{}\n",
                f.first_seconds,
                format!("{:.1}s", f.last_seconds),
                f.kind.as_str(),
                f.device,
                if f.fatal { "FATAL: " } else { "" },
                f.detail
            ));
        }
        o.push('\n');
    }
    if !s.gpus.is_empty() {
        o.push_str(&format!(
            "{:<4} {:<9} {:<5} {:<18} {:<18} {:<18} {:<18} {:<20} {:<20} {:<20} {:>9}\n",
            "gpu",
            "samples",
            "alloc",
            "util %",
            "sm active %",
            "tensor active %",
            "dram active %",
            "power W",
            "pcie GB/s",
            "nvlink GB/s",
            "throttled"
        ));
        for g in &s.gpus {
            o.push_str(&format!(
                "{:<4} {:<9} {:<5} {:<18} {:<18} {:<18} {:<18} {:<20} {:<20} {:<20} {:>9}\n",
                g.gpu,
                format!("{}/{}", g.samples, s.samples),
                if g.allocated { "yes" } else { "no" },
                fmt_stats(g.utilization, 100.0, ""),
                fmt_stats(g.sm_active, 100.0, ""),
                fmt_stats(g.tensor_active, 100.0, ""),
                fmt_stats(g.dram_active, 100.0, ""),
                fmt_stats(g.power_watts, 1.0, ""),
                fmt_stats(g.pcie_bytes_per_second, 1e-9, ""),
                fmt_stats(g.nvlink_bytes_per_second, 1e-9, ""),
                pct(g.throttle_share),
            ));
        }
        o.push('\n');
    }
    if !s.tpus.is_empty() {
        o.push_str(&format!(
            "{:<4} {:<9} {:<5} {:<18} {:<18}\n",
            "tpu", "samples", "alloc", "duty cycle %", "hbm used %"
        ));
        for t in &s.tpus {
            o.push_str(&format!(
                "{:<4} {:<9} {:<5} {:<18} {:<18}\n",
                t.chip,
                format!("{}/{}", t.samples, s.samples),
                if t.allocated { "yes" } else { "no" },
                fmt_stats(t.duty_cycle, 100.0, ""),
                fmt_stats(t.hbm_used_ratio, 100.0, ""),
            ));
        }
        o.push('\n');
    }
    for (title, (rx, tx), list) in [
        ("disk", ("read", "write"), &s.disks),
        ("network", ("receive", "transmit"), &s.networks),
        ("infiniband", ("receive", "transmit"), &s.infiniband),
    ] {
        for l in list {
            o.push_str(&format!(
                "{title} {}: {rx} {} MB/s, {tx} {} MB/s{}\n",
                l.device,
                fmt_stats(l.read_bytes_per_second, 1e-6, ""),
                fmt_stats(l.write_bytes_per_second, 1e-6, ""),
                l.utilization
                    .map(|u| format!(", busy {}", fmt_stats(Some(u), 100.0, "%")))
                    .unwrap_or_default()
            ));
        }
    }
    for p in s.processes.iter().take(8) {
        o.push_str(&format!(
            "process {} ({}, {}): CPUs {}, read {} MB/s, write {} MB/s, major faults {}/s, involuntary switches {}/s{}\n",
            p.pid,
            p.comm,
            p.reason,
            fmt_stats(p.cpu, 1.0, ""),
            fmt_stats(p.read_bytes_per_second, 1e-6, ""),
            fmt_stats(p.write_bytes_per_second, 1e-6, ""),
            fmt_stats(p.major_faults_per_second, 1.0, ""),
            fmt_stats(p.involuntary_switches_per_second, 1.0, ""),
            p.threads.map(|t| format!(", {t:.0} threads")).unwrap_or_default()
        ));
    }
    for r in &s.runs {
        let p = |x: Option<f64>| x.map_or("-".to_owned(), pct);
        o.push_str(&format!(
            "run {} ({} ranks, from {}): {:.0} steps, mean step {}, data_wait {}, runtime goodput {}, MFU {}\n",
            r.run,
            r.ranks,
            r.source,
            r.steps,
            r.mean_step_seconds.map_or("-".to_owned(), |x| format!("{x:.2}s")),
            p(r.data_wait_share),
            p(r.runtime_goodput),
            p(r.mfu),
        ));
    }
    if s.processes.len() > 8 {
        o.push_str(&format!(
            "({} more processes in --json)\n",
            s.processes.len() - 8
        ));
    }
    o.push_str(&format!(
        "host: iowait {}, I/O pressure some {} full {}, busiest CPU {}\n\n",
        fmt_stats(s.iowait_share, 100.0, "%"),
        fmt_stats(s.io_pressure_waiting, 100.0, "%"),
        fmt_stats(s.io_pressure_stalled, 100.0, "%"),
        fmt_stats(s.max_cpu_busy, 100.0, "%"),
    ));
    match d.performance {
        Some(p) => o.push_str(&format!(
            "verdict: {} (on the samples that answered: {})\n",
            d.verdict.as_str(),
            p.as_str()
        )),
        None => o.push_str(&format!("verdict: {}\n", d.verdict.as_str())),
    }
    for e in &d.evidence {
        o.push_str(&format!("  evidence: {e}\n"));
    }
    for a in &d.advice {
        o.push_str(&format!("  try: {a}\n"));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::diagnosis::diagnose;
    use crate::profile::summary::GpuSummary;

    /// The GPU table's columns hold NVLink 4 at full rate (900 GB/s) and
    /// PCIe 5 (64 GB/s) without pushing the next column.
    #[test]
    fn gpu_columns_line_up() {
        let g = GpuSummary {
            gpu: "7".into(),
            samples: 1000,
            utilization: Some(Stats::constant(1.0)),
            sm_active: Some(Stats::constant(1.0)),
            tensor_active: Some(Stats::constant(1.0)),
            dram_active: Some(Stats::constant(1.0)),
            power_watts: Some(Stats::constant(1000.0)),
            pcie_bytes_per_second: Some(Stats::constant(64e9)),
            nvlink_bytes_per_second: Some(Stats::constant(900e9)),
            throttle_share: 1.0,
            ..Default::default()
        };
        let s = Summary {
            samples: 1000,
            gpus: vec![g],
            ..Default::default()
        };
        let text = render(&s, &diagnose(&s));
        let mut lines = text.lines().skip_while(|l| !l.starts_with("gpu "));
        let header = lines.next().unwrap();
        let row = lines.next().unwrap();
        assert_eq!(header.len(), row.len(), "\n{header}\n{row}");
        assert!(
            row.contains("900.0/900.0/900.0") && row.ends_with("100%"),
            "{row}"
        );
    }
}
