//! Policies applied, against the real binary (issue 10: "applying policies
//! such as max-length / dead-letter-exchange is a plus"; ADR 0017): set
//! over the management API, acting on queues AMQP clients use, shown on
//! the queue, refused with 400 when a definition is wrong.

use anyhow::Context;
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use warren_e2e::http::{get, request};
use warren_e2e::{amqp, within};

/// `guest:guest`.
const GUEST: &str = "Z3Vlc3Q6Z3Vlc3Q=";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_set_over_the_api_limits_and_dead_letters_what_amqp_clients_publish() -> anyhow::Result<()> {
    let broker = warren_e2e::start_broker().await?;
    let api = broker.http_addr().context("no http address")?;
    let conn = warren_e2e::connect(&broker.amqp_uri()).await?;
    let ch = within("channel", conn.create_channel()).await?;
    amqp::exchange(&ch, "parking", lapin::ExchangeKind::Fanout).await?;
    amqp::plain_queue(&ch, "parked").await?;
    amqp::bind(&ch, "parked", "parking", "").await?;

    let put = request(
        api,
        "PUT",
        "/api/policies/%2F/bounded",
        GUEST,
        r#"{"pattern":"^jobs\\.","apply-to":"queues","priority":1,"definition":{"max-length":2,"dead-letter-exchange":"parking","ha-mode":"all"}}"#,
    )
    .await?;
    assert_eq!(put.status, 201, "{}", put.body);

    within(
        "queue.declare",
        ch.queue_declare(
            "jobs.email".into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        ),
    )
    .await?;
    for i in 0..5 {
        amqp::publish(&ch, "", "jobs.email", format!("m{i}").as_bytes()).await?;
    }
    assert_eq!(
        amqp::message_count(&ch, "jobs.email").await?,
        2,
        "max-length 2 from the policy"
    );
    assert_eq!(
        amqp::drain(&ch, "parked").await?,
        ["m0", "m1", "m2"],
        "the dropped heads dead-lettered through the policy's exchange"
    );
    let queue = get(api, "/api/queues/%2F/jobs.email", GUEST).await?.json()?;
    assert_eq!(queue["policy"], "bounded", "{queue}");
    assert_eq!(queue["effective_policy_definition"]["max-length"], 2, "{queue}");
    assert_eq!(
        queue["arguments"],
        serde_json::json!({}),
        "declared arguments unchanged"
    );

    // Raising the limit lets the queue grow; deleting the policy lifts it.
    let raise = request(
        api,
        "PUT",
        "/api/policies/%2F/bounded",
        GUEST,
        r#"{"pattern":"^jobs\\.","apply-to":"queues","definition":{"max-length":3}}"#,
    )
    .await?;
    assert_eq!(raise.status, 204, "{}", raise.body);
    for i in 5..9 {
        amqp::publish(&ch, "", "jobs.email", format!("m{i}").as_bytes()).await?;
    }
    assert_eq!(amqp::message_count(&ch, "jobs.email").await?, 3);
    let deleted = request(api, "DELETE", "/api/policies/%2F/bounded", GUEST, "").await?;
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    for i in 9..12 {
        amqp::publish(&ch, "", "jobs.email", format!("m{i}").as_bytes()).await?;
    }
    assert_eq!(amqp::message_count(&ch, "jobs.email").await?, 6);
    let queue = get(api, "/api/queues/%2F/jobs.email", GUEST).await?.json()?;
    assert!(queue["policy"].is_null(), "{queue}");
    let got = within(
        "basic.get",
        ch.basic_get("jobs.email".into(), BasicGetOptions { no_ack: true }),
    )
    .await?
    .context("a message")?;
    assert_eq!(got.delivery.data, b"m6");

    // Bad definitions: 400 with the key named, nothing stored.
    for definition in [
        r#"{"max-length":-1}"#,
        r#"{"max-length":"2"}"#,
        r#"{"expires":0}"#,
        r#"{"overflow":"drop-tail"}"#,
        r#"{"dead-letter-exchange":1}"#,
    ] {
        let body = format!(r#"{{"pattern":".*","definition":{definition}}}"#);
        let refused = request(api, "PUT", "/api/policies/%2F/broken", GUEST, &body).await?;
        assert_eq!(refused.status, 400, "{definition}: {}", refused.body);
        let reason = refused.json()?["reason"].as_str().unwrap_or_default().to_owned();
        assert!(reason.contains("Validation failed"), "{definition}: {reason}");
    }
    let missing = get(api, "/api/policies/%2F/broken", GUEST).await?;
    assert_eq!(missing.status, 404);
    Ok(())
}
