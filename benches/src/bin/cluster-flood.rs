//! Floods a node's cluster port as a peer without the secret would (issue
//! 13: "a cluster port that survives a flood from an unauthenticated peer
//! (large frames, many connections) with its RSS under 2x idle and its
//! clients served"), and measures what the node's AMQP clients see.
//!
//!     cluster-flood --pid PID --cluster 127.0.0.1:25672 --amqp amqp://guest:guest@127.0.0.1:5672/%2f
//!
//! Phase 1 (`--quiet-secs`): one AMQP publisher with confirms alone; the
//! node's RSS sampled every 100 ms. Phase 2 (`--flood-secs`): the same
//! publisher while `--senders` connections each send AppendEntries calls
//! with `--payload-mib` MiB bodies and no secret, back to back, and
//! `--idle-connections` more open an HTTP/2 connection and send nothing.
//! Prints the confirm rates, the RSS (idle, peak of each phase) and how
//! the flood's calls ended.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueuePurgeOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use warren_rpc::pb::warren_cluster_client::WarrenClusterClient;

#[derive(Parser)]
struct Args {
    /// The node's process id (its RSS is read from /proc).
    #[arg(long)]
    pid: u32,
    /// The node's cluster (gRPC) address.
    #[arg(long)]
    cluster: String,
    /// An AMQP URI of the same node.
    #[arg(long)]
    amqp: String,
    #[arg(long, default_value_t = 10)]
    quiet_secs: u64,
    #[arg(long, default_value_t = 20)]
    flood_secs: u64,
    #[arg(long, default_value_t = 32)]
    senders: usize,
    #[arg(long, default_value_t = 64)]
    payload_mib: usize,
    #[arg(long, default_value_t = 1000)]
    idle_connections: usize,
    /// Run the attack alone, without the AMQP publisher: start the
    /// publisher as a second instance (`--senders 0 --idle-connections 0`)
    /// pinned to another core, so that the attacker's own CPU does not
    /// slow the client whose service is measured.
    #[arg(long)]
    no_publisher: bool,
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// The process's CPU time so far (user + system), in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command's closing parenthesis: utime and stime are
    // the 12th and 13th of them, in clock ticks (100 a second on Linux).
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// Samples the RSS every 100 ms into `peak` until `stop`.
fn sample_rss(pid: u32, peak: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}

/// Publishes 1 KiB persistent messages with confirms, one at a time,
/// counting confirms, until `stop`.
async fn publish(uri: String, confirmed: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let conn = Connection::connect(&uri, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    ch.queue_declare(
        "flood-probe".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let body = vec![b'x'; 1024];
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let confirm = ch
            .basic_publish(
                "".into(),
                "flood-probe".into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?;
        if confirm.await?.is_ack() {
            confirmed.fetch_add(1, Ordering::Relaxed);
        }
        sent += 1;
        if sent.is_multiple_of(1000) {
            ch.queue_purge("flood-probe".into(), QueuePurgeOptions::default())
                .await?;
        }
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let idle_rss = rss_kib(args.pid);
    anyhow::ensure!(idle_rss > 0, "no process {}", args.pid);
    let confirmed = Arc::new(AtomicU64::new(0));
    let stop_publisher = Arc::new(AtomicBool::new(false));
    let publisher = (!args.no_publisher)
        .then(|| tokio::spawn(publish(args.amqp.clone(), confirmed.clone(), stop_publisher.clone())));

    // Phase 1: quiet.
    let cpu_start = cpu_secs(args.pid);
    let quiet_peak = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(args.pid, quiet_peak.clone(), stop.clone());
    tokio::time::sleep(Duration::from_secs(args.quiet_secs)).await;
    let quiet_confirms = confirmed.swap(0, Ordering::Relaxed);
    let cpu_quiet = cpu_secs(args.pid) - cpu_start;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();

    // Phase 2: flood.
    let flood_peak = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(args.pid, flood_peak.clone(), stop.clone());
    let outcomes: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(args.flood_secs);
    let mut idle = Vec::new();
    for _ in 0..args.idle_connections {
        if let Ok(socket) = tokio::net::TcpStream::connect(&args.cluster).await {
            idle.push(socket);
        }
    }
    let mut floods = Vec::new();
    for _ in 0..args.senders {
        let cluster = args.cluster.clone();
        let outcomes = outcomes.clone();
        let payload = vec![0xA5u8; args.payload_mib * 1024 * 1024];
        floods.push(tokio::spawn(async move {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{cluster}"))?
                .connect()
                .await
                .context("connecting")?;
            let mut client = WarrenClusterClient::new(channel).max_encoding_message_size(usize::MAX);
            while Instant::now() < deadline {
                let request = warren_rpc::pb::RaftRequest {
                    header: None,
                    payload: payload.clone(),
                };
                let outcome = match client.append_entries(request).await {
                    Ok(_) => "accepted (!)".to_owned(),
                    Err(status) => format!("{:?}", status.code()),
                };
                *outcomes.lock().expect("lock").entry(outcome).or_default() += 1;
            }
            anyhow::Ok(())
        }));
    }
    // The phase lasts its length even without senders (the publisher's
    // own instance, or a control run).
    tokio::time::sleep_until(deadline.into()).await;
    for flood in floods {
        if let Err(e) = flood.await? {
            *outcomes
                .lock()
                .expect("lock")
                .entry(format!("sender failed: {e:#}"))
                .or_default() += 1;
        }
    }
    let flood_elapsed = args.flood_secs as f64;
    let flood_confirms = confirmed.swap(0, Ordering::Relaxed);
    let cpu_flood = cpu_secs(args.pid) - cpu_start - cpu_quiet;
    stop.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    drop(idle);
    stop_publisher.store(true, Ordering::Relaxed);
    let publisher_result = match publisher {
        Some(publisher) => publisher.await?.map(|()| "ok"),
        None => Ok("none"),
    };

    let idle_connections = args.idle_connections;
    println!("idle RSS: {} MiB", idle_rss / 1024);
    println!(
        "quiet {} s: {:.0} confirms/s, peak RSS {} MiB, node CPU {:.1} s",
        args.quiet_secs,
        quiet_confirms as f64 / args.quiet_secs as f64,
        quiet_peak.load(Ordering::Relaxed) / 1024,
        cpu_quiet
    );
    println!(
        "flood {} s ({} senders x {} MiB calls without the secret, {idle_connections} idle connections): \
         {:.0} confirms/s, peak RSS {} MiB ({:.2}x idle), node CPU {:.1} s",
        args.flood_secs,
        args.senders,
        args.payload_mib,
        flood_confirms as f64 / flood_elapsed,
        flood_peak.load(Ordering::Relaxed) / 1024,
        flood_peak.load(Ordering::Relaxed) as f64 / idle_rss as f64,
        cpu_flood
    );
    println!("flood calls: {:?}", outcomes.lock().expect("lock"));
    println!("publisher: {publisher_result:?}");
    Ok(())
}
