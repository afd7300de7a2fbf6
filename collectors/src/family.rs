//! Metric families as collectors declare them: one table per collector of
//! full literal names, types, help, label names and the documentation that
//! `docs/metrics.md` is generated from.
//!
//! A collector writes `pub const TOTAL: FamilyDef = FamilyDef::gauge(...)`
//! for each family, lists them in its `FAMILIES` table (given to the
//! registry), and fills them with [`Sample::add`](crate::Sample::add). Grep
//! for a metric's name and you find its definition; a test checks that every
//! family a collector emits is in its table.

use crate::MetricType;

/// One metric family.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FamilyDef {
    /// Full name as exported, `_total` included for counters.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricType,
    /// The `# HELP` text.
    pub help: &'static str,
    /// Label names, in output order.
    pub labels: &'static [&'static str],
    /// What the value means, for docs/metrics.md; "" means the help says it.
    pub doc: &'static str,
    /// Where the value is read (a file, an NVML call), for docs/metrics.md.
    pub source: &'static str,
    /// The node_exporter or DCGM family with the same meaning, or "".
    pub equivalent: &'static str,
    /// Whether series may carry labels beyond `labels`, named by the data
    /// (the run_start labels of `accel_run_info`); their number is bounded
    /// where they are read.
    pub open_labels: bool,
    /// Exported only with `--collector.<name>.detail`: nothing shipped
    /// (panel, alert, rule, profile) reads it. The sampler drops it from
    /// the samples of a collector without the flag.
    pub detail: bool,
}

impl FamilyDef {
    const fn new(name: &'static str, kind: MetricType, help: &'static str) -> Self {
        Self {
            name,
            kind,
            help,
            labels: &[],
            doc: "",
            source: "",
            equivalent: "",
            open_labels: false,
            detail: false,
        }
    }

    /// A gauge.
    pub const fn gauge(name: &'static str, help: &'static str) -> Self {
        Self::new(name, MetricType::Gauge, help)
    }

    /// A counter (its name ends in `_total`).
    pub const fn counter(name: &'static str, help: &'static str) -> Self {
        Self::new(name, MetricType::Counter, help)
    }

    /// A histogram.
    pub const fn histogram(name: &'static str, help: &'static str) -> Self {
        Self::new(name, MetricType::Histogram, help)
    }

    /// With these label names.
    pub const fn labels(mut self, labels: &'static [&'static str]) -> Self {
        self.labels = labels;
        self
    }

    /// With labels beyond the declared ones, named by the data.
    pub const fn open_labels(mut self) -> Self {
        self.open_labels = true;
        self
    }

    /// Only with `--collector.<name>.detail` (see [`FamilyDef::detail`]).
    pub const fn detail(mut self) -> Self {
        self.detail = true;
        self
    }

    /// With a longer meaning for the docs.
    pub const fn doc(mut self, doc: &'static str) -> Self {
        self.doc = doc;
        self
    }

    /// With where it is read.
    pub const fn source(mut self, source: &'static str) -> Self {
        self.source = source;
        self
    }

    /// With its node_exporter or DCGM equivalent.
    pub const fn equivalent(mut self, equivalent: &'static str) -> Self {
        self.equivalent = equivalent;
        self
    }

    /// The base unit the name ends in (`bytes`, `seconds`, `ratio`, ...), or
    /// "" for a count or a state.
    pub fn unit(&self) -> &'static str {
        const UNITS: [&str; 9] = [
            "bytes", "seconds", "joules", "watts", "hertz", "celsius", "ratio", "volts", "flops",
        ];
        let base = self.name.strip_suffix("_total").unwrap_or(self.name);
        UNITS
            .iter()
            .find(|u| {
                base.strip_suffix(**u)
                    .is_some_and(|rest| rest.ends_with('_'))
            })
            .copied()
            .unwrap_or("")
    }
}

/// Checks a collector's table: names unique, in the Prometheus charset,
/// counters and only counters ending in `_total`, each under one of
/// `prefixes` unless named in `outside`. Returns one line per problem.
pub fn check_table(
    collector: &str,
    table: &[FamilyDef],
    prefixes: &[&str],
    outside: &[&str],
) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, f) in table.iter().enumerate() {
        let ok_chars = f
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && (f.name.starts_with("accel_") || f.name.starts_with("process_"));
        if !ok_chars {
            problems.push(format!("{collector}: {} is not a valid name", f.name));
        }
        if table[..i].iter().any(|g| g.name == f.name) {
            problems.push(format!("{collector}: {} declared twice", f.name));
        }
        if (f.kind == MetricType::Counter) != f.name.ends_with("_total") {
            problems.push(format!(
                "{collector}: {}: counters and only counters end in _total",
                f.name
            ));
        }
        if f.help.is_empty() {
            problems.push(format!("{collector}: {} has no help", f.name));
        }
        let under = prefixes.iter().any(|p| f.name.starts_with(p));
        let excepted = outside.contains(&f.name);
        if !under && !excepted {
            problems.push(format!(
                "{collector}: {} is under none of its prefixes {prefixes:?} and not a declared exception",
                f.name
            ));
        }
        if under && excepted {
            problems.push(format!(
                "{collector}: {} is declared an exception but is under its prefixes",
                f.name
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_from_names() {
        let u = |n| FamilyDef::gauge(n, "h").unit();
        assert_eq!(u("accel_disk_read_bytes_total"), "bytes");
        assert_eq!(u("accel_gpu_utilization_ratio"), "ratio");
        assert_eq!(u("accel_gpu_up"), "");
        assert_eq!(u("accel_disk_io_now"), "");
    }

    #[test]
    fn table_checks_catch_mistakes() {
        const A: FamilyDef = FamilyDef::counter("accel_x_a_total", "a");
        const B: FamilyDef = FamilyDef::gauge("accel_x_b_total", "b");
        const C: FamilyDef = FamilyDef::gauge("accel_y_c", "c");
        assert!(check_table("x", &[A], &["accel_x_"], &[]).is_empty());
        assert_eq!(check_table("x", &[A, A], &["accel_x_"], &[]).len(), 1);
        assert_eq!(check_table("x", &[B], &["accel_x_"], &[]).len(), 1);
        assert_eq!(check_table("x", &[C], &["accel_x_"], &[]).len(), 1);
        assert!(check_table("x", &[C], &["accel_x_"], &["accel_y_c"]).is_empty());
    }
}
