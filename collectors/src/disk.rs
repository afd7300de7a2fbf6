//! `accel_disk_*`: block device I/O from /proc/diskstats, named and computed
//! as node_exporter's diskstats collector (`node_disk_*`).
//!
//! The kernel writes 14 fields per line (11 counters) before 4.18, 18 with
//! the discard counters since 4.18, and 20 with the flush counters since
//! 5.5. Every form is read; a counter the kernel does not give is left out.

use std::path::PathBuf;

use crate::options::options;
use crate::util::{parse_u64, read_to_string};
use crate::{
    BuildContext, Built, CollectError, Collector, DeviceFilter, FamilyDef, Sample, Spec,
    HOST_INTERVAL,
};

/// node_exporter's default device exclusion: partitions, loop, ram and
/// floppy devices.
pub const DEFAULT_EXCLUDE: &str = r"^(ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$";

/// Bytes per sector in /proc/diskstats (always 512, whatever the device's
/// sector size).
const SECTOR: f64 = 512.0;
const MS: f64 = 0.001;

/// One line of /proc/diskstats.
#[derive(Debug, PartialEq, Eq)]
pub struct DiskLine<'a> {
    /// Major device number.
    pub major: u32,
    /// Minor device number.
    pub minor: u32,
    /// Kernel device name.
    pub device: &'a str,
    /// 11, 15 or 17 counters, in kernel order.
    pub counters: Vec<u64>,
}

/// Parses /proc/diskstats. A line with fewer than 11 counters is an error;
/// counters past the 17th (a future kernel's) are ignored.
pub fn parse(text: &str) -> Result<Vec<DiskLine<'_>>, CollectError> {
    let mut lines = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut f = line.split_ascii_whitespace();
        let (Some(major), Some(minor), Some(device)) = (f.next(), f.next(), f.next()) else {
            return Err(CollectError::parse(format!(
                "diskstats: short line {line:?}"
            )));
        };
        let counters = f
            .take(FIELDS.len())
            .map(|v| parse_u64(v, &format_args!("diskstats {device}")))
            .collect::<Result<Vec<_>, _>>()?;
        if counters.len() < 11 {
            return Err(CollectError::parse(format!(
                "diskstats: {device} has {} counters, want at least 11",
                counters.len()
            )));
        }
        lines.push(DiskLine {
            major: parse_u32(major, "major")?,
            minor: parse_u32(minor, "minor")?,
            device,
            counters,
        });
    }
    Ok(lines)
}

fn parse_u32(s: &str, what: &str) -> Result<u32, CollectError> {
    u32::try_from(parse_u64(s, &format_args!("diskstats {what}"))?)
        .map_err(|_| CollectError::parse(format!("diskstats {what}: {s} is out of range")))
}

/// The disk collector.
pub struct Disk {
    path: PathBuf,
    udev: PathBuf,
    filter: DeviceFilter,
}

/// The udev properties node_exporter puts on `node_disk_info`, by label.
const UDEV_LABELS: [(&str, &str); 5] = [
    ("model", "ID_MODEL"),
    ("path", "ID_PATH"),
    ("revision", "ID_REVISION"),
    ("serial", "ID_SERIAL_SHORT"),
    ("wwn", "ID_WWN"),
];

/// Reads the `E:KEY=value` properties of a udev database file; a missing
/// or unreadable file gives none (udev may not run, e.g. in a container).
fn udev_properties(path: &std::path::Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("E:"))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

crate::device_filter_options!(
    /// The disk collector's options.
    DiskOptions,
    "collector.disk",
    "block devices",
    DEFAULT_EXCLUDE
);

/// The disk collector's registry entry.
pub const SPEC: Spec = Spec {
    name: "disk",
    help: "block device I/O, from /proc/diskstats",
    default_enabled: true,
    default_interval: HOST_INTERVAL,
    options: options::<DiskOptions>(),
    detail: "Also export the counters no shipped panel or alert reads, as node_exporter does: reads and writes merged, discards (completed, merged, sectors, time) and flushes (requests, time): 8 series per disk.",
    families: FAMILIES,
    prefixes: &["accel_disk_"],
    outside: &[],
    build,
};

/// Identity of each device.
pub const INFO: FamilyDef = FamilyDef::gauge(
    "accel_disk_info",
    "Identity of each block device from /proc/diskstats and the udev database (model, serial, wwn, path, revision); always 1.",
)
.labels(&["device", "major", "minor", "model", "path", "revision", "serial", "wwn"])
.doc("always 1; `model`, `path`, `revision`, `serial`, `wwn` are udev's `ID_MODEL`, `ID_PATH`, `ID_REVISION`, `ID_SERIAL_SHORT`, `ID_WWN` (`\"\"` when the udev database is missing)")
.source("`/proc/diskstats` + `<udev data>/b<major>:<minor>` `E:` lines; `collectors/src/disk.rs`")
.equivalent("`node_disk_info`");

/// diskstats field 1.
pub const READS_COMPLETED: FamilyDef = FamilyDef::counter(
    "accel_disk_reads_completed_total",
    "The total number of reads completed successfully.",
)
.labels(&["device"])
.doc("reads completed")
.source("diskstats field 1; `collectors/src/disk.rs`")
.equivalent("`node_disk_reads_completed_total`");

/// diskstats field 2.
pub const READS_MERGED: FamilyDef = FamilyDef::counter(
    "accel_disk_reads_merged_total",
    "The total number of reads merged.",
)
.labels(&["device"])
.doc("adjacent reads merged")
.source("field 2; `collectors/src/disk.rs`")
.equivalent("`node_disk_reads_merged_total`")
.detail();

/// diskstats field 3.
pub const READ_BYTES: FamilyDef = FamilyDef::counter(
    "accel_disk_read_bytes_total",
    "The total number of bytes read successfully.",
)
.labels(&["device"])
.doc("bytes read (sectors × 512)")
.source("field 3; `collectors/src/disk.rs`")
.equivalent("`node_disk_read_bytes_total`");

/// diskstats field 4.
pub const READ_TIME_SECONDS: FamilyDef = FamilyDef::counter(
    "accel_disk_read_time_seconds_total",
    "The total number of seconds spent by all reads.",
)
.labels(&["device"])
.doc("seconds spent by all reads")
.source("field 4; `collectors/src/disk.rs`")
.equivalent("`node_disk_read_time_seconds_total`");

/// diskstats field 5.
pub const WRITES_COMPLETED: FamilyDef = FamilyDef::counter(
    "accel_disk_writes_completed_total",
    "The total number of writes completed successfully.",
)
.labels(&["device"])
.doc("writes completed")
.source("field 5; `collectors/src/disk.rs`")
.equivalent("`node_disk_writes_completed_total`");

/// diskstats field 6.
pub const WRITES_MERGED: FamilyDef = FamilyDef::counter(
    "accel_disk_writes_merged_total",
    "The number of writes merged.",
)
.labels(&["device"])
.doc("adjacent writes merged")
.source("field 6; `collectors/src/disk.rs`")
.equivalent("`node_disk_writes_merged_total`")
.detail();

/// diskstats field 7.
pub const WRITTEN_BYTES: FamilyDef = FamilyDef::counter(
    "accel_disk_written_bytes_total",
    "The total number of bytes written successfully.",
)
.labels(&["device"])
.doc("bytes written (sectors × 512)")
.source("field 7; `collectors/src/disk.rs`")
.equivalent("`node_disk_written_bytes_total`");

/// diskstats field 8.
pub const WRITE_TIME_SECONDS: FamilyDef = FamilyDef::counter(
    "accel_disk_write_time_seconds_total",
    "This is the total number of seconds spent by all writes.",
)
.labels(&["device"])
.doc("seconds spent by all writes")
.source("field 8; `collectors/src/disk.rs`")
.equivalent("`node_disk_write_time_seconds_total`");

/// diskstats field 9.
pub const IO_NOW: FamilyDef = FamilyDef::gauge(
    "accel_disk_io_now",
    "The number of I/Os currently in progress.",
)
.labels(&["device"])
.doc("I/Os in progress")
.source("field 9; `collectors/src/disk.rs`")
.equivalent("`node_disk_io_now`");

/// diskstats field 10.
pub const IO_TIME_SECONDS: FamilyDef = FamilyDef::counter(
    "accel_disk_io_time_seconds_total",
    "Total seconds spent doing I/Os.",
)
.labels(&["device"])
.doc("seconds the device had I/O in flight (`rate()` = utilisation, 0–1)")
.source("field 10; `collectors/src/disk.rs`")
.equivalent("`node_disk_io_time_seconds_total`");

/// diskstats field 11.
pub const IO_TIME_WEIGHTED_SECONDS: FamilyDef = FamilyDef::counter(
    "accel_disk_io_time_weighted_seconds_total",
    "The weighted # of seconds spent doing I/Os.",
)
.labels(&["device"])
.doc("seconds of I/O × I/Os in flight (`rate()` = average queue depth)")
.source("field 11; `collectors/src/disk.rs`")
.equivalent("`node_disk_io_time_weighted_seconds_total`");

/// diskstats field 12.
pub const DISCARDS_COMPLETED: FamilyDef = FamilyDef::counter(
    "accel_disk_discards_completed_total",
    "The total number of discards completed successfully.",
)
.labels(&["device"])
.doc("discards completed")
.source("field 12; `collectors/src/disk.rs`")
.equivalent("`node_disk_discards_completed_total`")
.detail();

/// diskstats field 13.
pub const DISCARDS_MERGED: FamilyDef = FamilyDef::counter(
    "accel_disk_discards_merged_total",
    "The total number of discards merged.",
)
.labels(&["device"])
.doc("discards merged")
.source("field 13; `collectors/src/disk.rs`")
.equivalent("`node_disk_discards_merged_total`")
.detail();

/// diskstats field 14.
pub const DISCARDED_SECTORS: FamilyDef = FamilyDef::counter(
    "accel_disk_discarded_sectors_total",
    "The total number of sectors discarded successfully.",
)
.labels(&["device"])
.doc("sectors discarded (512-byte sectors, not bytes, as node_exporter)")
.source("field 14; `collectors/src/disk.rs`")
.equivalent("`node_disk_discarded_sectors_total`")
.detail();

/// diskstats field 15.
pub const DISCARD_TIME_SECONDS: FamilyDef = FamilyDef::counter(
    "accel_disk_discard_time_seconds_total",
    "This is the total number of seconds spent by all discards.",
)
.labels(&["device"])
.doc("seconds spent by all discards")
.source("field 15; `collectors/src/disk.rs`")
.equivalent("`node_disk_discard_time_seconds_total`")
.detail();

/// diskstats field 16.
pub const FLUSH_REQUESTS: FamilyDef = FamilyDef::counter(
    "accel_disk_flush_requests_total",
    "The total number of flush requests completed successfully",
)
.labels(&["device"])
.doc("flush requests completed")
.source("field 16; `collectors/src/disk.rs`")
.equivalent("`node_disk_flush_requests_total`")
.detail();

/// diskstats field 17.
pub const FLUSH_REQUESTS_TIME_SECONDS: FamilyDef = FamilyDef::counter(
    "accel_disk_flush_requests_time_seconds_total",
    "This is the total number of seconds spent by all flush requests.",
)
.labels(&["device"])
.doc("seconds spent by all flushes")
.source("field 17; `collectors/src/disk.rs`")
.equivalent("`node_disk_flush_requests_time_seconds_total`")
.detail();

/// How each counter (by position after the device name) is exported: its
/// family and the scale to base units.
const FIELDS: [(&FamilyDef, f64); 17] = [
    (&READS_COMPLETED, 1.0),
    (&READS_MERGED, 1.0),
    (&READ_BYTES, SECTOR),
    (&READ_TIME_SECONDS, MS),
    (&WRITES_COMPLETED, 1.0),
    (&WRITES_MERGED, 1.0),
    (&WRITTEN_BYTES, SECTOR),
    (&WRITE_TIME_SECONDS, MS),
    (&IO_NOW, 1.0),
    (&IO_TIME_SECONDS, MS),
    (&IO_TIME_WEIGHTED_SECONDS, MS),
    (&DISCARDS_COMPLETED, 1.0),
    (&DISCARDS_MERGED, 1.0),
    (&DISCARDED_SECTORS, 1.0),
    (&DISCARD_TIME_SECONDS, MS),
    (&FLUSH_REQUESTS, 1.0),
    (&FLUSH_REQUESTS_TIME_SECONDS, MS),
];

/// Every family this collector exports.
pub const FAMILIES: &[FamilyDef] = &[
    INFO,
    READS_COMPLETED,
    READS_MERGED,
    READ_BYTES,
    READ_TIME_SECONDS,
    WRITES_COMPLETED,
    WRITES_MERGED,
    WRITTEN_BYTES,
    WRITE_TIME_SECONDS,
    IO_NOW,
    IO_TIME_SECONDS,
    IO_TIME_WEIGHTED_SECONDS,
    DISCARDS_COMPLETED,
    DISCARDS_MERGED,
    DISCARDED_SECTORS,
    DISCARD_TIME_SECONDS,
    FLUSH_REQUESTS,
    FLUSH_REQUESTS_TIME_SECONDS,
];

/// Builds the collector.
fn build(ctx: &BuildContext) -> Result<Built, CollectError> {
    let (paths, o) = (ctx.paths, ctx.options::<DiskOptions>());
    let filter = o.filter()?;
    Ok(Built::Ready(Box::new(Disk {
        path: paths.procfs.join("diskstats"),
        udev: paths.udev_data.clone(),
        filter,
    })))
}

impl Collector for Disk {
    fn name(&self) -> &'static str {
        "disk"
    }

    fn sample(&mut self, out: &mut Sample) -> Result<(), CollectError> {
        let text = read_to_string(&self.path)?;
        let lines = parse(&text)?;
        let lines: Vec<_> = lines
            .iter()
            .filter(|l| self.filter.accepts(l.device))
            .collect();
        let info = out.add(&INFO);
        for l in &lines {
            let props = udev_properties(&self.udev.join(format!("b{}:{}", l.major, l.minor)));
            let prop = |key: &str| {
                props
                    .iter()
                    .find(|(k, _)| k == key)
                    .map_or("", |(_, v)| v.as_str())
            };
            let (major, minor) = (l.major.to_string(), l.minor.to_string());
            let mut labels = vec![
                ("device", l.device),
                ("major", major.as_str()),
                ("minor", minor.as_str()),
            ];
            labels.extend(UDEV_LABELS.iter().map(|(label, key)| (*label, prop(key))));
            info.add(&labels, 1.0);
        }
        for (i, (family, scale)) in FIELDS.iter().enumerate() {
            for l in &lines {
                let Some(v) = l.counters.get(i) else { continue };
                out.add(family)
                    .add(&[("device", l.device)], *v as f64 * scale);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_all_three_forms() {
        let t = "   8       0 sda 1 2 3 4 5 6 7 8 9 10 11\n\
                 259 0 nvme0n1 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17\n\
                 253 0 dm-0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15\n";
        let l = parse(t).unwrap();
        assert_eq!(
            l.iter().map(|l| l.counters.len()).collect::<Vec<_>>(),
            [11, 17, 15]
        );
        assert_eq!(l[1].device, "nvme0n1");
        assert_eq!(l[1].major, 259);
    }

    #[test]
    fn rejects_truncated_and_garbage() {
        for bad in [
            "8 0 sda 1 2 3",
            "8 0 sda 1 2 3 4 5 6 7 8 9 10 x",
            "8 0",
            "x 0 sda 1 2 3 4 5 6 7 8 9 10 11",
        ] {
            assert_eq!(
                parse(bad).unwrap_err().kind,
                crate::ErrorKind::Parse,
                "{bad}"
            );
        }
    }

    #[test]
    fn default_filter_drops_partitions() {
        let f = DeviceFilter::new(None, Some(DEFAULT_EXCLUDE)).unwrap();
        for d in ["sda", "nvme0n1", "dm-0", "md0", "vda"] {
            assert!(f.accepts(d), "{d}");
        }
        for d in ["sda1", "nvme0n1p1", "loop0", "ram0", "fd0", "xvda2"] {
            assert!(!f.accepts(d), "{d}");
        }
    }
}
