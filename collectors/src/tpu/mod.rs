//! `accel_tpu_*`: Google Cloud TPUs on a plain TPU VM (no GKE needed).
//!
//! Two sources. The PCI bus, always: every chip (vendor 0x1ae0), its
//! generation and HBM capacity from the device id ([`chips`]), and which
//! processes hold it (an open fd on `/dev/accel<N>` or `/dev/vfio/<N>`),
//! with their systemd unit, container and Slurm job as for GPUs. And
//! libtpu's runtime metric service (gRPC `tpu.monitoring.runtime.
//! RuntimeMetricService` on localhost, port 8431 by default, one port per
//! process when several share the host), only while a JAX or PyTorch/XLA
//! workload serves it: HBM used and total per TensorCore device, duty cycle
//! and utilisation per chip, the HLO queue, HLO execution time and the
//! collective, DCN and host-device transfer latencies as histograms.
//!
//! The runtime is asked on the collector's own background thread
//! ([`runtime`]), every port concurrently under a deadline; `sample()`
//! never waits on the network. No runtime on a port is normal
//! (`accel_tpu_runtime_up{port} 0`, no error); a port that hangs or answers
//! garbage is counted (`accel_tpu_runtime_errors_total{port,kind}`) and
//! its data withheld. Busy, allocated and idle-while-allocated seconds are
//! integrated from every sample, as for GPUs. Without chips on the PCI bus
//! the collector is absent. docs/tpu.md says more, and why the protobuf is
//! decoded by hand ([`proto`]) rather than with tonic and prost.

pub mod chips;
pub mod proto;
pub mod runtime;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::options::{options, parse_duration, parse_interval, parse_ratio};
use crate::shared::{GpuSnapshot, Topic};
use crate::workers::{Worker, Workers};
use crate::{
    cgroup, BuildContext, Built, CollectError, Collector, FamilyDef, GpuIds, Sample, Spec,
};
use chips::{Chip, Generation};
use proto::{Measure, TpuMetric};
use runtime::{names, Failure, States};

/// A list of TCP ports (`8431-8434`, `8431,8432`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ports(pub Vec<u16>);

/// Parses `8431-8434`, `8431,8433` or a mix; at most 64 ports.
pub fn parse_ports(s: &str) -> Result<Ports, String> {
    let bad = || format!("{s:?} is not a list of ports (e.g. 8431-8434 or 8431,8432)");
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let a: u16 = a.parse().map_err(|_| bad())?;
        let b: u16 = b.parse().map_err(|_| bad())?;
        if a == 0 || b < a || usize::from(b - a) >= 64 {
            return Err(bad());
        }
        out.extend(a..=b);
    }
    if out.is_empty() || out.len() > 64 {
        return Err(bad());
    }
    Ok(Ports(out.into_iter().collect()))
}

/// Settings of the tpu collector.
#[derive(clap::Args, Clone, Debug, PartialEq)]
pub struct TpuOptions {
    /// Ports of libtpu's runtime metric service.
    #[arg(
        id = "collector.tpu.runtime-ports",
        long = "collector.tpu.runtime-ports",
        value_name = "PORTS",
        help = "Ports of libtpu's runtime metric service (TPU_RUNTIME_METRICS_PORTS of the workloads): a range and/or a comma-separated list.",
        default_value = "8431-8434",
        value_parser = parse_ports
    )]
    pub ports: Ports,
    /// Address the runtime listens on.
    #[arg(
        id = "collector.tpu.runtime-address",
        long = "collector.tpu.runtime-address",
        value_name = "IP",
        help = "Address of libtpu's runtime metric service.",
        default_value = "127.0.0.1"
    )]
    pub address: IpAddr,
    /// Interval between two polls of the runtime.
    #[arg(
        id = "collector.tpu.runtime-interval",
        long = "collector.tpu.runtime-interval",
        value_name = "DURATION",
        help = "Interval between two polls of the runtime metric service, on a background thread.",
        default_value = "1s",
        value_parser = parse_interval
    )]
    pub interval: Duration,
    /// Deadline of one port's poll.
    #[arg(
        id = "collector.tpu.runtime-timeout",
        long = "collector.tpu.runtime-timeout",
        value_name = "DURATION",
        help = "Deadline of one port's poll (every metric asked on one connection).",
        default_value = "2s",
        value_parser = parse_duration
    )]
    pub timeout: Duration,
    /// Duty cycle under which an allocated chip counts as idle.
    #[arg(
        id = "collector.tpu.idle-threshold",
        long = "collector.tpu.idle-threshold",
        value_name = "RATIO",
        help = "Duty cycle (0-1) under which a held chip counts as idle.",
        default_value = "0.05",
        value_parser = parse_ratio
    )]
    pub idle_threshold: f64,
}

/// The tpu collector's registry entry.
pub const SPEC: Spec = Spec {
    name: "tpu",
    help: "Google Cloud TPUs: chips on the PCI bus and who holds them, libtpu's runtime metrics (gRPC, in the background) while a workload serves them",
    default_enabled: true,
    default_interval: Duration::from_secs(1),
    options: options::<TpuOptions>(),
    detail: "",
    families: FAMILIES,
    prefixes: &["accel_tpu_"],
    outside: &[],
    build,
};

/// Every family this collector exports, in the order of docs/metrics.md.
pub const FAMILIES: &[FamilyDef] = &[
    INFO,
    CHIPS,
    HBM_CAPACITY,
    PROCESS_INFO,
    ALLOCATED,
    ALLOCATED_SECONDS,
    IDLE_ALLOCATED_SECONDS,
    BUSY_SECONDS,
    RUNTIME_UP,
    RUNTIME_ERRORS,
    RUNTIME_UPTIME,
    MEGASCALE_ERROR,
    SLICE_ERROR,
    HBM_USED,
    HBM_TOTAL,
    DUTY_CYCLE,
    TENSORCORE_UTIL,
    HBM_BW_UTIL,
    HLO_QUEUE,
    HLO_EXEC,
    COLLECTIVE_LATENCY,
    DCN_LATENCY,
    H2D_LATENCY,
    D2H_LATENCY,
];

pub const INFO: FamilyDef = FamilyDef::gauge(
    "accel_tpu_info",
    "A TPU chip on the PCI bus, with its generation and PCI address; always 1.",
)
.labels(&["chip", "type", "pci_bus_id"])
.doc("always 1, one per chip. `chip` numbers chips in PCI address order (as `tpu-info` and libtpu do); `type` is the generation (`v2`, `v3`, `v4`, `v5e`, `v5p`, `v6e`, `tpu7x`, or `unknown`)")
.source("`/sys/bus/pci/devices/*/{vendor,device,subsystem_device}` (vendor 0x1ae0)");

pub const CHIPS: FamilyDef = FamilyDef::gauge("accel_tpu_chips", "TPU chips on the PCI bus.")
    .doc("chips found on the PCI bus, whether or not a workload runs")
    .source("`/sys/bus/pci/devices/*/vendor`");

pub const HBM_CAPACITY: FamilyDef = FamilyDef::gauge(
    "accel_tpu_hbm_capacity_bytes",
    "HBM capacity of the chip by its generation, in bytes.",
)
.labels(&["chip"])
.doc("HBM per chip from the generation table (v2 8 GiB, v3 16, v4 32, v5e 16, v5p 95, v6e 32, 7x 192); absent for an unknown device id")
.source("PCI device id → `collectors/src/tpu/chips.rs` `GENERATIONS`");

pub const PROCESS_INFO: FamilyDef = FamilyDef::gauge(
    "accel_tpu_process_info",
    "A process holding the TPU chip (an open fd on its device node), with its command and owner; always 1.",
)
.labels(&["chip", "pid", "comm", "unit", "container", "slurm_job"])
.doc("always 1, one per process holding the chip (up to 16 per chip): a process with an fd on the chip's `/dev/accel<N>` or `/dev/vfio/<group>`. `unit`, `container` and `slurm_job` from its cgroup, as for `accel_gpu_process_info`. Processes whose fds the agent may not read (another user's, without CAP_SYS_PTRACE) are not seen")
.source("`/proc/*/fd/*` links; `/proc/PID/comm`, `/proc/PID/cgroup`");

pub const ALLOCATED: FamilyDef = FamilyDef::gauge(
    "accel_tpu_allocated",
    "1 while a process holds the TPU chip.",
)
.labels(&["chip"])
.doc("1 while some process has the chip's device node open, else 0")
.source("`/proc/*/fd/*`");

pub const ALLOCATED_SECONDS: FamilyDef = FamilyDef::counter(
    "accel_tpu_allocated_seconds_total",
    "Seconds a process held the TPU chip.",
)
.labels(&["chip"])
.doc("seconds the chip was held by a process")
.source("computed");

pub const IDLE_ALLOCATED_SECONDS: FamilyDef = FamilyDef::counter(
    "accel_tpu_idle_allocated_seconds_total",
    "Seconds a process held the TPU chip while its duty cycle was under the idle threshold.",
)
.labels(&["chip"])
.doc("seconds the chip was held while its duty cycle was under `--collector.tpu.idle-threshold` (time without a duty cycle, runtime absent, is not counted: see `AccelTpuRuntimeDownWhileHeld`)")
.source("computed from `/proc/*/fd` and `tpu.runtime.tensorcore.dutycycle.percent`");

pub const BUSY_SECONDS: FamilyDef = FamilyDef::counter(
    "accel_tpu_busy_seconds_total",
    "Seconds the TPU chip was busy (duty cycle integrated over time).",
)
.labels(&["chip"])
.doc("at each sample, the duty cycle × the seconds since the chip's previous sample; `rate()` is the mean duty cycle over any window")
.source("computed from `tpu.runtime.tensorcore.dutycycle.percent`");

pub const RUNTIME_UP: FamilyDef = FamilyDef::gauge(
    "accel_tpu_runtime_up",
    "1 when libtpu's runtime metric service answered on the port at the last poll, 0 when nothing serves it (no workload) or it failed.",
)
.labels(&["port"])
.doc("1 when the last poll of the port succeeded; 0 when nothing listens (no workload: normal) or the poll failed (see the errors counter)")
.source("gRPC `RuntimeMetricService/GetRuntimeMetric` on `127.0.0.1:<port>`");

pub const RUNTIME_ERRORS: FamilyDef = FamilyDef::counter(
    "accel_tpu_runtime_errors_total",
    "Failed polls of libtpu's runtime metric service, by kind.",
)
.labels(&["port", "kind"])
.doc("failed polls: `timeout` (no complete answer within `--collector.tpu.runtime-timeout`), `transport`, `status` (a gRPC status other than OK, NOT_FOUND, UNIMPLEMENTED), `invalid` (not protobuf, too large). Nothing listening is not an error")
.source("`collectors/src/tpu/runtime.rs`");

pub const RUNTIME_UPTIME: FamilyDef = FamilyDef::gauge(
    "accel_tpu_runtime_uptime_seconds",
    "Uptime of the TPU runtime serving the port, in seconds.",
)
.labels(&["port"])
.doc("seconds since the runtime started (the largest of its points)")
.source("`tpu.runtime.uptime.seconds.gauge`");

pub const MEGASCALE_ERROR: FamilyDef = FamilyDef::gauge(
    "accel_tpu_megascale_error_detected",
    "1 when the TPU runtime serving the port reports a multislice (megascale) error, such as a hang across slices.",
)
.labels(&["port"])
.doc("1 when any point is non-zero: libtpu detected a multislice error (GKE turns it into the `MegascaleHangDetected` node condition)")
.source("`megascale.error.detected.gauge`");

pub const SLICE_ERROR: FamilyDef = FamilyDef::gauge(
    "accel_tpu_slice_error_detected",
    "1 when the TPU runtime serving the port reports a slice error.",
)
.labels(&["port"])
.doc("1 when any point is non-zero: libtpu detected an error in the slice (GKE's `SliceErrorDetected` node condition)")
.source("`slice.error.detected.gauge`");

pub const HBM_USED: FamilyDef = FamilyDef::gauge(
    "accel_tpu_hbm_used_bytes",
    "HBM used on the TensorCore device, in bytes.",
)
.labels(&["chip", "device"])
.doc("HBM in use on the device, bytes. libtpu reports memory per TensorCore device: chips of two devices (v2, v3, 7x) have two series, labelled with their chip")
.source("`tpu.runtime.hbm.memory.usage.bytes`")
.equivalent("GKE `memory_used`");

pub const HBM_TOTAL: FamilyDef = FamilyDef::gauge(
    "accel_tpu_hbm_total_bytes",
    "HBM available to the runtime on the TensorCore device, in bytes.",
)
.labels(&["chip", "device"])
.doc("HBM the runtime may use on the device, bytes")
.source("`tpu.runtime.hbm.memory.total.bytes`")
.equivalent("GKE `memory_total`");

pub const DUTY_CYCLE: FamilyDef = FamilyDef::gauge(
    "accel_tpu_duty_cycle_ratio",
    "Fraction of the last period in which the chip's TensorCores were executing (0-1).",
)
.labels(&["chip"])
.doc("fraction of time the TensorCores were busy (the TPU counterpart of GPU utilisation)")
.source("`tpu.runtime.tensorcore.dutycycle.percent` ÷ 100")
.equivalent("GKE `duty_cycle`");

pub const TENSORCORE_UTIL: FamilyDef = FamilyDef::gauge(
    "accel_tpu_tensorcore_utilization_ratio",
    "TensorCore utilisation of the chip (0-1), when the runtime serves it.",
)
.labels(&["chip"])
.doc("fraction of the TensorCores' peak throughput used; absent unless the runtime serves it (public libtpu builds give it only in-process, through `libtpu.sdk`)")
.source("`tpu.runtime.tensorcore.utilization.percent` ÷ 100")
.equivalent("GKE `tensorcore_utilization`");

pub const HBM_BW_UTIL: FamilyDef = FamilyDef::gauge(
    "accel_tpu_hbm_bandwidth_utilization_ratio",
    "HBM bandwidth utilisation of the chip (0-1), when the runtime serves it.",
)
.labels(&["chip"])
.doc("fraction of the peak HBM bandwidth used; absent unless the runtime serves it")
.source("`tpu.runtime.hbm.bandwidth.utilization.percent` ÷ 100")
.equivalent("GKE `memory_bandwidth_utilization`");

pub const HLO_QUEUE: FamilyDef = FamilyDef::gauge(
    "accel_tpu_hlo_queue_size",
    "Programs queued for execution on the TensorCore device.",
)
.labels(&["chip", "device"])
.doc("HLO programs waiting to run on the device: near 0 while the chip is busy means the host does not keep it fed")
.source("`hlo.queue.size.gauge`");

pub const HLO_EXEC: FamilyDef = FamilyDef::histogram(
    "accel_tpu_hlo_execution_seconds",
    "HLO program execution time on the TensorCore device, in seconds (cumulative since the runtime started).",
)
.labels(&["chip", "device"])
.doc("execution time of HLO programs; buckets are libtpu's, in seconds")
.source("`hlo.execution.timing.distribution.microseconds` × 1e-6");

pub const COLLECTIVE_LATENCY: FamilyDef = FamilyDef::histogram(
    "accel_tpu_collective_latency_seconds",
    "End-to-end latency of collectives across the slice, in seconds (cumulative).",
)
.labels(&["port", "buffer_size"])
.doc("collective end-to-end latency (multislice); `buffer_size` is libtpu's size class")
.source("`megascale.collective_end_to_end_latencies.microsecond.cumulative.distribution` × 1e-6");

pub const DCN_LATENCY: FamilyDef = FamilyDef::histogram(
    "accel_tpu_dcn_transfer_latency_seconds",
    "Data-centre-network transfer latency, in seconds (cumulative).",
)
.labels(&["port", "buffer_size"])
.doc("DCN (multislice) transfer latency")
.source("`megascale.dcn_transfer_latencies.microsecond.cumulative.distribution` × 1e-6");

pub const H2D_LATENCY: FamilyDef = FamilyDef::histogram(
    "accel_tpu_host_to_device_transfer_latency_seconds",
    "Host-to-device transfer latency, in seconds (cumulative).",
)
.labels(&["port", "buffer_size"])
.doc(
    "host-to-device transfer latency: long tails with a low duty cycle point at the input pipeline",
)
.source("`megascale.host_to_device_transfer_latencies.microsecond.cumulative.distribution` × 1e-6");

pub const D2H_LATENCY: FamilyDef = FamilyDef::histogram(
    "accel_tpu_device_to_host_transfer_latency_seconds",
    "Device-to-host transfer latency, in seconds (cumulative).",
)
.labels(&["port", "buffer_size"])
.doc("device-to-host transfer latency")
.source("`megascale.device_to_host_transfer_latencies.microsecond.cumulative.distribution` × 1e-6");

/// Integrated counters of one chip.
#[derive(Default)]
struct ChipState {
    last: Option<Instant>,
    busy_seconds: f64,
    allocated_seconds: f64,
    idle_allocated_seconds: f64,
}

/// The tpu collector.
pub struct Tpu {
    sysfs: PathBuf,
    procfs: PathBuf,
    opts: TpuOptions,
    states: States,
    chips: BTreeMap<u32, ChipState>,
    workers: Workers,
    _poller: Worker,
    /// Where the chips are published for the goodput collector.
    tpus_out: Topic<GpuSnapshot>,
}

fn build(ctx: &BuildContext) -> Result<Built, CollectError> {
    let opts: TpuOptions = ctx.options::<TpuOptions>().clone();
    let found = chips::discover(&ctx.paths.sysfs);
    if found.is_empty() {
        return Ok(Built::Absent(format!(
            "no TPU chip (PCI vendor {}) under {}",
            chips::VENDOR,
            ctx.paths.sysfs.join("bus/pci/devices").display()
        )));
    }
    let states: States = Arc::new(Mutex::new(BTreeMap::new()));
    let (st, o) = (states.clone(), opts.clone());
    let silence = opts.timeout + opts.interval + Duration::from_secs(10);
    let poller = ctx.workers.spawn("runtime", silence, move |hb| {
        runtime::poll_loop(o.address, &o.ports.0, o.interval, o.timeout, &st, hb)
    })?;
    Ok(Built::Ready(Box::new(Tpu {
        sysfs: ctx.paths.sysfs.clone(),
        procfs: ctx.paths.procfs.clone(),
        opts,
        states,
        chips: BTreeMap::new(),
        workers: ctx.workers.clone(),
        _poller: poller,
        tpus_out: ctx.shared.tpus.clone(),
    })))
}

/// The first point's attribute that names a device: `device_ordinal`
/// (string or int), else any attribute with "device" in its key, else a
/// lone unnamed int (the memory metrics' form).
fn device_of(m: &proto::Metric) -> Option<u32> {
    m.attrs
        .iter()
        .find(|(k, _)| k == "device_ordinal")
        .or_else(|| m.attrs.iter().find(|(k, _)| k.contains("device")))
        .or_else(|| (m.attrs.len() == 1).then(|| &m.attrs[0]))
        .and_then(|(_, v)| v.as_index())
}

fn gauge(m: &proto::Metric) -> Option<f64> {
    match m.measure {
        Measure::Gauge(v) | Measure::Counter(v) if v.is_finite() => Some(v),
        _ => None,
    }
}

/// Per-device and per-chip values from every port, first port first (a
/// device another port already gave is skipped: no duplicate series).
#[derive(Default)]
struct Runtime<'a> {
    /// (metric name, chip, device) → value.
    by_device: BTreeMap<(&'static str, u32, u32), f64>,
    /// (metric name, chip) → value.
    by_chip: BTreeMap<(&'static str, u32), f64>,
    /// HLO execution distributions by (chip, device).
    hlo: BTreeMap<(u32, u32), &'a proto::Distribution>,
}

impl Collector for Tpu {
    fn name(&self) -> &'static str {
        "tpu"
    }

    fn sample(&mut self, out: &mut Sample) -> Result<(), CollectError> {
        self.workers.check()?;
        let now = Instant::now();
        let found: Vec<Chip> = chips::discover(&self.sysfs);
        // Devices per chip: of the first chip of a known generation.
        let per_chip = found
            .iter()
            .find_map(|c| c.generation.map(|g: Generation| g.devices_per_chip))
            .unwrap_or(1)
            .max(1);
        out.add(&CHIPS).add(&[], found.len() as f64);
        let nodes: Vec<&str> = found.iter().filter_map(|c| c.node.as_deref()).collect();
        let holders = chips::holders(&self.procfs, &nodes);

        // The runtime's latest answers, by port.
        let ports: Vec<(u16, runtime::PortState)> = {
            let st = self.states.lock().unwrap_or_else(|e| e.into_inner());
            self.opts
                .ports
                .0
                .iter()
                .map(|p| (*p, st.get(p).cloned().unwrap_or_default()))
                .collect()
        };
        let mut rt = Runtime::default();
        let chip_ids: BTreeSet<u32> = found.iter().map(|c| c.index).collect();
        // Per-port families, output after the chips'.
        let mut port_out = Sample::new();
        for (port, st) in &ports {
            let ps = port.to_string();
            let up = st.metrics.is_some();
            port_out
                .add(&RUNTIME_UP)
                .add(&[("port", &ps)], if up { 1.0 } else { 0.0 });
            for kind in Failure::ALL {
                let n = st.errors[kind as usize];
                if n > 0 {
                    port_out
                        .add(&RUNTIME_ERRORS)
                        .add(&[("port", &ps), ("kind", kind.as_str())], n as f64);
                }
            }
            let Some(metrics) = &st.metrics else { continue };
            for tm in metrics.iter() {
                runtime_metric(tm, &ps, per_chip, &chip_ids, &mut rt, &mut port_out);
            }
        }

        let mut published = GpuSnapshot::default();
        for c in &found {
            let chip = c.index.to_string();
            let ty = c.generation.map_or("unknown", |g| g.name);
            out.add(&INFO).add(
                &[("chip", &chip), ("type", ty), ("pci_bus_id", &c.pci_bus_id)],
                1.0,
            );
            if let Some(g) = c.generation {
                out.add(&HBM_CAPACITY).add(&[("chip", &chip)], g.hbm_bytes);
            }
            let held = c.node.as_ref().and_then(|n| holders.get(n));
            for h in held.into_iter().flatten() {
                let o = cgroup::owner(&self.procfs, h.pid);
                out.add(&PROCESS_INFO).add(
                    &[
                        ("chip", &chip),
                        ("pid", &h.pid.to_string()),
                        ("comm", &h.comm),
                        ("unit", &o.unit),
                        ("container", &o.container),
                        ("slurm_job", &o.job),
                    ],
                    1.0,
                );
            }
            let allocated = held.is_some_and(|h| !h.is_empty());
            let pids: Vec<u32> = held.into_iter().flatten().map(|h| h.pid).collect();
            published.pids.extend(&pids);
            published.gpus.push(GpuIds {
                index: c.index,
                uuid: format!("TPU-{}", c.pci_bus_id),
                name: format!("Google TPU {ty}"),
                pids,
                busy: allocated,
                migs: Vec::new(),
                pci_bus_id: c.pci_bus_id.clone(),
                health: Default::default(),
            });
            let duty = rt.by_chip.get(&(names::DUTY_CYCLE, c.index)).copied();
            let s = self.chips.entry(c.index).or_default();
            let dt = s.last.map_or(0.0, |t| now.duration_since(t).as_secs_f64());
            s.last = Some(now);
            if let Some(d) = duty {
                s.busy_seconds += d * dt;
            }
            if allocated {
                s.allocated_seconds += dt;
                if duty.is_some_and(|d| d < self.opts.idle_threshold) {
                    s.idle_allocated_seconds += dt;
                }
            }
            let l = [("chip", chip.as_str())];
            out.add(&ALLOCATED)
                .add(&l, if allocated { 1.0 } else { 0.0 });
            out.add(&ALLOCATED_SECONDS).add(&l, s.allocated_seconds);
            out.add(&IDLE_ALLOCATED_SECONDS)
                .add(&l, s.idle_allocated_seconds);
            out.add(&BUSY_SECONDS).add(&l, s.busy_seconds);
        }

        for ((name, chip, device), v) in &rt.by_device {
            let (c, d) = (chip.to_string(), device.to_string());
            let l = [("chip", c.as_str()), ("device", d.as_str())];
            let def = match *name {
                names::HBM_USAGE => &HBM_USED,
                names::HBM_TOTAL => &HBM_TOTAL,
                _ => &HLO_QUEUE,
            };
            out.add(def).add(&l, *v);
        }
        for ((name, chip), v) in &rt.by_chip {
            let c = chip.to_string();
            let def = match *name {
                names::DUTY_CYCLE => &DUTY_CYCLE,
                names::TENSORCORE_UTIL => &TENSORCORE_UTIL,
                _ => &HBM_BW_UTIL,
            };
            out.add(def).add(&[("chip", &c)], *v);
        }
        for ((chip, device), dist) in &rt.hlo {
            if let Some((buckets, count)) = dist.cumulative(1e6) {
                let (c, d) = (chip.to_string(), device.to_string());
                let sum = dist.mean * count as f64 / 1e6;
                out.add(&HLO_EXEC).add_histogram(
                    &[("chip", &c), ("device", &d)],
                    &buckets,
                    if sum.is_finite() { sum } else { 0.0 },
                    count,
                );
            }
        }
        out.merge(port_out);
        published.pids.sort_unstable();
        published.pids.dedup();
        self.tpus_out.publish(published);
        // Chips gone from the bus lose their counters.
        self.chips.retain(|k, _| chip_ids.contains(k));
        Ok(())
    }
}

/// Sorts one metric of one port into `rt` (per device or per chip) or
/// straight into `out` (per port). Points without a device where one is
/// needed, of a device past the chips found, or with an unreadable
/// value are skipped.
fn runtime_metric<'a>(
    tm: &'a TpuMetric,
    port: &str,
    per_chip: u32,
    chip_ids: &BTreeSet<u32>,
    rt: &mut Runtime<'a>,
    out: &mut Sample,
) {
    let Some(name) = names::ALL.iter().copied().find(|n| *n == tm.name) else {
        return;
    };
    match name {
        names::HBM_USAGE | names::HBM_TOTAL | names::HLO_QUEUE => {
            for m in &tm.metrics {
                let (Some(d), Some(v)) = (device_of(m), gauge(m)) else {
                    continue;
                };
                let chip = d / per_chip;
                if chip_ids.contains(&chip) {
                    rt.by_device.entry((name, chip, d)).or_insert(v);
                }
            }
        }
        names::DUTY_CYCLE | names::TENSORCORE_UTIL | names::HBM_BW_UTIL => {
            // Per chip: the point's device index is the chip's.
            for m in &tm.metrics {
                let (Some(d), Some(v)) = (device_of(m), gauge(m)) else {
                    continue;
                };
                if chip_ids.contains(&d) {
                    rt.by_chip
                        .entry((name, d))
                        .or_insert((v / 100.0).clamp(0.0, 1.0));
                }
            }
        }
        names::UPTIME => {
            let up = tm
                .metrics
                .iter()
                .filter_map(gauge)
                .fold(None, |a: Option<f64>, v| Some(a.map_or(v, |a| a.max(v))));
            if let Some(v) = up {
                out.add(&RUNTIME_UPTIME).add(&[("port", port)], v);
            }
        }
        names::MEGASCALE_ERROR | names::SLICE_ERROR => {
            let any = tm
                .metrics
                .iter()
                .filter_map(gauge)
                .fold(None, |a: Option<f64>, v| {
                    Some(a.unwrap_or(0.0).max(if v != 0.0 { 1.0 } else { 0.0 }))
                });
            if let Some(v) = any {
                let def = if name == names::MEGASCALE_ERROR {
                    &MEGASCALE_ERROR
                } else {
                    &SLICE_ERROR
                };
                out.add(def).add(&[("port", port)], v);
            }
        }
        names::HLO_EXEC => {
            for m in &tm.metrics {
                let (Some(d), Measure::Distribution(dist)) = (device_of(m), &m.measure) else {
                    continue;
                };
                let chip = d / per_chip;
                if chip_ids.contains(&chip) {
                    rt.hlo.entry((chip, d)).or_insert(dist);
                }
            }
        }
        _ => {
            let def = match name {
                names::COLLECTIVE => &COLLECTIVE_LATENCY,
                names::DCN => &DCN_LATENCY,
                names::H2D => &H2D_LATENCY,
                _ => &D2H_LATENCY,
            };
            let mut seen = BTreeSet::new();
            for m in &tm.metrics {
                let Measure::Distribution(dist) = &m.measure else {
                    continue;
                };
                let size = m
                    .attrs
                    .iter()
                    .find(|(k, _)| k == "buffer_size" || k == "buffer-size")
                    .and_then(|(_, v)| v.as_label())
                    .unwrap_or_default();
                // One series per size class (a second point of the
                // same class would be a duplicate series).
                if size.len() > 64 || !seen.insert(size.clone()) {
                    continue;
                }
                if let Some((buckets, count)) = dist.cumulative(1e6) {
                    let sum = dist.mean * count as f64 / 1e6;
                    out.add(def).add_histogram(
                        &[("port", port), ("buffer_size", &size)],
                        &buckets,
                        if sum.is_finite() { sum } else { 0.0 },
                        count,
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{Attr, Metric};

    #[test]
    fn ports() {
        assert_eq!(
            parse_ports("8431-8434").unwrap().0,
            vec![8431, 8432, 8433, 8434]
        );
        assert_eq!(parse_ports("8433, 8431,8431").unwrap().0, vec![8431, 8433]);
        for bad in ["", "0", "8434-8431", "x", "1-100", "70000"] {
            assert!(parse_ports(bad).is_err(), "{bad}");
        }
    }

    fn point(attrs: Vec<(&str, Attr)>, v: f64) -> Metric {
        Metric {
            attrs: attrs.into_iter().map(|(k, a)| (k.to_owned(), a)).collect(),
            measure: Measure::Gauge(v),
        }
    }

    #[test]
    fn devices_of_two_per_chip_are_labelled_with_their_chip() {
        let usage = TpuMetric {
            name: names::HBM_USAGE.into(),
            metrics: (0..5)
                .map(|d| point(vec![("device-id", Attr::Int(d))], d as f64))
                .collect(),
        };
        let duty = TpuMetric {
            name: names::DUTY_CYCLE.into(),
            metrics: vec![
                point(vec![("device-id", Attr::Int(1))], 50.0),
                // Out of range, and without a device: skipped.
                point(vec![("device-id", Attr::Int(9))], 50.0),
                point(vec![], 50.0),
            ],
        };
        let chips: BTreeSet<u32> = [0, 1].into();
        let mut rt = Runtime::default();
        let mut out = Sample::new();
        runtime_metric(&usage, "8431", 2, &chips, &mut rt, &mut out);
        runtime_metric(&duty, "8431", 2, &chips, &mut rt, &mut out);
        let keys: Vec<(u32, u32)> = rt.by_device.keys().map(|(_, c, d)| (*c, *d)).collect();
        assert_eq!(keys, vec![(0, 0), (0, 1), (1, 2), (1, 3)]);
        assert_eq!(rt.by_chip.get(&(names::DUTY_CYCLE, 1)), Some(&0.5));
        assert_eq!(rt.by_chip.len(), 1);
    }

    #[test]
    fn device_ordinal_as_string_or_int() {
        let s = point(
            vec![
                ("device_ordinal", Attr::Str("12".into())),
                ("core_type", Attr::Int(3)),
            ],
            0.0,
        );
        let i = point(
            vec![
                ("core_type", Attr::Str("TC".into())),
                ("device_ordinal", Attr::Int(12)),
            ],
            0.0,
        );
        let bad = point(vec![("device_ordinal", Attr::Str("1.5".into()))], 0.0);
        assert_eq!(device_of(&s), Some(12));
        assert_eq!(device_of(&i), Some(12));
        assert_eq!(device_of(&bad), None);
    }

    #[test]
    fn generations() {
        assert_eq!(chips::generation_of("0x0027", "0x004e").unwrap().name, "v2");
        assert_eq!(
            chips::generation_of("0x0027", "0x004f")
                .unwrap()
                .devices_per_chip,
            2
        );
        assert_eq!(chips::generation_of("0x0027", "0x0000"), None);
        assert_eq!(chips::generation_of("0x0062", "").unwrap().name, "v5p");
        assert_eq!(
            chips::generation_of("0x0076", "0x0000")
                .unwrap()
                .devices_per_chip,
            2
        );
    }
}
