//! `accel-agent storage-test` on real directories (the test machine's
//! disk, a tmpfs, a ramfs that refuses direct I/O), its refusals and its
//! cleanup after a real SIGINT; and the storage-probe collector's series,
//! with a FUSE mount that never answers.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::golden::{check_golden, normalize, promtool_check};
use crate::util::{bin, value, Agent, HungFuse, TempDir};

/// A filesystem of type `fstype` mounted (as root) on a scratch directory,
/// unmounted when dropped.
struct Mount {
    target: PathBuf,
    _dir: TempDir,
}

impl Mount {
    fn new(fstype: &str, options: &str) -> Mount {
        let dir = TempDir::new(&format!("storage-{fstype}"));
        let target = dir.0.join("mnt");
        std::fs::create_dir(&target).unwrap();
        let c = |s: &str| std::ffi::CString::new(s).unwrap();
        let (src, t, fs, opts) = (
            c(fstype),
            c(target.to_str().unwrap()),
            c(fstype),
            c(options),
        );
        let flags = if options.split(',').any(|o| o == "ro") {
            libc::MS_RDONLY
        } else {
            0
        };
        // SAFETY: NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                t.as_ptr(),
                fs.as_ptr(),
                flags,
                opts.as_ptr().cast(),
            )
        };
        assert_eq!(
            rc,
            0,
            "mounting {fstype} needs root: {}",
            std::io::Error::last_os_error()
        );
        Mount { target, _dir: dir }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let t = std::ffi::CString::new(self.target.to_str().unwrap()).unwrap();
        // SAFETY: as above.
        unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) };
    }
}

fn storage_test(args: &[&str]) -> Output {
    Command::new(bin())
        .arg("storage-test")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run accel-agent storage-test")
}

/// Runs a short test of `dir` with `--json`: the output and the document.
fn measure(dir: &Path, extra: &[&str]) -> (Output, Value) {
    let json = dir.with_extension("json");
    let d = dir.to_str().unwrap();
    let j = json.to_str().unwrap();
    let mut args = vec![
        "--path",
        d,
        "--size",
        "8M",
        "--duration",
        "2s",
        "--jobs",
        "2",
        "--json",
        j,
    ];
    args.extend_from_slice(extra);
    let out = storage_test(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    (out, v)
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

fn f(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing or not a number in {v:#}"))
}

#[test]
fn storage_test_measures_a_directory_and_removes_what_it_wrote() {
    let dir = TempDir::new("storage-test");
    let (out, v) = measure(&dir.0, &["--need-bytes-per-second", "1MB"]);
    let text = String::from_utf8(out.stdout).unwrap();
    for key in [
        "seq_write_bytes_per_second",
        "seq_read_bytes_per_second",
        "rand_read_iops",
        "small_files_per_second",
        "small_files_bytes_per_second",
    ] {
        assert!(f(&v, key) > 0.0, "{key}: {v:#}");
    }
    // 8 MiB in whole 1 MiB blocks; a quarter of it in 100 KiB files.
    assert_eq!(f(&v, "size_bytes"), 8.0 * 1048576.0);
    assert_eq!(v["small_files_count"], 20);
    let (p50, p99, p999) = (
        f(&v, "rand_read_latency_p50_seconds"),
        f(&v, "rand_read_latency_p99_seconds"),
        f(&v, "rand_read_latency_p999_seconds"),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= p999, "{v:#}");
    // The rates are counts over times: random reads ran for at least half
    // of --duration (1 s), and every small file read is 100 KiB.
    assert!(f(&v, "rand_read_ios") >= f(&v, "rand_read_iops"), "{v:#}");
    let ratio = f(&v, "small_files_bytes_per_second") / f(&v, "small_files_per_second");
    assert!((ratio - 102400.0).abs() < 1.0, "{v:#}");
    // Direct I/O wherever the filesystem takes it (not ramfs).
    let fs = v["filesystem"].as_str().unwrap();
    assert_eq!(v["direct_io"], fs != "ramfs", "{v:#}");
    // 1 MB/s is within any disk's reach.
    assert_eq!(v["verdict"]["enough"], true, "{v:#}");
    assert!(text.contains("the job needs 1.0 MB/s"), "{text}");
    assert!(text.contains(": enough\n"), "{text}");
    for pattern in [
        "checkpoint save",
        "checkpoint load",
        "random reads",
        "small files",
    ] {
        assert!(text.contains(pattern), "{pattern}: {text}");
    }
    assert!(
        entries(&dir.0).is_empty(),
        "left behind: {:?}",
        entries(&dir.0)
    );

    // A need beyond any disk: not enough, sequential read is the limit.
    let (out, v) = measure(&dir.0, &["--need-bytes-per-second", "1TB"]);
    assert_eq!(v["verdict"]["enough"], false);
    assert_eq!(v["verdict"]["limit"], "seq_read");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("the job needs 1000.00 GB/s: NOT enough"),
        "{text}"
    );
    assert!(entries(&dir.0).is_empty());

    // The need from a profile's JSON: its followed processes' read rates.
    let profile = dir.0.with_extension("profile.json");
    std::fs::write(
        &profile,
        r#"{"verdict": "input-bound", "summary": {"disks": [],
            "processes": [{"pid": "7", "read_bytes_per_second": {"mean": 1e6, "p50": 1e6, "p95": 2e6, "max": 3e6}}]}}"#,
    )
    .unwrap();
    let (out, v) = measure(&dir.0, &["--need-from-profile", profile.to_str().unwrap()]);
    let _ = std::fs::remove_file(&profile);
    assert_eq!(v["verdict"]["need_bytes_per_second"], 2e6);
    assert_eq!(v["verdict"]["enough"], true);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("need: 2.0 MB/s (the read rate of the 1 followed process(es), p95, in "),
        "{text}"
    );
    assert!(entries(&dir.0).is_empty());
}

#[test]
fn storage_test_on_ramfs_falls_back_to_buffered_io_and_says_so() {
    let m = Mount::new("ramfs", "");
    let (out, v) = measure(&m.target, &[]);
    assert_eq!(v["filesystem"], "ramfs");
    assert_eq!(v["direct_io"], false);
    let notes = v["notes"].to_string();
    assert!(notes.contains("direct I/O is refused on ramfs"), "{notes}");
    assert!(notes.contains("in memory"), "{notes}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("ramfs on"), "{text}");
    assert!(text.contains("buffered I/O"), "{text}");
    assert!(entries(&m.target).is_empty());
}

#[test]
fn storage_test_on_tmpfs_says_the_numbers_are_memory() {
    let m = Mount::new("tmpfs", "size=64m");
    let (out, v) = measure(&m.target, &[]);
    assert_eq!(v["filesystem"], "tmpfs");
    let notes = v["notes"].to_string();
    assert!(
        notes.contains("is tmpfs, in memory: these numbers are memory copies, not storage"),
        "{notes}"
    );
    // Whether this kernel's tmpfs takes O_DIRECT (6.6 and later do) or not,
    // the report never calls tmpfs numbers the storage's.
    assert!(!notes.contains("the numbers are the storage's"), "{notes}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("note: "), "{text}");
    assert!(entries(&m.target).is_empty());
}

/// A refusal: exit 2, one line on stderr containing `what`, nothing written.
fn refused(args: &[&str], what: &str) {
    let out = storage_test(args);
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    assert!(
        err.starts_with("accel-agent storage-test: ") && err.contains(what),
        "{args:?}: {err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn storage_test_refuses_what_it_cannot_test() {
    let dir = TempDir::new("storage-refuse");
    let missing = dir.0.join("missing");
    refused(
        &["--path", missing.to_str().unwrap()],
        "No such file or directory",
    );
    let file = dir.0.join("file");
    std::fs::write(&file, "x").unwrap();
    refused(&["--path", file.to_str().unwrap()], "not a directory");
    refused(&[], "--path");
    refused(
        &["--path", dir.0.to_str().unwrap(), "--size", "1K"],
        "minimum of 1MiB",
    );
    refused(
        &["--path", dir.0.to_str().unwrap(), "--jobs", "0"],
        "number of jobs",
    );
    refused(
        &["--path", dir.0.to_str().unwrap(), "--duration", "500ms"],
        "minimum of 1s",
    );
    refused(
        &[
            "--path",
            dir.0.to_str().unwrap(),
            "--need-bytes-per-second",
            "fast",
        ],
        "not a byte count",
    );
    refused(
        &[
            "--path",
            dir.0.to_str().unwrap(),
            "--need-from-profile",
            file.to_str().unwrap(),
        ],
        "not a profile's JSON",
    );
    refused(
        &[
            "--path",
            dir.0.to_str().unwrap(),
            "--need-from-profile",
            file.to_str().unwrap(),
            "--need-bytes-per-second",
            "1GB",
        ],
        "cannot be used with",
    );
    // More than half the free space: 40 MiB (and 10 MiB of small files) of
    // a 64 MiB tmpfs.
    let small = Mount::new("tmpfs", "size=64m");
    refused(
        &["--path", small.target.to_str().unwrap(), "--size", "40M"],
        "more than half the free space",
    );
    let ro = Mount::new("tmpfs", "ro,size=1m");
    refused(&["--path", ro.target.to_str().unwrap()], "not writable");
    std::fs::remove_file(&file).unwrap();
    assert!(entries(&dir.0).is_empty(), "{:?}", entries(&dir.0));
    assert!(entries(&small.target).is_empty());
}

#[test]
fn storage_test_removes_its_files_on_sigint() {
    let dir = TempDir::new("storage-sigint");
    let mut child = Command::new(bin())
        .args(["storage-test", "--path", dir.0.to_str().unwrap()])
        .args(["--size", "32M", "--duration", "30s"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupted during the random reads: the checkpoint file is there.
    let work = dir.0.join(format!("accel-storage-test.{}", child.id()));
    let file = work.join("checkpoint.bin");
    let until = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(&file).map_or(0, |m| m.len()) < 32 << 20 {
        assert!(Instant::now() < until, "no checkpoint file written");
        assert!(child.try_wait().unwrap().is_none(), "exited early");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: a signal to the child this test started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still running 10 s after SIGINT"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted; removed"), "{err}");
    assert!(!work.exists(), "{} left behind", work.display());
    assert!(entries(&dir.0).is_empty(), "{:?}", entries(&dir.0));
    // No summary for a test that did not finish.
    assert!(out.stdout.is_empty());
}

const PROBE_FAMILIES: [&str; 3] = [
    "accel_storage_probe_duration_seconds",
    "accel_storage_probe_success",
    "accel_storage_probe_last_success_timestamp_seconds",
];

/// The storage-probe and collector lines of a scrape.
fn probe_lines(text: &str) -> String {
    text.lines()
        .filter(|l| {
            let f = if l.starts_with('#') {
                l.split(' ').nth(2).unwrap_or_default()
            } else {
                l.split(['{', ' ']).next().unwrap_or_default()
            };
            PROBE_FAMILIES.contains(&f)
                || l.contains("{collector=\"storage-probe\"")
                    && !l.starts_with("accel_collector_duration")
                    && !l.starts_with("accel_collector_last_success")
                    && !l.starts_with("accel_collector_samples_total")
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn storage_probe_matches_golden() {
    let dir = TempDir::new("storage-probe");
    let ok = dir.0.join("data");
    std::fs::create_dir(&ok).unwrap();
    let missing = dir.0.join("missing");
    let agent = Agent::start(&[
        "--collector.disable-defaults",
        "--collector.storage-probe",
        &format!("--collector.storage-probe.path={}", ok.display()),
        &format!("--collector.storage-probe.path={}", missing.display()),
        "--collector.storage-probe.interval=500ms",
    ]);
    let okp = ok.display().to_string();
    let mp = missing.display().to_string();
    let text = agent.wait_for("two probes", Duration::from_secs(10), |t| {
        value(
            t,
            "accel_collector_samples_total{collector=\"storage-probe\"}",
        )
        .is_some_and(|n| n >= 2.0)
    });
    assert_eq!(
        value(
            &text,
            &format!("accel_storage_probe_success{{path=\"{okp}\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            &format!("accel_storage_probe_success{{path=\"{mp}\"}}")
        ),
        Some(0.0)
    );
    for op in ["write", "fsync", "read", "delete"] {
        let d = value(
            &text,
            &format!("accel_storage_probe_duration_seconds{{path=\"{okp}\",op=\"{op}\"}}"),
        )
        .unwrap_or_else(|| panic!("no {op} duration:\n{text}"));
        assert!((0.0..5.0).contains(&d), "{op}: {d}");
    }
    // The missing directory fails at its first step, and never succeeded.
    assert!(!text.contains(&format!(
        "accel_storage_probe_duration_seconds{{path=\"{mp}\""
    )));
    assert!(!text.contains(&format!(
        "accel_storage_probe_last_success_timestamp_seconds{{path=\"{mp}\"}}"
    )));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let last = value(
        &text,
        &format!("accel_storage_probe_last_success_timestamp_seconds{{path=\"{okp}\"}}"),
    )
    .unwrap();
    assert!((now - last).abs() < 10.0, "{last} vs {now}");
    assert!(
        value(
            &text,
            "accel_collector_errors_by_kind_total{collector=\"storage-probe\",kind=\"io\"}"
        )
        .unwrap()
            >= 1.0
    );
    // Nothing left in the probed directory.
    assert!(entries(&ok).is_empty(), "{:?}", entries(&ok));
    let (lint, msg) = promtool_check(&text);
    assert!(
        lint && msg.trim().is_empty(),
        "promtool check metrics:\n{msg}"
    );

    let golden = probe_lines(&text)
        .replace(&okp, "<dir>/data")
        .replace(&mp, "<dir>/missing");
    let golden = normalize(
        &golden,
        &[
            "accel_storage_probe_duration_seconds",
            "accel_storage_probe_last_success_timestamp_seconds",
            "accel_collector_errors_total",
            "accel_collector_errors_by_kind_total",
        ],
    );
    check_golden("storage-probe", &golden);
}

/// Threads of `pid` named `storage-probe`.
fn probe_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim_end() == "storage-probe")
        })
        .count()
}

#[test]
fn a_hung_storage_probe_fails_at_its_deadline_without_blocking_the_rest() {
    let mut fuse = HungFuse::mount();
    let dir = TempDir::new("storage-probe-hang");
    let hung = fuse.mount_point.display().to_string();
    let ok = dir.0.display().to_string();
    let agent = Agent::start(&[
        "--collector.disable-defaults",
        "--collector.storage-probe",
        &format!("--collector.storage-probe.path={hung}"),
        &format!("--collector.storage-probe.path={ok}"),
        "--collector.storage-probe.interval=1s",
        "--collector.storage-probe.timeout=500ms",
        "--collector.load",
        "--collector.load.interval=200ms",
    ]);
    let pid = agent.child.id();
    let success = |p: &str| format!("accel_storage_probe_success{{path=\"{p}\"}}");
    agent.wait_for("the hung probe to fail", Duration::from_secs(15), |t| {
        value(t, &success(&hung)) == Some(0.0) && value(t, &success(&ok)) == Some(1.0)
    });

    // Several intervals later: scrapes fast, the healthy path still probed
    // and succeeding, the collector itself healthy and not stale, the load
    // collector sampling, one thread held by the hung probe.
    let samples = |t: &str, c: &str| {
        value(
            t,
            &format!("accel_collector_samples_total{{collector=\"{c}\"}}"),
        )
        .unwrap()
    };
    let first = agent.get("/metrics").text();
    let until = Instant::now() + Duration::from_secs(4);
    let mut last = first.clone();
    while Instant::now() < until {
        let t = Instant::now();
        let r = agent.get("/metrics");
        let took = t.elapsed();
        assert_eq!(r.status, 200);
        assert!(took < Duration::from_millis(100), "a scrape took {took:?}");
        last = r.text();
        assert_eq!(value(&last, &success(&hung)), Some(0.0));
        assert_eq!(
            value(&last, "accel_collector_stale{collector=\"storage-probe\"}"),
            None
        );
        assert_eq!(
            value(
                &last,
                "accel_collector_success{collector=\"storage-probe\"}"
            ),
            Some(1.0)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(value(&last, &success(&ok)), Some(1.0));
    assert!(
        samples(&last, "storage-probe") >= samples(&first, "storage-probe") + 2.0,
        "the probe collector stopped sampling"
    );
    assert!(samples(&last, "load") >= samples(&first, "load") + 10.0);
    let timeouts = value(
        &last,
        "accel_collector_errors_by_kind_total{collector=\"storage-probe\",kind=\"timeout\"}",
    )
    .unwrap();
    assert!(timeouts >= 3.0, "{timeouts} timeouts");
    // A probe of the healthy path takes milliseconds, and the sample that
    // waits for the hung one's first deadline no more than 500 ms.
    let d = value(
        &last,
        "accel_collector_duration_seconds{collector=\"storage-probe\"}",
    )
    .unwrap();
    assert!(d < 0.5, "sample took {d} s");
    assert!(!last.contains(&format!(
        "accel_storage_probe_last_success_timestamp_seconds{{path=\"{hung}\"}}"
    )));
    let threads = (0..5)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(7));
            probe_threads(pid)
        })
        .min()
        .unwrap();
    assert_eq!(threads, 1, "one thread per hung probe");

    // The mount's connection aborted: the probe returns (ENOTCONN), is
    // still failed, and its thread is gone.
    fuse.abort();
    agent.wait_for(
        "the hung probe's thread to end",
        Duration::from_secs(10),
        |_| probe_threads(pid) == 0,
    );
    let t = agent.get("/metrics").text();
    assert_eq!(value(&t, &success(&hung)), Some(0.0));
    assert_eq!(value(&t, &success(&ok)), Some(1.0));
}
