//! The results of `accel-agent storage-test`: the text summary, the JSON,
//! what the filesystem means for the numbers, and the verdict against the
//! rate the job needs.

use std::fmt::Write;
use std::time::Duration;

use serde_json::{json, Value};

use super::io::{RandomReads, SmallFiles, SMALL_FILE};
use super::{human_bytes, Filesystem, Plan};

/// Filesystems held in memory.
const MEMORY: [&str; 2] = ["tmpfs", "ramfs"];
/// Network and cluster filesystems.
const NETWORK: [&str; 12] = [
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "lustre",
    "ceph",
    "beegfs",
    "gpfs",
    "9p",
    "virtiofs",
    "glusterfs",
    "wekafs",
];

/// What was measured.
#[derive(Clone, Debug)]
pub struct Report {
    /// What was asked.
    pub plan: Plan,
    /// Where.
    pub fs: Filesystem,
    /// Checkpoint save, fsync included.
    pub seq_write: Duration,
    /// Checkpoint load.
    pub seq_read: Duration,
    /// Random 4 KiB reads.
    pub rand_ios: u64,
    /// Their wall time.
    pub rand_elapsed: Duration,
    /// Latency p50, p99, p99.9, seconds.
    pub rand_latency: [f64; 3],
    /// Small files read.
    pub small_files: u64,
    /// Their bytes.
    pub small_bytes: u64,
    /// Their wall time.
    pub small_elapsed: Duration,
}

/// The `p` quantile (0–1) of sorted values, nearest rank; 0 when empty.
pub fn quantile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn per_second(n: f64, d: Duration) -> f64 {
    n / d.as_secs_f64().max(1e-9)
}

/// `1.93 GB/s` (decimal, as storage is sold).
pub fn rate(bps: f64) -> String {
    if bps >= 1e8 {
        format!("{:.2} GB/s", bps / 1e9)
    } else {
        format!("{:.1} MB/s", bps / 1e6)
    }
}

/// `85 µs`, `1.20 ms`, `2.1 s`.
pub fn latency(s: f64) -> String {
    if s < 1e-5 {
        format!("{:.1} µs", s * 1e6)
    } else if s < 1e-3 {
        format!("{:.0} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{s:.1} s")
    }
}

/// Whether the storage can feed a job that reads `need` bytes per second.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// Enough whatever the data set's layout: sequential and small-file
    /// reads both reach `need`.
    pub enough: bool,
    /// Enough when the data set is read as large sequential files.
    pub enough_sequential: bool,
    /// The pattern that falls short, or the slower of the two when both
    /// are enough: `seq_read` or `small_files`.
    pub limit: &'static str,
    /// The sentence.
    pub text: String,
}

/// The verdict for a job that needs `need` bytes per second, from the
/// sequential and small-file read rates.
pub fn verdict(need: f64, seq: f64, small: f64) -> Verdict {
    let (n, s, f) = (rate(need), rate(seq), rate(small));
    if seq < need {
        Verdict {
            enough: false,
            enough_sequential: false,
            limit: "seq_read",
            text: format!("sequential read {s}; the job needs {n}: NOT enough, even read as large sequential files; sequential read is the limit"),
        }
    } else if small < need {
        Verdict {
            enough: false,
            enough_sequential: true,
            limit: "small_files",
            text: format!("sequential read {s}; the job needs {n}: enough for large sequential files (shards, tar, WebDataset), NOT for a data set of small files: small-file reads ({f}) are the limit; pack the data set into shards or add readers"),
        }
    } else {
        Verdict {
            enough: true,
            enough_sequential: true,
            limit: if small < seq {
                "small_files"
            } else {
                "seq_read"
            },
            text: format!("sequential read {s}, small files {f}; the job needs {n}: enough"),
        }
    }
}

impl Report {
    /// A report from the patterns' measures.
    pub fn new(
        plan: Plan,
        fs: Filesystem,
        seq_write: Duration,
        seq_read: Duration,
        rand: RandomReads,
        small: SmallFiles,
    ) -> Report {
        let q = |p| quantile(&rand.latencies_ns, p) as f64 / 1e9;
        Report {
            plan,
            fs,
            seq_write,
            seq_read,
            rand_ios: rand.ios,
            rand_elapsed: rand.elapsed,
            rand_latency: [q(0.5), q(0.99), q(0.999)],
            small_files: small.files,
            small_bytes: small.bytes,
            small_elapsed: small.elapsed,
        }
    }

    /// Checkpoint save, bytes per second (fsync included).
    pub fn seq_write_bps(&self) -> f64 {
        per_second(self.plan.size as f64, self.seq_write)
    }

    /// Checkpoint load, bytes per second.
    pub fn seq_read_bps(&self) -> f64 {
        per_second(self.plan.size as f64, self.seq_read)
    }

    /// Random 4 KiB reads per second.
    pub fn rand_iops(&self) -> f64 {
        per_second(self.rand_ios as f64, self.rand_elapsed)
    }

    /// Small files read per second.
    pub fn small_fps(&self) -> f64 {
        per_second(self.small_files as f64, self.small_elapsed)
    }

    /// Small-file bytes per second.
    pub fn small_bps(&self) -> f64 {
        per_second(self.small_bytes as f64, self.small_elapsed)
    }

    /// The verdict, when the job's need was given.
    pub fn verdict(&self) -> Option<Verdict> {
        self.plan
            .need
            .map(|n| verdict(n, self.seq_read_bps(), self.small_bps()))
    }

    /// What the filesystem and the I/O mode mean for the numbers.
    pub fn notes(&self) -> Vec<String> {
        let fs = &self.fs;
        let mut notes = Vec::new();
        let memory = MEMORY.contains(&fs.fs_type.as_str());
        if fs.direct && !memory {
            notes.push("direct I/O (O_DIRECT): the page cache is bypassed, so the numbers are the storage's (a device or server cache may still answer)".to_owned());
        } else if !fs.direct {
            notes.push(format!("direct I/O is refused on {} (O_DIRECT gives EINVAL): buffered I/O instead, with each file's pages dropped before it is read (posix_fadvise DONTNEED); repeated random and small-file reads may still come from the page cache, so those numbers can be higher than the storage gives", fs.fs_type));
        }
        let base = fs.fs_type.split('.').next().unwrap_or_default();
        if memory {
            notes.push(format!("{} is {}, in memory: these numbers are memory copies, not storage (direct I/O means nothing there); a data set here takes RAM from the job", fs.mount_point, fs.fs_type));
        } else if base == "fuse" || base == "fuseblk" {
            notes.push(format!("{} is a FUSE mount ({}): the numbers include the FUSE daemon and what it caches; a cold read from a bucket can be far slower", fs.mount_point, fs.fs_type));
        } else if NETWORK.contains(&base) {
            notes.push(format!("{} is a network filesystem ({}): these are one client's numbers; nodes reading at once share the servers", fs.mount_point, fs.fs_type));
        }
        notes
    }

    /// The text summary.
    pub fn text(&self) -> String {
        let p = &self.plan;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "storage-test of {} ({} on {}, {}): checkpoint {}, {} jobs, {} s",
            p.dir.display(),
            self.fs.fs_type,
            self.fs.mount_point,
            if self.fs.direct {
                "direct I/O"
            } else {
                "buffered I/O"
            },
            human_bytes(p.size),
            p.jobs,
            p.duration.as_secs_f64()
        );
        let [p50, p99, p999] = self.rand_latency;
        let rows = [
            (
                "checkpoint save",
                "sequential write, 1 MiB blocks, fsync".to_owned(),
                rate(self.seq_write_bps()),
                format!(
                    "{} in {:.2} s",
                    human_bytes(p.size),
                    self.seq_write.as_secs_f64()
                ),
            ),
            (
                "checkpoint load",
                "sequential read, 1 MiB blocks".to_owned(),
                rate(self.seq_read_bps()),
                format!(
                    "{} in {:.2} s",
                    human_bytes(p.size),
                    self.seq_read.as_secs_f64()
                ),
            ),
            (
                "random reads",
                format!("4 KiB, {} jobs", p.jobs),
                format!("{:.0} IOPS", self.rand_iops()),
                format!(
                    "latency p50 {}, p99 {}, p99.9 {}",
                    latency(p50),
                    latency(p99),
                    latency(p999)
                ),
            ),
            (
                "small files",
                format!(
                    "{} KiB, {} readers, {} files",
                    SMALL_FILE / 1024,
                    p.jobs,
                    p.small_files()
                ),
                format!("{:.0} files/s", self.small_fps()),
                rate(self.small_bps()),
            ),
        ];
        for (name, what, value, detail) in rows {
            let _ = writeln!(s, "  {name:<16} {what:<38} {value:>13}  ({detail})");
        }
        for n in self.notes() {
            let _ = writeln!(s, "note: {n}");
        }
        if let Some(v) = self.verdict() {
            if let Some(src) = &p.need_source {
                let _ = writeln!(s, "need: {} ({src})", rate(p.need.unwrap_or_default()));
            }
            let _ = writeln!(s, "verdict: {}", v.text);
        }
        s
    }

    /// The JSON document of `--json`.
    pub fn json(&self) -> Value {
        let p = &self.plan;
        let [p50, p99, p999] = self.rand_latency;
        let mut v = json!({
            "path": p.dir.display().to_string(),
            "filesystem": self.fs.fs_type,
            "mount_point": self.fs.mount_point,
            "direct_io": self.fs.direct,
            "size_bytes": p.size,
            "jobs": p.jobs,
            "duration_seconds": p.duration.as_secs_f64(),
            "seq_write_bytes_per_second": self.seq_write_bps(),
            "seq_write_seconds": self.seq_write.as_secs_f64(),
            "seq_read_bytes_per_second": self.seq_read_bps(),
            "seq_read_seconds": self.seq_read.as_secs_f64(),
            "rand_read_iops": self.rand_iops(),
            "rand_read_ios": self.rand_ios,
            "rand_read_latency_p50_seconds": p50,
            "rand_read_latency_p99_seconds": p99,
            "rand_read_latency_p999_seconds": p999,
            "small_file_bytes": SMALL_FILE,
            "small_files_count": p.small_files(),
            "small_files_read": self.small_files,
            "small_files_per_second": self.small_fps(),
            "small_files_bytes_per_second": self.small_bps(),
            "notes": self.notes(),
        });
        if let (Some(need), Some(verdict)) = (p.need, self.verdict()) {
            v["verdict"] = json!({
                "need_bytes_per_second": need,
                "enough": verdict.enough,
                "enough_sequential": verdict.enough_sequential,
                "limit": verdict.limit,
                "text": verdict.text,
                "need_source": p.need_source,
            });
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<u64> = (1..=1000).collect();
        assert_eq!(quantile(&v, 0.5), 500);
        assert_eq!(quantile(&v, 0.99), 990);
        assert_eq!(quantile(&v, 0.999), 999);
        assert_eq!(quantile(&[7], 0.999), 7);
        assert_eq!(quantile(&[], 0.5), 0);
    }

    #[test]
    fn verdicts_name_the_limit() {
        let v = verdict(0.8e9, 1.9e9, 1.2e9);
        assert!(v.enough);
        assert_eq!(
            v.text,
            "sequential read 1.90 GB/s, small files 1.20 GB/s; the job needs 0.80 GB/s: enough"
        );
        let v = verdict(0.8e9, 1.9e9, 0.3e9);
        assert!(!v.enough && v.enough_sequential);
        assert_eq!(v.limit, "small_files");
        assert!(v
            .text
            .contains("small-file reads (0.30 GB/s) are the limit"));
        let v = verdict(2e9, 1.9e9, 0.3e9);
        assert!(!v.enough && !v.enough_sequential);
        assert_eq!(v.limit, "seq_read");
        assert!(v
            .text
            .starts_with("sequential read 1.90 GB/s; the job needs 2.00 GB/s: NOT enough"));
    }
}
