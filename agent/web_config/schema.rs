//! The web config file as written: the exporter-toolkit's YAML keys and
//! nothing else (unknown keys are errors), and the reading of its text into
//! these structs. What each section means is checked where it is applied:
//! [`super::tls`], [`super::auth`], [`super::http`].

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

/// The file as written: the exporter-toolkit's keys, nothing else.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    pub(super) tls_server_config: Option<TlsFile>,
    pub(super) http_server_config: Option<HttpFile>,
    pub(super) rate_limit: Option<RateLimitFile>,
    pub(super) basic_auth_users: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TlsFile {
    pub(super) cert: Option<String>,
    pub(super) key: Option<String>,
    pub(super) client_ca: Option<String>,
    pub(super) cert_file: Option<String>,
    pub(super) key_file: Option<String>,
    pub(super) client_auth_type: Option<String>,
    pub(super) client_ca_file: Option<String>,
    pub(super) cipher_suites: Option<Vec<String>>,
    pub(super) curve_preferences: Option<Vec<String>>,
    pub(super) min_version: Option<String>,
    pub(super) max_version: Option<String>,
    pub(super) prefer_server_cipher_suites: Option<bool>,
    pub(super) client_allowed_sans: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct HttpFile {
    pub(super) http2: Option<bool>,
    pub(super) headers: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RateLimitFile {
    pub(super) burst: Option<i64>,
    pub(super) interval: Option<GoDuration>,
}

/// A Go `time.Duration` as YAML gives it: a number is nanoseconds (so `0`
/// is zero), a string is in Go's `time.ParseDuration` syntax.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum GoDuration {
    Nanos(i64),
    Text(String),
}

impl File {
    /// Reads the YAML text; an empty file is an empty config. `Err` is one
    /// line.
    pub(super) fn from_yaml(text: &str) -> Result<File, String> {
        if text.trim().is_empty() {
            return Ok(File::default());
        }
        Ok(serde_norway::from_str::<Option<File>>(text)
            .map_err(one_line)?
            .unwrap_or_default())
    }
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
pub(super) fn set(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}
