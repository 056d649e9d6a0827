//! Users, vhosts and permissions over the management API (issue 10):
//! `/api/users[/{name}[/permissions]]`, `/api/permissions[/{vhost}/{user}]`,
//! `/api/vhosts/{vhost}` (PUT, DELETE) and `/api/vhosts/{vhost}/permissions`,
//! shaped as RabbitMQ's. Every route here needs the `administrator` tag, as
//! in RabbitMQ. Each change is a command through Raft, answered once this
//! node applied it.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Map, Value};
use warren_core::access::{Pattern, Permission};
use warren_core::{Command, User, UserName, VHost};

use crate::api::{authenticate, execute, json_body, read, require_vhost, user_json, ApiError};
use crate::Sources;

type ApiResult = Result<Json<Value>, ApiError>;

/// The one hashing algorithm Warren verifies.
const SHA256: &str = "rabbit_password_hashing_sha256";

/// The routes of this module.
pub(crate) fn routes() -> Router<Arc<Sources>> {
    Router::new()
        .route("/api/users/{name}", get(get_user).put(put_user).delete(delete_user))
        .route("/api/users/{name}/permissions", get(user_permissions))
        .route("/api/permissions", get(all_permissions))
        .route(
            "/api/permissions/{vhost}/{user}",
            get(get_permission).put(put_permission).delete(delete_permission),
        )
        .route("/api/vhosts/{vhost}/permissions", get(vhost_permissions))
}

/// The request's user, if it is an administrator.
pub(crate) fn administrator(sources: &Sources, headers: &HeaderMap) -> Result<User, ApiError> {
    let user = authenticate(sources, headers)?;
    if user.tags.iter().any(|tag| tag == "administrator") {
        Ok(user)
    } else {
        Err(ApiError::unauthorized("Not administrator user"))
    }
}

async fn get_user(State(sources): State<Arc<Sources>>, headers: HeaderMap, Path(name): Path<String>) -> ApiResult {
    administrator(&sources, &headers)?;
    let user = read(&sources, |broker| broker.user(&UserName::new(name)).cloned());
    user.map(|u| Json(user_json(&u))).ok_or_else(ApiError::not_found)
}

/// `PUT /api/users/{name}`: `password` (hashed here) or `password_hash`
/// (with `hashing_algorithm` absent or `rabbit_password_hashing_sha256`),
/// and `tags` as a list or a comma-separated string. 201 for a new user,
/// 204 for a changed one. A user put without either keeps its password;
/// a new one without either cannot log in with a password (as RabbitMQ's
/// passwordless users).
async fn put_user(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    administrator(&sources, &headers)?;
    let body = json_body(&body)?;
    let name = UserName::new(name);
    if name.as_str().is_empty() {
        return Err(ApiError::bad_request("a user needs a name"));
    }
    let existing = read(&sources, |broker| broker.user(&name).cloned());
    // Without `tags`, a user keeps its tags (a password change must not
    // take an administrator's rights away).
    let tags = match (body.contains_key("tags"), &existing) {
        (false, Some(user)) => user.tags.clone(),
        _ => tags(&body)?,
    };
    let password_hash = match (body.get("password"), body.get("password_hash")) {
        (Some(Value::String(password)), _) => warren_amqp::password::hash_password(password),
        (Some(other), _) => return Err(ApiError::bad_request(format!("password must be a string, got {other}"))),
        (None, Some(Value::String(hash))) => checked_hash(&body, hash)?,
        (None, Some(other)) => {
            return Err(ApiError::bad_request(format!(
                "password_hash must be a string, got {other}"
            )))
        }
        (None, None) => existing.as_ref().map(|u| u.password_hash.clone()).unwrap_or_default(),
    };
    execute(
        &sources,
        Command::PutUser {
            name,
            password_hash,
            tags,
        },
    )
    .await?;
    Ok(if existing.is_some() {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::CREATED
    })
}

/// `tags`: a list of strings, or one comma-separated string.
fn tags(body: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let split = |text: &str| -> Vec<String> {
        text.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect()
    };
    match body.get("tags") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(text)) => Ok(split(text)),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(tag) => Ok(tag.trim().to_owned()),
                other => Err(ApiError::bad_request(format!("a tag must be a string, got {other}"))),
            })
            .filter(|tag| tag.as_ref().map_or(true, |t| !t.is_empty()))
            .collect(),
        Some(other) => Err(ApiError::bad_request(format!(
            "tags must be a list or a comma-separated string, got {other}"
        ))),
    }
}

/// A `password_hash` as given, if it is one Warren can verify.
fn checked_hash(body: &Map<String, Value>, hash: &str) -> Result<String, ApiError> {
    match body.get("hashing_algorithm") {
        None | Some(Value::Null) => {}
        Some(Value::String(algorithm)) if algorithm == SHA256 => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "hashing_algorithm {other} is not supported: Warren verifies {SHA256} only"
            )))
        }
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(hash);
    match decoded {
        // Salt (4 bytes) and SHA-256 (32), or empty for a passwordless user.
        Ok(bytes) if bytes.len() == 36 || bytes.is_empty() => Ok(hash.to_owned()),
        _ => Err(ApiError::bad_request(
            "password_hash must be base64 of a 4-byte salt and a SHA-256 digest",
        )),
    }
}

async fn delete_user(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    administrator(&sources, &headers)?;
    let name = UserName::new(name);
    if read(&sources, |broker| broker.user(&name).is_none()) {
        return Err(ApiError::not_found());
    }
    execute(&sources, Command::DeleteUser { name }).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) fn permission_json(user: &UserName, vhost: &VHost, permission: &Permission) -> Value {
    json!({
        "user": user.as_str(),
        "vhost": vhost.as_str(),
        "configure": permission.configure.as_str(),
        "write": permission.write.as_str(),
        "read": permission.read.as_str(),
    })
}

/// Every grant for which `keep` holds, as RabbitMQ lists them.
fn permissions_where(sources: &Sources, keep: impl Fn(&UserName, &VHost) -> bool) -> Vec<Value> {
    read(sources, |broker| {
        broker
            .access()
            .permissions()
            .filter(|(user, vhost, _)| keep(user, vhost))
            .map(|(user, vhost, permission)| permission_json(user, vhost, permission))
            .collect()
    })
}

async fn all_permissions(State(sources): State<Arc<Sources>>, headers: HeaderMap) -> ApiResult {
    administrator(&sources, &headers)?;
    Ok(Json(Value::Array(permissions_where(&sources, |_, _| true))))
}

async fn user_permissions(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult {
    administrator(&sources, &headers)?;
    let name = UserName::new(name);
    if read(&sources, |broker| broker.user(&name).is_none()) {
        return Err(ApiError::not_found());
    }
    Ok(Json(Value::Array(permissions_where(&sources, |user, _| *user == name))))
}

async fn vhost_permissions(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    Path(vhost): Path<String>,
) -> ApiResult {
    let viewer = administrator(&sources, &headers)?;
    let vhost = require_vhost(&sources, &viewer, vhost)?;
    Ok(Json(Value::Array(permissions_where(&sources, |_, v| *v == vhost))))
}

async fn get_permission(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult {
    administrator(&sources, &headers)?;
    let (vhost, user) = (VHost::new(vhost), UserName::new(user));
    let permission = read(&sources, |broker| broker.access().permission(&user, &vhost).cloned());
    permission
        .map(|p| Json(permission_json(&user, &vhost, &p)))
        .ok_or_else(ApiError::not_found)
}

/// `PUT /api/permissions/{vhost}/{user}` with `configure`, `write` and
/// `read` (each required, as RabbitMQ): 201 for a new grant, 204 for a
/// replaced one; 400 for an unknown user or vhost or a pattern that is
/// not a regular expression.
async fn put_permission(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    Path((vhost, user)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    administrator(&sources, &headers)?;
    let body = json_body(&body)?;
    let (vhost, user) = (VHost::new(vhost), UserName::new(user));
    let pattern = |name: &str| -> Result<String, ApiError> {
        match body.get(name) {
            Some(Value::String(source)) => Pattern::parse(source)
                .map(|_| source.clone())
                .map_err(|e| ApiError::bad_request(format!("{name}: '{source}' is not a regular expression: {e}"))),
            Some(other) => Err(ApiError::bad_request(format!("{name} must be a string, got {other}"))),
            None => Err(ApiError::bad_request(format!("Missing key(s): {name}"))),
        }
    };
    let (configure, write, read_pattern) = (pattern("configure")?, pattern("write")?, pattern("read")?);
    let (known, existed) = read(&sources, |broker| {
        (
            broker.user(&user).is_some() && broker.has_vhost(&vhost),
            broker.access().permission(&user, &vhost).is_some(),
        )
    });
    if !known {
        return Err(ApiError::bad_request("vhost_or_user_not_found"));
    }
    let command = Command::SetPermissions {
        user,
        vhost,
        configure,
        write,
        read: read_pattern,
    };
    execute(&sources, command).await?;
    Ok(crate::api::created_or_updated(existed))
}

async fn delete_permission(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    Path((vhost, user)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    administrator(&sources, &headers)?;
    let (vhost, user) = (VHost::new(vhost), UserName::new(user));
    if read(&sources, |broker| broker.access().permission(&user, &vhost).is_none()) {
        return Err(ApiError::not_found());
    }
    execute(&sources, Command::ClearPermissions { user, vhost }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /api/vhosts/{vhost}`: 201 for a new vhost, 204 if it existed. The
/// body (description, tags, default queue type, tracing) is accepted and
/// not kept: Warren stores no vhost metadata yet.
pub(crate) async fn put_vhost(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    Path(vhost): Path<String>,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    let acting = administrator(&sources, &headers)?;
    json_body(&body)?;
    let vhost = VHost::new(vhost);
    if vhost.as_str().is_empty() {
        return Err(ApiError::bad_request("a vhost needs a name"));
    }
    let existed = read(&sources, |broker| broker.has_vhost(&vhost));
    execute(&sources, Command::DeclareVHost { vhost: vhost.clone() }).await?;
    // As RabbitMQ (`rabbit_vhost:maybe_grant_full_permissions`): the user
    // who creates a vhost may use it. Read again after the declare applied
    // here, and never over a grant it already has (a lagging replica may
    // have thought an existing vhost new).
    let ungranted = read(&sources, |broker| {
        broker.access().permission(&acting.name, &vhost).is_none()
    });
    if !existed && ungranted {
        let grant = Command::SetPermissions {
            user: acting.name,
            vhost,
            configure: ".*".to_owned(),
            write: ".*".to_owned(),
            read: ".*".to_owned(),
        };
        execute(&sources, grant).await?;
    }
    Ok(crate::api::created_or_updated(existed))
}

/// `DELETE /api/vhosts/{vhost}`: deletes it with everything in it and its
/// grants; 204, or 404.
pub(crate) async fn delete_vhost(
    State(sources): State<Arc<Sources>>,
    headers: HeaderMap,
    Path(vhost): Path<String>,
) -> Result<StatusCode, ApiError> {
    let viewer = administrator(&sources, &headers)?;
    let vhost = require_vhost(&sources, &viewer, vhost)?;
    execute(&sources, Command::DeleteVHost { vhost }).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn body(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn tags_come_as_a_list_or_a_comma_separated_string() {
        assert_eq!(
            tags(&body(json!({"tags": "administrator, management,"}))).unwrap(),
            vec!["administrator", "management"]
        );
        assert_eq!(
            tags(&body(json!({"tags": ["monitoring", ""]}))).unwrap(),
            vec!["monitoring"]
        );
        assert_eq!(tags(&body(json!({}))).unwrap(), Vec::<String>::new());
        assert!(tags(&body(json!({"tags": 7}))).is_err());
        assert!(tags(&body(json!({"tags": [7]}))).is_err());
    }

    #[test]
    fn only_sha256_hashes_of_the_right_length_are_taken() {
        let good = warren_amqp::password::hash_password("pw");
        assert!(checked_hash(&body(json!({})), &good).is_ok());
        assert!(checked_hash(&body(json!({"hashing_algorithm": SHA256})), &good).is_ok());
        assert!(checked_hash(
            &body(json!({"hashing_algorithm": "rabbit_password_hashing_md5"})),
            &good
        )
        .is_err());
        assert!(checked_hash(&body(json!({})), "bm90IGEgaGFzaA==").is_err());
        assert!(checked_hash(&body(json!({})), "not base64!").is_err());
        assert!(checked_hash(&body(json!({})), "").is_ok(), "passwordless");
    }
}
