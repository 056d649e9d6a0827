//! `Broker::apply` of a Raft entry's worth of publishes: a batch of N
//! persistent 1 KiB `basic.publish` commands (N = 1, 64, 1024; the
//! proposer coalesces whatever is waiting into one batch) to a durable queue
//! through the default exchange.
//!
//! - `publish_durable`: the queue has no consumer; each iteration starts
//!   from the same broker (a clone, made outside the timing) so the queue
//!   does not grow without bound.
//! - `publish_deliver_ack`: the queue has one manual-ack consumer with no
//!   prefetch limit; each iteration applies the publish batch (every message
//!   is delivered at once) and then one `basic.ack multiple` batch for all
//!   of them, so the state is the same after every iteration.
//!
//! Throughput is in messages.

mod common;

use amq_protocol_types::FieldTable;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use warren_core::test_support::{ack, chan, consume, message, publish_message, root};
use warren_core::{Batch, Broker, ChannelId, Command, Effect, QueueName};

const BATCH_SIZES: [usize; 3] = [1, 64, 1024];
const QUEUE: &str = "orders";

fn publisher() -> ChannelId {
    chan(1, 1)
}

fn consumer() -> ChannelId {
    chan(2, 1)
}

fn declare_durable_queue() -> Command {
    Command::DeclareQueue {
        vhost: root(),
        name: QueueName::from(QUEUE),
        passive: false,
        durable: true,
        exclusive: false,
        auto_delete: false,
        arguments: FieldTable::default(),
    }
}

/// A batch of `n` persistent 1 KiB publishes to [`QUEUE`].
fn publish_batch(n: usize) -> Batch {
    let mut msg = message("", QUEUE, &"x".repeat(1024));
    std::sync::Arc::make_mut(&mut msg.properties).delivery_mode = Some(2);
    std::sync::Arc::make_mut(&mut msg.properties).content_type = Some("application/json".to_owned());
    common::batch(publisher(), (0..n).map(|_| publish_message(msg.clone())))
}

fn publish_durable(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply/publish_durable");
    let mut template = Broker::new();
    common::apply_ok(&mut template, publisher(), vec![declare_durable_queue()]);
    for n in BATCH_SIZES {
        let batch = publish_batch(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_batched_ref(
                || (template.clone(), Vec::with_capacity(2 * n)),
                |(broker, effects)| broker.apply(&batch, effects),
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

fn publish_deliver_ack(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply/publish_deliver_ack");
    let mut broker = Broker::new();
    common::apply_ok(&mut broker, publisher(), vec![declare_durable_queue()]);
    common::apply_ok(&mut broker, consumer(), vec![consume(QUEUE, "bench-consumer", false)]);
    let mut last_tag = 0;
    let mut effects = Vec::new();
    for n in BATCH_SIZES {
        let batch = publish_batch(n);
        let mut cycle = |effects: &mut Vec<Effect>| {
            effects.clear();
            broker.apply(&batch, effects);
            last_tag += n as u64;
            broker.apply(&common::batch(consumer(), [ack(last_tag, true)]), effects);
        };
        cycle(&mut effects);
        let delivered = effects.iter().filter(|e| matches!(e, Effect::Deliver { .. })).count();
        assert_eq!(delivered, n, "every published message must be delivered at once");
        let failed = effects
            .iter()
            .any(|e| matches!(e, Effect::Reply { outcome: Err(_), .. }));
        assert!(!failed, "publish and ack must succeed: {effects:?}");
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::from_parameter(n), |b| b.iter(|| cycle(&mut effects)));
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = publish_durable, publish_deliver_ack
}
criterion_main!(benches);
