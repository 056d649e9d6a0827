//! Connection negotiation against the real binary: the protocol header,
//! SASL PLAIN and AMQPLAIN, refused logins, tune (heartbeat, frame_max,
//! channel_max), vhosts and close.

use std::time::Duration;

use lapin::{options::QueueDeclareOptions, types::FieldTable, BasicProperties, Connection, ConnectionProperties};
use warren_e2e::{
    amqp::{self, plain_queue},
    connect, expect_reply_code,
    raw::{self, ids, Args, Outcome, RawClient, Tune},
    reply_code, start_broker, within, STEP_TIMEOUT,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_login_as_guest_opens_a_connection_and_a_channel() -> anyhow::Result<()> {
    let broker = start_broker().await?;
    let conn = connect(&broker.amqp_uri()).await?;
    assert!(conn.status().connected());
    let ch = within("channel.open", conn.create_channel()).await?;
    plain_queue(&ch, "hello").await?;
    amqp::publish(&ch, "", "hello", b"hi").await?;
    let got = amqp::get(&ch, "hello").await?.expect("the message is there");
    assert_eq!(got.delivery.data, b"hi");
    within("connection.close", conn.close(200, "bye".into())).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqplain_login_as_guest_is_accepted() -> anyhow::Result<()> {
    let broker = start_broker().await?;
    let conn = connect(&broker.amqp_uri_with("auth_mechanism=amqplain")).await?;
    let ch = within("channel.open", conn.create_channel()).await?;
    plain_queue(&ch, "amqplain").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_refused_with_access_refused_403() -> anyhow::Result<()> {
    let broker = start_broker().await?;
    let uri = format!("amqp://guest:not-the-password@127.0.0.1:{}/%2f", broker.amqp_port());
    let result = tokio::time::timeout(STEP_TIMEOUT, Connection::connect(&uri, ConnectionProperties::default()))
        .await
        .map_err(|_| anyhow::anyhow!("login with a wrong password hung instead of being refused"))?;
    expect_reply_code(result.map(|_| ()), 403, "login with a wrong password")?;
    // The node still serves correct logins.
    connect(&broker.amqp_uri()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_user_is_refused_with_access_refused_403() -> anyhow::Result<()> {
    let broker = start_broker().await?;
    let uri = format!("amqp://nobody:guest@127.0.0.1:{}/%2f", broker.amqp_port());
    let result = tokio::time::timeout(STEP_TIMEOUT, Connection::connect(&uri, ConnectionProperties::default()))
        .await
        .map_err(|_| anyhow::anyhow!("login as an unknown user hung"))?;
    expect_reply_code(result.map(|_| ()), 403, "login as an unknown user")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_protocol_header_gets_the_0_9_1_header_back_and_the_socket_closes() -> anyhow::Result<()> {
    let broker = start_broker().await?;
    for bad in [
        &b"AMQP\x00\x00\x08\x00"[..],
        b"AMQP\x01\x01\x00\x0a",
        b"GET / HTTP/1.1\r\n\r\n",
    ] {
        let mut client = RawClient::connect(broker.amqp_addr()).await?;
        client.send(bad).await;
        let reply = client.read_exact_raw(8).await?;
        assert_eq!(reply, raw::PROTOCOL_HEADER, "reply to header {bad:?}");
        assert!(
            client.closes_socket().await,
            "socket must close after a wrong header {bad:?}"
        );
    }
    connect(&broker.amqp_uri()).await?;
    Ok(())
}

/// `shortstr(key) 't' 1` inside an encoded table: the capability is advertised as true.
fn advertises_true(table_bytes: &[u8], key: &str) -> bool {
    let needle = Args::new().shortstr(key).u8(b't').u8(1).build();
    table_bytes.windows(needle.len()).any(|w| w == needle.as_slice())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_start_offers_plain_and_amqplain_and_rabbitmq_capabilities() -> anyhow::Result<()> {
    let broker = start_broker().await?;
    let mut client = RawClient::connect(broker.amqp_addr()).await?;
    client.send(raw::PROTOCOL_HEADER).await;
    let start = client.expect_method(ids::CONNECTION_START).await?;
    let args = start.method_args();
    assert_eq!(&args[..2], &[0, 9], "version-major 0, version-minor 9");
    let table_len = u32::from_be_bytes([args[2], args[3], args[4], args[5]]) as usize;
    let table = &args[6..6 + table_len];
    assert_eq!(
        raw::start_mechanisms(&start),
        ["PLAIN", "AMQPLAIN"],
        "RabbitMQ's defaults, in order"
    );
    for capability in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "authentication_failure_close",
        "per_consumer_qos",
    ] {
        assert!(
            advertises_true(table, capability),
            "server-properties must advertise {capability}=true"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_is_negotiated_to_the_lower_of_client_and_server_values() -> anyhow::Result<()> {
    let broker = start_broker().await?;
    let mut client = RawClient::open(broker.amqp_addr(), Tune::default()).await?;
    let server = client.server_tune.expect("tune seen");
    assert!(
        server.heartbeat > 0,
        "RabbitMQ proposes a heartbeat (60 s by default), got {server:?}"
    );
    client
        .send(&raw::method_frame(
            0,
            ids::CONNECTION_CLOSE,
            &Args::new().u16(200).shortstr("bye").u16(0).u16(0).build(),
        ))
        .await;
    client.expect_method(ids::CONNECTION_CLOSE_OK).await?;

    let conn = connect(&broker.amqp_uri_with("heartbeat=5")).await?;
    assert_eq!(conn.configuration().heartbeat(), 5.min(server.heartbeat));
    let ch = within("channel.open", conn.create_channel()).await?;
    plain_queue(&ch, "hb").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sends_heartbeats_and_closes_a_silent_client() -> anyhow::Result<()> {
    let broker = start_broker().await?;
    let mut client = RawClient::open(
        broker.amqp_addr(),
        Tune {
            heartbeat: 1,
            ..Tune::default()
        },
    )
    .await?;
    // Say nothing more. The server must send heartbeats, then give up on us.
    client.read_timeout = Duration::from_secs(30);
    let mut heartbeats = 0;
    let ended = loop {
        match client.read_any_frame().await {
            Ok(Some(frame)) if frame.kind == raw::FRAME_HEARTBEAT => {
                assert_eq!(frame.channel, 0, "heartbeats travel on channel 0");
                heartbeats += 1;
            }
            Ok(Some(frame)) => {
                if raw::parse_close(&frame).is_some() {
                    break "connection.close";
                }
            }
            Ok(None) => break "EOF",
            Err(e) => anyhow::bail!("server neither sent heartbeats nor closed a silent connection: {e:#}"),
        }
    };
    assert!(
        heartbeats >= 1,
        "expected at least one heartbeat before the close ({ended})"
    );
    // Other connections are unaffected.
    connect(&broker.amqp_uri()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_frame_max_is_honoured_when_the_server_sends_a_large_body() -> anyhow::Result<()> {
    let broker = start_broker().await?;
    let conn = connect(&broker.amqp_uri()).await?;
    let ch = within("channel.open", conn.create_channel()).await?;
    plain_queue(&ch, "big").await?;
    let body: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    amqp::publish(&ch, "", "big", &body).await?;
    // Without confirms the publish returns before it is applied: the
    // passive declare after it on the same channel is answered only once
    // it is (a get racing it could find the queue empty).
    assert_eq!(amqp::message_count(&ch, "big").await?, 1);

    let frame_max = 4096u32;
    let mut client = RawClient::open(
        broker.amqp_addr(),
        Tune {
            frame_max,
            ..Tune::default()
        },
    )
    .await?;
    client.open_channel(1).await?;
    client
        .send(&raw::method_frame(
            1,
            ids::BASIC_GET,
            &Args::new().u16(0).shortstr("big").bits(&[true]).build(),
        ))
        .await;
    let get_ok = client.expect_method(ids::BASIC_GET_OK).await?;
    assert!(get_ok.wire_size() <= frame_max as usize);
    let header = client.read_frame().await?.expect("content header");
    assert_eq!(header.kind, raw::FRAME_HEADER);
    let size = u64::from_be_bytes(header.payload[4..12].try_into()?);
    assert_eq!(size, body.len() as u64);
    let mut received = Vec::new();
    let mut body_frames = 0;
    while received.len() < body.len() {
        let frame = client.read_frame().await?.expect("body frame");
        assert_eq!(
            frame.kind,
            raw::FRAME_BODY,
            "only body frames until the body is complete"
        );
        assert!(
            frame.wire_size() <= frame_max as usize,
            "a {}-byte frame exceeds the negotiated frame_max {frame_max}",
            frame.wire_size()
        );
        body_frames += 1;
        received.extend_from_slice(&frame.payload);
    }
    assert_eq!(received, body);
    assert!(
        body_frames >= 5,
        "20000 bytes in frames of at most 4096 need at least 5 frames, got {body_frames}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_message_round_trips_through_a_client_with_a_small_frame_max() -> anyhow::Result<()> {
    let broker = start_broker().await?;
    let conn = connect(&broker.amqp_uri_with("frame_max=4096")).await?;
    assert_eq!(conn.configuration().frame_max(), 4096);
    let ch = within("channel.open", conn.create_channel()).await?;
    plain_queue(&ch, "big").await?;
    let body: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    amqp::publish_with(&ch, "", "big", &body, BasicProperties::default(), false).await?;
    let got = amqp::get(&ch, "big").await?.expect("message");
    assert_eq!(got.delivery.data.len(), body.len());
    assert!(got.delivery.data == body, "body changed in transit");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_max_is_negotiated_and_a_channel_above_it_closes_the_connection() -> anyhow::Result<()> {
    let broker = start_broker().await?;
    let conn = connect(&broker.amqp_uri_with("channel_max=2")).await?;
    assert_eq!(conn.configuration().channel_max(), 2);
    drop(conn);

    let mut client = RawClient::open(
        broker.amqp_addr(),
        Tune {
            channel_max: 2,
            ..Tune::default()
        },
    )
    .await?;
    client.open_channel(1).await?;
    client.open_channel(2).await?;
    client
        .send(&raw::method_frame(
            3,
            ids::CHANNEL_OPEN,
            &Args::new().shortstr("").build(),
        ))
        .await;
    match client.expect_close().await? {
        Outcome::Closed(close) => {
            assert!(
                close.connection,
                "exceeding channel_max is a connection error: {close:?}"
            );
            assert_eq!(close.code, 530, "NOT_ALLOWED, as RabbitMQ: {close:?}");
        }
        Outcome::Eof => anyhow::bail!("server dropped the socket without connection.close"),
    }
    connect(&broker.amqp_uri()).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_an_unknown_vhost_is_refused_with_530() -> anyhow::Result<()> {
    let broker = start_broker().await?;
    let uri = format!("amqp://guest:guest@127.0.0.1:{}/no-such-vhost", broker.amqp_port());
    let result = tokio::time::timeout(STEP_TIMEOUT, Connection::connect(&uri, ConnectionProperties::default()))
        .await
        .map_err(|_| anyhow::anyhow!("opening an unknown vhost hung"))?;
    let err = result.expect_err("an unknown vhost must be refused");
    assert_eq!(reply_code(&err), Some(530), "NOT_ALLOWED, got {err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_connection_close_is_answered_with_close_ok() -> anyhow::Result<()> {
    let broker = start_broker().await?;
    let mut client = RawClient::open(broker.amqp_addr(), Tune::default()).await?;
    client.open_channel(1).await?;
    client
        .send(&raw::method_frame(
            0,
            ids::CONNECTION_CLOSE,
            &Args::new().u16(200).shortstr("bye").u16(0).u16(0).build(),
        ))
        .await;
    client.expect_method(ids::CONNECTION_CLOSE_OK).await?;
    assert!(client.closes_socket().await, "socket closes after close-ok");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_connection_closes_its_channels_and_requeues_unacked_messages() -> anyhow::Result<()> {
    let broker = start_broker().await?;
    let conn = connect(&broker.amqp_uri()).await?;
    let ch = within("channel.open", conn.create_channel()).await?;
    plain_queue(&ch, "q").await?;
    amqp::publish(&ch, "", "q", b"m").await?;
    let got = amqp::get_unacked(&ch, "q").await?.expect("message");
    assert!(!got.delivery.redelivered);
    within("connection.close", conn.close(200, "bye".into())).await?;

    let conn = connect(&broker.amqp_uri()).await?;
    let ch = within("channel.open", conn.create_channel()).await?;
    let q = amqp::declare_queue(
        &ch,
        "q",
        QueueDeclareOptions {
            passive: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    assert_eq!(q.message_count(), 1);
    let again = amqp::get(&ch, "q").await?.expect("requeued message");
    assert!(
        again.delivery.redelivered,
        "a message requeued by a connection close is redelivered=true"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tune_ok_with_a_frame_max_below_4096_or_above_the_servers_is_refused_with_530() -> anyhow::Result<()> {
    let broker = start_broker().await?;
    let server_frame_max = {
        let client = RawClient::open(broker.amqp_addr(), Tune::default()).await?;
        client.server_tune.expect("tune").frame_max
    };
    for frame_max in [1000, server_frame_max.saturating_add(1)] {
        let mut client = RawClient::connect(broker.amqp_addr()).await?;
        let result = client
            .handshake(Tune {
                frame_max,
                ..Tune::default()
            })
            .await;
        assert!(result.is_err(), "frame_max {frame_max} must not be accepted");
        // handshake() stops at the close; read what follows if it was not consumed.
        let message = format!("{:#}", result.expect_err("checked"));
        assert!(
            message.contains("code: 530"),
            "frame_max {frame_max}: expected a 530 NOT_ALLOWED close, got {message}"
        );
    }
    connect(&broker.amqp_uri()).await?;
    Ok(())
}

/// Messages the memory-alarm tests publish (1 KiB each): far more than the
/// broker takes in one 100 ms check of the alarm.
const ALARM_MESSAGES: usize = 6000;

/// A memory high-watermark of 64 KiB: about 40 queued 1 KiB messages.
const SMALL_WATERMARK: &str = "queued_bytes_high_watermark = 65536\n";

// The memory high-watermark, as RabbitMQ's memory alarm: a lapin publisher
// (which asks for the `connection.blocked` capability) that fills a queue
// past `queued_bytes_high_watermark` is sent connection.blocked; a consumer
// on another connection drains the queue, the publisher is sent
// connection.unblocked, and every message is confirmed and delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_over_the_memory_high_watermark_is_blocked_until_a_consumer_drains_the_queue() -> anyhow::Result<()>
{
    use lapin::options::ConfirmSelectOptions;

    let broker = warren_e2e::start_broker_with_config(SMALL_WATERMARK).await?;
    let publisher = connect(&broker.amqp_uri()).await?;
    let ch = within("channel.open", publisher.create_channel()).await?;
    plain_queue(&ch, "alarm").await?;
    within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await?;
    // lapin stops writing while blocked, so a publish waits: publish from a
    // task and collect the confirms at the end.
    let publishing = tokio::spawn(async move {
        let body = vec![b'x'; 1024];
        let mut confirms = Vec::with_capacity(ALARM_MESSAGES);
        for _ in 0..ALARM_MESSAGES {
            let confirm = ch
                .basic_publish(
                    "".into(),
                    "alarm".into(),
                    Default::default(),
                    &body,
                    BasicProperties::default(),
                )
                .await?;
            confirms.push(confirm);
        }
        Ok::<_, lapin::Error>(confirms)
    });
    warren_e2e::eventually("connection.blocked", Duration::from_secs(20), || async {
        Ok(publisher.status().blocked().then_some(()))
    })
    .await?;

    let observer = connect(&broker.amqp_uri()).await?;
    let och = within("channel.open", observer.create_channel()).await?;
    drain(&och, "alarm", ALARM_MESSAGES).await?;
    let confirms = tokio::time::timeout(STEP_TIMEOUT, publishing)
        .await
        .map_err(|_| anyhow::anyhow!("the publisher was not unblocked"))???;
    for confirm in confirms {
        assert!(within("publisher confirm", confirm).await?.is_ack());
    }
    warren_e2e::eventually("connection.unblocked", Duration::from_secs(10), || async {
        Ok((!publisher.status().blocked()).then_some(()))
    })
    .await?;
    assert_eq!(
        amqp::message_count(&och, "alarm").await?,
        0,
        "every message was delivered once"
    );
    assert!(
        broker.log_tail(2000).contains("memory alarm set"),
        "the broker logs the alarm"
    );
    within("connection.close", publisher.close(200, "bye".into())).await?;
    within("connection.close", observer.close(200, "bye".into())).await?;
    Ok(())
}

// The same alarm holds a publisher that did not ask for connection.blocked
// (a raw client with no capabilities): the broker stops reading its socket,
// so the queue stops growing short of what the client wrote (the rest waits
// in socket buffers), until a consumer drains it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_alarm_stops_reading_from_a_publisher_that_ignores_connection_blocked() -> anyhow::Result<()> {
    const MESSAGES: usize = 3 * ALARM_MESSAGES;
    let broker = warren_e2e::start_broker_with_config(SMALL_WATERMARK).await?;
    let observer = connect(&broker.amqp_uri()).await?;
    let och = within("channel.open", observer.create_channel()).await?;
    plain_queue(&och, "raw-alarm").await?;

    let mut client = RawClient::open(broker.amqp_addr(), Tune::default()).await?;
    client.open_channel(1).await?;
    let mut bytes = Vec::new();
    for _ in 0..MESSAGES {
        bytes.extend(raw::publish_frames(1, "raw-alarm", &[b'y'; 1024]));
    }
    let writing = tokio::spawn(async move {
        client.send(&bytes).await;
        client
    });
    // Once the broker stops taking publishes the count stays put.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut last = amqp::message_count(&och, "raw-alarm").await?;
    let held_at = loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = amqp::message_count(&och, "raw-alarm").await?;
        if now == last && now > 0 {
            break now;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the queue kept growing ({now} queued)"
        );
        last = now;
    };
    assert!(
        (held_at as usize) < MESSAGES,
        "the broker stopped reading before all {MESSAGES} publishes ({held_at} queued)"
    );

    drain(&och, "raw-alarm", MESSAGES).await?;
    let mut client = tokio::time::timeout(STEP_TIMEOUT, writing)
        .await
        .map_err(|_| anyhow::anyhow!("the broker did not read again after the drain"))??;
    assert_eq!(amqp::message_count(&och, "raw-alarm").await?, 0);
    // Not asked for, so not sent: the first frame back is the close-ok.
    client
        .send(&raw::method_frame(
            0,
            ids::CONNECTION_CLOSE,
            &Args::new().u16(200).shortstr("bye").u16(0).u16(0).build(),
        ))
        .await;
    let reply = client.read_frame().await?.expect("a frame after connection.close");
    assert_eq!(
        reply.method_id(),
        Some(ids::CONNECTION_CLOSE_OK),
        "no connection.blocked for a client that did not ask"
    );
    within("connection.close", observer.close(200, "bye".into())).await?;
    Ok(())
}

/// Consumes and acks `expected` messages of `queue` on `ch`.
async fn drain(ch: &lapin::Channel, queue: &str, expected: usize) -> anyhow::Result<()> {
    use futures_lite::StreamExt;
    use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
    within("basic.qos", ch.basic_qos(200, BasicQosOptions::default())).await?;
    let mut consumer = within(
        "basic.consume",
        ch.basic_consume(
            queue.into(),
            "drain".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    for received in 0..expected {
        let next = tokio::time::timeout(STEP_TIMEOUT, consumer.next())
            .await
            .map_err(|_| anyhow::anyhow!("no delivery within {STEP_TIMEOUT:?} after {received}"))?;
        let delivery = next.ok_or_else(|| anyhow::anyhow!("consumer ended after {received}"))??;
        within("basic.ack", delivery.ack(BasicAckOptions::default())).await?;
    }
    Ok(())
}

// Issue 9: the memory alarm counts bodies still being received, not only
// queued messages. A raw client declares a 1 MiB publish and sends 200 KiB
// of it, past the 64 KiB watermark while no queue holds anything: a lapin
// publisher on another connection is blocked; when the raw client goes,
// its partial body goes with it and the publisher is unblocked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_still_being_received_counts_toward_the_memory_alarm() -> anyhow::Result<()> {
    let broker = warren_e2e::start_broker_with_config(SMALL_WATERMARK).await?;
    let publisher = connect(&broker.amqp_uri()).await?;
    let ch = within("channel.open", publisher.create_channel()).await?;
    plain_queue(&ch, "partial").await?;
    // The publisher has published, so the alarm concerns it.
    amqp::publish(&ch, "", "partial", b"first").await?;

    let mut client = RawClient::open(broker.amqp_addr(), Tune::default()).await?;
    client.open_channel(1).await?;
    let mut bytes = raw::method_frame(1, ids::BASIC_PUBLISH, &raw::basic_publish_args("", "partial", false));
    bytes.extend(raw::content_header_frame(1, 1 << 20));
    for _ in 0..2 {
        bytes.extend(raw::frame(3, 1, &[b'p'; 100 * 1024]));
    }
    client.send(&bytes).await;

    warren_e2e::eventually(
        "connection.blocked by a partly received body",
        Duration::from_secs(20),
        || async { Ok(publisher.status().blocked().then_some(())) },
    )
    .await?;
    // A consumer-only connection is not blocked: it sees nothing more queued.
    let observer = connect(&broker.amqp_uri()).await?;
    let och = within("channel.open", observer.create_channel()).await?;
    assert_eq!(amqp::message_count(&och, "partial").await?, 1, "nothing more is queued");
    drop(client);
    warren_e2e::eventually(
        "connection.unblocked once the body is gone",
        Duration::from_secs(20),
        || async { Ok((!publisher.status().blocked()).then_some(())) },
    )
    .await?;
    let log = broker.log_tail(2000);
    assert!(
        log.contains("memory alarm set") && log.contains("memory alarm cleared"),
        "{log}"
    );
    within("connection.close", publisher.close(200, "bye".into())).await?;
    within("connection.close", observer.close(200, "bye".into())).await?;
    Ok(())
}
