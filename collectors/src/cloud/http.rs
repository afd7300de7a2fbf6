//! A tiny blocking HTTP/1.1 client for metadata servers: plain http, one
//! request per connection, strict connect and read deadlines. Enough for
//! 169.254.169.254 and metadata.google.internal; no TLS, no redirects.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Largest body accepted; metadata answers are a few KiB.
const MAX_BODY: usize = 1 << 20;

/// A response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// A header's value (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `method url` with `headers` and reads the whole answer; the whole
/// exchange must finish within `timeout` (connecting within `timeout` too).
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<Response, String> {
    let deadline = Instant::now() + timeout;
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// is supported"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr_text = if hostport.contains(':') && !hostport.ends_with(']') {
        hostport.to_owned()
    } else {
        format!("{hostport}:80")
    };
    let addrs: Vec<_> = addr_text
        .to_socket_addrs()
        .map_err(|e| format!("{hostport}: {e}"))?
        .collect();
    let addr = addrs
        .first()
        .ok_or_else(|| format!("{hostport}: no address"))?;
    let mut s =
        TcpStream::connect_timeout(addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    let left = |d: Instant| {
        d.checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| "timed out".to_owned())
    };
    s.set_write_timeout(Some(left(deadline)?))
        .map_err(|e| e.to_string())?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\nUser-Agent: accel-agent\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "PUT" || method == "POST" {
        req.push_str("Content-Length: 0\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        s.set_read_timeout(Some(left(deadline)?))
            .map_err(|e| e.to_string())?;
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                raw.extend_from_slice(&buf[..n]);
                if raw.len() > MAX_BODY + 65536 {
                    return Err("response too large".into());
                }
                if let Some(r) = parse(&raw, false)? {
                    return Ok(r);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err("timed out".into())
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    parse(&raw, true)?.ok_or_else(|| "connection closed mid-response".into())
}

/// Parses a complete response from `raw`; `Ok(None)` when more bytes are
/// needed (`eof`: the peer closed, so a body without a length ends here).
pub fn parse(raw: &[u8], eof: bool) -> Result<Option<Response>, String> {
    let Some(split) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if eof {
            Err("malformed response: no end of headers".into())
        } else {
            Ok(None)
        };
    };
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| "non-UTF-8 headers")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("malformed status line {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("malformed status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
    };
    let body = &raw[split + 4..];
    let body: Vec<u8> = if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        match dechunk(body)? {
            Some(b) => b,
            None if eof => return Err("truncated chunked body".into()),
            None => return Ok(None),
        }
    } else if let Some(len) = get("content-length") {
        let len: usize = len.parse().map_err(|_| "bad Content-Length")?;
        if len > MAX_BODY {
            return Err("response too large".into());
        }
        if body.len() < len {
            return if eof {
                Err("truncated body".into())
            } else {
                Ok(None)
            };
        }
        body[..len].to_vec()
    } else if eof {
        body.to_vec()
    } else {
        return Ok(None);
    };
    let body = String::from_utf8(body).map_err(|_| "non-UTF-8 body")?;
    Ok(Some(Response {
        status,
        headers,
        body,
    }))
}

fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut out = Vec::new();
    loop {
        let Some(nl) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size_text = std::str::from_utf8(&rest[..nl]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let n = usize::from_str_radix(size_text, 16).map_err(|_| "bad chunk size")?;
        if n == 0 {
            return Ok(Some(out));
        }
        if out.len() + n > MAX_BODY {
            return Err("response too large".into());
        }
        if rest.len() < nl + 2 + n + 2 {
            return Ok(None);
        }
        out.extend_from_slice(&rest[nl + 2..nl + 2 + n]);
        rest = &rest[nl + 2 + n + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lengths_and_chunks() {
        let r = parse(
            b"HTTP/1.1 200 OK\r\nETag: abc\r\nContent-Length: 4\r\n\r\nNONE",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (r.status, r.body.as_str(), r.header("etag")),
            (200, "NONE", Some("abc"))
        );
        assert!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nNONE", false)
                .unwrap()
                .is_none()
        );
        let c = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nNO\r\n2;x\r\nNE\r\n0\r\n\r\n";
        assert_eq!(parse(c, false).unwrap().unwrap().body, "NONE");
        assert_eq!(
            parse(b"HTTP/1.0 404 NF\r\n\r\nx", true)
                .unwrap()
                .unwrap()
                .status,
            404
        );
        assert!(parse(b"garbage\r\n\r\n", true).is_err());
        assert!(parse(b"HTTP/1.1 200", true).is_err());
    }
}
