//! Issue 15: the empty routing key is an ordinary key on every exchange
//! type, and `queue.unbind`/`exchange.unbind` are idempotent as in
//! RabbitMQ 3.10 (`rabbit_binding:remove`).

use amq_protocol_types::FieldTable;

use crate::test_support::*;
use crate::{Command, CoreError, ExchangeKind, ExchangeName, Outcome, QueueName};

fn unbind_with(queue: &str, exchange: &str, routing_key: &str, arguments: FieldTable) -> Command {
    Command::UnbindQueue {
        vhost: root(),
        queue: QueueName::from(queue),
        exchange: ExchangeName::from(exchange),
        routing_key: routing_key.to_owned(),
        arguments,
    }
}

fn unbind(queue: &str, exchange: &str, routing_key: &str) -> Command {
    unbind_with(queue, exchange, routing_key, FieldTable::default())
}

fn unbind_exchange(destination: &str, source: &str, routing_key: &str) -> Command {
    Command::UnbindExchange {
        vhost: root(),
        destination: ExchangeName::from(destination),
        source: ExchangeName::from(source),
        routing_key: routing_key.to_owned(),
        arguments: FieldTable::default(),
    }
}

fn with_auto_delete(mut command: Command) -> Command {
    match &mut command {
        Command::DeclareExchange { auto_delete, .. } | Command::DeclareQueue { auto_delete, .. } => *auto_delete = true,
        _ => unreachable!("a declare"),
    }
    command
}

fn with_exclusive(mut command: Command) -> Command {
    if let Command::DeclareQueue { exclusive, .. } = &mut command {
        *exclusive = true;
    }
    command
}

fn bindings_of(h: &Harness, exchange: &str) -> Option<usize> {
    let vhost = h.broker.vhosts.get(&root())?;
    vhost
        .exchanges
        .get(&ExchangeName::from(exchange))
        .map(|x| x.bindings.len())
}

// ----- routing ---------------------------------------------------------------

#[test]
fn direct_exchange_routes_the_empty_key_to_empty_bindings() {
    // The reproduction: pq bound with "", pq2 with "k".
    let mut h = harness_with_exchange(ExchangeKind::Direct, &[("pq", ""), ("pq2", "k")]);
    assert_eq!(h.routed_to("x", "", &["pq", "pq2"]), ["pq"]);
    assert_eq!(h.routed_to("x", "k", &["pq", "pq2"]), ["pq2"]);
    assert!(h.routed_to("x", "pq", &["pq", "pq2"]).is_empty());
}

#[test]
fn topic_empty_binding_matches_only_the_empty_key_and_hash_matches_it_too() {
    let mut h = harness_with_exchange(
        ExchangeKind::Topic,
        &[("empty", ""), ("hash", "#"), ("star", "*"), ("dot", ".")],
    );
    let all = ["empty", "hash", "star", "dot"];
    assert_eq!(h.routed_to("x", "", &all), ["empty", "hash"]);
    assert_eq!(h.routed_to("x", "a", &all), ["hash", "star"]);
    assert_eq!(h.routed_to("x", ".", &all), ["hash", "dot"]);
    assert_eq!(h.routed_to("x", "a.b", &all), ["hash"]);
}

#[test]
fn fanout_ignores_the_routing_key() {
    let mut h = harness_with_exchange(ExchangeKind::Fanout, &[("a", ""), ("b", "k")]);
    assert_eq!(h.routed_to("x", "", &["a", "b"]), ["a", "b"]);
    assert_eq!(h.routed_to("x", "k", &["a", "b"]), ["a", "b"]);
}

#[test]
fn headers_ignores_the_routing_key() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_exchange("x", ExchangeKind::Headers));
    h.ok(c, declare_queue("empty-key"));
    h.ok(c, declare_queue("some-key"));
    let wanted = table(&[("a", text("1"))]);
    h.ok(c, bind_with("empty-key", "x", "", wanted.clone()));
    h.ok(c, bind_with("some-key", "x", "k", wanted));
    for key in ["", "k", "zzz"] {
        let mut m = message("x", key, "m");
        std::sync::Arc::make_mut(&mut m.properties).headers = Some(table(&[("a", text("1"))]));
        h.ok(c, publish_message(m));
        assert_eq!(h.drain(c, "empty-key"), ["m"], "routing key {key:?}");
        assert_eq!(h.drain(c, "some-key"), ["m"], "routing key {key:?}");
    }
}

#[test]
fn default_exchange_routes_the_empty_key_nowhere() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue("q"));
    assert_eq!(
        h.call(c, publish("", "", "m")),
        Ok(Outcome::Published {
            routed: false,
            rejected: false,
            returned: None
        })
    );
    assert!(h.drain(c, "q").is_empty());
}

#[test]
fn the_alternate_exchange_routes_the_empty_key() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(
        c,
        declare_exchange_with("x", ExchangeKind::Direct, table(&[("alternate-exchange", text("ae"))])),
    );
    h.ok(c, declare_exchange("ae", ExchangeKind::Direct));
    h.ok(c, declare_queue("bound"));
    h.ok(c, declare_queue("unrouted"));
    h.ok(c, bind("bound", "x", "k"));
    h.ok(c, bind("unrouted", "ae", ""));
    assert_eq!(h.routed_to("x", "", &["bound", "unrouted"]), ["unrouted"]);
    assert!(h.routed_to("x", "other", &["bound", "unrouted"]).is_empty());
    assert_eq!(h.routed_to("x", "k", &["bound", "unrouted"]), ["bound"]);
}

#[test]
fn dead_letters_keep_an_empty_original_key() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_exchange("in", ExchangeKind::Direct));
    h.ok(c, declare_exchange("dlx", ExchangeKind::Direct));
    h.ok(c, declare_queue("dead"));
    h.ok(c, bind("dead", "dlx", ""));
    let args = table(&[("x-dead-letter-exchange", text("dlx")), ("x-message-ttl", int(10))]);
    h.ok(c, declare_queue_with("work", args));
    h.ok(c, bind("work", "in", ""));
    h.ok(c, publish("in", "", "m"));
    h.now_ms += 10;
    h.run(None, Command::Tick);
    assert_eq!(h.drain(c, "dead"), ["m"]);
}

#[test]
fn an_empty_dead_letter_routing_key_replaces_the_original_key() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_exchange("dlx", ExchangeKind::Direct));
    h.ok(c, declare_queue("dead-empty"));
    h.ok(c, declare_queue("dead-original"));
    h.ok(c, bind("dead-empty", "dlx", ""));
    h.ok(c, bind("dead-original", "dlx", "work"));
    let args = table(&[
        ("x-dead-letter-exchange", text("dlx")),
        ("x-dead-letter-routing-key", text("")),
        ("x-message-ttl", int(10)),
    ]);
    h.ok(c, declare_queue_with("work", args));
    h.ok(c, publish("", "work", "m"));
    h.now_ms += 10;
    h.run(None, Command::Tick);
    assert_eq!(h.drain(c, "dead-empty"), ["m"]);
    assert!(h.drain(c, "dead-original").is_empty());
}

// ----- queue.bind -----------------------------------------------------------

#[test]
fn binding_with_the_empty_exchange_name_is_403() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue("q"));
    let refused = Err(CoreError::AccessRefused(
        "operation not permitted on the default exchange".into(),
    ));
    assert_eq!(h.call(c, bind("q", "", "")), refused);
    assert_eq!(h.call(c, bind("q", "", "q")), refused);
    assert_eq!(h.call(c, bind("missing", "", "")), refused, "403 comes before 404");
}

#[test]
fn bind_checks_the_exchange_before_the_queue_and_arguments_before_exclusivity() {
    let mut h = Harness::new();
    let owner = chan(1, 1);
    let other = chan(2, 1);
    assert_eq!(
        h.call(owner, bind("missing-q", "missing-x", "")),
        Err(CoreError::NotFound("no exchange 'missing-x' in vhost '/'".into()))
    );
    h.ok(owner, declare_exchange("hx", ExchangeKind::Headers));
    assert_eq!(
        h.call(owner, bind("missing-q", "hx", "")),
        Err(CoreError::NotFound("no queue 'missing-q' in vhost '/'".into()))
    );
    h.ok(owner, with_exclusive(declare_queue("mine")));
    let bad_match = table(&[("x-match", text("some"))]);
    assert!(matches!(
        h.call(other, bind_with("mine", "hx", "", bad_match)),
        Err(CoreError::PreconditionFailed(_))
    ));
    assert!(matches!(
        h.call(other, bind("mine", "hx", "")),
        Err(CoreError::ResourceLocked(_))
    ));
}

// ----- queue.unbind -----------------------------------------------------------

#[test]
fn unbind_of_a_missing_queue_exchange_or_binding_is_ok() {
    let mut h = harness_with_exchange(ExchangeKind::Direct, &[("q", "k")]);
    let c = chan(1, 1);
    assert_eq!(
        h.call(c, unbind("missing", "x", "k")),
        Ok(Outcome::Done),
        "missing queue"
    );
    assert_eq!(
        h.call(c, unbind("q", "missing", "k")),
        Ok(Outcome::Done),
        "missing exchange"
    );
    assert_eq!(
        h.call(c, unbind("missing", "missing", "k")),
        Ok(Outcome::Done),
        "both missing"
    );
    assert_eq!(
        h.call(c, unbind("q", "x", "other")),
        Ok(Outcome::Done),
        "missing binding"
    );
    assert_eq!(bindings_of(&h, "x"), Some(1), "the real binding stays");
    assert_eq!(h.call(c, unbind("q", "x", "k")), Ok(Outcome::Done));
    assert_eq!(bindings_of(&h, "x"), Some(0));
    assert_eq!(h.call(c, unbind("q", "x", "k")), Ok(Outcome::Done), "twice");
}

#[test]
fn unbind_from_the_default_exchange_is_403() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue("q"));
    assert_eq!(
        h.call(c, unbind("q", "", "q")),
        Err(CoreError::AccessRefused(
            "operation not permitted on the default exchange".into()
        ))
    );
}

#[test]
fn unbind_does_not_validate_arguments() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_exchange("hx", ExchangeKind::Headers));
    h.ok(c, declare_queue("q"));
    let bad_match = table(&[("x-match", text("some"))]);
    assert_eq!(h.call(c, unbind_with("q", "hx", "", bad_match)), Ok(Outcome::Done));
}

#[test]
fn unbind_of_another_connections_exclusive_queue_is_405_only_if_bound() {
    let mut h = Harness::new();
    let owner = chan(1, 1);
    let other = chan(2, 1);
    h.ok(owner, declare_exchange("x", ExchangeKind::Direct));
    h.ok(owner, with_exclusive(declare_queue("mine")));
    h.ok(owner, bind("mine", "x", "k"));
    assert_eq!(h.call(other, unbind("mine", "x", "not-bound")), Ok(Outcome::Done));
    assert!(matches!(
        h.call(other, unbind("mine", "x", "k")),
        Err(CoreError::ResourceLocked(_))
    ));
    assert_eq!(bindings_of(&h, "x"), Some(1));
    assert_eq!(h.call(owner, unbind("mine", "x", "k")), Ok(Outcome::Done));
    assert_eq!(bindings_of(&h, "x"), Some(0));
}

/// aio-pika's `RPC.close()`: cancel the only consumer of the auto-delete
/// reply queue (the queue goes, and with its last binding the auto-delete
/// headers exchange `rpc.dlx`), then unbind the queue from `rpc.dlx`
/// with key "", then delete the queue.
#[test]
fn aio_pika_rpc_close_unbinds_a_queue_that_auto_delete_removed() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, with_auto_delete(declare_exchange("rpc.dlx", ExchangeKind::Headers)));
    h.ok(c, with_auto_delete(with_exclusive(declare_queue("reply"))));
    let args = table(&[("From", text("reply")), ("x-match", text("any"))]);
    h.ok(c, bind_with("reply", "rpc.dlx", "", args.clone()));
    h.ok(c, consume("reply", "ctag", true));
    h.ok(
        c,
        Command::Cancel {
            consumer_tag: "ctag".into(),
        },
    );
    assert_eq!(
        bindings_of(&h, "rpc.dlx"),
        None,
        "the auto-delete exchange went with its binding"
    );
    assert_eq!(h.call(c, unbind_with("reply", "rpc.dlx", "", args)), Ok(Outcome::Done));
    assert_eq!(
        h.call(
            c,
            Command::DeleteQueue {
                vhost: root(),
                queue: "reply".into(),
                if_unused: false,
                if_empty: false,
            }
        ),
        Ok(Outcome::QueueDeleted { message_count: 0 })
    );
}

// ----- exchange.unbind ----------------------------------------------------------

#[test]
fn exchange_unbind_of_missing_exchanges_or_bindings_is_ok() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_exchange("a", ExchangeKind::Direct));
    h.ok(c, declare_exchange("b", ExchangeKind::Direct));
    h.ok(
        c,
        Command::BindExchange {
            vhost: root(),
            destination: ExchangeName::from("b"),
            source: ExchangeName::from("a"),
            routing_key: String::new(),
            arguments: FieldTable::default(),
        },
    );
    assert_eq!(h.call(c, unbind_exchange("missing", "a", "")), Ok(Outcome::Done));
    assert_eq!(h.call(c, unbind_exchange("b", "missing", "")), Ok(Outcome::Done));
    assert_eq!(h.call(c, unbind_exchange("b", "a", "k")), Ok(Outcome::Done));
    assert_eq!(bindings_of(&h, "a"), Some(1));
    assert_eq!(h.call(c, unbind_exchange("b", "a", "")), Ok(Outcome::Done));
    assert_eq!(bindings_of(&h, "a"), Some(0));
    let refused = Err(CoreError::AccessRefused(
        "operation not permitted on the default exchange".into(),
    ));
    assert_eq!(h.call(c, unbind_exchange("", "a", "")), refused);
    assert_eq!(h.call(c, unbind_exchange("b", "", "")), refused);
}
