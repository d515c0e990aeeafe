#![no_main]
// The body is accelwatch::fuzzing::model_meta, which tests/it/fuzz.rs also runs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| accelwatch::fuzzing::model_meta(data));
