//! accel-agent's collectors: one module per source, the [`Collector`] trait,
//! and the [`Sample`] a collector fills.
//!
//! No HTTP and no CLI live here. The agent builds the enabled collectors from
//! [`registry`], runs each on its own sampler thread, and serves what they
//! produce. A metric's name tells where it comes from: `accel_disk_*` is
//! [`disk`], `accel_network_*` is [`network`], and so on.

pub mod cloud;
pub mod cpu;
pub mod disk;
pub mod goodput;
pub mod gpu;
pub mod infiniband;
pub mod kubernetes;
pub mod memory;
pub mod network;
pub mod pressure;
pub mod process;
mod sample;
pub mod util;
pub mod workload;

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use sample::{
    encode_openmetrics, encode_text, format_value, Family, MetricType, Sample, Series,
};

/// The bounded set of error kinds, exported as the `kind` label of
/// `accel_collector_errors_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Reading a file or calling the kernel failed.
    Io,
    /// What was read did not have the expected shape.
    Parse,
    /// Access was refused.
    Permission,
    /// A sample ran past its deadline.
    Timeout,
    /// A GPU fell off the bus.
    GpuLost,
    /// A library (NVML) failed in a way that is not one of the above.
    Library,
}

impl ErrorKind {
    /// Every kind, in label order.
    pub const ALL: [ErrorKind; 6] = [
        ErrorKind::Io,
        ErrorKind::Parse,
        ErrorKind::Permission,
        ErrorKind::Timeout,
        ErrorKind::GpuLost,
        ErrorKind::Library,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Io => "io",
            ErrorKind::Parse => "parse",
            ErrorKind::Permission => "permission",
            ErrorKind::Timeout => "timeout",
            ErrorKind::GpuLost => "gpu_lost",
            ErrorKind::Library => "library",
        }
    }

    /// Position in [`ALL`](Self::ALL).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// An error met while sampling: a bounded kind and a message for the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectError {
    /// What went wrong, for the `kind` label.
    pub kind: ErrorKind,
    /// What and where, for a person reading the log.
    pub message: String,
}

impl CollectError {
    /// An error of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// A parse error.
    pub fn parse(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Parse, message)
    }
}

impl fmt::Display for CollectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.kind.as_str())
    }
}

impl std::error::Error for CollectError {}

/// A source of metrics, sampled on its own thread.
///
/// `sample` may block (file reads, FFI); it is never called on the async
/// runtime nor during a scrape. An `Err` means the whole sample is lost and
/// the collector's previous data is withdrawn; a fault that spoils only part
/// of the sample goes to [`Sample::error`] instead.
pub trait Collector: Send + 'static {
    /// The collector's name: its `--collector.<name>` flag and `collector` label.
    fn name(&self) -> &'static str;
    /// Takes one sample into `out`.
    fn sample(&mut self, out: &mut Sample) -> Result<(), CollectError>;
}

/// What building a collector gave.
pub enum Built {
    /// The collector, ready to sample.
    Ready(Box<dyn Collector>),
    /// The hardware or interface it reads is not on this machine (no
    /// /sys/class/infiniband, no NVML): not an error, the collector is simply
    /// not run. The string says what was missing, for one log line.
    Absent(String),
}

/// Include/exclude regexes on device names, as node_exporter's
/// `device-include` / `device-exclude` flags: include wins when both are set.
#[derive(Clone, Debug, Default)]
pub struct DeviceFilter {
    include: Option<regex::Regex>,
    exclude: Option<regex::Regex>,
}

impl DeviceFilter {
    /// A filter from optional regexes (anchoring is the caller's, as in
    /// node_exporter).
    pub fn new(include: Option<&str>, exclude: Option<&str>) -> Result<Self, regex::Error> {
        let compile = |s: Option<&str>| {
            s.filter(|s| !s.is_empty())
                .map(regex::Regex::new)
                .transpose()
        };
        Ok(Self {
            include: compile(include)?,
            exclude: compile(exclude)?,
        })
    }

    /// Whether `device` is to be reported.
    pub fn accepts(&self, device: &str) -> bool {
        match (&self.include, &self.exclude) {
            (Some(inc), _) => inc.is_match(device),
            (None, Some(exc)) => !exc.is_match(device),
            (None, None) => true,
        }
    }
}

/// The pids of the compute processes holding GPUs, as the GPU collector saw
/// them in its last sample; the cloud collector signals them on a
/// disruption notice. Its `Debug` leaves the pids out, so a reload does not
/// see a changed configuration.
#[derive(Clone, Default)]
pub struct SharedPids(Arc<Mutex<Vec<u32>>>);

impl SharedPids {
    /// Replaces the list.
    pub fn set(&self, pids: Vec<u32>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = pids;
    }

    /// The current list.
    pub fn get(&self) -> Vec<u32> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl fmt::Debug for SharedPids {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedPids")
    }
}

/// One GPU as the GPU collector saw it in its last sample: what the
/// kubernetes collector needs to turn the kubelet's device ids (GPU and MIG
/// uuids, or indexes) into `gpu`, `uuid` and `gpu_instance` labels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GpuIds {
    /// NVML index (the `gpu` label).
    pub index: u32,
    /// `GPU-…` uuid.
    pub uuid: String,
    /// Model name as NVML gives it ("NVIDIA H100 80GB HBM3"), or "".
    pub name: String,
    /// Pids of the compute processes holding it.
    pub pids: Vec<u32>,
    /// Whether a compute process held it.
    pub busy: bool,
    /// Its MIG instances, when MIG is on.
    pub migs: Vec<MigIds>,
}

/// The goodput collector's name for a [`GpuIds`].
pub type GpuDevice = GpuIds;

/// One MIG instance of a [`GpuIds`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MigIds {
    /// GPU instance id (the `gpu_instance` label).
    pub gpu_instance: u32,
    /// `MIG-…` uuid.
    pub uuid: String,
    /// Whether a compute process held it.
    pub busy: bool,
}

/// The GPUs of the last GPU sample, filled by the GPU collector and read by
/// the kubernetes collector (device ids to labels) and the goodput collector
/// (a run's devices and their peak throughput). Its `Debug` leaves the GPUs out, as
/// [`SharedPids`] does.
#[derive(Clone, Default)]
pub struct SharedGpus(Arc<Mutex<Arc<Vec<GpuIds>>>>);

impl SharedGpus {
    /// Replaces the list.
    pub fn set(&self, gpus: Vec<GpuIds>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(gpus);
    }

    /// The current list (a cheap clone of a shared pointer).
    pub fn get(&self) -> Arc<Vec<GpuIds>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl fmt::Debug for SharedGpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SharedGpus")
    }
}

/// Everything a collector may need to be built: filesystem roots and the
/// collector-specific settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// Root of procfs (`--path.procfs`).
    pub procfs: PathBuf,
    /// Root of sysfs (`--path.sysfs`).
    pub sysfs: PathBuf,
    /// udev's database of device properties (`--path.udev.data`).
    pub udev_data: PathBuf,
    /// Block devices to report.
    pub disk: DeviceFilter,
    /// Network interfaces to report.
    pub network: DeviceFilter,
    /// The GPU collector's settings.
    pub gpu: gpu::GpuOptions,
    /// The cloud collector's settings.
    pub cloud: cloud::CloudOptions,
    /// GPU process pids, filled by the GPU collector.
    pub gpu_pids: SharedPids,
    /// Which processes the process collector follows.
    pub process: workload::WorkloadOptions,
    /// The kubernetes collector's settings.
    pub kubernetes: kubernetes::KubernetesOptions,
    /// GPU identities, filled by the GPU collector.
    pub gpus: SharedGpus,
    /// Which pod holds which GPU, filled by the kubernetes collector.
    pub pods: kubernetes::SharedPods,
    /// The goodput collector's settings (the event socket).
    pub goodput: goodput::GoodputOptions,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            procfs: PathBuf::from("/proc"),
            sysfs: PathBuf::from("/sys"),
            udev_data: PathBuf::from("/run/udev/data"),
            disk: DeviceFilter::new(None, Some(disk::DEFAULT_EXCLUDE)).expect("valid default"),
            network: DeviceFilter::new(None, Some(network::DEFAULT_EXCLUDE))
                .expect("valid default"),
            gpu: gpu::GpuOptions::default(),
            cloud: cloud::CloudOptions::default(),
            gpu_pids: SharedPids::default(),
            process: workload::WorkloadOptions::default(),
            kubernetes: kubernetes::KubernetesOptions::default(),
            gpus: SharedGpus::default(),
            pods: kubernetes::SharedPods::default(),
            goodput: goodput::GoodputOptions::default(),
        }
    }
}

#[derive(Debug)]
/// How the agent knows a collector: adding one means a module and an entry
/// in [`registry`], nothing else.
pub struct Spec {
    /// Name (flag and label).
    pub name: &'static str,
    /// What it collects, for `--help` and the landing page.
    pub help: &'static str,
    /// Enabled unless `--no-collector.<name>`.
    pub default_enabled: bool,
    /// Default `--collector.<name>.interval`.
    pub default_interval: Duration,
    /// Builds it, or says why it is absent here.
    pub build: fn(&Options) -> Result<Built, CollectError>,
}

const HOST_INTERVAL: Duration = Duration::from_secs(5);

/// Every collector the agent knows, in output order.
pub fn registry() -> &'static [Spec] {
    static SPECS: &[Spec] = &[
        Spec {
            name: "gpu",
            help: "NVIDIA GPUs through NVML",
            default_enabled: true,
            default_interval: Duration::from_secs(1),
            build: gpu::build,
        },
        Spec {
            name: "cpu",
            help: "CPU time per cpu and mode, from /proc/stat",
            default_enabled: true,
            default_interval: HOST_INTERVAL,
            build: cpu::build,
        },
        Spec {
            name: "memory",
            help: "memory and swap, from /proc/meminfo",
            default_enabled: true,
            default_interval: HOST_INTERVAL,
            build: memory::build,
        },
        Spec {
            name: "pressure",
            help: "CPU, I/O and memory stall time, from /proc/pressure",
            default_enabled: true,
            default_interval: HOST_INTERVAL,
            build: pressure::build,
        },
        Spec {
            name: "disk",
            help: "block device I/O, from /proc/diskstats",
            default_enabled: true,
            default_interval: HOST_INTERVAL,
            build: disk::build,
        },
        Spec {
            name: "network",
            help: "network interface traffic and link state, from /proc/net/dev and /sys/class/net",
            default_enabled: true,
            default_interval: HOST_INTERVAL,
            build: network::build,
        },
        Spec {
            name: "process",
            help: "the agent's own CPU time, memory, file descriptors and threads (process_*), and the GPU and matched processes' CPU, memory, I/O and perf counters (accel_process_*)",
            default_enabled: true,
            default_interval: HOST_INTERVAL,
            build: process::build,
        },
        Spec {
            name: "infiniband",
            help: "InfiniBand and RoCE port counters, from /sys/class/infiniband",
            default_enabled: true,
            default_interval: HOST_INTERVAL,
            build: infiniband::build,
        },
        Spec {
            name: "cloud",
            help: "cloud maintenance and preemption notices, from the metadata server (GCE, AWS, Azure; detected from DMI)",
            default_enabled: true,
            default_interval: Duration::from_secs(1),
            build: cloud::build,
        },
        Spec {
            name: "kubernetes",
            help: "which pod holds each GPU, from the kubelet's PodResources API (refreshed in the background)",
            default_enabled: true,
            default_interval: HOST_INTERVAL,
            build: kubernetes::build,
        },
        Spec {
            name: "goodput",
            help: "training progress events from the event socket (--events.socket): steps, phases, runtime goodput and MFU per run",
            default_enabled: true,
            default_interval: HOST_INTERVAL,
            build: goodput::build,
        },
    ];
    SPECS
}
