//! Crash safety: a child process publishes through a sled-backed node and
//! reports each confirmed message; the parent kills it with SIGKILL in the
//! middle of writing, restarts a node on the same directory, and checks
//! that every confirmed message is still there.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use amq_protocol_types::FieldTable;
use bytes::Bytes;
use warren_cluster::{EffectSink, Node, NodeConfig};
use warren_core::{
    ChannelId, Command, ConnectionId, Effect, ExchangeName, Message, NodeId, Outcome, Properties, QueueName, Request,
    VHost,
};

const CHILD_DIR_VAR: &str = "WARREN_CRASH_TEST_CHILD_DIR";
const QUEUE: &str = "crash-safe";
const GROUP: u64 = 25;
/// The parent kills the child once this many messages are confirmed.
const KILL_AFTER: u64 = 300;

fn node_config(dir: &Path) -> NodeConfig {
    NodeConfig {
        node_id: 1,
        data_dir: dir.to_path_buf(),
        heartbeat_interval_ms: 50,
        election_timeout_min_ms: 150,
        election_timeout_max_ms: 300,
        cache_capacity_bytes: 8 * 1024 * 1024,
        snapshot_every: 100,
        ..NodeConfig::default()
    }
}

/// Counts confirmed publishes.
#[derive(Default)]
struct Confirms {
    published: AtomicU64,
    other: AtomicU64,
}

impl EffectSink for Confirms {
    fn emit(&self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Reply {
                    outcome: Ok(Outcome::Published { routed: true, .. }),
                    ..
                } => {
                    self.published.fetch_add(1, Ordering::SeqCst);
                }
                Effect::Reply { .. } => {
                    self.other.fetch_add(1, Ordering::SeqCst);
                }
                _ => {}
            }
        }
    }
}

/// The child's body, run by `confirmed_messages_survive_kill_9` in a child
/// process (with `--ignored`): ignored in a normal run, so that it is
/// reported as skipped rather than as a test that passed without doing
/// anything.
#[test]
#[ignore = "the child process of confirmed_messages_survive_kill_9; run by it"]
fn crash_child_publishes_until_killed() {
    let dir =
        std::env::var(CHILD_DIR_VAR).expect("run by confirmed_messages_survive_kill_9, which sets the data directory");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let confirms = Arc::new(Confirms::default());
        let node = Node::start(node_config(Path::new(&dir)), confirms.clone())
            .await
            .expect("start");
        let proposer = node.proposer();
        let origin = ChannelId {
            conn: ConnectionId {
                node: NodeId(1),
                boot: 1,
                seq: 1,
            },
            channel: 1,
        };
        let declare = Command::DeclareQueue {
            vhost: VHost::from("/"),
            name: QueueName::from(QUEUE),
            passive: false,
            durable: true,
            exclusive: false,
            auto_delete: false,
            arguments: FieldTable::default(),
        };
        proposer
            .submit(Request {
                origin: Some(origin),
                command: declare,
            })
            .await
            .expect("declare");
        let mut sent = 0u64;
        loop {
            for _ in 0..GROUP {
                sent += 1;
                let message = Message {
                    exchange: ExchangeName::default_exchange(),
                    routing_key: QUEUE.to_owned(),
                    properties: std::sync::Arc::new(Properties {
                        delivery_mode: Some(2),
                        ..Properties::default()
                    }),
                    body: Bytes::from(format!("message {sent}")).into(),
                };
                let publish = Command::Publish {
                    vhost: VHost::from("/"),
                    mandatory: false,
                    message: Arc::new(message),
                };
                proposer
                    .submit(Request {
                        origin: Some(origin),
                        command: publish,
                    })
                    .await
                    .expect("publish");
            }
            while confirms.published.load(Ordering::SeqCst) < sent {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "confirmed {sent}");
            let _ = stdout.flush();
        }
    });
}

#[test]
fn confirmed_messages_survive_kill_9() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut child = Process::new(std::env::current_exe()?)
        .args([
            "crash_child_publishes_until_killed",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR_VAR, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no child stdout"))?;
    let mut confirmed = 0u64;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(count) = line.strip_prefix("confirmed ") {
            confirmed = count.trim().parse()?;
            if confirmed >= KILL_AFTER {
                break;
            }
        }
    }
    child.kill()?; // SIGKILL
    child.wait()?;
    assert!(confirmed >= KILL_AFTER, "child stopped after {confirmed} confirms");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let node = Node::start(node_config(dir.path()), Arc::new(Confirms::default())).await?;
        let ready = node.read(|broker| {
            broker
                .queue_summaries()
                .into_iter()
                .find(|q| q.name.as_str() == QUEUE)
                .map(|q| q.messages_ready)
        });
        let ready = ready.ok_or_else(|| anyhow::anyhow!("queue lost"))?;
        eprintln!("{confirmed} confirmed before SIGKILL, {ready} survived");
        assert!(ready >= confirmed, "{confirmed} confirmed, {ready} survived");
        node.shutdown().await?;
        Ok(())
    })
}
