//! Answers: the TLS handshake, authentication and the rate limit of a web
//! config, the endpoints (`/metrics` with gzip and OpenMetrics
//! negotiation, the landing page, health and readiness).

use super::*;

/// The TLS handshake, or `None` when it fails. A client that speaks plain
/// HTTP to the TLS port gets a 400 saying so, as from Go's servers, and the
/// connection is closed.
pub(super) async fn handshake(
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
pub(super) async fn secured(
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

pub(super) fn response(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

pub(super) fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    response(status, "text/plain; charset=utf-8", body.into())
}

/// Whether an Accept-Encoding header allows gzip (a `q=0` refuses it).
pub(super) fn accepts_gzip(req: &Request<Incoming>) -> bool {
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
pub(super) fn wants_openmetrics(req: &Request<Incoming>) -> bool {
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

pub(super) fn handle(
    agent: &Agent,
    web: &WebConfig,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let known =
        path == web.telemetry_path || matches!(path, "/" | "/-/healthy" | "/-/ready" | "/health");
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
        "/health" => health(agent),
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

pub(super) fn metrics(agent: &Agent, req: &Request<Incoming>) -> Response<Full<Bytes>> {
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

/// `/health`: the health collector's last report as JSON (docs/health.md);
/// 503 until its first round, or when it does not run.
pub(super) fn health(agent: &Agent) -> Response<Full<Bytes>> {
    if !agent.collectors.iter().any(|c| c.name == "health") {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the health collector does not run (--no-collector.health)\n",
        );
    }
    let report = agent.shared.health.latest();
    if report.time == 0.0 {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "no health report yet: the first checks have not run\n",
        );
    }
    response(
        StatusCode::OK,
        "application/json",
        Bytes::from(report.to_json().to_string() + "\n"),
    )
}

pub(super) fn escape_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub(super) fn landing(agent: &Agent, web: &WebConfig) -> String {
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
         <li><a href=\"/health\">/health</a>: the node's health checks as JSON (what <code>accel-agent health</code> prints)</li>\n\
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
    h.push_str("</table>\n");
    health_section(agent, &mut h);
    h.push_str("</body></html>\n");
    h
}

/// The landing page's health section: the verdict, and the checks that are
/// not ok with their reason and action.
fn health_section(agent: &Agent, h: &mut String) {
    if !agent.collectors.iter().any(|c| c.name == "health") {
        return;
    }
    let report = agent.shared.health.latest();
    if report.time == 0.0 {
        h.push_str("<h2>Health</h2>\n<p>starting: the first checks have not run</p>\n");
        return;
    }
    let bad: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.state != accel_collectors::health::State::Ok)
        .collect();
    let _ = writeln!(
        h,
        "<h2>Health</h2>\n<p>node: <b>{}</b> ({} of {} checks not ok; <a href=\"/health\">all checks</a>)</p>",
        report.state().as_str(),
        bad.len(),
        report.findings.len()
    );
    if bad.is_empty() {
        return;
    }
    h.push_str("<table>\n<tr><th>component</th><th>check</th><th>state</th><th>action</th><th>reason</th></tr>\n");
    for f in bad {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape_html(&f.component),
            escape_html(&f.check),
            f.state.as_str(),
            f.action.as_str(),
            escape_html(&f.reason)
        );
    }
    h.push_str("</table>\n");
}
