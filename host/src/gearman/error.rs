//! The error type shared by the Gearman codec, worker, admin and client modules.

use std::time::Duration;

/// Everything that can go wrong while talking to a Gearman server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket failed (connect, read or write).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent bytes that are not valid Gearman, or we were asked to encode something that
    /// cannot be encoded. The connection cannot be trusted after this.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server answered with an `ERROR` packet or an `ERR ...` admin line.
    #[error("server error {code}: {text}")]
    Server {
        /// The error code (`JOB_NOT_FOUND`, `UNKNOWN_COMMAND`, ...).
        code: String,
        /// The human-readable text that came with it.
        text: String,
    },
    /// An operation did not finish in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The connection was closed (by the peer or because the local side shut down).
    #[error("connection closed")]
    Closed,
    /// A configuration value cannot be used.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl Error {
    pub(crate) fn protocol(msg: impl Into<String>) -> Self {
        Error::Protocol(msg.into())
    }
}

/// Shorthand for results in this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;
