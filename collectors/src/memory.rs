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
    detail: "",
    families: FAMILIES,
    prefixes: &["accel_memory_"],
    outside: &[],
    build,
};

/// Usable RAM.
pub const TOTAL: FamilyDef =
    FamilyDef::gauge("accel_memory_total_bytes", "Total usable memory in bytes.")
        .doc("bytes, usable RAM")
        .source("`/proc/meminfo` `MemTotal`; `collectors/src/memory.rs`")
        .equivalent("`node_memory_MemTotal_bytes`");

/// Unused RAM.
pub const FREE: FamilyDef = FamilyDef::gauge(
    "accel_memory_free_bytes",
    "Memory not used at all, in bytes.",
)
.doc("bytes, unused RAM")
.source("`MemFree`; `collectors/src/memory.rs`")
.equivalent("`node_memory_MemFree_bytes`");

/// RAM available without swapping.
pub const AVAILABLE: FamilyDef = FamilyDef::gauge(
    "accel_memory_available_bytes",
    "Memory available for new work without swapping, in bytes (the kernel's estimate).",
)
.doc("bytes available for new work without swapping (the kernel's estimate). Kernels older than 3.14 have no `MemAvailable`; there it is `MemFree + Buffers + Cached`")
.source("`MemAvailable`; `collectors/src/memory.rs`")
.equivalent("`node_memory_MemAvailable_bytes`");

/// RAM in use.
pub const USED: FamilyDef = FamilyDef::gauge(
    "accel_memory_used_bytes",
    "Memory in use in bytes: total minus available.",
)
.doc("bytes in use: `MemTotal − MemAvailable`, floored at 0 (as `free` computes it since procps-ng 4.0.1)")
.source("`MemTotal`, `MemAvailable`; `collectors/src/memory.rs`")
.equivalent("none (`node_memory_MemTotal_bytes - node_memory_MemAvailable_bytes`)");

/// Block-device buffers.
pub const BUFFERS: FamilyDef = FamilyDef::gauge(
    "accel_memory_buffers_bytes",
    "Memory in block device buffers, in bytes.",
)
.doc("bytes in block-device buffers")
.source("`Buffers`; `collectors/src/memory.rs`")
.equivalent("`node_memory_Buffers_bytes`");

/// Page cache.
pub const CACHED: FamilyDef = FamilyDef::gauge(
    "accel_memory_cached_bytes",
    "Memory in the page cache (files, shared memory), in bytes.",
)
.doc("bytes in the page cache (files, shmem). Only `Cached`: unlike `free`'s buff/cache, it does not add `SReclaimable`")
.source("`Cached`; `collectors/src/memory.rs`")
.equivalent("`node_memory_Cached_bytes`");

/// Shared memory and tmpfs.
pub const SHARED: FamilyDef = FamilyDef::gauge(
    "accel_memory_shared_bytes",
    "Memory in shared memory and tmpfs, in bytes.",
)
.doc("bytes in shared memory and tmpfs")
.source("`Shmem`; `collectors/src/memory.rs`")
.equivalent("`node_memory_Shmem_bytes`");

/// Dirty pages.
pub const DIRTY: FamilyDef = FamilyDef::gauge(
    "accel_memory_dirty_bytes",
    "Memory waiting to be written back to storage, in bytes.",
)
.doc("bytes waiting to be written back")
.source("`Dirty`; `collectors/src/memory.rs`")
.equivalent("`node_memory_Dirty_bytes`");

/// Pages under writeback.
pub const WRITEBACK: FamilyDef = FamilyDef::gauge(
    "accel_memory_writeback_bytes",
    "Memory being written back to storage, in bytes.",
)
.doc("bytes being written back")
.source("`Writeback`; `collectors/src/memory.rs`")
.equivalent("`node_memory_Writeback_bytes`");

/// Swap space.
pub const SWAP_TOTAL: FamilyDef = FamilyDef::gauge(
    "accel_memory_swap_total_bytes",
    "Total swap space in bytes.",
)
.doc("bytes of swap")
.source("`SwapTotal`; `collectors/src/memory.rs`")
.equivalent("`node_memory_SwapTotal_bytes`");

/// Unused swap.
pub const SWAP_FREE: FamilyDef = FamilyDef::gauge(
    "accel_memory_swap_free_bytes",
    "Unused swap space in bytes.",
)
.doc("bytes of unused swap")
.source("`SwapFree`; `collectors/src/memory.rs`")
.equivalent("`node_memory_SwapFree_bytes`");

/// Used swap.
pub const SWAP_USED: FamilyDef =
    FamilyDef::gauge("accel_memory_swap_used_bytes", "Used swap space in bytes.")
        .doc("bytes of used swap: `SwapTotal − SwapFree`, floored at 0")
        .source("`SwapTotal`, `SwapFree`; `collectors/src/memory.rs`")
        .equivalent("none (`node_memory_SwapTotal_bytes - node_memory_SwapFree_bytes`)");

/// Every family this collector exports.
pub const FAMILIES: &[FamilyDef] = &[
    TOTAL, FREE, AVAILABLE, USED, BUFFERS, CACHED, SHARED, DIRTY, WRITEBACK, SWAP_TOTAL, SWAP_FREE,
    SWAP_USED,
];

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
        let gauges: [(&'static FamilyDef, Option<u64>); 12] = [
            (&TOTAL, Some(total)),
            (&FREE, Some(free)),
            (&AVAILABLE, Some(available)),
            (&USED, Some(total.saturating_sub(available))),
            (&BUFFERS, m.get("Buffers").copied()),
            (&CACHED, m.get("Cached").copied()),
            (&SHARED, m.get("Shmem").copied()),
            (&DIRTY, m.get("Dirty").copied()),
            (&WRITEBACK, m.get("Writeback").copied()),
            (&SWAP_TOTAL, m.get("SwapTotal").copied()),
            (&SWAP_FREE, m.get("SwapFree").copied()),
            (
                &SWAP_USED,
                m.get("SwapTotal")
                    .zip(m.get("SwapFree"))
                    .map(|(t, f)| t.saturating_sub(*f)),
            ),
        ];
        out.add_known(gauges);
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
