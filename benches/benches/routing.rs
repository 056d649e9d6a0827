//! Routing with many bindings, through `Broker::apply` (routing has no
//! public entry of its own): one `basic.publish` per iteration to a topic,
//! headers or direct exchange with 1,000 or 10,000 bindings, each to its own
//! queue. Every publish matches exactly one binding, so the time is the
//! binding scan plus one enqueue. Queues are capped at 1,000 messages
//! (`x-max-length`, drop-head) so state stays the same size while measuring.

mod common;

use amq_protocol_types::{AMQPValue, FieldTable};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use warren_core::test_support::{bind_with, chan, declare_exchange, declare_queue_with, int, message, table, text};
use warren_core::{Batch, Broker, Command, ExchangeKind, VHost};

const BINDING_COUNTS: [usize; 2] = [1_000, 10_000];
/// Distinct publishes cycled through, so one key does not stay hot.
const KEYS: usize = 64;

#[derive(Clone, Copy)]
enum Kind {
    Topic,
    Headers,
    Direct,
}

impl Kind {
    fn exchange(self) -> &'static str {
        match self {
            Self::Topic => "bench.topic",
            Self::Headers => "bench.headers",
            Self::Direct => "bench.direct",
        }
    }

    /// The binding of queue `i`: topic patterns of four shapes (`*` and `#`
    /// at different places), headers `x-match=all` on two keys, or a direct key.
    fn binding(self, i: usize) -> (String, FieldTable) {
        match self {
            Self::Topic => {
                let key = match i % 4 {
                    0 => format!("stock.{i}.*"),
                    1 => format!("*.{i}.nyse"),
                    2 => format!("stock.{i}.#"),
                    _ => format!("#.{i}.lse"),
                };
                (key, FieldTable::default())
            }
            Self::Headers => {
                let arguments = table(&[
                    ("x-match", text("all")),
                    ("region", text(&format!("r{}", i % 64))),
                    ("tenant", int(i32::try_from(i).unwrap_or(i32::MAX))),
                ]);
                (String::new(), arguments)
            }
            Self::Direct => (format!("orders.{i}"), FieldTable::default()),
        }
    }

    /// A publish that matches the binding of queue `target` only.
    fn publish(self, target: usize) -> Command {
        let (routing_key, headers) = match self {
            // Every shape above matches a three-word key of this form.
            Self::Topic => (format!("stock.{target}.{}", topic_tail(target)), None),
            Self::Headers => {
                let headers = table(&[
                    ("region", text(&format!("r{}", target % 64))),
                    ("tenant", int(i32::try_from(target).unwrap_or(i32::MAX))),
                    ("trace-id", text("4bf92f3577b34da6")),
                ]);
                (String::new(), Some(headers))
            }
            Self::Direct => (format!("orders.{target}"), None),
        };
        let mut msg = message(self.exchange(), &routing_key, &"x".repeat(256));
        std::sync::Arc::make_mut(&mut msg.properties).headers = headers;
        warren_core::test_support::publish_message(msg)
    }
}

fn topic_tail(target: usize) -> &'static str {
    match target % 4 {
        1 => "nyse",
        3 => "lse",
        _ => "arca",
    }
}

/// A broker with `bindings` queues bound to `kind`'s exchange.
fn broker_with_bindings(kind: Kind, bindings: usize) -> Broker {
    let origin = chan(1, 1);
    let exchange_kind = match kind {
        Kind::Topic => ExchangeKind::Topic,
        Kind::Headers => ExchangeKind::Headers,
        Kind::Direct => ExchangeKind::Direct,
    };
    let capped = table(&[("x-max-length", AMQPValue::LongInt(1_000))]);
    let mut commands = vec![declare_exchange(kind.exchange(), exchange_kind)];
    for i in 0..bindings {
        let queue = format!("q{i}");
        let (routing_key, arguments) = kind.binding(i);
        commands.push(declare_queue_with(&queue, capped.clone()));
        commands.push(bind_with(&queue, kind.exchange(), &routing_key, arguments));
    }
    let mut broker = Broker::new();
    common::apply_ok(&mut broker, origin, commands);
    broker
}

fn route(c: &mut Criterion) {
    let origin = chan(1, 1);
    for (name, kind) in [
        ("topic", Kind::Topic),
        ("headers", Kind::Headers),
        ("direct", Kind::Direct),
    ] {
        let mut group = c.benchmark_group(format!("routing/{name}"));
        group.throughput(Throughput::Elements(1));
        for bindings in BINDING_COUNTS {
            let mut broker = broker_with_bindings(kind, bindings);
            // Targets spread over the binding list, so the matching binding
            // is not always near the front.
            let publishes: Vec<Batch> = (0..KEYS)
                .map(|k| common::batch(origin, [kind.publish(k * bindings / KEYS + k % 7)]))
                .collect();
            check_routed(&mut broker, &publishes);
            let mut effects = Vec::new();
            let mut next = 0;
            group.bench_function(BenchmarkId::from_parameter(bindings), |b| {
                b.iter(|| {
                    effects.clear();
                    broker.apply(&publishes[next % KEYS], &mut effects);
                    next += 1;
                });
            });
        }
        group.finish();
    }
}

/// Panics unless every publish reached exactly one message into a queue.
fn check_routed(broker: &mut Broker, publishes: &[Batch]) {
    let before = ready_messages(broker);
    let mut effects = Vec::new();
    for batch in publishes {
        broker.apply(batch, &mut effects);
    }
    let routed = ready_messages(broker) - before;
    assert_eq!(
        routed,
        publishes.len() as u64,
        "each benchmark publish must route to one queue"
    );
}

fn ready_messages(broker: &Broker) -> u64 {
    let root = VHost::from("/");
    broker
        .queue_summaries()
        .iter()
        .filter(|s| s.vhost == root)
        .map(|s| s.messages_ready)
        .sum()
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = route
}
criterion_main!(benches);
