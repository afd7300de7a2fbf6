//! Goodput end to end: real datagrams on the real binary's event socket,
//! on a simulated 8x H100 node (tests/nvml-sim) whose GPU processes are
//! the test's own senders, so runs find their GPUs by the sender's pid.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::golden::{check_golden, normalize, promtool_check};
use crate::gpu::sim_lib;
use crate::util::{require, root, value, Agent, TempDir};

/// The 8xh100-training scenario with its GPU processes' pid taken from
/// the agent's TRAINER_PID environment variable.
fn scenario(dir: &Path) -> PathBuf {
    let text =
        std::fs::read_to_string(root().join("tests/nvml-sim/scenarios/8xh100-training.toml"))
            .unwrap();
    assert!(text.contains("pid = \"4100+index\""), "scenario changed");
    let path = dir.join("8xh100-trainer.toml");
    std::fs::write(
        &path,
        text.replace("pid = \"4100+index\"", "pid = \"env:TRAINER_PID\""),
    )
    .unwrap();
    path
}

/// An agent with the gpu and goodput collectors on the simulated 8x H100
/// node whose GPUs `trainer` holds; its event socket is in `dir`. Its
/// procfs is a tree in `dir` where `trainer` runs in `trainer.service`.
fn agent(dir: &TempDir, trainer: u32, extra: &[&str]) -> (Agent, PathBuf) {
    let sock = dir.0.join("events.sock");
    let proc = dir.0.join("proc");
    std::fs::create_dir_all(proc.join(trainer.to_string())).unwrap();
    std::fs::write(
        proc.join(trainer.to_string()).join("cgroup"),
        "0::/system.slice/trainer.service\n",
    )
    .unwrap();
    let procfs = format!("--path.procfs={}", proc.display());
    let lib = format!("--nvml.library={}", sim_lib().display());
    let socket = format!("--events.socket={}", sock.display());
    let mut args = vec![
        "--collector.disable-defaults",
        "--collector.gpu",
        "--collector.goodput",
        "--collector.gpu.interval=200ms",
        "--collector.goodput.interval=100ms",
        lib.as_str(),
        socket.as_str(),
        procfs.as_str(),
    ];
    args.extend_from_slice(extra);
    let scenario = scenario(&dir.0);
    let pid = trainer.to_string();
    let a = Agent::start_env(
        &args,
        &[
            ("NVML_SIM_SCENARIO", scenario.to_str().unwrap()),
            ("TRAINER_PID", &pid),
        ],
    );
    a.wait_ready();
    (a, sock)
}

struct Sender {
    sock: UnixDatagram,
    to: PathBuf,
}

impl Sender {
    fn new(to: &Path) -> Sender {
        Sender {
            sock: UnixDatagram::unbound().unwrap(),
            to: to.to_owned(),
        }
    }

    fn send(&self, json: &str) {
        self.send_bytes(json.as_bytes());
    }

    fn send_bytes(&self, b: &[u8]) {
        let n = self.sock.send_to(b, &self.to).expect("send");
        assert_eq!(n, b.len());
    }
}

fn series(text: &str, prefix: &str) -> usize {
    text.lines().filter(|l| l.starts_with(prefix)).count()
}

const H100_BF16: f64 = 989e12;

/// A training run on an 8-GPU node until `stop`: a step every 100 ms at
/// 40 % MFU after 10 ms of input wait, a checkpoint every 10 steps, one
/// restart that resumes 5 steps back. For the dashboards' Prometheus test.
pub fn training_traffic(sock: &Path, stop: &std::sync::atomic::AtomicBool) {
    let s = Sender::new(sock);
    let send = |j: &str| {
        let _ = s.sock.send_to(j.as_bytes(), &s.to);
    };
    let start = r#"{"v":1,"kind":"run_start","run":"e2e-run","devices":[0,1,2,3,4,5,6,7],"labels":{"model":"tiny","git_sha":"abc"}}"#;
    send(start);
    send(r#"{"v":1,"kind":"phase","run":"e2e-run","phase":"init","seconds":1.5}"#);
    send(r#"{"v":1,"kind":"phase","run":"e2e-run","phase":"compile","seconds":2}"#);
    let flops = 0.4 * 0.1 * 8.0 * H100_BF16;
    let mut step = 0;
    let mut resumed = false;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        step += 1;
        send(r#"{"v":1,"kind":"phase","run":"e2e-run","phase":"data_wait","seconds":0.01}"#);
        send(&format!(
            r#"{{"v":1,"kind":"step","run":"e2e-run","step":{step},"seconds":0.1,"tokens":2048,"model_flops":{flops:e}}}"#
        ));
        if step % 10 == 0 {
            send(
                r#"{"v":1,"kind":"phase","run":"e2e-run","phase":"checkpoint_save","seconds":0.05}"#,
            );
            send(&format!(
                r#"{{"v":1,"kind":"checkpoint","run":"e2e-run","step":{step}}}"#
            ));
        }
        if step == 25 && !resumed {
            resumed = true;
            step = 20;
            send(&start.replace("\"labels\"", "\"resume_step\":20,\"labels\""));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn scripted_run_gives_exact_counters_and_mfu() {
    let dir = TempDir::new("goodput");
    let (agent, sock) = agent(&dir, std::process::id(), &[]);
    // GPU identities first: the sample that sees the GPUs (one model, so
    // one peak series per dtype, not one per GPU).
    agent.wait_for("GPU peak table", Duration::from_secs(10), |t| {
        series(t, "accel_gpu_peak_flops{") == 4
    });
    let s = Sender::new(&sock);
    s.send(r#"{"v":1,"kind":"run_start","run":"llama70b-0412","rank":0,"world_size":64,"devices":[0,1,2,3,4,5,6,7],"labels":{"model":"llama-70b","git_sha":"3f2a9c1","config_hash":"c0ffee","batch_size":"1024"}}"#);
    s.send(
        r#"{"v":1,"kind":"phase","run":"llama70b-0412","rank":0,"phase":"init","seconds":12.5}"#,
    );
    s.send(
        r#"{"v":1,"kind":"phase","run":"llama70b-0412","rank":0,"phase":"compile","seconds":40}"#,
    );
    // Ten steps of 2 s at exactly half of 8 x 989e12 FLOP/s, each after a
    // quarter second waiting for input.
    let flops = 0.5 * 2.0 * 8.0 * H100_BF16;
    for step in 1..=10 {
        s.send(r#"{"v":1,"kind":"phase","run":"llama70b-0412","rank":0,"phase":"data_wait","seconds":0.25}"#);
        s.send(&format!(r#"{{"v":1,"kind":"step","run":"llama70b-0412","rank":0,"step":{step},"seconds":2,"tokens":4194304,"model_flops":{flops:e},"dtype":"bf16"}}"#));
    }
    s.send(r#"{"v":1,"kind":"phase","run":"llama70b-0412","rank":0,"phase":"checkpoint_save","seconds":31.5}"#);
    s.send(r#"{"v":1,"kind":"checkpoint","run":"llama70b-0412","rank":0,"step":10}"#);
    s.send(r#"{"v":1,"kind":"phase","run":"llama70b-0412","rank":0,"phase":"eval","seconds":12}"#);
    s.send(r#"{"v":1,"kind":"phase","run":"llama70b-0412","rank":0,"phase":"custom:profiler","seconds":3}"#);

    // A second run names no devices: it gets the GPUs its sender holds
    // (all eight, in this scenario). Its numbers are the schema's example.
    s.send(r#"{"v":1,"kind":"run_start","run":"b","rank":0}"#);
    let secs = [1.92, 1.95, 1.9, 2.1, 1.93];
    for (i, sec) in secs.iter().enumerate() {
        s.send(&format!(r#"{{"v":1,"kind":"step","run":"b","rank":0,"step":{},"seconds":{sec},"tokens":4194304,"model_flops":1.2e16,"dtype":"bf16"}}"#, 12001 + i));
    }

    let text = agent.wait_for("both runs counted", Duration::from_secs(10), |t| {
        value(t, "accel_run_steps_total{run=\"llama70b-0412\",rank=\"0\"}") == Some(10.0)
            && value(t, "accel_run_steps_total{run=\"b\",rank=\"0\"}") == Some(5.0)
            && value(t, "accel_run_phase_seconds_total{run=\"llama70b-0412\",rank=\"0\",phase=\"custom:profiler\"}").is_some()
            && value(t, "accel_run_mfu_ratio{run=\"b\"}").is_some()
    });
    let a = "{run=\"llama70b-0412\",rank=\"0\"}";
    let v = |name: &str| value(&text, &format!("{name}{a}"));
    assert_eq!(v("accel_run_steps_total"), Some(10.0));
    assert_eq!(v("accel_run_tokens_total"), Some(41943040.0));
    assert_eq!(v("accel_run_model_flops_total"), Some(10.0 * flops));
    assert_eq!(v("accel_run_productive_seconds_total"), Some(20.0 - 2.5));
    assert_eq!(v("accel_run_step_seconds_sum"), Some(20.0));
    assert_eq!(v("accel_run_step_seconds_count"), Some(10.0));
    assert_eq!(v("accel_run_step"), Some(10.0));
    assert_eq!(v("accel_run_last_checkpoint_step"), Some(10.0));
    assert_eq!(v("accel_run_checkpoints_total"), Some(1.0));
    assert_eq!(v("accel_run_active"), Some(1.0));
    assert_eq!(v("accel_run_wasted_steps_total"), Some(0.0));
    let bucket = |le: &str| {
        value(
            &text,
            &format!(
                "accel_run_step_seconds_bucket{{run=\"llama70b-0412\",rank=\"0\",le=\"{le}\"}}"
            ),
        )
    };
    assert_eq!(
        (bucket("1"), bucket("2"), bucket("+Inf")),
        (Some(0.0), Some(10.0), Some(10.0))
    );
    for (phase, secs) in [
        ("init", 12.5),
        ("compile", 40.0),
        ("data_wait", 2.5),
        ("checkpoint_save", 31.5),
        ("checkpoint_load", 0.0),
        ("eval", 12.0),
        ("custom:profiler", 3.0),
    ] {
        assert_eq!(
            value(&text, &format!("accel_run_phase_seconds_total{{run=\"llama70b-0412\",rank=\"0\",phase=\"{phase}\"}}")),
            Some(secs),
            "{phase}"
        );
    }
    let info = text
        .lines()
        .find(|l| l.starts_with("accel_run_info{run=\"llama70b-0412\""))
        .expect("run info");
    assert_eq!(
        info,
        "accel_run_info{run=\"llama70b-0412\",unit=\"trainer.service\",batch_size=\"1024\",config_hash=\"c0ffee\",git_sha=\"3f2a9c1\",model=\"llama-70b\"} 1"
    );
    assert!(text.contains("accel_run_info{run=\"b\",unit=\"trainer.service\"} 1"));
    assert_eq!(series(&text, "accel_run_device{run=\"llama70b-0412\""), 8);
    assert_eq!(series(&text, "accel_run_device{run=\"b\""), 8);
    let peak_of = |dtype: &str| {
        value(
            &text,
            &format!("accel_gpu_peak_flops{{name=\"NVIDIA H100 80GB HBM3\",dtype=\"{dtype}\"}}"),
        )
    };
    assert_eq!(peak_of("bf16"), Some(H100_BF16));
    assert_eq!(peak_of("fp8"), Some(2.0 * H100_BF16));
    // MFU, exactly, against the simulated 8 x H100's peak.
    let peak = 8.0 * H100_BF16;
    assert_eq!(
        value(
            &text,
            "accel_run_peak_flops{run=\"llama70b-0412\",dtype=\"bf16\"}"
        ),
        Some(peak)
    );
    assert_eq!(
        value(&text, "accel_run_mfu_ratio{run=\"llama70b-0412\"}"),
        Some(0.5)
    );
    // Run b: sum of model FLOPs over the sum of step seconds times the peak,
    // in the order the agent adds them.
    let mut num = 0.0;
    let mut den = 0.0;
    for sec in secs {
        num += 1.2e16;
        den += sec * peak;
    }
    assert_eq!(
        value(&text, "accel_run_mfu_ratio{run=\"b\"}"),
        Some(num / den)
    );
    // Nothing refused: no reason's series (they come at a first refusal).
    assert!(!text.contains("accel_events_rejected_total{"), "{text}");
    assert_eq!(
        value(&text, "accel_events_accepted_total{kind=\"step\"}"),
        Some(15.0)
    );
    assert_eq!(
        value(&text, "accel_events_accepted_total{kind=\"phase\"}"),
        Some(15.0)
    );
    assert_eq!(value(&text, "accel_events_received_total"), Some(33.0));

    // Elapsed runs on the agent's clock until run_end, then stops.
    let e0 = v("accel_run_elapsed_seconds_total").unwrap();
    assert!(e0 > 0.0 && e0 < 30.0, "{e0}");
    s.send(r#"{"v":1,"kind":"run_end","run":"llama70b-0412","rank":0}"#);
    let ended = agent.wait_for("run_end", Duration::from_secs(5), |t| {
        value(t, &format!("accel_run_active{a}")) == Some(0.0)
    });
    let e1 = value(&ended, &format!("accel_run_elapsed_seconds_total{a}")).unwrap();
    assert!(e1 >= e0);
    std::thread::sleep(Duration::from_millis(400));
    let later = agent.get("/metrics").text();
    assert_eq!(
        value(&later, &format!("accel_run_elapsed_seconds_total{a}")),
        Some(e1)
    );
    let (ok, msg) = promtool_check(&later);
    assert!(
        ok && msg.trim().is_empty(),
        "promtool check metrics:\n{msg}"
    );

    // The golden the dashboards' and rules' name check reads.
    let golden = normalize(
        &later,
        &[
            "accel_run_elapsed_seconds_total",
            "accel_run_last_step_timestamp_seconds",
        ],
    );
    let golden: String = golden
        .lines()
        .filter(|l| {
            let f = l.split(['{', ' ']).next().unwrap_or_default();
            let f = if l.starts_with('#') {
                l.split(' ').nth(2).unwrap_or_default()
            } else {
                f
            };
            f.starts_with("accel_run_")
                || f.starts_with("accel_events_")
                || f == "accel_gpu_peak_flops"
        })
        .map(|l| format!("{l}\n"))
        .collect();
    check_golden("goodput-run", &golden);
}

#[test]
fn a_resumed_run_counts_wasted_progress() {
    let dir = TempDir::new("goodput-resume");
    let (agent, sock) = agent(&dir, std::process::id(), &[]);
    let s = Sender::new(&sock);
    s.send(r#"{"v":1,"kind":"run_start","run":"r","rank":1,"devices":["3"]}"#);
    for step in 1..=20 {
        s.send(&format!(
            r#"{{"v":1,"kind":"step","run":"r","rank":1,"step":{step},"seconds":1.5}}"#
        ));
    }
    s.send(r#"{"v":1,"kind":"checkpoint","run":"r","rank":1,"step":12}"#);
    // The job dies after step 20 and a new process resumes from the
    // checkpoint at step 12: steps 13-20 (8 x 1.5 s) are lost.
    let py = require("python3");
    let out = Command::new(&py)
        .args([
            "-c",
            "import socket,sys; s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.sendto(sys.argv[2].encode(), sys.argv[1])",
            sock.to_str().unwrap(),
            r#"{"v":1,"kind":"run_start","run":"r","rank":1,"devices":["3"],"resume_step":12}"#,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    for step in 13..=15 {
        s.send(&format!(
            r#"{{"v":1,"kind":"step","run":"r","rank":1,"step":{step},"seconds":1.5}}"#
        ));
    }
    // A step number going backwards is refused.
    s.send(r#"{"v":1,"kind":"step","run":"r","rank":1,"step":14,"seconds":1.5}"#);
    let a = "{run=\"r\",rank=\"1\"}";
    let text = agent.wait_for("the resumed steps", Duration::from_secs(10), |t| {
        value(t, &format!("accel_run_steps_total{a}")) == Some(23.0)
            && value(t, "accel_events_rejected_total{reason=\"step_backwards\"}") == Some(1.0)
    });
    assert_eq!(
        value(&text, &format!("accel_run_wasted_steps_total{a}")),
        Some(8.0)
    );
    assert_eq!(
        value(&text, &format!("accel_run_wasted_seconds_total{a}")),
        Some(12.0)
    );
    assert_eq!(
        value(&text, &format!("accel_run_restarts_total{a}")),
        Some(1.0)
    );
    assert_eq!(value(&text, &format!("accel_run_step{a}")), Some(15.0));
    // Named by index "3": one H100.
    assert_eq!(series(&text, "accel_run_device{run=\"r\",gpu=\"3\""), 1);
    assert_eq!(
        value(&text, "accel_run_peak_flops{run=\"r\",dtype=\"bf16\"}"),
        Some(H100_BF16)
    );
}

#[test]
fn bad_input_is_counted_and_harmless() {
    let dir = TempDir::new("goodput-bad");
    let (agent, sock) = agent(
        &dir,
        std::process::id(),
        &["--events.max-runs=2", "--events.run-timeout=3s"],
    );
    let s = Sender::new(&sock);
    let cases: &[(&str, &[u8])] = &[
        ("malformed", b"this is not json"),
        ("malformed", b"{\"v\":1,\"kind\":\"step\""),
        ("malformed", b"[1,2,3]"),
        ("malformed", b"\xff\xfe\x00garbage"),
        ("malformed", br#"{"v":1,"kind":"step","run":"x"}"#),
        ("version", br#"{"kind":"step","run":"x","seconds":1}"#),
        ("version", br#"{"v":2,"kind":"step","run":"x","seconds":1}"#),
        ("kind", br#"{"v":1,"kind":"reboot","run":"x"}"#),
        (
            "invalid_value",
            br#"{"v":1,"kind":"step","run":"x","seconds":-1}"#,
        ),
        (
            "invalid_value",
            br#"{"v":1,"kind":"step","run":"x","seconds":NaN}"#,
        ),
        (
            "invalid_value",
            br#"{"v":1,"kind":"step","run":"x","seconds":1,"tokens":-4}"#,
        ),
        (
            "invalid_value",
            br#"{"v":1,"kind":"step","run":"x","seconds":1,"model_flops":Infinity}"#,
        ),
        (
            "invalid_value",
            br#"{"v":1,"kind":"phase","run":"x","phase":"nap","seconds":1}"#,
        ),
    ];
    for (_, c) in cases {
        s.send_bytes(c);
    }
    // Over 64 KiB: refused; exactly 64 KiB: taken.
    let mut big = br#"{"v":1,"kind":"run_start","run":"big"}"#.to_vec();
    let mut exact = big.clone();
    big.resize(70_000, b' ');
    exact.resize(64 * 1024, b' ');
    s.send_bytes(&big);
    s.send_bytes(&exact);
    // Steps going backwards.
    s.send(r#"{"v":1,"kind":"step","run":"big","step":5,"seconds":1}"#);
    s.send(r#"{"v":1,"kind":"step","run":"big","step":5,"seconds":1}"#);
    s.send(r#"{"v":1,"kind":"step","run":"big","step":4,"seconds":1}"#);
    // Two runs at most: a third one is refused while both are active.
    s.send(r#"{"v":1,"kind":"run_start","run":"second"}"#);
    s.send(r#"{"v":1,"kind":"run_start","run":"third"}"#);
    let text = agent.wait_for("every rejection", Duration::from_secs(10), |t| {
        value(t, "accel_events_received_total") == Some(cases.len() as f64 + 7.0)
    });
    let want = |reason: &str| {
        cases.iter().filter(|(r, _)| *r == reason).count() as f64
            + match reason {
                "oversize" => 1.0,
                "step_backwards" => 2.0,
                "too_many_runs" => 1.0,
                _ => 0.0,
            }
    };
    for reason in [
        "malformed",
        "version",
        "kind",
        "oversize",
        "invalid_value",
        "step_backwards",
        "rate_limited",
        "too_many_runs",
    ] {
        assert_eq!(
            value(
                &text,
                &format!("accel_events_rejected_total{{reason=\"{reason}\"}}")
            ),
            Some(want(reason)).filter(|n| *n > 0.0),
            "{reason}\n{text}"
        );
    }
    assert_eq!(value(&text, "accel_events_runs"), Some(2.0));
    assert_eq!(
        value(&text, "accel_run_steps_total{run=\"big\",rank=\"0\"}"),
        Some(1.0)
    );
    // Idle runs expire after --events.run-timeout.
    let text = agent.wait_for("runs expired", Duration::from_secs(10), |t| {
        value(t, "accel_events_runs") == Some(0.0)
    });
    assert_eq!(value(&text, "accel_events_runs_expired_total"), Some(2.0));
    assert!(!text.contains("accel_run_info{"));
    // The agent still serves and still takes events.
    s.send(r#"{"v":1,"kind":"run_start","run":"after"}"#);
    agent.wait_for("a run after the garbage", Duration::from_secs(5), |t| {
        t.contains("accel_run_info{run=\"after\"")
    });
}

/// utime + stime of `pid`, in seconds, and its resident set in bytes.
fn cpu_and_rss(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu = (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / hz;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix(" kB"))
        .map(|k| k.trim().parse::<f64>().unwrap() * 1024.0)
        .unwrap();
    (cpu, rss)
}

#[test]
fn a_flood_is_rate_limited_with_bounded_cpu_and_memory() {
    let dir = TempDir::new("goodput-flood");
    let (agent, sock) = agent(&dir, std::process::id(), &["--events.rate-limit=1000"]);
    let s = Sender::new(&sock);
    s.send(r#"{"v":1,"kind":"run_start","run":"flood"}"#);
    agent.wait_for("the run", Duration::from_secs(5), |t| {
        t.contains("accel_run_info{run=\"flood\"")
    });
    let pid = agent.child.id();
    let (cpu0, rss0) = cpu_and_rss(pid);
    let n = 100_000u64;
    let t0 = Instant::now();
    for i in 0..n {
        s.send(&format!(
            r#"{{"v":1,"kind":"step","run":"flood","step":{},"seconds":0.01}}"#,
            i + 1
        ));
    }
    let wall = t0.elapsed().as_secs_f64();
    let text = agent.wait_for("every datagram", Duration::from_secs(20), |t| {
        value(t, "accel_events_received_total") == Some(n as f64 + 1.0)
    });
    let (cpu1, rss1) = cpu_and_rss(pid);
    let limited = value(
        &text,
        "accel_events_rejected_total{reason=\"rate_limited\"}",
    )
    .unwrap();
    let steps = value(&text, "accel_run_steps_total{run=\"flood\",rank=\"0\"}").unwrap();
    assert_eq!(
        limited + steps,
        n as f64,
        "every step either counted or limited"
    );
    // A burst of 2000 (minus the run_start), then 1000 a second.
    let most = 2000.0 + 1000.0 * (wall + 1.0);
    assert!(
        steps >= 1000.0 && steps <= most,
        "{steps} steps in {wall:.2}s"
    );
    let cpu = cpu1 - cpu0;
    let rss_growth = rss1 - rss0;
    eprintln!(
        "flood: {n} datagrams in {wall:.2}s ({:.0}/s); agent CPU {cpu:.2}s ({:.1} us per datagram), RSS {:.1} -> {:.1} MiB; {steps} accepted, {limited} rate-limited",
        n as f64 / wall,
        cpu / n as f64 * 1e6,
        rss0 / 1048576.0,
        rss1 / 1048576.0
    );
    assert!(cpu < 2.0, "agent CPU {cpu}s for {n} datagrams");
    assert!(rss_growth < 16.0 * 1048576.0, "RSS grew {rss_growth} bytes");
    // Another process has a bucket of its own: still heard.
    let py = require("python3");
    let out = Command::new(&py)
        .args([
            "-c",
            "import socket,sys; s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.sendto(sys.argv[2].encode(), sys.argv[1])",
            sock.to_str().unwrap(),
            r#"{"v":1,"kind":"run_start","run":"polite"}"#,
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    agent.wait_for("the other sender", Duration::from_secs(5), |t| {
        t.contains("accel_run_info{run=\"polite\"")
    });
}

#[test]
fn the_python_client_against_the_agent() {
    let py = require("python3");
    let dir = TempDir::new("goodput-python");
    let client = root().join("clients/python");
    let script = r#"
import os, sys, time
sys.path.insert(0, sys.argv[1])
import goodput

# The agent absent: nothing raised, nothing blocks.
t = time.monotonic()
with goodput.run("absent", socket_path=sys.argv[2] + ".missing") as r:
    for _ in range(1000):
        r.step(seconds=0.1, tokens=1, model_flops=1.0)
assert time.monotonic() - t < 2.0

print(os.getpid(), flush=True)
sys.stdin.readline()  # the agent is up, with our pid holding its GPUs

peak = 8 * 989e12
with goodput.run("py-run", socket_path=sys.argv[2], labels={"model": "tiny", "git_sha": "abc123"}) as r:
    with r.phase("init"):
        time.sleep(0.05)
    for i in range(12):
        with r.phase("data_wait"):
            time.sleep(0.01)
        r.step(seconds=2.0, tokens=2048, model_flops=0.25 * 2.0 * peak)
    with r.phase("checkpoint_save"):
        time.sleep(0.05)
    r.checkpoint()
    with r.step_timer(tokens=10, model_flops=0.0):
        time.sleep(0.02)
print("done", flush=True)
sys.stdin.readline()
"#;
    let sock = dir.0.join("events.sock");
    let mut child = crate::util::Proc(
        Command::new(&py)
            .args([
                "-c",
                script,
                client.to_str().unwrap(),
                sock.to_str().unwrap(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let mut out = BufReader::new(child.0.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let pid: u32 = line.trim().parse().expect("python printed its pid");
    let (agent, sock2) = agent(&dir, pid, &[]);
    assert_eq!(sock, sock2);
    // The agent must see the GPUs held by the python process first.
    agent.wait_for("the GPUs", Duration::from_secs(10), |t| {
        series(t, "accel_gpu_peak_flops{") == 4
    });
    let mut stdin = child.0.stdin.take().unwrap();
    stdin.write_all(b"go\n").unwrap();
    stdin.flush().unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "done");
    let a = "{run=\"py-run\",rank=\"0\"}";
    let text = agent.wait_for("the python run", Duration::from_secs(10), |t| {
        value(t, &format!("accel_run_active{a}")) == Some(0.0)
    });
    assert_eq!(
        value(&text, &format!("accel_run_steps_total{a}")),
        Some(13.0)
    );
    assert_eq!(
        value(&text, &format!("accel_run_tokens_total{a}")),
        Some(12.0 * 2048.0 + 10.0)
    );
    assert_eq!(value(&text, &format!("accel_run_step{a}")), Some(13.0));
    assert_eq!(
        value(&text, &format!("accel_run_last_checkpoint_step{a}")),
        Some(12.0)
    );
    let phase = |p: &str| {
        value(
            &text,
            &format!("accel_run_phase_seconds_total{{run=\"py-run\",rank=\"0\",phase=\"{p}\"}}"),
        )
        .unwrap()
    };
    assert!(
        phase("init") >= 0.05 && phase("init") < 1.0,
        "{}",
        phase("init")
    );
    assert!(phase("data_wait") >= 0.12, "{}", phase("data_wait"));
    assert!(phase("checkpoint_save") >= 0.05);
    // Devices from the sender's pid; MFU of the 12 explicit steps a
    // quarter of the peak, the timed step adds seconds without FLOPs.
    assert_eq!(series(&text, "accel_run_device{run=\"py-run\""), 8);
    let mfu = value(&text, "accel_run_mfu_ratio{run=\"py-run\"}").unwrap();
    let timed = value(&text, &format!("accel_run_step_seconds_sum{a}")).unwrap() - 24.0;
    assert!((0.02..1.0).contains(&timed), "{timed}");
    let want = 12.0 * 0.25 * 2.0 * 8.0 * H100_BF16 / ((24.0 + timed) * 8.0 * H100_BF16);
    assert!((mfu - want).abs() < 1e-12, "{mfu} vs {want}");
    assert!(text.contains("model=\"tiny\""), "{text}");
    assert!(!text.contains("run=\"absent\""));
    stdin.write_all(b"\n").unwrap();
    let _ = child.0.wait();
    // The example callbacks import frameworks not installed here: at
    // least they compile.
    let out = Command::new(&py)
        .args([
            "-c",
            "import sys; [compile(open(f).read(), f, 'exec') for f in sys.argv[1:]]",
        ])
        .arg(client.join("examples/hf_trainer_callback.py"))
        .arg(client.join("examples/lightning_callback.py"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn an_unusable_socket_leaves_the_agent_running() {
    // A path that cannot be created: one log line, collector absent, the
    // agent serves the rest.
    let a = Agent::start(&["--events.socket=/proc/no-such-dir/events.sock"]);
    let text = a.get_ready("/metrics").text();
    assert_eq!(
        value(&text, "accel_collector_enabled{collector=\"goodput\"}"),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "accel_collector_enabled{collector=\"cpu\"}"),
        Some(1.0)
    );
    let lines = a.log_lines();
    let why: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("cannot create the event socket /proc/no-such-dir/events.sock"))
        .collect();
    assert_eq!(why.len(), 1, "{lines:#?}");
    // A socket another agent listens on is left alone: the second agent
    // runs without it, the first keeps its events.
    let dir = TempDir::new("goodput-twice");
    let sock = dir.0.join("events.sock");
    let flag = format!("--events.socket={}", sock.display());
    let first = Agent::start(&[&flag, "--collector.goodput.interval=100ms"]);
    first.wait_ready();
    let second = Agent::start(&[&flag]);
    let text = second.get_ready("/metrics").text();
    assert_eq!(
        value(&text, "accel_collector_enabled{collector=\"goodput\"}"),
        Some(0.0)
    );
    assert!(second
        .log_lines()
        .iter()
        .any(|l| l.contains("another process (another agent?) is listening on it")));
    drop(second);
    Sender::new(&sock).send(r#"{"v":1,"kind":"run_start","run":"still-here"}"#);
    first.wait_for("the first agent's run", Duration::from_secs(5), |t| {
        t.contains("accel_run_info{run=\"still-here\"")
    });
}

#[test]
fn the_python_client_survives_an_agent_restart() {
    let py = require("python3");
    let dir = TempDir::new("goodput-restart");
    let sock = dir.0.join("events.sock");
    let flag = format!("--events.socket={}", sock.display());
    let args = [
        "--collector.disable-defaults",
        "--collector.goodput",
        "--collector.goodput.interval=100ms",
        flag.as_str(),
    ];
    let script = r#"
import sys, time
sys.path.insert(0, sys.argv[1])
import goodput
r = goodput.Run("survivor", socket_path=sys.argv[2], labels={"model": "m"}, announce_every=0.2).start()
r.step(seconds=1.0)
print("one", flush=True)
sys.stdin.readline()  # the agent is gone
r.step(seconds=1.0)
print("dropped", r.dropped, flush=True)
sys.stdin.readline()  # a new agent listens
time.sleep(0.3)
for _ in range(3):
    r.step(seconds=1.0)
print("done", flush=True)
sys.stdin.readline()
"#;
    let client = root().join("clients/python");
    let first = Agent::start(&args);
    first.wait_ready();
    let mut child = crate::util::Proc(
        Command::new(&py)
            .args([
                "-c",
                script,
                client.to_str().unwrap(),
                sock.to_str().unwrap(),
            ])
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let mut out = BufReader::new(child.0.stdout.take().unwrap());
    let mut stdin = child.0.stdin.take().unwrap();
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "one");
    first.wait_for("the first step", Duration::from_secs(5), |t| {
        value(t, "accel_run_steps_total{run=\"survivor\",rank=\"0\"}") == Some(1.0)
    });
    drop(first);
    // The agent is down: the step is dropped, nothing raised or blocked.
    stdin.write_all(b"\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "dropped 1");
    // A new agent replaces the stale socket; the client announces the run
    // again, labels included, and its steps count.
    let second = Agent::start(&args);
    second.wait_ready();
    stdin.write_all(b"\n").unwrap();
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "done");
    let text = second.wait_for("the steps after the restart", Duration::from_secs(5), |t| {
        value(t, "accel_run_steps_total{run=\"survivor\",rank=\"0\"}") == Some(3.0)
    });
    assert!(
        text.contains("accel_run_info{run=\"survivor\",model=\"m\"} 1"),
        "{text}"
    );
    assert_eq!(
        value(&text, "accel_run_step{run=\"survivor\",rank=\"0\"}"),
        Some(5.0)
    );
    stdin.write_all(b"\n").unwrap();
    let _ = child.0.wait();
}
