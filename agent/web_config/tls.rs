//! The `tls_server_config` section as a rustls server config: certificates
//! and key (files or inline PEM), client certificate checks, TLS versions,
//! cipher suites and curves.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{NamedGroup, RootCertStore, ServerConfig, SupportedProtocolVersion};

use super::client_certs::{system_roots, AllowedSans, AnyClientCert};
use super::schema::{set, TlsFile};

/// The names of Go's `tls.CipherSuites()`, the only ones the
/// exporter-toolkit accepts (Go's insecure list is refused), with whether
/// rustls has the suite. The TLS 1.3 ones are accepted and mean nothing,
/// in Go as here: TLS 1.3 suites are not configurable.
const GO_CIPHERS: &[(&str, bool)] = &[
    ("TLS_AES_128_GCM_SHA256", true),
    ("TLS_AES_256_GCM_SHA384", true),
    ("TLS_CHACHA20_POLY1305_SHA256", true),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", true),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", true),
    ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", true),
    ("TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", true),
    ("TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", true),
    ("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", true),
    ("TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", false),
    ("TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", false),
    ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", false),
    ("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", false),
    ("TLS_RSA_WITH_AES_128_CBC_SHA", false),
    ("TLS_RSA_WITH_AES_256_CBC_SHA", false),
    ("TLS_RSA_WITH_AES_128_GCM_SHA256", false),
    ("TLS_RSA_WITH_AES_256_GCM_SHA384", false),
];

/// One of these must be in `cipher_suites` while HTTP/2 is on and TLS 1.2
/// allowed: Go's HTTP/2 server refuses to start otherwise.
const HTTP2_REQUIRED: &[&str] = &[
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
];

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
pub(super) fn tls(
    t: TlsFile,
    dir: &Path,
    http2: bool,
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
    // An empty list is Go's default, as in Go.
    if let Some(names) = t.cipher_suites.as_ref().filter(|n| !n.is_empty()) {
        provider.cipher_suites = cipher_suites(&provider, names, warnings)?;
        let tls12_allowed = t.min_version.as_deref() != Some("TLS13");
        if http2 && tls12_allowed && !names.iter().any(|n| HTTP2_REQUIRED.contains(&n.as_str())) {
            return Err(format!(
                "tls_server_config: cipher_suites lacks the cipher HTTP/2 requires ({}) while http_server_config.http2 is on (the default); add one or set http2: false, as the exporter-toolkit demands",
                HTTP2_REQUIRED.join(" or ")
            ));
        }
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
            // Without a CA, Go verifies against the system roots (and
            // names no CA to the client).
            let builder = match roots.clone() {
                Some(roots) => WebPkiClientVerifier::builder_with_provider(roots, provider.clone()),
                None => {
                    let system = Arc::new(system_roots()?);
                    warnings.push(format!("tls_server_config: client_auth_type {auth_type} without client_ca_file: client certificates are verified against the system's {} root certificates", system.len()));
                    WebPkiClientVerifier::builder_with_provider(system, provider.clone())
                        .clear_root_hint_subjects()
                }
            };
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
    // Go checks the SANs whenever it asks for a client certificate; with
    // NoClientCert it never asks, and the list means nothing.
    let verifier = match (verifier, t.client_allowed_sans) {
        (Some(inner), Some(allowed)) => {
            Some(Arc::new(AllowedSans { inner, allowed }) as Arc<dyn ClientCertVerifier>)
        }
        (None, Some(_)) => {
            warnings.push("tls_server_config: client_allowed_sans has no effect with client_auth_type NoClientCert (no client certificate is asked for)".into());
            None
        }
        (v, None) => v,
    };

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

/// `cipher_suites` (the names of Go's `tls.CipherSuites()`) applies to TLS
/// 1.2 only, as in Go: the TLS 1.3 suites are always on. A name Go lacks is
/// refused (as by the exporter-toolkit); Go's suites that rustls lacks (CBC,
/// RSA key exchange) are dropped with a warning, since they only widen what
/// is accepted. The rest keep the order given.
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
        let Some(&(_, in_rustls)) = GO_CIPHERS.iter().find(|(n, _)| n == name) else {
            return Err(format!(
                "tls_server_config: unknown cipher {name:?} in cipher_suites (the names of Go's tls.CipherSuites(), e.g. TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)"
            ));
        };
        if !in_rustls {
            dropped.push(name.as_str());
            continue;
        }
        let suite = provider.cipher_suites.iter().find(|s| {
            s.version() == &rustls::version::TLS12 && format!("{:?}", s.suite()) == *name
        });
        match suite {
            Some(s) if !out.contains(s) => out.push(*s),
            _ => {} // TLS 1.3 (always on) or a repeat
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

#[cfg(test)]
mod tests {
    use super::*;

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
                "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256".into(),
                "TLS_RSA_WITH_AES_128_CBC_SHA".into(),
                "TLS_AES_128_GCM_SHA256".into(),
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
        // Not Go names: OpenSSL's, Go's short alias, Go's insecure list, a typo.
        for bad in [
            "ECDHE-RSA-AES128-GCM-SHA256",
            "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305",
            "TLS_RSA_WITH_RC4_128_SHA",
            "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA265",
        ] {
            let e = cipher_suites(&p, &[bad.into()], &mut w).unwrap_err();
            assert!(e.contains(bad) && e.contains("unknown cipher"), "{e}");
        }
        assert_eq!(curves(&p, &["X25519".into()], &mut w).unwrap().len(), 1);
        assert!(curves(&p, &["CurveP521".into()], &mut w).is_err());
        // P-521 among supported curves: dropped, the others kept, warned.
        let mut w = Vec::new();
        let c = curves(&p, &["CurveP521".into(), "CurveP384".into()], &mut w).unwrap();
        assert_eq!(c.len(), 1);
        assert!(w[0].contains("CurveP521"), "{w:?}");
        assert!(curves(&p, &["P-256".into()], &mut w).is_err());
    }
}
