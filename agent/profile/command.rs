//! The `accel-agent profile` command: its flags and [`run`], which samples,
//! summarises, diagnoses and writes the outputs (text on stdout, `--html`,
//! `--json`).

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use clap::{Arg, ArgAction, Command};

use super::diagnosis::diagnose;
use super::sample::Sampling;
use super::summary::{summarise, Record};
use super::text::render;
use crate::config::{self, Config, Parsed};

fn parse_profile_interval(s: &str) -> Result<Duration, String> {
    let d = config::parse_duration(s)?;
    if d < config::MIN_INTERVAL {
        return Err(format!("{s} is shorter than the minimum of 100ms"));
    }
    Ok(d)
}

fn parse_positive(s: &str) -> Result<Duration, String> {
    let d = config::parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("{s} must be longer than 0"));
    }
    Ok(d)
}

/// What `accel-agent profile` does, in `accel-agent --help` and its own.
pub const ABOUT: &str = "Sample every enabled collector at --interval for --duration, print a summary of the key signals, the faults seen (a GPU lost, XIDs, hung or failing collectors) and a verdict: broken, degraded, no-accelerator, idle, or the bottleneck (compute-bound, memory-bandwidth-bound, input-bound, communication-bound, host-cpu-bound, throttled).";

/// The daemon's flags that do nothing in a profile: hidden from its help,
/// still accepted (one config file serves both).
const DAEMON_ONLY: [&str; 5] = [
    "web.max-requests",
    "web.max-connections",
    "web.header-timeout",
    "web.idle-timeout",
    "web.config.file",
];

/// The profile's own flags first, then the daemon's that affect it
/// (collectors, paths, logging, and where to read a daemon's run events).
pub fn command() -> Command {
    let mut cmd = config::command()
        .name("accel-agent profile")
        .bin_name("accel-agent profile")
        .about(ABOUT)
        .after_help("Collector, path and log flags are the daemon's, as is the config file (--config.file). --web.listen-address and --web.telemetry-path say where a running daemon serves run events, when it holds the event socket.")
        .mut_args(|a| {
            // --interval sets every collector's.
            let id = a.get_id().as_str();
            let a = if id.starts_with("collector.") && id.ends_with(".interval") {
                a.hide(true)
            } else {
                a
            };
            if a.get_help_heading().is_none() {
                a.help_heading("Collectors, paths and logging (the daemon's flags)")
            } else {
                a
            }
        });
    for id in DAEMON_ONLY {
        cmd = cmd.mut_arg(id, |a| a.hide(true));
    }
    cmd.arg(
            Arg::new("duration")
                .long("duration")
                .value_name("DURATION")
                .action(ArgAction::Set)
                .default_value("60s")
                .value_parser(parse_positive)
                .help("How long to sample; at least two intervals."),
        )
        .arg(
            Arg::new("interval")
                .long("interval")
                .value_name("DURATION")
                .action(ArgAction::Set)
                .default_value("100ms")
                .value_parser(parse_profile_interval)
                .help("Sampling interval of every collector (minimum 100ms)."),
        )
        .arg(
            Arg::new("pid")
                .long("pid")
                .value_name("PID")
                .action(ArgAction::Append)
                .value_parser(clap::value_parser!(u32))
                .help("The training process to follow (CPU, I/O, page faults, context switches), besides the processes holding GPUs; repeatable."),
        )
        .arg(
            Arg::new("html")
                .long("html")
                .value_name("FILE")
                .action(ArgAction::Set)
                .help("Write a self-contained HTML report (verdict, faults, summary, SVG time series of the key signals on one time axis) to FILE."),
        )
        .arg(
            Arg::new("json")
                .long("json")
                .value_name("FILE")
                .action(ArgAction::Set)
                .help("Write the faults, the sampled series, the summary and the verdict to FILE as JSON."),
        )
}

/// Runs `accel-agent profile` (the arguments without `profile`); returns
/// the exit code.
pub fn run(args: Vec<OsString>) -> i32 {
    let (config, m): (Config, _) = match Config::parse_with(command, args) {
        Ok((Parsed::Run(c), Some(m))) => (*c, m),
        Ok((Parsed::Exit(code), _)) => return code,
        Ok((Parsed::Run(_), None)) => return 2,
        Err(msg) => {
            eprintln!("accel-agent profile: {msg}");
            return 2;
        }
    };
    let duration = *m.get_one::<Duration>("duration").expect("has a default");
    let interval = *m.get_one::<Duration>("interval").expect("has a default");
    if duration < interval * 2 {
        eprintln!(
            "accel-agent profile: --duration {} is shorter than two intervals (--interval {}): nothing to compare",
            accel_collectors::options::humanize(duration),
            accel_collectors::options::humanize(interval)
        );
        return 2;
    }
    let json = m.get_one::<String>("json").cloned();
    let html = m.get_one::<String>("html").cloned();
    let pids: Vec<u32> = m
        .get_many::<u32>("pid")
        .map(|v| v.copied().collect())
        .unwrap_or_default();
    // A bad output path fails now, not after the whole profile.
    for file in json.iter().chain(html.iter()) {
        if let Err(e) = std::fs::File::create(file) {
            eprintln!("accel-agent profile: cannot write {file}: {e}");
            return 2;
        }
    }
    let mut config = config;
    for pid in &pids {
        if !config
            .paths
            .procfs
            .join(pid.to_string())
            .join("stat")
            .exists()
        {
            eprintln!("accel-agent profile: --pid {pid}: no such process");
            return 2;
        }
    }
    if !pids.is_empty() {
        if let Some(o) = config.options_mut::<accel_collectors::process::ProcessOptions>() {
            o.pids = pids.clone();
        }
        for c in config
            .collectors
            .iter_mut()
            .filter(|c| c.spec.name == "process")
        {
            c.enabled = true;
        }
    }
    // Warnings only unless asked: stdout carries the summary.
    let level = if config.log_level == tracing::Level::INFO {
        tracing::Level::WARN
    } else {
        config.log_level
    };
    crate::logging::init(level, config.log_format);

    for c in &mut config.collectors {
        c.interval = interval;
    }
    // The summary turns the NVLink byte counters into rates between
    // samples: a short profile reads them every sample, not every
    // --collector.gpu.counter-interval (the daemon's saving of ~4 ms a GPU
    // per read is not worth stale rates here).
    if let Some(o) = config.options_mut::<accel_collectors::gpu::GpuOptions>() {
        o.counter_interval = o.counter_interval.min(interval);
    }
    // Its summary reads the PCIe throughput gauges.
    if let Some(c) = config.collectors.iter_mut().find(|c| c.spec.name == "gpu") {
        c.detail = true;
    }
    let events_wanted = config
        .collectors
        .iter()
        .any(|c| c.enabled && c.spec.name == "goodput")
        && config
            .options::<accel_collectors::goodput::GoodputOptions>()
            .is_some_and(|o| o.socket().is_some());
    let start = Instant::now();
    let sampling = Sampling::start(&config, start, interval, duration);
    let events_here = sampling.runs("goodput");
    // Run events: from this profile's own socket, else from the daemon that
    // holds it (read now and at the end).
    let daemon = |what: &str| -> Option<Vec<crate::runs::Obs>> {
        match crate::runs::scrape_daemon(&config.web.listen_address, &config.web.telemetry_path) {
            Ok(obs) => Some(obs),
            Err(e) => {
                tracing::info!(error = %e, when = what, "no run events: the event socket is taken and its agent cannot be read");
                None
            }
        }
    };
    let daemon_first = (events_wanted && !events_here)
        .then(|| daemon("start"))
        .flatten();
    let mut err = std::io::stderr();
    let tty = err.is_terminal();
    while start.elapsed() < duration {
        std::thread::sleep(
            Duration::from_millis(200).min(duration.saturating_sub(start.elapsed())),
        );
        if tty {
            let n = sampling.samples();
            let _ = write!(
                err,
                "\r\x1b[Kprofiling: {:.1}s / {:.1}s, {n} samples",
                start.elapsed().as_secs_f64().min(duration.as_secs_f64()),
                duration.as_secs_f64()
            );
            let _ = err.flush();
        }
    }
    if tty {
        let _ = write!(err, "\r\x1b[K");
        let _ = err.flush();
    }
    let recording = sampling.stop();
    let mut records = recording.records;
    let events = records.iter().find(|(name, _)| *name == "goodput");
    let runs = match (events, daemon_first) {
        (Some((_, recs)), _) => {
            // This socket opened with the profile: everything it counted
            // happened during it.
            recs.last().map_or_else(Vec::new, |last| {
                crate::runs::summarise(&[], &crate::runs::flatten(&last.families), "events")
            })
        }
        (None, Some(first)) => daemon("end")
            .map(|last| crate::runs::summarise(&first, &last, "daemon"))
            .unwrap_or_default(),
        (None, None) => Vec::new(),
    };
    let elapsed = start.elapsed().as_secs_f64().min(duration.as_secs_f64());
    let faults = super::faults::detect(
        records
            .iter()
            .find(|(name, _)| *name == "gpu")
            .map_or(&[][..], |(_, r)| r),
        &recording.attempts,
        elapsed,
    );
    let all: Vec<Vec<Record>> = records.drain(..).map(|(_, r)| r).collect();
    let (mut summary, series) = summarise(&all, elapsed);
    summary.runs = runs;
    summary.faults = faults;
    let diagnosis = diagnose(&summary);
    let text = render(&summary, &diagnosis);
    print!("{text}");
    if let Some(file) = &html {
        let page = super::html::html(&summary, &diagnosis, &text, &series, interval.as_secs_f64());
        if let Err(e) = std::fs::write(file, page) {
            eprintln!("accel-agent profile: cannot write {file}: {e}");
            return 1;
        }
    }
    if let Some(file) = json {
        let signals: serde_json::Map<String, serde_json::Value> = series
            .into_iter()
            .map(|(k, p)| {
                (
                    k,
                    serde_json::json!({
                        "t": p.iter().map(|x| x.0).collect::<Vec<_>>(),
                        "v": p.iter().map(|x| x.1).collect::<Vec<_>>(),
                    }),
                )
            })
            .collect();
        let doc = serde_json::json!({
            "version": crate::VERSION,
            "interval_seconds": interval.as_secs_f64(),
            "duration_seconds": summary.duration_seconds,
            "verdict": diagnosis.verdict,
            "performance_verdict": diagnosis.performance,
            "faults": summary.faults,
            "evidence": diagnosis.evidence,
            "advice": diagnosis.advice,
            "summary": summary,
            "signals": signals,
        });
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        if let Err(e) = std::fs::write(&file, text + "\n") {
            eprintln!("accel-agent profile: cannot write {file}: {e}");
            return 1;
        }
    }
    0
}
