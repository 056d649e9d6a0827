//! Exchanges: declare options, delete, exchange-to-exchange bindings, every
//! exchange type's routing rules, the pre-declared `amq.*` exchanges and the
//! default exchange — as RabbitMQ behaves.

use lapin::{
    options::{
        ConfirmSelectOptions, ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, ExchangeUnbindOptions,
    },
    types::{AMQPValue, FieldTable},
    BasicProperties, Channel, ExchangeKind,
};
use warren_e2e::{
    amqp::{self, bind, bind_args, exchange, exchange_exists, longstr, plain_queue, table},
    broker_with_channel, expect_reply_code, within,
};

/// A channel in confirm mode, so a publish is routed before the next get.
async fn confirm_channel(conn: &lapin::Connection) -> anyhow::Result<Channel> {
    let ch = within("channel.open", conn.create_channel()).await?;
    within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await?;
    Ok(ch)
}

/// Publishes one message and returns the queues (of `queues`) it reached.
async fn routed_with(
    ch: &Channel,
    exchange: &str,
    key: &str,
    properties: BasicProperties,
    queues: &[&str],
) -> anyhow::Result<Vec<String>> {
    let body = format!("{exchange}/{key}");
    let confirm = amqp::publish_with(ch, exchange, key, body.as_bytes(), properties, false).await?;
    assert!(confirm.is_ack(), "publish to {exchange}/{key} confirmed");
    let mut reached = Vec::new();
    for queue in queues {
        let bodies = amqp::drain(ch, queue).await?;
        assert!(
            bodies.len() <= 1,
            "{queue} got {bodies:?}: a message reaches a queue at most once"
        );
        if let Some(got) = bodies.first() {
            assert_eq!(got, &body);
            reached.push((*queue).to_string());
        }
    }
    Ok(reached)
}

async fn routed(ch: &Channel, exchange: &str, key: &str, queues: &[&str]) -> anyhow::Result<Vec<String>> {
    routed_with(ch, exchange, key, BasicProperties::default(), queues).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declare_is_idempotent_and_passive_declare_finds_only_existing_exchanges() -> anyhow::Result<()> {
    let (_broker, conn, ch) = broker_with_channel().await?;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for _ in 0..2 {
        within(
            "durable exchange.declare",
            ch.exchange_declare("logs".into(), ExchangeKind::Fanout, durable, FieldTable::default()),
        )
        .await?;
    }
    let auto = ExchangeDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    within(
        "auto-delete exchange.declare",
        ch.exchange_declare("tmp".into(), ExchangeKind::Direct, auto, FieldTable::default()),
    )
    .await?;
    let internal = ExchangeDeclareOptions {
        internal: true,
        durable: true,
        ..Default::default()
    };
    within(
        "internal exchange.declare",
        ch.exchange_declare("inner".into(), ExchangeKind::Topic, internal, FieldTable::default()),
    )
    .await?;

    assert!(exchange_exists(&conn, "logs").await?);
    assert!(exchange_exists(&conn, "tmp").await?);
    assert!(exchange_exists(&conn, "inner").await?);
    assert!(
        !exchange_exists(&conn, "never-declared").await?,
        "passive declare of a missing exchange is 404"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeclaring_an_exchange_with_another_type_or_durability_fails_with_406() -> anyhow::Result<()> {
    let (_broker, conn, ch) = broker_with_channel().await?;
    exchange(&ch, "x", ExchangeKind::Direct).await?;
    let result = ch
        .exchange_declare(
            "x".into(),
            ExchangeKind::Fanout,
            Default::default(),
            FieldTable::default(),
        )
        .await;
    expect_reply_code(result, 406, "redeclare direct exchange as fanout")?;

    let ch = within("channel.open", conn.create_channel()).await?;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    let result = ch
        .exchange_declare("x".into(), ExchangeKind::Direct, durable, FieldTable::default())
        .await;
    expect_reply_code(result, 406, "redeclare transient exchange as durable")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declaring_an_exchange_with_the_reserved_amq_prefix_is_refused_with_403() -> anyhow::Result<()> {
    let (_broker, _conn, ch) = broker_with_channel().await?;
    let result = ch
        .exchange_declare(
            "amq.mine".into(),
            ExchangeKind::Direct,
            Default::default(),
            FieldTable::default(),
        )
        .await;
    expect_reply_code(result, 403, "declare amq.mine")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_amq_exchanges_are_predeclared_with_their_types() -> anyhow::Result<()> {
    let (_broker, conn, ch) = broker_with_channel().await?;
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for (name, kind) in [
        ("amq.direct", ExchangeKind::Direct),
        ("amq.fanout", ExchangeKind::Fanout),
        ("amq.topic", ExchangeKind::Topic),
        ("amq.headers", ExchangeKind::Headers),
        ("amq.match", ExchangeKind::Headers),
    ] {
        assert!(exchange_exists(&conn, name).await?, "{name} is pre-declared");
        // RabbitMQ accepts a non-passive redeclare of amq.* with the same type and durability.
        within(
            &format!("redeclare {name}"),
            ch.exchange_declare(name.into(), kind, durable, FieldTable::default()),
        )
        .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_exchange_routes_by_queue_name_and_cannot_be_bound_or_deleted() -> anyhow::Result<()> {
    let (_broker, conn, _ch) = broker_with_channel().await?;
    let ch = confirm_channel(&conn).await?;
    plain_queue(&ch, "by-name").await?;
    plain_queue(&ch, "other").await?;
    assert_eq!(routed(&ch, "", "by-name", &["by-name", "other"]).await?, ["by-name"]);
    assert!(routed(&ch, "", "nobody", &["by-name", "other"]).await?.is_empty());

    let result = ch
        .queue_bind(
            "by-name".into(),
            "".into(),
            "k".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await;
    expect_reply_code(result, 403, "binding to the default exchange")?;
    let ch = within("channel.open", conn.create_channel()).await?;
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..ExchangeDeclareOptions::default()
    };
    let result = ch
        .exchange_declare("".into(), ExchangeKind::Direct, passive, FieldTable::default())
        .await;
    expect_reply_code(result, 403, "a passive declare of the default exchange")?;
    let ch = within("channel.open", conn.create_channel()).await?;
    let result = ch
        .exchange_delete("amq.direct".into(), ExchangeDeleteOptions::default())
        .await;
    expect_reply_code(result, 403, "deleting amq.direct")?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_exchange_routes_on_exact_routing_key_to_every_matching_binding() -> anyhow::Result<()> {
    let (_broker, conn, _ch) = broker_with_channel().await?;
    let ch = confirm_channel(&conn).await?;
    exchange(&ch, "direct_logs", ExchangeKind::Direct).await?;
    for q in ["errors", "all"] {
        plain_queue(&ch, q).await?;
    }
    bind(&ch, "errors", "direct_logs", "error").await?;
    for key in ["info", "warning", "error"] {
        bind(&ch, "all", "direct_logs", key).await?;
    }
    let queues = ["errors", "all"];
    assert_eq!(routed(&ch, "direct_logs", "error", &queues).await?, ["errors", "all"]);
    assert_eq!(routed(&ch, "direct_logs", "info", &queues).await?, ["all"]);
    assert!(routed(&ch, "direct_logs", "debug", &queues).await?.is_empty());
    assert!(
        routed(&ch, "direct_logs", "Error", &queues).await?.is_empty(),
        "keys are case-sensitive"
    );

    within(
        "queue.unbind",
        ch.queue_unbind("all".into(), "direct_logs".into(), "info".into(), FieldTable::default()),
    )
    .await?;
    assert!(
        routed(&ch, "direct_logs", "info", &queues).await?.is_empty(),
        "unbind stops routing"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fanout_exchange_ignores_the_routing_key_and_reaches_every_bound_queue() -> anyhow::Result<()> {
    let (_broker, conn, _ch) = broker_with_channel().await?;
    let ch = confirm_channel(&conn).await?;
    exchange(&ch, "logs", ExchangeKind::Fanout).await?;
    let queues = ["a", "b", "c"];
    for q in queues {
        plain_queue(&ch, q).await?;
    }
    bind(&ch, "a", "logs", "").await?;
    bind(&ch, "b", "logs", "whatever").await?;
    assert_eq!(routed(&ch, "logs", "anything", &queues).await?, ["a", "b"]);
    assert_eq!(routed(&ch, "amq.fanout", "x", &queues).await?, Vec::<String>::new());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_exchange_star_matches_one_word_and_hash_matches_zero_or_more() -> anyhow::Result<()> {
    let (_broker, conn, _ch) = broker_with_channel().await?;
    let ch = confirm_channel(&conn).await?;
    exchange(&ch, "topic_logs", ExchangeKind::Topic).await?;
    let bindings = [
        ("star_orange_star", "*.orange.*"),
        ("star_star_rabbit", "*.*.rabbit"),
        ("lazy_hash", "lazy.#"),
        ("everything", "#"),
        ("exact", "quick.orange.rabbit"),
        ("hash_middle", "a.#.z"),
    ];
    let queues: Vec<&str> = bindings.iter().map(|(q, _)| *q).collect();
    for (q, key) in bindings {
        plain_queue(&ch, q).await?;
        bind(&ch, q, "topic_logs", key).await?;
    }
    let cases: &[(&str, &[&str])] = &[
        (
            "quick.orange.rabbit",
            &["star_orange_star", "star_star_rabbit", "everything", "exact"],
        ),
        ("lazy.orange.elephant", &["star_orange_star", "lazy_hash", "everything"]),
        ("quick.orange.fox", &["star_orange_star", "everything"]),
        ("lazy.brown.fox", &["lazy_hash", "everything"]),
        ("lazy.pink.rabbit", &["star_star_rabbit", "lazy_hash", "everything"]),
        ("quick.brown.fox", &["everything"]),
        ("orange", &["everything"]),
        ("quick.orange.male.rabbit", &["everything"]),
        ("lazy.orange.male.rabbit", &["lazy_hash", "everything"]),
        ("lazy", &["lazy_hash", "everything"]),
        ("a.z", &["everything", "hash_middle"]),
        ("a.b.c.z", &["everything", "hash_middle"]),
        ("", &["everything"]),
    ];
    for (key, expected) in cases {
        let got = routed(&ch, "topic_logs", key, &queues).await?;
        let mut got_sorted = got.clone();
        got_sorted.sort();
        let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        expected.sort();
        assert_eq!(got_sorted, expected, "routing key {key:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_exchange_matches_all_or_any_of_the_binding_headers() -> anyhow::Result<()> {
    let (_broker, conn, _ch) = broker_with_channel().await?;
    let ch = confirm_channel(&conn).await?;
    exchange(&ch, "hdrs", ExchangeKind::Headers).await?;
    plain_queue(&ch, "all").await?;
    plain_queue(&ch, "any").await?;
    plain_queue(&ch, "default_all").await?;
    bind_args(
        &ch,
        "all",
        "hdrs",
        "",
        table([
            ("x-match", longstr("all")),
            ("format", longstr("pdf")),
            ("type", longstr("report")),
        ]),
    )
    .await?;
    bind_args(
        &ch,
        "any",
        "hdrs",
        "",
        table([
            ("x-match", longstr("any")),
            ("format", longstr("pdf")),
            ("type", longstr("report")),
        ]),
    )
    .await?;
    // x-match defaults to all.
    bind_args(
        &ch,
        "default_all",
        "hdrs",
        "",
        table([("format", longstr("pdf")), ("type", longstr("report"))]),
    )
    .await?;
    let queues = ["all", "any", "default_all"];
    let with = |h: FieldTable| BasicProperties::default().with_headers(h);

    let both = table([
        ("format", longstr("pdf")),
        ("type", longstr("report")),
        ("extra", longstr("y")),
    ]);
    assert_eq!(
        routed_with(&ch, "hdrs", "ignored", with(both), &queues).await?,
        ["all", "any", "default_all"]
    );
    let one = table([("format", longstr("pdf")), ("type", longstr("log"))]);
    assert_eq!(routed_with(&ch, "hdrs", "", with(one), &queues).await?, ["any"]);
    let none = table([("format", longstr("zip"))]);
    assert!(routed_with(&ch, "hdrs", "", with(none), &queues).await?.is_empty());
    assert!(routed_with(&ch, "hdrs", "", BasicProperties::default(), &queues)
        .await?
        .is_empty());
    // Values compare by type and value: a number is not the string "pdf".
    let wrong_type = table([("format", AMQPValue::LongLongInt(1)), ("type", longstr("report"))]);
    assert_eq!(routed_with(&ch, "hdrs", "", with(wrong_type), &queues).await?, ["any"]);
    // amq.match is a headers exchange too.
    bind_args(
        &ch,
        "all",
        "amq.match",
        "",
        table([("x-match", longstr("any")), ("k", longstr("v"))]),
    )
    .await?;
    assert_eq!(
        routed_with(&ch, "amq.match", "", with(table([("k", longstr("v"))])), &queues).await?,
        ["all"]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_to_exchange_bindings_route_through_both_exchanges() -> anyhow::Result<()> {
    let (_broker, conn, _ch) = broker_with_channel().await?;
    let ch = confirm_channel(&conn).await?;
    exchange(&ch, "upstream", ExchangeKind::Topic).await?;
    exchange(&ch, "downstream", ExchangeKind::Fanout).await?;
    plain_queue(&ch, "sink").await?;
    bind(&ch, "sink", "downstream", "").await?;
    within(
        "exchange.bind",
        ch.exchange_bind(
            "downstream".into(),
            "upstream".into(),
            "orders.*".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    assert_eq!(routed(&ch, "upstream", "orders.new", &["sink"]).await?, ["sink"]);
    assert!(routed(&ch, "upstream", "payments.new", &["sink"]).await?.is_empty());
    within(
        "exchange.unbind",
        ch.exchange_unbind(
            "downstream".into(),
            "upstream".into(),
            "orders.*".into(),
            ExchangeUnbindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    assert!(
        routed(&ch, "upstream", "orders.new", &["sink"]).await?.is_empty(),
        "unbind stops routing"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_delete_if_unused_refuses_while_bound_and_delete_removes_the_exchange() -> anyhow::Result<()> {
    let (_broker, conn, ch) = broker_with_channel().await?;
    exchange(&ch, "busy", ExchangeKind::Direct).await?;
    plain_queue(&ch, "q").await?;
    bind(&ch, "q", "busy", "k").await?;
    let result = ch
        .exchange_delete(
            "busy".into(),
            ExchangeDeleteOptions {
                if_unused: true,
                ..Default::default()
            },
        )
        .await;
    expect_reply_code(result, 406, "exchange.delete if-unused on a bound exchange")?;

    let ch = within("channel.open", conn.create_channel()).await?;
    within(
        "exchange.delete",
        ch.exchange_delete("busy".into(), ExchangeDeleteOptions::default()),
    )
    .await?;
    assert!(!exchange_exists(&conn, "busy").await?);
    // The queue survives and its binding to the deleted exchange is gone.
    assert_eq!(amqp::message_count(&ch, "q").await?, 0);
    exchange(&ch, "busy", ExchangeKind::Direct).await?;
    within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await?;
    assert!(
        routed(&ch, "busy", "k", &["q"]).await?.is_empty(),
        "a recreated exchange has no old bindings"
    );

    exchange(&ch, "idle", ExchangeKind::Direct).await?;
    within(
        "exchange.delete if-unused",
        ch.exchange_delete(
            "idle".into(),
            ExchangeDeleteOptions {
                if_unused: true,
                ..Default::default()
            },
        ),
    )
    .await?;
    assert!(!exchange_exists(&conn, "idle").await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_delete_exchange_goes_away_when_its_last_binding_is_removed() -> anyhow::Result<()> {
    let (_broker, conn, ch) = broker_with_channel().await?;
    let auto = ExchangeDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    within(
        "exchange.declare",
        ch.exchange_declare("auto".into(), ExchangeKind::Direct, auto, FieldTable::default()),
    )
    .await?;
    plain_queue(&ch, "q").await?;
    bind(&ch, "q", "auto", "a").await?;
    bind(&ch, "q", "auto", "b").await?;
    within(
        "queue.unbind a",
        ch.queue_unbind("q".into(), "auto".into(), "a".into(), FieldTable::default()),
    )
    .await?;
    assert!(exchange_exists(&conn, "auto").await?, "one binding left");
    within(
        "queue.unbind b",
        ch.queue_unbind("q".into(), "auto".into(), "b".into(), FieldTable::default()),
    )
    .await?;
    assert!(
        !exchange_exists(&conn, "auto").await?,
        "auto-delete exchange removed with its last binding"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_to_an_internal_exchange_is_refused_but_it_routes_from_another_exchange() -> anyhow::Result<()> {
    let (_broker, conn, _ch) = broker_with_channel().await?;
    let ch = confirm_channel(&conn).await?;
    let internal = ExchangeDeclareOptions {
        internal: true,
        ..Default::default()
    };
    within(
        "exchange.declare",
        ch.exchange_declare("inner".into(), ExchangeKind::Fanout, internal, FieldTable::default()),
    )
    .await?;
    exchange(&ch, "outer", ExchangeKind::Fanout).await?;
    plain_queue(&ch, "q").await?;
    bind(&ch, "q", "inner", "").await?;
    within(
        "exchange.bind",
        ch.exchange_bind(
            "inner".into(),
            "outer".into(),
            "".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    assert_eq!(routed(&ch, "outer", "", &["q"]).await?, ["q"]);

    let result = amqp::publish(&ch, "inner", "", b"direct to internal").await;
    let err = result.expect_err("publishing to an internal exchange must fail");
    assert_eq!(
        warren_e2e::reply_code_any(&err),
        Some(403),
        "ACCESS_REFUSED, got {err:#}"
    );
    Ok(())
}
