//! An MQTT broker inside the process (rumqttd), so that `accelwatch demo`
//! goes over MQTT with nothing for the user to install.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedBrokerError {
    #[error("cannot find a free port for the embedded broker: {0}")]
    Port(std::io::Error),
    #[error("the embedded broker did not accept connections on {0} within 5 s")]
    NotListening(SocketAddr),
}

/// Starts a broker on 127.0.0.1 (`port` 0 picks a free one) in a thread of
/// its own, and returns once it accepts connections.
pub fn start(port: u16) -> Result<SocketAddr, EmbeddedBrokerError> {
    let addr = if port == 0 {
        // The port is released again before the broker binds it; on a
        // loopback address nobody else is expected to take it meanwhile.
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(EmbeddedBrokerError::Port)?
    } else {
        SocketAddr::from(([127, 0, 0, 1], port))
    };
    let server = rumqttd::ServerSettings {
        name: "accelwatch-demo".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections: rumqttd::ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: 1 << 20,
            max_inflight_count: 500,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = rumqttd::Config {
        id: 0,
        router: rumqttd::RouterConfig {
            max_connections: 64,
            max_outgoing_packet_count: 10_000,
            max_segment_size: 16 << 20,
            max_segment_count: 4,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("demo".to_string(), server)])),
        v5: None,
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    };
    std::thread::Builder::new()
        .name("mqtt-broker".into())
        .spawn(move || {
            if let Err(error) = rumqttd::Broker::new(config).start() {
                tracing::error!(%error, "the embedded broker stopped");
            }
        })
        .map_err(EmbeddedBrokerError::Port)?;
    let started = Instant::now();
    while TcpStream::connect(addr).is_err() {
        if started.elapsed() > Duration::from_secs(5) {
            return Err(EmbeddedBrokerError::NotListening(addr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(addr)
}
