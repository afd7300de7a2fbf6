//! docs/metrics.md, generated from the collectors' family tables.
//!
//! The file is prose written by hand with tables generated from the code.
//! Each generated table sits between two markers:
//!
//! ```text
//! <!-- families collector=gpu; names=accel_gpu_memory_* accel_gpu_up; source=NVML source; equivalent=DCGM equivalent; implicit=gpu uuid -->
//! ...generated...
//! <!-- end families -->
//! ```
//!
//! `collector` names a registry entry (or `agent` for the agent's own
//! families); `names` picks its families (a trailing `*` is a prefix; all of
//! them when left out); `source` and `equivalent` title those columns;
//! `implicit` lists labels every family of the table has, left out of the
//! labels column. Every declared family must be in exactly one table.
//!
//! Regenerate with `scripts/metrics-doc` (it sets `UPDATE_DOCS=1` for the
//! test `docs::metrics_md_is_generated`, which otherwise fails when the
//! checked-in file differs from what the tables give).

use std::collections::BTreeMap;

use accel_collectors::{registry, FamilyDef, MetricType};

const END: &str = "<!-- end families -->";

/// Every table of families: each collector's, then the agent's.
pub fn tables() -> Vec<(&'static str, &'static [FamilyDef])> {
    let mut t: Vec<(&'static str, &'static [FamilyDef])> =
        registry().iter().map(|s| (s.name, s.families)).collect();
    t.push(("agent", crate::state::FAMILIES));
    t
}

/// Rewrites the generated tables of `template` from `tables`. `Err` names
/// a marker that cannot be read, a table that matches nothing, or a family
/// in no table or in two.
pub fn render(
    template: &str,
    tables: &[(&'static str, &'static [FamilyDef])],
) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut placed: BTreeMap<&str, usize> = BTreeMap::new();
    let mut lines = template.lines();
    while let Some(line) = lines.next() {
        out.push_str(line);
        out.push('\n');
        let Some(spec) = line
            .trim()
            .strip_prefix("<!-- families ")
            .and_then(|s| s.strip_suffix("-->"))
        else {
            continue;
        };
        let marker = Marker::parse(spec)?;
        // Skip the old generated text.
        loop {
            match lines.next() {
                Some(l) if l.trim() == END => break,
                Some(_) => {}
                None => return Err(format!("no {END} after <!-- families {spec}-->")),
            }
        }
        let families = tables
            .iter()
            .find(|(name, _)| *name == marker.collector)
            .map(|(_, f)| *f)
            .ok_or_else(|| format!("no collector {:?}", marker.collector))?;
        let chosen: Vec<&FamilyDef> = families.iter().filter(|f| marker.picks(f.name)).collect();
        if chosen.is_empty() {
            return Err(format!("<!-- families {spec}--> matches no family"));
        }
        out.push_str(&format!(
            "| name | type | labels | unit / meaning | {} | {} |\n|---|---|---|---|---|---|\n",
            marker.source, marker.equivalent
        ));
        for f in chosen {
            *placed.entry(f.name).or_default() += 1;
            out.push_str(&row(marker.collector, f, &marker.implicit));
        }
        out.push_str(END);
        out.push('\n');
    }
    let mut problems = Vec::new();
    for (collector, families) in tables {
        for f in families.iter() {
            match placed.get(f.name) {
                None => problems.push(format!("{} ({collector}) is in no table", f.name)),
                Some(1) => {}
                Some(n) => problems.push(format!("{} ({collector}) is in {n} tables", f.name)),
            }
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems.join("; "))
    }
}

struct Marker<'a> {
    collector: &'a str,
    names: Vec<&'a str>,
    source: &'a str,
    equivalent: &'a str,
    implicit: Vec<&'a str>,
}

impl<'a> Marker<'a> {
    fn parse(spec: &'a str) -> Result<Self, String> {
        let mut m = Marker {
            collector: "",
            names: Vec::new(),
            source: "source",
            equivalent: "node_exporter equivalent",
            implicit: Vec::new(),
        };
        for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("families marker: {part:?} is not key=value"))?;
            let v = v.trim();
            match k.trim() {
                "collector" => m.collector = v,
                "names" => m.names = v.split_ascii_whitespace().collect(),
                "source" => m.source = v,
                "equivalent" => m.equivalent = v,
                "implicit" => m.implicit = v.split_ascii_whitespace().collect(),
                other => return Err(format!("families marker: unknown key {other:?}")),
            }
        }
        if m.collector.is_empty() {
            return Err(format!("families marker without collector: {spec:?}"));
        }
        Ok(m)
    }

    fn picks(&self, name: &str) -> bool {
        self.names.is_empty()
            || self.names.iter().any(|n| match n.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name == *n,
            })
    }
}

fn row(collector: &str, f: &FamilyDef, implicit: &[&str]) -> String {
    let kind = match f.kind {
        MetricType::Counter => "counter",
        MetricType::Gauge => "gauge",
        MetricType::Histogram => "histogram",
    };
    let labels: Vec<String> = f
        .labels
        .iter()
        .filter(|l| !implicit.contains(l))
        .map(|l| format!("`{l}`"))
        .collect();
    let cell = |s: &str| {
        if s.is_empty() {
            "—".to_owned()
        } else {
            s.replace('|', "\\|")
        }
    };
    let mut meaning = (if f.doc.is_empty() { f.help } else { f.doc }).to_owned();
    if f.detail {
        meaning.push_str(&format!("; only with `--collector.{collector}.detail`"));
    }
    format!(
        "| `{}` | {kind} | {} | {} | {} | {} |\n",
        f.name,
        if labels.is_empty() {
            "—".to_owned()
        } else {
            labels.join(", ")
        },
        cell(&meaning),
        cell(f.source),
        if f.equivalent.is_empty() {
            "none".to_owned()
        } else {
            f.equivalent.replace('|', "\\|")
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: FamilyDef = FamilyDef::counter("accel_t_a_total", "A things.")
        .labels(&["gpu", "kind"])
        .source("/proc/a")
        .equivalent("node_a_total");
    const B: FamilyDef = FamilyDef::gauge("accel_t_b_bytes", "B | bytes.");
    const T: &[FamilyDef] = &[A, B];

    #[test]
    fn tables_are_rewritten_between_markers() {
        let doc = "# x\n<!-- families collector=t; names=accel_t_a_total; implicit=gpu -->\nold\n<!-- end families -->\ntext\n<!-- families collector=t; names=accel_t_b_* -->\n<!-- end families -->\n";
        let out = render(doc, &[("t", T)]).unwrap();
        assert!(
            out.contains(
                "| `accel_t_a_total` | counter | `kind` | A things. | /proc/a | node_a_total |\n"
            ),
            "{out}"
        );
        assert!(out.contains("| `accel_t_b_bytes` | gauge | — | B \\| bytes. | — | none |\n"));
        assert!(!out.contains("old"));
        assert!(out.contains("\ntext\n"));
        // Rendering is stable.
        assert_eq!(render(&out, &[("t", T)]).unwrap(), out);
    }

    #[test]
    fn every_family_in_exactly_one_table() {
        let one = "<!-- families collector=t; names=accel_t_a_total -->\n<!-- end families -->\n";
        assert!(render(one, &[("t", T)])
            .unwrap_err()
            .contains("accel_t_b_bytes"));
        let twice = "<!-- families collector=t -->\n<!-- end families -->\n<!-- families collector=t; names=accel_t_b_bytes -->\n<!-- end families -->\n";
        assert!(render(twice, &[("t", T)]).unwrap_err().contains("2 tables"));
        let unclosed = "<!-- families collector=t -->\n";
        assert!(render(unclosed, &[("t", T)]).is_err());
        let nothing = "<!-- families collector=t; names=accel_zz -->\n<!-- end families -->\n";
        assert!(render(nothing, &[("t", T)]).is_err());
    }
}
