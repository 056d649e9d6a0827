//! Mutual TLS between nodes (ADR 0024) with real processes: three nodes
//! whose cluster ports take only callers with a certificate of the cluster
//! CA form a cluster, forward and replicate; `warren ctl` with such a
//! certificate works, without TLS or with another CA's certificate it is
//! refused.

use std::time::Duration;

use warren_e2e::eventually;
use warren_e2e::load::publish_confirmed;
use warren_e2e::ops::{
    cluster_addr, ctl, declare_durable_queue, parse_cluster_status, parse_queue_listing, start_three_nodes_with_config,
};
use warren_e2e::tls::TestPki;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_over_mutual_tls_replicate_and_ctl_needs_the_cluster_ca() -> anyhow::Result<()> {
    let pki = TestPki::new()?;
    let nodes = start_three_nodes_with_config(Some(&pki.cluster_config_toml())).await?;
    let addrs = nodes.iter().map(cluster_addr).collect::<anyhow::Result<Vec<_>>>()?;

    declare_durable_queue(&nodes[0].amqp_uri(), "sealed").await?;
    // Through a follower: forwarded to the leader over TLS.
    assert_eq!(publish_confirmed(&nodes[1].amqp_uri(), "sealed", 0..5).await?.len(), 5);

    let with = |name: &str, more: &[&str]| {
        let mut args = pki.ctl_args(name);
        args.extend(more.iter().map(|s| (*s).to_owned()));
        args
    };
    let status_args = with("node", &["cluster-status"]);
    let status_args: Vec<&str> = status_args.iter().map(String::as_str).collect();
    let status = ctl(addrs[2], None, &status_args).await?;
    assert!(status.success, "{}{}", status.stdout, status.stderr);
    let view = parse_cluster_status(&status.stdout);
    assert_eq!(view.voters(), [1, 2, 3], "{}", status.stdout);
    assert!(view.members.iter().all(|m| m.reachable), "{}", status.stdout);

    let list_args = with("node", &["list-queues"]);
    let list_args: Vec<&str> = list_args.iter().map(String::as_str).collect();
    eventually("node 3 lists 5 ready", Duration::from_secs(10), || async {
        let listing = ctl(addrs[2], None, &list_args).await?;
        anyhow::ensure!(listing.success, "{}", listing.stderr);
        let listing = parse_queue_listing(&listing.stdout);
        Ok((listing.queue("sealed").map(|q| q.ready) == Some(5)).then_some(()))
    })
    .await?;

    // Without TLS, or with another CA's certificate: refused.
    let plain = ctl(addrs[0], None, &["cluster-status"]).await?;
    assert!(!plain.success, "plain text was served: {}", plain.stdout);
    let stranger_args = with("other-node", &["cluster-status"]);
    let stranger_args: Vec<&str> = stranger_args.iter().map(String::as_str).collect();
    let stranger = ctl(addrs[0], None, &stranger_args).await?;
    assert!(
        !stranger.success,
        "another CA's certificate was served: {}",
        stranger.stdout
    );
    Ok(())
}
