//! One client over MQTT 3.1.1 and MQTT 5. rumqttc has a client per
//! protocol version; the input and the output use this one, which maps both
//! onto the few events they act on and the bounded failure reasons of the
//! metrics.
//!
//! With MQTT 5 the client's maximum packet size travels in CONNECT, so the
//! broker drops a larger message for this client instead of sending it;
//! MQTT 3.1.1 has no such field, and the client has to refuse the packet,
//! which costs the connection. A persistent session (`clean_session =
//! false`) asks an MQTT 5 broker to keep it for [`SESSION_EXPIRY_S`].

use rumqttc::v5;
use rumqttc::v5::mqttbytes::v5 as packet5;
use rumqttc::{ConnectionError, Incoming, Outgoing, StateError};

use crate::mqtt::config::MqttProtocol;

// The input reads through the vendored rumqttc, 64 KiB a call
// (vendor/rumqttc/PATCHED.md): were the `[patch]` of Cargo.toml no longer
// taken (a version bumped past it), this would not build.
const _: () = assert!(rumqttc::READ_BUFFER_BYTES >= 64 * 1024);

crate::reason::reason_error!(
    /// Why a subscription could not be queued.
    SubscribeError
);

/// How long an MQTT 5 broker keeps a persistent session of a client that
/// went away: a week, to cover a long outage of the edge box.
pub const SESSION_EXPIRY_S: u32 = 7 * 24 * 3600;

/// A message the broker publishes when this client vanishes.
pub struct Will {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: u8,
    pub retain: bool,
}

/// The request side of a connection; cheap to clone. Requests queue up
/// (bounded) while the connection is down.
#[derive(Clone)]
pub enum Client {
    V311(rumqttc::AsyncClient),
    V5(v5::AsyncClient),
}

/// The connection side, driven by its owner through [`Events::poll`].
pub enum Events {
    V311(Box<rumqttc::EventLoop>),
    V5(Box<v5::EventLoop>),
}

/// What the input and output act on.
#[derive(Debug)]
pub enum Event {
    ConnAck {
        session_present: bool,
    },
    /// A subscription answer; `refused` when any filter was refused.
    SubAck {
        refused: bool,
    },
    Publish {
        topic: String,
        payload: Vec<u8>,
    },
    /// One of our publishes went out with this packet id (0 at QoS 0),
    /// in the order they were queued.
    Sent {
        pkid: u16,
    },
    /// The broker acknowledged (PUBACK) our QoS 1 publish `pkid`.
    Acked {
        pkid: u16,
    },
    /// Our DISCONNECT went out.
    Disconnected,
    Other,
}

/// A lost or refused connection; `reason` is a bounded metric label.
#[derive(Debug)]
pub struct ConnectionFailure {
    pub reason: &'static str,
    pub message: String,
}

impl std::fmt::Display for ConnectionFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Everything a connection needs besides the broker's address, TLS and
/// credentials (which [`crate::mqtt::broker::BrokerSettings`] adds).
pub struct Session {
    pub protocol: MqttProtocol,
    pub client_id: String,
    pub clean_session: bool,
    pub will: Option<Will>,
    /// Requests that may wait while the connection is down.
    pub capacity: usize,
}

/// The address, keep-alive, packet limit, credentials and transport of a
/// broker, resolved by [`crate::mqtt::broker::BrokerSettings`].
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub keep_alive: std::time::Duration,
    pub max_packet_bytes: usize,
    pub credentials: Option<(String, String)>,
    pub transport: rumqttc::Transport,
}

/// Builds the client and its (not yet connected) event loop.
pub fn new(endpoint: Endpoint, session: Session) -> (Client, Events) {
    match session.protocol {
        MqttProtocol::V311 => {
            let mut options =
                rumqttc::MqttOptions::new(session.client_id, endpoint.host, endpoint.port);
            options.set_keep_alive(endpoint.keep_alive);
            // Set explicitly: rumqttc's default (10 KiB) would cost the
            // connection on any larger batch.
            options.set_max_packet_size(endpoint.max_packet_bytes, endpoint.max_packet_bytes);
            options.set_clean_session(session.clean_session);
            if let Some((username, password)) = endpoint.credentials {
                options.set_credentials(username, password);
            }
            options.set_transport(endpoint.transport);
            if let Some(will) = session.will {
                options.set_last_will(rumqttc::LastWill::new(
                    will.topic,
                    will.payload,
                    qos311(will.qos),
                    will.retain,
                ));
            }
            let (client, events) = rumqttc::AsyncClient::new(options, session.capacity);
            (Client::V311(client), Events::V311(Box::new(events)))
        }
        MqttProtocol::V5 => {
            let mut options = v5::MqttOptions::new(session.client_id, endpoint.host, endpoint.port);
            options.set_keep_alive(endpoint.keep_alive);
            options.set_max_packet_size(Some(
                u32::try_from(endpoint.max_packet_bytes).unwrap_or(u32::MAX),
            ));
            options.set_clean_start(session.clean_session);
            if !session.clean_session {
                options.set_session_expiry_interval(Some(SESSION_EXPIRY_S));
            }
            if let Some((username, password)) = endpoint.credentials {
                options.set_credentials(username, password);
            }
            options.set_transport(endpoint.transport);
            if let Some(will) = session.will {
                options.set_last_will(packet5::LastWill::new(
                    will.topic,
                    will.payload,
                    qos5(will.qos),
                    will.retain,
                    None,
                ));
            }
            let (client, events) = v5::AsyncClient::new(options, session.capacity);
            (Client::V5(client), Events::V5(Box::new(events)))
        }
    }
}

impl Client {
    /// Queues a publish; false when the request queue is full.
    pub fn try_publish(&self, topic: &str, qos: u8, retain: bool, payload: Vec<u8>) -> bool {
        match self {
            Self::V311(c) => c.try_publish(topic, qos311(qos), retain, payload).is_ok(),
            Self::V5(c) => c.try_publish(topic, qos5(qos), retain, payload).is_ok(),
        }
    }

    /// Queues one SUBSCRIBE for all `filters`.
    pub fn try_subscribe_many(&self, filters: &[String], qos: u8) -> Result<(), SubscribeError> {
        match self {
            Self::V311(c) => c
                .try_subscribe_many(
                    filters
                        .iter()
                        .map(|f| rumqttc::SubscribeFilter::new(f.clone(), qos311(qos))),
                )
                .map_err(|e| SubscribeError(e.to_string())),
            Self::V5(c) => c
                .try_subscribe_many(
                    filters
                        .iter()
                        .map(|f| packet5::Filter::new(f.clone(), qos5(qos))),
                )
                .map_err(|e| SubscribeError(e.to_string())),
        }
    }

    /// Queues a DISCONNECT; false when the request queue is full or gone.
    pub fn try_disconnect(&self) -> bool {
        match self {
            Self::V311(c) => c.try_disconnect().is_ok(),
            Self::V5(c) => c.try_disconnect().is_ok(),
        }
    }
}

impl Events {
    /// Drives the connection (connecting first when needed) until the next
    /// event. After a failure, the next call reconnects.
    pub async fn poll(&mut self) -> Result<Event, ConnectionFailure> {
        match self {
            Self::V311(events) => match events.poll().await {
                Ok(rumqttc::Event::Incoming(Incoming::ConnAck(ack))) => Ok(Event::ConnAck {
                    session_present: ack.session_present,
                }),
                Ok(rumqttc::Event::Incoming(Incoming::SubAck(ack))) => Ok(Event::SubAck {
                    refused: ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)),
                }),
                Ok(rumqttc::Event::Incoming(Incoming::Publish(publish))) => Ok(Event::Publish {
                    topic: publish.topic,
                    payload: publish.payload.to_vec(),
                }),
                Ok(rumqttc::Event::Outgoing(Outgoing::Publish(pkid))) => Ok(Event::Sent { pkid }),
                Ok(rumqttc::Event::Incoming(Incoming::PubAck(ack))) => {
                    Ok(Event::Acked { pkid: ack.pkid })
                }
                Ok(rumqttc::Event::Outgoing(Outgoing::Disconnect)) => Ok(Event::Disconnected),
                Ok(_) => Ok(Event::Other),
                Err(error) => {
                    // Events of the lost connection still buffered (a PUBACK
                    // read with the failing packet, a publish that never
                    // went out) would be taken for the next connection's,
                    // whose packet ids restart.
                    events.state.events.clear();
                    Err(ConnectionFailure {
                        reason: reason311(&error),
                        message: error.to_string(),
                    })
                }
            },
            Self::V5(events) => match events.poll().await {
                Ok(v5::Event::Incoming(packet5::Packet::ConnAck(ack))) => Ok(Event::ConnAck {
                    session_present: ack.session_present,
                }),
                Ok(v5::Event::Incoming(packet5::Packet::SubAck(ack))) => Ok(Event::SubAck {
                    refused: ack
                        .return_codes
                        .iter()
                        .any(|c| !matches!(c, packet5::SubscribeReasonCode::Success(_))),
                }),
                Ok(v5::Event::Incoming(packet5::Packet::Publish(publish))) => Ok(Event::Publish {
                    topic: String::from_utf8_lossy(&publish.topic).into_owned(),
                    payload: publish.payload.to_vec(),
                }),
                Ok(v5::Event::Outgoing(Outgoing::Publish(pkid))) => Ok(Event::Sent { pkid }),
                Ok(v5::Event::Incoming(packet5::Packet::PubAck(ack))) => {
                    Ok(Event::Acked { pkid: ack.pkid })
                }
                Ok(v5::Event::Outgoing(Outgoing::Disconnect)) => Ok(Event::Disconnected),
                Ok(_) => Ok(Event::Other),
                Err(error) => {
                    events.state.events.clear();
                    Err(ConnectionFailure {
                        reason: reason5(&error),
                        message: error.to_string(),
                    })
                }
            },
        }
    }
}

/// QoS of a validated config value (0 or 1).
fn qos311(value: u8) -> rumqttc::QoS {
    match value {
        0 => rumqttc::QoS::AtMostOnce,
        _ => rumqttc::QoS::AtLeastOnce,
    }
}

fn qos5(value: u8) -> v5::mqttbytes::QoS {
    match value {
        0 => v5::mqttbytes::QoS::AtMostOnce,
        _ => v5::mqttbytes::QoS::AtLeastOnce,
    }
}

fn reason311(error: &ConnectionError) -> &'static str {
    match error {
        ConnectionError::MqttState(StateError::Deserialization(
            rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(_),
        )) => "oversize",
        ConnectionError::ConnectionRefused(_) => "refused",
        ConnectionError::Tls(_) => "tls",
        ConnectionError::Io(_)
        | ConnectionError::NetworkTimeout
        | ConnectionError::FlushTimeout
        | ConnectionError::MqttState(
            StateError::Io(_) | StateError::ConnectionAborted | StateError::AwaitPingResp,
        ) => "network",
        _ => "protocol",
    }
}

fn reason5(error: &v5::ConnectionError) -> &'static str {
    use v5::{ConnectionError as E, StateError as S};
    match error {
        E::MqttState(S::IncomingPacketTooLarge { .. }) => "oversize",
        E::ConnectionRefused(_) | E::MqttState(S::ConnFail { .. }) => "refused",
        E::Tls(_) => "tls",
        E::Io(_)
        | E::Timeout(_)
        | E::MqttState(
            S::Io(_) | S::ConnectionAborted | S::AwaitPingResp | S::ServerDisconnect { .. },
        ) => "network",
        _ => "protocol",
    }
}
