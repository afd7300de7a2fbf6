//! The `gpu_metrics` table of amdgpu: a binary struct the SMU firmware
//! fills, whose layout depends on its version. Every layout an Instinct part
//! uses is here: v1.3 (MI200, aldebaran), v1.4 and v1.5 (MI300,
//! smu_v13_0_6), both v1.6 layouts, v1.7 (MI300) and v1.8 (MI325X,
//! MI355X). Dispatch is on (format revision, content revision, structure
//! size): one (1,6) tag has had two layouts.
//!
//! The offsets below are the kernel's structs as gcc lays them out
//! (natural alignment, little-endian); tests/amd-fixtures/gen.c compiles
//! the kernel's definitions and writes the fixture blobs the tests decode,
//! so a wrong offset here fails a test. Fields the firmware does not fill
//! stay all-ones (the driver memsets the table to 0xFF): they decode to
//! `None` and give no series.

/// Most bytes read from `gpu_metrics`: the binary attribute is at most
/// 128 KiB; a file that gives more is not a table we know.
pub const MAX_BYTES: usize = 128 * 1024;

/// Why a table was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Shorter than its header, or than the size its header declares.
    Truncated,
    /// Longer than [`MAX_BYTES`].
    Oversized,
    /// A (format, content, size) this decoder does not know.
    UnknownVersion,
}

impl Skip {
    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Skip::Truncated => "truncated",
            Skip::Oversized => "oversized",
            Skip::UnknownVersion => "unknown_version",
        }
    }
}

/// One XGMI link's counters.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct XgmiLink {
    /// Link index (0-7).
    pub link: u8,
    /// Bytes read over the link since the driver loaded (the firmware
    /// counts KiB).
    pub read_bytes: Option<f64>,
    /// Bytes written over the link.
    pub write_bytes: Option<f64>,
    /// Whether the link is active (v1.7 and later).
    pub up: Option<bool>,
}

/// Throttle residency accumulators (v1.6 and later): how many of the
/// firmware's accumulation cycles each limit was active.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Residency {
    /// Accumulation cycles so far.
    pub cycles: u32,
    /// Cycles per limit, by the `reason` label it is exported under.
    pub by_reason: [(&'static str, Option<u32>); 5],
}

/// The limits of [`Residency::by_reason`], in the kernel's field order:
/// PROCHOT, package power (PPT), socket thermal, VR thermal, HBM thermal.
pub const RESIDENCY_REASONS: [&str; 5] =
    ["prochot", "power", "thermal", "vr_thermal", "hbm_thermal"];

/// What one table says, in base units; `None` where the firmware left a
/// field unsupported or the version has none.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GpuMetrics {
    /// (format revision, content revision).
    pub version: (u8, u8),
    /// Temperatures in °C, by `sensor` label.
    pub temperatures: Vec<(&'static str, f64)>,
    /// Graphics activity, 0-1.
    pub gfx_activity: Option<f64>,
    /// Memory controller activity, 0-1.
    pub umc_activity: Option<f64>,
    /// Socket power, W.
    pub power_watts: Option<f64>,
    /// Energy since the driver loaded, J (the firmware counts 2^-16 J).
    pub energy_joules: Option<f64>,
    /// Graphics clock, Hz (the highest of the XCCs on MI300 and later).
    pub gfxclk_hertz: Option<f64>,
    /// Memory clock, Hz.
    pub uclk_hertz: Option<f64>,
    /// PCIe link width (lanes).
    pub pcie_width: Option<f64>,
    /// PCIe link speed, GT/s.
    pub pcie_speed: Option<f64>,
    /// XGMI link width (lanes).
    pub xgmi_width: Option<f64>,
    /// XGMI link bit rate, Gbit/s.
    pub xgmi_speed: Option<f64>,
    /// PCIe L0-to-recovery transitions.
    pub pcie_recoveries: Option<u64>,
    /// PCIe replays.
    pub pcie_replays: Option<u64>,
    /// PCIe replay-number rollovers.
    pub pcie_replay_rollovers: Option<u64>,
    /// PCIe NAKs sent.
    pub pcie_naks_sent: Option<u64>,
    /// PCIe NAKs received.
    pub pcie_naks_received: Option<u64>,
    /// The XGMI links with at least one supported field.
    pub xgmi: Vec<XgmiLink>,
    /// Throttle residencies (v1.6 and later).
    pub residency: Option<Residency>,
    /// Per compute partition, the busy fraction (0-1) of each of its XCCs
    /// that reports one (v1.7 and later).
    pub partitions: Vec<Vec<f64>>,
}

/// Little-endian reads at fixed offsets of a table already checked to be
/// long enough; all-ones means unsupported.
struct Table<'a>(&'a [u8]);

impl Table<'_> {
    fn bytes<const N: usize>(&self, at: usize) -> Option<[u8; N]> {
        self.0.get(at..at + N)?.try_into().ok()
    }
    fn u16(&self, at: usize) -> Option<u16> {
        self.bytes(at)
            .map(u16::from_le_bytes)
            .filter(|v| *v != u16::MAX)
    }
    fn u32(&self, at: usize) -> Option<u32> {
        self.bytes(at)
            .map(u32::from_le_bytes)
            .filter(|v| *v != u32::MAX)
    }
    fn u64(&self, at: usize) -> Option<u64> {
        self.bytes(at)
            .map(u64::from_le_bytes)
            .filter(|v| *v != u64::MAX)
    }
    fn f16(&self, at: Option<usize>) -> Option<f64> {
        at.and_then(|a| self.u16(a)).map(f64::from)
    }
}

/// Where a version keeps each field; `None` where it has none.
struct Layout {
    version: (u8, u8),
    size: usize,
    temp_edge: Option<usize>,
    temp_hotspot: usize,
    temp_mem: usize,
    temp_vrgfx: Option<usize>,
    temp_vrsoc: usize,
    temp_vrmem: Option<usize>,
    /// u16[4].
    temp_hbm: Option<usize>,
    gfx_activity: usize,
    umc_activity: usize,
    power: usize,
    energy: usize,
    /// u16[n]: the current graphics clocks.
    gfxclk: (usize, usize),
    uclk: usize,
    pcie_width: usize,
    pcie_speed: usize,
    xgmi_width: Option<usize>,
    /// u64 each: L0-to-recovery, replay, replay rollover.
    pcie_counters: Option<usize>,
    /// u32 each: NAK sent, NAK received.
    pcie_naks: Option<usize>,
    /// u64[8] read, then u64[8] write.
    xgmi_data: Option<usize>,
    /// u16[8].
    xgmi_status: Option<usize>,
    /// u32 counter then u32[5] residencies.
    residency: Option<usize>,
    /// num_partition (u16), xcp_stats offset, element size.
    xcp: Option<(usize, usize, usize)>,
}

const LAYOUTS: [Layout; 7] = [
    Layout {
        version: (1, 3),
        size: 120,
        temp_edge: Some(4),
        temp_hotspot: 6,
        temp_mem: 8,
        temp_vrgfx: Some(10),
        temp_vrsoc: 12,
        temp_vrmem: Some(14),
        temp_hbm: Some(88),
        gfx_activity: 16,
        umc_activity: 18,
        power: 22,
        energy: 24,
        gfxclk: (54, 1),
        uclk: 58,
        pcie_width: 74,
        pcie_speed: 76,
        xgmi_width: None,
        pcie_counters: None,
        pcie_naks: None,
        xgmi_data: None,
        xgmi_status: None,
        residency: None,
        xcp: None,
    },
    Layout {
        version: (1, 4),
        size: 288,
        temp_edge: None,
        temp_hotspot: 4,
        temp_mem: 6,
        temp_vrgfx: None,
        temp_vrsoc: 8,
        temp_vrmem: None,
        temp_hbm: None,
        gfx_activity: 12,
        umc_activity: 14,
        power: 10,
        energy: 24,
        gfxclk: (240, 8),
        uclk: 280,
        pcie_width: 48,
        pcie_speed: 50,
        xgmi_width: Some(52),
        pcie_counters: Some(80),
        pcie_naks: None,
        xgmi_data: Some(104),
        xgmi_status: None,
        residency: None,
        xcp: None,
    },
    Layout {
        version: (1, 5),
        size: 360,
        temp_edge: None,
        temp_hotspot: 4,
        temp_mem: 6,
        temp_vrgfx: None,
        temp_vrsoc: 8,
        temp_vrmem: None,
        temp_hbm: None,
        gfx_activity: 12,
        umc_activity: 14,
        power: 10,
        energy: 88,
        gfxclk: (312, 8),
        uclk: 352,
        pcie_width: 112,
        pcie_speed: 114,
        xgmi_width: Some(116),
        pcie_counters: Some(144),
        pcie_naks: Some(168),
        xgmi_data: Some(176),
        xgmi_status: None,
        residency: None,
        xcp: None,
    },
    // The first (1,6) layout: v1.5 with the residency accumulators.
    Layout {
        version: (1, 6),
        size: 384,
        temp_edge: None,
        temp_hotspot: 4,
        temp_mem: 6,
        temp_vrgfx: None,
        temp_vrsoc: 8,
        temp_vrmem: None,
        temp_hbm: None,
        gfx_activity: 12,
        umc_activity: 14,
        power: 10,
        energy: 88,
        gfxclk: (336, 8),
        uclk: 376,
        pcie_width: 136,
        pcie_speed: 138,
        xgmi_width: Some(140),
        pcie_counters: Some(168),
        pcie_naks: Some(192),
        xgmi_data: Some(200),
        xgmi_status: None,
        residency: Some(104),
        xcp: None,
    },
    // The second (1,6) layout: residencies and per-partition activity,
    // no JPEG/VCN arrays, no XGMI link state.
    Layout {
        version: (1, 6),
        size: 1664,
        temp_edge: None,
        temp_hotspot: 4,
        temp_mem: 6,
        temp_vrgfx: None,
        temp_vrsoc: 8,
        temp_vrmem: None,
        temp_hbm: None,
        gfx_activity: 12,
        umc_activity: 14,
        power: 10,
        energy: 16,
        gfxclk: (264, 8),
        uclk: 304,
        pcie_width: 60,
        pcie_speed: 62,
        xgmi_width: Some(64),
        pcie_counters: Some(96),
        pcie_naks: Some(120),
        xgmi_data: Some(128),
        xgmi_status: None,
        residency: Some(32),
        xcp: Some((306, 312, 168)),
    },
    Layout {
        version: (1, 7),
        size: 2208,
        temp_edge: None,
        temp_hotspot: 4,
        temp_mem: 6,
        temp_vrgfx: None,
        temp_vrsoc: 8,
        temp_vrmem: None,
        temp_hbm: None,
        gfx_activity: 12,
        umc_activity: 14,
        power: 10,
        energy: 24,
        gfxclk: (296, 8),
        uclk: 336,
        pcie_width: 68,
        pcie_speed: 70,
        xgmi_width: Some(72),
        pcie_counters: Some(104),
        pcie_naks: Some(128),
        xgmi_data: Some(136),
        xgmi_status: Some(264),
        residency: Some(40),
        xcp: Some((338, 344, 232)),
    },
    Layout {
        version: (1, 8),
        size: 3872,
        temp_edge: None,
        temp_hotspot: 4,
        temp_mem: 6,
        temp_vrgfx: None,
        temp_vrsoc: 8,
        temp_vrmem: None,
        temp_hbm: None,
        gfx_activity: 12,
        umc_activity: 14,
        power: 10,
        energy: 24,
        gfxclk: (296, 8),
        uclk: 336,
        pcie_width: 68,
        pcie_speed: 70,
        xgmi_width: Some(72),
        pcie_counters: Some(104),
        pcie_naks: Some(128),
        xgmi_data: Some(136),
        xgmi_status: Some(264),
        residency: Some(40),
        xcp: Some((338, 344, 440)),
    },
];

/// Compute partitions a table can describe (NUM_XCP) and XCCs per
/// partition (MAX_XCC).
const MAX_PARTITIONS: usize = 8;
const MAX_XCC: usize = 8;

/// Decodes one `gpu_metrics` table.
pub fn decode(data: &[u8]) -> Result<GpuMetrics, Skip> {
    if data.len() > MAX_BYTES {
        return Err(Skip::Oversized);
    }
    let header: [u8; 4] = data
        .get(..4)
        .and_then(|h| h.try_into().ok())
        .ok_or(Skip::Truncated)?;
    let size = usize::from(u16::from_le_bytes([header[0], header[1]]));
    let version = (header[2], header[3]);
    let layout = LAYOUTS
        .iter()
        .find(|l| l.version == version && l.size == size)
        .ok_or(Skip::UnknownVersion)?;
    if data.len() < size {
        return Err(Skip::Truncated);
    }
    let t = Table(&data[..size]);
    let mut m = GpuMetrics {
        version,
        ..Default::default()
    };
    let temps = [
        ("gpu", layout.temp_edge),
        ("junction", Some(layout.temp_hotspot)),
        ("memory", Some(layout.temp_mem)),
        ("vrgfx", layout.temp_vrgfx),
        ("vrsoc", Some(layout.temp_vrsoc)),
        ("vrmem", layout.temp_vrmem),
    ];
    for (sensor, at) in temps {
        if let Some(v) = t.f16(at) {
            m.temperatures.push((sensor, v));
        }
    }
    if let Some(at) = layout.temp_hbm {
        for (i, sensor) in ["hbm0", "hbm1", "hbm2", "hbm3"].into_iter().enumerate() {
            if let Some(v) = t.f16(Some(at + 2 * i)) {
                m.temperatures.push((sensor, v));
            }
        }
    }
    m.gfx_activity = t.f16(Some(layout.gfx_activity)).map(|v| v / 100.0);
    m.umc_activity = t.f16(Some(layout.umc_activity)).map(|v| v / 100.0);
    m.power_watts = t.f16(Some(layout.power));
    m.energy_joules = t.u64(layout.energy).map(|e| e as f64 / 65536.0);
    let (at, n) = layout.gfxclk;
    m.gfxclk_hertz = (0..n)
        .filter_map(|i| t.f16(Some(at + 2 * i)))
        .reduce(f64::max)
        .map(|mhz| mhz * 1e6);
    m.uclk_hertz = t.f16(Some(layout.uclk)).map(|mhz| mhz * 1e6);
    m.pcie_width = t.f16(Some(layout.pcie_width));
    m.pcie_speed = t.f16(Some(layout.pcie_speed)).map(|s| s / 10.0);
    if let Some(at) = layout.xgmi_width {
        m.xgmi_width = t.f16(Some(at));
        m.xgmi_speed = t.f16(Some(at + 2));
    }
    if let Some(at) = layout.pcie_counters {
        m.pcie_recoveries = t.u64(at);
        m.pcie_replays = t.u64(at + 8);
        m.pcie_replay_rollovers = t.u64(at + 16);
    }
    if let Some(at) = layout.pcie_naks {
        m.pcie_naks_sent = t.u32(at).map(u64::from);
        m.pcie_naks_received = t.u32(at + 4).map(u64::from);
    }
    if let Some(at) = layout.xgmi_data {
        for link in 0..8u8 {
            let i = usize::from(link);
            let kib = |o: usize| t.u64(o).map(|k| k as f64 * 1024.0);
            let l = XgmiLink {
                link,
                read_bytes: kib(at + 8 * i),
                write_bytes: kib(at + 64 + 8 * i),
                up: layout
                    .xgmi_status
                    .and_then(|s| t.u16(s + 2 * i))
                    .map(|v| v != 0),
            };
            if l.read_bytes.is_some() || l.write_bytes.is_some() || l.up.is_some() {
                m.xgmi.push(l);
            }
        }
    }
    if let Some(at) = layout.residency {
        if let Some(cycles) = t.u32(at) {
            let mut by_reason = [("", None); 5];
            for (i, r) in RESIDENCY_REASONS.iter().enumerate() {
                by_reason[i] = (*r, t.u32(at + 4 + 4 * i));
            }
            m.residency = Some(Residency { cycles, by_reason });
        }
    }
    if let Some((count_at, at, elem)) = layout.xcp {
        let count = t.u16(count_at).map_or(0, usize::from).min(MAX_PARTITIONS);
        for p in 0..count {
            let busy: Vec<f64> = (0..MAX_XCC)
                .filter_map(|x| t.u32(at + p * elem + 4 * x))
                .map(|v| f64::from(v) / 100.0)
                .collect();
            m.partitions.push(busy);
        }
    }
    Ok(m)
}

/// Reads a `gpu_metrics` file into `buf` with one `read()` of up to
/// [`MAX_BYTES`] + 1 bytes (the extra byte tells an oversized file) and
/// returns the bytes read. One read, because each read of the binary
/// attribute asks the driver for a fresh table: two reads could stitch two
/// tables together. The file's stat size is not used: the binary attribute
/// reports a bound, not the table's size.
pub fn read<'a>(path: &std::path::Path, buf: &'a mut Vec<u8>) -> std::io::Result<&'a [u8]> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    buf.resize(MAX_BYTES + 1, 0);
    let n = loop {
        match f.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => break r?,
        }
    };
    Ok(&buf[..n])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(rel: &str) -> Vec<u8> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        std::fs::read(root.join(rel)).unwrap()
    }

    fn node(n: &str, card: u32) -> Vec<u8> {
        fixture(&format!(
            "tests/fixtures/amd/{n}/sys/class/drm/card{card}/device/gpu_metrics"
        ))
    }

    #[test]
    fn v1_3_mi250x() {
        let m = decode(&node("mi250x", 0)).unwrap();
        assert_eq!(m.version, (1, 3));
        assert_eq!(
            m.temperatures,
            [
                ("gpu", 45.0),
                ("junction", 62.0),
                ("memory", 58.0),
                ("vrgfx", 50.0),
                ("vrsoc", 48.0),
                ("hbm0", 55.0),
                ("hbm1", 56.0),
                ("hbm2", 57.0)
            ]
        );
        assert_eq!(m.gfx_activity, Some(0.87));
        assert_eq!(m.umc_activity, Some(0.40));
        assert_eq!(m.power_watts, Some(385.0));
        assert_eq!(m.energy_joules, Some(3600.0));
        assert_eq!(m.gfxclk_hertz, Some(1700e6));
        assert_eq!(m.uclk_hertz, Some(1600e6));
        assert_eq!((m.pcie_width, m.pcie_speed), (Some(16.0), Some(16.0)));
        assert!(m.xgmi.is_empty() && m.residency.is_none() && m.partitions.is_empty());
        assert_eq!(
            decode(&node("mi250x", 1)).unwrap().energy_joules,
            Some(7200.0)
        );
    }

    #[test]
    fn v1_4() {
        let m = decode(&fixture("tests/amd-fixtures/blobs/gpu_metrics_v1_4.bin")).unwrap();
        assert_eq!(m.version, (1, 4));
        assert_eq!(
            m.temperatures,
            [("junction", 71.0), ("memory", 66.0), ("vrsoc", 51.0)]
        );
        assert_eq!(m.power_watts, Some(640.0));
        assert_eq!(m.gfx_activity, Some(0.91));
        assert_eq!(m.energy_joules, Some(5000.0));
        assert_eq!(m.gfxclk_hertz, Some(2100e6));
        assert_eq!(m.uclk_hertz, Some(1300e6));
        assert_eq!((m.xgmi_width, m.xgmi_speed), (Some(16.0), Some(32.0)));
        assert_eq!(
            (m.pcie_recoveries, m.pcie_replays, m.pcie_replay_rollovers),
            (Some(4), Some(6), Some(0))
        );
        assert_eq!(m.pcie_naks_sent, None);
        assert_eq!(m.xgmi.len(), 7);
        assert_eq!(m.xgmi[6].read_bytes, Some(7000.0 * 1024.0));
        assert_eq!(m.xgmi[6].write_bytes, Some(14000.0 * 1024.0));
        assert_eq!(m.xgmi[0].up, None);
    }

    #[test]
    fn v1_5_and_v1_7_mi300x() {
        let m = decode(&node("mi300x", 0)).unwrap();
        assert_eq!(m.version, (1, 5));
        assert_eq!(m.energy_joules, Some(10000.0));
        assert_eq!(m.power_watts, Some(650.0));
        assert_eq!((m.pcie_naks_sent, m.pcie_naks_received), (Some(2), Some(1)));
        assert_eq!(m.pcie_replays, Some(3));
        assert_eq!(m.xgmi[1].write_bytes, Some(2.0 * 2097152.0 * 1024.0));
        assert_eq!(m.pcie_speed, Some(32.0));
        let m = decode(&node("mi300x", 1)).unwrap();
        assert_eq!(m.version, (1, 7));
        assert_eq!(m.energy_joules, Some(20000.0));
        assert_eq!(m.gfx_activity, Some(0.03));
        let r = m.residency.unwrap();
        assert_eq!(r.cycles, 1000);
        assert_eq!(
            r.by_reason,
            [
                ("prochot", Some(0)),
                ("power", Some(250)),
                ("thermal", Some(10)),
                ("vr_thermal", Some(0)),
                ("hbm_thermal", Some(5))
            ]
        );
        assert_eq!(m.xgmi.len(), 7);
        assert_eq!(m.xgmi[5].up, Some(true));
        assert_eq!(m.xgmi[6].up, Some(false));
        assert_eq!(
            m.partitions,
            [vec![0.02, 0.03, 0.02, 0.03, 0.02, 0.03, 0.02, 0.03]]
        );
        assert_eq!(m.gfxclk_hertz, Some(140e6));
    }

    #[test]
    fn v1_6_first_layout() {
        let m = decode(&fixture("tests/amd-fixtures/blobs/gpu_metrics_v1_6.bin")).unwrap();
        assert_eq!(m.version, (1, 6));
        assert_eq!(m.energy_joules, Some(6000.0));
        assert_eq!(m.residency.unwrap().cycles, 2000);
        assert_eq!(m.residency.unwrap().by_reason[1], ("power", Some(500)));
        assert_eq!(m.pcie_replays, Some(8));
        assert_eq!(m.pcie_naks_sent, Some(5));
        assert_eq!(m.xgmi.len(), 1);
        assert_eq!(m.xgmi[0].read_bytes, Some(4096.0 * 1024.0));
        assert_eq!(m.temperatures, [("junction", 72.0), ("memory", 67.0)]);
    }

    #[test]
    fn v1_6_second_layout() {
        let m = decode(&fixture(
            "tests/amd-fixtures/blobs/gpu_metrics_v1_6_xcp.bin",
        ))
        .unwrap();
        assert_eq!(m.version, (1, 6));
        assert_eq!(
            m.temperatures,
            [("junction", 73.0), ("memory", 68.0), ("vrsoc", 53.0)]
        );
        assert_eq!(m.power_watts, Some(670.0));
        assert_eq!(m.gfx_activity, Some(0.75));
        assert_eq!(m.energy_joules, Some(7000.0));
        let r = m.residency.unwrap();
        assert_eq!(
            (r.cycles, r.by_reason[0], r.by_reason[1], r.by_reason[4]),
            (
                3000,
                ("prochot", Some(1)),
                ("power", Some(600)),
                ("hbm_thermal", Some(2))
            )
        );
        assert_eq!(
            (
                m.pcie_replays,
                m.pcie_recoveries,
                m.pcie_naks_sent,
                m.pcie_naks_received
            ),
            (Some(11), None, None, Some(4))
        );
        assert_eq!((m.xgmi_width, m.xgmi_speed), (Some(16.0), Some(32.0)));
        assert_eq!(m.xgmi.len(), 7);
        assert_eq!(m.xgmi[6].write_bytes, Some(1400.0 * 1024.0));
        assert_eq!(m.xgmi[0].up, None);
        assert_eq!(m.gfxclk_hertz, Some(1907e6));
        assert_eq!(m.uclk_hertz, Some(1300e6));
        assert_eq!(
            m.partitions,
            [
                vec![0.10, 0.11],
                vec![0.20, 0.21],
                vec![0.30, 0.31],
                vec![0.40, 0.41]
            ]
        );
    }

    #[test]
    fn v1_8_mi355x_partitioned() {
        let m = decode(&node("mi355x", 0)).unwrap();
        assert_eq!(m.version, (1, 8));
        assert_eq!(m.power_watts, Some(1250.0));
        assert_eq!(m.energy_joules, Some(40000.0));
        assert_eq!(m.partitions, [vec![0.95; 4], vec![0.25; 4]]);
        assert_eq!(m.xgmi.len(), 8);
        assert_eq!(m.xgmi[7].read_bytes, Some(8.0 * 3145728.0 * 1024.0));
        assert_eq!(m.residency.unwrap().by_reason[1], ("power", Some(1200)));
        assert_eq!(m.pcie_replays, Some(9));
    }

    #[test]
    fn one_tag_two_sizes_and_bad_tables_are_skipped() {
        let mut v16 = fixture("tests/amd-fixtures/blobs/gpu_metrics_v1_6.bin");
        // The same (1,6) tag with another size is not this layout.
        v16[0..2].copy_from_slice(&2208u16.to_le_bytes());
        assert_eq!(decode(&v16), Err(Skip::UnknownVersion));
        let v18 = node("mi355x", 0);
        assert_eq!(decode(&v18[..3000]), Err(Skip::Truncated));
        assert_eq!(decode(&v18[..3]), Err(Skip::Truncated));
        assert_eq!(decode(&[]), Err(Skip::Truncated));
        let mut v19 = v18.clone();
        v19[3] = 9;
        assert_eq!(decode(&v19), Err(Skip::UnknownVersion));
        assert_eq!(decode(&vec![0; MAX_BYTES + 1]), Err(Skip::Oversized));
        // Longer than its declared size is fine: the declared size rules.
        let mut longer = v18.clone();
        longer.extend_from_slice(&[0xAB; 100]);
        assert_eq!(decode(&longer), decode(&v18));
    }

    #[test]
    fn one_read_of_the_whole_file() {
        let dir = std::env::temp_dir().join(format!("accel-amd-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gpu_metrics");
        let mut buf = Vec::new();
        let v18 = node("mi355x", 0);
        std::fs::write(&path, &v18).unwrap();
        assert_eq!(read(&path, &mut buf).unwrap(), &v18[..]);
        std::fs::write(&path, vec![1u8; MAX_BYTES + 100]).unwrap();
        let big = read(&path, &mut buf).unwrap();
        assert_eq!(big.len(), MAX_BYTES + 1);
        assert_eq!(decode(big), Err(Skip::Oversized));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn all_ones_gives_nothing() {
        let mut t = vec![0xFF; 3872];
        t[0..4].copy_from_slice(&[0x20, 0x0F, 1, 8]);
        let m = decode(&t).unwrap();
        assert_eq!(
            m,
            GpuMetrics {
                version: (1, 8),
                ..Default::default()
            }
        );
    }

    /// Every fixture table, as gen.c wrote it.
    const TABLES: &[&[u8]] = &[
        include_bytes!(
            "../../../../tests/fixtures/amd/mi250x/sys/class/drm/card0/device/gpu_metrics"
        ),
        include_bytes!("../../../../tests/amd-fixtures/blobs/gpu_metrics_v1_4.bin"),
        include_bytes!(
            "../../../../tests/fixtures/amd/mi300x/sys/class/drm/card0/device/gpu_metrics"
        ),
        include_bytes!("../../../../tests/amd-fixtures/blobs/gpu_metrics_v1_6.bin"),
        include_bytes!("../../../../tests/amd-fixtures/blobs/gpu_metrics_v1_6_xcp.bin"),
        include_bytes!(
            "../../../../tests/fixtures/amd/mi300x/sys/class/drm/card1/device/gpu_metrics"
        ),
        include_bytes!(
            "../../../../tests/fixtures/amd/mi355x/sys/class/drm/card0/device/gpu_metrics"
        ),
    ];

    proptest::proptest! {
        /// Real tables with bytes changed, cut or added: decoded or
        /// skipped with a reason, never a panic, never more partitions or
        /// links than the struct has.
        #[test]
        fn mutated_tables_never_panic(t in crate::testing::mutated_bytes(TABLES)) {
            match decode(&t) {
                Ok(m) => {
                    proptest::prop_assert!(m.partitions.len() <= MAX_PARTITIONS);
                    proptest::prop_assert!(m.xgmi.len() <= 8);
                    proptest::prop_assert!(m.partitions.iter().all(|p| p.len() <= MAX_XCC));
                }
                Err(e) => proptest::prop_assert!(e != Skip::Oversized),
            }
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(proptest::num::u8::ANY, 0..5000)) {
            let _ = decode(&data);
        }

        /// Real headers with random bodies and random cuts.
        #[test]
        fn known_headers_with_any_body(
            which in 0usize..LAYOUTS.len(),
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..4000),
            cut in 0usize..4100,
        ) {
            let l = &LAYOUTS[which];
            let mut t = (l.size as u16).to_le_bytes().to_vec();
            t.extend([l.version.0, l.version.1]);
            t.extend(body);
            t.truncate(cut.max(4));
            match decode(&t) {
                Ok(m) => {
                    proptest::prop_assert!(t.len() >= l.size);
                    proptest::prop_assert!(m.partitions.len() <= MAX_PARTITIONS);
                }
                Err(e) => proptest::prop_assert_eq!(e, Skip::Truncated),
            }
        }
    }
}
