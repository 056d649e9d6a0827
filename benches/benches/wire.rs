//! Codec hot paths: what a node does per message on the AMQP side.
//!
//! - `decode_publish`: a client's `basic.publish` + content header + body,
//!   decoded frame by frame with `decode_frame` (the server's read path);
//! - `encode_deliver`: `basic.deliver` + `encode_content` (the server's
//!   write path for every delivery);
//! - `decode_publish_plain`: the same without a `headers` table (what
//!   amqprs-perf, warren-perf and most pika publishers send), whose
//!   method and content header frames the codec reads by hand;
//! - `deliver_by_hand`: `encode_deliver` + `encode_content_ref`, the
//!   front end's write path since issue 11's item 4 (`encode_deliver`
//!   above is the amq-protocol path it replaced, for comparison);
//! - `encode_publish` / `decode_deliver`: the client's side of the same, at
//!   1 KiB only, for comparison.
//!
//! Throughput is in bytes of encoded frames; one iteration is one message.

mod common;

use amq_protocol_types::{AMQPValue, FieldTable, LongString};
use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use warren_wire::protocol::basic;
use warren_wire::{decode_frame, encode_content, encode_frame, AMQPClass, AMQPFrame, AMQPProperties};

/// The `frame_max` RabbitMQ and Warren negotiate by default.
const FRAME_MAX: u32 = 131_072;
const CHANNEL: u16 = 1;
/// `basic` class id: the class of every content header here.
const BASIC_CLASS: u16 = 60;
const BODY_SIZES: [usize; 3] = [16, 1024, 64 * 1024];

/// Properties a typical persistent publish carries (pika/lapin defaults
/// plus a few headers).
fn properties() -> AMQPProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        "trace-id".into(),
        AMQPValue::LongString(LongString::from("4bf92f3577b34da6")),
    );
    headers.insert("attempt".into(), AMQPValue::LongInt(1));
    AMQPProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id("msg-000000001".into())
        .with_timestamp(1_795_000_000)
        .with_headers(headers)
}

/// Properties without a `headers` table.
fn plain_properties() -> AMQPProperties {
    AMQPProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
}

fn publish_method() -> AMQPFrame {
    AMQPFrame::Method(
        CHANNEL,
        AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "orders".into(),
            routing_key: "orders.eu.created".into(),
            mandatory: false,
            immediate: false,
        })),
    )
}

fn deliver_method(delivery_tag: u64) -> AMQPFrame {
    AMQPFrame::Method(
        CHANNEL,
        AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
            consumer_tag: "amq.ctag-0123456789abcdef".into(),
            delivery_tag,
            redelivered: false,
            exchange: "orders".into(),
            routing_key: "orders.eu.created".into(),
        })),
    )
}

/// Method frame, content header and body frames of one message, as a
/// client writes them (content header through `encode_frame`, as lapin does).
fn encode_message(method: &AMQPFrame, properties: &AMQPProperties, body: &[u8], out: &mut BytesMut) {
    encode_frame(method, out).expect("method frame encodes");
    encode_content(CHANNEL, BASIC_CLASS, properties, body, FRAME_MAX, out).expect("content encodes");
}

/// Decodes every frame in `buf`; returns how many.
fn decode_all(buf: &mut BytesMut) -> usize {
    let mut frames = 0;
    while let Some(frame) = decode_frame(buf, FRAME_MAX).expect("frames decode") {
        black_box(frame);
        frames += 1;
    }
    frames
}

/// The decoding of one publish per body size, its properties given.
fn decode_publishes(c: &mut Criterion, group: &str, properties: &AMQPProperties) {
    let mut group = c.benchmark_group(group);
    for size in BODY_SIZES {
        let mut encoded = BytesMut::new();
        encode_message(&publish_method(), properties, &vec![0x5a; size], &mut encoded);
        group.throughput(Throughput::Bytes(encoded.len() as u64));
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter_batched_ref(|| encoded.clone(), decode_all, BatchSize::SmallInput);
        });
    }
    group.finish();
}

fn decode_publish(c: &mut Criterion) {
    decode_publishes(c, "wire/decode_publish", &properties());
}

fn decode_publish_plain(c: &mut Criterion) {
    decode_publishes(c, "wire/decode_publish_plain", &plain_properties());
}

fn deliver_by_hand(c: &mut Criterion) {
    let mut group = c.benchmark_group("wire/deliver_by_hand");
    let properties = properties();
    let props = warren_wire::PropertiesRef::from(&properties);
    for size in BODY_SIZES {
        let body = vec![0x5a; size];
        let mut out = BytesMut::with_capacity(size + 4096);
        let mut delivery_tag = 0;
        let mut write = |out: &mut BytesMut| {
            delivery_tag += 1;
            let deliver = warren_wire::Deliver {
                consumer_tag: "amq.ctag-0123456789abcdef",
                delivery_tag,
                redelivered: false,
                exchange: "orders",
                routing_key: "orders.eu.created",
            };
            warren_wire::encode_deliver(CHANNEL, &deliver, out);
            warren_wire::encode_content_ref(CHANNEL, BASIC_CLASS, &props, &body, FRAME_MAX, out)
                .expect("content encodes");
        };
        write(&mut out);
        group.throughput(Throughput::Bytes(out.len() as u64));
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter(|| {
                out.clear();
                write(&mut out);
                black_box(out.len())
            });
        });
    }
    group.finish();
}

fn encode_deliver(c: &mut Criterion) {
    let mut group = c.benchmark_group("wire/encode_deliver");
    let properties = properties();
    for size in BODY_SIZES {
        let body = vec![0x5a; size];
        let mut out = BytesMut::with_capacity(size + 4096);
        encode_message(&deliver_method(1), &properties, &body, &mut out);
        group.throughput(Throughput::Bytes(out.len() as u64));
        let mut delivery_tag = 0;
        group.bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter(|| {
                // A connection task reuses its write buffer.
                out.clear();
                delivery_tag += 1;
                encode_message(&deliver_method(delivery_tag), &properties, &body, &mut out);
                black_box(out.len())
            });
        });
    }
    group.finish();
}

fn client_side(c: &mut Criterion) {
    let mut group = c.benchmark_group("wire/client_1KiB");
    let properties = properties();
    let body = vec![0x5a; 1024];
    let mut out = BytesMut::with_capacity(8192);
    encode_message(&publish_method(), &properties, &body, &mut out);
    group.throughput(Throughput::Bytes(out.len() as u64));
    group.bench_function("encode_publish", |b| {
        b.iter(|| {
            out.clear();
            encode_message(&publish_method(), &properties, &body, &mut out);
            black_box(out.len())
        });
    });
    let mut delivered = BytesMut::new();
    encode_message(&deliver_method(1), &properties, &body, &mut delivered);
    group.bench_function("decode_deliver", |b| {
        b.iter_batched_ref(|| delivered.clone(), decode_all, BatchSize::SmallInput);
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = decode_publish, decode_publish_plain, encode_deliver, deliver_by_hand, client_side
}
criterion_main!(benches);
