//! Channels: many per connection, open/close/flow, and a channel error that
//! closes only its own channel.

use lapin::{
    options::{ChannelFlowOptions, QueueDeclareOptions},
    types::FieldTable,
};
use warren_e2e::{
    amqp::{self, plain_queue},
    broker_with_channel, expect_reply_code, within,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_channels_on_one_connection_work_independently() -> anyhow::Result<()> {
    let (_broker, conn, _ch) = broker_with_channel().await?;
    let mut channels = Vec::new();
    for i in 0..64 {
        let ch = within("channel.open", conn.create_channel()).await?;
        plain_queue(&ch, &format!("q{i}")).await?;
        channels.push(ch);
    }
    for (i, ch) in channels.iter().enumerate() {
        amqp::publish(ch, "", &format!("q{i}"), format!("from {i}").as_bytes()).await?;
    }
    // Read each queue through a different channel than the one that filled it.
    for (i, ch) in channels.iter().enumerate() {
        let queue = format!("q{}", (i + 1) % channels.len());
        let got = amqp::get(ch, &queue).await?.expect("message");
        assert_eq!(
            amqp::text(&got.delivery.data),
            format!("from {}", (i + 1) % channels.len())
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_error_closes_only_that_channel_and_the_connection_keeps_working() -> anyhow::Result<()> {
    let (_broker, conn, ch) = broker_with_channel().await?;
    let other = within("channel.open", conn.create_channel()).await?;
    plain_queue(&other, "alive").await?;

    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let result = ch
        .queue_declare("does-not-exist".into(), passive, FieldTable::default())
        .await;
    expect_reply_code(result, 404, "passive declare of a missing queue")?;
    assert!(
        !ch.status().connected(),
        "the failing channel is closed: {:?}",
        ch.status()
    );

    assert!(conn.status().connected(), "the connection survives a channel error");
    amqp::publish(&other, "", "alive", b"still here").await?;
    let got = amqp::get(&other, "alive").await?.expect("message");
    assert_eq!(got.delivery.data, b"still here");
    let fresh = within("channel.open after an error", conn.create_channel()).await?;
    plain_queue(&fresh, "fresh").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_channel_and_opening_new_ones_works() -> anyhow::Result<()> {
    let (_broker, conn, ch) = broker_with_channel().await?;
    plain_queue(&ch, "q").await?;
    within("channel.close", ch.close(200, "OK".into())).await?;
    for _ in 0..10 {
        let ch = within("channel.open", conn.create_channel()).await?;
        amqp::publish(&ch, "", "q", b"x").await?;
        within("channel.close", ch.close(200, "OK".into())).await?;
    }
    let ch = within("channel.open", conn.create_channel()).await?;
    assert_eq!(amqp::message_count(&ch, "q").await?, 10);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_flow_active_is_acknowledged() -> anyhow::Result<()> {
    let (_broker, _conn, ch) = broker_with_channel().await?;
    let active = within("channel.flow", ch.channel_flow(ChannelFlowOptions { active: true })).await?;
    assert!(active, "flow-ok echoes active=true");
    plain_queue(&ch, "after-flow").await?;
    Ok(())
}
