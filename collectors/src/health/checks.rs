//! The checks that read the present: the PCI bus against NVML, each GPU's
//! health facts (from the GPU collector's snapshot), InfiniBand ports, the
//! clock. Events (XIDs, kernel log lines) go through the sticky store
//! instead ([`super::store`]).

use std::path::Path;

use super::kmsg::norm_bus;
use super::report::{Action, Finding, State};
use crate::shared::{GpuHealth, GpuSnapshot};

/// Retired pages at which NVIDIA's dynamic page retirement guide says the
/// board is due for replacement (60 double-bit, or 64 in all).
pub const RETIRED_PAGES_LIMIT: u64 = 60;

/// The NVIDIA display and 3D controllers on the PCI bus (vendor 0x10de,
/// class 0x03xxxx: NVSwitches, bridges and audio functions are not GPUs),
/// as normalised addresses, sorted.
pub fn nvidia_gpus_on_pci(sysfs: &Path) -> Vec<String> {
    let Ok(devices) = std::fs::read_dir(sysfs.join("bus/pci/devices")) else {
        return Vec::new();
    };
    let mut out: Vec<String> = devices
        .filter_map(|d| d.ok())
        .filter(|d| {
            let read = |f: &str| std::fs::read_to_string(d.path().join(f)).unwrap_or_default();
            read("vendor").trim() == "0x10de" && read("class").trim().starts_with("0x03")
        })
        .filter_map(|d| norm_bus(&d.file_name().to_string_lossy()))
        .collect();
    out.sort();
    out
}

/// GPUs expected (PCI) against GPUs seen (NVML).
pub fn present(pci: &[String], gpus: &GpuSnapshot) -> Finding {
    let seen: Vec<String> = gpus
        .gpus
        .iter()
        .filter_map(|g| norm_bus(&g.pci_bus_id))
        .collect();
    let missing: Vec<&String> = pci.iter().filter(|p| !seen.contains(p)).collect();
    let list = |v: &[&String]| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
    if let Some(why) = &gpus.error {
        if !pci.is_empty() {
            return Finding::bad(
                "gpus",
                "present",
                State::Failed,
                Action::RestartBm,
                format!(
                    "{} NVIDIA GPU(s) on PCI ({}), but NVML answers for none: {why}",
                    pci.len(),
                    list(&pci.iter().collect::<Vec<_>>())
                ),
            );
        }
        return Finding::ok("gpus", "present", format!("no NVIDIA GPU on PCI ({why})"));
    }
    if (gpus.count as usize) < pci.len() {
        return Finding::bad(
            "gpus",
            "present",
            State::Failed,
            Action::RestartBm,
            format!(
                "{} NVIDIA GPU(s) on PCI, NVML sees {}: not seen {}",
                pci.len(),
                gpus.count,
                list(&missing)
            ),
        );
    }
    Finding::ok(
        "gpus",
        "present",
        format!(
            "NVML sees {} GPU(s), {} NVIDIA GPU(s) on PCI",
            gpus.count,
            pci.len()
        ),
    )
}

/// A GPU NVML cannot reach.
pub fn lost(component: &str, down: bool) -> Finding {
    if down {
        Finding::bad(
            component,
            "lost",
            State::Failed,
            Action::RestartBm,
            "NVML cannot reach the GPU (fallen off the bus or not answering)",
        )
    } else {
        Finding::ok(component, "lost", "answers NVML")
    }
}

/// The worst of several conditions, their reasons joined; ok with
/// `ok_reason` when there is none.
fn worst(
    component: &str,
    check: &str,
    bad: Vec<(State, Action, String)>,
    ok_reason: &str,
) -> Finding {
    let Some(top) = bad.iter().max_by_key(|b| (b.0, b.1)).cloned() else {
        return Finding::ok(component, check, ok_reason);
    };
    let reason = bad
        .iter()
        .map(|b| b.2.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    Finding::bad(component, check, top.0, top.1, reason)
}

/// Row remapping, uncorrectable ECC errors, retired pages.
pub fn memory(component: &str, h: &GpuHealth) -> Finding {
    let mut bad = Vec::new();
    if h.remap_failure == Some(true) {
        bad.push((
            State::Failed,
            Action::ContactSupport,
            "row remapping failed".to_owned(),
        ));
    }
    if h.remap_pending == Some(true) {
        bad.push((
            State::Degraded,
            Action::ResetGpu,
            "row remapping pending (takes effect at the next GPU reset)".to_owned(),
        ));
    }
    if let Some(n) = h.retired_pages.filter(|&n| n >= RETIRED_PAGES_LIMIT) {
        bad.push((
            State::Failed,
            Action::ContactSupport,
            format!("{n} retired pages (NVIDIA's limit: {RETIRED_PAGES_LIMIT})"),
        ));
    }
    if h.retired_pending == Some(true) {
        bad.push((
            State::Degraded,
            Action::RestartBm,
            "page retirement pending (takes effect at the next reboot)".to_owned(),
        ));
    }
    if let Some(n) = h.ecc_uncorrected_volatile.filter(|&n| n > 0) {
        bad.push((
            State::Degraded,
            Action::ResetGpu,
            format!("{n} uncorrectable ECC error(s) since the driver loaded"),
        ));
    }
    worst(
        component,
        "memory",
        bad,
        "no uncorrectable error, no pending remap",
    )
}

/// NVLink links that exist and are not active.
pub fn nvlink(component: &str, h: &GpuHealth) -> Finding {
    if h.nvlink_down.is_empty() {
        let why = if h.nvlinks == 0 {
            "no NVLink".to_owned()
        } else {
            format!("{} of {} links active", h.nvlinks, h.nvlinks)
        };
        return Finding::ok(component, "nvlink", why);
    }
    let down: Vec<String> = h.nvlink_down.iter().map(u32::to_string).collect();
    Finding::bad(
        component,
        "nvlink",
        State::Degraded,
        Action::ResetGpu,
        format!(
            "NVLink link(s) {} down ({} of {} active)",
            down.join(", "),
            h.nvlinks as usize - down.len().min(h.nvlinks as usize),
            h.nvlinks
        ),
    )
}

/// The PCIe link below its maximum width, or (while the GPU works; an idle
/// GPU lowers its link generation to save power) generation.
pub fn pcie(component: &str, h: &GpuHealth, busy: bool) -> Finding {
    let mut bad = Vec::new();
    if let Some((cur, max)) = h.pcie_width.filter(|(c, m)| c < m) {
        bad.push((
            State::Degraded,
            Action::CheckMechanicals,
            format!("PCIe link x{cur} of x{max}"),
        ));
    }
    if let Some((cur, max)) = h.pcie_gen.filter(|(c, m)| busy && c < m) {
        bad.push((
            State::Degraded,
            Action::CheckMechanicals,
            format!("PCIe gen {cur} of {max} while busy"),
        ));
    }
    worst(component, "pcie", bad, "PCIe link at its maximum")
}

/// Hardware or thermal slowdown active.
pub fn thermal(component: &str, h: &GpuHealth) -> Finding {
    if h.slowdowns.is_empty() {
        return Finding::ok(component, "thermal", "no hardware or thermal slowdown");
    }
    Finding::bad(
        component,
        "thermal",
        State::Degraded,
        Action::CheckMechanicals,
        format!("clocks slowed: {}", h.slowdowns.join(", ")),
    )
}

/// The driver's own recovery action (`NVML_FI_DEV_GET_GPU_RECOVERY_ACTION`).
pub fn recovery(component: &str, action: u32) -> Finding {
    let (state, act, what) = match action {
        0 => return Finding::ok(component, "recovery", "the driver recommends no action"),
        1 => (State::Failed, Action::ResetGpu, "a GPU reset"),
        2 => (State::Failed, Action::RestartBm, "a node reboot"),
        3 => (
            State::Degraded,
            Action::ResetGpu,
            "draining peer-to-peer traffic (then a GPU reset)",
        ),
        4 => (
            State::Failed,
            Action::ResetGpu,
            "draining peer-to-peer traffic and a GPU reset",
        ),
        _ => (
            State::Degraded,
            Action::ResetGpu,
            "an action this agent does not know",
        ),
    };
    Finding::bad(
        component,
        "recovery",
        state,
        act,
        format!("the driver recommends {what} (recovery action {action})"),
    )
}

/// The GPU's NVSwitch fabric registration: `state` 3 (completed) with
/// status 0 is ok.
pub fn fabric(component: &str, (state, status): (u32, u32)) -> Finding {
    match (state, status) {
        (3, 0) => Finding::ok(component, "fabric", "NVSwitch fabric registration completed"),
        (3, s) => Finding::bad(
            component,
            "fabric",
            State::Failed,
            Action::RestartBm,
            format!("NVSwitch fabric registration failed (NVML status {s}): check nvidia-fabricmanager"),
        ),
        (s, _) => Finding::bad(
            component,
            "fabric",
            State::Failed,
            Action::RestartBm,
            format!(
                "NVSwitch fabric registration {} (state {s}): no NVLink peer-to-peer until it completes; check nvidia-fabricmanager",
                if s == 2 { "in progress" } else { "not started" }
            ),
        ),
    }
}

/// An InfiniBand port's state and rate: `state` as sysfs writes it
/// (`4: ACTIVE`), `rate` in Gb/s; `want` the expected rate (0: any).
pub fn infiniband(component: &str, state: &str, rate: Option<f64>, want: f64) -> Finding {
    let state = state.trim();
    if !state.ends_with("ACTIVE") || state.contains("INIT") {
        return Finding::bad(
            component,
            "infiniband",
            State::Degraded,
            Action::CheckCable,
            format!("port state {state}, not ACTIVE"),
        );
    }
    match rate {
        Some(r) if want > 0.0 && r < want => Finding::bad(
            component,
            "infiniband",
            State::Degraded,
            Action::CheckCable,
            format!("port rate {r} Gb/s, below the expected {want} Gb/s"),
        ),
        Some(r) => Finding::ok(component, "infiniband", format!("ACTIVE at {r} Gb/s")),
        None => Finding::ok(component, "infiniband", "ACTIVE"),
    }
}

/// The file system holding `path` (the checkpoint directory) in the mount
/// table `mounts` (`/proc/1/mounts`): the longest mount point that is a
/// prefix of the path decides. Read-only: failed, checkpoints cannot be
/// written.
pub fn checkpoint_fs(path: &str, mounts: &str) -> Finding {
    let (table, _) = crate::filesystem::mounts::parse(mounts);
    let under = |mp: &str| {
        path == mp || mp == "/" || path.starts_with(&format!("{}/", mp.trim_end_matches('/')))
    };
    // The last of equal mount points wins: it is mounted over the others.
    let best = table.iter().filter(|m| under(&m.path)).fold(
        None::<&crate::filesystem::mounts::Mount>,
        |best, m| match best {
            Some(b) if b.path.len() > m.path.len() => Some(b),
            _ => Some(m),
        },
    );
    match best {
        None => Finding::bad(
            "host",
            "checkpoint_fs",
            State::Degraded,
            Action::Investigate,
            format!("no mount holds {path}"),
        ),
        Some(m) if m.read_only => Finding::bad(
            "host",
            "checkpoint_fs",
            State::Failed,
            Action::Investigate,
            format!(
                "{path} is on a read-only file system ({} {} at {}): checkpoints cannot be written",
                m.fs_type, m.device, m.mount_point
            ),
        ),
        Some(m) => Finding::ok(
            "host",
            "checkpoint_fs",
            format!("{path} is writable ({} at {})", m.fs_type, m.mount_point),
        ),
    }
}

/// The clock: `state` is adjtimex's return value (5 = `TIME_ERROR`: no
/// time daemon has synchronised it).
pub fn clock(state: i32) -> Finding {
    if state == 5 {
        Finding::bad(
            "host",
            "clock",
            State::Degraded,
            Action::SyncClock,
            "clock not synchronised (adjtimex: TIME_ERROR)",
        )
    } else {
        Finding::ok("host", "clock", "clock synchronised")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared::GpuIds;

    #[test]
    fn present_compares_pci_with_nvml() {
        let pci = vec!["0000:18:00".to_owned(), "0000:2a:00".to_owned()];
        let mut snap = GpuSnapshot {
            sampled: true,
            count: 1,
            gpus: vec![GpuIds {
                pci_bus_id: "00000000:18:00.0".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let f = present(&pci, &snap);
        assert_eq!((f.state, f.action), (State::Failed, Action::RestartBm));
        assert!(f.reason.ends_with("not seen 0000:2a:00"), "{}", f.reason);
        snap.count = 2;
        assert_eq!(present(&pci, &snap).state, State::Ok);
        snap.error = Some("no NVML library".into());
        assert_eq!(present(&pci, &snap).state, State::Failed);
        assert_eq!(present(&[], &snap).state, State::Ok);
    }

    #[test]
    fn gpu_facts_to_states() {
        let h = GpuHealth {
            remap_pending: Some(true),
            ecc_uncorrected_volatile: Some(2),
            nvlinks: 18,
            nvlink_down: vec![5],
            pcie_width: Some((8, 16)),
            pcie_gen: Some((3, 5)),
            slowdowns: vec!["hw_thermal_slowdown"],
            ..Default::default()
        };
        let m = memory("gpu0", &h);
        assert_eq!((m.state, m.action), (State::Degraded, Action::ResetGpu));
        assert!(m.reason.contains("row remapping pending"));
        let f = memory(
            "gpu0",
            &GpuHealth {
                remap_failure: Some(true),
                ..h.clone()
            },
        );
        assert_eq!((f.state, f.action), (State::Failed, Action::ContactSupport));
        let n = nvlink("gpu0", &h);
        assert_eq!(n.state, State::Degraded);
        assert_eq!(n.reason, "NVLink link(s) 5 down (17 of 18 active)");
        assert_eq!(pcie("gpu0", &h, false).reason, "PCIe link x8 of x16");
        assert!(pcie("gpu0", &h, true).reason.contains("gen 3 of 5"));
        assert_eq!(thermal("gpu0", &h).state, State::Degraded);
        let ok = GpuHealth::default();
        for f in [
            memory("gpu0", &ok),
            nvlink("gpu0", &ok),
            pcie("gpu0", &ok, true),
            thermal("gpu0", &ok),
        ] {
            assert_eq!(f.state, State::Ok, "{f:?}");
        }
    }

    #[test]
    fn recovery_and_fabric() {
        assert_eq!(recovery("gpu0", 0).state, State::Ok);
        let r = recovery("gpu0", 2);
        assert_eq!((r.state, r.action), (State::Failed, Action::RestartBm));
        assert_eq!(recovery("gpu0", 3).state, State::Degraded);
        assert_eq!(recovery("gpu0", 9).state, State::Degraded);
        assert_eq!(fabric("gpu0", (3, 0)).state, State::Ok);
        assert_eq!(fabric("gpu0", (1, 0)).state, State::Failed);
        assert!(fabric("gpu0", (3, 12)).reason.contains("status 12"));
    }

    #[test]
    fn checkpoint_file_system() {
        let mounts = "/dev/nvme0n1p1 / ext4 rw,relatime 0 0\n10.0.0.2:/ckpt /mnt/ckpt nfs4 ro,relatime 0 0\n/dev/md0 /mnt/ckpt/local xfs rw 0 0\n";
        let f = checkpoint_fs("/mnt/ckpt/run1", mounts);
        assert_eq!((f.state, f.action), (State::Failed, Action::Investigate));
        assert!(
            f.reason.contains("nfs4 10.0.0.2:/ckpt at /mnt/ckpt"),
            "{}",
            f.reason
        );
        assert_eq!(checkpoint_fs("/mnt/ckpt/local/x", mounts).state, State::Ok);
        assert_eq!(checkpoint_fs("/home/x", mounts).state, State::Ok);
        assert_eq!(checkpoint_fs("/mnt/ckptx", mounts).state, State::Ok);
        assert_eq!(checkpoint_fs("/x", "").state, State::Degraded);
    }

    #[test]
    fn infiniband_ports() {
        assert_eq!(
            infiniband("mlx5_0:1", "4: ACTIVE", Some(400.0), 400.0).state,
            State::Ok
        );
        assert_eq!(
            infiniband("mlx5_0:1", "4: ACTIVE", Some(200.0), 400.0).state,
            State::Degraded
        );
        assert_eq!(
            infiniband("mlx5_0:1", "1: DOWN", Some(400.0), 0.0).state,
            State::Degraded
        );
        assert_eq!(
            infiniband("mlx5_0:1", "2: INIT", None, 0.0).state,
            State::Degraded
        );
        assert_eq!(clock(5).state, State::Degraded);
        assert_eq!(clock(0).state, State::Ok);
    }
}
