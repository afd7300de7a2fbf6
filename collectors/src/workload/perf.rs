//! perf counting for the training processes: one group per thread (task
//! clock as leader, cycles and instructions as members where a PMU is
//! exposed), opened with the `perf-event2` crate.
//!
//! Per thread, not per process with `inherit`: an inherited event follows
//! only the threads started after it was opened, so the threads a training
//! process already runs would be missed. Threads come and go:
//! [`crate::workload`] opens a group for each new one and folds an exited
//! one's counts into its process's. Which events the agent may open is
//! learnt from the first attempts and kept: kernel and user time, user time
//! only (the retry when `perf_event_paranoid` is 2 and the agent lacks
//! CAP_PERFMON), or nothing.

use std::io;

use perf_event::events::{Event, Hardware, Software};
use perf_event::{Builder, Counter, ReadFormat};

/// What perf events this agent may open, learnt from the first attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    Unknown,
    /// Kernel and user time.
    Full,
    /// User space only (perf_event_paranoid 2 without CAP_PERFMON).
    UserOnly,
    Denied,
    /// Switched off (`--collector.process.perf=false`, another procfs).
    Off,
}

/// The perf counters of one thread: task clock (ns), and cycles and
/// instructions where the PMU allows.
pub(super) struct ThreadPerf {
    leader: Counter,
    hardware: Option<(Counter, Counter)>,
}

/// The errno of a failed open. The crate turns E2BIG (an attr the kernel
/// does not know) into an error without one.
fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(match e.kind() {
        io::ErrorKind::Unsupported => libc::E2BIG,
        _ => libc::EINVAL,
    })
}

/// A counting event on thread `tid`, any CPU, enabled at once, not
/// inherited by threads it starts (each thread has its own group).
fn builder<'a>(event: impl Event + 'static, tid: libc::pid_t, user_only: bool) -> Builder<'a> {
    let mut b = Builder::new(event);
    b.observe_pid(tid)
        .any_cpu()
        .inherit(false)
        .enabled(true)
        .exclude_kernel(user_only)
        .exclude_hv(user_only)
        .read_format(
            ReadFormat::GROUP
                | ReadFormat::ID
                | ReadFormat::TOTAL_TIME_ENABLED
                | ReadFormat::TOTAL_TIME_RUNNING,
        );
    b
}

impl ThreadPerf {
    /// Opens the group of thread `tid`; cycles and instructions only when
    /// `hardware` and both open (a machine without a PMU refuses them, with
    /// ENOENT in most VMs). `Err` is the errno of the task clock's open.
    fn open(tid: u32, user_only: bool, hardware: bool) -> Result<Self, i32> {
        let tid = libc::pid_t::try_from(tid).map_err(|_| libc::ESRCH)?;
        let mut leader = builder(Software::TASK_CLOCK, tid, user_only)
            .build()
            .map_err(|e| errno(&e))?;
        let hardware = if hardware {
            let c = builder(Hardware::CPU_CYCLES, tid, user_only).build_with_group(&mut leader);
            let i = builder(Hardware::INSTRUCTIONS, tid, user_only).build_with_group(&mut leader);
            c.ok().zip(i.ok())
        } else {
            None
        };
        Ok(Self { leader, hardware })
    }

    /// [task clock ns, cycles, instructions], the hardware counts scaled for
    /// multiplexing (the task clock, a software event, always runs).
    pub(super) fn read(&mut self) -> Option<[f64; 3]> {
        let g = self.leader.read_group().ok()?;
        let enabled = g.time_enabled()?.as_nanos() as f64;
        let running = g.time_running()?.as_nanos() as f64;
        let scale = if running > 0.0 && running < enabled {
            enabled / running
        } else {
            1.0
        };
        let mut v = [g.get(&self.leader)?.value() as f64, 0.0, 0.0];
        if let Some((c, i)) = &self.hardware {
            let value = |m: &Counter| g.get(m).map_or(0.0, |e| e.value() as f64 * scale);
            v[1] = value(c);
            v[2] = value(i);
        }
        Some(v)
    }
}

/// The agent's perf state: what it may open, and whether the machine has
/// hardware counters (`None` until a first group opened).
pub(super) struct Perf {
    pub(super) access: Access,
    pub(super) hardware: Option<bool>,
}

impl Perf {
    /// Perf on, or off for good.
    pub(super) fn new(on: bool) -> Self {
        Self {
            access: if on { Access::Unknown } else { Access::Off },
            hardware: None,
        }
    }

    /// Whether opening is worth trying.
    pub(super) fn may_open(&self) -> bool {
        !matches!(self.access, Access::Denied | Access::Off)
    }

    /// Opens thread `tid`'s group, learning what is allowed on the first
    /// tries; `None` when it cannot (the thread exited, perf is refused).
    /// `none_open` says no thread has a group now: a refusal then means perf
    /// is refused, not just this one process (another user's).
    pub(super) fn open(&mut self, tid: u32, none_open: bool) -> Option<ThreadPerf> {
        let hw = self.hardware != Some(false);
        let result = match self.access {
            Access::Denied | Access::Off => return None,
            Access::Full => ThreadPerf::open(tid, false, hw),
            Access::UserOnly => ThreadPerf::open(tid, true, hw),
            Access::Unknown => match ThreadPerf::open(tid, false, hw) {
                Ok(t) => {
                    self.access = Access::Full;
                    Ok(t)
                }
                Err(libc::EACCES | libc::EPERM) => match ThreadPerf::open(tid, true, hw) {
                    Ok(t) => {
                        self.access = Access::UserOnly;
                        tracing::info!("perf events count user space only (perf_event_paranoid is 2 and the agent lacks CAP_PERFMON)");
                        Ok(t)
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            },
        };
        match result {
            Ok(t) => {
                if self.hardware.is_none() {
                    self.hardware = Some(t.hardware.is_some());
                    if t.hardware.is_none() {
                        tracing::info!("no hardware performance counters (no PMU exposed, e.g. in a VM): process cycles and instructions are left out");
                    }
                }
                Some(t)
            }
            Err(libc::ESRCH | libc::ENOENT) => None, // the thread just exited
            Err(e) => {
                if matches!(e, libc::EACCES | libc::EPERM) {
                    if self.access == Access::Unknown || none_open {
                        self.access = Access::Denied;
                        tracing::warn!(
                            paranoid = read_paranoid().as_deref().unwrap_or("?"),
                            "perf events refused (perf_event_paranoid and no CAP_PERFMON, or another user's process without CAP_SYS_PTRACE): process CPU time from /proc only; see docs/metrics.md, per-process series"
                        );
                    }
                } else if self.access == Access::Unknown {
                    self.access = Access::Denied;
                    tracing::warn!(
                        errno = e,
                        "perf_event_open failed: process CPU time from /proc only"
                    );
                }
                None
            }
        }
    }
}

fn read_paranoid() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()
        .map(|s| s.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This test's own thread: the task clock opens wherever perf is allowed
    /// for one's own threads (paranoid <= 2) and counts this busy loop;
    /// where perf is refused altogether (paranoid 3, seccomp), it says so
    /// with EACCES or EPERM, not a panic.
    #[test]
    fn counts_own_thread_or_is_refused() {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
        let mut perf = Perf::new(true);
        match perf.open(tid, true) {
            Some(mut t) => {
                assert!(matches!(perf.access, Access::Full | Access::UserOnly));
                let mut x = 0u64;
                for i in 0..5_000_000u64 {
                    x = std::hint::black_box(x.wrapping_add(i));
                }
                let v = t.read().expect("a live group reads");
                assert!(v[0] > 0.0, "task clock {v:?}");
                assert_eq!(perf.hardware, Some(t.hardware.is_some()));
            }
            None => assert_eq!(perf.access, Access::Denied),
        }
        // A thread that does not exist is not a refusal.
        let mut perf = Perf::new(true);
        assert!(perf.open(i32::MAX as u32, true).is_none());
        assert!(
            matches!(perf.access, Access::Unknown | Access::Denied),
            "{:?}",
            perf.access
        );
        assert!(Perf::new(false).open(tid, true).is_none());
    }
}
