//! What the MQTT output still has to deliver, shared by the sink (which
//! adds) and the connection task (which hands messages to rumqttc and
//! hears back). Pure bookkeeping, no I/O.
//!
//! Features are best effort: a bounded queue, handed over once. Alerts and
//! status records are *reliable*: each keeps its id and stays here until
//! the broker acknowledges it (PUBACK). rumqttc forgets whatever was in
//! flight or still queued when a connection is lost (a clean session gets
//! nothing back), so after every reconnection every reliable message not
//! acknowledged is handed over again, oldest first.
//!
//! rumqttc reports each publish it writes, in the order it was queued, with
//! its packet id (`Sent`), and each PUBACK by packet id: [`Outbox::on_sent`]
//! pairs the n-th report with the n-th message handed over, and
//! [`Outbox::on_acked`] the packet id with the message.

use std::collections::{HashMap, VecDeque};

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub topic: String,
    pub qos: u8,
    pub retain: bool,
    pub payload: Vec<u8>,
}

/// A reliable message: an alert (`spooled` when it is in the spool too) or
/// a status record.
#[derive(Debug)]
struct Reliable {
    id: u64,
    message: Message,
    spooled: bool,
    status: bool,
}

/// A message rumqttc was given and has not reported written yet.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Handed {
    /// A feature, or a status of the connection itself (untracked).
    Untracked,
    Reliable(u64),
}

/// A reliable message delivered: its id, and whether the spool holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub id: u64,
    pub spooled: bool,
}

/// What a lost connection cost.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Lost {
    /// Features handed over but never written: gone.
    pub features: usize,
    /// Reliable messages handed over and not acknowledged: sent again.
    pub resent: usize,
}

#[derive(Debug)]
pub struct Outbox {
    features: VecDeque<Message>,
    feature_cap: usize,
    reliable: VecDeque<Reliable>,
    /// Reliable messages not in the spool (status records, and alerts
    /// without a spool), bounded by `reliable_cap`.
    in_memory: usize,
    reliable_cap: usize,
    /// `reliable[..next]` were handed over on this connection.
    next: usize,
    handed: VecDeque<Handed>,
    inflight: HashMap<u16, u64>,
    /// The sink is gone: say goodbye once everything is delivered.
    pub closing: bool,
}

impl Outbox {
    /// `features` and `reliable` bound the features queued and the
    /// reliable messages kept in memory only.
    pub fn new(features: usize, reliable: usize) -> Self {
        Self {
            features: VecDeque::new(),
            feature_cap: features,
            reliable: VecDeque::new(),
            in_memory: 0,
            reliable_cap: reliable,
            next: 0,
            handed: VecDeque::new(),
            inflight: HashMap::new(),
            closing: false,
        }
    }

    /// Queues a feature; false (dropped) when the queue is full.
    pub fn push_feature(&mut self, message: Message) -> bool {
        if self.features.len() >= self.feature_cap {
            return false;
        }
        self.features.push_back(message);
        true
    }

    /// Keeps an alert until it is acknowledged; false (dropped) when it is
    /// not spooled and the memory bound is reached by alerts alone (a
    /// status waiting is dropped to make room: the next one says as much).
    /// Ids must rise.
    pub fn push_alert(&mut self, id: u64, message: Message, spooled: bool) -> bool {
        if !spooled && self.in_memory >= self.reliable_cap {
            let waiting_status =
                (self.next..self.reliable.len()).find(|&i| self.reliable[i].status);
            match waiting_status {
                Some(at) => self.remove_at(at),
                None => return false,
            }
        }
        self.push(id, message, spooled, false);
        true
    }

    /// Keeps a status record until it is acknowledged, in place of one of
    /// the same topic still waiting (a status says the current state, so
    /// only the newest matters); false (dropped) when the memory bound is
    /// reached.
    pub fn push_status(&mut self, id: u64, message: Message) -> bool {
        let replaced = (self.next..self.reliable.len())
            .find(|&i| self.reliable[i].status && self.reliable[i].message.topic == message.topic);
        match replaced {
            Some(at) => self.remove_at(at),
            None if self.in_memory >= self.reliable_cap => return false,
            None => {}
        }
        self.push(id, message, false, true);
        true
    }

    fn push(&mut self, id: u64, message: Message, spooled: bool, status: bool) {
        debug_assert!(self.reliable.back().is_none_or(|r| r.id < id));
        if !spooled {
            self.in_memory += 1;
        }
        self.reliable.push_back(Reliable {
            id,
            message,
            spooled,
            status,
        });
    }

    /// Forgets `reliable[at]`, which was not handed over on this connection.
    fn remove_at(&mut self, at: usize) {
        debug_assert!(at >= self.next);
        if let Some(gone) = self.reliable.remove(at) {
            if !gone.spooled {
                self.in_memory -= 1;
            }
        }
    }

    /// Alerts not acknowledged yet, spooled or not.
    pub fn unacknowledged_alerts(&self) -> usize {
        self.reliable.iter().filter(|r| !r.status).count()
    }

    /// Alerts kept in memory only (not in a spool) and not acknowledged:
    /// what a daemon stopping now loses.
    pub fn alerts_in_memory(&self) -> usize {
        self.reliable
            .iter()
            .filter(|r| !r.status && !r.spooled)
            .count()
    }

    /// Reliable messages not acknowledged yet.
    pub fn unacknowledged(&self) -> usize {
        self.reliable.len()
    }

    /// Feature messages waiting to be handed over.
    pub fn features_waiting(&self) -> usize {
        self.features.len()
    }

    /// Hands messages to `publish` (rumqttc's queue) while it takes them:
    /// reliable messages first, in id order, then features. Returns how
    /// many it took.
    pub fn hand(&mut self, mut publish: impl FnMut(&Message) -> bool) -> usize {
        let mut taken = 0;
        while let Some(reliable) = self.reliable.get(self.next) {
            if !publish(&reliable.message) {
                return taken;
            }
            self.handed.push_back(Handed::Reliable(reliable.id));
            self.next += 1;
            taken += 1;
        }
        while let Some(feature) = self.features.front() {
            if !publish(feature) {
                return taken;
            }
            self.features.pop_front();
            self.handed.push_back(Handed::Untracked);
            taken += 1;
        }
        taken
    }

    /// Notes a message handed to rumqttc besides these (the connection's
    /// own status), so the reports stay paired.
    pub fn handed_untracked(&mut self) {
        self.handed.push_back(Handed::Untracked);
    }

    /// rumqttc wrote the next message handed over, as packet `pkid`. A
    /// reliable message at QoS 0 is delivered by being written.
    pub fn on_sent(&mut self, pkid: u16) -> Option<Delivered> {
        match self.handed.pop_front()? {
            Handed::Untracked => None,
            Handed::Reliable(id) if pkid == 0 => self.remove(id),
            Handed::Reliable(id) => {
                self.inflight.insert(pkid, id);
                None
            }
        }
    }

    /// The broker acknowledged packet `pkid`.
    pub fn on_acked(&mut self, pkid: u16) -> Option<Delivered> {
        let id = self.inflight.remove(&pkid)?;
        self.remove(id)
    }

    fn remove(&mut self, id: u64) -> Option<Delivered> {
        let at = self.reliable.binary_search_by_key(&id, |r| r.id).ok()?;
        let reliable = self.reliable.remove(at).expect("found");
        if at < self.next {
            self.next -= 1;
        }
        if !reliable.spooled {
            self.in_memory -= 1;
        }
        Some(Delivered {
            id,
            spooled: reliable.spooled,
        })
    }

    /// The connection is lost: rumqttc dropped whatever it held, so every
    /// reliable message not acknowledged goes again on the next one.
    pub fn on_disconnect(&mut self) -> Lost {
        let tracked = self
            .handed
            .iter()
            .filter(|h| matches!(h, Handed::Reliable(_)))
            .count();
        let lost = Lost {
            features: self.handed.len() - tracked,
            resent: self.next,
        };
        self.handed.clear();
        self.inflight.clear();
        self.next = 0;
        lost
    }

    /// Nothing left to hand over or to hear back about.
    pub fn is_drained(&self) -> bool {
        self.reliable.is_empty() && self.features.is_empty() && self.handed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(name: &str, qos: u8) -> Message {
        Message {
            topic: name.into(),
            qos,
            retain: false,
            payload: name.as_bytes().to_vec(),
        }
    }

    /// What a publisher with room for `room` messages takes.
    fn taking(room: usize, into: &mut Vec<String>) -> impl FnMut(&Message) -> bool + '_ {
        move |m| {
            if into.len() >= room {
                return false;
            }
            into.push(m.topic.clone());
            true
        }
    }

    #[test]
    fn reliable_messages_go_first_and_stay_until_acknowledged() {
        let mut outbox = Outbox::new(10, 10);
        assert!(outbox.push_feature(message("f1", 0)));
        assert!(outbox.push_alert(1, message("a1", 1), true));
        assert!(outbox.push_alert(2, message("s2", 1), false));
        let mut sent = Vec::new();
        assert_eq!(outbox.hand(taking(10, &mut sent)), 3);
        assert_eq!(sent, ["a1", "s2", "f1"]);
        assert_eq!(outbox.on_sent(1), None);
        assert_eq!(outbox.on_sent(2), None);
        assert_eq!(outbox.on_sent(0), None, "the feature");
        assert!(!outbox.is_drained());
        assert_eq!(
            outbox.on_acked(2),
            Some(Delivered {
                id: 2,
                spooled: false
            })
        );
        assert_eq!(outbox.on_acked(2), None, "once");
        assert_eq!(
            outbox.on_acked(1),
            Some(Delivered {
                id: 1,
                spooled: true
            })
        );
        assert!(outbox.is_drained());
    }

    #[test]
    fn a_lost_connection_hands_the_unacknowledged_again_in_order() {
        let mut outbox = Outbox::new(10, 10);
        for id in 1..=4 {
            outbox.push_alert(id, message(&format!("a{id}"), 1), true);
        }
        outbox.push_feature(message("f", 0));
        let mut sent = Vec::new();
        outbox.hand(taking(10, &mut sent));
        for pkid in 1..=3 {
            outbox.on_sent(pkid);
        }
        outbox.on_acked(1).unwrap();
        // a4 and f were queued in rumqttc, never written.
        let lost = outbox.on_disconnect();
        assert_eq!(
            lost,
            Lost {
                features: 1,
                resent: 3
            }
        );
        // A stale acknowledgement of the old connection is not taken.
        assert_eq!(outbox.on_acked(2), None);
        let mut again = Vec::new();
        outbox.hand(taking(10, &mut again));
        assert_eq!(again, ["a2", "a3", "a4"]);
        for pkid in 4..=6 {
            outbox.on_sent(pkid);
        }
        let acked: Vec<u64> = (4..=6)
            .filter_map(|p| outbox.on_acked(p))
            .map(|d| d.id)
            .collect();
        assert_eq!(acked, [2, 3, 4]);
        assert!(outbox.is_drained());
    }

    #[test]
    fn a_full_rumqttc_queue_keeps_the_rest_here() {
        let mut outbox = Outbox::new(10, 10);
        outbox.push_alert(1, message("a1", 1), false);
        outbox.push_feature(message("f1", 0));
        outbox.push_feature(message("f2", 0));
        let mut sent = Vec::new();
        assert_eq!(outbox.hand(taking(2, &mut sent)), 2);
        assert_eq!(sent, ["a1", "f1"]);
        let mut more = Vec::new();
        assert_eq!(outbox.hand(taking(5, &mut more)), 1);
        assert_eq!(more, ["f2"], "a1 is not handed twice on one connection");
    }

    #[test]
    fn bounds_drop_new_messages() {
        let mut outbox = Outbox::new(1, 1);
        assert!(outbox.push_feature(message("f1", 0)));
        assert!(!outbox.push_feature(message("f2", 0)));
        assert!(outbox.push_alert(1, message("s1", 1), false));
        assert!(!outbox.push_alert(2, message("s2", 1), false));
        // The spool bounds spooled alerts, not this.
        assert!(outbox.push_alert(3, message("a3", 1), true));
        assert_eq!(outbox.unacknowledged(), 2);
    }

    #[test]
    fn a_reliable_message_at_qos_0_is_delivered_when_written() {
        let mut outbox = Outbox::new(1, 1);
        outbox.push_alert(7, message("a7", 0), true);
        outbox.hand(|_| true);
        assert_eq!(
            outbox.on_sent(0),
            Some(Delivered {
                id: 7,
                spooled: true
            })
        );
        assert!(outbox.is_drained());
    }

    #[test]
    fn the_connections_own_status_keeps_the_reports_paired() {
        let mut outbox = Outbox::new(4, 4);
        outbox.handed_untracked();
        outbox.push_alert(1, message("a1", 1), true);
        outbox.hand(|_| true);
        assert_eq!(outbox.on_sent(1), None, "the hello");
        assert_eq!(outbox.on_sent(2), None);
        assert_eq!(outbox.on_acked(1), None, "pkid 1 was the hello's");
        assert_eq!(outbox.on_acked(2).map(|d| d.id), Some(1));
    }

    #[test]
    fn only_the_newest_status_of_a_topic_waits_and_alerts_take_a_statuss_room() {
        let mut outbox = Outbox::new(4, 2);
        for id in 1..=5 {
            assert!(outbox.push_status(id, message("status/fleet", 1)));
        }
        assert!(outbox.push_status(6, message("status/device/a", 1)));
        assert_eq!(outbox.unacknowledged(), 2, "the newest of each topic");
        // The cap is full of statuses: an alert takes the oldest one's room.
        assert!(outbox.push_alert(7, message("a7", 1), false));
        assert!(outbox.push_alert(8, message("a8", 1), false));
        assert!(
            !outbox.push_alert(9, message("a9", 1), false),
            "alerts alone fill it"
        );
        assert_eq!(outbox.alerts_in_memory(), 2);
        let mut sent = Vec::new();
        outbox.hand(taking(10, &mut sent));
        assert_eq!(sent, ["a7", "a8"]);
    }

    #[test]
    fn a_status_handed_over_stays_tracked_and_a_newer_one_waits_behind_it() {
        let mut outbox = Outbox::new(4, 4);
        outbox.push_status(1, message("status", 1));
        outbox.hand(|_| true);
        outbox.on_sent(1);
        assert!(outbox.push_status(2, message("status", 1)));
        assert_eq!(outbox.unacknowledged(), 2);
        assert_eq!(outbox.on_acked(1).map(|d| d.id), Some(1));
        let mut sent = Vec::new();
        outbox.hand(taking(10, &mut sent));
        assert_eq!(sent, ["status"]);
        outbox.on_sent(2);
        assert_eq!(outbox.on_acked(2).map(|d| d.id), Some(2));
        assert!(outbox.is_drained());
    }
}
