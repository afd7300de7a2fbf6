//! A protobuf encoder for the few messages served, and the decoding of the
//! request's metric name.

/// Appends a varint.
pub fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a length-delimited field.
pub fn bytes(field: u64, b: &[u8], out: &mut Vec<u8>) {
    varint(field << 3 | 2, out);
    varint(b.len() as u64, out);
    out.extend_from_slice(b);
}

/// Appends a varint field.
pub fn uint(field: u64, v: u64, out: &mut Vec<u8>) {
    varint(field << 3, out);
    varint(v, out);
}

/// Appends a double field.
pub fn double(field: u64, v: f64, out: &mut Vec<u8>) {
    varint(field << 3 | 1, out);
    out.extend_from_slice(&v.to_le_bytes());
}

/// The `metric_name` of a `MetricRequest`.
pub fn request_name(mut b: &[u8]) -> Option<String> {
    fn read(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&x, r) = b.split_first()?;
            *b = r;
            v |= u64::from(x & 0x7f) << (7 * i);
            if x & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut name = None;
    while !b.is_empty() {
        let key = read(&mut b)?;
        match key & 7 {
            0 => {
                read(&mut b)?;
            }
            2 => {
                let n = read(&mut b)? as usize;
                if n > b.len() {
                    return None;
                }
                if key >> 3 == 1 {
                    name = Some(String::from_utf8_lossy(&b[..n]).into_owned());
                }
                b = &b[n..];
            }
            _ => return None,
        }
    }
    name
}

/// An attribute value.
pub enum Attr<'a> {
    Str(&'a str),
    Int(i64),
}

/// `AttrValue`.
pub fn attr_value(v: &Attr<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    match v {
        Attr::Str(s) => bytes(1, s.as_bytes(), &mut out),
        Attr::Int(i) => uint(3, *i as u64, &mut out),
    }
    out
}

/// `Attribute { key, value }`.
pub fn attribute(key: &str, v: &Attr<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    bytes(1, key.as_bytes(), &mut out);
    bytes(2, &attr_value(v), &mut out);
    out
}

/// `Attribute { key: "", value: { kvlist_attr: { attributes } } }`.
pub fn kvlist(attrs: &[(&str, Attr<'_>)]) -> Vec<u8> {
    let mut list = Vec::new();
    for (k, v) in attrs {
        bytes(1, &attribute(k, v), &mut list);
    }
    let mut value = Vec::new();
    bytes(6, &list, &mut value);
    let mut out = Vec::new();
    bytes(2, &value, &mut out);
    out
}

/// A `Timestamp` (seconds only).
fn timestamp(secs: u64) -> Vec<u8> {
    let mut out = Vec::new();
    uint(1, secs, &mut out);
    out
}

/// A measure.
pub enum Measure<'a> {
    Double(f64),
    Int(i64),
    Distribution(&'a crate::scenario::Dist),
}

/// `Metric { attribute, timestamp, measure, start_timestamp }`.
pub fn metric(attribute: &[u8], m: &Measure<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    bytes(1, attribute, &mut out);
    bytes(2, &timestamp(1_764_892_800), &mut out);
    match m {
        Measure::Double(v) => {
            let mut g = Vec::new();
            double(1, *v, &mut g);
            bytes(3, &g, &mut out);
        }
        Measure::Int(v) => {
            let mut g = Vec::new();
            uint(2, *v as u64, &mut g);
            bytes(3, &g, &mut out);
        }
        Measure::Distribution(d) => {
            let mut dist = Vec::new();
            let count: u64 = d.counts.iter().sum();
            uint(1, count, &mut dist);
            double(2, d.mean, &mut dist);
            let mut exp = Vec::new();
            uint(1, d.counts.len().saturating_sub(2) as u64, &mut exp);
            double(2, d.growth, &mut exp);
            double(3, d.scale, &mut exp);
            let mut opts = Vec::new();
            bytes(2, &exp, &mut opts);
            bytes(6, &opts, &mut dist);
            let mut packed = Vec::new();
            for c in &d.counts {
                varint(*c, &mut packed);
            }
            bytes(7, &packed, &mut dist);
            bytes(5, &dist, &mut out);
        }
    }
    bytes(7, &timestamp(1_764_889_200), &mut out);
    out
}

/// `MetricResponse { metric: TPUMetric { name, description, metrics } }`.
pub fn response(name: &str, metrics: &[Vec<u8>]) -> Vec<u8> {
    let mut tm = Vec::new();
    bytes(1, name.as_bytes(), &mut tm);
    bytes(2, b"simulated by tpu-sim", &mut tm);
    for m in metrics {
        bytes(3, m, &mut tm);
    }
    let mut out = Vec::new();
    bytes(1, &tm, &mut out);
    out
}
