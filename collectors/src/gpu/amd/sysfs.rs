//! Parsers of the amdgpu text files under /sys/class/drm/cardN/device and of
//! the drm-client keys in /proc/PID/fdinfo. None of them panics on what the
//! kernel hands back: a line they do not understand is skipped, a value that
//! does not parse is `None`.

/// The current and highest level of a `pp_dpm_*` file ("0: 500Mhz\n1:
/// 1700Mhz *\n"), in Hz.
pub fn parse_dpm(text: &str) -> (Option<f64>, Option<f64>) {
    let (mut current, mut max) = (None, None::<f64>);
    for line in text.lines() {
        let Some((_, rest)) = line.split_once(':') else {
            continue;
        };
        let rest = rest.trim();
        let starred = rest.ends_with('*');
        let value = rest.trim_end_matches('*').trim();
        let digits = value
            .strip_suffix("Mhz")
            .or_else(|| value.strip_suffix("MHz"))
            .map(str::trim);
        let Some(mhz) = digits.and_then(|d| d.parse::<f64>().ok()) else {
            continue;
        };
        if !mhz.is_finite() || mhz < 0.0 {
            continue;
        }
        let hz = mhz * 1e6;
        if starred {
            current = Some(hz);
        }
        max = Some(max.map_or(hz, |m| m.max(hz)));
    }
    (current, max)
}

/// Error counts of a `ras/<block>_err_count` file ("ue: 0\nce: 5\n", and
/// "de: N" on newer kernels): (uncorrected, corrected, deferred).
pub fn parse_ras(text: &str) -> [Option<u64>; 3] {
    let mut out = [None; 3];
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let i = match k.trim() {
            "ue" => 0,
            "ce" => 1,
            "de" => 2,
            _ => continue,
        };
        out[i] = v.trim().parse().ok();
    }
    out
}

/// Retired VRAM pages of `ras/gpu_vram_bad_pages` ("0x00000001 :
/// 0x00001000 : R" per page): (reserved, pending, failed).
pub fn parse_bad_pages(text: &str) -> [u64; 3] {
    let mut out = [0; 3];
    for line in text.lines() {
        match line.rsplit(':').next().map(str::trim) {
            Some("R") => out[0] += 1,
            Some("P") => out[1] += 1,
            Some("F") => out[2] += 1,
            _ => {}
        }
    }
    out
}

/// The PCIe generation of a `current_link_speed` / `max_link_speed` value
/// ("32.0 GT/s PCIe", "16.0 GT/s").
pub fn pcie_generation(text: &str) -> Option<f64> {
    let gts: f64 = text.split_whitespace().next()?.parse().ok()?;
    let gen = [
        (2.5, 1.0),
        (5.0, 2.0),
        (8.0, 3.0),
        (16.0, 4.0),
        (32.0, 5.0),
        (64.0, 6.0),
    ];
    gen.iter()
        .find(|(s, _)| (gts - s).abs() < 0.01)
        .map(|(_, g)| *g)
}

/// `PCI_SLOT_NAME` of a device's `uevent` file.
pub fn pci_slot(uevent: &str) -> Option<&str> {
    uevent
        .lines()
        .find_map(|l| l.strip_prefix("PCI_SLOT_NAME="))
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// One DRM client as /proc/PID/fdinfo/FD describes it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DrmClient {
    /// `drm-pdev`: the PCI address of the GPU.
    pub pdev: String,
    /// `drm-client-id`: one per open of the device (dup'ed fds share it).
    pub client_id: u64,
    /// VRAM the client holds, bytes (`drm-resident-vram`, else
    /// `drm-memory-vram`, else `drm-total-vram`).
    pub vram_bytes: Option<f64>,
    /// Busy time of the graphics and compute engines, ns
    /// (`drm-engine-gfx` + `drm-engine-compute`).
    pub engine_ns: Option<u64>,
}

/// A size value of fdinfo: "1024 KiB", "3 MiB", "12".
fn size(v: &str) -> Option<f64> {
    let mut it = v.split_whitespace();
    let n: u64 = it.next()?.parse().ok()?;
    let mul = match it.next() {
        None => 1.0,
        Some("KiB") => 1024.0,
        Some("MiB") => 1048576.0,
        Some("GiB") => 1073741824.0,
        Some(_) => return None,
    };
    Some(n as f64 * mul)
}

/// Parses an fdinfo file; `None` unless it is an amdgpu DRM client with a
/// `drm-pdev` and a `drm-client-id`.
pub fn parse_fdinfo(text: &str) -> Option<DrmClient> {
    let mut c = DrmClient::default();
    let (mut amdgpu, mut id) = (false, false);
    let (mut resident, mut memory, mut total) = (None, None, None);
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k.trim() {
            "drm-driver" => amdgpu = v == "amdgpu",
            "drm-pdev" => c.pdev = v.to_owned(),
            "drm-client-id" => {
                c.client_id = v.parse().ok()?;
                id = true;
            }
            "drm-resident-vram" => resident = size(v),
            "drm-memory-vram" => memory = size(v),
            "drm-total-vram" => total = size(v),
            "drm-engine-gfx" | "drm-engine-compute" => {
                let ns: u64 = v.strip_suffix("ns")?.trim().parse().ok()?;
                c.engine_ns = Some(c.engine_ns.unwrap_or(0).saturating_add(ns));
            }
            _ => {}
        }
    }
    c.vram_bytes = resident.or(memory).or(total);
    (amdgpu && id && !c.pdev.is_empty()).then_some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpm_levels() {
        assert_eq!(
            parse_dpm("0: 500Mhz\n1: 1700Mhz *\n2: 2100Mhz\n"),
            (Some(1700e6), Some(2100e6))
        );
        assert_eq!(
            parse_dpm("S: 19Mhz *\n0: 500Mhz\n"),
            (Some(19e6), Some(500e6))
        );
        assert_eq!(parse_dpm("garbage\n: Mhz *\n"), (None, None));
    }

    #[test]
    fn ras_and_bad_pages() {
        assert_eq!(parse_ras("ue: 1\nce: 22\n"), [Some(1), Some(22), None]);
        assert_eq!(
            parse_ras("ue: 0\nce: 3\nde: 2\n"),
            [Some(0), Some(3), Some(2)]
        );
        assert_eq!(parse_ras("ue: x\n"), [None; 3]);
        assert_eq!(
            parse_bad_pages(
                "0x00000001 : 0x00001000 : R\n0x00000002 : 0x00001000 : P\n0x3 : 0x1000 : R\n"
            ),
            [2, 1, 0]
        );
    }

    #[test]
    fn link_and_slot() {
        assert_eq!(pcie_generation("32.0 GT/s PCIe\n"), Some(5.0));
        assert_eq!(pcie_generation("2.5 GT/s PCIe"), Some(1.0));
        assert_eq!(pcie_generation("Unknown"), None);
        assert_eq!(
            pci_slot("DRIVER=amdgpu\nPCI_SLOT_NAME=0000:0c:00.0\n"),
            Some("0000:0c:00.0")
        );
        assert_eq!(pci_slot("DRIVER=amdgpu\n"), None);
    }

    #[test]
    fn fdinfo_clients() {
        let text = "pos:\t0\nflags:\t02100002\ndrm-driver:\tamdgpu\ndrm-client-id:\t12\ndrm-pdev:\t0000:0c:00.0\ndrm-memory-vram:\t2048 KiB\ndrm-engine-gfx:\t1000 ns\ndrm-engine-compute:\t500 ns\n";
        assert_eq!(
            parse_fdinfo(text),
            Some(DrmClient {
                pdev: "0000:0c:00.0".into(),
                client_id: 12,
                vram_bytes: Some(2048.0 * 1024.0),
                engine_ns: Some(1500),
            })
        );
        let newer = "drm-driver: amdgpu\ndrm-client-id: 3\ndrm-pdev: 0000:0c:00.0\ndrm-total-vram: 9 MiB\ndrm-resident-vram: 8 MiB\n";
        assert_eq!(
            parse_fdinfo(newer).unwrap().vram_bytes,
            Some(8.0 * 1048576.0)
        );
        assert_eq!(
            parse_fdinfo("drm-driver: i915\ndrm-client-id: 1\ndrm-pdev: x\n"),
            None
        );
        assert_eq!(parse_fdinfo("pos: 0\nflags: 0\n"), None);
        assert_eq!(
            parse_fdinfo("drm-driver: amdgpu\ndrm-client-id: -1\ndrm-pdev: x\n"),
            None
        );
    }

    proptest::proptest! {
        #[test]
        fn text_parsers_never_panic(s in "\\PC{0,300}") {
            let _ = parse_dpm(&s);
            let _ = parse_ras(&s);
            let _ = parse_bad_pages(&s);
            let _ = pcie_generation(&s);
            let _ = pci_slot(&s);
            let _ = parse_fdinfo(&s);
        }

        #[test]
        fn fdinfo_like_input_never_panics(
            lines in proptest::collection::vec(
                "(drm-driver|drm-client-id|drm-pdev|drm-memory-vram|drm-resident-vram|drm-engine-gfx|drm-engine-compute|pos):[ \t]?(amdgpu|[0-9]{0,22}|-1)( (KiB|MiB|GiB|ns|x))?",
                0..12,
            )
        ) {
            let _ = parse_fdinfo(&lines.join("\n"));
        }
    }
}
