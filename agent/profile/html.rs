//! `accel-agent profile --html FILE`: a self-contained report (one file, no
//! external resources, viewable offline) with the verdict, the summary and
//! SVG time series of the key signals on one shared time axis.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::diagnosis::{Diagnosis, Verdict};
use super::faults::Fault;
use super::summary::{Points, Summary};

/// One chart: a title, a unit, the scale applied to values, a fixed y
/// maximum (after scaling) if any, and which signals go in it.
struct Chart {
    title: &'static str,
    unit: &'static str,
    scale: f64,
    y_max: Option<f64>,
    /// (signal key prefix, signal key suffix).
    pick: fn(&str) -> Option<String>,
}

fn gpu_metric(key: &str, metric: &str) -> Option<String> {
    let (gpu, m) = key.split_once('.')?;
    let n = gpu.strip_prefix("gpu")?;
    (m == metric).then(|| format!("GPU {n}"))
}

fn device_metric(key: &str, kinds: &[&str], metric: &str) -> Option<String> {
    let (kind, rest) = key.split_once('.')?;
    let (dev, m) = rest.rsplit_once('.')?;
    (kinds.contains(&kind) && m == metric).then(|| {
        if kinds.len() > 1 {
            format!("{kind} {dev}")
        } else {
            dev.to_owned()
        }
    })
}

fn tpu_metric(key: &str, metric: &str) -> Option<String> {
    let (chip, m) = key.split_once('.')?;
    let n = chip.strip_prefix("tpu")?;
    (m == metric).then(|| format!("TPU {n}"))
}

const CHARTS: &[Chart] = &[
    Chart {
        title: "TPU duty cycle",
        unit: "%",
        scale: 100.0,
        y_max: Some(100.0),
        pick: |k| tpu_metric(k, "duty_cycle"),
    },
    Chart {
        title: "TPU HBM used",
        unit: "%",
        scale: 100.0,
        y_max: Some(100.0),
        pick: |k| tpu_metric(k, "hbm_used_ratio"),
    },
    Chart {
        title: "GPU utilisation",
        unit: "%",
        scale: 100.0,
        y_max: Some(100.0),
        pick: |k| gpu_metric(k, "utilization"),
    },
    Chart {
        title: "SM active",
        unit: "%",
        scale: 100.0,
        y_max: Some(100.0),
        pick: |k| gpu_metric(k, "sm_active"),
    },
    Chart {
        title: "Tensor active",
        unit: "%",
        scale: 100.0,
        y_max: Some(100.0),
        pick: |k| gpu_metric(k, "tensor_active"),
    },
    Chart {
        title: "DRAM active",
        unit: "%",
        scale: 100.0,
        y_max: Some(100.0),
        pick: |k| gpu_metric(k, "dram_active"),
    },
    Chart {
        title: "GPU power",
        unit: "W",
        scale: 1.0,
        y_max: None,
        pick: |k| gpu_metric(k, "power_watts"),
    },
    Chart {
        title: "SM clock / maximum",
        unit: "%",
        scale: 100.0,
        y_max: Some(100.0),
        pick: |k| gpu_metric(k, "sm_clock_ratio"),
    },
    Chart {
        title: "PCIe, both directions",
        unit: "MB/s",
        scale: 1e-6,
        y_max: None,
        pick: |k| gpu_metric(k, "pcie_bytes_per_second"),
    },
    Chart {
        title: "NVLink, busier direction",
        unit: "MB/s",
        scale: 1e-6,
        y_max: None,
        pick: |k| gpu_metric(k, "nvlink_bytes_per_second"),
    },
    Chart {
        title: "Storage read",
        unit: "MB/s",
        scale: 1e-6,
        y_max: None,
        pick: |k| device_metric(k, &["disk"], "read_bytes_per_second"),
    },
    Chart {
        title: "Storage write",
        unit: "MB/s",
        scale: 1e-6,
        y_max: None,
        pick: |k| device_metric(k, &["disk"], "write_bytes_per_second"),
    },
    Chart {
        title: "Disk busy",
        unit: "%",
        scale: 100.0,
        y_max: Some(100.0),
        pick: |k| device_metric(k, &["disk"], "utilization"),
    },
    Chart {
        title: "Network and InfiniBand receive",
        unit: "MB/s",
        scale: 1e-6,
        y_max: None,
        pick: |k| device_metric(k, &["network", "infiniband"], "read_bytes_per_second"),
    },
    Chart {
        title: "Network and InfiniBand transmit",
        unit: "MB/s",
        scale: 1e-6,
        y_max: None,
        pick: |k| device_metric(k, &["network", "infiniband"], "write_bytes_per_second"),
    },
    Chart {
        title: "Host: iowait, busiest CPU, I/O pressure",
        unit: "%",
        scale: 100.0,
        y_max: Some(100.0),
        pick: |k| {
            Some(
                match k {
                    "host.iowait_share" => "iowait",
                    "host.max_cpu_busy" => "busiest CPU",
                    "host.io_pressure_waiting" => "I/O pressure some",
                    "host.io_pressure_stalled" => "I/O pressure full",
                    _ => return None,
                }
                .to_owned(),
            )
        },
    },
    Chart {
        title: "Followed processes: CPUs used",
        unit: "CPUs",
        scale: 1.0,
        y_max: None,
        pick: |k| {
            let pid = k.strip_prefix("process")?.strip_suffix(".cpu")?;
            Some(format!("pid {pid}"))
        },
    },
];

const COLORS: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#7f7f7f",
];
/// Most lines drawn in one chart (the legend counts the rest).
const MAX_LINES: usize = 16;
/// Most points drawn per line.
const MAX_POINTS: usize = 1500;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The smallest 1, 2, 2.5 or 5 x 10^k at or above `v` (1 for nothing).
fn nice(v: f64) -> f64 {
    if !(v > 0.0 && v.is_finite()) {
        return 1.0;
    }
    let e = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * e)
        .find(|x| *x >= v)
        .unwrap_or(10.0 * e)
}

/// A tick value printed short.
fn num(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn chart_svg(
    chart: &Chart,
    lines: &[(String, &Points)],
    faults: &[Fault],
    duration: f64,
    out: &mut String,
) {
    const W: f64 = 960.0;
    const H: f64 = 170.0;
    const L: f64 = 64.0;
    const R: f64 = 190.0;
    const T: f64 = 12.0;
    const B: f64 = 26.0;
    let (pw, ph) = (W - L - R, H - T - B);
    let data_max = lines
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.1 * chart.scale))
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    let y_max = match chart.y_max {
        Some(m) if data_max <= m => m,
        _ => nice(data_max),
    };
    let x_max = if duration > 0.0 { duration } else { 1.0 };
    let x = |t: f64| L + (t / x_max).clamp(0.0, 1.0) * pw;
    let y = |v: f64| T + ph - (v / y_max).clamp(0.0, 1.0) * ph;
    let _ = write!(
        out,
        r#"<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" role="img" aria-label="{}">"#,
        esc(chart.title)
    );
    // Frame, grid and ticks.
    let _ = write!(
        out,
        r##"<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="#fff" stroke="#999"/>"##
    );
    for i in 0..=4 {
        let v = y_max * f64::from(i) / 4.0;
        let yy = y(v);
        let _ = write!(
            out,
            r##"<line x1="{L}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end" font-size="10">{}</text>"##,
            L + pw,
            L - 4.0,
            yy + 3.0,
            num(v)
        );
    }
    let step = nice(x_max / 6.0);
    let mut t = 0.0;
    while t <= x_max + 1e-9 {
        let xx = x(t);
        let _ = write!(
            out,
            r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{T}" y2="{}" stroke="#eee"/><text x="{xx:.1}" y="{}" text-anchor="middle" font-size="10">{}s</text>"##,
            T + ph,
            H - 10.0,
            num(t)
        );
        t += step;
    }
    let _ = write!(
        out,
        r#"<text x="12" y="{}" font-size="10" transform="rotate(-90 12 {})" text-anchor="middle">{}</text>"#,
        T + ph / 2.0,
        T + ph / 2.0,
        esc(chart.unit)
    );
    // Faults: a red band over their time on every chart.
    for f in faults {
        let (a, b) = (x(f.first_seconds), x(f.last_seconds));
        let _ = write!(
            out,
            r##"<rect class="fault" x="{:.1}" y="{T}" width="{:.1}" height="{ph}" fill="#d62728" fill-opacity="0.18" stroke="#d62728" stroke-width="0.5"><title>{}</title></rect>"##,
            a.min(b - 2.0).max(L),
            (b - a).max(2.0),
            esc(&format!("{} {}: {}", f.device, f.kind.as_str(), f.detail))
        );
    }
    for (i, (name, points)) in lines.iter().take(MAX_LINES).enumerate() {
        let color = COLORS[i % COLORS.len()];
        // Past the palette, the same colours dashed.
        let dash = if i >= COLORS.len() {
            r#" stroke-dasharray="5 3""#
        } else {
            ""
        };
        let step = points.len().div_ceil(MAX_POINTS).max(1);
        let mut pts = String::new();
        for (t, v) in points.iter().step_by(step) {
            let v = v * chart.scale;
            if v.is_finite() {
                let _ = write!(pts, "{:.1},{:.1} ", x(*t), y(v));
            }
        }
        let _ = write!(
            out,
            r#"<polyline class="series" data-name="{}" fill="none" stroke="{color}" stroke-width="1.5"{dash} points="{}"/>"#,
            esc(name),
            pts.trim_end()
        );
        let ly = T + 10.0 + i as f64 * 12.0;
        let _ = write!(
            out,
            r#"<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="{color}" stroke-width="3"{dash}/><text x="{}" y="{}" font-size="10">{}</text>"#,
            L + pw + 8.0,
            L + pw + 22.0,
            ly - 3.0,
            ly - 3.0,
            L + pw + 26.0,
            ly,
            esc(name)
        );
    }
    if lines.len() > MAX_LINES {
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" font-size="10">+{} more (in --json)</text>"#,
            L + pw + 10.0,
            T + 10.0 + MAX_LINES as f64 * 12.0,
            lines.len() - MAX_LINES
        );
    }
    out.push_str("</svg>");
}

/// The whole report.
pub fn html(
    summary: &Summary,
    diagnosis: &Diagnosis,
    text_summary: &str,
    series: &BTreeMap<String, Points>,
    interval: f64,
) -> String {
    let mut o = String::new();
    let severity = match diagnosis.verdict {
        Verdict::Broken => "bad",
        Verdict::Degraded => "warn",
        _ => "ok",
    };
    let _ = write!(
        o,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>accel-agent profile: {verdict}</title>
<style>
* {{ box-sizing: border-box; }}
body {{ font-family: system-ui, sans-serif; margin: 16px 24px; color: #222; }}
h1 {{ font-size: 20px; margin: 0 0 4px; }} h2 {{ font-size: 15px; margin: 18px 0 4px; }}
.meta {{ color: #555; margin: 0 0 12px; }}
.cards {{ display: flex; flex-wrap: wrap; gap: 12px; margin-bottom: 12px; }}
.card {{ border: 1px solid #ddd; border-radius: 6px; padding: 8px 14px; min-width: 150px; background: #fafafa; }}
.card .k {{ font-size: 12px; color: #555; }} .card .v {{ font-size: 22px; font-weight: 600; }}
.card.bad {{ border-color: #d62728; background: #fdecec; }} .card.warn {{ border-color: #ff7f0e; background: #fff4e6; }}
.card.ok {{ border-color: #2ca02c; background: #eef8ee; }}
ul.evidence {{ margin: 4px 0 8px; padding-left: 20px; }}
pre {{ background: #f6f6f6; padding: 8px; font-size: 10.5px; white-space: pre-wrap; overflow-wrap: anywhere; }}
svg.chart {{ display: block; width: 100%; height: auto; font-family: system-ui, sans-serif; }}
table.faults {{ border-collapse: collapse; font-size: 12px; width: 100%; }}
table.faults td, table.faults th {{ border: 1px solid #ddd; padding: 2px 6px; text-align: left; vertical-align: top; }}
</style></head><body>
<h1>accel-agent profile</h1>
<p class="meta">{duration:.1} s, {samples} samples every {interval:.2} s; accel-agent {version}.</p>
<div class="cards">
<div class="card {severity}"><div class="k">verdict</div><div class="v" id="verdict">{verdict}</div></div>
"#,
        verdict = diagnosis.verdict.as_str(),
        duration = summary.duration_seconds,
        samples = summary.samples,
        version = crate::VERSION,
    );
    let mut card = |k: &str, v: String, class: &str| {
        let _ = writeln!(
            o,
            r#"<div class="card {class}"><div class="k">{}</div><div class="v">{}</div></div>"#,
            esc(k),
            esc(&v)
        );
    };
    if let Some(p) = diagnosis.performance {
        card("on the samples that answered", p.as_str().into(), "");
    }
    let fatal = summary.faults.iter().filter(|f| f.fatal).count();
    card(
        "faults",
        if fatal > 0 {
            format!("{} ({fatal} fatal)", summary.faults.len())
        } else {
            summary.faults.len().to_string()
        },
        if fatal > 0 {
            "bad"
        } else if summary.faults.is_empty() {
            ""
        } else {
            "warn"
        },
    );
    card("GPUs", summary.gpus.len().to_string(), "");
    let mean = |f: &dyn Fn(&super::summary::GpuSummary) -> Option<f64>| {
        let v: Vec<f64> = summary.gpus.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    if let Some(u) = mean(&|g| g.utilization.map(|x| x.mean)) {
        card("GPU utilisation, mean", format!("{:.0} %", u * 100.0), "");
    }
    if let Some(u) = mean(&|g| g.sm_active.map(|x| x.mean)) {
        card("SM active, mean", format!("{:.0} %", u * 100.0), "");
    }
    if let Some(w) = mean(&|g| g.power_watts.map(|x| x.mean)) {
        card("power per GPU, mean", format!("{w:.0} W"), "");
    }
    if let Some(c) = summary.max_cpu_busy {
        card("busiest CPU, mean", format!("{:.0} %", c.mean * 100.0), "");
    }
    o.push_str("</div>\n<ul class=\"evidence\">");
    for e in &diagnosis.evidence {
        let _ = write!(o, "<li>evidence: {}</li>", esc(e));
    }
    for a in &diagnosis.advice {
        let _ = write!(o, "<li>try: {}</li>", esc(a));
    }
    o.push_str("</ul>\n");
    if !summary.faults.is_empty() {
        o.push_str("<h2>Faults</h2>\n<table class=\"faults\"><tr><th>from</th><th>to</th><th>kind</th><th>device</th><th>detail</th></tr>\n");
        for f in &summary.faults {
            let _ = writeln!(
                o,
                "<tr><td>{:.1} s</td><td>{:.1} s</td><td>{}{}</td><td>{}</td><td>{}</td></tr>",
                f.first_seconds,
                f.last_seconds,
                esc(f.kind.as_str()),
                if f.fatal { " (fatal)" } else { "" },
                esc(&f.device),
                esc(&f.detail)
            );
        }
        o.push_str("</table>\n<p>Red bands on the charts mark the faults' times.</p>\n");
    }
    // The summary table (the text output without its faults and verdict,
    // which are above).
    let mut table = String::new();
    let mut skipping = false;
    for line in text_summary
        .split("\nverdict: ")
        .next()
        .unwrap_or("")
        .lines()
    {
        if line == "faults:" {
            skipping = true;
        } else if skipping && line.is_empty() {
            skipping = false;
            continue;
        }
        if !skipping {
            table.push_str(line);
            table.push('\n');
        }
    }
    let _ = writeln!(o, "<h2>Summary</h2>\n<pre>{}</pre>", esc(table.trim_end()));
    let mut charts = 0;
    for chart in CHARTS {
        let lines: Vec<(String, &Points)> = series
            .iter()
            .filter_map(|(k, p)| (chart.pick)(k).map(|name| (name, p)))
            .filter(|(_, p)| !p.is_empty())
            .collect();
        if lines.is_empty() {
            continue;
        }
        charts += 1;
        let _ = writeln!(o, "<h2>{} ({})</h2>", esc(chart.title), esc(chart.unit));
        chart_svg(
            chart,
            &lines,
            &summary.faults,
            summary.duration_seconds,
            &mut o,
        );
        o.push('\n');
    }
    if charts == 0 {
        o.push_str("<p>No signal was sampled.</p>\n");
    }
    // What the browser drew and whether the page fits its window, for the
    // test that renders this page in headless Chromium (hidden: not for
    // the reader).
    o.push_str(
        r#"<p id="drawn" hidden></p><p id="fit" hidden></p>
<script>
(function () {
  var charts = document.querySelectorAll("svg.chart"), drawn = 0, lines = 0;
  charts.forEach(function (c) {
    var ok = false;
    c.querySelectorAll("polyline.series").forEach(function (p) {
      if (p.getTotalLength() > 0) { lines++; ok = true; }
    });
    if (ok && c.getBoundingClientRect().width > 0) drawn++;
  });
  document.getElementById("drawn").textContent =
    "Drawn: " + drawn + " of " + charts.length + " charts, " + lines + " lines.";
  var d = document.documentElement, clipped = 0;
  document.querySelectorAll("pre, table").forEach(function (e) {
    if (e.scrollWidth > e.clientWidth + 1) clipped++;
  });
  var widest = 0;
  charts.forEach(function (c) { widest = Math.max(widest, c.getBoundingClientRect().width); });
  document.getElementById("fit").textContent =
    "Fit: page " + d.scrollWidth + " of " + d.clientWidth + " px, " + clipped +
    " clipped blocks, widest chart " + Math.round(widest) + " px.";
})();
</script>
</body></html>
"#,
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::diagnosis::diagnose;

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice(0.0), 1.0);
        assert_eq!(nice(87.0), 100.0);
        assert_eq!(nice(101.0), 200.0);
        assert_eq!(nice(2.1), 2.5);
        assert_eq!(nice(640.0), 1000.0);
        assert_eq!(nice(f64::NAN), 1.0);
    }

    #[test]
    fn charts_only_for_signals_present_and_names_escaped() {
        let mut series: BTreeMap<String, Points> = BTreeMap::new();
        series.insert("gpu0.utilization".into(), vec![(0.0, 0.5), (1.0, 0.7)]);
        series.insert("gpu1.utilization".into(), vec![(0.0, 0.2), (1.0, 0.3)]);
        series.insert("disk.<sda>.read_bytes_per_second".into(), vec![(0.5, 1e6)]);
        series.insert("unknown.thing".into(), vec![(0.5, 1.0)]);
        let s = Summary {
            duration_seconds: 1.0,
            samples: 2,
            ..Default::default()
        };
        let d = diagnose(&s);
        let page = html(&s, &d, "summary <text>", &series, 0.5);
        assert_eq!(page.matches("<svg class=\"chart\"").count(), 2, "{page}");
        assert_eq!(page.matches("<polyline").count(), 3);
        assert!(page.contains("&lt;sda&gt;") && !page.contains("<sda>"));
        assert!(page.contains("summary &lt;text&gt;"));
        // The test strings are hidden.
        assert!(page.contains("<p id=\"drawn\" hidden>"));
        // 50 % at t=0 sits half way up a 0-100 % chart: y = 12 + 132 - 66.
        assert!(page.contains("64.0,78.0"), "{page}");
    }
}
