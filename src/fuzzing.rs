//! The bodies of the fuzz targets, one per parser of outside bytes. The
//! coverage-guided targets in `fuzz/` (nightly, libFuzzer) are one line
//! each calling these, and `tests/it/fuzz.rs` replays every committed seed
//! through them on stable, so both exercise the same code. Each body takes
//! arbitrary bytes, must not panic, and asserts what the parser promises
//! (see docs/fuzzing.md).

use std::path::Path;

use crate::config::Config;
use crate::control::{ControlCommand, NAMES};
use crate::decode::{json_device_field, json_sample_count, DecodeError, Decoder, Format, Samples};
use crate::model::config::BackendOptions;
use crate::model::loaded::LoadedModel;
use crate::model::meta::{MetadataError, ModelMetadata};
use crate::model::signature::{Dim, GraphIo, Port};
use crate::mqtt::topic::{
    check_share_group, sanitize_device, DeviceFilter, DeviceSource, Template, MAX_DEVICE_CHARS,
};
use crate::mqtt::url::BrokerUrl;
use crate::source::serial::framing::{
    encode_frame, BinaryFramer, FrameError, Framed, Framer, LineFramer,
};

/// A target's body: arbitrary bytes in, a panic on a broken promise.
pub type Body = fn(&[u8]);

/// Every target: its name (the file `fuzz/fuzz_targets/<name>.rs`, the
/// seed folder `fuzz/seeds/<name>/`) and its body.
pub const TARGETS: [(&str, Body); 11] = [
    ("decode_json", decode_json),
    ("decode_csv", decode_csv),
    ("decode_binary", decode_binary),
    ("serial_lines", serial_lines),
    ("serial_frames", serial_frames),
    ("mqtt_topic", mqtt_topic),
    ("control_http", control_http),
    ("control_mqtt", control_mqtt),
    ("config_toml", config_toml),
    ("model_meta", model_meta),
    ("model_onnx", model_onnx),
];

fn channels() -> Vec<String> {
    ["ax", "ay", "az"].map(String::from).to_vec()
}

/// The decoders a payload goes through: the default limits, and a raised
/// payload limit with a low sample limit, where only decoding without a
/// tree keeps a giant batch's memory bounded.
fn decoders() -> [Decoder; 2] {
    [
        Decoder::new(channels(), 256 * 1024, 4096),
        Decoder::new(channels(), 64 * 1024 * 1024, 64).with_i16_scale(1.0 / 4096.0),
    ]
}

/// Decodes `data` and checks what a decode promises: all or nothing,
/// within the limits, whole samples, finite values; for JSON, the same
/// answer as serde_json alone, to the bit (the scanner of plain batches
/// must read exactly as it does).
fn check_decode(decoder: &Decoder, max_samples: usize, format: Format, data: &[u8]) -> usize {
    let mut out = Samples::default();
    let decoded = decoder.decode(format, data, &mut out);
    if format == Format::Json {
        let mut by_serde = Samples::default();
        let serde = decoder.decode_json_by_serde(data, &mut by_serde);
        assert_eq!(decoded, serde);
        assert_eq!(bits(&out), bits(&by_serde));
    }
    match decoded {
        Ok(()) => {
            assert!(!out.is_empty() && out.len() <= max_samples, "{}", out.len());
            assert_eq!(out.values.len(), out.len() * decoder.channels());
            assert!(out.values.iter().all(|v| v.is_finite()));
            assert!(out.t_ms.iter().flatten().all(|t| t.is_finite()));
            out.len()
        }
        Err(error) => {
            assert!(out.is_empty(), "a refused payload leaves no samples");
            assert!(DecodeError::ALL_REASONS.contains(&error.reason()));
            0
        }
    }
}

/// Timestamps and values as bits: -0.0 is not 0.0 here.
fn bits(samples: &Samples) -> (Vec<Option<u64>>, Vec<u32>) {
    (
        samples.t_ms.iter().map(|t| t.map(f64::to_bits)).collect(),
        samples.values.iter().map(|v| v.to_bits()).collect(),
    )
}

pub fn decode_json(data: &[u8]) {
    let [small, large] = decoders();
    let decoded = check_decode(&small, 4096, Format::Json, data);
    check_decode(&large, 64, Format::Json, data);
    // The serial input's rate count may over-count odd payloads
    // (duplicate keys, nested extras), never under-count.
    assert!(json_sample_count(data) >= decoded);
    if let Ok(id) = json_device_field(data, "id") {
        assert!(!id.is_empty());
    }
}

pub fn decode_csv(data: &[u8]) {
    let [small, large] = decoders();
    check_decode(&small, 4096, Format::Csv, data);
    check_decode(&large, 64, Format::Csv, data);
}

pub fn decode_binary(data: &[u8]) {
    let [small, large] = decoders();
    check_decode(&small, 4096, Format::Binary, data);
    check_decode(&large, 64, Format::Binary, data);
}

/// Feeds `stream` whole and in pieces whose sizes come from `sizes`.
fn feed_both(make: impl Fn() -> Framer, sizes: &[u8], stream: &[u8]) -> [Vec<Framed>; 2] {
    let mut whole = Vec::new();
    let mut framer = make();
    framer.feed(stream, &mut whole);
    let _ = framer.reset();
    let mut split = Vec::new();
    let mut framer = make();
    let mut rest = stream;
    for size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let n = (usize::from(*size) + 1).min(rest.len());
        framer.feed(&rest[..n], &mut split);
        rest = &rest[n..];
    }
    let _ = framer.reset();
    [whole, split]
}

/// `[max line, split sizes (4 bytes)] stream`.
pub fn serial_lines(data: &[u8]) {
    let Some((&max, rest)) = data.split_first() else {
        return;
    };
    let max = usize::from(max) + 1;
    let (sizes, stream) = rest.split_at(rest.len().min(4));
    let [whole, split] = feed_both(|| Framer::Lines(LineFramer::new(max)), sizes, stream);
    assert_eq!(
        whole, split,
        "a line stream gives the same however it is read"
    );
    for item in &whole {
        if let Framed::Payload(line) = item {
            assert!(line.len() <= max && !line.contains(&b'\n'));
            assert!(!line.iter().all(u8::is_ascii_whitespace));
        }
    }
}

/// `[channels, max payload, split sizes (4 bytes)] stream`.
pub fn serial_frames(data: &[u8]) {
    let [c, max, rest @ ..] = data else {
        return;
    };
    let channels = usize::from(c % 4) + 1;
    let max = usize::from(*max) * 2 + 2;
    let (sizes, stream) = rest.split_at(rest.len().min(4));
    let make = || Framer::Binary(BinaryFramer::new(channels, max));
    let [whole, split] = feed_both(make, sizes, stream);
    let payloads = |out: &[Framed]| -> Vec<Vec<u8>> {
        out.iter()
            .filter_map(|f| match f {
                Framed::Payload(p) => Some(p.clone()),
                Framed::Error(_) => None,
            })
            .collect()
    };
    let rejected = |out: &[Framed]| {
        out.iter()
            .filter(|f| matches!(f, Framed::Error(FrameError::BadCrc | FrameError::BadLength)))
            .count()
    };
    // Garbage is reported in amounts that depend on the reads; frames and
    // rejected syncs do not.
    assert_eq!(payloads(&whole), payloads(&split));
    assert_eq!(rejected(&whole), rejected(&split));
    for payload in payloads(&whole) {
        assert!(!payload.is_empty() && payload.len() <= max);
        assert_eq!(payload.len() % (2 * channels), 0);
        // What was found is what a sender framing it again sends.
        let mut again = Vec::new();
        BinaryFramer::new(channels, max).feed(&encode_frame(&payload), &mut again);
        assert_eq!(again, vec![Framed::Payload(payload)]);
    }
}

/// Newline-separated: a filter, a topic, a template, a device id, a broker URL.
pub fn mqtt_topic(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\n');
    let mut next = || parts.next().unwrap_or_default();
    let (filter, topic, template, device, url) = (next(), next(), next(), next(), next());
    let in_payload = data.first().is_some_and(|b| b & 1 == 1);
    if let Ok(parsed) = DeviceFilter::parse_with(filter, in_payload) {
        // A share group may hold braces (MQTT forbids only / + #); the
        // filter after it may not.
        let plain = match parsed.subscription.strip_prefix("$share/") {
            Some(rest) => rest.split_once('/').map_or("", |(_, filter)| filter),
            None => &parsed.subscription,
        };
        assert!(!plain.contains(['{', '}']), "{plain:?}");
        if let Some(DeviceSource::Topic(id)) = parsed.matches(topic) {
            assert!(!id.is_empty() && !id.contains('/') && topic.contains(id));
        }
    }
    let clean = sanitize_device(device);
    assert!(!clean.is_empty() && clean.chars().count() <= MAX_DEVICE_CHARS);
    assert!(!clean.contains(['/', '+', '#']) && !clean.chars().any(char::is_control));
    assert_eq!(sanitize_device(&clean), clean, "sanitising is idempotent");
    if let Ok(parsed) = Template::parse(template) {
        let rendered = parsed.render(device);
        assert_eq!(rendered, template.replacen("{device}", &clean, 1));
        assert!(!rendered.contains(['+', '#']));
        assert_eq!(
            rendered.matches('/').count(),
            template.matches('/').count(),
            "a device is one topic level"
        );
    }
    if check_share_group(device).is_ok() {
        assert!(!device.is_empty() && !device.contains(['/', '+', '#']));
    }
    if let Ok(parsed) = BrokerUrl::parse(url) {
        assert!(!parsed.host.is_empty());
    }
}

fn check_command(command: &ControlCommand) {
    assert!(NAMES.contains(&command.as_str()));
    if let ControlCommand::Mark(mark) = command {
        assert!(mark.from_ms.is_finite() && mark.to_ms.is_finite());
        assert!(mark.from_ms <= mark.to_ms);
    }
}

/// `<name>[?<query>]`, as `POST /control/<name>?<query>` hands them over.
pub fn control_http(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (name, query) = match text.split_once('?') {
        Some((name, query)) => (name, Some(query)),
        None => (&*text, None),
    };
    if let Ok(command) = ControlCommand::parse(name, query) {
        assert_eq!(command.as_str(), name);
        check_command(&command);
    }
}

/// An MQTT command payload.
pub fn control_mqtt(data: &[u8]) {
    if let Ok(command) = ControlCommand::parse_json(data) {
        check_command(&command);
    }
}

/// A config file's text.
pub fn config_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::from_toml_str(text) {
        let _ = config.architecture();
        let _ = config.input_spec();
    }
}

/// The graph a sidecar is checked against: one input, and outputs named
/// as our models name them, every dimension but the latent symbolic, so
/// that the metadata alone decides the shapes.
fn sidecar_graph() -> GraphIo {
    let port = |name: &str, dims: Vec<Dim>| Port {
        name: name.into(),
        elem_type: 1,
        dims: Some(dims),
    };
    GraphIo {
        inputs: vec![port("input", vec![Dim::Symbolic, Dim::Symbolic])],
        outputs: vec![
            port("reconstruction", vec![Dim::Symbolic, Dim::Symbolic]),
            port("latent", vec![Dim::Symbolic, Dim::Fixed(8)]),
            port("kl", vec![Dim::Symbolic]),
        ],
    }
}

/// A sidecar `<model>.json` (or the metadata inside a model file).
pub fn model_meta(data: &[u8]) {
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let io = sidecar_graph();
    io.complete_metadata(&mut value, "0123456789abcdef");
    let Ok(meta) = ModelMetadata::from_value(value) else {
        return;
    };
    let _ = meta.features();
    let _ = io.signature(&meta);
    let _ = Config::default().model_problems(&meta);
}

/// Model files larger than this are not run through the loader by the
/// target: tract's optimisation of a large graph takes seconds.
pub const MAX_FUZZED_MODEL_BYTES: usize = 256 * 1024;

/// A model file's bytes, through the loader and tract; no sidecar.
pub fn model_onnx(data: &[u8]) {
    if data.len() > MAX_FUZZED_MODEL_BYTES {
        return;
    }
    let no_sidecar = || Err(MetadataError::Missing("(fuzzed, none)".into()));
    let path = Path::new("fuzzed.onnx");
    if let Ok(model) = LoadedModel::from_parts(data, no_sidecar, path, &BackendOptions::tract()) {
        let features = model.meta.features();
        let inference = model
            .runtime
            .run(&vec![0.5; features], 1)
            .expect("a loaded model answers a window");
        assert_eq!(inference.reconstruction.len(), model.meta.target_features());
    }
}
