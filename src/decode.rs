//! Payloads to samples. Pure: no I/O, no clock. Every malformed payload is a
//! typed [`DecodeError`] with a bounded `reason` for metrics; nothing panics.
//!
//! Formats:
//! - JSON sample: `{"t": 1000.0, "ax": 0.1, "ay": 0.0, "az": 0.98}` (`t` in ms, optional);
//! - JSON batch: `{"t0": 1000.0, "interval_ms": 20.0, "values": [[ax, ay, az], ...]}`;
//! - JSON array of samples: `[{"t": ..}, {"t": ..}]`;
//! - CSV lines: `t,ax,ay,az` or `ax,ay,az`, one sample per line.

use serde_json::Value;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A JSON sample, batch or array of samples, told apart by shape.
    Json,
    Csv,
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
        }
    }

    pub const ALL_REASONS: [&'static str; 11] = [
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
    ];
}

#[derive(Debug, Clone)]
pub struct Decoder {
    channels: Vec<String>,
    max_payload_bytes: usize,
    max_samples: usize,
}

impl Decoder {
    pub fn new(channels: Vec<String>, max_payload_bytes: usize, max_samples: usize) -> Self {
        Self {
            channels,
            max_payload_bytes,
            max_samples,
        }
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
        out.clear();
        let result = self.decode_into(format, payload, out);
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
    ) -> Result<(), DecodeError> {
        if payload.len() > self.max_payload_bytes {
            return Err(DecodeError::TooLarge {
                bytes: payload.len(),
                limit: self.max_payload_bytes,
            });
        }
        let text = std::str::from_utf8(payload).map_err(|_| DecodeError::NotUtf8)?;
        match format {
            Format::Json => self.decode_json(text, out)?,
            Format::Csv => self.decode_csv(text, out)?,
        }
        if out.is_empty() {
            return Err(DecodeError::Empty);
        }
        Ok(())
    }

    fn check_count(&self, count: usize) -> Result<(), DecodeError> {
        if count > self.max_samples {
            Err(DecodeError::TooManySamples {
                got: count,
                limit: self.max_samples,
            })
        } else {
            Ok(())
        }
    }

    fn decode_json(&self, text: &str, out: &mut Samples) -> Result<(), DecodeError> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| DecodeError::Syntax(e.to_string()))?;
        match value {
            Value::Object(ref object) if object.contains_key("values") => {
                self.json_batch(object, out)
            }
            Value::Object(ref object) => self.json_sample(object, out),
            Value::Array(items) => {
                self.check_count(items.len())?;
                for item in &items {
                    match item {
                        Value::Object(object) => self.json_sample(object, out)?,
                        _ => return Err(DecodeError::Shape),
                    }
                }
                Ok(())
            }
            _ => Err(DecodeError::Shape),
        }
    }

    fn json_sample(
        &self,
        object: &serde_json::Map<String, Value>,
        out: &mut Samples,
    ) -> Result<(), DecodeError> {
        let t = match object.get("t") {
            None | Some(Value::Null) => None,
            Some(v) => Some(json_number(v, "t")?),
        };
        for name in &self.channels {
            let v = object
                .get(name)
                .ok_or_else(|| DecodeError::MissingChannel(name.clone()))?;
            out.values.push(json_number(v, name)? as f32);
        }
        out.t_ms.push(t);
        Ok(())
    }

    fn json_batch(
        &self,
        object: &serde_json::Map<String, Value>,
        out: &mut Samples,
    ) -> Result<(), DecodeError> {
        let rows = match object.get("values") {
            Some(Value::Array(rows)) => rows,
            _ => return Err(DecodeError::Shape),
        };
        self.check_count(rows.len())?;
        let t0 = match object.get("t0") {
            None | Some(Value::Null) => None,
            Some(v) => Some(json_number(v, "t0")?),
        };
        let interval = match (t0, object.get("interval_ms")) {
            (None, None | Some(Value::Null)) => None,
            (Some(_), None | Some(Value::Null)) => return Err(DecodeError::BadInterval),
            (_, Some(v)) => {
                let interval = json_number(v, "interval_ms")?;
                if interval <= 0.0 {
                    return Err(DecodeError::BadInterval);
                }
                Some(interval)
            }
        };
        let channels = self.channels.len();
        for (i, row) in rows.iter().enumerate() {
            let Value::Array(row) = row else {
                return Err(DecodeError::Shape);
            };
            if row.len() != channels {
                return Err(DecodeError::FieldCount {
                    line: i + 1,
                    expected: channels,
                    got: row.len(),
                });
            }
            for (v, name) in row.iter().zip(&self.channels) {
                out.values.push(json_number(v, name)? as f32);
            }
            out.t_ms
                .push(t0.zip(interval).map(|(t0, dt)| t0 + dt * i as f64));
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

fn json_number(value: &Value, field: &str) -> Result<f64, DecodeError> {
    let number = value.as_f64().ok_or_else(|| DecodeError::NotANumber {
        field: field.to_string(),
    })?;
    finite(number, field)
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
}
