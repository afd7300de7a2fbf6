//! The HTTP surface: endpoints, methods, compression, formats, limits.

use std::io::Read;

use crate::golden::fixture_agent;
use crate::util::{request, value};

#[test]
fn endpoints() {
    let agent = fixture_agent(&[]);
    agent.wait_ready();
    let landing = agent.get("/");
    assert_eq!(landing.status, 200);
    assert!(landing
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    let html = landing.text();
    for want in [
        "href=\"/metrics\"",
        "/-/healthy",
        "/-/ready",
        env!("CARGO_PKG_VERSION"),
        "<td>disk</td>",
        "<td>infiniband</td>",
    ] {
        assert!(html.contains(want), "landing page lacks {want}:\n{html}");
    }
    let healthy = agent.get("/-/healthy");
    assert_eq!(
        (healthy.status, healthy.text().as_str()),
        (200, "Healthy\n")
    );
    assert_eq!(agent.get("/-/ready").status, 200);
    let m = agent.get("/metrics");
    assert_eq!(m.status, 200);
    assert_eq!(
        m.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = m.text();
    assert!(text.contains("# HELP accel_disk_read_bytes_total "));
    assert!(text.contains("# TYPE accel_disk_read_bytes_total counter"));
    assert_eq!(
        value(&text, "accel_collector_success{collector=\"disk\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "accel_collector_enabled{collector=\"infiniband\"}"),
        Some(1.0)
    );
    for path in ["/nope", "/metrics/", "/-/", "/favicon.ico"] {
        assert_eq!(agent.get(path).status, 404, "{path}");
    }
}

#[test]
fn methods() {
    let agent = fixture_agent(&[]);
    agent.wait_ready();
    for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let r = request(&agent.addr, method, "/metrics", &[("Content-Length", "0")]);
        assert_eq!(r.status, 405, "{method}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"));
    }
    let get = agent.get("/metrics");
    let head = request(&agent.addr, "HEAD", "/metrics", &[]);
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(
        head.header("content-length").unwrap(),
        get.body.len().to_string()
    );
}

#[test]
fn gzip_when_asked() {
    let agent = fixture_agent(&[]);
    agent.wait_ready();
    let plain = agent.get("/metrics");
    assert_eq!(plain.header("content-encoding"), None);
    let gz = request(
        &agent.addr,
        "GET",
        "/metrics",
        &[("Accept-Encoding", "deflate, gzip;q=0.8")],
    );
    assert_eq!(gz.header("content-encoding"), Some("gzip"));
    assert_eq!(gz.header("vary"), Some("Accept, Accept-Encoding"));
    assert!(
        gz.body.len() * 3 < plain.body.len(),
        "{} vs {}",
        gz.body.len(),
        plain.body.len()
    );
    let mut unzipped = String::new();
    flate2::read::GzDecoder::new(&gz.body[..])
        .read_to_string(&mut unzipped)
        .unwrap();
    // Every collector samples once an hour here, so both bodies are the same snapshot.
    assert_eq!(unzipped, plain.text());
    let refused = request(
        &agent.addr,
        "GET",
        "/metrics",
        &[("Accept-Encoding", "gzip;q=0")],
    );
    assert_eq!(refused.header("content-encoding"), None);
    assert_eq!(refused.body, plain.body);
}

#[test]
fn openmetrics_when_asked() {
    let agent = fixture_agent(&[]);
    agent.wait_ready();
    let r = request(
        &agent.addr,
        "GET",
        "/metrics",
        &[(
            "Accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )],
    );
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text; version=1.0.0"));
    let text = r.text();
    assert!(text.ends_with("# EOF\n"));
    // What Prometheus 2.x sends, gzip included.
    let prom = request(
        &agent.addr,
        "GET",
        "/metrics",
        &[
            ("Accept", "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
            ("Accept-Encoding", "gzip"),
        ],
    );
    assert!(prom
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let mut unzipped = String::new();
    flate2::read::GzDecoder::new(&prom.body[..])
        .read_to_string(&mut unzipped)
        .unwrap();
    assert_eq!(unzipped, text);
    // Text wins a tie and when OpenMetrics is refused.
    for accept in [
        "application/openmetrics-text;q=0.5,text/plain;q=0.5",
        "application/openmetrics-text;q=0,*/*",
        "*/*",
    ] {
        let r = request(&agent.addr, "GET", "/metrics", &[("Accept", accept)]);
        assert!(
            r.header("content-type")
                .unwrap()
                .starts_with("text/plain; version=0.0.4"),
            "{accept}"
        );
    }
    assert!(text.contains("# TYPE accel_disk_read_bytes counter\n"));
    assert!(text.contains("\naccel_disk_read_bytes_total{device=\"sda\"} "));
}
