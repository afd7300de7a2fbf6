//! The health report: one [`Finding`] per component and check, its state,
//! reason and the action to take; rendered as a table (`accel-agent
//! health`) and as JSON (`/health`, `accel-agent health --json`), and read
//! back from JSON (the command reads a running daemon's).

use std::fmt::Write;

use serde_json::{json, Value};

/// How a check came out, worst last.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    /// Nothing to do.
    #[default]
    Ok,
    /// Works, with less than it should (a link down, a pending remap).
    Degraded,
    /// Not fit for work until the action is taken.
    Failed,
}

impl State {
    /// The name, as in the table and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::Degraded => "degraded",
            State::Failed => "failed",
        }
    }

    /// The value of `accel_health_state`: 0, 1, 2; also the exit code of
    /// `accel-agent health`.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The state named `s`.
    pub fn parse(s: &str) -> Option<State> {
        match s {
            "ok" => Some(State::Ok),
            "degraded" => Some(State::Degraded),
            "failed" => Some(State::Failed),
            _ => None,
        }
    }
}

/// What to do about a check that is not ok. The GPU actions are the
/// resolution buckets of NVIDIA's Xid catalog; the others are this agent's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    /// Nothing.
    #[default]
    None,
    /// Restart the application (the job); the GPU is fine.
    RestartApp,
    /// Reset the GPU (`nvidia-smi -r`) or reboot.
    ResetGpu,
    /// Reboot the node (bare metal).
    RestartBm,
    /// Hardware service: open a case with the vendor (RMA).
    ContactSupport,
    /// Cooling, power, seating of the card or cable: someone on site.
    CheckMechanicals,
    /// An InfiniBand port down or slow: the cable, transceiver or switch port.
    CheckCable,
    /// Start or repair time synchronisation (chrony, ntpd, PTP).
    SyncClock,
    /// Read the kernel log: hung tasks or OOM kills on the node.
    Investigate,
}

impl Action {
    /// Every action, in order.
    pub const ALL: [Action; 9] = [
        Action::None,
        Action::RestartApp,
        Action::ResetGpu,
        Action::RestartBm,
        Action::ContactSupport,
        Action::CheckMechanicals,
        Action::CheckCable,
        Action::SyncClock,
        Action::Investigate,
    ];

    /// The name, as in the `action` label, the table and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::None => "NONE",
            Action::RestartApp => "RESTART_APP",
            Action::ResetGpu => "RESET_GPU",
            Action::RestartBm => "RESTART_BM",
            Action::ContactSupport => "CONTACT_SUPPORT",
            Action::CheckMechanicals => "CHECK_MECHANICALS",
            Action::CheckCable => "CHECK_CABLE",
            Action::SyncClock => "SYNC_CLOCK",
            Action::Investigate => "INVESTIGATE",
        }
    }

    /// The action named `s`.
    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// One check of one component.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Finding {
    /// What is checked: `gpu3`, `gpus`, `host`, `nvswitch`, `mlx5_0:1`.
    pub component: String,
    /// Which check (`xid`, `memory`, `nvlink`, ...): see [`CHECKS`](super::CHECKS).
    pub check: String,
    /// How it came out.
    pub state: State,
    /// What to do.
    pub action: Action,
    /// Why, for a person.
    pub reason: String,
}

impl Finding {
    /// An ok finding.
    pub fn ok(component: &str, check: &str, reason: impl Into<String>) -> Finding {
        Finding {
            component: component.to_owned(),
            check: check.to_owned(),
            state: State::Ok,
            action: Action::None,
            reason: reason.into(),
        }
    }

    /// A finding that is not ok.
    pub fn bad(
        component: &str,
        check: &str,
        state: State,
        action: Action,
        reason: impl Into<String>,
    ) -> Finding {
        Finding {
            component: component.to_owned(),
            check: check.to_owned(),
            state,
            action,
            reason: reason.into(),
        }
    }
}

/// Every finding of one round of checks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Report {
    /// The findings, in check order.
    pub findings: Vec<Finding>,
    /// Unix time of the round; 0 before the first.
    pub time: f64,
}

impl Report {
    /// The worst state of any finding (ok when there is none).
    pub fn state(&self) -> State {
        self.findings
            .iter()
            .map(|f| f.state)
            .max()
            .unwrap_or_default()
    }

    /// The report as JSON: `{"state", "time", "checks": [{"component",
    /// "check", "state", "action", "reason"}]}`.
    pub fn to_json(&self) -> Value {
        json!({
            "state": self.state().as_str(),
            "time": self.time,
            "checks": self.findings.iter().map(|f| json!({
                "component": f.component,
                "check": f.check,
                "state": f.state.as_str(),
                "action": f.action.as_str(),
                "reason": f.reason,
            })).collect::<Vec<_>>(),
        })
    }

    /// The report in `v` (what [`to_json`](Self::to_json) writes).
    pub fn from_json(v: &Value) -> Result<Report, String> {
        let checks = v
            .get("checks")
            .and_then(Value::as_array)
            .ok_or("no \"checks\" array")?;
        let text = |c: &Value, k: &str| {
            c.get(k)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("a check without {k:?}"))
        };
        let mut findings = Vec::with_capacity(checks.len());
        for c in checks {
            let state = text(c, "state")?;
            let action = text(c, "action")?;
            findings.push(Finding {
                component: text(c, "component")?,
                check: text(c, "check")?,
                state: State::parse(&state).ok_or_else(|| format!("state {state:?}"))?,
                action: Action::parse(&action).ok_or_else(|| format!("action {action:?}"))?,
                reason: text(c, "reason")?,
            });
        }
        Ok(Report {
            findings,
            time: v.get("time").and_then(Value::as_f64).unwrap_or(0.0),
        })
    }

    /// The report as a table, the checks that are not ok first (worst
    /// first), then a line with the verdict.
    pub fn table(&self) -> String {
        let mut rows: Vec<&Finding> = self.findings.iter().collect();
        rows.sort_by_key(|f| std::cmp::Reverse(f.state));
        let head = ["COMPONENT", "CHECK", "STATE", "ACTION", "REASON"];
        let cells: Vec<[&str; 5]> = rows
            .iter()
            .map(|f| {
                [
                    f.component.as_str(),
                    f.check.as_str(),
                    f.state.as_str(),
                    f.action.as_str(),
                    f.reason.as_str(),
                ]
            })
            .collect();
        let mut width = [0usize; 4];
        for row in std::iter::once(&head).chain(&cells) {
            for (w, c) in width.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&head).chain(&cells) {
            for (i, c) in row.iter().enumerate() {
                if i < 4 {
                    let _ = write!(out, "{c:<w$}  ", w = width[i]);
                } else {
                    out.push_str(c);
                }
            }
            out.push('\n');
        }
        let bad = self
            .findings
            .iter()
            .filter(|f| f.state != State::Ok)
            .count();
        let _ = writeln!(
            out,
            "\nnode: {} ({} of {} checks not ok)",
            self.state().as_str(),
            bad,
            self.findings.len()
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_worst_state() {
        let r = Report {
            findings: vec![
                Finding::ok("gpu0", "xid", "no XID"),
                Finding::bad(
                    "gpu3",
                    "xid",
                    State::Failed,
                    Action::RestartBm,
                    "XID 79 (GPU has fallen off the bus)",
                ),
                Finding::bad("host", "clock", State::Degraded, Action::SyncClock, "x"),
            ],
            time: 12.5,
        };
        assert_eq!(r.state(), State::Failed);
        assert_eq!(Report::from_json(&r.to_json()).unwrap(), r);
        let table = r.table();
        assert!(table.lines().nth(1).unwrap().starts_with("gpu3"), "{table}");
        assert!(
            table.ends_with("node: failed (2 of 3 checks not ok)\n"),
            "{table}"
        );
        assert_eq!(Report::default().state(), State::Ok);
    }

    #[test]
    fn bad_json_is_an_error() {
        for v in [
            json!({}),
            json!({"checks": [{"component": "x"}]}),
            json!({"checks": [{"component": "x", "check": "y", "state": "bad", "action": "NONE", "reason": ""}]}),
        ] {
            assert!(Report::from_json(&v).is_err(), "{v}");
        }
    }
}
