//! `warren ctl`: operates a running cluster over its gRPC port.

use std::fmt::Write as _;

use anyhow::Context;
use warren_cluster::PeerError;
use warren_rpc::pb::StatusReply;
use warren_rpc::{GrpcNetwork, NetworkConfig};

/// What `warren ctl` does.
#[derive(Clone, Debug)]
pub enum CtlCommand {
    ClusterStatus,
    RemoveNode { node_id: u64 },
}

/// Runs `command` against the member at `server` and prints the result.
///
/// # Errors
/// The member cannot be reached, refuses the secret, or the change failed.
pub async fn run(server: &str, secret: Option<String>, command: CtlCommand) -> anyhow::Result<()> {
    let network = GrpcNetwork::new(NetworkConfig {
        secret: secret.unwrap_or_else(|| warren_rpc::DEV_SECRET.to_owned()),
        ..NetworkConfig::default()
    });
    match command {
        CtlCommand::ClusterStatus => {
            let status = network
                .status(server)
                .await
                .with_context(|| format!("asking {server} for its status"))?;
            let mut views = Vec::new();
            for member in &status.members {
                views.push((member.clone(), network.status(&member.addr).await));
            }
            print!("{}", render_status(&status, &views));
            Ok(())
        }
        CtlCommand::RemoveNode { node_id } => {
            let index = match network.leave(server, node_id).await {
                Err(PeerError::NotLeader {
                    leader_addr: Some(leader),
                    ..
                }) => network.leave(&leader, node_id).await,
                other => other,
            }
            .with_context(|| format!("removing node {node_id}"))?;
            println!("node {node_id} removed (membership at log index {index})");
            Ok(())
        }
    }
}

type MemberView = (warren_rpc::pb::Member, Result<StatusReply, PeerError>);

/// The table `cluster-status` prints: one line per member, as that member
/// sees itself (or why it is unreachable).
fn render_status(asked: &StatusReply, views: &[MemberView]) -> String {
    let mut out = String::new();
    let leader = asked
        .leader_id
        .map_or_else(|| "unknown".to_owned(), |id| id.to_string());
    let _ = writeln!(out, "leader: {leader}  term: {}", asked.term);
    let _ = writeln!(
        out,
        "{:<6} {:<24} {:<8} {:<10} {:<6} {:<10} {:<10} reachable",
        "node", "address", "role", "state", "term", "log", "applied"
    );
    let index = |i: Option<u64>| i.map_or_else(|| "-".to_owned(), |i| i.to_string());
    for (member, view) in views {
        let role = if member.voter { "voter" } else { "learner" };
        match view {
            Ok(status) => {
                let state = if status.is_leader { "leader" } else { "follower" };
                let _ = writeln!(
                    out,
                    "{:<6} {:<24} {:<8} {:<10} {:<6} {:<10} {:<10} yes",
                    member.node_id,
                    member.addr,
                    role,
                    state,
                    status.term,
                    index(status.last_log_index),
                    index(status.last_applied)
                );
            }
            Err(e) => {
                let _ = writeln!(
                    out,
                    "{:<6} {:<24} {:<8} {:<10} {:<6} {:<10} {:<10} no ({e})",
                    member.node_id, member.addr, role, "-", "-", "-", "-"
                );
            }
        }
    }
    out
}
