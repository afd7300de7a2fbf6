//! `accel_time_*` and `accel_timex_*`: the system clock and the kernel's NTP
//! state, as node_exporter's `time` and `timex` collectors name them. The
//! time, its zone offset (`localtime_r`) and the clock sources
//! (`<sysfs>/devices/system/clocksource/clocksource<N>/`) are the `time`
//! collector's; `adjtimex(2)` with `modes` 0 (read only, no privilege
//! needed) gives the `timex` ones, converted as node_exporter 1.5.0 does:
//! offset and PPS jitter in nanoseconds when `STA_NANO` is set, else in
//! microseconds; maxerror, esterror and tick in microseconds; freq, ppsfreq
//! and stabil in ppm with a 16-bit fraction (scaled by 2^16 × 10^6).
//!
//! Why a training node needs it: the ranks of a distributed job compare
//! timestamps (NCCL watchdogs, profiler timelines merged across nodes,
//! checkpoint leases); a node whose clock is not synchronised
//! (`accel_timex_sync_status` 0, the alert `AccelClockNotSynchronising`)
//! or drifts (`accel_timex_offset_seconds`) breaks them.
//!
//! One collector for node_exporter's two. It samples every second by
//! default: `accel_time_seconds` is the time of the sample, not of the
//! scrape, so it lags the scrape by up to the interval.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::options::{options, NoOptions};
use crate::util::read_attr;
use crate::{BuildContext, Built, CollectError, Collector, ErrorKind, FamilyDef, Sample, Spec};

/// The time collector's registry entry.
pub const SPEC: Spec = Spec {
    name: "time",
    help: "system time, time zone and clock sources; the kernel's NTP state from adjtimex(2)",
    default_enabled: true,
    default_interval: Duration::from_secs(1),
    options: options::<NoOptions>(),
    detail: "Also export the adjtimex(2) fields no shipped panel or alert reads, as node_exporter does: status, loop time constant, tick, TAI offset, the eight PPS fields, and accel_time_clocksource_available_info.",
    families: FAMILIES,
    prefixes: &["accel_time_", "accel_timex_"],
    outside: &[],
    build,
};

/// `accel_time_seconds`.
pub const TIME: FamilyDef = FamilyDef::gauge(
    "accel_time_seconds",
    "System time in seconds since epoch (1970).",
)
.doc("Unix time of the sample (not of the scrape: up to the interval older)")
.source("`clock_gettime(CLOCK_REALTIME)`")
.equivalent("`node_time_seconds`");
/// `accel_time_zone_offset_seconds`.
pub const ZONE_OFFSET: FamilyDef = FamilyDef::gauge(
    "accel_time_zone_offset_seconds",
    "System time zone offset in seconds.",
)
.labels(&["time_zone"])
.doc("offset of the local time zone from UTC (`time_zone`: its abbreviation)")
.source("`localtime_r` (`tm_gmtoff`, `tm_zone`)")
.equivalent("`node_time_zone_offset_seconds`");
/// `accel_time_clocksource_available_info`.
pub const CLOCKSOURCE_AVAILABLE: FamilyDef = FamilyDef::gauge(
    "accel_time_clocksource_available_info",
    "Available clocksources read from '/sys/devices/system/clocksource'.",
)
.labels(&["device", "clocksource"])
.doc("1 per clock source the kernel can use")
.source("`/sys/devices/system/clocksource/clocksource<device>/available_clocksource`")
.equivalent("`node_time_clocksource_available_info`")
.detail();
/// `accel_time_clocksource_current_info`.
pub const CLOCKSOURCE_CURRENT: FamilyDef = FamilyDef::gauge(
    "accel_time_clocksource_current_info",
    "Current clocksource read from '/sys/devices/system/clocksource'.",
)
.labels(&["device", "clocksource"])
.doc("1 for the clock source in use (`tsc` expected on bare metal; a fallback to `hpet` or `acpi_pm` makes timing calls slow)")
.source("`/sys/devices/system/clocksource/clocksource<device>/current_clocksource`")
.equivalent("`node_time_clocksource_current_info`");

/// A timex family: gauge or counter, help, doc, field and its equivalent.
macro_rules! timex {
    ($kind:ident, $name:literal, $help:literal, $doc:literal, $field:literal, $ne:literal) => {
        FamilyDef::$kind($name, $help)
            .doc($doc)
            .source(concat!("`adjtimex(2)` `", $field, "`"))
            .equivalent(concat!("`", $ne, "`"))
    };
}

/// `accel_timex_sync_status`.
pub const SYNC_STATUS: FamilyDef = timex!(
    gauge,
    "accel_timex_sync_status",
    "Is clock synchronized to a reliable server (1 = yes, 0 = no).",
    "1 unless adjtimex returns `TIME_ERROR` (5): no NTP daemon has disciplined the clock recently",
    "return value",
    "node_timex_sync_status"
);
/// `accel_timex_offset_seconds`.
pub const OFFSET: FamilyDef = timex!(
    gauge,
    "accel_timex_offset_seconds",
    "Time offset in between local system and reference clock.",
    "offset from the reference clock still being corrected",
    "offset",
    "node_timex_offset_seconds"
);
/// `accel_timex_frequency_adjustment_ratio`.
pub const FREQUENCY: FamilyDef = timex!(
    gauge,
    "accel_timex_frequency_adjustment_ratio",
    "Local clock frequency adjustment.",
    "1 + the frequency correction (ppm / 10^6)",
    "freq",
    "node_timex_frequency_adjustment_ratio"
);
/// `accel_timex_maxerror_seconds`.
pub const MAXERROR: FamilyDef = timex!(
    gauge,
    "accel_timex_maxerror_seconds",
    "Maximum error in seconds.",
    "maximum error bound; grows by 500 µs/s while no daemon resets it, up to 16",
    "maxerror",
    "node_timex_maxerror_seconds"
);
/// `accel_timex_estimated_error_seconds`.
pub const ESTERROR: FamilyDef = timex!(
    gauge,
    "accel_timex_estimated_error_seconds",
    "Estimated error in seconds.",
    "estimated error, as set by the NTP daemon",
    "esterror",
    "node_timex_estimated_error_seconds"
);
/// `accel_timex_status`.
pub const STATUS: FamilyDef = timex!(
    gauge,
    "accel_timex_status",
    "Value of the status array bits.",
    "the `STA_*` bits (64 = `STA_UNSYNC`, 0x2000 = `STA_NANO`)",
    "status",
    "node_timex_status"
)
.detail();
/// `accel_timex_loop_time_constant`.
pub const CONSTANT: FamilyDef = timex!(
    gauge,
    "accel_timex_loop_time_constant",
    "Phase-locked loop time constant.",
    "PLL time constant",
    "constant",
    "node_timex_loop_time_constant"
)
.detail();
/// `accel_timex_tick_seconds`.
pub const TICK: FamilyDef = timex!(
    gauge,
    "accel_timex_tick_seconds",
    "Seconds between clock ticks.",
    "length of a clock tick",
    "tick",
    "node_timex_tick_seconds"
)
.detail();
/// `accel_timex_pps_frequency_hertz`.
pub const PPS_FREQUENCY: FamilyDef = timex!(
    gauge,
    "accel_timex_pps_frequency_hertz",
    "Pulse per second frequency.",
    "PPS frequency offset (ppm / 10^6, as node_exporter)",
    "ppsfreq",
    "node_timex_pps_frequency_hertz"
)
.detail();
/// `accel_timex_pps_jitter_seconds`.
pub const PPS_JITTER: FamilyDef = timex!(
    gauge,
    "accel_timex_pps_jitter_seconds",
    "Pulse per second jitter.",
    "PPS jitter",
    "jitter",
    "node_timex_pps_jitter_seconds"
)
.detail();
/// `accel_timex_pps_shift_seconds`.
pub const PPS_SHIFT: FamilyDef = timex!(
    gauge,
    "accel_timex_pps_shift_seconds",
    "Pulse per second interval duration.",
    "PPS calibration interval, as log2 seconds (the raw value, as node_exporter)",
    "shift",
    "node_timex_pps_shift_seconds"
)
.detail();
/// `accel_timex_pps_stability_hertz`.
pub const PPS_STABILITY: FamilyDef = timex!(
    gauge,
    "accel_timex_pps_stability_hertz",
    "Pulse per second stability, average of recent frequency changes.",
    "PPS stability (ppm / 10^6, as node_exporter)",
    "stabil",
    "node_timex_pps_stability_hertz"
)
.detail();
/// `accel_timex_pps_jitter_total`.
pub const PPS_JITTER_COUNT: FamilyDef = timex!(
    counter,
    "accel_timex_pps_jitter_total",
    "Pulse per second count of jitter limit exceeded events.",
    "PPS jitter limit exceeded events",
    "jitcnt",
    "node_timex_pps_jitter_total"
)
.detail();
/// `accel_timex_pps_calibration_total`.
pub const PPS_CALIBRATION: FamilyDef = timex!(
    counter,
    "accel_timex_pps_calibration_total",
    "Pulse per second count of calibration intervals.",
    "PPS calibration intervals",
    "calcnt",
    "node_timex_pps_calibration_total"
)
.detail();
/// `accel_timex_pps_error_total`.
pub const PPS_ERROR: FamilyDef = timex!(
    counter,
    "accel_timex_pps_error_total",
    "Pulse per second count of calibration errors.",
    "PPS calibration errors",
    "errcnt",
    "node_timex_pps_error_total"
)
.detail();
/// `accel_timex_pps_stability_exceeded_total`.
pub const PPS_STABILITY_EXCEEDED: FamilyDef = timex!(
    counter,
    "accel_timex_pps_stability_exceeded_total",
    "Pulse per second count of stability limit exceeded events.",
    "PPS stability limit exceeded events",
    "stbcnt",
    "node_timex_pps_stability_exceeded_total"
)
.detail();
/// `accel_timex_tai_offset_seconds`.
pub const TAI: FamilyDef = timex!(
    gauge,
    "accel_timex_tai_offset_seconds",
    "International Atomic Time (TAI) offset.",
    "TAI − UTC as the kernel knows it (0 when no daemon set it)",
    "tai",
    "node_timex_tai_offset_seconds"
)
.detail();

/// Every family this collector exports.
pub const FAMILIES: &[FamilyDef] = &[
    TIME,
    ZONE_OFFSET,
    CLOCKSOURCE_AVAILABLE,
    CLOCKSOURCE_CURRENT,
    SYNC_STATUS,
    OFFSET,
    FREQUENCY,
    MAXERROR,
    ESTERROR,
    STATUS,
    CONSTANT,
    TICK,
    PPS_FREQUENCY,
    PPS_JITTER,
    PPS_SHIFT,
    PPS_STABILITY,
    PPS_JITTER_COUNT,
    PPS_CALIBRATION,
    PPS_ERROR,
    PPS_STABILITY_EXCEEDED,
    TAI,
];

/// adjtimex's return value when the clock is not synchronised.
const TIME_ERROR: i32 = 5;
/// The status bit saying offset and jitter are in nanoseconds.
const STA_NANO: i32 = 0x2000;
/// ppm with a 16-bit binary fraction, to a ratio: adjtimex(2) NOTES.
const PPM16FRAC: f64 = 1_000_000.0 * 65536.0;

/// What adjtimex(2) returned: its return value and the fields node_exporter
/// reads, widened to i64.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timex {
    /// The clock state returned (`TIME_OK` .. `TIME_ERROR`).
    pub state: i32,
    pub offset: i64,
    pub freq: i64,
    pub maxerror: i64,
    pub esterror: i64,
    pub status: i32,
    pub constant: i64,
    pub tick: i64,
    pub ppsfreq: i64,
    pub jitter: i64,
    pub shift: i32,
    pub stabil: i64,
    pub jitcnt: i64,
    pub calcnt: i64,
    pub errcnt: i64,
    pub stbcnt: i64,
    pub tai: i32,
}

impl Timex {
    /// Reads the kernel's clock state with `modes` 0: nothing is changed.
    // `c_long` is i64 here but i32 on 32-bit targets: the casts widen.
    #[allow(clippy::unnecessary_cast)]
    pub fn read() -> Result<Self, CollectError> {
        // SAFETY: `timex` is a plain C struct for which all-zero bytes are a
        // valid value; modes 0 asks adjtimex only to fill it in, and the
        // pointer is valid and exclusive for the duration of the call.
        let (state, tx) = unsafe {
            let mut tx: libc::timex = std::mem::zeroed();
            (libc::adjtimex(&mut tx), tx)
        };
        if state < 0 {
            let err = std::io::Error::last_os_error();
            let kind = match err.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => ErrorKind::Permission,
                _ => ErrorKind::Io,
            };
            return Err(CollectError::new(kind, format!("adjtimex: {err}")));
        }
        Ok(Self {
            state,
            offset: tx.offset as i64,
            freq: tx.freq as i64,
            maxerror: tx.maxerror as i64,
            esterror: tx.esterror as i64,
            status: tx.status,
            constant: tx.constant as i64,
            tick: tx.tick as i64,
            ppsfreq: tx.ppsfreq as i64,
            jitter: tx.jitter as i64,
            shift: tx.shift,
            stabil: tx.stabil as i64,
            jitcnt: tx.jitcnt as i64,
            calcnt: tx.calcnt as i64,
            errcnt: tx.errcnt as i64,
            stbcnt: tx.stbcnt as i64,
            tai: tx.tai,
        })
    }

    /// The timex families and their values, converted as node_exporter
    /// 1.5.0 converts them.
    pub fn values(&self) -> [(&'static FamilyDef, f64); 17] {
        let divisor = if self.status & STA_NANO != 0 {
            1e9
        } else {
            1e6
        };
        [
            (&SYNC_STATUS, f64::from(u8::from(self.state != TIME_ERROR))),
            (&OFFSET, self.offset as f64 / divisor),
            (&FREQUENCY, 1.0 + self.freq as f64 / PPM16FRAC),
            (&MAXERROR, self.maxerror as f64 / 1e6),
            (&ESTERROR, self.esterror as f64 / 1e6),
            (&STATUS, f64::from(self.status)),
            (&CONSTANT, self.constant as f64),
            (&TICK, self.tick as f64 / 1e6),
            (&PPS_FREQUENCY, self.ppsfreq as f64 / PPM16FRAC),
            (&PPS_JITTER, self.jitter as f64 / divisor),
            (&PPS_SHIFT, f64::from(self.shift)),
            (&PPS_STABILITY, self.stabil as f64 / PPM16FRAC),
            (&PPS_JITTER_COUNT, self.jitcnt as f64),
            (&PPS_CALIBRATION, self.calcnt as f64),
            (&PPS_ERROR, self.errcnt as f64),
            (&PPS_STABILITY_EXCEEDED, self.stbcnt as f64),
            (&TAI, f64::from(self.tai)),
        ]
    }
}

/// The local time zone at Unix time `now`: its abbreviation and its offset
/// from UTC in seconds. `None` if the C library cannot say.
pub fn local_zone(now: i64) -> Option<(String, i64)> {
    let t = libc::time_t::try_from(now).ok()?;
    // SAFETY: `tm` is a plain C struct (all-zero is valid); localtime_r
    // writes only into it and returns null on failure. `tm_zone`, when not
    // null, points at a NUL-terminated string the C library keeps alive
    // (the tz data), read before any other call could change it.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return None;
        }
        let zone = if tm.tm_zone.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(tm.tm_zone)
                .to_string_lossy()
                .into_owned()
        };
        #[allow(clippy::unnecessary_cast)] // c_long: i32 on 32-bit targets
        Some((zone, tm.tm_gmtoff as i64))
    }
}

/// One clock-source device: its number, the sources it offers and the one
/// in use.
#[derive(Debug, PartialEq)]
pub struct ClockSource {
    pub device: String,
    pub available: Vec<String>,
    pub current: Option<String>,
}

/// The number of a `clocksource<N>` directory, or `None` for other names.
pub fn clocksource_device(name: &str) -> Option<&str> {
    name.strip_prefix("clocksource")
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The clock sources under `dir` (`<sysfs>/devices/system/clocksource`),
/// sorted by device; none when the directory does not exist.
fn clocksources(dir: &Path) -> Result<Vec<ClockSource>, CollectError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(crate::util::io_error(dir, &e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| crate::util::io_error(dir, &e))?;
        let name = entry.file_name();
        let Some(device) = name.to_str().and_then(clocksource_device) else {
            continue;
        };
        let path = entry.path();
        let available = read_attr(&path.join("available_clocksource"))?
            .map(|s| s.split_ascii_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        let current = read_attr(&path.join("current_clocksource"))?.filter(|s| !s.is_empty());
        out.push(ClockSource {
            device: device.to_owned(),
            available,
            current,
        });
    }
    out.sort_by(|a, b| a.device.cmp(&b.device));
    Ok(out)
}

/// The time collector.
pub struct Time {
    clocksource: PathBuf,
}

fn build(ctx: &BuildContext) -> Result<Built, CollectError> {
    Ok(Built::Ready(Box::new(Time {
        clocksource: ctx.paths.sysfs.join("devices/system/clocksource"),
    })))
}

impl Collector for Time {
    fn name(&self) -> &'static str {
        "time"
    }

    fn sample(&mut self, out: &mut Sample) -> Result<(), CollectError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| CollectError::new(ErrorKind::Io, "the clock is before 1970"))?;
        out.add(&TIME).add(&[], now.as_secs_f64());
        if let Some((zone, offset)) = local_zone(now.as_secs() as i64) {
            out.add(&ZONE_OFFSET)
                .add(&[("time_zone", &zone)], offset as f64);
        }
        match clocksources(&self.clocksource) {
            Ok(sources) => {
                for s in &sources {
                    for a in &s.available {
                        out.add(&CLOCKSOURCE_AVAILABLE)
                            .add(&[("device", &s.device), ("clocksource", a)], 1.0);
                    }
                    if let Some(c) = &s.current {
                        out.add(&CLOCKSOURCE_CURRENT)
                            .add(&[("device", &s.device), ("clocksource", c)], 1.0);
                    }
                }
            }
            Err(e) => out.error(e),
        }
        match Timex::read() {
            Ok(tx) => {
                for (family, v) in tx.values() {
                    out.add(family).add(&[], v);
                }
            }
            Err(e) => out.error(e),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value(tx: &Timex, f: &FamilyDef) -> f64 {
        tx.values()
            .iter()
            .find(|(d, _)| d.name == f.name)
            .unwrap()
            .1
    }

    #[test]
    fn converts_as_node_exporter() {
        // An unsynchronised clock in microsecond mode: status STA_UNSYNC.
        let tx = Timex {
            state: TIME_ERROR,
            offset: -2500,
            freq: 65536 * 12,
            maxerror: 16_000_000,
            esterror: 16_000_000,
            status: 64,
            constant: 2,
            tick: 10_000,
            ppsfreq: 65536,
            jitter: 300,
            shift: 4,
            stabil: 65536 * 2,
            jitcnt: 1,
            calcnt: 2,
            errcnt: 3,
            stbcnt: 4,
            tai: 37,
        };
        assert_eq!(value(&tx, &SYNC_STATUS), 0.0);
        assert_eq!(value(&tx, &OFFSET), -0.0025);
        assert_eq!(value(&tx, &FREQUENCY), 1.000012);
        assert_eq!(value(&tx, &MAXERROR), 16.0);
        assert_eq!(value(&tx, &ESTERROR), 16.0);
        assert_eq!(value(&tx, &STATUS), 64.0);
        assert_eq!(value(&tx, &CONSTANT), 2.0);
        assert_eq!(value(&tx, &TICK), 0.01);
        assert_eq!(value(&tx, &PPS_FREQUENCY), 1e-6);
        assert_eq!(value(&tx, &PPS_JITTER), 0.0003);
        assert_eq!(value(&tx, &PPS_SHIFT), 4.0);
        assert_eq!(value(&tx, &PPS_STABILITY), 2e-6);
        assert_eq!(value(&tx, &PPS_STABILITY_EXCEEDED), 4.0);
        assert_eq!(value(&tx, &TAI), 37.0);
        // STA_NANO: offset and jitter in nanoseconds, the rest unchanged.
        let nano = Timex {
            state: 0,
            status: 64 | STA_NANO,
            ..tx
        };
        assert_eq!(value(&nano, &SYNC_STATUS), 1.0);
        assert_eq!(value(&nano, &OFFSET), -2.5e-6);
        assert_eq!(value(&nano, &PPS_JITTER), 3e-7);
        assert_eq!(value(&nano, &MAXERROR), 16.0);
    }

    #[test]
    fn reads_the_kernel() {
        let tx = Timex::read().expect("adjtimex with modes 0 needs no privilege");
        assert!((0..=5).contains(&tx.state), "{tx:?}");
        assert!(tx.tick > 0, "{tx:?}");
        assert!(value(&tx, &MAXERROR) <= 16.0, "{tx:?}");
        let (_, offset) = local_zone(1_700_000_000).unwrap();
        assert!(offset.abs() <= 14 * 3600);
    }

    #[test]
    fn reads_the_fixture_clocksources() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/sys/devices/system/clocksource");
        assert_eq!(
            clocksources(&dir).unwrap(),
            [ClockSource {
                device: "0".into(),
                available: vec!["tsc".into(), "hpet".into(), "acpi_pm".into()],
                current: Some("tsc".into()),
            }]
        );
        assert_eq!(clocksources(&dir.join("none")).unwrap(), []);
        assert_eq!(clocksource_device("clocksource12"), Some("12"));
        for bad in ["clocksource", "clocksourceX", "power", "clocksource1a"] {
            assert_eq!(clocksource_device(bad), None);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        #[test]
        fn any_kernel_answer_converts_without_panic(
            state in any::<i32>(), offset in any::<i64>(), freq in any::<i64>(),
            maxerror in any::<i64>(), status in any::<i32>(), shift in any::<i32>(),
            counts in any::<[i64; 4]>(), tai in any::<i32>(),
        ) {
            let tx = Timex {
                state, offset, freq, maxerror, esterror: maxerror, status,
                constant: offset, tick: freq, ppsfreq: freq, jitter: offset,
                shift, stabil: freq, jitcnt: counts[0], calcnt: counts[1],
                errcnt: counts[2], stbcnt: counts[3], tai,
            };
            for (_, v) in tx.values() {
                prop_assert!(v.is_finite());
            }
            prop_assert_eq!(value(&tx, &SYNC_STATUS), f64::from(u8::from(state != TIME_ERROR)));
        }

        #[test]
        fn clocksource_names_never_panic(s in "\\PC{0,40}") {
            if let Some(n) = clocksource_device(&s) {
                prop_assert!(s.ends_with(n) && !n.is_empty());
            }
        }
    }
}
