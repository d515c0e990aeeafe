//! Topic filters, templates and device ids (pure).
//!
//! An input filter names the device with a whole `{device}` segment, e.g.
//! `sensors/{device}/accel`; it is subscribed with `+` in its place, and the
//! matching segment of each message's topic is the device id. Output topics
//! are templates with `{device}` replaced by the sanitised id.
//!
//! A filter may start with `$share/<group>/` (an MQTT shared subscription:
//! the broker hands each message to one member of the group). The prefix
//! is subscribed as given, and messages arrive on their plain topic, so the
//! device segment is matched against the rest of the filter.

use std::borrow::Cow;

crate::reason::reason_error!(
    /// Why a topic filter, template or share group is refused.
    TopicError
);

const DEVICE: &str = "{device}";
const SHARE: &str = "$share/";

/// Longest device id put into an output topic, in characters.
pub const MAX_DEVICE_CHARS: usize = 64;

/// A subscription filter with the position of its device segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceFilter {
    /// What is subscribed: the filter with `+` for `{device}`.
    pub subscription: String,
    segments: Vec<String>,
    /// None: the device is named by a payload field instead.
    device_index: Option<usize>,
}

/// Where a matching message's device id is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSource<'t> {
    Topic(&'t str),
    Payload,
}

impl DeviceFilter {
    /// A filter naming its device with a `{device}` level.
    pub fn parse(filter: &str) -> Result<Self, TopicError> {
        Self::parse_with(filter, false)
    }

    /// `device_in_payload`: a filter without `{device}` is allowed, its
    /// messages name their device in a payload field.
    pub fn parse_with(filter: &str, device_in_payload: bool) -> Result<Self, TopicError> {
        let (share_prefix, filter) = match filter.strip_prefix(SHARE) {
            Some(rest) => {
                let (group, rest) = rest
                    .split_once('/')
                    .ok_or_else(|| format!("{SHARE}{rest:?}: expected $share/<group>/<filter>"))?;
                check_share_group(group)?;
                (format!("{SHARE}{group}/"), rest)
            }
            None => (String::new(), filter),
        };
        if filter.is_empty() {
            return Err("a topic filter is empty".into());
        }
        let segments: Vec<String> = filter.split('/').map(str::to_string).collect();
        let mut device_index = None;
        for (i, segment) in segments.iter().enumerate() {
            if segment == DEVICE {
                if device_index.replace(i).is_some() {
                    return Err(TopicError(format!("{filter:?} has {DEVICE} twice")));
                }
            } else if segment.contains('{') || segment.contains('}') {
                return Err(TopicError(format!(
                    "{filter:?}: {DEVICE} must be a whole segment, and no other braces"
                )));
            } else if segment == "#" {
                if i + 1 != segments.len() {
                    return Err(TopicError(format!(
                        "{filter:?}: # must be the last segment"
                    )));
                }
            } else if segment != "+" && (segment.contains('+') || segment.contains('#')) {
                return Err(TopicError(format!(
                    "{filter:?}: + and # must be whole segments"
                )));
            }
        }
        if device_index.is_none() && !device_in_payload {
            return Err(TopicError(format!(
                "{filter:?} has no {DEVICE} segment (or set input.mqtt.device_field to take the \
                 device from the payload)"
            )));
        }
        let subscription = share_prefix
            + &segments
                .iter()
                .map(|s| if s == DEVICE { "+" } else { s.as_str() })
                .collect::<Vec<_>>()
                .join("/");
        Ok(Self {
            subscription,
            segments,
            device_index,
        })
    }

    /// Whether the device is a level of the topic (else a payload field).
    pub fn names_device(&self) -> bool {
        self.device_index.is_some()
    }

    /// The device id when `topic` matches this filter and names it.
    pub fn device<'t>(&self, topic: &'t str) -> Option<&'t str> {
        match self.matches(topic)? {
            DeviceSource::Topic(device) => Some(device),
            DeviceSource::Payload => None,
        }
    }

    /// Whether `topic` matches, and where its device id is.
    pub fn matches<'t>(&self, topic: &'t str) -> Option<DeviceSource<'t>> {
        let mut device = None;
        let mut levels = topic.split('/');
        for (i, pattern) in self.segments.iter().enumerate() {
            if pattern == "#" {
                // `#` also matches the parent level: `a/#` matches `a`.
                break;
            }
            let level = levels.next()?;
            if Some(i) == self.device_index {
                device = Some(level);
            } else if pattern != "+" && pattern != level {
                return None;
            }
        }
        if self.segments.last().is_some_and(|s| s != "#") && levels.next().is_some() {
            return None;
        }
        // MQTT wildcards do not match `$SYS`-like topics at the first level,
        // and an empty level names no device.
        let Some(index) = self.device_index else {
            return Some(DeviceSource::Payload);
        };
        let system = |d: &str| index == 0 && d.starts_with('$');
        device
            .filter(|d| !d.is_empty() && !system(d))
            .map(DeviceSource::Topic)
    }
}

/// A shared-subscription group name: one non-empty topic level without
/// wildcards.
pub fn check_share_group(group: &str) -> Result<(), TopicError> {
    if group.is_empty() || group.contains(['/', '+', '#']) || group.chars().any(char::is_control) {
        Err(TopicError(format!(
            "shared subscription group {group:?} must be one non-empty level without /, + or #"
        )))
    } else {
        Ok(())
    }
}

/// An output topic with a `{device}` placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    prefix: String,
    suffix: String,
}

impl Template {
    pub fn parse(template: &str) -> Result<Self, TopicError> {
        let (prefix, suffix) = template
            .split_once(DEVICE)
            .ok_or_else(|| format!("{template:?} has no {DEVICE}"))?;
        if suffix.contains(DEVICE) {
            return Err(TopicError(format!("{template:?} has {DEVICE} twice")));
        }
        check_topic_name(&format!("{prefix}x{suffix}"))?;
        Ok(Self {
            prefix: prefix.into(),
            suffix: suffix.into(),
        })
    }

    /// The topic for `device`, sanitised.
    pub fn render(&self, device: &str) -> String {
        let mut topic = String::new();
        self.render_into(device, &mut topic);
        topic
    }

    /// The topic for `device` into `topic` (cleared first): once a window,
    /// so pushes into a buffer kept between windows, not `format!`.
    pub fn render_into(&self, device: &str, topic: &mut String) {
        let device = sanitize_device(device);
        topic.clear();
        topic.reserve(self.prefix.len() + device.len() + self.suffix.len());
        topic.push_str(&self.prefix);
        topic.push_str(&device);
        topic.push_str(&self.suffix);
    }
}

/// A topic one can publish to: not empty, no wildcard, no NUL, no braces.
pub fn check_topic_name(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err("a topic is empty".into());
    }
    if topic.contains(['+', '#', '\0']) {
        return Err(TopicError(format!(
            "{topic:?}: no + or # (or NUL) in a topic to publish to"
        )));
    }
    if topic.contains(['{', '}']) {
        return Err(TopicError(format!("{topic:?}: unknown placeholder")));
    }
    if topic.len() > 1024 {
        return Err("a topic longer than 1024 bytes".into());
    }
    Ok(())
}

/// A device id made safe for one topic level: `+`, `#`, `/` and control
/// characters become `_`, at most [`MAX_DEVICE_CHARS`] characters are
/// kept, and an empty id becomes `_`. Ids from an input topic can carry
/// nothing worse than control characters, but ids from other sources
/// (a CSV column) can carry anything.
pub fn sanitize_device(device: &str) -> Cow<'_, str> {
    let bad = |c: char| matches!(c, '+' | '#' | '/') || c.is_control();
    let clean = !device.is_empty()
        && device.chars().count() <= MAX_DEVICE_CHARS
        && !device.chars().any(bad);
    if clean {
        return Cow::Borrowed(device);
    }
    if device.is_empty() {
        return Cow::Borrowed("_");
    }
    Cow::Owned(
        device
            .chars()
            .take(MAX_DEVICE_CHARS)
            .map(|c| if bad(c) { '_' } else { c })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_name_the_device_segment() {
        let f = DeviceFilter::parse("sensors/{device}/accel").unwrap();
        assert_eq!(f.subscription, "sensors/+/accel");
        assert_eq!(f.device("sensors/w1/accel"), Some("w1"));
        assert_eq!(f.device("sensors/w1/gyro"), None);
        assert_eq!(f.device("sensors/w1/accel/x"), None);
        assert_eq!(f.device("sensors/w1"), None);
        assert_eq!(f.device("sensors//accel"), None, "empty level");

        let f = DeviceFilter::parse("+/site/{device}/#").unwrap();
        assert_eq!(f.subscription, "+/site/+/#");
        assert_eq!(f.device("a/site/d7/x/y"), Some("d7"));
        assert_eq!(f.device("a/site/d7"), Some("d7"));
        assert_eq!(f.device("a/other/d7/x"), None);

        let f = DeviceFilter::parse("{device}").unwrap();
        assert_eq!(f.device("$SYS"), None);
        assert_eq!(f.device("d"), Some("d"));
    }

    #[test]
    fn shared_subscriptions_keep_their_prefix_and_match_plain_topics() {
        let f = DeviceFilter::parse("$share/fleet/sensors/{device}/accel").unwrap();
        assert_eq!(f.subscription, "$share/fleet/sensors/+/accel");
        assert_eq!(f.device("sensors/w1/accel"), Some("w1"));
        assert_eq!(f.device("$share/fleet/sensors/w1/accel"), None);
        for bad in [
            "$share/fleet",
            "$share//sensors/{device}",
            "$share/a+b/{device}",
            "$share/g/",
        ] {
            assert!(DeviceFilter::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_filter_without_device_level_when_the_payload_names_it() {
        assert!(DeviceFilter::parse("plant/accel/#").is_err());
        let f = DeviceFilter::parse_with("plant/accel/#", true).unwrap();
        assert_eq!(f.subscription, "plant/accel/#");
        assert_eq!(f.matches("plant/accel/line1"), Some(DeviceSource::Payload));
        assert_eq!(f.matches("plant/gyro/line1"), None);
        let f = DeviceFilter::parse_with("s/{device}/a", true).unwrap();
        assert_eq!(f.matches("s/w1/a"), Some(DeviceSource::Topic("w1")));
    }

    #[test]
    fn bad_filters_are_refused() {
        for bad in [
            "",
            "sensors/accel",
            "sensors/{device}/{device}",
            "sensors/x{device}/accel",
            "sensors/{dev}/accel",
            "sensors/#/{device}",
            "sensors/a+/{device}",
        ] {
            assert!(DeviceFilter::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn templates_render_sanitised_devices() {
        let t = Template::parse("accelwatch/{device}/features").unwrap();
        assert_eq!(t.render("w1"), "accelwatch/w1/features");
        assert_eq!(t.render("a/b+#\n"), "accelwatch/a_b___/features");
        assert!(Template::parse("accelwatch/features").is_err());
        assert!(Template::parse("a/{device}/{device}").is_err());
        assert!(Template::parse("a/+/{device}").is_err());
        assert!(Template::parse("a/{other}/{device}").is_err());
        assert!(check_topic_name("accelwatch/status").is_ok());
        assert!(check_topic_name("accelwatch/#").is_err());
    }

    #[test]
    fn device_ids_are_sanitised() {
        assert!(matches!(
            sanitize_device("watch-9"),
            Cow::Borrowed("watch-9")
        ));
        assert_eq!(sanitize_device(""), "_");
        assert_eq!(sanitize_device("a/b"), "a_b");
        assert_eq!(sanitize_device("+#"), "__");
        assert_eq!(sanitize_device("x\u{0}\u{7f}\t"), "x___");
        assert_eq!(sanitize_device("é😀"), "é😀", "non-ASCII is fine");
        let long = "ü".repeat(100);
        assert_eq!(sanitize_device(&long).chars().count(), MAX_DEVICE_CHARS);
    }
}
