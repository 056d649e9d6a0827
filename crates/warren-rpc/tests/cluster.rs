//! Three in-process nodes over real gRPC on loopback: join through a
//! member, a follower's requests forwarded to the leader, the secret.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use amq_protocol_types::FieldTable;
use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use warren_cluster::{EffectSink, JoinMode, Node, NodeConfig, PeerError, Peers};
use warren_core::{
    ChannelId, Command, ConnectionId, CoreError, Effect, ExchangeName, Message, NodeId, Outcome, Properties, QueueName,
    Request, VHost,
};
use warren_rpc::{serve, ClusterService, ClusterTls, GrpcNetwork, NetworkConfig, ServiceConfig};
use warren_store::MemStore;

const SECRET: &str = "test-secret";

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

    async fn wait_for_replies(&self, channel: ChannelId, count: usize) -> Vec<Result<Outcome, CoreError>> {
        for _ in 0..2000 {
            let replies = self.replies_to(channel);
            if replies.len() >= count {
                return replies;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "expected {count} replies to {channel:?}, got {:?}",
            self.replies_to(channel)
        );
    }
}

struct TestNode {
    node: Node,
    sink: Arc<CollectingSink>,
    addr: String,
    stop: Option<oneshot::Sender<()>>,
}

impl TestNode {
    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.node.shutdown().await?;
        Ok(())
    }
}

fn network() -> GrpcNetwork {
    GrpcNetwork::new(NetworkConfig {
        secret: SECRET.to_owned(),
        ..NetworkConfig::default()
    })
}

async fn start_node(node_id: u64, join: Vec<String>) -> anyhow::Result<TestNode> {
    let node = open_node(node_id, join).await?;
    node.node.ready().await?;
    Ok(node)
}

/// A node opened and serving its cluster port, not yet [`Node::ready`].
async fn open_node(node_id: u64, join: Vec<String>) -> anyhow::Result<TestNode> {
    open_node_with(node_id, join, None, warren_rpc::MAX_MESSAGE_BYTES).await
}

/// [`open_node`] with mutual TLS on its port and to its peers when given,
/// and a bound on the RPCs its service decodes.
async fn open_node_with(
    node_id: u64,
    join: Vec<String>,
    tls: Option<ClusterTls>,
    max_message_bytes: usize,
) -> anyhow::Result<TestNode> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let config = NodeConfig {
        node_id,
        cluster_addr: addr.clone(),
        heartbeat_interval_ms: 50,
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
        join,
        start_timeout_ms: 30_000,
        ..NodeConfig::default()
    };
    let sink = Arc::new(CollectingSink::default());
    let net = GrpcNetwork::new(NetworkConfig {
        secret: SECRET.to_owned(),
        tls: tls.clone(),
        node_id,
        incarnation: config.incarnation.clone(),
        ..NetworkConfig::default()
    });
    let node = Node::open_with(
        config,
        Arc::new(MemStore::new()),
        net.clone(),
        Arc::new(net),
        sink.clone(),
    )
    .await?;
    let (stop, stopped) = oneshot::channel::<()>();
    let service = ClusterService::new(
        node.clone(),
        ServiceConfig {
            secret: SECRET.to_owned(),
            tls,
            max_message_bytes,
            ..ServiceConfig::default()
        },
    );
    tokio::spawn(serve(listener, service, async {
        let _ = stopped.await;
    }));
    Ok(TestNode {
        node,
        sink,
        addr,
        stop: Some(stop),
    })
}

fn channel(node: u64) -> ChannelId {
    ChannelId {
        conn: ConnectionId {
            node: NodeId(node),
            boot: 1,
            seq: 1,
        },
        channel: 1,
    }
}

fn request(origin: ChannelId, command: Command) -> Request {
    Request {
        origin: Some(origin),
        command,
    }
}

fn declare(name: &str) -> Command {
    Command::DeclareQueue {
        vhost: VHost::from("/"),
        name: QueueName::from(name),
        passive: false,
        durable: true,
        exclusive: false,
        auto_delete: false,
        arguments: FieldTable::default(),
    }
}

fn publish(queue: &str, body: &str) -> Command {
    Command::Publish {
        vhost: VHost::from("/"),
        mandatory: false,
        message: Arc::new(Message {
            exchange: ExchangeName::default_exchange(),
            routing_key: queue.to_owned(),
            properties: Properties::default().into(),
            body: Bytes::from(body.to_owned()).into(),
        }),
    }
}

fn ready_count(node: &Node, queue: &str) -> Option<u64> {
    node.read(|broker| {
        broker
            .queue_summaries()
            .into_iter()
            .find(|q| q.name.as_str() == queue)
            .map(|q| q.messages_ready)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_join_through_a_member_and_forward_their_requests_to_the_leader() -> anyhow::Result<()> {
    let first = start_node(1, Vec::new()).await?;
    let second = start_node(2, vec![first.addr.clone()]).await?;
    // The third joins through a follower: it is pointed at the leader.
    let third = start_node(3, vec![second.addr.clone()]).await?;

    let status = first.node.metrics();
    assert!(status.is_leader, "{status:?}");
    assert_eq!(status.members.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(third.node.metrics().leader, Some(1));

    // Requests submitted on a follower reach the log through the leader;
    // their replies come from the follower's own apply, in order.
    let origin = channel(3);
    let proposer = third.node.proposer();
    proposer.submit(request(origin, declare("jobs"))).await?;
    for i in 0..50 {
        proposer
            .submit(request(origin, publish("jobs", &format!("job {i}"))))
            .await?;
    }
    let replies = third.sink.wait_for_replies(origin, 51).await;
    assert_eq!(replies.len(), 51, "{replies:?}");
    assert!(matches!(replies[0], Ok(Outcome::QueueDeclared { .. })), "{replies:?}");
    assert!(
        replies[1..]
            .iter()
            .all(|r| matches!(r, Ok(Outcome::Published { routed: true, .. }))),
        "{replies:?}"
    );
    assert!(
        first.sink.replies_to(origin).is_empty(),
        "other nodes do not answer node 3's channels"
    );
    for node in [&first, &second, &third] {
        for _ in 0..500 {
            if ready_count(&node.node, "jobs") == Some(50) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            ready_count(&node.node, "jobs"),
            Some(50),
            "node {}",
            node.node.metrics().node_id
        );
    }

    // Every replica lists the queue with the leader and the voters.
    for node in [&first, &second, &third] {
        let listing = network().list_queues(&node.addr, Some("/".to_owned())).await?;
        assert_eq!(listing.leader_id, Some(1));
        assert_eq!(listing.voters, [1, 2, 3]);
        let jobs: Vec<_> = listing.queues.iter().filter(|q| q.name == "jobs").collect();
        assert_eq!(jobs.len(), 1, "{listing:?}");
        assert_eq!((jobs[0].vhost.as_str(), jobs[0].messages_ready), ("/", 50));
        let other = network().list_queues(&node.addr, Some("/nope".to_owned())).await?;
        assert!(other.queues.is_empty(), "{other:?}");
    }

    // A follower leaves; the others keep a majority and keep committing.
    let left = network().leave(&second.addr, 3).await;
    let index = match left {
        Ok(index) => index,
        Err(PeerError::NotLeader {
            leader_addr: Some(leader),
            ..
        }) => network().leave(&leader, 3).await?,
        Err(e) => return Err(e.into()),
    };
    assert!(index > 0);
    assert_eq!(
        first.node.metrics().members.keys().copied().collect::<Vec<_>>(),
        vec![1, 2]
    );

    third.stop().await?;
    second.stop().await?;
    first.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_the_wrong_secret_is_refused() -> anyhow::Result<()> {
    let node = start_node(1, Vec::new()).await?;
    let intruder = GrpcNetwork::new(NetworkConfig {
        secret: "guess".to_owned(),
        ..NetworkConfig::default()
    });
    let joined = intruder.join(&node.addr, 9, "127.0.0.1:1", 0, JoinMode::Fresh).await;
    // Refused for good: asking again with the same secret cannot help.
    assert!(
        matches!(&joined, Err(PeerError::Refused(reason)) if reason.contains("wrong cluster secret")),
        "{joined:?}"
    );
    let status = intruder.status(&node.addr).await;
    assert!(status.is_err(), "{status:?}");
    let listing = intruder.list_queues(&node.addr, None).await;
    assert!(
        matches!(&listing, Err(PeerError::Failed(reason)) if reason.contains("wrong cluster secret")),
        "{listing:?}"
    );
    assert_eq!(network().status(&node.addr).await?.node_id, 1);
    let listing = network().list_queues(&node.addr, None).await?;
    assert_eq!((listing.node_id, listing.voters.as_slice()), (1, [1].as_slice()));
    assert_eq!(node.node.metrics().members.len(), 1, "nobody was added");
    node.stop().await?;
    Ok(())
}

/// The secret is checked in the request's metadata before the body is
/// decoded: a caller without it gets `UNAUTHENTICATED` even for a body that
/// is not a request at all, or one that carries the right secret inside
/// (the body's copy alone is not enough), and `PERMISSION_DENIED` for a
/// wrong one — never a decoding error, which would mean the node read it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_is_checked_before_the_request_body_is_read() -> anyhow::Result<()> {
    use warren_rpc::pb::warren_cluster_client::WarrenClusterClient;
    let node = start_node(1, Vec::new()).await?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", node.addr))?
        .connect()
        .await?;
    let header = Some(warren_rpc::pb::Header {
        group_id: warren_rpc::DEFAULT_GROUP,
        secret: SECRET.to_owned(),
        ..Default::default()
    });
    let mut bare = WarrenClusterClient::new(channel.clone()).max_encoding_message_size(usize::MAX);
    // The secret in the body only.
    let status = bare
        .status(warren_rpc::pb::StatusRequest { header: header.clone() })
        .await
        .expect_err("no metadata");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    // 32 MiB of bytes that decode to nothing sensible.
    let garbage = warren_rpc::pb::RaftRequest {
        header: None,
        payload: vec![0xff; 32 * 1024 * 1024],
    };
    let status = bare.append_entries(garbage.clone()).await.expect_err("no metadata");
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    let mut wrong = WarrenClusterClient::with_interceptor(channel.clone(), warren_rpc::SecretMetadata::new("guess"))
        .max_encoding_message_size(usize::MAX);
    let status = wrong.append_entries(garbage.clone()).await.expect_err("wrong secret");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    // With the secret the same garbage is read, and refused as such.
    let mut right = WarrenClusterClient::with_interceptor(channel, warren_rpc::SecretMetadata::new(SECRET))
        .max_encoding_message_size(usize::MAX);
    let status = right.append_entries(garbage).await.expect_err("garbage");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let reply = right
        .status(warren_rpc::pb::StatusRequest { header })
        .await?
        .into_inner();
    assert_eq!(reply.node_id, 1);
    node.stop().await?;
    Ok(())
}

/// The largest request a node decodes follows its configuration
/// (`rpc_message_limit` of `max_message_size`): with the secret, a request
/// over the bound is refused as it arrives (`OUT_OF_RANGE`), one under it
/// is read (and refused as the garbage it is).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_request_a_node_reads_follows_its_configuration() -> anyhow::Result<()> {
    use warren_rpc::pb::warren_cluster_client::WarrenClusterClient;
    let limit = warren_rpc::rpc_message_limit(16 * 1024 * 1024);
    assert_eq!(limit, 32 * 1024 * 1024, "twice the default max_message_size");
    assert_eq!(warren_rpc::rpc_message_limit(0), 16 * 1024 * 1024, "at least 16 MiB");
    assert_eq!(warren_rpc::rpc_message_limit(u64::MAX), warren_rpc::MAX_MESSAGE_BYTES);
    let node = open_node_with(1, Vec::new(), None, limit).await?;
    node.node.ready().await?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", node.addr))?
        .connect()
        .await?;
    let mut client = WarrenClusterClient::with_interceptor(channel, warren_rpc::SecretMetadata::new(SECRET))
        .max_encoding_message_size(usize::MAX);
    let garbage = |bytes: usize| warren_rpc::pb::RaftRequest {
        header: None,
        payload: vec![0xff; bytes],
    };
    let over = client
        .append_entries(garbage(limit + 1))
        .await
        .expect_err("over the bound");
    assert_eq!(over.code(), tonic::Code::OutOfRange, "{over:?}");
    let under = client.append_entries(garbage(limit - 1024)).await.expect_err("garbage");
    assert_eq!(under.code(), tonic::Code::InvalidArgument, "{under:?}");
    assert_eq!(node.node.metrics().members.len(), 1);
    node.stop().await?;
    Ok(())
}

/// A node opened on an empty store with a join list takes no Raft message
/// (append, vote, snapshot) until the leader agreed that it joins as new
/// (ADR 0022): `FAILED_PRECONDITION` before its body is decoded. Once it
/// joined, the same bytes are read (and refused as garbage). A fresh node
/// asking with the id of a voter is refused for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_node_takes_no_raft_message_until_it_is_let_in() -> anyhow::Result<()> {
    use warren_rpc::pb::warren_cluster_client::WarrenClusterClient;
    let first = start_node(1, Vec::new()).await?;
    let second = open_node(2, vec![first.addr.clone()]).await?;
    assert!(!second.node.takes_raft_messages());
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", second.addr))?
        .connect()
        .await?;
    let mut client = WarrenClusterClient::with_interceptor(channel, warren_rpc::SecretMetadata::new(SECRET));
    let garbage = warren_rpc::pb::RaftRequest {
        header: Some(network().header()),
        payload: vec![0xff; 64],
    };
    for status in [
        client.append_entries(garbage.clone()).await.expect_err("gated"),
        client.vote(garbage.clone()).await.expect_err("gated"),
        client.install_snapshot(garbage.clone()).await.expect_err("gated"),
    ] {
        assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    }

    second.node.ready().await?;
    assert!(second.node.takes_raft_messages());
    let status = client.vote(garbage).await.expect_err("garbage");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert_eq!(first.node.metrics().members.len(), 2);

    for mode in [JoinMode::CheckFresh, JoinMode::Fresh] {
        let refused = network().join(&first.addr, 2, &second.addr, 0, mode).await;
        assert!(
            matches!(&refused, Err(PeerError::Refused(reason)) if reason.contains("remove-node 2")),
            "{mode:?}: {refused:?}"
        );
    }
    // With its log (a restart), the same voter is taken back as it is.
    let index = network()
        .join(&first.addr, 2, &second.addr, 0, JoinMode::Rejoin)
        .await?;
    assert!(index > 0);
    let index = network()
        .join(
            &first.addr,
            2,
            &second.addr,
            second.node.incarnation(),
            JoinMode::Rejoin,
        )
        .await?;
    assert!(index > 0);
    second.stop().await?;
    first.stop().await?;
    Ok(())
}

/// The membership records each node's incarnation when it joins (ADR
/// 0033); a voter asking to rejoin as another incarnation is refused for
/// good, and a Raft message meant for another node, or another incarnation
/// of this one, is refused before its body is decoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_messages_reach_only_the_incarnation_the_membership_names() -> anyhow::Result<()> {
    use warren_rpc::pb::warren_cluster_client::WarrenClusterClient;
    let first = start_node(1, Vec::new()).await?;
    let second = start_node(2, vec![first.addr.clone()]).await?;
    let (one, two) = (first.node.incarnation(), second.node.incarnation());
    assert!(one != 0 && two != 0 && one != two, "{one:x} {two:x}");
    let recorded: Vec<(u64, u64)> = first
        .node
        .raft()
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .nodes()
        .map(|(id, member)| (*id, member.incarnation))
        .collect();
    assert_eq!(recorded, vec![(1, one), (2, two)]);

    // A fresh node's join retried after its reply was lost: the same
    // incarnation is let in; another one (a wiped voter) is not.
    for mode in [JoinMode::CheckFresh, JoinMode::Fresh] {
        network().join(&first.addr, 2, &second.addr, two, mode).await?;
        let refused = network().join(&first.addr, 2, &second.addr, two ^ 1, mode).await;
        assert!(
            matches!(&refused, Err(PeerError::Refused(reason)) if reason.contains("remove-node 2")),
            "{mode:?}: {refused:?}"
        );
    }
    let refused = network()
        .join(&first.addr, 2, &second.addr, two ^ 1, JoinMode::Rejoin)
        .await;
    assert!(
        matches!(&refused, Err(PeerError::Refused(reason)) if reason.contains("incarnation") && reason.contains("remove-node 2")),
        "{refused:?}"
    );

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", second.addr))?
        .connect()
        .await?;
    let mut client = WarrenClusterClient::with_interceptor(channel, warren_rpc::SecretMetadata::new(SECRET));
    let to = |to_node: u64, to_incarnation: u64| warren_rpc::pb::RaftRequest {
        header: Some(warren_rpc::pb::Header {
            from_node: 1,
            from_incarnation: one,
            to_node,
            to_incarnation,
            ..network().header()
        }),
        payload: vec![0xff; 64],
    };
    for (request, says) in [
        (to(3, 0), "this is node 2"),
        (to(2, two ^ 1), "this is incarnation"),
        (to(3, two), "this is node 2"),
    ] {
        for status in [
            client.append_entries(request.clone()).await.expect_err("refused"),
            client.vote(request.clone()).await.expect_err("refused"),
            client.install_snapshot(request.clone()).await.expect_err("refused"),
        ] {
            assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
            assert!(status.message().contains(says), "{status:?}");
        }
    }
    // Meant for this incarnation (or for nobody in particular), the bytes
    // are decoded: garbage.
    for request in [to(2, two), to(0, 0)] {
        let status = client.vote(request).await.expect_err("garbage");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    }
    second.stop().await?;
    first.stop().await?;
    Ok(())
}

/// A CA and a certificate of it for 127.0.0.1 (a node's and a client's),
/// as PEM.
fn cluster_pki(ca_name: &str) -> anyhow::Result<ClusterTls> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, ca_name);
    let ca = ca_params.self_signed(&ca_key)?;
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?
        .signed_by(&key, &ca, &ca_key)?;
    Ok(ClusterTls {
        ca_pem: ca.pem().into_bytes(),
        cert_pem: cert.pem().into_bytes(),
        key_pem: key.serialize_pem().into_bytes(),
    })
}

/// Mutual TLS between nodes (ADR 0024): two nodes with certificates of
/// the cluster CA form a cluster and forward; a caller without TLS, or
/// with a certificate of another CA, is refused, secret or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_the_cluster_ca_talk_over_mutual_tls_and_others_are_refused() -> anyhow::Result<()> {
    let tls = cluster_pki("Warren cluster CA")?;
    let first = open_node_with(1, Vec::new(), Some(tls.clone()), warren_rpc::MAX_MESSAGE_BYTES).await?;
    first.node.ready().await?;
    let second = open_node_with(
        2,
        vec![first.addr.clone()],
        Some(tls.clone()),
        warren_rpc::MAX_MESSAGE_BYTES,
    )
    .await?;
    second.node.ready().await?;
    assert_eq!(first.node.metrics().members.len(), 2);

    // A request through the follower is forwarded to the leader over TLS.
    let origin = channel(2);
    second
        .node
        .proposer()
        .submit(request(origin, declare("over-tls")))
        .await?;
    let replies = second.sink.wait_for_replies(origin, 1).await;
    assert!(matches!(replies[0], Ok(Outcome::QueueDeclared { .. })), "{replies:?}");

    let with_tls = GrpcNetwork::new(NetworkConfig {
        secret: SECRET.to_owned(),
        tls: Some(tls.clone()),
        ..NetworkConfig::default()
    });
    assert_eq!(with_tls.status(&first.addr).await?.node_id, 1);
    let plain = network().status(&first.addr).await;
    assert!(plain.is_err(), "a plain-text caller: {plain:?}");
    // A caller that trusts the cluster CA but shows another CA's
    // certificate is refused by the node; one that trusts another CA
    // refuses the node's certificate itself.
    let other = cluster_pki("Some other CA")?;
    let impostor = GrpcNetwork::new(NetworkConfig {
        secret: SECRET.to_owned(),
        tls: Some(ClusterTls {
            ca_pem: tls.ca_pem.clone(),
            ..other.clone()
        }),
        ..NetworkConfig::default()
    });
    let refused = impostor.status(&first.addr).await;
    // TLS 1.3: the client may see the node's UnknownCA alert, or only the
    // connection closed (the alert comes after its side of the handshake);
    // the same call with the cluster's certificate succeeded above.
    assert!(
        matches!(&refused, Err(PeerError::Failed(reason))
            if reason.contains("UnknownCA") || reason.contains("connection closed") || reason.contains("broken pipe")),
        "another CA's client certificate: {refused:?}"
    );
    let distrustful = GrpcNetwork::new(NetworkConfig {
        secret: SECRET.to_owned(),
        tls: Some(other),
        ..NetworkConfig::default()
    });
    let refused = distrustful.status(&first.addr).await;
    assert!(
        matches!(&refused, Err(PeerError::Failed(reason)) if reason.contains("UnknownIssuer")),
        "{refused:?}"
    );
    second.stop().await?;
    first.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_forwards_to_the_new_leader_after_the_leader_stops() -> anyhow::Result<()> {
    let first = start_node(1, Vec::new()).await?;
    let second = start_node(2, vec![first.addr.clone()]).await?;
    let third = start_node(3, vec![first.addr.clone()]).await?;
    let origin = channel(3);
    let proposer = third.node.proposer();
    proposer.submit(request(origin, declare("jobs"))).await?;
    assert!(matches!(
        third.sink.wait_for_replies(origin, 1).await[0],
        Ok(Outcome::QueueDeclared { .. })
    ));

    first.stop().await?;
    // Every request gets exactly one reply: `Unavailable` while no leader
    // can commit, then a publish through the new leader succeeds.
    let mut replies_seen = 1;
    let mut published = false;
    for attempt in 0..40 {
        proposer
            .submit(request(origin, publish("jobs", &format!("after {attempt}"))))
            .await?;
        replies_seen += 1;
        let replies = third.sink.wait_for_replies(origin, replies_seen).await;
        assert_eq!(replies.len(), replies_seen, "one reply per request: {replies:?}");
        match replies.last() {
            Some(Ok(Outcome::Published { routed: true, .. })) => {
                published = true;
                break;
            }
            Some(Err(CoreError::Unavailable(_))) => tokio::time::sleep(Duration::from_millis(100)).await,
            other => panic!("unexpected reply {other:?}"),
        }
    }
    assert!(published, "no publish committed after the leader stopped");
    let leader = third.node.metrics().leader;
    assert!(matches!(leader, Some(2 | 3)), "new leader: {leader:?}");
    third.stop().await?;
    second.stop().await?;
    Ok(())
}
