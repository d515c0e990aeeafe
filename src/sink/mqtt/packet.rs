//! The few MQTT packets the feature lanes write (CONNECT, PUBLISH at QoS
//! 0, PINGREQ, DISCONNECT) and the splitting of what the broker sends
//! back into packets (pure).

use std::time::Duration;

use crate::mqtt::config::MqttProtocol;

pub const PINGREQ: [u8; 2] = [0xC0, 0x00];
pub const DISCONNECT: [u8; 2] = [0xE0, 0x00];

/// How a PUBLISH of this lane starts: its first byte, and whether it
/// carries MQTT 5's (empty) properties.
#[derive(Debug, Clone, Copy)]
pub struct PublishHeader {
    first_byte: u8,
    properties: bool,
}

impl PublishHeader {
    pub fn new(protocol: MqttProtocol, retain: bool) -> Self {
        Self {
            first_byte: 0x30 | u8::from(retain),
            properties: matches!(protocol, MqttProtocol::V5),
        }
    }

    /// The topic and payload of the PUBLISH at the front of `bytes`, one
    /// that [`Self::encode`] wrote, and the bytes after it; `None` when
    /// `bytes` does not begin with a whole one.
    pub fn split(self, bytes: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
        let (at, length) = fixed_header(bytes).ok()??;
        let body = bytes.get(at..at + length)?;
        let topic_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
        let topic = body.get(2..2 + topic_len)?;
        let payload = body.get(2 + topic_len + usize::from(self.properties)..)?;
        Some((topic, payload, &bytes[at + length..]))
    }

    /// Appends a QoS 0 PUBLISH of `payload` on `topic` to `out`.
    pub fn encode(self, topic: &str, payload: &[u8], out: &mut Vec<u8>) {
        out.reserve(7 + topic.len() + payload.len());
        self.encode_with(topic, out, |out| {
            out.extend_from_slice(payload);
            Ok(())
        })
        .expect("a slice is appended without error");
    }

    /// Appends a QoS 0 PUBLISH on `topic` to `out` whose payload `write`
    /// appends in place: a feature line is written once, straight into the
    /// bytes that go out. Its length is not known before, so two bytes are
    /// held for it (a payload of 128 bytes to 16 KiB, as a feature line
    /// is); another length moves the payload once. If `write` fails, `out`
    /// is left as it was.
    pub fn encode_with(
        self,
        topic: &str,
        out: &mut Vec<u8>,
        write: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        let start = out.len();
        out.extend_from_slice(&[self.first_byte, 0, 0]);
        push_str(topic, out);
        if self.properties {
            out.push(0);
        }
        if let Err(error) = write(out) {
            out.truncate(start);
            return Err(error);
        }
        let (length, used) = remaining_length(out.len() - start - 3);
        if used == 2 {
            out[start + 1..start + 3].copy_from_slice(&length[..2]);
        } else {
            out.splice(start + 1..start + 3, length[..used].iter().copied());
        }
        Ok(())
    }
}

fn push_remaining_length(length: usize, out: &mut Vec<u8>) {
    let (bytes, used) = remaining_length(length);
    out.extend_from_slice(&bytes[..used]);
}

/// MQTT's variable-length encoding of `length`, in the fewest bytes (the
/// first `used` of four).
fn remaining_length(mut length: usize) -> ([u8; 4], usize) {
    let mut bytes = [0u8; 4];
    let mut used = 0;
    loop {
        let mut byte = (length % 128) as u8;
        length /= 128;
        if length > 0 {
            byte |= 0x80;
        }
        bytes[used] = byte;
        used += 1;
        if length == 0 || used == bytes.len() {
            return (bytes, used);
        }
    }
}

/// A UTF-8 string as MQTT writes it: its length in two bytes, then it.
fn push_str(text: &str, out: &mut Vec<u8>) {
    push_bytes(text.as_bytes(), out);
}

fn push_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    let len = u16::try_from(bytes.len()).expect("checked: topics and ids under 64 KiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The CONNECT of a clean session without a will (the acknowledged
/// connection carries the daemon's will).
pub fn connect_packet(
    protocol: MqttProtocol,
    client_id: &str,
    keep_alive: Duration,
    credentials: Option<&(String, String)>,
) -> Vec<u8> {
    let v5 = matches!(protocol, MqttProtocol::V5);
    let mut body = Vec::with_capacity(64);
    push_str("MQTT", &mut body);
    body.push(if v5 { 5 } else { 4 });
    let mut flags = 0x02; // clean session / clean start
    if credentials.is_some() {
        flags |= 0x80 | 0x40;
    }
    body.push(flags);
    let keep_alive_s = u16::try_from(keep_alive.as_secs()).unwrap_or(u16::MAX);
    body.extend_from_slice(&keep_alive_s.to_be_bytes());
    if v5 {
        body.push(0); // no properties
    }
    push_str(client_id, &mut body);
    if let Some((username, password)) = credentials {
        push_str(username, &mut body);
        push_bytes(password.as_bytes(), &mut body);
    }
    let mut packet = vec![0x10];
    push_remaining_length(body.len(), &mut packet);
    packet.extend_from_slice(&body);
    packet
}

/// Where the body of the packet at the front of `bytes` starts, and its
/// length (the remaining length: one to four bytes after the first, seven
/// bits each); `None` until those bytes have arrived.
fn fixed_header(bytes: &[u8]) -> Result<Option<(usize, usize)>, String> {
    let mut length = 0usize;
    for (at, shift) in (1..=4).zip((0..).step_by(7)) {
        let Some(&byte) = bytes.get(at) else {
            return Ok(None);
        };
        length |= usize::from(byte & 0x7F) << shift;
        if byte & 0x80 == 0 {
            return Ok(Some((at + 1, length)));
        }
    }
    Err("malformed remaining length".into())
}

/// Splits the broker's bytes into packets; only their types matter here.
#[derive(Default)]
pub struct Incoming {
    pub bytes: Vec<u8>,
}

impl Incoming {
    /// The next whole packet's first byte and body, if one has arrived;
    /// an error says what is malformed.
    pub fn next_packet(&mut self) -> Result<Option<(u8, Vec<u8>)>, String> {
        let Some((at, length)) = fixed_header(&self.bytes)? else {
            return Ok(None);
        };
        if self.bytes.len() < at + length {
            return Ok(None);
        }
        let first = self.bytes[0];
        let body = self.bytes[at..at + length].to_vec();
        self.bytes.drain(..at + length);
        Ok(Some((first, body)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A payload written in place makes the packet `encode` makes of the
    /// same bytes, read back whole, at every length around the two held
    /// bytes' edges; a failed write leaves the buffer as it was.
    #[test]
    fn a_payload_written_in_place_is_the_same_packet() {
        for protocol in [MqttProtocol::V311, MqttProtocol::V5] {
            let header = PublishHeader::new(protocol, false);
            let topic = "accelwatch/features/w1";
            let edges = [0, 1, 100, 16_000, 2_097_000];
            for payload_len in edges.into_iter().flat_map(|e| e..e + 200) {
                let payload: Vec<u8> = (0..payload_len).map(|i| (i % 251) as u8).collect();
                let mut expected = b"before".to_vec();
                expected.push(header.first_byte);
                push_remaining_length(
                    2 + topic.len() + usize::from(header.properties) + payload_len,
                    &mut expected,
                );
                push_str(topic, &mut expected);
                if header.properties {
                    expected.push(0);
                }
                expected.extend_from_slice(&payload);
                let mut out = b"before".to_vec();
                header
                    .encode_with(topic, &mut out, |out| {
                        out.extend_from_slice(&payload);
                        Ok(())
                    })
                    .unwrap();
                assert!(out == expected, "payload of {payload_len} bytes");
                let (read_topic, read_payload, rest) = header.split(&out[6..]).unwrap();
                assert_eq!(read_topic, topic.as_bytes());
                assert!(read_payload == payload.as_slice() && rest.is_empty());
            }
            let mut out = b"before".to_vec();
            let failed = header.encode_with(topic, &mut out, |out| {
                out.extend_from_slice(b"half a line");
                Err(std::io::Error::other("no room"))
            });
            assert!(failed.is_err());
            assert_eq!(out, b"before");
        }
    }

    #[test]
    fn remaining_lengths_use_the_fewest_bytes() {
        for (length, bytes) in [
            (0usize, vec![0x00]),
            (127, vec![0x7F]),
            (128, vec![0x80, 0x01]),
            (16_383, vec![0xFF, 0x7F]),
            (16_384, vec![0x80, 0x80, 0x01]),
            (2_097_152, vec![0x80, 0x80, 0x80, 0x01]),
        ] {
            let mut out = Vec::new();
            push_remaining_length(length, &mut out);
            assert_eq!(out, bytes, "{length}");
            let mut incoming = Incoming { bytes: vec![0x30] };
            incoming.bytes.extend_from_slice(&out);
            incoming.bytes.resize(1 + out.len() + length, 7);
            let (first, body) = incoming.next_packet().unwrap().expect("whole");
            assert_eq!((first, body.len()), (0x30, length));
            assert!(incoming.bytes.is_empty());
        }
    }

    #[test]
    fn a_publish_is_read_back_by_rumqttc_in_both_versions() {
        use bytes::BytesMut;
        let payload = vec![b'x'; 300];
        for retain in [false, true] {
            let mut out = Vec::new();
            PublishHeader::new(MqttProtocol::V311, retain).encode(
                "a/d1/features",
                &payload,
                &mut out,
            );
            let mut buf = BytesMut::from(&out[..]);
            let packet = rumqttc::mqttbytes::v4::Packet::read(&mut buf, 1 << 20).unwrap();
            let rumqttc::mqttbytes::v4::Packet::Publish(publish) = packet else {
                panic!("{packet:?}")
            };
            assert_eq!(publish.topic, "a/d1/features");
            assert_eq!(&publish.payload[..], &payload[..]);
            assert_eq!(publish.retain, retain);
            assert_eq!(publish.qos, rumqttc::QoS::AtMostOnce);

            let mut out = Vec::new();
            PublishHeader::new(MqttProtocol::V5, retain).encode(
                "a/d1/features",
                &payload,
                &mut out,
            );
            let mut buf = BytesMut::from(&out[..]);
            let packet = rumqttc::v5::mqttbytes::v5::Packet::read(&mut buf, Some(1 << 20)).unwrap();
            let rumqttc::v5::mqttbytes::v5::Packet::Publish(publish) = packet else {
                panic!("{packet:?}")
            };
            assert_eq!(&publish.topic[..], b"a/d1/features");
            assert_eq!(&publish.payload[..], &payload[..]);
            assert_eq!(publish.retain, retain);
        }
    }

    #[test]
    fn a_connect_is_read_back_by_rumqttc_in_both_versions() {
        use bytes::BytesMut;
        let credentials = ("user".to_string(), "secret".to_string());
        let packet = connect_packet(
            MqttProtocol::V311,
            "box-features",
            Duration::from_secs(30),
            Some(&credentials),
        );
        let mut buf = BytesMut::from(&packet[..]);
        let rumqttc::mqttbytes::v4::Packet::Connect(connect) =
            rumqttc::mqttbytes::v4::Packet::read(&mut buf, 1 << 20).unwrap()
        else {
            panic!("not a CONNECT")
        };
        assert_eq!(connect.client_id, "box-features");
        assert_eq!(connect.keep_alive, 30);
        assert!(connect.clean_session);
        let login = connect.login.expect("credentials");
        assert_eq!(
            (login.username.as_str(), login.password.as_str()),
            ("user", "secret")
        );

        let packet = connect_packet(
            MqttProtocol::V5,
            "box-features",
            Duration::from_secs(30),
            None,
        );
        let mut buf = BytesMut::from(&packet[..]);
        let rumqttc::v5::mqttbytes::v5::Packet::Connect(connect, will, login) =
            rumqttc::v5::mqttbytes::v5::Packet::read(&mut buf, Some(1 << 20)).unwrap()
        else {
            panic!("not a CONNECT")
        };
        assert_eq!(connect.client_id, "box-features");
        assert_eq!(connect.keep_alive, 30);
        assert!(connect.clean_start);
        assert!(will.is_none() && login.is_none());
    }
}
