//! Dashboards and rules (dashboards/), proven against the agent's real
//! output: promtool lints and unit-tests the rules, every PromQL expression
//! parses and names only metrics the agent exports, every dashboard is
//! well formed, and a real Prometheus scraping simulated nodes returns data
//! for every panel and fires the alerts that must fire.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::gpu::sim_lib;
use crate::prometheus::Prometheus;
use crate::util::{fixtures, require, root, Agent, TempDir};

fn files(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no *.{ext} in {dir}");
    v
}

fn rule_files() -> Vec<PathBuf> {
    files("dashboards/rules", "yml")
}

fn dashboards() -> Vec<(PathBuf, Value)> {
    files("dashboards", "json")
        .into_iter()
        .map(|p| {
            let v = serde_json::from_str(&std::fs::read_to_string(&p).unwrap())
                .unwrap_or_else(|e| panic!("{}: invalid JSON: {e}", p.display()));
            (p, v)
        })
        .collect()
}

/// Every panel, rows' nested panels included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        out.push(p);
        for q in p["panels"].as_array().into_iter().flatten() {
            out.push(q);
        }
    }
    out
}

/// A rule file as (kind, name, expr, for) per rule.
fn rules(path: &Path) -> Vec<(String, String, String, Option<String>)> {
    let y: serde_norway::Value = serde_norway::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    for g in y["groups"].as_sequence().expect("groups") {
        for r in g["rules"].as_sequence().expect("rules") {
            let (kind, name) = match (r.get("alert"), r.get("record")) {
                (Some(a), _) => ("alert", a.as_str().unwrap().to_owned()),
                (_, Some(n)) => ("record", n.as_str().unwrap().to_owned()),
                _ => panic!("{}: rule without alert or record: {r:?}", path.display()),
            };
            let expr = r["expr"].as_str().expect("expr").to_owned();
            let r#for = r.get("for").and_then(|f| f.as_str()).map(str::to_owned);
            out.push((kind.to_owned(), name, expr, r#for));
        }
    }
    out
}

/// Grafana's variables replaced by values Prometheus accepts.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval_ms", "15000")
        .replace("$__interval", "15s")
        .replace("$__range", "5m")
        .replace("${instance:regex}", ".*")
        .replace("${gpu:regex}", ".*")
        .replace("$instance", ".*")
        .replace("${instance}", ".*")
        .replace("$gpu", ".*")
        .replace("${gpu}", ".*")
        .replace("$run", ".*")
}

/// Every dashboard query (substituted), with where it comes from.
fn dashboard_queries() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, d) in dashboards() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        for p in panels(&d) {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str().filter(|e| !e.trim().is_empty()) {
                    out.push((
                        format!("{name}: panel {} ({})", p["id"], p["title"]),
                        substitute(e),
                    ));
                }
            }
        }
    }
    assert!(out.len() > 30, "only {} dashboard queries", out.len());
    out
}

/// Families the agent exports only in a situation no golden output
/// freezes, each with the tests that see it exported.
const SITUATIONAL: &[&str] = &[
    // Only while a collector is stale (docs/metrics.md, "Lean by
    // default"): watchdog.rs and faults.rs wait for it at 1 on a hung GPU
    // and a hung disk read.
    "accel_collector_stale",
];

/// Metric families the agent exports, from every golden output (a
/// histogram's as its `_bucket`, `_sum` and `_count` series), and the
/// [`SITUATIONAL`] ones.
fn exported_families() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for name in SITUATIONAL {
        assert!(
            accel_agent::state::FAMILIES.iter().any(|f| f.name == *name),
            "{name} is not declared"
        );
        names.insert((*name).to_owned());
    }
    for p in files("tests/golden", "prom") {
        for line in std::fs::read_to_string(&p).unwrap().lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut f = rest.split(' ');
                let name = f.next().unwrap();
                if f.next() == Some("histogram") {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{suffix}"));
                    }
                } else {
                    names.insert(name.to_owned());
                }
            }
        }
    }
    names
}

/// Metric names an expression uses: identifiers that are not functions,
/// keywords, label names or matcher values. Recording-rule names (with
/// `:`) and `accel_` names are what matter here.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Drop string literals and label matchers/groupings first.
    let mut cleaned = String::new();
    let mut depth_brace = 0;
    let mut in_str = false;
    for c in expr.chars() {
        match c {
            '"' => in_str = !in_str,
            _ if in_str => {}
            '{' => depth_brace += 1,
            '}' => depth_brace -= 1,
            _ if depth_brace > 0 => {}
            c => cleaned.push(c),
        }
    }
    let mut out = BTreeSet::new();
    let re_ident = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let tokens: Vec<&str> = cleaned
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|t| !t.is_empty() && re_ident(t))
        .collect();
    for t in tokens {
        // Durations such as a subquery's `[5m:1m]` are not names.
        if t.starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        if t.starts_with("accel_") || (t.contains(':') && !t.starts_with(':')) {
            out.insert(t.to_owned());
        }
    }
    out
}

#[test]
fn promtool_checks_the_rules_clean() {
    let promtool = require("promtool");
    let out = Command::new(&promtool)
        .args(["check", "rules"])
        .args(rule_files())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(!text.to_lowercase().contains("warning"), "{text}");
}

#[test]
fn promtool_unit_tests_cover_every_alert() {
    let promtool = require("promtool");
    let tests = files("dashboards/tests", "yml");
    let out = Command::new(&promtool)
        .current_dir(root().join("dashboards/tests"))
        .args(["test", "rules"])
        .args(&tests)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool test rules:\n{text}");
    let all_tests: String = tests
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    let mut untested = Vec::new();
    for path in rule_files() {
        for (kind, name, _, _) in rules(&path) {
            if kind == "alert" && !all_tests.contains(&format!("alertname: {name}")) {
                untested.push(name);
            }
        }
    }
    assert!(
        untested.is_empty(),
        "alerts without a promtool test: {untested:?}"
    );
}

#[test]
fn every_alert_has_severity_summary_description_and_runbook() {
    for path in rule_files() {
        let y: serde_norway::Value =
            serde_norway::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for g in y["groups"].as_sequence().unwrap() {
            for r in g["rules"].as_sequence().unwrap() {
                let Some(name) = r.get("alert") else { continue };
                let sev = r["labels"]["severity"].as_str().unwrap_or_default();
                assert!(
                    ["critical", "warning", "info"].contains(&sev),
                    "{name:?}: severity {sev:?}"
                );
                for a in ["summary", "description", "runbook"] {
                    let v = r["annotations"][a].as_str().unwrap_or_default();
                    assert!(
                        v.len() > 10,
                        "{name:?}: annotation {a} missing or too short"
                    );
                }
            }
        }
    }
}

#[test]
fn every_expression_parses_and_names_only_exported_metrics() {
    let exported = exported_families();
    let mut recorded = BTreeSet::new();
    let mut exprs: Vec<(String, String)> = Vec::new();
    for path in rule_files() {
        for (kind, name, expr, _) in rules(&path) {
            if kind == "record" {
                recorded.insert(name.clone());
            }
            exprs.push((format!("{}: {kind} {name}", path.display()), expr));
        }
    }
    exprs.extend(dashboard_queries());
    let mut unknown = Vec::new();
    for (whence, expr) in &exprs {
        for m in metric_names(expr) {
            if !exported.contains(&m) && !recorded.contains(&m) {
                unknown.push(format!("{whence}: {m}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "names the agent does not export:\n{}",
        unknown.join("\n")
    );

    // Parse every expression: as recording rules, through promtool.
    let dir = TempDir::new("exprs");
    let mut yaml = String::from("groups:\n  - name: parse\n    rules:\n");
    for (i, (_, expr)) in exprs.iter().enumerate() {
        yaml.push_str(&format!(
            "      - record: parse_check_{i}\n        expr: {}\n",
            serde_json::to_string(expr).unwrap()
        ));
    }
    let file = dir.0.join("exprs.yml");
    std::fs::write(&file, yaml).unwrap();
    let out = Command::new(require("promtool"))
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        // Name the expressions promtool refused.
        let bad: Vec<String> = exprs
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                text.contains(&format!("parse_check_{i}\""))
                    || text.contains(&format!("parse_check_{i}:"))
            })
            .map(|(_, (w, e))| format!("{w}: {e}"))
            .collect();
        panic!("promtool refused:\n{text}\n{}", bad.join("\n"));
    }
}

#[test]
fn the_metric_name_check_is_not_vacuous() {
    let m = metric_names("sum by (instance) (rate(accel_gpu_busy_seconds_total{gpu=~\"accel_fake\"}[5m])) / instance:accel_gpu:ratio + max_over_time(x[5m:1m])");
    assert_eq!(
        m.into_iter().collect::<Vec<_>>(),
        ["accel_gpu_busy_seconds_total", "instance:accel_gpu:ratio"]
    );
    assert!(!exported_families().contains("accel_gpu_nonexistent_total"));
    assert!(exported_families().contains("accel_gpu_busy_seconds_total"));
    assert!(exported_families().contains("accel_disk_read_bytes_total"));
    assert!(exported_families().contains("accel_run_step_seconds_bucket"));
    assert!(!exported_families().contains("accel_run_step_seconds"));
}

#[test]
fn dashboards_are_well_formed() {
    let mut uids = BTreeSet::new();
    for (path, d) in dashboards() {
        let name = path.display().to_string();
        let uid = d["uid"].as_str().unwrap_or_default();
        assert!(!uid.is_empty(), "{name}: no uid");
        assert!(uids.insert(uid.to_owned()), "{name}: uid {uid} used twice");
        assert!(
            d["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{name}: no title"
        );
        let vars = d["templating"]["list"]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: no templating"));
        let ds = vars.iter().find(|v| v["type"] == "datasource");
        assert!(
            ds.is_some_and(|v| v["query"] == "prometheus"),
            "{name}: no prometheus datasource variable"
        );
        assert!(
            vars.iter().any(|v| v["name"] == "instance"),
            "{name}: no instance variable"
        );
        let mut ids = BTreeSet::new();
        for p in panels(&d) {
            let id = p["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("{name}: panel without id: {}", p["title"]));
            assert!(ids.insert(id), "{name}: panel id {id} used twice");
            let kind = p["type"].as_str().unwrap_or_default();
            if matches!(kind, "row" | "text") {
                continue;
            }
            let title = p["title"].as_str().unwrap_or_default();
            assert!(!title.is_empty(), "{name}: panel {id} has no title");
            assert_eq!(
                p["datasource"]["uid"], "${datasource}",
                "{name}: panel {title:?} datasource"
            );
            let targets = p["targets"].as_array().map_or(0, Vec::len);
            assert!(targets > 0, "{name}: panel {title:?} has no query");
            if kind != "table" {
                let unit = p["fieldConfig"]["defaults"]["unit"]
                    .as_str()
                    .unwrap_or_default();
                assert!(!unit.is_empty(), "{name}: panel {title:?} has no unit");
            }
        }
    }
    assert_eq!(uids.len(), 4, "{uids:?}");
}

/// The shipped rules with every `for:` shortened, so a test can see alerts
/// fire within seconds (the shipped durations stay as they are).
fn rules_for_test(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(|l| match l.trim_start().strip_prefix("for:") {
            Some(_) => format!("{}for: 1s", &l[..l.len() - l.trim_start().len()]),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn sim_agent_on_fixtures(scenario: &str, listen: &str, extra: &[&str]) -> Agent {
    let fx = fixtures();
    let lib = format!("--nvml.library={}", sim_lib().display());
    let procfs = format!("--path.procfs={}", fx.join("proc").display());
    let sysfs = format!("--path.sysfs={}", fx.join("sys").display());
    let udev = format!("--path.udev.data={}", fx.join("run/udev/data").display());
    Agent::start_env(
        &[
            listen,
            &lib,
            &procfs,
            &sysfs,
            &udev,
            "--collector.gpu.interval=500ms",
            "--collector.cpu.interval=1s",
            "--collector.disk.interval=1s",
            "--collector.network.interval=1s",
            "--collector.network.device-exclude=^$",
            "--collector.infiniband.interval=1s",
            "--collector.pressure.interval=1s",
            "--collector.memory.interval=1s",
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .collect::<Vec<_>>(),
        &[("NVML_SIM_SCENARIO", scenario)],
    )
}

#[test]
fn prometheus_with_the_rules_serves_every_panel_and_fires_the_alerts() {
    // Four simulated nodes: a busy training node on the host fixtures (and
    // on GCE, with a migration announced), one
    // whose GPUs are held but idle, one that loses GPU 3 (with XID 79), and
    // a MIG node whose free instance gets an idle process.
    // A fifth agent reads this machine's real mounts: statfs has no
    // fixture tree, and the fixture mount table has no /dev/shm.
    // A sixth is a TPU host (tests/tpu-sim) whose second runtime port
    // answers garbage.
    let ports: Vec<String> = (0..6)
        .map(|_| format!("127.0.0.1:{}", crate::util::free_port()))
        .collect();
    let targets: Vec<&str> = ports.iter().map(String::as_str).collect();
    let rules: Vec<(String, String)> = rule_files()
        .iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                rules_for_test(p),
            )
        })
        .collect();
    let rules: Vec<(&str, String)> = rules.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let prom = Prometheus::start_with(&targets, &rules);
    let listen = |i: usize| format!("--web.listen-address={}", ports[i]);
    // gpu-lost, later: Prometheus scrapes the node before its XID 79.
    let dir = TempDir::new("late-loss");
    let late = dir.0.join("gpu-lost-late.toml");
    let scenario =
        std::fs::read_to_string(root().join("tests/nvml-sim/scenarios/gpu-lost.toml")).unwrap();
    assert!(scenario.contains("lost_at = 3") && scenario.contains("back_at = 8"));
    // And GPU 1 power-capped throughout, so the throttle panels have data.
    let scenario = scenario.replace("lost_at = 3", "lost_at = 8").replace("back_at = 8", "back_at = 14")
        + "\n[[faults]]\ngpu = 1\nthrottle = [{ from = 0, until = 1000, reasons = [\"sw_power_cap\"] }]\n";
    std::fs::write(&late, scenario).unwrap();
    let mig = dir.0.join("mig-idle.toml");
    let scenario =
        std::fs::read_to_string(root().join("tests/nvml-sim/scenarios/mig-h100.toml")).unwrap();
    let free = "[[gpus.mig]]\nprofile = \"2g.20gb\"\nmemory_mib = 20096\n\n";
    assert!(
        scenario.contains(free),
        "mig-h100.toml changed: update this test"
    );
    let held = "[[gpus.mig]]\nprofile = \"2g.20gb\"\nmemory_mib = 20096\nprocesses = [{ pid = 7250, name = \"python3\", used_memory_mib = 500 }]\n\n";
    std::fs::write(&mig, scenario.replace(free, held)).unwrap();
    // The training node is on GCE, whose metadata server (a fake on
    // loopback) announces a live migration.
    let gce = crate::cloud::gce_fake();
    gce.set(
        "/computeMetadata/v1/instance/maintenance-event",
        200,
        "MIGRATE_ON_HOST_MAINTENANCE",
    );
    let gce_url = format!(
        "--collector.cloud.gce.url={}",
        gce.url("/computeMetadata/v1")
    );
    let cloud = [
        "--collector.cloud.provider=gce",
        gce_url.as_str(),
        "--collector.cloud.poll-interval=500ms",
    ];
    // The fifth also probes storage: a scratch directory, and one that
    // does not exist (AccelStorageProbeFailing).
    let probed = TempDir::new("dashboards-probe");
    let probe_ok = format!("--collector.storage-probe.path={}", probed.0.display());
    let probe_missing = format!(
        "--collector.storage-probe.path={}",
        probed.0.join("missing").display()
    );
    let (tpu_good, tpu_bad) = (
        crate::tpu::sim("v5e-8-training"),
        crate::tpu::sim("malformed"),
    );
    let agents = [
        sim_agent_on_fixtures("8xh100-training", &listen(0), &cloud),
        sim_agent_on_fixtures("idle-allocated", &listen(1), &[]),
        sim_agent_on_fixtures(late.to_str().unwrap(), &listen(2), &[]),
        sim_agent_on_fixtures(mig.to_str().unwrap(), &listen(3), &[]),
        Agent::start(&[
            &listen(4),
            "--collector.disable-defaults",
            "--collector.filesystem",
            "--collector.filesystem.interval=1s",
            "--collector.storage-probe",
            &probe_ok,
            &probe_missing,
            "--collector.storage-probe.interval=1s",
        ]),
        crate::tpu::agent(&[tpu_good.1, tpu_bad.1], &[&listen(5)]),
    ];
    for a in &agents {
        a.wait_ready();
    }
    // A training run on the busy node sends events for the Goodput
    // dashboard and the goodput recording rules.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let sock = agents[0].events_socket.clone().expect("an event socket");
        let stop = stop.clone();
        std::thread::spawn(move || crate::goodput::training_traffic(&sock, &stop))
    };

    // Alerts seen firing while the scenarios play out.
    let mut fired: BTreeSet<(String, String)> = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(25);
    let want = [
        ("AccelGPUAllocatedIdle", ports[1].as_str()),
        ("AccelGPULost", ports[2].as_str()),
        ("AccelGPUXidCritical", ports[2].as_str()),
        ("AccelGPUMIGInstanceIdle", ports[3].as_str()),
        ("AccelNodeMaintenancePending", ports[0].as_str()),
        ("AccelStorageProbeFailing", ports[4].as_str()),
    ];
    while Instant::now() < deadline {
        for (labels, _) in prom.query("ALERTS{alertstate=\"firing\"}") {
            let name = labels["alertname"].as_str().unwrap_or_default().to_owned();
            let instance = labels
                .get("instance")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned();
            fired.insert((name, instance));
        }
        let all_seen = want
            .iter()
            .all(|(n, i)| fired.contains(&(n.to_string(), i.to_string())));
        if all_seen {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    for (name, instance) in want {
        assert!(
            fired.contains(&(name.to_owned(), instance.to_owned())),
            "{name} never fired for {instance}; fired: {fired:#?}\nALERTS: {:?}\nXID series: {:?}\n--- prometheus log ---\n{}",
            prom.query_any("ALERTS"),
            prom.query_any(&format!("accel_gpu_xid_errors_total{{xid=\"79\",gpu=\"3\",instance=\"{}\"}}[30s]", ports[2])),
            prom.log_text()
        );
    }
    // ...and not where it must not.
    for (name, instance) in &fired {
        assert!(
            !(name == "AccelGPUAllocatedIdle" && instance == &ports[0]),
            "the busy node was reported idle"
        );
        assert!(
            !(name == "AccelGPULost" && instance != &ports[2]),
            "{name} on {instance}"
        );
    }

    // Every dashboard query returns data from at least one node (the
    // goodput rules need a few evaluations of the run's rates first).
    let deadline = Instant::now() + Duration::from_secs(30);
    let empty = loop {
        let mut empty = Vec::new();
        for (whence, expr) in dashboard_queries() {
            if prom.query_any(&expr).is_empty() {
                empty.push(format!("{whence}: {expr}"));
            }
        }
        if empty.is_empty() || Instant::now() > deadline {
            break empty;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    traffic.join().unwrap();
    assert!(
        empty.is_empty(),
        "dashboard queries without data:\n{}",
        empty.join("\n")
    );
}
