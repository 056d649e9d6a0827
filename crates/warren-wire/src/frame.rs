//! Frame decoding and encoding: the 7-byte header check, method/header/body/
//! heartbeat payloads, and splitting content into body frames.

use amq_protocol::frame::{gen_frame, parse_frame, AMQPContentHeader, AMQPFrame, WriteContext};
use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::protocol::constants;
use amq_protocol::protocol::AMQPClass;
use bytes::{Buf, BufMut, BytesMut};

use crate::error::WireError;
use crate::fast::{self, PropertiesRef};
use crate::method_name::method_name;
use crate::nesting::{check_header_nesting, check_method_nesting};

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

/// The `prefetch-size` of a `basic.qos` method frame at the start of
/// `buf`, if one is there whole. amq-protocol's `Qos` drops the field
/// (RabbitMQ refuses a non-zero one), so the front end reads it here
/// before the frame is decoded.
///
/// ```text
/// [1, 0,1, 0,0,0,11, 0,60, 0,10, 0,0,4,0, 0,5, 0, 0xCE] -> Some(1024); other frames -> None
/// ```
pub fn peek_qos_prefetch_size(buf: &[u8]) -> Option<u32> {
    let header = buf.get(..FRAME_HEADER_SIZE)?;
    if header[0] != constants::FRAME_METHOD {
        return None;
    }
    let payload = buf.get(FRAME_HEADER_SIZE..FRAME_HEADER_SIZE + 8)?;
    if payload[..4] != [0, 60, 0, 10] {
        return None;
    }
    Some(u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]))
}

/// Decodes one frame from the front of `buf`, advancing `buf` past it.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole frame; nothing is
/// consumed then, and `buf` is grown towards the frame announced by its
/// header (by at most 128 KiB) so the next read can fill it.
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
    Ok(decode(buf, frame_max)?.map(AMQPFrame::from))
}

/// A decoded frame as the front end handles it: amq-protocol's
/// [`AMQPFrame`] with the content header boxed. An `AMQPFrame` is 320
/// bytes for the sake of that one variant, and a frame moves several times
/// between the decoder and its handler (the profile of issue 11 had
/// `memmove` at 13 % of the node); this one is 120.
#[derive(Clone, Debug, PartialEq)]
pub enum Frame {
    Method(u16, AMQPClass),
    Header(u16, Box<AMQPContentHeader>),
    Body(u16, Vec<u8>),
    Heartbeat,
    InvalidHeartbeat(u16),
}

impl From<Frame> for AMQPFrame {
    fn from(frame: Frame) -> Self {
        match frame {
            Frame::Method(ch, method) => AMQPFrame::Method(ch, method),
            Frame::Header(ch, header) => AMQPFrame::Header(ch, *header),
            Frame::Body(ch, body) => AMQPFrame::Body(ch, body),
            Frame::Heartbeat => AMQPFrame::Heartbeat,
            Frame::InvalidHeartbeat(ch) => AMQPFrame::InvalidHeartbeat(ch),
        }
    }
}

impl TryFrom<AMQPFrame> for Frame {
    type Error = WireError;

    /// Every frame but a protocol header, which never arrives as a frame
    /// ([`decode_frame`] rejects its type octet).
    fn try_from(frame: AMQPFrame) -> Result<Self, WireError> {
        Ok(match frame {
            AMQPFrame::Method(ch, method) => Frame::Method(ch, method),
            AMQPFrame::Header(ch, header) => Frame::Header(ch, Box::new(header)),
            AMQPFrame::Body(ch, body) => Frame::Body(ch, body),
            AMQPFrame::Heartbeat => Frame::Heartbeat,
            AMQPFrame::InvalidHeartbeat(ch) => Frame::InvalidHeartbeat(ch),
            AMQPFrame::ProtocolHeader(_) => {
                return Err(WireError::Malformed("a protocol header inside a frame".to_owned()))
            }
        })
    }
}

/// [`decode_frame`], giving a [`Frame`].
///
/// # Errors
/// As [`decode_frame`].
pub fn decode(buf: &mut BytesMut, frame_max: u32) -> Result<Option<Frame>, WireError> {
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
        // Capped: with frame_max 0 a header alone could ask for 4 GiB.
        buf.reserve((frame_len - buf.len()).min(UNLIMITED_FRAME_CHUNK as usize));
        return Ok(None);
    }
    let end = buf[frame_len - 1];
    if end != FRAME_END {
        return Err(WireError::BadFrameEnd(end));
    }
    let payload = &buf[FRAME_HEADER_SIZE..frame_len - 1];
    let frame = match frame_type {
        constants::FRAME_BODY => Frame::Body(channel, payload.to_vec()),
        constants::FRAME_HEARTBEAT => decode_heartbeat(channel, payload)?.try_into()?,
        // The frames of every publish by hand; anything they are not sure
        // of (and every error) through amq-protocol.
        constants::FRAME_METHOD => match fast::read_publish(channel, payload) {
            Some(frame) => frame,
            None => decode_with_amq_protocol(&buf[..frame_len], payload, true)?,
        }
        .try_into()?,
        _ => match fast::read_content_header(channel, payload) {
            Some(frame) => frame,
            None => decode_with_amq_protocol(&buf[..frame_len], payload, false)?,
        }
        .try_into()?,
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
pub(crate) fn decode_with_amq_protocol(frame: &[u8], payload: &[u8], is_method: bool) -> Result<AMQPFrame, WireError> {
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
    if is_method {
        check_method_nesting(payload)?;
    } else {
        check_header_nesting(payload)?;
    }
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
    encode_content_ref(
        channel,
        class_id,
        &PropertiesRef::from(properties),
        body,
        frame_max,
        out,
    )
}

/// [`encode_content`] from borrowed properties: what a delivery uses, so
/// that no [`AMQPProperties`] is built per message.
///
/// # Errors
/// As [`encode_content`]; on error `out` is left as it was.
pub fn encode_content_ref(
    channel: u16,
    class_id: u16,
    properties: &PropertiesRef<'_>,
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
    // The header frame in place; its payload size is filled in once the
    // properties are written.
    out.put_u8(constants::FRAME_HEADER);
    out.put_u16(channel);
    out.put_u32(0);
    out.put_u16(class_id);
    out.put_u16(0); // weight, unused
    out.put_u64(body.len() as u64);
    if let Err(err) = properties.put(out) {
        out.truncate(start);
        return Err(err);
    }
    let payload_len = out.len() - start - FRAME_HEADER_SIZE;
    let header_len = payload_len + FRAME_OVERHEAD;
    if frame_max != 0 && header_len > frame_max as usize {
        out.truncate(start);
        return Err(WireError::Encode(format!(
            "content header frame of {header_len} bytes exceeds frame_max {frame_max}"
        )));
    }
    let Ok(payload_len) = u32::try_from(payload_len) else {
        out.truncate(start);
        return Err(WireError::Encode(format!(
            "content header of {payload_len} bytes exceeds 4 GiB"
        )));
    };
    out[start + 3..start + FRAME_HEADER_SIZE].copy_from_slice(&payload_len.to_be_bytes());
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {

    #[test]
    fn a_frame_is_small_to_move_and_converts_both_ways() {
        assert!(
            std::mem::size_of::<Frame>() <= 128,
            "{} bytes: the content header is boxed so that a frame moves cheaply",
            std::mem::size_of::<Frame>()
        );
        let header = AMQPFrame::Header(
            3,
            AMQPContentHeader {
                class_id: 60,
                body_size: 5,
                properties: AMQPProperties::default().with_delivery_mode(2),
            },
        );
        let frame = Frame::try_from(header.clone()).unwrap();
        assert!(matches!(&frame, Frame::Header(3, h) if h.body_size == 5));
        assert_eq!(AMQPFrame::from(frame), header);
        let protocol_header = AMQPFrame::ProtocolHeader(amq_protocol::frame::ProtocolVersion::amqp_0_9_1());
        assert!(Frame::try_from(protocol_header).is_err());
    }

    #[test]
    fn the_prefetch_size_of_a_qos_frame_is_read_before_decoding() {
        let qos = [1u8, 0, 1, 0, 0, 0, 11, 0, 60, 0, 10, 0, 0, 4, 0, 0, 5, 0, 0xCE];
        assert_eq!(peek_qos_prefetch_size(&qos), Some(1024));
        assert_eq!(peek_qos_prefetch_size(&qos[..10]), None, "not all there yet");
        let mut consume = qos;
        consume[10] = 20;
        assert_eq!(peek_qos_prefetch_size(&consume), None, "basic.consume");
        let mut header = qos;
        header[0] = 2;
        assert_eq!(peek_qos_prefetch_size(&header), None, "a content header");
        assert_eq!(peek_qos_prefetch_size(&[]), None);
    }
    use super::*;
    use crate::nesting::MAX_FIELD_NESTING;
    use amq_protocol::frame::AMQPContentHeader;
    use amq_protocol::protocol::{basic, connection, exchange, queue, AMQPClass};
    use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};

    fn encoded(frame: &AMQPFrame) -> BytesMut {
        let mut out = BytesMut::new();
        encode_frame(frame, &mut out).expect("encodes");
        out
    }

    fn round_trip(frame: AMQPFrame) {
        let mut buf = encoded(&frame);
        let len = buf.len();
        let decoded = decode_frame(&mut buf, 131_072).expect("decodes").expect("complete");
        assert_eq!(decoded, frame);
        assert!(buf.is_empty(), "{} of {len} bytes left over", buf.len());
    }

    fn method(channel: u16, class: AMQPClass) -> AMQPFrame {
        AMQPFrame::Method(channel, class)
    }

    /// A frame with the given type, channel and raw payload.
    fn raw_frame(frame_type: u8, channel: u16, payload: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        out.put_u8(frame_type);
        out.put_u16(channel);
        out.put_u32(payload.len() as u32);
        out.put_slice(payload);
        out.put_u8(FRAME_END);
        out
    }

    fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
        let mut table = FieldTable::default();
        for (key, value) in entries {
            table.insert(ShortString::from(*key), value.clone());
        }
        table
    }

    fn sample_arguments() -> FieldTable {
        let mut array = FieldArray::default();
        array.push(AMQPValue::LongString("a".into()));
        array.push(AMQPValue::LongInt(-7));
        table(&[
            ("x-message-ttl", AMQPValue::LongInt(60_000)),
            ("x-dead-letter-exchange", AMQPValue::LongString("dlx".into())),
            ("x-max-priority", AMQPValue::ShortShortUInt(9)),
            ("x-flag", AMQPValue::Boolean(true)),
            ("x-big", AMQPValue::LongLongInt(-1 << 40)),
            ("x-double", AMQPValue::Double(1.5)),
            ("x-stamp", AMQPValue::Timestamp(1_700_000_000)),
            ("x-void", AMQPValue::Void),
            ("x-bytes", AMQPValue::ByteArray(vec![0, 1, 0xCE].into())),
            ("x-array", AMQPValue::FieldArray(array)),
            (
                "x-table",
                AMQPValue::FieldTable(table(&[("k", AMQPValue::ShortInt(3))])),
            ),
        ])
    }

    fn queue_declare(arguments: FieldTable) -> AMQPFrame {
        method(
            1,
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: "orders".into(),
                passive: false,
                durable: true,
                exclusive: false,
                auto_delete: true,
                nowait: false,
                arguments,
            })),
        )
    }

    fn all_properties() -> AMQPProperties {
        AMQPProperties::default()
            .with_content_type("application/json".into())
            .with_content_encoding("gzip".into())
            .with_headers(table(&[
                ("h1", AMQPValue::LongString("v1".into())),
                ("h2", AMQPValue::LongInt(2)),
            ]))
            .with_delivery_mode(2)
            .with_priority(7)
            .with_correlation_id("corr-1".into())
            .with_reply_to("amq.rabbitmq.reply-to".into())
            .with_expiration("60000".into())
            .with_message_id("msg-1".into())
            .with_timestamp(1_700_000_000)
            .with_type("order.created".into())
            .with_user_id("guest".into())
            .with_app_id("shop".into())
            .with_cluster_id("c1".into())
    }

    /// Decodes every frame in `buf`, failing on errors or leftovers.
    fn decode_all(buf: &mut BytesMut, frame_max: u32) -> Vec<AMQPFrame> {
        let mut frames = Vec::new();
        while let Some(frame) = decode_frame(buf, frame_max).expect("decodes") {
            frames.push(frame);
        }
        assert!(buf.is_empty(), "{} bytes left over", buf.len());
        frames
    }

    // --- protocol header -------------------------------------------------

    #[test]
    fn protocol_header_needs_eight_bytes_then_matches() {
        assert_eq!(check_protocol_header(b""), Ok(None));
        assert_eq!(check_protocol_header(b"AMQP\x00\x00"), Ok(None));
        assert_eq!(check_protocol_header(&PROTOCOL_HEADER), Ok(Some(())));
        assert_eq!(check_protocol_header(b"AMQP\x00\x00\x09\x01\x01"), Ok(Some(())));
    }

    #[test]
    fn protocol_header_mismatch_is_rejected_early() {
        assert_eq!(check_protocol_header(b"GET "), Err(WireError::BadProtocolHeader));
        assert_eq!(
            check_protocol_header(b"AMQP\x01\x01\x00\x0a"),
            Err(WireError::BadProtocolHeader)
        );
        // AMQP 0-9 and 0-8 headers
        assert_eq!(
            check_protocol_header(b"AMQP\x00\x00\x09\x00"),
            Err(WireError::BadProtocolHeader)
        );
        assert_eq!(
            check_protocol_header(b"AMQP\x01\x01\x08\x00"),
            Err(WireError::BadProtocolHeader)
        );
    }

    // --- round trips -------------------------------------------------------

    #[test]
    fn connection_start_round_trips() {
        let capabilities = table(&[
            ("publisher_confirms", AMQPValue::Boolean(true)),
            ("basic.nack", AMQPValue::Boolean(true)),
        ]);
        round_trip(method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
                version_major: 0,
                version_minor: 9,
                server_properties: table(&[
                    ("product", AMQPValue::LongString("Warren".into())),
                    ("capabilities", AMQPValue::FieldTable(capabilities)),
                ]),
                mechanisms: "PLAIN AMQPLAIN".into(),
                locales: "en_US".into(),
            })),
        ));
    }

    #[test]
    fn connection_start_ok_tune_and_open_round_trip() {
        round_trip(method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: table(&[("product", AMQPValue::LongString("pika".into()))]),
                mechanism: "PLAIN".into(),
                response: "\0guest\0guest".into(),
                locale: "en_US".into(),
            })),
        ));
        round_trip(method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Tune(connection::Tune {
                channel_max: 2047,
                frame_max: 131_072,
                heartbeat: 60,
            })),
        ));
        round_trip(method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: 2047,
                frame_max: 131_072,
                heartbeat: 60,
            })),
        ));
        round_trip(method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: "/".into(),
            })),
        ));
    }

    #[test]
    fn queue_declare_with_arguments_round_trips() {
        round_trip(queue_declare(sample_arguments()));
    }

    #[test]
    fn queue_declare_matches_the_spec_bytes() {
        // queue.declare(ticket 0, "q", durable, no arguments) on channel 1,
        // written out by hand from the spec grammar.
        let payload = [0, 50, 0, 10, 0, 0, 1, b'q', 0b0000_0010, 0, 0, 0, 0];
        let mut buf = raw_frame(1, 1, &payload);
        let expected = method(
            1,
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: "q".into(),
                durable: true,
                ..Default::default()
            })),
        );
        assert_eq!(encoded(&expected), buf);
        assert_eq!(decode_frame(&mut buf, FRAME_MIN_SIZE), Ok(Some(expected)));
    }

    #[test]
    fn heartbeat_round_trips_and_is_eight_bytes() {
        let bytes = encoded(&AMQPFrame::Heartbeat);
        assert_eq!(&bytes[..], &[8, 0, 0, 0, 0, 0, 0, 0xCE]);
        round_trip(AMQPFrame::Heartbeat);
    }

    #[test]
    fn heartbeat_on_a_channel_decodes_as_invalid_heartbeat() {
        let mut buf = raw_frame(8, 3, &[]);
        assert_eq!(
            decode_frame(&mut buf, FRAME_MIN_SIZE),
            Ok(Some(AMQPFrame::InvalidHeartbeat(3)))
        );
    }

    #[test]
    fn basic_deliver_round_trips() {
        round_trip(method(
            5,
            AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                consumer_tag: "amq.ctag-1".into(),
                delivery_tag: u64::MAX - 1,
                redelivered: true,
                exchange: "".into(),
                routing_key: "orders".into(),
            })),
        ));
    }

    #[test]
    fn basic_publish_with_all_properties_and_body_round_trips() {
        let publish = method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: "amq.topic".into(),
                routing_key: "a.b.c".into(),
                mandatory: true,
                immediate: false,
            })),
        );
        let properties = all_properties();
        assert_eq!(properties.bitmask(), 0xFFFC, "all 14 property flags set");
        let body: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut buf = encoded(&publish);
        encode_content(1, 60, &properties, &body, FRAME_MIN_SIZE, &mut buf).expect("encodes");

        let frames = decode_all(&mut buf, FRAME_MIN_SIZE);
        assert_eq!(frames[0], publish);
        let AMQPFrame::Header(1, header) = &frames[1] else {
            panic!("expected a content header, got {}", frames[1]);
        };
        assert_eq!(header.class_id, 60);
        assert_eq!(header.body_size, 10_000);
        assert_eq!(header.properties, properties);
        let mut reassembled = Vec::new();
        for frame in &frames[2..] {
            let AMQPFrame::Body(1, chunk) = frame else {
                panic!("expected a body frame, got {frame}");
            };
            reassembled.extend_from_slice(chunk);
        }
        assert_eq!(frames.len(), 2 + 3);
        assert_eq!(reassembled, body);
    }

    #[test]
    fn content_header_matches_amq_protocol_encoding() {
        let properties = all_properties();
        let header = AMQPFrame::Header(
            7,
            AMQPContentHeader {
                class_id: 60,
                body_size: 0,
                properties: properties.clone(),
            },
        );
        let mut ours = BytesMut::new();
        encode_content(7, 60, &properties, b"", FRAME_MIN_SIZE, &mut ours).expect("encodes");
        assert_eq!(ours, encoded(&header));
    }

    // --- content splitting -------------------------------------------------

    #[test]
    fn body_frames_fill_frame_max_exactly() {
        let body = vec![0xAB; 10_000];
        let mut out = BytesMut::new();
        encode_content(2, 60, &AMQPProperties::default(), &body, 4096, &mut out).expect("encodes");
        let frames = decode_all(&mut out, 4096);
        let sizes: Vec<usize> = frames[1..]
            .iter()
            .map(|f| match f {
                AMQPFrame::Body(2, chunk) => chunk.len(),
                other => panic!("expected a body frame, got {other}"),
            })
            .collect();
        assert_eq!(sizes, vec![4088, 4088, 1824]);
    }

    #[test]
    fn empty_body_gives_only_a_header_frame() {
        let mut out = BytesMut::new();
        encode_content(1, 60, &AMQPProperties::default(), b"", 4096, &mut out).expect("encodes");
        let frames = decode_all(&mut out, 4096);
        assert_eq!(frames.len(), 1);
        assert!(frames[0].is_header());
    }

    #[test]
    fn frame_max_zero_cuts_bodies_into_128_kib_frames() {
        let body = vec![1u8; 300_000];
        let mut out = BytesMut::new();
        encode_content(1, 60, &AMQPProperties::default(), &body, 0, &mut out).expect("encodes");
        let frames = decode_all(&mut out, 0);
        let sizes: Vec<usize> = frames[1..]
            .iter()
            .map(|f| if let AMQPFrame::Body(_, c) = f { c.len() } else { 0 })
            .collect();
        assert_eq!(sizes, vec![131_064, 131_064, 37_872]);
    }

    #[test]
    fn frame_max_without_room_for_a_body_byte_is_an_encode_error() {
        let mut out = BytesMut::from(&b"keep"[..]);
        let err = encode_content(1, 60, &AMQPProperties::default(), b"x", 8, &mut out);
        assert!(matches!(err, Err(WireError::Encode(_))), "{err:?}");
        assert_eq!(&out[..], b"keep");
    }

    #[test]
    fn content_header_larger_than_frame_max_is_an_encode_error_and_writes_nothing() {
        let big = table(&[("big", AMQPValue::LongString(vec![b'x'; 5000].into()))]);
        let properties = AMQPProperties::default().with_headers(big);
        let mut out = BytesMut::from(&b"keep"[..]);
        let err = encode_content(1, 60, &properties, b"body", 4096, &mut out).unwrap_err();
        assert!(err.to_string().contains("exceeds frame_max 4096"), "{err}");
        assert_eq!(&out[..], b"keep");
    }

    // --- incomplete input ----------------------------------------------------

    #[test]
    fn truncated_frame_needs_more_bytes_until_complete() {
        let whole = encoded(&queue_declare(sample_arguments()));
        let mut buf = BytesMut::new();
        for (i, byte) in whole.iter().enumerate() {
            assert_eq!(decode_frame(&mut buf, 131_072), Ok(None), "after {i} bytes");
            assert_eq!(buf.len(), i, "nothing consumed while incomplete");
            buf.put_u8(*byte);
        }
        assert_eq!(
            decode_frame(&mut buf, 131_072),
            Ok(Some(queue_declare(sample_arguments())))
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn back_to_back_frames_decode_one_at_a_time() {
        let mut buf = encoded(&AMQPFrame::Heartbeat);
        buf.extend_from_slice(&encoded(&queue_declare(FieldTable::default())));
        buf.extend_from_slice(&[1, 0]); // start of a third frame
        assert_eq!(decode_frame(&mut buf, 4096), Ok(Some(AMQPFrame::Heartbeat)));
        assert_eq!(
            decode_frame(&mut buf, 4096),
            Ok(Some(queue_declare(FieldTable::default())))
        );
        assert_eq!(decode_frame(&mut buf, 4096), Ok(None));
        assert_eq!(&buf[..], &[1, 0]);
    }

    // --- malformed frames ------------------------------------------------------

    #[test]
    fn oversized_frame_is_rejected_from_its_header_alone() {
        // A method frame header claiming a 1 GiB payload, and nothing more.
        let mut buf = BytesMut::from(&[1u8, 0, 1, 0x40, 0, 0, 0][..]);
        assert_eq!(
            decode_frame(&mut buf, 131_072),
            Err(WireError::FrameTooLarge {
                size: (1 << 30) + 8,
                max: 131_072
            })
        );
        assert_eq!(buf.len(), 7);
        assert!(buf.capacity() < 1 << 20, "must not reserve for the announced payload");
    }

    #[test]
    fn frame_of_exactly_frame_max_is_accepted_and_one_more_byte_is_not() {
        let mut at_limit = raw_frame(3, 1, &[0u8; 4088]);
        assert_eq!(at_limit.len(), 4096);
        assert!(matches!(
            decode_frame(&mut at_limit, 4096),
            Ok(Some(AMQPFrame::Body(1, _)))
        ));
        let mut over = raw_frame(3, 1, &[0u8; 4089]);
        assert_eq!(
            decode_frame(&mut over, 4096),
            Err(WireError::FrameTooLarge { size: 4097, max: 4096 })
        );
    }

    #[test]
    fn bad_frame_end_octet_is_rejected() {
        let mut buf = encoded(&AMQPFrame::Heartbeat);
        let last = buf.len() - 1;
        buf[last] = 0xCD;
        assert_eq!(decode_frame(&mut buf, 4096), Err(WireError::BadFrameEnd(0xCD)));
        let mut declare = encoded(&queue_declare(FieldTable::default()));
        let last = declare.len() - 1;
        declare[last] = 0;
        assert_eq!(decode_frame(&mut declare, 4096), Err(WireError::BadFrameEnd(0)));
    }

    #[test]
    fn unknown_frame_type_is_rejected_before_the_payload_arrives() {
        for frame_type in [0u8, 4, 9, b'A', 0xCE] {
            let mut buf = BytesMut::from(&[frame_type, 0, 0, 0, 0, 0, 1][..]);
            assert_eq!(
                decode_frame(&mut buf, 4096),
                Err(WireError::UnknownFrameType(frame_type))
            );
        }
    }

    #[test]
    fn unknown_class_or_method_ids_are_reported_with_the_ids() {
        for (class_id, method_id) in [(70u16, 10u16), (60, 41), (10, 12), (0, 0)] {
            let mut payload = class_id.to_be_bytes().to_vec();
            payload.extend_from_slice(&method_id.to_be_bytes());
            payload.extend_from_slice(&[0; 8]);
            let mut buf = raw_frame(1, 1, &payload);
            assert_eq!(
                decode_frame(&mut buf, 4096),
                Err(WireError::UnknownMethod { class_id, method_id })
            );
        }
    }

    #[test]
    fn method_frame_too_short_for_its_ids_is_malformed() {
        let mut buf = raw_frame(1, 1, &[0, 50, 0]);
        assert!(matches!(decode_frame(&mut buf, 4096), Err(WireError::Malformed(_))));
    }

    #[test]
    fn short_string_running_past_the_payload_is_malformed() {
        // queue.declare whose queue name claims 200 bytes but has 3.
        let payload = [0, 50, 0, 10, 0, 0, 200, b'a', b'b', b'c'];
        let mut buf = raw_frame(1, 1, &payload);
        let err = decode_frame(&mut buf, 4096).unwrap_err();
        assert!(matches!(err, WireError::Malformed(_)), "{err:?}");
        assert!(err.to_string().contains("queue.declare"), "{err}");
        assert_eq!(err.reply_code(), 501);
    }

    #[test]
    fn trailing_bytes_after_method_arguments_are_malformed() {
        let mut payload = encoded(&queue_declare(FieldTable::default()))[7..].to_vec();
        payload.pop(); // frame end
        payload.push(0);
        let mut buf = raw_frame(1, 1, &payload);
        assert!(matches!(decode_frame(&mut buf, 4096), Err(WireError::Malformed(_))));
    }

    /// The payload of a queue.declare whose arguments table is `table`
    /// (length prefix included, written raw).
    fn declare_with_raw_table(table: &[u8]) -> BytesMut {
        let mut payload = vec![0, 50, 0, 10, 0, 0, 1, b'q', 0];
        payload.extend_from_slice(table);
        raw_frame(1, 1, &payload)
    }

    #[test]
    fn field_table_declaring_more_bytes_than_present_is_malformed() {
        // Entry "k" => long int 1 is 7 bytes; the table claims 100.
        let mut buf = declare_with_raw_table(&[0, 0, 0, 100, 1, b'k', b'I', 0, 0, 0, 1]);
        assert!(matches!(decode_frame(&mut buf, 4096), Err(WireError::Malformed(_))));
        let mut huge = declare_with_raw_table(&[0xFF, 0xFF, 0xFF, 0xFF, 1, b'k', b'V']);
        assert!(matches!(decode_frame(&mut huge, 4096), Err(WireError::Malformed(_))));
    }

    #[test]
    fn field_table_declaring_fewer_bytes_than_its_entries_is_malformed() {
        // Claims 5 bytes: the entry's value is cut in half.
        let mut cut = declare_with_raw_table(&[0, 0, 0, 5, 1, b'k', b'I', 0, 0, 0, 1]);
        assert!(matches!(decode_frame(&mut cut, 4096), Err(WireError::Malformed(_))));
        // Claims 0 bytes: the entry is left as trailing garbage.
        let mut empty = declare_with_raw_table(&[0, 0, 0, 0, 1, b'k', b'I', 0, 0, 0, 1]);
        assert!(matches!(decode_frame(&mut empty, 4096), Err(WireError::Malformed(_))));
    }

    #[test]
    fn nested_value_lying_about_its_length_is_malformed() {
        // "k" => long string claiming 50 bytes inside a 9-byte table.
        let mut buf = declare_with_raw_table(&[0, 0, 0, 9, 1, b'k', b'S', 0, 0, 0, 50, b'a', b'b']);
        assert!(matches!(decode_frame(&mut buf, 4096), Err(WireError::Malformed(_))));
    }

    #[test]
    fn unknown_field_type_octet_is_malformed() {
        let mut buf = declare_with_raw_table(&[0, 0, 0, 3, 1, b'k', b'z']);
        assert!(matches!(decode_frame(&mut buf, 4096), Err(WireError::Malformed(_))));
    }

    #[test]
    fn content_header_with_truncated_properties_is_malformed() {
        // flags say content-type present, but the short string is cut.
        let payload = [0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0x80, 0, 10, b'a'];
        let mut buf = raw_frame(2, 1, &payload);
        let err = decode_frame(&mut buf, 4096).unwrap_err();
        assert!(err.to_string().contains("content header"), "{err}");
    }

    #[test]
    fn heartbeat_with_a_payload_is_malformed() {
        let mut buf = raw_frame(8, 0, &[1, 2]);
        assert!(matches!(decode_frame(&mut buf, 4096), Err(WireError::Malformed(_))));
    }

    #[test]
    fn errors_leave_the_frame_in_the_buffer() {
        let mut buf = raw_frame(8, 0, &[1, 2]);
        let before = buf.clone();
        assert!(decode_frame(&mut buf, 4096).is_err());
        assert_eq!(buf, before);
    }

    // --- nesting -----------------------------------------------------------------

    /// A table whose deepest value sits under `levels` tables and arrays
    /// (1 = a flat table), alternating tables and arrays.
    fn nested_table(levels: usize) -> FieldTable {
        let mut value = AMQPValue::Boolean(true);
        for level in 1..levels {
            value = if level % 2 == 0 {
                AMQPValue::FieldTable(table(&[("x", value)]))
            } else {
                let mut array = FieldArray::default();
                array.push(value);
                AMQPValue::FieldArray(array)
            };
        }
        table(&[("top", value)])
    }

    /// Each method that carries a table, holding `arguments`.
    fn methods_with_table(arguments: FieldTable) -> Vec<AMQPFrame> {
        let a = arguments;
        vec![
            method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
                    server_properties: a.clone(),
                    ..Default::default()
                })),
            ),
            method(
                0,
                AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                    client_properties: a.clone(),
                    mechanism: "PLAIN".into(),
                    ..Default::default()
                })),
            ),
            method(
                1,
                AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
                    exchange: "ex".into(),
                    kind: "topic".into(),
                    arguments: a.clone(),
                    ..Default::default()
                })),
            ),
            method(
                1,
                AMQPClass::Exchange(exchange::AMQPMethod::Bind(exchange::Bind {
                    destination: "d".into(),
                    source: "s".into(),
                    routing_key: "rk".into(),
                    arguments: a.clone(),
                    ..Default::default()
                })),
            ),
            method(
                1,
                AMQPClass::Exchange(exchange::AMQPMethod::Unbind(exchange::Unbind {
                    destination: "d".into(),
                    source: "s".into(),
                    routing_key: "rk".into(),
                    arguments: a.clone(),
                    ..Default::default()
                })),
            ),
            queue_declare(a.clone()),
            method(
                1,
                AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
                    queue: "q".into(),
                    exchange: "ex".into(),
                    routing_key: "rk".into(),
                    arguments: a.clone(),
                    ..Default::default()
                })),
            ),
            method(
                1,
                AMQPClass::Queue(queue::AMQPMethod::Unbind(queue::Unbind {
                    queue: "q".into(),
                    exchange: "ex".into(),
                    routing_key: "rk".into(),
                    arguments: a.clone(),
                })),
            ),
            method(
                1,
                AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
                    queue: "q".into(),
                    consumer_tag: "tag".into(),
                    arguments: a.clone(),
                    ..Default::default()
                })),
            ),
            AMQPFrame::Header(
                1,
                AMQPContentHeader {
                    class_id: 60,
                    body_size: 3,
                    properties: AMQPProperties::default()
                        .with_content_type("text/plain".into())
                        .with_content_encoding("utf-8".into())
                        .with_headers(a),
                },
            ),
        ]
    }

    #[test]
    fn tables_nested_up_to_the_limit_decode_in_every_method() {
        for frame in methods_with_table(nested_table(MAX_FIELD_NESTING)) {
            round_trip(frame);
        }
    }

    #[test]
    fn tables_nested_past_the_limit_are_malformed_in_every_method() {
        for frame in methods_with_table(nested_table(MAX_FIELD_NESTING + 1)) {
            let mut buf = encoded(&frame);
            let err = decode_frame(&mut buf, 1 << 20).unwrap_err();
            assert!(err.to_string().contains("nested deeper"), "{frame}: {err}");
        }
    }

    #[test]
    fn deeply_nested_table_does_not_overflow_a_small_stack() {
        // 20_000 levels of {"": {"": ...}} in 120 KB: without the guard,
        // amq-protocol's recursive parser aborts the process.
        let mut table: Vec<u8> = vec![0, 0, 0, 0];
        for _ in 0..20_000 {
            let mut next = ((table.len() + 2) as u32).to_be_bytes().to_vec();
            next.extend_from_slice(&[0, b'F']);
            next.extend_from_slice(&table);
            table = next;
        }
        let mut buf = declare_with_raw_table(&table);
        let decoded = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || decode_frame(&mut buf, 131_072))
            .expect("spawns")
            .join()
            .expect("does not panic");
        assert!(matches!(decoded, Err(WireError::Malformed(_))), "{decoded:?}");
    }

    // --- ids -------------------------------------------------------------------

    #[test]
    fn method_table_agrees_with_amq_protocol() {
        use amq_protocol::protocol::parse_class;
        // Zero bytes decode as valid arguments for every method (empty
        // strings and tables, zero numbers), so amq-protocol parses exactly
        // the ids it knows.
        for class_id in 0..=100u16 {
            for method_id in 0..=130u16 {
                let mut payload = class_id.to_be_bytes().to_vec();
                payload.extend_from_slice(&method_id.to_be_bytes());
                payload.extend_from_slice(&[0; 64]);
                let parsed = parse_class(&payload[..]);
                assert_eq!(
                    parsed.is_ok(),
                    crate::method_name(class_id, method_id).is_some(),
                    "class {class_id} method {method_id}"
                );
                if let Ok((_, class)) = parsed {
                    assert_eq!(class.get_amqp_class_id(), class_id);
                    assert_eq!(class.get_amqp_method_id(), method_id);
                }
            }
        }
    }

    #[test]
    fn long_strings_are_bytes_not_text() {
        let frame = method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                response: LongString::from(vec![0, 0xFF, 0xFE]),
                mechanism: "PLAIN".into(),
                ..Default::default()
            })),
        );
        round_trip(frame);
    }
}
