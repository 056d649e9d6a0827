//! Ordinary AMQP clients against a three-node cluster, through followers:
//! each step declares through one node, publishes through another and
//! consumes through a third, so every command is forwarded to the leader
//! and every delivery comes from a follower's own replica. lapin covers
//! routing, prefetch, nack/requeue, basic.get, TTL, dead-lettering,
//! exclusive and auto-delete queues and mandatory returns; pika runs the
//! tutorial flows against a follower.

use std::time::Duration;

use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, Consumer, ExchangeKind};
use warren_e2e::amqp::{self, bind, declare_queue, long, longstr, table, text};
use warren_e2e::ops::{cluster_status, start_three_nodes};
use warren_e2e::{
    connect, eventually, expect_no_delivery, expect_reply_code, next_delivery, python, within, WarrenProcess,
};

/// Bound on a TTL expiry or a dead-letter reaching its queue.
const EXPIRY_LIMIT: Duration = Duration::from_secs(15);

/// One connection and channel per node; `confirm` is node 2's channel in
/// confirm mode (the publisher's).
struct Clients {
    _conns: Vec<Connection>,
    /// Node 1 (the leader): declarations.
    declare: Channel,
    /// Node 2 (a follower): publishes, with confirms.
    publish: Channel,
    /// Node 3 (a follower): consumes and gets.
    consume: Channel,
}

async fn clients(nodes: &[WarrenProcess]) -> anyhow::Result<Clients> {
    let mut conns = Vec::new();
    let mut channels = Vec::new();
    for node in nodes {
        let conn = connect(&node.amqp_uri()).await?;
        channels.push(within("channel.open", conn.create_channel()).await?);
        conns.push(conn);
    }
    let consume = channels.pop().ok_or_else(|| anyhow::anyhow!("three channels"))?;
    let publish = channels.pop().ok_or_else(|| anyhow::anyhow!("three channels"))?;
    let declare = channels.pop().ok_or_else(|| anyhow::anyhow!("three channels"))?;
    within(
        "confirm.select",
        publish.confirm_select(ConfirmSelectOptions::default()),
    )
    .await?;
    Ok(Clients {
        _conns: conns,
        declare,
        publish,
        consume,
    })
}

async fn consume(ch: &Channel, queue: &str, tag: &str) -> anyhow::Result<Consumer> {
    within(
        &format!("basic.consume {queue}"),
        ch.basic_consume(
            queue.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
}

/// basic.get on `ch` until a message arrives (TTL and dead-lettering are
/// driven by the leader's ticks, so the message comes a little later).
async fn get_eventually(ch: &Channel, queue: &str) -> anyhow::Result<String> {
    eventually(&format!("a message on {queue}"), EXPIRY_LIMIT, || async {
        Ok(amqp::get(ch, queue).await?.map(|m| text(&m.delivery.data)))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapin_clients_use_a_cluster_through_its_followers() -> anyhow::Result<()> {
    let nodes = start_three_nodes().await?;
    let leader = cluster_status(
        nodes[0]
            .cluster_addr()
            .ok_or_else(|| anyhow::anyhow!("no cluster addr"))?,
    )
    .await?
    .leader;
    assert_eq!(leader, Some(1), "node 1 leads; nodes 2 and 3 are followers");
    let c = clients(&nodes).await?;

    // Routing: direct, topic and fanout exchanges declared through node 1,
    // published to through node 2, read through node 3.
    amqp::exchange(&c.declare, "cx.direct", ExchangeKind::Direct).await?;
    amqp::exchange(&c.declare, "cx.topic", ExchangeKind::Topic).await?;
    amqp::exchange(&c.declare, "cx.fanout", ExchangeKind::Fanout).await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for queue in ["q.errors", "q.eu", "q.all-a", "q.all-b"] {
        declare_queue(&c.declare, queue, durable, FieldTable::default()).await?;
    }
    bind(&c.declare, "q.errors", "cx.direct", "error").await?;
    bind(&c.declare, "q.eu", "cx.topic", "*.eu.#").await?;
    bind(&c.declare, "q.all-a", "cx.fanout", "").await?;
    bind(&c.declare, "q.all-b", "cx.fanout", "").await?;
    for (exchange, key, body) in [
        ("cx.direct", "error", "e1"),
        ("cx.direct", "info", "dropped"),
        ("cx.topic", "orders.eu.paris", "t1"),
        ("cx.topic", "orders.us", "dropped"),
        ("cx.fanout", "whatever", "f1"),
    ] {
        let confirm = amqp::publish(&c.publish, exchange, key, body.as_bytes()).await?;
        assert!(confirm.is_ack(), "{exchange}/{key} confirmed");
    }
    assert_eq!(amqp::drain(&c.consume, "q.errors").await?, ["e1"]);
    assert_eq!(amqp::drain(&c.consume, "q.eu").await?, ["t1"]);
    assert_eq!(amqp::drain(&c.consume, "q.all-a").await?, ["f1"]);
    assert_eq!(amqp::drain(&c.consume, "q.all-b").await?, ["f1"]);

    // Prefetch 2 on node 3: the third message waits for an ack.
    declare_queue(&c.declare, "q.work", durable, FieldTable::default()).await?;
    for i in 0..3 {
        amqp::publish(&c.publish, "", "q.work", format!("w{i}").as_bytes()).await?;
    }
    within("basic.qos", c.consume.basic_qos(2, BasicQosOptions::default())).await?;
    let mut worker = consume(&c.consume, "q.work", "worker").await?;
    let first = next_delivery(&mut worker).await?;
    let second = next_delivery(&mut worker).await?;
    assert_eq!((text(&first.data), text(&second.data)), ("w0".into(), "w1".into()));
    expect_no_delivery(&mut worker, Duration::from_millis(500)).await?;
    within("basic.ack", first.ack(BasicAckOptions::default())).await?;
    let third = next_delivery(&mut worker).await?;
    assert_eq!(text(&third.data), "w2");
    assert!(!third.redelivered);

    // Nack with requeue: the message comes back with redelivered set.
    let requeue = BasicNackOptions {
        requeue: true,
        ..Default::default()
    };
    within("basic.nack", second.nack(requeue)).await?;
    let again = next_delivery(&mut worker).await?;
    assert_eq!(text(&again.data), "w1");
    assert!(again.redelivered, "a requeued message is redelivered");
    within("basic.ack", again.ack(BasicAckOptions::default())).await?;
    within("basic.ack", third.ack(BasicAckOptions::default())).await?;
    within(
        "basic.cancel",
        c.consume.basic_cancel("worker".into(), BasicCancelOptions::default()),
    )
    .await?;

    // basic.get with a manual ack, and get-empty.
    amqp::publish(&c.publish, "", "q.work", b"g1").await?;
    let got = amqp::get_unacked(&c.consume, "q.work")
        .await?
        .ok_or_else(|| anyhow::anyhow!("get-empty"))?;
    assert_eq!(text(&got.delivery.data), "g1");
    within("basic.ack", got.delivery.ack(BasicAckOptions::default())).await?;
    assert!(amqp::get(&c.consume, "q.work").await?.is_none(), "get-empty");

    // Per-queue TTL with dead-lettering to q.dead, and a reject without
    // requeue dead-lettered the same way.
    declare_queue(&c.declare, "q.dead", durable, FieldTable::default()).await?;
    declare_queue(
        &c.declare,
        "q.ttl",
        durable,
        table([
            ("x-message-ttl", long(200)),
            ("x-dead-letter-exchange", longstr("")),
            ("x-dead-letter-routing-key", longstr("q.dead")),
        ]),
    )
    .await?;
    declare_queue(
        &c.declare,
        "q.reject",
        durable,
        table([
            ("x-dead-letter-exchange", longstr("")),
            ("x-dead-letter-routing-key", longstr("q.dead")),
        ]),
    )
    .await?;
    amqp::publish(&c.publish, "", "q.ttl", b"expired").await?;
    assert_eq!(get_eventually(&c.consume, "q.dead").await?, "expired");
    assert!(amqp::get(&c.consume, "q.ttl").await?.is_none(), "expired, not ready");
    amqp::publish(&c.publish, "", "q.reject", b"rejected").await?;
    let got = amqp::get_unacked(&c.consume, "q.reject")
        .await?
        .ok_or_else(|| anyhow::anyhow!("get-empty on q.reject"))?;
    within(
        "basic.reject",
        got.delivery.reject(BasicRejectOptions { requeue: false }),
    )
    .await?;
    assert_eq!(get_eventually(&c.consume, "q.dead").await?, "rejected");

    // An exclusive queue of a connection on node 3: locked for node 2's
    // connections, gone when its owner closes.
    let owner = connect(&nodes[2].amqp_uri()).await?;
    let owner_ch = within("channel.open", owner.create_channel()).await?;
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    declare_queue(&owner_ch, "q.mine", exclusive, FieldTable::default()).await?;
    let other = connect(&nodes[1].amqp_uri()).await?;
    let other_ch = within("channel.open", other.create_channel()).await?;
    let result = other_ch
        .basic_consume(
            "q.mine".into(),
            "thief".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await;
    expect_reply_code(
        result,
        405,
        "consume another connection's exclusive queue through another node",
    )?;
    within("connection.close", owner.close(200, "done".into())).await?;
    eventually(
        "the exclusive queue is deleted with its owner",
        EXPIRY_LIMIT,
        || async { Ok((!amqp::queue_exists(&other, "q.mine").await?).then_some(())) },
    )
    .await?;

    // An auto-delete queue goes when its last consumer (on node 3) cancels.
    let auto = QueueDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    declare_queue(&c.declare, "q.auto", auto, FieldTable::default()).await?;
    let _auto_consumer = consume(&c.consume, "q.auto", "auto").await?;
    within(
        "basic.cancel",
        c.consume.basic_cancel("auto".into(), BasicCancelOptions::default()),
    )
    .await?;
    eventually("the auto-delete queue is deleted", EXPIRY_LIMIT, || async {
        Ok((!amqp::queue_exists(&other, "q.auto").await?).then_some(()))
    })
    .await?;

    // Mandatory and unroutable through a follower: returned before the ack.
    let confirm = amqp::publish_with(
        &c.publish,
        "cx.direct",
        "nobody",
        b"unroutable",
        BasicProperties::default(),
        true,
    )
    .await?;
    assert!(confirm.is_ack());
    let returned = confirm
        .take_message()
        .ok_or_else(|| anyhow::anyhow!("no basic.return before the confirm"))?;
    assert_eq!(returned.reply_code, 312);
    assert_eq!(returned.delivery.data, b"unroutable");
    drop(other);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pika_tutorials_run_against_a_cluster_follower() -> anyhow::Result<()> {
    let nodes = start_three_nodes().await?;
    // Node 3 is a follower: every command it takes goes to the leader.
    for script in ["hello_world.py", "work_queues.py", "routing.py", "topics.py", "rpc.py"] {
        let output = python::run_script(script, nodes[2].amqp_port(), &[]).await?;
        println!("{script} against follower node 3:\n{output}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kombu_declares_publishes_and_consumes_across_three_nodes() -> anyhow::Result<()> {
    let nodes = start_three_nodes().await?;
    // Declare through node 1, publish with confirms through node 2, consume
    // with manual acks through node 3.
    let publish = nodes[1].amqp_port().to_string();
    let consume = nodes[2].amqp_port().to_string();
    let output = python::run_script("kombu_cluster.py", nodes[0].amqp_port(), &[&publish, &consume]).await?;
    println!("kombu across nodes 1, 2, 3:\n{output}");
    assert!(output.contains("OK"), "the script did not finish: {output}");
    Ok(())
}
