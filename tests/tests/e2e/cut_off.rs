//! A node cut off from the majority closes its clients' connections with
//! 320 once the others would have declared it down, so clients reconnect
//! to a node that can serve them instead of waiting for nacks (ADR 0029);
//! once it hears from a leader again it serves new connections.

use std::time::Duration;

use warren_e2e::ops::start_three_nodes;
use warren_e2e::raw::{Outcome, RawClient, Tune};
use warren_e2e::{connect, eventually, http, within_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_majority_closes_its_clients_with_320_and_serves_again_once_back() -> anyhow::Result<()> {
    let mut nodes = start_three_nodes().await?;
    let third_http = nodes[2]
        .http_addr()
        .ok_or_else(|| anyhow::anyhow!("node 3: no HTTP address"))?;
    eventually("node 3 ready", Duration::from_secs(60), || async {
        let reply = http::get(third_http, "/health/ready", "").await?;
        Ok((reply.status == 200).then_some(()))
    })
    .await?;
    let mut client = RawClient::open(nodes[2].amqp_addr(), Tune::default()).await?;
    client.open_channel(1).await?;

    // Nodes 1 and 2 stop answering: node 3 alone has no majority.
    nodes[0].pause()?;
    nodes[1].pause()?;
    let started = std::time::Instant::now();
    let outcome = within_for(
        Duration::from_secs(30),
        "the close of node 3's client",
        client.expect_close(),
    )
    .await;
    let waited = started.elapsed();
    nodes[0].resume()?;
    nodes[1].resume()?;
    let Outcome::Closed(close) = outcome? else {
        anyhow::bail!("the socket closed without connection.close");
    };
    assert_eq!(
        (close.connection, close.code, close.text.as_str()),
        (
            true,
            320,
            "CONNECTION_FORCED - broker forced connection closure with reason \
             'this node lost contact with the majority of the cluster; reconnect to another node'"
        )
    );
    // Not before the others could have declared it down (3 s by default).
    assert!(waited >= Duration::from_millis(2500), "closed after {waited:?}");
    eprintln!("node 3's client was closed {waited:?} after the majority went silent");

    // Back in touch: node 3 serves a new connection and keeps it.
    let uri = nodes[2].amqp_uri();
    eventually("node 3 serves again", Duration::from_secs(30), || {
        let uri = uri.clone();
        async move {
            let Ok(conn) = connect(&uri).await else {
                return Ok(None);
            };
            // Kept for longer than a check of the watch (250 ms).
            tokio::time::sleep(Duration::from_millis(600)).await;
            Ok(conn.status().connected().then_some(()))
        }
    })
    .await?;
    Ok(())
}
