//! node_exporter as the oracle: Debian's prometheus-node-exporter 1.5.0 and
//! the agent read the same fixture tree, and every host series the agent
//! mirrors (`node_{disk,network,infiniband,pressure,cpu}_*`, the load
//! averages and the /proc/stat counters, `node_vmstat_*`, the clock
//! sources, `node_{uname,os,dmi}_*`, `node_hwmon_*` and `node_edac_*`, as
//! `accel_*`)
//! must carry the same labels and value, both ways, apart from a short list
//! of deliberate differences that are asserted on their own.
//!
//! Memory is left out: `accel_memory_*_bytes` is deliberately not named
//! after node_exporter's `node_memory_<Field>_bytes`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{fixtures, free_port, require, wait_http, Agent, Proc, TempDir};

/// The families compared, as the part after `node_` / `accel_`.
const FAMILIES: [&str; 18] = [
    "disk_",
    "network_",
    "infiniband_",
    "pressure_",
    "cpu_",
    "load",
    "boot_time_",
    "context_switches_",
    "forks_",
    "intr_",
    "procs_",
    // host2: vmstat, time, identity, hwmon, edac
    "vmstat_",
    "time_clocksource_",
    // uname is this machine's, read by both; os-release and DMI the fixture's.
    "uname_",
    "os_",
    "dmi_",
    "hwmon_",
    "edac_",
];

/// Series (name without prefix, labels) where the agent deliberately
/// differs from node_exporter 1.5.0. Each is checked in its own assertion
/// in [`known_differences`].
const KNOWN_DIFFERENCES: [(&str, &[(&str, &str)]); 2] = [
    // (a) bond0's `speed` is -1 (link down, speed unknown): node_exporter
    // reports -1 Mbit/s as -125000 bytes/s; the agent omits the series.
    ("network_speed_bytes", &[("device", "bond0")]),
    // (b) mlx5_0 port 1's port_rcv_data is 5e18 words: node_exporter
    // multiplies by 4 in uint64 and wraps; the agent multiplies in f64.
    (
        "infiniband_port_data_received_bytes_total",
        &[("device", "mlx5_0"), ("port", "1")],
    ),
];

/// Families whose TYPE deliberately differs: (prefix, node_exporter's,
/// the agent's). node_exporter 1.5.0 exports /proc/vmstat fields `untyped`;
/// the agent declares gauges (collectors/src/vmstat.rs says why).
const KNOWN_TYPE_DIFFERENCES: [(&str, &str, &str); 1] = [("vmstat_", "untyped", "gauge")];

/// The agent's family of RoCE and vendor counters from
/// ports/<port>/hw_counters/, one series per file.
const HW_COUNTERS: &str = "infiniband_hw_events_total";

/// Families only the agent has (docs/metrics.md is to list them as
/// agent-only); their values are checked against the fixture files in
/// [`extras`].
const EXTRA_FAMILIES: [&str; 1] = [HW_COUNTERS];

/// Label pairs, sorted by name.
pub type Labels = Vec<(String, String)>;

/// One scrape: series by (name, sorted labels), and each family's TYPE.
#[derive(Default)]
pub struct Exposition {
    pub series: BTreeMap<(String, Labels), f64>,
    pub types: BTreeMap<String, String>,
}

/// Parses the Prometheus text format (version 0.0.4): comments other than
/// `# TYPE` are skipped; label values are unescaped; a trailing timestamp is
/// ignored. Panics on anything malformed or on a duplicate series.
pub fn parse_exposition(text: &str) -> Exposition {
    let mut out = Exposition::default();
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut f = comment.split_whitespace();
            if f.next() == Some("TYPE") {
                let (Some(name), Some(kind)) = (f.next(), f.next()) else {
                    panic!("bad TYPE line {line:?}");
                };
                out.types.insert(name.to_owned(), kind.to_owned());
            }
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let name = &line[..name_end];
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        let mut rest = &line[name_end..];
        let mut labels = Labels::new();
        if let Some(after) = rest.strip_prefix('{') {
            let (l, r) = parse_labels(after, line);
            labels = l;
            rest = r;
        }
        let mut f = rest.split_whitespace();
        let value = f.next().unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value {value:?} in {line:?}"));
        if let Some(ts) = f.next() {
            ts.parse::<i64>()
                .unwrap_or_else(|_| panic!("bad timestamp in {line:?}"));
        }
        assert!(f.next().is_none(), "trailing garbage in {line:?}");
        let names: BTreeSet<_> = labels.iter().map(|(k, _)| k).collect();
        assert_eq!(names.len(), labels.len(), "repeated label in {line:?}");
        labels.sort();
        let dup = out.series.insert((name.to_owned(), labels), value);
        assert!(dup.is_none(), "duplicate series {line:?}");
    }
    out
}

/// Parses `name="value",...}` (the opening brace already consumed); returns
/// the labels and what follows the closing brace.
fn parse_labels<'a>(mut s: &'a str, line: &str) -> (Labels, &'a str) {
    let mut labels = Labels::new();
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(rest) = s.strip_prefix('}') {
            return (labels, rest);
        }
        let eq = s
            .find('=')
            .unwrap_or_else(|| panic!("label without '=' in {line:?}"));
        let key = s[..eq].trim();
        assert!(
            !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad label name {key:?} in {line:?}"
        );
        s = s[eq + 1..]
            .strip_prefix('"')
            .unwrap_or_else(|| panic!("unquoted label value in {line:?}"));
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    other => panic!("bad escape {other:?} in {line:?}"),
                },
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {line:?}"),
            }
        };
        labels.push((key.to_owned(), value));
        s = &s[end + 1..];
    }
}

/// The series of the compared families, keyed by name without `prefix`.
fn host_series(e: &Exposition, prefix: &str) -> Host {
    e.series
        .iter()
        .filter_map(|((name, labels), v)| {
            let short = name.strip_prefix(prefix)?;
            FAMILIES
                .iter()
                .any(|f| short.starts_with(f))
                .then(|| ((short.to_owned(), labels.clone()), *v))
        })
        .collect()
}

/// Whether two values agree: equal within a relative 1e-9 (both NaN counts
/// as equal).
fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

fn key(name: &str, labels: &[(&str, &str)]) -> (String, Labels) {
    let mut l: Labels = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    l.sort();
    (name.to_owned(), l)
}

/// Renders a series for messages.
fn show((name, labels): &(String, Labels)) -> String {
    let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", l.join(","))
}

/// A fixture file's trimmed content.
fn fixture(rel: impl AsRef<Path>) -> String {
    let p = fixtures().join(rel);
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_owned()
}

/// Starts node_exporter on the fixture tree and returns its /metrics text.
fn scrape_node_exporter() -> String {
    let fx = fixtures();
    let fx = fx.to_str().expect("utf-8 fixture path");
    let mut args = vec![
        format!("--path.procfs={fx}/proc"),
        format!("--path.sysfs={fx}/sys"),
        format!("--path.rootfs={fx}"),
        format!("--path.udev.data={fx}/run/udev/data"),
    ];
    args.extend(
        [
            "--collector.disable-defaults",
            "--collector.diskstats",
            "--collector.netdev",
            "--no-collector.netdev.netlink",
            "--collector.netdev.device-exclude=^$",
            "--collector.netclass",
            "--no-collector.netclass.netlink",
            "--collector.infiniband",
            "--collector.pressure",
            "--collector.cpu",
            "--collector.cpu.guest",
            "--collector.loadavg",
            "--collector.stat",
            "--collector.vmstat",
            "--collector.time",
            "--collector.uname",
            "--collector.os",
            "--collector.dmi",
            "--collector.hwmon",
            "--collector.edac",
        ]
        .map(String::from),
    );
    node_exporter(&args)
}

/// Starts node_exporter with `args` and returns its /metrics text.
/// Retries on another port if it loses the race for the one picked.
pub fn node_exporter(args: &[String]) -> String {
    let bin = require("prometheus-node-exporter");
    let log_dir = TempDir::new("node-exporter");
    let mut why = Vec::new();
    for _ in 0..3 {
        let addr = format!("127.0.0.1:{}", free_port());
        let log_path = log_dir.0.join("log");
        let log = std::fs::File::create(&log_path).unwrap();
        let mut proc = Proc(
            Command::new(&bin)
                .args(args)
                .arg(format!("--web.listen-address={addr}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start prometheus-node-exporter"),
        );
        match wait_http(&addr, "/metrics", Duration::from_secs(15), &mut proc) {
            Ok(r) => return r.text(),
            Err(e) => why.push(format!(
                "{e}\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            )),
        }
    }
    panic!("node_exporter did not serve /metrics:\n{}", why.join("\n"));
}

fn scrape_agent() -> String {
    let fx = fixtures();
    let fx = fx.to_str().expect("utf-8 fixture path");
    let agent = Agent::start(&[
        &format!("--path.procfs={fx}/proc"),
        &format!("--path.sysfs={fx}/sys"),
        &format!("--path.udev.data={fx}/run/udev/data"),
        "--collector.network.device-exclude=^$",
        // Every family node_exporter exports: the host collectors' detail.
        "--collector.network.detail",
        "--collector.disk.detail",
        "--collector.cpu.detail",
        "--collector.time.detail",
        &format!("--collector.identity.rootfs={fx}"),
    ]);
    let r = agent.get_ready("/metrics");
    assert_eq!(r.status, 200);
    r.text()
}

/// Series of the compared families, by (name without prefix, labels).
type Host = BTreeMap<(String, Labels), f64>;

/// Per family: series compared equal, and how many of them are not 0.
type Counts = BTreeMap<&'static str, (usize, usize)>;

/// Compares the host families of two scrapes both ways, apart from
/// [`KNOWN_DIFFERENCES`] and [`EXTRA_FAMILIES`]: what differs, and what
/// was found equal.
fn compare(ne_all: &Exposition, ours_all: &Exposition) -> (Vec<String>, Counts) {
    let ne = host_series(ne_all, "node_");
    let ours = host_series(ours_all, "accel_");
    let known: BTreeSet<_> = KNOWN_DIFFERENCES.iter().map(|(n, l)| key(n, l)).collect();

    // node_exporter -> agent: same name, labels and value.
    let mut problems = Vec::new();
    let mut compared = Counts::new();
    for (k, v) in &ne {
        if known.contains(k) {
            continue;
        }
        match ours.get(k) {
            None => problems.push(format!("missing: accel_{} (node_exporter: {v})", show(k))),
            Some(o) if !same(*v, *o) => problems.push(format!(
                "value: accel_{} = {o}, node_exporter says {v}",
                show(k)
            )),
            Some(_) => {
                let family = FAMILIES.iter().find(|f| k.0.starts_with(**f)).unwrap();
                let c = compared.entry(family).or_default();
                c.0 += 1;
                c.1 += usize::from(*v != 0.0);
            }
        }
    }
    // agent -> node_exporter: nothing node_exporter lacks, but the extras.
    for k in ours.keys() {
        if !ne.contains_key(k) && !known.contains(k) && !EXTRA_FAMILIES.contains(&k.0.as_str()) {
            problems.push(format!("extra: accel_{} not in node_exporter", show(k)));
        }
    }
    // The TYPE of every compared family.
    for name in ne.keys().map(|(n, _)| n).collect::<BTreeSet<_>>() {
        let theirs = ne_all.types.get(&format!("node_{name}"));
        let mine = ours_all.types.get(&format!("accel_{name}"));
        let deliberate = KNOWN_TYPE_DIFFERENCES.iter().any(|(prefix, t, m)| {
            name.starts_with(prefix)
                && theirs.map(String::as_str) == Some(*t)
                && mine.map(String::as_str) == Some(*m)
        });
        if theirs != mine && !deliberate {
            problems.push(format!(
                "type: accel_{name} is {mine:?}, node_exporter's is {theirs:?}"
            ));
        }
    }
    (problems, compared)
}

/// The comparison catches what it is there to catch: each fault injected
/// into the agent's scrape gives exactly the expected complaint.
fn compare_catches_faults(ne_all: &Exposition, ours_all: &Exposition) {
    let fault = |what: &str, edit: &dyn Fn(&mut Exposition), want: &[&str]| {
        let mut bad = Exposition {
            series: ours_all.series.clone(),
            types: ours_all.types.clone(),
        };
        edit(&mut bad);
        let (problems, _) = compare(ne_all, &bad);
        assert_eq!(
            problems.len(),
            want.len(),
            "{what}: want {want:?}, got {problems:#?}"
        );
        for (p, w) in problems.iter().zip(want) {
            assert!(p.starts_with(w), "{what}: want {w:?}, got {p:?}");
        }
    };
    let read = key("accel_disk_read_bytes_total", &[("device", "sda")]);
    let cpu = key("accel_cpu_seconds_total", &[("cpu", "2"), ("mode", "user")]);
    fault(
        "sectors counted as 1 KiB",
        &|e| *e.series.get_mut(&read).unwrap() *= 2.0,
        &["value: accel_disk_read_bytes_total"],
    );
    fault(
        "a rounding error of 1e-7",
        &|e| *e.series.get_mut(&cpu).unwrap() *= 1.0 + 1e-7,
        &["value: accel_cpu_seconds_total"],
    );
    fault(
        "a series left out",
        &|e| {
            e.series.remove(&read);
        },
        &["missing: accel_disk_read_bytes_total"],
    );
    fault(
        "a label renamed",
        &|e| {
            let v = e.series.remove(&read).unwrap();
            e.series
                .insert(key("accel_disk_read_bytes_total", &[("disk", "sda")]), v);
        },
        &[
            "missing: accel_disk_read_bytes_total",
            "extra: accel_disk_read_bytes_total",
        ],
    );
    fault(
        "a counter typed as a gauge",
        &|e| {
            e.types
                .insert("accel_disk_read_bytes_total".into(), "gauge".into());
        },
        &["type: accel_disk_read_bytes_total"],
    );
    fault(
        "a vmstat field typed as a counter (only untyped -> gauge is allowed)",
        &|e| {
            e.types
                .insert("accel_vmstat_oom_kill".into(), "counter".into());
        },
        &["type: accel_vmstat_oom_kill"],
    );
    fault(
        "a speed for lo, which has no speed file",
        &|e| {
            e.series
                .insert(key("accel_network_speed_bytes", &[("device", "lo")]), 0.0);
        },
        &["extra: accel_network_speed_bytes"],
    );
}

#[test]
fn host_metrics_match_node_exporter() {
    let ne_text = scrape_node_exporter();
    let ours_text = scrape_agent();
    let ne_all = parse_exposition(&ne_text);
    let ours_all = parse_exposition(&ours_text);

    // node_exporter itself must have read every collector, or the
    // comparison would pass on missing data.
    for c in [
        "cpu",
        "diskstats",
        "infiniband",
        "netclass",
        "netdev",
        "pressure",
        "loadavg",
        "stat",
        "vmstat",
        "time",
        "uname",
        "os",
        "dmi",
        "hwmon",
        "edac",
    ] {
        let k = key("node_scrape_collector_success", &[("collector", c)]);
        assert_eq!(
            ne_all.series.get(&k),
            Some(&1.0),
            "node_exporter's {c} collector failed:\n{ne_text}"
        );
    }

    let ne = host_series(&ne_all, "node_");
    let ours = host_series(&ours_all, "accel_");
    let (problems, compared) = compare(&ne_all, &ours_all);
    assert!(
        problems.is_empty(),
        "{} differences from node_exporter:\n{}",
        problems.len(),
        problems.join("\n")
    );

    // Not vacuous: every family compared, with non-zero values (a value
    // scaled wrongly shows only where it is not 0).
    let total: usize = compared.values().map(|c| c.0).sum();
    eprintln!("compared {total} series with node_exporter: {compared:?}");
    for (family, min, min_nonzero) in [
        ("disk_", 100, 80),
        ("network_", 200, 120),
        ("infiniband_", 70, 60),
        ("pressure_", 5, 5),
        ("cpu_", 40, 35),
        ("load", 3, 3),
        ("boot_time_", 1, 1),
        ("context_switches_", 1, 1),
        ("forks_", 1, 1),
        ("intr_", 1, 1),
        ("procs_", 2, 2),
        ("vmstat_", 7, 7),
        ("time_clocksource_", 4, 4),
        ("uname_", 1, 1),
        ("os_", 2, 2),
        ("dmi_", 1, 1),
        ("hwmon_", 44, 33),
        ("edac_", 12, 9),
    ] {
        let (n, nonzero) = compared.get(family).copied().unwrap_or_default();
        assert!(
            n >= min && nonzero >= min_nonzero,
            "only {n} {family}* series compared ({nonzero} non-zero), want {min} ({min_nonzero})"
        );
    }
    assert_eq!(
        total + KNOWN_DIFFERENCES.len(),
        ne.len(),
        "every node_exporter series is compared or a known difference"
    );

    known_differences(&ne, &ours);
    // The one deliberate TYPE difference holds for every vmstat family, and
    // the fixture's oom_kill is read.
    for (name, kind) in &ne_all.types {
        if let Some(short) = name.strip_prefix("node_vmstat_") {
            assert_eq!(kind, "untyped", "{name}");
            assert_eq!(
                ours_all
                    .types
                    .get(&format!("accel_vmstat_{short}"))
                    .map(String::as_str),
                Some("gauge"),
                "accel_vmstat_{short}"
            );
        }
    }
    assert_eq!(ours.get(&key("vmstat_oom_kill", &[])), Some(&3.0));
    extras(&ours);
    compare_catches_faults(&ne_all, &ours_all);
}

/// Each deliberate difference, asserted exactly.
fn known_differences(ne: &Host, ours: &Host) {
    // (a) A link whose speed is -1: node_exporter -125000, we nothing.
    assert_eq!(fixture("sys/class/net/bond0/speed"), "-1");
    let k = key("network_speed_bytes", &[("device", "bond0")]);
    assert_eq!(ne.get(&k), Some(&-125000.0), "node_exporter's bond0 speed");
    assert_eq!(ours.get(&k), None, "accel_network_speed_bytes for bond0");
    // ...while a known speed is converted as node_exporter does.
    let ens5 = key("network_speed_bytes", &[("device", "ens5")]);
    assert!(ne.contains_key(&ens5) && ne.get(&ens5) == ours.get(&ens5));

    // (b) port_rcv_data * 4 past 2^64: node_exporter wraps, we do not.
    let words: u64 = fixture("sys/class/infiniband/mlx5_0/ports/1/counters/port_rcv_data")
        .parse()
        .expect("port_rcv_data is a u64");
    assert!(words.checked_mul(4).is_none(), "the fixture must overflow");
    let k = key(
        "infiniband_port_data_received_bytes_total",
        &[("device", "mlx5_0"), ("port", "1")],
    );
    assert_eq!(ours.get(&k), Some(&(words as f64 * 4.0)));
    assert_eq!(ours.get(&k), Some(&2e19));
    assert_eq!(
        ne.get(&k),
        Some(&(words.wrapping_mul(4) as f64)),
        "node_exporter 1.5.0 wraps"
    );
}

/// The agent-only families: present where the fixture has the files, and
/// equal to them.
fn extras(ours: &Host) {
    let mut hw = 0;
    for ((name, labels), v) in ours {
        let label = |l: &str| {
            labels
                .iter()
                .find(|(k, _)| k == l)
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("{name} without {l}"))
        };
        let file = match name.as_str() {
            HW_COUNTERS => {
                hw += 1;
                format!("hw_counters/{}", label("counter"))
            }
            _ => continue,
        };
        let path = format!(
            "sys/class/infiniband/{}/ports/{}/{file}",
            label("device"),
            label("port")
        );
        let want: f64 = fixture(&path).parse().expect("numeric counter");
        assert_eq!(*v, want, "accel_{name} vs {path}");
    }
    let files =
        std::fs::read_dir(fixtures().join("sys/class/infiniband/mlx5_0/ports/1/hw_counters"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name() != "lifespan")
            .count();
    assert!(files > 0);
    assert_eq!(
        hw, files,
        "one accel_{HW_COUNTERS} series per hw_counters file"
    );
}

#[test]
fn exposition_parser() {
    let e = parse_exposition(
        "# HELP a_total x\n# TYPE a_total counter\na_total{b=\"1\",a=\"q\\\"\\\\\\n\"} 1.5e3\nc -Inf 123\nd{} NaN\n",
    );
    assert_eq!(e.types["a_total"], "counter");
    let k = key("a_total", &[("a", "q\"\\\n"), ("b", "1")]);
    assert_eq!(e.series[&k], 1500.0);
    assert_eq!(e.series[&key("c", &[])], f64::NEG_INFINITY);
    assert!(e.series[&key("d", &[])].is_nan());
    assert!(same(1.0, 1.0 + 1e-12) && !same(1.0, 1.0 + 1e-6) && !same(0.0, 1e-300));
}

#[test]
fn what_no_panel_reads_is_one_flag_away() {
    let count = |text: &str, family: &str| {
        text.lines()
            .filter(|l| {
                l.starts_with(&format!("{family}{{")) || l.starts_with(&format!("{family} "))
            })
            .count()
    };
    let host = ["network", "disk", "cpu", "time"];
    let flags: Vec<String> = host
        .iter()
        .map(|c| format!("--collector.{c}.detail"))
        .collect();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let lean = crate::golden::fixture_agent(&[])
        .get_ready("/metrics")
        .text();
    let full = crate::golden::fixture_agent(&flags)
        .get_ready("/metrics")
        .text();
    // What the panels, alerts and profile read: there by default, the same.
    for family in [
        "accel_network_info",
        "accel_network_up",
        "accel_network_carrier",
        "accel_network_carrier_changes_total",
        "accel_network_mtu_bytes",
        "accel_network_speed_bytes",
        "accel_network_receive_bytes_total",
        "accel_network_receive_errs_total",
        "accel_disk_reads_completed_total",
        "accel_disk_io_time_seconds_total",
        "accel_cpu_seconds_total",
        "accel_timex_sync_status",
        "accel_timex_maxerror_seconds",
    ] {
        assert!(count(&lean, family) > 0, "{family} missing by default");
        assert_eq!(count(&lean, family), count(&full, family), "{family}");
    }
    // Every family marked detail in these collectors' tables: only with
    // the flag, and there with it (the fixture host has them all).
    let mut marked = 0;
    for spec in accel_collectors::registry()
        .iter()
        .filter(|s| host.contains(&s.name))
    {
        assert!(!spec.detail.is_empty(), "{} has no detail flag", spec.name);
        for f in spec.families.iter().filter(|f| f.detail) {
            marked += 1;
            assert_eq!(count(&lean, f.name), 0, "{} exported by default", f.name);
            assert!(count(&full, f.name) > 0, "{} missing with the flag", f.name);
        }
    }
    assert!(marked >= 40, "{marked} detail families");
}
