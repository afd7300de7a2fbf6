//! `accel_storage_probe_*`: in each directory given with
//! `--collector.storage-probe.path` (the data set's mount, the checkpoint
//! directory), each sample writes a 4 KiB file, fsyncs it, reads it back
//! (its pages dropped first, so the read reaches the storage) and deletes
//! it, and exports how long each step took, whether the probe succeeded,
//! and when it last did.
//!
//! A hung network or FUSE mount freezes a data loader with nothing else on
//! the dashboards saying why: the filesystem collector's statfs may still
//! answer from the client while reads and writes hang. This probe does what
//! the job does. Off by default: it writes to the storage it watches.
//!
//! # A probe that hangs
//!
//! Each probe runs on a short-lived thread of its own, as the filesystem
//! collector's statfs calls do (`collectors/src/filesystem/mod.rs` says why
//! not on a supervised worker: a thread blocked in the kernel cannot beat).
//! The sample starts the probes of every path at once and waits for them
//! until `--collector.storage-probe.timeout`; a probe still running then is
//! shown failed (`accel_storage_probe_success 0`, an error of kind
//! `timeout`), and its path gets no new probe until it returns, so a hung
//! mount holds one thread however long it hangs. The other paths and the
//! other collectors are never held up; keep the timeout under the interval
//! (10 s and 60 s by default).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::options::{options, parse_duration, parse_path};
use crate::{BuildContext, Built, CollectError, Collector, ErrorKind, FamilyDef, Sample, Spec};

/// The storage probe's registry entry.
pub const SPEC: Spec = Spec {
    name: "storage-probe",
    help: "write, fsync, read back and delete a 4 KiB file in each --collector.storage-probe.path, with a deadline (a hung NFS, Lustre or FUSE mount shows as a failed probe)",
    default_enabled: false,
    default_interval: Duration::from_secs(60),
    options: options::<StorageProbeOptions>(),
    detail: "",
    families: FAMILIES,
    prefixes: &["accel_storage_probe_"],
    outside: &[],
    build,
};

/// The storage probe's options.
#[derive(clap::Args, Clone, Debug, PartialEq)]
pub struct StorageProbeOptions {
    /// The directories probed.
    #[arg(
        id = "collector.storage-probe.path",
        long = "collector.storage-probe.path",
        value_name = "DIR",
        help = "A directory to probe (repeatable): where the data set or the checkpoints live.",
        action = clap::ArgAction::Append,
        value_parser = parse_path
    )]
    pub paths: Vec<PathBuf>,
    /// How long a probe may take before it is shown failed.
    #[arg(
        id = "collector.storage-probe.timeout",
        long = "collector.storage-probe.timeout",
        value_name = "DURATION",
        help = "How long a probe may take before it is shown failed (keep it under the interval).",
        default_value = "10s",
        value_parser = parse_duration
    )]
    pub timeout: Duration,
}

/// `accel_storage_probe_duration_seconds`.
pub const DURATION: FamilyDef = FamilyDef::gauge(
    "accel_storage_probe_duration_seconds",
    "How long each step of the last storage probe took.",
)
.labels(&["path", "op"])
.doc("time of one step of the last probe: `write` (create and write 4 KiB), `fsync`, `read` (read back, cache dropped), `delete`; a step not reached has no series")
.source("the probe's own calls; `collectors/src/storage_probe.rs`");
/// `accel_storage_probe_success`.
pub const SUCCESS: FamilyDef = FamilyDef::gauge(
    "accel_storage_probe_success",
    "Whether the last storage probe of the path succeeded within --collector.storage-probe.timeout.",
)
.labels(&["path"])
.doc("1 when the last probe wrote, synced, read back the same bytes and deleted its file within the deadline; 0 when a step failed or the probe is still running past the deadline (a hung mount)")
.source("the probe");
/// `accel_storage_probe_last_success_timestamp_seconds`.
pub const LAST_SUCCESS: FamilyDef = FamilyDef::gauge(
    "accel_storage_probe_last_success_timestamp_seconds",
    "When a storage probe of the path last succeeded, in unixtime.",
)
.labels(&["path"])
.doc("Unix time at which the last successful probe finished; no series until one has")
.source("the probe");

/// Every family this collector exports.
pub const FAMILIES: &[FamilyDef] = &[DURATION, SUCCESS, LAST_SUCCESS];

/// The bytes a probe writes.
pub const PROBE_BYTES: usize = 4096;

/// The steps of a probe, in order.
pub const OPS: [&str; 4] = ["write", "fsync", "read", "delete"];

/// What a probe that returned gave: the time of each step reached, and
/// the error of the step that failed, if one did.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// Seconds per step, in [`OPS`] order, for the steps done.
    pub steps: Vec<(&'static str, f64)>,
    /// The failed step and why.
    pub error: Option<(&'static str, io::ErrorKind, String)>,
}

/// One probe of `dir`: write, fsync, read back and delete a 4 KiB file.
pub fn probe(dir: &Path) -> Outcome {
    let file = dir.join(format!(".accel-storage-probe.{}", std::process::id()));
    let mut steps = Vec::with_capacity(4);
    let data: Vec<u8> = {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        (0..PROBE_BYTES)
            .map(|i| (seed.rotate_left(i as u32 % 64) >> 7) as u8 ^ i as u8)
            .collect()
    };
    let r = (|| -> Result<(), (&'static str, io::Error)> {
        let t = Instant::now();
        let f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&file)
            .and_then(|mut f| f.write_all(&data).map(|()| f))
            .map_err(|e| ("write", e))?;
        steps.push(("write", t.elapsed().as_secs_f64()));
        let t = Instant::now();
        f.sync_all().map_err(|e| ("fsync", e))?;
        steps.push(("fsync", t.elapsed().as_secs_f64()));
        drop(f);
        let t = Instant::now();
        let mut back = Vec::with_capacity(PROBE_BYTES);
        File::open(&file)
            .and_then(|mut f| {
                // SAFETY: a plain syscall on an open descriptor; failing
                // only leaves the pages cached.
                unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
                f.read_to_end(&mut back)
            })
            .map_err(|e| ("read", e))?;
        if back != data {
            return Err((
                "read",
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "read back {} bytes that differ from those written",
                        back.len()
                    ),
                ),
            ));
        }
        steps.push(("read", t.elapsed().as_secs_f64()));
        let t = Instant::now();
        std::fs::remove_file(&file).map_err(|e| ("delete", e))?;
        steps.push(("delete", t.elapsed().as_secs_f64()));
        Ok(())
    })();
    let error = r.err().map(|(op, e)| {
        if op != "delete" {
            let _ = std::fs::remove_file(&file);
        }
        (op, e.kind(), e.to_string())
    });
    Outcome { steps, error }
}

/// The probe function: [`probe`] in the agent; a test may give one that
/// hangs.
pub type ProbeFn = fn(&Path) -> Outcome;

#[derive(Debug, Default)]
struct Slot {
    /// When the probe now running started.
    running_since: Option<Instant>,
    /// What the last probe that returned gave.
    last: Option<Outcome>,
}

/// The probes of every path: at most one running per path.
#[derive(Clone)]
pub struct Probes {
    slots: Arc<(Mutex<Vec<Slot>>, Condvar)>,
    paths: Arc<Vec<PathBuf>>,
    probe: ProbeFn,
    timeout: Duration,
}

/// What one path's probe gave at a sample.
#[derive(Clone, Debug, PartialEq)]
pub enum State {
    /// It returned in time.
    Done(Outcome),
    /// It is still running past the deadline (since this long).
    Late(Duration),
    /// No probe thread could be started.
    NotStarted(String),
}

impl Probes {
    /// Probes of `paths` with `probe`, failed after `timeout`.
    pub fn new(paths: Vec<PathBuf>, probe: ProbeFn, timeout: Duration) -> Probes {
        let slots = paths.iter().map(|_| Slot::default()).collect();
        Probes {
            slots: Arc::new((Mutex::new(slots), Condvar::new())),
            paths: Arc::new(paths),
            probe,
            timeout,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        self.slots.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a probe on every path that has none running, waits for them
    /// until the timeout, and says what each path's gave.
    pub fn run(&self) -> Vec<State> {
        let start = Instant::now();
        let mut not_started = vec![None; self.paths.len()];
        {
            let mut slots = self.lock();
            for (i, slot) in slots.iter_mut().enumerate() {
                if slot.running_since.is_some() {
                    continue;
                }
                slot.last = None;
                match self.spawn(i) {
                    Ok(()) => slot.running_since = Some(start),
                    Err(e) => not_started[i] = Some(format!("no probe thread: {e}")),
                }
            }
        }
        let slots = self.lock();
        let (slots, _) = self
            .slots
            .1
            .wait_timeout_while(slots, self.timeout, |s| {
                s.iter().any(|s| s.running_since == Some(start))
            })
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        slots
            .iter()
            .zip(not_started)
            .map(|(s, ns)| match (ns, s.running_since, &s.last) {
                (Some(e), _, _) => State::NotStarted(e),
                (None, Some(since), _) => State::Late(now - since),
                (None, None, Some(o)) => State::Done(o.clone()),
                (None, None, None) => State::NotStarted("no outcome".into()),
            })
            .collect()
    }

    fn spawn(&self, i: usize) -> io::Result<()> {
        let me = self.clone();
        std::thread::Builder::new()
            .name("storage-probe".into())
            .stack_size(128 * 1024)
            .spawn(move || {
                let outcome = (me.probe)(&me.paths[i]);
                let mut slots = me.lock();
                slots[i].running_since = None;
                slots[i].last = Some(outcome);
                drop(slots);
                me.slots.1.notify_all();
            })
            .map(drop)
    }

    /// Probes running now.
    pub fn running(&self) -> usize {
        self.lock()
            .iter()
            .filter(|s| s.running_since.is_some())
            .count()
    }
}

/// The storage probe collector.
pub struct StorageProbe {
    probes: Probes,
    labels: Vec<String>,
    last_success: Vec<Option<f64>>,
}

impl StorageProbe {
    /// A collector probing `paths` with `probe`.
    pub fn new(paths: Vec<PathBuf>, probe: ProbeFn, timeout: Duration) -> StorageProbe {
        StorageProbe {
            labels: paths.iter().map(|p| p.display().to_string()).collect(),
            last_success: vec![None; paths.len()],
            probes: Probes::new(paths, probe, timeout),
        }
    }
}

fn build(ctx: &BuildContext) -> Result<Built, CollectError> {
    let o = ctx.options::<StorageProbeOptions>();
    if o.paths.is_empty() {
        return Ok(Built::Absent(
            "no --collector.storage-probe.path given".into(),
        ));
    }
    Ok(Built::Ready(Box::new(StorageProbe::new(
        o.paths.clone(),
        probe,
        o.timeout,
    ))))
}

impl Collector for StorageProbe {
    fn name(&self) -> &'static str {
        "storage-probe"
    }

    fn sample(&mut self, out: &mut Sample) -> Result<(), CollectError> {
        let states = self.probes.run();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        for (i, state) in states.into_iter().enumerate() {
            let path = self.labels[i].as_str();
            let ok = match state {
                State::Done(o) => {
                    for (op, secs) in &o.steps {
                        out.add(&DURATION).add(&[("path", path), ("op", op)], *secs);
                    }
                    match o.error {
                        None => true,
                        Some((op, kind, msg)) => {
                            let k = if kind == io::ErrorKind::PermissionDenied {
                                ErrorKind::Permission
                            } else {
                                ErrorKind::Io
                            };
                            out.error(CollectError::new(
                                k,
                                format!("storage probe of {path}: {op}: {msg}"),
                            ));
                            false
                        }
                    }
                }
                State::Late(d) => {
                    out.error(CollectError::new(
                        ErrorKind::Timeout,
                        format!(
                            "storage probe of {path}: still running after {:.1} s (a hung mount?)",
                            d.as_secs_f64()
                        ),
                    ));
                    false
                }
                State::NotStarted(e) => {
                    out.error(CollectError::new(
                        ErrorKind::Io,
                        format!("storage probe of {path}: {e}"),
                    ));
                    false
                }
            };
            if ok {
                self.last_success[i] = Some(now);
            }
            out.add(&SUCCESS)
                .add(&[("path", path)], f64::from(u8::from(ok)));
            if let Some(t) = self.last_success[i] {
                out.add(&LAST_SUCCESS).add(&[("path", path)], t);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    static RELEASE: AtomicBool = AtomicBool::new(false);

    /// "/hang" blocks until RELEASE; the rest probe for real.
    fn fake(dir: &Path) -> Outcome {
        if dir == Path::new("/hang") {
            while !RELEASE.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
            return Outcome {
                steps: vec![],
                error: Some(("write", io::ErrorKind::NotConnected, "released".into())),
            };
        }
        probe(dir)
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("accel-probe-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_real_probe_does_every_step_and_leaves_nothing() {
        let d = tempdir("ok");
        let o = probe(&d);
        assert_eq!(o.error, None);
        assert_eq!(o.steps.iter().map(|s| s.0).collect::<Vec<_>>(), OPS);
        assert!(o.steps.iter().all(|s| s.1 >= 0.0 && s.1 < 10.0));
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
        std::fs::remove_dir_all(&d).unwrap();
        let o = probe(&d);
        assert_eq!(o.steps, []);
        assert!(
            matches!(o.error, Some(("write", io::ErrorKind::NotFound, _))),
            "{o:?}"
        );
    }

    #[test]
    fn a_hung_probe_fails_at_its_deadline_and_holds_one_thread() {
        let d = tempdir("hang");
        let probes = Probes::new(
            vec![d.clone(), PathBuf::from("/hang")],
            fake,
            Duration::from_millis(200),
        );
        for round in 0..5 {
            let t = Instant::now();
            let s = probes.run();
            let took = t.elapsed();
            assert!(
                took < Duration::from_millis(1000),
                "round {round}: {took:?}"
            );
            assert!(
                matches!(&s[0], State::Done(o) if o.error.is_none()),
                "{s:?}"
            );
            assert!(matches!(s[1], State::Late(_)), "{s:?}");
            assert_eq!(probes.running(), 1);
        }
        RELEASE.store(true, Ordering::SeqCst);
        let t = Instant::now();
        while probes.running() > 0 && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let s = probes.run();
        assert!(
            matches!(&s[1], State::Done(o) if o.error.is_some()),
            "{s:?}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
