//! One sample of one collector: metric families in the making, and the
//! non-fatal errors met while taking it.
//!
//! A sample is built by a collector on its sampler thread, then encoded once
//! into the Prometheus text format (0.0.4) and kept, immutable, until the next
//! sample replaces it. Scrapes serve the encoded bytes; nothing here runs on
//! the scrape path except [`encode_openmetrics`](Sample::encode_openmetrics)
//! for the rare client that asks for OpenMetrics.

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::CollectError;

/// The Prometheus metric types the agent exports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricType {
    /// Monotonic; the family name ends in `_total`.
    Counter,
    /// A value that goes up and down (also used for 0/1 states and `_info`).
    Gauge,
    /// Cumulative buckets, a sum and a count (series named `_bucket`,
    /// `_sum`, `_count`).
    Histogram,
}

impl MetricType {
    fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
        }
    }
}

/// One labelled value of a family.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Label names and values, in output order.
    pub labels: Vec<(&'static str, String)>,
    /// The value, in the family's base unit.
    pub value: f64,
    /// Appended to the family name on output: "" except for a histogram's
    /// `_bucket`, `_sum` and `_count` series.
    pub suffix: &'static str,
}

/// A metric family: a name, its help text and type, and its series.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    /// Full name, `_total` included for counters. Borrowed from the
    /// collector's table: a sample allocates no names or help texts (a GPU
    /// sample has about 75 families per GPU).
    pub name: Cow<'static, str>,
    /// One-line help text.
    pub help: Cow<'static, str>,
    /// Counter or gauge.
    pub kind: MetricType,
    /// The series, in the order they were added.
    pub series: Vec<Series>,
}

impl Family {
    /// Adds a series. Label values are owned copies; names are static so a
    /// label set cannot be built from data by accident.
    pub fn add(&mut self, labels: &[(&'static str, &str)], value: f64) -> &mut Self {
        self.series.push(Series {
            labels: labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
            value,
            suffix: "",
        });
        self
    }

    /// Adds one histogram: `buckets` are (upper bound, observations at or
    /// under it), cumulative and ascending, without `+Inf` (that is
    /// `count`).
    pub fn add_histogram(
        &mut self,
        labels: &[(&'static str, &str)],
        buckets: &[(f64, u64)],
        sum: f64,
        count: u64,
    ) -> &mut Self {
        debug_assert_eq!(self.kind, MetricType::Histogram);
        let base: Vec<(&'static str, String)> =
            labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        let mut le = String::new();
        for (bound, n) in buckets
            .iter()
            .map(|(b, n)| (*b, *n))
            .chain(std::iter::once((f64::INFINITY, count)))
        {
            le.clear();
            format_value(bound, &mut le);
            let mut l = base.clone();
            l.push(("le", le.clone()));
            self.series.push(Series {
                labels: l,
                value: n as f64,
                suffix: "_bucket",
            });
        }
        self.series.push(Series {
            labels: base.clone(),
            value: sum,
            suffix: "_sum",
        });
        self.series.push(Series {
            labels: base,
            value: count as f64,
            suffix: "_count",
        });
        self
    }
}

/// What one collector produced in one sample.
#[derive(Debug, Default)]
pub struct Sample {
    families: Vec<Family>,
    errors: Vec<CollectError>,
}

impl Sample {
    /// An empty sample.
    pub fn new() -> Self {
        Self::default()
    }

    /// The family named `name`, created with `help` and `kind` if this sample
    /// has none yet. Families keep the order of their first use. Private:
    /// collectors name families through their tables ([`add`](Self::add)).
    fn family(&mut self, name: &'static str, help: &'static str, kind: MetricType) -> &mut Family {
        // Linear search: a collector has tens of families, and keeping them in
        // a Vec keeps the output order stable and readable.
        if let Some(i) = self.families.iter().position(|f| f.name == name) {
            debug_assert_eq!(self.families[i].kind, kind, "{name} used with two types");
            return &mut self.families[i];
        }
        debug_assert!(
            (kind == MetricType::Counter) == name.ends_with("_total"),
            "{name}: counters and only counters end in _total"
        );
        self.families.push(Family {
            name: Cow::Borrowed(name),
            help: Cow::Borrowed(help),
            kind,
            series: Vec::new(),
        });
        self.families.last_mut().expect("just pushed")
    }

    /// The family `def` declares, created if this sample has none yet: how
    /// collectors add series (their families are declared in their tables,
    /// see [`crate::family`]).
    pub fn add(&mut self, def: &'static crate::FamilyDef) -> &mut Family {
        self.family(def.name, def.help, def.kind)
    }

    /// One unlabelled series for each family whose value is known; families
    /// whose value is `None` are left out.
    pub fn add_known(
        &mut self,
        values: impl IntoIterator<Item = (&'static crate::FamilyDef, Option<u64>)>,
    ) {
        for (family, value) in values {
            if let Some(v) = value {
                self.add(family).add(&[], v as f64);
            }
        }
    }

    /// Records an error that spoiled part of the sample but not all of it
    /// (one unreadable file among many). It is counted in
    /// `accel_collector_errors_total` and logged; the sample still succeeds.
    pub fn error(&mut self, err: CollectError) {
        self.errors.push(err);
    }

    /// Moves another sample's series and errors into this one, family by
    /// family.
    pub fn merge(&mut self, other: Sample) {
        for f in other.families {
            match self.families.iter_mut().find(|m| m.name == f.name) {
                Some(mine) => mine.series.extend(f.series),
                None => self.families.push(f),
            }
        }
        self.errors.extend(other.errors);
    }

    /// Keeps only the families whose name `keep` accepts (the sampler
    /// drops a collector's detail families this way).
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.families.retain(|f| keep(&f.name));
    }

    /// The families, in order.
    pub fn families(&self) -> &[Family] {
        &self.families
    }

    /// The non-fatal errors recorded with [`error`](Self::error).
    pub fn errors(&self) -> &[CollectError] {
        &self.errors
    }

    /// Takes the families out, leaving the sample empty.
    pub fn into_parts(self) -> (Vec<Family>, Vec<CollectError>) {
        (self.families, self.errors)
    }

    /// Appends the families in the Prometheus text format 0.0.4. Families
    /// without series are left out.
    pub fn encode_text(&self, out: &mut String) {
        encode_text(&self.families, out);
    }

    /// Appends the families in the OpenMetrics text format, without `# EOF`.
    pub fn encode_openmetrics(&self, out: &mut String) {
        encode_openmetrics(&self.families, out);
    }
}

/// Encodes families in the Prometheus text format 0.0.4.
pub fn encode_text(families: &[Family], out: &mut String) {
    for f in families.iter().filter(|f| !f.series.is_empty()) {
        out.push_str("# HELP ");
        out.push_str(&f.name);
        out.push(' ');
        escape_help(&f.help, out);
        out.push_str("\n# TYPE ");
        out.push_str(&f.name);
        out.push(' ');
        out.push_str(f.kind.as_str());
        out.push('\n');
        for s in &f.series {
            encode_series(&f.name, s, out);
        }
    }
}

/// Encodes families in the OpenMetrics text format (without the final
/// `# EOF`, so several collectors' output can be joined).
pub fn encode_openmetrics(families: &[Family], out: &mut String) {
    for f in families.iter().filter(|f| !f.series.is_empty()) {
        // OpenMetrics names a counter family without its `_total` suffix.
        let base = match f.kind {
            MetricType::Counter => f.name.strip_suffix("_total").unwrap_or(&f.name),
            MetricType::Gauge | MetricType::Histogram => &f.name,
        };
        out.push_str("# TYPE ");
        out.push_str(base);
        out.push(' ');
        out.push_str(f.kind.as_str());
        out.push_str("\n# HELP ");
        out.push_str(base);
        out.push(' ');
        escape_help(&f.help, out);
        out.push('\n');
        for s in &f.series {
            encode_series(&f.name, s, out);
        }
    }
}

fn encode_series(name: &str, s: &Series, out: &mut String) {
    out.push_str(name);
    out.push_str(s.suffix);
    if !s.labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in s.labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(k);
            out.push_str("=\"");
            escape_label(v, out);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    format_value(s.value, out);
    out.push('\n');
}

/// Writes a sample value as Prometheus parsers read it: `NaN`, `+Inf`,
/// `-Inf`, integers without a fraction, other values in the shortest form
/// that reads back to the same f64 (with an exponent only when very large
/// or very small).
pub fn format_value(v: f64, out: &mut String) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v == v.trunc() && v.abs() < 1e15 {
        let _ = write!(out, "{}", v as i64);
    } else if (1e-5..1e21).contains(&v.abs()) {
        // Display is the shortest form that reads back to the same f64.
        let _ = write!(out, "{v}");
    } else {
        let _ = write!(out, "{v:e}");
    }
}

fn escape_label(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FamilyDef;

    const X: FamilyDef = FamilyDef::counter("accel_x_total", "An x.\nSecond line \\ here.");
    const EMPTY: FamilyDef = FamilyDef::gauge("accel_empty", "Never filled.");
    const G: FamilyDef = FamilyDef::gauge("accel_g", "g");
    const H: FamilyDef = FamilyDef::histogram("accel_h_seconds", "h");
    const X2: FamilyDef = FamilyDef::counter("accel_x_total", "x");

    fn text(s: &Sample) -> String {
        let mut out = String::new();
        s.encode_text(&mut out);
        out
    }

    #[test]
    fn encodes_help_type_and_escaped_labels() {
        let mut s = Sample::new();
        s.add(&X).add(&[("device", "a\"b\\c\nd")], 3.0);
        s.add(&EMPTY);
        assert_eq!(
            text(&s),
            "# HELP accel_x_total An x.\\nSecond line \\\\ here.\n\
             # TYPE accel_x_total counter\n\
             accel_x_total{device=\"a\\\"b\\\\c\\nd\"} 3\n"
        );
    }

    #[test]
    fn same_family_twice_appends() {
        let mut s = Sample::new();
        s.add(&G).add(&[("a", "1")], 1.0);
        s.add(&G).add(&[("a", "2")], 2.5);
        assert_eq!(s.families().len(), 1);
        assert!(text(&s).ends_with("accel_g{a=\"1\"} 1\naccel_g{a=\"2\"} 2.5\n"));
    }

    #[test]
    fn values_round_trip() {
        for v in [
            0.0,
            -1.0,
            0.001,
            1.5e-9,
            18446744073709551615.0,
            2e19,
            123456789012345.0,
            1e15,
            f64::MAX,
            f64::MIN_POSITIVE,
            28.26,
            1e-7,
        ] {
            let mut out = String::new();
            format_value(v, &mut out);
            assert_eq!(out.parse::<f64>().unwrap(), v, "{out}");
        }
        let mut out = String::new();
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            format_value(v, &mut out);
            out.push(' ');
        }
        assert_eq!(out, "NaN +Inf -Inf ");
    }

    #[test]
    fn encodes_a_histogram() {
        let mut s = Sample::new();
        s.add(&H)
            .add_histogram(&[("run", "r")], &[(0.5, 1), (1.0, 3)], 2.5, 4);
        assert_eq!(
            text(&s),
            "# HELP accel_h_seconds h\n\
             # TYPE accel_h_seconds histogram\n\
             accel_h_seconds_bucket{run=\"r\",le=\"0.5\"} 1\n\
             accel_h_seconds_bucket{run=\"r\",le=\"1\"} 3\n\
             accel_h_seconds_bucket{run=\"r\",le=\"+Inf\"} 4\n\
             accel_h_seconds_sum{run=\"r\"} 2.5\n\
             accel_h_seconds_count{run=\"r\"} 4\n"
        );
    }

    #[test]
    fn openmetrics_names_counter_family_without_total() {
        let mut s = Sample::new();
        s.add(&X2).add(&[], 1.0);
        let mut out = String::new();
        s.encode_openmetrics(&mut out);
        assert_eq!(
            out,
            "# TYPE accel_x counter\n# HELP accel_x x\naccel_x_total 1\n"
        );
    }
}
