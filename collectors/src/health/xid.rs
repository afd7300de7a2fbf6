//! What each XID means and what to do about it.
//!
//! Source: NVIDIA's "Xid Errors" documentation, the Xid catalog for Ampere
//! and newer GPUs ("Analyzing Xid Errors with the Xid Catalog",
//! <https://docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html>),
//! column "Resolution Bucket (Immediate Action)", and NVIDIA's dynamic page
//! retirement and row remapping guides for 48, 63, 64, 92, 94 and 95. The
//! descriptions are shortened; the catalog's workflow buckets
//! (`WORKFLOW_XID_48`, `WORKFLOW_NVLINK_ERR`) are given here as their first
//! step (`RESET_GPU`). Written by hand from the catalog: check it against
//! the catalog when a new GPU generation adds XIDs. An XID not listed is
//! reported as [`UNKNOWN`].
//!
//! How an action becomes a state (docs/health.md):
//!
//! | action | state | how long |
//! |---|---|---|
//! | `IGNORE` | not reported | |
//! | `RESTART_APP` | degraded | the event window (`--collector.health.event-window`, 1 h) after the last |
//! | `RESET_GPU` | failed | until the GPU is reset (the agent sees it come back), the node reboots, or it is cleared |
//! | `RESTART_BM` | failed | until the node reboots, or it is cleared |
//! | `CONTACT_SUPPORT` | failed | until cleared by hand (`accel-agent health --clear xid`) |

use super::report::Action;

/// One XID: its number, what it means, and the immediate action (`None`:
/// NVIDIA's `IGNORE`, nothing to do).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Xid {
    /// The XID number.
    pub xid: u64,
    /// What it means (shortened from the catalog).
    pub what: &'static str,
    /// What to do; `None` for `IGNORE`.
    pub action: Option<Action>,
}

const fn x(xid: u64, what: &'static str, action: Option<Action>) -> Xid {
    Xid { xid, what, action }
}

use Action::{ContactSupport as SUPPORT, ResetGpu as RESET, RestartApp as APP, RestartBm as BM};

/// The XIDs this agent knows, by number.
pub const TABLE: &[Xid] = &[
    x(
        8,
        "GPU stopped processing (channel idle timeout)",
        Some(APP),
    ),
    x(13, "graphics engine exception", Some(APP)),
    x(31, "GPU memory page fault", Some(APP)),
    x(32, "invalid or corrupted push buffer stream", Some(APP)),
    x(38, "driver firmware error", Some(RESET)),
    x(
        43,
        "GPU stopped processing (channel reset by the driver)",
        None,
    ),
    x(45, "preemptive cleanup, due to previous errors", None),
    x(46, "GPU stopped processing", Some(RESET)),
    x(48, "double bit ECC error (DBE)", Some(RESET)),
    x(
        54,
        "auxiliary power is not connected to the GPU board",
        Some(SUPPORT),
    ),
    x(56, "display engine error", None),
    x(
        57,
        "error programming video memory interface",
        Some(SUPPORT),
    ),
    x(
        58,
        "unstable video memory interface detected",
        Some(SUPPORT),
    ),
    x(
        61,
        "internal micro-controller breakpoint/warning",
        Some(RESET),
    ),
    x(62, "internal micro-controller halt", Some(RESET)),
    x(
        63,
        "ECC page retirement or row remapping recording event",
        Some(RESET),
    ),
    x(
        64,
        "ECC page retirement or row remapper recording failure",
        Some(SUPPORT),
    ),
    x(68, "NVDEC0 exception", Some(APP)),
    x(69, "graphics engine class error", Some(APP)),
    x(74, "NVLink error", Some(RESET)),
    x(79, "GPU has fallen off the bus", Some(BM)),
    x(80, "corrupted data sent to GPU", Some(SUPPORT)),
    x(81, "VGA subsystem error", Some(SUPPORT)),
    x(92, "high single-bit ECC error rate", None),
    x(
        93,
        "non-fatal violation of provisioned InfoROM wear limit",
        Some(SUPPORT),
    ),
    x(94, "contained ECC error", Some(APP)),
    x(95, "uncontained ECC error", Some(RESET)),
    x(109, "context switch timeout error", Some(APP)),
    x(110, "security fault error", Some(BM)),
    x(119, "GSP RPC timeout", Some(RESET)),
    x(120, "GSP error", Some(RESET)),
    x(121, "C2C link error", Some(RESET)),
    x(140, "unrecovered ECC error", Some(RESET)),
    x(143, "GPU initialization failure", Some(RESET)),
    x(144, "NVLink: SAW error", Some(RESET)),
    x(145, "NVLink: RLW error", Some(RESET)),
    x(146, "NVLink: TLW error", Some(RESET)),
    x(147, "NVLink: TREX error", Some(RESET)),
    x(148, "NVLink: NVLPW_CTRL error", Some(RESET)),
    x(149, "NVLink: NETIR error", Some(RESET)),
    x(150, "NVLink: MSE error", Some(RESET)),
    x(
        154,
        "GPU recovery action changed (follow the driver's recovery action)",
        Some(RESET),
    ),
];

/// What an XID missing from [`TABLE`] is taken as: a fault of the
/// application until more is known.
pub const UNKNOWN: Xid = x(0, "not in this agent's XID table", Some(APP));

/// The entry of `xid`, or [`UNKNOWN`] with its number.
pub fn lookup(xid: u64) -> Xid {
    TABLE
        .iter()
        .find(|e| e.xid == xid)
        .copied()
        .unwrap_or(Xid { xid, ..UNKNOWN })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_unique_and_named() {
        assert!(TABLE.windows(2).all(|w| w[0].xid < w[1].xid));
        assert!(TABLE.iter().all(|e| !e.what.is_empty()));
    }

    #[test]
    fn the_alerted_xids_map_to_their_actions() {
        assert_eq!(lookup(79).action, Some(Action::RestartBm));
        assert_eq!(lookup(48).action, Some(Action::ResetGpu));
        assert_eq!(lookup(64).action, Some(Action::ContactSupport));
        assert_eq!(lookup(13).action, Some(Action::RestartApp));
        assert_eq!(lookup(43).action, None);
        let unknown = lookup(9999);
        assert_eq!(
            (unknown.xid, unknown.action),
            (9999, Some(Action::RestartApp))
        );
    }
}
