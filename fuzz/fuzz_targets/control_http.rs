#![no_main]
// The body is accelwatch::fuzzing::control_http, which tests/it/fuzz.rs also runs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| accelwatch::fuzzing::control_http(data));
