//! Power, energy and heat: board power and its limits, the energy counter,
//! GPU and memory temperatures, fans.

use std::ops::Range;
use std::time::{Duration, Instant};

use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::Device;

use super::sample::GpuSample;
use super::{fields, raw};
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
.doc("the board's default power limit, W; only while the enforced limit differs from it (someone lowered or raised it), or with `--collector.gpu.detail`")
.source("`nvmlDeviceGetPowerManagementDefaultLimit` (mW)")
.equivalent("`DCGM_FI_DEV_POWER_MGMT_LIMIT_DEF` (W)");

pub const ENERGY_JOULES: FamilyDef = FamilyDef::counter(
    "accel_gpu_energy_joules_total",
    "Energy used by the GPU since the driver loaded, in joules (NVIDIA: read every --collector.gpu.energy-interval, advanced by the power draw in between; AMD: read every sample).",
)
.labels(&["gpu", "uuid"])
.doc("energy used since the driver loaded, J. It restarts from 0 when the driver reloads. The driver's counter is read every `--collector.gpu.energy-interval` (30 s; one read costs 2.4 ms of CPU on an H200, more than the rest of the GPU's sample); between reads the counter advances by `accel_gpu_power_watts` × time. It never decreases: at each read it takes the driver's value, or holds where the estimate had run ahead until the driver's counter passes it (see \"Energy between reads\" below). AMD GPUs: the hwmon `energy1_input` or `gpu_metrics` energy accumulator, read every sample (a file read, not a driver round trip)")
.source("`nvmlDeviceGetTotalEnergyConsumption` (mJ), and `nvmlDeviceGetPowerUsage` between reads")
.equivalent("`DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION` (mJ)");

pub const TEMPERATURE_CELSIUS: FamilyDef = FamilyDef::gauge(
    "accel_gpu_temperature_celsius",
    "GPU temperature by sensor, in degrees Celsius.",
)
.labels(&["gpu", "uuid", "sensor"])
.doc("°C. `sensor=\"gpu\"`: the GPU die, read every sample. `sensor=\"memory\"`: HBM, left out on boards without a memory sensor; read with the counters every `--collector.gpu.counter-interval` (10 s), the last reading repeated in between (a field-values call of its own every sample would cost as much as the rest of the sample)")
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

/// Most fans reported per GPU.
const MAX_FANS: u32 = 16;

/// Power draw and limits; returns the draw in watts. The default limit
/// only while the enforced one differs from it, or with `detail`.
pub(super) fn power(g: &mut GpuSample<'_>, dev: &Device<'_>, detail: bool) -> Option<f64> {
    let watts = g
        .get("nvmlDeviceGetPowerUsage", dev.power_usage())
        .map(|p| f64::from(p) / 1000.0);
    if let Some(w) = watts {
        g.add(&POWER_WATTS, w);
    }
    let limit = g.get(
        "nvmlDeviceGetEnforcedPowerLimit",
        dev.enforced_power_limit(),
    );
    if let Some(p) = limit {
        g.add(&POWER_LIMIT_WATTS, f64::from(p) / 1000.0);
    }
    if let Some(p) = g.get(
        "nvmlDeviceGetPowerManagementDefaultLimit",
        dev.power_management_limit_default(),
    ) {
        if detail || limit != Some(p) {
            g.add(&POWER_DEFAULT_LIMIT_WATTS, f64::from(p) / 1000.0);
        }
    }
    watts
}

/// The exported energy counter: exact at each read of the driver's
/// counter, advanced by power × time between reads, never decreasing.
#[derive(Debug, Default, Clone)]
pub(super) struct Energy {
    /// The last read of the driver's counter (J) and when it was taken.
    read: Option<(Instant, f64)>,
    /// Energy estimated since that read from the power draw (J).
    since: f64,
    /// The previous power reading (W) and its time, for the trapezoid.
    power: Option<(Instant, f64)>,
    /// The value last exported.
    exported: Option<f64>,
}

impl Energy {
    /// Whether the driver's counter is due for a read.
    pub(super) fn due(&self, now: Instant, every: Duration) -> bool {
        self.read
            .map_or(true, |(t, _)| now.duration_since(t) >= every)
    }

    /// Takes this sample's readings: `exact`, the driver's counter if it
    /// was read now (J), and `watts`, the power draw; returns the value to
    /// export.
    pub(super) fn update(
        &mut self,
        now: Instant,
        exact: Option<f64>,
        watts: Option<f64>,
    ) -> Option<f64> {
        let watts = watts.filter(|w| w.is_finite() && *w >= 0.0);
        if let (Some((t0, w0)), Some(w1)) = (self.power, watts) {
            self.since += (w0 + w1) / 2.0 * now.duration_since(t0).as_secs_f64();
        }
        // Without a power reading the estimate stops until the next one.
        self.power = watts.map(|w| (now, w));
        match exact.filter(|j| j.is_finite() && *j >= 0.0) {
            Some(j) => {
                // The driver's counter went back: it was reset (a driver
                // reload), and so is ours.
                if self.read.is_some_and(|(_, prev)| j < prev) {
                    self.exported = None;
                }
                self.read = Some((now, j));
                self.since = 0.0;
            }
            None if self.read.is_none() => return None,
            None => {}
        }
        let (_, base) = self.read?;
        let value = (base + self.since).max(self.exported.unwrap_or(0.0));
        self.exported = Some(value);
        Some(value)
    }
}

/// The energy counter: the driver's every `every`, from power in between.
pub(super) fn energy(
    g: &mut GpuSample<'_>,
    dev: &Device<'_>,
    state: &mut Energy,
    watts: Option<f64>,
    every: Duration,
    now: Instant,
) {
    let exact = if state.due(now, every) {
        g.get(
            "nvmlDeviceGetTotalEnergyConsumption",
            dev.total_energy_consumption(),
        )
        .map(|mj| mj as f64 / 1000.0)
    } else {
        None
    };
    if let Some(joules) = state.update(now, exact, watts) {
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

/// Asks for the HBM temperature field, unless the board is known to
/// have no memory sensor.
pub(super) fn want_memory_temperature(
    batch: &mut fields::Batch,
    known: Option<bool>,
) -> Option<Range<usize>> {
    (known != Some(false)).then(|| batch.want(&[(raw::FI_MEMORY_TEMP, 0)]))
}

/// HBM temperature, from the batch when it was asked for (`at`), else
/// the last reading again (`last`). Boards without a memory sensor have
/// none: `known` becomes `Some(false)` and it is not asked again.
pub(super) fn memory_temperature(
    g: &mut GpuSample<'_>,
    batch: &fields::Batch,
    at: Option<Range<usize>>,
    known: &mut Option<bool>,
    last: &mut Option<f64>,
) {
    if let Some(at) = at {
        *last = None;
        match batch.get(&at).map(|v| v.first().copied()) {
            Ok(Some(Ok(t))) => {
                *known = Some(true);
                *last = Some(t);
            }
            Ok(Some(Err(raw::GPU_IS_LOST))) | Err(raw::GPU_IS_LOST) => g.lost = true,
            Ok(Some(Err(raw::NOT_SUPPORTED))) => {
                *known = Some(false);
                g.unsupported("nvmlDeviceGetFieldValues(MEMORY_TEMP)");
            }
            Ok(Some(Err(code))) | Err(code) => {
                g.get_raw::<()>("nvmlDeviceGetFieldValues(MEMORY_TEMP)", Err(code));
            }
            Ok(None) => {}
        }
    }
    if let Some(t) = *last {
        g.with(&TEMPERATURE_CELSIUS, "sensor", "memory", t);
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(t0: Instant, s: f64) -> Instant {
        t0 + Duration::from_secs_f64(s)
    }

    /// Between reads the counter advances by power × time; at a read it
    /// takes the driver's value.
    #[test]
    fn advances_by_power_and_takes_each_exact_read() {
        let t0 = Instant::now();
        let mut e = Energy::default();
        assert_eq!(
            e.update(t0, None, Some(500.0)),
            None,
            "nothing before the first read"
        );
        assert_eq!(e.update(t0, Some(1000.0), Some(500.0)), Some(1000.0));
        assert_eq!(e.update(at(t0, 1.0), None, Some(500.0)), Some(1500.0));
        // Trapezoid: 500 W then 700 W over 2 s is 1200 J.
        assert_eq!(e.update(at(t0, 3.0), None, Some(700.0)), Some(2700.0));
        assert!(!e.due(at(t0, 9.9), Duration::from_secs(10)));
        assert!(e.due(at(t0, 10.0), Duration::from_secs(10)));
        // The driver says more than the estimate: its value.
        assert_eq!(
            e.update(at(t0, 4.0), Some(3500.0), Some(700.0)),
            Some(3500.0)
        );
    }

    /// An exact read below the estimate holds the counter (never
    /// backwards) until the driver's counter passes it.
    #[test]
    fn holds_when_the_estimate_ran_ahead() {
        let t0 = Instant::now();
        let mut e = Energy::default();
        e.update(t0, Some(1000.0), Some(1000.0));
        assert_eq!(e.update(at(t0, 1.0), None, Some(1000.0)), Some(2000.0));
        // The driver says 1900: hold at 2000.
        assert_eq!(
            e.update(at(t0, 1.0), Some(1900.0), Some(1000.0)),
            Some(2000.0)
        );
        // 1900 + 50 J: still held.
        assert_eq!(e.update(at(t0, 1.05), None, Some(1000.0)), Some(2000.0));
        // 1900 + 200 J: past it.
        assert_eq!(e.update(at(t0, 1.2), None, Some(1000.0)), Some(2100.0));
    }

    /// A driver reload (its counter went back) resets the counter.
    #[test]
    fn a_driver_reload_resets_it() {
        let t0 = Instant::now();
        let mut e = Energy::default();
        e.update(t0, Some(5000.0), Some(100.0));
        assert_eq!(e.update(at(t0, 1.0), Some(10.0), Some(100.0)), Some(10.0));
    }

    proptest! {
        /// Whatever the driver and the power gauge say (garbage included),
        /// the counter never decreases between reads of a counter that
        /// does not go back, never panics, and equals the driver's value
        /// at a read where the driver is ahead of the estimate.
        #[test]
        fn never_decreases(steps in proptest::collection::vec(
            (0.0f64..5.0, proptest::option::of(0.0f64..1e7), proptest::option::of(prop_oneof![-10.0f64..2000.0, Just(f64::NAN), Just(f64::INFINITY)])),
            1..60,
        )) {
            let t0 = Instant::now();
            let mut e = Energy::default();
            let (mut t, mut prev, mut driver) = (0.0, None::<f64>, 0.0f64);
            for (dt, inc, watts) in steps {
                t += dt;
                // A driver counter that only grows.
                let exact = inc.map(|i| { driver += i / 100.0; driver });
                let v = e.update(at(t0, t), exact, watts);
                if let (Some(p), Some(v)) = (prev, v) {
                    prop_assert!(v >= p, "{v} < {p}");
                }
                if let (Some(x), Some(v)) = (exact, v) {
                    prop_assert!(v >= x);
                    if prev.map_or(true, |p| x >= p) {
                        prop_assert_eq!(v, x);
                    }
                }
                prop_assert!(v.map_or(true, f64::is_finite));
                prev = v.or(prev);
            }
        }
    }
}
