//! Payloads to samples. Pure: no I/O, no clock. Every malformed payload is a
//! typed [`DecodeError`] with a bounded `reason` for metrics; nothing panics.
//!
//! Formats:
//! - JSON sample: `{"t": 1000.0, "ax": 0.1, "ay": 0.0, "az": 0.98}` (`t` in ms, optional);
//! - JSON batch: `{"t0": 1000.0, "interval_ms": 20.0, "values": [[ax, ay, az], ...]}`;
//! - JSON array of samples: `[{"t": ..}, {"t": ..}]`;
//! - CSV lines: `t,ax,ay,az` or `ax,ay,az`, one sample per line;
//! - binary: a little-endian header then samples (see [`BinaryHeader`]).

use serde::{Deserialize, Serialize};

mod json;
mod json_fast;
mod json_number;

crate::reason::reason_error!(
    /// Why a JSON payload names no usable device.
    DeviceFieldError
);

/// Samples decoded from one payload, channel values flattened time-major.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Samples {
    /// Device timestamp of each sample in milliseconds, if the payload had one.
    pub t_ms: Vec<Option<f64>>,
    /// `t_ms.len() * channels` values.
    pub values: Vec<f32>,
}

impl Samples {
    pub fn len(&self) -> usize {
        self.t_ms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.t_ms.is_empty()
    }

    pub fn clear(&mut self) {
        self.t_ms.clear();
        self.values.clear();
    }
}

/// How a payload is encoded (`format` in the config: `json`, `csv`,
/// `binary`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// A JSON sample, batch or array of samples, told apart by shape.
    Json,
    Csv,
    /// The binary batch format of [`BinaryHeader`]; int16 or float32 values.
    Binary,
}

/// The binary batch format, for constrained senders: a 24-byte
/// little-endian header, then `samples * channels` values, time-major
/// (sample 0's channels, then sample 1's, ...).
///
/// | offset | type | field |
/// |---|---|---|
/// | 0 | `[u8; 4]` | magic `AWB1` |
/// | 4 | u8 | version, 1 |
/// | 5 | u8 | value type: 1 = int16, 2 = float32 |
/// | 6 | u16 | channel count (must equal the configured channels) |
/// | 8 | u32 | sample count |
/// | 12 | f64 | device timestamp of sample 0 in ms; NaN for none |
/// | 20 | f32 | interval between samples in ms (ignored when t0 is NaN) |
///
/// int16 values are multiplied by the decoder's scale (e.g. 1/4096 for a
/// ±8 g sensor reporting in LSB) to give channel units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BinaryHeader {
    pub value_type: BinaryType,
    pub channels: u16,
    pub samples: u32,
    pub t0_ms: f64,
    pub interval_ms: f32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryType {
    I16,
    F32,
}

impl BinaryType {
    const fn code(self) -> u8 {
        match self {
            BinaryType::I16 => 1,
            BinaryType::F32 => 2,
        }
    }
    const fn width(self) -> usize {
        match self {
            BinaryType::I16 => 2,
            BinaryType::F32 => 4,
        }
    }
}

impl BinaryHeader {
    pub const MAGIC: [u8; 4] = *b"AWB1";
    pub const VERSION: u8 = 1;
    pub const LEN: usize = 24;

    /// The header's bytes; a sender appends the values after it.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0..4].copy_from_slice(&Self::MAGIC);
        b[4] = Self::VERSION;
        b[5] = self.value_type.code();
        b[6..8].copy_from_slice(&self.channels.to_le_bytes());
        b[8..12].copy_from_slice(&self.samples.to_le_bytes());
        b[12..20].copy_from_slice(&self.t0_ms.to_le_bytes());
        b[20..24].copy_from_slice(&self.interval_ms.to_le_bytes());
        b
    }

    fn parse(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() < Self::LEN {
            return Err(DecodeError::Length {
                expected: Self::LEN,
                got: bytes.len(),
            });
        }
        if bytes[0..4] != Self::MAGIC {
            return Err(DecodeError::BadMagic);
        }
        if bytes[4] != Self::VERSION {
            return Err(DecodeError::BadVersion(bytes[4]));
        }
        let value_type = match bytes[5] {
            1 => BinaryType::I16,
            2 => BinaryType::F32,
            other => return Err(DecodeError::BadValueType(other)),
        };
        let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
        let u32_at =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let mut t0 = [0u8; 8];
        t0.copy_from_slice(&bytes[12..20]);
        Ok(Self {
            value_type,
            channels: u16_at(6),
            samples: u32_at(8),
            t0_ms: f64::from_le_bytes(t0),
            interval_ms: f32::from_bits(u32_at(20)),
        })
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload of {bytes} bytes exceeds the limit of {limit}")]
    TooLarge { bytes: usize, limit: usize },
    #[error("payload is not UTF-8 text")]
    NotUtf8,
    #[error("malformed JSON: {0}")]
    Syntax(String),
    #[error("JSON payload is neither a sample object, a batch object nor an array of samples")]
    Shape,
    #[error("missing channel {0:?}")]
    MissingChannel(String),
    #[error("field {field} is not a number")]
    NotANumber { field: String },
    #[error("field {field} is not finite")]
    NonFinite { field: String },
    #[error("line {line}: expected {expected} or {} fields, got {got}", expected + 1)]
    FieldCount {
        line: usize,
        expected: usize,
        got: usize,
    },
    #[error("{got} samples in one payload exceed the limit of {limit}")]
    TooManySamples { got: usize, limit: usize },
    #[error("batch needs a positive interval_ms")]
    BadInterval,
    #[error("payload holds no sample")]
    Empty,
    #[error("binary payload of {got} bytes, expected {expected}")]
    Length { expected: usize, got: usize },
    #[error("binary payload does not start with the magic AWB1")]
    BadMagic,
    #[error("binary format version {0} is not supported (only 1)")]
    BadVersion(u8),
    #[error("binary value type {0} is neither 1 (int16) nor 2 (float32)")]
    BadValueType(u8),
    #[error("binary payload has {got} channels, expected {expected}")]
    ChannelCount { expected: usize, got: usize },
}

impl DecodeError {
    /// Bounded label for the decode error counter.
    pub const fn reason(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::NotUtf8 => "not_utf8",
            DecodeError::Syntax(_) => "syntax",
            DecodeError::Shape => "shape",
            DecodeError::MissingChannel(_) => "missing_channel",
            DecodeError::NotANumber { .. } => "not_a_number",
            DecodeError::NonFinite { .. } => "non_finite",
            DecodeError::FieldCount { .. } => "field_count",
            DecodeError::TooManySamples { .. } => "too_many_samples",
            DecodeError::BadInterval => "bad_interval",
            DecodeError::Empty => "empty",
            DecodeError::Length { .. } => "length",
            DecodeError::BadMagic => "bad_magic",
            DecodeError::BadVersion(_) => "bad_version",
            DecodeError::BadValueType(_) => "bad_value_type",
            DecodeError::ChannelCount { .. } => "channel_count",
        }
    }

    pub const ALL_REASONS: [&'static str; 16] = [
        "too_large",
        "not_utf8",
        "syntax",
        "shape",
        "missing_channel",
        "not_a_number",
        "non_finite",
        "field_count",
        "too_many_samples",
        "bad_interval",
        "empty",
        "length",
        "bad_magic",
        "bad_version",
        "bad_value_type",
        "channel_count",
    ];
}

#[derive(Debug, Clone)]
pub struct Decoder {
    channels: Vec<String>,
    max_payload_bytes: usize,
    max_samples: usize,
    i16_scale: f32,
}

impl Decoder {
    pub fn new(channels: Vec<String>, max_payload_bytes: usize, max_samples: usize) -> Self {
        Self {
            channels,
            max_payload_bytes,
            max_samples,
            i16_scale: 1.0,
        }
    }

    /// The factor int16 values of the binary format are multiplied by.
    pub fn with_i16_scale(mut self, scale: f32) -> Self {
        self.i16_scale = scale;
        self
    }

    pub fn channels(&self) -> usize {
        self.channels.len()
    }

    /// Decodes `payload` into `out` (cleared first). On error `out` is left
    /// empty: a payload is taken whole or not at all.
    pub fn decode(
        &self,
        format: Format,
        payload: &[u8],
        out: &mut Samples,
    ) -> Result<(), DecodeError> {
        self.decode_with(format, payload, out, true)
    }

    /// [`Decoder::decode`] of JSON with serde_json alone, the scanner of
    /// `json_fast` skipped: what the fuzz target holds the scanner to.
    pub(crate) fn decode_json_by_serde(
        &self,
        payload: &[u8],
        out: &mut Samples,
    ) -> Result<(), DecodeError> {
        self.decode_with(Format::Json, payload, out, false)
    }

    fn decode_with(
        &self,
        format: Format,
        payload: &[u8],
        out: &mut Samples,
        scanner: bool,
    ) -> Result<(), DecodeError> {
        out.clear();
        let result = self.decode_into(format, payload, out, scanner);
        if result.is_err() {
            out.clear();
        }
        result
    }

    fn decode_into(
        &self,
        format: Format,
        payload: &[u8],
        out: &mut Samples,
        scanner: bool,
    ) -> Result<(), DecodeError> {
        if payload.len() > self.max_payload_bytes {
            return Err(DecodeError::TooLarge {
                bytes: payload.len(),
                limit: self.max_payload_bytes,
            });
        }
        match format {
            Format::Json => {
                // A batch the scanner takes is ASCII throughout (three
                // known keys, numbers, punctuation, whitespace), so only
                // what it gives up on is checked for UTF-8: the check was
                // 3 % of the daemon's CPU on 17-digit numbers.
                match scanner
                    .then(|| self.decode_plain_batch(payload, out))
                    .flatten()
                {
                    Some(decoded) => decoded?,
                    None => self.decode_json(utf8(payload)?, out)?,
                }
            }
            Format::Csv => self.decode_csv(utf8(payload)?, out)?,
            Format::Binary => self.decode_binary(payload, out)?,
        }
        if out.is_empty() {
            return Err(DecodeError::Empty);
        }
        Ok(())
    }

    fn check_count(&self, count: usize) -> Result<(), DecodeError> {
        check_count(count, self.max_samples)
    }

    fn decode_binary(&self, payload: &[u8], out: &mut Samples) -> Result<(), DecodeError> {
        let header = BinaryHeader::parse(payload)?;
        let channels = self.channels.len();
        if header.channels as usize != channels {
            return Err(DecodeError::ChannelCount {
                expected: channels,
                got: header.channels as usize,
            });
        }
        let count = header.samples as usize;
        self.check_count(count)?;
        let width = header.value_type.width();
        // count is bounded by max_samples above, so this cannot overflow.
        let expected = BinaryHeader::LEN + count * channels * width;
        if payload.len() != expected {
            return Err(DecodeError::Length {
                expected,
                got: payload.len(),
            });
        }
        let t0 = if header.t0_ms.is_nan() {
            None
        } else {
            let t0 = finite(header.t0_ms, "t0")?;
            let dt = header.interval_ms as f64;
            if !(dt.is_finite() && dt > 0.0) {
                return Err(DecodeError::BadInterval);
            }
            Some((t0, dt))
        };
        let body = &payload[BinaryHeader::LEN..];
        out.values.reserve(count * channels);
        match header.value_type {
            BinaryType::I16 => {
                // One `extend` of a counted iterator: no capacity check per
                // value, so the loop can vectorise.
                let scale = self.i16_scale;
                let (pairs, _) = body.as_chunks::<2>();
                out.values
                    .extend(pairs.iter().map(|v| i16::from_le_bytes(*v) as f32 * scale));
            }
            BinaryType::F32 => {
                for (i, v) in body.chunks_exact(4).enumerate() {
                    let v = f32::from_le_bytes([v[0], v[1], v[2], v[3]]);
                    if !v.is_finite() {
                        return Err(DecodeError::NonFinite {
                            field: self.channels[i % channels].clone(),
                        });
                    }
                    out.values.push(v);
                }
            }
        }
        match t0 {
            Some((t0, dt)) => out
                .t_ms
                .extend((0..count).map(|i| Some(t0 + dt * i as f64))),
            None => out.t_ms.extend(std::iter::repeat_n(None, count)),
        }
        Ok(())
    }

    fn decode_csv(&self, text: &str, out: &mut Samples) -> Result<(), DecodeError> {
        let channels = self.channels.len();
        let mut count = 0;
        for (line_no, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            count += 1;
            self.check_count(count)?;
            let fields = line.split(',').count();
            let has_time = if fields == channels + 1 {
                true
            } else if fields == channels {
                false
            } else {
                return Err(DecodeError::FieldCount {
                    line: line_no + 1,
                    expected: channels,
                    got: fields,
                });
            };
            let mut fields = line.split(',');
            let t = if has_time {
                Some(csv_number(fields.next().unwrap_or_default(), "t")?)
            } else {
                None
            };
            for (field, name) in fields.zip(&self.channels) {
                out.values.push(csv_number(field, name)? as f32);
            }
            out.t_ms.push(t);
        }
        Ok(())
    }
}

fn utf8(payload: &[u8]) -> Result<&str, DecodeError> {
    std::str::from_utf8(payload).map_err(|_| DecodeError::NotUtf8)
}

fn csv_number(text: &str, field: &str) -> Result<f64, DecodeError> {
    let number: f64 = text.trim().parse().map_err(|_| DecodeError::NotANumber {
        field: field.to_string(),
    })?;
    finite(number, field)
}

fn finite(number: f64, field: &str) -> Result<f64, DecodeError> {
    // f32 is what the model sees: a value that overflows it is as bad as inf.
    if number.is_finite() && (number as f32).is_finite() {
        Ok(number)
    } else {
        Err(DecodeError::NonFinite {
            field: field.to_string(),
        })
    }
}

/// How many samples a JSON payload holds, from its bracket structure alone
/// (no parse, no allocation): a sample object is one, a batch object as
/// many as the arrays inside its arrays, an array as many objects as it
/// holds. For rates only: a malformed payload is judged by [`Decoder`].
pub fn json_sample_count(payload: &[u8]) -> usize {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    let (mut top, mut count) = (0u8, 0usize);
    for &byte in payload {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                if depth == 0 {
                    top = byte;
                } else if (top == b'{' && byte == b'[' && depth == 2)
                    || (top == b'[' && byte == b'{' && depth == 1)
                {
                    count += 1;
                }
                depth += 1;
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    match top {
        b'{' => count.max(1),
        b'[' => count,
        _ => 0,
    }
}

/// The device id a JSON payload names in `field`: a string or integer
/// of a sample object, a batch object, or the first sample of an array.
/// Only that field's value is kept while the payload is parsed.
pub fn json_device_field(payload: &[u8], field: &str) -> Result<String, DeviceFieldError> {
    Decoder::device_field(payload, field)
}

/// A payload of `count` samples against `input.max_samples_per_message`.
pub(crate) fn check_count(count: usize, limit: usize) -> Result<(), DecodeError> {
    if count > limit {
        Err(DecodeError::TooManySamples { got: count, limit })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder() -> Decoder {
        Decoder::new(vec!["ax".into(), "ay".into(), "az".into()], 1024, 4)
    }

    fn decode(format: Format, payload: &str) -> Result<Samples, DecodeError> {
        let mut out = Samples::default();
        decoder()
            .decode(format, payload.as_bytes(), &mut out)
            .map(|_| out)
    }

    #[test]
    fn json_sample_with_and_without_time() {
        let s = decode(
            Format::Json,
            r#"{"t": 20, "ax": 1, "ay": 2.5, "az": -3, "extra": "x"}"#,
        )
        .unwrap();
        assert_eq!(s.t_ms, vec![Some(20.0)]);
        assert_eq!(s.values, vec![1.0, 2.5, -3.0]);
        let s = decode(Format::Json, r#"{"az": 3, "ay": 2, "ax": 1}"#).unwrap();
        assert_eq!(s.t_ms, vec![None]);
        assert_eq!(
            s.values,
            vec![1.0, 2.0, 3.0],
            "values follow the configured channel order"
        );
    }

    #[test]
    fn json_batch_spaces_timestamps() {
        let s = decode(
            Format::Json,
            r#"{"t0": 100, "interval_ms": 20, "values": [[1,2,3],[4,5,6]]}"#,
        )
        .unwrap();
        assert_eq!(s.t_ms, vec![Some(100.0), Some(120.0)]);
        assert_eq!(s.values, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let s = decode(Format::Json, r#"{"values": [[1,2,3]]}"#).unwrap();
        assert_eq!(s.t_ms, vec![None]);
    }

    #[test]
    fn device_ids_from_a_payload_field() {
        let id = |p: &str| json_device_field(p.as_bytes(), "id");
        assert_eq!(id(r#"{"id": "w1", "ax": 1}"#).unwrap(), "w1");
        assert_eq!(id(r#"{"id": 7, "values": [[1,2,3]]}"#).unwrap(), "7");
        assert_eq!(
            id(r#"[{"id": "w2", "ax": 1}, {"id": "w2"}]"#).unwrap(),
            "w2"
        );
        assert!(id(r#"{"ax": 1}"#)
            .unwrap_err()
            .0
            .contains("no device field"));
        assert!(id(r#"{"id": ""}"#).is_err());
        assert!(id(r#"{"id": 1.5}"#).is_err());
        assert!(id("[]").is_err());
        assert!(id("{").is_err());
    }

    #[test]
    fn json_array_of_samples() {
        let s = decode(
            Format::Json,
            r#"[{"t":1,"ax":1,"ay":2,"az":3},{"t":2,"ax":4,"ay":5,"az":6}]"#,
        )
        .unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s.values[3], 4.0);
    }

    #[test]
    fn csv_lines_with_and_without_time() {
        let s = decode(Format::Csv, "0,1,2,3\n20,4,5,6\n").unwrap();
        assert_eq!(s.t_ms, vec![Some(0.0), Some(20.0)]);
        let s = decode(Format::Csv, " 1, 2 ,3 \r\n").unwrap();
        assert_eq!(s.t_ms, vec![None]);
        assert_eq!(s.values, vec![1.0, 2.0, 3.0]);
    }

    #[test]
    fn malformed_payloads_have_reasons() {
        let cases: &[(Format, &[u8], &str)] = &[
            (Format::Json, b"{\"ax\": 1", "syntax"),
            (Format::Json, b"42", "shape"),
            (Format::Json, b"{\"ax\": 1, \"ay\": 2}", "missing_channel"),
            (
                Format::Json,
                b"{\"ax\": \"1\", \"ay\": 2, \"az\": 3}",
                "not_a_number",
            ),
            (
                Format::Json,
                b"{\"ax\": 1e300, \"ay\": 2, \"az\": 3}",
                "non_finite",
            ),
            (Format::Json, b"{\"values\": [[1,2]]}", "field_count"),
            (
                Format::Json,
                b"{\"t0\": 1, \"values\": [[1,2,3]]}",
                "bad_interval",
            ),
            (
                Format::Json,
                b"{\"t0\": 1, \"interval_ms\": 0, \"values\": [[1,2,3]]}",
                "bad_interval",
            ),
            (Format::Json, b"{\"values\": []}", "empty"),
            (
                Format::Json,
                b"{\"values\": [[1,2,3],[1,2,3],[1,2,3],[1,2,3],[1,2,3]]}",
                "too_many_samples",
            ),
            (Format::Json, b"\xff\xfe", "not_utf8"),
            (Format::Csv, b"1,2", "field_count"),
            (Format::Csv, b"1,x,3", "not_a_number"),
            (Format::Csv, b"1,NaN,3", "non_finite"),
            (Format::Csv, b"1,inf,3", "non_finite"),
            (Format::Csv, b"\n\n", "empty"),
            (
                Format::Csv,
                b"1,2,3\n1,2,3\n1,2,3\n1,2,3\n1,2,3",
                "too_many_samples",
            ),
        ];
        for (format, payload, reason) in cases {
            let mut out = Samples::default();
            let err = decoder().decode(*format, payload, &mut out).unwrap_err();
            assert_eq!(
                err.reason(),
                *reason,
                "{:?} gave {err}",
                String::from_utf8_lossy(payload)
            );
            assert!(out.is_empty(), "a failed payload leaves no partial samples");
            assert!(DecodeError::ALL_REASONS.contains(&err.reason()));
        }
        let err = decoder()
            .decode(Format::Csv, &[b'1'; 2000], &mut Samples::default())
            .unwrap_err();
        assert_eq!(err.reason(), "too_large");
    }

    fn binary(
        value_type: BinaryType,
        channels: u16,
        samples: u32,
        t0: f64,
        body: &[u8],
    ) -> Vec<u8> {
        let mut bytes = BinaryHeader {
            value_type,
            channels,
            samples,
            t0_ms: t0,
            interval_ms: 20.0,
        }
        .to_bytes()
        .to_vec();
        bytes.extend_from_slice(body);
        bytes
    }

    #[test]
    fn binary_int16_is_scaled_and_timed() {
        let body: Vec<u8> = [1i16, -2, 4096, 0, 0, -4096]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let payload = binary(BinaryType::I16, 3, 2, 1000.0, &body);
        assert_eq!(&payload[..4], b"AWB1");
        assert_eq!(payload.len(), 24 + 12);
        let mut out = Samples::default();
        decoder()
            .with_i16_scale(1.0 / 4096.0)
            .decode(Format::Binary, &payload, &mut out)
            .unwrap();
        assert_eq!(out.t_ms, vec![Some(1000.0), Some(1020.0)]);
        assert_eq!(
            out.values,
            vec![1.0 / 4096.0, -2.0 / 4096.0, 1.0, 0.0, 0.0, -1.0]
        );
    }

    #[test]
    fn binary_float32_without_time() {
        let body: Vec<u8> = [0.5f32, 1.5, -2.5]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let mut out = Samples::default();
        decoder()
            .decode(
                Format::Binary,
                &binary(BinaryType::F32, 3, 1, f64::NAN, &body),
                &mut out,
            )
            .unwrap();
        assert_eq!(out.t_ms, vec![None]);
        assert_eq!(out.values, vec![0.5, 1.5, -2.5]);
    }

    #[test]
    fn malformed_binary_payloads_have_reasons() {
        let f32s = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|v| v.to_le_bytes()).collect() };
        let good = binary(BinaryType::F32, 3, 1, 0.0, &f32s(&[1.0, 2.0, 3.0]));
        let mut bad_magic = good.clone();
        bad_magic[0] = b'X';
        let mut bad_version = good.clone();
        bad_version[4] = 2;
        let mut bad_type = good.clone();
        bad_type[5] = 9;
        let mut bad_interval = good.clone();
        bad_interval[20..24].copy_from_slice(&0f32.to_le_bytes());
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (good[..10].to_vec(), "length"),
            (good[..good.len() - 1].to_vec(), "length"),
            ([good.clone(), vec![0]].concat(), "length"),
            (bad_magic, "bad_magic"),
            (bad_version, "bad_version"),
            (bad_type, "bad_value_type"),
            (bad_interval, "bad_interval"),
            (
                binary(BinaryType::F32, 2, 1, 0.0, &f32s(&[1.0, 2.0])),
                "channel_count",
            ),
            (
                binary(BinaryType::F32, 3, 1, 0.0, &f32s(&[1.0, f32::NAN, 3.0])),
                "non_finite",
            ),
            (
                binary(
                    BinaryType::F32,
                    3,
                    1,
                    f64::INFINITY,
                    &f32s(&[1.0, 2.0, 3.0]),
                ),
                "non_finite",
            ),
            (
                binary(BinaryType::I16, 3, 5, 0.0, &[0; 30]),
                "too_many_samples",
            ),
            (
                binary(BinaryType::I16, 3, u32::MAX, 0.0, &[]),
                "too_many_samples",
            ),
            (binary(BinaryType::I16, 3, 0, 0.0, &[]), "empty"),
        ];
        for (payload, reason) in cases {
            let mut out = Samples::default();
            let err = decoder()
                .decode(Format::Binary, &payload, &mut out)
                .unwrap_err();
            assert_eq!(err.reason(), reason, "{err}");
            assert!(out.is_empty());
            assert!(DecodeError::ALL_REASONS.contains(&err.reason()));
        }
        // Every prefix and single-byte corruption: an error or a whole payload.
        for end in 0..good.len() {
            let _ = decoder().decode(Format::Binary, &good[..end], &mut Samples::default());
        }
        for i in 0..good.len() {
            for b in [0u8, 1, 2, 0x7f, 0xff] {
                let mut corrupted = good.clone();
                corrupted[i] = b;
                let mut out = Samples::default();
                if decoder()
                    .decode(Format::Binary, &corrupted, &mut out)
                    .is_ok()
                {
                    assert_eq!(out.values.len(), out.len() * 3);
                }
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz: every prefix and every single-byte
        // corruption of valid payloads.
        let seeds = [
            r#"{"t0": 100, "interval_ms": 20, "values": [[1,2,3],[4,5,6]]}"#,
            r#"{"t": 20, "ax": 1, "ay": 2.5, "az": -3}"#,
            "0,1,2,3\n20,4,5,6\n",
        ];
        let mut out = Samples::default();
        for seed in seeds {
            let bytes = seed.as_bytes();
            for format in [Format::Json, Format::Csv] {
                for end in 0..bytes.len() {
                    let _ = decoder().decode(format, &bytes[..end], &mut out);
                }
                for i in 0..bytes.len() {
                    for b in [0u8, b'"', b',', b'[', b'}', b'-', b'e', 0xff] {
                        let mut corrupted = bytes.to_vec();
                        corrupted[i] = b;
                        if decoder().decode(format, &corrupted, &mut out).is_ok() {
                            assert_eq!(out.values.len(), out.len() * 3);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn json_sample_counts_agree_with_the_decoder() {
        let decoder = Decoder::new(vec!["ax".into(), "ay".into(), "az".into()], 1 << 20, 4096);
        let mut samples = Samples::default();
        for payload in [
            r#"{"t": 1000.0, "ax": 0.1, "ay": 0.0, "az": 0.98}"#,
            r#"{"t0": 1000.0, "interval_ms": 20.0, "values": [[1, 2, 3], [4, 5, 6], [7, 8, 9]]}"#,
            r#"[{"t": 1, "ax": 1, "ay": 2, "az": 3}, {"t": 2, "ax": "[{", "ay": 2, "az": 3}]"#,
        ] {
            let counted = json_sample_count(payload.as_bytes());
            let decoded = decoder.decode(Format::Json, payload.as_bytes(), &mut samples);
            if decoded.is_ok() {
                assert_eq!(counted, samples.len(), "{payload}");
            } else {
                assert_eq!(counted, 2, "{payload}");
            }
        }
        assert_eq!(json_sample_count(b"not json"), 0);
    }
}
