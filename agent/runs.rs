//! Run events in `accel-agent profile`: what the training loop itself said
//! (issue 7's event socket) during the profile — steps, step time, the share
//! spent waiting for input (`data_wait`), runtime goodput and MFU.
//!
//! The profile's own goodput collector listens on the event socket when no
//! daemon does. When the daemon holds the socket, the profile reads the
//! daemon's accel_run_* series over HTTP at its start and end instead.

use std::collections::BTreeMap;
use std::time::Duration;

use accel_collectors::goodput::export::{
    RUN_ELAPSED, RUN_MFU, RUN_PHASE_SECONDS, RUN_PRODUCTIVE, RUN_STEPS, RUN_STEP_SECONDS,
};
use accel_collectors::http::{self, Limits};
use accel_collectors::Family;

/// The prefix of the run families (`accel_run_*`): the goodput collector's.
const RUN_PREFIX: &str = accel_collectors::goodput::SPEC.prefixes[0];
use serde::Serialize;

/// One observed series: name (with a histogram's suffix), labels, value.
pub type Obs = (String, Vec<(String, String)>, f64);

/// A run's signals over the profile.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RunSummary {
    pub run: String,
    /// `events` (the profile's own socket) or `daemon` (read from the agent).
    pub source: String,
    pub ranks: usize,
    /// Steps during the profile, summed over ranks.
    pub steps: f64,
    pub mean_step_seconds: Option<f64>,
    /// data_wait seconds over step seconds during the profile.
    pub data_wait_share: Option<f64>,
    /// Productive over elapsed seconds during the profile.
    pub runtime_goodput: Option<f64>,
    /// accel_run_mfu_ratio at the end.
    pub mfu: Option<f64>,
}

/// The series of `families`, flattened.
pub fn flatten(families: &[Family]) -> Vec<Obs> {
    let mut out = Vec::new();
    for f in families.iter().filter(|f| f.name.starts_with(RUN_PREFIX)) {
        for s in &f.series {
            out.push((
                format!("{}{}", f.name, s.suffix),
                s.labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.clone()))
                    .collect(),
                s.value,
            ));
        }
    }
    out
}

/// Parses accel_run_* lines of the text exposition format.
pub fn parse_text(text: &str) -> Vec<Obs> {
    let mut out = Vec::new();
    for line in text.lines() {
        if !line.starts_with(RUN_PREFIX) {
            continue;
        }
        if let Some(o) = parse_line(line) {
            out.push(o);
        }
    }
    out
}

fn parse_line(line: &str) -> Option<Obs> {
    let (name, rest) = match line.find('{') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => {
            let (n, v) = line.split_once(' ')?;
            return Some((n.to_owned(), Vec::new(), v.trim().parse().ok()?));
        }
    };
    let mut labels = Vec::new();
    let mut chars = rest.char_indices().peekable();
    let end;
    loop {
        // key
        let start = chars.peek()?.0;
        let mut key_end = start;
        for (i, c) in chars.by_ref() {
            if c == '=' {
                key_end = i;
                break;
            }
        }
        let key = rest[start..key_end].trim_start_matches(',').to_owned();
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        let mut escaped = false;
        for (_, c) in chars.by_ref() {
            match (escaped, c) {
                (true, 'n') => {
                    value.push('\n');
                    escaped = false;
                }
                (true, c) => {
                    value.push(c);
                    escaped = false;
                }
                (false, '\\') => escaped = true,
                (false, '"') => break,
                (false, c) => value.push(c),
            }
        }
        labels.push((key, value));
        match chars.next() {
            Some((_, ',')) => {
                if chars.peek().is_some_and(|(_, c)| *c == '}') {
                    end = chars.next().map(|(i, _)| i);
                    break;
                }
            }
            Some((i, '}')) => {
                end = Some(i);
                break;
            }
            _ => return None,
        }
    }
    let value = rest[end? + 1..].split_whitespace().next()?.parse().ok()?;
    Some((name.to_owned(), labels, value))
}

/// How long a scrape of the daemon may take, and how much it may read.
const DAEMON: Limits = Limits {
    connect: Duration::from_secs(1),
    read: Duration::from_secs(5),
    total: Duration::from_secs(60),
    max_body: 64 << 20,
};

/// GETs the daemon's metrics over plain HTTP (the daemon this profile's
/// flags describe: `--web.listen-address`, `--web.telemetry-path`) with the
/// project's one HTTP client ([`accel_collectors::http`]); a status other
/// than 200, a malformed or truncated answer, or a body over the bound is
/// an error.
pub fn scrape_daemon(listen: &str, path: &str) -> Result<Vec<Obs>, String> {
    let addr = if let Some(port) = listen.strip_prefix(':') {
        format!("127.0.0.1:{port}")
    } else if let Some(rest) = listen.strip_prefix("0.0.0.0:") {
        format!("127.0.0.1:{rest}")
    } else if let Some(rest) = listen.strip_prefix("[::]:") {
        format!("[::1]:{rest}")
    } else {
        listen.to_owned()
    };
    let url = format!("http://{addr}{path}");
    let r = http::request_with("GET", &url, &[("accept", "text/plain")], &DAEMON)
        .map_err(|e| format!("{addr}: {e}"))?;
    if r.status != 200 {
        return Err(format!("{addr}: HTTP status {}", r.status));
    }
    Ok(parse_text(&r.body))
}

fn label<'a>(o: &'a Obs, key: &str) -> Option<&'a str> {
    o.1.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Sums `name` per run over the matching series.
fn per_run(obs: &[Obs], name: &str, filter: &dyn Fn(&Obs) -> bool) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for o in obs.iter().filter(|o| o.0 == name && filter(o)) {
        if let Some(run) = label(o, "run") {
            *out.entry(run.to_owned()).or_insert(0.0) += o.2;
        }
    }
    out
}

/// The runs seen at the end, with their change since the start.
pub fn summarise(first: &[Obs], last: &[Obs], source: &str) -> Vec<RunSummary> {
    let any = |_: &Obs| true;
    let delta = |name: &str, filter: &dyn Fn(&Obs) -> bool| {
        let a = per_run(first, name, filter);
        let b = per_run(last, name, filter);
        b.into_iter()
            .map(|(run, v)| {
                let before = a.get(&run).copied().unwrap_or(0.0);
                // A counter that went down restarted (an agent restart):
                // count from zero.
                let d = if v >= before { v - before } else { v };
                (run, d)
            })
            .collect::<BTreeMap<String, f64>>()
    };
    let steps = delta(RUN_STEPS.name, &any);
    let step_sum = delta(&format!("{}_sum", RUN_STEP_SECONDS.name), &any);
    let wait = delta(RUN_PHASE_SECONDS.name, &|o| {
        label(o, "phase") == Some("data_wait")
    });
    let productive = delta(RUN_PRODUCTIVE.name, &any);
    let elapsed = delta(RUN_ELAPSED.name, &any);
    let mut ranks: BTreeMap<String, usize> = BTreeMap::new();
    for o in last.iter().filter(|o| o.0 == RUN_STEPS.name) {
        if let Some(run) = label(o, "run") {
            *ranks.entry(run.to_owned()).or_default() += 1;
        }
    }
    let mfu: BTreeMap<String, f64> = last
        .iter()
        .filter(|o| o.0 == RUN_MFU.name)
        .filter_map(|o| Some((label(o, "run")?.to_owned(), o.2)))
        .collect();
    let ratio = |a: Option<&f64>, b: Option<&f64>| match (a, b) {
        (Some(a), Some(b)) if *b > 0.0 => Some(a / b),
        _ => None,
    };
    ranks
        .into_iter()
        .map(|(run, n)| RunSummary {
            source: source.to_owned(),
            ranks: n,
            steps: steps.get(&run).copied().unwrap_or(0.0),
            mean_step_seconds: ratio(step_sum.get(&run), steps.get(&run)),
            data_wait_share: ratio(Some(wait.get(&run).unwrap_or(&0.0)), step_sum.get(&run))
                .map(|x| x.min(1.0)),
            runtime_goodput: ratio(productive.get(&run), elapsed.get(&run)).map(|x| x.min(1.0)),
            mfu: mfu.get(&run).copied(),
            run,
        })
        .filter(|r| r.steps > 0.0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LINES: &[&str] = &[
        r#"accel_run_steps_total{run="a,\"b\"",rank="0"} 12"#,
        r#"accel_run_step_seconds_bucket{run="r",rank="1",le="+Inf"} 4"#,
        "accel_run_x 3.5",
        r#"accel_run_mfu_ratio{run="r\nx",dtype="bf16"} 0.41"#,
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]

        /// What `profile` reads from the daemon (or whatever answers on its
        /// port) never panics the parser: arbitrary text, and valid lines
        /// with characters changed, cut or added.
        #[test]
        fn metrics_text_never_panics(text in "(accel_run_[a-z_]{0,8}\\PC{0,40}\n?){0,4}") {
            for o in parse_text(&text) {
                prop_assert!(o.0.starts_with("accel_run_"));
            }
        }

        #[test]
        fn mutated_lines_never_panic(line in accel_collectors::testing::mutated_text(LINES)) {
            let _ = parse_line(&line);
            let _ = parse_text(&format!("{line}\n{line}"));
        }
    }

    #[test]
    fn parses_exposition_lines() {
        let o = parse_line(r#"accel_run_steps_total{run="a,\"b\"",rank="0"} 12"#).unwrap();
        assert_eq!(o.0, "accel_run_steps_total");
        assert_eq!(o.1[0], ("run".into(), "a,\"b\"".into()));
        assert_eq!(o.1[1], ("rank".into(), "0".into()));
        assert_eq!(o.2, 12.0);
        assert_eq!(parse_line("accel_run_x 3.5").unwrap().2, 3.5);
        assert!(parse_line(r#"accel_run_x{run="a} 1"#).is_none());
        let h =
            parse_line(r#"accel_run_step_seconds_bucket{run="r",rank="1",le="+Inf"} 4"#).unwrap();
        assert_eq!(h.1.len(), 3);
    }

    #[test]
    fn deltas_per_run() {
        let obs = |steps: f64, sum: f64, wait: f64| -> Vec<Obs> {
            let l = |extra: &[(&str, &str)]| {
                let mut v = vec![
                    ("run".to_owned(), "r".to_owned()),
                    ("rank".to_owned(), "0".to_owned()),
                ];
                v.extend(
                    extra
                        .iter()
                        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned())),
                );
                v
            };
            vec![
                ("accel_run_steps_total".into(), l(&[]), steps),
                ("accel_run_step_seconds_sum".into(), l(&[]), sum),
                (
                    "accel_run_phase_seconds_total".into(),
                    l(&[("phase", "data_wait")]),
                    wait,
                ),
                (
                    "accel_run_phase_seconds_total".into(),
                    l(&[("phase", "eval")]),
                    100.0,
                ),
            ]
        };
        let r = summarise(&obs(10.0, 20.0, 2.0), &obs(20.0, 40.0, 8.0), "events");
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].steps, 10.0);
        assert_eq!(r[0].mean_step_seconds, Some(2.0));
        assert_eq!(r[0].data_wait_share, Some(0.3));
        // A run that began during the profile counts from zero.
        let r = summarise(&[], &obs(5.0, 10.0, 5.0), "daemon");
        assert_eq!(r[0].data_wait_share, Some(0.5));
        // No step during the profile: not reported.
        assert!(summarise(&obs(5.0, 10.0, 1.0), &obs(5.0, 10.0, 1.0), "events").is_empty());
    }

    #[test]
    fn an_absent_daemon_is_an_error_in_time() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let t = std::time::Instant::now();
        let e = scrape_daemon(&format!(":{port}"), "/metrics").unwrap_err();
        assert!(e.starts_with(&format!("127.0.0.1:{port}: connect")), "{e}");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
}
