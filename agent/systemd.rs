//! The service manager protocol (`sd_notify(3)`): readiness, the watchdog,
//! status lines and stopping, for `Type=notify` units.
//!
//! Written by hand: one datagram per message to the UNIX socket named by
//! `$NOTIFY_SOCKET` (a path, or an abstract name written with a leading
//! `@`). Without that variable nothing here runs.
//!
//! - `READY=1` once every enabled collector has finished its first sample,
//!   the condition `/-/ready` answers 200 on ([`Agent::ready`]), so
//!   `systemctl start` returns when a scrape would be complete; or after
//!   [`READY_GRACE`] (60 s) if a first sample hangs, so that a driver
//!   wedged since boot does not make systemd restart the agent over and
//!   over: the status line then names the collectors missing.
//! - `WATCHDOG=1` at half the `WatchdogSec=` (`$WATCHDOG_USEC`, for this
//!   process only when `$WATCHDOG_PID` names it), at most every 5 s. The
//!   pings are sent from the HTTP runtime's thread, so a wedged server loop
//!   stops them, and only while every sampler thread is alive. A sampler
//!   thread that has ended (only a panic outside the collector can end one)
//!   stops them and triggers the watchdog at once (`WATCHDOG=trigger`):
//!   systemd restarts the agent.
//! - A collector hung in a call (a wedged driver, a hung mount) does not
//!   stop the pings: the agent still serves every other collector and
//!   reports that one stale, and a restart would hang in the same call.
//! - `STATUS=` says what the agent waits for and which collectors are
//!   stale; `STOPPING=1` on SIGTERM or SIGINT, or when the server ends.

use std::ffi::OsStr;
use std::future::Future;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sampler::Threads;
use crate::state::Agent;

/// How often the agent checks for readiness before the first samples.
const READY_POLL: Duration = Duration::from_millis(20);
/// The longest time between two checks (status, liveness, pings).
const MAX_STEP: Duration = Duration::from_secs(5);
/// The shortest time between two pings, whatever the watchdog timeout.
const MIN_STEP: Duration = Duration::from_millis(10);
/// How long `READY=1` waits for the first samples at most; under the
/// unit's `TimeoutStartSec=` (90 s).
pub const READY_GRACE: Duration = Duration::from_secs(60);

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    address: SocketAddr,
    failed: AtomicBool,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` asks for, or `None` when the variable
    /// is unset (not started by systemd) or names an unsupported address
    /// (logged).
    pub fn from_env() -> Option<Notifier> {
        let spec = std::env::var_os("NOTIFY_SOCKET")?;
        match Notifier::new(&spec) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(socket = ?spec, error = %e, "NOTIFY_SOCKET unusable: not notifying the service manager");
                None
            }
        }
    }

    /// A notifier for the socket `spec`: an absolute path, or `@name` for
    /// an abstract socket.
    pub fn new(spec: &OsStr) -> io::Result<Notifier> {
        let address = parse_address(spec)?;
        let socket = UnixDatagram::unbound()?;
        // A full receive queue must not block the HTTP thread: a message
        // that cannot be sent now is sent again at the next check.
        socket.set_nonblocking(true)?;
        Ok(Notifier {
            socket,
            address,
            failed: AtomicBool::new(false),
        })
    }

    /// Sends one message (`KEY=value` lines). The first failure is logged.
    pub fn send(&self, message: &str) -> io::Result<()> {
        let r = self
            .socket
            .send_to_addr(message.as_bytes(), &self.address)
            .map(|_| ());
        if let Err(e) = &r {
            if !self.failed.swap(true, Ordering::Relaxed) {
                tracing::warn!(error = %e, "cannot notify the service manager");
            }
        }
        r
    }
}

fn parse_address(spec: &OsStr) -> io::Result<SocketAddr> {
    let bytes = spec.as_bytes();
    match bytes.first() {
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]),
        Some(b'/') => SocketAddr::from_pathname(spec),
        _ => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "not an absolute path or an @abstract name",
        )),
    }
}

/// The watchdog timeout the service manager expects pings within, from
/// `$WATCHDOG_USEC` and `$WATCHDOG_PID` (the variables `sd_watchdog_enabled(3)`
/// reads), or `None` when there is no watchdog for this process.
pub fn watchdog_from_env() -> Option<Duration> {
    parse_watchdog(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn parse_watchdog(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid {
        // Set for another process (a parent that passed its environment
        // on): not ours to ping.
        if pid.trim().parse::<u32>().ok()? != me {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

/// The running supervision of the agent on behalf of systemd. Dropping it
/// sends `STOPPING=1` unless a stop signal already did.
#[derive(Debug)]
pub struct Supervisor {
    notifier: Arc<Notifier>,
    stopping: Arc<AtomicBool>,
}

impl Supervisor {
    /// Starts supervising `agent` and its sampler `threads` on `runtime`
    /// (the HTTP server's) when systemd asked for notifications; `None`
    /// otherwise.
    pub fn start(
        runtime: &tokio::runtime::Runtime,
        agent: Arc<Agent>,
        threads: Threads,
    ) -> Option<Supervisor> {
        let notifier = Arc::new(Notifier::from_env()?);
        let watchdog = watchdog_from_env();
        tracing::info!(watchdog = ?watchdog, "notifying the service manager (sd_notify)");
        let stopping = Arc::new(AtomicBool::new(false));
        runtime.spawn(supervise(
            notifier.clone(),
            agent,
            threads,
            watchdog,
            READY_GRACE,
            stopping.clone(),
            stop_signal(),
        ));
        Some(Supervisor { notifier, stopping })
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if !self.stopping.swap(true, Ordering::AcqRel) {
            let _ = self.notifier.send("STOPPING=1");
        }
    }
}

/// SIGTERM or SIGINT. The server watches them too (every listener gets
/// the signal); this one only tells systemd.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

/// What `systemctl status` shows.
fn status(agent: &Agent, ended: &[&str], past_grace: bool) -> String {
    if !ended.is_empty() {
        return format!(
            "Sampler thread of {} ended: watchdog triggered",
            ended.join(", ")
        );
    }
    let waiting = agent.waiting_for();
    if !waiting.is_empty() {
        let waiting = waiting.join(", ");
        return if past_grace {
            format!("Ready without a first sample of {waiting} (hung?)")
        } else {
            format!("Waiting for the first sample of {waiting}")
        };
    }
    let stale: Vec<_> = agent
        .collectors
        .iter()
        .filter(|c| agent.is_stale(c, &c.snapshot()))
        .map(|c| c.name)
        .collect();
    let n = agent.collectors.len();
    let mut s = format!(
        "Ready: {n} {} running",
        if n == 1 { "collector" } else { "collectors" }
    );
    if !stale.is_empty() {
        s.push_str("; stale (hung or overrunning): ");
        s.push_str(&stale.join(", "));
    }
    s
}

/// The supervision loop: readiness, status, pings, until `stop`.
///
/// `grace` bounds the wait for the first samples: a collector whose first
/// sample hangs (a driver wedged since boot) must not keep the service
/// "activating" until systemd's start timeout kills and restarts it, again
/// and again, while the other collectors could be serving. Past it,
/// `READY=1` is sent anyway and the status names the collectors missing.
async fn supervise(
    notifier: Arc<Notifier>,
    agent: Arc<Agent>,
    threads: Threads,
    watchdog: Option<Duration>,
    grace: Duration,
    stopping: Arc<AtomicBool>,
    stop: impl Future<Output = ()>,
) {
    let ping_every = watchdog.map(|w| (w / 2).clamp(MIN_STEP, MAX_STEP));
    let step = ping_every.unwrap_or(MAX_STEP);
    let started = Instant::now();
    let (mut ready_sent, mut triggered, mut logged_end, mut logged_grace) =
        (false, false, false, false);
    let mut last_status = String::new();
    let mut last_ping: Option<Instant> = None;
    tokio::pin!(stop);
    loop {
        let ended = threads.ended();
        if !ended.is_empty() {
            if !logged_end {
                tracing::error!(
                    collectors = ended.join(","),
                    "a sampler thread has ended: stopping the watchdog pings so that systemd restarts the agent"
                );
                logged_end = true;
            }
            if watchdog.is_some() && !triggered {
                triggered = notifier.send("WATCHDOG=trigger").is_ok();
            }
        }
        let past_grace = started.elapsed() >= grace;
        let ready = agent.ready();
        if !ready && past_grace && !logged_grace {
            tracing::warn!(
                waiting = agent.waiting_for().join(","),
                grace = ?grace,
                "collectors have not finished a first sample: telling systemd the agent is ready anyway, it serves the others"
            );
            logged_grace = true;
        }
        if (ready || past_grace) && !ready_sent {
            ready_sent = notifier.send("READY=1").is_ok();
        }
        let st = status(&agent, &ended, past_grace);
        if st != last_status && notifier.send(&format!("STATUS={st}")).is_ok() {
            last_status = st;
        }
        if let Some(every) = ping_every {
            let due = match last_ping {
                Some(t) => t.elapsed() >= every,
                None => true,
            };
            if ended.is_empty() && due && notifier.send("WATCHDOG=1").is_ok() {
                last_ping = Some(Instant::now());
            }
        }
        let sleep = if ready || past_grace {
            step
        } else {
            READY_POLL.min(step)
        };
        tokio::select! {
            () = tokio::time::sleep(sleep) => {}
            () = &mut stop => break,
        }
    }
    if !stopping.swap(true, Ordering::AcqRel) {
        let _ = notifier.send("STOPPING=1\nSTATUS=Stopping");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::CollectorState;
    use accel_collectors::Sample;
    use std::ffi::OsString;

    #[test]
    fn addresses() {
        let a = parse_address(OsStr::new("@accel/notify")).unwrap();
        assert_eq!(a.as_abstract_name(), Some(&b"accel/notify"[..]));
        let p = parse_address(OsStr::new("/run/systemd/notify")).unwrap();
        assert_eq!(
            p.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        for bad in ["", "relative/path", "vsock:2:1234"] {
            assert!(parse_address(&OsString::from(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn watchdog_variables() {
        let us = Some("30000000");
        assert_eq!(parse_watchdog(us, None, 7), Some(Duration::from_secs(30)));
        assert_eq!(
            parse_watchdog(us, Some("7"), 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_watchdog(us, Some("8"), 7), None);
        assert_eq!(parse_watchdog(us, Some("x"), 7), None);
        assert_eq!(parse_watchdog(None, Some("7"), 7), None);
        assert_eq!(parse_watchdog(Some("0"), None, 7), None);
        assert_eq!(parse_watchdog(Some("-1"), None, 7), None);
    }

    /// Messages received within `within`.
    fn drain(rx: &UnixDatagram, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return out;
            }
            rx.set_read_timeout(Some(left)).unwrap();
            match rx.recv(&mut buf) {
                Ok(n) => out.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(_) => return out,
            }
        }
    }

    /// `supervise` on its own runtime thread, with one collector `cpu`
    /// whose sampler thread runs until `release` is dropped.
    struct Harness {
        rx: UnixDatagram,
        agent: Arc<Agent>,
        state: Arc<CollectorState>,
        release: Option<std::sync::mpsc::Sender<()>>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        driver: Option<std::thread::JoinHandle<()>>,
    }

    impl Harness {
        fn start(tag: &str, watchdog: Option<Duration>, grace: Duration) -> Harness {
            let name = format!("accel-agent-test-{}-{tag}", std::process::id());
            let addr = SocketAddr::from_abstract_name(&name).unwrap();
            let rx = UnixDatagram::bind_addr(&addr).unwrap();
            let notifier = Arc::new(Notifier::new(OsStr::new(&format!("@{name}"))).unwrap());
            let state = Arc::new(CollectorState::new("cpu", Duration::from_secs(1)));
            let agent = Arc::new(Agent::new(vec![state.clone()], vec![]));
            let (release, wait) = std::sync::mpsc::channel::<()>();
            let sampler = std::thread::spawn(move || {
                let _ = wait.recv();
            });
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = rt.spawn(supervise(
                notifier,
                agent.clone(),
                Threads(vec![("cpu", sampler)]),
                watchdog,
                grace,
                Arc::new(AtomicBool::new(false)),
                async {
                    let _ = stopped.await;
                },
            ));
            let driver = std::thread::spawn(move || rt.block_on(task).unwrap());
            Harness {
                rx,
                agent,
                state,
                release: Some(release),
                stop: Some(stop),
                driver: Some(driver),
            }
        }

        fn recv(&self, within: Duration) -> Vec<String> {
            drain(&self.rx, within)
        }

        fn sample(&self) {
            self.agent.begin_sample(&self.state);
            self.agent
                .publish(&self.state, Ok(Sample::new()), Instant::now(), 0);
        }

        /// Stops the loop and returns what it sent last.
        fn stop(mut self) -> Vec<String> {
            self.stop.take().unwrap().send(()).unwrap();
            self.driver.take().unwrap().join().unwrap();
            self.recv(Duration::from_millis(100))
        }
    }

    fn has(msgs: &[String], m: &str) -> bool {
        msgs.iter().any(|x| x == m)
    }

    #[test]
    fn ready_after_first_sample_and_no_pings_once_a_sampler_ends() {
        let mut h = Harness::start(
            "end",
            Some(Duration::from_millis(100)),
            Duration::from_secs(60),
        );

        // Before the first sample: pings and a status, not ready.
        let msgs = h.recv(Duration::from_millis(300));
        assert!(!has(&msgs, "READY=1"), "{msgs:?}");
        assert!(
            msgs.iter().filter(|m| *m == "WATCHDOG=1").count() >= 3,
            "{msgs:?}"
        );
        assert!(
            has(&msgs, "STATUS=Waiting for the first sample of cpu"),
            "{msgs:?}"
        );

        h.sample();
        let msgs = h.recv(Duration::from_millis(200));
        assert!(has(&msgs, "READY=1"), "{msgs:?}");
        assert!(has(&msgs, "STATUS=Ready: 1 collector running"), "{msgs:?}");

        // The sampler thread ends: the watchdog is triggered, pings stop.
        drop(h.release.take());
        let msgs = h.recv(Duration::from_millis(400));
        let trigger = msgs.iter().position(|m| m == "WATCHDOG=trigger");
        let trigger = trigger.unwrap_or_else(|| panic!("no trigger: {msgs:?}"));
        assert!(!has(&msgs[trigger..], "WATCHDOG=1"), "{msgs:?}");
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("STATUS=Sampler thread of cpu ended")),
            "{msgs:?}"
        );

        assert_eq!(h.stop(), ["STOPPING=1\nSTATUS=Stopping"]);
    }

    #[test]
    fn ready_after_the_grace_when_a_first_sample_hangs() {
        let h = Harness::start(
            "grace",
            Some(Duration::from_millis(100)),
            Duration::from_millis(300),
        );
        let not_ping = |msgs: Vec<String>| -> Vec<String> {
            msgs.into_iter().filter(|m| m != "WATCHDOG=1").collect()
        };
        let msgs = not_ping(h.recv(Duration::from_millis(200)));
        assert_eq!(msgs, ["STATUS=Waiting for the first sample of cpu"]);
        let msgs = not_ping(h.recv(Duration::from_millis(300)));
        assert_eq!(
            msgs,
            [
                "READY=1",
                "STATUS=Ready without a first sample of cpu (hung?)"
            ]
        );
        // The sample completes late: the status says so, READY is not repeated.
        h.sample();
        let msgs = not_ping(h.recv(Duration::from_millis(300)));
        assert_eq!(msgs, ["STATUS=Ready: 1 collector running"]);
        assert_eq!(not_ping(h.stop()), ["STOPPING=1\nSTATUS=Stopping"]);
    }
}
