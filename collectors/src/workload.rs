//! `accel_process_*`: the training processes themselves. The processes that
//! hold GPUs (as the GPU collector last saw them) and those whose command
//! name matches `--collector.process.match`: CPU time, threads, memory,
//! storage I/O, context switches and page faults from /proc, and through
//! perf events the precise task clock and, where the kernel exposes a PMU,
//! cycles and instructions.
//!
//! perf needs either `perf_event_paranoid` <= 1 or CAP_PERFMON, and ptrace
//! access (same user, or CAP_SYS_PTRACE) to watch another user's process.
//! Where it is refused, or the machine has no PMU, the collector says so
//! once in the log and in `accel_collector_feature_enabled`, and exports
//! what works. Series are capped (`--collector.process.max`) and vanish when
//! the process exits.
//!
//! The perf groups are opened and read through the `perf-event2` crate
//! ([`perf`]), not by hand: it sets every `perf_event_attr` field the groups
//! need (per-thread target, inherit off, kernel and hypervisor exclusion for
//! the user-only retry, `PERF_FORMAT_GROUP` with the enabled and running
//! times), and hands back the kernel's errno, so EACCES/EPERM (retry user
//! space only, or give up) are told from ESRCH/ENOENT (the thread exited;
//! for cycles and instructions, no PMU). It also parses the group read. The
//! unsafe system call and the attr layout are its, not ours.

mod perf;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use regex::Regex;

use crate::cgroup::{parse_cgroup, Owner};
use crate::process::{
    FEATURE_ENABLED, WORKLOAD_CONTEXT_SWITCHES, WORKLOAD_CPU_SECONDS, WORKLOAD_CYCLES,
    WORKLOAD_INFO, WORKLOAD_INSTRUCTIONS, WORKLOAD_PAGE_FAULTS, WORKLOAD_READ_BYTES,
    WORKLOAD_RESIDENT_MEMORY, WORKLOAD_TASK_CLOCK, WORKLOAD_THREADS, WORKLOAD_WRITE_BYTES,
};
use crate::procfs::{parse_ctxt, parse_io, parse_stat, Stat};
use crate::shared::{GpuSnapshot, Topic};
use crate::Sample;
use perf::{Access, Perf, ThreadPerf};

/// Most threads per process whose perf counters are opened.
const MAX_PERF_THREADS: usize = 256;

/// Settings of the per-process series.
#[derive(Clone, Debug)]
pub struct WorkloadOptions {
    /// Command names (/proc/PID/comm) to follow besides the GPU processes.
    pub matcher: Option<Regex>,
    /// Most processes followed.
    pub max: usize,
    /// Whether to open perf events at all.
    pub perf: bool,
    /// Processes always followed (`accel-agent profile --pid`).
    pub pids: Vec<u32>,
}

impl Default for WorkloadOptions {
    fn default() -> Self {
        Self {
            matcher: None,
            max: 32,
            perf: true,
            pids: Vec::new(),
        }
    }
}

/// Compiles `--collector.process.match`: the whole command name must match.
pub fn compile_match(re: &str) -> Result<Regex, String> {
    Regex::new(&format!("^(?:{re})$"))
        .map_err(|e| format!("--collector.process.match: bad regex {re:?}: {e}"))
}

/// One followed process.
struct Tracked {
    starttime: u64,
    comm: String,
    owner: Owner,
    reason: &'static str,
    threads: HashMap<u32, ThreadPerf>,
    /// Counts of threads that exited: [task clock ns, cycles, instructions].
    gone: [f64; 3],
    /// Context switches of threads that exited.
    gone_ctxt: (u64, u64),
    last_ctxt: HashMap<u32, (u64, u64)>,
}

/// One process's readings: pid, stat, /proc/PID/io (read, write bytes),
/// context switches (voluntary, involuntary), perf [task clock ns, cycles,
/// instructions], and whether perf counted.
type Row = (u32, Stat, Option<(u64, u64)>, (u64, u64), [f64; 3], bool);

/// The per-process part of the process collector.
pub struct Workloads {
    procfs: PathBuf,
    opts: WorkloadOptions,
    gpus: Topic<GpuSnapshot>,
    hz: f64,
    page: f64,
    perf: Perf,
    io_denied_logged: bool,
    cap_logged: bool,
    procs: HashMap<u32, Tracked>,
}

impl Workloads {
    pub fn new(
        procfs: PathBuf,
        opts: WorkloadOptions,
        gpus: Topic<GpuSnapshot>,
        hz: f64,
        page: f64,
    ) -> Self {
        // perf takes real pids: with another procfs (a fixture tree, or the
        // host's /proc mounted elsewhere in a container) the pids may name
        // other processes here, so perf stays off.
        let perf = opts.perf && procfs == std::path::Path::new("/proc");
        Self {
            procfs,
            perf: Perf::new(perf),
            opts,
            gpus,
            hz,
            page,
            io_denied_logged: false,
            cap_logged: false,
            procs: HashMap::new(),
        }
    }

    /// The processes to follow this sample, GPU processes first.
    fn candidates(&mut self) -> Vec<(u32, &'static str)> {
        let mut out: Vec<(u32, &'static str)> = Vec::new();
        let mut seen = HashSet::new();
        for &pid in &self.opts.pids {
            if seen.insert(pid) {
                out.push((pid, "pid"));
            }
        }
        let gpus = self.gpus.latest();
        let mut gpu = gpus.pids.clone();
        gpu.sort_unstable();
        for pid in gpu {
            if seen.insert(pid) {
                out.push((pid, "gpu"));
            }
        }
        if let Some(re) = &self.opts.matcher {
            let mut matched = Vec::new();
            if let Ok(dir) = std::fs::read_dir(&self.procfs) {
                for e in dir.flatten() {
                    let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok())
                    else {
                        continue;
                    };
                    if seen.contains(&pid) {
                        continue;
                    }
                    if let Ok(c) = std::fs::read_to_string(e.path().join("comm")) {
                        if re.is_match(c.trim_end()) {
                            matched.push(pid);
                        }
                    }
                }
            }
            matched.sort_unstable();
            for pid in matched {
                if seen.insert(pid) {
                    out.push((pid, "match"));
                }
            }
        }
        if out.len() > self.opts.max {
            if !self.cap_logged {
                self.cap_logged = true;
                tracing::warn!(
                    followed = self.opts.max,
                    candidates = out.len(),
                    "more processes than --collector.process.max: the rest are left out"
                );
            }
            out.truncate(self.opts.max);
        }
        out
    }

    /// Adds the per-process series to `out`.
    pub fn sample(&mut self, out: &mut Sample) {
        let candidates = self.candidates();
        let wanted: HashSet<u32> = candidates.iter().map(|c| c.0).collect();
        self.procs.retain(|pid, _| wanted.contains(pid));

        let mut rows: Vec<Row> = Vec::new();
        for (pid, reason) in candidates {
            let dir = self.procfs.join(pid.to_string());
            let Ok(stat) = std::fs::read_to_string(dir.join("stat"))
                .map_err(|_| ())
                .and_then(|t| parse_stat(&t).map_err(|_| ()))
            else {
                self.procs.remove(&pid);
                continue;
            };
            // A new process under a recycled pid starts afresh.
            if self
                .procs
                .get(&pid)
                .is_some_and(|t| t.starttime != stat.starttime)
            {
                self.procs.remove(&pid);
            }
            // Read every sample: an exec changes the command name (a shell
            // wrapper becoming python3), a move changes the cgroup.
            let comm = std::fs::read_to_string(dir.join("comm"))
                .map(|s| s.trim_end().to_owned())
                .unwrap_or_default();
            let owner = std::fs::read_to_string(dir.join("cgroup"))
                .map(|t| parse_cgroup(&t))
                .unwrap_or_default();
            let t = self.procs.entry(pid).or_insert_with(|| Tracked {
                starttime: stat.starttime,
                comm: String::new(),
                owner: Owner::default(),
                reason,
                threads: HashMap::new(),
                gone: [0.0; 3],
                gone_ctxt: (0, 0),
                last_ctxt: HashMap::new(),
            });
            t.comm = comm;
            t.owner = owner;
            t.reason = reason;
            let io = match std::fs::read_to_string(dir.join("io")) {
                Ok(t) => parse_io(&t),
                Err(e) => {
                    if e.kind() == std::io::ErrorKind::PermissionDenied && !self.io_denied_logged {
                        self.io_denied_logged = true;
                        tracing::info!(pid, "cannot read /proc/PID/io of another user's process (needs CAP_SYS_PTRACE): read and write bytes left out");
                    }
                    None
                }
            };
            // Threads now, for context switches and perf.
            let mut tids: Vec<u32> = std::fs::read_dir(dir.join("task"))
                .map(|d| {
                    d.flatten()
                        .filter_map(|e| e.file_name().to_str()?.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            tids.sort_unstable();
            let mut ctxt_now = HashMap::new();
            for &tid in &tids {
                if let Ok(t) =
                    std::fs::read_to_string(dir.join("task").join(tid.to_string()).join("status"))
                {
                    ctxt_now.insert(tid, parse_ctxt(&t));
                }
            }
            // perf: open new threads, fold exited ones.
            let mut to_open = Vec::new();
            {
                let t = self.procs.get_mut(&pid).expect("inserted above");
                let exited: Vec<u32> = t
                    .threads
                    .keys()
                    .copied()
                    .filter(|tid| !ctxt_now.contains_key(tid))
                    .collect();
                for tid in exited {
                    if let Some(mut p) = t.threads.remove(&tid) {
                        if let Some(v) = p.read() {
                            for (g, x) in t.gone.iter_mut().zip(v) {
                                *g += x;
                            }
                        }
                    }
                }
                let gone_ctxt: Vec<u32> = t
                    .last_ctxt
                    .keys()
                    .copied()
                    .filter(|tid| !ctxt_now.contains_key(tid))
                    .collect();
                for tid in gone_ctxt {
                    if let Some((v, n)) = t.last_ctxt.remove(&tid) {
                        t.gone_ctxt.0 += v;
                        t.gone_ctxt.1 += n;
                    }
                }
                t.last_ctxt.extend(ctxt_now.iter().map(|(k, v)| (*k, *v)));
                if self.perf.may_open() {
                    for &tid in tids.iter().take(MAX_PERF_THREADS) {
                        if !t.threads.contains_key(&tid) {
                            to_open.push(tid);
                        }
                    }
                }
            }
            for tid in to_open {
                let none_open = self.procs.values().all(|p| p.threads.is_empty());
                if let Some(p) = self.perf.open(tid, none_open) {
                    self.procs
                        .get_mut(&pid)
                        .expect("present")
                        .threads
                        .insert(tid, p);
                }
            }
            let t = self.procs.get_mut(&pid).expect("present");
            let mut perf = t.gone;
            let mut have_perf = false;
            for p in t.threads.values_mut() {
                if let Some(v) = p.read() {
                    have_perf = true;
                    for (p, x) in perf.iter_mut().zip(v) {
                        *p += x;
                    }
                }
            }
            let ctxt = t
                .last_ctxt
                .values()
                .fold(t.gone_ctxt, |a, b| (a.0 + b.0, a.1 + b.1));
            rows.push((pid, stat, io, ctxt, perf, have_perf || t.gone[0] > 0.0));
        }

        let hw = self.perf.hardware == Some(true);
        let fam_info = out.add(&WORKLOAD_INFO);
        for (pid, ..) in &rows {
            let t = &self.procs[pid];
            fam_info.add(
                &[
                    ("pid", &pid.to_string()),
                    ("comm", &t.comm),
                    ("unit", &t.owner.unit),
                    ("container", &t.owner.container),
                    ("slurm_job", &t.owner.job),
                    ("reason", t.reason),
                ],
                1.0,
            );
        }
        // Each row's pid and comm labels, made once for all families.
        let names: HashMap<u32, (String, String)> = rows
            .iter()
            .map(|r| (r.0, (r.0.to_string(), self.procs[&r.0].comm.clone())))
            .collect();
        let cpu = out.add(&WORKLOAD_CPU_SECONDS);
        for (pid, s, ..) in &rows {
            let (p, c) = &names[pid];
            cpu.add(
                &[("pid", p.as_str()), ("comm", c.as_str()), ("mode", "user")],
                s.utime as f64 / self.hz,
            );
            cpu.add(
                &[
                    ("pid", p.as_str()),
                    ("comm", c.as_str()),
                    ("mode", "system"),
                ],
                s.stime as f64 / self.hz,
            );
        }
        let threads = out.add(&WORKLOAD_THREADS);
        for (pid, s, ..) in &rows {
            let (p, c) = &names[pid];
            threads.add(
                &[("pid", p.as_str()), ("comm", c.as_str())],
                s.threads as f64,
            );
        }
        let rss = out.add(&WORKLOAD_RESIDENT_MEMORY);
        for (pid, s, ..) in &rows {
            let (p, c) = &names[pid];
            rss.add(
                &[("pid", p.as_str()), ("comm", c.as_str())],
                s.rss_pages as f64 * self.page,
            );
        }
        let faults = out.add(&WORKLOAD_PAGE_FAULTS);
        for (pid, s, ..) in &rows {
            let (p, c) = &names[pid];
            faults.add(
                &[("pid", p.as_str()), ("comm", c.as_str()), ("kind", "minor")],
                s.minflt as f64,
            );
            faults.add(
                &[("pid", p.as_str()), ("comm", c.as_str()), ("kind", "major")],
                s.majflt as f64,
            );
        }
        let cs = out.add(&WORKLOAD_CONTEXT_SWITCHES);
        for (pid, _, _, ctxt, ..) in &rows {
            let (p, c) = &names[pid];
            cs.add(
                &[
                    ("pid", p.as_str()),
                    ("comm", c.as_str()),
                    ("kind", "voluntary"),
                ],
                ctxt.0 as f64,
            );
            cs.add(
                &[
                    ("pid", p.as_str()),
                    ("comm", c.as_str()),
                    ("kind", "involuntary"),
                ],
                ctxt.1 as f64,
            );
        }
        let rb = out.add(&WORKLOAD_READ_BYTES);
        for (pid, _, io, ..) in &rows {
            if let Some((r, _)) = io {
                let (p, c) = &names[pid];
                rb.add(&[("pid", p.as_str()), ("comm", c.as_str())], *r as f64);
            }
        }
        let wb = out.add(&WORKLOAD_WRITE_BYTES);
        for (pid, _, io, ..) in &rows {
            if let Some((_, w)) = io {
                let (p, c) = &names[pid];
                wb.add(&[("pid", p.as_str()), ("comm", c.as_str())], *w as f64);
            }
        }
        let tc = out.add(&WORKLOAD_TASK_CLOCK);
        for (pid, _, _, _, perf, ok) in &rows {
            if *ok {
                let (p, c) = &names[pid];
                tc.add(&[("pid", p.as_str()), ("comm", c.as_str())], perf[0] / 1e9);
            }
        }
        if hw {
            let cy = out.add(&WORKLOAD_CYCLES);
            for (pid, _, _, _, perf, ok) in &rows {
                if *ok {
                    let (p, c) = &names[pid];
                    cy.add(&[("pid", p.as_str()), ("comm", c.as_str())], perf[1]);
                }
            }
            let ins = out.add(&WORKLOAD_INSTRUCTIONS);
            for (pid, _, _, _, perf, ok) in &rows {
                if *ok {
                    let (p, c) = &names[pid];
                    ins.add(&[("pid", p.as_str()), ("comm", c.as_str())], perf[2]);
                }
            }
        }
        let feat = out.add(&FEATURE_ENABLED);
        let access = self.perf.access;
        let perf_ok = matches!(access, Access::Full | Access::UserOnly);
        let known = !matches!(access, Access::Unknown | Access::Off);
        if known {
            feat.add(
                &[("collector", "process"), ("feature", "perf_task_clock")],
                if perf_ok { 1.0 } else { 0.0 },
            );
            feat.add(
                &[("collector", "process"), ("feature", "perf_kernel_time")],
                if access == Access::Full { 1.0 } else { 0.0 },
            );
        }
        if let Some(h) = self.perf.hardware {
            feat.add(
                &[("collector", "process"), ("feature", "perf_hardware")],
                if h && perf_ok { 1.0 } else { 0.0 },
            );
        }
    }
}
