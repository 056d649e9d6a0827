//! A node stopped with SIGTERM (Kubernetes, `docker stop`) drains: its
//! clients get RabbitMQ's 320 CONNECTION_FORCED "broker forced connection
//! closure with reason 'shutdown'" and reconnect elsewhere, and the
//! messages they held unacked go back to their queue through Raft before
//! the node leaves, not when the cluster declares it down.

use std::time::Duration;

use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use warren_e2e::load::publish_confirmed;
use warren_e2e::ops::{cluster_addr, declare_durable_queue, list_queues, start_three_nodes_with_config};
use warren_e2e::raw::{Outcome, RawClient, Tune};
use warren_e2e::{connect, eventually, next_delivery, start_broker, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_every_connection_with_320_shutdown_and_exits_cleanly() -> anyhow::Result<()> {
    let mut broker = start_broker().await?;
    let mut first = RawClient::open(broker.amqp_addr(), Tune::default()).await?;
    first.open_channel(1).await?;
    let mut second = RawClient::open(broker.amqp_addr(), Tune::default()).await?;
    second.open_channel(1).await?;

    let broker_exit = tokio::task::spawn_blocking(move || {
        let status = broker.terminate(Duration::from_secs(20));
        (broker, status)
    });
    for client in [&mut first, &mut second] {
        let Outcome::Closed(close) = client.expect_close().await? else {
            anyhow::bail!("the socket closed without connection.close");
        };
        assert_eq!(
            (close.connection, close.code, close.text.as_str()),
            (
                true,
                320,
                "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"
            )
        );
    }
    let (_broker, status) = broker_exit.await?;
    assert!(status?.success(), "warren exits 0 after a SIGTERM");
    Ok(())
}

/// With failure detection slowed to ten minutes, only the drain can give
/// the stopped node's unacked messages back within the test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_gives_its_clients_unacked_messages_back_at_once() -> anyhow::Result<()> {
    let mut nodes = start_three_nodes_with_config(Some("node_down_after_ms = 600000\n")).await?;
    let survivor = cluster_addr(&nodes[0])?;
    declare_durable_queue(&nodes[0].amqp_uri(), "held").await?;
    assert_eq!(publish_confirmed(&nodes[0].amqp_uri(), "held", 0..10).await?.len(), 10);

    let conn = connect(&nodes[2].amqp_uri()).await?;
    let ch = within("channel.open", conn.create_channel()).await?;
    within("basic.qos", ch.basic_qos(4, BasicQosOptions::default())).await?;
    let mut consumer = within(
        "basic.consume",
        ch.basic_consume(
            "held".into(),
            "holder".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    for _ in 0..4 {
        next_delivery(&mut consumer).await?;
    }
    eventually("node 1 sees 4 unacked", Duration::from_secs(10), || async {
        let listing = list_queues(survivor, &[]).await?;
        Ok((listing.queue("held").map(|q| (q.ready, q.unacked)) == Some((6, 4))).then_some(()))
    })
    .await?;

    let node3 = nodes.pop().expect("three nodes");
    let stopped = tokio::task::spawn_blocking(move || {
        let mut node3 = node3;
        let status = node3.terminate(Duration::from_secs(20));
        (node3, status)
    });
    let (_node3, status) = stopped.await?;
    assert!(status?.success(), "node 3 exits 0 after a SIGTERM");
    eventually("node 1 sees all 10 ready again", Duration::from_secs(10), || async {
        let listing = list_queues(survivor, &[]).await?;
        Ok((listing.queue("held").map(|q| (q.ready, q.unacked, q.consumers)) == Some((10, 0, 0))).then_some(()))
    })
    .await?;
    Ok(())
}

/// A leader stopped with SIGTERM hands its leadership over before it exits
/// (ADR 0035). With election timeouts of 2-3 s, the others could elect no
/// leader sooner than 3 s after its last heartbeat (openraft's leader
/// lease); yet as soon as it has exited, node 2 knows another leader, and
/// confirms go on with nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopped_with_sigterm_hands_over_before_it_exits() -> anyhow::Result<()> {
    let mut nodes = start_three_nodes_with_config(Some(
        "raft_election_timeout_min_ms = 2000\nraft_election_timeout_max_ms = 3000\n",
    ))
    .await?;
    let survivor = cluster_addr(&nodes[1])?;
    declare_durable_queue(&nodes[1].amqp_uri(), "handed").await?;
    assert_eq!(
        publish_confirmed(&nodes[1].amqp_uri(), "handed", 0..10).await?.len(),
        10
    );
    // Node 1 bootstrapped the cluster and the others joined through it.
    assert_eq!(list_queues(survivor, &[]).await?.leader, Some(1));

    let node1 = nodes.remove(0);
    let stopped = tokio::task::spawn_blocking(move || {
        let mut node1 = node1;
        let status = node1.terminate(Duration::from_secs(30));
        (node1, status)
    });
    let (_node1, status) = stopped.await?;
    assert!(status?.success(), "node 1 exits 0 after a SIGTERM");
    let leader = list_queues(survivor, &[]).await?.leader;
    assert!(
        matches!(leader, Some(2 | 3)),
        "right after node 1 exited, node 2 knows leader {leader:?}: no hand-over"
    );
    assert_eq!(
        publish_confirmed(&nodes[0].amqp_uri(), "handed", 10..20).await?.len(),
        10
    );
    eventually("node 2 holds all 20", Duration::from_secs(10), || async {
        let listing = list_queues(survivor, &[]).await?;
        Ok((listing.queue("handed").map(|q| q.ready) == Some(20)).then_some(()))
    })
    .await?;
    Ok(())
}
