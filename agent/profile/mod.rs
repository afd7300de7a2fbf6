//! `accel-agent profile`: samples every enabled collector in-process at a
//! fixed rate for a fixed time (no HTTP server), summarises the key signals
//! and names the bottleneck.
//!
//! One file per step, dependencies pointing one way: [`command`] (the flags
//! and [`run`]) drives [`sample`] (the daemon's own sampler threads, each
//! sample recorded), [`summary`] (the signals per device), [`diagnosis`]
//! (the verdict, a pure function of the summary), and the outputs [`text`]
//! and [`html`], which read the summary and diagnosis types and nothing
//! above them. [`faults`] finds what went wrong (a GPU lost, an XID, a
//! hung or failing collector) in the records and the sample attempts.

pub mod command;
pub mod diagnosis;
pub mod faults;
pub mod html;
pub mod sample;
pub mod summary;
pub mod text;

pub use command::{command, run};
pub use diagnosis::{diagnose, Diagnosis, Verdict, DATA_WAIT_BOUND};
pub use summary::{
    summarise, GpuSummary, IoSummary, Points, ProcessSummary, Record, Stats, Summary,
    NVLINK_LINK_BYTES_PER_SECOND,
};
pub use text::render;
