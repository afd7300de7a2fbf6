//! `accel_health_*`: a verdict per component and check (`ok`, `degraded`,
//! `failed`), with the reason and the action to take, from signals the
//! agent already reads and a few it reads only for this.
//!
//! - the GPU collector's snapshot ([`crate::shared::GpuSnapshot`]): which
//!   GPUs NVML answers for and which are down, XID counts, row remapping,
//!   ECC, retired pages, NVLink state, PCIe link, clock slowdowns;
//! - the PCI bus in sysfs: NVIDIA display/3D controllers, to find a GPU
//!   that is there but NVML does not see;
//! - the kernel log (`--collector.health.kmsg`, `/dev/kmsg`): NVRM Xid
//!   lines, "fallen off the bus", NVSwitch SXid lines, hung tasks, OOM
//!   kills ([`kmsg`]);
//! - InfiniBand ports in sysfs (state, and rate against
//!   `--health.infiniband.rate`); the clock (adjtimex).
//!
//! What events leave (XIDs, SXids, kernel log lines) is sticky: kept in the
//! state file (`--collector.health.state-file`) until what fixes it happens
//! ([`store`], [`xid`]). The report of each sample is published on
//! [`crate::Shared::health`] for the agent's `/health` endpoint and landing
//! page; `accel-agent health` prints it. docs/health.md lists every check,
//! its source and its action.

pub mod checks;
pub mod kmsg;
pub mod report;
pub mod store;
pub mod xid;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use report::{Action, Finding, Report, State};

use crate::options::{options, parse_duration};
use crate::shared::{GpuSnapshot, Topic};
use crate::{BuildContext, Built, CollectError, Collector, FamilyDef, Sample, Spec, HOST_INTERVAL};
use kmsg::{Event, Reader};
use store::{ClearOn, Entry, Store};

/// The checks, in report order: the names `--collector.health.skip` and
/// `accel-agent health --clear` take, and the `check` label.
pub const CHECKS: [&str; 15] = [
    "present",
    "lost",
    "xid",
    "memory",
    "nvlink",
    "pcie",
    "thermal",
    "recovery",
    "fabric",
    "sxid",
    "infiniband",
    "clock",
    "hung_task",
    "oom_kill",
    "checkpoint_fs",
];

/// The default state file.
pub const DEFAULT_STATE_FILE: &str = "/var/lib/accel-agent/health.json";

fn parse_checks(s: &str) -> Result<String, String> {
    for c in s.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        if !CHECKS.contains(&c) {
            return Err(format!(
                "{c:?} is not a health check; the checks are {}",
                CHECKS.join(", ")
            ));
        }
    }
    Ok(s.to_owned())
}

fn parse_gbps(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a rate in Gb/s (e.g. 400)")),
    }
}

/// Settings of the health collector.
#[derive(clap::Args, Clone, Debug, PartialEq)]
pub struct HealthOptions {
    /// The kernel log; empty: not read.
    #[arg(
        id = "collector.health.kmsg",
        long = "collector.health.kmsg",
        value_name = "PATH",
        help = "Kernel log the health checks read (NVRM Xid, fallen off the bus, NVSwitch SXid, hung tasks, OOM kills): /dev/kmsg, or a file of log lines; empty: none.",
        default_value = "/dev/kmsg",
        value_parser = crate::options::parse_path
    )]
    pub kmsg: PathBuf,
    /// Where sticky states are kept; empty: in memory only.
    #[arg(
        id = "collector.health.state-file",
        long = "collector.health.state-file",
        value_name = "PATH",
        help = "File keeping the sticky health states (an XID that needs a reset) across restarts; accel-agent health --clear edits it. Empty: in memory only.",
        default_value = DEFAULT_STATE_FILE,
        value_parser = crate::options::parse_path
    )]
    pub state_file: PathBuf,
    /// Expected InfiniBand port rate, Gb/s; 0: any.
    #[arg(
        id = "health.infiniband.rate",
        long = "health.infiniband.rate",
        value_name = "GBPS",
        help = "Expected InfiniBand port rate in Gb/s (e.g. 400): an active port below it is degraded. 0: any rate.",
        default_value = "0",
        value_parser = parse_gbps
    )]
    pub infiniband_rate: f64,
    /// How long an event that needs no more than a restart of the job
    /// keeps its check degraded.
    #[arg(
        id = "collector.health.event-window",
        long = "collector.health.event-window",
        value_name = "DURATION",
        help = "How long an event that needs only a restart of the job (XID 13, 31, 94; a non-fatal SXid; a hung task; an OOM kill) keeps its check degraded.",
        default_value = "1h",
        value_parser = parse_duration
    )]
    pub event_window: Duration,
    /// Where checkpoints are written; empty: not checked.
    #[arg(
        id = "health.checkpoint-path",
        long = "health.checkpoint-path",
        value_name = "PATH",
        help = "Directory jobs write checkpoints to: failed while the file system holding it is mounted read-only (from /proc/1/mounts). Empty: not checked.",
        default_value = "",
        value_parser = crate::options::parse_path
    )]
    pub checkpoint_path: PathBuf,
    /// Checks not run.
    #[arg(
        id = "collector.health.skip",
        long = "collector.health.skip",
        value_name = "CHECKS",
        help = "Comma-separated health checks not to run (e.g. clock,infiniband).",
        default_value = "",
        value_parser = parse_checks
    )]
    pub skip: String,
}

/// The health collector's registry entry.
pub const SPEC: Spec = Spec {
    name: "health",
    help: "node health: a state (ok, degraded, failed), reason and action per component and check, from the GPU collector's snapshot, the PCI bus, the kernel log, InfiniBand ports and the clock",
    default_enabled: true,
    default_interval: HOST_INTERVAL,
    options: options::<HealthOptions>(),
    detail: "",
    families: FAMILIES,
    prefixes: &["accel_health_"],
    outside: &[],
    build,
};

/// `accel_health_state`.
pub const HEALTH_STATE: FamilyDef = FamilyDef::gauge(
    "accel_health_state",
    "Health of a component by check: 0 ok, 1 degraded, 2 failed; action is what to do.",
)
.labels(&["component", "check", "action"])
.doc("0 ok, 1 degraded, 2 failed, per component (`gpu3`, `gpus`, `nvidia-nvswitch0`, `mlx5_0:1`, `host`) and check (docs/health.md). `action` says what to do (`NONE` while ok; `RESTART_APP`, `RESET_GPU`, `RESTART_BM`, `CONTACT_SUPPORT`, `CHECK_MECHANICALS`, `CHECK_CABLE`, `SYNC_CLOCK`, `INVESTIGATE`); one series per component and check, its action label changes with the state")
.source("the GPU collector's snapshot, `/sys/bus/pci/devices`, the kernel log, `/sys/class/infiniband`, `adjtimex(2)`; sticky states from the state file")
.equivalent("gpud's component health states; DCGM health watches (`dcgmHealthCheck`)");

/// `accel_health_node_state`.
pub const NODE_STATE: FamilyDef = FamilyDef::gauge(
    "accel_health_node_state",
    "Health of the node, the worst of its checks: 0 ok, 1 degraded, 2 failed.",
)
.doc("the worst `accel_health_state` of the node; also the exit code of `accel-agent health`")
.source("`accel_health_state`");

/// Every family this collector exports.
pub const FAMILIES: &[FamilyDef] = &[HEALTH_STATE, NODE_STATE];

/// The health collector.
pub struct Health {
    sysfs: PathBuf,
    procfs: PathBuf,
    opts: HealthOptions,
    skip: Vec<String>,
    gpus: Topic<GpuSnapshot>,
    report: Topic<Report>,
    kmsg: Option<Reader>,
    /// Whether the last read of the kernel log worked (its checks run only
    /// then), and whether its failure was logged.
    kmsg_ok: bool,
    kmsg_logged: bool,
    store: Store,
    /// XID counts already turned into events, by (uuid, xid).
    xid_seen: HashMap<(String, u64), u64>,
    /// Reset counts already seen, by uuid.
    resets_seen: HashMap<String, u64>,
}

fn build(ctx: &BuildContext) -> Result<Built, CollectError> {
    Ok(Built::Ready(Box::new(Health::new(
        ctx.paths,
        ctx.options::<HealthOptions>().clone(),
        ctx.shared,
    ))))
}

/// Unix time now.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// What names this boot: the kernel's boot id, else the boot time from
/// /proc/stat, else "".
pub fn boot_id(procfs: &Path) -> String {
    if let Ok(id) = std::fs::read_to_string(procfs.join("sys/kernel/random/boot_id")) {
        if !id.trim().is_empty() {
            return id.trim().to_owned();
        }
    }
    boot_time(procfs).map_or_else(String::new, |b| format!("btime:{b}"))
}

/// Unix time of the boot (/proc/stat `btime`).
fn boot_time(procfs: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(procfs.join("stat")).ok()?;
    crate::load::parse_stat(&text).ok()?[0]
}

/// A path flag's value, `None` when empty.
fn non_empty(p: &Path) -> Option<PathBuf> {
    (!p.as_os_str().is_empty()).then(|| p.to_owned())
}

impl Health {
    /// The collector, reading under `paths`, publishing on `shared.health`.
    pub fn new(paths: &crate::Paths, opts: HealthOptions, shared: &crate::Shared) -> Health {
        let store = Store::open(non_empty(&opts.state_file), &boot_id(&paths.procfs));
        Health {
            sysfs: paths.sysfs.clone(),
            procfs: paths.procfs.clone(),
            skip: opts
                .skip
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            kmsg: non_empty(&opts.kmsg).map(|p| Reader::new(&p)),
            kmsg_ok: false,
            kmsg_logged: false,
            opts,
            gpus: shared.gpus.clone(),
            report: shared.health.clone(),
            store,
            xid_seen: HashMap::new(),
            resets_seen: HashMap::new(),
        }
    }

    fn runs(&self, check: &str) -> bool {
        !self.skip.iter().any(|s| s == check)
    }

    /// Records XID `xid` of the GPU `key` (shown as `component`).
    fn xid_event(&mut self, key: &str, component: &str, xid: u64, at: f64, source: &str) {
        let x = xid::lookup(xid);
        let Some(action) = x.action else { return };
        let window = self.opts.event_window.as_secs_f64();
        let (state, clear_on, until) = match action {
            Action::ResetGpu => (State::Failed, ClearOn::Reset, None),
            Action::RestartBm => (State::Failed, ClearOn::Reboot, None),
            Action::ContactSupport => (State::Failed, ClearOn::Hand, None),
            _ => (State::Degraded, ClearOn::Expiry, Some(at + window)),
        };
        self.store.record(Entry {
            key: key.to_owned(),
            id: format!("xid:{xid}"),
            component: component.to_owned(),
            check: "xid".to_owned(),
            state,
            action,
            reason: format!("XID {xid}: {} ({source})", x.what),
            since: at,
            last: at,
            until,
            clear_on,
        });
    }

    /// Turns a kernel log line into a sticky state.
    fn kmsg_event(&mut self, event: Event, at: f64, by_bus: &HashMap<String, (u32, String)>) {
        let gpu = |bus: &str| match by_bus.get(bus) {
            Some((i, uuid)) => (uuid.clone(), format!("gpu{i}")),
            None if bus.is_empty() => ("pci:unknown".to_owned(), "gpu@unknown".to_owned()),
            None => (format!("pci:{bus}"), format!("gpu@{bus}")),
        };
        let window = self.opts.event_window.as_secs_f64();
        let host = |id: &str, reason: String| Entry {
            key: "host".to_owned(),
            id: id.to_owned(),
            component: "host".to_owned(),
            check: id.to_owned(),
            state: State::Degraded,
            action: Action::Investigate,
            reason,
            since: at,
            last: at,
            until: Some(at + window),
            clear_on: ClearOn::Expiry,
        };
        match event {
            Event::Xid { bus, xid } => {
                let (key, component) = gpu(&bus);
                self.xid_event(&key, &component, xid, at, "kernel log");
            }
            Event::FallenOff { bus } => {
                let (key, component) = gpu(&bus);
                self.store.record(Entry {
                    key,
                    id: "fallen_off".to_owned(),
                    component,
                    check: "lost".to_owned(),
                    state: State::Failed,
                    action: Action::RestartBm,
                    reason: "GPU has fallen off the bus (kernel log)".to_owned(),
                    since: at,
                    last: at,
                    until: None,
                    clear_on: ClearOn::Reboot,
                });
            }
            Event::SXid {
                device,
                code,
                fatal,
            } => {
                let (state, action, clear_on, until) = if fatal {
                    (State::Failed, Action::RestartBm, ClearOn::Reboot, None)
                } else {
                    (
                        State::Degraded,
                        Action::RestartApp,
                        ClearOn::Expiry,
                        Some(at + window),
                    )
                };
                self.store.record(Entry {
                    key: device.clone(),
                    id: format!("sxid:{code}"),
                    component: device,
                    check: "sxid".to_owned(),
                    state,
                    action,
                    reason: format!(
                        "SXid {code} ({}, kernel log)",
                        if fatal { "fatal" } else { "non-fatal" }
                    ),
                    since: at,
                    last: at,
                    until,
                    clear_on,
                });
            }
            Event::HungTask { task } => self.store.record(host(
                "hung_task",
                format!("task {task} blocked for more than the hung task timeout (kernel log)"),
            )),
            Event::OomKill { process } => self.store.record(host(
                "oom_kill",
                format!("the OOM killer killed process {process} (kernel log)"),
            )),
        }
    }

    /// Reads the events since the last sample into the store.
    fn events(&mut self, snap: &GpuSnapshot, now: f64) {
        let by_bus: HashMap<String, (u32, String)> = snap
            .gpus
            .iter()
            .filter_map(|g| Some((kmsg::norm_bus(&g.pci_bus_id)?, (g.index, g.uuid.clone()))))
            .collect();
        for g in &snap.gpus {
            let seen_resets = self
                .resets_seen
                .entry(g.uuid.clone())
                .or_insert(g.health.resets);
            if g.health.resets > *seen_resets {
                *seen_resets = g.health.resets;
                tracing::info!(gpu = g.index, "GPU reset seen: clearing what a reset fixes");
                self.store.reset(&g.uuid, now);
            }
            for &(x, n) in &g.health.xids {
                let seen = self.xid_seen.entry((g.uuid.clone(), x)).or_insert(0);
                if n > *seen {
                    *seen = n;
                    let component = format!("gpu{}", g.index);
                    self.xid_event(&g.uuid.clone(), &component, x, now, "NVML event");
                }
            }
        }
        let Some(reader) = self.kmsg.as_mut() else {
            return;
        };
        let lines = match reader.read_new() {
            Ok(lines) => {
                self.kmsg_ok = true;
                lines
            }
            Err(e) => {
                if !self.kmsg_logged {
                    tracing::info!(error = %e, "cannot read the kernel log: its health checks (sxid, hung_task, oom_kill, NVRM Xid lines) are not run");
                    self.kmsg_logged = true;
                }
                self.kmsg_ok = false;
                self.kmsg = Some(Reader::new(reader.path()));
                return;
            }
        };
        let btime = boot_time(&self.procfs).map(|b| b as f64);
        for line in lines {
            if let Some(rec) = kmsg::parse_line(&line) {
                let at = match (btime, rec.uptime) {
                    (Some(b), Some(u)) => b + u,
                    _ => now,
                };
                self.kmsg_event(rec.event, at, &by_bus);
            }
        }
    }

    /// The InfiniBand ports.
    fn infiniband(&self) -> Vec<Finding> {
        let dir = self.sysfs.join("class/infiniband");
        let mut out = Vec::new();
        let Ok(devs) = std::fs::read_dir(&dir) else {
            return out;
        };
        let mut devs: Vec<String> = devs
            .filter_map(|d| d.ok()?.file_name().into_string().ok())
            .collect();
        devs.sort();
        for dev in devs {
            let Ok(ports) = std::fs::read_dir(dir.join(&dev).join("ports")) else {
                continue;
            };
            let mut ports: Vec<String> = ports
                .filter_map(|p| p.ok()?.file_name().into_string().ok())
                .collect();
            ports.sort();
            for port in ports {
                let p = dir.join(&dev).join("ports").join(&port);
                let Ok(state) = std::fs::read_to_string(p.join("state")) else {
                    continue;
                };
                let rate = std::fs::read_to_string(p.join("rate"))
                    .ok()
                    .and_then(|r| crate::infiniband::parse_rate(r.trim()).ok())
                    .map(|bytes| bytes * 8.0 / 1e9);
                out.push(checks::infiniband(
                    &format!("{dev}:{port}"),
                    &state,
                    rate,
                    self.opts.infiniband_rate,
                ));
            }
        }
        out
    }

    /// One round of checks.
    pub fn check(&mut self) -> Report {
        let now = unix_now();
        self.store.refresh();
        self.store.new_boot(&boot_id(&self.procfs));
        let snap = self.gpus.latest();
        self.events(&snap, now);
        self.store.expire(now);
        self.store.save();

        let pci = checks::nvidia_gpus_on_pci(&self.sysfs);
        // A GPU lost before NVML gave its PCI address: when it is the only
        // one, and one NVIDIA GPU on PCI is not claimed, that is its address.
        let claimed: Vec<String> = snap
            .gpus
            .iter()
            .filter_map(|g| kmsg::norm_bus(&g.pci_bus_id))
            .collect();
        let unclaimed: Vec<&String> = pci.iter().filter(|p| !claimed.contains(p)).collect();
        let unknown: Vec<u32> = (0..snap.count)
            .filter(|i| !snap.gpus.iter().any(|g| g.index == *i))
            .collect();
        let guess = match (unclaimed.as_slice(), unknown.as_slice()) {
            ([bus], [index]) => Some((format!("pci:{bus}"), *index)),
            _ => None,
        };
        // Which component each sticky state is shown as.
        let component_of = |e: &Entry| {
            if let Some((key, index)) = &guess {
                if *key == e.key {
                    return format!("gpu{index}");
                }
            }
            snap.gpus
                .iter()
                .find(|g| {
                    g.uuid == e.key
                        || e.key
                            .strip_prefix("pci:")
                            .is_some_and(|b| kmsg::norm_bus(&g.pci_bus_id).as_deref() == Some(b))
                })
                .map_or_else(|| e.component.clone(), |g| format!("gpu{}", g.index))
        };
        let mut sticky: Vec<(String, &Entry, bool)> = self
            .store
            .entries
            .iter()
            .map(|e| (component_of(e), e, false))
            .collect();
        let switches: Vec<String> = dedup(
            sticky
                .iter()
                .filter(|(_, e, _)| e.check == "sxid")
                .map(|(c, _, _)| c.clone())
                .collect(),
        );
        let mut merged = |live: Finding| merge(live, &mut sticky);
        let mut findings = Vec::new();
        if snap.sampled {
            findings.push(merged(checks::present(&pci, &snap)));
            for i in 0..snap.count {
                let c = format!("gpu{i}");
                findings.push(merged(checks::lost(&c, snap.down.contains(&i))));
                findings.push(merged(Finding::ok(&c, "xid", "no XID that needs action")));
                let Some(g) = snap.gpus.iter().find(|g| g.index == i) else {
                    continue;
                };
                if snap.down.contains(&i) {
                    continue;
                }
                findings.push(merged(checks::memory(&c, &g.health)));
                findings.push(merged(checks::nvlink(&c, &g.health)));
                findings.push(merged(checks::pcie(&c, &g.health, g.busy)));
                findings.push(merged(checks::thermal(&c, &g.health)));
                if let Some(a) = g.health.recovery_action {
                    findings.push(merged(checks::recovery(&c, a)));
                }
                if let Some(f) = g.health.fabric {
                    findings.push(merged(checks::fabric(&c, f)));
                }
            }
        }
        if self.kmsg_ok {
            if switches.is_empty() {
                findings.push(Finding::ok("nvswitch", "sxid", "no SXid in the kernel log"));
            }
            for s in &switches {
                findings.push(merged(Finding::ok(s, "sxid", "")));
            }
        }
        for f in self.infiniband() {
            findings.push(merged(f));
        }
        if self.runs("clock") {
            match crate::time::Timex::read() {
                Ok(tx) => findings.push(merged(checks::clock(tx.state))),
                Err(e) => tracing::debug!(error = %e, "adjtimex failed: no clock check"),
            }
        }
        if self.kmsg_ok {
            findings.push(merged(Finding::ok("host", "hung_task", "no hung task")));
            findings.push(merged(Finding::ok("host", "oom_kill", "no OOM kill")));
        }
        if let Some(path) = non_empty(&self.opts.checkpoint_path) {
            let table = std::fs::read_to_string(self.procfs.join("1/mounts"))
                .or_else(|_| std::fs::read_to_string(self.procfs.join("mounts")));
            match table {
                Ok(t) => findings.push(merged(checks::checkpoint_fs(&path.to_string_lossy(), &t))),
                Err(e) => tracing::debug!(error = %e, "no mount table: no checkpoint_fs check"),
            }
        }
        // Sticky states of components not checked live (a GPU NVML does not
        // know, by its PCI address).
        let mut rest: Vec<(String, String)> = sticky
            .iter()
            .filter(|(_, _, used)| !used)
            .map(|(c, e, _)| (c.clone(), e.check.clone()))
            .collect();
        rest.sort();
        rest.dedup();
        for (c, check) in rest {
            findings.push(merge(Finding::ok(&c, &check, ""), &mut sticky));
        }
        findings.retain(|f| self.runs(&f.check));
        Report {
            findings,
            time: now,
        }
    }

    /// Clears by hand what `what` names (see [`Store::clear`]); returns how
    /// many states were cleared.
    pub fn clear(&mut self, what: &str) -> usize {
        self.store.refresh();
        let snap = self.gpus.latest();
        let n = self.store.clear(what, unix_now(), |e| {
            snap.gpus
                .iter()
                .find(|g| g.uuid == e.key)
                .map_or_else(|| e.component.clone(), |g| format!("gpu{}", g.index))
        });
        self.store.save();
        n
    }
}

/// A live finding merged with the sticky states of its component and check
/// (marked used): the worst state and action, the reasons of all that are
/// not ok.
fn merge(live: Finding, sticky: &mut [(String, &Entry, bool)]) -> Finding {
    let mut bad: Vec<(State, Action, String)> = Vec::new();
    if live.state != State::Ok {
        bad.push((live.state, live.action, live.reason.clone()));
    }
    for (c, e, used) in sticky.iter_mut() {
        if *c == live.component && e.check == live.check {
            *used = true;
            bad.push((e.state, e.action, e.reason.clone()));
        }
    }
    match bad.iter().max_by_key(|b| (b.0, b.1)) {
        None => live,
        Some(top) => Finding::bad(
            &live.component,
            &live.check,
            top.0,
            top.1,
            bad.iter()
                .map(|b| b.2.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        ),
    }
}

fn dedup(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    v
}

/// Whether `what` is something `--clear` takes: `all`, a check, or
/// `COMPONENT/CHECK`.
pub fn valid_clear(what: &str) -> bool {
    let check = what
        .rsplit_once('/')
        .map_or(what, |(c, k)| if c.is_empty() { "" } else { k });
    what == "all" || CHECKS.contains(&check)
}

impl Collector for Health {
    fn name(&self) -> &'static str {
        "health"
    }

    fn sample(&mut self, out: &mut Sample) -> Result<(), CollectError> {
        let report = self.check();
        let fam = out.add(&HEALTH_STATE);
        for f in &report.findings {
            fam.add(
                &[
                    ("component", &f.component),
                    ("check", &f.check),
                    ("action", f.action.as_str()),
                ],
                f64::from(f.state.code()),
            );
        }
        out.add(&NODE_STATE)
            .add(&[], f64::from(report.state().code()));
        self.report.publish(report);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::{GpuHealth, GpuIds};

    fn health(dir: &Path, kmsg: &str) -> (Health, crate::Shared) {
        let shared = crate::Shared::default();
        std::fs::write(dir.join("kmsg"), kmsg).unwrap();
        let opts = HealthOptions {
            kmsg: dir.join("kmsg"),
            state_file: dir.join("health.json"),
            infiniband_rate: 0.0,
            event_window: Duration::from_secs(3600),
            checkpoint_path: PathBuf::new(),
            skip: "clock".into(),
        };
        let paths = crate::Paths {
            procfs: dir.join("proc"),
            sysfs: dir.join("sys"),
            ..Default::default()
        };
        (Health::new(&paths, opts, &shared), shared)
    }

    fn gpu(index: u32, health: GpuHealth) -> GpuIds {
        GpuIds {
            index,
            uuid: format!("GPU-{index}"),
            pci_bus_id: format!("00000000:{:02x}:00.0", 0x18 + index),
            health,
            ..Default::default()
        }
    }

    #[test]
    fn xid_79_is_sticky_until_cleared_and_a_reset_clears_xid_48() {
        let dir = std::env::temp_dir().join(format!("accel-health-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (mut h, shared) = health(
            &dir,
            "NVRM: Xid (PCI:0000:19:00): 79, pid=1, GPU has fallen off the bus.\nnvidia-nvswitch0: SXid (PCI:0000:05:00.0): 12028, Non-fatal, Link 32\n",
        );
        let publish = |g0: GpuHealth, down: Vec<u32>| {
            shared.gpus.publish(GpuSnapshot {
                sampled: true,
                count: 2,
                down,
                gpus: vec![gpu(0, g0), gpu(1, GpuHealth::default())],
                ..Default::default()
            })
        };
        publish(
            GpuHealth {
                xids: vec![(48, 1)],
                remap_pending: Some(true),
                ..Default::default()
            },
            vec![],
        );
        let r = h.check();
        let find = |r: &Report, c: &str, k: &str| {
            r.findings
                .iter()
                .find(|f| f.component == c && f.check == k)
                .cloned()
                .unwrap_or_else(|| panic!("no {c}/{k} in {r:?}"))
        };
        assert_eq!(find(&r, "gpu1", "xid").action, Action::RestartBm);
        assert_eq!(find(&r, "gpu0", "xid").action, Action::ResetGpu);
        assert_eq!(find(&r, "gpu0", "memory").state, State::Degraded);
        assert_eq!(find(&r, "nvidia-nvswitch0", "sxid").state, State::Degraded);
        assert_eq!(find(&r, "host", "oom_kill").state, State::Ok);
        assert_eq!(r.state(), State::Failed);
        // The GPU comes back after a reset: XID 48 and the remap go, XID 79
        // (a reboot) stays.
        publish(
            GpuHealth {
                xids: vec![(48, 1)],
                resets: 1,
                ..Default::default()
            },
            vec![],
        );
        let r = h.check();
        assert_eq!(find(&r, "gpu0", "xid").state, State::Ok);
        assert_eq!(find(&r, "gpu1", "xid").state, State::Failed);
        // A restart of the agent keeps it; clearing by hand ends it.
        drop(h);
        let (mut h, shared2) = health(&dir, "");
        shared2.gpus.publish((*shared.gpus.latest()).clone());
        assert_eq!(find(&h.check(), "gpu1", "xid").state, State::Failed);
        assert_eq!(h.clear("gpu1/xid"), 1);
        assert_eq!(find(&h.check(), "gpu1", "xid").state, State::Ok);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn clear_arguments() {
        for ok in ["all", "xid", "gpu3/xid", "GPU-1/memory"] {
            assert!(valid_clear(ok), "{ok}");
        }
        for bad in ["", "xyz", "gpu3/", "/xid", "gpu3/xyz"] {
            assert!(!valid_clear(bad), "{bad}");
        }
        assert!(parse_checks("clock, infiniband").is_ok());
        assert!(parse_checks("clocks").is_err());
    }
}
