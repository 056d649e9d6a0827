//! `warren ctl`: operates a running cluster over its gRPC port.

use std::fmt::Write as _;

use anyhow::Context;
use warren_cluster::{JoinMode, PeerError, Peers as _};
use warren_rpc::pb::{AdminReply, ListQueuesReply, StatusReply};
use warren_rpc::{on_leader, GrpcNetwork, NetworkConfig};

/// What `warren ctl` does.
#[derive(Clone, Debug)]
pub enum CtlCommand {
    ClusterStatus,
    /// Adds the running node `node_id`, reachable at cluster address
    /// `addr`, as a voter (the `Join` a node started with `--join` sends).
    AddNode {
        node_id: u64,
        addr: String,
    },
    RemoveNode {
        node_id: u64,
    },
    /// The queues of the replica asked, optionally of one vhost only.
    ListQueues {
        vhost: Option<String>,
    },
    /// One of the rabbitmqctl-style commands a node answers
    /// ([`crate::admin`]): users, vhosts, permissions, listings.
    Admin {
        verb: String,
        args: Vec<String>,
    },
}

/// Runs `command` against the member at `server` and prints the result.
///
/// # Errors
/// The member cannot be reached, refuses the secret, or the change failed.
pub async fn run(
    server: &str,
    secret: Option<String>,
    tls: Option<warren_rpc::ClusterTls>,
    command: CtlCommand,
) -> anyhow::Result<()> {
    let network = GrpcNetwork::new(NetworkConfig {
        secret: secret.unwrap_or_else(|| warren_rpc::DEV_SECRET.to_owned()),
        tls,
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
        CtlCommand::AddNode { node_id, addr } => {
            let index = on_leader(server, |leader| {
                network.join(&leader, node_id, &addr, 0, JoinMode::Rejoin)
            })
            .await
            .with_context(|| format!("adding node {node_id} at {addr}"))?;
            println!("node {node_id} at {addr} is a voter (membership at log index {index})");
            Ok(())
        }
        CtlCommand::RemoveNode { node_id } => {
            let network = &network;
            let index = on_leader(server, |leader| async move { network.leave(&leader, node_id).await })
                .await
                .with_context(|| format!("removing node {node_id}"))?;
            println!("node {node_id} removed (membership at log index {index})");
            Ok(())
        }
        CtlCommand::Admin { verb, args } if verb == "list-connections" => {
            // Each node knows only its own connections: ask every member.
            let status = network
                .status(server)
                .await
                .with_context(|| format!("asking {server} for the members"))?;
            let mut merged: Option<AdminReply> = None;
            for member in &status.members {
                match network.admin(&member.addr, &verb, args.clone()).await {
                    Ok(reply) => match &mut merged {
                        Some(all) => all.rows.extend(reply.rows),
                        None => merged = Some(reply),
                    },
                    Err(e) => eprintln!("node {} ({}): {e}", member.node_id, member.addr),
                }
            }
            let merged = merged.context("no member answered")?;
            print!("{}", render_admin(&merged));
            Ok(())
        }
        CtlCommand::Admin { verb, args } if verb == "close-connection" => {
            let status = network
                .status(server)
                .await
                .with_context(|| format!("asking {server} for the members"))?;
            for member in &status.members {
                if let Ok(reply) = network.admin(&member.addr, &verb, args.clone()).await {
                    print!("{}", render_admin(&reply));
                    return Ok(());
                }
            }
            anyhow::bail!(
                "no member has a connection named '{}'",
                args.first().map_or("", String::as_str)
            )
        }
        CtlCommand::Admin { verb, args } => {
            let reply = network
                .admin(server, &verb, args)
                .await
                .with_context(|| format!("{verb} through {server}"))?;
            print!("{}", render_admin(&reply));
            Ok(())
        }
        CtlCommand::ListQueues { vhost } => {
            let listing = network
                .list_queues(server, vhost)
                .await
                .with_context(|| format!("asking {server} for its queues"))?;
            print!("{}", render_queues(&listing));
            Ok(())
        }
    }
}

/// The table `list-queues` prints: a line naming the leader and the
/// replica set, then one row per queue, columns as wide as their values.
fn render_queues(listing: &ListQueuesReply) -> String {
    let mut out = String::new();
    let leader = listing
        .leader_id
        .map_or_else(|| "unknown".to_owned(), |id| id.to_string());
    let voters: Vec<String> = listing.voters.iter().map(u64::to_string).collect();
    let applied = listing
        .last_applied
        .map_or_else(|| "-".to_owned(), |index| index.to_string());
    let _ = writeln!(
        out,
        "leader: {leader}  replicas: {}  (node {} applied up to log index {applied})",
        voters.join(","),
        listing.node_id
    );
    if listing.queues.is_empty() {
        out.push_str("no queues\n");
        return out;
    }
    let yes_no = |flag: bool| if flag { "yes" } else { "no" }.to_owned();
    let header = [
        "vhost",
        "name",
        "durable",
        "exclusive",
        "auto_delete",
        "ready",
        "unacked",
        "consumers",
    ]
    .map(str::to_owned);
    let rows: Vec<Vec<String>> = listing
        .queues
        .iter()
        .map(|q| {
            vec![
                q.vhost.clone(),
                q.name.clone(),
                yes_no(q.durable),
                yes_no(q.exclusive),
                yes_no(q.auto_delete),
                q.messages_ready.to_string(),
                q.messages_unacked.to_string(),
                q.consumers.to_string(),
            ]
        })
        .collect();
    out.push_str(&render_table(&header, &rows));
    out
}

/// A header and rows, each column as wide as its widest value.
fn render_table(header: &[String], rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in std::iter::once(header).chain(rows.iter().map(Vec::as_slice)) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, &width)| format!("{cell:<width$}"))
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    out
}

/// What an admin command prints: its message, then its table if it has
/// columns ("" shows as "" so an empty name can be told from none).
fn render_admin(reply: &AdminReply) -> String {
    let mut out = String::new();
    if !reply.message.is_empty() {
        let _ = writeln!(out, "{}", reply.message);
    }
    if !reply.columns.is_empty() {
        let rows: Vec<Vec<String>> = reply
            .rows
            .iter()
            .map(|row| {
                row.cells
                    .iter()
                    .map(|cell| {
                        if cell.is_empty() {
                            "\"\"".to_owned()
                        } else {
                            cell.clone()
                        }
                    })
                    .collect()
            })
            .collect();
        out.push_str(&render_table(&reply.columns, &rows));
    }
    out
}

type MemberView = (warren_rpc::pb::Member, Result<StatusReply, PeerError>);

/// The table `cluster-status` prints: one line per member, as that member
/// sees itself (or why it is unreachable).
fn render_status(asked: &StatusReply, views: &[MemberView]) -> String {
    let mut out = String::new();
    let leader = asked
        .leader_id
        .map_or_else(|| "unknown".to_owned(), |id| id.to_string());
    let cluster = if asked.cluster_id.is_empty() {
        "(none yet)"
    } else {
        asked.cluster_id.as_str()
    };
    // The leader line first: scripts read it with `head -1`.
    let _ = writeln!(out, "leader: {leader}  term: {}", asked.term);
    let _ = writeln!(out, "cluster: {cluster}");
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

#[cfg(test)]
mod tests {
    use super::*;
    use warren_rpc::pb::QueueInfo;

    fn queue(vhost: &str, name: &str) -> QueueInfo {
        QueueInfo {
            vhost: vhost.to_owned(),
            name: name.to_owned(),
            ..QueueInfo::default()
        }
    }

    #[test]
    fn the_queue_table_names_the_leader_and_replicas_and_aligns_its_columns() {
        let listing = ListQueuesReply {
            node_id: 2,
            leader_id: Some(1),
            voters: vec![1, 2, 3],
            last_applied: Some(57),
            queues: vec![
                QueueInfo {
                    durable: true,
                    messages_ready: 1200,
                    messages_unacked: 3,
                    consumers: 1,
                    ..queue("/", "orders")
                },
                QueueInfo {
                    exclusive: true,
                    auto_delete: true,
                    ..queue("/staging", "amq.gen-Xy")
                },
            ],
        };
        let expected = "\
leader: 1  replicas: 1,2,3  (node 2 applied up to log index 57)
vhost     name        durable  exclusive  auto_delete  ready  unacked  consumers
/         orders      yes      no         no           1200   3        1
/staging  amq.gen-Xy  no       yes        yes          0      0        0
";
        assert_eq!(render_queues(&listing), expected);
    }

    #[test]
    fn an_empty_listing_says_so_and_an_unknown_leader_is_named_unknown() {
        let listing = ListQueuesReply {
            node_id: 3,
            leader_id: None,
            voters: vec![3],
            last_applied: None,
            queues: Vec::new(),
        };
        assert_eq!(
            render_queues(&listing),
            "leader: unknown  replicas: 3  (node 3 applied up to log index -)\nno queues\n"
        );
    }

    #[test]
    fn an_admin_table_prints_its_message_and_aligned_rows_with_empty_names_quoted() {
        let reply = AdminReply {
            columns: vec!["name".to_owned(), "type".to_owned()],
            rows: vec![
                warren_rpc::pb::AdminRow {
                    cells: vec![String::new(), "direct".to_owned()],
                },
                warren_rpc::pb::AdminRow {
                    cells: vec!["amq.topic".to_owned(), "topic".to_owned()],
                },
            ],
            message: String::new(),
        };
        assert_eq!(
            render_admin(&reply),
            "name       type\n\"\"         direct\namq.topic  topic\n"
        );
        let change = AdminReply {
            message: "user 'bob' added".to_owned(),
            ..AdminReply::default()
        };
        assert_eq!(render_admin(&change), "user 'bob' added\n");
    }

    #[test]
    fn a_long_queue_name_widens_its_column() {
        let listing = ListQueuesReply {
            node_id: 1,
            leader_id: Some(1),
            voters: vec![1],
            last_applied: Some(1),
            queues: vec![queue("/", "a-rather-long-queue-name")],
        };
        let table = render_queues(&listing);
        let lines: Vec<&str> = table.lines().collect();
        let header_at = lines[1].find("durable").expect("durable column");
        let value_at = lines[2].find("no").expect("durable value");
        assert_eq!(header_at, value_at, "{table}");
    }
}
