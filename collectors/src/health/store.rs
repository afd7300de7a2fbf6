//! Sticky states: what events (XIDs, SXids, hung tasks, OOM kills) left
//! behind, kept in a JSON state file so that they survive a restart of the
//! agent, and cleared when what fixes them happens: the GPU reset, the node
//! rebooted (another boot id), a window passed, or someone cleared them by
//! hand (`accel-agent health --clear CHECK`, which edits the same file; the
//! daemon reads it again when it changed).
//!
//! A cleared state leaves a mark (key, check, time): an event of that key
//! and check from before the mark is not recorded again, so the kernel log
//! of this boot, read again after a restart, does not bring it back.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde_json::{json, Value};

use super::report::{Action, State};

/// What ends a sticky state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClearOn {
    /// A window after the last event (`until`).
    Expiry,
    /// A reset of the GPU, or a reboot.
    Reset,
    /// A reboot.
    Reboot,
    /// Only someone clearing it.
    Hand,
}

impl ClearOn {
    fn as_str(self) -> &'static str {
        match self {
            ClearOn::Expiry => "expiry",
            ClearOn::Reset => "reset",
            ClearOn::Reboot => "reboot",
            ClearOn::Hand => "hand",
        }
    }

    fn parse(s: &str) -> Option<ClearOn> {
        [
            ClearOn::Expiry,
            ClearOn::Reset,
            ClearOn::Reboot,
            ClearOn::Hand,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

/// One sticky state.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// Whom it is about: a GPU's uuid, `pci:<address>` for a GPU NVML does
    /// not know, `host`, or an NVSwitch.
    pub key: String,
    /// What event, within the key (`xid:79`, `sxid:24007`, `hung_task`).
    pub id: String,
    /// The component shown when the key names nothing present (`gpu3`).
    pub component: String,
    /// The check it belongs to.
    pub check: String,
    pub state: State,
    pub action: Action,
    pub reason: String,
    /// Unix time of the first event, and of the last.
    pub since: f64,
    pub last: f64,
    /// When it ends by itself (`ClearOn::Expiry`).
    pub until: Option<f64>,
    pub clear_on: ClearOn,
}

/// A mark left by clearing: events of `key` and `check` up to `at` are old.
#[derive(Clone, Debug, PartialEq)]
pub struct Cleared {
    pub key: String,
    pub check: String,
    pub at: f64,
}

/// The sticky states and their file.
#[derive(Debug, Default)]
pub struct Store {
    /// The boot they belong to.
    pub boot: String,
    pub entries: Vec<Entry>,
    pub cleared: Vec<Cleared>,
    path: Option<PathBuf>,
    /// The file's modification time and length when last read or written.
    stamp: Option<(SystemTime, u64)>,
    dirty: bool,
    warned: bool,
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl Store {
    /// The store of `path` (none: in memory only) for the boot `boot`.
    /// States of an earlier boot are dropped, except those only a person
    /// clears.
    pub fn open(path: Option<PathBuf>, boot: &str) -> Store {
        let mut s = Store {
            path,
            ..Store::default()
        };
        s.load();
        s.new_boot(boot);
        s
    }

    /// Forgets what a reboot fixes when `boot` is not the store's boot.
    pub fn new_boot(&mut self, boot: &str) {
        if self.boot != boot {
            if !self.boot.is_empty() {
                tracing::info!("new boot: clearing the health states a reboot clears");
            }
            self.entries.retain(|e| e.clear_on == ClearOn::Hand);
            self.cleared.clear();
            self.boot = boot.to_owned();
            self.dirty = true;
        }
    }

    /// Reads the file again if someone else changed it since (`accel-agent
    /// health --clear`).
    pub fn refresh(&mut self) {
        let Some(path) = &self.path else { return };
        if stamp(path) != self.stamp {
            let boot = self.boot.clone();
            self.load();
            if self.boot.is_empty() {
                self.boot = boot;
            }
        }
    }

    fn load(&mut self) {
        let Some(path) = self.path.clone() else {
            return;
        };
        self.stamp = stamp(&path);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                self.warn(format!("cannot read {}: {e}", path.display()));
                return;
            }
        };
        match serde_json::from_str::<Value>(&text)
            .map_err(|e| e.to_string())
            .and_then(|v| parse(&v))
        {
            Ok((boot, entries, cleared)) => {
                self.boot = boot;
                self.entries = entries;
                self.cleared = cleared;
            }
            Err(e) => self.warn(format!(
                "{} is not a health state file ({e}); starting empty",
                path.display()
            )),
        }
    }

    fn warn(&mut self, msg: String) {
        if !self.warned {
            tracing::warn!("{msg}");
            self.warned = true;
        }
    }

    /// Records an event's state, unless it was cleared since; the same key
    /// and id again moves its last time (and window) on.
    pub fn record(&mut self, e: Entry) {
        if self
            .cleared
            .iter()
            .any(|c| c.key == e.key && c.check == e.check && e.last <= c.at)
        {
            return;
        }
        if let Some(old) = self
            .entries
            .iter_mut()
            .find(|o| o.key == e.key && o.id == e.id)
        {
            if (e.state, e.action) > (old.state, old.action) {
                old.state = e.state;
                old.action = e.action;
                old.clear_on = e.clear_on;
                old.until = e.until;
                old.reason = e.reason.clone();
                self.dirty = true;
            }
            if e.last > old.last {
                old.last = e.last;
                old.until = match (e.until, old.until) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
                if (e.state, e.action) == (old.state, old.action) {
                    old.reason = e.reason;
                }
                old.component = e.component;
                self.dirty = true;
            }
            return;
        }
        self.entries.push(e);
        self.dirty = true;
    }

    /// Drops the states whose window has passed.
    pub fn expire(&mut self, now: f64) {
        let before = self.entries.len();
        self.entries
            .retain(|e| !(e.clear_on == ClearOn::Expiry && e.until.is_some_and(|u| u <= now)));
        self.dirty |= self.entries.len() != before;
    }

    /// The GPU `key` was reset: drops what a reset fixes.
    pub fn reset(&mut self, key: &str, now: f64) {
        let checks: Vec<String> = self
            .entries
            .iter()
            .filter(|e| e.key == key && e.clear_on == ClearOn::Reset)
            .map(|e| e.check.clone())
            .collect();
        for check in checks {
            self.mark(key, &check, now);
        }
        self.entries
            .retain(|e| !(e.key == key && e.clear_on == ClearOn::Reset));
    }

    fn mark(&mut self, key: &str, check: &str, at: f64) {
        self.cleared.retain(|c| !(c.key == key && c.check == check));
        self.cleared.push(Cleared {
            key: key.to_owned(),
            check: check.to_owned(),
            at,
        });
        self.dirty = true;
    }

    /// Clears by hand the states `what` names: `all`, a check (`xid`), or
    /// `COMPONENT/CHECK` (`gpu3/xid`, `GPU-…/xid`); returns how many.
    /// `component` maps an entry to the component it is shown as.
    pub fn clear(&mut self, what: &str, now: f64, component: impl Fn(&Entry) -> String) -> usize {
        let matches = |e: &Entry| match what.split_once('/') {
            _ if what == "all" => true,
            Some((c, check)) => {
                e.check == check && (e.key == c || e.component == c || component(e) == c)
            }
            None => e.check == what,
        };
        let hit: Vec<(String, String)> = self
            .entries
            .iter()
            .filter(|e| matches(e))
            .map(|e| (e.key.clone(), e.check.clone()))
            .collect();
        for (key, check) in &hit {
            self.mark(key, check, now);
        }
        self.entries.retain(|e| !matches(e));
        hit.len()
    }

    /// Writes the file if anything changed (a temporary file renamed over
    /// it, so a reader never sees half of it).
    pub fn save(&mut self) {
        if !self.dirty {
            return;
        }
        let Some(path) = self.path.clone() else {
            self.dirty = false;
            return;
        };
        let text = serde_json::to_string_pretty(&self.to_json()).unwrap_or_default();
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let written = std::fs::write(&tmp, text + "\n").and_then(|()| std::fs::rename(&tmp, &path));
        match written {
            Ok(()) => {
                self.dirty = false;
                self.stamp = stamp(&path);
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                self.warn(format!(
                    "cannot write the health state file {} ({e}): sticky states will not survive a restart",
                    path.display()
                ));
                // Not retried every sample: the next change tries again.
                self.dirty = false;
            }
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "version": 1,
            "boot_id": self.boot,
            "entries": self.entries.iter().map(|e| json!({
                "key": e.key,
                "id": e.id,
                "component": e.component,
                "check": e.check,
                "state": e.state.as_str(),
                "action": e.action.as_str(),
                "reason": e.reason,
                "since": e.since,
                "last": e.last,
                "until": e.until,
                "clear_on": e.clear_on.as_str(),
            })).collect::<Vec<_>>(),
            "cleared": self.cleared.iter().map(|c| json!({
                "key": c.key, "check": c.check, "at": c.at,
            })).collect::<Vec<_>>(),
        })
    }
}

type Parsed = (String, Vec<Entry>, Vec<Cleared>);

/// The contents of a state file.
fn parse(v: &Value) -> Result<Parsed, String> {
    let s = |o: &Value, k: &str| {
        o.get(k)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("no {k:?}"))
    };
    let f = |o: &Value, k: &str| {
        o.get(k)
            .and_then(Value::as_f64)
            .filter(|x| x.is_finite())
            .ok_or_else(|| format!("no {k:?}"))
    };
    let list = |k: &str| {
        v.get(k)
            .and_then(Value::as_array)
            .ok_or_else(|| format!("no {k:?} array"))
    };
    let mut entries = Vec::new();
    for e in list("entries")? {
        let state = s(e, "state")?;
        let action = s(e, "action")?;
        let clear_on = s(e, "clear_on")?;
        entries.push(Entry {
            key: s(e, "key")?,
            id: s(e, "id")?,
            component: s(e, "component")?,
            check: s(e, "check")?,
            state: State::parse(&state).ok_or_else(|| format!("state {state:?}"))?,
            action: Action::parse(&action).ok_or_else(|| format!("action {action:?}"))?,
            reason: s(e, "reason")?,
            since: f(e, "since")?,
            last: f(e, "last")?,
            until: e.get("until").and_then(Value::as_f64),
            clear_on: ClearOn::parse(&clear_on).ok_or_else(|| format!("clear_on {clear_on:?}"))?,
        });
    }
    let mut cleared = Vec::new();
    for c in list("cleared")? {
        cleared.push(Cleared {
            key: s(c, "key")?,
            check: s(c, "check")?,
            at: f(c, "at")?,
        });
    }
    Ok((s(v, "boot_id")?, entries, cleared))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, id: &str, check: &str, clear_on: ClearOn, at: f64) -> Entry {
        Entry {
            key: key.into(),
            id: id.into(),
            component: "gpu3".into(),
            check: check.into(),
            state: State::Failed,
            action: Action::ResetGpu,
            reason: format!("{id} at {at}"),
            since: at,
            last: at,
            until: (clear_on == ClearOn::Expiry).then_some(at + 60.0),
            clear_on,
        }
    }

    #[test]
    fn survives_a_restart_and_clears_on_reboot_reset_expiry_and_hand() {
        let dir = std::env::temp_dir().join(format!("accel-health-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("health.json");
        let mut s = Store::open(Some(path.clone()), "boot-1");
        s.record(entry("GPU-a", "xid:48", "xid", ClearOn::Reset, 100.0));
        s.record(entry("GPU-a", "xid:79", "xid", ClearOn::Reboot, 100.0));
        s.record(entry("GPU-a", "xid:64", "xid", ClearOn::Hand, 100.0));
        s.record(entry(
            "host",
            "oom_kill",
            "oom_kill",
            ClearOn::Expiry,
            100.0,
        ));
        s.save();
        // A restart reads them back.
        let mut s = Store::open(Some(path.clone()), "boot-1");
        assert_eq!(s.entries.len(), 4);
        s.expire(159.0);
        assert_eq!(s.entries.len(), 4);
        s.expire(161.0);
        assert_eq!(s.entries.len(), 3);
        s.reset("GPU-a", 200.0);
        assert_eq!(s.entries.len(), 2);
        // The XID 48 read again from this boot's log is not brought back ...
        s.record(entry("GPU-a", "xid:48", "xid", ClearOn::Reset, 100.0));
        assert_eq!(s.entries.len(), 2);
        // ... a new one is.
        s.record(entry("GPU-a", "xid:48", "xid", ClearOn::Reset, 300.0));
        assert_eq!(s.entries.len(), 3);
        s.save();
        // Someone clears XIDs by hand in the file; the daemon reads it again.
        let mut other = Store::open(Some(path.clone()), "boot-1");
        assert_eq!(other.clear("gpu3/xid", 400.0, |e| e.component.clone()), 3);
        other.save();
        s.refresh();
        assert!(s.entries.is_empty());
        s.record(entry("GPU-a", "xid:79", "xid", ClearOn::Reboot, 500.0));
        s.record(entry("GPU-a", "xid:64", "xid", ClearOn::Hand, 500.0));
        s.save();
        // A reboot drops all but what only a person clears.
        let s = Store::open(Some(path.clone()), "boot-2");
        assert_eq!(s.entries.len(), 1);
        assert_eq!(s.entries[0].id, "xid:64");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bad_file_starts_empty() {
        let dir = std::env::temp_dir().join(format!("accel-health-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("health.json");
        for bad in [
            "",
            "{",
            "[]",
            "{\"entries\": 3}",
            "{\"boot_id\": \"b\", \"entries\": [{}], \"cleared\": []}",
        ] {
            std::fs::write(&path, bad).unwrap();
            let s = Store::open(Some(path.clone()), "b");
            assert!(s.entries.is_empty(), "{bad}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(text in crate::testing::mutated_text(&[
            r#"{"version":1,"boot_id":"b","entries":[{"key":"GPU-a","id":"xid:79","component":"gpu3","check":"xid","state":"failed","action":"RESTART_BM","reason":"r","since":1,"last":2,"until":null,"clear_on":"reboot"}],"cleared":[{"key":"k","check":"xid","at":3}]}"#,
        ])) {
            if let Ok(v) = serde_json::from_str::<Value>(&text) {
                let _ = parse(&v);
            }
        }
    }
}
