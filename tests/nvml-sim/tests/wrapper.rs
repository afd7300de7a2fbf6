//! Loads the built libnvml_sim.so through nvml-wrapper 0.13, exactly as the
//! agent does, and checks what every call the GPU collector makes returns.
//!
//! NVML_SIM_SCENARIO is process-global: each test sets it before its
//! `Nvml` init. Under nextest every test is its own process; under
//! `cargo test` a lock serialises the tests, and each uses a scenario path
//! of its own (the library restarts the scenario clock when the path
//! changes).

#![allow(non_upper_case_globals)]

use std::ffi::{CStr, OsStr};
use std::mem;
use std::os::raw::{c_char, c_uint};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nvml_wrapper::bitmasks::device::ThrottleReasons;
use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enum_wrappers::device::{
    Clock, EccCounter, MemoryError, PcieUtilCounter, PerformancePolicy, PerformanceState,
    RetirementCause, TemperatureSensor,
};
use nvml_wrapper::enums::device::{DeviceArchitecture, UsedGpuMemory};
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::enums::gpm::GpmMetricId;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::gpm::gpm_metrics_get;
use nvml_wrapper::struct_wrappers::device::FieldValueSample;
use nvml_wrapper::structs::device::FieldId;
use nvml_wrapper::sys_exports::field_id::*;
use nvml_wrapper::{Device, Nvml};
use nvml_wrapper_sys::bindings::*;

static SERIAL: Mutex<()> = Mutex::new(());

const MIB: u64 = 1024 * 1024;

/// The cdylib cargo built for this package. Cargo builds the library, every
/// crate type, before the integration tests, but into target/<profile>/deps/
/// only: target/<profile>/libnvml_sim.so is refreshed by `cargo build` alone
/// and may be stale here.
fn lib_path() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps dir");
    let candidates = [
        Some(deps.join("libnvml_sim.so")),
        deps.parent().map(|p| p.join("libnvml_sim.so")),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("libnvml_sim.so not found next to {}", exe.display()))
}

/// Takes the test lock and points NVML_SIM_SCENARIO at `scenario`.
fn setup(scenario: &str) -> MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    std::env::set_var("NVML_SIM_SCENARIO", scenario);
    guard
}

fn init() -> Nvml {
    let path = lib_path();
    Nvml::builder()
        .lib_path(OsStr::new(path.as_os_str()))
        .init()
        .expect("nvmlInit through nvml-wrapper")
}

/// A scenario file of this test's own in the temp dir, removed on drop.
struct TempScenario(PathBuf);

impl TempScenario {
    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 temp path")
    }
}

impl Drop for TempScenario {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn temp_scenario(name: &str, text: &str) -> TempScenario {
    let path = std::env::temp_dir().join(format!("nvml-sim-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).expect("write scenario");
    TempScenario(path)
}

/// The scenario clock (seconds since the scenario started).
fn sim_time(nvml: &Nvml) -> f64 {
    // SAFETY: the symbol has this signature (see src/ffi.rs).
    unsafe {
        let lib = libloading::Library::new(lib_path()).unwrap();
        let f: libloading::Symbol<unsafe extern "C" fn(*mut f64) -> nvmlReturn_t> =
            lib.get(b"nvmlSimGetTime\0").unwrap();
        let mut t = 0.0;
        assert_eq!(f(&mut t), 0);
        let _ = nvml;
        t
    }
}

fn wait_until(nvml: &Nvml, t: f64) {
    let now = sim_time(nvml);
    if t > now {
        std::thread::sleep(Duration::from_secs_f64(t - now));
    }
}

/// Reads raw field values with explicit scope ids (what nvml-wrapper's
/// `field_values_for` cannot do): (nvmlReturn, value) per request.
fn field_values(nvml: &Nvml, dev: &Device, req: &[(u32, u32)]) -> Vec<(nvmlReturn_t, u64)> {
    let mut values: Vec<nvmlFieldValue_t> = req
        .iter()
        .map(|&(id, scope)| {
            // SAFETY: a plain C struct of integers and a numeric union.
            let mut f: nvmlFieldValue_t = unsafe { mem::zeroed() };
            f.fieldId = id;
            f.scopeId = scope;
            f
        })
        .collect();
    // SAFETY: a valid handle and an array of `len` initialised entries.
    let ret = unsafe {
        nvml.lib()
            .nvmlDeviceGetFieldValues(dev.handle(), values.len() as i32, values.as_mut_ptr())
    };
    assert_eq!(ret, 0, "nvmlDeviceGetFieldValues");
    values
        .iter()
        .map(|f| {
            // SAFETY: the union member named by valueType.
            let v = unsafe {
                match f.valueType {
                    nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_INT => u64::from(f.value.uiVal),
                    nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_LONG_LONG => f.value.ullVal,
                    _ => 0,
                }
            };
            (f.nvmlReturn, v)
        })
        .collect()
}

fn near(actual: f64, expected: f64, tolerance: f64) -> bool {
    (actual - expected).abs() <= tolerance * expected.abs().max(1.0)
}

#[test]
fn h100_training_node_answers_every_collector_call() {
    let _g = setup("8xh100-training");
    let nvml = init();

    assert_eq!(nvml.sys_driver_version().unwrap(), "550.54.15");
    assert_eq!(nvml.sys_nvml_version().unwrap(), "12.550.54.15");
    assert_eq!(nvml.sys_cuda_driver_version().unwrap(), 12040);
    let mut cuda = 0;
    // SAFETY: the pre-_v2 symbol, same signature; a writable int.
    let ret = unsafe { nvml.lib().nvmlSystemGetCudaDriverVersion(&mut cuda) };
    assert_eq!(ret, 0);
    assert_eq!(cuda, 12040);
    assert_eq!(nvml.device_count().unwrap(), 8);

    let mut uuids = Vec::new();
    for i in 0..8u32 {
        let d = nvml.device_by_index(i).unwrap();
        assert_eq!(d.index().unwrap(), i);
        assert_eq!(d.name().unwrap(), "NVIDIA H100 80GB HBM3");
        let uuid = d.uuid().unwrap();
        assert!(uuid.starts_with("GPU-") && uuid.len() == 40, "{uuid}");
        assert_eq!(
            nvml.device_by_uuid(uuid.as_str()).unwrap().index().unwrap(),
            i
        );
        uuids.push(uuid);
        let pci = d.pci_info().unwrap();
        assert_eq!(pci.bus_id.len(), 16, "{}", pci.bus_id);
        assert!(pci.bus_id.starts_with("00000000:") && pci.bus_id.ends_with(":00.0"));
        assert_eq!(pci.pci_device_id, 0x2330_10DE);
        assert_eq!(pci.pci_sub_system_id, Some(0x16C1_10DE));
        assert_eq!(
            nvml.device_by_pci_bus_id(pci.bus_id.as_str())
                .unwrap()
                .index()
                .unwrap(),
            i
        );
        let serial = d.serial().unwrap();
        assert_eq!(serial.len(), 13, "{serial}");
        assert_eq!(d.vbios_version().unwrap(), "96.00.99.00.01");
        assert_eq!(d.architecture().unwrap(), DeviceArchitecture::Hopper);
        let cc = d.cuda_compute_capability().unwrap();
        assert_eq!((cc.major, cc.minor), (9, 0));
        let mig = d.mig_mode().unwrap();
        assert_eq!((mig.current, mig.pending), (0, 0));
    }
    uuids.sort();
    uuids.dedup();
    assert_eq!(uuids.len(), 8, "UUIDs are unique");

    let d = nvml.device_by_index(2).unwrap();

    // Memory: v2, reserved separate from used.
    let m = d.memory_info().unwrap();
    assert_eq!(m.version, 40 | (2 << 24));
    assert_eq!(m.total, 81559 * MIB);
    assert_eq!(m.reserved, 545 * MIB);
    assert_eq!(m.used, 71680 * MIB);
    assert_eq!(m.free, m.total - m.reserved - m.used);
    let bar1 = d.bar1_memory_info().unwrap();
    assert_eq!(bar1.total, 131072 * MIB);
    assert_eq!(bar1.used + bar1.free, bar1.total);

    // Utilisation.
    let u = d.utilization_rates().unwrap();
    assert!((92..=98).contains(&u.gpu), "{u:?}");
    assert!((45..=65).contains(&u.memory), "{u:?}");
    let enc = d.encoder_utilization().unwrap();
    assert_eq!(enc.utilization, 0);
    assert!(enc.sampling_period > 0);
    assert_eq!(d.decoder_utilization().unwrap().utilization, 0);

    // Power and energy: the energy counter integrates the power readings.
    assert_eq!(d.enforced_power_limit().unwrap(), 700_000);
    assert_eq!(d.power_management_limit_default().unwrap(), 700_000);
    let (e1, p1, t1) = (
        d.total_energy_consumption().unwrap(),
        d.power_usage().unwrap(),
        Instant::now(),
    );
    assert!((585_000..=695_000).contains(&p1), "{p1} mW");
    std::thread::sleep(Duration::from_millis(600));
    let (e2, p2, t2) = (
        d.total_energy_consumption().unwrap(),
        d.power_usage().unwrap(),
        Instant::now(),
    );
    let mean_w = (e2 - e1) as f64 / 1000.0 / (t2 - t1).as_secs_f64();
    let readings_w = f64::from(p1 + p2) / 2.0 / 1000.0;
    assert!(
        near(mean_w, readings_w, 0.03),
        "energy says {mean_w} W, readings {readings_w} W"
    );
    assert!(
        e1 > 1_000_000_000,
        "the counter starts at the scenario's offset"
    );

    // Thermal, fan (a passively cooled SXM board has none).
    let temp = d.temperature(TemperatureSensor::Gpu).unwrap();
    assert!((60..=68).contains(&temp), "{temp}");
    // No fans: the count is 0 and fan 0 an invalid argument, as on a real H100.
    assert_eq!(d.num_fans().unwrap(), 0);
    assert!(matches!(d.fan_speed(0), Err(NvmlError::InvalidArg)));

    // Clocks.
    let maxes = [
        (Clock::Graphics, 1980),
        (Clock::SM, 1980),
        (Clock::Memory, 2619),
        (Clock::Video, 1755),
    ];
    for (clock, max) in maxes {
        assert_eq!(d.max_clock_info(clock).unwrap(), max);
        let cur = d.clock_info(clock).unwrap();
        assert!(cur > 0 && cur <= max, "{clock:?} {cur} > {max}");
    }
    assert_eq!(d.performance_state().unwrap(), PerformanceState::Zero);

    // Clock event reasons and violation counters.
    let reasons = d.current_throttle_reasons().unwrap();
    assert!(!reasons.contains(ThrottleReasons::GPU_IDLE), "{reasons:?}");
    assert!(d
        .supported_throttle_reasons()
        .unwrap()
        .contains(ThrottleReasons::SW_POWER_CAP));
    let v1 = d.violation_status(PerformancePolicy::Power).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let v2 = d.violation_status(PerformancePolicy::Power).unwrap();
    assert!(v2.reference_time > v1.reference_time);
    assert!(v2.violation_time >= v1.violation_time);
    assert!(d.violation_status(PerformancePolicy::Thermal).is_ok());

    // PCIe.
    assert_eq!(d.current_pcie_link_gen().unwrap(), 5);
    assert_eq!(d.max_pcie_link_gen().unwrap(), 5);
    assert_eq!(d.current_pcie_link_width().unwrap(), 16);
    assert_eq!(d.max_pcie_link_width().unwrap(), 16);
    assert_eq!(d.pcie_throughput(PcieUtilCounter::Send).unwrap(), 350_000);
    assert_eq!(
        d.pcie_throughput(PcieUtilCounter::Receive).unwrap(),
        1_800_000
    );
    assert_eq!(d.pcie_replay_counter().unwrap(), 0);

    // Processes.
    let procs = d.running_compute_processes().unwrap();
    assert_eq!(procs.len(), 1);
    assert_eq!(procs[0].pid, 4102);
    assert_eq!(procs[0].used_gpu_memory, UsedGpuMemory::Used(71100 * MIB));
    assert_eq!(procs[0].gpu_instance_id, None);
    assert!(d.running_graphics_processes().unwrap().is_empty());
    let samples = d.process_utilization_stats(None).unwrap();
    assert_eq!(samples.len(), 1);
    assert_eq!(samples[0].pid, 4102);
    assert!(samples[0].sm_util >= 90);
    assert_eq!(nvml.sys_process_name(4102, 64).unwrap(), "python3");

    // Reliability.
    let ecc = d.is_ecc_enabled().unwrap();
    assert!(ecc.currently_enabled && ecc.pending_enabled);
    assert_eq!(
        d.total_ecc_errors(MemoryError::Corrected, EccCounter::Volatile)
            .unwrap(),
        0
    );
    assert_eq!(
        d.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Aggregate)
            .unwrap(),
        0
    );
    assert!(matches!(
        d.retired_pages(RetirementCause::DoubleBitEccError),
        Err(NvmlError::NotSupported)
    ));
    let (mut cor, mut unc, mut pending, mut failed) = (9, 9, 9, 9);
    // SAFETY: a valid handle and four writable c_uints.
    let ret = unsafe {
        nvml.lib().nvmlDeviceGetRemappedRows(
            d.handle(),
            &mut cor,
            &mut unc,
            &mut pending,
            &mut failed,
        )
    };
    assert_eq!((ret, cor, unc, pending, failed), (0, 0, 0, 0, 0));

    // NVLink: 18 links up; per-link counters through scope ids.
    for link in 0..18 {
        assert!(d.link_wrapper_for(link).is_active().unwrap());
    }
    assert!(matches!(
        d.link_wrapper_for(18).is_active(),
        Err(NvmlError::InvalidArg)
    ));
    let tx = NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX;
    let rx = NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX;
    let a = field_values(
        &nvml,
        &d,
        &[
            (tx, 0),
            (tx, 17),
            (tx, u32::MAX),
            (rx, 5),
            (NVML_FI_DEV_NVLINK_LINK_COUNT, 0),
        ],
    );
    let ta = sim_time(&nvml);
    assert!(a.iter().all(|(r, _)| *r == 0), "{a:?}");
    assert_eq!(a[2].1, a[0].1 * 18);
    assert_eq!(a[4].1, 18);
    let bad = field_values(&nvml, &d, &[(tx, 18), (0xFFFF, 0)]);
    assert_eq!(bad[0].0, nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT);
    assert_eq!(bad[1].0, nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED);
    std::thread::sleep(Duration::from_millis(500));
    let b = field_values(&nvml, &d, &[(tx, 0)]);
    let kib_per_s = (b[0].1 - a[0].1) as f64 / (sim_time(&nvml) - ta);
    assert!(near(kib_per_s, 7_800_000.0, 0.05), "{kib_per_s} KiB/s");
    // nvml-wrapper's own field path (scope 0).
    let samples: Vec<FieldValueSample> = d
        .field_values_for(&[
            FieldId(NVML_FI_DEV_MEMORY_TEMP),
            FieldId(NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION),
        ])
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert!(samples.iter().all(|s| s.value.is_ok()), "{samples:?}");

    // GPM: two samples a period apart.
    assert!(d.gpm_support().unwrap());
    let s1 = d.gpm_sample().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let s2 = d.gpm_sample().unwrap();
    let ids = [
        GpmMetricId::SmUtil,
        GpmMetricId::SmOccupancy,
        GpmMetricId::AnyTensorUtil,
        GpmMetricId::DramBwUtil,
        GpmMetricId::Fp16Util,
        GpmMetricId::Fp32Util,
        GpmMetricId::Fp64Util,
        GpmMetricId::PcieTxPerSec,
        GpmMetricId::PcieRxPerSec,
        GpmMetricId::NvlinkTotalTxPerSec,
        GpmMetricId::NvlinkTotalRxPerSec,
        GpmMetricId::NvlinkL3RxPerSec,
    ];
    let got: Vec<f64> = gpm_metrics_get(&nvml, &s1, &s2, &ids)
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap().value)
        .collect();
    let want = [
        88.0,
        42.0,
        61.0,
        47.0,
        38.0,
        9.0,
        0.0,
        350_000.0 / 1024.0,
        1_800_000.0 / 1024.0,
        18.0 * 7_800_000.0 / 1024.0,
        18.0 * 7_800_000.0 / 1024.0,
        7_800_000.0 / 1024.0,
    ];
    for ((id, g), w) in ids.iter().zip(&got).zip(want) {
        assert!(near(*g, w, 1e-6), "{id:?}: {g} != {w}");
    }
    // Backwards samples are refused.
    assert!(gpm_metrics_get(&nvml, &s2, &s1, &ids).is_err());
    drop((s1, s2));

    // Events: registration works and wait honours its timeout.
    assert!(d
        .supported_event_types()
        .unwrap()
        .contains(EventTypes::CRITICAL_XID_ERROR));
    let set = nvml.create_event_set().unwrap();
    let set = d
        .register_events(EventTypes::CRITICAL_XID_ERROR, set)
        .unwrap();
    let start = Instant::now();
    assert!(matches!(set.wait(150), Err(NvmlError::Timeout)));
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(140) && waited < Duration::from_millis(600),
        "{waited:?}"
    );
    set.release_events().unwrap();

    nvml.shutdown().unwrap();
}

#[test]
fn struct_versions_bad_handles_and_small_buffers_are_rejected() {
    let tmp = temp_scenario("versions", "[[gpus]]\nmodel = \"h100\"\n");
    let _g = setup(tmp.path());
    let nvml = init();
    let d = nvml.device_by_index(0).unwrap();
    let lib = nvml.lib();
    // SAFETY (whole block): valid handles or deliberately invalid ones that
    // the library must reject without dereferencing; writable locals.
    unsafe {
        let mut m: nvmlMemory_v2_t = mem::zeroed();
        m.version = 1 << 24; // a v1 version stamp
        assert_eq!(
            lib.nvmlDeviceGetMemoryInfo_v2(d.handle(), &mut m),
            nvmlReturn_enum_NVML_ERROR_ARGUMENT_VERSION_MISMATCH
        );
        let mut v1: nvmlMemory_t = mem::zeroed();
        assert_eq!(lib.nvmlDeviceGetMemoryInfo(d.handle(), &mut v1), 0);
        assert_eq!(v1.total, v1.used + v1.free, "v1 counts reserved as used");
        assert_eq!(v1.used, 545 * MIB);

        let mut support: nvmlGpmSupport_t = mem::zeroed();
        support.version = 7;
        assert_eq!(
            lib.nvmlGpmQueryDeviceSupport(d.handle(), &mut support),
            nvmlReturn_enum_NVML_ERROR_ARGUMENT_VERSION_MISMATCH
        );
        let mut req: Box<nvmlGpmMetricsGet_t> = Box::new(mem::zeroed());
        req.version = 2;
        assert_eq!(
            lib.nvmlGpmMetricsGet(&mut *req),
            nvmlReturn_enum_NVML_ERROR_ARGUMENT_VERSION_MISMATCH
        );

        let mut p = 0;
        assert_eq!(
            lib.nvmlDeviceGetPowerUsage(std::ptr::null_mut(), &mut p),
            nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT
        );
        assert_eq!(
            lib.nvmlDeviceGetPowerUsage(d.handle(), std::ptr::null_mut()),
            nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT
        );
        let mut small = [0 as c_char; 8];
        assert_eq!(
            lib.nvmlDeviceGetName(d.handle(), small.as_mut_ptr(), small.len() as c_uint),
            nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_SIZE
        );
        let mut count: c_uint = 0;
        assert_eq!(
            lib.nvmlDeviceGetComputeRunningProcesses_v3(
                d.handle(),
                &mut count,
                std::ptr::null_mut()
            ),
            0,
            "no processes: success with 0"
        );
        assert_eq!(count, 0);
        assert_eq!(
            lib.nvmlEventSetFree(0x10 as nvmlEventSet_t),
            nvmlReturn_enum_NVML_ERROR_INVALID_ARGUMENT
        );
    }

    drop(nvml);
    // After shutdown every call is UNINITIALIZED (nvml-wrapper's Drop called nvmlShutdown).
    // SAFETY: loading the library and calling a symbol with its signature.
    unsafe {
        let lib = libloading::Library::new(lib_path()).unwrap();
        let count: libloading::Symbol<unsafe extern "C" fn(*mut c_uint) -> nvmlReturn_t> =
            lib.get(b"nvmlDeviceGetCount_v2\0").unwrap();
        let mut n = 0;
        assert_eq!(count(&mut n), nvmlReturn_enum_NVML_ERROR_UNINITIALIZED);
    }
}

#[test]
fn lost_gpu_window_and_xid_events() {
    let scenario = r#"
[[gpus]]
count = 4
model = "h100"
utilization = 90

[[faults]]
gpu = 1
xid = [{ at = 0.6, xid = 48 }]

[[faults]]
gpu = 2
lost_at = 1.0
back_at = 2.0
"#;
    let tmp = temp_scenario("lost", scenario);
    let _g = setup(tmp.path());
    let nvml = init();
    let devices: Vec<Device> = (0..4).map(|i| nvml.device_by_index(i).unwrap()).collect();
    // SAFETY: handles are only compared.
    let handles: Vec<_> = devices.iter().map(|d| unsafe { d.handle() }).collect();
    let mut set = nvml.create_event_set().unwrap();
    for d in &devices {
        set = d
            .register_events(EventTypes::CRITICAL_XID_ERROR, set)
            .unwrap();
    }
    assert!(devices[2].power_usage().is_ok());

    let e = set.wait(5000).unwrap();
    assert!(e.event_type.contains(EventTypes::CRITICAL_XID_ERROR));
    assert_eq!(e.event_data, Some(XidError::Value(48)));
    // SAFETY: compared only.
    assert_eq!(unsafe { e.device.handle() }, handles[1]);

    // Falling off the bus raises XID 79.
    let e = set.wait(5000).unwrap();
    assert_eq!(e.event_data, Some(XidError::Value(79)));
    // SAFETY: compared only.
    assert_eq!(unsafe { e.device.handle() }, handles[2]);
    let t = sim_time(&nvml);
    assert!((1.0..1.5).contains(&t), "XID 79 delivered at {t}");

    // In the window: every call on GPU 2 (and its handle lookup) is lost;
    // the other GPUs and the device count are unaffected.
    assert!(matches!(devices[2].power_usage(), Err(NvmlError::GpuLost)));
    assert!(matches!(devices[2].uuid(), Err(NvmlError::GpuLost)));
    assert!(matches!(devices[2].memory_info(), Err(NvmlError::GpuLost)));
    assert!(matches!(nvml.device_by_index(2), Err(NvmlError::GpuLost)));
    assert!(devices[1].power_usage().is_ok());
    assert!(devices[3].memory_info().is_ok());
    assert_eq!(nvml.device_count().unwrap(), 4);

    // Nothing else is scheduled: the wait times out.
    assert!(matches!(set.wait(100), Err(NvmlError::Timeout)));

    wait_until(&nvml, 2.05);
    assert!(devices[2].power_usage().is_ok());
    assert_eq!(nvml.device_by_index(2).unwrap().index().unwrap(), 2);
}

#[test]
fn shipped_gpu_lost_scenario_loses_gpu_3_at_3s() {
    let _g = setup("gpu-lost");
    let nvml = init();
    let d3 = nvml.device_by_index(3).unwrap();
    assert!(d3.utilization_rates().is_ok());
    wait_until(&nvml, 3.1);
    assert!(matches!(d3.utilization_rates(), Err(NvmlError::GpuLost)));
    assert!(nvml.device_by_index(4).unwrap().utilization_rates().is_ok());
}

#[test]
fn injected_not_supported() {
    let scenario = r#"
[[gpus]]
count = 2
model = "h100"

[[faults]]
gpu = 0
not_supported = ["nvmlDeviceGetPowerUsage"]

[[faults]]
not_supported = ["nvmlDeviceGetEncoderUtilization", "nvmlSystemGetCudaDriverVersion_v2"]
"#;
    let tmp = temp_scenario("not-supported", scenario);
    let _g = setup(tmp.path());
    let nvml = init();
    let (d0, d1) = (
        nvml.device_by_index(0).unwrap(),
        nvml.device_by_index(1).unwrap(),
    );
    assert!(matches!(d0.power_usage(), Err(NvmlError::NotSupported)));
    assert!(d1.power_usage().is_ok());
    assert!(matches!(
        d0.encoder_utilization(),
        Err(NvmlError::NotSupported)
    ));
    assert!(matches!(
        d1.encoder_utilization(),
        Err(NvmlError::NotSupported)
    ));
    assert!(matches!(
        nvml.sys_cuda_driver_version(),
        Err(NvmlError::NotSupported)
    ));
    assert!(d0.utilization_rates().is_ok());
}

#[test]
fn l4_has_neither_nvlink_nor_gpm() {
    let _g = setup("no-gpm");
    let nvml = init();
    assert_eq!(nvml.device_count().unwrap(), 2);
    let d = nvml.device_by_index(0).unwrap();
    assert_eq!(d.name().unwrap(), "NVIDIA L4");
    assert_eq!(d.architecture().unwrap(), DeviceArchitecture::Ada);
    assert!(matches!(
        d.link_wrapper_for(0).is_active(),
        Err(NvmlError::NotSupported)
    ));
    assert!(!d.gpm_support().unwrap());
    assert!(matches!(d.gpm_sample(), Err(NvmlError::NotSupported)));
    assert!(matches!(d.mig_mode(), Err(NvmlError::NotSupported)));
    // No fans: the count is 0 and fan 0 an invalid argument, as on a real H100.
    assert_eq!(d.num_fans().unwrap(), 0);
    assert!(matches!(d.fan_speed(0), Err(NvmlError::InvalidArg)));
    let f = field_values(
        &nvml,
        &d,
        &[
            (NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX, u32::MAX),
            (NVML_FI_DEV_NVLINK_LINK_COUNT, 0),
        ],
    );
    assert!(
        f.iter()
            .all(|(r, _)| *r == nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED),
        "{f:?}"
    );
    // The first half period is busy, with the process present.
    let u = d.utilization_rates().unwrap().gpu;
    assert_eq!(u, 60);
    assert_eq!(d.performance_state().unwrap(), PerformanceState::Zero);
    assert_eq!(d.running_compute_processes().unwrap()[0].pid, 6100);
}

#[test]
fn idle_allocated_gpus_hold_memory_without_work() {
    let _g = setup("idle-allocated");
    let nvml = init();
    for i in 0..8 {
        let d = nvml.device_by_index(i).unwrap();
        assert_eq!(d.utilization_rates().unwrap().gpu, 0);
        assert!(d
            .current_throttle_reasons()
            .unwrap()
            .contains(ThrottleReasons::GPU_IDLE));
        let procs = d.running_compute_processes().unwrap();
        if i < 6 {
            assert_eq!(procs.len(), 1);
            assert_eq!(procs[0].pid, std::process::id(), "pid = \"self\"");
            assert_eq!(d.memory_info().unwrap().used, 30720 * MIB);
        } else {
            assert!(procs.is_empty());
            assert_eq!(d.memory_info().unwrap().used, 0);
            assert!(matches!(
                d.process_utilization_stats(None),
                Err(NvmlError::NotFound)
            ));
        }
    }
}

#[test]
fn input_bound_utilisation_oscillates() {
    let _g = setup("input-bound");
    let nvml = init();
    let d = nvml.device_by_index(0).unwrap();
    // 85 % for the first 1.4 s of each 4 s period, then 3 %.
    let t = sim_time(&nvml);
    assert!(t < 1.2, "{t}");
    assert_eq!(d.utilization_rates().unwrap().gpu, 85);
    wait_until(&nvml, 1.6);
    assert_eq!(d.utilization_rates().unwrap().gpu, 3);
    assert!(d.power_usage().unwrap() < 150_000);
}

#[test]
fn hangs_block_the_named_call_or_everything() {
    let scenario = r#"
[[gpus]]
count = 2
model = "h100"
utilization = 50

[[faults]]
gpu = 1
hang = [{ call = "nvmlDeviceGetPowerUsage", at = 0.3, seconds = 1.0 }]

[[faults]]
hang = [{ call = "nvmlDeviceGetTemperature", at = 1.6, seconds = 0.6, blocks_all = true }]
"#;
    let tmp = temp_scenario("hang", scenario);
    let _g = setup(tmp.path());
    let nvml = init();
    let (d0, d1) = (
        nvml.device_by_index(0).unwrap(),
        nvml.device_by_index(1).unwrap(),
    );
    assert!(d1.power_usage().is_ok());
    wait_until(&nvml, 0.35);
    std::thread::scope(|s| {
        let stuck = s.spawn(|| {
            let start = Instant::now();
            let r = d1.power_usage();
            (r.is_ok(), start.elapsed())
        });
        std::thread::sleep(Duration::from_millis(50));
        let start = Instant::now();
        assert!(d0.power_usage().is_ok(), "another GPU answers");
        assert!(
            d1.temperature(TemperatureSensor::Gpu).is_ok(),
            "another call answers"
        );
        assert!(start.elapsed() < Duration::from_millis(200));
        let (ok, took) = stuck.join().unwrap();
        assert!(ok);
        assert!(
            took >= Duration::from_millis(850) && took < Duration::from_millis(1300),
            "{took:?}"
        );
    });

    wait_until(&nvml, 1.65);
    std::thread::scope(|s| {
        let stuck = s.spawn(|| d0.temperature(TemperatureSensor::Gpu).is_ok());
        std::thread::sleep(Duration::from_millis(50));
        let start = Instant::now();
        assert_eq!(nvml.device_count().unwrap(), 2);
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(350),
            "a blocks_all hang holds every call: {took:?}"
        );
        assert!(stuck.join().unwrap());
    });
}

fn last_error() -> String {
    // SAFETY: the symbol has this signature (see src/ffi.rs); the buffer is writable.
    unsafe {
        let lib = libloading::Library::new(lib_path()).unwrap();
        let f: libloading::Symbol<unsafe extern "C" fn(*mut c_char, c_uint) -> nvmlReturn_t> =
            lib.get(b"nvmlSimGetLastError\0").unwrap();
        let mut buf = [0 as c_char; 512];
        assert_eq!(f(buf.as_mut_ptr(), buf.len() as c_uint), 0);
        CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned()
    }
}

fn error_string(code: nvmlReturn_t) -> String {
    // SAFETY: the symbol has this signature; it returns a static C string.
    unsafe {
        let lib = libloading::Library::new(lib_path()).unwrap();
        let f: libloading::Symbol<unsafe extern "C" fn(nvmlReturn_t) -> *const c_char> =
            lib.get(b"nvmlErrorString\0").unwrap();
        CStr::from_ptr(f(code)).to_string_lossy().into_owned()
    }
}

#[test]
fn init_failures_are_explained() {
    let _g = setup("");
    std::env::remove_var("NVML_SIM_SCENARIO");
    let path = lib_path();
    let r = Nvml::builder().lib_path(path.as_os_str()).init();
    assert!(matches!(r, Err(NvmlError::DriverNotLoaded)), "{r:?}");
    assert!(
        error_string(9).contains("NVML_SIM_SCENARIO"),
        "{}",
        error_string(9)
    );
    assert!(last_error().contains("NVML_SIM_SCENARIO is not set"));

    let broken = temp_scenario("broken", "[[gpus]]\nmodel = \"h100\"\nutilisation = 5\n");
    std::env::set_var("NVML_SIM_SCENARIO", broken.path());
    let r = Nvml::builder().lib_path(path.as_os_str()).init();
    assert!(matches!(r, Err(NvmlError::Unknown)), "{r:?}");
    assert!(last_error().contains("utilisation"), "{}", last_error());

    std::env::set_var("NVML_SIM_SCENARIO", "no-such-scenario");
    assert!(Nvml::builder().lib_path(path.as_os_str()).init().is_err());
    assert!(
        last_error().contains("no-such-scenario"),
        "{}",
        last_error()
    );

    let no_perm = temp_scenario(
        "no-perm",
        "init_error = \"NO_PERMISSION\"\n[[gpus]]\nmodel = \"t4\"\n",
    );
    std::env::set_var("NVML_SIM_SCENARIO", no_perm.path());
    let r = Nvml::builder().lib_path(path.as_os_str()).init();
    assert!(matches!(r, Err(NvmlError::NoPermission)), "{r:?}");
    assert_eq!(error_string(4), "Insufficient Permissions");
}

#[test]
fn reinit_with_the_same_scenario_keeps_the_clock() {
    let tmp = temp_scenario("reinit", "[[gpus]]\nmodel = \"a100\"\nutilization = 10\n");
    let _g = setup(tmp.path());
    let nvml = init();
    std::thread::sleep(Duration::from_millis(150));
    let t1 = sim_time(&nvml);
    let e1 = nvml
        .device_by_index(0)
        .unwrap()
        .total_energy_consumption()
        .unwrap();
    drop(nvml);
    let nvml = init();
    let t2 = sim_time(&nvml);
    assert!(t2 >= t1 && t1 >= 0.15, "{t1} {t2}");
    assert!(
        nvml.device_by_index(0)
            .unwrap()
            .total_energy_consumption()
            .unwrap()
            >= e1
    );
}

#[test]
fn every_exported_symbol_resolves() {
    let src =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/ffi.rs")).unwrap();
    let start = src
        .find("pub const EXPORTED: &[&str] = &[")
        .expect("EXPORTED list");
    let list = &src[start..start + src[start..].find("];").unwrap()];
    let names: Vec<&str> = list.split('"').skip(1).step_by(2).collect();
    assert!(names.len() > 80, "{}", names.len());
    // SAFETY: only resolving symbols, never calling them.
    unsafe {
        let lib = libloading::Library::new(lib_path()).unwrap();
        for name in &names {
            let sym: Result<libloading::Symbol<unsafe extern "C" fn()>, _> =
                lib.get(format!("{name}\0").as_bytes());
            assert!(sym.is_ok(), "{name} is not exported");
        }
    }
    // The symbols nvml-wrapper's Drop impls call through `expect`.
    for name in ["nvmlShutdown", "nvmlEventSetFree", "nvmlGpmSampleFree"] {
        assert!(names.contains(&name), "{name}");
    }
}

#[test]
fn a100_node_has_nvlink_without_gpm_and_a_degraded_gpu() {
    let _g = setup("4xa100");
    let nvml = init();
    assert_eq!(nvml.sys_nvml_version().unwrap(), "12.535.161.08");
    assert_eq!(nvml.device_count().unwrap(), 4);
    let d0 = nvml.device_by_index(0).unwrap();
    assert_eq!(d0.name().unwrap(), "NVIDIA A100-SXM4-80GB");
    assert!(!d0.gpm_support().unwrap());
    assert!((0..12).all(|l| d0.link_wrapper_for(l).is_active().unwrap()));
    assert_eq!(d0.pcie_link_speed().unwrap(), 16_000);

    let d1 = nvml.device_by_index(1).unwrap();
    assert_eq!(
        d1.total_ecc_errors(MemoryError::Corrected, EccCounter::Volatile)
            .unwrap(),
        2
    );
    assert_eq!(
        d1.total_ecc_errors(MemoryError::Corrected, EccCounter::Aggregate)
            .unwrap(),
        140
    );
    let f = field_values(
        &nvml,
        &d1,
        &[
            (NVML_FI_DEV_REMAPPED_COR, 0),
            (NVML_FI_DEV_REMAPPED_PENDING, 0),
        ],
    );
    assert_eq!(f, vec![(0, 1), (0, 0)]);

    let d3 = nvml.device_by_index(3).unwrap();
    assert_eq!(d3.current_pcie_link_width().unwrap(), 8);
    assert_eq!(d3.max_pcie_link_width().unwrap(), 16);
    assert!(d3.link_wrapper_for(10).is_active().unwrap());
    assert!(!d3.link_wrapper_for(11).is_active().unwrap());
    let f = field_values(
        &nvml,
        &d3,
        &[
            (NVML_FI_DEV_NVLINK_GET_STATE, 11),
            (NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX, 11),
        ],
    );
    assert_eq!(f, vec![(0, 0), (0, 0)]);
}

#[test]
fn t4_retires_pages_instead_of_remapping_rows() {
    let scenario = "[[gpus]]\nmodel = \"t4\"\nretired_pages_dbe = 2\nretired_pages_pending = 1\n";
    let tmp = temp_scenario("t4", scenario);
    let _g = setup(tmp.path());
    let nvml = init();
    let d = nvml.device_by_index(0).unwrap();
    assert_eq!(d.name().unwrap(), "Tesla T4");
    let pages = d.retired_pages(RetirementCause::DoubleBitEccError).unwrap();
    assert_eq!(pages.len(), 2);
    assert_ne!(pages[0].address, pages[1].address);
    assert!(d
        .retired_pages(RetirementCause::MultipleSingleBitEccErrors)
        .unwrap()
        .is_empty());
    assert!(d.are_pages_pending_retired().unwrap());
    // SAFETY: a valid handle and four writable c_uints.
    let ret = unsafe {
        let (mut a, mut b, mut c, mut e): (c_uint, c_uint, c_uint, c_uint) = (0, 0, 0, 0);
        nvml.lib()
            .nvmlDeviceGetRemappedRows(d.handle(), &mut a, &mut b, &mut c, &mut e)
    };
    assert_eq!(ret, nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED);
    // Idle T4s sit in P8.
    assert_eq!(d.performance_state().unwrap(), PerformanceState::Eight);
}

/// GPU and compute instance ids of a MIG device: not wrapped by
/// nvml-wrapper 0.13, so through the raw symbols.
fn instance_ids(nvml: &Nvml, d: &Device) -> (nvmlReturn_t, c_uint, nvmlReturn_t, c_uint) {
    let (mut gi, mut ci) = (c_uint::MAX, c_uint::MAX);
    // SAFETY: a valid handle and writable c_uints.
    unsafe {
        let lib = nvml.lib();
        let r1 = lib.nvmlDeviceGetGpuInstanceId(d.handle(), &mut gi);
        let r2 = lib.nvmlDeviceGetComputeInstanceId(d.handle(), &mut ci);
        (r1, gi, r2, ci)
    }
}

#[test]
fn mig_h100_instances_answer_through_nvml_wrapper() {
    let _g = setup("mig-h100");
    let nvml = init();
    assert_eq!(
        nvml.device_count().unwrap(),
        2,
        "MIG devices are not counted"
    );
    let parent = nvml.device_by_index(0).unwrap();
    let parent_uuid = parent.uuid().unwrap();

    // The parent: MIG on, room for 7 MIG devices, no utilisation.
    let mode = parent.mig_mode().unwrap();
    assert_eq!(
        (mode.current, mode.pending),
        (NVML_DEVICE_MIG_ENABLE, NVML_DEVICE_MIG_ENABLE)
    );
    assert_eq!(parent.mig_device_count().unwrap(), 7);
    assert!(!parent.mig_is_mig_device_handle().unwrap());
    assert!(matches!(
        parent.utilization_rates(),
        Err(NvmlError::NotSupported)
    ));
    assert!(matches!(
        parent.process_utilization_stats(None),
        Err(NvmlError::NotSupported)
    ));
    assert!(matches!(
        parent.mig_parent_device(),
        Err(NvmlError::NotSupported)
    ));
    assert_eq!(
        instance_ids(&nvml, &parent),
        (
            nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED,
            c_uint::MAX,
            nvmlReturn_enum_NVML_ERROR_NOT_SUPPORTED,
            c_uint::MAX
        )
    );
    // Parent-only readings still work on the parent.
    assert!(parent.power_usage().unwrap() > 100_000);
    assert!(parent.temperature(TemperatureSensor::Gpu).is_ok());

    // Walk every index up to the max count; empty ones are NOT_FOUND.
    let mut migs = Vec::new();
    for i in 0..parent.mig_device_count().unwrap() {
        match parent.mig_device_by_index(i) {
            Ok(d) => migs.push(d),
            Err(NvmlError::NotFound) => assert!(i >= 3, "index {i}"),
            Err(e) => panic!("index {i}: {e:?}"),
        }
    }
    assert!(matches!(
        parent.mig_device_by_index(7),
        Err(NvmlError::InvalidArg)
    ));
    assert_eq!(migs.len(), 3);

    // (profile, GI, memory MiB, used MiB, pids), in NVML index order.
    let want: [(&str, u32, u64, u64, &[u32]); 3] = [
        ("3g.40gb", 2, 40192, 20000, &[7100]),
        ("2g.20gb", 3, 20096, 0, &[]),
        ("2g.20gb", 4, 20096, 9000, &[7200]),
    ];
    let mut uuids = Vec::new();
    for (d, (profile, gi, total, used, pids)) in migs.iter().zip(want) {
        assert!(d.mig_is_mig_device_handle().unwrap());
        assert_eq!(
            d.name().unwrap(),
            format!("NVIDIA H100 80GB HBM3 MIG {profile}")
        );
        let uuid = d.uuid().unwrap();
        assert!(uuid.starts_with("MIG-") && uuid.len() == 40, "{uuid}");
        assert_eq!(
            nvml.device_by_uuid(uuid.as_str()).unwrap().uuid().unwrap(),
            uuid,
            "nvmlDeviceGetHandleByUUID takes MIG UUIDs"
        );
        uuids.push(uuid);
        assert_eq!(d.mig_parent_device().unwrap().uuid().unwrap(), parent_uuid);
        assert_eq!(instance_ids(&nvml, d), (0, gi, 0, 0));

        let m = d.memory_info().unwrap();
        assert_eq!(
            (m.total, m.reserved, m.used, m.free),
            (total * MIB, 0, used * MIB, (total - used) * MIB),
            "{profile}"
        );
        let procs = d.running_compute_processes().unwrap();
        let got: Vec<u32> = procs.iter().map(|p| p.pid).collect();
        assert_eq!(got, pids);
        for p in &procs {
            assert_eq!(
                (p.gpu_instance_id, p.compute_instance_id),
                (Some(gi), Some(0))
            );
        }
        let attrs = d.attributes().unwrap();
        let slices = profile[..1].parse::<u32>().unwrap();
        assert_eq!(attrs.gpu_instance_slice_count, slices);
        assert_eq!(attrs.memory_size_mb, total);

        // Whole-GPU readings are the parent's: NOT_SUPPORTED on a MIG device.
        assert!(matches!(
            d.utilization_rates(),
            Err(NvmlError::NotSupported)
        ));
        assert!(matches!(d.power_usage(), Err(NvmlError::NotSupported)));
        assert!(matches!(
            d.temperature(TemperatureSensor::Gpu),
            Err(NvmlError::NotSupported)
        ));
        assert!(matches!(
            d.clock_info(Clock::SM),
            Err(NvmlError::NotSupported)
        ));
        assert!(matches!(d.pci_info(), Err(NvmlError::NotSupported)));
        assert!(matches!(
            d.link_wrapper_for(0).is_active(),
            Err(NvmlError::NotSupported)
        ));
        assert!(matches!(d.mig_mode(), Err(NvmlError::NotSupported)));
        assert!(matches!(d.gpm_sample(), Err(NvmlError::NotSupported)));
        assert!(matches!(
            d.mig_device_by_index(0),
            Err(NvmlError::NotSupported)
        ));
    }
    assert_eq!(attrs_sms(&migs[0]), 60, "3g.40gb on H100");
    uuids.sort();
    uuids.dedup();
    assert_eq!(uuids.len(), 3);
    assert_eq!(nvml.sys_process_name(7200, 64).unwrap(), "tritonserver");

    // The parent aggregates its instances (the caller is privileged).
    let m = parent.memory_info().unwrap();
    assert_eq!((m.total, m.reserved), (81559 * MIB, 545 * MIB));
    assert_eq!(m.used, 29000 * MIB);
    let procs = parent.running_compute_processes().unwrap();
    let got: Vec<(u32, Option<u32>)> = procs.iter().map(|p| (p.pid, p.gpu_instance_id)).collect();
    assert_eq!(got, vec![(7100, Some(2)), (7200, Some(4))]);

    // GPM per GPU instance: samples of the parent for one instance id.
    assert!(parent.gpm_support().unwrap());
    let ids = [
        GpmMetricId::GraphicsUtil,
        GpmMetricId::SmUtil,
        GpmMetricId::SmOccupancy,
        GpmMetricId::AnyTensorUtil,
        GpmMetricId::DramBwUtil,
        GpmMetricId::Fp16Util,
        GpmMetricId::Fp32Util,
        GpmMetricId::Fp64Util,
    ];
    let metrics = |a, b| -> Vec<f64> {
        gpm_metrics_get(&nvml, a, b, &ids)
            .unwrap()
            .into_iter()
            .map(|r| r.unwrap().value)
            .collect()
    };
    let a1 = parent.gpm_mig_sample(2).unwrap();
    let i1 = parent.gpm_mig_sample(3).unwrap();
    let p1 = parent.gpm_sample().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let a2 = parent.gpm_mig_sample(2).unwrap();
    let i2 = parent.gpm_mig_sample(3).unwrap();
    let p2 = parent.gpm_sample().unwrap();
    let got = metrics(&a1, &a2);
    let want = [70.0, 70.0, 35.0, 40.0, 30.0, 25.0, 8.0, 0.0];
    for ((id, g), w) in ids.iter().zip(&got).zip(want) {
        assert!(near(*g, w, 1e-9), "{id:?}: {g} != {w}");
    }
    assert_eq!(metrics(&i1, &i2), vec![0.0; 8], "the idle instance");
    // GPU-wide metrics are not per instance.
    let pcie = gpm_metrics_get(&nvml, &a1, &a2, &[GpmMetricId::PcieTxPerSec]).unwrap();
    assert!(matches!(pcie[0], Err(NvmlError::NotSupported)));
    // Samples of two instances, or of an instance and the GPU, do not mix.
    assert!(matches!(
        gpm_metrics_get(&nvml, &a1, &i2, &ids),
        Err(NvmlError::InvalidArg)
    ));
    assert!(matches!(
        gpm_metrics_get(&nvml, &p1, &a2, &ids),
        Err(NvmlError::InvalidArg)
    ));
    // The parent's own samples: the instances weighted by compute slices
    // (3/7 of 70 % plus 2/7 of ~55 %), DRAM by memory slices (4/8 of 30 %
    // plus 2/8 of 20 %).
    let whole = metrics(&p1, &p2);
    assert!(
        (whole[1] - (30.0 + 2.0 / 7.0 * 55.0)).abs() < 2.0,
        "{whole:?}"
    );
    assert!(near(whole[4], 20.0, 1e-9), "{whole:?}");
    assert!(matches!(
        parent.gpm_mig_sample(5),
        Err(NvmlError::InvalidArg)
    ));
    drop((a1, a2, i1, i2, p1, p2));

    // GPU 1 runs without MIG; MIG waits for its next reset (mig_pending).
    let d1 = nvml.device_by_index(1).unwrap();
    let mode = d1.mig_mode().unwrap();
    assert_eq!((mode.current, mode.pending), (0, 1));
    assert_eq!(d1.mig_device_count().unwrap(), 0);
    assert!(matches!(
        d1.mig_device_by_index(0),
        Err(NvmlError::NotSupported)
    ));
    assert!(matches!(d1.gpm_mig_sample(0), Err(NvmlError::NotSupported)));
    assert!((86..=94).contains(&d1.utilization_rates().unwrap().gpu));
    let procs = d1.running_compute_processes().unwrap();
    assert_eq!(procs.len(), 1);
    assert_eq!((procs[0].pid, procs[0].gpu_instance_id), (7301, None));

    nvml.shutdown().unwrap();
}

fn attrs_sms(d: &Device) -> u32 {
    d.attributes().unwrap().multiprocessor_count
}

#[test]
fn mig_parent_aggregates_need_privileges_and_faults_reach_instances() {
    let scenario = r#"
privileged = false

[[gpus]]
model = "h100"
mig = [
  { profile = "1g.10gb", processes = [{ pid = 900, used_memory_mib = 1000 }] },
  { profile = "1g.10gb" },
  { profile = "4g.40gb", gpu_instance_id = 1 },
]

[[gpus]]
model = "a100"
mig = []

[[faults]]
gpu = 0
lost_at = 0.5
"#;
    let tmp = temp_scenario("mig-unprivileged", scenario);
    let _g = setup(tmp.path());
    let nvml = init();
    let parent = nvml.device_by_index(0).unwrap();
    assert!(matches!(parent.memory_info(), Err(NvmlError::NoPermission)));
    assert!(matches!(
        parent.running_compute_processes(),
        Err(NvmlError::NoPermission)
    ));
    // Per instance needs no privilege. 1g.10gb placed top-down: GI 13, 12.
    let gis: Vec<u32> = (0..3)
        .map(|i| instance_ids(&nvml, &parent.mig_device_by_index(i).unwrap()).1)
        .collect();
    assert_eq!(gis, vec![1, 12, 13]);
    let small = parent.mig_device_by_index(2).unwrap();
    assert_eq!(small.running_compute_processes().unwrap()[0].pid, 900);
    assert_eq!(small.memory_info().unwrap().used, 1000 * MIB);
    let big = parent.mig_device_by_index(0).unwrap();
    assert_eq!(big.name().unwrap(), "NVIDIA H100 80GB HBM3 MIG 4g.40gb");
    assert_eq!(big.memory_info().unwrap().total, (81559 - 545) / 2 * MIB);
    assert!(matches!(
        parent.mig_device_by_index(3),
        Err(NvmlError::NotFound)
    ));

    // MIG enabled with no instance created yet (A100: no GPM).
    let a100 = nvml.device_by_index(1).unwrap();
    assert_eq!(a100.mig_mode().unwrap().current, NVML_DEVICE_MIG_ENABLE);
    assert_eq!(a100.mig_device_count().unwrap(), 7);
    assert!((0..7).all(|i| matches!(a100.mig_device_by_index(i), Err(NvmlError::NotFound))));
    assert!(matches!(
        a100.gpm_mig_sample(0),
        Err(NvmlError::NotSupported)
    ));

    // A lost parent loses its MIG devices too.
    wait_until(&nvml, 0.6);
    assert!(matches!(small.memory_info(), Err(NvmlError::GpuLost)));
    assert!(matches!(small.uuid(), Err(NvmlError::GpuLost)));
}
