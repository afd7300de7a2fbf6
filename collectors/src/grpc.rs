//! A minimal gRPC client for unary calls, shared by the collectors that
//! speak gRPC (`kubernetes` over the kubelet's Unix socket, `tpu` over
//! libtpu's TCP port).
//!
//! gRPC is HTTP/2: a POST to `/<package>.<Service>/<Method>` with
//! `content-type: application/grpc`, a body of length-prefixed messages (one
//! byte compressed flag, four bytes big-endian length, the protobuf), and
//! the status in the `grpc-status` trailer (or header, for a
//! "trailers-only" answer). hyper's own HTTP/2 client speaks the transport;
//! this file adds only the framing, the status and a size limit. Deadlines
//! are the caller's (`tokio::time::timeout` around the whole call), and the
//! messages are decoded by each collector's own hand-written decoder
//! (docs/kubernetes.md and docs/tpu.md say why not tonic and prost).

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};

/// Why a call failed (the caller adds its own "not there" and "timeout").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Speaking HTTP/2 failed.
    Transport(String),
    /// The server answered with a gRPC status other than OK (0).
    Status(u32, String),
    /// The answer was larger than the accepted maximum.
    TooLarge(usize),
    /// The answer was not a gRPC message.
    Invalid(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Transport(e) => write!(f, "transport: {e}"),
            Error::Status(code, msg) => write!(f, "gRPC status {code}: {msg}"),
            Error::TooLarge(max) => write!(f, "answer larger than {max} bytes"),
            Error::Invalid(e) => write!(f, "invalid answer: {e}"),
        }
    }
}

/// gRPC status NOT_FOUND.
pub const NOT_FOUND: u32 = 5;
/// gRPC status UNIMPLEMENTED.
pub const UNIMPLEMENTED: u32 = 12;

fn transport(e: impl fmt::Display) -> Error {
    Error::Transport(e.to_string())
}

/// `grpc-status` and `grpc-message` from headers or trailers, if present.
fn status(h: &HeaderMap) -> Option<(u32, String)> {
    let code = h.get("grpc-status")?.to_str().ok()?.trim().parse().ok()?;
    let msg = h
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    Some((code, msg))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One HTTP/2 connection; calls on it may run concurrently (one stream
/// each). Dropping the last clone stops the connection's driver task, even
/// when a deadline drops a call half-way.
#[derive(Clone)]
pub struct Channel {
    send: SendRequest<Full<Bytes>>,
    _driver: Arc<AbortOnDrop>,
}

impl Channel {
    /// Speaks HTTP/2 on `io` (a connected Unix or TCP stream). Must run
    /// inside a tokio runtime: the connection is driven by a spawned task.
    pub async fn handshake<S>(io: S) -> Result<Channel, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            // Big windows: a large answer streams without waiting for updates.
            .initial_stream_window_size(8 << 20)
            .initial_connection_window_size(8 << 20)
            .max_header_list_size(64 << 10)
            .handshake::<_, Full<Bytes>>(TokioIo::new(io))
            .await
            .map_err(transport)?;
        let driver = AbortOnDrop(tokio::spawn(async move {
            let _ = conn.await;
        }));
        Ok(Channel {
            send,
            _driver: Arc::new(driver),
        })
    }

    /// Calls `uri` (`http://localhost/<package>.<Service>/<Method>`) with
    /// the protobuf `message`; returns the answer's protobuf, refused when
    /// over `max` bytes.
    pub async fn unary(&self, uri: &str, message: &[u8], max: usize) -> Result<Vec<u8>, Error> {
        let mut framed = Vec::with_capacity(5 + message.len());
        framed.push(0);
        let len = u32::try_from(message.len()).map_err(|_| transport("request too large"))?;
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(message);
        let req = Request::post(uri)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/grpc"))
            .header("te", HeaderValue::from_static("trailers"))
            .header(
                "user-agent",
                HeaderValue::from_static(concat!("accel-agent/", env!("CARGO_PKG_VERSION"))),
            )
            .body(Full::new(Bytes::from(framed)))
            .map_err(transport)?;
        let mut send = self.send.clone();
        let resp = send.send_request(req).await.map_err(transport)?;
        if resp.status() != StatusCode::OK {
            return Err(transport(format!("HTTP status {}", resp.status())));
        }
        // A trailers-only answer carries the status in the headers.
        if let Some((code, msg)) = status(resp.headers()).filter(|s| s.0 != 0) {
            return Err(Error::Status(code, msg));
        }
        let mut body = resp.into_body();
        let mut buf: Vec<u8> = Vec::new();
        let mut trailers = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(transport)?;
            match frame.into_data() {
                Ok(data) => {
                    // Refuse as soon as the prefix announces too much, or
                    // the data runs past what it announced.
                    let total = buf.len() + data.len();
                    if total > max.saturating_add(5) {
                        return Err(Error::TooLarge(max));
                    }
                    buf.extend_from_slice(&data);
                    if buf.len() >= 5 {
                        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
                        if len > max {
                            return Err(Error::TooLarge(max));
                        }
                    }
                }
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        trailers = Some(t);
                    }
                }
            }
        }
        match trailers.as_ref().and_then(status) {
            Some((0, _)) => {}
            Some((code, msg)) => return Err(Error::Status(code, msg)),
            None => return Err(Error::Invalid("no grpc-status trailer".into())),
        }
        if buf.len() < 5 {
            return Err(Error::Invalid(format!(
                "{} bytes, shorter than a gRPC message prefix",
                buf.len()
            )));
        }
        if buf[0] != 0 {
            // We send no grpc-accept-encoding, so the server must not compress.
            return Err(Error::Invalid("compressed message".into()));
        }
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if buf.len() != 5 + len {
            return Err(Error::Invalid(format!(
                "message prefix says {len} bytes, got {}",
                buf.len() - 5
            )));
        }
        buf.drain(..5);
        Ok(buf)
    }
}
