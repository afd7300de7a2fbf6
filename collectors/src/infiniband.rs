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

/// Port counters: sysfs file, family (without prefix), help, multiplier.
const COUNTERS: [(&str, &str, &str, f64); 21] = [
    ("excessive_buffer_overrun_errors", "excessive_buffer_overrun_errors_total", "Number of times that OverrunErrors consecutive flow control update periods occurred, each having at least one overrun error.", 1.0),
    ("link_downed", "link_downed_total", "Number of times the link failed to recover from an error state and went down", 1.0),
    ("link_error_recovery", "link_error_recovery_total", "Number of times the link successfully recovered from an error state", 1.0),
    ("local_link_integrity_errors", "local_link_integrity_errors_total", "Number of times that the count of local physical errors exceeded the threshold specified by LocalPhyErrors.", 1.0),
    ("multicast_rcv_packets", "multicast_packets_received_total", "Number of multicast packets received (including errors)", 1.0),
    ("multicast_xmit_packets", "multicast_packets_transmitted_total", "Number of multicast packets transmitted (including errors)", 1.0),
    ("port_rcv_constraint_errors", "port_constraint_errors_received_total", "Number of packets received on the switch physical port that are discarded", 1.0),
    ("port_xmit_constraint_errors", "port_constraint_errors_transmitted_total", "Number of packets not transmitted from the switch physical port", 1.0),
    ("port_rcv_data", "port_data_received_bytes_total", "Number of data octets received on all links", 4.0),
    ("port_xmit_data", "port_data_transmitted_bytes_total", "Number of data octets transmitted on all links", 4.0),
    ("port_rcv_discards", "port_discards_received_total", "Number of inbound packets discarded by the port because the port is down or congested", 1.0),
    ("port_xmit_discards", "port_discards_transmitted_total", "Number of outbound packets discarded by the port because the port is down or congested", 1.0),
    ("port_rcv_errors", "port_errors_received_total", "Number of packets containing an error that were received on this port", 1.0),
    ("port_rcv_packets", "port_packets_received_total", "Number of packets received on all VLs by this port (including errors)", 1.0),
    ("port_xmit_packets", "port_packets_transmitted_total", "Number of packets transmitted on all VLs from this port (including errors)", 1.0),
    ("port_xmit_wait", "port_transmit_wait_total", "Number of ticks during which the port had data to transmit but no data was sent during the entire tick", 1.0),
    ("port_rcv_remote_physical_errors", "port_receive_remote_physical_errors_total", "Number of packets marked with the EBP (End of Bad Packet) delimiter received on the port.", 1.0),
    ("port_rcv_switch_relay_errors", "port_receive_switch_relay_errors_total", "Number of packets that could not be forwarded by the switch.", 1.0),
    ("symbol_error", "symbol_error_total", "Number of minor link errors detected on one or more physical lanes.", 1.0),
    ("unicast_rcv_packets", "unicast_packets_received_total", "Number of unicast packets received (including errors)", 1.0),
    ("unicast_xmit_packets", "unicast_packets_transmitted_total", "Number of unicast packets transmitted (including errors)", 1.0),
];

/// VL15_dropped is upper-case in sysfs.
const VL15: (&str, &str, &str) = (
    "VL15_dropped",
    "vl15_dropped_total",
    "Number of incoming VL15 packets dropped",
);

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
    families: FAMILIES,
    prefixes: &["accel_infiniband_"],
    outside: &[],
    build,
};

/// Every family this collector exports.
pub const FAMILIES: &[FamilyDef] = &[];

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
            out.gauge("accel_infiniband_state_id", "State of the InfiniBand port (0: no change, 1: down, 2: init, 3: armed, 4: active, 5: act defer)")
                .add(&labels, parse_state(&s)? as f64);
        }
        if let Some(s) = read_attr(&dir.join("phys_state"))? {
            out.gauge("accel_infiniband_physical_state_id", "Physical state of the InfiniBand port (0: no change, 1: sleep, 2: polling, 3: disable, 4: shift, 5: link up, 6: link error recover, 7: phytest)")
                .add(&labels, parse_state(&s)? as f64);
        }
        if let Some(s) = read_attr(&dir.join("rate"))? {
            out.gauge(
                "accel_infiniband_rate_bytes_per_second",
                "Maximum signal transfer rate",
            )
            .add(&labels, parse_rate(&s)?);
        }
        let counters = dir.join("counters");
        if counters.is_dir() {
            let all = COUNTERS
                .iter()
                .map(|(f, n, h, m)| (*f, *n, *h, *m))
                .chain([(VL15.0, VL15.1, VL15.2, 1.0)]);
            for (file, family, help, mult) in all {
                let path = counters.join(file);
                let Some(text) = read_attr(&path)? else {
                    continue;
                };
                if let Some(v) = parse_counter(&text, &path)? {
                    out.counter(&format!("accel_infiniband_{family}"), help)
                        .add(&labels, v as f64 * mult);
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
                        out.counter("accel_infiniband_hw_events_total", "Port hardware counters (RoCE and vendor) from hw_counters/, by file name.")
                            .add(&[("device", device), ("port", port), ("counter", &file)], v as f64);
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
            out.gauge(
                "accel_infiniband_info",
                "Non-numeric data from /sys/class/infiniband/<device>, value is always 1.",
            )
            .add(
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
