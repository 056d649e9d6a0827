//! Policies applied to queues and exchanges (ADR 0017): what a definition
//! sets, how it meets a queue's own arguments, which policy wins, and what
//! a change does to a queue that already holds messages.

use crate::policy::{Definition, Policy};
use crate::test_support::*;
use crate::{Command, ExchangeKind, Outcome};

fn policy(name: &str, pattern: &str, apply_to: &str, priority: i64, definition: &str) -> Command {
    Command::PutPolicy(Policy {
        vhost: root(),
        name: name.to_owned(),
        pattern: pattern.to_owned(),
        apply_to: apply_to.to_owned(),
        priority,
        definition: definition.to_owned(),
    })
}

fn delete_policy(name: &str) -> Command {
    Command::DeletePolicy {
        vhost: root(),
        name: name.to_owned(),
    }
}

fn queue_policy(h: &Harness, name: &str) -> Option<String> {
    h.broker.vhosts()[&root()].queues[&crate::QueueName::from(name)]
        .policy
        .clone()
}

fn max_length(h: &Harness, name: &str) -> Option<u64> {
    h.broker.vhosts()[&root()].queues[&crate::QueueName::from(name)]
        .args
        .max_length
}

#[test]
fn a_max_length_policy_trims_a_full_queue_at_once_and_limits_new_ones() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue("lim-a"));
    h.ok(c, declare_queue("other"));
    for i in 0..5 {
        h.ok(c, publish("", "lim-a", &format!("m{i}")));
        h.ok(c, publish("", "other", &format!("m{i}")));
    }
    h.ok(c, policy("limit", "^lim-", "queues", 0, r#"{"max-length":2}"#));
    assert_eq!(queue_policy(&h, "lim-a").as_deref(), Some("limit"));
    assert_eq!(queue_policy(&h, "other"), None, "the pattern does not match");
    assert_eq!(h.drain(c, "lim-a"), ["m3", "m4"], "drop-head: the oldest went");
    assert_eq!(h.summary("other").messages_ready, 5);

    // A queue declared later gets it too; publishes past it drop the head.
    h.ok(c, declare_queue("lim-b"));
    for i in 0..3 {
        h.ok(c, publish("", "lim-b", &format!("n{i}")));
    }
    assert_eq!(h.drain(c, "lim-b"), ["n1", "n2"]);

    // Deleted: the limit goes with it.
    h.ok(c, delete_policy("limit"));
    assert_eq!(queue_policy(&h, "lim-b"), None);
    assert_eq!(max_length(&h, "lim-b"), None);
    for i in 0..3 {
        h.ok(c, publish("", "lim-b", &format!("o{i}")));
    }
    assert_eq!(h.summary("lim-b").messages_ready, 3);
}

#[test]
fn numeric_limits_take_the_lower_and_a_queue_s_own_dead_letter_exchange_wins() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue_with("low", table(&[("x-max-length", int(1))])));
    h.ok(c, declare_queue_with("high", table(&[("x-max-length", int(50))])));
    h.ok(
        c,
        declare_queue_with("own-dlx", table(&[("x-dead-letter-exchange", text("mine"))])),
    );
    h.ok(
        c,
        policy(
            "p",
            ".*",
            "all",
            0,
            r#"{"max-length":10,"dead-letter-exchange":"theirs"}"#,
        ),
    );
    assert_eq!(max_length(&h, "low"), Some(1));
    assert_eq!(max_length(&h, "high"), Some(10));
    let dlx = |name: &str| {
        h.broker.vhosts()[&root()].queues[&crate::QueueName::from(name)]
            .args
            .dead_letter_exchange
            .as_ref()
            .map(|x| x.as_str().to_owned())
    };
    assert_eq!(dlx("own-dlx").as_deref(), Some("mine"));
    assert_eq!(dlx("high").as_deref(), Some("theirs"));
    // The declared arguments are untouched: a redeclare with them is
    // equivalent, one with the policy's value is not.
    h.ok(c, declare_queue_with("high", table(&[("x-max-length", int(50))])));
    assert!(h
        .call(c, declare_queue_with("high", table(&[("x-max-length", int(10))])))
        .is_err());
}

#[test]
fn the_highest_priority_wins_then_the_first_name_and_apply_to_is_kept() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue("jobs"));
    h.ok(
        c,
        Command::DeclareQueue {
            vhost: root(),
            name: crate::QueueName::from("quorum-jobs"),
            passive: false,
            durable: true,
            exclusive: false,
            auto_delete: false,
            arguments: table(&[("x-queue-type", text("quorum"))]),
        },
    );
    h.ok(c, policy("b-low", "jobs", "queues", 1, r#"{"max-length":1}"#));
    h.ok(c, policy("a-high", "jobs", "queues", 5, r#"{"max-length":5}"#));
    assert_eq!(queue_policy(&h, "jobs").as_deref(), Some("a-high"));
    h.ok(c, policy("c-tie", "jobs", "queues", 5, r#"{"max-length":7}"#));
    assert_eq!(queue_policy(&h, "jobs").as_deref(), Some("a-high"), "ties go by name");
    h.ok(c, policy("z-quorum", "jobs", "quorum_queues", 9, r#"{"max-length":9}"#));
    assert_eq!(queue_policy(&h, "quorum-jobs").as_deref(), Some("z-quorum"));
    assert_eq!(
        queue_policy(&h, "jobs").as_deref(),
        Some("a-high"),
        "not a quorum queue"
    );
    h.ok(c, policy("y-exchanges", "jobs", "exchanges", 99, r#"{"max-length":3}"#));
    assert_eq!(queue_policy(&h, "jobs").as_deref(), Some("a-high"), "exchanges only");
}

#[test]
fn a_policy_s_dead_letter_exchange_and_message_ttl_act() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_exchange("dlx", ExchangeKind::Fanout));
    h.ok(c, declare_queue("dead"));
    h.ok(c, bind("dead", "dlx", ""));
    h.ok(c, declare_queue("work"));
    h.ok(
        c,
        policy(
            "dl",
            "^work$",
            "queues",
            0,
            r#"{"dead-letter-exchange":"dlx","message-ttl":1000}"#,
        ),
    );
    h.ok(c, publish("", "work", "late"));
    h.now_ms += 5_000;
    h.run(None, Command::Tick);
    assert_eq!(h.summary("work").messages_ready, 0, "expired by the policy's TTL");
    assert_eq!(
        h.drain(c, "dead"),
        ["late"],
        "dead-lettered through the policy's exchange"
    );
}

#[test]
fn a_policy_s_alternate_exchange_takes_what_an_exchange_cannot_route() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_exchange("ae", ExchangeKind::Fanout));
    h.ok(c, declare_queue("unrouted"));
    h.ok(c, bind("unrouted", "ae", ""));
    h.ok(c, declare_exchange("orders", ExchangeKind::Direct));
    h.ok(
        c,
        policy("ae", "^orders$", "exchanges", 0, r#"{"alternate-exchange":"ae"}"#),
    );
    let outcome = h.ok(c, publish("orders", "nowhere", "lost?"));
    assert!(
        matches!(outcome, Outcome::Published { routed: true, .. }),
        "{outcome:?}"
    );
    assert_eq!(h.drain(c, "unrouted"), ["lost?"]);
    h.ok(c, delete_policy("ae"));
    let outcome = h.ok(c, publish("orders", "nowhere", "dropped"));
    assert!(
        matches!(outcome, Outcome::Published { routed: false, .. }),
        "{outcome:?}"
    );
}

#[test]
fn policies_follow_a_snapshot_and_the_names_behind_queues_come_back() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue("lim"));
    h.ok(c, declare_exchange("x", ExchangeKind::Direct));
    h.ok(c, policy("p", "^lim$", "queues", 0, r#"{"max-length":3}"#));
    h.ok(c, policy("q", "^x$", "exchanges", 0, r#"{"alternate-exchange":"ae"}"#));
    let bytes = bincode::serialize(&h.broker).expect("encode");
    let mut restored: crate::Broker = bincode::deserialize(&bytes).expect("decode");
    assert_eq!(
        restored.vhosts()[&root()].queues[&crate::QueueName::from("lim")].policy,
        None
    );
    restored.set_policies(h.broker.policies().clone());
    let queue = &restored.vhosts()[&root()].queues[&crate::QueueName::from("lim")];
    assert_eq!(queue.policy.as_deref(), Some("p"));
    assert_eq!(queue.args.max_length, Some(3));
    let exchange = &restored.vhosts()[&root()].exchanges[&crate::ExchangeName::from("x")];
    assert_eq!(exchange.policy.as_deref(), Some("q"));
    assert_eq!(
        exchange.alternate_exchange().map(|x| x.as_str().to_owned()).as_deref(),
        Some("ae")
    );
}

#[test]
fn definitions_are_checked_as_rabbitmq_s_validators_check_them() {
    assert_eq!(
        Definition::parse(r#"{"ha-mode":"all","queue-mode":"lazy"}"#),
        Ok(Definition::default())
    );
    let full = Definition::parse(
        r#"{"message-ttl":0,"expires":1,"max-length":0,"max-length-bytes":18446744073709551615,"overflow":"reject-publish-dlx","dead-letter-exchange":"","dead-letter-routing-key":"ü","alternate-exchange":"ae"}"#,
    )
    .expect("every applied key at its edge");
    assert_eq!(full.max_length_bytes, Some(u64::MAX));
    assert_eq!(full.dead_letter_routing_key.as_deref(), Some("ü"));
    for bad in [
        r#"{"max-length":-1}"#,
        r#"{"max-length":"10"}"#,
        r#"{"message-ttl":1.5}"#,
        r#"{"expires":0}"#,
        r#"{"overflow":"drop-tail"}"#,
        r#"{"dead-letter-exchange":7}"#,
        r#"{"alternate-exchange":null}"#,
        r#"["max-length"]"#,
        "",
        "{",
    ] {
        assert!(Definition::parse(bad).is_err(), "{bad} accepted");
    }
}

#[test]
fn a_policy_whose_merged_arguments_do_not_parse_is_not_applied() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    // A stored definition that no longer validates (written by an older
    // build, say) applies nothing rather than breaking the queue.
    h.ok(c, declare_queue("q"));
    h.ok(c, policy("bad", ".*", "all", 0, r#"{"max-length":"many"}"#));
    assert_eq!(queue_policy(&h, "q"), None);
    assert_eq!(max_length(&h, "q"), None);
}
