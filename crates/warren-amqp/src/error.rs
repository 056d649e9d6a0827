//! Errors that end a channel or a connection, with the reply code and text
//! the client is sent.

use thiserror::Error;
use warren_core::reply_code;

/// Why the front end closes a channel or the connection.
#[derive(Debug, Error)]
pub enum AmqpError {
    /// Closes one channel with `channel.close`.
    #[error("channel {channel}: {code} {text}")]
    Channel {
        channel: u16,
        code: u16,
        text: String,
        class_id: u16,
        method_id: u16,
    },
    /// Closes the connection with `connection.close`.
    #[error("connection: {code} {text}")]
    Connection {
        code: u16,
        text: String,
        class_id: u16,
        method_id: u16,
    },
    /// The socket failed or the peer went away; nothing more can be sent.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl AmqpError {
    pub fn connection(code: u16, text: impl Into<String>) -> Self {
        AmqpError::Connection {
            code,
            text: text.into(),
            class_id: 0,
            method_id: 0,
        }
    }

    pub fn connection_for(code: u16, text: impl Into<String>, (class_id, method_id): (u16, u16)) -> Self {
        AmqpError::Connection {
            code,
            text: text.into(),
            class_id,
            method_id,
        }
    }

    pub fn channel(channel: u16, code: u16, text: impl Into<String>, (class_id, method_id): (u16, u16)) -> Self {
        AmqpError::Channel {
            channel,
            code,
            text: text.into(),
            class_id,
            method_id,
        }
    }

    /// 505 UNEXPECTED_FRAME on the connection.
    pub fn unexpected_frame(text: impl Into<String>) -> Self {
        Self::connection(
            reply_code::UNEXPECTED_FRAME,
            format!("UNEXPECTED_FRAME - {}", text.into()),
        )
    }

    /// 504 CHANNEL_ERROR on the connection.
    pub fn channel_error(text: impl Into<String>) -> Self {
        Self::connection(reply_code::CHANNEL_ERROR, format!("CHANNEL_ERROR - {}", text.into()))
    }
}
