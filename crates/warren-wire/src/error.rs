//! [`WireError`]: everything that can go wrong between bytes and frames.

/// AMQP reply code 501 FRAME_ERROR.
pub const FRAME_ERROR: u16 = 501;
/// AMQP reply code 503 COMMAND_INVALID.
pub const COMMAND_INVALID: u16 = 503;
/// AMQP reply code 403 ACCESS_REFUSED.
pub const ACCESS_REFUSED: u16 = 403;
/// AMQP reply code 540 NOT_IMPLEMENTED.
pub const NOT_IMPLEMENTED: u16 = 540;
/// AMQP reply code 541 INTERNAL_ERROR.
pub const INTERNAL_ERROR: u16 = 541;

/// A frame or SASL response that could not be decoded, or a frame that could
/// not be encoded.
///
/// Every decode error is a connection-level (hard) error: the server answers
/// with `connection.close` carrying [`WireError::reply_code`] and the
/// `Display` text as reply text (truncated to a short string), except
/// [`WireError::BadProtocolHeader`], after which the server writes
/// [`crate::PROTOCOL_HEADER`] and closes the socket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The first 8 bytes were not `AMQP\x00\x00\x09\x01`.
    #[error("bad protocol header: expected AMQP 0-9-1 (\"AMQP\\x00\\x00\\x09\\x01\")")]
    BadProtocolHeader,
    /// The frame header announced a frame (payload + 8 bytes of framing)
    /// larger than the negotiated `frame_max`.
    #[error("frame of {size} bytes exceeds frame_max {max}")]
    FrameTooLarge {
        /// Whole frame size in bytes: payload length + 8.
        size: u64,
        /// The negotiated maximum.
        max: u32,
    },
    /// The octet after the payload was not `0xCE`.
    #[error("invalid frame end octet 0x{0:02X} (expected 0xCE)")]
    BadFrameEnd(u8),
    /// The frame type octet is not method (1), header (2), body (3) or
    /// heartbeat (8).
    #[error("unknown frame type {0}")]
    UnknownFrameType(u8),
    /// A method frame named a class/method pair that AMQP 0-9-1 (with
    /// RabbitMQ's extensions) does not define.
    #[error("unknown method: class {class_id}, method {method_id}")]
    UnknownMethod {
        /// Class id found in the frame.
        class_id: u16,
        /// Method id found in the frame.
        method_id: u16,
    },
    /// A frame whose payload could not be decoded (truncated fields, a field
    /// table whose length lies, trailing bytes, a non-empty heartbeat …).
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// `connection.start-ok` named a SASL mechanism we do not offer.
    #[error("unsupported authentication mechanism {0:?}")]
    UnsupportedMechanism(String),
    /// The SASL response could not be parsed for its mechanism.
    #[error("invalid SASL response: {0}")]
    BadCredentials(String),
    /// A frame could not be encoded (e.g. a content header larger than
    /// `frame_max`, a string too long for its wire type).
    #[error("cannot encode frame: {0}")]
    Encode(String),
}

impl WireError {
    /// The AMQP reply code the server sends in `connection.close` for this
    /// error.
    ///
    /// Chosen to match RabbitMQ (`rabbit_reader`, `rabbit_binary_parser`):
    /// - every framing and decoding problem, including method arguments that
    ///   cannot be decoded ("cannot decode …"), is 501 FRAME_ERROR — the
    ///   spec's SYNTAX_ERROR (502) is for values that decode but are illegal,
    ///   which is the front end's business, not the codec's;
    /// - an unknown class/method id is 540 NOT_IMPLEMENTED;
    /// - an unknown SASL mechanism is 503 COMMAND_INVALID (RabbitMQ:
    ///   "unknown authentication mechanism");
    /// - an unparsable SASL response is 403 ACCESS_REFUSED, as for any
    ///   failed login;
    /// - a failure to encode our own frame is 541 INTERNAL_ERROR.
    ///
    /// [`WireError::BadProtocolHeader`] reports 501 for completeness, but the
    /// server never sends `connection.close` for it (it writes
    /// [`crate::PROTOCOL_HEADER`] and closes).
    #[must_use]
    pub fn reply_code(&self) -> u16 {
        match self {
            WireError::BadProtocolHeader
            | WireError::FrameTooLarge { .. }
            | WireError::BadFrameEnd(_)
            | WireError::UnknownFrameType(_)
            | WireError::Malformed(_) => FRAME_ERROR,
            WireError::UnknownMethod { .. } => NOT_IMPLEMENTED,
            WireError::UnsupportedMechanism(_) => COMMAND_INVALID,
            WireError::BadCredentials(_) => ACCESS_REFUSED,
            WireError::Encode(_) => INTERNAL_ERROR,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_codes_follow_rabbitmq() {
        assert_eq!(WireError::BadFrameEnd(0).reply_code(), 501);
        assert_eq!(WireError::UnknownFrameType(9).reply_code(), 501);
        assert_eq!(WireError::FrameTooLarge { size: 9, max: 8 }.reply_code(), 501);
        assert_eq!(WireError::Malformed("x".into()).reply_code(), 501);
        assert_eq!(
            WireError::UnknownMethod {
                class_id: 1,
                method_id: 2
            }
            .reply_code(),
            540
        );
        assert_eq!(WireError::UnsupportedMechanism("X".into()).reply_code(), 503);
        assert_eq!(WireError::BadCredentials("x".into()).reply_code(), 403);
        assert_eq!(WireError::Encode("x".into()).reply_code(), 541);
    }

    #[test]
    fn messages_say_what_was_wrong() {
        assert_eq!(
            WireError::FrameTooLarge {
                size: 1_073_741_832,
                max: 131_072
            }
            .to_string(),
            "frame of 1073741832 bytes exceeds frame_max 131072"
        );
        assert_eq!(
            WireError::BadFrameEnd(0xAB).to_string(),
            "invalid frame end octet 0xAB (expected 0xCE)"
        );
        assert_eq!(
            WireError::UnknownMethod {
                class_id: 60,
                method_id: 99
            }
            .to_string(),
            "unknown method: class 60, method 99"
        );
    }
}
