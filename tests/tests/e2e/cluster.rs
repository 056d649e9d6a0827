//! Three real `warren` processes on loopback: node 1 bootstraps, nodes 2 and
//! 3 join through it. A durable queue declared through one node, messages
//! published with confirms through another and consumed with manual acks
//! through the third arrive exactly once; after `kill -9` of the leader the
//! survivors elect a new one and serve a publish and a consume.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicQosOptions, ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::BasicProperties;
use warren_e2e::{connect, ensure_warren_built, within, within_for, WarrenProcess};

/// Messages published through node 2 and consumed through node 3.
const MESSAGES: usize = 1000;

/// Unconfirmed publishes in flight at most.
const WINDOW: usize = 256;

/// Attempts of the publish + consume through a survivor after the kill.
const FAILOVER_ATTEMPTS: usize = 60;

const QUEUE: &str = "orders";

/// `warren ctl cluster-status` against `node`, parsed: the leader's id.
async fn leader_seen_by(node: &WarrenProcess) -> anyhow::Result<Option<u64>> {
    let binary = ensure_warren_built()?;
    let server = node
        .cluster_addr()
        .ok_or_else(|| anyhow::anyhow!("no cluster address"))?
        .to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(binary)
            .args(["ctl", "--server", &server, "cluster-status"])
            .stdin(Stdio::null())
            .output()
    })
    .await??;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    anyhow::ensure!(
        output.status.success(),
        "warren ctl failed: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let leader = text
        .lines()
        .find_map(|line| line.strip_prefix("leader: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|id| id.parse().ok());
    Ok(leader)
}

/// Publishes `count` persistent messages (body = id) with confirms through
/// `uri`; returns the ids the broker confirmed.
async fn publish_confirmed(uri: &str, count: usize) -> anyhow::Result<BTreeSet<usize>> {
    let conn = connect(uri).await?;
    let ch = within("channel.open", conn.create_channel()).await?;
    within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await?;
    let mut in_flight = VecDeque::new();
    let mut confirmed = BTreeSet::new();
    for id in 0..count {
        let confirm = ch
            .basic_publish(
                "".into(),
                QUEUE.into(),
                Default::default(),
                id.to_string().as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?;
        in_flight.push_back((id, confirm));
        while in_flight.len() >= WINDOW || (id + 1 == count && !in_flight.is_empty()) {
            let Some((oldest, confirm)) = in_flight.pop_front() else {
                break;
            };
            if within("publisher confirm", confirm).await?.is_ack() {
                confirmed.insert(oldest);
            }
        }
    }
    conn.close(200, "done".into()).await?;
    Ok(confirmed)
}

/// Consumes with manual acks through `uri` until `expected` messages came;
/// returns how often each id was delivered.
async fn consume_all(uri: &str, expected: usize) -> anyhow::Result<BTreeMap<usize, usize>> {
    let conn = connect(uri).await?;
    let ch = within("channel.open", conn.create_channel()).await?;
    within("basic.qos", ch.basic_qos(100, BasicQosOptions::default())).await?;
    let mut consumer = within(
        "basic.consume",
        ch.basic_consume(
            QUEUE.into(),
            "c".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    let mut seen = BTreeMap::new();
    let mut total = 0;
    while total < expected {
        let delivery = match within_for(Duration::from_secs(20), "next delivery", async {
            consumer
                .next()
                .await
                .ok_or_else(|| anyhow::anyhow!("consumer stream ended"))
        })
        .await?
        {
            Ok(delivery) => delivery,
            Err(e) => return Err(e.into()),
        };
        let id: usize = String::from_utf8_lossy(&delivery.data).parse()?;
        *seen.entry(id).or_insert(0) += 1;
        total += 1;
        within("basic.ack", delivery.ack(BasicAckOptions::default())).await?;
    }
    // Nothing beyond what was published is waiting.
    let extra = within_for(Duration::from_millis(300), "more deliveries", async {
        Ok::<_, anyhow::Error>(consumer.next().await)
    })
    .await;
    anyhow::ensure!(
        !matches!(extra, Ok(Some(_))),
        "a delivery beyond the published messages: {extra:?}"
    );
    conn.close(200, "done".into()).await?;
    Ok(seen)
}

/// One publish with a confirm through `publish_uri`, then a basic.get of it
/// through `get_uri`. `Ok(false)`: not yet (no leader, nack, refused).
async fn publish_and_get_once(publish_uri: &str, get_uri: &str, body: &str) -> anyhow::Result<bool> {
    let attempt = async {
        let conn = connect(publish_uri).await?;
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        let confirm = ch
            .basic_publish(
                "".into(),
                QUEUE.into(),
                Default::default(),
                body.as_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?
            .await?;
        let _ = conn.close(200, "done".into()).await;
        if !confirm.is_ack() {
            return Ok(false);
        }
        let conn = connect(get_uri).await?;
        let ch = conn.create_channel().await?;
        for _ in 0..50 {
            match ch.basic_get(QUEUE.into(), BasicGetOptions { no_ack: true }).await? {
                Some(message) if message.delivery.data == body.as_bytes() => {
                    let _ = conn.close(200, "done".into()).await;
                    return Ok(true);
                }
                // A publish of an earlier attempt that was nacked but still
                // committed (its outcome was unknown): allowed, skip it.
                Some(message) if message.delivery.data.starts_with(b"after-kill-") => continue,
                Some(message) => anyhow::bail!(
                    "unexpected message {:?} on the queue",
                    String::from_utf8_lossy(&message.delivery.data)
                ),
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        anyhow::bail!("a confirmed message never reached the other survivor")
    };
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(Ok(done)) => Ok(done),
        Ok(Err(e)) if e.to_string().contains("never reached") || e.to_string().contains("unexpected message") => Err(e),
        Ok(Err(_)) | Err(_) => Ok(false),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_a_queue_and_survive_the_leader_kill() -> anyhow::Result<()> {
    let mut nodes = warren_e2e::ops::start_three_nodes().await?;
    assert_eq!(
        leader_seen_by(&nodes[1]).await?,
        Some(1),
        "the bootstrapping node leads"
    );

    // Declare through node 1, publish through node 2, consume through node 3.
    {
        let conn = connect(&nodes[0].amqp_uri()).await?;
        let ch = within("channel.open", conn.create_channel()).await?;
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        within(
            "queue.declare",
            ch.queue_declare(QUEUE.into(), durable, FieldTable::default()),
        )
        .await?;
        conn.close(200, "done".into()).await?;
    }
    let confirmed = publish_confirmed(&nodes[1].amqp_uri(), MESSAGES).await?;
    assert_eq!(
        confirmed.len(),
        MESSAGES,
        "every publish through a follower is confirmed"
    );
    let seen = consume_all(&nodes[2].amqp_uri(), MESSAGES).await?;
    let lost: Vec<_> = confirmed.iter().filter(|id| !seen.contains_key(id)).collect();
    let duplicates: Vec<_> = seen.iter().filter(|(_, count)| **count > 1).collect();
    assert!(lost.is_empty(), "confirmed but never consumed: {lost:?}");
    assert!(duplicates.is_empty(), "delivered more than once: {duplicates:?}");

    // Kill the leader; the survivors elect a new one and keep serving.
    let leader = leader_seen_by(&nodes[1])
        .await?
        .ok_or_else(|| anyhow::anyhow!("no leader known"))?;
    let leader_index = usize::try_from(leader)?
        .checked_sub(1)
        .filter(|index| *index < nodes.len())
        .ok_or_else(|| anyhow::anyhow!("unexpected leader id {leader}"))?;
    nodes[leader_index].kill9();
    let killed_at = std::time::Instant::now();
    let survivors: Vec<&WarrenProcess> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader_index)
        .map(|(_, n)| n)
        .collect();
    let (publish_uri, get_uri) = (survivors[0].amqp_uri(), survivors[1].amqp_uri());
    let mut served = false;
    for attempt in 0..FAILOVER_ATTEMPTS {
        if publish_and_get_once(&publish_uri, &get_uri, &format!("after-kill-{attempt}")).await? {
            println!(
                "leader {leader} killed: publish confirmed and consumed through the survivors after {:?} ({} attempts)",
                killed_at.elapsed(),
                attempt + 1
            );
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        served,
        "no publish + consume through the survivors after killing leader {leader}"
    );
    let new_leader = leader_seen_by(survivors[0]).await?;
    assert!(
        new_leader.is_some() && new_leader != Some(leader),
        "new leader: {new_leader:?}"
    );
    Ok(())
}

// Publishers on node 2 and consumers on node 3 (both followers) keep going
// while node 1, the leader, is killed (tests/tests/e2e/cluster_ops.rs also puts
// clients on the killed node and restarts it). Once failed about one run in
// six (about 20 confirmed messages never consumed): a consumer's connection
// close was lost when its batch failed, so its unacked messages stayed held;
// the proposer now resubmits such clean-up commands until they commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_confirmed_message_is_lost_when_the_leader_is_killed_under_load() -> anyhow::Result<()> {
    use warren_e2e::load::{Client, Endpoints, Load};
    let mut nodes = warren_e2e::ops::start_three_nodes().await?;
    warren_e2e::ops::declare_durable_queue(&nodes[1].amqp_uri(), QUEUE).await?;
    assert_eq!(
        leader_seen_by(&nodes[1]).await?,
        Some(1),
        "the bootstrapping node leads"
    );

    let endpoints = Endpoints::default();
    endpoints.set(2, nodes[1].amqp_uri());
    endpoints.set(3, nodes[2].amqp_uri());
    let load = Load::start(
        vec![Client::new("publisher-on-2", &[2, 3], &endpoints, QUEUE)],
        vec![Client::new("consumer-on-3", &[3, 2], &endpoints, QUEUE)],
    );
    let started = std::time::Instant::now();
    load.confirm_more(2000, Duration::from_secs(20)).await?;
    println!("{:?}: killing the leader", started.elapsed());
    nodes[0].kill9();
    load.confirm_more(2000, Duration::from_secs(20)).await?;
    println!("{:?}: 2000 more confirmed; draining", started.elapsed());
    let report = load.stop_and_drain(Duration::from_secs(30)).await?;
    println!("kill -9 of the leader under load: {report}");
    assert!(
        report.lost.is_empty(),
        "confirmed but never consumed: {} ids, first {:?}",
        report.lost.len(),
        report.lost.first()
    );
    Ok(())
}

/// A consumer on `QUEUE` with manual acks and prefetch `prefetch` (0: no limit).
async fn consumer_with_prefetch(ch: &lapin::Channel, prefetch: u16, tag: &str) -> anyhow::Result<lapin::Consumer> {
    within("basic.qos", ch.basic_qos(prefetch, BasicQosOptions::default())).await?;
    within(
        "basic.consume",
        ch.basic_consume(
            QUEUE.into(),
            tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await
}

/// Kills `victim` (0-based index into a fresh 3-node cluster) while a
/// consumer on it holds unacked messages and it owns an exclusive queue;
/// checks that the leader declares it down: the messages go to a consumer
/// on another node with `redelivered` set, and the exclusive queue is gone.
async fn consumers_of_a_dead_node_hand_back_their_messages(victim: usize) -> anyhow::Result<()> {
    use warren_e2e::amqp;
    const HELD: usize = 20;
    let mut nodes = warren_e2e::ops::start_three_nodes().await?;
    let survivor = (victim + 1) % 3;

    // On the victim: a consumer that takes HELD messages and never acks,
    // and an exclusive queue.
    let doomed = connect(&nodes[victim].amqp_uri()).await?;
    let doomed_ch = within("channel.open", doomed.create_channel()).await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    amqp::declare_queue(&doomed_ch, QUEUE, durable, FieldTable::default()).await?;
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    amqp::declare_queue(&doomed_ch, "doomed-exclusive", exclusive, FieldTable::default()).await?;
    let mut holder = consumer_with_prefetch(&doomed_ch, HELD as u16, "holder").await?;
    let published = publish_confirmed(&nodes[survivor].amqp_uri(), HELD).await?;
    anyhow::ensure!(published.len() == HELD, "only {} of {HELD} confirmed", published.len());
    let mut held = BTreeSet::new();
    while held.len() < HELD {
        let delivery = warren_e2e::next_delivery(&mut holder).await?;
        anyhow::ensure!(!delivery.redelivered, "a first delivery flagged redelivered");
        held.insert(String::from_utf8_lossy(&delivery.data).into_owned());
    }

    // A consumer on a survivor waits; it gets nothing while the victim holds all.
    let conn = connect(&nodes[survivor].amqp_uri()).await?;
    let ch = within("channel.open", conn.create_channel()).await?;
    let mut taker = consumer_with_prefetch(&ch, 0, "taker").await?;
    warren_e2e::expect_no_delivery(&mut taker, Duration::from_millis(300)).await?;

    let killed_at = std::time::Instant::now();
    nodes[victim].kill9();
    drop(doomed);
    let mut redelivered = BTreeSet::new();
    while redelivered.len() < HELD {
        // The leader declares the node down after 3 s of silence (plus an
        // election when the victim led).
        let delivery = warren_e2e::next_delivery_for(&mut taker, Duration::from_secs(30)).await?;
        anyhow::ensure!(
            delivery.redelivered,
            "a message the dead node held came back without redelivered"
        );
        redelivered.insert(String::from_utf8_lossy(&delivery.data).into_owned());
        within("basic.ack", delivery.ack(BasicAckOptions::default())).await?;
    }
    println!(
        "node {} killed: its {HELD} unacked messages redelivered elsewhere after {:?}",
        victim + 1,
        killed_at.elapsed()
    );
    assert_eq!(redelivered, held, "the messages the dead node held, each redelivered");
    assert!(
        !amqp::queue_exists(&conn, "doomed-exclusive").await?,
        "the dead node's exclusive queue was deleted"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_follower_s_consumers_hand_back_their_messages_and_exclusive_queues() -> anyhow::Result<()> {
    consumers_of_a_dead_node_hand_back_their_messages(2).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_leader_s_consumers_hand_back_their_messages_and_exclusive_queues() -> anyhow::Result<()> {
    consumers_of_a_dead_node_hand_back_their_messages(0).await
}

/// Pauses `victim` (SIGSTOP: sockets open, nothing answered — a node cut
/// off from the others) while a consumer on it holds unacked messages; the
/// majority declares it down and hands the messages to a consumer elsewhere.
/// When it resumes it rejoins without manual steps: its stale connection is
/// closed with 320, and a new connection to it sees the current state.
async fn a_paused_node_is_declared_down_and_rejoins_when_resumed(victim: usize) -> anyhow::Result<()> {
    use warren_e2e::amqp;
    const HELD: usize = 10;
    const LATER: usize = 50;
    let mut nodes = warren_e2e::ops::start_three_nodes().await?;
    let survivor = (victim + 1) % 3;

    let stale = connect(&nodes[victim].amqp_uri()).await?;
    let stale_ch = within("channel.open", stale.create_channel()).await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    amqp::declare_queue(&stale_ch, QUEUE, durable, FieldTable::default()).await?;
    let mut holder = consumer_with_prefetch(&stale_ch, HELD as u16, "holder").await?;
    let published = publish_confirmed(&nodes[survivor].amqp_uri(), HELD).await?;
    anyhow::ensure!(published.len() == HELD, "only {} of {HELD} confirmed", published.len());
    for _ in 0..HELD {
        warren_e2e::next_delivery(&mut holder).await?;
    }

    nodes[victim].pause()?;
    let paused_at = std::time::Instant::now();
    {
        let conn = connect(&nodes[survivor].amqp_uri()).await?;
        let ch = within("channel.open", conn.create_channel()).await?;
        let mut taker = consumer_with_prefetch(&ch, 0, "taker").await?;
        for _ in 0..HELD {
            let delivery = warren_e2e::next_delivery_for(&mut taker, Duration::from_secs(30)).await?;
            anyhow::ensure!(
                delivery.redelivered,
                "a message the paused node held came back without redelivered"
            );
            within("basic.ack", delivery.ack(BasicAckOptions::default())).await?;
        }
        println!(
            "node {} paused: its {HELD} unacked messages redelivered elsewhere after {:?}",
            victim + 1,
            paused_at.elapsed()
        );
        conn.close(200, "done".into()).await?;
    }
    // The majority goes on without the paused node.
    let later = publish_confirmed(&nodes[survivor].amqp_uri(), LATER).await?;
    anyhow::ensure!(later.len() == LATER, "only {} of {LATER} confirmed", later.len());

    nodes[victim].resume()?;
    let resumed_at = std::time::Instant::now();
    // The resumed node learns it was declared down and drops the stale connection.
    let ended = within_for(Duration::from_secs(30), "the stale consumer to end", async {
        match holder.next().await {
            None | Some(Err(_)) => Ok::<_, anyhow::Error>(()),
            Some(Ok(_)) => anyhow::bail!("the stale consumer got a delivery after the node was declared down"),
        }
    })
    .await;
    ended?;
    assert!(!stale.status().connected(), "the stale connection is closed");
    // A new connection to it sees what the majority did meanwhile.
    let uri = nodes[victim].amqp_uri();
    let current = async {
        loop {
            let attempt = async {
                let conn = connect(&uri).await?;
                let ch = within("channel.open", conn.create_channel()).await?;
                let count = amqp::message_count(&ch, QUEUE).await?;
                let _ = conn.close(200, "done".into()).await;
                Ok::<_, anyhow::Error>(count)
            };
            match attempt.await {
                Ok(count) => return Ok::<_, anyhow::Error>(count),
                Err(e) => {
                    println!("resumed node not serving yet: {e:#}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    };
    let count = within_for(Duration::from_secs(30), "the resumed node to serve the queue", current).await?;
    println!(
        "node {} resumed: stale connection closed and current state served after {:?}",
        victim + 1,
        resumed_at.elapsed()
    );
    assert_eq!(
        count as usize, LATER,
        "the resumed node shows the messages published while it was away"
    );
    // And it takes publishes again (a figure, not a timing assertion).
    within_for(
        Duration::from_secs(30),
        "a confirmed publish through the resumed node",
        async {
            loop {
                match publish_confirmed(&uri, 1).await {
                    Ok(acked) if acked.len() == 1 => return Ok::<_, anyhow::Error>(()),
                    Ok(_) => println!("resumed node nacked a publish"),
                    Err(e) => println!("resumed node not confirming yet: {e:#}"),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        },
    )
    .await?;
    println!(
        "node {} resumed: first publish through it confirmed {:?} after the resume",
        victim + 1,
        resumed_at.elapsed()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_follower_is_declared_down_and_rejoins_when_resumed() -> anyhow::Result<()> {
    a_paused_node_is_declared_down_and_rejoins_when_resumed(2).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_is_declared_down_and_rejoins_when_resumed() -> anyhow::Result<()> {
    a_paused_node_is_declared_down_and_rejoins_when_resumed(0).await
}
