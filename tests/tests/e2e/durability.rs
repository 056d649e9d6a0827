//! Crash safety with `kill -9`: every message confirmed to its publisher is
//! still there after a restart on the same data directory; durable topology
//! comes back; what RabbitMQ loses on a restart (non-durable and exclusive
//! queues) is gone.

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use lapin::{
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
        QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable},
    BasicProperties, Connection, ExchangeKind,
};
use warren_e2e::{
    amqp::{self, bind, declare_queue, exchange_exists, queue_exists, table},
    connect, eventually, next_delivery, next_delivery_for, restart_broker, start_broker, within, within_for,
};

/// Confirms to collect before the kill.
const CONFIRMED_BEFORE_KILL: usize = 5_000;

/// Concurrent publisher connections; publisher `k` uses ids `k * ID_STRIDE + n`.
const PUBLISHERS: u64 = 3;

const ID_STRIDE: u64 = 1_000_000_000;

/// Publishes in a window of this many unconfirmed messages.
const WINDOW: usize = 256;

#[derive(Default)]
struct Ledger {
    published: BTreeSet<u64>,
    confirmed: BTreeSet<u64>,
    nacked: BTreeSet<u64>,
    error: Option<String>,
}

/// Publishes persistent messages with ids 0, 1, 2… as fast as confirms allow,
/// recording every id the broker confirmed, until the connection dies.
async fn publish_until_killed(conn: Connection, ledger: Arc<Mutex<Ledger>>, first_id: u64) {
    let mut in_flight = VecDeque::new();
    let result = publish_loop(&conn, &ledger, &mut in_flight, first_id).await;
    // Confirms that arrived before the connection died are still readable.
    for (id, confirm) in in_flight {
        if let Ok(Ok(outcome)) = tokio::time::timeout(Duration::from_secs(1), confirm).await {
            record(&ledger, id, outcome.is_ack());
        }
    }
    if let Err(e) = result {
        if let Ok(mut ledger) = ledger.lock() {
            ledger.error = Some(format!("{e:#}"));
        }
    }
}

fn record(ledger: &Mutex<Ledger>, id: u64, ack: bool) {
    if let Ok(mut ledger) = ledger.lock() {
        if ack {
            ledger.confirmed.insert(id);
        } else {
            ledger.nacked.insert(id);
        }
    }
}

async fn publish_loop(
    conn: &Connection,
    ledger: &Mutex<Ledger>,
    in_flight: &mut VecDeque<(u64, lapin::PublisherConfirm)>,
    first_id: u64,
) -> anyhow::Result<()> {
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    for id in first_id.. {
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(id.to_string().into())
            .with_headers(table([("id", AMQPValue::LongLongInt(id as i64))]));
        let confirm = ch
            .basic_publish(
                "orders".into(),
                "order".into(),
                Default::default(),
                id.to_string().as_bytes(),
                props,
            )
            .await?;
        if let Ok(mut ledger) = ledger.lock() {
            ledger.published.insert(id);
        }
        in_flight.push_back((id, confirm));
        while in_flight.len() >= WINDOW {
            let Some((oldest, confirm)) = in_flight.pop_front() else {
                break;
            };
            let outcome = confirm.await?;
            record(ledger, oldest, outcome.is_ack());
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_persistent_messages_survive_kill_9_and_transient_queues_do_not() -> anyhow::Result<()> {
    let broker = start_broker().await?;

    // Topology. The setup connection stays open until the kill, so its
    // exclusive queue exists at that moment.
    let setup = connect(&broker.amqp_uri()).await?;
    let ch = within("channel.open", setup.create_channel()).await?;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    within(
        "exchange.declare",
        ch.exchange_declare("orders".into(), ExchangeKind::Direct, durable, FieldTable::default()),
    )
    .await?;
    declare_queue(
        &ch,
        "orders-durable",
        QueueDeclareOptions::durable(),
        FieldTable::default(),
    )
    .await?;
    bind(&ch, "orders-durable", "orders", "order").await?;
    declare_queue(&ch, "transient", QueueDeclareOptions::default(), FieldTable::default()).await?;
    bind(&ch, "transient", "orders", "order").await?;
    declare_queue(
        &ch,
        "exclusive",
        QueueDeclareOptions::exclusive(),
        FieldTable::default(),
    )
    .await?;
    // A durable exchange with no queue, and a transient exchange.
    within(
        "exchange.declare",
        ch.exchange_declare("audit".into(), ExchangeKind::Topic, durable, FieldTable::default()),
    )
    .await?;
    amqp::exchange(&ch, "scratch", ExchangeKind::Fanout).await?;

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut publishers = Vec::new();
    for k in 0..PUBLISHERS {
        let publisher_conn = connect(&broker.amqp_uri()).await?;
        publishers.push(tokio::spawn(publish_until_killed(
            publisher_conn,
            Arc::clone(&ledger),
            k * ID_STRIDE,
        )));
    }

    let confirmed_before_kill = eventually("5,000 publisher confirms", Duration::from_secs(180), || {
        let ledger = Arc::clone(&ledger);
        async move {
            let ledger = ledger.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
            if let Some(error) = &ledger.error {
                anyhow::bail!("publisher failed before the kill: {error}");
            }
            Ok((ledger.confirmed.len() >= CONFIRMED_BEFORE_KILL).then_some(ledger.confirmed.len()))
        }
    })
    .await?;

    // Mid-stream: the publisher is still sending when the node dies.
    let mut broker = broker;
    tokio::task::block_in_place(|| broker.kill9());
    // After the kill no confirm can arrive; let the publisher notice and stop.
    for publisher in publishers {
        let _ = tokio::time::timeout(Duration::from_secs(30), publisher).await;
    }
    let (published, confirmed, nacked) = {
        let ledger = ledger.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        (
            ledger.published.clone(),
            ledger.confirmed.clone(),
            ledger.nacked.clone(),
        )
    };
    println!(
        "before kill: {confirmed_before_kill} confirmed; at kill: {} published, {} confirmed, {} nacked",
        published.len(),
        confirmed.len(),
        nacked.len()
    );
    assert!(
        nacked.is_empty(),
        "the broker nacked {} persistent messages to a durable queue",
        nacked.len()
    );
    drop(setup);

    let broker = restart_broker(broker).await?;
    let conn = connect(&broker.amqp_uri()).await?;
    let ch = within("channel.open", conn.create_channel()).await?;

    let in_queue = amqp::message_count(&ch, "orders-durable").await? as usize;
    println!("after restart: {in_queue} messages in orders-durable");
    within("basic.qos", ch.basic_qos(1000, BasicQosOptions::default())).await?;
    let mut consumer = within(
        "basic.consume",
        ch.basic_consume(
            "orders-durable".into(),
            "drain".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for _ in 0..in_queue {
        let d = next_delivery(&mut consumer).await?;
        let id: u64 = amqp::text(&d.data)
            .parse()
            .map_err(|e| anyhow::anyhow!("body {:?}: {e}", amqp::text(&d.data)))?;
        assert_eq!(
            d.properties.delivery_mode(),
            &Some(2),
            "message {id} kept delivery_mode=2"
        );
        assert_eq!(
            d.properties.message_id().as_ref().map(|s| s.as_str().to_string()),
            Some(id.to_string())
        );
        *seen.entry(id).or_default() += 1;
        d.acker.ack(BasicAckOptions::default()).await?;
    }
    // Nothing beyond what the declare counted.
    warren_e2e::expect_no_delivery(&mut consumer, Duration::from_millis(500)).await?;

    let lost: Vec<u64> = confirmed.iter().copied().filter(|id| !seen.contains_key(id)).collect();
    let duplicates = seen.values().filter(|&&n| n > 1).count();
    let unconfirmed_present = seen.keys().filter(|id| !confirmed.contains(id)).count();
    println!(
        "confirmed {}, delivered {} distinct, lost {}, duplicates {duplicates}, unconfirmed-but-present {unconfirmed_present}",
        confirmed.len(),
        seen.len(),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "{} confirmed messages were lost, first few: {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    assert!(
        seen.keys().all(|id| published.contains(id)),
        "only published ids come back"
    );

    // Durable topology is back: the exchange routes through its binding.
    within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await?;
    let confirm = amqp::publish_with(
        &ch,
        "orders",
        "order",
        b"after-restart",
        BasicProperties::default().with_delivery_mode(2),
        true,
    )
    .await?;
    assert!(
        confirm.take_message().is_none(),
        "the durable binding routes after the restart"
    );
    let d = next_delivery(&mut consumer).await?;
    assert_eq!(d.data, b"after-restart");
    d.acker.ack(BasicAckOptions::default()).await?;
    assert!(exchange_exists(&conn, "audit").await?, "a durable exchange survives");

    // What RabbitMQ loses on a restart is gone.
    assert!(
        !queue_exists(&conn, "transient").await?,
        "a non-durable queue is gone after the restart"
    );
    assert!(
        !queue_exists(&conn, "exclusive").await?,
        "an exclusive queue is gone after the restart"
    );
    assert!(
        !exchange_exists(&conn, "scratch").await?,
        "a transient exchange is gone after the restart"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_messages_do_not_come_back_after_kill_9() -> anyhow::Result<()> {
    let mut broker = start_broker().await?;
    let conn = connect(&broker.amqp_uri()).await?;
    let ch = within("channel.open", conn.create_channel()).await?;
    within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await?;
    declare_queue(&ch, "jobs", QueueDeclareOptions::durable(), FieldTable::default()).await?;
    for i in 0..10 {
        let props = BasicProperties::default().with_delivery_mode(2);
        assert!(
            amqp::publish_with(&ch, "", "jobs", format!("j{i}").as_bytes(), props, false)
                .await?
                .is_ack()
        );
    }
    let worker = within("channel.open", conn.create_channel()).await?;
    let mut consumer = within(
        "basic.consume",
        worker.basic_consume(
            "jobs".into(),
            "w".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    for _ in 0..4 {
        let d = next_delivery(&mut consumer).await?;
        within("ack", d.acker.ack(BasicAckOptions::default())).await?;
    }
    // A 5th delivery left unacked must come back, redelivered.
    let unacked = next_delivery(&mut consumer).await?;
    assert_eq!(amqp::text(&unacked.data), "j4");
    // channel.close-ok comes after the acks before it were processed.
    within("channel.close", worker.close(200, "OK".into())).await?;
    tokio::task::block_in_place(|| broker.kill9());

    let broker = restart_broker(broker).await?;
    let conn = connect(&broker.amqp_uri()).await?;
    let ch = within("channel.open", conn.create_channel()).await?;
    let mut consumer = within(
        "basic.consume",
        ch.basic_consume(
            "jobs".into(),
            "after".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await?;
    let mut bodies = Vec::new();
    for _ in 0..6 {
        let d = next_delivery_for(&mut consumer, Duration::from_secs(30)).await?;
        bodies.push((amqp::text(&d.data), d.redelivered));
    }
    warren_e2e::expect_no_delivery(&mut consumer, Duration::from_millis(700)).await?;
    let names: Vec<&str> = bodies.iter().map(|(b, _)| b.as_str()).collect();
    assert_eq!(
        names,
        ["j4", "j5", "j6", "j7", "j8", "j9"],
        "acked j0..j3 stay gone, the rest in order"
    );
    assert!(bodies[0].1, "j4 was delivered before the crash: redelivered=true");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_unacked_at_kill_9_comes_back_redelivered_and_undelivered_ones_do_not() -> anyhow::Result<()> {
    let mut broker = start_broker().await?;
    let conn = connect(&broker.amqp_uri()).await?;
    let ch = within("channel.open", conn.create_channel()).await?;
    within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await?;
    declare_queue(&ch, "jobs", QueueDeclareOptions::durable(), FieldTable::default()).await?;
    declare_queue(&ch, "markers", QueueDeclareOptions::durable(), FieldTable::default()).await?;
    for i in 0..10 {
        let props = BasicProperties::default().with_delivery_mode(2);
        assert!(
            amqp::publish_with(&ch, "", "jobs", format!("j{i}").as_bytes(), props, false)
                .await?
                .is_ack()
        );
    }
    let worker = within("channel.open", conn.create_channel()).await?;
    within("basic.qos", worker.basic_qos(1, BasicQosOptions::default())).await?;
    within("confirm.select", worker.confirm_select(ConfirmSelectOptions::default())).await?;
    let mut consumer = within(
        "basic.consume",
        worker.basic_consume(
            "jobs".into(),
            "w".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    for i in 0..4 {
        let d = next_delivery(&mut consumer).await?;
        assert_eq!(amqp::text(&d.data), format!("j{i}"));
        within("ack", d.acker.ack(BasicAckOptions::default())).await?;
    }
    let held = next_delivery(&mut consumer).await?;
    assert_eq!(amqp::text(&held.data), "j4");
    // A confirmed publish on the worker's channel comes after its acks, so
    // once it is confirmed the acks are committed too.
    let props = BasicProperties::default().with_delivery_mode(2);
    assert!(amqp::publish_with(&worker, "", "markers", b"after-acks", props, false)
        .await?
        .is_ack());
    tokio::task::block_in_place(|| broker.kill9());

    let broker = restart_broker(broker).await?;
    let conn = connect(&broker.amqp_uri()).await?;
    let ch = within("channel.open", conn.create_channel()).await?;
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut consumer = within(
        "basic.consume",
        ch.basic_consume("jobs".into(), "after".into(), no_ack, FieldTable::default()),
    )
    .await?;
    let mut got = Vec::new();
    for _ in 0..6 {
        let d = next_delivery_for(&mut consumer, Duration::from_secs(30)).await?;
        got.push((amqp::text(&d.data), d.redelivered));
    }
    warren_e2e::expect_no_delivery(&mut consumer, Duration::from_millis(700)).await?;
    let expected: Vec<(String, bool)> = (4..10).map(|i| (format!("j{i}"), i == 4)).collect();
    assert_eq!(
        got, expected,
        "j0..j3 acked and gone; j4 unacked at the crash → redelivered; j5..j9 never delivered"
    );
    assert_eq!(amqp::drain(&ch, "markers").await?, ["after-acks"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarts_twice_on_its_data_dir_and_keeps_durable_state() -> anyhow::Result<()> {
    let broker = start_broker().await?;
    let conn = connect(&broker.amqp_uri()).await?;
    let ch = within("channel.open", conn.create_channel()).await?;
    within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await?;
    let args = table([("x-max-length", amqp::long(100))]);
    declare_queue(&ch, "kept", QueueDeclareOptions::durable(), args.clone()).await?;
    amqp::publish_with(
        &ch,
        "",
        "kept",
        b"first",
        BasicProperties::default().with_delivery_mode(2),
        false,
    )
    .await?;
    drop(conn);

    let broker = restart_broker(broker).await?;
    let conn = connect(&broker.amqp_uri()).await?;
    let ch = within("channel.open", conn.create_channel()).await?;
    within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await?;
    // Same arguments: the redeclare is accepted, so the arguments survived.
    declare_queue(&ch, "kept", QueueDeclareOptions::durable(), args.clone()).await?;
    amqp::publish_with(
        &ch,
        "",
        "kept",
        b"second",
        BasicProperties::default().with_delivery_mode(2),
        false,
    )
    .await?;
    drop(conn);

    let broker = restart_broker(broker).await?;
    let conn = connect(&broker.amqp_uri()).await?;
    let ch = within("channel.open", conn.create_channel()).await?;
    let bodies = within_for(Duration::from_secs(60), "drain", amqp::drain(&ch, "kept")).await?;
    assert_eq!(bodies, ["first", "second"]);
    Ok(())
}

/// Messages of the size-triggered snapshot test (1 KiB each).
const SIZED_MESSAGES: usize = 2_000;

// The Raft log is bounded by bytes (ADR 0010): with `snapshot_log_bytes` at
// 256 KiB, a node that carried 2 MiB of messages in far fewer than
// `snapshot_every` (10,000) entries has written its snapshot file; after a
// kill -9 it starts from that snapshot with every confirmed message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_snapshots_by_log_size_and_restarts_from_the_snapshot_after_kill_9() -> anyhow::Result<()> {
    let broker = warren_e2e::start_broker_with_config("snapshot_log_bytes = 262144\n").await?;
    let conn = connect(&broker.amqp_uri()).await?;
    let ch = within("channel.open", conn.create_channel()).await?;
    declare_queue(&ch, "sized", QueueDeclareOptions::durable(), FieldTable::default()).await?;
    within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await?;
    let body = vec![b's'; 1024];
    let mut confirms = VecDeque::new();
    let mut confirmed = 0;
    for _ in 0..SIZED_MESSAGES {
        let confirm = within(
            "basic.publish",
            ch.basic_publish(
                "".into(),
                "sized".into(),
                Default::default(),
                &body,
                BasicProperties::default().with_delivery_mode(2),
            ),
        )
        .await?;
        confirms.push_back(confirm);
        if confirms.len() >= WINDOW {
            if let Some(confirm) = confirms.pop_front() {
                confirmed += usize::from(within("publisher confirm", confirm).await?.is_ack());
            }
        }
    }
    for confirm in confirms {
        confirmed += usize::from(within("publisher confirm", confirm).await?.is_ack());
    }
    assert_eq!(confirmed, SIZED_MESSAGES);
    let snapshot = broker.data_dir().join("snapshot");
    eventually("a snapshot file written by size", Duration::from_secs(30), || {
        let exists = snapshot.exists();
        async move { Ok(exists.then_some(())) }
    })
    .await?;

    let broker = restart_broker(broker).await?;
    let conn = connect(&broker.amqp_uri()).await?;
    let ch = within("channel.open", conn.create_channel()).await?;
    let ready = amqp::message_count(&ch, "sized").await? as usize;
    assert_eq!(ready, SIZED_MESSAGES, "every confirmed message is back");
    within("connection.close", conn.close(200, "bye".into())).await?;
    Ok(())
}
