//! `accel_hwmon_*`: the kernel's hardware monitors (lm-sensors' source):
//! CPU and board temperatures, fans, voltages, currents and the power
//! meter, from `<sysfs>/class/hwmon/hwmon<N>/` (and its `device/`), named,
//! labelled and scaled as node_exporter 1.5.0's `hwmon` collector does:
//! `chip` from the device path (`platform_coretemp_0`), else the `name`
//! file, else `hwmon<N>`; `sensor` = `temp1`, `fan2`, ...; millidegrees,
//! millivolts, milliamps, microwatts and microjoules to base units;
//! `accel_hwmon_chip_names` and `accel_hwmon_sensor_label` give the human
//! readable names.
//!
//! On a training node a CPU near its critical temperature throttles the
//! host side of the input pipeline, and a stopped chassis fan is the first
//! sign of the GPU thermal slowdowns that follow.
//!
//! Also fan control (`pwm`), humidity, chassis intrusion, sensor faults and
//! the beep settings, each compared with node_exporter on the fixture tree.
//!
//! node_exporter derives a family from every `<type><n>_<element>` file;
//! the agent declares each family by name, so it exports the elements in
//! [`SENSORS`] and skips the others. No `/sys/class/hwmon`: absent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::options::{options, NoOptions};
use crate::util::{io_error, read_attr};
use crate::{BuildContext, Built, CollectError, Collector, FamilyDef, Sample, Spec, HOST_INTERVAL};

/// The hwmon collector's registry entry.
pub const SPEC: Spec = Spec {
    name: "hwmon",
    help: "temperatures, fans, voltages, currents and power from /sys/class/hwmon",
    default_enabled: true,
    default_interval: HOST_INTERVAL,
    options: options::<NoOptions>(),
    detail: "",
    families: FAMILIES,
    prefixes: &["accel_hwmon_"],
    outside: &[],
    build,
};

/// `accel_hwmon_chip_names`.
pub const CHIP_NAMES: FamilyDef = FamilyDef::gauge(
    "accel_hwmon_chip_names",
    "Annotation metric for human-readable chip names",
)
.labels(&["chip", "chip_name"])
.doc("always 1; `chip_name` is the chip's `name` file (`coretemp`, `nct6798`)")
.source("`/sys/class/hwmon/hwmon<N>/name`")
.equivalent("`node_hwmon_chip_names`");
/// `accel_hwmon_sensor_label`.
pub const SENSOR_LABEL: FamilyDef = FamilyDef::gauge(
    "accel_hwmon_sensor_label",
    "Label for given chip and sensor",
)
.labels(&["chip", "sensor", "label"])
.doc("always 1; the sensor's label (`Package id 0`, `Core 3`)")
.source("`/sys/class/hwmon/hwmon<N>/<sensor>_label`")
.equivalent("`node_hwmon_sensor_label`");
/// `accel_hwmon_temp_celsius`.
pub const TEMP: FamilyDef = FamilyDef::gauge(
    "accel_hwmon_temp_celsius",
    "Hardware monitor for temperature (input)",
)
.labels(&["chip", "sensor"])
.doc("temperature")
.source("`/sys/class/hwmon/hwmon<N>/temp<n>_input`")
.equivalent("`node_hwmon_temp_celsius`");
/// `accel_hwmon_temp_max_celsius`.
pub const TEMP_MAX: FamilyDef = FamilyDef::gauge(
    "accel_hwmon_temp_max_celsius",
    "Hardware monitor for temperature (max)",
)
.labels(&["chip", "sensor"])
.doc("high limit")
.source("`/sys/class/hwmon/hwmon<N>/temp<n>_max`")
.equivalent("`node_hwmon_temp_max_celsius`");
/// `accel_hwmon_temp_crit_celsius`.
pub const TEMP_CRIT: FamilyDef = FamilyDef::gauge(
    "accel_hwmon_temp_crit_celsius",
    "Hardware monitor for temperature (crit)",
)
.labels(&["chip", "sensor"])
.doc("critical limit")
.source("`/sys/class/hwmon/hwmon<N>/temp<n>_crit`")
.equivalent("`node_hwmon_temp_crit_celsius`");
/// `accel_hwmon_temp_crit_alarm_celsius`.
pub const TEMP_CRIT_ALARM: FamilyDef = FamilyDef::gauge(
    "accel_hwmon_temp_crit_alarm_celsius",
    "Hardware monitor for temperature (crit_alarm)",
)
.labels(&["chip", "sensor"])
.doc("1 while over the critical limit (node_exporter's name, `_celsius` included)")
.source("`/sys/class/hwmon/hwmon<N>/temp<n>_crit_alarm`")
.equivalent("`node_hwmon_temp_crit_alarm_celsius`");
/// `accel_hwmon_temp_alarm`.
pub const TEMP_ALARM: FamilyDef = FamilyDef::gauge(
    "accel_hwmon_temp_alarm",
    "Hardware sensor alarm status (temp)",
)
.labels(&["chip", "sensor"])
.doc("1 while the chip raises an alarm")
.source("`/sys/class/hwmon/hwmon<N>/temp<n>_alarm`")
.equivalent("`node_hwmon_temp_alarm`");
/// `accel_hwmon_fan_rpm`.
pub const FAN: FamilyDef = FamilyDef::gauge(
    "accel_hwmon_fan_rpm",
    "Hardware monitor for fan revolutions per minute (input)",
)
.labels(&["chip", "sensor"])
.doc("fan speed, rpm (0: stopped or failed)")
.source("`/sys/class/hwmon/hwmon<N>/fan<n>_input`")
.equivalent("`node_hwmon_fan_rpm`");
/// `accel_hwmon_fan_min_rpm`.
pub const FAN_MIN: FamilyDef = FamilyDef::gauge(
    "accel_hwmon_fan_min_rpm",
    "Hardware monitor for fan revolutions per minute (min)",
)
.labels(&["chip", "sensor"])
.doc("low limit, rpm")
.source("`/sys/class/hwmon/hwmon<N>/fan<n>_min`")
.equivalent("`node_hwmon_fan_min_rpm`");
/// `accel_hwmon_fan_target_rpm`.
pub const FAN_TARGET: FamilyDef = FamilyDef::gauge(
    "accel_hwmon_fan_target_rpm",
    "Hardware monitor for fan revolutions per minute (target)",
)
.labels(&["chip", "sensor"])
.doc("target speed, rpm")
.source("`/sys/class/hwmon/hwmon<N>/fan<n>_target`")
.equivalent("`node_hwmon_fan_target_rpm`");
/// `accel_hwmon_fan_alarm`.
pub const FAN_ALARM: FamilyDef = FamilyDef::gauge(
    "accel_hwmon_fan_alarm",
    "Hardware sensor alarm status (fan)",
)
.labels(&["chip", "sensor"])
.doc("1 while the chip raises an alarm")
.source("`/sys/class/hwmon/hwmon<N>/fan<n>_alarm`")
.equivalent("`node_hwmon_fan_alarm`");
/// `accel_hwmon_in_volts`.
pub const IN: FamilyDef = FamilyDef::gauge(
    "accel_hwmon_in_volts",
    "Hardware monitor for voltage (input)",
)
.labels(&["chip", "sensor"])
.doc("voltage")
.source("`/sys/class/hwmon/hwmon<N>/in<n>_input`")
.equivalent("`node_hwmon_in_volts`");
/// `accel_hwmon_in_alarm`.
pub const IN_ALARM: FamilyDef =
    FamilyDef::gauge("accel_hwmon_in_alarm", "Hardware sensor alarm status (in)")
        .labels(&["chip", "sensor"])
        .doc("1 while the chip raises an alarm")
        .source("`/sys/class/hwmon/hwmon<N>/in<n>_alarm`")
        .equivalent("`node_hwmon_in_alarm`");
/// `accel_hwmon_curr_amps`.
pub const CURR: FamilyDef = FamilyDef::gauge(
    "accel_hwmon_curr_amps",
    "Hardware monitor for current (input)",
)
.labels(&["chip", "sensor"])
.doc("current")
.source("`/sys/class/hwmon/hwmon<N>/curr<n>_input`")
.equivalent("`node_hwmon_curr_amps`");
/// `accel_hwmon_power_watt`.
pub const POWER: FamilyDef = FamilyDef::gauge(
    "accel_hwmon_power_watt",
    "Hardware monitor for power usage in watts (input)",
)
.labels(&["chip", "sensor"])
.doc("power")
.source("`/sys/class/hwmon/hwmon<N>/power<n>_input`")
.equivalent("`node_hwmon_power_watt`");
/// `accel_hwmon_power_average_watt`.
pub const POWER_AVERAGE: FamilyDef = FamilyDef::gauge(
    "accel_hwmon_power_average_watt",
    "Hardware monitor for power usage in watts (average)",
)
.labels(&["chip", "sensor"])
.doc("power averaged by the meter")
.source("`/sys/class/hwmon/hwmon<N>/power<n>_average`")
.equivalent("`node_hwmon_power_average_watt`");
/// `accel_hwmon_power_cap_watt`.
pub const POWER_CAP: FamilyDef = FamilyDef::gauge(
    "accel_hwmon_power_cap_watt",
    "Hardware monitor for power usage in watts (cap)",
)
.labels(&["chip", "sensor"])
.doc("power cap")
.source("`/sys/class/hwmon/hwmon<N>/power<n>_cap`")
.equivalent("`node_hwmon_power_cap_watt`");
/// `accel_hwmon_power_average_interval_seconds`.
pub const POWER_AVERAGE_INTERVAL: FamilyDef = FamilyDef::gauge(
    "accel_hwmon_power_average_interval_seconds",
    "Hardware monitor power usage update interval (average_interval)",
)
.labels(&["chip", "sensor"])
.doc("averaging interval of the meter")
.source("`/sys/class/hwmon/hwmon<N>/power<n>_average_interval`")
.equivalent("`node_hwmon_power_average_interval_seconds`");
/// `accel_hwmon_energy_joule_total`.
pub const ENERGY: FamilyDef = FamilyDef::counter(
    "accel_hwmon_energy_joule_total",
    "Hardware monitor for joules used so far (input)",
)
.labels(&["chip", "sensor"])
.doc("energy used since the meter started")
.source("`/sys/class/hwmon/hwmon<N>/energy<n>_input`")
.equivalent("`node_hwmon_energy_joule_total`");

/// `accel_hwmon_pwm`.
pub const PWM: FamilyDef = FamilyDef::gauge("accel_hwmon_pwm", "Hardware monitor pwm element ")
    .labels(&["chip", "sensor"])
    .doc("fan PWM duty cycle as the chip reports it (0-255); node_exporter's name and help, raw value")
    .source("`/sys/class/hwmon/hwmon<N>/pwm<n>`")
    .equivalent("`node_hwmon_pwm`");
/// `accel_hwmon_pwm_enable`.
pub const PWM_ENABLE: FamilyDef = FamilyDef::gauge(
    "accel_hwmon_pwm_enable",
    "Hardware monitor pwm element enable",
)
.labels(&["chip", "sensor"])
.doc("fan control mode: 0 full speed, 1 manual, 2 and up automatic (chip-specific)")
.source("`/sys/class/hwmon/hwmon<N>/pwm<n>_enable`")
.equivalent("`node_hwmon_pwm_enable`");
/// `accel_hwmon_pwm_mode`.
pub const PWM_MODE: FamilyDef =
    FamilyDef::gauge("accel_hwmon_pwm_mode", "Hardware monitor pwm element mode")
        .labels(&["chip", "sensor"])
        .doc("0 DC (voltage) control, 1 PWM control")
        .source("`/sys/class/hwmon/hwmon<N>/pwm<n>_mode`")
        .equivalent("`node_hwmon_pwm_mode`");
/// `accel_hwmon_humidity`.
pub const HUMIDITY: FamilyDef = FamilyDef::gauge(
    "accel_hwmon_humidity",
    "Hardware monitor for humidity, as a ratio (multiply with 100.0 to get the humidity as a percentage) (input)",
)
.labels(&["chip", "sensor"])
.doc("relative humidity: the file's milli-percent divided by 10^6, exactly as node_exporter divides it (so 45 % reads 0.045; multiply by 10 for the ratio)")
.source("`/sys/class/hwmon/hwmon<N>/humidity<n>_input`")
.equivalent("`node_hwmon_humidity`");
/// `accel_hwmon_intrusion_alarm`.
pub const INTRUSION_ALARM: FamilyDef = FamilyDef::gauge(
    "accel_hwmon_intrusion_alarm",
    "Hardware sensor alarm status (intrusion)",
)
.labels(&["chip", "sensor"])
.doc("1 once the chassis was opened (latched by the chip until cleared)")
.source("`/sys/class/hwmon/hwmon<N>/intrusion<n>_alarm`")
.equivalent("`node_hwmon_intrusion_alarm`");
/// `accel_hwmon_temp_fault`.
pub const TEMP_FAULT: FamilyDef = FamilyDef::gauge(
    "accel_hwmon_temp_fault",
    "Hardware sensor fault status (temp)",
)
.labels(&["chip", "sensor"])
.doc("1 when the sensor itself is broken (open diode): its readings are not to be trusted")
.source("`/sys/class/hwmon/hwmon<N>/temp<n>_fault`")
.equivalent("`node_hwmon_temp_fault`");
/// `accel_hwmon_fan_fault`.
pub const FAN_FAULT: FamilyDef = FamilyDef::gauge(
    "accel_hwmon_fan_fault",
    "Hardware sensor fault status (fan)",
)
.labels(&["chip", "sensor"])
.doc("1 when the fan's tachometer reports a fault")
.source("`/sys/class/hwmon/hwmon<N>/fan<n>_fault`")
.equivalent("`node_hwmon_fan_fault`");
/// `accel_hwmon_beep_enabled`.
pub const BEEP_ENABLED: FamilyDef =
    FamilyDef::gauge("accel_hwmon_beep_enabled", "Hardware beep enabled")
        .labels(&["chip", "sensor"])
        .doc("1 when the chip's beeper is on for any alarm (`sensor` is `beep_enable0`, as node_exporter names it)")
        .source("`/sys/class/hwmon/hwmon<N>/beep_enable`")
        .equivalent("`node_hwmon_beep_enabled`");
/// `accel_hwmon_temp_beep_enabled`.
pub const TEMP_BEEP: FamilyDef = FamilyDef::gauge(
    "accel_hwmon_temp_beep_enabled",
    "Hardware monitor sensor has beeping enabled",
)
.labels(&["chip", "sensor"])
.doc("1 when this sensor's alarm beeps")
.source("`/sys/class/hwmon/hwmon<N>/temp<n>_beep`")
.equivalent("`node_hwmon_temp_beep_enabled`");
/// `accel_hwmon_fan_beep_enabled`.
pub const FAN_BEEP: FamilyDef = FamilyDef::gauge(
    "accel_hwmon_fan_beep_enabled",
    "Hardware monitor sensor has beeping enabled",
)
.labels(&["chip", "sensor"])
.doc("1 when this fan's alarm beeps")
.source("`/sys/class/hwmon/hwmon<N>/fan<n>_beep`")
.equivalent("`node_hwmon_fan_beep_enabled`");
/// `accel_hwmon_in_beep_enabled`.
pub const IN_BEEP: FamilyDef = FamilyDef::gauge(
    "accel_hwmon_in_beep_enabled",
    "Hardware monitor sensor has beeping enabled",
)
.labels(&["chip", "sensor"])
.doc("1 when this voltage's alarm beeps")
.source("`/sys/class/hwmon/hwmon<N>/in<n>_beep`")
.equivalent("`node_hwmon_in_beep_enabled`");
/// `accel_hwmon_intrusion_beep_enabled`.
pub const INTRUSION_BEEP: FamilyDef = FamilyDef::gauge(
    "accel_hwmon_intrusion_beep_enabled",
    "Hardware monitor sensor has beeping enabled",
)
.labels(&["chip", "sensor"])
.doc("1 when a chassis intrusion beeps")
.source("`/sys/class/hwmon/hwmon<N>/intrusion<n>_beep`")
.equivalent("`node_hwmon_intrusion_beep_enabled`");

/// Every family this collector exports.
pub const FAMILIES: &[FamilyDef] = &[
    CHIP_NAMES,
    SENSOR_LABEL,
    TEMP,
    TEMP_MAX,
    TEMP_CRIT,
    TEMP_CRIT_ALARM,
    TEMP_ALARM,
    FAN,
    FAN_MIN,
    FAN_TARGET,
    FAN_ALARM,
    IN,
    IN_ALARM,
    CURR,
    POWER,
    POWER_AVERAGE,
    POWER_CAP,
    POWER_AVERAGE_INTERVAL,
    ENERGY,
    PWM,
    PWM_ENABLE,
    PWM_MODE,
    HUMIDITY,
    INTRUSION_ALARM,
    TEMP_FAULT,
    FAN_FAULT,
    BEEP_ENABLED,
    TEMP_BEEP,
    FAN_BEEP,
    IN_BEEP,
    INTRUSION_BEEP,
];

/// The sensor files read: sensor type, element, family, scale to base units.
pub const SENSORS: [(&str, &str, &FamilyDef, f64); 29] = [
    ("temp", "input", &TEMP, 1e-3),
    ("temp", "max", &TEMP_MAX, 1e-3),
    ("temp", "crit", &TEMP_CRIT, 1e-3),
    ("temp", "crit_alarm", &TEMP_CRIT_ALARM, 1e-3),
    ("temp", "alarm", &TEMP_ALARM, 1.0),
    ("fan", "input", &FAN, 1.0),
    ("fan", "min", &FAN_MIN, 1.0),
    ("fan", "target", &FAN_TARGET, 1.0),
    ("fan", "alarm", &FAN_ALARM, 1.0),
    ("in", "input", &IN, 1e-3),
    ("in", "alarm", &IN_ALARM, 1.0),
    ("curr", "input", &CURR, 1e-3),
    ("power", "input", &POWER, 1e-6),
    ("power", "average", &POWER_AVERAGE, 1e-6),
    ("power", "cap", &POWER_CAP, 1e-6),
    ("power", "average_interval", &POWER_AVERAGE_INTERVAL, 1e-3),
    ("energy", "input", &ENERGY, 1e-6),
    ("pwm", "", &PWM, 1.0),
    ("pwm", "enable", &PWM_ENABLE, 1.0),
    ("pwm", "mode", &PWM_MODE, 1.0),
    ("humidity", "input", &HUMIDITY, 1e-6),
    ("intrusion", "alarm", &INTRUSION_ALARM, 1.0),
    ("temp", "fault", &TEMP_FAULT, 1.0),
    ("fan", "fault", &FAN_FAULT, 1.0),
    ("beep_enable", "", &BEEP_ENABLED, 1.0),
    ("temp", "beep", &TEMP_BEEP, 1.0),
    ("fan", "beep", &FAN_BEEP, 1.0),
    ("in", "beep", &IN_BEEP, 1.0),
    ("intrusion", "beep", &INTRUSION_BEEP, 1.0),
];

/// The hwmon collector.
pub struct Hwmon {
    class: PathBuf,
}

fn build(ctx: &BuildContext) -> Result<Built, CollectError> {
    let class = ctx.paths.sysfs.join("class/hwmon");
    Ok(Built::if_dir(class, |class| Box::new(Hwmon { class })))
}

/// node_exporter's cleanMetricName: lower case, every character outside
/// `[a-z0-9:_]` replaced by `_`, leading and trailing `_` trimmed.
pub fn clean_name(s: &str) -> String {
    let replaced: String = s
        .to_lowercase()
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | ':' | '_' => c,
            _ => '_',
        })
        .collect();
    replaced.trim_matches('_').to_owned()
}

/// A sensor file name split as node_exporter splits it
/// (`^([^0-9]+)([0-9]*)?(_(.+))?$`): type, number (0 when none) and
/// element (empty when none); `None` when it does not have that shape.
pub fn split_sensor_file(name: &str) -> Option<(&str, u64, &str)> {
    let type_end = name
        .find(|c: char| c.is_ascii_digit())
        .unwrap_or(name.len());
    if type_end == 0 {
        return None;
    }
    let rest = &name[type_end..];
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let num = if digits == 0 {
        0
    } else {
        rest[..digits].parse().ok()?
    };
    let after = &rest[digits..];
    let element = match after.strip_prefix('_') {
        _ if after.is_empty() => "",
        Some(e) if !e.is_empty() => e,
        _ => return None,
    };
    // Without digits the greedy type swallows `_element`, as the regex does.
    if digits == 0 {
        return Some((name, 0, ""));
    }
    Some((&name[..type_end], num, element))
}

/// node_exporter's chip name for a hwmon directory: `<type>_<name>` of the
/// device it points at, else its `name` file, else `hwmon<N>`, cleaned.
fn chip(dir: &Path) -> Option<String> {
    if let Ok(dev) = std::fs::canonicalize(dir.join("device")) {
        let name = dev.file_name().map(|n| clean_name(&n.to_string_lossy()));
        let kind = dev
            .parent()
            .and_then(Path::file_name)
            .map(|n| clean_name(&n.to_string_lossy()));
        match (kind, name) {
            (Some(k), Some(n)) if !k.is_empty() && !n.is_empty() => {
                return Some(format!("{k}_{n}"))
            }
            (_, Some(n)) if !n.is_empty() => return Some(n),
            _ => {}
        }
    }
    if let Some(n) = chip_name(dir) {
        return Some(n);
    }
    let real = std::fs::canonicalize(dir).ok()?;
    Some(clean_name(&real.file_name()?.to_string_lossy())).filter(|n| !n.is_empty())
}

/// The cleaned `name` file, if there is one.
fn chip_name(dir: &Path) -> Option<String> {
    let raw = std::fs::read_to_string(dir.join("name")).ok()?;
    Some(clean_name(&raw)).filter(|n| !n.is_empty())
}

/// Sensor data of one directory: sensor (`temp1`) -> element -> raw value.
type Data = BTreeMap<String, BTreeMap<String, String>>;

/// Reads the declared sensor files and labels of `dir` into `data`.
fn collect(dir: &Path, data: &mut Data, out: &mut Sample) -> Result<(), CollectError> {
    let entries = std::fs::read_dir(dir).map_err(|e| io_error(dir, &e))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((kind, num, element)) = split_sensor_file(name) else {
            continue;
        };
        let wanted = element == "label"
            || SENSORS
                .iter()
                .any(|(t, e, _, _)| *t == kind && *e == element);
        if !wanted {
            continue;
        }
        let path = dir.join(name);
        // node_exporter trims only newlines.
        let value = match std::fs::read_to_string(&path) {
            Ok(v) => v.trim_matches('\n').to_owned(),
            Err(_) => match read_attr(&path) {
                Ok(_) => continue,
                Err(e) => {
                    out.error(e);
                    continue;
                }
            },
        };
        // node_exporter keys a sensor by its type and number, 0 when there
        // is none (`beep_enable` is sensor `beep_enable0`).
        data.entry(format!("{kind}{num}"))
            .or_default()
            .insert(element.to_owned(), value);
    }
    Ok(())
}

impl Collector for Hwmon {
    fn name(&self) -> &'static str {
        "hwmon"
    }

    fn sample(&mut self, out: &mut Sample) -> Result<(), CollectError> {
        let entries = std::fs::read_dir(&self.class).map_err(|e| io_error(&self.class, &e))?;
        let mut dirs: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        for dir in dirs {
            let Some(chip) = chip(&dir) else { continue };
            let mut data = Data::new();
            if let Err(e) = collect(&dir, &mut data, out) {
                out.error(e);
                continue;
            }
            let device = dir.join("device");
            if device.is_dir() {
                if let Err(e) = collect(&device, &mut data, out) {
                    out.error(e);
                }
            }
            if let Some(name) = chip_name(&dir) {
                out.add(&CHIP_NAMES)
                    .add(&[("chip", &chip), ("chip_name", &name)], 1.0);
            }
            for (sensor, elements) in &data {
                let Some((kind, _, _)) = split_sensor_file(sensor) else {
                    continue;
                };
                if let Some(label) = elements.get("label") {
                    out.add(&SENSOR_LABEL).add(
                        &[("chip", &chip), ("sensor", sensor), ("label", label)],
                        1.0,
                    );
                }
                for (t, e, family, scale) in &SENSORS {
                    if *t != kind {
                        continue;
                    }
                    let Some(v) = elements.get(*e).and_then(|v| v.parse::<f64>().ok()) else {
                        continue;
                    };
                    out.add(family)
                        .add(&[("chip", &chip), ("sensor", sensor)], v * scale);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splits_like_node_exporter() {
        assert_eq!(split_sensor_file("temp1_input"), Some(("temp", 1, "input")));
        assert_eq!(
            split_sensor_file("power1_average_interval"),
            Some(("power", 1, "average_interval"))
        );
        assert_eq!(split_sensor_file("in0_input"), Some(("in", 0, "input")));
        assert_eq!(split_sensor_file("fan12"), Some(("fan", 12, "")));
        assert_eq!(split_sensor_file("name"), Some(("name", 0, "")));
        assert_eq!(
            split_sensor_file("update_interval"),
            Some(("update_interval", 0, ""))
        );
        for bad in ["", "1temp", "temp1x", "temp1_"] {
            assert_eq!(split_sensor_file(bad), None, "{bad:?}");
        }
        assert_eq!(clean_name("Package id 0\n"), "package_id_0");
        assert_eq!(clean_name("LNXSYSTM:00"), "lnxsystm:00");
        assert_eq!(clean_name("__"), "");
    }

    #[test]
    fn absent_without_hwmon() {
        let paths = crate::Paths {
            sysfs: PathBuf::from("/nonexistent-sysfs"),
            ..Default::default()
        };
        let options = (SPEC.options.defaults)();
        let built = crate::build_with(&SPEC, &paths, &*options, &Default::default()).unwrap();
        assert!(matches!(built, Built::Absent(_)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        #[test]
        fn names_never_panic(s in "\\PC{0,40}") {
            if let Some((t, _, e)) = split_sensor_file(&s) {
                prop_assert!(!t.is_empty() && s.starts_with(t) && s.ends_with(e));
            }
            let c = clean_name(&s);
            prop_assert!(c.chars().all(|c| matches!(c, 'a'..='z' | '0'..='9' | ':' | '_')));
        }

        #[test]
        fn sensor_like_names(t in "(temp|fan|in|power|energy|curr)", n in 0u32..1000, e in "(_[a-z_]{1,12})?") {
            let name = format!("{t}{n}{e}");
            let (tt, nn, ee) = split_sensor_file(&name).unwrap();
            prop_assert_eq!((tt, nn, ee), (t.as_str(), u64::from(n), e.strip_prefix('_').unwrap_or("")));
        }
    }
}
