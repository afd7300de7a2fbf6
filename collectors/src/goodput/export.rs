//! The goodput collector's families, and what each sample writes into them
//! from the bookkeeping of [`super::state`]: the event counters, the peak
//! table, and per run and rank the counters, gauges and step histogram.

use std::time::Instant;

use super::events::{Reject, KINDS};
use super::peak::{self, Override, DTYPES};
use super::state::{Rank, Runs, STEP_BUCKETS};
use crate::{FamilyDef, GpuIds as GpuDevice, Sample};

/// A run and what started it.
pub const RUN_INFO: FamilyDef = FamilyDef::gauge(
    "accel_run_info",
    "A training run on this node, with the labels of its run_start and the unit, container or Slurm job of the process that started it; always 1.",
)
.labels(&["run", "unit", "container", "slurm_job"])
.open_labels()
.doc("1. `unit`, `container`, `slurm_job` are there when known; the run_start labels follow them")
.source("run_start; `/proc/<pid>/cgroup`; `collectors/src/goodput/export.rs`");

/// The GPUs a run uses.
pub const RUN_DEVICE: FamilyDef = FamilyDef::gauge(
    "accel_run_device",
    "A GPU a run's ranks on this node use (named in run_start, or held by the sending process); always 1.",
)
.labels(&["run", "gpu", "uuid"])
.doc("1 per GPU the run uses on this node (named in run_start, else held by the sender)")
.source("run_start `devices`; GPU collector's process list");

/// The peak MFU divides by, per run.
pub const RUN_PEAK_FLOPS: FamilyDef = FamilyDef::gauge(
    "accel_run_peak_flops",
    "Sum of the peak dense FLOP/s of the run's GPUs on this node, for the data type of its latest step.",
)
.labels(&["run", "dtype"])
.doc("FLOP/s: sum of the peak dense throughput of the run's GPUs for its latest step's dtype")
.source("`collectors/src/goodput/peak.rs`");

/// Model FLOPs utilisation.
pub const RUN_MFU: FamilyDef = FamilyDef::gauge(
    "accel_run_mfu_ratio",
    "Model FLOPs utilisation over the --events.mfu-window: model FLOPs of the steps in the window over the sum of each step's seconds times its rank's peak FLOP/s.",
)
.labels(&["run"])
.doc("0-1: model FLOPs over (step seconds x peak of the rank's GPUs) for the steps in `--events.mfu-window`")
.source("step events");

/// Labels of the per-rank families.
const RANK: &[&str] = &["run", "rank"];

/// Whether the rank runs.
pub const RUN_ACTIVE: FamilyDef = FamilyDef::gauge(
    "accel_run_active",
    "1 while the rank runs, 0 after its run_end.",
)
.labels(RANK)
.doc("1 until run_end")
.source("run_start, run_end");

/// Steps.
pub const RUN_STEPS: FamilyDef =
    FamilyDef::counter("accel_run_steps_total", "Training steps the rank finished.")
        .labels(RANK)
        .doc("steps")
        .source("step events");

/// Tokens.
pub const RUN_TOKENS: FamilyDef = FamilyDef::counter(
    "accel_run_tokens_total",
    "Tokens the rank processed in its steps.",
)
.labels(RANK)
.doc("tokens")
.source("step `tokens`");

/// Model FLOPs.
pub const RUN_MODEL_FLOPS: FamilyDef = FamilyDef::counter(
    "accel_run_model_flops_total",
    "Model FLOPs the rank computed in its steps, as it reported them.",
)
.labels(RANK)
.doc("FLOPs, as the job reported them")
.source("step `model_flops`");

/// Step times.
pub const RUN_STEP_SECONDS: FamilyDef = FamilyDef::histogram(
    "accel_run_step_seconds",
    "Wall time of the rank's training steps.",
)
.labels(RANK)
.doc("seconds per step (buckets by `le`)")
.source("step `seconds`");

/// Time per phase.
pub const RUN_PHASE_SECONDS: FamilyDef = FamilyDef::counter(
    "accel_run_phase_seconds_total",
    "Time the rank spent in each phase (init, compile, data_wait, checkpoint_save, checkpoint_load, eval, custom:<name>), from phase events.",
)
.labels(&["run", "rank", "phase"])
.doc("seconds per phase (`init`, `compile`, `data_wait`, `checkpoint_save`, `checkpoint_load`, `eval` from 0, `custom:<name>`)")
.source("phase events");

/// Productive time.
pub const RUN_PRODUCTIVE: FamilyDef = FamilyDef::counter(
    "accel_run_productive_seconds_total",
    "Step time less the time steps waited for input (data_wait).",
)
.labels(RANK)
.doc("step seconds less data_wait")
.source("step and phase events");

/// Elapsed time.
pub const RUN_ELAPSED: FamilyDef = FamilyDef::counter(
    "accel_run_elapsed_seconds_total",
    "Agent clock time since the rank's first run_start, restarts included, until its run_end.",
)
.labels(RANK)
.doc("agent clock seconds since the first run_start, until run_end")
.source("agent clock");

/// Steps redone.
pub const RUN_WASTED_STEPS: FamilyDef = FamilyDef::counter(
    "accel_run_wasted_steps_total",
    "Steps lost: done, then redone after a restart resumed from an earlier checkpoint.",
)
.labels(RANK)
.doc("steps lost when a restart resumed below the highest step reached")
.source("run_start `resume_step`");

/// Time of the steps redone.
pub const RUN_WASTED_SECONDS: FamilyDef = FamilyDef::counter(
    "accel_run_wasted_seconds_total",
    "Step time of the lost steps.",
)
.labels(RANK)
.doc("seconds of the steps lost when a restart resumed below the highest step reached")
.source("run_start `resume_step`");

/// Restarts.
pub const RUN_RESTARTS: FamilyDef = FamilyDef::counter(
    "accel_run_restarts_total",
    "run_start events from a new process for a rank already known.",
)
.labels(RANK)
.doc("run_start from a new process")
.source("run_start");

/// Checkpoints.
pub const RUN_CHECKPOINTS: FamilyDef =
    FamilyDef::counter("accel_run_checkpoints_total", "Checkpoint events.")
        .labels(RANK)
        .doc("checkpoint events")
        .source("checkpoint events");

/// Latest step.
pub const RUN_STEP: FamilyDef =
    FamilyDef::gauge("accel_run_step", "The rank's latest step number.")
        .labels(RANK)
        .doc("latest step number")
        .source("step events");

/// Latest checkpoint.
pub const RUN_LAST_CHECKPOINT_STEP: FamilyDef = FamilyDef::gauge(
    "accel_run_last_checkpoint_step",
    "Step of the rank's latest checkpoint.",
)
.labels(RANK)
.doc("latest checkpoint's step")
.source("checkpoint events");

/// When the latest step was reported.
pub const RUN_LAST_STEP_TIMESTAMP: FamilyDef = FamilyDef::gauge(
    "accel_run_last_step_timestamp_seconds",
    "Unix time of the rank's latest step event.",
)
.labels(RANK)
.doc("Unix seconds of the latest step event (AccelRunStalled)")
.source("agent clock");

/// The peak table (outside `accel_run_`: it describes the GPU model).
pub const GPU_PEAK_FLOPS: FamilyDef = FamilyDef::gauge(
    "accel_gpu_peak_flops",
    "Peak dense tensor throughput of a GPU model on the node by data type, in FLOP/s (built-in table by model, or --events.peak-flops).",
)
.labels(&["name", "dtype"])
.doc("FLOP/s: peak dense tensor throughput of one GPU of the model `name` (as in `accel_gpu_info`) by dtype (`fp8`, `bf16`, `fp16`, `tf32`), from the built-in table or `--events.peak-flops`; one series per model on the node and dtype, absent for a model not in the table. Per GPU: `accel_gpu_info * on (instance, name) group_left accel_gpu_peak_flops{dtype=\"bf16\"}`")
.source("`collectors/src/goodput/peak.rs` (exported by the goodput collector)")
.equivalent("DCGM has none");

/// Datagrams received.
pub const EVENTS_RECEIVED: FamilyDef = FamilyDef::counter(
    "accel_events_received_total",
    "Datagrams received on the event socket.",
)
.doc("datagrams received")
.source("the socket");

/// Events accepted.
pub const EVENTS_ACCEPTED: FamilyDef =
    FamilyDef::counter("accel_events_accepted_total", "Events accepted, by kind.")
        .labels(&["kind"])
        .doc("events accepted by kind");

/// Datagrams refused.
pub const EVENTS_REJECTED: FamilyDef = FamilyDef::counter(
    "accel_events_rejected_total",
    "Datagrams refused, by reason (malformed, version, kind, oversize, invalid_value, step_backwards, rate_limited, too_many_runs).",
)
.labels(&["reason"])
.doc("datagrams refused: `malformed`, `version`, `kind`, `oversize`, `invalid_value`, `step_backwards`, `rate_limited`, `too_many_runs`; a reason's series comes at its first refusal (eight series at 0 otherwise). All refusals: `accel_events_received_total - ignoring (kind) sum(accel_events_accepted_total)`")
.source("`collectors/src/goodput/events.rs`");

/// run_start labels dropped.
pub const EVENTS_LABELS_DROPPED: FamilyDef = FamilyDef::counter(
    "accel_events_labels_dropped_total",
    "run_start labels dropped: invalid name, reserved name, or over the count.",
)
.doc("run_start labels dropped (bad or reserved name, over 16)");

/// Runs tracked.
pub const EVENTS_RUNS: FamilyDef =
    FamilyDef::gauge("accel_events_runs", "Training runs tracked.").doc("runs tracked");

/// Runs forgotten.
pub const EVENTS_RUNS_EXPIRED: FamilyDef = FamilyDef::counter(
    "accel_events_runs_expired_total",
    "Runs forgotten: idle past --events.run-timeout, or ended and evicted to make room.",
)
.doc("runs forgotten (idle past the timeout, or ended and evicted for room)");

impl Runs {
    /// Writes every metric into `out`, given the node's GPUs and TPU
    /// chips (the latter count as a run's devices, without
    /// `accel_gpu_peak_flops`).
    pub fn export(
        &mut self,
        now: Instant,
        gpus: &[GpuDevice],
        tpus: &[GpuDevice],
        overrides: &[Override],
        out: &mut Sample,
    ) {
        out.add(&EVENTS_RECEIVED).add(&[], self.received as f64);
        let f = out.add(&EVENTS_ACCEPTED);
        for (k, n) in KINDS.iter().zip(self.accepted) {
            f.add(&[("kind", k)], n as f64);
        }
        let f = out.add(&EVENTS_REJECTED);
        for (r, n) in Reject::ALL.iter().zip(self.rejected) {
            if n > 0 {
                f.add(&[("reason", r.as_str())], n as f64);
            }
        }
        out.add(&EVENTS_LABELS_DROPPED)
            .add(&[], self.labels_dropped as f64);
        out.add(&EVENTS_RUNS_EXPIRED).add(&[], self.expired as f64);
        out.add(&EVENTS_RUNS).add(&[], self.runs.len() as f64);

        // A constant of the model: one series per model on the node.
        let f = out.add(&GPU_PEAK_FLOPS);
        let mut models: Vec<&str> = gpus.iter().map(|g| g.name.as_str()).collect();
        models.sort_unstable();
        models.dedup();
        for m in models {
            for d in DTYPES {
                if let Some(p) = peak::peak(m, d, overrides) {
                    f.add(&[("name", m), ("dtype", d)], p);
                }
            }
        }

        let all: Vec<GpuDevice>;
        let gpus = if tpus.is_empty() {
            gpus
        } else {
            all = gpus.iter().chain(tpus).cloned().collect();
            &all
        };
        let window = self.limits.mfu_window;
        let mut per_run = Vec::new();
        for (name, run) in &mut self.runs {
            let mut devs: Vec<&GpuDevice> = Vec::new();
            let mut num = 0.0;
            let mut den = 0.0;
            for rank in run.ranks.values_mut() {
                while rank
                    .window
                    .front()
                    .is_some_and(|w| now.saturating_duration_since(w.at) > window)
                {
                    rank.window.pop_front();
                }
                let mine = rank.devices(gpus);
                for w in &rank.window {
                    let peak: Option<f64> = if mine.is_empty() {
                        None
                    } else {
                        mine.iter()
                            .map(|g| peak::peak(&g.name, w.dtype, overrides))
                            .sum()
                    };
                    if let Some(p) = peak {
                        num += w.flops;
                        den += w.seconds * p;
                    }
                }
                for g in mine {
                    if !devs.iter().any(|d| d.uuid == g.uuid) {
                        devs.push(g);
                    }
                }
            }
            devs.sort_by_key(|g| g.index);
            let peak: Option<f64> = if devs.is_empty() {
                None
            } else {
                devs.iter()
                    .map(|g| peak::peak(&g.name, run.dtype, overrides))
                    .sum()
            };
            let devs: Vec<(String, String)> = devs
                .iter()
                .map(|g| (g.index.to_string(), g.uuid.clone()))
                .collect();
            per_run.push((name.clone(), devs, peak, (den > 0.0).then(|| num / den)));
        }

        let f = out.add(&RUN_INFO);
        for (name, run) in &self.runs {
            let mut l: Vec<(&'static str, &str)> = vec![("run", name)];
            for (k, v) in [
                ("unit", &run.owner.unit),
                ("container", &run.owner.container),
                ("slurm_job", &run.owner.job),
            ] {
                if !v.is_empty() {
                    l.push((k, v));
                }
            }
            l.extend(run.labels.iter().map(|(k, v)| (*k, v.as_str())));
            f.add(&l, 1.0);
        }
        let f = out.add(&RUN_DEVICE);
        for (name, devs, _, _) in &per_run {
            for (i, u) in devs {
                f.add(&[("run", name), ("gpu", i), ("uuid", u)], 1.0);
            }
        }
        let f = out.add(&RUN_PEAK_FLOPS);
        for ((name, _, peak, _), run) in per_run.iter().zip(self.runs.values()) {
            if let Some(p) = peak {
                f.add(&[("run", name), ("dtype", run.dtype)], *p);
            }
        }
        let f = out.add(&RUN_MFU);
        for (name, _, _, mfu) in &per_run {
            if let Some(m) = mfu {
                f.add(&[("run", name)], *m);
            }
        }

        // Per rank.
        type Get = fn(&Rank, Instant) -> f64;
        let families: [(&'static FamilyDef, Get); 13] = [
            (&RUN_ACTIVE, |r, _| f64::from(u8::from(r.active))),
            (&RUN_STEPS, |r, _| r.steps as f64),
            (&RUN_TOKENS, |r, _| r.tokens),
            (&RUN_MODEL_FLOPS, |r, _| r.flops),
            (&RUN_PRODUCTIVE, |r, _| r.productive),
            (&RUN_ELAPSED, |r, now| r.elapsed(now)),
            (&RUN_WASTED_STEPS, |r, _| r.wasted_steps as f64),
            (&RUN_WASTED_SECONDS, |r, _| r.wasted_seconds),
            (&RUN_RESTARTS, |r, _| r.restarts as f64),
            (&RUN_CHECKPOINTS, |r, _| r.checkpoints as f64),
            (&RUN_STEP, |r, _| r.last_step.map_or(f64::NAN, |s| s as f64)),
            (&RUN_LAST_STEP_TIMESTAMP, |r, _| {
                r.last_step_unix.unwrap_or(f64::NAN)
            }),
            (&RUN_LAST_CHECKPOINT_STEP, |r, _| {
                r.last_checkpoint.map_or(f64::NAN, |s| s as f64)
            }),
        ];
        for (def, get) in families {
            let f = out.add(def);
            for (name, run) in &self.runs {
                for (id, rank) in &run.ranks {
                    let v = get(rank, now);
                    if !v.is_nan() {
                        f.add(&[("run", name), ("rank", &id.to_string())], v);
                    }
                }
            }
        }
        let f = out.add(&RUN_PHASE_SECONDS);
        for (name, run) in &self.runs {
            for (id, rank) in &run.ranks {
                for (p, s) in &rank.phases {
                    f.add(
                        &[("run", name), ("rank", &id.to_string()), ("phase", p)],
                        *s,
                    );
                }
            }
        }
        let f = out.add(&RUN_STEP_SECONDS);
        for (name, run) in &self.runs {
            for (id, rank) in &run.ranks {
                let b: Vec<(f64, u64)> = STEP_BUCKETS.iter().copied().zip(rank.buckets).collect();
                f.add_histogram(
                    &[("run", name), ("rank", &id.to_string())],
                    &b,
                    rank.step_seconds,
                    rank.steps,
                );
            }
        }
    }
}
