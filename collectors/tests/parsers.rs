//! Property tests of the public parsers: whatever the kernel (or a broken
//! driver, or a truncated read) hands them, they return `Ok` or `Err` and
//! never panic; what they accept keeps their documented shape; and what
//! they are given in the kernel's own format they read back exactly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use accel_collectors::{cgroup, cpu, disk, infiniband, load, memory, network, pressure, procfs};
use proptest::prelude::*;
use proptest::test_runner::Config;

fn fixture(rel: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The valid inputs the mutation tests start from: every procfs fixture
/// and one of each InfiniBand attribute.
fn valid_inputs() -> &'static [String] {
    static INPUTS: OnceLock<Vec<String>> = OnceLock::new();
    INPUTS.get_or_init(|| {
        let mut v: Vec<String> = [
            "proc/diskstats",
            "proc/net/dev",
            "proc/stat",
            "proc/meminfo",
            "proc/pressure/cpu",
            "proc/pressure/io",
            "proc/pressure/memory",
            "sys/class/infiniband/mlx5_0/ports/1/state",
            "sys/class/infiniband/mlx5_0/ports/1/phys_state",
            "sys/class/infiniband/mlx5_0/ports/1/rate",
            "sys/class/infiniband/mlx5_0/ports/1/counters/port_rcv_data",
            "sys/class/infiniband/mlx4_0/ports/1/counters/VL15_dropped",
        ]
        .iter()
        .map(|f| fixture(f))
        .collect();
        v.push("10 Gb/sec (4X)".to_owned());
        v.push(STAT.to_owned());
        v
    })
}

/// A /proc/PID/stat line as Linux 6.x writes it (52 fields), with a command
/// name that holds a space and a ')'.
const STAT: &str = "4242 (py thon)) S 1 4242 4242 0 -1 4194560 100 0 7 0 250 75 0 0 20 0 7 0 123456 987654321 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n";

/// Feeds `s` to every parser. Each may refuse it; none may panic. What a
/// parser accepts must have the shape its documentation promises.
fn all_parsers(s: &str) {
    if let Ok(lines) = disk::parse(s) {
        for l in &lines {
            assert!((11..=17).contains(&l.counters.len()), "{l:?}");
            assert!(!l.device.is_empty() && !l.device.contains(|c: char| c.is_ascii_whitespace()));
        }
    }
    if let Ok(devs) = network::parse_net_dev(s) {
        for (name, _) in &devs {
            assert!(!name.is_empty() && *name == name.trim(), "{name:?}");
        }
    }
    if let Ok(cpus) = cpu::parse(s) {
        assert!(!cpus.is_empty());
        for (id, ticks) in &cpus {
            assert!(id.parse::<u32>().is_ok(), "cpu id {id:?}");
            assert!(ticks.len() >= 4, "cpu{id}: {ticks:?}");
        }
    }
    if let Ok(fields) = memory::parse(s) {
        for name in fields.keys() {
            assert!(!name.contains(':') && *name == name.trim(), "{name:?}");
        }
    }
    let _ = pressure::parse(s);
    let _ = infiniband::parse_state(s);
    if let Ok(rate) = infiniband::parse_rate(s) {
        assert!(rate.is_finite() && rate >= 0.0, "rate {rate} from {s:?}");
    }
    let _ = infiniband::parse_counter(s, Path::new("counters/x"));
    let _ = procfs::parse_stat(s);
    let _ = procfs::parse_io(s);
    let _ = procfs::parse_ctxt(s);
    if let Ok(loads) = load::parse_loadavg(s) {
        assert!(
            loads.iter().all(|l| l.is_finite() && *l >= 0.0),
            "{loads:?}"
        );
    }
    let _ = load::parse_stat(s);
    let _ = cgroup::parse_cgroup(s);
    // Every refusal says what was wrong.
    for e in [
        disk::parse(s).err(),
        network::parse_net_dev(s).err(),
        cpu::parse(s).err(),
        memory::parse(s).err(),
        pressure::parse(s).err(),
        procfs::parse_stat(s).err(),
        load::parse_loadavg(s).err(),
        load::parse_stat(s).err(),
    ]
    .into_iter()
    .flatten()
    {
        assert!(
            !e.message.trim().is_empty(),
            "an error without a message for {s:?}"
        );
    }
}

/// Tokens procfs and sysfs files are made of, and the edge cases of each.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[0-9]{1,6}",
        2 => "[0-9]{18,25}",
        1 => prop_oneof![
            Just("99999999999999999999999"),
            Just("18446744073709551615"),
            Just("18446744073709551616"),
            Just("9223372036854775808"),
            Just("4294967296"),
            Just("-1"),
            Just("-0"),
            Just("+7"),
            Just("0x1003"),
            Just("1e308"),
            Just("1e-308"),
            Just("inf"),
            Just("NaN"),
            Just("2.5"),
            Just("."),
        ]
        .prop_map(str::to_owned),
        4 => prop_oneof![
            Just(" "),
            Just("  "),
            Just("\t"),
            Just("\n"),
            Just(":"),
            Just("="),
            Just("-"),
            Just("|"),
            Just("N/A"),
            Just("N/A (no PMA)"),
        ]
        .prop_map(str::to_owned),
        2 => prop_oneof![
            Just("cpu"),
            Just("cpu0"),
            Just("cpu "),
            Just("sda"),
            Just("eth0"),
            Just("some"),
            Just("full"),
            Just("total="),
            Just("avg10=0.00"),
            Just("kB"),
            Just("MemTotal:"),
            Just("Gb/sec"),
            Just("(4X HDR)"),
            Just("ACTIVE"),
            Just("Inter-|   Receive\n"),
            Just(" face |bytes\n"),
        ]
        .prop_map(str::to_owned),
        1 => any::<char>().prop_map(String::from),
    ]
}

fn token_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(token(), 0..80).prop_map(|t| t.concat())
}

/// An edit of a valid input: cut it short, overwrite bytes, insert bytes,
/// or drop a range.
#[derive(Clone, Debug)]
enum Edit {
    Truncate(usize),
    Replace(usize, u8),
    Insert(usize, Vec<u8>),
    Remove(usize, usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let byte = prop_oneof![
        3 => prop::sample::select(b" \t\n:-=0123456789/N".to_vec()),
        1 => any::<u8>(),
    ];
    prop_oneof![
        (any::<usize>()).prop_map(Edit::Truncate),
        (any::<usize>(), byte.clone()).prop_map(|(i, b)| Edit::Replace(i, b)),
        (any::<usize>(), prop::collection::vec(byte, 1..24)).prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Edit::Remove(i, n)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut b = text.as_bytes().to_vec();
    for e in edits {
        let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
        match e {
            Edit::Truncate(i) => b.truncate(at(*i, b.len())),
            Edit::Replace(i, v) if !b.is_empty() => {
                let i = i % b.len();
                b[i] = *v;
            }
            Edit::Replace(..) => {}
            Edit::Insert(i, v) => {
                let i = at(*i, b.len());
                b.splice(i..i, v.iter().copied());
            }
            Edit::Remove(i, n) => {
                let i = at(*i, b.len());
                let end = (i + n).min(b.len());
                b.drain(i..end);
            }
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

/// Whitespace between fields, as the kernel pads them (or not).
fn sep() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![" ", "  ", "   ", "\t", " \t "])
}

/// A kernel block device name.
fn device_name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9_.-]{0,15}"
}

#[test]
fn fixtures_parse() {
    assert!(!disk::parse(&fixture("proc/diskstats")).unwrap().is_empty());
    assert!(!network::parse_net_dev(&fixture("proc/net/dev"))
        .unwrap()
        .is_empty());
    assert_eq!(cpu::parse(&fixture("proc/stat")).unwrap().len(), 4);
    assert!(memory::parse(&fixture("proc/meminfo"))
        .unwrap()
        .contains_key("MemTotal"));
    assert_eq!(procfs::parse_stat(STAT).unwrap().rss_pages, 2048);
    for r in ["cpu", "io", "memory"] {
        let (some, full) = pressure::parse(&fixture(&format!("proc/pressure/{r}"))).unwrap();
        assert!(some.is_some() && full.is_some(), "{r}");
    }
}

proptest! {
    // 10,000 cases each: every parser of what the kernel writes.
    #![proptest_config(Config { cases: 10_000, ..Config::default() })]

    #[test]
    fn arbitrary_text_never_panics(s in any::<String>()) {
        all_parsers(&s);
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..512)) {
        all_parsers(&String::from_utf8_lossy(&b));
    }

    #[test]
    fn token_soup_never_panics(s in token_soup()) {
        all_parsers(&s);
    }

    #[test]
    fn mutated_valid_input_never_panics(
        which in any::<prop::sample::Index>(),
        edits in prop::collection::vec(edit(), 1..6),
    ) {
        let text = which.get(valid_inputs());
        all_parsers(&apply(text, &edits));
    }
}

proptest! {
    #![proptest_config(Config { cases: 512, ..Config::default() })]

    /// A diskstats line in any of the kernel's three forms (11, 15 or 17
    /// counters) reads back as written; counters a future kernel adds past
    /// the 17th are ignored.
    #[test]
    fn diskstats_round_trip(
        lines in prop::collection::vec(
            (
                0u32..4096,
                any::<u32>(),
                device_name(),
                prop_oneof![Just(11usize), Just(15), Just(17), 18usize..24]
                    .prop_flat_map(|n| prop::collection::vec(any::<u64>(), n)),
                sep(),
            ),
            1..8,
        ),
    ) {
        let text: String = lines
            .iter()
            .map(|(major, minor, dev, counters, sep)| {
                let c: Vec<String> = counters.iter().map(u64::to_string).collect();
                format!("{major:>4}{sep}{minor:>7} {dev}{sep}{}\n", c.join(sep))
            })
            .collect();
        let parsed = disk::parse(&text).unwrap();
        prop_assert_eq!(parsed.len(), lines.len());
        for (p, (major, minor, dev, counters, _)) in parsed.iter().zip(&lines) {
            prop_assert_eq!(p.major, *major);
            prop_assert_eq!(p.minor, *minor);
            prop_assert_eq!(p.device, dev.as_str());
            prop_assert_eq!(&p.counters[..], &counters[..counters.len().min(17)]);
        }
    }

    /// A diskstats line with fewer than 11 counters is refused.
    #[test]
    fn diskstats_short_lines_are_refused(
        counters in prop::collection::vec(any::<u64>(), 0..11),
        dev in device_name(),
    ) {
        let c: Vec<String> = counters.iter().map(u64::to_string).collect();
        let line = format!("8 0 {dev} {}\n", c.join(" "));
        prop_assert!(disk::parse(&line).is_err(), "{:?}", line);
    }

    /// /proc/net/dev as the kernel prints it (`%6s:%8llu ...`, so wide
    /// counters touch the colon) reads back as written.
    #[test]
    fn net_dev_round_trip(
        devs in prop::collection::vec(
            ("[a-z][a-z0-9_.-]{0,14}", prop::array::uniform16(any::<u64>())),
            0..8,
        ),
    ) {
        let mut text = String::from(
            "Inter-|   Receive                                                |  Transmit\n \
             face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n",
        );
        for (name, v) in &devs {
            text.push_str(&format!(
                "{name:>6}:{:>8} {:>7} {:>4} {:>4} {:>4} {:>5} {:>10} {:>9} {:>8} {:>7} {:>4} {:>4} {:>4} {:>5} {:>7} {:>10}\n",
                v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7],
                v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15],
            ));
        }
        let parsed = network::parse_net_dev(&text).unwrap();
        prop_assert_eq!(parsed.len(), devs.len());
        for ((name, values), (want_name, want)) in parsed.iter().zip(&devs) {
            prop_assert_eq!(*name, want_name.as_str());
            prop_assert_eq!(values, want);
        }
    }

    /// Per-cpu /proc/stat lines (4 to 10 tick counters) read back as
    /// written; the aggregate `cpu` line and other lines are skipped.
    #[test]
    fn cpu_round_trip(
        cpus in prop::collection::vec(prop::collection::vec(any::<u64>(), 4..=10), 1..8),
        aggregate in prop::collection::vec(any::<u64>(), 10),
    ) {
        let line = |name: &str, t: &[u64]| {
            let t: Vec<String> = t.iter().map(u64::to_string).collect();
            format!("{name} {}\n", t.join(" "))
        };
        let mut text = line("cpu ", &aggregate);
        for (i, t) in cpus.iter().enumerate() {
            text.push_str(&line(&format!("cpu{i}"), t));
        }
        text.push_str("intr 1 2 3\nctxt 99\nbtime 1716200123\nsoftirq 1 2\n");
        let parsed = cpu::parse(&text).unwrap();
        prop_assert_eq!(parsed.len(), cpus.len());
        for (i, ((id, ticks), want)) in parsed.iter().zip(&cpus).enumerate() {
            prop_assert_eq!(id, &i.to_string());
            prop_assert_eq!(ticks, want);
        }
    }

    /// meminfo fields read back in bytes: `kB` values times 1024 (saturating
    /// at u64::MAX), unit-less counts as they are.
    #[test]
    fn meminfo_round_trip(
        fields in prop::collection::btree_map(
            "[A-Za-z][A-Za-z0-9_()]{0,20}",
            (any::<u64>(), any::<bool>()),
            0..24,
        ),
    ) {
        let text: String = fields
            .iter()
            .map(|(name, (v, kb))| {
                let pad = " ".repeat(16usize.saturating_sub(name.len()));
                format!("{name}:{pad}{v}{}\n", if *kb { " kB" } else { "" })
            })
            .collect();
        let parsed = memory::parse(&text).unwrap();
        let want: BTreeMap<&str, u64> = fields
            .iter()
            .map(|(n, (v, kb))| (n.as_str(), if *kb { v.saturating_mul(1024) } else { *v }))
            .collect();
        let got: BTreeMap<&str, u64> = parsed.into_iter().collect();
        prop_assert_eq!(got, want);
    }

    /// A pressure file reads back its `some` and `full` totals.
    #[test]
    fn pressure_round_trip(
        some in any::<u64>(),
        full in prop::option::of(any::<u64>()),
        avgs in prop::array::uniform6(0.0f64..100.0),
    ) {
        let mut text = format!(
            "some avg10={:.2} avg60={:.2} avg300={:.2} total={some}\n",
            avgs[0], avgs[1], avgs[2]
        );
        if let Some(full) = full {
            text.push_str(&format!(
                "full avg10={:.2} avg60={:.2} avg300={:.2} total={full}\n",
                avgs[3], avgs[4], avgs[5]
            ));
        }
        prop_assert_eq!(pressure::parse(&text).unwrap(), (Some(some), full));
    }

    /// InfiniBand attributes: `"<id>: <NAME>"` states, `"<v> Gb/sec (...)"`
    /// rates in bytes per second, decimal counters and `N/A (no PMA)`.
    #[test]
    fn infiniband_round_trip(
        state in any::<u64>(),
        name in "[A-Za-z_]{1,12}",
        gbit_tenths in 0u32..100_000,
        width in prop::sample::select(vec!["1X", "4X", "8X", "12X"]),
        counter in any::<u64>(),
    ) {
        prop_assert_eq!(infiniband::parse_state(&format!("{state}: {name}")).unwrap(), state);
        let gbit = f64::from(gbit_tenths) / 10.0;
        let rate = infiniband::parse_rate(&format!("{gbit} Gb/sec ({width} {name})")).unwrap();
        prop_assert_eq!(rate, gbit * 1e9 / 8.0);
        let rate = infiniband::parse_rate(&format!("{gbit} Gb/sec")).unwrap();
        prop_assert_eq!(rate, gbit * 1e9 / 8.0);
        let path = Path::new("counters/port_rcv_data");
        prop_assert_eq!(
            infiniband::parse_counter(&counter.to_string(), path).unwrap(),
            Some(counter)
        );
        prop_assert_eq!(infiniband::parse_counter("N/A (no PMA)", path).unwrap(), None);
        let negative = format!("-{}", counter.max(1));
        prop_assert!(infiniband::parse_counter(&negative, path).is_err(), "{}", negative);
    }

    /// /proc/PID/stat reads back the fields the process series use, whatever
    /// the command name holds (the kernel writes it raw, up to 15 bytes,
    /// spaces and parentheses included).
    #[test]
    fn proc_stat_round_trip(
        pid in 1u32..4_194_304,
        comm in "[ -~]{0,15}",
        state in prop::sample::select(vec!["R", "S", "D", "Z", "T", "I"]),
        fields in prop::array::uniform32(any::<u64>()),
        signed in prop::array::uniform4(any::<i32>()),
    ) {
        // Fields 4 to 52, as the kernel prints them: ppid, pgrp, session and
        // tty_nr as ints; the rest unsigned (priority, nice and a few more are
        // signed in the kernel but never negative for the fields read here).
        let mut f: Vec<String> = signed.iter().map(i32::to_string).collect();
        f.extend(fields.iter().map(u64::to_string));
        f.extend((f.len()..49).map(|i| i.to_string()));
        let line = format!("{pid} ({comm}) {state} {}\n", f.join(" "));
        let s = procfs::parse_stat(&line).unwrap();
        // Field n is f[n - 4].
        let at = |n: usize| f[n - 4].parse::<u64>().unwrap();
        prop_assert_eq!(
            (s.minflt, s.majflt, s.utime, s.stime, s.threads, s.starttime, s.vsize, s.rss_pages),
            (at(10), at(12), at(14), at(15), at(20), at(22), at(23), at(24))
        );
    }

    /// A stat line cut before field 24 is refused.
    #[test]
    fn proc_stat_short_lines_are_refused(
        comm in "[ -~]{0,15}",
        n in 0usize..21,
    ) {
        let f: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        let line = format!("1 ({comm}) S {}\n", f.join(" "));
        prop_assert!(procfs::parse_stat(&line).is_err(), "{:?}", line);
    }
}
