//! docs/metrics.md is generated from the family tables
//! (`agent/metrics_doc.rs`); every family the agent exports is declared in
//! the table of the collector that exports it.

use std::collections::BTreeSet;
use std::path::PathBuf;

use accel_agent::metrics_doc;
use accel_collectors::registry;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Fails when docs/metrics.md differs from what the tables give;
/// `UPDATE_DOCS=1` (scripts/metrics-doc) rewrites it.
#[test]
fn metrics_md_is_generated() {
    let path = root().join("docs/metrics.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let rendered = metrics_doc::render(&text, &metrics_doc::tables())
        .unwrap_or_else(|e| panic!("docs/metrics.md: {e}"));
    if std::env::var_os("UPDATE_DOCS").is_some() {
        std::fs::write(&path, &rendered).unwrap();
        return;
    }
    assert!(
        rendered == text,
        "docs/metrics.md is out of date with the family tables: run scripts/metrics-doc and review the diff"
    );
}

/// Every collector's table is well formed and under its prefixes.
#[test]
fn family_tables_are_well_formed() {
    let mut problems = Vec::new();
    for spec in registry() {
        problems.extend(accel_collectors::family::check_table(
            spec.name,
            spec.families,
            spec.prefixes,
            spec.outside,
        ));
        // A collector has `--collector.<name>.detail` exactly when some
        // family of its table waits for it.
        let marked = spec.families.iter().any(|f| f.detail);
        if marked == spec.detail.is_empty() {
            problems.push(format!(
                "{}: families marked detail: {marked}, detail flag help: {:?}",
                spec.name, spec.detail
            ));
        }
    }
    problems.extend(accel_collectors::family::check_table(
        "agent",
        accel_agent::state::FAMILIES,
        &["accel_collector_", "accel_build_", "accel_config_"],
        &[],
    ));
    let mut seen = BTreeSet::new();
    for (collector, table) in metrics_doc::tables() {
        for f in table {
            if !seen.insert(f.name) {
                problems.push(format!("{} declared again by {collector}", f.name));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}
