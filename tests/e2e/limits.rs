//! Serving limits: `--web.max-requests` counts requests in flight,
//! `--web.max-connections` open connections (the longest idle one closed
//! first), `--web.header-timeout` a request's headers once begun and
//! `--web.idle-timeout` a connection without a request. Slow, idle or
//! numerous clients never lock a scraper out.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::util::{request, Agent, TempDir};

/// Only the cpu collector: these tests are about serving, not sampling.
fn start(extra: &[&str]) -> Agent {
    let mut args = vec!["--collector.disable-defaults", "--collector.cpu"];
    args.extend_from_slice(extra);
    let agent = Agent::start(&args);
    agent.wait_ready();
    agent
}

/// One request on an open keep-alive connection; the status and body.
fn keep_alive_get(s: &mut TcpStream, path: &str) -> (u16, String) {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).expect("response");
        assert!(n > 0, "closed mid-response: {raw:?}");
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .expect("content-length")
                .parse()
                .unwrap();
            if body.len() >= len {
                let status = head[9..12].parse().unwrap();
                return (status, body.to_owned());
            }
        }
    }
}

/// Whether the server has closed `s` (within `within`).
fn closed(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 256];
    matches!(s.read(&mut buf), Ok(0) | Err(_)) && {
        // A read timeout is an error too: tell them apart.
        s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
        !matches!(s.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

#[test]
fn slow_header_clients_do_not_lock_out_a_scraper() {
    let agent = start(&[]);
    // 300 clients that have begun a request and trickle its headers: under
    // --web.max-requests=40 as a connection count, they took every slot.
    let mut slow: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut s = TcpStream::connect(&agent.addr).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    let mut worst = Duration::ZERO;
    for i in 0..20 {
        // Keep them trickling.
        for s in &mut slow {
            let _ = s.write_all(b"X");
        }
        let t = Instant::now();
        let r = agent.get("/metrics");
        worst = worst.max(t.elapsed());
        assert_eq!(r.status, 200, "scrape {i} during the slow clients");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(worst < Duration::from_secs(1), "a scrape took {worst:?}");
    // None of the slow clients was answered or dropped yet (header timeout 10 s).
    let mut buf = [0u8; 16];
    slow[0]
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    assert!(
        slow[0].read(&mut buf).is_err(),
        "a slow client was answered"
    );
}

#[test]
fn idle_connections_over_the_bound_make_room_oldest_first() {
    let agent = start(&["--web.max-connections=20"]);
    // 30 keep-alive connections, each served once and then idle: the bound
    // is 20, so the 10 idle longest are closed as the others arrive.
    let mut idle: Vec<TcpStream> = Vec::new();
    for _ in 0..30 {
        let mut s = TcpStream::connect(&agent.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(keep_alive_get(&mut s, "/-/healthy").0, 200);
        idle.push(s);
        std::thread::sleep(Duration::from_millis(5));
    }
    // A new scraper is still served (closing the longest idle one).
    for _ in 0..5 {
        let r = agent.get("/metrics");
        assert_eq!(r.status, 200);
    }
    let gone: Vec<bool> = idle
        .iter_mut()
        .map(|s| closed(s, Duration::from_millis(200)))
        .collect();
    // The oldest were closed, the newest kept.
    assert!(gone[..10].iter().all(|&g| g), "{gone:?}");
    assert!(!gone[29], "{gone:?}");
    let mut last = idle.pop().unwrap();
    last.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(keep_alive_get(&mut last, "/-/healthy").0, 200);
}

#[test]
fn requests_beyond_max_requests_get_503() {
    // Wrong passwords cost a bcrypt verification each (~70 ms at cost 10,
    // more in a debug build): requests stay in flight long enough to pile up.
    let dir = TempDir::new("limits");
    let file = dir.0.join("web.yml");
    std::fs::write(
        &file,
        format!(
            "basic_auth_users:\n  alice: {}\n",
            bcrypt::hash("right", 10).unwrap()
        ),
    )
    .unwrap();
    let flag = format!("--web.config.file={}", file.display());
    let agent = Agent::start(&[
        "--collector.disable-defaults",
        "--collector.cpu",
        "--web.max-requests=2",
        &flag,
    ]);
    // Basic alice:wrong
    let req = "GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Basic YWxpY2U6d3Jvbmc=\r\nConnection: close\r\n\r\n";
    let mut conns: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(&agent.addr).unwrap())
        .collect();
    for c in &mut conns {
        c.write_all(req.as_bytes()).unwrap();
    }
    let mut answers = Vec::new();
    for c in &mut conns {
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut raw = String::new();
        c.read_to_string(&mut raw).unwrap();
        answers.push(raw);
    }
    let refused: Vec<&String> = answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 503"))
        .collect();
    let checked = answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 401"))
        .count();
    assert!(checked >= 2, "{answers:?}");
    assert!(!refused.is_empty(), "{answers:?}");
    assert_eq!(refused.len() + checked, 8, "{answers:?}");
    assert!(refused[0].contains("--web.max-requests=2"));
    assert!(refused[0].to_ascii_lowercase().contains("retry-after: 1"));
    // Slots are given back: one at a time, every request is served.
    for _ in 0..3 {
        let r = request(
            &agent.addr,
            "GET",
            "/-/healthy",
            &[("Authorization", "Basic YWxpY2U6cmlnaHQ=")],
        );
        assert_eq!(r.status, 200);
    }
}

#[test]
fn header_and_idle_timeouts() {
    let agent = start(&["--web.header-timeout=1s", "--web.idle-timeout=3s"]);
    // A keep-alive connection idle for longer than the header timeout is
    // still open: the header deadline runs from a request's first byte.
    let mut ka = TcpStream::connect(&agent.addr).unwrap();
    ka.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(keep_alive_get(&mut ka, "/-/healthy").0, 200);
    std::thread::sleep(Duration::from_millis(1600));
    assert_eq!(keep_alive_get(&mut ka, "/-/healthy").0, 200);
    // A request begun and not finished is dropped after the header timeout.
    let mut slow = TcpStream::connect(&agent.addr).unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
    let t = Instant::now();
    assert!(closed(&mut slow, Duration::from_secs(5)));
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_millis(2500),
        "slow headers dropped after {waited:?}"
    );
    // A connection with no request is dropped after the idle timeout.
    let t = Instant::now();
    assert!(closed(&mut ka, Duration::from_secs(6)));
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(1000) && waited < Duration::from_millis(4500),
        "idle connection dropped after {waited:?}"
    );
}
