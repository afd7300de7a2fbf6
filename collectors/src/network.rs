//! `accel_network_*`: per-interface traffic from /proc/net/dev and link
//! state from /sys/class/net, named as node_exporter's netdev and netclass
//! collectors (`node_network_*`).

use std::path::{Path, PathBuf};

use crate::options::{options, parse_regex};
use crate::util::{parse_u64, read_attr, read_to_string};
use crate::{
    BuildContext, Built, CollectError, Collector, DeviceFilter, FamilyDef, Sample, Spec,
    HOST_INTERVAL,
};

/// Loopback is left out by default, as Debian's node_exporter does: its
/// traffic says nothing about a training node's network.
pub const DEFAULT_EXCLUDE: &str = "^lo$";

/// The /proc/net/dev columns, in kernel order, as metric name parts.
const COLUMNS: [&str; 16] = [
    "receive_bytes",
    "receive_packets",
    "receive_errs",
    "receive_drop",
    "receive_fifo",
    "receive_frame",
    "receive_compressed",
    "receive_multicast",
    "transmit_bytes",
    "transmit_packets",
    "transmit_errs",
    "transmit_drop",
    "transmit_fifo",
    "transmit_colls",
    "transmit_carrier",
    "transmit_compressed",
];

/// Parses /proc/net/dev into (interface, 16 counters).
pub fn parse_net_dev(text: &str) -> Result<Vec<(&str, [u64; 16])>, CollectError> {
    let mut out = Vec::new();
    // Two header lines, then one line per interface: `name: 16 numbers`.
    for line in text.lines().skip(2).filter(|l| !l.trim().is_empty()) {
        let (name, rest) = line
            .rsplit_once(':')
            .ok_or_else(|| CollectError::parse(format!("net/dev: no colon in {line:?}")))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(CollectError::parse(format!(
                "net/dev: no interface name in {line:?}"
            )));
        }
        let mut values = [0u64; 16];
        let mut fields = rest.split_ascii_whitespace();
        for (i, v) in values.iter_mut().enumerate() {
            let f = fields.next().ok_or_else(|| {
                CollectError::parse(format!("net/dev: {name} has {i} counters, want 16"))
            })?;
            *v = parse_u64(f, &format_args!("net/dev {name}"))?;
        }
        out.push((name, values));
    }
    Ok(out)
}

/// The network collector.
pub struct Network {
    net_dev: PathBuf,
    class_net: PathBuf,
    filter: DeviceFilter,
}

/// The network collector's options.
#[derive(clap::Args, Clone, Debug, PartialEq)]
pub struct NetworkOptions {
    /// Interfaces to report, when set (wins over the exclude).
    #[arg(
        id = "collector.network.device-include",
        long = "collector.network.device-include",
        value_name = "REGEX",
        help = "Regexp of network interfaces to include (overrides the exclude).",
        value_parser = parse_regex
    )]
    pub device_include: Option<String>,
    /// Interfaces not to report.
    #[arg(
        id = "collector.network.device-exclude",
        long = "collector.network.device-exclude",
        value_name = "REGEX",
        help = "Regexp of network interfaces to exclude.",
        default_value = DEFAULT_EXCLUDE,
        value_parser = parse_regex
    )]
    pub device_exclude: String,
}

/// The network collector's registry entry.
pub const SPEC: Spec = Spec {
    name: "network",
    help: "network interface traffic and link state, from /proc/net/dev and /sys/class/net",
    default_enabled: true,
    default_interval: HOST_INTERVAL,
    options: options::<NetworkOptions>(),
    families: FAMILIES,
    prefixes: &["accel_network_"],
    outside: &[],
    build,
};

/// Every family this collector exports.
pub const FAMILIES: &[FamilyDef] = &[];

/// Builds the collector.
fn build(ctx: &BuildContext) -> Result<Built, CollectError> {
    let (opts, o) = (ctx.paths, ctx.options::<NetworkOptions>());
    let filter = DeviceFilter::new(o.device_include.as_deref(), Some(&o.device_exclude))
        .map_err(|e| CollectError::parse(e.to_string()))?;
    Ok(Built::Ready(Box::new(Network {
        net_dev: opts.procfs.join("net/dev"),
        class_net: opts.sysfs.join("class/net"),
        filter,
    })))
}

/// sysfs attributes exported as plain gauges: file, family suffix, help.
const CLASS_GAUGES: [(&str, &str, &str); 11] = [
    (
        "addr_assign_type",
        "address_assign_type",
        "Network device property: address_assign_type",
    ),
    ("carrier", "carrier", "Network device property: carrier"),
    ("dev_id", "device_id", "Network device property: device_id"),
    ("dormant", "dormant", "Network device property: dormant"),
    ("flags", "flags", "Network device property: flags"),
    ("ifindex", "iface_id", "Network device property: iface_id"),
    (
        "iflink",
        "iface_link",
        "Network device property: iface_link",
    ),
    (
        "link_mode",
        "iface_link_mode",
        "Network device property: iface_link_mode",
    ),
    (
        "name_assign_type",
        "name_assign_type",
        "Network device property: name_assign_type",
    ),
    (
        "netdev_group",
        "net_dev_group",
        "Network device property: net_dev_group",
    ),
    (
        "type",
        "protocol_type",
        "Network device property: protocol_type",
    ),
];

/// sysfs counters: file, family, help.
const CLASS_COUNTERS: [(&str, &str, &str); 3] = [
    (
        "carrier_changes",
        "carrier_changes_total",
        "Network device property: carrier_changes_total",
    ),
    (
        "carrier_up_count",
        "carrier_up_changes_total",
        "Network device property: carrier_up_changes_total",
    ),
    (
        "carrier_down_count",
        "carrier_down_changes_total",
        "Network device property: carrier_down_changes_total",
    ),
];

/// Parses a sysfs number: decimal, or hex with `0x` (flags).
fn sysfs_number(s: &str, path: &Path) -> Result<f64, CollectError> {
    let v = match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok().map(|v| v as f64),
        None => s.parse::<i64>().ok().map(|v| v as f64),
    };
    v.ok_or_else(|| CollectError::parse(format!("{}: {s:?} is not a number", path.display())))
}

impl Network {
    fn sample_class(&self, out: &mut Sample) -> Result<(), CollectError> {
        let entries = match std::fs::read_dir(&self.class_net) {
            Ok(e) => e,
            // No sysfs view of the network (a container): netdev alone.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(crate::util::io_error(&self.class_net, &e)),
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| self.filter.accepts(n))
            .collect();
        names.sort();
        for name in &names {
            let dir = self.class_net.join(name);
            // An empty attribute is as good as none (node_exporter reads it as 0).
            let attr = |file: &str| read_attr(&dir.join(file)).map(|v| v.filter(|v| !v.is_empty()));
            let operstate = attr("operstate")?.unwrap_or_default();
            out.gauge(
                "accel_network_info",
                "Non-numeric data from /sys/class/net/<iface>, value is always 1.",
            )
            .add(
                &[
                    ("address", &attr("address")?.unwrap_or_default()),
                    ("broadcast", &attr("broadcast")?.unwrap_or_default()),
                    ("device", name),
                    ("duplex", &attr("duplex")?.unwrap_or_default()),
                    ("ifalias", &attr("ifalias")?.unwrap_or_default()),
                    ("operstate", &operstate),
                ],
                1.0,
            );
            out.gauge(
                "accel_network_up",
                "Value is 1 if operstate is 'up', 0 otherwise.",
            )
            .add(
                &[("device", name)],
                if operstate == "up" { 1.0 } else { 0.0 },
            );
            for (file, suffix, help) in CLASS_GAUGES {
                if let Some(v) = attr(file)? {
                    let v = sysfs_number(&v, &dir.join(file))?;
                    out.gauge(&format!("accel_network_{suffix}"), help)
                        .add(&[("device", name)], v);
                }
            }
            for (file, family, help) in CLASS_COUNTERS {
                if let Some(v) = attr(file)? {
                    let v = sysfs_number(&v, &dir.join(file))?;
                    out.counter(&format!("accel_network_{family}"), help)
                        .add(&[("device", name)], v);
                }
            }
            if let Some(v) = attr("mtu")? {
                let v = sysfs_number(&v, &dir.join("mtu"))?;
                out.gauge(
                    "accel_network_mtu_bytes",
                    "Network device property: mtu_bytes",
                )
                .add(&[("device", name)], v);
            }
            // speed is in Mbit/s; -1 (or EINVAL) when the link is down or the
            // driver does not know.
            if let Some(v) = attr("speed")? {
                let v = sysfs_number(&v, &dir.join("speed"))?;
                if v >= 0.0 {
                    out.gauge(
                        "accel_network_speed_bytes",
                        "Network device property: speed_bytes",
                    )
                    .add(&[("device", name)], v * 1_000_000.0 / 8.0);
                }
            }
            if let Some(v) = attr("tx_queue_len")? {
                let v = sysfs_number(&v, &dir.join("tx_queue_len"))?;
                out.gauge(
                    "accel_network_transmit_queue_length",
                    "Network device property: transmit_queue_length",
                )
                .add(&[("device", name)], v);
            }
        }
        Ok(())
    }
}

impl Collector for Network {
    fn name(&self) -> &'static str {
        "network"
    }

    fn sample(&mut self, out: &mut Sample) -> Result<(), CollectError> {
        let text = read_to_string(&self.net_dev)?;
        let devs = parse_net_dev(&text)?;
        for (i, column) in COLUMNS.iter().enumerate() {
            let name = format!("accel_network_{column}_total");
            let help = format!("Network device statistic {column}.");
            let family = out.counter(&name, &help);
            for (dev, values) in devs.iter().filter(|(d, _)| self.filter.accepts(d)) {
                family.add(&[("device", dev)], values[i] as f64);
            }
        }
        self.sample_class(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV: &str = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n";

    #[test]
    fn parses_dotted_names_and_huge_counters() {
        let t = format!(
            "{DEV}eth0.100: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\nverylongname0:18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
        );
        let d = parse_net_dev(&t).unwrap();
        assert_eq!(d[0].0, "eth0.100");
        assert_eq!(d[0].1[15], 16);
        assert_eq!(d[1].0, "verylongname0");
        assert_eq!(d[1].1[0], u64::MAX);
    }

    #[test]
    fn rejects_short_and_garbage() {
        for bad in [
            "eth0: 1 2 3",
            "eth0 1 2",
            ": 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16",
            "eth0: x 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16",
        ] {
            assert!(parse_net_dev(&format!("{DEV}{bad}\n")).is_err(), "{bad}");
        }
    }
}
