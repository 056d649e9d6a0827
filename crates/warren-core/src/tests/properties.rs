//! Property tests: random command sequences keep the invariants, every
//! request with an origin gets exactly one reply in order, and apply is
//! deterministic (also across a snapshot round trip).

use std::sync::Arc;

use amq_protocol_types::FieldTable;
use proptest::prelude::*;

use crate::test_support::*;
use crate::{
    Batch, Broker, ChannelId, Command, ConnectionId, DeliveryTag, Effect, ExchangeKind, ExchangeName, NodeId, Request,
};

const QUEUES: [&str; 3] = ["q0", "q1", "q2"];
const EXCHANGES: [&str; 4] = ["", "amq.direct", "amq.fanout", "e2e"];
const KEYS: [&str; 4] = ["q0", "q1", "q2", "a.b"];

fn connection(index: usize) -> ConnectionId {
    match index % 3 {
        0 => ConnectionId {
            node: NodeId(1),
            boot: 1,
            seq: 1,
        },
        1 => ConnectionId {
            node: NodeId(1),
            boot: 1,
            seq: 2,
        },
        _ => ConnectionId {
            node: NodeId(2),
            boot: 1,
            seq: 1,
        },
    }
}

/// Four channels: two on connection 0, one each on connections 1 and 2.
fn channel(index: usize) -> ChannelId {
    match index % 4 {
        0 => ChannelId {
            conn: connection(0),
            channel: 1,
        },
        1 => ChannelId {
            conn: connection(0),
            channel: 2,
        },
        2 => ChannelId {
            conn: connection(1),
            channel: 1,
        },
        _ => ChannelId {
            conn: connection(2),
            channel: 1,
        },
    }
}

fn queue_arguments(variant: usize) -> FieldTable {
    match variant {
        0 => FieldTable::default(),
        1 => table(&[("x-max-length", int(2))]),
        2 => table(&[("x-max-length", int(1)), ("x-overflow", text("reject-publish"))]),
        3 => table(&[
            ("x-message-ttl", int(5)),
            ("x-dead-letter-exchange", text("amq.fanout")),
        ]),
        6 => table(&[("x-max-priority", int(3)), ("x-message-ttl", int(30))]),
        4 => table(&[
            ("x-dead-letter-exchange", text("")),
            ("x-dead-letter-routing-key", text("q0")),
        ]),
        _ => table(&[
            ("x-expires", int(60)),
            ("x-single-active-consumer", amq_protocol_types::AMQPValue::Boolean(true)),
        ]),
    }
}

/// The attributes each queue is declared with in one test case, so that
/// redeclares mostly agree (a random mix would mostly fail with 406).
#[derive(Clone, Copy, Debug)]
struct QueueLayout {
    arguments: usize,
    durable: bool,
    auto_delete: bool,
    exclusive: bool,
}

fn layout() -> impl Strategy<Value = [QueueLayout; 3]> {
    let one = (
        0..6usize,
        any::<bool>(),
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.2),
    )
        .prop_map(|(arguments, durable, auto_delete, exclusive)| QueueLayout {
            arguments,
            durable,
            auto_delete,
            exclusive,
        });
    [one.clone(), one.clone(), one]
}

fn declare_from(layout: &[QueueLayout; 3], q: usize) -> Command {
    let spec = layout[q];
    Command::DeclareQueue {
        vhost: root(),
        name: QUEUES[q].into(),
        passive: false,
        durable: spec.durable,
        exclusive: spec.exclusive,
        auto_delete: spec.auto_delete,
        arguments: queue_arguments(spec.arguments),
    }
}

/// One generated request.
fn request(layout: [QueueLayout; 3]) -> impl Strategy<Value = Request> {
    let ch = 0..4usize;
    let q = 0..QUEUES.len();
    let tag = 0..5u64;
    prop_oneof![
        3 => (ch.clone(), q.clone(), prop::bool::weighted(0.1)).prop_map(move |(c, q, odd)| {
            let mut command = declare_from(&layout, q);
            if let (true, Command::DeclareQueue { durable, .. }) = (odd, &mut command) {
                *durable = !*durable;
            }
            Request { origin: Some(channel(c)), command }
        }),
        2 => (ch.clone(), q.clone(), 1..EXCHANGES.len(), 0..KEYS.len())
            .prop_map(|(c, q, x, k)| Request { origin: Some(channel(c)), command: bind(QUEUES[q], EXCHANGES[x], KEYS[k]) }),
        8 => (ch.clone(), 0..EXCHANGES.len(), 0..KEYS.len(), any::<bool>(), prop::option::weighted(0.15, 0..8u8), 0..4usize).prop_map(
            |(c, x, k, mandatory, expiration, size)| {
                let mut m = message(EXCHANGES[x], KEYS[k], &"x".repeat(size));
                m.properties.expiration = expiration.map(|e| e.to_string());
                m.properties.priority = Some(size as u8 * 2);
                Request { origin: Some(channel(c)), command: Command::Publish { vhost: root(), mandatory, message: Arc::new(m) } }
            }
        ),
        4 => (ch.clone(), q.clone(), 0..3u8, any::<bool>(), prop::bool::weighted(0.1)).prop_map(
            |(c, q, t, no_ack, exclusive)| {
                let command = Command::Consume {
                    vhost: root(),
                    queue: QUEUES[q].into(),
                    consumer_tag: format!("t{t}").as_str().into(),
                    no_ack,
                    exclusive,
                    arguments: FieldTable::default(),
                };
                Request { origin: Some(channel(c)), command }
            }
        ),
        1 => (ch.clone(), 0..3u8).prop_map(|(c, t)| Request {
            origin: Some(channel(c)),
            command: Command::Cancel { consumer_tag: format!("t{t}").as_str().into() }
        }),
        3 => (ch.clone(), 0..3u16, any::<bool>()).prop_map(|(c, n, g)| Request { origin: Some(channel(c)), command: qos(n, g) }),
        3 => (ch.clone(), q.clone(), any::<bool>()).prop_map(|(c, q, no_ack)| Request { origin: Some(channel(c)), command: get(QUEUES[q], no_ack) }),
        6 => (ch.clone(), tag.clone(), any::<bool>()).prop_map(|(c, t, m)| Request { origin: Some(channel(c)), command: ack(t, m) }),
        3 => (ch.clone(), tag.clone(), any::<bool>(), any::<bool>())
            .prop_map(|(c, t, m, r)| Request { origin: Some(channel(c)), command: nack(t, m, r) }),
        1 => (ch.clone(), tag, any::<bool>()).prop_map(|(c, t, r)| Request {
            origin: Some(channel(c)),
            command: Command::Reject { delivery_tag: DeliveryTag(t), requeue: r }
        }),
        1 => ch.clone().prop_map(|c| Request { origin: Some(channel(c)), command: Command::Recover { requeue: true } }),
        1 => ch.clone().prop_map(|c| Request { origin: Some(channel(c)), command: Command::CloseChannel }),
        1 => (ch.clone(), 0..3usize).prop_map(|(c, n)| Request {
            origin: Some(channel(c)),
            command: Command::CloseConnection { conn: connection(n) }
        }),
        1 => (ch.clone(), q.clone(), any::<bool>(), any::<bool>()).prop_map(|(c, q, u, e)| Request {
            origin: Some(channel(c)),
            command: Command::DeleteQueue { vhost: root(), queue: QUEUES[q].into(), if_unused: u, if_empty: e }
        }),
        1 => (ch.clone(), q).prop_map(|(c, q)| Request {
            origin: Some(channel(c)),
            command: Command::PurgeQueue { vhost: root(), queue: QUEUES[q].into() }
        }),
        1 => (ch.clone(), any::<bool>()).prop_map(|(c, delete)| {
            let command = if delete {
                Command::DeleteExchange { vhost: root(), name: ExchangeName::from("e2e"), if_unused: false }
            } else {
                declare_exchange("e2e", ExchangeKind::Topic)
            };
            Request { origin: Some(channel(c)), command }
        }),
        1 => ch.prop_map(|c| Request {
            origin: Some(channel(c)),
            command: Command::BindExchange {
                vhost: root(),
                destination: ExchangeName::from("e2e"),
                source: ExchangeName::from("amq.direct"),
                routing_key: "a.b".into(),
                arguments: FieldTable::default(),
            }
        }),
        2 => Just(Request { origin: None, command: Command::Tick }),
        1 => prop_oneof![
            6 => Just(Request { origin: None, command: Command::Tick }),
            1 => Just(Request { origin: None, command: Command::NodeDown { node: NodeId(2) } }),
            1 => (1..3u64).prop_map(|boot| Request { origin: None, command: Command::NodeStarted { node: NodeId(1), boot } }),
        ],
    ]
}

fn batches() -> impl Strategy<Value = Vec<Batch>> {
    layout().prop_flat_map(|layout| {
        let steps = prop::collection::vec((0..8u64, prop::collection::vec(request(layout), 1..6)), 1..25);
        steps.prop_map(move |steps| {
            let mut now_ms = 1_000_000;
            let mut batches = vec![Batch {
                now_ms,
                requests: setup(&layout),
            }];
            for (advance, requests) in steps {
                now_ms += advance;
                batches.push(Batch { now_ms, requests });
            }
            batches
        })
    })
}

/// The first batch: the three queues, and some wiring so that most
/// publishes reach a queue.
fn setup(layout: &[QueueLayout; 3]) -> Vec<Request> {
    let mut commands: Vec<Command> = (0..QUEUES.len()).map(|q| declare_from(layout, q)).collect();
    commands.extend([
        declare_exchange("e2e", ExchangeKind::Topic),
        bind("q1", "amq.fanout", ""),
        bind("q2", "amq.direct", "a.b"),
        bind("q0", "e2e", "#"),
        Command::BindExchange {
            vhost: root(),
            destination: ExchangeName::from("e2e"),
            source: ExchangeName::from("amq.direct"),
            routing_key: "a.b".into(),
            arguments: FieldTable::default(),
        },
    ]);
    commands
        .into_iter()
        .map(|command| Request {
            origin: Some(channel(0)),
            command,
        })
        .collect()
}

/// Points most generated acks at deliveries that exist: a generated tag
/// `t < 4` becomes the `t`-th unacked tag of the channel (when it has that
/// many), using the state before the batch; other tags stay as generated
/// (mostly unknown, exercising the 406 path).
fn aim_acks(broker: &Broker, batch: &Batch) -> Batch {
    let mut batch = batch.clone();
    for request in &mut batch.requests {
        let Some(origin) = request.origin else { continue };
        let Some(channel) = broker.channels.get(&origin) else {
            continue;
        };
        let tags: Vec<DeliveryTag> = channel.unacked.keys().copied().collect();
        let (Command::Ack { delivery_tag, .. }
        | Command::Nack { delivery_tag, .. }
        | Command::Reject { delivery_tag, .. }) = &mut request.command
        else {
            continue;
        };
        if let Some(tag) = usize::try_from(delivery_tag.0)
            .ok()
            .filter(|&t| t < 4)
            .and_then(|t| tags.get(t))
        {
            *delivery_tag = *tag;
        }
    }
    batch
}

fn snapshot(broker: &Broker) -> Vec<u8> {
    bincode::serialize(broker).expect("serialize")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn random_sequences_keep_invariants_and_reply_once_per_request(batches in batches()) {
        let mut broker = Broker::new();
        for batch in &batches {
            let batch = &aim_acks(&broker, batch);
            let mut effects = Vec::new();
            broker.apply(batch, &mut effects);
            if let Err(violation) = broker.check_invariants() {
                return Err(TestCaseError::fail(format!("{violation}\nafter {batch:#?}")));
            }
            let replies: Vec<ChannelId> = effects.iter().filter_map(|e| match e {
                Effect::Reply { channel, .. } => Some(*channel),
                _ => None,
            }).collect();
            let origins: Vec<ChannelId> = batch.requests.iter().filter_map(|r| r.origin).collect();
            prop_assert_eq!(replies, origins);
            let Some(next) = broker.next_expiry_ms() else { continue };
            // A tick at the announced time changes something, so the leader
            // never proposes ticks in a loop.
            let mut ticked = broker.clone();
            ticked.apply(&Batch { now_ms: next.max(batch.now_ms), requests: vec![Request { origin: None, command: Command::Tick }] }, &mut Vec::new());
            prop_assert!(snapshot(&ticked) != snapshot(&broker), "tick at {} changed nothing", next);
        }
    }

    #[test]
    fn apply_is_deterministic_across_replicas_and_snapshots(batches in batches()) {
        let mut first = Broker::new();
        let mut second = Broker::new();
        let mut restored = Broker::new();
        for batch in &batches {
            let batch = &aim_acks(&first, batch);
            let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
            first.apply(batch, &mut a);
            second.apply(batch, &mut b);
            restored.apply(batch, &mut c);
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(&a, &c);
            let bytes = snapshot(&first);
            prop_assert_eq!(&bytes, &snapshot(&second));
            restored = bincode::deserialize(&bytes).expect("deserialize");
            prop_assert_eq!(&bytes, &snapshot(&restored));
        }
    }
}
