//! What the server applies to every request besides authentication: the
//! `http_server_config` headers added to every response, and the
//! `rate_limit` token bucket.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use hyper::header::{HeaderName, HeaderValue};

use super::schema::{GoDuration, HttpFile, RateLimitFile};

/// The headers a web config may set, and their allowed values (none listed:
/// any value), as in the exporter-toolkit.
const EXTRA_HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// The `http_server_config` section's headers, checked against
/// [`EXTRA_HEADERS`]; `http2: true` is accepted with a warning.
pub(super) fn headers(
    http: HttpFile,
    warnings: &mut Vec<String>,
) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let mut headers = Vec::new();
    if http.http2 == Some(true) {
        warnings.push("http_server_config: http2 is not supported; serving HTTP/1.1".into());
    }
    for (name, value) in http.headers.unwrap_or_default() {
        let (_, allowed) = EXTRA_HEADERS
            .iter()
            .find(|(n, _)| *n == name)
            .ok_or_else(|| format!("HTTP header {name:?} can not be configured"))?;
        if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
            return Err(format!(
                "invalid value for {name}: expected one of {allowed:?}, got {value:?}"
            ));
        }
        let value = HeaderValue::from_str(&value)
            .map_err(|_| format!("invalid value for {name}: {value:?}"))?;
        headers.push((
            HeaderName::from_bytes(name.as_bytes()).expect("valid"),
            value,
        ));
    }
    Ok(headers)
}

/// The `rate_limit` section: `None` without an interval or with a zero (or
/// negative) one, as in the exporter-toolkit. A `burst` of 0 or less with
/// an interval refuses every request, as Go's rate limiter does.
pub(super) fn rate_limit(r: RateLimitFile) -> Result<Option<RateLimiter>, String> {
    let RateLimitFile {
        burst,
        interval: Some(interval),
    } = r
    else {
        return Ok(None);
    };
    let nanos = match interval {
        GoDuration::Nanos(n) => i128::from(n),
        GoDuration::Text(t) => go_duration(&t).ok_or_else(|| {
            format!("rate_limit: interval {t:?} is not a duration (Go's syntax, e.g. 0, 100ms, 1s, 1m30s)")
        })?,
    };
    if nanos <= 0 {
        return Ok(None);
    }
    let interval = Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
    let burst = u32::try_from(burst.unwrap_or(0).max(0)).unwrap_or(u32::MAX);
    Ok(Some(RateLimiter::new(interval, burst)))
}

/// Go's `time.ParseDuration`: an optional sign, then decimal numbers each
/// with a unit (ns, us, µs, ms, s, m, h), or a bare `0`; in nanoseconds.
fn go_duration(s: &str) -> Option<i128> {
    let (negative, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let number = &rest[..number_len];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return None;
        }
        let value: f64 = number.parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    // Go refuses what overflows an int64 of nanoseconds.
    if total > 9.223_372_036_854_775e18 {
        return None;
    }
    let total = total as i128;
    Some(if negative { -total } else { total })
}

/// The exporter-toolkit's `rate_limit`: a token bucket of `burst` requests
/// refilled by one every `interval`; requests beyond it get 429.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    burst: u32,
    /// Tokens left, and when they were counted.
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    fn new(interval: Duration, burst: u32) -> Self {
        Self {
            interval,
            burst,
            state: Mutex::new((f64::from(burst), Instant::now())),
        }
    }

    /// Whether one more request may go through now.
    pub fn allow(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let refill = now.duration_since(s.1).as_secs_f64() / self.interval.as_secs_f64();
        s.0 = (s.0 + refill).min(f64::from(self.burst));
        s.1 = now;
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limiter() {
        let l = RateLimiter::new(Duration::from_secs(3600), 2);
        assert!(l.allow() && l.allow() && !l.allow());
        let l = RateLimiter::new(Duration::from_secs(1), 0);
        assert!(!l.allow(), "burst 0 refuses all, as Go's limiter");
    }

    #[test]
    fn go_durations() {
        for (s, want) in [
            ("0", Some(0)),
            ("0s", Some(0)),
            ("1s", Some(1_000_000_000)),
            ("1m30s", Some(90_000_000_000)),
            ("1.5h", Some(5_400_000_000_000)),
            ("100ms", Some(100_000_000)),
            ("10us", Some(10_000)),
            ("-1s", Some(-1_000_000_000)),
            ("1d", None),
            ("1", None),
            ("", None),
            ("s", None),
            ("1..2s", None),
            ("soon", None),
        ] {
            assert_eq!(go_duration(s), want, "{s}");
        }
        let rl = |interval| {
            rate_limit(RateLimitFile {
                burst: Some(1),
                interval: Some(interval),
            })
        };
        assert!(rl(GoDuration::Nanos(0)).unwrap().is_none());
        assert!(rl(GoDuration::Text("0".into())).unwrap().is_none());
        assert!(rl(GoDuration::Text("0s".into())).unwrap().is_none());
        assert!(rl(GoDuration::Text("1s".into())).unwrap().is_some());
        assert!(rl(GoDuration::Text("1d".into())).is_err());
    }
}
