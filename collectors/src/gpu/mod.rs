//! `accel_gpu_*`: NVIDIA GPUs through NVML (nvml-wrapper, pinned), and AMD
//! Instinct GPUs through amdgpu sysfs when there is no NVIDIA GPU (`amd/`).
//!
//! One sample walks every GPU. A GPU that answers `GpuLost` is data, not a
//! failure of the collector: `accel_gpu_up{gpu} 0`, its other series are
//! withheld, the rest keep reporting, and it is probed again with backoff.
//! A call NVML answers `NotSupported` (or whose symbol an older driver
//! lacks) leaves its series out and is logged once per GPU and function.
//! A call that hangs blocks this collector's sampler thread only; the agent
//! then reports the collector stale and keeps serving the others.
//!
//! This file holds the collector, its options and the order of a sample;
//! each part of a GPU's sample lives in a file of its own, with the
//! families it fills.

pub mod accounting;
pub mod amd;
pub mod events;
mod fields;
pub mod gpm;
pub mod identity;
pub mod jobs;
mod memory;
mod mig;
pub mod nvlink;
pub mod pcie;
pub mod power;
mod process;
mod raw;
mod reliability;
mod sample;
mod session;
pub mod throttle;
pub mod utilization;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{GpmSample, Nvml};

use crate::kubernetes::PodMap;
use crate::options::{options, parse_ratio};
use crate::shared::{GpuSnapshot, Topic};
use crate::workers::Workers;
use crate::{BuildContext, Built, CollectError, Collector, ErrorKind, FamilyDef, Sample, Spec};
use sample::{GpuSample, Outcome, Sections};
use session::{init, nvidia_on_pci, Session};

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
    /// Time between reads of the driver's energy counter.
    #[arg(
        id = "collector.gpu.energy-interval",
        long = "collector.gpu.energy-interval",
        value_name = "DURATION",
        help = "Time between reads of a GPU's energy counter (2.4 ms of CPU a read on an H200); in between, accel_gpu_energy_joules_total advances by power x time, and never decreases.",
        default_value = "30s",
        value_parser = crate::options::parse_duration
    )]
    pub energy_interval: Duration,
    /// Time between reads of the NVLink and violation-time counters.
    #[arg(
        id = "collector.gpu.counter-interval",
        long = "collector.gpu.counter-interval",
        value_name = "DURATION",
        help = "Time between reads of a GPU's NVLink data and error counters, PCIe byte counters, violation (throttle) time counters and memory (HBM) temperature (about 2 ms of CPU for 18 links on an H200); in between, the last readings are exported again.",
        default_value = "10s",
        value_parser = crate::options::parse_duration
    )]
    pub counter_interval: Duration,
    /// Time between reads of per-process utilisation.
    #[arg(
        id = "collector.gpu.process-utilization-interval",
        long = "collector.gpu.process-utilization-interval",
        value_name = "DURATION",
        help = "Time between reads of per-process SM utilisation (1.4 ms of CPU a read on an H200), made only while processes hold the GPU; each read gives the mean of the driver's samples since the previous one.",
        default_value = "10s",
        value_parser = crate::options::parse_duration
    )]
    pub process_utilization_interval: Duration,
    /// Every NVLink link's series, not only the unhealthy links'.
    #[arg(
        id = "collector.gpu.nvlink.per-link",
        long = "collector.gpu.nvlink.per-link",
        help = "Export every NVLink link's series (accel_gpu_nvlink_up, accel_gpu_nvlink_link_*: 7 per link, 126 per 18-link GPU). By default they are exported only for links that are down or count errors; the per-GPU sums and link counts always are.",
        action = clap::ArgAction::SetTrue
    )]
    pub nvlink_per_link: bool,
}

/// The GPU collector's registry entry.
pub const SPEC: Spec = Spec {
    name: "gpu",
    help: "GPUs: NVIDIA through NVML, or AMD Instinct through amdgpu sysfs when NVML finds none",
    default_enabled: true,
    default_interval: Duration::from_secs(1),
    options: options::<GpuOptions>(),
    detail: "Also export the families a training node rarely needs, and make their NVML calls: graphics and video clocks and every clock maximum but the SM one, BAR1 memory, encoder and decoder utilisation, GPM's PCIe and NVLink rates, PCIe throughput gauges next to the byte counters, the performance state, reserved memory, the ECC mode, the lifetime count of corrected ECC errors, and the default power limit while it equals the enforced one (about 30 series per GPU). By default the SM and memory clocks are exported, and PCIe and NVLink throughput as byte counters.",
    families: FAMILIES,
    prefixes: &["accel_gpu_"],
    outside: &[],
    build,
};

/// Every family this collector exports, in the order of docs/metrics.md.
pub const FAMILIES: &[FamilyDef] = &[
    identity::INFO,
    identity::UP,
    memory::MEMORY_USED_BYTES,
    memory::MEMORY_FREE_BYTES,
    memory::MEMORY_TOTAL_BYTES,
    memory::MEMORY_RESERVED_BYTES,
    memory::BAR1_USED_BYTES,
    memory::BAR1_TOTAL_BYTES,
    utilization::UTILIZATION_RATIO,
    utilization::MEMORY_UTILIZATION_RATIO,
    utilization::ENCODER_UTILIZATION_RATIO,
    utilization::DECODER_UTILIZATION_RATIO,
    accounting::BUSY_SECONDS,
    power::POWER_WATTS,
    power::POWER_LIMIT_WATTS,
    power::POWER_DEFAULT_LIMIT_WATTS,
    power::ENERGY_JOULES,
    power::TEMPERATURE_CELSIUS,
    power::FAN_SPEED_RATIO,
    throttle::CLOCK_HERTZ,
    throttle::CLOCK_MAX_HERTZ,
    throttle::PERFORMANCE_STATE,
    throttle::THROTTLE_REASON,
    throttle::THROTTLE_SECONDS,
    pcie::PCIE_LINK_GENERATION,
    pcie::PCIE_LINK_MAX_GENERATION,
    pcie::PCIE_LINK_WIDTH,
    pcie::PCIE_LINK_MAX_WIDTH,
    pcie::PCIE_TRANSMIT_BYTES,
    pcie::PCIE_RECEIVE_BYTES,
    pcie::PCIE_TRANSMIT_BYTES_PER_SECOND,
    pcie::PCIE_RECEIVE_BYTES_PER_SECOND,
    pcie::PCIE_REPLAY_ERRORS,
    reliability::ECC_ENABLED,
    reliability::ECC_PENDING_ENABLED,
    reliability::ECC_ERRORS,
    reliability::RETIRED_PAGES,
    reliability::RETIRED_PAGES_PENDING,
    reliability::REMAPPED_ROWS,
    reliability::REMAPPED_ROWS_PENDING,
    reliability::REMAPPED_ROWS_FAILURE,
    nvlink::NVLINK_LINKS,
    nvlink::NVLINK_LINKS_UP,
    nvlink::NVLINK_TRANSMIT_BYTES,
    nvlink::NVLINK_RECEIVE_BYTES,
    nvlink::NVLINK_ERRORS,
    nvlink::NVLINK_UP,
    nvlink::NVLINK_LINK_ERRORS,
    nvlink::NVLINK_LINK_TRANSMIT_BYTES,
    nvlink::NVLINK_LINK_RECEIVE_BYTES,
    events::XID_ERRORS,
    events::XID_EVENTS,
    events::LAST_XID_TIMESTAMP_SECONDS,
    gpm::SM_ACTIVE_RATIO,
    gpm::SM_OCCUPANCY_RATIO,
    gpm::TENSOR_ACTIVE_RATIO,
    gpm::DRAM_ACTIVE_RATIO,
    gpm::PIPE_ACTIVE_RATIO,
    gpm::GPM_PCIE_TRANSMIT_BYTES_PER_SECOND,
    gpm::GPM_PCIE_RECEIVE_BYTES_PER_SECOND,
    gpm::GPM_NVLINK_TRANSMIT_BYTES_PER_SECOND,
    gpm::GPM_NVLINK_RECEIVE_BYTES_PER_SECOND,
    process::PROCESSES,
    process::PROCESS_INFO,
    process::PROCESS_MEMORY_USED_BYTES,
    process::PROCESS_SM_UTILIZATION_RATIO,
    jobs::JOB_INFO,
    accounting::ALLOCATED,
    accounting::ALLOCATED_SECONDS,
    accounting::IDLE_ALLOCATED_SECONDS,
    mig::MIG_MODE,
    mig::MIG_MODE_PENDING,
    mig::MIG_INFO,
    mig::MIG_MEMORY_USED_BYTES,
    mig::MIG_MEMORY_TOTAL_BYTES,
    mig::MIG_ALLOCATED,
    mig::MIG_SM_ACTIVE_RATIO,
    mig::MIG_SM_OCCUPANCY_RATIO,
    mig::MIG_TENSOR_ACTIVE_RATIO,
    mig::MIG_DRAM_ACTIVE_RATIO,
    // AMD only (amd/mod.rs); the families both vendors have are above.
    amd::FAMILIES[0],
    amd::FAMILIES[1],
    amd::FAMILIES[2],
    amd::FAMILIES[3],
    amd::FAMILIES[4],
    amd::FAMILIES[5],
    amd::FAMILIES[6],
    amd::FAMILIES[7],
    amd::FAMILIES[8],
    amd::FAMILIES[9],
    amd::FAMILIES[10],
    amd::FAMILIES[11],
];

/// Longest wait between probes of a lost GPU, and between attempts to
/// start NVML.
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
    /// NVLink links and their last counter readings.
    nvlinks: nvlink::Links,
    /// When the NVLink and violation-time counters were last read.
    counters_at: Option<Instant>,
    /// The last violation-time reading.
    violations: throttle::Violations,
    /// Timestamp of the newest per-process utilisation sample seen, when
    /// it was read, and each process's mean SM utilisation then.
    proc_util_seen: u64,
    proc_util_at: Option<Instant>,
    proc_sm: std::collections::HashMap<u32, f64>,
    /// Whether the memory temperature field works, once known, and its
    /// last reading (exported again until the next read).
    memory_temperature: Option<bool>,
    memory_temperature_last: Option<f64>,
    /// Maximum clocks by domain, read once.
    max_clocks: Option<Vec<(&'static str, f64)>>,
    /// Whether the PCIe byte counters (field values) work, once known, and
    /// their previous reading: (time, transmit bytes, receive bytes).
    pcie_counters: Option<bool>,
    pcie_prev: Option<(Instant, f64, f64)>,
    /// The transmit and receive rates between the last two counter reads.
    pcie_rates: Option<(f64, f64)>,
    /// The exported energy counter.
    energy: power::Energy,
    /// Previous GPM samples of the MIG instances.
    mig_gpm: mig::MigGpm,
    /// Its MIG instances and whether it held a process, last sample.
    migs: Vec<crate::MigIds>,
    busy: bool,
    /// Pids of the compute processes holding it, for `gpus_out`.
    held: Vec<u32>,
    /// Its health facts from the last good sample, for `gpus_out`.
    health: crate::GpuHealth,
    /// How many times it came back after being lost.
    resets: u64,
    /// Whether the recovery action field and the fabric info work on it.
    recovery_probed: (Option<bool>, Option<bool>),
    /// The recovery action last read (read with the counters).
    recovery_action: Option<u32>,
}

/// The GPU collector.
pub struct Gpu {
    library: PathBuf,
    /// What the sample is doing, for the watchdog (see [`crate::activity`]).
    activity: crate::Activity,
    /// The initialised NVML, or `None` until NVML starts (a driver that
    /// loads after the agent) or after it was lost (a driver reload).
    session: Option<Session>,
    /// While uninitialised: when to try again, and the current backoff.
    init_retry_at: Option<Instant>,
    init_backoff: Duration,
    /// XID counts, kept across re-initialisations.
    xids: Arc<Mutex<events::Xids>>,
    opts: GpuOptions,
    /// `--collector.gpu.detail`: the detail families and their NVML calls.
    detail: bool,
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

/// Builds the collector. Absent when no NVML library can be loaded, when
/// NVML sees no GPU, or when NVML cannot start and there is no NVIDIA GPU on
/// PCI. When NVML cannot start but an NVIDIA GPU is there (the driver loads
/// after the agent, or is broken), the collector runs, reports the failure,
/// and keeps trying with backoff.
fn build(ctx: &BuildContext) -> Result<Built, CollectError> {
    // No NVIDIA GPU: the AMD backend, if there are AMD GPUs.
    let built = match build_nvidia(ctx)? {
        Built::Absent(why) => amd::build(ctx, why),
        ready => ready,
    };
    if let Built::Absent(why) = &built {
        // The health collector compares what NVML sees with the PCI bus:
        // say that NVML sees nothing, and why.
        ctx.shared.gpus.publish(GpuSnapshot {
            sampled: true,
            error: Some(why.clone()),
            ..GpuSnapshot::default()
        });
    }
    Ok(built)
}

/// The NVIDIA collector, or absent saying why.
fn build_nvidia(ctx: &BuildContext) -> Result<Built, CollectError> {
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
        activity: ctx.activity.clone(),
        library: lib.clone(),
        session,
        init_retry_at: None,
        init_backoff: Duration::ZERO,
        xids,
        opts: gpu_opts.clone(),
        detail: ctx.detail,
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
    /// Samples GPU `index` into `out`. The parts run in the order their
    /// families appear in the output, which the goldens fix.
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
            health: crate::GpuHealth::default(),
        };
        if state.info.is_none() {
            match identity::identity(&mut g, &dev, nvml) {
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

        let mut tm = Sections::new(&self.activity, index);
        // Every field this sample reads, in one nvmlDeviceGetFieldValues
        // call; the slow counters only when due.
        tm.start(
            "fields",
            "fields (nvmlDeviceGetNvLinkState, nvmlDeviceGetNvLinkErrorCounter, nvmlDeviceGetFieldValues)",
        );
        let counters_due = state.counters_at.map_or(true, |t| {
            now.duration_since(t) >= self.opts.counter_interval
        });
        if counters_due {
            state.counters_at = Some(now);
        }
        let v13 = nvml.field_id_scheme() == nvml_wrapper::FieldIdScheme::V13Update1;
        nvlink::probe(&dev, &mut state.nvlinks);
        let mut batch = fields::Batch::default();
        // The PCIe byte counters are counters like NVLink's: read when the
        // counters are due, the last reading exported in between.
        let pcie_at = if counters_due {
            pcie::want_pcie(&mut batch, state)
        } else {
            None
        };
        // A gauge, yet read with the counters: a field-values call of its
        // own every sample would cost about 0.2 ms a GPU on an H200, as
        // much as the rest of the sample, for a temperature that moves in
        // seconds to minutes (the throttle reasons, read every sample,
        // say when it holds the clocks down).
        let mem_temp_at = counters_due
            .then(|| power::want_memory_temperature(&mut batch, state.memory_temperature))
            .flatten();
        let violations_at = counters_due
            .then(|| throttle::want_violations(&mut batch, &state.violations, v13))
            .flatten();
        let nvlink_at = nvlink::want(
            &mut batch,
            &state.nvlinks,
            counters_due,
            self.opts.nvlink_per_link,
        );
        // The recovery action with the counters too: the health check it
        // feeds looks every 5 s, and an action the driver asks for stays.
        let recovery_at = counters_due
            .then(|| reliability::want_recovery(&mut batch, &state.recovery_probed))
            .flatten();
        batch.fetch(raw.as_ref(), &dev);

        tm.start("memory", "memory (nvmlDeviceGetMemoryInfo_v2)");
        memory::memory(&mut g, &dev);
        let detail = self.detail;
        if detail {
            tm.start("bar1", "bar1 (nvmlDeviceGetBAR1MemoryInfo)");
            memory::bar1(&mut g, &dev);
        }
        tm.start("utilization", "utilization (nvmlDeviceGetUtilizationRates)");
        let util = utilization::utilization(&mut g, &dev);
        if detail {
            tm.start(
                "encoder_decoder",
                "encoder_decoder (nvmlDeviceGetEncoderUtilization, nvmlDeviceGetDecoderUtilization)",
            );
            utilization::codecs(&mut g, &dev);
        }
        tm.start(
            "power",
            "power (nvmlDeviceGetPowerUsage and the power limits)",
        );
        let watts = power::power(&mut g, &dev, detail);
        tm.start("energy", "energy (nvmlDeviceGetTotalEnergyConsumption)");
        power::energy(
            &mut g,
            &dev,
            &mut state.energy,
            watts,
            self.opts.energy_interval,
            now,
        );
        tm.start("temperature", "temperature (nvmlDeviceGetTemperature)");
        power::temperature(&mut g, &dev);
        tm.start(
            "fans",
            "fans (nvmlDeviceGetNumFans, nvmlDeviceGetFanSpeed_v2)",
        );
        power::fans(&mut g, &dev);
        tm.start(
            "clocks",
            "clocks (nvmlDeviceGetClockInfo, nvmlDeviceGetMaxClockInfo)",
        );
        throttle::clocks(&mut g, &dev, &mut state.max_clocks, detail);
        tm.start("pstate_reasons", "pstate_reasons (nvmlDeviceGetPerformanceState, nvmlDeviceGetCurrentClocksEventReasons)");
        throttle::reasons(&mut g, &dev, detail);
        tm.start("violations", "violations (nvmlDeviceGetViolationStatus)");
        throttle::violations(
            &mut g,
            &dev,
            &batch,
            violations_at,
            &mut state.violations,
            counters_due,
        );
        tm.start(
            "pcie",
            "pcie (the PCIe link and replay calls, nvmlDeviceGetPcieThroughput)",
        );
        pcie::pcie(&mut g, &dev, &batch, pcie_at, state, now, detail);
        tm.start(
            "reliability",
            "reliability (ECC counters, retired pages, remapped rows)",
        );
        reliability::reliability(&mut g, &dev, raw.as_ref(), detail);
        tm.start("recovery", "recovery (nvmlDeviceGetGpuFabricInfo)");
        reliability::recovery(
            &mut g,
            &dev,
            raw.as_ref(),
            &batch,
            recovery_at,
            &mut state.recovery_probed,
            &mut state.recovery_action,
        );
        power::memory_temperature(
            &mut g,
            &batch,
            mem_temp_at,
            &mut state.memory_temperature,
            &mut state.memory_temperature_last,
        );
        tm.start(
            "nvlink",
            "nvlink (nvmlDeviceGetNvLinkState, nvmlDeviceGetNvLinkErrorCounter)",
        );
        nvlink::nvlink(
            &mut g,
            &dev,
            &batch,
            nvlink_at,
            &mut state.nvlinks,
            self.opts.nvlink_per_link,
        );
        tm.start("gpm", "gpm (nvmlGpmSampleGet, nvmlGpmMetricsGet)");
        gpm::gpm(
            &mut g,
            &dev,
            nvml,
            &mut state.gpm,
            &mut state.gpm_prev,
            detail,
        );
        tm.start("mig", "mig (the MIG instance calls)");
        mig::sample(
            &mut g,
            nvml,
            &dev,
            raw.as_ref(),
            state.gpm == Some(true),
            &mut state.mig_gpm,
            &mut state.migs,
        );
        tm.start(
            "processes",
            "processes (nvmlDeviceGetComputeRunningProcesses, nvmlDeviceGetProcessUtilization)",
        );
        let allocated = accounting::processes(
            &mut g,
            nvml,
            &dev,
            state,
            accounting::Attribution {
                procfs: &self.procfs,
                cap: self.opts.max_processes,
                pods: &self.pods,
                pids: &mut self.pids,
                jobs: &mut self.proc_jobs,
                raw,
                util_every: self.opts.process_utilization_interval,
                now,
            },
        );
        tm.end();
        if g.lost {
            return Outcome::Lost;
        }
        let busy = util.as_ref().map(|u| f64::from(u.gpu) / 100.0);
        accounting::integrate(
            &mut g,
            state,
            busy,
            allocated,
            self.opts.idle_threshold,
            now,
        );
        tm.log();
        let GpuSample {
            out: gpu_out,
            health,
            ..
        } = g;
        state.health = health;
        out.merge(gpu_out);
        Outcome::Up
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
                    sampled: true,
                    count: self.gpus.len() as u32,
                    down: (0..self.gpus.len() as u32).collect(),
                    error: Some(e.message.clone()),
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
                        state.resets += 1;
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
                    // Its first sample back reads the counters, the memory
                    // temperature and the recovery action afresh.
                    state.counters_at = None;
                    out.error(CollectError::new(
                        ErrorKind::GpuLost,
                        format!("GPU {index} lost"),
                    ));
                    up.push(false);
                }
                Outcome::Failed => {
                    state.last = None;
                    state.counters_at = None;
                    up.push(false);
                }
            }
        }
        let info = out.add(&identity::INFO);
        for state in &self.gpus {
            if let Some(labels) = &state.info {
                let l: Vec<(&'static str, &str)> =
                    labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                info.add(&l, 1.0);
            }
        }
        let watched = self.session.as_ref().is_some_and(|s| s.events.is_some());
        events::export(out, &self.xids, &self.gpus, watched);
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
        let upf = out.add(&identity::UP);
        for (index, (state, &up)) in self.gpus.iter().zip(&up).enumerate() {
            upf.add(
                &[("gpu", &index.to_string()), ("uuid", &state.uuid)],
                if up { 1.0 } else { 0.0 },
            );
        }
        let mut pids = std::mem::take(&mut self.pids);
        pids.sort_unstable();
        pids.dedup();
        let label = |info: &[(&str, String)], key: &str| {
            info.iter().find(|l| l.0 == key).map(|l| l.1.clone())
        };
        let ids = self
            .gpus
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.uuid.is_empty());
        let xids = self.xids.lock().unwrap_or_else(|e| e.into_inner());
        let gpus = ids
            .map(|(i, s)| crate::GpuIds {
                index: i as u32,
                uuid: s.uuid.clone(),
                name: s
                    .info
                    .as_deref()
                    .and_then(|l| label(l, "name"))
                    .unwrap_or_default(),
                pids: s.held.clone(),
                busy: s.busy,
                migs: s.migs.clone(),
                pci_bus_id: s
                    .info
                    .as_deref()
                    .and_then(|l| label(l, "pci_bus_id"))
                    .unwrap_or_default(),
                health: crate::GpuHealth {
                    xids: xids
                        .counts
                        .range((i as u32, 0)..=(i as u32, u64::MAX))
                        .map(|((_, x), n)| (*x, *n))
                        .collect(),
                    resets: s.resets,
                    ..s.health.clone()
                },
            })
            .collect();
        drop(xids);
        self.gpus_out.publish(GpuSnapshot {
            pids,
            gpus,
            sampled: true,
            count: self.gpus.len() as u32,
            down: up
                .iter()
                .enumerate()
                .filter(|(_, up)| !**up)
                .map(|(i, _)| i as u32)
                .collect(),
            error: None,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MetricType;

    /// The label names of a series line, in order.
    fn label_names(labels: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut rest = labels;
        while let Some((name, after)) = rest.split_once("=\"") {
            names.push(name.trim_start_matches(',').to_owned());
            // Skip the value, minding escaped quotes.
            let mut escaped = false;
            let end = after
                .char_indices()
                .find(|&(_, c)| {
                    let end = c == '"' && !escaped;
                    escaped = c == '\\' && !escaped;
                    end
                })
                .map_or(after.len(), |(i, _)| i + 1);
            rest = &after[end..];
        }
        names
    }

    /// Every family of the GPU goldens is in the table, with the help, type
    /// and label names it is served with; the help and the labels are what
    /// a user sees, the table is what the docs say.
    #[test]
    fn the_goldens_match_the_table() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/golden");
        let def = |name: &str| {
            FAMILIES
                .iter()
                .find(|f| f.name == name)
                .unwrap_or_else(|| panic!("{name} is not in the gpu table"))
        };
        let mut checked = HashSet::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            if !((file.starts_with("gpu-") || file.starts_with("amd-")) && file.ends_with(".prom"))
            {
                continue;
            }
            for line in std::fs::read_to_string(&path).unwrap().lines() {
                if let Some(rest) = line.strip_prefix("# HELP accel_gpu_") {
                    let (name, help) = rest.split_once(' ').unwrap();
                    let name = format!("accel_gpu_{name}");
                    assert_eq!(def(&name).help, help, "{file}: help of {name}");
                    checked.insert(name);
                } else if let Some(rest) = line.strip_prefix("# TYPE accel_gpu_") {
                    let (name, kind) = rest.split_once(' ').unwrap();
                    let want = match def(&format!("accel_gpu_{name}")).kind {
                        MetricType::Counter => "counter",
                        MetricType::Gauge => "gauge",
                        MetricType::Histogram => "histogram",
                    };
                    assert_eq!(want, kind, "{file}: type of accel_gpu_{name}");
                } else if let Some((name, labels)) = line
                    .strip_prefix("accel_gpu_")
                    .and_then(|l| l.split_once('{'))
                {
                    let name = format!("accel_gpu_{name}");
                    assert_eq!(
                        def(&name).labels,
                        label_names(labels),
                        "{file}: labels of {name}"
                    );
                }
            }
        }
        // The goldens cover most of the table (fans, retired pages and the
        // last XID time are not in any scenario's output).
        assert!(
            checked.len() >= 70,
            "only {} families checked",
            checked.len()
        );
    }
}
