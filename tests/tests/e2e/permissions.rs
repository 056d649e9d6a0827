//! Users and permissions against the real binary (issue 10, item 1): users
//! and grants made over the management API, enforced on a lapin client's
//! every operation with RabbitMQ's codes and texts, revoked under an open
//! connection, and the API's own views limited to what a user may see.

use std::net::SocketAddr;

use anyhow::Context;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection};
use serde_json::Value;
use warren_e2e::http::{get, request, Reply};
use warren_e2e::{connect, next_delivery, reply_code, reply_code_any, within, WarrenProcess};

/// `guest:guest`, the default user (tag `administrator`).
const GUEST: &str = "Z3Vlc3Q6Z3Vlc3Q=";
/// `bob:pw`.
const BOB: &str = "Ym9iOnB3";

fn bob_uri(broker: &WarrenProcess) -> String {
    format!("amqp://bob:pw@127.0.0.1:{}/%2f", broker.amqp_port())
}

async fn put(api: SocketAddr, path: &str, auth: &str, body: &str) -> anyhow::Result<Reply> {
    request(api, "PUT", path, auth, body).await
}

async fn delete(api: SocketAddr, path: &str, auth: &str) -> anyhow::Result<Reply> {
    request(api, "DELETE", path, auth, "").await
}

/// Asserts the reply's status, showing its body if not.
fn expect_status(reply: &Reply, status: u16, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        reply.status == status,
        "{what}: expected {status}, got {} {}",
        reply.status,
        reply.body
    );
    Ok(())
}

/// The code and text of the channel or connection error in `error`.
fn refusal(error: &lapin::Error) -> (Option<u16>, String) {
    (reply_code(error), error.to_string())
}

async fn channel(conn: &Connection) -> anyhow::Result<Channel> {
    within("channel.open", conn.create_channel()).await
}

async fn declare(ch: &Channel, name: &str) -> Result<lapin::Queue, lapin::Error> {
    ch.queue_declare(name.into(), QueueDeclareOptions::default(), FieldTable::default())
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_made_over_the_api_are_enforced_on_every_amqp_operation() -> anyhow::Result<()> {
    let broker = warren_e2e::start_broker().await?;
    let api = broker.http_addr().context("no http address")?;

    // guest's queue, which bob will not be allowed to touch.
    let guest = connect(&broker.amqp_uri()).await?;
    let guest_ch = channel(&guest).await?;
    within("declare secret", declare(&guest_ch, "secret")).await?;

    expect_status(
        &put(api, "/api/users/bob", GUEST, r#"{"password":"pw","tags":""}"#).await?,
        201,
        "new user",
    )?;
    expect_status(
        &put(api, "/api/users/bob", GUEST, r#"{"password":"pw","tags":[]}"#).await?,
        204,
        "same user",
    )?;

    // No grant on "/": the connection is refused at connection.open.
    let refused = connect(&bob_uri(&broker))
        .await
        .err()
        .context("bob connected without a grant")?;
    assert_eq!(reply_code_any(&refused), Some(530), "{refused:#}");
    assert!(
        format!("{refused:#}").contains("access to vhost '/' refused for user 'bob'"),
        "{refused:#}"
    );

    let grant = r#"{"configure":"^bob\\.","write":"^bob\\.|^amq\\.default$","read":"^bob\\."}"#;
    expect_status(&put(api, "/api/permissions/%2F/bob", GUEST, grant).await?, 201, "grant")?;
    let listed = get(api, "/api/permissions/%2F/bob", GUEST).await?.json()?;
    assert_eq!(listed["configure"], "^bob\\.", "{listed}");

    let bob = connect(&bob_uri(&broker)).await?;
    let ch = channel(&bob).await?;
    within("declare bob.q", declare(&ch, "bob.q")).await?;

    // Configure on another name: 403 with RabbitMQ's text, channel closed.
    let (code, text) = refusal(&declare(&ch, "jobs").await.err().context("declared jobs")?);
    assert_eq!(code, Some(403), "{text}");
    assert!(
        text.contains("configure access to queue 'jobs' in vhost '/' refused for user 'bob'"),
        "{text}"
    );

    // A dead-letter exchange needs write on it, even on a queue bob may
    // configure.
    let ch = channel(&bob).await?;
    let mut dlx = FieldTable::default();
    dlx.insert(
        "x-dead-letter-exchange".into(),
        lapin::types::AMQPValue::LongString("amq.fanout".into()),
    );
    let refused = ch
        .queue_declare("bob.dl".into(), QueueDeclareOptions::default(), dlx)
        .await
        .err()
        .context("declared a queue dead-lettering to amq.fanout")?;
    assert_eq!(reply_code(&refused), Some(403), "{refused}");
    assert!(
        refused.to_string().contains("write access to exchange 'amq.fanout'"),
        "{refused}"
    );

    // Write on the default exchange (as amq.default), read on bob.q.
    let ch = channel(&bob).await?;
    within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await?;
    let confirm = within(
        "publish",
        ch.basic_publish(
            "".into(),
            "bob.q".into(),
            BasicPublishOptions::default(),
            b"hello",
            BasicProperties::default(),
        ),
    )
    .await?;
    anyhow::ensure!(within("confirm", confirm).await?.is_ack(), "publish not acked");
    let mut consumer = within(
        "consume bob.q",
        ch.basic_consume(
            "bob.q".into(),
            "c".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        ),
    )
    .await?;
    assert_eq!(next_delivery(&mut consumer).await?.data, b"hello");

    // Each refused operation closes its channel with 403.
    let ch = channel(&bob).await?;
    let got = ch
        .basic_get("secret".into(), BasicGetOptions::default())
        .await
        .err()
        .context("basic.get on secret")?;
    assert_eq!(reply_code(&got), Some(403));
    assert!(got.to_string().contains("read access to queue 'secret'"), "{got}");

    let ch = channel(&bob).await?;
    let bind = ch
        .queue_bind(
            "bob.q".into(),
            "amq.topic".into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .err()
        .context("bind to amq.topic")?;
    assert_eq!(reply_code(&bind), Some(403));
    assert!(
        bind.to_string().contains("read access to exchange 'amq.topic'"),
        "{bind}"
    );

    let ch = channel(&bob).await?;
    let passive = ch
        .queue_declare(
            "secret".into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .err()
        .context("passive declare of secret")?;
    assert_eq!(reply_code(&passive), Some(403), "{passive}");

    let ch = channel(&bob).await?;
    within("confirm.select", ch.confirm_select(ConfirmSelectOptions::default())).await?;
    let publish = ch
        .basic_publish(
            "amq.fanout".into(),
            "".into(),
            BasicPublishOptions::default(),
            b"nope",
            BasicProperties::default(),
        )
        .await;
    let closed = match publish {
        Err(e) => e,
        Ok(confirm) => confirm.await.err().context("publish to amq.fanout confirmed")?,
    };
    assert_eq!(reply_code(&closed), Some(403), "{closed}");
    assert!(
        closed.to_string().contains("write access to exchange 'amq.fanout'"),
        "{closed}"
    );

    // Revoked while connected: the next check on the open connection fails.
    let ch = channel(&bob).await?;
    within("declare bob.q2", declare(&ch, "bob.q2")).await?;
    expect_status(&delete(api, "/api/permissions/%2F/bob", GUEST).await?, 204, "revoke")?;
    let after = declare(&ch, "bob.q3")
        .await
        .err()
        .context("declared after the revoke")?;
    assert_eq!(reply_code(&after), Some(403), "{after}");

    // guest still has its grant, and nothing of bob's is left.
    let all = get(api, "/api/permissions", GUEST).await?.json()?;
    let users: Vec<&str> = all
        .as_array()
        .context("a list")?
        .iter()
        .filter_map(|p| p["user"].as_str())
        .collect();
    assert_eq!(users, vec!["guest"], "{all}");

    // Deleting the user closes its connections and refuses its logins.
    assert!(bob.status().connected(), "bob's connection is open before");
    expect_status(&delete(api, "/api/users/bob", GUEST).await?, 204, "delete bob")?;
    warren_e2e::eventually(
        "bob's connection closed",
        std::time::Duration::from_secs(10),
        || async { Ok((!bob.status().connected()).then_some(())) },
    )
    .await?;
    expect_status(&delete(api, "/api/users/bob", GUEST).await?, 404, "delete bob again")?;
    let gone = connect(&bob_uri(&broker))
        .await
        .err()
        .context("deleted bob connected")?;
    assert_eq!(reply_code_any(&gone), Some(403), "{gone:#}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_shows_a_management_user_only_its_vhosts_and_refuses_bad_grants() -> anyhow::Result<()> {
    let broker = warren_e2e::start_broker().await?;
    let api = broker.http_addr().context("no http address")?;
    let guest = connect(&broker.amqp_uri()).await?;
    within("declare q", declare(&channel(&guest).await?, "q")).await?;

    expect_status(&put(api, "/api/vhosts/team", GUEST, "").await?, 201, "new vhost")?;
    expect_status(&put(api, "/api/vhosts/team", GUEST, "{}").await?, 204, "same vhost")?;
    let tags = r#"{"password":"pw","tags":"management"}"#;
    expect_status(&put(api, "/api/users/bob", GUEST, tags).await?, 201, "bob")?;
    let grant = r#"{"configure":".*","write":".*","read":".*"}"#;
    expect_status(
        &put(api, "/api/permissions/team/bob", GUEST, grant).await?,
        201,
        "grant on team",
    )?;

    // bob sees team, not "/"; guest (administrator) sees both.
    let names = |value: &Value| -> Vec<String> {
        value
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|v| v["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let bob_vhosts = get(api, "/api/vhosts", BOB).await?;
    expect_status(&bob_vhosts, 200, "bob's vhosts")?;
    assert_eq!(names(&bob_vhosts.json()?), vec!["team"]);
    assert_eq!(names(&get(api, "/api/vhosts", GUEST).await?.json()?), vec!["/", "team"]);
    assert_eq!(
        names(&get(api, "/api/queues", BOB).await?.json()?),
        Vec::<String>::new()
    );
    assert_eq!(names(&get(api, "/api/queues", GUEST).await?.json()?), vec!["q"]);
    expect_status(&get(api, "/api/queues/%2F", BOB).await?, 401, "bob on /")?;
    expect_status(&get(api, "/api/queues/%2F/q", BOB).await?, 401, "bob on / q")?;
    expect_status(
        &request(api, "DELETE", "/api/queues/%2F/q", BOB, "").await?,
        401,
        "bob deletes q",
    )?;
    expect_status(
        &put(api, "/api/queues/team/work", BOB, "{}").await?,
        201,
        "bob declares in team",
    )?;
    // The overview counts what bob may see; a vhost he may not see does
    // not tell him whether a queue exists in it.
    let bobs_overview = get(api, "/api/overview", BOB).await?.json()?;
    assert_eq!(bobs_overview["object_totals"]["queues"], 1, "{bobs_overview}");
    let guests_overview = get(api, "/api/overview", GUEST).await?.json()?;
    assert_eq!(guests_overview["object_totals"]["queues"], 2, "{guests_overview}");
    for path in ["/api/queues/%2F/q", "/api/queues/%2F/no-such-queue"] {
        expect_status(&request(api, "DELETE", path, BOB, "").await?, 401, path)?;
    }
    let get_body = r#"{"count":1,"ackmode":"ack_requeue_true"}"#;
    expect_status(
        &request(api, "POST", "/api/queues/%2F/no-such-queue/get", BOB, get_body).await?,
        401,
        "get in /",
    )?;

    // Only administrators manage users and grants.
    expect_status(&put(api, "/api/users/eve", BOB, tags).await?, 401, "bob adds a user")?;
    expect_status(&get(api, "/api/permissions", BOB).await?, 401, "bob lists grants")?;

    // Bad grants and users: 400 (or 404) with a JSON reason, nothing stored.
    for (path, body, status) in [
        ("/api/permissions/%2F/nobody", grant, 400),
        ("/api/permissions/nowhere/bob", grant, 400),
        (
            "/api/permissions/%2F/bob",
            r#"{"configure":"(","write":".*","read":".*"}"#,
            400,
        ),
        ("/api/permissions/%2F/bob", r#"{"configure":".*","write":".*"}"#, 400),
        ("/api/permissions/%2F/bob", "{not json", 400),
        ("/api/users/eve", r#"{"password":"x","tags":7}"#, 400),
        (
            "/api/users/eve",
            r#"{"password_hash":"abc","hashing_algorithm":"rabbit_password_hashing_md5"}"#,
            400,
        ),
        ("/api/users/eve", r#"{"password_hash":"bm90IGEgaGFzaA=="}"#, 400),
    ] {
        let reply = put(api, path, GUEST, body).await?;
        expect_status(&reply, status, &format!("PUT {path} {body}"))?;
        let error = reply.json()?;
        assert!(error["reason"].as_str().is_some_and(|r| !r.is_empty()), "{error}");
    }
    expect_status(&get(api, "/api/users/eve", GUEST).await?, 404, "eve was not created")?;
    let bobs = get(api, "/api/users/bob/permissions", GUEST).await?.json()?;
    assert_eq!(bobs.as_array().map(Vec::len), Some(1), "{bobs}");

    // A user put again without a password keeps it, and without tags
    // keeps its tags.
    expect_status(
        &put(api, "/api/users/bob", GUEST, r#"{"tags":["monitoring"]}"#).await?,
        204,
        "retag",
    )?;
    expect_status(
        &put(api, "/api/users/bob", GUEST, r#"{"password":"pw"}"#).await?,
        204,
        "same password",
    )?;
    let whoami = get(api, "/api/whoami", BOB).await?.json()?;
    assert_eq!(whoami["tags"], serde_json::json!(["monitoring"]), "{whoami}");
    assert_eq!(
        names(&get(api, "/api/vhosts", BOB).await?.json()?),
        vec!["/", "team"],
        "monitoring sees every vhost"
    );

    // Deleting the vhost drops its grants.
    expect_status(&delete(api, "/api/vhosts/team", GUEST).await?, 204, "delete team")?;
    expect_status(&delete(api, "/api/vhosts/team", GUEST).await?, 404, "delete team again")?;
    let bobs = get(api, "/api/users/bob/permissions", GUEST).await?.json()?;
    assert_eq!(bobs, serde_json::json!([]));
    Ok(())
}

/// The connection a `list-connections` line names, if it is `user`'s.
fn connection_of(listing: &str, user: &str) -> Option<String> {
    listing.lines().skip(1).find_map(|line| {
        let (name, rest) = line.split_once("  ")?;
        rest.split_whitespace()
            .nth(2)
            .filter(|u| *u == user)
            .map(|_| name.trim().to_owned())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_manages_users_vhosts_and_grants_through_a_follower_and_closes_connections() -> anyhow::Result<()> {
    use warren_e2e::ops::{cluster_addr, cluster_status, ctl, ctl_ok, start_three_nodes};
    let nodes = start_three_nodes().await?;
    // Nodes 1, 2, 3 in order: ask one that is not the leader.
    let leader = cluster_status(cluster_addr(&nodes[0])?)
        .await?
        .leader
        .context("no leader")?;
    let follower = nodes
        .iter()
        .zip(1u64..)
        .find(|(_, id)| *id != leader)
        .map(|(node, _)| node)
        .context("no follower")?;
    let server = cluster_addr(follower)?;

    assert!(ctl_ok(server, &["add-user", "carol", "s3cret"])
        .await?
        .contains("user 'carol' added"));
    let again = ctl(server, None, &["add-user", "carol", "x"]).await?;
    assert!(
        !again.success && again.stderr.contains("already exists"),
        "{}",
        again.stderr
    );
    ctl_ok(server, &["set-user-tags", "carol", "monitoring"]).await?;
    ctl_ok(server, &["add-vhost", "team"]).await?;
    let bad = ctl(
        server,
        None,
        &["set-permissions", "-p", "team", "carol", "(", ".*", ".*"],
    )
    .await?;
    assert!(
        !bad.success && bad.stderr.contains("not a regular expression"),
        "{}",
        bad.stderr
    );
    let nobody = ctl(
        server,
        None,
        &["set-permissions", "-p", "team", "nobody", ".*", ".*", ".*"],
    )
    .await?;
    assert!(
        !nobody.success && nobody.stderr.contains("no user 'nobody'"),
        "{}",
        nobody.stderr
    );
    let nowhere = ctl(server, None, &["list-exchanges", "-p", "nowhere"]).await?;
    assert!(
        !nowhere.success && nowhere.stderr.contains("no vhost 'nowhere'"),
        "{}",
        nowhere.stderr
    );
    ctl_ok(
        server,
        &["set-permissions", "-p", "team", "carol", "^carol", ".*", ".*"],
    )
    .await?;

    let users = ctl_ok(server, &["list-users"]).await?;
    assert!(
        users
            .lines()
            .any(|l| l.starts_with("carol") && l.contains("[monitoring]")),
        "{users}"
    );
    let vhosts = ctl_ok(server, &["list-vhosts"]).await?;
    assert!(vhosts.lines().any(|l| l.trim() == "team"), "{vhosts}");
    let grants = ctl_ok(server, &["list-permissions", "-p", "team"]).await?;
    assert!(
        grants
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["carol", "^carol", ".*", ".*"]),
        "{grants}"
    );

    // carol connects to another node, declares and consumes in team.
    let uri = format!("amqp://carol:s3cret@127.0.0.1:{}/team", nodes[2].amqp_port());
    // Node 3 checks carol against its own replica, which may not have
    // applied her user and grant yet when the follower that took them
    // answered.
    let carol = warren_e2e::eventually("carol let in on node 3", std::time::Duration::from_secs(10), || async {
        Ok(connect(&uri).await.ok())
    })
    .await?;
    let ch = channel(&carol).await?;
    within("declare carol.q", declare(&ch, "carol.q")).await?;
    // Kept: lapin cancels a consumer it drops.
    let _consumer = within(
        "consume",
        ch.basic_consume(
            "carol.q".into(),
            "tag-1".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    let other = channel(&carol).await?;
    let refused = declare(&other, "other").await.err().context("declared other")?;
    assert_eq!(reply_code(&refused), Some(403));

    // Node 3 applied what carol did before answering her.
    let carols_node = cluster_addr(&nodes[2])?;
    let bindings = ctl_ok(carols_node, &["list-bindings", "-p", "team"]).await?;
    assert!(
        bindings
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["\"\"", "carol.q", "queue", "carol.q"]),
        "{bindings}"
    );
    let exchanges = ctl_ok(carols_node, &["list-exchanges", "-p", "team"]).await?;
    assert!(exchanges.lines().any(|l| l.starts_with("amq.topic")), "{exchanges}");
    let consumers = ctl_ok(carols_node, &["list-consumers", "-p", "team"]).await?;
    assert!(
        consumers
            .lines()
            .any(|l| l.starts_with("carol.q") && l.contains("tag-1")),
        "{consumers}"
    );

    // Connections of every member; close carol's (on node 3) from node 1.
    let listing = ctl_ok(cluster_addr(&nodes[0])?, &["list-connections"]).await?;
    let name = connection_of(&listing, "carol").with_context(|| format!("no connection of carol in\n{listing}"))?;
    ctl_ok(cluster_addr(&nodes[0])?, &["close-connection", &name, "go away"]).await?;
    warren_e2e::eventually(
        "carol's connection closes",
        std::time::Duration::from_secs(10),
        || async { Ok((!carol.status().connected()).then_some(())) },
    )
    .await?;
    // The client sees connection.close before node 3 has its close-ok and
    // drops the connection from its list (seen once in CI: listed 12 ms
    // before "connection ended"), so the listing is awaited too.
    let node2 = cluster_addr(&nodes[1])?;
    warren_e2e::eventually(
        "carol's connection leaves the listing",
        std::time::Duration::from_secs(10),
        || async {
            let listing = ctl_ok(node2, &["list-connections"]).await?;
            Ok(connection_of(&listing, "carol").is_none().then_some(()))
        },
    )
    .await?;
    let missing = ctl(server, None, &["close-connection", "no such", "x"]).await?;
    assert!(!missing.success, "{}", missing.stdout);

    ctl_ok(server, &["clear-permissions", "-p", "team", "carol"]).await?;
    // The clear was applied on the node that answered; node 3 checks
    // carol against its own replica, which may be a heartbeat behind
    // (seen once in CI: one connection let in). Refused once it applied.
    let refused = warren_e2e::eventually(
        "carol refused on node 3",
        std::time::Duration::from_secs(10),
        || async { Ok(connect(&uri).await.err()) },
    )
    .await?;
    assert_eq!(reply_code_any(&refused), Some(530), "{refused:#}");
    ctl_ok(server, &["change-password", "carol", "other"]).await?;
    ctl_ok(server, &["delete-vhost", "team"]).await?;
    ctl_ok(server, &["delete-user", "carol"]).await?;
    let gone = ctl(server, None, &["delete-user", "carol"]).await?;
    assert!(
        !gone.success && gone.stderr.contains("no user 'carol'"),
        "{}",
        gone.stderr
    );
    Ok(())
}
