use amq_protocol_types::{AMQPValue, FieldTable};

use crate::test_support::*;
use crate::{Command, CoreError, ExchangeKind, ExchangeName, Outcome, VHost};

#[test]
fn direct_exchange_routes_by_exact_key() {
    let mut h = harness_with_exchange(ExchangeKind::Direct, &[("a", "red"), ("b", "green"), ("c", "red")]);
    assert_eq!(h.routed_to("x", "red", &["a", "b", "c"]), ["a", "c"]);
    assert!(h.routed_to("x", "blue", &["a", "b", "c"]).is_empty());
}

#[test]
fn fanout_exchange_routes_to_every_bound_queue() {
    let mut h = harness_with_exchange(ExchangeKind::Fanout, &[("a", ""), ("b", "whatever")]);
    assert_eq!(h.routed_to("x", "any", &["a", "b"]), ["a", "b"]);
}

#[test]
fn topic_exchange_routes_by_pattern() {
    let mut h = harness_with_exchange(
        ExchangeKind::Topic,
        &[("a", "stock.*.nyse"), ("b", "stock.#"), ("c", "#.eur")],
    );
    assert_eq!(h.routed_to("x", "stock.usd.nyse", &["a", "b", "c"]), ["a", "b"]);
    assert_eq!(h.routed_to("x", "stock.eur", &["a", "b", "c"]), ["b", "c"]);
    assert_eq!(h.routed_to("x", "bond", &["a", "b", "c"]), Vec::<String>::new());
}

#[test]
fn headers_exchange_matches_all_or_any() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_exchange("x", ExchangeKind::Headers));
    h.ok(c, declare_queue("all"));
    h.ok(c, declare_queue("any"));
    h.ok(
        c,
        bind_with("all", "x", "", table(&[("a", text("1")), ("b", text("2"))])),
    );
    h.ok(
        c,
        bind_with(
            "any",
            "x",
            "",
            table(&[("x-match", text("any")), ("a", text("1")), ("b", text("2"))]),
        ),
    );
    let mut only_a = message("x", "", "m");
    std::sync::Arc::make_mut(&mut only_a.properties).headers = Some(table(&[("a", text("1"))]));
    h.ok(c, publish_message(only_a));
    assert!(h.drain(c, "all").is_empty());
    assert_eq!(h.drain(c, "any"), ["m"]);
    let mut both = message("x", "", "m2");
    std::sync::Arc::make_mut(&mut both.properties).headers = Some(table(&[("a", text("1")), ("b", text("2"))]));
    h.ok(c, publish_message(both));
    assert_eq!(h.drain(c, "all"), ["m2"]);
    assert_eq!(h.drain(c, "any"), ["m2"]);
}

#[test]
fn headers_binding_with_invalid_x_match_is_406() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue("q"));
    let err = h
        .call(
            c,
            bind_with("q", "amq.headers", "", table(&[("x-match", text("most"))])),
        )
        .unwrap_err();
    assert!(matches!(err, CoreError::PreconditionFailed(_)), "{err:?}");
}

#[test]
fn default_exchange_routes_by_queue_name() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue("q"));
    assert_eq!(h.routed_to("", "q", &["q"]), ["q"]);
    let outcome = h.ok(c, publish("", "nope", "m"));
    assert_eq!(
        outcome,
        Outcome::Published {
            routed: false,
            rejected: false,
            returned: None
        }
    );
}

#[test]
fn default_exchange_cannot_be_bound_deleted_or_declared() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue("q"));
    let refused = CoreError::AccessRefused("operation not permitted on the default exchange".into());
    assert_eq!(h.call(c, bind("q", "", "q")), Err(refused.clone()));
    assert_eq!(
        h.call(
            c,
            Command::DeleteExchange {
                vhost: root(),
                name: ExchangeName::from(""),
                if_unused: false
            }
        ),
        Err(refused.clone())
    );
    assert_eq!(
        h.call(c, declare_exchange("", ExchangeKind::Direct)),
        Err(refused.clone())
    );
    let passive = Command::DeclareExchange {
        vhost: root(),
        name: ExchangeName::from(""),
        kind: ExchangeKind::Direct,
        passive: true,
        durable: true,
        auto_delete: false,
        internal: false,
        arguments: FieldTable::default(),
    };
    assert_eq!(h.call(c, passive), Err(refused.clone()), "even passively");
    let e2e = Command::BindExchange {
        vhost: root(),
        destination: ExchangeName::from("amq.direct"),
        source: ExchangeName::from(""),
        routing_key: String::new(),
        arguments: FieldTable::default(),
    };
    assert_eq!(h.call(c, e2e), Err(refused));
}

#[test]
fn new_amq_exchange_is_refused_but_existing_one_may_be_redeclared() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    assert_eq!(
        h.call(c, declare_exchange("amq.x", ExchangeKind::Direct)),
        Err(CoreError::AccessRefused(
            "exchange name 'amq.x' contains reserved prefix 'amq.*'".into()
        ))
    );
    let mut redeclare = declare_exchange("amq.direct", ExchangeKind::Direct);
    if let Command::DeclareExchange { durable, .. } = &mut redeclare {
        *durable = true;
    }
    assert_eq!(h.call(c, redeclare), Ok(Outcome::ExchangeDeclared));
    let delete = Command::DeleteExchange {
        vhost: root(),
        name: ExchangeName::from("amq.topic"),
        if_unused: false,
    };
    assert!(matches!(h.call(c, delete), Err(CoreError::AccessRefused(_))));
}

#[test]
fn passive_declare_of_missing_exchange_is_404() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    let mut passive = declare_exchange("x", ExchangeKind::Topic);
    if let Command::DeclareExchange { passive: p, .. } = &mut passive {
        *p = true;
    }
    assert_eq!(
        h.call(c, passive.clone()),
        Err(CoreError::NotFound("no exchange 'x' in vhost '/'".into()))
    );
    h.ok(c, declare_exchange("x", ExchangeKind::Direct));
    // Passive ignores the attributes.
    assert_eq!(h.call(c, passive), Ok(Outcome::ExchangeDeclared));
}

#[test]
fn redeclare_with_other_type_is_406() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_exchange("x", ExchangeKind::Direct));
    assert_eq!(
        h.call(c, declare_exchange("x", ExchangeKind::Fanout)),
        Err(CoreError::PreconditionFailed(
            "inequivalent arg 'type' for exchange 'x' in vhost '/': received 'fanout' but current is 'direct'".into()
        ))
    );
    assert_eq!(
        h.call(c, declare_exchange("x", ExchangeKind::Direct)),
        Ok(Outcome::ExchangeDeclared)
    );
}

#[test]
fn delete_if_unused_refuses_an_exchange_with_bindings() {
    let mut h = harness_with_exchange(ExchangeKind::Direct, &[("q", "k")]);
    let c = chan(1, 1);
    let delete = |if_unused| Command::DeleteExchange {
        vhost: root(),
        name: ExchangeName::from("x"),
        if_unused,
    };
    assert!(matches!(h.call(c, delete(true)), Err(CoreError::PreconditionFailed(_))));
    assert_eq!(h.call(c, delete(false)), Ok(Outcome::ExchangeDeleted));
    assert_eq!(
        h.call(c, delete(false)),
        Ok(Outcome::ExchangeDeleted),
        "deleting twice is fine"
    );
    let err = h.call(c, publish("x", "k", "m")).unwrap_err();
    assert_eq!(err, CoreError::NotFound("no exchange 'x' in vhost '/'".into()));
}

fn bind_exchange(destination: &str, source: &str, key: &str) -> Command {
    Command::BindExchange {
        vhost: root(),
        destination: ExchangeName::from(destination),
        source: ExchangeName::from(source),
        routing_key: key.to_owned(),
        arguments: FieldTable::default(),
    }
}

#[test]
fn exchange_to_exchange_bindings_route_through_cycles_once() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_exchange("a", ExchangeKind::Fanout));
    h.ok(c, declare_exchange("b", ExchangeKind::Direct));
    h.ok(c, declare_queue("q"));
    h.ok(c, bind_exchange("b", "a", ""));
    h.ok(c, bind_exchange("a", "b", "k"));
    h.ok(c, bind("q", "a", ""));
    h.ok(c, bind("q", "b", "k"));
    h.ok(c, publish("b", "k", "m"));
    assert_eq!(h.drain(c, "q"), ["m"], "one copy despite two paths and a cycle");
    assert_eq!(
        h.call(c, bind_exchange("b", "nope", "")),
        Err(CoreError::NotFound("no exchange 'nope' in vhost '/'".into()))
    );
}

#[test]
fn auto_delete_exchange_goes_with_its_last_binding() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    let mut declare = declare_exchange("x", ExchangeKind::Direct);
    if let Command::DeclareExchange { auto_delete, .. } = &mut declare {
        *auto_delete = true;
    }
    h.ok(c, declare);
    h.ok(c, declare_queue("q1"));
    h.ok(c, declare_queue("q2"));
    h.ok(c, bind("q1", "x", "k"));
    h.ok(c, bind("q2", "x", "k"));
    h.ok(
        c,
        Command::UnbindQueue {
            vhost: root(),
            queue: "q1".into(),
            exchange: "x".into(),
            routing_key: "k".into(),
            arguments: FieldTable::default(),
        },
    );
    h.ok(c, publish("x", "k", "still here"));
    h.ok(
        c,
        Command::DeleteQueue {
            vhost: root(),
            queue: "q2".into(),
            if_unused: false,
            if_empty: false,
        },
    );
    assert!(matches!(h.call(c, publish("x", "k", "m")), Err(CoreError::NotFound(_))));
}

#[test]
fn publishing_to_an_internal_exchange_is_403() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    let mut declare = declare_exchange("x", ExchangeKind::Fanout);
    if let Command::DeclareExchange { internal, .. } = &mut declare {
        *internal = true;
    }
    h.ok(c, declare);
    h.ok(c, declare_exchange("front", ExchangeKind::Fanout));
    h.ok(c, declare_queue("q"));
    h.ok(c, bind("q", "x", ""));
    h.ok(c, bind_exchange("x", "front", ""));
    assert!(matches!(
        h.call(c, publish("x", "", "m")),
        Err(CoreError::AccessRefused(_))
    ));
    h.ok(c, publish("front", "", "via front"));
    assert_eq!(h.drain(c, "q"), ["via front"]);
}

#[test]
fn mandatory_unroutable_message_is_returned() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    let message = std::sync::Arc::new(message("amq.direct", "nowhere", "m"));
    let outcome = h.ok(
        c,
        Command::Publish {
            vhost: root(),
            mandatory: true,
            message: message.clone(),
        },
    );
    assert_eq!(
        outcome,
        Outcome::Published {
            routed: false,
            rejected: false,
            returned: Some(message)
        }
    );
}

#[test]
fn commands_on_a_missing_vhost_are_530() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    let command = Command::DeclareQueue {
        vhost: VHost::from("other"),
        name: "q".into(),
        passive: false,
        durable: false,
        exclusive: false,
        auto_delete: false,
        arguments: FieldTable::default(),
    };
    assert_eq!(
        h.call(c, command.clone()),
        Err(CoreError::NotAllowed("vhost 'other' not found".into()))
    );
    h.run(
        None,
        Command::DeclareVHost {
            vhost: VHost::from("other"),
        },
    );
    assert!(h.broker.has_vhost(&VHost::from("other")));
    assert!(h.call(c, command).is_ok());
    h.run(
        None,
        Command::DeleteVHost {
            vhost: VHost::from("other"),
        },
    );
    assert!(!h.broker.has_vhost(&VHost::from("other")));
}

#[test]
fn users_are_put_and_deleted() {
    let mut h = Harness::new();
    let name = crate::UserName::from("guest");
    h.run(
        None,
        Command::PutUser {
            name: name.clone(),
            password_hash: "hash".into(),
            tags: vec!["administrator".into()],
        },
    );
    assert!(h.broker.has_users());
    assert_eq!(h.broker.user(&name).map(|u| u.password_hash.as_str()), Some("hash"));
    h.run(None, Command::DeleteUser { name: name.clone() });
    assert!(h.broker.user(&name).is_none());
}

#[test]
fn integer_header_values_match_across_widths() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue("q"));
    h.ok(
        c,
        bind_with("q", "amq.match", "", table(&[("n", AMQPValue::ShortShortUInt(7))])),
    );
    let mut m = message("amq.match", "", "m");
    std::sync::Arc::make_mut(&mut m.properties).headers = Some(table(&[("n", AMQPValue::LongLongInt(7))]));
    h.ok(c, publish_message(m));
    assert_eq!(h.drain(c, "q"), ["m"]);
}

#[test]
fn unroutable_messages_go_to_the_alternate_exchange() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(
        c,
        declare_exchange_with("x", ExchangeKind::Direct, table(&[("alternate-exchange", text("ae"))])),
    );
    h.ok(c, declare_exchange("ae", ExchangeKind::Fanout));
    h.ok(c, declare_queue("q"));
    h.ok(c, declare_queue("unrouted"));
    h.ok(c, bind("q", "x", "k"));
    h.ok(c, bind("unrouted", "ae", ""));
    h.ok(c, publish("x", "k", "routed"));
    h.ok(c, publish("x", "other", "stray"));
    assert_eq!(h.drain(c, "q"), ["routed"]);
    assert_eq!(h.drain(c, "unrouted"), ["stray"]);
}

#[test]
fn redeclare_with_another_alternate_exchange_is_406() {
    let with_ae = |ae: Option<&str>| {
        let mut declare = declare_exchange("x", ExchangeKind::Direct);
        if let (Command::DeclareExchange { arguments, .. }, Some(ae)) = (&mut declare, ae) {
            *arguments = table(&[("alternate-exchange", text(ae))]);
        }
        declare
    };
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, with_ae(Some("ae1")));
    h.ok(c, with_ae(Some("ae1")));
    assert_eq!(
        h.call(c, with_ae(Some("ae2"))),
        Err(CoreError::PreconditionFailed(
            "inequivalent arg 'alternate-exchange' for exchange 'x' in vhost '/': received 'ae2' but current is 'ae1'"
                .into()
        ))
    );
    assert_eq!(
        h.call(c, with_ae(None)),
        Err(CoreError::PreconditionFailed(
            "inequivalent arg 'alternate-exchange' for exchange 'x' in vhost '/': received none but current is the value 'ae1' of type 'longstr'"
                .into()
        ))
    );
    // Other arguments are not compared, as in RabbitMQ.
    let mut other = with_ae(Some("ae1"));
    if let Command::DeclareExchange { arguments, .. } = &mut other {
        arguments.insert("x-anything".into(), int(1));
    }
    h.ok(c, other);
    h.ok(c, declare_exchange("plain", ExchangeKind::Fanout));
    let mut plain = with_ae(Some("ae1"));
    if let Command::DeclareExchange { name, kind, .. } = &mut plain {
        *name = ExchangeName::from("plain");
        *kind = ExchangeKind::Fanout;
    }
    assert_eq!(
        h.call(c, plain),
        Err(CoreError::PreconditionFailed(
            "inequivalent arg 'alternate-exchange' for exchange 'plain' in vhost '/': received the value 'ae1' of type 'longstr' but current is none"
                .into()
        ))
    );
}
