//! The cloud collector against fake metadata servers on 127.0.0.1 (never a
//! real one): GCE long-poll, AWS IMDSv2, Azure Scheduled Events; a server
//! down, slow or answering garbage; the notify file and the signal.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::golden::{check_golden, normalize};
use crate::util::{fixtures, free_port, value, Agent, Proc, TempDir};

/// One request the fake server received.
#[derive(Clone, Debug)]
struct Req {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

impl Req {
    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    /// Path → (status, body, etag version).
    values: HashMap<String, (u16, String, u64)>,
    requests: Vec<Req>,
    /// Requests that lacked a required header.
    bad: Vec<String>,
    /// Delay before every answer.
    delay: Duration,
}

/// A scripted metadata server on loopback.
pub struct Fake {
    addr: String,
    state: Arc<(Mutex<State>, Condvar)>,
    stop: Arc<AtomicBool>,
}

impl Fake {
    /// `check` says what a request must carry; it returns a reason when not.
    fn start(check: fn(&Req) -> Option<String>) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state: Arc<(Mutex<State>, Condvar)> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || serve(conn, &st, check));
            }
        });
        Fake { addr, state, stop }
    }

    pub fn url(&self, prefix: &str) -> String {
        format!("http://{}{prefix}", self.addr)
    }

    pub fn set(&self, path: &str, status: u16, body: &str) {
        let (m, cv) = &*self.state;
        let mut s = m.lock().unwrap();
        let v = s.values.get(path).map_or(0, |v| v.2) + 1;
        s.values
            .insert(path.to_owned(), (status, body.to_owned(), v));
        cv.notify_all();
    }

    fn delay(&self, d: Duration) {
        self.state.0.lock().unwrap().delay = d;
    }

    fn requests(&self) -> Vec<Req> {
        self.state.0.lock().unwrap().requests.clone()
    }

    fn assert_headers_ok(&self) {
        let s = self.state.0.lock().unwrap();
        assert!(s.bad.is_empty(), "bad requests: {:?}", s.bad);
        assert!(!s.requests.is_empty());
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(&self.addr);
    }
}

fn serve(mut conn: TcpStream, st: &(Mutex<State>, Condvar), check: fn(&Req) -> Option<String>) {
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let req = Req {
        method,
        target,
        headers,
    };
    let (m, cv) = st;
    let mut s = m.lock().unwrap();
    s.requests.push(req.clone());
    if let Some(why) = check(&req) {
        s.bad.push(format!("{} {}: {why}", req.method, req.target));
        drop(s);
        let _ = conn.write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n");
        return;
    }
    let delay = s.delay;
    // GCE long-poll: hold while the ETag is the one the client has.
    let query: HashMap<&str, &str> = req
        .target
        .split_once('?')
        .map(|(_, q)| q.split('&').filter_map(|kv| kv.split_once('=')).collect())
        .unwrap_or_default();
    if query.get("wait_for_change") == Some(&"true") {
        let secs: u64 = query
            .get("timeout_sec")
            .and_then(|t| t.parse().ok())
            .unwrap_or(60);
        let last = query.get("last_etag").map(|t| t.to_string());
        let end = Instant::now() + Duration::from_secs(secs);
        while s.values.get(req.path()).map(|v| format!("etag-{}", v.2)) == last {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            s = cv.wait_timeout(s, left).unwrap().0;
        }
    }
    let (status, body, version) = if req.path() == "/latest/api/token" && req.method == "PUT" {
        (200, "tok-123".to_owned(), 1)
    } else {
        s.values
            .get(req.path())
            .cloned()
            .unwrap_or((404, "not found".into(), 0))
    };
    drop(s);
    std::thread::sleep(delay);
    // Chunked for GCE's text values, a length for the rest.
    let resp = if req.path().ends_with("maintenance-event") {
        format!(
            "HTTP/1.1 {status} X\r\nETag: etag-{version}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        )
    } else {
        format!(
            "HTTP/1.1 {status} X\r\nETag: etag-{version}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let _ = conn.write_all(resp.as_bytes());
    let mut rest = Vec::new();
    let _ = reader
        .get_mut()
        .set_read_timeout(Some(Duration::from_millis(10)));
    let _ = reader.read_to_end(&mut rest);
}

fn gce_check(r: &Req) -> Option<String> {
    (r.header("Metadata-Flavor") != Some("Google") || r.method != "GET")
        .then(|| "no Metadata-Flavor: Google, or not GET".into())
}

fn aws_check(r: &Req) -> Option<String> {
    if r.path() == "/latest/api/token" {
        return (r.method != "PUT" || r.header("X-aws-ec2-metadata-token-ttl-seconds").is_none())
            .then(|| "token request without PUT or ttl".into());
    }
    (r.method != "GET" || r.header("X-aws-ec2-metadata-token") != Some("tok-123"))
        .then(|| "no IMDSv2 token".into())
}

fn azure_check(r: &Req) -> Option<String> {
    (r.header("Metadata") != Some("true") || r.method != "GET")
        .then(|| "no Metadata: true, or not GET (never approve)".into())
}

pub fn gce_fake() -> Fake {
    let f = Fake::start(gce_check);
    f.set(
        "/computeMetadata/v1/instance/maintenance-event",
        200,
        "NONE",
    );
    f.set("/computeMetadata/v1/instance/preempted", 200, "FALSE");
    f
}

fn cloud_agent(extra: &[String], env: &[(&str, &str)]) -> Agent {
    let mut args = vec![
        "--collector.disable-defaults".to_owned(),
        "--collector.cloud".to_owned(),
        "--collector.cloud.interval=100ms".to_owned(),
        "--collector.cloud.poll-interval=200ms".to_owned(),
        "--collector.cloud.timeout=500ms".to_owned(),
    ];
    args.extend(extra.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Agent::start_env(&args, env)
}

fn v(text: &str, series: &str) -> Option<f64> {
    value(text, series)
}

const GCE: &str = "/computeMetadata/v1/instance";

#[test]
fn gce_detected_from_dmi_maintenance_long_poll_and_preemption() {
    let f = gce_fake();
    // Detected from the DMI fixture: no --collector.cloud.provider.
    let agent = cloud_agent(
        &[
            format!("--path.sysfs={}", fixtures().join("cloud/gce").display()),
            format!("--collector.cloud.gce.url={}", f.url("/computeMetadata/v1")),
            "--collector.cloud.long-poll-timeout=2s".into(),
        ],
        &[],
    );
    let up = "accel_cloud_metadata_up{provider=\"gce\"}";
    let migrate = "accel_node_maintenance_pending{provider=\"gce\",type=\"migrate\"}";
    let text = agent.wait_for("nothing scheduled", Duration::from_secs(10), |t| {
        v(t, up) == Some(1.0)
    });
    assert_eq!(v(&text, migrate), Some(0.0));
    assert_eq!(
        v(&text, "accel_node_preemption_imminent{provider=\"gce\"}"),
        Some(0.0)
    );
    assert!(!text.contains("accel_node_termination_timestamp_seconds{"));

    // The long-poll is held; a change answers it at once.
    std::thread::sleep(Duration::from_millis(300));
    let changed = Instant::now();
    f.set(
        &format!("{GCE}/maintenance-event"),
        200,
        "MIGRATE_ON_HOST_MAINTENANCE",
    );
    agent.wait_for("migrate pending", Duration::from_secs(5), |t| {
        v(t, migrate) == Some(1.0)
    });
    assert!(
        changed.elapsed() < Duration::from_millis(1500),
        "long-poll did not answer on change"
    );
    let polls: Vec<Req> = f
        .requests()
        .into_iter()
        .filter(|r| r.path().ends_with("maintenance-event"))
        .collect();
    assert!(polls[0].target.ends_with("maintenance-event"), "{polls:?}");
    assert!(
        polls[1..].iter().all(
            |r| r.target.contains("wait_for_change=true&last_etag=etag-")
                && r.target.contains("timeout_sec=2")
        ),
        "{polls:?}"
    );
    // Held until timeout_sec without a change: a few requests, not a busy loop.
    std::thread::sleep(Duration::from_secs(3));
    let n = f
        .requests()
        .iter()
        .filter(|r| r.path().ends_with("maintenance-event"))
        .count();
    assert!((3..=8).contains(&n), "{n} maintenance-event requests");
    assert_eq!(v(&agent.get("/metrics").text(), up), Some(1.0));

    // Upcoming maintenance with a window, then a preemption.
    f.set(
        &format!("{GCE}/upcoming-maintenance"),
        200,
        r#"{"can_reschedule":false,"maintenance_status":"PENDING","type":"SCHEDULED","window_start_time":"2030-01-02T03:04:05Z","window_end_time":"2030-01-02T04:04:05Z"}"#,
    );
    f.set(&format!("{GCE}/preempted"), 200, "TRUE");
    let text = agent.wait_for("preemption and window", Duration::from_secs(5), |t| {
        v(t, "accel_node_preemption_imminent{provider=\"gce\"}") == Some(1.0)
            && v(t, "accel_node_maintenance_window_start_timestamp_seconds{provider=\"gce\",type=\"scheduled\"}") == Some(1893553445.0)
    });
    assert!(v(
        &text,
        "accel_node_termination_timestamp_seconds{provider=\"gce\"}"
    )
    .is_some());
    check_golden(
        "cloud-gce",
        &normalize(
            &text,
            &[
                "accel_node_termination_timestamp_seconds",
                "accel_collector_samples_total",
            ],
        ),
    );

    // Cleared.
    f.set(&format!("{GCE}/maintenance-event"), 200, "NONE");
    f.set(&format!("{GCE}/upcoming-maintenance"), 404, "");
    f.set(&format!("{GCE}/preempted"), 200, "FALSE");
    let text = agent.wait_for("cleared", Duration::from_secs(5), |t| {
        v(t, migrate) == Some(0.0)
            && v(t, "accel_node_preemption_imminent{provider=\"gce\"}") == Some(0.0)
            && v(
                t,
                "accel_node_maintenance_pending{provider=\"gce\",type=\"scheduled\"}",
            ) == Some(0.0)
    });
    assert_eq!(
        v(
            &text,
            "accel_cloud_notices_total{provider=\"gce\",type=\"migrate\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        v(
            &text,
            "accel_cloud_notices_total{provider=\"gce\",type=\"preemption\"}"
        ),
        Some(1.0)
    );
    f.assert_headers_ok();
}

#[test]
fn aws_spot_scheduled_and_rebalance() {
    let f = Fake::start(aws_check);
    let agent = cloud_agent(
        &[
            "--collector.cloud.provider=aws".into(),
            format!("--collector.cloud.aws.url={}", f.url("")),
        ],
        &[],
    );
    let up = "accel_cloud_metadata_up{provider=\"aws\"}";
    let text = agent.wait_for("nothing scheduled", Duration::from_secs(10), |t| {
        v(t, up) == Some(1.0)
    });
    assert_eq!(
        v(&text, "accel_node_preemption_imminent{provider=\"aws\"}"),
        Some(0.0)
    );
    assert_eq!(
        v(
            &text,
            "accel_node_maintenance_pending{provider=\"aws\",type=\"system-reboot\"}"
        ),
        Some(0.0)
    );

    f.set(
        "/latest/meta-data/spot/instance-action",
        200,
        r#"{"action":"terminate","time":"2030-01-02T03:04:05Z"}"#,
    );
    f.set(
        "/latest/meta-data/events/maintenance/scheduled",
        200,
        r#"[{"Code":"system-reboot","Description":"scheduled reboot","EventId":"instance-event-0d59937288b749b32","NotAfter":"2 Jan 2030 05:04:05 GMT","NotBefore":"2 Jan 2030 04:04:05 GMT","State":"active"}]"#,
    );
    f.set(
        "/latest/meta-data/events/recommendations/rebalance",
        200,
        r#"{"noticeTime":"2030-01-02T02:00:00Z"}"#,
    );
    let text = agent.wait_for("spot and events", Duration::from_secs(5), |t| {
        v(t, "accel_node_preemption_imminent{provider=\"aws\"}") == Some(1.0)
            && v(
                t,
                "accel_node_maintenance_pending{provider=\"aws\",type=\"rebalance\"}",
            ) == Some(1.0)
    });
    assert_eq!(
        v(
            &text,
            "accel_node_termination_timestamp_seconds{provider=\"aws\"}"
        ),
        Some(1893553445.0)
    );
    assert_eq!(
        v(
            &text,
            "accel_node_maintenance_pending{provider=\"aws\",type=\"system-reboot\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        v(&text, "accel_node_maintenance_window_start_timestamp_seconds{provider=\"aws\",type=\"system-reboot\"}"),
        Some(1893557045.0)
    );
    f.set("/latest/meta-data/spot/instance-action", 404, "");
    f.set("/latest/meta-data/events/maintenance/scheduled", 200, "[]");
    f.set(
        "/latest/meta-data/events/recommendations/rebalance",
        404,
        "",
    );
    agent.wait_for("cleared", Duration::from_secs(5), |t| {
        v(t, "accel_node_preemption_imminent{provider=\"aws\"}") == Some(0.0)
            && v(
                t,
                "accel_node_maintenance_pending{provider=\"aws\",type=\"system-reboot\"}",
            ) == Some(0.0)
    });
    // The token is fetched once and reused.
    let puts = f.requests().iter().filter(|r| r.method == "PUT").count();
    assert_eq!(puts, 1);
    f.assert_headers_ok();
}

#[test]
fn azure_scheduled_events_for_this_vm_only() {
    let f = Fake::start(azure_check);
    f.set("/metadata/instance/compute/name", 200, "gpu-node-7");
    f.set(
        "/metadata/scheduledevents",
        200,
        r#"{"DocumentIncarnation":1,"Events":[]}"#,
    );
    let agent = cloud_agent(
        &[
            "--collector.cloud.provider=azure".into(),
            format!("--collector.cloud.azure.url={}", f.url("")),
        ],
        &[],
    );
    let up = "accel_cloud_metadata_up{provider=\"azure\"}";
    agent.wait_for("nothing scheduled", Duration::from_secs(10), |t| {
        v(t, up) == Some(1.0)
    });
    f.set(
        "/metadata/scheduledevents",
        200,
        r#"{"DocumentIncarnation":2,"Events":[
          {"EventId":"A1","EventType":"Reboot","ResourceType":"VirtualMachine","Resources":["gpu-node-7"],"EventStatus":"Scheduled","NotBefore":"Wed, 02 Jan 2030 03:04:05 GMT","Description":"","EventSource":"Platform","DurationInSeconds":-1},
          {"EventId":"B2","EventType":"Preempt","ResourceType":"VirtualMachine","Resources":["other-node"],"EventStatus":"Scheduled","NotBefore":"Wed, 02 Jan 2030 03:04:05 GMT"}]}"#,
    );
    let text = agent.wait_for("reboot", Duration::from_secs(5), |t| {
        v(
            t,
            "accel_node_maintenance_pending{provider=\"azure\",type=\"reboot\"}",
        ) == Some(1.0)
    });
    // The preemption is another VM's.
    assert_eq!(
        v(&text, "accel_node_preemption_imminent{provider=\"azure\"}"),
        Some(0.0)
    );
    assert_eq!(
        v(&text, "accel_node_maintenance_window_start_timestamp_seconds{provider=\"azure\",type=\"reboot\"}"),
        Some(1893553445.0)
    );
    f.set(
        "/metadata/scheduledevents",
        200,
        r#"{"DocumentIncarnation":3,"Events":[{"EventId":"C3","EventType":"Preempt","ResourceType":"VirtualMachine","Resources":["gpu-node-7"],"EventStatus":"Scheduled","NotBefore":"Wed, 02 Jan 2030 03:04:05 GMT"}]}"#,
    );
    let text = agent.wait_for("preempt", Duration::from_secs(5), |t| {
        v(t, "accel_node_preemption_imminent{provider=\"azure\"}") == Some(1.0)
    });
    assert_eq!(
        v(
            &text,
            "accel_node_maintenance_pending{provider=\"azure\",type=\"reboot\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        v(
            &text,
            "accel_node_termination_timestamp_seconds{provider=\"azure\"}"
        ),
        Some(1893553445.0)
    );
    assert!(
        f.requests().iter().all(|r| r.method == "GET"),
        "never POST an approval"
    );
    f.assert_headers_ok();
}

/// Scrapes stay fast while the metadata server misbehaves.
fn assert_down_and_fast(agent: &Agent, provider: &str) {
    let up = format!("accel_cloud_metadata_up{{provider=\"{provider}\"}}");
    std::thread::sleep(Duration::from_millis(1500));
    for _ in 0..5 {
        let t = Instant::now();
        let text = agent.get("/metrics").text();
        assert!(
            t.elapsed() < Duration::from_millis(300),
            "scrape took {:?}",
            t.elapsed()
        );
        assert_eq!(v(&text, &up), Some(0.0), "{text}");
        assert!(
            !text.contains("accel_node_maintenance_pending{"),
            "stale values served"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn server_down_slow_or_garbage_is_up_zero() {
    // Down: nothing listens on the port.
    let down = format!("http://127.0.0.1:{}/computeMetadata/v1", free_port());
    let agent = cloud_agent(
        &[
            "--collector.cloud.provider=gce".into(),
            format!("--collector.cloud.gce.url={down}"),
        ],
        &[],
    );
    assert_down_and_fast(&agent, "gce");
    drop(agent);

    // Slow: every answer takes longer than the client's 500ms deadline.
    let slow = gce_fake();
    slow.delay(Duration::from_secs(3));
    let agent = cloud_agent(
        &[
            "--collector.cloud.provider=gce".into(),
            format!(
                "--collector.cloud.gce.url={}",
                slow.url("/computeMetadata/v1")
            ),
        ],
        &[],
    );
    assert_down_and_fast(&agent, "gce");
    drop(agent);

    // Garbage: malformed JSON and values.
    let f = Fake::start(aws_check);
    f.set(
        "/latest/meta-data/spot/instance-action",
        200,
        "{\"action\": ",
    );
    let agent = cloud_agent(
        &[
            "--collector.cloud.provider=aws".into(),
            format!("--collector.cloud.aws.url={}", f.url("")),
        ],
        &[],
    );
    assert_down_and_fast(&agent, "aws");
    // It recovers when the server does.
    f.set("/latest/meta-data/spot/instance-action", 404, "");
    agent.wait_for("recovery", Duration::from_secs(5), |t| {
        v(t, "accel_cloud_metadata_up{provider=\"aws\"}") == Some(1.0)
    });

    let g = gce_fake();
    g.set(&format!("{GCE}/preempted"), 200, "{\"not\": json");
    let agent = cloud_agent(
        &[
            "--collector.cloud.provider=gce".into(),
            format!("--collector.cloud.gce.url={}", g.url("/computeMetadata/v1")),
        ],
        &[],
    );
    assert_down_and_fast(&agent, "gce");
}

#[test]
fn no_cloud_in_dmi_means_absent() {
    let agent = cloud_agent(
        &[format!(
            "--path.sysfs={}",
            fixtures().join("cloud/none").display()
        )],
        &[],
    );
    let text = agent.get_ready("/metrics").text();
    assert_eq!(
        v(&text, "accel_collector_enabled{collector=\"cloud\"}"),
        Some(0.0)
    );
    assert!(!text.contains("accel_cloud_metadata_up"));
}

#[test]
fn notify_file_once_per_event_and_signal_to_gpu_process() {
    let dir = TempDir::new("cloud-notify");
    let got = dir.0.join("got");
    let child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "trap 'echo got >> {}' USR1; while :; do sleep 0.1; done",
            got.display()
        ))
        .spawn()
        .unwrap();
    let child = Proc(child);
    let pid = child.0.id().to_string();
    let scenario = dir.0.join("held.toml");
    std::fs::write(
        &scenario,
        "description = \"one GPU held by the test's child\"\n[[gpus]]\ncount = 1\nmodel = \"h100-sxm5-80gb\"\nutilization = 90\nprocesses = [{ pid = \"env:CLOUD_CHILD_PID\", name = \"python3\", used_memory_mib = 1000 }]\n",
    )
    .unwrap();
    let f = gce_fake();
    let notice = dir.0.join("disruption.json");
    let lib = format!("--nvml.library={}", crate::gpu::sim_lib().display());
    let agent = cloud_agent(
        &[
            lib,
            "--collector.gpu".into(),
            "--collector.gpu.interval=200ms".into(),
            "--collector.cloud.provider=gce".into(),
            format!("--collector.cloud.gce.url={}", f.url("/computeMetadata/v1")),
            format!("--disruption.notify-file={}", notice.display()),
            "--disruption.notify-signal=SIGUSR1".into(),
        ],
        &[
            ("NVML_SIM_SCENARIO", scenario.to_str().unwrap()),
            ("CLOUD_CHILD_PID", &pid),
        ],
    );
    agent.wait_for(
        "the child as a GPU process and metadata up",
        Duration::from_secs(10),
        |t| {
            t.contains(&format!("pid=\"{pid}\""))
                && v(t, "accel_cloud_metadata_up{provider=\"gce\"}") == Some(1.0)
        },
    );
    // A migration is not a reason to checkpoint-and-go: no notice.
    f.set(
        &format!("{GCE}/maintenance-event"),
        200,
        "MIGRATE_ON_HOST_MAINTENANCE",
    );
    agent.wait_for("migrate", Duration::from_secs(5), |t| {
        v(
            t,
            "accel_node_maintenance_pending{provider=\"gce\",type=\"migrate\"}",
        ) == Some(1.0)
    });
    assert!(!notice.exists());

    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    f.set(&format!("{GCE}/preempted"), 200, "TRUE");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(notice.exists() && got.exists()) {
        assert!(Instant::now() < deadline, "no notice file or signal");
        std::thread::sleep(Duration::from_millis(50));
    }
    let body = std::fs::read_to_string(&notice).unwrap();
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(j["provider"], "gce");
    assert_eq!(j["type"], "preemption");
    let detected = j["detected_at"].as_u64().unwrap();
    assert!(detected >= before && detected <= before + 10, "{body}");
    assert_eq!(j["deadline"].as_u64(), Some(detected + 30), "{body}");
    // Polls go on; the event is told once.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(std::fs::read_to_string(&got).unwrap().lines().count(), 1);
    let written = |a: &Agent| {
        a.log_lines()
            .iter()
            .filter(|l| l.contains("disruption notice written"))
            .count()
    };
    assert_eq!(written(&agent), 1);

    // The next event is a new one: told again.
    f.set(&format!("{GCE}/preempted"), 200, "FALSE");
    agent.wait_for("cleared", Duration::from_secs(5), |t| {
        v(t, "accel_node_preemption_imminent{provider=\"gce\"}") == Some(0.0)
    });
    f.set(
        &format!("{GCE}/maintenance-event"),
        200,
        "TERMINATE_ON_HOST_MAINTENANCE",
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(&got).unwrap().lines().count() < 2 {
        assert!(Instant::now() < deadline, "second event not signalled");
        std::thread::sleep(Duration::from_millis(50));
    }
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&notice).unwrap()).unwrap();
    assert_eq!(j["type"], "terminate");
    assert!(j["deadline"].is_null());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(written(&agent), 2);
    drop(child);
}

/// Malformed HTTP answers, the kind that once panicked a poller (a chunk
/// size near 2^64 after a 2-byte chunk), a garbage status line, a body
/// cut short: in turn, while `bad` is set; GCE's good answers otherwise.
/// Returns the base URL.
fn raw_gce(bad: Arc<AtomicBool>) -> String {
    const BAD: [&[u8]; 4] = [
        b"HTTP/1.1 200 OK\r\nMetadata-Flavor: Google\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nNO\r\nFFFFFFFFFFFFFFF0\r\nxx",
        b"HTTP/1.1 200 OK\r\nMetadata-Flavor: Google\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nNO\r\n1FFFFFFFFFFFFFFFF\r\nx",
        b"HTTQ/9 two hundred\r\n\xff\xfe\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nMetadata-Flavor: Google\r\nContent-Length: 99\r\n\r\nNONE",
    ];
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/computeMetadata/v1",
        listener.local_addr().unwrap()
    );
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut s) = stream else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap_or(0) == 1 {
                head.push(b[0]);
            }
            let head = String::from_utf8_lossy(&head);
            let path = head.split_whitespace().nth(1).unwrap_or("");
            let answer: Vec<u8> = if bad.load(Ordering::SeqCst) {
                BAD[n % BAD.len()].to_vec()
            } else {
                let body = if path.contains("/maintenance-event") {
                    "NONE"
                } else if path.contains("/preempted") {
                    "FALSE"
                } else {
                    ""
                };
                let status = if body.is_empty() {
                    "404 Not Found"
                } else {
                    "200 OK"
                };
                format!("HTTP/1.1 {status}\r\nMetadata-Flavor: Google\r\nETag: e1\r\nContent-Length: {}\r\n\r\n{body}", body.len())
                    .into_bytes()
            };
            let _ = s.write_all(&answer);
        }
    });
    url
}

/// Issue 16's malformed metadata server: the agent stays up and answers
/// fast, the cloud collector shows the failure (`accel_cloud_metadata_up`
/// 0, failed polls counted, no notice series served stale), no poller dies
/// (no worker restart), and it recovers when the server answers well.
#[test]
fn malformed_metadata_answers_are_counted_and_survived() {
    let bad = Arc::new(AtomicBool::new(false));
    let url = raw_gce(bad.clone());
    let agent = cloud_agent(
        &[
            "--collector.cloud.provider=gce".into(),
            format!("--collector.cloud.gce.url={url}"),
            "--collector.cloud.long-poll-timeout=1s".into(),
        ],
        &[],
    );
    let up = "accel_cloud_metadata_up{provider=\"gce\"}";
    let errors = "accel_cloud_metadata_errors_total{provider=\"gce\"}";
    let restarts = "accel_collector_worker_restarts_total{collector=\"cloud\"}";
    agent.wait_for("a good start", Duration::from_secs(10), |t| {
        v(t, up) == Some(1.0)
    });
    bad.store(true, Ordering::SeqCst);
    let text = agent.wait_for("failures counted", Duration::from_secs(15), |t| {
        v(t, up) == Some(0.0) && v(t, errors).is_some_and(|n| n >= 4.0)
    });
    assert_down_and_fast(&agent, "gce");
    assert_eq!(v(&text, restarts), Some(0.0), "a poller panicked:\n{text}");
    bad.store(false, Ordering::SeqCst);
    let text = agent.wait_for("recovery", Duration::from_secs(20), |t| {
        v(t, up) == Some(1.0)
    });
    assert_eq!(
        v(
            &text,
            "accel_node_maintenance_pending{provider=\"gce\",type=\"migrate\"}"
        ),
        Some(0.0)
    );
    assert_eq!(v(&text, restarts), Some(0.0));
    assert_eq!(
        v(&text, "accel_collector_success{collector=\"cloud\"}"),
        Some(1.0)
    );
}
