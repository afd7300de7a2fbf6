//! One GPU's part of a sample. Its series go to a sample of their own,
//! which reaches the collector's only if the GPU stayed reachable
//! throughout; every NVML answer is unwrapped here, in one place that
//! decides what unsupported, lost and failed mean.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use nvml_wrapper::error::NvmlError;

use super::raw;
use crate::{CollectError, ErrorKind, FamilyDef, Sample};

/// What became of one GPU in one sample.
pub(super) enum Outcome {
    /// Sampled.
    Up,
    /// Fallen off the bus: probed again with backoff.
    Lost,
    /// Unreachable for another reason (already counted as an error): shown
    /// as down this sample, tried again at the next.
    Failed,
}

/// Accumulates one GPU's series; they reach the sample only if the GPU
/// stayed reachable throughout.
pub(super) struct GpuSample<'a> {
    pub(super) index: u32,
    pub(super) gpu: String,
    pub(super) uuid: String,
    pub(super) out: Sample,
    pub(super) lost: bool,
    pub(super) unsupported: &'a mut HashSet<(u32, &'static str)>,
    /// The facts the health collector reads (published with the GPU).
    pub(super) health: crate::GpuHealth,
}

impl GpuSample<'_> {
    /// Unwraps an NVML answer: `None` for unsupported (logged once) or any
    /// other failure (counted); marks the GPU lost on `GpuLost`.
    pub(super) fn get<T>(&mut self, what: &'static str, r: Result<T, NvmlError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(
                NvmlError::NotSupported
                | NvmlError::FailedToLoadSymbol(_)
                | NvmlError::FunctionNotFound,
            ) => {
                self.unsupported(what);
                None
            }
            Err(NvmlError::GpuLost) => {
                self.lost = true;
                None
            }
            Err(e) => {
                self.out.error(CollectError::new(
                    ErrorKind::Library,
                    format!("GPU {} {what}: {e}", self.index),
                ));
                None
            }
        }
    }

    /// As [`get`](Self::get), for a raw NVML return code.
    pub(super) fn get_raw<T>(&mut self, what: &'static str, r: Result<T, u32>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(raw::NOT_SUPPORTED | raw::NOT_FOUND) => {
                self.unsupported(what);
                None
            }
            Err(raw::GPU_IS_LOST) => {
                self.lost = true;
                None
            }
            Err(code) => {
                self.out.error(CollectError::new(
                    ErrorKind::Library,
                    format!("GPU {} {what}: NVML error {code}", self.index),
                ));
                None
            }
        }
    }

    pub(super) fn unsupported(&mut self, what: &'static str) {
        if self.unsupported.insert((self.index, what)) {
            tracing::info!(
                gpu = self.index,
                function = what,
                "not supported by this GPU or driver; series left out"
            );
        }
    }

    /// Adds a series of `def` with `gpu`, `uuid` and the `extra` labels.
    pub(super) fn put(
        &mut self,
        def: &'static FamilyDef,
        extra: &[(&'static str, &str)],
        value: f64,
    ) {
        debug_assert!(
            def.labels.len() == extra.len() + 2
                && def.labels[2..].iter().zip(extra).all(|(d, (l, _))| d == l),
            "{}: labels {extra:?} differ from the declared {:?}",
            def.name,
            def.labels
        );
        // Sized once: this runs for every series of every GPU.
        let mut labels: Vec<(&'static str, &str)> = Vec::with_capacity(2 + extra.len());
        labels.push(("gpu", &self.gpu));
        labels.push(("uuid", &self.uuid));
        labels.extend_from_slice(extra);
        self.out.add(def).add(&labels, value);
    }

    /// A series of `def` with only `gpu` and `uuid`.
    pub(super) fn add(&mut self, def: &'static FamilyDef, value: f64) {
        self.put(def, &[], value);
    }

    /// A series of `def` with one label beyond `gpu` and `uuid`.
    pub(super) fn with(
        &mut self,
        def: &'static FamilyDef,
        key: &'static str,
        val: &str,
        value: f64,
    ) {
        self.put(def, &[(key, val)], value);
    }
}

/// The parts of one GPU's sample: each says what it calls (for the
/// watchdog, through the collector's [`Activity`](crate::Activity)) and,
/// at debug level, how long it took.
pub(super) struct Sections<'a> {
    activity: &'a crate::Activity,
    gpu: u32,
    /// The part running and when it began, while timing.
    current: Option<(&'static str, Instant)>,
    timing: bool,
    parts: Vec<(&'static str, Duration)>,
}

impl<'a> Sections<'a> {
    pub(super) fn new(activity: &'a crate::Activity, gpu: u32) -> Self {
        Sections {
            activity,
            gpu,
            current: None,
            timing: tracing::enabled!(tracing::Level::DEBUG),
            parts: Vec::new(),
        }
    }

    /// Ends the part running, if any, and begins `part`, which calls
    /// `calls`.
    pub(super) fn start(&mut self, part: &'static str, calls: &'static str) {
        self.finish_current();
        self.activity.set(Some(self.gpu), calls);
        if self.timing {
            self.current = Some((part, Instant::now()));
        }
    }

    /// Ends the last part: nothing of this GPU is running.
    pub(super) fn end(&mut self) {
        self.finish_current();
        self.activity.clear();
    }

    fn finish_current(&mut self) {
        if let Some((part, began)) = self.current.take() {
            self.parts.push((part, began.elapsed()));
        }
    }

    pub(super) fn log(&self) {
        if !self.timing {
            return;
        }
        let gpu = self.gpu;
        let total: Duration = self.parts.iter().map(|p| p.1).sum();
        let mut parts = self.parts.clone();
        parts.sort_by_key(|p| std::cmp::Reverse(p.1));
        let top: Vec<String> = parts
            .iter()
            .take(6)
            .map(|(n, d)| format!("{n}={:.2}ms", d.as_secs_f64() * 1e3))
            .collect();
        tracing::debug!(
            gpu,
            total_ms = format!("{:.2}", total.as_secs_f64() * 1e3),
            slowest = top.join(" "),
            "GPU sample timing"
        );
    }
}
