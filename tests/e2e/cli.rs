//! The command line: help, version, bad flags, the config file, start-up
//! failures and shutdown.

use std::process::Command;
use std::time::Duration;

use crate::util::{bin, Agent, TempDir};

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        // Never the default event socket under /run.
        .arg("--events.socket=")
        .args(args)
        .output()
        .expect("run accel-agent");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_explains_every_flag() {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    for flag in [
        "--web.listen-address",
        "--web.telemetry-path",
        "--web.max-requests",
        "--web.max-connections",
        "--web.header-timeout",
        "--web.idle-timeout",
        "--config.file",
        "--log.level",
        "--log.format",
        "--path.procfs",
        "--path.sysfs",
        "--collector.disk",
        "--collector.disk.interval",
        "--collector.disk.device-include",
        "--collector.disk.device-exclude",
        "--collector.network.device-exclude",
        "--collector.network.detail",
        "--collector.infiniband",
        "--collector.pressure",
        "--collector.cpu",
        "--collector.memory",
        "--collector.disable-defaults",
    ] {
        assert!(out.contains(flag), "--help lacks {flag}:\n{out}");
    }
    assert!(out.contains("[default: :9445]"), "{out}");
}

#[test]
fn version() {
    let (code, out, _) = run(&["--version"]);
    assert_eq!(code, 0);
    assert!(
        out.starts_with(&format!("accel-agent {}", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
}

#[test]
fn bad_flags_and_values_give_one_line_and_exit_2() {
    for args in [
        &["--no-such-flag"][..],
        &["--collector.disk.interval=fast"],
        &["--collector.cpu.interval=10ms"],
        &["--web.max-requests=lots"],
        &["--web.max-connections=-5"],
        &["--web.idle-timeout=forever"],
        &["--collector.disk.device-exclude=(unclosed"],
        &["--log.format=xml"],
        &["--config.file=/nonexistent/accel.toml"],
    ] {
        let (code, out, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("accel-agent: "), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn bad_config_file_names_the_key() {
    let dir = TempDir::new("badconf");
    let file = dir.0.join("accel.toml");
    std::fs::write(&file, "[web]\nlisten-adress = \":1\"\n").unwrap();
    let (code, _, err) = run(&["--config.file", file.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown key \"web.listen-adress\""), "{err}");
    std::fs::write(&file, "[collector.disk]\ninterval = \"5 s\"\n").unwrap();
    let (code, _, err) = run(&["--config.file", file.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("5 s"), "{err}");
}

#[test]
fn config_file_is_used_and_flags_override_it() {
    let dir = TempDir::new("conf");
    let file = dir.0.join("accel.toml");
    std::fs::write(
        &file,
        "web.telemetry-path = \"/m\"\n[collector.cpu]\nenabled = false\n[collector.memory]\nenabled = false\n",
    )
    .unwrap();
    let f = format!("--config.file={}", file.display());
    let agent = Agent::start(&[&f, "--collector.memory"]);
    let body = agent.get_ready("/m").text();
    assert!(
        body.contains("accel_collector_enabled{collector=\"cpu\"} 0"),
        "{body}"
    );
    assert!(
        body.contains("accel_collector_enabled{collector=\"memory\"} 1"),
        "{body}"
    );
    assert!(body.contains("accel_memory_total_bytes "));
    assert!(!body.contains("accel_cpu_seconds_total"));
    assert_eq!(agent.get("/metrics").status, 404);
}

#[test]
fn port_in_use_is_a_clear_error() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("--web.listen-address={}", held.local_addr().unwrap());
    let (code, _, err) = run(&[&addr]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("listening on 127.0.0.1:") && err.contains("in use"),
        "{err}"
    );
}

#[test]
fn sigterm_exits_cleanly_and_fast() {
    let agent = Agent::start(&[]);
    agent.wait_ready();
    let status = agent
        .terminate(Duration::from_secs(2))
        .expect("exited within 2 s");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn json_logs() {
    let dir = TempDir::new("jsonlog");
    let out = Command::new(bin())
        .args([
            "--log.format=json",
            "--web.listen-address=127.0.0.1:1",
            "--version",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    drop(dir);
    // A start that fails still logs its error as JSON.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = Command::new(bin())
        .args([
            "--log.format=json",
            "--events.socket=",
            &format!("--web.listen-address={}", held.local_addr().unwrap()),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    for line in err.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v.get("level").is_some(), "{line}");
    }
    assert!(err.contains("\"level\":\"ERROR\""), "{err}");
}

#[test]
fn sighup_does_not_stop_the_agent() {
    let agent = Agent::start(&[]);
    agent.wait_ready();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(agent.child.id() as i32, libc::SIGHUP) };
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(agent.get("/-/healthy").status, 200);
}

/// The binary with exactly `args` (a command must come first).
fn raw(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run accel-agent");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `--help` lists the commands; `help` and `help COMMAND` print the help;
/// an unknown command is one line and exit 2.
#[test]
fn help_lists_the_commands() {
    let (code, daemon, _) = raw(&["--help"]);
    assert_eq!(code, 0);
    let commands = daemon
        .split("Commands:")
        .nth(1)
        .expect("a Commands section");
    assert!(
        commands.contains("  profile  ") && commands.contains("  help  "),
        "{daemon}"
    );
    let (code, out, _) = raw(&["help"]);
    assert_eq!((code, out.as_str()), (0, daemon.as_str()));
    let (code, profile, _) = raw(&["help", "profile"]);
    assert_eq!(code, 0);
    let (_, profile_help, _) = raw(&["profile", "--help"]);
    assert_eq!(profile, profile_help);
    for (args, what) in [
        (&["help", "nope"][..], "no command \"nope\""),
        (&["help", "profile", "x"][..], "one command at most"),
        (&["prfile"][..], "did you mean profile?"),
        (
            &["--log.level=debug", "profile"][..],
            "the command goes first",
        ),
    ] {
        let (code, out, err) = raw(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            out.is_empty() && err.trim_end().lines().count() == 1,
            "{args:?}: {err}"
        );
        assert!(err.contains(what), "{args:?}: {err}");
    }
}

/// `profile --help`: its own flags first, and none of the daemon's that
/// do nothing in a profile.
#[test]
fn profile_help_shows_its_own_flags_first() {
    let (code, out, _) = raw(&["profile", "--help"]);
    assert_eq!(code, 0);
    let first_section = out
        .split("\n\n")
        .find(|s| s.starts_with("Options:"))
        .unwrap();
    for own in ["--duration", "--interval", "--pid", "--html", "--json"] {
        assert!(first_section.contains(own), "{own} not first:\n{out}");
    }
    let at = |flag: &str| out.find(flag).unwrap_or_else(|| panic!("{flag}:\n{out}"));
    assert!(at("--json") < at("--path.procfs"), "{out}");
    for useless in [
        "--web.max-requests",
        "--web.max-connections",
        "--web.header-timeout",
        "--web.idle-timeout",
        "--web.config.file",
        "--collector.gpu.interval",
        "--collector.disk.interval",
    ] {
        assert!(
            !out.contains(useless),
            "profile --help shows {useless}:\n{out}"
        );
    }
    for useful in [
        "--nvml.library",
        "--path.procfs",
        "--collector.gpu",
        "--log.level",
    ] {
        assert!(out.contains(useful), "{useful}:\n{out}");
    }
}

/// Every value is checked when the flags are parsed, the listen address
/// included, before anything starts: one line, exit 2; a misspelt flag
/// gets a suggestion; profile refuses fewer than two intervals.
#[test]
fn values_are_checked_at_parse_time_with_suggestions() {
    for (args, what) in [
        (&["--web.listen-address=9445"][..], "not host:port"),
        (&["--web.listen-address=:http"][..], "not host:port"),
        (
            &["profile", "--web.listen-address=9445", "--duration=1s"][..],
            "not host:port",
        ),
        (
            &["--collector.gpu.intervall=1s"][..],
            "did you mean --collector.gpu.interval?",
        ),
        (&["profile", "--duraton=5s"][..], "did you mean --duration?"),
        (
            &["profile", "--duration=1s", "--interval=5s"][..],
            "shorter than two intervals",
        ),
        (
            &["profile", "--duration=150ms", "--interval=100ms"][..],
            "shorter than two intervals",
        ),
    ] {
        let t = std::time::Instant::now();
        let (code, out, err) = raw(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(what), "{args:?}: {err}");
        // Refused before any collector or server started.
        assert!(t.elapsed() < Duration::from_secs(2), "{args:?}");
    }
}
