//! The libtpu runtime metric messages the collector reads, decoded by hand
//! from the protobuf wire format, and the one request it sends.
//!
//! Field numbers are those of `tpu_metric_service.proto` (package
//! `tpu.monitoring.runtime`, published with Google's `tpu-info`):
//!
//! ```text
//! MetricRequest  { string metric_name = 1; bool skip_node_aggregation = 2; }
//! MetricResponse { TPUMetric metric = 1; }
//! TPUMetric      { string name = 1; string description = 2; repeated Metric metrics = 3; }
//! Metric         { Attribute attribute = 1; Timestamp timestamp = 2;
//!                  oneof measure { Gauge gauge = 3; Counter counter = 4;
//!                                  Distribution distribution = 5; Summary summary = 6; }
//!                  Timestamp start_timestamp = 7; }
//! Attribute      { string key = 1; AttrValue value = 2; }
//! AttrValue      { oneof attr { string string_attr = 1; bool bool_attr = 2;
//!                  int64 int_attr = 3; double double_attr = 4; ArrayAttrValue array_attr = 5;
//!                  KeyValueList kvlist_attr = 6; bytes bytes_attr = 7; } }
//! KeyValueList   { repeated Attribute attributes = 1; }
//! Gauge          { oneof value { double as_double = 1; int64 as_int = 2;
//!                                string as_string = 3; bool as_bool = 4; } }
//! Counter        { oneof value { double as_double = 1; uint64 as_int = 2; } Exemplar exemplar = 3; }
//! Distribution   { int64 count = 1; double mean = 2; double min = 3; double max = 4;
//!                  double sum_of_squared_deviation = 5; BucketOptions bucket_options = 6;
//!                  repeated int64 bucket_counts = 7; repeated Exemplar exemplars = 8; }
//! BucketOptions  { oneof options { Regular regular_buckets = 1; Exponential exponential_buckets = 2;
//!                                  Explicit explicit_buckets = 3; Linear linear_buckets = 4; } }
//! Exponential    { int32 num_finite_buckets = 1; double growth_factor = 2; double scale = 3; }
//! Explicit       { repeated double bounds = 1; }
//! Linear         { int32 num_finite_buckets = 1; double width = 2; double offset = 3; }
//! ```
//!
//! A metric's attribute is either one value (memory and duty cycle: the
//! device id as an int) or a key-value list (`device_ordinal`, a string on
//! newer libtpu and an int on older, `core_type`, `buffer_size`, ...): both
//! are flattened into one list of (key, value). Every other field, and
//! whatever later versions add, is skipped by its wire type; a value of an
//! unexpected kind (a string gauge) leaves the measure empty, to be skipped
//! by the caller. Decoding is bounded: one pass over a message whose size
//! the caller has already capped, a fixed nesting depth, no recursion, and
//! at most [`MAX_BUCKETS`] buckets and [`MAX_ATTRIBUTES`] attributes per
//! metric.

use std::fmt;

use crate::protowire::{Reader, Value, WireError};

/// Most buckets a distribution may have (GKE's device plugin caps at 200).
pub const MAX_BUCKETS: usize = 512;
/// Most attributes kept per metric.
pub const MAX_ATTRIBUTES: usize = 32;

/// One `TPUMetric`: a name and its data points.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TpuMetric {
    /// The libtpu metric name (`tpu.runtime.hbm.memory.usage.bytes`).
    pub name: String,
    /// Its points, one per device (or per buffer size, ...).
    pub metrics: Vec<Metric>,
}

/// One data point.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metric {
    /// Its attributes, flattened.
    pub attrs: Vec<(String, Attr)>,
    /// Its value.
    pub measure: Measure,
}

/// An attribute's value.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    /// `string_attr`.
    Str(String),
    /// `int_attr`.
    Int(i64),
    /// `bool_attr`.
    Bool(bool),
    /// `double_attr`.
    Double(f64),
    /// An array, a nested list or bytes: not used.
    Other,
}

impl Attr {
    /// The value as a non-negative integer: an int, or a string of digits
    /// (`device_ordinal` is either, by libtpu version).
    pub fn as_index(&self) -> Option<u32> {
        match self {
            Attr::Int(i) => u32::try_from(*i).ok(),
            Attr::Str(s)
                if !s.is_empty() && s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit()) =>
            {
                s.parse().ok()
            }
            _ => None,
        }
    }

    /// The value as a label value.
    pub fn as_label(&self) -> Option<String> {
        match self {
            Attr::Str(s) => Some(s.clone()),
            Attr::Int(i) => Some(i.to_string()),
            Attr::Bool(b) => Some(b.to_string()),
            Attr::Double(d) => Some(d.to_string()),
            Attr::Other => None,
        }
    }
}

/// A data point's measure.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Measure {
    /// None, or of a kind not read (a string gauge, a summary).
    #[default]
    None,
    /// A gauge (double, int or bool).
    Gauge(f64),
    /// A counter.
    Counter(f64),
    /// A distribution.
    Distribution(Distribution),
}

/// A distribution: counts per bucket, the first bucket the underflow and
/// the last the overflow.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Distribution {
    /// Observations.
    pub count: i64,
    /// Their mean.
    pub mean: f64,
    /// Bucket bounds.
    pub buckets: Buckets,
    /// Observations per bucket.
    pub counts: Vec<i64>,
}

/// How a distribution's buckets are bounded.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Buckets {
    /// Not given (or the deprecated `Regular`).
    #[default]
    None,
    /// `scale * growth^i`.
    Exponential {
        /// Finite buckets.
        n: i32,
        /// Growth factor (> 1).
        growth: f64,
        /// Upper bound of the underflow bucket (> 0).
        scale: f64,
    },
    /// `offset + width * i`.
    Linear {
        /// Finite buckets.
        n: i32,
        /// Bucket width (> 0).
        width: f64,
        /// Upper bound of the underflow bucket.
        offset: f64,
    },
    /// Given bounds, ascending.
    Explicit(Vec<f64>),
}

impl Distribution {
    /// The cumulative Prometheus buckets (upper bound ÷ `divisor`, count at or
    /// under it), without `+Inf`, and the total count; `None` when the
    /// buckets do not describe the counts (wrong number, bounds not
    /// ascending, negative counts).
    pub fn cumulative(&self, divisor: f64) -> Option<(Vec<(f64, u64)>, u64)> {
        let n = self.counts.len();
        if !(1..=MAX_BUCKETS + 2).contains(&n) {
            return None;
        }
        // Upper bounds of buckets 0..n-1 (the last, overflow, has none).
        let mut bounds = Vec::with_capacity(n - 1);
        for i in 0..n - 1 {
            let b = match &self.buckets {
                Buckets::None => return None,
                Buckets::Exponential { growth, scale, .. } => {
                    if growth.is_nan() || scale.is_nan() || *growth <= 1.0 || *scale <= 0.0 {
                        return None;
                    }
                    scale * growth.powi(i32::try_from(i).ok()?)
                }
                Buckets::Linear { width, offset, .. } => {
                    if width.is_nan() || *width <= 0.0 {
                        return None;
                    }
                    offset + width * i as f64
                }
                Buckets::Explicit(b) => *b.get(i)?,
            };
            bounds.push(b / divisor);
        }
        let mut out = Vec::with_capacity(n - 1);
        let mut total: u64 = 0;
        let mut last = f64::NEG_INFINITY;
        for (i, c) in self.counts.iter().enumerate() {
            total = total.checked_add(u64::try_from(*c).ok()?)?;
            if let Some(b) = bounds.get(i) {
                if !b.is_finite() || *b <= last {
                    return None;
                }
                last = *b;
                out.push((*b, total));
            }
        }
        Some((out, total))
    }
}

/// A message that is not valid protobuf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid MetricResponse: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

impl From<WireError> for DecodeError {
    fn from(e: WireError) -> Self {
        DecodeError(e.0)
    }
}

fn each<'a>(
    buf: &'a [u8],
    mut f: impl FnMut(u64, Value<'a>) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let mut r = Reader::new(buf);
    while let Some((field, value)) = r.next()? {
        f(field, value)?;
    }
    Ok(())
}

fn string(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Decodes a `MetricResponse`; an empty response is an empty metric.
pub fn decode_response(buf: &[u8]) -> Result<TpuMetric, DecodeError> {
    let mut out = TpuMetric::default();
    each(buf, |field, v| {
        if field == 1 {
            out = decode_tpu_metric(v.bytes()?)?;
        }
        Ok(())
    })?;
    Ok(out)
}

fn decode_tpu_metric(buf: &[u8]) -> Result<TpuMetric, DecodeError> {
    let mut out = TpuMetric::default();
    each(buf, |field, v| {
        match field {
            1 => out.name = string(v.bytes()?),
            3 => out.metrics.push(decode_metric(v.bytes()?)?),
            _ => {}
        }
        Ok(())
    })?;
    Ok(out)
}

fn decode_metric(buf: &[u8]) -> Result<Metric, DecodeError> {
    let mut out = Metric::default();
    each(buf, |field, v| {
        match field {
            1 => decode_attribute(v.bytes()?, &mut out.attrs, true)?,
            3 => out.measure = decode_gauge(v.bytes()?)?,
            4 => out.measure = decode_counter(v.bytes()?)?,
            5 => out.measure = Measure::Distribution(decode_distribution(v.bytes()?)?),
            // A summary: not read.
            6 => out.measure = Measure::None,
            _ => {}
        }
        Ok(())
    })?;
    Ok(out)
}

/// Appends the attribute in `buf` to `out`: itself, or the members of its
/// key-value list when `flatten` (one level only).
fn decode_attribute(
    buf: &[u8],
    out: &mut Vec<(String, Attr)>,
    flatten: bool,
) -> Result<(), DecodeError> {
    let mut key = String::new();
    let mut value = Attr::Other;
    let mut list: Option<&[u8]> = None;
    each(buf, |field, v| {
        match field {
            1 => key = string(v.bytes()?),
            2 => {
                each(v.bytes()?, |f, v| {
                    match f {
                        1 => value = Attr::Str(string(v.bytes()?)),
                        2 => value = Attr::Bool(v.varint()? != 0),
                        3 => value = Attr::Int(v.varint()? as i64),
                        4 => value = Attr::Double(v.double()?),
                        6 => list = Some(v.bytes()?),
                        _ => value = Attr::Other,
                    }
                    Ok(())
                })?;
            }
            _ => {}
        }
        Ok(())
    })?;
    match list {
        Some(list) if flatten => each(list, |f, v| {
            if f == 1 {
                decode_attribute(v.bytes()?, out, false)?;
            }
            Ok(())
        }),
        _ => {
            if out.len() < MAX_ATTRIBUTES {
                out.push((key, value));
            }
            Ok(())
        }
    }
}

fn decode_gauge(buf: &[u8]) -> Result<Measure, DecodeError> {
    let mut m = Measure::None;
    each(buf, |field, v| {
        match field {
            1 => m = Measure::Gauge(v.double()?),
            2 => m = Measure::Gauge(v.varint()? as i64 as f64),
            3 => m = Measure::None,
            4 => m = Measure::Gauge(if v.varint()? != 0 { 1.0 } else { 0.0 }),
            _ => {}
        }
        Ok(())
    })?;
    Ok(m)
}

fn decode_counter(buf: &[u8]) -> Result<Measure, DecodeError> {
    let mut m = Measure::None;
    each(buf, |field, v| {
        match field {
            1 => m = Measure::Counter(v.double()?),
            2 => m = Measure::Counter(v.varint()? as f64),
            _ => {}
        }
        Ok(())
    })?;
    Ok(m)
}

fn decode_distribution(buf: &[u8]) -> Result<Distribution, DecodeError> {
    let mut d = Distribution::default();
    each(buf, |field, v| {
        match field {
            1 => d.count = v.varint()? as i64,
            2 => d.mean = v.double()?,
            6 => d.buckets = decode_bucket_options(v.bytes()?)?,
            7 => match v {
                // Packed (proto3's default) or one by one.
                Value::Bytes(b) => {
                    let mut r = Reader::new(b);
                    while !r.is_empty() {
                        let c = r.varint()? as i64;
                        push_bounded(&mut d.counts, c)?;
                    }
                }
                v => push_bounded(&mut d.counts, v.varint()? as i64)?,
            },
            _ => {}
        }
        Ok(())
    })?;
    Ok(d)
}

fn push_bounded<T>(v: &mut Vec<T>, x: T) -> Result<(), DecodeError> {
    if v.len() >= MAX_BUCKETS + 2 {
        return Err(DecodeError("too many buckets"));
    }
    v.push(x);
    Ok(())
}

fn decode_bucket_options(buf: &[u8]) -> Result<Buckets, DecodeError> {
    let mut b = Buckets::None;
    each(buf, |field, v| {
        match field {
            2 | 4 => {
                let (mut n, mut x, mut y) = (0i32, 0.0f64, 0.0f64);
                each(v.bytes()?, |f, v| {
                    match f {
                        1 => n = v.varint()? as i32,
                        2 => x = v.double()?,
                        3 => y = v.double()?,
                        _ => {}
                    }
                    Ok(())
                })?;
                b = if field == 2 {
                    Buckets::Exponential {
                        n,
                        growth: x,
                        scale: y,
                    }
                } else {
                    Buckets::Linear {
                        n,
                        width: x,
                        offset: y,
                    }
                };
            }
            3 => {
                let mut bounds = Vec::new();
                each(v.bytes()?, |f, v| {
                    if f == 1 {
                        match v {
                            Value::Bytes(p) => {
                                if p.len() % 8 != 0 {
                                    return Err(DecodeError("packed doubles not a multiple of 8"));
                                }
                                for c in p.chunks_exact(8) {
                                    let mut a = [0u8; 8];
                                    a.copy_from_slice(c);
                                    push_bounded(&mut bounds, f64::from_le_bytes(a))?;
                                }
                            }
                            v => push_bounded(&mut bounds, v.double()?)?,
                        }
                    }
                    Ok(())
                })?;
                b = Buckets::Explicit(bounds);
            }
            _ => b = Buckets::None,
        }
        Ok(())
    })?;
    Ok(b)
}

/// Encodes a `MetricRequest` for `name`.
pub fn encode_request(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 4);
    out.push(0x0a);
    let mut n = name.len() as u64;
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out.extend_from_slice(name.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn bytes(field: u64, b: &[u8], out: &mut Vec<u8>) {
        varint(field << 3 | 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }

    fn uint(field: u64, v: u64, out: &mut Vec<u8>) {
        varint(field << 3, out);
        varint(v, out);
    }

    fn double(field: u64, v: f64, out: &mut Vec<u8>) {
        varint(field << 3 | 1, out);
        out.extend_from_slice(&v.to_le_bytes());
    }

    fn attribute(key: &str, value: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        bytes(1, key.as_bytes(), &mut a);
        bytes(2, value, &mut a);
        a
    }

    fn int_value(i: u64) -> Vec<u8> {
        let mut v = Vec::new();
        uint(3, i, &mut v);
        v
    }

    fn str_value(s: &str) -> Vec<u8> {
        let mut v = Vec::new();
        bytes(1, s.as_bytes(), &mut v);
        v
    }

    fn kvlist(attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut list = Vec::new();
        for a in attrs {
            bytes(1, a, &mut list);
        }
        let mut v = Vec::new();
        bytes(6, &list, &mut v);
        attribute("", &v)
    }

    fn response(name: &str, metrics: &[Vec<u8>]) -> Vec<u8> {
        let mut tm = Vec::new();
        bytes(1, name.as_bytes(), &mut tm);
        bytes(2, b"help", &mut tm);
        for m in metrics {
            bytes(3, m, &mut tm);
        }
        let mut out = Vec::new();
        bytes(1, &tm, &mut out);
        out
    }

    /// Memory (lone int attribute, int gauge), then an HLO queue point
    /// (kvlist, string ordinal), an old-libtpu point (int ordinal), a
    /// distribution with packed counts, a string gauge and unknown fields.
    fn sample_response() -> Vec<u8> {
        let mut mem = Vec::new();
        bytes(1, &attribute("device-id", &int_value(3)), &mut mem);
        let mut g = Vec::new();
        uint(2, 1 << 34, &mut g);
        bytes(3, &g, &mut mem);
        // A start timestamp and an unknown varint field: skipped.
        bytes(7, &[0x08, 0x01], &mut mem);
        uint(15, 9, &mut mem);

        let mut q = Vec::new();
        bytes(
            1,
            &kvlist(&[
                attribute("device_ordinal", &str_value("5")),
                attribute("core_type", &str_value("TC")),
            ]),
            &mut q,
        );
        let mut g = Vec::new();
        double(1, 2.5, &mut g);
        bytes(3, &g, &mut q);

        let mut old = Vec::new();
        bytes(
            1,
            &kvlist(&[attribute("device_ordinal", &int_value(6))]),
            &mut old,
        );
        let mut dist = Vec::new();
        uint(1, 6, &mut dist);
        double(2, 3.0, &mut dist);
        let mut exp = Vec::new();
        uint(1, 2, &mut exp);
        double(2, 2.0, &mut exp);
        double(3, 1.0, &mut exp);
        let mut opts = Vec::new();
        bytes(2, &exp, &mut opts);
        bytes(6, &opts, &mut dist);
        bytes(7, &[1, 2, 3, 0], &mut dist);
        bytes(5, &dist, &mut old);

        let mut s = Vec::new();
        let mut g = Vec::new();
        bytes(3, b"text", &mut g);
        bytes(3, &g, &mut s);
        response("m", &[mem, q, old, s])
    }

    #[test]
    fn decodes_every_attribute_form_and_measure() {
        let m = decode_response(&sample_response()).unwrap();
        assert_eq!(m.name, "m");
        assert_eq!(m.metrics.len(), 4);
        assert_eq!(m.metrics[0].attrs, vec![("device-id".into(), Attr::Int(3))]);
        assert_eq!(m.metrics[0].measure, Measure::Gauge((1u64 << 34) as f64));
        assert_eq!(m.metrics[1].attrs.len(), 2);
        assert_eq!(m.metrics[1].attrs[0].1.as_index(), Some(5));
        assert_eq!(m.metrics[1].measure, Measure::Gauge(2.5));
        assert_eq!(m.metrics[2].attrs[0].1.as_index(), Some(6));
        let Measure::Distribution(d) = &m.metrics[2].measure else {
            panic!("{:?}", m.metrics[2].measure)
        };
        assert_eq!(d.counts, vec![1, 2, 3, 0]);
        // Bounds 1, 2, 4 (µs), cumulative 1, 3, 6; in seconds.
        let (b, n) = d.cumulative(1e6).unwrap();
        assert_eq!(b, vec![(1e-6, 1), (2e-6, 3), (4e-6, 6)]);
        assert_eq!(n, 6);
        // A string gauge has no value.
        assert_eq!(m.metrics[3].measure, Measure::None);
        assert_eq!(decode_response(&[]).unwrap(), TpuMetric::default());
    }

    #[test]
    fn bucket_layouts() {
        let d = |buckets, counts: Vec<i64>| Distribution {
            count: 0,
            mean: 0.0,
            buckets,
            counts,
        };
        let lin = d(
            Buckets::Linear {
                n: 2,
                width: 10.0,
                offset: 0.0,
            },
            vec![0, 1, 1, 1],
        );
        assert_eq!(
            lin.cumulative(1.0).unwrap().0,
            vec![(0.0, 0), (10.0, 1), (20.0, 2)]
        );
        let exp = d(Buckets::Explicit(vec![1.0, 5.0]), vec![2, 2, 2]);
        assert_eq!(exp.cumulative(1.0).unwrap(), (vec![(1.0, 2), (5.0, 4)], 6));
        // Too few bounds, bounds not ascending, negative counts, no layout.
        for bad in [
            d(Buckets::Explicit(vec![1.0]), vec![1, 1, 1]),
            d(Buckets::Explicit(vec![5.0, 1.0]), vec![1, 1, 1]),
            d(Buckets::Explicit(vec![1.0, 5.0]), vec![1, -1, 1]),
            d(Buckets::None, vec![1, 1]),
            d(
                Buckets::Exponential {
                    n: 1,
                    growth: 1.0,
                    scale: 1.0,
                },
                vec![1, 1, 1],
            ),
        ] {
            assert_eq!(bad.cumulative(1.0), None, "{bad:?}");
        }
    }

    #[test]
    fn the_request() {
        assert_eq!(encode_request("ab"), vec![0x0a, 2, b'a', b'b']);
        let long = "x".repeat(200);
        let r = encode_request(&long);
        assert_eq!(&r[..3], &[0x0a, 0xc8, 0x01]);
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for bad in [
            &[0x0a][..],
            &[0x0a, 0x05, 0x01],
            &[0x0b],
            &[0x02, 0x00],
            &[0x0a, 0x7f, 0x0a, 0x03, b'a'],
            // A known message field sent as a varint.
            &[0x08, 0x01],
        ] {
            assert!(decode_response(bad).is_err(), "{bad:?}");
        }
        // Too many buckets.
        let mut dist = Vec::new();
        for _ in 0..MAX_BUCKETS + 3 {
            uint(7, 1, &mut dist);
        }
        let mut m = Vec::new();
        bytes(5, &dist, &mut m);
        assert!(decode_response(&response("x", &[m])).is_err());
    }

    fn valid() -> &'static [&'static [u8]] {
        let v: &'static [u8] = Box::leak(sample_response().into_boxed_slice());
        Box::leak(Box::new([v]))
    }

    proptest::proptest! {
        #[test]
        fn mutated_responses_never_panic(b in crate::testing::mutated_bytes(valid())) {
            if let Ok(m) = decode_response(&b) {
                for p in &m.metrics {
                    proptest::prop_assert!(p.attrs.len() <= MAX_ATTRIBUTES);
                    if let Measure::Distribution(d) = &p.measure {
                        proptest::prop_assert!(d.counts.len() <= MAX_BUCKETS + 2);
                        let _ = d.cumulative(1e6);
                    }
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let _ = decode_response(&b);
        }
    }
}
