//! The scenario file: TOML, documented in the crate's README.md.
//!
//! A scenario lists GPU groups (`[[gpus]]`, each a model preset plus
//! overrides, repeated `count` times) and faults (`[[faults]]`, for one GPU
//! or all). Loading resolves everything up front: presets merged, curves
//! parsed, defaults derived, pids resolved, names checked, so that a typo
//! fails `nvmlInit` with a message instead of silently simulating something
//! else.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use nvml_wrapper_sys::bindings::*;
use serde::{Deserialize, Deserializer};

use crate::curve::Curve;
use crate::gpu::{Gpu, Process};

/// Where bare scenario names are looked up.
pub const SCENARIOS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios");

/// Model presets, by name; `[[gpus]] model = "<name>"` starts from one.
pub const PRESETS: &[(&str, &str)] = &[
    ("h100-sxm5-80gb", H100_SXM5_80GB),
    ("a100-sxm4-80gb", A100_SXM4_80GB),
    ("l4", L4),
    ("t4", T4),
    ("b200", B200),
];

/// A B200-like Blackwell board (HGX B200): 18 NVLink5 links; see
/// `blackwell.rs` for what the generation answers differently.
const B200: &str = r#"
name = "NVIDIA B200"
architecture = "blackwell"
cuda_compute_capability = [10, 0]
brand = "nvidia"
memory_total_mib = 183359
memory_reserved_mib = 1024
bar1_total_mib = 262144
bar1_used_mib = 5
power_limit_w = 1000
power_min_limit_w = 200
power_max_limit_w = 1000
idle_power_w = 140
busy_power_w = 920
max_clocks = { graphics = 1965, sm = 1965, memory = 3996, video = 1680 }
idle_sm_clock_mhz = 120
pcie_max_gen = 5
pcie_max_width = 16
nvlink_links = 18
nvlink_version = 5
nvlink_speed_mbps = 53125
gpm = true
mig_capable = true
fans = 0
ecc = true
row_remapping = true
idle_pstate = 0
shutdown_temp_c = 95
slowdown_temp_c = 92
max_operating_temp_c = 90
memory_max_temp_c = 95
idle_temp_c = 30
busy_temp_c = 68
vbios_version = "97.00.A5.00.01"
pci_device_id = 0x290110DE
pci_subsystem_id = 0x199910DE
serial_prefix = "1655024"
board_part_number = "692-2G525-0200-000"
inforom_version = "G525.0200.00.05"
num_cores = 18944
memory_bus_width = 8192
"#;

const H100_SXM5_80GB: &str = r#"
name = "NVIDIA H100 80GB HBM3"
architecture = "hopper"
cuda_compute_capability = [9, 0]
brand = "nvidia"
memory_total_mib = 81559
memory_reserved_mib = 545
bar1_total_mib = 131072
bar1_used_mib = 3
power_limit_w = 700
power_min_limit_w = 200
power_max_limit_w = 700
idle_power_w = 72
busy_power_w = 640
max_clocks = { graphics = 1980, sm = 1980, memory = 2619, video = 1755 }
idle_sm_clock_mhz = 345
pcie_max_gen = 5
pcie_max_width = 16
nvlink_links = 18
nvlink_version = 4
nvlink_speed_mbps = 26562
gpm = true
mig_capable = true
fans = 0
ecc = true
row_remapping = true
idle_pstate = 0
shutdown_temp_c = 92
slowdown_temp_c = 89
max_operating_temp_c = 87
memory_max_temp_c = 95
idle_temp_c = 31
busy_temp_c = 66
vbios_version = "96.00.99.00.01"
pci_device_id = 0x233010DE
pci_subsystem_id = 0x16C110DE
serial_prefix = "1654923"
board_part_number = "692-2G520-0200-000"
inforom_version = "G520.0200.00.05"
num_cores = 16896
memory_bus_width = 5120
"#;

const A100_SXM4_80GB: &str = r#"
name = "NVIDIA A100-SXM4-80GB"
architecture = "ampere"
cuda_compute_capability = [8, 0]
brand = "nvidia"
memory_total_mib = 81920
memory_reserved_mib = 637
bar1_total_mib = 131072
bar1_used_mib = 2
power_limit_w = 400
power_min_limit_w = 100
power_max_limit_w = 400
idle_power_w = 62
busy_power_w = 360
max_clocks = { graphics = 1410, sm = 1410, memory = 1593, video = 1290 }
idle_sm_clock_mhz = 210
pcie_max_gen = 4
pcie_max_width = 16
nvlink_links = 12
nvlink_version = 3
nvlink_speed_mbps = 25000
gpm = false
mig_capable = true
fans = 0
ecc = true
row_remapping = true
idle_pstate = 0
shutdown_temp_c = 92
slowdown_temp_c = 89
max_operating_temp_c = 85
memory_max_temp_c = 95
idle_temp_c = 30
busy_temp_c = 62
vbios_version = "92.00.45.00.06"
pci_device_id = 0x20B210DE
pci_subsystem_id = 0x147F10DE
serial_prefix = "1323021"
board_part_number = "692-2G506-0210-002"
inforom_version = "G506.0210.00.02"
num_cores = 6912
memory_bus_width = 5120
"#;

const L4: &str = r#"
name = "NVIDIA L4"
architecture = "ada"
cuda_compute_capability = [8, 9]
brand = "nvidia"
memory_total_mib = 23034
memory_reserved_mib = 443
bar1_total_mib = 32768
bar1_used_mib = 1
power_limit_w = 72
power_min_limit_w = 40
power_max_limit_w = 72
idle_power_w = 16
busy_power_w = 68
max_clocks = { graphics = 2040, sm = 2040, memory = 6251, video = 1770 }
idle_sm_clock_mhz = 210
pcie_max_gen = 4
pcie_max_width = 16
nvlink_links = 0
nvlink_version = 0
nvlink_speed_mbps = 0
gpm = false
mig_capable = false
fans = 0
ecc = true
row_remapping = true
idle_pstate = 8
shutdown_temp_c = 95
slowdown_temp_c = 92
max_operating_temp_c = 88
memory_max_temp_c = 95
idle_temp_c = 34
busy_temp_c = 71
vbios_version = "95.04.29.00.01"
pci_device_id = 0x27B810DE
pci_subsystem_id = 0x16CA10DE
serial_prefix = "1321523"
board_part_number = "900-2G193-0000-001"
inforom_version = "G193.0200.00.01"
num_cores = 7424
memory_bus_width = 192
"#;

const T4: &str = r#"
name = "Tesla T4"
architecture = "turing"
cuda_compute_capability = [7, 5]
brand = "tesla"
memory_total_mib = 15360
memory_reserved_mib = 255
bar1_total_mib = 256
bar1_used_mib = 2
power_limit_w = 70
power_min_limit_w = 60
power_max_limit_w = 70
idle_power_w = 9
busy_power_w = 62
max_clocks = { graphics = 1590, sm = 1590, memory = 5001, video = 1470 }
idle_sm_clock_mhz = 300
pcie_max_gen = 3
pcie_max_width = 16
nvlink_links = 0
nvlink_version = 0
nvlink_speed_mbps = 0
gpm = false
mig_capable = false
fans = 0
ecc = true
row_remapping = false
idle_pstate = 8
shutdown_temp_c = 96
slowdown_temp_c = 93
max_operating_temp_c = 87
memory_max_temp_c = 0
idle_temp_c = 33
busy_temp_c = 70
vbios_version = "90.04.96.00.A0"
pci_device_id = 0x1EB810DE
pci_subsystem_id = 0x12A210DE
serial_prefix = "1562420"
board_part_number = "900-2G183-0000-001"
inforom_version = "G183.0200.00.02"
num_cores = 2560
memory_bus_width = 256
"#;

/// A loaded scenario.
#[derive(Debug)]
pub struct Scenario {
    pub path: PathBuf,
    pub description: String,
    pub driver_version: String,
    pub nvml_version: String,
    pub cuda_driver_version: i32,
    pub init_error: Option<nvmlReturn_t>,
    /// Whether the caller counts as privileged (root): otherwise the
    /// aggregate queries on a MIG-enabled parent answer NO_PERMISSION.
    pub privileged: bool,
    pub gpus: Vec<Gpu>,
    /// Faults without a `gpu`: they also apply to calls that name no device.
    pub global: Faults,
}

/// Injected faults for one GPU (or, in [`Scenario::global`], for every call).
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// `[from, until)` windows in which every call on the GPU returns
    /// `NVML_ERROR_GPU_IS_LOST`.
    pub lost: Vec<(f64, f64)>,
    /// C function names that return `NVML_ERROR_NOT_SUPPORTED`.
    pub not_supported: BTreeSet<String>,
    /// `(at, xid)`, sorted by time.
    pub xids: Vec<(f64, u64)>,
    pub hangs: Vec<Hang>,
    /// `(from, until, clock event reason bits)`.
    pub throttle: Vec<(f64, f64, u64)>,
}

/// A call that blocks: entered in `[at, at + seconds)`, it returns at `at + seconds`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hang {
    pub call: String,
    pub at: f64,
    pub seconds: f64,
    /// Hold the library-wide lock while hanging, so every other call waits too
    /// (a wedged driver ioctl); default: only the hanging call blocks.
    #[serde(default)]
    pub blocks_all: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    #[serde(default)]
    description: String,
    #[serde(default = "default_driver")]
    driver_version: String,
    nvml_version: Option<String>,
    #[serde(default = "default_cuda")]
    cuda_driver_version: i32,
    #[serde(default)]
    seed: u64,
    init_error: Option<String>,
    #[serde(default = "yes")]
    privileged: bool,
    #[serde(default)]
    gpus: Vec<toml::Table>,
    #[serde(default)]
    faults: Vec<RawFault>,
}

fn default_driver() -> String {
    "550.54.15".into()
}

fn default_cuda() -> i32 {
    12040
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    gpu: Option<usize>,
    lost_at: Option<f64>,
    back_at: Option<f64>,
    /// The XID raised when the GPU is lost (default 79, "fallen off the bus"); 0: none.
    lost_xid: Option<u64>,
    #[serde(default)]
    not_supported: Vec<String>,
    #[serde(default)]
    xid: Vec<RawXid>,
    #[serde(default)]
    hang: Vec<Hang>,
    #[serde(default)]
    throttle: Vec<RawThrottle>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawXid {
    at: f64,
    xid: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThrottle {
    from: f64,
    until: Option<f64>,
    reasons: Vec<String>,
}

/// Max clocks in MHz.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Clocks {
    pub graphics: u32,
    pub sm: u32,
    pub memory: u32,
    pub video: u32,
}

/// One GPU's description: a preset merged with the group's overrides.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuSpec {
    pub name: String,
    pub architecture: String,
    pub cuda_compute_capability: [i32; 2],
    pub brand: String,
    pub memory_total_mib: u64,
    pub memory_reserved_mib: u64,
    pub bar1_total_mib: u64,
    pub bar1_used_mib: u64,
    pub power_limit_w: f64,
    pub power_default_limit_w: Option<f64>,
    pub power_min_limit_w: f64,
    pub power_max_limit_w: f64,
    pub idle_power_w: f64,
    pub busy_power_w: f64,
    /// A power reading at or above this fraction of the limit counts as
    /// power capping (clock event reason and violation time).
    #[serde(default = "default_power_cap_fraction")]
    pub power_cap_fraction: f64,
    pub max_clocks: Clocks,
    pub idle_sm_clock_mhz: u32,
    pub pcie_max_gen: u32,
    pub pcie_max_width: u32,
    /// Current link generation / width; default: the max.
    pub pcie_gen: Option<u32>,
    pub pcie_width: Option<u32>,
    /// Generation the link drops to while utilisation is 0 (real GPUs save power so).
    pub pcie_idle_gen: Option<u32>,
    pub nvlink_links: u32,
    pub nvlink_version: u32,
    /// Per-link speed in MB/s (NVML_FI_DEV_NVLINK_SPEED_MBPS_*).
    pub nvlink_speed_mbps: u32,
    /// Links reported inactive.
    #[serde(default)]
    pub nvlink_down: Vec<u32>,
    /// A driver that ignores scope id `UINT_MAX` (the sum over the links)
    /// on the NVLink data counter fields and answers this link's count.
    #[serde(default)]
    pub nvlink_aggregate_link: Option<u32>,
    pub gpm: bool,
    pub mig_capable: bool,
    pub fans: u32,
    pub ecc: bool,
    /// ECC mode after the next reboot; default: `ecc` (no change pending).
    #[serde(default)]
    pub ecc_pending: Option<bool>,
    /// MIG mode after the next GPU reset; default: the current mode.
    #[serde(default)]
    pub mig_pending: Option<bool>,
    pub row_remapping: bool,
    pub idle_pstate: u32,
    pub shutdown_temp_c: u32,
    pub slowdown_temp_c: u32,
    pub max_operating_temp_c: u32,
    pub memory_max_temp_c: u32,
    pub idle_temp_c: f64,
    pub busy_temp_c: f64,
    pub vbios_version: String,
    pub pci_device_id: u32,
    pub pci_subsystem_id: u32,
    pub serial_prefix: String,
    pub board_part_number: String,
    pub inforom_version: String,
    pub num_cores: u32,
    pub memory_bus_width: u32,
    /// Energy counter at t = 0, in mJ; default 1e9 * (index + 1).
    pub energy_offset_mj: Option<u64>,
    /// Only for a group of one GPU.
    pub uuid: Option<String>,
    pub serial: Option<String>,
    pub pci_bus: Option<u32>,

    // Time-varying values (see the README for units and defaults).
    #[serde(default, deserialize_with = "curve")]
    pub utilization: Option<Curve>,
    #[serde(default, deserialize_with = "curve")]
    pub memory_utilization: Option<Curve>,
    #[serde(default, deserialize_with = "curve")]
    pub memory_used_mib: Option<Curve>,
    #[serde(default, deserialize_with = "curve")]
    pub power_w: Option<Curve>,
    #[serde(default, deserialize_with = "curve")]
    pub temperature_c: Option<Curve>,
    #[serde(default, deserialize_with = "curve")]
    pub memory_temperature_c: Option<Curve>,
    #[serde(default, deserialize_with = "curve")]
    pub sm_clock_mhz: Option<Curve>,
    #[serde(default, deserialize_with = "curve")]
    pub memory_clock_mhz: Option<Curve>,
    #[serde(default, deserialize_with = "curve")]
    pub fan_percent: Option<Curve>,
    #[serde(default, deserialize_with = "curve")]
    pub pstate: Option<Curve>,
    #[serde(default, deserialize_with = "curve")]
    pub encoder_utilization: Option<Curve>,
    #[serde(default, deserialize_with = "curve")]
    pub decoder_utilization: Option<Curve>,
    #[serde(default, deserialize_with = "curve")]
    pub pcie_tx_kbps: Option<Curve>,
    #[serde(default, deserialize_with = "curve")]
    pub pcie_rx_kbps: Option<Curve>,
    #[serde(default, deserialize_with = "curve")]
    pub nvlink_tx_kibps: Option<Curve>,
    #[serde(default, deserialize_with = "curve")]
    pub nvlink_rx_kibps: Option<Curve>,
    #[serde(default, deserialize_with = "curve")]
    pub sm_active: Option<Curve>,
    #[serde(default, deserialize_with = "curve")]
    pub sm_occupancy: Option<Curve>,
    #[serde(default, deserialize_with = "curve")]
    pub tensor_active: Option<Curve>,
    #[serde(default, deserialize_with = "curve")]
    pub dram_active: Option<Curve>,
    #[serde(default, deserialize_with = "curve")]
    pub fp16_active: Option<Curve>,
    #[serde(default, deserialize_with = "curve")]
    pub fp32_active: Option<Curve>,
    #[serde(default, deserialize_with = "curve")]
    pub fp64_active: Option<Curve>,
    // Counters (curves too, so they can grow; keep them non-decreasing).
    #[serde(default, deserialize_with = "curve")]
    pub pcie_replay_errors: Option<Curve>,
    #[serde(default, deserialize_with = "curve")]
    pub ecc_corrected: Option<Curve>,
    #[serde(default, deserialize_with = "curve")]
    pub ecc_uncorrected: Option<Curve>,
    #[serde(default, deserialize_with = "curve")]
    pub ecc_corrected_aggregate: Option<Curve>,
    #[serde(default, deserialize_with = "curve")]
    pub ecc_uncorrected_aggregate: Option<Curve>,
    #[serde(default, deserialize_with = "curve")]
    pub nvlink_crc_errors: Option<Curve>,
    #[serde(default, deserialize_with = "curve")]
    pub nvlink_replay_errors: Option<Curve>,
    #[serde(default, deserialize_with = "curve")]
    pub nvlink_recovery_errors: Option<Curve>,
    #[serde(default, deserialize_with = "curve")]
    pub remapped_correctable: Option<Curve>,
    #[serde(default, deserialize_with = "curve")]
    pub remapped_uncorrectable: Option<Curve>,
    #[serde(default, deserialize_with = "curve")]
    pub remap_pending: Option<Curve>,
    #[serde(default, deserialize_with = "curve")]
    pub remap_failure: Option<Curve>,
    #[serde(default, deserialize_with = "curve")]
    pub retired_pages_sbe: Option<Curve>,
    #[serde(default, deserialize_with = "curve")]
    pub retired_pages_dbe: Option<Curve>,
    #[serde(default, deserialize_with = "curve")]
    pub retired_pages_pending: Option<Curve>,
    /// The driver's recovery action (field 230,
    /// `NVML_FI_DEV_GET_GPU_RECOVERY_ACTION`, driver 565+): 0 none, 1 GPU
    /// reset, 2 node reboot, 3 drain P2P, 4 drain and reset. Absent: the
    /// field answers NOT_SUPPORTED (an older driver).
    #[serde(default, deserialize_with = "curve")]
    pub recovery_action: Option<Curve>,
    /// NVSwitch fabric registration (`nvmlDeviceGetGpuFabricInfo`):
    /// `state` 1 not started, 2 in progress, 3 completed, and the `status`
    /// NVML code of the registration. Absent: NOT_SUPPORTED (no NVSwitch).
    #[serde(default)]
    pub fabric: Option<FabricSpec>,

    #[serde(default)]
    pub processes: Vec<ProcessSpec>,

    /// MIG instances; present (even empty): MIG mode enabled.
    #[serde(default)]
    pub mig: Option<Vec<crate::mig::MigSpec>>,
}

fn default_power_cap_fraction() -> f64 {
    0.97
}

pub(crate) fn curve<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Curve>, D::Error> {
    let v = toml::Value::deserialize(d)?;
    Curve::from_toml(&v)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// The fabric registration a GPU reports (`nvmlDeviceGetGpuFabricInfo`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FabricSpec {
    /// 1 not started, 2 in progress, 3 completed.
    pub state: u32,
    /// The registration's NVML return code (0 success).
    #[serde(default)]
    pub status: u32,
}

/// A compute process on a GPU.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSpec {
    /// A number, "self" (the process that loaded the library), "parent",
    /// "env:NAME" (a pid from an environment variable, read at init), or
    /// "N+index" (N plus the GPU's index).
    pub pid: toml::Value,
    /// What nvmlSystemGetProcessName answers; default: /proc/PID/comm.
    pub name: Option<String>,
    /// Used GPU memory; absent: NVML_VALUE_NOT_AVAILABLE.
    pub used_memory_mib: Option<u64>,
    /// SM utilisation in percent for nvmlDeviceGetProcessUtilization;
    /// default: the GPU's utilisation shared equally.
    #[serde(default, deserialize_with = "curve")]
    pub sm_util: Option<Curve>,
    /// Present from / until (seconds); default: always.
    pub from: Option<f64>,
    pub until: Option<f64>,
}

/// Resolves `NVML_SIM_SCENARIO`: a path, or a bare name looked up as
/// `<crate>/scenarios/<name>.toml`.
pub fn resolve_path(value: &str) -> PathBuf {
    let p = Path::new(value);
    if value.contains('/') || value.ends_with(".toml") || p.exists() {
        p.to_path_buf()
    } else {
        Path::new(SCENARIOS_DIR).join(format!("{value}.toml"))
    }
}

/// Loads and resolves a scenario file.
pub fn load(path: &Path) -> Result<Scenario, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read scenario {}: {e}", path.display()))?;
    parse(&text, path).map_err(|e| format!("scenario {}: {e}", path.display()))
}

/// Parses scenario text (`path` is only recorded).
pub fn parse(text: &str, path: &Path) -> Result<Scenario, String> {
    let raw: RawScenario = toml::from_str(text).map_err(|e| e.to_string())?;
    let init_error = match &raw.init_error {
        Some(name) => Some(
            code_from_name(name)
                .ok_or_else(|| format!("init_error: unknown NVML error {name:?}"))?,
        ),
        None => None,
    };

    let mut gpus = Vec::new();
    for (group, table) in raw.gpus.iter().enumerate() {
        let mut table = table.clone();
        let count = match table.remove("count") {
            None => 1,
            Some(v) => v
                .as_integer()
                .and_then(|c| usize::try_from(c).ok())
                .ok_or_else(|| format!("gpus[{group}].count must be a non-negative integer"))?,
        };
        let merged = match table.remove("model") {
            None => table,
            Some(m) => {
                let name = m
                    .as_str()
                    .ok_or_else(|| format!("gpus[{group}].model must be a string"))?;
                let mut base = preset(name).ok_or_else(|| {
                    let known: Vec<&str> = PRESETS.iter().map(|p| p.0).collect();
                    format!(
                        "gpus[{group}]: unknown model {name:?} (presets: {})",
                        known.join(", ")
                    )
                })?;
                base.extend(table);
                base
            }
        };
        let spec: GpuSpec = merged.try_into().map_err(|e| {
            // serde lists every field after an unknown one: keep the first line's point.
            let msg = e.to_string();
            let msg = msg
                .split(", expected one of")
                .next()
                .unwrap_or_default()
                .trim();
            format!("gpus[{group}]: {msg} (the README lists the keys)")
        })?;
        let mig_uuids = spec.mig.iter().flatten().any(|m| m.uuid.is_some());
        if count > 1
            && (spec.uuid.is_some() || spec.serial.is_some() || spec.pci_bus.is_some() || mig_uuids)
        {
            return Err(format!(
                "gpus[{group}]: uuid, serial, pci_bus and mig uuids need a group of one GPU \
                 (count = 1)"
            ));
        }
        check_spec(&spec).map_err(|e| format!("gpus[{group}]: {e}"))?;
        for _ in 0..count {
            let index = gpus.len();
            let processes = spec
                .processes
                .iter()
                .map(|p| Process::resolve(p, index))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("gpus[{group}].processes: {e}"))?;
            let mig = crate::mig::resolve(&spec, index, raw.seed)
                .map_err(|e| format!("gpus[{group}].{e}"))?;
            gpus.push((spec.clone(), processes, mig));
        }
    }
    if gpus.len() > crate::sim::MAX_GPUS {
        return Err(format!("at most {} GPUs", crate::sim::MAX_GPUS));
    }

    let mut per_gpu: Vec<Faults> = vec![Faults::default(); gpus.len()];
    let mut global = Faults::default();
    for (i, f) in raw.faults.iter().enumerate() {
        let resolved = resolve_fault(f).map_err(|e| format!("faults[{i}]: {e}"))?;
        match f.gpu {
            Some(g) if g >= gpus.len() => {
                return Err(format!(
                    "faults[{i}]: gpu {g} does not exist ({} GPUs)",
                    gpus.len()
                ))
            }
            Some(g) => merge(&mut per_gpu[g], &resolved),
            None => {
                for faults in &mut per_gpu {
                    merge(faults, &resolved);
                }
                merge(&mut global, &resolved);
            }
        }
    }

    let gpus = gpus
        .into_iter()
        .zip(per_gpu)
        .enumerate()
        .map(|(index, ((spec, processes, mig), faults))| {
            Gpu::new(index, raw.seed, spec, processes, mig, faults)
        })
        .collect();

    let nvml_version = raw
        .nvml_version
        .unwrap_or_else(|| format!("12.{}", raw.driver_version));
    Ok(Scenario {
        path: path.to_path_buf(),
        description: raw.description,
        driver_version: raw.driver_version,
        nvml_version,
        cuda_driver_version: raw.cuda_driver_version,
        init_error,
        privileged: raw.privileged,
        gpus,
        global,
    })
}

fn preset(name: &str) -> Option<toml::Table> {
    let key = name.to_ascii_lowercase();
    let key = match key.as_str() {
        "h100" | "h100-sxm" | "h100-sxm5" => "h100-sxm5-80gb",
        "a100" | "a100-sxm4" | "a100-80gb" => "a100-sxm4-80gb",
        other => other,
    };
    PRESETS
        .iter()
        .find(|p| p.0 == key)
        .map(|p| toml::from_str(p.1).expect("presets are valid TOML"))
}

fn check_spec(spec: &GpuSpec) -> Result<(), String> {
    architecture_code(&spec.architecture)
        .ok_or_else(|| format!("unknown architecture {:?}", spec.architecture))?;
    brand_code(&spec.brand).ok_or_else(|| format!("unknown brand {:?}", spec.brand))?;
    if spec.nvlink_links > NVML_NVLINK_MAX_LINKS {
        return Err(format!("nvlink_links is at most {NVML_NVLINK_MAX_LINKS}"));
    }
    if spec.memory_reserved_mib > spec.memory_total_mib {
        return Err("memory_reserved_mib exceeds memory_total_mib".into());
    }
    if let Some(l) = spec.nvlink_down.iter().find(|l| **l >= spec.nvlink_links) {
        return Err(format!("nvlink_down: link {l} does not exist"));
    }
    if let Some(l) = spec
        .nvlink_aggregate_link
        .filter(|l| *l >= spec.nvlink_links)
    {
        return Err(format!("nvlink_aggregate_link: link {l} does not exist"));
    }
    if spec.mig.is_some() && !spec.mig_capable {
        return Err(format!("mig: {} does not support MIG", spec.name));
    }
    if spec.mig.is_some() && !spec.processes.is_empty() {
        return Err(
            "processes: with MIG enabled, processes run inside the instances (mig[].processes)"
                .into(),
        );
    }
    for (what, s, max) in [
        ("name", &spec.name, NVML_DEVICE_NAME_V2_BUFFER_SIZE),
        (
            "vbios_version",
            &spec.vbios_version,
            NVML_DEVICE_VBIOS_VERSION_BUFFER_SIZE,
        ),
        (
            "board_part_number",
            &spec.board_part_number,
            NVML_DEVICE_PART_NUMBER_BUFFER_SIZE,
        ),
        (
            "inforom_version",
            &spec.inforom_version,
            NVML_DEVICE_INFOROM_VERSION_BUFFER_SIZE,
        ),
    ] {
        if s.len() >= max as usize {
            return Err(format!(
                "{what} is longer than NVML's buffer ({max} bytes with the NUL)"
            ));
        }
    }
    Ok(())
}

fn resolve_fault(f: &RawFault) -> Result<Faults, String> {
    let mut out = Faults::default();
    if let Some(from) = f.lost_at {
        let until = f.back_at.unwrap_or(f64::INFINITY);
        if until <= from {
            return Err("back_at must be after lost_at".into());
        }
        out.lost.push((from, until));
        let xid = f.lost_xid.unwrap_or(79);
        if xid != 0 {
            out.xids.push((from, xid));
        }
    } else if f.back_at.is_some() {
        return Err("back_at needs lost_at".into());
    }
    for name in &f.not_supported {
        // "nvmlDeviceGetFieldValues(197)": one field id answers NOT_SUPPORTED;
        // "nvmlDeviceGetFieldValues(138, all links)": only its scope UINT_MAX.
        let field = name
            .strip_prefix("nvmlDeviceGetFieldValues(")
            .and_then(|r| r.strip_suffix(')'))
            .map(|r| r.strip_suffix(", all links").unwrap_or(r));
        match field {
            Some(id) => {
                id.parse::<u32>()
                    .map_err(|_| format!("not_supported: bad field id in {name}"))?;
            }
            None => check_symbol(name)?,
        }
        out.not_supported.insert(name.clone());
    }
    out.xids.extend(f.xid.iter().map(|x| (x.at, x.xid)));
    for h in &f.hang {
        check_symbol(&h.call)?;
        if h.seconds < 0.0 {
            return Err("hang.seconds must be >= 0".into());
        }
        out.hangs.push(h.clone());
    }
    for t in &f.throttle {
        let mut bits = 0;
        for r in &t.reasons {
            bits |= throttle_bit(r).ok_or_else(|| {
                format!(
                    "unknown throttle reason {r:?} (known: {})",
                    THROTTLE_REASONS
                        .iter()
                        .map(|x| x.0)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
        }
        out.throttle
            .push((t.from, t.until.unwrap_or(f64::INFINITY), bits));
    }
    Ok(out)
}

fn merge(into: &mut Faults, from: &Faults) {
    into.lost.extend_from_slice(&from.lost);
    into.not_supported
        .extend(from.not_supported.iter().cloned());
    into.xids.extend_from_slice(&from.xids);
    into.xids.sort_by(|a, b| a.0.total_cmp(&b.0));
    into.hangs.extend_from_slice(&from.hangs);
    into.throttle.extend_from_slice(&from.throttle);
}

fn check_symbol(name: &str) -> Result<(), String> {
    let faultable = crate::ffi::EXPORTED.contains(&name)
        && !name.starts_with("nvmlSim")
        && ![
            "nvmlInit_v2",
            "nvmlInitWithFlags",
            "nvmlShutdown",
            "nvmlErrorString",
        ]
        .contains(&name);
    if faultable {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a device or system function this library exports \
             (see README: exported symbols; init faults use init_error)"
        ))
    }
}

/// Clock event (throttle) reasons by scenario name.
pub const THROTTLE_REASONS: &[(&str, u64)] = &[
    ("gpu_idle", nvmlClocksEventReasonGpuIdle as u64),
    (
        "applications_clocks_setting",
        nvmlClocksEventReasonApplicationsClocksSetting as u64,
    ),
    ("sw_power_cap", nvmlClocksEventReasonSwPowerCap as u64),
    ("hw_slowdown", nvmlClocksThrottleReasonHwSlowdown as u64),
    ("sync_boost", nvmlClocksEventReasonSyncBoost as u64),
    (
        "sw_thermal_slowdown",
        nvmlClocksEventReasonSwThermalSlowdown as u64,
    ),
    (
        "hw_thermal_slowdown",
        nvmlClocksThrottleReasonHwThermalSlowdown as u64,
    ),
    (
        "hw_power_brake_slowdown",
        nvmlClocksThrottleReasonHwPowerBrakeSlowdown as u64,
    ),
    (
        "display_clock_setting",
        nvmlClocksEventReasonDisplayClockSetting as u64,
    ),
];

fn throttle_bit(name: &str) -> Option<u64> {
    THROTTLE_REASONS.iter().find(|r| r.0 == name).map(|r| r.1)
}

pub fn architecture_code(name: &str) -> Option<u32> {
    Some(match name.to_ascii_lowercase().as_str() {
        "kepler" => NVML_DEVICE_ARCH_KEPLER,
        "maxwell" => NVML_DEVICE_ARCH_MAXWELL,
        "pascal" => NVML_DEVICE_ARCH_PASCAL,
        "volta" => NVML_DEVICE_ARCH_VOLTA,
        "turing" => NVML_DEVICE_ARCH_TURING,
        "ampere" => NVML_DEVICE_ARCH_AMPERE,
        "ada" => NVML_DEVICE_ARCH_ADA,
        "hopper" => NVML_DEVICE_ARCH_HOPPER,
        "blackwell" => NVML_DEVICE_ARCH_BLACKWELL,
        _ => return None,
    })
}

pub fn brand_code(name: &str) -> Option<u32> {
    Some(match name.to_ascii_lowercase().as_str() {
        "tesla" => nvmlBrandType_enum_NVML_BRAND_TESLA,
        "quadro" => nvmlBrandType_enum_NVML_BRAND_QUADRO,
        "geforce" => nvmlBrandType_enum_NVML_BRAND_GEFORCE,
        "nvidia" => nvmlBrandType_enum_NVML_BRAND_NVIDIA,
        "nvidia_rtx" => nvmlBrandType_enum_NVML_BRAND_NVIDIA_RTX,
        _ => return None,
    })
}

/// NVML return codes by name ("DRIVER_NOT_LOADED" or "NVML_ERROR_DRIVER_NOT_LOADED").
pub fn code_from_name(name: &str) -> Option<nvmlReturn_t> {
    let n = name.trim_start_matches("NVML_ERROR_");
    Some(match n {
        "UNINITIALIZED" => nvmlReturn_enum_NVML_ERROR_UNINITIALIZED,
        "INVALID_ARGUMENT" => nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT,
        "NOT_SUPPORTED" => nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED,
        "NO_PERMISSION" => nvmlReturn_enum_NVML_ERROR_NO_PERMISSION,
        "NOT_FOUND" => nvmlReturn_enum_NVML_ERROR_NOT_FOUND,
        "INSUFFICIENT_POWER" => nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_POWER,
        "DRIVER_NOT_LOADED" => nvmlReturn_enum_NVML_ERROR_DRIVER_NOT_LOADED,
        "TIMEOUT" => nvmlReturn_enum_NVML_ERROR_TIMEOUT,
        "IRQ_ISSUE" => nvmlReturn_enum_NVML_ERROR_IRQ_ISSUE,
        "LIBRARY_NOT_FOUND" => nvmlReturn_enum_NVML_ERROR_LIBRARY_NOT_FOUND,
        "CORRUPTED_INFOROM" => nvmlReturn_enum_NVML_ERROR_CORRUPTED_INFOROM,
        "GPU_IS_LOST" => nvmlReturn_enum_NVML_ERROR_GPU_IS_LOST,
        "RESET_REQUIRED" => nvmlReturn_enum_NVML_ERROR_RESET_REQUIRED,
        "OPERATING_SYSTEM" => nvmlReturn_enum_NVML_ERROR_OPERATING_SYSTEM,
        "LIB_RM_VERSION_MISMATCH" => nvmlReturn_enum_NVML_ERROR_LIB_RM_VERSION_MISMATCH,
        "IN_USE" => nvmlReturn_enum_NVML_ERROR_IN_USE,
        "MEMORY" => nvmlReturn_enum_NVML_ERROR_MEMORY,
        "NO_DATA" => nvmlReturn_enum_NVML_ERROR_NO_DATA,
        "UNKNOWN" => nvmlReturn_enum_NVML_ERROR_UNKNOWN,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_scenario_loads() {
        let mut n = 0;
        for entry in std::fs::read_dir(SCENARIOS_DIR).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let s = load(&path).unwrap_or_else(|e| panic!("{e}"));
                assert!(!s.gpus.is_empty(), "{}", path.display());
                assert!(!s.description.is_empty(), "{}", path.display());
                n += 1;
            }
        }
        assert!(n >= 7, "found {n} scenarios");
    }

    #[test]
    fn every_preset_parses() {
        for (name, _) in PRESETS {
            let text = format!("[[gpus]]\nmodel = \"{name}\"\n");
            parse(&text, Path::new("x")).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn typos_fail_loudly() {
        let bad = [
            "[[gpus]]\nmodel = \"h100\"\nutilisation = 3\n",
            "[[gpus]]\nmodel = \"h200\"\n",
            "[[gpus]]\nmodel = \"h100\"\n[[faults]]\ngpu = 1\nlost_at = 1\n",
            "[[gpus]]\nmodel = \"h100\"\n[[faults]]\nnot_supported = [\"nvmlDeviceGetPower\"]\n",
            "[[gpus]]\nmodel = \"h100\"\n[[faults]]\nhang = [{ call = \"nvmlFoo\", at = 1, seconds = 2 }]\n",
            "[[gpus]]\nmodel = \"h100\"\ncount = 2\nuuid = \"GPU-1\"\n",
            "[[gpus]]\nname = \"x\"\n",
            "init_error = \"NOPE\"\n",
            "[[gpus]]\nmodel = \"h100\"\n[[faults]]\nthrottle = [{ from = 1, reasons = [\"hot\"] }]\n",
            "[[gpus]]\nmodel = \"l4\"\nmig = []\n",
            "[[gpus]]\nmodel = \"h100\"\nmig = [{ profile = \"3g.20gb\" }]\n",
            "[[gpus]]\nmodel = \"h100\"\nmig = [{ profile = \"3g.40gb\", sm = 3 }]\n",
            "[[gpus]]\nmodel = \"h100\"\nmig = [{ profile = \"7g.80gb\" }, { profile = \"1g.10gb\" }]\n",
            "[[gpus]]\nmodel = \"h100\"\nmig = [{ profile = \"2g.20gb\", gpu_instance_id = 6 }]\n",
            "[[gpus]]\nmodel = \"h100\"\nmig = [{ profile = \"3g.40gb\", memory_mib = 90000 }]\n",
            "[[gpus]]\nmodel = \"h100\"\ncount = 2\nmig = [{ profile = \"3g.40gb\", uuid = \"MIG-1\" }]\n",
            "[[gpus]]\nmodel = \"h100\"\nprocesses = [{ pid = 1 }]\nmig = []\n",
        ];
        for text in bad {
            assert!(parse(text, Path::new("x")).is_err(), "accepted:\n{text}");
        }
    }

    #[test]
    fn mig_instances_get_driver_like_ids() {
        let ids = |mig: &str| -> Result<Vec<(String, u32)>, String> {
            let text = format!("[[gpus]]\nmodel = \"h100\"\nmig = [{mig}]\n");
            let s = parse(&text, Path::new("x"))?;
            Ok(s.gpus[0]
                .mig
                .iter()
                .map(|m| (m.profile.clone(), m.gpu_instance_id))
                .collect())
        };
        let p = |s: &str| format!("{{ profile = \"{s}\" }}");
        let seven = vec![p("1g.10gb"); 7].join(", ");
        let got = ids(&seven).unwrap();
        assert_eq!(
            got.iter().map(|g| g.1).collect::<Vec<_>>(),
            vec![7, 8, 9, 10, 11, 12, 13]
        );
        assert!(ids(&vec![p("1g.10gb"); 8].join(", ")).is_err(), "7 at most");
        let got = ids(&[p("3g.40gb"), p("4g.40gb")].join(", ")).unwrap();
        assert_eq!(got, vec![("4g.40gb".into(), 1), ("3g.40gb".into(), 2)]);
        let got = ids(&[p("3g.40gb"), p("2g.20gb"), p("2g.20gb")].join(", ")).unwrap();
        assert_eq!(got.iter().map(|g| g.1).collect::<Vec<_>>(), vec![2, 3, 4]);
        let got = ids(&[p("7g.80gb")].join(", ")).unwrap();
        assert_eq!(got, vec![("7g.80gb".into(), 0)]);
        let got = ids(&[p("1g.20gb"), p("2g.20gb"), p("2g.20gb"), p("2g.20gb")].join(", "));
        assert_eq!(
            got.unwrap().iter().map(|g| g.1).collect::<Vec<_>>(),
            vec![3, 4, 5, 6]
        );
        // 3 + 2 + 2 + 1 compute slices > 7.
        assert!(ids(&[p("3g.40gb"), p("2g.20gb"), p("2g.20gb"), p("1g.10gb")].join(", ")).is_err());
        assert!(
            ids("{ profile = \"3g.40gb\", gpu_instance_id = 1 }, { profile = \"4g.40gb\" }")
                .is_err()
        );
        let s = parse("[[gpus]]\nmodel = \"h100\"\nmig = []\n", Path::new("x")).unwrap();
        assert!(s.gpus[0].mig_enabled() && s.gpus[0].mig.is_empty());
        let s = parse("[[gpus]]\nmodel = \"h100\"\n", Path::new("x")).unwrap();
        assert!(!s.gpus[0].mig_enabled());
    }

    #[test]
    fn bare_names_resolve_to_the_scenarios_dir() {
        assert_eq!(
            resolve_path("gpu-lost"),
            Path::new(SCENARIOS_DIR).join("gpu-lost.toml")
        );
        assert_eq!(resolve_path("./x.toml"), Path::new("./x.toml"));
        assert_eq!(resolve_path("/a/b"), Path::new("/a/b"));
    }
}
