//! The agent's shared state: each collector's latest snapshot, and the
//! scrape body built from them.
//!
//! Sampler threads publish snapshots with one atomic pointer swap. A scrape
//! reads those pointers and a few atomics, never a file or a device; the
//! body (and its gzip form) is cached until a snapshot changes or a
//! collector turns stale, so most scrapes cost one `Arc` clone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use accel_collectors::{encode_openmetrics, encode_text, ErrorKind, Family, Sample};
use arc_swap::ArcSwap;
use bytes::Bytes;

/// What one collector last produced, immutable once published.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The families of the last successful sample, pre-encoded in the text
    /// format; empty when the last sample failed.
    pub text: String,
    /// The same families, for OpenMetrics and in-process readers.
    pub families: Vec<Family>,
    /// Samples finished, successful or not.
    pub samples: u64,
    /// Whether the last sample succeeded.
    pub success: bool,
    /// How long the last sample took.
    pub duration: Duration,
    /// Unix time of the last successful sample.
    pub last_success: Option<f64>,
    /// Errors so far, by [`ErrorKind::index`].
    pub errors: [u64; ErrorKind::ALL.len()],
    /// Ticks skipped because a sample ran past its interval.
    pub overruns: u64,
    /// When this snapshot was published.
    pub published: Option<Instant>,
}

/// One running collector as the server sees it.
#[derive(Debug)]
pub struct CollectorState {
    /// The collector's name.
    pub name: &'static str,
    /// Its sampling interval.
    pub interval: Duration,
    /// A sample running longer than this is considered hung.
    pub deadline: Duration,
    snapshot: ArcSwap<Snapshot>,
    /// Milliseconds since the agent's epoch at which the running sample
    /// began, plus one; 0 when no sample is running.
    started_ms: AtomicU64,
}

impl CollectorState {
    /// State for a collector that has not sampled yet.
    pub fn new(name: &'static str, interval: Duration) -> Self {
        Self {
            name,
            interval,
            deadline: (interval * 2).max(Duration::from_secs(2)),
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            started_ms: AtomicU64::new(0),
        }
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }
}

/// Everything the HTTP side needs: the collectors' states, which collectors
/// are not running, and the scrape cache.
#[derive(Debug)]
pub struct Agent {
    /// The running collectors, in output order.
    pub collectors: Vec<Arc<CollectorState>>,
    /// Collectors that do not run: disabled by flag, or their hardware is
    /// absent (with the reason).
    pub not_running: Vec<(&'static str, String)>,
    epoch: Instant,
    generation: AtomicU64,
    cache: Mutex<Option<Arc<Body>>>,
}

/// The exposition formats served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format 0.0.4 (the default).
    Text,
    /// OpenMetrics 1.0 (when the client's Accept header prefers it, as
    /// Prometheus 2.x does).
    OpenMetrics,
}

/// A scrape body, made once per change of the snapshots: the text format at
/// once, OpenMetrics and the gzip forms on first demand.
#[derive(Debug)]
pub struct Body {
    key: (u64, u64),
    snaps: Vec<Arc<Snapshot>>,
    stale: u64,
    self_families: Vec<Family>,
    /// The text format body.
    pub text: Bytes,
    gzip: OnceLock<Bytes>,
    openmetrics: OnceLock<Bytes>,
    openmetrics_gzip: OnceLock<Bytes>,
}

fn gzip(data: &[u8]) -> Bytes {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4),
        flate2::Compression::fast(),
    );
    enc.write_all(data).expect("writing to a Vec");
    Bytes::from(enc.finish().expect("writing to a Vec"))
}

impl Body {
    /// The body in `format`, gzip-compressed if `compressed`; each form is
    /// made once.
    pub fn get(&self, format: Format, compressed: bool) -> Bytes {
        match (format, compressed) {
            (Format::Text, false) => self.text.clone(),
            (Format::Text, true) => self.gzip.get_or_init(|| gzip(&self.text)).clone(),
            (Format::OpenMetrics, false) => self.openmetrics().clone(),
            (Format::OpenMetrics, true) => self
                .openmetrics_gzip
                .get_or_init(|| gzip(self.openmetrics()))
                .clone(),
        }
    }

    fn openmetrics(&self) -> &Bytes {
        self.openmetrics.get_or_init(|| {
            let mut text = String::with_capacity(self.text.len() + 1024);
            for (i, s) in self.snaps.iter().enumerate() {
                if self.stale & (1 << i.min(63)) == 0 {
                    encode_openmetrics(&s.families, &mut text);
                }
            }
            encode_openmetrics(&self.self_families, &mut text);
            text.push_str("# EOF\n");
            Bytes::from(text)
        })
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Agent {
    /// An agent with these collectors.
    pub fn new(
        collectors: Vec<Arc<CollectorState>>,
        not_running: Vec<(&'static str, String)>,
    ) -> Self {
        Self {
            collectors,
            not_running,
            epoch: Instant::now(),
            generation: AtomicU64::new(0),
            cache: Mutex::new(None),
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Marks the start of a sample of `c`.
    pub fn begin_sample(&self, c: &CollectorState) {
        c.started_ms.store(self.now_ms() + 1, Ordering::Release);
    }

    /// Publishes the result of a sample of `c`, which began at `started`.
    pub fn publish(
        &self,
        c: &CollectorState,
        result: Result<Sample, accel_collectors::CollectError>,
        started: Instant,
        overruns: u64,
    ) {
        let prev = c.snapshot();
        let mut next = Snapshot {
            samples: prev.samples + 1,
            duration: started.elapsed(),
            last_success: prev.last_success,
            errors: prev.errors,
            overruns: prev.overruns + overruns,
            published: Some(Instant::now()),
            ..Snapshot::default()
        };
        match result {
            Ok(sample) => {
                let (families, errors) = sample.into_parts();
                for e in &errors {
                    next.errors[e.kind.index()] += 1;
                }
                let mut text = String::with_capacity(prev.text.len().max(1024));
                encode_text(&families, &mut text);
                next.text = text;
                next.families = families;
                next.success = true;
                next.last_success = Some(unix_now());
            }
            Err(e) => next.errors[e.kind.index()] += 1,
        }
        if next.duration > c.deadline {
            // The sample finished, but after its deadline: it was reported
            // stale meanwhile; count it as a timeout.
            next.errors[ErrorKind::Timeout.index()] += 1;
        }
        c.snapshot.store(Arc::new(next));
        c.started_ms.store(0, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether `c` is stale now: a sample has run past its deadline, or no
    /// sample has finished for longer than an interval plus the deadline.
    pub fn is_stale(&self, c: &CollectorState, snap: &Snapshot) -> bool {
        let started = c.started_ms.load(Ordering::Acquire);
        if started != 0 && self.now_ms().saturating_sub(started - 1) > c.deadline.as_millis() as u64
        {
            return true;
        }
        match snap.published {
            Some(t) => t.elapsed() > c.interval + c.deadline,
            None => false,
        }
    }

    /// Whether every running collector has finished its first sample.
    pub fn ready(&self) -> bool {
        self.collectors.iter().all(|c| c.snapshot().samples > 0)
    }

    /// The collectors that have not finished a first sample yet.
    pub fn waiting_for(&self) -> Vec<&'static str> {
        self.collectors
            .iter()
            .filter(|c| c.snapshot().samples == 0)
            .map(|c| c.name)
            .collect()
    }

    /// The current scrape body, from the cache when nothing has changed
    /// since it was made.
    pub fn body(&self) -> Arc<Body> {
        let snaps: Vec<_> = self.collectors.iter().map(|c| c.snapshot()).collect();
        let stale = self.stale_mask(&snaps);
        let key = (self.generation.load(Ordering::Acquire), stale);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = cache.as_ref().filter(|b| b.key == key) {
            return b.clone();
        }
        let mut text =
            String::with_capacity(cache.as_ref().map_or(16 * 1024, |b| b.text.len() + 1024));
        for (i, s) in snaps.iter().enumerate() {
            if stale & (1 << i.min(63)) == 0 {
                text.push_str(&s.text);
            }
        }
        let self_families = self.self_metrics(&snaps, stale);
        encode_text(&self_families, &mut text);
        let body = Arc::new(Body {
            key,
            snaps,
            stale,
            self_families,
            text: Bytes::from(text),
            gzip: OnceLock::new(),
            openmetrics: OnceLock::new(),
            openmetrics_gzip: OnceLock::new(),
        });
        *cache = Some(body.clone());
        body
    }

    fn stale_mask(&self, snaps: &[Arc<Snapshot>]) -> u64 {
        self.collectors
            .iter()
            .zip(snaps)
            .enumerate()
            .filter(|(_, (c, s))| self.is_stale(c, s))
            .fold(0, |m, (i, _)| m | 1 << i.min(63))
    }

    fn self_metrics(&self, snaps: &[Arc<Snapshot>], stale: u64) -> Vec<Family> {
        let mut s = Sample::new();
        let enabled = s.gauge(
            "accel_collector_enabled",
            "Whether the collector runs (1), or is disabled or its hardware absent (0).",
        );
        for c in &self.collectors {
            enabled.add(&[("collector", c.name)], 1.0);
        }
        for (name, _) in &self.not_running {
            enabled.add(&[("collector", name)], 0.0);
        }
        let running = || self.collectors.iter().zip(snaps).enumerate();
        let success = s.gauge(
            "accel_collector_success",
            "Whether the collector's last sample succeeded and is current.",
        );
        for (i, (c, snap)) in running() {
            let ok = snap.success && stale & (1 << i.min(63)) == 0;
            success.add(&[("collector", c.name)], if ok { 1.0 } else { 0.0 });
        }
        let st = s.gauge(
            "accel_collector_stale",
            "1 when the collector's sample is running past its deadline or has not finished for longer than its interval; its metrics are then withheld.",
        );
        for (i, (c, _)) in running() {
            st.add(
                &[("collector", c.name)],
                if stale & (1 << i.min(63)) != 0 {
                    1.0
                } else {
                    0.0
                },
            );
        }
        let iv = s.gauge(
            "accel_collector_interval_seconds",
            "The collector's sampling interval.",
        );
        for (_, (c, _)) in running() {
            iv.add(&[("collector", c.name)], c.interval.as_secs_f64());
        }
        let d = s.gauge(
            "accel_collector_duration_seconds",
            "How long the collector's last sample took.",
        );
        for (_, (c, snap)) in running() {
            if snap.samples > 0 {
                d.add(&[("collector", c.name)], snap.duration.as_secs_f64());
            }
        }
        let last = s.gauge(
            "accel_collector_last_success_timestamp_seconds",
            "Unix time of the collector's last successful sample.",
        );
        for (_, (c, snap)) in running() {
            if let Some(t) = snap.last_success {
                last.add(&[("collector", c.name)], t);
            }
        }
        let n = s.counter(
            "accel_collector_samples_total",
            "Samples the collector has finished, successful or not.",
        );
        for (_, (c, snap)) in running() {
            n.add(&[("collector", c.name)], snap.samples as f64);
        }
        let e = s.counter(
            "accel_collector_errors_total",
            "Errors met by the collector, by kind (a failed sample, or a part of one).",
        );
        for (_, (c, snap)) in running() {
            for kind in ErrorKind::ALL {
                e.add(
                    &[("collector", c.name), ("kind", kind.as_str())],
                    snap.errors[kind.index()] as f64,
                );
            }
        }
        let o = s.counter(
            "accel_collector_overruns_total",
            "Sampling ticks skipped because a sample ran longer than the interval.",
        );
        for (_, (c, snap)) in running() {
            o.add(&[("collector", c.name)], snap.overruns as f64);
        }
        s.gauge(
            "accel_build_info",
            "A metric with a constant '1' value labeled by the agent's version and git revision.",
        )
        .add(
            &[("version", crate::VERSION), ("revision", crate::REVISION)],
            1.0,
        );
        s.into_parts().0
    }
}
