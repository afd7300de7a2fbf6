//! GPM profiling metrics (Hopper and newer): SM activity and occupancy,
//! tensor, DRAM and floating-point pipe activity, PCIe and NVLink rates.
//! Each comes from two GPM samples a period apart; the previous one is kept
//! per GPU.

use nvml_wrapper::enums::gpm::GpmMetricId;
use nvml_wrapper::{Device, GpmSample, Nvml};

use super::GpuSample;
use crate::MetricType;

/// How a GPM value becomes the family's unit.
#[derive(Clone, Copy)]
enum Scale {
    /// A percentage, to a ratio 0-1 (divided, so 47 gives exactly 0.47).
    Percent,
    /// MiB/s to bytes/s.
    MiB,
}

impl Scale {
    fn apply(self, v: f64) -> f64 {
        match self {
            Scale::Percent => v / 100.0,
            Scale::MiB => v * 1048576.0,
        }
    }
}

/// A GPM metric: its id, the family, an extra label, and its scale.
type GpmMetric = (
    GpmMetricId,
    &'static str,
    Option<(&'static str, &'static str)>,
    Scale,
);

const GPM_METRICS: [GpmMetric; 11] = [
    (
        GpmMetricId::SmUtil,
        "accel_gpu_sm_active_ratio",
        None,
        Scale::Percent,
    ),
    (
        GpmMetricId::SmOccupancy,
        "accel_gpu_sm_occupancy_ratio",
        None,
        Scale::Percent,
    ),
    (
        GpmMetricId::AnyTensorUtil,
        "accel_gpu_tensor_active_ratio",
        None,
        Scale::Percent,
    ),
    (
        GpmMetricId::DramBwUtil,
        "accel_gpu_dram_active_ratio",
        None,
        Scale::Percent,
    ),
    (
        GpmMetricId::Fp16Util,
        "accel_gpu_pipe_active_ratio",
        Some(("pipe", "fp16")),
        Scale::Percent,
    ),
    (
        GpmMetricId::Fp32Util,
        "accel_gpu_pipe_active_ratio",
        Some(("pipe", "fp32")),
        Scale::Percent,
    ),
    (
        GpmMetricId::Fp64Util,
        "accel_gpu_pipe_active_ratio",
        Some(("pipe", "fp64")),
        Scale::Percent,
    ),
    (
        GpmMetricId::PcieTxPerSec,
        "accel_gpu_gpm_pcie_transmit_bytes_per_second",
        None,
        Scale::MiB,
    ),
    (
        GpmMetricId::PcieRxPerSec,
        "accel_gpu_gpm_pcie_receive_bytes_per_second",
        None,
        Scale::MiB,
    ),
    (
        GpmMetricId::NvlinkTotalTxPerSec,
        "accel_gpu_gpm_nvlink_transmit_bytes_per_second",
        None,
        Scale::MiB,
    ),
    (
        GpmMetricId::NvlinkTotalRxPerSec,
        "accel_gpu_gpm_nvlink_receive_bytes_per_second",
        None,
        Scale::MiB,
    ),
];

fn gpm_help(family: &str) -> &'static str {
    match family {
        "accel_gpu_sm_active_ratio" => "Fraction of time at least one warp was resident on an SM, averaged over SMs (GPM, 0-1).",
        "accel_gpu_sm_occupancy_ratio" => "Resident warps as a fraction of the SMs' maximum (GPM, 0-1).",
        "accel_gpu_tensor_active_ratio" => "Fraction of cycles any tensor pipe was active (GPM, 0-1).",
        "accel_gpu_dram_active_ratio" => "Fraction of the peak DRAM bandwidth used (GPM, 0-1).",
        "accel_gpu_pipe_active_ratio" => "Fraction of cycles each floating-point pipe was active (GPM, 0-1).",
        "accel_gpu_gpm_pcie_transmit_bytes_per_second" => "PCIe bytes per second transmitted, averaged over the sample interval (GPM).",
        "accel_gpu_gpm_pcie_receive_bytes_per_second" => "PCIe bytes per second received, averaged over the sample interval (GPM).",
        "accel_gpu_gpm_nvlink_transmit_bytes_per_second" => "NVLink bytes per second transmitted, all links, averaged over the sample interval (GPM).",
        _ => "NVLink bytes per second received, all links, averaged over the sample interval (GPM).",
    }
}

pub(super) fn gpm(
    g: &mut GpuSample<'_>,
    dev: &Device<'static>,
    nvml: &'static Nvml,
    supported: &mut Option<bool>,
    prev: &mut Option<GpmSample<'static>>,
) {
    if supported.is_none() {
        *supported = Some(
            g.get("nvmlGpmQueryDeviceSupport", dev.gpm_support())
                .unwrap_or(false),
        );
    }
    if *supported != Some(true) {
        return;
    }
    let Some(cur) = g.get("nvmlGpmSampleGet", dev.gpm_sample()) else {
        *prev = None;
        return;
    };
    if let Some(p) = prev.as_ref() {
        let ids: Vec<GpmMetricId> = GPM_METRICS.iter().map(|m| m.0).collect();
        if let Some(results) = g.get(
            "nvmlGpmMetricsGet",
            nvml_wrapper::gpm::gpm_metrics_get(nvml, p, &cur, &ids),
        ) {
            for ((_, family, extra, scale), r) in GPM_METRICS.iter().zip(results) {
                let Some(m) = g.get("nvmlGpmMetricsGet", r) else {
                    continue;
                };
                let extra: Vec<(&'static str, &str)> =
                    extra.iter().map(|(k, v)| (*k, *v)).collect();
                g.put(
                    MetricType::Gauge,
                    family,
                    gpm_help(family),
                    &extra,
                    scale.apply(m.value),
                );
            }
        }
    }
    *prev = Some(cur);
}

/// GPM metrics per MIG instance: (id, family, help); values are percentages.
pub(super) const MIG_METRICS: [(GpmMetricId, &str, &str); 4] = [
    (
        GpmMetricId::SmUtil,
        "accel_gpu_mig_sm_active_ratio",
        "Fraction of time a warp was resident on the MIG instance's SMs (GPM, 0-1).",
    ),
    (
        GpmMetricId::SmOccupancy,
        "accel_gpu_mig_sm_occupancy_ratio",
        "Resident warps as a fraction of the MIG instance's maximum (GPM, 0-1).",
    ),
    (
        GpmMetricId::AnyTensorUtil,
        "accel_gpu_mig_tensor_active_ratio",
        "Fraction of cycles a tensor pipe of the MIG instance was active (GPM, 0-1).",
    ),
    (
        GpmMetricId::DramBwUtil,
        "accel_gpu_mig_dram_active_ratio",
        "Fraction of the MIG instance's peak DRAM bandwidth used (GPM, 0-1).",
    ),
];
