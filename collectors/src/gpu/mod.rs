//! `accel_gpu_*`: NVIDIA GPUs through NVML (nvml-wrapper, pinned).
//!
//! One sample walks every GPU. A GPU that answers `GpuLost` is data, not a
//! failure of the collector: `accel_gpu_up{gpu} 0`, its other series are
//! withheld, the rest keep reporting, and it is probed again with backoff.
//! A call NVML answers `NotSupported` (or whose symbol an older driver
//! lacks) leaves its series out and is logged once per GPU and function.
//! A call that hangs blocks this collector's sampler thread only; the agent
//! then reports the collector stale and keeps serving the others.

mod events;
mod gpm;
pub mod jobs;
mod mig;
mod nvlink;
mod process;
mod raw;
mod reliability;

use std::collections::HashSet;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nvml_wrapper::bitmasks::device::ThrottleReasons;
use nvml_wrapper::enum_wrappers::device::{
    Clock, PcieUtilCounter, PerformancePolicy, TemperatureSensor,
};
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, GpmSample, Nvml};

use crate::kubernetes::PodMap;
use crate::options::{options, parse_ratio};
use crate::shared::{GpuSnapshot, Topic};
use crate::workers::{Worker, Workers};
use crate::{
    BuildContext, Built, CollectError, Collector, ErrorKind, FamilyDef, MetricType, Sample, Spec,
};

/// The library loaded when `--nvml.library` is not given.
pub const DEFAULT_LIBRARY: &str = "libnvidia-ml.so.1";

/// Settings of the GPU collector.
#[derive(clap::Args, Clone, Debug, PartialEq)]
pub struct GpuOptions {
    /// NVML library to load (`--nvml.library`).
    #[arg(
        id = "nvml.library",
        long = "nvml.library",
        value_name = "PATH",
        help = "NVML library the gpu collector loads (e.g. tests/nvml-sim's libnvml_sim.so for a simulated node).",
        default_value = DEFAULT_LIBRARY,
        value_parser = crate::options::parse_path
    )]
    pub library: PathBuf,
    /// Utilisation under which an allocated GPU counts as idle.
    #[arg(
        id = "collector.gpu.idle-threshold",
        long = "collector.gpu.idle-threshold",
        value_name = "RATIO",
        help = "Utilisation (0-1) under which an allocated GPU counts as idle.",
        default_value = "0.05",
        value_parser = parse_ratio
    )]
    pub idle_threshold: f64,
    /// Most processes reported per GPU.
    #[arg(
        id = "collector.gpu.max-processes",
        long = "collector.gpu.max-processes",
        value_name = "N",
        help = "Most processes reported per GPU.",
        default_value = "32"
    )]
    pub max_processes: usize,
    /// The job-mapping directory (`--collector.gpu.job-mapping-dir`); empty
    /// means none.
    #[arg(
        id = "collector.gpu.job-mapping-dir",
        long = "collector.gpu.job-mapping-dir",
        value_name = "DIR",
        help = "Directory of GPU-to-job files, as dcgm-exporter's --hpc-job-mapping-dir reads them (one file per GPU index, or <gpu>.<gpu instance> for a MIG instance, one job id per line), written by a scheduler prolog; exported as accel_gpu_job_info. Watched in the background. Off by default.",
        value_parser = crate::options::parse_path
    )]
    pub job_mapping_dir: Option<PathBuf>,
}

/// The GPU collector's registry entry.
pub const SPEC: Spec = Spec {
    name: "gpu",
    help: "NVIDIA GPUs through NVML",
    default_enabled: true,
    default_interval: Duration::from_secs(1),
    options: options::<GpuOptions>(),
    families: FAMILIES,
    prefixes: &["accel_gpu_"],
    outside: &[],
    build,
};

/// Every family this collector exports.
pub const FAMILIES: &[FamilyDef] = &[];

/// XIDs exported at 0 before they first happen: the ones operators alert
/// on (application faults 13, 31, 43, 45; memory 48, 63, 64, 92, 94, 95;
/// engine and firmware 61, 62, 119, 120; NVLink 74; off the bus 79).
const KNOWN_XIDS: [u64; 16] = [
    13, 31, 43, 45, 48, 61, 62, 63, 64, 74, 79, 92, 94, 95, 119, 120,
];

/// Time spent in each part of a GPU's sample, logged at debug level: on a
/// real GPU this is how the slow NVML calls were found.
struct Sections {
    last: Option<Instant>,
    parts: Vec<(&'static str, Duration)>,
}

impl Sections {
    fn new() -> Self {
        let on = tracing::enabled!(tracing::Level::DEBUG);
        Sections {
            last: on.then(Instant::now),
            parts: Vec::new(),
        }
    }

    fn mark(&mut self, part: &'static str) {
        if let Some(last) = self.last {
            let now = Instant::now();
            self.parts.push((part, now - last));
            self.last = Some(now);
        }
    }

    fn log(&self, gpu: u32) {
        if self.last.is_none() {
            return;
        }
        let total: Duration = self.parts.iter().map(|p| p.1).sum();
        let mut parts = self.parts.clone();
        parts.sort_by_key(|p| std::cmp::Reverse(p.1));
        let top: Vec<String> = parts
            .iter()
            .take(6)
            .map(|(n, d)| format!("{n}={:.2}ms", d.as_secs_f64() * 1e3))
            .collect();
        tracing::debug!(
            gpu,
            total_ms = format!("{:.2}", total.as_secs_f64() * 1e3),
            slowest = top.join(" "),
            "GPU sample timing"
        );
    }
}

/// Shortest time between two reads of the energy counter.
const ENERGY_PERIOD: Duration = Duration::from_millis(990);

/// Most fans reported per GPU.
const MAX_FANS: u32 = 16;

/// Longest wait between probes of a lost GPU.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Per-GPU state kept between samples.
#[derive(Debug, Default)]
struct GpuState {
    /// Labels of `accel_gpu_info`, read once.
    info: Option<Vec<(&'static str, String)>>,
    uuid: String,
    last: Option<Instant>,
    busy_seconds: f64,
    allocated_seconds: f64,
    idle_allocated_seconds: f64,
    /// While lost: when to probe again, and the current backoff.
    retry_at: Option<Instant>,
    backoff: Duration,
    /// Whether the GPU has GPM (Hopper and newer), once known.
    gpm: Option<bool>,
    /// The previous GPM sample: GPM metrics come from two samples.
    gpm_prev: Option<GpmSample<'static>>,
    /// NVLink links that exist on this GPU, once probed.
    nvlinks: Option<Vec<u32>>,
    /// Timestamp of the newest per-process utilisation sample seen.
    proc_util_seen: u64,
    /// Maximum clocks by domain, read once.
    max_clocks: Option<Vec<(&'static str, f64)>>,
    /// Whether the PCIe byte counters (field values) work, once known, and
    /// their previous reading: (time, transmit bytes, receive bytes).
    pcie_counters: Option<bool>,
    pcie_prev: Option<(Instant, f64, f64)>,
    /// Whether the violation-time fields work, once known.
    violation_fields: Option<bool>,
    /// The last energy reading (joules) and when it was taken.
    energy: Option<(Instant, f64)>,
    /// Previous GPM samples of the MIG instances.
    mig_gpm: mig::MigGpm,
    /// Its MIG instances and whether it held a process, last sample.
    migs: Vec<crate::MigIds>,
    busy: bool,
    /// Pids of the compute processes holding it, for `gpus_out`.
    held: Vec<u32>,
}

/// The GPU collector.
pub struct Gpu {
    library: PathBuf,
    /// The initialised NVML, or `None` until NVML starts (a driver that
    /// loads after the agent) or after it was lost (a driver reload).
    session: Option<Session>,
    /// While uninitialised: when to try again, and the current backoff.
    init_retry_at: Option<Instant>,
    init_backoff: Duration,
    /// XID counts, kept across re-initialisations.
    xids: Arc<Mutex<events::Xids>>,
    opts: GpuOptions,
    procfs: PathBuf,
    gpus: Vec<GpuState>,
    /// (gpu index, function) pairs already logged as unsupported.
    unsupported: HashSet<(u32, &'static str)>,
    /// Compute process pids seen this sample, published with the GPUs.
    pids: Vec<u32>,
    /// GPU identities and their processes, published for the kubernetes,
    /// goodput, cloud and process collectors.
    gpus_out: Topic<GpuSnapshot>,
    /// The kubernetes collector's pod map.
    pods: Topic<PodMap>,
    /// Slurm jobs of the processes seen this sample.
    proc_jobs: Vec<jobs::ProcessJob>,
    /// The job-mapping directory's watcher, when one is configured.
    job_mapping: Option<jobs::Watcher>,
    /// Supervises the XID event thread (started again with each NVML
    /// session) and the job-mapping watcher.
    workers: Workers,
}

/// One initialisation of NVML.
struct Session {
    nvml: &'static Nvml,
    raw: Option<raw::Raw>,
    /// The XID event thread, when one watches XIDs; dropped with the
    /// session, which stops it.
    events: Option<Worker>,
}

/// Initialises NVML from `lib`. The handle is leaked: NVML stays loaded for
/// the life of the process, which gives devices, event sets and GPM samples
/// a 'static lifetime (kept between samples, moved to the event thread), and
/// a thread stuck inside a call can never see the library unloaded.
fn init(
    lib: &std::path::Path,
    xids: &Arc<Mutex<events::Xids>>,
    workers: &Workers,
) -> Result<(Session, u32), NvmlError> {
    let nvml = Nvml::builder().lib_path(OsStr::new(lib)).init()?;
    let count = nvml.device_count()?;
    let nvml: &'static Nvml = Box::leak(Box::new(nvml));
    let raw = raw::Raw::open(OsStr::new(lib));
    let events = events::start(nvml, count, xids.clone(), workers);
    if events.is_none() {
        tracing::info!("no GPU supports XID events; accel_gpu_xid_errors_total is left out");
    }
    Ok((Session { nvml, raw, events }, count))
}

/// Whether the machine has an NVIDIA display or 3D controller on PCI (vendor
/// 0x10de, class 0x03xxxx), read from sysfs.
fn nvidia_on_pci(sysfs: &std::path::Path) -> bool {
    let Ok(devices) = std::fs::read_dir(sysfs.join("bus/pci/devices")) else {
        return false;
    };
    devices.filter_map(|d| d.ok()).any(|d| {
        let read = |f: &str| std::fs::read_to_string(d.path().join(f)).unwrap_or_default();
        read("vendor").trim() == "0x10de" && read("class").trim().starts_with("0x03")
    })
}

/// Builds the collector. Absent when no NVML library can be loaded, when
/// NVML sees no GPU, or when NVML cannot start and there is no NVIDIA GPU on
/// PCI. When NVML cannot start but an NVIDIA GPU is there (the driver loads
/// after the agent, or is broken), the collector runs, reports the failure,
/// and keeps trying with backoff.
fn build(ctx: &BuildContext) -> Result<Built, CollectError> {
    let (opts, gpu_opts) = (ctx.paths, ctx.options::<GpuOptions>());
    let lib = &gpu_opts.library;
    let xids = Arc::new(Mutex::new(events::Xids::default()));
    let (session, count) = match init(lib, &xids, ctx.workers) {
        Ok((_, 0)) => return Ok(Built::Absent("NVML reports no GPU".into())),
        Ok((s, n)) => (Some(s), n),
        Err(NvmlError::LibloadingError(e)) => {
            return Ok(Built::Absent(format!(
                "no NVML library ({}: {e})",
                lib.display()
            )))
        }
        Err(e) if !nvidia_on_pci(&opts.sysfs) => {
            return Ok(Built::Absent(format!(
                "NVML ({}) could not start ({e}) and there is no NVIDIA GPU on PCI",
                lib.display()
            )))
        }
        Err(e) => {
            tracing::warn!(error = %e, "NVML could not start although an NVIDIA GPU is on PCI; retrying with backoff");
            (None, 0)
        }
    };
    Ok(Built::Ready(Box::new(Gpu {
        library: lib.clone(),
        session,
        init_retry_at: None,
        init_backoff: Duration::ZERO,
        xids,
        opts: gpu_opts.clone(),
        procfs: opts.procfs.clone(),
        gpus: (0..count).map(|_| GpuState::default()).collect(),
        unsupported: HashSet::new(),
        pids: Vec::new(),
        gpus_out: ctx.shared.gpus.clone(),
        pods: ctx.shared.pods.clone(),
        proc_jobs: Vec::new(),
        job_mapping: gpu_opts
            .job_mapping_dir
            .clone()
            .filter(|d| !d.as_os_str().is_empty())
            .map(|d| jobs::Watcher::start(d, jobs::POLL, ctx.workers)),
        workers: ctx.workers.clone(),
    })))
}

impl Gpu {
    /// The NVML session, initialising (again) if needed and due; `Err` while
    /// NVML cannot start.
    fn session(&mut self, now: Instant) -> Result<&'static Nvml, CollectError> {
        if self.session.is_none() {
            if self.init_retry_at.is_some_and(|t| now < t) {
                return Err(CollectError::new(
                    ErrorKind::Library,
                    "NVML is not initialised (waiting to retry)",
                ));
            }
            match init(&self.library, &self.xids, &self.workers) {
                Ok((s, count)) => {
                    tracing::info!(gpus = count, "NVML initialised");
                    self.session = Some(s);
                    self.init_retry_at = None;
                    self.init_backoff = Duration::ZERO;
                    self.gpus.resize_with(count as usize, GpuState::default);
                    for g in &mut self.gpus {
                        // Handles, GPM samples and link lists of the old
                        // session are void; identities are read again.
                        *g = GpuState {
                            busy_seconds: g.busy_seconds,
                            allocated_seconds: g.allocated_seconds,
                            idle_allocated_seconds: g.idle_allocated_seconds,
                            ..GpuState::default()
                        };
                    }
                }
                Err(e) => {
                    self.init_backoff =
                        (self.init_backoff * 2).clamp(Duration::from_secs(1), MAX_BACKOFF);
                    self.init_retry_at = Some(now + self.init_backoff);
                    return Err(CollectError::new(
                        ErrorKind::Library,
                        format!("NVML init: {e}"),
                    ));
                }
            }
        }
        let nvml = self.session.as_ref().expect("just set").nvml;
        // A driver that was unloaded or restarted invalidates the session.
        match nvml.device_count() {
            Ok(n) if n as usize == self.gpus.len() => Ok(nvml),
            Ok(n) => {
                tracing::warn!(
                    was = self.gpus.len(),
                    now = n,
                    "the number of GPUs changed; re-initialising NVML"
                );
                self.session = None;
                Err(CollectError::new(
                    ErrorKind::Library,
                    "the number of GPUs changed",
                ))
            }
            Err(e) => {
                tracing::warn!(error = %e, "NVML stopped answering (driver unloaded or restarted?); re-initialising");
                self.session = None;
                Err(CollectError::new(
                    ErrorKind::Library,
                    format!("NVML device count: {e}"),
                ))
            }
        }
    }
}

/// What became of one GPU in one sample.
enum Outcome {
    /// Sampled.
    Up,
    /// Fallen off the bus: probed again with backoff.
    Lost,
    /// Unreachable for another reason (already counted as an error): shown
    /// as down this sample, tried again at the next.
    Failed,
}

/// Accumulates one GPU's series; they reach the sample only if the GPU
/// stayed reachable throughout.
struct GpuSample<'a> {
    index: u32,
    gpu: String,
    uuid: String,
    out: Sample,
    lost: bool,
    unsupported: &'a mut HashSet<(u32, &'static str)>,
}

impl GpuSample<'_> {
    /// Unwraps an NVML answer: `None` for unsupported (logged once) or any
    /// other failure (counted); marks the GPU lost on `GpuLost`.
    fn get<T>(&mut self, what: &'static str, r: Result<T, NvmlError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(
                NvmlError::NotSupported
                | NvmlError::FailedToLoadSymbol(_)
                | NvmlError::FunctionNotFound,
            ) => {
                self.unsupported(what);
                None
            }
            Err(NvmlError::GpuLost) => {
                self.lost = true;
                None
            }
            Err(e) => {
                self.out.error(CollectError::new(
                    ErrorKind::Library,
                    format!("GPU {} {what}: {e}", self.index),
                ));
                None
            }
        }
    }

    /// As [`get`](Self::get), for a raw NVML return code.
    fn get_raw<T>(&mut self, what: &'static str, r: Result<T, u32>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(raw::NOT_SUPPORTED | raw::NOT_FOUND) => {
                self.unsupported(what);
                None
            }
            Err(raw::GPU_IS_LOST) => {
                self.lost = true;
                None
            }
            Err(code) => {
                self.out.error(CollectError::new(
                    ErrorKind::Library,
                    format!("GPU {} {what}: NVML error {code}", self.index),
                ));
                None
            }
        }
    }

    fn unsupported(&mut self, what: &'static str) {
        if self.unsupported.insert((self.index, what)) {
            tracing::info!(
                gpu = self.index,
                function = what,
                "not supported by this GPU or driver; series left out"
            );
        }
    }

    /// Adds a series with `gpu`, `uuid` and the `extra` labels.
    fn put(
        &mut self,
        kind: MetricType,
        name: &str,
        help: &str,
        extra: &[(&'static str, &str)],
        value: f64,
    ) {
        let mut labels: Vec<(&'static str, &str)> = vec![("gpu", &self.gpu), ("uuid", &self.uuid)];
        labels.extend_from_slice(extra);
        self.out.family(name, help, kind).add(&labels, value);
    }

    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.put(MetricType::Gauge, name, help, &[], value);
    }

    fn counter(&mut self, name: &str, help: &str, value: f64) {
        self.put(MetricType::Counter, name, help, &[], value);
    }

    /// A series with one label beyond gpu and uuid.
    fn with(
        &mut self,
        name: &str,
        help: &str,
        counter: bool,
        key: &'static str,
        val: &str,
        value: f64,
    ) {
        let kind = if counter {
            MetricType::Counter
        } else {
            MetricType::Gauge
        };
        self.put(kind, name, help, &[(key, val)], value);
    }
}

const CLOCKS: [(Clock, &str); 4] = [
    (Clock::Graphics, "graphics"),
    (Clock::SM, "sm"),
    (Clock::Memory, "memory"),
    (Clock::Video, "video"),
];

const THROTTLE_REASONS: [(ThrottleReasons, &str); 9] = [
    (ThrottleReasons::GPU_IDLE, "gpu_idle"),
    (
        ThrottleReasons::APPLICATIONS_CLOCKS_SETTING,
        "applications_clocks_setting",
    ),
    (ThrottleReasons::SW_POWER_CAP, "sw_power_cap"),
    (ThrottleReasons::HW_SLOWDOWN, "hw_slowdown"),
    (ThrottleReasons::SYNC_BOOST, "sync_boost"),
    (ThrottleReasons::SW_THERMAL_SLOWDOWN, "sw_thermal_slowdown"),
    (ThrottleReasons::HW_THERMAL_SLOWDOWN, "hw_thermal_slowdown"),
    (
        ThrottleReasons::HW_POWER_BRAKE_SLOWDOWN,
        "hw_power_brake_slowdown",
    ),
    (
        ThrottleReasons::DISPLAY_CLOCK_SETTING,
        "display_clock_setting",
    ),
];

const VIOLATIONS: [(PerformancePolicy, u32, &str); 4] = [
    (PerformancePolicy::Power, raw::FI_PERF_POLICY_POWER, "power"),
    (
        PerformancePolicy::Thermal,
        raw::FI_PERF_POLICY_THERMAL,
        "thermal",
    ),
    (
        PerformancePolicy::SyncBoost,
        raw::FI_PERF_POLICY_SYNC_BOOST,
        "sync_boost",
    ),
    (
        PerformancePolicy::Reliability,
        raw::FI_PERF_POLICY_RELIABILITY,
        "reliability",
    ),
];

const VIOLATION: &str = "accel_gpu_throttle_seconds_total";
const VIOLATION_HELP: &str =
    "Time clocks were held below the requested level, by reason, in seconds.";

/// Violation times: the four in one field-values call (0.5 ms on an H100)
/// where the driver has the fields, else one call per policy (0.7 ms each).
fn violations(
    g: &mut GpuSample<'_>,
    dev: &Device<'_>,
    raw: Option<&raw::Raw>,
    state: &mut GpuState,
) {
    if let (Some(raw), None | Some(true)) = (raw, state.violation_fields) {
        let ids: Vec<(u32, u32)> = VIOLATIONS.iter().map(|v| (v.1, 0)).collect();
        match raw.field_values(dev, &ids) {
            Ok(values) if values.iter().all(Result::is_ok) => {
                state.violation_fields = Some(true);
                for ((_, _, name), v) in VIOLATIONS.iter().zip(values) {
                    let ns = v.unwrap_or(0.0);
                    g.with(VIOLATION, VIOLATION_HELP, true, "reason", name, ns / 1e9);
                }
                return;
            }
            Err(raw::GPU_IS_LOST) => {
                g.lost = true;
                return;
            }
            // Some fields missing, or the call failed: the old way, for good.
            _ => state.violation_fields = Some(false),
        }
    }
    for (policy, _, name) in VIOLATIONS {
        if let Some(v) = g.get("nvmlDeviceGetViolationStatus", dev.violation_status(policy)) {
            g.with(
                VIOLATION,
                VIOLATION_HELP,
                true,
                "reason",
                name,
                v.violation_time as f64 / 1e9,
            );
        }
    }
}

fn identity(
    g: &mut GpuSample<'_>,
    dev: &Device<'_>,
    nvml: &Nvml,
) -> Option<Vec<(&'static str, String)>> {
    let uuid = g.get("nvmlDeviceGetUUID", dev.uuid())?;
    let mut info = vec![("gpu", g.index.to_string()), ("uuid", uuid)];
    let text = |g: &mut GpuSample<'_>, what, r| g.get(what, r).unwrap_or_default();
    info.push(("name", text(g, "nvmlDeviceGetName", dev.name())));
    let bus = g
        .get("nvmlDeviceGetPciInfo", dev.pci_info())
        .map(|p| p.bus_id)
        .unwrap_or_default();
    info.push(("pci_bus_id", bus));
    info.push(("serial", text(g, "nvmlDeviceGetSerial", dev.serial())));
    info.push((
        "vbios_version",
        text(g, "nvmlDeviceGetVbiosVersion", dev.vbios_version()),
    ));
    info.push((
        "driver_version",
        text(g, "nvmlSystemGetDriverVersion", nvml.sys_driver_version()),
    ));
    let cuda = g
        .get(
            "nvmlSystemGetCudaDriverVersion",
            nvml.sys_cuda_driver_version(),
        )
        .map(|v| format!("{}.{}", v / 1000, (v % 1000) / 10))
        .unwrap_or_default();
    info.push(("cuda_driver_version", cuda));
    if g.lost {
        return None;
    }
    Some(info)
}

impl Gpu {
    fn sample_gpu(
        &mut self,
        nvml: &'static Nvml,
        index: u32,
        out: &mut Sample,
        now: Instant,
    ) -> Outcome {
        let raw = self.session.as_ref().and_then(|s| s.raw);
        let dev = match nvml.device_by_index(index) {
            Ok(d) => d,
            Err(NvmlError::GpuLost) => return Outcome::Lost,
            Err(e) => {
                out.error(CollectError::new(
                    ErrorKind::Library,
                    format!("GPU {index}: {e}"),
                ));
                return Outcome::Failed;
            }
        };
        let state = &mut self.gpus[index as usize];
        let mut g = GpuSample {
            index,
            gpu: index.to_string(),
            uuid: state.uuid.clone(),
            out: Sample::new(),
            lost: false,
            unsupported: &mut self.unsupported,
        };
        if state.info.is_none() {
            match identity(&mut g, &dev, nvml) {
                Some(info) => {
                    state.uuid = info[1].1.clone();
                    g.uuid = state.uuid.clone();
                    state.info = Some(info);
                }
                None if g.lost => return Outcome::Lost,
                None => {
                    let GpuSample { out: gpu_out, .. } = g;
                    out.merge(gpu_out); // the errors that explain it
                    return Outcome::Failed;
                }
            }
        }

        let mut tm = Sections::new();
        if let Some(m) = g.get("nvmlDeviceGetMemoryInfo_v2", dev.memory_info()) {
            g.gauge(
                "accel_gpu_memory_used_bytes",
                "GPU memory allocated, in bytes.",
                m.used as f64,
            );
            g.gauge(
                "accel_gpu_memory_free_bytes",
                "GPU memory free, in bytes.",
                m.free as f64,
            );
            g.gauge(
                "accel_gpu_memory_total_bytes",
                "GPU memory installed, in bytes.",
                m.total as f64,
            );
            g.gauge(
                "accel_gpu_memory_reserved_bytes",
                "GPU memory reserved by the driver and firmware, in bytes.",
                m.reserved as f64,
            );
        }
        tm.mark("memory");
        if let Some(b) = g.get("nvmlDeviceGetBAR1MemoryInfo", dev.bar1_memory_info()) {
            g.gauge(
                "accel_gpu_bar1_used_bytes",
                "BAR1 memory in use, in bytes.",
                b.used as f64,
            );
            g.gauge(
                "accel_gpu_bar1_total_bytes",
                "BAR1 memory size, in bytes.",
                b.total as f64,
            );
        }
        tm.mark("bar1");
        let util = g.get("nvmlDeviceGetUtilizationRates", dev.utilization_rates());
        if let Some(u) = &util {
            g.gauge(
                "accel_gpu_utilization_ratio",
                "Fraction of the last sample period in which a kernel ran on the GPU (0-1).",
                f64::from(u.gpu) / 100.0,
            );
            g.gauge("accel_gpu_memory_utilization_ratio", "Fraction of the last sample period in which device memory was read or written (0-1).", f64::from(u.memory) / 100.0);
        }
        tm.mark("utilization");
        if let Some(e) = g.get("nvmlDeviceGetEncoderUtilization", dev.encoder_utilization()) {
            g.gauge(
                "accel_gpu_encoder_utilization_ratio",
                "Video encoder utilisation (0-1).",
                f64::from(e.utilization) / 100.0,
            );
        }
        if let Some(d) = g.get("nvmlDeviceGetDecoderUtilization", dev.decoder_utilization()) {
            g.gauge(
                "accel_gpu_decoder_utilization_ratio",
                "Video decoder utilisation (0-1).",
                f64::from(d.utilization) / 100.0,
            );
        }
        tm.mark("encoder_decoder");
        if let Some(p) = g.get("nvmlDeviceGetPowerUsage", dev.power_usage()) {
            g.gauge(
                "accel_gpu_power_watts",
                "Power draw of the GPU board, in watts.",
                f64::from(p) / 1000.0,
            );
        }
        if let Some(p) = g.get(
            "nvmlDeviceGetEnforcedPowerLimit",
            dev.enforced_power_limit(),
        ) {
            g.gauge(
                "accel_gpu_power_limit_watts",
                "Power limit the driver enforces, in watts.",
                f64::from(p) / 1000.0,
            );
        }
        if let Some(p) = g.get(
            "nvmlDeviceGetPowerManagementDefaultLimit",
            dev.power_management_limit_default(),
        ) {
            g.gauge(
                "accel_gpu_power_default_limit_watts",
                "Default power limit of the board, in watts.",
                f64::from(p) / 1000.0,
            );
        }
        tm.mark("power");
        // The energy counter costs 3-5 ms per read on an H100, more than the
        // rest of the sample: read at most once a second (every sample at
        // the default interval), and repeat the last reading in between.
        let due = state
            .energy
            .map_or(true, |(t, _)| now.duration_since(t) >= ENERGY_PERIOD);
        if due {
            if let Some(e) = g.get(
                "nvmlDeviceGetTotalEnergyConsumption",
                dev.total_energy_consumption(),
            ) {
                state.energy = Some((now, e as f64 / 1000.0));
            }
        }
        if let Some((_, joules)) = state.energy {
            g.counter(
                "accel_gpu_energy_joules_total",
                "Energy used by the GPU since the driver loaded, in joules (read at most once a second).",
                joules,
            );
        }
        tm.mark("energy");
        if let Some(t) = g.get(
            "nvmlDeviceGetTemperature",
            dev.temperature(TemperatureSensor::Gpu),
        ) {
            g.with(
                "accel_gpu_temperature_celsius",
                "GPU temperature by sensor, in degrees Celsius.",
                false,
                "sensor",
                "gpu",
                f64::from(t),
            );
        }
        tm.mark("temperature");
        // Passively cooled boards (every SXM module) have no fans: the count
        // is 0 and asking for fan 0 is an invalid argument, not "unsupported".
        let fans = g.get("nvmlDeviceGetNumFans", dev.num_fans()).unwrap_or(0);
        for fan in 0..fans.min(MAX_FANS) {
            if let Some(f) = g.get("nvmlDeviceGetFanSpeed_v2", dev.fan_speed(fan)) {
                g.with(
                    "accel_gpu_fan_speed_ratio",
                    "Intended fan speed as a fraction of its maximum (0-1), by fan.",
                    false,
                    "fan",
                    &fan.to_string(),
                    f64::from(f) / 100.0,
                );
            }
        }
        tm.mark("fans");
        for (clock, name) in CLOCKS {
            if let Some(mhz) = g.get("nvmlDeviceGetClockInfo", dev.clock_info(clock)) {
                g.with(
                    "accel_gpu_clock_hertz",
                    "Current clock frequency by domain, in hertz.",
                    false,
                    "clock",
                    name,
                    f64::from(mhz) * 1e6,
                );
            }
        }
        // Maximum clocks are fixed by the board: read once (each call costs
        // about 2 ms on an H100), again only after a failure.
        if state.max_clocks.is_none() {
            let mut max = Vec::with_capacity(CLOCKS.len());
            let mut failed = false;
            for (clock, name) in CLOCKS {
                match dev.max_clock_info(clock) {
                    Ok(mhz) => max.push((name, f64::from(mhz) * 1e6)),
                    Err(e @ (NvmlError::NotSupported | NvmlError::FunctionNotFound)) => {
                        g.get::<()>("nvmlDeviceGetMaxClockInfo", Err(e));
                    }
                    Err(e) => {
                        failed = true;
                        g.get::<()>("nvmlDeviceGetMaxClockInfo", Err(e));
                    }
                }
            }
            if !failed {
                state.max_clocks = Some(max);
            }
        }
        for (name, hz) in state.max_clocks.iter().flatten() {
            g.with(
                "accel_gpu_clock_max_hertz",
                "Maximum clock frequency by domain, in hertz.",
                false,
                "clock",
                name,
                *hz,
            );
        }
        tm.mark("clocks");
        if let Some(p) = g.get("nvmlDeviceGetPerformanceState", dev.performance_state()) {
            let p = p.as_c();
            if p < 32 {
                g.gauge(
                    "accel_gpu_performance_state",
                    "Performance state, 0 (maximum performance) to 15 (minimum).",
                    f64::from(p),
                );
            }
        }
        if let Some(r) = g.get(
            "nvmlDeviceGetCurrentClocksEventReasons",
            dev.current_throttle_reasons(),
        ) {
            for (bit, name) in THROTTLE_REASONS {
                g.with(
                    "accel_gpu_throttle_reason",
                    "1 while clocks are held down for this reason (clock event reasons).",
                    false,
                    "reason",
                    name,
                    if r.contains(bit) { 1.0 } else { 0.0 },
                );
            }
        }
        tm.mark("pstate_reasons");
        violations(&mut g, &dev, raw.as_ref(), state);
        tm.mark("violations");
        pcie(&mut g, &dev, raw.as_ref(), state, now);

        tm.mark("pcie");
        reliability::reliability(&mut g, &dev, raw.as_ref());
        tm.mark("reliability");
        if let Some(raw) = &raw {
            if let Some(Ok(t)) = g
                .get_raw(
                    "nvmlDeviceGetFieldValues(MEMORY_TEMP)",
                    raw.field_values(&dev, &[(raw::FI_MEMORY_TEMP, 0)]),
                )
                .and_then(|v| v.into_iter().next())
            {
                g.with(
                    "accel_gpu_temperature_celsius",
                    "GPU temperature by sensor, in degrees Celsius.",
                    false,
                    "sensor",
                    "memory",
                    t,
                );
            }
        }
        tm.mark("memory_temperature");
        nvlink::nvlink(&mut g, &dev, raw.as_ref(), &mut state.nvlinks);
        tm.mark("nvlink");
        gpm::gpm(&mut g, &dev, nvml, &mut state.gpm, &mut state.gpm_prev);
        tm.mark("gpm");
        mig::sample(
            &mut g,
            nvml,
            &dev,
            raw.as_ref(),
            state.gpm == Some(true),
            &mut state.mig_gpm,
            &mut state.migs,
        );

        tm.mark("mig");
        let procs = g.get(
            "nvmlDeviceGetComputeRunningProcesses",
            dev.running_compute_processes(),
        );
        let allocated = procs.as_ref().map(|p| !p.is_empty());
        state.busy = allocated == Some(true);
        state.held = procs.iter().flatten().map(|p| p.pid).collect();
        if let Some(procs) = procs.as_ref().filter(|p| !p.is_empty()) {
            self.pids.extend(procs.iter().map(|p| p.pid));
            let mut sm = std::collections::HashMap::new();
            // NotFound means no sample since the last one: nothing to report.
            let stats = match dev.process_utilization_stats(state.proc_util_seen) {
                Err(NvmlError::NotFound) => Ok(Vec::new()),
                r => r,
            };
            if let Some(samples) = g.get("nvmlDeviceGetProcessUtilization", stats) {
                for s in samples {
                    state.proc_util_seen = state.proc_util_seen.max(s.timestamp);
                    sm.insert(s.pid, f64::from(s.sm_util) / 100.0);
                }
            }
            let ids = crate::GpuIds {
                index,
                uuid: state.uuid.clone(),
                busy: true,
                migs: state.migs.clone(),
                ..Default::default()
            };
            let pods = self.pods.latest();
            process::export(
                &mut g,
                nvml,
                procs,
                &sm,
                &self.procfs,
                self.opts.max_processes,
                &|gi| pods.pod_of(&ids, gi),
                &mut self.proc_jobs,
            );
        } else if allocated.is_some() {
            g.gauge(
                "accel_gpu_processes",
                "Compute processes holding the GPU.",
                0.0,
            );
        }
        tm.mark("processes");
        if g.lost {
            return Outcome::Lost;
        }

        // Counters integrated from every sample, so rate() is exact.
        let dt = state
            .last
            .map_or(0.0, |t| now.duration_since(t).as_secs_f64());
        state.last = Some(now);
        let busy = util.as_ref().map(|u| f64::from(u.gpu) / 100.0);
        if let Some(b) = busy {
            state.busy_seconds += b * dt;
            g.counter(
                "accel_gpu_busy_seconds_total",
                "Seconds the GPU was busy (utilisation integrated over time).",
                state.busy_seconds,
            );
        }
        if let Some(a) = allocated {
            if a {
                state.allocated_seconds += dt;
                if busy.is_some_and(|b| b < self.opts.idle_threshold) {
                    state.idle_allocated_seconds += dt;
                }
            }
            g.gauge(
                "accel_gpu_allocated",
                "1 while a process holds the GPU.",
                if a { 1.0 } else { 0.0 },
            );
            g.counter(
                "accel_gpu_allocated_seconds_total",
                "Seconds a process held the GPU.",
                state.allocated_seconds,
            );
            g.counter("accel_gpu_idle_allocated_seconds_total", "Seconds a process held the GPU while its utilisation was under the idle threshold.", state.idle_allocated_seconds);
        }
        tm.log(index);
        let GpuSample { out: gpu_out, .. } = g;
        out.merge(gpu_out);
        Outcome::Up
    }
}

const PCIE_TX: &str = "accel_gpu_pcie_transmit_bytes_per_second";
const PCIE_TX_HELP: &str = "PCIe transmit throughput since the previous sample (from accel_gpu_pcie_transmit_bytes_total), or over the driver's 20 ms window where the GPU has no byte counters, in bytes per second.";
const PCIE_RX: &str = "accel_gpu_pcie_receive_bytes_per_second";
const PCIE_RX_HELP: &str = "PCIe receive throughput since the previous sample (from accel_gpu_pcie_receive_bytes_total), or over the driver's 20 ms window where the GPU has no byte counters, in bytes per second.";

fn pcie(
    g: &mut GpuSample<'_>,
    dev: &Device<'_>,
    raw: Option<&raw::Raw>,
    state: &mut GpuState,
    now: Instant,
) {
    let links = [
        (
            "accel_gpu_pcie_link_generation",
            "Current PCIe link generation.",
            g.get(
                "nvmlDeviceGetCurrPcieLinkGeneration",
                dev.current_pcie_link_gen(),
            ),
        ),
        (
            "accel_gpu_pcie_link_max_generation",
            "Maximum PCIe link generation of the GPU and system.",
            g.get(
                "nvmlDeviceGetMaxPcieLinkGeneration",
                dev.max_pcie_link_gen(),
            ),
        ),
        (
            "accel_gpu_pcie_link_width",
            "Current PCIe link width (lanes).",
            g.get(
                "nvmlDeviceGetCurrPcieLinkWidth",
                dev.current_pcie_link_width(),
            ),
        ),
        (
            "accel_gpu_pcie_link_max_width",
            "Maximum PCIe link width (lanes).",
            g.get("nvmlDeviceGetMaxPcieLinkWidth", dev.max_pcie_link_width()),
        ),
    ];
    for (name, help, v) in links {
        if let Some(v) = v {
            g.gauge(name, help, f64::from(v));
        }
    }
    // Throughput from the byte counters where the driver has them (one
    // field-values call); nvmlDeviceGetPcieThroughput instead measures for
    // 20 ms inside the call, 42 ms a GPU per sample on an H100.
    let counters = match (raw, state.pcie_counters) {
        (Some(raw), None | Some(true)) => {
            let r = raw.field_values(
                dev,
                &[
                    (raw::FI_PCIE_COUNT_TX_BYTES, 0),
                    (raw::FI_PCIE_COUNT_RX_BYTES, 0),
                ],
            );
            match r.as_deref().map_err(|&e| e) {
                Ok([Ok(tx), Ok(rx)]) => {
                    state.pcie_counters = Some(true);
                    Some((*tx, *rx))
                }
                Err(raw::GPU_IS_LOST) | Ok([Err(raw::GPU_IS_LOST), ..]) => {
                    g.lost = true;
                    return;
                }
                Ok(_) | Err(raw::NOT_SUPPORTED | raw::NOT_FOUND) => {
                    g.unsupported("nvmlDeviceGetFieldValues(PCIE_COUNT_TX/RX_BYTES)");
                    state.pcie_counters = Some(false);
                    None
                }
                Err(code) => {
                    g.get_raw::<()>(
                        "nvmlDeviceGetFieldValues(PCIE_COUNT_TX/RX_BYTES)",
                        Err(code),
                    );
                    None
                }
            }
        }
        _ => None,
    };
    if let Some((tx, rx)) = counters {
        g.counter(
            "accel_gpu_pcie_transmit_bytes_total",
            "Bytes the GPU sent over PCIe.",
            tx,
        );
        g.counter(
            "accel_gpu_pcie_receive_bytes_total",
            "Bytes the GPU received over PCIe.",
            rx,
        );
        if let Some((t0, tx0, rx0)) = state.pcie_prev {
            let dt = now.duration_since(t0).as_secs_f64();
            if dt > 0.0 && tx >= tx0 && rx >= rx0 {
                g.gauge(PCIE_TX, PCIE_TX_HELP, (tx - tx0) / dt);
                g.gauge(PCIE_RX, PCIE_RX_HELP, (rx - rx0) / dt);
            }
        }
        state.pcie_prev = Some((now, tx, rx));
    } else if state.pcie_counters != Some(true) {
        if let Some(kb) = g.get(
            "nvmlDeviceGetPcieThroughput",
            dev.pcie_throughput(PcieUtilCounter::Send),
        ) {
            g.gauge(PCIE_TX, PCIE_TX_HELP, f64::from(kb) * 1024.0);
        }
        if let Some(kb) = g.get(
            "nvmlDeviceGetPcieThroughput",
            dev.pcie_throughput(PcieUtilCounter::Receive),
        ) {
            g.gauge(PCIE_RX, PCIE_RX_HELP, f64::from(kb) * 1024.0);
        }
    }
    if let Some(n) = g.get("nvmlDeviceGetPcieReplayCounter", dev.pcie_replay_counter()) {
        g.counter(
            "accel_gpu_pcie_replay_errors_total",
            "PCIe replays (link-level retransmissions).",
            f64::from(n),
        );
    }
}

impl Collector for Gpu {
    fn name(&self) -> &'static str {
        "gpu"
    }

    fn sample(&mut self, out: &mut Sample) -> Result<(), CollectError> {
        let now = Instant::now();
        self.pids.clear();
        self.proc_jobs.clear();
        // A silent or restarting event thread or watcher fails the sample:
        // XID counts and job maps that no longer move are not served.
        let nvml = match self.workers.check().and_then(|()| self.session(now)) {
            Ok(n) => n,
            Err(e) => {
                let last = self.gpus_out.latest();
                self.gpus_out.publish(GpuSnapshot {
                    gpus: last.gpus.clone(),
                    pids: Vec::new(),
                });
                return Err(e);
            }
        };
        let count = self.gpus.len() as u32;
        let mut up = Vec::with_capacity(self.gpus.len());
        for index in 0..count {
            let state = &self.gpus[index as usize];
            if state.retry_at.is_some_and(|t| now < t) {
                up.push(false);
                continue;
            }
            let outcome = self.sample_gpu(nvml, index, out, now);
            let state = &mut self.gpus[index as usize];
            match outcome {
                Outcome::Up => {
                    if state.retry_at.take().is_some() {
                        tracing::info!(gpu = index, "GPU is back");
                    }
                    state.backoff = Duration::ZERO;
                    up.push(true);
                }
                Outcome::Lost => {
                    if state.retry_at.is_none() {
                        tracing::warn!(gpu = index, "GPU lost (fallen off the bus or unreachable); probing again with backoff");
                    }
                    state.backoff = (state.backoff * 2).clamp(Duration::from_secs(1), MAX_BACKOFF);
                    state.retry_at = Some(now + state.backoff);
                    // The idle and busy integrals must not credit the gap.
                    state.last = None;
                    out.error(CollectError::new(
                        ErrorKind::GpuLost,
                        format!("GPU {index} lost"),
                    ));
                    up.push(false);
                }
                Outcome::Failed => {
                    state.last = None;
                    up.push(false);
                }
            }
        }
        let info = out.gauge(
            "accel_gpu_info",
            "Identity of each GPU; always 1. Join on gpu and uuid.",
        );
        for state in &self.gpus {
            if let Some(labels) = &state.info {
                let l: Vec<(&'static str, &str)> =
                    labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                info.add(&l, 1.0);
            }
        }
        {
            let x = self.xids.lock().unwrap_or_else(|e| e.into_inner());
            // The XIDs the alert rules name start at 0 on every GPU whose
            // events are watched, so `increase()` sees their first error.
            let watched = self.session.as_ref().is_some_and(|s| s.events.is_some());
            let mut counts = x.counts.clone();
            if watched {
                for (gpu, state) in self.gpus.iter().enumerate() {
                    if state.info.is_some() {
                        for xid in KNOWN_XIDS {
                            counts.entry((gpu as u32, xid)).or_insert(0);
                        }
                    }
                }
            }
            let total = out.counter(
                "accel_gpu_xid_errors_total",
                "XID errors reported by the driver, by XID (counted as they happen, from NVML events).",
            );
            for ((gpu, xid), n) in &counts {
                let uuid = self.gpus.get(*gpu as usize).map_or("", |s| s.uuid.as_str());
                total.add(
                    &[
                        ("gpu", &gpu.to_string()),
                        ("uuid", uuid),
                        ("xid", &xid.to_string()),
                    ],
                    *n as f64,
                );
            }
            let last = out.gauge(
                "accel_gpu_last_xid_timestamp_seconds",
                "Unix time of the GPU's last XID error.",
            );
            for (gpu, t) in &x.last {
                let uuid = self.gpus.get(*gpu as usize).map_or("", |s| s.uuid.as_str());
                last.add(&[("gpu", &gpu.to_string()), ("uuid", uuid)], *t);
            }
        }
        let uuids: Vec<Option<&str>> = self
            .gpus
            .iter()
            .map(|s| s.info.as_ref().map(|_| s.uuid.as_str()))
            .collect();
        // Processes of a GPU lost later in its sample are not evidence.
        self.proc_jobs
            .retain(|p| up.get(p.gpu as usize) == Some(&true));
        let mapping = self.job_mapping.as_ref().map(|w| w.current());
        jobs::export(
            out,
            &uuids,
            &self.proc_jobs,
            mapping.as_deref().unwrap_or(&jobs::Mapping::new()),
        );
        let upf = out.gauge(
            "accel_gpu_up",
            "1 when the GPU answered this sample, 0 when it is lost.",
        );
        for (index, (state, up)) in self.gpus.iter().zip(up).enumerate() {
            upf.add(
                &[("gpu", &index.to_string()), ("uuid", &state.uuid)],
                if up { 1.0 } else { 0.0 },
            );
        }
        let mut pids = std::mem::take(&mut self.pids);
        pids.sort_unstable();
        pids.dedup();
        let name =
            |info: &[(&str, String)]| info.iter().find(|l| l.0 == "name").map(|l| l.1.clone());
        let ids = self
            .gpus
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.uuid.is_empty());
        self.gpus_out.publish(GpuSnapshot {
            pids,
            gpus: ids
                .map(|(i, s)| crate::GpuIds {
                    index: i as u32,
                    uuid: s.uuid.clone(),
                    name: s.info.as_deref().and_then(name).unwrap_or_default(),
                    pids: s.held.clone(),
                    busy: s.busy,
                    migs: s.migs.clone(),
                })
                .collect(),
        });
        Ok(())
    }
}
