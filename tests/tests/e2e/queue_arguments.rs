//! Queue arguments and per-message expiration: x-message-ttl, expiration,
//! x-expires, x-max-length(-bytes) with drop-head and reject-publish,
//! dead-lettering with the x-death header, and argument validation.

use std::time::Duration;

use lapin::{
    options::{BasicNackOptions, BasicRejectOptions, ConfirmSelectOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
    BasicProperties, Channel, ExchangeKind,
};
use warren_e2e::{
    amqp::{self, bind, declare_queue, long, longstr, plain_queue, queue_exists, table},
    broker_with_channel, eventually, expect_reply_code, within,
};

/// How long expiry may take to become visible: expiry is driven by ticks.
const EXPIRY_LIMIT: Duration = Duration::from_secs(20);

async fn confirm_mode(ch: &Channel) -> anyhow::Result<()> {
    within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_message_ttl_expires_messages_that_are_not_consumed_in_time() -> anyhow::Result<()> {
    let (_broker, _conn, ch) = broker_with_channel().await?;
    confirm_mode(&ch).await?;
    declare_queue(
        &ch,
        "short",
        QueueDeclareOptions::default(),
        table([("x-message-ttl", long(200))]),
    )
    .await?;
    declare_queue(
        &ch,
        "long",
        QueueDeclareOptions::default(),
        table([("x-message-ttl", long(600_000))]),
    )
    .await?;
    for i in 0..3 {
        amqp::publish(&ch, "", "short", format!("s{i}").as_bytes()).await?;
        amqp::publish(&ch, "", "long", format!("l{i}").as_bytes()).await?;
    }
    eventually("messages past x-message-ttl disappear", EXPIRY_LIMIT, || async {
        Ok((amqp::message_count(&ch, "short").await? == 0).then_some(()))
    })
    .await?;
    assert!(
        amqp::get(&ch, "short").await?.is_none(),
        "an expired message is never delivered"
    );
    assert_eq!(
        amqp::drain(&ch, "long").await?,
        ["l0", "l1", "l2"],
        "a long TTL keeps messages"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_message_expiration_drops_only_the_expired_message() -> anyhow::Result<()> {
    let (_broker, _conn, ch) = broker_with_channel().await?;
    confirm_mode(&ch).await?;
    plain_queue(&ch, "q").await?;
    let short = BasicProperties::default().with_expiration("200".into());
    let long = BasicProperties::default().with_expiration("600000".into());
    amqp::publish_with(&ch, "", "q", b"short", short, false).await?;
    amqp::publish_with(&ch, "", "q", b"long", long.clone(), false).await?;
    amqp::publish(&ch, "", "q", b"no-expiration").await?;
    eventually("the expired head message disappears", EXPIRY_LIMIT, || async {
        Ok((amqp::message_count(&ch, "q").await? == 2).then_some(()))
    })
    .await?;
    let first = amqp::get(&ch, "q").await?.expect("long-lived message");
    assert_eq!(first.delivery.data, b"long");
    assert_eq!(
        first.delivery.properties.expiration().as_ref().map(|s| s.as_str()),
        Some("600000"),
        "expiration is kept"
    );
    assert_eq!(amqp::drain(&ch, "q").await?, ["no-expiration"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_expiration_is_refused_with_406() -> anyhow::Result<()> {
    let (_broker, _conn, ch) = broker_with_channel().await?;
    confirm_mode(&ch).await?;
    plain_queue(&ch, "q").await?;
    let bad = BasicProperties::default().with_expiration("soon".into());
    let err = amqp::publish_with(&ch, "", "q", b"x", bad, false)
        .await
        .expect_err("invalid expiration must fail");
    assert_eq!(
        warren_e2e::reply_code_any(&err),
        Some(406),
        "PRECONDITION_FAILED, got {err:#}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_expires_deletes_a_queue_that_stays_unused() -> anyhow::Result<()> {
    let (_broker, conn, ch) = broker_with_channel().await?;
    declare_queue(
        &ch,
        "ephemeral",
        QueueDeclareOptions::default(),
        table([("x-expires", long(300))]),
    )
    .await?;
    declare_queue(
        &ch,
        "kept",
        QueueDeclareOptions::default(),
        table([("x-expires", long(600_000))]),
    )
    .await?;
    // A passive declare is a use that renews the lease (RabbitMQ's `stat`
    // restarts the expiry timer), so look only every 1.5 s, well past 300 ms.
    let mut gone = false;
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        if !queue_exists(&conn, "ephemeral").await? {
            gone = true;
            break;
        }
    }
    assert!(gone, "queue with x-expires=300 was not deleted while unused");
    assert!(queue_exists(&conn, "kept").await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_max_length_drops_the_oldest_messages_by_default() -> anyhow::Result<()> {
    let (_broker, _conn, ch) = broker_with_channel().await?;
    confirm_mode(&ch).await?;
    declare_queue(
        &ch,
        "bounded",
        QueueDeclareOptions::default(),
        table([("x-max-length", long(2))]),
    )
    .await?;
    for i in 1..=5 {
        let confirm = amqp::publish(&ch, "", "bounded", format!("m{i}").as_bytes()).await?;
        assert!(confirm.is_ack(), "drop-head accepts every publish");
    }
    assert_eq!(amqp::drain(&ch, "bounded").await?, ["m4", "m5"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_overflow_reject_publish_nacks_publishes_beyond_x_max_length() -> anyhow::Result<()> {
    let (_broker, _conn, ch) = broker_with_channel().await?;
    confirm_mode(&ch).await?;
    let args = table([("x-max-length", long(2)), ("x-overflow", longstr("reject-publish"))]);
    declare_queue(&ch, "strict", QueueDeclareOptions::default(), args).await?;
    let mut acks = Vec::new();
    for i in 1..=4 {
        let confirm = amqp::publish(&ch, "", "strict", format!("m{i}").as_bytes()).await?;
        acks.push(confirm.is_ack());
    }
    assert_eq!(acks, [true, true, false, false], "the 3rd and 4th publish are nacked");
    assert_eq!(amqp::drain(&ch, "strict").await?, ["m1", "m2"]);
    // Room again: accepted again.
    assert!(amqp::publish(&ch, "", "strict", b"m5").await?.is_ack());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_max_length_bytes_bounds_the_total_body_size() -> anyhow::Result<()> {
    let (_broker, _conn, ch) = broker_with_channel().await?;
    confirm_mode(&ch).await?;
    declare_queue(
        &ch,
        "bytes",
        QueueDeclareOptions::default(),
        table([("x-max-length-bytes", long(10))]),
    )
    .await?;
    for body in ["aaaaa", "bbbbb", "ccccc"] {
        amqp::publish(&ch, "", "bytes", body.as_bytes()).await?;
    }
    assert_eq!(amqp::drain(&ch, "bytes").await?, ["bbbbb", "ccccc"]);

    let args = table([
        ("x-max-length-bytes", long(10)),
        ("x-overflow", longstr("reject-publish")),
    ]);
    declare_queue(&ch, "bytes-strict", QueueDeclareOptions::default(), args).await?;
    assert!(amqp::publish(&ch, "", "bytes-strict", b"0123456789").await?.is_ack());
    assert!(amqp::publish(&ch, "", "bytes-strict", b"x").await?.is_nack());
    Ok(())
}

fn header<'a>(table: &'a FieldTable, key: &str) -> Option<&'a AMQPValue> {
    table.inner().iter().find(|(k, _)| k.as_str() == key).map(|(_, v)| v)
}

fn as_text(value: Option<&AMQPValue>) -> Option<String> {
    match value? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).to_string()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

fn as_int(value: Option<&AMQPValue>) -> Option<i64> {
    match value? {
        AMQPValue::LongLongInt(v) => Some(*v),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
        _ => None,
    }
}

/// Checks the first `x-death` entry of a dead-lettered message.
fn assert_x_death(properties: &BasicProperties, reason: &str, queue: &str, exchange: &str, routing_key: &str) {
    let headers = properties
        .headers()
        .as_ref()
        .expect("a dead-lettered message has headers");
    let Some(AMQPValue::FieldArray(deaths)) = header(headers, "x-death") else {
        panic!("x-death must be an array, headers: {headers:?}");
    };
    let Some(AMQPValue::FieldTable(death)) = deaths.as_slice().first() else {
        panic!("x-death[0] must be a table: {deaths:?}");
    };
    assert_eq!(
        as_text(header(death, "reason")).as_deref(),
        Some(reason),
        "x-death reason in {death:?}"
    );
    assert_eq!(
        as_text(header(death, "queue")).as_deref(),
        Some(queue),
        "x-death queue in {death:?}"
    );
    assert_eq!(
        as_text(header(death, "exchange")).as_deref(),
        Some(exchange),
        "x-death exchange in {death:?}"
    );
    assert_eq!(as_int(header(death, "count")), Some(1), "x-death count in {death:?}");
    assert!(header(death, "time").is_some(), "x-death time in {death:?}");
    match header(death, "routing-keys") {
        Some(AMQPValue::FieldArray(keys)) => {
            let keys: Vec<String> = keys.as_slice().iter().filter_map(|k| as_text(Some(k))).collect();
            assert_eq!(keys, [routing_key], "x-death routing-keys");
        }
        other => panic!("x-death routing-keys must be an array, got {other:?}"),
    }
    assert_eq!(
        as_text(header(headers, "x-first-death-reason")).as_deref(),
        Some(reason)
    );
    assert_eq!(as_text(header(headers, "x-first-death-queue")).as_deref(), Some(queue));
    assert_eq!(
        as_text(header(headers, "x-first-death-exchange")).as_deref(),
        Some(exchange)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_messages_are_dead_lettered_with_the_routing_key_override_and_x_death() -> anyhow::Result<()> {
    let (_broker, _conn, ch) = broker_with_channel().await?;
    confirm_mode(&ch).await?;
    amqp::exchange(&ch, "dlx", ExchangeKind::Direct).await?;
    plain_queue(&ch, "dlq").await?;
    bind(&ch, "dlq", "dlx", "dead").await?;
    let args = table([
        ("x-dead-letter-exchange", longstr("dlx")),
        ("x-dead-letter-routing-key", longstr("dead")),
    ]);
    declare_queue(&ch, "work", QueueDeclareOptions::default(), args).await?;

    let props = BasicProperties::default().with_message_id("m-1".into());
    amqp::publish_with(&ch, "", "work", b"poison", props, false).await?;
    amqp::publish(&ch, "", "work", b"nacked").await?;
    amqp::publish(&ch, "", "work", b"requeued").await?;

    let poison = amqp::get_unacked(&ch, "work").await?.expect("message");
    within(
        "basic.reject",
        ch.basic_reject(poison.delivery.delivery_tag, BasicRejectOptions { requeue: false }),
    )
    .await?;
    let nacked = amqp::get_unacked(&ch, "work").await?.expect("message");
    within(
        "basic.nack",
        ch.basic_nack(
            nacked.delivery.delivery_tag,
            BasicNackOptions {
                requeue: false,
                multiple: false,
            },
        ),
    )
    .await?;
    let requeued = amqp::get_unacked(&ch, "work").await?.expect("message");
    within(
        "basic.reject requeue",
        ch.basic_reject(requeued.delivery.delivery_tag, BasicRejectOptions { requeue: true }),
    )
    .await?;

    let dead = eventually("dead-lettered message arrives", Duration::from_secs(20), || async {
        amqp::get(&ch, "dlq").await
    })
    .await?;
    assert_eq!(dead.delivery.data, b"poison");
    assert_eq!(dead.delivery.exchange.as_str(), "dlx");
    assert_eq!(
        dead.delivery.routing_key.as_str(),
        "dead",
        "x-dead-letter-routing-key replaces the key"
    );
    assert_eq!(
        dead.delivery.properties.message_id().as_ref().map(|s| s.as_str()),
        Some("m-1"),
        "properties are kept"
    );
    assert_x_death(&dead.delivery.properties, "rejected", "work", "", "work");

    let dead = amqp::get(&ch, "dlq")
        .await?
        .expect("nacked message is dead-lettered too");
    assert_eq!(dead.delivery.data, b"nacked");
    assert_x_death(&dead.delivery.properties, "rejected", "work", "", "work");
    assert!(
        amqp::get(&ch, "dlq").await?.is_none(),
        "a requeued message is not dead-lettered"
    );
    assert_eq!(amqp::drain(&ch, "work").await?, ["requeued"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_overflowed_messages_are_dead_lettered_with_their_reason() -> anyhow::Result<()> {
    let (_broker, _conn, ch) = broker_with_channel().await?;
    confirm_mode(&ch).await?;
    amqp::exchange(&ch, "dlx", ExchangeKind::Topic).await?;
    plain_queue(&ch, "dlq").await?;
    bind(&ch, "dlq", "dlx", "#").await?;
    amqp::exchange(&ch, "in", ExchangeKind::Direct).await?;

    let ttl = table([("x-dead-letter-exchange", longstr("dlx")), ("x-message-ttl", long(100))]);
    declare_queue(&ch, "ttl", QueueDeclareOptions::default(), ttl).await?;
    bind(&ch, "ttl", "in", "to-ttl").await?;
    amqp::publish(&ch, "in", "to-ttl", b"expired").await?;
    let dead = eventually("expired message is dead-lettered", Duration::from_secs(20), || async {
        amqp::get(&ch, "dlq").await
    })
    .await?;
    assert_eq!(dead.delivery.data, b"expired");
    assert_eq!(
        dead.delivery.routing_key.as_str(),
        "to-ttl",
        "without an override the original key is kept"
    );
    assert_x_death(&dead.delivery.properties, "expired", "ttl", "in", "to-ttl");

    let maxlen = table([("x-dead-letter-exchange", longstr("dlx")), ("x-max-length", long(1))]);
    declare_queue(&ch, "maxlen", QueueDeclareOptions::default(), maxlen).await?;
    amqp::publish(&ch, "", "maxlen", b"oldest").await?;
    amqp::publish(&ch, "", "maxlen", b"newest").await?;
    let dead = eventually("dropped head is dead-lettered", Duration::from_secs(20), || async {
        amqp::get(&ch, "dlq").await
    })
    .await?;
    assert_eq!(dead.delivery.data, b"oldest");
    assert_x_death(&dead.delivery.properties, "maxlen", "maxlen", "", "maxlen");
    assert_eq!(amqp::drain(&ch, "maxlen").await?, ["newest"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_queue_arguments_are_refused_with_406_as_rabbitmq_does() -> anyhow::Result<()> {
    let (_broker, conn, _ch) = broker_with_channel().await?;
    let cases = [
        ("x-max-length as a string", table([("x-max-length", longstr("ten"))])),
        ("negative x-max-length", table([("x-max-length", long(-1))])),
        ("negative x-message-ttl", table([("x-message-ttl", long(-5))])),
        ("x-expires of zero", table([("x-expires", long(0))])),
        ("unknown x-overflow", table([("x-overflow", longstr("sometimes"))])),
        (
            "x-dead-letter-exchange as a number",
            table([("x-dead-letter-exchange", long(7))]),
        ),
    ];
    for (what, args) in cases {
        let ch = within("channel.open", conn.create_channel()).await?;
        let result = ch.queue_declare("q".into(), QueueDeclareOptions::default(), args).await;
        expect_reply_code(result, 406, what)?;
    }
    assert!(!queue_exists(&conn, "q").await?, "no invalid declare created the queue");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_queue_type_classic_and_quorum_are_accepted() -> anyhow::Result<()> {
    let (_broker, _conn, ch) = broker_with_channel().await?;
    confirm_mode(&ch).await?;
    declare_queue(
        &ch,
        "classic",
        QueueDeclareOptions::durable(),
        table([("x-queue-type", longstr("classic"))]),
    )
    .await?;
    declare_queue(
        &ch,
        "quorum",
        QueueDeclareOptions::durable(),
        table([("x-queue-type", longstr("quorum"))]),
    )
    .await?;
    amqp::publish(&ch, "", "quorum", b"q").await?;
    assert_eq!(amqp::drain(&ch, "quorum").await?, ["q"]);
    Ok(())
}
