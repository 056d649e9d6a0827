//! The membership fault (`--kinds member`): a node leaves the cluster and
//! joins it again, as a StatefulSet's scale-down and scale-up of one
//! ordinal do. Stopped first (SIGTERM: it drains and, if it leads, hands
//! its leadership over), then removed through another node, started again
//! later and added back. Warren's `/api/warren/members` only: RabbitMQ's
//! membership commands differ.

use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

use crate::http::{self, BaseUrl};

/// How long a membership call is retried: a change waits for a leader,
/// and one may still be being elected after the stop.
const MEMBERSHIP_WAIT: Duration = Duration::from_secs(30);

/// Between attempts.
const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// Node `id`'s cluster address, as the first of `peers` that answers lists it.
///
/// # Errors
/// No peer answered, or none lists the node.
pub async fn cluster_address(peers: &[BaseUrl], id: u64) -> anyhow::Result<String> {
    let mut last = String::from("no peer with http= to ask");
    for peer in peers {
        match http::get(peer, "/api/warren/members").await {
            Ok((200, body)) => {
                let members: Value = serde_json::from_str(&body).context("the members answer is not JSON")?;
                let addr = members["members"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|member| member["node_id"].as_u64() == Some(id))
                    .and_then(|member| member["addr"].as_str());
                match addr {
                    Some(addr) => return Ok(addr.to_owned()),
                    None => bail!("node {id} is not a member as {} sees it: {body}", peer.authority),
                }
            }
            Ok((status, body)) => last = format!("{}: {status} {body}", peer.authority),
            Err(e) => last = format!("{e:#}"),
        }
    }
    bail!("the membership fault needs Warren's /api/warren/members: {last}")
}

/// Removes node `id` from the cluster through `peers` (any: the change
/// goes to the leader), retrying until one answers 204, or 404: a removal
/// whose answer was lost leaves the node no member.
///
/// # Errors
/// None did within [`MEMBERSHIP_WAIT`].
pub async fn remove(peers: &[BaseUrl], id: u64) -> anyhow::Result<()> {
    retry(peers, "DELETE", &format!("/api/warren/members/{id}"), None, &[204, 404]).await
}

/// Adds node `id` at cluster address `addr` back as a voter through
/// `peers`, retrying until one answers 201 (the leader waits until the node
/// has caught up; a node that asked to join by itself is a voter already).
///
/// # Errors
/// None did within [`MEMBERSHIP_WAIT`].
pub async fn add(peers: &[BaseUrl], id: u64, addr: &str) -> anyhow::Result<()> {
    let body = serde_json::json!({ "node_id": id, "addr": addr }).to_string();
    retry(peers, "POST", "/api/warren/members", Some(&body), &[201]).await
}

async fn retry(peers: &[BaseUrl], method: &str, path: &str, body: Option<&str>, done: &[u16]) -> anyhow::Result<()> {
    if peers.is_empty() {
        bail!("{method} {path}: no other node has http=");
    }
    let deadline = tokio::time::Instant::now() + MEMBERSHIP_WAIT;
    let mut last = String::new();
    loop {
        for peer in peers {
            match http::send(peer, method, path, body).await {
                Ok((status, _)) if done.contains(&status) => return Ok(()),
                Ok((status, answer)) => last = format!("{}: {status} {answer}", peer.authority),
                Err(e) => last = format!("{e:#}"),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("{method} {path}: no {done:?} within {MEMBERSHIP_WAIT:?} (last: {last})");
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}
