//! # warren-wire
//!
//! The AMQP 0-9-1 codec of Warren: bytes in, [`AMQPFrame`]s out, and back.
//! It is pure — no sockets, no tokio, no other warren crate — and sits under
//! `warren-amqp`, the per-connection front end, which reads into a
//! [`bytes::BytesMut`], calls [`check_protocol_header`] once and then
//! [`decode_frame`] in a loop, and writes with [`encode_frame`] and
//! [`encode_content`].
//!
//! Method and property types come from [`amq_protocol`] (re-exported here as
//! [`protocol`] and [`types`], so users need no direct dependency). This
//! crate adds what a *server* needs around it and amq-protocol does not do:
//!
//! - `frame_max` is enforced from the 7-byte frame header, before the payload
//!   is buffered;
//! - every failure is a typed [`WireError`] with the AMQP reply code to close
//!   the connection with ([`WireError::reply_code`]);
//! - SASL PLAIN / AMQPLAIN responses are parsed ([`parse_sasl_response`]);
//! - short strings built from client data go through [`short_string`]
//!   (amq-protocol's `ShortString::from` panics past 255 bytes).
//!
//! Codec speaks the spec (`queue::Declare`, `basic::Publish`); conversion to
//! the domain commands of `warren-core` happens in the front end.
//!
//! ## For the front end
//!
//! - **Reading.** After [`check_protocol_header`] (on `Err`, write
//!   [`PROTOCOL_HEADER`] and close), call [`decode_frame`] with
//!   [`FRAME_MIN_SIZE`] until `connection.tune-ok` arrives, then with the
//!   negotiated `frame_max` (never 0: 0 means "no limit"). `Ok(None)` means
//!   read more. A second protocol header mid-stream is
//!   `UnknownFrameType(b'A')`; `decode_frame` never returns
//!   `AMQPFrame::ProtocolHeader`.
//! - **Errors** are all connection errors: send `connection.close` with
//!   [`WireError::reply_code`] and `short_string_lossy(&err.to_string())`.
//! - **Content.** A publish arrives as `AMQPFrame::Method(ch,
//!   AMQPClass::Basic(basic::AMQPMethod::Publish(..)))`, then
//!   `AMQPFrame::Header(ch, AMQPContentHeader { class_id, body_size,
//!   properties })`, then `AMQPFrame::Body(ch, Vec<u8>)` frames until their
//!   lengths add up to `body_size` (none when it is 0). The codec checks
//!   neither that `class_id` is 60 nor `body_size` against a message size
//!   limit, nor the frame order: that is channel state.
//! - **Properties** have private fields; build them with
//!   `AMQPProperties::default().with_content_type(..).with_delivery_mode(2)`
//!   and read them with getters (`properties.delivery_mode()` gives
//!   `&Option<u8>`; the `type` property is `kind()` / `with_type`). Store and
//!   forward the `AMQPProperties` value as received (it is `Clone` and
//!   serde-serializable).
//! - **Writing.** `encode_frame(&AMQPFrame::Method(..))` for methods; for a
//!   delivery, the `basic.deliver` method frame then
//!   [`encode_content`]`(ch, 60, &properties, &body, frame_max, &mut out)`.
//! - **Strings from clients** that must become short strings go through
//!   [`short_string`] (or [`short_string_lossy`] for reply texts).
//! - **Login.** Offer [`SASL_MECHANISMS`] in `connection.start`; pass
//!   `start_ok.mechanism.as_str()` and `start_ok.response.as_bytes()` to
//!   [`parse_sasl_response`].
//!
//! ## Hardening
//!
//! amq-protocol parses nested field tables recursively; a few kilobytes of
//! nesting overflow a thread stack and abort the process. [`decode_frame`]
//! therefore rejects tables nested deeper than [`MAX_FIELD_NESTING`] before
//! parsing. `tests/no_panic.rs` feeds random and mutated frames to the
//! decoder, and `fuzz/` holds a cargo-fuzz target (`cargo +nightly fuzz run
//! decode_frame` from this crate's directory).

mod error;
mod fast;
mod frame;
mod method_name;
mod nesting;
mod sasl;

pub use amq_protocol::frame::{AMQPContentHeader, AMQPFrame};
pub use amq_protocol::protocol;
pub use amq_protocol::protocol::basic::AMQPProperties;
pub use amq_protocol::protocol::AMQPClass;
pub use amq_protocol::types;
pub use amq_protocol::types::ShortString;

pub use error::{WireError, ACCESS_REFUSED, COMMAND_INVALID, FRAME_ERROR, INTERNAL_ERROR, NOT_IMPLEMENTED};
pub use fast::{encode_deliver, Deliver, PropertiesRef};
pub use frame::{
    check_protocol_header, decode, decode_frame, encode_content, encode_content_ref, encode_frame,
    peek_qos_prefetch_size, Frame, FRAME_END, FRAME_HEADER_SIZE, FRAME_MIN_SIZE, FRAME_OVERHEAD, PROTOCOL_HEADER,
    UNLIMITED_FRAME_CHUNK,
};
pub use method_name::method_name;
pub use nesting::MAX_FIELD_NESTING;
pub use sasl::{parse_sasl_response, Credentials, SASL_MECHANISMS};

/// The largest byte length of an AMQP short string.
pub const MAX_SHORT_STRING_LEN: usize = 255;

/// A [`ShortString`] from `s`, or an error if `s` is longer than 255 bytes.
///
/// Use this — never `ShortString::from`, which panics — whenever a short
/// string is built from client-controlled data (a queue name taken from a
/// long string, a header value echoed back, an error text).
///
/// # Errors
/// [`WireError::Encode`] if `s` is over 255 bytes.
pub fn short_string(s: &str) -> Result<ShortString, WireError> {
    ShortString::try_new(s).map_err(|err| WireError::Encode(err.to_string()))
}

/// `s` cut to at most 255 bytes on a UTF-8 character boundary.
///
/// For texts where losing the tail is fine, such as `reply_text` in
/// `connection.close` / `channel.close`.
#[must_use]
pub fn short_string_lossy(s: &str) -> ShortString {
    let mut end = s.len().min(MAX_SHORT_STRING_LEN);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    // Cannot fail: at most 255 bytes.
    ShortString::try_new(&s[..end]).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_string_accepts_255_bytes_and_rejects_256() {
        let max = "a".repeat(255);
        assert_eq!(short_string(&max).map(|s| s.as_str().len()), Ok(255));
        let err = short_string(&"a".repeat(256));
        assert!(matches!(err, Err(WireError::Encode(_))), "{err:?}");
    }

    #[test]
    fn short_string_lossy_cuts_on_a_char_boundary() {
        // 127 two-byte characters = 254 bytes, then one more = 256.
        let text = "\u{e9}".repeat(128);
        let cut = short_string_lossy(&text);
        assert_eq!(cut.as_str().len(), 254);
        assert_eq!(short_string_lossy("ok").as_str(), "ok");
    }
}
