//! One simulated GPU: identity, resolved curves, processes and faults, and
//! what each reading is at time `t`.

use std::sync::Mutex;

use nvml_wrapper_sys::bindings::*;

use crate::curve::Curve;
use crate::mig::{self, MigDevice};
use crate::scenario::{Faults, GpuSpec, ProcessSpec};

const MIB: u64 = 1024 * 1024;

/// Default PCI buses, as on an HGX 8-GPU baseboard.
const BUSES: [u32; 8] = [0x18, 0x2a, 0x3a, 0x5d, 0x9a, 0xab, 0xba, 0xdb];

/// Reasons that count as power / thermal violation time.
const POWER_REASONS: u64 =
    (nvmlClocksEventReasonSwPowerCap | nvmlClocksThrottleReasonHwPowerBrakeSlowdown) as u64;
const THERMAL_REASONS: u64 =
    (nvmlClocksEventReasonSwThermalSlowdown | nvmlClocksThrottleReasonHwThermalSlowdown) as u64;

#[derive(Debug)]
pub struct Gpu {
    pub index: usize,
    pub spec: GpuSpec,
    pub uuid: String,
    pub serial: String,
    pub pci_bus: u32,
    pub bus_id: String,
    pub bus_id_legacy: String,
    pub energy_offset_mj: f64,
    pub curves: Curves,
    pub processes: Vec<Process>,
    /// MIG devices in NVML index order (empty unless MIG is enabled).
    pub mig: Vec<MigDevice>,
    pub faults: Faults,
    violation: Mutex<Violation>,
}

/// Every time-varying value, with the defaults resolved.
#[derive(Debug)]
pub struct Curves {
    pub util: Curve,
    pub mem_util: Curve,
    pub mem_used_mib: Option<Curve>,
    pub power_w: Curve,
    pub temp_c: Curve,
    pub mem_temp_c: Curve,
    pub sm_clock_mhz: Option<Curve>,
    pub mem_clock_mhz: Curve,
    pub fan_pct: Curve,
    pub pstate: Option<Curve>,
    pub enc_util: Curve,
    pub dec_util: Curve,
    pub pcie_tx_kbps: Curve,
    pub pcie_rx_kbps: Curve,
    pub nvlink_tx_kibps: Curve,
    pub nvlink_rx_kibps: Curve,
    pub sm_active: Curve,
    pub sm_occupancy: Curve,
    pub tensor_active: Curve,
    pub dram_active: Curve,
    pub fp16_active: Curve,
    pub fp32_active: Curve,
    pub fp64_active: Curve,
    pub pcie_replay: Curve,
    pub ecc_sbe: Curve,
    pub ecc_dbe: Curve,
    pub ecc_sbe_agg: Curve,
    pub ecc_dbe_agg: Curve,
    pub nvlink_crc: Curve,
    pub nvlink_replay: Curve,
    pub nvlink_recovery: Curve,
    pub remap_cor: Curve,
    pub remap_unc: Curve,
    pub remap_pending: Curve,
    pub remap_failure: Curve,
    pub retired_sbe: Curve,
    pub retired_dbe: Curve,
    pub retired_pending: Curve,
}

#[derive(Debug, Clone)]
pub struct Process {
    pub pid: u32,
    pub name: Option<String>,
    pub used_memory_bytes: Option<u64>,
    pub sm_util: Option<Curve>,
    pub from: f64,
    pub until: f64,
}

impl Process {
    pub fn resolve(spec: &ProcessSpec, gpu_index: usize) -> Result<Process, String> {
        let pid = resolve_pid(&spec.pid, gpu_index)?;
        Ok(Process {
            pid,
            name: spec.name.clone(),
            used_memory_bytes: spec.used_memory_mib.map(|m| m * MIB),
            sm_util: spec.sm_util.clone(),
            from: spec.from.unwrap_or(f64::NEG_INFINITY),
            until: spec.until.unwrap_or(f64::INFINITY),
        })
    }

    pub fn active(&self, t: f64) -> bool {
        self.from <= t && t < self.until
    }
}

fn resolve_pid(v: &toml::Value, gpu_index: usize) -> Result<u32, String> {
    let bad = || format!("pid {v:?}: a number, \"self\", \"parent\", \"env:NAME\" or \"N+index\"");
    if let Some(n) = v.as_integer() {
        return u32::try_from(n).map_err(|_| bad());
    }
    let s = v.as_str().ok_or_else(bad)?;
    if s == "self" {
        Ok(std::process::id())
    } else if s == "parent" {
        Ok(std::os::unix::process::parent_id())
    } else if let Some(var) = s.strip_prefix("env:") {
        let value = std::env::var(var)
            .map_err(|_| format!("pid {s:?}: environment variable {var} is not set"))?;
        value
            .trim()
            .parse()
            .map_err(|_| format!("pid {s:?}: {var}={value:?} is not a pid"))
    } else if let Some(base) = s.strip_suffix("+index") {
        let base: u32 = base.trim().parse().map_err(|_| bad())?;
        Ok(base + gpu_index as u32)
    } else {
        Err(bad())
    }
}

#[derive(Debug, Default)]
struct Violation {
    last_t: f64,
    power_ns: f64,
    thermal_ns: f64,
}

pub fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn or(c: &Option<Curve>, default: Curve) -> Curve {
    c.clone().unwrap_or(default)
}

impl Gpu {
    pub fn new(
        index: usize,
        seed: u64,
        spec: GpuSpec,
        processes: Vec<Process>,
        mig: Vec<MigDevice>,
        faults: Faults,
    ) -> Gpu {
        let h1 = splitmix64(seed ^ (index as u64).wrapping_mul(0x1000_0001));
        let h2 = splitmix64(h1);
        let uuid = spec.uuid.clone().unwrap_or_else(|| {
            format!(
                "GPU-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                h1 >> 32,
                (h1 >> 16) & 0xffff,
                h1 & 0xffff,
                h2 >> 48,
                h2 & 0xffff_ffff_ffff
            )
        });
        let serial = spec.serial.clone().unwrap_or_else(|| {
            format!(
                "{}{:06}",
                spec.serial_prefix,
                (seed.wrapping_mul(1000) + index as u64) % 1_000_000
            )
        });
        let pci_bus = spec
            .pci_bus
            .unwrap_or_else(|| BUSES.get(index).copied().unwrap_or(0xe0 + index as u32));
        let bus_id = format!("00000000:{pci_bus:02X}:00.0");
        let bus_id_legacy = format!("0000:{pci_bus:02X}:00.0");
        let energy_offset_mj = spec
            .energy_offset_mj
            .map_or(1e9 * (index as f64 + 1.0), |e| e as f64);

        let s = &spec;
        // With MIG enabled, the GPU-wide activity defaults to the instances'
        // activity weighted by their compute (DRAM: memory) slices.
        let mig_on = s.mig.is_some();
        let act = |key: &Option<Curve>, pick: fn(&mig::Activity) -> &Curve, dram: bool| {
            key.clone()
                .or_else(|| mig_on.then(|| mig::parent_curve(&mig, pick, dram)))
        };
        let util = act(&s.utilization, |a| &a.util, false).unwrap_or(Curve::Const(0.0));
        let per_util = |lo: f64, hi: f64| Curve::affine(&util, (hi - lo) / 100.0, lo);
        let temp_c = or(&s.temperature_c, per_util(s.idle_temp_c, s.busy_temp_c));
        // Default NVLink traffic: 30 % of the line rate at full utilisation.
        // MIG mode has no NVLink peer traffic (no P2P between instances).
        let link_kibps = f64::from(s.nvlink_speed_mbps) * 1e6 / 1024.0 * 0.3;
        let link_default = if mig_on {
            Curve::Const(0.0)
        } else {
            per_util(0.0, link_kibps)
        };
        let curves = Curves {
            mem_util: or(&s.memory_utilization, per_util(0.0, 60.0)),
            mem_used_mib: s.memory_used_mib.clone(),
            power_w: or(&s.power_w, per_util(s.idle_power_w, s.busy_power_w)),
            mem_temp_c: or(&s.memory_temperature_c, Curve::affine(&temp_c, 1.0, 4.0)),
            temp_c,
            sm_clock_mhz: s.sm_clock_mhz.clone(),
            mem_clock_mhz: or(
                &s.memory_clock_mhz,
                Curve::Const(s.max_clocks.memory.into()),
            ),
            fan_pct: or(&s.fan_percent, per_util(30.0, 70.0)),
            pstate: s.pstate.clone(),
            enc_util: or(&s.encoder_utilization, Curve::Const(0.0)),
            dec_util: or(&s.decoder_utilization, Curve::Const(0.0)),
            pcie_tx_kbps: or(&s.pcie_tx_kbps, per_util(20_000.0, 500_000.0)),
            pcie_rx_kbps: or(&s.pcie_rx_kbps, per_util(50_000.0, 2_000_000.0)),
            nvlink_tx_kibps: or(&s.nvlink_tx_kibps, link_default.clone()),
            nvlink_rx_kibps: or(&s.nvlink_rx_kibps, link_default),
            sm_active: or(
                &act(&s.sm_active, |a| &a.sm_active, false),
                per_util(0.0, 90.0),
            ),
            sm_occupancy: or(
                &act(&s.sm_occupancy, |a| &a.sm_occupancy, false),
                per_util(0.0, 45.0),
            ),
            tensor_active: or(
                &act(&s.tensor_active, |a| &a.tensor_active, false),
                per_util(0.0, 55.0),
            ),
            dram_active: or(
                &act(&s.dram_active, |a| &a.dram_active, true),
                per_util(0.0, 50.0),
            ),
            fp16_active: or(
                &act(&s.fp16_active, |a| &a.fp16_active, false),
                per_util(0.0, 35.0),
            ),
            fp32_active: or(
                &act(&s.fp32_active, |a| &a.fp32_active, false),
                per_util(0.0, 12.0),
            ),
            fp64_active: or(
                &act(&s.fp64_active, |a| &a.fp64_active, false),
                Curve::Const(0.0),
            ),
            pcie_replay: or(&s.pcie_replay_errors, Curve::Const(0.0)),
            ecc_sbe: or(&s.ecc_corrected, Curve::Const(0.0)),
            ecc_dbe: or(&s.ecc_uncorrected, Curve::Const(0.0)),
            ecc_sbe_agg: or(
                &s.ecc_corrected_aggregate,
                or(&s.ecc_corrected, Curve::Const(0.0)),
            ),
            ecc_dbe_agg: or(
                &s.ecc_uncorrected_aggregate,
                or(&s.ecc_uncorrected, Curve::Const(0.0)),
            ),
            nvlink_crc: or(&s.nvlink_crc_errors, Curve::Const(0.0)),
            nvlink_replay: or(&s.nvlink_replay_errors, Curve::Const(0.0)),
            nvlink_recovery: or(&s.nvlink_recovery_errors, Curve::Const(0.0)),
            remap_cor: or(&s.remapped_correctable, Curve::Const(0.0)),
            remap_unc: or(&s.remapped_uncorrectable, Curve::Const(0.0)),
            remap_pending: or(&s.remap_pending, Curve::Const(0.0)),
            remap_failure: or(&s.remap_failure, Curve::Const(0.0)),
            retired_sbe: or(&s.retired_pages_sbe, Curve::Const(0.0)),
            retired_dbe: or(&s.retired_pages_dbe, Curve::Const(0.0)),
            retired_pending: or(&s.retired_pages_pending, Curve::Const(0.0)),
            util,
        };
        Gpu {
            index,
            spec,
            uuid,
            serial,
            pci_bus,
            bus_id,
            bus_id_legacy,
            energy_offset_mj,
            curves,
            processes,
            mig,
            faults,
            violation: Mutex::new(Violation::default()),
        }
    }

    pub fn lost(&self, t: f64) -> bool {
        self.faults.lost.iter().any(|(a, b)| *a <= t && t < *b)
    }

    /// GPU utilisation in percent.
    pub fn util(&self, t: f64) -> u32 {
        pct(self.curves.util.at(t))
    }

    pub fn mem_util(&self, t: f64) -> u32 {
        pct(self.curves.mem_util.at(t))
    }

    pub fn active_processes(&self, t: f64) -> impl Iterator<Item = &Process> {
        self.processes.iter().filter(move |p| p.active(t))
    }

    /// MIG mode (current and pending): on when the scenario sets `mig`.
    pub fn mig_enabled(&self) -> bool {
        self.spec.mig.is_some()
    }

    /// Every process on the GPU, its own and its MIG instances'.
    pub fn all_processes(&self) -> impl Iterator<Item = &Process> {
        self.processes
            .iter()
            .chain(self.mig.iter().flat_map(|m| m.processes.iter()))
    }

    pub fn mig_by_instance(&self, gpu_instance_id: u32) -> Option<&MigDevice> {
        self.mig
            .iter()
            .find(|m| m.gpu_instance_id == gpu_instance_id)
    }

    /// Total, reserved, used and free framebuffer memory in bytes, where
    /// used excludes reserved (nvmlMemory_v2_t semantics).
    pub fn memory(&self, t: f64) -> (u64, u64, u64, u64) {
        let total = self.spec.memory_total_mib * MIB;
        let reserved = self.spec.memory_reserved_mib * MIB;
        let used = match &self.curves.mem_used_mib {
            Some(c) => (c.at(t).max(0.0) * MIB as f64) as u64,
            None if self.mig_enabled() => self.mig.iter().map(|m| m.memory(t).2).sum(),
            None => self
                .active_processes(t)
                .filter_map(|p| p.used_memory_bytes)
                .sum(),
        };
        let used = used.min(total - reserved);
        (total, reserved, used, total - reserved - used)
    }

    pub fn power_limit_mw(&self) -> u32 {
        (self.spec.power_limit_w * 1000.0) as u32
    }

    pub fn power_mw(&self, t: f64) -> u32 {
        (self.curves.power_w.at(t).max(0.0) * 1000.0) as u32
    }

    /// Total energy since "driver load" in mJ: the offset plus the exact
    /// integral of the power curve since nvmlInit.
    pub fn energy_mj(&self, t: f64) -> u64 {
        (self.energy_offset_mj + self.curves.power_w.integral(t) * 1000.0) as u64
    }

    pub fn temp_c(&self, t: f64) -> u32 {
        self.curves.temp_c.at(t).max(0.0).round() as u32
    }

    pub fn mem_temp_c(&self, t: f64) -> u32 {
        self.curves.mem_temp_c.at(t).max(0.0).round() as u32
    }

    /// Current clock event (throttle) reasons.
    pub fn throttle_reasons(&self, t: f64) -> u64 {
        let mut bits = 0u64;
        if self.curves.util.at(t) < 0.5 {
            bits |= nvmlClocksEventReasonGpuIdle as u64;
        }
        let power = self.curves.power_w.at(t);
        if power >= self.spec.power_cap_fraction * self.spec.power_limit_w {
            bits |= nvmlClocksEventReasonSwPowerCap as u64;
        }
        let temp = self.curves.temp_c.at(t);
        if temp >= f64::from(self.spec.max_operating_temp_c) {
            bits |= nvmlClocksEventReasonSwThermalSlowdown as u64;
        }
        if temp >= f64::from(self.spec.slowdown_temp_c) {
            bits |= (nvmlClocksThrottleReasonHwSlowdown | nvmlClocksThrottleReasonHwThermalSlowdown)
                as u64;
        }
        for (from, until, extra) in &self.faults.throttle {
            if *from <= t && t < *until {
                bits |= extra;
            }
        }
        bits
    }

    /// Reasons this model can report.
    pub fn supported_throttle_reasons(&self) -> u64 {
        crate::scenario::THROTTLE_REASONS
            .iter()
            .fold(0, |acc, r| acc | r.1)
    }

    /// Accumulated (power, thermal) violation time in ns, integrated from the
    /// reasons above at a fine step since the previous call.
    pub fn violation_ns(&self, t: f64) -> (u64, u64) {
        let mut v = self.violation.lock().unwrap_or_else(|e| e.into_inner());
        if t > v.last_t {
            let span = t - v.last_t;
            let step = (span / 100_000.0).max(0.01);
            let mut s = v.last_t;
            while s < t {
                let dt = step.min(t - s);
                let bits = self.throttle_reasons(s + dt / 2.0);
                if bits & POWER_REASONS != 0 {
                    v.power_ns += dt * 1e9;
                }
                if bits & THERMAL_REASONS != 0 {
                    v.thermal_ns += dt * 1e9;
                }
                s += dt;
            }
            v.last_t = t;
        }
        (v.power_ns as u64, v.thermal_ns as u64)
    }

    /// Current SM (= graphics) clock in MHz.
    pub fn sm_clock_mhz(&self, t: f64) -> u32 {
        if let Some(c) = &self.curves.sm_clock_mhz {
            return c.at(t).max(0.0) as u32;
        }
        let max = f64::from(self.spec.max_clocks.sm);
        let bits = self.throttle_reasons(t);
        let mut mhz = if self.curves.util.at(t) >= 0.5 {
            max
        } else {
            f64::from(self.spec.idle_sm_clock_mhz)
        };
        if bits & POWER_REASONS != 0 {
            mhz *= 0.92;
        }
        if bits & THERMAL_REASONS != 0 {
            mhz *= 0.85;
        }
        mhz.round() as u32
    }

    /// Current clock of an NVML clock domain in MHz.
    pub fn clock_mhz(&self, clock: u32, t: f64) -> Option<u32> {
        let c = &self.spec.max_clocks;
        Some(match clock {
            nvmlClockType_enum_NVML_CLOCK_GRAPHICS | nvmlClockType_enum_NVML_CLOCK_SM => {
                self.sm_clock_mhz(t)
            }
            nvmlClockType_enum_NVML_CLOCK_MEM => self.curves.mem_clock_mhz.at(t).max(0.0) as u32,
            nvmlClockType_enum_NVML_CLOCK_VIDEO => {
                (f64::from(c.video) * f64::from(self.sm_clock_mhz(t)) / f64::from(c.sm.max(1)))
                    .round() as u32
            }
            _ => return None,
        })
    }

    pub fn max_clock_mhz(&self, clock: u32) -> Option<u32> {
        let c = &self.spec.max_clocks;
        Some(match clock {
            nvmlClockType_enum_NVML_CLOCK_GRAPHICS => c.graphics,
            nvmlClockType_enum_NVML_CLOCK_SM => c.sm,
            nvmlClockType_enum_NVML_CLOCK_MEM => c.memory,
            nvmlClockType_enum_NVML_CLOCK_VIDEO => c.video,
            _ => return None,
        })
    }

    pub fn pstate(&self, t: f64) -> u32 {
        if let Some(c) = &self.curves.pstate {
            return (c.at(t).max(0.0) as u32).min(15);
        }
        if self.curves.util.at(t) >= 0.5 || self.all_processes().any(|p| p.active(t)) {
            0
        } else {
            self.spec.idle_pstate
        }
    }

    pub fn pcie_gen(&self, t: f64) -> u32 {
        match self.spec.pcie_idle_gen {
            Some(g) if self.curves.util.at(t) < 0.5 => g,
            _ => self.spec.pcie_gen.unwrap_or(self.spec.pcie_max_gen),
        }
    }

    pub fn pcie_width(&self) -> u32 {
        self.spec.pcie_width.unwrap_or(self.spec.pcie_max_width)
    }

    pub fn link_up(&self, link: u32) -> bool {
        link < self.spec.nvlink_links && !self.spec.nvlink_down.contains(&link)
    }

    /// Cumulative NVLink data KiB on one link (tx, rx); 0 on a down link.
    pub fn nvlink_kib(&self, link: u32, t: f64) -> (u64, u64) {
        if !self.link_up(link) {
            return (0, 0);
        }
        (
            self.curves.nvlink_tx_kibps.integral(t).max(0.0) as u64,
            self.curves.nvlink_rx_kibps.integral(t).max(0.0) as u64,
        )
    }

    /// Cumulative PCIe bytes (tx, rx), integrated from the KB/s curves.
    pub fn pcie_bytes(&self, t: f64) -> (u64, u64) {
        (
            (self.curves.pcie_tx_kbps.integral(t).max(0.0) * 1024.0) as u64,
            (self.curves.pcie_rx_kbps.integral(t).max(0.0) * 1024.0) as u64,
        )
    }

    /// Per-process SM utilisation in percent: the process's own curve, or
    /// the GPU's utilisation shared equally among active processes.
    pub fn process_sm_util(&self, p: &Process, t: f64) -> u32 {
        match &p.sm_util {
            Some(c) => pct(c.at(t)),
            None => {
                let n = self.active_processes(t).count().max(1) as f64;
                pct(self.curves.util.at(t) / n)
            }
        }
    }
}

/// A percentage, rounded and clamped to 0..=100.
pub fn pct(x: f64) -> u32 {
    x.clamp(0.0, 100.0).round() as u32
}

/// A count from a counter curve.
pub fn count(c: &Curve, t: f64) -> u64 {
    c.at(t).max(0.0).floor() as u64
}
