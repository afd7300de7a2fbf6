//! Every flag's value, arbitrary: `Config::from_args` gives a config or a
//! one-line error (the CLI's exit code 2), never a panic. 10,000 cases, each
//! a random flag of the real command with a random value.

use std::ffi::OsString;

use accel_agent::config::{command, Config};
use proptest::prelude::*;

/// Every flag that takes a value, by id (the same as its long name).
fn valued_flags() -> &'static [String] {
    static FLAGS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    FLAGS.get_or_init(|| {
        command()
            .get_arguments()
            .filter(|a| a.get_action().takes_values())
            .map(|a| a.get_id().to_string())
            // Reading a file named by an arbitrary string is tested below with
            // names that cannot exist; here it would only test the file system.
            .filter(|id| id != "config.file" && id != "web.config.file")
            .collect()
    })
}

fn parse(args: &[String]) -> Result<(), String> {
    let mut v: Vec<OsString> = vec!["accel-agent".into()];
    v.extend(args.iter().map(OsString::from));
    Config::from_args(v).map(|_| ())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10_000))]

    #[test]
    fn any_value_of_any_flag_is_ok_or_one_line(
        flag in prop::sample::Index::arbitrary(),
        value in prop_oneof![
            "\\PC{0,24}",
            "[0-9]{1,25}(ns|us|ms|s|m|h|d|y)?([0-9]{1,25}(s|d))?",
            "-?[0-9]{0,22}(\\.[0-9]{0,4})?(e[0-9]{1,3})?",
            "[:/\\[\\]a-z0-9.,=()*+?|^$-]{0,20}",
        ],
    ) {
        let flags = valued_flags();
        let id = &flags[flag.index(flags.len())];
        if let Err(e) = parse(&[format!("--{id}={value}")]) {
            prop_assert!(!e.is_empty() && !e.contains('\n'), "--{id}={value:?}: {e:?}");
        }
    }

}

proptest! {
    // A file name is a file name: a few hundred are plenty.
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn config_files_that_are_not_there_are_one_line(name in "[a-z0-9./-]{1,20}") {
        for flag in ["config.file", "web.config.file"] {
            let e = parse(&[format!("--{flag}=/nonexistent-accel/{name}")]).unwrap_err();
            prop_assert!(!e.contains('\n') && e.contains("nonexistent-accel"), "{e}");
        }
    }
}

#[test]
fn every_value_flag_is_covered() {
    let flags = valued_flags();
    for want in [
        "web.max-requests",
        "web.max-connections",
        "web.idle-timeout",
        "collector.cpu.interval",
        "log.level",
    ] {
        assert!(flags.iter().any(|f| f == want), "{want} not in {flags:?}");
    }
    // The duration that once overflowed (`total += unit`).
    let e = parse(&["--collector.cpu.interval=18446744073709551615d18446744073709551615d".into()])
        .unwrap_err();
    assert!(!e.contains('\n'), "{e}");
}
