//! Bodies on disk at the state machine (issue 9, ADR 0014): a snapshot
//! holds handles, not bodies; a follower that installs one gets every body
//! streamed into its own store; body segments go once no message of the
//! saved snapshot needs them; a restart from a snapshot reads them back.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftSnapshotBuilder};
use tokio::io::AsyncWriteExt;
use warren_cluster::{EffectSink, Proposal, StateMachine, TypeConfig};
use warren_core::test_support::{declare_queue, get, message, publish_message};
use warren_core::{Batch, Body, ChannelId, Command, ConnectionId, Effect, NodeId, Outcome, Request};
use warren_store::{BodyConfig, LogStore, SegmentConfig, SegmentStore};

/// Collects every emitted effect.
#[derive(Default)]
struct Collect(Mutex<Vec<Effect>>);

impl EffectSink for Collect {
    fn emit(&self, effects: Vec<Effect>) {
        self.0.lock().expect("sink lock").extend(effects);
    }
}

impl Collect {
    /// The bodies of the `basic.get-ok`s emitted so far, in order.
    fn got(&self) -> Vec<Body> {
        self.0
            .lock()
            .expect("sink lock")
            .iter()
            .filter_map(|effect| match effect {
                Effect::Reply {
                    outcome: Ok(Outcome::GetOk { message, .. }),
                    ..
                } => Some(message.body.clone()),
                _ => None,
            })
            .collect()
    }
}

const MESSAGES: usize = 200;
const BODY_BYTES: usize = 10 * 1024;

fn channel_on(node: u64) -> ChannelId {
    ChannelId {
        conn: ConnectionId {
            node: NodeId(node),
            boot: 1,
            seq: 1,
        },
        channel: 1,
    }
}

/// Body `i`: distinct bytes, every length the same.
fn body(i: usize) -> Bytes {
    let mut bytes = format!("body {i} ✓ ").into_bytes();
    bytes.resize(BODY_BYTES, u8::try_from(i % 251).expect("small"));
    Bytes::from(bytes)
}

fn entry(index: u64, origin: ChannelId, commands: Vec<Command>) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Proposal {
            tag: None,
            batch: Batch {
                now_ms: 1_700_000_000_000,
                requests: commands
                    .into_iter()
                    .map(|command| Request {
                        origin: Some(origin),
                        command,
                    })
                    .collect(),
            },
        }),
    }
}

/// Publishes of bodies `range` to queue `q`.
fn publishes(range: std::ops::Range<usize>) -> Vec<Command> {
    range
        .map(|i| {
            let mut m = message("", "q", "");
            m.body = Body::Inline(body(i));
            publish_message(m)
        })
        .collect()
}

fn open_store(dir: &std::path::Path) -> Arc<SegmentStore> {
    let config = SegmentConfig {
        bodies: BodyConfig {
            segment_bytes: 256 * 1024,
            cache_bytes: 0,
        },
        ..SegmentConfig::default()
    };
    Arc::new(SegmentStore::open(dir, &config).expect("open store"))
}

async fn open(node: u64, store: &Arc<SegmentStore>) -> (StateMachine, Arc<Collect>) {
    let sink = Arc::new(Collect::default());
    let store: Arc<dyn LogStore> = store.clone();
    let sm = StateMachine::open(node, store, sink.clone())
        .await
        .expect("open state machine");
    (sm, sink)
}

/// Drains `q` with no-ack gets from a channel on `node` and checks every
/// body came back, in order, as bytes.
async fn drain_and_check(
    sm: &mut StateMachine,
    sink: &Collect,
    node: u64,
    index: u64,
    expected: std::ops::Range<usize>,
) {
    let gets = (0..expected.len()).map(|_| get("q", true)).collect();
    sm.apply(vec![entry(index, channel_on(node), gets)])
        .await
        .expect("apply gets");
    let got = sink.got();
    assert_eq!(got.len(), expected.len(), "one get-ok per message");
    for (body_got, i) in got.iter().zip(expected) {
        assert_eq!(body_got.inline(), Some(&body(i)), "body {i} read back as bytes");
    }
}

/// Flips every byte of the file at `path` after its first record's header.
fn damage(path: &std::path::Path) {
    let mut bytes = std::fs::read(path).expect("read");
    for byte in bytes.iter_mut().skip(8) {
        *byte ^= 0x5a;
    }
    std::fs::write(path, bytes).expect("damage");
}

fn body_bytes_on_disk(store: &SegmentStore) -> u64 {
    store.bodies().expect("a body store").disk_usage().1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_holds_handles_and_a_follower_gets_every_body_streamed_into_its_own_store() {
    let dir_a = tempfile::tempdir().expect("tempdir");
    let store_a = open_store(dir_a.path());
    let (mut leader, leader_sink) = open(1, &store_a).await;
    let origin = channel_on(1);
    leader
        .apply(vec![
            entry(1, origin, vec![declare_queue("q")]),
            entry(2, origin, publishes(0..MESSAGES / 2)),
            entry(3, origin, publishes(MESSAGES / 2..MESSAGES)),
        ])
        .await
        .expect("apply publishes");
    let payload = (MESSAGES * BODY_BYTES) as u64;
    assert!(
        body_bytes_on_disk(&store_a) >= payload,
        "the bodies went to the body store"
    );

    let built = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    let stored = store_a.get_snapshot().expect("read").expect("saved").len() as u64;
    assert!(
        stored < payload / 20,
        "the saved snapshot holds handles, not {payload} bytes of bodies: {stored} bytes"
    );

    let current = leader.get_current_snapshot().await.expect("current").expect("one");
    assert_eq!(current.meta, built.meta);
    let mut transfer = current.snapshot.into_std().await;
    let sent = transfer.metadata().expect("metadata").len();
    assert!(
        sent > payload,
        "the copy for a follower carries the bodies: {sent} bytes"
    );

    let dir_b = tempfile::tempdir().expect("tempdir");
    let store_b = open_store(dir_b.path());
    let (mut follower, follower_sink) = open(2, &store_b).await;
    let mut receiving = follower.begin_receiving_snapshot().await.expect("begin");
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut transfer, &mut bytes).expect("read the transfer");
    receiving.write_all(&bytes).await.expect("receive");
    receiving.flush().await.expect("flush");
    follower
        .install_snapshot(&current.meta, receiving)
        .await
        .expect("install");
    assert!(
        body_bytes_on_disk(&store_b) >= payload,
        "the follower wrote the bodies to its store"
    );
    let installed = store_b.get_snapshot().expect("read").expect("saved").len() as u64;
    assert!(installed < payload / 20, "and saved handles only: {installed} bytes");

    // Deliveries on either node read the bodies back from its own store.
    drain_and_check(&mut follower, &follower_sink, 2, 4, 0..MESSAGES).await;
    drain_and_check(&mut leader, &leader_sink, 1, 4, 0..MESSAGES).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_segments_go_once_a_snapshot_no_longer_needs_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path());
    let (mut sm, sink) = open(1, &store).await;
    let origin = channel_on(1);
    sm.apply(vec![
        entry(1, origin, vec![declare_queue("q")]),
        entry(2, origin, publishes(0..MESSAGES)),
    ])
    .await
    .expect("apply publishes");
    let payload = (MESSAGES * BODY_BYTES) as u64;
    sm.get_snapshot_builder().await.build_snapshot().await.expect("build");
    assert!(
        body_bytes_on_disk(&store) >= payload,
        "every body is still queued: kept"
    );

    drain_and_check(&mut sm, &sink, 1, 3, 0..MESSAGES).await;
    sm.get_snapshot_builder().await.build_snapshot().await.expect("build");
    let left = body_bytes_on_disk(&store);
    assert!(
        left < payload / 10,
        "consumed bodies' segments deleted: {left} bytes left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_reads_the_bodies_of_its_snapshot_and_of_the_entries_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let origin = channel_on(1);
    let after_snapshot = entry(3, origin, publishes(MESSAGES / 2..MESSAGES));
    {
        let store = open_store(dir.path());
        let (mut sm, _sink) = open(1, &store).await;
        sm.apply(vec![
            entry(1, origin, vec![declare_queue("q")]),
            entry(2, origin, publishes(0..MESSAGES / 2)),
        ])
        .await
        .expect("apply");
        sm.get_snapshot_builder().await.build_snapshot().await.expect("build");
        sm.apply(vec![after_snapshot.clone()])
            .await
            .expect("apply after the snapshot");
    }
    let store = open_store(dir.path());
    let (mut sm, sink) = open(1, &store).await;
    // openraft replays the log after the snapshot.
    sm.apply(vec![after_snapshot]).await.expect("replay");
    drain_and_check(&mut sm, &sink, 1, 4, 0..MESSAGES).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_cannot_be_read_stops_apply_and_no_snapshot_saves_the_half_applied_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path());
    let (mut sm, _sink) = open(1, &store).await;
    let origin = channel_on(1);
    sm.apply(vec![
        entry(1, origin, vec![declare_queue("q")]),
        entry(2, origin, publishes(0..3)),
    ])
    .await
    .expect("apply publishes");
    // Damage every body segment on disk (the cache holds nothing).
    for file in std::fs::read_dir(dir.path().join("bodies")).expect("bodies/") {
        damage(&file.expect("entry").path());
    }
    let failed = sm.apply(vec![entry(3, origin, vec![get("q", true)])]).await;
    assert!(
        failed.is_err(),
        "a body read back wrong is a storage error, not a wrong delivery"
    );
    let built = sm.get_snapshot_builder().await.build_snapshot().await;
    assert!(built.is_err(), "the half-applied state is never saved");
    assert!(store.get_snapshot().expect("read").is_none(), "no snapshot on disk");
}

/// Messages in the paging tests: over four pages of
/// [`warren_core::ready::PAGE_LEN`].
const BACKLOG: usize = 5_000;

/// Body `i` of the paging tests: 100 distinct bytes.
fn small_body(i: usize) -> Bytes {
    let mut bytes = format!("small {i} ✓ ").into_bytes();
    bytes.resize(100, b'.');
    Bytes::from(bytes)
}

/// Publishes of small bodies `range` to queue `q`, in entries of 500.
fn small_publishes(first_index: u64, range: std::ops::Range<usize>) -> Vec<Entry<TypeConfig>> {
    let all: Vec<usize> = range.collect();
    all.chunks(500)
        .zip(first_index..)
        .map(|(chunk, index)| {
            let commands = chunk
                .iter()
                .map(|&i| {
                    let mut m = message("", "q", "");
                    m.body = Body::Inline(small_body(i));
                    publish_message(m)
                })
                .collect();
            entry(index, channel_on(1), commands)
        })
        .collect()
}

/// Queue `q`'s ready messages: all, held in memory, and pages.
fn backlog_of(sm: &StateMachine) -> (usize, usize, usize) {
    sm.read(|broker| {
        let queue = &broker.vhosts()[&"/".into()].queues[&"q".into()];
        (
            queue.ready.len(),
            queue.ready.in_memory_len(),
            queue.ready.pages().count(),
        )
    })
}

/// Gets every message of `q` from `node` at log index `index`, and checks
/// each small body came back in order.
async fn drain_small(sm: &mut StateMachine, sink: &Collect, node: u64, index: u64) {
    let gets = (0..BACKLOG).map(|_| get("q", true)).collect();
    sm.apply(vec![entry(index, channel_on(node), gets)])
        .await
        .expect("apply gets");
    let got = sink.got();
    assert_eq!(got.len(), BACKLOG, "one get-ok per message");
    for (i, body_got) in got.iter().enumerate() {
        assert_eq!(body_got.inline(), Some(&small_body(i)), "message {i} in order, intact");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_is_paged_out_and_comes_back_in_order_after_a_restart_and_on_a_follower() {
    let page = warren_core::ready::PAGE_LEN;
    let dir_a = tempfile::tempdir().expect("tempdir");
    let mut entries = vec![entry(1, channel_on(1), vec![declare_queue("q")])];
    entries.extend(small_publishes(2, 0..BACKLOG));
    let last_index = 1 + entries.len() as u64 - 1;
    {
        let store_a = open_store(dir_a.path());
        let (mut leader, _) = open(1, &store_a).await;
        leader.apply(entries).await.expect("apply publishes");
        let (ready, in_memory, pages) = backlog_of(&leader);
        assert_eq!(ready, BACKLOG);
        assert!(
            in_memory <= 2 * page && pages >= (BACKLOG - 2 * page) / page,
            "{in_memory} messages in memory, {pages} pages"
        );
        leader
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build");
    }

    // A restart reads the pages' handles back from the snapshot.
    let store_a = open_store(dir_a.path());
    let (mut leader, leader_sink) = open(1, &store_a).await;
    assert_eq!(backlog_of(&leader).0, BACKLOG);
    assert!(backlog_of(&leader).2 >= 2, "still paged after a restart");

    // A follower gets the pages' messages (and their bodies) and pages them
    // into its own store.
    let current = leader.get_current_snapshot().await.expect("current").expect("one");
    let mut transfer = current.snapshot.into_std().await;
    let dir_b = tempfile::tempdir().expect("tempdir");
    let store_b = open_store(dir_b.path());
    let (mut follower, follower_sink) = open(2, &store_b).await;
    let mut receiving = follower.begin_receiving_snapshot().await.expect("begin");
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut transfer, &mut bytes).expect("read the transfer");
    assert!(
        bytes.len() > BACKLOG * 100,
        "the copy carries every message and body: {} bytes",
        bytes.len()
    );
    receiving.write_all(&bytes).await.expect("receive");
    receiving.flush().await.expect("flush");
    follower
        .install_snapshot(&current.meta, receiving)
        .await
        .expect("install");
    let (ready, in_memory, pages) = backlog_of(&follower);
    assert_eq!(ready, BACKLOG);
    assert!(
        in_memory <= 2 * page && pages >= 2,
        "paged on arrival: {in_memory} in memory, {pages} pages"
    );

    drain_small(&mut follower, &follower_sink, 2, last_index + 1).await;
    drain_small(&mut leader, &leader_sink, 1, last_index + 1).await;
    assert_eq!(backlog_of(&leader), (0, 0, 0));

    // Consumed, the pages' segments go with the bodies'.
    let before = body_bytes_on_disk(&store_a);
    leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    let after = body_bytes_on_disk(&store_a);
    assert!(
        after < before / 4,
        "segments of consumed bodies and pages deleted: {before} → {after} bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_that_cannot_be_read_stops_apply() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open_store(dir.path());
    let (mut sm, _sink) = open(1, &store).await;
    let mut entries = vec![entry(1, channel_on(1), vec![declare_queue("q")])];
    entries.extend(small_publishes(2, 0..BACKLOG));
    let next = 1 + entries.len() as u64;
    sm.apply(entries).await.expect("apply publishes");
    let first_page = sm.read(|broker| {
        let queue = &broker.vhosts()[&"/".into()].queues[&"q".into()];
        queue.ready.pages().next().map(|page| page.at()).expect("paged")
    });
    // Premise: the head's bodies are in segment 0, the first page after it.
    assert!(first_page.segment > 0, "page at {first_page:?}");
    let head = warren_core::ready::PAGE_LEN;
    sm.apply(vec![entry(
        next,
        channel_on(1),
        (0..head).map(|_| get("q", true)).collect(),
    )])
    .await
    .expect("the head is in memory, its bodies in segment 0");
    let path = dir
        .path()
        .join("bodies")
        .join(format!("{:010}.body", first_page.segment));
    damage(&path);
    let failed = sm
        .apply(vec![entry(next + 1, channel_on(1), vec![get("q", true)])])
        .await;
    assert!(failed.is_err(), "a page read back wrong is a storage error");
    assert!(
        sm.get_snapshot_builder().await.build_snapshot().await.is_err(),
        "the half-applied state is never saved"
    );
}
