//! The common JSON batch, `{"t0": .., "interval_ms": .., "values": [[..],
//! ..]}`, read by a plain scanner. The serde path ([`super::json`]) spends
//! most of a sample's time in its visitors, not in the numbers; this one
//! reads the bytes once. It takes only what it can read exactly as the
//! serde path would: the keys `t0`, `interval_ms` and `values` (each at
//! most once), rows of exactly one number per channel, numbers without an
//! exponent and with at most 15 digits, at most `max_samples` rows. For
//! anything else it answers `None` and the serde path decodes the payload,
//! so every error (and its precedence) stays that path's.
//!
//! Why the numbers are the same: a number of at most 15 digits is a
//! significand below 2^53 over at most 10^15, both exact in an f64, so the
//! one division is correctly rounded, which is what serde_json's
//! `f64_from_parts` (and its `float_roundtrip` variant) yields for it.

use super::json::{BatchFields, Field};
use super::{DecodeError, Decoder, Samples};

/// Exact powers of ten (up to 10^15 is all a number here needs).
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// The most digits a number may have here.
const MAX_DIGITS: u32 = 15;

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Scanner<'_> {
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    /// The next byte after whitespace, taken.
    fn next(&mut self) -> Option<u8> {
        self.skip_ws();
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.bytes.get(self.at).copied()
    }

    /// A key without escapes (the only ones taken are plain words).
    fn key(&mut self) -> Option<&[u8]> {
        if self.next()? != b'"' {
            return None;
        }
        let start = self.at;
        loop {
            match *self.bytes.get(self.at)? {
                b'"' => break,
                b'\\' | 0..=0x1f => return None,
                _ => self.at += 1,
            }
        }
        let key = &self.bytes[start..self.at];
        self.at += 1;
        (self.next()? == b':').then_some(key)
    }

    /// A JSON number as serde_json reads it, or None (another value, an
    /// exponent, too many digits, or not a number at all).
    fn number(&mut self) -> Option<f64> {
        self.skip_ws();
        let b = self.bytes;
        let negative = b.get(self.at) == Some(&b'-');
        if negative {
            self.at += 1;
        }
        let mut significand = 0u64;
        let mut digits = 0u32;
        match *b.get(self.at)? {
            b'0' => {
                self.at += 1;
                digits = 1;
                // JSON has no leading zeros: serde_json refuses them.
                if b.get(self.at).is_some_and(u8::is_ascii_digit) {
                    return None;
                }
            }
            b'1'..=b'9' => {
                while let Some(&c @ b'0'..=b'9') = b.get(self.at) {
                    significand = significand * 10 + u64::from(c - b'0');
                    digits += 1;
                    self.at += 1;
                    if digits > MAX_DIGITS {
                        return None;
                    }
                }
            }
            _ => return None,
        }
        let mut fraction = 0usize;
        if b.get(self.at) == Some(&b'.') {
            self.at += 1;
            while let Some(&c @ b'0'..=b'9') = b.get(self.at) {
                significand = significand * 10 + u64::from(c - b'0');
                digits += 1;
                fraction += 1;
                self.at += 1;
                if digits > MAX_DIGITS {
                    return None;
                }
            }
            if fraction == 0 {
                return None;
            }
        }
        if matches!(b.get(self.at), Some(b'e' | b'E')) {
            return None;
        }
        // An integer is u64 or i64 to serde_json, then `as f64`: the same
        // below 2^53 (and "-0" is -0.0 there too).
        let magnitude = significand as f64 / POW10[fraction];
        Some(if negative { -magnitude } else { magnitude })
    }
}

impl Decoder {
    /// Decodes `text` when it is a plain batch; None leaves the payload to
    /// the serde path ([`Decoder::decode_json`]; `out` is then left
    /// cleared).
    pub(super) fn decode_plain_batch(
        &self,
        text: &str,
        out: &mut Samples,
    ) -> Option<Result<(), DecodeError>> {
        let found = scan(text.as_bytes(), self.channels.len(), self.max_samples, out);
        if found.is_none() {
            out.clear();
        }
        let (t0, interval, count) = found?;
        Some(
            BatchFields {
                t0: t0.map(Field::Number),
                interval: interval.map(Field::Number),
                count,
                first_error: None,
            }
            .finish(self.max_samples, out),
        )
    }
}

/// The batch's `t0` and `interval_ms` (absent: None) and its row count;
/// the values are in `out.values`.
fn scan(
    bytes: &[u8],
    channels: usize,
    max_samples: usize,
    out: &mut Samples,
) -> Option<(Option<f64>, Option<f64>, usize)> {
    let mut s = Scanner { bytes, at: 0 };
    if s.next()? != b'{' {
        return None;
    }
    let (mut t0, mut interval, mut count) = (None, None, None);
    loop {
        match s.key()? {
            b"t0" if t0.is_none() => t0 = Some(s.number()?),
            b"interval_ms" if interval.is_none() => interval = Some(s.number()?),
            b"values" if count.is_none() => count = Some(rows(&mut s, channels, max_samples, out)?),
            _ => return None,
        }
        match s.next()? {
            b',' => continue,
            b'}' => break,
            _ => return None,
        }
    }
    s.skip_ws();
    if s.at != bytes.len() {
        return None;
    }
    Some((t0, interval, count?))
}

/// `[[v, ..], ..]`: the rows' values into `out.values`; their count.
fn rows(s: &mut Scanner, channels: usize, max_samples: usize, out: &mut Samples) -> Option<usize> {
    if s.next()? != b'[' {
        return None;
    }
    let mut count = 0;
    if s.peek()? == b']' {
        s.at += 1;
        return Some(0);
    }
    loop {
        if count == max_samples || s.next()? != b'[' {
            return None;
        }
        for i in 0..channels {
            if i > 0 && s.next()? != b',' {
                return None;
            }
            out.values.push(s.number()? as f32);
        }
        if s.next()? != b']' {
            return None;
        }
        count += 1;
        match s.next()? {
            b',' => continue,
            b']' => return Some(count),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Decoder;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn decoder(max_samples: usize) -> Decoder {
        Decoder::new(
            vec!["ax".into(), "ay".into(), "az".into()],
            1 << 20,
            max_samples,
        )
    }

    fn bits(samples: &Samples) -> (Vec<Option<u64>>, Vec<u32>) {
        (
            samples.t_ms.iter().map(|t| t.map(f64::to_bits)).collect(),
            samples.values.iter().map(|v| v.to_bits()).collect(),
        )
    }

    /// The decoder (scanner first) answers as the serde path alone does,
    /// bit for bit; returns whether the scanner took the payload.
    fn check(decoder: &Decoder, text: &str) -> bool {
        let mut by_serde = Samples::default();
        let serde = decoder.decode_json(text, &mut by_serde).and_then(|()| {
            // `decode` refuses an empty result, as it does for both.
            if by_serde.is_empty() {
                Err(DecodeError::Empty)
            } else {
                Ok(())
            }
        });
        let mut by_decoder = Samples::default();
        let decoded = decoder.decode(
            crate::decode::Format::Json,
            text.as_bytes(),
            &mut by_decoder,
        );
        assert_eq!(serde, decoded, "{text}");
        if decoded.is_ok() {
            assert_eq!(bits(&by_serde), bits(&by_decoder), "{text}");
        }
        decoder
            .decode_plain_batch(text, &mut Samples::default())
            .is_some()
    }

    fn number(rng: &mut ChaCha8Rng) -> String {
        let digits = rng.random_range(1..=15usize);
        let fraction = rng.random_range(0..digits);
        let mut s: String = (0..digits)
            .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
            .collect();
        // No leading zeros before the point (JSON).
        let int_len = digits - fraction;
        let int = s[..int_len].trim_start_matches('0');
        let int = if int.is_empty() { "0" } else { int };
        s = if fraction > 0 {
            format!("{int}.{}", &s[int_len..])
        } else {
            int.to_string()
        };
        if rng.random_bool(0.5) {
            s.insert(0, '-');
        }
        s
    }

    /// Random plain batches: the scanner takes each, and reads it exactly
    /// as serde_json does (values and timestamps bit for bit).
    #[test]
    fn reads_plain_batches_as_serde_json_does() {
        let mut rng = ChaCha8Rng::seed_from_u64(15);
        let decoder = decoder(4096);
        for round in 0..3000 {
            let rows: Vec<String> = (0..rng.random_range(1..20))
                .map(|_| {
                    let v: Vec<String> = (0..3).map(|_| number(&mut rng)).collect();
                    let sep = if round % 3 == 0 { ", " } else { "," };
                    format!("[{}]", v.join(sep))
                })
                .collect();
            let t0 = format!(
                "{}",
                rng.random_range(0..2_000_000_000_000u64) as f64 / 10.0
            );
            let interval = ["20", "20.0", "0.5", "1000", "3.333333"][round % 5];
            let parts = [
                format!("\"t0\":{t0}"),
                format!("\"interval_ms\":{interval}"),
                format!("\"values\":[{}]", rows.join(",")),
            ];
            let text = match round % 4 {
                0 => format!("{{{},{},{}}}", parts[0], parts[1], parts[2]),
                1 => format!("{{{},{},{}}}", parts[2], parts[0], parts[1]),
                2 => format!(" {{ {} ,\n\t{} , {} }}\r\n", parts[1], parts[2], parts[0]),
                _ => format!("{{{}}}", parts[2]),
            };
            assert!(check(&decoder, &text), "the scanner takes {text}");
        }
    }

    #[test]
    fn signed_zeros_and_edges_match() {
        let decoder = decoder(4096);
        for v in [
            "0",
            "-0",
            "0.0",
            "-0.0",
            "-0.000",
            "1",
            "-1",
            "999999999999999",
            "-999999999999999",
            "0.000000000000001",
            "0.1",
            "0.2",
            "0.3",
            "123456.789012345",
            "16777217",
            "3.4028235",
            "0.30000000000000004",
        ] {
            let text = format!("{{\"t0\":0,\"interval_ms\":1,\"values\":[[{v},{v},{v}]]}}");
            check(&decoder, &text);
        }
    }

    /// What the scanner leaves to serde_json, and the errors it finds
    /// itself: the decoder answers as the serde path does.
    #[test]
    // One spelling for every payload of the list, placeholders or not.
    #[allow(clippy::useless_format)]
    fn leaves_everything_else_to_serde_json() {
        let decoder = decoder(4);
        let row = "[0.1,0.2,0.3]";
        let left = [
            format!("{{\"t0\":1e3,\"interval_ms\":20,\"values\":[{row}]}}"),
            format!("{{\"t0\":0,\"interval_ms\":20,\"values\":[[1E2,0,0]]}}"),
            format!("{{\"t0\":0,\"interval_ms\":20,\"values\":[[1234567890123456,0,0]]}}"),
            format!("{{\"t0\":0,\"interval_ms\":20,\"values\":[[0.1234567890123456,0,0]]}}"),
            format!("{{\"t0\":null,\"values\":[{row}]}}"),
            format!("{{\"t0\":0,\"interval_ms\":null,\"values\":[{row}]}}"),
            format!("{{\"t0\":0,\"interval_ms\":20,\"values\":[{row}],\"id\":\"w1\"}}"),
            format!("{{\"t0\":0,\"t0\":5,\"interval_ms\":20,\"values\":[{row}]}}"),
            format!("{{\"values\":[{row}],\"values\":[{row},{row}]}}"),
            format!("{{\"t0\":0,\"interval_ms\":20,\"values\":[{row}]}} x"),
            format!("{{\"t0\":0,\"interval_ms\":20,\"values\":[{row}]}}{{}}"),
            format!("{{\"t0\":01,\"interval_ms\":20,\"values\":[{row}]}}"),
            format!("{{\"t0\":1.,\"interval_ms\":20,\"values\":[{row}]}}"),
            format!("{{\"t0\":.5,\"interval_ms\":20,\"values\":[{row}]}}"),
            format!("{{\"t0\":+5,\"interval_ms\":20,\"values\":[{row}]}}"),
            format!("{{\"t0\":0,\"interval_ms\":20,\"values\":[[0.1,0.2]]}}"),
            format!("{{\"t0\":0,\"interval_ms\":20,\"values\":[[0.1,0.2,0.3,0.4]]}}"),
            format!("{{\"t0\":0,\"interval_ms\":20,\"values\":[[0.1,null,0.3]]}}"),
            format!("{{\"t0\":0,\"interval_ms\":20,\"values\":[[0.1,\"0.2\",0.3]]}}"),
            format!("{{\"t0\":0,\"interval_ms\":20,\"values\":[{row},]}}"),
            format!("{{\"t0\":0,\"interval_ms\":20,\"values\":[{row}],}}"),
            format!("{{\"t\\u0030\":0,\"interval_ms\":20,\"values\":[{row}]}}"),
            format!("{{\"t0\":0,\"interval_ms\":20,\"values\":{row}}}"),
            format!("{{\"t0\":0,\"interval_ms\":20,\"values\":[{row},{row},{row},{row},{row}]}}"),
            format!("{{\"t0\":0,\"interval_ms\":20,\"values\":[{row}]"),
            format!("[{{\"t\":0,\"ax\":1,\"ay\":2,\"az\":3}}]"),
            "{\"t\":0,\"ax\":1,\"ay\":2,\"az\":3}".to_string(),
            "{}".to_string(),
            String::new(),
        ];
        for text in &left {
            assert!(!check(&decoder, text), "left to serde_json: {text}");
        }
        // Read by the scanner, refused as the serde path refuses them.
        let refused = [
            (format!("{{\"t0\":0,\"values\":[{row}]}}"), "bad_interval"),
            (
                format!("{{\"t0\":0,\"interval_ms\":0,\"values\":[{row}]}}"),
                "bad_interval",
            ),
            (
                format!("{{\"t0\":0,\"interval_ms\":-20,\"values\":[{row}]}}"),
                "bad_interval",
            ),
            (
                "{\"t0\":0,\"interval_ms\":20,\"values\":[]}".to_string(),
                "empty",
            ),
        ];
        for (text, reason) in &refused {
            assert!(check(&decoder, text), "the scanner takes {text}");
            let mut out = Samples::default();
            let error = decoder
                .decode(crate::decode::Format::Json, text.as_bytes(), &mut out)
                .expect_err(text);
            assert_eq!(error.reason(), *reason, "{text}");
            assert!(out.is_empty());
        }
        // Untimed rows and a full batch of max_samples are the scanner's.
        assert!(check(&decoder, &format!("{{\"values\":[{row},{row}]}}")));
        assert!(check(
            &decoder,
            &format!("{{\"t0\":5,\"interval_ms\":20,\"values\":[{row},{row},{row},{row}]}}")
        ));
    }
}
