//! Sampler threads: one per collector, each at its own interval.
//!
//! Collectors may block (file reads on a hung NFS mount, NVML calls into a
//! wedged driver), so each runs on a plain thread of its own, never on the
//! async runtime. A sample that overruns its interval skips the ticks it
//! missed and counts them; a sample that hangs is seen by the server as
//! stale (see [`Agent::is_stale`](crate::state::Agent::is_stale)), and by
//! a watchdog thread that logs one warning when a sample runs past its
//! deadline, while it still hangs, and one info line once a sample finishes
//! within its deadline again: one pair per episode, not one per tick.

use std::ops::ControlFlow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use accel_collectors::workers::panic_text;
use accel_collectors::{
    Activity, BuildContext, Built, CollectError, Collector, ErrorKind, Paths, Sample, Shared,
    Workers,
};

use crate::config::{CollectorConfig, Config};
use crate::state::{Agent, CollectorState, Snapshot};

/// The sampler threads, by collector name: the systemd watchdog is pinged
/// only while all of them run (see [`crate::systemd`]).
#[derive(Debug, Default)]
pub struct Threads(pub Vec<(&'static str, std::thread::JoinHandle<()>)>);

impl Threads {
    /// The collectors whose sampler thread has ended. A sampler loops
    /// forever and catches its collector's panics, so this is a bug (a
    /// panic in the sampler itself), never a hung collector.
    pub fn ended(&self) -> Vec<&'static str> {
        self.0
            .iter()
            .filter(|(_, t)| t.is_finished())
            .map(|(name, _)| *name)
            .collect()
    }
}

/// Builds one collector with its options, the shared topics and a
/// supervisor of its own for its workers.
pub fn build(
    cc: &CollectorConfig,
    paths: &Paths,
    shared: &Shared,
) -> (Result<Built, CollectError>, Workers, Activity) {
    let workers = Workers::new(cc.spec.name);
    let activity = Activity::default();
    let built = (cc.spec.build)(&BuildContext {
        paths,
        options: &*cc.options,
        shared,
        workers: &workers,
        activity: &activity,
        detail: cc.detail,
    });
    (built, workers, activity)
}

/// Builds the enabled collectors and starts their sampler threads.
pub fn start(config: &Config) -> Arc<Agent> {
    spawn(config).0
}

/// Called on a sampler thread after each sample is published, with the
/// collector and the snapshot just published; `Break` ends that thread.
/// `accel-agent profile` records every sample this way.
pub type Hook = Arc<dyn Fn(&CollectorState, &Arc<Snapshot>) -> ControlFlow<()> + Send + Sync>;

/// As [`start`], and returns the sampler threads too.
pub fn spawn(config: &Config) -> (Arc<Agent>, Threads) {
    spawn_with(config, None)
}

/// A running collector, its state, and the families its sampler drops
/// (those marked detail, without `--collector.<name>.detail`).
type Running = (Box<dyn Collector>, Arc<CollectorState>, Vec<&'static str>);

/// As [`spawn`], calling `hook` after every published sample.
pub fn spawn_with(config: &Config, hook: Option<Hook>) -> (Arc<Agent>, Threads) {
    let mut running: Vec<Running> = Vec::new();
    let mut not_running = Vec::new();
    let shared = Shared::default();
    for cc in &config.collectors {
        let name = cc.spec.name;
        if !cc.enabled {
            not_running.push((name, "disabled".to_owned()));
            continue;
        }
        let (built, workers, activity) = build(cc, &config.paths, &shared);
        match built {
            Ok(Built::Ready(c)) => {
                tracing::info!(collector = name, interval = ?cc.interval, "collector enabled");
                let state =
                    CollectorState::with_workers(name, cc.interval, workers.stats(), activity);
                let hidden = if cc.detail {
                    Vec::new()
                } else {
                    cc.spec
                        .families
                        .iter()
                        .filter(|f| f.detail)
                        .map(|f| f.name)
                        .collect()
                };
                running.push((c, Arc::new(state), hidden));
            }
            Ok(Built::Absent(why)) => {
                tracing::info!(collector = name, reason = %why, "collector not started: hardware or interface absent");
                not_running.push((name, why));
            }
            Err(e) => {
                tracing::warn!(collector = name, error = %e, "collector could not be built");
                not_running.push((name, e.to_string()));
            }
        }
    }
    let agent = Arc::new(
        Agent::new(
            running.iter().map(|(_, s, _)| s.clone()).collect(),
            not_running,
        )
        .with_shared(shared),
    );
    let mut threads = Threads::default();
    for (collector, state, hidden) in running {
        let agent = agent.clone();
        let name = state.name;
        let hook = hook.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("sample-{}", state.name))
            .spawn(move || sample_loop(collector, &state, &hidden, &agent, hook.as_ref()));
        match spawned {
            Ok(t) => threads.0.push((name, t)),
            Err(e) => tracing::error!(error = %e, "cannot start a sampler thread"),
        }
    }
    let weak = Arc::downgrade(&agent);
    if let Err(e) = std::thread::Builder::new()
        .name("sample-watchdog".into())
        .spawn(move || watchdog(&weak))
    {
        tracing::warn!(error = %e, "cannot start the sampler watchdog: hung samples are not logged");
    }
    (agent, threads)
}

/// What in `sample` its collector's family table does not declare: a
/// family, or a family's type, help or a label name.
pub fn undeclared(collector: &str, sample: &Sample) -> Option<String> {
    let spec = accel_collectors::registry()
        .iter()
        .find(|s| s.name == collector)?;
    for f in sample.families() {
        let Some(def) = spec.family(&f.name) else {
            return Some(format!(
                "family {} is not in the {collector} collector's table",
                f.name
            ));
        };
        if def.kind != f.kind || def.help != f.help {
            return Some(format!(
                "family {} differs from its declaration in type or help",
                f.name
            ));
        }
        for series in f.series.iter().filter(|_| !def.open_labels) {
            if let Some((l, _)) = series.labels.iter().find(|(l, _)| {
                !(def.labels.contains(l) || series.suffix == "_bucket" && *l == "le")
            }) {
                return Some(format!("family {} has an undeclared label {l}", f.name));
            }
        }
    }
    None
}

/// The calling thread's kernel id, from `/proc/thread-self` (`PID/task/TID`).
fn current_thread_id() -> Option<u64> {
    std::fs::read_link("/proc/thread-self")
        .ok()?
        .file_name()?
        .to_str()?
        .parse()
        .ok()
}

/// What thread `tid` of this process is blocked in, from
/// `/proc/self/task/<tid>/syscall` and `wchan`: `"clock_nanosleep (230),
/// kernel hrtimer_nanosleep"`, `"running"`, or `"unknown"`.
pub fn blocked_in(tid: u64) -> String {
    let dir = format!("/proc/self/task/{tid}");
    let syscall = std::fs::read_to_string(format!("{dir}/syscall")).unwrap_or_default();
    let first = syscall.split_whitespace().next().unwrap_or("");
    let call = match first.parse::<u64>() {
        Ok(n) => match syscall_name(n) {
            Some(name) => format!("{name} ({n})"),
            None => format!("syscall {n}"),
        },
        Err(_) if first == "running" => return "running".to_owned(),
        Err(_) => return "unknown".to_owned(),
    };
    let wchan = std::fs::read_to_string(format!("{dir}/wchan")).unwrap_or_default();
    match wchan.trim() {
        "" | "0" => call,
        w => format!("{call}, kernel {w}"),
    }
}

/// The names of the system calls a hung read or driver call sits in.
fn syscall_name(n: u64) -> Option<&'static str> {
    #[cfg(target_arch = "x86_64")]
    const NAMES: &[(u64, &str)] = &[
        (0, "read"),
        (1, "write"),
        (2, "open"),
        (4, "stat"),
        (7, "poll"),
        (16, "ioctl"),
        (17, "pread64"),
        (23, "select"),
        (35, "nanosleep"),
        (202, "futex"),
        (230, "clock_nanosleep"),
        (232, "epoll_wait"),
        (257, "openat"),
        (262, "newfstatat"),
        (270, "pselect6"),
        (271, "ppoll"),
        (281, "epoll_pwait"),
    ];
    #[cfg(target_arch = "aarch64")]
    const NAMES: &[(u64, &str)] = &[
        (29, "ioctl"),
        (56, "openat"),
        (63, "read"),
        (64, "write"),
        (67, "pread64"),
        (73, "ppoll"),
        (79, "newfstatat"),
        (98, "futex"),
        (101, "nanosleep"),
        (115, "clock_nanosleep"),
    ];
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    const NAMES: &[(u64, &str)] = &[];
    NAMES.iter().find(|(k, _)| *k == n).map(|(_, v)| *v)
}

/// The shortest and longest the watchdog sleeps between looks.
const WATCH_MIN: Duration = Duration::from_millis(50);
const WATCH_MAX: Duration = Duration::from_secs(10);

/// Logs, once per episode, a sample that runs past its deadline, while it
/// runs. Ends with the agent.
///
/// It wakes when the first running sample would pass its deadline, and
/// while none runs after the shortest deadline (a sample that starts
/// meanwhile cannot be overdue sooner): about once every 2 s on a default
/// agent rather than on a fixed short tick, since every wake-up costs CPU
/// (tens of µs in a VM) on a node whose agent should be idle between samples.
fn watchdog(agent: &Weak<Agent>) {
    let mut sleep = WATCH_MIN;
    loop {
        std::thread::sleep(sleep);
        let Some(agent) = agent.upgrade() else {
            return;
        };
        sleep = WATCH_MAX;
        for c in &agent.collectors {
            let Some(running) = agent.running_for(c) else {
                sleep = sleep.min(c.deadline);
                continue;
            };
            if running <= c.deadline {
                sleep = sleep.min(c.deadline - running + WATCH_MIN);
            } else if agent.begin_overdue(c) {
                // What the collector said it is doing (the GPU and the NVML
                // call), and from the kernel what its thread is blocked in
                // (an ioctl into a wedged driver, a read on a hung mount).
                tracing::warn!(
                    collector = c.name,
                    thread = %format!("sample-{}", c.name),
                    doing = %c.activity.describe().unwrap_or_else(|| "unknown".to_owned()),
                    blocked_in = %c.thread_id().map_or_else(|| "unknown".to_owned(), blocked_in),
                    deadline = ?c.deadline,
                    running_for = ?running,
                    "sample running past its deadline (a hung read or driver call); the collector is reported stale and its metrics withheld until a sample finishes in time"
                );
            }
        }
        sleep = sleep.max(WATCH_MIN);
    }
}

fn sample_loop(
    mut collector: Box<dyn Collector>,
    state: &CollectorState,
    hidden: &[&'static str],
    agent: &Agent,
    hook: Option<&Hook>,
) {
    if let Some(tid) = current_thread_id() {
        state.set_thread_id(tid);
    }
    let mut next = Instant::now();
    let mut failing = false;
    let mut overruns = 0;
    loop {
        let started = Instant::now();
        agent.begin_sample(state);
        let mut sample = Sample::new();
        let result = match catch_unwind(AssertUnwindSafe(|| collector.sample(&mut sample))) {
            Ok(Ok(())) => {
                if !hidden.is_empty() {
                    sample.retain(|name| !hidden.contains(&name));
                }
                Ok(sample)
            }
            Ok(Err(e)) => Err(e),
            Err(panic) => Err(CollectError::new(
                ErrorKind::Parse,
                format!("collector panicked: {}", panic_text(&*panic)),
            )),
        };
        // Debug builds (every test run) hold each sample to the collector's
        // family table: an undeclared family fails the sample, loudly.
        #[cfg(debug_assertions)]
        let result = result.and_then(|s| match undeclared(state.name, &s) {
            None => Ok(s),
            Some(why) => Err(CollectError::new(ErrorKind::Parse, why)),
        });
        match &result {
            Err(e) if !failing => {
                tracing::warn!(collector = state.name, error = %e, "sample failed; its metrics are withheld until it recovers");
                failing = true;
            }
            Err(e) => tracing::debug!(collector = state.name, error = %e, "sample failed"),
            Ok(s) => {
                if failing {
                    tracing::info!(collector = state.name, "sample recovered");
                    failing = false;
                }
                for e in s.errors() {
                    tracing::debug!(collector = state.name, error = %e, "part of a sample failed");
                }
            }
        }
        let took = started.elapsed();
        agent.publish(state, result, started, overruns);
        if took <= state.deadline {
            if let Some(episode) = agent.end_overdue(state) {
                tracing::info!(
                    collector = state.name,
                    took = ?took,
                    after = ?episode,
                    "sample finished within its deadline again; the collector recovered"
                );
            }
        } else {
            tracing::debug!(collector = state.name, took = ?took, deadline = ?state.deadline, "sample finished after its deadline");
        }
        if hook.is_some_and(|h| h(state, &state.snapshot()).is_break()) {
            return;
        }
        overruns = 0;
        next += state.interval;
        let now = Instant::now();
        while next <= now {
            next += state.interval;
            overruns += 1;
        }
        if overruns > 0 {
            tracing::debug!(
                collector = state.name,
                skipped = overruns,
                "sample overran its interval"
            );
        }
        std::thread::sleep(next - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use accel_collectors::{cpu, FamilyDef};

    #[test]
    fn samples_are_held_to_the_family_table() {
        let mut s = Sample::new();
        s.add(&cpu::SECONDS)
            .add(&[("cpu", "0"), ("mode", "idle")], 1.0);
        assert_eq!(undeclared("cpu", &s), None);

        const OTHER: FamilyDef = FamilyDef::gauge("accel_cpu_other", "Not declared.");
        let mut s = Sample::new();
        s.add(&OTHER).add(&[], 1.0);
        assert!(undeclared("cpu", &s).unwrap().contains("not in the cpu"));

        const RELABELLED: FamilyDef = cpu::SECONDS.labels(&["cpu", "core"]);
        let mut s = Sample::new();
        s.add(&RELABELLED).add(&[("core", "0")], 1.0);
        assert!(undeclared("cpu", &s).unwrap().contains("label core"));

        const REWORDED: FamilyDef =
            FamilyDef::counter("accel_cpu_seconds_total", "Something else.");
        let mut s = Sample::new();
        s.add(&REWORDED);
        assert!(undeclared("cpu", &s).unwrap().contains("help"));
    }

    #[test]
    fn says_what_a_thread_is_blocked_in() {
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            tx.send(current_thread_id()).unwrap();
            std::thread::sleep(Duration::from_millis(500));
        });
        let tid = rx
            .recv()
            .unwrap()
            .expect("a thread id from /proc/thread-self");
        std::thread::sleep(Duration::from_millis(100));
        let what = blocked_in(tid);
        assert!(what.contains("nanosleep"), "{what}");
        t.join().unwrap();
        // A thread that is gone, or never was.
        assert_eq!(blocked_in(u64::MAX), "unknown");
        assert_eq!(syscall_name(u64::MAX), None);
    }
}
