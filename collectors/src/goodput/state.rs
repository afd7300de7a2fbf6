//! What the events say about the runs on this node: per run and rank
//! counters, the step window MFU is computed over, wasted progress. Their
//! export is in [`super::export`]. Pure bookkeeping: time is passed in,
//! nothing here reads a clock, a socket or a file, so it is tested directly.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::events::{DeviceRef, Event, Reject, KINDS, PHASES};
use crate::cgroup::Owner;
use crate::GpuIds as GpuDevice;

/// Upper bounds of the step-time histogram, in seconds.
pub const STEP_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
/// Most ranks tracked per run.
pub const MAX_RANKS_PER_RUN: usize = 64;
/// Most ranks tracked in all.
pub const MAX_RANKS: usize = 256;
/// Steps kept per rank for wasted-time accounting; older ones are folded
/// into a count and a sum.
pub const HISTORY: usize = 1024;
/// Steps kept per rank in the MFU window at most.
pub const WINDOW: usize = 512;
/// Most distinct `custom:` phases per rank.
pub const MAX_CUSTOM_PHASES: usize = 8;
/// Most distinct label names ever interned (they live as long as the agent).
pub const MAX_LABEL_NAMES: usize = 64;

/// Settings of the bookkeeping.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Most runs at once.
    pub max_runs: usize,
    /// A run with no event for this long is forgotten.
    pub run_timeout: Duration,
    /// The MFU window.
    pub mfu_window: Duration,
}

/// One step in the MFU window.
#[derive(Clone, Copy, Debug)]
pub(super) struct Windowed {
    pub(super) at: Instant,
    pub(super) seconds: f64,
    pub(super) flops: f64,
    pub(super) dtype: &'static str,
}

/// One rank of a run on this node.
#[derive(Debug)]
pub(super) struct Rank {
    /// The process that started it (or sent its first event).
    pid: u32,
    /// Devices named in run_start; `None`: the GPUs `pid` holds.
    devices: Option<Vec<DeviceRef>>,
    /// UUIDs last resolved for `pid` (kept after the process exits).
    resolved: Vec<String>,
    pub(super) active: bool,
    elapsed: f64,
    running_since: Option<Instant>,
    pub(super) steps: u64,
    pub(super) tokens: f64,
    pub(super) flops: f64,
    pub(super) step_seconds: f64,
    pub(super) buckets: [u64; STEP_BUCKETS.len()],
    pub(super) phases: BTreeMap<String, f64>,
    pub(super) productive: f64,
    /// data_wait seconds not yet taken off a step.
    pending_wait: f64,
    /// Last step of the current attempt, and the highest one seen in it.
    pub(super) last_step: Option<u64>,
    highest: Option<u64>,
    pub(super) last_step_unix: Option<f64>,
    pub(super) wasted_steps: u64,
    pub(super) wasted_seconds: f64,
    /// (step, seconds) of recent steps; older ones in `folded` (count, seconds).
    history: VecDeque<(u64, f64)>,
    folded: (u64, f64),
    pub(super) window: VecDeque<Windowed>,
    pub(super) restarts: u64,
    pub(super) checkpoints: u64,
    pub(super) last_checkpoint: Option<u64>,
}

impl Rank {
    fn new(pid: u32, now: Instant) -> Self {
        Rank {
            pid,
            devices: None,
            resolved: Vec::new(),
            active: true,
            elapsed: 0.0,
            running_since: Some(now),
            steps: 0,
            tokens: 0.0,
            flops: 0.0,
            step_seconds: 0.0,
            buckets: [0; STEP_BUCKETS.len()],
            phases: PHASES.iter().map(|p| ((*p).to_owned(), 0.0)).collect(),
            productive: 0.0,
            pending_wait: 0.0,
            last_step: None,
            highest: None,
            last_step_unix: None,
            wasted_steps: 0,
            wasted_seconds: 0.0,
            history: VecDeque::new(),
            folded: (0, 0.0),
            window: VecDeque::new(),
            restarts: 0,
            checkpoints: 0,
            last_checkpoint: None,
        }
    }

    pub(super) fn elapsed(&self, now: Instant) -> f64 {
        self.elapsed
            + self
                .running_since
                .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64())
    }

    /// The rank's devices among `gpus`.
    pub(super) fn devices<'a>(&mut self, gpus: &'a [GpuDevice]) -> Vec<&'a GpuDevice> {
        match &self.devices {
            Some(refs) => gpus
                .iter()
                .filter(|g| {
                    refs.iter().any(|r| match r {
                        DeviceRef::Index(i) => g.index == *i,
                        DeviceRef::Uuid(u) => g.uuid == *u,
                    })
                })
                .collect(),
            None => {
                let now: Vec<&GpuDevice> =
                    gpus.iter().filter(|g| g.pids.contains(&self.pid)).collect();
                if !now.is_empty() {
                    self.resolved = now.iter().map(|g| g.uuid.clone()).collect();
                }
                gpus.iter()
                    .filter(|g| self.resolved.contains(&g.uuid))
                    .collect()
            }
        }
    }

    /// A restart resuming after `resume`: the steps above it are lost.
    fn resume(&mut self, resume: u64) {
        if let Some(h) = self.highest.filter(|h| *h > resume) {
            self.wasted_steps += h - resume;
            let mut lost = 0.0;
            let mut lost_n = 0;
            while let Some((s, secs)) = self.history.back().copied() {
                if s <= resume {
                    break;
                }
                lost += secs;
                lost_n += 1;
                self.history.pop_back();
            }
            // Steps older than the history: estimated at the folded mean.
            let missing = (h - resume).saturating_sub(lost_n);
            if missing > 0 && self.folded.0 > 0 {
                let mean = self.folded.1 / self.folded.0 as f64;
                lost += mean * missing as f64;
                self.folded.0 = self.folded.0.saturating_sub(missing);
                self.folded.1 = (self.folded.1 - mean * missing as f64).max(0.0);
            }
            self.wasted_seconds += lost;
        }
        self.last_step = Some(resume);
        self.highest = Some(resume);
    }
}

/// One run: its labels and its ranks on this node.
#[derive(Debug)]
pub(super) struct Run {
    pub(super) labels: Vec<(&'static str, String)>,
    pub(super) owner: Owner,
    pub(super) ranks: BTreeMap<u64, Rank>,
    last_event: Instant,
    /// Data type of the latest step.
    pub(super) dtype: &'static str,
}

/// Every run on the node, and the event counters.
#[derive(Debug)]
pub struct Runs {
    pub(super) limits: Limits,
    pub(super) runs: BTreeMap<String, Run>,
    /// Interned label names.
    names: Vec<&'static str>,
    /// Datagrams received.
    pub received: u64,
    pub(super) accepted: [u64; KINDS.len()],
    pub(super) rejected: [u64; Reject::ALL.len()],
    pub(super) labels_dropped: u64,
    pub(super) expired: u64,
}

fn hist_index(seconds: f64) -> usize {
    STEP_BUCKETS
        .iter()
        .position(|b| seconds <= *b)
        .unwrap_or(STEP_BUCKETS.len())
}

impl Runs {
    /// No runs yet.
    pub fn new(limits: Limits) -> Self {
        Runs {
            limits,
            runs: BTreeMap::new(),
            names: Vec::new(),
            received: 0,
            accepted: [0; KINDS.len()],
            rejected: [0; Reject::ALL.len()],
            labels_dropped: 0,
            expired: 0,
        }
    }

    /// Counts a refused datagram.
    pub fn reject(&mut self, r: Reject) {
        self.rejected[r as usize] += 1;
    }

    /// Refusals so far for `r`.
    pub fn rejected(&self, r: Reject) -> u64 {
        self.rejected[r as usize]
    }

    fn intern(&mut self, name: &str) -> Option<&'static str> {
        if let Some(n) = self.names.iter().find(|n| **n == name) {
            return Some(n);
        }
        if self.names.len() >= MAX_LABEL_NAMES {
            return None;
        }
        // Leaked on purpose: label names must be 'static, and there are at
        // most MAX_LABEL_NAMES of them for the life of the agent.
        let n: &'static str = Box::leak(name.to_owned().into_boxed_str());
        self.names.push(n);
        Some(n)
    }

    /// Forgets the runs idle for longer than the run timeout.
    pub fn expire(&mut self, now: Instant) {
        let timeout = self.limits.run_timeout;
        let before = self.runs.len();
        self.runs
            .retain(|_, r| now.saturating_duration_since(r.last_event) < timeout);
        self.expired += (before - self.runs.len()) as u64;
    }

    fn ranks(&self) -> usize {
        self.runs.values().map(|r| r.ranks.len()).sum()
    }

    /// The run named `name`, created if there is room: the oldest run whose
    /// ranks have all ended makes room when the cap is reached.
    fn run_mut(&mut self, name: &str, now: Instant) -> Result<&mut Run, Reject> {
        if !self.runs.contains_key(name) {
            if self.runs.len() >= self.limits.max_runs {
                let ended = self
                    .runs
                    .iter()
                    .filter(|(_, r)| r.ranks.values().all(|k| !k.active))
                    .min_by_key(|(_, r)| r.last_event)
                    .map(|(n, _)| n.clone());
                match ended {
                    Some(n) => {
                        self.runs.remove(&n);
                        self.expired += 1;
                    }
                    None => return Err(Reject::TooManyRuns),
                }
            }
            self.runs.insert(
                name.to_owned(),
                Run {
                    labels: Vec::new(),
                    owner: Owner::default(),
                    ranks: BTreeMap::new(),
                    last_event: now,
                    dtype: "bf16",
                },
            );
        }
        let run = self.runs.get_mut(name).expect("present");
        run.last_event = now;
        Ok(run)
    }

    /// Applies one event from process `pid` at `now` (`unix`: the same
    /// instant as Unix time). `owner` gives a pid's unit, container or job.
    pub fn handle(
        &mut self,
        ev: Event,
        pid: u32,
        now: Instant,
        unix: f64,
        owner: &dyn Fn(u32) -> Owner,
    ) -> Result<(), Reject> {
        let kind = ev.kind();
        let (run_name, rank_id) = match &ev {
            Event::RunStart { run, rank, .. }
            | Event::Step { run, rank, .. }
            | Event::Phase { run, rank, .. }
            | Event::Checkpoint { run, rank, .. }
            | Event::RunEnd { run, rank } => (run.clone(), *rank),
        };
        // Checkpoint and run_end of an unknown run or rank change nothing.
        let known = self
            .runs
            .get(&run_name)
            .is_some_and(|r| r.ranks.contains_key(&rank_id));
        if !known && matches!(ev, Event::Checkpoint { .. } | Event::RunEnd { .. }) {
            self.accepted[KINDS.iter().position(|k| *k == kind).unwrap_or(0)] += 1;
            return Ok(());
        }
        if !known {
            let per_run = self.runs.get(&run_name).map_or(0, |r| r.ranks.len());
            if per_run >= MAX_RANKS_PER_RUN || self.ranks() >= MAX_RANKS {
                return Err(Reject::TooManyRuns);
            }
        }
        let labels = match &ev {
            Event::RunStart {
                labels,
                dropped_labels,
                ..
            } => {
                let mut out = Vec::new();
                let mut dropped = *dropped_labels as u64;
                for (k, v) in labels {
                    match self.intern(k) {
                        Some(k) => out.push((k, v.clone())),
                        None => dropped += 1,
                    }
                }
                self.labels_dropped += dropped;
                Some(out)
            }
            _ => None,
        };
        let run = self.run_mut(&run_name, now)?;
        let new_rank = !run.ranks.contains_key(&rank_id);
        if new_rank && run.ranks.is_empty() {
            run.owner = owner(pid);
        }
        let rank = run
            .ranks
            .entry(rank_id)
            .or_insert_with(|| Rank::new(pid, now));
        // A run_start or a step after run_end means the rank runs again; a
        // late phase or checkpoint of an ended rank does not restart its
        // clock.
        if !rank.active && matches!(ev, Event::RunStart { .. } | Event::Step { .. }) {
            rank.active = true;
            rank.running_since = Some(now);
        }
        match ev {
            Event::RunStart {
                devices,
                resume_step,
                ..
            } => {
                let labels = labels.unwrap_or_default();
                if !labels.is_empty() {
                    run.labels = labels;
                }
                let restarted = !new_rank && rank.pid != pid;
                if restarted {
                    rank.restarts += 1;
                    rank.pid = pid;
                    rank.resolved.clear();
                    run.owner = owner(pid);
                }
                rank.devices = devices;
                match resume_step {
                    Some(r) => rank.resume(r),
                    None if restarted => {
                        // Started afresh: a new step sequence, nothing
                        // known to be lost.
                        rank.last_step = None;
                        rank.highest = None;
                        rank.history.clear();
                        rank.folded = (0, 0.0);
                    }
                    None => {}
                }
            }
            Event::Step {
                step,
                seconds,
                tokens,
                model_flops,
                dtype,
                ..
            } => {
                let n = match (step, rank.last_step) {
                    (Some(n), Some(last)) if n <= last => return Err(Reject::StepBackwards),
                    (Some(n), _) => n,
                    (None, last) => last.map_or(1, |l| l + 1),
                };
                rank.steps += 1;
                rank.tokens += tokens;
                rank.flops += model_flops;
                rank.step_seconds += seconds;
                // Productive time: the step less the input waits reported
                // since the previous step (a wait is part of the step it
                // precedes; one reported late counts against the next).
                let wait = rank.pending_wait.min(seconds);
                rank.pending_wait -= wait;
                rank.productive += seconds - wait;
                rank.buckets[..]
                    .iter_mut()
                    .skip(hist_index(seconds))
                    .for_each(|b| *b += 1);
                rank.last_step = Some(n);
                rank.highest = Some(rank.highest.map_or(n, |h| h.max(n)));
                rank.last_step_unix = Some(unix);
                rank.history.push_back((n, seconds));
                if rank.history.len() > HISTORY {
                    let (_, s) = rank.history.pop_front().expect("not empty");
                    rank.folded.0 += 1;
                    rank.folded.1 += s;
                }
                rank.window.push_back(Windowed {
                    at: now,
                    seconds,
                    flops: model_flops,
                    dtype,
                });
                if rank.window.len() > WINDOW {
                    rank.window.pop_front();
                }
                run.dtype = dtype;
            }
            Event::Phase { phase, seconds, .. } => {
                let customs = rank
                    .phases
                    .keys()
                    .filter(|p| p.starts_with("custom:"))
                    .count();
                if !rank.phases.contains_key(&phase) && customs >= MAX_CUSTOM_PHASES {
                    return Err(Reject::InvalidValue);
                }
                if phase == "data_wait" {
                    rank.pending_wait += seconds;
                }
                *rank.phases.entry(phase).or_default() += seconds;
            }
            Event::Checkpoint { step, .. } => {
                rank.checkpoints += 1;
                rank.last_checkpoint = Some(step);
            }
            Event::RunEnd { .. } => {
                rank.elapsed = rank.elapsed(now);
                rank.running_since = None;
                rank.active = false;
            }
        }
        self.accepted[KINDS.iter().position(|k| *k == kind).unwrap_or(0)] += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::goodput::events::parse;
    use crate::Sample;

    fn limits() -> Limits {
        Limits {
            max_runs: 2,
            run_timeout: Duration::from_secs(60),
            mfu_window: Duration::from_secs(30),
        }
    }

    fn send(r: &mut Runs, json: &str, pid: u32, now: Instant) -> Result<(), Reject> {
        let ev = parse(json.as_bytes())?;
        r.handle(ev, pid, now, 1000.0, &|_| Owner::default())
    }

    fn h100s(n: u32, pid: u32) -> Vec<GpuDevice> {
        (0..n)
            .map(|i| GpuDevice {
                index: i,
                uuid: format!("GPU-{i}"),
                name: "NVIDIA H100 80GB HBM3".into(),
                pids: vec![pid],
                ..Default::default()
            })
            .collect()
    }

    fn metrics(r: &mut Runs, now: Instant, gpus: &[GpuDevice]) -> String {
        let mut s = Sample::new();
        r.export(now, gpus, &[], &[], &mut s);
        let mut t = String::new();
        s.encode_text(&mut t);
        t
    }

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
            .map(|v| v.parse().unwrap())
    }

    #[test]
    fn counts_steps_phases_and_mfu() {
        let t0 = Instant::now();
        let mut r = Runs::new(limits());
        send(
            &mut r,
            r#"{"v":1,"kind":"run_start","run":"a","labels":{"model":"m"}}"#,
            7,
            t0,
        )
        .unwrap();
        for i in 1..=4 {
            if i == 4 {
                send(
                    &mut r,
                    r#"{"v":1,"kind":"phase","run":"a","phase":"data_wait","seconds":0.5}"#,
                    7,
                    t0,
                )
                .unwrap();
            }
            send(&mut r, &format!(r#"{{"v":1,"kind":"step","run":"a","step":{i},"seconds":2,"tokens":10,"model_flops":3956e12}}"#), 7, t0).unwrap();
        }
        assert_eq!(
            send(
                &mut r,
                r#"{"v":1,"kind":"step","run":"a","step":4,"seconds":2}"#,
                7,
                t0
            ),
            Err(Reject::StepBackwards)
        );
        let t = metrics(&mut r, t0 + Duration::from_secs(10), &h100s(4, 7));
        let rk = "{run=\"a\",rank=\"0\"}";
        assert_eq!(value(&t, &format!("accel_run_steps_total{rk}")), Some(4.0));
        assert_eq!(
            value(&t, &format!("accel_run_tokens_total{rk}")),
            Some(40.0)
        );
        assert_eq!(
            value(&t, &format!("accel_run_productive_seconds_total{rk}")),
            Some(7.5)
        );
        assert_eq!(
            value(&t, &format!("accel_run_elapsed_seconds_total{rk}")),
            Some(10.0)
        );
        assert_eq!(
            value(&t, "accel_run_peak_flops{run=\"a\",dtype=\"bf16\"}"),
            Some(3956e12)
        );
        // 3956e12 FLOPs per 2 s step on 4 x 989e12 FLOP/s: one half.
        assert_eq!(value(&t, "accel_run_mfu_ratio{run=\"a\"}"), Some(0.5));
        assert_eq!(
            value(
                &t,
                "accel_run_step_seconds_bucket{run=\"a\",rank=\"0\",le=\"1\"}"
            ),
            Some(0.0)
        );
        assert_eq!(
            value(
                &t,
                "accel_run_step_seconds_bucket{run=\"a\",rank=\"0\",le=\"2\"}"
            ),
            Some(4.0)
        );
        assert!(t.contains("accel_run_info{run=\"a\",model=\"m\"} 1"));
        assert_eq!(
            value(&t, "accel_events_accepted_total{kind=\"step\"}"),
            Some(4.0)
        );
        // Out of the MFU window: no ratio; run_end stops the clock.
        send(
            &mut r,
            r#"{"v":1,"kind":"run_end","run":"a"}"#,
            7,
            t0 + Duration::from_secs(12),
        )
        .unwrap();
        let t = metrics(&mut r, t0 + Duration::from_secs(50), &h100s(4, 7));
        assert_eq!(value(&t, "accel_run_mfu_ratio{run=\"a\"}"), None);
        assert_eq!(
            value(&t, &format!("accel_run_elapsed_seconds_total{rk}")),
            Some(12.0)
        );
        assert_eq!(value(&t, &format!("accel_run_active{rk}")), Some(0.0));
    }

    #[test]
    fn a_resume_below_the_highest_step_wastes_the_difference() {
        let t0 = Instant::now();
        let mut r = Runs::new(limits());
        send(&mut r, r#"{"v":1,"kind":"run_start","run":"a"}"#, 7, t0).unwrap();
        for i in 1..=1100 {
            let s = if i > 1000 { 3.0 } else { 1.0 };
            send(
                &mut r,
                &format!(r#"{{"v":1,"kind":"step","run":"a","step":{i},"seconds":{s}}}"#),
                7,
                t0,
            )
            .unwrap();
        }
        send(
            &mut r,
            r#"{"v":1,"kind":"run_start","run":"a","resume_step":1000}"#,
            8,
            t0,
        )
        .unwrap();
        send(
            &mut r,
            r#"{"v":1,"kind":"step","run":"a","step":1001,"seconds":1}"#,
            8,
            t0,
        )
        .unwrap();
        // Older than the history: estimated from the folded mean (1 s).
        send(
            &mut r,
            r#"{"v":1,"kind":"run_start","run":"a","resume_step":0}"#,
            9,
            t0,
        )
        .unwrap();
        let t = metrics(&mut r, t0, &[]);
        let rk = "{run=\"a\",rank=\"0\"}";
        assert_eq!(
            value(&t, &format!("accel_run_wasted_steps_total{rk}")),
            Some(100.0 + 1001.0)
        );
        assert_eq!(
            value(&t, &format!("accel_run_wasted_seconds_total{rk}")),
            Some(300.0 + 1001.0)
        );
        assert_eq!(
            value(&t, &format!("accel_run_restarts_total{rk}")),
            Some(2.0)
        );
        assert_eq!(
            value(&t, &format!("accel_run_steps_total{rk}")),
            Some(1101.0)
        );
    }

    #[test]
    fn runs_are_capped_and_expire() {
        let t0 = Instant::now();
        let mut r = Runs::new(limits());
        send(&mut r, r#"{"v":1,"kind":"run_start","run":"a"}"#, 1, t0).unwrap();
        send(&mut r, r#"{"v":1,"kind":"run_start","run":"b"}"#, 1, t0).unwrap();
        assert_eq!(
            send(&mut r, r#"{"v":1,"kind":"run_start","run":"c"}"#, 1, t0),
            Err(Reject::TooManyRuns)
        );
        // An ended run makes room.
        send(&mut r, r#"{"v":1,"kind":"run_end","run":"a"}"#, 1, t0).unwrap();
        send(&mut r, r#"{"v":1,"kind":"run_start","run":"c"}"#, 1, t0).unwrap();
        r.expire(t0 + Duration::from_secs(61));
        let t = metrics(&mut r, t0, &[]);
        assert_eq!(value(&t, "accel_events_runs"), Some(0.0));
        assert_eq!(value(&t, "accel_events_runs_expired_total"), Some(3.0));
        for rank in 0..MAX_RANKS_PER_RUN {
            send(
                &mut r,
                &format!(r#"{{"v":1,"kind":"run_start","run":"a","rank":{rank}}}"#),
                1,
                t0,
            )
            .unwrap();
        }
        assert_eq!(
            send(
                &mut r,
                r#"{"v":1,"kind":"run_start","run":"a","rank":999}"#,
                1,
                t0
            ),
            Err(Reject::TooManyRuns)
        );
    }

    /// One generated event: (kind, run, rank, step, seconds, resume, pid).
    fn event_json(e: &(u8, u8, u8, u16, u8, Option<u16>, u8)) -> String {
        let (kind, run, rank, step, secs, resume, _) = *e;
        let run = ["a", "b", "c"][run as usize % 3];
        let secs = [0.001, 0.5, 2.0, 7.25, 1e6][secs as usize % 5];
        match kind % 6 {
            0 => match resume {
                Some(r) => format!(
                    r#"{{"v":1,"kind":"run_start","run":"{run}","rank":{rank},"resume_step":{r}}}"#
                ),
                None => format!(
                    r#"{{"v":1,"kind":"run_start","run":"{run}","rank":{rank},"devices":[{rank}]}}"#
                ),
            },
            1 | 2 => format!(
                r#"{{"v":1,"kind":"step","run":"{run}","rank":{rank},"step":{step},"seconds":{secs},"tokens":3,"model_flops":1e14}}"#
            ),
            3 => format!(
                r#"{{"v":1,"kind":"phase","run":"{run}","rank":{rank},"phase":"data_wait","seconds":{secs}}}"#
            ),
            4 => format!(
                r#"{{"v":1,"kind":"checkpoint","run":"{run}","rank":{rank},"step":{step}}}"#
            ),
            _ => format!(r#"{{"v":1,"kind":"run_end","run":"{run}","rank":{rank}}}"#),
        }
    }

    fn counters(text: &str) -> Vec<(String, f64)> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                l.split(['{', ' '])
                    .next()
                    .is_some_and(|f| f.ends_with("_total"))
            })
            .map(|l| {
                let (k, v) = l.rsplit_once(' ').unwrap();
                (k.to_owned(), v.parse().unwrap())
            })
            .collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config { cases: 64, ..Default::default() })]

        /// Whatever the order of events (steps backwards, resumes above and
        /// below, ends and restarts, three processes, more runs than the
        /// cap), nothing panics, every exported value is finite and no
        /// counter of a series that stays goes down.
        #[test]
        fn any_event_sequence_keeps_counters_monotonic(
            events in proptest::collection::vec(
                (0u8..6, 0u8..3, 0u8..3, 0u16..60, 0u8..5, proptest::option::of(0u16..60), 0u8..3),
                1..120,
            )
        ) {
            let t0 = Instant::now();
            let mut r = Runs::new(Limits {
                max_runs: 2,
                run_timeout: Duration::from_secs(3600),
                mfu_window: Duration::from_secs(30),
            });
            let gpus = h100s(3, 100);
            let mut seen: std::collections::HashMap<String, f64> = Default::default();
            for (i, e) in events.iter().enumerate() {
                let now = t0 + Duration::from_millis(250 * i as u64);
                let _ = send(&mut r, &event_json(e), 100 + u32::from(e.6), now);
                let text = metrics(&mut r, now, &gpus);
                for l in text.lines().filter(|l| !l.starts_with('#')) {
                    let v: f64 = l.rsplit_once(' ').unwrap().1.parse().unwrap();
                    proptest::prop_assert!(v.is_finite() && v >= 0.0, "{}", l);
                }
                // A run evicted to make room comes back as new series: only
                // a series present in both scrapes must not go down.
                let now_counters = counters(&text);
                seen.retain(|k, _| now_counters.iter().any(|(n, _)| n == k));
                for (k, v) in now_counters {
                    let before = seen.insert(k.clone(), v).unwrap_or(0.0);
                    proptest::prop_assert!(v >= before, "{} went from {} to {}", k, before, v);
                }
            }
        }
    }
}
