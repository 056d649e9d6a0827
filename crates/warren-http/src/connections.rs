//! `/api/connections`, `/api/channels` and `/api/consumers` (issue 10),
//! shaped as RabbitMQ's, for the whole cluster: each node knows its own
//! AMQP clients, so the answering node asks every other member (the admin
//! call `connections` over the cluster port, 2 s each; an unreachable
//! member's connections are left out). Channels and consumers come from
//! the replicated state, named after the connections they belong to.
//! Administrators and monitoring users see everyone's; other management
//! users their own, as in RabbitMQ.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use warren_amqp::ClientInfo;
use warren_core::{User, VHost};

use crate::api::{authenticate, paged, read, table_json, ApiError, Paging};
use crate::Sources;

type ApiResult = Result<Json<Value>, ApiError>;

/// How long a member has to list its connections.
const MEMBER_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) fn routes() -> Router<Arc<Sources>> {
    Router::new()
        .route("/api/connections", get(list_connections))
        .route("/api/connections/{name}", get(get_connection).delete(close_connection))
        .route("/api/channels", get(list_channels))
        .route("/api/consumers", get(list_consumers))
        .route("/api/consumers/{vhost}", get(list_consumers_in))
}

/// A client connection somewhere in the cluster.
struct Client {
    node: u64,
    number: u64,
    info: ClientInfo,
}

fn node_name(node: u64) -> String {
    format!("warren@node-{node}")
}

/// Every client connection of every reachable member.
async fn all_clients(sources: &Sources) -> Vec<Client> {
    let own = sources.frontend.node_id.0;
    let mut clients: Vec<Client> = sources
        .frontend
        .registry
        .clients()
        .into_iter()
        .map(|(id, info)| Client {
            node: own,
            number: id.seq,
            info,
        })
        .collect();
    let Some(network) = &sources.cluster else {
        return clients;
    };
    let members = sources.frontend.node.metrics().members;
    for (node, addr) in members.into_iter().filter(|(id, _)| *id != own) {
        let reply = tokio::time::timeout(MEMBER_TIMEOUT, network.admin(&addr, "connections", Vec::new())).await;
        let Ok(Ok(reply)) = reply else {
            tracing::debug!(node, %addr, "a member did not list its connections");
            continue;
        };
        clients.extend(reply.rows.iter().filter_map(|row| {
            let (info, number) = ClientInfo::from_cells(&row.cells)?;
            Some(Client { node, number, info })
        }));
    }
    clients
}

/// Whether `viewer` may see `user`'s connections.
fn sees_user(viewer: &User, user: &str) -> bool {
    viewer.tags.iter().any(|t| t == "administrator" || t == "monitoring") || viewer.name.as_str() == user
}

/// RabbitMQ's statistics fields of a connection (`recv_oct`,
/// `recv_oct_details.rate`, …) and, beyond RabbitMQ, a `message_stats`
/// object with its channels' message counts and rates.
fn connection_stats(info: &ClientInfo) -> serde_json::Map<String, Value> {
    use warren_amqp::counters::CONNECTION_COUNTERS;
    let mut fields = serde_json::Map::new();
    let mut messages = serde_json::Map::new();
    for (i, name) in CONNECTION_COUNTERS.iter().enumerate() {
        let into = if i < 4 { &mut fields } else { &mut messages };
        into.insert((*name).to_owned(), json!(info.counts[i]));
        into.insert(format!("{name}_details"), json!({ "rate": info.rates[i] }));
    }
    fields.insert("send_pend".to_owned(), json!(0));
    fields.insert("message_stats".to_owned(), Value::Object(messages));
    fields
}

fn connection_json(client: &Client) -> Value {
    let info = &client.info;
    let capabilities: serde_json::Map<String, Value> = info
        .capabilities
        .iter()
        .map(|c| (c.clone(), Value::Bool(true)))
        .collect();
    let mut connection = json!({
        "name": info.name,
        "node": node_name(client.node),
        "number": client.number,
        "state": "running",
        "type": "network",
        "protocol": "AMQP 0-9-1",
        "user": info.user,
        "vhost": info.vhost,
        "connected_at": info.connected_at_ms,
        "host": info.host,
        "port": info.port,
        "peer_host": info.peer_host,
        "peer_port": info.peer_port,
        "ssl": info.ssl,
        "auth_mechanism": "PLAIN",
        "channel_max": info.channel_max,
        "frame_max": info.frame_max,
        "timeout": info.heartbeat_secs,
        "channels": info.channels,
        "client_properties": {
            "product": info.product,
            "platform": info.platform,
            "version": info.version,
            "connection_name": info.connection_name,
            "capabilities": capabilities,
        },
    });
    if let Value::Object(fields) = &mut connection {
        fields.extend(connection_stats(info));
    }
    connection
}

async fn list_connections(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    Query(paging): Query<Paging>,
) -> ApiResult {
    let viewer = authenticate(&sources, &headers)?;
    let items = all_clients(&sources)
        .await
        .iter()
        .filter(|c| sees_user(&viewer, &c.info.user))
        .map(connection_json)
        .collect();
    paged(items, &paging)
}

async fn get_connection(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult {
    let viewer = authenticate(&sources, &headers)?;
    all_clients(&sources)
        .await
        .iter()
        .find(|c| c.info.name == name && sees_user(&viewer, &c.info.user))
        .map(|c| Json(connection_json(c)))
        .ok_or_else(ApiError::not_found)
}

/// `DELETE /api/connections/{name}`: closes it (320 CONNECTION_FORCED with
/// the `X-Reason` header's text, or RabbitMQ's default) on whichever node
/// has it; 204, or 404.
async fn close_connection(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let viewer = authenticate(&sources, &headers)?;
    let reason = headers
        .get("x-reason")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("Closed via management plugin")
        .to_owned();
    let target = all_clients(&sources)
        .await
        .into_iter()
        .find(|c| c.info.name == name && sees_user(&viewer, &c.info.user))
        .ok_or_else(ApiError::not_found)?;
    // Closing takes an administrator, or the connection's own user (a
    // monitoring user sees every connection but closes none of others').
    let administrator = viewer.tags.iter().any(|t| t == "administrator");
    if !administrator && viewer.name.as_str() != target.info.user {
        return Err(ApiError::unauthorized("Not administrator user"));
    }
    if target.node == sources.frontend.node_id.0 {
        return if sources.frontend.registry.close_client(&name, &reason) {
            Ok(StatusCode::NO_CONTENT)
        } else {
            Err(ApiError::not_found())
        };
    }
    let network = sources.cluster.as_ref().ok_or_else(ApiError::not_found)?;
    let addr = sources
        .frontend
        .node
        .metrics()
        .members
        .get(&target.node)
        .cloned()
        .ok_or_else(ApiError::not_found)?;
    network
        .admin(&addr, "close-connection", vec![name, reason])
        .await
        .map_err(|_| ApiError::not_found())?;
    Ok(StatusCode::NO_CONTENT)
}

/// Connections by (node, number), for naming channels and consumers.
fn by_id(clients: &[Client]) -> HashMap<(u64, u64), &Client> {
    clients.iter().map(|c| ((c.node, c.number), c)).collect()
}

fn channel_details(client: &Client, channel: u16) -> Value {
    json!({
        "name": format!("{} ({channel})", client.info.name),
        "number": channel,
        "connection_name": client.info.name,
        "node": node_name(client.node),
        "peer_host": client.info.peer_host,
        "peer_port": client.info.peer_port,
        "user": client.info.user,
    })
}

async fn list_channels(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    Query(paging): Query<Paging>,
) -> ApiResult {
    let viewer = authenticate(&sources, &headers)?;
    let clients = all_clients(&sources).await;
    let clients = by_id(&clients);
    let channels: Vec<warren_core::ChannelSummary> = read(&sources, |broker| broker.channel_summaries().collect());
    let items = channels
        .iter()
        .filter_map(|summary| {
            let client = clients.get(&(summary.id.conn.node.0, summary.id.conn.seq))?;
            sees_user(&viewer, &client.info.user).then(|| {
                json!({
                    "name": format!("{} ({})", client.info.name, summary.id.channel),
                    "number": summary.id.channel,
                    "node": node_name(client.node),
                    "user": client.info.user,
                    "vhost": client.info.vhost,
                    "state": "running",
                    "connection_details": {
                        "name": client.info.name,
                        "peer_host": client.info.peer_host,
                        "peer_port": client.info.peer_port,
                    },
                    "consumer_count": summary.consumers,
                    "confirm": false,
                    "prefetch_count": summary.prefetch,
                    "global_prefetch_count": summary.global_prefetch,
                    "messages_unacknowledged": summary.unacked,
                    "messages_unconfirmed": 0,
                    "messages_uncommitted": 0,
                    "acks_uncommitted": 0,
                    "transactional": false,
                })
            })
        })
        .collect();
    paged(items, &paging)
}

/// Consumers in `only` (or every vhost) that `viewer` may see.
async fn consumers(sources: &Sources, viewer: &User, only: Option<&VHost>) -> Result<Vec<Value>, ApiError> {
    if let Some(vhost) = only {
        crate::api::require_visible(sources, viewer, vhost)?;
    }
    let clients = all_clients(sources).await;
    let clients = by_id(&clients);
    let consumers: Vec<(warren_core::ChannelId, String, warren_core::consumer::Consumer)> = read(sources, |broker| {
        broker
            .consumers()
            .filter(|(_, _, c)| only.is_none_or(|v| *v == c.vhost))
            .map(|(channel, tag, c)| (channel, tag.to_string(), c.clone()))
            .collect()
    });
    Ok(consumers
        .iter()
        .filter_map(|(channel, tag, consumer)| {
            let client = clients.get(&(channel.conn.node.0, channel.conn.seq))?;
            sees_user(viewer, &client.info.user).then(|| {
                json!({
                    "consumer_tag": tag,
                    "queue": {"name": consumer.queue.as_str(), "vhost": consumer.vhost.as_str()},
                    "channel_details": channel_details(client, channel.channel),
                    "ack_required": !consumer.no_ack,
                    "prefetch_count": consumer.prefetch,
                    "exclusive": consumer.exclusive,
                    "active": true,
                    "activity_status": "up",
                    "arguments": table_json(&amq_protocol_types::FieldTable::default()),
                    "consumer_timeout": 1_800_000,
                })
            })
        })
        .collect())
}

async fn list_consumers(State(sources): State<Arc<Sources>>, headers: HeaderMap) -> ApiResult {
    let viewer = authenticate(&sources, &headers)?;
    Ok(Json(Value::Array(consumers(&sources, &viewer, None).await?)))
}

async fn list_consumers_in(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    Path(vhost): Path<String>,
) -> ApiResult {
    let viewer = authenticate(&sources, &headers)?;
    Ok(Json(Value::Array(
        consumers(&sources, &viewer, Some(&VHost::new(vhost))).await?,
    )))
}
