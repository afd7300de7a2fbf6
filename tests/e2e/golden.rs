//! The whole binary on the fixture tree: its scrape against a golden file,
//! and promtool's lint on it.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::util::{fixtures, require, root, Agent};

/// The agent on the fixture tree, every host collector, one sample each.
pub fn fixture_agent(extra: &[&str]) -> Agent {
    let fx = fixtures();
    let mut args = vec![
        format!("--path.procfs={}", fx.join("proc").display()),
        format!("--path.sysfs={}", fx.join("sys").display()),
        format!("--path.udev.data={}", fx.join("run/udev/data").display()),
        "--collector.network.device-exclude=^$".to_owned(),
        format!("--collector.identity.rootfs={}", fx.display()),
        // Not a Kubernetes node, even where the tests run on one.
        format!(
            "--collector.kubernetes.socket={}",
            fx.join("run/no-kubelet.sock").display()
        ),
        // Health: a clean kernel log file, no state file, and no clock
        // check (this machine's clock may not be synchronised).
        format!(
            "--collector.health.kmsg={}",
            fx.join("health/kmsg-clean").display()
        ),
        "--collector.health.state-file=".to_owned(),
        "--collector.health.skip=clock".to_owned(),
    ];
    for c in [
        "cpu",
        "memory",
        "pressure",
        "disk",
        "network",
        "infiniband",
        "process",
        "kubernetes",
        "time",
    ] {
        args.push(format!("--collector.{c}.interval=1h"));
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Agent::start(&args)
}

/// Replaces what differs from run to run: sample durations, timestamps and
/// the git revision, this machine's uname, the live clock (`accel_time_seconds`, the time zone,
/// `accel_timex_*`), and the values of `volatile` families.
pub fn normalize(text: &str, volatile: &[&str]) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let family = line.split(['{', ' ']).next().unwrap_or_default();
        let line = if line.starts_with("accel_collector_duration_seconds{")
            || line.starts_with("accel_collector_last_success_timestamp_seconds{")
            || volatile.contains(&family)
            || family == "accel_time_seconds"
            || family.starts_with("accel_timex_")
            || family.starts_with("process_")
        {
            let (series, _) = line.rsplit_once(' ').unwrap();
            format!("{series} <volatile>")
        } else if family == "accel_uname_info" {
            "accel_uname_info{<this machine's uname>} 1".to_owned()
        } else if family == "accel_time_zone_offset_seconds" {
            "accel_time_zone_offset_seconds{<local time zone>} <volatile>".to_owned()
        } else if line.starts_with("accel_build_info{") {
            "accel_build_info{<version and revision>} 1".to_owned()
        } else {
            line.to_owned()
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[test]
fn scrape_matches_golden() {
    let agent = fixture_agent(&[]);
    let text = agent.get_ready("/metrics").text();
    let got = normalize(&text, &[]);
    check_golden("e2e", &got);
}

/// Compares `got` with tests/golden/<name>.prom, or writes it there when
/// UPDATE_GOLDEN is set; on a difference the actual output is written
/// beside the golden as .prom.actual.
pub fn check_golden(name: &str, got: &str) {
    let path = root().join(format!("tests/golden/{name}.prom"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 makes it)", path.display()));
    if want != got {
        let actual = path.with_extension("prom.actual");
        std::fs::write(&actual, got).unwrap();
        panic!(
            "scrape differs from {}; actual output in {} (diff them; UPDATE_GOLDEN=1 accepts it)",
            path.display(),
            actual.display()
        );
    }
}

/// Runs `promtool check metrics` on `text`; returns its combined output.
pub fn promtool_check(text: &str) -> (bool, String) {
    let promtool = require("promtool");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let msg = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), msg)
}

#[test]
fn promtool_lints_the_scrape_clean() {
    let agent = fixture_agent(&[]);
    let text = agent.get_ready("/metrics").text();
    let (ok, msg) = promtool_check(&text);
    assert!(
        ok && msg.trim().is_empty(),
        "promtool check metrics:\n{msg}"
    );
    // And on this machine's real /proc and /sys.
    let agent = Agent::start(&[]);
    let text = agent.get_ready("/metrics").text();
    let (ok, msg) = promtool_check(&text);
    assert!(
        ok && msg.trim().is_empty(),
        "promtool check metrics:\n{msg}"
    );
}

#[test]
fn promtool_catches_a_bad_exposition() {
    // The lint is not vacuous: a counter without _total and without HELP fails.
    let (ok, msg) = promtool_check("# TYPE accel_x counter\naccel_x 1\n");
    assert!(!ok || !msg.trim().is_empty(), "{msg}");
}
