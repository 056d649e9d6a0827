//! Clusters of 3 and 5 in-process nodes under load and injected faults.
//! Every test ends with `Workload::finish`: heal, drain, converge, and
//! check the history (no confirmed message lost, none held by two
//! consumers at once, none delivered after a confirmed ack, all nodes'
//! states equal). A failure prints the seed; rerun with
//! `WARREN_TESTKIT_SEED=<seed>`.

use std::time::Duration;

use warren_testkit::{seed_from_env, Cluster, ClusterOptions, LoadOptions, Workload};

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

async fn cluster(test: &str, nodes: u64) -> anyhow::Result<Cluster> {
    init_tracing();
    let seed = seed_from_env(test);
    let options = ClusterOptions {
        nodes,
        ..ClusterOptions::default()
    };
    Cluster::start(options, seed)
        .await
        .map_err(|e| anyhow::anyhow!("seed {seed}: cluster did not start: {e}"))
}

async fn finish(cluster: &Cluster, workload: Workload) -> anyhow::Result<()> {
    let outcome = workload.finish().await;
    cluster.shutdown().await;
    let report = outcome.map_err(anyhow::Error::msg)?;
    eprintln!("report: {report:?}");
    anyhow::ensure!(report.summary.confirmed > 0, "nothing was confirmed: {report:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_three_node_cluster_delivers_every_confirmed_message() -> anyhow::Result<()> {
    let cluster = cluster("a_healthy_three_node_cluster_delivers_every_confirmed_message", 3).await?;
    let workload = Workload::start(&cluster, LoadOptions::default())
        .await
        .map_err(anyhow::Error::msg)?;
    workload.run_for(Duration::from_secs(2)).await;
    finish(&cluster, workload).await
}
