//! The one blocking HTTP/1.1 client of the project, on hyper's HTTP/1
//! client connection: plain http, one request per connection, deadlines to
//! connect, for each read and for the whole exchange, a cap on the body.
//! Enough for the cloud metadata servers (169.254.169.254,
//! metadata.google.internal) and for `accel-agent profile` reading the
//! daemon's /metrics; no TLS, no redirects.
//!
//! Its callers are plain threads, so each request runs on a current-thread
//! tokio runtime of its own, made for it and dropped with it. Whatever the
//! server sends (a malformed head, bad or huge chunk sizes, a truncated
//! body) is an `Err`, never a panic: hyper parses, and this module only
//! counts bytes.

use std::error::Error as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{CONNECTION, CONTENT_LENGTH, HOST, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

/// Largest body [`request`] accepts; metadata answers are a few KiB.
const MAX_BODY: usize = 1 << 20;

/// How long an exchange may take, and how much it may read.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// To connect.
    pub connect: Duration,
    /// For the answer's head, then for each piece of its body.
    pub read: Duration,
    /// For the whole exchange, connecting included.
    pub total: Duration,
    /// The largest body read; a larger one is an error.
    pub max_body: usize,
}

/// Largest response head (status line and headers) accepted.
const MAX_HEAD: usize = 64 << 10;

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

/// Sends `method url` with `headers` and reads the whole answer, at most
/// 1 MiB of it; the whole exchange, connecting included, must finish within
/// `timeout`.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> Result<Response, String> {
    let limits = Limits {
        connect: timeout,
        read: timeout,
        total: timeout,
        max_body: MAX_BODY,
    };
    request_with(method, url, headers, &limits)
}

/// As [`request`], within `limits`.
pub fn request_with(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    limits: &Limits,
) -> Result<Response, String> {
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
    let addr = addr_text
        .to_socket_addrs()
        .map_err(|e| format!("{hostport}: {e}"))?
        .next()
        .ok_or_else(|| format!("{hostport}: no address"))?;
    let method =
        Method::from_bytes(method.as_bytes()).map_err(|_| format!("bad method {method:?}"))?;
    let mut req = Request::builder()
        .method(method.clone())
        .uri(path)
        .header(HOST, hostport)
        .header(CONNECTION, "close")
        .header(USER_AGENT, "accel-agent");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if method == Method::PUT || method == Method::POST {
        req = req.header(CONTENT_LENGTH, "0");
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    rt.block_on(async {
        tokio::time::timeout(limits.total, exchange(addr, req, limits))
            .await
            .unwrap_or_else(|_| Err("timed out".into()))
    })
}

/// A hyper error with its causes ("error reading a body from connection:
/// invalid chunk size: overflow").
fn describe(what: &str, e: hyper::Error) -> String {
    let mut s = format!("{what}: {e}");
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(&format!(": {c}"));
        cause = c.source();
    }
    s
}

async fn exchange(
    addr: SocketAddr,
    req: Request<Empty<Bytes>>,
    limits: &Limits,
) -> Result<Response, String> {
    let stream = tokio::time::timeout(limits.connect, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| format!("connect {addr}: {e}"))?;
    exchange_on(stream, req, limits).await
}

/// The exchange over a connected stream (a socket; in the property tests,
/// an in-memory pipe the answer is written into).
async fn exchange_on<S>(
    stream: S,
    req: Request<Empty<Bytes>>,
    limits: &Limits,
) -> Result<Response, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let timed_out = |what: &str| format!("{what} timed out");
    let (mut send, conn) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(MAX_HEAD)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| describe("handshake", e))?;
    // Drives the connection; the runtime ends it when the request is done.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = tokio::time::timeout(limits.read, send.send_request(req))
        .await
        .map_err(|_| timed_out("read"))?
        .map_err(|e| describe("read", e))?;
    let status = resp.status().as_u16();
    let headers: Vec<(String, String)> = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).trim().to_owned(),
            )
        })
        .collect();
    let announced = resp
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limits.max_body as u64) {
        return Err("response too large".into());
    }
    let mut body = Vec::new();
    let mut incoming = resp.into_body();
    while let Some(frame) = tokio::time::timeout(limits.read, incoming.frame())
        .await
        .map_err(|_| timed_out("read"))?
    {
        let frame = frame.map_err(|e| describe("read", e))?;
        if let Ok(data) = frame.into_data() {
            if body.len() + data.len() > limits.max_body {
                return Err("response too large".into());
            }
            body.extend_from_slice(&data);
        }
    }
    let body = String::from_utf8(body).map_err(|_| "non-UTF-8 body")?;
    Ok(Response {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::time::Instant;

    /// A server for one connection: reads the request head, sends `answer`
    /// as raw bytes, then waits `linger` before closing. Returns its URL and
    /// the request head it received.
    fn serve(answer: Vec<u8>, linger: Duration) -> (String, mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap_or(0) == 1 {
                head.push(b[0]);
            }
            let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
            let _ = s.write_all(&answer);
            std::thread::sleep(linger);
        });
        (url, rx)
    }

    fn get(answer: &[u8]) -> Result<Response, String> {
        let (url, _) = serve(answer.to_vec(), Duration::ZERO);
        request("GET", &format!("{url}/x"), &[], Duration::from_secs(5))
    }

    #[test]
    fn lengths_chunks_and_no_length() {
        let r = get(b"HTTP/1.1 200 OK\r\nETag: abc\r\nContent-Length: 4\r\n\r\nNONE").unwrap();
        assert_eq!(
            (r.status, r.body.as_str(), r.header("etag")),
            (200, "NONE", Some("abc"))
        );
        let r = get(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nNO\r\n2;x\r\nNE\r\n0\r\n\r\n")
            .unwrap();
        assert_eq!(r.body, "NONE");
        // No length: the body ends when the server closes.
        let r = get(b"HTTP/1.0 404 NF\r\n\r\nx").unwrap();
        assert_eq!((r.status, r.body.as_str()), (404, "x"));
    }

    #[test]
    fn sends_method_headers_and_length() {
        let (url, head) = serve(
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntok".to_vec(),
            Duration::ZERO,
        );
        let r = request(
            "PUT",
            &format!("{url}/latest/api/token"),
            &[("X-aws-ec2-metadata-token-ttl-seconds", "21600")],
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(r.body, "tok");
        let head = head.recv().unwrap().to_ascii_lowercase();
        assert!(
            head.starts_with("put /latest/api/token http/1.1\r\n"),
            "{head}"
        );
        for h in [
            "x-aws-ec2-metadata-token-ttl-seconds: 21600",
            "content-length: 0",
            "connection: close",
            &format!("host: {}", url.trim_start_matches("http://")),
        ] {
            assert!(head.contains(h), "{h} not in {head}");
        }
    }

    #[test]
    fn malformed_answers_are_errors() {
        for (answer, want) in [
            (&b"garbage\r\n\r\n"[..], ""),
            (b"HTTP/1.1 200", ""),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nNONE", ""),
            (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\nNONE", ""),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2000000\r\n\r\nNONE",
                "too large",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nNO\r\n",
                "",
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nNO\r\n0\r\n\r\n",
                "",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n\xff\xfe",
                "UTF-8",
            ),
        ] {
            match get(answer) {
                Ok(r) => panic!("{}: accepted: {r:?}", String::from_utf8_lossy(answer)),
                Err(e) => assert!(e.contains(want), "{e}"),
            }
        }
    }

    /// The old hand-written dechunker panicked (an add overflow) on a
    /// 2-byte chunk followed by a chunk size near 2^64.
    #[test]
    fn huge_chunk_sizes_are_errors_not_panics() {
        let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nNO\r\n";
        for size in ["FFFFFFFFFFFFFFFF", "FFFFFFFFFFFFFFFE", "1FFFFFFFFFFFFFFFF"] {
            let mut answer = head.to_vec();
            answer.extend_from_slice(format!("{size}\r\n").as_bytes());
            assert!(get(&answer).is_err(), "{size}");
            // The same followed by more data than the cap allows.
            answer.extend(vec![b'x'; MAX_BODY + 10]);
            let e = get(&answer).unwrap_err();
            assert!(size.len() > 16 || e.contains("too large"), "{size}: {e}");
        }
    }

    /// Valid answers the mutations start from.
    const ANSWERS: &[&[u8]] = &[
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nMetadata-Flavor: Google\r\n\r\nTRUE",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nNO\r\n3\r\nNE!\r\n0\r\n\r\n",
        b"HTTP/1.0 404 Not Found\r\n\r\nnothing here",
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 27\r\n\r\n{\"Events\":[],\"Incarnation\":1}",
    ];

    /// `answer` through the client's exchange over an in-memory pipe: the
    /// same hyper parsing and the same bounds as over a socket, without
    /// one (so 10,000 cases take seconds and leave no TIME_WAIT behind).
    fn answer_through_a_pipe(answer: Vec<u8>) -> Result<Response, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (client, mut server) = tokio::io::duplex(64 << 10);
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut head = [0u8; 1024];
                let _ = server.read(&mut head).await;
                let _ = server.write_all(&answer).await;
                let _ = server.shutdown().await;
            });
            let req = Request::get("/x")
                .header(HOST, "pipe")
                .body(Empty::<Bytes>::new())
                .unwrap();
            let limits = Limits {
                connect: Duration::from_secs(5),
                read: Duration::from_secs(5),
                total: Duration::from_secs(5),
                max_body: MAX_BODY,
            };
            tokio::time::timeout(limits.total, exchange_on(client, req, &limits))
                .await
                .unwrap_or_else(|_| Err("timed out".into()))
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(10_000))]

        /// Valid answers with bytes changed, cut or added: a response or an
        /// error that says what was wrong, never a panic, never a body
        /// over the cap, never a hang.
        #[test]
        fn mutated_answers_never_panic(answer in crate::testing::mutated_bytes(ANSWERS)) {
            match answer_through_a_pipe(answer) {
                Ok(r) => proptest::prop_assert!(r.body.len() <= MAX_BODY),
                Err(e) => proptest::prop_assert!(!e.is_empty() && !e.ends_with("timed out"), "{e}"),
            }
        }

        /// Arbitrary bytes as an answer.
        #[test]
        fn arbitrary_answers_never_panic(answer in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            if let Ok(r) = answer_through_a_pipe(answer) {
                proptest::prop_assert!(r.body.len() <= MAX_BODY);
            }
        }
    }

    /// The pipe behaves as a socket does for a good answer.
    #[test]
    fn a_good_answer_through_the_pipe() {
        let r = answer_through_a_pipe(ANSWERS[0].to_vec()).unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "TRUE"));
        assert_eq!(r.header("metadata-flavor"), Some("Google"));
    }

    #[test]
    fn a_silent_server_times_out() {
        let (url, _) = serve(Vec::new(), Duration::from_secs(3));
        let t = Instant::now();
        let e = request("GET", &url, &[], Duration::from_millis(300)).unwrap_err();
        assert!(e.ends_with("timed out"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        // Headers sent, the body never finishes.
        let (url, _) = serve(
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nNO".to_vec(),
            Duration::from_secs(3),
        );
        let e = request("GET", &url, &[], Duration::from_millis(300)).unwrap_err();
        assert!(e.ends_with("timed out"), "{e}");
    }

    #[test]
    fn only_plain_http() {
        assert!(request("GET", "https://x/", &[], Duration::from_secs(1))
            .unwrap_err()
            .contains("only http://"));
    }
}
