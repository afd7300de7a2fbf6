//! What the GPU collector asks of NVML, counted by the simulator
//! (`NVML_SIM_CALL_COUNTS`): one field-values call per GPU per sample, the
//! expensive calls (energy, per-process utilisation, NVLink counters) at
//! their own cadences, and on Blackwell the new fields instead of the old
//! calls. The CPU these calls cost is measured by `bench/gpu-cpu`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::gpu::sim_lib;
use crate::util::{value, Agent, TempDir};

/// What `run` returns: the call counts, the samples counted by the scrapes
/// just before and just after the counts were read, the GPUs, the seconds
/// since the agent started, and the agent's scrapes.
type Run = (HashMap<String, f64>, (f64, f64), f64, f64, Vec<String>);

/// The simulator's call counts (`function count` lines).
fn counts(path: &std::path::Path) -> HashMap<String, f64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(k, v)| (k.to_owned(), v.parse().unwrap()))
        .collect()
}

/// The value of GPU `gpu`'s series of `family` in a scrape (the first, for
/// a family with more labels than `gpu` and `uuid`).
fn of_gpu(text: &str, family: &str, gpu: u32) -> Option<f64> {
    let prefix = format!("{family}{{gpu=\"{gpu}\"");
    text.lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
}

/// Runs `scenario` at 100 ms with `extra` flags until the collector has
/// made `samples` samples; returns the call counts, the samples counted
/// by the scrapes just before and just after the counts were read, the GPUs,
/// the seconds since the agent started, and the agent's scrapes.
fn run(scenario: &str, extra: &[&str], samples: f64) -> Run {
    let dir = TempDir::new("gpucpu");
    let file = dir.0.join("calls");
    let lib = format!("--nvml.library={}", sim_lib().display());
    let mut args = vec![
        lib.as_str(),
        "--collector.disable-defaults",
        "--collector.gpu",
        "--collector.gpu.interval=100ms",
    ];
    args.extend_from_slice(extra);
    let started = Instant::now();
    let agent = Agent::start_env(
        &args,
        &[
            ("NVML_SIM_SCENARIO", scenario),
            ("NVML_SIM_CALL_COUNTS", file.to_str().unwrap()),
        ],
    );
    agent.wait_ready();
    let mut scrapes = Vec::new();
    let samples_of =
        |t: &str| value(t, "accel_collector_samples_total{collector=\"gpu\"}").unwrap_or(0.0);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = agent.get("/metrics").text();
        let n = samples_of(&text);
        scrapes.push(text);
        if n >= samples {
            break;
        }
        assert!(Instant::now() < deadline, "only {n} samples in 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The simulator writes the counts file when it is missing (it looks
    // every 200 ms while calls are made; the agent is killed, not shut
    // down): remove it after the last scrape, read it once it is back,
    // then scrape again, so that the calls counted lie between the two
    // scrapes' samples.
    let before = samples_of(scrapes.last().unwrap());
    let _ = std::fs::remove_file(&file);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !file.exists() {
        assert!(
            Instant::now() < deadline,
            "no counts file 10 s after asking"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let c = counts(&file);
    let last = agent.get("/metrics").text();
    let after = samples_of(&last);
    scrapes.push(last.clone());
    let gpus = last
        .lines()
        .filter(|l| l.starts_with("accel_gpu_up{"))
        .count() as f64;
    let elapsed = started.elapsed().as_secs_f64();
    drop(agent);
    assert!(!c.is_empty(), "no call counts written");
    (c, (before, after), gpus, elapsed, scrapes)
}

#[test]
fn the_expensive_calls_keep_their_cadence() {
    let (c, (samples, after), gpus, elapsed, scrapes) = run(
        "8xh100-training",
        &[
            "--collector.gpu.energy-interval=1s",
            "--collector.gpu.counter-interval=1s",
            "--collector.gpu.process-utilization-interval=1s",
        ],
        25.0,
    );
    let per_gpu = |k: &str| c.get(k).copied().unwrap_or(0.0) / gpus;
    // Samples counted may trail the calls made by the sample in flight.
    let most = after + 2.0;
    assert_eq!(gpus, 8.0);
    // The slow readings at most once a second each (the agent ran for
    // `elapsed` seconds), and at least once.
    let reads = elapsed.ceil() + 1.0;
    // One field-values call per GPU per counter read, whatever it reads
    // (the memory temperature is read with the counters): at most one per
    // sample, and none in the samples between reads.
    let fv = per_gpu("nvmlDeviceGetFieldValues");
    assert!(
        fv >= 1.0 && fv <= reads.min(most),
        "{fv} field-value calls per GPU in {samples} to {after} samples, {reads} counter reads"
    );
    let energy = per_gpu("nvmlDeviceGetTotalEnergyConsumption");
    assert!(
        (1.0..=reads).contains(&energy),
        "{energy} energy reads per GPU in {elapsed:.1} s"
    );
    // One nvmlDeviceGetProcessUtilization call per read (nvml-wrapper's
    // would make two: the count, then the samples).
    let pu = per_gpu("nvmlDeviceGetProcessUtilization");
    assert!(
        (1.0..=reads).contains(&pu),
        "{pu} per-process utilisation calls per GPU"
    );
    // 18 links x 4 error counters per read, plus the probe.
    let errs = per_gpu("nvmlDeviceGetNvLinkErrorCounter");
    assert!(
        (72.0..=72.0 * reads + 1.0).contains(&errs),
        "{errs} NVLink error counter calls per GPU"
    );
    // At the first counter read the memory temperature, 36 NVLink fields
    // (18 links), the 2 aggregates, 7 violation fields and the 2 PCIe byte
    // counters; after it, the data moving, the memory temperature, the 2
    // aggregates, 4 violation fields and the 2 PCIe counters (every link
    // again would be 43).
    let fields = per_gpu("nvmlDeviceGetFieldValues (fields)");
    assert!(
        fields <= 48.0 + 9.0 * (reads - 1.0),
        "{fields} fields per GPU in {reads} counter reads"
    );
    // Read with the counters, the memory temperature is still in every
    // scrape once the GPUs are up: the last reading, exported again.
    let up: Vec<&String> = scrapes
        .iter()
        .filter(|t| t.contains("accel_gpu_up{gpu=\"0\""))
        .collect();
    assert!(up.len() >= 10, "{} scrapes with the GPUs", up.len());
    for t in &up {
        assert!(
            t.contains("accel_gpu_temperature_celsius{gpu=\"0\",")
                && t.lines().any(
                    |l| l.starts_with("accel_gpu_temperature_celsius{gpu=\"0\",")
                        && l.contains("sensor=\"memory\"")
                ),
            "a scrape without GPU 0's memory temperature"
        );
    }
    assert_eq!(
        c.get("nvmlDeviceGetViolationStatus"),
        None,
        "the fields answer"
    );

    // The energy counter never decreases and grows as the power gauge says.
    let energy: Vec<f64> = scrapes
        .iter()
        .filter_map(|t| of_gpu(t, "accel_gpu_energy_joules_total", 0))
        .collect();
    assert!(energy.len() >= 10, "{} scrapes with energy", energy.len());
    assert!(
        energy.windows(2).all(|w| w[1] >= w[0]),
        "energy went back: {energy:?}"
    );
    assert!(
        energy.last() > energy.first(),
        "energy did not grow: {energy:?}"
    );
}

#[test]
fn per_process_utilisation_only_while_a_process_holds_the_gpu() {
    // idle-allocated: GPUs 6 and 7 hold no process.
    let (c, _, gpus, elapsed, _) = run("idle-allocated", &[], 5.0);
    assert_eq!(gpus, 8.0);
    // At the default counter cadence (10 s) a run this short makes one
    // field-values call per GPU: the first sample's, the counters and the
    // memory temperature.
    if elapsed < 10.0 {
        let fv = c.get("nvmlDeviceGetFieldValues").copied().unwrap_or(0.0);
        assert_eq!(fv, gpus, "field-value calls in {elapsed:.1} s");
    }
    // Default cadence 10 s: one read (one call) per held GPU in this run.
    let pu = c
        .get("nvmlDeviceGetProcessUtilization")
        .copied()
        .unwrap_or(0.0);
    assert_eq!(pu, 6.0, "calls for 6 held GPUs");
}

#[test]
fn no_field_values_between_counter_reads() {
    // A driver with the recovery action field (565+) and the memory
    // temperature: both are read with the counters, so at the default
    // counter cadence (10 s) a short run makes one field-values call per
    // GPU, the first sample's, and the health check still sees the action.
    let (c, (_, samples), gpus, elapsed, scrapes) = run(
        "health-nvswitch",
        &["--collector.health", "--collector.health.interval=100ms"],
        8.0,
    );
    assert!(gpus >= 2.0 && samples >= 8.0);
    if elapsed < 10.0 {
        let fv = c.get("nvmlDeviceGetFieldValues").copied().unwrap_or(0.0);
        assert_eq!(fv, gpus, "field-value calls in {elapsed:.1} s");
    }
    let last = scrapes.last().unwrap();
    assert!(
        last.lines().any(|l| l.starts_with("accel_health_state{")
            && l.contains("check=\"recovery\"")
            && l.contains("RESTART_BM")),
        "the recovery action read at the first sample stands in the last scrape"
    );
}

#[test]
fn blackwell_reads_the_new_fields_not_the_old_calls() {
    let (c, (_, samples), gpus, _, scrapes) = run("b200-training", &[], 5.0);
    assert_eq!(gpus, 8.0);
    // The old error counter call is tried once per GPU (NOT_SUPPORTED),
    // the deprecated violation call never: the fields answer.
    let errs = c
        .get("nvmlDeviceGetNvLinkErrorCounter")
        .copied()
        .unwrap_or(0.0);
    assert_eq!(errs, gpus, "one probe per GPU");
    assert_eq!(c.get("nvmlDeviceGetViolationStatus"), None);
    let fv = c.get("nvmlDeviceGetFieldValues").copied().unwrap_or(0.0) / gpus;
    assert!(fv <= samples + 2.0, "{fv} field-value calls per GPU");
    // NVLink5 errors with the same family, new types; the thermal time
    // from the SW thermal clock event counter.
    let last = scrapes.last().unwrap();
    for want in [
        "accel_gpu_nvlink_errors_total{gpu=\"2\",",
        "type=\"effective\"",
        "type=\"symbol\"",
        "accel_gpu_throttle_seconds_total{gpu=\"0\",",
        "reason=\"thermal\"",
        "reason=\"hw_power_brake\"",
    ] {
        assert!(last.contains(want), "no {want}");
    }
    assert!(!last.contains("type=\"crc_flit\""));
}

#[test]
fn nvlink_bytes_per_gpu_in_two_fields_unless_the_driver_refuses() {
    // The driver's sum over the links (scope UINT_MAX) stands for the 36
    // per-link fields once it matched them; a driver that refuses it keeps
    // the per-link fields, and the per-GPU counters are the same either way.
    let dir = TempDir::new("nvlink-aggregate");
    let mut per_read = Vec::new();
    for refuse in [false, true] {
        let scenario = dir.0.join(format!("refuse-{refuse}.toml"));
        let mut text =
            String::from("[[gpus]]\ncount = 2\nmodel = \"h100-sxm5-80gb\"\nutilization = 90\n");
        if refuse {
            text.push_str(
                "[[faults]]\nnot_supported = [\"nvmlDeviceGetFieldValues(138, all links)\", \
                 \"nvmlDeviceGetFieldValues(139, all links)\"]\n",
            );
        }
        std::fs::write(&scenario, text).unwrap();
        let (c, (_, samples), gpus, _, scrapes) = run(
            scenario.to_str().unwrap(),
            &["--collector.gpu.counter-interval=1ms"],
            20.0,
        );
        assert_eq!(gpus, 2.0);
        let fields = c
            .get("nvmlDeviceGetFieldValues (fields)")
            .copied()
            .unwrap_or(0.0)
            / gpus;
        // Every sample reads the counters here: the memory temperature, the
        // 2 PCIe counters, 4 violation times (7 at the first), and NVLink's.
        per_read.push((fields - 7.0 * samples) / samples);
        let last = scrapes.last().unwrap();
        let tx = of_gpu(last, "accel_gpu_nvlink_transmit_bytes_total", 1).unwrap_or(0.0);
        assert!(tx > 0.0, "refuse {refuse}: {last}");
    }
    // Aggregate: 2 NVLink fields a read after the first; refused: 36.
    assert!(per_read[0] < 6.0, "{per_read:?}");
    assert!(per_read[1] > 30.0, "{per_read:?}");
}

#[test]
fn an_idle_gpu_reads_the_nvlink_aggregate_alone_until_data_moves() {
    // No NVLink traffic for the first 3 s, then all-reduce traffic. While
    // nothing moves, the aggregate cannot be proven against the links (all
    // 0), and reading all 36 link fields again would prove nothing: reads
    // ask for the aggregate alone until it moves (every link at every 12th
    // read), then for every link once to prove it, then for the aggregate.
    let dir = TempDir::new("nvlink-quiet");
    let scenario = dir.0.join("quiet.toml");
    std::fs::write(
        &scenario,
        "[[gpus]]\ncount = 2\nmodel = \"h100-sxm5-80gb\"\nutilization = 0\n\
         nvlink_tx_kibps = { kind = \"steps\", points = [[0, 0], [3, 7800000]] }\n\
         nvlink_rx_kibps = { kind = \"steps\", points = [[0, 0], [3, 7800000]] }\n",
    )
    .unwrap();
    let (c, (_, samples), gpus, elapsed, scrapes) = run(
        scenario.to_str().unwrap(),
        &["--collector.gpu.counter-interval=1ms"],
        60.0,
    );
    assert_eq!(gpus, 2.0);
    assert!(elapsed > 5.0, "the traffic starts at 3 s: {elapsed:.1} s");
    let fields = c
        .get("nvmlDeviceGetFieldValues (fields)")
        .copied()
        .unwrap_or(0.0)
        / gpus;
    // Besides NVLink: the memory temperature, the 2 PCIe counters and 4
    // violation times a read (7 at the first). Every link every read
    // while idle would be 38 NVLink fields a read for the first 3 s.
    let nvlink_per_read = (fields - 7.0 * samples) / samples;
    assert!(
        nvlink_per_read < 8.0,
        "{nvlink_per_read} NVLink fields a read"
    );
    // The per-GPU counters are there throughout, never go back, and count
    // the traffic once it starts.
    let tx: Vec<f64> = scrapes
        .iter()
        .filter(|t| t.contains("accel_gpu_up{gpu=\"1\""))
        .map(|t| {
            of_gpu(t, "accel_gpu_nvlink_transmit_bytes_total", 1)
                .expect("GPU 1's NVLink transmit counter in every scrape")
        })
        .collect();
    assert!(tx.len() >= 10, "{} scrapes", tx.len());
    assert!(tx.windows(2).all(|w| w[1] >= w[0]), "went back: {tx:?}");
    assert_eq!(tx[0], 0.0);
    assert!(*tx.last().unwrap() > 0.0, "{tx:?}");
}

#[test]
fn an_aggregate_that_stays_0_while_the_links_count_is_found_out() {
    // A driver that answers link 0's count (down: always 0) for the sum
    // over the links. The first reads see nothing moving; once traffic
    // starts on the other links the aggregate stays 0, and only a read of
    // every link (every 12th quiet read) shows that it is not the sum:
    // from then on the links are read one by one, and the per-GPU counter
    // counts the traffic.
    let dir = TempDir::new("nvlink-wrong-sum");
    let scenario = dir.0.join("wrong.toml");
    std::fs::write(
        &scenario,
        "[[gpus]]\ncount = 1\nmodel = \"h100-sxm5-80gb\"\nutilization = 0\n\
         nvlink_down = [0]\nnvlink_aggregate_link = 0\n\
         nvlink_tx_kibps = { kind = \"steps\", points = [[0, 0], [2, 7800000]] }\n\
         nvlink_rx_kibps = { kind = \"steps\", points = [[0, 0], [2, 7800000]] }\n",
    )
    .unwrap();
    let (_, _, gpus, elapsed, scrapes) = run(
        scenario.to_str().unwrap(),
        &["--collector.gpu.counter-interval=1ms"],
        60.0,
    );
    assert_eq!(gpus, 1.0);
    assert!(elapsed > 5.0, "the traffic starts at 2 s: {elapsed:.1} s");
    let last = scrapes.last().unwrap();
    let tx = of_gpu(last, "accel_gpu_nvlink_transmit_bytes_total", 0);
    // 17 links at ~8 GB/s for a few seconds: far more than 1 GB.
    assert!(tx.is_some_and(|b| b > 1e9), "{tx:?}");
}
