//! The few NVML calls nvml-wrapper does not wrap (or wraps without the
//! argument we need), made through nvml-wrapper-sys on a second handle of
//! the same library: field values with a scope id (NVLink throughput per
//! link; `Device::field_values_for` always sends scope 0) and remapped rows.

use std::ffi::OsStr;

use nvml_wrapper::Device;
use nvml_wrapper_sys::bindings::{
    nvmlFieldValue_t, nvmlProcessUtilizationSample_t, nvmlReturn_enum_NVML_SUCCESS,
    nvmlValueType_enum_NVML_VALUE_TYPE_DOUBLE, nvmlValueType_enum_NVML_VALUE_TYPE_SIGNED_INT,
    nvmlValueType_enum_NVML_VALUE_TYPE_SIGNED_LONG_LONG,
    nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_INT,
    nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_LONG,
    nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_LONG_LONG,
    nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_SHORT, NvmlLib,
};

/// NVLink data transmitted, KiB, per link (scope id = link).
pub const FI_NVLINK_THROUGHPUT_DATA_TX: u32 = 138;
/// NVLink data received, KiB, per link.
pub const FI_NVLINK_THROUGHPUT_DATA_RX: u32 = 139;
/// Memory (HBM) temperature, degrees Celsius.
pub const FI_MEMORY_TEMP: u32 = 82;
/// NVML_FI_DEV_PERF_POLICY_POWER, _THERMAL, _SYNC_BOOST and _RELIABILITY:
/// violation time in ns, as nvmlDeviceGetViolationStatus gives it.
pub const FI_PERF_POLICY_POWER: u32 = 74;
/// See [`FI_PERF_POLICY_POWER`].
pub const FI_PERF_POLICY_THERMAL: u32 = 75;
/// See [`FI_PERF_POLICY_POWER`].
pub const FI_PERF_POLICY_SYNC_BOOST: u32 = 76;
/// See [`FI_PERF_POLICY_POWER`].
pub const FI_PERF_POLICY_RELIABILITY: u32 = 79;
/// NVML_FI_DEV_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN, _HW_THERM_SLOWDOWN
/// and _HW_POWER_BRAKE_SLOWDOWN (ns), in NVML 12's numbering; see
/// [`field_id`] for drivers from 580.82 on.
pub const FI_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN: u32 = 251;
/// See [`FI_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN`].
pub const FI_CLOCKS_EVENT_REASON_HW_THERM_SLOWDOWN: u32 = 252;
/// See [`FI_CLOCKS_EVENT_REASON_SW_THERM_SLOWDOWN`].
pub const FI_CLOCKS_EVENT_REASON_HW_POWER_BRAKE_SLOWDOWN: u32 = 253;
/// NVLink5 counters (Blackwell), scope id = link:
/// NVML_FI_DEV_NVLINK_COUNT_LINK_RECOVERY_SUCCESSFUL_EVENTS.
pub const FI_NVLINK_COUNT_RECOVERY_SUCCESSFUL: u32 = 213;
/// NVML_FI_DEV_NVLINK_COUNT_LINK_RECOVERY_FAILED_EVENTS.
pub const FI_NVLINK_COUNT_RECOVERY_FAILED: u32 = 214;
/// NVML_FI_DEV_NVLINK_COUNT_EFFECTIVE_ERRORS: errors left after FEC.
pub const FI_NVLINK_COUNT_EFFECTIVE_ERRORS: u32 = 219;
/// NVML_FI_DEV_NVLINK_COUNT_SYMBOL_ERRORS: symbol errors FEC corrected.
pub const FI_NVLINK_COUNT_SYMBOL_ERRORS: u32 = 221;

/// A field id in NVML 12's numbering as the loaded driver numbers it:
/// CUDA 13.0 Update 1 (driver 580.82) moved 251-255 to 269-273 and
/// 256-273 to 251-268 (`v13`: `Nvml::field_id_scheme()` says so).
pub fn field_id(id: u32, v13: bool) -> u32 {
    match id {
        251..=255 if v13 => id + 18,
        256..=273 if v13 => id - 5,
        _ => id,
    }
}

/// NVML_FI_DEV_PCIE_COUNT_TX_BYTES and _RX_BYTES: PCIe byte counters.
pub const FI_PCIE_COUNT_TX_BYTES: u32 = 197;
/// See [`FI_PCIE_COUNT_TX_BYTES`].
pub const FI_PCIE_COUNT_RX_BYTES: u32 = 198;

/// NVML_FI_DEV_GET_GPU_RECOVERY_ACTION (driver 565+): the driver's
/// recommended recovery, 0 none, 1 GPU reset, 2 node reboot, 3 drain P2P,
/// 4 drain and reset (`nvmlDeviceGpuRecoveryAction_t`).
pub const FI_GPU_RECOVERY_ACTION: u32 = 230;

/// A second handle on the NVML library, for raw calls.
#[derive(Clone, Copy)]
pub struct Raw {
    lib: &'static NvmlLib,
}

/// Remapped rows of one GPU (Ampere and newer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemappedRows {
    /// Rows remapped for correctable errors.
    pub correctable: u32,
    /// Rows remapped for uncorrectable errors.
    pub uncorrectable: u32,
    /// A remap waits for the next GPU reset.
    pub pending: bool,
    /// A remap failed: the GPU needs service.
    pub failure: bool,
}

impl Raw {
    /// Opens `path` again (the dynamic loader shares the mapping).
    pub fn open(path: &OsStr) -> Option<Raw> {
        // SAFETY: loading NVML runs its initialisers, which is what loading
        // it through nvml-wrapper already did; the handle is leaked so the
        // function pointers stay valid for the life of the process.
        let lib = unsafe { NvmlLib::new(path) }.ok()?;
        Some(Raw {
            lib: Box::leak(Box::new(lib)),
        })
    }

    /// Reads field values, each `(field id, scope id)`; `Err` carries the
    /// NVML return code, for the whole call or for one field.
    pub fn field_values(
        &self,
        dev: &Device<'_>,
        fields: &[(u32, u32)],
    ) -> Result<Vec<Result<f64, u32>>, u32> {
        let f = self
            .lib
            .nvmlDeviceGetFieldValues
            .as_ref()
            .map_err(|_| NOT_FOUND)?;
        // SAFETY: nvmlFieldValue_t is plain data; all-zero is a valid value.
        let mut values: Vec<nvmlFieldValue_t> = fields
            .iter()
            .map(|&(id, scope)| {
                let mut v: nvmlFieldValue_t = unsafe { std::mem::zeroed() };
                v.fieldId = id;
                v.scopeId = scope;
                v
            })
            .collect();
        // SAFETY: the device handle comes from the same library and is valid
        // while `dev` is; `values` has exactly `len` initialised elements.
        let ret = unsafe { f(dev.handle(), values.len() as i32, values.as_mut_ptr()) };
        if ret != nvmlReturn_enum_NVML_SUCCESS {
            return Err(ret);
        }
        Ok(values.iter().map(value_of).collect())
    }

    /// Reads remapped rows.
    pub fn remapped_rows(&self, dev: &Device<'_>) -> Result<RemappedRows, u32> {
        let f = self
            .lib
            .nvmlDeviceGetRemappedRows
            .as_ref()
            .map_err(|_| NOT_FOUND)?;
        let (mut c, mut u, mut p, mut fail) = (0, 0, 0, 0);
        // SAFETY: valid device handle (see above) and four valid out-pointers.
        let ret = unsafe { f(dev.handle(), &mut c, &mut u, &mut p, &mut fail) };
        if ret != nvmlReturn_enum_NVML_SUCCESS {
            return Err(ret);
        }
        Ok(RemappedRows {
            correctable: c,
            uncorrectable: u,
            pending: p != 0,
            failure: fail != 0,
        })
    }
}

impl Raw {
    /// The GPU's NVSwitch fabric registration (`nvmlDeviceGetGpuFabricInfo`):
    /// its state (1 not started, 2 in progress, 3 completed) and status (an
    /// NVML return code).
    pub fn fabric_info(&self, dev: &Device<'_>) -> Result<(u32, u32), u32> {
        let f = self
            .lib
            .nvmlDeviceGetGpuFabricInfo
            .as_ref()
            .map_err(|_| NOT_FOUND)?;
        // SAFETY: all-zero bytes are a valid nvmlGpuFabricInfo_t (integers
        // and a byte array); the device handle is valid (see above) and the
        // out-pointer is valid and exclusive for the call.
        let mut info: nvml_wrapper_sys::bindings::nvmlGpuFabricInfo_t =
            unsafe { std::mem::zeroed() };
        let ret = unsafe { f(dev.handle(), &mut info) };
        if ret != nvmlReturn_enum_NVML_SUCCESS {
            return Err(ret);
        }
        Ok((info.state as u32, info.status as u32))
    }
}

/// One process's utilisation sample: (pid, timestamp in µs, SM %).
pub type ProcessSample = (u32, u64, u32);

impl Raw {
    /// Per-process utilisation samples newer than `since` (µs), in one call
    /// with a buffer of `room` samples (nvml-wrapper asks for the count
    /// first: two calls of about 1.4 ms each on an H200); again with the
    /// size the driver asks for if `room` was too small. No sample
    /// (NVML_ERROR_NOT_FOUND) is an empty list.
    pub fn process_utilization(
        &self,
        dev: &Device<'_>,
        since: u64,
        room: usize,
    ) -> Result<Vec<ProcessSample>, u32> {
        let f = self
            .lib
            .nvmlDeviceGetProcessUtilization
            .as_ref()
            .map_err(|_| NOT_FOUND)?;
        let mut room = room.clamp(1, 1024);
        for _ in 0..2 {
            // SAFETY: nvmlProcessUtilizationSample_t is plain data.
            let mut buf: Vec<nvmlProcessUtilizationSample_t> =
                vec![unsafe { std::mem::zeroed() }; room];
            let mut count = room as u32;
            // SAFETY: valid device handle (see field_values); `buf` holds
            // `count` elements, and NVML writes at most `count`.
            let ret = unsafe { f(dev.handle(), buf.as_mut_ptr(), &mut count, since) };
            match ret {
                r if r == nvmlReturn_enum_NVML_SUCCESS => {
                    buf.truncate((count as usize).min(room));
                    return Ok(buf.iter().map(|s| (s.pid, s.timeStamp, s.smUtil)).collect());
                }
                NOT_FOUND_SAMPLES => return Ok(Vec::new()),
                INSUFFICIENT_SIZE if (count as usize) > room => room = (count as usize).min(1024),
                r => return Err(r),
            }
        }
        Err(INSUFFICIENT_SIZE)
    }
}

/// NVML_ERROR_NOT_FOUND (no sample newer than the timestamp).
const NOT_FOUND_SAMPLES: u32 = 6;
/// NVML_ERROR_INSUFFICIENT_SIZE.
const INSUFFICIENT_SIZE: u32 = 7;

/// The type of nvmlDeviceGetGpuInstanceId and nvmlDeviceGetComputeInstanceId.
type InstanceIdFn = unsafe extern "C" fn(nvml_wrapper_sys::bindings::nvmlDevice_t, *mut u32) -> u32;

impl Raw {
    /// The GPU instance id of a MIG device handle.
    pub fn gpu_instance_id(&self, dev: &Device<'_>) -> Result<u32, u32> {
        instance_id(self.lib.nvmlDeviceGetGpuInstanceId.as_ref().ok(), dev)
    }

    /// The compute instance id of a MIG device handle.
    pub fn compute_instance_id(&self, dev: &Device<'_>) -> Result<u32, u32> {
        instance_id(self.lib.nvmlDeviceGetComputeInstanceId.as_ref().ok(), dev)
    }
}

fn instance_id(f: Option<&InstanceIdFn>, dev: &Device<'_>) -> Result<u32, u32> {
    let f = f.ok_or(NOT_FOUND)?;
    let mut id = 0;
    // SAFETY: valid device handle (see above) and a valid out-pointer.
    match unsafe { f(dev.handle(), &mut id) } {
        r if r == nvmlReturn_enum_NVML_SUCCESS => Ok(id),
        r => Err(r),
    }
}

/// NVML_ERROR_FUNCTION_NOT_FOUND, for a symbol the library lacks.
pub const NOT_FOUND: u32 = 13;
/// NVML_ERROR_NOT_SUPPORTED.
pub const NOT_SUPPORTED: u32 = 3;
/// NVML_ERROR_GPU_IS_LOST.
pub const GPU_IS_LOST: u32 = 15;

fn value_of(v: &nvmlFieldValue_t) -> Result<f64, u32> {
    if v.nvmlReturn != nvmlReturn_enum_NVML_SUCCESS {
        return Err(v.nvmlReturn);
    }
    // SAFETY: the union member read is the one valueType names.
    let x = unsafe {
        match v.valueType {
            t if t == nvmlValueType_enum_NVML_VALUE_TYPE_DOUBLE => v.value.dVal,
            t if t == nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_INT => f64::from(v.value.uiVal),
            t if t == nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_LONG => v.value.ulVal as f64,
            t if t == nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_LONG_LONG => {
                v.value.ullVal as f64
            }
            t if t == nvmlValueType_enum_NVML_VALUE_TYPE_SIGNED_LONG_LONG => v.value.sllVal as f64,
            t if t == nvmlValueType_enum_NVML_VALUE_TYPE_SIGNED_INT => f64::from(v.value.siVal),
            t if t == nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_SHORT => f64::from(v.value.usVal),
            _ => return Err(NOT_SUPPORTED),
        }
    };
    Ok(x)
}
