//! Consumer credit at the consumer's node (ADR 0026), against the binary:
//! with pika, the client sees its prefetch while the node holds the rest
//! of what the core assigned, acks bring the next delivery at once, and
//! held deliveries go back not redelivered (`tests/python/consumer_credit.py`);
//! and a `no_ack` consumer whose client stops reading leaves the backlog in
//! its queue instead of in the node's memory.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::BasicProperties;
use warren_e2e::raw::{self, RawClient, Tune};
use warren_e2e::{amqp, connect, python, start_broker, within, within_for};

const BASIC_CONSUME: (u16, u16) = (60, 20);
const BASIC_DELIVER: (u16, u16) = (60, 60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pika_sees_its_prefetch_and_held_deliveries_go_back_unredelivered() -> anyhow::Result<()> {
    let broker = start_broker().await?;
    let output = python::run_script("consumer_credit.py", broker.amqp_port(), &[]).await?;
    println!("{output}");
    Ok(())
}

/// Ready messages of `queue`, by a passive declare.
async fn ready(ch: &lapin::Channel, queue: &str) -> anyhow::Result<u32> {
    let options = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let declared = within(
        "queue.declare passive",
        ch.queue_declare(queue.into(), options, FieldTable::default()),
    )
    .await?;
    Ok(declared.message_count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_ack_consumer_that_stops_reading_leaves_the_backlog_in_its_queue() -> anyhow::Result<()> {
    const QUEUE: &str = "slow-reader";
    const COUNT: u32 = 4_000;
    let broker = start_broker().await?;
    let conn = connect(&broker.amqp_uri()).await?;
    let ch = within("channel.open", conn.create_channel()).await?;
    amqp::plain_queue(&ch, QUEUE).await?;

    // A raw client consumes without acks and then reads nothing at all:
    // what the node writes piles up in the socket buffers, then in the node.
    let mut reader = RawClient::open(broker.amqp_addr(), Tune::default()).await?;
    reader.open_channel(1).await?;
    let consume = raw::Args::new()
        .u16(0)
        .shortstr(QUEUE)
        .shortstr("slow")
        .bits(&[false, true, false, false])
        .empty_table()
        .build();
    reader.send(&raw::method_frame(1, BASIC_CONSUME, &consume)).await;

    // 4,000 messages of 16 KiB (62.5 MiB), confirmed.
    within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await?;
    let body = vec![b'x'; 16 * 1024];
    let mut confirms = Vec::new();
    for _ in 0..COUNT {
        confirms.push(
            within(
                "basic.publish",
                ch.basic_publish(
                    "".into(),
                    QUEUE.into(),
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default(),
                ),
            )
            .await?,
        );
    }
    for confirm in confirms {
        within_for(Duration::from_secs(60), "publisher confirm", confirm).await?;
    }

    // The consumer may be assigned its window (16 MiB of bodies: 1,024 of
    // these) plus what its node wrote into the socket buffers (a few MiB on
    // loopback) and a report's slack (2 MiB); everything else stays ready. Without the window the core
    // hands the whole backlog to the consumer at once and none stays.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let left = ready(&ch, QUEUE).await?;
    println!("ready with a consumer that reads nothing: {left} of {COUNT}");
    assert!(left >= COUNT / 2, "only {left} of {COUNT} stayed in the queue");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ready(&ch, QUEUE).await?, left, "the consumer is stalled, not slow");

    // Once the client reads again, every message reaches it.
    let mut delivered = 0u32;
    while delivered < COUNT {
        let frame = within_for(Duration::from_secs(30), "a delivery", reader.read_frame())
            .await?
            .ok_or_else(|| anyhow::anyhow!("EOF after {delivered} deliveries"))?;
        if frame.method_id() == Some(BASIC_DELIVER) {
            delivered += 1;
        }
    }
    assert_eq!(ready(&ch, QUEUE).await?, 0);
    Ok(())
}
