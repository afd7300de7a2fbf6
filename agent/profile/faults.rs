//! Faults seen during a profile: a GPU lost, an XID, a collector whose
//! samples stopped (a hung driver call, a wedged read) and a collector whose
//! samples failed. They come first in every output and decide the verdicts
//! `broken` and `degraded` (see [`super::diagnosis`]).

use std::collections::BTreeMap;

use accel_collectors::gpu;
use serde::Serialize;

use super::summary::Record;

/// XIDs after which the GPU cannot be trusted until it is reset or the
/// node drained: uncorrectable memory errors (48, 63/64 row remapping
/// failures, 94/95 contained and uncontained ECC, 92 high single-bit rate),
/// NVLink failure (74), fallen off the bus (79), GSP firmware (119, 120).
/// The others in the exported set (13, 31, 43, 45: application faults; 61,
/// 62: engine errors an application can cause) degrade, they do not break.
pub const FATAL_XIDS: [u64; 10] = [48, 63, 64, 74, 79, 92, 94, 95, 119, 120];

/// What went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// `accel_gpu_up` 0: fallen off the bus or unreachable.
    GpuLost,
    /// An XID raised during the profile.
    Xid,
    /// No sample of a collector finished for longer than its deadline.
    Stalled,
    /// A collector's samples failed.
    CollectorFailed,
}

impl FaultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::GpuLost => "gpu lost",
            FaultKind::Xid => "xid",
            FaultKind::Stalled => "samples stalled",
            FaultKind::CollectorFailed => "collector failed",
        }
    }
}

/// One fault: what, where, when (seconds since the profile started).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Fault {
    pub kind: FaultKind,
    /// `GPU 3`, or `collector gpu`.
    pub device: String,
    pub first_seconds: f64,
    pub last_seconds: f64,
    /// Whether it breaks the node (a lost GPU, a fatal XID).
    pub fatal: bool,
    pub detail: String,
}

/// One sample attempt of a collector, successful or not.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// When it finished, seconds since the profile started.
    pub end: f64,
    pub ok: bool,
    /// The error kinds it counted (`timeout`, `gpu_lost`, ...), when failed.
    pub kinds: Vec<&'static str>,
}

/// What one collector did during the profile.
#[derive(Clone, Debug)]
pub struct Attempts {
    pub collector: &'static str,
    /// Longer than this without a finished sample is a stall.
    pub deadline: f64,
    pub attempts: Vec<Attempt>,
}

fn series_value(
    recs: &[Record],
    family: &str,
    key: impl Fn(&accel_collectors::Series) -> Option<String>,
) -> BTreeMap<String, Vec<(f64, f64)>> {
    let mut out: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for r in recs {
        if let Some(f) = r.families.iter().find(|f| f.name == family) {
            for s in &f.series {
                if let Some(k) = key(s) {
                    out.entry(k).or_default().push((r.t, s.value));
                }
            }
        }
    }
    out
}

fn label<'a>(s: &'a accel_collectors::Series, name: &str) -> Option<&'a str> {
    s.labels
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.as_str())
}

fn secs(t: f64) -> String {
    format!("{t:.1}s")
}

/// The faults in the gpu collector's records (`gpu_records`), and in every
/// collector's attempts over a profile of `duration` seconds, in time
/// order.
pub fn detect(gpu_records: &[Record], attempts: &[Attempts], duration: f64) -> Vec<Fault> {
    let mut out = Vec::new();
    // Lost GPUs: runs of accel_gpu_up 0.
    let up = series_value(gpu_records, gpu::identity::UP.name, |s| {
        label(s, "gpu").map(str::to_owned)
    });
    for (g, points) in &up {
        let mut i = 0;
        while i < points.len() {
            if points[i].1 > 0.0 {
                i += 1;
                continue;
            }
            let first = points[i].0;
            let mut j = i;
            while j + 1 < points.len() && points[j + 1].1 <= 0.0 {
                j += 1;
            }
            let last = points[j].0;
            let lost = j + 1 - i;
            let detail = match points.get(j + 1) {
                Some((back, _)) => format!(
                    "{} 0 (fallen off the bus or unreachable) in {lost} samples; back at {}",
                    gpu::identity::UP.name,
                    secs(*back)
                ),
                None => format!(
                    "{} 0 (fallen off the bus or unreachable) in {lost} samples; not back by the end",
                    gpu::identity::UP.name
                ),
            };
            out.push(Fault {
                kind: FaultKind::GpuLost,
                device: format!("GPU {g}"),
                first_seconds: first,
                last_seconds: last,
                fatal: true,
                detail,
            });
            i = j + 1;
        }
    }
    // XIDs: increases of accel_gpu_xid_errors_total; a series that appears
    // after the first sample counts from 0.
    let first_t = gpu_records.first().map(|r| r.t);
    let xids = series_value(gpu_records, gpu::events::XID_ERRORS.name, |s| {
        Some(format!("{}/{}", label(s, "gpu")?, label(s, "xid")?))
    });
    for (k, points) in &xids {
        let (g, xid) = k.split_once('/').unwrap_or((k, ""));
        let mut prev = if points.first().map(|p| p.0) == first_t {
            None
        } else {
            Some(0.0)
        };
        let mut count = 0.0;
        let mut when: Option<(f64, f64)> = None;
        for (t, v) in points {
            if let Some(p) = prev {
                if *v > p {
                    count += v - p;
                    when = Some(when.map_or((*t, *t), |(a, _)| (a, *t)));
                }
            }
            prev = Some(*v);
        }
        if let Some((first, last)) = when {
            let n: u64 = xid.parse().unwrap_or(0);
            let fatal = FATAL_XIDS.contains(&n);
            out.push(Fault {
                kind: FaultKind::Xid,
                device: format!("GPU {g}"),
                first_seconds: first,
                last_seconds: last,
                fatal,
                detail: format!(
                    "XID {xid} x{count:.0} ({}){}",
                    gpu::events::XID_ERRORS.name,
                    if fatal {
                        ": fatal, the GPU needs a reset or the node a drain"
                    } else {
                        ""
                    }
                ),
            });
        }
    }
    for a in attempts {
        // Stalls: gaps between finished samples longer than the deadline.
        let mut prev = 0.0;
        for end in a
            .attempts
            .iter()
            .map(|x| x.end)
            .chain(std::iter::once(f64::INFINITY))
        {
            let until = end.min(duration);
            if until - prev > a.deadline {
                out.push(Fault {
                    kind: FaultKind::Stalled,
                    device: format!("collector {}", a.collector),
                    first_seconds: prev,
                    last_seconds: until,
                    fatal: false,
                    detail: if end.is_finite() {
                        format!(
                            "no sample finished for {:.1}s (deadline {:.1}s): a hung driver call or read; its signals have a gap",
                            until - prev,
                            a.deadline
                        )
                    } else {
                        format!(
                            "no sample finished after {} (deadline {:.1}s), one still running at the end: a hung driver call or read; its signals stop there",
                            secs(prev),
                            a.deadline
                        )
                    },
                });
            }
            if end.is_finite() {
                prev = prev.max(end);
            }
        }
        // Failures: runs of failed samples.
        let mut i = 0;
        let v = &a.attempts;
        while i < v.len() {
            if v[i].ok {
                i += 1;
                continue;
            }
            let mut j = i;
            let mut kinds: Vec<&str> = Vec::new();
            while j < v.len() && !v[j].ok {
                for k in &v[j].kinds {
                    if !kinds.contains(k) {
                        kinds.push(k);
                    }
                }
                j += 1;
            }
            out.push(Fault {
                kind: FaultKind::CollectorFailed,
                device: format!("collector {}", a.collector),
                first_seconds: v[i].end,
                last_seconds: v[j - 1].end,
                fatal: false,
                detail: format!(
                    "{} samples failed{}{}",
                    j - i,
                    if kinds.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", kinds.join(", "))
                    },
                    if j == v.len() {
                        "; still failing at the end"
                    } else {
                        ""
                    }
                ),
            });
            i = j;
        }
    }
    out.sort_by(|a, b| {
        a.first_seconds
            .total_cmp(&b.first_seconds)
            .then(a.kind.cmp(&b.kind))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use accel_collectors::Sample;

    fn rec(t: f64, up: &[(u32, f64)], xids: &[(u32, u64, f64)]) -> Record {
        let mut s = Sample::new();
        let f = s.add(&gpu::identity::UP);
        for (g, v) in up {
            f.add(&[("gpu", &g.to_string()), ("uuid", "u")], *v);
        }
        let f = s.add(&gpu::events::XID_ERRORS);
        for (g, x, v) in xids {
            f.add(
                &[
                    ("gpu", &g.to_string()),
                    ("uuid", "u"),
                    ("xid", &x.to_string()),
                ],
                *v,
            );
        }
        Record {
            t,
            families: s.into_parts().0,
        }
    }

    #[test]
    fn lost_gpu_and_its_xid() {
        let recs = vec![
            rec(0.0, &[(0, 1.0), (1, 1.0)], &[(1, 79, 0.0), (1, 13, 2.0)]),
            rec(1.0, &[(0, 1.0), (1, 0.0)], &[(1, 79, 1.0), (1, 13, 2.0)]),
            rec(2.0, &[(0, 1.0), (1, 0.0)], &[(1, 79, 1.0), (1, 13, 2.0)]),
            rec(3.0, &[(0, 1.0), (1, 1.0)], &[(1, 79, 1.0), (1, 13, 2.0)]),
        ];
        let f = detect(&recs, &[], 4.0);
        assert_eq!(f.len(), 2, "{f:?}");
        assert_eq!(f[0].kind, FaultKind::GpuLost);
        assert_eq!((f[0].first_seconds, f[0].last_seconds), (1.0, 2.0));
        assert!(f[0].fatal && f[0].device == "GPU 1" && f[0].detail.contains("back at 3.0s"));
        assert_eq!(f[1].kind, FaultKind::Xid);
        assert!(f[1].fatal && f[1].detail.contains("XID 79 x1"), "{f:?}");
    }

    #[test]
    fn stalls_and_failures() {
        let a = |end: f64, ok: bool| Attempt {
            end,
            ok,
            kinds: if ok { vec![] } else { vec!["timeout"] },
        };
        let attempts = vec![Attempts {
            collector: "gpu",
            deadline: 2.0,
            attempts: vec![a(0.1, true), a(0.2, false), a(0.3, false), a(1.0, true)],
        }];
        let f = detect(&[], &attempts, 5.0);
        assert_eq!(f.len(), 2, "{f:?}");
        assert_eq!(f[0].kind, FaultKind::CollectorFailed);
        assert!(f[0].detail.contains("2 samples failed (timeout)"));
        assert_eq!(f[1].kind, FaultKind::Stalled);
        assert_eq!((f[1].first_seconds, f[1].last_seconds), (1.0, 5.0));
        assert!(f[1].detail.contains("still running"));
        assert!(f.iter().all(|f| !f.fatal));
    }
}
