//! MIG: the instances a GPU is split into, when MIG mode is on. Each
//! instance is reported with the parent's `gpu` and `uuid` and its own
//! `gpu_instance` id: identity (`accel_gpu_mig_info`, with the instance's
//! `MIG-…` uuid for joins with schedulers), memory, whether a process holds
//! it, and its GPM activity (Hopper and newer). Utilisation, power, clocks
//! and the rest stay on the parent GPU, as NVML gives them.

use std::collections::HashMap;

use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, GpmSample, Nvml};

use super::gpm::MIG_METRICS;
use super::{raw, GpuSample};
use crate::MetricType;

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
    g.gauge(
        "accel_gpu_mig_mode",
        "1 while MIG mode is on (the GPU is split into instances).",
        if mode.current == MIG_ENABLED {
            1.0
        } else {
            0.0
        },
    );
    g.gauge(
        "accel_gpu_mig_mode_pending",
        "MIG mode after the next GPU reset (1 on).",
        if mode.pending == MIG_ENABLED {
            1.0
        } else {
            0.0
        },
    );
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
        g.put(
            MetricType::Gauge,
            "accel_gpu_mig_info",
            "A MIG instance of the GPU: its ids, uuid (MIG-…) and profile name; always 1.",
            &labels,
            1.0,
        );
        let key = [("gpu_instance", gi_label.as_str())];
        if let Some(m) = g.get("nvmlDeviceGetMemoryInfo_v2", mig.memory_info()) {
            g.put(
                MetricType::Gauge,
                "accel_gpu_mig_memory_used_bytes",
                "Memory allocated in the MIG instance, in bytes.",
                &key,
                m.used as f64,
            );
            g.put(
                MetricType::Gauge,
                "accel_gpu_mig_memory_total_bytes",
                "Memory of the MIG instance, in bytes.",
                &key,
                m.total as f64,
            );
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
                MetricType::Gauge,
                "accel_gpu_mig_allocated",
                "1 while a process holds the MIG instance.",
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
                        for ((_, family, help), r) in MIG_METRICS.iter().zip(results) {
                            if let Some(m) = g.get("nvmlGpmMetricsGet", r) {
                                g.put(MetricType::Gauge, family, help, &key, m.value / 100.0);
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
