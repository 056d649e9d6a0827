//! The client side: openraft's network and [`Peers`] over tonic.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::de::DeserializeOwned;
use tonic::metadata::BinaryMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use warren_cluster::Member;
use warren_cluster::{BoxFuture, ClusterIdCell, IncarnationCell, JoinMode, PeerError, Peers, Proposal, TypeConfig};

use crate::codec::{decode, encode};
use crate::pb::warren_cluster_client::WarrenClusterClient;
use crate::pb::{self, forward_reply, join_reply, stand_for_election_reply};
use crate::{DEFAULT_GROUP, MAX_MESSAGE_BYTES};

/// Puts the cluster secret in every request's metadata
/// ([`crate::SECRET_METADATA`]), where the service checks it first, and
/// the cluster's id once this node knows it ([`crate::CLUSTER_ID_METADATA`]).
#[derive(Clone, Debug)]
pub struct SecretMetadata {
    secret: BinaryMetadataValue,
    cluster_id: Arc<ClusterIdCell>,
}

impl SecretMetadata {
    /// Sends `secret` and no cluster id.
    pub fn new(secret: &str) -> Self {
        Self::with_cluster_id(secret, Arc::default())
    }

    /// Sends `secret`, and the id in `cluster_id` once it is known.
    pub fn with_cluster_id(secret: &str, cluster_id: Arc<ClusterIdCell>) -> Self {
        Self {
            secret: BinaryMetadataValue::from_bytes(secret.as_bytes()),
            cluster_id,
        }
    }
}

impl Interceptor for SecretMetadata {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let metadata = request.metadata_mut();
        metadata.insert_bin(crate::SECRET_METADATA, self.secret.clone());
        if let Some(id) = self.cluster_id.get() {
            if let Ok(value) = id.parse() {
                metadata.insert(crate::CLUSTER_ID_METADATA, value);
            }
        }
        Ok(request)
    }
}

/// A client of the cluster service that sends the secret.
pub type ClusterClient = WarrenClusterClient<InterceptedService<Channel, SecretMetadata>>;

/// How the client reaches other nodes.
#[derive(Clone, Debug)]
pub struct NetworkConfig {
    /// Sent with every request; peers refuse a different one.
    pub secret: String,
    pub group_id: u64,
    /// Bound on establishing a TCP connection to a peer.
    pub connect_timeout: Duration,
    /// Bound on a `Join` (the leader waits until the new node caught up).
    pub join_timeout: Duration,
    /// Bound on a `Status` call.
    pub status_timeout: Duration,
    /// Mutual TLS to peers (ADR 0024); `None`: plain HTTP/2.
    pub tls: Option<crate::ClusterTls>,
    /// Sent with every request once known (the node's own cell, see
    /// [`warren_cluster::NodeConfig::cluster_id`]).
    pub cluster_id: Arc<ClusterIdCell>,
    /// This node's id and incarnation, sent in every request's header
    /// (ADR 0033; the node's own cell: see
    /// [`warren_cluster::NodeConfig::incarnation`]). Node 0: not a node
    /// (`warren ctl`).
    pub node_id: u64,
    pub incarnation: Arc<IncarnationCell>,
    /// Largest request sent or reply taken ([`crate::rpc_message_limit`]).
    pub max_message_bytes: usize,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            secret: crate::DEV_SECRET.to_owned(),
            group_id: DEFAULT_GROUP,
            connect_timeout: Duration::from_millis(500),
            join_timeout: Duration::from_secs(60),
            status_timeout: Duration::from_secs(2),
            tls: None,
            cluster_id: Arc::default(),
            node_id: 0,
            incarnation: Arc::default(),
            max_message_bytes: MAX_MESSAGE_BYTES,
        }
    }
}

/// openraft's `RaftNetworkFactory` and Warren's [`Peers`] over gRPC. Holds
/// one lazily connected channel per peer address; a channel reconnects by
/// itself after a failure. Cheap to clone.
#[derive(Clone, Debug)]
pub struct GrpcNetwork {
    config: Arc<NetworkConfig>,
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl GrpcNetwork {
    pub fn new(config: NetworkConfig) -> Self {
        Self {
            config: Arc::new(config),
            channels: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// A client for the node at `addr` (`host:port`), on the shared channel.
    ///
    /// # Errors
    /// `addr` does not form a valid URI.
    pub fn client(&self, addr: &str) -> Result<ClusterClient, tonic::transport::Error> {
        let channel = {
            let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
            match channels.get(addr) {
                Some(channel) => channel.clone(),
                None => {
                    let scheme = if self.config.tls.is_some() { "https" } else { "http" };
                    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))?;
                    if let Some(tls) = &self.config.tls {
                        endpoint = endpoint.tls_config(tls.client())?;
                    }
                    let channel = endpoint
                        .connect_timeout(self.config.connect_timeout)
                        .tcp_nodelay(true)
                        .http2_keep_alive_interval(Duration::from_secs(10))
                        .keep_alive_timeout(Duration::from_secs(5))
                        .connect_lazy();
                    channels.insert(addr.to_owned(), channel.clone());
                    channel
                }
            }
        };
        Ok(WarrenClusterClient::with_interceptor(
            channel,
            SecretMetadata::with_cluster_id(&self.config.secret, self.config.cluster_id.clone()),
        )
        .max_decoding_message_size(self.config.max_message_bytes)
        .max_encoding_message_size(self.config.max_message_bytes))
    }

    /// The header every request carries (with no callee: see
    /// [`GrpcNetwork::header_to`]).
    pub fn header(&self) -> pb::Header {
        self.header_to(&Callee::default())
    }

    /// The header of a Raft message to `callee`.
    fn header_to(&self, callee: &Callee) -> pb::Header {
        pb::Header {
            group_id: self.config.group_id,
            secret: self.config.secret.clone(),
            from_node: self.config.node_id,
            from_incarnation: self.config.incarnation.get(),
            to_node: callee.node_id,
            to_incarnation: callee.incarnation,
        }
    }

    /// This node's view of the cluster from the node at `addr`.
    ///
    /// # Errors
    /// The call failed or timed out.
    pub async fn status(&self, addr: &str) -> Result<pb::StatusReply, PeerError> {
        let mut client = self.client(addr).map_err(|e| PeerError::Failed(e.to_string()))?;
        let request = pb::StatusRequest {
            header: Some(self.header()),
        };
        let reply = tokio::time::timeout(self.config.status_timeout, client.status(request))
            .await
            .map_err(|_| PeerError::Failed(format!("status of {addr}: timed out")))?
            .map_err(|status| PeerError::Failed(format!("status of {addr}: {status}")))?;
        Ok(reply.into_inner())
    }

    /// The queues of the replica at `addr` (only those of `vhost` if given),
    /// with the leader and voters that node knows of.
    ///
    /// # Errors
    /// The call failed (e.g. a wrong secret) or timed out.
    pub async fn list_queues(&self, addr: &str, vhost: Option<String>) -> Result<pb::ListQueuesReply, PeerError> {
        let mut client = self.client(addr).map_err(|e| PeerError::Failed(e.to_string()))?;
        let request = pb::ListQueuesRequest {
            header: Some(self.header()),
            vhost,
        };
        let reply = tokio::time::timeout(self.config.status_timeout, client.list_queues(request))
            .await
            .map_err(|_| PeerError::Failed(format!("list-queues of {addr}: timed out")))?
            .map_err(|status| PeerError::Failed(format!("list-queues of {addr}: {status}")))?;
        Ok(reply.into_inner())
    }

    /// Runs the admin command `verb` on the node at `addr`.
    ///
    /// # Errors
    /// The call failed (the node's reason: an unknown user, a bad pattern,
    /// a wrong secret) or timed out.
    pub async fn admin(&self, addr: &str, verb: &str, args: Vec<String>) -> Result<pb::AdminReply, PeerError> {
        let mut client = self.client(addr).map_err(|e| PeerError::Failed(e.to_string()))?;
        let request = pb::AdminRequest {
            header: Some(self.header()),
            verb: verb.to_owned(),
            args,
        };
        // A change waits for Raft: as long as a membership change may.
        let reply = tokio::time::timeout(self.config.join_timeout, client.admin(request))
            .await
            .map_err(|_| PeerError::Failed(format!("{verb} on {addr}: timed out")))?
            .map_err(|status| PeerError::Failed(status.message().to_owned()))?;
        Ok(reply.into_inner())
    }

    /// Asks the node at `addr` to remove `node_id` from the cluster.
    ///
    /// # Errors
    /// The call failed, timed out, or the node is not the leader.
    pub async fn leave(&self, addr: &str, node_id: u64) -> Result<u64, PeerError> {
        let mut client = self.client(addr).map_err(|e| PeerError::Failed(e.to_string()))?;
        let request = pb::LeaveRequest {
            header: Some(self.header()),
            node_id,
        };
        let reply = tokio::time::timeout(self.config.join_timeout, client.leave(request))
            .await
            .map_err(|_| PeerError::Failed(format!("leave through {addr}: timed out")))?
            .map_err(|status| PeerError::Failed(format!("leave through {addr}: {status}")))?;
        match reply.into_inner().result {
            Some(pb::leave_reply::Result::Left(committed)) => Ok(committed.log_index),
            Some(pb::leave_reply::Result::NotLeader(not_leader)) => Err(not_leader_error(not_leader)),
            Some(pb::leave_reply::Result::Failed(reason)) => Err(PeerError::Failed(reason)),
            None => Err(PeerError::Failed("empty leave reply".to_owned())),
        }
    }
}

fn not_leader_error(not_leader: pb::NotLeader) -> PeerError {
    PeerError::NotLeader {
        leader_id: not_leader.leader_id,
        leader_addr: Some(not_leader.leader_addr).filter(|addr| !addr.is_empty()),
    }
}

impl Peers for GrpcNetwork {
    fn forward(&self, addr: &str, proposal: Proposal) -> BoxFuture<Result<(), PeerError>> {
        let client = self.client(addr);
        let header = self.header();
        let addr = addr.to_owned();
        Box::pin(async move {
            let mut client = client.map_err(|e| PeerError::Failed(e.to_string()))?;
            let proposal = encode(&proposal).map_err(|e| PeerError::Failed(e.to_string()))?;
            let request = pb::ForwardRequest {
                header: Some(header),
                proposal,
            };
            let reply = client
                .forward(request)
                .await
                .map_err(|status| PeerError::Failed(format!("forward to {addr}: {status}")))?;
            match reply.into_inner().result {
                Some(forward_reply::Result::Committed(_)) => Ok(()),
                Some(forward_reply::Result::NotLeader(not_leader)) => Err(not_leader_error(not_leader)),
                Some(forward_reply::Result::Failed(reason)) => Err(PeerError::Failed(reason)),
                None => Err(PeerError::Failed("empty forward reply".to_owned())),
            }
        })
    }

    fn join(
        &self,
        via: &str,
        node_id: u64,
        addr: &str,
        incarnation: u64,
        mode: JoinMode,
    ) -> BoxFuture<Result<u64, PeerError>> {
        let client = self.client(via);
        let request = pb::JoinRequest {
            header: Some(self.header()),
            node_id,
            addr: addr.to_owned(),
            fresh: mode != JoinMode::Rejoin,
            check_only: mode == JoinMode::CheckFresh,
            incarnation,
        };
        let via = via.to_owned();
        let limit = self.config.join_timeout;
        let cluster_id = self.config.cluster_id.clone();
        Box::pin(async move {
            let mut client = client.map_err(|e| PeerError::Failed(e.to_string()))?;
            let reply = tokio::time::timeout(limit, client.join(request))
                .await
                .map_err(|_| PeerError::Failed(format!("join through {via}: timed out")))?
                .map_err(|status| match status.code() {
                    // Another secret or another cluster: asking again
                    // will not change the answer.
                    Code::PermissionDenied => PeerError::Refused(format!("join through {via}: {}", status.message())),
                    _ => PeerError::Failed(format!("join through {via}: {status}")),
                })?;
            let reply = reply.into_inner();
            // Learned before the node opens its gate (ADR 0022): from its
            // first Raft message on, it refuses another cluster's. Only from
            // a yes: a refusal may come from a cluster it must not join.
            if !reply.cluster_id.is_empty() && matches!(reply.result, Some(join_reply::Result::Joined(_))) {
                cluster_id.learn(&reply.cluster_id);
            }
            match reply.result {
                Some(join_reply::Result::Joined(committed)) => Ok(committed.log_index),
                Some(join_reply::Result::NotLeader(not_leader)) => Err(not_leader_error(not_leader)),
                Some(join_reply::Result::Failed(reason)) => Err(PeerError::Failed(reason)),
                Some(join_reply::Result::Refused(reason)) => Err(PeerError::Refused(reason)),
                None => Err(PeerError::Failed("empty join reply".to_owned())),
            }
        })
    }

    fn in_a_cluster(&self, addr: &str) -> BoxFuture<Result<bool, PeerError>> {
        let network = self.clone();
        let addr = addr.to_owned();
        Box::pin(async move { Ok(!network.status(&addr).await?.members.is_empty()) })
    }

    fn applied_index(&self, addr: &str) -> BoxFuture<Result<Option<u64>, PeerError>> {
        let network = self.clone();
        let addr = addr.to_owned();
        Box::pin(async move { Ok(network.status(&addr).await?.last_applied) })
    }

    fn stand_for_election(&self, addr: &str, leader_id: u64, term: u64) -> BoxFuture<Result<(), PeerError>> {
        let client = self.client(addr);
        let request = pb::StandForElectionRequest {
            header: Some(self.header()),
            leader_id,
            term,
        };
        let addr = addr.to_owned();
        let limit = self.config.status_timeout;
        Box::pin(async move {
            let mut client = client.map_err(|e| PeerError::Failed(e.to_string()))?;
            let reply = tokio::time::timeout(limit, client.stand_for_election(request))
                .await
                .map_err(|_| PeerError::Failed(format!("stand-for-election at {addr}: timed out")))?
                .map_err(|status| PeerError::Failed(format!("stand-for-election at {addr}: {status}")))?;
            match reply.into_inner().result {
                Some(stand_for_election_reply::Result::Started(_)) => Ok(()),
                Some(stand_for_election_reply::Result::Refused(reason)) => Err(PeerError::Refused(reason)),
                Some(stand_for_election_reply::Result::Failed(reason)) => Err(PeerError::Failed(reason)),
                None => Err(PeerError::Failed("empty stand-for-election reply".to_owned())),
            }
        })
    }
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetwork {
    type Network = GrpcClient;

    async fn new_client(&mut self, target: u64, node: &Member) -> Self::Network {
        GrpcClient {
            target,
            addr: node.addr.clone(),
            callee: Callee {
                node_id: target,
                incarnation: node.incarnation,
            },
            network: self.clone(),
        }
    }
}

/// Whom a Raft message is for, as the caller's membership has it.
#[derive(Clone, Copy, Debug, Default)]
struct Callee {
    node_id: u64,
    incarnation: u64,
}

/// openraft's connection to one peer.
#[derive(Clone, Debug)]
pub struct GrpcClient {
    target: u64,
    addr: String,
    callee: Callee,
    network: GrpcNetwork,
}

/// Which RPC of the service to call.
#[derive(Clone, Copy, Debug)]
enum RaftRpc {
    AppendEntries,
    Vote,
    InstallSnapshot,
}

impl GrpcClient {
    /// Sends one openraft RPC and decodes the remote `Result`.
    async fn call<Req, Resp, E>(
        &self,
        rpc: RaftRpc,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<u64, Member, RaftError<u64, E>>>
    where
        Req: serde::Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let payload = encode(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut client = self
            .network
            .client(&self.addr)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let request = pb::RaftRequest {
            header: Some(self.network.header_to(&self.callee)),
            payload,
        };
        let call = async {
            match rpc {
                RaftRpc::AppendEntries => client.append_entries(request).await,
                RaftRpc::Vote => client.vote(request).await,
                RaftRpc::InstallSnapshot => client.install_snapshot(request).await,
            }
        };
        let reply = match tokio::time::timeout(option.hard_ttl(), call).await {
            Ok(Ok(reply)) => reply.into_inner(),
            Ok(Err(status)) => return Err(status_error(self.target, &status)),
            Err(_) => {
                let error = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "{rpc:?} to node {} at {}: no answer within {:?}",
                        self.target,
                        self.addr,
                        option.hard_ttl()
                    ),
                );
                return Err(RPCError::Network(NetworkError::new(&error)));
            }
        };
        let result: Result<Resp, RaftError<u64, E>> =
            decode(&reply.payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// A transport failure (peer down, connection refused) is `Unreachable`,
/// so openraft backs off; anything else is a `NetworkError`.
fn status_error<E: std::error::Error>(target: u64, status: &tonic::Status) -> RPCError<u64, Member, E> {
    let error = std::io::Error::other(format!("node {target}: {status}"));
    match status.code() {
        Code::Unavailable | Code::Cancelled | Code::Unknown => RPCError::Unreachable(Unreachable::new(&error)),
        _ => RPCError::Network(NetworkError::new(&error)),
    }
}

impl RaftNetwork<TypeConfig> for GrpcClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, Member, RaftError<u64>>> {
        self.call(RaftRpc::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, Member, RaftError<u64, InstallSnapshotError>>> {
        self.call(RaftRpc::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, Member, RaftError<u64>>> {
        self.call(RaftRpc::Vote, &rpc, &option).await
    }
}

/// How many `NotLeader` answers a membership change follows before it
/// gives up: a hint to the leader, or a retry while an election runs.
const LEADER_ATTEMPTS: usize = 20;

/// Pause before asking again when nobody knows the leader (an election).
const NO_LEADER_PAUSE: Duration = Duration::from_millis(250);

/// Sends `call` to `server`, then to the leader each `NotLeader` answer
/// names; while no leader is known (an election), asks `server` again
/// after a pause.
///
/// # Errors
/// The last error once [`LEADER_ATTEMPTS`] answers were `NotLeader`, or
/// the first other error.
pub async fn on_leader<T, F, Fut>(server: &str, mut call: F) -> Result<T, PeerError>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<T, PeerError>>,
{
    let mut target = server.to_owned();
    let mut last = None;
    for _ in 0..LEADER_ATTEMPTS {
        match call(target.clone()).await {
            Err(PeerError::NotLeader {
                leader_addr: Some(leader),
                leader_id,
            }) if leader != target => {
                last = Some(PeerError::NotLeader {
                    leader_id,
                    leader_addr: Some(leader.clone()),
                });
                target = leader;
            }
            Err(error @ PeerError::NotLeader { .. }) => {
                last = Some(error);
                target = server.to_owned();
                tokio::time::sleep(NO_LEADER_PAUSE).await;
            }
            other => return other,
        }
    }
    Err(last.unwrap_or_else(|| PeerError::Failed("no leader found".to_owned())))
}
