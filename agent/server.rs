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
                return tracing::error!(error = %e, "reload failed; keeping the previous configuration")
            }
            Err(e) => {
                return tracing::error!(error = %e, "reload failed; keeping the previous configuration")
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

/// The two deadlines of a connection without a request in flight.
#[derive(Clone, Copy, Debug)]
struct Limits {
    /// From the first byte of a request to the end of its headers.
    header: Duration,
    /// From accept, or the end of the last response, to the first byte of
    /// the next request.
    idle: Duration,
}

/// The open connections, for `--web.max-connections`.
struct Connections {
    max: usize,
    epoch: Instant,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
}

/// One open connection, as the limits see it.
struct Conn {
    id: u64,
    epoch: Instant,
    /// Requests in flight on it (more than one only when pipelined).
    busy: AtomicUsize,
    /// Milliseconds since `epoch` when it last became idle (accepted, or
    /// its last response written).
    idle_since: AtomicU64,
    /// Milliseconds since `epoch`, plus one, when the first byte of the next
    /// request arrived; 0 while none has.
    head_since: AtomicU64,
    /// Set when it is closed to make room.
    killed: Notify,
    /// Set when the first byte of a request arrives.
    head_started: Notify,
}

impl Connections {
    fn new(max: usize) -> Self {
        Self {
            max,
            epoch: Instant::now(),
            next_id: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
        }
    }

    /// Registers a new connection, closing the longest idle one if the
    /// bound is reached; `None` when every open connection is busy.
    fn admit(&self) -> Option<Arc<Conn>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if self.max > 0 && open.len() >= self.max {
            let victim = open
                .values()
                .filter(|c| c.busy.load(Ordering::Acquire) == 0)
                .min_by_key(|c| (c.idle_since.load(Ordering::Acquire), c.id))
                .map(|c| c.id)?;
            if let Some(c) = open.remove(&victim) {
                tracing::debug!(
                    "--web.max-connections reached: closing the longest idle connection"
                );
                c.killed.notify_one();
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let now = ms(self.epoch);
        let c = Arc::new(Conn {
            id,
            epoch: self.epoch,
            busy: AtomicUsize::new(0),
            idle_since: AtomicU64::new(now),
            head_since: AtomicU64::new(0),
            killed: Notify::new(),
            head_started: Notify::new(),
        });
        open.insert(id, c.clone());
        Some(c)
    }

    fn remove(&self, c: &Conn) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&c.id);
    }
}

fn ms(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64
}

impl Conn {
    /// A request's headers are complete: it is busy until the returned
    /// marker is dropped (its response written).
    fn begin(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(0, Ordering::Release);
        Busy(self.clone())
    }

    /// Bytes arrived: if the connection was idle, a request has begun.
    fn read_some(&self) {
        if self.busy.load(Ordering::Acquire) == 0
            && self
                .head_since
                .compare_exchange(0, ms(self.epoch) + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.head_started.notify_one();
        }
    }

    /// How long until one of its deadlines may have passed; `None` while a
    /// request is in flight (no deadline then).
    fn wait(&self, l: Limits) -> Option<Duration> {
        if self.busy.load(Ordering::Acquire) > 0 {
            return None;
        }
        let now = ms(self.epoch);
        let due = match self.head_since.load(Ordering::Acquire) {
            0 => self.idle_since.load(Ordering::Acquire) + l.idle.as_millis() as u64,
            h => h - 1 + l.header.as_millis() as u64,
        };
        Some(Duration::from_millis(due.saturating_sub(now) + 1))
    }

    /// Why it must be closed now, if it must.
    fn expired(&self, l: Limits) -> Option<&'static str> {
        if self.busy.load(Ordering::Acquire) > 0 {
            return None;
        }
        let now = ms(self.epoch);
        match self.head_since.load(Ordering::Acquire) {
            0 if now >= self.idle_since.load(Ordering::Acquire) + l.idle.as_millis() as u64 => {
                Some("idle for --web.idle-timeout")
            }
            0 => None,
            h if now >= h - 1 + l.header.as_millis() as u64 => {
                Some("request headers not received within --web.header-timeout")
            }
            _ => None,
        }
    }
}

/// Marks a connection busy while a request is served.
struct Busy(Arc<Conn>);

impl Drop for Busy {
    fn drop(&mut self) {
        let c = &self.0;
        c.idle_since.store(ms(c.epoch), Ordering::Release);
        c.busy.fetch_sub(1, Ordering::AcqRel);
        // The idle deadline starts now: wake the connection's task.
        c.head_started.notify_one();
    }
}

/// What a request holds until its response is written.
struct Guard {
    _permit: Option<OwnedSemaphorePermit>,
    _busy: Busy,
}

/// A response body that releases its request's slot once written (hyper
/// drops the body when it has sent the last of it, or the connection ends).
struct Served {
    body: Full<Bytes>,
    _guard: Guard,
}

impl http_body::Body for Served {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A plain or TLS stream.
enum Io {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>),
}

/// A connection's stream that tells its [`Conn`] when bytes arrive, so the
/// header deadline runs from a request's first byte and not while the
/// connection sits idle between keep-alive requests.
struct Tracked {
    inner: Io,
    conn: Arc<Conn>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = match &mut self.inner {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.read_some();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.inner {
            Io::Plain(s) => Pin::new(s).poll_write(cx, data),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The answer to a request beyond `--web.max-requests`.
fn too_many_requests(max: usize) -> Response<Full<Bytes>> {
    let mut r = text(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("503 too many concurrent requests (--web.max-requests={max})\n"),
    );
    r.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// The TLS handshake, or `None` when it fails. A client that speaks plain
/// HTTP to the TLS port gets a 400 saying so, as from Go's servers, and the
/// connection is closed.
async fn handshake(
    stream: tokio::net::TcpStream,
    config: Arc<rustls::ServerConfig>,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(1..) => {}
        _ => return None,
    }
    // A TLS connection starts with a handshake record (0x16); a plain HTTP
    // request with a method name.
    if first[0].is_ascii_uppercase() {
        tracing::debug!("plain HTTP request on the TLS port");
        close_with(
            stream,
            "400 Bad Request",
            "Client sent an HTTP request to an HTTPS server.\n",
            "",
        )
        .await;
        return None;
    }
    match tokio_rustls::TlsAcceptor::from(config).accept(stream).await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
    }
}

/// A response to a request under a web config: the rate limit, then the
/// credentials, then the endpoint; the configured headers on all of them.
async fn secured(
    security: &WebSecurity,
    agent: &Agent,
    web: &WebConfig,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let mut r = if security.rate_limit.as_ref().is_some_and(|l| !l.allow()) {
        text(StatusCode::TOO_MANY_REQUESTS, "429 too many requests\n")
    } else {
        let allowed = match &security.auth {
            None => true,
            Some(auth) => auth.check(req.headers().get(AUTHORIZATION)).await,
        };
        if allowed {
            handle(agent, web, &req)
        } else {
            let mut r = text(StatusCode::UNAUTHORIZED, "401 unauthorized\n");
            r.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"accel-agent\""),
            );
            r
        }
    };
    for (name, value) in &security.headers {
        r.headers_mut().insert(name.clone(), value.clone());
    }
    r
}

fn response(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    response(status, "text/plain; charset=utf-8", body.into())
}

/// Whether an Accept-Encoding header allows gzip (a `q=0` refuses it).
fn accepts_gzip(req: &Request<Incoming>) -> bool {
    let Some(v) = req
        .headers()
        .get(ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    v.split(',').any(|item| {
        let mut parts = item.split(';').map(str::trim);
        let coding = parts.next().unwrap_or_default();
        let q = parts
            .find_map(|p| p.strip_prefix("q="))
            .and_then(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        (coding.eq_ignore_ascii_case("gzip") || coding == "*") && q > 0.0
    })
}

/// Whether the Accept header prefers OpenMetrics to the text format: the
/// highest `q` wins, the text format on a tie (Prometheus 2.x asks for
/// OpenMetrics with q=1 and text with q=0.5; curl's `*/*` gets text).
fn wants_openmetrics(req: &Request<Incoming>) -> bool {
    let (mut om, mut text) = (0.0f32, 0.0f32);
    for item in req
        .headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let mut parts = item.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let q = parts
            .find_map(|p| p.strip_prefix("q="))
            .and_then(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "application/openmetrics-text" => om = om.max(q),
            "text/plain" | "text/*" | "*/*" => text = text.max(q),
            _ => {}
        }
    }
    om > 0.0 && om > text
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

fn handle(agent: &Agent, web: &WebConfig, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let known = path == web.telemetry_path || matches!(path, "/" | "/-/healthy" | "/-/ready");
    if !known {
        return text(StatusCode::NOT_FOUND, "404 page not found\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "405 method not allowed\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let mut r = match path {
        p if p == web.telemetry_path => metrics(agent, req),
        "/-/healthy" => text(StatusCode::OK, "Healthy\n"),
        "/-/ready" if agent.ready() => text(StatusCode::OK, "Ready\n"),
        "/-/ready" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "Not ready: waiting for the first sample of {}\n",
                agent.waiting_for().join(", ")
            ),
        ),
        _ => response(
            StatusCode::OK,
            "text/html; charset=utf-8",
            landing(agent, web).into(),
        ),
    };
    if req.method() == Method::HEAD {
        let len = r.headers().get(CONTENT_LENGTH).cloned();
        let body_len = http_body::Body::size_hint(r.body()).exact().unwrap_or(0);
        *r.body_mut() = Full::new(Bytes::new());
        r.headers_mut().insert(
            CONTENT_LENGTH,
            len.unwrap_or_else(|| HeaderValue::from(body_len)),
        );
    }
    r
}

fn metrics(agent: &Agent, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (format, content_type) = if wants_openmetrics(req) {
        (Format::OpenMetrics, OPENMETRICS_FORMAT)
    } else {
        (Format::Text, TEXT_FORMAT)
    };
    let compressed = accepts_gzip(req);
    let mut r = response(
        StatusCode::OK,
        content_type,
        agent.body().get(format, compressed),
    );
    if compressed {
        r.headers_mut()
            .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    r.headers_mut()
        .insert(VARY, HeaderValue::from_static("Accept, Accept-Encoding"));
    r
}

fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn landing(agent: &Agent, web: &WebConfig) -> String {
    let mut h = String::new();
    let path = escape_html(&web.telemetry_path);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>accel-agent</title></head><body>\n\
         <h1>accel-agent</h1>\n<p>Prometheus exporter and profiling agent for ML training nodes. \
         Version {} (revision {}).</p>\n<h2>Endpoints</h2>\n<ul>\n\
         <li><a href=\"{path}\">{path}</a>: metrics</li>\n\
         <li><a href=\"/-/healthy\">/-/healthy</a>: 200 while the agent runs</li>\n\
         <li><a href=\"/-/ready\">/-/ready</a>: 200 once every enabled collector has finished its first sample</li>\n\
         </ul>\n<h2>Collectors</h2>\n<table>\n<tr><th>collector</th><th>state</th><th>interval</th><th>last sample</th></tr>\n",
        crate::VERSION,
        crate::REVISION
    );
    for c in &agent.collectors {
        let snap = c.snapshot();
        let state = match (snap.samples, snap.success) {
            (0, _) => "starting",
            (_, true) => "ok",
            (_, false) => "failing",
        };
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>enabled</td><td>{:?}</td><td>{state}</td></tr>",
            c.name, c.interval
        );
    }
    for (name, why) in &agent.not_running {
        let _ = writeln!(
            h,
            "<tr><td>{name}</td><td>not running: {}</td><td></td><td></td></tr>",
            escape_html(why)
        );
    }
    h.push_str("</table>\n</body></html>\n");
    h
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
