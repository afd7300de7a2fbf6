//! GPM profiling metrics (Hopper and newer): SM activity and occupancy,
//! tensor, DRAM and floating-point pipe activity, PCIe and NVLink rates.
//! Each comes from two GPM samples a period apart; the previous one is kept
//! per GPU.

use nvml_wrapper::enums::gpm::GpmMetricId;
use nvml_wrapper::{Device, GpmSample, Nvml};

use super::sample::GpuSample;
use crate::FamilyDef;

pub const SM_ACTIVE_RATIO: FamilyDef = FamilyDef::gauge(
    "accel_gpu_sm_active_ratio",
    "Fraction of time at least one warp was resident on an SM, averaged over SMs (GPM, 0-1).",
)
.labels(&["gpu", "uuid"])
.doc("fraction of time an SM had at least one warp resident, averaged over SMs")
.source("`NVML_GPM_METRIC_SM_UTIL` (2), % ÷ 100")
.equivalent("`DCGM_FI_PROF_SM_ACTIVE`");

pub const SM_OCCUPANCY_RATIO: FamilyDef = FamilyDef::gauge(
    "accel_gpu_sm_occupancy_ratio",
    "Resident warps as a fraction of the SMs' maximum (GPM, 0-1).",
)
.labels(&["gpu", "uuid"])
.doc("resident warps as a fraction of the SMs' maximum")
.source("`NVML_GPM_METRIC_SM_OCCUPANCY` (3)")
.equivalent("`DCGM_FI_PROF_SM_OCCUPANCY`");

pub const TENSOR_ACTIVE_RATIO: FamilyDef = FamilyDef::gauge(
    "accel_gpu_tensor_active_ratio",
    "Fraction of cycles any tensor pipe was active (GPM, 0-1).",
)
.labels(&["gpu", "uuid"])
.doc("fraction of cycles any tensor pipe was active")
.source("`NVML_GPM_METRIC_ANY_TENSOR_UTIL` (5)")
.equivalent("`DCGM_FI_PROF_PIPE_TENSOR_ACTIVE`");

pub const DRAM_ACTIVE_RATIO: FamilyDef = FamilyDef::gauge(
    "accel_gpu_dram_active_ratio",
    "Fraction of the peak DRAM bandwidth used (GPM, 0-1).",
)
.labels(&["gpu", "uuid"])
.doc("fraction of the peak DRAM bandwidth used")
.source("`NVML_GPM_METRIC_DRAM_BW_UTIL` (10)")
.equivalent("`DCGM_FI_PROF_DRAM_ACTIVE`");

pub const PIPE_ACTIVE_RATIO: FamilyDef = FamilyDef::gauge(
    "accel_gpu_pipe_active_ratio",
    "Fraction of cycles each floating-point pipe was active (GPM, 0-1).",
)
.labels(&["gpu", "uuid", "pipe"])
.doc("fraction of cycles the floating-point pipe was active: `fp16`, `fp32`, `fp64`")
.source("`NVML_GPM_METRIC_FP16_UTIL` (13), `_FP32_UTIL` (12), `_FP64_UTIL` (11)")
.equivalent("`DCGM_FI_PROF_PIPE_FP16_ACTIVE`, `DCGM_FI_PROF_PIPE_FP32_ACTIVE`, `DCGM_FI_PROF_PIPE_FP64_ACTIVE`");

pub const GPM_PCIE_TRANSMIT_BYTES_PER_SECOND: FamilyDef = FamilyDef::gauge(
    "accel_gpu_gpm_pcie_transmit_bytes_per_second",
    "PCIe bytes per second transmitted, averaged over the sample interval (GPM).",
)
.labels(&["gpu", "uuid"])
.doc("PCIe bytes sent per second, mean over the interval (the byte counters give the same)")
.source("`NVML_GPM_METRIC_PCIE_TX_PER_SEC` (20), MiB/s")
.equivalent("`DCGM_FI_PROF_PCIE_TX_BYTES`")
.detail();

pub const GPM_PCIE_RECEIVE_BYTES_PER_SECOND: FamilyDef = FamilyDef::gauge(
    "accel_gpu_gpm_pcie_receive_bytes_per_second",
    "PCIe bytes per second received, averaged over the sample interval (GPM).",
)
.labels(&["gpu", "uuid"])
.doc("PCIe bytes received per second, mean over the interval (the byte counters give the same)")
.source("`NVML_GPM_METRIC_PCIE_RX_PER_SEC` (21), MiB/s")
.equivalent("`DCGM_FI_PROF_PCIE_RX_BYTES`")
.detail();

pub const GPM_NVLINK_TRANSMIT_BYTES_PER_SECOND: FamilyDef = FamilyDef::gauge(
    "accel_gpu_gpm_nvlink_transmit_bytes_per_second",
    "NVLink bytes per second transmitted, all links, averaged over the sample interval (GPM).",
)
.labels(&["gpu", "uuid"])
.doc("NVLink bytes sent per second, all links, mean over the interval (the byte counters give the same)")
.source("`NVML_GPM_METRIC_NVLINK_TOTAL_TX_PER_SEC` (61), MiB/s")
.equivalent("`DCGM_FI_PROF_NVLINK_TX_BYTES`")
.detail();

pub const GPM_NVLINK_RECEIVE_BYTES_PER_SECOND: FamilyDef = FamilyDef::gauge(
    "accel_gpu_gpm_nvlink_receive_bytes_per_second",
    "NVLink bytes per second received, all links, averaged over the sample interval (GPM).",
)
.labels(&["gpu", "uuid"])
.doc("NVLink bytes received per second, all links, mean over the interval (the byte counters give the same)")
.source("`NVML_GPM_METRIC_NVLINK_TOTAL_RX_PER_SEC` (60), MiB/s")
.equivalent("`DCGM_FI_PROF_NVLINK_RX_BYTES`")
.detail();

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
    &'static FamilyDef,
    Option<(&'static str, &'static str)>,
    Scale,
);

const GPM_METRICS: [GpmMetric; 11] = [
    (GpmMetricId::SmUtil, &SM_ACTIVE_RATIO, None, Scale::Percent),
    (
        GpmMetricId::SmOccupancy,
        &SM_OCCUPANCY_RATIO,
        None,
        Scale::Percent,
    ),
    (
        GpmMetricId::AnyTensorUtil,
        &TENSOR_ACTIVE_RATIO,
        None,
        Scale::Percent,
    ),
    (
        GpmMetricId::DramBwUtil,
        &DRAM_ACTIVE_RATIO,
        None,
        Scale::Percent,
    ),
    (
        GpmMetricId::Fp16Util,
        &PIPE_ACTIVE_RATIO,
        Some(("pipe", "fp16")),
        Scale::Percent,
    ),
    (
        GpmMetricId::Fp32Util,
        &PIPE_ACTIVE_RATIO,
        Some(("pipe", "fp32")),
        Scale::Percent,
    ),
    (
        GpmMetricId::Fp64Util,
        &PIPE_ACTIVE_RATIO,
        Some(("pipe", "fp64")),
        Scale::Percent,
    ),
    (
        GpmMetricId::PcieTxPerSec,
        &GPM_PCIE_TRANSMIT_BYTES_PER_SECOND,
        None,
        Scale::MiB,
    ),
    (
        GpmMetricId::PcieRxPerSec,
        &GPM_PCIE_RECEIVE_BYTES_PER_SECOND,
        None,
        Scale::MiB,
    ),
    (
        GpmMetricId::NvlinkTotalTxPerSec,
        &GPM_NVLINK_TRANSMIT_BYTES_PER_SECOND,
        None,
        Scale::MiB,
    ),
    (
        GpmMetricId::NvlinkTotalRxPerSec,
        &GPM_NVLINK_RECEIVE_BYTES_PER_SECOND,
        None,
        Scale::MiB,
    ),
];

pub(super) fn gpm(
    g: &mut GpuSample<'_>,
    dev: &Device<'static>,
    nvml: &'static Nvml,
    supported: &mut Option<bool>,
    prev: &mut Option<GpmSample<'static>>,
    detail: bool,
) {
    // The PCIe and NVLink rates (the last four) only with
    // --collector.gpu.detail: the byte counters give the same.
    let metrics = if detail {
        &GPM_METRICS[..]
    } else {
        &GPM_METRICS[..GPM_METRICS.len() - 4]
    };
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
        let ids: Vec<GpmMetricId> = metrics.iter().map(|m| m.0).collect();
        if let Some(results) = g.get(
            "nvmlGpmMetricsGet",
            nvml_wrapper::gpm::gpm_metrics_get(nvml, p, &cur, &ids),
        ) {
            for ((_, family, extra, scale), r) in metrics.iter().zip(results) {
                let Some(m) = g.get("nvmlGpmMetricsGet", r) else {
                    continue;
                };
                let extra: Vec<(&'static str, &str)> =
                    extra.iter().map(|(k, v)| (*k, *v)).collect();
                g.put(family, &extra, scale.apply(m.value));
            }
        }
    }
    *prev = Some(cur);
}
