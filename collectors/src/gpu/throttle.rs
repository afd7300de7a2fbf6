//! Clocks and why they are held down: current and maximum clocks per
//! domain, the performance state, the clock event (throttle) reasons and
//! the time spent below the requested clocks per policy.

use std::ops::Range;

use nvml_wrapper::bitmasks::device::ThrottleReasons;
use nvml_wrapper::enum_wrappers::device::{Clock, PerformancePolicy};
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::Device;

use super::sample::GpuSample;
use super::{fields, raw};
use crate::FamilyDef;

pub const CLOCK_HERTZ: FamilyDef = FamilyDef::gauge(
    "accel_gpu_clock_hertz",
    "Current clock frequency by domain, in hertz.",
)
.labels(&["gpu", "uuid", "clock"])
.doc("current clock, Hz, per domain: `sm` and `memory`; `graphics` and `video` too with `--collector.gpu.detail`")
.source("`nvmlDeviceGetClockInfo(NVML_CLOCK_GRAPHICS / _SM / _MEM / _VIDEO)` (MHz)")
.equivalent("`DCGM_FI_DEV_SM_CLOCK`, `DCGM_FI_DEV_MEM_CLOCK`, `DCGM_FI_DEV_VIDEO_CLOCK` (MHz); none for `graphics`");

pub const CLOCK_MAX_HERTZ: FamilyDef = FamilyDef::gauge(
    "accel_gpu_clock_max_hertz",
    "Maximum clock frequency by domain, in hertz.",
)
.labels(&["gpu", "uuid", "clock"])
.doc("maximum clock, Hz, same domains; read once per GPU (about 2 ms a call on an H100). `clock=\"sm\"` by default, the other domains with `--collector.gpu.detail`")
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
.equivalent("`DCGM_FI_DEV_PSTATE`")
.detail();

pub const THROTTLE_REASON: FamilyDef = FamilyDef::gauge(
    "accel_gpu_throttle_reason",
    "1 while clocks are held down for this reason (clock event reasons); only the reasons in force have a series.",
)
.labels(&["gpu", "uuid", "reason"])
.doc("1 while clocks are held down for this reason; a reason not in force has no series (test with `== 1`, or `or on() vector(0)` for a 0). Reasons: `gpu_idle`, `applications_clocks_setting`, `sw_power_cap`, `hw_slowdown`, `sync_boost`, `sw_thermal_slowdown`, `hw_thermal_slowdown`, `hw_power_brake_slowdown`, `display_clock_setting` (NVML bits 0x1 to 0x100). Unknown bits are ignored")
.source("`nvmlDeviceGetCurrentClocksThrottleReasons` (the older name of `nvmlDeviceGetCurrentClocksEventReasons`, same bits)")
.equivalent("`DCGM_FI_DEV_CLOCKS_EVENT_REASONS` (`DCGM_FI_DEV_CLOCK_THROTTLE_REASONS` before DCGM 4.0): one bitmask value");

pub const THROTTLE_SECONDS: FamilyDef = FamilyDef::counter(
    "accel_gpu_throttle_seconds_total",
    "Time clocks were held below the requested level, by reason, in seconds.",
)
.labels(&["gpu", "uuid", "reason"])
.doc("seconds clocks were held below the requested level, by policy: `power`, `thermal`, `sync_boost`, `reliability`, and where the driver has the clock event reason counters (570 and newer) `hw_thermal` and `hw_power_brake`. Read every `--collector.gpu.counter-interval` (10 s); in between the last reading is repeated")
.source("the GPU's one `nvmlDeviceGetFieldValues` call of the sample: `NVML_FI_DEV_PERF_POLICY_POWER` / `_THERMAL` / `_SYNC_BOOST` / `_RELIABILITY` (ns; checked against the power cap on an H100: 1.009 s/s while `sw_power_cap` was set) and `NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN` / `_HW_THERM_SLOWDOWN` / `_HW_POWER_BRAKE_SLOWDOWN` (251-253, 269-271 from driver 580.82 on; SW thermal stands in for `thermal` where `_PERF_POLICY_THERMAL` is not supported, as on Blackwell); else `nvmlDeviceGetViolationStatus` per policy `violationTime` (ns; 0.7 ms each; deprecated in 580)")
.equivalent("`DCGM_FI_DEV_POWER_VIOLATION`, `DCGM_FI_DEV_THERMAL_VIOLATION`, `DCGM_FI_DEV_SYNC_BOOST_VIOLATION`, `DCGM_FI_DEV_RELIABILITY_VIOLATION`");

/// The clock domains: SM and memory always (dcgm-exporter's default
/// clocks), graphics and video with `--collector.gpu.detail` (graphics
/// runs with SM on data-centre GPUs; video serves the video engines).
const CLOCKS: [(Clock, &str); 2] = [(Clock::SM, "sm"), (Clock::Memory, "memory")];
const ALL_CLOCKS: [(Clock, &str); 4] = [
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

const VIOLATIONS: [(PerformancePolicy, &str); 4] = [
    (PerformancePolicy::Power, "power"),
    (PerformancePolicy::Thermal, "thermal"),
    (PerformancePolicy::SyncBoost, "sync_boost"),
    (PerformancePolicy::Reliability, "reliability"),
];

/// The violation-time fields, in NVML 12's numbering, and the reason each
/// is exported as. `thermal` appears twice: the policy field first, the
/// SW thermal clock event counter where the policy field is missing.
const VIOLATION_FIELDS: [(u32, &str); 7] = [
    (raw::FI_PERF_POLICY_POWER, "power"),
    (raw::FI_PERF_POLICY_THERMAL, "thermal"),
    (raw::FI_PERF_POLICY_SYNC_BOOST, "sync_boost"),
    (raw::FI_PERF_POLICY_RELIABILITY, "reliability"),
    (raw::FI_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN, "thermal"),
    (raw::FI_CLOCKS_EVENT_REASON_HW_THERM_SLOWDOWN, "hw_thermal"),
    (
        raw::FI_CLOCKS_EVENT_REASON_HW_POWER_BRAKE_SLOWDOWN,
        "hw_power_brake",
    ),
];

/// Violation times of one GPU between reads.
#[derive(Debug, Default, Clone)]
pub(super) struct Violations {
    /// The fields that answered at the first read (NVML 12 numbering);
    /// `None` until probed; empty: the driver has none, use
    /// `nvmlDeviceGetViolationStatus`.
    fields: Option<Vec<(u32, &'static str)>>,
    /// The policies no field answers for, read with
    /// `nvmlDeviceGetViolationStatus` (dropped when it is not supported).
    calls: Vec<(PerformancePolicy, &'static str)>,
    /// The last reading, seconds by reason.
    last: Vec<(&'static str, f64)>,
}

/// Asks for the violation fields when they are due and may work.
pub(super) fn want_violations(
    batch: &mut fields::Batch,
    state: &Violations,
    v13: bool,
) -> Option<Range<usize>> {
    let ids: Vec<(u32, u32)> = match &state.fields {
        None => VIOLATION_FIELDS
            .iter()
            .map(|f| (raw::field_id(f.0, v13), 0))
            .collect(),
        Some(f) if f.is_empty() => return None,
        Some(f) => f.iter().map(|f| (raw::field_id(f.0, v13), 0)).collect(),
    };
    Some(batch.want(&ids))
}

/// Reads the violation times when `due` (from the batch, else one call per
/// policy), and exports the last reading.
pub(super) fn violations(
    g: &mut GpuSample<'_>,
    dev: &Device<'_>,
    batch: &fields::Batch,
    at: Option<Range<usize>>,
    state: &mut Violations,
    due: bool,
) {
    if due {
        state.last.clear();
        if let Some(at) = at {
            let asked: Vec<(u32, &'static str)> = state
                .fields
                .clone()
                .unwrap_or_else(|| VIOLATION_FIELDS.to_vec());
            match batch.get(&at) {
                Ok(values) => {
                    let mut working = Vec::new();
                    for (&(id, name), v) in asked.iter().zip(values) {
                        match v {
                            Ok(ns) => {
                                working.push((id, name));
                                if !state.last.iter().any(|(n, _)| *n == name) {
                                    state.last.push((name, ns / 1e9));
                                }
                            }
                            Err(raw::GPU_IS_LOST) => g.lost = true,
                            Err(_) => {}
                        }
                    }
                    // What answered the first time is what is asked for
                    // from now on; the policies none answered for: the
                    // old call.
                    if state.fields.is_none() && !g.lost {
                        state.calls = VIOLATIONS
                            .iter()
                            .filter(|(_, n)| !working.iter().any(|w| w.1 == *n))
                            .cloned()
                            .collect();
                        state.fields = Some(working);
                    }
                }
                Err(raw::GPU_IS_LOST) => g.lost = true,
                Err(_) => {
                    state.fields = Some(Vec::new());
                    state.calls = VIOLATIONS.to_vec();
                }
            }
        }
        let mut unsupported = Vec::new();
        for &(policy, name) in &state.calls {
            match dev.violation_status(policy) {
                Err(
                    NvmlError::NotSupported
                    | NvmlError::FailedToLoadSymbol(_)
                    | NvmlError::FunctionNotFound,
                ) => {
                    g.unsupported("nvmlDeviceGetViolationStatus");
                    unsupported.push(name);
                }
                r => {
                    if let Some(v) = g.get("nvmlDeviceGetViolationStatus", r) {
                        state.last.push((name, v.violation_time as f64 / 1e9));
                    }
                }
            }
        }
        state.calls.retain(|c| !unsupported.contains(&c.1));
    }
    for (name, seconds) in state.last.clone() {
        g.with(&THROTTLE_SECONDS, "reason", name, seconds);
    }
}

/// Current clocks, and the maximum clocks kept in `max_clocks` once read.
pub(super) fn clocks(
    g: &mut GpuSample<'_>,
    dev: &Device<'_>,
    max_clocks: &mut Option<Vec<(&'static str, f64)>>,
    detail: bool,
) {
    let domains: &[(Clock, &'static str)] = if detail { &ALL_CLOCKS } else { &CLOCKS };
    for &(clock, name) in domains {
        if let Some(mhz) = g.get("nvmlDeviceGetClockInfo", dev.clock_info(clock)) {
            g.with(&CLOCK_HERTZ, "clock", name, f64::from(mhz) * 1e6);
        }
    }
    // Maximum clocks are fixed by the board: read once (each call costs
    // about 2 ms on an H100), again only after a failure.
    if max_clocks.is_none() {
        let mut max = Vec::with_capacity(domains.len());
        let mut failed = false;
        for &(clock, name) in domains {
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
    // The SM clock's maximum by default (what the panels compare the clock
    // with); the others, constant too, with detail.
    for (name, hz) in max_clocks.iter().flatten() {
        if detail || *name == "sm" {
            g.with(&CLOCK_MAX_HERTZ, "clock", name, *hz);
        }
    }
}

/// The performance state (with `detail`) and the clock event reasons.
pub(super) fn reasons(g: &mut GpuSample<'_>, dev: &Device<'_>, detail: bool) {
    if detail {
        if let Some(p) = g.get("nvmlDeviceGetPerformanceState", dev.performance_state()) {
            let p = p.as_c();
            if p < 32 {
                g.add(&PERFORMANCE_STATE, f64::from(p));
            }
        }
    }
    if let Some(r) = g.get(
        "nvmlDeviceGetCurrentClocksEventReasons",
        dev.current_throttle_reasons(),
    ) {
        // Only the reasons in force: a reason's series comes while it holds
        // the clocks down and goes when it ends (nine series a GPU at 0
        // otherwise, the largest part of them on every GPU).
        for (bit, name) in THROTTLE_REASONS {
            if !r.contains(bit) {
                continue;
            }
            if SLOWDOWNS.contains(&name) {
                g.health.slowdowns.push(name);
            }
            g.with(&THROTTLE_REASON, "reason", name, 1.0);
        }
    }
}
