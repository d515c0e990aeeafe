//! Commands to the online trainer, from the local HTTP endpoint
//! (`POST /control/<command>`, arguments in the query) or an MQTT command
//! topic (a JSON object). They are parsed strictly here and carried out by
//! the scorer between two batches.

use std::sync::mpsc;

use serde::Deserialize;

/// What an operator can ask for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Forget the served model's role: collect windows and train anew.
    Calibrate,
    /// Train a new model from recent windows judged normal; it replaces the
    /// current one only if it is not worse on a held-back slice of them.
    Retrain,
    /// Serve the previous version of the model directory.
    Rollback,
    /// Say what a time range was: windows overlapping it are never learned
    /// from (abnormal), or count as normal whatever their score (normal).
    Mark(Mark),
}

/// A labelled time range, in the devices' milliseconds.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mark {
    pub label: Label,
    pub from_ms: f64,
    pub to_ms: f64,
    /// Only this device's windows; all devices when absent.
    #[serde(default)]
    pub device: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
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

    fn check(self) -> Result<Self, String> {
        if !(self.from_ms.is_finite() && self.to_ms.is_finite() && self.from_ms <= self.to_ms) {
            return Err(format!(
                "mark needs finite from_ms <= to_ms, got {} and {}",
                self.from_ms, self.to_ms
            ));
        }
        Ok(self)
    }
}

/// The command names, for messages and metric labels.
pub const NAMES: [&str; 4] = ["calibrate", "retrain", "rollback", "mark"];

impl Command {
    pub const fn as_str(&self) -> &'static str {
        match self {
            Command::Calibrate => "calibrate",
            Command::Retrain => "retrain",
            Command::Rollback => "rollback",
            Command::Mark(_) => "mark",
        }
    }

    /// A command by name, with `mark`'s arguments from `query`
    /// (`label=abnormal&from_ms=…&to_ms=…[&device=…]`).
    pub fn parse(name: &str, query: Option<&str>) -> Result<Self, String> {
        let no_arguments = |command: Command| match query {
            None | Some("") => Ok(command),
            Some(query) => Err(format!("{name} takes no arguments, got {query:?}")),
        };
        match name {
            "calibrate" => no_arguments(Command::Calibrate),
            "retrain" => no_arguments(Command::Retrain),
            "rollback" => no_arguments(Command::Rollback),
            "mark" => {
                let mark: Mark = serde_urlencoded_mark(query.unwrap_or_default())?;
                Ok(Command::Mark(mark.check()?))
            }
            _ => Err(format!(
                "unknown command {name:?}; one of {}",
                NAMES.join(", ")
            )),
        }
    }

    /// An MQTT command payload: `{"command": "<name>"}`, and for `mark`
    /// also `label`, `from_ms`, `to_ms` and optionally `device`; nothing
    /// else.
    pub fn parse_json(payload: &[u8]) -> Result<Self, String> {
        let shape = || format!("expected {{\"command\": \"<{}>\", ...}}", NAMES.join("|"));
        let mut object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(payload).map_err(|e| format!("{}: {e}", shape()))?;
        let name = match object.remove("command") {
            Some(serde_json::Value::String(name)) => name,
            _ => return Err(shape()),
        };
        match name.as_str() {
            "mark" => {
                let mark: Mark = serde_json::from_value(serde_json::Value::Object(object))
                    .map_err(|e| format!("mark: {e}"))?;
                Ok(Command::Mark(mark.check()?))
            }
            _ if !object.is_empty() => Err(format!(
                "{name} takes no arguments, got {:?}",
                object.keys().collect::<Vec<_>>()
            )),
            _ => Self::parse(&name, None),
        }
    }
}

/// `label=…&from_ms=…&to_ms=…[&device=…]`, strictly: each key once, no
/// other key.
fn serde_urlencoded_mark(query: &str) -> Result<Mark, String> {
    let mut object = serde_json::Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("mark: {pair:?} is not key=value"))?;
        let value = percent_decode(value)?;
        let json = match key {
            "from_ms" | "to_ms" => serde_json::Value::from(
                value
                    .parse::<f64>()
                    .map_err(|_| format!("mark: {key} must be a number, got {value:?}"))?,
            ),
            _ => serde_json::Value::from(value),
        };
        if object.insert(key.to_string(), json).is_some() {
            return Err(format!("mark: {key} given twice"));
        }
    }
    serde_json::from_value(serde_json::Value::Object(object)).map_err(|e| format!("mark: {e}"))
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = text
                    .get(i + 1..i + 3)
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
pub struct Control(mpsc::Sender<Command>);

impl Control {
    pub fn channel() -> (Self, mpsc::Receiver<Command>) {
        let (tx, rx) = mpsc::channel();
        (Self(tx), rx)
    }

    /// False when the scorer is gone (shutting down).
    pub fn send(&self, command: Command) -> bool {
        self.0.send(command).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_parsed_strictly() {
        assert_eq!(
            Command::parse_json(br#"{"command":"retrain"}"#),
            Ok(Command::Retrain)
        );
        assert_eq!(Command::parse("rollback", None), Ok(Command::Rollback));
        for bad in [
            &br#"{"command":"Retrain"}"#[..],
            br#"{"command":"retrain","extra":1}"#,
            br#"{"cmd":"retrain"}"#,
            br#"retrain"#,
            br#"{"command":"delete-everything"}"#,
            br#"{"command":"mark","label":"abnormal","from_ms":5,"to_ms":1}"#,
            br#"{"command":"mark","label":"weird","from_ms":1,"to_ms":5}"#,
            br#"{"command":"mark","label":"abnormal","from_ms":1}"#,
        ] {
            assert!(
                Command::parse_json(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(Command::parse("x", None)
            .unwrap_err()
            .contains("calibrate, retrain, rollback, mark"));
        assert!(Command::parse("retrain", Some("now=1")).is_err());
    }

    #[test]
    fn marks_from_json_and_from_a_query() {
        let json = Command::parse_json(
            br#"{"command":"mark","label":"abnormal","from_ms":1000,"to_ms":2000,"device":"press-1"}"#,
        )
        .unwrap();
        let query = Command::parse(
            "mark",
            Some("label=abnormal&from_ms=1000&to_ms=2e3&device=press%2D1"),
        )
        .unwrap();
        assert_eq!(json, query);
        let Command::Mark(mark) = json else {
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
            assert!(Command::parse("mark", Some(bad)).is_err(), "{bad}");
        }
    }
}
