//! Batch jobs per GPU: `accel_gpu_job_info{gpu, uuid, slurm_job,
//! gpu_instance, source} 1`, one series per GPU (or MIG GPU instance) and
//! job holding it, from two sources:
//!
//! - `process`: a compute process on the GPU whose /proc/PID/cgroup places
//!   it in a Slurm job (see [`crate::cgroup::parse_cgroup`]);
//! - `mapping`: the job-mapping directory (`--collector.gpu.job-mapping-dir`)
//!   in the format dcgm-exporter's `--hpc-job-mapping-dir` reads, written by
//!   a scheduler prolog and removed by its epilog: one file per GPU, named by
//!   its index (`3`), or `<gpu>.<gpu instance id>` for a MIG GPU instance
//!   (`0.2`), listing job ids one per line. It attributes GPUs allocated to a
//!   job before (or without) any process on them.
//!
//! A job named by both is one series with `source="process"`; one named only
//! by the mapping is `source="mapping"`: allocated, yet no process of the job
//! holds it. The directory is watched by its own thread (`gpu-jobs`, under
//! the collector's supervisor), which stats it and its files once a second
//! and reads them again when a modification time or size changed (and once
//! a minute regardless); the sampler only takes the last map.
//! Everything read is bounded: files, bytes and lines per file, id length
//! and characters.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::workers::{Worker, Workers};
use crate::{FamilyDef, Sample};

pub const JOB_INFO: FamilyDef = FamilyDef::gauge(
    "accel_gpu_job_info",
    "A batch (Slurm) job holding the GPU or MIG GPU instance; always 1. source is process (a process of the job holds it, from /proc/PID/cgroup) or mapping (only the job-mapping directory names it).",
)
.labels(&["gpu", "uuid", "slurm_job", "gpu_instance", "source"])
.doc("always 1, one per GPU or MIG instance and job. `gpu_instance` is the MIG GPU instance id (of the process, or of the `<gpu>.<gi>` file), `\"\"` for a whole GPU; `source` is `process` or `mapping` (see above)")
.source("`/proc/PID/cgroup` of the GPU's processes; the job-mapping directory")
.equivalent("dcgm-exporter's `hpc_job` label, put on every series of a mapped GPU");

/// Most directory entries looked at.
pub const MAX_FILES: usize = 256;
/// Most bytes read from one file.
pub const MAX_FILE_BYTES: u64 = 4096;
/// Most job ids taken from one file.
pub const MAX_JOBS_PER_FILE: usize = 16;
/// Longest job id accepted.
pub const MAX_ID_LEN: usize = 64;
/// Highest GPU index or GPU instance id accepted in a file name.
const MAX_INDEX: u32 = 1023;
/// How often the directory is looked at.
pub const POLL: Duration = Duration::from_secs(1);
/// Every this many looks, the files are read even if nothing seems to
/// have changed: a file rewritten with the same size within one tick of
/// the file system's clock keeps its signature.
const FORCE_EVERY: u32 = 60;

/// Where a GPU is: its index and, for a MIG GPU instance, the instance id.
pub type Slot = (u32, Option<u32>);

/// Job ids by GPU slot, as the mapping directory says.
pub type Mapping = BTreeMap<Slot, Vec<String>>;

/// Parses a mapping file name: `3` or `0.2`.
fn slot(name: &str) -> Option<Slot> {
    let num = |s: &str| {
        (!s.is_empty() && s.len() <= 4 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u32>().ok())
            .flatten()
            .filter(|n| *n <= MAX_INDEX)
    };
    match name.split_once('.') {
        None => Some((num(name)?, None)),
        Some((gpu, gi)) => Some((num(gpu)?, Some(num(gi)?))),
    }
}

/// Whether `id` is a job id we export: Slurm's `1234`, `1234_7` (array),
/// `1234+1` (heterogeneous), or another scheduler's `5678.pbs01`.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.+:@".contains(&b))
}

/// The job ids in one file's text, in order, without duplicates; blank
/// lines are skipped, invalid ids are counted in the second value.
pub fn parse_file(text: &str) -> (Vec<String>, usize) {
    let mut jobs: Vec<String> = Vec::new();
    let mut bad = 0;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !valid_id(line) {
            bad += 1;
        } else if !jobs.iter().any(|j| j == line) {
            if jobs.len() == MAX_JOBS_PER_FILE {
                bad += 1;
                continue;
            }
            jobs.push(line.to_owned());
        }
    }
    (jobs, bad)
}

/// What one read of the directory gave.
#[derive(Debug, Default, PartialEq)]
pub struct DirRead {
    /// The mapping.
    pub mapping: Mapping,
    /// Entries and lines skipped: names that are not a GPU, ids that are
    /// not valid, entries past the caps.
    pub skipped: usize,
}

/// Reads the mapping directory. `Err` when the directory cannot be listed.
pub fn read_dir(dir: &Path) -> std::io::Result<DirRead> {
    let mut out = DirRead::default();
    for (n, entry) in std::fs::read_dir(dir)?.enumerate() {
        if n == MAX_FILES {
            out.skipped += 1;
            break;
        }
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(slot) = name.to_str().and_then(slot) else {
            out.skipped += 1;
            continue;
        };
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            out.skipped += 1;
            continue;
        }
        let mut text = String::new();
        let read = std::fs::File::open(entry.path())
            .and_then(|f| f.take(MAX_FILE_BYTES).read_to_string(&mut text));
        if read.is_err() {
            // Removed between the listing and the read, or not text.
            out.skipped += 1;
            continue;
        }
        let (jobs, bad) = parse_file(&text);
        out.skipped += bad;
        if !jobs.is_empty() {
            out.mapping.insert(slot, jobs);
        }
    }
    Ok(out)
}

/// What the watcher compares to decide whether to read again: the
/// directory's and each entry's modification time and size.
fn signature(dir: &Path) -> Option<Vec<(String, Option<SystemTime>, u64)>> {
    let meta = std::fs::metadata(dir).ok()?;
    let mut sig = vec![(String::new(), meta.modified().ok(), meta.len())];
    for entry in std::fs::read_dir(dir).ok()?.take(MAX_FILES).flatten() {
        let m = entry.metadata().ok();
        sig.push((
            entry.file_name().to_string_lossy().into_owned(),
            m.as_ref().and_then(|m| m.modified().ok()),
            m.map_or(0, |m| m.len()),
        ));
    }
    sig.sort();
    Some(sig)
}

/// The job-mapping directory, watched by a background thread; stops the
/// thread when dropped.
pub struct Watcher {
    current: Arc<Mutex<Arc<Mapping>>>,
    /// The watching thread; `None` if it could not start.
    _worker: Option<Worker>,
}

/// Longest the watcher may go without a beat, given its poll: ten polls,
/// and at least 10 s. A look stats and reads at most [`MAX_FILES`] small
/// files, milliseconds on a local directory; a watcher silent that long is
/// stuck on the file system, and its map can no longer be trusted.
fn max_silence(poll: Duration) -> Duration {
    (poll * 10).max(Duration::from_secs(10))
}

impl Watcher {
    /// Reads `dir` once now, then watches it from a thread under `workers`
    /// (`gpu-jobs`) that looks every `poll` and beats at each look.
    pub fn start(dir: PathBuf, poll: Duration, workers: &Workers) -> Watcher {
        let current = Arc::new(Mutex::new(Arc::new(Mapping::new())));
        let cur = current.clone();
        let mut last = None;
        let mut state = Reported::Unknown;
        refresh(&dir, &mut last, &mut state, &cur);
        let mut n: u32 = 0;
        let spawned = workers.spawn("jobs", max_silence(poll), move |hb| loop {
            if hb.sleep(poll) {
                return;
            }
            hb.beat();
            n = n.wrapping_add(1);
            if n % FORCE_EVERY == 0 {
                last = None;
            }
            refresh(&dir, &mut last, &mut state, &cur);
        });
        let worker = match spawned {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the job-mapping thread; the mapping is read once");
                None
            }
        };
        Watcher {
            current,
            _worker: worker,
        }
    }

    /// The last mapping read.
    pub fn current(&self) -> Arc<Mapping> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// What was last logged about the directory, so that each change is logged
/// once rather than every poll.
#[derive(PartialEq)]
enum Reported {
    Unknown,
    Missing,
    Read { skipped: usize },
}

fn refresh(
    dir: &Path,
    last: &mut Option<Vec<(String, Option<SystemTime>, u64)>>,
    state: &mut Reported,
    current: &Mutex<Arc<Mapping>>,
) {
    let sig = signature(dir);
    if sig.is_some() && sig == *last {
        return;
    }
    let mapping = match read_dir(dir) {
        Ok(r) => {
            let now = Reported::Read { skipped: r.skipped };
            if *state != now {
                if r.skipped > 0 {
                    tracing::warn!(dir = %dir.display(), skipped = r.skipped, "job-mapping directory: entries or lines skipped (names other than <gpu> or <gpu>.<gpu instance>, invalid or too many job ids, caps reached)");
                } else if *state != Reported::Unknown {
                    tracing::info!(dir = %dir.display(), "job-mapping directory readable");
                }
            }
            *state = now;
            r.mapping
        }
        Err(e) => {
            if *state != Reported::Missing {
                // A prolog may create it with the first job: not an error.
                tracing::info!(dir = %dir.display(), error = %e, "job-mapping directory not readable; no GPU is mapped to a job until it is");
            }
            *state = Reported::Missing;
            Mapping::new()
        }
    };
    *last = sig;
    *current.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(mapping);
}

/// A job holding a GPU, seen through one of its processes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProcessJob {
    /// GPU index.
    pub gpu: u32,
    /// MIG GPU instance id, if the process runs in one.
    pub gpu_instance: Option<u32>,
    /// The job id.
    pub job: String,
}

/// Adds `accel_gpu_job_info` to `out`. `uuids` holds each GPU's uuid by
/// index (`None` while its identity is unknown: no series for it).
pub fn export(
    out: &mut Sample,
    uuids: &[Option<&str>],
    processes: &[ProcessJob],
    mapping: &Mapping,
) {
    let mut series: BTreeMap<(u32, Option<u32>, &str), &str> = BTreeMap::new();
    for ((gpu, gi), jobs) in mapping {
        for job in jobs {
            series.insert((*gpu, *gi, job), "mapping");
        }
    }
    for p in processes {
        series.insert((p.gpu, p.gpu_instance, &p.job), "process");
    }
    let fam = out.add(&JOB_INFO);
    for ((gpu, gi, job), source) in series {
        let Some(Some(uuid)) = uuids.get(gpu as usize) else {
            continue;
        };
        let gi = gi.map(|i| i.to_string()).unwrap_or_default();
        fam.add(
            &[
                ("gpu", &gpu.to_string()),
                ("uuid", uuid),
                // Not `job`: Prometheus would rename it, as the target label `job` wins.
                ("slurm_job", job),
                ("gpu_instance", &gi),
                ("source", source),
            ],
            1.0,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);

    impl Dir {
        fn new(tag: &str) -> Dir {
            let p = std::env::temp_dir().join(format!("accel-jobs-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }

        fn write(&self, name: &str, text: &str) {
            std::fs::write(self.0.join(name), text).unwrap();
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn file_names() {
        assert_eq!(slot("0"), Some((0, None)));
        assert_eq!(slot("7"), Some((7, None)));
        assert_eq!(slot("0.2"), Some((0, Some(2))));
        assert_eq!(slot("12.13"), Some((12, Some(13))));
        for bad in [
            "", ".", "0.", ".1", "a", "0.a", "-1", "0.1.2", "1024", "99999", "0x1", " 1", "1 ",
            "GPU-1",
        ] {
            assert_eq!(slot(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn file_contents() {
        assert_eq!(parse_file("4242\n"), (vec!["4242".to_owned()], 0));
        assert_eq!(
            parse_file("  17 \r\n\n1234_7\n17\n99+1\n"),
            (vec!["17".into(), "1234_7".into(), "99+1".into()], 0)
        );
        let (jobs, bad) = parse_file("ok\nwith space\nquo\"te\n{x}\n");
        assert_eq!((jobs, bad), (vec!["ok".to_owned()], 3));
        let long = "9".repeat(MAX_ID_LEN + 1);
        assert_eq!(parse_file(&long), (vec![], 1));
        let many: String = (0..40).map(|i| format!("{i}\n")).collect();
        let (jobs, bad) = parse_file(&many);
        assert_eq!(jobs.len(), MAX_JOBS_PER_FILE);
        assert_eq!(jobs[0], "0");
        assert_eq!(bad, 40 - MAX_JOBS_PER_FILE);
        assert_eq!(parse_file(""), (vec![], 0));
    }

    #[test]
    fn a_directory() {
        let d = Dir::new("dir");
        d.write("0", "100\n");
        d.write("1", "100\n101\n");
        d.write("0.3", "200\n");
        d.write("2", "\n"); // emptied by an epilog: no job
        d.write("README", "not a GPU\n");
        std::fs::create_dir(d.0.join("5")).unwrap();
        // Larger than the read cap: only the first bytes count.
        d.write(
            "3",
            &format!("300\n{}", "x".repeat(MAX_FILE_BYTES as usize * 2)),
        );
        let r = read_dir(&d.0).unwrap();
        let want: Mapping = [
            ((0, None), vec!["100".to_owned()]),
            ((0, Some(3)), vec!["200".to_owned()]),
            ((1, None), vec!["100".to_owned(), "101".to_owned()]),
            ((3, None), vec!["300".to_owned()]),
        ]
        .into_iter()
        .collect();
        assert_eq!(r.mapping, want);
        // README, the folder 5, and the truncated over-long line of 3.
        assert_eq!(r.skipped, 3);
        assert!(read_dir(&d.0.join("nope")).is_err());
    }

    #[test]
    fn too_many_entries_are_capped() {
        let d = Dir::new("cap");
        for i in 0..(MAX_FILES + 10) {
            d.write(&format!("x{i}"), "1\n");
        }
        let r = read_dir(&d.0).unwrap();
        assert!(r.mapping.is_empty());
        assert_eq!(r.skipped, MAX_FILES + 1);
    }

    #[test]
    fn the_watcher_follows_changes() {
        let d = Dir::new("watch");
        let workers = Workers::new("test");
        let w = Watcher::start(d.0.join("later"), Duration::from_millis(20), &workers);
        assert!(w.current().is_empty(), "missing directory: empty map");
        assert!(workers.check().is_ok(), "the watcher runs and beats");
        std::fs::create_dir(d.0.join("later")).unwrap();
        let wait = |want: &Mapping| {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while *w.current() != *want {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{:?} != {want:?}",
                    w.current()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        let path = d.0.join("later/1");
        std::fs::write(&path, "55\n").unwrap();
        wait(&[((1, None), vec!["55".to_owned()])].into_iter().collect());
        // Rewritten in place (same directory mtime possible): the size
        // and the file's mtime change.
        std::fs::write(&path, "56\n57\n").unwrap();
        wait(
            &[((1, None), vec!["56".to_owned(), "57".to_owned()])]
                .into_iter()
                .collect(),
        );
        std::fs::remove_file(&path).unwrap();
        wait(&Mapping::new());
    }

    #[test]
    fn a_rewrite_that_keeps_the_signature_is_read_in_time() {
        let d = Dir::new("same");
        d.write("2", "71\n");
        let path = d.0.join("2");
        let workers = Workers::new("test");
        let w = Watcher::start(d.0.clone(), Duration::from_millis(2), &workers);
        assert_eq!(*w.current(), [((2, None), vec!["71".to_owned()])].into());
        // Same size, and the old modification times put back on the file
        // and the directory: only the periodic forced read sees it.
        let file_mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        let dir_mtime = std::fs::metadata(&d.0).unwrap().modified().unwrap();
        std::fs::write(&path, "72\n").unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(file_mtime).unwrap();
        std::fs::File::open(&d.0)
            .unwrap()
            .set_modified(dir_mtime)
            .unwrap();
        let want: Mapping = [((2, None), vec!["72".to_owned()])].into();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while *w.current() != want {
            assert!(std::time::Instant::now() < deadline, "{:?}", w.current());
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn export_merges_the_sources() {
        let mapping: Mapping = [
            ((0, None), vec!["7".to_owned(), "8".to_owned()]),
            ((1, Some(2)), vec!["9".to_owned()]),
            ((5, None), vec!["10".to_owned()]), // no such GPU
        ]
        .into_iter()
        .collect();
        let procs = [
            ProcessJob {
                gpu: 0,
                gpu_instance: None,
                job: "7".into(),
            },
            ProcessJob {
                gpu: 1,
                gpu_instance: None,
                job: "11".into(),
            },
            ProcessJob {
                gpu: 1,
                gpu_instance: None,
                job: "11".into(),
            },
        ];
        let mut out = Sample::new();
        export(&mut out, &[Some("GPU-a"), Some("GPU-b")], &procs, &mapping);
        let mut text = String::new();
        out.encode_text(&mut text);
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                r#"accel_gpu_job_info{gpu="0",uuid="GPU-a",slurm_job="7",gpu_instance="",source="process"} 1"#,
                r#"accel_gpu_job_info{gpu="0",uuid="GPU-a",slurm_job="8",gpu_instance="",source="mapping"} 1"#,
                r#"accel_gpu_job_info{gpu="1",uuid="GPU-b",slurm_job="11",gpu_instance="",source="process"} 1"#,
                r#"accel_gpu_job_info{gpu="1",uuid="GPU-b",slurm_job="9",gpu_instance="2",source="mapping"} 1"#,
            ]
        );
    }
}
