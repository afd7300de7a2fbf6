//! `accel_node_*` and `accel_cloud_*`: cloud maintenance and preemption
//! notices from the instance metadata server (GCE, AWS, Azure).
//!
//! The provider is found from DMI in sysfs (no network probe), or forced
//! with `--collector.cloud.provider`. Polling runs on this collector's own
//! background threads (GCE's maintenance-event is a long-poll that blocks
//! for a minute); `sample()` only reads the latest shared state, so a slow,
//! down or garbage-answering metadata server never stalls anything: it shows
//! as `accel_cloud_metadata_up 0`. The pollers run under the collector's
//! supervisor ([`crate::workers`]): one that panics is restarted, and one
//! silent for longer than its longest legitimate poll makes the sample fail
//! rather than export notices nobody refreshes. Read-only: nothing is ever
//! approved.
//!
//! On a new preemption or terminate notice the collector can write a JSON
//! notice file and signal the processes holding GPUs (opt-in).

mod providers;
pub mod timefmt;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::options::{options, parse_duration, parse_interval};
use crate::shared::{GpuSnapshot, Topic};
use crate::workers::{Heartbeat, Worker};
use crate::{BuildContext, Built, CollectError, Collector, FamilyDef, Sample, Spec, Workers};

/// A cloud whose metadata server the collector reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    /// Google Compute Engine.
    Gce,
    /// Amazon EC2.
    Aws,
    /// Microsoft Azure.
    Azure,
}

impl Provider {
    /// The `provider` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Gce => "gce",
            Provider::Aws => "aws",
            Provider::Azure => "azure",
        }
    }

    /// The maintenance types exported (at 0 when not pending).
    pub fn maintenance_types(self) -> &'static [&'static str] {
        match self {
            Provider::Gce => &["migrate", "terminate", "scheduled", "unscheduled"],
            Provider::Aws => &[
                "instance-reboot",
                "system-reboot",
                "system-maintenance",
                "instance-retirement",
                "instance-stop",
                "rebalance",
            ],
            Provider::Azure => &["freeze", "reboot", "redeploy", "terminate"],
        }
    }
}

/// `--collector.cloud.provider`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ProviderChoice {
    /// Detect from DMI.
    #[default]
    Auto,
    /// Never contact a metadata server.
    None,
    /// This provider, whatever DMI says.
    Forced(Provider),
}

impl ProviderChoice {
    /// Parses `auto`, `none`, `gce`, `aws` or `azure`.
    pub fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "auto" => Self::Auto,
            "none" => Self::None,
            "gce" => Self::Forced(Provider::Gce),
            "aws" => Self::Forced(Provider::Aws),
            "azure" => Self::Forced(Provider::Azure),
            _ => return Err(format!("{s:?} is not one of auto, gce, aws, azure, none")),
        })
    }
}

/// Parses `SIGUSR1`, `SIGUSR2`, `SIGTERM` or `SIGINT` (with or without the
/// `SIG` prefix) to the signal number.
pub fn parse_signal(s: &str) -> Result<i32, String> {
    match s.trim_start_matches("SIG") {
        "USR1" => Ok(libc::SIGUSR1),
        "USR2" => Ok(libc::SIGUSR2),
        "TERM" => Ok(libc::SIGTERM),
        "INT" => Ok(libc::SIGINT),
        _ => Err(format!(
            "{s:?} is not one of SIGUSR1, SIGUSR2, SIGTERM, SIGINT"
        )),
    }
}

/// Settings of the cloud collector.
#[derive(clap::Args, Clone, Debug, PartialEq)]
pub struct CloudOptions {
    /// Which metadata server to read.
    #[arg(
        id = "collector.cloud.provider",
        long = "collector.cloud.provider",
        value_name = "PROVIDER",
        help = "Cloud whose metadata server gives maintenance and preemption notices: auto (from DMI, no network probe), gce, aws, azure or none.",
        default_value = "auto",
        value_parser = ProviderChoice::parse
    )]
    pub provider: ProviderChoice,
    /// GCE metadata base URL (…/computeMetadata/v1).
    #[arg(
        id = "collector.cloud.gce.url",
        long = "collector.cloud.gce.url",
        value_name = "URL",
        help = "GCE metadata base URL (http only).",
        default_value = GCE_URL
    )]
    pub gce_url: String,
    /// AWS IMDS base URL.
    #[arg(
        id = "collector.cloud.aws.url",
        long = "collector.cloud.aws.url",
        value_name = "URL",
        help = "AWS instance metadata base URL (http only).",
        default_value = IMDS_URL
    )]
    pub aws_url: String,
    /// Azure IMDS base URL.
    #[arg(
        id = "collector.cloud.azure.url",
        long = "collector.cloud.azure.url",
        value_name = "URL",
        help = "Azure instance metadata base URL (http only).",
        default_value = IMDS_URL
    )]
    pub azure_url: String,
    /// Connect and read deadline of one ordinary request.
    #[arg(
        id = "collector.cloud.timeout",
        long = "collector.cloud.timeout",
        value_name = "DURATION",
        help = "Connect and read deadline of one metadata request.",
        default_value = "2s",
        value_parser = parse_duration
    )]
    pub timeout: Duration,
    /// Interval between polls of the endpoints that cannot be long-polled.
    #[arg(
        id = "collector.cloud.poll-interval",
        long = "collector.cloud.poll-interval",
        value_name = "DURATION",
        help = "Interval between polls of the metadata endpoints that are not long-polled.",
        default_value = "5s",
        value_parser = parse_interval
    )]
    pub poll_interval: Duration,
    /// How long a GCE long-poll waits for a change (`timeout_sec`).
    #[arg(
        id = "collector.cloud.long-poll-timeout",
        long = "collector.cloud.long-poll-timeout",
        value_name = "DURATION",
        help = "How long a GCE long-poll (wait_for_change) waits for a change.",
        default_value = "60s",
        value_parser = parse_duration
    )]
    pub long_poll_timeout: Duration,
    /// `--disruption.notify-file`.
    #[arg(
        id = "disruption.notify-file",
        long = "disruption.notify-file",
        value_name = "FILE",
        help = "On a new preemption or terminate notice, write a JSON notice (provider, type, deadline, detected_at) to this file, atomically. Off by default.",
        value_parser = crate::options::parse_path
    )]
    pub notify_file: Option<PathBuf>,
    /// `--disruption.notify-signal`, as a signal number.
    #[arg(
        id = "disruption.notify-signal",
        long = "disruption.notify-signal",
        value_name = "SIGNAL",
        help = "On a new preemption or terminate notice, send this signal (SIGUSR1, SIGUSR2, SIGTERM, SIGINT) to the processes holding GPUs (needs the same uid or CAP_KILL). Off by default.",
        value_parser = parse_signal
    )]
    pub notify_signal: Option<i32>,
}

/// The cloud collector's registry entry.
pub const SPEC: Spec = Spec {
    name: "cloud",
    help: "cloud maintenance and preemption notices, from the metadata server (GCE, AWS, Azure; detected from DMI)",
    default_enabled: true,
    default_interval: Duration::from_secs(1),
    options: options::<CloudOptions>(),
    detail: "",
    families: FAMILIES,
    prefixes: &["accel_node_", "accel_cloud_"],
    outside: &[],
    build,
};

/// Every family this collector exports.
pub const FAMILIES: &[FamilyDef] = &[
    METADATA_UP,
    METADATA_ERRORS,
    NOTICES,
    MAINTENANCE_PENDING,
    MAINTENANCE_WINDOW_START,
    PREEMPTION_IMMINENT,
    TERMINATION,
];

/// Whether the metadata server answers.
pub const METADATA_UP: FamilyDef = FamilyDef::gauge(
    "accel_cloud_metadata_up",
    "1 when every metadata endpoint polled answered well at its last poll, 0 when one is down, slow or answers garbage.",
)
.labels(&["provider"])
.doc("1 when every metadata endpoint answered well at its last poll; 0 when one is down, slower than `--collector.cloud.timeout`, or answers garbage")
.source("`collectors/src/cloud/mod.rs`");

/// Failed polls.
pub const METADATA_ERRORS: FamilyDef = FamilyDef::counter(
    "accel_cloud_metadata_errors_total",
    "Polls of the metadata server that failed: no answer in time, an HTTP error status, or an answer that could not be read.",
)
.labels(&["provider"])
.doc("failed polls of any endpoint: no connection or no answer within `--collector.cloud.timeout`, an error status, a malformed HTTP answer or body. `accel_cloud_metadata_up` (on the Fleet dashboard) says whether it is down now; this says how often polls failed, for `increase()` when investigating a flaky metadata server, so no panel of its own")
.source("`collectors/src/cloud/mod.rs`");

/// Notices seen appearing.
pub const NOTICES: FamilyDef = FamilyDef::counter(
    "accel_cloud_notices_total",
    "Disruption notices (maintenance, preemption) seen appearing on the metadata server.",
)
.labels(&["provider", "type"])
.doc("disruption notices seen appearing (maintenance types, and `preemption`)")
.source("`collectors/src/cloud/mod.rs`");

/// Maintenance announced, by type.
pub const MAINTENANCE_PENDING: FamilyDef = FamilyDef::gauge(
    "accel_node_maintenance_pending",
    "1 while the cloud announces maintenance of this type for the instance.",
)
.labels(&["provider", "type"])
.doc("1 while maintenance of this type is announced, 0 for every other known type")
.source("GCE `instance/maintenance-event`, `instance/upcoming-maintenance`; AWS `events/maintenance/scheduled`, `events/recommendations/rebalance`; Azure scheduled events; `collectors/src/cloud/providers.rs`");

/// When the maintenance window opens.
pub const MAINTENANCE_WINDOW_START: FamilyDef = FamilyDef::gauge(
    "accel_node_maintenance_window_start_timestamp_seconds",
    "Unix time the announced maintenance window opens.",
)
.labels(&["provider", "type"])
.doc("Unix seconds the announced window opens (when the cloud gives one)")
.source("GCE `window_start_time`, AWS `NotBefore`, Azure `NotBefore`");

/// A preemption is announced.
pub const PREEMPTION_IMMINENT: FamilyDef = FamilyDef::gauge(
    "accel_node_preemption_imminent",
    "1 while the cloud announces that the instance is being preempted.",
)
.labels(&["provider"])
.doc("1 while the instance is being preempted (GCE `preempted`, AWS spot `instance-action`, Azure `Preempt`)")
.source("`collectors/src/cloud/providers.rs`");

/// When the instance goes.
pub const TERMINATION: FamilyDef = FamilyDef::gauge(
    "accel_node_termination_timestamp_seconds",
    "Unix time the instance is announced to stop or terminate.",
)
.labels(&["provider"])
.doc("Unix seconds the instance is announced to go, when known (AWS spot `time`, Azure `NotBefore`, GCE preemption: first seen + 30 s); absent otherwise")
.source("`collectors/src/cloud/providers.rs`");

/// Default GCE metadata base URL.
pub const GCE_URL: &str = "http://metadata.google.internal/computeMetadata/v1";
/// Default AWS and Azure metadata base URL.
pub const IMDS_URL: &str = "http://169.254.169.254";

/// The provider DMI names, if any (no network is touched).
pub fn detect(sysfs: &Path) -> Option<Provider> {
    let dir = sysfs.join("class/dmi/id");
    let read = |f: &str| {
        std::fs::read_to_string(dir.join(f))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    let (sys, product, bios, board, tag) = (
        read("sys_vendor"),
        read("product_name"),
        read("bios_vendor"),
        read("board_vendor"),
        read("chassis_asset_tag"),
    );
    if sys == "Google" || product == "Google Compute Engine" || bios == "Google" {
        Some(Provider::Gce)
    } else if sys == "Amazon EC2" || board == "Amazon EC2" {
        Some(Provider::Aws)
    } else if tag == "7783-7084-3265-9085-8269-3286-77"
        || (sys == "Microsoft Corporation" && product == "Virtual Machine")
    {
        Some(Provider::Azure)
    } else {
        None
    }
}

/// Whether a notice is maintenance or a preemption.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Host maintenance, retirement, rebalance recommendation…
    Maintenance,
    /// The instance is being preempted (spot, preemptible, Azure Preempt).
    Preemption,
}

/// One disruption the metadata server announces.
#[derive(Clone, Debug, PartialEq)]
pub struct Notice {
    /// Identity of the event: the same key on the next poll is the same event.
    pub key: String,
    /// Maintenance or preemption.
    pub kind: Kind,
    /// The `type` label (`preemption` for preemptions).
    pub ty: String,
    /// When the maintenance window opens (Unix seconds), when known.
    pub window_start: Option<f64>,
    /// When the instance goes (Unix seconds), when known.
    pub deadline: Option<f64>,
    /// Whether the training job is told (preemption or terminate).
    pub notify: bool,
}

impl Notice {
    fn new(key: String, kind: Kind, ty: &str) -> Self {
        Self {
            key,
            kind,
            ty: ty.to_owned(),
            window_start: None,
            deadline: None,
            notify: kind == Kind::Preemption,
        }
    }
}

/// Settings the pollers share.
#[derive(Clone, Debug)]
pub struct Ctx {
    base: String,
    timeout: Duration,
    long_poll: Duration,
    interval: Duration,
}

#[derive(Default)]
struct EndpointState {
    /// Whether the last poll succeeded (false until the first does).
    ok: bool,
    /// The notices of the last successful poll.
    notices: Vec<Notice>,
}

#[derive(Default)]
struct Shared {
    endpoints: Vec<EndpointState>,
    notices_total: BTreeMap<String, u64>,
    /// Failed polls, all endpoints.
    errors: u64,
}

/// Writes the notice file and signals the GPU processes.
struct Notifier {
    provider: Provider,
    file: Option<PathBuf>,
    signal: Option<i32>,
    gpus: Topic<GpuSnapshot>,
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Notifier {
    fn fire(&self, n: &Notice) {
        tracing::warn!(provider = self.provider.as_str(), r#type = %n.ty, deadline = ?n.deadline, "disruption notice: the instance is going away");
        if let Some(file) = &self.file {
            let deadline = n
                .deadline
                .map_or("null".to_owned(), |d| format!("{}", d.floor() as i64));
            let body = format!(
                "{{\"provider\":\"{}\",\"type\":{},\"deadline\":{deadline},\"detected_at\":{}}}\n",
                self.provider.as_str(),
                serde_json::Value::String(n.ty.clone()),
                now_unix().floor() as i64
            );
            let name = file
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            let tmp = file.with_file_name(format!(".{name}.tmp{}", std::process::id()));
            let r = std::fs::write(&tmp, body).and_then(|()| std::fs::rename(&tmp, file));
            match r {
                Ok(()) => tracing::info!(file = %file.display(), "disruption notice written"),
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    tracing::error!(file = %file.display(), error = %e, "cannot write the disruption notice file");
                }
            }
        }
        if let Some(sig) = self.signal {
            let me = std::process::id();
            for pid in self
                .gpus
                .latest()
                .pids
                .iter()
                .copied()
                .filter(|p| *p != 0 && *p != me)
            {
                // SAFETY: kill(2) with a positive pid and a valid signal.
                let r = unsafe { libc::kill(pid as libc::pid_t, sig) };
                if r == 0 {
                    tracing::info!(pid, signal = sig, "signalled GPU process of the disruption");
                } else {
                    let e = std::io::Error::last_os_error();
                    tracing::error!(pid, signal = sig, error = %e, "cannot signal GPU process (needs the same uid or CAP_KILL)");
                }
            }
        }
    }
}

/// What one poll of an endpoint gives: its current notices, and how long to
/// wait before the next poll.
pub type PollResult = Result<(Vec<Notice>, Duration), String>;

/// One polled endpoint: a name for the log and a poll function keeping its
/// own state (ETag, token) between calls.
pub struct Endpoint {
    name: &'static str,
    poll: Box<dyn FnMut(&Ctx) -> PollResult + Send>,
}

impl Endpoint {
    fn new(name: &'static str, poll: impl FnMut(&Ctx) -> PollResult + Send + 'static) -> Self {
        Self {
            name,
            poll: Box::new(poll),
        }
    }
}

const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Longest a poller rests without beating.
const BEAT: Duration = Duration::from_secs(1);
/// Margin of a poller's heartbeat bound over its longest legitimate poll
/// (name resolution is not bounded by the request timeout).
const SILENCE_MARGIN: Duration = Duration::from_secs(30);

/// How long a poller may go without beating: one poll blocks for at most a
/// GCE long-poll plus its request timeout, or four requests of an AWS poll
/// (token, spot, scheduled, rebalance), each bounded by the timeout.
fn max_silence(ctx: &Ctx) -> Duration {
    ctx.long_poll
        .saturating_add(ctx.timeout.saturating_mul(4))
        .saturating_add(SILENCE_MARGIN)
}

/// Sleeps `d`, beating on the way so a long wait is not taken for a hang;
/// `true` when asked to stop.
fn rest(hb: &Heartbeat, d: Duration) -> bool {
    let until = Instant::now() + d;
    loop {
        hb.beat();
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return hb.stopped();
        }
        if hb.sleep(left.min(BEAT)) {
            return true;
        }
    }
}

/// One run of endpoint `index`'s poller, until asked to stop. Everything
/// it keeps between polls (the endpoint's ETag or token, the backoff)
/// starts afresh on each run, so a run after a panic starts clean.
fn watch(
    index: usize,
    provider: Provider,
    ctx: &Ctx,
    shared: &Mutex<Shared>,
    notifier: &Notifier,
    hb: &Heartbeat,
) {
    let Some(mut ep) = providers::endpoints(provider).into_iter().nth(index) else {
        return;
    };
    let mut backoff = Duration::ZERO;
    while !hb.stopped() {
        hb.beat();
        let polled = (ep.poll)(ctx);
        hb.beat();
        match polled {
            Ok((mut notices, wait)) => {
                if backoff != Duration::ZERO {
                    tracing::info!(endpoint = ep.name, "metadata endpoint answers again");
                }
                backoff = Duration::ZERO;
                let mut fire = Vec::new();
                {
                    let mut sh = shared.lock().unwrap_or_else(|e| e.into_inner());
                    let prev: HashMap<String, Notice> = sh.endpoints[index]
                        .notices
                        .iter()
                        .map(|n| (n.key.clone(), n.clone()))
                        .collect();
                    for n in &mut notices {
                        match prev.get(&n.key) {
                            // The same event: keep the deadline first seen.
                            Some(p) => n.deadline = p.deadline.or(n.deadline),
                            None => {
                                *sh.notices_total.entry(n.ty.clone()).or_default() += 1;
                                if n.notify {
                                    fire.push(n.clone());
                                }
                            }
                        }
                    }
                    sh.endpoints[index] = EndpointState { ok: true, notices };
                }
                for n in &fire {
                    notifier.fire(n);
                }
                if rest(hb, wait) {
                    return;
                }
            }
            Err(e) => {
                backoff = (backoff * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
                tracing::warn!(endpoint = ep.name, error = %e, retry_in = ?backoff, "metadata server poll failed");
                let mut sh = shared.lock().unwrap_or_else(|e| e.into_inner());
                sh.endpoints[index].ok = false;
                sh.errors += 1;
                drop(sh);
                if rest(hb, backoff) {
                    return;
                }
            }
        }
    }
}

/// The cloud collector.
pub struct Cloud {
    provider: Provider,
    shared: Arc<Mutex<Shared>>,
    workers: Workers,
    /// The pollers, one per endpoint; dropping them stops them.
    _pollers: Vec<Worker>,
}

/// Builds the collector and starts its pollers; absent when no cloud is
/// detected (or `--collector.cloud.provider=none`).
fn build(bctx: &BuildContext) -> Result<Built, CollectError> {
    let (opts, o) = (bctx.paths, bctx.options::<CloudOptions>());
    let provider = match o.provider {
        ProviderChoice::None => return Ok(Built::Absent("--collector.cloud.provider=none".into())),
        ProviderChoice::Forced(p) => p,
        ProviderChoice::Auto => match detect(&opts.sysfs) {
            Some(p) => p,
            None => {
                return Ok(Built::Absent(format!(
                    "no cloud provider in DMI ({})",
                    opts.sysfs.join("class/dmi/id").display()
                )))
            }
        },
    };
    let base = match provider {
        Provider::Gce => &o.gce_url,
        Provider::Aws => &o.aws_url,
        Provider::Azure => &o.azure_url,
    };
    let ctx = Ctx {
        base: base.trim_end_matches('/').to_owned(),
        timeout: o.timeout,
        long_poll: o.long_poll_timeout,
        interval: o.poll_interval,
    };
    let endpoints = providers::endpoints(provider);
    let shared = Arc::new(Mutex::new(Shared {
        endpoints: endpoints.iter().map(|_| EndpointState::default()).collect(),
        notices_total: BTreeMap::new(),
        errors: 0,
    }));
    let notifier = Arc::new(Notifier {
        provider,
        file: o.notify_file.clone().filter(|f| !f.as_os_str().is_empty()),
        signal: o.notify_signal,
        gpus: bctx.shared.gpus.clone(),
    });
    let silence = max_silence(&ctx);
    let mut pollers = Vec::with_capacity(endpoints.len());
    for (i, ep) in endpoints.iter().enumerate() {
        let (ctx, shared, notifier) = (ctx.clone(), shared.clone(), notifier.clone());
        pollers.push(bctx.workers.spawn(ep.name, silence, move |hb| {
            watch(i, provider, &ctx, &shared, &notifier, hb)
        })?);
    }
    tracing::info!(provider = provider.as_str(), url = %ctx.base, "reading cloud disruption notices");
    Ok(Built::Ready(Box::new(Cloud {
        provider,
        shared,
        workers: bctx.workers.clone(),
        _pollers: pollers,
    })))
}

impl Collector for Cloud {
    fn name(&self) -> &'static str {
        "cloud"
    }

    fn sample(&mut self, out: &mut Sample) -> Result<(), CollectError> {
        self.workers.check()?;
        let p = self.provider.as_str();
        let sh = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let up = sh.endpoints.iter().all(|e| e.ok);
        out.add(&METADATA_UP)
            .add(&[("provider", p)], if up { 1.0 } else { 0.0 });
        out.add(&METADATA_ERRORS)
            .add(&[("provider", p)], sh.errors as f64);
        let total = out.add(&NOTICES);
        let mut counts: BTreeMap<&str, u64> = self
            .provider
            .maintenance_types()
            .iter()
            .map(|t| (*t, 0))
            .collect();
        counts.insert("preemption", 0);
        for (t, n) in &sh.notices_total {
            counts.insert(t.as_str(), *n);
        }
        for (t, n) in &counts {
            total.add(&[("provider", p), ("type", t)], *n as f64);
        }
        if !up {
            // What is pending is unknown: withheld rather than reported stale.
            return Ok(());
        }
        let notices: Vec<&Notice> = sh.endpoints.iter().flat_map(|e| &e.notices).collect();
        let mut types: Vec<&str> = self.provider.maintenance_types().to_vec();
        for n in notices.iter().filter(|n| n.kind == Kind::Maintenance) {
            if !types.contains(&n.ty.as_str()) {
                types.push(&n.ty);
            }
        }
        let pending = out.add(&MAINTENANCE_PENDING);
        for t in &types {
            let on = notices
                .iter()
                .any(|n| n.kind == Kind::Maintenance && n.ty == *t);
            pending.add(&[("provider", p), ("type", t)], if on { 1.0 } else { 0.0 });
        }
        let start = out.add(&MAINTENANCE_WINDOW_START);
        for t in &types {
            let first = notices
                .iter()
                .filter(|n| n.kind == Kind::Maintenance && n.ty == *t)
                .filter_map(|n| n.window_start)
                .reduce(f64::min);
            if let Some(s) = first {
                start.add(&[("provider", p), ("type", t)], s);
            }
        }
        let preempt = notices.iter().any(|n| n.kind == Kind::Preemption);
        out.add(&PREEMPTION_IMMINENT)
            .add(&[("provider", p)], if preempt { 1.0 } else { 0.0 });
        if let Some(d) = notices.iter().filter_map(|n| n.deadline).reduce(f64::min) {
            out.add(&TERMINATION).add(&[("provider", p)], d);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_from_dmi_fixtures() {
        let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/cloud");
        assert_eq!(detect(&fx.join("gce")), Some(Provider::Gce));
        assert_eq!(detect(&fx.join("aws")), Some(Provider::Aws));
        assert_eq!(detect(&fx.join("azure")), Some(Provider::Azure));
        assert_eq!(detect(&fx.join("none")), None);
        // The host fixture tree has no DMI: absent, nothing contacted.
        let paths = crate::Paths {
            sysfs: fx.join("none"),
            ..Default::default()
        };
        let opts = crate::options::defaults::<CloudOptions>();
        let built = crate::build_with(&SPEC, &paths, &opts, &Default::default());
        assert!(matches!(built, Ok(Built::Absent(_))));
    }

    #[test]
    fn flags_parse() {
        assert_eq!(
            ProviderChoice::parse("gce"),
            Ok(ProviderChoice::Forced(Provider::Gce))
        );
        assert!(ProviderChoice::parse("ibm").is_err());
        assert_eq!(parse_signal("SIGUSR1"), Ok(libc::SIGUSR1));
        assert_eq!(parse_signal("TERM"), Ok(libc::SIGTERM));
        assert!(parse_signal("SIGKILL").is_err());
    }
}
