//! A simulated `libnvidia-ml`: a cdylib that exports the NVML C functions
//! accel-agent calls and answers from a scenario file named by the
//! environment variable `NVML_SIM_SCENARIO` (a path, or the name of a
//! bundled scenario under `tests/nvml-sim/scenarios/`).
//!
//! Load `target/<profile>/libnvml_sim.so` wherever libnvidia-ml would be
//! loaded (`accel-agent --nvml.library PATH`, or
//! `Nvml::builder().lib_path(PATH).init()`). See README.md for the scenario
//! format, the exported symbols and how faults behave.

// NVML constants (nvml-wrapper-sys) keep their C names, also in patterns.
#![allow(non_upper_case_globals)]

pub mod blackwell;
pub mod cost;
pub mod curve;
pub mod ffi;
pub mod gpu;
pub mod mig;
pub mod scenario;
pub mod sim;
