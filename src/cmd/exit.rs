//! Exit codes, and the error that carries one out of a command.

use crate::config::ConfigError;
use crate::daemon::error::DaemonError;
use crate::model::ModelError;
use crate::recording::RecordingError;
use crate::EX_CONFIG;

/// EX_DATAERR: the input data is at fault.
pub const EX_DATAERR: u8 = 65;

/// An error on its way out, with the exit code it deserves.
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(error: E) -> Self {
        let error = error.into();
        let code = if let Some(daemon) = error.downcast_ref::<DaemonError>() {
            daemon.exit_code()
        } else if error.is::<ConfigError>() || error.is::<ModelError>() {
            EX_CONFIG
        } else if error.is::<RecordingError>() {
            EX_DATAERR
        } else {
            1
        };
        Failure { code, error }
    }
}

pub fn failure(code: u8, error: anyhow::Error) -> Failure {
    Failure { code, error }
}
