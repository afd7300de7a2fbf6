//! Marks libnvml_sim.so as never unloaded (`-z nodelete`): nvml-wrapper
//! dlcloses the library when `Nvml` is dropped, and a sampler thread stuck in
//! a simulated hang must never have the code it sleeps in unmapped. It also
//! keeps the scenario timeline across an `Nvml` drop and re-init.
fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,nodelete");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
