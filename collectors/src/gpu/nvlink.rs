//! NVLink: link state and error counters through nvml-wrapper, data
//! counters through raw field values with the link as scope id.

use nvml_wrapper::enum_wrappers::nv_link::ErrorCounter;
use nvml_wrapper::Device;

use super::raw;
use super::sample::GpuSample;
use crate::FamilyDef;

pub const NVLINK_UP: FamilyDef = FamilyDef::gauge(
    "accel_gpu_nvlink_up",
    "1 while the NVLink link is active.",
)
.labels(&["gpu", "uuid", "link"])
.doc("1 while the link is active")
.source("`nvmlDeviceGetNvLinkState(link)`")
.equivalent("`DCGM_FI_DEV_NVLINK_GET_STATE` (DCGM ≥ 4.5, a link entity); not in dcgm-exporter's default lists");

pub const NVLINK_ERRORS: FamilyDef = FamilyDef::counter(
    "accel_gpu_nvlink_errors_total",
    "NVLink errors by link and type (replay, recovery, crc_flit, crc_data).",
)
.labels(&["gpu", "uuid", "link", "type"])
.doc("data-link errors per link: `replay`, `recovery`, `crc_flit`, `crc_data`")
.source("`nvmlDeviceGetNvLinkErrorCounter(link, NVML_NVLINK_ERROR_DL_REPLAY / _DL_RECOVERY / _DL_CRC_FLIT / _DL_CRC_DATA)`")
.equivalent("`DCGM_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_L<n>`, `DCGM_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_L<n>`, `DCGM_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_L<n>`, `DCGM_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_L<n>` (and their `_TOTAL` over links)");

pub const NVLINK_TRANSMIT_BYTES: FamilyDef = FamilyDef::counter(
    "accel_gpu_nvlink_transmit_bytes_total",
    "NVLink data bytes by link (payload, without protocol overhead).",
)
.labels(&["gpu", "uuid", "link"])
.doc("payload bytes sent on the link (data only, without protocol overhead)")
.source("`nvmlDeviceGetFieldValues`, field 138 `NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX`, scope id = link (KiB). One call per GPU per sample fetches every link in both directions. The raw NVML call is used because nvml-wrapper always sends scope 0")
.equivalent("`DCGM_FI_DEV_NVLINK_TX_BANDWIDTH_L<n>` (DCGM ≥ 4.1; the same NVML field, in KiB). dcgm-exporter's default `DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL` is transmit + receive summed over all links. As a rate: `DCGM_FI_PROF_NVLINK_L<n>_TX_BYTES`");

pub const NVLINK_RECEIVE_BYTES: FamilyDef = FamilyDef::counter(
    "accel_gpu_nvlink_receive_bytes_total",
    "NVLink data bytes by link (payload, without protocol overhead).",
)
.labels(&["gpu", "uuid", "link"])
.doc("payload bytes received on the link")
.source("`nvmlDeviceGetFieldValues`, field 139 `NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX`, scope id = link (KiB)")
.equivalent("`DCGM_FI_DEV_NVLINK_RX_BANDWIDTH_L<n>` (DCGM ≥ 4.1); `DCGM_FI_PROF_NVLINK_L<n>_RX_BYTES` as a rate");

/// Most NVLink links a GPU can have (NVML_NVLINK_MAX_LINKS).
const MAX_NVLINKS: u32 = 18;

const ERROR_COUNTERS: [(ErrorCounter, &str); 4] = [
    (ErrorCounter::DlReplay, "replay"),
    (ErrorCounter::DlRecovery, "recovery"),
    (ErrorCounter::DlCrcFlit, "crc_flit"),
    (ErrorCounter::DlCrcData, "crc_data"),
];

pub(super) fn nvlink(
    g: &mut GpuSample<'_>,
    dev: &Device<'_>,
    raw: Option<&raw::Raw>,
    links: &mut Option<Vec<u32>>,
) {
    // Which links exist is probed once: a link that does not exist answers
    // NotSupported or InvalidArg.
    let links = links.get_or_insert_with(|| {
        (0..MAX_NVLINKS)
            .filter(|&l| dev.link_wrapper_for(l).is_active().is_ok())
            .collect()
    });
    if links.is_empty() {
        return;
    }
    g.health.nvlinks = links.len() as u32;
    let mut fields = Vec::with_capacity(links.len() * 2);
    for &l in links.iter() {
        let link = l.to_string();
        if let Some(up) = g.get(
            "nvmlDeviceGetNvLinkState",
            dev.link_wrapper_for(l).is_active(),
        ) {
            if !up {
                g.health.nvlink_down.push(l);
            }
            g.with(&NVLINK_UP, "link", &link, if up { 1.0 } else { 0.0 });
        }
        for (counter, name) in ERROR_COUNTERS {
            if let Some(n) = g.get(
                "nvmlDeviceGetNvLinkErrorCounter",
                dev.link_wrapper_for(l).error_counter(counter),
            ) {
                g.put(&NVLINK_ERRORS, &[("link", &link), ("type", name)], n as f64);
            }
        }
        fields.push((raw::FI_NVLINK_THROUGHPUT_DATA_TX, l));
        fields.push((raw::FI_NVLINK_THROUGHPUT_DATA_RX, l));
    }
    let Some(raw) = raw else { return };
    let Some(values) = g.get_raw(
        "nvmlDeviceGetFieldValues(NVLINK_THROUGHPUT)",
        raw.field_values(dev, &fields),
    ) else {
        return;
    };
    for ((field, l), v) in fields.iter().zip(values) {
        let Ok(kib) = v else { continue };
        let def = if *field == raw::FI_NVLINK_THROUGHPUT_DATA_TX {
            &NVLINK_TRANSMIT_BYTES
        } else {
            &NVLINK_RECEIVE_BYTES
        };
        g.with(def, "link", &l.to_string(), kib * 1024.0);
    }
}
