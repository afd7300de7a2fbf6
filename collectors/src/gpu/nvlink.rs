//! NVLink: link state through nvml-wrapper every sample; data and error
//! counters every `--collector.gpu.counter-interval`, the data counters as
//! raw field values with the link as scope id in the sample's one
//! field-values call. Error counters come from
//! `nvmlDeviceGetNvLinkErrorCounter` where the driver has it, else (NVLink5,
//! Blackwell, where it answers NOT_SUPPORTED) from the
//! `NVML_FI_DEV_NVLINK_COUNT_*` fields in the same call. Between reads the
//! last readings are exported again.

use std::ops::Range;

use nvml_wrapper::enum_wrappers::nv_link::ErrorCounter;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::Device;

use super::sample::GpuSample;
use super::{fields, raw};
use crate::FamilyDef;

pub const NVLINK_UP: FamilyDef = FamilyDef::gauge(
    "accel_gpu_nvlink_up",
    "1 while the NVLink link is active.",
)
.labels(&["gpu", "uuid", "link"])
.doc("1 while the link is active")
.source("`nvmlDeviceGetNvLinkState(link)`")
.equivalent("`DCGM_FI_DEV_NVLINK_GET_STATE` (DCGM ≥ 4.5, a link entity); not in dcgm-exporter's default lists");

pub const NVLINK_ERRORS: FamilyDef = FamilyDef::counter(
    "accel_gpu_nvlink_errors_total",
    "NVLink errors by link and type (replay, recovery, crc_flit, crc_data).",
)
.labels(&["gpu", "uuid", "link", "type"])
.doc("data-link errors per link: `replay`, `recovery`, `crc_flit`, `crc_data`; on NVLink5 (Blackwell), where those answer NOT_SUPPORTED: `symbol` (symbol errors FEC corrected), `effective` (errors left after FEC), `recovery` (successful link recoveries), `recovery_failed`. Read every `--collector.gpu.counter-interval` (10 s), the last reading repeated in between")
.source("`nvmlDeviceGetNvLinkErrorCounter(link, NVML_NVLINK_ERROR_DL_REPLAY / _DL_RECOVERY / _DL_CRC_FLIT / _DL_CRC_DATA)`; NVLink5: `nvmlDeviceGetFieldValues` `NVML_FI_DEV_NVLINK_COUNT_SYMBOL_ERRORS` / `_EFFECTIVE_ERRORS` / `_LINK_RECOVERY_SUCCESSFUL_EVENTS` / `_LINK_RECOVERY_FAILED_EVENTS`, scope id = link")
.equivalent("`DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_L<n>`, `DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_L<n>`, `DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_L<n>`, `DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_L<n>` (and their `_TOTAL` over links)");

pub const NVLINK_TRANSMIT_BYTES: FamilyDef = FamilyDef::counter(
    "accel_gpu_nvlink_transmit_bytes_total",
    "NVLink data bytes by link (payload, without protocol overhead).",
)
.labels(&["gpu", "uuid", "link"])
.doc("payload bytes sent on the link (data only, without protocol overhead)")
.source("`nvmlDeviceGetFieldValues`, field 138 `NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX`, scope id = link (KiB), every `--collector.gpu.counter-interval` (10 s: 36 fields cost about 4 ms of CPU on an H200), in the GPU's one field-values call; the last reading is repeated in between. The raw NVML call is used because nvml-wrapper always sends scope 0")
.equivalent("`DCGM_FI_DEV_NVLINK_TX_BANDWIDTH_L<n>` (DCGM ≥ 4.1; the same NVML field, in KiB). dcgm-exporter's default `DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL` is transmit + receive summed over all links. As a rate: `DCGM_FI_PROF_NVLINK_L<n>_TX_BYTES`");

pub const NVLINK_RECEIVE_BYTES: FamilyDef = FamilyDef::counter(
    "accel_gpu_nvlink_receive_bytes_total",
    "NVLink data bytes by link (payload, without protocol overhead).",
)
.labels(&["gpu", "uuid", "link"])
.doc("payload bytes received on the link")
.source("`nvmlDeviceGetFieldValues`, field 139 `NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX`, scope id = link (KiB)")
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

/// One GPU's NVLink links and their last counter readings.
#[derive(Debug, Default, Clone)]
pub(super) struct Links {
    /// The links that exist, once probed.
    present: Option<Vec<u32>>,
    errors: Option<ErrorSource>,
    /// Last readings: (link, transmit bytes, receive bytes).
    bytes: Vec<(u32, Option<f64>, Option<f64>)>,
    /// Last readings: (link, type, count).
    errs: Vec<(u32, &'static str, f64)>,
}

/// Where a GPU's NVLink counters are in the sample's field batch.
pub(super) struct Wanted {
    bytes: Range<usize>,
    errors: Option<Range<usize>>,
}

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

/// Asks for the counters' fields when they are due.
pub(super) fn want(batch: &mut fields::Batch, links: &Links, due: bool) -> Option<Wanted> {
    let present = links.present.as_deref().filter(|p| !p.is_empty())?;
    if !due {
        return None;
    }
    let bytes: Vec<(u32, u32)> = present
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
    Some(Wanted { bytes, errors })
}

/// Link state every sample; the counters from the batch (or the error
/// calls) when due, else the last readings.
pub(super) fn nvlink(
    g: &mut GpuSample<'_>,
    dev: &Device<'_>,
    batch: &fields::Batch,
    at: Option<Wanted>,
    links: &mut Links,
) {
    let Some(present) = links.present.clone().filter(|p| !p.is_empty()) else {
        return;
    };
    g.health.nvlinks = present.len() as u32;
    if let Some(at) = &at {
        links.errs.clear();
        links.bytes.clear();
        read_errors(g, dev, batch, at, links, &present);
        read_bytes(g, batch, at, links, &present);
    }
    let mut errs = links.errs.iter().peekable();
    for &l in &present {
        let link = l.to_string();
        if let Some(up) = g.get(
            "nvmlDeviceGetNvLinkState",
            dev.link_wrapper_for(l).is_active(),
        ) {
            if !up {
                g.health.nvlink_down.push(l);
            }
            g.with(&NVLINK_UP, "link", &link, if up { 1.0 } else { 0.0 });
        }
        while let Some((_, name, n)) = errs.next_if(|e| e.0 == l) {
            g.put(&NVLINK_ERRORS, &[("link", &link), ("type", name)], *n);
        }
    }
    for (l, tx, rx) in links.bytes.clone() {
        if let Some(tx) = tx {
            g.with(&NVLINK_TRANSMIT_BYTES, "link", &l.to_string(), tx);
        }
        if let Some(rx) = rx {
            g.with(&NVLINK_RECEIVE_BYTES, "link", &l.to_string(), rx);
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

/// The data counters, from the batch.
fn read_bytes(
    g: &mut GpuSample<'_>,
    batch: &fields::Batch,
    at: &Wanted,
    links: &mut Links,
    present: &[u32],
) {
    let Some(values) = g.get_raw(
        "nvmlDeviceGetFieldValues(NVLINK_THROUGHPUT)",
        batch.get(&at.bytes).map(<[_]>::to_vec),
    ) else {
        return;
    };
    for (&l, pair) in present.iter().zip(values.chunks(2)) {
        let kib = |i: usize| pair.get(i).and_then(|v| v.ok()).map(|k| k * 1024.0);
        links.bytes.push((l, kib(0), kib(1)));
    }
}
