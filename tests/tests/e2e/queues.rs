//! Queues: declare flags and what RabbitMQ does with them, server-named
//! queues, passive declare, counts, purge, delete conditions, redeclare rules.

use lapin::{
    options::{BasicConsumeOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions},
    types::FieldTable,
    ExchangeKind,
};
use warren_e2e::{
    amqp::{self, bind, declare_queue, long, plain_queue, queue_exists, table},
    broker_with_channel, connect, eventually, expect_reply_code, within, STEP_TIMEOUT,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_ok_reports_the_name_and_message_and_consumer_counts() -> anyhow::Result<()> {
    let (_broker, conn, ch) = broker_with_channel().await?;
    let q = declare_queue(&ch, "tasks", QueueDeclareOptions::durable(), FieldTable::default()).await?;
    assert_eq!(q.name().as_str(), "tasks");
    assert_eq!((q.message_count(), q.consumer_count()), (0, 0));

    within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await?;
    for i in 0..3 {
        amqp::publish(&ch, "", "tasks", format!("{i}").as_bytes()).await?;
    }
    let consumer_ch = within("channel.open", conn.create_channel()).await?;
    within("basic.qos", consumer_ch.basic_qos(1, Default::default())).await?;
    let mut consumer = within(
        "basic.consume",
        consumer_ch.basic_consume(
            "tasks".into(),
            "c1".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    // One message is now unacked at the consumer; RabbitMQ counts only ready ones.
    let first = warren_e2e::next_delivery(&mut consumer).await?;
    let q = declare_queue(&ch, "tasks", QueueDeclareOptions::durable(), FieldTable::default()).await?;
    assert_eq!(q.consumer_count(), 1);
    assert_eq!(
        q.message_count(),
        2,
        "declare-ok counts ready messages, not the unacked one"
    );
    let passive = declare_queue(
        &ch,
        "tasks",
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    assert_eq!((passive.message_count(), passive.consumer_count()), (2, 1));
    drop(first);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_declare_of_a_missing_queue_fails_with_404() -> anyhow::Result<()> {
    let (_broker, _conn, ch) = broker_with_channel().await?;
    let result = ch
        .queue_declare(
            "nope".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    expect_reply_code(result, 404, "passive declare of a missing queue")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_name_gets_a_server_generated_amq_gen_name() -> anyhow::Result<()> {
    let (_broker, conn, ch) = broker_with_channel().await?;
    let a = declare_queue(&ch, "", QueueDeclareOptions::exclusive(), FieldTable::default()).await?;
    let b = declare_queue(&ch, "", QueueDeclareOptions::exclusive(), FieldTable::default()).await?;
    assert!(a.name().as_str().starts_with("amq.gen-"), "got {}", a.name());
    assert!(b.name().as_str().starts_with("amq.gen-"), "got {}", b.name());
    assert_ne!(a.name(), b.name());
    assert!(queue_exists(&conn, a.name().as_str()).await?);
    amqp::publish(&ch, "", a.name().as_str(), b"to a generated name").await?;
    let got = amqp::get(&ch, a.name().as_str()).await?.expect("message");
    assert_eq!(got.delivery.data, b"to a generated name");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declaring_a_queue_with_the_reserved_amq_prefix_is_refused_with_403() -> anyhow::Result<()> {
    let (_broker, _conn, ch) = broker_with_channel().await?;
    let result = ch
        .queue_declare("amq.mine".into(), QueueDeclareOptions::default(), FieldTable::default())
        .await;
    expect_reply_code(result, 403, "declare amq.mine")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_queue_is_locked_to_its_connection_with_405_and_deleted_with_it() -> anyhow::Result<()> {
    let (broker, owner, ch) = broker_with_channel().await?;
    declare_queue(&ch, "mine", QueueDeclareOptions::exclusive(), FieldTable::default()).await?;
    amqp::publish(&ch, "", "mine", b"private").await?;

    let other = connect(&broker.amqp_uri()).await?;
    let och = within("channel.open", other.create_channel()).await?;
    let result = och
        .queue_declare("mine".into(), QueueDeclareOptions::exclusive(), FieldTable::default())
        .await;
    expect_reply_code(result, 405, "declare another connection's exclusive queue")?;
    let och = within("channel.open", other.create_channel()).await?;
    let result = och
        .queue_declare(
            "mine".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    expect_reply_code(result, 405, "passive declare of another connection's exclusive queue")?;
    let och = within("channel.open", other.create_channel()).await?;
    let result = och
        .basic_consume(
            "mine".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map(|_| ());
    expect_reply_code(result, 405, "consume from another connection's exclusive queue")?;
    let och = within("channel.open", other.create_channel()).await?;
    let result = och.queue_delete("mine".into(), QueueDeleteOptions::default()).await;
    expect_reply_code(result, 405, "delete another connection's exclusive queue")?;

    // The owner still uses it from another channel.
    let ch2 = within("channel.open", owner.create_channel()).await?;
    assert_eq!(amqp::message_count(&ch2, "mine").await?, 1);

    within("connection.close", owner.close(200, "bye".into())).await?;
    eventually("exclusive queue deleted with its connection", STEP_TIMEOUT, || async {
        Ok((!queue_exists(&other, "mine").await?).then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_delete_queue_is_deleted_when_its_last_consumer_cancels() -> anyhow::Result<()> {
    let (_broker, conn, ch) = broker_with_channel().await?;
    let opts = QueueDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    declare_queue(&ch, "auto", opts, FieldTable::default()).await?;
    // Never consumed: it stays.
    assert!(queue_exists(&conn, "auto").await?);
    let c1 = within(
        "consume",
        ch.basic_consume(
            "auto".into(),
            "c1".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    let c2 = within(
        "consume",
        ch.basic_consume(
            "auto".into(),
            "c2".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    within("cancel c1", ch.basic_cancel(c1.tag(), Default::default())).await?;
    assert!(queue_exists(&conn, "auto").await?, "one consumer left");
    within("cancel c2", ch.basic_cancel(c2.tag(), Default::default())).await?;
    eventually(
        "auto-delete queue removed after its last consumer",
        STEP_TIMEOUT,
        || async { Ok((!queue_exists(&conn, "auto").await?).then_some(())) },
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_removes_ready_messages_and_returns_their_count() -> anyhow::Result<()> {
    let (_broker, _conn, ch) = broker_with_channel().await?;
    within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await?;
    plain_queue(&ch, "q").await?;
    for i in 0..5 {
        amqp::publish(&ch, "", "q", format!("{i}").as_bytes()).await?;
    }
    let purged = within("queue.purge", ch.queue_purge("q".into(), QueuePurgeOptions::default())).await?;
    assert_eq!(purged, 5);
    assert!(amqp::get(&ch, "q").await?.is_none());
    let purged = within(
        "queue.purge of an empty queue",
        ch.queue_purge("q".into(), QueuePurgeOptions::default()),
    )
    .await?;
    assert_eq!(purged, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_if_unused_and_if_empty_refuse_with_406_and_delete_returns_the_message_count() -> anyhow::Result<()> {
    let (_broker, conn, ch) = broker_with_channel().await?;
    within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await?;
    plain_queue(&ch, "full").await?;
    amqp::publish(&ch, "", "full", b"1").await?;
    amqp::publish(&ch, "", "full", b"2").await?;
    let result = ch
        .queue_delete(
            "full".into(),
            QueueDeleteOptions {
                if_empty: true,
                ..Default::default()
            },
        )
        .await;
    expect_reply_code(result, 406, "queue.delete if-empty on a non-empty queue")?;

    let ch = within("channel.open", conn.create_channel()).await?;
    plain_queue(&ch, "used").await?;
    let consumer_ch = within("channel.open", conn.create_channel()).await?;
    let _consumer = within(
        "consume",
        consumer_ch.basic_consume(
            "used".into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    let result = ch
        .queue_delete(
            "used".into(),
            QueueDeleteOptions {
                if_unused: true,
                ..Default::default()
            },
        )
        .await;
    expect_reply_code(result, 406, "queue.delete if-unused on a consumed queue")?;

    let ch = within("channel.open", conn.create_channel()).await?;
    let deleted = within(
        "queue.delete",
        ch.queue_delete("full".into(), QueueDeleteOptions::default()),
    )
    .await?;
    assert_eq!(deleted, 2, "delete-ok carries the number of messages deleted");
    assert!(!queue_exists(&conn, "full").await?);

    plain_queue(&ch, "empty-unused").await?;
    let opts = QueueDeleteOptions {
        if_unused: true,
        if_empty: true,
        ..Default::default()
    };
    assert_eq!(
        within(
            "queue.delete if-unused if-empty",
            ch.queue_delete("empty-unused".into(), opts)
        )
        .await?,
        0
    );
    assert!(!queue_exists(&conn, "empty-unused").await?);

    // RabbitMQ: deleting a queue that does not exist is not an error.
    assert_eq!(
        within(
            "queue.delete of a missing queue",
            ch.queue_delete("never".into(), QueueDeleteOptions::default())
        )
        .await?,
        0
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeclaring_a_queue_with_different_attributes_fails_with_406() -> anyhow::Result<()> {
    let (_broker, conn, ch) = broker_with_channel().await?;
    declare_queue(&ch, "q", QueueDeclareOptions::durable(), FieldTable::default()).await?;
    // Same attributes: fine.
    declare_queue(&ch, "q", QueueDeclareOptions::durable(), FieldTable::default()).await?;

    let result = ch
        .queue_declare("q".into(), QueueDeclareOptions::default(), FieldTable::default())
        .await;
    expect_reply_code(result, 406, "redeclare durable queue as transient")?;

    let ch = within("channel.open", conn.create_channel()).await?;
    let auto = QueueDeclareOptions {
        durable: true,
        auto_delete: true,
        ..Default::default()
    };
    let result = ch.queue_declare("q".into(), auto, FieldTable::default()).await;
    expect_reply_code(result, 406, "redeclare with auto-delete")?;

    let ch = within("channel.open", conn.create_channel()).await?;
    let result = ch
        .queue_declare(
            "q".into(),
            QueueDeclareOptions::durable(),
            table([("x-message-ttl", long(1000))]),
        )
        .await;
    expect_reply_code(result, 406, "redeclare with a different x-message-ttl")?;

    let ch = within("channel.open", conn.create_channel()).await?;
    declare_queue(
        &ch,
        "ttl",
        QueueDeclareOptions::default(),
        table([("x-message-ttl", long(1000))]),
    )
    .await?;
    let result = ch
        .queue_declare(
            "ttl".into(),
            QueueDeclareOptions::default(),
            table([("x-message-ttl", long(2000))]),
        )
        .await;
    expect_reply_code(result, 406, "redeclare with another x-message-ttl value")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_to_a_missing_exchange_or_queue_fails_with_404() -> anyhow::Result<()> {
    let (_broker, conn, ch) = broker_with_channel().await?;
    plain_queue(&ch, "q").await?;
    let result = ch
        .queue_bind(
            "q".into(),
            "no-exchange".into(),
            "k".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await;
    expect_reply_code(result, 404, "bind to a missing exchange")?;
    let ch = within("channel.open", conn.create_channel()).await?;
    amqp::exchange(&ch, "x", ExchangeKind::Direct).await?;
    let result = ch
        .queue_bind(
            "no-queue".into(),
            "x".into(),
            "k".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await;
    expect_reply_code(result, 404, "bind a missing queue")?;
    let ch = within("channel.open", conn.create_channel()).await?;
    bind(&ch, "q", "x", "k").await?;
    // Binding twice is idempotent.
    bind(&ch, "q", "x", "k").await?;
    within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await?;
    amqp::publish(&ch, "x", "k", b"once").await?;
    assert_eq!(
        amqp::drain(&ch, "q").await?,
        ["once"],
        "a duplicate binding does not duplicate messages"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_queue_removes_its_bindings() -> anyhow::Result<()> {
    let (_broker, _conn, ch) = broker_with_channel().await?;
    within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await?;
    amqp::exchange(&ch, "x", ExchangeKind::Fanout).await?;
    plain_queue(&ch, "q").await?;
    bind(&ch, "q", "x", "").await?;
    amqp::publish(&ch, "x", "", b"before").await?;
    within(
        "queue.delete",
        ch.queue_delete("q".into(), QueueDeleteOptions::default()),
    )
    .await?;
    plain_queue(&ch, "q").await?;
    amqp::publish(&ch, "x", "", b"after").await?;
    assert!(
        amqp::drain(&ch, "q").await?.is_empty(),
        "the recreated queue has neither old messages nor old bindings"
    );
    Ok(())
}
