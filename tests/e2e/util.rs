//! Starting the agent binary and talking HTTP to it.

// Not every test binary module uses every helper.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_accel-agent"))
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The fixture tree.
pub fn fixtures() -> PathBuf {
    root().join("tests/fixtures")
}

/// A running agent, killed when dropped.
pub struct Agent {
    pub child: Child,
    pub addr: String,
    pub log: mpsc::Receiver<String>,
    /// Log lines read so far (start-up lines included).
    pub seen: std::sync::Mutex<Vec<String>>,
    /// The event socket this agent was given, removed when dropped.
    pub events_socket: Option<PathBuf>,
}

impl Agent {
    /// Starts the agent with `args` on a free loopback port and waits until
    /// it listens.
    pub fn start(args: &[&str]) -> Agent {
        Self::start_env(args, &[])
    }

    /// As [`start`](Self::start), with extra environment variables. Unless
    /// `args` name `--events.socket`, the agent gets an event socket of its
    /// own under the temporary directory, so that agents running side by
    /// side never touch /run/accel-agent.
    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Agent {
        let mut cmd = Command::new(bin());
        cmd.arg("--web.listen-address=127.0.0.1:0");
        let socket = (!args.iter().any(|a| a.starts_with("--events.socket"))).then(|| {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            std::env::temp_dir().join(format!("accel-e2e-events-{}-{n}.sock", std::process::id()))
        });
        if let Some(s) = &socket {
            cmd.arg(format!("--events.socket={}", s.display()));
        }
        cmd.args(args).envs(env.iter().copied());
        let mut agent = Self::spawn(cmd);
        agent.events_socket = socket;
        agent
    }

    /// Runs `cmd` (the agent, or something that execs it) with stderr
    /// captured, and waits until the agent logs the address it listens on.
    pub fn spawn(mut cmd: Command) -> Agent {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start accel-agent");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if line.contains("msg=listening") {
                        let addr = line
                            .split_whitespace()
                            .find_map(|f| f.strip_prefix("address="))
                            .expect("address in the listening line")
                            .to_owned();
                        seen.push(line);
                        return Agent {
                            child,
                            addr,
                            log: rx,
                            seen: std::sync::Mutex::new(seen),
                            events_socket: None,
                        };
                    }
                    seen.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("agent did not start listening; log:\n{}", seen.join("\n"));
                }
            }
        }
    }

    /// GET `path`; panics on connection errors.
    pub fn get(&self, path: &str) -> Response {
        request(&self.addr, "GET", path, &[])
    }

    /// GET `path` once every collector has finished a sample.
    pub fn get_ready(&self, path: &str) -> Response {
        self.wait_ready();
        self.get(path)
    }

    /// Scrapes /metrics until `cond` holds on the text, at most `within`;
    /// returns that text.
    pub fn wait_for(&self, what: &str, within: Duration, cond: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let text = self.get("/metrics").text();
            if cond(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for /-/ready to answer 200.
    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.get("/-/ready").status != 200 {
            assert!(Instant::now() < deadline, "agent never became ready");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Log lines printed so far, from the start.
    pub fn log_lines(&self) -> Vec<String> {
        let mut seen = self.seen.lock().unwrap();
        seen.extend(self.log.try_iter());
        seen.clone()
    }

    /// Sends SIGTERM and waits for the exit status, at most `within`.
    pub fn terminate(mut self, within: Duration) -> Option<std::process::ExitStatus> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(s) = &self.events_socket {
            let _ = std::fs::remove_file(s);
        }
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// A header's value (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("utf-8 body")
    }
}

/// A minimal HTTP/1.1 client: one request per connection.
pub fn request(addr: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    parse_response(&raw, method == "HEAD")
}

fn parse_response(raw: &[u8], head: bool) -> Response {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head_text = std::str::from_utf8(&raw[..split]).unwrap();
    let mut lines = head_text.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked && !head {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let n = usize::from_str_radix(std::str::from_utf8(&rest[..nl]).unwrap().trim(), 16)
                .unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[nl + 2..nl + 2 + n]);
            rest = &rest[nl + 2 + n + 2..];
        }
        body = out;
    }
    Response {
        status,
        headers,
        body,
    }
}

/// The value of the series whose exposition line starts with `series ` (name
/// and labels exactly as printed).
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .map(|v| v.trim().parse().expect("numeric value"))
}

/// Whether a command is on PATH.
pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A command that tests need; CI installs it, so its absence is a failure.
pub fn require(cmd: &str) -> PathBuf {
    assert!(
        have(cmd),
        "{cmd} is not installed: run .ci/run (it installs the test dependencies) or apt-get install it"
    );
    PathBuf::from(cmd)
}

/// A scratch directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("accel-e2e-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback port that was free a moment ago (bind port 0, read it, let
/// it go), for a server that must be told its port up front.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// A child process other than the agent, killed and reaped when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GETs `path` from `addr` until it answers 200, within `within`. An error
/// says why not: the process behind `proc` exited (e.g. it lost the race
/// for its port), or time ran out.
pub fn wait_http(
    addr: &str,
    path: &str,
    within: Duration,
    proc: &mut Proc,
) -> Result<Response, String> {
    let deadline = Instant::now() + within;
    let mut last = String::from("nothing listening");
    while Instant::now() < deadline {
        if let Ok(Some(st)) = proc.0.try_wait() {
            return Err(format!("the process for {addr} exited: {st}"));
        }
        if TcpStream::connect(addr).is_ok() {
            let r = request(addr, "GET", path, &[]);
            if r.status == 200 {
                return Ok(r);
            }
            last = format!("status {}", r.status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("{addr}{path} not ready within {within:?}: {last}"))
}

/// Starts the agent on a free loopback port with `args` and `env`, and
/// waits (10 s at most) for it to exit: its exit code, or `None` if it was
/// still running, and what it wrote on stderr.
pub fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = Command::new(bin())
        .arg("--web.listen-address=127.0.0.1:0")
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start accel-agent");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return (st.code(), err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return (None, "still running".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A python3 child that burns one CPU for `secs` seconds, returned once its
/// command name is `python3` (python3 may be a pyenv wrapper script that
/// execs the interpreter).
pub fn cpu_burner(secs: u32) -> Child {
    let burner = Command::new(require("python3"))
        .args([
            "-c",
            &format!("import time\nend = time.time() + {secs}\nwhile time.time() < end: pass"),
        ])
        .spawn()
        .expect("start python3");
    let comm = format!("/proc/{}/comm", burner.id());
    let t = Instant::now();
    while std::fs::read_to_string(&comm).unwrap_or_default().trim() != "python3" {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "python3 did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    burner
}

/// Where [`HungFuse`] mounts (a `TempDir` tag): left out of the filesystem
/// oracle comparison, which may run while a hung mount exists.
pub const HUNG_TAG: &str = "fuse-hang";

/// A FUSE mount whose daemon never answers (it never even reads /dev/fuse,
/// so the kernel's INIT stays unanswered and every request waits): statfs
/// on it blocks until the connection is aborted ([`HungFuse::abort`],
/// closing the fd) and fails then with ENOTCONN. Unmounted when dropped.
pub struct HungFuse {
    _dir: TempDir,
    pub mount_point: PathBuf,
    fd: Option<OwnedFd>,
}

impl HungFuse {
    pub fn mount() -> HungFuse {
        let dir = TempDir::new(HUNG_TAG);
        let mount_point = dir.0.join("mnt");
        std::fs::create_dir(&mount_point).unwrap();
        let fd: OwnedFd = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .expect("this test needs /dev/fuse (and root, to mount)")
            .into();
        // SAFETY: plain libc calls with NUL-terminated strings that outlive them.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let opts = format!(
            "fd={},rootmode=40000,user_id={uid},group_id={gid}\0",
            fd.as_raw_fd()
        );
        let target = format!("{}\0", mount_point.display());
        let rc = unsafe {
            libc::mount(
                c"accel-hang".as_ptr(),
                target.as_ptr().cast(),
                c"fuse.accel-hang".as_ptr(),
                0,
                opts.as_ptr().cast(),
            )
        };
        assert_eq!(
            rc,
            0,
            "mounting a FUSE filesystem needs root: {}",
            std::io::Error::last_os_error()
        );
        HungFuse {
            _dir: dir,
            mount_point,
            fd: Some(fd),
        }
    }

    /// Aborts the connection: the hung statfs returns (ENOTCONN).
    pub fn abort(&mut self) {
        self.fd = None;
    }
}

impl Drop for HungFuse {
    fn drop(&mut self) {
        self.fd = None;
        let target = format!("{}\0", self.mount_point.display());
        // SAFETY: as above.
        unsafe { libc::umount2(target.as_ptr().cast(), libc::MNT_DETACH) };
    }
}
