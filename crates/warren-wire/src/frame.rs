//! Frame decoding and encoding: the 7-byte header check, method/header/body/
//! heartbeat payloads, and splitting content into body frames.

use amq_protocol::frame::{gen_frame, parse_frame, AMQPFrame, WriteContext};
use amq_protocol::protocol::basic::{gen_properties, AMQPProperties};
use amq_protocol::protocol::constants;
use bytes::{Buf, BufMut, BytesMut};

use crate::error::WireError;
use crate::method_name::method_name;

/// The protocol header a 0-9-1 client sends first, and that the server sends
/// back before closing when it gets anything else.
pub const PROTOCOL_HEADER: [u8; 8] = *b"AMQP\x00\x00\x09\x01";
/// The octet that ends every frame.
pub const FRAME_END: u8 = 0xCE;
/// The smallest `frame_max` a peer may negotiate; also the limit in force
/// before `connection.tune-ok` (spec 4.2.3, and what RabbitMQ applies).
pub const FRAME_MIN_SIZE: u32 = 4096;
/// Type octet, channel (2) and payload size (4).
pub const FRAME_HEADER_SIZE: usize = 7;
/// Frame header plus the frame-end octet: a frame's size is its payload
/// length plus this.
pub const FRAME_OVERHEAD: usize = FRAME_HEADER_SIZE + 1;
/// Frame size used by [`encode_content`] when `frame_max` is 0 ("no limit").
pub const UNLIMITED_FRAME_CHUNK: u32 = 128 * 1024;

/// Checks the 8-byte protocol header at the front of `buf`.
///
/// Returns `Ok(None)` while fewer than 8 bytes are present and `Ok(Some(()))`
/// once they are the AMQP 0-9-1 header. The caller then consumes 8 bytes.
///
/// # Errors
/// [`WireError::BadProtocolHeader`] as soon as the bytes present differ from
/// [`PROTOCOL_HEADER`] (a prefix mismatch is reported without waiting for all
/// 8 bytes, so a client speaking HTTP is turned away at once). The server
/// then writes [`PROTOCOL_HEADER`] and closes the connection.
pub fn check_protocol_header(buf: &[u8]) -> Result<Option<()>, WireError> {
    let present = buf.len().min(PROTOCOL_HEADER.len());
    if buf[..present] != PROTOCOL_HEADER[..present] {
        return Err(WireError::BadProtocolHeader);
    }
    if present < PROTOCOL_HEADER.len() {
        return Ok(None);
    }
    Ok(Some(()))
}

/// Decodes one frame from the front of `buf`, advancing `buf` past it.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole frame; nothing is
/// consumed then, and `buf` is grown to fit the frame announced by its
/// header so the next read can fill it.
///
/// The 7-byte header is checked before the payload is waited for, so a
/// client cannot make us buffer more than `frame_max` bytes. `frame_max` 0
/// means no limit (spec); the front end should always pass the negotiated,
/// non-zero value, and [`FRAME_MIN_SIZE`] before `connection.tune-ok`.
///
/// Heartbeats on channel 0 decode as [`AMQPFrame::Heartbeat`]; on another
/// channel as [`AMQPFrame::InvalidHeartbeat`] (the front end decides).
/// The content header's class id is not checked here.
///
/// # Errors
/// The frame is left in `buf` on error; the connection is unusable after one.
/// - [`WireError::UnknownFrameType`]: type octet not 1, 2, 3 or 8;
/// - [`WireError::FrameTooLarge`]: payload length + 8 > `frame_max`;
/// - [`WireError::BadFrameEnd`]: the octet after the payload is not `0xCE`;
/// - [`WireError::UnknownMethod`]: a method frame with unknown class/method ids;
/// - [`WireError::Malformed`]: a payload that does not decode completely.
pub fn decode_frame(buf: &mut BytesMut, frame_max: u32) -> Result<Option<AMQPFrame>, WireError> {
    let Some(header) = buf.get(..FRAME_HEADER_SIZE) else {
        return Ok(None);
    };
    let frame_type = header[0];
    let channel = u16::from_be_bytes([header[1], header[2]]);
    let payload_len = u32::from_be_bytes([header[3], header[4], header[5], header[6]]);
    if !matches!(
        frame_type,
        constants::FRAME_METHOD | constants::FRAME_HEADER | constants::FRAME_BODY | constants::FRAME_HEARTBEAT
    ) {
        return Err(WireError::UnknownFrameType(frame_type));
    }
    let frame_size = u64::from(payload_len) + FRAME_OVERHEAD as u64;
    if frame_max != 0 && frame_size > u64::from(frame_max) {
        return Err(WireError::FrameTooLarge {
            size: frame_size,
            max: frame_max,
        });
    }
    // Fits in usize: it is at most u32::MAX + 8 and checked against frame_max.
    let Ok(frame_len) = usize::try_from(frame_size) else {
        return Err(WireError::FrameTooLarge {
            size: frame_size,
            max: frame_max,
        });
    };
    if buf.len() < frame_len {
        buf.reserve(frame_len - buf.len());
        return Ok(None);
    }
    let end = buf[frame_len - 1];
    if end != FRAME_END {
        return Err(WireError::BadFrameEnd(end));
    }
    let payload = &buf[FRAME_HEADER_SIZE..frame_len - 1];
    let frame = match frame_type {
        constants::FRAME_BODY => AMQPFrame::Body(channel, payload.to_vec()),
        constants::FRAME_HEARTBEAT => decode_heartbeat(channel, payload)?,
        constants::FRAME_METHOD => decode_with_amq_protocol(&buf[..frame_len], payload, true)?,
        _ => decode_with_amq_protocol(&buf[..frame_len], payload, false)?,
    };
    buf.advance(frame_len);
    Ok(Some(frame))
}

/// A heartbeat has an empty payload (RabbitMQ rejects any other as a frame
/// error).
fn decode_heartbeat(channel: u16, payload: &[u8]) -> Result<AMQPFrame, WireError> {
    if !payload.is_empty() {
        return Err(WireError::Malformed(format!(
            "heartbeat frame with a {}-byte payload",
            payload.len()
        )));
    }
    Ok(if channel == 0 {
        AMQPFrame::Heartbeat
    } else {
        AMQPFrame::InvalidHeartbeat(channel)
    })
}

/// Decodes a method or content-header frame with amq-protocol.
///
/// `frame` is the whole, already length- and end-checked frame, so the parser
/// can only fail on the payload; parse errors are mapped to our variants.
fn decode_with_amq_protocol(frame: &[u8], payload: &[u8], is_method: bool) -> Result<AMQPFrame, WireError> {
    let ids = match payload {
        [c0, c1, m0, m1, ..] if is_method => {
            let class_id = u16::from_be_bytes([*c0, *c1]);
            let method_id = u16::from_be_bytes([*m0, *m1]);
            let Some(name) = method_name(class_id, method_id) else {
                return Err(WireError::UnknownMethod { class_id, method_id });
            };
            Some((name, class_id, method_id))
        }
        _ if is_method => {
            return Err(WireError::Malformed(format!(
                "method frame payload of {} bytes is too short for class and method ids",
                payload.len()
            )));
        }
        _ => None,
    };
    match parse_frame(frame) {
        Ok((&[], frame)) => Ok(frame),
        Ok((rest, _)) => Err(WireError::Malformed(format!(
            "{} trailing bytes after frame",
            rest.len()
        ))),
        Err(err) => Err(WireError::Malformed(match ids {
            Some((name, class_id, method_id)) => format!(
                "cannot decode the arguments of {name} ({class_id}, {method_id}) in a {}-byte payload: {err}",
                payload.len()
            ),
            None => format!("cannot decode a {}-byte content header: {err}", payload.len()),
        })),
    }
}

/// Appends the encoding of `frame` to `out`.
///
/// `frame_max` is not checked here: a method frame is small, and content is
/// split by [`encode_content`]. On error `out` is left as it was.
///
/// # Errors
/// [`WireError::Encode`] if the frame cannot be serialized (e.g. a body frame
/// over 4 GiB).
pub fn encode_frame(frame: &AMQPFrame, out: &mut BytesMut) -> Result<(), WireError> {
    match frame {
        AMQPFrame::Body(channel, data) => put_body_frame(*channel, data, out),
        other => {
            let ctx = gen_frame(other)(WriteContext::from(Vec::new()))
                .map_err(|err| WireError::Encode(format!("{other}: {err:?}")))?;
            let (bytes, _) = ctx.into_inner();
            out.extend_from_slice(&bytes);
            Ok(())
        }
    }
}

/// Writes a body frame straight into `out` (amq-protocol would copy it
/// through a `Vec` first, and only `debug_assert`s its length).
fn put_body_frame(channel: u16, data: &[u8], out: &mut BytesMut) -> Result<(), WireError> {
    let Ok(len) = u32::try_from(data.len()) else {
        return Err(WireError::Encode(format!(
            "body frame of {} bytes exceeds 4 GiB",
            data.len()
        )));
    };
    out.reserve(data.len() + FRAME_OVERHEAD);
    out.put_u8(constants::FRAME_BODY);
    out.put_u16(channel);
    out.put_u32(len);
    out.put_slice(data);
    out.put_u8(FRAME_END);
    Ok(())
}

/// Appends a content header frame and the body frames of `body` for
/// `channel`, each frame no larger than `frame_max`.
///
/// Call it right after encoding the `basic.deliver` / `basic.get-ok` /
/// `basic.return` method frame. `class_id` is 60 (basic) for all of them.
/// An empty body yields the header frame only. `frame_max` 0 means no limit;
/// bodies are then cut into [`UNLIMITED_FRAME_CHUNK`]-byte frames.
///
/// # Errors
/// [`WireError::Encode`] if `frame_max` leaves no room for a body byte
/// (≤ 8), or the header frame alone exceeds `frame_max` (huge `headers`
/// table). On error `out` is left as it was.
pub fn encode_content(
    channel: u16,
    class_id: u16,
    properties: &AMQPProperties,
    body: &[u8],
    frame_max: u32,
    out: &mut BytesMut,
) -> Result<(), WireError> {
    let frame_size = if frame_max == 0 {
        UNLIMITED_FRAME_CHUNK
    } else {
        frame_max
    };
    let Some(chunk) = (frame_size as usize).checked_sub(FRAME_OVERHEAD).filter(|c| *c > 0) else {
        return Err(WireError::Encode(format!(
            "frame_max {frame_max} leaves no room for a body"
        )));
    };
    let start = out.len();
    // Written by hand rather than through `AMQPFrame::Header`, which would
    // need a clone of `properties` for every delivery.
    let props = gen_properties(properties)(WriteContext::from(Vec::new()))
        .map_err(|err| WireError::Encode(format!("content header properties: {err:?}")))?
        .into_inner()
        .0;
    let payload_len = 2 + 2 + 8 + props.len();
    let header_len = payload_len + FRAME_OVERHEAD;
    if frame_max != 0 && header_len > frame_max as usize {
        return Err(WireError::Encode(format!(
            "content header frame of {header_len} bytes exceeds frame_max {frame_max}"
        )));
    }
    let Ok(payload_len) = u32::try_from(payload_len) else {
        return Err(WireError::Encode(format!(
            "content header of {payload_len} bytes exceeds 4 GiB"
        )));
    };
    out.reserve(header_len);
    out.put_u8(constants::FRAME_HEADER);
    out.put_u16(channel);
    out.put_u32(payload_len);
    out.put_u16(class_id);
    out.put_u16(0); // weight, unused
    out.put_u64(body.len() as u64);
    out.put_slice(&props);
    out.put_u8(FRAME_END);
    out.reserve(body.len() + body.len().div_ceil(chunk) * FRAME_OVERHEAD);
    for piece in body.chunks(chunk) {
        if let Err(err) = put_body_frame(channel, piece, out) {
            out.truncate(start);
            return Err(err);
        }
    }
    Ok(())
}
