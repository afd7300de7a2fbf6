//! `accel_network_*`: per-interface traffic from /proc/net/dev and link
//! state from /sys/class/net, named as node_exporter's netdev and netclass
//! collectors (`node_network_*`).
//!
//! The traffic table is `<procfs>/1/net/dev`, PID 1's network namespace,
//! else `<procfs>/net/dev` (the agent's own): the same on a host, and the
//! node's interfaces, not the pod's, in a container that shares the host's
//! PID namespace (the Kubernetes DaemonSet: `hostPID`, no `hostNetwork`).
//! `/proc/PID/net` needs no privilege. Link state is read under
//! `--path.sysfs`, which in such a container is the host's `/sys` mounted
//! (a container's own sysfs lists only its own interfaces).

use std::path::{Path, PathBuf};

use crate::options::options;
use crate::util::{parse_u64, read_attr, read_to_string};
use crate::{
    BuildContext, Built, CollectError, Collector, DeviceFilter, FamilyDef, Sample, Spec,
    HOST_INTERVAL,
};

/// Loopback is left out by default, as Debian's node_exporter does: its
/// traffic says nothing about a training node's network.
pub const DEFAULT_EXCLUDE: &str = "^lo$";

/// /proc/net/dev column 1.
pub const RECEIVE_BYTES: FamilyDef = FamilyDef::counter(
    "accel_network_receive_bytes_total",
    "Network device statistic receive_bytes.",
)
.labels(&["device"])
.doc("bytes received")
.source("`/proc/net/dev` column 1; `collectors/src/network.rs`")
.equivalent("`node_network_receive_bytes_total`");

/// /proc/net/dev column 2.
pub const RECEIVE_PACKETS: FamilyDef = FamilyDef::counter(
    "accel_network_receive_packets_total",
    "Network device statistic receive_packets.",
)
.labels(&["device"])
.doc("packets received")
.source("column 2; `collectors/src/network.rs`")
.equivalent("`node_network_receive_packets_total`");

/// /proc/net/dev column 3.
pub const RECEIVE_ERRS: FamilyDef = FamilyDef::counter(
    "accel_network_receive_errs_total",
    "Network device statistic receive_errs.",
)
.labels(&["device"])
.doc("receive errors")
.source("column 3; `collectors/src/network.rs`")
.equivalent("`node_network_receive_errs_total`");

/// /proc/net/dev column 4.
pub const RECEIVE_DROP: FamilyDef = FamilyDef::counter(
    "accel_network_receive_drop_total",
    "Network device statistic receive_drop.",
)
.labels(&["device"])
.doc("received packets dropped")
.source("column 4; `collectors/src/network.rs`")
.equivalent("`node_network_receive_drop_total`");

/// /proc/net/dev column 5.
pub const RECEIVE_FIFO: FamilyDef = FamilyDef::counter(
    "accel_network_receive_fifo_total",
    "Network device statistic receive_fifo.",
)
.labels(&["device"])
.doc("receive FIFO errors")
.source("column 5; `collectors/src/network.rs`")
.equivalent("`node_network_receive_fifo_total`")
.detail();

/// /proc/net/dev column 6.
pub const RECEIVE_FRAME: FamilyDef = FamilyDef::counter(
    "accel_network_receive_frame_total",
    "Network device statistic receive_frame.",
)
.labels(&["device"])
.doc("receive frame errors")
.source("column 6; `collectors/src/network.rs`")
.equivalent("`node_network_receive_frame_total`")
.detail();

/// /proc/net/dev column 7.
pub const RECEIVE_COMPRESSED: FamilyDef = FamilyDef::counter(
    "accel_network_receive_compressed_total",
    "Network device statistic receive_compressed.",
)
.labels(&["device"])
.doc("compressed packets received")
.source("column 7; `collectors/src/network.rs`")
.equivalent("`node_network_receive_compressed_total`")
.detail();

/// /proc/net/dev column 8.
pub const RECEIVE_MULTICAST: FamilyDef = FamilyDef::counter(
    "accel_network_receive_multicast_total",
    "Network device statistic receive_multicast.",
)
.labels(&["device"])
.doc("multicast packets received")
.source("column 8; `collectors/src/network.rs`")
.equivalent("`node_network_receive_multicast_total`")
.detail();

/// /proc/net/dev column 9.
pub const TRANSMIT_BYTES: FamilyDef = FamilyDef::counter(
    "accel_network_transmit_bytes_total",
    "Network device statistic transmit_bytes.",
)
.labels(&["device"])
.doc("bytes transmitted")
.source("column 9; `collectors/src/network.rs`")
.equivalent("`node_network_transmit_bytes_total`");

/// /proc/net/dev column 10.
pub const TRANSMIT_PACKETS: FamilyDef = FamilyDef::counter(
    "accel_network_transmit_packets_total",
    "Network device statistic transmit_packets.",
)
.labels(&["device"])
.doc("packets transmitted")
.source("column 10; `collectors/src/network.rs`")
.equivalent("`node_network_transmit_packets_total`");

/// /proc/net/dev column 11.
pub const TRANSMIT_ERRS: FamilyDef = FamilyDef::counter(
    "accel_network_transmit_errs_total",
    "Network device statistic transmit_errs.",
)
.labels(&["device"])
.doc("transmit errors")
.source("column 11; `collectors/src/network.rs`")
.equivalent("`node_network_transmit_errs_total`");

/// /proc/net/dev column 12.
pub const TRANSMIT_DROP: FamilyDef = FamilyDef::counter(
    "accel_network_transmit_drop_total",
    "Network device statistic transmit_drop.",
)
.labels(&["device"])
.doc("transmitted packets dropped")
.source("column 12; `collectors/src/network.rs`")
.equivalent("`node_network_transmit_drop_total`");

/// /proc/net/dev column 13.
pub const TRANSMIT_FIFO: FamilyDef = FamilyDef::counter(
    "accel_network_transmit_fifo_total",
    "Network device statistic transmit_fifo.",
)
.labels(&["device"])
.doc("transmit FIFO errors")
.source("column 13; `collectors/src/network.rs`")
.equivalent("`node_network_transmit_fifo_total`")
.detail();

/// /proc/net/dev column 14.
pub const TRANSMIT_COLLS: FamilyDef = FamilyDef::counter(
    "accel_network_transmit_colls_total",
    "Network device statistic transmit_colls.",
)
.labels(&["device"])
.doc("collisions")
.source("column 14; `collectors/src/network.rs`")
.equivalent("`node_network_transmit_colls_total`")
.detail();

/// /proc/net/dev column 15.
pub const TRANSMIT_CARRIER: FamilyDef = FamilyDef::counter(
    "accel_network_transmit_carrier_total",
    "Network device statistic transmit_carrier.",
)
.labels(&["device"])
.doc("carrier losses")
.source("column 15; `collectors/src/network.rs`")
.equivalent("`node_network_transmit_carrier_total`")
.detail();

/// /proc/net/dev column 16.
pub const TRANSMIT_COMPRESSED: FamilyDef = FamilyDef::counter(
    "accel_network_transmit_compressed_total",
    "Network device statistic transmit_compressed.",
)
.labels(&["device"])
.doc("compressed packets transmitted")
.source("column 16; `collectors/src/network.rs`")
.equivalent("`node_network_transmit_compressed_total`")
.detail();

/// The /proc/net/dev columns, in kernel order.
const NET_DEV: [&FamilyDef; 16] = [
    &RECEIVE_BYTES,
    &RECEIVE_PACKETS,
    &RECEIVE_ERRS,
    &RECEIVE_DROP,
    &RECEIVE_FIFO,
    &RECEIVE_FRAME,
    &RECEIVE_COMPRESSED,
    &RECEIVE_MULTICAST,
    &TRANSMIT_BYTES,
    &TRANSMIT_PACKETS,
    &TRANSMIT_ERRS,
    &TRANSMIT_DROP,
    &TRANSMIT_FIFO,
    &TRANSMIT_COLLS,
    &TRANSMIT_CARRIER,
    &TRANSMIT_COMPRESSED,
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
    /// `<procfs>/1/net/dev`, then `<procfs>/net/dev`.
    net_dev: [PathBuf; 2],
    class_net: PathBuf,
    filter: DeviceFilter,
    /// `--collector.network.detail`: every netclass attribute.
    detail: bool,
}

crate::device_filter_options!(
    /// The network collector's device filter.
    NetworkFilterOptions,
    "collector.network",
    "network interfaces",
    DEFAULT_EXCLUDE
);

/// The network collector's options.
#[derive(clap::Args, Clone, Debug, PartialEq)]
pub struct NetworkOptions {
    #[command(flatten)]
    pub filter: NetworkFilterOptions,
}

/// The network collector's registry entry.
pub const SPEC: Spec = Spec {
    name: "network",
    help: "network interface traffic and link state, from /proc/net/dev and /sys/class/net",
    default_enabled: true,
    default_interval: HOST_INTERVAL,
    options: options::<NetworkOptions>(),
    detail: "Also export what no shipped panel or alert reads, as node_exporter does: the rarer /proc/net/dev counters (receive fifo, frame, compressed, multicast; transmit fifo, colls, carrier, compressed) and the netclass attributes address_assign_type, device_id, dormant, flags, iface_id, iface_link, iface_link_mode, name_assign_type, net_dev_group, protocol_type, carrier_up/down_changes_total, transmit_queue_length (21 series per interface). By default: bytes, packets, errs and drop each way, info, up, carrier, carrier_changes_total, mtu_bytes, speed_bytes.",
    families: FAMILIES,
    prefixes: &["accel_network_"],
    outside: &[],
    build,
};

/// Every family this collector exports.
pub const FAMILIES: &[FamilyDef] = &[
    RECEIVE_BYTES,
    RECEIVE_PACKETS,
    RECEIVE_ERRS,
    RECEIVE_DROP,
    RECEIVE_FIFO,
    RECEIVE_FRAME,
    RECEIVE_COMPRESSED,
    RECEIVE_MULTICAST,
    TRANSMIT_BYTES,
    TRANSMIT_PACKETS,
    TRANSMIT_ERRS,
    TRANSMIT_DROP,
    TRANSMIT_FIFO,
    TRANSMIT_COLLS,
    TRANSMIT_CARRIER,
    TRANSMIT_COMPRESSED,
    INFO,
    UP,
    ADDRESS_ASSIGN_TYPE,
    CARRIER,
    DEVICE_ID,
    DORMANT,
    FLAGS,
    IFACE_ID,
    IFACE_LINK,
    IFACE_LINK_MODE,
    NAME_ASSIGN_TYPE,
    NET_DEV_GROUP,
    PROTOCOL_TYPE,
    CARRIER_CHANGES,
    CARRIER_UP_CHANGES,
    CARRIER_DOWN_CHANGES,
    MTU,
    TRANSMIT_QUEUE_LENGTH,
    SPEED,
];

/// Builds the collector.
fn build(ctx: &BuildContext) -> Result<Built, CollectError> {
    let (opts, o) = (ctx.paths, ctx.options::<NetworkOptions>());
    let filter = o.filter.filter()?;
    Ok(Built::Ready(Box::new(Network {
        net_dev: [opts.procfs.join("1/net/dev"), opts.procfs.join("net/dev")],
        class_net: opts.sysfs.join("class/net"),
        filter,
        detail: ctx.detail,
    })))
}

/// Non-numeric attributes of each interface.
pub const INFO: FamilyDef = FamilyDef::gauge(
    "accel_network_info",
    "Non-numeric data from /sys/class/net/<iface>, value is always 1.",
)
.labels(&["address", "broadcast", "device", "duplex", "ifalias", "operstate"])
.doc("always 1; labels are the sysfs files of the same name (`\"\"` when missing)")
.source("`/sys/class/net/<iface>/{address,broadcast,duplex,ifalias,operstate}`; `collectors/src/network.rs`")
.equivalent("`node_network_info`");

/// Whether operstate is up.
pub const UP: FamilyDef = FamilyDef::gauge(
    "accel_network_up",
    "Value is 1 if operstate is 'up', 0 otherwise.",
)
.labels(&["device"])
.doc("1 if `operstate` is `up`, else 0")
.source("`operstate`; `collectors/src/network.rs`")
.equivalent("`node_network_up`");

/// sysfs `addr_assign_type`.
pub const ADDRESS_ASSIGN_TYPE: FamilyDef = FamilyDef::gauge(
    "accel_network_address_assign_type",
    "Network device property: address_assign_type",
)
.labels(&["device"])
.doc("how the MAC address was assigned (kernel `NET_ADDR_*` code)")
.source("`addr_assign_type`; `collectors/src/network.rs`")
.equivalent("`node_network_address_assign_type`")
.detail();

/// sysfs `carrier`.
pub const CARRIER: FamilyDef =
    FamilyDef::gauge("accel_network_carrier", "Network device property: carrier")
        .labels(&["device"])
        .doc("1 when the physical link is up")
        .source("`carrier`; `collectors/src/network.rs`")
        .equivalent("`node_network_carrier`");

/// sysfs `dev_id`.
pub const DEVICE_ID: FamilyDef = FamilyDef::gauge(
    "accel_network_device_id",
    "Network device property: device_id",
)
.labels(&["device"])
.doc("device id among ports that share an address")
.source("`dev_id`; `collectors/src/network.rs`")
.equivalent("`node_network_device_id`")
.detail();

/// sysfs `dormant`.
pub const DORMANT: FamilyDef =
    FamilyDef::gauge("accel_network_dormant", "Network device property: dormant")
        .labels(&["device"])
        .doc("1 when dormant (RFC 2863)")
        .source("`dormant`; `collectors/src/network.rs`")
        .equivalent("`node_network_dormant`")
        .detail();

/// sysfs `flags`.
pub const FLAGS: FamilyDef =
    FamilyDef::gauge("accel_network_flags", "Network device property: flags")
        .labels(&["device"])
        .doc("interface flags (`IFF_*` bit mask)")
        .source("`flags`; `collectors/src/network.rs`")
        .equivalent("`node_network_flags`")
        .detail();

/// sysfs `ifindex`.
pub const IFACE_ID: FamilyDef = FamilyDef::gauge(
    "accel_network_iface_id",
    "Network device property: iface_id",
)
.labels(&["device"])
.doc("interface index")
.source("`ifindex`; `collectors/src/network.rs`")
.equivalent("`node_network_iface_id`")
.detail();

/// sysfs `iflink`.
pub const IFACE_LINK: FamilyDef = FamilyDef::gauge(
    "accel_network_iface_link",
    "Network device property: iface_link",
)
.labels(&["device"])
.doc("index of the underlying interface (self for a physical one)")
.source("`iflink`; `collectors/src/network.rs`")
.equivalent("`node_network_iface_link`")
.detail();

/// sysfs `link_mode`.
pub const IFACE_LINK_MODE: FamilyDef = FamilyDef::gauge(
    "accel_network_iface_link_mode",
    "Network device property: iface_link_mode",
)
.labels(&["device"])
.doc("link mode (`IF_LINK_MODE_*`: 0 default, 1 dormant, 2 testing)")
.source("`link_mode`; `collectors/src/network.rs`")
.equivalent("`node_network_iface_link_mode`")
.detail();

/// sysfs `name_assign_type`.
pub const NAME_ASSIGN_TYPE: FamilyDef = FamilyDef::gauge(
    "accel_network_name_assign_type",
    "Network device property: name_assign_type",
)
.labels(&["device"])
.doc("how the name was assigned (kernel `NET_NAME_*` code)")
.source("`name_assign_type`; `collectors/src/network.rs`")
.equivalent("`node_network_name_assign_type`")
.detail();

/// sysfs `netdev_group`.
pub const NET_DEV_GROUP: FamilyDef = FamilyDef::gauge(
    "accel_network_net_dev_group",
    "Network device property: net_dev_group",
)
.labels(&["device"])
.doc("interface group")
.source("`netdev_group`; `collectors/src/network.rs`")
.equivalent("`node_network_net_dev_group`")
.detail();

/// sysfs `type`.
pub const PROTOCOL_TYPE: FamilyDef = FamilyDef::gauge(
    "accel_network_protocol_type",
    "Network device property: protocol_type",
)
.labels(&["device"])
.doc("ARP hardware type (`ARPHRD_*`: 1 Ethernet, 32 InfiniBand, 772 loopback)")
.source("`type`; `collectors/src/network.rs`")
.equivalent("`node_network_protocol_type`")
.detail();

/// sysfs `carrier_changes`.
pub const CARRIER_CHANGES: FamilyDef = FamilyDef::counter(
    "accel_network_carrier_changes_total",
    "Network device property: carrier_changes_total",
)
.labels(&["device"])
.doc("carrier state changes")
.source("`carrier_changes`; `collectors/src/network.rs`")
.equivalent("`node_network_carrier_changes_total`");

/// sysfs `carrier_up_count`.
pub const CARRIER_UP_CHANGES: FamilyDef = FamilyDef::counter(
    "accel_network_carrier_up_changes_total",
    "Network device property: carrier_up_changes_total",
)
.labels(&["device"])
.doc("carrier up transitions")
.source("`carrier_up_count`; `collectors/src/network.rs`")
.equivalent("`node_network_carrier_up_changes_total`")
.detail();

/// sysfs `carrier_down_count`.
pub const CARRIER_DOWN_CHANGES: FamilyDef = FamilyDef::counter(
    "accel_network_carrier_down_changes_total",
    "Network device property: carrier_down_changes_total",
)
.labels(&["device"])
.doc("carrier down transitions")
.source("`carrier_down_count`; `collectors/src/network.rs`")
.equivalent("`node_network_carrier_down_changes_total`")
.detail();

/// sysfs `mtu`.
pub const MTU: FamilyDef = FamilyDef::gauge(
    "accel_network_mtu_bytes",
    "Network device property: mtu_bytes",
)
.labels(&["device"])
.doc("MTU, bytes")
.source("`mtu`; `collectors/src/network.rs`")
.equivalent("`node_network_mtu_bytes`");

/// sysfs `tx_queue_len`.
pub const TRANSMIT_QUEUE_LENGTH: FamilyDef = FamilyDef::gauge(
    "accel_network_transmit_queue_length",
    "Network device property: transmit_queue_length",
)
.labels(&["device"])
.doc("transmit queue length, packets")
.source("`tx_queue_len`; `collectors/src/network.rs`")
.equivalent("`node_network_transmit_queue_length`")
.detail();

/// sysfs `speed`, in bytes per second.
pub const SPEED: FamilyDef = FamilyDef::gauge(
    "accel_network_speed_bytes",
    "Network device property: speed_bytes",
)
.labels(&["device"])
.doc("link speed, bytes/s (`speed` Mbit/s × 125000). Left out when `speed` is negative (-1: link down or unknown)")
.source("`speed`; `collectors/src/network.rs`")
.equivalent("`node_network_speed_bytes` (which exports -125000 for -1)");

/// sysfs attributes exported as plain gauges by default: file and family.
const CLASS_GAUGES: [(&str, &FamilyDef); 1] = [("carrier", &CARRIER)];

/// sysfs counters exported by default: file and family.
const CLASS_COUNTERS: [(&str, &FamilyDef); 1] = [("carrier_changes", &CARRIER_CHANGES)];

/// The attributes only `--collector.network.detail` exports (no shipped
/// panel or alert reads them): file and family.
const DETAIL_ATTRIBUTES: [(&str, &FamilyDef); 13] = [
    ("addr_assign_type", &ADDRESS_ASSIGN_TYPE),
    ("dev_id", &DEVICE_ID),
    ("dormant", &DORMANT),
    ("flags", &FLAGS),
    ("ifindex", &IFACE_ID),
    ("iflink", &IFACE_LINK),
    ("link_mode", &IFACE_LINK_MODE),
    ("name_assign_type", &NAME_ASSIGN_TYPE),
    ("netdev_group", &NET_DEV_GROUP),
    ("type", &PROTOCOL_TYPE),
    ("carrier_up_count", &CARRIER_UP_CHANGES),
    ("carrier_down_count", &CARRIER_DOWN_CHANGES),
    ("tx_queue_len", &TRANSMIT_QUEUE_LENGTH),
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
            out.add(&INFO).add(
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
            out.add(&UP).add(
                &[("device", name)],
                if operstate == "up" { 1.0 } else { 0.0 },
            );
            let detail: &[(&str, &FamilyDef)] = if self.detail { &DETAIL_ATTRIBUTES } else { &[] };
            for (file, family) in CLASS_GAUGES.iter().chain(&CLASS_COUNTERS).chain(detail) {
                if let Some(v) = attr(file)? {
                    let v = sysfs_number(&v, &dir.join(file))?;
                    out.add(family).add(&[("device", name)], v);
                }
            }
            if let Some(v) = attr("mtu")? {
                let v = sysfs_number(&v, &dir.join("mtu"))?;
                out.add(&MTU).add(&[("device", name)], v);
            }
            // speed is in Mbit/s; -1 (or EINVAL) when the link is down or the
            // driver does not know.
            if let Some(v) = attr("speed")? {
                let v = sysfs_number(&v, &dir.join("speed"))?;
                if v >= 0.0 {
                    out.add(&SPEED)
                        .add(&[("device", name)], v * 1_000_000.0 / 8.0);
                }
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
        let text = match read_to_string(&self.net_dev[0]) {
            Ok(t) => t,
            Err(_) => read_to_string(&self.net_dev[1])?,
        };
        let devs = parse_net_dev(&text)?;
        for (i, column) in NET_DEV.iter().enumerate() {
            let family = out.add(column);
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

    #[test]
    fn reads_pid_1s_namespace_first() {
        let dir = std::env::temp_dir().join(format!("netdev-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("1/net")).unwrap();
        std::fs::create_dir_all(dir.join("net")).unwrap();
        let line = |d: &str| format!("{DEV}{d}: 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16\n");
        std::fs::write(dir.join("net/dev"), line("pod0")).unwrap();
        let sample = |dir: &Path| {
            let mut c = Network {
                net_dev: [dir.join("1/net/dev"), dir.join("net/dev")],
                class_net: dir.join("no-sysfs"),
                filter: DeviceFilter::new(None, None).unwrap(),
                detail: false,
            };
            let mut s = Sample::new();
            c.sample(&mut s).unwrap();
            let mut text = String::new();
            s.encode_text(&mut text);
            text
        };
        // Without PID 1's table: the agent's own.
        assert!(sample(&dir).contains("device=\"pod0\""));
        std::fs::write(dir.join("1/net/dev"), line("host0")).unwrap();
        let text = sample(&dir);
        assert!(
            text.contains("device=\"host0\"") && !text.contains("pod0"),
            "{text}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
