//! AMD Instinct GPUs end to end: the real binary on the fixture trees of
//! tests/fixtures/amd (sysfs and procfs as amdgpu writes them, with
//! `gpu_metrics` tables built from the kernel's structs by
//! tests/amd-fixtures/gen.c), through the `gpu` collector's AMD backend.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::golden::promtool_check;
use crate::util::{bin, require, root, value, Agent, TempDir};

/// The fixture tree of `node`.
fn tree(node: &str) -> PathBuf {
    root().join("tests/fixtures/amd").join(node)
}

/// The agent on the tree at `dir`, with only the GPU collector, sampling
/// every 100 ms and no NVML library to find.
fn amd_agent(dir: &Path) -> Agent {
    let sys = format!("--path.sysfs={}", dir.join("sys").display());
    let proc = format!("--path.procfs={}", dir.join("proc").display());
    Agent::start(&[
        "--nvml.library=/nonexistent/libnvidia-ml.so.1",
        &sys,
        &proc,
        "--collector.disable-defaults",
        "--collector.gpu",
        "--collector.gpu.interval=100ms",
    ])
}

/// The scrape once the collector has sampled at least `n` times.
fn after_samples(agent: &Agent, n: f64) -> String {
    agent.wait_for("gpu samples", Duration::from_secs(10), |t| {
        value(t, "accel_collector_samples_total{collector=\"gpu\"}").unwrap_or(0.0) >= n
    })
}

/// A copy of `node`'s tree (symlinks kept) that a test may change.
fn copy_of(node: &str) -> TempDir {
    let dir = TempDir::new(&format!("amd-{node}"));
    let st = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", tree(node).display()))
        .arg(&dir.0)
        .status()
        .unwrap();
    assert!(st.success());
    dir
}

#[test]
fn every_node_matches_its_golden() {
    let mut failures = Vec::new();
    for node in ["mi250x", "mi300x", "mi355x"] {
        let agent = amd_agent(&tree(node));
        let text = after_samples(&agent, 3.0);
        let (ok, msg) = promtool_check(&text);
        if !(ok && msg.trim().is_empty()) {
            failures.push(format!("{node}: promtool check metrics:\n{msg}"));
        }
        let got = crate::golden::normalize(
            &text,
            &[
                "accel_collector_samples_total",
                "accel_gpu_busy_seconds_total",
                "accel_gpu_allocated_seconds_total",
                "accel_gpu_idle_allocated_seconds_total",
            ],
        );
        if let Err(e) =
            std::panic::catch_unwind(|| crate::golden::check_golden(&format!("amd-{node}"), &got))
        {
            failures.push(format!("{node}: {:?}", e.downcast_ref::<String>()));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn amd_gpus_share_the_nvidia_schema() {
    let agent = amd_agent(&tree("mi300x"));
    let text = after_samples(&agent, 3.0);
    let info = text
        .lines()
        .find(|l| l.starts_with("accel_gpu_info{gpu=\"1\""))
        .unwrap();
    // No FRU product name: named by PCI device id.
    assert!(info.contains("name=\"AMD Instinct MI300X\""), "{info}");
    assert!(
        info.contains("vendor=\"amd\"") && info.contains("driver_version=\"6.10.5\""),
        "{info}"
    );
    let v = |s: &str| value(&text, s).unwrap_or_else(|| panic!("{s} missing:\n{text}"));
    let g0 = "gpu=\"0\",uuid=\"9a2b0c1d2e3f4a50\"";
    let g1 = "gpu=\"1\",uuid=\"9a2b0c1d2e3f4a51\"";
    assert_eq!(v(&format!("accel_gpu_utilization_ratio{{{g0}}}")), 0.93);
    assert_eq!(
        v(&format!("accel_gpu_memory_used_bytes{{{g0}}}")),
        171798691840.0
    );
    assert_eq!(v(&format!("accel_gpu_power_watts{{{g1}}}")), 610.0);
    // Energy from gpu_metrics (2^-16 J units), both layouts.
    assert_eq!(
        v(&format!("accel_gpu_energy_joules_total{{{g0}}}")),
        10000.0
    );
    assert_eq!(
        v(&format!("accel_gpu_energy_joules_total{{{g1}}}")),
        20000.0
    );
    // Throttle time from the v1.7 residencies (static tables: none added).
    assert_eq!(
        v(&format!(
            "accel_gpu_throttle_seconds_total{{{g1},reason=\"power\"}}"
        )),
        0.0
    );
    assert!(!text.contains(&format!("accel_gpu_throttle_seconds_total{{{g0}")));
    // XGMI: seven links with traffic, link 6 down, link 7 unsupported.
    assert_eq!(
        v(&format!("accel_gpu_amd_xgmi_link_up{{{g1},link=\"6\"}}")),
        0.0
    );
    assert!(!text.contains(&format!("accel_gpu_amd_xgmi_link_up{{{g1},link=\"7\"}}")));
    assert_eq!(
        v(&format!(
            "accel_gpu_amd_xgmi_receive_bytes_total{{{g0},link=\"0\"}}"
        )),
        1048576.0 * 1024.0
    );
    // The process in a pod's cgroup, with its VRAM.
    assert_eq!(
        v(&format!(
            "accel_gpu_process_memory_used_bytes{{{g0},pid=\"6200\"}}"
        )),
        167772160.0 * 1024.0
    );
    assert_eq!(v(&format!("accel_gpu_allocated{{{g0}}}")), 1.0);
    assert_eq!(v(&format!("accel_gpu_allocated{{{g1}}}")), 0.0);
    // The busy integral moves with gpu_busy_percent.
    let busy = v(&format!("accel_gpu_busy_seconds_total{{{g0}}}"));
    let text = after_samples(&agent, 8.0);
    let later = value(&text, &format!("accel_gpu_busy_seconds_total{{{g0}}}")).unwrap();
    assert!(later > busy, "{busy} then {later}");
}

#[test]
fn a_partitioned_gpu_is_one_gpu_with_partition_activity() {
    let agent = amd_agent(&tree("mi355x"));
    let text = after_samples(&agent, 3.0);
    // card1 is the second partition's amdgpu_xcp device: not a GPU.
    assert_eq!(text.matches("accel_gpu_up{").count(), 1, "{text}");
    let g = "gpu=\"0\",uuid=\"b41e8d0f7c6a5e30\"";
    assert!(text.contains("compute_partition=\"DPX\",memory_partition=\"NPS2\""));
    assert_eq!(
        value(
            &text,
            &format!("accel_gpu_amd_partition_utilization_ratio{{{g},partition=\"0\"}}")
        ),
        Some(0.95)
    );
    assert_eq!(
        value(
            &text,
            &format!("accel_gpu_amd_partition_utilization_ratio{{{g},partition=\"1\"}}")
        ),
        Some(0.25)
    );
    // hwmon's energy1_input (µJ) wins over the table's.
    assert_eq!(
        value(&text, &format!("accel_gpu_energy_joules_total{{{g}}}")),
        Some(40000.5)
    );
    assert_eq!(
        value(&text, &format!("accel_gpu_processes{{{g}}}")),
        Some(2.0)
    );
}

#[test]
fn a_bad_gpu_metrics_table_is_skipped_and_counted() {
    let dir = copy_of("mi300x");
    let card = |n: u32| dir.0.join(format!("sys/class/drm/card{n}/device"));
    // card0: a version this agent does not know (v1.9); card1: cut short.
    let mut v19 = std::fs::read(card(0).join("gpu_metrics")).unwrap();
    v19[3] = 9;
    std::fs::write(card(0).join("gpu_metrics"), v19).unwrap();
    let v17 = std::fs::read(card(1).join("gpu_metrics")).unwrap();
    std::fs::write(card(1).join("gpu_metrics"), &v17[..1000]).unwrap();
    let agent = amd_agent(&dir.0);
    let text = after_samples(&agent, 4.0);
    let g0 = "gpu=\"0\",uuid=\"9a2b0c1d2e3f4a50\"";
    let g1 = "gpu=\"1\",uuid=\"9a2b0c1d2e3f4a51\"";
    let skipped = |g: &str, r: &str| {
        value(
            &text,
            &format!("accel_gpu_amd_metrics_skipped_total{{{g},reason=\"{r}\"}}"),
        )
        .unwrap_or(0.0)
    };
    assert!(skipped(g0, "unknown_version") >= 4.0, "{text}");
    assert!(skipped(g1, "truncated") >= 4.0, "{text}");
    // What the other files give is still there; what only the table gives
    // is not, and nothing claims a version.
    assert_eq!(
        value(&text, &format!("accel_gpu_utilization_ratio{{{g0}}}")),
        Some(0.93)
    );
    assert!(!text.contains("accel_gpu_energy_joules_total{"), "{text}");
    assert!(!text.contains("accel_gpu_amd_xgmi_"), "{text}");
    assert!(text.contains("gpu_metrics_version=\"\""));
    assert_eq!(
        value(&text, "accel_collector_success{collector=\"gpu\"}"),
        Some(1.0)
    );
    let log = agent.log_lines().join("\n");
    assert_eq!(log.matches("gpu_metrics skipped").count(), 2, "{log}");
}

#[test]
fn a_gpu_gone_from_sysfs_is_down_and_the_others_report() {
    let dir = copy_of("mi250x");
    let agent = amd_agent(&dir.0);
    after_samples(&agent, 2.0);
    std::fs::remove_file(dir.0.join("sys/class/drm/card1/device/vendor")).unwrap();
    let text = agent.wait_for("gpu 1 down", Duration::from_secs(10), |t| {
        t.contains("accel_gpu_up{gpu=\"1\",uuid=\"2c1f0a6b4e3d5a72\"} 0")
    });
    assert!(text.contains("accel_gpu_up{gpu=\"0\",uuid=\"2c1f0a6b4e3d5a71\"} 1"));
    assert!(!text.contains("accel_gpu_utilization_ratio{gpu=\"1\""));
    assert!(text.contains("accel_gpu_utilization_ratio{gpu=\"0\""));
}

#[test]
fn profile_covers_amd_gpus() {
    let dir = TempDir::new("amd-profile");
    let json = dir.0.join("profile.json");
    let fx = tree("mi250x");
    let out = Command::new(bin())
        .arg("profile")
        .arg("--nvml.library=/nonexistent/libnvidia-ml.so.1")
        .arg(format!("--path.sysfs={}", fx.join("sys").display()))
        .arg(format!("--path.procfs={}", fx.join("proc").display()))
        .args([
            "--collector.disable-defaults",
            "--collector.gpu",
            "--events.socket=",
        ])
        .args(["--duration=2s", "--interval=100ms"])
        .arg(format!("--json={}", json.display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for s in ["gpu0.utilization", "gpu1.utilization", "gpu0.power_watts"] {
        assert!(
            doc["signals"][s]["t"]
                .as_array()
                .is_some_and(|t| t.len() >= 10),
            "{s}: {stdout}"
        );
    }
    // GPU 1 is held by the job at 2 %: an allocated, idle GPU.
    assert!(stdout.contains("verdict: "), "{stdout}");
    assert_eq!(
        doc["signals"]["gpu1.utilization"]["v"][0].as_f64(),
        Some(0.02),
        "{doc}"
    );
}

/// The checked-in `gpu_metrics` blobs are what gen.c writes when gcc
/// compiles the kernel's structs: no hand-made offsets anywhere.
#[test]
fn fixture_blobs_are_the_kernel_structs_compiled() {
    let gcc = require("gcc");
    let dir = TempDir::new("amd-gen");
    let exe = dir.0.join("gen");
    let src = root().join("tests/amd-fixtures/gen.c");
    let st = Command::new(gcc)
        .args(["-std=c11", "-Wall", "-Werror", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success(), "gcc failed on {}", src.display());
    let out = dir.0.join("out");
    let st = Command::new(&exe).arg(&out).status().unwrap();
    assert!(st.success());
    let mut compared = 0;
    let mut stack = vec![out.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let rel = p.strip_prefix(&out).unwrap();
            let want = std::fs::read(&p).unwrap();
            let have = std::fs::read(root().join(rel))
                .unwrap_or_else(|e| panic!("{}: {e}", rel.display()));
            assert!(
                want == have,
                "{} differs from what gen.c writes: run `gcc -o gen tests/amd-fixtures/gen.c && ./gen .` at the repository root",
                rel.display()
            );
            compared += 1;
        }
    }
    assert_eq!(compared, 8);
}

#[test]
fn the_job_mapping_directory_maps_amd_gpus_too() {
    let jobs = TempDir::new("amd-jobs");
    std::fs::write(jobs.0.join("1"), "77001\n").unwrap();
    let fx = tree("mi250x");
    let agent = Agent::start(&[
        "--nvml.library=/nonexistent/libnvidia-ml.so.1",
        &format!("--path.sysfs={}", fx.join("sys").display()),
        &format!("--path.procfs={}", fx.join("proc").display()),
        &format!("--collector.gpu.job-mapping-dir={}", jobs.0.display()),
        "--collector.disable-defaults",
        "--collector.gpu",
        "--collector.gpu.interval=100ms",
    ]);
    let want = "accel_gpu_job_info{gpu=\"1\",uuid=\"2c1f0a6b4e3d5a72\",slurm_job=\"77001\",gpu_instance=\"\",source=\"mapping\"} 1";
    let text = agent.wait_for("the mapped job", Duration::from_secs(10), |t| {
        t.contains(want)
    });
    // The job seen through the process is there too.
    assert!(
        text.contains("slurm_job=\"4410\",gpu_instance=\"\",source=\"process\""),
        "{text}"
    );
}
