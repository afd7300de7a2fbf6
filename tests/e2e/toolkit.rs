//! The web config as a drop-in for the Prometheus exporter-toolkit's: the
//! same files accepted and refused, the same clients let in and kept out,
//! checked with curl against certificates made here with openssl (see
//! docs/security.md for the table this follows).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::tls::{curl, https, start, users, wait_log, Curl, Pki, TLS};
use crate::util::{Agent, TempDir};

/// The Pki of tests/e2e/tls.rs plus the client certificate kinds of the
/// matrix: self-signed, expired, and one with subject alternative names.
fn pki(tag: &str) -> Pki {
    let pki = Pki::new(tag);
    pki.ca("selfsigned");
    pki.leaf(
        "named",
        "ca",
        "subjectAltName=DNS:scraper.example,email:ops@example.com,URI:spiffe://example/prom,IP:10.0.0.1\nextendedKeyUsage=clientAuth\n",
    );
    // -days -1: a certificate that expired before it began.
    let ext = pki.path("expired.ext");
    std::fs::write(
        &ext,
        "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
    )
    .unwrap();
    pki.openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "expired.key",
        "-out",
        "expired.csr",
        "-subj",
        "/CN=expired",
    ]);
    pki.openssl(&[
        "x509",
        "-req",
        "-in",
        "expired.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-set_serial",
        "7",
        "-days",
        "-1",
        "-extfile",
        "expired.ext",
        "-out",
        "expired.crt",
    ]);
    pki
}

/// curl to `url` trusting `ca.crt`, presenting the client certificate
/// `cert` (none for "none"), plus `extra`.
fn as_client(pki: &Pki, url: &str, cert: &str, extra: &[&str]) -> Curl {
    let (crt, key) = (pki.p(&format!("{cert}.crt")), pki.p(&format!("{cert}.key")));
    let ca = pki.p("ca.crt");
    let mut args = vec!["--cacert", ca.as_str()];
    if cert != "none" {
        args.extend(["--cert", crt.as_str(), "--key", key.as_str()]);
    }
    args.extend_from_slice(extra);
    curl(url, &args)
}

const KINDS: [&str; 5] = ["none", "client", "stranger", "selfsigned", "expired"];

#[test]
fn client_auth_types_by_client_certificate_kind() {
    let pki = pki("toolkit-matrix");
    // Who gets in, in the order of KINDS: Go's tls.ClientAuthType meanings.
    for (auth, ca, want) in [
        ("NoClientCert", false, [true, true, true, true, true]),
        ("RequestClientCert", false, [true, true, true, true, true]),
        (
            "RequireAnyClientCert",
            false,
            [false, true, true, true, true],
        ),
        (
            "VerifyClientCertIfGiven",
            true,
            [true, true, false, false, false],
        ),
        (
            "RequireAndVerifyClientCert",
            true,
            [false, true, false, false, false],
        ),
    ] {
        let ca_line = if ca { "  client_ca_file: ca.crt\n" } else { "" };
        let file = pki.web_config(&format!("{TLS}  client_auth_type: {auth}\n{ca_line}"));
        let agent = start(&file, &[]);
        let url = https(&agent, "/-/healthy");
        for tls in ["1.2", "1.3"] {
            for (kind, let_in) in KINDS.iter().zip(want) {
                let r = as_client(&pki, &url, kind, &["--tls-max", tls]);
                assert_eq!(r.status == 200, let_in, "{auth} TLS {tls} {kind}: {r:?}");
            }
        }
    }
}

#[test]
fn verify_without_client_ca_file_uses_the_system_roots() {
    let pki = pki("toolkit-sysroots");
    let empty = TempDir::new("toolkit-sysroots-dir");
    let file = pki.web_config(&format!(
        "{TLS}  client_auth_type: RequireAndVerifyClientCert\n"
    ));
    // Go reads SSL_CERT_FILE and SSL_CERT_DIR; so does accel-agent.
    let roots = pki.p("ca.crt");
    let env = [
        ("SSL_CERT_FILE", roots.as_str()),
        ("SSL_CERT_DIR", empty.0.to_str().unwrap()),
    ];
    let agent = Agent::start_env(
        &[
            &format!("--web.config.file={file}"),
            "--collector.disable-defaults",
            "--collector.cpu",
        ],
        &env,
    );
    let url = https(&agent, "/-/healthy");
    for (kind, let_in) in KINDS.iter().zip([false, true, false, false, false]) {
        let r = as_client(&pki, &url, kind, &[]);
        assert_eq!(r.status == 200, let_in, "{kind}: {r:?}");
    }
    assert!(agent
        .log_lines()
        .iter()
        .any(|l| l.contains("level=warn") && l.contains("system's 1 root certificates")));
    // No system roots at all: one clear line, exit code 2.
    let (code, err) = run_to_exit(
        &file,
        &[
            ("SSL_CERT_FILE", "/nonexistent"),
            ("SSL_CERT_DIR", "/nonexistent"),
        ],
    );
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("no system root certificates"), "{err}");
}

#[test]
fn client_allowed_sans_and_reload_without_a_signal() {
    let pki = pki("toolkit-sans");
    let base =
        format!("{TLS}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n");
    let file = pki.web_config(&format!("{base}  client_allowed_sans: [scraper.example]\n"));
    let agent = start(&file, &[]);
    let url = https(&agent, "/-/healthy");
    assert_eq!(as_client(&pki, &url, "named", &[]).status, 200);
    assert_eq!(as_client(&pki, &url, "client", &[]).status, 0, "no SANs");
    // Each kind of SAN, as Go prints it; the file is re-read for the next
    // connection without a SIGHUP, as the exporter-toolkit does.
    for (san, named_in) in [
        ("ops@example.com", true),
        ("spiffe://example/prom", true),
        ("10.0.0.1", true),
        ("other.example", false),
        ("SCRAPER.EXAMPLE", false),
    ] {
        pki.web_config(&format!("{base}  client_allowed_sans: [\"{san}\"]\n"));
        let r = as_client(&pki, &url, "named", &[]);
        assert_eq!(r.status == 200, named_in, "{san}: {r:?}");
        assert_eq!(as_client(&pki, &url, "client", &[]).status, 0, "{san}");
    }
    // VerifyClientCertIfGiven with SANs: a client without a certificate is
    // kept out (the toolkit drops it too).
    pki.web_config(&format!(
        "{TLS}  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.crt\n  client_allowed_sans: [scraper.example]\n"
    ));
    assert_eq!(as_client(&pki, &url, "none", &[]).status, 0);
    assert_eq!(as_client(&pki, &url, "named", &[]).status, 200);
    // RequestClientCert with SANs: any signer, but the SAN must match.
    pki.web_config(&format!(
        "{TLS}  client_auth_type: RequestClientCert\n  client_allowed_sans: [scraper.example]\n"
    ));
    assert_eq!(as_client(&pki, &url, "none", &[]).status, 0);
    assert_eq!(as_client(&pki, &url, "stranger", &[]).status, 0);
    assert_eq!(as_client(&pki, &url, "named", &[]).status, 200);
    // NoClientCert asks for no certificate: the list means nothing.
    pki.web_config(&format!("{TLS}  client_allowed_sans: [scraper.example]\n"));
    assert_eq!(as_client(&pki, &url, "none", &[]).status, 200);
    wait_log(&agent, "client_allowed_sans has no effect");
    pki.web_config(&format!(
        "{TLS}  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.crt\n  client_allowed_sans: [scraper.example]\n"
    ));
    assert_eq!(as_client(&pki, &url, "none", &[]).status, 0);
    // A new file that does not load keeps the old one, logged once.
    pki.web_config("tls_server_config: [\n");
    assert_eq!(as_client(&pki, &url, "named", &[]).status, 200);
    assert_eq!(as_client(&pki, &url, "none", &[]).status, 0);
    wait_log(&agent, "does not load; keeping the previous one");
    // ...and counted, once for the bad version however many connections
    // arrive after it.
    let r = as_client(&pki, &https(&agent, "/metrics"), "named", &[]);
    assert!(
        r.output
            .contains("\naccel_config_reload_failures_total 1\n"),
        "{}",
        r.output
    );
    // A certificate renewed in place: used from the next connection on.
    pki.web_config(TLS);
    assert_eq!(as_client(&pki, &url, "none", &[]).status, 200);
    pki.leaf(
        "renewed",
        "other-ca",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    );
    std::fs::copy(pki.path("renewed.crt"), pki.path("server.crt")).unwrap();
    std::fs::copy(pki.path("renewed.key"), pki.path("server.key")).unwrap();
    let r = curl(&url, &["--cacert", &pki.p("other-ca.crt")]);
    assert_eq!(r.status, 200, "{r:?}");
    let old = curl(&url, &["--cacert", &pki.p("ca.crt")]);
    assert_eq!(
        old.status, 0,
        "the renewed certificate is not in use: {old:?}"
    );
    wait_log(&agent, "reloaded for new connections");
}

#[test]
fn files_refused_and_accepted_as_by_the_toolkit() {
    let pki = Pki::new("toolkit-files");
    let h2 = "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256";
    for (text, want) in [
        // Not the names of Go's tls.CipherSuites(): refused, never ignored.
        (format!("{TLS}  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA265]\n"), "unknown cipher"),
        (format!("{TLS}  cipher_suites: [TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305]\n"), "unknown cipher"),
        (format!("{TLS}  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n"), "unknown cipher"),
        // HTTP/2 (on by default) needs an ECDHE AES-128-GCM suite.
        (format!("{TLS}  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]\n"), "HTTP/2"),
        (
            format!("{TLS}  cipher_suites: [TLS_AES_128_GCM_SHA256]\nhttp_server_config:\n  http2: true\n"),
            "HTTP/2",
        ),
        (format!("{TLS}  curve_preferences: [CurveP521]\n"), "curve_preferences"),
        (format!("{TLS}  curve_preferences: [P-256]\n"), "unknown curve"),
        ("rate_limit:\n  interval: 1d\n".to_owned(), "rate_limit"),
    ] {
        let file = pki.web_config(&text);
        let (code, err) = run_to_exit(&file, &[]);
        assert_eq!(code, Some(2), "{text}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{text}: {err}");
        assert!(err.contains(want), "{text}: want {want:?} in {err}");
    }
    // Accepted as by the toolkit: the same list without HTTP/2 or without
    // TLS 1.2, an interval of 0 (no limit), P-521 among supported curves.
    for text in [
        format!("{TLS}  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]\nhttp_server_config:\n  http2: false\n"),
        format!("{TLS}  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]\n  min_version: TLS13\n"),
        format!("{TLS}  cipher_suites: [{h2}, TLS_RSA_WITH_AES_128_CBC_SHA]\n  curve_preferences: [CurveP521, CurveP384]\n"),
        format!("{TLS}  cipher_suites: []\nrate_limit:\n  interval: 0\n  burst: 0\n"),
    ] {
        let file = pki.web_config(&text);
        let agent = start(&file, &[]);
        let r = curl(&https(&agent, "/-/healthy"), &["--cacert", &pki.p("ca.crt")]);
        assert_eq!(r.status, 200, "{text}: {r:?}");
    }
}

#[test]
fn cipher_curve_and_version_restrictions_reach_the_client() {
    let pki = Pki::new("toolkit-restrict");
    let file = pki.web_config(&format!(
        "{TLS}  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]\n  curve_preferences: [CurveP521, CurveP384]\nhttp_server_config:\n  http2: false\nrate_limit:\n  interval: 1h\n  burst: 2\n"
    ));
    let agent = start(&file, &[]);
    let url = https(&agent, "/-/healthy");
    let ca = pki.p("ca.crt");
    let tls12 = |extra: &[&str]| {
        let mut args = vec!["--cacert", ca.as_str(), "--tls-max", "1.2"];
        args.extend_from_slice(extra);
        curl(&url, &args)
    };
    assert_eq!(
        tls12(&[
            "--ciphers",
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            "--curves",
            // P-256 too: in TLS 1.2 the list also bounds the curve of the
            // server's ECDSA certificate.
            "P-384:P-256"
        ])
        .status,
        200
    );
    assert_eq!(
        tls12(&["--ciphers", "ECDHE-ECDSA-AES128-GCM-SHA256"]).status,
        0,
        "cipher not listed"
    );
    assert_eq!(
        tls12(&["--curves", "X25519:P-256"]).status,
        0,
        "curve not listed"
    );
    // TLS 1.3 suites are not configurable (in Go either); curves are.
    let r = curl(&url, &["--cacert", &ca, "--tlsv1.3", "--curves", "X25519"]);
    assert_eq!(r.status, 0, "{r:?}");
    // What was negotiated, as openssl s_client reports it: the listed
    // curve even when the client prefers X25519, the listed suite.
    let addr = agent.addr.clone();
    for version in ["-tls1_3", "-tls1_2"] {
        let out = s_client(&addr, &ca, &[version, "-groups", "X25519:P-384:P-256"]);
        assert!(
            out.contains("Server Temp Key: ECDH, secp384r1"),
            "{version}: {out}"
        );
        assert!(
            out.contains("Verify return code: 0 (ok)"),
            "{version}: {out}"
        );
    }
    let out = s_client(&addr, &ca, &["-tls1_2"]);
    assert!(
        out.contains("Cipher is ECDHE-ECDSA-AES256-GCM-SHA384"),
        "{out}"
    );
    // The rate limit: a burst of 2 requests (failed handshakes are none),
    // then 429 for an hour.
    assert_eq!(curl(&url, &["--cacert", &ca, "--tlsv1.3"]).status, 200);
    assert_eq!(curl(&url, &["--cacert", &ca, "--tlsv1.3"]).status, 429);
    let file = pki.web_config(&format!("{TLS}  min_version: TLS13\n"));
    let agent = start(&file, &[]);
    let url = https(&agent, "/-/healthy");
    assert_eq!(curl(&url, &["--cacert", &ca, "--tls-max", "1.2"]).status, 0);
    assert_eq!(curl(&url, &["--cacert", &ca, "--tlsv1.3"]).status, 200);
    let file = pki.web_config(&format!("{TLS}  max_version: TLS12\n"));
    let agent = start(&file, &[]);
    let url = https(&agent, "/-/healthy");
    assert_eq!(curl(&url, &["--cacert", &ca, "--tlsv1.3"]).status, 0);
    assert_eq!(
        curl(&url, &["--cacert", &ca, "--tls-max", "1.2"]).status,
        200
    );
    let out = s_client(&agent.addr, &ca, &[]);
    assert!(out.contains("Protocol  : TLSv1.2"), "{out}");
}

/// A TLS handshake by `openssl s_client` (no request): what it printed.
fn s_client(addr: &str, ca: &str, args: &[&str]) -> String {
    crate::util::require("openssl");
    let out = Command::new("openssl")
        .args(["s_client", "-connect", addr, "-CAfile", ca])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl s_client");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Unknown users pay one bcrypt check at the configured cost, as known
/// users with a wrong password do: no timing tells them apart, and neither
/// waits long.
#[test]
fn unknown_and_known_users_take_the_same_time() {
    let pki = Pki::new("toolkit-timing");
    let file = pki.web_config(&format!("{TLS}{}", users(&[("alice", "right")], 10)));
    let agent = start(&file, &[]);
    let url = https(&agent, "/-/healthy");
    let ca = pki.p("ca.crt");
    let median = |credentials: &str| {
        let mut took: Vec<Duration> = (0..5)
            .map(|_| {
                let started = Instant::now();
                let r = curl(&url, &["--cacert", &ca, "-u", credentials]);
                assert_eq!(r.status, 401, "{r:?}");
                started.elapsed()
            })
            .collect();
        took.sort();
        took[2]
    };
    let known = median("alice:wrong");
    let unknown = median("mallory:wrong");
    eprintln!("median 401 over TLS: known user {known:?}, unknown user {unknown:?}");
    assert!(
        known < Duration::from_secs(1) && unknown < Duration::from_secs(1),
        "known {known:?}, unknown {unknown:?}"
    );
    assert!(
        known < unknown * 2 && unknown < known * 2,
        "known {known:?}, unknown {unknown:?}"
    );
    assert_eq!(
        curl(&url, &["--cacert", &ca, "-u", "alice:right"]).status,
        200
    );
    // A flood of wrong guesses (bcrypt one at a time, about a second of
    // checks queued) does not hold up a client whose credential passed.
    let flood: Vec<_> = (0..6)
        .map(|i| {
            let (url, ca) = (url.clone(), ca.clone());
            std::thread::spawn(move || {
                for _ in 0..3 {
                    let r = curl(&url, &["--cacert", &ca, "-u", &format!("guess{i}:x")]);
                    assert_eq!(r.status, 401);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    // The fastest of three, so that one hiccup on a busy machine does not
    // decide: below a 401 (one bcrypt check, with no queue before it).
    let fastest = (0..3)
        .map(|_| {
            let started = Instant::now();
            let r = curl(&url, &["--cacert", &ca, "-u", "alice:right"]);
            assert_eq!(r.status, 200);
            started.elapsed()
        })
        .min()
        .unwrap();
    eprintln!("known credential during the flood: {fastest:?}");
    assert!(fastest < known, "{fastest:?} while a 401 takes {known:?}");
    for t in flood {
        t.join().unwrap();
    }
}

/// Starts the agent with web config `file` and `env`, and waits for it to
/// exit.
fn run_to_exit(file: &str, env: &[(&str, &str)]) -> (Option<i32>, String) {
    crate::util::run_to_exit(&[&format!("--web.config.file={file}")], env)
}
