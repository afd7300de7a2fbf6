//! MIG (Multi-Instance GPU): the `mig = [...]` list of a `[[gpus]]` group,
//! resolved into MIG devices (one GPU instance with one full-size compute
//! instance each, as `nvidia-smi mig -cgi <profiles> -C` creates them).
//!
//! GPU instance ids follow the driver's placement scheme on A100/H100-class
//! GPUs (8 memory slices, 7 compute slices): a GPU instance occupies an
//! aligned run of memory slices, and its id names that run: 8 slices -> 0,
//! 4 slices -> 1 (slices 0-3) or 2 (4-7), 2 slices -> 3 to 6, 1 slice -> 7
//! to 14. Its compute slices start where its memory does and must stay
//! within the 7 that exist, which is why a 2g instance cannot sit on memory
//! slices 6-7 and a 1g.10gb not on slice 7. Instances are placed in file
//! order, each on the free placement with the highest memory slice (the
//! first `3g` gets id 2, as `nvidia-smi mig -cgi 3g...` reports), unless
//! the scenario names `gpu_instance_id`.

use serde::Deserialize;

use crate::curve::Curve;
use crate::gpu::{splitmix64, Process};
use crate::scenario::{GpuSpec, ProcessSpec};

const MIB: u64 = 1024 * 1024;

/// Compute slices of an A100/H100-class GPU (`nvmlDeviceGetMaxMigDeviceCount`
/// with one compute instance per GPU instance).
pub const COMPUTE_SLICES: u32 = 7;
/// Memory slices of an A100/H100-class GPU.
pub const MEMORY_SLICES: u32 = 8;

/// One `mig = [...]` entry: a GPU instance with one compute instance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigSpec {
    /// "<compute slices>g.<memory>gb", e.g. "3g.40gb", "1g.10gb+me".
    pub profile: String,
    /// Default: placed as the module docs describe.
    pub gpu_instance_id: Option<u32>,
    /// The instance's framebuffer; default: its share of the GPU's
    /// (total - reserved) memory by memory slices.
    pub memory_mib: Option<u64>,
    /// Only in a group of one GPU; default from the scenario's seed.
    pub uuid: Option<String>,

    #[serde(default, deserialize_with = "crate::scenario::curve")]
    pub memory_used_mib: Option<Curve>,
    #[serde(default, deserialize_with = "crate::scenario::curve")]
    pub utilization: Option<Curve>,
    #[serde(default, deserialize_with = "crate::scenario::curve")]
    pub sm_active: Option<Curve>,
    #[serde(default, deserialize_with = "crate::scenario::curve")]
    pub sm_occupancy: Option<Curve>,
    #[serde(default, deserialize_with = "crate::scenario::curve")]
    pub tensor_active: Option<Curve>,
    #[serde(default, deserialize_with = "crate::scenario::curve")]
    pub dram_active: Option<Curve>,
    #[serde(default, deserialize_with = "crate::scenario::curve")]
    pub fp16_active: Option<Curve>,
    #[serde(default, deserialize_with = "crate::scenario::curve")]
    pub fp32_active: Option<Curve>,
    #[serde(default, deserialize_with = "crate::scenario::curve")]
    pub fp64_active: Option<Curve>,

    #[serde(default)]
    pub processes: Vec<ProcessSpec>,
}

/// A resolved MIG device.
#[derive(Debug)]
pub struct MigDevice {
    /// The profile as the scenario spells it ("3g.40gb").
    pub profile: String,
    /// "<parent name> MIG <profile>".
    pub name: String,
    /// "MIG-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx".
    pub uuid: String,
    pub gpu_instance_id: u32,
    pub compute_instance_id: u32,
    pub compute_slices: u32,
    pub memory_slices: u32,
    pub memory_total_bytes: u64,
    pub mem_used_mib: Option<Curve>,
    pub processes: Vec<Process>,
    pub curves: Activity,
}

/// An instance's activity curves (GPM metrics), defaults resolved.
#[derive(Debug)]
pub struct Activity {
    pub util: Curve,
    pub sm_active: Curve,
    pub sm_occupancy: Curve,
    pub tensor_active: Curve,
    pub dram_active: Curve,
    pub fp16_active: Curve,
    pub fp32_active: Curve,
    pub fp64_active: Curve,
}

impl MigDevice {
    pub fn active_processes(&self, t: f64) -> impl Iterator<Item = &Process> {
        self.processes.iter().filter(move |p| p.active(t))
    }

    /// (total, reserved, used, free) in bytes; an instance reserves nothing.
    pub fn memory(&self, t: f64) -> (u64, u64, u64, u64) {
        let total = self.memory_total_bytes;
        let used = match &self.mem_used_mib {
            Some(c) => (c.at(t).max(0.0) * MIB as f64) as u64,
            None => self
                .active_processes(t)
                .filter_map(|p| p.used_memory_bytes)
                .sum(),
        };
        let used = used.min(total);
        (total, 0, used, total - used)
    }

    /// A GPM metric of this instance averaged over `[a, b]`, or None for the
    /// metrics that are GPU-wide (PCIe, NVLink).
    pub fn gpm_metric(&self, id: u32, a: f64, b: f64) -> Option<f64> {
        let c = &self.curves;
        let pct_mean = |curve: &Curve| curve.mean(a, b).clamp(0.0, 100.0);
        Some(match id {
            1 => pct_mean(&c.util),
            2 => pct_mean(&c.sm_active),
            3 => pct_mean(&c.sm_occupancy),
            4 => pct_mean(&c.util) * 0.05,
            5 | 7 => pct_mean(&c.tensor_active),
            6 | 9 => 0.0,
            10 => pct_mean(&c.dram_active),
            11 => pct_mean(&c.fp64_active),
            12 => pct_mean(&c.fp32_active),
            13 => pct_mean(&c.fp16_active),
            30..=37 | 40..=47 | 50 | 51 => 0.0,
            _ => return None,
        })
    }
}

/// Parses "<g>g.<M>gb" with an optional "+..."/"-..." suffix ("+me"):
/// (compute slices, memory slices). Memory slices are the profile's memory
/// over the GPU's slice size (total / 8), to the nearest allowed count.
pub fn parse_profile(profile: &str, memory_total_mib: u64) -> Result<(u32, u32), String> {
    let bad = || {
        format!(
            "MIG profile {profile:?}: expected \"<compute slices>g.<memory>gb\", e.g. \"3g.40gb\" \
             or \"1g.10gb+me\" (one compute instance per GPU instance)"
        )
    };
    let base = profile
        .split(['+', '-'])
        .next()
        .filter(|b| !b.is_empty())
        .ok_or_else(bad)?;
    let (g, mem) = base.split_once("g.").ok_or_else(bad)?;
    let g: u32 = g.parse().map_err(|_| bad())?;
    let gb: f64 = mem
        .strip_suffix("gb")
        .and_then(|m| m.parse().ok())
        .ok_or_else(bad)?;
    let allowed: &[u32] = match g {
        1 => &[1, 2],
        2 => &[2],
        3 | 4 => &[4],
        7 => &[8],
        _ => {
            return Err(format!(
                "MIG profile {profile:?}: {g} compute slices do not exist (1, 2, 3, 4 or 7)"
            ))
        }
    };
    let slice_gb = memory_total_mib as f64 / 1024.0 / f64::from(MEMORY_SLICES);
    let slices = gb / slice_gb;
    // Profiles round the memory down (3g.40gb on an 80 GB part, 3g.71gb on 141 GB).
    let m = allowed
        .iter()
        .copied()
        .find(|m| (slices / f64::from(*m) - 1.0).abs() < 0.2)
        .ok_or_else(|| {
            format!(
                "MIG profile {profile:?}: {gb} GB is not {} memory slice(s) of this GPU \
                 ({slice_gb:.1} GB each)",
                allowed
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(" or ")
            )
        })?;
    Ok((g, m))
}

/// The GPU instance id of a placement: `m` memory slices from `start`.
fn instance_id(m: u32, start: u32) -> u32 {
    match m {
        8 => 0,
        4 => 1 + start / 4,
        2 => 3 + start / 2,
        _ => 7 + start,
    }
}

/// The placement (memory slice start) of a GPU instance id of `m` slices.
fn placement(m: u32, id: u32) -> Option<u32> {
    let start = match m {
        8 => (id == 0).then_some(0)?,
        4 => id.checked_sub(1).filter(|i| *i < 2)? * 4,
        2 => id.checked_sub(3).filter(|i| *i < 4)? * 2,
        _ => id.checked_sub(7).filter(|i| *i < 8)?,
    };
    Some(start)
}

/// Slice bitmasks (memory, compute) of a placement, or None where its
/// compute slices would run past the 7 that exist.
fn occupies(g: u32, m: u32, start: u32) -> Option<(u32, u32)> {
    if start + g > COMPUTE_SLICES {
        return None;
    }
    let mask = |from: u32, n: u32| ((1u32 << n) - 1) << from;
    Some((mask(start, m), mask(start, g)))
}

/// A MIG UUID as drivers print it (the UUID has RFC 4122 version 5 bits).
fn mig_uuid(seed: u64, gpu_index: usize, gi: u32, ci: u32) -> String {
    let h1 = splitmix64(
        seed ^ 0x4d49_4700_0000_0000
            ^ ((gpu_index as u64) << 16)
            ^ (u64::from(gi) << 8)
            ^ u64::from(ci),
    );
    let h2 = splitmix64(h1);
    format!(
        "MIG-{:08x}-{:04x}-5{:03x}-{:04x}-{:012x}",
        h1 >> 32,
        (h1 >> 16) & 0xffff,
        h1 & 0xfff,
        0x8000 | ((h2 >> 48) & 0x3fff),
        h2 & 0xffff_ffff_ffff
    )
}

/// Resolves a GPU's `mig` list; the devices come back in NVML index order
/// (by GPU instance id, then compute instance id).
pub fn resolve(spec: &GpuSpec, gpu_index: usize, seed: u64) -> Result<Vec<MigDevice>, String> {
    let Some(list) = &spec.mig else {
        return Ok(Vec::new());
    };
    let usable_mib = spec.memory_total_mib - spec.memory_reserved_mib;
    let (mut mem_used, mut compute_used) = (0u32, 0u32);
    let mut total_mib = 0;
    let mut out = Vec::new();
    for (i, m) in list.iter().enumerate() {
        let err = |e: String| format!("mig[{i}]: {e}");
        let (g, slices) = parse_profile(&m.profile, spec.memory_total_mib).map_err(err)?;
        let fits = |start: u32| {
            occupies(g, slices, start)
                .filter(|(mm, cm)| mem_used & mm == 0 && compute_used & cm == 0)
        };
        let start = match m.gpu_instance_id {
            Some(id) => {
                let start = placement(slices, id).ok_or_else(|| {
                    err(format!(
                        "gpu_instance_id {id} is not a placement of a {}-memory-slice profile",
                        slices
                    ))
                })?;
                fits(start).map(|_| start).ok_or_else(|| {
                    err(format!(
                        "gpu_instance_id {id} ({}) overlaps another instance or runs past \
                         the 7 compute slices",
                        m.profile
                    ))
                })?
            }
            None => (0..MEMORY_SLICES)
                .rev()
                .filter(|s| s % slices == 0)
                .find(|s| fits(*s).is_some())
                .ok_or_else(|| {
                    err(format!(
                        "no free placement left for {} (list larger profiles first, or set \
                         gpu_instance_id)",
                        m.profile
                    ))
                })?,
        };
        let (mm, cm) = occupies(g, slices, start).expect("checked by fits");
        mem_used |= mm;
        compute_used |= cm;
        let gi = instance_id(slices, start);
        let ci = 0;

        let memory_mib = m
            .memory_mib
            .unwrap_or(usable_mib * u64::from(slices) / u64::from(MEMORY_SLICES));
        total_mib += memory_mib;
        let name = format!("{} MIG {}", spec.name, m.profile);
        if name.len() >= nvml_wrapper_sys::bindings::NVML_DEVICE_NAME_V2_BUFFER_SIZE as usize {
            return Err(err(format!(
                "the MIG device name {name:?} is too long for NVML"
            )));
        }
        let processes = m
            .processes
            .iter()
            .map(|p| Process::resolve(p, gpu_index))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err(format!("processes: {e}")))?;

        let util = m
            .utilization
            .clone()
            .or_else(|| m.sm_active.clone())
            .unwrap_or(Curve::Const(0.0));
        let per_util = |hi: f64| Curve::affine(&util, hi / 100.0, 0.0);
        let or = |c: &Option<Curve>, d: Curve| c.clone().unwrap_or(d);
        let curves = Activity {
            sm_active: or(&m.sm_active, per_util(90.0)),
            sm_occupancy: or(&m.sm_occupancy, per_util(45.0)),
            tensor_active: or(&m.tensor_active, per_util(55.0)),
            dram_active: or(&m.dram_active, per_util(50.0)),
            fp16_active: or(&m.fp16_active, per_util(35.0)),
            fp32_active: or(&m.fp32_active, per_util(12.0)),
            fp64_active: or(&m.fp64_active, Curve::Const(0.0)),
            util,
        };
        out.push(MigDevice {
            profile: m.profile.clone(),
            name,
            uuid: m
                .uuid
                .clone()
                .unwrap_or_else(|| mig_uuid(seed, gpu_index, gi, ci)),
            gpu_instance_id: gi,
            compute_instance_id: ci,
            compute_slices: g,
            memory_slices: slices,
            memory_total_bytes: memory_mib * MIB,
            mem_used_mib: m.memory_used_mib.clone(),
            processes,
            curves,
        });
    }
    if total_mib > usable_mib {
        return Err(format!(
            "the instances' memory_mib add up to {total_mib} MiB, more than the GPU's \
             {usable_mib} MiB (total - reserved)"
        ));
    }
    out.sort_by_key(|d| (d.gpu_instance_id, d.compute_instance_id));
    Ok(out)
}

/// A parent's activity curve in MIG mode: the instances' curves weighted by
/// their share of the compute slices (or, for DRAM, of the memory slices).
pub fn parent_curve(devices: &[MigDevice], pick: fn(&Activity) -> &Curve, dram: bool) -> Curve {
    Curve::Sum(
        devices
            .iter()
            .map(|d| {
                let w = if dram {
                    f64::from(d.memory_slices) / f64::from(MEMORY_SLICES)
                } else {
                    f64::from(d.compute_slices) / f64::from(COMPUTE_SLICES)
                };
                (w, pick(&d.curves).clone())
            })
            .collect(),
    )
}

/// `nvmlDeviceGetAttributes_v2` for a MIG device: (multiprocessors, copy
/// engines, decoders, encoders, JPEG, OFA), as the A100 / H100 MIG user
/// guide tables list them per profile.
pub fn attributes(architecture: &str, d: &MigDevice) -> (u32, u32, u32, u32, u32, u32) {
    let g = d.compute_slices;
    let hopper = !architecture.eq_ignore_ascii_case("ampere");
    let sms = match (hopper, g) {
        (true, 3) => 60,
        (true, 7) => 132,
        (true, g) => 16 * g,
        (false, g) => 14 * g,
    };
    let (dec, jpeg, ofa) = match (hopper, g) {
        (true, 7) => (7, 7, 1),
        (true, g) => (g, g, 0),
        (false, 1) => (0, 0, 0),
        (false, 2) => (1, 0, 0),
        (false, 3 | 4) => (2, 0, 0),
        (false, _) => (5, 1, 1),
    };
    (sms, g, dec, 0, jpeg, ofa)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_parse_to_slices() {
        let h100 = 81559;
        assert_eq!(parse_profile("3g.40gb", h100), Ok((3, 4)));
        assert_eq!(parse_profile("1g.10gb", h100), Ok((1, 1)));
        assert_eq!(parse_profile("1g.20gb", h100), Ok((1, 2)));
        assert_eq!(parse_profile("1g.10gb+me", h100), Ok((1, 1)));
        assert_eq!(parse_profile("2g.20gb", h100), Ok((2, 2)));
        assert_eq!(parse_profile("7g.80gb", h100), Ok((7, 8)));
        assert_eq!(parse_profile("3g.20gb", 40960), Ok((3, 4)));
        assert_eq!(parse_profile("3g.71gb", 143771), Ok((3, 4)));
        for bad in [
            "3g.10gb",
            "5g.40gb",
            "3g",
            "3c.40gb",
            "",
            "g.40gb",
            "1c.3g.40gb",
        ] {
            assert!(parse_profile(bad, h100).is_err(), "{bad}");
        }
    }

    #[test]
    fn placement_and_ids_round_trip() {
        for (m, starts) in [(8, vec![0]), (4, vec![0, 4]), (2, vec![0, 2, 4, 6])] {
            for s in starts {
                assert_eq!(placement(m, instance_id(m, s)), Some(s));
            }
        }
        for s in 0..8 {
            assert_eq!(placement(1, instance_id(1, s)), Some(s));
        }
        assert_eq!(placement(4, 0), None);
        assert_eq!(placement(2, 7), None);
        assert_eq!(occupies(2, 2, 6), None, "2g cannot use memory slices 6-7");
        assert_eq!(occupies(1, 1, 7), None, "1g.10gb cannot use memory slice 7");
        assert!(occupies(1, 2, 6).is_some(), "1g.20gb can");
    }

    #[test]
    fn uuids_look_like_mig_uuids() {
        let u = mig_uuid(0, 0, 2, 0);
        assert_eq!(u.len(), 40, "{u}");
        assert!(u.starts_with("MIG-"));
        assert_eq!(&u[18..19], "5");
        assert!("89ab".contains(&u[23..24]), "{u}");
        assert_ne!(u, mig_uuid(0, 0, 3, 0));
        assert_ne!(u, mig_uuid(0, 1, 2, 0));
        assert_ne!(u, mig_uuid(1, 0, 2, 0));
    }
}
