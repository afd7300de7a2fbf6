//! ECC mode and error counts, retired pages (before Ampere) and remapped
//! rows (Ampere and newer).

use nvml_wrapper::enum_wrappers::device::{EccCounter, MemoryError, RetirementCause};
use nvml_wrapper::Device;

use super::{raw, GpuSample};
use crate::MetricType;

pub(super) fn reliability(g: &mut GpuSample<'_>, dev: &Device<'_>, raw: Option<&raw::Raw>) {
    if let Some(m) = g.get("nvmlDeviceGetEccMode", dev.is_ecc_enabled()) {
        g.gauge(
            "accel_gpu_ecc_enabled",
            "1 when ECC is on.",
            if m.currently_enabled { 1.0 } else { 0.0 },
        );
        g.gauge(
            "accel_gpu_ecc_pending_enabled",
            "ECC mode after the next reboot (1 on).",
            if m.pending_enabled { 1.0 } else { 0.0 },
        );
        if m.currently_enabled {
            for (err, e) in [
                (MemoryError::Corrected, "corrected"),
                (MemoryError::Uncorrected, "uncorrected"),
            ] {
                for (counter, c) in [
                    (EccCounter::Volatile, "volatile"),
                    (EccCounter::Aggregate, "aggregate"),
                ] {
                    if let Some(n) = g.get(
                        "nvmlDeviceGetTotalEccErrors",
                        dev.total_ecc_errors(err, counter),
                    ) {
                        g.put(MetricType::Counter, "accel_gpu_ecc_errors_total", "ECC errors by type (corrected, uncorrected) and counter (volatile: since the driver loaded; aggregate: lifetime).", &[("type", e), ("counter", c)], n as f64);
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
            g.with(
                "accel_gpu_retired_pages",
                "Memory pages retired, by cause (pre-Ampere GPUs).",
                false,
                "cause",
                c,
                pages.len() as f64,
            );
        }
    }
    if let Some(p) = g.get(
        "nvmlDeviceGetRetiredPagesPendingStatus",
        dev.are_pages_pending_retired(),
    ) {
        g.gauge(
            "accel_gpu_retired_pages_pending",
            "1 when a page retirement waits for the next reboot.",
            if p { 1.0 } else { 0.0 },
        );
    }
    if let Some(r) =
        raw.and_then(|raw| g.get_raw("nvmlDeviceGetRemappedRows", raw.remapped_rows(dev)))
    {
        let help = "Memory rows remapped, by the kind of error that caused it (Ampere and newer).";
        g.with(
            "accel_gpu_remapped_rows",
            help,
            false,
            "kind",
            "correctable",
            f64::from(r.correctable),
        );
        g.with(
            "accel_gpu_remapped_rows",
            help,
            false,
            "kind",
            "uncorrectable",
            f64::from(r.uncorrectable),
        );
        g.gauge(
            "accel_gpu_remapped_rows_pending",
            "1 when a row remap waits for the next GPU reset.",
            if r.pending { 1.0 } else { 0.0 },
        );
        g.gauge(
            "accel_gpu_remapped_rows_failure",
            "1 when a row remap failed: the GPU needs service.",
            if r.failure { 1.0 } else { 0.0 },
        );
    }
}
