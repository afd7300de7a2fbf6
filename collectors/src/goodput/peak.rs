//! Peak dense tensor throughput (FLOP/s) by GPU model and data type: the
//! denominator of MFU.
//!
//! Figures are NVIDIA's datasheet numbers for dense math (the datasheets
//! print "with sparsity" figures twice as high); docs/goodput.md gives the
//! source of each. `--events.peak-flops` overrides them.

/// The data types a step may name (`int8`: TPUs only).
pub const DTYPES: [&str; 5] = ["fp8", "bf16", "fp16", "tf32", "int8"];

/// Peak dense FLOP/s of one GPU model, by data type; `None` where the
/// model has no tensor support for the type.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Peak {
    /// FP8 (Ada, Hopper, Blackwell).
    pub fp8: Option<f64>,
    /// BF16, and FP16 (the same rate on every model here).
    pub bf16: f64,
    /// TF32.
    pub tf32: f64,
}

impl Peak {
    /// The figure for `dtype` (one of [`DTYPES`]).
    pub fn get(&self, dtype: &str) -> Option<f64> {
        match dtype {
            "fp8" => self.fp8,
            "bf16" | "fp16" => Some(self.bf16),
            "tf32" => Some(self.tf32),
            _ => None,
        }
    }
}

/// Hopper and Blackwell: FP8 is twice BF16, TF32 half of it.
const fn hopper(bf16: f64) -> Peak {
    Peak {
        fp8: Some(bf16 * 2.0),
        bf16,
        tf32: bf16 / 2.0,
    }
}

/// Ampere: no FP8.
const fn ampere(bf16: f64) -> Peak {
    Peak {
        fp8: None,
        bf16,
        tf32: bf16 / 2.0,
    }
}

/// AMD CDNA2 (MI200): no FP8; TF32 runs as FP32 matrix math.
const fn cdna2(bf16: f64, fp32_matrix: f64) -> Peak {
    Peak {
        fp8: None,
        bf16,
        tf32: fp32_matrix,
    }
}

/// The built-in table: the model a GPU's NVML name belongs to, or `None`
/// when it is not in the table. Names are split into words at spaces and
/// hyphens ("NVIDIA A100-SXM4-80GB" has the word "A100").
pub fn builtin(name: &str) -> Option<(&'static str, Peak)> {
    let words: Vec<String> = name
        .split([' ', '-'])
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_uppercase)
        .collect();
    let has = |w: &str| words.iter().any(|x| x == w);
    Some(if has("H100") && has("NVL") {
        ("H100 NVL", hopper(835e12))
    } else if has("H100") && has("PCIE") {
        ("H100 PCIe", hopper(756e12))
    } else if has("H100") || has("GH200") {
        ("H100 SXM", hopper(989e12))
    } else if has("H200") && has("NVL") {
        ("H200 NVL", hopper(835e12))
    } else if has("H200") {
        ("H200", hopper(989e12))
    } else if has("B200") {
        ("B200", hopper(2250e12))
    } else if has("A100") {
        ("A100", ampere(312e12))
    } else if has("L40S") {
        (
            "L40S",
            Peak {
                fp8: Some(733e12),
                bf16: 362e12,
                tf32: 183e12,
            },
        )
    } else if has("A10") || has("A10G") {
        ("A10", ampere(125e12))
    // AMD Instinct (amdgpu `product_name`, "AMD Instinct MI300X"): AMD's
    // dense matrix figures. MI200 has no FP8 and no TF32 (a TF32 request
    // runs as FP32 matrix math, 95.7 TFLOP/s); MI300 and later do TF32 at
    // half the BF16 rate and FP8 at twice it (MI355X: no TF32 figure is
    // published, half of BF16 assumed; check before use).
    } else if has("MI250X") {
        ("MI250X", cdna2(383e12, 95.7e12))
    } else if has("MI250") {
        ("MI250", cdna2(362.1e12, 90.5e12))
    } else if has("MI300X") {
        ("MI300X", hopper(1307.4e12))
    } else if has("MI325X") {
        ("MI325X", hopper(1307.4e12))
    } else if has("MI355X") {
        ("MI355X", hopper(2516.6e12))
    } else {
        return None;
    })
}

/// One `--events.peak-flops` entry: GPUs whose name contains `model`
/// (case-insensitive) get these figures.
#[derive(Clone, Debug, PartialEq)]
pub struct Override {
    model: String,
    figures: Vec<(&'static str, f64)>,
}

/// The entries of `--events.peak-flops`, as one flag value.
#[derive(Clone, Debug, PartialEq)]
pub struct Overrides(pub Vec<Override>);

/// [`parse_overrides`] as the flag's value parser.
pub fn parse_overrides_flag(s: &str) -> Result<Overrides, String> {
    parse_overrides(s).map(Overrides)
}

/// Parses `--events.peak-flops`: entries separated by `;`, each
/// `MODEL:DTYPE=FLOPS[,DTYPE=FLOPS...]`, e.g.
/// `A10G:bf16=70e12;H100:bf16=900e12,fp8=1800e12`.
pub fn parse_overrides(s: &str) -> Result<Vec<Override>, String> {
    let mut out = Vec::new();
    for entry in s.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let (model, figs) = entry
            .split_once(':')
            .ok_or_else(|| format!("{entry:?}: expected MODEL:DTYPE=FLOPS"))?;
        let model = model.trim();
        if model.is_empty() {
            return Err(format!("{entry:?}: empty model"));
        }
        let mut figures = Vec::new();
        for f in figs.split(',') {
            let (d, v) = f
                .split_once('=')
                .ok_or_else(|| format!("{f:?}: expected DTYPE=FLOPS"))?;
            let d = DTYPES
                .iter()
                .find(|x| **x == d.trim())
                .ok_or_else(|| format!("{d:?} is not one of {}", DTYPES.join(", ")))?;
            let v: f64 = v
                .trim()
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite() && *v > 0.0)
                .ok_or_else(|| format!("{v:?} is not a positive number of FLOP/s"))?;
            figures.push((*d, v));
        }
        out.push(Override {
            model: model.to_ascii_uppercase(),
            figures,
        });
    }
    Ok(out)
}

/// Peak dense FLOP/s of a GPU named `name` for `dtype`: an override first,
/// then the built-in table.
pub fn peak(name: &str, dtype: &str, overrides: &[Override]) -> Option<f64> {
    let upper = name.to_ascii_uppercase();
    for o in overrides.iter().filter(|o| upper.contains(&o.model)) {
        let fp16_as_bf16 = if dtype == "fp16" { "bf16" } else { dtype };
        if let Some((_, v)) = o
            .figures
            .iter()
            .find(|(d, _)| *d == dtype)
            .or_else(|| o.figures.iter().find(|(d, _)| *d == fp16_as_bf16))
        {
            return Some(*v);
        }
    }
    tpu(name)
        .map(|(_, figures)| {
            let d = if dtype == "fp16" { "bf16" } else { dtype };
            figures.iter().find(|(x, _)| *x == d).map(|(_, v)| *v)
        })
        .unwrap_or_else(|| builtin(name).and_then(|(_, p)| p.get(dtype)))
}

/// Google TPUs: peak dense FLOP/s (int8: OP/s) per chip by data type, from
/// Google's Cloud TPU pages (docs/goodput.md). The tpu collector names its
/// chips `Google TPU <generation>` (collectors/src/tpu/chips.rs).
pub fn tpu(name: &str) -> Option<(&'static str, &'static [(&'static str, f64)])> {
    const TABLE: &[(&str, &[(&str, f64)])] = &[
        ("v4", &[("bf16", 275e12)]),
        ("v5e", &[("bf16", 197e12), ("int8", 394e12)]),
        ("v5p", &[("bf16", 459e12), ("int8", 918e12)]),
        ("v6e", &[("bf16", 918e12), ("int8", 1836e12)]),
        ("tpu7x", &[("fp8", 4614e12)]),
    ];
    let generation = name.strip_prefix("Google TPU ")?;
    TABLE
        .iter()
        .find(|(g, _)| *g == generation)
        .map(|(g, f)| (*g, *f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvml_names_map_to_the_table() {
        let bf16 = |n: &str| peak(n, "bf16", &[]);
        assert_eq!(bf16("NVIDIA H100 80GB HBM3"), Some(989e12));
        assert_eq!(bf16("NVIDIA H100 PCIe"), Some(756e12));
        assert_eq!(bf16("NVIDIA H100 NVL"), Some(835e12));
        assert_eq!(bf16("NVIDIA H200"), Some(989e12));
        assert_eq!(bf16("NVIDIA H200 NVL"), Some(835e12));
        assert_eq!(bf16("NVIDIA GH200 480GB"), Some(989e12));
        assert_eq!(bf16("NVIDIA A100-SXM4-80GB"), Some(312e12));
        assert_eq!(bf16("NVIDIA A100 80GB PCIe"), Some(312e12));
        assert_eq!(bf16("NVIDIA L40S"), Some(362e12));
        assert_eq!(bf16("NVIDIA A10"), Some(125e12));
        assert_eq!(bf16("NVIDIA A10G"), Some(125e12));
        assert_eq!(bf16("NVIDIA B200"), Some(2250e12));
        assert_eq!(bf16("Tesla T4"), None);
        assert_eq!(peak("NVIDIA H100 80GB HBM3", "fp8", &[]), Some(1978e12));
        assert_eq!(peak("NVIDIA B200", "fp8", &[]), Some(4500e12));
        assert_eq!(peak("NVIDIA H100 80GB HBM3", "fp16", &[]), Some(989e12));
        assert_eq!(peak("NVIDIA A100-SXM4-40GB", "fp8", &[]), None);
        assert_eq!(peak("NVIDIA A100-SXM4-40GB", "tf32", &[]), Some(156e12));
        assert_eq!(peak("NVIDIA H100 80GB HBM3", "int4", &[]), None);
        // AMD Instinct, by amdgpu product_name.
        assert_eq!(bf16("AMD Instinct MI250X"), Some(383e12));
        assert_eq!(bf16("AMD Instinct MI250X / MI250"), Some(383e12));
        assert_eq!(bf16("AMD Instinct MI250"), Some(362.1e12));
        assert_eq!(peak("AMD Instinct MI250X", "fp8", &[]), None);
        assert_eq!(bf16("AMD Instinct MI300X"), Some(1307.4e12));
        assert_eq!(peak("AMD Instinct MI300X", "fp8", &[]), Some(2614.8e12));
        assert_eq!(bf16("AMD Instinct MI325X"), Some(1307.4e12));
        assert_eq!(bf16("AMD Instinct MI355X"), Some(2516.6e12));
        assert_eq!(peak("AMD Instinct MI355X", "fp8", &[]), Some(5033.2e12));
        assert_eq!(bf16("AMD Instinct MI300A"), None);
    }

    #[test]
    fn tpu_generations() {
        assert_eq!(peak("Google TPU v5e", "bf16", &[]), Some(197e12));
        assert_eq!(peak("Google TPU v5e", "fp16", &[]), Some(197e12));
        assert_eq!(peak("Google TPU v5e", "int8", &[]), Some(394e12));
        assert_eq!(peak("Google TPU v5p", "bf16", &[]), Some(459e12));
        assert_eq!(peak("Google TPU v6e", "int8", &[]), Some(1836e12));
        assert_eq!(peak("Google TPU tpu7x", "fp8", &[]), Some(4614e12));
        assert_eq!(peak("Google TPU v5e", "fp8", &[]), None);
        assert_eq!(peak("Google TPU v3", "bf16", &[]), None);
        assert_eq!(peak("NVIDIA H100 80GB HBM3", "int8", &[]), None);
        let o = parse_overrides("TPU v5e:bf16=200e12").unwrap();
        assert_eq!(peak("Google TPU v5e", "bf16", &o), Some(200e12));
    }

    #[test]
    fn overrides_come_first() {
        let o = parse_overrides("a10g:bf16=70e12; H100:fp8=1.5e15").unwrap();
        assert_eq!(peak("NVIDIA A10G", "bf16", &o), Some(70e12));
        assert_eq!(peak("NVIDIA A10G", "fp16", &o), Some(70e12));
        assert_eq!(peak("NVIDIA A10", "bf16", &o), Some(125e12));
        assert_eq!(peak("NVIDIA H100 PCIe", "fp8", &o), Some(1.5e15));
        // A dtype the override does not name falls back to the table.
        assert_eq!(peak("NVIDIA H100 PCIe", "bf16", &o), Some(756e12));
        for bad in [
            "H100",
            "H100:bf16",
            "H100:int4=1",
            "H100:bf16=-1",
            ":bf16=1",
        ] {
            assert!(parse_overrides(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_overrides("").unwrap(), vec![]);
    }
}
