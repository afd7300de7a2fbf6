//! `accel_run_*` and `accel_events_*`: training progress events that jobs
//! send to a Unix datagram socket, turned into runtime goodput (productive
//! over elapsed time), program goodput (MFU) and wasted progress per run;
//! and `accel_gpu_peak_flops`, the peak table MFU divides by.
//!
//! A listener thread owns the socket (`--events.socket`, mode 0660): one
//! JSON object per datagram ([`events`]), the sender's pid from
//! `SCM_CREDENTIALS`, a token bucket per sender and one for the agent, and
//! the bookkeeping ([`state`]) behind a mutex that `sample()` reads.
//! Sending is fire-and-forget for the job; a socket that cannot be created
//! makes this collector absent, never stops the agent. Only a local socket:
//! nothing is ever read from the network.

pub mod events;
pub mod export;
pub mod peak;
pub mod state;

use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::options::{options, parse_interval, parse_rate};
use crate::shared::{GpuSnapshot, Topic};
use crate::workers::{Heartbeat, Worker};
use crate::{
    BuildContext, Built, CollectError, Collector, FamilyDef, Sample, Spec, Workers, HOST_INTERVAL,
};
use events::Reject;
use state::{Limits, Runs};

/// The socket used when `--events.socket` is not given.
pub const DEFAULT_SOCKET: &str = "/run/accel-agent/events.sock";

/// Settings of the goodput collector.
#[derive(clap::Args, Clone, Debug, PartialEq)]
pub struct GoodputOptions {
    /// The event socket; empty disables the collector (see
    /// [`socket`](Self::socket)).
    #[arg(
        id = "events.socket",
        long = "events.socket",
        value_name = "PATH",
        help = "Unix datagram socket training jobs send progress events to (docs/goodput.md); empty to disable.",
        default_value = DEFAULT_SOCKET,
        value_parser = crate::options::parse_path
    )]
    pub socket_path: PathBuf,
    /// Group to own the socket.
    #[arg(
        id = "events.socket-group",
        long = "events.socket-group",
        value_name = "GROUP",
        help = "Group that owns the event socket (mode 0660): the users allowed to send events."
    )]
    pub socket_group: Option<String>,
    /// Most runs tracked.
    #[arg(
        id = "events.max-runs",
        long = "events.max-runs",
        value_name = "N",
        help = "Most training runs tracked at once; the oldest ended one makes room, else new runs are refused.",
        default_value = "32"
    )]
    pub max_runs: usize,
    /// A run idle this long is forgotten.
    #[arg(
        id = "events.run-timeout",
        long = "events.run-timeout",
        value_name = "DURATION",
        help = "A run with no event for this long is forgotten (its series disappear).",
        default_value = "1h",
        value_parser = parse_interval
    )]
    pub run_timeout: Duration,
    /// Events per second from one sending process.
    #[arg(
        id = "events.rate-limit",
        long = "events.rate-limit",
        value_name = "EVENTS",
        help = "Events per second accepted from one sending process (bursts of twice as many); the agent takes at most 20 times this in all.",
        default_value = "1000",
        value_parser = parse_rate
    )]
    pub rate_limit: f64,
    /// The MFU window.
    #[arg(
        id = "events.mfu-window",
        long = "events.mfu-window",
        value_name = "DURATION",
        help = "Sliding window of steps over which accel_run_mfu_ratio is computed.",
        default_value = "5m",
        value_parser = parse_interval
    )]
    pub mfu_window: Duration,
    /// `--events.peak-flops`.
    #[arg(
        id = "events.peak-flops",
        long = "events.peak-flops",
        value_name = "SPEC",
        help = "Peak dense FLOP/s overriding the built-in table: MODEL:DTYPE=FLOPS[,DTYPE=FLOPS][;...], MODEL matched in the NVML name (e.g. \"A10G:bf16=70e12\").",
        value_parser = peak::parse_overrides_flag
    )]
    pub peak_flops: Option<peak::Overrides>,
}

impl GoodputOptions {
    /// The event socket, `None` when disabled.
    pub fn socket(&self) -> Option<&Path> {
        Some(self.socket_path.as_path()).filter(|p| !p.as_os_str().is_empty())
    }

    /// The `--events.peak-flops` entries.
    pub fn overrides(&self) -> &[peak::Override] {
        self.peak_flops.as_ref().map_or(&[], |o| &o.0)
    }
}

/// The goodput collector's registry entry.
pub const SPEC: Spec = Spec {
    name: "goodput",
    help: "training progress events from the event socket (--events.socket): steps, phases, runtime goodput and MFU per run",
    default_enabled: true,
    default_interval: HOST_INTERVAL,
    options: options::<GoodputOptions>(),
    detail: "",
    families: FAMILIES,
    prefixes: &["accel_run_", "accel_events_"],
    outside: &["accel_gpu_peak_flops"],
    build,
};

/// Every family this collector exports.
pub const FAMILIES: &[FamilyDef] = &[
    export::RUN_INFO,
    export::RUN_DEVICE,
    export::RUN_PEAK_FLOPS,
    export::RUN_MFU,
    export::RUN_ACTIVE,
    export::RUN_STEPS,
    export::RUN_TOKENS,
    export::RUN_MODEL_FLOPS,
    export::RUN_STEP_SECONDS,
    export::RUN_PHASE_SECONDS,
    export::RUN_PRODUCTIVE,
    export::RUN_ELAPSED,
    export::RUN_WASTED_STEPS,
    export::RUN_WASTED_SECONDS,
    export::RUN_RESTARTS,
    export::RUN_CHECKPOINTS,
    export::RUN_STEP,
    export::RUN_LAST_CHECKPOINT_STEP,
    export::RUN_LAST_STEP_TIMESTAMP,
    export::GPU_PEAK_FLOPS,
    export::EVENTS_RECEIVED,
    export::EVENTS_ACCEPTED,
    export::EVENTS_REJECTED,
    export::EVENTS_LABELS_DROPPED,
    export::EVENTS_RUNS,
    export::EVENTS_RUNS_EXPIRED,
];

/// Longest the listener waits in `recv` before it beats again.
const RECV_TIMEOUT: Duration = Duration::from_millis(200);
/// How long the listener may go without beating: a receive wait, then one
/// datagram's handling (a cgroup file read, the bookkeeping behind a mutex
/// that `sample()` also takes), with a wide margin.
const LISTENER_SILENCE: Duration = Duration::from_secs(5);

/// The agent's own cap, as a multiple of the per-sender rate.
const GLOBAL_FACTOR: f64 = 20.0;
/// Most senders with a bucket of their own.
const MAX_SENDERS: usize = 1024;

/// A token bucket: `rate` per second, holding at most `burst`.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(burst: f64, now: Instant) -> Self {
        Bucket {
            tokens: burst,
            at: now,
        }
    }

    fn take(&mut self, rate: f64, burst: f64, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + dt * rate).min(burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Per-sender and global rate limits.
struct Limiter {
    rate: f64,
    senders: HashMap<u32, Bucket>,
    global: Bucket,
}

impl Limiter {
    fn new(rate: f64, now: Instant) -> Self {
        Limiter {
            rate,
            senders: HashMap::new(),
            global: Bucket::new(rate * GLOBAL_FACTOR, now),
        }
    }

    fn admit(&mut self, pid: u32, now: Instant) -> bool {
        let (rate, burst) = (self.rate, self.rate * 2.0);
        if self.senders.len() >= MAX_SENDERS && !self.senders.contains_key(&pid) {
            // Forget the senders whose bucket has refilled: they are idle.
            self.senders.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst
            });
        }
        let ok = if self.senders.len() < MAX_SENDERS || self.senders.contains_key(&pid) {
            self.senders
                .entry(pid)
                .or_insert_with(|| Bucket::new(burst, now))
                .take(rate, burst, now)
        } else {
            true
        };
        let g = rate * GLOBAL_FACTOR;
        ok && self.global.take(g, g, now)
    }
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Binds the socket: parent directory made if missing, a stale socket
/// file removed (a live one, another agent's, is left alone), mode 0660,
/// group set, SO_PASSCRED on.
fn bind(path: &Path, group: Option<&str>) -> io::Result<UnixDatagram> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            // Senders must reach the socket whatever the agent's umask.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) => {
            use std::os::unix::fs::FileTypeExt;
            if !m.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "exists and is not a socket",
                ));
            }
            let probe = UnixDatagram::unbound()?;
            if probe.connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another process (another agent?) is listening on it",
                ));
            }
            std::fs::remove_file(path)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let sock = UnixDatagram::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    if let Some(g) = group {
        let gid = group_id(g)?;
        std::os::unix::fs::lchown(path, None, Some(gid))?;
    }
    let one: libc::c_int = 1;
    // SAFETY: setsockopt on a socket we own, with a pointer to a c_int and
    // its size, as SO_PASSCRED and SO_RCVBUF expect.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PASSCRED,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    let size: libc::c_int = 1 << 20;
    // SAFETY: as above. A refusal only leaves the default buffer size.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    // The listener beats between datagrams: a bounded wait keeps it
    // beating while nobody sends.
    sock.set_read_timeout(Some(RECV_TIMEOUT))?;
    Ok(sock)
}

/// The gid of group `name` (or a number).
fn group_id(name: &str) -> io::Result<u32> {
    if let Ok(n) = name.parse() {
        return Ok(n);
    }
    let text = std::fs::read_to_string("/etc/group")?;
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            Some((f.next()?, f.nth(1)?))
        })
        .find(|(n, _)| *n == name)
        .and_then(|(_, gid)| gid.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no group {name:?}")))
}

/// One datagram: its length (the real one, even when cut), and the
/// sender's pid (0 when the kernel gave none).
fn recv(sock: &UnixDatagram, buf: &mut [u8]) -> io::Result<(usize, u32)> {
    // SAFETY: zeroed iovec/msghdr/cmsg buffers, pointers into `buf` and
    // `cmsg` that outlive the call; recvmsg writes at most the lengths
    // given. The control buffer is u64-aligned as cmsghdr needs, and the
    // CMSG_* macros walk only what the kernel wrote (msg_controllen).
    unsafe {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut cmsg = [0u64; 8];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cmsg.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&cmsg) as _;
        let n = libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_TRUNC);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut pid = 0;
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_CREDENTIALS {
                let cred = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::ucred>());
                pid = cred.pid as u32;
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        Ok((n as usize, pid))
    }
}

/// One run of the listener, until asked to stop. The socket outlives the
/// run (it stays bound through a restart); the receive buffer and the rate
/// limits start afresh on each run, so a run after a panic starts clean.
fn listen(sock: &UnixDatagram, runs: &Mutex<Runs>, rate: f64, procfs: &Path, hb: &Heartbeat) {
    let mut buf = vec![0u8; events::MAX_DATAGRAM + 1];
    let mut limiter = Limiter::new(rate, Instant::now());
    let owner = |pid: u32| {
        std::fs::read_to_string(procfs.join(pid.to_string()).join("cgroup"))
            .map(|t| crate::cgroup::parse_cgroup(&t))
            .unwrap_or_default()
    };
    let mut errors = 0u32;
    while !hb.stopped() {
        hb.beat();
        let (n, pid) = match recv(sock, &mut buf) {
            Ok(r) => r,
            // The read timeout: no datagram.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                // Not expected on a bound datagram socket; don't spin.
                if errors == 0 {
                    tracing::warn!(error = %e, "event socket receive failed");
                }
                errors = errors.saturating_add(1);
                if hb.sleep(Duration::from_millis(100)) {
                    return;
                }
                continue;
            }
        };
        #[cfg(test)]
        if &buf[..n.min(buf.len())] == tests::PANIC {
            panic!("injected by a test");
        }
        let now = Instant::now();
        let admitted = limiter.admit(pid, now);
        let parsed = if !admitted {
            Err(Reject::RateLimited)
        } else if n > events::MAX_DATAGRAM {
            Err(Reject::Oversize)
        } else {
            events::parse(&buf[..n])
        };
        let mut r = runs.lock().unwrap_or_else(|e| e.into_inner());
        r.received += 1;
        let result = parsed.and_then(|ev| r.handle(ev, pid, now, now_unix(), &owner));
        if let Err(reason) = result {
            r.reject(reason);
        }
    }
}

/// The goodput collector.
pub struct Goodput {
    runs: Arc<Mutex<Runs>>,
    gpus: Topic<GpuSnapshot>,
    tpus: Topic<GpuSnapshot>,
    overrides: Vec<peak::Override>,
    workers: Workers,
    /// The listener; dropped (and so stopped) before the socket file goes.
    _listener: Worker,
    path: PathBuf,
}

impl Drop for Goodput {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds the event socket and starts the listener; absent when the socket
/// is disabled or cannot be created (one log line says why).
fn build(ctx: &BuildContext) -> Result<Built, CollectError> {
    let (opts, o) = (ctx.paths, ctx.options::<GoodputOptions>());
    let Some(path) = o.socket().map(Path::to_path_buf) else {
        return Ok(Built::Absent("--events.socket is empty".into()));
    };
    let sock = match bind(&path, o.socket_group.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            return Ok(Built::Absent(format!(
                "cannot create the event socket {} ({e}); set --events.socket to a writable path, or empty to disable",
                path.display()
            )))
        }
    };
    let runs = Arc::new(Mutex::new(Runs::new(Limits {
        max_runs: o.max_runs.max(1),
        run_timeout: o.run_timeout,
        mfu_window: o.mfu_window,
    })));
    let listener = {
        let (sock, runs, procfs, rate) = (
            Arc::new(sock),
            runs.clone(),
            opts.procfs.clone(),
            o.rate_limit,
        );
        ctx.workers.spawn("events", LISTENER_SILENCE, move |hb| {
            listen(&sock, &runs, rate, &procfs, hb)
        })?
    };
    tracing::info!(socket = %path.display(), "listening for training events");
    Ok(Built::Ready(Box::new(Goodput {
        runs,
        gpus: ctx.shared.gpus.clone(),
        tpus: ctx.shared.tpus.clone(),
        overrides: o.overrides().to_vec(),
        workers: ctx.workers.clone(),
        _listener: listener,
        path,
    })))
}

impl Collector for Goodput {
    fn name(&self) -> &'static str {
        "goodput"
    }

    fn sample(&mut self, out: &mut Sample) -> Result<(), CollectError> {
        self.workers.check()?;
        let snapshot = self.gpus.latest();
        let gpus = &snapshot.gpus;
        // A run's devices may be TPU chips (the tpu collector's, in the
        // GPUs' shape): they count for its peak, not for accel_gpu_*.
        let tpus = self.tpus.latest();
        let now = Instant::now();
        let mut r = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        r.expire(now);
        r.export(now, gpus, &tpus.gpus, &self.overrides, out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    /// A datagram that makes the listener panic (test builds only): how a
    /// test reaches the real listener's restart from outside.
    pub(super) const PANIC: &[u8] = b"test: panic";

    #[test]
    fn token_buckets_limit_each_sender_and_the_total() {
        let t0 = Instant::now();
        let mut l = Limiter::new(10.0, t0);
        // A burst of twice the rate, then nothing until tokens refill.
        assert_eq!((0..30).filter(|_| l.admit(1, t0)).count(), 20);
        assert!(l.admit(2, t0), "another sender has its own bucket");
        assert!(!l.admit(1, t0 + Duration::from_millis(50)));
        assert!(l.admit(1, t0 + Duration::from_millis(150)));
        // The global cap (20 x rate) holds whatever the number of senders.
        let t1 = t0 + Duration::from_secs(100);
        let mut l = Limiter::new(10.0, t1);
        let ok = (0..1000u32).filter(|p| l.admit(*p, t1)).count();
        assert_eq!(ok, 200);
    }

    #[test]
    fn socket_binds_once_and_replaces_a_stale_file() {
        let dir = std::env::temp_dir().join(format!("goodput-bind-{}", std::process::id()));
        let path = dir.join("sub/events.sock");
        let a = bind(&path, None).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        // A live socket is someone's: refused.
        assert_eq!(
            bind(&path, None).unwrap_err().kind(),
            io::ErrorKind::AddrInUse
        );
        drop(a);
        // The file left behind is stale: replaced.
        let b = bind(&path, Some("0")).unwrap();
        let c = UnixDatagram::unbound().unwrap();
        c.send_to(b"{}", &path).unwrap();
        let mut buf = [0u8; 16];
        let (n, pid) = recv(&b, &mut buf).unwrap();
        assert_eq!((n, pid), (2, std::process::id()));
        drop(b);
        // --events.socket-group: by name or number; the owner may give the
        // socket to one of its groups (root to any).
        assert_eq!(group_id("root").unwrap(), 0);
        assert!(group_id("no-such-group-here").is_err());
        // SAFETY: getegid has no preconditions.
        let mine = unsafe { libc::getegid() };
        let want = if mine == 0 { 65534 } else { mine };
        let _c = bind(&path, Some(&want.to_string())).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&path).unwrap().gid(), want);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A collector built the agent's way, on a socket and procfs of its own
    /// under `dir`, with the supervisor it reports to.
    fn collector(dir: &Path) -> (Box<dyn Collector>, Workers, PathBuf) {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir.join("proc")).unwrap();
        let path = dir.join("events.sock");
        let opts = GoodputOptions {
            socket_path: path.clone(),
            ..crate::options::defaults::<GoodputOptions>()
        };
        let paths = crate::Paths {
            procfs: dir.join("proc"),
            ..Default::default()
        };
        let workers = Workers::new("goodput");
        let built = build(&BuildContext {
            paths: &paths,
            options: &opts,
            shared: &Default::default(),
            workers: &workers,
            activity: &Default::default(),
            detail: false,
        });
        let Ok(Built::Ready(c)) = built else {
            panic!("the goodput collector did not build");
        };
        (c, workers, path)
    }

    fn send(path: &Path, datagram: &[u8]) {
        UnixDatagram::unbound()
            .unwrap()
            .send_to(datagram, path)
            .unwrap();
    }

    fn sample(c: &mut Box<dyn Collector>) -> Result<String, CollectError> {
        let mut s = Sample::new();
        c.sample(&mut s)?;
        let mut t = String::new();
        s.encode_text(&mut t);
        Ok(t)
    }

    fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let until = Instant::now() + Duration::from_secs(20);
        while !f() {
            assert!(Instant::now() < until, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn a_listener_panic_is_counted_fails_the_collector_and_restarts_on_the_same_socket() {
        let dir = std::env::temp_dir().join(format!("goodput-panic-{}", std::process::id()));
        let (mut c, workers, path) = collector(&dir);
        assert!(sample(&mut c).is_ok());
        send(&path, PANIC);
        wait_for("the panic to be counted", || {
            workers
                .stats()
                .restarts
                .load(std::sync::atomic::Ordering::Relaxed)
                == 1
        });
        // Until the listener runs again, its data is not served.
        let mut failure = None;
        wait_for("the sample to fail", || {
            failure = sample(&mut c).err();
            failure.is_some()
        });
        let e = failure.unwrap();
        assert!(e.message.contains("panicked"), "{e}");
        wait_for("the restart", || sample(&mut c).is_ok());
        // The restarted listener reads the socket that stayed bound, into
        // the same bookkeeping.
        send(&path, br#"{"v":1,"kind":"run_start","run":"after"}"#);
        wait_for("the event after the restart", || {
            sample(&mut c).is_ok_and(|t| t.contains("accel_run_info{run=\"after\"} 1"))
        });
        let t = sample(&mut c).unwrap();
        assert!(t.contains("accel_events_received_total 1\n"), "{t}");
        assert_eq!(
            workers
                .stats()
                .restarts
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        drop(c);
        assert!(
            !path.exists(),
            "the socket file is removed with the collector"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_hung_listener_fails_the_collector_until_it_moves_again() {
        let dir = std::env::temp_dir().join(format!("goodput-hang-{}", std::process::id()));
        let (mut c, workers, path) = collector(&dir);
        // The listener reads the sender's cgroup file on its first event: a
        // FIFO nobody writes makes that read block, as a wedged file system
        // would.
        let me = dir.join(format!("proc/{}", std::process::id()));
        std::fs::create_dir_all(&me).unwrap();
        let fifo = me.join("cgroup");
        let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        assert!(sample(&mut c).is_ok());
        send(&path, br#"{"v":1,"kind":"run_start","run":"stuck"}"#);
        let started = Instant::now();
        // The stuck listener holds the bookkeeping's lock: only the
        // supervisor is asked until it calls the listener silent, after
        // which the sample fails before it would wait for the lock.
        wait_for("the hang to be seen", || workers.check().is_err());
        let failure = sample(&mut c).err();
        assert!(started.elapsed() >= LISTENER_SILENCE);
        assert_eq!(failure.unwrap().kind, ErrorKind::Timeout);
        // A writer lets the read end: the listener beats again.
        drop(std::fs::OpenOptions::new().write(true).open(&fifo).unwrap());
        wait_for("recovery", || {
            sample(&mut c).is_ok_and(|t| t.contains("accel_run_info{run=\"stuck\"} 1"))
        });
        drop(c);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
