//! The tpu collector end to end: the real binary on a TPU host's sysfs and
//! procfs fixture (tests/fixtures/tpu/v5e-8: eight v5e chips, a trainer
//! holding all of them, a profiler holding chip 0), asking the simulated
//! libtpu runtime metric service (tests/tpu-sim) over real gRPC.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::golden::{check_golden, normalize, promtool_check};
use crate::util::{bin, fixtures, free_port, root, value, Agent, Proc};

/// The simulator, built next to the agent binary (once per test process).
fn sim_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = bin().parent().unwrap().to_path_buf();
            let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            cmd.args(["build", "-q", "-p", "tpu-sim"])
                .current_dir(root());
            if dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let st = cmd.status().expect("run cargo build -p tpu-sim");
            assert!(st.success(), "cargo build -p tpu-sim failed");
            let b = dir.join("tpu-sim");
            assert!(b.exists(), "{} not built", b.display());
            b
        })
        .clone()
}

/// Starts the simulator on `scenario`, on a free port; returns it and the
/// port once it listens.
pub fn sim(scenario: &str) -> (Proc, u16) {
    for _ in 0..5 {
        let port = free_port();
        let mut child = Command::new(sim_bin())
            .args([scenario, "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tpu-sim");
        let out = child.stdout.take().unwrap();
        let listening = BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.starts_with("listening on"));
        if listening {
            return (Proc(child), port);
        }
        // Lost the race for the port: try another.
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("tpu-sim never listened");
}

/// The agent on the v5e-8 fixture with only the tpu collector, asking
/// `ports`.
pub fn agent(ports: &[u16], extra: &[&str]) -> Agent {
    let fx = fixtures().join("tpu/v5e-8");
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let mut args = vec![
        "--collector.disable-defaults".to_owned(),
        "--collector.tpu".to_owned(),
        format!("--path.sysfs={}", fx.join("sys").display()),
        format!("--path.procfs={}", fx.join("proc").display()),
        format!("--collector.tpu.runtime-ports={}", ports.join(",")),
        "--collector.tpu.interval=200ms".to_owned(),
        "--collector.tpu.runtime-interval=200ms".to_owned(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Agent::start(&args)
}

/// The families whose values change from run to run.
const VOLATILE: &[&str] = &[
    "accel_tpu_allocated_seconds_total",
    "accel_tpu_idle_allocated_seconds_total",
    "accel_tpu_busy_seconds_total",
    "accel_tpu_runtime_errors_total",
];

/// The scrape with the ports renamed (8431, 8432, ...) and volatile values
/// replaced.
fn normalized(text: &str, ports: &[u16]) -> String {
    let mut t = text.to_owned();
    let mut ports = ports.to_vec();
    // The agent asks (and reports) ports in ascending order.
    ports.sort_unstable();
    for (i, p) in ports.iter().enumerate() {
        t = t.replace(&format!("port=\"{p}\""), &format!("port=\"{}\"", 8431 + i));
    }
    normalize(&t, VOLATILE)
}

fn lint(text: &str) {
    let (ok, msg) = promtool_check(text);
    assert!(
        ok && msg.trim().is_empty(),
        "promtool check metrics:\n{msg}"
    );
}

fn chip(text: &str, family: &str, chip: u32) -> Option<f64> {
    value(text, &format!("{family}{{chip=\"{chip}\"}}"))
}

#[test]
fn v5e_8_training() {
    let (_sim, port) = sim("v5e-8-training");
    let agent = agent(&[port], &[]);
    let text = agent.wait_for("runtime metrics", Duration::from_secs(15), |t| {
        t.contains("accel_tpu_duty_cycle_ratio{chip=\"7\"}")
            && t.contains("accel_tpu_hlo_execution_seconds_count")
    });
    assert_eq!(value(&text, "accel_tpu_chips"), Some(8.0));
    assert_eq!(
        value(&text, &format!("accel_tpu_runtime_up{{port=\"{port}\"}}")),
        Some(1.0)
    );
    assert!(text.contains("accel_tpu_info{chip=\"0\",type=\"v5e\",pci_bus_id=\"0000:00:04.0\"} 1"));
    // The virtio NIC on the same bus is not a chip.
    assert!(!text.contains("0000:00:03.0"));
    assert_eq!(
        chip(&text, "accel_tpu_hbm_capacity_bytes", 3),
        Some(16.0 * 1024.0 * 1024.0 * 1024.0)
    );
    assert_eq!(
        value(&text, "accel_tpu_hbm_used_bytes{chip=\"7\",device=\"7\"}"),
        Some(13_958_643_712.0)
    );
    assert_eq!(chip(&text, "accel_tpu_duty_cycle_ratio", 6), Some(0.95));
    assert_eq!(
        chip(&text, "accel_tpu_tensorcore_utilization_ratio", 0),
        Some(0.61)
    );
    // device_ordinal as a string (newer libtpu).
    assert_eq!(
        value(&text, "accel_tpu_hlo_queue_size{chip=\"1\",device=\"1\"}"),
        Some(2.0)
    );
    assert_eq!(
        value(
            &text,
            "accel_tpu_hlo_execution_seconds_count{chip=\"0\",device=\"0\"}"
        ),
        Some(5033.0)
    );
    // Both holders of chip 0, with their owners.
    assert!(text.contains("accel_tpu_process_info{chip=\"0\",pid=\"4242\",comm=\"python3\",unit=\"slurmstepd.scope\",container=\"\",slurm_job=\"1234\"} 1"));
    assert!(text.contains("accel_tpu_process_info{chip=\"0\",pid=\"4300\",comm=\"tpu-prof\""));
    assert_eq!(chip(&text, "accel_tpu_allocated", 5), Some(1.0));
    let per_port = |f: &str| value(&text, &format!("{f}{{port=\"{port}\"}}"));
    assert_eq!(per_port("accel_tpu_megascale_error_detected"), Some(0.0));
    assert_eq!(per_port("accel_tpu_slice_error_detected"), Some(0.0));
    lint(&text);
    check_golden("tpu-v5e-8-training", &normalized(&text, &[port]));

    // Busy seconds integrate the duty cycle over the same sample intervals
    // as the held time: their increases are in the ratio of chip 0's duty
    // cycle (0.975), whatever the scrape timing.
    let counters = |t: &str| {
        (
            chip(t, "accel_tpu_busy_seconds_total", 0).unwrap(),
            chip(t, "accel_tpu_allocated_seconds_total", 0).unwrap(),
            chip(t, "accel_tpu_idle_allocated_seconds_total", 0).unwrap(),
        )
    };
    let (b0, a0, i0) = counters(&text);
    std::thread::sleep(Duration::from_secs(2));
    let (b1, a1, i1) = counters(&agent.get("/metrics").text());
    assert!(a1 - a0 > 1.0, "held {} s in 2 s", a1 - a0);
    let duty = (b1 - b0) / (a1 - a0);
    assert!((duty - 0.975).abs() < 1e-6, "busy / held = {duty}");
    assert_eq!(i1, i0, "a busy chip is not idle");
}

#[test]
fn idle_allocated_with_an_older_libtpu() {
    let (_sim, port) = sim("idle-allocated");
    let agent = agent(&[port], &[]);
    let text = agent.wait_for("runtime metrics", Duration::from_secs(15), |t| {
        t.contains("accel_tpu_hlo_queue_size{chip=\"7\"")
    });
    // device_ordinal as an int (older libtpu) is read the same.
    assert_eq!(
        value(&text, "accel_tpu_hlo_queue_size{chip=\"7\",device=\"7\"}"),
        Some(0.0)
    );
    // Not served by this runtime: absent, not 0.
    assert!(!text.contains("accel_tpu_tensorcore_utilization_ratio{"));
    assert!(!text.contains("accel_tpu_slice_error_detected{"));
    assert_eq!(
        value(
            &text,
            &format!("accel_tpu_megascale_error_detected{{port=\"{port}\"}}")
        ),
        Some(1.0)
    );
    lint(&text);
    check_golden("tpu-idle-allocated", &normalized(&text, &[port]));
    // Chip 1's duty cycle is 0, under the threshold: all its held time is
    // idle.
    let counters = |t: &str| {
        (
            chip(t, "accel_tpu_idle_allocated_seconds_total", 1).unwrap(),
            chip(t, "accel_tpu_allocated_seconds_total", 1).unwrap(),
        )
    };
    let (i0, a0) = counters(&text);
    std::thread::sleep(Duration::from_secs(2));
    let (i1, a1) = counters(&agent.get("/metrics").text());
    assert!(a1 - a0 > 1.0, "held {} s in 2 s", a1 - a0);
    assert!(
        ((i1 - i0) - (a1 - a0)).abs() < 1e-9,
        "idle {} of held {}",
        i1 - i0,
        a1 - a0
    );
}

#[test]
fn input_bound() {
    let (_sim, port) = sim("input-bound");
    let agent = agent(&[port], &[]);
    let text = agent.wait_for("runtime metrics", Duration::from_secs(15), |t| {
        t.contains("accel_tpu_host_to_device_transfer_latency_seconds_count")
            && t.contains("accel_tpu_duty_cycle_ratio{chip=\"7\"}")
    });
    let duty = chip(&text, "accel_tpu_duty_cycle_ratio", 0).unwrap();
    assert!((0.3..0.4).contains(&duty), "{duty}");
    lint(&text);
    check_golden("tpu-input-bound", &normalized(&text, &[port]));
}

#[test]
fn runtime_absent_is_not_an_error() {
    // Nothing listens on these ports.
    let ports = [free_port(), free_port()];
    let agent = agent(&ports, &[]);
    agent.wait_ready();
    let text = agent.wait_for("a sample", Duration::from_secs(10), |t| {
        t.contains("accel_tpu_runtime_up{")
    });
    for p in ports {
        assert_eq!(
            value(&text, &format!("accel_tpu_runtime_up{{port=\"{p}\"}}")),
            Some(0.0)
        );
    }
    assert!(!text.contains("accel_tpu_runtime_errors_total{"), "{text}");
    assert_eq!(
        value(&text, "accel_collector_success{collector=\"tpu\"}"),
        Some(1.0)
    );
    // The chips are held, with nothing to say how busy they are.
    assert_eq!(chip(&text, "accel_tpu_allocated", 0), Some(1.0));
    assert!(!text.contains("accel_tpu_duty_cycle_ratio{"));
    lint(&text);
    check_golden("tpu-runtime-absent", &normalized(&text, &ports));
}

#[test]
fn a_hung_or_garbled_runtime_never_blocks_the_others() {
    let (_hang, hang) = sim("hang");
    let (_bad, bad) = sim("malformed");
    let (_good, good) = sim("v5e-8-training");
    // A 2 s deadline: a scrape that waited on the hung port would take
    // that long.
    let agent = agent(&[hang, bad, good], &["--collector.tpu.runtime-timeout=2s"]);
    let text = agent.wait_for("errors counted", Duration::from_secs(15), |t| {
        t.contains(&format!(
            "accel_tpu_runtime_errors_total{{port=\"{hang}\",kind=\"timeout\"}}"
        )) && t.contains(&format!(
            "accel_tpu_runtime_errors_total{{port=\"{bad}\",kind=\"invalid\"}}"
        ))
    });
    for (p, up) in [(hang, 0.0), (bad, 0.0)] {
        assert_eq!(
            value(&text, &format!("accel_tpu_runtime_up{{port=\"{p}\"}}")),
            Some(up),
            "port {p}"
        );
    }
    // The good port answers all along.
    let text = agent.wait_for("the good port", Duration::from_secs(10), |t| {
        t.contains(&format!("accel_tpu_runtime_up{{port=\"{good}\"}} 1"))
    });
    assert_eq!(chip(&text, "accel_tpu_duty_cycle_ratio", 0), Some(0.975));
    assert_eq!(
        value(&text, "accel_collector_success{collector=\"tpu\"}"),
        Some(1.0)
    );
    // Scrapes stay fast while a port hangs.
    for _ in 0..5 {
        let t0 = Instant::now();
        let r = agent.get("/metrics");
        assert_eq!(r.status, 200);
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    }
    // Counted once per failed poll: they keep growing.
    let key = format!("accel_tpu_runtime_errors_total{{port=\"{hang}\",kind=\"timeout\"}}");
    let n0 = value(&text, &key).unwrap();
    let later = agent.wait_for("more timeouts", Duration::from_secs(10), |t| {
        value(t, &key).is_some_and(|n| n > n0)
    });
    lint(&later);
}

#[test]
fn absent_without_chips() {
    // The main fixture tree has no TPU on its PCI bus.
    let fx = fixtures();
    let agent = Agent::start(&[
        "--collector.disable-defaults",
        "--collector.tpu",
        &format!("--path.sysfs={}", fx.join("sys").display()),
        &format!("--path.procfs={}", fx.join("proc").display()),
    ]);
    let text = agent.get_ready("/metrics").text();
    assert_eq!(
        value(&text, "accel_collector_enabled{collector=\"tpu\"}"),
        Some(0.0)
    );
    assert!(!text.contains("accel_tpu_"), "{text}");
}

#[test]
fn malformed_runtime_golden() {
    let (_bad, port) = sim("malformed");
    let agent = agent(&[port], &[]);
    let key = format!("accel_tpu_runtime_errors_total{{port=\"{port}\",kind=\"invalid\"}}");
    let text = agent.wait_for("an invalid answer counted", Duration::from_secs(15), |t| {
        t.contains(&key)
    });
    assert_eq!(
        value(&text, &format!("accel_tpu_runtime_up{{port=\"{port}\"}}")),
        Some(0.0)
    );
    // The chips and their holders are still reported.
    assert_eq!(value(&text, "accel_tpu_chips"), Some(8.0));
    assert!(!text.contains("accel_tpu_duty_cycle_ratio{"));
    lint(&text);
    check_golden("tpu-runtime-malformed", &normalized(&text, &[port]));
}

#[test]
fn mfu_of_a_run_on_tpu_chips() {
    let dir = crate::util::TempDir::new("tpu-goodput");
    let sock = dir.0.join("events.sock");
    let fx = fixtures().join("tpu/v5e-8");
    let agent = Agent::start(&[
        "--collector.disable-defaults",
        "--collector.tpu",
        "--collector.goodput",
        &format!("--events.socket={}", sock.display()),
        &format!("--path.sysfs={}", fx.join("sys").display()),
        &format!("--path.procfs={}", fx.join("proc").display()),
        &format!("--collector.tpu.runtime-ports={}", free_port()),
        "--collector.tpu.interval=200ms",
        "--collector.goodput.interval=200ms",
    ]);
    agent.wait_ready();
    let s = std::os::unix::net::UnixDatagram::unbound().unwrap();
    let send = |j: &str| {
        s.send_to(j.as_bytes(), &sock).unwrap();
    };
    // Two chips, one by its PCI address, one by index; bf16 steps at
    // exactly 40 % of 2 x 197 TFLOP/s.
    send(r#"{"v":1,"kind":"run_start","run":"gemma","rank":0,"devices":["TPU-0000:00:04.0",1]}"#);
    let flops = 0.4 * 1.5 * 2.0 * 197e12;
    for step in 1..=4 {
        send(&format!(
            r#"{{"v":1,"kind":"step","run":"gemma","rank":0,"step":{step},"seconds":1.5,"model_flops":{flops:e},"dtype":"bf16"}}"#
        ));
    }
    let text = agent.wait_for("the run's MFU", Duration::from_secs(10), |t| {
        value(t, "accel_run_mfu_ratio{run=\"gemma\"}").is_some()
    });
    let mfu = value(&text, "accel_run_mfu_ratio{run=\"gemma\"}").unwrap();
    assert!((mfu - 0.4).abs() < 1e-9, "{mfu}");
    assert_eq!(
        value(&text, "accel_run_peak_flops{run=\"gemma\",dtype=\"bf16\"}"),
        Some(2.0 * 197e12)
    );
    assert!(text.contains("accel_run_device{run=\"gemma\",gpu=\"0\",uuid=\"TPU-0000:00:04.0\"} 1"));
    assert!(text.contains("accel_run_device{run=\"gemma\",gpu=\"1\",uuid=\"TPU-0000:00:05.0\"} 1"));
    // TPU chips are not GPUs.
    assert!(!text.contains("accel_gpu_peak_flops{"));
}

/// `accel-agent profile` on the TPU fixture against `scenario` (or no
/// runtime): the verdict line, the JSON document and the HTML report.
fn profile(scenario: Option<&str>) -> (String, serde_json::Value, String) {
    let sim = scenario.map(sim);
    let port = sim.as_ref().map_or_else(free_port, |s| s.1);
    let dir = crate::util::TempDir::new("tpu-profile");
    let (json, html) = (dir.0.join("p.json"), dir.0.join("p.html"));
    let fx = fixtures().join("tpu/v5e-8");
    let out = Command::new(bin())
        .args([
            "profile",
            "--duration=3s",
            "--interval=100ms",
            "--collector.disable-defaults",
            "--collector.tpu",
            "--events.socket=",
            &format!("--path.sysfs={}", fx.join("sys").display()),
            &format!("--path.procfs={}", fx.join("proc").display()),
            &format!("--collector.tpu.runtime-ports={port}"),
            &format!("--json={}", json.display()),
            &format!("--html={}", html.display()),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run accel-agent profile");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    (stdout, doc, std::fs::read_to_string(&html).unwrap())
}

#[test]
fn profile_names_the_tpu_bottleneck() {
    let (text, doc, html) = profile(Some("input-bound"));
    assert!(text.contains("verdict: input-bound"), "{text}");
    assert!(
        text.contains("accel_tpu_duty_cycle_ratio mean 33%"),
        "{text}"
    );
    assert_eq!(doc["verdict"], "input-bound");
    assert!(doc["signals"]["tpu0.duty_cycle"]["t"]
        .as_array()
        .is_some_and(|t| t.len() >= 20));
    assert!(html.contains("TPU duty cycle") && html.contains("TPU HBM used"));

    let (text, doc, _) = profile(Some("v5e-8-training"));
    assert!(text.contains("verdict: compute-bound"), "{text}");
    assert_eq!(doc["summary"]["tpus"][0]["allocated"], true, "{doc}");

    let (text, _, _) = profile(Some("idle-allocated"));
    assert!(text.contains("verdict: idle"), "{text}");
    assert!(text.contains("held but do no work"), "{text}");

    let (text, _, _) = profile(None);
    assert!(text.contains("TPU_RUNTIME_METRICS_PORTS"), "{text}");
}

#[test]
fn v3_chips_of_two_devices() {
    // A v3-8 host: four chips on /dev/accel0-3, eight TensorCore devices.
    let (_sim, port) = sim("v3-8-training");
    let fx = fixtures().join("tpu/v3-8");
    let agent = Agent::start(&[
        "--collector.disable-defaults",
        "--collector.tpu",
        &format!("--path.sysfs={}", fx.join("sys").display()),
        &format!("--path.procfs={}", fx.join("proc").display()),
        &format!("--collector.tpu.runtime-ports={port}"),
        "--collector.tpu.interval=200ms",
        "--collector.tpu.runtime-interval=200ms",
    ]);
    let text = agent.wait_for("runtime metrics", Duration::from_secs(15), |t| {
        t.contains("accel_tpu_duty_cycle_ratio{chip=\"3\"}")
    });
    assert_eq!(value(&text, "accel_tpu_chips"), Some(4.0));
    assert!(text.contains("accel_tpu_info{chip=\"2\",type=\"v3\",pci_bus_id=\"0000:00:06.0\"} 1"));
    assert_eq!(
        chip(&text, "accel_tpu_hbm_capacity_bytes", 0),
        Some(16.0 * 1024.0 * 1024.0 * 1024.0)
    );
    // Two series per chip, labelled with their chip.
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("accel_tpu_hbm_used_bytes{"))
            .count(),
        8
    );
    assert_eq!(
        value(&text, "accel_tpu_hbm_used_bytes{chip=\"1\",device=\"3\"}"),
        Some(7_247_757_312.0)
    );
    assert_eq!(
        value(&text, "accel_tpu_hbm_used_bytes{chip=\"1\",device=\"2\"}"),
        Some(7_516_192_768.0)
    );
    assert_eq!(chip(&text, "accel_tpu_duty_cycle_ratio", 3), Some(0.91));
    // The holder, found through /dev/accel<N>, in a container.
    assert!(text.contains(&format!(
        "accel_tpu_process_info{{chip=\"3\",pid=\"5000\",comm=\"python3\",unit=\"\",container=\"{}\",slurm_job=\"\"}} 1",
        "a".repeat(64)
    )), "{text}");
    lint(&text);
}
