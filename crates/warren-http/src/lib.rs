//! `warren-http`: the HTTP endpoints of a node: Prometheus metrics on their
//! own listener (`--prometheus-listen`, default `0.0.0.0:15692`, as
//! rabbitmq_prometheus), `/metrics` and `/metrics/per-object`; and the
//! management API on `--http-listen` (default `0.0.0.0:15672`): its reads
//! and a queue's declare, delete and purge for now ([`api`]). The UI of issue 10 is to come here too.
//!
//! It sits on top: it reads the node (`warren-cluster`) and the AMQP front
//! end (`warren-amqp`) and changes nothing.

pub mod api;
mod connections;
mod definitions;
pub mod health;
pub mod prometheus;
mod queue_view;
pub mod rates;
mod topology;
mod ui;
mod users;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use warren_amqp::Frontend;

use crate::prometheus::{render, MetricsSnapshot};

/// What the endpoints read.
#[derive(Clone)]
pub struct Sources {
    pub frontend: Arc<Frontend>,
    pub data_dir: PathBuf,
    pub version: String,
    /// When the node started (the API's `uptime`).
    pub started: std::time::Instant,
    /// The node's listeners by protocol (`amqp`, `http`, `prometheus`, `clustering`).
    pub listeners: Vec<(String, std::net::SocketAddr)>,
    /// Reaches the other members (their connections, for listings that
    /// span the cluster); `None`: this node's alone.
    pub cluster: Option<warren_rpc::GrpcNetwork>,
    /// Message rates, sampled while the API serves.
    pub rates: Arc<rates::RateBook>,
}

/// The Prometheus text format's content type.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoints {
    /// `/metrics` and `/metrics/per-object` (`--prometheus-listen`).
    Prometheus,
    /// The management API, [`api`] (`--http-listen`).
    Api,
}

/// Serves `endpoints` on `listener` until `shutdown` completes.
///
/// # Errors
/// The HTTP server failed.
pub async fn serve(
    endpoints: Endpoints,
    listener: TcpListener,
    sources: Sources,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let sources = Arc::new(sources);
    let router = match endpoints {
        Endpoints::Prometheus => Router::new()
            .route("/metrics", get(aggregated))
            .route("/metrics/per-object", get(per_object))
            .with_state(sources),
        Endpoints::Api => {
            let sampler = tokio::spawn(sample_rates(sources.clone()));
            let router = api::router(sources);
            let served = axum::serve(listener, router).with_graceful_shutdown(shutdown).await;
            sampler.abort();
            return served;
        }
    };
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

async fn aggregated(State(sources): State<Arc<Sources>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, TEXT_FORMAT)],
        render(&snapshot(&sources).await, false),
    )
}

async fn per_object(State(sources): State<Arc<Sources>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, TEXT_FORMAT)],
        render(&snapshot(&sources).await, true),
    )
}

/// Reads everything one scrape reports. The file-system reads (RSS,
/// free disk space) run on a blocking thread.
pub async fn snapshot(sources: &Sources) -> MetricsSnapshot {
    let frontend = &sources.frontend;
    let node = &frontend.node;
    let node_id = frontend.node_id;
    let (queues, consumers_here) = node.read(|broker| (broker.queue_summaries(), broker.consumer_count_of(node_id)));
    let status = node.metrics();
    let (ready_in_memory, ready_paged) = node.read(warren_core::Broker::ready_layout);
    let dir = sources.data_dir.clone();
    let (resident, disk, (open_fds, max_fds)) = tokio::task::spawn_blocking(move || {
        (
            resident_memory_bytes(),
            warren_amqp::flow::free_bytes(&dir).ok(),
            file_descriptors(),
        )
    })
    .await
    .unwrap_or((0, None, (None, None)));
    MetricsSnapshot {
        node_id: node_id.0,
        version: sources.version.clone(),
        queues,
        connections: frontend.registry.len() as u64,
        channels: frontend.registry.open_channels(),
        resident_memory_bytes: resident,
        memory_watermark_bytes: frontend.config.queued_bytes_high_watermark,
        memory_alarm: frontend.alarms.memory_on(),
        disk_available_bytes: disk,
        disk_limit_bytes: frontend.config.disk_free_limit,
        disk_alarm: frontend.alarms.disk_on(),
        raft_term: status.term,
        raft_last_log_index: status.last_log_index,
        raft_last_applied_index: status.last_applied,
        raft_snapshot_index: status.snapshot_index,
        raft_purged_index: status.purged_index,
        raft_is_leader: status.is_leader,
        store_bytes: node.store_size_on_disk().await,
        body_store: node.body_store_usage(),
        body_memory_bytes: node.held_backlog().1,
        ready_in_memory,
        ready_paged,
        messages: frontend.counters.snapshot(),
        consumers_here,
        uptime_seconds: sources.started.elapsed().as_secs(),
        open_fds,
        max_fds,
        raft: node.raft_counts(),
    }
}

/// Open file descriptors of this process and its soft limit, from
/// `/proc/self/fd` and `/proc/self/limits` (`None` where unknown).
fn file_descriptors() -> (Option<u64>, Option<u64>) {
    let open = std::fs::read_dir("/proc/self/fd").ok().map(|dir| dir.count() as u64);
    (open, max_open_files())
}

/// The soft limit of open files, from `/proc/self/limits`.
pub(crate) fn max_open_files() -> Option<u64> {
    std::fs::read_to_string("/proc/self/limits").ok().and_then(|limits| {
        limits
            .lines()
            .find(|line| line.starts_with("Max open files"))
            .and_then(|line| line.split_whitespace().nth(3))
            .and_then(|soft| soft.parse().ok())
    })
}

/// This process's resident set, from `/proc/self/statm` (0 if unknown).
fn resident_memory_bytes() -> u64 {
    const PAGE_BYTES: u64 = 4096;
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|text| {
            text.split_whitespace()
                .nth(1)
                .and_then(|pages| pages.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * PAGE_BYTES)
}

/// Samples the message counters every [`rates::SAMPLE_EVERY`] for the
/// API's rates, until aborted.
async fn sample_rates(sources: Arc<Sources>) {
    let mut every = tokio::time::interval(rates::SAMPLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        sources.frontend.node.read(|broker| sources.rates.sample(broker));
        sources.frontend.registry.sample_rates();
        let counts = sources.frontend.counters.snapshot();
        sources.rates.sample_churn(rates::churn_counts(&counts));
    }
}
