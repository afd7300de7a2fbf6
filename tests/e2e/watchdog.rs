//! The sampler watchdog: a GPU sample hung in an NVML call is logged once,
//! while it hangs, and its recovery once, with the simulated NVML's hang.

use std::time::{Duration, Instant};

use crate::gpu::sim_lib;
use crate::util::{value, Agent, TempDir};

/// The log lines so far that contain every one of `parts`.
fn lines_with(agent: &Agent, parts: &[&str]) -> Vec<String> {
    agent
        .log_lines()
        .into_iter()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .collect()
}

fn wait_line(agent: &Agent, parts: &[&str], within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        if let Some(l) = lines_with(agent, parts).into_iter().next() {
            return l;
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {parts:?}:\n{}",
            agent.log_lines().join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_hung_gpu_sample_is_logged_once_while_it_hangs_and_once_when_it_recovers() {
    // nvml-hang, shortened: nvmlDeviceGetPowerUsage hangs from t = 2 s to 8 s.
    let dir = TempDir::new("watchdog");
    let scenario = dir.0.join("short-hang.toml");
    std::fs::write(
        &scenario,
        "[[gpus]]\ncount = 2\nmodel = \"h100-sxm5-80gb\"\n\n[[faults]]\nhang = [{ call = \"nvmlDeviceGetPowerUsage\", at = 2, seconds = 6 }]\n",
    )
    .unwrap();
    let lib = format!("--nvml.library={}", sim_lib().display());
    let agent = Agent::start_env(
        &[
            &lib,
            "--collector.disable-defaults",
            "--collector.gpu",
            "--collector.gpu.interval=200ms",
        ],
        &[("NVML_SIM_SCENARIO", scenario.to_str().unwrap())],
    );
    agent.wait_ready();
    let warn = ["level=warn", "collector=gpu", "past its deadline"];
    let info = ["level=info", "collector=gpu", "recovered"];
    // The deadline is 2 s: the warning comes about 4 s in, while the call
    // still hangs (it returns at 8 s): the collector is stale right then.
    let line = wait_line(&agent, &warn, Duration::from_secs(10));
    assert!(line.contains("thread=sample-gpu"), "{line}");
    // The collector said which GPU and which NVML call it was in (GPU 0
    // or 1: whichever entered the call first once the hang began).
    assert!(
        line.contains("doing=\"GPU ") && line.contains(": power (nvmlDeviceGetPowerUsage"),
        "{line}"
    );
    // The simulated call sleeps: the kernel says so.
    assert!(line.contains("nanosleep"), "{line}");
    let text = agent.get("/metrics").text();
    assert_eq!(
        value(&text, "accel_collector_stale{collector=\"gpu\"}"),
        Some(1.0),
        "warned, but the sample is not hung any more:\n{text}"
    );
    assert!(lines_with(&agent, &info).is_empty());
    // Still hung a second later: no second warning (once per episode).
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(lines_with(&agent, &warn).len(), 1);
    // Then it returns and the next sample is in time: one info line.
    wait_line(&agent, &info, Duration::from_secs(12));
    agent.wait_for("the GPU collector current", Duration::from_secs(5), |t| {
        value(t, "accel_collector_stale{collector=\"gpu\"}").is_none()
            && value(t, "accel_collector_success{collector=\"gpu\"}") == Some(1.0)
    });
    std::thread::sleep(Duration::from_secs(1));
    let log = agent.log_lines().join("\n");
    assert_eq!(lines_with(&agent, &warn).len(), 1, "{log}");
    assert_eq!(lines_with(&agent, &info).len(), 1, "{log}");
}
