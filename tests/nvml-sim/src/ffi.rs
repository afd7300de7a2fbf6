//! The exported NVML C API.
//!
//! Every function here has the signature of the NVML function of the same
//! name in nvml-wrapper-sys 0.10's bindings, and the same safety contract as
//! the C API: pointer arguments are null or valid for the access NVML
//! documents (out-parameters writable, strings NUL-terminated, buffers of
//! the length passed beside them). Raw pointers are turned into references
//! once, at the top of each function; the rest is safe code. No panic
//! crosses the boundary: [`guard`] turns one into `NVML_ERROR_UNKNOWN`.

#![allow(non_snake_case, clippy::missing_safety_doc)]

use std::ffi::CStr;
use std::mem::MaybeUninit;
use std::os::raw::{c_char, c_int, c_uint, c_ulonglong};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nvml_wrapper_sys::bindings::field_id::*;
use nvml_wrapper_sys::bindings::*;

use crate::gpu::{count, pct, Gpu};
use crate::sim::{self, lock, Dev, Registration, Sim, EVENT_SETS, GPM_SAMPLES};

type R = Result<(), nvmlReturn_t>;

const SUCCESS: nvmlReturn_t = nvmlReturn_enum_NVML_SUCCESS;
const INVALID: nvmlReturn_t = nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT;
const NOT_SUPPORTED: nvmlReturn_t = nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED;
const NOT_FOUND: nvmlReturn_t = nvmlReturn_enum_NVML_ERROR_NOT_FOUND;
const NO_PERMISSION: nvmlReturn_t = nvmlReturn_enum_NVML_ERROR_NO_PERMISSION;
const INSUFFICIENT_SIZE: nvmlReturn_t = nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_SIZE;
const VERSION_MISMATCH: nvmlReturn_t = nvmlReturn_enum_NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
const UNKNOWN: nvmlReturn_t = nvmlReturn_enum_NVML_ERROR_UNKNOWN;

const ENABLED: nvmlEnableState_t = nvmlEnableState_enum_NVML_FEATURE_ENABLED;
const DISABLED: nvmlEnableState_t = nvmlEnableState_enum_NVML_FEATURE_DISABLED;
const NOT_AVAILABLE_U64: u64 = u64::MAX; // NVML_VALUE_NOT_AVAILABLE as unsigned long long
const NO_INSTANCE: c_uint = u32::MAX;
const XID_EVENT: u64 = nvmlEventTypeXidCriticalError as u64;
const SUPPORTED_EVENTS: u64 = (nvmlEventTypeSingleBitEccError
    | nvmlEventTypeDoubleBitEccError
    | nvmlEventTypePState
    | nvmlEventTypeXidCriticalError
    | nvmlEventTypeClock) as u64;
/// Encoder/decoder sampling period reported, in µs.
const CODEC_PERIOD_US: c_uint = 167_000;

/// `NVML_STRUCT_VERSION(Memory, 2)`, as nvml.h defines it.
const MEMORY_V2_VERSION: c_uint = (std::mem::size_of::<nvmlMemory_v2_t>() | (2 << 24)) as c_uint;

/// Every C symbol this library exports (checked against the source by a test).
pub const EXPORTED: &[&str] = &[
    "nvmlInit_v2",
    "nvmlInitWithFlags",
    "nvmlShutdown",
    "nvmlErrorString",
    "nvmlSystemGetDriverVersion",
    "nvmlSystemGetNVMLVersion",
    "nvmlSystemGetCudaDriverVersion",
    "nvmlSystemGetCudaDriverVersion_v2",
    "nvmlSystemGetProcessName",
    "nvmlDeviceGetCount_v2",
    "nvmlDeviceGetHandleByIndex_v2",
    "nvmlDeviceGetHandleByUUID",
    "nvmlDeviceGetHandleBySerial",
    "nvmlDeviceGetHandleByPciBusId_v2",
    "nvmlDeviceGetName",
    "nvmlDeviceGetUUID",
    "nvmlDeviceGetSerial",
    "nvmlDeviceGetVbiosVersion",
    "nvmlDeviceGetBoardPartNumber",
    "nvmlDeviceGetInforomImageVersion",
    "nvmlDeviceGetPciInfo_v3",
    "nvmlDeviceGetIndex",
    "nvmlDeviceGetMinorNumber",
    "nvmlDeviceGetArchitecture",
    "nvmlDeviceGetCudaComputeCapability",
    "nvmlDeviceGetBrand",
    "nvmlDeviceGetNumGpuCores",
    "nvmlDeviceGetMemoryBusWidth",
    "nvmlDeviceGetPersistenceMode",
    "nvmlDeviceGetComputeMode",
    "nvmlDeviceGetMigMode",
    "nvmlDeviceIsMigDeviceHandle",
    "nvmlDeviceGetMaxMigDeviceCount",
    "nvmlDeviceGetMigDeviceHandleByIndex",
    "nvmlDeviceGetDeviceHandleFromMigDeviceHandle",
    "nvmlDeviceGetGpuInstanceId",
    "nvmlDeviceGetComputeInstanceId",
    "nvmlDeviceGetAttributes_v2",
    "nvmlDeviceGetMemoryInfo",
    "nvmlDeviceGetMemoryInfo_v2",
    "nvmlDeviceGetBAR1MemoryInfo",
    "nvmlDeviceGetUtilizationRates",
    "nvmlDeviceGetEncoderUtilization",
    "nvmlDeviceGetDecoderUtilization",
    "nvmlDeviceGetPowerUsage",
    "nvmlDeviceGetTotalEnergyConsumption",
    "nvmlDeviceGetEnforcedPowerLimit",
    "nvmlDeviceGetPowerManagementLimit",
    "nvmlDeviceGetPowerManagementDefaultLimit",
    "nvmlDeviceGetPowerManagementLimitConstraints",
    "nvmlDeviceGetTemperature",
    "nvmlDeviceGetTemperatureThreshold",
    "nvmlDeviceGetFanSpeed",
    "nvmlDeviceGetFanSpeed_v2",
    "nvmlDeviceGetNumFans",
    "nvmlDeviceGetClockInfo",
    "nvmlDeviceGetMaxClockInfo",
    "nvmlDeviceGetClock",
    "nvmlDeviceGetPerformanceState",
    "nvmlDeviceGetPowerState",
    "nvmlDeviceGetCurrentClocksThrottleReasons",
    "nvmlDeviceGetCurrentClocksEventReasons",
    "nvmlDeviceGetSupportedClocksThrottleReasons",
    "nvmlDeviceGetSupportedClocksEventReasons",
    "nvmlDeviceGetViolationStatus",
    "nvmlDeviceGetCurrPcieLinkGeneration",
    "nvmlDeviceGetCurrPcieLinkWidth",
    "nvmlDeviceGetMaxPcieLinkGeneration",
    "nvmlDeviceGetMaxPcieLinkWidth",
    "nvmlDeviceGetGpuMaxPcieLinkGeneration",
    "nvmlDeviceGetPcieThroughput",
    "nvmlDeviceGetPcieSpeed",
    "nvmlDeviceGetPcieReplayCounter",
    "nvmlDeviceGetComputeRunningProcesses_v3",
    "nvmlDeviceGetGraphicsRunningProcesses_v3",
    "nvmlDeviceGetMPSComputeRunningProcesses_v3",
    "nvmlDeviceGetProcessUtilization",
    "nvmlDeviceGetEccMode",
    "nvmlDeviceGetTotalEccErrors",
    "nvmlDeviceGetMemoryErrorCounter",
    "nvmlDeviceGetRemappedRows",
    "nvmlDeviceGetGpuFabricInfo",
    "nvmlDeviceGetRetiredPages",
    "nvmlDeviceGetRetiredPages_v2",
    "nvmlDeviceGetRetiredPagesPendingStatus",
    "nvmlDeviceGetNvLinkState",
    "nvmlDeviceGetNvLinkVersion",
    "nvmlDeviceGetNvLinkErrorCounter",
    "nvmlDeviceGetFieldValues",
    "nvmlDeviceGetSupportedEventTypes",
    "nvmlEventSetCreate",
    "nvmlDeviceRegisterEvents",
    "nvmlEventSetWait_v2",
    "nvmlEventSetFree",
    "nvmlGpmQueryDeviceSupport",
    "nvmlGpmSampleAlloc",
    "nvmlGpmSampleFree",
    "nvmlGpmSampleGet",
    "nvmlGpmMigSampleGet",
    "nvmlGpmMetricsGet",
    "nvmlSimGetLastError",
    "nvmlSimGetTime",
];

// ---------------------------------------------------------------------------
// Boundary helpers

/// Runs a call body; a panic becomes `NVML_ERROR_UNKNOWN`.
fn guard(f: impl FnOnce() -> R) -> nvmlReturn_t {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => SUCCESS,
        Ok(Err(code)) => code,
        Err(_) => UNKNOWN,
    }
}

/// A call on a GPU: init, handle, hang / lost / NOT_SUPPORTED checks, then
/// the body. A MIG device handle gets NOT_SUPPORTED (after its parent's
/// checks): everything but the calls written with [`any_device_call`] is
/// parent-only, as with the real library.
fn device_call(
    name: &str,
    dev: nvmlDevice_t,
    f: impl FnOnce(&Sim, &Gpu, f64) -> R,
) -> nvmlReturn_t {
    any_device_call(name, dev, |sim, d, t| match d {
        Dev::Gpu(g) => f(sim, g, t),
        Dev::Mig(..) => Err(NOT_SUPPORTED),
    })
}

/// A call on a GPU or a MIG device; a MIG device gets its parent GPU's
/// faults (a lost parent loses its MIG devices too).
fn any_device_call(
    name: &str,
    dev: nvmlDevice_t,
    f: impl FnOnce(&Sim, Dev<'_>, f64) -> R,
) -> nvmlReturn_t {
    guard(|| {
        let sim = sim::current()?;
        let d = sim.device(dev)?;
        sim.enter(name, Some(d.gpu()))?;
        let t = sim.now();
        f(&sim, d, t)
    })
}

/// A call that names no device.
fn system_call(name: &str, f: impl FnOnce(&Sim, f64) -> R) -> nvmlReturn_t {
    guard(|| {
        let sim = sim::current()?;
        sim.enter(name, None)?;
        let t = sim.now();
        f(&sim, t)
    })
}

type Out<'a, T> = Option<&'a mut MaybeUninit<T>>;
type Text<'a> = Option<&'a mut [MaybeUninit<c_char>]>;

/// # Safety
/// `p` is null or valid for writes of one `T` for the rest of the call.
unsafe fn out<'a, T>(p: *mut T) -> Out<'a, T> {
    // SAFETY: per this function's contract; MaybeUninit<T> has T's layout
    // and makes no claim about the current contents.
    unsafe { p.cast::<MaybeUninit<T>>().as_mut() }
}

/// # Safety
/// `p` is null or valid for reads and writes of one initialised `T`.
unsafe fn inout<'a, T>(p: *mut T) -> Option<&'a mut T> {
    // SAFETY: per this function's contract.
    unsafe { p.as_mut() }
}

/// # Safety
/// `p` is null or valid for writes of `len` bytes.
unsafe fn text<'a>(p: *mut c_char, len: c_uint) -> Text<'a> {
    if p.is_null() {
        return None;
    }
    // SAFETY: per this function's contract.
    Some(unsafe { std::slice::from_raw_parts_mut(p.cast::<MaybeUninit<c_char>>(), len as usize) })
}

/// # Safety
/// `p` is null or valid for writes of `n` elements.
unsafe fn array_out<'a, T>(p: *mut T, n: usize) -> Option<&'a mut [MaybeUninit<T>]> {
    if p.is_null() {
        return None;
    }
    // SAFETY: per this function's contract.
    Some(unsafe { std::slice::from_raw_parts_mut(p.cast::<MaybeUninit<T>>(), n) })
}

/// # Safety
/// `p` is null or a NUL-terminated string valid for the rest of the call.
unsafe fn cstr<'a>(p: *const c_char) -> Option<&'a CStr> {
    if p.is_null() {
        return None;
    }
    // SAFETY: per this function's contract.
    Some(unsafe { CStr::from_ptr(p) })
}

fn set<T>(o: Out<'_, T>, v: T) -> R {
    o.ok_or(INVALID)?.write(v);
    Ok(())
}

/// Copies `s` and a NUL into a caller buffer; INSUFFICIENT_SIZE if it does not fit.
fn set_str(buf: Text<'_>, s: &str) -> R {
    let buf = buf.ok_or(INVALID)?;
    if s.len() + 1 > buf.len() {
        return Err(INSUFFICIENT_SIZE);
    }
    for (d, b) in buf.iter_mut().zip(s.bytes()) {
        d.write(b as c_char);
    }
    buf[s.len()].write(0);
    Ok(())
}

/// Like [`set_str`], but cuts `s` (at a character boundary) to fit.
fn set_str_truncated(buf: Text<'_>, s: &str) -> R {
    let buf = buf.ok_or(INVALID)?;
    let mut end = s.len().min(buf.len().saturating_sub(1));
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    set_str(Some(buf), &s[..end])
}

/// NVML's "count in, count out" array protocol: `*count` is the caller's
/// capacity on entry and the number of items on return; a short array
/// gets INSUFFICIENT_SIZE and nothing written.
///
/// # Safety
/// `count` as from [`inout`]; `array` is null or valid for writes of the
/// `*count` elements the caller passed in.
unsafe fn fill_counted<T: Copy>(count: Option<&mut c_uint>, array: *mut T, items: &[T]) -> R {
    let count = count.ok_or(INVALID)?;
    let capacity = *count as usize;
    *count = items.len() as c_uint;
    if capacity < items.len() {
        return Err(INSUFFICIENT_SIZE);
    }
    if items.is_empty() {
        return Ok(());
    }
    // SAFETY: per this function's contract (capacity is the caller's count).
    let slots = unsafe { array_out(array, capacity) }.ok_or(INVALID)?;
    for (slot, item) in slots.iter_mut().zip(items) {
        slot.write(*item);
    }
    Ok(())
}

fn seconds(x: f64) -> Duration {
    Duration::from_secs_f64(x.max(0.0))
}

// ---------------------------------------------------------------------------
// Init, errors, system

#[no_mangle]
pub extern "C" fn nvmlInit_v2() -> nvmlReturn_t {
    guard(sim::init)
}

#[no_mangle]
pub extern "C" fn nvmlInitWithFlags(_flags: c_uint) -> nvmlReturn_t {
    guard(sim::init)
}

#[no_mangle]
pub extern "C" fn nvmlShutdown() -> nvmlReturn_t {
    guard(sim::shutdown)
}

#[no_mangle]
pub extern "C" fn nvmlErrorString(result: nvmlReturn_t) -> *const c_char {
    let s: &'static CStr = match result {
        0 => c"Success",
        1 => c"Uninitialized",
        2 => c"Invalid Argument",
        3 => c"Not Supported",
        4 => c"Insufficient Permissions",
        5 => c"Already Initialized",
        6 => c"Not Found",
        7 => c"Insufficient Size",
        8 => c"Insufficient External Power",
        9 if sim::SCENARIO_UNSET.load(Ordering::Relaxed) => {
            c"Driver Not Loaded (nvml-sim: NVML_SIM_SCENARIO is not set)"
        }
        9 => c"Driver Not Loaded",
        10 => c"Timeout",
        11 => c"Interrupt Request Issue",
        12 => c"NVML Shared Library Not Found",
        13 => c"Function Not Found",
        14 => c"Corrupted infoROM",
        15 => c"GPU is lost",
        16 => c"GPU requires restart",
        17 => c"The operating system has blocked the request.",
        18 => c"RM has detected an NVML/RM version mismatch.",
        19 => c"In use by another client",
        20 => c"Insufficient Memory",
        21 => c"No data",
        22 => c"The requested vgpu operation is not available on target device, because ECC is enabled",
        23 => c"Ran out of critical resources, other than memory",
        24 => c"The requested frequency is not supported",
        25 => c"The provided version is invalid/unsupported",
        26 => c"The requested functionality has been deprecated",
        27 => c"The system is not ready for the request",
        28 => c"The GPU is not found",
        29 => c"The operation is not allowed in the current state",
        _ => c"Unknown Error",
    };
    s.as_ptr()
}

/// Not NVML: copies why the last nvmlInit failed (empty after a success),
/// truncated to the buffer.
#[no_mangle]
pub unsafe extern "C" fn nvmlSimGetLastError(buf: *mut c_char, length: c_uint) -> nvmlReturn_t {
    // SAFETY: C contract: `buf` holds `length` bytes.
    let buf = unsafe { text(buf, length) };
    guard(|| set_str_truncated(buf, &sim::last_error()))
}

/// Not NVML: the scenario clock, seconds since the scenario's first nvmlInit.
#[no_mangle]
pub unsafe extern "C" fn nvmlSimGetTime(seconds: *mut f64) -> nvmlReturn_t {
    // SAFETY: C contract: `seconds` is writable.
    let seconds = unsafe { out(seconds) };
    guard(|| set(seconds, sim::current()?.now()))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetDriverVersion(
    version: *mut c_char,
    length: c_uint,
) -> nvmlReturn_t {
    // SAFETY: C contract: `version` holds `length` bytes.
    let buf = unsafe { text(version, length) };
    system_call("nvmlSystemGetDriverVersion", |sim, _| {
        set_str(buf, &sim.scenario.driver_version)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetNVMLVersion(
    version: *mut c_char,
    length: c_uint,
) -> nvmlReturn_t {
    // SAFETY: C contract: `version` holds `length` bytes.
    let buf = unsafe { text(version, length) };
    system_call("nvmlSystemGetNVMLVersion", |sim, _| {
        set_str(buf, &sim.scenario.nvml_version)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetCudaDriverVersion(
    cudaDriverVersion: *mut c_int,
) -> nvmlReturn_t {
    // SAFETY: C contract: the out-pointer is writable.
    let o = unsafe { out(cudaDriverVersion) };
    system_call("nvmlSystemGetCudaDriverVersion", |sim, _| {
        set(o, sim.scenario.cuda_driver_version)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetCudaDriverVersion_v2(
    cudaDriverVersion: *mut c_int,
) -> nvmlReturn_t {
    // SAFETY: C contract: the out-pointer is writable.
    let o = unsafe { out(cudaDriverVersion) };
    system_call("nvmlSystemGetCudaDriverVersion_v2", |sim, _| {
        set(o, sim.scenario.cuda_driver_version)
    })
}

/// The scenario's process name, else /proc/PID/comm, else NOT_FOUND.
#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetProcessName(
    pid: c_uint,
    name: *mut c_char,
    length: c_uint,
) -> nvmlReturn_t {
    // SAFETY: C contract: `name` holds `length` bytes.
    let buf = unsafe { text(name, length) };
    system_call("nvmlSystemGetProcessName", |sim, _| {
        let from_scenario = sim
            .scenario
            .gpus
            .iter()
            .flat_map(|g| g.all_processes())
            .find(|p| p.pid == pid)
            .and_then(|p| p.name.clone());
        let n = match from_scenario {
            Some(n) => n,
            None => std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|s| s.trim_end().to_owned())
                .map_err(|_| NOT_FOUND)?,
        };
        // NVML truncates process names to the buffer.
        set_str_truncated(buf, &n)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCount_v2(deviceCount: *mut c_uint) -> nvmlReturn_t {
    // SAFETY: C contract: the out-pointer is writable.
    let o = unsafe { out(deviceCount) };
    system_call("nvmlDeviceGetCount_v2", |sim, _| {
        set(o, sim.scenario.gpus.len() as c_uint)
    })
}

/// Handle lookups: the matching GPU's own faults apply (a lost GPU's
/// handle lookup returns GPU_IS_LOST, as NVML documents). `find` returns
/// the GPU's index, or its index and a MIG device index.
fn lookup(
    name: &str,
    device: Out<'_, nvmlDevice_t>,
    find: impl FnOnce(&Sim) -> Result<(usize, Option<usize>), nvmlReturn_t>,
) -> nvmlReturn_t {
    guard(|| {
        let sim = sim::current()?;
        let device = device.ok_or(INVALID)?;
        let (index, mig) = find(&sim)?;
        sim.enter(name, Some(&sim.scenario.gpus[index]))?;
        device.write(match mig {
            Some(m) => sim::mig_handle(index, m),
            None => sim::handle(index),
        });
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex_v2(
    index: c_uint,
    device: *mut nvmlDevice_t,
) -> nvmlReturn_t {
    // SAFETY: C contract: the out-pointer is writable.
    let o = unsafe { out(device) };
    lookup("nvmlDeviceGetHandleByIndex_v2", o, |sim| {
        let i = index as usize;
        if i < sim.scenario.gpus.len() {
            Ok((i, None))
        } else {
            Err(INVALID)
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByUUID(
    uuid: *const c_char,
    device: *mut nvmlDevice_t,
) -> nvmlReturn_t {
    // SAFETY: C contract: `uuid` is a C string, the out-pointer writable.
    let (uuid, o) = unsafe { (cstr(uuid), out(device)) };
    lookup("nvmlDeviceGetHandleByUUID", o, |sim| {
        let uuid = uuid.ok_or(INVALID)?.to_str().map_err(|_| NOT_FOUND)?;
        // A GPU's UUID, or a MIG device's ("MIG-..."): NVML takes both.
        for (i, g) in sim.scenario.gpus.iter().enumerate() {
            if g.uuid.eq_ignore_ascii_case(uuid) {
                return Ok((i, None));
            }
            if let Some(m) = g.mig.iter().position(|m| m.uuid.eq_ignore_ascii_case(uuid)) {
                return Ok((i, Some(m)));
            }
        }
        Err(NOT_FOUND)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleBySerial(
    serial: *const c_char,
    device: *mut nvmlDevice_t,
) -> nvmlReturn_t {
    // SAFETY: C contract: `serial` is a C string, the out-pointer writable.
    let (serial, o) = unsafe { (cstr(serial), out(device)) };
    lookup("nvmlDeviceGetHandleBySerial", o, |sim| {
        let serial = serial.ok_or(INVALID)?.to_str().map_err(|_| NOT_FOUND)?;
        sim.scenario
            .gpus
            .iter()
            .position(|g| g.serial == serial)
            .map(|i| (i, None))
            .ok_or(NOT_FOUND)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByPciBusId_v2(
    pciBusId: *const c_char,
    device: *mut nvmlDevice_t,
) -> nvmlReturn_t {
    // SAFETY: C contract: `pciBusId` is a C string, the out-pointer writable.
    let (bus, o) = unsafe { (cstr(pciBusId), out(device)) };
    lookup("nvmlDeviceGetHandleByPciBusId_v2", o, |sim| {
        let bus = bus.ok_or(INVALID)?.to_str().map_err(|_| NOT_FOUND)?;
        sim.scenario
            .gpus
            .iter()
            .position(|g| {
                g.bus_id.eq_ignore_ascii_case(bus) || g.bus_id_legacy.eq_ignore_ascii_case(bus)
            })
            .map(|i| (i, None))
            .ok_or(NOT_FOUND)
    })
}

// ---------------------------------------------------------------------------
// Identity

macro_rules! string_getter {
    ($name:ident, |$g:ident| $value:expr) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            device: nvmlDevice_t,
            buf: *mut c_char,
            length: c_uint,
        ) -> nvmlReturn_t {
            // SAFETY: C contract: `buf` holds `length` bytes.
            let buf = unsafe { text(buf, length) };
            device_call(stringify!($name), device, |_, $g, _| set_str(buf, &$value))
        }
    };
}

/// A GPU's name, or a MIG device's ("NVIDIA H100 80GB HBM3 MIG 3g.40gb").
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetName(
    device: nvmlDevice_t,
    name: *mut c_char,
    length: c_uint,
) -> nvmlReturn_t {
    // SAFETY: C contract: `name` holds `length` bytes.
    let buf = unsafe { text(name, length) };
    any_device_call("nvmlDeviceGetName", device, |_, d, _| match d {
        Dev::Gpu(g) => set_str(buf, &g.spec.name),
        Dev::Mig(_, m) => set_str(buf, &m.name),
    })
}

/// A GPU's UUID ("GPU-..."), or a MIG device's ("MIG-...").
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetUUID(
    device: nvmlDevice_t,
    uuid: *mut c_char,
    length: c_uint,
) -> nvmlReturn_t {
    // SAFETY: C contract: `uuid` holds `length` bytes.
    let buf = unsafe { text(uuid, length) };
    any_device_call("nvmlDeviceGetUUID", device, |_, d, _| match d {
        Dev::Gpu(g) => set_str(buf, &g.uuid),
        Dev::Mig(_, m) => set_str(buf, &m.uuid),
    })
}

string_getter!(nvmlDeviceGetSerial, |g| g.serial);
string_getter!(nvmlDeviceGetVbiosVersion, |g| g.spec.vbios_version);
string_getter!(nvmlDeviceGetBoardPartNumber, |g| g.spec.board_part_number);
string_getter!(nvmlDeviceGetInforomImageVersion, |g| g.spec.inforom_version);

/// A getter writing one value computed from the GPU and the time.
macro_rules! value_getter {
    ($name:ident, $ty:ty, |$g:ident, $t:ident| $value:expr) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name(device: nvmlDevice_t, value: *mut $ty) -> nvmlReturn_t {
            // SAFETY: C contract: the out-pointer is writable.
            let o = unsafe { out(value) };
            device_call(stringify!($name), device, |_, $g, $t| {
                #[allow(clippy::redundant_closure_call)]
                let v: Result<$ty, nvmlReturn_t> = (|| $value)();
                set(o, v?)
            })
        }
    };
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPciInfo_v3(
    device: nvmlDevice_t,
    pci: *mut nvmlPciInfo_t,
) -> nvmlReturn_t {
    // SAFETY: C contract: the out-pointer is writable.
    let o = unsafe { out(pci) };
    device_call("nvmlDeviceGetPciInfo_v3", device, |_, g, _| {
        let mut info = nvmlPciInfo_t {
            busIdLegacy: [0; 16],
            domain: 0,
            bus: g.pci_bus,
            device: 0,
            pciDeviceId: g.spec.pci_device_id,
            pciSubSystemId: g.spec.pci_subsystem_id,
            busId: [0; 32],
        };
        for (d, b) in info.busIdLegacy.iter_mut().zip(g.bus_id_legacy.bytes()) {
            *d = b as c_char;
        }
        for (d, b) in info.busId.iter_mut().zip(g.bus_id.bytes()) {
            *d = b as c_char;
        }
        set(o, info)
    })
}

value_getter!(nvmlDeviceGetIndex, c_uint, |g, _t| Ok(g.index as c_uint));
value_getter!(nvmlDeviceGetMinorNumber, c_uint, |g, _t| Ok(
    g.index as c_uint
));
value_getter!(
    nvmlDeviceGetArchitecture,
    nvmlDeviceArchitecture_t,
    |g, _t| { crate::scenario::architecture_code(&g.spec.architecture).ok_or(UNKNOWN) }
);
value_getter!(nvmlDeviceGetBrand, nvmlBrandType_t, |g, _t| {
    crate::scenario::brand_code(&g.spec.brand).ok_or(UNKNOWN)
});
value_getter!(nvmlDeviceGetNumGpuCores, c_uint, |g, _t| Ok(g
    .spec
    .num_cores));
value_getter!(nvmlDeviceGetMemoryBusWidth, c_uint, |g, _t| Ok(g
    .spec
    .memory_bus_width));
value_getter!(
    nvmlDeviceGetPersistenceMode,
    nvmlEnableState_t,
    |_g, _t| Ok(ENABLED)
);
value_getter!(nvmlDeviceGetComputeMode, nvmlComputeMode_t, |_g, _t| {
    Ok(nvmlComputeMode_enum_NVML_COMPUTEMODE_DEFAULT)
});
/// 0 for a GPU, 1 for a MIG device.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceIsMigDeviceHandle(
    device: nvmlDevice_t,
    isMigDevice: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: C contract: the out-pointer is writable.
    let o = unsafe { out(isMigDevice) };
    any_device_call("nvmlDeviceIsMigDeviceHandle", device, |_, d, _| {
        set(o, c_uint::from(matches!(d, Dev::Mig(..))))
    })
}

// The most MIG devices the GPU can hold (7 on A100/H100: one per compute
// slice), not how many exist; 0 while MIG is disabled or unsupported.
value_getter!(nvmlDeviceGetMaxMigDeviceCount, c_uint, |g, _t| {
    Ok(if g.mig_enabled() {
        crate::mig::COMPUTE_SLICES
    } else {
        0
    })
});

/// MIG device `index` of a MIG-enabled GPU: NOT_SUPPORTED while MIG is
/// disabled, INVALID_ARGUMENT past the max count, NOT_FOUND for an index
/// that holds no MIG device. Indices follow GPU instance ids.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMigDeviceHandleByIndex(
    device: nvmlDevice_t,
    index: c_uint,
    migDevice: *mut nvmlDevice_t,
) -> nvmlReturn_t {
    // SAFETY: C contract: the out-pointer is writable.
    let o = unsafe { out(migDevice) };
    device_call("nvmlDeviceGetMigDeviceHandleByIndex", device, |_, g, _| {
        if !g.mig_enabled() {
            return Err(NOT_SUPPORTED);
        }
        let o = o.ok_or(INVALID)?;
        if index >= crate::mig::COMPUTE_SLICES {
            return Err(INVALID);
        }
        if index as usize >= g.mig.len() {
            return Err(NOT_FOUND);
        }
        o.write(sim::mig_handle(g.index, index as usize));
        Ok(())
    })
}

/// The parent GPU of a MIG device; NOT_SUPPORTED for a GPU handle.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetDeviceHandleFromMigDeviceHandle(
    migDevice: nvmlDevice_t,
    device: *mut nvmlDevice_t,
) -> nvmlReturn_t {
    // SAFETY: C contract: the out-pointer is writable.
    let o = unsafe { out(device) };
    any_device_call(
        "nvmlDeviceGetDeviceHandleFromMigDeviceHandle",
        migDevice,
        |_, d, _| match d {
            Dev::Mig(g, _) => set(o, sim::handle(g.index)),
            Dev::Gpu(_) => Err(NOT_SUPPORTED),
        },
    )
}

/// A MIG device's GPU instance id; NOT_SUPPORTED for a GPU handle.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetGpuInstanceId(
    device: nvmlDevice_t,
    id: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: C contract: the out-pointer is writable.
    let o = unsafe { out(id) };
    any_device_call("nvmlDeviceGetGpuInstanceId", device, |_, d, _| match d {
        Dev::Mig(_, m) => set(o, m.gpu_instance_id),
        Dev::Gpu(_) => Err(NOT_SUPPORTED),
    })
}

/// A MIG device's compute instance id (unique within its GPU instance);
/// NOT_SUPPORTED for a GPU handle.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetComputeInstanceId(
    device: nvmlDevice_t,
    id: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: C contract: the out-pointer is writable.
    let o = unsafe { out(id) };
    any_device_call(
        "nvmlDeviceGetComputeInstanceId",
        device,
        |_, d, _| match d {
            Dev::Mig(_, m) => set(o, m.compute_instance_id),
            Dev::Gpu(_) => Err(NOT_SUPPORTED),
        },
    )
}

/// A MIG device's resources (SMs, engines, slices, memory in MiB); the sim
/// answers MIG devices only (NOT_SUPPORTED for a GPU handle).
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetAttributes_v2(
    device: nvmlDevice_t,
    attributes: *mut nvmlDeviceAttributes_t,
) -> nvmlReturn_t {
    // SAFETY: C contract: the out-pointer is writable.
    let o = unsafe { out(attributes) };
    any_device_call("nvmlDeviceGetAttributes_v2", device, |_, d, _| {
        let Dev::Mig(g, m) = d else {
            return Err(NOT_SUPPORTED);
        };
        let (sms, ce, dec, enc, jpeg, ofa) = crate::mig::attributes(&g.spec.architecture, m);
        set(
            o,
            nvmlDeviceAttributes_t {
                multiprocessorCount: sms,
                sharedCopyEngineCount: ce,
                sharedDecoderCount: dec,
                sharedEncoderCount: enc,
                sharedJpegCount: jpeg,
                sharedOfaCount: ofa,
                gpuInstanceSliceCount: m.compute_slices,
                computeInstanceSliceCount: m.compute_slices,
                memorySizeMB: m.memory_total_bytes >> 20,
            },
        )
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCudaComputeCapability(
    device: nvmlDevice_t,
    major: *mut c_int,
    minor: *mut c_int,
) -> nvmlReturn_t {
    // SAFETY: C contract: the out-pointers are writable.
    let (major, minor) = unsafe { (out(major), out(minor)) };
    device_call("nvmlDeviceGetCudaComputeCapability", device, |_, g, _| {
        let [a, b] = g.spec.cuda_compute_capability;
        set(major, a)?;
        set(minor, b)
    })
}

/// Enabled (current and pending) when the scenario sets `mig`; GPUs
/// without MIG answer NOT_SUPPORTED.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMigMode(
    device: nvmlDevice_t,
    currentMode: *mut c_uint,
    pendingMode: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: C contract: the out-pointers are writable.
    let (cur, pending) = unsafe { (out(currentMode), out(pendingMode)) };
    device_call("nvmlDeviceGetMigMode", device, |_, g, _| {
        if !g.spec.mig_capable {
            return Err(NOT_SUPPORTED);
        }
        let mode = if g.mig_enabled() {
            NVML_DEVICE_MIG_ENABLE
        } else {
            NVML_DEVICE_MIG_DISABLE
        };
        set(cur, mode)?;
        set(
            pending,
            match g.spec.mig_pending {
                Some(true) => NVML_DEVICE_MIG_ENABLE,
                Some(false) => NVML_DEVICE_MIG_DISABLE,
                None => mode,
            },
        )
    })
}

// ---------------------------------------------------------------------------
// Memory and utilisation

/// (total, reserved, used, free) bytes of a GPU or a MIG device. A
/// MIG-enabled parent answers the sum over its instances to a privileged
/// caller, NO_PERMISSION to others (the real library's rule).
fn memory_of(sim: &Sim, d: Dev<'_>, t: f64) -> Result<(u64, u64, u64, u64), nvmlReturn_t> {
    match d {
        Dev::Mig(_, m) => Ok(m.memory(t)),
        Dev::Gpu(g) if g.mig_enabled() && !sim.scenario.privileged => Err(NO_PERMISSION),
        Dev::Gpu(g) => Ok(g.memory(t)),
    }
}

/// v1: `used` includes the reserved memory (total = used + free).
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo(
    device: nvmlDevice_t,
    memory: *mut nvmlMemory_t,
) -> nvmlReturn_t {
    // SAFETY: C contract: the out-pointer is writable.
    let o = unsafe { out(memory) };
    any_device_call("nvmlDeviceGetMemoryInfo", device, |sim, d, t| {
        let (total, _reserved, _used, free) = memory_of(sim, d, t)?;
        set(
            o,
            nvmlMemory_t {
                total,
                free,
                used: total - free,
            },
        )
    })
}

/// v2: the caller sets `version` to NVML_STRUCT_VERSION(Memory, 2); `used`
/// excludes `reserved` (total = reserved + used + free).
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo_v2(
    device: nvmlDevice_t,
    memory: *mut nvmlMemory_v2_t,
) -> nvmlReturn_t {
    // SAFETY: C contract: the struct is readable (version) and writable.
    let m = unsafe { inout(memory) };
    any_device_call("nvmlDeviceGetMemoryInfo_v2", device, |sim, d, t| {
        let m = m.ok_or(INVALID)?;
        if m.version != MEMORY_V2_VERSION {
            return Err(VERSION_MISMATCH);
        }
        let (total, reserved, used, free) = memory_of(sim, d, t)?;
        m.total = total;
        m.reserved = reserved;
        m.used = used;
        m.free = free;
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetBAR1MemoryInfo(
    device: nvmlDevice_t,
    bar1Memory: *mut nvmlBAR1Memory_t,
) -> nvmlReturn_t {
    // SAFETY: C contract: the out-pointer is writable.
    let o = unsafe { out(bar1Memory) };
    device_call("nvmlDeviceGetBAR1MemoryInfo", device, |_, g, _| {
        let total = g.spec.bar1_total_mib << 20;
        let used = (g.spec.bar1_used_mib << 20).min(total);
        set(
            o,
            nvmlBAR1Memory_t {
                bar1Total: total,
                bar1Free: total - used,
                bar1Used: used,
            },
        )
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetUtilizationRates(
    device: nvmlDevice_t,
    utilization: *mut nvmlUtilization_t,
) -> nvmlReturn_t {
    // SAFETY: C contract: the out-pointer is writable.
    let o = unsafe { out(utilization) };
    device_call("nvmlDeviceGetUtilizationRates", device, |_, g, t| {
        // "On MIG-enabled GPUs, querying device utilization rates is not
        // currently supported" (nvml.h); MIG devices answer the same.
        if g.mig_enabled() {
            return Err(NOT_SUPPORTED);
        }
        set(
            o,
            nvmlUtilization_t {
                gpu: g.util(t),
                memory: g.mem_util(t),
            },
        )
    })
}

macro_rules! codec_getter {
    ($name:ident, $curve:ident) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            device: nvmlDevice_t,
            utilization: *mut c_uint,
            samplingPeriodUs: *mut c_uint,
        ) -> nvmlReturn_t {
            // SAFETY: C contract: the out-pointers are writable.
            let (u, p) = unsafe { (out(utilization), out(samplingPeriodUs)) };
            device_call(stringify!($name), device, |_, g, t| {
                set(u, pct(g.curves.$curve.at(t)))?;
                set(p, CODEC_PERIOD_US)
            })
        }
    };
}

codec_getter!(nvmlDeviceGetEncoderUtilization, enc_util);
codec_getter!(nvmlDeviceGetDecoderUtilization, dec_util);

// ---------------------------------------------------------------------------
// Power and thermal

value_getter!(nvmlDeviceGetPowerUsage, c_uint, |g, t| Ok(g.power_mw(t)));
value_getter!(nvmlDeviceGetTotalEnergyConsumption, c_ulonglong, |g, t| Ok(
    g.energy_mj(t)
));
value_getter!(nvmlDeviceGetEnforcedPowerLimit, c_uint, |g, _t| Ok(
    g.power_limit_mw()
));
value_getter!(nvmlDeviceGetPowerManagementLimit, c_uint, |g, _t| Ok(
    g.power_limit_mw()
));
value_getter!(nvmlDeviceGetPowerManagementDefaultLimit, c_uint, |g, _t| {
    Ok((g.spec.power_default_limit_w.unwrap_or(g.spec.power_limit_w) * 1000.0) as c_uint)
});

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPowerManagementLimitConstraints(
    device: nvmlDevice_t,
    minLimit: *mut c_uint,
    maxLimit: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: C contract: the out-pointers are writable.
    let (lo, hi) = unsafe { (out(minLimit), out(maxLimit)) };
    device_call(
        "nvmlDeviceGetPowerManagementLimitConstraints",
        device,
        |_, g, _| {
            set(lo, (g.spec.power_min_limit_w * 1000.0) as c_uint)?;
            set(hi, (g.spec.power_max_limit_w * 1000.0) as c_uint)
        },
    )
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetTemperature(
    device: nvmlDevice_t,
    sensorType: nvmlTemperatureSensors_t,
    temp: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: C contract: the out-pointer is writable.
    let o = unsafe { out(temp) };
    device_call("nvmlDeviceGetTemperature", device, |_, g, t| {
        if sensorType != nvmlTemperatureSensors_enum_NVML_TEMPERATURE_GPU {
            return Err(INVALID);
        }
        set(o, g.temp_c(t))
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetTemperatureThreshold(
    device: nvmlDevice_t,
    thresholdType: nvmlTemperatureThresholds_t,
    temp: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: C contract: the out-pointer is writable.
    let o = unsafe { out(temp) };
    device_call("nvmlDeviceGetTemperatureThreshold", device, |_, g, _| {
        let s = &g.spec;
        let v = match thresholdType {
            0 => s.shutdown_temp_c,
            1 => s.slowdown_temp_c,
            2 if s.memory_max_temp_c > 0 => s.memory_max_temp_c,
            3 => s.max_operating_temp_c,
            x if x >= nvmlTemperatureThresholds_enum_NVML_TEMPERATURE_THRESHOLD_COUNT => {
                return Err(INVALID)
            }
            _ => return Err(NOT_SUPPORTED),
        };
        set(o, v)
    })
}

/// As the real driver: a board with no fans answers NOT_SUPPORTED to the
/// legacy call, and INVALID_ARGUMENT to `_v2` for any index (seen on an H100
/// SXM, driver 580), as for any index past the last fan.
fn fan_speed(g: &Gpu, fan: c_uint, t: f64) -> Result<c_uint, nvmlReturn_t> {
    if fan >= g.spec.fans {
        Err(INVALID)
    } else {
        Ok(pct(g.curves.fan_pct.at(t)))
    }
}

value_getter!(nvmlDeviceGetFanSpeed, c_uint, |g, t| if g.spec.fans == 0 {
    Err(NOT_SUPPORTED)
} else {
    fan_speed(g, 0, t)
});
value_getter!(nvmlDeviceGetNumFans, c_uint, |g, _t| Ok(g.spec.fans));

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetFanSpeed_v2(
    device: nvmlDevice_t,
    fan: c_uint,
    speed: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: C contract: the out-pointer is writable.
    let o = unsafe { out(speed) };
    device_call("nvmlDeviceGetFanSpeed_v2", device, |_, g, t| {
        set(o, fan_speed(g, fan, t)?)
    })
}

// ---------------------------------------------------------------------------
// Clocks, performance state, clock event reasons, violations

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetClockInfo(
    device: nvmlDevice_t,
    type_: nvmlClockType_t,
    clock: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: C contract: the out-pointer is writable.
    let o = unsafe { out(clock) };
    device_call("nvmlDeviceGetClockInfo", device, |_, g, t| {
        set(o, g.clock_mhz(type_, t).ok_or(INVALID)?)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMaxClockInfo(
    device: nvmlDevice_t,
    type_: nvmlClockType_t,
    clock: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: C contract: the out-pointer is writable.
    let o = unsafe { out(clock) };
    device_call("nvmlDeviceGetMaxClockInfo", device, |_, g, _| {
        set(o, g.max_clock_mhz(type_).ok_or(INVALID)?)
    })
}

/// Current clocks; application clocks and the boost max report the max clock.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetClock(
    device: nvmlDevice_t,
    clockType: nvmlClockType_t,
    clockId: nvmlClockId_t,
    clockMHz: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: C contract: the out-pointer is writable.
    let o = unsafe { out(clockMHz) };
    device_call("nvmlDeviceGetClock", device, |_, g, t| {
        let v = match clockId {
            nvmlClockId_enum_NVML_CLOCK_ID_CURRENT => g.clock_mhz(clockType, t),
            nvmlClockId_enum_NVML_CLOCK_ID_APP_CLOCK_TARGET
            | nvmlClockId_enum_NVML_CLOCK_ID_APP_CLOCK_DEFAULT
            | nvmlClockId_enum_NVML_CLOCK_ID_CUSTOMER_BOOST_MAX => g.max_clock_mhz(clockType),
            _ => None,
        };
        set(o, v.ok_or(INVALID)?)
    })
}

value_getter!(nvmlDeviceGetPerformanceState, nvmlPstates_t, |g, t| Ok(
    g.pstate(t)
));
value_getter!(nvmlDeviceGetPowerState, nvmlPstates_t, |g, t| Ok(
    g.pstate(t)
));
value_getter!(
    nvmlDeviceGetCurrentClocksThrottleReasons,
    c_ulonglong,
    |g, t| { Ok(g.throttle_reasons(t)) }
);
value_getter!(
    nvmlDeviceGetCurrentClocksEventReasons,
    c_ulonglong,
    |g, t| { Ok(g.throttle_reasons(t)) }
);
value_getter!(
    nvmlDeviceGetSupportedClocksThrottleReasons,
    c_ulonglong,
    |g, _t| { Ok(g.supported_throttle_reasons()) }
);
value_getter!(
    nvmlDeviceGetSupportedClocksEventReasons,
    c_ulonglong,
    |g, _t| { Ok(g.supported_throttle_reasons()) }
);

/// Power and thermal policies accumulate the time their clock event
/// reasons were active since nvmlInit (ns); the other policies report 0.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetViolationStatus(
    device: nvmlDevice_t,
    perfPolicyType: nvmlPerfPolicyType_t,
    violTime: *mut nvmlViolationTime_t,
) -> nvmlReturn_t {
    // SAFETY: C contract: the out-pointer is writable.
    let o = unsafe { out(violTime) };
    device_call("nvmlDeviceGetViolationStatus", device, |sim, g, t| {
        let (power, thermal) = g.violation_ns(t);
        let v = match perfPolicyType {
            nvmlPerfPolicyType_enum_NVML_PERF_POLICY_POWER => power,
            nvmlPerfPolicyType_enum_NVML_PERF_POLICY_THERMAL => thermal,
            2..=5 | 10 | 11 => 0,
            _ => return Err(INVALID),
        };
        set(
            o,
            nvmlViolationTime_t {
                referenceTime: sim.wall_us(),
                violationTime: v,
            },
        )
    })
}

// ---------------------------------------------------------------------------
// PCIe

value_getter!(nvmlDeviceGetCurrPcieLinkGeneration, c_uint, |g, t| Ok(
    g.pcie_gen(t)
));
value_getter!(nvmlDeviceGetCurrPcieLinkWidth, c_uint, |g, _t| Ok(
    g.pcie_width()
));
value_getter!(nvmlDeviceGetMaxPcieLinkGeneration, c_uint, |g, _t| Ok(g
    .spec
    .pcie_max_gen));
value_getter!(nvmlDeviceGetGpuMaxPcieLinkGeneration, c_uint, |g, _t| Ok(g
    .spec
    .pcie_max_gen));
value_getter!(nvmlDeviceGetMaxPcieLinkWidth, c_uint, |g, _t| Ok(g
    .spec
    .pcie_max_width));
value_getter!(nvmlDeviceGetPcieReplayCounter, c_uint, |g, t| {
    Ok(count(&g.curves.pcie_replay, t) as c_uint)
});

// Per-lane transfer rate of the current link generation, in Mbps.
value_getter!(nvmlDeviceGetPcieSpeed, c_uint, |g, t| {
    Ok(match g.pcie_gen(t) {
        1 => 2_500,
        2 => 5_000,
        3 => 8_000,
        4 => 16_000,
        5 => 32_000,
        _ => 64_000,
    })
});

/// KB/s over the last sample period, per direction.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPcieThroughput(
    device: nvmlDevice_t,
    counter: nvmlPcieUtilCounter_t,
    value: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: C contract: the out-pointer is writable.
    let o = unsafe { out(value) };
    device_call("nvmlDeviceGetPcieThroughput", device, |_, g, t| {
        let c = match counter {
            nvmlPcieUtilCounter_enum_NVML_PCIE_UTIL_TX_BYTES => &g.curves.pcie_tx_kbps,
            nvmlPcieUtilCounter_enum_NVML_PCIE_UTIL_RX_BYTES => &g.curves.pcie_rx_kbps,
            _ => return Err(INVALID),
        };
        set(o, c.at(t).max(0.0) as c_uint)
    })
}

// ---------------------------------------------------------------------------
// Processes

fn process_info(p: &crate::gpu::Process, gi: c_uint, ci: c_uint) -> nvmlProcessInfo_t {
    nvmlProcessInfo_t {
        pid: p.pid,
        usedGpuMemory: p.used_memory_bytes.unwrap_or(NOT_AVAILABLE_U64),
        gpuInstanceId: gi,
        computeInstanceId: ci,
    }
}

/// A GPU's compute processes; a MIG device's are its own, with their
/// instance ids. A MIG-enabled parent lists every instance's processes
/// (instance ids set) to a privileged caller, NO_PERMISSION to others.
fn compute_processes(
    sim: &Sim,
    d: Dev<'_>,
    t: f64,
) -> Result<Vec<nvmlProcessInfo_t>, nvmlReturn_t> {
    let mig = |m: &crate::mig::MigDevice| -> Vec<nvmlProcessInfo_t> {
        m.active_processes(t)
            .map(|p| process_info(p, m.gpu_instance_id, m.compute_instance_id))
            .collect()
    };
    Ok(match d {
        Dev::Mig(_, m) => mig(m),
        Dev::Gpu(g) if g.mig_enabled() => {
            if !sim.scenario.privileged {
                return Err(NO_PERMISSION);
            }
            g.mig.iter().flat_map(mig).collect()
        }
        Dev::Gpu(g) => g
            .active_processes(t)
            .map(|p| process_info(p, NO_INSTANCE, NO_INSTANCE))
            .collect(),
    })
}

macro_rules! process_getter {
    ($name:ident, |$sim:ident, $d:ident, $t:ident| $items:expr) => {
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            device: nvmlDevice_t,
            infoCount: *mut c_uint,
            infos: *mut nvmlProcessInfo_t,
        ) -> nvmlReturn_t {
            // SAFETY: C contract: `infoCount` is readable and writable.
            let n = unsafe { inout(infoCount) };
            any_device_call(stringify!($name), device, |$sim, $d, $t| {
                let items: Vec<nvmlProcessInfo_t> = $items;
                // SAFETY: C contract: `infos` holds the caller's `*infoCount` entries.
                unsafe { fill_counted(n, infos, &items) }
            })
        }
    };
}

process_getter!(nvmlDeviceGetComputeRunningProcesses_v3, |sim, d, t| {
    compute_processes(sim, d, t)?
});
process_getter!(nvmlDeviceGetGraphicsRunningProcesses_v3, |_sim, _d, _t| {
    Vec::new()
});
process_getter!(
    nvmlDeviceGetMPSComputeRunningProcesses_v3,
    |_sim, _d, _t| { Vec::new() }
);

/// One sample per active process, stamped now; samples not newer than
/// `lastSeenTimeStamp` are left out, and none at all is NOT_FOUND.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetProcessUtilization(
    device: nvmlDevice_t,
    utilization: *mut nvmlProcessUtilizationSample_t,
    processSamplesCount: *mut c_uint,
    lastSeenTimeStamp: c_ulonglong,
) -> nvmlReturn_t {
    // SAFETY: C contract: the count is readable and writable.
    let n = unsafe { inout(processSamplesCount) };
    device_call("nvmlDeviceGetProcessUtilization", device, |sim, g, t| {
        // Not available in MIG mode (on the parent; MIG devices: parent-only call).
        if g.mig_enabled() {
            return Err(NOT_SUPPORTED);
        }
        let now = sim.wall_us();
        let items: Vec<nvmlProcessUtilizationSample_t> = if now > lastSeenTimeStamp {
            let count = g.active_processes(t).count().max(1) as f64;
            g.active_processes(t)
                .map(|p| nvmlProcessUtilizationSample_t {
                    pid: p.pid,
                    timeStamp: now,
                    smUtil: g.process_sm_util(p, t),
                    memUtil: pct(g.curves.mem_util.at(t) / count),
                    encUtil: 0,
                    decUtil: 0,
                })
                .collect()
        } else {
            Vec::new()
        };
        let n = n.ok_or(INVALID)?;
        if items.is_empty() {
            *n = 0;
            return Err(NOT_FOUND);
        }
        if utilization.is_null() {
            *n = items.len() as c_uint;
            return Err(INSUFFICIENT_SIZE);
        }
        // SAFETY: C contract: `utilization` holds the caller's `*processSamplesCount` entries.
        unsafe { fill_counted(Some(n), utilization, &items) }
    })
}

// ---------------------------------------------------------------------------
// Reliability: ECC, remapped rows, retired pages

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetEccMode(
    device: nvmlDevice_t,
    current: *mut nvmlEnableState_t,
    pending: *mut nvmlEnableState_t,
) -> nvmlReturn_t {
    // SAFETY: C contract: the out-pointers are writable.
    let (cur, pend) = unsafe { (out(current), out(pending)) };
    device_call("nvmlDeviceGetEccMode", device, |_, g, _| {
        let state = if g.spec.ecc { ENABLED } else { DISABLED };
        set(cur, state)?;
        set(
            pend,
            if g.spec.ecc_pending.unwrap_or(g.spec.ecc) {
                ENABLED
            } else {
                DISABLED
            },
        )
    })
}

fn ecc_total(g: &Gpu, error_type: c_uint, counter: c_uint, t: f64) -> Result<u64, nvmlReturn_t> {
    if !g.spec.ecc {
        return Err(NOT_SUPPORTED);
    }
    let c = &g.curves;
    let curve = match (error_type, counter) {
        (0, 0) => &c.ecc_sbe,
        (1, 0) => &c.ecc_dbe,
        (0, 1) => &c.ecc_sbe_agg,
        (1, 1) => &c.ecc_dbe_agg,
        _ => return Err(INVALID),
    };
    Ok(count(curve, t))
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetTotalEccErrors(
    device: nvmlDevice_t,
    errorType: nvmlMemoryErrorType_t,
    counterType: nvmlEccCounterType_t,
    eccCounts: *mut c_ulonglong,
) -> nvmlReturn_t {
    // SAFETY: C contract: the out-pointer is writable.
    let o = unsafe { out(eccCounts) };
    device_call("nvmlDeviceGetTotalEccErrors", device, |_, g, t| {
        set(o, ecc_total(g, errorType, counterType, t)?)
    })
}

/// All errors are in device memory (DRAM); the other locations count 0.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMemoryErrorCounter(
    device: nvmlDevice_t,
    errorType: nvmlMemoryErrorType_t,
    counterType: nvmlEccCounterType_t,
    locationType: nvmlMemoryLocation_t,
    count: *mut c_ulonglong,
) -> nvmlReturn_t {
    // SAFETY: C contract: the out-pointer is writable.
    let o = unsafe { out(count) };
    device_call("nvmlDeviceGetMemoryErrorCounter", device, |_, g, t| {
        let total = ecc_total(g, errorType, counterType, t)?;
        let v = match locationType {
            nvmlMemoryLocation_enum_NVML_MEMORY_LOCATION_DRAM => total,
            x if x < nvmlMemoryLocation_enum_NVML_MEMORY_LOCATION_COUNT => 0,
            _ => return Err(INVALID),
        };
        set(o, v)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetGpuFabricInfo(
    device: nvmlDevice_t,
    info: *mut nvmlGpuFabricInfo_t,
) -> nvmlReturn_t {
    // SAFETY: C contract: the out-pointer is writable.
    let info = unsafe { out(info) };
    device_call("nvmlDeviceGetGpuFabricInfo", device, |_, g, _| {
        let Some(f) = &g.spec.fabric else {
            return Err(NOT_SUPPORTED);
        };
        set(
            info,
            nvmlGpuFabricInfo_t {
                clusterUuid: [0; 16],
                status: f.status,
                cliqueId: if f.state == NVML_GPU_FABRIC_STATE_COMPLETED {
                    1
                } else {
                    0
                },
                state: f.state as _,
            },
        )
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetRemappedRows(
    device: nvmlDevice_t,
    corrRows: *mut c_uint,
    uncRows: *mut c_uint,
    isPending: *mut c_uint,
    failureOccurred: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: C contract: the out-pointers are writable.
    let outs = unsafe {
        (
            out(corrRows),
            out(uncRows),
            out(isPending),
            out(failureOccurred),
        )
    };
    device_call("nvmlDeviceGetRemappedRows", device, |_, g, t| {
        if !g.spec.row_remapping {
            return Err(NOT_SUPPORTED);
        }
        let c = &g.curves;
        let (cor, unc, pend, fail) = outs;
        set(cor, count(&c.remap_cor, t) as c_uint)?;
        set(unc, count(&c.remap_unc, t) as c_uint)?;
        set(pend, c_uint::from(c.remap_pending.at(t) >= 0.5))?;
        set(fail, c_uint::from(c.remap_failure.at(t) >= 0.5))
    })
}

/// Page retirement exists only on GPUs without row remapping (pre-Ampere).
fn retired_pages(g: &Gpu, cause: c_uint, t: f64) -> Result<Vec<(u64, u64)>, nvmlReturn_t> {
    if g.spec.row_remapping {
        return Err(NOT_SUPPORTED);
    }
    let n = match cause {
        0 => count(&g.curves.retired_sbe, t),
        1 => count(&g.curves.retired_dbe, t),
        _ => return Err(INVALID),
    };
    let base = 0x1_0000_0000u64 * (u64::from(cause) + 1);
    Ok((0..n)
        .map(|i| (base + i * 0x1000, 1_700_000_000 + i))
        .collect())
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetRetiredPages(
    device: nvmlDevice_t,
    cause: nvmlPageRetirementCause_t,
    pageCount: *mut c_uint,
    addresses: *mut c_ulonglong,
) -> nvmlReturn_t {
    // SAFETY: C contract: the count is readable and writable.
    let n = unsafe { inout(pageCount) };
    device_call("nvmlDeviceGetRetiredPages", device, |_, g, t| {
        let pages: Vec<u64> = retired_pages(g, cause, t)?.iter().map(|p| p.0).collect();
        // SAFETY: C contract: `addresses` holds the caller's `*pageCount` entries.
        unsafe { fill_counted(n, addresses, &pages) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetRetiredPages_v2(
    device: nvmlDevice_t,
    cause: nvmlPageRetirementCause_t,
    pageCount: *mut c_uint,
    addresses: *mut c_ulonglong,
    timestamps: *mut c_ulonglong,
) -> nvmlReturn_t {
    // SAFETY: C contract: the count is readable and writable.
    let n = unsafe { inout(pageCount) };
    device_call("nvmlDeviceGetRetiredPages_v2", device, |_, g, t| {
        let pages = retired_pages(g, cause, t)?;
        let n = n.ok_or(INVALID)?;
        let capacity = *n;
        let addrs: Vec<u64> = pages.iter().map(|p| p.0).collect();
        let stamps: Vec<u64> = pages.iter().map(|p| p.1).collect();
        // SAFETY: C contract: both arrays hold the caller's `*pageCount` entries.
        unsafe { fill_counted(Some(&mut *n), addresses, &addrs) }?;
        *n = capacity;
        // SAFETY: as above.
        unsafe { fill_counted(Some(n), timestamps, &stamps) }
    })
}

value_getter!(
    nvmlDeviceGetRetiredPagesPendingStatus,
    nvmlEnableState_t,
    |g, t| {
        if g.spec.row_remapping {
            return Err(NOT_SUPPORTED);
        }
        Ok(if g.curves.retired_pending.at(t) >= 0.5 {
            ENABLED
        } else {
            DISABLED
        })
    }
);

// ---------------------------------------------------------------------------
// NVLink

fn check_link(g: &Gpu, link: c_uint) -> R {
    if g.spec.nvlink_links == 0 {
        Err(NOT_SUPPORTED)
    } else if link >= g.spec.nvlink_links {
        Err(INVALID)
    } else {
        Ok(())
    }
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetNvLinkState(
    device: nvmlDevice_t,
    link: c_uint,
    isActive: *mut nvmlEnableState_t,
) -> nvmlReturn_t {
    // SAFETY: C contract: the out-pointer is writable.
    let o = unsafe { out(isActive) };
    device_call("nvmlDeviceGetNvLinkState", device, |_, g, _| {
        check_link(g, link)?;
        set(o, if g.link_up(link) { ENABLED } else { DISABLED })
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetNvLinkVersion(
    device: nvmlDevice_t,
    link: c_uint,
    version: *mut c_uint,
) -> nvmlReturn_t {
    // SAFETY: C contract: the out-pointer is writable.
    let o = unsafe { out(version) };
    device_call("nvmlDeviceGetNvLinkVersion", device, |_, g, _| {
        check_link(g, link)?;
        set(o, g.spec.nvlink_version)
    })
}

/// Per-link error counters (replay, recovery, CRC flit; CRC data and ECC data stay 0).
fn link_errors(g: &Gpu, counter: c_uint, t: f64) -> Result<u64, nvmlReturn_t> {
    let c = &g.curves;
    Ok(match counter {
        nvmlNvLinkErrorCounter_enum_NVML_NVLINK_ERROR_DL_REPLAY => count(&c.nvlink_replay, t),
        nvmlNvLinkErrorCounter_enum_NVML_NVLINK_ERROR_DL_RECOVERY => count(&c.nvlink_recovery, t),
        nvmlNvLinkErrorCounter_enum_NVML_NVLINK_ERROR_DL_CRC_FLIT => count(&c.nvlink_crc, t),
        nvmlNvLinkErrorCounter_enum_NVML_NVLINK_ERROR_DL_CRC_DATA
        | nvmlNvLinkErrorCounter_enum_NVML_NVLINK_ERROR_DL_ECC_DATA => 0,
        _ => return Err(INVALID),
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetNvLinkErrorCounter(
    device: nvmlDevice_t,
    link: c_uint,
    counter: nvmlNvLinkErrorCounter_t,
    counterValue: *mut c_ulonglong,
) -> nvmlReturn_t {
    // SAFETY: C contract: the out-pointer is writable.
    let o = unsafe { out(counterValue) };
    device_call("nvmlDeviceGetNvLinkErrorCounter", device, |_, g, t| {
        check_link(g, link)?;
        let v = if g.link_up(link) {
            link_errors(g, counter, t)?
        } else {
            0
        };
        set(o, v)
    })
}

// ---------------------------------------------------------------------------
// Field values

enum Value {
    U32(u32),
    U64(u64),
}

/// A per-link field: `scope` is the link, or u32::MAX for the sum over links.
fn per_link(g: &Gpu, scope: u32, f: impl Fn(u32) -> u64) -> Result<Value, nvmlReturn_t> {
    if g.spec.nvlink_links == 0 {
        return Err(NOT_SUPPORTED);
    }
    if scope == u32::MAX {
        return Ok(Value::U64(match g.spec.nvlink_aggregate_link {
            Some(l) => f(l),
            None => (0..g.spec.nvlink_links).map(f).sum(),
        }));
    }
    if scope >= g.spec.nvlink_links {
        return Err(INVALID);
    }
    Ok(Value::U64(f(scope)))
}

/// The legacy per-link error fields (`..._L0` to `..._L11` and `..._TOTAL`):
/// (error counter, link or None for the total).
fn legacy_link_field(id: u32) -> Option<(c_uint, Option<u32>)> {
    const GROUPS: [(u32, u32, c_uint); 4] = [
        (
            NVML_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_L0,
            NVML_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_L6,
            2,
        ),
        (
            NVML_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_L0,
            NVML_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_L6,
            3,
        ),
        (
            NVML_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_L0,
            NVML_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_L6,
            0,
        ),
        (
            NVML_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_L0,
            NVML_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_L6,
            1,
        ),
    ];
    for (l0, l6, counter) in GROUPS {
        if (l0..l0 + 6).contains(&id) {
            return Some((counter, Some(id - l0)));
        }
        if id == l0 + 6 {
            return Some((counter, None));
        }
        if (l6..l6 + 6).contains(&id) {
            return Some((counter, Some(id - l6 + 6)));
        }
    }
    None
}

fn field_value(g: &Gpu, id: u32, scope: u32, t: f64) -> Result<Value, nvmlReturn_t> {
    if !g.faults.not_supported.is_empty()
        && (g
            .faults
            .not_supported
            .contains(&format!("nvmlDeviceGetFieldValues({id})"))
            || (scope == u32::MAX
                && g.faults
                    .not_supported
                    .contains(&format!("nvmlDeviceGetFieldValues({id}, all links)"))))
    {
        return Err(NOT_SUPPORTED);
    }
    let c = &g.curves;
    let ecc = |e: c_uint, k: c_uint| ecc_total(g, e, k, t).map(Value::U64);
    let links = g.spec.nvlink_links;
    let link_field = |f: &dyn Fn(u32) -> u64| per_link(g, scope, f);
    Ok(match id {
        NVML_FI_DEV_ECC_CURRENT | NVML_FI_DEV_ECC_PENDING => Value::U32(u32::from(g.spec.ecc)),
        NVML_FI_DEV_ECC_SBE_VOL_TOTAL => ecc(0, 0)?,
        NVML_FI_DEV_ECC_DBE_VOL_TOTAL => ecc(1, 0)?,
        NVML_FI_DEV_ECC_SBE_AGG_TOTAL => ecc(0, 1)?,
        NVML_FI_DEV_ECC_DBE_AGG_TOTAL => ecc(1, 1)?,
        NVML_FI_DEV_PERF_POLICY_POWER => Value::U64(g.violation_ns(t).0),
        NVML_FI_DEV_PERF_POLICY_THERMAL => Value::U64(g.violation_ns(t).1),
        NVML_FI_DEV_PERF_POLICY_SYNC_BOOST
        | NVML_FI_DEV_PERF_POLICY_BOARD_LIMIT
        | NVML_FI_DEV_PERF_POLICY_LOW_UTILIZATION
        | NVML_FI_DEV_PERF_POLICY_RELIABILITY => Value::U64(0),
        NVML_FI_DEV_MEMORY_TEMP => {
            if g.spec.memory_max_temp_c == 0 {
                return Err(NOT_SUPPORTED);
            }
            Value::U32(g.mem_temp_c(t))
        }
        NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION | NVML_FI_DEV_ENERGY => Value::U64(g.energy_mj(t)),
        NVML_FI_DEV_POWER_AVERAGE | NVML_FI_DEV_POWER_INSTANT => {
            if scope != NVML_POWER_SCOPE_GPU {
                return Err(NOT_SUPPORTED);
            }
            Value::U32(g.power_mw(t))
        }
        NVML_FI_DEV_NVLINK_LINK_COUNT => {
            if links == 0 {
                return Err(NOT_SUPPORTED);
            }
            Value::U32(links)
        }
        NVML_FI_DEV_NVLINK_SPEED_MBPS_COMMON => {
            if links == 0 {
                return Err(NOT_SUPPORTED);
            }
            Value::U32(g.spec.nvlink_speed_mbps)
        }
        NVML_FI_DEV_PCIE_REPLAY_COUNTER => Value::U64(count(&c.pcie_replay, t)),
        NVML_FI_DEV_GET_GPU_RECOVERY_ACTION => match &g.spec.recovery_action {
            Some(a) => Value::U32(a.at(t).clamp(0.0, 4.0) as u32),
            None => return Err(NOT_SUPPORTED),
        },
        NVML_FI_DEV_PCIE_COUNT_TX_BYTES => Value::U64(g.pcie_bytes(t).0),
        NVML_FI_DEV_PCIE_COUNT_RX_BYTES => Value::U64(g.pcie_bytes(t).1),
        NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX => link_field(&|l| g.nvlink_kib(l, t).0)?,
        NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX => link_field(&|l| g.nvlink_kib(l, t).1)?,
        // Raw traffic includes protocol overhead: ~5 % over data.
        NVML_FI_DEV_NVLINK_THROUGHPUT_RAW_TX => link_field(&|l| g.nvlink_kib(l, t).0 * 21 / 20)?,
        NVML_FI_DEV_NVLINK_THROUGHPUT_RAW_RX => link_field(&|l| g.nvlink_kib(l, t).1 * 21 / 20)?,
        NVML_FI_DEV_NVLINK_ERROR_DL_REPLAY
        | NVML_FI_DEV_NVLINK_ERROR_DL_RECOVERY
        | NVML_FI_DEV_NVLINK_ERROR_DL_CRC => {
            let counter = match id {
                NVML_FI_DEV_NVLINK_ERROR_DL_REPLAY => 0,
                NVML_FI_DEV_NVLINK_ERROR_DL_RECOVERY => 1,
                _ => 2,
            };
            link_field(&|l| {
                if g.link_up(l) {
                    link_errors(g, counter, t).unwrap_or(0)
                } else {
                    0
                }
            })?
        }
        NVML_FI_DEV_NVLINK_GET_STATE
        | NVML_FI_DEV_NVLINK_GET_SPEED
        | NVML_FI_DEV_NVLINK_GET_VERSION => {
            check_link(g, scope)?;
            Value::U32(match id {
                NVML_FI_DEV_NVLINK_GET_STATE => u32::from(g.link_up(scope)),
                NVML_FI_DEV_NVLINK_GET_SPEED => g.spec.nvlink_speed_mbps,
                _ => g.spec.nvlink_version,
            })
        }
        NVML_FI_DEV_REMAPPED_COR
        | NVML_FI_DEV_REMAPPED_UNC
        | NVML_FI_DEV_REMAPPED_PENDING
        | NVML_FI_DEV_REMAPPED_FAILURE => {
            if !g.spec.row_remapping {
                return Err(NOT_SUPPORTED);
            }
            Value::U32(match id {
                NVML_FI_DEV_REMAPPED_COR => count(&c.remap_cor, t) as u32,
                NVML_FI_DEV_REMAPPED_UNC => count(&c.remap_unc, t) as u32,
                NVML_FI_DEV_REMAPPED_PENDING => u32::from(c.remap_pending.at(t) >= 0.5),
                _ => u32::from(c.remap_failure.at(t) >= 0.5),
            })
        }
        other => match legacy_link_field(other) {
            Some((counter, link)) => {
                if links == 0 {
                    return Err(NOT_SUPPORTED);
                }
                let one = |l: u32| {
                    if g.link_up(l) {
                        link_errors(g, counter, t).unwrap_or(0)
                    } else {
                        0
                    }
                };
                match link {
                    None => Value::U64((0..links).map(one).sum()),
                    Some(l) if l < links => Value::U64(one(l)),
                    Some(_) => return Err(NOT_SUPPORTED),
                }
            }
            None => return Err(NOT_SUPPORTED),
        },
    })
}

/// Fills each requested field in place; a field this GPU lacks gets its own
/// `nvmlReturn` (NOT_SUPPORTED) while the call itself succeeds.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetFieldValues(
    device: nvmlDevice_t,
    valuesCount: c_int,
    values: *mut nvmlFieldValue_t,
) -> nvmlReturn_t {
    let n = usize::try_from(valuesCount).ok();
    let fields = match n {
        // SAFETY: C contract: `values` holds `valuesCount` initialised entries.
        Some(n) if !values.is_null() => Some(unsafe { std::slice::from_raw_parts_mut(values, n) }),
        _ => None,
    };
    device_call("nvmlDeviceGetFieldValues", device, |sim, g, t| {
        let fields = fields.ok_or(INVALID)?;
        crate::cost::charge_fields(&fields.iter().map(|f| f.fieldId).collect::<Vec<_>>());
        let now = sim.wall_us() as i64;
        for f in fields {
            f.timestamp = now;
            f.latencyUsec = 0;
            let v = match crate::blackwell::field(
                g,
                &sim.scenario.driver_version,
                f.fieldId,
                f.scopeId,
                t,
            ) {
                Some(r) => r.map(Value::U64),
                None => field_value(g, f.fieldId, f.scopeId, t),
            };
            match v {
                Ok(Value::U32(v)) => {
                    f.valueType = nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_INT;
                    f.value.uiVal = v;
                    f.nvmlReturn = SUCCESS;
                }
                Ok(Value::U64(v)) => {
                    f.valueType = nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_LONG_LONG;
                    f.value.ullVal = v;
                    f.nvmlReturn = SUCCESS;
                }
                Err(code) => f.nvmlReturn = code,
            }
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------
// Events

value_getter!(nvmlDeviceGetSupportedEventTypes, c_ulonglong, |_g, _t| Ok(
    SUPPORTED_EVENTS
));

#[no_mangle]
pub unsafe extern "C" fn nvmlEventSetCreate(set: *mut nvmlEventSet_t) -> nvmlReturn_t {
    // SAFETY: C contract: the out-pointer is writable.
    let o = unsafe { out(set) };
    system_call("nvmlEventSetCreate", |_, _| {
        let o = o.ok_or(INVALID)?;
        let addr = sim::new_event_set();
        o.write(addr as *mut nvmlEventSet_st);
        Ok(())
    })
}

/// Registers event types for a GPU; only events scheduled at or after the
/// registration time are delivered (as with the real driver).
#[no_mangle]
pub extern "C" fn nvmlDeviceRegisterEvents(
    device: nvmlDevice_t,
    eventTypes: c_ulonglong,
    set: nvmlEventSet_t,
) -> nvmlReturn_t {
    device_call("nvmlDeviceRegisterEvents", device, |_, g, t| {
        if eventTypes & !SUPPORTED_EVENTS != 0 {
            return Err(NOT_SUPPORTED);
        }
        let mut sets = lock(&EVENT_SETS);
        let es = sets.get_mut(&(set as usize)).ok_or(INVALID)?;
        match es.registrations.iter_mut().find(|r| r.gpu == g.index) {
            Some(r) => r.mask |= eventTypes,
            None => es.registrations.push(Registration {
                gpu: g.index,
                mask: eventTypes,
                since: t,
            }),
        }
        Ok(())
    })
}

/// Delivers the earliest due XID event not yet delivered to this set, or
/// waits for one until the timeout (ms) and returns TIMEOUT.
#[no_mangle]
pub unsafe extern "C" fn nvmlEventSetWait_v2(
    set: nvmlEventSet_t,
    data: *mut nvmlEventData_t,
    timeoutms: c_uint,
) -> nvmlReturn_t {
    // SAFETY: C contract: the out-pointer is writable.
    let o = unsafe { out(data) };
    guard(|| {
        let o = o.ok_or(INVALID)?;
        let deadline = Instant::now() + Duration::from_millis(timeoutms.into());
        loop {
            let sim = sim::current()?;
            sim.enter("nvmlEventSetWait_v2", None)?;
            let t = sim.now();
            let mut next: Option<f64> = None;
            {
                let mut sets = lock(&EVENT_SETS);
                let es = sets.get_mut(&(set as usize)).ok_or(INVALID)?;
                let mut due: Option<(f64, usize, usize, u64)> = None;
                for r in es.registrations.iter().filter(|r| r.mask & XID_EVENT != 0) {
                    let Some(g) = sim.scenario.gpus.get(r.gpu) else {
                        continue;
                    };
                    for (i, &(at, xid)) in g.faults.xids.iter().enumerate() {
                        if at < r.since || es.delivered.contains(&(r.gpu, i)) {
                            continue;
                        }
                        if at <= t {
                            if due.map_or(true, |d| at < d.0) {
                                due = Some((at, r.gpu, i, xid));
                            }
                        } else {
                            next = Some(next.map_or(at, |n| n.min(at)));
                        }
                    }
                }
                if let Some((_, gpu, i, xid)) = due {
                    es.delivered.insert((gpu, i));
                    o.write(nvmlEventData_t {
                        device: sim::handle(gpu),
                        eventType: XID_EVENT,
                        eventData: xid,
                        gpuInstanceId: NO_INSTANCE,
                        computeInstanceId: NO_INSTANCE,
                    });
                    return Ok(());
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(nvmlReturn_enum_NVML_ERROR_TIMEOUT);
            }
            // Asleep until the timeout or the next scheduled event, as the
            // driver blocks, looking again at least every second (an
            // nvmlShutdown meanwhile): polling every 100 ms cost the agent's
            // event thread more CPU than the driver's blocking wait would.
            let mut wait = (deadline - now).min(Duration::from_secs(1));
            if let Some(n) = next {
                wait = wait.min(seconds(n - t + 0.000_5));
            }
            std::thread::sleep(wait);
        }
    })
}

#[no_mangle]
pub extern "C" fn nvmlEventSetFree(set: nvmlEventSet_t) -> nvmlReturn_t {
    system_call("nvmlEventSetFree", |_, _| {
        lock(&EVENT_SETS)
            .remove(&(set as usize))
            .map(drop)
            .ok_or(INVALID)
    })
}

// ---------------------------------------------------------------------------
// GPM (Hopper and newer)

#[no_mangle]
pub unsafe extern "C" fn nvmlGpmQueryDeviceSupport(
    device: nvmlDevice_t,
    gpmSupport: *mut nvmlGpmSupport_t,
) -> nvmlReturn_t {
    // SAFETY: C contract: the struct is readable (version) and writable.
    let s = unsafe { inout(gpmSupport) };
    device_call("nvmlGpmQueryDeviceSupport", device, |_, g, _| {
        let s = s.ok_or(INVALID)?;
        if s.version != NVML_GPM_SUPPORT_VERSION {
            return Err(VERSION_MISMATCH);
        }
        s.isSupportedDevice = c_uint::from(g.spec.gpm);
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlGpmSampleAlloc(gpmSample: *mut nvmlGpmSample_t) -> nvmlReturn_t {
    // SAFETY: C contract: the out-pointer is writable.
    let o = unsafe { out(gpmSample) };
    system_call("nvmlGpmSampleAlloc", |_, _| {
        let o = o.ok_or(INVALID)?;
        o.write(sim::new_gpm_sample() as *mut nvmlGpmSample_st);
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn nvmlGpmSampleFree(gpmSample: nvmlGpmSample_t) -> nvmlReturn_t {
    system_call("nvmlGpmSampleFree", |_, _| {
        lock(&GPM_SAMPLES)
            .remove(&(gpmSample as usize))
            .map(drop)
            .ok_or(INVALID)
    })
}

#[no_mangle]
pub extern "C" fn nvmlGpmSampleGet(
    device: nvmlDevice_t,
    gpmSample: nvmlGpmSample_t,
) -> nvmlReturn_t {
    device_call("nvmlGpmSampleGet", device, |_, g, t| {
        if !g.spec.gpm {
            return Err(NOT_SUPPORTED);
        }
        let mut samples = lock(&GPM_SAMPLES);
        let s = samples.get_mut(&(gpmSample as usize)).ok_or(INVALID)?;
        s.taken = Some((g.index, None, t));
        Ok(())
    })
}

/// A sample of one GPU instance of a MIG-enabled parent (the parent's
/// handle, not a MIG device's): NOT_SUPPORTED without GPM or with MIG
/// disabled, INVALID_ARGUMENT for a GPU instance id that does not exist.
#[no_mangle]
pub extern "C" fn nvmlGpmMigSampleGet(
    device: nvmlDevice_t,
    gpuInstanceId: c_uint,
    gpmSample: nvmlGpmSample_t,
) -> nvmlReturn_t {
    device_call("nvmlGpmMigSampleGet", device, |_, g, t| {
        if !g.spec.gpm || !g.mig_enabled() {
            return Err(NOT_SUPPORTED);
        }
        g.mig_by_instance(gpuInstanceId).ok_or(INVALID)?;
        let mut samples = lock(&GPM_SAMPLES);
        let s = samples.get_mut(&(gpmSample as usize)).ok_or(INVALID)?;
        s.taken = Some((g.index, Some(gpuInstanceId), t));
        Ok(())
    })
}

type MetricInfo = (&'static CStr, &'static CStr, &'static CStr);

fn metric_info(id: u32) -> MetricInfo {
    match id {
        1 => (c"GR_UTIL", c"Graphics engine utilization", c"%"),
        2 => (c"SM_UTIL", c"SM utilization", c"%"),
        3 => (c"SM_OCCUPANCY", c"SM occupancy", c"%"),
        4 => (c"INTEGER_UTIL", c"Integer pipe utilization", c"%"),
        5 => (c"ANY_TENSOR_UTIL", c"Any tensor pipe utilization", c"%"),
        6 => (c"DFMA_TENSOR_UTIL", c"DFMA tensor pipe utilization", c"%"),
        7 => (c"HMMA_TENSOR_UTIL", c"HMMA tensor pipe utilization", c"%"),
        9 => (c"IMMA_TENSOR_UTIL", c"IMMA tensor pipe utilization", c"%"),
        10 => (c"DRAM_BW_UTIL", c"DRAM bandwidth utilization", c"%"),
        11 => (c"FP64_UTIL", c"FP64 pipe utilization", c"%"),
        12 => (c"FP32_UTIL", c"FP32 pipe utilization", c"%"),
        13 => (c"FP16_UTIL", c"FP16 pipe utilization", c"%"),
        20 => (c"PCIE_TX", c"PCIe traffic from this GPU", c"MiB/sec"),
        21 => (c"PCIE_RX", c"PCIe traffic to this GPU", c"MiB/sec"),
        30..=51 => (c"MEDIA_UTIL", c"Media engine utilization", c"%"),
        60 => (
            c"NVLINK_RX",
            c"NVLink read bandwidth for all links",
            c"MiB/sec",
        ),
        61 => (
            c"NVLINK_TX",
            c"NVLink write bandwidth for all links",
            c"MiB/sec",
        ),
        x if x % 2 == 0 => (
            c"NVLINK_L_RX",
            c"NVLink read bandwidth for one link",
            c"MiB/sec",
        ),
        _ => (
            c"NVLINK_L_TX",
            c"NVLink write bandwidth for one link",
            c"MiB/sec",
        ),
    }
}

/// A GPM metric averaged over `[a, b]` (percent or MiB/s), or None when the
/// GPU does not have it.
fn gpm_metric(g: &Gpu, id: u32, a: f64, b: f64) -> Option<f64> {
    let c = &g.curves;
    let pct_mean = |curve: &crate::curve::Curve| curve.mean(a, b).clamp(0.0, 100.0);
    let mib = |curve: &crate::curve::Curve| curve.mean(a, b).max(0.0) / 1024.0;
    let up = (0..g.spec.nvlink_links).filter(|l| g.link_up(*l)).count() as f64;
    Some(match id {
        1 => pct_mean(&c.util),
        2 => pct_mean(&c.sm_active),
        3 => pct_mean(&c.sm_occupancy),
        4 => pct_mean(&c.util) * 0.05,
        5 | 7 => pct_mean(&c.tensor_active),
        6 | 9 => 0.0,
        10 => pct_mean(&c.dram_active),
        11 => pct_mean(&c.fp64_active),
        12 => pct_mean(&c.fp32_active),
        13 => pct_mean(&c.fp16_active),
        20 => mib(&c.pcie_tx_kbps),
        21 => mib(&c.pcie_rx_kbps),
        30..=37 | 40..=47 | 50 | 51 => 0.0,
        60 => mib(&c.nvlink_rx_kibps) * up,
        61 => mib(&c.nvlink_tx_kibps) * up,
        62..=97 => {
            let link = (id - 62) / 2;
            if link >= g.spec.nvlink_links {
                return None;
            }
            if !g.link_up(link) {
                0.0
            } else if id % 2 == 0 {
                mib(&c.nvlink_rx_kibps)
            } else {
                mib(&c.nvlink_tx_kibps)
            }
        }
        _ => return None,
    })
}

/// Computes metrics between two samples of one GPU (sample1 older). The
/// request's `version` must be NVML_GPM_METRICS_GET_VERSION; drivers before
/// 570 accept at most 98 metrics per request.
#[no_mangle]
pub unsafe extern "C" fn nvmlGpmMetricsGet(metricsGet: *mut nvmlGpmMetricsGet_t) -> nvmlReturn_t {
    // SAFETY: C contract: the request is readable and writable.
    let req = unsafe { inout(metricsGet) };
    system_call("nvmlGpmMetricsGet", |sim, _| {
        let req = req.ok_or(INVALID)?;
        if req.version != NVML_GPM_METRICS_GET_VERSION {
            return Err(VERSION_MISMATCH);
        }
        let major: u32 = sim
            .scenario
            .driver_version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        let max = if major >= 570 { req.metrics.len() } else { 98 };
        let n = req.numMetrics as usize;
        if n > max {
            return Err(INVALID);
        }
        let (s1, s2) = {
            let samples = lock(&GPM_SAMPLES);
            let taken = |h: nvmlGpmSample_t| samples.get(&(h as usize)).and_then(|s| s.taken);
            (taken(req.sample1), taken(req.sample2))
        };
        let ((g1, gi1, t1), (g2, gi2, t2)) = (s1.ok_or(INVALID)?, s2.ok_or(INVALID)?);
        if g1 != g2 || gi1 != gi2 || t2 < t1 {
            return Err(INVALID);
        }
        let g = &sim.scenario.gpus[g1];
        let instance = match gi1 {
            Some(id) => Some(g.mig_by_instance(id).ok_or(INVALID)?),
            None => None,
        };
        for m in &mut req.metrics[..n] {
            let value = match instance {
                Some(mig) => mig.gpm_metric(m.metricId, t1, t2),
                None => gpm_metric(g, m.metricId, t1, t2),
            };
            match value {
                Some(v) => {
                    let (short, long, unit) = metric_info(m.metricId);
                    m.nvmlReturn = SUCCESS;
                    m.value = v;
                    m.metricInfo.shortName = short.as_ptr().cast_mut();
                    m.metricInfo.longName = long.as_ptr().cast_mut();
                    m.metricInfo.unit = unit.as_ptr().cast_mut();
                }
                None => m.nvmlReturn = NOT_SUPPORTED,
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exported_list_matches_the_source() {
        let src = include_str!("ffi.rs");
        // The identifier that follows each marker (functions and getter macros).
        let markers = [
            "extern \"C\" fn ",
            "string_getter!(",
            "value_getter!(",
            "codec_getter!(",
            "process_getter!(",
        ];
        let mut defined: Vec<String> = Vec::new();
        for marker in markers {
            for (at, _) in src.match_indices(marker) {
                let name: String = src[at + marker.len()..]
                    .trim_start()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if name.starts_with("nvml") {
                    defined.push(name);
                }
            }
        }
        defined.sort();
        let mut listed: Vec<String> = EXPORTED.iter().map(|s| s.to_string()).collect();
        listed.sort();
        assert_eq!(defined, listed);
    }

    #[test]
    fn memory_v2_version_is_what_nvml_wrapper_sends() {
        assert_eq!(MEMORY_V2_VERSION, 40 | (2 << 24));
    }

    #[test]
    fn legacy_link_fields_map_to_links() {
        assert_eq!(
            legacy_link_field(NVML_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_L0),
            Some((2, Some(0)))
        );
        assert_eq!(
            legacy_link_field(NVML_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL),
            Some((2, None))
        );
        assert_eq!(
            legacy_link_field(NVML_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_L11),
            Some((1, Some(11)))
        );
        assert_eq!(
            legacy_link_field(NVML_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_L5),
            Some((0, Some(5)))
        );
        assert_eq!(legacy_link_field(NVML_FI_DEV_MEMORY_TEMP), None);
    }
}
