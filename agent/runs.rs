//! Run events in `accel-agent profile`: what the training loop itself said
//! (issue 7's event socket) during the profile — steps, step time, the share
//! spent waiting for input (`data_wait`), runtime goodput and MFU.
//!
//! The profile's own goodput collector listens on the event socket when no
//! daemon does. When the daemon holds the socket, the profile reads the
//! daemon's accel_run_* series over HTTP at its start and end instead.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use accel_collectors::goodput::export::{
    RUN_ELAPSED, RUN_MFU, RUN_PHASE_SECONDS, RUN_PRODUCTIVE, RUN_STEPS, RUN_STEP_SECONDS,
};
use accel_collectors::Family;

/// The prefix of the run families (`accel_run_*`): the goodput collector's.
const RUN_PREFIX: &str = accel_collectors::goodput::SPEC.prefixes[0];
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{ACCEPT, CONNECTION, CONTENT_LENGTH, HOST};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;

/// One observed series: name (with a histogram's suffix), labels, value.
pub type Obs = (String, Vec<(String, String)>, f64);

/// A run's signals over the profile.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RunSummary {
    pub run: String,
    /// `events` (the profile's own socket) or `daemon` (read from the agent).
    pub source: String,
    pub ranks: usize,
    /// Steps during the profile, summed over ranks.
    pub steps: f64,
    pub mean_step_seconds: Option<f64>,
    /// data_wait seconds over step seconds during the profile.
    pub data_wait_share: Option<f64>,
    /// Productive over elapsed seconds during the profile.
    pub runtime_goodput: Option<f64>,
    /// accel_run_mfu_ratio at the end.
    pub mfu: Option<f64>,
}

/// The series of `families`, flattened.
pub fn flatten(families: &[Family]) -> Vec<Obs> {
    let mut out = Vec::new();
    for f in families.iter().filter(|f| f.name.starts_with(RUN_PREFIX)) {
        for s in &f.series {
            out.push((
                format!("{}{}", f.name, s.suffix),
                s.labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.clone()))
                    .collect(),
                s.value,
            ));
        }
    }
    out
}

/// Parses accel_run_* lines of the text exposition format.
pub fn parse_text(text: &str) -> Vec<Obs> {
    let mut out = Vec::new();
    for line in text.lines() {
        if !line.starts_with(RUN_PREFIX) {
            continue;
        }
        if let Some(o) = parse_line(line) {
            out.push(o);
        }
    }
    out
}

fn parse_line(line: &str) -> Option<Obs> {
    let (name, rest) = match line.find('{') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => {
            let (n, v) = line.split_once(' ')?;
            return Some((n.to_owned(), Vec::new(), v.trim().parse().ok()?));
        }
    };
    let mut labels = Vec::new();
    let mut chars = rest.char_indices().peekable();
    let end;
    loop {
        // key
        let start = chars.peek()?.0;
        let mut key_end = start;
        for (i, c) in chars.by_ref() {
            if c == '=' {
                key_end = i;
                break;
            }
        }
        let key = rest[start..key_end].trim_start_matches(',').to_owned();
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        let mut escaped = false;
        for (_, c) in chars.by_ref() {
            match (escaped, c) {
                (true, 'n') => {
                    value.push('\n');
                    escaped = false;
                }
                (true, c) => {
                    value.push(c);
                    escaped = false;
                }
                (false, '\\') => escaped = true,
                (false, '"') => break,
                (false, c) => value.push(c),
            }
        }
        labels.push((key, value));
        match chars.next() {
            Some((_, ',')) => {
                if chars.peek().is_some_and(|(_, c)| *c == '}') {
                    end = chars.next().map(|(i, _)| i);
                    break;
                }
            }
            Some((i, '}')) => {
                end = Some(i);
                break;
            }
            _ => return None,
        }
    }
    let value = rest[end? + 1..].split_whitespace().next()?.parse().ok()?;
    Some((name.to_owned(), labels, value))
}

/// How long a scrape of the daemon may take, and how much it may read.
struct Bounds {
    /// To connect.
    connect: Duration,
    /// For the answer's head, and then for each piece of its body.
    read: Duration,
    /// The largest body read.
    max_body: usize,
}

const DAEMON: Bounds = Bounds {
    connect: Duration::from_secs(1),
    read: Duration::from_secs(5),
    max_body: 64 << 20,
};

/// GETs the daemon's metrics over plain HTTP (the daemon this profile's
/// flags describe: `--web.listen-address`, `--web.telemetry-path`).
pub fn scrape_daemon(listen: &str, path: &str) -> Result<Vec<Obs>, String> {
    let addr = if let Some(port) = listen.strip_prefix(':') {
        format!("127.0.0.1:{port}")
    } else if let Some(rest) = listen.strip_prefix("0.0.0.0:") {
        format!("127.0.0.1:{rest}")
    } else if let Some(rest) = listen.strip_prefix("[::]:") {
        format!("[::1]:{rest}")
    } else {
        listen.to_owned()
    };
    let sock = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))?;
    let text = get_text(sock, &addr, path, &DAEMON).map_err(|e| format!("{addr}: {e}"))?;
    Ok(parse_text(&text))
}

/// GETs `path` from `sock` (`host` for the Host header) with hyper's HTTP/1
/// client, on a current-thread runtime made for the call; a status other
/// than 200, a malformed or truncated answer, or a body over the bound is
/// an error.
fn get_text(sock: SocketAddr, host: &str, path: &str, b: &Bounds) -> Result<String, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    rt.block_on(async {
        let stream = tokio::time::timeout(b.connect, tokio::net::TcpStream::connect(sock))
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        // Drives the connection; the runtime ends it with the call.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::get(path)
            .header(HOST, host)
            .header(ACCEPT, "text/plain")
            .header(CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = tokio::time::timeout(b.read, send.send_request(req))
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| with_causes(&e))?;
        if resp.status() != StatusCode::OK {
            return Err(format!("{:?} {}", resp.version(), resp.status()));
        }
        let announced = resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let too_large = || format!("answer larger than {} bytes", b.max_body);
        if announced.is_some_and(|n| n > b.max_body as u64) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        let mut incoming = resp.into_body();
        while let Some(frame) = tokio::time::timeout(b.read, incoming.frame())
            .await
            .map_err(|_| "timed out".to_owned())?
        {
            if let Ok(data) = frame.map_err(|e| with_causes(&e))?.into_data() {
                if body.len() + data.len() > b.max_body {
                    return Err(too_large());
                }
                body.extend_from_slice(&data);
            }
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    })
}

/// An error and its causes, on one line.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(&format!(": {c}"));
        cause = c.source();
    }
    s
}

fn label<'a>(o: &'a Obs, key: &str) -> Option<&'a str> {
    o.1.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Sums `name` per run over the matching series.
fn per_run(obs: &[Obs], name: &str, filter: &dyn Fn(&Obs) -> bool) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for o in obs.iter().filter(|o| o.0 == name && filter(o)) {
        if let Some(run) = label(o, "run") {
            *out.entry(run.to_owned()).or_insert(0.0) += o.2;
        }
    }
    out
}

/// The runs seen at the end, with their change since the start.
pub fn summarise(first: &[Obs], last: &[Obs], source: &str) -> Vec<RunSummary> {
    let any = |_: &Obs| true;
    let delta = |name: &str, filter: &dyn Fn(&Obs) -> bool| {
        let a = per_run(first, name, filter);
        let b = per_run(last, name, filter);
        b.into_iter()
            .map(|(run, v)| {
                let before = a.get(&run).copied().unwrap_or(0.0);
                // A counter that went down restarted (an agent restart):
                // count from zero.
                let d = if v >= before { v - before } else { v };
                (run, d)
            })
            .collect::<BTreeMap<String, f64>>()
    };
    let steps = delta(RUN_STEPS.name, &any);
    let step_sum = delta(&format!("{}_sum", RUN_STEP_SECONDS.name), &any);
    let wait = delta(RUN_PHASE_SECONDS.name, &|o| {
        label(o, "phase") == Some("data_wait")
    });
    let productive = delta(RUN_PRODUCTIVE.name, &any);
    let elapsed = delta(RUN_ELAPSED.name, &any);
    let mut ranks: BTreeMap<String, usize> = BTreeMap::new();
    for o in last.iter().filter(|o| o.0 == RUN_STEPS.name) {
        if let Some(run) = label(o, "run") {
            *ranks.entry(run.to_owned()).or_default() += 1;
        }
    }
    let mfu: BTreeMap<String, f64> = last
        .iter()
        .filter(|o| o.0 == RUN_MFU.name)
        .filter_map(|o| Some((label(o, "run")?.to_owned(), o.2)))
        .collect();
    let ratio = |a: Option<&f64>, b: Option<&f64>| match (a, b) {
        (Some(a), Some(b)) if *b > 0.0 => Some(a / b),
        _ => None,
    };
    ranks
        .into_iter()
        .map(|(run, n)| RunSummary {
            source: source.to_owned(),
            ranks: n,
            steps: steps.get(&run).copied().unwrap_or(0.0),
            mean_step_seconds: ratio(step_sum.get(&run), steps.get(&run)),
            data_wait_share: ratio(Some(wait.get(&run).unwrap_or(&0.0)), step_sum.get(&run))
                .map(|x| x.min(1.0)),
            runtime_goodput: ratio(productive.get(&run), elapsed.get(&run)).map(|x| x.min(1.0)),
            mfu: mfu.get(&run).copied(),
            run,
        })
        .filter(|r| r.steps > 0.0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LINES: &[&str] = &[
        r#"accel_run_steps_total{run="a,\"b\"",rank="0"} 12"#,
        r#"accel_run_step_seconds_bucket{run="r",rank="1",le="+Inf"} 4"#,
        "accel_run_x 3.5",
        r#"accel_run_mfu_ratio{run="r\nx",dtype="bf16"} 0.41"#,
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        /// What `profile` reads from the daemon (or whatever answers on its
        /// port) never panics the parser: arbitrary text, and valid lines
        /// with characters changed, cut or added.
        #[test]
        fn metrics_text_never_panics(text in "(accel_run_[a-z_]{0,8}\\PC{0,40}\n?){0,4}") {
            for o in parse_text(&text) {
                prop_assert!(o.0.starts_with("accel_run_"));
            }
        }

        #[test]
        fn mutated_lines_never_panic(
            i in 0..LINES.len(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<char>(), 0u8..3), 0..5),
        ) {
            let mut chars: Vec<char> = LINES[i].chars().collect();
            for (at, c, op) in edits {
                let n = chars.len();
                match op {
                    0 if n > 0 => chars[at.index(n)] = c,
                    1 if n > 0 => {
                        chars.remove(at.index(n));
                    }
                    _ => chars.insert(at.index(n + 1), c),
                }
            }
            let line: String = chars.into_iter().collect();
            let _ = parse_line(&line);
            let _ = parse_text(&format!("{line}\n{line}"));
        }
    }

    #[test]
    fn parses_exposition_lines() {
        let o = parse_line(r#"accel_run_steps_total{run="a,\"b\"",rank="0"} 12"#).unwrap();
        assert_eq!(o.0, "accel_run_steps_total");
        assert_eq!(o.1[0], ("run".into(), "a,\"b\"".into()));
        assert_eq!(o.1[1], ("rank".into(), "0".into()));
        assert_eq!(o.2, 12.0);
        assert_eq!(parse_line("accel_run_x 3.5").unwrap().2, 3.5);
        assert!(parse_line(r#"accel_run_x{run="a} 1"#).is_none());
        let h =
            parse_line(r#"accel_run_step_seconds_bucket{run="r",rank="1",le="+Inf"} 4"#).unwrap();
        assert_eq!(h.1.len(), 3);
    }

    #[test]
    fn deltas_per_run() {
        let obs = |steps: f64, sum: f64, wait: f64| -> Vec<Obs> {
            let l = |extra: &[(&str, &str)]| {
                let mut v = vec![
                    ("run".to_owned(), "r".to_owned()),
                    ("rank".to_owned(), "0".to_owned()),
                ];
                v.extend(
                    extra
                        .iter()
                        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned())),
                );
                v
            };
            vec![
                ("accel_run_steps_total".into(), l(&[]), steps),
                ("accel_run_step_seconds_sum".into(), l(&[]), sum),
                (
                    "accel_run_phase_seconds_total".into(),
                    l(&[("phase", "data_wait")]),
                    wait,
                ),
                (
                    "accel_run_phase_seconds_total".into(),
                    l(&[("phase", "eval")]),
                    100.0,
                ),
            ]
        };
        let r = summarise(&obs(10.0, 20.0, 2.0), &obs(20.0, 40.0, 8.0), "events");
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].steps, 10.0);
        assert_eq!(r[0].mean_step_seconds, Some(2.0));
        assert_eq!(r[0].data_wait_share, Some(0.3));
        // A run that began during the profile counts from zero.
        let r = summarise(&[], &obs(5.0, 10.0, 5.0), "daemon");
        assert_eq!(r[0].data_wait_share, Some(0.5));
        // No step during the profile: not reported.
        assert!(summarise(&obs(5.0, 10.0, 1.0), &obs(5.0, 10.0, 1.0), "events").is_empty());
    }

    /// A server for one connection: reads the request head, sends `answer`
    /// as raw bytes, then waits `linger` before closing. Returns its address
    /// and the request head it received.
    fn serve(answer: Vec<u8>, linger: Duration) -> (SocketAddr, std::sync::mpsc::Receiver<String>) {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap_or(0) == 1 {
                head.push(b[0]);
            }
            let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
            let _ = s.write_all(&answer);
            std::thread::sleep(linger);
        });
        (addr, rx)
    }

    fn get(answer: &[u8], bounds: &Bounds) -> Result<String, String> {
        let (addr, _) = serve(answer.to_vec(), Duration::ZERO);
        get_text(addr, &addr.to_string(), "/metrics", bounds)
    }

    #[test]
    fn scrapes_the_run_series() {
        let body = "# TYPE accel_run_steps_total counter\naccel_run_steps_total{run=\"r\",rank=\"0\"} 7\naccel_gpu_up{gpu=\"0\"} 1\n";
        let (addr, head) = serve(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
            Duration::ZERO,
        );
        let obs = scrape_daemon(&addr.to_string(), "/metrics").unwrap();
        assert_eq!(obs.len(), 1);
        assert_eq!(
            (obs[0].0.as_str(), obs[0].2),
            ("accel_run_steps_total", 7.0)
        );
        let head = head.recv().unwrap().to_ascii_lowercase();
        assert!(head.starts_with("get /metrics http/1.1\r\n"), "{head}");
        assert!(head.contains("accept: text/plain"), "{head}");
        // Chunked, as hyper's server sends a large body.
        let t = get(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            &DAEMON,
        )
        .unwrap();
        assert_eq!(t, "abcde");
    }

    #[test]
    fn bad_answers_are_errors() {
        let small = Bounds {
            max_body: 8,
            ..DAEMON
        };
        for (answer, want) in [
            (&b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"[..], "404"),
            (b"garbage\r\n\r\n", ""),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc", ""),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n123456789", "larger"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n12345\r\n5\r\n12345\r\n0\r\n\r\n", "larger"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nNO\r\nFFFFFFFFFFFFFFFF\r\n", ""),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nNO\r\n1FFFFFFFFFFFFFFFF\r\nx", "overflow"),
        ] {
            match get(answer, &small) {
                Ok(t) => panic!("{}: accepted: {t:?}", String::from_utf8_lossy(answer)),
                Err(e) => assert!(e.contains(want), "{e}"),
            }
        }
    }

    #[test]
    fn silent_or_absent_daemon_is_an_error_in_time() {
        let quick = Bounds {
            read: Duration::from_millis(200),
            ..DAEMON
        };
        let (addr, _) = serve(Vec::new(), Duration::from_secs(3));
        let t = std::time::Instant::now();
        let e = get_text(addr, "x", "/metrics", &quick).unwrap_err();
        assert_eq!(e, "timed out");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        let (addr, _) = serve(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec(),
            Duration::from_secs(3),
        );
        assert_eq!(
            get_text(addr, "x", "/metrics", &quick).unwrap_err(),
            "timed out"
        );
        // Nothing listens.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert!(scrape_daemon(&format!(":{port}"), "/metrics").is_err());
    }
}
