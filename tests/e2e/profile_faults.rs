//! `accel-agent profile` on a sick node: faults (a GPU lost, an XID, a hung
//! NVML call), the verdicts `broken`, `degraded` and `no-accelerator`, a
//! GPU held by a busy process, and the HTML report at 1280 px.

use std::process::{Command, Stdio};

use crate::gpu::sim_lib;
use crate::profile::{evidence, profile};
use crate::util::{bin, fixtures, TempDir};

/// Profiles `scenario` for `seconds` with `--json` and `--html` (host paths
/// at the fixtures unless `real_proc`); returns stdout, the JSON document
/// and the page.
fn profile_all(
    scenario: &str,
    seconds: u32,
    real_proc: bool,
) -> (String, serde_json::Value, String) {
    let dir = TempDir::new("profile-faults");
    let json = dir.0.join("profile.json");
    let html = dir.0.join("report.html");
    let fx = fixtures();
    let mut cmd = Command::new(bin());
    cmd.arg("profile")
        .arg(format!("--nvml.library={}", sim_lib().display()))
        .arg(format!("--path.sysfs={}", fx.join("sys").display()));
    if !real_proc {
        cmd.arg(format!("--path.procfs={}", fx.join("proc").display()))
            .arg(format!(
                "--path.udev.data={}",
                fx.join("run/udev/data").display()
            ));
    }
    let out = cmd
        .args([
            "--no-collector.cloud",
            "--events.socket=",
            "--interval=100ms",
        ])
        .arg(format!("--duration={seconds}s"))
        .arg(format!("--json={}", json.display()))
        .arg(format!("--html={}", html.display()))
        .env("NVML_SIM_SCENARIO", scenario)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{scenario}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    (stdout, doc, std::fs::read_to_string(&html).unwrap())
}

fn faults(doc: &serde_json::Value) -> Vec<serde_json::Value> {
    doc["faults"].as_array().cloned().unwrap_or_default()
}

/// gpu-lost: GPU 3 falls off the bus at 3 s with XID 79. The verdict is
/// `broken` and names it, before the performance verdict; the faults are in
/// the text, the JSON and on the HTML time axis; GPU 3's statistics cover
/// only the samples it answered.
#[test]
fn lost_gpu_is_broken() {
    let (stdout, doc, page) = profile_all("gpu-lost", 5, false);
    assert_eq!(doc["verdict"], "broken", "{stdout}");
    assert_eq!(doc["performance_verdict"], "compute-bound", "{stdout}");
    assert!(stdout.contains("verdict: broken (on the samples that answered: compute-bound)"));
    let f = faults(&doc);
    let lost = f
        .iter()
        .find(|f| f["kind"] == "gpu_lost")
        .unwrap_or_else(|| panic!("no gpu_lost fault: {f:?}"));
    assert_eq!(lost["device"], "GPU 3");
    assert_eq!(lost["fatal"], true);
    let first = lost["first_seconds"].as_f64().unwrap();
    assert!((2.5..=4.0).contains(&first), "{lost}");
    let xid = f
        .iter()
        .find(|f| f["kind"] == "xid")
        .unwrap_or_else(|| panic!("no xid fault: {f:?}"));
    assert!(xid["detail"].as_str().unwrap().contains("XID 79"), "{xid}");
    assert_eq!(
        (&xid["device"], &xid["fatal"]),
        (&"GPU 3".into(), &true.into())
    );
    // Only GPU 3 is at fault.
    assert!(f.iter().all(|f| f["device"] == "GPU 3"), "{f:?}");
    // The text: a faults section and the evidence naming GPU 3.
    let section = stdout.split("faults:\n").nth(1).expect("a faults section");
    assert!(
        section.lines().next().unwrap().contains("GPU 3"),
        "{stdout}"
    );
    assert!(stdout.contains("FATAL: XID 79"), "{stdout}");
    assert!(
        evidence(&doc).starts_with("GPU 3: gpu lost from"),
        "{stdout}"
    );
    // Coverage: GPU 3 answered part of the samples, the others all.
    let gpus = doc["summary"]["gpus"].as_array().unwrap();
    let samples = doc["summary"]["samples"].as_u64().unwrap();
    let n3 = gpus[3]["samples"].as_u64().unwrap();
    assert!(n3 > 10 && n3 < samples - 10, "{n3} of {samples}");
    // A loaded machine may skip a tick or two.
    assert!(gpus[0]["samples"].as_u64().unwrap() + 5 >= samples);
    assert!(
        stdout.contains(&format!(
            "GPU 3: statistics over the {n3} of {samples} samples"
        )),
        "{stdout}"
    );
    assert!(stdout.contains(&format!("3    {n3}/{samples}")), "{stdout}");
    // The HTML: the faults table and a band per fault on every chart.
    assert!(page.contains("<table class=\"faults\">") && page.contains("XID 79"));
    assert!(
        page.matches("<rect class=\"fault\"").count() >= 2 * 3,
        "{page}"
    );
}

/// nvml-hang: a power call hangs from 2 s on. The gpu collector's samples
/// stop: `degraded`, a `stalled` fault on the gpu collector running to the
/// end, and the GPUs' statistics say how few samples they cover.
#[test]
fn hung_nvml_is_degraded() {
    let (stdout, doc, page) = profile_all("nvml-hang", 5, false);
    assert_eq!(doc["verdict"], "degraded", "{stdout}");
    assert_eq!(doc["performance_verdict"], "compute-bound", "{stdout}");
    let f = faults(&doc);
    let stall = f
        .iter()
        .find(|f| f["kind"] == "stalled")
        .unwrap_or_else(|| panic!("no stalled fault: {f:?}"));
    assert_eq!(stall["device"], "collector gpu");
    assert_eq!(stall["fatal"], false);
    let (a, b) = (
        stall["first_seconds"].as_f64().unwrap(),
        stall["last_seconds"].as_f64().unwrap(),
    );
    assert!((1.5..=2.5).contains(&a) && b >= 4.5, "{stall}");
    assert!(stall["detail"]
        .as_str()
        .unwrap()
        .contains("still running at the end"));
    let samples = doc["summary"]["samples"].as_u64().unwrap();
    for g in doc["summary"]["gpus"].as_array().unwrap() {
        let n = g["samples"].as_u64().unwrap();
        assert!(n > 10 && n * 2 < samples, "{n} of {samples}");
    }
    assert!(
        stdout.contains("samples stalled  collector gpu"),
        "{stdout}"
    );
    assert!(
        stdout.contains("GPUs 0, 1, 2, 3, 4, 5, 6, 7: statistics over the"),
        "{stdout}"
    );
    assert!(page.contains("<rect class=\"fault\""));
}

/// No NVML library: `no-accelerator`, not `idle`.
#[test]
fn no_nvml_is_no_accelerator() {
    let fx = fixtures();
    let dir = TempDir::new("profile-nogpu");
    let json = dir.0.join("p.json");
    let out = Command::new(bin())
        .arg("profile")
        .arg("--nvml.library=/nonexistent/libnvidia-ml.so.1")
        .arg(format!("--path.procfs={}", fx.join("proc").display()))
        .arg(format!("--path.sysfs={}", fx.join("sys").display()))
        .args(["--no-collector.cloud", "--events.socket=", "--duration=1s"])
        .arg(format!("--json={}", json.display()))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(doc["verdict"], "no-accelerator", "{stdout}");
    assert!(faults(&doc).is_empty(), "{doc}");
    assert!(stdout.contains("verdict: no-accelerator\n"), "{stdout}");
    assert!(!stdout.contains("faults:"), "{stdout}");
}

/// A process holding an idle simulated GPU while it burns a CPU: the GPU
/// waits on its own host process (host-CPU-bound), it is not idle. The
/// simulated NVML reports the real child as the GPU's process, so the
/// agent follows it from the real /proc.
#[test]
fn idle_gpu_held_by_a_busy_process_is_host_cpu_bound() {
    let dir = TempDir::new("profile-holder");
    let mut burner = crate::util::cpu_burner(30);
    let scenario = dir.0.join("holder.toml");
    std::fs::write(
        &scenario,
        format!(
            "[[gpus]]\ncount = 1\nmodel = \"h100\"\nutilization = 2\nsm_active = 1\n\
             [[gpus.processes]]\npid = {}\nused_memory_mib = 1000\n",
            burner.id()
        ),
    )
    .unwrap();
    let (stdout, doc, _) = profile_all(scenario.to_str().unwrap(), 3, true);
    let _ = burner.kill();
    let _ = burner.wait();
    assert_eq!(doc["verdict"], "host-cpu-bound", "{stdout}");
    let ev = evidence(&doc);
    assert!(
        ev.contains(&format!("process {} (python3) holds a GPU", burner.id()))
            && ev.contains("wait on their own host process"),
        "{ev}"
    );
}

/// The report of a sick node (gpu-lost, eight GPUs) in a 1280 px window:
/// no horizontal scrolling, no block (the summary, the faults table)
/// clipped behind a scrollbar, the charts drawn full width; the test
/// strings are hidden, the verdict and faults are cards at the top.
#[test]
fn html_report_fits_1280_px() {
    let chromium = crate::util::require("chromium");
    let dir = TempDir::new("profile-fit");
    let html = dir.0.join("report.html");
    let out = profile(
        "gpu-lost",
        &[
            "--duration=5s",
            "--interval=100ms",
            &format!("--html={}", html.display()),
        ],
    );
    assert!(out.status.success());
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("id=\"verdict\">broken<"), "{page}");
    assert!(page.contains("<div class=\"k\">faults</div><div class=\"v\">2 (2 fatal)</div>"));
    assert!(page.contains("<p id=\"drawn\" hidden>") && page.contains("<p id=\"fit\" hidden>"));
    let dom = Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--window-size=1280,900",
            "--dump-dom",
        ])
        .arg(format!("file://{}", html.display()))
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(dom.status.success());
    let dom = String::from_utf8_lossy(&dom.stdout);
    let fit = dom
        .split("Fit: page ")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .unwrap_or_else(|| panic!("the report's script did not run:\n{dom}"));
    // "W of V px, N clipped blocks, widest chart C px."
    let nums: Vec<f64> = fit
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let [scroll, client, clipped, widest] = nums[..] else {
        panic!("{fit}")
    };
    assert!(client > 1000.0 && client <= 1280.0, "{fit}");
    assert!(scroll <= client, "horizontal scrolling: {fit}");
    assert_eq!(clipped, 0.0, "{fit}");
    assert!(widest >= client - 80.0, "charts not full width: {fit}");
}
