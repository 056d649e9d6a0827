//! The server side: the tonic service each node serves on its cluster address.

use std::future::Future;

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::ServerState;
use serde::Serialize;
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use warren_cluster::{JoinMode, Node, PeerError, Proposal, TypeConfig};

use crate::codec::{decode, encode};
use crate::pb::warren_cluster_server::{WarrenCluster, WarrenClusterServer};
use crate::pb::{self, forward_reply, join_reply, leave_reply, stand_for_election_reply};
use crate::{CLUSTER_ID_METADATA, DEFAULT_GROUP, MAX_CONCURRENT_REQUESTS, MAX_MESSAGE_BYTES, SECRET_METADATA};

/// What the service checks on every request.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// Requests carrying another secret are refused (`PERMISSION_DENIED`).
    pub secret: String,
    /// The Raft group this node serves; others get `NOT_FOUND`.
    pub group_id: u64,
    /// Mutual TLS on the cluster port (ADR 0024); `None`: plain HTTP/2.
    pub tls: Option<crate::ClusterTls>,
    /// Once known, requests carrying another cluster id are refused
    /// (`PERMISSION_DENIED`); the node's own cell.
    pub cluster_id: std::sync::Arc<warren_cluster::ClusterIdCell>,
    /// Largest request decoded or reply sent ([`crate::rpc_message_limit`]);
    /// a larger one is refused (`OUT_OF_RANGE`) as it arrives.
    pub max_message_bytes: usize,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            secret: crate::DEV_SECRET.to_owned(),
            group_id: DEFAULT_GROUP,
            tls: None,
            cluster_id: std::sync::Arc::default(),
            max_message_bytes: MAX_MESSAGE_BYTES,
        }
    }
}

/// A table `warren ctl` prints: column names, rows, and a line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AdminTable {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub message: String,
}

/// Why an admin command failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// Unknown verb, wrong arguments, a bad pattern.
    #[error("{0}")]
    BadRequest(String),
    /// The user, vhost or connection named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The cluster refused or could not answer.
    #[error("{0}")]
    Failed(String),
}

/// What answers `Admin` requests (the server provides it: it has the
/// AMQP front end, whose short-lived connections submit the changes).
#[tonic::async_trait]
pub trait AdminHandler: Send + Sync + 'static {
    async fn admin(&self, verb: &str, args: &[String]) -> Result<AdminTable, AdminError>;
}

/// The `WarrenCluster` service of one node.
#[derive(Clone)]
pub struct ClusterService {
    node: Node,
    config: ServiceConfig,
    admin: Option<std::sync::Arc<dyn AdminHandler>>,
}

impl std::fmt::Debug for ClusterService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterService")
            .field("node", &self.node)
            .field("config", &self.config)
            .field("admin", &self.admin.is_some())
            .finish()
    }
}

impl ClusterService {
    pub fn new(node: Node, config: ServiceConfig) -> Self {
        Self {
            node,
            config,
            admin: None,
        }
    }

    /// Answers `Admin` requests with `handler` (without one they get
    /// `UNIMPLEMENTED`).
    #[must_use]
    pub fn with_admin(mut self, handler: std::sync::Arc<dyn AdminHandler>) -> Self {
        self.admin = Some(handler);
        self
    }

    /// The tonic server wrapper, with Warren's message size limits, behind
    /// the secret check of [`SecretCheck`] (run on the request's metadata,
    /// before its body is read or decoded).
    pub fn into_server(self) -> InterceptedService<WarrenClusterServer<Self>, SecretCheck> {
        let check = SecretCheck::with_cluster_id(&self.config.secret, self.config.cluster_id.clone());
        let limit = self.config.max_message_bytes;
        let server = WarrenClusterServer::new(self)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit);
        InterceptedService::new(server, check)
    }

    /// Refuses a missing header, a wrong secret or another group.
    fn check(&self, header: Option<&pb::Header>) -> Result<(), Status> {
        let Some(header) = header else {
            return Err(Status::invalid_argument("request without a header"));
        };
        if !constant_time_eq(header.secret.as_bytes(), self.config.secret.as_bytes()) {
            return Err(Status::permission_denied("wrong cluster secret"));
        }
        if header.group_id != self.config.group_id {
            return Err(Status::not_found(format!("no Raft group {}", header.group_id)));
        }
        Ok(())
    }

    /// Refuses a Raft message the caller meant for another node, or for
    /// another incarnation of this one (ADR 0033).
    fn check_callee(&self, header: Option<&pb::Header>) -> Result<(), Status> {
        let Some(header) = header else {
            return Err(Status::invalid_argument("request without a header"));
        };
        self.node
            .check_callee(header.from_node, header.to_node, header.to_incarnation)
            .map_err(|reason| {
                tracing::warn!(%reason, "refused a Raft message");
                Status::failed_precondition(reason)
            })
    }

    /// Refuses openraft's messages while the node, opened on an empty data
    /// directory, has neither bootstrapped nor been let in (ADR 0022).
    fn check_admitted(&self) -> Result<(), Status> {
        if self.node.takes_raft_messages() {
            Ok(())
        } else {
            Err(Status::failed_precondition(
                "this node started on an empty data directory and has not joined: it takes no Raft messages",
            ))
        }
    }
}

/// Refuses a request whose metadata does not carry the cluster secret
/// ([`SECRET_METADATA`]): `UNAUTHENTICATED` without one,
/// `PERMISSION_DENIED` for another; and, once this node knows its
/// cluster's id, a request that carries another ([`CLUSTER_ID_METADATA`]:
/// a node of another cluster given this one's secret and address). Runs
/// before the body is read, so such a caller cannot make the node decode
/// (or buffer) a request of any size. A request without an id (a node
/// that has not learned it yet, `warren ctl`) passes.
#[derive(Clone, Debug)]
pub struct SecretCheck {
    secret: std::sync::Arc<[u8]>,
    cluster_id: std::sync::Arc<warren_cluster::ClusterIdCell>,
}

impl SecretCheck {
    /// Checks the secret only.
    pub fn new(secret: &str) -> Self {
        Self::with_cluster_id(secret, std::sync::Arc::default())
    }

    /// Checks the secret, and the caller's cluster id against the one in
    /// `cluster_id` once it is known.
    pub fn with_cluster_id(secret: &str, cluster_id: std::sync::Arc<warren_cluster::ClusterIdCell>) -> Self {
        Self {
            secret: secret.as_bytes().into(),
            cluster_id,
        }
    }
}

impl Interceptor for SecretCheck {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(value) = request.metadata().get_bin(SECRET_METADATA) else {
            return Err(Status::unauthenticated("no cluster secret in the request metadata"));
        };
        match value.to_bytes() {
            Ok(secret) if constant_time_eq(&secret, &self.secret) => {}
            _ => return Err(Status::permission_denied("wrong cluster secret")),
        }
        if let (Some(theirs), Some(ours)) = (request.metadata().get(CLUSTER_ID_METADATA), self.cluster_id.get()) {
            if theirs.as_bytes() != ours.as_bytes() {
                return Err(Status::permission_denied(format!(
                    "the caller belongs to cluster {}, this node to cluster {ours}: two clusters share a secret \
                     and were given each other's addresses",
                    String::from_utf8_lossy(theirs.as_bytes())
                )));
            }
        }
        Ok(request)
    }
}

/// The largest snapshot a node accepts (the receiving file may be sparse,
/// but a chunk at an offset past any disk is a lie).
pub const MAX_SNAPSHOT_BYTES: u64 = 1 << 40;

/// Refuses a snapshot chunk larger than a sender makes
/// ([`warren_cluster::SNAPSHOT_CHUNK_BYTES`], with room to spare) or one
/// that would end past [`MAX_SNAPSHOT_BYTES`].
fn check_snapshot_chunk(offset: u64, len: usize) -> Result<(), Status> {
    let len = u64::try_from(len).unwrap_or(u64::MAX);
    if len > 2 * warren_cluster::SNAPSHOT_CHUNK_BYTES {
        return Err(Status::invalid_argument(format!(
            "a snapshot chunk of {len} bytes (at most {} are sent)",
            warren_cluster::SNAPSHOT_CHUNK_BYTES
        )));
    }
    if offset.checked_add(len).is_none_or(|end| end > MAX_SNAPSHOT_BYTES) {
        return Err(Status::invalid_argument(format!(
            "a snapshot chunk at offset {offset} ends past {MAX_SNAPSHOT_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Compares secrets without stopping at the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn bad_payload(error: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("undecodable payload: {error}"))
}

fn raft_reply<T: Serialize>(result: &T) -> Result<Response<pb::RaftReply>, Status> {
    let payload = encode(result).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(pb::RaftReply { payload }))
}

fn not_leader(error: &PeerError) -> Option<pb::NotLeader> {
    match error {
        PeerError::NotLeader { leader_id, leader_addr } => Some(pb::NotLeader {
            leader_id: *leader_id,
            leader_addr: leader_addr.clone().unwrap_or_default(),
        }),
        PeerError::Failed(_) | PeerError::Refused(_) => None,
    }
}

#[tonic::async_trait]
impl WarrenCluster for ClusterService {
    #[tracing::instrument(level = "trace", skip_all)]
    async fn append_entries(&self, request: Request<pb::RaftRequest>) -> Result<Response<pb::RaftReply>, Status> {
        let request = request.into_inner();
        self.check(request.header.as_ref())?;
        self.check_admitted()?;
        self.check_callee(request.header.as_ref())?;
        let rpc: AppendEntriesRequest<TypeConfig> = decode(&request.payload).map_err(bad_payload)?;
        raft_reply(&self.node.append_entries(rpc).await)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn vote(&self, request: Request<pb::RaftRequest>) -> Result<Response<pb::RaftReply>, Status> {
        let request = request.into_inner();
        self.check(request.header.as_ref())?;
        self.check_admitted()?;
        self.check_callee(request.header.as_ref())?;
        let rpc: VoteRequest<u64> = decode(&request.payload).map_err(bad_payload)?;
        raft_reply(&self.node.raft().vote(rpc).await)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn install_snapshot(&self, request: Request<pb::RaftRequest>) -> Result<Response<pb::RaftReply>, Status> {
        let request = request.into_inner();
        self.check(request.header.as_ref())?;
        self.check_admitted()?;
        self.check_callee(request.header.as_ref())?;
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(&request.payload).map_err(bad_payload)?;
        check_snapshot_chunk(rpc.offset, rpc.data.len())?;
        raft_reply(&self.node.raft().install_snapshot(rpc).await)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn forward(&self, request: Request<pb::ForwardRequest>) -> Result<Response<pb::ForwardReply>, Status> {
        let request = request.into_inner();
        self.check(request.header.as_ref())?;
        let proposal: Proposal = decode(&request.proposal).map_err(bad_payload)?;
        let result = match self.node.write_forwarded(proposal).await {
            Ok(log_index) => forward_reply::Result::Committed(pb::Committed { log_index }),
            Err(error) => match not_leader(&error) {
                Some(hint) => forward_reply::Result::NotLeader(hint),
                None => forward_reply::Result::Failed(error.to_string()),
            },
        };
        Ok(Response::new(pb::ForwardReply { result: Some(result) }))
    }

    #[tracing::instrument(skip_all, fields(joining = request.get_ref().node_id))]
    async fn join(&self, request: Request<pb::JoinRequest>) -> Result<Response<pb::JoinReply>, Status> {
        let request = request.into_inner();
        self.check(request.header.as_ref())?;
        if request.addr.is_empty() {
            return Err(Status::invalid_argument("a joining node must give its cluster address"));
        }
        let mode = match (request.fresh, request.check_only) {
            (_, true) => JoinMode::CheckFresh,
            (true, false) => JoinMode::Fresh,
            (false, false) => JoinMode::Rejoin,
        };
        let result = match self
            .node
            .add_voter(request.node_id, &request.addr, request.incarnation, mode)
            .await
        {
            Ok(log_index) => join_reply::Result::Joined(pb::Committed { log_index }),
            Err(PeerError::Refused(reason)) => join_reply::Result::Refused(reason),
            Err(error) => match not_leader(&error) {
                Some(hint) => join_reply::Result::NotLeader(hint),
                None => join_reply::Result::Failed(error.to_string()),
            },
        };
        Ok(Response::new(pb::JoinReply {
            result: Some(result),
            cluster_id: self.config.cluster_id.get().unwrap_or_default().to_owned(),
        }))
    }

    #[tracing::instrument(skip_all, fields(leaving = request.get_ref().node_id))]
    async fn leave(&self, request: Request<pb::LeaveRequest>) -> Result<Response<pb::LeaveReply>, Status> {
        let request = request.into_inner();
        self.check(request.header.as_ref())?;
        let result = match self.node.remove_node(request.node_id).await {
            Ok(log_index) => leave_reply::Result::Left(pb::Committed { log_index }),
            Err(error) => match not_leader(&error) {
                Some(hint) => leave_reply::Result::NotLeader(hint),
                None => leave_reply::Result::Failed(error.to_string()),
            },
        };
        Ok(Response::new(pb::LeaveReply { result: Some(result) }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_queues(
        &self,
        request: Request<pb::ListQueuesRequest>,
    ) -> Result<Response<pb::ListQueuesReply>, Status> {
        let request = request.into_inner();
        self.check(request.header.as_ref())?;
        // Metrics first: the state read afterwards is at least this far.
        let (node_id, leader_id, voters, last_applied) = {
            let metrics = self.node.raft().metrics();
            let metrics = metrics.borrow();
            let voters: Vec<u64> = metrics.membership_config.membership().voter_ids().collect();
            (
                metrics.id,
                metrics.current_leader,
                voters,
                metrics.last_applied.map(|id| id.index),
            )
        };
        let vhost = request.vhost;
        let mut queues: Vec<pb::QueueInfo> = self.node.read(|broker| {
            broker
                .queue_summaries()
                .into_iter()
                .filter(|q| vhost.as_deref().is_none_or(|v| q.vhost.as_str() == v))
                .map(queue_info)
                .collect()
        });
        queues.sort_by(|a, b| (&a.vhost, &a.name).cmp(&(&b.vhost, &b.name)));
        Ok(Response::new(pb::ListQueuesReply {
            node_id,
            leader_id,
            voters,
            last_applied,
            queues,
        }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(verb = %request.get_ref().verb))]
    async fn admin(&self, request: Request<pb::AdminRequest>) -> Result<Response<pb::AdminReply>, Status> {
        let request = request.into_inner();
        self.check(request.header.as_ref())?;
        let Some(handler) = &self.admin else {
            return Err(Status::unimplemented("this node answers no admin commands"));
        };
        match handler.admin(&request.verb, &request.args).await {
            Ok(table) => Ok(Response::new(pb::AdminReply {
                columns: table.columns,
                rows: table.rows.into_iter().map(|cells| pb::AdminRow { cells }).collect(),
                message: table.message,
            })),
            Err(AdminError::BadRequest(reason)) => Err(Status::invalid_argument(reason)),
            Err(AdminError::NotFound(reason)) => Err(Status::not_found(reason)),
            Err(AdminError::Failed(reason)) => Err(Status::failed_precondition(reason)),
        }
    }

    async fn stand_for_election(
        &self,
        request: Request<pb::StandForElectionRequest>,
    ) -> Result<Response<pb::StandForElectionReply>, Status> {
        self.check(request.get_ref().header.as_ref())?;
        let request = request.into_inner();
        let result = match self.node.stand_for_election(request.leader_id, request.term).await {
            Ok(()) => stand_for_election_reply::Result::Started(true),
            Err(PeerError::Refused(reason)) => stand_for_election_reply::Result::Refused(reason),
            Err(error) => stand_for_election_reply::Result::Failed(error.to_string()),
        };
        Ok(Response::new(pb::StandForElectionReply { result: Some(result) }))
    }

    async fn status(&self, request: Request<pb::StatusRequest>) -> Result<Response<pb::StatusReply>, Status> {
        self.check(request.get_ref().header.as_ref())?;
        let metrics = self.node.raft().metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| pb::Member {
                node_id: *id,
                addr: node.addr.clone(),
                voter: voters.contains(id),
            })
            .collect();
        Ok(Response::new(pb::StatusReply {
            node_id: metrics.id,
            leader_id: metrics.current_leader,
            is_leader: metrics.state == ServerState::Leader,
            term: metrics.current_term,
            last_log_index: metrics.last_log_index,
            last_applied: metrics.last_applied.map(|id| id.index),
            snapshot_index: metrics.snapshot.map(|id| id.index),
            members,
            cluster_id: self.config.cluster_id.get().unwrap_or_default().to_owned(),
        }))
    }
}

fn queue_info(summary: warren_core::QueueSummary) -> pb::QueueInfo {
    pb::QueueInfo {
        vhost: summary.vhost.as_str().to_owned(),
        name: summary.name.as_str().to_owned(),
        durable: summary.durable,
        exclusive: summary.exclusive,
        auto_delete: summary.auto_delete,
        messages_ready: summary.messages_ready,
        messages_unacked: summary.messages_unacked,
        consumers: summary.consumers,
    }
}

/// Serves `service` on `listener` until `shutdown` completes.
///
/// # Errors
/// The server failed.
pub async fn serve(
    listener: TcpListener,
    service: ClusterService,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &service.config.tls {
        builder = builder.tls_config(tls.server())?;
    }
    builder
        .concurrency_limit_per_connection(MAX_CONCURRENT_REQUESTS)
        .add_service(service.into_server())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_chunks_are_bounded_in_size_and_offset() {
        let chunk = usize::try_from(warren_cluster::SNAPSHOT_CHUNK_BYTES).expect("fits");
        assert!(check_snapshot_chunk(0, 0).is_ok());
        assert!(check_snapshot_chunk(0, chunk).is_ok());
        assert!(check_snapshot_chunk(MAX_SNAPSHOT_BYTES - 10, 10).is_ok());
        assert!(check_snapshot_chunk(MAX_SNAPSHOT_BYTES - 10, 11).is_err());
        assert!(check_snapshot_chunk(u64::MAX, 1).is_err(), "no overflow");
        assert!(check_snapshot_chunk(u64::MAX, 0).is_err());
        assert!(check_snapshot_chunk(0, 2 * chunk + 1).is_err());
    }

    #[test]
    fn the_secret_check_wants_the_metadata_and_the_same_bytes() {
        let mut check = SecretCheck::new("s3cret");
        assert_eq!(
            check.call(Request::new(())).expect_err("none").code(),
            tonic::Code::Unauthenticated
        );
        let with = |secret: &[u8]| {
            let mut request = Request::new(());
            request.metadata_mut().insert_bin(
                SECRET_METADATA,
                tonic::metadata::BinaryMetadataValue::from_bytes(secret),
            );
            request
        };
        assert!(check.call(with(b"s3cret")).is_ok());
        for wrong in [&b"s3cre"[..], b"s3cret ", b"", "sécret".as_bytes()] {
            assert_eq!(
                check.call(with(wrong)).expect_err("wrong").code(),
                tonic::Code::PermissionDenied,
                "{wrong:?}"
            );
        }
    }

    #[test]
    fn the_check_refuses_another_clusters_id_once_it_knows_its_own() {
        let ours = std::sync::Arc::new(warren_cluster::ClusterIdCell::new());
        let mut check = SecretCheck::with_cluster_id("s3cret", ours.clone());
        // What the caller's interceptor sends.
        let from = |id: Option<&str>| {
            let cell = std::sync::Arc::new(warren_cluster::ClusterIdCell::new());
            if let Some(id) = id {
                cell.learn(id);
            }
            let mut stamp = crate::SecretMetadata::with_cluster_id("s3cret", cell);
            tonic::service::Interceptor::call(&mut stamp, Request::new(())).expect("stamped")
        };
        // Not known here yet: any caller passes (a fresh node joining).
        assert!(check.call(from(Some("a"))).is_ok());
        ours.learn("a");
        assert!(check.call(from(Some("a"))).is_ok());
        assert!(check.call(from(None)).is_ok(), "a caller that has not learned it yet");
        let refused = check.call(from(Some("b"))).expect_err("another cluster");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        assert!(
            refused.message().contains("cluster b, this node to cluster a"),
            "{}",
            refused.message()
        );
        let mut secret_only = SecretCheck::new("s3cret");
        assert!(
            secret_only.call(from(Some("b"))).is_ok(),
            "a service without a cell checks the secret only"
        );
    }
}
