//! What the server applies to every request besides authentication: the
//! `http_server_config` headers added to every response, and the
//! `rate_limit` token bucket.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use hyper::header::{HeaderName, HeaderValue};

use super::schema::{HttpFile, RateLimitFile};

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

/// The `rate_limit` section: `None` without an interval or with a zero one.
pub(super) fn rate_limit(r: RateLimitFile) -> Result<Option<RateLimiter>, String> {
    let RateLimitFile {
        burst,
        interval: Some(interval),
    } = r
    else {
        return Ok(None);
    };
    let interval = accel_collectors::options::parse_duration(&interval)
        .map_err(|e| format!("rate_limit: interval {e}"))?;
    Ok((!interval.is_zero()).then(|| RateLimiter::new(interval, burst.unwrap_or(0))))
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
    }
}
