//! Library-wide state: init reference count, the loaded scenario and its
//! clock, device handles, event sets and GPM samples, and the checks every
//! call goes through (hangs, lost GPUs, NOT_SUPPORTED).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nvml_wrapper_sys::bindings::*;

use crate::gpu::Gpu;
use crate::mig::MigDevice;
use crate::scenario::{self, Scenario};

/// The environment variable naming the scenario (a path or a bare name).
pub const SCENARIO_ENV: &str = "NVML_SIM_SCENARIO";

/// Most GPUs a scenario may have.
pub const MAX_GPUS: usize = 64;

/// MIG device handle slots per GPU (at most 7 MIG devices exist).
pub const MIG_SLOTS_PER_GPU: usize = 8;

/// Device handles are addresses inside this array: valid pointers that are
/// never dereferenced, and that map back to an index by subtraction.
static DEVICE_SLOTS: [u8; MAX_GPUS] = [0; MAX_GPUS];

pub fn handle(index: usize) -> nvmlDevice_t {
    DEVICE_SLOTS
        .as_ptr()
        .wrapping_add(index)
        .cast_mut()
        .cast::<nvmlDevice_st>()
}

fn handle_index(dev: nvmlDevice_t) -> Option<usize> {
    let offset = (dev as usize).wrapping_sub(DEVICE_SLOTS.as_ptr() as usize);
    (offset < MAX_GPUS).then_some(offset)
}

/// MIG device handles, likewise: GPU `g`'s MIG device `i` (NVML index) is
/// slot `g * MIG_SLOTS_PER_GPU + i`.
static MIG_SLOTS: [u8; MAX_GPUS * MIG_SLOTS_PER_GPU] = [0; MAX_GPUS * MIG_SLOTS_PER_GPU];

pub fn mig_handle(gpu: usize, index: usize) -> nvmlDevice_t {
    MIG_SLOTS
        .as_ptr()
        .wrapping_add(gpu * MIG_SLOTS_PER_GPU + index)
        .cast_mut()
        .cast::<nvmlDevice_st>()
}

fn mig_handle_index(dev: nvmlDevice_t) -> Option<(usize, usize)> {
    let offset = (dev as usize).wrapping_sub(MIG_SLOTS.as_ptr() as usize);
    (offset < MAX_GPUS * MIG_SLOTS_PER_GPU)
        .then_some((offset / MIG_SLOTS_PER_GPU, offset % MIG_SLOTS_PER_GPU))
}

/// What a device handle names: a GPU, or a MIG device on its parent GPU.
#[derive(Clone, Copy)]
pub enum Dev<'a> {
    Gpu(&'a Gpu),
    Mig(&'a Gpu, &'a MigDevice),
}

impl<'a> Dev<'a> {
    /// The physical GPU (the parent of a MIG device).
    pub fn gpu(&self) -> &'a Gpu {
        match self {
            Dev::Gpu(g) | Dev::Mig(g, _) => g,
        }
    }
}

struct Global {
    refcount: u32,
    sim: Option<Arc<Sim>>,
}

static GLOBAL: Mutex<Global> = Mutex::new(Global {
    refcount: 0,
    sim: None,
});

/// Held by a `blocks_all` hang; every call passes through it.
static DRIVER: Mutex<()> = Mutex::new(());

/// Why the last nvmlInit failed, for nvmlSimGetLastError and nvmlErrorString.
static LAST_ERROR: Mutex<String> = Mutex::new(String::new());

/// The last init failed because NVML_SIM_SCENARIO was not set.
pub static SCENARIO_UNSET: AtomicBool = AtomicBool::new(false);

/// Locks, ignoring poisoning: a panic elsewhere never wedges the library.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits while a `blocks_all` hang holds the driver.
fn gate() {
    drop(lock(&DRIVER));
}

pub fn last_error() -> String {
    lock(&LAST_ERROR).clone()
}

fn fail(message: String, code: nvmlReturn_t) -> Result<(), nvmlReturn_t> {
    eprintln!("nvml-sim: {message}");
    *lock(&LAST_ERROR) = message;
    Err(code)
}

/// nvmlInit: reference counted like the real library. The scenario is read
/// from the environment when the count goes from 0 to 1; re-initialising
/// with the same scenario keeps its clock (t keeps running), a different
/// scenario starts a new one at t = 0.
pub fn init() -> Result<(), nvmlReturn_t> {
    gate();
    let mut g = lock(&GLOBAL);
    if g.refcount > 0 {
        g.refcount += 1;
        return Ok(());
    }
    let value = std::env::var(SCENARIO_ENV).unwrap_or_default();
    if value.is_empty() {
        SCENARIO_UNSET.store(true, Ordering::Relaxed);
        return fail(
            format!("{SCENARIO_ENV} is not set: name a scenario file or a bundled scenario"),
            nvmlReturn_enum_NVML_ERROR_DRIVER_NOT_LOADED,
        );
    }
    SCENARIO_UNSET.store(false, Ordering::Relaxed);
    let path = scenario::resolve_path(&value);
    let reuse = g.sim.as_ref().is_some_and(|s| s.scenario.path == path);
    if !reuse {
        match scenario::load(&path) {
            Ok(s) => g.sim = Some(Arc::new(Sim::new(s))),
            Err(e) => return fail(e, nvmlReturn_enum_NVML_ERROR_UNKNOWN),
        }
    }
    if let Some(code) = g.sim.as_ref().and_then(|s| s.scenario.init_error) {
        return fail(
            format!("the scenario's init_error makes nvmlInit fail with {code}"),
            code,
        );
    }
    lock(&LAST_ERROR).clear();
    g.refcount = 1;
    Ok(())
}

pub fn shutdown() -> Result<(), nvmlReturn_t> {
    gate();
    let mut g = lock(&GLOBAL);
    if g.refcount == 0 {
        return Err(nvmlReturn_enum_NVML_ERROR_UNINITIALIZED);
    }
    g.refcount -= 1;
    crate::cost::flush();
    Ok(())
}

/// The loaded simulation, or UNINITIALIZED outside nvmlInit/nvmlShutdown.
pub fn current() -> Result<Arc<Sim>, nvmlReturn_t> {
    let g = lock(&GLOBAL);
    match (&g.sim, g.refcount) {
        (Some(sim), n) if n > 0 => Ok(Arc::clone(sim)),
        _ => Err(nvmlReturn_enum_NVML_ERROR_UNINITIALIZED),
    }
}

pub struct Sim {
    pub scenario: Scenario,
    t0: Instant,
    /// `NVML_SIM_TIME`: the scenario clock stands still at this t (golden
    /// tests: every value is then the same on every run).
    frozen: Option<f64>,
}

impl Sim {
    fn new(scenario: Scenario) -> Sim {
        let frozen = std::env::var("NVML_SIM_TIME")
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|t| t.is_finite() && *t >= 0.0);
        Sim {
            scenario,
            t0: Instant::now(),
            frozen,
        }
    }

    /// Seconds since the scenario started (its first nvmlInit).
    pub fn now(&self) -> f64 {
        self.frozen
            .unwrap_or_else(|| self.t0.elapsed().as_secs_f64())
    }

    /// Wall clock in microseconds since the epoch (NVML timestamps).
    pub fn wall_us(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64)
    }

    /// The GPU or MIG device a handle names; INVALID_ARGUMENT for anything else.
    pub fn device(&self, dev: nvmlDevice_t) -> Result<Dev<'_>, nvmlReturn_t> {
        let invalid = nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT;
        if let Some(i) = handle_index(dev) {
            return self.scenario.gpus.get(i).map(Dev::Gpu).ok_or(invalid);
        }
        let (g, m) = mig_handle_index(dev).ok_or(invalid)?;
        let gpu = self.scenario.gpus.get(g).ok_or(invalid)?;
        gpu.mig.get(m).map(|d| Dev::Mig(gpu, d)).ok_or(invalid)
    }

    /// The checks at the start of every call: a scheduled hang (sleeps until
    /// it ends), then a lost GPU, then an injected NOT_SUPPORTED.
    pub fn enter(&self, name: &str, gpu: Option<&Gpu>) -> Result<(), nvmlReturn_t> {
        gate();
        crate::cost::charge(name);
        let faults = gpu.map_or(&self.scenario.global, |g| &g.faults);
        let t = self.now();
        if let Some(h) = faults
            .hangs
            .iter()
            .find(|h| h.call == name && h.at <= t && t < h.at + h.seconds)
        {
            let wait = Duration::from_secs_f64((h.at + h.seconds - t).max(0.0));
            if h.blocks_all {
                let _driver = lock(&DRIVER);
                std::thread::sleep(wait);
            } else {
                std::thread::sleep(wait);
            }
        }
        if gpu.is_some_and(|g| g.lost(self.now())) {
            return Err(nvmlReturn_enum_NVML_ERROR_GPU_IS_LOST);
        }
        if faults.not_supported.contains(name)
            || gpu.is_some_and(|g| {
                crate::blackwell::is_blackwell(g)
                    && crate::blackwell::UNSUPPORTED_CALLS.contains(&name)
            })
        {
            return Err(nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED);
        }
        Ok(())
    }
}

/// An event set: which GPUs and event types are registered, since when, and
/// which scheduled events it has delivered.
pub struct EventSet {
    _token: Box<u8>,
    pub registrations: Vec<Registration>,
    pub delivered: BTreeSet<(usize, usize)>,
}

pub struct Registration {
    pub gpu: usize,
    pub mask: u64,
    pub since: f64,
}

/// A GPM sample, once taken: the GPU, the GPU instance id for a MIG
/// sample (`nvmlGpmMigSampleGet`), and the time.
pub struct GpmSample {
    _token: Box<u8>,
    pub taken: Option<(usize, Option<u32>, f64)>,
}

/// Live event sets and GPM samples, keyed by their handle's address. The
/// handle points at the entry's `_token` allocation: a real, unique address
/// that is never dereferenced, and a handle that is not in the map is
/// rejected instead of being trusted.
pub static EVENT_SETS: Mutex<BTreeMap<usize, EventSet>> = Mutex::new(BTreeMap::new());
pub static GPM_SAMPLES: Mutex<BTreeMap<usize, GpmSample>> = Mutex::new(BTreeMap::new());

fn token() -> (Box<u8>, usize) {
    let b = Box::new(0u8);
    let addr = &*b as *const u8 as usize;
    (b, addr)
}

pub fn new_event_set() -> usize {
    let (t, addr) = token();
    lock(&EVENT_SETS).insert(
        addr,
        EventSet {
            _token: t,
            registrations: Vec::new(),
            delivered: BTreeSet::new(),
        },
    );
    addr
}

pub fn new_gpm_sample() -> usize {
    let (t, addr) = token();
    lock(&GPM_SAMPLES).insert(
        addr,
        GpmSample {
            _token: t,
            taken: None,
        },
    );
    addr
}
