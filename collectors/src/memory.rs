//! `accel_memory_*`: host memory and swap in bytes, from /proc/meminfo.
//!
//! Not node_exporter's `node_memory_<Field>_bytes` (one family per kernel
//! field, CamelCase): a handful of snake_case families a dashboard needs.
//! `used` is total minus available, as `free` computes it since procps 4.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::options::{options, NoOptions};
use crate::util::{parse_u64, read_to_string};
use crate::{BuildContext, Built, CollectError, Collector, FamilyDef, Sample, Spec, HOST_INTERVAL};

/// The memory collector.
pub struct Memory {
    path: PathBuf,
}

/// The memory collector's registry entry.
pub const SPEC: Spec = Spec {
    name: "memory",
    help: "memory and swap, from /proc/meminfo",
    default_enabled: true,
    default_interval: HOST_INTERVAL,
    options: options::<NoOptions>(),
    families: FAMILIES,
    prefixes: &["accel_memory_"],
    outside: &[],
    build,
};

/// Every family this collector exports.
pub const FAMILIES: &[FamilyDef] = &[];

/// Builds the collector.
fn build(ctx: &BuildContext) -> Result<Built, CollectError> {
    let opts = ctx.paths;
    Ok(Built::Ready(Box::new(Memory {
        path: opts.procfs.join("meminfo"),
    })))
}

/// /proc/meminfo as field name to bytes (`kB` values multiplied by 1024;
/// unit-less ones such as `HugePages_Total` kept as they are).
pub fn parse(text: &str) -> Result<HashMap<&str, u64>, CollectError> {
    let mut fields = HashMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let (name, rest) = line
            .split_once(':')
            .ok_or_else(|| CollectError::parse(format!("meminfo: no colon in {line:?}")))?;
        let mut parts = rest.split_ascii_whitespace();
        let value = parse_u64(
            parts.next().unwrap_or_default(),
            &format_args!("meminfo {name}"),
        )?;
        let value = match parts.next() {
            None => value,
            Some("kB") => value.saturating_mul(1024),
            Some(unit) => {
                return Err(CollectError::parse(format!(
                    "meminfo {name}: unit {unit:?}"
                )))
            }
        };
        fields.insert(name.trim(), value);
    }
    Ok(fields)
}

impl Collector for Memory {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn sample(&mut self, out: &mut Sample) -> Result<(), CollectError> {
        let text = read_to_string(&self.path)?;
        let m = parse(&text)?;
        let get = |k: &str| {
            m.get(k)
                .copied()
                .ok_or_else(|| CollectError::parse(format!("meminfo: no {k}")))
        };
        let total = get("MemTotal")?;
        let free = get("MemFree")?;
        // MemAvailable exists since Linux 3.14; estimate it on older kernels.
        let available = get("MemAvailable").or_else(|_| {
            Ok::<_, CollectError>(
                free + m.get("Buffers").unwrap_or(&0) + m.get("Cached").unwrap_or(&0),
            )
        })?;
        let gauges: [(&str, &str, Option<u64>); 12] = [
            ("total", "Total usable memory in bytes.", Some(total)),
            ("free", "Memory not used at all, in bytes.", Some(free)),
            (
                "available",
                "Memory available for new work without swapping, in bytes (the kernel's estimate).",
                Some(available),
            ),
            (
                "used",
                "Memory in use in bytes: total minus available.",
                Some(total.saturating_sub(available)),
            ),
            (
                "buffers",
                "Memory in block device buffers, in bytes.",
                m.get("Buffers").copied(),
            ),
            (
                "cached",
                "Memory in the page cache (files, shared memory), in bytes.",
                m.get("Cached").copied(),
            ),
            (
                "shared",
                "Memory in shared memory and tmpfs, in bytes.",
                m.get("Shmem").copied(),
            ),
            (
                "dirty",
                "Memory waiting to be written back to storage, in bytes.",
                m.get("Dirty").copied(),
            ),
            (
                "writeback",
                "Memory being written back to storage, in bytes.",
                m.get("Writeback").copied(),
            ),
            (
                "swap_total",
                "Total swap space in bytes.",
                m.get("SwapTotal").copied(),
            ),
            (
                "swap_free",
                "Unused swap space in bytes.",
                m.get("SwapFree").copied(),
            ),
            (
                "swap_used",
                "Used swap space in bytes.",
                m.get("SwapTotal")
                    .zip(m.get("SwapFree"))
                    .map(|(t, f)| t.saturating_sub(*f)),
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                out.gauge(&format!("accel_memory_{name}_bytes"), help)
                    .add(&[], v as f64);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kb_and_counts() {
        let m = parse("MemTotal:       16384 kB\nHugePages_Total:       4\n").unwrap();
        assert_eq!(m["MemTotal"], 16384 * 1024);
        assert_eq!(m["HugePages_Total"], 4);
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["MemTotal 1 kB", "MemTotal: x kB", "MemTotal: 1 MB"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
