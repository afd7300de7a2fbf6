//! `--web.config.file`: TLS, client certificates and basic authentication
//! with real clients (curl, and raw sockets for what curl hides), SIGHUP
//! reloads, and bad files. Certificates are made by the test with openssl.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

use crate::util::{request, require, Agent, TempDir};

/// A scratch directory with a CA, a server certificate for 127.0.0.1 and
/// localhost, a client certificate from the same CA, and one from another.
pub(crate) struct Pki {
    dir: TempDir,
}

impl Pki {
    pub(crate) fn new(tag: &str) -> Pki {
        require("openssl");
        let pki = Pki {
            dir: TempDir::new(tag),
        };
        pki.ca("ca");
        pki.ca("other-ca");
        pki.leaf(
            "server",
            "ca",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        );
        pki.leaf("client", "ca", "extendedKeyUsage=clientAuth\n");
        pki.leaf("stranger", "other-ca", "extendedKeyUsage=clientAuth\n");
        pki
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.0.join(name)
    }

    pub(crate) fn p(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    pub(crate) fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir.0)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub(crate) fn ca(&self, name: &str) {
        let (key, crt) = (format!("{name}.key"), format!("{name}.crt"));
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &crt,
            "-days",
            "2",
            "-subj",
            &format!("/CN=accel test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
    }

    pub(crate) fn leaf(&self, name: &str, ca: &str, ext: &str) {
        let (key, csr, crt, extfile) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
            format!("{name}.ext"),
        );
        std::fs::write(
            self.path(&extfile),
            format!("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n{ext}"),
        )
        .unwrap();
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={name}"),
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-set_serial",
            "2",
            "-days",
            "2",
            "-extfile",
            &extfile,
            "-out",
            &crt,
        ]);
    }

    /// Writes `web.yml` in the scratch directory and returns its path.
    pub(crate) fn web_config(&self, text: &str) -> String {
        let file = self.path("web.yml");
        // Write then rename: a reload never sees half a file.
        let tmp = self.path("web.yml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        file.display().to_string()
    }
}

/// The TLS section of a web config using the Pki's files by relative path
/// (the exporter-toolkit resolves them from the config file's directory).
pub(crate) const TLS: &str =
    "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n";

pub(crate) fn users(list: &[(&str, &str)], cost: u32) -> String {
    let mut s = String::from("basic_auth_users:\n");
    for (user, password) in list {
        s.push_str(&format!(
            "  {user}: {}\n",
            bcrypt::hash(password, cost).unwrap()
        ));
    }
    s
}

/// Starts the agent with a web config and only the cpu collector.
pub(crate) fn start(web_config: &str, extra: &[&str]) -> Agent {
    let flag = format!("--web.config.file={web_config}");
    let mut args = vec![
        flag.as_str(),
        "--collector.disable-defaults",
        "--collector.cpu",
    ];
    args.extend_from_slice(extra);
    Agent::start(&args)
}

/// What curl got.
#[derive(Debug)]
pub(crate) struct Curl {
    /// curl's exit code (0: an HTTP response arrived).
    pub(crate) code: i32,
    /// The HTTP status, 0 without a response.
    pub(crate) status: u16,
    /// Response headers and body, as `curl -i` prints them.
    pub(crate) output: String,
    pub(crate) stderr: String,
}

impl Curl {
    fn header(&self, name: &str) -> Option<&str> {
        self.output
            .split("\r\n\r\n")
            .next()
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    }
}

pub(crate) fn curl(url: &str, args: &[&str]) -> Curl {
    require("curl");
    let out = Command::new("curl")
        .args(["-sS", "-i", "--http1.1", "--max-time", "10"])
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run curl");
    let output = String::from_utf8_lossy(&out.stdout).into_owned();
    let status = output
        .lines()
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Curl {
        code: out.status.code().unwrap_or(-1),
        status,
        output,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

pub(crate) fn https(agent: &Agent, path: &str) -> String {
    format!("https://{}{path}", agent.addr)
}

/// Waits for a log line containing `needle`, printed after the ones read
/// so far.
pub(crate) fn wait_log(agent: &Agent, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match agent.log.recv_timeout(left) {
            Ok(line) => {
                agent.seen.lock().unwrap().push(line.clone());
                if line.contains(needle) {
                    return line;
                }
            }
            Err(_) => panic!(
                "no log line with {needle:?}; log:\n{}",
                agent.log_lines().join("\n")
            ),
        }
    }
}

fn hup(agent: &Agent) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(agent.child.id() as i32, libc::SIGHUP) };
}

pub(crate) fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[test]
fn basic_auth_over_tls() {
    let pki = Pki::new("tls-auth");
    let file = pki.web_config(&format!(
        "{TLS}http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n{}",
        users(&[("alice", "right")], 4)
    ));
    let agent = start(&file, &[]);
    let ca = pki.p("ca.crt");
    let url = https(&agent, "/metrics");

    let ok = curl(&url, &["--cacert", &ca, "-u", "alice:right"]);
    assert_eq!(ok.status, 200, "{ok:?}");
    assert!(ok.output.contains("accel_collector_enabled"), "{ok:?}");
    assert_eq!(ok.header("x-content-type-options"), Some("nosniff"));

    for creds in [&["-u", "alice:wrong"][..], &["-u", "bob:right"], &[]] {
        let mut args = vec!["--cacert", ca.as_str()];
        args.extend_from_slice(creds);
        let r = curl(&url, &args);
        assert_eq!(r.status, 401, "{creds:?}: {r:?}");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Basic realm=\"accel-agent\""),
            "{r:?}"
        );
        assert!(!r.output.contains("accel_"), "{r:?}");
    }
    // Every endpoint is behind the password, as with the exporter-toolkit.
    for path in ["/", "/-/healthy", "/-/ready", "/nope"] {
        let r = curl(&https(&agent, path), &["--cacert", &ca]);
        assert_eq!(r.status, 401, "{path}: {r:?}");
    }
    // The server is who it says it is: another CA does not vouch for it.
    let r = curl(&url, &["--cacert", &pki.p("other-ca.crt")]);
    assert_ne!(r.code, 0, "{r:?}");
    let lines = agent.log_lines().join("\n");
    assert!(lines.contains("TLS is enabled"), "{lines}");
    assert!(lines.contains("users=1"), "{lines}");
}

#[test]
fn plain_http_to_the_tls_port_fails_cleanly() {
    let pki = Pki::new("tls-plain");
    let file = pki.web_config(TLS);
    let agent = start(&file, &["--web.header-timeout=2s", "--web.max-requests=1"]);

    let started = Instant::now();
    let mut s = TcpStream::connect(&agent.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .expect("the server closes the connection");
    let reply = String::from_utf8_lossy(&raw);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert!(reply.starts_with("HTTP/1.1 400 "), "{reply}");
    assert!(reply.contains("HTTPS"), "{reply}");
    assert!(!reply.contains("accel_"), "{reply}");

    let r = curl(&format!("http://{}/metrics", agent.addr), &[]);
    assert_eq!(r.status, 400, "{r:?}");

    // A client that connects and says nothing is dropped after
    // --web.header-timeout (its handshake deadline). It holds no request
    // slot meanwhile: with --web.max-requests=1 a TLS client is still served.
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let mut silent = TcpStream::connect(&agent.addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let served = curl(
        &https(&agent, "/-/healthy"),
        &["--cacert", &pki.p("ca.crt")],
    );
    assert_eq!(served.status, 200, "{served:?}");
    let mut buf = [0u8; 16];
    let n = silent.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "expected a close");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(6),
        "closed after {waited:?}"
    );

    // TLS still works, and a handshake in progress does not delay SIGTERM.
    let r = curl(
        &https(&agent, "/-/healthy"),
        &["--cacert", &pki.p("ca.crt")],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let _held = TcpStream::connect(&agent.addr).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let status = agent
        .terminate(Duration::from_secs(2))
        .expect("exited within 2 s");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn client_certificates() {
    let pki = Pki::new("tls-mtls");
    let file = pki.web_config(&format!(
        "{TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n  min_version: TLS12\n  max_version: TLS13\n"
    ));
    let agent = start(&file, &[]);
    let ca = pki.p("ca.crt");
    let url = https(&agent, "/metrics");

    for tls in ["--tlsv1.2", "--tlsv1.3"] {
        let started = Instant::now();
        let without = curl(&url, &["--cacert", &ca, tls, "--tls-max", &tls[6..]]);
        assert_ne!(without.code, 0, "{tls}: {without:?}");
        assert_eq!(without.status, 0, "{tls}: {without:?}");
        assert!(!without.stderr.is_empty(), "{tls}: curl says why");
        assert!(started.elapsed() < Duration::from_secs(3));

        let with = curl(
            &url,
            &[
                "--cacert",
                &ca,
                tls,
                "--tls-max",
                &tls[6..],
                "--cert",
                &pki.p("client.crt"),
                "--key",
                &pki.p("client.key"),
            ],
        );
        assert_eq!(with.status, 200, "{tls}: {with:?}");
        assert!(with.output.contains("accel_collector_enabled"));

        let stranger = curl(
            &url,
            &[
                "--cacert",
                &ca,
                tls,
                "--tls-max",
                &tls[6..],
                "--cert",
                &pki.p("stranger.crt"),
                "--key",
                &pki.p("stranger.key"),
            ],
        );
        assert_ne!(stranger.code, 0, "{tls}: {stranger:?}");
        assert_eq!(stranger.status, 0, "{tls}: {stranger:?}");
    }
}

#[test]
fn cached_credentials_and_a_password_change_on_sighup() {
    let pki = Pki::new("tls-reload");
    let file = pki.web_config(&format!("{TLS}{}", users(&[("alice", "one")], 4)));
    let agent = start(&file, &[]);
    let ca = pki.p("ca.crt");
    let url = https(&agent, "/metrics");
    let get = |creds: &str| curl(&url, &["--cacert", &ca, "-u", creds]).status;

    assert_eq!(get("alice:one"), 200);
    assert_eq!(get("alice:one"), 200, "a remembered credential still works");
    assert_eq!(get("alice:two"), 401);

    pki.web_config(&format!("{TLS}{}", users(&[("alice", "two")], 4)));
    hup(&agent);
    wait_log(&agent, "configuration reloaded");
    assert_eq!(get("alice:one"), 401, "the old password is refused");
    assert_eq!(get("alice:two"), 200);
    assert_eq!(get("alice:two"), 200);
}

#[test]
fn certificate_rotation_without_and_with_sighup() {
    let pki = Pki::new("tls-rotate");
    let file = pki.web_config(TLS);
    let agent = start(&file, &[]);
    let url = https(&agent, "/-/healthy");
    let (ca, other) = (pki.p("ca.crt"), pki.p("other-ca.crt"));
    assert_eq!(curl(&url, &["--cacert", &ca]).status, 200);
    // A new certificate from another CA: in use from the next connection
    // on, without a signal (as with the exporter-toolkit), on the same
    // listener; and after SIGHUP.
    pki.leaf(
        "server2",
        "other-ca",
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    );
    pki.web_config("tls_server_config:\n  cert_file: server2.crt\n  key_file: server2.key\n");
    assert_eq!(curl(&url, &["--cacert", &other]).status, 200);
    assert_ne!(curl(&url, &["--cacert", &ca]).code, 0);
    hup(&agent);
    wait_log(&agent, "configuration reloaded");
    assert_eq!(curl(&url, &["--cacert", &other]).status, 200);
    let old = curl(&url, &["--cacert", &ca]);
    assert_ne!(old.code, 0, "{old:?}");
}

#[test]
fn bad_web_config_on_sighup_keeps_the_old_one() {
    let pki = Pki::new("tls-badreload");
    let file = pki.web_config(&format!("{TLS}{}", users(&[("alice", "one")], 4)));
    // The web config named by the TOML config file, whose log level a reload
    // also applies.
    let toml = pki.path("accel.toml");
    std::fs::write(&toml, format!("web.config.file = {file:?}\n")).unwrap();
    let agent = Agent::start(&[
        &format!("--config.file={}", toml.display()),
        "--collector.disable-defaults",
        "--collector.cpu",
    ]);
    let ca = pki.p("ca.crt");
    let url = https(&agent, "/metrics");
    assert_eq!(
        curl(&url, &["--cacert", &ca, "-u", "alice:one"]).status,
        200
    );

    for bad in [
        "tls_server_config:\n  cert_file: missing.crt\n  key_file: server.key\n".to_owned(),
        format!("{TLS}basic_auth_users:\n  alice: one\n"),
        format!("{TLS}  client_auth_type: Sometimes\n"),
        "tls_server_config: [\n".to_owned(),
    ] {
        pki.web_config(&bad);
        hup(&agent);
        let line = wait_log(&agent, "reload failed");
        assert!(line.contains("level=error"), "{line}");
        assert!(line.contains("web.yml"), "{line}");
        let r = curl(&url, &["--cacert", &ca, "-u", "alice:one"]);
        assert_eq!(r.status, 200, "after {bad:?}: {r:?}");
        assert_eq!(
            curl(&url, &["--cacert", &ca, "-u", "alice:two"]).status,
            401
        );
    }

    // A good file again, and a new log level from the TOML file.
    std::fs::write(
        &toml,
        format!("web.config.file = {file:?}\nlog.level = \"debug\"\n"),
    )
    .unwrap();
    pki.web_config(&format!("{TLS}{}", users(&[("alice", "two")], 4)));
    hup(&agent);
    let line = wait_log(&agent, "configuration reloaded");
    assert!(line.contains("log_level=DEBUG"), "{line}");
    assert_eq!(
        curl(&url, &["--cacert", &ca, "-u", "alice:two"]).status,
        200
    );
    // Debug lines now appear (a failed handshake is logged at debug).
    let _ = curl(&url, &["--cacert", &pki.p("other-ca.crt")]);
    wait_log(&agent, "level=debug");
}

#[test]
fn bcrypt_cost_10_is_paid_once() {
    let dir = TempDir::new("tls-cost");
    let file = dir.0.join("web.yml");
    std::fs::write(&file, users(&[("alice", "right")], 10)).unwrap();
    let agent = start(file.to_str().unwrap(), &[]);
    let auth = basic("alice", "right");
    let timed = |auth: &str| {
        let started = Instant::now();
        let r = request(&agent.addr, "GET", "/-/healthy", &[("Authorization", auth)]);
        (r.status, started.elapsed())
    };
    let (status, first) = timed(&auth);
    assert_eq!(status, 200);
    // The fastest of a few, so that one scheduling hiccup on a busy machine
    // does not decide the test.
    let cached = (0..3)
        .map(|_| {
            let (status, took) = timed(&auth);
            assert_eq!(status, 200);
            took
        })
        .min()
        .unwrap();
    assert!(
        cached * 4 < first,
        "first request {first:?}, then {cached:?}: the verified credential was not remembered"
    );
    // A wrong password is never remembered: it pays bcrypt every time.
    let wrong = basic("alice", "wrong");
    for _ in 0..2 {
        let (status, took) = timed(&wrong);
        assert_eq!(status, 401);
        assert!(took > cached * 4, "wrong password answered in {took:?}");
    }
}

#[test]
fn bad_web_config_at_start_exits_2_with_one_line() {
    let pki = Pki::new("tls-badstart");
    let hash = bcrypt::hash("x", 4).unwrap();
    let missing = pki.p("nope.yml");
    for (text, want) in [
        (None, "nope.yml"),
        (Some("tls_server_config: [\n".to_owned()), "web.yml"),
        (
            Some("tls_server_config:\n  cert_file: server.crt\n".to_owned()),
            "missing one of key",
        ),
        (
            Some("tls_server_config:\n  cert_file: nope.crt\n  key_file: server.key\n".to_owned()),
            "nope.crt",
        ),
        (
            Some(
                "tls_server_config:\n  cert_file: server.crt\n  key_file: client.key\n".to_owned(),
            ),
            "key_file",
        ),
        (
            Some(
                "tls_server_config:\n  cert_file: server.crt\n  key_file: server.crt\n".to_owned(),
            ),
            "private key",
        ),
        (
            Some(format!("{TLS}  client_auth_type: Always\n")),
            "client_auth_type",
        ),
        (
            Some(format!("{TLS}  client_ca_file: ca.crt\n")),
            "client auth policy",
        ),
        (Some(format!("{TLS}  max_version: TLS11\n")), "max_version"),
        (
            Some(format!(
                "{TLS}  cipher_suites: [ECDHE-RSA-AES128-GCM-SHA256]\n"
            )),
            "unknown cipher",
        ),
        (
            Some("basic_auth_users:\n  alice: secret\n".to_owned()),
            "not a bcrypt hash",
        ),
        (
            Some(format!("basic_auth_user:\n  alice: {hash}\n")),
            "unknown field",
        ),
    ] {
        let file = match &text {
            Some(t) => pki.web_config(t),
            None => missing.clone(),
        };
        let (code, err) = crate::util::run_to_exit(&[&format!("--web.config.file={file}")], &[]);
        assert_eq!(code, Some(2), "{text:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{text:?}: {err}");
        assert!(
            err.starts_with("accel-agent: web config file "),
            "{text:?}: {err}"
        );
        assert!(err.contains(want), "{text:?}: want {want:?} in {err}");
    }
    // Settings rustls cannot honour but that only widen what is accepted
    // are warnings, not errors.
    let file = pki.web_config(&format!(
        "{TLS}  min_version: TLS10\n  cipher_suites: [TLS_RSA_WITH_AES_128_CBC_SHA, TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]\n  curve_preferences: [CurveP521, X25519]\n  prefer_server_cipher_suites: false\nhttp_server_config:\n  http2: true\n"
    ));
    let agent = start(&file, &[]);
    let r = curl(
        &https(&agent, "/-/healthy"),
        &["--cacert", &pki.p("ca.crt")],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let warnings = agent
        .log_lines()
        .into_iter()
        .filter(|l| l.contains("level=warn"))
        .collect::<Vec<_>>()
        .join("\n");
    for want in [
        "min_version TLS10",
        "TLS_RSA_WITH_AES_128_CBC_SHA",
        "CurveP521",
        "http2",
    ] {
        assert!(
            warnings.contains(want),
            "no warning about {want}:\n{warnings}"
        );
    }
}
