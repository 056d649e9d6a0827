//! `/health/live` and `/health/ready` against the real binary (issue 14,
//! item 1): unauthenticated, as kubelet's probes ask; a node that loses
//! the majority stops being ready but stays live.

use std::time::Duration;

use anyhow::Context;
use warren_e2e::eventually;
use warren_e2e::http::get;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_the_majority_stays_live_and_stops_being_ready() -> anyhow::Result<()> {
    let mut nodes = warren_e2e::ops::start_three_nodes().await?;
    for node in &nodes {
        let api = node.http_addr().context("no http address")?;
        let live = get(api, "/health/live", "").await?;
        assert_eq!(live.status, 200, "{}", live.body);
        assert_eq!(live.json()?["status"], "ok");
        // Every node is ready once it has caught up; a joiner may lag a
        // moment behind the others.
        eventually("ready", Duration::from_secs(20), || async move {
            let ready = get(api, "/health/ready", "").await?;
            Ok((ready.status == 200).then_some(()))
        })
        .await?;
    }
    let api = nodes[0].http_addr().context("no http address")?;
    nodes[1].kill9();
    nodes[2].kill9();
    let reason = eventually("node 1 not ready", Duration::from_secs(30), || async move {
        let ready = get(api, "/health/ready", "").await?;
        Ok((ready.status == 503).then(|| ready.json().ok()).flatten())
    })
    .await?;
    assert_eq!(reason["status"], "failed", "{reason}");
    assert!(
        reason["reason"]
            .as_str()
            .is_some_and(|r| r.contains("leader") || r.contains("majority")),
        "{reason}"
    );
    let live = get(api, "/health/live", "").await?;
    assert_eq!(live.status, 200, "the node itself still works: {}", live.body);
    Ok(())
}
