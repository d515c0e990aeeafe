//! Commands to the online trainer, from the local HTTP endpoint
//! (`POST /control/<command>`) or an MQTT command topic. They are parsed
//! strictly here and carried out by the scorer between two batches.

use std::sync::mpsc;

use serde::Deserialize;

/// What an operator can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Command {
    /// Forget the served model's role: collect windows and train anew.
    Calibrate,
    /// Train a new model from recent windows judged normal; it replaces the
    /// current one only if it is not worse on a held-back slice of them.
    Retrain,
    /// Serve the previous version of the model directory.
    Rollback,
}

impl Command {
    pub const ALL: [Command; 3] = [Command::Calibrate, Command::Retrain, Command::Rollback];

    pub const fn as_str(self) -> &'static str {
        match self {
            Command::Calibrate => "calibrate",
            Command::Retrain => "retrain",
            Command::Rollback => "rollback",
        }
    }

    pub fn parse_name(name: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == name)
            .ok_or_else(|| {
                format!(
                    "unknown command {name:?}; one of {}",
                    Self::ALL.map(Command::as_str).join(", ")
                )
            })
    }

    /// An MQTT command payload: exactly `{"command": "<name>"}`.
    pub fn parse_json(payload: &[u8]) -> Result<Self, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Message {
            command: String,
        }
        let message: Message = serde_json::from_slice(payload)
            .map_err(|e| format!("expected {{\"command\": \"<name>\"}}: {e}"))?;
        Self::parse_name(&message.command)
    }
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
        assert_eq!(Command::parse_name("rollback"), Ok(Command::Rollback));
        for bad in [
            &br#"{"command":"Retrain"}"#[..],
            br#"{"command":"retrain","extra":1}"#,
            br#"{"cmd":"retrain"}"#,
            br#"retrain"#,
            br#"{"command":"delete-everything"}"#,
        ] {
            assert!(
                Command::parse_json(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(Command::parse_name("x")
            .unwrap_err()
            .contains("calibrate, retrain, rollback"));
    }
}
