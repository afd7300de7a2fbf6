//! What Blackwell and the 580 drivers change in NVML's answers.
//!
//! From NVML's change log: on Blackwell `nvmlDeviceGetNvLinkErrorCounter`,
//! the per-lane CRC/ECC counters and the NVLink DL CRC/replay/recovery
//! fields answer NOT_SUPPORTED; NVLink5 reports its errors through the
//! `NVML_FI_DEV_NVLINK_COUNT_*` fields (scope = link); and
//! `nvmlDeviceGetViolationStatus` is deprecated in favour of the clock
//! event reason counter fields. The sim answers:
//!
//! - on a GPU with `architecture = "blackwell"`: NOT_SUPPORTED for
//!   `nvmlDeviceGetNvLinkErrorCounter`, `nvmlDeviceGetViolationStatus`,
//!   the legacy per-lane fields (32-59, 96-119), the DL fields (161-163) and
//!   `NVML_FI_DEV_PERF_POLICY_THERMAL` (75); the NVLink5 counters (213-222,
//!   235-250) per link;
//! - with a driver of 570 or newer (any architecture): the clock event
//!   reason counters (ns), at 251-253 in NVML 12's numbering, or at 269-271
//!   from driver 580.82 on (CUDA 13.0 Update 1 renumbered 251-273; 251-268
//!   are then power smoothing, NOT_SUPPORTED here).
//!
//! Values of the NVLink5 counters: recovery successful = the GPU's
//! `nvlink_recovery_errors` curve, failed = 0, effective errors (after FEC)
//! = `nvlink_crc_errors`, symbol errors (corrected by FEC) =
//! `nvlink_replay_errors`; the BER and FEC history fields 0.

use nvml_wrapper_sys::bindings::field_id::*;
use nvml_wrapper_sys::bindings::*;

use crate::gpu::{count, Gpu};

/// A GPU of the Blackwell generation.
pub fn is_blackwell(g: &Gpu) -> bool {
    g.spec.architecture == "blackwell"
}

/// The calls a Blackwell GPU answers NOT_SUPPORTED.
pub const UNSUPPORTED_CALLS: [&str; 2] = [
    "nvmlDeviceGetNvLinkErrorCounter",
    "nvmlDeviceGetViolationStatus",
];

/// The driver's major and minor version ("580.95.05" -> (580, 95)).
fn driver(version: &str) -> (u32, u32) {
    let mut p = version.split('.').map(|s| s.parse().unwrap_or(0));
    (p.next().unwrap_or(0), p.next().unwrap_or(0))
}

/// Where the clock event reason counters are for this driver, in the
/// order SW thermal, HW thermal, HW power brake; `None` before 570.
pub fn clock_event_fields(driver_version: &str) -> Option<[u32; 3]> {
    let (major, minor) = driver(driver_version);
    if major < 570 {
        None
    } else if major > 580 || (major == 580 && minor >= 82) {
        Some([269, 270, 271])
    } else {
        Some([
            NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN,
            NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_THERM_SLOWDOWN,
            NVML_FI_DEV_CLOCKS_EVENT_REASON_HW_POWER_BRAKE_SLOWDOWN,
        ])
    }
}

/// The answer to field `id` where this generation or driver decides it;
/// `None`: the ordinary answer.
pub fn field(
    g: &Gpu,
    driver_version: &str,
    id: u32,
    scope: u32,
    t: f64,
) -> Option<Result<u64, nvmlReturn_t>> {
    const NOT_SUPPORTED: nvmlReturn_t = nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED;
    if !g.faults.not_supported.is_empty()
        && g.faults
            .not_supported
            .contains(&format!("nvmlDeviceGetFieldValues({id})"))
    {
        return Some(Err(NOT_SUPPORTED));
    }
    if let Some(ce) = clock_event_fields(driver_version) {
        if let Some(i) = ce.iter().position(|&f| f == id) {
            // SW thermal is the thermal violation time; the sim has no
            // separate HW thermal or power brake accounting: 0.
            return Some(Ok(if i == 0 { g.violation_ns(t).1 } else { 0 }));
        }
        if (251..=273).contains(&id) {
            return Some(Err(NOT_SUPPORTED));
        }
    }
    if !is_blackwell(g) {
        return None;
    }
    let c = &g.curves;
    match id {
        32..=59 | 96..=119 | 161..=163 | NVML_FI_DEV_PERF_POLICY_THERMAL => {
            Some(Err(NOT_SUPPORTED))
        }
        NVML_FI_DEV_NVLINK_COUNT_LINK_RECOVERY_SUCCESSFUL_EVENTS
        | NVML_FI_DEV_NVLINK_COUNT_LINK_RECOVERY_FAILED_EVENTS
        | NVML_FI_DEV_NVLINK_COUNT_LINK_RECOVERY_EVENTS
        | NVML_FI_DEV_NVLINK_COUNT_EFFECTIVE_ERRORS
        | NVML_FI_DEV_NVLINK_COUNT_SYMBOL_ERRORS
        | NVML_FI_DEV_NVLINK_COUNT_EFFECTIVE_BER
        | NVML_FI_DEV_NVLINK_COUNT_SYMBOL_BER
        | 235..=250 => {
            let links = g.spec.nvlink_links;
            if links == 0 {
                return Some(Err(NOT_SUPPORTED));
            }
            if scope >= links {
                return Some(Err(nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT));
            }
            if !g.link_up(scope) {
                return Some(Ok(0));
            }
            Some(Ok(match id {
                NVML_FI_DEV_NVLINK_COUNT_LINK_RECOVERY_SUCCESSFUL_EVENTS
                | NVML_FI_DEV_NVLINK_COUNT_LINK_RECOVERY_EVENTS => count(&c.nvlink_recovery, t),
                NVML_FI_DEV_NVLINK_COUNT_EFFECTIVE_ERRORS => count(&c.nvlink_crc, t),
                NVML_FI_DEV_NVLINK_COUNT_SYMBOL_ERRORS => count(&c.nvlink_replay, t),
                _ => 0,
            }))
        }
        _ => None,
    }
}
