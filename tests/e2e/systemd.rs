//! The systemd unit and the notify protocol: `systemd-analyze` on the unit
//! as shipped (verify clean, security exposure at most 2.1), and the real
//! binary talking to a notify socket the test binds, as systemd would.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::collections::BTreeSet;

use crate::util::{
    bin, fixtures, free_port, request, require, root, wait_http, Agent, Proc, TempDir,
};

/// The exposure `systemd-analyze security` may give the unit at most: 2.1
/// as shipped, of which 0.4 is reading the clock discipline (adjtimex with
/// modes 0, for accel_timex_*: `ProtectClock=no` and `@clock` allowed; the
/// clock cannot be set without CAP_SYS_TIME, which the unit never grants).
pub const MAX_EXPOSURE: f64 = 2.1;

/// The shipped unit with `ExecStart=` pointing at the binary under test
/// (`systemd-analyze verify` checks that the program exists), written as
/// `<dir>/accel-agent.service`.
fn unit_copy(dir: &Path) -> PathBuf {
    let unit = std::fs::read_to_string(root().join("systemd/accel-agent.service")).unwrap();
    assert!(unit.contains("\nExecStart=/usr/bin/accel-agent $ARGS\n"));
    let unit = unit.replace(
        "\nExecStart=/usr/bin/accel-agent ",
        &format!("\nExecStart={} ", bin().display()),
    );
    let path = dir.join("accel-agent.service");
    std::fs::write(&path, unit).unwrap();
    path
}

/// Runs `systemd-analyze verify` on `unit` (extra arguments first) and
/// panics with its output unless it exits 0 and prints nothing.
pub fn verify_clean(args: &[&str], unit: &Path) {
    require("systemd-analyze");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(args)
        .arg(unit)
        .output()
        .expect("run systemd-analyze verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.trim().is_empty(),
        "systemd-analyze verify {}: {}\n{text}",
        unit.display(),
        out.status
    );
}

/// The overall exposure `systemd-analyze security --offline=yes` gives
/// `unit` (extra arguments first), and its full report.
pub fn exposure(args: &[&str], unit: &Path) -> (f64, String) {
    require("systemd-analyze");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .args(args)
        .arg(unit)
        .output()
        .expect("run systemd-analyze security");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let score = text
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for accel-agent.service:"))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure in:\n{text}"));
    (score, text)
}

#[test]
fn unit_verifies_clean() {
    let dir = TempDir::new("unit-verify");
    verify_clean(&[], &unit_copy(&dir.0));
}

#[test]
fn unit_security_exposure_is_at_most_2_1() {
    let dir = TempDir::new("unit-security");
    let (score, report) = exposure(&[], &unit_copy(&dir.0));
    eprintln!("systemd-analyze security: exposure {score}");
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} > {MAX_EXPOSURE}:\n{report}"
    );
}

#[test]
fn unit_keeps_what_the_agent_needs() {
    let unit = std::fs::read_to_string(root().join("systemd/accel-agent.service")).unwrap();
    let lines: Vec<&str> = unit.lines().map(str::trim).collect();
    for needed in [
        "Type=notify",
        "Restart=on-failure",
        "User=accel-agent",
        "EnvironmentFile=-/etc/default/accel-agent",
        "DevicePolicy=closed",
        "DeviceAllow=char-nvidia rw",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    ] {
        assert!(lines.contains(&needed), "the unit lacks {needed:?}");
    }
    assert!(lines.iter().any(|l| l.starts_with("WatchdogSec=")));
    // These would hide what the collectors read: other users' GPU
    // processes in /proc, /proc/diskstats, the NVIDIA device nodes.
    for hiding in [
        "ProtectProc=",
        "ProcSubset=",
        "PrivateDevices=yes",
        "PrivateUsers=yes",
        "PrivateNetwork=yes",
    ] {
        assert!(
            !lines.iter().any(|l| l.starts_with(hiding)),
            "the unit sets {hiding}"
        );
    }
}

/// A datagram socket bound where the agent is told to notify, as systemd's.
struct NotifySocket {
    socket: UnixDatagram,
    /// What `NOTIFY_SOCKET` is set to.
    env: String,
    _dir: Option<TempDir>,
}

impl NotifySocket {
    /// A socket at a path in a scratch directory.
    fn path() -> NotifySocket {
        let dir = TempDir::new("notify");
        let path = dir.0.join("notify");
        NotifySocket {
            socket: UnixDatagram::bind(&path).expect("bind the notify socket"),
            env: path.to_str().unwrap().to_owned(),
            _dir: Some(dir),
        }
    }

    /// A socket with an abstract name (`@name` in `NOTIFY_SOCKET`).
    fn abstract_name() -> NotifySocket {
        let name = format!("accel-e2e-notify-{}-{}", std::process::id(), free_port());
        let addr = SocketAddr::from_abstract_name(&name).unwrap();
        NotifySocket {
            socket: UnixDatagram::bind_addr(&addr).expect("bind the notify socket"),
            env: format!("@{name}"),
            _dir: None,
        }
    }

    /// The messages received within `within`, each split into its lines.
    fn recv_for(&self, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut out = Vec::new();
        while let Some(m) = self.recv_until(deadline) {
            out.extend(m.lines().map(str::to_owned));
        }
        out
    }

    /// The lines received until one equals `line`, within `within`.
    fn wait_for(&self, line: &str, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut out = Vec::new();
        while let Some(m) = self.recv_until(deadline) {
            out.extend(m.lines().map(str::to_owned));
            if m.lines().any(|l| l == line) {
                return out;
            }
        }
        panic!("no {line:?} within {within:?}; received {out:?}");
    }

    fn recv_until(&self, deadline: Instant) -> Option<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        self.socket.set_read_timeout(Some(left)).unwrap();
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

fn count(lines: &[String], line: &str) -> usize {
    lines.iter().filter(|l| *l == line).count()
}

/// Starts the agent as systemd does: with `WATCHDOG_PID` set to its own
/// pid (a shell sets it, then execs the agent in its place).
fn start_as_service(args: &[String], env: &[(&str, &str)]) -> Agent {
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "WATCHDOG_PID=$$; export WATCHDOG_PID; exec \"$0\" \"$@\"",
    ])
    .arg(bin())
    .arg(format!("--web.listen-address=127.0.0.1:{}", free_port()))
    // Never the default event socket under /run.
    .arg("--events.socket=")
    .args(args)
    .envs(env.iter().copied())
    .env_remove("WATCHDOG_PID");
    Agent::spawn(cmd)
}

/// READY=1 waits for the first sample of every collector, pings go on while
/// a collector hangs past its deadline, and SIGTERM sends STOPPING=1.
#[test]
fn notify_ready_after_first_samples_watchdog_and_stopping() {
    let sock = NotifySocket::path();
    // A procfs whose diskstats is a FIFO: the disk collector's first read
    // blocks until the test writes to it, as a read of a hung mount would.
    let proc = TempDir::new("notify-proc");
    for f in ["stat", "meminfo"] {
        std::fs::copy(fixtures().join("proc").join(f), proc.0.join(f)).unwrap();
    }
    let fifo = proc.0.join("diskstats");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);

    let agent = start_as_service(
        &[
            format!("--path.procfs={}", proc.0.display()),
            "--collector.disable-defaults".into(),
            "--collector.disk".into(),
            "--collector.cpu".into(),
            "--collector.cpu.interval=100ms".into(),
        ],
        &[("NOTIFY_SOCKET", &sock.env), ("WATCHDOG_USEC", "500000")],
    );

    // 3 s: past the disk collector's 2 s deadline, so it is stale by now.
    let before = sock.recv_for(Duration::from_secs(3));
    assert_eq!(agent.get("/-/ready").status, 503);
    assert_eq!(count(&before, "READY=1"), 0, "{before:?}");
    assert!(
        before.contains(&"STATUS=Waiting for the first sample of disk".to_owned()),
        "{before:?}"
    );
    // Pinged every 250 ms (half of WATCHDOG_USEC) although disk hangs.
    let pings = count(&before, "WATCHDOG=1");
    assert!(pings >= 8, "{pings} pings in 3 s: {before:?}");

    std::fs::write(
        &fifo,
        std::fs::read_to_string(fixtures().join("proc/diskstats")).unwrap(),
    )
    .unwrap();
    let got = sock.wait_for("READY=1", Duration::from_secs(10));
    assert_eq!(agent.get("/-/ready").status, 200, "{got:?}");

    let after = sock.recv_for(Duration::from_secs(1));
    let pings = count(&after, "WATCHDOG=1");
    assert!(pings >= 2, "{pings} pings in 1 s after READY: {after:?}");
    assert_eq!(count(&after, "READY=1"), 0, "READY=1 sent twice: {after:?}");
    assert!(
        after
            .iter()
            .chain(&got)
            .any(|l| l.starts_with("STATUS=Ready: 2 collectors running")),
        "{got:?} {after:?}"
    );

    let status = agent
        .terminate(Duration::from_secs(5))
        .expect("exit after SIGTERM");
    assert!(status.success(), "{status}");
    let end = sock.recv_for(Duration::from_millis(200));
    assert_eq!(count(&end, "STOPPING=1"), 1, "{end:?}");
}

/// An abstract socket name works, and a WATCHDOG_PID naming another process
/// means no pings (the watchdog is that process's).
#[test]
fn notify_abstract_socket_and_foreign_watchdog_pid() {
    let sock = NotifySocket::abstract_name();
    let agent = Agent::start_env(
        &[
            &format!("--path.procfs={}", fixtures().join("proc").display()),
            "--collector.disable-defaults",
            "--collector.cpu",
            "--collector.memory",
        ],
        &[
            ("NOTIFY_SOCKET", &sock.env),
            ("WATCHDOG_USEC", "200000"),
            ("WATCHDOG_PID", "1"),
        ],
    );
    let got = sock.wait_for("READY=1", Duration::from_secs(10));
    assert_eq!(agent.get("/-/ready").status, 200);
    let got = [got, sock.recv_for(Duration::from_millis(600))].concat();
    assert_eq!(count(&got, "WATCHDOG=1"), 0, "{got:?}");
    let status = agent
        .terminate(Duration::from_secs(5))
        .expect("exit after SIGTERM");
    assert!(status.success(), "{status}");
    let end = sock.recv_for(Duration::from_millis(200));
    assert_eq!(count(&end, "STOPPING=1"), 1, "{end:?}");
}

/// The system calls in `group` (`@name`, expanded recursively by
/// `systemd-analyze syscall-filter`), or the one call named.
fn syscalls(name: &str, out: &mut BTreeSet<String>) {
    if !name.starts_with('@') {
        out.insert(name.to_owned());
        return;
    }
    let list = Command::new("systemd-analyze")
        .args(["syscall-filter", name])
        .output()
        .expect("run systemd-analyze syscall-filter");
    assert!(
        list.status.success(),
        "systemd-analyze syscall-filter {name}"
    );
    for l in String::from_utf8_lossy(&list.stdout).lines().map(str::trim) {
        match l.split_whitespace().next() {
            None => {}
            Some(w) if w.starts_with('#') || w == name => {}
            Some(w) => syscalls(w, out),
        }
    }
}

/// What the unit's `SystemCallFilter=` lines allow, read in order as
/// systemd reads them after a first allow list: an allow line adds its
/// calls, a `~` line removes them.
fn unit_syscall_filter() -> BTreeSet<String> {
    let unit = std::fs::read_to_string(root().join("systemd/accel-agent.service")).unwrap();
    let mut allow = BTreeSet::new();
    for v in unit
        .lines()
        .filter_map(|l| l.trim().strip_prefix("SystemCallFilter="))
    {
        let (deny, v) = match v.strip_prefix('~') {
            Some(v) => (true, v),
            None => (false, v),
        };
        let mut named = BTreeSet::new();
        for name in v.split_whitespace() {
            syscalls(name, &mut named);
        }
        if deny {
            allow.retain(|c| !named.contains(c));
        } else {
            allow.extend(named);
        }
    }
    assert!(allow.len() > 100, "no allow list in the unit: {allow:?}");
    allow
}

/// Every system call the agent makes (starting, sampling the host and
/// eight simulated GPUs, scrapes in every format, notifying, stopping on
/// SIGTERM) is one the unit's `SystemCallFilter=` allows. Under systemd a
/// refused call fails with EPERM, which no other test would see.
#[test]
fn the_agent_makes_only_system_calls_the_unit_allows() {
    require("strace");
    require("systemd-analyze");
    let allowed = unit_syscall_filter();
    let dir = TempDir::new("strace");
    let trace = dir.0.join("trace");
    let sock = NotifySocket::path();
    let addr = format!("127.0.0.1:{}", free_port());
    let strace = Command::new("strace")
        .args(["-f", "-qq", "-o"])
        .arg(&trace)
        .arg(bin())
        .arg(format!("--web.listen-address={addr}"))
        .arg(format!(
            "--nvml.library={}",
            crate::gpu::sim_lib().display()
        ))
        .arg("--collector.gpu.interval=200ms")
        // The event socket's calls (bind, SO_PASSCRED, recvmsg) are traced
        // too, on a socket of the test's own.
        .arg(format!(
            "--events.socket={}",
            dir.0.join("events.sock").display()
        ))
        .env("NVML_SIM_SCENARIO", "8xh100-training")
        .env("NOTIFY_SOCKET", &sock.env)
        .env("WATCHDOG_USEC", "200000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start strace");
    let mut strace = Proc(strace);
    wait_http(&addr, "/-/ready", Duration::from_secs(30), &mut strace).unwrap();
    sock.wait_for("READY=1", Duration::from_secs(10));
    for headers in [
        &[][..],
        &[("Accept-Encoding", "gzip")],
        &[("Accept", "application/openmetrics-text; version=1.0.0")],
    ] {
        assert_eq!(request(&addr, "GET", "/metrics", headers).status, 200);
    }
    assert_eq!(request(&addr, "GET", "/", &[]).status, 200);
    sock.wait_for("WATCHDOG=1", Duration::from_secs(5));

    // The agent is strace's child.
    let pid = strace.0.id();
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    let agent: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
    // SAFETY: kill(2) on the agent, a child of our child, still running.
    assert_eq!(unsafe { libc::kill(agent, libc::SIGTERM) }, 0);
    let status = strace.0.wait().unwrap();
    assert!(status.success(), "the agent under strace: {status}");

    let text = std::fs::read_to_string(&trace).unwrap();
    let used: BTreeSet<String> = text
        .lines()
        .filter_map(|l| {
            let call = l.split_once(' ')?.1.trim_start();
            let name = &call[..call.find('(')?];
            (!name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
                .then(|| name.to_owned())
        })
        .collect();
    assert!(
        used.contains("openat") && used.contains("sendto"),
        "{used:?}"
    );
    let refused: Vec<_> = used.difference(&allowed).collect();
    assert!(
        refused.is_empty(),
        "the unit's SystemCallFilter= refuses {refused:?} (all used: {used:?})"
    );
}
