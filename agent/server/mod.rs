//! The HTTP endpoint: `/metrics` (or `--web.telemetry-path`), a landing
//! page at `/`, `/-/healthy` and `/-/ready`; over TLS and behind basic
//! authentication when `--web.config.file` asks for them (see
//! [`crate::web_config`]).
//!
//! Handlers only read the shared state (see [`crate::state`]); nothing here
//! touches /proc, /sys or a device, so a wedged collector cannot stall a
//! scrape. Requests served at once are capped by `--web.max-requests` (503
//! beyond it); open connections by `--web.max-connections`, the longest
//! idle one closed first to admit a new one, so idle or slow clients cannot
//! lock a scraper out (docs/security.md has the whole model). A client must
//! finish its TLS handshake, and a request's headers once begun, within
//! `--web.header-timeout`; a connection without a request closes after
//! `--web.idle-timeout`. SIGTERM or SIGINT stop the listener and let
//! in-flight requests finish, and SIGHUP reloads the config file and the
//! web config without closing the listener.

use std::collections::HashMap;
use std::convert::Infallible;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ACCEPT, ACCEPT_ENCODING, ALLOW, AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH,
    CONTENT_TYPE, RETRY_AFTER, VARY, WWW_AUTHENTICATE,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
// The runtime's clock, so that the deadlines run on paused time in tests.
use tokio::time::Instant;

use crate::config::{Config, Parsed, WebConfig};
use crate::state::{Agent, Format};
use crate::web_config::WebSecurity;

mod connections;
mod respond;

use connections::*;
use respond::*;

const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS_FORMAT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How long in-flight requests get to finish after a stop signal.
const DRAIN: Duration = Duration::from_millis(1500);

/// Resolves `--web.listen-address`: `:port` means every address (IPv6 and
/// IPv4 where the host has IPv6, IPv4 alone otherwise).
pub async fn bind(address: &str) -> io::Result<TcpListener> {
    if let Some(port) = address.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad port in {address:?}"),
            )
        })?;
        return match TcpListener::bind(SocketAddr::from(([0u16; 8], port))).await {
            Ok(l) => Ok(l),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(e),
            Err(_) => TcpListener::bind(SocketAddr::from(([0u8; 4], port))).await,
        };
    }
    TcpListener::bind(address).await
}

/// Serves until SIGTERM or SIGINT, then drains in-flight requests. SIGHUP
/// re-reads the command line's config file and web config file (`args`,
/// program name first, as [`Config::from_args`] takes them) and applies the
/// log level and the web config (TLS, users) without closing the listener.
pub async fn serve(agent: Arc<Agent>, config: Config, args: Vec<OsString>) -> io::Result<()> {
    let web = config.web.clone();
    let listener = bind(&web.listen_address).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("listening on {}: {e}", web.listen_address),
        )
    })?;
    let security = Arc::new(ArcSwapOption::new(web.security.clone()));
    announce(web.security.as_deref());
    let reloader = Reloader {
        args,
        current: config,
        security: security.clone(),
        agent: agent.clone(),
    };
    serve_on(listener, agent, web, security, signals(reloader)).await
}

/// Logs what a web config switches on, and what it could not honour.
fn announce(security: Option<&WebSecurity>) {
    let Some(s) = security else {
        return tracing::info!("TLS is disabled; no authentication");
    };
    for w in &s.warnings {
        tracing::warn!(file = %s.path.display(), "{w}");
    }
    match &s.tls {
        Some(_) => tracing::info!(settings = %s.tls_summary, "TLS is enabled"),
        None => tracing::info!("TLS is disabled"),
    }
    match &s.auth {
        Some(a) => tracing::info!(users = a.users(), "basic authentication is enabled"),
        None => tracing::info!("no authentication"),
    }
}

/// What a SIGHUP needs: how the agent was started, what it runs with now,
/// and where the server reads its web config from.
struct Reloader {
    args: Vec<OsString>,
    current: Config,
    security: Arc<ArcSwapOption<WebSecurity>>,
    /// Where a failed reload is counted.
    agent: Arc<Agent>,
}

impl Reloader {
    async fn reload(&mut self) {
        tracing::info!("SIGHUP: reloading the configuration");
        let args = self.args.clone();
        // Reading files and checking certificates blocks: not on the runtime.
        let parsed = tokio::task::spawn_blocking(move || Config::from_args(args)).await;
        let new = match parsed {
            Ok(Ok(Parsed::Run(c))) => *c,
            Ok(Ok(Parsed::Exit(_))) => return,
            Ok(Err(e)) => {
                self.agent.reload_failed();
                return tracing::error!(error = %e, "reload failed; keeping the previous configuration");
            }
            Err(e) => {
                self.agent.reload_failed();
                return tracing::error!(error = %e, "reload failed; keeping the previous configuration");
            }
        };
        if new.log_level != self.current.log_level && !crate::logging::set_level(new.log_level) {
            tracing::warn!("cannot change the log level");
        }
        let was = self.security.load_full();
        let (had_tls, had_auth) = was
            .as_deref()
            .map_or((false, false), |s| (s.tls.is_some(), s.auth.is_some()));
        let (has_tls, has_auth) = new
            .web
            .security
            .as_deref()
            .map_or((false, false), |s| (s.tls.is_some(), s.auth.is_some()));
        if had_tls && !has_tls {
            tracing::warn!("the reloaded configuration turns TLS off");
        }
        if had_auth && !has_auth {
            tracing::warn!("the reloaded configuration turns authentication off");
        }
        self.security.store(new.web.security.clone());
        announce(new.web.security.as_deref());
        let restart = self.current.restart_needed(&new);
        if !restart.is_empty() {
            tracing::warn!(
                settings = restart.join(", "),
                "changed settings take effect only after a restart"
            );
        }
        tracing::info!(log_level = %new.log_level, "configuration reloaded");
        self.current = new;
    }
}

/// Completes on SIGTERM or SIGINT; reloads on SIGHUP.
async fn signals(mut reloader: Reloader) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM");
            std::future::pending::<()>().await;
            return;
        }
    };
    // Watching SIGHUP also keeps its default action (ending the process)
    // away: a `systemctl reload` must never take the agent down.
    let mut hup = signal(SignalKind::hangup()).ok();
    loop {
        tokio::select! {
            _ = term.recv() => return tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => return tracing::info!("SIGINT: shutting down"),
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                reloader.reload().await;
            }
        }
    }
}

/// Serves on an already-bound listener until `stop` completes. `security`
/// is read for every connection (TLS) and request (authentication), so a
/// new web config stored there applies without closing the listener.
pub async fn serve_on(
    listener: TcpListener,
    agent: Arc<Agent>,
    web: WebConfig,
    security: Arc<ArcSwapOption<WebSecurity>>,
    stop: impl std::future::Future<Output = ()>,
) -> io::Result<()> {
    tracing::info!(address = %listener.local_addr()?, path = %web.telemetry_path, "listening");
    let requests = (web.max_requests > 0).then(|| Arc::new(Semaphore::new(web.max_requests)));
    let connections = Arc::new(Connections::new(web.max_connections));
    let limits = Limits {
        header: web.header_timeout,
        idle: web.idle_timeout,
    };
    let web = Arc::new(web);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // Tells connections still in their TLS handshake to give up.
    let (stopping, _) = tokio::sync::watch::channel(());
    tokio::pin!(stop);
    loop {
        let (stream, _) = tokio::select! {
            conn = listener.accept() => match conn {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        // A changed web config or a renewed certificate applies from the
        // next connection on, as with the exporter-toolkit (a few stats).
        if security.load().as_ref().is_some_and(|s| s.changed()) {
            let s = security.clone();
            let loaded = tokio::task::spawn_blocking(move || crate::web_config::refresh(&s)).await;
            if !matches!(loaded, Ok(true)) {
                agent.reload_failed();
            }
        }
        let tls = security.load().as_ref().and_then(|s| s.tls.clone());
        // A connection counts against --web.max-connections from accept to
        // close; at the bound the longest idle one makes room. Only when
        // every connection has a request in flight is the new one refused.
        let Some(conn) = connections.admit() else {
            tracing::debug!("every connection is busy (--web.max-connections): refusing one");
            if tls.is_none() {
                tokio::spawn(refuse(
                    stream,
                    format!(
                        "503 too many open connections (--web.max-connections={})\n",
                        web.max_connections
                    ),
                ));
            }
            // A TLS client could not read a plain 503, and a handshake is
            // what a full server should not spend: close at once.
            continue;
        };
        let (agent, web, security, requests, connections) = (
            agent.clone(),
            web.clone(),
            security.clone(),
            requests.clone(),
            connections.clone(),
        );
        let svc = {
            let conn = conn.clone();
            service_fn(move |req: Request<Incoming>| {
                let busy = conn.begin();
                // --web.max-requests counts requests, held until the
                // response is written (as promhttp's in-flight limit).
                let permit = match requests.as_ref().map(|l| l.clone().try_acquire_owned()) {
                    Some(Err(_)) => Err(()),
                    Some(Ok(p)) => Ok(Some(p)),
                    None => Ok(None),
                };
                // Without a web config the response is built at once; with
                // one, the authentication check may wait for bcrypt.
                let quick = match (&permit, &*security.load()) {
                    (Err(()), _) => Ok(too_many_requests(web.max_requests)),
                    (Ok(_), None) => Ok(handle(&agent, &web, &req)),
                    (Ok(_), Some(s)) => Err((s.clone(), agent.clone(), web.clone())),
                };
                let guard = Guard {
                    _permit: permit.ok().flatten(),
                    _busy: busy,
                };
                async move {
                    let r = match quick {
                        Ok(r) => r,
                        Err((security, agent, web)) => secured(&security, &agent, &web, req).await,
                    };
                    Ok::<_, Infallible>(r.map(|body| Served {
                        body,
                        _guard: guard,
                    }))
                }
            })
        };
        // hyper's own header timeout (30 s unless told) would also run
        // while a keep-alive connection waits for its next request: off,
        // the connection's task keeps both deadlines instead.
        let http = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .clone();
        let watcher = graceful.watcher();
        let mut stopping = stopping.subscribe();
        tokio::spawn(async move {
            let stream = match tls {
                None => Io::Plain(stream),
                Some(config) => {
                    let handshake = tokio::select! {
                        s = tokio::time::timeout(limits.header, handshake(stream, config)) => s,
                        _ = stopping.changed() => return connections.remove(&conn),
                        () = conn.killed.notified() => return,
                    };
                    match handshake {
                        Ok(Some(s)) => Io::Tls(Box::new(s)),
                        Ok(None) => return connections.remove(&conn),
                        Err(_) => {
                            tracing::debug!("TLS handshake timed out (--web.header-timeout)");
                            return connections.remove(&conn);
                        }
                    }
                }
            };
            let io = Tracked {
                inner: stream,
                conn: conn.clone(),
            };
            let served = watcher.watch(http.serve_connection(TokioIo::new(io), svc));
            tokio::pin!(served);
            loop {
                let wait = conn.wait(limits);
                tokio::select! {
                    r = &mut served => {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    // Closed to make room for a new connection.
                    () = conn.killed.notified() => return,
                    // A request began: the header deadline starts now.
                    () = conn.head_started.notified() => {}
                    () = tokio::time::sleep(wait.unwrap_or(Duration::ZERO)), if wait.is_some() => {
                        if let Some(why) = conn.expired(limits) {
                            tracing::debug!("closing a connection: {why}");
                            break;
                        }
                    }
                }
            }
            connections.remove(&conn);
        });
    }
    drop(listener);
    let _ = stopping.send(());
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN) => tracing::warn!("in-flight requests did not finish in time"),
    }
    Ok(())
}

/// Answers a connection that found no room: a 503, then close.
async fn refuse(stream: tokio::net::TcpStream, body: String) {
    close_with(
        stream,
        "503 Service Unavailable",
        &body,
        "retry-after: 1\r\n",
    )
    .await;
}

/// Reads what the client sent (briefly, so that closing does not reset the
/// connection), answers with `status` and closes.
async fn close_with(mut stream: tokio::net::TcpStream, status: &str, body: &str, extra: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = [0u8; 8192];
    let _ = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await;
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n{extra}connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn web() -> WebConfig {
        WebConfig {
            listen_address: String::new(),
            telemetry_path: "/metrics".into(),
            max_requests: 40,
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(360),
            security: None,
        }
    }

    /// One request on a keep-alive connection: whether it was answered 200.
    async fn healthy(s: &mut tokio::net::TcpStream) -> bool {
        if s.write_all(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .is_err()
        {
            return false;
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.ends_with(b"Healthy\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        got.starts_with(b"HTTP/1.1 200 ")
    }

    /// On paused time: a keep-alive connection lives through hyper's own
    /// default header timeout (30 s) and closes at --web.idle-timeout.
    #[tokio::test(start_paused = true)]
    async fn keep_alive_lasts_until_the_idle_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let agent = Arc::new(Agent::new(Vec::new(), Vec::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_on(
            listener,
            agent,
            web(),
            Arc::new(ArcSwapOption::empty()),
            async {
                let _ = stopped.await;
            },
        ));
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        assert!(healthy(&mut s).await);
        tokio::time::sleep(Duration::from_secs(45)).await;
        assert!(healthy(&mut s).await, "closed after 45 s idle");
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert!(healthy(&mut s).await, "closed after 300 s idle");
        tokio::time::sleep(Duration::from_secs(361)).await;
        let mut buf = [0u8; 16];
        assert_eq!(
            s.read(&mut buf).await.unwrap_or(0),
            0,
            "open after 361 s idle"
        );
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }
}
