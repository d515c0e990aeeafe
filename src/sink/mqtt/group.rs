//! Several feature lines of a topic in one message
//! (`output.mqtt.features_lines_per_message`), for devices whose windows
//! come faster than the broker takes messages: the lane's task takes the
//! PUBLISHes the sink encoded, one line each, and joins those of a topic,
//! a line each (newline-delimited JSON), until a message holds
//! `max_lines` or its first line has waited `linger` (pure).
//!
//! Each topic's lines keep their order; messages of different topics may
//! leave in another order than their lines came, as MQTT only orders a
//! topic's messages for a subscriber anyway.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::sink::mqtt::packet::PublishHeader;

/// The lines of one topic waiting to leave together.
struct Group {
    payload: Vec<u8>,
    lines: usize,
    /// Which group of this topic; a deadline of an earlier one is stale.
    generation: u64,
}

pub struct Grouper {
    header: PublishHeader,
    max_lines: usize,
    linger: Duration,
    groups: HashMap<Box<[u8]>, Group>,
    /// Each group's deadline, in the order the groups were begun (so in
    /// the order of their deadlines).
    deadlines: VecDeque<(Instant, Box<[u8]>, u64)>,
    generation: u64,
    waiting: usize,
}

impl Grouper {
    pub fn new(header: PublishHeader, max_lines: usize, linger: Duration) -> Self {
        Self {
            header,
            max_lines: max_lines.max(1),
            linger,
            groups: HashMap::new(),
            deadlines: VecDeque::new(),
            generation: 0,
            waiting: 0,
        }
    }

    /// Lines waiting in groups.
    pub fn waiting(&self) -> usize {
        self.waiting
    }

    /// When the oldest group is due (perhaps one already sealed: waking
    /// for it costs a turn, nothing more).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.front().map(|(deadline, _, _)| *deadline)
    }

    /// Adds the lines of `packets`, this lane's PUBLISHes of a line each;
    /// a group that reaches `max_lines` is written to `out` as one
    /// PUBLISH. Returns the lines written to `out`.
    pub fn add(&mut self, packets: &[u8], now: Instant, out: &mut Vec<u8>) -> usize {
        let mut sealed = 0;
        let mut rest = packets;
        while let Some((topic, line, after)) = self.header.split(rest) {
            rest = after;
            let group = match self.groups.get_mut(topic) {
                Some(group) => group,
                None => {
                    self.generation += 1;
                    self.deadlines
                        .push_back((now + self.linger, topic.into(), self.generation));
                    self.groups.entry(topic.into()).or_insert(Group {
                        payload: Vec::with_capacity(line.len() * self.max_lines.min(64)),
                        lines: 0,
                        generation: self.generation,
                    })
                }
            };
            if group.lines > 0 {
                group.payload.push(b'\n');
            }
            group.payload.extend_from_slice(line);
            group.lines += 1;
            self.waiting += 1;
            if group.lines >= self.max_lines {
                sealed += self.seal(topic, out);
            }
        }
        debug_assert!(rest.is_empty(), "only whole PUBLISHes of this lane");
        sealed
    }

    /// Writes the groups whose first line has waited `linger` by `now`.
    pub fn seal_due(&mut self, now: Instant, out: &mut Vec<u8>) -> usize {
        let mut sealed = 0;
        while let Some((deadline, _, _)) = self.deadlines.front() {
            if *deadline > now {
                break;
            }
            let (_, topic, generation) = self.deadlines.pop_front().expect("a front");
            if self
                .groups
                .get(&topic)
                .is_some_and(|g| g.generation == generation)
            {
                sealed += self.seal(&topic, out);
            }
        }
        sealed
    }

    /// Writes every group, due or not (the lane is closing).
    pub fn seal_all(&mut self, out: &mut Vec<u8>) -> usize {
        self.deadlines.clear();
        let topics: Vec<Box<[u8]>> = self.groups.keys().cloned().collect();
        topics.iter().map(|topic| self.seal(topic, out)).sum()
    }

    fn seal(&mut self, topic: &[u8], out: &mut Vec<u8>) -> usize {
        let Some(group) = self.groups.remove(topic) else {
            return 0;
        };
        let topic = std::str::from_utf8(topic).expect("a topic this lane encoded");
        self.header.encode(topic, &group.payload, out);
        self.waiting -= group.lines;
        group.lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::config::MqttProtocol;

    fn lines_of(header: PublishHeader, bytes: &[u8]) -> Vec<(String, Vec<String>)> {
        let mut messages = Vec::new();
        let mut rest = bytes;
        while let Some((topic, payload, after)) = header.split(rest) {
            let lines = String::from_utf8(payload.to_vec()).unwrap();
            messages.push((
                String::from_utf8(topic.to_vec()).unwrap(),
                lines.split('\n').map(str::to_string).collect(),
            ));
            rest = after;
        }
        assert!(rest.is_empty());
        messages
    }

    fn published(header: PublishHeader, lines: &[(&str, &str)]) -> Vec<u8> {
        let mut bytes = Vec::new();
        for (topic, line) in lines {
            header.encode(topic, line.as_bytes(), &mut bytes);
        }
        bytes
    }

    #[test]
    fn a_topics_lines_leave_together_when_the_message_is_full_in_order() {
        for protocol in [MqttProtocol::V311, MqttProtocol::V5] {
            let header = PublishHeader::new(protocol, false);
            let mut grouper = Grouper::new(header, 3, Duration::from_secs(1));
            let now = Instant::now();
            let mut out = Vec::new();
            let bytes = published(
                header,
                &[
                    ("a", "{\"seq\":0}"),
                    ("b", "{\"seq\":0}"),
                    ("a", "{\"seq\":1}"),
                    ("a", "{\"seq\":2}"),
                    ("a", "{\"seq\":3}"),
                ],
            );
            assert_eq!(grouper.add(&bytes, now, &mut out), 3);
            assert_eq!(
                lines_of(header, &out),
                [(
                    "a".to_string(),
                    vec![
                        "{\"seq\":0}".to_string(),
                        "{\"seq\":1}".into(),
                        "{\"seq\":2}".into()
                    ]
                )]
            );
            assert_eq!(grouper.waiting(), 2, "b's first and a's fourth wait");
        }
    }

    #[test]
    fn a_group_leaves_once_its_first_line_has_waited_the_linger() {
        let header = PublishHeader::new(MqttProtocol::V311, false);
        let linger = Duration::from_millis(100);
        let mut grouper = Grouper::new(header, 10, linger);
        let start = Instant::now();
        let mut out = Vec::new();
        grouper.add(&published(header, &[("a", "1")]), start, &mut out);
        grouper.add(
            &published(header, &[("b", "1"), ("a", "2")]),
            start + linger / 2,
            &mut out,
        );
        assert!(out.is_empty());
        assert_eq!(grouper.next_deadline(), Some(start + linger));
        assert_eq!(grouper.seal_due(start + linger / 2, &mut out), 0);
        assert_eq!(grouper.seal_due(start + linger, &mut out), 2);
        assert_eq!(
            lines_of(header, &out),
            [("a".to_string(), vec!["1".to_string(), "2".into()])]
        );
        // a begins a new group; b's is still the older.
        out.clear();
        grouper.add(&published(header, &[("a", "3")]), start + linger, &mut out);
        assert_eq!(grouper.seal_due(start + linger * 3 / 2, &mut out), 1);
        assert_eq!(
            lines_of(header, &out),
            [("b".to_string(), vec!["1".to_string()])]
        );
        out.clear();
        assert_eq!(grouper.seal_all(&mut out), 1);
        assert_eq!(
            lines_of(header, &out),
            [("a".to_string(), vec!["3".to_string()])]
        );
        assert_eq!(grouper.waiting(), 0);
        // The deadline of a group sealed for being full is passed over.
        let mut full = Grouper::new(header, 1, linger);
        out.clear();
        assert_eq!(
            full.add(&published(header, &[("a", "1")]), start, &mut out),
            1
        );
        assert_eq!(full.seal_due(start + linger, &mut out), 0);
        assert_eq!(full.next_deadline(), None);
    }
}
