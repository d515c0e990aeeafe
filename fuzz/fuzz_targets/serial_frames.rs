#![no_main]
// The body is accelwatch::fuzzing::serial_frames, which tests/it/fuzz.rs also runs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| accelwatch::fuzzing::serial_frames(data));
