//! Policies (`/api/policies…`) and importing definitions (`POST
//! /api/definitions`) over the management API (issue 10), as RabbitMQ's.
//!
//! Policies are stored, replicated, listed and exported, not applied to
//! queues yet. An import runs its objects as commands through Raft, in
//! RabbitMQ's order (vhosts, users, permissions, policies, exchanges,
//! queues, bindings) on one short-lived session; the first object refused
//! stops it with 400 naming that object (what came before stays, as in
//! RabbitMQ). `parameters`, `global_parameters` and `topic_permissions`
//! are accepted and ignored.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use warren_core::access::Pattern;
use warren_core::policy::{Policy, APPLY_TO};
use warren_core::{Command, ExchangeKind, ExchangeName, QueueName, User, UserName, VHost};

use crate::api::{authenticate, json_body, json_table, read, ApiError};
use crate::Sources;

type ApiResult = Result<Json<Value>, ApiError>;

pub(crate) fn routes() -> Router<Arc<Sources>> {
    Router::new()
        .route("/api/policies", get(list_policies))
        .route("/api/policies/{vhost}", get(list_policies_in))
        .route(
            "/api/policies/{vhost}/{name}",
            get(get_policy).put(put_policy).delete(delete_policy),
        )
}

/// A policy as RabbitMQ's API shows it.
pub(crate) fn policy_json(policy: &Policy) -> Value {
    let definition = serde_json::from_str::<Value>(&policy.definition).unwrap_or_else(|_| json!({}));
    json!({
        "vhost": policy.vhost.as_str(),
        "name": policy.name,
        "pattern": policy.pattern,
        "apply-to": policy.apply_to,
        "definition": definition,
        "priority": policy.priority,
    })
}

/// Policies need `policymaker` or `administrator`.
fn policymaker(sources: &Sources, headers: &HeaderMap) -> Result<User, ApiError> {
    let user = authenticate(sources, headers)?;
    if user.tags.iter().any(|t| t == "administrator" || t == "policymaker") {
        Ok(user)
    } else {
        Err(ApiError::unauthorized("Not policymaker user"))
    }
}

async fn list_policies(State(sources): State<Arc<Sources>>, headers: HeaderMap) -> ApiResult {
    let viewer = authenticate(&sources, &headers)?;
    let items = read(&sources, |broker| {
        broker
            .policies()
            .iter()
            .filter(|p| crate::api::sees(broker, &viewer, &p.vhost))
            .map(policy_json)
            .collect()
    });
    Ok(Json(Value::Array(items)))
}

async fn list_policies_in(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    Path(vhost): Path<String>,
) -> ApiResult {
    let viewer = authenticate(&sources, &headers)?;
    let vhost = crate::api::require_vhost(&sources, &viewer, vhost)?;
    let items = read(&sources, |broker| {
        broker
            .policies()
            .iter()
            .filter(|p| p.vhost == vhost)
            .map(policy_json)
            .collect()
    });
    Ok(Json(Value::Array(items)))
}

async fn get_policy(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
) -> ApiResult {
    let viewer = authenticate(&sources, &headers)?;
    let vhost = crate::api::require_vhost(&sources, &viewer, vhost)?;
    read(&sources, |broker| broker.policies().get(&vhost, &name).map(policy_json))
        .map(Json)
        .ok_or_else(ApiError::not_found)
}

/// A policy from its JSON (`pattern`, `definition` required; `apply-to`
/// `all` and `priority` 0 by default), checked.
fn parse_policy(vhost: VHost, name: String, body: &Map<String, Value>) -> Result<Policy, ApiError> {
    let pattern = match body.get("pattern") {
        Some(Value::String(pattern)) => pattern.clone(),
        Some(other) => return Err(ApiError::bad_request(format!("pattern must be a string, got {other}"))),
        None => return Err(ApiError::bad_request("Missing key(s): pattern")),
    };
    Pattern::parse(&pattern)
        .map_err(|e| ApiError::bad_request(format!("pattern '{pattern}' is not a regular expression: {e}")))?;
    let definition = match body.get("definition") {
        Some(Value::Object(definition)) if !definition.is_empty() => Value::Object(definition.clone()).to_string(),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "definition must be a non-empty object, got {other}"
            )))
        }
        None => return Err(ApiError::bad_request("Missing key(s): definition")),
    };
    warren_core::policy::Definition::parse(&definition)
        .map_err(|e| ApiError::bad_request(format!("Validation failed: {e}")))?;
    let apply_to = match body.get("apply-to") {
        None | Some(Value::Null) => "all".to_owned(),
        Some(Value::String(to)) if APPLY_TO.contains(&to.as_str()) => to.clone(),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "apply-to must be one of {}, got {other}",
                APPLY_TO.join(", ")
            )))
        }
    };
    let priority = match body.get("priority") {
        None | Some(Value::Null) => 0,
        Some(value) => value
            .as_i64()
            .ok_or_else(|| ApiError::bad_request(format!("priority must be an integer, got {value}")))?,
    };
    if name.is_empty() {
        return Err(ApiError::bad_request("a policy needs a name"));
    }
    Ok(Policy {
        vhost,
        name,
        pattern,
        apply_to,
        priority,
        definition,
    })
}

async fn put_policy(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    let viewer = policymaker(&sources, &headers)?;
    let body = json_body(&body)?;
    let vhost = crate::api::require_vhost(&sources, &viewer, vhost)?;
    let policy = parse_policy(vhost, name, &body)?;
    let existed = read(&sources, |broker| {
        broker.policies().get(&policy.vhost, &policy.name).is_some()
    });
    crate::api::execute(&sources, Command::SetPolicy(policy)).await?;
    Ok(crate::api::created_or_updated(existed))
}

async fn delete_policy(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    Path((vhost, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let viewer = policymaker(&sources, &headers)?;
    let vhost = crate::api::require_vhost(&sources, &viewer, vhost)?;
    if read(&sources, |broker| broker.policies().get(&vhost, &name).is_none()) {
        return Err(ApiError::not_found());
    }
    crate::api::execute(&sources, Command::DeletePolicy { vhost, name }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A string field of a definitions object.
fn text<'a>(object: &'a Value, key: &str, what: &str) -> Result<&'a str, ApiError> {
    object[key]
        .as_str()
        .ok_or_else(|| ApiError::bad_request(format!("{what}: {key} must be a string, got {}", object[key])))
}

/// A boolean field, with its default.
fn boolean(object: &Value, key: &str, default: bool, what: &str) -> Result<bool, ApiError> {
    match &object[key] {
        Value::Null => Ok(default),
        Value::Bool(b) => Ok(*b),
        other => Err(ApiError::bad_request(format!(
            "{what}: {key} must be true or false, got {other}"
        ))),
    }
}

/// The list under `key` (absent: none).
fn list<'a>(definitions: &'a Map<String, Value>, key: &str) -> Result<&'a [Value], ApiError> {
    match definitions.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(other) => Err(ApiError::bad_request(format!("{key} must be a list, got {other}"))),
    }
}

/// The commands an import runs, each with the name of its object, in
/// RabbitMQ's order. Checks every object before anything runs.
fn import_commands(definitions: &Map<String, Value>) -> Result<Vec<(String, Command)>, ApiError> {
    let mut commands = Vec::new();
    for vhost in list(definitions, "vhosts")? {
        let name = text(vhost, "name", "a vhost")?;
        commands.push((
            format!("vhost '{name}'"),
            Command::DeclareVHost {
                vhost: VHost::new(name),
            },
        ));
    }
    for user in list(definitions, "users")? {
        let name = text(user, "name", "a user")?;
        let what = format!("user '{name}'");
        match &user["hashing_algorithm"] {
            Value::Null => {}
            Value::String(algorithm) if algorithm == "rabbit_password_hashing_sha256" => {}
            other => {
                return Err(ApiError::bad_request(format!(
                    "{what}: hashing_algorithm {other} is not supported: Warren verifies rabbit_password_hashing_sha256 only"
                )))
            }
        }
        let password_hash = match &user["password_hash"] {
            Value::Null => String::new(),
            Value::String(hash) => hash.clone(),
            other => {
                return Err(ApiError::bad_request(format!(
                    "{what}: password_hash must be a string, got {other}"
                )))
            }
        };
        let tags = match &user["tags"] {
            Value::Null => Vec::new(),
            Value::String(tags) => tags
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect(),
            Value::Array(tags) => tags.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            other => {
                return Err(ApiError::bad_request(format!(
                    "{what}: tags must be a list, got {other}"
                )))
            }
        };
        commands.push((
            what,
            Command::PutUser {
                name: UserName::new(name),
                password_hash,
                tags,
            },
        ));
    }
    for grant in list(definitions, "permissions")? {
        let (user, vhost) = (
            text(grant, "user", "a permission")?,
            text(grant, "vhost", "a permission")?,
        );
        let what = format!("permissions of user '{user}' in vhost '{vhost}'");
        let mut patterns = Vec::new();
        for key in ["configure", "write", "read"] {
            let pattern = text(grant, key, &what)?;
            Pattern::parse(pattern).map_err(|e| ApiError::bad_request(format!("{what}: {key}: {e}")))?;
            patterns.push(pattern.to_owned());
        }
        let [configure, write, read] = <[String; 3]>::try_from(patterns).unwrap_or_default();
        commands.push((
            what,
            Command::SetPermissions {
                user: UserName::new(user),
                vhost: VHost::new(vhost),
                configure,
                write,
                read,
            },
        ));
    }
    for policy in list(definitions, "policies")? {
        let (vhost, name) = (text(policy, "vhost", "a policy")?, text(policy, "name", "a policy")?);
        let body = policy.as_object().cloned().unwrap_or_default();
        let parsed = parse_policy(VHost::new(vhost), name.to_owned(), &body)
            .map_err(|e| e.prefixed(&format!("policy '{name}'")))?;
        commands.push((
            format!("policy '{name}' in vhost '{vhost}'"),
            Command::SetPolicy(parsed),
        ));
    }
    for exchange in list(definitions, "exchanges")? {
        let (name, vhost) = (
            text(exchange, "name", "an exchange")?,
            text(exchange, "vhost", "an exchange")?,
        );
        let what = format!("exchange '{name}' in vhost '{vhost}'");
        if name.is_empty() || name.starts_with("amq.") {
            continue;
        }
        let kind = text(exchange, "type", &what)?;
        let kind = ExchangeKind::parse(kind)
            .ok_or_else(|| ApiError::bad_request(format!("{what}: unknown exchange type '{kind}'")))?;
        commands.push((
            what.clone(),
            Command::DeclareExchange {
                vhost: VHost::new(vhost),
                name: ExchangeName::new(name),
                kind,
                passive: false,
                durable: boolean(exchange, "durable", true, &what)?,
                auto_delete: boolean(exchange, "auto_delete", false, &what)?,
                internal: boolean(exchange, "internal", false, &what)?,
                arguments: json_table(&exchange["arguments"]),
            },
        ));
    }
    for queue in list(definitions, "queues")? {
        let (name, vhost) = (text(queue, "name", "a queue")?, text(queue, "vhost", "a queue")?);
        let what = format!("queue '{name}' in vhost '{vhost}'");
        commands.push((
            what.clone(),
            Command::DeclareQueue {
                vhost: VHost::new(vhost),
                name: QueueName::new(name),
                passive: false,
                durable: boolean(queue, "durable", true, &what)?,
                exclusive: false,
                auto_delete: boolean(queue, "auto_delete", false, &what)?,
                arguments: json_table(&queue["arguments"]),
            },
        ));
    }
    for binding in list(definitions, "bindings")? {
        let what = "a binding";
        let vhost = VHost::new(text(binding, "vhost", what)?);
        let source = ExchangeName::new(text(binding, "source", what)?);
        let destination = text(binding, "destination", what)?;
        let routing_key = binding["routing_key"].as_str().unwrap_or_default().to_owned();
        let arguments = json_table(&binding["arguments"]);
        let what = format!("binding of '{destination}' to '{source}' in vhost '{vhost}'");
        let command = match text(binding, "destination_type", &what)? {
            "queue" => Command::BindQueue {
                vhost,
                queue: QueueName::new(destination),
                exchange: source,
                routing_key,
                arguments,
            },
            "exchange" => Command::BindExchange {
                vhost,
                destination: ExchangeName::new(destination),
                source,
                routing_key,
                arguments,
            },
            other => {
                return Err(ApiError::bad_request(format!(
                    "{what}: unknown destination_type '{other}'"
                )))
            }
        };
        commands.push((what, command));
    }
    Ok(commands)
}

/// `POST /api/definitions` (administrators): imports a definitions file
/// as RabbitMQ exports it; 204.
pub(crate) async fn import(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    crate::users::administrator(&sources, &headers)?;
    let definitions = json_body(&body)?;
    let commands = import_commands(&definitions)?;
    let mut session = sources.frontend.session();
    let mut failed = None;
    for (what, command) in commands {
        if let Err(error) = session.execute(command).await {
            failed = Some(ApiError::from(error).prefixed(&what));
            break;
        }
    }
    session.close().await;
    match failed {
        Some(error) => Err(error),
        None => Ok(StatusCode::NO_CONTENT),
    }
}
