#![no_main]
// The body is accelwatch::fuzzing::mqtt_topic, which tests/it/fuzz.rs also runs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| accelwatch::fuzzing::mqtt_topic(data));
