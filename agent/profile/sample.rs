//! Sampling for `accel-agent profile`: the daemon's own sampler threads
//! ([`crate::sampler::spawn_with`]), every collector at the profile's
//! interval, with a hook that records each successful sample as a
//! [`Record`] until the profile's duration is over.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::sampler::{self, Threads};
use crate::state::{Agent, CollectorState, Snapshot};

use super::faults::{Attempt, Attempts};
use super::summary::Record;

/// The running profile's sampler threads and what they have recorded.
pub struct Sampling {
    agent: Arc<Agent>,
    threads: Threads,
    records: Arc<Recorded>,
}

struct Recorded {
    start: Instant,
    duration: Duration,
    interval: Duration,
    stop: AtomicBool,
    by_collector: Mutex<BTreeMap<&'static str, Vec<Record>>>,
    /// Every finished sample, successful or not, and the error counts of
    /// the last one (to tell what a failed one counted).
    attempts: Mutex<BTreeMap<&'static str, Tried>>,
}

/// A collector's attempts, and the error counts after the last one.
type Tried = (Vec<Attempt>, Vec<u64>);

/// What a profile's sampling produced, per running collector in output
/// order.
pub struct Recording {
    pub records: Vec<(&'static str, Vec<Record>)>,
    pub attempts: Vec<Attempts>,
}

impl Recorded {
    /// The sampler hook: records a successful sample that began within the
    /// duration, and ends the thread when its next tick would begin after
    /// it (or the profile has stopped).
    fn record(&self, c: &CollectorState, snap: &Arc<Snapshot>) -> ControlFlow<()> {
        let began = snap
            .published
            .and_then(|p| p.checked_sub(snap.duration))
            .map_or(Duration::ZERO, |b| b.saturating_duration_since(self.start));
        if began <= self.duration {
            let end = snap
                .published
                .map_or(Duration::ZERO, |p| p.saturating_duration_since(self.start));
            let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
            let (list, errors) = attempts.entry(c.name).or_default();
            let kinds = accel_collectors::ErrorKind::ALL
                .iter()
                .filter(|k| snap.errors[k.index()] > errors.get(k.index()).copied().unwrap_or(0))
                .map(|k| k.as_str())
                .collect();
            *errors = snap.errors.to_vec();
            list.push(Attempt {
                end: end.as_secs_f64(),
                ok: snap.success,
                kinds,
            });
        }
        if snap.success && began <= self.duration {
            self.by_collector
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(c.name)
                .or_default()
                .push(Record {
                    t: began.as_secs_f64(),
                    families: snap.families.clone(),
                });
        }
        if self.stop.load(Ordering::Relaxed) || began + self.interval > self.duration {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

impl Sampling {
    /// Builds the enabled collectors of `config` and starts sampling, for
    /// `duration` from `start`; `interval` is the collectors' (the profile
    /// sets every one to its `--interval`).
    pub fn start(
        config: &Config,
        start: Instant,
        interval: Duration,
        duration: Duration,
    ) -> Sampling {
        let records = Arc::new(Recorded {
            start,
            duration,
            interval,
            stop: AtomicBool::new(false),
            by_collector: Mutex::new(BTreeMap::new()),
            attempts: Mutex::new(BTreeMap::new()),
        });
        let hook = records.clone();
        let (agent, threads) =
            sampler::spawn_with(config, Some(Arc::new(move |c, s| hook.record(c, s))));
        Sampling {
            agent,
            threads,
            records,
        }
    }

    /// Whether `name` runs (was built and started).
    pub fn runs(&self, name: &str) -> bool {
        self.agent.collectors.iter().any(|c| c.name == name)
    }

    /// The most samples recorded by one collector so far.
    pub fn samples(&self) -> usize {
        let recs = self
            .records
            .by_collector
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        recs.values().map(Vec::len).max().unwrap_or(0)
    }

    /// Stops sampling: lets samples in progress finish, but waits no longer
    /// than `interval` and a second for a hung collector. Returns the
    /// records and attempts per running collector, in output order.
    pub fn stop(self) -> Recording {
        self.records.stop.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + self.records.interval + Duration::from_secs(1);
        while self.threads.ended().len() < self.threads.0.len() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut recs = self
            .records
            .by_collector
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut attempts = self
            .records
            .attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        Recording {
            records: self
                .agent
                .collectors
                .iter()
                .map(|c| (c.name, recs.remove(c.name).unwrap_or_default()))
                .collect(),
            attempts: self
                .agent
                .collectors
                .iter()
                .map(|c| Attempts {
                    collector: c.name,
                    deadline: c.deadline.as_secs_f64(),
                    attempts: attempts.remove(c.name).map(|a| a.0).unwrap_or_default(),
                })
                .collect(),
        }
    }
}
