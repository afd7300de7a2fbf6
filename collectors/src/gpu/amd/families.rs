//! The families only AMD GPUs have (`accel_gpu_amd_*`), each naming the
//! file it comes from; the families both vendors have are the `gpu`
//! collector's own.

use crate::FamilyDef;

pub const AMD_INFO: FamilyDef = FamilyDef::gauge(
    "accel_gpu_amd_info",
    "AMD GPU partition modes, XGMI hive and gpu_metrics version; always 1.",
)
.labels(&["gpu", "uuid", "compute_partition", "memory_partition", "xgmi_hive_id", "xgmi_physical_id", "gpu_metrics_version"])
.doc("always 1. `compute_partition` is SPX, DPX, TPX, QPX or CPX, `memory_partition` NPS1, NPS2, NPS4 or NPS8 (`\"\"` where the part has none); `xgmi_hive_id` is the same on every GPU of one XGMI hive; `gpu_metrics_version` is `1.8`, or `\"\"` when the table is missing or skipped")
.source("`current_compute_partition`, `current_memory_partition`, `xgmi_hive_info/xgmi_hive_id`, `xgmi_physical_id`, the `gpu_metrics` header");

pub const AMD_PARTITION_UTILIZATION_RATIO: FamilyDef = FamilyDef::gauge(
    "accel_gpu_amd_partition_utilization_ratio",
    "Mean busy fraction of the XCCs of one compute partition (0-1).",
)
.labels(&["gpu", "uuid", "partition"])
.doc("mean of the instantaneous busy fraction of the partition's XCCs; one series per partition the table reports (`num_partition`)")
.source("`gpu_metrics` v1.6 (second layout), v1.7, v1.8 `xcp_stats[partition].gfx_busy_inst`");

pub const AMD_RAS_ERRORS: FamilyDef = FamilyDef::counter(
    "accel_gpu_amd_ras_errors_total",
    "Errors the RAS interface counted in one IP block since the driver loaded.",
)
.labels(&["gpu", "uuid", "block", "type"])
.doc("errors by block (`umc` is HBM, `gfx`, `sdma`, `xgmi_wafl`, `mmhub`, ...) and `type` (`uncorrected`, `corrected`, `deferred`). Their sum per type is also `accel_gpu_ecc_errors_total{counter=\"volatile\"}`")
.source("`ras/<block>_err_count` (`ue:`, `ce:`, `de:`)")
.equivalent("amd-smi ECC per block; DME `GPU_ECC_*_<BLOCK>`");

pub const AMD_BAD_PAGES: FamilyDef = FamilyDef::gauge(
    "accel_gpu_amd_bad_pages",
    "VRAM pages the driver retired, by state.",
)
.labels(&["gpu", "uuid", "state"])
.doc("retired VRAM pages: `reserved` (retired), `pending` (to be retired at the next reset), `failed` (could not be retired)")
.source("`ras/gpu_vram_bad_pages` (one line per page, flag R, P or F)");

pub const AMD_XGMI_LINK_UP: FamilyDef = FamilyDef::gauge(
    "accel_gpu_amd_xgmi_link_up",
    "1 when the XGMI link is active, 0 when it is not.",
)
.labels(&["gpu", "uuid", "link"])
.doc("XGMI link state, as NVLink's `accel_gpu_nvlink_up`")
.source("`gpu_metrics` v1.7+ `xgmi_link_status[link]`");

pub const AMD_XGMI_TRANSMIT_BYTES: FamilyDef = FamilyDef::counter(
    "accel_gpu_amd_xgmi_transmit_bytes_total",
    "Bytes written over the XGMI link.",
)
.labels(&["gpu", "uuid", "link"])
.doc("bytes written to peers over the link since the driver loaded (the firmware counts KiB)")
.source("`gpu_metrics` v1.4+ `xgmi_write_data_acc[link]` × 1024")
.equivalent("DME `GPU_XGMI_LINK_TX`");

pub const AMD_XGMI_RECEIVE_BYTES: FamilyDef = FamilyDef::counter(
    "accel_gpu_amd_xgmi_receive_bytes_total",
    "Bytes read over the XGMI link.",
)
.labels(&["gpu", "uuid", "link"])
.doc("bytes read from peers over the link since the driver loaded")
.source("`gpu_metrics` v1.4+ `xgmi_read_data_acc[link]` × 1024")
.equivalent("DME `GPU_XGMI_LINK_RX`");

pub const AMD_PCIE_RECOVERIES: FamilyDef = FamilyDef::counter(
    "accel_gpu_amd_pcie_recoveries_total",
    "PCIe link transitions from L0 to recovery.",
)
.labels(&["gpu", "uuid"])
.doc("times the PCIe link left L0 for recovery (retraining): a flaky riser or slot")
.source("`gpu_metrics` v1.4+ `pcie_l0_to_recov_count_acc`")
.equivalent("DME `PCIE_RECOVERY_COUNT`");

pub const AMD_PCIE_REPLAY_ROLLOVERS: FamilyDef = FamilyDef::counter(
    "accel_gpu_amd_pcie_replay_rollovers_total",
    "PCIe replay number rollovers.",
)
.labels(&["gpu", "uuid"])
.source("`gpu_metrics` v1.4+ `pcie_replay_rover_count_acc`")
.equivalent("DME `PCIE_REPLAY_ROLLOVER_COUNT`");

pub const AMD_PCIE_NAKS_SENT: FamilyDef =
    FamilyDef::counter("accel_gpu_amd_pcie_naks_sent_total", "PCIe NAKs sent.")
        .labels(&["gpu", "uuid"])
        .source("`gpu_metrics` v1.5+ `pcie_nak_sent_count_acc`")
        .equivalent("DME `PCIE_NACK_SENT_COUNT`");

pub const AMD_PCIE_NAKS_RECEIVED: FamilyDef = FamilyDef::counter(
    "accel_gpu_amd_pcie_naks_received_total",
    "PCIe NAKs received.",
)
.labels(&["gpu", "uuid"])
.source("`gpu_metrics` v1.5+ `pcie_nak_rcvd_count_acc`")
.equivalent("DME `PCIE_NACK_RECEIVED_COUNT`");

pub const AMD_METRICS_SKIPPED: FamilyDef = FamilyDef::counter(
    "accel_gpu_amd_metrics_skipped_total",
    "gpu_metrics tables skipped because they could not be decoded.",
)
.labels(&["gpu", "uuid", "reason"])
.doc("samples whose `gpu_metrics` table was skipped: `unknown_version` (a (format, content, size) this agent does not know: a newer driver), `truncated`, `oversized`, `unreadable`. The other files are still read; the families only the table gives are left out. Logged once per GPU and reason")
.source("`gpu_metrics`");

/// The AMD-only families, in the order of docs/metrics.md.
pub const FAMILIES: [FamilyDef; 12] = [
    AMD_INFO,
    AMD_PARTITION_UTILIZATION_RATIO,
    AMD_RAS_ERRORS,
    AMD_BAD_PAGES,
    AMD_XGMI_LINK_UP,
    AMD_XGMI_TRANSMIT_BYTES,
    AMD_XGMI_RECEIVE_BYTES,
    AMD_PCIE_RECOVERIES,
    AMD_PCIE_REPLAY_ROLLOVERS,
    AMD_PCIE_NAKS_SENT,
    AMD_PCIE_NAKS_RECEIVED,
    AMD_METRICS_SKIPPED,
];
