//! NVLink: link state and error counters through nvml-wrapper, data
//! counters through raw field values with the link as scope id.

use nvml_wrapper::enum_wrappers::nv_link::ErrorCounter;
use nvml_wrapper::Device;

use super::{raw, GpuSample};
use crate::MetricType;

/// Most NVLink links a GPU can have (NVML_NVLINK_MAX_LINKS).
const MAX_NVLINKS: u32 = 18;

const NVLINK_ERRORS: [(ErrorCounter, &str); 4] = [
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
    let mut fields = Vec::with_capacity(links.len() * 2);
    for &l in links.iter() {
        let link = l.to_string();
        if let Some(up) = g.get(
            "nvmlDeviceGetNvLinkState",
            dev.link_wrapper_for(l).is_active(),
        ) {
            g.with(
                "accel_gpu_nvlink_up",
                "1 while the NVLink link is active.",
                false,
                "link",
                &link,
                if up { 1.0 } else { 0.0 },
            );
        }
        for (counter, name) in NVLINK_ERRORS {
            if let Some(n) = g.get(
                "nvmlDeviceGetNvLinkErrorCounter",
                dev.link_wrapper_for(l).error_counter(counter),
            ) {
                g.put(
                    MetricType::Counter,
                    "accel_gpu_nvlink_errors_total",
                    "NVLink errors by link and type (replay, recovery, crc_flit, crc_data).",
                    &[("link", &link), ("type", name)],
                    n as f64,
                );
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
        let name = if *field == raw::FI_NVLINK_THROUGHPUT_DATA_TX {
            "accel_gpu_nvlink_transmit_bytes_total"
        } else {
            "accel_gpu_nvlink_receive_bytes_total"
        };
        g.with(
            name,
            "NVLink data bytes by link (payload, without protocol overhead).",
            true,
            "link",
            &l.to_string(),
            kib * 1024.0,
        );
    }
}
