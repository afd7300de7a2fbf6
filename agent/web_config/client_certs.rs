//! Client certificate checks beyond what rustls's WebPKI verifier does, as
//! the exporter-toolkit does them: any certificate (Go's RequestClientCert
//! and RequireAnyClientCert), `client_allowed_sans`, and the system roots
//! that Go verifies against when no `client_ca_file` is given.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls::{Error, RootCertStore};

/// Go's RequestClientCert and RequireAnyClientCert: the client proves it
/// holds the key of the certificate it sends, but the certificate itself is
/// not checked against a CA.
#[derive(Debug)]
pub(super) struct AnyClientCert {
    pub(super) mandatory: bool,
    pub(super) algorithms: WebPkiSupportedAlgorithms,
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
    ) -> Result<ClientCertVerified, Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `client_allowed_sans`: after the configured check, the client's
/// certificate must carry one of these subject alternative names (DNS
/// names, email addresses, IP addresses, URIs), compared as exact strings
/// as the exporter-toolkit does. A client without a certificate is kept out
/// (the toolkit drops such a connection too).
#[derive(Debug)]
pub(super) struct AllowedSans {
    pub(super) inner: Arc<dyn ClientCertVerifier>,
    pub(super) allowed: Vec<String>,
}

impl ClientCertVerifier for AllowedSans {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let sans = subject_alt_names(end_entity)
            .ok_or(Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if sans.iter().any(|s| self.allowed.contains(s)) {
            Ok(verified)
        } else {
            tracing::debug!(found = ?sans, "client certificate has none of client_allowed_sans");
            Err(Error::InvalidCertificate(CertificateError::NotValidForName))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// One DER element: its tag, its contents and what follows it.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The subject alternative names of a DER certificate as Go prints them
/// (DNS names, email addresses, IP addresses, URIs); `None` when the
/// certificate cannot be read.
pub(super) fn subject_alt_names(der: &[u8]) -> Option<Vec<String>> {
    const SAN_OID: &[u8] = &[0x55, 0x1d, 0x11]; // 2.5.29.17
    let (0x30, cert, _) = tlv(der)? else {
        return None;
    };
    let (0x30, mut tbs, _) = tlv(cert)? else {
        return None;
    };
    let mut out = Vec::new();
    while !tbs.is_empty() {
        let (tag, value, rest) = tlv(tbs)?;
        tbs = rest;
        if tag != 0xa3 {
            continue; // only [3] extensions matter
        }
        let (0x30, mut extensions, _) = tlv(value)? else {
            return None;
        };
        while !extensions.is_empty() {
            let (_, extension, rest) = tlv(extensions)?;
            extensions = rest;
            let (0x06, oid, mut fields) = tlv(extension)? else {
                return None;
            };
            if oid != SAN_OID {
                continue;
            }
            // An optional `critical` BOOLEAN, then the OCTET STRING.
            let mut octets = None;
            while !fields.is_empty() {
                let (tag, value, rest) = tlv(fields)?;
                fields = rest;
                if tag == 0x04 {
                    octets = Some(value);
                }
            }
            let (0x30, mut names, _) = tlv(octets?)? else {
                return None;
            };
            while !names.is_empty() {
                let (tag, value, rest) = tlv(names)?;
                names = rest;
                match tag {
                    // rfc822Name, dNSName, uniformResourceIdentifier
                    0x81 | 0x82 | 0x86 => {
                        if let Ok(s) = std::str::from_utf8(value) {
                            out.push(s.to_owned());
                        }
                    }
                    // iPAddress
                    0x87 => {
                        let ip = match value.len() {
                            4 => IpAddr::from(<[u8; 4]>::try_from(value).ok()?),
                            16 => IpAddr::from(<[u8; 16]>::try_from(value).ok()?),
                            _ => continue,
                        };
                        // Go prints an IPv4-mapped address as IPv4.
                        let ip = match ip {
                            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
                            v4 => v4,
                        };
                        out.push(ip.to_string());
                    }
                    _ => {}
                }
            }
        }
    }
    Some(out)
}

/// The roots Go verifies client certificates against when no
/// `client_ca_file` is given: `$SSL_CERT_FILE` or the first of the usual
/// bundle files, then every file in `$SSL_CERT_DIR` (colon-separated) or
/// the usual directories. Unreadable files and certificates are skipped, as
/// in Go.
pub(super) fn system_roots() -> Result<RootCertStore, String> {
    const FILES: &[&str] = &[
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/ca-bundle.pem",
        "/etc/pki/tls/cacert.pem",
        "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
        "/etc/ssl/cert.pem",
    ];
    const DIRS: &[&str] = &["/etc/ssl/certs", "/etc/pki/tls/certs"];
    let mut store = RootCertStore::empty();
    let mut add = |pem: &[u8]| {
        let certs = CertificateDer::pem_slice_iter(pem).filter_map(Result::ok);
        store.add_parsable_certificates(certs);
    };
    let file_env = std::env::var("SSL_CERT_FILE")
        .ok()
        .filter(|f| !f.is_empty());
    let files: Vec<String> = match file_env {
        Some(f) => vec![f],
        None => FILES.iter().map(|f| (*f).to_owned()).collect(),
    };
    if let Some(pem) = files.iter().find_map(|f| std::fs::read(f).ok()) {
        add(&pem);
    }
    let dir_env = std::env::var("SSL_CERT_DIR").ok().filter(|d| !d.is_empty());
    let dirs: Vec<String> = match dir_env {
        Some(d) => d.split(':').map(str::to_owned).collect(),
        None => DIRS.iter().map(|d| (*d).to_owned()).collect(),
    };
    for dir in &dirs {
        let Ok(entries) = std::fs::read_dir(Path::new(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            if let Ok(pem) = std::fs::read(entry.path()) {
                add(&pem);
            }
        }
    }
    if store.is_empty() {
        return Err(format!(
            "client_auth_type needs client_ca_file: no client_ca_file and no system root certificates found (SSL_CERT_FILE, {}, SSL_CERT_DIR, {})",
            FILES.join(", "),
            DIRS.join(", ")
        ));
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sans_of_handmade_der() {
        // Certificate { TBS { [3] { Extensions { SAN: DNS a.b, IP 10.0.0.1,
        // IP ::ffff:10.0.0.2, email x@y } } } }
        let names: &[u8] = &[
            0x30, 0x22, 0x82, 0x03, b'a', b'.', b'b', 0x87, 0x04, 10, 0, 0, 1, 0x87, 0x10, 0, 0, 0,
            0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 2, 0x81, 0x03, b'x', b'@', b'y',
        ];
        let mut ext = vec![0x06, 0x03, 0x55, 0x1d, 0x11, 0x04, names.len() as u8];
        ext.extend_from_slice(names);
        let wrap = |tag: u8, inner: &[u8]| {
            let mut v = vec![tag, inner.len() as u8];
            v.extend_from_slice(inner);
            v
        };
        let der = wrap(
            0x30,
            &wrap(0x30, &wrap(0xa3, &wrap(0x30, &wrap(0x30, &ext)))),
        );
        assert_eq!(
            subject_alt_names(&der).unwrap(),
            ["a.b", "10.0.0.1", "10.0.0.2", "x@y"]
        );
        assert_eq!(subject_alt_names(&der[..der.len() - 1]), None);
        assert_eq!(subject_alt_names(&[]), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        /// Whatever a client sends as its certificate: names or `None`.
        #[test]
        fn any_bytes_are_names_or_none(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = subject_alt_names(&bytes);
        }
    }
}
