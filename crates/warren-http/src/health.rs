//! `/health/live` and `/health/ready`: what Kubernetes' probes ask (issue
//! 14, item 1). Unauthenticated, as kubelet's HTTP probes are; they tell
//! no more than whether the node works. 200 `{"status":"ok"}` or 503
//! `{"status":"failed","reason":…}`.
//!
//! - Live: the Raft core runs (a node whose core or storage failed exits
//!   on its own too — `warren-server` watches `Node::fatal_error` — this is
//!   for the moment before, and for a wedged process).
//! - Ready: live, a member of the cluster that knows a leader (and, if it
//!   is the leader, one a majority has answered within two election
//!   timeouts), and caught up: it has applied all but at most
//!   [`READY_LAG`] of the entries it knows are committed. A node cut off
//!   from the majority is no longer ready within a few election timeouts,
//!   so a Service stops sending it clients.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::Sources;

/// How far behind the commit index a ready node's apply may be.
pub const READY_LAG: u64 = 1000;

pub(crate) fn routes() -> Router<Arc<Sources>> {
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
}

fn answer(failure: Option<String>) -> Response {
    match failure {
        None => Json(json!({"status": "ok"})).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "failed", "reason": reason})),
        )
            .into_response(),
    }
}

async fn live(State(sources): State<Arc<Sources>>) -> Response {
    answer(sources.frontend.node.running_failure())
}

/// Why this node should not get clients now, if it should not.
pub fn not_ready(sources: &Sources) -> Option<String> {
    let node = &sources.frontend.node;
    if let Some(failure) = node.running_failure() {
        return Some(failure);
    }
    let status = node.metrics();
    if !status.members.contains_key(&status.node_id) {
        return Some("this node is not a member of the cluster (yet)".to_owned());
    }
    let Some(leader) = status.leader else {
        return Some("no leader is known (an election, or this node is cut off from the majority)".to_owned());
    };
    if let Some(age) = node.leader_out_of_touch_ms() {
        return Some(format!(
            "this node is the leader but no majority has answered it for {age} ms: it cannot commit"
        ));
    }
    let committed = node.raft_counts().committed;
    let applied = status.last_applied;
    if committed.is_some_and(|c| c.saturating_sub(applied.unwrap_or(0)) > READY_LAG) {
        return Some(format!(
            "catching up: applied {applied:?} of {committed:?} committed (leader {leader})"
        ));
    }
    None
}

async fn ready(State(sources): State<Arc<Sources>>) -> Response {
    answer(not_ready(&sources))
}
