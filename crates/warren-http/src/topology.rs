//! Exchange and binding writes, publishing and getting messages over the
//! management API (issue 10), shaped as RabbitMQ's:
//!
//! - `PUT/DELETE /api/exchanges/{vh}/{x}`;
//! - `GET/POST /api/bindings/{vh}/e/{x}/q/{q}` and `…/e/{x}/e/{y}` (the
//!   `Location` of a new binding ends with its properties key, which
//!   Terraform's provider reads back), `GET/DELETE …/{props}`;
//! - `POST /api/exchanges/{vh}/{x}/publish` → `{"routed": bool}`;
//! - `POST /api/queues/{vh}/{q}/get` with `count`, `ackmode`, `encoding`,
//!   `truncate`.
//!
//! Each write is checked against the user's permissions as the AMQP
//! operation would be, then runs as a command through Raft on a
//! short-lived connection of this node.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Map, Value};
use warren_core::access::{Perm, ResourceKind};
use warren_core::{Command, ExchangeKind, ExchangeName, Message, Outcome, Properties, QueueName, User, VHost};

use crate::api::{
    authenticate, authorize, bindings_of, execute, flag, json_body, json_table, read, require_vhost, table_json,
    ApiError, DeleteConditions,
};
use crate::Sources;

type ApiResult = Result<Json<Value>, ApiError>;

/// The routes of this module.
pub(crate) fn routes() -> Router<Arc<Sources>> {
    Router::new()
        .route("/api/exchanges/{vhost}/{name}/publish", post(publish))
        .route("/api/queues/{vhost}/{name}/get", post(get_messages))
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}",
            get(list_between).post(create_binding),
        )
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{destination}/{props}",
            get(get_binding).delete(delete_binding),
        )
}

/// `PUT /api/exchanges/{vh}/{x}`: `type` (required), `durable` (true),
/// `auto_delete`, `internal`, `arguments`; 201 new, 204 existing, 400 if
/// inequivalent, 403 for the default and `amq.*` exchanges.
pub(crate) async fn declare_exchange(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    let viewer = authenticate(&sources, &headers)?;
    let body = json_body(&body)?;
    let kind = match body.get("type") {
        Some(Value::String(kind)) => {
            ExchangeKind::parse(kind).ok_or_else(|| ApiError::bad_request(format!("unknown exchange type '{kind}'")))?
        }
        Some(other) => return Err(ApiError::bad_request(format!("type must be a string, got {other}"))),
        None => return Err(ApiError::bad_request("Missing key(s): type")),
    };
    let arguments = arguments(&body)?;
    let vhost = require_vhost(&sources, &viewer, vhost)?;
    let name = ExchangeName::new(name);
    if !name.is_default() {
        authorize(
            &sources,
            &viewer,
            &vhost,
            ResourceKind::Exchange,
            name.as_str(),
            Perm::Configure,
        )?;
        let more = warren_core::access::argument_checks(ResourceKind::Exchange, name.as_str(), &arguments);
        for (kind, resource, perm) in more {
            authorize(&sources, &viewer, &vhost, kind, &resource, perm)?;
        }
    }
    let existed = exchange_exists(&sources, &vhost, &name);
    let command = Command::DeclareExchange {
        vhost,
        name,
        kind,
        passive: false,
        durable: flag(&body, "durable", true)?,
        auto_delete: flag(&body, "auto_delete", false)?,
        internal: flag(&body, "internal", false)?,
        arguments,
    };
    execute(&sources, command).await?;
    Ok(crate::api::created_or_updated(existed))
}

/// `DELETE /api/exchanges/{vh}/{x}` (`?if-unused=true`): 204, 404, 400 if
/// in use, 403 for the default and `amq.*` exchanges.
pub(crate) async fn delete_exchange(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
    Query(conditions): Query<DeleteConditions>,
) -> Result<StatusCode, ApiError> {
    let viewer = authenticate(&sources, &headers)?;
    let vhost = require_vhost(&sources, &viewer, vhost)?;
    let name = ExchangeName::new(name);
    let reserved = name.is_default() || name.as_str().starts_with("amq.");
    if !reserved {
        if !exchange_exists(&sources, &vhost, &name) {
            return Err(ApiError::not_found());
        }
        authorize(
            &sources,
            &viewer,
            &vhost,
            ResourceKind::Exchange,
            name.as_str(),
            Perm::Configure,
        )?;
    }
    let command = Command::DeleteExchange {
        vhost,
        name,
        if_unused: conditions.if_unused(),
    };
    execute(&sources, command).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The exchange a path names: `amq.default` is the default exchange, as
/// in RabbitMQ's API (a path segment cannot be empty).
pub(crate) fn exchange_in_path(name: String) -> ExchangeName {
    if name == "amq.default" {
        ExchangeName::default_exchange()
    } else {
        ExchangeName::new(name)
    }
}

fn exchange_exists(sources: &Sources, vhost: &VHost, name: &ExchangeName) -> bool {
    read(sources, |broker| {
        broker
            .vhosts()
            .get(vhost)
            .is_some_and(|state| state.exchanges.contains_key(name))
    })
}

/// `arguments` of a request body: an object, or absent.
pub(crate) fn arguments(body: &Map<String, Value>) -> Result<amq_protocol_types::FieldTable, ApiError> {
    match body.get("arguments") {
        None | Some(Value::Null) => Ok(amq_protocol_types::FieldTable::default()),
        Some(value @ Value::Object(_)) => Ok(json_table(value)),
        Some(other) => Err(ApiError::bad_request(format!(
            "arguments must be an object, got {other}"
        ))),
    }
}

/// The destination a binding path names: `q` or `e`.
fn destination_kind(kind: &str) -> Result<&'static str, ApiError> {
    match kind {
        "q" => Ok("queue"),
        "e" => Ok("exchange"),
        _ => Err(ApiError::not_found()),
    }
}

/// The bindings from `source` to `destination` in `vhost`, as listed.
fn bindings_between(
    sources: &Sources,
    viewer: &User,
    vhost: &VHost,
    source: &str,
    kind: &str,
    destination: &str,
) -> Result<Vec<Value>, ApiError> {
    crate::api::require_visible(sources, viewer, vhost)?;
    let found = read(sources, |broker| {
        let state = broker.vhosts().get(vhost)?;
        let source_exists = source.is_empty() || state.exchanges.contains_key(&ExchangeName::new(source));
        let destination_exists = match kind {
            "queue" => state.queues.contains_key(&QueueName::new(destination)),
            _ => state.exchanges.contains_key(&ExchangeName::new(destination)),
        };
        (source_exists && destination_exists).then(|| {
            bindings_of(vhost, state)
                .into_iter()
                .filter(|b| b["source"] == source && b["destination_type"] == kind && b["destination"] == destination)
                .collect::<Vec<_>>()
        })
    });
    found.ok_or_else(ApiError::not_found)
}

async fn list_between(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    Path((vhost, source, kind, destination)): Path<(String, String, String, String)>,
) -> ApiResult {
    let viewer = authenticate(&sources, &headers)?;
    let kind = destination_kind(&kind)?;
    let bindings = bindings_between(&sources, &viewer, &VHost::new(vhost), &source, kind, &destination)?;
    Ok(Json(Value::Array(bindings)))
}

async fn get_binding(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    Path((vhost, source, kind, destination, props)): Path<(String, String, String, String, String)>,
) -> ApiResult {
    let viewer = authenticate(&sources, &headers)?;
    let kind = destination_kind(&kind)?;
    bindings_between(&sources, &viewer, &VHost::new(vhost), &source, kind, &destination)?
        .into_iter()
        .find(|b| b["properties_key"] == props.as_str())
        .map(Json)
        .ok_or_else(ApiError::not_found)
}

/// The command binding or unbinding `destination` (of `kind`) to `source`.
fn binding_command(
    bind: bool,
    vhost: VHost,
    source: String,
    kind: &str,
    destination: String,
    routing_key: String,
    arguments: amq_protocol_types::FieldTable,
) -> Command {
    let exchange = ExchangeName::new(source);
    match (kind, bind) {
        ("queue", true) => Command::BindQueue {
            vhost,
            queue: QueueName::new(destination),
            exchange,
            routing_key,
            arguments,
        },
        ("queue", false) => Command::UnbindQueue {
            vhost,
            queue: QueueName::new(destination),
            exchange,
            routing_key,
            arguments,
        },
        (_, true) => Command::BindExchange {
            vhost,
            destination: ExchangeName::new(destination),
            source: exchange,
            routing_key,
            arguments,
        },
        (_, false) => Command::UnbindExchange {
            vhost,
            destination: ExchangeName::new(destination),
            source: exchange,
            routing_key,
            arguments,
        },
    }
}

/// Checks what binding needs: write on the destination, read on the source.
fn authorize_binding(
    sources: &Sources,
    viewer: &User,
    vhost: &VHost,
    source: &str,
    kind: &str,
    destination: &str,
) -> Result<(), ApiError> {
    let destination_kind = if kind == "queue" {
        ResourceKind::Queue
    } else {
        ResourceKind::Exchange
    };
    authorize(sources, viewer, vhost, destination_kind, destination, Perm::Write)?;
    authorize(sources, viewer, vhost, ResourceKind::Exchange, source, Perm::Read)
}

/// `POST /api/bindings/{vh}/e/{x}/{q|e}/{dest}` with `routing_key` and
/// `arguments`: 201 with `Location: {dest}/{properties_key}` (relative to
/// the request, as RabbitMQ's); 404 for a missing source or destination.
async fn create_binding(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    Path((vhost, source, kind, destination)): Path<(String, String, String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let viewer = authenticate(&sources, &headers)?;
    let kind = destination_kind(&kind)?;
    let body = json_body(&body)?;
    let routing_key = match body.get("routing_key") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(key)) => key.clone(),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "routing_key must be a string, got {other}"
            )))
        }
    };
    let arguments = arguments(&body)?;
    let vhost = VHost::new(vhost);
    // 404 before anything else for a missing vhost, source or destination.
    bindings_between(&sources, &viewer, &vhost, &source, kind, &destination)?;
    authorize_binding(&sources, &viewer, &vhost, &source, kind, &destination)?;
    let props = crate::api::properties_key(&routing_key, &arguments);
    let command = binding_command(true, vhost, source, kind, destination.clone(), routing_key, arguments);
    execute(&sources, command).await?;
    // As RabbitMQ's (`rabbit_mgmt_format:url/2`): every segment quoted,
    // the properties key too, so that unescaping the last segment gives
    // the `properties_key` the listings show (Terraform's provider finds
    // the binding again that way).
    let location = format!(
        "{}/{}",
        crate::api::quote_plus(&destination),
        crate::api::quote_plus(&props)
    );
    Ok((StatusCode::CREATED, [(header::LOCATION, location)]).into_response())
}

/// `DELETE /api/bindings/{vh}/e/{x}/{q|e}/{dest}/{props}`: 204, or 404 if
/// no binding has that properties key.
async fn delete_binding(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    Path((vhost, source, kind, destination, props)): Path<(String, String, String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let viewer = authenticate(&sources, &headers)?;
    let kind = destination_kind(&kind)?;
    let vhost = VHost::new(vhost);
    bindings_between(&sources, &viewer, &vhost, &source, kind, &destination)?;
    // The binding as stored: its arguments keep their AMQP types (a JSON
    // round trip would widen them and the unbind would match nothing).
    let stored = read(&sources, |broker| {
        let exchange = broker
            .vhosts()
            .get(&vhost)?
            .exchanges
            .get(&ExchangeName::new(source.as_str()))?;
        exchange
            .bindings
            .iter()
            .find(|b| {
                let to = match &b.destination {
                    warren_core::exchange::Destination::Queue(q) => ("queue", q.as_str()),
                    warren_core::exchange::Destination::Exchange(x) => ("exchange", x.as_str()),
                };
                to == (kind, destination.as_str()) && crate::api::properties_key(&b.routing_key, &b.arguments) == props
            })
            .map(|b| (b.routing_key.clone(), b.arguments.clone()))
    });
    let (routing_key, arguments) = stored.ok_or_else(ApiError::not_found)?;
    authorize_binding(&sources, &viewer, &vhost, &source, kind, &destination)?;
    let command = binding_command(false, vhost, source, kind, destination, routing_key, arguments);
    execute(&sources, command).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/exchanges/{vh}/{x}/publish`: `routing_key`, `payload`,
/// `payload_encoding` (`string` or `base64`), `properties` (RabbitMQ's
/// names; `headers` an object). `{"routed": true}` once the message is
/// committed and reached a queue.
async fn publish(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult {
    let viewer = authenticate(&sources, &headers)?;
    let body = json_body(&body)?;
    let text = |key: &str| -> Result<String, ApiError> {
        match body.get(key) {
            Some(Value::String(value)) => Ok(value.clone()),
            Some(other) => Err(ApiError::bad_request(format!("{key} must be a string, got {other}"))),
            None => Err(ApiError::bad_request(format!("Missing key(s): {key}"))),
        }
    };
    let routing_key = text("routing_key")?;
    let payload = text("payload")?;
    let payload = match body.get("payload_encoding").and_then(Value::as_str).unwrap_or("string") {
        "string" => payload.into_bytes(),
        "base64" => base64::engine::general_purpose::STANDARD
            .decode(payload.as_bytes())
            .map_err(|e| ApiError::bad_request(format!("payload is not base64: {e}")))?,
        other => return Err(ApiError::bad_request(format!("unknown payload_encoding '{other}'"))),
    };
    let properties = properties(body.get("properties"))?;
    let vhost = require_vhost(&sources, &viewer, vhost)?;
    let exchange = exchange_in_path(name);
    if !exchange.is_default() && !exchange_exists(&sources, &vhost, &exchange) {
        return Err(ApiError::not_found());
    }
    authorize(
        &sources,
        &viewer,
        &vhost,
        ResourceKind::Exchange,
        exchange.as_str(),
        Perm::Write,
    )?;
    if properties
        .user_id
        .as_deref()
        .is_some_and(|id| id != viewer.name.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "user_id property set to '{}' but authenticated user was '{}'",
            properties.user_id.as_deref().unwrap_or_default(),
            viewer.name
        )));
    }
    let limit = sources.frontend.config.max_message_size;
    if payload.len() as u64 > limit {
        return Err(ApiError::bad_request(format!(
            "message size {} is larger than the configured max size {limit}",
            payload.len()
        )));
    }
    let message = Message {
        exchange,
        routing_key,
        properties: Arc::new(properties),
        body: bytes_body(payload),
    };
    // As a client's publish: a large body goes in parts.
    let mut session = sources.frontend.session();
    let published = session.publish(vhost, false, message).await;
    session.close().await;
    match published? {
        Outcome::Published { routed, .. } => Ok(Json(json!({"routed": routed}))),
        other => Err(ApiError::bad_request(format!("unexpected outcome {other:?}"))),
    }
}

fn bytes_body(payload: Vec<u8>) -> warren_core::Body {
    bytes::Bytes::from(payload).into()
}

/// Message properties as RabbitMQ's API takes them.
fn properties(value: Option<&Value>) -> Result<Properties, ApiError> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(Properties::default());
    };
    let Value::Object(object) = value else {
        return Err(ApiError::bad_request(format!(
            "properties must be an object, got {value}"
        )));
    };
    let mut properties = Properties::default();
    for (key, value) in object {
        let text = || -> Result<String, ApiError> {
            match value {
                Value::String(s) => Ok(s.clone()),
                other => Err(ApiError::bad_request(format!(
                    "property {key} must be a string, got {other}"
                ))),
            }
        };
        let number = |max: u64| -> Result<u64, ApiError> {
            value.as_u64().filter(|n| *n <= max).ok_or_else(|| {
                ApiError::bad_request(format!("property {key} must be a number up to {max}, got {value}"))
            })
        };
        match key.as_str() {
            "content_type" => properties.content_type = Some(text()?),
            "content_encoding" => properties.content_encoding = Some(text()?),
            "headers" => properties.headers = Some(json_table(value)),
            "delivery_mode" => properties.delivery_mode = Some(u8::try_from(number(2)?).unwrap_or(2)),
            "priority" => properties.priority = Some(u8::try_from(number(255)?).unwrap_or(u8::MAX)),
            "correlation_id" => properties.correlation_id = Some(text()?),
            "reply_to" => properties.reply_to = Some(text()?),
            "expiration" => properties.expiration = Some(text()?),
            "message_id" => properties.message_id = Some(text()?),
            "timestamp" => properties.timestamp = Some(number(u64::MAX)?),
            "type" => properties.kind = Some(text()?),
            "user_id" => properties.user_id = Some(text()?),
            "app_id" => properties.app_id = Some(text()?),
            "cluster_id" => properties.cluster_id = Some(text()?),
            other => return Err(ApiError::bad_request(format!("unknown property '{other}'"))),
        }
    }
    Ok(properties)
}

/// Message properties as RabbitMQ's API shows them (only those set).
fn properties_json(properties: &Properties) -> Value {
    let mut out = Map::new();
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            out.insert(key.to_owned(), value);
        }
    };
    put("content_type", properties.content_type.clone().map(Value::from));
    put("content_encoding", properties.content_encoding.clone().map(Value::from));
    put("headers", properties.headers.as_ref().map(table_json));
    put("delivery_mode", properties.delivery_mode.map(Value::from));
    put("priority", properties.priority.map(Value::from));
    put("correlation_id", properties.correlation_id.clone().map(Value::from));
    put("reply_to", properties.reply_to.clone().map(Value::from));
    put("expiration", properties.expiration.clone().map(Value::from));
    put("message_id", properties.message_id.clone().map(Value::from));
    put("timestamp", properties.timestamp.map(Value::from));
    put("type", properties.kind.clone().map(Value::from));
    put("user_id", properties.user_id.clone().map(Value::from));
    put("app_id", properties.app_id.clone().map(Value::from));
    put("cluster_id", properties.cluster_id.clone().map(Value::from));
    Value::Object(out)
}

/// The largest `count` of one get (RabbitMQ sets none; this keeps one
/// request's reply bounded).
const MAX_GET_COUNT: u64 = 10_000;

/// `POST /api/queues/{vh}/{q}/get`: `count`, `ackmode`
/// (`ack_requeue_true`, `ack_requeue_false`, `reject_requeue_true`,
/// `reject_requeue_false`), `encoding` (`auto` or `base64`), `truncate`
/// (bytes). Gets up to `count` messages, then requeues them or removes
/// them as `ackmode` says; each as RabbitMQ shows it.
async fn get_messages(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult {
    let viewer = authenticate(&sources, &headers)?;
    let body = json_body(&body)?;
    let count = match body.get("count") {
        None => 1,
        Some(value) => value
            .as_u64()
            .filter(|n| (1..=MAX_GET_COUNT).contains(n))
            .ok_or_else(|| ApiError::bad_request(format!("count must be 1 to {MAX_GET_COUNT}, got {value}")))?,
    };
    let requeue = match body.get("ackmode").and_then(Value::as_str) {
        Some("ack_requeue_true" | "reject_requeue_true") => true,
        Some("ack_requeue_false" | "reject_requeue_false") => false,
        Some(other) => return Err(ApiError::bad_request(format!("unknown ackmode '{other}'"))),
        None => return Err(ApiError::bad_request("Missing key(s): ackmode")),
    };
    let base64_always = match body.get("encoding").and_then(Value::as_str) {
        None | Some("auto") => false,
        Some("base64") => true,
        Some(other) => return Err(ApiError::bad_request(format!("unknown encoding '{other}'"))),
    };
    let truncate = match body.get("truncate") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| ApiError::bad_request(format!("truncate must be a number, got {value}")))?,
        ),
    };
    let vhost = require_vhost(&sources, &viewer, vhost)?;
    let queue = QueueName::new(name);
    if !read(&sources, |broker| {
        broker
            .vhosts()
            .get(&vhost)
            .is_some_and(|v| v.queues.contains_key(&queue))
    }) {
        return Err(ApiError::not_found());
    }
    authorize(
        &sources,
        &viewer,
        &vhost,
        ResourceKind::Queue,
        queue.as_str(),
        Perm::Read,
    )?;
    let mut session = sources.frontend.session();
    let got = take_messages(&mut session, &vhost, &queue, count, requeue).await;
    session.close().await;
    let got = got?;
    let items = got
        .into_iter()
        .map(|(redelivered, message_count, message)| {
            message_json(&message, redelivered, message_count, base64_always, truncate)
        })
        .collect();
    Ok(Json(Value::Array(items)))
}

/// Gets up to `count` messages on `session`, then settles them all.
async fn take_messages(
    session: &mut warren_amqp::Session,
    vhost: &VHost,
    queue: &QueueName,
    count: u64,
    requeue: bool,
) -> Result<Vec<(bool, u32, Arc<Message>)>, ApiError> {
    let mut got = Vec::new();
    let mut last_tag = None;
    for _ in 0..count {
        let command = Command::Get {
            vhost: vhost.clone(),
            queue: queue.clone(),
            no_ack: false,
        };
        match session.execute(command).await? {
            Outcome::GetOk {
                delivery_tag,
                redelivered,
                message_count,
                message,
            } => {
                last_tag = Some(delivery_tag);
                got.push((redelivered, message_count, message));
            }
            _ => break,
        }
    }
    if let Some(delivery_tag) = last_tag {
        let settle = if requeue {
            Command::Nack {
                delivery_tag,
                multiple: true,
                requeue: true,
            }
        } else {
            Command::Ack {
                delivery_tag,
                multiple: true,
            }
        };
        session.execute(settle).await?;
    }
    Ok(got)
}

/// One message of a get, as RabbitMQ's API shows it.
fn message_json(
    message: &Message,
    redelivered: bool,
    message_count: u32,
    base64_always: bool,
    truncate: Option<usize>,
) -> Value {
    let body = message.body.inline().map(|b| b.to_vec()).unwrap_or_default();
    let payload_bytes = body.len();
    let shown = &body[..truncate.map_or(body.len(), |t| t.min(body.len()))];
    let (payload, encoding) = match std::str::from_utf8(shown) {
        Ok(text) if !base64_always => (text.to_owned(), "string"),
        _ => (base64::engine::general_purpose::STANDARD.encode(shown), "base64"),
    };
    json!({
        "payload_bytes": payload_bytes,
        "redelivered": redelivered,
        "exchange": message.exchange.as_str(),
        "routing_key": message.routing_key,
        "message_count": message_count,
        "properties": properties_json(&message.properties),
        "payload": payload,
        "payload_encoding": encoding,
    })
}
