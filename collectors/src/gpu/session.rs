//! The NVML session: loading and initialising the library, starting the
//! XID event thread with it, starting again with backoff when NVML cannot
//! start or stops answering (a driver loaded after the agent, unloaded or
//! restarted), and whether an NVIDIA GPU is on PCI at all.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nvml_wrapper::error::NvmlError;
use nvml_wrapper::Nvml;

use super::{events, raw, Gpu, GpuState, MAX_BACKOFF};
use crate::workers::{Worker, Workers};
use crate::{CollectError, ErrorKind};

/// One initialisation of NVML.
pub(super) struct Session {
    pub(super) nvml: &'static Nvml,
    pub(super) raw: Option<raw::Raw>,
    /// The XID event thread, when one watches XIDs; dropped with the
    /// session, which stops it.
    pub(super) events: Option<Worker>,
}

/// Initialises NVML from `lib`. The handle is leaked: NVML stays loaded for
/// the life of the process, which gives devices, event sets and GPM samples
/// a 'static lifetime (kept between samples, moved to the event thread), and
/// a thread stuck inside a call can never see the library unloaded.
pub(super) fn init(
    lib: &Path,
    xids: &Arc<Mutex<events::Xids>>,
    workers: &Workers,
) -> Result<(Session, u32), NvmlError> {
    let nvml = Nvml::builder().lib_path(OsStr::new(lib)).init()?;
    let count = nvml.device_count()?;
    let nvml: &'static Nvml = Box::leak(Box::new(nvml));
    let raw = raw::Raw::open(OsStr::new(lib));
    let events = events::start(nvml, count, xids.clone(), workers);
    if events.is_none() {
        tracing::info!("no GPU supports XID events; accel_gpu_xid_errors_total is left out");
    }
    Ok((Session { nvml, raw, events }, count))
}

/// Whether the machine has an NVIDIA display or 3D controller on PCI (vendor
/// 0x10de, class 0x03xxxx), read from sysfs.
pub(super) fn nvidia_on_pci(sysfs: &Path) -> bool {
    let Ok(devices) = std::fs::read_dir(sysfs.join("bus/pci/devices")) else {
        return false;
    };
    devices.filter_map(|d| d.ok()).any(|d| {
        let read = |f: &str| std::fs::read_to_string(d.path().join(f)).unwrap_or_default();
        read("vendor").trim() == "0x10de" && read("class").trim().starts_with("0x03")
    })
}

impl Gpu {
    /// The NVML session, initialising (again) if needed and due; `Err` while
    /// NVML cannot start.
    pub(super) fn session(&mut self, now: Instant) -> Result<&'static Nvml, CollectError> {
        if self.session.is_none() {
            if self.init_retry_at.is_some_and(|t| now < t) {
                return Err(CollectError::new(
                    ErrorKind::Library,
                    "NVML is not initialised (waiting to retry)",
                ));
            }
            self.activity
                .set(None, "NVML init (nvmlInit_v2, nvmlDeviceGetCount_v2)");
            let started = init(&self.library, &self.xids, &self.workers);
            self.activity.clear();
            match started {
                Ok((s, count)) => {
                    tracing::info!(gpus = count, "NVML initialised");
                    self.session = Some(s);
                    self.init_retry_at = None;
                    self.init_backoff = Duration::ZERO;
                    self.gpus.resize_with(count as usize, GpuState::default);
                    for g in &mut self.gpus {
                        // Handles, GPM samples and link lists of the old
                        // session are void; identities are read again.
                        *g = GpuState {
                            busy_seconds: g.busy_seconds,
                            allocated_seconds: g.allocated_seconds,
                            idle_allocated_seconds: g.idle_allocated_seconds,
                            ..GpuState::default()
                        };
                    }
                }
                Err(e) => {
                    self.init_backoff =
                        (self.init_backoff * 2).clamp(Duration::from_secs(1), MAX_BACKOFF);
                    self.init_retry_at = Some(now + self.init_backoff);
                    return Err(CollectError::new(
                        ErrorKind::Library,
                        format!("NVML init: {e}"),
                    ));
                }
            }
        }
        let nvml = self.session.as_ref().expect("just set").nvml;
        // A driver that was unloaded or restarted invalidates the session.
        match nvml.device_count() {
            Ok(n) if n as usize == self.gpus.len() => Ok(nvml),
            Ok(n) => {
                tracing::warn!(
                    was = self.gpus.len(),
                    now = n,
                    "the number of GPUs changed; re-initialising NVML"
                );
                self.session = None;
                Err(CollectError::new(
                    ErrorKind::Library,
                    "the number of GPUs changed",
                ))
            }
            Err(e) => {
                tracing::warn!(error = %e, "NVML stopped answering (driver unloaded or restarted?); re-initialising");
                self.session = None;
                Err(CollectError::new(
                    ErrorKind::Library,
                    format!("NVML device count: {e}"),
                ))
            }
        }
    }
}
