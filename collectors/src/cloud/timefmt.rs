//! RFC 3339 (GCE, AWS spot) and RFC 1123-like (Azure, AWS scheduled events)
//! timestamps to Unix seconds, by hand: two formats do not need a crate.

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn num(s: &str) -> Option<i64> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

fn valid(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64) -> bool {
    y >= 1970 && (1..=12).contains(&mo) && (1..=31).contains(&d) && h < 24 && mi < 60 && s <= 60
}

/// `2024-05-01T10:00:00Z`, `2024-05-01T10:00:00.123+02:00`.
pub fn rfc3339(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.len() < 20 || !s.is_char_boundary(10) || !s.is_char_boundary(19) {
        return None;
    }
    let (date, rest) = s.split_at(10);
    let sep = rest.as_bytes()[0];
    if !matches!(sep, b'T' | b't' | b' ') {
        return None;
    }
    let (time, mut zone) = rest[1..].split_at(8);
    let mut d = date.split('-');
    let (y, mo, da) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    let mut t = time.split(':');
    let (h, mi, se) = (num(t.next()?)?, num(t.next()?)?, num(t.next()?)?);
    if !valid(y, mo, da, h, mi, se) {
        return None;
    }
    let mut frac = 0.0;
    if let Some(f) = zone.strip_prefix('.') {
        let end = f.find(|c: char| !c.is_ascii_digit()).unwrap_or(f.len());
        if end == 0 {
            return None;
        }
        frac = format!("0.{}", &f[..end]).parse().ok()?;
        zone = &f[end..];
    }
    let offset = match zone {
        "Z" | "z" => 0,
        // Bytes, not string slices: a multibyte character in the suffix
        // must not split a slice (`+0é:0` once panicked here).
        z if z.len() == 6
            && (z.starts_with('+') || z.starts_with('-'))
            && z.as_bytes()[3] == b':' =>
        {
            let v = num(z.get(1..3)?)? * 3600 + num(z.get(4..6)?)? * 60;
            if z.starts_with('-') {
                -v
            } else {
                v
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, da) * 86400 + h * 3600 + mi * 60 + se - offset;
    Some(secs as f64 + frac)
}

/// `Mon, 19 Sep 2016 18:29:47 GMT` (RFC 1123), also without the weekday
/// (`21 Jan 2019 09:00:43 GMT`, as AWS writes scheduled events).
pub fn rfc1123(s: &str) -> Option<f64> {
    let s = s.trim();
    let s = match s.split_once(", ") {
        Some((_, rest)) => rest,
        None => s,
    };
    let f: Vec<&str> = s.split_ascii_whitespace().collect();
    if f.len() != 5 || !matches!(f[4], "GMT" | "UTC" | "+0000") {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mo = MONTHS.iter().position(|m| *m == f[1])? as i64 + 1;
    let (d, y) = (num(f[0])?, num(f[2])?);
    let mut t = f[3].split(':');
    let (h, mi, se) = (num(t.next()?)?, num(t.next()?)?, num(t.next()?)?);
    if t.next().is_some() || !valid(y, mo, d, h, mi, se) {
        return None;
    }
    Some((days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se) as f64)
}

/// Either format.
pub fn any(s: &str) -> Option<f64> {
    rfc3339(s).or_else(|| rfc1123(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(rfc3339("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(rfc3339("2024-05-01T10:00:00Z"), Some(1714557600.0));
        assert_eq!(rfc3339("2024-05-01T12:00:00+02:00"), Some(1714557600.0));
        assert_eq!(rfc3339("2024-05-01T10:00:00.5Z"), Some(1714557600.5));
        assert_eq!(rfc1123("Wed, 01 May 2024 10:00:00 GMT"), Some(1714557600.0));
        assert_eq!(rfc1123("1 May 2024 10:00:00 GMT"), Some(1714557600.0));
        assert_eq!(any("Wed, 01 May 2024 10:00:00 GMT"), Some(1714557600.0));
        for bad in [
            "",
            "2024-13-01T00:00:00Z",
            "2024-05-01T10:00:00",
            "x",
            "01 Foo 2024 10:00:00 GMT",
            "2024-05-01T1é:00:00Z",
            // Multibyte characters where the zone's fields are sliced.
            "2024-05-01T10:00:00+0é:0",
            "2024-05-01T10:00:00+é0:0",
            "2024-05-01T10:00:00+00:é",
            "2024-05-01T10:00:00.5+0é:0",
        ] {
            assert_eq!(any(bad), None, "{bad}");
        }
    }
}
