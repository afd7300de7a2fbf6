//! Clocks and why they are held down: current and maximum clocks per
//! domain, the performance state, the clock event (throttle) reasons and
//! the time spent below the requested clocks per policy.

use nvml_wrapper::bitmasks::device::ThrottleReasons;
use nvml_wrapper::enum_wrappers::device::{Clock, PerformancePolicy};
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::Device;

use super::raw;
use super::sample::GpuSample;
use crate::FamilyDef;

pub const CLOCK_HERTZ: FamilyDef = FamilyDef::gauge(
    "accel_gpu_clock_hertz",
    "Current clock frequency by domain, in hertz.",
)
.labels(&["gpu", "uuid", "clock"])
.doc("current clock, Hz, per domain: `graphics`, `sm`, `memory`, `video`")
.source("`nvmlDeviceGetClockInfo(NVML_CLOCK_GRAPHICS / _SM / _MEM / _VIDEO)` (MHz)")
.equivalent("`DCGM_FI_DEV_SM_CLOCK`, `DCGM_FI_DEV_MEM_CLOCK`, `DCGM_FI_DEV_VIDEO_CLOCK` (MHz); none for `graphics`");

pub const CLOCK_MAX_HERTZ: FamilyDef = FamilyDef::gauge(
    "accel_gpu_clock_max_hertz",
    "Maximum clock frequency by domain, in hertz.",
)
.labels(&["gpu", "uuid", "clock"])
.doc("maximum clock, Hz, same domains; read once per GPU (about 2 ms a call on an H100)")
.source("`nvmlDeviceGetMaxClockInfo` (MHz)")
.equivalent(
    "`DCGM_FI_DEV_MAX_SM_CLOCK`, `DCGM_FI_DEV_MAX_MEM_CLOCK`, `DCGM_FI_DEV_MAX_VIDEO_CLOCK` (MHz)",
);

pub const PERFORMANCE_STATE: FamilyDef = FamilyDef::gauge(
    "accel_gpu_performance_state",
    "Performance state, 0 (maximum performance) to 15 (minimum).",
)
.labels(&["gpu", "uuid"])
.doc("P-state, 0 (maximum performance) to 15 (minimum). Left out when NVML says unknown (32)")
.source("`nvmlDeviceGetPerformanceState`")
.equivalent("`DCGM_FI_DEV_PSTATE`");

pub const THROTTLE_REASON: FamilyDef = FamilyDef::gauge(
    "accel_gpu_throttle_reason",
    "1 while clocks are held down for this reason (clock event reasons).",
)
.labels(&["gpu", "uuid", "reason"])
.doc("1 while clocks are held down for this reason, else 0. One series per reason: `gpu_idle`, `applications_clocks_setting`, `sw_power_cap`, `hw_slowdown`, `sync_boost`, `sw_thermal_slowdown`, `hw_thermal_slowdown`, `hw_power_brake_slowdown`, `display_clock_setting` (NVML bits 0x1 to 0x100). Unknown bits are ignored")
.source("`nvmlDeviceGetCurrentClocksThrottleReasons` (the older name of `nvmlDeviceGetCurrentClocksEventReasons`, same bits)")
.equivalent("`DCGM_FI_DEV_CLOCKS_EVENT_REASONS` (`DCGM_FI_DEV_CLOCK_THROTTLE_REASONS` before DCGM 4.0): one bitmask value");

pub const THROTTLE_SECONDS: FamilyDef = FamilyDef::counter(
    "accel_gpu_throttle_seconds_total",
    "Time clocks were held below the requested level, by reason, in seconds.",
)
.labels(&["gpu", "uuid", "reason"])
.doc("seconds clocks were held below the requested level, by policy: `power`, `thermal`, `sync_boost`, `reliability`")
.source("one `nvmlDeviceGetFieldValues` call for `NVML_FI_DEV_PERF_POLICY_POWER` / `_THERMAL` / `_SYNC_BOOST` / `_RELIABILITY` (ns; 0.5 ms on an H100, checked against the power cap: 1.009 s/s while `sw_power_cap` was set), else `nvmlDeviceGetViolationStatus` per policy `violationTime` (ns; 0.7 ms each)")
.equivalent("`DCGM_FI_DEV_POWER_VIOLATION`, `DCGM_FI_DEV_THERMAL_VIOLATION`, `DCGM_FI_DEV_SYNC_BOOST_VIOLATION`, `DCGM_FI_DEV_RELIABILITY_VIOLATION`");

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

/// The reasons that slow a GPU for a hardware or thermal cause, which the
/// health collector reports (power capping and idling are normal).
const SLOWDOWNS: [&str; 4] = [
    "hw_slowdown",
    "hw_thermal_slowdown",
    "sw_thermal_slowdown",
    "hw_power_brake_slowdown",
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

/// Current clocks, and the maximum clocks kept in `max_clocks` once read.
pub(super) fn clocks(
    g: &mut GpuSample<'_>,
    dev: &Device<'_>,
    max_clocks: &mut Option<Vec<(&'static str, f64)>>,
) {
    for (clock, name) in CLOCKS {
        if let Some(mhz) = g.get("nvmlDeviceGetClockInfo", dev.clock_info(clock)) {
            g.with(&CLOCK_HERTZ, "clock", name, f64::from(mhz) * 1e6);
        }
    }
    // Maximum clocks are fixed by the board: read once (each call costs
    // about 2 ms on an H100), again only after a failure.
    if max_clocks.is_none() {
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
            *max_clocks = Some(max);
        }
    }
    for (name, hz) in max_clocks.iter().flatten() {
        g.with(&CLOCK_MAX_HERTZ, "clock", name, *hz);
    }
}

/// The performance state and the clock event reasons.
pub(super) fn reasons(g: &mut GpuSample<'_>, dev: &Device<'_>) {
    if let Some(p) = g.get("nvmlDeviceGetPerformanceState", dev.performance_state()) {
        let p = p.as_c();
        if p < 32 {
            g.add(&PERFORMANCE_STATE, f64::from(p));
        }
    }
    if let Some(r) = g.get(
        "nvmlDeviceGetCurrentClocksEventReasons",
        dev.current_throttle_reasons(),
    ) {
        for (bit, name) in THROTTLE_REASONS {
            if r.contains(bit) && SLOWDOWNS.contains(&name) {
                g.health.slowdowns.push(name);
            }
            g.with(
                &THROTTLE_REASON,
                "reason",
                name,
                if r.contains(bit) { 1.0 } else { 0.0 },
            );
        }
    }
}

/// Violation times: the four in one field-values call (0.5 ms on an H100)
/// where the driver has the fields, else one call per policy (0.7 ms each).
pub(super) fn violations(
    g: &mut GpuSample<'_>,
    dev: &Device<'_>,
    raw: Option<&raw::Raw>,
    fields: &mut Option<bool>,
) {
    if let (Some(raw), None | Some(true)) = (raw, *fields) {
        let ids: Vec<(u32, u32)> = VIOLATIONS.iter().map(|v| (v.1, 0)).collect();
        match raw.field_values(dev, &ids) {
            Ok(values) if values.iter().all(Result::is_ok) => {
                *fields = Some(true);
                for ((_, _, name), v) in VIOLATIONS.iter().zip(values) {
                    let ns = v.unwrap_or(0.0);
                    g.with(&THROTTLE_SECONDS, "reason", name, ns / 1e9);
                }
                return;
            }
            Err(raw::GPU_IS_LOST) => {
                g.lost = true;
                return;
            }
            // Some fields missing, or the call failed: the old way, for good.
            _ => *fields = Some(false),
        }
    }
    for (policy, _, name) in VIOLATIONS {
        if let Some(v) = g.get("nvmlDeviceGetViolationStatus", dev.violation_status(policy)) {
            g.with(
                &THROTTLE_SECONDS,
                "reason",
                name,
                v.violation_time as f64 / 1e9,
            );
        }
    }
}
