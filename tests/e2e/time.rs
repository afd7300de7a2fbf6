//! The time collector against node_exporter 1.5.0's `time` and `timex`
//! collectors on this machine's live clock: both read adjtimex(2) and the
//! clock at nearly the same moment, so the state (sync status, status bits,
//! tick, PLL constant, PPS counters, TAI offset), the time zone and the
//! clock sources must be equal, and the moving values (offset, frequency,
//! error bounds, time) within a tolerance. The fixture clock sources are
//! compared exactly in `node_exporter.rs`.

use std::collections::BTreeSet;

use crate::node_exporter::{node_exporter, parse_exposition, Exposition};
use crate::util::Agent;

/// Moving values and how far apart the two reads may be: the agent samples
/// every second, off the scrape path.
const TOLERANCE: [(&str, f64); 5] = [
    // The clock itself: a sample is up to 1 s old, plus start-up.
    ("time_seconds", 5.0),
    // The PLL slews the offset by at most 500 ppm: 1 ms over 2 s.
    ("timex_offset_seconds", 0.01),
    // maxerror grows by 500 µs per second until a daemon resets it.
    ("timex_maxerror_seconds", 0.01),
    ("timex_estimated_error_seconds", 0.01),
    // A frequency correction changes by far less than 1 ppm in seconds.
    ("timex_frequency_adjustment_ratio", 1e-6),
];

/// The problems between node_exporter's `node_time*` series and the
/// agent's `accel_time*` ones.
fn differences(ne: &Exposition, ours: &Exposition) -> (Vec<String>, usize) {
    let pick = |e: &Exposition, prefix: &str| -> BTreeSet<_> {
        e.series
            .keys()
            .filter_map(|(n, l)| {
                let short = n.strip_prefix(prefix)?;
                short
                    .starts_with("time")
                    .then(|| (short.to_owned(), l.clone()))
            })
            .collect()
    };
    let (theirs, mine) = (pick(ne, "node_"), pick(ours, "accel_"));
    let mut problems: Vec<String> = theirs
        .symmetric_difference(&mine)
        .map(|k| format!("only one side has {k:?}"))
        .collect();
    let mut compared = 0;
    for k in theirs.intersection(&mine) {
        let a = ne.series[&(format!("node_{}", k.0), k.1.clone())];
        let b = ours.series[&(format!("accel_{}", k.0), k.1.clone())];
        let tol = TOLERANCE
            .iter()
            .find(|(n, _)| *n == k.0)
            .map_or(0.0, |(_, t)| *t);
        if (a - b).abs() > tol {
            problems.push(format!(
                "{k:?}: node_exporter {a}, agent {b} (tolerance {tol})"
            ));
        }
        let (ta, tb) = (
            ne.types.get(&format!("node_{}", k.0)),
            ours.types.get(&format!("accel_{}", k.0)),
        );
        if ta != tb {
            problems.push(format!("{}: type {tb:?}, node_exporter's {ta:?}", k.0));
        }
        compared += 1;
    }
    (problems, compared)
}

#[test]
fn time_and_timex_match_node_exporter_live() {
    // With its detail: every family node_exporter has.
    let agent = Agent::start(&[
        "--collector.disable-defaults",
        "--collector.time",
        "--collector.time.detail",
    ]);
    let args: Vec<String> = [
        "--collector.disable-defaults",
        "--collector.time",
        "--collector.timex",
    ]
    .map(String::from)
    .to_vec();
    // The kernel's state may change between the two reads (a daemon
    // stepping in): up to three tries.
    let mut last = Vec::new();
    for _ in 0..3 {
        let ours = parse_exposition(&agent.get_ready("/metrics").text());
        let ne = parse_exposition(&node_exporter(&args));
        for c in ["time", "timex"] {
            let k = (
                "node_scrape_collector_success".to_owned(),
                vec![("collector".to_owned(), c.to_owned())],
            );
            assert_eq!(ne.series.get(&k), Some(&1.0), "node_exporter's {c} failed");
        }
        let (problems, compared) = differences(&ne, &ours);
        // time_seconds, the zone, 17 timex families, and at least one
        // clock source (available and current) on any Linux machine.
        assert!(compared >= 21, "only {compared} series compared");
        if problems.is_empty() {
            // The comparison is not blind: a tick off by 1 µs is caught.
            let mut bad = Exposition {
                series: ours.series.clone(),
                types: ours.types.clone(),
            };
            let tick = ("accel_timex_tick_seconds".to_owned(), Vec::new());
            *bad.series.get_mut(&tick).unwrap() += 1e-6;
            let (p, _) = differences(&ne, &bad);
            assert_eq!(p.len(), 1, "{p:?}");
            return;
        }
        last = problems;
    }
    panic!("the agent's clock series differ from node_exporter's:\n{last:#?}");
}
