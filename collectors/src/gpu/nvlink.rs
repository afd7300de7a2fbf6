//! NVLink: link state through nvml-wrapper every sample; data and error
//! counters every `--collector.gpu.counter-interval`, the data counters as
//! raw field values with the link as scope id in the sample's one
//! field-values call. Error counters come from
//! `nvmlDeviceGetNvLinkErrorCounter` where the driver has it, else (NVLink5,
//! Blackwell, where it answers NOT_SUPPORTED) from the
//! `NVML_FI_DEV_NVLINK_COUNT_*` fields in the same call. Between reads the
//! last readings are exported again.
//!
//! The data counters are read per GPU where the driver sums the links
//! itself (scope id `UINT_MAX`, "aggregate value summed up across all
//! links" in nvml.h): 2 fields a read instead of 2 per link (36 on an
//! H100), plus the links shown per link. The first reads ask for both, and
//! the aggregate is used once it has matched the links' sum while data
//! moved; a driver that refuses it, or answers something else (one link's
//! count), keeps the per-link fields. While no data has moved (an idle
//! GPU), reads ask for the aggregate alone until it moves (and every link
//! again every 12th read), then for every link again to judge it. A link
//! newly shown per link (it went down or began counting errors) has its
//! byte counters from the next read on.
//!
//! What is exported is lean by default: per GPU, the number of links and of
//! active links, the data counters and the error counters by type, summed
//! over the links (9 series per GPU where per-link series would be 7 per
//! link, 126 on an 18-link H100). Per-link series are exported only for the
//! links that are not healthy: a link that is inactive while another link of
//! its GPU has been active since the agent started, or whose error counters
//! are not all 0. Once shown, a link stays shown (its series do not come and
//! go). `--collector.gpu.nvlink.per-link` exports every link.

use std::collections::BTreeSet;
use std::ops::Range;

use nvml_wrapper::enum_wrappers::nv_link::ErrorCounter;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::Device;

use super::sample::GpuSample;
use super::{fields, raw};
use crate::FamilyDef;

pub const NVLINK_LINKS: FamilyDef = FamilyDef::gauge(
    "accel_gpu_nvlink_links",
    "NVLink links of the GPU, active or not.",
)
.labels(&["gpu", "uuid"])
.doc("links NVML reports a state for (probed once); `accel_gpu_nvlink_links - accel_gpu_nvlink_links_up` is the number down")
.source("`nvmlDeviceGetNvLinkState(link)` for links 0–17: a link that answers exists")
.equivalent("`DCGM_FI_DEV_NVLINK_LINK_COUNT`");

pub const NVLINK_LINKS_UP: FamilyDef = FamilyDef::gauge(
    "accel_gpu_nvlink_links_up",
    "NVLink links of the GPU that are active.",
)
.labels(&["gpu", "uuid"])
.doc("links active now (left out of a sample where a link's state could not be read)")
.source("`nvmlDeviceGetNvLinkState(link)`, counted over the links")
.equivalent("`DCGM_FI_DEV_NVLINK_GET_STATE` counted over the link entities");

pub const NVLINK_UP: FamilyDef = FamilyDef::gauge(
    "accel_gpu_nvlink_up",
    "1 while the NVLink link is active.",
)
.labels(&["gpu", "uuid", "link"])
.doc("1 while the link is active. By default only for links that are not healthy (inactive, or counting errors) and have been since the agent started; every link with `--collector.gpu.nvlink.per-link`")
.source("`nvmlDeviceGetNvLinkState(link)`")
.equivalent("`DCGM_FI_DEV_NVLINK_GET_STATE` (DCGM ≥ 4.5, a link entity); not in dcgm-exporter's default lists");

pub const NVLINK_ERRORS: FamilyDef = FamilyDef::counter(
    "accel_gpu_nvlink_errors_total",
    "NVLink errors of the GPU by type (replay, recovery, crc_flit, crc_data), summed over its links.",
)
.labels(&["gpu", "uuid", "type"])
.doc("data-link errors over all the GPU's links: `replay`, `recovery`, `crc_flit`, `crc_data`; on NVLink5 (Blackwell), where those answer NOT_SUPPORTED: `symbol` (symbol errors FEC corrected), `effective` (errors left after FEC), `recovery` (successful link recoveries), `recovery_failed` (left out of a sample where a link's counter could not be read). Read every `--collector.gpu.counter-interval` (10 s), the last reading repeated in between. Which link: `accel_gpu_nvlink_link_errors_total`")
.source("`nvmlDeviceGetNvLinkErrorCounter(link, NVML_NVLINK_ERROR_DL_REPLAY / _DL_RECOVERY / _DL_CRC_FLIT / _DL_CRC_DATA)`; NVLink5: `nvmlDeviceGetFieldValues` `NVML_FI_DEV_NVLINK_COUNT_SYMBOL_ERRORS` / `_EFFECTIVE_ERRORS` / `_LINK_RECOVERY_SUCCESSFUL_EVENTS` / `_LINK_RECOVERY_FAILED_EVENTS`, scope id = link; summed over the links")
.equivalent("`DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL`, `DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL`, `DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL`, `DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL`");

pub const NVLINK_TRANSMIT_BYTES: FamilyDef = FamilyDef::counter(
    "accel_gpu_nvlink_transmit_bytes_total",
    "NVLink data bytes sent over all the GPU's links (payload, without protocol overhead).",
)
.labels(&["gpu", "uuid"])
.doc("payload bytes sent, summed over the links (data only, without protocol overhead; left out of a sample where a link's counter could not be read)")
.source("`nvmlDeviceGetFieldValues`, field 138 `NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX` (KiB), with scope id `UINT_MAX` (the driver's sum over the links, one field) once that matched the per-link fields' sum (on an idle GPU, where nothing has moved, the aggregate alone until it moves), else scope id = link summed over the links (36 fields on an H100: about 4 ms of CPU on an H200); every `--collector.gpu.counter-interval` (10 s), in the GPU's one field-values call; the last reading is repeated in between. The raw NVML call is used because nvml-wrapper always sends scope 0")
.equivalent("dcgm-exporter's default `DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL` is transmit + receive summed over all links; `DCGM_FI_PROF_NVLINK_TX_BYTES` as a rate");

pub const NVLINK_RECEIVE_BYTES: FamilyDef = FamilyDef::counter(
    "accel_gpu_nvlink_receive_bytes_total",
    "NVLink data bytes received over all the GPU's links (payload, without protocol overhead).",
)
.labels(&["gpu", "uuid"])
.doc("payload bytes received, summed over the links")
.source(
    "`nvmlDeviceGetFieldValues`, field 139 `NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX` (KiB), likewise",
)
.equivalent("`DCGM_FI_PROF_NVLINK_RX_BYTES` as a rate");

pub const NVLINK_LINK_ERRORS: FamilyDef = FamilyDef::counter(
    "accel_gpu_nvlink_link_errors_total",
    "NVLink errors by link and type (replay, recovery, crc_flit, crc_data).",
)
.labels(&["gpu", "uuid", "link", "type"])
.doc("data-link errors per link, as `accel_gpu_nvlink_errors_total`. By default only for links that are not healthy; every link with `--collector.gpu.nvlink.per-link`")
.source("`nvmlDeviceGetNvLinkErrorCounter(link, …)`")
.equivalent("`DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_L<n>`, `DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_L<n>`, `DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_L<n>`, `DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_L<n>`");

pub const NVLINK_LINK_TRANSMIT_BYTES: FamilyDef = FamilyDef::counter(
    "accel_gpu_nvlink_link_transmit_bytes_total",
    "NVLink data bytes sent by link (payload, without protocol overhead).",
)
.labels(&["gpu", "uuid", "link"])
.doc("payload bytes sent on the link. By default only for links that are not healthy; every link with `--collector.gpu.nvlink.per-link`")
.source("`nvmlDeviceGetFieldValues`, field 138, scope id = link (KiB)")
.equivalent("`DCGM_FI_DEV_NVLINK_TX_BANDWIDTH_L<n>` (DCGM ≥ 4.1; the same NVML field, in KiB); `DCGM_FI_PROF_NVLINK_L<n>_TX_BYTES` as a rate");

pub const NVLINK_LINK_RECEIVE_BYTES: FamilyDef = FamilyDef::counter(
    "accel_gpu_nvlink_link_receive_bytes_total",
    "NVLink data bytes received by link (payload, without protocol overhead).",
)
.labels(&["gpu", "uuid", "link"])
.doc("payload bytes received on the link; shown as `accel_gpu_nvlink_link_transmit_bytes_total`")
.source("`nvmlDeviceGetFieldValues`, field 139, scope id = link (KiB)")
.equivalent("`DCGM_FI_DEV_NVLINK_RX_BANDWIDTH_L<n>` (DCGM ≥ 4.1); `DCGM_FI_PROF_NVLINK_L<n>_RX_BYTES` as a rate");

/// Most NVLink links a GPU can have (NVML_NVLINK_MAX_LINKS).
const MAX_NVLINKS: u32 = 18;

const ERROR_COUNTERS: [(ErrorCounter, &str); 4] = [
    (ErrorCounter::DlReplay, "replay"),
    (ErrorCounter::DlRecovery, "recovery"),
    (ErrorCounter::DlCrcFlit, "crc_flit"),
    (ErrorCounter::DlCrcData, "crc_data"),
];

/// NVLink5's error counter fields (scope id = link) and their `type`.
const ERROR_FIELDS: [(u32, &str); 4] = [
    (raw::FI_NVLINK_COUNT_SYMBOL_ERRORS, "symbol"),
    (raw::FI_NVLINK_COUNT_EFFECTIVE_ERRORS, "effective"),
    (raw::FI_NVLINK_COUNT_RECOVERY_SUCCESSFUL, "recovery"),
    (raw::FI_NVLINK_COUNT_RECOVERY_FAILED, "recovery_failed"),
];

/// Where a GPU's NVLink error counters come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorSource {
    /// `nvmlDeviceGetNvLinkErrorCounter` (before Blackwell).
    Calls,
    /// The `NVML_FI_DEV_NVLINK_COUNT_*` fields (NVLink5).
    Fields,
    /// Neither answers.
    Neither,
}

/// One GPU's NVLink links, their last counter readings, and which are
/// shown per link.
#[derive(Debug, Default, Clone)]
pub(super) struct Links {
    /// The links that exist, once probed.
    present: Option<Vec<u32>>,
    errors: Option<ErrorSource>,
    /// Whether some link has been active since the agent started: until
    /// then an inactive link is not wired (a PCIe card without a bridge),
    /// not a fault, and is not shown.
    ever_up: bool,
    /// Links exported per link; a link stays once shown.
    shown: BTreeSet<u32>,
    /// Last readings: (link, transmit bytes, receive bytes).
    bytes: Vec<(u32, Option<f64>, Option<f64>)>,
    /// Whether the driver's aggregate of the data counters (scope id
    /// `UINT_MAX`) is used: `None` until it has matched the links' sum.
    aggregate: Option<bool>,
    /// Last aggregate reading (transmit, receive bytes), when it is used.
    total: Option<[Option<f64>; 2]>,
    /// Reads left before every link is read again, while the aggregate is
    /// not proven yet and the last full read found no data moved: until
    /// the aggregate moves (or [`QUIET_READS`] reads have passed: an
    /// aggregate that stays 0 while the links count would be a driver that
    /// answers one idle link's count), reads ask for it and the links shown
    /// per link only, and the other links' last readings (0) stand. An idle
    /// GPU would otherwise read every link (36 fields, about 4 ms on an
    /// H200) at every counter read for as long as it idles.
    quiet: u32,
    /// Last readings: (link, type, count).
    errs: Vec<(u32, &'static str, f64)>,
}

/// Where a GPU's NVLink counters are in the sample's field batch.
pub(super) struct Wanted {
    /// The per-link data counters asked for, and where they are.
    links: Vec<u32>,
    bytes: Range<usize>,
    /// The aggregate data counters (transmit, receive), when asked for.
    total: Option<Range<usize>>,
    errors: Option<Range<usize>>,
    /// A quiet read (see [`Links::quiet`]): not every link was asked for
    /// while the aggregate is unproven.
    quiet: bool,
}

/// Quiet reads (see [`Links::quiet`]) between two reads of every link:
/// 2 minutes at the default counter interval.
const QUIET_READS: u32 = 11;

/// The scope id that asks for a counter summed over the links.
const ALL_LINKS: u32 = u32::MAX;

/// Finds the links that exist (once: a link that does not exist answers
/// NotSupported or InvalidArg) and where their error counters come from.
pub(super) fn probe(dev: &Device<'_>, links: &mut Links) {
    let present = links.present.get_or_insert_with(|| {
        (0..MAX_NVLINKS)
            .filter(|&l| dev.link_wrapper_for(l).is_active().is_ok())
            .collect()
    });
    let Some(&first) = present.first() else {
        return;
    };
    if links.errors.is_none() {
        links.errors = match dev
            .link_wrapper_for(first)
            .error_counter(ErrorCounter::DlReplay)
        {
            Err(
                NvmlError::NotSupported
                | NvmlError::FailedToLoadSymbol(_)
                | NvmlError::FunctionNotFound,
            ) => Some(ErrorSource::Fields),
            Err(NvmlError::GpuLost) => None,
            _ => Some(ErrorSource::Calls),
        };
    }
}

/// Asks for the counters' fields when they are due: every link's data
/// counters with `per_link`, or until the aggregate is known to work
/// (unless no data has moved yet); else the aggregate and the links shown
/// per link.
pub(super) fn want(
    batch: &mut fields::Batch,
    links: &Links,
    due: bool,
    per_link: bool,
) -> Option<Wanted> {
    let present = links.present.as_deref().filter(|p| !p.is_empty())?;
    if !due {
        return None;
    }
    let quiet = !per_link && links.aggregate.is_none() && links.quiet > 0;
    let asked: Vec<u32> = if per_link || (links.aggregate != Some(true) && !quiet) {
        present.to_vec()
    } else {
        present
            .iter()
            .copied()
            .filter(|l| links.shown.contains(l))
            .collect()
    };
    let total = (!per_link && links.aggregate != Some(false)).then(|| {
        batch.want(&[
            (raw::FI_NVLINK_THROUGHPUT_DATA_TX, ALL_LINKS),
            (raw::FI_NVLINK_THROUGHPUT_DATA_RX, ALL_LINKS),
        ])
    });
    let bytes: Vec<(u32, u32)> = asked
        .iter()
        .flat_map(|&l| {
            [
                (raw::FI_NVLINK_THROUGHPUT_DATA_TX, l),
                (raw::FI_NVLINK_THROUGHPUT_DATA_RX, l),
            ]
        })
        .collect();
    let bytes = batch.want(&bytes);
    let errors = (links.errors == Some(ErrorSource::Fields)).then(|| {
        let ids: Vec<(u32, u32)> = present
            .iter()
            .flat_map(|&l| ERROR_FIELDS.iter().map(move |f| (f.0, l)))
            .collect();
        batch.want(&ids)
    });
    Some(Wanted {
        links: asked,
        bytes,
        total,
        errors,
        quiet,
    })
}

/// One link's readings in one sample.
struct Reading {
    link: u32,
    up: Option<bool>,
    /// Each error type the GPU counts, and this link's count.
    errors: Vec<(&'static str, Option<f64>)>,
    /// Transmit and receive bytes.
    bytes: [Option<f64>; 2],
}

/// Link state every sample; the counters from the batch (or the error
/// calls) when due, else the last readings; then what is exported.
pub(super) fn nvlink(
    g: &mut GpuSample<'_>,
    dev: &Device<'_>,
    batch: &fields::Batch,
    at: Option<Wanted>,
    links: &mut Links,
    per_link: bool,
) {
    let Some(present) = links.present.clone().filter(|p| !p.is_empty()) else {
        return;
    };
    g.health.nvlinks = present.len() as u32;
    if let Some(at) = &at {
        links.errs.clear();
        if at.quiet {
            // The links not asked for keep their last readings.
            links.bytes.retain(|b| !at.links.contains(&b.0));
        } else {
            links.bytes.clear();
        }
        read_errors(g, dev, batch, at, links, &present);
        read_bytes(g, batch, at, links);
        read_total(g, batch, at, links, &present);
    }
    let types: Vec<&'static str> = match links.errors {
        Some(ErrorSource::Calls) => ERROR_COUNTERS.iter().map(|c| c.1).collect(),
        Some(ErrorSource::Fields) => ERROR_FIELDS.iter().map(|f| f.1).collect(),
        _ => Vec::new(),
    };
    let mut readings = Vec::with_capacity(present.len());
    for &l in &present {
        let up = g.get(
            "nvmlDeviceGetNvLinkState",
            dev.link_wrapper_for(l).is_active(),
        );
        if up == Some(false) {
            g.health.nvlink_down.push(l);
        }
        let errors = types
            .iter()
            .map(|&t| {
                let n = links.errs.iter().find(|e| e.0 == l && e.1 == t);
                (t, n.map(|e| e.2))
            })
            .collect();
        let bytes = links
            .bytes
            .iter()
            .find(|b| b.0 == l)
            .map_or([None, None], |b| [b.1, b.2]);
        readings.push(Reading {
            link: l,
            up,
            errors,
            bytes,
        });
    }
    let total = links
        .total
        .filter(|_| links.aggregate == Some(true) && !per_link);
    export(g, links, &readings, total, per_link);
}

/// Adds the per-GPU series, and the per-link series of the links shown.
fn export(
    g: &mut GpuSample<'_>,
    links: &mut Links,
    readings: &[Reading],
    total: Option<[Option<f64>; 2]>,
    per_link: bool,
) {
    g.add(&NVLINK_LINKS, readings.len() as f64);
    // A sum over the links is left out when one link could not be read: a
    // partial sum would make a counter go back.
    let ups: Option<Vec<bool>> = readings.iter().map(|r| r.up).collect();
    if let Some(ups) = ups {
        g.add(&NVLINK_LINKS_UP, ups.iter().filter(|&&u| u).count() as f64);
    }
    let bytes = [&NVLINK_TRANSMIT_BYTES, &NVLINK_RECEIVE_BYTES];
    for (i, def) in bytes.into_iter().enumerate() {
        let sum = match total {
            Some(t) => t[i],
            None => readings.iter().map(|r| r.bytes[i]).sum::<Option<f64>>(),
        };
        if let Some(sum) = sum {
            g.add(def, sum);
        }
    }
    let types: Vec<&'static str> = readings
        .first()
        .map(|r| r.errors.iter().map(|e| e.0).collect())
        .unwrap_or_default();
    for (i, name) in types.iter().enumerate() {
        let sum = readings
            .iter()
            .map(|r| r.errors.get(i).and_then(|e| e.1))
            .sum::<Option<f64>>();
        if let Some(sum) = sum {
            g.put(&NVLINK_ERRORS, &[("type", name)], sum);
        }
    }
    links.ever_up |= readings.iter().any(|r| r.up == Some(true));
    for r in readings {
        let down = r.up == Some(false) && links.ever_up;
        let erring = r.errors.iter().any(|e| e.1.is_some_and(|n| n > 0.0));
        if down || erring {
            links.shown.insert(r.link);
        }
        if !per_link && !links.shown.contains(&r.link) {
            continue;
        }
        let link = r.link.to_string();
        if let Some(up) = r.up {
            g.with(&NVLINK_UP, "link", &link, if up { 1.0 } else { 0.0 });
        }
        for (name, n) in &r.errors {
            if let Some(n) = n {
                g.put(&NVLINK_LINK_ERRORS, &[("link", &link), ("type", name)], *n);
            }
        }
        let bytes = [&NVLINK_LINK_TRANSMIT_BYTES, &NVLINK_LINK_RECEIVE_BYTES];
        for (def, b) in bytes.into_iter().zip(r.bytes) {
            if let Some(b) = b {
                g.with(def, "link", &link, b);
            }
        }
    }
}

/// The error counters: one call per link and counter, or NVLink5's fields.
fn read_errors(
    g: &mut GpuSample<'_>,
    dev: &Device<'_>,
    batch: &fields::Batch,
    at: &Wanted,
    links: &mut Links,
    present: &[u32],
) {
    match (links.errors, &at.errors) {
        (Some(ErrorSource::Calls), _) => {
            for &l in present {
                for (counter, name) in ERROR_COUNTERS {
                    if let Some(n) = g.get(
                        "nvmlDeviceGetNvLinkErrorCounter",
                        dev.link_wrapper_for(l).error_counter(counter),
                    ) {
                        links.errs.push((l, name, n as f64));
                    }
                }
            }
        }
        (Some(ErrorSource::Fields), Some(range)) => match batch.get(range) {
            Ok(values) => {
                let per_link = present
                    .iter()
                    .flat_map(|&l| ERROR_FIELDS.iter().map(move |f| (l, f.1)));
                let mut any = false;
                for ((l, name), v) in per_link.zip(values) {
                    match v {
                        Ok(n) => {
                            any = true;
                            links.errs.push((l, name, *n));
                        }
                        Err(raw::GPU_IS_LOST) => g.lost = true,
                        Err(_) => {}
                    }
                }
                if !any && !g.lost {
                    g.unsupported("nvmlDeviceGetFieldValues(NVLINK_COUNT_*_ERRORS)");
                    links.errors = Some(ErrorSource::Neither);
                }
            }
            Err(code) => {
                g.get_raw::<()>("nvmlDeviceGetFieldValues(NVLINK_COUNT_*_ERRORS)", Err(code));
            }
        },
        _ => {}
    }
}

/// The per-link data counters, from the batch.
fn read_bytes(g: &mut GpuSample<'_>, batch: &fields::Batch, at: &Wanted, links: &mut Links) {
    if at.links.is_empty() {
        return;
    }
    let Some(values) = g.get_raw(
        "nvmlDeviceGetFieldValues(NVLINK_THROUGHPUT)",
        batch.get(&at.bytes).map(<[_]>::to_vec),
    ) else {
        return;
    };
    for (&l, pair) in at.links.iter().zip(values.chunks(2)) {
        let kib = |i: usize| pair.get(i).and_then(|v| v.ok()).map(|k| k * 1024.0);
        links.bytes.push((l, kib(0), kib(1)));
    }
}

/// Whether the aggregate (transmit, receive) can stand for the links'
/// sums read in the same call: `Some(true)` when each is within 1 % of its
/// sum and data moved, `Some(false)` when one is missing or differs (a
/// driver that ignores the scope answers one link's count), `None` while
/// nothing moved (all 0 proves nothing).
fn judge(total: [Option<f64>; 2], sums: [f64; 2]) -> Option<bool> {
    let agree = total
        .iter()
        .zip(&sums)
        .all(|(t, &s)| t.is_some_and(|t| (t - s).abs() <= s * 0.01));
    if !agree {
        Some(false)
    } else if sums.iter().any(|&s| s > 0.0) {
        Some(true)
    } else {
        None
    }
}

/// The aggregate data counters, and whether they can stand for the links'
/// sum: once they matched it (within 1 %, the links being read one after
/// another in the same call) while data moved, they do; a refusal or a
/// mismatch (a driver that ignores the scope answers one link's count)
/// keeps the per-link fields.
fn read_total(
    g: &mut GpuSample<'_>,
    batch: &fields::Batch,
    at: &Wanted,
    links: &mut Links,
    present: &[u32],
) {
    links.total = None;
    let Some(range) = &at.total else {
        return;
    };
    let values = match batch.get(range) {
        Ok(v) => v,
        Err(raw::GPU_IS_LOST) => {
            g.lost = true;
            return;
        }
        Err(_) => {
            links.aggregate = Some(false);
            return;
        }
    };
    let kib = |i: usize| values.get(i).and_then(|v| v.ok()).map(|k| k * 1024.0);
    let total = [kib(0), kib(1)];
    if links.aggregate.is_none() {
        if total.iter().any(Option::is_none) {
            links.aggregate = Some(false);
            links.quiet = 0;
            return;
        }
        if at.quiet {
            // Only the aggregate was read: once it moves, the next read
            // asks for every link again and judges.
            links.quiet = if total.iter().all(|t| *t == Some(0.0)) {
                links.quiet.saturating_sub(1)
            } else {
                0
            };
            return;
        }
        // Every link was read too: compare.
        let sums: Option<Vec<f64>> = (0..2)
            .map(|i| {
                present
                    .iter()
                    .map(|l| {
                        links
                            .bytes
                            .iter()
                            .find(|b| b.0 == *l)
                            .and_then(|b| [b.1, b.2][i])
                    })
                    .sum::<Option<f64>>()
            })
            .collect();
        let Some(sums) = sums else {
            return;
        };
        match judge(total, [sums[0], sums[1]]) {
            Some(true) => {}
            Some(false) => {
                g.unsupported("nvmlDeviceGetFieldValues(NVLINK_THROUGHPUT, all links)");
                links.aggregate = Some(false);
                return;
            }
            None => {
                // Nothing moved: all 0 proves nothing, and reading every
                // link again proves nothing either until data moves.
                links.quiet = QUIET_READS;
                return;
            }
        }
        // From the next read on, only the links shown per link are read.
        links.aggregate = Some(true);
    }
    links.total = Some(total);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn reading(link: u32, up: Option<bool>, replay: Option<u64>) -> Reading {
        Reading {
            link,
            up,
            errors: vec![
                ("replay", replay.map(|n| n as f64)),
                ("recovery", Some(0.0)),
                ("crc_flit", Some(0.0)),
                ("crc_data", Some(0.0)),
            ],
            bytes: [Some(1024.0), Some(2048.0)],
        }
    }

    /// One sample's exposition of `readings`, as the collector exports it.
    fn sample(links: &mut Links, readings: &[Reading], per_link: bool) -> String {
        let mut unsupported = HashSet::new();
        let mut g = GpuSample {
            index: 0,
            gpu: "0".into(),
            uuid: "GPU-x".into(),
            out: crate::Sample::new(),
            lost: false,
            unsupported: &mut unsupported,
            health: Default::default(),
        };
        export(&mut g, links, readings, None, per_link);
        let mut text = String::new();
        g.out.encode_text(&mut text);
        text
    }

    fn count(text: &str, family: &str) -> usize {
        text.lines()
            .filter(|l| l.starts_with(&format!("{family}{{")))
            .count()
    }

    #[test]
    fn the_aggregate_stands_for_the_sum_only_once_proven() {
        // Within 1 % of the links read in the same call, data moving.
        assert_eq!(
            judge([Some(1000.0), Some(500.0)], [1005.0, 500.0]),
            Some(true)
        );
        // All zero: proves nothing yet.
        assert_eq!(judge([Some(0.0), Some(0.0)], [0.0, 0.0]), None);
        // One link's count (a driver that ignores the scope): refused.
        assert_eq!(
            judge([Some(1000.0 / 18.0), Some(500.0)], [1000.0, 500.0]),
            Some(false)
        );
        // A direction missing: refused.
        assert_eq!(judge([Some(1000.0), None], [1000.0, 500.0]), Some(false));
        // Something where the links say 0: refused.
        assert_eq!(judge([Some(5.0), Some(0.0)], [0.0, 0.0]), Some(false));
    }

    #[test]
    fn healthy_links_are_summed_and_not_shown() {
        let mut links = Links::default();
        let r: Vec<Reading> = (0..4).map(|l| reading(l, Some(true), Some(0))).collect();
        let text = sample(&mut links, &r, false);
        assert!(
            text.contains("accel_gpu_nvlink_links{gpu=\"0\",uuid=\"GPU-x\"} 4\n"),
            "{text}"
        );
        assert!(text.contains("accel_gpu_nvlink_links_up{gpu=\"0\",uuid=\"GPU-x\"} 4\n"));
        assert!(
            text.contains("accel_gpu_nvlink_transmit_bytes_total{gpu=\"0\",uuid=\"GPU-x\"} 4096\n")
        );
        assert!(
            text.contains("accel_gpu_nvlink_receive_bytes_total{gpu=\"0\",uuid=\"GPU-x\"} 8192\n")
        );
        assert_eq!(count(&text, "accel_gpu_nvlink_errors_total"), 4);
        assert_eq!(count(&text, "accel_gpu_nvlink_up"), 0);
        // Every link with the flag.
        let text = sample(&mut links, &r, true);
        assert_eq!(count(&text, "accel_gpu_nvlink_up"), 4);
        assert_eq!(count(&text, "accel_gpu_nvlink_link_errors_total"), 16);
        assert_eq!(
            count(&text, "accel_gpu_nvlink_link_transmit_bytes_total"),
            4
        );
    }

    #[test]
    fn a_link_that_goes_down_stays_shown_after_it_recovers() {
        let mut links = Links::default();
        let up: Vec<Reading> = (0..3).map(|l| reading(l, Some(true), Some(0))).collect();
        sample(&mut links, &up, false);
        let mut down: Vec<Reading> = (0..3).map(|l| reading(l, Some(true), Some(0))).collect();
        down[1].up = Some(false);
        let text = sample(&mut links, &down, false);
        assert!(
            text.contains("accel_gpu_nvlink_links_up{gpu=\"0\",uuid=\"GPU-x\"} 2\n"),
            "{text}"
        );
        assert_eq!(count(&text, "accel_gpu_nvlink_up"), 1);
        assert!(text.contains("accel_gpu_nvlink_up{gpu=\"0\",uuid=\"GPU-x\",link=\"1\"} 0\n"));
        assert_eq!(count(&text, "accel_gpu_nvlink_link_errors_total"), 4);
        // Back up: its series go on, at 1, rather than vanish.
        let text = sample(&mut links, &up, false);
        assert!(
            text.contains("accel_gpu_nvlink_up{gpu=\"0\",uuid=\"GPU-x\",link=\"1\"} 1\n"),
            "{text}"
        );
        assert_eq!(count(&text, "accel_gpu_nvlink_up"), 1);
    }

    #[test]
    fn links_never_active_are_not_shown_but_errors_are() {
        // A PCIe card without a bridge: every link inactive from the start.
        let mut links = Links::default();
        let r: Vec<Reading> = (0..4).map(|l| reading(l, Some(false), Some(0))).collect();
        let text = sample(&mut links, &r, false);
        assert!(
            text.contains("accel_gpu_nvlink_links_up{gpu=\"0\",uuid=\"GPU-x\"} 0\n"),
            "{text}"
        );
        assert_eq!(count(&text, "accel_gpu_nvlink_up"), 0);
        // A link counting errors is shown whatever its state.
        let mut r = r;
        r[2].errors[0].1 = Some(5.0);
        let text = sample(&mut links, &r, false);
        assert_eq!(count(&text, "accel_gpu_nvlink_up"), 1);
        assert!(text.contains("accel_gpu_nvlink_link_errors_total{gpu=\"0\",uuid=\"GPU-x\",link=\"2\",type=\"replay\"} 5\n"), "{text}");
        assert!(text.contains(
            "accel_gpu_nvlink_errors_total{gpu=\"0\",uuid=\"GPU-x\",type=\"replay\"} 5\n"
        ));
    }

    #[test]
    fn a_sum_with_an_unreadable_link_is_left_out() {
        let mut links = Links::default();
        let mut r: Vec<Reading> = (0..3).map(|l| reading(l, Some(true), Some(0))).collect();
        r[0].up = None;
        r[1].errors[0].1 = None;
        r[2].bytes[0] = None;
        let text = sample(&mut links, &r, false);
        assert_eq!(count(&text, "accel_gpu_nvlink_links"), 1);
        assert_eq!(count(&text, "accel_gpu_nvlink_links_up"), 0, "{text}");
        assert_eq!(count(&text, "accel_gpu_nvlink_transmit_bytes_total"), 0);
        assert_eq!(count(&text, "accel_gpu_nvlink_receive_bytes_total"), 1);
        // The other three types are still summed.
        assert_eq!(count(&text, "accel_gpu_nvlink_errors_total"), 3);
        assert!(!text.contains("type=\"replay\""));
    }
}
