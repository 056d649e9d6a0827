//! The frames of every message, by hand: `basic.publish` and the content
//! header read, `basic.deliver` and the content header written, without
//! amq-protocol's parser combinators and serializers (issue 11, item 4).
//!
//! A publish of a 16-byte body cost ~2 µs of the node's CPU in
//! amq-protocol's `nom` parsers and `cookie_factory` writers (a name
//! `String` allocated per flag bit, a `Vec` per frame copied into the
//! output). These functions give exactly what amq-protocol gives, and only
//! that: a reader returns `None` whenever it is not sure (a malformed
//! payload, a string that is not UTF-8, a `headers` table), and the caller
//! falls back to amq-protocol, which then also produces the error text. The
//! tests compare both on generated and on random input.

use amq_protocol::frame::{AMQPContentHeader, AMQPFrame, WriteContext};
use amq_protocol::protocol::basic::{self, AMQPProperties};
use amq_protocol::protocol::{constants, AMQPClass};
use amq_protocol::types::{FieldTable, ShortString};
use bytes::{BufMut, BytesMut};

use crate::MAX_SHORT_STRING_LEN;

/// `basic` class and its `publish` and `deliver` method ids.
const BASIC: u16 = 60;
const PUBLISH: u16 = 40;
const DELIVER: u16 = 60;
/// Property flag of `headers`, the one property read with amq-protocol.
const HEADERS_FLAG: u16 = 1 << 13;

/// A cursor over a payload; every read is `None` past its end.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.rest.split_at_checked(n)?;
        self.rest = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    fn short_string(&mut self) -> Option<ShortString> {
        let len = usize::from(self.u8()?);
        let text = std::str::from_utf8(self.take(len)?).ok()?;
        // At most 255 bytes: it cannot fail.
        ShortString::try_new(text).ok()
    }

    fn opt_short_string(&mut self, flags: u16, bit: u16) -> Option<Option<ShortString>> {
        if flags & bit == 0 {
            return Some(None);
        }
        self.short_string().map(Some)
    }

    fn opt_u8(&mut self, flags: u16, bit: u16) -> Option<Option<u8>> {
        if flags & bit == 0 {
            return Some(None);
        }
        self.u8().map(Some)
    }
}

/// The method payload of a `basic.publish` (class and method ids first),
/// or `None` if it is not one or not exactly one.
pub(crate) fn read_publish(channel: u16, payload: &[u8]) -> Option<AMQPFrame> {
    let mut r = Reader { rest: payload };
    if (r.u16()?, r.u16()?) != (BASIC, PUBLISH) {
        return None;
    }
    let _ticket = r.u16()?;
    let exchange = r.short_string()?;
    let routing_key = r.short_string()?;
    let bits = r.u8()?;
    if !r.rest.is_empty() {
        return None;
    }
    let publish = basic::Publish {
        exchange,
        routing_key,
        mandatory: bits & 1 != 0,
        immediate: bits & 2 != 0,
    };
    Some(AMQPFrame::Method(
        channel,
        AMQPClass::Basic(basic::AMQPMethod::Publish(publish)),
    ))
}

/// A content header payload without a `headers` table, or `None`.
pub(crate) fn read_content_header(channel: u16, payload: &[u8]) -> Option<AMQPFrame> {
    let mut r = Reader { rest: payload };
    let class_id = r.u16()?;
    let _weight = r.u16()?;
    let body_size = r.u64()?;
    let flags = r.u16()?;
    if flags & HEADERS_FLAG != 0 {
        return None;
    }
    let bit = |n: u16| 1u16 << (15 - n);
    let mut p = AMQPProperties::default();
    if let Some(v) = r.opt_short_string(flags, bit(0))? {
        p = p.with_content_type(v);
    }
    if let Some(v) = r.opt_short_string(flags, bit(1))? {
        p = p.with_content_encoding(v);
    }
    if let Some(v) = r.opt_u8(flags, bit(3))? {
        p = p.with_delivery_mode(v);
    }
    if let Some(v) = r.opt_u8(flags, bit(4))? {
        p = p.with_priority(v);
    }
    if let Some(v) = r.opt_short_string(flags, bit(5))? {
        p = p.with_correlation_id(v);
    }
    if let Some(v) = r.opt_short_string(flags, bit(6))? {
        p = p.with_reply_to(v);
    }
    if let Some(v) = r.opt_short_string(flags, bit(7))? {
        p = p.with_expiration(v);
    }
    if let Some(v) = r.opt_short_string(flags, bit(8))? {
        p = p.with_message_id(v);
    }
    if flags & bit(9) != 0 {
        p = p.with_timestamp(r.u64()?);
    }
    if let Some(v) = r.opt_short_string(flags, bit(10))? {
        p = p.with_type(v);
    }
    if let Some(v) = r.opt_short_string(flags, bit(11))? {
        p = p.with_user_id(v);
    }
    if let Some(v) = r.opt_short_string(flags, bit(12))? {
        p = p.with_app_id(v);
    }
    if let Some(v) = r.opt_short_string(flags, bit(13))? {
        p = p.with_cluster_id(v);
    }
    if !r.rest.is_empty() {
        return None;
    }
    Some(AMQPFrame::Header(
        channel,
        AMQPContentHeader {
            class_id,
            body_size,
            properties: p,
        },
    ))
}

/// The properties of a message as borrowed strings, so that a delivery is
/// encoded from what the node keeps without building an
/// [`AMQPProperties`] first. Field order and meaning are the spec's.
#[derive(Clone, Copy, Debug, Default)]
pub struct PropertiesRef<'a> {
    pub content_type: Option<&'a str>,
    pub content_encoding: Option<&'a str>,
    pub headers: Option<&'a FieldTable>,
    pub delivery_mode: Option<u8>,
    pub priority: Option<u8>,
    pub correlation_id: Option<&'a str>,
    pub reply_to: Option<&'a str>,
    pub expiration: Option<&'a str>,
    pub message_id: Option<&'a str>,
    pub timestamp: Option<u64>,
    pub kind: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub app_id: Option<&'a str>,
    pub cluster_id: Option<&'a str>,
}

impl<'a> From<&'a AMQPProperties> for PropertiesRef<'a> {
    fn from(p: &'a AMQPProperties) -> Self {
        let s = |v: &'a Option<ShortString>| v.as_ref().map(ShortString::as_str);
        Self {
            content_type: s(p.content_type()),
            content_encoding: s(p.content_encoding()),
            headers: p.headers().as_ref(),
            delivery_mode: *p.delivery_mode(),
            priority: *p.priority(),
            correlation_id: s(p.correlation_id()),
            reply_to: s(p.reply_to()),
            expiration: s(p.expiration()),
            message_id: s(p.message_id()),
            timestamp: *p.timestamp(),
            kind: s(p.kind()),
            user_id: s(p.user_id()),
            app_id: s(p.app_id()),
            cluster_id: s(p.cluster_id()),
        }
    }
}

impl PropertiesRef<'_> {
    fn flags(&self) -> u16 {
        let present = [
            self.content_type.is_some(),
            self.content_encoding.is_some(),
            self.headers.is_some(),
            self.delivery_mode.is_some(),
            self.priority.is_some(),
            self.correlation_id.is_some(),
            self.reply_to.is_some(),
            self.expiration.is_some(),
            self.message_id.is_some(),
            self.timestamp.is_some(),
            self.kind.is_some(),
            self.user_id.is_some(),
            self.app_id.is_some(),
            self.cluster_id.is_some(),
        ];
        present
            .iter()
            .enumerate()
            .filter(|(_, p)| **p)
            .fold(0, |flags, (n, _)| flags | 1 << (15 - n))
    }

    /// Appends the property flags and list. The `headers` table goes
    /// through amq-protocol's writer (tables are rare on the hot path and
    /// its encoding of every value type is the reference).
    pub(crate) fn put(&self, out: &mut BytesMut) -> Result<(), crate::WireError> {
        out.put_u16(self.flags());
        put_opt_short(out, self.content_type);
        put_opt_short(out, self.content_encoding);
        if let Some(table) = self.headers {
            let ctx = amq_protocol::types::generation::gen_field_table(table)(WriteContext::from(Vec::new()))
                .map_err(|err| crate::WireError::Encode(format!("headers table: {err:?}")))?;
            out.put_slice(&ctx.into_inner().0);
        }
        if let Some(v) = self.delivery_mode {
            out.put_u8(v);
        }
        if let Some(v) = self.priority {
            out.put_u8(v);
        }
        put_opt_short(out, self.correlation_id);
        put_opt_short(out, self.reply_to);
        put_opt_short(out, self.expiration);
        put_opt_short(out, self.message_id);
        if let Some(v) = self.timestamp {
            out.put_u64(v);
        }
        put_opt_short(out, self.kind);
        put_opt_short(out, self.user_id);
        put_opt_short(out, self.app_id);
        put_opt_short(out, self.cluster_id);
        Ok(())
    }
}

/// `s` cut to at most 255 bytes on a character boundary, as
/// [`crate::short_string_lossy`] cuts it.
fn cut(s: &str) -> &str {
    let mut end = s.len().min(MAX_SHORT_STRING_LEN);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn put_short(out: &mut BytesMut, s: &str) {
    let s = cut(s);
    // At most 255 after the cut.
    out.put_u8(s.len() as u8);
    out.put_slice(s.as_bytes());
}

fn put_opt_short(out: &mut BytesMut, s: Option<&str>) {
    if let Some(s) = s {
        put_short(out, s);
    }
}

/// The fields of a `basic.deliver`.
#[derive(Clone, Copy, Debug)]
pub struct Deliver<'a> {
    pub consumer_tag: &'a str,
    pub delivery_tag: u64,
    pub redelivered: bool,
    pub exchange: &'a str,
    pub routing_key: &'a str,
}

/// Appends the `basic.deliver` method frame for `channel`: the bytes
/// amq-protocol writes for the same method with every string cut as
/// [`crate::short_string_lossy`] cuts it.
pub fn encode_deliver(channel: u16, deliver: &Deliver<'_>, out: &mut BytesMut) {
    let start = out.len();
    out.reserve(7 + 4 + 3 * 256 + 9 + 1);
    out.put_u8(constants::FRAME_METHOD);
    out.put_u16(channel);
    out.put_u32(0); // the payload size, filled in below
    out.put_u16(BASIC);
    out.put_u16(DELIVER);
    put_short(out, deliver.consumer_tag);
    out.put_u64(deliver.delivery_tag);
    out.put_u8(u8::from(deliver.redelivered));
    put_short(out, deliver.exchange);
    put_short(out, deliver.routing_key);
    // At most 4 + 3 × 256 + 9 bytes.
    let size = (out.len() - start - crate::FRAME_HEADER_SIZE) as u32;
    out[start + 3..start + 7].copy_from_slice(&size.to_be_bytes());
    out.put_u8(crate::FRAME_END);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use amq_protocol::frame::gen_frame;
    use amq_protocol::protocol::basic::gen_properties;
    use amq_protocol::types::AMQPValue;
    use proptest::prelude::*;

    use super::*;
    use crate::frame::decode_with_amq_protocol;

    /// What amq-protocol makes of `payload` as the payload of a frame.
    fn slow(frame_type: u8, payload: &[u8]) -> Result<AMQPFrame, crate::WireError> {
        let mut frame = vec![frame_type, 0, 7];
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        frame.extend_from_slice(payload);
        frame.push(crate::FRAME_END);
        decode_with_amq_protocol(&frame, payload, frame_type == constants::FRAME_METHOD)
    }

    /// The payload amq-protocol writes for `frame`.
    fn payload_of(frame: &AMQPFrame) -> Vec<u8> {
        let bytes = gen_frame(frame)(WriteContext::from(Vec::new())).unwrap().into_inner().0;
        bytes[crate::FRAME_HEADER_SIZE..bytes.len() - 1].to_vec()
    }

    /// Short strings with the edges: empty, 255 bytes, multi-byte
    /// characters up to the limit, any unicode.
    fn short_text() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just("k".repeat(255)),
            Just("é".repeat(127)),
            Just("\u{1F600}".repeat(63)),
            "\\PC{0,60}",
        ]
    }

    fn opt_text() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(short_text())
    }

    fn headers() -> impl Strategy<Value = Option<FieldTable>> {
        proptest::option::of(
            proptest::collection::vec((short_text(), any::<i64>()), 0..3).prop_map(|entries| {
                let mut table = FieldTable::default();
                for (k, v) in entries {
                    table.insert(ShortString::try_new(k).unwrap(), AMQPValue::LongLongInt(v));
                }
                table
            }),
        )
    }

    fn properties() -> impl Strategy<Value = AMQPProperties> {
        let strings = proptest::collection::vec(opt_text(), 11);
        (
            strings,
            headers(),
            proptest::option::of(any::<u8>()),
            proptest::option::of(any::<u8>()),
            proptest::option::of(any::<u64>()),
        )
            .prop_map(|(s, headers, delivery_mode, priority, timestamp)| {
                let short = |v: &Option<String>| v.as_deref().map(|t| ShortString::try_new(t).unwrap());
                let mut p = AMQPProperties::default();
                let set = |p: AMQPProperties,
                           v: Option<ShortString>,
                           f: fn(AMQPProperties, ShortString) -> AMQPProperties| match v {
                    Some(v) => f(p, v),
                    None => p,
                };
                p = set(p, short(&s[0]), AMQPProperties::with_content_type);
                p = set(p, short(&s[1]), AMQPProperties::with_content_encoding);
                p = set(p, short(&s[2]), AMQPProperties::with_correlation_id);
                p = set(p, short(&s[3]), AMQPProperties::with_reply_to);
                p = set(p, short(&s[4]), AMQPProperties::with_expiration);
                p = set(p, short(&s[5]), AMQPProperties::with_message_id);
                p = set(p, short(&s[6]), AMQPProperties::with_type);
                p = set(p, short(&s[7]), AMQPProperties::with_user_id);
                p = set(p, short(&s[8]), AMQPProperties::with_app_id);
                p = set(p, short(&s[9]), AMQPProperties::with_cluster_id);
                if let Some(h) = headers {
                    p = p.with_headers(h);
                }
                if let Some(v) = delivery_mode {
                    p = p.with_delivery_mode(v);
                }
                if let Some(v) = priority {
                    p = p.with_priority(v);
                }
                if let Some(v) = timestamp {
                    p = p.with_timestamp(v);
                }
                p
            })
    }

    fn header_frame(properties: AMQPProperties, body_size: u64) -> AMQPFrame {
        AMQPFrame::Header(
            7,
            AMQPContentHeader {
                class_id: 60,
                body_size,
                properties,
            },
        )
    }

    /// A valid payload, then maybe cut short, maybe one byte changed,
    /// maybe a byte too many.
    fn damaged(payload: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
        let len = payload.len();
        (0..=len, any::<proptest::sample::Index>(), any::<u8>(), 0..4u8).prop_map(move |(cut, at, byte, how)| {
            let mut p = payload.clone();
            match how {
                0 => p.truncate(cut),
                1 if !p.is_empty() => {
                    let i = at.index(p.len());
                    p[i] = byte;
                }
                2 => p.push(byte),
                _ => {}
            }
            p
        })
    }

    proptest! {
        #[test]
        fn a_publish_reads_as_amq_protocol_reads_it(
            exchange in short_text(),
            routing_key in short_text(),
            mandatory in any::<bool>(),
            immediate in any::<bool>(),
        ) {
            let frame = AMQPFrame::Method(7, AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: ShortString::try_new(exchange).unwrap(),
                routing_key: ShortString::try_new(routing_key).unwrap(),
                mandatory,
                immediate,
            })));
            let payload = payload_of(&frame);
            prop_assert_eq!(read_publish(7, &payload), Some(frame.clone()));
            prop_assert_eq!(slow(constants::FRAME_METHOD, &payload).unwrap(), frame);
        }

        #[test]
        fn a_damaged_publish_is_left_to_amq_protocol_or_read_alike(
            payload in short_text().prop_flat_map(|rk| damaged(payload_of(&AMQPFrame::Method(7,
                AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                    exchange: ShortString::try_new("amq.direct").unwrap(),
                    routing_key: ShortString::try_new(rk).unwrap(),
                    mandatory: true,
                    immediate: false,
                })))))),
        ) {
            if let Some(fast) = read_publish(7, &payload) {
                prop_assert_eq!(Ok(fast), slow(constants::FRAME_METHOD, &payload));
            }
        }

        #[test]
        fn a_content_header_reads_as_amq_protocol_reads_it(properties in properties(), body_size in any::<u64>()) {
            let frame = header_frame(properties.clone(), body_size);
            let payload = payload_of(&frame);
            prop_assert_eq!(slow(constants::FRAME_HEADER, &payload).unwrap(), frame.clone());
            match read_content_header(7, &payload) {
                Some(fast) => prop_assert_eq!(fast, frame),
                None => prop_assert!(properties.headers().is_some(), "only a headers table is left to amq-protocol"),
            }
        }

        #[test]
        fn a_damaged_content_header_is_left_to_amq_protocol_or_read_alike(
            payload in properties().prop_flat_map(|p| damaged(payload_of(&header_frame(p, 16)))),
        ) {
            if let Some(fast) = read_content_header(7, &payload) {
                prop_assert_eq!(Ok(fast), slow(constants::FRAME_HEADER, &payload));
            }
        }

        #[test]
        fn random_bytes_are_read_alike_or_left_alone(tail in proptest::collection::vec(any::<u8>(), 0..40), header in any::<bool>()) {
            let mut payload = if header { vec![0, 60, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16] } else { vec![0, 60, 0, 40] };
            payload.extend(tail);
            let kind = if header { constants::FRAME_HEADER } else { constants::FRAME_METHOD };
            let fast = if header { read_content_header(7, &payload) } else { read_publish(7, &payload) };
            if let Some(fast) = fast {
                prop_assert_eq!(Ok(fast), slow(kind, &payload));
            }
        }

        #[test]
        fn a_content_header_is_written_as_amq_protocol_writes_it(properties in properties(), body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut ours = BytesMut::new();
            crate::encode_content_ref(7, 60, &PropertiesRef::from(&properties), &body, 0, &mut ours).unwrap();
            let theirs = gen_frame(&header_frame(properties.clone(), body.len() as u64))(WriteContext::from(Vec::new()))
                .unwrap().into_inner().0;
            prop_assert_eq!(&ours[..theirs.len()], &theirs[..]);
            let props = gen_properties(&properties)(WriteContext::from(Vec::new())).unwrap().into_inner().0;
            prop_assert_eq!(theirs.len(), crate::FRAME_OVERHEAD + 12 + props.len());
        }

        #[test]
        fn a_deliver_is_written_as_amq_protocol_writes_it(
            consumer_tag in short_text(),
            delivery_tag in any::<u64>(),
            redelivered in any::<bool>(),
            exchange in short_text(),
            routing_key in short_text(),
        ) {
            let mut ours = BytesMut::from(&b"before"[..]);
            encode_deliver(9, &Deliver { consumer_tag: &consumer_tag, delivery_tag, redelivered, exchange: &exchange, routing_key: &routing_key }, &mut ours);
            let frame = AMQPFrame::Method(9, AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                consumer_tag: ShortString::try_new(consumer_tag).unwrap(),
                delivery_tag,
                redelivered,
                exchange: ShortString::try_new(exchange).unwrap(),
                routing_key: ShortString::try_new(routing_key).unwrap(),
            })));
            let theirs = gen_frame(&frame)(WriteContext::from(Vec::new())).unwrap().into_inner().0;
            prop_assert_eq!(&ours[..6], b"before");
            prop_assert_eq!(&ours[6..], &theirs[..]);
        }
    }

    #[test]
    fn strings_past_255_bytes_are_cut_on_a_character_as_short_string_lossy_cuts_them() {
        let long = "é".repeat(200); // 400 bytes
        let mut ours = BytesMut::new();
        encode_deliver(
            1,
            &Deliver {
                consumer_tag: &long,
                delivery_tag: 1,
                redelivered: false,
                exchange: "",
                routing_key: "",
            },
            &mut ours,
        );
        let frame = AMQPFrame::Method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                consumer_tag: crate::short_string_lossy(&long),
                delivery_tag: 1,
                ..Default::default()
            })),
        );
        assert_eq!(
            &ours[..],
            &gen_frame(&frame)(WriteContext::from(Vec::new()))
                .unwrap()
                .into_inner()
                .0[..]
        );
        assert_eq!(ours[11], 254, "127 characters of two bytes");
    }

    #[test]
    fn not_utf8_and_trailing_bytes_are_left_to_amq_protocol() {
        let mut publish = vec![0, 60, 0, 40, 0, 0, 1, 0xFF, 0, 0];
        assert_eq!(read_publish(1, &publish), None, "exchange name not UTF-8");
        assert!(slow(constants::FRAME_METHOD, &publish).is_err());
        publish[7] = b'x';
        assert!(read_publish(1, &publish).is_some());
        publish.push(0);
        assert_eq!(read_publish(1, &publish), None, "a byte after the bits");
        assert!(slow(constants::FRAME_METHOD, &publish).is_err());
        let consume = [0, 60, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(read_publish(1, &consume), None, "basic.consume is not a publish");
    }
}
