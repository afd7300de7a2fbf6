//! Bad input and hung reads: the failing collector is reported, the others
//! keep serving, and the endpoint never waits.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::{fixtures, value, Agent, TempDir};

/// A procfs copy the test can change under the running agent.
fn procfs_copy(tag: &str) -> TempDir {
    let dir = TempDir::new(tag);
    for f in ["stat", "diskstats", "meminfo"] {
        std::fs::copy(fixtures().join("proc").join(f), dir.0.join(f)).unwrap();
    }
    dir
}

fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn wait_for(agent: &Agent, what: &str, cond: impl Fn(&str) -> bool) -> String {
    agent.wait_for(what, Duration::from_secs(10), cond)
}

#[test]
fn a_file_that_changes_shape_fails_only_its_collector() {
    let proc = procfs_copy("shape");
    let agent = Agent::start(&[
        &format!("--path.procfs={}", proc.0.display()),
        "--collector.disable-defaults",
        "--collector.disk",
        "--collector.cpu",
        "--collector.disk.interval=100ms",
        "--collector.cpu.interval=100ms",
    ]);
    agent.wait_ready();
    let ok = agent.get("/metrics").text();
    assert_eq!(
        value(&ok, "accel_collector_success{collector=\"disk\"}"),
        Some(1.0)
    );
    let diskstats = proc.0.join("diskstats");
    let good = std::fs::read_to_string(&diskstats).unwrap();
    let parse_errors = "accel_collector_errors_by_kind_total{collector=\"disk\",kind=\"parse\"}";
    let io_errors = "accel_collector_errors_by_kind_total{collector=\"disk\",kind=\"io\"}";

    for (bad, counter) in [
        ("   8       0 sda 1 2 3\n", parse_errors), // truncated
        ("   8       0 sda 1 2 3 4 5 six 7 8 9 10 11\n", parse_errors), // non-numeric
        ("8 0 sda 1 2 3 4 5 6 7 8 9 10 11\nnonsense\n", parse_errors), // shape change
    ] {
        // A kind's series comes at its first error.
        let before = value(&agent.get("/metrics").text(), counter).unwrap_or(0.0);
        replace(&diskstats, bad);
        let text = wait_for(&agent, "the disk collector to fail", |t| {
            value(t, "accel_collector_success{collector=\"disk\"}") == Some(0.0)
        });
        assert!(value(&text, counter).unwrap() > before, "{bad:?}");
        assert!(
            !text.contains("accel_disk_reads_completed_total"),
            "stale disk data served:\n{text}"
        );
        assert_eq!(
            value(&text, "accel_collector_success{collector=\"cpu\"}"),
            Some(1.0)
        );
        assert!(text.contains("accel_cpu_seconds_total{cpu=\"0\",mode=\"user\"}"));
        replace(&diskstats, &good);
        wait_for(&agent, "the disk collector to recover", |t| {
            value(t, "accel_collector_success{collector=\"disk\"}") == Some(1.0)
                && t.contains("accel_disk_reads_completed_total{device=\"sda\"}")
        });
    }

    // A missing file is an io error.
    std::fs::remove_file(&diskstats).unwrap();
    let text = wait_for(&agent, "an io error", |t| {
        value(t, io_errors).unwrap_or(0.0) > 0.0
    });
    assert_eq!(
        value(&text, "accel_collector_success{collector=\"disk\"}"),
        Some(0.0)
    );
    assert_eq!(agent.get("/-/healthy").status, 200);
}

#[test]
fn a_hung_read_never_stalls_the_endpoint() {
    let proc = procfs_copy("hang");
    let fifo = proc.0.join("diskstats");
    std::fs::remove_file(&fifo).unwrap();
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let agent = Agent::start(&[
        &format!("--path.procfs={}", proc.0.display()),
        "--collector.disable-defaults",
        "--collector.disk",
        "--collector.cpu",
        "--collector.disk.interval=1s",
        "--collector.cpu.interval=100ms",
    ]);
    // Reading a FIFO with no writer blocks, as a read of a hung mount does.
    let ready = agent.get("/-/ready");
    assert_eq!(ready.status, 503);
    assert!(ready.text().contains("disk"), "{}", ready.text());
    // After the deadline (2 s) the disk collector is reported stale, and
    // every scrape meanwhile answers at once with the other collectors' data.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut slowest = Duration::ZERO;
    let text = loop {
        let t = Instant::now();
        let r = agent.get("/metrics");
        slowest = slowest.max(t.elapsed());
        let text = r.text();
        if value(&text, "accel_collector_stale{collector=\"disk\"}") == Some(1.0) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "disk never reported stale:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        slowest < Duration::from_millis(500),
        "a scrape took {slowest:?} during the hang"
    );
    assert_eq!(
        value(&text, "accel_collector_success{collector=\"disk\"}"),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "accel_collector_success{collector=\"cpu\"}"),
        Some(1.0)
    );
    assert!(!text.contains("accel_disk_"), "{text}");

    // The read completes: the collector recovers without a restart.
    std::fs::write(
        &fifo,
        std::fs::read_to_string(fixtures().join("proc/diskstats")).unwrap(),
    )
    .unwrap();
    let text = wait_for(&agent, "recovery", |t| {
        value(t, "accel_collector_stale{collector=\"disk\"}").is_none()
            && value(t, "accel_collector_success{collector=\"disk\"}") == Some(1.0)
    });
    assert!(text.contains("accel_disk_reads_completed_total{device=\"sda\"}"));
    // The late sample is counted as a timeout.
    assert_eq!(
        value(
            &text,
            "accel_collector_errors_by_kind_total{collector=\"disk\",kind=\"timeout\"}"
        ),
        Some(1.0)
    );
    assert_eq!(agent.get("/-/ready").status, 200);
}
