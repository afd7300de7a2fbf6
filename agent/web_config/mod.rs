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
//! reported as warnings when dropping them only narrows what is accepted
//! (an old `min_version`, a CBC suite in `cipher_suites`, CurveP521) and
//! are errors otherwise. The same files are refused as by the
//! exporter-toolkit: unknown keys, cipher names outside Go's
//! `tls.CipherSuites()`, a cipher list HTTP/2 cannot use while `http2` is
//! on (its default), unknown curves.
//!
//! Loading reads and checks everything (files, certificates, the key, every
//! hash), so a bad file is refused whole: at start with one line and exit
//! code 2; on SIGHUP, or when [`refresh`] finds the files changed before a
//! new connection, with an error log line while the old settings stay.
//!
//! One file per part: [`schema`] (the YAML structs), [`tls`] and
//! [`client_certs`], [`auth`] (basic auth), [`http`] (response headers and
//! the rate limit); this file
//! assembles them into a [`WebSecurity`].

mod auth;
mod client_certs;
mod http;
mod schema;
mod tls;

use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwapOption;
use hyper::header::{HeaderName, HeaderValue};
use rustls::ServerConfig;

pub use auth::BasicAuth;
pub use http::RateLimiter;
use schema::File;

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
    /// The file and the files it names, as they were when loaded.
    stamps: Vec<(PathBuf, Option<Stamp>)>,
    /// The versions of them that failed to load since, not retried.
    failed: Mutex<Option<Vec<Option<Stamp>>>>,
}

/// What tells a changed file: device, inode, size, modification time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp(u64, u64, u64, i64, i64);

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp(m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

impl WebSecurity {
    fn stamps_now(&self) -> Vec<Option<Stamp>> {
        self.stamps.iter().map(|(p, _)| stamp(p)).collect()
    }

    /// Whether the file, or a certificate, key or CA file it names, changed
    /// since it was loaded (and not to a version that already failed). A
    /// few `stat` calls: cheap enough for every new connection.
    pub fn changed(&self) -> bool {
        let now = self.stamps_now();
        let loaded = self.stamps.iter().map(|(_, s)| *s);
        if now.iter().copied().eq(loaded) {
            return false;
        }
        let failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        failed.as_ref() != Some(&now)
    }
}

/// Loads the web config again if [`WebSecurity::changed`], for the next
/// connections, as the exporter-toolkit re-reads it for each one (so a
/// certificate renewed in place is used without a signal). A new version
/// that fails keeps the old one in force, logged once. Blocks: call it off
/// the async runtime. `false` when a changed file did not load.
pub fn refresh(current: &ArcSwapOption<WebSecurity>) -> bool {
    let Some(old) = current.load_full() else {
        return true;
    };
    if !old.changed() {
        return true;
    }
    let before = old.stamps_now();
    match load(&old.path) {
        Ok(new) => {
            for w in &new.warnings {
                tracing::warn!(file = %new.path.display(), "{w}");
            }
            if old.tls.is_some() && new.tls.is_none() {
                tracing::warn!("the changed web config turns TLS off");
            }
            if old.auth.is_some() && new.auth.is_none() {
                tracing::warn!("the changed web config turns authentication off");
            }
            tracing::info!(file = %new.path.display(), "the web config or a file it names changed: reloaded for new connections");
            current.store(Some(Arc::new(new)));
            true
        }
        Err(e) => {
            tracing::error!(file = %old.path.display(), error = %e, "the web config or a file it names changed but does not load; keeping the previous one");
            *old.failed.lock().unwrap_or_else(PoisonError::into_inner) = Some(before);
            false
        }
    }
}

impl fmt::Debug for WebSecurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSecurity")
            .field("path", &self.path)
            .field("tls", &self.tls_summary)
            .field("users", &self.auth.as_ref().map_or(0, |a| a.users()))
            .field("headers", &self.headers)
            .field("rate_limit", &self.rate_limit)
            .finish_non_exhaustive()
    }
}

/// Reads and checks a web config file. `Err` is one line naming the
/// problem (the caller adds the file name).
pub fn load(path: &Path) -> Result<WebSecurity, String> {
    let before = stamp(path);
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let mut w = parse(&text, path)?;
    // The file's stamp from before it was read: a change while reading is
    // seen at the next check.
    if let Some(first) = w.stamps.first_mut() {
        first.1 = before;
    }
    Ok(w)
}

fn parse(text: &str, path: &Path) -> Result<WebSecurity, String> {
    let file = File::from_yaml(text)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut warnings = Vec::new();
    let mut files = vec![path.to_owned()];
    if let Some(t) = &file.tls_server_config {
        for f in [&t.cert_file, &t.key_file, &t.client_ca_file] {
            if let Some(f) = schema::set(f.clone()) {
                files.push(dir.join(f));
            }
        }
    }
    let stamps = files
        .into_iter()
        .map(|f| {
            let s = stamp(&f);
            (f, s)
        })
        .collect();
    // The exporter-toolkit's default is on; here it only decides which
    // cipher lists are refused (HTTP/1.1 is served either way).
    let http2 = file
        .http_server_config
        .as_ref()
        .and_then(|h| h.http2)
        .unwrap_or(true);
    let (tls, tls_summary) = match file.tls_server_config {
        Some(t) => match tls::tls(t, dir, http2, &mut warnings)? {
            Some((config, summary)) => (Some(config), summary),
            None => (None, String::new()),
        },
        None => (None, String::new()),
    };
    let headers = match file.http_server_config {
        Some(h) => http::headers(h, &mut warnings)?,
        None => Vec::new(),
    };
    let rate_limit = match file.rate_limit {
        Some(r) => http::rate_limit(r)?,
        None => None,
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
        stamps,
        failed: Mutex::new(None),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_str(text: &str) -> Result<WebSecurity, String> {
        parse(text, Path::new("/nonexistent/web.yml"))
    }

    /// Valid files the mutations start from (a cost-4 bcrypt hash of "pw").
    const VALID: &[&str] = &[
        "basic_auth_users:\n  alice: $2b$04$0tWeGp5ZU0lXrJxYxYCbA.pQk6N1Dm0YQh4j8pGqk5Jxg5sJ6Qk5e\n",
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n    Strict-Transport-Security: max-age=31536000\n",
        "rate_limit:\n  interval: 1s\n  burst: 10\n",
        "tls_server_config:\n  cert_file: a.crt\n  key_file: a.key\n  min_version: TLS12\n  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]\n  client_auth_type: RequireAndVerifyClientCert\n",
        "{}\n",
    ];

    #[test]
    fn mutation_seeds_are_valid() {
        for (i, text) in VALID.iter().enumerate() {
            match parse_str(text) {
                Ok(_) => {}
                // The TLS seed names files that are not there.
                Err(e) => assert!(i == 3 && e.contains("/nonexistent/a.crt"), "{text}: {e}"),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        /// Any bytes: a web config, or a one-line error.
        #[test]
        fn arbitrary_files_are_ok_or_one_line(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let text = String::from_utf8_lossy(&bytes);
            if let Err(e) = parse_str(&text) {
                prop_assert!(!e.contains('\n') && !e.is_empty(), "{e:?}");
            }
        }

        /// Valid files with characters changed, cut or added.
        #[test]
        fn mutated_files_are_ok_or_one_line(text in accel_collectors::testing::mutated_text(VALID)) {
            if let Err(e) = parse_str(&text) {
                prop_assert!(!e.contains('\n') && !e.is_empty(), "{text:?}: {e:?}");
            }
        }
    }

    #[test]
    fn changed_files_are_loaded_again_and_bad_ones_kept_out() {
        let dir = std::env::temp_dir().join(format!("accel-webcfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("web.yml");
        let hash = bcrypt::hash("pw", 4).unwrap();
        std::fs::write(&path, format!("basic_auth_users:\n  alice: {hash}\n")).unwrap();
        let current = ArcSwapOption::new(Some(Arc::new(load(&path).unwrap())));
        let users = || {
            current
                .load()
                .as_ref()
                .unwrap()
                .auth
                .as_ref()
                .unwrap()
                .users()
        };
        assert!(!current.load().as_ref().unwrap().changed());
        refresh(&current);
        assert_eq!(users(), 1);
        std::fs::write(
            &path,
            format!("basic_auth_users:\n  alice: {hash}\n  bob: {hash}\n"),
        )
        .unwrap();
        assert!(current.load().as_ref().unwrap().changed());
        refresh(&current);
        assert_eq!(users(), 2);
        std::fs::write(&path, "basic_auth_users: [\n").unwrap();
        refresh(&current);
        assert_eq!(users(), 2, "a bad file keeps the old one");
        assert!(
            !current.load().as_ref().unwrap().changed(),
            "a bad version is not retried"
        );
        std::fs::remove_dir_all(&dir).unwrap();
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
}
