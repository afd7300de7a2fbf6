//! Device memory and BAR1 (the host-mapped window) of a GPU.

use nvml_wrapper::Device;

use super::sample::GpuSample;
use crate::FamilyDef;

pub const MEMORY_USED_BYTES: FamilyDef = FamilyDef::gauge(
    "accel_gpu_memory_used_bytes",
    "GPU memory allocated, in bytes.",
)
.labels(&["gpu", "uuid"])
.doc("bytes allocated by processes and contexts, not counting `reserved`")
.source("`nvmlDeviceGetMemoryInfo_v2` `used`")
.equivalent("`DCGM_FI_DEV_FB_USED` (MiB)");

pub const MEMORY_FREE_BYTES: FamilyDef =
    FamilyDef::gauge("accel_gpu_memory_free_bytes", "GPU memory free, in bytes.")
        .labels(&["gpu", "uuid"])
        .doc("bytes free")
        .source("`nvmlDeviceGetMemoryInfo_v2` `free`")
        .equivalent("`DCGM_FI_DEV_FB_FREE` (MiB)");

pub const MEMORY_TOTAL_BYTES: FamilyDef = FamilyDef::gauge(
    "accel_gpu_memory_total_bytes",
    "GPU memory installed, in bytes.",
)
.labels(&["gpu", "uuid"])
.doc("total physical memory, bytes (= used + free + reserved)")
.source("`nvmlDeviceGetMemoryInfo_v2` `total`")
.equivalent("`DCGM_FI_DEV_FB_TOTAL` (MiB)");

pub const MEMORY_RESERVED_BYTES: FamilyDef = FamilyDef::gauge(
    "accel_gpu_memory_reserved_bytes",
    "GPU memory reserved by the driver and firmware, in bytes.",
)
.labels(&["gpu", "uuid"])
.doc("bytes reserved by the driver and firmware")
.source("`nvmlDeviceGetMemoryInfo_v2` `reserved`")
.equivalent("`DCGM_FI_DEV_FB_RESERVED` (MiB)")
.detail();

pub const BAR1_USED_BYTES: FamilyDef =
    FamilyDef::gauge("accel_gpu_bar1_used_bytes", "BAR1 memory in use, in bytes.")
        .labels(&["gpu", "uuid"])
        .doc("BAR1 (host-mapped) memory in use")
        .source("`nvmlDeviceGetBAR1MemoryInfo` `bar1Used`")
        .equivalent("`DCGM_FI_DEV_BAR1_USED` (MB)")
        .detail();

pub const BAR1_TOTAL_BYTES: FamilyDef =
    FamilyDef::gauge("accel_gpu_bar1_total_bytes", "BAR1 memory size, in bytes.")
        .labels(&["gpu", "uuid"])
        .doc("BAR1 size")
        .source("`nvmlDeviceGetBAR1MemoryInfo` `bar1Total`")
        .equivalent("`DCGM_FI_DEV_BAR1_TOTAL` (MB)")
        .detail();

pub(super) fn memory(g: &mut GpuSample<'_>, dev: &Device<'_>) {
    if let Some(m) = g.get("nvmlDeviceGetMemoryInfo_v2", dev.memory_info()) {
        g.add(&MEMORY_USED_BYTES, m.used as f64);
        g.add(&MEMORY_FREE_BYTES, m.free as f64);
        g.add(&MEMORY_TOTAL_BYTES, m.total as f64);
        g.add(&MEMORY_RESERVED_BYTES, m.reserved as f64);
    }
}

pub(super) fn bar1(g: &mut GpuSample<'_>, dev: &Device<'_>) {
    if let Some(b) = g.get("nvmlDeviceGetBAR1MemoryInfo", dev.bar1_memory_info()) {
        g.add(&BAR1_USED_BYTES, b.used as f64);
        g.add(&BAR1_TOTAL_BYTES, b.total as f64);
    }
}
