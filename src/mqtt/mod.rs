//! What the MQTT input and output share: the broker URL, client options
//! (credentials, TLS, packet limit), one client over MQTT 3.1.1 and 5
//! ([`client`]), reconnection back-off, topic rules ([`topic`]).
//!
//! The callers own rumqttc's event loop and poll it in a task; rumqttc
//! reconnects on the poll after an error, and the caller waits with
//! [`crate::backoff::Backoff`] in between, so an outage never ends the daemon.

pub mod broker;
pub mod client;
pub mod config;
pub mod topic;
pub mod url;
