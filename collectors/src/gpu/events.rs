//! XID errors, counted as they happen by a thread blocked in
//! nvmlEventSetWait: `accel_gpu_xid_errors_total{gpu, uuid, xid}` is a
//! counter (never dcgm-exporter's last-value gauge), with the time of the
//! last XID per GPU.
//!
//! The thread runs under the collector's supervisor (`gpu-events`): it
//! beats after every wait, so a wait that never returns (a wedged driver)
//! makes the collector's samples fail rather than serve counts that no
//! longer move.

use std::collections::BTreeMap;
use std::mem::ManuallyDrop;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{EventSet, Nvml};

use super::GpuState;
use crate::workers::{Heartbeat, Worker, Workers};
use crate::{FamilyDef, Sample};

pub const XID_ERRORS: FamilyDef = FamilyDef::counter(
    "accel_gpu_xid_errors_total",
    "XID errors reported by the driver, by XID (counted as they happen, from NVML events).",
)
.labels(&["gpu", "uuid", "xid"])
.doc("XID errors by XID number (the event's `eventData`), counted from the agent's start. XIDs raised before it started, or while NVML was being re-initialised, are not seen. A series appears with its XID's first event, at 1: the shipped rules and panels count a new series as its value (`x unless x offset 10m`); `accel_gpu_xid_events_total` is the per-GPU total that is there from the start")
.source("`nvmlEventSetWait_v2`")
.equivalent("`DCGM_FI_DEV_XID_ERRORS`: a gauge holding the value of the last XID, which says neither how many there were nor when they stopped");

pub const XID_EVENTS: FamilyDef = FamilyDef::counter(
    "accel_gpu_xid_events_total",
    "XID errors reported by the driver, of any XID (counted as they happen, from NVML events).",
)
.labels(&["gpu", "uuid"])
.doc("XID errors of any XID: the sum of `accel_gpu_xid_errors_total` over `xid`, exported at 0 from the start on every GPU whose events are watched, so `increase()` sees the first XID and its presence says the GPU's XIDs are watched")
.source("`nvmlEventSetWait_v2`")
.equivalent("`DCGM_FI_DEV_XID_ERRORS` (a last-value gauge)");

pub const LAST_XID_TIMESTAMP_SECONDS: FamilyDef = FamilyDef::gauge(
    "accel_gpu_last_xid_timestamp_seconds",
    "Unix time of the GPU's last XID error.",
)
.labels(&["gpu", "uuid"])
.doc("Unix time at which the agent received the GPU's last XID")
.source("`nvmlEventSetWait_v2`");

/// How long nvmlEventSetWait waits for an event before it returns TIMEOUT,
/// in ms; the thread beats after each wait.
const WAIT_MS: u32 = 1000;

/// Longest the event thread may go without a beat: ten waits (or pauses
/// after a failed wait) of 1 s, a margin for a driver that returns late.
const MAX_SILENCE: Duration = Duration::from_secs(10);

/// XID counts shared between the event thread and the sampler.
#[derive(Debug, Default)]
pub struct Xids {
    /// (gpu index, xid) to count.
    pub counts: BTreeMap<(u32, u64), u64>,
    /// gpu index to Unix time of its last XID.
    pub last: BTreeMap<u32, f64>,
}

/// Starts the event thread under `workers`, counting into `xids`; returns
/// its handle (dropping it stops the thread), or `None` when no GPU
/// supports XID events.
pub fn start(
    nvml: &'static Nvml,
    count: u32,
    xids: Arc<Mutex<Xids>>,
    workers: &Workers,
) -> Option<Worker> {
    let mut set = nvml.create_event_set().ok()?;
    let mut registered = Vec::new();
    for i in 0..count {
        let Ok(dev) = nvml.device_by_index(i) else {
            continue;
        };
        let supported = dev
            .supported_event_types()
            .map(|t| t.contains(EventTypes::CRITICAL_XID_ERROR));
        if !matches!(supported, Ok(true)) {
            continue;
        }
        match dev.register_events(EventTypes::CRITICAL_XID_ERROR, set) {
            Ok(s) => {
                set = s;
                registered.push(i);
            }
            Err(e) => {
                // A failed registration frees the set: make a new one and
                // register again the GPUs that worked.
                tracing::info!(gpu = i, error = %e.error, "cannot watch XID events on this GPU");
                set = reregister(nvml, &registered)?;
            }
        }
    }
    if registered.is_empty() {
        return None;
    }
    // Events name their device by handle; a lost GPU cannot be asked its
    // index, so map handles to indices now.
    let handles: Vec<(usize, u32)> = registered
        .iter()
        .filter_map(|&i| nvml.device_by_index(i).ok().map(|d| (handle(&d), i)))
        .collect();
    // The set stays with the body across restarts after a panic, and is
    // never dropped: dropping it calls nvmlEventSetFree through `expect`,
    // which panics if the driver went away. It is left to the process's end.
    let set = ManuallyDrop::new(set);
    let started = workers.spawn("events", MAX_SILENCE, move |hb| {
        wait_loop(&set, &handles, &xids, hb)
    });
    match started {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the XID event thread");
            None
        }
    }
}

fn reregister(nvml: &'static Nvml, gpus: &[u32]) -> Option<EventSet<'static>> {
    let mut set = nvml.create_event_set().ok()?;
    for &i in gpus {
        let dev = nvml.device_by_index(i).ok()?;
        set = dev
            .register_events(EventTypes::CRITICAL_XID_ERROR, set)
            .ok()?;
    }
    Some(set)
}

/// A device handle as a number, to compare handles.
fn handle(dev: &nvml_wrapper::Device<'_>) -> usize {
    // SAFETY: the handle is only compared, never dereferenced.
    unsafe { dev.handle() as usize }
}

fn wait_loop(
    set: &EventSet<'static>,
    handles: &[(usize, u32)],
    xids: &Mutex<Xids>,
    hb: &Heartbeat,
) {
    let mut logged = false;
    while !hb.stopped() {
        let r = set.wait(WAIT_MS);
        hb.beat();
        match r {
            Ok(ev) => {
                if !ev.event_type.contains(EventTypes::CRITICAL_XID_ERROR) {
                    continue;
                }
                let xid = match ev.event_data {
                    Some(XidError::Value(x)) => x,
                    _ => 0,
                };
                let h = handle(&ev.device);
                let Some(&(_, gpu)) = handles.iter().find(|(x, _)| *x == h) else {
                    continue;
                };
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                tracing::warn!(gpu, xid, "XID error");
                let mut x = xids.lock().unwrap_or_else(|e| e.into_inner());
                *x.counts.entry((gpu, xid)).or_default() += 1;
                x.last.insert(gpu, now);
            }
            Err(NvmlError::Timeout) => {}
            Err(e) => {
                if !logged {
                    tracing::warn!(error = %e, "waiting for GPU events failed; retrying");
                    logged = true;
                }
                if hb.sleep(Duration::from_secs(1)) {
                    return;
                }
            }
        }
    }
}

/// Adds the XID families from the counts in `xids`. `watched` says whether
/// an event thread watches this session's GPUs.
pub(super) fn export(out: &mut Sample, xids: &Mutex<Xids>, gpus: &[GpuState], watched: bool) {
    let x = xids.lock().unwrap_or_else(|e| e.into_inner());
    let uuid = |gpu: u32| gpus.get(gpu as usize).map_or("", |s| s.uuid.as_str());
    // Only the XIDs seen: 16 XIDs at 0 on every GPU were 128 series on an
    // 8-GPU node that said nothing but "watched", which the per-GPU total
    // says in one.
    let by_xid = out.add(&XID_ERRORS);
    for ((gpu, xid), n) in &x.counts {
        by_xid.add(
            &[
                ("gpu", &gpu.to_string()),
                ("uuid", uuid(*gpu)),
                ("xid", &xid.to_string()),
            ],
            *n as f64,
        );
    }
    let mut totals: BTreeMap<u32, u64> = BTreeMap::new();
    if watched {
        for (gpu, state) in gpus.iter().enumerate() {
            if state.info.is_some() {
                totals.insert(gpu as u32, 0);
            }
        }
    }
    for ((gpu, _), n) in &x.counts {
        *totals.entry(*gpu).or_default() += n;
    }
    let total = out.add(&XID_EVENTS);
    for (gpu, n) in &totals {
        total.add(
            &[("gpu", &gpu.to_string()), ("uuid", uuid(*gpu))],
            *n as f64,
        );
    }
    let last = out.add(&LAST_XID_TIMESTAMP_SECONDS);
    for (gpu, t) in &x.last {
        last.add(&[("gpu", &gpu.to_string()), ("uuid", uuid(*gpu))], *t);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpus(n: usize) -> Vec<GpuState> {
        (0..n)
            .map(|i| GpuState {
                info: Some(Vec::new()),
                uuid: format!("GPU-{i}"),
                ..GpuState::default()
            })
            .collect()
    }

    fn text(xids: &Xids, gpus: &[GpuState], watched: bool) -> String {
        let x = Mutex::new(Xids {
            counts: xids.counts.clone(),
            last: xids.last.clone(),
        });
        let mut out = Sample::new();
        export(&mut out, &x, gpus, watched);
        let mut t = String::new();
        out.encode_text(&mut t);
        t
    }

    #[test]
    fn only_xids_seen_with_a_total_per_watched_gpu() {
        let mut x = Xids::default();
        let t = text(&x, &gpus(2), true);
        assert!(!t.contains("accel_gpu_xid_errors_total{"), "{t}");
        assert!(
            t.contains("accel_gpu_xid_events_total{gpu=\"0\",uuid=\"GPU-0\"} 0\n"),
            "{t}"
        );
        assert!(t.contains("accel_gpu_xid_events_total{gpu=\"1\",uuid=\"GPU-1\"} 0\n"));
        x.counts.insert((1, 79), 2);
        x.counts.insert((1, 13), 1);
        let t = text(&x, &gpus(2), true);
        assert!(
            t.contains("accel_gpu_xid_errors_total{gpu=\"1\",uuid=\"GPU-1\",xid=\"79\"} 2\n"),
            "{t}"
        );
        assert!(t.contains("accel_gpu_xid_events_total{gpu=\"1\",uuid=\"GPU-1\"} 3\n"));
        assert!(t.contains("accel_gpu_xid_events_total{gpu=\"0\",uuid=\"GPU-0\"} 0\n"));
        // Not watched: no total at 0, which would claim the GPU is.
        let t = text(&Xids::default(), &gpus(2), false);
        assert!(!t.contains("accel_gpu_xid_events_total{"), "{t}");
    }
}
