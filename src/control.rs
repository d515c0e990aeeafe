//! Commands to the online trainer, from the local HTTP endpoint
//! (`POST /control/<command>`, arguments in the query) or an MQTT command
//! topic (a JSON object). They are parsed strictly here and carried out by
//! the scorer between two batches.

use std::sync::mpsc;

use serde::{Deserialize, Serialize};

crate::reason::reason_error!(
    /// Why a command was refused as malformed (the reason goes back to the sender).
    CommandError
);

/// What an operator can ask for.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlCommand {
    /// Forget the served model's role: collect windows and train anew.
    Calibrate(Target),
    /// Train a new model from recent windows judged normal; it replaces the
    /// current one only if it is not worse on a held-back slice of them.
    Retrain(Target),
    /// Serve the previous version of the model directory.
    Rollback(Target),
    /// Say what a time range was: windows overlapping it are never learned
    /// from (abnormal), or count as normal whatever their score (normal).
    Mark(Mark),
}

/// Which model scope a command is for (`training.scope`): one by name
/// (`fleet`, `device:<id>`, `group:<name>`), or every scope when absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    pub scope: Option<String>,
}

impl Target {
    pub fn all() -> Self {
        Self::default()
    }

    pub fn scope(name: &str) -> Self {
        Self {
            scope: Some(name.to_string()),
        }
    }

    /// Whether the command is for the scope named `name`.
    pub fn includes(&self, name: &str) -> bool {
        self.scope.as_deref().is_none_or(|s| s == name)
    }
}

/// A labelled time range, in the devices' milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mark {
    pub label: Label,
    pub from_ms: f64,
    pub to_ms: f64,
    /// Only this device's windows; all devices when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    Normal,
    Abnormal,
}

impl Mark {
    /// Whether a window of `device` spanning `t_start..=t_end` overlaps it.
    pub fn covers(&self, device: &str, t_start: f64, t_end: f64) -> bool {
        self.device.as_deref().is_none_or(|d| d == device)
            && t_start <= self.to_ms
            && t_end >= self.from_ms
    }

    fn check(self) -> Result<Self, CommandError> {
        if !(self.from_ms.is_finite() && self.to_ms.is_finite() && self.from_ms <= self.to_ms) {
            return Err(CommandError(format!(
                "mark needs finite from_ms <= to_ms, got {} and {}",
                self.from_ms, self.to_ms
            )));
        }
        Ok(self)
    }
}

/// The command names, for messages and metric labels.
pub const NAMES: [&str; 4] = ["calibrate", "retrain", "rollback", "mark"];

impl ControlCommand {
    pub const fn as_str(&self) -> &'static str {
        match self {
            ControlCommand::Calibrate(_) => "calibrate",
            ControlCommand::Retrain(_) => "retrain",
            ControlCommand::Rollback(_) => "rollback",
            ControlCommand::Mark(_) => "mark",
        }
    }

    /// A command by name, with its arguments from `query`: `scope=…` for
    /// calibrate, retrain and rollback (optional), and
    /// `label=abnormal&from_ms=…&to_ms=…[&device=…]` for mark.
    pub fn parse(name: &str, query: Option<&str>) -> Result<Self, CommandError> {
        let mut arguments = query_object(name, query.unwrap_or_default())?;
        // Query values are strings; a mark's times are numbers.
        for key in ["from_ms", "to_ms"] {
            if let Some(serde_json::Value::String(text)) = arguments.get(key) {
                let number = text
                    .parse::<f64>()
                    .map_err(|_| format!("{name}: {key} must be a number, got {text:?}"))?;
                arguments.insert(key.into(), serde_json::Value::from(number));
            }
        }
        Self::from_object(name, arguments)
    }

    /// An MQTT command payload: `{"command": "<name>"}`, optionally with
    /// `scope`; for `mark` also `label`, `from_ms`, `to_ms` and optionally
    /// `device`; nothing else.
    pub fn parse_json(payload: &[u8]) -> Result<Self, CommandError> {
        let shape = || format!("expected {{\"command\": \"<{}>\", ...}}", NAMES.join("|"));
        let mut object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(payload).map_err(|e| format!("{}: {e}", shape()))?;
        let name = match object.remove("command") {
            Some(serde_json::Value::String(name)) => name,
            _ => return Err(CommandError(shape())),
        };
        Self::from_object(&name, object)
    }

    fn from_object(
        name: &str,
        arguments: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, CommandError> {
        let target = |mut arguments: serde_json::Map<String, serde_json::Value>| {
            let scope = match arguments.remove("scope") {
                None => None,
                Some(serde_json::Value::String(scope)) if !scope.is_empty() => Some(scope),
                Some(other) => {
                    return Err(format!("{name}: scope must be a scope name, got {other}"))
                }
            };
            if !arguments.is_empty() {
                return Err(format!(
                    "{name} takes only scope, got {:?}",
                    arguments.keys().collect::<Vec<_>>()
                ));
            }
            Ok(Target { scope })
        };
        match name {
            "calibrate" => Ok(ControlCommand::Calibrate(target(arguments)?)),
            "retrain" => Ok(ControlCommand::Retrain(target(arguments)?)),
            "rollback" => Ok(ControlCommand::Rollback(target(arguments)?)),
            "mark" => {
                let mark: Mark = serde_json::from_value(serde_json::Value::Object(arguments))
                    .map_err(|e| format!("mark: {e}"))?;
                Ok(ControlCommand::Mark(mark.check()?))
            }
            _ => Err(CommandError(format!(
                "unknown command {name:?}; one of {}",
                NAMES.join(", ")
            ))),
        }
    }
}

/// `key=value&…`, strictly: each key once.
fn query_object(
    name: &str,
    query: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let mut object = serde_json::Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("{name}: {pair:?} is not key=value"))?;
        let value = percent_decode(value)?;
        if object
            .insert(key.to_string(), serde_json::Value::from(value))
            .is_some()
        {
            return Err(format!("{name}: {key} given twice"));
        }
    }
    Ok(object)
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                // Two hex digits exactly: from_str_radix alone also takes "+f".
                let hex = text
                    .get(i + 1..i + 3)
                    .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent escape in {text:?}"))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} is not UTF-8"))
}

/// Where commands go; cheap to clone, usable from any thread.
#[derive(Debug, Clone)]
pub struct Control(mpsc::Sender<ControlCommand>);

impl Control {
    pub fn channel() -> (Self, mpsc::Receiver<ControlCommand>) {
        let (tx, rx) = mpsc::channel();
        (Self(tx), rx)
    }

    /// False when the scorer is gone (shutting down).
    pub fn send(&self, command: ControlCommand) -> bool {
        self.0.send(command).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_parsed_strictly() {
        assert_eq!(
            ControlCommand::parse_json(br#"{"command":"retrain"}"#),
            Ok(ControlCommand::Retrain(Target::all()))
        );
        assert_eq!(
            ControlCommand::parse("rollback", None),
            Ok(ControlCommand::Rollback(Target::all()))
        );
        assert_eq!(
            ControlCommand::parse_json(br#"{"command":"calibrate","scope":"device:press-1"}"#),
            ControlCommand::parse("calibrate", Some("scope=device%3Apress-1")),
        );
        assert_eq!(
            ControlCommand::parse("calibrate", Some("scope=device:press-1")),
            Ok(ControlCommand::Calibrate(Target::scope("device:press-1")))
        );
        for bad in [
            &br#"{"command":"Retrain"}"#[..],
            br#"{"command":"retrain","extra":1}"#,
            br#"{"cmd":"retrain"}"#,
            br#"retrain"#,
            br#"{"command":"delete-everything"}"#,
            br#"{"command":"mark","label":"abnormal","from_ms":5,"to_ms":1}"#,
            br#"{"command":"mark","label":"weird","from_ms":1,"to_ms":5}"#,
            br#"{"command":"mark","label":"abnormal","from_ms":1}"#,
            br#"{"command":"retrain","scope":7}"#,
            br#"{"command":"retrain","scope":""}"#,
            br#"{"command":"mark","label":"abnormal","from_ms":"1","to_ms":2}"#,
        ] {
            assert!(
                ControlCommand::parse_json(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(ControlCommand::parse("x", None)
            .unwrap_err()
            .0
            .contains("calibrate, retrain, rollback, mark"));
        assert!(ControlCommand::parse("retrain", Some("now=1")).is_err());
        assert!(ControlCommand::parse("retrain", Some("scope=a&scope=b")).is_err());
    }

    #[test]
    fn percent_escapes_are_two_hex_digits() {
        assert_eq!(
            ControlCommand::parse("retrain", Some("scope=a%2Fb+c")),
            Ok(ControlCommand::Retrain(Target::scope("a/b c")))
        );
        // u8::from_str_radix takes a sign: "%+1" once decoded to 0x01.
        for bad in [
            "scope=%+1",
            "scope=%-1",
            "scope=%1",
            "scope=%zz",
            "scope=%",
            "scope=%e9",
        ] {
            assert!(
                ControlCommand::parse("retrain", Some(bad)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn marks_from_json_and_from_a_query() {
        let json = ControlCommand::parse_json(
            br#"{"command":"mark","label":"abnormal","from_ms":1000,"to_ms":2000,"device":"press-1"}"#,
        )
        .unwrap();
        let query = ControlCommand::parse(
            "mark",
            Some("label=abnormal&from_ms=1000&to_ms=2e3&device=press%2D1"),
        )
        .unwrap();
        assert_eq!(json, query);
        let ControlCommand::Mark(mark) = json else {
            panic!("a mark")
        };
        assert!(mark.covers("press-1", 1900.0, 4460.0));
        assert!(!mark.covers("press-1", 2001.0, 4460.0));
        assert!(!mark.covers("press-2", 1500.0, 1600.0));
        for bad in [
            "label=abnormal&from_ms=1&to_ms=2&from_ms=3",
            "label=abnormal&from_ms=x&to_ms=2",
            "label=abnormal&from_ms=1&to_ms=2&colour=red",
            "label=abnormal&to_ms=2",
            "label=abnormal&from_ms=1&to_ms=2&device=%zz",
        ] {
            assert!(ControlCommand::parse("mark", Some(bad)).is_err(), "{bad}");
        }
    }
}
