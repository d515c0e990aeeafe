//! Log set-up and rate-limited warnings.
//!
//! Logs go to stderr: coloured text on a terminal, plain text when piped,
//! JSON for log shippers, or `journald` lines whose `<N>` prefix journald
//! reads as the syslog priority (it adds its own timestamps). Per-payload
//! problems are warned about through [`RateLimited`], so a stream of bad
//! input yields one line a minute with a count, not a flood.

use std::collections::HashMap;

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// How log lines look on stderr (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
    Journald,
}

/// Installs the global subscriber.
pub fn init(format: LogFormat, filter: EnvFilter) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
        LogFormat::Journald => builder.event_format(JournaldFormat).init(),
    }
}

/// `<priority>target: message fields`, one line per event.
struct JournaldFormat;

impl<S, N> FormatEvent<S, N> for JournaldFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let metadata = event.metadata();
        write!(
            writer,
            "<{}>{}: ",
            syslog_priority(*metadata.level()),
            metadata.target()
        )?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

const fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// Lets a warning through at most once per `interval` and key, and says
/// how many were held back since the last one.
#[derive(Debug)]
pub struct RateLimited {
    interval: Duration,
    keys: HashMap<&'static str, KeyState>,
}

#[derive(Debug)]
struct KeyState {
    last_logged: Instant,
    held_back: u64,
}

impl RateLimited {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            keys: HashMap::new(),
        }
    }

    /// `Some(held_back)` when this occurrence should be logged (with the
    /// number of occurrences suppressed since the previous line), `None`
    /// when it should only be counted.
    pub fn check(&mut self, key: &'static str, now: Instant) -> Option<u64> {
        match self.keys.get_mut(key) {
            None => {
                self.keys.insert(
                    key,
                    KeyState {
                        last_logged: now,
                        held_back: 0,
                    },
                );
                Some(0)
            }
            Some(state) if now.duration_since(state.last_logged) >= self.interval => {
                let held_back = state.held_back;
                state.last_logged = now;
                state.held_back = 0;
                Some(held_back)
            }
            Some(state) => {
                state.held_back += 1;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_and_key_carrying_the_held_back_count() {
        let start = Instant::now();
        let mut limit = RateLimited::new(Duration::from_secs(60));
        assert_eq!(limit.check("json", start), Some(0));
        for s in 1..=5 {
            assert_eq!(limit.check("json", start + Duration::from_secs(s)), None);
        }
        assert_eq!(limit.check("csv", start), Some(0), "keys are independent");
        assert_eq!(
            limit.check("json", start + Duration::from_secs(60)),
            Some(5)
        );
        assert_eq!(limit.check("json", start + Duration::from_secs(61)), None);
        assert_eq!(
            limit.check("json", start + Duration::from_secs(200)),
            Some(1)
        );
    }

    #[test]
    fn journald_priorities_follow_syslog() {
        assert_eq!(syslog_priority(Level::ERROR), 3);
        assert_eq!(syslog_priority(Level::WARN), 4);
        assert_eq!(syslog_priority(Level::INFO), 6);
        assert_eq!(syslog_priority(Level::DEBUG), 7);
    }
}
