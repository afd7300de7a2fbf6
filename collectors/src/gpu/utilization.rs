//! How busy the GPU's engines are, as the driver measures it over its own
//! sample period: kernels, memory, video encoder and decoder. The busy
//! seconds integrated from it are in `accounting.rs`.

use nvml_wrapper::struct_wrappers::device::Utilization;
use nvml_wrapper::Device;

use super::sample::GpuSample;
use crate::FamilyDef;

pub const UTILIZATION_RATIO: FamilyDef = FamilyDef::gauge(
    "accel_gpu_utilization_ratio",
    "Fraction of the last sample period in which a kernel ran on the GPU (0-1).",
)
.labels(&["gpu", "uuid"])
.doc("fraction of the driver's last sample period (1/6 s to 1 s, depending on the product) during which one or more kernels ran. Any kernel counts, however few SMs it uses: use `accel_gpu_sm_active_ratio` for how much of the GPU works")
.source("`nvmlDeviceGetUtilizationRates` `gpu` ÷ 100")
.equivalent("`DCGM_FI_DEV_GPU_UTIL` (%)");

pub const MEMORY_UTILIZATION_RATIO: FamilyDef = FamilyDef::gauge(
    "accel_gpu_memory_utilization_ratio",
    "Fraction of the last sample period in which device memory was read or written (0-1).",
)
.labels(&["gpu", "uuid"])
.doc("fraction of the same period during which device memory was read or written")
.source("`nvmlDeviceGetUtilizationRates` `memory` ÷ 100")
.equivalent("`DCGM_FI_DEV_MEM_COPY_UTIL` (%)");

pub const ENCODER_UTILIZATION_RATIO: FamilyDef = FamilyDef::gauge(
    "accel_gpu_encoder_utilization_ratio",
    "Video encoder utilisation (0-1).",
)
.labels(&["gpu", "uuid"])
.doc("video encoder utilisation")
.source("`nvmlDeviceGetEncoderUtilization` ÷ 100")
.equivalent("`DCGM_FI_DEV_ENC_UTIL` (%)")
.detail();

pub const DECODER_UTILIZATION_RATIO: FamilyDef = FamilyDef::gauge(
    "accel_gpu_decoder_utilization_ratio",
    "Video decoder utilisation (0-1).",
)
.labels(&["gpu", "uuid"])
.doc("video decoder utilisation")
.source("`nvmlDeviceGetDecoderUtilization` ÷ 100")
.equivalent("`DCGM_FI_DEV_DEC_UTIL` (%)")
.detail();

/// Kernel and memory utilisation; returned for the busy and idle
/// accounting.
pub(super) fn utilization(g: &mut GpuSample<'_>, dev: &Device<'_>) -> Option<Utilization> {
    let util = g.get("nvmlDeviceGetUtilizationRates", dev.utilization_rates());
    if let Some(u) = &util {
        g.add(&UTILIZATION_RATIO, f64::from(u.gpu) / 100.0);
        g.add(&MEMORY_UTILIZATION_RATIO, f64::from(u.memory) / 100.0);
    }
    util
}

/// Video encoder and decoder utilisation.
pub(super) fn codecs(g: &mut GpuSample<'_>, dev: &Device<'_>) {
    if let Some(e) = g.get("nvmlDeviceGetEncoderUtilization", dev.encoder_utilization()) {
        g.add(&ENCODER_UTILIZATION_RATIO, f64::from(e.utilization) / 100.0);
    }
    if let Some(d) = g.get("nvmlDeviceGetDecoderUtilization", dev.decoder_utilization()) {
        g.add(&DECODER_UTILIZATION_RATIO, f64::from(d.utilization) / 100.0);
    }
}
