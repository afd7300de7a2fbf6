//! Data one collector publishes for others: the only way collectors talk.
//!
//! Each [`Topic`] has one writer and any number of readers, who see the
//! latest published value (an `ArcSwap` load: no lock, no waiting on the
//! writer, never torn). The flows, writer -> readers:
//!
//! | topic | writer | readers | what for |
//! |---|---|---|---|
//! | [`Shared::gpus`] | `gpu` | `kubernetes`, `goodput`, `cloud`, `process` | device ids to labels (kubernetes); a run's devices and their peak FLOP/s (goodput); the processes to signal on a preemption notice (cloud); the GPU processes to follow (process) |
//! | [`Shared::pods`] | `kubernetes` | `gpu` | the pod and namespace on `accel_gpu_process_info` |
//! | [`Shared::tpus`] | `tpu` | `goodput` | a run's TPU chips (named by index or `TPU-<pci_bus_id>`, or held by the sender) and their peak FLOP/s |
//! | [`Shared::gpus`] | `gpu` | `health` | the GPUs NVML answers for, which are down, and each one's health facts ([`GpuHealth`]: XID counts, row remapping, ECC, NVLink, PCIe link, throttling) |
//! | [`Shared::health`] | `health` | the agent (`/health`, the landing page) | the latest health report: a state, reason and action per component and check |
//!
//! `gpu` and `kubernetes` each read what the other writes; neither waits on
//! the other, and each uses the last value, so the loop adds at most one
//! sample interval of delay to a new pod's labels.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::kubernetes::PodMap;

/// One value with one writer and many readers.
pub struct Topic<T>(Arc<ArcSwap<T>>);

impl<T> Clone for Topic<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<T: Default> Default for Topic<T> {
    fn default() -> Self {
        Self(Arc::new(ArcSwap::from_pointee(T::default())))
    }
}

impl<T> Topic<T> {
    /// Replaces the value readers see.
    pub fn publish(&self, value: T) {
        self.0.store(Arc::new(value));
    }

    /// The latest value (a cheap clone of a shared pointer).
    pub fn latest(&self) -> Arc<T> {
        self.0.load_full()
    }
}

impl<T> std::fmt::Debug for Topic<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Topic")
    }
}

/// Every topic, handed to each collector when it is built.
#[derive(Clone, Debug, Default)]
pub struct Shared {
    /// The GPUs of the GPU collector's last sample.
    pub gpus: Topic<GpuSnapshot>,
    /// Which pod holds which GPU, from the kubernetes collector's last good
    /// answer.
    pub pods: Topic<PodMap>,
    /// The TPU chips of the tpu collector's last sample, in the GPUs'
    /// shape: `index` the chip, `uuid` `TPU-<pci_bus_id>`, `name`
    /// `Google TPU <generation>`, `pids` the processes holding it.
    pub tpus: Topic<GpuSnapshot>,
    /// The health collector's latest report.
    pub health: Topic<crate::health::Report>,
}

/// What the GPU collector saw in its last sample.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GpuSnapshot {
    /// The GPUs whose identity is known, in index order.
    pub gpus: Vec<GpuIds>,
    /// The pids of the compute processes holding any GPU, sorted, unique.
    pub pids: Vec<u32>,
    /// Whether the GPU collector has published at all: built (absent or
    /// not) and sampled. Until then the other fields say nothing.
    pub sampled: bool,
    /// How many GPUs NVML counts (`nvmlDeviceGetCount`), identified or not.
    pub count: u32,
    /// The NVML indexes of the GPUs not reachable in the last sample (lost,
    /// fallen off the bus, or failing).
    pub down: Vec<u32>,
    /// Why NVML does not answer at all (no library, no driver, init
    /// failed), when it does not.
    pub error: Option<String>,
}

/// One GPU as the GPU collector saw it in its last sample: what the
/// kubernetes collector needs to turn the kubelet's device ids (GPU and MIG
/// uuids, or indexes) into `gpu`, `uuid` and `gpu_instance` labels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GpuIds {
    /// NVML index (the `gpu` label).
    pub index: u32,
    /// `GPU-…` uuid.
    pub uuid: String,
    /// Model name as NVML gives it ("NVIDIA H100 80GB HBM3"), or "".
    pub name: String,
    /// Pids of the compute processes holding it.
    pub pids: Vec<u32>,
    /// Whether a compute process held it.
    pub busy: bool,
    /// Its MIG instances, when MIG is on.
    pub migs: Vec<MigIds>,
    /// PCI bus id as NVML gives it ("00000000:18:00.0"), or "".
    pub pci_bus_id: String,
    /// What the health checks read, from its last good sample.
    pub health: GpuHealth,
}

/// The health facts of one GPU, from its last good sample: each `None` when
/// the GPU or driver does not support the call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GpuHealth {
    /// XID counts since the agent started, (xid, count), sorted by xid.
    pub xids: Vec<(u64, u64)>,
    /// How many times the GPU came back after being lost (a reset, as the
    /// agent sees it).
    pub resets: u64,
    /// Row remapping: a remap waits for a GPU reset.
    pub remap_pending: Option<bool>,
    /// Row remapping failed.
    pub remap_failure: Option<bool>,
    /// Uncorrected ECC errors since the driver loaded (volatile).
    pub ecc_uncorrected_volatile: Option<u64>,
    /// Retired pages, all causes (before Ampere).
    pub retired_pages: Option<u64>,
    /// A page retirement waits for the next reboot.
    pub retired_pending: Option<bool>,
    /// NVLink links that exist, and those not active.
    pub nvlinks: u32,
    pub nvlink_down: Vec<u32>,
    /// PCIe link: current and maximum generation and width.
    pub pcie_gen: Option<(u32, u32)>,
    pub pcie_width: Option<(u32, u32)>,
    /// Clock event reasons active now that slow the GPU for a hardware or
    /// thermal cause (`hw_slowdown`, `hw_thermal_slowdown`,
    /// `sw_thermal_slowdown`, `hw_power_brake_slowdown`).
    pub slowdowns: Vec<&'static str>,
    /// The driver's recovery action (`NVML_FI_DEV_GET_GPU_RECOVERY_ACTION`,
    /// driver 565+): 0 none, 1 GPU reset, 2 node reboot, 3 drain P2P, 4
    /// drain and reset.
    pub recovery_action: Option<u32>,
    /// NVSwitch fabric registration (`nvmlDeviceGetGpuFabricInfo`): state
    /// (1 not started, 2 in progress, 3 completed) and status (an NVML
    /// return code); `None` without NVSwitch.
    pub fabric: Option<(u32, u32)>,
}

/// One MIG instance of a [`GpuIds`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MigIds {
    /// GPU instance id (the `gpu_instance` label).
    pub gpu_instance: u32,
    /// `MIG-…` uuid.
    pub uuid: String,
    /// Whether a compute process held it.
    pub busy: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_see_the_latest_value() {
        let shared = Shared::default();
        let reader = shared.clone();
        assert!(reader.gpus.latest().gpus.is_empty());
        shared.gpus.publish(GpuSnapshot {
            gpus: vec![GpuIds {
                index: 3,
                ..Default::default()
            }],
            pids: vec![7],
            ..Default::default()
        });
        assert_eq!(reader.gpus.latest().gpus[0].index, 3);
        assert_eq!(reader.gpus.latest().pids, [7]);
    }
}
