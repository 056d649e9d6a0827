//! The management HTTP API on `--http-listen` (default `0.0.0.0:15672`):
//! the read side of RabbitMQ's API (issue 10, item 2, in part), so that
//! tools which read `/api/queues` and friends work against any node.
//!
//! - HTTP Basic against the broker's users (RabbitMQ's password hashes);
//!   a user needs one of the tags `administrator`, `monitoring`,
//!   `policymaker` or `management`, and `/api/users` needs
//!   `administrator`, as in RabbitMQ (401 with RabbitMQ's reasons).
//! - JSON shaped as RabbitMQ 3.x's, `%2F` for the vhost `/`, pagination
//!   with `page`, `page_size` and `name` (a substring, or with
//!   `use_regex=true` a regular expression).
//! - Counts come from this node's replica of the state: on a follower they
//!   may lag the leader by the entries not yet applied (milliseconds).
//! - Writes: declaring, deleting and purging a queue here; users, vhosts
//!   and permissions in [`crate::users`] (each a command through Raft, as
//!   a short-lived connection of this node).
//! - Management users see only the vhosts where they have permissions;
//!   administrators and monitoring users see all.
//! - Not here yet: exchange and binding writes, publish and get, message
//!   rates and `message_stats` (no statistics are kept yet), connections,
//!   channels, consumers, policies, definitions import.

use std::sync::Arc;

use amq_protocol_types::{AMQPValue, FieldTable};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Value};
use warren_core::access::{Perm, ResourceKind};
use warren_core::{Broker, Command, CoreError, Outcome, QueueName, User, UserName, VHost};

use crate::queue_view::{QueueRow, QueueView};
use crate::Sources;

/// Tags that may use the management API.
const MANAGEMENT_TAGS: [&str; 4] = ["administrator", "monitoring", "policymaker", "management"];

/// The page size RabbitMQ uses when `page` is given without `page_size`.
const DEFAULT_PAGE_SIZE: usize = 100;
/// RabbitMQ's largest `page_size`.
const MAX_PAGE_SIZE: usize = 500;

/// The API's routes, for [`crate::serve`].
pub fn router(sources: Arc<Sources>) -> Router {
    Router::new()
        .route("/api/overview", get(overview))
        .route("/api/whoami", get(whoami))
        .route("/api/nodes", get(nodes))
        .route("/api/nodes/{name}", get(node))
        .route("/api/warren/members", get(members).post(add_member))
        .route("/api/warren/members/{id}", axum::routing::delete(remove_member))
        .route("/api/vhosts", get(vhosts))
        .route(
            "/api/vhosts/{vhost}",
            get(vhost)
                .put(crate::users::put_vhost)
                .delete(crate::users::delete_vhost),
        )
        .route("/api/queues", get(queues))
        // `/api/queues/` as well: Flower asks for the vhost `/` that way.
        .route("/api/queues/", get(queues))
        .route("/api/queues/{vhost}", get(queues))
        .route(
            "/api/queues/{vhost}/{name}",
            get(queue).put(declare_queue).delete(delete_queue),
        )
        .route(
            "/api/queues/{vhost}/{name}/contents",
            axum::routing::delete(purge_queue),
        )
        .route("/api/queues/{vhost}/{name}/bindings", get(queue_bindings))
        .route("/api/exchanges/{vhost}/{name}/bindings/{side}", get(exchange_bindings))
        .route("/api/exchanges", get(exchanges))
        .route("/api/exchanges/", get(exchanges))
        .route("/api/exchanges/{vhost}", get(exchanges))
        .route(
            "/api/exchanges/{vhost}/{name}",
            get(exchange)
                .put(crate::topology::declare_exchange)
                .delete(crate::topology::delete_exchange),
        )
        .route("/api/bindings", get(bindings))
        .route("/api/bindings/", get(bindings))
        .route("/api/bindings/{vhost}", get(bindings))
        .route("/api/vhost-limits", get(vhost_limits))
        .route("/api/vhost-limits/{vhost}", get(vhost_limits))
        .route("/api/users", get(users))
        .route("/api/definitions", get(definitions).post(crate::definitions::import))
        .route("/api/health/checks/alarms", get(alarms))
        .route("/api/health/checks/local-alarms", get(alarms))
        .route("/api/health/checks/virtual-hosts", get(vhosts_running))
        .route("/api/health/checks/port-listener/{port}", get(port_listener))
        .route("/api/health/checks/node-is-quorum-critical", get(quorum_critical))
        .route("/api/aliveness-test/{vhost}", get(aliveness))
        .merge(crate::users::routes())
        .merge(crate::topology::routes())
        .merge(crate::definitions::routes())
        .merge(crate::connections::routes())
        .merge(crate::ui::routes())
        .merge(crate::health::routes())
        .fallback(not_found)
        .layer(axum::middleware::from_fn(no_challenge_for_scripts))
        .layer(axum::middleware::from_fn(errors_as_json))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(sources)
}

/// An API error: a status and RabbitMQ's `{"error", "reason"}` body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: &'static str,
    reason: String,
}

impl ApiError {
    pub(crate) fn unauthorized(reason: &str) -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            error: "not_authorized",
            reason: reason.to_owned(),
        }
    }

    pub(crate) fn not_found() -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            error: "Object Not Found",
            reason: "Not Found".to_owned(),
        }
    }

    fn unavailable(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            error: "unavailable",
            reason: reason.into(),
        }
    }

    /// The core's refusal as RabbitMQ's API answers it.
    pub(crate) fn from_core(error: &CoreError) -> Self {
        let (status, kind) = match error.reply_code() {
            404 => (StatusCode::NOT_FOUND, "Object Not Found"),
            403 => (StatusCode::FORBIDDEN, "access_refused"),
            code if code < 500 => (StatusCode::BAD_REQUEST, "bad_request"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        };
        Self {
            status,
            error: kind,
            reason: error.to_string(),
        }
    }

    /// A 400 whose reason names the object it was about (an import's).
    pub(crate) fn prefixed(self, what: &str) -> Self {
        Self::bad_request(format!("{what}: {}", self.reason))
    }

    pub(crate) fn bad_request(reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            error: "bad_request",
            reason: reason.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": self.error, "reason": self.reason}));
        if self.status == StatusCode::UNAUTHORIZED {
            let challenge = [(header::WWW_AUTHENTICATE, "Basic realm=\"RabbitMQ Management\"")];
            return (self.status, challenge, body).into_response();
        }
        (self.status, body).into_response()
    }
}

type ApiResult = Result<Json<Value>, ApiError>;

/// The largest request body taken: RabbitMQ's default
/// `management.http.max_body_size` (a definitions file can be large).
const MAX_BODY_BYTES: usize = 20_000_000;

/// Every error answered as RabbitMQ's JSON, including those axum makes
/// itself (405 for a method a path does not take, 413 for a body over the
/// limit, 415, …), which come as plain text or empty.
async fn errors_as_json(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        // Refused from the head alone: nothing of the body is read.
        let reason = format!("the request body is over the limit of {MAX_BODY_BYTES} bytes");
        let mut refused = Json(json!({"error": "payload_too_large", "reason": reason})).into_response();
        *refused.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
        refused
            .headers_mut()
            .insert(header::CONNECTION, header::HeaderValue::from_static("close"));
        return refused;
    }
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let error = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        _ if status.is_client_error() => "bad_request",
        _ => "internal_error",
    };
    let reason = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let mut json = Json(json!({"error": error, "reason": reason})).into_response();
    *json.status_mut() = status;
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            json.headers_mut().insert(name.clone(), value.clone());
        }
    }
    json
}

/// Drops the `WWW-Authenticate` challenge from answers to scripts (requests
/// with `X-Requested-With`, as the UI sends): a browser would otherwise
/// put up its own login dialog over the UI's on a wrong password.
async fn no_challenge_for_scripts(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let script = request.headers().contains_key("x-requested-with");
    let mut response = next.run(request).await;
    if script {
        response.headers_mut().remove(header::WWW_AUTHENTICATE);
    }
    response
}

async fn not_found() -> ApiError {
    ApiError::not_found()
}

/// The user of a request's `Authorization: Basic …`, if the password is
/// right and the user may use the API.
pub(crate) fn authenticate(sources: &Sources, headers: &HeaderMap) -> Result<User, ApiError> {
    let credentials = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Basic "))
        .and_then(|encoded| base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok())
        .and_then(|decoded| String::from_utf8(decoded).ok())
        .ok_or_else(|| ApiError::unauthorized("Not_Authorized"))?;
    let (name, password) = credentials
        .split_once(':')
        .ok_or_else(|| ApiError::unauthorized("Not_Authorized"))?;
    let user = sources
        .frontend
        .node
        .read(|broker| broker.user(&UserName::new(name.to_owned())).cloned());
    // Hashed whether or not the user exists (no timing oracle of names).
    let user = warren_amqp::password::verify_login(user.as_ref().map(|u| u.password_hash.as_str()), password)
        .then_some(user)
        .flatten()
        .ok_or_else(|| ApiError::unauthorized("Login failed"))?;
    if !user.tags.iter().any(|tag| MANAGEMENT_TAGS.contains(&tag.as_str())) {
        return Err(ApiError::unauthorized("Not management user"));
    }
    Ok(user)
}

fn node_name(sources: &Sources) -> String {
    format!("warren@node-{}", sources.frontend.node_id.0)
}

/// `page`, `page_size`, `name`, `use_regex`.
#[derive(Debug, Default, serde::Deserialize)]
pub struct Paging {
    page: Option<String>,
    page_size: Option<String>,
    name: Option<String>,
    use_regex: Option<String>,
}

/// `items` as RabbitMQ returns them: the whole list, or with `page` the
/// page object (`items`, `page`, `page_count`, `page_size`, counts).
pub(crate) fn paged(items: Vec<Value>, paging: &Paging) -> ApiResult {
    let page = page_of(items, |item| item["name"].as_str().unwrap_or_default(), paging)?;
    Ok(Json(serde_json::to_value(page).unwrap_or_default()))
}

/// A list as RabbitMQ's API answers it: whole, or with `page` the page
/// object.
#[derive(Debug, serde::Serialize)]
#[serde(untagged)]
pub(crate) enum Page<T> {
    All(Vec<T>),
    Page {
        filtered_count: usize,
        item_count: usize,
        items: Vec<T>,
        page: usize,
        page_count: usize,
        page_size: usize,
        total_count: usize,
    },
}

impl<T> Page<T> {
    /// The items it holds, to finish them (rates are looked up for the
    /// page only).
    pub(crate) fn items_mut(&mut self) -> &mut [T] {
        match self {
            Page::All(items) | Page::Page { items, .. } => items,
        }
    }

    pub(crate) fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        match self {
            Page::All(items) => Page::All(items.into_iter().map(f).collect()),
            Page::Page {
                filtered_count,
                item_count,
                items,
                page,
                page_count,
                page_size,
                total_count,
            } => Page::Page {
                filtered_count,
                item_count,
                items: items.into_iter().map(f).collect(),
                page,
                page_count,
                page_size,
                total_count,
            },
        }
    }
}

/// The longest `name` regular expression a list takes (`use_regex=true`),
/// and the most memory its compiled form may take.
const MAX_NAME_REGEX: usize = 1024;
const NAME_REGEX_BYTES: usize = 1 << 20;

/// `items` filtered by `name` (a substring of what `name_of` gives, or with
/// `use_regex=true` a regular expression it must match somewhere, as
/// RabbitMQ's `re:run`) and cut to the page `paging` asks for.
pub(crate) fn page_of<T>(items: Vec<T>, name_of: impl Fn(&T) -> &str, paging: &Paging) -> Result<Page<T>, ApiError> {
    let total_count = items.len();
    let filtered: Vec<T> = match paging.name.as_deref().filter(|n| !n.is_empty()) {
        Some(pattern) if paging.use_regex.as_deref() == Some("true") => {
            if pattern.len() > MAX_NAME_REGEX {
                return Err(ApiError::bad_request(format!(
                    "name: a regular expression of at most {MAX_NAME_REGEX} bytes"
                )));
            }
            let regex = regex::RegexBuilder::new(pattern)
                .size_limit(NAME_REGEX_BYTES)
                .build()
                .map_err(|e| ApiError::bad_request(format!("name: not a regular expression: {e}")))?;
            items.into_iter().filter(|item| regex.is_match(name_of(item))).collect()
        }
        Some(pattern) => items
            .into_iter()
            .filter(|item| name_of(item).contains(pattern))
            .collect(),
        None => items,
    };
    let Some(page) = &paging.page else {
        return Ok(Page::All(filtered));
    };
    let page: usize = page
        .parse()
        .ok()
        .filter(|p| *p >= 1)
        .ok_or_else(|| ApiError::bad_request(format!("page must be a positive integer, got {page:?}")))?;
    let page_size: usize = match &paging.page_size {
        None => DEFAULT_PAGE_SIZE,
        Some(size) => size
            .parse()
            .ok()
            .filter(|s| (1..=MAX_PAGE_SIZE).contains(s))
            .ok_or_else(|| ApiError::bad_request(format!("page_size must be 1 to {MAX_PAGE_SIZE}, got {size:?}")))?,
    };
    let filtered_count = filtered.len();
    let page_count = filtered_count.div_ceil(page_size).max(1);
    if page > page_count {
        return Err(ApiError::bad_request(format!(
            "page {page} out of range: there are {page_count} pages"
        )));
    }
    let items: Vec<T> = filtered
        .into_iter()
        .skip((page - 1) * page_size)
        .take(page_size)
        .collect();
    Ok(Page::Page {
        filtered_count,
        item_count: items.len(),
        items,
        page,
        page_count,
        page_size,
        total_count,
    })
}

/// An AMQP field value as RabbitMQ's API shows it.
fn amqp_value(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::ShortShortInt(v) => json!(v),
        AMQPValue::ShortShortUInt(v) => json!(v),
        AMQPValue::ShortInt(v) => json!(v),
        AMQPValue::ShortUInt(v) => json!(v),
        AMQPValue::LongInt(v) => json!(v),
        AMQPValue::LongUInt(v) => json!(v),
        AMQPValue::LongLongInt(v) => json!(v),
        AMQPValue::Float(v) => json!(v),
        AMQPValue::Double(v) => json!(v),
        AMQPValue::DecimalValue(d) => json!(f64::from(d.value) / 10f64.powi(i32::from(d.scale))),
        AMQPValue::ShortString(s) => json!(s.as_str()),
        AMQPValue::LongString(s) => json!(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::ByteArray(bytes) => json!(String::from_utf8_lossy(bytes.as_slice())),
        AMQPValue::FieldArray(array) => Value::Array(array.as_slice().iter().map(amqp_value).collect()),
        AMQPValue::Timestamp(t) => json!(t),
        AMQPValue::FieldTable(table) => table_json(table),
        AMQPValue::Void => Value::Null,
    }
}

/// A field table as a JSON object (RabbitMQ shows an empty one as `{}`).
pub(crate) fn table_json(table: &FieldTable) -> Value {
    Value::Object(
        table
            .inner()
            .iter()
            .map(|(key, value)| (key.as_str().to_owned(), amqp_value(value)))
            .collect(),
    )
}

fn exchange_json(vhost: &VHost, exchange: &warren_core::exchange::Exchange) -> Value {
    json!({
        "name": exchange.name.as_str(),
        "vhost": vhost.as_str(),
        "type": exchange.kind.as_str(),
        "durable": exchange.durable,
        "auto_delete": exchange.auto_delete,
        "internal": exchange.internal,
        "arguments": table_json(&exchange.arguments),
        "policy": exchange.policy,
        "user_who_performed_action": "",
    })
}

/// RabbitMQ's `properties_key` of a binding (`pack_binding_props`): the
/// routing key, URL-quoted (`~` for an empty key), and with arguments `~`
/// and a hash of them. RabbitMQ hashes the Erlang term (`phash2`); this is
/// CRC-32 of their canonical form: stable across nodes and restarts, not
/// the same value as RabbitMQ's.
pub(crate) fn properties_key(routing_key: &str, arguments: &FieldTable) -> String {
    if arguments.inner().is_empty() {
        return if routing_key.is_empty() {
            "~".to_owned()
        } else {
            quote_plus(routing_key)
        };
    }
    let hash = crc32fast::hash(format!("{:?}", arguments.inner()).as_bytes());
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash.to_be_bytes());
    format!("{}~{}", quote_plus(routing_key), quote_plus(&encoded))
}

/// Erlang's `quote_plus` as RabbitMQ's API uses it: letters, digits and
/// `-._` as they are, space as `+`, every other byte `%XX` (`~` too).
pub(crate) fn quote_plus(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => out.push(char::from(byte)),
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

pub(crate) fn bindings_of(vhost: &VHost, state: &warren_core::vhost::VHostState) -> Vec<Value> {
    let mut out = Vec::new();
    // Every queue's implicit binding to the default exchange, as RabbitMQ lists it.
    for queue in state.queues.values() {
        out.push(json!({
            "source": "",
            "vhost": vhost.as_str(),
            "destination": queue.name.as_str(),
            "destination_type": "queue",
            "routing_key": queue.name.as_str(),
            "arguments": {},
            "properties_key": properties_key(queue.name.as_str(), &FieldTable::default()),
        }));
    }
    for exchange in state.exchanges.values() {
        for binding in &exchange.bindings {
            let (destination, kind) = match &binding.destination {
                warren_core::exchange::Destination::Queue(q) => (q.as_str().to_owned(), "queue"),
                warren_core::exchange::Destination::Exchange(x) => (x.as_str().to_owned(), "exchange"),
            };
            out.push(json!({
                "source": exchange.name.as_str(),
                "vhost": vhost.as_str(),
                "destination": destination,
                "destination_type": kind,
                "routing_key": binding.routing_key,
                "arguments": table_json(&binding.arguments),
                "properties_key": properties_key(&binding.routing_key, &binding.arguments),
            }));
        }
    }
    out
}

fn vhost_json(vhost: &VHost, state: &warren_core::vhost::VHostState, rates: &crate::rates::RateBook) -> Value {
    let (ready, unacked) = state
        .queues
        .values()
        .fold((0u64, 0u64), |(r, u), q| (r + q.ready.len() as u64, u + q.unacked));
    let stats = state
        .queues
        .values()
        .fold(warren_core::stats::QueueStats::default(), |sum, q| sum.plus(q.stats));
    let rate = rates.vhost(vhost);
    json!({
        "name": vhost.as_str(),
        "description": "",
        "tags": [],
        "metadata": {"description": "", "tags": []},
        "default_queue_type": "classic",
        "tracing": false,
        "messages": ready + unacked,
        "messages_ready": ready,
        "messages_unacknowledged": unacked,
        "messages_details": crate::rates::details(rate.messages_ready + rate.messages_unacknowledged),
        "messages_ready_details": crate::rates::details(rate.messages_ready),
        "messages_unacknowledged_details": crate::rates::details(rate.messages_unacknowledged),
        "message_stats": crate::rates::message_stats(&stats, &rate),
    })
}

/// Reads `f` of the broker on this node's replica.
pub(crate) fn read<R>(sources: &Sources, f: impl FnOnce(&Broker) -> R) -> R {
    sources.frontend.node.read(f)
}

async fn whoami(State(sources): State<Arc<Sources>>, headers: HeaderMap) -> ApiResult {
    let user = authenticate(&sources, &headers)?;
    Ok(Json(json!({"name": user.name.as_str(), "tags": user.tags})))
}

async fn overview(State(sources): State<Arc<Sources>>, headers: HeaderMap) -> ApiResult {
    let viewer = authenticate(&sources, &headers)?;
    let node = node_name(&sources);
    // Administrators and monitoring users see the whole broker; other
    // management users the vhosts they have grants in, as in RabbitMQ.
    let everything = viewer
        .tags
        .iter()
        .any(|tag| tag == "administrator" || tag == "monitoring");
    let (rates, message_stats) = if everything {
        let rates = sources.rates.global();
        let stats = read(&sources, |broker| crate::rates::overview_stats(broker, &rates));
        (rates, stats)
    } else {
        let (counts, vhosts) = read(&sources, |broker| {
            let visible: Vec<VHost> = broker
                .vhosts()
                .keys()
                .filter(|vhost| sees(broker, &viewer, vhost))
                .cloned()
                .collect();
            let counts = visible
                .iter()
                .flat_map(|vhost| broker.vhosts()[vhost].queues.values())
                .fold(warren_core::stats::QueueStats::default(), |sum, q| sum.plus(q.stats));
            (counts, visible)
        });
        let rates = vhosts
            .iter()
            .map(|vhost| sources.rates.vhost(vhost))
            .fold(crate::rates::Rates::default(), |sum, r| sum.plus(&r));
        (rates, crate::rates::message_stats(&counts, &rates))
    };
    let (queues, exchanges, consumers, ready, unacked) = read(&sources, |broker| {
        let mut totals = (0usize, 0usize, 0usize, 0u64, 0u64);
        for (vhost, state) in broker.vhosts() {
            if !sees(broker, &viewer, vhost) {
                continue;
            }
            totals.0 += state.queues.len();
            totals.1 += state.exchanges.len() + 1;
            for queue in state.queues.values() {
                totals.2 += queue.consumers.len();
                totals.3 += queue.ready.len() as u64;
                totals.4 += queue.unacked;
            }
        }
        totals
    });
    let connections = sources.frontend.registry.len();
    // Open channels of this node's clients, as `rabbitmq_channels`.
    let channels = sources.frontend.registry.open_channels();
    Ok(Json(json!({
        "management_version": sources.version,
        "rabbitmq_version": sources.version,
        "product_name": "Warren",
        "product_version": sources.version,
        "cluster_name": "warren",
        "erlang_version": "",
        "erlang_full_version": "",
        "node": node,
        "statistics_db_event_queue": 0,
        // Message counts and rates from the replicated counters (item 3);
        // churn from this node's clients, as RabbitMQ's node-local churn.
        "churn_rates": sources
            .rates
            .churn_json(crate::rates::churn_counts(&sources.frontend.counters.snapshot())),
        "message_stats": message_stats,
        "object_totals": {
            "connections": connections,
            "channels": channels,
            "exchanges": exchanges,
            "queues": queues,
            "consumers": consumers,
        },
        "queue_totals": {
            "messages": ready + unacked,
            "messages_ready": ready,
            "messages_unacknowledged": unacked,
            "messages_details": crate::rates::details(rates.messages_ready + rates.messages_unacknowledged),
            "messages_ready_details": crate::rates::details(rates.messages_ready),
            "messages_unacknowledged_details": crate::rates::details(rates.messages_unacknowledged),
        },
        "listeners": listeners(&sources),
        "contexts": [],
    })))
}

/// The listeners of this node RabbitMQ's way (`node`, `protocol`, `port`,
/// `ip_address`).
fn listeners(sources: &Sources) -> Value {
    let node = node_name(sources);
    let listeners: Vec<Value> = sources
        .listeners
        .iter()
        .map(|(protocol, addr)| {
            json!({"node": node, "protocol": protocol, "port": addr.port(), "ip_address": addr.ip().to_string()})
        })
        .collect();
    Value::Array(listeners)
}

fn node_json(sources: &Sources) -> Value {
    let status = sources.frontend.node.metrics();
    // Milliseconds, a u32 for rabbitmq_http_client: capped at ~49 days.
    let uptime_ms = u32::try_from(sources.started.elapsed().as_millis()).unwrap_or(u32::MAX);
    json!({
        "name": node_name(sources),
        "type": "disc",
        "running": true,
        "being_drained": false,
        "uptime": uptime_ms,
        "os_pid": std::process::id(),
        "processors": std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
        "fd_total": crate::max_open_files().unwrap_or(0).min(u64::from(u32::MAX)),
        // Erlang's run queue and process count: not applicable to Warren.
        "run_queue": 0,
        "proc_total": 0,
        "mem_limit": sources.frontend.config.queued_bytes_high_watermark,
        "mem_alarm": sources.frontend.alarms.memory_on(),
        "disk_free_limit": sources.frontend.config.disk_free_limit,
        "disk_free_alarm": sources.frontend.alarms.disk_on(),
        "rates_mode": "none",
        "enabled_plugins": [],
        "rabbitmq_version": sources.version,
        "raft": {
            "term": status.term,
            "leader": status.is_leader,
            "last_applied": status.last_applied,
        },
    })
}

async fn nodes(State(sources): State<Arc<Sources>>, headers: HeaderMap) -> ApiResult {
    authenticate(&sources, &headers)?;
    Ok(Json(json!([node_json(&sources)])))
}

/// `GET /api/warren/members` (Warren's own): every member of the Raft
/// membership as the answering node sees it — address, voter or learner,
/// leader, the index it has applied (asked of it, 2 s) and its lag behind
/// the answering node's last log index; `reachable: false` if it did not
/// answer.
async fn members(State(sources): State<Arc<Sources>>, headers: HeaderMap) -> ApiResult {
    authenticate(&sources, &headers)?;
    let status = sources.frontend.node.metrics();
    let members = sources.frontend.node.member_status(PEER_PROBE_TIMEOUT).await;
    let last_log = status.last_log_index.unwrap_or(0);
    let items: Vec<Value> = members
        .into_iter()
        .map(|m| {
            let applied = m.applied.flatten();
            json!({
                "node_id": m.node_id,
                "name": format!("warren@node-{}", m.node_id),
                "addr": m.addr,
                "role": if m.voter { "voter" } else { "learner" },
                "leader": status.leader == Some(m.node_id),
                "reachable": m.applied.is_some(),
                "applied": applied,
                "lag": m.applied.map(|a| last_log.saturating_sub(a.unwrap_or(0))),
            })
        })
        .collect();
    Ok(Json(json!({
        "answered_by": node_name(&sources),
        "term": status.term,
        "leader": status.leader,
        "last_log_index": status.last_log_index,
        "snapshot_index": status.snapshot_index,
        "members": items,
    })))
}

/// The cluster address of the member this node believes leads, else its own.
fn leader_or_self(sources: &Sources) -> Result<(String, &warren_rpc::GrpcNetwork), ApiError> {
    let network = sources
        .cluster
        .as_ref()
        .ok_or_else(|| ApiError::unavailable("this node has no cluster network"))?;
    let status = sources.frontend.node.metrics();
    let own = status.members.get(&status.node_id).cloned();
    let target = status
        .leader
        .and_then(|leader| status.members.get(&leader).cloned())
        .or(own)
        .ok_or_else(|| ApiError::unavailable("this node knows no member address"))?;
    Ok((target, network))
}

/// A membership change's failure as the API answers it.
fn membership_error(error: warren_cluster::PeerError) -> ApiError {
    match error {
        warren_cluster::PeerError::NotLeader { .. } => {
            ApiError::unavailable("no leader answered (an election may be running): try again")
        }
        warren_cluster::PeerError::Failed(reason) | warren_cluster::PeerError::Refused(reason) => {
            ApiError::bad_request(reason)
        }
    }
}

/// `POST /api/warren/members` (administrators) with `node_id` and `addr`
/// (its cluster address): adds a running node as a voter, through the
/// leader, as `warren ctl add-node`; 201 `{"log_index"}` once it caught up
/// and votes.
async fn add_member(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    crate::users::administrator(&sources, &headers)?;
    let body = json_body(&body)?;
    let node_id = body
        .get("node_id")
        .and_then(Value::as_u64)
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::bad_request("node_id must be a positive integer"))?;
    let addr = body
        .get("addr")
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())
        .ok_or_else(|| ApiError::bad_request("addr must be the node's cluster address, host:port"))?
        .to_owned();
    let (target, network) = leader_or_self(&sources)?;
    let index = warren_rpc::on_leader(&target, |leader| {
        let addr = addr.clone();
        async move {
            warren_cluster::Peers::join(network, &leader, node_id, &addr, 0, warren_cluster::JoinMode::Rejoin).await
        }
    })
    .await
    .map_err(membership_error)?;
    Ok((StatusCode::CREATED, Json(json!({"log_index": index}))).into_response())
}

/// `DELETE /api/warren/members/{id}` (administrators): removes the node
/// from the membership through the leader, as `warren ctl remove-node`;
/// 204. Stop the node afterwards.
async fn remove_member(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    crate::users::administrator(&sources, &headers)?;
    let node_id: u64 = id
        .parse()
        .map_err(|_| ApiError::bad_request(format!("'{id}' is not a node id")))?;
    if !sources.frontend.node.metrics().members.contains_key(&node_id) {
        return Err(ApiError::not_found());
    }
    let (target, network) = leader_or_self(&sources)?;
    warren_rpc::on_leader(&target, |leader| async move { network.leave(&leader, node_id).await })
        .await
        .map_err(membership_error)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn node(State(sources): State<Arc<Sources>>, headers: HeaderMap, Path(name): Path<String>) -> ApiResult {
    authenticate(&sources, &headers)?;
    if name != node_name(&sources) {
        return Err(ApiError::not_found());
    }
    Ok(Json(node_json(&sources)))
}

async fn vhosts(State(sources): State<Arc<Sources>>, headers: HeaderMap, Query(paging): Query<Paging>) -> ApiResult {
    let viewer = authenticate(&sources, &headers)?;
    let items = read(&sources, |broker| {
        broker
            .vhosts()
            .iter()
            .filter(|(vhost, _)| sees(broker, &viewer, vhost))
            .map(|(vhost, state)| vhost_json(vhost, state, &sources.rates))
            .collect()
    });
    paged(items, &paging)
}

/// `GET /api/vhost-limits[/{vh}]`: Warren keeps no vhost limits, so the
/// list is empty (Terraform's provider reads it after every vhost; 404 for
/// a vhost the user cannot see).
async fn vhost_limits(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    vhost: Option<Path<String>>,
) -> ApiResult {
    let viewer = authenticate(&sources, &headers)?;
    if let Some(Path(name)) = vhost {
        require_vhost(&sources, &viewer, name)?;
    }
    Ok(Json(json!([])))
}

async fn vhost(State(sources): State<Arc<Sources>>, headers: HeaderMap, Path(name): Path<String>) -> ApiResult {
    let viewer = authenticate(&sources, &headers)?;
    let vhost = VHost::new(name);
    read(&sources, |broker| {
        check_vhost(broker, &viewer, &vhost)?;
        broker
            .vhosts()
            .get(&vhost)
            .map(|state| Json(vhost_json(&vhost, state, &sources.rates)))
            .ok_or_else(ApiError::not_found)
    })
}

/// What `json` makes of every vhost's state (or of `only`'s: 404 if
/// there is no such vhost), on this node's replica.
/// Whether `viewer` may see what is in `vhost`: monitoring users and
/// administrators see every vhost, other management users those where
/// they have permissions (as in RabbitMQ).
pub(crate) fn sees(broker: &Broker, viewer: &User, vhost: &VHost) -> bool {
    viewer
        .tags
        .iter()
        .any(|tag| tag == "administrator" || tag == "monitoring")
        || broker.access().may_open(&viewer.name, vhost)
}

/// 404 for a missing vhost, 401 for one `viewer` may not see.
fn check_vhost(broker: &Broker, viewer: &User, vhost: &VHost) -> Result<(), ApiError> {
    if !broker.has_vhost(vhost) {
        Err(ApiError::not_found())
    } else if !sees(broker, viewer, vhost) {
        Err(ApiError::unauthorized("User not authorised to access virtual host"))
    } else {
        Ok(())
    }
}

/// Checks `viewer` may do `perm` on the named resource, as an AMQP client
/// of theirs would be checked; 401 with the refusal's text if not (as
/// RabbitMQ's API answers an operation its channel was refused).
pub(crate) fn authorize(
    sources: &Sources,
    viewer: &User,
    vhost: &VHost,
    kind: ResourceKind,
    name: &str,
    perm: Perm,
) -> Result<(), ApiError> {
    read(sources, |broker| {
        broker.access().check(&viewer.name, vhost, kind, name, perm)
    })
    .map_err(|refused| ApiError::unauthorized(&refused.to_string()))
}

/// [`check_vhost`] on this node's replica.
pub(crate) fn require_visible(sources: &Sources, viewer: &User, vhost: &VHost) -> Result<(), ApiError> {
    read(sources, |broker| check_vhost(broker, viewer, vhost))
}

fn per_vhost<T>(
    sources: &Sources,
    viewer: &User,
    only: Option<&VHost>,
    json: impl Fn(&VHost, &warren_core::vhost::VHostState) -> Vec<T>,
) -> Result<Vec<T>, ApiError> {
    read(sources, |broker| {
        if let Some(vhost) = only {
            check_vhost(broker, viewer, vhost)?;
        }
        Ok(broker
            .vhosts()
            .iter()
            .filter(|(vhost, _)| only.is_none_or(|o| o == *vhost) && sees(broker, viewer, vhost))
            .flat_map(|(vhost, state)| json(vhost, state))
            .collect())
    })
}

fn queue_list(sources: &Sources, viewer: &User, only: Option<&VHost>) -> Result<Vec<QueueRow>, ApiError> {
    per_vhost(sources, viewer, only, |vhost, state| {
        state.queues.values().map(|q| QueueRow::new(vhost, q)).collect()
    })
}

/// The definitions of the policies behind `rows` (one short read of the
/// state, for the rows with a policy).
pub(crate) fn fill_policy_definitions(sources: &Sources, rows: &mut [QueueRow]) {
    if rows.iter().all(|row| row.policy.is_none()) {
        return;
    }
    // The definitions' texts under the lock, each parsed once after it.
    let mut texts: std::collections::HashMap<(VHost, String), Option<String>> = rows
        .iter()
        .filter_map(|row| Some(((row.vhost.clone(), row.policy.clone()?), None)))
        .collect();
    read(sources, |broker| {
        for ((vhost, name), text) in &mut texts {
            *text = broker.policies().get(vhost, name).map(|p| p.definition.clone());
        }
    });
    let parsed: std::collections::HashMap<(VHost, String), Value> = texts
        .into_iter()
        .filter_map(|(key, text)| Some((key, serde_json::from_str(&text?).ok()?)))
        .collect();
    for row in rows.iter_mut() {
        row.policy_definition = row
            .policy
            .clone()
            .and_then(|name| parsed.get(&(row.vhost.clone(), name)).cloned());
    }
}

/// Rows as JSON: their rates and policy definitions looked up (under one
/// lock each), each written as RabbitMQ's queue object.
fn queue_page(sources: &Sources, mut page: Page<QueueRow>) -> Response {
    fill_policy_definitions(sources, page.items_mut());
    sources.rates.fill(
        page.items_mut(),
        |row| (&row.vhost, &row.name),
        |row, rates| row.rates = rates,
    );
    let node = node_name(sources);
    let page = page.map(|row| QueueView { row, node: &node });
    match serde_json::to_vec(&page) {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => ApiError::unavailable(format!("could not write the queue list: {e}")).into_response(),
    }
}

/// `GET /api/queues` and `/api/queues/{vhost}`.
async fn queues(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    vhost: Option<Path<String>>,
    Query(paging): Query<Paging>,
) -> Result<Response, ApiError> {
    let viewer = authenticate(&sources, &headers)?;
    let only = vhost.map(|Path(vhost)| VHost::new(vhost));
    let rows = queue_list(&sources, &viewer, only.as_ref())?;
    let page = page_of(rows, |row| row.name.as_str(), &paging)?;
    Ok(queue_page(&sources, page))
}

async fn queue(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let viewer = authenticate(&sources, &headers)?;
    let node = node_name(&sources);
    let vhost = VHost::new(vhost);
    let name = QueueName::new(name);
    require_visible(&sources, &viewer, &vhost)?;
    let mut row = read(&sources, |broker| {
        broker
            .vhosts()
            .get(&vhost)
            .and_then(|state| state.queues.get(&name))
            .map(|q| QueueRow::new(&vhost, q))
    })
    .ok_or_else(ApiError::not_found)?;
    row.rates = sources.rates.queue(&vhost, &name);
    fill_policy_definitions(&sources, std::slice::from_mut(&mut row));
    Ok(Json(QueueView { row, node: &node }).into_response())
}

/// The default exchange of `vhost`, which the state does not hold.
fn default_exchange_json(vhost: &VHost) -> Value {
    json!({
        "name": "",
        "vhost": vhost.as_str(),
        "type": "direct",
        "durable": true,
        "auto_delete": false,
        "internal": false,
        "arguments": {},
        "user_who_performed_action": "rmq-internal",
    })
}

fn exchange_list(sources: &Sources, viewer: &User, only: Option<&VHost>) -> Result<Vec<Value>, ApiError> {
    per_vhost(sources, viewer, only, |vhost, state| {
        std::iter::once(default_exchange_json(vhost))
            .chain(state.exchanges.values().map(|x| {
                let mut json = exchange_json(vhost, x);
                let rates = sources.rates.exchange(vhost, &x.name);
                if let Some(object) = json.as_object_mut() {
                    object.insert(
                        "message_stats".to_owned(),
                        crate::rates::exchange_stats(&x.stats, rates),
                    );
                }
                json
            }))
            .collect()
    })
}

/// `GET /api/exchanges` and `/api/exchanges/{vhost}`.
async fn exchanges(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    vhost: Option<Path<String>>,
    Query(paging): Query<Paging>,
) -> ApiResult {
    let viewer = authenticate(&sources, &headers)?;
    let only = vhost.map(|Path(vhost)| VHost::new(vhost));
    paged(exchange_list(&sources, &viewer, only.as_ref())?, &paging)
}

async fn exchange(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult {
    let viewer = authenticate(&sources, &headers)?;
    let vhost = VHost::new(vhost);
    exchange_list(&sources, &viewer, Some(&vhost))?
        .into_iter()
        .find(|x| x["name"] == name.as_str())
        .map(Json)
        .ok_or_else(ApiError::not_found)
}

/// The bindings of `vhost` that `keep` selects, or 404 if the vhost is
/// missing or `exists` (the object the path names) is false.
fn bindings_where(
    sources: &Sources,
    viewer: &User,
    vhost: &VHost,
    exists: impl Fn(&warren_core::vhost::VHostState) -> bool,
    keep: impl Fn(&Value) -> bool,
) -> ApiResult {
    require_visible(sources, viewer, vhost)?;
    let selected = read(sources, |broker| {
        let state = broker.vhosts().get(vhost).filter(|state| exists(state))?;
        Some(
            bindings_of(vhost, state)
                .into_iter()
                .filter(|b| keep(b))
                .collect::<Vec<_>>(),
        )
    });
    selected.map(|b| Json(Value::Array(b))).ok_or_else(ApiError::not_found)
}

/// `GET /api/queues/{vhost}/{name}/bindings`: every binding to the queue,
/// its default-exchange binding included.
async fn queue_bindings(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult {
    let viewer = authenticate(&sources, &headers)?;
    let vhost = VHost::new(vhost);
    let queue = QueueName::new(name);
    bindings_where(
        &sources,
        &viewer,
        &vhost,
        |state| state.queues.contains_key(&queue),
        |b| b["destination_type"] == "queue" && b["destination"] == queue.as_str(),
    )
}

/// `GET /api/exchanges/{vhost}/{name}/bindings/source` (bindings from the
/// exchange) and `…/destination` (exchange-to-exchange bindings to it).
async fn exchange_bindings(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    Path((vhost, name, side)): Path<(String, String, String)>,
) -> ApiResult {
    let viewer = authenticate(&sources, &headers)?;
    let vhost = VHost::new(vhost);
    let exchange = warren_core::ExchangeName::new(name);
    let exists = |state: &warren_core::vhost::VHostState| state.exchanges.contains_key(&exchange);
    match side.as_str() {
        "source" => bindings_where(&sources, &viewer, &vhost, exists, |b| b["source"] == exchange.as_str()),
        "destination" => bindings_where(&sources, &viewer, &vhost, exists, |b| {
            b["destination_type"] == "exchange" && b["destination"] == exchange.as_str()
        }),
        _ => Err(ApiError::not_found()),
    }
}

/// `GET /api/bindings` and `/api/bindings/{vhost}`.
async fn bindings(State(sources): State<Arc<Sources>>, headers: HeaderMap, vhost: Option<Path<String>>) -> ApiResult {
    let viewer = authenticate(&sources, &headers)?;
    let only = vhost.map(|Path(vhost)| VHost::new(vhost));
    Ok(Json(Value::Array(per_vhost(
        &sources,
        &viewer,
        only.as_ref(),
        bindings_of,
    )?)))
}

async fn users(State(sources): State<Arc<Sources>>, headers: HeaderMap) -> ApiResult {
    crate::users::administrator(&sources, &headers)?;
    let items: Vec<Value> = read(&sources, |broker| broker.users().map(user_json).collect());
    Ok(Json(Value::Array(items)))
}

/// `GET /api/definitions` (administrators): the topology in RabbitMQ's
/// definitions format, importable into RabbitMQ. Exclusive queues, the
/// default exchange, the `amq.*` exchanges and the default exchange's
/// implicit bindings are left out, as RabbitMQ does.
async fn definitions(State(sources): State<Arc<Sources>>, headers: HeaderMap) -> ApiResult {
    crate::users::administrator(&sources, &headers)?;
    let exported = read(&sources, |broker| {
        let users: Vec<Value> = broker.users().map(user_json).collect();
        let mut vhosts = Vec::new();
        let mut queues = Vec::new();
        let mut exchanges = Vec::new();
        let mut bindings = Vec::new();
        for (vhost, state) in broker.vhosts() {
            vhosts.push(json!({
                "name": vhost.as_str(),
                "description": "",
                "tags": [],
                "metadata": {"description": "", "tags": []},
            }));
            for queue in state.queues.values().filter(|q| q.exclusive_owner.is_none()) {
                queues.push(json!({
                    "name": queue.name.as_str(),
                    "vhost": vhost.as_str(),
                    "durable": queue.durable,
                    "auto_delete": queue.auto_delete,
                    "arguments": table_json(&queue.arguments),
                }));
            }
            for exchange in state
                .exchanges
                .values()
                .filter(|x| !x.name.as_str().starts_with("amq."))
            {
                let mut json = exchange_json(vhost, exchange);
                if let Some(object) = json.as_object_mut() {
                    object.remove("user_who_performed_action");
                }
                exchanges.push(json);
            }
            bindings.extend(
                bindings_of(vhost, state)
                    .into_iter()
                    .filter(|b| b["source"] != "")
                    .map(|mut b| {
                        if let Some(object) = b.as_object_mut() {
                            object.remove("properties_key");
                        }
                        b
                    }),
            );
        }
        let permissions: Vec<Value> = broker
            .access()
            .permissions()
            .map(|(user, vhost, permission)| crate::users::permission_json(user, vhost, permission))
            .collect();
        json!({
            "rabbit_version": sources.version,
            "rabbitmq_version": sources.version,
            "product_name": "Warren",
            "product_version": sources.version,
            "users": users,
            "vhosts": vhosts,
            "permissions": permissions,
            "topic_permissions": [],
            "parameters": [],
            "global_parameters": [],
            "policies": broker.policies().iter().map(crate::definitions::policy_json).collect::<Vec<_>>(),
            "queues": queues,
            "exchanges": exchanges,
            "bindings": bindings,
        })
    });
    Ok(Json(exported))
}

pub(crate) fn user_json(user: &User) -> Value {
    json!({
        "name": user.name.as_str(),
        "password_hash": user.password_hash,
        "hashing_algorithm": "rabbit_password_hashing_sha256",
        "tags": user.tags,
        "limits": {},
    })
}

/// `GET /api/health/checks/alarms` (and `local-alarms`): 200 `{"status":
/// "ok"}` without an alarm, 503 `{"status": "failed", "reason", "alarms"}`
/// with one, as RabbitMQ.
async fn alarms(State(sources): State<Arc<Sources>>, headers: HeaderMap) -> Result<Response, ApiError> {
    authenticate(&sources, &headers)?;
    let node = node_name(&sources);
    let mut alarms = Vec::new();
    if sources.frontend.alarms.memory_on() {
        alarms.push(json!({"node": node, "resource": "memory"}));
    }
    if sources.frontend.alarms.disk_on() {
        alarms.push(json!({"node": node, "resource": "disk"}));
    }
    if alarms.is_empty() {
        return Ok(Json(json!({"status": "ok"})).into_response());
    }
    let body = json!({"status": "failed", "reason": "There are alarms in effect in the cluster", "alarms": alarms});
    Ok((StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response())
}

/// `GET /api/health/checks/virtual-hosts`: every vhost runs wherever the
/// node runs (there is no per-vhost process to fail), so 200 once the
/// caller is authenticated.
async fn vhosts_running(State(sources): State<Arc<Sources>>, headers: HeaderMap) -> ApiResult {
    authenticate(&sources, &headers)?;
    Ok(Json(json!({"status": "ok"})))
}

/// `GET /api/health/checks/port-listener/{port}`: 200 if this node
/// listens on `port` (AMQP, HTTP, Prometheus or cluster), 503 if not.
async fn port_listener(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    Path(port): Path<String>,
) -> Result<Response, ApiError> {
    authenticate(&sources, &headers)?;
    let port: u16 = port
        .parse()
        .map_err(|_| ApiError::bad_request(format!("'{port}' is not a port number")))?;
    let ports: Vec<u16> = sources.listeners.iter().map(|(_, addr)| addr.port()).collect();
    if ports.contains(&port) {
        return Ok(Json(json!({"status": "ok", "port": port})).into_response());
    }
    let body = json!({"status": "failed", "reason": "No active listener", "missing": port, "ports": ports});
    Ok((StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response())
}

/// How long a quorum check waits for each other voter's answer.
const PEER_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// `GET /api/health/checks/node-is-quorum-critical`: 503 if stopping this
/// node would leave fewer than a majority of the voters reachable (every
/// durable queue is replicated by the one Raft group, so all of them would
/// stop accepting writes), 200 otherwise. Each other voter is probed with
/// a status call.
async fn quorum_critical(State(sources): State<Arc<Sources>>, headers: HeaderMap) -> Result<Response, ApiError> {
    authenticate(&sources, &headers)?;
    let (voters, reachable) = sources.frontend.node.reachable_voters(PEER_PROBE_TIMEOUT).await;
    let majority = voters.len() / 2 + 1;
    let without_this = reachable.len().saturating_sub(1);
    if voters.len() <= 1 || without_this >= majority {
        // A single node has no quorum to lose by stopping: RabbitMQ
        // answers ok for a node without quorum queue replicas elsewhere.
        return Ok(Json(json!({"status": "ok"})).into_response());
    }
    let node = node_name(&sources);
    let queues: Vec<Value> =
        read(&sources, |broker| {
            broker
                .vhosts()
                .iter()
                .flat_map(|(vhost, state)| {
                    state.queues.values().filter(|q| q.durable).map(
                        move |q| json!({"name": q.name.as_str(), "virtual_host": vhost.as_str(), "type": "quorum"}),
                    )
                })
                .collect()
        });
    let body = json!({
        "status": "failed",
        "reason": format!(
            "There are queues that would lose their quorum if {node} is shut down: {} of {} voters reachable with it",
            reachable.len(),
            voters.len()
        ),
        "queues": queues,
    });
    Ok((StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response())
}

/// `GET /api/aliveness-test/{vh}`: declares the queue `aliveness-test`,
/// publishes a message to it and gets it back, through Raft; 200
/// `{"status":"ok"}`, or 503 with the reason.
async fn aliveness(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    Path(vhost): Path<String>,
) -> Result<Response, ApiError> {
    let viewer = authenticate(&sources, &headers)?;
    let vhost = VHost::new(vhost);
    require_visible(&sources, &viewer, &vhost)?;
    let queue = QueueName::new("aliveness-test");
    // What the test does, checked as the user's own AMQP operations.
    for (kind, name, perm) in [
        (ResourceKind::Queue, queue.as_str(), Perm::Configure),
        (ResourceKind::Exchange, "", Perm::Write),
        (ResourceKind::Queue, queue.as_str(), Perm::Read),
    ] {
        authorize(&sources, &viewer, &vhost, kind, name, perm)?;
    }
    let message = warren_core::Message {
        exchange: warren_core::ExchangeName::default_exchange(),
        routing_key: queue.as_str().to_owned(),
        properties: Arc::new(warren_core::Properties::default()),
        body: bytes::Bytes::from_static(b"test_message").into(),
    };
    let commands = [
        Command::DeclareQueue {
            vhost: vhost.clone(),
            name: queue.clone(),
            passive: false,
            durable: false,
            exclusive: false,
            auto_delete: false,
            arguments: FieldTable::default(),
        },
        Command::Publish {
            vhost: vhost.clone(),
            mandatory: false,
            message: Arc::new(message),
        },
        Command::Get {
            vhost,
            queue,
            no_ack: true,
        },
    ];
    let mut session = sources.frontend.session();
    let mut outcome = Ok(Outcome::Done);
    for command in commands {
        outcome = session.execute(command).await;
        if outcome.is_err() {
            break;
        }
    }
    session.close().await;
    match outcome {
        Ok(Outcome::GetOk { .. }) => Ok(Json(json!({"status": "ok"})).into_response()),
        Ok(other) => {
            let body = json!({"status": "failed", "reason": format!("the test message did not come back: {other:?}")});
            Ok((StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response())
        }
        Err(error) => {
            let body = json!({"status": "failed", "reason": error.to_string()});
            Ok((StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response())
        }
    }
}

/// A write's answer, as RabbitMQ's API gives it: 201 for an object that
/// is new, 204 for one that existed.
pub(crate) fn created_or_updated(existed: bool) -> StatusCode {
    if existed {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::CREATED
    }
}

/// Runs `command` through [`Frontend::execute`](warren_amqp::Frontend::execute).
pub(crate) async fn execute(sources: &Sources, command: Command) -> Result<Outcome, ApiError> {
    Ok(sources.frontend.execute(command).await?)
}

impl From<warren_amqp::ExecuteError> for ApiError {
    fn from(error: warren_amqp::ExecuteError) -> Self {
        match error {
            warren_amqp::ExecuteError::Refused(error) => ApiError::from_core(&error),
            warren_amqp::ExecuteError::Unavailable(reason) => ApiError::unavailable(reason),
        }
    }
}

/// The vhost named `name`: 404 if there is none (the core would answer 530
/// NOT_ALLOWED, an AMQP connection error), 401 if `viewer` may not see it
/// (before anything in it is looked up, so no answer tells what it holds).
pub(crate) fn require_vhost(sources: &Sources, viewer: &User, name: String) -> Result<VHost, ApiError> {
    let vhost = VHost::new(name);
    require_visible(sources, viewer, &vhost)?;
    Ok(vhost)
}

/// Whether queue `name` exists in `vhost` on this node's replica.
fn queue_exists(sources: &Sources, vhost: &VHost, name: &QueueName) -> bool {
    read(sources, |broker| {
        broker
            .vhosts()
            .get(vhost)
            .is_some_and(|state| state.queues.contains_key(name))
    })
}

/// A JSON value as an AMQP field value, as RabbitMQ's API reads arguments.
fn json_value(value: &Value) -> AMQPValue {
    match value {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AMQPValue::LongLongInt(i),
            None => AMQPValue::Double(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => AMQPValue::LongString(s.as_str().into()),
        Value::Array(items) => AMQPValue::FieldArray(items.iter().map(json_value).collect::<Vec<_>>().into()),
        Value::Object(_) => AMQPValue::FieldTable(json_table(value)),
    }
}

pub(crate) fn json_table(value: &Value) -> FieldTable {
    let mut table = FieldTable::default();
    if let Value::Object(object) = value {
        for (key, value) in object {
            table.insert(key.as_str().into(), json_value(value));
        }
    }
    table
}

/// A request body as a JSON object (an empty body is `{}`).
pub(crate) fn json_body(body: &[u8]) -> Result<serde_json::Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(other) => Err(ApiError::bad_request(format!("expected a JSON object, got {other}"))),
        Err(e) => Err(ApiError::bad_request(format!("malformed JSON: {e}"))),
    }
}

/// A boolean field of a request body, with its default.
pub(crate) fn flag(body: &serde_json::Map<String, Value>, name: &str, default: bool) -> Result<bool, ApiError> {
    match body.get(name) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(ApiError::bad_request(format!(
            "{name} must be true or false, got {other}"
        ))),
    }
}

/// `PUT /api/queues/{vhost}/{name}`: declares a queue (`durable` true by
/// default, as RabbitMQ's API); 201 if it is new, 204 if it existed with
/// the same properties, 400 with the core's text if not.
async fn declare_queue(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    let viewer = authenticate(&sources, &headers)?;
    let body = json_body(&body)?;
    let arguments = crate::topology::arguments(&body)?;
    let vhost = require_vhost(&sources, &viewer, vhost)?;
    let name = QueueName::new(name);
    if name.as_str().is_empty() {
        return Err(ApiError::bad_request("a queue declared over the API needs a name"));
    }
    authorize(
        &sources,
        &viewer,
        &vhost,
        ResourceKind::Queue,
        name.as_str(),
        Perm::Configure,
    )?;
    for (kind, resource, perm) in warren_core::access::argument_checks(ResourceKind::Queue, name.as_str(), &arguments) {
        authorize(&sources, &viewer, &vhost, kind, &resource, perm)?;
    }
    let existed = queue_exists(&sources, &vhost, &name);
    let command = Command::DeclareQueue {
        vhost,
        name,
        passive: false,
        durable: flag(&body, "durable", true)?,
        exclusive: false,
        auto_delete: flag(&body, "auto_delete", false)?,
        arguments,
    };
    execute(&sources, command).await?;
    Ok(created_or_updated(existed))
}

/// `if-unused` / `if-empty` of a queue or exchange deletion.
#[derive(Debug, Default, serde::Deserialize)]
pub struct DeleteConditions {
    #[serde(rename = "if-unused")]
    if_unused: Option<String>,
    #[serde(rename = "if-empty")]
    if_empty: Option<String>,
}

impl DeleteConditions {
    pub(crate) fn if_unused(&self) -> bool {
        self.if_unused.as_deref() == Some("true")
    }
}

/// `DELETE /api/queues/{vhost}/{name}` (`?if-unused=true`, `?if-empty=true`):
/// 204, or 404 for a missing queue, 400 when a condition does not hold.
async fn delete_queue(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
    Query(conditions): Query<DeleteConditions>,
) -> Result<StatusCode, ApiError> {
    let viewer = authenticate(&sources, &headers)?;
    let vhost = VHost::new(vhost);
    let name = QueueName::new(name);
    // Whether the vhost may be seen first: a 404 must not tell who may
    // not look whether the queue exists.
    require_visible(&sources, &viewer, &vhost)?;
    if !queue_exists(&sources, &vhost, &name) {
        return Err(ApiError::not_found());
    }
    authorize(
        &sources,
        &viewer,
        &vhost,
        ResourceKind::Queue,
        name.as_str(),
        Perm::Configure,
    )?;
    let command = Command::DeleteQueue {
        vhost,
        queue: name,
        if_unused: conditions.if_unused(),
        if_empty: conditions.if_empty.as_deref() == Some("true"),
    };
    execute(&sources, command).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /api/queues/{vhost}/{name}/contents`: purges the queue; 204.
async fn purge_queue(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let viewer = authenticate(&sources, &headers)?;
    let vhost = require_vhost(&sources, &viewer, vhost)?;
    authorize(&sources, &viewer, &vhost, ResourceKind::Queue, &name, Perm::Read)?;
    let command = Command::PurgeQueue {
        vhost,
        queue: QueueName::new(name),
    };
    execute(&sources, command).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_regex_matches_anywhere_and_a_plain_name_is_a_substring() {
        let items: Vec<Value> = ["orders", "orders.dlq", "audit", "q.orders", "ü-orders", ""]
            .iter()
            .map(|n| json!({"name": n}))
            .collect();
        let names = |paging: &Paging| -> Vec<String> {
            let listed = paged(items.clone(), paging).expect("list").0;
            let listed = listed.get("items").cloned().unwrap_or(listed);
            listed
                .as_array()
                .map(|l| l.iter().filter_map(|i| i["name"].as_str().map(str::to_owned)).collect())
                .unwrap_or_default()
        };
        let regex = |name: &str| Paging {
            name: Some(name.into()),
            use_regex: Some("true".into()),
            ..Paging::default()
        };
        assert_eq!(names(&regex("^orders")), ["orders", "orders.dlq"]);
        assert_eq!(names(&regex("orders$")), ["orders", "q.orders", "ü-orders"]);
        assert_eq!(names(&regex("^$")), [""], "the empty name");
        assert_eq!(names(&regex(".")).len(), 5);
        // Without use_regex the same text is a substring: `.` is literal.
        let plain = Paging {
            name: Some("s.".into()),
            ..Paging::default()
        };
        assert_eq!(names(&plain), ["orders.dlq"]);
        // KEDA's regex query: page 1, a page size, and its own
        // `pagination=false` (not RabbitMQ's; ignored).
        let keda: Paging =
            serde_urlencoded_paging("page=1&use_regex=true&pagination=false&name=%5Eorders&page_size=100");
        let page = paged(items.clone(), &keda).expect("keda").0;
        assert_eq!(page["page_count"], 1);
        assert_eq!(page["items"].as_array().map(Vec::len), Some(2));
    }

    fn serde_urlencoded_paging(query: &str) -> Paging {
        let uri: axum::http::Uri = format!("http://x/?{query}").parse().expect("uri");
        axum::extract::Query::<Paging>::try_from_uri(&uri).expect("query").0
    }

    #[test]
    fn pages_follow_rabbitmq() {
        let items: Vec<Value> = (0..7).map(|i| json!({"name": format!("q{i}")})).collect();
        let all = paged(items.clone(), &Paging::default()).expect("list");
        assert_eq!(all.0.as_array().map(Vec::len), Some(7), "no page: the whole list");
        let paging = Paging {
            page: Some("2".into()),
            page_size: Some("3".into()),
            ..Paging::default()
        };
        let page = paged(items.clone(), &paging).expect("page").0;
        assert_eq!(page["page_count"], 3);
        assert_eq!(page["item_count"], 3);
        assert_eq!(page["items"][0]["name"], "q3");
        assert_eq!(page["total_count"], 7);
        let filtered = Paging {
            page: Some("1".into()),
            name: Some("q6".into()),
            ..Paging::default()
        };
        let page = paged(items.clone(), &filtered).expect("filtered").0;
        assert_eq!(page["filtered_count"], 1);
        for bad in [
            Paging {
                page: Some("0".into()),
                ..Paging::default()
            },
            Paging {
                page: Some("x".into()),
                ..Paging::default()
            },
            Paging {
                page: Some("1".into()),
                page_size: Some("501".into()),
                ..Paging::default()
            },
            Paging {
                page: Some("9".into()),
                ..Paging::default()
            },
            Paging {
                name: Some("(".into()),
                use_regex: Some("true".into()),
                ..Paging::default()
            },
            Paging {
                name: Some("a".repeat(MAX_NAME_REGEX + 1)),
                use_regex: Some("true".into()),
                ..Paging::default()
            },
        ] {
            let error = paged(items.clone(), &bad).expect_err("refused");
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{bad:?}");
        }
    }

    #[test]
    fn field_tables_become_json_objects() {
        let mut table = FieldTable::default();
        table.insert("x-max-length".into(), AMQPValue::LongInt(10));
        table.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
        table.insert("ü".into(), AMQPValue::Boolean(true));
        assert_eq!(
            table_json(&table),
            json!({"x-max-length": 10, "x-queue-type": "quorum", "ü": true})
        );
        assert_eq!(table_json(&FieldTable::default()), json!({}));
        assert_eq!(properties_key("", &FieldTable::default()), "~");
        assert_eq!(properties_key("k", &FieldTable::default()), "k");
        assert!(properties_key("k", &table).starts_with("k~"));
    }

    #[test]
    fn errors_carry_rabbitmq_s_json_and_the_basic_challenge() {
        let response = ApiError::unauthorized("Login failed").into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response.headers().get(header::WWW_AUTHENTICATE).is_some());
        assert_eq!(ApiError::not_found().into_response().status(), StatusCode::NOT_FOUND);
    }
}
