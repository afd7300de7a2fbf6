//! accel-agent's collectors: one module per source, the [`Collector`] trait,
//! and the [`Sample`] a collector fills.
//!
//! No HTTP and no CLI live here. The agent builds the enabled collectors from
//! [`registry`], runs each on its own sampler thread, and serves what they
//! produce. A metric's name tells where it comes from: `accel_disk_*` is
//! [`disk`], `accel_network_*` is [`network`], and so on.

pub mod activity;
pub mod cgroup;
pub mod cloud;
pub mod cpu;
pub mod disk;
pub mod edac;
pub mod family;
pub mod filesystem;
pub mod goodput;
pub mod gpu;
pub mod grpc;
pub mod health;
pub mod http;
pub mod hwmon;
pub mod identity;
pub mod infiniband;
pub mod kubernetes;
pub mod load;
pub mod memory;
pub mod network;
pub mod options;
pub mod pressure;
pub mod process;
pub mod procfs;
mod protowire;
mod sample;
pub mod shared;
pub mod storage_probe;
#[cfg(feature = "testing")]
pub mod testing;
pub mod time;
pub mod tpu;
pub mod util;
pub mod vmstat;
pub mod workers;
pub mod workload;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use activity::Activity;
pub use family::FamilyDef;
pub use options::{CollectorOptions, NoOptions, OptionsSpec};
pub use sample::{
    encode_openmetrics, encode_text, format_value, Family, MetricType, Sample, Series,
};
pub use shared::{GpuHealth, GpuIds, GpuSnapshot, MigIds, Shared};
pub use workers::Workers;

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

impl Built {
    /// Ready with `make(dir)` when `dir` is a directory (the kernel
    /// interface the collector reads), else absent saying so.
    pub fn if_dir(dir: PathBuf, make: impl FnOnce(PathBuf) -> Box<dyn Collector>) -> Built {
        if dir.is_dir() {
            Built::Ready(make(dir))
        } else {
            Built::Absent(format!("{} is not a directory", dir.display()))
        }
    }
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

/// Declares the options struct of a collector that filters devices by name
/// with node_exporter's pair of flags, `<prefix>.device-include` and
/// `<prefix>.device-exclude` (`disk`, `network`), and its
/// [`DeviceFilter`].
macro_rules! device_filter_options {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $what:literal, $default:expr) => {
        $(#[$doc])*
        #[derive(clap::Args, Clone, Debug, PartialEq)]
        pub struct $name {
            /// Devices to report, when set (wins over the exclude).
            #[arg(
                id = concat!($prefix, ".device-include"),
                long = concat!($prefix, ".device-include"),
                value_name = "REGEX",
                help = concat!("Regexp of ", $what, " to include (overrides the exclude)."),
                value_parser = $crate::options::parse_regex
            )]
            pub device_include: Option<String>,
            /// Devices not to report.
            #[arg(
                id = concat!($prefix, ".device-exclude"),
                long = concat!($prefix, ".device-exclude"),
                value_name = "REGEX",
                help = concat!("Regexp of ", $what, " to exclude."),
                default_value = $default,
                value_parser = $crate::options::parse_regex
            )]
            pub device_exclude: String,
        }

        impl $name {
            /// The filter the flags describe.
            pub fn filter(&self) -> Result<$crate::DeviceFilter, $crate::CollectError> {
                $crate::DeviceFilter::new(self.device_include.as_deref(), Some(&self.device_exclude))
                    .map_err(|e| $crate::CollectError::parse(e.to_string()))
            }
        }
    };
}
pub(crate) use device_filter_options;

/// Filesystem roots every collector reads under (`--path.*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paths {
    /// Root of procfs (`--path.procfs`).
    pub procfs: PathBuf,
    /// Root of sysfs (`--path.sysfs`).
    pub sysfs: PathBuf,
    /// udev's database of device properties (`--path.udev.data`).
    pub udev_data: PathBuf,
    /// The host's root directory (`--path.rootfs`): `/`, or where the
    /// host's `/` is mounted when the agent runs in a container. Mount
    /// points are statfs'd, and os-release read, under it.
    pub rootfs: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Self {
            procfs: PathBuf::from("/proc"),
            sysfs: PathBuf::from("/sys"),
            udev_data: PathBuf::from("/run/udev/data"),
            rootfs: PathBuf::from("/"),
        }
    }
}

/// What a collector is built from: the paths, its own options, the shared
/// topics, and the supervisor of its background threads.
pub struct BuildContext<'a> {
    /// Filesystem roots.
    pub paths: &'a Paths,
    /// Its options, as parsed by its [`OptionsSpec`].
    pub options: &'a dyn CollectorOptions,
    /// Data collectors publish for each other.
    pub shared: &'a Shared,
    /// Starts and watches its background threads.
    pub workers: &'a Workers,
    /// Where its sample says what it is doing, for the watchdog's log line
    /// when a sample hangs.
    pub activity: &'a Activity,
    /// `--collector.<name>.detail`: its families marked
    /// [`FamilyDef::detail`] are wanted (a collector may skip the reads
    /// behind them without it; the sampler drops them either way).
    pub detail: bool,
}

impl BuildContext<'_> {
    /// The collector's options struct.
    ///
    /// # Panics
    ///
    /// If the registry pairs the collector with another options type: a
    /// wiring mistake every test that builds the collector finds.
    pub fn options<T: 'static>(&self) -> &T {
        self.options
            .as_any()
            .downcast_ref::<T>()
            .expect("the registry pairs each collector with its own options type")
    }
}

/// Builds a collector outside the agent (tests, benches): default paths
/// unless given, the options' defaults, fresh topics and workers.
pub fn build_with(
    spec: &Spec,
    paths: &Paths,
    options: &dyn CollectorOptions,
    shared: &Shared,
) -> Result<Built, CollectError> {
    let workers = Workers::new(spec.name);
    (spec.build)(&BuildContext {
        paths,
        options,
        shared,
        workers: &workers,
        activity: &Activity::default(),
        detail: false,
    })
}

/// How the agent knows a collector: adding one means a module and a line in
/// [`registry`], nothing else. Each module declares its own `SPEC`.
#[derive(Debug)]
pub struct Spec {
    /// Name (flag and label).
    pub name: &'static str,
    /// What it collects, for `--help` and the landing page.
    pub help: &'static str,
    /// Enabled unless `--no-collector.<name>`.
    pub default_enabled: bool,
    /// Default `--collector.<name>.interval`.
    pub default_interval: Duration,
    /// Its flags and their typed struct.
    pub options: OptionsSpec,
    /// What `--collector.<name>.detail` adds, for its `--help`; "" when the
    /// collector has no detail (no family marked [`FamilyDef::detail`]),
    /// and then it has no such flag.
    pub detail: &'static str,
    /// Every family it exports.
    pub families: &'static [FamilyDef],
    /// The name prefixes its families are under (`accel_disk_`).
    pub prefixes: &'static [&'static str],
    /// Families it exports outside its prefixes, declared one by one.
    pub outside: &'static [&'static str],
    /// Builds it, or says why it is absent here.
    pub build: fn(&BuildContext) -> Result<Built, CollectError>,
}

impl Spec {
    /// The declared family named `name`, if any.
    pub fn family(&self, name: &str) -> Option<&'static FamilyDef> {
        self.families.iter().find(|f| f.name == name)
    }
}

/// The default interval of the host collectors.
pub const HOST_INTERVAL: Duration = Duration::from_secs(5);

/// Every collector the agent knows, in output order: one line each.
pub fn registry() -> &'static [&'static Spec] {
    static SPECS: &[&Spec] = &[
        &gpu::SPEC,
        &cpu::SPEC,
        &memory::SPEC,
        &pressure::SPEC,
        &load::SPEC,
        &filesystem::SPEC,
        &vmstat::SPEC,
        &time::SPEC,
        &identity::SPEC,
        &hwmon::SPEC,
        &edac::SPEC,
        &disk::SPEC,
        &network::SPEC,
        &process::SPEC,
        &infiniband::SPEC,
        &cloud::SPEC,
        &kubernetes::SPEC,
        &goodput::SPEC,
        &storage_probe::SPEC,
        &tpu::SPEC,
        &health::SPEC,
    ];
    SPECS
}
