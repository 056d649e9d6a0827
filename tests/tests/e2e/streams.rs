//! Stream queues (ADR 0030) on a three-node cluster, with lapin: a stream
//! declared through the leader, published to through a follower and read
//! from any offset through the other follower's replica; every confirmed
//! message still there, in order, after the leader is killed (-9) and
//! after it comes back. (The replies RabbitMQ gives are compared in the
//! differential harness's stream scenarios.)

use std::time::Duration;

use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::AMQPValue;
use lapin::Channel;
use warren_e2e::amqp::{self, declare_queue, long, longstr, table};
use warren_e2e::ops::{restart_node, start_three_nodes};
use warren_e2e::{connect, next_delivery, within};

/// Messages published before the leader is killed: more than a page
/// (1,024), so that every replica reads part of the stream back from its
/// store.
const MESSAGES: i64 = 2_500;

/// Attempts at a confirmed publish through the survivors after the kill.
const FAILOVER_ATTEMPTS: usize = 60;

fn body(offset: i64) -> String {
    format!("event-{offset:05}-{}", "x".repeat(200))
}

async fn channel(uri: &str) -> anyhow::Result<(lapin::Connection, Channel)> {
    let conn = connect(uri).await?;
    let ch = within("channel.open", conn.create_channel()).await?;
    Ok((conn, ch))
}

/// Reads `count` messages of stream `queue` from `offset` on through `ch`
/// (prefetch 100, each acked), checking each one's `x-stream-offset`
/// header and body; returns the offsets read.
async fn read(ch: &Channel, queue: &str, tag: &str, offset: AMQPValue, count: i64) -> anyhow::Result<Vec<i64>> {
    within("basic.qos", ch.basic_qos(100, BasicQosOptions::default())).await?;
    let mut consumer = within(
        "basic.consume",
        ch.basic_consume(
            queue.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            table([("x-stream-offset", offset)]),
        ),
    )
    .await?;
    let mut offsets = Vec::new();
    for _ in 0..count {
        let delivery = next_delivery(&mut consumer).await?;
        let header = delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("x-stream-offset").cloned());
        let Some(AMQPValue::LongLongInt(at)) = header else {
            anyhow::bail!("delivery without an x-stream-offset long: {header:?}");
        };
        assert_eq!(
            String::from_utf8_lossy(&delivery.data),
            body(at),
            "the body at offset {at}"
        );
        assert!(!delivery.redelivered, "a stream never redelivers");
        delivery.ack(BasicAckOptions::default()).await?;
        offsets.push(at);
    }
    within(
        "basic.cancel",
        ch.basic_cancel(tag.into(), BasicCancelOptions::default()),
    )
    .await?;
    Ok(offsets)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_read_from_any_node_and_offset_and_survives_its_leader() -> anyhow::Result<()> {
    let mut nodes = start_three_nodes().await?;
    let (_c1, leader) = channel(&nodes[0].amqp_uri()).await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    declare_queue(&leader, "events", durable, table([("x-queue-type", longstr("stream"))])).await?;
    let (_c2, publisher) = channel(&nodes[1].amqp_uri()).await?;
    within(
        "confirm.select",
        publisher.confirm_select(ConfirmSelectOptions::default()),
    )
    .await?;
    for offset in 0..MESSAGES {
        let confirm = amqp::publish(&publisher, "", "events", body(offset).as_bytes()).await?;
        assert!(confirm.is_ack(), "offset {offset} confirmed");
    }

    // Node 3 reads everything from the first; node 2 from an offset.
    let (_c3, reader) = channel(&nodes[2].amqp_uri()).await?;
    let all: Vec<i64> = (0..MESSAGES).collect();
    assert_eq!(read(&reader, "events", "all", longstr("first"), MESSAGES).await?, all);
    let (_c2b, second) = channel(&nodes[1].amqp_uri()).await?;
    assert_eq!(
        read(&second, "events", "tail", long(MESSAGES - 300), 300).await?,
        ((MESSAGES - 300)..MESSAGES).collect::<Vec<_>>()
    );
    // Reading took nothing: a second pass through node 3 sees it all.
    assert_eq!(read(&reader, "events", "again", long(0), MESSAGES).await?, all);

    // The leader dies: the survivors keep the stream and take more.
    nodes[0].kill9();
    let mut appended = false;
    for attempt in 0..FAILOVER_ATTEMPTS {
        let publish = async {
            let (_conn, ch) = channel(&nodes[1].amqp_uri()).await?;
            within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await?;
            amqp::publish(&ch, "", "events", body(MESSAGES).as_bytes()).await
        };
        match publish.await {
            Ok(confirm) if confirm.is_ack() => {
                println!("appended through a survivor after {} attempts", attempt + 1);
                appended = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    assert!(appended, "no confirmed append through the survivors after the kill");
    let (_c3b, survivor) = channel(&nodes[2].amqp_uri()).await?;
    let with_last: Vec<i64> = (0..=MESSAGES).collect();
    assert_eq!(
        read(&survivor, "events", "after-kill", longstr("first"), MESSAGES + 1).await?,
        with_last
    );

    // The old leader comes back and serves the whole stream from its own
    // replica.
    let old = nodes.remove(0);
    let back = restart_node(old).await?;
    let (_c1b, returned) = channel(&back.amqp_uri()).await?;
    assert_eq!(
        read(&returned, "events", "back", longstr("first"), MESSAGES + 1).await?,
        with_last
    );
    Ok(())
}
