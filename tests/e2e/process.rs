//! The process collector's per-process series (accel_process_*) against
//! real child processes with a known CPU burn and known bytes written.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::golden::promtool_check;
use crate::util::{value, Agent};

/// A python3 child named `comm`: waits `wait` s (so the agent follows it
/// before it works), burns `burn` s of CPU time (not wall time: a busy
/// machine stretches it, the CPU seconds stay), writes and fsyncs `mib` MiB to
/// a file on real storage, then sleeps.
fn worker(comm: &str, wait: f64, burn: f64, mib: usize) -> (Worker, std::path::PathBuf) {
    let file = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{comm}-{}.bin", std::process::id()));
    let script = format!(
        r#"
import os, time
open("/proc/self/comm", "w").write("{comm}")
time.sleep({wait})
end = time.process_time() + {burn}
x = 0
while time.process_time() < end:
    x += 1
fd = os.open("{file}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
block = b"\x5a" * (1 << 20)
for _ in range({mib}):
    os.write(fd, block)
os.fsync(fd)
os.close(fd)
print("done", flush=True)
time.sleep(60)
"#,
        file = file.display()
    );
    let child = Command::new(crate::util::require("python3"))
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start python3");
    (Worker(child), file)
}

/// Kills the child when dropped, also when an assertion fails.
struct Worker(Child);

impl Worker {
    fn id(&self) -> u32 {
        self.0.id()
    }

    fn kill(&mut self) -> std::io::Result<()> {
        self.0.kill()
    }

    fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.0.wait()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn series(text: &str, family: &str, pid: u32, extra: &str) -> Option<f64> {
    let prefix = format!("{family}{{pid=\"{pid}\",");
    text.lines()
        .find(|l| l.starts_with(&prefix) && l.contains(extra))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn follows_a_matched_process_cpu_io_and_perf() {
    let (mut child, file) = worker("accelburn", 1.0, 1.5, 8);
    let pid = child.id();
    let agent = Agent::start(&[
        "--collector.disable-defaults",
        "--collector.process",
        "--collector.process.interval=200ms",
        "--collector.process.match=accel(burn|idle)",
    ]);
    let text = agent.wait_for("the write to land", Duration::from_secs(20), |t| {
        series(t, "accel_process_write_bytes_total", pid, "").is_some_and(|w| w >= 8.0 * 1048576.0)
    });
    // The write happened after the burn: the burn is all in the counters.
    let user = series(
        &text,
        "accel_process_cpu_seconds_total",
        pid,
        "mode=\"user\"",
    )
    .unwrap();
    let system = series(
        &text,
        "accel_process_cpu_seconds_total",
        pid,
        "mode=\"system\"",
    )
    .unwrap();
    assert!(
        (1.3..=4.0).contains(&(user + system)),
        "cpu {user} + {system}"
    );
    assert!(text.contains(&format!(
        "accel_process_info{{pid=\"{pid}\",comm=\"accelburn\",unit=\""
    )));
    assert!(text.contains("reason=\"match\""));
    assert_eq!(series(&text, "accel_process_threads", pid, ""), Some(1.0));
    assert!(series(&text, "accel_process_resident_memory_bytes", pid, "").unwrap() > 1e6);
    assert!(
        series(
            &text,
            "accel_process_page_faults_total",
            pid,
            "kind=\"minor\""
        )
        .unwrap()
            > 0.0
    );
    assert!(
        series(
            &text,
            "accel_process_context_switches_total",
            pid,
            "kind=\"voluntary\""
        )
        .unwrap()
            >= 1.0
    );
    // perf: the task clock started when the agent first saw the process,
    // before the burn, so it holds the burn too (and not more than /proc's
    // CPU time plus a tick of rounding per sample).
    let perf = value(
        &text,
        "accel_collector_feature_enabled{collector=\"process\",feature=\"perf_task_clock\"}",
    );
    match perf {
        Some(1.0) => {
            let tc = series(&text, "accel_process_task_clock_seconds_total", pid, "").unwrap();
            assert!(
                tc >= 1.3 && tc <= user + system + 0.2,
                "task clock {tc} vs cpu {}",
                user + system
            );
        }
        Some(0.0) => {
            assert!(
                agent.log_lines().iter().any(|l| l.contains("perf")),
                "why perf is off is logged"
            );
            assert!(series(&text, "accel_process_task_clock_seconds_total", pid, "").is_none());
        }
        other => panic!("perf_task_clock feature state missing: {other:?}\n{text}"),
    }
    // Cycles and instructions exactly where the PMU is there.
    let hw = value(
        &text,
        "accel_collector_feature_enabled{collector=\"process\",feature=\"perf_hardware\"}",
    );
    let cycles = series(&text, "accel_process_cycles_total", pid, "");
    match hw {
        Some(1.0) => assert!(
            cycles.unwrap() > 1e8,
            "a 1.5 s burn is well over 1e8 cycles"
        ),
        _ => {
            assert!(cycles.is_none());
            assert!(agent
                .log_lines()
                .iter()
                .any(|l| l.contains("no hardware performance counters") || l.contains("perf")));
        }
    }
    let (ok, out) = promtool_check(&text);
    assert!(ok, "{out}");

    // The process exits: its series go with the next sample.
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = std::fs::remove_file(&file);
    agent.wait_for("the series to go", Duration::from_secs(10), |t| {
        !t.contains(&format!("pid=\"{pid}\""))
    });
}

#[test]
fn followed_processes_are_capped() {
    let (mut a, fa) = worker("accelidle", 30.0, 0.0, 0);
    let (mut b, fb) = worker("accelidle", 30.0, 0.0, 0);
    let agent = Agent::start(&[
        "--collector.disable-defaults",
        "--collector.process",
        "--collector.process.interval=200ms",
        "--collector.process.match=accelidle",
        "--collector.process.max=1",
    ]);
    // Wait until both children renamed themselves and were seen.
    let text = agent.wait_for("one followed process", Duration::from_secs(10), |t| {
        t.contains("comm=\"accelidle\"")
    });
    std::thread::sleep(Duration::from_millis(600));
    let text2 = agent.get("/metrics").text();
    for t in [&text, &text2] {
        let n = t
            .lines()
            .filter(|l| l.starts_with("accel_process_info{"))
            .count();
        assert_eq!(n, 1, "{t}");
    }
    // The lower pid wins, stably.
    let low = a.id().min(b.id());
    assert!(
        text2.contains(&format!("accel_process_info{{pid=\"{low}\"")),
        "{text2}"
    );
    assert!(agent
        .log_lines()
        .iter()
        .any(|l| l.contains("--collector.process.max")));
    for c in [&mut a, &mut b] {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    let _ = (std::fs::remove_file(fa), std::fs::remove_file(fb));
}

#[test]
fn a_bad_match_regex_is_refused() {
    let out = Command::new(crate::util::bin())
        .args(["--collector.process.match=(unclosed"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("collector.process.match"), "{err}");
}

#[test]
fn without_privilege_perf_and_io_degrade_to_proc() {
    // The agent as an unprivileged user (nobody) following root's process:
    // without ptrace access (CAP_SYS_PTRACE), whatever perf_event_paranoid
    // says, perf and /proc/PID/io are refused. It says so once, marks the feature
    // off, and still exports what /proc gives.
    // SAFETY: getuid has no preconditions.
    assert_eq!(
        unsafe { libc::getuid() },
        0,
        "this test runs the agent as nobody and needs root (CI runs as root)"
    );
    let (mut child, file) = worker("accelroot", 30.0, 0.0, 0);
    let pid = child.id();
    let dir = crate::util::TempDir::new("nopriv");
    let bin = dir.0.join("accel-agent");
    std::fs::copy(crate::util::bin(), &bin).unwrap();
    use std::os::unix::fs::PermissionsExt;
    for p in [&dir.0, &bin] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut cmd = Command::new(crate::util::require("setpriv"));
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args([
            "--web.listen-address=127.0.0.1:0",
            "--collector.disable-defaults",
            "--collector.process",
            "--collector.process.interval=200ms",
            "--collector.process.match=accelroot",
        ]);
    let agent = Agent::spawn(cmd);
    let text = agent.wait_for("the root process", Duration::from_secs(10), |t| {
        t.contains(&format!("accel_process_info{{pid=\"{pid}\""))
            && t.contains("feature=\"perf_task_clock\"")
    });
    assert_eq!(
        value(
            &text,
            "accel_collector_feature_enabled{collector=\"process\",feature=\"perf_task_clock\"}"
        ),
        Some(0.0),
        "{text}"
    );
    assert!(series(
        &text,
        "accel_process_cpu_seconds_total",
        pid,
        "mode=\"user\""
    )
    .is_some());
    assert!(series(&text, "accel_process_task_clock_seconds_total", pid, "").is_none());
    assert!(series(&text, "accel_process_read_bytes_total", pid, "").is_none());
    std::thread::sleep(Duration::from_millis(600));
    let log = agent.log_lines();
    let refused = log
        .iter()
        .filter(|l| l.contains("perf events refused"))
        .count();
    assert_eq!(refused, 1, "said once, not every sample: {log:#?}");
    assert!(log
        .iter()
        .any(|l| l.contains("perf_event_paranoid") || l.contains("paranoid=")));
    assert!(log
        .iter()
        .any(|l| l.contains("/proc/PID/io") && l.contains("CAP_SYS_PTRACE")));
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = std::fs::remove_file(file);
}
