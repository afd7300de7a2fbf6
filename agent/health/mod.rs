//! `accel-agent health [--json] [--clear CHECK] [--local]`: the node's
//! health checks once, for a Slurm prolog or epilog, Kubernetes
//! node-problem-detector, or a pre-flight before a job.
//!
//! It asks the running daemon (`GET /health` on `--web.listen-address`,
//! plain HTTP, one second at most) and, when there is none (or it does not
//! answer, or answers only over TLS or with credentials), runs the checks
//! itself: the gpu collector samples once, then the health collector
//! checks, with the daemon's flags and config file. The sticky states are
//! in the state file both share (`--collector.health.state-file`);
//! `--clear` edits it, and the daemon reads it again at its next round.
//!
//! Exit codes (docs/health.md): 0 healthy, 1 degraded, 2 failed, 3 the
//! checks could not run, 64 a usage error (a bad flag or `--clear` value).

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use accel_collectors::health::{self, HealthOptions, Report};
use accel_collectors::{Built, Sample, Shared};
use clap::{Arg, ArgAction, Command};

use crate::config::{self, Config, Parsed};

/// Exit code of a usage error (sysexits.h `EX_USAGE`), distinct from the
/// health states 0, 1 and 2.
pub const EXIT_USAGE: i32 = 64;
/// Exit code when the checks could not run at all.
pub const EXIT_UNCHECKED: i32 = 3;

/// What `accel-agent health` does, in `accel-agent --help` and its own.
pub const ABOUT: &str = "Check the node's health once and print a state (ok, degraded, failed), reason and action per component and check; exit 0 healthy, 1 degraded, 2 failed, 3 could not check, 64 usage error. Reads the running daemon's checks when there is one, else checks by itself.";

/// The daemon's flags plus the command's own.
pub fn command() -> Command {
    config::command()
        .name("accel-agent health")
        .bin_name("accel-agent health")
        .about(ABOUT)
        .after_help("Exit codes: 0 healthy, 1 degraded, 2 failed, 3 the checks could not run, 64 usage error. --web.listen-address says where a running daemon serves /health; collector, path and log flags (and --config.file) are the daemon's, used when this command checks by itself. Every check, its source and its action: docs/health.md.")
        .mut_args(|a| {
            if a.get_help_heading().is_none() {
                a.help_heading("Collectors, paths and logging (the daemon's flags)")
            } else {
                a
            }
        })
        .arg(
            Arg::new("json")
                .long("json")
                .action(ArgAction::SetTrue)
                .help("Print the report as JSON instead of a table."),
        )
        .arg(
            Arg::new("clear")
                .long("clear")
                .value_name("CHECK")
                .action(ArgAction::Append)
                .help("Clear a sticky state by hand before checking: all, a check (xid, sxid, lost, hung_task, oom_kill), or COMPONENT/CHECK (gpu3/xid); repeatable."),
        )
        .arg(
            Arg::new("local")
                .long("local")
                .action(ArgAction::SetTrue)
                .help("Check by itself even when a daemon runs."),
        )
}

/// Runs `accel-agent health` (the arguments without `health`); returns the
/// exit code.
pub fn run(args: Vec<OsString>) -> i32 {
    let (mut config, m): (Config, _) = match Config::parse_with(command, args) {
        Ok((Parsed::Run(c), Some(m))) => (*c, m),
        Ok((Parsed::Exit(0), _)) => return 0,
        Ok(_) => return EXIT_USAGE,
        Err(msg) => {
            eprintln!("accel-agent health: {msg}");
            return EXIT_USAGE;
        }
    };
    let clears: Vec<String> = m
        .get_many::<String>("clear")
        .map(|v| v.cloned().collect())
        .unwrap_or_default();
    if let Some(bad) = clears.iter().find(|c| !health::valid_clear(c)) {
        eprintln!(
            "accel-agent health: --clear {bad:?}: not all, a check ({}) or COMPONENT/CHECK",
            health::CHECKS.join(", ")
        );
        return EXIT_USAGE;
    }
    let json = m.get_flag("json");
    // Warnings only unless asked: stdout carries the report.
    let level = if config.log_level == tracing::Level::INFO {
        tracing::Level::WARN
    } else {
        config.log_level
    };
    crate::logging::init(level, config.log_format);

    let (report, source) = if clears.is_empty() && !m.get_flag("local") {
        match ask_daemon(&config.web.listen_address) {
            Ok(r) => (
                r,
                format!("the running daemon ({})", config.web.listen_address),
            ),
            Err(why) => {
                tracing::info!("no daemon answered ({why}): checking here");
                match check_here(&mut config, &clears) {
                    Ok(r) => (r, "checked by this command (no daemon answered)".to_owned()),
                    Err(e) => {
                        eprintln!("accel-agent health: {e}");
                        return EXIT_UNCHECKED;
                    }
                }
            }
        }
    } else {
        match check_here(&mut config, &clears) {
            Ok(r) => (r, "checked by this command".to_owned()),
            Err(e) => {
                eprintln!("accel-agent health: {e}");
                return EXIT_UNCHECKED;
            }
        }
    };
    let mut stdout = std::io::stdout().lock();
    let written = if json {
        let mut v = report.to_json();
        v["source"] = serde_json::Value::String(source);
        writeln!(stdout, "{v:#}")
    } else {
        writeln!(stdout, "{}source: {source}", report.table())
    };
    if written.is_err() {
        return EXIT_UNCHECKED;
    }
    report.state().code()
}

/// `GET /health` from a daemon listening on `listen` (":9445" asks the
/// loopback address), within about a second.
fn ask_daemon(listen: &str) -> Result<Report, String> {
    let host = match listen.rsplit_once(':') {
        Some(("", port)) => format!("127.0.0.1:{port}"),
        Some(("0.0.0.0", port)) => format!("127.0.0.1:{port}"),
        Some(("[::]", port)) => format!("[::1]:{port}"),
        _ => listen.to_owned(),
    };
    let addr = host
        .to_socket_addrs()
        .map_err(|e| format!("{host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host}: no address"))?;
    let timeout = Duration::from_secs(1);
    let deadline = Instant::now() + timeout;
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{host}: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET /health HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut body = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if Instant::now() > deadline || body.len() > 4 << 20 {
            return Err(format!("{host}: no complete answer in time"));
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => body.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("{host}: {e}")),
        }
    }
    let text = String::from_utf8_lossy(&body);
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{host}: not an HTTP answer"))?;
    let status = head.lines().next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 200") {
        return Err(format!("{host}: {status}"));
    }
    let v: serde_json::Value =
        serde_json::from_str(rest).map_err(|e| format!("{host}: /health: {e}"))?;
    Report::from_json(&v).map_err(|e| format!("{host}: /health: {e}"))
}

/// The checks run here: the gpu collector samples once (when enabled), then
/// the health collector checks; `clears` are cleared first.
fn check_here(config: &mut Config, clears: &[String]) -> Result<Report, String> {
    let shared = Shared::default();
    let enabled = |name: &str| {
        config
            .collectors
            .iter()
            .find(|c| c.spec.name == name)
            .filter(|c| c.enabled)
    };
    if let Some(cc) = enabled("gpu") {
        let (built, _workers, _activity) = crate::sampler::build(cc, &config.paths, &shared);
        match built {
            Ok(Built::Ready(mut gpu)) => {
                let mut sample = Sample::new();
                if let Err(e) = gpu.sample(&mut sample) {
                    tracing::warn!(error = %e, "the gpu collector's sample failed");
                }
            }
            Ok(Built::Absent(_)) => {}
            Err(e) => tracing::warn!(error = %e, "the gpu collector could not be built"),
        }
    }
    let opts: HealthOptions = config
        .options::<HealthOptions>()
        .cloned()
        .ok_or("the health collector is not in this build")?;
    let mut h = health::Health::new(&config.paths, opts, &shared);
    for c in clears {
        let n = h.clear(c);
        eprintln!("accel-agent health: cleared {n} sticky state(s) ({c})");
    }
    Ok(h.check())
}
