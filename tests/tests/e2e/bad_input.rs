//! Bad input over a raw socket: each case must be answered the way RabbitMQ
//! answers it (the right reply code, a text that names the problem), must
//! never take the node down, and must leave other connections working.

use lapin::{options::ConfirmSelectOptions, Connection};
use warren_e2e::{
    amqp::{self, plain_queue},
    connect,
    raw::{self, ids, Args, Close, Outcome, RawClient, Tune},
    start_broker, within, WarrenProcess,
};

/// Asserts that the server answered with `connection.close` and one of `codes`.
fn assert_connection_closed(outcome: &Outcome, codes: &[u16], case: &str) -> Close {
    let Outcome::Closed(close) = outcome else {
        panic!("{case}: the server dropped the socket without a close method; RabbitMQ sends one");
    };
    assert!(
        close.connection,
        "{case}: a connection error, not a channel error, in RabbitMQ ({close:?})"
    );
    assert!(
        codes.contains(&close.code),
        "{case}: reply code {} not in {codes:?} ({close:?})",
        close.code
    );
    assert!(
        !close.text.trim().is_empty(),
        "{case}: the close must say what was wrong ({close:?})"
    );
    close.clone()
}

/// A fresh lapin connection still works end to end, and the long-lived one too.
async fn assert_still_serving(broker: &mut WarrenProcess, long_lived: &Connection, case: &str) -> anyhow::Result<()> {
    assert!(broker.is_running(), "{case}: the broker process died");
    let conn = connect(&broker.amqp_uri())
        .await
        .map_err(|e| e.context(format!("after {case}")))?;
    let ch = within("channel.open", conn.create_channel()).await?;
    within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await?;
    plain_queue(&ch, "canary").await?;
    amqp::publish(&ch, "", "canary", case.as_bytes()).await?;
    let got = amqp::get(&ch, "canary").await?.expect("canary message");
    assert_eq!(got.delivery.data, case.as_bytes());
    within("connection.close", conn.close(200, "OK".into())).await?;

    let ch = within("channel.open on the long-lived connection", long_lived.create_channel()).await?;
    plain_queue(&ch, "long-lived").await?;
    within("channel.close", ch.close(200, "OK".into())).await?;
    Ok(())
}

async fn setup() -> anyhow::Result<(WarrenProcess, Connection)> {
    let broker = start_broker().await?;
    let long_lived = connect(&broker.amqp_uri()).await?;
    Ok((broker, long_lived))
}

async fn open_client(broker: &WarrenProcess, tune: Tune) -> anyhow::Result<RawClient> {
    let mut client = RawClient::open(broker.amqp_addr(), tune).await?;
    client.open_channel(1).await?;
    Ok(client)
}

fn publish_frame(channel: u16) -> Vec<u8> {
    raw::method_frame(
        channel,
        ids::BASIC_PUBLISH,
        &raw::basic_publish_args("", "canary", false),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_frame_followed_by_a_disconnect_leaves_the_node_serving() -> anyhow::Result<()> {
    let (mut broker, long_lived) = setup().await?;
    let mut client = open_client(&broker, Tune::default()).await?;
    let mut bytes = raw::frame_header(raw::FRAME_METHOD, 1, 100);
    bytes.extend_from_slice(&[0, 50, 0, 10, 0, 0, 4]);
    client.send(&bytes).await;
    client.shutdown_write().await;
    drop(client);
    assert_still_serving(&mut broker, &long_lived, "truncated frame").await?;

    // A truncated protocol header, and a half-sent handshake, likewise.
    let mut client = RawClient::connect(broker.amqp_addr()).await?;
    client.send(b"AMQ").await;
    drop(client);
    let mut client = RawClient::connect(broker.amqp_addr()).await?;
    client.send(raw::PROTOCOL_HEADER).await;
    client.expect_method(ids::CONNECTION_START).await?;
    client.send(&raw::frame_header(raw::FRAME_METHOD, 0, 40)).await;
    drop(client);
    assert_still_serving(&mut broker, &long_lived, "truncated handshake").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_larger_than_the_negotiated_frame_max_closes_the_connection_with_501() -> anyhow::Result<()> {
    let (mut broker, long_lived) = setup().await?;
    let mut client = open_client(
        &broker,
        Tune {
            frame_max: 4096,
            ..Tune::default()
        },
    )
    .await?;
    client.send(&publish_frame(1)).await;
    client.send(&raw::content_header_frame(1, 10_000)).await;
    client.send(&raw::frame(raw::FRAME_BODY, 1, &vec![b'x'; 5000])).await;
    let outcome = client.expect_close().await?;
    assert_connection_closed(&outcome, &[501], "5000-byte body frame with frame_max 4096");
    assert_still_serving(&mut broker, &long_lived, "oversized frame").await?;

    // A header announcing 2 GiB must be refused from the header alone.
    let mut client = open_client(
        &broker,
        Tune {
            frame_max: 131_072,
            ..Tune::default()
        },
    )
    .await?;
    client.send(&raw::frame_header(raw::FRAME_BODY, 1, 0x7fff_ffff)).await;
    let outcome = client.expect_close().await?;
    assert_connection_closed(&outcome, &[501], "frame header announcing 2 GiB");
    assert_still_serving(&mut broker, &long_lived, "2 GiB frame header").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_frame_end_octet_closes_the_connection_with_501() -> anyhow::Result<()> {
    let (mut broker, long_lived) = setup().await?;
    let mut client = open_client(&broker, Tune::default()).await?;
    let payload = raw::method_payload(ids::CHANNEL_OPEN, &Args::new().shortstr("").build());
    client
        .send(&raw::frame_with_end(raw::FRAME_METHOD, 2, &payload, 0x00))
        .await;
    let outcome = client.expect_close().await?;
    assert_connection_closed(&outcome, &[501], "frame-end 0x00");
    assert_still_serving(&mut broker, &long_lived, "bad frame end").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_class_or_method_closes_the_connection() -> anyhow::Result<()> {
    let (mut broker, long_lived) = setup().await?;
    for (case, id) in [
        ("unknown class 999", (999, 10)),
        ("unknown basic method 999", (60, 999)),
    ] {
        let mut client = open_client(&broker, Tune::default()).await?;
        client.send(&raw::method_frame(1, id, &[0, 0, 0, 0])).await;
        let outcome = client.expect_close().await?;
        assert_connection_closed(&outcome, &[540, 503], case);
        assert_still_serving(&mut broker, &long_lived, case).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_frame_type_closes_the_connection() -> anyhow::Result<()> {
    let (mut broker, long_lived) = setup().await?;
    let mut client = open_client(&broker, Tune::default()).await?;
    client.send(&raw::frame(9, 1, b"what")).await;
    let outcome = client.expect_close().await?;
    assert_connection_closed(&outcome, &[501, 505], "frame type 9");
    assert_still_serving(&mut broker, &long_lived, "unknown frame type").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_on_a_never_opened_or_closed_channel_closes_the_connection_with_504() -> anyhow::Result<()> {
    let (mut broker, long_lived) = setup().await?;
    let mut client = open_client(&broker, Tune::default()).await?;
    client
        .send(&raw::method_frame(
            7,
            ids::QUEUE_DECLARE,
            &raw::queue_declare_args("q", false),
        ))
        .await;
    let outcome = client.expect_close().await?;
    assert_connection_closed(&outcome, &[504], "queue.declare on never-opened channel 7");
    assert_still_serving(&mut broker, &long_lived, "never-opened channel").await?;

    let mut client = open_client(&broker, Tune::default()).await?;
    let close = Args::new().u16(200).shortstr("done").u16(0).u16(0).build();
    client.send(&raw::method_frame(1, ids::CHANNEL_CLOSE, &close)).await;
    client.expect_method(ids::CHANNEL_CLOSE_OK).await?;
    client
        .send(&raw::method_frame(
            1,
            ids::QUEUE_DECLARE,
            &raw::queue_declare_args("q", false),
        ))
        .await;
    let outcome = client.expect_close().await?;
    assert_connection_closed(&outcome, &[504], "queue.declare on closed channel 1");
    assert_still_serving(&mut broker, &long_lived, "closed channel").await?;

    // Opening a channel twice is a channel error too (RabbitMQ: 504 connection close).
    let mut client = open_client(&broker, Tune::default()).await?;
    client
        .send(&raw::method_frame(
            1,
            ids::CHANNEL_OPEN,
            &Args::new().shortstr("").build(),
        ))
        .await;
    let outcome = client.expect_close().await?;
    assert_connection_closed(&outcome, &[504], "channel.open on an open channel");
    assert_still_serving(&mut broker, &long_lived, "double channel.open").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_without_a_header_closes_the_connection_with_505() -> anyhow::Result<()> {
    let (mut broker, long_lived) = setup().await?;
    let mut client = open_client(&broker, Tune::default()).await?;
    client.send(&raw::frame(raw::FRAME_BODY, 1, b"orphan body")).await;
    let outcome = client.expect_close().await?;
    assert_connection_closed(&outcome, &[505], "body frame with no publish");
    assert_still_serving(&mut broker, &long_lived, "orphan body").await?;

    let mut client = open_client(&broker, Tune::default()).await?;
    client.send(&publish_frame(1)).await;
    client
        .send(&raw::frame(raw::FRAME_BODY, 1, b"body before header"))
        .await;
    let outcome = client.expect_close().await?;
    assert_connection_closed(&outcome, &[505], "publish then body without header");
    assert_still_serving(&mut broker, &long_lived, "body without header").await?;

    let mut client = open_client(&broker, Tune::default()).await?;
    client.send(&publish_frame(1)).await;
    client
        .send(&raw::method_frame(
            1,
            ids::QUEUE_DECLARE,
            &raw::queue_declare_args("q", false),
        ))
        .await;
    let outcome = client.expect_close().await?;
    assert_connection_closed(&outcome, &[505], "publish then a method instead of the header");
    assert_still_serving(&mut broker, &long_lived, "method instead of header").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_longer_than_its_header_said_closes_the_connection() -> anyhow::Result<()> {
    let (mut broker, long_lived) = setup().await?;
    let mut client = open_client(&broker, Tune::default()).await?;
    client.send(&publish_frame(1)).await;
    client.send(&raw::content_header_frame(1, 5)).await;
    client.send(&raw::frame(raw::FRAME_BODY, 1, b"0123456789")).await;
    let outcome = client.expect_close().await?;
    assert_connection_closed(&outcome, &[505, 501], "10-byte body after a 5-byte header");
    assert_still_serving(&mut broker, &long_lived, "body longer than header").await?;
    // And nothing of it was enqueued.
    let conn = connect(&broker.amqp_uri()).await?;
    let ch = within("channel.open", conn.create_channel()).await?;
    assert_eq!(amqp::message_count(&ch, "canary").await?, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_field_table_or_short_string_that_lies_about_its_length_closes_the_connection() -> anyhow::Result<()> {
    let (mut broker, long_lived) = setup().await?;
    // The arguments table claims 1000 bytes; the frame holds 2.
    let lying_table = Args::new()
        .u16(0)
        .shortstr("q")
        .bits(&[false; 5])
        .u32(1000)
        .bytes(&[1, b'a'])
        .build();
    // A short string claiming 200 bytes with 3 present.
    let lying_shortstr = Args::new().u16(0).u8(200).bytes(b"abc").build();
    // A table entry with a field type that does not exist.
    let bad_type = Args::new()
        .u16(0)
        .shortstr("q")
        .bits(&[false; 5])
        .table(&Args::new().shortstr("k").u8(b'Z').u32(0).build())
        .build();
    for (case, args) in [
        ("field table longer than the frame", lying_table),
        ("short string longer than the frame", lying_shortstr),
        ("field value of unknown type 'Z'", bad_type),
    ] {
        let mut client = open_client(&broker, Tune::default()).await?;
        client.send(&raw::method_frame(1, ids::QUEUE_DECLARE, &args)).await;
        let outcome = client.expect_close().await?;
        assert_connection_closed(&outcome, &[502, 501], case);
        assert_still_serving(&mut broker, &long_lived, case).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_16_mib_limit_is_refused_with_406() -> anyhow::Result<()> {
    let (mut broker, long_lived) = setup().await?;
    let mut client = open_client(&broker, Tune::default()).await?;
    client.send(&publish_frame(1)).await;
    // Declare 17 MiB; no need to send it.
    client.send(&raw::content_header_frame(1, 17 * 1024 * 1024)).await;
    let outcome = client.expect_close().await?;
    // RabbitMQ: channel.close 406 PRECONDITION_FAILED "message size … is larger than configured max size …".
    let close = match &outcome {
        Outcome::Closed(close) => close.clone(),
        Outcome::Eof => panic!("17 MiB message: socket dropped without a close method"),
    };
    assert_eq!(close.code, 406, "PRECONDITION_FAILED expected, got {close:?}");
    assert!(!close.text.is_empty());
    if !close.connection {
        // Only the channel is gone: the connection still opens new channels.
        client.open_channel(2).await?;
    }
    assert_still_serving(&mut broker, &long_lived, "17 MiB message").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_on_a_non_zero_channel_closes_the_connection() -> anyhow::Result<()> {
    let (mut broker, long_lived) = setup().await?;
    let mut client = open_client(&broker, Tune::default()).await?;
    client.send(&raw::frame(raw::FRAME_HEARTBEAT, 1, &[])).await;
    let outcome = client.expect_close().await?;
    assert_connection_closed(&outcome, &[501, 503, 505], "heartbeat on channel 1");
    assert_still_serving(&mut broker, &long_lived, "heartbeat on channel 1").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_method_on_a_channel_closes_the_connection_with_503() -> anyhow::Result<()> {
    let (mut broker, long_lived) = setup().await?;
    let mut client = open_client(&broker, Tune::default()).await?;
    let open = Args::new().shortstr("/").shortstr("").u8(0).build();
    client.send(&raw::method_frame(1, ids::CONNECTION_OPEN, &open)).await;
    let outcome = client.expect_close().await?;
    assert_connection_closed(&outcome, &[503, 504], "connection.open on channel 1");
    assert_still_serving(&mut broker, &long_lived, "connection method on channel 1").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_garbage_connections_does_not_take_the_node_down() -> anyhow::Result<()> {
    let (mut broker, long_lived) = setup().await?;
    let mut seed: u64 = 0x5eed_1234_abcd_0001;
    println!("garbage seed {seed:#x}");
    for round in 0..20 {
        let mut client = RawClient::connect(broker.amqp_addr()).await?;
        if round % 2 == 1 {
            client.handshake(Tune::default()).await?;
        }
        let mut garbage = vec![0u8; 64 + round * 13];
        for byte in &mut garbage {
            // xorshift64: deterministic, printed seed above.
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *byte = (seed & 0xff) as u8;
        }
        client.send(&garbage).await;
        client.read_timeout = std::time::Duration::from_secs(3);
        // Whatever it answers, it must not hang for ever or die.
        let _ = client.expect_close().await;
    }
    assert_still_serving(&mut broker, &long_lived, "garbage flood").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_over_255_bytes_from_arguments_never_take_the_node_down() -> anyhow::Result<()> {
    use lapin::options::{BasicRejectOptions, QueueDeclareOptions};
    let (mut broker, long_lived) = setup().await?;
    let long_name = "k".repeat(300);
    let conn = connect(&broker.amqp_uri()).await?;
    let ch = within("channel.open", conn.create_channel()).await?;
    within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await?;
    amqp::exchange(&ch, "dlx", lapin::ExchangeKind::Fanout).await?;
    plain_queue(&ch, "dlq").await?;
    amqp::bind(&ch, "dlq", "dlx", "").await?;
    // A dead-letter routing key that cannot be a short string: RabbitMQ
    // accepts the declare; dead-lettering must then not crash anything.
    let args = amqp::table([
        ("x-dead-letter-exchange", amqp::longstr("dlx")),
        ("x-dead-letter-routing-key", amqp::longstr(&long_name)),
    ]);
    let declared = ch
        .queue_declare("src".into(), QueueDeclareOptions::default(), args)
        .await;
    if declared.is_ok() {
        amqp::publish(&ch, "", "src", b"x").await?;
        if let Some(m) = amqp::get_unacked(&ch, "src").await? {
            let _ = ch
                .basic_reject(m.delivery.delivery_tag, BasicRejectOptions { requeue: false })
                .await;
        }
    } else {
        let code = declared.as_ref().err().and_then(warren_e2e::reply_code);
        assert_eq!(
            code,
            Some(406),
            "a refused declare is PRECONDITION_FAILED: {declared:?}"
        );
    }
    // An alternate-exchange name over 255 bytes likewise.
    let ch = within("channel.open", conn.create_channel()).await?;
    let _ = ch
        .exchange_declare(
            "with-long-ae".into(),
            lapin::ExchangeKind::Direct,
            Default::default(),
            amqp::table([("alternate-exchange", amqp::longstr(&long_name))]),
        )
        .await;
    let _ = ch
        .basic_publish(
            "with-long-ae".into(),
            "nowhere".into(),
            Default::default(),
            b"x",
            Default::default(),
        )
        .await;
    assert_still_serving(&mut broker, &long_lived, "names over 255 bytes").await?;
    Ok(())
}
