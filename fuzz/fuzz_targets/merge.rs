#![no_main]

// Each target uses one of the shared checks.
#[allow(dead_code)]
#[path = "../checks/core.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::merge(data));
