//! The management API's writes against the real binary (issue 10, item 2):
//! exchanges, bindings (with the `Location` Terraform's provider reads),
//! publish and get, users, vhosts and permissions — through
//! `rabbitmq_http_client` (the library inside rabbitmqadmin v2) and raw
//! HTTP for the status codes and bad input.

use std::net::SocketAddr;

use anyhow::Context;
use serde_json::{json, Value};
use warren_e2e::http::{get, path_unescape, request, Reply};

/// `guest:guest`, the default user (tag `administrator`).
const GUEST: &str = "Z3Vlc3Q6Z3Vlc3Q=";

async fn call(api: SocketAddr, method: &str, path: &str, body: &str) -> anyhow::Result<Reply> {
    request(api, method, path, GUEST, body).await
}

fn expect(reply: &Reply, status: u16, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        reply.status == status,
        "{what}: expected {status}, got {} {}",
        reply.status,
        reply.body
    );
    if status >= 400 {
        let error = reply.json()?;
        anyhow::ensure!(
            error["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{what}: no reason in {error}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_http_client_declares_binds_publishes_gets_and_manages_users() -> anyhow::Result<()> {
    let broker = warren_e2e::start_broker().await?;
    let endpoint = format!("http://{}/api", broker.http_addr().context("no http address")?);
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        use rabbitmq_http_client::blocking_api::ClientBuilder;
        use rabbitmq_http_client::commons::{BindingDestinationType, ExchangeType};
        use rabbitmq_http_client::requests::{
            BindingDeletionParams, ExchangeParams, Permissions, QueueParams, UserParams, VirtualHostParams,
        };
        let client = ClientBuilder::new()
            .with_endpoint(endpoint.as_str())
            .with_basic_auth_credentials("guest", "guest")
            .build()?;

        client.create_vhost(&VirtualHostParams::named("orders"))?;
        let salt = rabbitmq_http_client::password_hashing::salt();
        let hash = rabbitmq_http_client::password_hashing::base64_encoded_salted_password_hash_sha256(&salt, "pw");
        client.create_user(&UserParams {
            name: "ops",
            password_hash: &hash,
            tags: "management",
        })?;
        client.grant_permissions(&Permissions {
            user: "ops",
            vhost: "orders",
            configure: ".*",
            read: ".*",
            write: ".*",
        })?;
        let granted = client.list_permissions_of("ops")?;
        assert_eq!(granted.len(), 1, "{granted:?}");
        assert_eq!(
            (granted[0].vhost.as_str(), granted[0].configure.as_str()),
            ("orders", ".*")
        );
        assert!(client.list_users()?.iter().any(|u| u.name == "ops"));

        // ops (a management user with a grant) does the rest in orders.
        let ops = ClientBuilder::new()
            .with_endpoint(endpoint.as_str())
            .with_basic_auth_credentials("ops", "pw")
            .build()?;
        ops.declare_exchange("orders", &ExchangeParams::durable("events", ExchangeType::Topic, None))?;
        ops.declare_exchange("orders", &ExchangeParams::durable("audit", ExchangeType::Fanout, None))?;
        ops.declare_queue("orders", &QueueParams::new_durable_classic_queue("created", None))?;
        ops.declare_queue("orders", &QueueParams::new_durable_classic_queue("everything", None))?;
        ops.bind_queue("orders", "created", "events", Some("order.created"), None)?;
        ops.bind_exchange("orders", "audit", "events", Some("#"), None)?;
        ops.bind_queue("orders", "everything", "audit", None, None)?;
        let info = ops.get_exchange_info("orders", "events")?;
        assert_eq!(info.exchange_type, "topic");

        let routed = ops.publish_message("orders", "events", "order.created", "o-1", serde_json::Map::new())?;
        assert!(routed.routed);
        let unrouted = ops.publish_message("orders", "created", "x", "nope", serde_json::Map::new());
        assert!(unrouted.is_err(), "no exchange named created");
        let nowhere = ops.publish_message("orders", "amq.direct", "nobody", "lost", serde_json::Map::new())?;
        assert!(!nowhere.routed);

        // Requeued by the first get, taken by the second.
        let peek = ops.get_messages("orders", "created", 5, "ack_requeue_true")?;
        assert_eq!(peek.len(), 1);
        assert_eq!(
            (peek[0].payload.as_str(), peek[0].routing_key.as_str()),
            ("o-1", "order.created")
        );
        assert!(!peek[0].redelivered);
        let taken = ops.get_messages("orders", "created", 5, "ack_requeue_false")?;
        assert_eq!(taken.len(), 1);
        assert!(taken[0].redelivered, "the first get requeued it");
        assert!(ops
            .get_messages("orders", "created", 5, "ack_requeue_false")?
            .is_empty());
        let through_e2e = ops.get_messages("orders", "everything", 1, "ack_requeue_false")?;
        assert_eq!(through_e2e.len(), 1, "routed through the exchange-to-exchange binding");

        ops.delete_binding(
            &BindingDeletionParams {
                virtual_host: "orders",
                source: "events",
                destination: "created",
                destination_type: BindingDestinationType::Queue,
                routing_key: "order.created",
                arguments: None,
            },
            false,
        )?;
        let routed = ops.publish_message("orders", "events", "order.created", "o-2", serde_json::Map::new())?;
        assert!(routed.routed, "still reaches everything through audit");
        assert!(ops
            .get_messages("orders", "created", 1, "ack_requeue_false")?
            .is_empty());
        ops.delete_exchange("orders", "audit", false)?;
        assert!(ops.get_exchange_info("orders", "audit").is_err());

        // ops may not touch "/" (no grant there) nor manage users.
        assert!(ops
            .declare_queue("/", &QueueParams::new_durable_classic_queue("q", None))
            .is_err());
        assert!(ops.delete_user("guest", false).is_err());

        client.delete_user("ops", false)?;
        client.delete_vhost("orders", false)?;
        assert!(client.list_vhosts()?.iter().all(|v| v.name != "orders"));
        Ok(())
    })
    .await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bindings_answer_with_their_location_and_bad_writes_get_rabbitmq_s_codes() -> anyhow::Result<()> {
    let broker = warren_e2e::start_broker().await?;
    let api = broker.http_addr().context("no http address")?;
    expect(&call(api, "PUT", "/api/queues/%2F/jobs", "{}").await?, 201, "queue")?;
    expect(
        &call(
            api,
            "PUT",
            "/api/exchanges/%2F/work",
            r#"{"type":"direct","durable":true}"#,
        )
        .await?,
        201,
        "exchange",
    )?;
    expect(
        &call(api, "PUT", "/api/exchanges/%2F/work", r#"{"type":"direct"}"#).await?,
        204,
        "same exchange",
    )?;

    // A binding with a key needing quotes, and one with arguments.
    let created = call(
        api,
        "POST",
        "/api/bindings/%2F/e/work/q/jobs",
        r#"{"routing_key":"a b~c"}"#,
    )
    .await?;
    expect(&created, 201, "binding")?;
    // RabbitMQ's: the properties key `a+b%7Ec`, quoted again in the URL.
    assert_eq!(
        created.header("location"),
        Some("jobs/a%2Bb%257Ec"),
        "{}",
        created.raw_head
    );
    let with_args = call(
        api,
        "POST",
        "/api/bindings/%2F/e/work/q/jobs",
        r#"{"routing_key":"k","arguments":{"x-n":1}}"#,
    )
    .await?;
    expect(&with_args, 201, "binding with arguments")?;
    let location = with_args.header("location").context("no location")?.to_owned();
    let props = path_unescape(location.strip_prefix("jobs/").context("location names the queue")?)?;
    let props = props.as_str();
    assert!(props.starts_with("k~"), "{location}");

    let listed = get(api, "/api/bindings/%2F/e/work/q/jobs", GUEST).await?.json()?;
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
    let one = get(api, &format!("/api/bindings/%2F/e/work/q/jobs/{props}"), GUEST).await?;
    expect(&one, 200, "the binding at its location")?;
    assert_eq!(one.json()?["arguments"], json!({"x-n": 1}));
    // The properties key is the same on another read (a stable hash).
    let again = get(api, "/api/queues/%2F/jobs/bindings", GUEST).await?.json()?;
    assert!(
        again
            .as_array()
            .context("list")?
            .iter()
            .any(|b| b["properties_key"] == props),
        "{again}"
    );
    let path = format!("/api/bindings/%2F/e/work/q/jobs/{props}");
    expect(&call(api, "DELETE", &path, "").await?, 204, "unbind")?;
    expect(&call(api, "DELETE", &path, "").await?, 404, "unbind again")?;

    // Bad writes.
    let cases: [(&str, &str, &str, u16); 16] = [
        ("PUT", "/api/exchanges/%2F/x", "{}", 400),
        ("PUT", "/api/exchanges/%2F/x", r#"{"type":"nope"}"#, 400),
        (
            "PUT",
            "/api/exchanges/%2F/x",
            r#"{"type":"direct","arguments":[]}"#,
            400,
        ),
        ("PUT", "/api/exchanges/%2F/work", r#"{"type":"fanout"}"#, 400),
        ("PUT", "/api/exchanges/%2F/amq.mine", r#"{"type":"direct"}"#, 403),
        ("PUT", "/api/exchanges/nowhere/x", r#"{"type":"direct"}"#, 404),
        ("DELETE", "/api/exchanges/%2F/amq.direct", "", 403),
        ("DELETE", "/api/exchanges/%2F/missing", "", 404),
        ("POST", "/api/bindings/%2F/e/missing/q/jobs", "{}", 404),
        ("POST", "/api/bindings/%2F/e/work/q/missing", "{}", 404),
        ("POST", "/api/bindings/%2F/e/work/z/jobs", "{}", 404),
        ("POST", "/api/exchanges/%2F/work/publish", r#"{"routing_key":"k"}"#, 400),
        (
            "POST",
            "/api/exchanges/%2F/work/publish",
            r#"{"routing_key":"k","payload":"!","payload_encoding":"base64"}"#,
            400,
        ),
        (
            "POST",
            "/api/exchanges/%2F/missing/publish",
            r#"{"routing_key":"k","payload":""}"#,
            404,
        ),
        (
            "POST",
            "/api/queues/%2F/jobs/get",
            r#"{"count":1,"ackmode":"later"}"#,
            400,
        ),
        (
            "POST",
            "/api/queues/%2F/jobs/get",
            r#"{"count":0,"ackmode":"ack_requeue_true"}"#,
            400,
        ),
    ];
    for (method, path, body, status) in cases {
        expect(
            &call(api, method, path, body).await?,
            status,
            &format!("{method} {path} {body}"),
        )?;
    }

    // Publish with properties and base64, get with truncation and base64.
    let publish = call(
        api,
        "POST",
        "/api/exchanges/%2F/amq.default/publish",
        r#"{"routing_key":"jobs","payload":"AAEC/w==","payload_encoding":"base64",
            "properties":{"delivery_mode":2,"headers":{"h":"v"},"content_type":"x/bin"}}"#,
    )
    .await?;
    expect(&publish, 200, "publish")?;
    let publish_default = call(
        api,
        "POST",
        "/api/exchanges/%2F/amq.default/publish",
        r#"{"routing_key":"jobs","payload":"hello world","properties":{}}"#,
    )
    .await?;
    assert_eq!(publish_default.json()?, json!({"routed": true}));
    let got = call(
        api,
        "POST",
        "/api/queues/%2F/jobs/get",
        r#"{"count":2,"ackmode":"ack_requeue_false","encoding":"auto","truncate":5}"#,
    )
    .await?;
    expect(&got, 200, "get")?;
    let got: Value = got.json()?;
    assert_eq!(got[0]["payload_encoding"], "base64", "{got}");
    assert_eq!(got[0]["payload"], "AAEC/w==");
    assert_eq!(got[0]["payload_bytes"], 4);
    assert_eq!(got[0]["properties"]["headers"], json!({"h": "v"}));
    assert_eq!(got[0]["properties"]["delivery_mode"], 2);
    assert_eq!(got[0]["message_count"], 1);
    assert_eq!(got[1]["payload"], "hello", "truncated to 5 bytes");
    assert_eq!(got[1]["payload_bytes"], 11);

    // A body over the part size goes in parts, as a client's does.
    let large = format!(
        r#"{{"routing_key":"jobs","payload":"{}","properties":{{}}}}"#,
        "x".repeat(600 * 1024)
    );
    let published = call(api, "POST", "/api/exchanges/%2F/amq.default/publish", &large).await?;
    assert_eq!(published.json()?, json!({"routed": true}), "{}", published.body);
    let got = call(
        api,
        "POST",
        "/api/queues/%2F/jobs/get",
        r#"{"count":1,"ackmode":"ack_requeue_false","truncate":3}"#,
    )
    .await?
    .json()?;
    assert_eq!(got[0]["payload_bytes"], 600 * 1024, "{got}");
    Ok(())
}

/// A definitions file as RabbitMQ 3.13 exports it (the hash is of
/// "s3cret", made by rabbitmq_http_client's RabbitMQ-compatible hashing).
fn rabbitmq_export(hash: &str) -> String {
    json!({
        "rabbit_version": "3.13.7",
        "rabbitmq_version": "3.13.7",
        "product_name": "RabbitMQ",
        "product_version": "3.13.7",
        "users": [
            {"name": "app", "password_hash": hash, "hashing_algorithm": "rabbit_password_hashing_sha256",
             "tags": ["management"], "limits": {}}
        ],
        "vhosts": [
            {"name": "shop", "description": "the shop", "tags": [], "metadata": {"description": "the shop", "tags": []}}
        ],
        "permissions": [
            {"user": "app", "vhost": "shop", "configure": "^app\\.", "write": ".*", "read": ".*"}
        ],
        "topic_permissions": [],
        "parameters": [],
        "global_parameters": [{"name": "cluster_name", "value": "rabbit@host"}],
        "policies": [
            {"vhost": "shop", "name": "ttl", "pattern": "^app\\.", "apply-to": "queues",
             "definition": {"message-ttl": 60000}, "priority": 0}
        ],
        "queues": [
            {"name": "app.orders", "vhost": "shop", "durable": true, "auto_delete": false,
             "arguments": {"x-queue-type": "classic", "x-max-length": 1000}},
            {"name": "app.audit", "vhost": "shop", "durable": true, "auto_delete": false, "arguments": {}}
        ],
        "exchanges": [
            {"name": "app.events", "vhost": "shop", "type": "topic", "durable": true, "auto_delete": false,
             "internal": false, "arguments": {}},
            {"name": "app.all", "vhost": "shop", "type": "fanout", "durable": true, "auto_delete": false,
             "internal": false, "arguments": {}}
        ],
        "bindings": [
            {"source": "app.events", "vhost": "shop", "destination": "app.orders", "destination_type": "queue",
             "routing_key": "order.*", "arguments": {}},
            {"source": "app.events", "vhost": "shop", "destination": "app.all", "destination_type": "exchange",
             "routing_key": "#", "arguments": {}},
            {"source": "app.all", "vhost": "shop", "destination": "app.audit", "destination_type": "queue",
             "routing_key": "", "arguments": {}}
        ]
    })
    .to_string()
}

/// The parts of a definitions export that must survive a round trip.
fn topology(definitions: &Value) -> Value {
    let sorted = |key: &str| {
        let mut items: Vec<Value> = definitions[key].as_array().cloned().unwrap_or_default();
        items.sort_by_key(|item| item.to_string());
        Value::Array(items)
    };
    json!({
        "vhosts": sorted("vhosts").as_array().map(|v| v.iter().map(|x| x["name"].clone()).collect::<Vec<_>>()),
        "permissions": sorted("permissions"),
        "policies": sorted("policies"),
        "queues": sorted("queues"),
        "exchanges": sorted("exchanges"),
        "bindings": sorted("bindings"),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rabbitmq_definitions_file_imports_and_exports_back_and_policies_are_kept() -> anyhow::Result<()> {
    let broker = warren_e2e::start_broker().await?;
    let api = broker.http_addr().context("no http address")?;
    let salt = rabbitmq_http_client::password_hashing::salt();
    let hash = rabbitmq_http_client::password_hashing::base64_encoded_salted_password_hash_sha256(&salt, "s3cret");
    expect(
        &call(api, "POST", "/api/definitions", &rabbitmq_export(&hash)).await?,
        204,
        "import",
    )?;

    // The imported user logs in and its grant holds.
    let uri = format!("amqp://app:s3cret@127.0.0.1:{}/shop", broker.amqp_port());
    let conn = warren_e2e::connect(&uri).await?;
    let ch = warren_e2e::within("channel", conn.create_channel()).await?;
    let confirm = warren_e2e::within(
        "publish",
        ch.basic_publish(
            "app.events".into(),
            "order.created".into(),
            Default::default(),
            b"o-1",
            Default::default(),
        ),
    )
    .await?;
    warren_e2e::within("publish done", confirm).await?;
    let refused = ch
        .queue_declare("other".into(), Default::default(), Default::default())
        .await
        .err()
        .context("declared outside ^app\\.")?;
    assert_eq!(warren_e2e::reply_code(&refused), Some(403));
    // app:s3cret: guest has no grant in the imported vhost.
    let app = "YXBwOnMzY3JldA==";
    let got = request(
        api,
        "POST",
        "/api/queues/shop/app.audit/get",
        app,
        r#"{"count":1,"ackmode":"ack_requeue_false"}"#,
    )
    .await?
    .json()?;
    assert_eq!(got[0]["payload"], "o-1", "through both exchange bindings: {got}");

    let events = get(api, "/api/exchanges/shop/app.events", GUEST).await?.json()?;
    assert_eq!(events["message_stats"]["publish_in"], 1, "{events}");
    assert_eq!(events["message_stats"]["publish_out"], 1, "{events}");
    assert!(
        events["message_stats"]["publish_in_details"]["rate"].is_number(),
        "{events}"
    );
    let exported = get(api, "/api/definitions", GUEST).await?.json()?;
    let policy = get(api, "/api/policies/shop/ttl", GUEST).await?.json()?;
    assert_eq!(policy["definition"], json!({"message-ttl": 60000}), "{policy}");
    assert_eq!(policy["apply-to"], "queues");

    // Exported from this broker, imported into a fresh one: the same.
    let other = warren_e2e::start_broker().await?;
    let other_api = other.http_addr().context("no http address")?;
    expect(
        &call(other_api, "POST", "/api/definitions", &exported.to_string()).await?,
        204,
        "re-import",
    )?;
    let again = get(other_api, "/api/definitions", GUEST).await?.json()?;
    assert_eq!(topology(&again), topology(&exported));
    let users: Vec<&str> = again["users"]
        .as_array()
        .context("users")?
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert!(users.contains(&"app") && users.contains(&"guest"), "{users:?}");

    // Policies over the API, and what it refuses.
    let body = r#"{"pattern":"^jobs$","definition":{"max-length":10},"apply-to":"queues","priority":3}"#;
    expect(&call(api, "PUT", "/api/policies/%2F/cap", body).await?, 201, "policy")?;
    expect(
        &call(api, "PUT", "/api/policies/%2F/cap", body).await?,
        204,
        "same policy",
    )?;
    let listed = get(api, "/api/policies/%2F", GUEST).await?.json()?;
    assert_eq!(listed[0]["priority"], 3, "{listed}");
    for (path, body, status) in [
        ("/api/policies/%2F/bad", r#"{"pattern":"("}"#, 400),
        ("/api/policies/%2F/bad", r#"{"pattern":".*"}"#, 400),
        ("/api/policies/%2F/bad", r#"{"pattern":".*","definition":{}}"#, 400),
        (
            "/api/policies/%2F/bad",
            r#"{"pattern":".*","definition":{"a":1},"apply-to":"everything"}"#,
            400,
        ),
        (
            "/api/policies/nowhere/bad",
            r#"{"pattern":".*","definition":{"a":1}}"#,
            404,
        ),
    ] {
        expect(
            &call(api, "PUT", path, body).await?,
            status,
            &format!("PUT {path} {body}"),
        )?;
    }
    // app (management, not policymaker) may not set policies.
    expect(
        &request(api, "PUT", "/api/policies/shop/x", app, body).await?,
        401,
        "app sets a policy",
    )?;
    expect(
        &call(api, "DELETE", "/api/policies/%2F/cap", "").await?,
        204,
        "delete policy",
    )?;
    expect(
        &call(api, "DELETE", "/api/policies/%2F/cap", "").await?,
        404,
        "delete again",
    )?;

    // Imports that cannot be taken: 400 naming the object.
    let md5 = json!({"users": [{"name": "old", "password_hash": "x", "hashing_algorithm": "rabbit_password_hashing_md5", "tags": ""}]});
    let reply = call(api, "POST", "/api/definitions", &md5.to_string()).await?;
    expect(&reply, 400, "md5 user")?;
    assert!(reply.body.contains("user 'old'"), "{}", reply.body);
    let dangling = json!({"bindings": [{"source": "amq.direct", "vhost": "/", "destination": "missing",
        "destination_type": "queue", "routing_key": "k", "arguments": {}}]});
    let reply = call(api, "POST", "/api/definitions", &dangling.to_string()).await?;
    expect(&reply, 400, "binding to a missing queue")?;
    assert!(reply.body.contains("'missing'"), "{}", reply.body);
    expect(
        &call(api, "POST", "/api/definitions", "[1,2]").await?,
        400,
        "not an object",
    )?;
    expect(
        &call(api, "POST", "/api/definitions", r#"{"queues": 7}"#).await?,
        400,
        "queues not a list",
    )?;
    Ok(())
}
