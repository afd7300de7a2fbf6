//! MIG: the instances a GPU is split into, when MIG mode is on. Each
//! instance is reported with the parent's `gpu` and `uuid` and its own
//! `gpu_instance` id: identity (`accel_gpu_mig_info`, with the instance's
//! `MIG-…` uuid for joins with schedulers), memory, whether a process holds
//! it, and its GPM activity (Hopper and newer). Utilisation, power, clocks
//! and the rest stay on the parent GPU, as NVML gives them.

use std::collections::HashMap;

use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, GpmSample, Nvml};

use nvml_wrapper::enums::gpm::GpmMetricId;

use super::raw;
use super::sample::GpuSample;
use crate::FamilyDef;

pub const MIG_MODE: FamilyDef = FamilyDef::gauge(
    "accel_gpu_mig_mode",
    "1 while MIG mode is on (the GPU is split into instances).",
)
.labels(&["gpu", "uuid"])
.doc("1 while MIG mode is on; 0 on a MIG-capable GPU with MIG off; absent where MIG is not supported")
.source("`nvmlDeviceGetMigMode` `currentMode`");

pub const MIG_MODE_PENDING: FamilyDef = FamilyDef::gauge(
    "accel_gpu_mig_mode_pending",
    "MIG mode after the next GPU reset (1 on).",
)
.labels(&["gpu", "uuid"])
.doc("MIG mode after the next GPU reset; only while it differs from `accel_gpu_mig_mode` (a change waits for a reset): `accel_gpu_mig_mode_pending or accel_gpu_mig_mode` is the mode after a reset")
.source("`nvmlDeviceGetMigMode` `pendingMode`");

pub const MIG_INFO: FamilyDef = FamilyDef::gauge(
    "accel_gpu_mig_info",
    "A MIG instance of the GPU: its ids, uuid (MIG-…) and profile name; always 1.",
)
.labels(&["gpu", "uuid", "gpu_instance", "compute_instance", "mig_uuid", "name"])
.doc("always 1, one per instance; `mig_uuid` is the `MIG-…` uuid Kubernetes' device plugin reports; `name` holds the profile (`NVIDIA H100 80GB HBM3 MIG 3g.40gb`)")
.source("`nvmlDeviceGetMigDeviceHandleByIndex`, `nvmlDeviceGetGpuInstanceId`, `nvmlDeviceGetComputeInstanceId`, `nvmlDeviceGetUUID`, `nvmlDeviceGetName`")
.equivalent("the `GPU_I_ID`, `GPU_I_PROFILE` labels");

pub const MIG_MEMORY_USED_BYTES: FamilyDef = FamilyDef::gauge(
    "accel_gpu_mig_memory_used_bytes",
    "Memory allocated in the MIG instance, in bytes.",
)
.labels(&["gpu", "uuid", "gpu_instance"])
.doc("memory allocated in the instance, bytes")
.source("`nvmlDeviceGetMemoryInfo_v2` on the instance")
.equivalent("`DCGM_FI_DEV_FB_USED` per instance");

pub const MIG_MEMORY_TOTAL_BYTES: FamilyDef = FamilyDef::gauge(
    "accel_gpu_mig_memory_total_bytes",
    "Memory of the MIG instance, in bytes.",
)
.labels(&["gpu", "uuid", "gpu_instance"])
.doc("memory of the instance, bytes")
.source("`nvmlDeviceGetMemoryInfo_v2` on the instance")
.equivalent("`DCGM_FI_DEV_FB_TOTAL` per instance");

pub const MIG_ALLOCATED: FamilyDef = FamilyDef::gauge(
    "accel_gpu_mig_allocated",
    "1 while a process holds the MIG instance.",
)
.labels(&["gpu", "uuid", "gpu_instance"])
.doc("1 while a process holds the instance")
.source("`nvmlDeviceGetComputeRunningProcesses_v3` on the instance");

pub const MIG_SM_ACTIVE_RATIO: FamilyDef = FamilyDef::gauge(
    "accel_gpu_mig_sm_active_ratio",
    "Fraction of time a warp was resident on the MIG instance's SMs (GPM, 0-1).",
)
.labels(&["gpu", "uuid", "gpu_instance"])
.doc("SM activity of the instance, 0–1")
.source("`nvmlGpmMigSampleGet` + `nvmlGpmMetricsGet` (`SM_UTIL`)")
.equivalent("`DCGM_FI_PROF_SM_ACTIVE` per instance");

pub const MIG_SM_OCCUPANCY_RATIO: FamilyDef = FamilyDef::gauge(
    "accel_gpu_mig_sm_occupancy_ratio",
    "Resident warps as a fraction of the MIG instance's maximum (GPM, 0-1).",
)
.labels(&["gpu", "uuid", "gpu_instance"])
.doc("warp occupancy of the instance, 0–1")
.source("GPM `SM_OCCUPANCY`")
.equivalent("`DCGM_FI_PROF_SM_OCCUPANCY` per instance");

pub const MIG_TENSOR_ACTIVE_RATIO: FamilyDef = FamilyDef::gauge(
    "accel_gpu_mig_tensor_active_ratio",
    "Fraction of cycles a tensor pipe of the MIG instance was active (GPM, 0-1).",
)
.labels(&["gpu", "uuid", "gpu_instance"])
.doc("tensor pipe activity of the instance, 0–1")
.source("GPM `ANY_TENSOR_UTIL`")
.equivalent("`DCGM_FI_PROF_PIPE_TENSOR_ACTIVE` per instance");

pub const MIG_DRAM_ACTIVE_RATIO: FamilyDef = FamilyDef::gauge(
    "accel_gpu_mig_dram_active_ratio",
    "Fraction of the MIG instance's peak DRAM bandwidth used (GPM, 0-1).",
)
.labels(&["gpu", "uuid", "gpu_instance"])
.doc("DRAM bandwidth use of the instance, 0–1")
.source("GPM `DRAM_BW_UTIL`")
.equivalent("`DCGM_FI_PROF_DRAM_ACTIVE` per instance");

/// GPM metrics per MIG instance; values are percentages.
const MIG_METRICS: [(GpmMetricId, &FamilyDef); 4] = [
    (GpmMetricId::SmUtil, &MIG_SM_ACTIVE_RATIO),
    (GpmMetricId::SmOccupancy, &MIG_SM_OCCUPANCY_RATIO),
    (GpmMetricId::AnyTensorUtil, &MIG_TENSOR_ACTIVE_RATIO),
    (GpmMetricId::DramBwUtil, &MIG_DRAM_ACTIVE_RATIO),
];

/// NVML_DEVICE_MIG_ENABLE.
const MIG_ENABLED: u32 = 1;

/// Per parent GPU: the previous GPM sample of each GPU instance.
pub(super) type MigGpm = HashMap<u32, GpmSample<'static>>;

/// Samples the MIG instances of `dev` and lists them in `ids`; returns
/// whether MIG is on.
pub(super) fn sample(
    g: &mut GpuSample<'_>,
    nvml: &'static Nvml,
    dev: &Device<'static>,
    raw: Option<&raw::Raw>,
    gpm_supported: bool,
    prev: &mut MigGpm,
    ids: &mut Vec<crate::MigIds>,
) -> bool {
    ids.clear();
    let Some(mode) = g.get("nvmlDeviceGetMigMode", dev.mig_mode()) else {
        return false;
    };
    g.add(
        &MIG_MODE,
        if mode.current == MIG_ENABLED {
            1.0
        } else {
            0.0
        },
    );
    // Only while a change waits for a reset: the same value as
    // accel_gpu_mig_mode otherwise.
    if mode.pending != mode.current {
        g.add(
            &MIG_MODE_PENDING,
            if mode.pending == MIG_ENABLED {
                1.0
            } else {
                0.0
            },
        );
    }
    if mode.current != MIG_ENABLED {
        prev.clear();
        return false;
    }
    let Some(max) = g.get("nvmlDeviceGetMaxMigDeviceCount", dev.mig_device_count()) else {
        return true;
    };
    let mut seen = Vec::new();
    for i in 0..max {
        let mig = match dev.mig_device_by_index(i) {
            Ok(m) => m,
            Err(NvmlError::NotFound | NvmlError::InvalidArg) => continue,
            Err(e) => {
                g.get::<()>("nvmlDeviceGetMigDeviceHandleByIndex", Err(e));
                continue;
            }
        };
        let Some(gi) =
            raw.and_then(|r| g.get_raw("nvmlDeviceGetGpuInstanceId", r.gpu_instance_id(&mig)))
        else {
            continue;
        };
        let ci = raw
            .and_then(|r| {
                g.get_raw(
                    "nvmlDeviceGetComputeInstanceId",
                    r.compute_instance_id(&mig),
                )
            })
            .map(|c| c.to_string())
            .unwrap_or_default();
        let gi_label = gi.to_string();
        let mig_uuid = g.get("nvmlDeviceGetUUID", mig.uuid()).unwrap_or_default();
        let profile = g.get("nvmlDeviceGetName", mig.name()).unwrap_or_default();
        let labels = [
            ("gpu_instance", gi_label.as_str()),
            ("compute_instance", ci.as_str()),
            ("mig_uuid", mig_uuid.as_str()),
            ("name", profile.as_str()),
        ];
        g.put(&MIG_INFO, &labels, 1.0);
        let key = [("gpu_instance", gi_label.as_str())];
        if let Some(m) = g.get("nvmlDeviceGetMemoryInfo_v2", mig.memory_info()) {
            g.put(&MIG_MEMORY_USED_BYTES, &key, m.used as f64);
            g.put(&MIG_MEMORY_TOTAL_BYTES, &key, m.total as f64);
        }
        let procs = g.get(
            "nvmlDeviceGetComputeRunningProcesses",
            mig.running_compute_processes(),
        );
        ids.push(crate::MigIds {
            gpu_instance: gi,
            uuid: mig_uuid.clone(),
            busy: procs.as_ref().is_some_and(|p| !p.is_empty()),
        });
        if let Some(procs) = procs {
            g.put(
                &MIG_ALLOCATED,
                &key,
                if procs.is_empty() { 0.0 } else { 1.0 },
            );
        }
        if gpm_supported {
            if let Some(cur) = g.get("nvmlGpmMigSampleGet", dev.gpm_mig_sample(gi)) {
                if let Some(p) = prev.get(&gi) {
                    let ids: Vec<_> = MIG_METRICS.iter().map(|m| m.0).collect();
                    if let Some(results) = g.get(
                        "nvmlGpmMetricsGet",
                        nvml_wrapper::gpm::gpm_metrics_get(nvml, p, &cur, &ids),
                    ) {
                        for ((_, family), r) in MIG_METRICS.iter().zip(results) {
                            if let Some(m) = g.get("nvmlGpmMetricsGet", r) {
                                g.put(family, &key, m.value / 100.0);
                            }
                        }
                    }
                }
                prev.insert(gi, cur);
            }
        }
        seen.push(gi);
    }
    // Instances that were destroyed take their GPM samples with them.
    prev.retain(|gi, _| seen.contains(gi));
    true
}
