//! statfs(2) off the sampler thread, with a deadline per mount point.
//!
//! [`Calls::poll`] is what a sample calls: it returns what the last call on
//! each path answered (or that the call is still outstanding past the
//! deadline: stuck) and starts a new call on each path that has none
//! outstanding, on a thread of its own. It never waits. A path's call that
//! does not return is never repeated until it does, so a hung mount holds
//! one thread, however long it hangs and however many samples pass; the
//! number of outstanding calls is also capped as a whole
//! ([`MAX_IN_FLIGHT`]), for a node where hung mounts keep appearing.

use std::collections::HashMap;
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The most statfs calls outstanding at once, all paths together.
pub const MAX_IN_FLIGHT: usize = 64;

/// A statfs answer, in node_exporter's units: blocks × `f_bsize` bytes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stat {
    /// `f_blocks × f_bsize`.
    pub size: f64,
    /// `f_bfree × f_bsize`.
    pub free: f64,
    /// `f_bavail × f_bsize`.
    pub avail: f64,
    /// `f_files`.
    pub files: f64,
    /// `f_ffree`.
    pub files_free: f64,
}

/// The statfs function: [`statfs`] in the agent; a test may give one that
/// hangs or fails on purpose.
pub type StatFn = fn(&Path) -> io::Result<Stat>;

/// statfs(2) on `path`, as node_exporter's `unix.Statfs`.
pub fn statfs(path: &Path) -> io::Result<Stat> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: a zeroed `statfs` is a valid value of the plain C struct, `c`
    // is a NUL-terminated path that outlives the call, and `buf` is a valid
    // out-pointer.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut buf) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // The fields' integer types differ between targets: widen through u64.
    let bsize = buf.f_bsize as u64 as f64;
    Ok(Stat {
        size: buf.f_blocks as u64 as f64 * bsize,
        free: buf.f_bfree as u64 as f64 * bsize,
        avail: buf.f_bavail as u64 as f64 * bsize,
        files: buf.f_files as u64 as f64,
        files_free: buf.f_ffree as u64 as f64,
    })
}

/// What is known of a path at a sample.
#[derive(Clone, Debug, PartialEq)]
pub enum State {
    /// Its first call has not answered yet, and is not yet late.
    Pending,
    /// The last call answered this.
    Ok(Stat),
    /// The last call failed (errno text), or no call could be started.
    Failed(String),
    /// A call is outstanding past the deadline.
    Stuck,
}

#[derive(Debug, Default)]
struct Entry {
    last: Option<Result<Stat, String>>,
    in_flight_since: Option<Instant>,
}

#[derive(Debug, Default)]
struct Table {
    entries: HashMap<String, Entry>,
    in_flight: usize,
}

/// The statfs calls of one collector: the last answer and the outstanding
/// call of each path.
#[derive(Clone, Debug)]
pub struct Calls {
    table: Arc<(Mutex<Table>, Condvar)>,
    statfs: StatFn,
    timeout: Duration,
}

impl Calls {
    /// Calls made with `statfs`, late after `timeout`.
    pub fn new(statfs: StatFn, timeout: Duration) -> Self {
        Self {
            table: Arc::default(),
            statfs,
            timeout,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state of each of `paths`, and a new call started on each that
    /// has none outstanding. Paths not given are forgotten once their call
    /// (if any) has returned.
    pub fn poll(&self, paths: &[&str]) -> Vec<State> {
        let mut t = self.lock();
        let now = Instant::now();
        let states = paths
            .iter()
            .map(|p| {
                let e = t.entries.entry((*p).to_owned()).or_default();
                match (&e.in_flight_since, &e.last) {
                    (Some(since), _) if now.duration_since(*since) >= self.timeout => State::Stuck,
                    (_, Some(Ok(s))) => State::Ok(*s),
                    (_, Some(Err(e))) => State::Failed(e.clone()),
                    (_, None) => State::Pending,
                }
            })
            .collect();
        for p in paths {
            let outstanding = t
                .entries
                .get(*p)
                .is_some_and(|e| e.in_flight_since.is_some());
            if outstanding {
                continue;
            }
            let started = t.in_flight < MAX_IN_FLIGHT && self.start(p);
            let e = t.entries.get_mut(*p).expect("inserted above");
            if started {
                e.in_flight_since = Some(now);
                t.in_flight += 1;
            } else {
                e.last = Some(Err(format!(
                    "no statfs call started: {MAX_IN_FLIGHT} outstanding, or no thread"
                )));
            }
        }
        t.entries
            .retain(|k, e| e.in_flight_since.is_some() || paths.contains(&k.as_str()));
        states
    }

    /// Starts the call on `path` on a thread of its own; false when no
    /// thread could be started.
    fn start(&self, path: &str) -> bool {
        let me = self.clone();
        let owned = path.to_owned();
        std::thread::Builder::new()
            .name("filesystem-statfs".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let r = (me.statfs)(Path::new(&owned)).map_err(|e| e.to_string());
                let mut t = me.lock();
                t.in_flight -= 1;
                if let Some(e) = t.entries.get_mut(&owned) {
                    e.last = Some(r);
                    e.in_flight_since = None;
                }
                drop(t);
                me.table.1.notify_all();
            })
            .is_ok()
    }

    /// Calls outstanding now.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight
    }

    /// Waits until no call is outstanding or `max` has passed (the agent's
    /// start, so that the first sample has answers).
    pub fn wait_idle(&self, max: Duration) {
        let t = self.lock();
        let _ = self
            .table
            .1
            .wait_timeout_while(t, max, |t| t.in_flight > 0)
            .unwrap_or_else(PoisonError::into_inner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    static RELEASE: AtomicBool = AtomicBool::new(false);

    /// "/hang" blocks until RELEASE; "/fail" fails; the rest answer.
    fn fake(path: &Path) -> io::Result<Stat> {
        if path == Path::new("/hang") {
            while !RELEASE.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        if path == Path::new("/fail") {
            return Err(io::Error::from_raw_os_error(libc::EACCES));
        }
        Ok(Stat {
            size: 8192.0,
            free: 4096.0,
            avail: 2048.0,
            files: 10.0,
            files_free: 5.0,
        })
    }

    #[test]
    fn real_statfs_of_root() {
        let s = statfs(Path::new("/")).unwrap();
        assert!(s.size > 0.0 && s.free <= s.size && s.avail <= s.free);
        assert!(statfs(Path::new("/nonexistent/accel")).is_err());
        assert!(statfs(Path::new("/a\0b")).is_err());
    }

    #[test]
    fn a_hung_call_is_stuck_holds_one_thread_and_recovers() {
        let calls = Calls::new(fake, Duration::from_millis(100));
        let paths = ["/ok", "/hang", "/fail"];
        assert_eq!(
            calls.poll(&paths),
            [State::Pending, State::Pending, State::Pending]
        );
        calls.wait_idle(Duration::from_millis(300));
        assert_eq!(calls.in_flight(), 1, "only /hang is outstanding");
        let s = calls.poll(&paths);
        assert!(matches!(s[0], State::Ok(_)), "{s:?}");
        assert_eq!(s[1], State::Stuck);
        assert!(
            matches!(&s[2], State::Failed(e) if e.contains("denied")),
            "{s:?}"
        );
        // Many samples later: still one call on /hang, still stuck, and a
        // poll never waits for it.
        for _ in 0..50 {
            let t = Instant::now();
            let s = calls.poll(&paths);
            assert!(t.elapsed() < Duration::from_millis(50));
            assert_eq!(s[1], State::Stuck);
            assert!(calls.in_flight() <= 3);
            std::thread::sleep(Duration::from_millis(2));
        }
        calls.wait_idle(Duration::from_millis(50));
        assert_eq!(calls.in_flight(), 1);
        RELEASE.store(true, Ordering::SeqCst);
        calls.wait_idle(Duration::from_secs(5));
        assert_eq!(calls.in_flight(), 0);
        assert!(matches!(calls.poll(&paths)[1], State::Ok(_)));
        // A path no longer polled is forgotten.
        calls.wait_idle(Duration::from_secs(5));
        calls.poll(&["/ok"]);
        assert_eq!(calls.lock().entries.len(), 1);
    }
}
