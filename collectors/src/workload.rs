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

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use regex::Regex;

use crate::cgroup::{parse_cgroup, Owner};
use crate::shared::{GpuSnapshot, Topic};
use crate::util::parse_u64;
use crate::{CollectError, Sample};

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

/// The fields of /proc/PID/stat the series need.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub minflt: u64,
    pub majflt: u64,
    pub utime: u64,
    pub stime: u64,
    pub threads: u64,
    pub starttime: u64,
    pub rss_pages: u64,
}

/// Parses /proc/PID/stat (fields 10, 12, 14, 15, 20, 22, 24).
pub fn parse_stat(text: &str) -> Result<Stat, CollectError> {
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| CollectError::parse("stat: no command name"))?;
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    let at = |n: usize| {
        f.get(n - 3)
            .ok_or_else(|| CollectError::parse(format!("stat: no field {n}")))
            .and_then(|v| parse_u64(v, &format_args!("stat field {n}")))
    };
    Ok(Stat {
        minflt: at(10)?,
        majflt: at(12)?,
        utime: at(14)?,
        stime: at(15)?,
        threads: at(20)?,
        starttime: at(22)?,
        rss_pages: at(24)?,
    })
}

/// `read_bytes` and `write_bytes` of /proc/PID/io: bytes the process made
/// the storage layer fetch and send.
pub fn parse_io(text: &str) -> Option<(u64, u64)> {
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    Some((get("read_bytes:")?, get("write_bytes:")?))
}

/// Voluntary and involuntary context switches of one task's status file.
pub fn parse_ctxt(text: &str) -> (u64, u64) {
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    (
        get("voluntary_ctxt_switches:"),
        get("nonvoluntary_ctxt_switches:"),
    )
}

// ---- perf events ----

const PERF_TYPE_HARDWARE: u32 = 0;
const PERF_TYPE_SOFTWARE: u32 = 1;
const PERF_COUNT_HW_CPU_CYCLES: u64 = 0;
const PERF_COUNT_HW_INSTRUCTIONS: u64 = 1;
const PERF_COUNT_SW_TASK_CLOCK: u64 = 1;
const PERF_FORMAT_TOTAL_TIME_ENABLED: u64 = 1;
const PERF_FORMAT_TOTAL_TIME_RUNNING: u64 = 2;
const PERF_FORMAT_GROUP: u64 = 8;
const FLAG_EXCLUDE_KERNEL: u64 = 1 << 5;
const FLAG_EXCLUDE_HV: u64 = 1 << 6;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;

/// `struct perf_event_attr`, PERF_ATTR_SIZE_VER5 (112 bytes).
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    config1: u64,
    config2: u64,
    branch_sample_type: u64,
    sample_regs_user: u64,
    sample_stack_user: u32,
    clockid: i32,
    sample_regs_intr: u64,
    aux_watermark: u32,
    sample_max_stack: u16,
    reserved: u16,
}

/// Opens one counting event on thread `tid` (any CPU), in `group` if given.
fn perf_open(
    kind: u32,
    config: u64,
    tid: u32,
    group: Option<&OwnedFd>,
    user_only: bool,
) -> Result<OwnedFd, i32> {
    let attr = PerfEventAttr {
        kind,
        size: std::mem::size_of::<PerfEventAttr>() as u32,
        config,
        read_format: PERF_FORMAT_GROUP
            | PERF_FORMAT_TOTAL_TIME_ENABLED
            | PERF_FORMAT_TOTAL_TIME_RUNNING,
        flags: if user_only {
            FLAG_EXCLUDE_KERNEL | FLAG_EXCLUDE_HV
        } else {
            0
        },
        ..Default::default()
    };
    let group_fd = group.map_or(-1, |g| g.as_raw_fd());
    // SAFETY: a valid, fully initialised attr of the size it declares; the
    // kernel does not keep the pointer.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            &attr as *const PerfEventAttr,
            tid as libc::pid_t,
            -1 as libc::c_int,
            group_fd as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    // SAFETY: the syscall returned a new file descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The perf counters of one thread: task clock (ns), and cycles and
/// instructions where the PMU allows.
struct ThreadPerf {
    leader: File,
    _members: Vec<OwnedFd>,
    hardware: bool,
}

impl ThreadPerf {
    /// [task clock ns, cycles, instructions], scaled for multiplexing.
    fn read(&mut self) -> Option<[f64; 3]> {
        let mut buf = [0u8; 8 * 6];
        let n = self.leader.read(&mut buf).ok()?;
        let word = |i: usize| {
            buf.get(i * 8..i * 8 + 8)
                .map(|b| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8])))
        };
        let nr = word(0)? as usize;
        if n < (3 + nr) * 8 {
            return None;
        }
        let (enabled, running) = (word(1)? as f64, word(2)? as f64);
        let scale = if running > 0.0 && running < enabled {
            enabled / running
        } else {
            1.0
        };
        let mut v = [word(3)? as f64, 0.0, 0.0];
        if self.hardware && nr >= 3 {
            v[1] = word(4)? as f64 * scale;
            v[2] = word(5)? as f64 * scale;
        }
        Some(v)
    }
}

/// What perf events this agent may open, learnt from the first attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Unknown,
    /// Kernel and user time.
    Full,
    /// User space only (perf_event_paranoid 2 without CAP_PERFMON).
    UserOnly,
    Denied,
    /// Switched off (`--collector.process.perf=false`, another procfs).
    Off,
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
    access: Access,
    hardware: Option<bool>,
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
            access: if perf { Access::Unknown } else { Access::Off },
            opts,
            gpus,
            hz,
            page,
            hardware: None,
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

    fn open_thread(&mut self, tid: u32) -> Option<ThreadPerf> {
        let try_open = |user_only: bool, hw: bool| -> Result<ThreadPerf, i32> {
            let leader = perf_open(
                PERF_TYPE_SOFTWARE,
                PERF_COUNT_SW_TASK_CLOCK,
                tid,
                None,
                user_only,
            )?;
            let mut members = Vec::new();
            let mut hardware = false;
            if hw {
                let c = perf_open(
                    PERF_TYPE_HARDWARE,
                    PERF_COUNT_HW_CPU_CYCLES,
                    tid,
                    Some(&leader),
                    user_only,
                );
                let i = perf_open(
                    PERF_TYPE_HARDWARE,
                    PERF_COUNT_HW_INSTRUCTIONS,
                    tid,
                    Some(&leader),
                    user_only,
                );
                if let (Ok(c), Ok(i)) = (c, i) {
                    members.push(c);
                    members.push(i);
                    hardware = true;
                }
            }
            Ok(ThreadPerf {
                leader: File::from(leader),
                _members: members,
                hardware,
            })
        };
        let hw = self.hardware != Some(false);
        let result = match self.access {
            Access::Denied | Access::Off => return None,
            Access::Full => try_open(false, hw),
            Access::UserOnly => try_open(true, hw),
            Access::Unknown => match try_open(false, hw) {
                Ok(t) => {
                    self.access = Access::Full;
                    Ok(t)
                }
                Err(libc::EACCES | libc::EPERM) => match try_open(true, hw) {
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
                    self.hardware = Some(t.hardware);
                    if !t.hardware {
                        tracing::info!("no hardware performance counters (no PMU exposed, e.g. in a VM): process cycles and instructions are left out");
                    }
                }
                Some(t)
            }
            Err(libc::ESRCH | libc::ENOENT) => None, // the thread just exited
            Err(e) => {
                if matches!(e, libc::EACCES | libc::EPERM) {
                    if self.access == Access::Unknown
                        || self.procs.values().all(|p| p.threads.is_empty())
                    {
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

    /// Adds the per-process series to `out`.
    pub fn sample(&mut self, out: &mut Sample) {
        let candidates = self.candidates();
        let wanted: HashSet<u32> = candidates.iter().map(|c| c.0).collect();
        self.procs.retain(|pid, _| wanted.contains(pid));

        let info = "accel_process_info";
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
                if !matches!(self.access, Access::Denied | Access::Off) {
                    for &tid in tids.iter().take(MAX_PERF_THREADS) {
                        if !t.threads.contains_key(&tid) {
                            to_open.push(tid);
                        }
                    }
                }
            }
            for tid in to_open {
                if let Some(p) = self.open_thread(tid) {
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

        let hw = self.hardware == Some(true);
        let fam_info = out.gauge(info, "A process the agent follows (it holds a GPU, or its command matches --collector.process.match), with its owner; always 1.");
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
        let cpu = out.counter(
            "accel_process_cpu_seconds_total",
            "CPU time of the process and its threads, by mode, in seconds (/proc/PID/stat).",
        );
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
        let threads = out.gauge("accel_process_threads", "Threads of the process.");
        for (pid, s, ..) in &rows {
            let (p, c) = &names[pid];
            threads.add(
                &[("pid", p.as_str()), ("comm", c.as_str())],
                s.threads as f64,
            );
        }
        let rss = out.gauge(
            "accel_process_resident_memory_bytes",
            "Resident memory of the process, in bytes.",
        );
        for (pid, s, ..) in &rows {
            let (p, c) = &names[pid];
            rss.add(
                &[("pid", p.as_str()), ("comm", c.as_str())],
                s.rss_pages as f64 * self.page,
            );
        }
        let faults = out.counter(
            "accel_process_page_faults_total",
            "Page faults of the process, by kind: minor (no I/O) or major (read from storage).",
        );
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
        let cs = out.counter("accel_process_context_switches_total", "Context switches of the process's threads: voluntary (it waited, e.g. for I/O or a lock) or involuntary (preempted).");
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
        let rb = out.counter(
            "accel_process_read_bytes_total",
            "Bytes the process caused to be read from storage (/proc/PID/io read_bytes).",
        );
        for (pid, _, io, ..) in &rows {
            if let Some((r, _)) = io {
                let (p, c) = &names[pid];
                rb.add(&[("pid", p.as_str()), ("comm", c.as_str())], *r as f64);
            }
        }
        let wb = out.counter(
            "accel_process_write_bytes_total",
            "Bytes the process caused to be written to storage (/proc/PID/io write_bytes).",
        );
        for (pid, _, io, ..) in &rows {
            if let Some((_, w)) = io {
                let (p, c) = &names[pid];
                wb.add(&[("pid", p.as_str()), ("comm", c.as_str())], *w as f64);
            }
        }
        let tc = out.counter("accel_process_task_clock_seconds_total", "CPU time of the process's threads from the perf task clock (nanosecond precision), in seconds; threads that exited included.");
        for (pid, _, _, _, perf, ok) in &rows {
            if *ok {
                let (p, c) = &names[pid];
                tc.add(&[("pid", p.as_str()), ("comm", c.as_str())], perf[0] / 1e9);
            }
        }
        if hw {
            let cy = out.counter("accel_process_cycles_total", "CPU cycles of the process's threads (perf hardware counter, scaled for multiplexing).");
            for (pid, _, _, _, perf, ok) in &rows {
                if *ok {
                    let (p, c) = &names[pid];
                    cy.add(&[("pid", p.as_str()), ("comm", c.as_str())], perf[1]);
                }
            }
            let ins = out.counter("accel_process_instructions_total", "Instructions retired by the process's threads (perf hardware counter, scaled for multiplexing).");
            for (pid, _, _, _, perf, ok) in &rows {
                if *ok {
                    let (p, c) = &names[pid];
                    ins.add(&[("pid", p.as_str()), ("comm", c.as_str())], perf[2]);
                }
            }
        }
        let feat = out.gauge("accel_collector_feature_enabled", "1 where an optional part of a collector works on this machine, 0 where it does not (see the log for why).");
        let perf_ok = matches!(self.access, Access::Full | Access::UserOnly);
        let known = !matches!(self.access, Access::Unknown | Access::Off);
        if known {
            feat.add(
                &[("collector", "process"), ("feature", "perf_task_clock")],
                if perf_ok { 1.0 } else { 0.0 },
            );
            feat.add(
                &[("collector", "process"), ("feature", "perf_kernel_time")],
                if self.access == Access::Full {
                    1.0
                } else {
                    0.0
                },
            );
        }
        if let Some(h) = self.hardware {
            feat.add(
                &[("collector", "process"), ("feature", "perf_hardware")],
                if h && perf_ok { 1.0 } else { 0.0 },
            );
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

    #[test]
    fn parses_stat_io_and_status() {
        let line = "4242 (py thon) S 1 4242 4242 0 -1 4194560 100 0 7 0 250 75 0 0 20 0 7 0 123456 987654321 2048 18446744073709551615\n";
        let s = parse_stat(line).unwrap();
        assert_eq!(
            (
                s.minflt,
                s.majflt,
                s.utime,
                s.stime,
                s.threads,
                s.starttime,
                s.rss_pages
            ),
            (100, 7, 250, 75, 7, 123456, 2048)
        );
        assert!(parse_stat("1 (x) S 1").is_err());
        let io = "rchar: 10\nwchar: 20\nsyscr: 1\nsyscw: 2\nread_bytes: 4096\nwrite_bytes: 8192\ncancelled_write_bytes: 0\n";
        assert_eq!(parse_io(io), Some((4096, 8192)));
        assert_eq!(parse_io("rchar: 1\n"), None);
        let st = "Name:\tx\nvoluntary_ctxt_switches:\t12\nnonvoluntary_ctxt_switches:\t3\n";
        assert_eq!(parse_ctxt(st), (12, 3));
        assert_eq!(std::mem::size_of::<PerfEventAttr>(), 112);
    }
}
