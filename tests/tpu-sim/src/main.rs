//! `tpu-sim`: a simulated libtpu runtime metric service.
//!
//! Serves gRPC `tpu.monitoring.runtime.RuntimeMetricService/GetRuntimeMetric`
//! (plaintext HTTP/2, as libtpu does on localhost) from a scenario file
//! (`scenarios/*.toml`): the metrics a v5e-8 host shows while training,
//! idle while allocated, input-bound; or a server that hangs, or one that
//! answers malformed protobuf; or nothing at all (runtime absent). Metrics
//! the scenario does not give are answered NOT_FOUND, as for a libtpu that
//! does not serve them. The protobuf is encoded by hand ([`wire`]), with
//! the attribute forms libtpu uses: the device id as a lone int for memory
//! and duty cycle, a key-value list with `device_ordinal` (a string, or an
//! int for an older libtpu) for the HLO metrics.
//!
//! ```text
//! tpu-sim SCENARIO [--listen ADDR]...
//! ```
//!
//! SCENARIO is a name in tests/tpu-sim/scenarios or a path. The default
//! address is 127.0.0.1:8431. It prints `listening on ADDR` per address
//! once it accepts connections, then serves until killed.

mod scenario;
mod wire;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

use scenario::{Behaviour, Scenario};

const METHOD: &str = "/tpu.monitoring.runtime.RuntimeMetricService/GetRuntimeMetric";

fn usage() -> ! {
    eprintln!("usage: tpu-sim SCENARIO [--listen ADDR]...");
    std::process::exit(2);
}

fn scenario_path(arg: &str) -> PathBuf {
    let p = Path::new(arg);
    if p.exists() {
        return p.to_path_buf();
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(format!("{arg}.toml"))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(name) = args.next() else { usage() };
    let mut addrs: Vec<SocketAddr> = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => match args.next().and_then(|v| v.parse().ok()) {
                Some(addr) => addrs.push(addr),
                None => usage(),
            },
            _ => usage(),
        }
    }
    if addrs.is_empty() {
        addrs.push("127.0.0.1:8431".parse().unwrap());
    }
    let path = scenario_path(&name);
    let scenario = match Scenario::load(&path) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("tpu-sim: {}: {e}", path.display());
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    println!("scenario {name}: {}", scenario.description);
    rt.block_on(async move {
        if scenario.behaviour == Behaviour::Absent {
            println!("runtime absent: listening on nothing");
            std::future::pending::<()>().await;
        }
        for addr in addrs {
            let listener = match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("tpu-sim: bind {addr}: {e}");
                    std::process::exit(1);
                }
            };
            println!("listening on {addr}");
            let sc = scenario.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let sc = sc.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| answer(sc.clone(), req));
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            });
        }
        std::future::pending::<()>().await;
    });
}

/// A body of one data frame, then trailers.
struct Answer {
    data: Option<Bytes>,
    trailers: Option<hyper::HeaderMap>,
}

impl hyper::body::Body for Answer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        if let Some(d) = self.data.take() {
            return std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(d))));
        }
        std::task::Poll::Ready(
            self.trailers
                .take()
                .map(|t| Ok(hyper::body::Frame::trailers(t))),
        )
    }
}

fn grpc(status: u32, message: Option<Vec<u8>>) -> Response<Answer> {
    let mut trailers = hyper::HeaderMap::new();
    trailers.insert("grpc-status", status.into());
    let data = message.map(|m| {
        let mut framed = vec![0];
        framed.extend_from_slice(&(m.len() as u32).to_be_bytes());
        framed.extend_from_slice(&m);
        Bytes::from(framed)
    });
    Response::builder()
        .header("content-type", "application/grpc")
        .body(Answer {
            data,
            trailers: Some(trailers),
        })
        .unwrap()
}

async fn answer(sc: Arc<Scenario>, req: Request<Incoming>) -> Result<Response<Answer>, Infallible> {
    if req.uri().path() != METHOD {
        return Ok(grpc(12, None));
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(grpc(13, None)),
    };
    match sc.behaviour {
        Behaviour::Hang => std::future::pending().await,
        Behaviour::Malformed => {
            // A metric whose length runs past the end of the message.
            return Ok(grpc(0, Some(vec![0x0a, 0x7f, 0x0a, 0x03, b'a'])));
        }
        Behaviour::Serve | Behaviour::Absent => {}
    }
    let name = body
        .get(5..)
        .and_then(wire::request_name)
        .unwrap_or_default();
    match sc.response(&name) {
        Some(msg) => Ok(grpc(0, Some(msg))),
        None => Ok(grpc(5, None)),
    }
}
