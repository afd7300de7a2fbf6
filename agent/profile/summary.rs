//! The profile's summary: the key signals of the sampled [`Record`]s (GPU
//! activity, storage and network throughput, host CPU, the followed
//! processes) as statistics per device, and the named series they were
//! computed from (charted by the HTML report, written by `--json`).

use std::collections::BTreeMap;

use accel_collectors::{
    cpu, disk, gpu, infiniband, network, pressure, process, tpu, Family, Series,
};
use serde::Serialize;

/// Per-direction bandwidth of one NVLink link (NVLink 3 and 4: 25 GB/s).
pub const NVLINK_LINK_BYTES_PER_SECOND: f64 = 25e9;

/// The reasons that mean clocks are held down for power or heat.
const THROTTLE_REASONS: [&str; 5] = [
    "sw_power_cap",
    "hw_slowdown",
    "sw_thermal_slowdown",
    "hw_thermal_slowdown",
    "hw_power_brake_slowdown",
];

/// One sample of one collector.
#[derive(Debug)]
pub struct Record {
    /// Seconds since the profile started.
    pub t: f64,
    /// What the collector produced.
    pub families: Vec<Family>,
}

/// A signal over time: (seconds since the profile started, value).
pub type Points = Vec<(f64, f64)>;

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
    /// Samples in which the GPU answered (its statistics cover only
    /// these), out of [`Summary::samples`].
    pub samples: usize,
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

/// One TPU chip's signals (the tpu collector's).
#[derive(Clone, Debug, Default, Serialize)]
pub struct TpuSummary {
    pub chip: String,
    /// Samples in which the runtime gave the chip's duty cycle, out of
    /// [`Summary::samples`].
    pub samples: usize,
    pub allocated: bool,
    /// Duty cycle (0-1), while the runtime served it.
    pub duty_cycle: Option<Stats>,
    /// HBM used over the runtime's total, summed over the chip's devices.
    pub hbm_used_ratio: Option<Stats>,
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
    /// The most samples any collector finished.
    pub samples: usize,
    /// What went wrong, in time order (written at the top of the JSON).
    #[serde(skip)]
    pub faults: Vec<super::faults::Fault>,
    pub gpus: Vec<GpuSummary>,
    /// TPU chips on the PCI bus (empty on a GPU node).
    pub tpus: Vec<TpuSummary>,
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

fn label<'a>(s: &'a Series, name: &str) -> Option<&'a str> {
    s.labels
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.as_str())
}

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
    let util = gauge(gpu::utilization::UTILIZATION_RATIO.name);
    let sm = gauge(gpu::gpm::SM_ACTIVE_RATIO.name);
    let tensor = gauge(gpu::gpm::TENSOR_ACTIVE_RATIO.name);
    let dram = gauge(gpu::gpm::DRAM_ACTIVE_RATIO.name);
    let power = gauge(gpu::power::POWER_WATTS.name);
    let allocated = gauge(gpu::accounting::ALLOCATED.name);
    let pcie_rx = gauge(gpu::pcie::PCIE_RECEIVE_BYTES_PER_SECOND.name);
    let pcie_tx = gauge(gpu::pcie::PCIE_TRANSMIT_BYTES_PER_SECOND.name);
    let nv_rx = gauge(gpu::nvlink::NVLINK_RECEIVE_BYTES.name);
    let nv_tx = gauge(gpu::nvlink::NVLINK_TRANSMIT_BYTES.name);
    let nv_up = gauge(gpu::nvlink::NVLINK_LINKS_UP.name);
    let clock_of = |f: &str| {
        points(all, f, |s| {
            (label(s, "clock") == Some("sm")).then(|| label(s, "gpu").unwrap_or("").to_owned())
        })
    };
    let clock = clock_of(gpu::throttle::CLOCK_HERTZ.name);
    let clock_max = clock_of(gpu::throttle::CLOCK_MAX_HERTZ.name);
    let limit = gauge(gpu::power::POWER_LIMIT_WATTS.name);
    let default_limit = gauge(gpu::power::POWER_DEFAULT_LIMIT_WATTS.name);
    // Reasons other than the power cap, per sample.
    let severe_reason = points(all, gpu::throttle::THROTTLE_REASON.name, |s| {
        let r = label(s, "reason")?;
        (THROTTLE_REASONS.contains(&r) && r != "sw_power_cap")
            .then(|| label(s, "gpu").unwrap_or("").to_owned())
    });
    let reasons = points(all, gpu::throttle::THROTTLE_REASON.name, |s| {
        let r = label(s, "reason")?;
        THROTTLE_REASONS
            .contains(&r)
            .then(|| format!("{}/{r}", label(s, "gpu").unwrap_or("")))
    });
    let any_reason = points(all, gpu::throttle::THROTTLE_REASON.name, |s| {
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
        // A throttle reason has a series only while it is in force: its
        // share is of the GPU's samples (those with a utilisation reading),
        // not of the samples where the reason's series was there.
        let gpu_samples = util.get(g).map_or(0, Vec::len);
        let share = |p: Option<&Points>| {
            p.map_or(0.0, |p| {
                let n = gpu_samples.max(p.len());
                if n == 0 {
                    0.0
                } else {
                    p.iter().filter(|x| x.1 > 0.0).count() as f64 / n as f64
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
            samples: util.get(g).map_or(0, Vec::len),
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
        disk::READ_BYTES.name,
        disk::WRITTEN_BYTES.name,
        &dev,
        Some(disk::IO_TIME_SECONDS.name),
        None,
        &mut series,
    );
    let networks = io(
        "network",
        network::RECEIVE_BYTES.name,
        network::TRANSMIT_BYTES.name,
        &dev,
        None,
        Some(network::SPEED.name),
        &mut series,
    );
    let infiniband = io(
        "infiniband",
        infiniband::PORT_DATA_RECEIVED_BYTES.name,
        infiniband::PORT_DATA_TRANSMITTED_BYTES.name,
        &ib_key,
        None,
        Some(infiniband::RATE.name),
        &mut series,
    );

    // Host CPU: per cpu and mode.
    let cpu = points(all, cpu::SECONDS.name, |s| {
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
    let io_some = single(pressure::IO_WAITING.name);
    let io_full = single(pressure::IO_STALLED.name);
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
    let tpus = tpu_summaries(all, &mut series);
    let summary = Summary {
        tpus,
        processes,
        runs: Vec::new(),
        faults: Vec::new(),
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

/// The TPU chips the tpu collector saw, by chip number.
fn tpu_summaries(all: &[Vec<Record>], series: &mut BTreeMap<String, Points>) -> Vec<TpuSummary> {
    let chips = points(all, tpu::INFO.name, by("chip"));
    let duty = points(all, tpu::DUTY_CYCLE.name, by("chip"));
    let allocated = points(all, tpu::ALLOCATED.name, by("chip"));
    let used = points(all, tpu::HBM_USED.name, by("chip"));
    let total = points(all, tpu::HBM_TOTAL.name, by("chip"));
    let mut ids: Vec<&String> = chips.keys().collect();
    ids.sort_by_key(|c| c.parse::<u64>().unwrap_or(u64::MAX));
    let mut out = Vec::new();
    for c in ids {
        let hbm = match (used.get(c), total.get(c)) {
            (Some(u), Some(t)) => Some(ratio(u, t)),
            _ => None,
        };
        if let Some(d) = duty.get(c) {
            series.insert(format!("tpu{c}.duty_cycle"), d.clone());
        }
        if let Some(h) = hbm.as_ref().filter(|h| !h.is_empty()) {
            series.insert(format!("tpu{c}.hbm_used_ratio"), h.clone());
        }
        out.push(TpuSummary {
            chip: c.clone(),
            samples: duty.get(c).map_or(0, Vec::len),
            allocated: allocated
                .get(c)
                .is_some_and(|p| p.iter().any(|x| x.1 > 0.0)),
            duty_cycle: stats(duty.get(c)),
            hbm_used_ratio: hbm.as_ref().and_then(|p| Stats::of(&values(p))),
        });
    }
    out
}

/// The followed processes: those asked for with --pid first, then by pid.
fn process_summaries(
    all: &[Vec<Record>],
    series: &mut BTreeMap<String, Points>,
) -> Vec<ProcessSummary> {
    let mut info: BTreeMap<String, (String, String)> = BTreeMap::new();
    for recs in all {
        for r in recs {
            if let Some(f) = r
                .families
                .iter()
                .find(|f| f.name == process::WORKLOAD_INFO.name)
            {
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
    let cpu = counter(process::WORKLOAD_CPU_SECONDS.name, &|_| true);
    let read = counter(process::WORKLOAD_READ_BYTES.name, &|_| true);
    let write = counter(process::WORKLOAD_WRITE_BYTES.name, &|_| true);
    let major = counter(process::WORKLOAD_PAGE_FAULTS.name, &|s| {
        label(s, "kind") == Some("major")
    });
    let invol = counter(process::WORKLOAD_CONTEXT_SWITCHES.name, &|s| {
        label(s, "kind") == Some("involuntary")
    });
    let threads = points(all, process::WORKLOAD_THREADS.name, by("pid"));
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
