//! Time-varying values: curves evaluated at `t` = seconds since `nvmlInit`.
//!
//! Every curve also has an exact integral from 0 to `t`, so counters that
//! NVML derives from a rate (energy from power, NVLink bytes from
//! throughput) and GPM averages over an interval agree with the gauges.

use std::f64::consts::TAU;

/// A value over time. See the README for the scenario syntax.
#[derive(Debug, Clone, PartialEq)]
pub enum Curve {
    /// The same value at every `t`.
    Const(f64),
    /// `from` until `start`, then linear to `to` over `duration` seconds, then `to`.
    Ramp {
        from: f64,
        to: f64,
        start: f64,
        duration: f64,
    },
    /// `high` for the first `duty` fraction of each `period`, `low` for the rest.
    Square {
        low: f64,
        high: f64,
        period: f64,
        duty: f64,
        phase: f64,
    },
    /// `mean + amplitude * sin(2π (t + phase) / period)`.
    Sine {
        mean: f64,
        amplitude: f64,
        period: f64,
        phase: f64,
    },
    /// Piecewise constant: `(time, value)` points sorted by time; the first
    /// value also holds before the first point.
    Steps(Vec<(f64, f64)>),
    /// `mul * base + add` (how defaults derive from utilisation).
    Affine {
        base: Box<Curve>,
        mul: f64,
        add: f64,
    },
    /// `Σ weight · curve` (a MIG parent's activity from its instances).
    Sum(Vec<(f64, Curve)>),
}

impl Curve {
    /// `mul * base + add`.
    pub fn affine(base: &Curve, mul: f64, add: f64) -> Curve {
        Curve::Affine {
            base: Box::new(base.clone()),
            mul,
            add,
        }
    }

    /// The value at `t`.
    pub fn at(&self, t: f64) -> f64 {
        match self {
            Curve::Const(c) => *c,
            Curve::Ramp {
                from,
                to,
                start,
                duration,
            } => {
                if t < *start {
                    *from
                } else if t >= start + duration {
                    *to
                } else {
                    from + (to - from) * (t - start) / duration
                }
            }
            Curve::Square {
                low,
                high,
                period,
                duty,
                phase,
            } => {
                let x = (t + phase).rem_euclid(*period);
                if x < duty * period {
                    *high
                } else {
                    *low
                }
            }
            Curve::Sine {
                mean,
                amplitude,
                period,
                phase,
            } => mean + amplitude * (TAU * (t + phase) / period).sin(),
            Curve::Steps(points) => {
                let mut v = points.first().map_or(0.0, |p| p.1);
                for &(pt, pv) in points {
                    if pt <= t {
                        v = pv;
                    } else {
                        break;
                    }
                }
                v
            }
            Curve::Affine { base, mul, add } => mul * base.at(t) + add,
            Curve::Sum(parts) => parts.iter().map(|(w, c)| w * c.at(t)).sum(),
        }
    }

    /// The integral of the curve from 0 to `t` (`t >= 0`).
    pub fn integral(&self, t: f64) -> f64 {
        let t = t.max(0.0);
        match self {
            Curve::Const(c) => c * t,
            Curve::Ramp {
                from,
                to,
                start,
                duration,
            } => {
                let before = t.min(*start);
                let mut sum = from * before;
                if t > *start {
                    let u = (t - start).min(*duration);
                    if *duration > 0.0 {
                        sum += from * u + (to - from) * u * u / (2.0 * duration);
                    }
                    if t > start + duration {
                        sum += to * (t - start - duration);
                    }
                }
                sum
            }
            Curve::Square {
                low,
                high,
                period,
                duty,
                phase,
            } => {
                // Antiderivative of the unshifted wave from 0 to x.
                let g = |x: f64| {
                    let n = (x / period).floor();
                    let r = x - n * period;
                    let per_period = high * duty * period + low * (1.0 - duty) * period;
                    n * per_period
                        + high * r.min(duty * period)
                        + low * (r - duty * period).max(0.0)
                };
                g(t + phase) - g(*phase)
            }
            Curve::Sine {
                mean,
                amplitude,
                period,
                phase,
            } => {
                mean * t
                    - amplitude * period / TAU
                        * ((TAU * (t + phase) / period).cos() - (TAU * phase / period).cos())
            }
            Curve::Steps(points) => {
                let Some(first) = points.first() else {
                    return 0.0;
                };
                let mut sum = 0.0;
                let mut cursor = 0.0;
                let mut value = first.1;
                for &(pt, pv) in points {
                    if pt >= t {
                        break;
                    }
                    if pt > cursor {
                        sum += value * (pt - cursor);
                        cursor = pt;
                    }
                    value = pv;
                }
                sum + value * (t - cursor)
            }
            Curve::Affine { base, mul, add } => mul * base.integral(t) + add * t,
            Curve::Sum(parts) => parts.iter().map(|(w, c)| w * c.integral(t)).sum(),
        }
    }

    /// The mean over `[a, b]`; the value at `b` when the interval is empty.
    pub fn mean(&self, a: f64, b: f64) -> f64 {
        if b - a < 1e-9 {
            self.at(b)
        } else {
            (self.integral(b) - self.integral(a)) / (b - a)
        }
    }

    /// Parses a curve from its scenario form: a number, or a table with
    /// `kind` = "const" | "ramp" | "square" | "sine" | "steps".
    pub fn from_toml(v: &toml::Value) -> Result<Curve, String> {
        if let Some(x) = number(v) {
            return Ok(Curve::Const(x));
        }
        let table = v
            .as_table()
            .ok_or_else(|| format!("a curve is a number or a table with `kind`, not {v:?}"))?;
        let kind = table.get("kind").and_then(|k| k.as_str()).ok_or(
            "a curve table needs `kind` = \"const\", \"ramp\", \"square\", \"sine\" or \"steps\"",
        )?;
        let allowed: &[&str] = match kind {
            "const" => &["kind", "value"],
            "ramp" => &["kind", "from", "to", "start", "duration"],
            "square" => &["kind", "low", "high", "period", "duty", "phase"],
            "sine" => &["kind", "mean", "amplitude", "period", "phase"],
            "steps" => &["kind", "points"],
            other => return Err(format!("unknown curve kind {other:?}")),
        };
        if let Some(key) = table.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(format!(
                "unknown key {key:?} in a {kind} curve (allowed: {})",
                allowed.join(", ")
            ));
        }
        let get = |key: &str, default: Option<f64>| -> Result<f64, String> {
            match table.get(key) {
                Some(x) => {
                    number(x).ok_or_else(|| format!("{kind} curve: `{key}` must be a number"))
                }
                None => default.ok_or_else(|| format!("{kind} curve: `{key}` is required")),
            }
        };
        let curve = match kind {
            "const" => Curve::Const(get("value", None)?),
            "ramp" => Curve::Ramp {
                from: get("from", Some(0.0))?,
                to: get("to", None)?,
                start: get("start", Some(0.0))?,
                duration: get("duration", None)?,
            },
            "square" => Curve::Square {
                low: get("low", None)?,
                high: get("high", None)?,
                period: get("period", None)?,
                duty: get("duty", Some(0.5))?,
                phase: get("phase", Some(0.0))?,
            },
            "sine" => Curve::Sine {
                mean: get("mean", None)?,
                amplitude: get("amplitude", None)?,
                period: get("period", None)?,
                phase: get("phase", Some(0.0))?,
            },
            _ => {
                let points = table
                    .get("points")
                    .and_then(|p| p.as_array())
                    .ok_or("steps curve: `points` = [[time, value], ...] is required")?;
                let mut parsed = Vec::with_capacity(points.len());
                for p in points {
                    let pair = p.as_array().filter(|a| a.len() == 2);
                    let pair = pair
                        .and_then(|a| Some((number(&a[0])?, number(&a[1])?)))
                        .ok_or("steps curve: each point is [time, value]")?;
                    parsed.push(pair);
                }
                if parsed.is_empty() {
                    return Err("steps curve: `points` must not be empty".into());
                }
                parsed.sort_by(|a, b| a.0.total_cmp(&b.0));
                Curve::Steps(parsed)
            }
        };
        curve.validate().map(|()| curve)
    }

    fn validate(&self) -> Result<(), String> {
        let finite = |x: f64| x.is_finite();
        match self {
            Curve::Const(c) if !finite(*c) => Err("curve values must be finite".into()),
            Curve::Ramp {
                start, duration, ..
            } if *start < 0.0 || *duration < 0.0 => {
                Err("ramp curve: `start` and `duration` must be >= 0".into())
            }
            Curve::Square {
                period,
                duty,
                phase,
                ..
            } if *period <= 0.0 || !(0.0..=1.0).contains(duty) || *phase < 0.0 => {
                Err("square curve: `period` must be > 0, `duty` in 0..=1, `phase` >= 0".into())
            }
            Curve::Sine { period, .. } if *period <= 0.0 => {
                Err("sine curve: `period` must be > 0".into())
            }
            Curve::Steps(points) if points.iter().any(|p| p.0 < 0.0) => {
                Err("steps curve: times must be >= 0".into())
            }
            _ => Ok(()),
        }
    }
}

fn number(v: &toml::Value) -> Option<f64> {
    match v {
        toml::Value::Integer(i) => Some(*i as f64),
        toml::Value::Float(f) if f.is_finite() => Some(*f),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Numeric integral, to check the closed forms.
    fn numeric(c: &Curve, t: f64) -> f64 {
        let n = 200_000;
        let dt = t / n as f64;
        (0..n).map(|i| c.at((i as f64 + 0.5) * dt) * dt).sum()
    }

    #[test]
    fn integrals_match_numeric_integration() {
        let curves = [
            Curve::Const(3.5),
            Curve::Ramp {
                from: 10.0,
                to: 90.0,
                start: 2.0,
                duration: 5.0,
            },
            Curve::Ramp {
                from: 10.0,
                to: 90.0,
                start: 2.0,
                duration: 0.0,
            },
            Curve::Square {
                low: 5.0,
                high: 80.0,
                period: 3.0,
                duty: 0.3,
                phase: 0.7,
            },
            Curve::Sine {
                mean: 600.0,
                amplitude: 50.0,
                period: 7.0,
                phase: 1.0,
            },
            Curve::Steps(vec![(1.0, 4.0), (2.5, 9.0), (6.0, 1.0)]),
            Curve::affine(
                &Curve::Square {
                    low: 0.0,
                    high: 100.0,
                    period: 2.0,
                    duty: 0.5,
                    phase: 0.0,
                },
                5.0,
                70.0,
            ),
            Curve::Sum(vec![
                (3.0 / 7.0, Curve::Const(70.0)),
                (2.0 / 7.0, Curve::Steps(vec![(1.0, 4.0), (2.5, 9.0)])),
            ]),
        ];
        for c in &curves {
            for t in [0.0, 0.3, 1.7, 4.2, 9.9] {
                let exact = c.integral(t);
                let approx = numeric(c, t);
                assert!(
                    (exact - approx).abs() < 1e-2 * (1.0 + approx.abs()),
                    "{c:?} at {t}: {exact} vs {approx}"
                );
            }
        }
    }

    #[test]
    fn parses_every_kind_and_rejects_typos() {
        let parse = |s: &str| {
            let v: toml::Table = toml::from_str(&format!("c = {s}")).unwrap();
            Curve::from_toml(&v["c"])
        };
        assert_eq!(parse("42").unwrap(), Curve::Const(42.0));
        assert_eq!(
            parse("{ kind = \"const\", value = 1.5 }").unwrap(),
            Curve::Const(1.5)
        );
        assert!(matches!(
            parse("{ kind = \"square\", low = 1, high = 2, period = 4 }").unwrap(),
            Curve::Square { duty, .. } if duty == 0.5
        ));
        assert!(parse("{ kind = \"sine\", mean = 1, amplitude = 2, period = 3 }").is_ok());
        assert!(parse("{ kind = \"ramp\", to = 2, duration = 3 }").is_ok());
        assert!(parse("{ kind = \"steps\", points = [[3, 1], [0, 2]] }").is_ok());
        assert!(parse("{ kind = \"square\", low = 1, high = 2, periode = 4 }").is_err());
        assert!(parse("{ kind = \"wobble\" }").is_err());
        assert!(parse("\"fast\"").is_err());
        assert!(parse("{ kind = \"sine\", mean = 1, amplitude = 2, period = 0 }").is_err());
    }

    #[test]
    fn steps_hold_the_first_value_before_the_first_point() {
        let c = Curve::Steps(vec![(2.0, 5.0), (4.0, 7.0)]);
        assert_eq!(c.at(0.0), 5.0);
        assert_eq!(c.at(3.9), 5.0);
        assert_eq!(c.at(4.0), 7.0);
        assert_eq!(c.integral(5.0), 4.0 * 5.0 + 7.0);
    }
}
