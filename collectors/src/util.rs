//! Small helpers for reading procfs and sysfs with bounded error kinds.

use std::io;
use std::path::Path;

use crate::{CollectError, ErrorKind};

/// Maps an I/O error on `path` to a [`CollectError`] of kind `permission`
/// or `io`.
pub fn io_error(path: &Path, err: &io::Error) -> CollectError {
    let kind = match err.kind() {
        io::ErrorKind::PermissionDenied => ErrorKind::Permission,
        _ => ErrorKind::Io,
    };
    CollectError::new(kind, format!("reading {}: {err}", path.display()))
}

/// Reads a whole file as text.
pub fn read_to_string(path: &Path) -> Result<String, CollectError> {
    std::fs::read_to_string(path).map_err(|e| io_error(path, &e))
}

/// Reads a one-value sysfs attribute, trimmed. `Ok(None)` when the file does
/// not exist or the kernel refuses to read it for a reason that means "no
/// value" (EINVAL: e.g. `speed` of a link that is down).
pub fn read_attr(path: &Path) -> Result<Option<String>, CollectError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s.trim().to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
        Err(e) => Err(io_error(path, &e)),
    }
}

/// Parses an unsigned decimal counter as f64, with a parse error naming
/// `what` on failure. Counters up to 2^64-1 are accepted; they lose
/// precision past 2^53, as every Prometheus value does.
pub fn parse_u64(s: &str, what: &dyn std::fmt::Display) -> Result<u64, CollectError> {
    // u64::from_str accepts a leading '+'; the kernel never writes one.
    s.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| s.parse::<u64>().ok())
        .flatten()
        .ok_or(())
        .map_err(|_| CollectError::parse(format!("{what}: {s:?} is not an unsigned integer")))
}
