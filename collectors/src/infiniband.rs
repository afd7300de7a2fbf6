//! `accel_infiniband_*`: InfiniBand and RoCE ports from
//! /sys/class/infiniband/<device>/ports/<port>, named as node_exporter's
//! infiniband collector (`node_infiniband_*`), plus the RoCE `hw_counters`.
//!
//! `port_rcv_data` and `port_xmit_data` count 4-octet words. node_exporter
//! multiplies them by 4 in uint64, which wraps for counters above 2^62; we
//! multiply in f64, which does not.

use std::path::{Path, PathBuf};

use crate::options::{options, NoOptions};
use crate::util::{io_error, parse_u64, read_attr};
use crate::{
    BuildContext, Built, CollectError, Collector, ErrorKind, FamilyDef, Sample, Spec, HOST_INTERVAL,
};

/// Identity of each HCA.
pub const INFO: FamilyDef = FamilyDef::gauge(
    "accel_infiniband_info",
    "Non-numeric data from /sys/class/infiniband/<device>, value is always 1.",
)
.labels(&["board_id", "device", "firmware_version", "hca_type"])
.doc("always 1")
.source("`<device>/{board_id,fw_ver,hca_type}`; `collectors/src/infiniband.rs`")
.equivalent("`node_infiniband_info`");

/// Logical port state.
pub const STATE: FamilyDef = FamilyDef::gauge(
    "accel_infiniband_state_id",
    "State of the InfiniBand port (0: no change, 1: down, 2: init, 3: armed, 4: active, 5: act defer)",
)
.labels(&["device", "port"])
.doc("logical port state: 0 no change, 1 down, 2 init, 3 armed, 4 active, 5 act defer")
.source("`ports/<port>/state` (`4: ACTIVE` → 4); `collectors/src/infiniband.rs`")
.equivalent("`node_infiniband_state_id`");

/// Physical port state.
pub const PHYSICAL_STATE: FamilyDef = FamilyDef::gauge(
    "accel_infiniband_physical_state_id",
    "Physical state of the InfiniBand port (0: no change, 1: sleep, 2: polling, 3: disable, 4: shift, 5: link up, 6: link error recover, 7: phytest)",
)
.labels(&["device", "port"])
.doc("physical state: 0 no change, 1 sleep, 2 polling, 3 disabled, 4 shift, 5 link up, 6 link error recovery, 7 phytest")
.source("`ports/<port>/phys_state`; `collectors/src/infiniband.rs`")
.equivalent("`node_infiniband_physical_state_id`");

/// Signalling rate.
pub const RATE: FamilyDef = FamilyDef::gauge(
    "accel_infiniband_rate_bytes_per_second",
    "Maximum signal transfer rate",
)
.labels(&["device", "port"])
.doc("signalling rate, bytes/s (`200 Gb/sec (4X HDR)` → 200 × 10^9 / 8)")
.source("`ports/<port>/rate`; `collectors/src/infiniband.rs`")
.equivalent("`node_infiniband_rate_bytes_per_second`");

/// `counters/excessive_buffer_overrun_errors`.
pub const EXCESSIVE_BUFFER_OVERRUN_ERRORS: FamilyDef = FamilyDef::counter(
    "accel_infiniband_excessive_buffer_overrun_errors_total",
    "Number of times that OverrunErrors consecutive flow control update periods occurred, each having at least one overrun error.",
)
.labels(&["device", "port"])
.doc("times OverrunErrors consecutive flow-control update periods each had an overrun")
.source("`counters/excessive_buffer_overrun_errors`; `collectors/src/infiniband.rs`")
.equivalent("`node_infiniband_excessive_buffer_overrun_errors_total`");

/// `counters/link_downed`.
pub const LINK_DOWNED: FamilyDef = FamilyDef::counter(
    "accel_infiniband_link_downed_total",
    "Number of times the link failed to recover from an error state and went down",
)
.labels(&["device", "port"])
.doc("times the link failed error recovery and went down")
.source("`counters/link_downed`; `collectors/src/infiniband.rs`")
.equivalent("`node_infiniband_link_downed_total`");

/// `counters/link_error_recovery`.
pub const LINK_ERROR_RECOVERY: FamilyDef = FamilyDef::counter(
    "accel_infiniband_link_error_recovery_total",
    "Number of times the link successfully recovered from an error state",
)
.labels(&["device", "port"])
.doc("times the link recovered from an error state")
.source("`counters/link_error_recovery`; `collectors/src/infiniband.rs`")
.equivalent("`node_infiniband_link_error_recovery_total`");

/// `counters/local_link_integrity_errors`.
pub const LOCAL_LINK_INTEGRITY_ERRORS: FamilyDef = FamilyDef::counter(
    "accel_infiniband_local_link_integrity_errors_total",
    "Number of times that the count of local physical errors exceeded the threshold specified by LocalPhyErrors.",
)
.labels(&["device", "port"])
.doc("times local physical errors exceeded LocalPhyErrors")
.source("`counters/local_link_integrity_errors`; `collectors/src/infiniband.rs`")
.equivalent("`node_infiniband_local_link_integrity_errors_total`");

/// `counters/multicast_rcv_packets`.
pub const MULTICAST_PACKETS_RECEIVED: FamilyDef = FamilyDef::counter(
    "accel_infiniband_multicast_packets_received_total",
    "Number of multicast packets received (including errors)",
)
.labels(&["device", "port"])
.doc("multicast packets received (including errors)")
.source("`counters/multicast_rcv_packets`; `collectors/src/infiniband.rs`")
.equivalent("`node_infiniband_multicast_packets_received_total`");

/// `counters/multicast_xmit_packets`.
pub const MULTICAST_PACKETS_TRANSMITTED: FamilyDef = FamilyDef::counter(
    "accel_infiniband_multicast_packets_transmitted_total",
    "Number of multicast packets transmitted (including errors)",
)
.labels(&["device", "port"])
.doc("multicast packets transmitted (including errors)")
.source("`counters/multicast_xmit_packets`; `collectors/src/infiniband.rs`")
.equivalent("`node_infiniband_multicast_packets_transmitted_total`");

/// `counters/port_rcv_constraint_errors`.
pub const PORT_CONSTRAINT_ERRORS_RECEIVED: FamilyDef = FamilyDef::counter(
    "accel_infiniband_port_constraint_errors_received_total",
    "Number of packets received on the switch physical port that are discarded",
)
.labels(&["device", "port"])
.doc("received packets discarded for constraint errors")
.source("`counters/port_rcv_constraint_errors`; `collectors/src/infiniband.rs`")
.equivalent("`node_infiniband_port_constraint_errors_received_total`");

/// `counters/port_xmit_constraint_errors`.
pub const PORT_CONSTRAINT_ERRORS_TRANSMITTED: FamilyDef = FamilyDef::counter(
    "accel_infiniband_port_constraint_errors_transmitted_total",
    "Number of packets not transmitted from the switch physical port",
)
.labels(&["device", "port"])
.doc("packets not transmitted for constraint errors")
.source("`counters/port_xmit_constraint_errors`; `collectors/src/infiniband.rs`")
.equivalent("`node_infiniband_port_constraint_errors_transmitted_total`");

/// `counters/port_rcv_data`, in 4-octet words.
pub const PORT_DATA_RECEIVED_BYTES: FamilyDef = FamilyDef::counter(
    "accel_infiniband_port_data_received_bytes_total",
    "Number of data octets received on all links",
)
.labels(&["device", "port"])
.doc("bytes received: the file counts 4-octet words, ×4 in f64")
.source("`counters/port_rcv_data`; `collectors/src/infiniband.rs`")
.equivalent("`node_infiniband_port_data_received_bytes_total` (wraps, see below)");

/// `counters/port_xmit_data`, in 4-octet words.
pub const PORT_DATA_TRANSMITTED_BYTES: FamilyDef = FamilyDef::counter(
    "accel_infiniband_port_data_transmitted_bytes_total",
    "Number of data octets transmitted on all links",
)
.labels(&["device", "port"])
.doc("bytes transmitted: 4-octet words ×4 in f64")
.source("`counters/port_xmit_data`; `collectors/src/infiniband.rs`")
.equivalent("`node_infiniband_port_data_transmitted_bytes_total` (wraps, see below)");

/// `counters/port_rcv_discards`.
pub const PORT_DISCARDS_RECEIVED: FamilyDef = FamilyDef::counter(
    "accel_infiniband_port_discards_received_total",
    "Number of inbound packets discarded by the port because the port is down or congested",
)
.labels(&["device", "port"])
.doc("inbound packets discarded (port down or congested)")
.source("`counters/port_rcv_discards`; `collectors/src/infiniband.rs`")
.equivalent("`node_infiniband_port_discards_received_total`");

/// `counters/port_xmit_discards`.
pub const PORT_DISCARDS_TRANSMITTED: FamilyDef = FamilyDef::counter(
    "accel_infiniband_port_discards_transmitted_total",
    "Number of outbound packets discarded by the port because the port is down or congested",
)
.labels(&["device", "port"])
.doc("outbound packets discarded (port down or congested)")
.source("`counters/port_xmit_discards`; `collectors/src/infiniband.rs`")
.equivalent("`node_infiniband_port_discards_transmitted_total`");

/// `counters/port_rcv_errors`.
pub const PORT_ERRORS_RECEIVED: FamilyDef = FamilyDef::counter(
    "accel_infiniband_port_errors_received_total",
    "Number of packets containing an error that were received on this port",
)
.labels(&["device", "port"])
.doc("received packets with an error")
.source("`counters/port_rcv_errors`; `collectors/src/infiniband.rs`")
.equivalent("`node_infiniband_port_errors_received_total`");

/// `counters/port_rcv_packets`.
pub const PORT_PACKETS_RECEIVED: FamilyDef = FamilyDef::counter(
    "accel_infiniband_port_packets_received_total",
    "Number of packets received on all VLs by this port (including errors)",
)
.labels(&["device", "port"])
.doc("packets received on all VLs (including errors)")
.source("`counters/port_rcv_packets`; `collectors/src/infiniband.rs`")
.equivalent("`node_infiniband_port_packets_received_total`");

/// `counters/port_xmit_packets`.
pub const PORT_PACKETS_TRANSMITTED: FamilyDef = FamilyDef::counter(
    "accel_infiniband_port_packets_transmitted_total",
    "Number of packets transmitted on all VLs from this port (including errors)",
)
.labels(&["device", "port"])
.doc("packets transmitted on all VLs (including errors)")
.source("`counters/port_xmit_packets`; `collectors/src/infiniband.rs`")
.equivalent("`node_infiniband_port_packets_transmitted_total`");

/// `counters/port_xmit_wait`.
pub const PORT_TRANSMIT_WAIT: FamilyDef = FamilyDef::counter(
    "accel_infiniband_port_transmit_wait_total",
    "Number of ticks during which the port had data to transmit but no data was sent during the entire tick",
)
.labels(&["device", "port"])
.doc("ticks with data to send but none sent (congestion)")
.source("`counters/port_xmit_wait`; `collectors/src/infiniband.rs`")
.equivalent("`node_infiniband_port_transmit_wait_total`");

/// `counters/port_rcv_remote_physical_errors`.
pub const PORT_RECEIVE_REMOTE_PHYSICAL_ERRORS: FamilyDef = FamilyDef::counter(
    "accel_infiniband_port_receive_remote_physical_errors_total",
    "Number of packets marked with the EBP (End of Bad Packet) delimiter received on the port.",
)
.labels(&["device", "port"])
.doc("packets received marked EBP (bad packet upstream)")
.source("`counters/port_rcv_remote_physical_errors`; `collectors/src/infiniband.rs`")
.equivalent("`node_infiniband_port_receive_remote_physical_errors_total`");

/// `counters/port_rcv_switch_relay_errors`.
pub const PORT_RECEIVE_SWITCH_RELAY_ERRORS: FamilyDef = FamilyDef::counter(
    "accel_infiniband_port_receive_switch_relay_errors_total",
    "Number of packets that could not be forwarded by the switch.",
)
.labels(&["device", "port"])
.doc("packets the switch could not forward")
.source("`counters/port_rcv_switch_relay_errors`; `collectors/src/infiniband.rs`")
.equivalent("`node_infiniband_port_receive_switch_relay_errors_total`");

/// `counters/symbol_error`.
pub const SYMBOL_ERROR: FamilyDef = FamilyDef::counter(
    "accel_infiniband_symbol_error_total",
    "Number of minor link errors detected on one or more physical lanes.",
)
.labels(&["device", "port"])
.doc("minor link errors on a physical lane")
.source("`counters/symbol_error`; `collectors/src/infiniband.rs`")
.equivalent("`node_infiniband_symbol_error_total`");

/// `counters/unicast_rcv_packets`.
pub const UNICAST_PACKETS_RECEIVED: FamilyDef = FamilyDef::counter(
    "accel_infiniband_unicast_packets_received_total",
    "Number of unicast packets received (including errors)",
)
.labels(&["device", "port"])
.doc("unicast packets received (including errors)")
.source("`counters/unicast_rcv_packets`; `collectors/src/infiniband.rs`")
.equivalent("`node_infiniband_unicast_packets_received_total`");

/// `counters/unicast_xmit_packets`.
pub const UNICAST_PACKETS_TRANSMITTED: FamilyDef = FamilyDef::counter(
    "accel_infiniband_unicast_packets_transmitted_total",
    "Number of unicast packets transmitted (including errors)",
)
.labels(&["device", "port"])
.doc("unicast packets transmitted (including errors)")
.source("`counters/unicast_xmit_packets`; `collectors/src/infiniband.rs`")
.equivalent("`node_infiniband_unicast_packets_transmitted_total`");

/// `counters/VL15_dropped`.
pub const VL15_DROPPED: FamilyDef = FamilyDef::counter(
    "accel_infiniband_vl15_dropped_total",
    "Number of incoming VL15 packets dropped",
)
.labels(&["device", "port"])
.doc("incoming VL15 (subnet management) packets dropped")
.source("`counters/VL15_dropped`; `collectors/src/infiniband.rs`")
.equivalent("`node_infiniband_vl15_dropped_total`");

/// Every file of `hw_counters/`, by name.
pub const HW_EVENTS: FamilyDef = FamilyDef::counter(
    "accel_infiniband_hw_events_total",
    "Port hardware counters (RoCE and vendor) from hw_counters/, by file name.",
)
.labels(&["device", "port", "counter"])
.doc("one series per file in `hw_counters/` (RoCE and vendor counters, e.g. `np_cnp_sent`, `rp_cnp_handled`, `np_ecn_marked_roce_packets`, `out_of_sequence`, `local_ack_timeout_err`); `counter` is the file name. `lifespan` (a refresh period, not a counter) is skipped. A file that does not parse is counted as a `parse` error and skipped; the rest of the sample is kept")
.source("`ports/<port>/hw_counters/<file>`; `collectors/src/infiniband.rs`")
.equivalent("none (node_exporter 1.5.0 does not read `hw_counters/`)");

/// Port counters: sysfs file under `counters/`, family, multiplier to base
/// units. VL15_dropped is upper-case in sysfs.
const COUNTERS: [(&str, &FamilyDef, f64); 22] = [
    (
        "excessive_buffer_overrun_errors",
        &EXCESSIVE_BUFFER_OVERRUN_ERRORS,
        1.0,
    ),
    ("link_downed", &LINK_DOWNED, 1.0),
    ("link_error_recovery", &LINK_ERROR_RECOVERY, 1.0),
    (
        "local_link_integrity_errors",
        &LOCAL_LINK_INTEGRITY_ERRORS,
        1.0,
    ),
    ("multicast_rcv_packets", &MULTICAST_PACKETS_RECEIVED, 1.0),
    (
        "multicast_xmit_packets",
        &MULTICAST_PACKETS_TRANSMITTED,
        1.0,
    ),
    (
        "port_rcv_constraint_errors",
        &PORT_CONSTRAINT_ERRORS_RECEIVED,
        1.0,
    ),
    (
        "port_xmit_constraint_errors",
        &PORT_CONSTRAINT_ERRORS_TRANSMITTED,
        1.0,
    ),
    ("port_rcv_data", &PORT_DATA_RECEIVED_BYTES, 4.0),
    ("port_xmit_data", &PORT_DATA_TRANSMITTED_BYTES, 4.0),
    ("port_rcv_discards", &PORT_DISCARDS_RECEIVED, 1.0),
    ("port_xmit_discards", &PORT_DISCARDS_TRANSMITTED, 1.0),
    ("port_rcv_errors", &PORT_ERRORS_RECEIVED, 1.0),
    ("port_rcv_packets", &PORT_PACKETS_RECEIVED, 1.0),
    ("port_xmit_packets", &PORT_PACKETS_TRANSMITTED, 1.0),
    ("port_xmit_wait", &PORT_TRANSMIT_WAIT, 1.0),
    (
        "port_rcv_remote_physical_errors",
        &PORT_RECEIVE_REMOTE_PHYSICAL_ERRORS,
        1.0,
    ),
    (
        "port_rcv_switch_relay_errors",
        &PORT_RECEIVE_SWITCH_RELAY_ERRORS,
        1.0,
    ),
    ("symbol_error", &SYMBOL_ERROR, 1.0),
    ("unicast_rcv_packets", &UNICAST_PACKETS_RECEIVED, 1.0),
    ("unicast_xmit_packets", &UNICAST_PACKETS_TRANSMITTED, 1.0),
    ("VL15_dropped", &VL15_DROPPED, 1.0),
];

/// The InfiniBand collector.
pub struct Infiniband {
    root: PathBuf,
}

/// The infiniband collector's registry entry.
pub const SPEC: Spec = Spec {
    name: "infiniband",
    help: "InfiniBand and RoCE port counters, from /sys/class/infiniband",
    default_enabled: true,
    default_interval: HOST_INTERVAL,
    options: options::<NoOptions>(),
    detail: "",
    families: FAMILIES,
    prefixes: &["accel_infiniband_"],
    outside: &[],
    build,
};

/// Every family this collector exports.
pub const FAMILIES: &[FamilyDef] = &[
    INFO,
    STATE,
    PHYSICAL_STATE,
    RATE,
    EXCESSIVE_BUFFER_OVERRUN_ERRORS,
    LINK_DOWNED,
    LINK_ERROR_RECOVERY,
    LOCAL_LINK_INTEGRITY_ERRORS,
    MULTICAST_PACKETS_RECEIVED,
    MULTICAST_PACKETS_TRANSMITTED,
    PORT_CONSTRAINT_ERRORS_RECEIVED,
    PORT_CONSTRAINT_ERRORS_TRANSMITTED,
    PORT_DATA_RECEIVED_BYTES,
    PORT_DATA_TRANSMITTED_BYTES,
    PORT_DISCARDS_RECEIVED,
    PORT_DISCARDS_TRANSMITTED,
    PORT_ERRORS_RECEIVED,
    PORT_PACKETS_RECEIVED,
    PORT_PACKETS_TRANSMITTED,
    PORT_TRANSMIT_WAIT,
    PORT_RECEIVE_REMOTE_PHYSICAL_ERRORS,
    PORT_RECEIVE_SWITCH_RELAY_ERRORS,
    SYMBOL_ERROR,
    UNICAST_PACKETS_RECEIVED,
    UNICAST_PACKETS_TRANSMITTED,
    VL15_DROPPED,
    HW_EVENTS,
];

/// Builds the collector; absent without /sys/class/infiniband.
fn build(ctx: &BuildContext) -> Result<Built, CollectError> {
    let opts = ctx.paths;
    let root = opts.sysfs.join("class/infiniband");
    if root.is_dir() {
        Ok(Built::Ready(Box::new(Infiniband { root })))
    } else {
        Ok(Built::Absent(format!("no {}", root.display())))
    }
}

/// Reads a directory's entry names, sorted.
fn list(dir: &Path) -> Result<Vec<String>, CollectError> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(|e| io_error(dir, &e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

/// `"4: ACTIVE"` to 4.
pub fn parse_state(s: &str) -> Result<u64, CollectError> {
    let id = s.split(':').next().unwrap_or_default().trim();
    parse_u64(id, &"infiniband state")
}

/// `"200 Gb/sec (4X HDR)"` to bytes per second.
pub fn parse_rate(s: &str) -> Result<f64, CollectError> {
    let mut f = s.split_ascii_whitespace();
    let (Some(v), Some(unit)) = (f.next(), f.next()) else {
        return Err(CollectError::parse(format!("infiniband rate {s:?}")));
    };
    let v: f64 = v
        .parse()
        .map_err(|_| CollectError::parse(format!("infiniband rate {s:?}")))?;
    let rate = v * 1e9 / 8.0;
    if !rate.is_finite() || rate < 0.0 || unit != "Gb/sec" {
        return Err(CollectError::parse(format!("infiniband rate {s:?}")));
    }
    Ok(rate)
}

/// A counter file's value: `None` for `N/A (no PMA)`, which HCAs without a
/// performance management agent write for counters they do not keep.
pub fn parse_counter(s: &str, path: &Path) -> Result<Option<u64>, CollectError> {
    if s.starts_with("N/A") {
        return Ok(None);
    }
    parse_u64(s, &path.display()).map(Some)
}

impl Infiniband {
    fn sample_port(
        &self,
        out: &mut Sample,
        device: &str,
        port: &str,
        dir: &Path,
    ) -> Result<(), CollectError> {
        let labels = [("device", device), ("port", port)];
        if let Some(s) = read_attr(&dir.join("state"))? {
            out.add(&STATE).add(&labels, parse_state(&s)? as f64);
        }
        if let Some(s) = read_attr(&dir.join("phys_state"))? {
            out.add(&PHYSICAL_STATE)
                .add(&labels, parse_state(&s)? as f64);
        }
        if let Some(s) = read_attr(&dir.join("rate"))? {
            out.add(&RATE).add(&labels, parse_rate(&s)?);
        }
        let counters = dir.join("counters");
        if counters.is_dir() {
            for (file, family, mult) in COUNTERS {
                let path = counters.join(file);
                let Some(text) = read_attr(&path)? else {
                    continue;
                };
                if let Some(v) = parse_counter(&text, &path)? {
                    out.add(family).add(&labels, v as f64 * mult);
                }
            }
        }
        // RoCE and vendor counters: one family, the file name as a label.
        let hw = dir.join("hw_counters");
        if hw.is_dir() {
            for file in list(&hw)? {
                if file == "lifespan" {
                    continue; // the refresh period in ms, not a counter
                }
                let path = hw.join(&file);
                let Some(text) = read_attr(&path)? else {
                    continue;
                };
                match parse_counter(&text, &path) {
                    Ok(Some(v)) => {
                        out.add(&HW_EVENTS).add(
                            &[("device", device), ("port", port), ("counter", &file)],
                            v as f64,
                        );
                    }
                    Ok(None) => {}
                    Err(e) => out.error(e),
                }
            }
        }
        Ok(())
    }
}

impl Collector for Infiniband {
    fn name(&self) -> &'static str {
        "infiniband"
    }

    fn sample(&mut self, out: &mut Sample) -> Result<(), CollectError> {
        for device in list(&self.root)? {
            let dir = self.root.join(&device);
            let attr = |f: &str| read_attr(&dir.join(f)).map(Option::unwrap_or_default);
            out.add(&INFO).add(
                &[
                    ("board_id", &attr("board_id")?),
                    ("device", &device),
                    ("firmware_version", &attr("fw_ver")?),
                    ("hca_type", &attr("hca_type")?),
                ],
                1.0,
            );
            let ports = dir.join("ports");
            let ports = match list(&ports) {
                Ok(p) => p,
                Err(e) if e.kind == ErrorKind::Io && !ports.exists() => continue,
                Err(e) => return Err(e),
            };
            for port in ports {
                let pdir = dir.join("ports").join(&port);
                self.sample_port(out, &device, &port, &pdir)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_state_and_rate() {
        assert_eq!(parse_state("4: ACTIVE").unwrap(), 4);
        assert_eq!(parse_rate("200 Gb/sec (4X HDR)").unwrap(), 25e9);
        assert_eq!(parse_rate("2.5 Gb/sec (1X SDR)").unwrap(), 312_500_000.0);
        assert!(parse_rate("fast").is_err());
        assert!(parse_state("ACTIVE").is_err());
    }

    #[test]
    fn no_pma_is_skipped() {
        let p = Path::new("x");
        assert_eq!(parse_counter("N/A (no PMA)", p).unwrap(), None);
        assert_eq!(parse_counter("17", p).unwrap(), Some(17));
        assert!(parse_counter("-3", p).is_err());
    }

    #[test]
    fn large_data_counter_does_not_wrap() {
        // 2^62 words: node_exporter's uint64 multiply gives 0.
        let words = 1u64 << 62;
        assert_eq!(words as f64 * 4.0, 2f64.powi(64));
    }
}
