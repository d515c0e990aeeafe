#![no_main]
// The body is accelwatch::fuzzing::decode_csv, which tests/it/fuzz.rs also runs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| accelwatch::fuzzing::decode_csv(data));
