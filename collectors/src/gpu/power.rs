//! Power, energy and heat: board power and its limits, the energy counter,
//! GPU and memory temperatures, fans.

use std::time::{Duration, Instant};

use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::Device;

use super::raw;
use super::sample::GpuSample;
use crate::FamilyDef;

pub const POWER_WATTS: FamilyDef = FamilyDef::gauge(
    "accel_gpu_power_watts",
    "Power draw of the GPU board, in watts.",
)
.labels(&["gpu", "uuid"])
.doc("board power draw, W")
.source("`nvmlDeviceGetPowerUsage` (mW)")
.equivalent("`DCGM_FI_DEV_POWER_USAGE` (W)");

pub const POWER_LIMIT_WATTS: FamilyDef = FamilyDef::gauge(
    "accel_gpu_power_limit_watts",
    "Power limit the driver enforces, in watts.",
)
.labels(&["gpu", "uuid"])
.doc("power limit the driver enforces, W")
.source("`nvmlDeviceGetEnforcedPowerLimit` (mW)")
.equivalent("`DCGM_FI_DEV_ENFORCED_POWER_LIMIT` (W)");

pub const POWER_DEFAULT_LIMIT_WATTS: FamilyDef = FamilyDef::gauge(
    "accel_gpu_power_default_limit_watts",
    "Default power limit of the board, in watts.",
)
.labels(&["gpu", "uuid"])
.doc("the board's default power limit, W")
.source("`nvmlDeviceGetPowerManagementDefaultLimit` (mW)")
.equivalent("`DCGM_FI_DEV_POWER_MGMT_LIMIT_DEF` (W)");

pub const ENERGY_JOULES: FamilyDef = FamilyDef::counter(
    "accel_gpu_energy_joules_total",
    "Energy used by the GPU since the driver loaded, in joules (read at most once a second).",
)
.labels(&["gpu", "uuid"])
.doc("energy used since the driver loaded, J. It restarts from 0 when the driver reloads. Read at most once a second (every sample at the default interval): one read costs 3-5 ms of CPU on an H100, more than the rest of the GPU's sample; between reads the last reading is repeated")
.source("`nvmlDeviceGetTotalEnergyConsumption` (mJ)")
.equivalent("`DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION` (mJ)");

pub const TEMPERATURE_CELSIUS: FamilyDef = FamilyDef::gauge(
    "accel_gpu_temperature_celsius",
    "GPU temperature by sensor, in degrees Celsius.",
)
.labels(&["gpu", "uuid", "sensor"])
.doc("°C. `sensor=\"gpu\"`: the GPU die. `sensor=\"memory\"`: HBM, left out on boards without a memory sensor")
.source("`gpu`: `nvmlDeviceGetTemperature(NVML_TEMPERATURE_GPU)`. `memory`: `nvmlDeviceGetFieldValues`, field 82 `NVML_FI_DEV_MEMORY_TEMP`, scope 0")
.equivalent("`DCGM_FI_DEV_GPU_TEMP`, `DCGM_FI_DEV_MEMORY_TEMP`");

pub const FAN_SPEED_RATIO: FamilyDef = FamilyDef::gauge(
    "accel_gpu_fan_speed_ratio",
    "Intended fan speed as a fraction of its maximum (0-1), by fan.",
)
.labels(&["gpu", "uuid", "fan"])
.doc("intended speed of each fan as a fraction of its maximum. Left out on passively cooled boards (every SXM module: `nvmlDeviceGetNumFans` is 0, and asking for fan 0 there is INVALID_ARGUMENT, seen on an H100 SXM with driver 580)")
.source("`nvmlDeviceGetNumFans`, `nvmlDeviceGetFanSpeed_v2(fan)` ÷ 100")
.equivalent("`DCGM_FI_DEV_FAN_SPEED` (%)");

/// Shortest time between two reads of the energy counter.
const ENERGY_PERIOD: Duration = Duration::from_millis(990);

/// Most fans reported per GPU.
const MAX_FANS: u32 = 16;

pub(super) fn power(g: &mut GpuSample<'_>, dev: &Device<'_>) {
    if let Some(p) = g.get("nvmlDeviceGetPowerUsage", dev.power_usage()) {
        g.add(&POWER_WATTS, f64::from(p) / 1000.0);
    }
    if let Some(p) = g.get(
        "nvmlDeviceGetEnforcedPowerLimit",
        dev.enforced_power_limit(),
    ) {
        g.add(&POWER_LIMIT_WATTS, f64::from(p) / 1000.0);
    }
    if let Some(p) = g.get(
        "nvmlDeviceGetPowerManagementDefaultLimit",
        dev.power_management_limit_default(),
    ) {
        g.add(&POWER_DEFAULT_LIMIT_WATTS, f64::from(p) / 1000.0);
    }
}

/// The energy counter; `last` is the last reading (joules) and when it was
/// taken.
pub(super) fn energy(
    g: &mut GpuSample<'_>,
    dev: &Device<'_>,
    last: &mut Option<(Instant, f64)>,
    now: Instant,
) {
    // The energy counter costs 3-5 ms per read on an H100, more than the
    // rest of the sample: read at most once a second (every sample at
    // the default interval), and repeat the last reading in between.
    let due = last.map_or(true, |(t, _)| now.duration_since(t) >= ENERGY_PERIOD);
    if due {
        if let Some(e) = g.get(
            "nvmlDeviceGetTotalEnergyConsumption",
            dev.total_energy_consumption(),
        ) {
            *last = Some((now, e as f64 / 1000.0));
        }
    }
    if let Some((_, joules)) = *last {
        g.add(&ENERGY_JOULES, joules);
    }
}

pub(super) fn temperature(g: &mut GpuSample<'_>, dev: &Device<'_>) {
    if let Some(t) = g.get(
        "nvmlDeviceGetTemperature",
        dev.temperature(TemperatureSensor::Gpu),
    ) {
        g.with(&TEMPERATURE_CELSIUS, "sensor", "gpu", f64::from(t));
    }
}

/// HBM temperature, a field value (boards without a memory sensor have
/// none).
pub(super) fn memory_temperature(g: &mut GpuSample<'_>, dev: &Device<'_>, raw: Option<&raw::Raw>) {
    if let Some(raw) = raw {
        if let Some(Ok(t)) = g
            .get_raw(
                "nvmlDeviceGetFieldValues(MEMORY_TEMP)",
                raw.field_values(dev, &[(raw::FI_MEMORY_TEMP, 0)]),
            )
            .and_then(|v| v.into_iter().next())
        {
            g.with(&TEMPERATURE_CELSIUS, "sensor", "memory", t);
        }
    }
}

pub(super) fn fans(g: &mut GpuSample<'_>, dev: &Device<'_>) {
    // Passively cooled boards (every SXM module) have no fans: the count
    // is 0 and asking for fan 0 is an invalid argument, not "unsupported".
    let fans = g.get("nvmlDeviceGetNumFans", dev.num_fans()).unwrap_or(0);
    for fan in 0..fans.min(MAX_FANS) {
        if let Some(f) = g.get("nvmlDeviceGetFanSpeed_v2", dev.fan_speed(fan)) {
            g.with(
                &FAN_SPEED_RATIO,
                "fan",
                &fan.to_string(),
                f64::from(f) / 100.0,
            );
        }
    }
}
