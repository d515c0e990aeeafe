//! The common JSON batch, `{"t0": .., "interval_ms": .., "values": [[..],
//! ..]}`, read by a plain scanner. The serde path ([`super::json`]) spends
//! most of a sample's time in its visitors, not in the numbers; this one
//! reads the bytes once. It takes only what it can read exactly as the
//! serde path would: the keys `t0`, `interval_ms` and `values` (each at
//! most once), rows of exactly one number per channel, numbers serde_json
//! reads to a finite value (of any length, with or without an exponent:
//! [`super::json_number`] reads them with serde_json's own algorithm), and
//! at most `max_samples` rows. For anything else, a value too large for an
//! f32 included, it answers `None` and the serde path decodes the payload,
//! so every error (and its precedence) stays that path's.

use super::json::{BatchFields, Field};
use super::{DecodeError, Decoder, Samples};

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

    /// A JSON number as serde_json reads it, or None (another value, or
    /// one serde_json refuses).
    fn number(&mut self) -> Option<f64> {
        self.skip_ws();
        super::json_number::number(self.bytes, &mut self.at)
    }
}

impl Decoder {
    /// Decodes `payload` when it is a plain batch (ASCII, then); None leaves it to
    /// the serde path ([`Decoder::decode_json`]; `out` is then left
    /// cleared).
    pub(super) fn decode_plain_batch(
        &self,
        payload: &[u8],
        out: &mut Samples,
    ) -> Option<Result<(), DecodeError>> {
        let found = scan(payload, self.channels.len(), self.max_samples, out);
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
            .decode_plain_batch(text.as_bytes(), &mut Samples::default())
            .is_some()
    }

    /// The scanner runs before any UTF-8 check: a byte that is not UTF-8
    /// anywhere in a batch still gets `NotUtf8`, whichever path decides.
    #[test]
    fn a_batch_with_a_byte_that_is_not_utf8_is_refused_as_such() {
        let decoder = decoder(4096);
        let payloads: [&[u8]; 4] = [
            b"{\"values\":[[1,2,3]],\"\xff\":1}",
            b"{\"values\":[[1,2,3]]}\xff",
            b"{\"val\xc3ues\":[[1,2,3]]}",
            b"{\"values\":[[1,2,3]],\"t0\":\"\xe2\x82\"}",
        ];
        for payload in payloads {
            let mut out = Samples::default();
            assert!(decoder.decode_plain_batch(payload, &mut out).is_none());
            assert_eq!(
                decoder.decode(crate::decode::Format::Json, payload, &mut out),
                Err(DecodeError::NotUtf8),
                "{payload:?}"
            );
        }
        let mut out = Samples::default();
        let plain = b"{\"values\":[[1,2,3]]}";
        assert!(matches!(
            decoder.decode_plain_batch(plain, &mut out),
            Some(Ok(()))
        ));
    }

    fn number(rng: &mut ChaCha8Rng) -> String {
        let digits = rng.random_range(1..=25usize);
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
        // Within an f32's range: at most 25 digits, times at most 1e5.
        if rng.random_bool(0.3) {
            let e = ["e", "E"][rng.random_range(0..2)];
            let sign = ["", "+", "-"][rng.random_range(0..3)];
            let exp = rng.random_range(0..=5);
            s.push_str(&format!("{e}{sign}{exp}"));
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
            // 17 significant digits (Python's json.dumps), exponents,
            // subnormals, 19 digits and more, signed zeros.
            "-1.0836080312728882",
            "1.1678479059585323",
            "0.012345678901234568",
            "1.5e-05",
            "-2.5E+3",
            "1e0",
            "0e0",
            "-0e-5",
            "1.401298464324817e-45",
            "7e-46",
            "5e-324",
            "-2.2250738585072014e-308",
            "3.4028234663852886e+38",
            "18446744073709551616",
            "1844674407370955161.6",
            "0.18446744073709551616",
            "12345678901234567890123456789e-28",
            "-0.0000000000000000000000000001234567890123456789e28",
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
            assert!(check(&decoder, &text), "the scanner takes {text}");
            let text = format!("{{\"t0\":{v},\"interval_ms\":1,\"values\":[[0,0,0]]}}");
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
            // Numbers serde_json refuses, or whose f32 is infinite.
            format!("{{\"t0\":1e400,\"interval_ms\":20,\"values\":[{row}]}}"),
            format!("{{\"t0\":0,\"interval_ms\":20,\"values\":[[1e39,0,0]]}}"),
            format!("{{\"t0\":0,\"interval_ms\":20,\"values\":[[0,-3.5e38,0]]}}"),
            format!("{{\"t0\":0,\"interval_ms\":20,\"values\":[[0,0,1e]]}}"),
            format!("{{\"t0\":0,\"interval_ms\":20,\"values\":[[0,0,1e99999999999]]}}"),
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
        // Exponents and numbers of any length are the scanner's too.
        for text in [
            format!("{{\"t0\":1e3,\"interval_ms\":20,\"values\":[{row}]}}"),
            format!("{{\"t0\":0,\"interval_ms\":20,\"values\":[[1E2,0,0]]}}"),
            format!("{{\"t0\":0,\"interval_ms\":20,\"values\":[[1234567890123456,0,0]]}}"),
            format!("{{\"t0\":0,\"interval_ms\":20,\"values\":[[0.1234567890123456,0,0]]}}"),
            format!("{{\"t0\":1764720000000.1235,\"interval_ms\":20.000000000000004,\"values\":[{row}]}}"),
        ] {
            assert!(check(&decoder, &text), "the scanner takes {text}");
        }
        // Untimed rows and a full batch of max_samples are the scanner's.
        assert!(check(&decoder, &format!("{{\"values\":[{row},{row}]}}")));
        assert!(check(
            &decoder,
            &format!("{{\"t0\":5,\"interval_ms\":20,\"values\":[{row},{row},{row},{row}]}}")
        ));
    }
}
