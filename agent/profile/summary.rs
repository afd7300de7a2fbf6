//! `accel-agent profile`: samples every enabled collector in-process at a
//! fixed rate for a fixed time (no HTTP server), summarises the key signals
//! and names the bottleneck.
//!
//! The verdict is [`diagnose`], a pure function of the [`Summary`], so each
//! rule is unit-tested without a node. Not built yet: the HTML report, the
//! per-process perf counters and run events (issue 6).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use accel_collectors::{Built, Collector, Family, Sample, Series};
use clap::{Arg, ArgAction, Command};
use serde::Serialize;

use crate::config::{self, Config, Parsed};

/// Per-direction bandwidth of one NVLink link (NVLink 3 and 4: 25 GB/s).
pub const NVLINK_LINK_BYTES_PER_SECOND: f64 = 25e9;

/// The share of step time spent in data_wait above which the training
/// loop itself says it is input-bound.
pub const DATA_WAIT_BOUND: f64 = 0.2;

/// The reasons that mean clocks are held down for power or heat.
const THROTTLE_REASONS: [&str; 5] = [
    "sw_power_cap",
    "hw_slowdown",
    "sw_thermal_slowdown",
    "hw_thermal_slowdown",
    "hw_power_brake_slowdown",
];

fn parse_profile_interval(s: &str) -> Result<Duration, String> {
    let d = config::parse_duration(s)?;
    if d < config::MIN_INTERVAL {
        return Err(format!("{s} is shorter than the minimum of 100ms"));
    }
    Ok(d)
}

fn parse_positive(s: &str) -> Result<Duration, String> {
    let d = config::parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("{s} must be longer than 0"));
    }
    Ok(d)
}

/// The daemon's flags plus the profile-only ones.
pub fn command() -> Command {
    config::command()
        .name("accel-agent profile")
        .bin_name("accel-agent profile")
        .about("Samples every enabled collector at --interval for --duration, prints a summary of the key signals and a verdict naming the bottleneck (idle, compute-bound, memory-bandwidth-bound, input-bound, communication-bound, host-CPU-bound, throttled).")
        .arg(
            Arg::new("duration")
                .long("duration")
                .value_name("DURATION")
                .action(ArgAction::Set)
                .default_value("60s")
                .value_parser(parse_positive)
                .help("How long to sample."),
        )
        .arg(
            Arg::new("interval")
                .long("interval")
                .value_name("DURATION")
                .action(ArgAction::Set)
                .default_value("100ms")
                .value_parser(parse_profile_interval)
                .help("Sampling interval of every collector (minimum 100ms)."),
        )
        .arg(
            Arg::new("pid")
                .long("pid")
                .value_name("PID")
                .action(ArgAction::Append)
                .value_parser(clap::value_parser!(u32))
                .help("The training process to follow (CPU, I/O, page faults, context switches), besides the processes holding GPUs; repeatable."),
        )
        .arg(
            Arg::new("html")
                .long("html")
                .value_name("FILE")
                .action(ArgAction::Set)
                .help("Write a self-contained HTML report (verdict, summary, SVG time series of the key signals on one time axis) to FILE."),
        )
        .arg(
            Arg::new("json")
                .long("json")
                .value_name("FILE")
                .action(ArgAction::Set)
                .help("Write the sampled series, the summary and the verdict to FILE as JSON."),
        )
}

/// One sample of one collector.
#[derive(Debug)]
pub struct Record {
    /// Seconds since the profile started.
    pub t: f64,
    /// What the collector produced.
    pub families: Vec<Family>,
}

/// Mean and percentiles of a series.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Stats {
    pub mean: f64,
    pub p50: f64,
    pub p95: f64,
    pub max: f64,
}

impl Stats {
    /// Stats of `values`; `None` when empty.
    pub fn of(values: &[f64]) -> Option<Stats> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(|a, b| a.total_cmp(b));
        let pct = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Some(Stats {
            mean: v.iter().sum::<f64>() / v.len() as f64,
            p50: pct(0.5),
            p95: pct(0.95),
            max: v[v.len() - 1],
        })
    }

    /// All fields equal to `x` (for tests and constant signals).
    pub fn constant(x: f64) -> Stats {
        Stats {
            mean: x,
            p50: x,
            p95: x,
            max: x,
        }
    }
}

/// One GPU's signals.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GpuSummary {
    pub gpu: String,
    pub allocated: bool,
    pub utilization: Option<Stats>,
    pub sm_active: Option<Stats>,
    pub tensor_active: Option<Stats>,
    pub dram_active: Option<Stats>,
    pub power_watts: Option<Stats>,
    pub pcie_bytes_per_second: Option<Stats>,
    /// The busier direction, summed over links.
    pub nvlink_bytes_per_second: Option<Stats>,
    /// Per-direction capacity of the links that are up.
    pub nvlink_capacity_bytes_per_second: Option<f64>,
    /// Share of samples with clocks held down by something other than the
    /// board's own default power limit: a thermal or hardware reason, or
    /// the power cap where the enforced limit is below the default.
    pub throttle_share: f64,
    /// Share of samples at the power cap (sw_power_cap), whatever the limit.
    pub power_capped_share: f64,
    /// Mean enforced power limit and the board's default, in watts.
    pub power_limit_watts: Option<f64>,
    pub power_default_limit_watts: Option<f64>,
    /// Share of samples each throttle reason was active.
    pub throttle_reasons: BTreeMap<String, f64>,
    /// Mean SM clock over its maximum.
    pub sm_clock_ratio: Option<f64>,
}

/// A link's or device's throughput.
#[derive(Clone, Debug, Default, Serialize)]
pub struct IoSummary {
    pub device: String,
    pub read_bytes_per_second: Option<Stats>,
    pub write_bytes_per_second: Option<Stats>,
    /// Disks: share of time busy (rate of io_time). Links: unused.
    pub utilization: Option<Stats>,
    /// Links: bytes/s per direction.
    pub capacity_bytes_per_second: Option<f64>,
}

/// Everything the verdict is decided on.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub duration_seconds: f64,
    pub samples: usize,
    pub gpus: Vec<GpuSummary>,
    pub disks: Vec<IoSummary>,
    /// Network interfaces: read = receive, write = transmit.
    pub networks: Vec<IoSummary>,
    pub infiniband: Vec<IoSummary>,
    /// Share of CPU time in iowait, whole host.
    pub iowait_share: Option<Stats>,
    /// Rate of accel_pressure_io_waiting_seconds_total (some).
    pub io_pressure_waiting: Option<Stats>,
    /// Rate of accel_pressure_io_stalled_seconds_total (full).
    pub io_pressure_stalled: Option<Stats>,
    /// The busiest CPU's busy share, per sample.
    pub max_cpu_busy: Option<Stats>,
    /// The followed processes (--pid, and those holding GPUs).
    pub processes: Vec<ProcessSummary>,
    /// Training runs that reported steps during the profile (run events).
    pub runs: Vec<crate::runs::RunSummary>,
}

/// One followed process's signals (from accel_process_*).
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProcessSummary {
    pub pid: String,
    pub comm: String,
    /// Why it is followed: `pid` (asked for), `gpu` or `match`.
    pub reason: String,
    /// CPUs used (user + system seconds per second).
    pub cpu: Option<Stats>,
    pub read_bytes_per_second: Option<Stats>,
    pub write_bytes_per_second: Option<Stats>,
    pub major_faults_per_second: Option<Stats>,
    pub involuntary_switches_per_second: Option<Stats>,
    pub threads: Option<f64>,
}

/// The bottleneck.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Idle,
    ComputeBound,
    MemoryBandwidthBound,
    InputBound,
    CommunicationBound,
    HostCpuBound,
    Throttled,
}

impl Verdict {
    /// As printed and in the JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Idle => "idle",
            Verdict::ComputeBound => "compute-bound",
            Verdict::MemoryBandwidthBound => "memory-bandwidth-bound",
            Verdict::InputBound => "input-bound",
            Verdict::CommunicationBound => "communication-bound",
            Verdict::HostCpuBound => "host-cpu-bound",
            Verdict::Throttled => "throttled",
        }
    }
}

/// The verdict, the numbers that decided it and what to try.
#[derive(Clone, Debug, Serialize)]
pub struct Diagnosis {
    pub verdict: Verdict,
    pub evidence: Vec<String>,
    pub advice: Vec<String>,
}

fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

fn mean_of(gpus: &[GpuSummary], f: impl Fn(&GpuSummary) -> Option<f64>) -> Option<f64> {
    let v: Vec<f64> = gpus.iter().filter_map(f).collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn diag(verdict: Verdict, evidence: Vec<String>, advice: &[&str]) -> Diagnosis {
    Diagnosis {
        verdict,
        evidence,
        advice: advice.iter().map(|s| s.to_string()).collect(),
    }
}

/// Names the bottleneck from a summary. Rules, in order: idle; throttled;
/// communication-bound; input-bound (utilisation saw-tooth, iowait, I/O
/// pressure, a busy disk); host-CPU-bound; memory-bandwidth-bound;
/// compute-bound; and GPUs underused with no saturated signal (input-bound,
/// weakly).
pub fn diagnose(s: &Summary) -> Diagnosis {
    let gpus = &s.gpus;
    let n = gpus.len();
    let allocated = gpus.iter().filter(|g| g.allocated).count();
    let util = mean_of(gpus, |g| g.utilization.map(|u| u.mean));
    let Some(util) = util else {
        return diag(
            Verdict::Idle,
            vec![
                "no GPU was sampled (accel_gpu_utilization_ratio absent): nothing to profile"
                    .into(),
            ],
            &["check that the gpu collector is enabled and NVML loads (--nvml.library)"],
        );
    };
    let util_p95 = mean_of(gpus, |g| g.utilization.map(|u| u.p95)).unwrap_or(0.0);
    let sm = mean_of(gpus, |g| g.sm_active.map(|x| x.mean));
    let tensor = mean_of(gpus, |g| g.tensor_active.map(|x| x.mean));
    let dram = mean_of(gpus, |g| g.dram_active.map(|x| x.mean));
    let busy = sm.unwrap_or(util);

    // Idle.
    if util < 0.05 && util_p95 < 0.10 {
        return diag(
            Verdict::Idle,
            vec![format!(
                "accel_gpu_utilization_ratio mean {} (p95 {}) over {n} GPUs, {allocated} of them allocated (accel_gpu_allocated)",
                pct(util),
                pct(util_p95)
            )],
            if allocated > 0 {
                &["GPUs are held but do no work: check the job is running (stuck in setup, a deadlock, waiting on other ranks) or release them"][..]
            } else {
                &["no work on the GPUs: nothing to tune"][..]
            },
        );
    }

    // Throttled.
    let throttle = mean_of(gpus, |g| Some(g.throttle_share)).unwrap_or(0.0);
    let clock = mean_of(gpus, |g| g.sm_clock_ratio);
    if throttle >= 0.5 && !matches!(clock, Some(c) if c >= 0.97) {
        let mut reasons: BTreeMap<&str, f64> = BTreeMap::new();
        for g in gpus {
            for (r, v) in &g.throttle_reasons {
                *reasons.entry(r).or_default() += v / n as f64;
            }
        }
        let mut ev = vec![format!(
            "accel_gpu_throttle_reason: clocks held down {} of the time",
            pct(throttle)
        )];
        for g in gpus.iter().filter(|g| {
            g.throttle_reasons
                .get("sw_power_cap")
                .is_some_and(|v| *v > 0.0)
        }) {
            if let (Some(l), Some(d)) = (g.power_limit_watts, g.power_default_limit_watts) {
                if l < d - 1.0 {
                    ev.push(format!(
                        "GPU {}: accel_gpu_power_limit_watts {l:.0} W below the default {d:.0} W (accel_gpu_power_default_limit_watts)",
                        g.gpu
                    ));
                }
            }
        }
        for (r, v) in reasons.iter().filter(|(_, v)| **v > 0.0) {
            ev.push(format!("reason {r} active {} of the time", pct(*v)));
        }
        if let Some(c) = clock {
            ev.push(format!(
                "accel_gpu_clock_hertz{{clock=\"sm\"}} at {} of accel_gpu_clock_max_hertz",
                pct(c)
            ));
        }
        let thermal = reasons
            .iter()
            .any(|(r, v)| *v > 0.0 && (r.contains("thermal") || *r == "hw_slowdown"));
        return diag(
            Verdict::Throttled,
            ev,
            if thermal {
                &[
                    "check cooling: airflow, fan or chassis faults, inlet temperature",
                    "check accel_gpu_temperature_celsius against the slowdown temperature",
                ][..]
            } else {
                &["check the power cap (accel_gpu_power_limit_watts against the default limit) and the node's power supply / power brake", "a lower power limit or clock lock may give steadier throughput"][..]
            },
        );
    }

    // Communication-bound.
    let mut comm: Vec<(String, f64)> = Vec::new();
    for g in gpus {
        if let (Some(r), Some(c)) = (
            g.nvlink_bytes_per_second,
            g.nvlink_capacity_bytes_per_second,
        ) {
            if c > 0.0 {
                comm.push((
                    format!("NVLink of GPU {} (accel_gpu_nvlink_*_bytes_total)", g.gpu),
                    r.mean / c,
                ));
            }
        }
    }
    for (what, links) in [
        ("accel_network_*_bytes_total", &s.networks),
        ("accel_infiniband_port_data_*_bytes_total", &s.infiniband),
    ] {
        for l in links {
            if let Some(c) = l.capacity_bytes_per_second.filter(|c| *c > 0.0) {
                let r = l.read_bytes_per_second.map_or(0.0, |x| x.mean);
                let w = l.write_bytes_per_second.map_or(0.0, |x| x.mean);
                comm.push((format!("{} ({what})", l.device), r.max(w) / c));
            }
        }
    }
    if let Some((what, share)) = comm.iter().cloned().max_by(|a, b| a.1.total_cmp(&b.1)) {
        if share >= 0.7 && busy < 0.5 {
            return diag(
                Verdict::CommunicationBound,
                vec![
                    format!("{what} at {} of its capacity", pct(share)),
                    format!("accel_gpu_sm_active_ratio mean {}", pct(busy)),
                ],
                &["check for a degraded link (accel_gpu_nvlink_up, accel_infiniband_rate_bytes_per_second, link errors)", "overlap communication with compute (bucketed all-reduce), use gradient compression or a larger batch per step"],
            );
        }
    }

    // The training loop's own account: steps that wait for input.
    if let Some(r) = s
        .runs
        .iter()
        .filter(|r| r.data_wait_share.is_some_and(|w| w >= DATA_WAIT_BOUND))
        .max_by(|a, b| {
            a.data_wait_share
                .unwrap_or(0.0)
                .total_cmp(&b.data_wait_share.unwrap_or(0.0))
        })
    {
        let mut ev = vec![format!(
            "run {}: data_wait is {} of step time over {:.0} steps (accel_run_phase_seconds_total{{phase=\"data_wait\"}} against accel_run_step_seconds_sum, from the training loop's events)",
            r.run,
            pct(r.data_wait_share.unwrap_or(0.0)),
            r.steps
        )];
        if let Some(g) = r.runtime_goodput {
            ev.push(format!("run {}: runtime goodput {}", r.run, pct(g)));
        }
        ev.push(format!("accel_gpu_utilization_ratio mean {}", pct(util)));
        return diag(
            Verdict::InputBound,
            ev,
            &[
                "more data-loader workers and prefetching (pin memory, a deeper prefetch queue)",
                "cache the data set on a local SSD or in memory",
                "pre-process / decode offline",
            ],
        );
    }

    // Input-bound.
    let underused = util < 0.7 || busy < 0.5;
    if underused {
        let mut ev = Vec::new();
        if util_p95 >= 0.6 && util_p95 - util >= 0.25 {
            ev.push(format!(
                "utilisation saw-tooth: accel_gpu_utilization_ratio mean {} but p95 {} (GPUs wait for each batch)",
                pct(util),
                pct(util_p95)
            ));
        }
        if let Some(w) = s.iowait_share.filter(|w| w.mean >= 0.2) {
            ev.push(format!(
                "accel_cpu_seconds_total{{mode=\"iowait\"}} {} of CPU time",
                pct(w.mean)
            ));
        }
        if let Some(p) = s.io_pressure_waiting.filter(|p| p.mean >= 0.2) {
            ev.push(format!(
                "accel_pressure_io_waiting_seconds_total rate {}",
                pct(p.mean)
            ));
        }
        for d in &s.disks {
            if let Some(u) = d.utilization.filter(|u| u.mean >= 0.8) {
                ev.push(format!(
                    "disk {} busy {} of the time (accel_disk_io_time_seconds_total)",
                    d.device,
                    pct(u.mean)
                ));
            }
        }
        for p in &s.processes {
            let read = p.read_bytes_per_second.map_or(0.0, |r| r.mean);
            let major = p.major_faults_per_second.map_or(0.0, |m| m.mean);
            if read >= 20e6 || major >= 50.0 {
                ev.push(format!(
                    "process {} ({}) reads {:.0} MB/s from storage (accel_process_read_bytes_total), {major:.0} major page faults/s",
                    p.pid,
                    p.comm,
                    read / 1e6
                ));
            }
        }
        if !ev.is_empty() {
            ev.push(format!("accel_gpu_utilization_ratio mean {}", pct(util)));
            return diag(
                Verdict::InputBound,
                ev,
                &["more data-loader workers and prefetching (pin memory, a deeper prefetch queue)", "cache the data set on a local SSD or in memory", "pre-process / decode offline"],
            );
        }
        if let Some(c) = s.max_cpu_busy.filter(|c| c.mean >= 0.9) {
            let mut ev = vec![
                format!(
                    "the busiest CPU is busy {} of the time (accel_cpu_seconds_total)",
                    pct(c.mean)
                ),
                format!("accel_gpu_utilization_ratio mean {}", pct(util)),
            ];
            if let Some(p) = s
                .processes
                .iter()
                .filter(|p| p.cpu.is_some())
                .max_by(|a, b| {
                    a.cpu
                        .map_or(0.0, |c| c.mean)
                        .total_cmp(&b.cpu.map_or(0.0, |c| c.mean))
                })
            {
                ev.push(format!(
                    "process {} ({}) uses {:.2} CPUs (accel_process_cpu_seconds_total)",
                    p.pid,
                    p.comm,
                    p.cpu.map_or(0.0, |c| c.mean)
                ));
            }
            return diag(
                Verdict::HostCpuBound,
                ev,
                &["a single-threaded step (data loader in the main process, Python GIL) saturates a CPU: more data-loader worker processes", "move augmentation to the GPU, check CPU affinity / NUMA placement"],
            );
        }
    }

    // Memory-bandwidth-bound.
    if let (Some(d), s_act) = (dram, sm.unwrap_or(0.0)) {
        if d >= 0.5 && d >= 0.9 * s_act {
            return diag(
                Verdict::MemoryBandwidthBound,
                vec![format!(
                    "accel_gpu_dram_active_ratio mean {} against accel_gpu_sm_active_ratio {}",
                    pct(d),
                    pct(s_act)
                )],
                &[
                    "fuse kernels and use mixed precision to move fewer bytes",
                    "a larger batch or sequence raises arithmetic intensity",
                ],
            );
        }
    }

    if !underused {
        let mut ev = vec![format!("accel_gpu_utilization_ratio mean {}", pct(util))];
        if let Some(x) = sm {
            ev.push(format!("accel_gpu_sm_active_ratio mean {}", pct(x)));
        }
        if let Some(x) = tensor {
            ev.push(format!("accel_gpu_tensor_active_ratio mean {}", pct(x)));
        }
        for r in &s.runs {
            if let Some(m) = r.mfu {
                ev.push(format!(
                    "run {}: MFU {} (accel_run_mfu_ratio)",
                    r.run,
                    pct(m)
                ));
            }
        }
        let capped = mean_of(gpus, |g| Some(g.power_capped_share)).unwrap_or(0.0);
        if capped >= 0.5 {
            let limit = mean_of(gpus, |g| g.power_limit_watts);
            ev.push(format!(
                "at the power limit {} of the time (sw_power_cap{}): expected under a heavy tensor load, not a fault",
                pct(capped),
                limit.map_or(String::new(), |l| format!(", {l:.0} W, the default"))
            ));
        }
        return diag(
            Verdict::ComputeBound,
            ev,
            &["the GPUs are the limit, as they should be: mixed precision / tensor cores (raise tensor active), a larger batch, or more GPUs"],
        );
    }

    diag(
        Verdict::InputBound,
        vec![format!(
            "accel_gpu_utilization_ratio mean {} (p95 {}) with no host, storage or network signal saturated: the pipeline feeding the GPUs is the likely limit",
            pct(util),
            pct(util_p95)
        )],
        &["more data-loader workers and prefetching", "a larger batch", "profile the training step (host-side work between kernels)"],
    )
}

// ---- extracting signals from the records ----

fn label<'a>(s: &'a Series, name: &str) -> Option<&'a str> {
    s.labels
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.as_str())
}

type Points = Vec<(f64, f64)>;

/// Per key (from `key`), the sum of the matching series of `family` in each
/// record that has the family.
fn points(
    all: &[Vec<Record>],
    family: &str,
    key: impl Fn(&Series) -> Option<String>,
) -> BTreeMap<String, Points> {
    let mut out: BTreeMap<String, Points> = BTreeMap::new();
    for recs in all {
        for r in recs {
            let Some(f) = r.families.iter().find(|f| f.name == family) else {
                continue;
            };
            let mut sums: BTreeMap<String, f64> = BTreeMap::new();
            for s in &f.series {
                if let Some(k) = key(s) {
                    *sums.entry(k).or_default() += s.value;
                }
            }
            for (k, v) in sums {
                out.entry(k).or_default().push((r.t, v));
            }
        }
    }
    out
}

fn by(name: &'static str) -> impl Fn(&Series) -> Option<String> {
    move |s| label(s, name).map(str::to_owned)
}

/// Counter deltas over consecutive points divided by the elapsed time
/// (resets skipped).
fn rates(p: &[(f64, f64)]) -> Points {
    p.windows(2)
        .filter_map(|w| {
            let dt = w[1].0 - w[0].0;
            let dv = w[1].1 - w[0].1;
            (dt > 0.0 && dv >= 0.0).then_some((w[1].0, dv / dt))
        })
        .collect()
}

fn values(p: &[(f64, f64)]) -> Vec<f64> {
    p.iter().map(|x| x.1).collect()
}

fn stats(p: Option<&Points>) -> Option<Stats> {
    p.and_then(|p| Stats::of(&values(p)))
}

/// Adds two series point by point (same timestamps).
fn add(a: Option<&Points>, b: Option<&Points>) -> Option<Points> {
    match (a, b) {
        (Some(a), Some(b)) => Some(
            a.iter()
                .filter_map(|(t, x)| b.iter().find(|(u, _)| u == t).map(|(_, y)| (*t, x + y)))
                .collect(),
        ),
        (Some(a), None) | (None, Some(a)) => Some(a.clone()),
        (None, None) => None,
    }
}

fn ratio(a: &Points, b: &Points) -> Points {
    a.iter()
        .filter_map(|(t, x)| {
            b.iter()
                .find(|(u, _)| u == t)
                .filter(|(_, y)| *y > 0.0)
                .map(|(_, y)| (*t, x / y))
        })
        .collect()
}

/// The summary and the named series it was computed from (for the JSON).
pub fn summarise(all: &[Vec<Record>], duration: f64) -> (Summary, BTreeMap<String, Points>) {
    let mut series: BTreeMap<String, Points> = BTreeMap::new();
    let samples = all.iter().map(Vec::len).max().unwrap_or(0);
    let gauge = |f: &str| points(all, f, by("gpu"));
    let util = gauge("accel_gpu_utilization_ratio");
    let sm = gauge("accel_gpu_sm_active_ratio");
    let tensor = gauge("accel_gpu_tensor_active_ratio");
    let dram = gauge("accel_gpu_dram_active_ratio");
    let power = gauge("accel_gpu_power_watts");
    let allocated = gauge("accel_gpu_allocated");
    let pcie_rx = gauge("accel_gpu_pcie_receive_bytes_per_second");
    let pcie_tx = gauge("accel_gpu_pcie_transmit_bytes_per_second");
    let nv_rx = gauge("accel_gpu_nvlink_receive_bytes_total");
    let nv_tx = gauge("accel_gpu_nvlink_transmit_bytes_total");
    let nv_up = gauge("accel_gpu_nvlink_up");
    let clock_of = |f: &str| {
        points(all, f, |s| {
            (label(s, "clock") == Some("sm")).then(|| label(s, "gpu").unwrap_or("").to_owned())
        })
    };
    let clock = clock_of("accel_gpu_clock_hertz");
    let clock_max = clock_of("accel_gpu_clock_max_hertz");
    let limit = gauge("accel_gpu_power_limit_watts");
    let default_limit = gauge("accel_gpu_power_default_limit_watts");
    // Reasons other than the power cap, per sample.
    let severe_reason = points(all, "accel_gpu_throttle_reason", |s| {
        let r = label(s, "reason")?;
        (THROTTLE_REASONS.contains(&r) && r != "sw_power_cap")
            .then(|| label(s, "gpu").unwrap_or("").to_owned())
    });
    let reasons = points(all, "accel_gpu_throttle_reason", |s| {
        let r = label(s, "reason")?;
        THROTTLE_REASONS
            .contains(&r)
            .then(|| format!("{}/{r}", label(s, "gpu").unwrap_or("")))
    });
    let any_reason = points(all, "accel_gpu_throttle_reason", |s| {
        THROTTLE_REASONS
            .contains(&label(s, "reason")?)
            .then(|| label(s, "gpu").unwrap_or("").to_owned())
    });

    let mut gpu_ids: Vec<&String> = util.keys().collect();
    gpu_ids.sort_by_key(|g| g.parse::<u64>().unwrap_or(u64::MAX));
    let mut gpus = Vec::new();
    for g in gpu_ids {
        let pcie = add(pcie_rx.get(g), pcie_tx.get(g));
        let nv = match (
            nv_rx.get(g).map(|p| rates(p)),
            nv_tx.get(g).map(|p| rates(p)),
        ) {
            (Some(r), Some(t)) => Some(
                r.iter()
                    .zip(&t)
                    .map(|(a, b)| (a.0, a.1.max(b.1)))
                    .collect::<Points>(),
            ),
            (r, t) => r.or(t),
        };
        let links_up = nv_up
            .get(g)
            .and_then(|p| p.last())
            .map(|(_, v)| *v)
            .filter(|v| *v > 0.0);
        let clock_ratio = match (clock.get(g), clock_max.get(g)) {
            (Some(c), Some(m)) => Some(ratio(c, m)),
            _ => None,
        };
        let share = |p: Option<&Points>| {
            p.map_or(0.0, |p| {
                if p.is_empty() {
                    0.0
                } else {
                    p.iter().filter(|x| x.1 > 0.0).count() as f64 / p.len() as f64
                }
            })
        };
        let throttle_reasons: BTreeMap<String, f64> = THROTTLE_REASONS
            .iter()
            .map(|r| (r.to_string(), share(reasons.get(&format!("{g}/{r}")))))
            .collect();
        let mean = |p: Option<&Points>| p.and_then(|p| Stats::of(&values(p))).map(|s| s.mean);
        let power_limit_watts = mean(limit.get(g));
        let power_default_limit_watts = mean(default_limit.get(g));
        // The power cap counts as throttling only where someone lowered the
        // limit: a GPU under a heavy tensor load sits at its default cap by
        // design (an H100 SXM at 700 W runs its SM clock near 1.35 GHz).
        let lowered = matches!((power_limit_watts, power_default_limit_watts), (Some(l), Some(d)) if l < d - 1.0);
        let throttle_share = if lowered {
            share(any_reason.get(g))
        } else {
            share(severe_reason.get(g))
        };
        let power_capped_share = throttle_reasons.get("sw_power_cap").copied().unwrap_or(0.0);
        for (name, p) in [
            ("utilization", util.get(g).cloned()),
            ("sm_active", sm.get(g).cloned()),
            ("tensor_active", tensor.get(g).cloned()),
            ("dram_active", dram.get(g).cloned()),
            ("power_watts", power.get(g).cloned()),
            ("pcie_bytes_per_second", pcie.clone()),
            ("nvlink_bytes_per_second", nv.clone()),
            ("sm_clock_ratio", clock_ratio.clone()),
        ] {
            if let Some(p) = p {
                series.insert(format!("gpu{g}.{name}"), p);
            }
        }
        gpus.push(GpuSummary {
            gpu: g.clone(),
            allocated: allocated
                .get(g)
                .is_some_and(|p| p.iter().any(|x| x.1 > 0.0)),
            utilization: stats(util.get(g)),
            sm_active: stats(sm.get(g)),
            tensor_active: stats(tensor.get(g)),
            dram_active: stats(dram.get(g)),
            power_watts: stats(power.get(g)),
            pcie_bytes_per_second: stats(pcie.as_ref()),
            nvlink_bytes_per_second: stats(nv.as_ref()),
            nvlink_capacity_bytes_per_second: links_up.map(|n| n * NVLINK_LINK_BYTES_PER_SECOND),
            throttle_share,
            power_capped_share,
            power_limit_watts,
            power_default_limit_watts,
            throttle_reasons,
            sm_clock_ratio: clock_ratio
                .as_ref()
                .and_then(|p| Stats::of(&values(p)))
                .map(|s| s.mean),
        });
    }

    let io = |prefix: &str,
              rx: &str,
              tx: &str,
              key: &dyn Fn(&Series) -> Option<String>,
              busy: Option<&str>,
              cap: Option<&str>,
              series: &mut BTreeMap<String, Points>| {
        let r = points(all, rx, key);
        let w = points(all, tx, key);
        let b = busy.map(|f| points(all, f, key)).unwrap_or_default();
        let c = cap.map(|f| points(all, f, key)).unwrap_or_default();
        let mut out = Vec::new();
        for dev in r.keys() {
            let rr = rates(&r[dev]);
            let ww = w.get(dev).map(|p| rates(p)).unwrap_or_default();
            let bb = b.get(dev).map(|p| rates(p));
            series.insert(format!("{prefix}.{dev}.read_bytes_per_second"), rr.clone());
            series.insert(format!("{prefix}.{dev}.write_bytes_per_second"), ww.clone());
            if let Some(bb) = &bb {
                series.insert(format!("{prefix}.{dev}.utilization"), bb.clone());
            }
            out.push(IoSummary {
                device: dev.clone(),
                read_bytes_per_second: Stats::of(&values(&rr)),
                write_bytes_per_second: Stats::of(&values(&ww)),
                utilization: bb.and_then(|p| Stats::of(&values(&p))),
                capacity_bytes_per_second: c
                    .get(dev)
                    .and_then(|p| p.last())
                    .map(|x| x.1)
                    .filter(|x| *x > 0.0),
            });
        }
        out
    };
    let dev = by("device");
    let ib_key = |s: &Series| {
        Some(format!(
            "{}:{}",
            label(s, "device")?,
            label(s, "port").unwrap_or("1")
        ))
    };
    let disks = io(
        "disk",
        "accel_disk_read_bytes_total",
        "accel_disk_written_bytes_total",
        &dev,
        Some("accel_disk_io_time_seconds_total"),
        None,
        &mut series,
    );
    let networks = io(
        "network",
        "accel_network_receive_bytes_total",
        "accel_network_transmit_bytes_total",
        &dev,
        None,
        Some("accel_network_speed_bytes"),
        &mut series,
    );
    let infiniband = io(
        "infiniband",
        "accel_infiniband_port_data_received_bytes_total",
        "accel_infiniband_port_data_transmitted_bytes_total",
        &ib_key,
        None,
        Some("accel_infiniband_rate_bytes_per_second"),
        &mut series,
    );

    // Host CPU: per cpu and mode.
    let cpu = points(all, "accel_cpu_seconds_total", |s| {
        Some(format!("{}/{}", label(s, "cpu")?, label(s, "mode")?))
    });
    let mut total: BTreeMap<String, Points> = BTreeMap::new();
    let mut idle: BTreeMap<String, Points> = BTreeMap::new();
    let mut iowait: Points = Vec::new();
    let mut all_total: Points = Vec::new();
    for (k, p) in &cpu {
        let (c, mode) = k.split_once('/').unwrap_or((k, ""));
        let r = rates(p);
        let merge = |into: &mut Points, r: &Points| {
            if into.is_empty() {
                *into = r.clone();
            } else {
                for (a, b) in into.iter_mut().zip(r) {
                    a.1 += b.1;
                }
            }
        };
        merge(total.entry(c.to_owned()).or_default(), &r);
        merge(&mut all_total, &r);
        if mode == "idle" || mode == "iowait" {
            merge(idle.entry(c.to_owned()).or_default(), &r);
        }
        if mode == "iowait" {
            merge(&mut iowait, &r);
        }
    }
    let iowait_share = ratio(&iowait, &all_total);
    let mut busiest: BTreeMap<u64, f64> = BTreeMap::new();
    for (c, t) in &total {
        if let Some(i) = idle.get(c) {
            for (ts, v) in ratio(i, t) {
                let e = busiest.entry(ts.to_bits()).or_insert(0.0);
                *e = e.max(1.0 - v);
            }
        }
    }
    let busiest: Points = busiest
        .into_iter()
        .map(|(t, v)| (f64::from_bits(t), v))
        .collect();
    let single = |f: &str| {
        points(all, f, |_| Some(String::new()))
            .remove("")
            .map(|p| rates(&p))
    };
    let io_some = single("accel_pressure_io_waiting_seconds_total");
    let io_full = single("accel_pressure_io_stalled_seconds_total");
    for (name, p) in [
        ("host.iowait_share", Some(iowait_share.clone())),
        ("host.max_cpu_busy", Some(busiest.clone())),
        ("host.io_pressure_waiting", io_some.clone()),
        ("host.io_pressure_stalled", io_full.clone()),
    ] {
        if let Some(p) = p.filter(|p| !p.is_empty()) {
            series.insert(name.to_owned(), p);
        }
    }
    let processes = process_summaries(all, &mut series);
    let summary = Summary {
        processes,
        runs: Vec::new(),
        duration_seconds: duration,
        samples,
        gpus,
        disks,
        networks,
        infiniband,
        iowait_share: Stats::of(&values(&iowait_share)),
        io_pressure_waiting: stats(io_some.as_ref()),
        io_pressure_stalled: stats(io_full.as_ref()),
        max_cpu_busy: Stats::of(&values(&busiest)),
    };
    (summary, series)
}

/// The followed processes: those asked for with --pid first, then by pid.
fn process_summaries(
    all: &[Vec<Record>],
    series: &mut BTreeMap<String, Points>,
) -> Vec<ProcessSummary> {
    let mut info: BTreeMap<String, (String, String)> = BTreeMap::new();
    for recs in all {
        for r in recs {
            if let Some(f) = r.families.iter().find(|f| f.name == "accel_process_info") {
                for s in &f.series {
                    if let Some(pid) = label(s, "pid") {
                        info.insert(
                            pid.to_owned(),
                            (
                                label(s, "comm").unwrap_or("").to_owned(),
                                label(s, "reason").unwrap_or("").to_owned(),
                            ),
                        );
                    }
                }
            }
        }
    }
    let counter = |family: &str, filter: &dyn Fn(&Series) -> bool| {
        points(all, family, |s| {
            filter(s).then(|| label(s, "pid").unwrap_or("").to_owned())
        })
        .into_iter()
        .map(|(k, p)| (k, rates(&p)))
        .collect::<BTreeMap<String, Points>>()
    };
    let cpu = counter("accel_process_cpu_seconds_total", &|_| true);
    let read = counter("accel_process_read_bytes_total", &|_| true);
    let write = counter("accel_process_write_bytes_total", &|_| true);
    let major = counter("accel_process_page_faults_total", &|s| {
        label(s, "kind") == Some("major")
    });
    let invol = counter("accel_process_context_switches_total", &|s| {
        label(s, "kind") == Some("involuntary")
    });
    let threads = points(all, "accel_process_threads", by("pid"));
    let mut out: Vec<ProcessSummary> = info
        .into_iter()
        .map(|(pid, (comm, reason))| {
            if let Some(p) = cpu.get(&pid) {
                series.insert(format!("process{pid}.cpu"), p.clone());
            }
            ProcessSummary {
                cpu: stats(cpu.get(&pid)),
                read_bytes_per_second: stats(read.get(&pid)),
                write_bytes_per_second: stats(write.get(&pid)),
                major_faults_per_second: stats(major.get(&pid)),
                involuntary_switches_per_second: stats(invol.get(&pid)),
                threads: threads.get(&pid).and_then(|p| p.last()).map(|x| x.1),
                pid,
                comm,
                reason,
            }
        })
        .collect();
    out.sort_by_key(|p| (p.reason != "pid", p.pid.parse::<u64>().unwrap_or(u64::MAX)));
    out
}

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
    if !s.gpus.is_empty() {
        o.push_str(&format!(
            "{:<4} {:<5} {:<18} {:<18} {:<18} {:<18} {:<20} {:<20} {:<20} {:>9}\n",
            "gpu",
            "alloc",
            "util %",
            "sm active %",
            "tensor active %",
            "dram active %",
            "power W",
            "pcie MB/s",
            "nvlink MB/s",
            "throttled"
        ));
        for g in &s.gpus {
            o.push_str(&format!(
                "{:<4} {:<5} {:<18} {:<18} {:<18} {:<18} {:<20} {:<20} {:<20} {:>9}\n",
                g.gpu,
                if g.allocated { "yes" } else { "no" },
                fmt_stats(g.utilization, 100.0, ""),
                fmt_stats(g.sm_active, 100.0, ""),
                fmt_stats(g.tensor_active, 100.0, ""),
                fmt_stats(g.dram_active, 100.0, ""),
                fmt_stats(g.power_watts, 1.0, ""),
                fmt_stats(g.pcie_bytes_per_second, 1e-6, ""),
                fmt_stats(g.nvlink_bytes_per_second, 1e-6, ""),
                pct(g.throttle_share),
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
    o.push_str(&format!("verdict: {}\n", d.verdict.as_str()));
    for e in &d.evidence {
        o.push_str(&format!("  evidence: {e}\n"));
    }
    for a in &d.advice {
        o.push_str(&format!("  try: {a}\n"));
    }
    o
}

fn sample_loop(
    mut c: Box<dyn Collector>,
    out: &Mutex<Vec<Record>>,
    start: Instant,
    interval: Duration,
    duration: Duration,
    stop: &AtomicBool,
) {
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) && start.elapsed() <= duration {
        let t = start.elapsed().as_secs_f64();
        let mut s = Sample::new();
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.sample(&mut s)));
        if let Ok(Ok(())) = ok {
            let (families, _) = s.into_parts();
            out.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Record { t, families });
        }
        next += interval;
        let now = Instant::now();
        while next <= now {
            next += interval;
        }
        std::thread::sleep(next - now);
    }
}

/// Runs `accel-agent profile` (the arguments without `profile`); returns
/// the exit code.
pub fn run(args: Vec<OsString>) -> i32 {
    let (config, m): (Config, _) = match Config::parse_with(command, args) {
        Ok((Parsed::Run(c), Some(m))) => (*c, m),
        Ok((Parsed::Exit(code), _)) => return code,
        Ok((Parsed::Run(_), None)) => return 2,
        Err(msg) => {
            eprintln!("accel-agent profile: {msg}");
            return 2;
        }
    };
    let duration = *m.get_one::<Duration>("duration").expect("has a default");
    let interval = *m.get_one::<Duration>("interval").expect("has a default");
    let json = m.get_one::<String>("json").cloned();
    let html = m.get_one::<String>("html").cloned();
    let pids: Vec<u32> = m
        .get_many::<u32>("pid")
        .map(|v| v.copied().collect())
        .unwrap_or_default();
    // A bad output path fails now, not after the whole profile.
    for file in json.iter().chain(html.iter()) {
        if let Err(e) = std::fs::File::create(file) {
            eprintln!("accel-agent profile: cannot write {file}: {e}");
            return 2;
        }
    }
    let mut config = config;
    for pid in &pids {
        if !config
            .options
            .procfs
            .join(pid.to_string())
            .join("stat")
            .exists()
        {
            eprintln!("accel-agent profile: --pid {pid}: no such process");
            return 2;
        }
    }
    if !pids.is_empty() {
        config.options.process.pids = pids.clone();
        for c in config
            .collectors
            .iter_mut()
            .filter(|c| c.spec.name == "process")
        {
            c.enabled = true;
        }
    }
    // Warnings only unless asked: stdout carries the summary.
    let level = if config.log_level == tracing::Level::INFO {
        tracing::Level::WARN
    } else {
        config.log_level
    };
    crate::logging::init(level, config.log_format);

    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    let mut stores = Vec::new();
    let mut events_store = None;
    let mut events_wanted = false;
    for cc in config.collectors.iter().filter(|c| c.enabled) {
        if cc.spec.name == "goodput" {
            events_wanted = config.options.goodput.socket.is_some();
        }
        match (cc.spec.build)(&config.options) {
            Ok(Built::Ready(c)) => {
                let store = Arc::new(Mutex::new(Vec::new()));
                stores.push(store.clone());
                if cc.spec.name == "goodput" {
                    events_store = Some(store.clone());
                }
                let stop = stop.clone();
                let t = std::thread::Builder::new()
                    .name(format!("profile-{}", cc.spec.name))
                    .spawn(move || sample_loop(c, &store, start, interval, duration, &stop));
                match t {
                    Ok(t) => threads.push(t),
                    Err(e) => tracing::error!(error = %e, "cannot start a sampler thread"),
                }
            }
            Ok(Built::Absent(why)) => {
                tracing::debug!(collector = cc.spec.name, reason = %why, "collector absent")
            }
            Err(e) => {
                tracing::warn!(collector = cc.spec.name, error = %e, "collector could not be built")
            }
        }
    }
    // Run events: from this profile's own socket, else from the daemon that
    // holds it (read now and at the end).
    let daemon = |what: &str| -> Option<Vec<crate::runs::Obs>> {
        match crate::runs::scrape_daemon(&config.web.listen_address, &config.web.telemetry_path) {
            Ok(obs) => Some(obs),
            Err(e) => {
                tracing::info!(error = %e, when = what, "no run events: the event socket is taken and its agent cannot be read");
                None
            }
        }
    };
    let daemon_first = (events_wanted && events_store.is_none())
        .then(|| daemon("start"))
        .flatten();
    // SAFETY: isatty only inspects the descriptor.
    let tty = unsafe { libc::isatty(2) } == 1;
    let mut err = std::io::stderr();
    while start.elapsed() < duration {
        std::thread::sleep(
            Duration::from_millis(200).min(duration.saturating_sub(start.elapsed())),
        );
        if tty {
            let n = stores
                .iter()
                .map(|s| s.lock().map_or(0, |v| v.len()))
                .max()
                .unwrap_or(0);
            let _ = write!(
                err,
                "\r\x1b[Kprofiling: {:.1}s / {:.1}s, {n} samples",
                start.elapsed().as_secs_f64().min(duration.as_secs_f64()),
                duration.as_secs_f64()
            );
            let _ = err.flush();
        }
    }
    stop.store(true, Ordering::Relaxed);
    if tty {
        let _ = write!(err, "\r\x1b[K");
        let _ = err.flush();
    }
    // Let samples in progress finish, but never wait on a hung collector.
    let deadline = Instant::now() + interval + Duration::from_secs(1);
    while threads.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let runs = match (&events_store, daemon_first) {
        (Some(store), _) => {
            let recs = store.lock().unwrap_or_else(|e| e.into_inner());
            // This socket opened with the profile: everything it counted
            // happened during it.
            recs.last().map_or_else(Vec::new, |last| {
                crate::runs::summarise(&[], &crate::runs::flatten(&last.families), "events")
            })
        }
        (None, Some(first)) => daemon("end")
            .map(|last| crate::runs::summarise(&first, &last, "daemon"))
            .unwrap_or_default(),
        (None, None) => Vec::new(),
    };
    let all: Vec<Vec<Record>> = stores
        .iter()
        .map(|s| std::mem::take(&mut *s.lock().unwrap_or_else(|e| e.into_inner())))
        .collect();
    let (mut summary, series) = summarise(
        &all,
        start.elapsed().as_secs_f64().min(duration.as_secs_f64()),
    );
    summary.runs = runs;
    let diagnosis = diagnose(&summary);
    let text = render(&summary, &diagnosis);
    print!("{text}");
    if let Some(file) = &html {
        let page =
            crate::report::html(&summary, &diagnosis, &text, &series, interval.as_secs_f64());
        if let Err(e) = std::fs::write(file, page) {
            eprintln!("accel-agent profile: cannot write {file}: {e}");
            return 1;
        }
    }
    if let Some(file) = json {
        let signals: serde_json::Map<String, serde_json::Value> = series
            .into_iter()
            .map(|(k, p)| {
                (
                    k,
                    serde_json::json!({
                        "t": p.iter().map(|x| x.0).collect::<Vec<_>>(),
                        "v": p.iter().map(|x| x.1).collect::<Vec<_>>(),
                    }),
                )
            })
            .collect();
        let doc = serde_json::json!({
            "version": crate::VERSION,
            "interval_seconds": interval.as_secs_f64(),
            "duration_seconds": summary.duration_seconds,
            "verdict": diagnosis.verdict,
            "evidence": diagnosis.evidence,
            "advice": diagnosis.advice,
            "summary": summary,
            "signals": signals,
        });
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        if let Err(e) = std::fs::write(&file, text + "\n") {
            eprintln!("accel-agent profile: cannot write {file}: {e}");
            return 1;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(util: Stats, sm: f64, tensor: f64, dram: f64) -> GpuSummary {
        GpuSummary {
            gpu: "0".into(),
            allocated: true,
            utilization: Some(util),
            sm_active: Some(Stats::constant(sm)),
            tensor_active: Some(Stats::constant(tensor)),
            dram_active: Some(Stats::constant(dram)),
            sm_clock_ratio: Some(1.0),
            ..Default::default()
        }
    }

    fn node(g: GpuSummary) -> Summary {
        Summary {
            gpus: vec![g],
            ..Default::default()
        }
    }

    fn has(d: &Diagnosis, what: &str) -> bool {
        d.evidence.iter().any(|e| e.contains(what))
    }

    #[test]
    fn stats_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let s = Stats::of(&v).unwrap();
        assert_eq!((s.p50, s.p95, s.max), (50.0, 95.0, 100.0));
        assert!((s.mean - 50.5).abs() < 1e-9);
        assert!(Stats::of(&[]).is_none());
    }

    #[test]
    fn rates_from_counters() {
        let r = rates(&[(0.0, 10.0), (0.5, 20.0), (1.0, 5.0), (1.5, 10.0)]);
        assert_eq!(r, vec![(0.5, 20.0), (1.5, 10.0)]);
    }

    #[test]
    fn idle() {
        let d = diagnose(&node(gpu(Stats::constant(0.0), 0.0, 0.0, 0.0)));
        assert_eq!(d.verdict, Verdict::Idle);
        assert!(has(&d, "accel_gpu_utilization_ratio") && has(&d, "1 of them allocated"));
        assert_eq!(diagnose(&Summary::default()).verdict, Verdict::Idle);
    }

    #[test]
    fn compute_bound() {
        let d = diagnose(&node(gpu(Stats::constant(0.95), 0.88, 0.61, 0.47)));
        assert_eq!(d.verdict, Verdict::ComputeBound);
        assert!(has(&d, "accel_gpu_sm_active_ratio"));
    }

    #[test]
    fn memory_bandwidth_bound() {
        let d = diagnose(&node(gpu(Stats::constant(0.95), 0.6, 0.1, 0.8)));
        assert_eq!(d.verdict, Verdict::MemoryBandwidthBound);
        assert!(has(&d, "accel_gpu_dram_active_ratio"));
    }

    #[test]
    fn input_bound_saw_tooth_and_storage() {
        let saw = Stats {
            mean: 0.4,
            p50: 0.03,
            p95: 0.85,
            max: 0.85,
        };
        let d = diagnose(&node(gpu(saw, 0.36, 0.2, 0.2)));
        assert_eq!(d.verdict, Verdict::InputBound);
        assert!(has(&d, "saw-tooth"));
        let mut s = node(gpu(Stats::constant(0.3), 0.27, 0.1, 0.1));
        s.iowait_share = Some(Stats::constant(0.35));
        let d = diagnose(&s);
        assert_eq!(d.verdict, Verdict::InputBound);
        assert!(has(&d, "iowait"));
        let mut s = node(gpu(Stats::constant(0.3), 0.27, 0.1, 0.1));
        s.disks.push(IoSummary {
            device: "nvme0n1".into(),
            utilization: Some(Stats::constant(0.97)),
            ..Default::default()
        });
        assert!(has(&diagnose(&s), "accel_disk_io_time_seconds_total"));
    }

    #[test]
    fn communication_bound() {
        let mut g = gpu(Stats::constant(0.6), 0.3, 0.1, 0.1);
        g.nvlink_bytes_per_second = Some(Stats::constant(400e9));
        g.nvlink_capacity_bytes_per_second = Some(450e9);
        let d = diagnose(&node(g));
        assert_eq!(d.verdict, Verdict::CommunicationBound);
        assert!(has(&d, "NVLink"));
        let mut s = node(gpu(Stats::constant(0.6), 0.3, 0.1, 0.1));
        s.infiniband.push(IoSummary {
            device: "mlx5_0:1".into(),
            read_bytes_per_second: Some(Stats::constant(24e9)),
            capacity_bytes_per_second: Some(25e9),
            ..Default::default()
        });
        let d = diagnose(&s);
        assert_eq!(d.verdict, Verdict::CommunicationBound);
        assert!(has(&d, "accel_infiniband"));
    }

    #[test]
    fn host_cpu_bound() {
        let mut s = node(gpu(Stats::constant(0.3), 0.27, 0.1, 0.1));
        s.max_cpu_busy = Some(Stats::constant(0.99));
        let d = diagnose(&s);
        assert_eq!(d.verdict, Verdict::HostCpuBound);
        assert!(has(&d, "accel_cpu_seconds_total"));
    }

    #[test]
    fn throttled() {
        let mut g = gpu(Stats::constant(0.95), 0.85, 0.5, 0.4);
        g.throttle_share = 1.0;
        g.throttle_reasons.insert("hw_thermal_slowdown".into(), 1.0);
        g.sm_clock_ratio = Some(0.8);
        let d = diagnose(&node(g.clone()));
        assert_eq!(d.verdict, Verdict::Throttled);
        assert!(has(&d, "hw_thermal_slowdown") && has(&d, "accel_gpu_clock_hertz"));
        assert!(d.advice.iter().any(|a| a.contains("cooling")));
        // Reasons set but clocks at max: not throttled.
        g.sm_clock_ratio = Some(1.0);
        assert_eq!(diagnose(&node(g)).verdict, Verdict::ComputeBound);
    }

    /// As seen on a real H100 SXM under a bf16 matmul: sw_power_cap all the
    /// time at the default 700 W limit, SM clock at 69 % of its maximum.
    /// That is the GPU working flat out, not a fault.
    #[test]
    fn power_cap_at_default_limit_is_compute_bound() {
        let mut g = gpu(Stats::constant(1.0), 0.96, 0.94, 0.26);
        g.throttle_reasons.insert("sw_power_cap".into(), 1.0);
        g.power_capped_share = 1.0;
        g.throttle_share = 0.0;
        g.power_limit_watts = Some(700.0);
        g.power_default_limit_watts = Some(700.0);
        g.sm_clock_ratio = Some(0.69);
        let d = diagnose(&node(g.clone()));
        assert_eq!(d.verdict, Verdict::ComputeBound);
        assert!(has(&d, "at the power limit 100% of the time"), "{d:?}");
        // The same with the limit lowered to 500 W: throttled, and the
        // evidence names the limit.
        g.power_limit_watts = Some(500.0);
        g.throttle_share = 1.0;
        let d = diagnose(&node(g));
        assert_eq!(d.verdict, Verdict::Throttled);
        assert!(has(&d, "500 W below the default 700 W"), "{d:?}");
        assert!(d.advice.iter().any(|a| a.contains("power cap")));
    }
}
