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

use accel_collectors::{cloud, kubernetes, registry, DeviceFilter, Options, Spec};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::logging::LogFormat;
use crate::web_config::WebSecurity;

/// The shortest sampling interval accepted.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// HTTP settings.
#[derive(Clone, Debug)]
pub struct WebConfig {
    /// `host:port`, `:port` (all addresses) or `[v6]:port`.
    pub listen_address: String,
    /// Where metrics are served.
    pub telemetry_path: String,
    /// Requests served at once; beyond it, 503. 0: no limit.
    pub max_requests: usize,
    /// How long a client may take to send its request headers (and, with
    /// TLS, to finish the handshake).
    pub header_timeout: Duration,
    /// `--web.config.file`: TLS and basic authentication, loaded and checked.
    pub security: Option<Arc<WebSecurity>>,
}

/// One collector's settings.
#[derive(Clone, Debug)]
pub struct CollectorConfig {
    /// Its registry entry.
    pub spec: &'static Spec,
    /// Whether to run it.
    pub enabled: bool,
    /// Its sampling interval.
    pub interval: Duration,
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
    /// Settings handed to the collectors.
    pub options: Options,
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

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < MIN_INTERVAL {
        return Err(format!("{s} is shorter than the minimum of 100ms"));
    }
    Ok(d)
}

/// Parses a Prometheus-style duration: `100ms`, `5s`, `1m`, `1h`, or
/// combinations such as `1m30s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration (e.g. 100ms, 5s, 1m)");
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86400)),
            _ => return Err(bad()),
        };
        total += unit;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

fn parse_regex(s: &str) -> Result<String, String> {
    regex_check(s).map(|_| s.to_owned())
}

fn regex_check(s: &str) -> Result<(), String> {
    DeviceFilter::new(Some(s), None).map(|_| ()).map_err(|e| {
        format!(
            "bad regex {s:?}: {}",
            e.to_string().lines().last().unwrap_or("")
        )
    })
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

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a ratio between 0 and 1")),
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 1.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a rate of at least 1 event per second"
        )),
    }
}

fn parse_path(s: &str) -> Result<String, String> {
    if s.starts_with('/') {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} must start with /"))
    }
}

fn opt(name: &'static str, value: &'static str, help: String) -> Arg {
    Arg::new(name)
        .long(name)
        .value_name(value)
        .action(ArgAction::Set)
        .help(help)
}

/// The command-line interface, generated from the collector registry so that
/// a new collector gets its flags without editing this file.
pub fn command() -> Command {
    let version: &'static str =
        Box::leak(format!("{} (revision {})", crate::VERSION, crate::REVISION).into_boxed_str());
    let mut cmd = Command::new("accel-agent")
        .version(version)
        .about("Prometheus exporter and profiling agent for ML training nodes: accelerators, storage, network, InfiniBand and host metrics.")
        .after_help("Every flag except --config.file can also be set in the config file, under the same name as a TOML key (e.g. `web.listen-address = \":9445\"`, `collector.disk.enabled = false`); flags override the file.")
        .args_override_self(true)
        .max_term_width(100)
        .arg(opt("config.file", "FILE", "Optional TOML config file; flags override it.".into()))
        .arg(opt("web.listen-address", "ADDR", "Address to listen on: host:port, or :port for every address.".into()).default_value(":9445"))
        .arg(opt("web.telemetry-path", "PATH", "Path under which to expose metrics.".into()).default_value("/metrics").value_parser(parse_path))
        .arg(opt("web.max-requests", "N", "Maximum number of connections served at once; more get 503. 0 means no limit.".into()).default_value("40").value_parser(clap::value_parser!(usize)))
        .arg(opt("web.header-timeout", "DURATION", "How long a client may take to send its request headers (and to finish the TLS handshake).".into()).default_value("10s").value_parser(parse_duration))
        .arg(opt("web.config.file", "FILE", "Web config file for TLS and basic authentication, in the Prometheus exporter-toolkit format (tls_server_config, basic_auth_users); re-read on SIGHUP.".into()))
        .arg(opt("log.level", "LEVEL", "Only log messages with this severity or above: debug, info, warn, error.".into()).default_value("info").value_parser(parse_level))
        .arg(opt("log.format", "FORMAT", "Log line format: logfmt or json.".into()).default_value("logfmt").value_parser(parse_format))
        .arg(opt("path.procfs", "PATH", "procfs mountpoint.".into()).default_value("/proc"))
        .arg(opt("path.sysfs", "PATH", "sysfs mountpoint.".into()).default_value("/sys"))
        .arg(opt("path.udev.data", "PATH", "udev data path (disk model, serial and wwn for accel_disk_info).".into()).default_value("/run/udev/data"))
        .arg(
            Arg::new("collector.disable-defaults")
                .long("collector.disable-defaults")
                .action(ArgAction::SetTrue)
                .help("Disable every collector not enabled explicitly with --collector.<name>."),
        )
        .arg(opt("nvml.library", "PATH", "NVML library the gpu collector loads (e.g. tests/nvml-sim's libnvml_sim.so for a simulated node).".into()).default_value(accel_collectors::gpu::DEFAULT_LIBRARY))
        .arg(opt("collector.gpu.idle-threshold", "RATIO", "Utilisation (0-1) under which an allocated GPU counts as idle.".into()).default_value("0.05").value_parser(parse_ratio))
        .arg(opt("collector.gpu.max-processes", "N", "Most processes reported per GPU.".into()).default_value("32").value_parser(clap::value_parser!(usize)))
        .arg(opt("collector.process.match", "REGEX", "Also follow processes whose command name (/proc/PID/comm) matches this regexp, besides those holding GPUs (accel_process_*).".into()).value_parser(parse_regex))
        .arg(opt("collector.process.max", "N", "Most processes the process collector follows (GPU processes first).".into()).default_value("32").value_parser(clap::value_parser!(usize)))
        .arg(opt("collector.process.perf", "BOOL", "Count the followed processes' task clock, cycles and instructions with perf events (true or false).".into()).default_value("true").value_parser(clap::value_parser!(bool)))
        .arg(opt("collector.gpu.job-mapping-dir", "DIR", "Directory of GPU-to-job files, as dcgm-exporter's --hpc-job-mapping-dir reads them (one file per GPU index, or <gpu>.<gpu instance> for a MIG instance, one job id per line), written by a scheduler prolog; exported as accel_gpu_job_info. Watched in the background. Off by default.".into()))
        .arg(opt("collector.disk.device-include", "REGEX", "Regexp of block devices to include (overrides the exclude).".into()).value_parser(parse_regex))
        .arg(opt("collector.disk.device-exclude", "REGEX", "Regexp of block devices to exclude.".into()).default_value(accel_collectors::disk::DEFAULT_EXCLUDE).value_parser(parse_regex))
        .arg(opt("collector.network.device-include", "REGEX", "Regexp of network interfaces to include (overrides the exclude).".into()).value_parser(parse_regex))
        .arg(opt("collector.network.device-exclude", "REGEX", "Regexp of network interfaces to exclude.".into()).default_value(accel_collectors::network::DEFAULT_EXCLUDE).value_parser(parse_regex))
        .arg(opt("collector.cloud.provider", "PROVIDER", "Cloud whose metadata server gives maintenance and preemption notices: auto (from DMI, no network probe), gce, aws, azure or none.".into()).default_value("auto").value_parser(cloud::ProviderChoice::parse))
        .arg(opt("collector.cloud.gce.url", "URL", "GCE metadata base URL (http only).".into()).default_value(cloud::GCE_URL))
        .arg(opt("collector.cloud.aws.url", "URL", "AWS instance metadata base URL (http only).".into()).default_value(cloud::IMDS_URL))
        .arg(opt("collector.cloud.azure.url", "URL", "Azure instance metadata base URL (http only).".into()).default_value(cloud::IMDS_URL))
        .arg(opt("collector.cloud.timeout", "DURATION", "Connect and read deadline of one metadata request.".into()).default_value("2s").value_parser(parse_duration))
        .arg(opt("collector.cloud.poll-interval", "DURATION", "Interval between polls of the metadata endpoints that are not long-polled.".into()).default_value("5s").value_parser(parse_interval))
        .arg(opt("collector.cloud.long-poll-timeout", "DURATION", "How long a GCE long-poll (wait_for_change) waits for a change.".into()).default_value("60s").value_parser(parse_duration))
        .arg(opt("collector.kubernetes.socket", "PATH", "The kubelet's PodResources socket (mount its directory, /var/lib/kubelet/pod-resources, into the agent's container).".into()).default_value(kubernetes::DEFAULT_SOCKET))
        .arg(opt("collector.kubernetes.refresh-interval", "DURATION", "Interval between two calls of the kubelet PodResources API (List), on a background thread; a GPU that starts holding a process no known pod holds triggers an early call.".into()).default_value("10s").value_parser(parse_interval))
        .arg(opt("collector.kubernetes.timeout", "DURATION", "Deadline of one PodResources call.".into()).default_value("5s").value_parser(parse_duration))
        .arg(opt("disruption.notify-file", "FILE", "On a new preemption or terminate notice, write a JSON notice (provider, type, deadline, detected_at) to this file, atomically. Off by default.".into()))
        .arg(opt("events.socket", "PATH", "Unix datagram socket training jobs send progress events to (docs/goodput.md); empty to disable.".into()).default_value(accel_collectors::goodput::DEFAULT_SOCKET))
        .arg(opt("events.socket-group", "GROUP", "Group that owns the event socket (mode 0660): the users allowed to send events.".into()))
        .arg(opt("events.max-runs", "N", "Most training runs tracked at once; the oldest ended one makes room, else new runs are refused.".into()).default_value("32").value_parser(clap::value_parser!(usize)))
        .arg(opt("events.run-timeout", "DURATION", "A run with no event for this long is forgotten (its series disappear).".into()).default_value("1h").value_parser(parse_interval))
        .arg(opt("events.rate-limit", "EVENTS", "Events per second accepted from one sending process (bursts of twice as many); the agent takes at most 20 times this in all.".into()).default_value("1000").value_parser(parse_rate))
        .arg(opt("events.mfu-window", "DURATION", "Sliding window of steps over which accel_run_mfu_ratio is computed.".into()).default_value("5m").value_parser(parse_interval))
        .arg(opt("events.peak-flops", "SPEC", "Peak dense FLOP/s overriding the built-in table: MODEL:DTYPE=FLOPS[,DTYPE=FLOPS][;...], MODEL matched in the NVML name (e.g. \"A10G:bf16=70e12\").".into()).value_parser(accel_collectors::goodput::peak::parse_overrides))
        .arg(opt("disruption.notify-signal", "SIGNAL", "On a new preemption or terminate notice, send this signal (SIGUSR1, SIGUSR2, SIGTERM, SIGINT) to the processes holding GPUs (needs the same uid or CAP_KILL). Off by default.".into()).value_parser(cloud::parse_signal));
    for spec in registry() {
        let on: &'static str = Box::leak(format!("collector.{}", spec.name).into_boxed_str());
        let off: &'static str = Box::leak(format!("no-collector.{}", spec.name).into_boxed_str());
        let interval: &'static str =
            Box::leak(format!("collector.{}.interval", spec.name).into_boxed_str());
        let default = if spec.default_enabled {
            "enabled"
        } else {
            "disabled"
        };
        cmd = cmd
            .arg(
                Arg::new(on)
                    .long(on)
                    .action(ArgAction::SetTrue)
                    .overrides_with(off)
                    .help(format!(
                        "Enable the {} collector: {} (default: {default}).",
                        spec.name, spec.help
                    )),
            )
            .arg(
                Arg::new(off)
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
                .default_value(&*Box::leak(
                    humanize(spec.default_interval).into_boxed_str(),
                ))
                .value_parser(parse_interval),
            );
    }
    cmd
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() != 0 || d.as_secs() == 0 {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs())
    }
}

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

fn first_line(e: &clap::Error) -> String {
    let text = e.to_string();
    let line = text.lines().next().unwrap_or("bad arguments");
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

impl Config {
    /// Parses the command line (program name first), reading the config
    /// file it names. `Err` is a one-line message for exit code 2.
    pub fn from_args(args: Vec<OsString>) -> Result<Parsed, String> {
        Self::parse_with(command, args).map(|(parsed, _)| parsed)
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
        if a.header_timeout != b.header_timeout {
            out.push("web.header-timeout");
        }
        if self.log_format != new.log_format {
            out.push("log.format");
        }
        if format!("{:?}", self.options) != format!("{:?}", new.options) {
            out.push("collector options and paths");
        }
        let switches = |c: &Config| {
            c.collectors
                .iter()
                .map(|c| (c.spec.name, c.enabled, c.interval))
                .collect::<Vec<_>>()
        };
        if switches(self) != switches(new) {
            out.push("collectors and their intervals");
        }
        out
    }

    fn from_matches(m: &ArgMatches) -> Result<Self, String> {
        let s = |k: &str| m.get_one::<String>(k).cloned();
        let filter = |what: &str| {
            DeviceFilter::new(
                s(&format!("collector.{what}.device-include")).as_deref(),
                s(&format!("collector.{what}.device-exclude")).as_deref(),
            )
            .map_err(|e| e.to_string())
        };
        let options = Options {
            procfs: PathBuf::from(s("path.procfs").unwrap_or_default()),
            sysfs: PathBuf::from(s("path.sysfs").unwrap_or_default()),
            udev_data: PathBuf::from(s("path.udev.data").unwrap_or_default()),
            disk: filter("disk")?,
            network: filter("network")?,
            gpu: accel_collectors::gpu::GpuOptions {
                library: PathBuf::from(s("nvml.library").unwrap_or_default()),
                idle_threshold: *m
                    .get_one::<f64>("collector.gpu.idle-threshold")
                    .expect("has a default"),
                max_processes: *m
                    .get_one::<usize>("collector.gpu.max-processes")
                    .expect("has a default"),
                job_mapping_dir: s("collector.gpu.job-mapping-dir")
                    .filter(|d| !d.is_empty())
                    .map(PathBuf::from),
            },
            cloud: cloud::CloudOptions {
                provider: *m
                    .get_one::<cloud::ProviderChoice>("collector.cloud.provider")
                    .expect("has a default"),
                gce_url: s("collector.cloud.gce.url").unwrap_or_default(),
                aws_url: s("collector.cloud.aws.url").unwrap_or_default(),
                azure_url: s("collector.cloud.azure.url").unwrap_or_default(),
                timeout: *m
                    .get_one::<Duration>("collector.cloud.timeout")
                    .expect("has a default"),
                poll_interval: *m
                    .get_one::<Duration>("collector.cloud.poll-interval")
                    .expect("has a default"),
                long_poll_timeout: *m
                    .get_one::<Duration>("collector.cloud.long-poll-timeout")
                    .expect("has a default"),
                notify_file: s("disruption.notify-file")
                    .filter(|f| !f.is_empty())
                    .map(PathBuf::from),
                notify_signal: m.get_one::<i32>("disruption.notify-signal").copied(),
            },
            gpu_pids: Default::default(),
            process: accel_collectors::workload::WorkloadOptions {
                matcher: s("collector.process.match")
                    .map(|r| accel_collectors::workload::compile_match(&r))
                    .transpose()?,
                max: *m
                    .get_one::<usize>("collector.process.max")
                    .expect("has a default"),
                perf: *m
                    .get_one::<bool>("collector.process.perf")
                    .expect("has a default"),
                pids: Vec::new(),
            },
            kubernetes: kubernetes::KubernetesOptions {
                socket: PathBuf::from(s("collector.kubernetes.socket").unwrap_or_default()),
                refresh: *m
                    .get_one::<Duration>("collector.kubernetes.refresh-interval")
                    .expect("has a default"),
                timeout: *m
                    .get_one::<Duration>("collector.kubernetes.timeout")
                    .expect("has a default"),
            },
            gpus: Default::default(),
            pods: Default::default(),
            goodput: accel_collectors::goodput::GoodputOptions {
                socket: s("events.socket")
                    .filter(|f| !f.is_empty())
                    .map(PathBuf::from),
                socket_group: s("events.socket-group").filter(|g| !g.is_empty()),
                max_runs: *m
                    .get_one::<usize>("events.max-runs")
                    .expect("has a default"),
                run_timeout: *m
                    .get_one::<Duration>("events.run-timeout")
                    .expect("has a default"),
                rate_limit: *m
                    .get_one::<f64>("events.rate-limit")
                    .expect("has a default"),
                mfu_window: *m
                    .get_one::<Duration>("events.mfu-window")
                    .expect("has a default"),
                peak_flops: m
                    .get_one::<Vec<accel_collectors::goodput::peak::Override>>("events.peak-flops")
                    .cloned()
                    .unwrap_or_default(),
            },
        };
        let disable_defaults = m.get_flag("collector.disable-defaults");
        let collectors = registry()
            .iter()
            .map(|spec| {
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
                CollectorConfig {
                    spec,
                    enabled,
                    interval: *m
                        .get_one::<Duration>(&format!("collector.{}.interval", spec.name))
                        .expect("has a default"),
                }
            })
            .collect();
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
                header_timeout: *m
                    .get_one::<Duration>("web.header-timeout")
                    .expect("has a default"),
                security,
            },
            log_level: *m
                .get_one::<tracing::Level>("log.level")
                .expect("has a default"),
            log_format: *m.get_one::<LogFormat>("log.format").expect("has a default"),
            options,
            collectors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let g = &c.options.goodput;
        assert_eq!(
            g.socket.as_deref(),
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
        let g = &c.options.goodput;
        assert_eq!(g.socket, None);
        assert_eq!(g.mfu_window, Duration::from_secs(60));
        assert_eq!(
            accel_collectors::goodput::peak::peak("NVIDIA A10G", "bf16", &g.peak_flops),
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
}
