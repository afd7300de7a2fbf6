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

use accel_collectors::workers::WorkerStats;
use accel_collectors::Activity;
use accel_collectors::{encode_openmetrics, encode_text, ErrorKind, Family, FamilyDef, Sample};
use arc_swap::ArcSwap;
use bytes::Bytes;

/// `accel_collector_enabled`.
pub const COLLECTOR_ENABLED: FamilyDef = FamilyDef::gauge(
    "accel_collector_enabled",
    "Whether the collector runs (1), or is disabled or its hardware absent (0).",
)
.labels(&["collector"])
.doc("1 when the collector runs. 0 when it is disabled (flag or config), its hardware or interface is absent (`pressure` without PSI, `infiniband` without `/sys/class/infiniband`), or it failed to build. Every known collector has a series. A collector at 0 has no other `accel_collector_*` series: absent hardware is never reported as `accel_collector_success` 0")
.source("`agent/state.rs` (from `agent/sampler.rs`)")
.equivalent("none (node_exporter has no series for a disabled collector and reports absent hardware as `node_scrape_collector_success` 0)");

/// `accel_collector_success`.
pub const COLLECTOR_SUCCESS: FamilyDef = FamilyDef::gauge(
    "accel_collector_success",
    "Whether the collector's last sample succeeded and is current.",
)
.labels(&["collector"])
.doc("1 when the last sample succeeded and the collector is not stale. 0 before its first sample, after a failed sample, or while stale; its families are then withheld")
.source("`agent/state.rs`")
.equivalent("`node_scrape_collector_success`");

/// `accel_collector_stale`.
pub const COLLECTOR_STALE: FamilyDef = FamilyDef::gauge(
    "accel_collector_stale",
    "1 when the collector's sample is running past its deadline or has not finished for longer than its interval; its metrics are then withheld.",
)
.labels(&["collector"])
.doc("1 while a sample has run past its deadline (max(2 × interval, 2 s)), or no sample has finished for interval + deadline (e.g. a read hung on a wedged device); its families are then withheld and the endpoint keeps answering. Only while stale, as `ALERTS` only while firing: `accel_collector_stale or on (instance, job, collector) accel_collector_success * 0` gives 0 for the others")
.source("`agent/state.rs`");

/// `accel_collector_duration_seconds`.
pub const COLLECTOR_DURATION_SECONDS: FamilyDef = FamilyDef::gauge(
    "accel_collector_duration_seconds",
    "How long the collector's last sample took.",
)
.labels(&["collector"])
.doc("seconds the last sample took (on the sampler thread). Absent before the first sample")
.source("`agent/state.rs`")
.equivalent(
    "`node_scrape_collector_duration_seconds` (node_exporter times the read during the scrape)",
);

/// `accel_collector_last_success_timestamp_seconds`.
pub const COLLECTOR_LAST_SUCCESS_TIMESTAMP_SECONDS: FamilyDef = FamilyDef::gauge(
    "accel_collector_last_success_timestamp_seconds",
    "Unix time of the collector's last successful sample.",
)
.labels(&["collector"])
.doc("Unix time of the last successful sample. Absent until one succeeds")
.source("`agent/state.rs`");

/// `accel_collector_samples_total`.
pub const COLLECTOR_SAMPLES_TOTAL: FamilyDef = FamilyDef::counter(
    "accel_collector_samples_total",
    "Samples the collector has finished, successful or not.",
)
.labels(&["collector"])
.doc("samples finished, successful or not. `1 / rate(...)` is the collector's effective interval, and `accel_collector_duration_seconds * rate(...)` the share of its time spent sampling (the flags and the landing page give the configured `--collector.<name>.interval`)")
.source("`agent/state.rs`");

/// `accel_collector_errors_total`.
pub const COLLECTOR_ERRORS_TOTAL: FamilyDef = FamilyDef::counter(
    "accel_collector_errors_total",
    "Errors met by the collector, all kinds (a failed sample, or a part of one).",
)
.labels(&["collector"])
.doc("errors of every kind; one series per running collector from 0, so `increase()` sees the first error. The kinds are in `accel_collector_errors_by_kind_total`")
.source("`agent/state.rs`");

/// `accel_collector_errors_by_kind_total`.
pub const COLLECTOR_ERRORS_BY_KIND_TOTAL: FamilyDef = FamilyDef::counter(
    "accel_collector_errors_by_kind_total",
    "Errors met by the collector, by kind; a kind has a series once it has counted.",
)
.labels(&["collector", "kind"])
.doc("errors by bounded `kind` (table below); a kind's series comes at its first error (six series a collector at 0 otherwise), so `increase()` of it misses that first error: `accel_collector_errors_total` counts it")
.source("`agent/state.rs`; kinds in `collectors/src/lib.rs` (`ErrorKind`)");

/// `accel_collector_overruns_total`.
pub const COLLECTOR_OVERRUNS_TOTAL: FamilyDef = FamilyDef::counter(
    "accel_collector_overruns_total",
    "Sampling ticks skipped because a sample ran longer than the interval.",
)
.labels(&["collector"])
.doc("sampling ticks skipped because a sample ran longer than the interval")
.source("`agent/state.rs` (`agent/sampler.rs`)");

/// `accel_collector_worker_restarts_total`.
pub const COLLECTOR_WORKER_RESTARTS_TOTAL: FamilyDef = FamilyDef::counter(
    "accel_collector_worker_restarts_total",
    "Background workers of the collector (pollers, listeners, watchers) restarted after a panic.",
)
.labels(&["collector"])
.doc("workers restarted after a panic; only for collectors that run background workers (pollers, listeners, watchers), from 0")
.source("`agent/state.rs` (from `collectors/src/workers.rs`)");

/// `accel_build_info`.
pub const BUILD_INFO: FamilyDef = FamilyDef::gauge(
    "accel_build_info",
    "A metric with a constant '1' value labeled by the agent's version and git revision.",
)
.labels(&["version", "revision"])
.doc("always 1; `version` is the crate version, `revision` the 12-digit git hash at build time or `unknown`")
.source("`agent/state.rs`, `agent/build.rs`")
.equivalent("`node_exporter_build_info`");

/// `accel_config_reload_failures_total`.
pub const CONFIG_RELOAD_FAILURES: FamilyDef = FamilyDef::counter(
    "accel_config_reload_failures_total",
    "Reloads of the config file or the web config file that failed; the previous configuration stays in force.",
)
.doc("reloads that failed and left the previous configuration in force: a SIGHUP whose config or web config file does not load, or a web config (or a certificate, key or CA file it names) that changed on disk and does not load (checked as each new connection arrives, as the exporter-toolkit does). The error is logged once per bad version")
.source("`agent/server/mod.rs`, `agent/web_config/mod.rs`");

/// The agent's own families (`collector` label: a registry name).
pub const FAMILIES: &[FamilyDef] = &[
    COLLECTOR_ENABLED,
    COLLECTOR_SUCCESS,
    COLLECTOR_STALE,
    COLLECTOR_DURATION_SECONDS,
    COLLECTOR_LAST_SUCCESS_TIMESTAMP_SECONDS,
    COLLECTOR_SAMPLES_TOTAL,
    COLLECTOR_ERRORS_TOTAL,
    COLLECTOR_ERRORS_BY_KIND_TOTAL,
    COLLECTOR_OVERRUNS_TOTAL,
    COLLECTOR_WORKER_RESTARTS_TOTAL,
    CONFIG_RELOAD_FAILURES,
    BUILD_INFO,
];

/// What one collector last produced, immutable once published.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The families of the last successful sample in the text format,
    /// encoded by the first scrape that needs them (a GPU sampled every
    /// 100 ms is scraped far less often); empty when the last sample failed.
    text: OnceLock<String>,
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
    /// Milliseconds since the agent's epoch, plus one, at which the sampler
    /// watchdog logged that a sample ran past its deadline; 0 outside such
    /// an episode (see [`crate::sampler`]).
    overdue_ms: AtomicU64,
    /// The kernel's id of its sampler thread (0 until known), so that the
    /// watchdog can say what a hung sample is blocked in.
    thread_id: AtomicU64,
    /// Its background workers' counters.
    pub workers: Arc<WorkerStats>,
    /// What its running sample says it is doing.
    pub activity: Activity,
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
            overdue_ms: AtomicU64::new(0),
            thread_id: AtomicU64::new(0),
            workers: Arc::default(),
            activity: Activity::default(),
        }
    }

    /// As [`new`](Self::new), with the counters of its workers.
    pub fn with_workers(
        name: &'static str,
        interval: Duration,
        workers: Arc<WorkerStats>,
        activity: Activity,
    ) -> Self {
        Self {
            workers,
            activity,
            ..Self::new(name, interval)
        }
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Records the kernel thread id of its sampler thread.
    pub fn set_thread_id(&self, tid: u64) {
        self.thread_id.store(tid, Ordering::Release);
    }

    /// The kernel thread id of its sampler thread, once known.
    pub fn thread_id(&self) -> Option<u64> {
        Some(self.thread_id.load(Ordering::Acquire)).filter(|&t| t != 0)
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
    /// Reloads of the config or web config file that failed (the previous
    /// one kept in force).
    reload_failures: AtomicU64,
    /// The collectors' shared topics (the health report, for `/health`).
    pub shared: accel_collectors::Shared,
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

impl Snapshot {
    /// The families in the text format, encoded once, when first asked.
    pub fn text(&self) -> &str {
        self.text.get_or_init(|| {
            let mut text = String::with_capacity(1024);
            encode_text(&self.families, &mut text);
            text
        })
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Agent {
    /// Counts a failed reload of the config or web config file, and makes
    /// the next scrape show it.
    pub fn reload_failed(&self) {
        self.reload_failures.fetch_add(1, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

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
            reload_failures: AtomicU64::new(0),
            cache: Mutex::new(None),
            shared: accel_collectors::Shared::default(),
        }
    }

    /// The agent reading the collectors' topics `shared`.
    pub fn with_shared(mut self, shared: accel_collectors::Shared) -> Self {
        self.shared = shared;
        self
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

    /// How long the sample of `c` now running has run; `None` between
    /// samples.
    pub fn running_for(&self, c: &CollectorState) -> Option<Duration> {
        match c.started_ms.load(Ordering::Acquire) {
            0 => None,
            s => Some(Duration::from_millis(self.now_ms().saturating_sub(s - 1))),
        }
    }

    /// Starts an overdue episode of `c`: true the first time only, until
    /// [`end_overdue`](Self::end_overdue).
    pub fn begin_overdue(&self, c: &CollectorState) -> bool {
        c.overdue_ms
            .compare_exchange(0, self.now_ms() + 1, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Ends the overdue episode of `c`, if one was begun: how long ago.
    pub fn end_overdue(&self, c: &CollectorState) -> Option<Duration> {
        match c.overdue_ms.swap(0, Ordering::AcqRel) {
            0 => None,
            s => Some(Duration::from_millis(self.now_ms().saturating_sub(s - 1))),
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
                text.push_str(s.text());
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
        let enabled = s.add(&COLLECTOR_ENABLED);
        for c in &self.collectors {
            enabled.add(&[("collector", c.name)], 1.0);
        }
        for (name, _) in &self.not_running {
            enabled.add(&[("collector", name)], 0.0);
        }
        let running = || self.collectors.iter().zip(snaps).enumerate();
        let success = s.add(&COLLECTOR_SUCCESS);
        for (i, (c, snap)) in running() {
            let ok = snap.success && stale & (1 << i.min(63)) == 0;
            success.add(&[("collector", c.name)], if ok { 1.0 } else { 0.0 });
        }
        // Only while stale, as `ALERTS` only while firing.
        let st = s.add(&COLLECTOR_STALE);
        for (i, (c, _)) in running() {
            if stale & (1 << i.min(63)) != 0 {
                st.add(&[("collector", c.name)], 1.0);
            }
        }
        let d = s.add(&COLLECTOR_DURATION_SECONDS);
        for (_, (c, snap)) in running() {
            if snap.samples > 0 {
                d.add(&[("collector", c.name)], snap.duration.as_secs_f64());
            }
        }
        let last = s.add(&COLLECTOR_LAST_SUCCESS_TIMESTAMP_SECONDS);
        for (_, (c, snap)) in running() {
            if let Some(t) = snap.last_success {
                last.add(&[("collector", c.name)], t);
            }
        }
        let n = s.add(&COLLECTOR_SAMPLES_TOTAL);
        for (_, (c, snap)) in running() {
            n.add(&[("collector", c.name)], snap.samples as f64);
        }
        let e = s.add(&COLLECTOR_ERRORS_TOTAL);
        for (_, (c, snap)) in running() {
            e.add(
                &[("collector", c.name)],
                snap.errors.iter().sum::<u64>() as f64,
            );
        }
        let k = s.add(&COLLECTOR_ERRORS_BY_KIND_TOTAL);
        for (_, (c, snap)) in running() {
            for kind in ErrorKind::ALL {
                let n = snap.errors[kind.index()];
                if n > 0 {
                    k.add(&[("collector", c.name), ("kind", kind.as_str())], n as f64);
                }
            }
        }
        let o = s.add(&COLLECTOR_OVERRUNS_TOTAL);
        for (_, (c, snap)) in running() {
            o.add(&[("collector", c.name)], snap.overruns as f64);
        }
        let r = s.add(&COLLECTOR_WORKER_RESTARTS_TOTAL);
        for (_, (c, _)) in running() {
            // Only collectors with background workers can restart one.
            if c.workers.spawned.load(Ordering::Relaxed) == 0 {
                continue;
            }
            r.add(
                &[("collector", c.name)],
                c.workers.restarts.load(Ordering::Relaxed) as f64,
            );
        }
        s.add(&CONFIG_RELOAD_FAILURES)
            .add(&[], self.reload_failures.load(Ordering::Relaxed) as f64);
        s.add(&BUILD_INFO).add(
            &[("version", crate::VERSION), ("revision", crate::REVISION)],
            1.0,
        );
        s.into_parts().0
    }
}
