//! AMD Instinct GPUs through the amdgpu driver's sysfs and procfs files: no
//! ROCm, no amd-smi library, no gpuagent daemon.
//!
//! This is a backend of the `gpu` collector, not a collector of its own:
//! when NVML finds no GPU and AMD GPUs (PCI vendor 0x1002) are under
//! /sys/class/drm, the `gpu` collector samples them here. So an AMD node
//! exports the same `accel_gpu_*` families as an NVIDIA node (same names,
//! types, labels and help, from the same table), `accel_gpu_info` says
//! `vendor="amd"`, the self-metrics say `collector="gpu"`, the `gpus` topic
//! (kubernetes, goodput, cloud, process) and `profile` see the GPUs, and the
//! shipped dashboards and alerts work unchanged. What only AMD has is under
//! `accel_gpu_amd_*`, each family naming the file it comes from.
//!
//! Per GPU and sample: `gpu_busy_percent`, `mem_busy_percent`,
//! `mem_info_vram_*`, hwmon (temperatures, power, power cap, energy where
//! the kernel has it), `pp_dpm_*` clocks, the PCI link attributes,
//! `pcie_replay_count`, `ras/*_err_count`, `ras/gpu_vram_bad_pages`,
//! `current_{compute,memory}_partition`, the XGMI topology files, and the
//! binary `gpu_metrics` table (energy, throttle residencies, XGMI traffic
//! and link state, PCIe counters, per-partition activity; see
//! [`metrics`]). Per process: the drm-client keys of /proc/PID/fdinfo.
//!
//! Tested on fixture trees only (tests/fixtures/amd); docs/amd.md says how
//! to check it on a real node.

mod clients;
pub mod families;
pub mod metrics;
pub mod sysfs;

pub use families::*;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{accounting, identity, jobs, memory, pcie, power, process, reliability, throttle};
use super::{utilization, GpuOptions};
use crate::kubernetes::PodMap;
use crate::shared::{GpuSnapshot, Topic};
use crate::{cgroup, BuildContext, Built, CollectError, Collector, FamilyDef, Sample};
use clients::{by_gpu, ClientScan, Proc};
use metrics::{GpuMetrics, Residency};

/// Model names by PCI device id, for a part whose `product_name` (read
/// from the board FRU) is missing.
const MODELS: [(&str, &str); 7] = [
    ("0x740c", "AMD Instinct MI250X / MI250"),
    ("0x740f", "AMD Instinct MI210"),
    ("0x74a0", "AMD Instinct MI300A"),
    ("0x74a1", "AMD Instinct MI300X"),
    ("0x74a5", "AMD Instinct MI325X"),
    ("0x75a0", "AMD Instinct MI350X"),
    ("0x75a3", "AMD Instinct MI355X"),
];

/// The hwmon temperature labels and the `sensor` label each is exported
/// under (NVIDIA's `gpu` is the edge sensor's meaning).
const HWMON_SENSORS: [(&str, &str); 3] =
    [("edge", "gpu"), ("junction", "junction"), ("mem", "memory")];

/// The `pp_dpm_*` files and their `clock` labels.
const DPM_CLOCKS: [(&str, &str); 4] = [
    ("pp_dpm_sclk", "graphics"),
    ("pp_dpm_mclk", "memory"),
    ("pp_dpm_socclk", "soc"),
    ("pp_dpm_fclk", "fabric"),
];

/// One AMD GPU and what is kept of it between samples.
#[derive(Debug, Default)]
struct Card {
    /// `/sys/class/drm/cardN/device`.
    dir: PathBuf,
    /// PCI address (`drm-pdev` in fdinfo).
    bus: String,
    info: Option<Vec<(&'static str, String)>>,
    uuid: String,
    last: Option<Instant>,
    busy_seconds: f64,
    allocated_seconds: f64,
    idle_allocated_seconds: f64,
    /// Throttle seconds by reason, integrated from the residencies.
    throttle_seconds: [f64; 5],
    residency: Option<Residency>,
    /// Skipped tables by reason.
    skipped: BTreeMap<&'static str, u64>,
    busy: bool,
    held: Vec<u32>,
}

/// The AMD backend of the `gpu` collector.
pub struct Amd {
    cards: Vec<Card>,
    opts: GpuOptions,
    /// `--collector.gpu.detail`.
    detail: bool,
    procfs: PathBuf,
    driver_version: String,
    gpus_out: Topic<GpuSnapshot>,
    pods: Topic<PodMap>,
    /// Engine nanoseconds of each (pid, pdev) at the previous sample.
    engine_prev: HashMap<(u32, String), (Instant, u64)>,
    /// (gpu, reason) pairs already logged.
    logged: HashSet<(usize, &'static str)>,
    /// The job-mapping directory's watcher (`--collector.gpu.job-mapping-dir`).
    job_mapping: Option<jobs::Watcher>,
    /// Supervises the watcher.
    workers: crate::workers::Workers,
    /// The buffer `gpu_metrics` is read into.
    buf: Vec<u8>,
    /// Finds the processes holding the GPUs.
    scan: ClientScan,
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

fn read_u64(path: &Path) -> Option<u64> {
    read(path)?.parse().ok()
}

/// The AMD GPUs under `sysfs`/class/drm: `cardN` whose device has PCI
/// vendor 0x1002, by card number. A compute partition's extra card (an
/// `amdgpu_xcp` platform device, no PCI vendor) is not a GPU of its own.
fn discover(sysfs: &Path) -> Vec<Card> {
    let Ok(dir) = std::fs::read_dir(sysfs.join("class/drm")) else {
        return Vec::new();
    };
    let mut cards: Vec<(u32, PathBuf)> = dir
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n: u32 = name.strip_prefix("card")?.parse().ok()?;
            let dev = e.path().join("device");
            (read(&dev.join("vendor")).as_deref() == Some("0x1002")).then_some((n, dev))
        })
        .collect();
    cards.sort();
    cards
        .into_iter()
        .map(|(_, dir)| Card {
            bus: read(&dir.join("uevent"))
                .as_deref()
                .and_then(sysfs::pci_slot)
                .unwrap_or_default()
                .to_owned(),
            dir,
            ..Default::default()
        })
        .collect()
}

/// The AMD backend when there are AMD GPUs, else absent with `nvidia_why`
/// and the reason there is no AMD GPU.
pub(super) fn build(ctx: &BuildContext, nvidia_why: String) -> Built {
    let sysfs = &ctx.paths.sysfs;
    let cards = discover(sysfs);
    if cards.is_empty() {
        return Built::Absent(format!(
            "{nvidia_why}; no AMD GPU (PCI vendor 0x1002) under {}",
            sysfs.join("class/drm").display()
        ));
    }
    let opts = ctx.options::<GpuOptions>();
    tracing::info!(
        gpus = cards.len(),
        "no NVIDIA GPU; sampling AMD GPUs through amdgpu sysfs"
    );
    Built::Ready(Box::new(Amd {
        cards,
        opts: opts.clone(),
        detail: ctx.detail,
        procfs: ctx.paths.procfs.clone(),
        driver_version: read(&sysfs.join("module/amdgpu/version")).unwrap_or_default(),
        gpus_out: ctx.shared.gpus.clone(),
        pods: ctx.shared.pods.clone(),
        engine_prev: HashMap::new(),
        logged: HashSet::new(),
        job_mapping: opts
            .job_mapping_dir
            .clone()
            .filter(|d| !d.as_os_str().is_empty())
            .map(|d| jobs::Watcher::start(d, jobs::POLL, ctx.workers)),
        workers: ctx.workers.clone(),
        buf: Vec::new(),
        scan: ClientScan::default(),
    }))
}

/// Adds one series of `def` with `gpu`, `uuid` and `extra`.
fn put(
    out: &mut Sample,
    def: &'static FamilyDef,
    ids: [&str; 2],
    extra: &[(&'static str, &str)],
    v: f64,
) {
    let mut labels: Vec<(&'static str, &str)> = vec![("gpu", ids[0]), ("uuid", ids[1])];
    labels.extend_from_slice(extra);
    out.add(def).add(&labels, v);
}

/// The labels of `accel_gpu_info`.
fn identity(dir: &Path, index: usize, bus: &str, driver: &str) -> Vec<(&'static str, String)> {
    let file = |f: &str| read(&dir.join(f)).unwrap_or_default();
    let uuid = read(&dir.join("unique_id")).unwrap_or_else(|| bus.to_owned());
    let name = read(&dir.join("product_name"))
        .filter(|n| !n.is_empty())
        .or_else(|| {
            let id = read(&dir.join("device"))?;
            MODELS
                .iter()
                .find(|(d, _)| *d == id)
                .map(|(_, n)| n.to_string())
        })
        .unwrap_or_default();
    vec![
        ("gpu", index.to_string()),
        ("uuid", uuid),
        ("name", name),
        ("pci_bus_id", bus.to_owned()),
        ("serial", file("serial_number")),
        ("vbios_version", file("vbios_version")),
        ("driver_version", driver.to_owned()),
        ("cuda_driver_version", String::new()),
        ("vendor", "amd".to_owned()),
    ]
}

/// The first hwmon directory of a device.
fn hwmon(dir: &Path) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir.join("hwmon"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs.into_iter().next()
}

/// Who holds the GPUs, gathered over one sample.
#[derive(Debug, Default)]
struct Holders {
    /// Slurm jobs of the processes.
    jobs: Vec<jobs::ProcessJob>,
    /// Pids of the processes.
    pids: Vec<u32>,
}

impl Amd {
    /// Samples card `i` into `out`; false when its device is gone.
    fn sample_card(
        &mut self,
        i: usize,
        metrics: Option<&GpuMetrics>,
        procs: &[Proc],
        now: Instant,
        out: &mut Sample,
        holders: &mut Holders,
    ) -> bool {
        let card = &mut self.cards[i];
        let dir = card.dir.clone();
        if !dir.join("vendor").exists() {
            return false;
        }
        if card.info.is_none() {
            let info = identity(&dir, i, &card.bus, &self.driver_version);
            card.uuid = info[1].1.clone();
            card.info = Some(info);
        }
        let gpu = i.to_string();
        let uuid = card.uuid.clone();
        let ids = [gpu.as_str(), uuid.as_str()];
        let hw = hwmon(&dir);
        let hwf = |f: &str| hw.as_ref().and_then(|h| read_u64(&h.join(f)));

        // Memory.
        let used = read_u64(&dir.join("mem_info_vram_used"));
        let total = read_u64(&dir.join("mem_info_vram_total"));
        if let Some(u) = used {
            put(out, &memory::MEMORY_USED_BYTES, ids, &[], u as f64);
        }
        if let (Some(u), Some(t)) = (used, total) {
            put(
                out,
                &memory::MEMORY_FREE_BYTES,
                ids,
                &[],
                t.saturating_sub(u) as f64,
            );
        }
        if let Some(t) = total {
            put(out, &memory::MEMORY_TOTAL_BYTES, ids, &[], t as f64);
        }

        // Utilisation: the driver's files, else the table's averages.
        let busy = read_u64(&dir.join("gpu_busy_percent"))
            .map(|p| p as f64 / 100.0)
            .or(metrics.and_then(|m| m.gfx_activity));
        if let Some(b) = busy {
            put(out, &utilization::UTILIZATION_RATIO, ids, &[], b);
        }
        let mem_busy = read_u64(&dir.join("mem_busy_percent"))
            .map(|p| p as f64 / 100.0)
            .or(metrics.and_then(|m| m.umc_activity));
        if let Some(b) = mem_busy {
            put(out, &utilization::MEMORY_UTILIZATION_RATIO, ids, &[], b);
        }

        // Power and energy: hwmon (µW, µJ), else the table.
        let watts = hwf("power1_average")
            .or_else(|| hwf("power1_input"))
            .map(|uw| uw as f64 / 1e6)
            .or(metrics.and_then(|m| m.power_watts));
        if let Some(w) = watts {
            put(out, &power::POWER_WATTS, ids, &[], w);
        }
        let limit = hwf("power1_cap");
        if let Some(cap) = limit {
            put(out, &power::POWER_LIMIT_WATTS, ids, &[], cap as f64 / 1e6);
        }
        // The default only while the cap differs from it (as for NVIDIA).
        if let Some(cap) = hwf("power1_cap_default").filter(|d| self.detail || limit != Some(*d)) {
            put(
                out,
                &power::POWER_DEFAULT_LIMIT_WATTS,
                ids,
                &[],
                cap as f64 / 1e6,
            );
        }
        let joules = hwf("energy1_input")
            .map(|uj| uj as f64 / 1e6)
            .or(metrics.and_then(|m| m.energy_joules));
        if let Some(j) = joules {
            put(out, &power::ENERGY_JOULES, ids, &[], j);
        }

        // Temperatures: hwmon's sensors, then what only the table has.
        let mut temps: Vec<(&str, f64)> = Vec::new();
        for n in 1..=3 {
            let label = hw
                .as_ref()
                .and_then(|h| read(&h.join(format!("temp{n}_label"))));
            let sensor = label
                .and_then(|l| HWMON_SENSORS.iter().find(|(k, _)| *k == l))
                .map(|(_, s)| *s);
            if let (Some(s), Some(mc)) = (sensor, hwf(&format!("temp{n}_input"))) {
                temps.push((s, mc as f64 / 1000.0));
            }
        }
        for (s, v) in metrics
            .map(|m| m.temperatures.as_slice())
            .unwrap_or_default()
        {
            if !temps.iter().any(|(t, _)| t == s) {
                temps.push((s, *v));
            }
        }
        for (s, v) in temps {
            put(out, &power::TEMPERATURE_CELSIUS, ids, &[("sensor", s)], v);
        }

        // Clocks: the DPM tables, else the table's current clocks.
        let mut max_clocks = Vec::new();
        for (file, clock) in DPM_CLOCKS {
            let (cur, max) = read(&dir.join(file))
                .map(|t| sysfs::parse_dpm(&t))
                .unwrap_or_default();
            let cur = cur.or_else(|| match clock {
                "graphics" => metrics.and_then(|m| m.gfxclk_hertz),
                "memory" => metrics.and_then(|m| m.uclk_hertz),
                _ => None,
            });
            if let Some(hz) = cur {
                put(out, &throttle::CLOCK_HERTZ, ids, &[("clock", clock)], hz);
            }
            if let Some(hz) = max {
                max_clocks.push((clock, hz));
            }
        }
        for (clock, hz) in max_clocks {
            put(
                out,
                &throttle::CLOCK_MAX_HERTZ,
                ids,
                &[("clock", clock)],
                hz,
            );
        }

        // Throttle time, integrated from the residency accumulators.
        if let Some(r) = metrics.and_then(|m| m.residency) {
            let dt = card
                .last
                .map_or(0.0, |t| now.duration_since(t).as_secs_f64());
            if let Some(prev) = card.residency {
                integrate_residency(&mut card.throttle_seconds, &prev, &r, dt);
            }
            card.residency = Some(r);
            for (k, (reason, v)) in r.by_reason.iter().enumerate() {
                if v.is_some() {
                    put(
                        out,
                        &throttle::THROTTLE_SECONDS,
                        ids,
                        &[("reason", reason)],
                        card.throttle_seconds[k],
                    );
                }
            }
        }

        // PCIe.
        let link = |f: &str| read(&dir.join(f));
        let gens = [
            ("current_link_speed", &pcie::PCIE_LINK_GENERATION),
            ("max_link_speed", &pcie::PCIE_LINK_MAX_GENERATION),
        ];
        for (f, def) in gens {
            if let Some(g) = link(f).as_deref().and_then(sysfs::pcie_generation) {
                put(out, def, ids, &[], g);
            }
        }
        let widths = [
            ("current_link_width", &pcie::PCIE_LINK_WIDTH),
            ("max_link_width", &pcie::PCIE_LINK_MAX_WIDTH),
        ];
        for (f, def) in widths {
            if let Some(w) = link(f).and_then(|w| w.parse::<f64>().ok()) {
                put(out, def, ids, &[], w);
            }
        }
        let replays =
            read_u64(&dir.join("pcie_replay_count")).or(metrics.and_then(|m| m.pcie_replays));
        if let Some(r) = replays {
            put(out, &pcie::PCIE_REPLAY_ERRORS, ids, &[], r as f64);
        }
        if let Some(m) = metrics {
            let counters = [
                (&AMD_PCIE_RECOVERIES, m.pcie_recoveries),
                (&AMD_PCIE_REPLAY_ROLLOVERS, m.pcie_replay_rollovers),
                (&AMD_PCIE_NAKS_SENT, m.pcie_naks_sent),
                (&AMD_PCIE_NAKS_RECEIVED, m.pcie_naks_received),
            ];
            for (def, v) in counters {
                if let Some(v) = v {
                    put(out, def, ids, &[], v as f64);
                }
            }
        }

        // RAS: per block, and their sums as the ECC family.
        let mut blocks: Vec<(String, [Option<u64>; 3])> = std::fs::read_dir(dir.join("ras"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let block = name.strip_suffix("_err_count")?.to_owned();
                Some((block, sysfs::parse_ras(&read(&e.path())?)))
            })
            .collect();
        blocks.sort_by(|a, b| a.0.cmp(&b.0));
        let types = ["uncorrected", "corrected", "deferred"];
        let mut sums = [None::<u64>; 3];
        for (block, counts) in &blocks {
            for (k, c) in counts.iter().enumerate() {
                if let Some(c) = c {
                    put(
                        out,
                        &AMD_RAS_ERRORS,
                        ids,
                        &[("block", block), ("type", types[k])],
                        *c as f64,
                    );
                    sums[k] = Some(sums[k].unwrap_or(0).saturating_add(*c));
                }
            }
        }
        for (k, s) in sums.iter().enumerate().take(2) {
            if let Some(s) = s {
                put(
                    out,
                    &reliability::ECC_ERRORS,
                    ids,
                    &[("type", types[k]), ("counter", "volatile")],
                    *s as f64,
                );
            }
        }
        if let Some(text) = read(&dir.join("ras/gpu_vram_bad_pages")) {
            let states = ["reserved", "pending", "failed"];
            for (s, n) in states.iter().zip(sysfs::parse_bad_pages(&text)) {
                put(out, &AMD_BAD_PAGES, ids, &[("state", s)], n as f64);
            }
        }

        // XGMI and partitions, from the table.
        if let Some(m) = metrics {
            for l in &m.xgmi {
                let link = l.link.to_string();
                let lab = [("link", link.as_str())];
                if let Some(up) = l.up {
                    put(
                        out,
                        &AMD_XGMI_LINK_UP,
                        ids,
                        &lab,
                        if up { 1.0 } else { 0.0 },
                    );
                }
                if let Some(b) = l.write_bytes {
                    put(out, &AMD_XGMI_TRANSMIT_BYTES, ids, &lab, b);
                }
                if let Some(b) = l.read_bytes {
                    put(out, &AMD_XGMI_RECEIVE_BYTES, ids, &lab, b);
                }
            }
            for (p, xccs) in m.partitions.iter().enumerate() {
                if !xccs.is_empty() {
                    let mean = xccs.iter().sum::<f64>() / xccs.len() as f64;
                    put(
                        out,
                        &AMD_PARTITION_UTILIZATION_RATIO,
                        ids,
                        &[("partition", &p.to_string())],
                        mean,
                    );
                }
            }
        }
        let version = metrics
            .map(|m| format!("{}.{}", m.version.0, m.version.1))
            .unwrap_or_default();
        let compute = read(&dir.join("current_compute_partition")).unwrap_or_default();
        let memory = read(&dir.join("current_memory_partition")).unwrap_or_default();
        let hive = read(&dir.join("xgmi_hive_info/xgmi_hive_id")).unwrap_or_default();
        let phys = read(&dir.join("xgmi_physical_id")).unwrap_or_default();
        put(
            out,
            &AMD_INFO,
            ids,
            &[
                ("compute_partition", &compute),
                ("memory_partition", &memory),
                ("xgmi_hive_id", &hive),
                ("xgmi_physical_id", &phys),
                ("gpu_metrics_version", &version),
            ],
            1.0,
        );
        for (reason, n) in &card.skipped {
            put(
                out,
                &AMD_METRICS_SKIPPED,
                ids,
                &[("reason", reason)],
                *n as f64,
            );
        }

        // Processes.
        let mut procs: Vec<&Proc> = procs.iter().collect();
        procs.sort_by(|a, b| {
            b.vram
                .unwrap_or(0.0)
                .total_cmp(&a.vram.unwrap_or(0.0))
                .then(a.pid.cmp(&b.pid))
        });
        put(out, &process::PROCESSES, ids, &[], procs.len() as f64);
        card.busy = !procs.is_empty();
        card.held = procs.iter().map(|p| p.pid).collect();
        holders.pids.extend(&card.held);
        let gpu_ids = crate::GpuIds {
            index: i as u32,
            uuid: uuid.clone(),
            busy: true,
            ..Default::default()
        };
        let pods = self.pods.latest();
        for (n, p) in procs.iter().enumerate() {
            let o = cgroup::owner(&self.procfs, p.pid);
            if !o.job.is_empty() {
                holders.jobs.push(jobs::ProcessJob {
                    gpu: i as u32,
                    gpu_instance: None,
                    job: o.job.clone(),
                });
            }
            if n >= self.opts.max_processes {
                continue;
            }
            let pid = p.pid.to_string();
            let comm = process::comm(&self.procfs, p.pid);
            let (namespace, pod) = if o.pod_uid.is_empty() {
                Default::default()
            } else {
                pods.pod_of(&gpu_ids, None).unwrap_or_default()
            };
            let labels = [
                ("pid", pid.as_str()),
                ("comm", comm.as_str()),
                ("unit", o.unit.as_str()),
                ("container", o.container.as_str()),
                ("namespace", namespace.as_str()),
                ("pod", pod.as_str()),
                ("slurm_job", o.job.as_str()),
                ("gpu_instance", ""),
            ];
            put(out, &process::PROCESS_INFO, ids, &labels, 1.0);
            let key = [("pid", pid.as_str())];
            if let Some(b) = p.vram {
                put(out, &process::PROCESS_MEMORY_USED_BYTES, ids, &key, b);
            }
            if let Some(ns) = p.engine_ns {
                let k = (p.pid, card.bus.clone());
                if let Some((t, prev)) = self.engine_prev.get(&k) {
                    let dt = now.duration_since(*t).as_nanos() as f64;
                    if dt > 0.0 && ns >= *prev {
                        let r = ((ns - prev) as f64 / dt).clamp(0.0, 1.0);
                        put(out, &process::PROCESS_SM_UTILIZATION_RATIO, ids, &key, r);
                    }
                }
                self.engine_prev.insert(k, (now, ns));
            }
        }

        // Busy, allocated and idle-allocated time.
        let dt = card
            .last
            .map_or(0.0, |t| now.duration_since(t).as_secs_f64());
        card.last = Some(now);
        if let Some(b) = busy {
            card.busy_seconds += b * dt;
            put(out, &accounting::BUSY_SECONDS, ids, &[], card.busy_seconds);
        }
        let allocated = card.busy;
        if allocated {
            card.allocated_seconds += dt;
            if busy.is_some_and(|b| b < self.opts.idle_threshold) {
                card.idle_allocated_seconds += dt;
            }
        }
        put(
            out,
            &accounting::ALLOCATED,
            ids,
            &[],
            if allocated { 1.0 } else { 0.0 },
        );
        put(
            out,
            &accounting::ALLOCATED_SECONDS,
            ids,
            &[],
            card.allocated_seconds,
        );
        put(
            out,
            &accounting::IDLE_ALLOCATED_SECONDS,
            ids,
            &[],
            card.idle_allocated_seconds,
        );
        true
    }

    /// Reads and decodes card `i`'s table; a skipped one is counted and
    /// logged once per reason.
    fn metrics(&mut self, i: usize) -> Option<GpuMetrics> {
        let path = self.cards[i].dir.join("gpu_metrics");
        let reason = match metrics::read(&path, &mut self.buf) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                if self.logged.insert((i, "unreadable")) {
                    tracing::warn!(gpu = i, error = %e, "gpu_metrics unreadable; its families are left out");
                }
                "unreadable"
            }
            Ok(data) => match metrics::decode(data) {
                Ok(m) => return Some(m),
                Err(skip) => {
                    if self.logged.insert((i, skip.label())) {
                        let head: Vec<u8> = data.iter().take(4).copied().collect();
                        tracing::warn!(gpu = i, reason = skip.label(), len = data.len(), header = ?head, "gpu_metrics skipped; its families are left out");
                    }
                    skip.label()
                }
            },
        };
        *self.cards[i].skipped.entry(reason).or_insert(0) += 1;
        None
    }
}

/// Adds to `seconds` (by reason) the share of the `dt` seconds between two
/// tables that each limit was active: its residency cycles over all
/// accumulation cycles between them. The firmware's counters are u32 and
/// wrap; a reason unsupported in either table adds nothing.
fn integrate_residency(seconds: &mut [f64; 5], prev: &Residency, now: &Residency, dt: f64) {
    let cycles = now.cycles.wrapping_sub(prev.cycles);
    if cycles == 0 {
        return;
    }
    for (k, ((_, a), (_, b))) in now.by_reason.iter().zip(prev.by_reason).enumerate() {
        if let (Some(a), Some(b)) = (a, b) {
            let frac = f64::from(a.wrapping_sub(b)) / f64::from(cycles);
            seconds[k] += frac.clamp(0.0, 1.0) * dt;
        }
    }
}

impl Collector for Amd {
    fn name(&self) -> &'static str {
        "gpu"
    }

    fn sample(&mut self, out: &mut Sample) -> Result<(), CollectError> {
        // A silent or restarting job-mapping watcher fails the sample.
        self.workers.check()?;
        let now = Instant::now();
        let mut procs = by_gpu(self.scan.clients(&self.procfs, now));
        let mut holders = Holders::default();
        let mut up = Vec::with_capacity(self.cards.len());
        for i in 0..self.cards.len() {
            let m = self.metrics(i);
            let mine = procs.remove(&self.cards[i].bus).unwrap_or_default();
            let ok = self.sample_card(i, m.as_ref(), &mine, now, out, &mut holders);
            if !ok {
                self.cards[i].last = None;
                self.cards[i].residency = None;
                if self.logged.insert((i, "lost")) {
                    tracing::warn!(gpu = i, dir = %self.cards[i].dir.display(), "AMD GPU gone from sysfs");
                }
            }
            up.push(ok);
        }
        self.engine_prev.retain(|_, (t, _)| *t == now);
        let info = out.add(&identity::INFO);
        for card in &self.cards {
            if let Some(labels) = &card.info {
                let l: Vec<(&'static str, &str)> =
                    labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                info.add(&l, 1.0);
            }
        }
        let uuids: Vec<Option<&str>> = self
            .cards
            .iter()
            .map(|c| c.info.as_ref().map(|_| c.uuid.as_str()))
            .collect();
        let mapping = self.job_mapping.as_ref().map(|w| w.current());
        jobs::export(
            out,
            &uuids,
            &holders.jobs,
            mapping.as_deref().unwrap_or(&jobs::Mapping::new()),
        );
        let upf = out.add(&identity::UP);
        for (i, (card, up)) in self.cards.iter().zip(&up).enumerate() {
            upf.add(
                &[("gpu", &i.to_string()), ("uuid", &card.uuid)],
                if *up { 1.0 } else { 0.0 },
            );
        }
        let mut pids = holders.pids;
        pids.sort_unstable();
        pids.dedup();
        let name =
            |info: &[(&str, String)]| info.iter().find(|l| l.0 == "name").map(|l| l.1.clone());
        self.gpus_out.publish(GpuSnapshot {
            pids,
            sampled: true,
            count: self.cards.len() as u32,
            down: up
                .iter()
                .enumerate()
                .filter(|(_, up)| !**up)
                .map(|(i, _)| i as u32)
                .collect(),
            error: None,
            gpus: self
                .cards
                .iter()
                .enumerate()
                .filter(|(_, c)| !c.uuid.is_empty())
                .map(|(i, c)| crate::GpuIds {
                    index: i as u32,
                    uuid: c.uuid.clone(),
                    name: c.info.as_deref().and_then(name).unwrap_or_default(),
                    pids: c.held.clone(),
                    busy: c.busy,
                    migs: Vec::new(),
                    pci_bus_id: c.bus.clone(),
                    health: Default::default(),
                })
                .collect(),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn residency(cycles: u32, power: Option<u32>, thermal: Option<u32>) -> Residency {
        let mut by_reason = [("", Some(0)); 5];
        for (i, r) in metrics::RESIDENCY_REASONS.iter().enumerate() {
            by_reason[i].0 = r;
        }
        by_reason[1].1 = power;
        by_reason[2].1 = thermal;
        Residency { cycles, by_reason }
    }

    #[test]
    fn throttle_time_is_the_residency_share_of_the_interval() {
        let mut s = [0.0; 5];
        // 1000 cycles in 2 s, power-limited for 250 of them: 0.5 s.
        integrate_residency(
            &mut s,
            &residency(1000, Some(100), Some(7)),
            &residency(2000, Some(350), Some(7)),
            2.0,
        );
        assert_eq!(s, [0.0, 0.5, 0.0, 0.0, 0.0]);
        // Counters that wrap around u32.
        integrate_residency(
            &mut s,
            &residency(u32::MAX - 9, Some(u32::MAX), Some(0)),
            &residency(10, Some(9), Some(20)),
            1.0,
        );
        assert_eq!(s, [0.0, 1.0, 1.0, 0.0, 0.0]);
        // No cycles, or a reason unsupported in one table: nothing.
        integrate_residency(
            &mut s,
            &residency(10, Some(0), None),
            &residency(10, Some(5), Some(5)),
            1.0,
        );
        integrate_residency(
            &mut s,
            &residency(10, Some(0), None),
            &residency(20, Some(5), Some(5)),
            1.0,
        );
        assert_eq!(s, [0.0, 1.5, 1.0, 0.0, 0.0]);
    }
}
