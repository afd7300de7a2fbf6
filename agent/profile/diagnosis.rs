//! The verdict: [`diagnose`] names the bottleneck from a [`Summary`]. It is a
//! pure function of the summary, so each rule is unit-tested without a node.

use std::collections::BTreeMap;

use serde::Serialize;

use super::summary::{GpuSummary, Summary, TpuSummary};

/// The names the evidence quotes, from the collectors' family tables.
const ALLOCATED: &str = accel_collectors::gpu::accounting::ALLOCATED.name;
const CLOCK_HERTZ: &str = accel_collectors::gpu::throttle::CLOCK_HERTZ.name;
const CLOCK_MAX_HERTZ: &str = accel_collectors::gpu::throttle::CLOCK_MAX_HERTZ.name;
const CPU_SECONDS: &str = accel_collectors::cpu::SECONDS.name;
const DISK_IO_TIME: &str = accel_collectors::disk::IO_TIME_SECONDS.name;
const DRAM_ACTIVE_RATIO: &str = accel_collectors::gpu::gpm::DRAM_ACTIVE_RATIO.name;
const IO_PRESSURE_WAITING: &str = accel_collectors::pressure::IO_WAITING.name;
const POWER_DEFAULT_LIMIT_WATTS: &str =
    accel_collectors::gpu::power::POWER_DEFAULT_LIMIT_WATTS.name;
const POWER_LIMIT_WATTS: &str = accel_collectors::gpu::power::POWER_LIMIT_WATTS.name;
const PROCESS_CPU_SECONDS: &str = accel_collectors::process::WORKLOAD_CPU_SECONDS.name;
const PROCESS_READ_BYTES: &str = accel_collectors::process::WORKLOAD_READ_BYTES.name;
const SM_ACTIVE_RATIO: &str = accel_collectors::gpu::gpm::SM_ACTIVE_RATIO.name;
const TENSOR_ACTIVE_RATIO: &str = accel_collectors::gpu::gpm::TENSOR_ACTIVE_RATIO.name;
const THROTTLE_REASON: &str = accel_collectors::gpu::throttle::THROTTLE_REASON.name;
const UTILIZATION_RATIO: &str = accel_collectors::gpu::utilization::UTILIZATION_RATIO.name;
const TPU_DUTY_CYCLE: &str = accel_collectors::tpu::DUTY_CYCLE.name;
const TPU_ALLOCATED: &str = accel_collectors::tpu::ALLOCATED.name;

/// The share of step time spent in data_wait above which the training
/// loop itself says it is input-bound.
pub const DATA_WAIT_BOUND: f64 = 0.2;

/// The decision rules, in the order [`diagnose`] applies them: the first
/// that holds is the verdict. README.md's "Verdicts" table is this one (a
/// test holds them equal).
pub const RULES: [(&str, &str); 12] = [
    ("broken", "a GPU was lost (accel_gpu_up 0) or raised a fatal XID (48, 63, 64, 74, 79, 92, 94, 95, 119, 120) during the profile; the performance verdict on the samples that answered follows it"),
    ("degraded", "another fault: a collector's samples stalled (a hung driver call or read) or failed, or a non-fatal XID; the performance verdict on the samples that answered follows it"),
    ("no-accelerator", "no GPU was sampled (no NVML library, no GPU, or the gpu collector off)"),
    ("idle", "GPU utilisation mean < 5 % and p95 < 10 %, and the processes holding the GPUs idle too (under 0.25 CPUs, under 1 MB/s read, under 10 major faults/s)"),
    ("input-bound (holders)", "GPUs as idle as above, while a process holding them reads storage (>= 1 MB/s or >= 10 major faults/s): it waits for its input"),
    ("host-cpu-bound (holders)", "GPUs as idle as above, while a process holding them uses >= 0.25 CPUs: the GPU waits on its own host process"),
    ("throttled", "clocks held down >= 50 % of the time by heat, a hardware slowdown or a power limit below the default, and the SM clock under 97 % of its maximum"),
    ("communication-bound", "an NVLink, network or InfiniBand link >= 70 % of its capacity while SM active < 50 %"),
    ("input-bound", "the training loop's data_wait >= 20 % of step time; or GPUs underused (utilisation < 70 % or SM active < 50 %) with a saw-tooth, iowait or I/O pressure >= 20 %, a disk >= 80 % busy, or a process reading >= 20 MB/s"),
    ("host-cpu-bound", "GPUs underused and the busiest CPU >= 90 % busy"),
    ("memory-bandwidth-bound", "DRAM active >= 50 % and >= 0.9 x SM active"),
    ("compute-bound", "GPUs not underused (otherwise: input-bound, weakly, when nothing else is saturated)"),
];

/// The bottleneck, or what is wrong with the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Broken,
    Degraded,
    NoAccelerator,
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
            Verdict::Broken => "broken",
            Verdict::Degraded => "degraded",
            Verdict::NoAccelerator => "no-accelerator",
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
    /// Under `broken` and `degraded`: the verdict on the samples that
    /// answered (none when no GPU answered).
    pub performance: Option<Verdict>,
    pub evidence: Vec<String>,
    pub advice: Vec<String>,
}

pub(super) fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

fn mean_of(gpus: &[GpuSummary], f: impl Fn(&GpuSummary) -> Option<f64>) -> Option<f64> {
    let v: Vec<f64> = gpus.iter().filter_map(f).collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn diag(verdict: Verdict, evidence: Vec<String>, advice: &[&str]) -> Diagnosis {
    Diagnosis {
        verdict,
        performance: None,
        evidence,
        advice: advice.iter().map(|s| s.to_string()).collect(),
    }
}

/// Names what is wrong with the node, or else its bottleneck, by the
/// [`RULES`] in order: faults first (`broken`, `degraded`, with the
/// performance verdict on the samples that answered), then performance.
pub fn diagnose(s: &Summary) -> Diagnosis {
    let perf = performance(s);
    if s.faults.is_empty() {
        return perf;
    }
    let broken = s.faults.iter().any(|f| f.fatal);
    let mut evidence: Vec<String> = s
        .faults
        .iter()
        .filter(|f| f.fatal || !broken)
        .map(|f| {
            format!(
                "{}: {} from {:.1}s to {:.1}s: {}",
                f.device,
                f.kind.as_str(),
                f.first_seconds,
                f.last_seconds,
                f.detail
            )
        })
        .collect();
    let mut partial: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    // A few samples short is a loaded machine skipping ticks; under 90 %
    // is a GPU that stopped answering.
    for g in s
        .gpus
        .iter()
        .filter(|g| (g.samples as f64) < 0.9 * s.samples as f64)
    {
        partial.entry(g.samples).or_default().push(&g.gpu);
    }
    for (n, ids) in partial {
        evidence.push(format!(
            "GPU{} {}: statistics over the {n} of {} samples answered",
            if ids.len() > 1 { "s" } else { "" },
            ids.join(", "),
            s.samples
        ));
    }
    let answered = perf.verdict != Verdict::NoAccelerator;
    if answered {
        evidence.push(format!(
            "on the samples that answered: {}",
            perf.verdict.as_str()
        ));
        evidence.extend(perf.evidence.iter().map(|e| format!("  {e}")));
    }
    let mut advice: Vec<String> = if broken {
        vec![
            "drain the node: a lost GPU or a fatal XID needs a GPU reset or a reboot, and often a hardware ticket (nvidia-smi -q, dmesg | grep -i xid, nvidia-bug-report.sh)".into(),
        ]
    } else {
        vec!["the figures cover only what answered: check the faults (a hung driver call: dmesg, nvidia-smi; a failing collector: the agent's log) before tuning".into()]
    };
    if answered {
        advice.extend(perf.advice);
    }
    Diagnosis {
        verdict: if broken {
            Verdict::Broken
        } else {
            Verdict::Degraded
        },
        performance: answered.then_some(perf.verdict),
        evidence,
        advice,
    }
}

/// The verdict of a TPU host (chips, no GPU): from the duty cycle, the
/// training loop's own data_wait, and the holders.
fn tpu_performance(s: &Summary) -> Diagnosis {
    let tpus = &s.tpus;
    let n = tpus.len();
    let allocated = tpus.iter().filter(|t| t.allocated).count();
    let mean = |f: &dyn Fn(&TpuSummary) -> Option<f64>| {
        let v: Vec<f64> = tpus.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let Some(duty) = mean(&|t| t.duty_cycle.map(|d| d.mean)) else {
        return diag(
            Verdict::NoAccelerator,
            vec![format!(
                "{n} TPU chips ({allocated} held by a process), but libtpu's runtime metrics were not served ({TPU_DUTY_CYCLE} absent): no workload, or one started without TPU_RUNTIME_METRICS_PORTS"
            )],
            &["start the workload with TPU_RUNTIME_METRICS_PORTS=8431 (8431,8432,... for one process per chip), or give the agent its ports (--collector.tpu.runtime-ports)"],
        );
    };
    let p95 = mean(&|t| t.duty_cycle.map(|d| d.p95)).unwrap_or(0.0);
    let hbm = mean(&|t| t.hbm_used_ratio.map(|h| h.mean));
    let mut ev = vec![format!(
        "{TPU_DUTY_CYCLE} mean {} (p95 {}) over {n} TPU chips, {allocated} of them held ({TPU_ALLOCATED})",
        pct(duty),
        pct(p95)
    )];
    if let Some(h) = hbm {
        ev.push(format!("HBM used {} of the runtime's total", pct(h)));
    }
    if duty < 0.05 && p95 < 0.10 {
        return diag(
            Verdict::Idle,
            ev,
            if allocated > 0 {
                &["the chips are held but do no work: check the job is running (stuck in compilation, a deadlock, waiting on other hosts of the slice) or stop the process holding them (accel_tpu_process_info)"][..]
            } else {
                &["no work on the TPUs: nothing to tune"][..]
            },
        );
    }
    let data_wait = s
        .runs
        .iter()
        .filter_map(|r| r.data_wait_share)
        .fold(None, |a: Option<f64>, w| Some(a.map_or(w, |a| a.max(w))));
    if let Some(w) = data_wait.filter(|w| *w >= DATA_WAIT_BOUND) {
        ev.push(format!(
            "steps waited for input {} of the time (data_wait)",
            pct(w)
        ));
        return diag(Verdict::InputBound, ev, TPU_INPUT_ADVICE);
    }
    if duty < 0.5 {
        ev.push("the TensorCores wait most of the time: the host does not keep them fed".into());
        return diag(Verdict::InputBound, ev, TPU_INPUT_ADVICE);
    }
    diag(
        Verdict::ComputeBound,
        ev,
        &["the TensorCores are busy: gains come from the model (larger matmuls, bf16, fewer small ops; the XLA profiler's op profile shows where time goes)"],
    )
}

const TPU_INPUT_ADVICE: &[&str] = &[
    "feed the chips faster: more tf.data / grain workers, prefetch to device, larger per-step batches; check the host's CPU and storage in this report",
    "accel_tpu_hlo_queue_size near 0 and long accel_tpu_host_to_device_transfer_latency_seconds confirm it",
];

/// The performance verdict: [`RULES`] after the faults.
fn performance(s: &Summary) -> Diagnosis {
    if !s.tpus.is_empty() && s.gpus.iter().all(|g| g.utilization.is_none()) {
        return tpu_performance(s);
    }
    let gpus = &s.gpus;
    let n = gpus.len();
    let allocated = gpus.iter().filter(|g| g.allocated).count();
    let util = mean_of(gpus, |g| g.utilization.map(|u| u.mean));
    let Some(util) = util else {
        return diag(
            Verdict::NoAccelerator,
            vec![format!(
                "no GPU was sampled ({UTILIZATION_RATIO} absent): no NVML library, no GPU, or the gpu collector is off"
            )],
            &["on a GPU node: check that the gpu collector is enabled and NVML loads (--nvml.library)"],
        );
    };
    let util_p95 = mean_of(gpus, |g| g.utilization.map(|u| u.p95)).unwrap_or(0.0);
    let sm = mean_of(gpus, |g| g.sm_active.map(|x| x.mean));
    let tensor = mean_of(gpus, |g| g.tensor_active.map(|x| x.mean));
    let dram = mean_of(gpus, |g| g.dram_active.map(|x| x.mean));
    let busy = sm.unwrap_or(util);

    // Idle GPUs: idle only when their holders are idle too.
    if util < 0.05 && util_p95 < 0.10 {
        if let Some(d) = busy_holders(s, util) {
            return d;
        }
        return diag(
            Verdict::Idle,
            vec![format!(
                "{UTILIZATION_RATIO} mean {} (p95 {}) over {n} GPUs, {allocated} of them allocated ({ALLOCATED})",
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
            "{THROTTLE_REASON}: clocks held down {} of the time",
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
                        "GPU {}: {POWER_LIMIT_WATTS} {l:.0} W below the default {d:.0} W ({POWER_DEFAULT_LIMIT_WATTS})",
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
                "{CLOCK_HERTZ}{{clock=\"sm\"}} at {} of {CLOCK_MAX_HERTZ}",
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
                    format!("{SM_ACTIVE_RATIO} mean {}", pct(busy)),
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
        ev.push(format!("{UTILIZATION_RATIO} mean {}", pct(util)));
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
                "utilisation saw-tooth: {UTILIZATION_RATIO} mean {} but p95 {} (GPUs wait for each batch)",
                pct(util),
                pct(util_p95)
            ));
        }
        if let Some(w) = s.iowait_share.filter(|w| w.mean >= 0.2) {
            ev.push(format!(
                "{CPU_SECONDS}{{mode=\"iowait\"}} {} of CPU time",
                pct(w.mean)
            ));
        }
        if let Some(p) = s.io_pressure_waiting.filter(|p| p.mean >= 0.2) {
            ev.push(format!("{IO_PRESSURE_WAITING} rate {}", pct(p.mean)));
        }
        for d in &s.disks {
            if let Some(u) = d.utilization.filter(|u| u.mean >= 0.8) {
                ev.push(format!(
                    "disk {} busy {} of the time ({DISK_IO_TIME})",
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
                    "process {} ({}) reads {:.0} MB/s from storage ({PROCESS_READ_BYTES}), {major:.0} major page faults/s",
                    p.pid,
                    p.comm,
                    read / 1e6
                ));
            }
        }
        if !ev.is_empty() {
            ev.push(format!("{UTILIZATION_RATIO} mean {}", pct(util)));
            return diag(
                Verdict::InputBound,
                ev,
                &["more data-loader workers and prefetching (pin memory, a deeper prefetch queue)", "cache the data set on a local SSD or in memory", "pre-process / decode offline"],
            );
        }
        if let Some(c) = s.max_cpu_busy.filter(|c| c.mean >= 0.9) {
            let mut ev = vec![
                format!(
                    "the busiest CPU is busy {} of the time ({CPU_SECONDS})",
                    pct(c.mean)
                ),
                format!("{UTILIZATION_RATIO} mean {}", pct(util)),
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
                    "process {} ({}) uses {:.2} CPUs ({PROCESS_CPU_SECONDS})",
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
                    "{DRAM_ACTIVE_RATIO} mean {} against {SM_ACTIVE_RATIO} {}",
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
        let mut ev = vec![format!("{UTILIZATION_RATIO} mean {}", pct(util))];
        if let Some(x) = sm {
            ev.push(format!("{SM_ACTIVE_RATIO} mean {}", pct(x)));
        }
        if let Some(x) = tensor {
            ev.push(format!("{TENSOR_ACTIVE_RATIO} mean {}", pct(x)));
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
            "{UTILIZATION_RATIO} mean {} (p95 {}) with no host, storage or network signal saturated: the pipeline feeding the GPUs is the likely limit",
            pct(util),
            pct(util_p95)
        )],
        &["more data-loader workers and prefetching", "a larger batch", "profile the training step (host-side work between kernels)"],
    )
}

/// GPUs idle while a process holding them works on the host: it reads
/// its input (input-bound) or computes on the CPU (host-CPU-bound).
fn busy_holders(s: &Summary, util: f64) -> Option<Diagnosis> {
    let mean = |x: Option<super::summary::Stats>| x.map_or(0.0, |x| x.mean);
    let holders = s.processes.iter().filter(|p| p.reason == "gpu");
    let reader = holders
        .clone()
        .max_by(|a, b| mean(a.read_bytes_per_second).total_cmp(&mean(b.read_bytes_per_second)));
    let cpu = holders.max_by(|a, b| mean(a.cpu).total_cmp(&mean(b.cpu)));
    let what = |p: &super::summary::ProcessSummary| {
        format!(
            "process {} ({}) holds a GPU and uses {:.2} CPUs ({PROCESS_CPU_SECONDS}), reads {:.1} MB/s ({PROCESS_READ_BYTES}), {:.0} major page faults/s",
            p.pid,
            p.comm,
            mean(p.cpu),
            mean(p.read_bytes_per_second) / 1e6,
            mean(p.major_faults_per_second)
        )
    };
    let gpu = format!(
        "{UTILIZATION_RATIO} mean {}: the GPUs wait on their own host process, not a stuck job",
        pct(util)
    );
    if let Some(p) = reader
        .filter(|p| mean(p.read_bytes_per_second) >= 1e6 || mean(p.major_faults_per_second) >= 10.0)
    {
        return Some(diag(
            Verdict::InputBound,
            vec![what(p), gpu],
            &[
                "the step waits for its input: more data-loader workers and prefetching",
                "cache the data set on a local SSD or in memory",
                "pre-process / decode offline",
            ],
        ));
    }
    if let Some(p) = cpu.filter(|p| mean(p.cpu) >= 0.25) {
        return Some(diag(
            Verdict::HostCpuBound,
            vec![what(p), gpu],
            &["the GPU waits while its process computes on the CPU: move that work to the GPU, to data-loader workers, or overlap it with GPU work", "profile the host side of the step (py-spy, perf)"],
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::faults::{Fault, FaultKind};
    use crate::profile::summary::{IoSummary, ProcessSummary, Stats};

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

    fn tpu_node(duty: Option<f64>, allocated: bool) -> Summary {
        Summary {
            tpus: (0..8)
                .map(|i| TpuSummary {
                    chip: i.to_string(),
                    samples: 10,
                    allocated,
                    duty_cycle: duty.map(Stats::constant),
                    hbm_used_ratio: Some(Stats::constant(0.9)),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn tpu_hosts() {
        let d = diagnose(&tpu_node(Some(0.97), true));
        assert_eq!(d.verdict, Verdict::ComputeBound);
        assert!(
            has(&d, "over 8 TPU chips, 8 of them held"),
            "{:?}",
            d.evidence
        );
        let d = diagnose(&tpu_node(Some(0.01), true));
        assert_eq!(d.verdict, Verdict::Idle);
        assert!(d.advice[0].contains("held but do no work"));
        assert_eq!(
            diagnose(&tpu_node(Some(0.33), true)).verdict,
            Verdict::InputBound
        );
        let d = diagnose(&tpu_node(None, true));
        assert_eq!(d.verdict, Verdict::NoAccelerator);
        assert!(has(&d, "TPU_RUNTIME_METRICS_PORTS"), "{:?}", d.evidence);
    }

    fn has(d: &Diagnosis, what: &str) -> bool {
        d.evidence.iter().any(|e| e.contains(what))
    }

    #[test]
    fn idle() {
        let d = diagnose(&node(gpu(Stats::constant(0.0), 0.0, 0.0, 0.0)));
        assert_eq!(d.verdict, Verdict::Idle);
        assert!(has(&d, "accel_gpu_utilization_ratio") && has(&d, "1 of them allocated"));
        assert_eq!(
            diagnose(&Summary::default()).verdict,
            Verdict::NoAccelerator
        );
    }

    #[test]
    fn idle_gpu_with_a_busy_holder_is_not_idle() {
        let mut s = node(gpu(Stats::constant(0.03), 0.02, 0.0, 0.0));
        s.processes.push(ProcessSummary {
            pid: "42".into(),
            comm: "python3".into(),
            reason: "gpu".into(),
            cpu: Some(Stats::constant(0.6)),
            ..Default::default()
        });
        let d = diagnose(&s);
        assert_eq!(d.verdict, Verdict::HostCpuBound, "{d:?}");
        assert!(has(&d, "process 42 (python3) holds a GPU"));
        s.processes[0].read_bytes_per_second = Some(Stats::constant(5e6));
        assert_eq!(diagnose(&s).verdict, Verdict::InputBound);
        // A holder that asks for nothing: idle.
        s.processes[0].read_bytes_per_second = None;
        s.processes[0].cpu = Some(Stats::constant(0.01));
        assert_eq!(diagnose(&s).verdict, Verdict::Idle);
    }

    #[test]
    fn faults_come_first() {
        let mut s = node(gpu(Stats::constant(0.95), 0.88, 0.61, 0.47));
        s.samples = 100;
        s.gpus[0].samples = 30;
        s.faults.push(Fault {
            kind: FaultKind::Stalled,
            device: "collector gpu".into(),
            first_seconds: 3.0,
            last_seconds: 10.0,
            fatal: false,
            detail: "no sample finished".into(),
        });
        let d = diagnose(&s);
        assert_eq!(d.verdict, Verdict::Degraded);
        assert_eq!(d.performance, Some(Verdict::ComputeBound));
        assert!(
            has(&d, "30 of 100 samples") && has(&d, "collector gpu"),
            "{d:?}"
        );
        s.faults.push(Fault {
            kind: FaultKind::GpuLost,
            device: "GPU 0".into(),
            first_seconds: 3.0,
            last_seconds: 10.0,
            fatal: true,
            detail: "lost".into(),
        });
        let d = diagnose(&s);
        assert_eq!(d.verdict, Verdict::Broken);
        assert!(has(&d, "GPU 0: gpu lost from 3.0s"), "{d:?}");
        assert!(d.advice[0].contains("drain the node"));
        // Without GPUs, no performance verdict.
        s.gpus.clear();
        assert_eq!(diagnose(&s).performance, None);
    }

    /// README.md's verdict table is [`RULES`].
    #[test]
    fn readme_lists_the_rules() {
        let readme = include_str!("../../README.md");
        for (v, when) in RULES {
            let row = format!("| `{v}` | {when} |");
            assert!(readme.contains(&row), "README.md lacks the row {row}");
        }
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
