//! What a call costs, and how many were made.
//!
//! The simulator answers in microseconds; the real driver does not, and a
//! few calls cost milliseconds of CPU (the driver spins in an ioctl). With
//! `NVML_SIM_CALL_COST=h200` every call busy-waits (spins on the clock: it
//! costs CPU, as the driver does) for the time the real driver took per
//! call, so that a CPU measurement of the agent on the simulator reflects
//! its call pattern. Off by default: the tests stay fast.
//!
//! With `NVML_SIM_CALL_COUNTS=PATH` the library counts calls per function
//! (and the fields asked of `nvmlDeviceGetFieldValues`) and writes PATH
//! when it is missing (looked at every 200 ms while calls are made: remove
//! the file to ask for a fresh one, which appears whole, by a rename) and
//! at `nvmlShutdown`: one `function count` line per function, sorted, so
//! that a benchmark can say which calls are behind the CPU it measured.
//! Written only when asked: rewriting it every 200 ms cost more CPU than
//! the agent's own work (a new inode, and ext4 starting writeback on a
//! rename over an existing file), and the benchmark measures that CPU.
//!
//! The per-call times of the `h200` model, in ms (median of 30 unless
//! said; nvidia-ml-py, driver 580):
//!
//! | call | ms | where measured |
//! |---|---|---|
//! | `nvmlDeviceGetTotalEnergyConsumption` | 2.42 | H200 |
//! | `nvmlDeviceGetProcessUtilization` | 1.38 | H200 |
//! | `nvmlDeviceGetFieldValues` | 0.09 + 0.11 per field, + 2.22 per energy field (83, 191): a fit | H200: 1 / 3 / 10 fields with energy 2.42 / 2.61 / 3.54; H100: PCIe byte counters (2 fields) 0.31, violation times (4) 0.5 |
//! | `nvmlDeviceGetMaxClockInfo` | 1.6 | H100 |
//! | `nvmlDeviceGetViolationStatus` | 0.72 | H100 |
//! | `nvmlDeviceGetNvLinkErrorCounter` | 0.0104 | H100 (0.75 for 18 links x 4) |
//! | `nvmlGpmSampleGet` | 0.2 | H100: "under 0.2", charged at the bound |
//! | `nvmlDeviceGetComputeRunningProcesses_v3` | 0.009 | H200 |
//! | `nvmlDeviceGetMemoryInfo(_v2)` | 0.008 | H200 |
//! | `nvmlDeviceGetPcieThroughput` | 20 ms asleep (the driver measures for 20 ms), 0.3 spun | H100 |
//! | every other call | 0.002 | H200 (utilisation, power, temperature, clocks, clock event reasons) |
//!
//! With this model the agent of 2026-12-04 (main) spends about 6 ms per
//! sample of an 18-link GPU, as it did on the real H200 (4.8 to 6.9 ms).

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::sim::lock;

/// Names the cost model (`h200`); unset or empty: calls cost nothing extra.
pub const COST_ENV: &str = "NVML_SIM_CALL_COST";
/// Names the file the call counts are written to.
pub const COUNTS_ENV: &str = "NVML_SIM_CALL_COUNTS";

/// Fields of `nvmlDeviceGetFieldValues` that read the energy counter (as
/// expensive as `nvmlDeviceGetTotalEnergyConsumption`).
const ENERGY_FIELDS: [u32; 2] = [83, 191];

/// How often, while calls are made, the library looks whether the counts
/// file is missing (then writes it).
const LOOK_EVERY: Duration = Duration::from_millis(200);

struct Settings {
    model: bool,
    counts: Option<String>,
}

fn settings() -> &'static Settings {
    static S: OnceLock<Settings> = OnceLock::new();
    S.get_or_init(|| {
        let model = match std::env::var(COST_ENV).unwrap_or_default().as_str() {
            "" | "off" | "none" => false,
            "h200" | "hopper" => true,
            other => {
                eprintln!("nvml-sim: {COST_ENV}={other:?} is not a known cost model (h200); calls cost nothing extra");
                false
            }
        };
        let counts = std::env::var(COUNTS_ENV).ok().filter(|p| !p.is_empty());
        Settings { model, counts }
    })
}

struct Counts {
    by_call: BTreeMap<String, u64>,
    looked: Option<Instant>,
}

static COUNTS: Mutex<Counts> = Mutex::new(Counts {
    by_call: BTreeMap::new(),
    looked: None,
});

/// CPU the real driver spends in one call of `name`, in ms (the `h200`
/// model), not counting field values' per-field part.
pub fn call_ms(name: &str) -> f64 {
    match name {
        "nvmlDeviceGetTotalEnergyConsumption" => 2.42,
        "nvmlDeviceGetProcessUtilization" => 1.38,
        "nvmlDeviceGetFieldValues" => 0.09,
        "nvmlDeviceGetMaxClockInfo" => 1.6,
        "nvmlDeviceGetViolationStatus" => 0.72,
        "nvmlDeviceGetNvLinkErrorCounter" => 0.0104,
        "nvmlGpmSampleGet" | "nvmlGpmMigSampleGet" => 0.2,
        "nvmlDeviceGetComputeRunningProcesses_v3" => 0.009,
        "nvmlDeviceGetMemoryInfo" | "nvmlDeviceGetMemoryInfo_v2" => 0.008,
        "nvmlDeviceGetPcieThroughput" => 0.3,
        _ => 0.002,
    }
}

/// CPU of the per-field part of one `nvmlDeviceGetFieldValues` call, in ms.
pub fn fields_ms(ids: &[u32]) -> f64 {
    ids.iter()
        .map(|id| {
            if ENERGY_FIELDS.contains(id) {
                0.11 + 2.22
            } else {
                0.11
            }
        })
        .sum()
}

/// CPU time of the calling thread, in ns.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer; CLOCK_THREAD_CPUTIME_ID exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// What one read of the thread's CPU clock costs, in ns (a system call,
/// not the vDSO: about 1 µs in a VM), measured once.
fn clock_read_ns() -> u64 {
    static NS: OnceLock<u64> = OnceLock::new();
    *NS.get_or_init(|| {
        const READS: u64 = 64;
        let t0 = thread_cpu_ns();
        for _ in 0..READS {
            std::hint::black_box(thread_cpu_ns());
        }
        (thread_cpu_ns() - t0) / (READS + 1)
    })
}

/// Spins (costs CPU, as the driver does) until the thread has spent `ms`
/// of CPU: on the thread's CPU clock, not the wall clock, so that a busy
/// machine that preempts the thread does not shorten the charge. The loop
/// stops one clock read early: it overshoots by about one read (the one
/// that sees the target passed), which on calls charged a few µs would
/// otherwise add half as much again.
fn spin(ms: f64) {
    let until = thread_cpu_ns() + ((ms * 1e6) as u64).saturating_sub(clock_read_ns());
    while thread_cpu_ns() < until {
        std::hint::spin_loop();
    }
}

/// Counts `n` under `key`, and writes the counts file if it is missing
/// when a look is due.
fn count(key: &str, n: u64) {
    let Some(path) = settings().counts.as_deref() else {
        return;
    };
    let mut c = lock(&COUNTS);
    match c.by_call.get_mut(key) {
        Some(v) => *v += n,
        None => {
            c.by_call.insert(key.to_owned(), n);
        }
    }
    if c.looked.map_or(true, |w| w.elapsed() >= LOOK_EVERY) {
        c.looked = Some(Instant::now());
        if !std::path::Path::new(path).exists() {
            write(path, &c.by_call);
        }
    }
}

fn write(path: &str, counts: &BTreeMap<String, u64>) {
    let text: String = counts.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
    let tmp = format!("{path}.tmp");
    if std::fs::write(&tmp, text).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}

/// Writes the counts file now (at `nvmlShutdown`).
pub fn flush() {
    if let Some(path) = settings().counts.as_deref() {
        let c = lock(&COUNTS);
        write(path, &c.by_call);
    }
}

/// One call of `name`: counted, and charged at the model's price.
pub fn charge(name: &str) {
    count(name, 1);
    if settings().model {
        if name == "nvmlDeviceGetPcieThroughput" {
            // The driver measures for 20 ms inside the call, asleep.
            std::thread::sleep(Duration::from_millis(20));
        }
        spin(call_ms(name));
    }
}

/// The fields of one `nvmlDeviceGetFieldValues` call: counted (total
/// fields, and energy fields apart), and charged per field.
pub fn charge_fields(ids: &[u32]) {
    count("nvmlDeviceGetFieldValues (fields)", ids.len() as u64);
    let energy = ids.iter().filter(|id| ENERGY_FIELDS.contains(id)).count();
    if energy > 0 {
        count("nvmlDeviceGetFieldValues (energy fields)", energy as u64);
    }
    if settings().model {
        spin(fields_ms(ids));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The model reproduces the H200 field-value timings it was fitted to
    /// (within 0.15 ms) and the H100 ones.
    #[test]
    fn field_values_match_the_measurements() {
        let call = |ids: &[u32]| call_ms("nvmlDeviceGetFieldValues") + fields_ms(ids);
        for (ids, ms) in [
            (&[83u32][..], 2.42),
            (&[83, 74, 75][..], 2.61),
            (&[83, 74, 75, 76, 79, 82, 197, 198, 138, 139][..], 3.54),
            (&[197, 198][..], 0.31),
            (&[74, 75, 76, 79][..], 0.5),
        ] {
            assert!(
                (call(ids) - ms).abs() < 0.15,
                "{ids:?}: {} vs {ms}",
                call(ids)
            );
        }
    }

    #[test]
    fn spinning_costs_the_time_asked() {
        let read = clock_read_ns();
        assert!(read < 100_000, "a clock read of {read} ns");
        for ms in [2.0, 0.002] {
            let t = thread_cpu_ns();
            spin(ms);
            let spent = thread_cpu_ns() - t;
            let want = (ms * 1e6) as u64;
            assert!(spent + read >= want, "{ms} ms asked, {spent} ns spent");
        }
    }
}
