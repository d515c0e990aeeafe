//! Byte streams to payloads. A serial port delivers bytes in arbitrary
//! pieces, so each framer keeps its state between reads: bytes go in,
//! whole payloads and framing errors come out. Pure: no I/O, no clock.
//! Nothing here is fatal; bad input is reported and skipped.
//!
//! Text ([`LineFramer`]): one payload per line feed (`\n`, an optional
//! `\r` before it is dropped); blank lines are ignored. A line longer than
//! the limit is reported once and skipped up to the next line feed.
//!
//! Binary ([`BinaryFramer`]), for rates where text is too slow:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 2 | sync `0xA5 0x5A` |
//! | 2 | 2 | payload length `L` in bytes, u16 little-endian |
//! | 4 | L | `L / (2·C)` samples of `C` int16 little-endian values, time-major |
//! | 4+L | 2 | CRC-16/CCITT-FALSE of bytes 2..4+L (length and payload), little-endian |
//!
//! CRC-16/CCITT-FALSE: polynomial 0x1021, initial value 0xFFFF, no
//! reflection, no final XOR (check value 0x29B1 for `123456789`).
//!
//! `L` must be positive, a multiple of `2·C` and at most the configured
//! maximum. After a bad length or CRC the framer looks for the next sync
//! from the byte after the rejected one, so a frame hidden inside garbage
//! or a torn frame is still found.

/// Why bytes were discarded. `reason()` is the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// A text line over the limit (skipped up to its line feed).
    LineTooLong,
    /// A sync whose length field is impossible (zero, not whole samples,
    /// or over the limit).
    BadLength,
    /// A frame whose CRC does not match (corrupted or torn).
    BadCrc,
    /// `bytes` that belonged to no frame, reported before the next good
    /// frame (or once 4 KiB have piled up).
    Garbage { bytes: usize },
    /// `bytes` of an unfinished line or frame when the port went away.
    Truncated { bytes: usize },
}

impl FrameError {
    pub const fn reason(&self) -> &'static str {
        match self {
            FrameError::LineTooLong => "line_too_long",
            FrameError::BadLength => "bad_length",
            FrameError::BadCrc => "bad_crc",
            FrameError::Garbage { .. } => "garbage",
            FrameError::Truncated { .. } => "truncated",
        }
    }

    /// Bytes thrown away, when known.
    pub const fn bytes(&self) -> usize {
        match self {
            FrameError::Garbage { bytes } | FrameError::Truncated { bytes } => *bytes,
            _ => 0,
        }
    }

    pub const ALL_REASONS: [&'static str; 5] = [
        "line_too_long",
        "bad_length",
        "bad_crc",
        "garbage",
        "truncated",
    ];
}

/// What a framer produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framed {
    /// A line (without its line ending) or a binary frame's payload.
    Payload(Vec<u8>),
    Error(FrameError),
}

/// Either framer, as a port is configured.
#[derive(Debug)]
pub enum Framer {
    Lines(LineFramer),
    Binary(BinaryFramer),
}

impl Framer {
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Framed>) {
        match self {
            Framer::Lines(f) => f.feed(bytes, out),
            Framer::Binary(f) => f.feed(bytes, out),
        }
    }

    /// Forgets a partial line or frame (the port went away); reports it.
    pub fn reset(&mut self) -> Option<FrameError> {
        match self {
            Framer::Lines(f) => f.reset(),
            Framer::Binary(f) => f.reset(),
        }
    }
}

#[derive(Debug)]
pub struct LineFramer {
    line: Vec<u8>,
    max: usize,
    /// Inside an over-long line: drop bytes up to the next line feed.
    skipping: bool,
}

impl LineFramer {
    /// `max_line_bytes`: the longest line accepted, without its `\n`.
    pub fn new(max_line_bytes: usize) -> Self {
        Self {
            line: Vec::new(),
            max: max_line_bytes,
            skipping: false,
        }
    }

    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<Framed>) {
        while !bytes.is_empty() {
            let newline = bytes.iter().position(|b| *b == b'\n');
            let piece = &bytes[..newline.unwrap_or(bytes.len())];
            if !self.skipping {
                if self.line.len() + piece.len() > self.max {
                    out.push(Framed::Error(FrameError::LineTooLong));
                    self.line.clear();
                    self.skipping = true;
                } else {
                    self.line.extend_from_slice(piece);
                }
            }
            match newline {
                Some(i) => {
                    if !self.skipping {
                        self.emit(out);
                    }
                    self.skipping = false;
                    self.line.clear();
                    bytes = &bytes[i + 1..];
                }
                None => break,
            }
        }
    }

    fn emit(&mut self, out: &mut Vec<Framed>) {
        let mut line = self.line.as_slice();
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        // Firmware often prints blank lines (and `\r\n` after a reset):
        // they carry nothing, so they are no error either.
        if !line.iter().all(u8::is_ascii_whitespace) {
            out.push(Framed::Payload(line.to_vec()));
        }
    }

    pub fn reset(&mut self) -> Option<FrameError> {
        let pending = self.line.len();
        let was_skipping = std::mem::replace(&mut self.skipping, false);
        self.line.clear();
        (pending > 0 || was_skipping).then_some(FrameError::Truncated { bytes: pending })
    }
}

pub const SYNC: [u8; 2] = [0xA5, 0x5A];
/// Sync and length.
pub const HEADER_LEN: usize = 4;
pub const CRC_LEN: usize = 2;
/// Unreported garbage beyond this is reported without waiting for a
/// good frame, so a port at the wrong baud rate shows up in the metrics.
const GARBAGE_REPORT_BYTES: usize = 4096;

/// CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, not reflected, no xorout).
pub fn crc16_ccitt_false(bytes: &[u8]) -> u16 {
    let mut crc = 0xFFFFu16;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// One binary frame around `payload` (int16 LE samples), as a sender
/// writes it.
pub fn encode_frame(payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(payload.len()).expect("a frame payload fits in u16");
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len() + CRC_LEN);
    frame.extend_from_slice(&SYNC);
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(payload);
    let crc = crc16_ccitt_false(&frame[2..]);
    frame.extend_from_slice(&crc.to_le_bytes());
    frame
}

/// One frame of int16 samples (`values.len()` a multiple of the channels).
pub fn encode_samples(values: &[i16]) -> Vec<u8> {
    let payload: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    encode_frame(&payload)
}

#[derive(Debug)]
pub struct BinaryFramer {
    buf: Vec<u8>,
    /// Bytes of one sample: 2 × channels.
    sample_bytes: usize,
    max_payload: usize,
    /// Bytes discarded since the last report.
    unreported: usize,
}

impl BinaryFramer {
    pub fn new(channels: usize, max_payload_bytes: usize) -> Self {
        assert!(channels >= 1);
        Self {
            buf: Vec::new(),
            sample_bytes: 2 * channels,
            max_payload: max_payload_bytes,
            unreported: 0,
        }
    }

    fn plausible(&self, len: usize) -> bool {
        len > 0 && len.is_multiple_of(self.sample_bytes) && len <= self.max_payload
    }

    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<Framed>) {
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        loop {
            let rest = &self.buf[start..];
            let Some(p) = rest.windows(2).position(|w| w == SYNC) else {
                // Keep a trailing first sync byte: its partner may come next.
                let keep = usize::from(rest.last() == Some(&SYNC[0]));
                self.discard(rest.len() - keep, out);
                start = self.buf.len() - keep;
                break;
            };
            self.discard(p, out);
            let at = start + p;
            let rest = &self.buf[at..];
            if rest.len() < HEADER_LEN {
                start = at;
                break;
            }
            let len = usize::from(u16::from_le_bytes([rest[2], rest[3]]));
            if !self.plausible(len) {
                out.push(Framed::Error(FrameError::BadLength));
                self.discard(1, out);
                start = at + 1;
                continue;
            }
            let total = HEADER_LEN + len + CRC_LEN;
            if rest.len() < total {
                start = at;
                break;
            }
            let crc = u16::from_le_bytes([rest[total - 2], rest[total - 1]]);
            if crc16_ccitt_false(&rest[2..HEADER_LEN + len]) != crc {
                out.push(Framed::Error(FrameError::BadCrc));
                self.discard(1, out);
                start = at + 1;
                continue;
            }
            if self.unreported > 0 {
                out.push(Framed::Error(FrameError::Garbage {
                    bytes: std::mem::take(&mut self.unreported),
                }));
            }
            out.push(Framed::Payload(rest[HEADER_LEN..HEADER_LEN + len].to_vec()));
            start = at + total;
        }
        self.buf.drain(..start);
    }

    fn discard(&mut self, bytes: usize, out: &mut Vec<Framed>) {
        self.unreported += bytes;
        if self.unreported >= GARBAGE_REPORT_BYTES {
            out.push(Framed::Error(FrameError::Garbage {
                bytes: std::mem::take(&mut self.unreported),
            }));
        }
    }

    pub fn reset(&mut self) -> Option<FrameError> {
        let bytes = self.unreported + self.buf.len();
        self.unreported = 0;
        self.buf.clear();
        (bytes > 0).then_some(FrameError::Truncated { bytes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn payloads(out: &[Framed]) -> Vec<Vec<u8>> {
        out.iter()
            .filter_map(|f| match f {
                Framed::Payload(p) => Some(p.clone()),
                Framed::Error(_) => None,
            })
            .collect()
    }

    fn errors(out: &[Framed]) -> Vec<FrameError> {
        out.iter()
            .filter_map(|f| match f {
                Framed::Error(e) => Some(*e),
                Framed::Payload(_) => None,
            })
            .collect()
    }

    /// Feeds `stream` split at `cut` (and whole), plus every single-byte
    /// split, and checks every way gives the same output as one read.
    fn every_split(framer: impl Fn() -> Framer, stream: &[u8]) -> Vec<Framed> {
        let mut whole = framer();
        let mut expected = Vec::new();
        whole.feed(stream, &mut expected);
        for cut in 0..=stream.len() {
            let mut f = framer();
            let mut out = Vec::new();
            f.feed(&stream[..cut], &mut out);
            f.feed(&stream[cut..], &mut out);
            assert_eq!(out, expected, "split at byte {cut}");
        }
        let mut f = framer();
        let mut out = Vec::new();
        for b in stream {
            f.feed(std::slice::from_ref(b), &mut out);
        }
        assert_eq!(out, expected, "byte by byte");
        expected
    }

    fn lines(max: usize) -> impl Fn() -> Framer {
        move || Framer::Lines(LineFramer::new(max))
    }

    fn binary(channels: usize, max: usize) -> impl Fn() -> Framer {
        move || Framer::Binary(BinaryFramer::new(channels, max))
    }

    #[test]
    fn crc_is_ccitt_false() {
        assert_eq!(crc16_ccitt_false(b"123456789"), 0x29B1);
        assert_eq!(crc16_ccitt_false(b""), 0xFFFF);
    }

    #[test]
    fn lines_split_anywhere_give_the_same_payloads() {
        let stream = b"0,1,2,3\r\n\n  \r\n20,4,5,6\n{\"ax\":1,\"ay\":2,\"az\":3}\n1,2,3";
        let out = every_split(lines(64), stream);
        assert_eq!(
            payloads(&out),
            vec![
                b"0,1,2,3".to_vec(),
                b"20,4,5,6".to_vec(),
                br#"{"ax":1,"ay":2,"az":3}"#.to_vec()
            ]
        );
        assert!(errors(&out).is_empty());
        let mut f = LineFramer::new(64);
        f.feed(stream, &mut Vec::new());
        assert_eq!(f.reset(), Some(FrameError::Truncated { bytes: 5 }));
        assert_eq!(f.reset(), None);
    }

    #[test]
    fn an_overlong_line_is_reported_once_and_skipped_to_its_end() {
        let long = "9".repeat(40);
        let stream = format!("1,2,3\n{long}\n4,5,6\n{long}{long}\n7,8,9\n12345678\n");
        let out = every_split(lines(8), stream.as_bytes());
        assert_eq!(
            payloads(&out),
            vec![
                b"1,2,3".to_vec(),
                b"4,5,6".to_vec(),
                b"7,8,9".to_vec(),
                b"12345678".to_vec()
            ]
        );
        assert_eq!(errors(&out), vec![FrameError::LineTooLong; 2]);
    }

    #[test]
    fn a_line_torn_by_a_disconnection_is_reported() {
        let mut f = LineFramer::new(8);
        let mut out = Vec::new();
        f.feed(b"1,2,3\n4,5", &mut out);
        assert_eq!(f.reset(), Some(FrameError::Truncated { bytes: 3 }));
        f.feed(b",6\n7,8,9\n", &mut out);
        assert_eq!(
            payloads(&out),
            vec![b"1,2,3".to_vec(), b",6".to_vec(), b"7,8,9".to_vec()]
        );
        // A reset inside an over-long line ends the skipping.
        f.feed(&[b'x'; 20], &mut out);
        assert!(f.reset().is_some());
        out.clear();
        f.feed(b"1,1,1\n", &mut out);
        assert_eq!(payloads(&out), vec![b"1,1,1".to_vec()]);
    }

    fn sample_frame(i: i16) -> Vec<u8> {
        encode_samples(&[i, -i, i.wrapping_mul(3), 7, 8, 9])
    }

    #[test]
    fn binary_frames_split_anywhere_are_found() {
        let mut stream = Vec::new();
        for i in 0..4 {
            stream.extend(sample_frame(i));
        }
        let out = every_split(binary(3, 64), &stream);
        assert_eq!(payloads(&out).len(), 4);
        assert!(errors(&out).is_empty());
        let first = &payloads(&out)[0];
        assert_eq!(first.len(), 12);
        assert_eq!(i16::from_le_bytes([first[6], first[7]]), 7);
    }

    #[test]
    fn garbage_torn_frames_and_bad_crcs_are_counted_and_skipped() {
        let mut stream = b"boot: hello\r\n\xA5\xA5\x5A".to_vec();
        let garbage_before = stream.len();
        stream.extend(sample_frame(1));
        // A torn frame: its first half, then a whole frame.
        let torn = sample_frame(2);
        stream.extend(&torn[..9]);
        stream.extend(sample_frame(3));
        // A bad CRC.
        let mut bad = sample_frame(4);
        bad[6] ^= 0x40;
        stream.extend(&bad);
        // An impossible length (not whole samples), then a good frame.
        stream.extend([0xA5, 0x5A, 0x05, 0x00, 1, 2, 3]);
        stream.extend(sample_frame(5));
        // A sync announcing more than the limit.
        stream.extend([0xA5, 0x5A, 0xFF, 0x7F]);
        stream.extend(sample_frame(6));
        let out = every_split(binary(3, 64), &stream);
        let got: Vec<i16> = payloads(&out)
            .iter()
            .map(|p| i16::from_le_bytes([p[0], p[1]]))
            .collect();
        assert_eq!(got, vec![1, 3, 5, 6], "every good frame, in order");
        let errors = errors(&out);
        let count = |reason: &str| errors.iter().filter(|e| e.reason() == reason).count();
        // The banner's `A5 5A` announces 0x5AA5 bytes; then the two bad syncs.
        assert_eq!(count("bad_length"), 3, "{errors:?}");
        assert_eq!(
            count("bad_crc"),
            2,
            "the torn and the corrupted frame: {errors:?}"
        );
        let discarded: usize = errors.iter().map(FrameError::bytes).sum();
        assert_eq!(
            discarded,
            garbage_before + 9 + bad.len() + 7 + 4,
            "every byte outside a good frame is accounted for"
        );
    }

    #[test]
    fn random_garbage_never_hides_good_frames() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for round in 0..200 {
            let mut stream = Vec::new();
            let mut expected = Vec::new();
            let mut noise = 0usize;
            for i in 0..rng.random_range(1..6) {
                let n = rng.random_range(0..40);
                let junk: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                noise += junk.len();
                stream.extend(junk);
                let value = (round * 10 + i) as i16;
                stream.extend(sample_frame(value));
                expected.push(value);
            }
            let mut framer = BinaryFramer::new(3, 64);
            let mut out = Vec::new();
            let mut rest = stream.as_slice();
            while !rest.is_empty() {
                let n = rng.random_range(1..=rest.len().min(17));
                framer.feed(&rest[..n], &mut out);
                rest = &rest[n..];
            }
            let got: Vec<i16> = payloads(&out)
                .iter()
                .map(|p| i16::from_le_bytes([p[0], p[1]]))
                .collect();
            // Random junk can, rarely, form a frame of its own; it can
            // never make a real frame disappear.
            let mut it = got.iter();
            for value in &expected {
                assert!(
                    it.any(|g| g == value),
                    "round {round}: {value} missing from {got:?}"
                );
            }
            let discarded: usize = errors(&out).iter().map(FrameError::bytes).sum();
            if got.len() == expected.len() {
                assert_eq!(discarded, noise, "round {round}");
            }
        }
    }

    #[test]
    fn endless_garbage_is_reported_without_a_good_frame_and_memory_stays_bounded() {
        let mut framer = BinaryFramer::new(3, 64);
        let mut out = Vec::new();
        for _ in 0..100 {
            framer.feed(&[0x11; 1000], &mut out);
            assert!(framer.buf.len() <= 1);
        }
        let discarded: usize = errors(&out).iter().map(FrameError::bytes).sum();
        assert!(discarded >= 96_000, "{discarded}");
        assert!(payloads(&out).is_empty());
    }

    #[test]
    fn a_frame_cut_by_a_disconnection_is_truncated() {
        let mut framer = BinaryFramer::new(3, 64);
        let mut out = Vec::new();
        let frame = sample_frame(9);
        framer.feed(&frame[..5], &mut out);
        assert!(out.is_empty());
        assert_eq!(framer.reset(), Some(FrameError::Truncated { bytes: 5 }));
        framer.feed(&frame, &mut out);
        assert_eq!(payloads(&out).len(), 1);
        assert!(errors(&out).is_empty());
    }
}
