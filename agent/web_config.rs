//! The web config file (`--web.config.file`): TLS, HTTP basic
//! authentication and a few response headers, in the format of the
//! Prometheus exporter-toolkit, so that a file written for node_exporter
//! works unchanged:
//!
//! ```yaml
//! tls_server_config:
//!   cert_file: server.crt        # relative paths: from the file's directory
//!   key_file: server.key
//!   client_auth_type: RequireAndVerifyClientCert
//!   client_ca_file: ca.crt
//!   min_version: TLS12
//! http_server_config:
//!   headers:
//!     X-Content-Type-Options: nosniff
//! basic_auth_users:
//!   prometheus: $2y$10$...       # bcrypt hash
//! ```
//!
//! TLS is rustls (ring provider), which speaks TLS 1.2 and 1.3 only and
//! only AEAD cipher suites: settings that ask for what it cannot do are
//! reported as warnings when they only widen what is accepted (an old
//! `min_version`, a CBC suite in `cipher_suites`) and as errors when
//! ignoring them would weaken the server (`client_allowed_sans`). Unknown
//! keys are errors, as in the exporter-toolkit.
//!
//! Loading reads and checks everything (files, certificates, the key, every
//! hash), so a bad file is refused whole: at start with one line and exit
//! code 2, on SIGHUP with an error log line while the old settings stay.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hyper::header::{HeaderName, HeaderValue};
use ring::hmac;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    DigitallySignedStruct, DistinguishedName, NamedGroup, RootCertStore, ServerConfig,
    SignatureScheme, SupportedProtocolVersion,
};
use serde::Deserialize;
use subtle::ConstantTimeEq;

/// The file as written: the exporter-toolkit's keys, nothing else.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    tls_server_config: Option<TlsFile>,
    http_server_config: Option<HttpFile>,
    rate_limit: Option<RateLimitFile>,
    basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    cipher_suites: Option<Vec<String>>,
    curve_preferences: Option<Vec<String>>,
    min_version: Option<String>,
    max_version: Option<String>,
    prefer_server_cipher_suites: Option<bool>,
    client_allowed_sans: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpFile {
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitFile {
    burst: Option<u32>,
    interval: Option<String>,
}

/// The headers a web config may set, and their allowed values (none listed:
/// any value), as in the exporter-toolkit.
const EXTRA_HEADERS: &[(&str, &[&str])] = &[
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

/// A loaded web config: what the server applies to every connection and
/// request.
pub struct WebSecurity {
    /// The file it came from.
    pub path: PathBuf,
    /// The TLS settings; `None` serves plain HTTP.
    pub tls: Option<Arc<ServerConfig>>,
    /// How TLS is set up, for the log.
    pub tls_summary: String,
    /// Basic authentication; `None` lets every request in.
    pub auth: Option<Arc<BasicAuth>>,
    /// Headers added to every response.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The `rate_limit` section: requests beyond it get 429.
    pub rate_limit: Option<RateLimiter>,
    /// Settings accepted but not (fully) honoured, for the log.
    pub warnings: Vec<String>,
}

impl fmt::Debug for WebSecurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSecurity")
            .field("path", &self.path)
            .field("tls", &self.tls_summary)
            .field("users", &self.auth.as_ref().map_or(0, |a| a.users.len()))
            .field("headers", &self.headers)
            .field("rate_limit", &self.rate_limit)
            .finish_non_exhaustive()
    }
}

/// Reads and checks a web config file. `Err` is one line naming the
/// problem (the caller adds the file name).
pub fn load(path: &Path) -> Result<WebSecurity, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    parse(&text, path)
}

fn one_line(s: impl fmt::Display) -> String {
    s.to_string()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// `Some` only for a non-empty string: the exporter-toolkit treats an
/// empty value as unset.
fn set(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

fn parse(text: &str, path: &Path) -> Result<WebSecurity, String> {
    let file: File = if text.trim().is_empty() {
        File::default()
    } else {
        serde_norway::from_str::<Option<File>>(text)
            .map_err(one_line)?
            .unwrap_or_default()
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut warnings = Vec::new();
    let (tls, tls_summary) = match file.tls_server_config {
        Some(t) => match tls(t, dir, &mut warnings)? {
            Some((config, summary)) => (Some(config), summary),
            None => (None, String::new()),
        },
        None => (None, String::new()),
    };
    let mut headers = Vec::new();
    if let Some(http) = file.http_server_config {
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
    }
    let rate_limit = match file.rate_limit {
        Some(RateLimitFile {
            burst,
            interval: Some(interval),
        }) => {
            let interval = crate::config::parse_duration(&interval)
                .map_err(|e| format!("rate_limit: interval {e}"))?;
            (!interval.is_zero()).then(|| RateLimiter::new(interval, burst.unwrap_or(0)))
        }
        _ => None,
    };
    let auth = match file.basic_auth_users {
        Some(users) if !users.is_empty() => Some(Arc::new(BasicAuth::new(users)?)),
        _ => None,
    };
    Ok(WebSecurity {
        path: path.to_owned(),
        tls,
        tls_summary,
        auth,
        headers,
        rate_limit,
        warnings,
    })
}

fn read(what: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

/// A PEM file's certificates, at least one.
fn certificates(
    what: &str,
    name: &str,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} {name}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{what} {name}: no PEM certificate in it"));
    }
    Ok(certs)
}

/// The `tls_server_config` section as a rustls config, or `None` when it
/// does not switch TLS on (no certificate, key or client auth setting).
fn tls(
    t: TlsFile,
    dir: &Path,
    warnings: &mut Vec<String>,
) -> Result<Option<(Arc<ServerConfig>, String)>, String> {
    let resolve = |p: String| dir.join(p);
    let cert_file = set(t.cert_file).map(resolve);
    let key_file = set(t.key_file).map(resolve);
    let ca_file = set(t.client_ca_file).map(resolve);
    let (cert, key, ca) = (set(t.cert), set(t.key), set(t.client_ca));
    let client_auth = set(t.client_auth_type);
    let enabled = cert_file.is_some()
        || key_file.is_some()
        || ca_file.is_some()
        || cert.is_some()
        || key.is_some()
        || ca.is_some()
        || client_auth.is_some();
    if !enabled {
        if t.min_version.is_some() || t.max_version.is_some() || t.cipher_suites.is_some() {
            warnings.push(
                "tls_server_config has no cert_file or key_file: TLS is off, its other settings are unused"
                    .into(),
            );
        }
        return Ok(None);
    }

    if cert_file.is_none() && cert.is_none() {
        return Err("tls_server_config: missing one of cert or cert_file".into());
    }
    if key_file.is_none() && key.is_none() {
        return Err("tls_server_config: missing one of key or key_file".into());
    }
    let (cert_name, cert_pem) = match (&cert_file, cert) {
        (Some(p), _) => (p.display().to_string(), read("cert_file", p)?),
        (None, Some(c)) => ("(inline cert)".to_owned(), c.into_bytes()),
        (None, None) => return Err("tls_server_config: missing one of cert or cert_file".into()),
    };
    let (key_name, key_pem) = match (&key_file, key) {
        (Some(p), _) => (p.display().to_string(), read("key_file", p)?),
        (None, Some(k)) => ("(inline key)".to_owned(), k.into_bytes()),
        (None, None) => return Err("tls_server_config: missing one of key or key_file".into()),
    };
    let chain = certificates("cert_file", &cert_name, &cert_pem)?;
    let private_key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("key_file {key_name}: no usable private key ({e})"))?;

    let mut provider = rustls::crypto::ring::default_provider();
    let versions = versions(t.min_version.as_deref(), t.max_version.as_deref(), warnings)?;
    if let Some(names) = &t.cipher_suites {
        provider.cipher_suites = cipher_suites(&provider, names, warnings)?;
    }
    if let Some(names) = &t.curve_preferences {
        provider.kx_groups = curves(&provider, names, warnings)?;
    }
    let provider = Arc::new(provider);

    let auth_type = client_auth.as_deref().unwrap_or("NoClientCert");
    let roots = match (&ca_file, ca) {
        (Some(p), _) => Some((p.display().to_string(), read("client_ca_file", p)?)),
        (None, Some(c)) => Some(("(inline client_ca)".to_owned(), c.into_bytes())),
        (None, None) => None,
    }
    .map(|(name, pem)| {
        let mut store = RootCertStore::empty();
        for cert in certificates("client_ca_file", &name, &pem)? {
            store
                .add(cert)
                .map_err(|e| format!("client_ca_file {name}: {e}"))?;
        }
        Ok::<_, String>(Arc::new(store))
    })
    .transpose()?;
    let algorithms = provider.signature_verification_algorithms;
    let verifier: Option<Arc<dyn ClientCertVerifier>> = match auth_type {
        "NoClientCert" => None,
        "RequestClientCert" => Some(Arc::new(AnyClientCert {
            mandatory: false,
            algorithms,
        })),
        // RequireClientCert: the exporter-toolkit's old name.
        "RequireAnyClientCert" | "RequireClientCert" => Some(Arc::new(AnyClientCert {
            mandatory: true,
            algorithms,
        })),
        "VerifyClientCertIfGiven" | "RequireAndVerifyClientCert" => {
            let roots = roots.clone().ok_or_else(|| {
                format!("client_auth_type {auth_type} needs client_ca_file (the CA that signs client certificates)")
            })?;
            let builder = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
            let builder = if auth_type == "VerifyClientCertIfGiven" {
                builder.allow_unauthenticated()
            } else {
                builder
            };
            Some(
                builder
                    .build()
                    .map_err(|e| format!("client_ca_file: {e}"))?,
            )
        }
        other => return Err(format!("invalid client_auth_type {other:?} (one of NoClientCert, RequestClientCert, RequireAnyClientCert, VerifyClientCertIfGiven, RequireAndVerifyClientCert)")),
    };
    if roots.is_some() && verifier.is_none() {
        return Err(
            "client CA's have been configured without a client auth policy (client_auth_type is NoClientCert)"
                .into(),
        );
    }
    if t.client_allowed_sans.is_some() {
        return Err("client_allowed_sans is not supported by accel-agent; restrict clients with client_ca_file instead".into());
    }

    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| format!("tls_server_config: {e}"))?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, private_key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => {
                format!("key_file {key_name} is not the private key of cert_file {cert_name}")
            }
            e => format!("cert_file {cert_name} and key_file {key_name}: {e}"),
        })?;
    config.ignore_client_order = t.prefer_server_cipher_suites.unwrap_or(true);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let names: Vec<&str> = versions
        .iter()
        .map(|v| {
            if v.version == rustls::ProtocolVersion::TLSv1_3 {
                "TLS13"
            } else {
                "TLS12"
            }
        })
        .collect();
    let summary = format!("versions={} client_auth_type={auth_type}", names.join(","));
    Ok(Some((Arc::new(config), summary)))
}

fn versions(
    min: Option<&str>,
    max: Option<&str>,
    warnings: &mut Vec<String>,
) -> Result<Vec<&'static SupportedProtocolVersion>, String> {
    let rank = |key: &str, v: &str| match v {
        "TLS10" => Ok(10),
        "TLS11" => Ok(11),
        "TLS12" => Ok(12),
        "TLS13" => Ok(13),
        _ => Err(format!(
            "unknown TLS version {v:?} in {key} (one of TLS10, TLS11, TLS12, TLS13)"
        )),
    };
    let min_rank = min
        .map(|v| rank("min_version", v))
        .transpose()?
        .unwrap_or(12);
    let max_rank = max
        .map(|v| rank("max_version", v))
        .transpose()?
        .unwrap_or(13);
    if max_rank < 12 {
        return Err(format!(
            "max_version {}: only TLS12 and TLS13 are supported",
            max.unwrap_or_default()
        ));
    }
    if min_rank > max_rank {
        return Err(format!(
            "min_version {} is above max_version {}",
            min.unwrap_or_default(),
            max.unwrap_or_default()
        ));
    }
    if min_rank < 12 {
        warnings.push(format!(
            "tls_server_config: min_version {} is below what rustls speaks; TLS12 is the minimum",
            min.unwrap_or_default()
        ));
    }
    let mut out = Vec::new();
    if max_rank >= 13 {
        out.push(&rustls::version::TLS13);
    }
    if min_rank <= 12 {
        out.push(&rustls::version::TLS12);
    }
    Ok(out)
}

/// `cipher_suites` (Go's names) applies to TLS 1.2 only, as in Go: the TLS
/// 1.3 suites are always on. Names rustls has are kept in the order given;
/// other Go names (CBC, RSA key exchange) are dropped with a warning.
fn cipher_suites(
    provider: &CryptoProvider,
    names: &[String],
    warnings: &mut Vec<String>,
) -> Result<Vec<rustls::SupportedCipherSuite>, String> {
    let mut out: Vec<_> = provider
        .cipher_suites
        .iter()
        .filter(|s| s.version() == &rustls::version::TLS13)
        .copied()
        .collect();
    let mut dropped = Vec::new();
    for name in names {
        if !name.starts_with("TLS_")
            || !name
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(format!("unknown cipher suite {name:?} in cipher_suites (Go's names, e.g. TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)"));
        }
        // Go's aliases for the ChaCha20 suites lack the hash.
        let full = if name.ends_with("_POLY1305") {
            format!("{name}_SHA256")
        } else {
            name.clone()
        };
        if matches!(
            full.as_str(),
            "TLS_AES_128_GCM_SHA256" | "TLS_AES_256_GCM_SHA384" | "TLS_CHACHA20_POLY1305_SHA256"
        ) {
            continue; // TLS 1.3: not configurable, in Go either
        }
        match provider
            .cipher_suites
            .iter()
            .find(|s| s.version() == &rustls::version::TLS12 && format!("{:?}", s.suite()) == full)
        {
            Some(s) if !out.contains(s) => out.push(*s),
            Some(_) => {}
            None => dropped.push(name.as_str()),
        }
    }
    if !dropped.is_empty() {
        warnings.push(format!(
            "tls_server_config: cipher suites not supported by rustls, ignored: {}",
            dropped.join(", ")
        ));
    }
    if !out.iter().any(|s| s.version() == &rustls::version::TLS12) {
        warnings.push(
            "tls_server_config: no usable TLS 1.2 cipher suite in cipher_suites: only TLS 1.3 clients can connect"
                .into(),
        );
    }
    Ok(out)
}

fn curves(
    provider: &CryptoProvider,
    names: &[String],
    warnings: &mut Vec<String>,
) -> Result<Vec<&'static dyn rustls::crypto::SupportedKxGroup>, String> {
    let mut out = Vec::new();
    for name in names {
        let group = match name.as_str() {
            "CurveP256" => NamedGroup::secp256r1,
            "CurveP384" => NamedGroup::secp384r1,
            "X25519" => NamedGroup::X25519,
            "CurveP521" => {
                warnings.push(
                    "tls_server_config: curve CurveP521 is not supported by rustls, ignored".into(),
                );
                continue;
            }
            _ => {
                return Err(format!(
                "unknown curve {name:?} in curve_preferences (one of CurveP256, CurveP384, CurveP521, X25519)"
            ))
            }
        };
        if let Some(g) = provider.kx_groups.iter().find(|g| g.name() == group) {
            out.push(*g);
        }
    }
    if out.is_empty() {
        return Err(
            "curve_preferences: none of the curves listed is supported (CurveP256, CurveP384, X25519 are)"
                .into(),
        );
    }
    Ok(out)
}

/// Go's RequestClientCert and RequireAnyClientCert: the client proves it
/// holds the key of the certificate it sends, but the certificate itself is
/// not checked against a CA.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
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

/// How many verified credentials are remembered.
const VERIFIED_CACHE: usize = 64;

/// `basic_auth_users`: user name to bcrypt hash.
///
/// A bcrypt check costs tens of milliseconds by design, too much for every
/// scrape. A credential that passed is remembered as an HMAC-SHA256 of the
/// user and password under a key drawn at random when the file is loaded,
/// so the memory holds no password and no offline-guessable hash; a later
/// request with the same credential is let in after a constant-time
/// comparison against every remembered digest. A failed check is never
/// remembered: every wrong guess pays the full bcrypt cost, and guesses
/// are checked one at a time, so password spraying costs the node at most
/// one core. Unknown users are checked against a configured user's hash,
/// so they cost the same as known ones.
pub struct BasicAuth {
    users: BTreeMap<String, String>,
    /// The hash an unknown user is checked against: the costliest one.
    decoy: String,
    key: hmac::Key,
    verified: Mutex<VecDeque<[u8; 32]>>,
    bcrypt: tokio::sync::Semaphore,
}

impl BasicAuth {
    fn new(users: BTreeMap<String, String>) -> Result<Self, String> {
        let mut decoy = (0, String::new());
        for (user, hash) in &users {
            let parts = bcrypt::HashParts::from_str(hash)
                .map_err(|e| format!("basic_auth_users: {user}: not a bcrypt hash ({e})"))?;
            let cost = parts.get_cost();
            if !(4..=31).contains(&cost) {
                return Err(format!(
                    "basic_auth_users: {user}: bcrypt cost {cost} is outside 4-31"
                ));
            }
            if cost > decoy.0 {
                decoy = (cost, hash.clone());
            }
        }
        let key = hmac::Key::generate(hmac::HMAC_SHA256, &ring::rand::SystemRandom::new())
            .map_err(|_| "cannot draw a random key".to_owned())?;
        Ok(Self {
            users,
            decoy: decoy.1,
            key,
            verified: Mutex::new(VecDeque::with_capacity(VERIFIED_CACHE)),
            bcrypt: tokio::sync::Semaphore::new(1),
        })
    }

    /// How many users the file lists.
    pub fn users(&self) -> usize {
        self.users.len()
    }

    fn digest(&self, user: &[u8], password: &[u8]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(&(user.len() as u64).to_le_bytes());
        ctx.update(user);
        ctx.update(password);
        let tag = ctx.sign();
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Whether this digest was verified before; compares against every
    /// remembered digest in constant time.
    fn remembered(&self, digest: &[u8; 32]) -> bool {
        let verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        let mut found = subtle::Choice::from(0);
        for d in verified.iter() {
            found |= d.ct_eq(digest);
        }
        found.into()
    }

    fn remember(&self, digest: [u8; 32]) {
        let mut verified = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
        if verified.len() >= VERIFIED_CACHE {
            verified.pop_front();
        }
        verified.push_back(digest);
    }

    /// The bcrypt check itself (slow: run it off the async runtime).
    fn verify(&self, user: &[u8], password: &[u8]) -> bool {
        let known = std::str::from_utf8(user)
            .ok()
            .and_then(|u| self.users.get(u));
        let hash = known.unwrap_or(&self.decoy);
        let matches = bcrypt::verify(password, hash).unwrap_or(false);
        matches && known.is_some()
    }

    /// Whether an `Authorization` header carries the credentials of a
    /// configured user.
    pub async fn check(self: &Arc<Self>, authorization: Option<&HeaderValue>) -> bool {
        let Some((user, password)) = authorization.and_then(credentials) else {
            return false;
        };
        let digest = self.digest(&user, &password);
        if self.remembered(&digest) {
            return true;
        }
        let Ok(_slot) = self.bcrypt.acquire().await else {
            return false;
        };
        // Another request may have verified the same credential meanwhile.
        if self.remembered(&digest) {
            return true;
        }
        let me = self.clone();
        let ok = tokio::task::spawn_blocking(move || me.verify(&user, &password))
            .await
            .unwrap_or(false);
        if ok {
            self.remember(digest);
        }
        ok
    }
}

/// User and password of a `Basic` Authorization header.
fn credentials(header: &HeaderValue) -> Option<(Vec<u8>, Vec<u8>)> {
    let v = header.as_bytes();
    let space = v.iter().position(|&b| b == b' ')?;
    if !v[..space].eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(v[space + 1..].trim_ascii())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    Some((decoded[..colon].to_vec(), decoded[colon + 1..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<WebSecurity, String> {
        parse(text, Path::new("/nonexistent/web.yml"))
    }

    #[test]
    fn empty_and_auth_only() {
        let w = parse_str("").unwrap();
        assert!(w.tls.is_none() && w.auth.is_none());
        let w = parse_str("{}\n").unwrap();
        assert!(w.tls.is_none());
        let hash = bcrypt::hash("pw", 4).unwrap();
        let w = parse_str(&format!(
            "basic_auth_users:\n  alice: {hash}\nhttp_server_config:\n  headers:\n    X-Frame-Options: deny\n"
        ))
        .unwrap();
        assert_eq!(w.auth.unwrap().users(), 1);
        assert_eq!(w.headers.len(), 1);
    }

    #[test]
    fn bad_files_are_one_line() {
        for (text, want) in [
            (
                "tls_server_config:\n  cert_file: a.crt\n",
                "missing one of key",
            ),
            (
                "tls_server_config:\n  key_file: a.key\n",
                "missing one of cert",
            ),
            (
                "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n",
                "/nonexistent/a.crt",
            ),
            ("basic_auth_users:\n  alice: plain\n", "not a bcrypt hash"),
            ("basic_auth_user:\n  alice: x\n", "unknown field"),
            ("tls_server_config: [\n", ""),
            (
                "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
                "X-Frame-Options",
            ),
            ("http_server_config:\n  headers:\n    Server: x\n", "Server"),
            ("rate_limit:\n  interval: soon\n", "rate_limit"),
        ] {
            let e = parse_str(text).unwrap_err();
            assert!(!e.contains('\n'), "{e}");
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn versions_and_suites() {
        let mut w = Vec::new();
        assert_eq!(versions(None, None, &mut w).unwrap().len(), 2);
        assert_eq!(versions(Some("TLS13"), None, &mut w).unwrap().len(), 1);
        assert_eq!(
            versions(Some("TLS10"), Some("TLS12"), &mut w)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(w.len(), 1);
        assert!(versions(Some("TLS13"), Some("TLS12"), &mut w).is_err());
        assert!(versions(None, Some("TLS11"), &mut w).is_err());
        assert!(versions(Some("SSL3"), None, &mut w).is_err());
        let p = rustls::crypto::ring::default_provider();
        let mut w = Vec::new();
        let s = cipher_suites(
            &p,
            &[
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305".into(),
                "TLS_RSA_WITH_AES_128_CBC_SHA".into(),
            ],
            &mut w,
        )
        .unwrap();
        let tls12: Vec<_> = s
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS12)
            .collect();
        assert_eq!(tls12.len(), 1);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(cipher_suites(&p, &["ECDHE-RSA-AES128".into()], &mut w).is_err());
        assert_eq!(curves(&p, &["X25519".into()], &mut w).unwrap().len(), 1);
        assert!(curves(&p, &["CurveP521".into()], &mut w).is_err());
        assert!(curves(&p, &["P-256".into()], &mut w).is_err());
    }

    #[test]
    fn rate_limiter() {
        let l = RateLimiter::new(Duration::from_secs(3600), 2);
        assert!(l.allow() && l.allow() && !l.allow());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn basic_auth_checks_and_remembers() {
        let hash = bcrypt::hash("right", 4).unwrap();
        let auth = Arc::new(BasicAuth::new([("alice".to_owned(), hash)].into()).unwrap());
        let header = |u: &str, p: &str| {
            let v = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
            HeaderValue::from_str(&format!("Basic {v}")).unwrap()
        };
        assert!(!auth.check(None).await);
        assert!(!auth.check(Some(&header("alice", "wrong"))).await);
        assert!(!auth.check(Some(&header("bob", "right"))).await);
        assert!(
            !auth
                .check(Some(&HeaderValue::from_static("Bearer x")))
                .await
        );
        assert!(auth.verified.lock().unwrap().is_empty());
        assert!(auth.check(Some(&header("alice", "right"))).await);
        assert_eq!(auth.verified.lock().unwrap().len(), 1);
        assert!(auth.check(Some(&header("alice", "right"))).await);
        assert_eq!(auth.verified.lock().unwrap().len(), 1);
        // A remembered credential does not let in a neighbour.
        assert!(!auth.check(Some(&header("alice", "right2"))).await);
        assert!(!auth.check(Some(&header("alic", "eright"))).await);
        for i in 0..VERIFIED_CACHE + 5 {
            auth.remember([i as u8; 32]);
        }
        assert_eq!(auth.verified.lock().unwrap().len(), VERIFIED_CACHE);
    }
}
