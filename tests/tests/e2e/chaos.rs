//! `warren chaos` run as a user runs it, against three real `warren`
//! processes (issue 14, item 4), on the platform that needs no Docker:
//! local processes, paused with SIGSTOP for longer than the cluster takes
//! to declare a node down. That is the run that found a paused node
//! writing, once resumed, deliveries the others had already given to
//! another consumer (without the redelivered flag); the delivery fence
//! (ADR 0028) holds them back. With the fence taken out this test fails
//! on "duplicates only as redeliveries".

use std::process::{Command, Stdio};
use std::time::Duration;

use warren_e2e::{ensure_warren_built, eventually, http, WarrenProcess};

/// A pause lasts 3.5–10.5 s (`--hold-secs 7`): past the 3 s after which
/// the others declare a node down.
const HOLD_SECS: &str = "7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_pauses_nodes_past_their_down_verdict_and_nothing_is_lost_or_delivered_twice_unflagged(
) -> anyhow::Result<()> {
    let binary = ensure_warren_built()?;
    let first = WarrenProcess::start_cluster_node(1, None)?;
    let join = first
        .cluster_addr()
        .ok_or_else(|| anyhow::anyhow!("no cluster address"))?;
    let nodes = [
        first,
        WarrenProcess::start_cluster_node(2, Some(join))?,
        WarrenProcess::start_cluster_node(3, Some(join))?,
    ];
    let dir = tempfile::tempdir()?;
    let mut args: Vec<String> = [
        "chaos",
        "--platform",
        "local",
        "--kinds",
        "pause",
        "--faults",
        "2",
        "--seed",
        "5",
        "--hold-secs",
        HOLD_SECS,
        "--interval-secs",
        "2",
        "--warmup-secs",
        "3",
        "--settle-secs",
        "3",
        "--drain-secs",
        "60",
        "--rate",
        "150",
        "--prefetch",
        "20",
    ]
    .iter()
    .map(|arg| (*arg).to_owned())
    .collect();
    for (node, id) in nodes.iter().zip(1..) {
        let http_addr = node
            .http_addr()
            .ok_or_else(|| anyhow::anyhow!("node {id}: no HTTP address"))?;
        eventually("every node ready", Duration::from_secs(60), || async move {
            let reply = http::get(http_addr, "/health/ready", "").await?;
            Ok((reply.status == 200).then_some(()))
        })
        .await?;
        let pid_file = dir.path().join(format!("node{id}.pid"));
        let pid = node.pid().ok_or_else(|| anyhow::anyhow!("node {id} does not run"))?;
        std::fs::write(&pid_file, format!("{pid}\n"))?;
        args.push("--node".to_owned());
        args.push(format!(
            "name=node{id},id={id},amqp={},http=http://guest:guest@{http_addr},pid-file={}",
            node.amqp_uri(),
            pid_file.display()
        ));
    }
    let json = dir.path().join("report.json");
    args.extend(["--json".to_owned(), json.display().to_string()]);

    let output =
        tokio::task::spawn_blocking(move || Command::new(binary).args(&args).stdin(Stdio::null()).output()).await??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json)?)?;

    // The scenario happened: two pauses, each past the down verdict, and
    // the cluster did declare a paused node down (the node logs it as it
    // applies the verdict and closes its connections).
    let faults = report["faults"].as_array().cloned().unwrap_or_default();
    anyhow::ensure!(faults.len() == 2, "faults: {faults:?}");
    for fault in &faults {
        let held = fault["healed_ms"]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(fault["injected_ms"].as_u64().unwrap_or(0));
        anyhow::ensure!(fault["kind"] == "pause" && held > 3000, "a pause of {held} ms: {fault}");
    }
    // (Not the clients' errors: a client may see its socket close before
    // it reads the 320 that says why, as in one CI run.)
    let declared_down = nodes.iter().any(|node| {
        node.log_tail(usize::MAX)
            .contains("the cluster declared this node down")
    });
    anyhow::ensure!(
        declared_down,
        "no paused node was declared down: the scenario did not happen"
    );
    anyhow::ensure!(
        report["confirmed"].as_u64().unwrap_or(0) > 1000,
        "too little load: {}",
        report["confirmed"]
    );
    // And the checks held.
    anyhow::ensure!(report["lost"] == 0, "lost: {}", report["lost_sample"]);
    anyhow::ensure!(report["unflagged_duplicates"] == 0, "{}", report["anomalies"]);
    anyhow::ensure!(
        output.status.success() && stdout.contains("PASSED"),
        "warren chaos failed: {stdout}"
    );
    drop(nodes);
    Ok(())
}
