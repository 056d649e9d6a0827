//! The RabbitMQ tutorial flows again, from Rust with lapin.

use lapin::{
    options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions},
    types::FieldTable,
    BasicProperties, Channel, Connection, Consumer, ExchangeKind,
};
use warren_e2e::{
    amqp::{self, bind, declare_queue},
    broker_with_channel, connect, expect_no_delivery, next_delivery, within, WarrenProcess,
};

async fn consumer(ch: &Channel, queue: &str, no_ack: bool) -> anyhow::Result<Consumer> {
    within(
        "basic.consume",
        ch.basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions {
                no_ack,
                ..Default::default()
            },
            FieldTable::default(),
        ),
    )
    .await
}

async fn exclusive_queue(ch: &Channel) -> anyhow::Result<String> {
    let q = declare_queue(ch, "", QueueDeclareOptions::exclusive(), FieldTable::default()).await?;
    Ok(q.name().as_str().to_string())
}

async fn confirm(conn: &Connection) -> anyhow::Result<Channel> {
    let ch = within("channel.open", conn.create_channel()).await?;
    within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await?;
    Ok(ch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapin_hello_world_goes_through_the_default_exchange() -> anyhow::Result<()> {
    let (_broker, conn, ch) = broker_with_channel().await?;
    amqp::plain_queue(&ch, "hello").await?;
    amqp::publish(&ch, "", "hello", b"Hello World!").await?;
    let receiver = within("channel.open", conn.create_channel()).await?;
    let mut c = consumer(&receiver, "hello", true).await?;
    let d = next_delivery(&mut c).await?;
    assert_eq!(d.data, b"Hello World!");
    assert_eq!(d.routing_key.as_str(), "hello");
    assert!(!d.redelivered);
    Ok(())
}

async fn worker(broker: &WarrenProcess) -> anyhow::Result<(Connection, Consumer)> {
    let conn = connect(&broker.amqp_uri()).await?;
    let ch = within("channel.open", conn.create_channel()).await?;
    declare_queue(&ch, "task_queue", QueueDeclareOptions::durable(), FieldTable::default()).await?;
    within("basic.qos", ch.basic_qos(1, BasicQosOptions::default())).await?;
    let c = consumer(&ch, "task_queue", false).await?;
    Ok((conn, c))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapin_work_queue_shares_fairly_and_redelivers_a_dead_workers_task() -> anyhow::Result<()> {
    let (broker, conn, _ch) = broker_with_channel().await?;
    let producer = confirm(&conn).await?;
    declare_queue(
        &producer,
        "task_queue",
        QueueDeclareOptions::durable(),
        FieldTable::default(),
    )
    .await?;
    let persistent = || BasicProperties::default().with_delivery_mode(2);

    let (conn_a, mut a) = worker(&broker).await?;
    let (conn_b, mut b) = worker(&broker).await?;

    // The first task goes to one of them; that worker keeps it unacked.
    amqp::publish_with(&producer, "", "task_queue", b"long task", persistent(), false).await?;
    let (held, busy_is_a) = tokio::select! {
        d = next_delivery(&mut a) => (d?, true),
        d = next_delivery(&mut b) => (d?, false),
    };
    assert_eq!(held.properties.delivery_mode(), &Some(2));
    let ((busy_conn, mut busy), (_free_conn, mut free)) = if busy_is_a {
        ((conn_a, a), (conn_b, b))
    } else {
        ((conn_b, b), (conn_a, a))
    };

    // With prefetch 1 the busy worker gets nothing more; the free one gets all.
    for i in 0..5 {
        amqp::publish_with(
            &producer,
            "",
            "task_queue",
            format!("task {i}").as_bytes(),
            persistent(),
            false,
        )
        .await?;
    }
    for i in 0..5 {
        let d = next_delivery(&mut free).await?;
        assert_eq!(amqp::text(&d.data), format!("task {i}"));
        within("ack", d.acker.ack(BasicAckOptions::default())).await?;
    }
    expect_no_delivery(&mut busy, std::time::Duration::from_millis(500)).await?;

    // The busy worker dies without acking: its task goes to the other one.
    drop(held);
    within("close the busy worker", busy_conn.close(320, "worker died".into())).await?;
    let d = next_delivery(&mut free).await?;
    assert_eq!(d.data, b"long task");
    assert!(d.redelivered, "a task of a dead worker is redelivered=true");
    within("ack", d.acker.ack(BasicAckOptions::default())).await?;
    assert_eq!(amqp::message_count(&producer, "task_queue").await?, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapin_publish_subscribe_fans_out_to_every_subscriber() -> anyhow::Result<()> {
    let (_broker, conn, ch) = broker_with_channel().await?;
    amqp::exchange(&ch, "logs", ExchangeKind::Fanout).await?;
    let mut subscribers = Vec::new();
    for _ in 0..3 {
        let sub = within("channel.open", conn.create_channel()).await?;
        let q = exclusive_queue(&sub).await?;
        assert!(q.starts_with("amq.gen-"));
        bind(&sub, &q, "logs", "").await?;
        subscribers.push(consumer(&sub, &q, true).await?);
    }
    let publisher = confirm(&conn).await?;
    for msg in ["one", "two"] {
        amqp::publish(&publisher, "logs", "", msg.as_bytes()).await?;
    }
    for sub in &mut subscribers {
        for msg in ["one", "two"] {
            assert_eq!(next_delivery(sub).await?.data, msg.as_bytes());
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapin_routing_delivers_by_severity_through_a_direct_exchange() -> anyhow::Result<()> {
    let (_broker, conn, ch) = broker_with_channel().await?;
    amqp::exchange(&ch, "direct_logs", ExchangeKind::Direct).await?;
    let errors = exclusive_queue(&ch).await?;
    bind(&ch, &errors, "direct_logs", "error").await?;
    let all = exclusive_queue(&ch).await?;
    for severity in ["info", "warning", "error"] {
        bind(&ch, &all, "direct_logs", severity).await?;
    }
    let publisher = confirm(&conn).await?;
    for (severity, msg) in [("info", "i"), ("error", "e"), ("debug", "d"), ("warning", "w")] {
        amqp::publish(&publisher, "direct_logs", severity, msg.as_bytes()).await?;
    }
    assert_eq!(amqp::drain(&ch, &errors).await?, ["e"]);
    assert_eq!(amqp::drain(&ch, &all).await?, ["i", "e", "w"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapin_topics_match_star_and_hash_patterns() -> anyhow::Result<()> {
    let (_broker, conn, ch) = broker_with_channel().await?;
    amqp::exchange(&ch, "topic_logs", ExchangeKind::Topic).await?;
    let q1 = exclusive_queue(&ch).await?;
    bind(&ch, &q1, "topic_logs", "*.orange.*").await?;
    let q2 = exclusive_queue(&ch).await?;
    bind(&ch, &q2, "topic_logs", "*.*.rabbit").await?;
    bind(&ch, &q2, "topic_logs", "lazy.#").await?;
    let publisher = confirm(&conn).await?;
    for key in [
        "quick.orange.rabbit",
        "lazy.orange.elephant",
        "quick.orange.fox",
        "lazy.brown.fox",
        "lazy.pink.rabbit",
        "quick.brown.fox",
        "lazy",
    ] {
        amqp::publish(&publisher, "topic_logs", key, key.as_bytes()).await?;
    }
    assert_eq!(
        amqp::drain(&ch, &q1).await?,
        ["quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox"]
    );
    assert_eq!(
        amqp::drain(&ch, &q2).await?,
        [
            "quick.orange.rabbit",
            "lazy.orange.elephant",
            "lazy.brown.fox",
            "lazy.pink.rabbit",
            "lazy"
        ]
    );
    Ok(())
}

fn fib(n: u64) -> u64 {
    if n < 2 {
        n
    } else {
        fib(n - 1) + fib(n - 2)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapin_rpc_answers_on_an_exclusive_reply_queue_by_correlation_id() -> anyhow::Result<()> {
    let (broker, _conn, _ch) = broker_with_channel().await?;

    // Server.
    let server_conn = connect(&broker.amqp_uri()).await?;
    let server_ch = within("channel.open", server_conn.create_channel()).await?;
    amqp::plain_queue(&server_ch, "rpc_queue").await?;
    within("basic.qos", server_ch.basic_qos(1, BasicQosOptions::default())).await?;
    let mut requests = consumer(&server_ch, "rpc_queue", false).await?;
    let server = tokio::spawn(async move {
        let mut served = 0;
        while served < 4 {
            let req = next_delivery(&mut requests).await?;
            let n: u64 = amqp::text(&req.data).parse()?;
            let reply_to = req
                .properties
                .reply_to()
                .clone()
                .ok_or_else(|| anyhow::anyhow!("no reply_to"))?;
            let mut props = BasicProperties::default();
            if let Some(id) = req.properties.correlation_id() {
                props = props.with_correlation_id(id.clone());
            }
            amqp::publish_with(
                &server_ch,
                "",
                reply_to.as_str(),
                fib(n).to_string().as_bytes(),
                props,
                false,
            )
            .await?;
            req.acker.ack(BasicAckOptions::default()).await?;
            served += 1;
        }
        anyhow::Ok(())
    });

    // Client.
    let client_conn = connect(&broker.amqp_uri()).await?;
    let client = within("channel.open", client_conn.create_channel()).await?;
    let callback = exclusive_queue(&client).await?;
    assert!(callback.starts_with("amq.gen-"));
    let mut responses = consumer(&client, &callback, true).await?;
    for (i, (n, expected)) in [(0u64, 0u64), (1, 1), (10, 55), (20, 6765)].into_iter().enumerate() {
        let corr = format!("call-{i}");
        let props = BasicProperties::default()
            .with_reply_to(callback.as_str().into())
            .with_correlation_id(corr.as_str().into());
        amqp::publish_with(&client, "", "rpc_queue", n.to_string().as_bytes(), props, false).await?;
        let resp = next_delivery(&mut responses).await?;
        assert_eq!(
            resp.properties.correlation_id().as_ref().map(|s| s.as_str()),
            Some(corr.as_str())
        );
        assert_eq!(amqp::text(&resp.data), expected.to_string(), "fib({n})");
    }
    within("rpc server", async { server.await? }).await?;
    Ok(())
}
