//! The task that drives the MQTT output's connection: it hands the
//! [`Outbox`]'s messages to rumqttc while connected, pairs rumqttc's
//! reports with them, trims the spool as the broker acknowledges alerts,
//! and reconnects with back-off.
//!
//! rumqttc's `poll` is not cancel-safe (a request taken from its queue may
//! be half written), so it is never dropped half-way: the same poll future
//! is awaited again after a wake-up from the sink has been served.

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::backoff::Backoff;
use crate::mqtt::client::{Client, Event, Events};
use crate::sink::mqtt::outbox::{Delivered, Message, Outbox};
use crate::sink::mqtt::spool::Spool;
use crate::telemetry::Metrics;

const ROLE: &str = "output";

/// How long acknowledgements may move the spool's `acked` mark before it
/// is written: in an alert storm a write every 10 ms rather than one each
/// PUBACK; after a crash at most this much of what the broker had is
/// published again.
const MARK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);

/// What the sink and the connection task share.
pub struct Shared {
    pub outbox: Mutex<Outbox>,
    pub spool: Option<Mutex<Spool>>,
    /// The sink added something, or is gone.
    pub wake: Notify,
}

impl Shared {
    pub fn outbox(&self) -> std::sync::MutexGuard<'_, Outbox> {
        // A panic elsewhere while holding it leaves plain data behind.
        self.outbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn spool(&self) -> Option<std::sync::MutexGuard<'_, Spool>> {
        self.spool
            .as_ref()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

pub struct Connection {
    pub client: Client,
    pub events: Events,
    pub shared: Arc<Shared>,
    pub status_topic: String,
    /// The retained `online` said on every connect.
    pub hello: Vec<u8>,
    /// The retained `offline` said on shutdown.
    pub goodbye: Vec<u8>,
    pub backoff: Backoff,
    pub url: String,
    pub metrics: Metrics,
}

impl Connection {
    pub async fn run(self) {
        let Connection {
            client,
            mut events,
            shared,
            status_topic,
            hello,
            goodbye,
            mut backoff,
            url,
            metrics,
        } = self;
        let mut link = Link {
            client,
            shared,
            metrics,
            status_topic,
            goodbye,
            said_goodbye: false,
            mark_due: None,
        };
        let mark_timer = tokio::time::sleep(MARK_INTERVAL);
        tokio::pin!(mark_timer);
        let mut connected = false;
        let mut logged_failure = false;
        loop {
            let event = {
                let poll = events.poll();
                tokio::pin!(poll);
                loop {
                    if let Some(due) = link.mark_due {
                        if mark_timer.deadline() != due {
                            mark_timer.as_mut().reset(due);
                        }
                    }
                    tokio::select! {
                        event = &mut poll => break event,
                        () = link.shared.wake.notified(), if connected => link.hand(),
                        () = &mut mark_timer, if link.mark_due.is_some() => link.write_mark(),
                    }
                }
            };
            match event {
                Ok(Event::ConnAck { .. }) => {
                    connected = true;
                    logged_failure = false;
                    backoff.reset();
                    link.metrics.mqtt_connected(ROLE, true);
                    tracing::info!(url = %url, "MQTT output connected");
                    link.say(hello.clone());
                }
                Ok(Event::Sent { pkid }) => {
                    let delivered = link.shared.outbox().on_sent(pkid);
                    link.delivered(delivered);
                }
                Ok(Event::Acked { pkid }) => {
                    let delivered = link.shared.outbox().on_acked(pkid);
                    link.delivered(delivered);
                }
                Ok(Event::Disconnected) => break,
                Ok(_) => {}
                Err(error) => {
                    let reason = error.reason;
                    link.metrics.mqtt_connection_failure(ROLE, reason);
                    if connected || !logged_failure {
                        tracing::warn!(
                            url = %url, %error, reason,
                            "MQTT output disconnected; reconnecting with back-off"
                        );
                    }
                    if connected {
                        link.lost();
                    }
                    // The back-off does not wait for the mark's timer: what
                    // was acknowledged before the outage is marked now.
                    if link.mark_due.is_some() {
                        link.write_mark();
                    }
                    connected = false;
                    logged_failure = true;
                    link.metrics.mqtt_connected(ROLE, false);
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
            }
            if connected {
                link.hand();
            }
        }
        link.metrics.mqtt_connected(ROLE, false);
        tracing::info!("MQTT output disconnected");
    }
}

/// The connection task's side of a connection, apart from rumqttc's
/// event loop (which its poll borrows).
struct Link {
    client: Client,
    shared: Arc<Shared>,
    metrics: Metrics,
    status_topic: String,
    goodbye: Vec<u8>,
    said_goodbye: bool,
    /// When the spool's owed `acked` mark is to be written.
    mark_due: Option<tokio::time::Instant>,
}

impl Link {
    fn publish(&self, message: &Message) -> bool {
        self.client.try_publish(
            &message.topic,
            message.qos,
            message.retain,
            message.payload.clone(),
        )
    }

    /// A retained status of the connection itself (no `msg_id`: it is no
    /// part of the ordered stream).
    fn say(&self, payload: Vec<u8>) {
        if self
            .client
            .try_publish(&self.status_topic, 1, true, payload)
        {
            self.shared.outbox().handed_untracked();
        } else {
            self.metrics.mqtt_publish_dropped("status", 1);
        }
    }

    /// Hands over what rumqttc's queue takes; once the sink is gone and
    /// everything is acknowledged, says goodbye and disconnects.
    fn hand(&mut self) {
        if self.said_goodbye {
            return;
        }
        let done = {
            let mut outbox = self.shared.outbox();
            outbox.hand(|message| self.publish(message));
            outbox.closing && outbox.is_drained()
        };
        if done {
            self.said_goodbye = true;
            self.say(self.goodbye.clone());
            self.client.try_disconnect();
        }
    }

    fn delivered(&mut self, delivered: Option<Delivered>) {
        let Some(delivered) = delivered else {
            return;
        };
        if !delivered.spooled {
            return;
        }
        if let Some(mut spool) = self.shared.spool() {
            if let Err(error) = spool.ack(delivered.id) {
                tracing::error!(%error, "MQTT output spool: cannot trim");
            }
            self.metrics.mqtt_spool("acked", 1);
            self.metrics.mqtt_spool_bytes(spool.bytes());
            if spool.mark_owed() && self.mark_due.is_none() {
                self.mark_due = Some(tokio::time::Instant::now() + MARK_INTERVAL);
            }
        }
    }

    fn write_mark(&mut self) {
        self.mark_due = None;
        if let Some(mut spool) = self.shared.spool() {
            if let Err(error) = spool.write_owed_mark() {
                tracing::error!(%error, "MQTT output spool: cannot write the acknowledged mark");
            }
        }
    }

    fn lost(&self) {
        let lost = self.shared.outbox().on_disconnect();
        self.metrics.mqtt_publish_dropped("features", lost.features);
        if lost.resent > 0 {
            self.metrics.mqtt_resent(lost.resent);
            tracing::info!(
                messages = lost.resent,
                "MQTT output: alerts and status not acknowledged before the connection was lost \
                 are published again on the next"
            );
        }
    }
}
