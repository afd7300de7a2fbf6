//! ECC mode and error counts, retired pages (before Ampere) and remapped
//! rows (Ampere and newer).

use nvml_wrapper::enum_wrappers::device::{EccCounter, MemoryError, RetirementCause};
use nvml_wrapper::Device;

use super::sample::GpuSample;
use super::{fields, raw};
use crate::FamilyDef;

pub const ECC_ENABLED: FamilyDef = FamilyDef::gauge("accel_gpu_ecc_enabled", "1 when ECC is on.")
    .labels(&["gpu", "uuid"])
    .doc("1 while ECC is on. ECC is set for the board's life in practice (a change waits for a reboot, and shows as `accel_gpu_ecc_pending_enabled`); by default its state shows as the presence of `accel_gpu_ecc_errors_total`, exported only while ECC is on")
    .source("`nvmlDeviceGetEccMode` (current)")
    .equivalent("`DCGM_FI_DEV_ECC_CURRENT`")
    .detail();

pub const ECC_PENDING_ENABLED: FamilyDef = FamilyDef::gauge(
    "accel_gpu_ecc_pending_enabled",
    "ECC mode after the next reboot (1 on).",
)
.labels(&["gpu", "uuid"])
.doc("ECC mode after the next reboot (1 on); only while it differs from `accel_gpu_ecc_enabled` (a change waits for a reboot)")
.source("`nvmlDeviceGetEccMode` (pending)")
.equivalent("`DCGM_FI_DEV_ECC_PENDING`");

pub const ECC_ERRORS: FamilyDef = FamilyDef::counter(
    "accel_gpu_ecc_errors_total",
    "ECC errors by type (corrected, uncorrected) and counter (volatile: since the driver loaded; aggregate: lifetime).",
)
.labels(&["gpu", "uuid", "type", "counter"])
.doc("memory errors. `type` is `corrected` (single-bit) or `uncorrected` (double-bit). `counter` is `volatile` (since the driver loaded) or `aggregate` (the board's lifetime). Only while ECC is on. The lifetime count of corrected errors (`type=\"corrected\",counter=\"aggregate\"`) only with `--collector.gpu.detail`: nothing shipped reads it, and `rate()` of the volatile one is the same")
.source("`nvmlDeviceGetTotalEccErrors(NVML_MEMORY_ERROR_TYPE_CORRECTED / _UNCORRECTED, NVML_VOLATILE_ECC / NVML_AGGREGATE_ECC)`")
.equivalent("`DCGM_FI_DEV_ECC_SBE_VOL_TOTAL`, `DCGM_FI_DEV_ECC_DBE_VOL_TOTAL`, `DCGM_FI_DEV_ECC_SBE_AGG_TOTAL`, `DCGM_FI_DEV_ECC_DBE_AGG_TOTAL`");

pub const RETIRED_PAGES: FamilyDef = FamilyDef::gauge(
    "accel_gpu_retired_pages",
    "Memory pages retired, by cause (pre-Ampere GPUs).",
)
.labels(&["gpu", "uuid", "cause"])
.doc("pages retired, by cause: `multiple_single_bit`, `double_bit`. Before Ampere only")
.source("`nvmlDeviceGetRetiredPages` (count) and `nvmlDeviceGetRetiredPages_v2` (`NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS` / `_DOUBLE_BIT_ECC_ERROR`)")
.equivalent("`DCGM_FI_DEV_RETIRED_SBE`, `DCGM_FI_DEV_RETIRED_DBE`");

pub const RETIRED_PAGES_PENDING: FamilyDef = FamilyDef::gauge(
    "accel_gpu_retired_pages_pending",
    "1 when a page retirement waits for the next reboot.",
)
.labels(&["gpu", "uuid"])
.doc("1 when a retirement waits for the next reboot")
.source("`nvmlDeviceGetRetiredPagesPendingStatus`")
.equivalent("`DCGM_FI_DEV_RETIRED_PENDING`");

pub const REMAPPED_ROWS: FamilyDef = FamilyDef::gauge(
    "accel_gpu_remapped_rows",
    "Memory rows remapped, by the kind of error that caused it (Ampere and newer).",
)
.labels(&["gpu", "uuid", "kind"])
.doc("memory rows remapped, by the error that caused it: `correctable`, `uncorrectable`. Ampere and newer")
.source("`nvmlDeviceGetRemappedRows` (a raw call; nvml-wrapper does not wrap it)")
.equivalent("`DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS`, `DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS`");

pub const REMAPPED_ROWS_PENDING: FamilyDef = FamilyDef::gauge(
    "accel_gpu_remapped_rows_pending",
    "1 when a row remap waits for the next GPU reset.",
)
.labels(&["gpu", "uuid"])
.doc("1 when a remap waits for the next GPU reset")
.source("`nvmlDeviceGetRemappedRows` (`isPending`)")
.equivalent("`DCGM_FI_DEV_ROW_REMAP_PENDING`");

pub const REMAPPED_ROWS_FAILURE: FamilyDef = FamilyDef::gauge(
    "accel_gpu_remapped_rows_failure",
    "1 when a row remap failed: the GPU needs service.",
)
.labels(&["gpu", "uuid"])
.doc("1 when a remap failed: the GPU needs service")
.source("`nvmlDeviceGetRemappedRows` (`failureOccurred`)")
.equivalent("`DCGM_FI_DEV_ROW_REMAP_FAILURE`");

pub(super) fn reliability(
    g: &mut GpuSample<'_>,
    dev: &Device<'_>,
    raw: Option<&raw::Raw>,
    detail: bool,
) {
    if let Some(m) = g.get("nvmlDeviceGetEccMode", dev.is_ecc_enabled()) {
        g.add(&ECC_ENABLED, if m.currently_enabled { 1.0 } else { 0.0 });
        // Only while a change waits for a reboot.
        if m.pending_enabled != m.currently_enabled {
            g.add(
                &ECC_PENDING_ENABLED,
                if m.pending_enabled { 1.0 } else { 0.0 },
            );
        }
        if m.currently_enabled {
            for (err, e) in [
                (MemoryError::Corrected, "corrected"),
                (MemoryError::Uncorrected, "uncorrected"),
            ] {
                for (counter, c) in [
                    (EccCounter::Volatile, "volatile"),
                    (EccCounter::Aggregate, "aggregate"),
                ] {
                    // The lifetime count of corrected errors: only with
                    // detail (nothing shipped reads it; the volatile one
                    // gives its rate).
                    if !detail && e == "corrected" && c == "aggregate" {
                        continue;
                    }
                    if let Some(n) = g.get(
                        "nvmlDeviceGetTotalEccErrors",
                        dev.total_ecc_errors(err, counter),
                    ) {
                        if e == "uncorrected" && c == "volatile" {
                            g.health.ecc_uncorrected_volatile = Some(n);
                        }
                        g.put(&ECC_ERRORS, &[("type", e), ("counter", c)], n as f64);
                    }
                }
            }
        }
    }
    for (cause, c) in [
        (
            RetirementCause::MultipleSingleBitEccErrors,
            "multiple_single_bit",
        ),
        (RetirementCause::DoubleBitEccError, "double_bit"),
    ] {
        if let Some(pages) = g.get("nvmlDeviceGetRetiredPages", dev.retired_pages(cause)) {
            *g.health.retired_pages.get_or_insert(0) += pages.len() as u64;
            g.with(&RETIRED_PAGES, "cause", c, pages.len() as f64);
        }
    }
    if let Some(p) = g.get(
        "nvmlDeviceGetRetiredPagesPendingStatus",
        dev.are_pages_pending_retired(),
    ) {
        g.health.retired_pending = Some(p);
        g.add(&RETIRED_PAGES_PENDING, if p { 1.0 } else { 0.0 });
    }
    if let Some(r) =
        raw.and_then(|raw| g.get_raw("nvmlDeviceGetRemappedRows", raw.remapped_rows(dev)))
    {
        g.with(
            &REMAPPED_ROWS,
            "kind",
            "correctable",
            f64::from(r.correctable),
        );
        g.with(
            &REMAPPED_ROWS,
            "kind",
            "uncorrectable",
            f64::from(r.uncorrectable),
        );
        g.health.remap_pending = Some(r.pending);
        g.health.remap_failure = Some(r.failure);
        g.add(&REMAPPED_ROWS_PENDING, if r.pending { 1.0 } else { 0.0 });
        g.add(&REMAPPED_ROWS_FAILURE, if r.failure { 1.0 } else { 0.0 });
    }
}

/// Asks for the driver's recovery action in the sample's field batch while
/// the driver may have it.
pub(super) fn want_recovery(
    batch: &mut fields::Batch,
    probed: &(Option<bool>, Option<bool>),
) -> Option<std::ops::Range<usize>> {
    (probed.0 != Some(false)).then(|| batch.want(&[(raw::FI_GPU_RECOVERY_ACTION, 0)]))
}

/// The driver's recovery action (from the batch when it was asked for,
/// `at`, else the last reading, `last`) and the NVSwitch fabric state, for
/// the health collector only (no series). `probed` remembers whether each
/// works on this GPU, so an older driver or a GPU without NVSwitch costs
/// one field and one call, once.
pub(super) fn recovery(
    g: &mut GpuSample<'_>,
    dev: &Device<'_>,
    raw: Option<&raw::Raw>,
    batch: &fields::Batch,
    at: Option<std::ops::Range<usize>>,
    probed: &mut (Option<bool>, Option<bool>),
    last: &mut Option<u32>,
) {
    let Some(raw) = raw else { return };
    if let Some(at) = at {
        *last = None;
        match batch.get(&at).map(|v| v.first().copied()) {
            Ok(Some(Ok(a))) => {
                probed.0 = Some(true);
                *last = Some(a as u32);
            }
            Err(raw::GPU_IS_LOST) | Ok(Some(Err(raw::GPU_IS_LOST))) => g.lost = true,
            _ => probed.0 = Some(false),
        }
    }
    g.health.recovery_action = *last;
    if probed.1 != Some(false) {
        match raw.fabric_info(dev) {
            // State 0: NVML_GPU_FABRIC_STATE_NOT_SUPPORTED (no NVSwitch).
            Ok((0, _)) => probed.1 = Some(false),
            Ok(f) => {
                probed.1 = Some(true);
                g.health.fabric = Some(f);
            }
            Err(raw::GPU_IS_LOST) => g.lost = true,
            Err(_) => probed.1 = Some(false),
        }
    }
}
