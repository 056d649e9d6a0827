//! The consumer timeout (RabbitMQ's `consumer_timeout`): a channel whose
//! oldest delivery awaiting an ack is older than the timeout is closed with
//! 406 and RabbitMQ 3.x's text, its unacked messages go back to their
//! queue (redelivered), and a channel that acks in time is left alone.
//! Against the binary with `consumer_timeout = 1000` (ms).

use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicGetOptions};
use lapin::types::FieldTable;
use warren_e2e::raw::{self, Outcome, RawClient, Tune};
use warren_e2e::{amqp, connect, next_delivery, start_broker_with_config, within};

const BASIC_GET: (u16, u16) = (60, 70);
const BASIC_GET_OK: (u16, u16) = (60, 71);
const BASIC_ACK: (u16, u16) = (60, 80);

fn get_args(queue: &str) -> Vec<u8> {
    raw::Args::new().u16(0).shortstr(queue).bits(&[false]).build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_not_acked_in_time_closes_its_channel_with_406_and_goes_back() -> anyhow::Result<()> {
    let broker = start_broker_with_config("consumer_timeout = 1000\n").await?;
    let conn = connect(&broker.amqp_uri()).await?;
    let ch = within("channel.open", conn.create_channel()).await?;
    amqp::plain_queue(&ch, "slow").await?;
    for body in [b"held".as_slice(), b"acked", b"third"] {
        amqp::publish(&ch, "", "slow", body).await?;
    }

    // Channel 1 takes a message and never acks it; channel 2 takes one and
    // acks it at once.
    let mut client = RawClient::open(broker.amqp_addr(), Tune::default()).await?;
    client.open_channel(1).await?;
    client.open_channel(2).await?;
    client.send(&raw::method_frame(1, BASIC_GET, &get_args("slow"))).await;
    client.expect_method(BASIC_GET_OK).await?;
    client.send(&raw::method_frame(2, BASIC_GET, &get_args("slow"))).await;
    let get_ok = client.expect_method(BASIC_GET_OK).await?;
    let tag = u64::from_be_bytes(get_ok.method_args()[..8].try_into()?);
    client
        .send(&raw::method_frame(
            2,
            BASIC_ACK,
            &raw::Args::new().u64(tag).bits(&[false]).build(),
        ))
        .await;

    let Outcome::Closed(close) = client.expect_close().await? else {
        anyhow::bail!("the socket closed instead of the channel");
    };
    assert_eq!(
        (close.connection, close.channel, close.code, close.text.as_str()),
        (
            false,
            1,
            406,
            "PRECONDITION_FAILED - delivery acknowledgement on channel 1 timed out. Timeout value used: 1000 ms. \
             This timeout value can be configured, see consumers doc guide to learn more"
        )
    );
    // Channel 2 acked in time: it still answers.
    client
        .send(&raw::method_frame(
            2,
            raw::ids::QUEUE_DECLARE,
            &raw::queue_declare_args("slow", false),
        ))
        .await;
    client.expect_method(raw::ids::QUEUE_DECLARE_OK).await?;

    // The held message went back, redelivered; the acked one is gone.
    let held = within("basic.get", ch.basic_get("slow".into(), BasicGetOptions::default()))
        .await?
        .expect("a message");
    assert_eq!((held.data.as_slice(), held.redelivered), (b"held".as_slice(), true));
    let third = within(
        "basic.get",
        ch.basic_get("slow".into(), BasicGetOptions { no_ack: true }),
    )
    .await?
    .expect("a message");
    assert_eq!(third.data, b"third");
    assert_eq!(amqp::message_count(&ch, "slow").await?, 0);
    Ok(())
}

/// The same for a consumer (lapin): it is cancelled with its channel, and
/// a consumer on another channel that acks gets the message again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_does_not_ack_loses_its_channel_and_the_message_goes_to_another() -> anyhow::Result<()> {
    let broker = start_broker_with_config("consumer_timeout = 1000\n").await?;
    let conn = connect(&broker.amqp_uri()).await?;
    let ch = within("channel.open", conn.create_channel()).await?;
    amqp::plain_queue(&ch, "work").await?;
    amqp::publish(&ch, "", "work", b"job").await?;

    let sleeper = within("channel.open", conn.create_channel()).await?;
    let mut stuck = within(
        "basic.consume",
        sleeper.basic_consume(
            "work".into(),
            "stuck".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    let first = next_delivery(&mut stuck).await?;
    assert!(!first.redelivered);
    // The channel is closed by the broker past the timeout.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while sleeper.status().connected() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the channel outlived the timeout"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(conn.status().connected(), "only the channel is closed");

    let worker = within("channel.open", conn.create_channel()).await?;
    let mut consumer = within(
        "basic.consume",
        worker.basic_consume(
            "work".into(),
            "worker".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    let again = next_delivery(&mut consumer).await?;
    assert_eq!((again.data.as_slice(), again.redelivered), (b"job".as_slice(), true));
    within("basic.ack", again.acker.ack(BasicAckOptions::default())).await?;
    Ok(())
}
