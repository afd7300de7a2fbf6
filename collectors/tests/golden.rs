//! Each collector sampled from the fixture tree (tests/fixtures) and its
//! output compared with tests/golden/<collector>.prom. Regenerate with
//! `UPDATE_GOLDEN=1 cargo test -p accel-collectors --test golden` and review
//! the diff.

use std::path::PathBuf;

use accel_collectors::network::NetworkOptions;
use accel_collectors::{registry, BuildContext, Built, Paths, Sample, Shared, Workers};

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
    }
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
    // kubernetes.prom).
    for spec in registry().iter().filter(|s| {
        !matches!(
            s.name,
            "gpu" | "process" | "cloud" | "goodput" | "kubernetes"
        )
    }) {
        // Loopback included, so every fixture interface is exercised.
        let options = match spec.name {
            "network" => Box::new(NetworkOptions {
                device_include: None,
                device_exclude: "^$".into(),
            }),
            _ => (spec.options.defaults)(),
        };
        let built = (spec.build)(&BuildContext {
            paths: &fixture_paths(),
            options: &*options,
            shared: &Shared::default(),
            workers: &Workers::new(spec.name),
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
