//! The management API as three tools people run against RabbitMQ call it,
//! request for request (issue 10's target: "the Flower, KEDA and
//! Terraform-provider reads work, checked by tests that make the same
//! requests"). The requests were read from each tool's source:
//!
//! - KEDA's RabbitMQ scaler (`pkg/scalers/rabbitmq_scaler.go`, 2.x): `GET
//!   /api/queues/{vhost}/{QueryEscape(queue)}`, or with `useRegex`
//!   `GET /api/queues/{vhost}?page=1&use_regex=true&pagination=false&name=…&page_size=…`
//!   reading `items` and `page_count`; only a 200 is decoded; `messages`,
//!   `messages_ready` must be integers, the rates floats.
//! - Flower (`flower/utils/broker.py`): `GET /api/queues/{vhost}`, which for
//!   the vhost `/` comes out as `GET /api/queues/` (urljoin); reads `name`,
//!   `messages`, `messages_ready`, `messages_unacknowledged`, `consumers`.
//! - terraform-provider-rabbitmq 1.10 (rabbit-hole v3.2.0): the bodies as
//!   rabbit-hole serializes them (user tags as one comma-separated string,
//!   `"type":""` for a queue, `name` empty in a user's body), a vhost read
//!   followed by `GET /api/vhost-limits/{vh}`, bindings found again in the
//!   list by the `properties_key` taken from the `Location` header, a
//!   queue deleted with a trailing `?`, and a 404 after each delete (the
//!   provider's "resource gone").

use std::net::SocketAddr;

use anyhow::Context;
use serde_json::Value;
use warren_e2e::http::{path_unescape, request, Reply};

/// `guest:guest`.
const GUEST: &str = "Z3Vlc3Q6Z3Vlc3Q=";

async fn call(api: SocketAddr, method: &str, path: &str, body: &str) -> anyhow::Result<Reply> {
    request(api, method, path, GUEST, body).await
}

/// rabbit-hole's rule: anything below 400 is success.
async fn ok(api: SocketAddr, method: &str, path: &str, body: &str) -> anyhow::Result<Reply> {
    let reply = call(api, method, path, body).await?;
    anyhow::ensure!(reply.status < 400, "{method} {path}: {} {}", reply.status, reply.body);
    Ok(reply)
}

/// KEDA decodes only a 200.
async fn get_200(api: SocketAddr, path: &str) -> anyhow::Result<Value> {
    let reply = call(api, "GET", path, "").await?;
    anyhow::ensure!(reply.status == 200, "GET {path}: {} {}", reply.status, reply.body);
    reply.json()
}

fn is_int(value: &Value) -> bool {
    value.is_u64() || value.is_i64()
}

/// Percent-encodes everything but RFC 3986's unreserved characters (what
/// Go's `url.PathEscape` does to a path segment's `/`, `%`, space …).
fn path_escape(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keda_and_flower_read_queues_as_they_do_against_rabbitmq() -> anyhow::Result<()> {
    let broker = warren_e2e::start_broker().await?;
    let api = broker.http_addr().context("no http address")?;
    let conn = warren_e2e::connect(&broker.amqp_uri()).await?;
    let ch = warren_e2e::within("channel", conn.create_channel()).await?;
    for queue in ["keda.jobs", "keda.mail", "other"] {
        warren_e2e::amqp::plain_queue(&ch, queue).await?;
    }
    for _ in 0..4 {
        warren_e2e::amqp::publish(&ch, "", "keda.jobs", b"job").await?;
    }
    warren_e2e::amqp::publish(&ch, "", "keda.mail", b"mail").await?;
    assert_eq!(warren_e2e::amqp::message_count(&ch, "keda.jobs").await?, 4);

    // KEDA, one queue: host `http://guest:guest@host:15672/` gives the
    // vhost `%2F`.
    let queue = get_200(api, "/api/queues/%2F/keda.jobs").await?;
    for field in ["messages", "messages_ready", "messages_unacknowledged"] {
        assert!(is_int(&queue[field]), "{field} as an integer: {queue}");
    }
    assert_eq!(queue["messages"], 4, "{queue}");
    assert_eq!(queue["messages_ready"], 4, "{queue}");
    assert_eq!(queue["name"], "keda.jobs");
    for rate in ["publish_details", "deliver_get_details"] {
        assert!(
            queue["message_stats"][rate]["rate"].is_number(),
            "message_stats.{rate}.rate: {queue}"
        );
    }
    // KEDA, useRegex with its default page size of 100.
    let page = get_200(
        api,
        "/api/queues/%2F?page=1&use_regex=true&pagination=false&name=%5Ekeda%5C.&page_size=100",
    )
    .await?;
    assert_eq!(page["page_count"], 1, "{page}");
    let items = page["items"].as_array().context("items")?;
    let mut names: Vec<&str> = items.iter().filter_map(|q| q["name"].as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["keda.jobs", "keda.mail"], "{page}");
    let total: u64 = items.iter().filter_map(|q| q["messages"].as_u64()).sum();
    assert_eq!(total, 5, "KEDA's default operation sums the matches");
    // A queue that does not exist is an error to KEDA, as with RabbitMQ.
    let missing = call(api, "GET", "/api/queues/%2F/keda.none", "").await?;
    assert_eq!(missing.status, 404);

    // Flower, vhost `/`: `urljoin(…/api/, 'queues/' + '/')` is `/api/queues/`.
    let reply = call(api, "GET", "/api/queues/", "").await?;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let queues = reply.json()?;
    let jobs = queues
        .as_array()
        .and_then(|l| l.iter().find(|q| q["name"] == "keda.jobs"))
        .with_context(|| format!("no keda.jobs in {queues}"))?;
    for field in ["messages", "messages_ready", "messages_unacknowledged", "consumers"] {
        assert!(is_int(&jobs[field]), "{field}: {jobs}");
    }
    assert_eq!(jobs["messages_ready"], 4);
    // Flower, a named vhost: the list of that vhost (empty here, but a list).
    ok(api, "PUT", "/api/vhosts/flower-vh", "{}").await?;
    let reply = call(api, "GET", "/api/queues/flower-vh", "").await?;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()?, Value::Array(Vec::new()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terraform_s_provider_creates_reads_and_destroys_every_resource() -> anyhow::Result<()> {
    let broker = warren_e2e::start_broker().await?;
    let api = broker.http_addr().context("no http address")?;

    // rabbitmq_vhost
    ok(
        api,
        "PUT",
        "/api/vhosts/tf-vh",
        r#"{"description":"","tags":"","tracing":false}"#,
    )
    .await?;
    let vhost = get_200(api, "/api/vhosts/tf-vh").await?;
    assert_eq!(vhost["name"], "tf-vh");
    assert!(vhost["tracing"].is_boolean(), "{vhost}");
    assert!(vhost["description"].is_string(), "{vhost}");
    assert_eq!(get_200(api, "/api/vhost-limits/tf-vh").await?, Value::Array(Vec::new()));

    // rabbitmq_user: tags as one comma-separated string, `name` empty.
    ok(
        api,
        "PUT",
        "/api/users/tf-user",
        r#"{"name":"","tags":"management,policymaker","password":"s3cr\u0026t"}"#,
    )
    .await?;
    let user = get_200(api, "/api/users/tf-user").await?;
    assert_eq!(user["name"], "tf-user");
    let tags: Vec<String> = match &user["tags"] {
        Value::String(s) => s.split(',').map(str::to_owned).collect(),
        Value::Array(a) => a.iter().filter_map(|t| t.as_str().map(str::to_owned)).collect(),
        other => anyhow::bail!("tags neither a string nor a list: {other}"),
    };
    assert_eq!(tags, ["management", "policymaker"]);

    // rabbitmq_permissions
    ok(
        api,
        "PUT",
        "/api/permissions/tf-vh/tf-user",
        r#"{"configure":"^tf-.*","write":".*","read":".*"}"#,
    )
    .await?;
    let grant = get_200(api, "/api/permissions/tf-vh/tf-user").await?;
    for (field, value) in [
        ("user", "tf-user"),
        ("vhost", "tf-vh"),
        ("configure", "^tf-.*"),
        ("write", ".*"),
        ("read", ".*"),
    ] {
        assert_eq!(grant[field], value, "{grant}");
    }

    // rabbitmq_exchange: `auto_delete` and `arguments` left out when empty.
    ok(
        api,
        "PUT",
        "/api/exchanges/tf-vh/tf-x",
        r#"{"type":"direct","durable":false}"#,
    )
    .await?;
    let exchange = get_200(api, "/api/exchanges/tf-vh/tf-x").await?;
    assert_eq!(
        (
            exchange["name"].clone(),
            exchange["vhost"].clone(),
            exchange["type"].clone()
        ),
        ("tf-x".into(), "tf-vh".into(), "direct".into())
    );
    assert_eq!(exchange["durable"], false);
    assert_eq!(exchange["auto_delete"], false, "a real bool");
    assert!(exchange["arguments"].is_object(), "{exchange}");

    // rabbitmq_queue: `"type":""` always sent, arguments as given.
    ok(
        api,
        "PUT",
        "/api/queues/tf-vh/tf-q",
        r#"{"type":"","durable":true,"arguments":{"x-dead-letter-exchange":"tf-x"}}"#,
    )
    .await?;
    let queue = get_200(api, "/api/queues/tf-vh/tf-q").await?;
    assert_eq!(queue["durable"], true);
    assert_eq!(queue["auto_delete"], false);
    assert_eq!(queue["arguments"]["x-dead-letter-exchange"], "tf-x", "{queue}");

    // rabbitmq_binding: the id's properties_key is the Location header's
    // last segment, unescaped; the binding is found again in the list.
    let routing_key = "orders/eu west";
    let body = serde_json::json!({
        "source": "tf-x",
        "vhost": "tf-vh",
        "destination": "tf-q",
        "destination_type": "queue",
        "routing_key": routing_key,
        "arguments": {},
    })
    .to_string();
    let created = ok(api, "POST", "/api/bindings/tf-vh/e/tf-x/q/tf-q", &body).await?;
    let location = created.header("location").context("no Location header")?.to_owned();
    let key = path_unescape(location.rsplit('/').next().context("empty Location")?)?;
    let find = |list: &Value| -> Option<Value> {
        list.as_array()?
            .iter()
            .find(|b| {
                b["source"] == "tf-x"
                    && b["destination"] == "tf-q"
                    && b["destination_type"] == "queue"
                    && b["properties_key"] == key.as_str()
            })
            .cloned()
    };
    let list = get_200(api, "/api/bindings/tf-vh/e/tf-x/q/tf-q").await?;
    let binding = find(&list).with_context(|| format!("properties_key {key:?} from {location:?} not in {list}"))?;
    assert_eq!(binding["vhost"], "tf-vh");
    assert_eq!(binding["routing_key"], routing_key);
    assert!(binding["arguments"].is_object());
    ok(
        api,
        "DELETE",
        &format!("/api/bindings/tf-vh/e/tf-x/q/tf-q/{}", path_escape(&key)),
        "",
    )
    .await?;
    let list = get_200(api, "/api/bindings/tf-vh/e/tf-x/q/tf-q").await?;
    assert!(find(&list).is_none(), "deleted: {list}");

    // rabbitmq_policy: every field sent, integer-looking values as numbers.
    ok(
        api,
        "PUT",
        "/api/policies/tf-vh/tf-p",
        r#"{"vhost":"tf-vh","pattern":"^tf-","apply-to":"queues","name":"tf-p","priority":0,"definition":{"max-length":100}}"#,
    )
    .await?;
    let policy = get_200(api, "/api/policies/tf-vh/tf-p").await?;
    assert_eq!(policy["name"], "tf-p");
    assert_eq!(policy["vhost"], "tf-vh");
    assert_eq!(policy["pattern"], "^tf-");
    assert_eq!(policy["apply-to"], "queues");
    assert!(is_int(&policy["priority"]), "{policy}");
    assert_eq!(policy["definition"]["max-length"], 100);

    // Destroy in the provider's order, each read after it a 404; a second
    // delete is no error to rabbit-hole (it treats DELETE + 404 as done).
    for (delete, read) in [
        ("/api/policies/tf-vh/tf-p", "/api/policies/tf-vh/tf-p"),
        ("/api/queues/tf-vh/tf-q?", "/api/queues/tf-vh/tf-q"),
        ("/api/exchanges/tf-vh/tf-x", "/api/exchanges/tf-vh/tf-x"),
        ("/api/permissions/tf-vh/tf-user", "/api/permissions/tf-vh/tf-user"),
        ("/api/users/tf-user", "/api/users/tf-user"),
        ("/api/vhosts/tf-vh", "/api/vhosts/tf-vh"),
    ] {
        ok(api, "DELETE", delete, "").await?;
        let gone = call(api, "GET", read, "").await?;
        assert_eq!(gone.status, 404, "GET {read} after DELETE: {}", gone.body);
        let again = call(api, "DELETE", delete, "").await?;
        assert!(
            again.status < 400 || again.status == 404,
            "DELETE {delete} again: {} {}",
            again.status,
            again.body
        );
    }
    Ok(())
}
