//! Node health end to end: `accel-agent health` on simulated failures (one
//! golden each, and the healthy 8xH100 node all ok), the daemon's series,
//! `/health` and landing page, sticky states across a restart and `--clear`,
//! exit codes and usage errors.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::gpu::sim_lib;
use crate::util::{bin, fixtures, root, Agent, TempDir};

fn fx() -> PathBuf {
    fixtures().join("health")
}

/// The flags of a simulated node: the health fixture's sysfs (8 NVIDIA GPUs
/// and 2 NVSwitches on PCI, two 400 Gb/s InfiniBand ports), the kernel log
/// file `kmsg`, a state file, and no clock check (this machine's clock may
/// not be synchronised).
fn node_args(kmsg: &str, state: &Path) -> Vec<String> {
    vec![
        format!("--nvml.library={}", sim_lib().display()),
        format!("--path.sysfs={}", fx().join("sys").display()),
        format!("--path.procfs={}", fixtures().join("proc").display()),
        format!("--collector.health.kmsg={}", fx().join(kmsg).display()),
        format!("--collector.health.state-file={}", state.display()),
        "--collector.health.skip=clock".to_owned(),
    ]
}

/// `accel-agent health ARGS` with `env`: exit code, stdout, stderr.
fn health(args: &[String], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(bin())
        .arg("health")
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run accel-agent health");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check_golden(name: &str, got: &str) -> Result<(), String> {
    let path = root().join(format!("tests/golden/health-{name}.txt"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).unwrap();
        return Ok(());
    }
    let want = std::fs::read_to_string(&path)
        .map_err(|e| format!("{}: {e} (UPDATE_GOLDEN=1 makes it)", path.display()))?;
    if want != got {
        let actual = path.with_extension("txt.actual");
        std::fs::write(&actual, got).unwrap();
        return Err(format!(
            "{name}: output differs from {}; actual in {}",
            path.display(),
            actual.display()
        ));
    }
    Ok(())
}

/// Each failure scenario, checked by the command on its own (the simulated
/// clock stands still at t = 10 s), against its golden table and exit code.
#[test]
fn every_health_scenario_matches_its_golden() {
    // The fixture mount table's read-only NFS mount.
    let ro = "--health.checkpoint-path=/nonexistent/accel-fixture/with space/ckpt";
    // (golden, scenario, kernel log, extra flag, exit code)
    let cases = [
        ("healthy", "8xh100-training", "kmsg-clean", "", 0),
        ("xid79", "health-xid79", "kmsg-xid79", "", 2),
        ("xid48", "health-xid48", "kmsg-xid48", "", 2),
        ("nvlink-down", "health-nvlink-down", "kmsg-clean", "", 1),
        ("gpu-missing", "health-gpu-missing", "kmsg-clean", "", 2),
        ("sxid", "8xh100-training", "kmsg-sxid", "", 2),
        ("nvswitch", "health-nvswitch", "kmsg-clean", "", 2),
        ("checkpoint-ro", "8xh100-training", "kmsg-clean", ro, 2),
    ];
    let mut failures = Vec::new();
    for (name, scenario, kmsg, extra, code) in cases {
        let dir = TempDir::new(&format!("health-{name}"));
        let mut args = node_args(kmsg, &dir.0.join("health.json"));
        args.push("--local".to_owned());
        if !extra.is_empty() {
            args.push(extra.to_owned());
        }
        let env = [("NVML_SIM_SCENARIO", scenario), ("NVML_SIM_TIME", "10")];
        let (got, out, err) = health(&args, &env);
        if got != code {
            failures.push(format!("{name}: exit {got}, want {code}\n{out}{err}"));
        }
        if let Err(e) = check_golden(name, &out) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// No check fires on the healthy 8xH100 training node, in JSON too.
#[test]
fn a_healthy_node_is_all_ok_in_json() {
    let dir = TempDir::new("health-json");
    let mut args = node_args("kmsg-clean", &dir.0.join("health.json"));
    args.extend(["--local".to_owned(), "--json".to_owned()]);
    let env = [
        ("NVML_SIM_SCENARIO", "8xh100-training"),
        ("NVML_SIM_TIME", "10"),
    ];
    let (code, out, err) = health(&args, &env);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["state"], "ok");
    let checks = v["checks"].as_array().unwrap();
    // 8 GPUs x 6 checks, GPUs present, SXid, 2 InfiniBand ports, hung
    // tasks, OOM kills.
    assert_eq!(checks.len(), 8 * 6 + 6, "{out}");
    for c in checks {
        assert_eq!(c["state"], "ok", "{c}");
        assert_eq!(c["action"], "NONE", "{c}");
    }
}

fn daemon(args: &[String], env: &[(&str, &str)]) -> Agent {
    let mut all: Vec<&str> = vec![
        "--collector.disable-defaults",
        "--collector.gpu",
        "--collector.gpu.interval=200ms",
        "--collector.health",
        "--collector.health.interval=200ms",
    ];
    all.extend(args.iter().map(String::as_str));
    Agent::start_env(&all, env)
}

/// XID 79 arrives as an NVML event while the daemon runs; it stays failed
/// across a restart of the agent (the state file), the command reads the
/// daemon's report, and `--clear` ends it in the running daemon.
#[test]
fn xid_79_is_sticky_across_a_restart_until_cleared() {
    let dir = TempDir::new("health-xid79");
    let args = node_args("kmsg-clean", &dir.0.join("health.json"));
    let xid = "accel_health_state{component=\"gpu3\",check=\"xid\",action=\"RESTART_BM\"} 2";
    let agent = daemon(&args, &[("NVML_SIM_SCENARIO", "health-xid79")]);
    agent.wait_for(xid, Duration::from_secs(30), |t| t.contains(xid));
    let text = agent.get("/metrics").text();
    assert!(text.contains("accel_health_node_state 2"), "{text}");
    let report: serde_json::Value =
        serde_json::from_str(&agent.get("/health").text()).expect("/health is JSON");
    assert_eq!(report["state"], "failed");
    let gpu3 = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["component"] == "gpu3" && c["check"] == "xid")
        .expect("gpu3 xid in /health")
        .clone();
    assert_eq!(gpu3["action"], "RESTART_BM");
    assert!(
        gpu3["reason"].as_str().unwrap().contains("XID 79"),
        "{gpu3}"
    );
    let landing = agent.get("/").text();
    assert!(
        landing.contains("<h2>Health</h2>") && landing.contains("RESTART_BM"),
        "{landing}"
    );
    // The command reads the running daemon.
    let (code, out, err) = health(&[format!("--web.listen-address={}", agent.addr)], &[]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(out.contains("source: the running daemon"), "{out}");
    assert!(out.contains("XID 79"), "{out}");
    drop(agent);

    // Restarted, with GPU 3 already gone (no XID event this time): the
    // state file keeps XID 79.
    let env = [
        ("NVML_SIM_SCENARIO", "health-xid79"),
        ("NVML_SIM_TIME", "10"),
    ];
    let agent = daemon(&args, &env);
    agent.wait_for(xid, Duration::from_secs(20), |t| {
        t.contains(xid) && t.contains("component=\"gpu3\",check=\"lost\"")
    });
    // Cleared by hand: the command edits the state file, the daemon reads it.
    let mut clear = args.clone();
    clear.extend(["--clear".to_owned(), "gpu3/xid".to_owned()]);
    let (code, out, err) = health(&clear, &env);
    assert_eq!(code, 2, "GPU 3 is still lost\n{out}{err}");
    assert!(
        err.contains("cleared 1 sticky state(s) (gpu3/xid)"),
        "{err}"
    );
    let ok = "accel_health_state{component=\"gpu3\",check=\"xid\",action=\"NONE\"} 0";
    agent.wait_for(ok, Duration::from_secs(20), |t| t.contains(ok));
}

/// XID 48, then a pending row remap: the XID needs a GPU reset (failed), the
/// pending remap says so too (degraded).
#[test]
fn xid_48_then_row_remapping_pending() {
    let dir = TempDir::new("health-xid48");
    let args = node_args("kmsg-clean", &dir.0.join("health.json"));
    let agent = daemon(&args, &[("NVML_SIM_SCENARIO", "health-xid48")]);
    let xid = "accel_health_state{component=\"gpu1\",check=\"xid\",action=\"RESET_GPU\"} 2";
    let remap = "accel_health_state{component=\"gpu1\",check=\"memory\",action=\"RESET_GPU\"} 1";
    let text = agent.wait_for("XID 48 and the remap", Duration::from_secs(30), |t| {
        t.contains(xid) && t.contains(remap)
    });
    assert!(
        text.contains("accel_health_state{component=\"gpu0\",check=\"xid\",action=\"NONE\"} 0"),
        "{text}"
    );
}

#[test]
fn usage_errors_exit_64_not_a_health_state() {
    let (code, _, err) = health(&["--clear".to_owned(), "xyz".to_owned()], &[]);
    assert_eq!(code, 64, "{err}");
    assert!(err.contains("--clear \"xyz\""), "{err}");
    let (code, _, err) = health(&["--no-such-flag".to_owned()], &[]);
    assert_eq!(code, 64, "{err}");
    let (code, _, err) = health(&["--collector.health.skip=clocks".to_owned()], &[]);
    assert_eq!(code, 64, "{err}");
    let out = Command::new(bin())
        .args(["help", "health"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("Exit codes: 0 healthy, 1 degraded, 2 failed"),
        "{help}"
    );
}
