//! Fuzzes policy loading and policy tests: the input is Cedar policy files
//! separated by `\x1c` (the ASCII file separator), then optionally a NUL and
//! a `tests.toml`; the demo's tests run when none is given. Any input must
//! load or give errors that format with their file:line:column, and a set
//! that loads must decide every test case without a panic.

#![no_main]

use airlock_policy::{run_tests, Directory, PolicySet};
use libfuzzer_sys::fuzz_target;

const DEMO_TESTS: &str = include_str!("../../policies/demo/tests.toml");

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (policies, tests) = match text.split_once('\0') {
        Some((policies, tests)) => (policies, tests),
        None => (text, DEMO_TESTS),
    };
    let sources: Vec<(String, String)> = policies
        .split('\x1c')
        .enumerate()
        .map(|(i, text)| (format!("fuzz-{i}.cedar"), text.to_owned()))
        .collect();
    match PolicySet::load(&sources) {
        Ok(set) => {
            for warning in set.warnings() {
                let _ = warning.to_string();
            }
            let report = run_tests(&set, &Directory::default(), tests);
            let _ = report.to_string();
        }
        Err(errors) => {
            for e in errors {
                let _ = e.to_string();
            }
        }
    }
});
