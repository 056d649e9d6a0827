//! Fuzzes `decode_frame` (and the SASL parsers) with arbitrary bytes.
//!
//! Run with `cargo +nightly fuzz run decode_frame` from crates/warren-wire.
//! Checks: no panic, no stack overflow, progress on every decoded frame,
//! nothing consumed on `Ok(None)`/`Err`, and every decoded frame re-encodes
//! to bytes that decode to the same bytes again.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use warren_wire::{decode_frame, encode_frame, parse_sasl_response, AMQPFrame};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let frame_max = match selector % 4 {
        0 => 0,
        1 => 4096,
        2 => 131_072,
        _ => u32::from(selector) * 64,
    };
    let mechanism = ["PLAIN", "AMQPLAIN"][usize::from(selector & 1)];
    let _ = parse_sasl_response(mechanism, rest);

    let mut buf = BytesMut::from(rest);
    loop {
        let before = buf.len();
        match decode_frame(&mut buf, frame_max) {
            Ok(Some(frame)) => {
                assert!(buf.len() < before);
                reencodes_stably(&frame);
            }
            Ok(None) | Err(_) => {
                assert_eq!(buf.len(), before);
                return;
            }
        }
    }
});

fn reencodes_stably(frame: &AMQPFrame) {
    let mut first = BytesMut::new();
    encode_frame(frame, &mut first).expect("a decoded frame encodes");
    let mut reader = first.clone();
    let again = decode_frame(&mut reader, u32::MAX)
        .expect("our own encoding decodes")
        .expect("our own encoding is complete");
    let mut second = BytesMut::new();
    encode_frame(&again, &mut second).expect("encodes again");
    assert_eq!(first, second);
}
