//! The management API's read side against the real binary (issue 10, item 2
//! in part): RabbitMQ's JSON for overview, whoami, vhosts, queues,
//! exchanges, bindings, users and the alarms check; HTTP Basic against the
//! broker's users; RabbitMQ's 401 / 404 / 400 answers as JSON; the same
//! answers through a follower of a three-node cluster.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use lapin::options::{ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use serde_json::Value;
use warren_e2e::http::{get, request};
use warren_e2e::{connect, eventually, within, WarrenProcess};

/// `guest:guest`, the default user (tag `administrator`).
const GUEST: &str = "Z3Vlc3Q6Z3Vlc3Q=";

async fn get_json(addr: SocketAddr, path: &str) -> anyhow::Result<Value> {
    let reply = get(addr, path, GUEST).await?;
    anyhow::ensure!(reply.status == 200, "GET {path}: {} {}", reply.status, reply.body);
    anyhow::ensure!(
        reply.head.contains("content-type: application/json"),
        "GET {path}: {}",
        reply.head
    );
    reply.json()
}

fn api_addr(broker: &WarrenProcess) -> anyhow::Result<SocketAddr> {
    broker.http_addr().context("the broker printed no http address")
}

/// A durable queue `api-q` (x-max-length 10) with 3 messages, bound to
/// `amq.topic` with `a.#`.
async fn declare_and_fill(uri: &str) -> anyhow::Result<()> {
    let conn = connect(uri).await?;
    let ch = within("channel.open", conn.create_channel()).await?;
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongInt(10));
    within(
        "queue.declare",
        ch.queue_declare("api-q".into(), QueueDeclareOptions::durable(), arguments),
    )
    .await?;
    within(
        "queue.bind",
        ch.queue_bind(
            "api-q".into(),
            "amq.topic".into(),
            "a.#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await?;
    for i in 0..3 {
        let confirm = within(
            "basic.publish",
            ch.basic_publish(
                "".into(),
                "api-q".into(),
                Default::default(),
                format!("m{i}").as_bytes(),
                BasicProperties::default(),
            ),
        )
        .await?;
        anyhow::ensure!(within("confirm", confirm).await?.is_ack());
    }
    within("connection.close", conn.close(200, "bye".into())).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_rabbitmq_s_reads_and_refuses_what_rabbitmq_refuses() -> anyhow::Result<()> {
    let broker = warren_e2e::start_broker().await?;
    declare_and_fill(&broker.amqp_uri()).await?;
    let api = api_addr(&broker)?;

    let whoami = get_json(api, "/api/whoami").await?;
    assert_eq!(whoami["name"], "guest");
    assert_eq!(whoami["tags"], serde_json::json!(["administrator"]));

    let overview = get_json(api, "/api/overview").await?;
    assert_eq!(overview["queue_totals"]["messages_ready"], 3, "{overview}");
    assert_eq!(overview["object_totals"]["queues"], 1);
    assert!(overview["node"].as_str().is_some_and(|n| n.starts_with("warren@")));

    let queue = get_json(api, "/api/queues/%2F/api-q").await?;
    for (field, expected) in [
        ("name", serde_json::json!("api-q")),
        ("vhost", serde_json::json!("/")),
        ("type", serde_json::json!("classic")),
        ("durable", serde_json::json!(true)),
        ("auto_delete", serde_json::json!(false)),
        ("exclusive", serde_json::json!(false)),
        ("arguments", serde_json::json!({"x-max-length": 10})),
        ("messages", serde_json::json!(3)),
        ("messages_ready", serde_json::json!(3)),
        ("messages_unacknowledged", serde_json::json!(0)),
        ("consumers", serde_json::json!(0)),
    ] {
        assert_eq!(queue[field], expected, "queue field {field}: {queue}");
    }
    let listed = get_json(api, "/api/queues").await?;
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    let page = get_json(api, "/api/queues/%2F?page=1&page_size=1&name=api").await?;
    assert_eq!(page["items"][0]["name"], "api-q");
    assert_eq!(page["page_count"], 1);
    assert_eq!(page["filtered_count"], 1);

    let vhosts = get_json(api, "/api/vhosts").await?;
    assert_eq!(vhosts[0]["name"], "/");
    let exchanges = get_json(api, "/api/exchanges/%2F").await?;
    let names: Vec<&str> = exchanges
        .as_array()
        .context("a list")?
        .iter()
        .filter_map(|x| x["name"].as_str())
        .collect();
    assert!(names.contains(&"") && names.contains(&"amq.topic"), "{names:?}");
    let topic = get_json(api, "/api/exchanges/%2F/amq.topic").await?;
    assert_eq!(topic["type"], "topic");
    let bindings = get_json(api, "/api/bindings/%2F").await?;
    assert!(
        bindings
            .as_array()
            .context("a list")?
            .iter()
            .any(|b| b["source"] == "amq.topic"
                && b["destination"] == "api-q"
                && b["destination_type"] == "queue"
                && b["routing_key"] == "a.#"),
        "{bindings}"
    );
    let users = get_json(api, "/api/users").await?;
    assert_eq!(users[0]["name"], "guest");
    assert_eq!(get_json(api, "/api/health/checks/alarms").await?["status"], "ok");

    // What RabbitMQ refuses, and how.
    for auth in ["", "Z3Vlc3Q6d3Jvbmc=", "bm90LWJhc2U2NA"] {
        let reply = get(api, "/api/queues", auth).await?;
        assert_eq!(reply.status, 401, "auth {auth:?}: {}", reply.body);
        assert!(reply.head.contains("www-authenticate: basic"), "{}", reply.head);
        assert_eq!(reply.json()?["error"], "not_authorized");
    }
    for missing in [
        "/api/queues/%2F/nope",
        "/api/queues/no-such-vhost",
        "/api/vhosts/no-such-vhost",
        "/api/exchanges/%2F/nope",
        "/api/no-such-endpoint",
    ] {
        let reply = get(api, missing, GUEST).await?;
        assert_eq!(reply.status, 404, "{missing}: {}", reply.body);
        assert_eq!(reply.json()?["error"], "Object Not Found", "{missing}");
    }
    for bad in [
        "/api/queues?page=0",
        "/api/queues?page=1&page_size=100000",
        "/api/queues?use_regex=true&name=(",
        "/api/queues?use_regex=true&name=%5B",
    ] {
        let reply = get(api, bad, GUEST).await?;
        assert_eq!(reply.status, 400, "{bad}: {}", reply.body);
        assert!(reply.json()?["reason"].as_str().is_some_and(|r| !r.is_empty()));
    }
    Ok(())
}

// rabbitmq_http_client 0.93 (the library of rabbitmqadmin v2) reads every
// endpoint of the read side: it deserializes strictly, so a missing or
// mistyped field fails here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmqadmin_s_client_library_reads_every_endpoint() -> anyhow::Result<()> {
    let broker = warren_e2e::start_broker().await?;
    declare_and_fill(&broker.amqp_uri()).await?;
    let endpoint = format!("http://{}/api", api_addr(&broker)?);
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        use rabbitmq_http_client::blocking_api::ClientBuilder;
        let client = ClientBuilder::new()
            .with_endpoint(endpoint.as_str())
            .with_basic_auth_credentials("guest", "guest")
            .build()?;
        let queue = client.get_queue_info("/", "api-q")?;
        assert_eq!((queue.name.as_str(), queue.queue_type.as_str()), ("api-q", "classic"));
        assert!(queue.durable && !queue.exclusive && !queue.auto_delete);
        assert_eq!((queue.message_count, queue.unacknowledged_message_count), (3, 0));
        assert_eq!(client.list_queues()?.len(), 1);
        assert_eq!(client.list_queues_in("/")?.len(), 1);
        let overview = client.overview()?;
        assert!(overview.node.starts_with("warren@"), "{overview:?}");
        let nodes = client.list_nodes()?;
        assert_eq!(nodes.len(), 1);
        assert!(!nodes[0].has_memory_alarm_in_effect && !nodes[0].has_free_disk_space_alarm_in_effect);
        assert_eq!(client.get_node_info(&nodes[0].name)?.name, nodes[0].name);
        assert_eq!(client.list_vhosts()?.len(), 1);
        assert_eq!(client.get_vhost("/")?.name, "/");
        let exchanges = client.list_exchanges()?;
        assert!(exchanges
            .iter()
            .any(|x| x.name == "amq.topic" && x.exchange_type == "topic"));
        assert_eq!(client.get_exchange_info("/", "amq.topic")?.name, "amq.topic");
        let bindings = client.list_bindings_in("/")?;
        assert!(bindings
            .iter()
            .any(|b| b.source == "amq.topic" && b.routing_key == "a.#"));
        assert_eq!(client.current_user()?.name, "guest");
        assert_eq!(client.list_users()?.len(), 1);
        let to_queue = client.list_queue_bindings("/", "api-q")?;
        assert_eq!(
            to_queue.len(),
            2,
            "the default exchange's and amq.topic's: {to_queue:?}"
        );
        let from_topic = client.list_exchange_bindings_with_source("/", "amq.topic")?;
        assert!(from_topic.iter().all(|b| b.source == "amq.topic") && from_topic.len() == 1);
        assert!(client
            .list_exchange_bindings_with_destination("/", "amq.topic")?
            .is_empty());
        assert!(client.list_queue_bindings("/", "missing").is_err());
        let definitions = client.export_cluster_wide_definitions_as_data()?;
        assert!(definitions.queues.iter().any(|q| q.name == "api-q" && q.durable));
        assert!(definitions
            .bindings
            .iter()
            .any(|b| b.source == "amq.topic" && b.destination == "api-q" && b.routing_key == "a.#"));
        assert!(definitions
            .exchanges
            .iter()
            .all(|x| !x.name.is_empty() && !x.name.starts_with("amq.")));
        assert_eq!(definitions.users.len(), 1);
        assert_eq!(definitions.virtual_hosts.len(), 1);
        assert_eq!(definitions.permissions.len(), 1, "guest on /");
        client.health_check_cluster_wide_alarms()?;
        client.health_check_local_alarms()?;
        assert!(
            client.get_queue_info("/", "missing").is_err(),
            "a missing queue is an error"
        );
        let params = rabbitmq_http_client::requests::QueueParams::new_durable_classic_queue("from-admin", None);
        client.declare_queue("/", &params)?;
        assert!(client.get_queue_info("/", "from-admin")?.durable);
        client.purge_queue("/", "api-q")?;
        assert_eq!(client.get_queue_info("/", "api-q")?.message_count, 0);
        client.delete_queue("/", "from-admin", false)?;
        assert!(client.get_queue_info("/", "from-admin").is_err());
        client.delete_queue("/", "from-admin", true)?;
        let wrong = ClientBuilder::new()
            .with_endpoint(endpoint.as_str())
            .with_basic_auth_credentials("guest", "wrong")
            .build()?;
        assert!(wrong.list_queues().is_err(), "a wrong password is refused");
        Ok(())
    })
    .await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_are_declared_purged_and_deleted_over_the_api_as_rabbitmq_s() -> anyhow::Result<()> {
    let broker = warren_e2e::start_broker().await?;
    declare_and_fill(&broker.amqp_uri()).await?;
    let api = api_addr(&broker)?;
    let put = |path: &'static str, body: &'static str| request(api, "PUT", path, GUEST, body);
    let delete = |path: &'static str| request(api, "DELETE", path, GUEST, "");

    let created = put(
        "/api/queues/%2F/made",
        r#"{"durable":true,"arguments":{"x-max-length":5}}"#,
    )
    .await?;
    assert_eq!(created.status, 201, "{}", created.body);
    let queue = get_json(api, "/api/queues/%2F/made").await?;
    assert_eq!(
        (queue["durable"].clone(), queue["arguments"].clone()),
        (serde_json::json!(true), serde_json::json!({"x-max-length": 5}))
    );
    let again = put(
        "/api/queues/%2F/made",
        r#"{"durable":true,"arguments":{"x-max-length":5}}"#,
    )
    .await?;
    assert_eq!(again.status, 204, "the same declaration again: {}", again.body);
    let defaults = put("/api/queues/%2F/defaults", "").await?;
    assert_eq!(defaults.status, 201, "{}", defaults.body);
    assert_eq!(
        get_json(api, "/api/queues/%2F/defaults").await?["durable"],
        true,
        "durable by default"
    );

    // Refusals: RabbitMQ's codes, a JSON reason.
    let inequivalent = put("/api/queues/%2F/made", r#"{"durable":false}"#).await?;
    assert_eq!(inequivalent.status, 400, "{}", inequivalent.body);
    assert!(inequivalent.json()?["reason"]
        .as_str()
        .is_some_and(|r| r.contains("PRECONDITION_FAILED")));
    for (path, body) in [
        ("/api/queues/%2F/bad-json", "{not json"),
        ("/api/queues/%2F/bad-args", r#"{"arguments":[1,2]}"#),
        ("/api/queues/%2F/bad-flag", r#"{"durable":"yes"}"#),
        ("/api/queues/%2F/bad-arg", r#"{"arguments":{"x-max-length":"ten"}}"#),
    ] {
        let reply = request(api, "PUT", path, GUEST, body).await?;
        assert_eq!(reply.status, 400, "{path} {body}: {}", reply.body);
        assert_eq!(reply.json()?["error"], "bad_request");
    }
    let no_vhost = put("/api/queues/nowhere/q", "{}").await?;
    assert_eq!(no_vhost.status, 404, "{}", no_vhost.body);
    let unauthenticated = request(api, "PUT", "/api/queues/%2F/x", "", "{}").await?;
    assert_eq!(unauthenticated.status, 401);

    // Purge and delete.
    let not_empty = delete("/api/queues/%2F/api-q?if-empty=true").await?;
    assert_eq!(not_empty.status, 400, "{}", not_empty.body);
    let purged = delete("/api/queues/%2F/api-q/contents").await?;
    assert_eq!(purged.status, 204, "{}", purged.body);
    assert_eq!(get_json(api, "/api/queues/%2F/api-q").await?["messages"], 0);
    let deleted = delete("/api/queues/%2F/api-q?if-empty=true").await?;
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    assert_eq!(get(api, "/api/queues/%2F/api-q", GUEST).await?.status, 404);
    assert_eq!(delete("/api/queues/%2F/api-q").await?.status, 404, "already gone");
    assert_eq!(delete("/api/queues/%2F/api-q/contents").await?.status, 404);

    // What the API did is what AMQP sees.
    let conn = connect(&broker.amqp_uri()).await?;
    let ch = within("channel.open", conn.create_channel()).await?;
    assert_eq!(warren_e2e::amqp::message_count(&ch, "made").await?, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_answers_for_the_cluster() -> anyhow::Result<()> {
    let nodes = warren_e2e::ops::start_three_nodes().await?;
    declare_and_fill(&nodes[0].amqp_uri()).await?;
    let follower = api_addr(&nodes[2])?;
    let queue = eventually(
        "the queue seen through node 3",
        Duration::from_secs(20),
        || async move {
            let reply = get(follower, "/api/queues/%2F/api-q", GUEST).await?;
            Ok((reply.status == 200).then_some(reply.json()?))
        },
    )
    .await?;
    assert_eq!(queue["messages_ready"], 3, "{queue}");
    assert_eq!(queue["durable"], true);
    // A write through the follower goes through Raft like any command.
    let created = request(follower, "PUT", "/api/queues/%2F/via-follower", GUEST, "{}").await?;
    assert_eq!(created.status, 201, "{}", created.body);
    let leader = api_addr(&nodes[0])?;
    eventually(
        "the queue seen through node 1",
        Duration::from_secs(20),
        || async move {
            let reply = get(leader, "/api/queues/%2F/via-follower", GUEST).await?;
            Ok((reply.status == 200).then_some(()))
        },
    )
    .await?;

    // Prometheus' global counters are per node, as RabbitMQ's: node 1
    // received the three publishes, node 3 none (a sum over the nodes is
    // the cluster's).
    let received = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("rabbitmq_global_messages_received_total{protocol=\"amqp091\"} "))
            .map(str::to_owned)
    };
    let on_node1 = get(nodes[0].prometheus_addr().context("prometheus")?, "/metrics", "").await?;
    let on_node3 = get(nodes[2].prometheus_addr().context("prometheus")?, "/metrics", "").await?;
    assert_eq!(received(&on_node1.body).as_deref(), Some("3"), "{}", on_node1.body);
    assert_eq!(received(&on_node3.body).as_deref(), Some("0"), "{}", on_node3.body);

    // With all three up no node is quorum critical; with one killed, each
    // of the other two is (stopping it would leave one of three).
    let critical = "/api/health/checks/node-is-quorum-critical";
    let all_up = get(follower, critical, GUEST).await?;
    assert_eq!(
        (all_up.status, all_up.json()?["status"].clone()),
        (200, "ok".into()),
        "{}",
        all_up.body
    );
    let mut nodes = nodes;
    nodes[1].kill9();
    let reply = get(follower, critical, GUEST).await?;
    assert_eq!(reply.status, 503, "{}", reply.body);
    let failed = reply.json()?;
    assert_eq!(failed["status"], "failed");
    assert!(
        failed["queues"]
            .as_array()
            .is_some_and(|q| q.iter().any(|q| q["name"] == "api-q")),
        "{failed}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_answer_as_rabbitmq_s() -> anyhow::Result<()> {
    let broker = warren_e2e::start_broker().await?;
    let api = api_addr(&broker)?;
    let ok = serde_json::json!({"status": "ok"});
    assert_eq!(get_json(api, "/api/health/checks/virtual-hosts").await?, ok);
    assert_eq!(
        get_json(api, "/api/health/checks/node-is-quorum-critical").await?,
        ok,
        "a single node"
    );
    assert_eq!(get_json(api, "/api/aliveness-test/%2F").await?, ok);
    assert_eq!(
        get_json(api, "/api/aliveness-test/%2F").await?,
        ok,
        "again, on the same queue"
    );
    let amqp = format!("/api/health/checks/port-listener/{}", broker.amqp_port());
    assert_eq!(get_json(api, &amqp).await?["status"], "ok");
    let missing = get(api, "/api/health/checks/port-listener/1", GUEST).await?;
    assert_eq!(missing.status, 503, "{}", missing.body);
    let missing = missing.json()?;
    assert_eq!(
        (missing["status"].clone(), missing["missing"].clone()),
        ("failed".into(), 1.into())
    );
    for (path, status) in [
        ("/api/health/checks/port-listener/http", 400),
        ("/api/health/checks/port-listener/70000", 400),
        ("/api/aliveness-test/nowhere", 404),
    ] {
        let reply = get(api, path, GUEST).await?;
        assert_eq!(reply.status, status, "{path}: {}", reply.body);
        assert!(reply.json()?["reason"].is_string(), "{path}: {}", reply.body);
    }
    let unauthenticated = get(api, "/api/health/checks/virtual-hosts", "").await?;
    assert_eq!(unauthenticated.status, 401);

    // Errors the HTTP layer makes itself come as JSON too: a method a path
    // does not take, and a body over RabbitMQ's 20 MB limit.
    for (method, path) in [("PATCH", "/api/queues/%2F/q"), ("POST", "/api/overview")] {
        let reply = request(api, method, path, GUEST, "").await?;
        assert_eq!(reply.status, 405, "{method} {path}: {}", reply.body);
        assert_eq!(reply.json()?["error"], "method_not_allowed", "{}", reply.body);
        assert!(reply.head.contains("allow:"), "{}", reply.head);
    }
    // Only the head says 21 MB: the broker answers from it, and the test
    // does not race a reset against writing the rest.
    let mut stream = tokio::net::TcpStream::connect(api).await?;
    let head = format!(
        "PUT /api/queues/%2F/huge HTTP/1.1\r\nHost: {api}\r\nAuthorization: Basic {GUEST}\r\n\
         Content-Type: application/json\r\nContent-Length: 21000000\r\nConnection: close\r\n\r\n{{"
    );
    tokio::io::AsyncWriteExt::write_all(&mut stream, head.as_bytes()).await?;
    let mut answer = vec![0u8; 4096];
    let read = within("413 answer", tokio::io::AsyncReadExt::read(&mut stream, &mut answer)).await?;
    let answer = String::from_utf8_lossy(&answer[..read]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
    let big_but_allowed = format!("{{\"arguments\": {{\"pad\": \"{}\"}}}}", "a".repeat(3_000_000));
    let reply = request(api, "PUT", "/api/queues/%2F/big", GUEST, &big_but_allowed).await?;
    assert_eq!(reply.status, 201, "3 MB is under the limit: {}", reply.body);
    Ok(())
}

/// A lapin connection to `uri` that names itself `name`.
async fn named_connection(uri: &str, name: &str) -> anyhow::Result<lapin::Connection> {
    let properties = lapin::ConnectionProperties::default().with_connection_name(name.into());
    within("connect", lapin::Connection::connect(uri, properties)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_channels_and_consumers_are_listed_for_the_whole_cluster_and_closed_from_any_node(
) -> anyhow::Result<()> {
    let nodes = warren_e2e::ops::start_three_nodes().await?;
    let on_two = named_connection(&nodes[1].amqp_uri(), "svc-two").await?;
    let on_three = named_connection(&nodes[2].amqp_uri(), "svc-three").await?;
    let ch = within("channel", on_three.create_channel()).await?;
    within(
        "declare",
        ch.queue_declare("work".into(), QueueDeclareOptions::default(), FieldTable::default()),
    )
    .await?;
    within("qos", ch.basic_qos(7, lapin::options::BasicQosOptions::default())).await?;
    let _consumer = within(
        "consume",
        ch.basic_consume(
            "work".into(),
            "worker-1".into(),
            lapin::options::BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    let api = api_addr(&nodes[0])?;

    // Node 1 lists the connections of nodes 2 and 3.
    let connections = eventually("both connections listed", Duration::from_secs(20), || async move {
        let list = get_json(api, "/api/connections").await?;
        let named = |n: &str| {
            list.as_array().and_then(|l| {
                l.iter()
                    .find(|c| c["client_properties"]["connection_name"] == n)
                    .cloned()
            })
        };
        Ok(named("svc-two").zip(named("svc-three")))
    })
    .await?;
    let (two, three) = connections;
    assert_eq!(two["node"], "warren@node-2", "{two}");
    assert_eq!(three["node"], "warren@node-3", "{three}");
    assert_eq!(
        (three["user"].clone(), three["vhost"].clone()),
        ("guest".into(), "/".into())
    );
    assert_eq!(three["channels"], 1, "{three}");
    assert_eq!(three["client_properties"]["product"], "lapin", "{three}");
    // Its statistics travel from node 3 with it.
    assert!(three["recv_oct"].as_u64() > Some(0), "{three}");
    assert!(three["send_oct"].as_u64() > Some(0), "{three}");
    assert_eq!(three["message_stats"]["publish"], 0, "{three}");

    // Node 1 lists the consumer once it has applied the consume (node 3
    // answered consume-ok when it had; a follower may be behind).
    let worker = eventually("worker-1 listed on node 1", Duration::from_secs(20), || async move {
        let consumers = get_json(api, "/api/consumers/%2F").await?;
        Ok(consumers
            .as_array()
            .and_then(|l| l.iter().find(|c| c["consumer_tag"] == "worker-1"))
            .cloned())
    })
    .await?;
    assert_eq!(worker["queue"]["name"], "work");
    assert_eq!(worker["prefetch_count"], 7, "{worker}");
    assert_eq!(worker["channel_details"]["connection_name"], three["name"]);
    // The channel's consumer count is node 1's view too (a follower may
    // not have applied the consume yet).
    let three_name_json = three["name"].clone();
    eventually(
        "node 3's channel listed with its consumer",
        Duration::from_secs(20),
        || {
            let name = three_name_json.clone();
            async move {
                let channels = get_json(api, "/api/channels").await?;
                let listed = channels.as_array().is_some_and(|l| {
                    l.iter()
                        .any(|c| c["connection_details"]["name"] == name && c["consumer_count"] == 1)
                });
                Ok(listed.then_some(()))
            }
        },
    )
    .await?;

    // rabbitmq_http_client reads the same, and closes the connection on
    // node 3 through node 1 with a reason.
    let endpoint = format!("http://{api}/api");
    let three_name = three["name"].as_str().context("name")?.to_owned();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        use rabbitmq_http_client::blocking_api::ClientBuilder;
        let client = ClientBuilder::new()
            .with_endpoint(endpoint.as_str())
            .with_basic_auth_credentials("guest", "guest")
            .build()?;
        assert!(client.list_connections()?.iter().any(|c| c.name == three_name));
        assert!(!client.list_channels()?.is_empty());
        assert!(client.list_consumers()?.iter().any(|c| c.consumer_tag == "worker-1"));
        client.close_connection(&three_name, Some("maintenance"), false)?;
        assert!(client.close_connection("no such connection", None, false).is_err());
        Ok(())
    })
    .await??;
    eventually("svc-three closed", Duration::from_secs(10), || {
        let on_three = &on_three;
        async move { Ok((!on_three.status().connected()).then_some(())) }
    })
    .await?;
    assert!(on_two.status().connected(), "the other connection stays");
    let after = get_json(api, "/api/connections").await?;
    assert!(
        after.as_array().is_some_and(|l| l
            .iter()
            .all(|c| c["client_properties"]["connection_name"] != "svc-three")),
        "{after}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_carries_its_traffic_and_message_counts_with_rates() -> anyhow::Result<()> {
    let broker = warren_e2e::start_broker().await?;
    let api = api_addr(&broker)?;
    let conn = named_connection(&broker.amqp_uri(), "stats-client").await?;
    let ch = within("channel", conn.create_channel()).await?;
    warren_e2e::amqp::plain_queue(&ch, "stats-q").await?;
    within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await?;
    for _ in 0..3 {
        warren_e2e::amqp::publish(&ch, "", "stats-q", b"0123456789").await?;
    }
    let got = within(
        "basic.get",
        ch.basic_get("stats-q".into(), lapin::options::BasicGetOptions { no_ack: false }),
    )
    .await?
    .context("a message")?;
    within("ack", got.delivery.ack(lapin::options::BasicAckOptions::default())).await?;
    assert_eq!(warren_e2e::amqp::message_count(&ch, "stats-q").await?, 2);

    let find = || async move {
        let list = get_json(api, "/api/connections").await?;
        list.as_array()
            .and_then(|l| {
                l.iter()
                    .find(|c| c["client_properties"]["connection_name"] == "stats-client")
                    .cloned()
            })
            .with_context(|| format!("no stats-client in {list}"))
    };
    let listed = find().await?;
    // Three bodies of 10 bytes and their frames came in; more went out.
    assert!(listed["recv_oct"].as_u64() > Some(30), "{listed}");
    assert!(listed["recv_cnt"].as_u64() >= Some(1), "{listed}");
    assert!(listed["send_oct"].as_u64() > Some(10), "{listed}");
    assert!(listed["send_cnt"].as_u64() >= Some(1), "{listed}");
    assert!(listed["recv_oct_details"]["rate"].is_number(), "{listed}");
    let stats = &listed["message_stats"];
    assert_eq!(stats["publish"], 3, "{listed}");
    assert_eq!(stats["confirm"], 3, "{listed}");
    assert_eq!(stats["deliver_get"], 1, "{listed}");
    assert_eq!(stats["ack"], 1, "{listed}");
    assert_eq!(stats["redeliver"], 0, "{listed}");
    // The node's churn in the overview: this client's connection, channel
    // and declares (two passive ones included).
    let overview = get_json(api, "/api/overview").await?;
    let churn = &overview["churn_rates"];
    assert_eq!(churn["connection_created"], 1, "{churn}");
    assert_eq!(churn["connection_closed"], 0, "{churn}");
    assert_eq!(churn["channel_created"], 1, "{churn}");
    assert_eq!(churn["queue_created"], 1, "{churn}");
    assert!(churn["queue_declared"].as_u64() >= Some(2), "{churn}");
    assert!(churn["channel_created_details"]["rate"].is_number(), "{churn}");
    // Rates come from samples every 5 s: traffic between two samples
    // shows as a rate above zero.
    let ch = &ch;
    let rate = eventually("a byte rate", Duration::from_secs(20), || async move {
        let _ = warren_e2e::amqp::message_count(ch, "stats-q").await?;
        let listed = find().await?;
        let rate = listed["recv_oct_details"]["rate"].as_f64().unwrap_or(0.0);
        Ok((rate > 0.0).then_some(rate))
    })
    .await?;
    assert!(rate.is_finite(), "{rate}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_and_the_overview_carry_message_stats_with_rates() -> anyhow::Result<()> {
    let broker = warren_e2e::start_broker().await?;
    declare_and_fill(&broker.amqp_uri()).await?;
    let api = api_addr(&broker)?;
    let got = request(
        api,
        "POST",
        "/api/queues/%2F/api-q/get",
        GUEST,
        r#"{"count":1,"ackmode":"ack_requeue_false"}"#,
    )
    .await?;
    assert_eq!(got.status, 200, "{}", got.body);

    // Counts at once; a rate once a sample after the publishes was taken
    // (every 5 s), and for 5 s after it.
    let queue = get_json(api, "/api/queues/%2F/api-q").await?;
    let stats = &queue["message_stats"];
    assert_eq!(stats["publish"], 3, "{queue}");
    assert_eq!(stats["get"], 1, "{queue}");
    assert_eq!(stats["ack"], 1, "{queue}");
    assert_eq!(stats["deliver_get"], 1, "{queue}");
    assert!(stats["publish_details"]["rate"].is_number(), "{queue}");
    assert!(queue["messages_details"]["rate"].is_number(), "{queue}");
    let rate = eventually("a publish rate", Duration::from_secs(15), || async move {
        let queue = get_json(api, "/api/queues/%2F/api-q").await?;
        let rate = queue["message_stats"]["publish_details"]["rate"]
            .as_f64()
            .unwrap_or(0.0);
        Ok((rate > 0.0).then_some(rate))
    })
    .await?;
    assert!(rate <= 3.0, "3 messages over at least a second: {rate}");
    let vhost = get_json(api, "/api/vhosts/%2F").await?;
    assert_eq!(vhost["message_stats"]["publish"], 3, "{vhost}");
    assert_eq!(vhost["message_stats"]["get"], 1, "{vhost}");
    assert!(vhost["message_stats"]["publish_details"]["rate"].is_number(), "{vhost}");
    let overview = get_json(api, "/api/overview").await?;
    assert_eq!(overview["message_stats"]["publish"], 3, "{overview}");
    assert_eq!(overview["message_stats"]["get"], 1, "{overview}");
    assert!(overview["message_stats"]["publish_details"]["rate"].is_number());
    assert!(overview["queue_totals"]["messages_details"]["rate"].is_number());

    // KEDA's and Flower's reads of a queue, through rabbitmq_http_client.
    let endpoint = format!("http://{api}/api");
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        use rabbitmq_http_client::blocking_api::ClientBuilder;
        let client = ClientBuilder::new()
            .with_endpoint(endpoint.as_str())
            .with_basic_auth_credentials("guest", "guest")
            .build()?;
        let info = client.get_queue_info("/", "api-q")?;
        assert_eq!(info.message_count, 2);
        Ok(())
    })
    .await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_listed_removed_and_added_back_over_the_api_through_any_node() -> anyhow::Result<()> {
    let nodes = warren_e2e::ops::start_three_nodes().await?;
    let api = api_addr(&nodes[1])?;
    let voters = |members: &serde_json::Value| -> Vec<u64> {
        members["members"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter(|m| m["role"] == "voter")
                    .filter_map(|m| m["node_id"].as_u64())
                    .collect()
            })
            .unwrap_or_default()
    };
    let members = get_json(api, "/api/warren/members").await?;
    assert_eq!(voters(&members), [1, 2, 3], "{members}");
    assert!(
        members["members"]
            .as_array()
            .is_some_and(|l| l.iter().all(|m| m["reachable"] == true)),
        "{members}"
    );
    let node3 = members["members"][2]["addr"].as_str().context("addr")?.to_owned();

    let removed = request(api, "DELETE", "/api/warren/members/3", GUEST, "").await?;
    assert_eq!(removed.status, 204, "{}", removed.body);
    let members = eventually("two voters", Duration::from_secs(10), || async move {
        let members = get_json(api, "/api/warren/members").await?;
        Ok((voters(&members) == [1, 2]).then_some(members))
    })
    .await?;
    assert_eq!(members["members"].as_array().map(Vec::len), Some(2), "{members}");

    let body = serde_json::json!({"node_id": 3, "addr": node3}).to_string();
    let added = request(api, "POST", "/api/warren/members", GUEST, &body).await?;
    assert_eq!(added.status, 201, "{}", added.body);
    assert!(added.json()?["log_index"].is_u64());
    let members = get_json(api, "/api/warren/members").await?;
    assert_eq!(voters(&members), [1, 2, 3], "{members}");

    for (method, path, body, status) in [
        ("DELETE", "/api/warren/members/9", "", 404),
        ("DELETE", "/api/warren/members/three", "", 400),
        ("POST", "/api/warren/members", r#"{"node_id":4}"#, 400),
        ("POST", "/api/warren/members", r#"{"node_id":0,"addr":"x:1"}"#, 400),
    ] {
        let reply = request(api, method, path, GUEST, body).await?;
        assert_eq!(reply.status, status, "{method} {path} {body}: {}", reply.body);
    }
    Ok(())
}
