//! One unary gRPC call, `v1.PodResourcesLister/List`, over the kubelet's
//! Unix socket, on the shared client of [`crate::grpc`]. One connection per
//! call: a kubelet restart recreates the socket, and the next call simply
//! finds the new one.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use crate::grpc::{self as g, Channel};

use super::proto::{self, Pod};

/// The method called.
const LIST: &str = "http://localhost/v1.PodResourcesLister/List";

/// Why a call failed.
#[derive(Debug)]
pub enum Error {
    /// The socket does not exist (not a Kubernetes node, or the kubelet is
    /// not running or is recreating it).
    Missing,
    /// Connecting or speaking HTTP/2 failed.
    Transport(String),
    /// The call did not finish within the deadline.
    Timeout,
    /// The server answered with a gRPC status other than OK (0).
    Status(u32, String),
    /// The answer was larger than the accepted maximum.
    TooLarge(usize),
    /// The answer was not a gRPC message or not valid protobuf.
    Invalid(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Missing => f.write_str("the socket does not exist"),
            Error::Transport(e) => write!(f, "transport: {e}"),
            Error::Timeout => f.write_str("no answer within the timeout"),
            Error::Status(code, msg) => write!(f, "gRPC status {code}: {msg}"),
            Error::TooLarge(max) => write!(f, "answer larger than {max} bytes"),
            Error::Invalid(e) => write!(f, "invalid answer: {e}"),
        }
    }
}

impl From<g::Error> for Error {
    fn from(e: g::Error) -> Self {
        match e {
            g::Error::Transport(e) => Error::Transport(e),
            g::Error::Status(c, m) => Error::Status(c, m),
            g::Error::TooLarge(m) => Error::TooLarge(m),
            g::Error::Invalid(e) => Error::Invalid(e),
        }
    }
}

/// What a successful call gave.
pub struct Listed {
    /// The pods.
    pub pods: Vec<Pod>,
    /// Size of the protobuf message, in bytes.
    pub bytes: usize,
}

/// Calls `List` on the PodResources socket, accepting answers of up to
/// `max` bytes, within `timeout`.
pub async fn list(socket: &Path, timeout: Duration, max: usize) -> Result<Listed, Error> {
    match tokio::time::timeout(timeout, call(socket, max)).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout),
    }
}

fn transport(e: impl fmt::Display) -> Error {
    Error::Transport(e.to_string())
}

async fn call(socket: &Path, max: usize) -> Result<Listed, Error> {
    let stream = match tokio::net::UnixStream::connect(socket).await {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::Missing),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(transport(format!(
                "connect {}: {e} (the kubelet's socket is root's; see docs/kubernetes.md)",
                socket.display()
            )))
        }
        Err(e) => return Err(transport(format!("connect {}: {e}", socket.display()))),
    };
    let channel = Channel::handshake(stream).await?;
    // An empty ListPodResourcesRequest.
    let msg = channel.unary(LIST, &[], max).await?;
    let pods = proto::decode_list(&msg).map_err(|e| Error::Invalid(e.to_string()))?;
    Ok(Listed {
        pods,
        bytes: msg.len(),
    })
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use hyper::body::{Body, Frame};
    use hyper::Response;

    use bytes::Bytes;
    use hyper::header::{HeaderMap, HeaderValue};
    use hyper_util::rt::{TokioExecutor, TokioIo};

    use super::*;

    /// A response body: some bytes, then trailers (or none).
    struct Answer {
        data: Option<Bytes>,
        trailers: Option<HeaderMap>,
    }

    impl Body for Answer {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            if let Some(d) = self.data.take() {
                return Poll::Ready(Some(Ok(Frame::data(d))));
            }
            Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
        }
    }

    fn trailers(code: u32, msg: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from(code));
        h.insert("grpc-message", HeaderValue::from_str(msg).unwrap());
        h
    }

    /// Serves one connection on a fresh socket with `body` and `trailers`
    /// (HTTP status `status`), then calls `list` with `max`.
    fn call_against(
        status: u16,
        body: Vec<u8>,
        trailers: Option<HeaderMap>,
        max: usize,
    ) -> Result<Listed, Error> {
        let dir = std::env::temp_dir().join(format!(
            "accel-grpc-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kubelet.sock");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let r = rt.block_on(async {
            let listener = tokio::net::UnixListener::bind(&path).unwrap();
            tokio::spawn(async move {
                let (s, _) = listener.accept().await.unwrap();
                let svc = hyper::service::service_fn(move |_req| {
                    let (body, trailers) = (body.clone(), trailers.clone());
                    async move {
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .header("content-type", "application/grpc")
                                .body(Answer {
                                    data: Some(body.into()),
                                    trailers,
                                })
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
            list(&path, Duration::from_secs(5), max).await
        });
        let _ = std::fs::remove_dir_all(&dir);
        r
    }

    fn framed(flag: u8, msg: &[u8]) -> Vec<u8> {
        let mut v = vec![flag];
        v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        v.extend_from_slice(msg);
        v
    }

    /// ListPodResourcesResponse { pod_resources { name: "p" } }.
    const ONE_POD: [u8; 5] = [0x0a, 0x03, 0x0a, 0x01, b'p'];

    #[test]
    fn a_good_answer() {
        let r = call_against(200, framed(0, &ONE_POD), Some(trailers(0, "")), 100).unwrap();
        assert_eq!(r.bytes, 5);
        assert_eq!(r.pods.len(), 1);
        assert_eq!(r.pods[0].name, "p");
    }

    #[test]
    fn bad_answers() {
        // (what, HTTP status, body, trailers, accepted size)
        type Case = (&'static str, u16, Vec<u8>, Option<HeaderMap>, usize);
        let cases: Vec<Case> = vec![
            (
                "too large",
                200,
                framed(0, &[0; 64]),
                Some(trailers(0, "")),
                63,
            ),
            (
                "compressed",
                200,
                framed(1, &ONE_POD),
                Some(trailers(0, "")),
                100,
            ),
            (
                "short",
                200,
                framed(0, &ONE_POD)[..7].to_vec(),
                Some(trailers(0, "")),
                100,
            ),
            ("no trailer", 200, framed(0, &ONE_POD), None, 100),
            ("status", 200, Vec::new(), Some(trailers(7, "denied")), 100),
            ("http", 404, Vec::new(), None, 100),
            (
                "not protobuf",
                200,
                framed(0, &[0x0a, 0x09]),
                Some(trailers(0, "")),
                100,
            ),
        ];
        for (what, status, body, tr, max) in cases {
            let e = match call_against(status, body, tr, max) {
                Ok(_) => panic!("{what}: accepted"),
                Err(e) => e,
            };
            let ok = match what {
                "too large" => matches!(e, Error::TooLarge(63)),
                "status" => matches!(&e, Error::Status(7, m) if m == "denied"),
                "http" => matches!(e, Error::Transport(_)),
                _ => matches!(e, Error::Invalid(_)),
            };
            assert!(ok, "{what}: {e}");
        }
    }

    #[test]
    fn no_socket_and_not_a_socket() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let missing = Path::new("/nonexistent/accel-agent/kubelet.sock");
        let r = rt.block_on(list(missing, Duration::from_secs(1), 100));
        assert!(matches!(r, Err(Error::Missing)));
        // A regular file where the socket should be.
        let file = std::env::temp_dir().join(format!("accel-grpc-file-{}", std::process::id()));
        std::fs::write(&file, b"").unwrap();
        let r = rt.block_on(list(&file, Duration::from_secs(1), 100));
        let _ = std::fs::remove_file(&file);
        assert!(matches!(r, Err(Error::Transport(_))), "{:?}", r.err());
    }
}
