#![no_main]
// The body is accelwatch::fuzzing::config_toml, which tests/it/fuzz.rs also runs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| accelwatch::fuzzing::config_toml(data));
