//! Operating a cluster of real `warren` processes on loopback: `warren ctl`
//! (list-queues, add-node, remove-node, cluster-status), kill -9 of a
//! follower under load, kill -9 of the whole cluster, and membership changes
//! under load. Each load test prints its figures (confirmed, consumed, lost,
//! duplicates, catch-up time); only "lost = 0" and the state are asserted,
//! never a duration.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use warren_e2e::load::{publish_confirmed, Client, Endpoints, Load};
use warren_e2e::ops::{
    cluster_addr, cluster_status, ctl, ctl_ok, declare_durable_queue, list_queues, restart_node, start_node,
    start_three_nodes, wait_applied,
};
use warren_e2e::{connect, eventually, next_delivery, within, within_for, WarrenProcess};

/// How long the consumers may take to drain after the publishers stop.
const DRAIN_LIMIT: Duration = Duration::from_secs(20);

/// Bound on one load phase ("N more confirms").
const PHASE_LIMIT: Duration = Duration::from_secs(20);

fn cluster_addrs(nodes: &[WarrenProcess]) -> anyhow::Result<Vec<SocketAddr>> {
    nodes.iter().map(cluster_addr).collect()
}

fn endpoints_of(nodes: &[WarrenProcess]) -> Endpoints {
    let endpoints = Endpoints::default();
    for (node, id) in nodes.iter().zip(1u64..) {
        endpoints.set(id, node.amqp_uri());
    }
    endpoints
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_lists_queues_from_any_node_and_removes_and_adds_back_a_node() -> anyhow::Result<()> {
    let nodes = start_three_nodes().await?;
    let addrs = cluster_addrs(&nodes)?;

    // A durable queue declared through node 1 with 5 messages published
    // through node 2; a consumer on node 3 holds 2 of them unacked.
    declare_durable_queue(&nodes[0].amqp_uri(), "orders").await?;
    let confirmed = publish_confirmed(&nodes[1].amqp_uri(), "orders", 0..5).await?;
    assert_eq!(confirmed.len(), 5);
    let holder = connect(&nodes[2].amqp_uri()).await?;
    let holder_ch = within("channel.open", holder.create_channel()).await?;
    within("basic.qos", holder_ch.basic_qos(2, BasicQosOptions::default())).await?;
    let mut consumer = within(
        "basic.consume",
        holder_ch.basic_consume(
            "orders".into(),
            "holder".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    for _ in 0..2 {
        next_delivery(&mut consumer).await?;
    }
    // An exclusive, auto-delete queue of a connection on node 1.
    let owner = connect(&nodes[0].amqp_uri()).await?;
    let owner_ch = within("channel.open", owner.create_channel()).await?;
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    within(
        "queue.declare scratch",
        owner_ch.queue_declare("scratch".into(), exclusive, FieldTable::default()),
    )
    .await?;

    // Every node lists both, with the leader and the replica set.
    for (addr, id) in addrs.iter().zip(1u64..) {
        let listing = eventually(
            &format!("node {id} lists the queues"),
            Duration::from_secs(10),
            || async {
                let listing = list_queues(*addr, &[]).await?;
                let orders = listing.queue("orders").map(|q| (q.ready, q.unacked, q.consumers));
                let scratch = listing.queue("scratch").is_some();
                Ok((orders == Some((3, 2, 1)) && scratch).then_some(listing))
            },
        )
        .await?;
        assert_eq!(listing.leader, Some(1), "node {id}: {listing:?}");
        assert_eq!(listing.replicas, [1, 2, 3], "node {id}: {listing:?}");
        let orders = listing.queue("orders").expect("listed");
        assert!(orders.durable && !orders.exclusive && !orders.auto_delete, "{orders:?}");
        assert_eq!(orders.vhost, "/");
        let scratch = listing.queue("scratch").expect("listed");
        assert!(
            !scratch.durable && scratch.exclusive && scratch.auto_delete,
            "{scratch:?}"
        );
    }
    println!("{}", ctl_ok(addrs[2], &["list-queues"]).await?);
    let only_root = list_queues(addrs[1], &["--vhost", "/"]).await?;
    assert_eq!(only_root.queues.len(), 2, "{only_root:?}");
    let other = list_queues(addrs[1], &["--vhost", "/elsewhere"]).await?;
    assert!(other.queues.is_empty(), "{other:?}");

    // A wrong secret is refused, for list-queues as for the others.
    for args in [["list-queues"].as_slice(), &["cluster-status"], &["remove-node", "3"]] {
        let refused = ctl(addrs[1], Some("guess"), args).await?;
        assert!(!refused.success, "{args:?} with a wrong secret: {refused:?}");
        assert!(
            refused.stderr.contains("wrong cluster secret"),
            "{args:?}: {}",
            refused.stderr
        );
    }
    assert_eq!(cluster_status(addrs[0]).await?.voters(), [1, 2, 3]);

    // Node 3's consumer goes away; node 3 is removed through node 2 (a
    // follower, which names the leader), then added back through node 3
    // itself with add-node. It kept its data, so its id may come back.
    within("connection.close", holder.close(200, "done".into())).await?;
    let removed = ctl_ok(addrs[1], &["remove-node", "3"]).await?;
    println!("{removed}");
    let voters = cluster_status(addrs[0]).await?.voters();
    assert_eq!(voters, [1, 2], "after remove-node 3");
    let node3 = addrs[2].to_string();
    let added = ctl_ok(addrs[1], &["add-node", "--id", "3", "--addr", &node3]).await?;
    println!("{added}");
    let status = cluster_status(addrs[0]).await?;
    assert_eq!(status.voters(), [1, 2, 3], "after add-node 3: {status:?}");
    // Adding a voter again changes nothing.
    ctl_ok(addrs[2], &["add-node", "--id", "3", "--addr", &node3]).await?;
    assert_eq!(cluster_status(addrs[1]).await?.voters(), [1, 2, 3]);

    // Node 3 follows the log again: a publish through it is confirmed and
    // its own replica lists it (5 + 1 ready; the holder's 2 were requeued).
    let more = publish_confirmed(&nodes[2].amqp_uri(), "orders", 5..6).await?;
    assert_eq!(more.len(), 1);
    let listing = eventually("node 3 lists 6 ready", Duration::from_secs(10), || async {
        let listing = list_queues(addrs[2], &[]).await?;
        let ready = listing.queue("orders").map(|q| (q.ready, q.unacked));
        Ok((ready == Some((6, 0))).then_some(listing))
    })
    .await?;
    assert_eq!(listing.replicas, [1, 2, 3]);
    drop(owner);
    Ok(())
}

/// kill -9 of node `victim` while publishers (with confirms) and consumers
/// (manual acks) run on it and on the other nodes; the victim's clients move
/// to a survivor. Then the victim restarts and catches up, and the load goes
/// on. Every confirmed id must be consumed.
async fn a_node_killed_under_load_catches_up_and_no_confirmed_message_is_lost(victim: u64) -> anyhow::Result<()> {
    const QUEUE: &str = "load";
    let mut nodes = start_three_nodes().await?;
    let addrs = cluster_addrs(&nodes)?;
    declare_durable_queue(&nodes[0].amqp_uri(), QUEUE).await?;
    let leader = cluster_status(addrs[1]).await?.leader;
    assert_eq!(leader, Some(1), "the bootstrapping node leads");
    let victim_index = usize::try_from(victim - 1)?;
    let others: Vec<u64> = (1..=3).filter(|&n| n != victim).collect();
    let survivor_addr = addrs[usize::try_from(others[0] - 1)?];

    // Clients on the survivors and on the victim; the victim's move on to
    // the survivors when it dies.
    let endpoints = endpoints_of(&nodes);
    let load = Load::start(
        vec![
            Client::new(
                &format!("publisher-on-{}", others[0]),
                &[others[0], others[1]],
                &endpoints,
                QUEUE,
            ),
            Client::new(
                &format!("publisher-on-{victim}"),
                &[victim, others[0], others[1]],
                &endpoints,
                QUEUE,
            ),
        ],
        vec![
            Client::new(
                &format!("consumer-on-{}", others[1]),
                &[others[1], others[0]],
                &endpoints,
                QUEUE,
            ),
            Client::new(
                &format!("consumer-on-{victim}"),
                &[victim, others[1], others[0]],
                &endpoints,
                QUEUE,
            ),
        ],
    );
    let started = Instant::now();
    load.confirm_more(2000, PHASE_LIMIT).await?;
    println!(
        "{:?}: {} confirmed; kill -9 of node {victim}",
        started.elapsed(),
        load.confirmed()
    );
    nodes[victim_index].kill9();
    // Enough while it is down that it has a real backlog to catch up on.
    let reached = load.confirm_more(5000, PHASE_LIMIT).await?;
    println!(
        "{:?}: {reached} confirmed with node {victim} down; restarting it",
        started.elapsed()
    );

    let restart_began = Instant::now();
    let victim_node = restart_node(nodes.remove(victim_index)).await?;
    let to_ready = restart_began.elapsed();
    endpoints.set(victim, victim_node.amqp_uri());
    nodes.insert(victim_index, victim_node);
    let leader_applied = cluster_status(survivor_addr)
        .await?
        .leader_applied()
        .ok_or_else(|| anyhow::anyhow!("the leader reports no applied index"))?;
    wait_applied(survivor_addr, victim, leader_applied, Duration::from_secs(30)).await?;
    let catch_up = restart_began.elapsed();
    println!(
        "node {victim} restarted: serving AMQP after {to_ready:?}, applied the leader's index {leader_applied} \
         after {catch_up:?} (catch-up time)"
    );

    let reached = load.confirm_more(500, PHASE_LIMIT).await?;
    println!(
        "{:?}: {reached} confirmed after the restart; draining",
        started.elapsed()
    );
    let shared = load.shared.clone();
    // What every node's replica says while the consumers drain, printed
    // if something is lost.
    let during_drain = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let watcher = {
        let (addrs, seen) = (addrs.clone(), during_drain.clone());
        tokio::spawn(async move {
            loop {
                for (addr, id) in addrs.iter().zip(1u64..) {
                    let listing = ctl_ok(*addr, &["list-queues"])
                        .await
                        .unwrap_or_else(|e| format!("{e:#}"));
                    seen.lock().expect("not poisoned").push(format!("node {id}: {listing}"));
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
    };
    let report = load.stop_and_drain(DRAIN_LIMIT).await?;
    watcher.abort();
    let during_drain = during_drain.lock().expect("not poisoned").join("\n");
    let errors = warren_e2e::load::tally(&shared).errors.clone();
    println!("kill -9 of node {victim} under load: {report}; catch-up {catch_up:?}");
    if !report.lost.is_empty() {
        println!("lost ids: {:?}\nsession errors: {errors:#?}", report.lost);
        println!("listings during the drain:\n{during_drain}");
        println!("cluster-status: {}", ctl_ok(survivor_addr, &["cluster-status"]).await?);
        for (addr, id) in addrs.iter().zip(1u64..) {
            println!("list-queues on node {id}: {}", ctl_ok(*addr, &["list-queues"]).await?);
        }
    }
    assert!(
        report.lost.is_empty(),
        "{} confirmed messages never consumed, first {:?}",
        report.lost.len(),
        report.lost.first()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_killed_under_load_catches_up_and_no_confirmed_message_is_lost() -> anyhow::Result<()> {
    a_node_killed_under_load_catches_up_and_no_confirmed_message_is_lost(3).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_under_load_catches_up_and_no_confirmed_message_is_lost() -> anyhow::Result<()> {
    a_node_killed_under_load_catches_up_and_no_confirmed_message_is_lost(1).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_cluster_killed_and_restarted_keeps_its_durable_queue_and_confirmed_messages() -> anyhow::Result<()> {
    const QUEUE: &str = "keep";
    let nodes = start_three_nodes().await?;
    let addrs = cluster_addrs(&nodes)?;
    declare_durable_queue(&nodes[1].amqp_uri(), QUEUE).await?;
    let confirmed = publish_confirmed(&nodes[2].amqp_uri(), QUEUE, 0..300).await?;
    assert_eq!(confirmed.len(), 300, "every publish is confirmed");

    // Ids 0..100 consumed and acked through node 1; 100..125 delivered to a
    // consumer on node 2 and still unacked when everything dies, 125..200
    // assigned to it too and held by node 2 (prefetch 25: the core assigns
    // four times that, ADR 0026).
    {
        let conn = connect(&nodes[0].amqp_uri()).await?;
        let ch = within("channel.open", conn.create_channel()).await?;
        for expected in 0..100u64 {
            let message = warren_e2e::amqp::get_unacked(&ch, QUEUE)
                .await?
                .ok_or_else(|| anyhow::anyhow!("queue empty at {expected}"))?;
            assert_eq!(warren_e2e::amqp::text(&message.delivery.data), expected.to_string());
            within("basic.ack", message.delivery.ack(BasicAckOptions::default())).await?;
        }
        within("connection.close", conn.close(200, "done".into())).await?;
    }
    let holder = connect(&nodes[1].amqp_uri()).await?;
    let holder_ch = within("channel.open", holder.create_channel()).await?;
    within("basic.qos", holder_ch.basic_qos(25, BasicQosOptions::default())).await?;
    let mut consumer = within(
        "basic.consume",
        holder_ch.basic_consume(
            QUEUE.into(),
            "holder".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    let mut held = BTreeSet::new();
    for _ in 0..25 {
        let delivery = next_delivery(&mut consumer).await?;
        held.insert(warren_e2e::amqp::text(&delivery.data).parse::<u64>()?);
    }
    assert_eq!(held, (100..125).collect::<BTreeSet<u64>>());
    // Every replica has applied the acks and the deliveries.
    for addr in &addrs {
        eventually(
            "100 ready and 100 unacked everywhere",
            Duration::from_secs(10),
            || async {
                let listing = list_queues(*addr, &[]).await?;
                let counts = listing.queue(QUEUE).map(|q| (q.ready, q.unacked));
                Ok((counts == Some((100, 100))).then_some(()))
            },
        )
        .await?;
    }
    let assigned: BTreeSet<u64> = (100..200).collect();

    // kill -9 of all three, then all three restart together (none can
    // serve before a majority is back).
    let mut nodes = nodes;
    for node in &mut nodes {
        node.kill9();
    }
    drop(consumer);
    drop(holder);
    let began = Instant::now();
    let restarts: Vec<_> = nodes.into_iter().map(|node| tokio::spawn(restart_node(node))).collect();
    let mut nodes = Vec::new();
    for restart in restarts {
        nodes.push(restart.await??);
    }
    println!(
        "the three nodes serve AMQP again {:?} after the restart",
        began.elapsed()
    );

    // The queue is there, durable, with the 200 unconsumed messages ready;
    // the 25 that were unacked come back redelivered, and so may the 75 the
    // dead node held (it cannot say it never sent them).
    let listing = eventually("the queue after the restart", Duration::from_secs(20), || async {
        let listing = list_queues(addrs[0], &[]).await?;
        let counts = listing.queue(QUEUE).map(|q| (q.ready, q.unacked));
        Ok((counts == Some((200, 0))).then_some(listing))
    })
    .await?;
    assert!(listing.queue(QUEUE).is_some_and(|q| q.durable), "{listing:?}");
    let conn = connect(&nodes[2].amqp_uri()).await?;
    let ch = within("channel.open", conn.create_channel()).await?;
    within("basic.qos", ch.basic_qos(100, BasicQosOptions::default())).await?;
    let mut consumer = within(
        "basic.consume",
        ch.basic_consume(
            QUEUE.into(),
            "after".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    let mut seen = BTreeSet::new();
    let mut redelivered = BTreeSet::new();
    while seen.len() < 200 {
        let delivery = next_delivery(&mut consumer).await?;
        let id: u64 = warren_e2e::amqp::text(&delivery.data).parse()?;
        assert!(seen.insert(id), "id {id} delivered twice after the restart");
        if delivery.redelivered {
            redelivered.insert(id);
        }
        within("basic.ack", delivery.ack(BasicAckOptions::default())).await?;
    }
    let lost: Vec<u64> = (100..300).filter(|id| !seen.contains(id)).collect();
    println!(
        "whole-cluster restart: confirmed 300, acked before 100, unacked at the crash 25, \
         consumed after {}, redelivered {}, lost {}",
        seen.len(),
        redelivered.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "lost after the restart: {lost:?}");
    assert!(
        redelivered.is_superset(&held) && redelivered.is_subset(&assigned),
        "the messages unacked at the crash come back redelivered, and only those the node held besides: {redelivered:?}"
    );
    let extra = within_for(Duration::from_millis(300), "more deliveries", async {
        Ok::<_, anyhow::Error>(consumer.next().await)
    })
    .await;
    assert!(!matches!(extra, Ok(Some(_))), "a delivery beyond the 200: {extra:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fourth_node_joins_and_a_node_is_removed_under_load_without_loss() -> anyhow::Result<()> {
    const QUEUE: &str = "members";
    let mut nodes = start_three_nodes().await?;
    let addrs = cluster_addrs(&nodes)?;
    declare_durable_queue(&nodes[0].amqp_uri(), QUEUE).await?;
    let endpoints = endpoints_of(&nodes);
    let load = Load::start(
        vec![
            Client::new("publisher-on-1", &[1, 2], &endpoints, QUEUE),
            Client::new("publisher-on-2", &[2, 1], &endpoints, QUEUE),
        ],
        vec![
            Client::new("consumer-on-2", &[2, 1], &endpoints, QUEUE),
            Client::new("consumer-on-1", &[1, 2], &endpoints, QUEUE),
        ],
    );
    let started = Instant::now();
    load.confirm_more(2000, PHASE_LIMIT).await?;

    // Node 4 joins through node 2 (a follower) while the load runs.
    let joined_at = Instant::now();
    let fourth = start_node(4, Some(addrs[1])).await?;
    let join_time = joined_at.elapsed();
    let addr4 = cluster_addr(&fourth)?;
    endpoints.set(4, fourth.amqp_uri());
    println!(
        "{:?}: node 4 joined and serves AMQP after {join_time:?}",
        started.elapsed()
    );
    assert_eq!(cluster_status(addr4).await?.voters(), [1, 2, 3, 4]);
    load.confirm_more(2000, PHASE_LIMIT).await?;

    // Node 3 is removed (asked through the new node 4), then stopped.
    let removed = ctl_ok(addr4, &["remove-node", "--id", "3"]).await?;
    println!("{:?}: {}", started.elapsed(), removed.trim());
    nodes[2].kill9();
    let status = cluster_status(addrs[0]).await?;
    assert_eq!(status.voters(), [1, 2, 4], "{status:?}");
    let reached = load.confirm_more(2000, PHASE_LIMIT).await?;
    println!("{:?}: {reached} confirmed with members 1, 2, 4", started.elapsed());

    let report = load.stop_and_drain(DRAIN_LIMIT).await?;
    println!("join of node 4 and removal of node 3 under load: {report}; join took {join_time:?}");
    let listing = list_queues(addr4, &[]).await?;
    assert_eq!(listing.replicas, [1, 2, 4], "{listing:?}");
    if !report.lost.is_empty() {
        println!("lost ids: {:?}", report.lost);
    }
    assert!(
        report.lost.is_empty(),
        "{} confirmed messages never consumed, first {:?}",
        report.lost.len(),
        report.lost.first()
    );
    drop(fourth);
    Ok(())
}
