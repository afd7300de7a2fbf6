//! Supervised background threads of a collector: pollers, listeners,
//! watchers.
//!
//! A collector gets its [`Workers`] from the
//! [`BuildContext`](crate::BuildContext) and starts each thread with
//! [`Workers::spawn`]. The supervisor
//!
//! - catches a panic, logs it once with the collector's name, counts it
//!   (`accel_collector_worker_restarts_total{collector}`, exported by the
//!   agent from [`WorkerStats`]) and restarts the worker after a backoff
//!   (1 s, doubling to 60 s; back to 1 s once a run lasted a minute);
//! - watches a heartbeat: the worker calls [`Heartbeat::beat`] at least once
//!   per `max_silence` (a blocking worker bounds its waits to make sure).
//!
//! The collector calls [`Workers::check`] at the start of each sample: while
//! a worker is silent past its bound or waiting to be restarted, the sample
//! fails, so the collector is shown down and its series are withheld rather
//! than served from a worker that no longer updates them.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::{CollectError, ErrorKind};

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A run at least this long resets the backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// Counters the agent exports for a collector's workers.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Workers restarted after a panic.
    pub restarts: AtomicU64,
    /// Workers started: a collector that never started one can never
    /// restart one (its restart counter is not exported).
    pub spawned: AtomicU64,
}

/// One worker's state, shared by its thread, its handle and the checker.
#[derive(Debug)]
struct Slot {
    name: &'static str,
    max_silence: Duration,
    last_beat: Mutex<Instant>,
    /// Set while the worker waits to be restarted after a panic.
    restarting: AtomicBool,
    /// Set when its [`Worker`] handle is dropped: the thread is to end.
    stop: AtomicBool,
    /// Set when the thread has ended (returned, or stopped).
    ended: AtomicBool,
}

/// What a worker's body is given: it beats with it, and asks it whether to
/// stop.
#[derive(Clone, Debug)]
pub struct Heartbeat(Arc<Slot>);

impl Heartbeat {
    /// Says the worker is alive and making progress.
    pub fn beat(&self) {
        *self
            .0
            .last_beat
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    /// Whether the worker's handle was dropped and it should return.
    pub fn stopped(&self) -> bool {
        self.0.stop.load(Ordering::Relaxed)
    }

    /// Sleeps `d`, waking early (and returning `true`) when asked to stop.
    pub fn sleep(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        loop {
            if self.stopped() {
                return true;
            }
            let now = Instant::now();
            if now >= until {
                return false;
            }
            std::thread::sleep((until - now).min(Duration::from_millis(100)));
        }
    }
}

/// The handle of one worker: dropping it asks the worker to stop and stops
/// its heartbeat from being checked.
#[derive(Debug)]
pub struct Worker(Arc<Slot>);

impl Drop for Worker {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Relaxed);
    }
}

/// A collector's supervisor: starts its workers and checks on them.
#[derive(Clone, Debug)]
pub struct Workers {
    collector: &'static str,
    stats: Arc<WorkerStats>,
    slots: Arc<Mutex<Vec<Arc<Slot>>>>,
}

impl Workers {
    /// The supervisor of `collector`'s workers.
    pub fn new(collector: &'static str) -> Self {
        Self {
            collector,
            stats: Arc::default(),
            slots: Arc::default(),
        }
    }

    /// Its counters, for the agent's self-metrics.
    pub fn stats(&self) -> Arc<WorkerStats> {
        self.stats.clone()
    }

    /// Starts `body` on a thread named `<collector>-<name>`. `body` runs until
    /// it returns (the worker is done) or its handle is dropped (it should
    /// return when [`Heartbeat::stopped`]); if it panics, it is run again
    /// after a backoff. It must beat at least once per `max_silence`.
    pub fn spawn<F>(
        &self,
        name: &'static str,
        max_silence: Duration,
        mut body: F,
    ) -> Result<Worker, CollectError>
    where
        F: FnMut(&Heartbeat) + Send + 'static,
    {
        let slot = Arc::new(Slot {
            name,
            max_silence,
            last_beat: Mutex::new(Instant::now()),
            restarting: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            ended: AtomicBool::new(false),
        });
        {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            slots.retain(|s| !s.ended.load(Ordering::Relaxed) && !s.stop.load(Ordering::Relaxed));
            slots.push(slot.clone());
        }
        let hb = Heartbeat(slot.clone());
        let collector = self.collector;
        let stats = self.stats.clone();
        stats.spawned.fetch_add(1, Ordering::Relaxed);
        std::thread::Builder::new()
            .name(format!("{collector}-{name}"))
            .spawn(move || {
                let mut backoff = FIRST_BACKOFF;
                loop {
                    let started = Instant::now();
                    hb.beat();
                    match catch_unwind(AssertUnwindSafe(|| body(&hb))) {
                        Ok(()) => break,
                        Err(panic) => {
                            if hb.stopped() {
                                break;
                            }
                            if started.elapsed() >= HEALTHY_RUN {
                                backoff = FIRST_BACKOFF;
                            }
                            stats.restarts.fetch_add(1, Ordering::Relaxed);
                            tracing::error!(
                                collector,
                                worker = name,
                                panic = panic_text(&*panic),
                                restart_in = ?backoff,
                                "worker panicked; its collector reports failure until it runs again"
                            );
                            hb.0.restarting.store(true, Ordering::Relaxed);
                            let stopped = hb.sleep(backoff);
                            hb.0.restarting.store(false, Ordering::Relaxed);
                            if stopped {
                                break;
                            }
                            backoff = (backoff * 2).min(MAX_BACKOFF);
                        }
                    }
                }
                hb.0.ended.store(true, Ordering::Relaxed);
            })
            .map_err(|e| {
                CollectError::new(
                    ErrorKind::Io,
                    format!("cannot start the {name} worker thread: {e}"),
                )
            })?;
        Ok(Worker(slot))
    }

    /// `Err` while one of the running workers is silent past its bound or
    /// waiting to be restarted after a panic.
    pub fn check(&self) -> Result<(), CollectError> {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        for s in slots.iter() {
            if s.stop.load(Ordering::Relaxed) || s.ended.load(Ordering::Relaxed) {
                continue;
            }
            if s.restarting.load(Ordering::Relaxed) {
                return Err(CollectError::new(
                    ErrorKind::Library,
                    format!("the {} worker panicked and waits to restart", s.name),
                ));
            }
            let silent = s
                .last_beat
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .elapsed();
            if silent > s.max_silence {
                return Err(CollectError::new(
                    ErrorKind::Timeout,
                    format!(
                        "the {} worker has not made progress for {:.0} s (bound {:.0} s)",
                        s.name,
                        silent.as_secs_f64(),
                        s.max_silence.as_secs_f64()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The message of a caught panic.
pub fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
        let until = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < until, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn a_panicking_worker_is_counted_reported_and_restarted() {
        let workers = Workers::new("test");
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        let _w = workers
            .spawn("panicky", Duration::from_secs(30), move |hb| {
                if r.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("injected");
                }
                while !hb.sleep(Duration::from_millis(20)) {
                    hb.beat();
                }
            })
            .unwrap();
        wait_for("the panic", || {
            workers.stats().restarts.load(Ordering::Relaxed) == 1
        });
        // Between the panic and the restart, the collector fails.
        let e = workers.check().unwrap_err();
        assert!(e.message.contains("panicked"), "{e}");
        wait_for("the restart", || runs.load(Ordering::SeqCst) == 2);
        wait_for("healthy again", || workers.check().is_ok());
        assert_eq!(workers.stats().restarts.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_silent_worker_fails_its_collector_until_it_beats() {
        let workers = Workers::new("test");
        let hang = Arc::new(AtomicBool::new(true));
        let h = hang.clone();
        let _w = workers
            .spawn("hangs", Duration::from_millis(200), move |hb| loop {
                if hb.stopped() {
                    return;
                }
                if !h.load(Ordering::SeqCst) {
                    hb.beat();
                }
                std::thread::sleep(Duration::from_millis(20));
            })
            .unwrap();
        wait_for("the hang to be seen", || workers.check().is_err());
        let e = workers.check().unwrap_err();
        assert_eq!(e.kind, ErrorKind::Timeout);
        hang.store(false, Ordering::SeqCst);
        wait_for("recovery", || workers.check().is_ok());
    }

    #[test]
    fn a_dropped_worker_stops_and_is_not_checked() {
        let workers = Workers::new("test");
        let ended = Arc::new(AtomicBool::new(false));
        let e = ended.clone();
        let w = workers
            .spawn("stops", Duration::from_millis(50), move |hb| {
                while !hb.sleep(Duration::from_millis(10)) {}
                e.store(true, Ordering::SeqCst);
            })
            .unwrap();
        drop(w);
        wait_for("the worker to end", || ended.load(Ordering::SeqCst));
        std::thread::sleep(Duration::from_millis(100));
        assert!(workers.check().is_ok());
    }
}
