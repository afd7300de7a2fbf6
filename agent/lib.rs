//! accel-agent, the daemon: flags and config, sampler threads, and the HTTP
//! endpoint that serves their latest snapshots.
//!
//! The collectors themselves live in the `accel-collectors` crate; this
//! crate schedules them ([`sampler`]), keeps their snapshots and builds the
//! scrape body ([`state`]), serves it ([`server`]), and reports to systemd
//! ([`systemd`]).

pub mod config;
pub mod health;
pub mod logging;
pub mod metrics_doc;
pub mod profile;
pub mod runs;
pub mod sampler;
pub mod server;
pub mod state;
pub mod storage_test;
pub mod systemd;
pub mod web_config;

use std::ffi::OsString;

/// The version, as `--version` and `accel_build_info` give it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git revision the binary was built from, or `unknown`.
pub const REVISION: &str = env!("ACCEL_REVISION");

/// `accel-agent help [COMMAND]`: the daemon's help, or the command's.
fn help(command: Option<&str>, extra: bool) -> i32 {
    let printed = match command {
        _ if extra => {
            eprintln!("accel-agent help: takes one command at most: accel-agent help [COMMAND]");
            return 2;
        }
        None | Some("help") => config::daemon_command().print_help(),
        Some("profile") => profile::command().print_help(),
        Some("storage-test") => storage_test::command().print_help(),
        Some("health") => health::command().print_help(),
        Some(other) => {
            eprintln!(
                "accel-agent help: no command {other:?}; the commands are profile, storage-test, health and help"
            );
            return 2;
        }
    };
    match printed {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

/// Runs the agent with these command-line arguments and returns the exit
/// code: 0 after a clean shutdown, 1 when it cannot start (port in use), 2
/// for a bad flag or config value.
///
/// `accel-agent profile ...` runs [`profile::run`] instead of the daemon,
/// `accel-agent storage-test ...` [`storage_test::run`],
/// `accel-agent health ...` [`health::run`].
pub fn run(args: Vec<OsString>) -> i32 {
    if args.get(1).is_some_and(|a| a == "profile") {
        let mut rest = args;
        rest.remove(1);
        return profile::run(rest);
    }
    if args.get(1).is_some_and(|a| a == "storage-test") {
        let mut rest = args;
        rest.remove(1);
        return storage_test::run(rest);
    }
    if args.get(1).is_some_and(|a| a == "health") {
        let mut rest = args;
        rest.remove(1);
        return health::run(rest);
    }
    if args.get(1).is_some_and(|a| a == "help") {
        return help(args.get(2).and_then(|a| a.to_str()), args.len() > 3);
    }
    let config = match config::Config::from_args(args.clone()) {
        Ok(config::Parsed::Run(c)) => *c,
        Ok(config::Parsed::Exit(code)) => return code,
        Err(msg) => {
            eprintln!("accel-agent: {msg}");
            return 2;
        }
    };
    logging::init(config.log_level, config.log_format);
    tracing::info!(
        version = VERSION,
        revision = REVISION,
        "starting accel-agent"
    );

    let (agent, samplers) = sampler::spawn(&config);
    // One thread serves HTTP: a scrape only clones a cached body, and a
    // single-threaded runtime avoids waking a second thread per connection
    // (measured: about half the CPU per scrape of a 2-worker runtime; see
    // docs/benchmarks.md).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return 1;
        }
    };
    // Under systemd (Type=notify): READY=1 after the first samples, the
    // watchdog pings, STATUS= and STOPPING=1; nothing otherwise.
    let _systemd = systemd::Supervisor::start(&runtime, agent.clone(), samplers);
    match runtime.block_on(server::serve(agent, config, args)) {
        Ok(()) => {
            tracing::info!("stopped");
            0
        }
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            1
        }
    }
}
