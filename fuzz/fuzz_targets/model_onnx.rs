#![no_main]
// The body is accelwatch::fuzzing::model_onnx, which tests/it/fuzz.rs also runs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| accelwatch::fuzzing::model_onnx(data));
