//! Publisher confirms and the channel errors RabbitMQ raises for misuse:
//! unknown delivery tags (406), missing exchanges and queues (404).

use lapin::{
    options::{BasicAckOptions, BasicConsumeOptions, ConfirmSelectOptions},
    types::FieldTable,
    BasicProperties,
};
use warren_e2e::{
    amqp::{self, plain_queue},
    broker_with_channel, expect_reply_code,
    raw::{self, Outcome, RawClient, Tune},
    reply_code_any, within,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_select_acks_every_published_message() -> anyhow::Result<()> {
    let (_broker, _conn, ch) = broker_with_channel().await?;
    within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await?;
    assert!(ch.status().confirm());
    plain_queue(&ch, "q").await?;
    // Pipelined: publish 500, then wait for all confirms.
    let mut pending = Vec::new();
    for i in 0..500 {
        let body = format!("{i}");
        let confirm = within(
            "basic.publish",
            ch.basic_publish(
                "".into(),
                "q".into(),
                Default::default(),
                body.as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            ),
        )
        .await?;
        pending.push(confirm);
    }
    let mut acked = 0;
    for confirm in pending {
        if within("confirm", confirm).await?.is_ack() {
            acked += 1;
        }
    }
    assert_eq!(acked, 500);
    assert_eq!(amqp::message_count(&ch, "q").await?, 500);
    // A confirm also comes for a message routed nowhere.
    assert!(amqp::publish(&ch, "amq.direct", "nobody", b"x").await?.is_ack());
    Ok(())
}

/// A raw client: the close follows the ack at once, and lapin may have
/// processed it before its next call and report only a closed channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acking_an_unknown_delivery_tag_closes_the_channel_with_406() -> anyhow::Result<()> {
    let broker = warren_e2e::start_broker().await?;
    let mut client = RawClient::open(broker.amqp_addr(), Tune::default()).await?;
    client.open_channel(1).await?;
    let ack_999 = raw::Args::new().u64(999).bits(&[false]).build();
    client.send(&raw::method_frame(1, (60, 80), &ack_999)).await;
    let Outcome::Closed(close) = client.expect_close().await? else {
        anyhow::bail!("the socket closed without a channel.close");
    };
    assert_eq!(
        (close.connection, close.code, close.text.as_str()),
        (false, 406, "PRECONDITION_FAILED - unknown delivery tag 999")
    );
    // Only the channel closed: another one on the same connection works.
    client.open_channel(2).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acking_the_same_delivery_twice_closes_the_channel_with_406() -> anyhow::Result<()> {
    let (_broker, conn, ch) = broker_with_channel().await?;
    plain_queue(&ch, "q").await?;
    within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await?;
    amqp::publish(&ch, "", "q", b"x").await?;
    let m = amqp::get_unacked(&ch, "q").await?.expect("message");
    within(
        "first ack",
        ch.basic_ack(m.delivery.delivery_tag, BasicAckOptions::default()),
    )
    .await?;
    within(
        "second ack",
        ch.basic_ack(m.delivery.delivery_tag, BasicAckOptions::default()),
    )
    .await?;
    let result = ch
        .queue_declare("q".into(), Default::default(), FieldTable::default())
        .await;
    expect_reply_code(result, 406, "double ack")?;
    let ch = within("channel.open", conn.create_channel()).await?;
    assert_eq!(amqp::message_count(&ch, "q").await?, 0, "the first ack counted");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_to_a_missing_exchange_closes_the_channel_with_404() -> anyhow::Result<()> {
    let (_broker, conn, ch) = broker_with_channel().await?;
    // Without confirms the publish itself "succeeds"; the close follows.
    let _ = ch
        .basic_publish(
            "no-such-exchange".into(),
            "k".into(),
            Default::default(),
            b"x",
            BasicProperties::default(),
        )
        .await;
    let result = ch
        .queue_declare("after".into(), Default::default(), FieldTable::default())
        .await;
    expect_reply_code(result, 404, "publish to a missing exchange")?;

    // With confirms the confirm future fails with the 404.
    let ch = within("channel.open", conn.create_channel()).await?;
    within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await?;
    let err = amqp::publish(&ch, "no-such-exchange", "k", b"x")
        .await
        .expect_err("must fail");
    assert_eq!(reply_code_any(&err), Some(404), "got {err:#}");
    assert!(conn.status().connected());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consuming_from_or_purging_a_missing_queue_fails_with_404() -> anyhow::Result<()> {
    let (_broker, conn, ch) = broker_with_channel().await?;
    let result = ch
        .basic_consume(
            "nope".into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map(|_| ());
    expect_reply_code(result, 404, "consume from a missing queue")?;
    let ch = within("channel.open", conn.create_channel()).await?;
    let result = ch.queue_purge("nope".into(), Default::default()).await;
    expect_reply_code(result, 404, "purge a missing queue")?;
    let ch = within("channel.open", conn.create_channel()).await?;
    let result = ch
        .exchange_bind(
            "nope".into(),
            "amq.direct".into(),
            "k".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await;
    expect_reply_code(result, 404, "bind a missing destination exchange")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_an_unknown_consumer_tag_is_not_an_error() -> anyhow::Result<()> {
    let (_broker, _conn, ch) = broker_with_channel().await?;
    // RabbitMQ answers cancel-ok for an unknown tag.
    within(
        "basic.cancel unknown",
        ch.basic_cancel("never-consumed".into(), Default::default()),
    )
    .await?;
    plain_queue(&ch, "still-usable").await?;
    Ok(())
}

/// Publisher confirms are coalesced: consecutive acks on a channel go out as
/// one `basic.ack` with `multiple` set. Read on the wire: the acks cover
/// every sequence number exactly once, in order, and 300 pipelined publishes
/// are confirmed in far fewer frames than 300.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirms_of_consecutive_publishes_are_coalesced_into_multiple_acks() -> anyhow::Result<()> {
    use warren_e2e::raw::{self, ids, RawClient, Tune};
    const PUBLISHES: u64 = 300;
    const CONFIRM_SELECT: (u16, u16) = (85, 10);
    const CONFIRM_SELECT_OK: (u16, u16) = (85, 11);
    const BASIC_ACK: (u16, u16) = (60, 80);
    let broker = warren_e2e::start_broker().await?;
    let mut client = RawClient::open(broker.amqp_addr(), Tune::default()).await?;
    client.open_channel(1).await?;
    client
        .send(&raw::method_frame(
            1,
            ids::QUEUE_DECLARE,
            &raw::queue_declare_args("coalesced", false),
        ))
        .await;
    client.expect_method(ids::QUEUE_DECLARE_OK).await?;
    client.send(&raw::method_frame(1, CONFIRM_SELECT, &[0])).await;
    client.expect_method(CONFIRM_SELECT_OK).await?;

    let mut burst = Vec::new();
    for _ in 0..PUBLISHES {
        burst.extend(raw::publish_frames(1, "coalesced", b"hi"));
    }
    client.send(&burst).await;

    let mut confirmed_up_to = 0u64;
    let mut ack_frames = 0u64;
    while confirmed_up_to < PUBLISHES {
        let frame = client.expect_method(BASIC_ACK).await?;
        let args = frame.method_args();
        let tag = u64::from_be_bytes(args[..8].try_into()?);
        let multiple = args[8] & 1 == 1;
        ack_frames += 1;
        if multiple {
            assert!(
                tag > confirmed_up_to,
                "a multiple ack must move forward: {tag} after {confirmed_up_to}"
            );
        } else {
            assert_eq!(tag, confirmed_up_to + 1, "a single ack confirms the next publish");
        }
        confirmed_up_to = tag;
    }
    assert_eq!(confirmed_up_to, PUBLISHES);
    println!("{PUBLISHES} publishes confirmed in {ack_frames} basic.ack frames");
    assert!(
        ack_frames < PUBLISHES / 3,
        "{ack_frames} ack frames for {PUBLISHES} pipelined publishes: confirms are not coalesced"
    );
    Ok(())
}
