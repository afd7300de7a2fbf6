//! A real Prometheus scrapes the agent running on this machine's /proc and
//! /sys, and its query API must show the target up, every collector
//! succeeding, and `rate()` working over the disk and network counters.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{free_port, request, require, value, wait_http, Agent, Proc, TempDir};

/// A Prometheus server, killed when dropped.
pub struct Prometheus {
    pub proc: Proc,
    pub addr: String,
    log: std::path::PathBuf,
    /// Its directory (config, rule files, storage), removed on drop.
    _dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` every second, with its storage in
    /// a fresh directory, and waits until it is ready.
    pub fn start(target: &str) -> Prometheus {
        Self::start_with(&[target], &[])
    }

    /// Starts Prometheus scraping `targets` (job `accel`) every second and
    /// evaluating `rules` (file name, contents) every second. Retries on
    /// another port if it loses the race for the one picked.
    pub fn start_with(targets: &[&str], rules: &[(&str, String)]) -> Prometheus {
        let bin = require("prometheus");
        let dir = TempDir::new("prometheus");
        let config = dir.0.join("prometheus.yml");
        let mut yaml = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n",
        );
        if !rules.is_empty() {
            yaml.push_str("rule_files:\n");
            for (name, text) in rules {
                std::fs::write(dir.0.join(name), text).unwrap();
                yaml.push_str(&format!("  - {name}\n"));
            }
        }
        yaml.push_str(
            "scrape_configs:\n  - job_name: accel\n    static_configs:\n      - targets:\n",
        );
        for t in targets {
            yaml.push_str(&format!("          - '{t}'\n"));
        }
        std::fs::write(&config, yaml).unwrap();
        let log = dir.0.join("prometheus.log");
        let mut why = Vec::new();
        for _ in 0..3 {
            let addr = format!("127.0.0.1:{}", free_port());
            let mut proc = Proc(
                Command::new(&bin)
                    .arg(format!("--config.file={}", config.display()))
                    .arg(format!(
                        "--storage.tsdb.path={}",
                        dir.0.join("data").display()
                    ))
                    .arg(format!("--web.listen-address={addr}"))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(&log).unwrap())
                    .spawn()
                    .expect("start prometheus"),
            );
            match wait_http(&addr, "/-/ready", Duration::from_secs(20), &mut proc) {
                Ok(_) => {
                    return Prometheus {
                        proc,
                        addr,
                        log,
                        _dir: dir,
                    }
                }
                Err(e) => why.push(format!(
                    "{e}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )),
            }
        }
        panic!("prometheus did not become ready:\n{}", why.join("\n"));
    }

    /// An instant query; the `data.result` vector as (labels, value).
    pub fn query(&self, q: &str) -> Vec<(serde_json::Map<String, Value>, f64)> {
        let body = self.get_query(q);
        assert_eq!(body["data"]["resultType"], "vector", "{q}: {body}");
        body["data"]["result"]
            .as_array()
            .unwrap_or_else(|| panic!("{q}: no result: {body}"))
            .iter()
            .map(|s| {
                let labels = s["metric"].as_object().cloned().unwrap_or_default();
                let v = s["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("{q}: bad sample {s}"));
                (labels, v)
            })
            .collect()
    }

    /// An instant query of any result type; its series or samples (a
    /// scalar or string result counts as one).
    pub fn query_any(&self, q: &str) -> Vec<Value> {
        match &self.get_query(q)["data"]["result"] {
            Value::Array(v) => v.clone(),
            other => vec![other.clone()],
        }
    }

    /// Runs an instant query; the whole successful answer.
    fn get_query(&self, q: &str) -> Value {
        let r = request(
            &self.addr,
            "GET",
            &format!("/api/v1/query?query={}", percent_encode(q)),
            &[],
        );
        let body: Value = serde_json::from_slice(&r.body).unwrap_or_else(|e| {
            panic!("{q}: bad JSON ({e}): {}", String::from_utf8_lossy(&r.body))
        });
        assert_eq!(r.status, 200, "{q}: {body}");
        assert_eq!(body["status"], "success", "{q}: {body}");
        body
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn prometheus_scrapes_the_agent() {
    let agent = Agent::start(&[
        "--collector.disk.interval=1s",
        "--collector.network.interval=1s",
    ]);
    agent.wait_ready();
    let mut prom = Prometheus::start(&agent.addr);

    let deadline = Instant::now() + Duration::from_secs(25);
    let mut state;
    loop {
        if let Ok(Some(st)) = prom.proc.0.try_wait() {
            panic!("prometheus exited: {st}\n{}", prom.log_text());
        }
        let up = prom.query("up{job=\"accel\"}");
        let disk = prom.query("rate(accel_disk_read_bytes_total[1m])");
        let net = prom.query("rate(accel_network_receive_bytes_total[1m])");
        let done = up.len() == 1
            && up[0].1 == 1.0
            && disk.iter().any(|(_, v)| v.is_finite())
            && net.iter().any(|(_, v)| v.is_finite());
        state = format!("up: {up:?}\ndisk rate: {disk:?}\nnetwork rate: {net:?}");
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never saw the agent up with disk and network rates:\n{state}\n\
             --- prometheus log ---\n{}\n--- agent log ---\n{}",
            prom.log_text(),
            agent.log_lines().join("\n")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("{state}");

    // Every collector that runs here succeeds, as Prometheus stored it.
    let success = prom.query("accel_collector_success");
    assert!(
        success.iter().any(|(l, _)| l["collector"] == "disk")
            && success.iter().any(|(l, _)| l["collector"] == "network"),
        "accel_collector_success lacks disk or network: {success:?}"
    );
    for (labels, v) in &success {
        assert_eq!(
            *v,
            1.0,
            "collector failed: {labels:?}\n--- agent log ---\n{}",
            agent.log_lines().join("\n")
        );
    }

    // Prometheus took every sample: nothing duplicated, out of order or
    // out of bounds.
    let own = request(&prom.addr, "GET", "/metrics", &[]).text();
    for m in [
        "prometheus_target_scrapes_sample_duplicate_timestamp_total",
        "prometheus_target_scrapes_sample_out_of_order_total",
        "prometheus_target_scrapes_sample_out_of_bounds_total",
        "prometheus_target_scrapes_exceeded_sample_limit_total",
    ] {
        assert_eq!(
            value(&own, m),
            Some(0.0),
            "{m}\n--- prometheus log ---\n{}",
            prom.log_text()
        );
    }
}
