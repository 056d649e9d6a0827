//! basic.*: qos, consume (exclusive, no-ack, generated tags), cancel (both
//! directions), mandatory returns, redelivery, get, ack/nack/reject with
//! multiple and requeue, recover, and exact content-property round trips.

use std::time::Duration;

use lapin::{
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
        BasicRecoverOptions, BasicRejectOptions, ConfirmSelectOptions, QueueDeleteOptions,
    },
    types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString},
    BasicProperties, Channel, Connection, Consumer,
};
use warren_e2e::{
    amqp::{self, longstr, plain_queue, table},
    broker_with_channel, connect, expect_no_delivery, expect_reply_code, next_delivery, start_broker, within,
};

/// The quiet window used to observe that nothing more is delivered.
const QUIET: Duration = Duration::from_millis(700);

async fn confirm_channel(conn: &Connection) -> anyhow::Result<Channel> {
    let ch = within("channel.open", conn.create_channel()).await?;
    within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await?;
    Ok(ch)
}

async fn consume(ch: &Channel, queue: &str, tag: &str, options: BasicConsumeOptions) -> anyhow::Result<Consumer> {
    within(
        &format!("basic.consume {queue}"),
        ch.basic_consume(queue.into(), tag.into(), options, FieldTable::default()),
    )
    .await
}

async fn fill(ch: &Channel, queue: &str, n: usize) -> anyhow::Result<()> {
    for i in 0..n {
        amqp::publish(ch, "", queue, format!("m{i}").as_bytes()).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_count_limits_unacked_deliveries_per_consumer() -> anyhow::Result<()> {
    let (_broker, conn, _ch) = broker_with_channel().await?;
    let publisher = confirm_channel(&conn).await?;
    plain_queue(&publisher, "q").await?;
    fill(&publisher, "q", 6).await?;

    let ch = within("channel.open", conn.create_channel()).await?;
    within("basic.qos", ch.basic_qos(2, BasicQosOptions { global: false })).await?;
    let mut consumer = consume(&ch, "q", "c", BasicConsumeOptions::default()).await?;
    let first = next_delivery(&mut consumer).await?;
    let second = next_delivery(&mut consumer).await?;
    assert_eq!(
        (amqp::text(&first.data), amqp::text(&second.data)),
        ("m0".into(), "m1".into())
    );
    expect_no_delivery(&mut consumer, QUIET)
        .await
        .map_err(|e| e.context("prefetch 2 must hold the 3rd message"))?;

    within("ack", first.acker.ack(BasicAckOptions::default())).await?;
    let third = next_delivery(&mut consumer).await?;
    assert_eq!(amqp::text(&third.data), "m2");
    expect_no_delivery(&mut consumer, QUIET).await?;
    // Ack both outstanding with multiple=true: two more may come.
    within("ack multiple", third.acker.ack(BasicAckOptions { multiple: true })).await?;
    let a = next_delivery(&mut consumer).await?;
    let b = next_delivery(&mut consumer).await?;
    assert_eq!((amqp::text(&a.data), amqp::text(&b.data)), ("m3".into(), "m4".into()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_consumer_prefetch_applies_to_each_consumer_separately() -> anyhow::Result<()> {
    let (_broker, conn, _ch) = broker_with_channel().await?;
    let publisher = confirm_channel(&conn).await?;
    plain_queue(&publisher, "qa").await?;
    plain_queue(&publisher, "qb").await?;
    fill(&publisher, "qa", 5).await?;
    fill(&publisher, "qb", 5).await?;

    let ch = within("channel.open", conn.create_channel()).await?;
    within("basic.qos", ch.basic_qos(2, BasicQosOptions { global: false })).await?;
    let mut ca = consume(&ch, "qa", "ca", BasicConsumeOptions::default()).await?;
    let mut cb = consume(&ch, "qb", "cb", BasicConsumeOptions::default()).await?;
    for consumer in [&mut ca, &mut cb] {
        next_delivery(consumer).await?;
        next_delivery(consumer).await?;
        expect_no_delivery(consumer, QUIET).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_prefetch_is_shared_by_all_consumers_of_the_channel() -> anyhow::Result<()> {
    let (_broker, conn, _ch) = broker_with_channel().await?;
    let publisher = confirm_channel(&conn).await?;
    plain_queue(&publisher, "qa").await?;
    plain_queue(&publisher, "qb").await?;
    fill(&publisher, "qa", 5).await?;
    fill(&publisher, "qb", 5).await?;

    let ch = within("channel.open", conn.create_channel()).await?;
    within("basic.qos global", ch.basic_qos(3, BasicQosOptions { global: true })).await?;
    let mut ca = consume(&ch, "qa", "ca", BasicConsumeOptions::default()).await?;
    let mut cb = consume(&ch, "qb", "cb", BasicConsumeOptions::default()).await?;
    // Collect whatever arrives on both consumers until nothing more comes.
    let mut unacked = Vec::new();
    loop {
        tokio::select! {
            d = next_delivery(&mut ca) => unacked.push(d?),
            d = next_delivery(&mut cb) => unacked.push(d?),
            () = tokio::time::sleep(QUIET) => break,
        }
    }
    assert_eq!(
        unacked.len(),
        3,
        "global prefetch 3 caps the channel's unacked deliveries across consumers"
    );
    within("ack", unacked[0].acker.ack(BasicAckOptions::default())).await?;
    let more = tokio::select! {
        d = next_delivery(&mut ca) => d?,
        d = next_delivery(&mut cb) => d?,
    };
    assert!(!more.redelivered);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclusive_consumer_locks_out_other_consumers_with_403() -> anyhow::Result<()> {
    let (broker, conn, ch) = broker_with_channel().await?;
    plain_queue(&ch, "q").await?;
    plain_queue(&ch, "shared").await?;
    let _exclusive = consume(
        &ch,
        "q",
        "owner",
        BasicConsumeOptions {
            exclusive: true,
            ..Default::default()
        },
    )
    .await?;

    let other = connect(&broker.amqp_uri()).await?;
    let och = within("channel.open", other.create_channel()).await?;
    let result = och
        .basic_consume(
            "q".into(),
            "intruder".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map(|_| ());
    expect_reply_code(result, 403, "consume from a queue with an exclusive consumer")?;

    let _plain = consume(&ch, "shared", "first", BasicConsumeOptions::default()).await?;
    let ch2 = within("channel.open", conn.create_channel()).await?;
    let result = ch2
        .basic_consume(
            "shared".into(),
            "exclusive-late".into(),
            BasicConsumeOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map(|_| ());
    expect_reply_code(result, 403, "exclusive consume on a queue that has consumers")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ack_consumers_receive_messages_that_are_gone_at_once() -> anyhow::Result<()> {
    let (_broker, conn, ch) = broker_with_channel().await?;
    let publisher = confirm_channel(&conn).await?;
    plain_queue(&ch, "q").await?;
    let mut consumer = consume(
        &ch,
        "q",
        "c",
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
    )
    .await?;
    fill(&publisher, "q", 20).await?;
    for i in 0..20 {
        let d = next_delivery(&mut consumer).await?;
        assert_eq!(amqp::text(&d.data), format!("m{i}"), "FIFO order");
    }
    within("cancel", ch.basic_cancel(consumer.tag(), BasicCancelOptions::default())).await?;
    within("channel.close", ch.close(200, "OK".into())).await?;
    assert_eq!(
        amqp::message_count(&publisher, "q").await?,
        0,
        "no-ack deliveries are not requeued on close"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_consumer_tag_gets_a_generated_amq_ctag() -> anyhow::Result<()> {
    let (_broker, _conn, ch) = broker_with_channel().await?;
    plain_queue(&ch, "q").await?;
    let a = consume(&ch, "q", "", BasicConsumeOptions::default()).await?;
    let b = consume(&ch, "q", "", BasicConsumeOptions::default()).await?;
    assert!(a.tag().as_str().starts_with("amq.ctag-"), "got {}", a.tag());
    assert_ne!(a.tag(), b.tag());
    within(
        "cancel generated tag",
        ch.basic_cancel(a.tag(), BasicCancelOptions::default()),
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reusing_a_consumer_tag_on_a_channel_is_refused_with_530() -> anyhow::Result<()> {
    let (_broker, conn, ch) = broker_with_channel().await?;
    plain_queue(&ch, "q").await?;
    let _c = consume(&ch, "q", "dup", BasicConsumeOptions::default()).await?;
    let result = ch
        .basic_consume(
            "q".into(),
            "dup".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map(|_| ());
    expect_reply_code(
        result,
        530,
        "reused consumer tag (NOT_ALLOWED, a connection error in RabbitMQ)",
    )?;
    drop(conn);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_deliveries_and_leaves_unacked_messages_to_be_acked() -> anyhow::Result<()> {
    let (_broker, conn, ch) = broker_with_channel().await?;
    let publisher = confirm_channel(&conn).await?;
    plain_queue(&ch, "q").await?;
    within("qos", ch.basic_qos(1, BasicQosOptions::default())).await?;
    let mut consumer = consume(&ch, "q", "c", BasicConsumeOptions::default()).await?;
    fill(&publisher, "q", 3).await?;
    let first = next_delivery(&mut consumer).await?;
    within("cancel", ch.basic_cancel("c".into(), BasicCancelOptions::default())).await?;
    within("ack after cancel", first.acker.ack(BasicAckOptions::default())).await?;
    // The stream ends after the cancel-ok.
    match tokio::time::timeout(Duration::from_secs(10), futures_lite::StreamExt::next(&mut consumer)).await {
        Ok(None) => {}
        Ok(Some(Ok(d))) => anyhow::bail!("delivery after cancel: {:?}", amqp::text(&d.data)),
        Ok(Some(Err(e))) => anyhow::bail!("consumer error after cancel: {e}"),
        Err(_) => anyhow::bail!("consumer stream did not end after cancel"),
    }
    assert_eq!(
        amqp::message_count(&publisher, "q").await?,
        2,
        "the acked message is gone, the others wait"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_queue_sends_basic_cancel_to_its_consumers() -> anyhow::Result<()> {
    let (_broker, conn, ch) = broker_with_channel().await?;
    plain_queue(&ch, "doomed").await?;
    let mut consumer = consume(&ch, "doomed", "c", BasicConsumeOptions::default()).await?;
    let admin = within("channel.open", conn.create_channel()).await?;
    within(
        "queue.delete",
        admin.queue_delete("doomed".into(), QueueDeleteOptions::default()),
    )
    .await?;
    match tokio::time::timeout(Duration::from_secs(20), futures_lite::StreamExt::next(&mut consumer)).await {
        Ok(None) => {}
        Ok(Some(other)) => anyhow::bail!("expected the consumer to be cancelled, got {other:?}"),
        Err(_) => anyhow::bail!("no basic.cancel from the server after the queue was deleted"),
    }
    // The channel survives a server-sent cancel.
    plain_queue(&ch, "next").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mandatory_unroutable_message_is_returned_with_312_no_route() -> anyhow::Result<()> {
    let (_broker, conn, _ch) = broker_with_channel().await?;
    let ch = confirm_channel(&conn).await?;
    amqp::exchange(&ch, "x", lapin::ExchangeKind::Direct).await?;
    let props = BasicProperties::default().with_message_id("lost-1".into());
    let confirm = amqp::publish_with(&ch, "x", "nowhere", b"unroutable", props, true).await?;
    assert!(
        confirm.is_ack(),
        "an unroutable message is still confirmed (after the return)"
    );
    let returned = confirm.take_message().expect("basic.return before the confirm");
    assert_eq!(returned.reply_code, 312);
    assert_eq!(returned.reply_text.as_str(), "NO_ROUTE");
    assert_eq!(returned.delivery.exchange.as_str(), "x");
    assert_eq!(returned.delivery.routing_key.as_str(), "nowhere");
    assert_eq!(returned.delivery.data, b"unroutable");
    assert_eq!(
        returned.delivery.properties.message_id().as_ref().map(|s| s.as_str()),
        Some("lost-1")
    );

    // Not mandatory: silently dropped, confirmed, nothing returned.
    let confirm = amqp::publish_with(&ch, "x", "nowhere", b"dropped", BasicProperties::default(), false).await?;
    assert!(confirm.is_ack());
    assert!(confirm.take_message().is_none());
    // Mandatory but routable: no return.
    plain_queue(&ch, "q").await?;
    let confirm = amqp::publish_with(&ch, "", "q", b"routable", BasicProperties::default(), true).await?;
    assert!(confirm.take_message().is_none());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_is_set_after_nack_with_requeue_and_after_the_channel_closes() -> anyhow::Result<()> {
    let (_broker, conn, _ch) = broker_with_channel().await?;
    let publisher = confirm_channel(&conn).await?;
    plain_queue(&publisher, "q").await?;
    fill(&publisher, "q", 1).await?;

    let ch = within("channel.open", conn.create_channel()).await?;
    let mut consumer = consume(&ch, "q", "c", BasicConsumeOptions::default()).await?;
    let d = next_delivery(&mut consumer).await?;
    assert!(!d.redelivered, "first delivery is not redelivered");
    within(
        "nack requeue",
        d.acker.nack(BasicNackOptions {
            requeue: true,
            multiple: false,
        }),
    )
    .await?;
    let d = next_delivery(&mut consumer).await?;
    assert!(d.redelivered, "after nack+requeue the message is redelivered=true");
    assert_eq!(amqp::text(&d.data), "m0");
    within("channel.close", ch.close(200, "OK".into())).await?;

    let ch = within("channel.open", conn.create_channel()).await?;
    let mut consumer = consume(&ch, "q", "c2", BasicConsumeOptions::default()).await?;
    let d = next_delivery(&mut consumer).await?;
    assert!(d.redelivered, "unacked at channel close → redelivered=true");
    within("ack", d.acker.ack(BasicAckOptions::default())).await?;
    fill(&publisher, "q", 1).await?;
    let fresh = next_delivery(&mut consumer).await?;
    assert!(!fresh.redelivered, "a new message is not redelivered");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_get_returns_get_ok_with_the_remaining_count_or_get_empty() -> anyhow::Result<()> {
    let (_broker, conn, _ch) = broker_with_channel().await?;
    let ch = confirm_channel(&conn).await?;
    plain_queue(&ch, "q").await?;
    assert!(amqp::get(&ch, "q").await?.is_none(), "get-empty on an empty queue");
    fill(&ch, "q", 3).await?;
    let m = amqp::get_unacked(&ch, "q").await?.expect("get-ok");
    assert_eq!(m.message_count, 2, "get-ok carries the number of messages left");
    assert_eq!(amqp::text(&m.delivery.data), "m0");
    assert!(!m.delivery.redelivered);
    assert_eq!(m.delivery.routing_key.as_str(), "q");
    within("ack", m.delivery.acker.ack(BasicAckOptions::default())).await?;
    let m = amqp::get(&ch, "q").await?.expect("get-ok");
    assert_eq!(m.message_count, 1);
    let result = ch.basic_get("missing".into(), Default::default()).await.map(|_| ());
    expect_reply_code(result, 404, "basic.get from a missing queue")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_nack_and_reject_honour_multiple_and_requeue() -> anyhow::Result<()> {
    let (_broker, conn, _ch) = broker_with_channel().await?;
    let publisher = confirm_channel(&conn).await?;
    plain_queue(&publisher, "q").await?;
    fill(&publisher, "q", 6).await?;
    let ch = within("channel.open", conn.create_channel()).await?;
    let mut tags = Vec::new();
    for _ in 0..6 {
        tags.push(
            amqp::get_unacked(&ch, "q")
                .await?
                .expect("message")
                .delivery
                .delivery_tag,
        );
    }
    assert!(tags.windows(2).all(|w| w[1] > w[0]), "delivery tags increase: {tags:?}");
    // ack m0..m1 at once.
    within(
        "ack multiple",
        ch.basic_ack(tags[1], BasicAckOptions { multiple: true }),
    )
    .await?;
    // reject m2 without requeue: gone.
    within(
        "reject",
        ch.basic_reject(tags[2], BasicRejectOptions { requeue: false }),
    )
    .await?;
    // nack m3..m4 with requeue: back, redelivered.
    within(
        "nack multiple requeue",
        ch.basic_nack(
            tags[4],
            BasicNackOptions {
                multiple: true,
                requeue: true,
            },
        ),
    )
    .await?;
    // reject m5 with requeue: back too.
    within(
        "reject requeue",
        ch.basic_reject(tags[5], BasicRejectOptions { requeue: true }),
    )
    .await?;

    let mut back = Vec::new();
    while let Some(m) = amqp::get(&ch, "q").await? {
        assert!(
            m.delivery.redelivered,
            "requeued message {} is redelivered",
            amqp::text(&m.delivery.data)
        );
        back.push(amqp::text(&m.delivery.data));
    }
    back.sort();
    assert_eq!(back, ["m3", "m4", "m5"]);

    // nack without requeue and multiple=true drops everything outstanding.
    fill(&publisher, "q", 2).await?;
    let a = amqp::get_unacked(&ch, "q").await?.expect("m");
    let b = amqp::get_unacked(&ch, "q").await?.expect("m");
    assert!(b.delivery.delivery_tag > a.delivery.delivery_tag);
    within(
        "nack multiple",
        ch.basic_nack(
            b.delivery.delivery_tag,
            BasicNackOptions {
                multiple: true,
                requeue: false,
            },
        ),
    )
    .await?;
    within("channel.close", ch.close(200, "OK".into())).await?;
    assert_eq!(amqp::message_count(&publisher, "q").await?, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_recover_with_requeue_redelivers_unacked_messages() -> anyhow::Result<()> {
    let (_broker, conn, _ch) = broker_with_channel().await?;
    let publisher = confirm_channel(&conn).await?;
    plain_queue(&publisher, "q").await?;
    fill(&publisher, "q", 2).await?;
    let ch = within("channel.open", conn.create_channel()).await?;
    let mut consumer = consume(&ch, "q", "c", BasicConsumeOptions::default()).await?;
    let a = next_delivery(&mut consumer).await?;
    let b = next_delivery(&mut consumer).await?;
    assert!(!a.redelivered && !b.redelivered);
    within("basic.recover", ch.basic_recover(BasicRecoverOptions { requeue: true })).await?;
    let mut again = vec![next_delivery(&mut consumer).await?, next_delivery(&mut consumer).await?];
    again.sort_by_key(|d| amqp::text(&d.data));
    assert!(
        again.iter().all(|d| d.redelivered),
        "recovered messages are redelivered=true"
    );
    assert_eq!(
        again.iter().map(|d| amqp::text(&d.data)).collect::<Vec<_>>(),
        ["m0", "m1"]
    );
    for d in &again {
        within("ack", d.acker.ack(BasicAckOptions::default())).await?;
    }
    Ok(())
}

fn every_header_type() -> FieldTable {
    let nested = table([
        ("inner-string", longstr("deep")),
        ("inner-int", AMQPValue::LongInt(-7)),
        (
            "inner-table",
            AMQPValue::FieldTable(table([("leaf", AMQPValue::Boolean(true))])),
        ),
    ]);
    let array = FieldArray::from(vec![
        longstr("one"),
        AMQPValue::LongLongInt(2),
        AMQPValue::FieldTable(table([("k", longstr("v"))])),
        AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::Boolean(false)])),
    ]);
    table([
        ("bool", AMQPValue::Boolean(true)),
        ("i8", AMQPValue::ShortShortInt(-8)),
        ("u8", AMQPValue::ShortShortUInt(200)),
        ("i16", AMQPValue::ShortInt(-1600)),
        ("u16", AMQPValue::ShortUInt(60_000)),
        ("i32", AMQPValue::LongInt(-320_000)),
        ("u32", AMQPValue::LongUInt(4_000_000_000)),
        ("i64", AMQPValue::LongLongInt(-6_400_000_000)),
        ("f32", AMQPValue::Float(1.5)),
        ("f64", AMQPValue::Double(-2.25)),
        (
            "decimal",
            AMQPValue::DecimalValue(DecimalValue { scale: 2, value: 12345 }),
        ),
        ("string", AMQPValue::LongString(LongString::from("héllo wörld"))),
        (
            "binary-string",
            AMQPValue::LongString(LongString::from(vec![0u8, 1, 2, 255])),
        ),
        ("bytes", AMQPValue::ByteArray(ByteArray::from(vec![9u8, 8, 7]))),
        ("timestamp", AMQPValue::Timestamp(1_700_000_000)),
        ("void", AMQPValue::Void),
        ("array", AMQPValue::FieldArray(array)),
        ("table", AMQPValue::FieldTable(nested)),
    ])
}

fn all_properties() -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_content_encoding("gzip".into())
        .with_headers(every_header_type())
        .with_delivery_mode(2)
        .with_priority(7)
        .with_correlation_id("corr-42".into())
        .with_reply_to("amq.gen-reply".into())
        .with_expiration("3600000".into())
        .with_message_id("msg-1".into())
        .with_timestamp(1_700_000_123)
        .with_type("order.created".into())
        // RabbitMQ refuses a user-id that is not the connection's user.
        .with_user_id("guest".into())
        .with_app_id("warren-e2e".into())
        .with_cluster_id("cluster-x".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_fourteen_content_properties_and_nested_headers_round_trip_exactly() -> anyhow::Result<()> {
    let (_broker, conn, _ch) = broker_with_channel().await?;
    let ch = confirm_channel(&conn).await?;
    plain_queue(&ch, "props").await?;
    let sent = all_properties();
    amqp::publish_with(&ch, "", "props", b"{\"id\":1}", sent.clone(), false).await?;
    // Through basic.get…
    let got = amqp::get(&ch, "props").await?.expect("message");
    assert_eq!(got.delivery.properties, sent, "properties via basic.get");
    assert_eq!(got.delivery.data, b"{\"id\":1}");
    // …and through basic.deliver.
    amqp::publish_with(&ch, "", "props", b"again", sent.clone(), false).await?;
    let mut consumer = consume(
        &ch,
        "props",
        "c",
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
    )
    .await?;
    let d = next_delivery(&mut consumer).await?;
    assert_eq!(d.properties, sent, "properties via basic.deliver");
    // No properties at all stays no properties.
    amqp::publish(&ch, "", "props", b"bare").await?;
    let d = next_delivery(&mut consumer).await?;
    assert_eq!(d.properties, BasicProperties::default());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_id_that_is_not_the_connection_user_is_refused_with_406() -> anyhow::Result<()> {
    let broker = start_broker().await?;
    let conn = connect(&broker.amqp_uri()).await?;
    let ch = confirm_channel(&conn).await?;
    plain_queue(&ch, "q").await?;
    let props = BasicProperties::default().with_user_id("someone-else".into());
    let err = amqp::publish_with(&ch, "", "q", b"x", props, false)
        .await
        .expect_err("a forged user-id must fail");
    assert_eq!(
        warren_e2e::reply_code_any(&err),
        Some(406),
        "PRECONDITION_FAILED, got {err:#}"
    );
    Ok(())
}
