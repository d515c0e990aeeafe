//! What the log says of the feature lines a lane dropped (pure).

use std::time::Duration;

use crate::logging::RateLimited;

/// What the log says of dropped lines: at most a line a minute, with the
/// count since the last, and what to do about it.
pub(crate) struct DropWarning {
    limit: RateLimited,
    dropped: usize,
}

impl DropWarning {
    pub(crate) fn new() -> Self {
        Self {
            limit: RateLimited::new(Duration::from_secs(60)),
            dropped: 0,
        }
    }

    /// The warning to log for `dropped` more lines, if one is due.
    pub(crate) fn note(
        &mut self,
        dropped: usize,
        connected: bool,
        now: std::time::Instant,
    ) -> Option<String> {
        if dropped == 0 {
            return None;
        }
        self.dropped += dropped;
        self.limit.check("dropped", now)?;
        let lines = std::mem::take(&mut self.dropped);
        Some(if connected {
            format!(
                "{lines} feature lines dropped (output.mqtt.queue full while connected): the broker \
                 takes them slower than they are made; output.mqtt.features_connections spreads \
                 them over more connections (docs/outputs.md, MQTT out)"
            )
        } else {
            format!(
                "{lines} feature lines dropped (output.mqtt.queue full while the broker is away)"
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_lines_are_logged_once_a_minute_with_the_count_and_the_remedy() {
        let mut warning = DropWarning::new();
        let start = std::time::Instant::now();
        assert_eq!(warning.note(0, true, start), None, "nothing dropped");
        let first = warning
            .note(5, true, start)
            .expect("the first drop is logged");
        assert!(first.starts_with("5 feature lines dropped"), "{first}");
        assert!(
            first.contains("output.mqtt.features_connections"),
            "{first}"
        );
        assert_eq!(warning.note(7, true, start + Duration::from_secs(30)), None);
        let later = warning
            .note(1, false, start + Duration::from_secs(61))
            .expect("a minute later");
        assert!(later.starts_with("8 feature lines dropped"), "{later}");
        assert!(later.contains("the broker is away"), "{later}");
        assert!(!later.contains("features_connections"), "{later}");
    }
}
