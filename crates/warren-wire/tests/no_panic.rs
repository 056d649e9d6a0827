#![allow(clippy::unwrap_used)]

//! Property tests: `decode_frame` never panics, whatever the bytes, and
//! content survives `encode_content` → `decode_frame` for any properties,
//! body and frame_max.

use bytes::BytesMut;
use proptest::prelude::*;
use warren_wire::protocol::{basic, queue};
use warren_wire::types::{AMQPValue, FieldArray, FieldTable, ShortString};
use warren_wire::{
    decode_frame, encode_content, encode_frame, parse_sasl_response, AMQPClass, AMQPFrame, AMQPProperties, WireError,
};

/// Decodes frames until the buffer needs more bytes or an error occurs,
/// checking that every step makes progress.
fn decode_until_stuck(mut buf: BytesMut, frame_max: u32) {
    loop {
        let before = buf.len();
        match decode_frame(&mut buf, frame_max) {
            Ok(Some(frame)) => {
                assert!(buf.len() < before, "a decoded frame consumes bytes");
                assert_reencodes_stably(&frame);
            }
            Ok(None) | Err(_) => {
                assert_eq!(buf.len(), before, "no bytes consumed without a frame");
                return;
            }
        }
    }
}

/// Whatever was decoded can be encoded, and decoding that encoding gives
/// back a frame with the same bytes (byte comparison rather than `==`, so
/// NaN floats in tables compare equal).
fn assert_reencodes_stably(frame: &AMQPFrame) {
    let mut first = BytesMut::new();
    encode_frame(frame, &mut first).expect("a decoded frame encodes");
    let mut reader = first.clone();
    let again = decode_frame(&mut reader, u32::MAX)
        .expect("our own encoding decodes")
        .expect("our own encoding is complete");
    assert!(reader.is_empty());
    let mut second = BytesMut::new();
    encode_frame(&again, &mut second).expect("encodes again");
    assert_eq!(first, second);
}

fn short(s: &str) -> ShortString {
    ShortString::try_new(s).unwrap_or_default()
}

/// A few valid frames of the kinds a server sees most, concatenated.
fn valid_frames(seed: u8) -> BytesMut {
    let mut table = FieldTable::default();
    let mut array = FieldArray::default();
    array.push(AMQPValue::LongString("x".into()));
    table.insert(short("x-args"), AMQPValue::FieldArray(array));
    table.insert(short("x-ttl"), AMQPValue::LongInt(i32::from(seed)));
    let frames = [
        AMQPFrame::Method(
            1,
            AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
                queue: short("q"),
                durable: true,
                arguments: table.clone(),
                ..Default::default()
            })),
        ),
        AMQPFrame::Method(
            1,
            AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
                exchange: short("ex"),
                routing_key: short("rk"),
                ..Default::default()
            })),
        ),
        AMQPFrame::Heartbeat,
    ];
    let mut out = BytesMut::new();
    for frame in &frames {
        encode_frame(frame, &mut out).ok();
    }
    let properties = AMQPProperties::default()
        .with_content_type(short("text/plain"))
        .with_headers(table)
        .with_delivery_mode(2);
    encode_content(1, 60, &properties, &[seed; 40], 4096, &mut out).ok();
    out
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, xor: u8 },
    Set { at: usize, byte: u8 },
    Insert { at: usize, byte: u8 },
    Remove { at: usize },
    Truncate { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, xor)| Mutation::Flip { at, xor }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        any::<usize>().prop_map(|at| Mutation::Remove { at }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    let len = bytes.len();
    match *mutation {
        Mutation::Flip { at, xor } => bytes[at % len] ^= xor,
        Mutation::Set { at, byte } => bytes[at % len] = byte,
        Mutation::Insert { at, byte } => bytes.insert(at % (len + 1), byte),
        Mutation::Remove { at } => {
            bytes.remove(at % len);
        }
        Mutation::Truncate { at } => bytes.truncate(at % len),
    }
}

fn frame_max() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0u32), Just(4096), Just(131_072), 0..20_000u32]
}

fn short_string() -> impl Strategy<Value = ShortString> {
    proptest::string::string_regex("[a-zA-Z0-9._\u{e9}-]{0,40}")
        .expect("valid regex")
        .prop_map(|s| short(&s))
}

fn properties() -> impl Strategy<Value = AMQPProperties> {
    (
        proptest::option::of(short_string()),
        proptest::option::of((short_string(), any::<i64>())),
        proptest::option::of(1..=2u8),
        proptest::option::of(any::<u8>()),
        proptest::option::of(short_string()),
        proptest::option::of(any::<u64>()),
        proptest::option::of(short_string()),
    )
        .prop_map(|(content_type, header, mode, priority, reply_to, timestamp, app_id)| {
            let mut p = AMQPProperties::default();
            if let Some(v) = content_type {
                p = p.with_content_type(v);
            }
            if let Some((key, value)) = header {
                let mut table = FieldTable::default();
                table.insert(key, AMQPValue::LongLongInt(value));
                p = p.with_headers(table);
            }
            if let Some(v) = mode {
                p = p.with_delivery_mode(v);
            }
            if let Some(v) = priority {
                p = p.with_priority(v);
            }
            if let Some(v) = reply_to {
                p = p.with_reply_to(v);
            }
            if let Some(v) = timestamp {
                p = p.with_timestamp(v);
            }
            if let Some(v) = app_id {
                p = p.with_app_id(v);
            }
            p
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        frame_max in frame_max(),
    ) {
        decode_until_stuck(BytesMut::from(&bytes[..]), frame_max);
    }

    #[test]
    fn decode_never_panics_on_arbitrary_frames_of_valid_type(
        frame_type in prop_oneof![Just(1u8), Just(2u8), Just(3u8), Just(8u8)],
        channel in any::<u16>(),
        payload in proptest::collection::vec(any::<u8>(), 0..400),
        ids in (prop_oneof![Just(10u16), Just(20), Just(40), Just(50), Just(60), Just(85), Just(90)], 0..130u16),
    ) {
        // Make method frames start with plausible ids so the argument
        // parsers, not just the id check, see random input.
        let mut payload = payload;
        if frame_type == 1 && payload.len() >= 4 {
            payload[..2].copy_from_slice(&ids.0.to_be_bytes());
            payload[2..4].copy_from_slice(&ids.1.to_be_bytes());
        }
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[frame_type]);
        buf.extend_from_slice(&channel.to_be_bytes());
        buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        buf.extend_from_slice(&payload);
        buf.extend_from_slice(&[0xCE]);
        decode_until_stuck(buf, 131_072);
    }

    #[test]
    fn decode_never_panics_on_mutated_valid_frames(
        seed in any::<u8>(),
        mutations in proptest::collection::vec(mutation(), 1..6),
        frame_max in frame_max(),
    ) {
        let mut bytes = valid_frames(seed).to_vec();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        decode_until_stuck(BytesMut::from(&bytes[..]), frame_max);
    }

    #[test]
    fn sasl_parsing_never_panics(
        mechanism in prop_oneof![Just("PLAIN"), Just("AMQPLAIN"), Just("OTHER")],
        response in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let _ = parse_sasl_response(mechanism, &response);
    }

    #[test]
    fn content_round_trips_for_any_properties_body_and_frame_max(
        properties in properties(),
        body in proptest::collection::vec(any::<u8>(), 0..20_000),
        frame_max in prop_oneof![Just(0u32), 4096..70_000u32],
        channel in 1..=u16::MAX,
    ) {
        let mut buf = BytesMut::new();
        encode_content(channel, 60, &properties, &body, frame_max, &mut buf).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let limit = if frame_max == 0 { u32::MAX } else { frame_max };
        let mut reassembled = Vec::new();
        let mut header = None;
        loop {
            let before = buf.len();
            let frame = match decode_frame(&mut buf, limit) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(err) => return Err(TestCaseError::fail(err.to_string())),
            };
            prop_assert!(before - buf.len() <= limit as usize);
            match frame {
                AMQPFrame::Header(ch, h) => {
                    prop_assert_eq!(ch, channel);
                    header = Some(h);
                }
                AMQPFrame::Body(ch, chunk) => {
                    prop_assert_eq!(ch, channel);
                    prop_assert!(!chunk.is_empty());
                    reassembled.extend_from_slice(&chunk);
                }
                other => return Err(TestCaseError::fail(format!("unexpected {other}"))),
            }
        }
        prop_assert!(buf.is_empty());
        let header = header.ok_or_else(|| TestCaseError::fail("no header"))?;
        prop_assert_eq!(header.class_id, 60);
        prop_assert_eq!(header.body_size, body.len() as u64);
        prop_assert_eq!(header.properties, properties);
        prop_assert_eq!(reassembled, body);
    }
}

#[test]
fn frame_max_check_precedes_everything_but_the_type() {
    // A header of an unknown type is reported as such even when huge.
    let mut buf = BytesMut::from(&[9u8, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF][..]);
    assert_eq!(decode_frame(&mut buf, 4096), Err(WireError::UnknownFrameType(9)));
}
