//! PCIe: link generation and width (a link below its maximum is degraded),
//! byte counters and throughput, replays.

use std::ops::Range;
use std::time::Instant;

use nvml_wrapper::enum_wrappers::device::PcieUtilCounter;
use nvml_wrapper::Device;

use super::sample::GpuSample;
use super::{fields, raw, GpuState};
use crate::FamilyDef;

pub const PCIE_LINK_GENERATION: FamilyDef = FamilyDef::gauge(
    "accel_gpu_pcie_link_generation",
    "Current PCIe link generation.",
)
.labels(&["gpu", "uuid"])
.doc("current link generation (it can drop while idle to save power)")
.source("`nvmlDeviceGetCurrPcieLinkGeneration`")
.equivalent("`DCGM_FI_DEV_PCIE_LINK_GEN`");

pub const PCIE_LINK_MAX_GENERATION: FamilyDef = FamilyDef::gauge(
    "accel_gpu_pcie_link_max_generation",
    "Maximum PCIe link generation of the GPU and system.",
)
.labels(&["gpu", "uuid"])
.doc("highest generation the GPU and the system support together")
.source("`nvmlDeviceGetMaxPcieLinkGeneration`")
.equivalent("`DCGM_FI_DEV_PCIE_MAX_LINK_GEN`");

pub const PCIE_LINK_WIDTH: FamilyDef = FamilyDef::gauge(
    "accel_gpu_pcie_link_width",
    "Current PCIe link width (lanes).",
)
.labels(&["gpu", "uuid"])
.doc("current link width, lanes. Below the maximum means a degraded link")
.source("`nvmlDeviceGetCurrPcieLinkWidth`")
.equivalent("`DCGM_FI_DEV_PCIE_LINK_WIDTH`");

pub const PCIE_LINK_MAX_WIDTH: FamilyDef = FamilyDef::gauge(
    "accel_gpu_pcie_link_max_width",
    "Maximum PCIe link width (lanes).",
)
.labels(&["gpu", "uuid"])
.doc("maximum link width, lanes")
.source("`nvmlDeviceGetMaxPcieLinkWidth`")
.equivalent("`DCGM_FI_DEV_PCIE_MAX_LINK_WIDTH`");

pub const PCIE_TRANSMIT_BYTES: FamilyDef = FamilyDef::counter(
    "accel_gpu_pcie_transmit_bytes_total",
    "Bytes the GPU sent over PCIe.",
)
.labels(&["gpu", "uuid"])
.doc("bytes sent over PCIe, where the driver has the byte counters (H100, driver 580: yes). Read every `--collector.gpu.counter-interval` (10 s), as the NVLink counters; the last reading is repeated in between")
.source("`nvmlDeviceGetFieldValues(NVML_FI_DEV_PCIE_COUNT_TX_BYTES)`");

pub const PCIE_RECEIVE_BYTES: FamilyDef = FamilyDef::counter(
    "accel_gpu_pcie_receive_bytes_total",
    "Bytes the GPU received over PCIe.",
)
.labels(&["gpu", "uuid"])
.doc("bytes received over PCIe, likewise")
.source("`NVML_FI_DEV_PCIE_COUNT_RX_BYTES`");

pub const PCIE_TRANSMIT_BYTES_PER_SECOND: FamilyDef = FamilyDef::gauge(
    "accel_gpu_pcie_transmit_bytes_per_second",
    "PCIe transmit throughput since the previous sample (from accel_gpu_pcie_transmit_bytes_total), or over the driver's 20 ms window where the GPU has no byte counters, in bytes per second.",
)
.labels(&["gpu", "uuid"])
.doc("PCIe transmit throughput, B/s: where the GPU has no byte counters, the driver's own 20 ms measurement (every sample); where it has them, only with `--collector.gpu.detail`, as the mean between the last two counter reads (by default `rate(accel_gpu_pcie_transmit_bytes_total[...])` gives it). The driver's measurement is a point sample (a point sample; `nvmlDeviceGetPcieThroughput` blocks for those 20 ms, per direction, which is why the counters come first: on an H100 they took a GPU's sample from 57 ms to 15 ms)")
.source("counter deltas, else `nvmlDeviceGetPcieThroughput(NVML_PCIE_UTIL_TX_BYTES)` (KB/s)")
.equivalent("`DCGM_FI_DEV_PCIE_TX_THROUGHPUT` (KB/s, deprecated by DCGM in favour of `DCGM_FI_PROF_PCIE_TX_BYTES`)");

pub const PCIE_RECEIVE_BYTES_PER_SECOND: FamilyDef = FamilyDef::gauge(
    "accel_gpu_pcie_receive_bytes_per_second",
    "PCIe receive throughput since the previous sample (from accel_gpu_pcie_receive_bytes_total), or over the driver's 20 ms window where the GPU has no byte counters, in bytes per second.",
)
.labels(&["gpu", "uuid"])
.doc("PCIe receive throughput, B/s, likewise")
.source("counter deltas, else `nvmlDeviceGetPcieThroughput(NVML_PCIE_UTIL_RX_BYTES)` (KB/s)")
.equivalent("`DCGM_FI_DEV_PCIE_RX_THROUGHPUT` (KB/s)");

pub const PCIE_REPLAY_ERRORS: FamilyDef = FamilyDef::counter(
    "accel_gpu_pcie_replay_errors_total",
    "PCIe replays (link-level retransmissions).",
)
.labels(&["gpu", "uuid"])
.doc("PCIe replays (link-level retransmissions)")
.source("`nvmlDeviceGetPcieReplayCounter`")
.equivalent("`DCGM_FI_DEV_PCIE_REPLAY_COUNTER`");

/// Asks for the PCIe byte counters unless the driver is known to lack them.
pub(super) fn want_pcie(batch: &mut fields::Batch, state: &GpuState) -> Option<Range<usize>> {
    (state.pcie_counters != Some(false)).then(|| {
        batch.want(&[
            (raw::FI_PCIE_COUNT_TX_BYTES, 0),
            (raw::FI_PCIE_COUNT_RX_BYTES, 0),
        ])
    })
}

pub(super) fn pcie(
    g: &mut GpuSample<'_>,
    dev: &Device<'_>,
    batch: &fields::Batch,
    at: Option<Range<usize>>,
    state: &mut GpuState,
    now: Instant,
    detail: bool,
) {
    let links = [
        (
            &PCIE_LINK_GENERATION,
            g.get(
                "nvmlDeviceGetCurrPcieLinkGeneration",
                dev.current_pcie_link_gen(),
            ),
        ),
        (
            &PCIE_LINK_MAX_GENERATION,
            g.get(
                "nvmlDeviceGetMaxPcieLinkGeneration",
                dev.max_pcie_link_gen(),
            ),
        ),
        (
            &PCIE_LINK_WIDTH,
            g.get(
                "nvmlDeviceGetCurrPcieLinkWidth",
                dev.current_pcie_link_width(),
            ),
        ),
        (
            &PCIE_LINK_MAX_WIDTH,
            g.get("nvmlDeviceGetMaxPcieLinkWidth", dev.max_pcie_link_width()),
        ),
    ];
    if let (Some(cur), Some(max)) = (links[0].1, links[1].1) {
        g.health.pcie_gen = Some((cur, max));
    }
    if let (Some(cur), Some(max)) = (links[2].1, links[3].1) {
        g.health.pcie_width = Some((cur, max));
    }
    for (def, v) in links {
        if let Some(v) = v {
            g.add(def, f64::from(v));
        }
    }
    // Throughput from the byte counters where the driver has them (two
    // fields of the sample's one field-values call); nvmlDeviceGetPcieThroughput
    // instead measures for 20 ms inside the call, 42 ms a GPU per sample on
    // an H100.
    let counters = match at.map(|at| batch.get(&at)) {
        None => None,
        Some(r) => match r {
            Ok([Ok(tx), Ok(rx)]) => {
                state.pcie_counters = Some(true);
                Some((*tx, *rx))
            }
            Err(raw::GPU_IS_LOST) | Ok([Err(raw::GPU_IS_LOST), ..]) => {
                g.lost = true;
                return;
            }
            Ok(_) | Err(raw::NOT_SUPPORTED | raw::NOT_FOUND) => {
                g.unsupported("nvmlDeviceGetFieldValues(PCIE_COUNT_TX/RX_BYTES)");
                state.pcie_counters = Some(false);
                None
            }
            Err(code) => {
                g.get_raw::<()>(
                    "nvmlDeviceGetFieldValues(PCIE_COUNT_TX/RX_BYTES)",
                    Err(code),
                );
                None
            }
        },
    };
    if let Some((tx, rx)) = counters {
        g.add(&PCIE_TRANSMIT_BYTES, tx);
        g.add(&PCIE_RECEIVE_BYTES, rx);
        // The rates are the counters' rate(): exported next to them only
        // with --collector.gpu.detail (profile sets it, its summary reads
        // the rates between samples).
        state.pcie_rates = None;
        if let Some((t0, tx0, rx0)) = state.pcie_prev {
            let dt = now.duration_since(t0).as_secs_f64();
            if dt > 0.0 && tx >= tx0 && rx >= rx0 {
                state.pcie_rates = Some(((tx - tx0) / dt, (rx - rx0) / dt));
            }
        }
        state.pcie_prev = Some((now, tx, rx));
        if let (true, Some((t, r))) = (detail, state.pcie_rates) {
            g.add(&PCIE_TRANSMIT_BYTES_PER_SECOND, t);
            g.add(&PCIE_RECEIVE_BYTES_PER_SECOND, r);
        }
    } else if state.pcie_counters == Some(true) {
        // Between counter reads: the last reading, and its rates.
        if let Some((_, tx, rx)) = state.pcie_prev {
            g.add(&PCIE_TRANSMIT_BYTES, tx);
            g.add(&PCIE_RECEIVE_BYTES, rx);
        }
        if let (true, Some((t, r))) = (detail, state.pcie_rates) {
            g.add(&PCIE_TRANSMIT_BYTES_PER_SECOND, t);
            g.add(&PCIE_RECEIVE_BYTES_PER_SECOND, r);
        }
    } else {
        if let Some(kb) = g.get(
            "nvmlDeviceGetPcieThroughput",
            dev.pcie_throughput(PcieUtilCounter::Send),
        ) {
            g.add(&PCIE_TRANSMIT_BYTES_PER_SECOND, f64::from(kb) * 1024.0);
        }
        if let Some(kb) = g.get(
            "nvmlDeviceGetPcieThroughput",
            dev.pcie_throughput(PcieUtilCounter::Receive),
        ) {
            g.add(&PCIE_RECEIVE_BYTES_PER_SECOND, f64::from(kb) * 1024.0);
        }
    }
    if let Some(n) = g.get("nvmlDeviceGetPcieReplayCounter", dev.pcie_replay_counter()) {
        g.add(&PCIE_REPLAY_ERRORS, f64::from(n));
    }
}
