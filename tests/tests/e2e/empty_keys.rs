//! Issue 15 against the real binary: an empty binding key is an ordinary
//! key (lapin, and kombu's default `Queue(name, exchange=ex)`), the
//! last-declared-queue shortcuts apply only where RabbitMQ applies them,
//! and `queue.unbind` is idempotent (aio-pika's RPC `close()`).

use lapin::options::{ConfirmSelectOptions, QueueBindOptions};
use lapin::types::FieldTable;
use lapin::{Channel, ExchangeKind};
use warren_e2e::amqp::{self, bind, exchange, message_count, plain_queue};
use warren_e2e::ops::start_three_nodes;
use warren_e2e::{broker_with_channel, expect_reply_code, python, start_broker, within};

async fn confirm_select(ch: &Channel) -> anyhow::Result<()> {
    within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await
}

/// Publishes one confirmed message per key.
async fn publish_confirmed(ch: &Channel, exchange: &str, keys: &[&str]) -> anyhow::Result<()> {
    for key in keys {
        let confirm = amqp::publish(ch, exchange, key, format!("{exchange}/{key}").as_bytes()).await?;
        assert!(confirm.is_ack(), "publish to {exchange} with key {key:?} confirmed");
    }
    Ok(())
}

async fn counts(ch: &Channel, queues: &[&str]) -> anyhow::Result<Vec<u32>> {
    let mut out = Vec::new();
    for queue in queues {
        out.push(message_count(ch, queue).await?);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_binding_key_matches_the_empty_routing_key_on_every_exchange_type() -> anyhow::Result<()> {
    let (_broker, _conn, ch) = broker_with_channel().await?;
    confirm_select(&ch).await?;
    // The reproduction: pq bound with "", pq2 with "k".
    exchange(&ch, "px", ExchangeKind::Direct).await?;
    for (queue, key) in [("pq", ""), ("pq2", "k")] {
        plain_queue(&ch, queue).await?;
        bind(&ch, queue, "px", key).await?;
    }
    publish_confirmed(&ch, "px", &["", "k"]).await?;
    assert_eq!(
        counts(&ch, &["pq", "pq2"]).await?,
        [1, 1],
        "direct: one each (RabbitMQ: 1, 1)"
    );

    exchange(&ch, "tx", ExchangeKind::Topic).await?;
    for (queue, key) in [("t-empty", ""), ("t-hash", "#"), ("t-star", "*")] {
        plain_queue(&ch, queue).await?;
        bind(&ch, queue, "tx", key).await?;
    }
    publish_confirmed(&ch, "tx", &["", "a"]).await?;
    assert_eq!(
        counts(&ch, &["t-empty", "t-hash", "t-star"]).await?,
        [1, 2, 1],
        "topic: '' matches '' and '#'; 'a' matches '#' and '*'"
    );

    exchange(&ch, "fx", ExchangeKind::Fanout).await?;
    plain_queue(&ch, "f").await?;
    bind(&ch, "f", "fx", "").await?;
    publish_confirmed(&ch, "fx", &["", "k"]).await?;
    assert_eq!(counts(&ch, &["f"]).await?, [2], "fanout ignores keys");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_declared_queue_shortcut_applies_only_to_an_empty_queue_name() -> anyhow::Result<()> {
    let (_broker, conn, ch) = broker_with_channel().await?;
    confirm_select(&ch).await?;
    exchange(&ch, "x", ExchangeKind::Direct).await?;
    plain_queue(&ch, "named").await?;
    plain_queue(&ch, "last").await?;
    // Queue named, key "": the key stays "" although "last" was declared last.
    bind(&ch, "named", "x", "").await?;
    // Queue "" and key "": both mean the last declared queue.
    bind(&ch, "", "x", "").await?;
    // Queue "", key "k": the queue is "last", the key stays "k".
    bind(&ch, "", "x", "k").await?;
    publish_confirmed(&ch, "x", &["", "last", "k", "named"]).await?;
    assert_eq!(amqp::drain(&ch, "named").await?, ["x/"]);
    assert_eq!(amqp::drain(&ch, "last").await?, ["x/last", "x/k"]);

    let fresh = within("channel.open", conn.create_channel()).await?;
    let result = fresh
        .queue_bind(
            "".into(),
            "x".into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await;
    expect_reply_code(result, 404, "queue.bind '' on a channel that declared no queue")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_to_or_unbinding_from_the_default_exchange_is_403() -> anyhow::Result<()> {
    let (_broker, conn, ch) = broker_with_channel().await?;
    plain_queue(&ch, "q").await?;
    let result = ch
        .queue_bind(
            "q".into(),
            "".into(),
            "q".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await;
    expect_reply_code(result, 403, "queue.bind to the default exchange")?;
    let ch = within("channel.open", conn.create_channel()).await?;
    let result = ch
        .queue_unbind("q".into(), "".into(), "q".into(), FieldTable::default())
        .await;
    expect_reply_code(result, 403, "queue.unbind from the default exchange")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbind_of_a_missing_queue_exchange_or_binding_is_unbind_ok() -> anyhow::Result<()> {
    let (_broker, _conn, ch) = broker_with_channel().await?;
    exchange(&ch, "x", ExchangeKind::Direct).await?;
    plain_queue(&ch, "q").await?;
    bind(&ch, "q", "x", "k").await?;
    for (queue, exchange, key, what) in [
        ("missing", "x", "k", "a missing queue"),
        ("q", "missing", "k", "a missing exchange"),
        ("missing", "missing", "", "both missing"),
        ("q", "x", "other", "a missing binding"),
        ("q", "x", "k", "the binding"),
        ("q", "x", "k", "the binding again"),
    ] {
        within(
            &format!("queue.unbind of {what}"),
            ch.queue_unbind(queue.into(), exchange.into(), key.into(), FieldTable::default()),
        )
        .await?;
    }
    confirm_select(&ch).await?;
    publish_confirmed(&ch, "x", &["k"]).await?;
    assert_eq!(
        counts(&ch, &["q"]).await?,
        [0],
        "the channel is open and the binding gone"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aio_pika_rpc_creates_calls_and_closes() -> anyhow::Result<()> {
    let broker = start_broker().await?;
    let output = python::run_script("aio_pika_rpc.py", broker.amqp_port(), &[]).await?;
    println!("{output}");
    assert!(output.contains("OK"), "the script did not finish: {output}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kombu_default_queue_and_aio_pika_rpc_work_through_followers() -> anyhow::Result<()> {
    let nodes = start_three_nodes().await?;
    // kombu: declare through node 1, publish through node 2, consume
    // through node 3.
    let publish = nodes[1].amqp_port().to_string();
    let consume = nodes[2].amqp_port().to_string();
    let output = python::run_script("kombu_default_queue.py", nodes[0].amqp_port(), &[&publish, &consume]).await?;
    println!("kombu's default queue binding across nodes 1, 2, 3:\n{output}");
    assert!(output.contains("OK"), "the kombu script did not finish: {output}");
    // aio-pika: the RPC server on follower 2, its clients on follower 3.
    let output = python::run_script("aio_pika_rpc.py", nodes[1].amqp_port(), &[&consume]).await?;
    println!("aio-pika RPC, server on node 2, clients on node 3:\n{output}");
    assert!(output.contains("OK"), "the aio-pika script did not finish: {output}");
    Ok(())
}
