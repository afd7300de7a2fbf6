//! Flags and the optional TOML config file.
//!
//! Flags follow the Prometheus exporters' style (`--web.listen-address`,
//! `--collector.<name>` / `--no-collector.<name>`, `--path.procfs`). The
//! config file (`--config.file`) uses the same names as TOML keys, so
//! `web.listen-address = ":9445"` or a `[web]` table with `listen-address`;
//! a collector is switched with `collector.<name>.enabled`. Flags override
//! the file. Any bad flag or value gives one line naming it and exit code 2.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use accel_collectors::options::{humanize, parse_interval};
use accel_collectors::{registry, CollectorOptions, Paths, Spec};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::logging::LogFormat;
use crate::web_config::WebSecurity;

pub use accel_collectors::options::{parse_duration, MIN_INTERVAL};

/// HTTP settings.
#[derive(Clone, Debug)]
pub struct WebConfig {
    /// `host:port`, `:port` (all addresses) or `[v6]:port`.
    pub listen_address: String,
    /// Where metrics are served.
    pub telemetry_path: String,
    /// Requests served at once; beyond it, 503. 0: no limit.
    pub max_requests: usize,
    /// Connections open at once, idle or not; at the bound the longest
    /// idle one is closed for a new one. 0: no limit.
    pub max_connections: usize,
    /// How long a client may take to send its request headers once it has
    /// started them (and, with TLS, to finish the handshake).
    pub header_timeout: Duration,
    /// How long a connection may stay open with no request on it.
    pub idle_timeout: Duration,
    /// `--web.config.file`: TLS and basic authentication, loaded and checked.
    pub security: Option<Arc<WebSecurity>>,
}

/// One collector's settings.
#[derive(Debug)]
pub struct CollectorConfig {
    /// Its registry entry.
    pub spec: &'static Spec,
    /// Whether to run it.
    pub enabled: bool,
    /// Its sampling interval.
    pub interval: Duration,
    /// `--collector.<name>.detail`: its detail families too.
    pub detail: bool,
    /// Its own options, as its module declares them.
    pub options: Box<dyn CollectorOptions>,
}

impl Clone for CollectorConfig {
    fn clone(&self) -> Self {
        Self {
            spec: self.spec,
            enabled: self.enabled,
            interval: self.interval,
            detail: self.detail,
            options: self.options.clone_box(),
        }
    }
}

/// Everything the agent was told.
#[derive(Clone, Debug)]
pub struct Config {
    /// HTTP settings.
    pub web: WebConfig,
    /// Log threshold.
    pub log_level: tracing::Level,
    /// Log line format.
    pub log_format: LogFormat,
    /// Filesystem roots handed to the collectors.
    pub paths: Paths,
    /// Every known collector, enabled or not.
    pub collectors: Vec<CollectorConfig>,
}

/// What parsing the command line gave.
#[derive(Debug)]
pub enum Parsed {
    /// Run the agent.
    Run(Box<Config>),
    /// `--help` or `--version` was printed: exit with this code.
    Exit(i32),
}

fn parse_level(s: &str) -> Result<tracing::Level, String> {
    match s {
        "debug" => Ok(tracing::Level::DEBUG),
        "info" => Ok(tracing::Level::INFO),
        "warn" => Ok(tracing::Level::WARN),
        "error" => Ok(tracing::Level::ERROR),
        _ => Err(format!("{s:?} is not one of debug, info, warn, error")),
    }
}

fn parse_format(s: &str) -> Result<LogFormat, String> {
    match s {
        "logfmt" => Ok(LogFormat::Logfmt),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!("{s:?} is not one of logfmt, json")),
    }
}

/// `host:port`, `:port` or `[v6]:port`, checked when the flags are parsed
/// (a host name is resolved only when the server binds).
pub fn parse_listen_address(s: &str) -> Result<String, String> {
    let bad = || format!("{s:?} is not host:port, :port or [v6]:port (e.g. :9445)");
    if s.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(s.to_owned());
    }
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>().map_err(|_| bad())?;
    let hostname = |h: &str| {
        !h.starts_with(['-', '.'])
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    };
    if host.is_empty() || hostname(host) {
        Ok(s.to_owned())
    } else {
        Err(bad())
    }
}

fn parse_path(s: &str) -> Result<String, String> {
    if s.starts_with('/') {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} must start with /"))
    }
}

fn opt(name: impl Into<String>, value: &'static str, help: String) -> Arg {
    let name = name.into();
    Arg::new(name.clone())
        .long(name)
        .value_name(value)
        .action(ArgAction::Set)
        .help(help)
}

/// The command-line interface, generated from the collector registry so that
/// a new collector gets its flags without editing this file.
pub fn command() -> Command {
    let version = format!("{} (revision {})", crate::VERSION, crate::REVISION);
    let mut cmd = Command::new("accel-agent")
        .version(version)
        .after_help("Every flag except --config.file can also be set in the config file, under the same name as a TOML key (e.g. `web.listen-address = \":9445\"`, `collector.disk.enabled = false`); flags override the file.")
        .args_override_self(true)
        .max_term_width(100)
        .arg(opt("config.file", "FILE", "Optional TOML config file; flags override it.".into()))
        .arg(opt("web.listen-address", "ADDR", "Address to listen on: host:port, or :port for every address.".into()).default_value(":9445").value_parser(parse_listen_address))
        .arg(opt("web.telemetry-path", "PATH", "Path under which to expose metrics.".into()).default_value("/metrics").value_parser(parse_path))
        .arg(opt("web.max-requests", "N", "Maximum number of requests served at once; more get 503. Connections waiting for their headers or idle between requests do not count. 0 means no limit.".into()).default_value("40").value_parser(clap::value_parser!(usize)))
        .arg(opt("web.max-connections", "N", "Maximum number of open connections; at the limit the longest idle one is closed to admit a new one. 0 means no limit.".into()).default_value("1024").value_parser(clap::value_parser!(usize)))
        .arg(opt("web.header-timeout", "DURATION", "How long a client may take to send its request headers once it has started (and to finish the TLS handshake).".into()).default_value("10s").value_parser(parse_duration))
        .arg(opt("web.idle-timeout", "DURATION", "How long a connection may stay open without a request (keep-alive); longer than Prometheus' own 5m by default, so a scraper's connection is not closed under it.".into()).default_value("6m").value_parser(parse_duration))
        .arg(opt("web.config.file", "FILE", "Web config file for TLS and basic authentication, in the Prometheus exporter-toolkit format (tls_server_config, basic_auth_users); re-read on SIGHUP.".into()))
        .arg(opt("log.level", "LEVEL", "Only log messages with this severity or above: debug, info, warn, error.".into()).default_value("info").value_parser(parse_level))
        .arg(opt("log.format", "FORMAT", "Log line format: logfmt or json.".into()).default_value("logfmt").value_parser(parse_format))
        .arg(opt("path.procfs", "PATH", "procfs mountpoint.".into()).default_value("/proc"))
        .arg(opt("path.sysfs", "PATH", "sysfs mountpoint.".into()).default_value("/sys"))
        .arg(opt("path.udev.data", "PATH", "udev data path (disk model, serial and wwn for accel_disk_info).".into()).default_value("/run/udev/data"))
        .arg(opt("path.rootfs", "PATH", "The host's root: where mount points are statfs'd and os-release is read (a container mounts the host's / here).".into()).default_value("/"))
        .arg(
            Arg::new("collector.disable-defaults")
                .long("collector.disable-defaults")
                .action(ArgAction::SetTrue)
                .help("Disable every collector not enabled explicitly with --collector.<name>."),
        );
    for spec in registry() {
        let on = format!("collector.{}", spec.name);
        let off = format!("no-collector.{}", spec.name);
        let interval = format!("collector.{}.interval", spec.name);
        let default = if spec.default_enabled {
            "enabled"
        } else {
            "disabled"
        };
        cmd = cmd
            .arg(
                Arg::new(on.clone())
                    .long(on.clone())
                    .action(ArgAction::SetTrue)
                    .overrides_with(off.clone())
                    .help(format!(
                        "Enable the {} collector: {} (default: {default}).",
                        spec.name, spec.help
                    )),
            )
            .arg(
                Arg::new(off.clone())
                    .long(off)
                    .action(ArgAction::SetTrue)
                    .overrides_with(on)
                    .hide(true),
            )
            .arg(
                opt(
                    interval,
                    "DURATION",
                    format!(
                        "Sampling interval of the {} collector (minimum 100ms).",
                        spec.name
                    ),
                )
                .default_value(humanize(spec.default_interval))
                .value_parser(parse_interval),
            );
        if !spec.detail.is_empty() {
            let detail = format!("collector.{}.detail", spec.name);
            cmd = cmd.arg(
                Arg::new(detail.clone())
                    .long(detail)
                    .action(ArgAction::SetTrue)
                    .help(spec.detail),
            );
        }
        cmd = (spec.options.augment)(cmd);
    }
    // clap's derive sets `about` from each options struct's doc comment:
    // the agent's own comes last.
    cmd.about(ABOUT).long_about(None::<&str>)
}

/// The daemon's command line: [`command`] and the commands listed in its
/// help (`accel-agent profile` and `accel-agent help [COMMAND]` are
/// dispatched before these flags are parsed, in [`crate::run`]).
pub fn daemon_command() -> Command {
    command()
        .subcommand(Command::new("profile").about(crate::profile::command::ABOUT))
        .subcommand(Command::new("storage-test").about(crate::storage_test::ABOUT))
        .subcommand(Command::new("health").about(crate::health::ABOUT))
        .subcommand(Command::new("help").about("Print this help, or the help of the given command (accel-agent help profile)."))
        .disable_help_subcommand(true)
        .subcommand_help_heading("Commands")
        .override_usage("accel-agent [FLAGS]\n       accel-agent profile [FLAGS]\n       accel-agent storage-test --path DIR [FLAGS]\n       accel-agent health [--json] [--clear CHECK] [FLAGS]\n       accel-agent help [COMMAND]")
}

const ABOUT: &str = "Prometheus exporter and profiling agent for ML training nodes: accelerators, storage, network, InfiniBand and host metrics.";

/// Turns a TOML document into flag arguments (`--key=value`), so the file
/// goes through exactly the validation flags do.
fn toml_to_args(text: &str, file: &str) -> Result<Vec<OsString>, String> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| format!("config file {file}: {}", e.message()))?;
    let mut args = Vec::new();
    flatten(&table, "", file, &mut args)?;
    Ok(args)
}

fn flatten(
    table: &toml::Table,
    prefix: &str,
    file: &str,
    args: &mut Vec<OsString>,
) -> Result<(), String> {
    let known = command();
    for (key, value) in table {
        let name = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        if let toml::Value::Table(t) = value {
            flatten(t, &name, file, args)?;
            continue;
        }
        // `collector.<name>.enabled = bool` is the file's form of
        // --collector.<name> / --no-collector.<name>.
        if let Some(c) = name
            .strip_prefix("collector.")
            .and_then(|n| n.strip_suffix(".enabled"))
        {
            let on = format!("collector.{c}");
            if !known.get_arguments().any(|a| a.get_id() == on.as_str()) {
                return Err(format!("config file {file}: unknown collector {c:?}"));
            }
            match value {
                toml::Value::Boolean(true) => args.push(format!("--collector.{c}").into()),
                toml::Value::Boolean(false) => args.push(format!("--no-collector.{c}").into()),
                _ => return Err(format!("config file {file}: {name} must be true or false")),
            }
            continue;
        }
        let arg = known
            .get_arguments()
            .find(|a| {
                a.get_id() == name.as_str() && name != "config.file" && !name.starts_with("no-")
            })
            .ok_or_else(|| format!("config file {file}: unknown key {name:?}"))?;
        let flag_takes_value = arg.get_action().takes_values();
        // A repeatable flag (`--collector.storage-probe.path`) takes an
        // array of strings: one flag per item.
        if let toml::Value::Array(items) = value {
            if !matches!(arg.get_action(), clap::ArgAction::Append) {
                return Err(format!(
                    "config file {file}: {name} takes one value, not an array"
                ));
            }
            for item in items {
                let toml::Value::String(s) = item else {
                    return Err(format!(
                        "config file {file}: {name} must be an array of strings"
                    ));
                };
                args.push(format!("--{name}={s}").into());
            }
            continue;
        }
        let text = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) if !flag_takes_value => {
                if *b {
                    args.push(format!("--{name}").into());
                }
                continue;
            }
            _ => return Err(format!("config file {file}: {name} has the wrong type")),
        };
        if !flag_takes_value {
            return Err(format!("config file {file}: {name} must be true or false"));
        }
        args.push(format!("--{name}={text}").into());
    }
    Ok(())
}

/// clap's error as one line, with its suggestion when it has one
/// (`--collector.gpu.intervall`: did you mean `--collector.gpu.interval`?).
fn first_line(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    let text = e.to_string();
    let line = text.lines().next().unwrap_or("bad arguments");
    let mut line = line.strip_prefix("error: ").unwrap_or(line).to_owned();
    let suggested = match e
        .get(ContextKind::SuggestedArg)
        .or_else(|| e.get(ContextKind::SuggestedSubcommand))
    {
        Some(ContextValue::String(s)) => vec![s.clone()],
        Some(ContextValue::Strings(v)) => v.clone(),
        _ => Vec::new(),
    };
    if !suggested.is_empty() {
        line.push_str(&format!("; did you mean {}?", suggested.join(" or ")));
    }
    line
}

impl Config {
    /// The options of the collector whose options struct is `T`.
    pub fn options<T: 'static>(&self) -> Option<&T> {
        self.collectors
            .iter()
            .find_map(|c| c.options.as_any().downcast_ref::<T>())
    }

    /// As [`options`](Self::options), to change them before the collectors
    /// are built (`profile --pid`).
    pub fn options_mut<T: 'static>(&mut self) -> Option<&mut T> {
        self.collectors
            .iter_mut()
            .find_map(|c| c.options.as_any_mut().downcast_mut::<T>())
    }

    /// Parses the command line (program name first), reading the config
    /// file it names. `Err` is a one-line message for exit code 2.
    pub fn from_args(args: Vec<OsString>) -> Result<Parsed, String> {
        let (parsed, m) = Self::parse_with(daemon_command, args)?;
        if let Some(name) = m.as_ref().and_then(|m| m.subcommand_name()) {
            return Err(format!(
                "the command goes first, its flags after it: accel-agent {name} [FLAGS]"
            ));
        }
        Ok(parsed)
    }

    /// As [`from_args`](Self::from_args), with a command built by `cmd`
    /// ([`command`] plus extra flags, as `accel-agent profile` has); also
    /// returns the matches, for those extra flags.
    pub fn parse_with(
        cmd: fn() -> Command,
        args: Vec<OsString>,
    ) -> Result<(Parsed, Option<ArgMatches>), String> {
        let first = match cmd().try_get_matches_from(&args) {
            Ok(m) => m,
            Err(e)
                if matches!(
                    e.kind(),
                    clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
                ) =>
            {
                let _ = e.print();
                return Ok((Parsed::Exit(0), None));
            }
            Err(e) => return Err(first_line(&e)),
        };
        let matches = match first.get_one::<String>("config.file") {
            None => first,
            Some(file) => {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| format!("config file {file}: {e}"))?;
                let mut full: Vec<OsString> = args.iter().take(1).cloned().collect();
                full.extend(toml_to_args(&text, file)?);
                full.extend(args.iter().skip(1).cloned());
                cmd()
                    .try_get_matches_from(full)
                    .map_err(|e| format!("{} (flags or config file {file})", first_line(&e)))?
            }
        };
        let config = Self::from_matches(&matches)?;
        Ok((Parsed::Run(Box::new(config)), Some(matches)))
    }

    /// The settings that differ in `new` but only take effect after a
    /// restart (a reload applies the log level and the web config file).
    pub fn restart_needed(&self, new: &Config) -> Vec<&'static str> {
        let mut out = Vec::new();
        let (a, b) = (&self.web, &new.web);
        if a.listen_address != b.listen_address {
            out.push("web.listen-address");
        }
        if a.telemetry_path != b.telemetry_path {
            out.push("web.telemetry-path");
        }
        if a.max_requests != b.max_requests {
            out.push("web.max-requests");
        }
        if a.max_connections != b.max_connections {
            out.push("web.max-connections");
        }
        if a.header_timeout != b.header_timeout {
            out.push("web.header-timeout");
        }
        if a.idle_timeout != b.idle_timeout {
            out.push("web.idle-timeout");
        }
        if self.log_format != new.log_format {
            out.push("log.format");
        }
        if self.paths != new.paths {
            out.push("path.*");
        }
        for (a, b) in self.collectors.iter().zip(&new.collectors) {
            if (a.enabled, a.interval) != (b.enabled, b.interval) {
                out.push("collectors and their intervals");
                break;
            }
        }
        for (a, b) in self.collectors.iter().zip(&new.collectors) {
            if !a.options.same(&*b.options) || a.detail != b.detail {
                out.push("collector options");
                break;
            }
        }
        out
    }

    fn from_matches(m: &ArgMatches) -> Result<Self, String> {
        let s = |k: &str| m.get_one::<String>(k).cloned();
        let paths = Paths {
            procfs: PathBuf::from(s("path.procfs").unwrap_or_default()),
            sysfs: PathBuf::from(s("path.sysfs").unwrap_or_default()),
            udev_data: PathBuf::from(s("path.udev.data").unwrap_or_default()),
            rootfs: PathBuf::from(s("path.rootfs").unwrap_or_default()),
        };
        let disable_defaults = m.get_flag("collector.disable-defaults");
        let collectors = registry()
            .iter()
            .map(|&spec| {
                let on = format!("collector.{}", spec.name);
                let off = format!("no-collector.{}", spec.name);
                let explicit = |id: &str| {
                    m.value_source(id) == Some(ValueSource::CommandLine) && m.get_flag(id)
                };
                let enabled = if explicit(&on) {
                    true
                } else if explicit(&off) {
                    false
                } else {
                    spec.default_enabled && !disable_defaults
                };
                Ok(CollectorConfig {
                    spec,
                    enabled,
                    interval: *m
                        .get_one::<Duration>(&format!("collector.{}.interval", spec.name))
                        .expect("has a default"),
                    detail: !spec.detail.is_empty()
                        && m.get_flag(&format!("collector.{}.detail", spec.name)),
                    options: (spec.options.from_matches)(m)?,
                })
            })
            .collect::<Result<_, String>>()?;
        let security = match s("web.config.file").filter(|f| !f.is_empty()) {
            None => None,
            Some(file) => Some(Arc::new(
                crate::web_config::load(Path::new(&file))
                    .map_err(|e| format!("web config file {file}: {e}"))?,
            )),
        };
        Ok(Config {
            web: WebConfig {
                listen_address: s("web.listen-address").unwrap_or_default(),
                telemetry_path: s("web.telemetry-path").unwrap_or_default(),
                max_requests: *m
                    .get_one::<usize>("web.max-requests")
                    .expect("has a default"),
                max_connections: *m
                    .get_one::<usize>("web.max-connections")
                    .expect("has a default"),
                header_timeout: *m
                    .get_one::<Duration>("web.header-timeout")
                    .expect("has a default"),
                idle_timeout: *m
                    .get_one::<Duration>("web.idle-timeout")
                    .expect("has a default"),
                security,
            },
            log_level: *m
                .get_one::<tracing::Level>("log.level")
                .expect("has a default"),
            log_format: *m.get_one::<LogFormat>("log.format").expect("has a default"),
            paths,
            collectors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use accel_collectors::goodput::GoodputOptions;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut v: Vec<OsString> = vec!["accel-agent".into()];
        v.extend(args.iter().map(OsString::from));
        match Config::from_args(v)? {
            Parsed::Run(c) => Ok(*c),
            Parsed::Exit(_) => Err("exit".into()),
        }
    }

    fn enabled(c: &Config) -> Vec<&str> {
        c.collectors
            .iter()
            .filter(|c| c.enabled)
            .map(|c| c.spec.name)
            .collect()
    }

    #[test]
    fn command_is_well_formed() {
        command().debug_assert();
        daemon_command().debug_assert();
    }

    #[test]
    fn listen_addresses() {
        for ok in [
            ":9445",
            "127.0.0.1:9445",
            "[::1]:9445",
            "localhost:80",
            "node-1.example:0",
        ] {
            assert_eq!(parse_listen_address(ok).as_deref(), Ok(ok));
        }
        for bad in ["9445", ":port", "host:99999", "a b:1", "", "[::1]", ":"] {
            let e = parse_listen_address(bad).unwrap_err();
            assert!(e.contains("host:port"), "{bad}: {e}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("100ms").unwrap(), Duration::from_millis(100));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        for bad in ["", "5", "s", "5x", "-1s", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_interval("50ms").is_err());
    }

    #[test]
    fn defaults_and_switches() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.web.listen_address, ":9445");
        assert_eq!(c.web.max_requests, 40);
        assert_eq!(c.web.max_connections, 1024);
        assert_eq!(c.web.idle_timeout, Duration::from_secs(360));
        assert!(enabled(&c).contains(&"disk"));
        let c = parse(&["--no-collector.disk", "--collector.disk.interval=100ms"]).unwrap();
        assert!(!enabled(&c).contains(&"disk"));
        let c = parse(&["--collector.disable-defaults", "--collector.cpu"]).unwrap();
        assert_eq!(enabled(&c), ["cpu"]);
        // The last of a pair wins.
        let c = parse(&["--no-collector.cpu", "--collector.cpu"]).unwrap();
        assert!(enabled(&c).contains(&"cpu"));
    }

    #[test]
    fn event_socket_flags() {
        let c = parse(&[]).unwrap();
        let g = c.options::<GoodputOptions>().unwrap();
        assert_eq!(
            g.socket(),
            Some(Path::new(accel_collectors::goodput::DEFAULT_SOCKET))
        );
        assert_eq!((g.max_runs, g.rate_limit), (32, 1000.0));
        assert!(enabled(&c).contains(&"goodput"));
        let c = parse(&[
            "--events.socket=",
            "--events.peak-flops=A10G:bf16=70e12",
            "--events.mfu-window=1m",
        ])
        .unwrap();
        let g = c.options::<GoodputOptions>().unwrap();
        assert_eq!(g.socket(), None);
        assert_eq!(g.mfu_window, Duration::from_secs(60));
        assert_eq!(
            accel_collectors::goodput::peak::peak("NVIDIA A10G", "bf16", g.overrides()),
            Some(70e12)
        );
        for bad in [
            "--events.peak-flops=A10G",
            "--events.rate-limit=0",
            "--events.run-timeout=1",
            "--events.max-runs=-1",
        ] {
            let e = parse(&[bad]).unwrap_err();
            assert!(!e.contains('\n') && e.contains("events."), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_values_are_one_line() {
        for bad in [
            &["--collector.disk.interval=5"][..],
            &["--web.max-requests=-1"],
            &["--collector.disk.device-exclude=("],
            &["--log.level=loud"],
            &["--no-such-flag"],
            &["--web.telemetry-path=metrics"],
        ] {
            let e = parse(bad).unwrap_err();
            assert!(!e.contains('\n'), "{e}");
            assert!(!e.is_empty());
        }
    }

    #[test]
    fn config_file_then_flags() {
        let dir = std::env::temp_dir().join(format!("accel-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.toml");
        std::fs::write(
            &file,
            "log.level = \"debug\"\n[web]\nmax-requests = 7\nlisten-address = \"127.0.0.1:1\"\n[collector.disk]\nenabled = false\ninterval = \"1s\"\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let c = parse(&["--config.file", f]).unwrap();
        assert_eq!(c.web.max_requests, 7);
        assert_eq!(c.web.listen_address, "127.0.0.1:1");
        assert_eq!(c.log_level, tracing::Level::DEBUG);
        assert!(!enabled(&c).contains(&"disk"));
        let c = parse(&[
            "--config.file",
            f,
            "--web.max-requests=9",
            "--collector.disk",
        ])
        .unwrap();
        assert_eq!(c.web.max_requests, 9);
        assert!(enabled(&c).contains(&"disk"));
        std::fs::write(&file, "web.nope = 1\n").unwrap();
        assert!(parse(&["--config.file", f])
            .unwrap_err()
            .contains("unknown key \"web.nope\""));
        std::fs::write(&file, "collector.disk.interval = \"fast\"\n").unwrap();
        assert!(parse(&["--config.file", f]).is_err());
        std::fs::write(&file, "not toml [").unwrap();
        assert!(parse(&["--config.file", f]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn config_file_arrays_are_repeated_flags() {
        let dir = std::env::temp_dir().join(format!("accel-config-arr-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.toml");
        let f = file.to_str().unwrap();
        std::fs::write(
            &file,
            "[collector.storage-probe]\nenabled = true\npath = [\"/data\", \"/ckpt\"]\n",
        )
        .unwrap();
        let c = parse(&["--config.file", f, "--collector.storage-probe.path=/x"]).unwrap();
        let o = c
            .options::<accel_collectors::storage_probe::StorageProbeOptions>()
            .unwrap();
        let paths: Vec<_> = o.paths.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(paths, ["/data", "/ckpt", "/x"]);
        assert!(enabled(&c).contains(&"storage-probe"));
        std::fs::write(&file, "collector.storage-probe.path = [1]\n").unwrap();
        assert!(parse(&["--config.file", f])
            .unwrap_err()
            .contains("must be an array of strings"));
        std::fs::write(&file, "collector.disk.interval = [\"1s\"]\n").unwrap();
        assert!(parse(&["--config.file", f])
            .unwrap_err()
            .contains("takes one value, not an array"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
