//! The endpoints each provider's metadata server is polled on, and the
//! parsing of their answers into [`Notice`]s.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::timefmt;
use super::{now_unix, Ctx, Endpoint, Kind, Notice, Provider};
use crate::http::{request, Response};

/// GCE gives a preempted instance 30 s before it stops.
const GCE_PREEMPTION_NOTICE: f64 = 30.0;

/// The endpoints polled for `p`, each on its own thread.
pub fn endpoints(p: Provider) -> Vec<Endpoint> {
    match p {
        Provider::Gce => vec![
            long_poll("maintenance-event", gce_maintenance_event),
            long_poll("preempted", gce_preempted),
            Endpoint::new("upcoming-maintenance", |ctx: &Ctx| {
                let r = gce_get(ctx, "instance/upcoming-maintenance", ctx.timeout)?;
                Ok((gce_upcoming(&r)?, ctx.interval))
            }),
        ],
        Provider::Aws => {
            let mut token: Option<(String, Instant)> = None;
            vec![Endpoint::new("aws-imds", move |ctx: &Ctx| {
                let r = aws_poll(ctx, &mut token);
                if r.is_err() {
                    token = None;
                }
                Ok((r?, ctx.interval))
            })]
        }
        Provider::Azure => {
            let mut name: Option<String> = None;
            vec![Endpoint::new("azure-scheduledevents", move |ctx: &Ctx| {
                Ok((azure_poll(ctx, &mut name)?, ctx.interval))
            })]
        }
    }
}

fn ok_or_status(r: Response, what: &str) -> Result<Response, String> {
    if r.status == 200 {
        Ok(r)
    } else {
        Err(format!("{what}: HTTP {}", r.status))
    }
}

fn gce_get(ctx: &Ctx, path: &str, timeout: Duration) -> Result<Response, String> {
    request(
        "GET",
        &format!("{}/{path}", ctx.base),
        &[("Metadata-Flavor", "Google")],
        timeout,
    )
    .map_err(|e| format!("{path}: {e}"))
}

/// A GCE value watched by long-poll: the first request reads it at once and
/// learns its ETag; the next ones wait (`wait_for_change`, `last_etag`) until
/// it changes or `timeout_sec` passes.
fn long_poll(name: &'static str, parse: fn(&str) -> Result<Vec<Notice>, String>) -> Endpoint {
    let mut etag: Option<String> = None;
    Endpoint::new(name, move |ctx: &Ctx| {
        let path = format!("instance/{name}");
        let started = Instant::now();
        let r = match &etag {
            None => gce_get(ctx, &path, ctx.timeout)?,
            Some(tag) => gce_get(
                ctx,
                &format!(
                    "{path}?wait_for_change=true&last_etag={tag}&timeout_sec={}",
                    ctx.long_poll.as_secs().max(1)
                ),
                ctx.long_poll + ctx.timeout,
            )?,
        };
        let r = ok_or_status(r, &path)?;
        let notices = match parse(r.body.trim()) {
            Ok(n) => n,
            Err(e) => {
                etag = None;
                return Err(format!("{path}: {e}"));
            }
        };
        let new_tag = r.header("etag").map(str::to_owned);
        // A server that answers at once with nothing changed must not make
        // this a busy loop.
        let wait = if new_tag.is_none()
            || (etag.is_some() && new_tag == etag && started.elapsed() < Duration::from_millis(500))
        {
            ctx.interval
        } else {
            Duration::ZERO
        };
        etag = new_tag;
        Ok((notices, wait))
    })
}

/// `instance/maintenance-event`.
pub fn gce_maintenance_event(body: &str) -> Result<Vec<Notice>, String> {
    let (ty, notify) = match body {
        "NONE" => return Ok(Vec::new()),
        "MIGRATE_ON_HOST_MAINTENANCE" => ("migrate", false),
        "TERMINATE_ON_HOST_MAINTENANCE" => ("terminate", true),
        other => {
            return Err(format!(
                "unexpected maintenance-event {:?}",
                truncate(other)
            ))
        }
    };
    let mut n = Notice::new(format!("gce:maintenance-event:{ty}"), Kind::Maintenance, ty);
    n.notify = notify;
    Ok(vec![n])
}

/// `instance/preempted`.
pub fn gce_preempted(body: &str) -> Result<Vec<Notice>, String> {
    match body {
        "FALSE" => Ok(Vec::new()),
        "TRUE" => {
            let mut n = Notice::new("gce:preempted".into(), Kind::Preemption, "preemption");
            n.deadline = Some((now_unix() + GCE_PREEMPTION_NOTICE).floor());
            Ok(vec![n])
        }
        other => Err(format!("unexpected preempted {:?}", truncate(other))),
    }
}

/// `instance/upcoming-maintenance`: 404 when nothing is scheduled.
pub fn gce_upcoming(r: &Response) -> Result<Vec<Notice>, String> {
    if r.status == 404 {
        return Ok(Vec::new());
    }
    if r.status != 200 {
        return Err(format!("upcoming-maintenance: HTTP {}", r.status));
    }
    let v: Value =
        serde_json::from_str(&r.body).map_err(|e| format!("upcoming-maintenance: {e}"))?;
    let o = v
        .as_object()
        .ok_or("upcoming-maintenance: not a JSON object")?;
    let s = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or_default();
    let ty = match s("type") {
        "SCHEDULED" => "scheduled",
        "UNSCHEDULED" => "unscheduled",
        _ => "other",
    };
    let mut n = Notice::new(
        format!(
            "gce:upcoming:{ty}:{}:{}",
            s("window_start_time"),
            s("maintenance_status")
        ),
        Kind::Maintenance,
        ty,
    );
    n.window_start = time_field(s("window_start_time"), "window_start_time")?;
    Ok(vec![n])
}

fn time_field(s: &str, what: &str) -> Result<Option<f64>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    timefmt::any(s)
        .map(Some)
        .ok_or_else(|| format!("{what}: bad timestamp {:?}", truncate(s)))
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

const AWS_TTL: u64 = 21600;

fn aws_poll(ctx: &Ctx, token: &mut Option<(String, Instant)>) -> Result<Vec<Notice>, String> {
    let fresh = matches!(token, Some((_, t)) if t.elapsed() < Duration::from_secs(AWS_TTL / 2));
    if !fresh {
        let ttl = AWS_TTL.to_string();
        let r = request(
            "PUT",
            &format!("{}/latest/api/token", ctx.base),
            &[("X-aws-ec2-metadata-token-ttl-seconds", &ttl)],
            ctx.timeout,
        )
        .map_err(|e| format!("token: {e}"))?;
        let r = ok_or_status(r, "token")?;
        let t = r.body.trim();
        if t.is_empty() || t.contains(char::is_whitespace) {
            return Err("token: malformed".into());
        }
        *token = Some((t.to_owned(), Instant::now()));
    }
    let tok = token.as_ref().map(|(t, _)| t.clone()).unwrap_or_default();
    let get = |path: &str| {
        request(
            "GET",
            &format!("{}/latest/meta-data/{path}", ctx.base),
            &[("X-aws-ec2-metadata-token", &tok)],
            ctx.timeout,
        )
        .map_err(|e| format!("{path}: {e}"))
        .and_then(|r| match r.status {
            200 => Ok(Some(r.body)),
            404 => Ok(None),
            s => Err(format!("{path}: HTTP {s}")),
        })
    };
    let mut out = Vec::new();
    if let Some(b) = get("spot/instance-action")? {
        out.extend(aws_spot(&b)?);
    }
    if let Some(b) = get("events/maintenance/scheduled")? {
        out.extend(aws_scheduled(&b)?);
    }
    if let Some(b) = get("events/recommendations/rebalance")? {
        out.extend(aws_rebalance(&b)?);
    }
    Ok(out)
}

fn json_object(body: &str, what: &str) -> Result<serde_json::Map<String, Value>, String> {
    match serde_json::from_str(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(format!("{what}: not a JSON object")),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

/// `spot/instance-action`: `{"action": "terminate", "time": "…Z"}`.
pub fn aws_spot(body: &str) -> Result<Vec<Notice>, String> {
    let o = json_object(body, "spot/instance-action")?;
    let s = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or_default();
    let action = s("action");
    if !matches!(action, "stop" | "terminate" | "hibernate") {
        return Err(format!(
            "spot/instance-action: unknown action {:?}",
            truncate(action)
        ));
    }
    let mut n = Notice::new(
        format!("aws:spot:{action}:{}", s("time")),
        Kind::Preemption,
        "preemption",
    );
    n.deadline = time_field(s("time"), "spot time")?;
    Ok(vec![n])
}

/// `events/maintenance/scheduled`: a list of events; completed and
/// canceled ones are history.
pub fn aws_scheduled(body: &str) -> Result<Vec<Notice>, String> {
    let v: Value =
        serde_json::from_str(body).map_err(|e| format!("events/maintenance/scheduled: {e}"))?;
    let list = v
        .as_array()
        .ok_or("events/maintenance/scheduled: not a JSON list")?;
    let mut out = Vec::new();
    for e in list {
        let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default();
        if matches!(
            s("State").to_ascii_lowercase().as_str(),
            "completed" | "canceled" | "cancelled"
        ) {
            continue;
        }
        let code = s("Code");
        let ty = Provider::Aws
            .maintenance_types()
            .iter()
            .find(|t| **t == code && **t != "rebalance")
            .copied()
            .unwrap_or("other");
        let id = match s("EventId") {
            "" => format!("{code}:{}", s("NotBefore")),
            id => id.to_owned(),
        };
        let mut n = Notice::new(format!("aws:event:{id}"), Kind::Maintenance, ty);
        n.window_start = time_field(s("NotBefore"), "NotBefore")?;
        if matches!(ty, "instance-retirement" | "instance-stop") {
            n.notify = true;
            n.deadline = n.window_start;
        }
        out.push(n);
    }
    Ok(out)
}

/// `events/recommendations/rebalance`: `{"noticeTime": "…Z"}`.
pub fn aws_rebalance(body: &str) -> Result<Vec<Notice>, String> {
    let o = json_object(body, "events/recommendations/rebalance")?;
    let t = o
        .get("noticeTime")
        .and_then(Value::as_str)
        .unwrap_or_default();
    time_field(t, "noticeTime")?;
    Ok(vec![Notice::new(
        format!("aws:rebalance:{t}"),
        Kind::Maintenance,
        "rebalance",
    )])
}

fn azure_poll(ctx: &Ctx, name: &mut Option<String>) -> Result<Vec<Notice>, String> {
    let hdr = [("Metadata", "true")];
    if name.is_none() {
        let r = request(
            "GET",
            &format!(
                "{}/metadata/instance/compute/name?api-version=2021-02-01&format=text",
                ctx.base
            ),
            &hdr,
            ctx.timeout,
        )
        .map_err(|e| format!("compute/name: {e}"))?;
        let r = ok_or_status(r, "compute/name")?;
        let n = r.body.trim();
        if n.is_empty() || n.contains(char::is_whitespace) {
            return Err("compute/name: malformed".into());
        }
        *name = Some(n.to_owned());
    }
    let r = request(
        "GET",
        &format!(
            "{}/metadata/scheduledevents?api-version=2020-07-01",
            ctx.base
        ),
        &hdr,
        ctx.timeout,
    )
    .map_err(|e| format!("scheduledevents: {e}"))?;
    let r = ok_or_status(r, "scheduledevents")?;
    azure_events(&r.body, name.as_deref().unwrap_or_default())
}

/// Scheduled Events that concern the VM `name`.
pub fn azure_events(body: &str, name: &str) -> Result<Vec<Notice>, String> {
    let o = json_object(body, "scheduledevents")?;
    let events = o
        .get("Events")
        .and_then(Value::as_array)
        .ok_or("scheduledevents: no Events list")?;
    let mut out = Vec::new();
    for e in events {
        let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or_default();
        let resources: Vec<&str> = e
            .get("Resources")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !resources.is_empty() && !resources.iter().any(|r| r.eq_ignore_ascii_case(name)) {
            continue;
        }
        if !matches!(s("EventStatus"), "Scheduled" | "Started") {
            continue;
        }
        let (kind, ty) = match s("EventType") {
            "Freeze" => (Kind::Maintenance, "freeze"),
            "Reboot" => (Kind::Maintenance, "reboot"),
            "Redeploy" => (Kind::Maintenance, "redeploy"),
            "Terminate" => (Kind::Maintenance, "terminate"),
            "Preempt" => (Kind::Preemption, "preemption"),
            other => {
                return Err(format!(
                    "scheduledevents: unknown EventType {:?}",
                    truncate(other)
                ))
            }
        };
        let mut n = Notice::new(format!("azure:{}", s("EventId")), kind, ty);
        n.window_start = time_field(s("NotBefore"), "NotBefore")?;
        if ty == "terminate" || kind == Kind::Preemption {
            n.notify = true;
            n.deadline = n.window_start;
        }
        out.push(n);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gce_values() {
        assert!(gce_maintenance_event("NONE").unwrap().is_empty());
        let n = gce_maintenance_event("TERMINATE_ON_HOST_MAINTENANCE").unwrap();
        assert!(n[0].notify && n[0].ty == "terminate");
        assert!(!gce_maintenance_event("MIGRATE_ON_HOST_MAINTENANCE").unwrap()[0].notify);
        assert!(gce_maintenance_event("{garbage").is_err());
        assert_eq!(gce_preempted("TRUE").unwrap()[0].kind, Kind::Preemption);
        assert!(gce_preempted("maybe").is_err());
        let r = Response {
            status: 200,
            headers: vec![],
            body: r#"{"maintenance_status":"PENDING","type":"SCHEDULED","window_start_time":"2024-05-01T10:00:00Z","window_end_time":"2024-05-01T11:00:00Z"}"#.into(),
        };
        let n = gce_upcoming(&r).unwrap();
        assert_eq!(
            (n[0].ty.as_str(), n[0].window_start),
            ("scheduled", Some(1714557600.0))
        );
    }

    #[test]
    fn aws_values() {
        let n = aws_spot(r#"{"action":"terminate","time":"2024-05-01T10:00:00Z"}"#).unwrap();
        assert_eq!(n[0].deadline, Some(1714557600.0));
        assert!(aws_spot("{").is_err());
        let n = aws_scheduled(r#"[{"Code":"system-reboot","NotBefore":"01 May 2024 10:00:00 GMT","NotAfter":"01 May 2024 12:00:00 GMT","State":"active"},{"Code":"instance-stop","State":"completed","NotBefore":"01 May 2024 10:00:00 GMT"}]"#).unwrap();
        assert_eq!(n.len(), 1);
        assert_eq!(
            (n[0].ty.as_str(), n[0].window_start),
            ("system-reboot", Some(1714557600.0))
        );
        assert_eq!(
            aws_rebalance(r#"{"noticeTime":"2024-05-01T10:00:00Z"}"#).unwrap()[0].ty,
            "rebalance"
        );
    }

    #[test]
    fn azure_values() {
        let body = r#"{"DocumentIncarnation":2,"Events":[
          {"EventId":"a","EventType":"Preempt","ResourceType":"VirtualMachine","Resources":["vm1"],"EventStatus":"Scheduled","NotBefore":"Wed, 01 May 2024 10:00:00 GMT"},
          {"EventId":"b","EventType":"Reboot","ResourceType":"VirtualMachine","Resources":["other"],"EventStatus":"Scheduled","NotBefore":""}]}"#;
        let n = azure_events(body, "vm1").unwrap();
        assert_eq!(n.len(), 1);
        assert_eq!(
            (n[0].kind, n[0].deadline),
            (Kind::Preemption, Some(1714557600.0))
        );
        assert!(azure_events("[]", "vm1").is_err());
    }
}
