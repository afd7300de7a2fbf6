//! The `accel-agent` binary: all the work is in the library.

fn main() {
    std::process::exit(accel_agent::run(std::env::args_os().collect()));
}
