//! The event schema, version 1 (docs/goodput.md): one JSON object per
//! datagram, parsed into an [`Event`] or refused with a bounded
//! [`Reject`] reason. Unknown fields are ignored.

use serde_json::{Map, Value};

/// Largest datagram accepted, in bytes.
pub const MAX_DATAGRAM: usize = 64 * 1024;
/// Longest run name, in bytes.
pub const MAX_RUN_LEN: usize = 128;
/// Most labels a run_start may carry; further ones are dropped.
pub const MAX_LABELS: usize = 16;
/// Longest label name, in bytes.
pub const MAX_LABEL_NAME: usize = 64;
/// Longest label value, in bytes; longer values are cut.
pub const MAX_LABEL_VALUE: usize = 128;
/// Most devices a run_start may name.
pub const MAX_DEVICES: usize = 64;
/// Highest rank accepted.
pub const MAX_RANK: u64 = 1 << 20;

/// Why an event was refused: the `reason` label of
/// `accel_events_rejected_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reject {
    /// Not a JSON object, or a required field missing or of the wrong type.
    Malformed,
    /// `v` missing or not 1.
    Version,
    /// An unknown `kind`.
    Kind,
    /// Over [`MAX_DATAGRAM`] bytes.
    Oversize,
    /// A negative, NaN, infinite or out-of-range number, or a bad name.
    InvalidValue,
    /// A step number not above the rank's last one.
    StepBackwards,
    /// Over the sender's or the agent's event rate.
    RateLimited,
    /// The cap on runs (or ranks) is reached.
    TooManyRuns,
}

impl Reject {
    /// Every reason, in label order.
    pub const ALL: [Reject; 8] = [
        Reject::Malformed,
        Reject::Version,
        Reject::Kind,
        Reject::Oversize,
        Reject::InvalidValue,
        Reject::StepBackwards,
        Reject::RateLimited,
        Reject::TooManyRuns,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Malformed => "malformed",
            Reject::Version => "version",
            Reject::Kind => "kind",
            Reject::Oversize => "oversize",
            Reject::InvalidValue => "invalid_value",
            Reject::StepBackwards => "step_backwards",
            Reject::RateLimited => "rate_limited",
            Reject::TooManyRuns => "too_many_runs",
        }
    }
}

/// A device a run names: an index or a UUID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceRef {
    /// NVML index.
    Index(u32),
    /// `GPU-…` UUID.
    Uuid(String),
}

/// The phases a `phase` event may name.
pub const PHASES: [&str; 6] = [
    "init",
    "compile",
    "data_wait",
    "checkpoint_save",
    "checkpoint_load",
    "eval",
];

/// One accepted event.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A rank started (or resumed) the run.
    RunStart {
        /// Run name.
        run: String,
        /// Rank.
        rank: u64,
        /// The devices, when named (else the sender's GPUs).
        devices: Option<Vec<DeviceRef>>,
        /// The step the run resumes after (its checkpoint's step).
        resume_step: Option<u64>,
        /// Run labels, valid and bounded.
        labels: Vec<(String, String)>,
        /// Labels dropped (invalid name, over the count).
        dropped_labels: usize,
    },
    /// A finished training step.
    Step {
        /// Run name.
        run: String,
        /// Rank.
        rank: u64,
        /// Step number, when given.
        step: Option<u64>,
        /// Whole step wall time.
        seconds: f64,
        /// Tokens processed by this rank.
        tokens: f64,
        /// FLOPs this rank computed.
        model_flops: f64,
        /// Data type of the math (default bf16).
        dtype: &'static str,
    },
    /// A finished span of a phase.
    Phase {
        /// Run name.
        run: String,
        /// Rank.
        rank: u64,
        /// A [`PHASES`] name or `custom:<name>`.
        phase: String,
        /// Duration.
        seconds: f64,
    },
    /// A checkpoint holding `step` was saved.
    Checkpoint {
        /// Run name.
        run: String,
        /// Rank.
        rank: u64,
        /// The step saved.
        step: u64,
    },
    /// The rank finished the run.
    RunEnd {
        /// Run name.
        run: String,
        /// Rank.
        rank: u64,
    },
}

impl Event {
    /// The `kind` field, for `accel_events_accepted_total{kind}`.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::RunStart { .. } => "run_start",
            Event::Step { .. } => "step",
            Event::Phase { .. } => "phase",
            Event::Checkpoint { .. } => "checkpoint",
            Event::RunEnd { .. } => "run_end",
        }
    }
}

/// The event kinds, in label order.
pub const KINDS: [&str; 5] = ["run_start", "step", "phase", "checkpoint", "run_end"];

/// Parses one datagram.
pub fn parse(data: &[u8]) -> Result<Event, Reject> {
    if data.len() > MAX_DATAGRAM {
        return Err(Reject::Oversize);
    }
    let v: Value = match serde_json::from_slice(data) {
        Ok(v) => v,
        // JSON has no NaN or infinity; Python's json.dumps writes them
        // anyway, and a huge exponent overflows: both are bad numbers.
        Err(e) => {
            let text = String::from_utf8_lossy(data);
            return Err(
                if ["NaN", "Infinity"].iter().any(|t| text.contains(t))
                    || e.to_string().contains("number out of range")
                {
                    Reject::InvalidValue
                } else {
                    Reject::Malformed
                },
            );
        }
    };
    let o = v.as_object().ok_or(Reject::Malformed)?;
    match o.get("v") {
        Some(Value::Number(n)) if n.as_u64() == Some(1) => {}
        _ => return Err(Reject::Version),
    }
    let kind = o
        .get("kind")
        .and_then(Value::as_str)
        .ok_or(Reject::Malformed)?;
    if !KINDS.contains(&kind) {
        return Err(Reject::Kind);
    }
    let run = run_name(o)?;
    let rank = match o.get("rank") {
        None | Some(Value::Null) => 0,
        Some(v) => uint(v)?
            .filter(|r| *r <= MAX_RANK)
            .ok_or(Reject::InvalidValue)?,
    };
    Ok(match kind {
        "run_start" => {
            let devices = match o.get("devices") {
                None | Some(Value::Null) => None,
                Some(Value::Array(a)) => Some(devices(a)?),
                Some(_) => return Err(Reject::Malformed),
            };
            let resume_step = opt_uint(o, "resume_step")?;
            let (labels, dropped_labels) = match o.get("labels") {
                None | Some(Value::Null) => (Vec::new(), 0),
                Some(Value::Object(m)) => labels(m),
                Some(_) => return Err(Reject::Malformed),
            };
            Event::RunStart {
                run,
                rank,
                devices,
                resume_step,
                labels,
                dropped_labels,
            }
        }
        "step" => {
            let seconds = number(o, "seconds")?.ok_or(Reject::Malformed)?;
            if seconds <= 0.0 {
                return Err(Reject::InvalidValue);
            }
            let dtype = match o.get("dtype") {
                None | Some(Value::Null) => "bf16",
                Some(Value::String(d)) => super::peak::DTYPES
                    .iter()
                    .find(|x| **x == d.as_str())
                    .copied()
                    .ok_or(Reject::InvalidValue)?,
                Some(_) => return Err(Reject::Malformed),
            };
            Event::Step {
                run,
                rank,
                step: opt_uint(o, "step")?,
                seconds,
                tokens: number(o, "tokens")?.unwrap_or(0.0),
                model_flops: number(o, "model_flops")?.unwrap_or(0.0),
                dtype,
            }
        }
        "phase" => {
            let phase = o
                .get("phase")
                .and_then(Value::as_str)
                .ok_or(Reject::Malformed)?;
            let valid = PHASES.contains(&phase)
                || phase.strip_prefix("custom:").is_some_and(|n| {
                    (1..=32).contains(&n.len())
                        && n.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                });
            if !valid {
                return Err(Reject::InvalidValue);
            }
            Event::Phase {
                run,
                rank,
                phase: phase.to_owned(),
                seconds: number(o, "seconds")?.ok_or(Reject::Malformed)?,
            }
        }
        "checkpoint" => Event::Checkpoint {
            run,
            rank,
            step: opt_uint(o, "step")?.ok_or(Reject::Malformed)?,
        },
        _ => Event::RunEnd { run, rank },
    })
}

fn run_name(o: &Map<String, Value>) -> Result<String, Reject> {
    let run = o
        .get("run")
        .and_then(Value::as_str)
        .ok_or(Reject::Malformed)?;
    if run.is_empty() || run.len() > MAX_RUN_LEN || run.chars().any(char::is_control) {
        return Err(Reject::InvalidValue);
    }
    Ok(run.to_owned())
}

/// A non-negative finite number, `None` when absent or null.
fn number(o: &Map<String, Value>, key: &str) -> Result<Option<f64>, Reject> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let v = n.as_f64().ok_or(Reject::InvalidValue)?;
            if (0.0..1e30).contains(&v) {
                Ok(Some(v))
            } else {
                Err(Reject::InvalidValue)
            }
        }
        Some(_) => Err(Reject::Malformed),
    }
}

/// A non-negative integer (`None` inside when it is a number but not one).
fn uint(v: &Value) -> Result<Option<u64>, Reject> {
    match v {
        Value::Number(n) => Ok(n.as_u64()),
        _ => Err(Reject::Malformed),
    }
}

fn opt_uint(o: &Map<String, Value>, key: &str) -> Result<Option<u64>, Reject> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => Ok(Some(uint(v)?.ok_or(Reject::InvalidValue)?)),
    }
}

fn devices(a: &[Value]) -> Result<Vec<DeviceRef>, Reject> {
    if a.len() > MAX_DEVICES {
        return Err(Reject::InvalidValue);
    }
    a.iter()
        .map(|d| match d {
            Value::Number(n) => n
                .as_u64()
                .and_then(|i| u32::try_from(i).ok())
                .map(DeviceRef::Index)
                .ok_or(Reject::InvalidValue),
            Value::String(s) if s.len() <= 96 && !s.is_empty() => match s.parse::<u32>() {
                Ok(i) => Ok(DeviceRef::Index(i)),
                Err(_) => Ok(DeviceRef::Uuid(s.clone())),
            },
            Value::String(_) => Err(Reject::InvalidValue),
            _ => Err(Reject::Malformed),
        })
        .collect()
}

/// Label names the run's own series use, or Prometheus reserves.
const RESERVED: [&str; 8] = [
    "run",
    "rank",
    "instance",
    "job",
    "unit",
    "container",
    "slurm_job",
    "le",
];

/// Whether `k` may be a label name of `accel_run_info`.
pub fn valid_label_name(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= MAX_LABEL_NAME
        && !k.starts_with("__")
        && !RESERVED.contains(&k)
        && k.bytes()
            .enumerate()
            .all(|(i, b)| b.is_ascii_alphabetic() || b == b'_' || (i > 0 && b.is_ascii_digit()))
}

/// The valid labels (values as text, cut to [`MAX_LABEL_VALUE`] bytes), in
/// name order, at most [`MAX_LABELS`]; and how many were dropped.
fn labels(m: &Map<String, Value>) -> (Vec<(String, String)>, usize) {
    let mut out = Vec::new();
    let mut dropped = 0;
    for (k, v) in m {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => {
                dropped += 1;
                continue;
            }
        };
        if !valid_label_name(k) || out.len() >= MAX_LABELS {
            dropped += 1;
            continue;
        }
        let mut cut = MAX_LABEL_VALUE.min(text.len());
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push((k.clone(), text[..cut].to_owned()));
    }
    (out, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Event, Reject> {
        parse(s.as_bytes())
    }

    #[test]
    fn parses_the_documented_examples() {
        let e = p(r#"{"v":1,"kind":"run_start","run":"llama70b-0412","rank":0,"world_size":64,"devices":[0,"GPU-abc","3"],"resume_step":12000,"labels":{"model":"llama-70b","git_sha":"abc","batch_size":1024}}"#).unwrap();
        assert_eq!(
            e,
            Event::RunStart {
                run: "llama70b-0412".into(),
                rank: 0,
                devices: Some(vec![
                    DeviceRef::Index(0),
                    DeviceRef::Uuid("GPU-abc".into()),
                    DeviceRef::Index(3)
                ]),
                resume_step: Some(12000),
                labels: vec![
                    ("batch_size".into(), "1024".into()),
                    ("git_sha".into(), "abc".into()),
                    ("model".into(), "llama-70b".into())
                ],
                dropped_labels: 0,
            }
        );
        let e = p(r#"{"v":1,"kind":"step","run":"r","rank":3,"step":12001,"seconds":1.92,"tokens":4194304,"model_flops":1.2e16,"dtype":"fp8","extra":[1]}"#).unwrap();
        assert_eq!(
            e,
            Event::Step {
                run: "r".into(),
                rank: 3,
                step: Some(12001),
                seconds: 1.92,
                tokens: 4194304.0,
                model_flops: 1.2e16,
                dtype: "fp8"
            }
        );
        assert_eq!(e.kind(), "step");
        assert!(matches!(
            p(r#"{"v":1,"kind":"phase","run":"r","phase":"custom:warm-up_2","seconds":3}"#),
            Ok(Event::Phase { rank: 0, .. })
        ));
        assert!(matches!(
            p(r#"{"v":1,"kind":"checkpoint","run":"r","rank":0,"step":12000}"#),
            Ok(Event::Checkpoint { step: 12000, .. })
        ));
        assert!(matches!(
            p(r#"{"v":1,"kind":"run_end","run":"r","rank":0}"#),
            Ok(Event::RunEnd { .. })
        ));
    }

    #[test]
    fn bad_input_has_a_reason() {
        use Reject::*;
        for (s, want) in [
            ("not json", Malformed),
            ("[1,2]", Malformed),
            (r#"{"v":1,"kind":"step","run":"r"}"#, Malformed),
            (r#"{"v":1,"kind":"step","seconds":1}"#, Malformed),
            (
                r#"{"v":1,"kind":"step","run":"r","seconds":"1"}"#,
                Malformed,
            ),
            (r#"{"kind":"step","run":"r","seconds":1}"#, Version),
            (r#"{"v":2,"kind":"step","run":"r","seconds":1}"#, Version),
            (r#"{"v":1,"kind":"restart","run":"r"}"#, Kind),
            (
                r#"{"v":1,"kind":"step","run":"r","seconds":-1}"#,
                InvalidValue,
            ),
            (
                r#"{"v":1,"kind":"step","run":"r","seconds":0}"#,
                InvalidValue,
            ),
            (
                r#"{"v":1,"kind":"step","run":"r","seconds":NaN}"#,
                InvalidValue,
            ),
            (
                r#"{"v":1,"kind":"step","run":"r","seconds":1,"tokens":Infinity}"#,
                InvalidValue,
            ),
            (
                r#"{"v":1,"kind":"step","run":"r","seconds":1e999}"#,
                InvalidValue,
            ),
            (
                r#"{"v":1,"kind":"step","run":"r","seconds":1,"model_flops":-5}"#,
                InvalidValue,
            ),
            (
                r#"{"v":1,"kind":"step","run":"r","seconds":1,"step":-1}"#,
                InvalidValue,
            ),
            (
                r#"{"v":1,"kind":"step","run":"r","seconds":1,"step":1.5}"#,
                InvalidValue,
            ),
            (
                r#"{"v":1,"kind":"step","run":"r","seconds":1,"dtype":"int4"}"#,
                InvalidValue,
            ),
            (
                r#"{"v":1,"kind":"step","run":"","seconds":1}"#,
                InvalidValue,
            ),
            (
                r#"{"v":1,"kind":"step","run":"a\nb","seconds":1}"#,
                InvalidValue,
            ),
            (
                r#"{"v":1,"kind":"phase","run":"r","phase":"lunch","seconds":1}"#,
                InvalidValue,
            ),
            (
                r#"{"v":1,"kind":"phase","run":"r","phase":"custom:","seconds":1}"#,
                InvalidValue,
            ),
            (
                r#"{"v":1,"kind":"phase","run":"r","phase":"eval","seconds":-1}"#,
                InvalidValue,
            ),
            (
                r#"{"v":1,"kind":"run_start","run":"r","rank":-1}"#,
                InvalidValue,
            ),
            (
                r#"{"v":1,"kind":"run_start","run":"r","devices":[-1]}"#,
                InvalidValue,
            ),
            (
                r#"{"v":1,"kind":"run_start","run":"r","devices":"all"}"#,
                Malformed,
            ),
        ] {
            assert_eq!(p(s), Err(want), "{s}");
        }
        let long = format!(r#"{{"v":1,"kind":"run_end","run":"{}"}}"#, "x".repeat(129));
        assert_eq!(p(&long), Err(InvalidValue));
        let big = vec![b' '; MAX_DATAGRAM + 1];
        assert_eq!(parse(&big), Err(Oversize));
    }

    #[test]
    fn labels_are_bounded() {
        let mut m = String::from("{");
        for i in 0..20 {
            m.push_str(&format!("\"k{i:02}\":\"{}\",", "é".repeat(100)));
        }
        m.push_str("\"bad-name\":\"x\",\"run\":\"x\",\"__x\":\"y\",\"obj\":{}}");
        let s = format!(r#"{{"v":1,"kind":"run_start","run":"r","labels":{m}}}"#);
        let Ok(Event::RunStart {
            labels,
            dropped_labels,
            ..
        }) = p(&s)
        else {
            panic!()
        };
        assert_eq!(labels.len(), MAX_LABELS);
        assert_eq!(dropped_labels, 4 + 4);
        assert!(labels
            .iter()
            .all(|(_, v)| v.len() <= MAX_LABEL_VALUE && v.len() >= 126));
        assert!(valid_label_name("git_sha") && !valid_label_name("9a") && !valid_label_name("le"));
    }

    mod generated {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(proptest::test_runner::Config { cases: 2000, ..Default::default() })]

            /// Arbitrary bytes are an event or a reason, never a panic.
            #[test]
            fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..600)) {
                let _ = parse(&b);
            }

            /// A valid step with one field replaced by an arbitrary JSON
            /// value is accepted or refused, never a panic; when accepted,
            /// its numbers are finite and non-negative.
            #[test]
            fn mangled_fields_are_refused_or_sane(
                field in proptest::sample::select(vec!["v", "kind", "run", "rank", "step", "seconds", "tokens", "model_flops", "dtype"]),
                value in prop_oneof![
                    any::<i64>().prop_map(|n| n.to_string()),
                    any::<f64>().prop_map(|f| format!("{f:e}")),
                    "[a-z0-9:-]{0,8}".prop_map(|s| format!("{s:?}")),
                    Just("null".to_owned()),
                    Just("[]".to_owned()),
                ],
            ) {
                let mut m: serde_json::Map<String, Value> = serde_json::from_str(
                    r#"{"v":1,"kind":"step","run":"r","rank":0,"step":1,"seconds":1.5,"tokens":1,"model_flops":1,"dtype":"bf16"}"#,
                ).unwrap();
                if let Ok(v) = serde_json::from_str::<Value>(&value) {
                    m.insert(field.to_owned(), v);
                }
                let text = serde_json::to_string(&m).unwrap();
                if let Ok(Event::Step { seconds, tokens, model_flops, .. }) = parse(text.as_bytes()) {
                    prop_assert!(seconds.is_finite() && seconds > 0.0);
                    prop_assert!(tokens.is_finite() && tokens >= 0.0);
                    prop_assert!(model_flops.is_finite() && model_flops >= 0.0);
                }
            }
        }
    }
}
