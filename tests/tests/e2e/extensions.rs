//! RabbitMQ extensions beyond the list that Warren's core implements:
//! alternate exchanges, priority queues, direct reply-to; and server settings
//! from the `--config` file (users, message size, frame_max).

use lapin::{
    options::{BasicConsumeOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
    BasicProperties, Connection, ConnectionProperties, ExchangeKind,
};
use warren_e2e::{
    amqp::{self, bind, declare_queue, longstr, plain_queue, table},
    broker_with_channel, connect, expect_reply_code, next_delivery,
    raw::{RawClient, Tune},
    reply_code_any, start_broker_with_config, within, STEP_TIMEOUT,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alternate_exchange_receives_what_the_main_exchange_cannot_route() -> anyhow::Result<()> {
    let (_broker, _conn, ch) = broker_with_channel().await?;
    within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await?;
    amqp::exchange(&ch, "ae", ExchangeKind::Fanout).await?;
    plain_queue(&ch, "unrouted").await?;
    bind(&ch, "unrouted", "ae", "").await?;
    within(
        "exchange.declare with alternate-exchange",
        ch.exchange_declare(
            "main".into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            table([("alternate-exchange", longstr("ae"))]),
        ),
    )
    .await?;
    plain_queue(&ch, "routed").await?;
    bind(&ch, "routed", "main", "known").await?;

    amqp::publish(&ch, "main", "known", b"to routed").await?;
    let confirm = amqp::publish_with(&ch, "main", "unknown", b"to ae", BasicProperties::default(), true).await?;
    assert!(
        confirm.take_message().is_none(),
        "a message the alternate exchange routes is not returned"
    );
    assert_eq!(amqp::drain(&ch, "routed").await?, ["to routed"]);
    assert_eq!(amqp::drain(&ch, "unrouted").await?, ["to ae"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_priority_queue_delivers_higher_priorities_first() -> anyhow::Result<()> {
    let (_broker, _conn, ch) = broker_with_channel().await?;
    within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await?;
    declare_queue(
        &ch,
        "prio",
        QueueDeclareOptions::durable(),
        table([("x-max-priority", AMQPValue::LongLongInt(10))]),
    )
    .await?;
    for (body, priority) in [("low", 1u8), ("none", 0), ("high", 9), ("mid", 5), ("capped", 200)] {
        let props = if priority == 0 {
            BasicProperties::default()
        } else {
            BasicProperties::default().with_priority(priority)
        };
        amqp::publish_with(&ch, "", "prio", body.as_bytes(), props, false).await?;
    }
    // Priorities above x-max-priority count as the maximum (10 > 9).
    assert_eq!(
        amqp::drain(&ch, "prio").await?,
        ["capped", "high", "mid", "low", "none"]
    );
    // FIFO within one priority.
    for body in ["a", "b", "c"] {
        amqp::publish_with(
            &ch,
            "",
            "prio",
            body.as_bytes(),
            BasicProperties::default().with_priority(3),
            false,
        )
        .await?;
    }
    assert_eq!(amqp::drain(&ch, "prio").await?, ["a", "b", "c"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_reply_to_routes_responses_to_the_requesting_channel() -> anyhow::Result<()> {
    let (broker, conn, _ch) = broker_with_channel().await?;
    let server = connect(&broker.amqp_uri()).await?;
    let server_ch = within("channel.open", server.create_channel()).await?;
    plain_queue(&server_ch, "rpc").await?;
    let mut requests = within(
        "consume rpc",
        server_ch.basic_consume(
            "rpc".into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await?;

    let client = within("channel.open", conn.create_channel()).await?;
    let mut replies = within(
        "consume amq.rabbitmq.reply-to",
        client.basic_consume(
            "amq.rabbitmq.reply-to".into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await?;
    let props = BasicProperties::default()
        .with_reply_to("amq.rabbitmq.reply-to".into())
        .with_correlation_id("c1".into());
    amqp::publish_with(&client, "", "rpc", b"ping", props, false).await?;

    let request = next_delivery(&mut requests).await?;
    let reply_to = request.properties.reply_to().clone().expect("reply_to");
    assert!(
        reply_to.as_str().starts_with("amq.rabbitmq.reply-to."),
        "the server rewrites reply_to to a routable address, got {reply_to}"
    );
    let props = BasicProperties::default().with_correlation_id("c1".into());
    amqp::publish_with(&server_ch, "", reply_to.as_str(), b"pong", props, false).await?;
    let reply = next_delivery(&mut replies).await?;
    assert_eq!(reply.data, b"pong");
    assert_eq!(
        reply.properties.correlation_id().as_ref().map(|s| s.as_str()),
        Some("c1")
    );

    // Without a reply consumer on the channel RabbitMQ refuses the publish.
    let lonely = within("channel.open", conn.create_channel()).await?;
    within("confirm.select", lonely.confirm_select(ConfirmSelectOptions::default())).await?;
    let props = BasicProperties::default().with_reply_to("amq.rabbitmq.reply-to".into());
    let err = amqp::publish_with(&lonely, "", "rpc", b"x", props, false)
        .await
        .expect_err("must fail");
    assert_eq!(reply_code_any(&err), Some(406), "PRECONDITION_FAILED, got {err:#}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_file_sets_the_default_user_and_guest_is_refused() -> anyhow::Result<()> {
    let broker = start_broker_with_config("default_user = \"alice\"\ndefault_pass = \"s3cret\"\n").await?;
    let port = broker.amqp_port();
    let conn = connect(&format!("amqp://alice:s3cret@127.0.0.1:{port}/%2f")).await?;
    let ch = within("channel.open", conn.create_channel()).await?;
    plain_queue(&ch, "alice-q").await?;
    for uri in [
        format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
        format!("amqp://alice:wrong@127.0.0.1:{port}/%2f"),
    ] {
        let result = tokio::time::timeout(STEP_TIMEOUT, Connection::connect(&uri, ConnectionProperties::default()))
            .await
            .map_err(|_| anyhow::anyhow!("login hung"))?;
        expect_reply_code(result.map(|_| ()), 403, &uri)?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_file_sets_max_message_size_and_frame_max() -> anyhow::Result<()> {
    let broker = start_broker_with_config("max_message_size = 1024\nframe_max = 8192\n").await?;
    let client = RawClient::open(
        broker.amqp_addr(),
        Tune {
            frame_max: 8192,
            ..Tune::default()
        },
    )
    .await?;
    assert_eq!(
        client.server_tune.map(|t| t.frame_max),
        Some(8192),
        "connection.tune proposes the configured frame_max"
    );

    let conn = connect(&broker.amqp_uri()).await?;
    let ch = within("channel.open", conn.create_channel()).await?;
    within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await?;
    plain_queue(&ch, "q").await?;
    assert!(
        amqp::publish(&ch, "", "q", &[b'x'; 1024]).await?.is_ack(),
        "exactly the limit is accepted"
    );
    let err = amqp::publish(&ch, "", "q", &[b'x'; 1025])
        .await
        .expect_err("over the limit must fail");
    assert_eq!(reply_code_any(&err), Some(406), "PRECONDITION_FAILED, got {err:#}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_active_consumer_queue_feeds_one_consumer_until_it_cancels() -> anyhow::Result<()> {
    use lapin::options::BasicCancelOptions;
    let (_broker, conn, ch) = broker_with_channel().await?;
    within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await?;
    declare_queue(
        &ch,
        "sac",
        QueueDeclareOptions::default(),
        table([("x-single-active-consumer", AMQPValue::Boolean(true))]),
    )
    .await?;
    let c1_ch = within("channel.open", conn.create_channel()).await?;
    let c2_ch = within("channel.open", conn.create_channel()).await?;
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut first = within(
        "consume 1",
        c1_ch.basic_consume("sac".into(), "first".into(), no_ack, FieldTable::default()),
    )
    .await?;
    let mut second = within(
        "consume 2",
        c2_ch.basic_consume("sac".into(), "second".into(), no_ack, FieldTable::default()),
    )
    .await?;
    for i in 0..4 {
        amqp::publish(&ch, "", "sac", format!("m{i}").as_bytes()).await?;
    }
    for i in 0..4 {
        assert_eq!(amqp::text(&next_delivery(&mut first).await?.data), format!("m{i}"));
    }
    warren_e2e::expect_no_delivery(&mut second, std::time::Duration::from_millis(500)).await?;
    within(
        "cancel the active consumer",
        c1_ch.basic_cancel("first".into(), BasicCancelOptions::default()),
    )
    .await?;
    amqp::publish(&ch, "", "sac", b"after").await?;
    assert_eq!(
        next_delivery(&mut second).await?.data,
        b"after",
        "the next consumer takes over"
    );
    Ok(())
}
