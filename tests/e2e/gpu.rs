//! The GPU collector end to end: the real binary loads the simulated NVML
//! (tests/nvml-sim) through `--nvml.library`, exactly as it loads the real
//! one, and answers from a scenario.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::golden::promtool_check;
use crate::util::{bin, root, value, Agent};

/// The simulated NVML, built next to the agent binary (once per test
/// process; cargo makes it a no-op when up to date).
pub fn sim_lib() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = bin().parent().unwrap().to_path_buf();
            let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            cmd.args(["build", "-q", "-p", "nvml-sim"])
                .current_dir(root());
            if dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let st = cmd.status().expect("run cargo build -p nvml-sim");
            assert!(st.success(), "cargo build -p nvml-sim failed");
            let lib = dir.join("libnvml_sim.so");
            assert!(lib.exists(), "{} not built", lib.display());
            lib
        })
        .clone()
}

/// The agent on a simulated node running `scenario`, with the GPU collector
/// sampling every `interval`.
pub fn sim_agent(scenario: &str, interval: &str, extra: &[&str]) -> Agent {
    let lib = format!("--nvml.library={}", sim_lib().display());
    let interval = format!("--collector.gpu.interval={interval}");
    let mut args = vec![lib.as_str(), interval.as_str()];
    args.extend_from_slice(extra);
    Agent::start_env(&args, &[("NVML_SIM_SCENARIO", scenario)])
}

fn wait_for(agent: &Agent, what: &str, within: Duration, cond: impl Fn(&str) -> bool) -> String {
    agent.wait_for(what, within, cond)
}

fn gpu(text: &str, family: &str, gpu: u32) -> Option<f64> {
    let prefix = format!("{family}{{gpu=\"{gpu}\",uuid=\"");
    text.lines()
        .find(|l| l.starts_with(&prefix))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
}

fn count_series(text: &str, family: &str) -> usize {
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .count()
}

#[test]
fn simulated_h100_node() {
    let agent = sim_agent(
        "8xh100-training",
        "200ms",
        &[
            "--collector.disable-defaults",
            "--collector.gpu",
            "--collector.gpu.counter-interval=1s",
        ],
    );
    agent.wait_ready();
    // GPM needs two samples.
    let text = wait_for(&agent, "GPM metrics", Duration::from_secs(10), |t| {
        t.contains("accel_gpu_sm_active_ratio{")
    });
    assert_eq!(count_series(&text, "accel_gpu_up"), 8);
    for i in 0..8 {
        assert_eq!(gpu(&text, "accel_gpu_up", i), Some(1.0), "gpu {i}");
    }
    assert_eq!(count_series(&text, "accel_gpu_info"), 8);
    let info = text
        .lines()
        .find(|l| l.starts_with("accel_gpu_info{gpu=\"0\""))
        .unwrap();
    for want in [
        "name=\"NVIDIA H100 80GB HBM3\"",
        "uuid=\"GPU-",
        "pci_bus_id=\"",
        "driver_version=\"550.54.15\"",
        "cuda_driver_version=\"12.4\"",
        "vendor=\"nvidia\"",
    ] {
        assert!(info.contains(want), "{info} lacks {want}");
    }
    // Values in base units, from the scenario.
    assert_eq!(
        gpu(&text, "accel_gpu_memory_used_bytes", 0),
        Some(71680.0 * 1048576.0)
    );
    let util = gpu(&text, "accel_gpu_utilization_ratio", 2).unwrap();
    assert!((0.91..=0.99).contains(&util), "{util}");
    let power = gpu(&text, "accel_gpu_power_watts", 1).unwrap();
    assert!((580.0..=700.0).contains(&power), "{power}");
    let sm = gpu(&text, "accel_gpu_sm_active_ratio", 0).unwrap();
    assert!((sm - 0.88).abs() < 0.01, "{sm}");
    // Healthy links: summed per GPU, no per-link series (tests/e2e/series.rs).
    assert_eq!(count_series(&text, "accel_gpu_nvlink_links_up"), 8);
    assert_eq!(count_series(&text, "accel_gpu_nvlink_up"), 0);
    assert!(text.contains("accel_gpu_clock_hertz{gpu=\"0\","));
    assert!(text.contains("accel_gpu_process_memory_used_bytes{gpu=\"0\","));
    assert!(text.contains("accel_gpu_process_info{gpu=\"0\",") && text.contains("comm=\""));
    assert_eq!(gpu(&text, "accel_gpu_allocated", 0), Some(1.0));

    // Counters grow between samples, consistently with their gauges (the
    // energy counter is read every 10 s and advanced by power in between;
    // the NVLink counters here every second).
    let e0 = gpu(&text, "accel_gpu_energy_joules_total", 0).unwrap();
    let b0 = gpu(&text, "accel_gpu_busy_seconds_total", 0).unwrap();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(4000));
    let later = agent.get("/metrics").text();
    let dt = t0.elapsed().as_secs_f64();
    let e1 = gpu(&later, "accel_gpu_energy_joules_total", 0).unwrap();
    let b1 = gpu(&later, "accel_gpu_busy_seconds_total", 0).unwrap();
    let watts = (e1 - e0) / dt;
    assert!((450.0..=850.0).contains(&watts), "energy says {watts} W");
    let busy = (b1 - b0) / dt;
    assert!((0.7..=1.05).contains(&busy), "busy ratio {busy}");
    let tx0 = text
        .lines()
        .find(|l| l.starts_with("accel_gpu_nvlink_transmit_bytes_total{gpu=\"0\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap());
    let tx1 = later
        .lines()
        .find(|l| l.starts_with("accel_gpu_nvlink_transmit_bytes_total{gpu=\"0\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap());
    assert!(tx1.unwrap() > tx0.unwrap(), "NVLink counter did not grow");

    let (ok, msg) = promtool_check(&later);
    assert!(
        ok && msg.trim().is_empty(),
        "promtool check metrics:\n{msg}"
    );
}

#[test]
fn a_lost_gpu_is_data_and_comes_back() {
    let agent = sim_agent(
        "gpu-lost",
        "200ms",
        &[
            "--collector.disable-defaults",
            "--collector.gpu",
            "--collector.cpu",
        ],
    );
    agent.wait_ready();
    let lost = wait_for(&agent, "GPU 3 lost", Duration::from_secs(10), |t| {
        gpu(t, "accel_gpu_up", 3) == Some(0.0)
    });
    assert_eq!(
        value(&lost, "accel_collector_success{collector=\"gpu\"}"),
        Some(1.0)
    );
    for i in [0, 1, 2, 4, 5, 6, 7] {
        assert_eq!(gpu(&lost, "accel_gpu_up", i), Some(1.0), "gpu {i}");
        assert!(gpu(&lost, "accel_gpu_power_watts", i).is_some(), "gpu {i}");
    }
    assert_eq!(
        gpu(&lost, "accel_gpu_power_watts", 3),
        None,
        "a lost GPU's values are withheld"
    );
    assert!(lost.contains("accel_gpu_info{gpu=\"3\""), "identity stays");
    assert!(
        value(
            &lost,
            "accel_collector_errors_by_kind_total{collector=\"gpu\",kind=\"gpu_lost\"}"
        )
        .unwrap()
            >= 1.0
    );
    // The scenario raises XID 79 when the GPU falls off the bus.
    let xid = wait_for(&agent, "XID 79", Duration::from_secs(5), |t| {
        t.contains("accel_gpu_xid_errors_total{gpu=\"3\",")
    });
    assert!(xid.contains("xid=\"79\"} 1"), "{xid}");
    assert!(gpu(&xid, "accel_gpu_last_xid_timestamp_seconds", 3).is_some());
    // Back at t = 8 s; probed again with backoff (1, 2, 4 s).
    let back = wait_for(&agent, "GPU 3 back", Duration::from_secs(15), |t| {
        gpu(t, "accel_gpu_up", 3) == Some(1.0)
    });
    assert!(gpu(&back, "accel_gpu_power_watts", 3).is_some());
}

fn threads(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_hung_nvml_call_never_stalls_the_endpoint() {
    let agent = sim_agent(
        "nvml-hang",
        "200ms",
        &[
            "--collector.disable-defaults",
            "--collector.gpu",
            "--collector.cpu",
        ],
    );
    agent.wait_ready();
    let before = threads(agent.child.id());
    // The hang starts at t = 2 s; the GPU collector's deadline is 2 s.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut slowest = Duration::ZERO;
    let text = loop {
        let t = Instant::now();
        let text = agent.get("/metrics").text();
        slowest = slowest.max(t.elapsed());
        if value(&text, "accel_collector_stale{collector=\"gpu\"}") == Some(1.0) {
            break text;
        }
        assert!(Instant::now() < deadline, "never reported stale:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        slowest < Duration::from_millis(500),
        "a scrape took {slowest:?}"
    );
    assert!(
        !text.contains("accel_gpu_power_watts"),
        "stale GPU values served"
    );
    assert_eq!(
        value(&text, "accel_collector_success{collector=\"gpu\"}"),
        Some(0.0)
    );
    assert!(
        text.contains("accel_cpu_seconds_total{"),
        "other collectors keep serving"
    );
    // Scrapes stay fast while it hangs, and no thread piles up.
    for _ in 0..10 {
        let t = Instant::now();
        assert_eq!(agent.get("/metrics").status, 200);
        assert!(t.elapsed() < Duration::from_millis(500));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        threads(agent.child.id()) <= before,
        "threads grew from {before} during the hang"
    );
}

#[test]
fn no_library_means_no_gpu_collector() {
    let agent = Agent::start(&["--nvml.library=/nonexistent/libnvidia-ml.so.1"]);
    let text = agent.get_ready("/metrics").text();
    assert_eq!(
        value(&text, "accel_collector_enabled{collector=\"gpu\"}"),
        Some(0.0)
    );
    assert!(!text.contains("accel_collector_success{collector=\"gpu\"}"));
    assert!(text.contains("accel_cpu_seconds_total{"));
    let log = agent.log_lines().join("\n");
    assert_eq!(log.matches("collector=gpu").count(), 1, "{log}");
    assert!(log.contains("no NVML library"), "{log}");
}

#[test]
fn a_driver_that_is_not_loaded_is_absent_too() {
    // nvml-sim without a scenario answers nvmlInit with DRIVER_NOT_LOADED.
    let lib = format!("--nvml.library={}", sim_lib().display());
    let agent = Agent::start_env(&[&lib], &[("NVML_SIM_SCENARIO", "")]);
    let text = agent.get_ready("/metrics").text();
    assert_eq!(
        value(&text, "accel_collector_enabled{collector=\"gpu\"}"),
        Some(0.0)
    );
}

#[test]
fn not_supported_leaves_series_out_and_logs_once() {
    let agent = sim_agent(
        "no-gpm",
        "100ms",
        &["--collector.disable-defaults", "--collector.gpu"],
    );
    agent.wait_ready();
    std::thread::sleep(Duration::from_millis(1200));
    let text = agent.get("/metrics").text();
    assert_eq!(count_series(&text, "accel_gpu_up"), 2);
    for absent in [
        "accel_gpu_sm_active_ratio",
        "accel_gpu_nvlink_up",
        "accel_gpu_nvlink_links",
        "accel_gpu_fan_speed_ratio",
    ] {
        assert!(!text.contains(absent), "{absent} should be left out");
    }
    assert!(text.contains("accel_gpu_power_watts{gpu=\"1\""));
    let log = agent.log_lines();
    let mig: Vec<_> = log
        .iter()
        .filter(|l| l.contains("not supported") && l.contains("nvmlDeviceGetMigMode"))
        .collect();
    // Once per GPU, not once per sample (more than 10 samples ran).
    assert_eq!(mig.len(), 2, "{mig:#?}");
    assert!(value(&text, "accel_collector_samples_total{collector=\"gpu\"}").unwrap() >= 10.0);
    // Passively cooled: the fan count is 0 and fan 0 is never asked for
    // (the real driver answers INVALID_ARGUMENT, an error every sample).
    assert!(!log.iter().any(|l| l.contains("FanSpeed")), "{log:#?}");
    let errors = value(
        &text,
        "accel_collector_errors_by_kind_total{collector=\"gpu\",kind=\"library\"}",
    )
    .unwrap_or(0.0);
    assert_eq!(errors, 0.0, "{text}");
}

#[test]
fn idle_allocated_gpus_are_counted() {
    let agent = sim_agent(
        "idle-allocated",
        "100ms",
        &["--collector.disable-defaults", "--collector.gpu"],
    );
    agent.wait_ready();
    std::thread::sleep(Duration::from_millis(1500));
    let text = agent.get("/metrics").text();
    for i in 0..6 {
        assert_eq!(gpu(&text, "accel_gpu_allocated", i), Some(1.0), "gpu {i}");
        let idle = gpu(&text, "accel_gpu_idle_allocated_seconds_total", i).unwrap();
        let alloc = gpu(&text, "accel_gpu_allocated_seconds_total", i).unwrap();
        assert!(
            idle > 0.5 && (idle - alloc).abs() < 1e-9,
            "gpu {i}: idle {idle}, allocated {alloc}"
        );
    }
    for i in 6..8 {
        assert_eq!(gpu(&text, "accel_gpu_allocated", i), Some(0.0), "gpu {i}");
        assert_eq!(
            gpu(&text, "accel_gpu_idle_allocated_seconds_total", i),
            Some(0.0),
            "gpu {i}"
        );
    }
    // The holding process is the agent itself: its command name is found.
    assert!(text.contains("comm=\"accel-agent\""), "{text}");
}

/// One golden per scenario: the clock of the simulated NVML stands still
/// (NVML_SIM_TIME), processes are looked up in the fixture procfs, and what
/// the agent integrates over real time is masked.
#[test]
fn every_scenario_matches_its_golden() {
    let procfs = format!(
        "--path.procfs={}",
        crate::util::fixtures().join("proc").display()
    );
    // (scenario, frozen time, what to wait for before the golden scrape)
    let cases: [(&str, &str, &str); 10] = [
        ("mig-h100", "4", "accel_gpu_mig_sm_active_ratio{"),
        ("8xh100-training", "12.5", "accel_gpu_sm_active_ratio{"),
        ("4xa100", "30", "accel_gpu_nvlink_up{"),
        ("idle-allocated", "5", "accel_gpu_allocated{"),
        ("input-bound", "1", "accel_gpu_sm_active_ratio{"),
        // Lost from the start: no identity, no XID (it fell off before the
        // agent watched for events).
        ("gpu-lost", "5", "accel_gpu_up{gpu=\"3\",uuid=\"\"} 0"),
        ("nvml-hang", "1", "accel_gpu_sm_active_ratio{"),
        ("no-gpm", "2", "accel_gpu_up{"),
        // NVLink5 errors and clock event reason counters through the new
        // fields, the old calls NOT_SUPPORTED.
        ("b200-training", "12.5", "accel_gpu_sm_active_ratio{"),
        // The XID is due at the frozen time, so it is delivered.
        ("sick-links", "2", "accel_gpu_xid_errors_total{"),
    ];
    let mut failures = Vec::new();
    for (scenario, t, ready) in cases {
        let lib = format!("--nvml.library={}", sim_lib().display());
        let start = || {
            Agent::start_env(
                &[
                    &lib,
                    &procfs,
                    "--collector.disable-defaults",
                    "--collector.gpu",
                    "--collector.gpu.interval=100ms",
                    // The driver's energy counter at every sample: between
                    // reads it advances by power x real time, which the
                    // frozen clock does not.
                    "--collector.gpu.energy-interval=0s",
                ],
                &[("NVML_SIM_SCENARIO", scenario), ("NVML_SIM_TIME", t)],
            )
        };
        // idle-allocated's processes are the agent itself (pid "self"),
        // looked up in the fixture procfs: an agent whose real pid happens
        // to be one of the fixture's (4100, 7200, ...) would read that
        // fixture process's owner. Start again until it is not.
        let mut agent = start();
        while crate::util::fixtures()
            .join(format!("proc/{}", agent.child.id()))
            .exists()
        {
            drop(agent);
            agent = start();
        }
        let text = wait_for(&agent, ready, Duration::from_secs(10), |text| {
            text.contains(ready)
                && value(text, "accel_collector_samples_total{collector=\"gpu\"}").unwrap_or(0.0)
                    >= 3.0
        });
        let me = format!("pid=\"{}\"", agent.child.id());
        let text = text.replace(&me, "pid=\"<agent>\"");
        let got = crate::golden::normalize(
            &text,
            &[
                "accel_collector_samples_total",
                "accel_gpu_busy_seconds_total",
                "accel_gpu_allocated_seconds_total",
                "accel_gpu_idle_allocated_seconds_total",
                "accel_gpu_last_xid_timestamp_seconds",
            ],
        );
        let (ok, msg) = promtool_check(&text);
        if !(ok && msg.trim().is_empty()) {
            failures.push(format!("{scenario}: promtool check metrics:\n{msg}"));
        }
        if let Err(e) = std::panic::catch_unwind(|| {
            crate::golden::check_golden(&format!("gpu-{scenario}"), &got)
        }) {
            failures.push(format!("{scenario}: {:?}", e.downcast_ref::<String>()));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn a_driver_that_loads_late_is_picked_up() {
    // An NVIDIA GPU is on PCI (fixture sysfs) but NVML cannot start yet: the
    // scenario file does not exist. The collector runs, says why it fails,
    // and starts reporting once NVML can start, without a restart.
    let dir = crate::util::TempDir::new("late");
    let scenario = dir.0.join("late.toml");
    let lib = format!("--nvml.library={}", sim_lib().display());
    let sysfs = format!(
        "--path.sysfs={}",
        crate::util::fixtures().join("sys").display()
    );
    let agent = Agent::start_env(
        &[
            &lib,
            &sysfs,
            "--collector.disable-defaults",
            "--collector.gpu",
            "--collector.gpu.interval=100ms",
        ],
        &[("NVML_SIM_SCENARIO", scenario.to_str().unwrap())],
    );
    let text = agent.get_ready("/metrics").text();
    assert_eq!(
        value(&text, "accel_collector_enabled{collector=\"gpu\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "accel_collector_success{collector=\"gpu\"}"),
        Some(0.0)
    );
    assert!(
        value(
            &text,
            "accel_collector_errors_by_kind_total{collector=\"gpu\",kind=\"library\"}"
        )
        .unwrap()
            >= 1.0
    );
    std::fs::copy(
        root().join("tests/nvml-sim/scenarios/8xh100-training.toml"),
        &scenario,
    )
    .unwrap();
    let text = wait_for(&agent, "NVML to start", Duration::from_secs(10), |t| {
        value(t, "accel_collector_success{collector=\"gpu\"}") == Some(1.0)
    });
    assert_eq!(count_series(&text, "accel_gpu_up"), 8);
}

#[test]
fn no_nvidia_gpu_and_no_driver_is_absent() {
    // The library is there but NVML cannot start, and there is no NVIDIA
    // device on PCI (this machine's sysfs, or none): absent, not failing.
    let lib = format!("--nvml.library={}", sim_lib().display());
    let dir = crate::util::TempDir::new("nopci");
    let sysfs = format!("--path.sysfs={}", dir.0.display());
    let agent = Agent::start_env(
        &[&lib, &sysfs],
        &[("NVML_SIM_SCENARIO", "/nonexistent.toml")],
    );
    let text = agent.get_ready("/metrics").text();
    assert_eq!(
        value(&text, "accel_collector_enabled{collector=\"gpu\"}"),
        Some(0.0)
    );
    assert!(agent
        .log_lines()
        .iter()
        .any(|l| l.contains("no NVIDIA GPU on PCI")));
}

#[test]
fn mig_instances_are_reported() {
    let agent = sim_agent(
        "mig-h100",
        "200ms",
        &["--collector.disable-defaults", "--collector.gpu"],
    );
    agent.wait_ready();
    let text = wait_for(&agent, "MIG GPM metrics", Duration::from_secs(10), |t| {
        t.contains("accel_gpu_mig_sm_active_ratio{")
    });
    assert_eq!(gpu(&text, "accel_gpu_mig_mode", 0), Some(1.0));
    assert_eq!(gpu(&text, "accel_gpu_mig_mode", 1), Some(0.0));
    let info: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("accel_gpu_mig_info{gpu=\"0\""))
        .collect();
    assert_eq!(info.len(), 3, "{info:#?}");
    assert!(
        info.iter().all(|l| l.contains("mig_uuid=\"MIG-")),
        "{info:#?}"
    );
    assert!(
        info.iter()
            .any(|l| l.contains("gpu_instance=\"2\"") && l.contains("MIG 3g.40gb")),
        "{info:#?}"
    );
    let series = |family: &str, gi: &str| {
        text.lines()
            .find(|l| {
                l.starts_with(&format!("{family}{{gpu=\"0\""))
                    && l.contains(&format!("gpu_instance=\"{gi}\""))
            })
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
    };
    assert_eq!(
        series("accel_gpu_mig_memory_used_bytes", "2"),
        Some(20000.0 * 1048576.0)
    );
    assert_eq!(series("accel_gpu_mig_allocated", "2"), Some(1.0));
    assert_eq!(
        series("accel_gpu_mig_allocated", "3"),
        Some(0.0),
        "the idle instance"
    );
    let sm = series("accel_gpu_mig_sm_active_ratio", "2").unwrap();
    assert!((sm - 0.70).abs() < 0.01, "{sm}");
    // In MIG mode the parent has no utilisation; the other GPU does.
    assert_eq!(gpu(&text, "accel_gpu_utilization_ratio", 0), None);
    assert!(gpu(&text, "accel_gpu_utilization_ratio", 1).is_some());
    assert!(text.contains("pid=\"7100\"") && text.contains("gpu_instance=\"2\"} 1"));
}

#[test]
fn pcie_throughput_from_byte_counters_and_the_fallback() {
    // GPU 0 has the PCIe byte counters (field values 197/198): the agent
    // exports them as counters (and with --collector.gpu.detail the
    // per-second gauges from their deltas), and never calls
    // nvmlDeviceGetPcieThroughput, which blocks 20 ms per direction on a
    // real H100. GPU 1 lacks the counters: the gauges come from the 20 ms
    // call, with or without the flag. GPU 1 also has two fans.
    let dir = crate::util::TempDir::new("pcie");
    let scenario = dir.0.join("pcie.toml");
    std::fs::write(
        &scenario,
        r#"
[[gpus]]
model = "h100"
pcie_tx_kbps = 400000
pcie_rx_kbps = 100000

[[gpus]]
model = "l4"
fans = 2
fan_percent = 45
pcie_tx_kbps = 300000
pcie_rx_kbps = 200000

[[faults]]
gpu = 1
not_supported = ["nvmlDeviceGetFieldValues(197)", "nvmlDeviceGetFieldValues(198)", "nvmlDeviceGetFieldValues(76)"]
"#,
    )
    .unwrap();
    // By default: GPU 0's counters without gauges, GPU 1's gauges.
    let lean = sim_agent(
        scenario.to_str().unwrap(),
        "200ms",
        &["--collector.disable-defaults", "--collector.gpu"],
    );
    lean.wait_ready();
    let text = wait_for(&lean, "PCIe counters", Duration::from_secs(10), |t| {
        gpu(t, "accel_gpu_pcie_transmit_bytes_total", 0).is_some_and(|v| v > 0.0)
            && gpu(t, "accel_gpu_pcie_transmit_bytes_per_second", 1).is_some()
    });
    assert_eq!(
        gpu(&text, "accel_gpu_pcie_transmit_bytes_per_second", 0),
        None
    );
    assert_eq!(
        gpu(&text, "accel_gpu_pcie_receive_bytes_per_second", 0),
        None
    );
    assert_eq!(
        gpu(&text, "accel_gpu_pcie_receive_bytes_per_second", 1),
        Some(200_000.0 * 1024.0)
    );
    drop(lean);

    let agent = sim_agent(
        scenario.to_str().unwrap(),
        "200ms",
        &[
            "--collector.disable-defaults",
            "--collector.gpu",
            "--collector.gpu.detail",
            "--collector.gpu.counter-interval=200ms",
        ],
    );
    agent.wait_ready();
    let text = wait_for(&agent, "PCIe gauges", Duration::from_secs(10), |t| {
        gpu(t, "accel_gpu_pcie_transmit_bytes_per_second", 0).is_some()
    });
    let tx0 = gpu(&text, "accel_gpu_pcie_transmit_bytes_per_second", 0).unwrap();
    let rx0 = gpu(&text, "accel_gpu_pcie_receive_bytes_per_second", 0).unwrap();
    // 400000 KiB/s from the counter's deltas (the sampler's clock and the
    // simulator's differ by scheduling jitter only).
    assert!((tx0 / (400_000.0 * 1024.0) - 1.0).abs() < 0.1, "tx {tx0}");
    assert!((rx0 / (100_000.0 * 1024.0) - 1.0).abs() < 0.1, "rx {rx0}");
    assert!(gpu(&text, "accel_gpu_pcie_transmit_bytes_total", 0).unwrap() > 0.0);
    assert!(gpu(&text, "accel_gpu_pcie_receive_bytes_total", 0).unwrap() > 0.0);
    // GPU 1: no counters, gauges from the driver's 20 ms window.
    assert_eq!(gpu(&text, "accel_gpu_pcie_transmit_bytes_total", 1), None);
    assert_eq!(
        gpu(&text, "accel_gpu_pcie_transmit_bytes_per_second", 1),
        Some(300_000.0 * 1024.0)
    );
    assert_eq!(
        gpu(&text, "accel_gpu_pcie_receive_bytes_per_second", 1),
        Some(200_000.0 * 1024.0)
    );
    // Violation times: fields of the one field-values call on GPU 0; on
    // GPU 1 a field is missing, so nvmlDeviceGetViolationStatus for it.
    for g in ["0", "1"] {
        let reasons = text
            .lines()
            .filter(|l| l.starts_with(&format!("accel_gpu_throttle_seconds_total{{gpu=\"{g}\"")))
            .count();
        assert_eq!(reasons, 4, "GPU {g}");
    }
    // Fans: one series per fan, none for the passively cooled H100.
    let fans: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("accel_gpu_fan_speed_ratio{"))
        .collect();
    assert_eq!(fans.len(), 2, "{fans:#?}");
    assert!(fans
        .iter()
        .all(|l| l.contains("gpu=\"1\"") && l.ends_with(" 0.45")));
    assert!(fans.iter().any(|l| l.contains("fan=\"1\"")));
    let log = agent.log_lines();
    assert!(
        log.iter()
            .any(|l| l.contains("gpu=1") && l.contains("PCIE_COUNT")),
        "the fallback is logged once: {log:#?}"
    );
    promtool_check(&text);
}

#[test]
fn a_silent_xid_event_thread_fails_the_collector_until_it_waits_again() {
    // nvmlEventSetWait hangs from t = 1 s to t = 15 s while every other call
    // answers: the event thread cannot beat, and past its bound (10 s) the
    // collector's samples fail instead of serving XID counts that no longer
    // move; once the wait returns, it beats and the samples succeed again.
    let dir = crate::util::TempDir::new("xid-silent");
    let scenario = dir.0.join("xid-silent.toml");
    std::fs::write(
        &scenario,
        "[[gpus]]\ncount = 2\nmodel = \"h100-sxm5-80gb\"\n\
         [[faults]]\nhang = [{ call = \"nvmlEventSetWait_v2\", at = 1, seconds = 14 }]\n",
    )
    .unwrap();
    let agent = sim_agent(
        scenario.to_str().unwrap(),
        "200ms",
        &["--collector.disable-defaults", "--collector.gpu"],
    );
    let text = agent.get_ready("/metrics").text();
    assert_eq!(
        value(&text, "accel_collector_success{collector=\"gpu\"}"),
        Some(1.0)
    );
    let failed = wait_for(
        &agent,
        "the silence to be seen",
        Duration::from_secs(20),
        |t| value(t, "accel_collector_success{collector=\"gpu\"}") == Some(0.0),
    );
    assert!(
        value(
            &failed,
            "accel_collector_errors_by_kind_total{collector=\"gpu\",kind=\"timeout\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{failed}"
    );
    assert!(
        !failed.contains("accel_gpu_xid_errors_total{"),
        "XID counts served while their thread is silent"
    );
    wait_for(
        &agent,
        "the thread to beat again",
        Duration::from_secs(15),
        |t| value(t, "accel_collector_success{collector=\"gpu\"}") == Some(1.0),
    );
}
