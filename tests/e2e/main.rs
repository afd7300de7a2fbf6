//! End-to-end tests: the real `accel-agent` binary, driven over HTTP, with
//! real promtool, node_exporter and Prometheus where a test needs them.

mod util;

mod amd;
mod cli;
mod cloud;
mod dashboards;
mod docs;
mod faults;
mod filesystem;
mod flag_values;
mod golden;
mod goodput;
mod gpu;
mod gpucpu;
mod health;
mod http;
mod jobs;
mod kubernetes;
mod limits;
mod node_exporter;
mod package;
mod process;
mod profile;
mod profile_faults;
mod prometheus;
mod series;
mod storage;
mod systemd;
mod time;
mod tls;
mod toolkit;
mod tpu;
mod watchdog;
