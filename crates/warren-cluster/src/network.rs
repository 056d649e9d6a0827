//! A Raft network that reaches nobody: enough for a one-member cluster.
//! The gRPC network (and testkit's in-process one) implement the same
//! `openraft::RaftNetworkFactory<TypeConfig>` and are passed to
//! [`crate::Node::start_with`].

use crate::Member;
use openraft::error::{InstallSnapshotError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};

use crate::type_config::TypeConfig;

/// Creates [`UnreachableClient`]s.
#[derive(Clone, Copy, Debug, Default)]
pub struct UnreachableNetwork;

/// Answers every RPC with `Unreachable`.
#[derive(Clone, Debug)]
pub struct UnreachableClient {
    target: u64,
}

impl UnreachableClient {
    fn unreachable<E: std::error::Error>(&self) -> RPCError<u64, Member, E> {
        let reason = std::io::Error::other(format!("no network to node {}: this node has no peers", self.target));
        RPCError::Unreachable(Unreachable::new(&reason))
    }
}

impl RaftNetworkFactory<TypeConfig> for UnreachableNetwork {
    type Network = UnreachableClient;

    async fn new_client(&mut self, target: u64, _node: &Member) -> Self::Network {
        UnreachableClient { target }
    }
}

impl RaftNetwork<TypeConfig> for UnreachableClient {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, Member, RaftError<u64>>> {
        Err(self.unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, Member, RaftError<u64, InstallSnapshotError>>> {
        Err(self.unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, Member, RaftError<u64>>> {
        Err(self.unreachable())
    }
}
