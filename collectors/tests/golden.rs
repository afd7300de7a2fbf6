//! Each collector sampled from the fixture tree (tests/fixtures) and its
//! output compared with tests/golden/<collector>.prom. Regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p accel-collectors --test golden` and review
//! the diff.

use std::path::PathBuf;

use accel_collectors::network::{NetworkFilterOptions, NetworkOptions};
use accel_collectors::{registry, BuildContext, Built, Paths, Sample, Shared, Spec, Workers};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Paths pointing at the fixtures.
pub fn fixture_paths() -> Paths {
    let fx = root().join("tests/fixtures");
    Paths {
        procfs: fx.join("proc"),
        sysfs: fx.join("sys"),
        udev_data: fx.join("run/udev/data"),
        rootfs: PathBuf::from("/"),
    }
}

/// What `sample` holds that its collector's table does not declare: a
/// family missing from the table, or with another help, type or label
/// names (in order; a histogram's series add `le`).
fn undeclared(spec: &Spec, sample: &Sample) -> Vec<String> {
    let mut problems = Vec::new();
    for f in sample.families() {
        let Some(def) = spec.family(&f.name) else {
            problems.push(format!("{}: {} is not in its table", spec.name, f.name));
            continue;
        };
        if def.help != f.help || def.kind != f.kind {
            problems.push(format!(
                "{}: {} differs from its table in help or type",
                spec.name, f.name
            ));
        }
        for s in &f.series {
            let names: Vec<&str> = s
                .labels
                .iter()
                .map(|(k, _)| *k)
                .filter(|k| *k != "le")
                .collect();
            if names != def.labels {
                problems.push(format!(
                    "{}: {} has labels {names:?}, its table {:?}",
                    spec.name, f.name, def.labels
                ));
                break;
            }
        }
    }
    problems
}

#[test]
fn every_collector_matches_its_golden() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    // The GPU collector has its own goldens, on simulated GPUs; the process
    // collector reads the test's own process (checked in its unit tests);
    // the cloud collector reads a metadata server (tests/e2e/cloud.rs, golden
    // cloud-gce.prom); the goodput collector listens on a socket for events
    // (tests/e2e/goodput.rs, golden goodput-run.prom); the kubernetes
    // collector asks the kubelet (tests/e2e/kubernetes.rs, golden
    // kubernetes.prom); the time collector reads the live clock and
    // adjtimex(2) (tests/e2e/node_exporter.rs compares it with
    // node_exporter; its clock sources are in the e2e golden); identity
    // reads uname(2) (its os-release and DMI fixtures are in the e2e
    // golden and the node_exporter comparison); the storage probe times
    // real I/O in the directories it is given (tests/e2e/storage.rs,
    // golden storage-probe.prom). The tpu collector has a TPU host's
    // fixture and a simulated runtime of its own (tests/e2e/tpu.rs,
    // goldens tpu-*.prom). The health collector reads the kernel log and
    // adjtimex(2) and writes a state file by default (tests/e2e/health.rs
    // has its goldens, health-*.txt; e2e.prom its series on the fixture
    // tree).
    for spec in registry().iter().filter(|s| {
        !matches!(
            s.name,
            "gpu"
                | "process"
                | "cloud"
                | "goodput"
                | "kubernetes"
                | "time"
                | "identity"
                | "storage-probe"
                | "tpu"
                | "health"
        )
    }) {
        // Loopback included, so every fixture interface is exercised.
        let options = match spec.name {
            "network" => Box::new(NetworkOptions {
                filter: NetworkFilterOptions {
                    device_include: None,
                    device_exclude: "^$".into(),
                },
            }),
            _ => (spec.options.defaults)(),
        };
        let built = (spec.build)(&BuildContext {
            paths: &fixture_paths(),
            options: &*options,
            shared: &Shared::default(),
            workers: &Workers::new(spec.name),
            activity: &Default::default(),
            // Every family, detail included (the sampler, not run here,
            // drops the detail families without the flag).
            detail: true,
        });
        let Built::Ready(mut c) = built.unwrap() else {
            panic!("{} is absent on the fixture tree", spec.name);
        };
        let mut sample = Sample::new();
        c.sample(&mut sample)
            .unwrap_or_else(|e| panic!("{}: {e}", spec.name));
        assert!(
            sample.errors().is_empty(),
            "{}: {:?}",
            spec.name,
            sample.errors()
        );
        failures.extend(undeclared(spec, &sample));
        let mut text = String::new();
        sample.encode_text(&mut text);
        assert!(!text.is_empty(), "{} produced nothing", spec.name);
        let path = root().join(format!("tests/golden/{}.prom", spec.name));
        if update {
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
        if want != text {
            failures.push(format!("{} differs from {}", spec.name, path.display()));
            let _ = std::fs::write(path.with_extension("prom.actual"), &text);
        }
    }
    assert!(
        failures.is_empty(),
        "{failures:#?}\n(the actual output is next to each golden as .prom.actual)"
    );
}

/// The process collector reads the real /proc/self (and follows this test
/// process by pid): everything it emits is declared in its table.
#[test]
fn process_families_are_declared() {
    let spec = accel_collectors::process::SPEC;
    let options = accel_collectors::process::ProcessOptions {
        pids: vec![std::process::id()],
        ..accel_collectors::options::defaults()
    };
    let built = (spec.build)(&BuildContext {
        paths: &Paths::default(),
        options: &options,
        shared: &Shared::default(),
        workers: &Workers::new(spec.name),
        activity: &Default::default(),
        detail: false,
    });
    let Built::Ready(mut c) = built.unwrap() else {
        panic!("process is absent")
    };
    let mut sample = Sample::new();
    c.sample(&mut sample).unwrap();
    let names: Vec<&str> = sample.families().iter().map(|f| &*f.name).collect();
    for want in [
        "process_cpu_seconds_total",
        "accel_process_info",
        "accel_process_cpu_seconds_total",
    ] {
        assert!(names.contains(&want), "{want} missing: {names:?}");
    }
    let problems = undeclared(&spec, &sample);
    assert!(problems.is_empty(), "{problems:#?}");
}
