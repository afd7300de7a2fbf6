//! The filesystem collector on this machine's real mounts: against
//! node_exporter 1.5.0 read at the same moment (statfs has no fixture
//! tree: both read the real `/proc/1/mounts` and call statfs on the real
//! mount points), and with a FUSE mount that never answers, while scrapes
//! stay fast.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use accel_collectors::filesystem::mounts::DEFAULT_MOUNT_POINTS_EXCLUDE;

use crate::node_exporter::{parse_exposition, Labels};
use crate::util::{free_port, require, value, wait_http, Agent, HungFuse, Proc, TempDir, HUNG_TAG};

/// The families node_exporter has, after `node_` / `accel_`.
const FAMILIES: [&str; 7] = [
    "filesystem_size_bytes",
    "filesystem_free_bytes",
    "filesystem_avail_bytes",
    "filesystem_files",
    "filesystem_files_free",
    "filesystem_readonly",
    "filesystem_device_error",
];

/// The mount-point exclude both are given: the agent's default (which is
/// node_exporter's with /dev/shm reported) and the hung mounts of the
/// other test.
fn exclude() -> String {
    format!("{DEFAULT_MOUNT_POINTS_EXCLUDE}|/accel-e2e-{HUNG_TAG}-")
}

fn node_exporter_filesystem() -> String {
    node_exporter_filesystem_with(&[])
}

fn node_exporter_filesystem_with(extra: &[String]) -> String {
    let bin = require("prometheus-node-exporter");
    let log_dir = TempDir::new("node-exporter-fs");
    let mut why = Vec::new();
    for _ in 0..3 {
        let addr = format!("127.0.0.1:{}", free_port());
        let log_path = log_dir.0.join("log");
        let mut proc = Proc(
            Command::new(&bin)
                .arg(format!("--web.listen-address={addr}"))
                .args(["--collector.disable-defaults", "--collector.filesystem"])
                .arg(format!(
                    "--collector.filesystem.mount-points-exclude={}",
                    exclude()
                ))
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log_path).unwrap())
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

/// The compared series of one scrape, by (family without prefix, labels).
fn filesystem_series(text: &str, prefix: &str) -> BTreeMap<(String, Labels), f64> {
    parse_exposition(text)
        .series
        .into_iter()
        .filter_map(|((name, labels), v)| {
            let short = name.strip_prefix(prefix)?;
            FAMILIES
                .contains(&short)
                .then(|| ((short.to_owned(), labels), v))
        })
        .collect()
}

fn label<'a>(labels: &'a Labels, name: &str) -> &'a str {
    labels
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

/// In a container the host's `/` is mounted at `--path.rootfs` and the
/// host's mount table read through its /proc: each mount is statfs'd under
/// the root and labelled with its host path, as node_exporter does.
#[test]
fn a_host_root_mounted_elsewhere_matches_node_exporter() {
    let tmp = TempDir::new("rootfs");
    let (procfs, rootfs) = (tmp.0.join("proc"), tmp.0.join("host-root"));
    std::fs::create_dir_all(procfs.join("1")).unwrap();
    std::fs::create_dir_all(rootfs.join("dev/shm")).unwrap();
    std::fs::create_dir_all(rootfs.join("data")).unwrap();
    std::fs::write(
        procfs.join("1/mounts"),
        "/dev/vda1 / ext4 rw,relatime 0 0\n\
         tmpfs /dev/shm tmpfs rw,nosuid 0 0\n\
         /dev/vdb /data xfs ro,noatime 0 0\n\
         /dev/vdc /gone xfs rw 0 0\n",
    )
    .unwrap();
    let paths = [
        format!("--path.procfs={}", procfs.display()),
        format!("--path.rootfs={}", rootfs.display()),
    ];
    let agent = Agent::start(&[
        "--collector.disable-defaults",
        "--collector.filesystem",
        "--collector.filesystem.interval=200ms",
        &format!("--collector.filesystem.mount-points-exclude={}", exclude()),
        &paths[0],
        &paths[1],
    ]);
    agent.wait_ready();
    std::thread::sleep(Duration::from_millis(500));
    let ours_text = agent.get("/metrics").text();
    let ne_text = node_exporter_filesystem_with(&paths);
    let ours = filesystem_series(&ours_text, "accel_");
    let ne = filesystem_series(&ne_text, "node_");
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        ne.keys().collect::<Vec<_>>(),
        "series differ\nagent:\n{ours_text}\nnode_exporter:\n{ne_text}"
    );
    for (k, theirs) in &ne {
        let tolerance = match k.0.as_str() {
            "filesystem_free_bytes" | "filesystem_avail_bytes" => 1e9,
            "filesystem_files_free" => 1e5,
            _ => 0.0,
        };
        assert!(
            (ours[k] - theirs).abs() <= tolerance,
            "{k:?}: {} vs {theirs}",
            ours[k]
        );
    }
    // The host paths are the labels; what is under the root answered, the
    // mount point missing there is an error; the root is this machine's.
    let series = |family: &str, mp: &str, dev: &str, fs: &str| {
        let s = format!(
            "accel_filesystem_{family}{{device=\"{dev}\",mountpoint=\"{mp}\",fstype=\"{fs}\"}}"
        );
        value(&ours_text, &s)
    };
    assert_eq!(
        series("readonly", "/data", "/dev/vdb", "xfs"),
        Some(1.0),
        "{ours_text}"
    );
    assert_eq!(
        series("device_error", "/data", "/dev/vdb", "xfs"),
        Some(0.0)
    );
    assert_eq!(
        series("device_error", "/gone", "/dev/vdc", "xfs"),
        Some(1.0)
    );
    assert_eq!(
        series("device_error", "/dev/shm", "tmpfs", "tmpfs"),
        Some(0.0)
    );
    assert!(series("size_bytes", "/", "/dev/vda1", "ext4").is_some_and(|v| v > 0.0));
}

#[test]
fn filesystem_matches_node_exporter_live() {
    let agent = Agent::start(&[
        "--collector.disable-defaults",
        "--collector.filesystem",
        "--collector.filesystem.interval=200ms",
        &format!("--collector.filesystem.mount-points-exclude={}", exclude()),
    ]);
    agent.wait_ready();
    // Both read at nearly the same moment: the agent's answers are at most
    // one interval (200 ms) old.
    std::thread::sleep(Duration::from_millis(500));
    let ours_text = agent.get("/metrics").text();
    let ne_text = node_exporter_filesystem();
    let ours = filesystem_series(&ours_text, "accel_");
    let ne = filesystem_series(&ne_text, "node_");

    // The same series, label for label.
    let keys = |m: &BTreeMap<(String, Labels), f64>| m.keys().cloned().collect::<BTreeSet<_>>();
    assert_eq!(
        keys(&ours),
        keys(&ne),
        "series differ\nagent:\n{ours_text}\nnode_exporter:\n{ne_text}"
    );
    let mut compared = BTreeSet::new();
    for (k, theirs) in &ne {
        let mine = ours[k];
        let size = ne
            .get(&("filesystem_size_bytes".to_owned(), k.1.clone()))
            .copied()
            .unwrap_or(0.0);
        let files = ne
            .get(&("filesystem_files".to_owned(), k.1.clone()))
            .copied()
            .unwrap_or(0.0);
        // What may change between the two reads: free space and inodes
        // (this machine builds and tests in parallel).
        let tolerance = match k.0.as_str() {
            "filesystem_free_bytes" | "filesystem_avail_bytes" => (size * 0.01).max(1e9),
            "filesystem_files_free" => (files * 0.01).max(1e5),
            _ => 0.0,
        };
        assert!(
            (mine - theirs).abs() <= tolerance,
            "accel_{}{:?} = {mine}, node_exporter says {theirs} (tolerance {tolerance})",
            k.0,
            k.1
        );
        compared.insert(label(&k.1, "mountpoint").to_owned());
    }
    // Not vacuous: the root filesystem or /dev/shm, with real sizes, and
    // /dev/shm wherever it is mounted (it is here: a tmpfs).
    let shm_mounted = std::fs::read_to_string("/proc/1/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/dev/shm"));
    assert!(shm_mounted, "this machine has no /dev/shm mount");
    assert!(compared.contains("/dev/shm"), "{compared:?}");
    let sized = ne
        .iter()
        .filter(|((n, _), v)| n == "filesystem_size_bytes" && **v > 0.0)
        .count();
    assert!(sized >= 1, "no filesystem with a size:\n{ne_text}");
    // One agent-only `stuck` series per mount, all 0 here.
    for ((name, labels), _) in ne
        .iter()
        .filter(|((n, _), _)| n == "filesystem_device_error")
    {
        let series = format!(
            "accel_filesystem_stuck{{device=\"{}\",mountpoint=\"{}\",fstype=\"{}\"}}",
            label(labels, "device"),
            label(labels, "mountpoint"),
            label(labels, "fstype")
        );
        assert_eq!(value(&ours_text, &series), Some(0.0), "{name} {series}");
    }
    eprintln!(
        "compared {} series on {} mounts with node_exporter: {compared:?}",
        ne.len(),
        compared.len()
    );
}

/// The agent's threads by name, and how many are named `filesystem-stat`
/// (its statfs threads; names are cut to 15 bytes).
fn threads(pid: u32) -> (usize, usize) {
    let mut all = 0;
    let mut statfs = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        all += 1;
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        statfs += usize::from(comm.trim_end() == "filesystem-stat");
    }
    (all, statfs)
}

/// The fewest statfs threads seen over a few reads: the one on a hung
/// mount stays, those on healthy mounts live for microseconds.
fn statfs_threads(pid: u32) -> usize {
    (0..5)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(7));
            threads(pid).1
        })
        .min()
        .unwrap()
}

#[test]
fn a_hung_mount_is_stuck_while_scrapes_stay_fast() {
    let mut fuse = HungFuse::mount();
    let mp = fuse.mount_point.display().to_string();
    let series = |family: &str| {
        format!("{family}{{device=\"accel-hang\",mountpoint=\"{mp}\",fstype=\"fuse.accel-hang\"}}")
    };
    let agent = Agent::start(&[
        "--collector.disable-defaults",
        "--collector.filesystem",
        "--collector.filesystem.interval=200ms",
        "--collector.filesystem.mount-timeout=1s",
    ]);
    let pid = agent.child.id();
    agent.wait_for("the hung mount to be stuck", Duration::from_secs(15), |t| {
        value(t, &series("accel_filesystem_stuck")) == Some(1.0)
    });
    let (threads_then, _) = threads(pid);

    // 15 sampling intervals later: every scrape fast and complete, one
    // thread held by the hung mount, no thread added.
    let until = Instant::now() + Duration::from_secs(3);
    let mut scrapes = 0;
    let mut slowest = Duration::ZERO;
    while Instant::now() < until {
        let t = Instant::now();
        let r = agent.get("/metrics");
        let took = t.elapsed();
        slowest = slowest.max(took);
        assert_eq!(r.status, 200);
        let text = r.text();
        assert!(took < Duration::from_millis(100), "a scrape took {took:?}");
        assert_eq!(value(&text, &series("accel_filesystem_stuck")), Some(1.0));
        assert_eq!(
            value(&text, &series("accel_filesystem_device_error")),
            Some(1.0)
        );
        assert_eq!(value(&text, &series("accel_filesystem_size_bytes")), None);
        assert_eq!(
            value(&text, "accel_collector_success{collector=\"filesystem\"}"),
            Some(1.0)
        );
        // The other mounts are still reported, with values.
        let healthy = text
            .lines()
            .filter(|l| l.starts_with("accel_filesystem_size_bytes{") && !l.contains(&mp))
            .count();
        assert!(healthy >= 1, "no other mount reported:\n{text}");
        scrapes += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(statfs_threads(pid), 1, "one thread per hung mount");
    let (threads_now, _) = threads(pid);
    assert!(
        threads_now <= threads_then + 1,
        "threads grew from {threads_then} to {threads_now}"
    );
    eprintln!("{scrapes} scrapes during the hang, slowest {slowest:?}; {threads_now} threads");

    // The call returns (ENOTCONN): no longer stuck, still an error, and
    // the thread is gone.
    fuse.abort();
    agent.wait_for("the mount to come unstuck", Duration::from_secs(10), |t| {
        value(t, &series("accel_filesystem_stuck")) == Some(0.0)
            && value(t, &series("accel_filesystem_device_error")) == Some(1.0)
    });
    assert_eq!(statfs_threads(pid), 0);
    // Unmounted: gone from the series.
    drop(fuse);
    agent.wait_for("the mount to go", Duration::from_secs(10), |t| {
        !t.contains(&mp)
    });
}
