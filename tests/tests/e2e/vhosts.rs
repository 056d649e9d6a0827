//! Virtual hosts other than `/`: created from the configuration, isolated
//! from each other.

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use warren_e2e::{connect, start_broker_with_config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_vhost_can_be_opened_and_its_queues_are_its_own() -> anyhow::Result<()> {
    let broker = start_broker_with_config("vhosts = [\"staging\"]\n").await?;
    let port = broker.amqp_port();
    let staging = connect(&format!("amqp://guest:guest@127.0.0.1:{port}/staging")).await?;
    let root = connect(&broker.amqp_uri()).await?;

    let ch = staging.create_channel().await?;
    ch.queue_declare(
        "only-in-staging".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await?;
    ch.queue_declare(
        "only-in-staging".into(),
        QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await?;

    let ch = root.create_channel().await?;
    let in_root = ch
        .queue_declare(
            "only-in-staging".into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await;
    assert!(
        in_root.is_err(),
        "a queue of vhost 'staging' must not be visible in '/'"
    );

    let unknown = connect(&format!("amqp://guest:guest@127.0.0.1:{port}/nowhere")).await;
    assert!(unknown.is_err(), "an undeclared vhost is refused");
    Ok(())
}
