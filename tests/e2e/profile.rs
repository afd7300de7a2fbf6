//! `accel-agent profile` end to end: the real binary samples a simulated
//! node (nvml-sim scenarios; host paths at tests/fixtures, so host signals
//! are static) and must name the known bottleneck.

use std::process::{Command, Output, Stdio};

use crate::gpu::sim_lib;
use crate::util::{bin, fixtures, root, TempDir};

/// Runs `accel-agent profile` with `extra` flags on `scenario`; stderr is
/// a pipe (not a terminal).
pub(crate) fn profile(scenario: &str, extra: &[&str]) -> Output {
    let fx = fixtures();
    Command::new(bin())
        .arg("profile")
        .arg(format!("--nvml.library={}", sim_lib().display()))
        .arg(format!("--path.procfs={}", fx.join("proc").display()))
        .arg(format!("--path.sysfs={}", fx.join("sys").display()))
        .arg(format!(
            "--path.udev.data={}",
            fx.join("run/udev/data").display()
        ))
        .arg("--no-collector.cloud")
        // No event socket unless a test asks (never /run/accel-agent).
        .arg("--events.socket=")
        .args(extra)
        .env("NVML_SIM_SCENARIO", scenario)
        .stdin(Stdio::null())
        .output()
        .expect("run accel-agent profile")
}

/// Profiles `scenario` for 3 s and returns the JSON document.
fn verdict_of(scenario: &str) -> serde_json::Value {
    let dir = TempDir::new("profile");
    let json = dir.0.join("profile.json");
    let out = profile(
        scenario,
        &[
            "--duration=3s",
            "--interval=100ms",
            &format!("--json={}", json.display()),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{scenario}: {stdout}\n{stderr}");
    // No progress line when stderr is not a terminal.
    assert!(
        !stderr.contains("profiling") && !stderr.contains('\r'),
        "{stderr}"
    );
    assert!(stdout.contains("verdict: "), "{stdout}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(doc["signals"]["gpu0.utilization"]["t"]
        .as_array()
        .is_some_and(|t| t.len() >= 20));
    assert!(stdout.contains(&format!("verdict: {}", doc["verdict"].as_str().unwrap())));
    doc
}

pub(crate) fn evidence(doc: &serde_json::Value) -> String {
    doc["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn idle_allocated_is_idle() {
    let doc = verdict_of("idle-allocated");
    assert_eq!(doc["verdict"], "idle", "{doc}");
    let ev = evidence(&doc);
    assert!(
        ev.contains("accel_gpu_utilization_ratio") && ev.contains("6 of them allocated"),
        "{ev}"
    );
}

#[test]
fn training_is_compute_bound() {
    let doc = verdict_of("8xh100-training");
    assert_eq!(doc["verdict"], "compute-bound", "{doc}");
    assert!(evidence(&doc).contains("accel_gpu_sm_active_ratio"));
}

#[test]
fn input_bound_names_the_saw_tooth() {
    let doc = verdict_of("input-bound");
    assert_eq!(doc["verdict"], "input-bound", "{doc}");
    let ev = evidence(&doc);
    assert!(
        ev.contains("saw-tooth") && ev.contains("accel_gpu_utilization_ratio"),
        "{ev}"
    );
}

#[test]
fn saturated_nvlink_is_communication_bound() {
    let doc = verdict_of("comm-bound");
    assert_eq!(doc["verdict"], "communication-bound", "{doc}");
    let ev = evidence(&doc);
    assert!(
        ev.contains("NVLink of GPU")
            && ev.contains("accel_gpu_nvlink")
            && ev.contains("accel_gpu_sm_active_ratio"),
        "{ev}"
    );
    assert!(doc["advice"].to_string().contains("degraded link"), "{doc}");
}

#[test]
fn busy_hbm_is_memory_bandwidth_bound() {
    let doc = verdict_of("memory-bound");
    assert_eq!(doc["verdict"], "memory-bandwidth-bound", "{doc}");
    let ev = evidence(&doc);
    assert!(
        ev.contains("accel_gpu_dram_active_ratio") && ev.contains("85%"),
        "{ev}"
    );
}

/// Real disk load: two `dd` readers with O_DIRECT (no page cache) read a
/// 256 MiB file on real storage over and over while the simulated GPUs sit
/// at a steady 30 % (no saw-tooth, so only the host can explain it). The
/// profile reads the real /proc (diskstats, stat, pressure); the verdict
/// must be input-bound on the evidence of the real disk counters.
#[test]
fn real_disk_reads_make_it_input_bound() {
    let dir = TempDir::new("profile-disk");
    let scenario = dir.0.join("underused.toml");
    std::fs::write(
        &scenario,
        "[[gpus]]\ncount = 2\nmodel = \"h100\"\nutilization = 30\nsm_active = 25\ntensor_active = 10\ndram_active = 10\n\
         [[gpus.processes]]\npid = \"4100+index\"\nname = \"python3\"\nused_memory_mib = 1000\n",
    )
    .unwrap();
    // On real storage (the target dir), not a tmpfs /tmp: O_DIRECT needs it.
    let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("profile-disk-{}.bin", std::process::id()));
    let made = Command::new("dd")
        .arg("if=/dev/urandom")
        .arg(format!("of={}", file.display()))
        .args(["bs=1M", "count=256", "status=none"])
        .status()
        .unwrap();
    assert!(made.success());
    let reader = format!(
        "while :; do dd if={} of=/dev/null bs=4M iflag=direct status=none || exit 1; done",
        file.display()
    );
    let mut readers: Vec<std::process::Child> = (0..2)
        .map(|_| Command::new("sh").args(["-c", &reader]).spawn().unwrap())
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(500));
    for r in &mut readers {
        assert!(
            r.try_wait().unwrap().is_none(),
            "dd iflag=direct failed on {}: O_DIRECT needs real storage",
            file.display()
        );
    }
    let fx = fixtures();
    let json = dir.0.join("profile.json");
    // Real /proc; the fixture sysfs only to show an NVIDIA GPU on PCI.
    let out = Command::new(bin())
        .arg("profile")
        .arg(format!("--nvml.library={}", sim_lib().display()))
        .arg(format!("--path.sysfs={}", fx.join("sys").display()))
        .args([
            "--no-collector.cloud",
            "--events.socket=",
            "--duration=4s",
            "--interval=200ms",
        ])
        .arg(format!("--json={}", json.display()))
        .env("NVML_SIM_SCENARIO", &scenario)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    for mut r in readers {
        let _ = r.kill();
        let _ = r.wait();
    }
    let _ = Command::new("pkill")
        .args(["-f", &file.display().to_string()])
        .status();
    let _ = std::fs::remove_file(&file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(doc["verdict"], "input-bound", "{stdout}");
    let ev = evidence(&doc);
    assert!(
        ev.contains("accel_disk_io_time_seconds_total") && ev.contains("busy"),
        "the real disk is the evidence: {ev}\n{stdout}"
    );
    assert!(!ev.contains("saw-tooth"), "{ev}");
    // The disk's own throughput is in the summary: hundreds of MB/s read.
    let read = doc["summary"]["disks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["read_bytes_per_second"]["mean"].as_f64())
        .fold(0.0, f64::max);
    assert!(read > 20e6, "disk read {read} B/s\n{stdout}");
}

#[test]
fn thermal_throttle_is_throttled() {
    let dir = TempDir::new("profile-throttle");
    let base =
        std::fs::read_to_string(root().join("tests/nvml-sim/scenarios/8xh100-training.toml"))
            .unwrap();
    assert!(base.contains("sm_active = 88"));
    let scenario = base.replace("sm_active = 88", "sm_clock_mhz = 1600\nsm_active = 88")
        + "\n[[faults]]\nthrottle = [{ from = 0, until = 1000, reasons = [\"hw_thermal_slowdown\"] }]\n";
    let file = dir.0.join("throttled.toml");
    std::fs::write(&file, scenario).unwrap();
    let doc = verdict_of(file.to_str().unwrap());
    assert_eq!(doc["verdict"], "throttled", "{doc}");
    let ev = evidence(&doc);
    assert!(
        ev.contains("hw_thermal_slowdown") && ev.contains("accel_gpu_clock_hertz"),
        "{ev}"
    );
}

#[test]
fn bad_duration_is_one_line_and_exit_2() {
    let out = profile("idle-allocated", &["--duration=soon"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--duration"), "{stderr}");
    assert!(out.stdout.is_empty());
}

/// The full user path: `--pid` follows a real CPU-burning process, `--html`
/// writes a self-contained report, and headless Chromium (Debian's
/// `chromium`) renders it: every chart is drawn, with lines.
#[test]
fn html_report_renders_in_chromium_and_pid_is_followed() {
    let chromium = crate::util::require("chromium");
    let dir = TempDir::new("profile-html");
    let html = dir.0.join("report.html");
    let mut burner = crate::util::cpu_burner(30);
    let fx = fixtures();
    // The burner's CPU seconds from /proc, read by the test itself.
    let cpu_of = |pid: u32| -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let f: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / hz
    };
    let (c0, t0) = (cpu_of(burner.id()), std::time::Instant::now());
    let out = Command::new(bin())
        .arg("profile")
        .arg(format!("--nvml.library={}", sim_lib().display()))
        .arg(format!("--path.sysfs={}", fx.join("sys").display()))
        .args([
            "--no-collector.cloud",
            "--events.socket=",
            "--duration=3s",
            "--interval=100ms",
        ])
        .arg(format!("--pid={}", burner.id()))
        .arg(format!("--html={}", html.display()))
        .env("NVML_SIM_SCENARIO", "input-bound")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let measured = (cpu_of(burner.id()) - c0) / t0.elapsed().as_secs_f64();
    let _ = burner.kill();
    let _ = burner.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The followed process: what the test measured itself (a busy machine
    // gives the burner less than a whole CPU).
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("process {} (python3, pid)", burner.id())))
        .unwrap_or_else(|| panic!("no process line:\n{stdout}"));
    let cpus: f64 = line
        .split("CPUs ")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(
        (cpus - measured).abs() <= 0.25,
        "{line}; measured {measured:.2} CPUs"
    );

    let page = std::fs::read_to_string(&html).unwrap();
    // Self-contained: nothing fetched from anywhere.
    for bad in ["src=", "href=", "@import", "url("] {
        assert!(!page.contains(bad), "{bad} in the report");
    }
    assert!(page.contains("id=\"verdict\">input-bound<"), "{page}");
    let charts = page.matches("<svg class=\"chart\"").count();
    assert!(charts >= 10, "{charts} charts");
    assert!(
        page.contains("Followed processes"),
        "the --pid process has a chart"
    );
    let dom = Command::new(&chromium)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(format!("file://{}", html.display()))
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(dom.status.success());
    let dom = String::from_utf8_lossy(&dom.stdout);
    let drawn = dom
        .split("Drawn: ")
        .nth(1)
        .and_then(|r| r.split('.').next())
        .unwrap_or_else(|| panic!("the report's script did not run:\n{dom}"));
    assert!(
        drawn.starts_with(&format!("{charts} of {charts} charts")),
        "Chromium drew {drawn}"
    );
    let lines: usize = drawn
        .split(", ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(lines >= charts, "{drawn}");
}

#[test]
fn bad_pid_and_unwritable_report_fail_before_profiling() {
    let out = profile("idle-allocated", &["--duration=60s", "--pid=4000000000"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--pid 4000000000"));
    let started = std::time::Instant::now();
    let out = profile(
        "idle-allocated",
        &["--duration=60s", "--html=/nonexistent/dir/report.html"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot write /nonexistent/dir/report.html")
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "failed at once, not after 60 s"
    );
}

/// On a terminal (a pseudo-terminal from util-linux `script`), stderr shows
/// a live progress line that is erased at the end; stdout keeps the summary.
#[test]
fn progress_line_on_a_terminal() {
    let fx = fixtures();
    let cmd = format!(
        "NVML_SIM_SCENARIO=idle-allocated {} profile --nvml.library={} --path.procfs={} --path.sysfs={} --no-collector.cloud --events.socket= --duration=1500ms --interval=100ms",
        bin().display(),
        sim_lib().display(),
        fx.join("proc").display(),
        fx.join("sys").display()
    );
    let out = Command::new(crate::util::require("script"))
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("\rprofiling: ") || text.contains("\r\x1b[Kprofiling: "),
        "{text:?}"
    );
    assert!(
        text.matches("profiling: ").count() >= 3,
        "updated as it goes: {text:?}"
    );
    assert!(text.contains(" samples"));
    assert!(text.contains("verdict: idle"), "{text}");
}

/// A training loop that reports its steps: 100 ms steps of which 40 ms wait
/// for input, sent to `socket` every 100 ms for `seconds`.
fn training_loop(socket: std::path::PathBuf, seconds: f64) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let tx = std::os::unix::net::UnixDatagram::unbound().unwrap();
        let send = |s: String| {
            let _ = tx.send_to(s.as_bytes(), &socket);
        };
        send(r#"{"v":1,"kind":"run_start","run":"llm-7b","rank":0,"world_size":1,"labels":{"model":"llm-7b"}}"#.into());
        let t0 = std::time::Instant::now();
        let mut step = 0;
        while t0.elapsed().as_secs_f64() < seconds {
            step += 1;
            send(r#"{"v":1,"kind":"phase","run":"llm-7b","rank":0,"phase":"data_wait","seconds":0.04}"#.into());
            send(format!(
                r#"{{"v":1,"kind":"step","run":"llm-7b","rank":0,"step":{step},"seconds":0.1,"tokens":4096,"model_flops":1e13,"dtype":"bf16"}}"#
            ));
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    })
}

/// The training loop's own events decide: the GPUs of 8xh100-training look
/// compute-bound, but the loop says 40 % of each step waits for input.
#[test]
fn run_events_name_data_wait_as_the_bottleneck() {
    let dir = TempDir::new("profile-events");
    let socket = dir.0.join("events.sock");
    let json = dir.0.join("profile.json");
    let sock = socket.clone();
    let sender = std::thread::spawn(move || {
        // Wait for the profile's socket.
        let t = std::time::Instant::now();
        while !sock.exists() && t.elapsed() < std::time::Duration::from_secs(10) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        training_loop(sock, 3.0).join().unwrap();
    });
    let out = profile(
        "8xh100-training",
        &[
            &format!("--events.socket={}", socket.display()),
            "--duration=4s",
            "--interval=100ms",
            &format!("--json={}", json.display()),
        ],
    );
    sender.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(doc["verdict"], "input-bound", "{stdout}");
    let ev = evidence(&doc);
    assert!(
        ev.contains("run llm-7b: data_wait is 40% of step time")
            && ev.contains("accel_run_phase_seconds_total"),
        "{ev}"
    );
    let run = &doc["summary"]["runs"][0];
    assert_eq!(run["source"], "events");
    assert!(
        (run["mean_step_seconds"].as_f64().unwrap() - 0.1).abs() < 1e-9,
        "{run}"
    );
    assert!(
        stdout.contains("run llm-7b (1 ranks, from events)"),
        "{stdout}"
    );
}

/// With the daemon holding the event socket, the profile reads the runs
/// from the daemon's metrics (at its start and end).
#[test]
fn run_events_come_from_the_daemon_when_it_holds_the_socket() {
    let daemon = crate::gpu::sim_agent(
        "8xh100-training",
        "1s",
        &[
            "--collector.disable-defaults",
            "--collector.gpu",
            "--collector.goodput",
            "--collector.goodput.interval=200ms",
        ],
    );
    daemon.wait_ready();
    let socket = daemon
        .events_socket
        .clone()
        .expect("the test agent has an event socket");
    let sender = training_loop(socket.clone(), 3.5);
    let out = profile(
        "8xh100-training",
        &[
            &format!("--events.socket={}", socket.display()),
            &format!("--web.listen-address={}", daemon.addr),
            "--duration=3s",
            "--interval=100ms",
        ],
    );
    sender.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("run llm-7b (1 ranks, from daemon)"),
        "{stdout}"
    );
    assert!(stdout.contains("verdict: input-bound"), "{stdout}");
    assert!(stdout.contains("data_wait is"), "{stdout}");
    // The daemon still has its socket: the profile left it alone.
    assert!(socket.exists());
}
