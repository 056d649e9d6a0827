//! Errors the core reports for a command, with the AMQP reply code RabbitMQ
//! would send.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// AMQP 0-9-1 reply codes used by the core.
pub mod reply_code {
    pub const CONTENT_TOO_LARGE: u16 = 311;
    pub const CONNECTION_FORCED: u16 = 320;
    pub const NO_ROUTE: u16 = 312;
    pub const ACCESS_REFUSED: u16 = 403;
    pub const NOT_FOUND: u16 = 404;
    pub const RESOURCE_LOCKED: u16 = 405;
    pub const PRECONDITION_FAILED: u16 = 406;
    pub const FRAME_ERROR: u16 = 501;
    pub const SYNTAX_ERROR: u16 = 502;
    pub const COMMAND_INVALID: u16 = 503;
    pub const CHANNEL_ERROR: u16 = 504;
    pub const UNEXPECTED_FRAME: u16 = 505;
    pub const RESOURCE_ERROR: u16 = 506;
    pub const NOT_ALLOWED: u16 = 530;
    pub const NOT_IMPLEMENTED: u16 = 540;
    pub const INTERNAL_ERROR: u16 = 541;
}

/// A command that could not be applied. The text is what the client sees in
/// `channel.close` / `connection.close`, worded as RabbitMQ words it.
#[derive(Clone, Debug, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum CoreError {
    /// 404: a named exchange, queue, vhost or consumer does not exist.
    #[error("NOT_FOUND - {0}")]
    NotFound(String),
    /// 406: redeclare with other attributes, unknown delivery tag, bad
    /// argument, if-unused / if-empty violated.
    #[error("PRECONDITION_FAILED - {0}")]
    PreconditionFailed(String),
    /// 405: another connection's exclusive queue, or an exclusive consumer.
    #[error("RESOURCE_LOCKED - {0}")]
    ResourceLocked(String),
    /// 403: reserved names (`amq.*`), the default exchange, internal exchanges.
    #[error("ACCESS_REFUSED - {0}")]
    AccessRefused(String),
    /// 530 (connection-level): e.g. the vhost does not exist.
    #[error("NOT_ALLOWED - {0}")]
    NotAllowed(String),
    /// 503: a command not valid in this state (e.g. a reused consumer tag
    /// is 530 in RabbitMQ; this is for the others).
    #[error("COMMAND_INVALID - {0}")]
    CommandInvalid(String),
    /// 540: recognised but not implemented (e.g. `immediate`).
    #[error("NOT_IMPLEMENTED - {0}")]
    NotImplemented(String),
    /// 541: the command could not be committed (no leader, shutting down).
    /// Never produced by apply; the proposer reports it for a failed batch.
    #[error("INTERNAL_ERROR - {0}")]
    Unavailable(String),
}

impl CoreError {
    /// The AMQP reply code for this error.
    pub fn reply_code(&self) -> u16 {
        match self {
            CoreError::NotFound(_) => reply_code::NOT_FOUND,
            CoreError::PreconditionFailed(_) => reply_code::PRECONDITION_FAILED,
            CoreError::ResourceLocked(_) => reply_code::RESOURCE_LOCKED,
            CoreError::AccessRefused(_) => reply_code::ACCESS_REFUSED,
            CoreError::NotAllowed(_) => reply_code::NOT_ALLOWED,
            CoreError::CommandInvalid(_) => reply_code::COMMAND_INVALID,
            CoreError::NotImplemented(_) => reply_code::NOT_IMPLEMENTED,
            CoreError::Unavailable(_) => reply_code::INTERNAL_ERROR,
        }
    }

    /// Whether the error closes the whole connection rather than the channel.
    pub fn is_connection_error(&self) -> bool {
        matches!(
            self,
            CoreError::NotAllowed(_)
                | CoreError::CommandInvalid(_)
                | CoreError::NotImplemented(_)
                | CoreError::Unavailable(_)
        )
    }
}
