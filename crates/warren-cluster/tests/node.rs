//! A single node end to end: start, propose, apply, effects out, restart
//! from sled, snapshots, batching, failure replies, ticks.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amq_protocol_types::{AMQPValue, FieldTable};
use bytes::Bytes;
use warren_cluster::{EffectSink, Node, NodeConfig, NodeStatus};
use warren_core::{
    ChannelId, Command, ConnectionId, CoreError, Effect, ExchangeName, Message, NodeId, Outcome, Properties, QueueName,
    QueueSummary, Request, VHost,
};
use warren_store::{LogStore, MemStore};

/// Collects every emitted effect.
#[derive(Default)]
struct CollectingSink {
    effects: Mutex<Vec<Effect>>,
}

impl EffectSink for CollectingSink {
    fn emit(&self, effects: Vec<Effect>) {
        self.effects.lock().expect("sink lock").extend(effects);
    }
}

impl CollectingSink {
    fn replies_to(&self, channel: ChannelId) -> Vec<Result<Outcome, CoreError>> {
        self.effects
            .lock()
            .expect("sink lock")
            .iter()
            .filter_map(|effect| match effect {
                Effect::Reply { channel: to, outcome } if *to == channel => Some(outcome.clone()),
                _ => None,
            })
            .collect()
    }

    /// Waits (bounded, as a guard against hangs, not a timing assertion)
    /// until `channel` has at least `count` replies.
    async fn wait_for_replies(&self, channel: ChannelId, count: usize) -> Vec<Result<Outcome, CoreError>> {
        for _ in 0..3000 {
            let replies = self.replies_to(channel);
            if replies.len() >= count {
                return replies;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "expected {count} replies to {channel:?}, got {}",
            self.replies_to(channel).len()
        );
    }
}

const NODE: u64 = 1;

fn channel(seq: u64) -> ChannelId {
    ChannelId {
        conn: ConnectionId {
            node: NodeId(NODE),
            boot: 7,
            seq,
        },
        channel: 1,
    }
}

fn config(data_dir: &Path) -> NodeConfig {
    NodeConfig {
        node_id: NODE,
        data_dir: data_dir.to_path_buf(),
        heartbeat_interval_ms: 50,
        election_timeout_min_ms: 150,
        election_timeout_max_ms: 300,
        cache_capacity_bytes: 8 * 1024 * 1024,
        ..NodeConfig::default()
    }
}

fn declare_queue(name: &str, arguments: FieldTable) -> Command {
    Command::DeclareQueue {
        vhost: VHost::from("/"),
        name: QueueName::from(name),
        passive: false,
        durable: true,
        exclusive: false,
        auto_delete: false,
        arguments,
    }
}

fn publish(queue: &str, body: &str) -> Command {
    Command::Publish {
        vhost: VHost::from("/"),
        mandatory: false,
        message: Arc::new(Message {
            exchange: ExchangeName::default_exchange(),
            routing_key: queue.to_owned(),
            properties: std::sync::Arc::new(Properties {
                delivery_mode: Some(2),
                ..Properties::default()
            }),
            body: Bytes::from(body.to_owned()).into(),
        }),
    }
}

fn request(origin: ChannelId, command: Command) -> Request {
    Request {
        origin: Some(origin),
        command,
    }
}

fn queue(node: &Node, name: &str) -> Option<QueueSummary> {
    node.read(|broker| broker.queue_summaries().into_iter().find(|q| q.name.as_str() == name))
}

async fn wait_for_status(node: &Node, what: &str, ready: impl Fn(&NodeStatus) -> bool) -> NodeStatus {
    for _ in 0..3000 {
        let status = node.metrics();
        if ready(&status) {
            return status;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("node never reached: {what}; last status {:?}", node.metrics());
}

fn is_published(outcome: &Result<Outcome, CoreError>) -> bool {
    matches!(
        outcome,
        Ok(Outcome::Published {
            routed: true,
            rejected: false,
            returned: None
        })
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_gets_exactly_one_reply_in_order() -> anyhow::Result<()> {
    let sink = Arc::new(CollectingSink::default());
    let store: Arc<dyn LogStore> = Arc::new(MemStore::new());
    let node = Node::start_with_store(config(Path::new("unused")), store, sink.clone()).await?;
    let status = node.metrics();
    assert!(status.is_leader, "{status:?}");
    assert_eq!(status.leader, Some(NODE));
    assert_eq!(status.members.keys().copied().collect::<Vec<_>>(), vec![NODE]);

    let proposer = node.proposer();
    let origin = channel(1);
    proposer
        .submit(request(origin, declare_queue("jobs", FieldTable::default())))
        .await?;
    for i in 0..10 {
        proposer
            .submit(request(origin, publish("jobs", &format!("job {i}"))))
            .await?;
    }
    let replies = sink.wait_for_replies(origin, 11).await;
    assert!(
        matches!(&replies[0], Ok(Outcome::QueueDeclared { queue, .. }) if queue.as_str() == "jobs"),
        "{replies:?}"
    );
    assert!(replies[1..].iter().all(is_published), "{replies:?}");

    // A later request's reply proves the earlier batches are done: no
    // duplicate reply may have slipped in.
    proposer
        .submit(request(
            origin,
            Command::PurgeQueue {
                vhost: VHost::from("/"),
                queue: QueueName::from("jobs"),
            },
        ))
        .await?;
    let replies = sink.wait_for_replies(origin, 12).await;
    assert_eq!(replies.len(), 12, "{replies:?}");
    assert_eq!(replies[11], Ok(Outcome::QueuePurged { message_count: 10 }));
    let queues = node.read_linearizable(|broker| broker.queue_summaries()).await?;
    assert_eq!(queues.len(), 1);
    assert_eq!(queues[0].messages_ready, 0);
    node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_disk_restarts_with_its_queue_and_messages() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let origin = channel(1);
    {
        let sink = Arc::new(CollectingSink::default());
        let node = Node::start(config(dir.path()), sink.clone()).await?;
        let proposer = node.proposer();
        proposer
            .submit(request(origin, declare_queue("durable", FieldTable::default())))
            .await?;
        for i in 0..3 {
            proposer
                .submit(request(origin, publish("durable", &format!("m{i}"))))
                .await?;
        }
        sink.wait_for_replies(origin, 4).await;
        assert_eq!(queue(&node, "durable").map(|q| q.messages_ready), Some(3));
        node.shutdown().await?;
    }

    let sink = Arc::new(CollectingSink::default());
    let node = Node::start(config(dir.path()), sink.clone()).await?;
    // Start returns after the replay: the state is back without waiting.
    let restored = queue(&node, "durable").expect("queue restored");
    assert_eq!(restored.messages_ready, 3);
    assert!(restored.durable);
    // The replay emitted the old replies again; the front end drops those
    // of earlier boots.
    assert_eq!(sink.replies_to(origin).len(), 4);
    let status = node.metrics();
    assert!(
        status.is_leader && status.last_applied == status.last_log_index,
        "{status:?}"
    );
    node.shutdown().await?;
    Ok(())
}

/// A data directory the sled engine wrote (before the segment engine)
/// still opens, with sled, and keeps its state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_written_by_sled_opens_with_sled() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let origin = channel(1);
    {
        let store: Arc<dyn LogStore> = Arc::new(warren_store::SledStore::open(
            dir.path(),
            &warren_store::SledConfig::default(),
        )?);
        let sink = Arc::new(CollectingSink::default());
        let node = Node::start_with_store(config(dir.path()), store, sink.clone()).await?;
        node.proposer()
            .submit(request(origin, declare_queue("legacy", FieldTable::default())))
            .await?;
        node.proposer().submit(request(origin, publish("legacy", "m"))).await?;
        sink.wait_for_replies(origin, 2).await;
        node.shutdown().await?;
    }
    assert!(dir.path().join("sled").is_dir());
    let node = Node::start(config(dir.path()), Arc::new(CollectingSink::default())).await?;
    assert_eq!(queue(&node, "legacy").map(|q| q.messages_ready), Some(1));
    assert!(!dir.path().join("log").exists(), "not converted to segments");
    node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_is_built_log_purged_and_restored_on_restart() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node_config = NodeConfig {
        snapshot_every: 20,
        ..config(dir.path())
    };
    let origin = channel(1);
    {
        let sink = Arc::new(CollectingSink::default());
        let node = Node::start(node_config.clone(), sink.clone()).await?;
        let proposer = node.proposer();
        proposer
            .submit(request(origin, declare_queue("snap", FieldTable::default())))
            .await?;
        sink.wait_for_replies(origin, 1).await;
        // One request per entry: wait for each reply before the next.
        for i in 0..50 {
            proposer
                .submit(request(origin, publish("snap", &format!("m{i}"))))
                .await?;
            sink.wait_for_replies(origin, i + 2).await;
        }
        let status = wait_for_status(&node, "snapshot and purge", |s| {
            s.snapshot_index.is_some_and(|i| i >= 20) && s.purged_index.is_some_and(|i| i >= 20)
        })
        .await;
        assert!(status.last_log_index >= Some(52), "{status:?}");
        node.shutdown().await?;
    }

    let sink = Arc::new(CollectingSink::default());
    let node = Node::start(node_config, sink.clone()).await?;
    let status = node.metrics();
    assert!(
        status.purged_index.is_some_and(|i| i >= 20),
        "log behind the snapshot stays purged: {status:?}"
    );
    assert_eq!(queue(&node, "snap").map(|q| q.messages_ready), Some(50));
    // Only the entries after the snapshot were replayed.
    assert!(sink.replies_to(origin).len() < 51);
    node.shutdown().await?;
    Ok(())
}

// Entries are batches, so a count of entries does not bound the log: a
// snapshot also comes once the log has grown by `snapshot_log_bytes`, and
// the log behind it is purged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_is_taken_when_the_log_grows_by_its_byte_budget() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let node_config = NodeConfig {
        snapshot_every: 1_000_000,
        snapshot_log_bytes: 64 * 1024,
        ..config(dir.path())
    };
    let sink = Arc::new(CollectingSink::default());
    let node = Node::start(node_config, sink.clone()).await?;
    let origin = channel(1);
    let proposer = node.proposer();
    proposer
        .submit(request(origin, declare_queue("big", FieldTable::default())))
        .await?;
    sink.wait_for_replies(origin, 1).await;
    // 40 entries of 4 KiB: 160 KiB of log, far from a million entries.
    let body = "x".repeat(4096);
    for i in 0..40 {
        proposer.submit(request(origin, publish("big", &body))).await?;
        sink.wait_for_replies(origin, i + 2).await;
    }
    // With a million entries between count-based snapshots, only the byte
    // budget can have asked for this one.
    wait_for_status(&node, "a snapshot and a purge by size", |s| {
        s.snapshot_index.is_some() && s.purged_index.is_some()
    })
    .await;
    assert_eq!(queue(&node, "big").map(|q| q.messages_ready), Some(40));
    node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposer_batches_concurrent_requests_into_few_entries() -> anyhow::Result<()> {
    let sink = Arc::new(CollectingSink::default());
    let store: Arc<dyn LogStore> = Arc::new(MemStore::new());
    let node = Node::start_with_store(config(Path::new("unused")), store, sink.clone()).await?;
    let origin = channel(1);
    node.proposer()
        .submit(request(origin, declare_queue("batched", FieldTable::default())))
        .await?;
    sink.wait_for_replies(origin, 1).await;
    let before = node.metrics().last_log_index.unwrap_or(0);

    let mut submitters = Vec::new();
    for task in 0..10u64 {
        let proposer = node.proposer();
        submitters.push(tokio::spawn(async move {
            for i in 0..100u64 {
                proposer
                    .submit(request(channel(100 + task), publish("batched", &format!("{task}-{i}"))))
                    .await?;
            }
            Ok::<_, warren_cluster::ClusterError>(())
        }));
    }
    for submitter in submitters {
        submitter.await??;
    }
    for task in 0..10u64 {
        let replies = sink.wait_for_replies(channel(100 + task), 100).await;
        assert_eq!(replies.len(), 100);
        assert!(replies.iter().all(is_published));
    }
    let entries = node.metrics().last_log_index.unwrap_or(0) - before;
    eprintln!("1000 requests took {entries} Raft entries");
    assert!(entries < 200, "1000 requests took {entries} Raft entries");
    assert_eq!(queue(&node, "batched").map(|q| q.messages_ready), Some(1000));
    node.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_after_shutdown_get_unavailable_replies() -> anyhow::Result<()> {
    let sink = Arc::new(CollectingSink::default());
    let store: Arc<dyn LogStore> = Arc::new(MemStore::new());
    let node = Node::start_with_store(config(Path::new("unused")), store, sink.clone()).await?;
    let proposer = node.proposer();
    node.shutdown().await?;

    let origin = channel(1);
    proposer
        .submit(request(origin, declare_queue("late", FieldTable::default())))
        .await?;
    proposer.submit(request(origin, publish("late", "x"))).await?;
    proposer
        .submit(Request {
            origin: None,
            command: Command::Tick,
        })
        .await?;
    let replies = sink.wait_for_replies(origin, 2).await;
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert!(
        replies.iter().all(|r| matches!(r, Err(CoreError::Unavailable(_)))),
        "{replies:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tick_driver_expires_messages_with_a_ttl() -> anyhow::Result<()> {
    let sink = Arc::new(CollectingSink::default());
    let store: Arc<dyn LogStore> = Arc::new(MemStore::new());
    let node = Node::start_with_store(config(Path::new("unused")), store, sink.clone()).await?;
    let origin = channel(1);
    let mut arguments = FieldTable::default();
    arguments.insert("x-message-ttl".into(), AMQPValue::LongUInt(50));
    let proposer = node.proposer();
    proposer
        .submit(request(origin, declare_queue("short-lived", arguments)))
        .await?;
    proposer
        .submit(request(origin, publish("short-lived", "soon gone")))
        .await?;
    let replies = sink.wait_for_replies(origin, 2).await;
    assert!(is_published(&replies[1]), "{replies:?}");

    // Nobody proposes anything: only the tick driver can expire it.
    for _ in 0..1000 {
        if queue(&node, "short-lived").map(|q| q.messages_ready) == Some(0) {
            node.shutdown().await?;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "message with a 50 ms TTL never expired: {:?}",
        queue(&node, "short-lived")
    );
}

/// Milliseconds since the Unix epoch, as the test sees the clock.
fn test_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

// Issue 13, "one clock": a follower whose clock runs ten hours ahead
// forwards a batch; the leader stamps it with its own time, so the queue's
// `x-expires` lease starts now, not ten hours from now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_batch_runs_on_the_leader_s_clock_not_the_follower_s() -> anyhow::Result<()> {
    let sink = Arc::new(CollectingSink::default());
    let store: Arc<dyn LogStore> = Arc::new(MemStore::new());
    let node = Node::start_with_store(config(Path::new("unused")), store, sink.clone()).await?;
    let before = test_clock_ms();
    let ahead = before + 10 * 3600 * 1000;
    let mut arguments = FieldTable::default();
    arguments.insert("x-expires".into(), AMQPValue::LongLongInt(3_600_000));
    let proposal = warren_cluster::Proposal {
        tag: None,
        batch: warren_core::Batch {
            now_ms: ahead,
            requests: vec![Request {
                origin: None,
                command: declare_queue("leased", arguments),
            }],
        },
    };
    node.write_forwarded(proposal).await?;
    let after = test_clock_ms();
    let leased_at = node
        .read(|broker| {
            broker
                .vhosts()
                .get(&VHost::from("/"))
                .and_then(|v| v.queues.get(&QueueName::from("leased")))
                .map(|q| q.last_used_ms)
        })
        .expect("the queue was declared");
    assert!(
        (before..=after).contains(&leased_at),
        "stamped {leased_at}, the leader's clock read {before}..{after} (the follower's said {ahead})"
    );
    node.shutdown().await?;
    Ok(())
}

/// A node whose Raft core has stopped is never ready: asked again and
/// again, `ready` says so and never hangs. The node led before it was
/// restarted on a disk that fails every write: its own committed vote
/// makes it the known leader at once, and its core stops at the first
/// write (re-applying a body). The wait for readiness once looked again
/// at once whenever it saw itself as the known leader but not in the
/// `Leader` state — true forever of a stopped core — a loop without an
/// await that, on a one-thread runtime, starved the watch for the core's
/// fatal error beside it: the start hung (stop 28's CI). Which of the two
/// `ready` polls first is the runtime's draw, so the test asks many times.
#[test]
fn a_node_whose_core_stopped_is_never_ready_and_never_hangs() -> anyhow::Result<()> {
    use warren_cluster::{NoPeers, UnreachableNetwork};
    use warren_store::vfs::PowerCutFs;
    use warren_store::{SegmentConfig, SegmentStore};
    const ASKS: usize = 40;
    let dir = tempfile::tempdir()?;
    let fs = Arc::new(PowerCutFs::new());
    let open = |fs: &Arc<PowerCutFs>| -> anyhow::Result<Arc<dyn LogStore>> {
        let store = SegmentStore::open_on(fs.clone(), Path::new("/node-1"), &SegmentConfig::default())?;
        Ok(Arc::new(store))
    };
    let origin = channel(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // A snapshot first (every 5 entries, one publish per entry): the
    // restart starts from it, having applied an entry of its term, and
    // stops re-applying the publishes after it.
    let config = |data_dir: &Path| NodeConfig {
        snapshot_every: 5,
        ..config(data_dir)
    };
    runtime.block_on(async {
        let sink = Arc::new(CollectingSink::default());
        let node = Node::start_with_store(config(dir.path()), open(&fs)?, sink.clone()).await?;
        let proposer = node.proposer();
        proposer
            .submit(request(origin, declare_queue("q", FieldTable::default())))
            .await?;
        sink.wait_for_replies(origin, 1).await;
        // Publishes until a snapshot is taken, then two more: past it.
        let mut published = 0;
        let mut after_snapshot = None;
        while after_snapshot.is_none_or(|after| published < after + 2) {
            anyhow::ensure!(published < 40, "no snapshot was taken");
            proposer
                .submit(request(origin, publish("q", &format!("m{published}"))))
                .await?;
            published += 1;
            sink.wait_for_replies(origin, published + 1).await;
            if after_snapshot.is_none() && node.metrics().snapshot_index.is_some() {
                after_snapshot = Some(published);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let status = node.metrics();
        anyhow::ensure!(
            status.snapshot_index < status.last_log_index,
            "the snapshot covers the whole log: {status:?}"
        );
        node.shutdown().await?;
        anyhow::Ok(())
    })?;
    drop(runtime);

    fs.fail_writes(true);
    let (answers, asked) = std::sync::mpsc::channel::<Result<(), String>>();
    let data_dir = dir.path().to_path_buf();
    // On a thread of its own: a loop without an await cannot be timed out
    // from its own runtime.
    std::thread::spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(e) => {
                let _ = answers.send(Err(format!("no runtime: {e}")));
                return;
            }
        };
        runtime
            .block_on(async {
                // Opening races the core's stop (it may stop before the open
                // has asked it anything): open until a node is handed out.
                let mut node = None;
                for _ in 0..20 {
                    let Ok(store) = open(&fs) else { continue };
                    let sink = Arc::new(CollectingSink::default());
                    let opened =
                        Node::open_with(config(&data_dir), store, UnreachableNetwork, Arc::new(NoPeers), sink).await;
                    if let Ok(opened) = opened {
                        node = Some(opened);
                        break;
                    }
                }
                let Some(node) = node else {
                    anyhow::bail!("no open handed out a node");
                };
                let reason = tokio::time::timeout(Duration::from_secs(30), node.fatal_error())
                    .await
                    .map_err(|_| anyhow::anyhow!("the core did not stop on the failing disk"))?;
                anyhow::ensure!(
                    reason.contains("injected I/O error"),
                    "the core stopped for another reason: {reason}"
                );
                for _ in 0..ASKS {
                    let answer = match node.ready().await {
                        Ok(()) => Err("ready, its core stopped".to_owned()),
                        Err(_) => Ok(()),
                    };
                    if answers.send(answer).is_err() {
                        break;
                    }
                }
                anyhow::Ok(())
            })
            .unwrap_or_else(|e| {
                let _ = answers.send(Err(e.to_string()));
            });
    });
    for ask in 1..=ASKS {
        asked
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| anyhow::anyhow!("ask {ask} whether a node with a stopped core is ready: no answer, it hangs"))?
            .map_err(|e| anyhow::anyhow!("ask {ask}: {e}"))?;
    }
    Ok(())
}
