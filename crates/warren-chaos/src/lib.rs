//! `warren chaos`: a failover test runner for a cluster the user already
//! runs (issue 14, item 4; ADR 0027). It puts a workload of confirmed
//! publishers and acking consumers on every node through real AMQP
//! connections, carries out faults on a seeded schedule (kill -9,
//! pause, network partition, graceful restart) through Docker, kubectl or
//! local signals, records what the clients saw, and checks it: no
//! confirmed message lost, duplicates only as redeliveries, publish order
//! per publisher on each consumer, a confirm after every recovery, and how
//! long each fault kept publishers waiting. It speaks plain AMQP 0-9-1, so
//! it runs against RabbitMQ as well.

pub mod check;
pub mod history;
pub mod http;
pub mod member;
pub mod report;
pub mod spec;
pub mod target;
pub mod workload;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

use crate::check::{RunFacts, Summary};
use crate::history::History;
use crate::http::BaseUrl;
use crate::spec::NodeSpec;
use crate::target::{FaultKind, Injector, Platform};
use crate::workload::Workload;

/// Which faults, in which order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Schedule {
    /// `--faults` faults of the `--kinds`, nodes and kinds drawn from the
    /// seed; a share of them (`--leader-share`) aimed at the leader.
    Random,
    /// Each node in turn restarted, the next only once it is ready again
    /// (what a StatefulSet's rolling update does).
    RollingRestart,
}

/// `warren chaos` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct ChaosArgs {
    /// A node of the cluster, `amqp=URL[,name=N][,id=LEADER-ID][,http=URL]
    /// [,container=C|pod=P|pid-file=F][,start=CMD]`; repeat per node.
    #[arg(long = "node", required = true)]
    pub nodes: Vec<NodeSpec>,
    /// How faults are carried out.
    #[arg(long, value_enum, default_value = "none")]
    pub platform: Platform,
    /// Docker: the network a partition cuts a container from (a compose
    /// project's prefix may be left out).
    #[arg(long)]
    pub network: Option<String>,
    /// kubectl: the namespace of the pods.
    #[arg(long)]
    pub namespace: Option<String>,
    #[arg(long, value_enum, default_value = "random")]
    pub schedule: Schedule,
    /// How many faults a random schedule has.
    #[arg(long, default_value_t = 10)]
    pub faults: usize,
    /// The fault kinds to draw from (default: all the platform can do but
    /// `member`, which needs Warren's membership API: ask for it).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub kinds: Vec<FaultKind>,
    /// Seed of the schedule (printed; default: random).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Share of faults aimed at the node the cluster reports as leader
    /// (needs http= on the nodes).
    #[arg(long, default_value_t = 0.5)]
    pub leader_share: f64,
    /// How long a kill, pause or partition lasts, on average (each lasts
    /// between half and one and a half times this).
    #[arg(long, default_value_t = 5.0)]
    pub hold_secs: f64,
    /// Quiet time between a node's recovery and the next fault.
    #[arg(long, default_value_t = 5.0)]
    pub interval_secs: f64,
    /// Load before the first fault.
    #[arg(long, default_value_t = 5.0)]
    pub warmup_secs: f64,
    /// Load after the last recovery.
    #[arg(long, default_value_t = 5.0)]
    pub settle_secs: f64,
    /// How long consumers may take to drain after publishing stopped.
    #[arg(long, default_value_t = 60.0)]
    pub drain_secs: f64,
    /// How long a node may take to be ready after a fault ends.
    #[arg(long, default_value_t = 120.0)]
    pub ready_timeout_secs: f64,
    /// The durable queue of the workload (declared and purged).
    #[arg(long, default_value = "warren-chaos")]
    pub queue: String,
    /// Its `x-queue-type` ("" for none).
    #[arg(long, default_value = "quorum")]
    pub queue_type: String,
    /// Publishers per node.
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Consumers per node.
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Messages per second per publisher.
    #[arg(long, default_value_t = 200)]
    pub rate: u32,
    /// Unconfirmed messages per publisher at most.
    #[arg(long, default_value_t = 16)]
    pub window: usize,
    #[arg(long, default_value_t = 50)]
    pub prefetch: u16,
    /// Body size in bytes.
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// Report first deliveries out of publish order without failing the
    /// run. Warren returns a consumer's held, never-sent deliveries without
    /// the redelivered flag (ADR 0026), so another consumer may get one
    /// after later messages of the same publisher (docs/divergences.md).
    #[arg(long)]
    pub tolerate_reordering: bool,
    /// Write the summary, series and faults as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a self-contained HTML report here.
    #[arg(long)]
    pub html: Option<PathBuf>,
}

/// Runs the workload and the schedule; returns the summary (already
/// printed, and written where asked).
///
/// # Errors
/// The arguments do not fit the platform, the queue cannot be declared,
/// or a report cannot be written. A failed check is not an error: see
/// [`Summary::passed`].
pub async fn run(args: ChaosArgs) -> anyhow::Result<Summary> {
    let seed = args.seed.unwrap_or_else(rand::random);
    let run_id: u64 = rand::random::<u64>() >> 12;
    let kinds = fault_kinds(&args);
    let injector = Injector::new(
        args.platform,
        args.network.clone(),
        args.namespace.clone(),
        args.nodes.clone(),
    );
    let planned_faults = match args.schedule {
        Schedule::Random => args.faults,
        Schedule::RollingRestart => args.nodes.len(),
    };
    let needed: Vec<FaultKind> = match args.schedule {
        _ if planned_faults == 0 => Vec::new(),
        Schedule::Random => kinds.clone(),
        Schedule::RollingRestart => vec![FaultKind::Restart],
    };
    injector.validate(&args.nodes, &needed)?;
    let http: Vec<Option<BaseUrl>> = args
        .nodes
        .iter()
        .map(|node| node.http.as_deref().map(BaseUrl::parse).transpose())
        .collect::<anyhow::Result<_>>()?;
    eprintln!(
        "warren chaos: seed {seed}, {} nodes, platform {:?}, schedule {:?}, {planned_faults} faults of {:?}",
        args.nodes.len(),
        args.platform,
        args.schedule,
        needed.iter().map(|k| k.name()).collect::<Vec<_>>()
    );

    let workload = Arc::new(Workload {
        nodes: args.nodes.iter().map(|node| node.amqp.clone()).collect(),
        queue: args.queue.clone(),
        queue_type: args.queue_type.clone(),
        publishers_per_node: args.publishers,
        consumers_per_node: args.consumers,
        rate: args.rate,
        window: args.window,
        prefetch: args.prefetch,
        message_size: args.size,
        run: run_id,
    });
    workload.prepare().await?;

    let history = Arc::new(History::new());
    let status = Arc::new(Mutex::new(String::from("warming up")));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (drain_tx, drain_rx) = watch::channel(None);
    let (quit_tx, quit_rx) = watch::channel(false);
    let sampler = tokio::spawn(sample_leader(
        http.clone(),
        args.queue.clone(),
        history.clone(),
        quit_rx.clone(),
    ));
    let progress = tokio::spawn(show_progress(history.clone(), status.clone(), quit_rx));

    let publishing_started_ms = history.now_ms();
    let mut publishers = Vec::new();
    let mut consumers = Vec::new();
    for home in 0..args.nodes.len() {
        for i in 0..args.publishers {
            let number = u32::try_from(home * args.publishers + i).unwrap_or(u32::MAX);
            publishers.push(tokio::spawn(workload::publish(
                workload.clone(),
                history.clone(),
                number,
                home,
                stop_rx.clone(),
            )));
        }
        for i in 0..args.consumers {
            let number = u32::try_from(home * args.consumers + i).unwrap_or(u32::MAX);
            consumers.push(tokio::spawn(workload::consume(
                workload.clone(),
                history.clone(),
                number,
                home,
                drain_rx.clone(),
            )));
        }
    }

    pause(args.warmup_secs).await;
    let mut rng = StdRng::seed_from_u64(seed);
    for index in 0..planned_faults {
        let (kind, victim) = match args.schedule {
            Schedule::RollingRestart => (FaultKind::Restart, index),
            Schedule::Random => {
                let kind = kinds[rng.gen_range(0..kinds.len())];
                let aim_at_leader = rng.gen_bool(args.leader_share.clamp(0.0, 1.0));
                let random_node = rng.gen_range(0..args.nodes.len());
                let leader = history.current_leader().and_then(|leader| {
                    args.nodes
                        .iter()
                        .position(|node| node.id.as_deref() == Some(leader.as_str()))
                });
                (
                    kind,
                    if aim_at_leader {
                        leader.unwrap_or(random_node)
                    } else {
                        random_node
                    },
                )
            }
        };
        let hold = args.hold_secs * rng.gen_range(0.5..1.5);
        let node = &args.nodes[victim];
        let was_leader = history
            .current_leader()
            .and_then(|leader| node.id.as_ref().map(|id| *id == leader));
        set(&status, format!("fault #{index}: {} {}", kind.name(), node.name));
        let fault = history.fault_injected(kind.name(), &node.name, was_leader);
        match injector.inject(node, kind).await {
            // A restart's command spans the whole fault (the stop and the
            // start): it took effect when asked for.
            Ok(()) if kind.holds() => history.fault_in_effect(fault),
            Ok(()) => {}
            Err(e) => history.fault_failed(fault, format!("{e:#}")),
        }
        if kind.holds() {
            pause(hold).await;
            if let Err(e) = injector.heal(node, kind).await {
                history.fault_failed(fault, format!("undoing it: {e:#}"));
            }
        }
        history.fault_healed(fault);
        set(
            &status,
            format!("fault #{index}: waiting for {} to be ready", node.name),
        );
        let must_go_down = args.platform == Platform::Kubectl;
        match wait_ready(node, http[victim].as_ref(), must_go_down, args.ready_timeout_secs).await {
            Ok(()) => history.fault_ready(fault),
            Err(e) => history.fault_failed(fault, format!("{e:#}")),
        }
        set(&status, format!("after fault #{index}"));
        pause(args.interval_secs).await;
    }
    set(&status, "settling".to_owned());
    pause(args.settle_secs).await;

    set(&status, "publishers finishing".to_owned());
    let _ = stop_tx.send(true);
    join(publishers, Duration::from_secs(60)).await;
    let publishing_ended_ms = history.now_ms();
    set(&status, "draining".to_owned());
    let _ = drain_tx.send(Some(
        tokio::time::Instant::now() + Duration::from_secs_f64(args.drain_secs),
    ));
    join(
        consumers,
        Duration::from_secs_f64(args.drain_secs) + Duration::from_secs(30),
    )
    .await;
    let _ = quit_tx.send(true);
    let _ = sampler.await;
    let _ = progress.await;

    let summary = check::summarise(
        &history.records(),
        RunFacts {
            seed,
            run: run_id,
            platform: format!("{:?}", args.platform).to_lowercase(),
            schedule: format!("{:?}", args.schedule).to_lowercase(),
            nodes: args.nodes.iter().map(|node| node.name.clone()).collect(),
            duration_ms: history.now_ms(),
            publishing_started_ms,
            publishing_ended_ms,
            tolerate_reordering: args.tolerate_reordering,
        },
    );
    print!("{}", report::text(&summary));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.html {
        std::fs::write(path, report::html(&summary)).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(summary)
}

/// The kinds given, or every kind the platform can carry out.
fn fault_kinds(args: &ChaosArgs) -> Vec<FaultKind> {
    if !args.kinds.is_empty() {
        return args.kinds.clone();
    }
    match args.platform {
        Platform::Docker if args.network.is_some() => {
            vec![
                FaultKind::Kill,
                FaultKind::Pause,
                FaultKind::Partition,
                FaultKind::Restart,
            ]
        }
        Platform::Docker | Platform::Local => vec![FaultKind::Kill, FaultKind::Pause, FaultKind::Restart],
        Platform::Kubectl => vec![FaultKind::Kill, FaultKind::Restart],
        Platform::None => Vec::new(),
    }
}

async fn pause(secs: f64) {
    tokio::time::sleep(Duration::from_secs_f64(secs.max(0.0))).await;
}

fn set(status: &Mutex<String>, text: String) {
    *status.lock().unwrap_or_else(PoisonError::into_inner) = text;
}

/// Waits for the tasks, aborting those still running after `limit`.
async fn join(tasks: Vec<tokio::task::JoinHandle<()>>, limit: Duration) {
    let aborts: Vec<_> = tasks.iter().map(tokio::task::JoinHandle::abort_handle).collect();
    let all = async {
        for task in tasks {
            let _ = task.await;
        }
    };
    if tokio::time::timeout(limit, all).await.is_err() {
        aborts.iter().for_each(tokio::task::AbortHandle::abort);
    }
}

/// Waits until `node` is ready: `/health/ready` answers 200 where the node
/// has one (Warren), else an AMQP connection opens. With `must_go_down`
/// (a deleted pod) it first waits, up to 30 s, for the node to stop
/// being ready, so the old pod's last answers do not count.
async fn wait_ready(
    node: &NodeSpec,
    http: Option<&BaseUrl>,
    must_go_down: bool,
    timeout_secs: f64,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(timeout_secs);
    if must_go_down {
        let down_by = tokio::time::Instant::now() + Duration::from_secs(30);
        while is_ready(node, http).await && tokio::time::Instant::now() < down_by {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    while !is_ready(node, http).await {
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("{} not ready within {timeout_secs} s", node.name);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

async fn is_ready(node: &NodeSpec, http: Option<&BaseUrl>) -> bool {
    if let Some(base) = http {
        match http::get(base, "/health/ready").await {
            Ok((200, _)) => return true,
            Ok((404, _)) => {} // not Warren: fall back to AMQP
            _ => return false,
        }
    }
    let connect = lapin::Connection::connect(&node.amqp, lapin::ConnectionProperties::default());
    match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(conn)) => {
            let _ = conn.close(200, "ready check".into()).await;
            true
        }
        _ => false,
    }
}

/// Every 500 ms, asks the nodes with `http=` which node leads: Warren's
/// `/api/warren/members`, else RabbitMQ's `/api/queues/%2F/QUEUE` (the
/// quorum queue's leader).
async fn sample_leader(
    nodes: Vec<Option<BaseUrl>>,
    queue: String,
    history: Arc<History>,
    mut quit: watch::Receiver<bool>,
) {
    if nodes.iter().all(Option::is_none) {
        return;
    }
    let rabbit_path = format!("/api/queues/%2F/{}", percent_encode(&queue));
    while !*quit.borrow() {
        let mut seen = None;
        for base in nodes.iter().flatten() {
            if let Ok((200, body)) = http::get(base, "/api/warren/members").await {
                seen = leader_of(&body);
            } else if let Ok((200, body)) = http::get(base, &rabbit_path).await {
                seen = leader_of(&body);
            }
            if seen.is_some() {
                break;
            }
        }
        history.leader(seen);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = quit.changed() => {}
        }
    }
}

/// The `leader` field of a JSON answer, as text (Warren gives a number,
/// RabbitMQ a node name).
fn leader_of(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    match value.get("leader")? {
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A progress line: on a terminal rewritten every second, else printed
/// every ten seconds.
async fn show_progress(history: Arc<History>, status: Arc<Mutex<String>>, mut quit: watch::Receiver<bool>) {
    let terminal = std::io::stderr().is_terminal();
    let every = if terminal { 1 } else { 10 };
    let mut tick = 0u64;
    while !*quit.borrow() {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = quit.changed() => break,
        }
        tick += 1;
        if !tick.is_multiple_of(every) {
            continue;
        }
        let now = history.now_ms();
        let line = {
            let records = history.records();
            let last = records
                .seconds
                .len()
                .checked_sub(2)
                .and_then(|i| records.seconds.get(i));
            format!(
                "{:>6.1} s  confirmed {:>8} ({:>5}/s)  delivered {:>8}  errors {:>4}  leader {:<6}  {}",
                now as f64 / 1000.0,
                records.confirmed.len(),
                last.map_or(0, |s| s.confirms),
                records.delivered.len(),
                records.errors.values().sum::<u64>(),
                records
                    .leaders
                    .last()
                    .and_then(|(_, l)| l.clone())
                    .unwrap_or_else(|| "?".to_owned()),
                status.lock().unwrap_or_else(PoisonError::into_inner)
            )
        };
        if terminal {
            eprint!("\r\x1b[2K{line}");
        } else {
            eprintln!("{line}");
        }
    }
    if terminal {
        eprintln!();
    }
}

#[cfg(test)]
mod tests {
    use super::{leader_of, percent_encode};

    #[test]
    fn the_leader_is_read_from_warren_and_rabbitmq_answers() {
        assert_eq!(leader_of(r#"{"leader":2,"term":5}"#).as_deref(), Some("2"));
        assert_eq!(leader_of(r#"{"leader":"rabbit@n1"}"#).as_deref(), Some("rabbit@n1"));
        assert_eq!(leader_of(r#"{"leader":null}"#), None);
        assert_eq!(leader_of(r#"{"leader":""}"#), None);
        assert_eq!(leader_of("not json"), None);
    }

    #[test]
    fn a_queue_name_is_percent_encoded_for_the_management_path() {
        assert_eq!(percent_encode("warren-chaos"), "warren-chaos");
        assert_eq!(percent_encode("a b/ü"), "a%20b%2F%C3%BC");
        assert_eq!(percent_encode(""), "");
    }
}
