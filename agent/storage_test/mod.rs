//! `accel-agent storage-test`: the storage a training job reads its data
//! set from and writes its checkpoints to, measured with the patterns the
//! job uses, as fio would measure them (`bench/storage-vs-fio` runs fio
//! with the same job definitions and compares):
//!
//! | pattern | fio equivalent |
//! |---|---|
//! | checkpoint save | `rw=write bs=1M direct=1 ioengine=psync end_fsync=1 fallocate=none` |
//! | checkpoint load | `rw=read bs=1M direct=1 ioengine=psync` |
//! | random reads | `rw=randread bs=4k direct=1 ioengine=psync numjobs=N time_based` |
//! | small files | N readers opening, reading whole and closing 100 KiB files |
//!
//! Everything is written under one directory, `DIR/accel-storage-test.PID`,
//! removed at the end, on an I/O error, and on SIGINT or SIGTERM (exit 130
//! or 143). Direct I/O is used where the filesystem takes it; where it
//! does not (ramfs, some FUSE mounts), reads are buffered after dropping
//! the file's pages (`posix_fadvise(DONTNEED)`) and the report says so.

mod io;
mod progress;
mod report;

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::{Arg, ArgAction, Command};

pub use report::{verdict, Report, Verdict};

use io::{Failure, SEQ_BLOCK, SMALL_FILE};
use progress::Progress;

/// What `accel-agent storage-test` does, in `accel-agent --help` and its own.
pub const ABOUT: &str = "Measure the storage under --path as a training job uses it: checkpoint save (sequential 1 MiB writes, fsync) and load, random 4 KiB reads (IOPS, latency percentiles), and a data set of 100 KiB files read by parallel readers; with --need-bytes-per-second, say whether it can feed the job.";

/// Parses a byte count: a number with an optional unit, `K`, `M`, `G`,
/// `T` or `KiB`... (powers of 1024, as fio's `1G`), `kB`, `MB`, `GB`,
/// `TB` (powers of 1000), and an optional `/s` (for rates).
pub fn parse_bytes(s: &str) -> Result<f64, String> {
    let bad = || format!("{s:?} is not a byte count (e.g. 1G, 512MiB, 800MB)");
    let t = s.trim();
    let t = t.strip_suffix("/s").unwrap_or(t);
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| bad())?;
    let mult = match unit.trim() {
        "" | "B" => 1.0,
        "K" | "k" | "KiB" => 1024.0,
        "M" | "MiB" => 1024f64.powi(2),
        "G" | "GiB" => 1024f64.powi(3),
        "T" | "TiB" => 1024f64.powi(4),
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        _ => return Err(bad()),
    };
    let v = n * mult;
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(format!("{s:?} must be more than 0 bytes"))
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    let v = parse_bytes(s)?;
    if v < SEQ_BLOCK as f64 {
        return Err(format!("{s} is less than the minimum of 1MiB"));
    }
    if v > 1e15 {
        return Err(format!("{s} is more than 1PB"));
    }
    // Whole 1 MiB blocks.
    Ok((v as u64).div_ceil(SEQ_BLOCK as u64) * SEQ_BLOCK as u64)
}

fn parse_test_duration(s: &str) -> Result<Duration, String> {
    let d = accel_collectors::options::parse_duration(s)?;
    if d < Duration::from_secs(1) {
        return Err(format!("{s} is shorter than the minimum of 1s"));
    }
    Ok(d)
}

fn parse_jobs(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=256).contains(&n) => Ok(n),
        _ => Err(format!("{s:?} is not a number of jobs from 1 to 256")),
    }
}

/// The command line of `accel-agent storage-test`.
pub fn command() -> Command {
    Command::new("accel-agent storage-test")
        .bin_name("accel-agent storage-test")
        .about(ABOUT)
        .after_help("Everything is written under DIR/accel-storage-test.PID and removed at the end, also on Ctrl-C. Exit codes: 0 measured, 1 an I/O error during the test, 2 a bad flag or a path that cannot be tested, 130 interrupted.")
        .arg(
            Arg::new("path")
                .long("path")
                .value_name("DIR")
                .required(true)
                .value_parser(clap::value_parser!(PathBuf))
                .help("The directory to test (where the data set or the checkpoints live)."),
        )
        .arg(
            Arg::new("size")
                .long("size")
                .value_name("BYTES")
                .default_value("1G")
                .value_parser(parse_size)
                .help("Size of the checkpoint file (1G = 1 GiB); the small-file data set is a quarter of it. At most half the free space."),
        )
        .arg(
            Arg::new("duration")
                .long("duration")
                .value_name("DURATION")
                .default_value("30s")
                .value_parser(parse_test_duration)
                .help("Time of the random-read and small-file patterns, half each (the checkpoint save and load move --size whatever it takes)."),
        )
        .arg(
            Arg::new("jobs")
                .long("jobs")
                .value_name("N")
                .default_value("4")
                .value_parser(parse_jobs)
                .help("Parallel readers of the random-read and small-file patterns (a data loader's workers)."),
        )
        .arg(
            Arg::new("json")
                .long("json")
                .value_name("FILE")
                .action(ArgAction::Set)
                .help("Also write the results as JSON to FILE."),
        )
        .arg(
            Arg::new("need")
                .long("need-bytes-per-second")
                .value_name("RATE")
                .value_parser(parse_bytes)
                .help("The read rate the job needs (e.g. 800MB, 1.5GB; K/M/G are powers of 1024): say whether the storage can feed it, and which pattern is the limit."),
        )
        .arg(
            Arg::new("need-from-profile")
                .long("need-from-profile")
                .value_name("FILE")
                .conflicts_with("need")
                .help("Take the needed read rate from a profile's JSON (accel-agent profile --json, taken while the job ran): its followed processes' read rates (p95, summed), else its disks'."),
        )
}

/// The read rate a profile's JSON measured, and what it is: the followed
/// processes' read rates (p95 of each, summed), else the disks' (the same).
/// A file that is not a profile, or a profile without reads, is an error.
pub fn need_from_profile(text: &str) -> Result<(f64, String), String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not a profile's JSON: {e}"))?;
    let summary = v
        .get("summary")
        .filter(|s| s.is_object())
        .ok_or("not a profile's JSON (no summary)")?;
    let sum = |key: &str| -> (f64, usize) {
        let rates: Vec<f64> = summary
            .get(key)
            .and_then(|a| a.as_array())
            .into_iter()
            .flatten()
            .filter_map(|x| x.get("read_bytes_per_second")?.get("p95")?.as_f64())
            .filter(|r| r.is_finite() && *r >= 0.0)
            .collect();
        (rates.iter().sum(), rates.len())
    };
    match (sum("processes"), sum("disks")) {
        ((p, n), _) if p > 0.0 => Ok((
            p,
            format!("the read rate of the {n} followed process(es), p95"),
        )),
        (_, (d, n)) if d > 0.0 => Ok((d, format!("the read rate of the {n} disk(s), p95"))),
        _ => Err("the profile measured no reads (no process or disk read rate)".into()),
    }
}

/// `accel-agent storage-test ...` (`args[0]` is the program): the exit code.
pub fn run(args: Vec<OsString>) -> i32 {
    let m = match command().try_get_matches_from(args) {
        Ok(m) => m,
        Err(e) => {
            use clap::error::ErrorKind as K;
            if matches!(e.kind(), K::DisplayHelp | K::DisplayVersion) {
                let _ = e.print();
                return 0;
            }
            // One line: clap's first, without its usage block.
            let text = e.to_string();
            let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
            let first = lines.next().unwrap_or("bad arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            match (first.ends_with(':'), lines.next()) {
                (true, Some(what)) => eprintln!("accel-agent storage-test: {first} {what}"),
                _ => eprintln!("accel-agent storage-test: {first}"),
            }
            return 2;
        }
    };
    let plan = Plan {
        dir: m.get_one::<PathBuf>("path").expect("required").clone(),
        size: *m.get_one::<u64>("size").expect("has a default"),
        duration: *m.get_one::<Duration>("duration").expect("has a default"),
        jobs: *m.get_one::<usize>("jobs").expect("has a default"),
        need: m.get_one::<f64>("need").copied(),
        need_source: None,
    };
    let mut plan = plan;
    if let Some(file) = m.get_one::<String>("need-from-profile") {
        let got = std::fs::read_to_string(file)
            .map_err(|e| short(&e))
            .and_then(|t| need_from_profile(&t));
        match got {
            Ok((need, what)) => {
                plan.need = Some(need);
                plan.need_source = Some(format!("{what}, in {file}"));
            }
            Err(e) => {
                eprintln!("accel-agent storage-test: --need-from-profile {file}: {e}");
                return 2;
            }
        }
    }
    let json = m.get_one::<String>("json").cloned();
    match start(&plan, json.as_deref()) {
        Ok(work) => finish(&plan, work, json.as_deref()),
        Err(msg) => {
            eprintln!("accel-agent storage-test: {msg}");
            2
        }
    }
}

/// What to measure.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The directory tested.
    pub dir: PathBuf,
    /// The checkpoint file's size, whole MiB.
    pub size: u64,
    /// The random-read and small-file patterns' time together.
    pub duration: Duration,
    /// Parallel readers.
    pub jobs: usize,
    /// The read rate the job needs, bytes per second.
    pub need: Option<f64>,
    /// Where that rate came from, when from a profile.
    pub need_source: Option<String>,
}

impl Plan {
    /// Files in the small-file data set: a quarter of --size, 16 to 10000.
    pub fn small_files(&self) -> usize {
        ((self.size / 4 / SMALL_FILE as u64) as usize).clamp(16, 10_000)
    }

    /// Everything written, in bytes.
    fn bytes_written(&self) -> u64 {
        self.size + (self.small_files() * SMALL_FILE) as u64
    }
}

/// What is known of the filesystem under the tested directory.
#[derive(Clone, Debug)]
pub struct Filesystem {
    /// Its type in the mount table (`ext4`, `tmpfs`, `fuse.gcsfuse`).
    pub fs_type: String,
    /// Its mount point.
    pub mount_point: String,
    /// Whether direct I/O works on it.
    pub direct: bool,
}

/// The checks that refuse to start (exit 2), then the work directory.
fn start(plan: &Plan, json: Option<&str>) -> Result<PathBuf, String> {
    let dir = &plan.dir;
    let meta =
        std::fs::metadata(dir).map_err(|e| format!("--path {}: {}", dir.display(), short(&e)))?;
    if !meta.is_dir() {
        return Err(format!("--path {}: not a directory", dir.display()));
    }
    let (avail, blocks, read_only) =
        statvfs(dir).map_err(|e| format!("--path {}: {}", dir.display(), short(&e)))?;
    if read_only {
        return Err(format!(
            "--path {}: not writable (a read-only filesystem)",
            dir.display()
        ));
    }
    // ramfs and some FUSE mounts report no size: nothing to compare with.
    if blocks > 0 && plan.bytes_written() as f64 > avail as f64 / 2.0 {
        return Err(format!(
            "--size {} (and {} of small files) is more than half the free space of {} ({} free)",
            human_bytes(plan.size),
            human_bytes(plan.bytes_written() - plan.size),
            dir.display(),
            human_bytes(avail)
        ));
    }
    if let Some(file) = json {
        std::fs::File::create(file).map_err(|e| format!("cannot write {file}: {}", short(&e)))?;
    }
    install_signal_handlers();
    let work = dir.join(format!("accel-storage-test.{}", std::process::id()));
    std::fs::create_dir(&work)
        .map_err(|e| format!("--path {}: not writable ({})", dir.display(), short(&e)))?;
    Ok(work)
}

/// Measures in `work`, removes it, reports: the exit code.
fn finish(plan: &Plan, work: PathBuf, json: Option<&str>) -> i32 {
    let mut progress = Progress::new();
    let result = measure(plan, &work, &mut progress);
    progress.clear();
    let removed = std::fs::remove_dir_all(&work);
    if let Err(e) = &removed {
        eprintln!(
            "accel-agent storage-test: could not remove {}: {}",
            work.display(),
            short(e)
        );
    }
    match result {
        Ok(r) => {
            print!("{}", r.text());
            if let Some(file) = json {
                let body = serde_json::to_string_pretty(&r.json()).expect("plain JSON values");
                if let Err(e) = std::fs::write(file, body + "\n") {
                    eprintln!(
                        "accel-agent storage-test: cannot write {file}: {}",
                        short(&e)
                    );
                    return 1;
                }
            }
            i32::from(removed.is_err())
        }
        Err(Failure::Interrupted) => {
            let sig = io::SIGNAL.load(Ordering::Relaxed);
            eprintln!(
                "accel-agent storage-test: interrupted; removed {}",
                work.display()
            );
            128 + sig
        }
        Err(Failure::Io(msg)) => {
            eprintln!("accel-agent storage-test: {msg}");
            1
        }
    }
}

fn measure(plan: &Plan, work: &Path, progress: &mut Progress) -> Result<Report, Failure> {
    let direct =
        io::supports_direct(work).map_err(|e| Failure::Io(format!("{}: {e}", work.display())))?;
    let fs = filesystem(&plan.dir, direct);
    let file = work.join("checkpoint.bin");
    let seq_write = io::seq_write(&file, plan.size, direct, progress)?;
    let seq_read = io::seq_read(&file, plan.size, direct, progress)?;
    let half = plan.duration / 2;
    let rand = io::rand_read(&file, plan.size, direct, plan.jobs, half, progress)?;
    std::fs::remove_file(&file).map_err(|e| Failure::Io(format!("{}: {e}", file.display())))?;
    let paths = io::make_small_files(&work.join("dataset"), plan.small_files(), direct, progress)?;
    let small = io::small_files(paths, direct, plan.jobs, plan.duration - half, progress)?;
    Ok(Report::new(
        plan.clone(),
        fs,
        seq_write,
        seq_read,
        rand,
        small,
    ))
}

/// statvfs(3) of `dir`: bytes available to an unprivileged writer, total
/// blocks (0 when the filesystem reports no size), and read-only.
fn statvfs(dir: &Path) -> std::io::Result<(u64, u64, bool)> {
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: a zeroed statvfs is a valid value of the plain C struct; `c`
    // outlives the call and `s` is a valid out-pointer.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((
        s.f_bavail as u64 * s.f_frsize as u64,
        s.f_blocks as u64,
        s.f_flag & libc::ST_RDONLY != 0,
    ))
}

/// The mount holding `dir`: the longest mount point of /proc/self/mounts
/// that is a prefix of its canonical path.
fn filesystem(dir: &Path, direct: bool) -> Filesystem {
    let canon = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    let text = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let (mounts, _) = accel_collectors::filesystem::mounts::parse(&text);
    let best = mounts
        .into_iter()
        .filter(|m| canon.starts_with(&m.path))
        .max_by_key(|m| m.path.len());
    Filesystem {
        fs_type: best
            .as_ref()
            .map_or_else(|| "unknown".into(), |m| m.fs_type.clone()),
        mount_point: best.map_or_else(|| "unknown".into(), |m| m.path),
        direct,
    }
}

/// An I/O error's text without Rust's "(os error N)".
fn short(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// `1.0 GiB`, `512 MiB`, `100 KiB`.
pub fn human_bytes(b: u64) -> String {
    let b = b as f64;
    let k = 1024.0;
    if b >= k * k * k {
        format!("{:.1} GiB", b / (k * k * k))
    } else if b >= k * k {
        format!("{:.0} MiB", b / (k * k))
    } else if b >= k {
        format!("{:.0} KiB", b / k)
    } else {
        format!("{b:.0} B")
    }
}

extern "C" fn on_signal(sig: libc::c_int) {
    io::SIGNAL.store(sig, Ordering::Relaxed);
    io::STOP.store(true, Ordering::Relaxed);
}

/// SIGINT and SIGTERM set [`io::STOP`]: the patterns stop at their next
/// I/O, and [`finish`] removes what was written.
fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction with a handler that only stores to
        // atomics (async-signal-safe) and an empty mask.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts() {
        assert_eq!(parse_bytes("1G").unwrap(), 1073741824.0);
        assert_eq!(parse_bytes("512MiB").unwrap(), 536870912.0);
        assert_eq!(parse_bytes("800MB").unwrap(), 8e8);
        assert_eq!(parse_bytes("1.5GB/s").unwrap(), 1.5e9);
        assert_eq!(parse_bytes("4096").unwrap(), 4096.0);
        for bad in ["", "G", "1X", "-1G", "0", "1..2G", "nan", "inf"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_size("1500K").unwrap(), 2 << 20);
        assert!(parse_size("1K").is_err());
        assert!(parse_size("2P").is_err());
    }

    #[test]
    fn small_file_count_follows_the_size() {
        let plan = |size| Plan {
            dir: PathBuf::from("/"),
            size,
            duration: Duration::from_secs(2),
            jobs: 1,
            need: None,
            need_source: None,
        };
        assert_eq!(plan(1 << 30).small_files(), 2621);
        assert_eq!(plan(1 << 20).small_files(), 16);
        assert_eq!(plan(1 << 40).small_files(), 10_000);
    }

    const PROFILE: &str = r#"{"verdict": "input-bound", "summary": {"duration_seconds": 60,
        "disks": [{"device": "nvme0n1", "read_bytes_per_second": {"mean": 4e8, "p50": 4e8, "p95": 5e8, "max": 6e8}},
                  {"device": "nvme1n1", "read_bytes_per_second": null}],
        "processes": [{"pid": "7", "read_bytes_per_second": {"mean": 3e8, "p50": 3e8, "p95": 3.5e8, "max": 4e8}},
                      {"pid": "8", "read_bytes_per_second": {"mean": 1e8, "p50": 1e8, "p95": 1.5e8, "max": 2e8}}]}}"#;

    #[test]
    fn needs_from_a_profile() {
        let (need, what) = need_from_profile(PROFILE).unwrap();
        assert_eq!(need, 5e8);
        assert!(what.contains("2 followed process"), "{what}");
        let disks_only = PROFILE.replace("\"processes\"", "\"other\"");
        let (need, what) = need_from_profile(&disks_only).unwrap();
        assert_eq!(need, 5e8);
        assert!(what.contains("1 disk"), "{what}");
        for bad in [
            "",
            "{}",
            "[1]",
            r#"{"summary": 3}"#,
            r#"{"summary": {"disks": []}}"#,
        ] {
            assert!(need_from_profile(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn byte_parser_never_panics(s in "\\PC{0,30}") {
            let _ = parse_bytes(&s);
            let _ = parse_size(&s);
        }

        #[test]
        fn profile_reader_never_panics(
            text in accel_collectors::testing::mutated_text(&[PROFILE])
        ) {
            if let Ok((need, _)) = need_from_profile(&text) {
                proptest::prop_assert!(need.is_finite() && need > 0.0);
            }
        }
    }
}
