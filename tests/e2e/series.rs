//! Series per node (issue 25): the lean default of the GPU collector and the
//! detail one flag away. NVLink is summed per GPU by default, with per-link
//! series only for links that are down or count errors; XIDs are exported
//! as they are seen, with a per-GPU total from the start.

use std::time::Duration;

use crate::gpu::sim_agent;
use crate::util::fixtures;

/// Most series the GPU collector may export per GPU with default flags
/// (8x H100 training: 1,784 before issue 25, 126 of them per GPU NVLink
/// links and 16 XIDs at 0; 720 with the sparse NVLink and XIDs, 552 with
/// the lean defaults of docs/metrics.md "Lean by default", 468 once the
/// constants and the unread families waited for `--collector.gpu.detail`).
/// The host collectors' part depends on the machine: docs/fleet.md has the
/// whole node's figures.
const BUDGET_PER_GPU: usize = 60;

/// Most series of the whole 8x H100 node on the fixture host, every
/// default collector included. The measure, the same node on this
/// repository's VM, is 795 of at most 800 (docs/fleet.md); the fixture
/// host has more to report (4 InfiniBand ports, hwmon and EDAC chips,
/// 5 disks, 6 interfaces): this test's scrape counted 1,064 after step 3
/// of issue 25 (1,011 when another agent holds the default event socket,
/// so that this one runs without the goodput collector; 1,281 before the
/// step).
const BUDGET_FIXTURE_NODE: usize = 1_100;

fn series<'a>(text: &'a str, family: &str) -> Vec<&'a str> {
    let prefix = format!("{family}{{");
    text.lines().filter(|l| l.starts_with(&prefix)).collect()
}

/// The value of the first series whose line starts with `prefix`.
fn value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
}

fn sum(text: &str, family: &str, labels: &str) -> f64 {
    series(text, family)
        .iter()
        .filter(|l| l.contains(labels))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// The agent with every default collector on the fixture host and the
/// simulated `scenario`, scraped once the GPU collector has sampled twice
/// (GPM needs two samples).
fn scrape_on_fixtures(scenario: &str, extra: &[&str]) -> String {
    let fx = fixtures();
    let procfs = format!("--path.procfs={}", fx.join("proc").display());
    let sysfs = format!("--path.sysfs={}", fx.join("sys").display());
    let udev = format!("--path.udev.data={}", fx.join("run/udev/data").display());
    let mut args = vec![
        procfs.as_str(),
        sysfs.as_str(),
        udev.as_str(),
        "--no-collector.cloud",
    ];
    args.extend_from_slice(extra);
    let agent = sim_agent(scenario, "200ms", &args);
    agent.wait_ready();
    agent.wait_for("GPM metrics", Duration::from_secs(10), |t| {
        t.contains("accel_gpu_sm_active_ratio{")
    })
}

/// The agent with only the GPU collector on the simulated node `toml`
/// (written to a temporary directory, kept alive with the agent), ready.
fn gpu_only(tag: &str, toml: &str) -> (crate::util::TempDir, crate::util::Agent) {
    let dir = crate::util::TempDir::new(tag);
    let scenario = dir.0.join(format!("{tag}.toml"));
    std::fs::write(&scenario, toml).unwrap();
    let agent = sim_agent(
        scenario.to_str().unwrap(),
        "200ms",
        &["--collector.disable-defaults", "--collector.gpu"],
    );
    agent.wait_ready();
    (dir, agent)
}

#[test]
fn an_h100_training_node_fits_the_budget_and_keeps_its_sums() {
    let text = scrape_on_fixtures("8xh100-training", &[]);
    let all = text.lines().filter(|l| !l.starts_with('#')).count();
    // The GPU collector's series (accel_gpu_peak_flops is the goodput
    // collector's, and comes once that collector has read the GPUs).
    let gpu = text
        .lines()
        .filter(|l| {
            let name = l.split(['{', ' ']).next().unwrap_or("");
            accel_collectors::gpu::FAMILIES
                .iter()
                .any(|f| f.name == name)
        })
        .count();
    assert!(
        gpu <= 8 * BUDGET_PER_GPU,
        "GPU collector {gpu} series (all collectors {all}), budget {}",
        8 * BUDGET_PER_GPU
    );
    assert!(
        all <= BUDGET_FIXTURE_NODE,
        "the node exports {all} series, budget {BUDGET_FIXTURE_NODE}"
    );
    // Healthy links: no per-link series, the per-GPU ones for every GPU.
    for family in [
        "accel_gpu_nvlink_up",
        "accel_gpu_nvlink_link_errors_total",
        "accel_gpu_nvlink_link_transmit_bytes_total",
        "accel_gpu_nvlink_link_receive_bytes_total",
        "accel_gpu_xid_errors_total",
    ] {
        assert!(series(&text, family).is_empty(), "{family} exported");
    }
    for family in [
        "accel_gpu_nvlink_links",
        "accel_gpu_nvlink_links_up",
        "accel_gpu_nvlink_transmit_bytes_total",
        "accel_gpu_nvlink_receive_bytes_total",
        "accel_gpu_xid_events_total",
    ] {
        assert_eq!(series(&text, family).len(), 8, "{family}");
    }
    assert_eq!(sum(&text, "accel_gpu_nvlink_links", ""), 8.0 * 18.0);
    assert_eq!(sum(&text, "accel_gpu_nvlink_links_up", ""), 8.0 * 18.0);
    assert_eq!(series(&text, "accel_gpu_nvlink_errors_total").len(), 8 * 4);
    assert_eq!(sum(&text, "accel_gpu_xid_events_total", ""), 0.0);
    // ~8 GB/s per link and direction in the scenario: 18 links.
    let tx = value(&text, "accel_gpu_nvlink_transmit_bytes_total{gpu=\"0\"").unwrap();
    assert!(tx > 0.0, "{tx}");
}

#[test]
fn the_per_link_flag_exports_every_link_and_the_sums_agree() {
    let text = scrape_on_fixtures("8xh100-training", &["--collector.gpu.nvlink.per-link"]);
    assert_eq!(series(&text, "accel_gpu_nvlink_up").len(), 8 * 18);
    assert_eq!(
        series(&text, "accel_gpu_nvlink_link_errors_total").len(),
        8 * 18 * 4
    );
    for dir in ["transmit", "receive"] {
        let per_link = format!("accel_gpu_nvlink_link_{dir}_bytes_total");
        let per_gpu = format!("accel_gpu_nvlink_{dir}_bytes_total");
        assert_eq!(series(&text, &per_link).len(), 8 * 18);
        // One sample: the per-GPU sum is the sum of the links' readings.
        for g in 0..8 {
            let gpu = format!("{{gpu=\"{g}\",");
            let links = sum(&text, &per_link, &gpu);
            let total = sum(&text, &per_gpu, &gpu);
            assert!(
                total > 0.0 && (links - total).abs() <= total * 1e-9,
                "GPU {g} {dir}: links {links}, GPU {total}"
            );
        }
    }
    // The per-GPU families are there too.
    assert_eq!(series(&text, "accel_gpu_nvlink_links_up").len(), 8);
}

#[test]
fn a_link_down_or_counting_errors_is_shown_by_default() {
    // 4xa100: GPU 3's link 11 is down; the other links are healthy.
    let agent = sim_agent(
        "4xa100",
        "200ms",
        &["--collector.disable-defaults", "--collector.gpu"],
    );
    agent.wait_ready();
    let text = agent.wait_for("NVLink", Duration::from_secs(10), |t| {
        t.contains("accel_gpu_nvlink_links_up{")
    });
    let up = series(&text, "accel_gpu_nvlink_up");
    assert_eq!(up.len(), 1, "{up:?}");
    assert!(
        up[0].starts_with("accel_gpu_nvlink_up{gpu=\"3\",") && up[0].ends_with(",link=\"11\"} 0"),
        "{}",
        up[0]
    );
    assert_eq!(series(&text, "accel_gpu_nvlink_link_errors_total").len(), 4);
    assert_eq!(
        series(&text, "accel_gpu_nvlink_link_transmit_bytes_total").len(),
        1
    );
    assert_eq!(value(&text, "accel_gpu_nvlink_links{gpu=\"3\""), Some(12.0));
    assert_eq!(
        value(&text, "accel_gpu_nvlink_links_up{gpu=\"3\""),
        Some(11.0)
    );
    assert_eq!(
        value(&text, "accel_gpu_nvlink_links_up{gpu=\"0\""),
        Some(12.0)
    );

    // Replay errors on the second GPU's links from t = 1 s: its links are
    // shown once they count, the first GPU's are not.
    let (_dir, agent) = gpu_only(
        "nvlink-errors",
        "driver_version = \"550.54.15\"\n\
         [[gpus]]\ncount = 1\nmodel = \"h100-sxm5-80gb\"\nutilization = 90\n\
         [[gpus]]\ncount = 1\nmodel = \"h100-sxm5-80gb\"\nutilization = 90\n\
         nvlink_replay_errors = { kind = \"steps\", points = [[0, 0], [1, 3]] }\n",
    );
    let text = agent.wait_for("per-link errors", Duration::from_secs(10), |t| {
        t.contains("accel_gpu_nvlink_link_errors_total{")
    });
    let errors = series(&text, "accel_gpu_nvlink_link_errors_total");
    assert_eq!(errors.len(), 18 * 4, "{errors:?}");
    assert!(errors
        .iter()
        .all(|l| l.starts_with("accel_gpu_nvlink_link_errors_total{gpu=\"1\",")));
    assert_eq!(series(&text, "accel_gpu_nvlink_up").len(), 18);
    assert_eq!(
        sum(&text, "accel_gpu_nvlink_errors_total", "gpu=\"1\","),
        18.0 * 3.0
    );
    assert_eq!(
        sum(&text, "accel_gpu_nvlink_errors_total", "gpu=\"0\","),
        0.0
    );
}

/// The families `--collector.gpu.detail` adds (and their NVML calls).
const DETAIL: [&str; 12] = [
    "accel_gpu_performance_state",
    "accel_gpu_memory_reserved_bytes",
    "accel_gpu_ecc_enabled",
    "accel_gpu_power_default_limit_watts",
    "accel_gpu_bar1_used_bytes",
    "accel_gpu_bar1_total_bytes",
    "accel_gpu_encoder_utilization_ratio",
    "accel_gpu_decoder_utilization_ratio",
    "accel_gpu_gpm_pcie_transmit_bytes_per_second",
    "accel_gpu_gpm_nvlink_receive_bytes_per_second",
    "accel_gpu_pcie_transmit_bytes_per_second",
    "accel_gpu_pcie_receive_bytes_per_second",
];

#[test]
fn lean_by_default_and_the_detail_one_flag_away() {
    let text = scrape_on_fixtures("8xh100-training", &[]);
    for family in DETAIL {
        assert!(series(&text, family).is_empty(), "{family} exported");
    }
    // SM and memory clocks only, and the SM clock's maximum.
    let clocks = series(&text, "accel_gpu_clock_hertz");
    assert_eq!(clocks.len(), 8 * 2, "{clocks:?}");
    assert!(clocks
        .iter()
        .all(|l| l.contains("clock=\"sm\"") || l.contains("clock=\"memory\"")));
    let max = series(&text, "accel_gpu_clock_max_hertz");
    assert_eq!(max.len(), 8, "{max:?}");
    assert!(max.iter().all(|l| l.contains("clock=\"sm\"")));
    // ECC: the lifetime count of uncorrected errors (a panel reads it), not
    // of corrected ones; both volatile counts.
    let ecc = series(&text, "accel_gpu_ecc_errors_total");
    assert_eq!(ecc.len(), 8 * 3, "{ecc:?}");
    assert!(!ecc
        .iter()
        .any(|l| l.contains("type=\"corrected\",counter=\"aggregate\"")));
    // Throttle reasons only while in force; pending modes only while a
    // change waits (none in the scenario).
    let reasons = series(&text, "accel_gpu_throttle_reason");
    assert!(reasons.len() < 8 * 9, "{reasons:?}");
    assert!(reasons.iter().all(|l| l.ends_with(" 1")), "{reasons:?}");
    for family in [
        "accel_gpu_mig_mode_pending",
        "accel_gpu_ecc_pending_enabled",
    ] {
        assert!(series(&text, family).is_empty(), "{family} exported");
    }
    // The agent's errors: one total per collector from 0, kinds as counted.
    let totals = series(&text, "accel_collector_errors_total");
    assert!(!totals.is_empty() && totals.iter().all(|l| !l.contains("kind=")));
    assert!(
        series(&text, "accel_collector_errors_by_kind_total").is_empty(),
        "{text}"
    );

    // The PCIe rates need two counter reads.
    let text = scrape_on_fixtures(
        "8xh100-training",
        &[
            "--collector.gpu.detail",
            "--collector.gpu.counter-interval=200ms",
        ],
    );
    for family in DETAIL {
        assert_eq!(series(&text, family).len(), 8, "{family}");
    }
    for family in ["accel_gpu_clock_hertz", "accel_gpu_clock_max_hertz"] {
        assert_eq!(series(&text, family).len(), 8 * 4, "{family}");
    }
    assert_eq!(series(&text, "accel_gpu_ecc_errors_total").len(), 8 * 4);
}

#[test]
fn a_pending_mode_change_is_shown() {
    // GPU 0: MIG goes on at the next reset; GPU 1: ECC goes off at the next
    // reboot. Only those two pending series are exported.
    let (_dir, agent) = gpu_only(
        "pending",
        "[[gpus]]\nmodel = \"h100-sxm5-80gb\"\nmig_pending = true\n\
         [[gpus]]\nmodel = \"h100-sxm5-80gb\"\necc_pending = false\n",
    );
    let text = agent.wait_for("GPU series", Duration::from_secs(10), |t| {
        t.contains("accel_gpu_ecc_pending_enabled{gpu=\"1\"")
    });
    let mig = series(&text, "accel_gpu_mig_mode_pending");
    assert_eq!(mig.len(), 1, "{mig:?}");
    assert!(mig[0].starts_with("accel_gpu_mig_mode_pending{gpu=\"0\",") && mig[0].ends_with(" 1"));
    assert_eq!(value(&text, "accel_gpu_mig_mode{gpu=\"0\""), Some(0.0));
    let ecc = series(&text, "accel_gpu_ecc_pending_enabled");
    assert_eq!(ecc.len(), 1, "{ecc:?}");
    assert!(
        ecc[0].starts_with("accel_gpu_ecc_pending_enabled{gpu=\"1\",") && ecc[0].ends_with(" 0")
    );
    // ECC is on now: its error counts are exported (the mode itself only
    // with --collector.gpu.detail).
    assert!(value(&text, "accel_gpu_ecc_errors_total{gpu=\"1\"").is_some());
    assert!(series(&text, "accel_gpu_ecc_enabled").is_empty());
}
