//! TPU chips on the PCI bus, and the processes holding them.
//!
//! A chip is a PCI function of vendor 0x1ae0 (Google) under
//! `<sysfs>/bus/pci/devices/*`, whether or not a workload runs; its device
//! id names the generation ([`GENERATIONS`], from Google's `tpu-info`). Chips
//! are numbered in PCI address order, as `tpu-info` and libtpu number them.
//! A chip's device node is `/dev/accel<N>` (v2-v4: `accel/accel<N>` under
//! the PCI device) or `/dev/vfio/<group>` (v5e and newer: the device's
//! `iommu_group`); the processes holding it are those with an open file
//! descriptor on that node (`<procfs>/<pid>/fd/*`).

use std::collections::BTreeMap;
use std::path::Path;

/// Google's PCI vendor id.
pub const VENDOR: &str = "0x1ae0";

/// A TPU generation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Generation {
    /// Its name (`v5e`), the `type` label.
    pub name: &'static str,
    /// HBM per chip, bytes.
    pub hbm_bytes: f64,
    /// TensorCore devices per chip (libtpu's devices).
    pub devices_per_chip: u32,
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

const fn generation(name: &'static str, hbm_gib: f64, devices_per_chip: u32) -> Generation {
    Generation {
        name,
        hbm_bytes: hbm_gib * GIB,
        devices_per_chip,
    }
}

/// (PCI device id, subsystem device id or "" for any, generation).
pub const GENERATIONS: &[(&str, &str, Generation)] = &[
    ("0x0027", "0x004e", generation("v2", 8.0, 2)),
    ("0x0027", "0x004f", generation("v3", 16.0, 2)),
    ("0x005e", "", generation("v4", 32.0, 1)),
    ("0x0063", "", generation("v5e", 16.0, 1)),
    ("0x0062", "", generation("v5p", 95.0, 1)),
    ("0x006f", "", generation("v6e", 32.0, 1)),
    ("0x0076", "", generation("tpu7x", 192.0, 2)),
];

/// The generation of a chip with these ids, if known.
pub fn generation_of(device: &str, subsystem: &str) -> Option<Generation> {
    GENERATIONS
        .iter()
        .find(|(d, s, _)| *d == device && (s.is_empty() || *s == subsystem))
        .map(|(_, _, g)| *g)
}

/// One chip.
#[derive(Clone, Debug, PartialEq)]
pub struct Chip {
    /// Index in PCI address order (the `chip` label).
    pub index: u32,
    /// PCI address (`0000:00:04.0`).
    pub pci_bus_id: String,
    /// Its generation; `None` for a device id not in the table (reported
    /// with `type="unknown"`).
    pub generation: Option<Generation>,
    /// Its device node, when known (`/dev/vfio/3`, `/dev/accel0`).
    pub node: Option<String>,
}

fn attr(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name))
        .map(|s| s.trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// The TPU chips under `<sysfs>/bus/pci/devices`; empty when there are
/// none or the directory cannot be read.
pub fn discover(sysfs: &Path) -> Vec<Chip> {
    let dir = sysfs.join("bus/pci/devices");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut found: Vec<(String, Option<Generation>, Option<String>)> = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        if attr(&path, "vendor") != VENDOR {
            continue;
        }
        let generation = generation_of(&attr(&path, "device"), &attr(&path, "subsystem_device"));
        let node = device_node(&path);
        found.push((
            e.file_name().to_string_lossy().into_owned(),
            generation,
            node,
        ));
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
        .into_iter()
        .enumerate()
        .map(|(i, (pci_bus_id, generation, node))| Chip {
            index: i as u32,
            pci_bus_id,
            generation,
            node,
        })
        .collect()
}

/// `/dev/accel<N>` when the device has an `accel/accel<N>` child, else
/// `/dev/vfio/<group>` from its `iommu_group` link.
fn device_node(dev: &Path) -> Option<String> {
    if let Ok(entries) = std::fs::read_dir(dev.join("accel")) {
        let mut names: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("accel"))
            .collect();
        names.sort();
        if let Some(n) = names.first() {
            return Some(format!("/dev/{n}"));
        }
    }
    let group = std::fs::read_link(dev.join("iommu_group")).ok()?;
    let group = group.file_name()?.to_str()?;
    group
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| format!("/dev/vfio/{group}"))
}

/// A process holding a chip.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Holder {
    /// Its pid.
    pub pid: u32,
    /// Its command name.
    pub comm: String,
}

/// Most processes reported per chip.
pub const MAX_HOLDERS: usize = 16;

/// Which processes hold which device nodes, by node: one pass over
/// `<procfs>/*/fd`. Processes that exit or whose fds cannot be read (not
/// ours, without CAP_SYS_PTRACE) are skipped.
pub fn holders(procfs: &Path, nodes: &[&str]) -> BTreeMap<String, Vec<Holder>> {
    let mut out: BTreeMap<String, Vec<Holder>> = BTreeMap::new();
    if nodes.is_empty() {
        return out;
    }
    let Ok(entries) = std::fs::read_dir(procfs) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(e.path().join("fd")) else {
            continue;
        };
        let mut held: Vec<&str> = Vec::new();
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let Some(t) = target.to_str() else { continue };
            if let Some(n) = nodes.iter().find(|n| **n == t) {
                if !held.contains(n) {
                    held.push(n);
                }
            }
        }
        if held.is_empty() {
            continue;
        }
        let comm = std::fs::read_to_string(e.path().join("comm"))
            .map(|s| s.trim_end().to_owned())
            .unwrap_or_default();
        for n in held {
            let list = out.entry(n.to_owned()).or_default();
            if list.len() < MAX_HOLDERS {
                list.push(Holder {
                    pid,
                    comm: comm.clone(),
                });
            }
        }
    }
    for list in out.values_mut() {
        list.sort();
    }
    out
}
