//! Policies applied to queues and exchanges (ADR 0017): what a definition
//! sets, how it meets a queue's own arguments, which policy wins, and what
//! a change does to a queue that already holds messages.

use crate::policy::{Definition, Policy};
use crate::test_support::*;
use crate::{Command, ExchangeKind, Outcome};

/// A policy as builds before ADR 0017 stored it (`PutPolicy`: acting on
/// nothing); [`acting`] for one that acts.
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

fn acting(name: &str, pattern: &str, apply_to: &str, priority: i64, definition: &str) -> Command {
    match policy(name, pattern, apply_to, priority, definition) {
        Command::PutPolicy(p) => Command::SetPolicy(p),
        other => other,
    }
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
    h.ok(c, acting("limit", "^lim-", "queues", 0, r#"{"max-length":2}"#));
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
        acting(
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
    h.ok(c, acting("b-low", "jobs", "queues", 1, r#"{"max-length":1}"#));
    h.ok(c, acting("a-high", "jobs", "queues", 5, r#"{"max-length":5}"#));
    assert_eq!(queue_policy(&h, "jobs").as_deref(), Some("a-high"));
    h.ok(c, acting("c-tie", "jobs", "queues", 5, r#"{"max-length":7}"#));
    assert_eq!(queue_policy(&h, "jobs").as_deref(), Some("a-high"), "ties go by name");
    h.ok(c, acting("z-quorum", "jobs", "quorum_queues", 9, r#"{"max-length":9}"#));
    assert_eq!(queue_policy(&h, "quorum-jobs").as_deref(), Some("z-quorum"));
    assert_eq!(
        queue_policy(&h, "jobs").as_deref(),
        Some("a-high"),
        "not a quorum queue"
    );
    h.ok(c, acting("y-exchanges", "jobs", "exchanges", 99, r#"{"max-length":3}"#));
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
        acting(
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
        acting("ae", "^orders$", "exchanges", 0, r#"{"alternate-exchange":"ae"}"#),
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
    h.ok(c, acting("p", "^lim$", "queues", 0, r#"{"max-length":3}"#));
    h.ok(c, acting("q", "^x$", "exchanges", 0, r#"{"alternate-exchange":"ae"}"#));
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
fn a_stored_definition_that_does_not_parse_applies_nothing() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    // A stored definition that no longer validates (written by an older
    // build, say) applies nothing rather than breaking the queue.
    h.ok(c, declare_queue("q"));
    h.ok(c, acting("bad", ".*", "all", 0, r#"{"max-length":"many"}"#));
    assert_eq!(queue_policy(&h, "q"), None);
    assert_eq!(max_length(&h, "q"), None);
}

fn set_policy(name: &str, pattern: &str, definition: &str) -> Command {
    match policy(name, pattern, "all", 0, definition) {
        Command::PutPolicy(p) => Command::SetPolicy(p),
        other => other,
    }
}

#[test]
fn a_policy_stored_by_an_older_build_acts_on_nothing_until_set_again() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue("q"));
    // `PutPolicy` is what builds before ADR 0017 wrote: stored only.
    h.ok(c, policy("old", "^q$", "queues", 0, r#"{"max-length":1}"#));
    assert!(!h.broker.policies().acts(&root(), "old"));
    assert_eq!(queue_policy(&h, "q"), None);
    assert_eq!(max_length(&h, "q"), None);
    h.ok(c, set_policy("old", "^q$", r#"{"max-length":1}"#));
    assert!(h.broker.policies().acts(&root(), "old"));
    assert_eq!(max_length(&h, "q"), Some(1));
    // Replaced by a store-only one: it stops acting.
    h.ok(c, policy("old", "^q$", "queues", 0, r#"{"max-length":1}"#));
    assert_eq!(max_length(&h, "q"), None);
}

#[test]
fn an_empty_pattern_matches_every_name_and_a_lone_routing_key_does_not_sink_the_policy() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue("any-name"));
    h.ok(
        c,
        set_policy("everything", "", r#"{"max-length":4,"dead-letter-routing-key":"k"}"#),
    );
    assert_eq!(queue_policy(&h, "any-name").as_deref(), Some("everything"));
    assert_eq!(max_length(&h, "any-name"), Some(4), "the limit applies without a DLX");
    let args = &h.broker.vhosts()[&root()].queues[&crate::QueueName::from("any-name")].args;
    assert_eq!(args.dead_letter_routing_key, None);
}

#[test]
fn an_expires_policy_starts_an_idle_queue_s_lease_when_it_is_set() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue("idle"));
    h.ok(c, publish("", "idle", "kept"));
    h.now_ms += 24 * 3600 * 1000;
    h.ok(c, set_policy("cleanup", "^idle$", r#"{"expires":3600000}"#));
    h.now_ms += 1000;
    h.run(None, Command::Tick);
    assert!(h.has_queue("idle"), "a day idle, but the hour starts now");
    h.now_ms += 3600 * 1000;
    h.run(None, Command::Tick);
    assert!(!h.has_queue("idle"), "an hour later it expires");
}

/// Replaying the log and restoring a snapshot taken anywhere in it, then
/// replaying the rest, give the same broker — policies acting or not, and
/// the names behind queues and exchanges included.
#[test]
fn a_snapshot_restored_anywhere_and_the_log_replayed_equal_the_replay() {
    let c = chan(1, 1);
    let log: Vec<Command> = vec![
        declare_queue("jobs.a"),
        declare_exchange("ae", ExchangeKind::Fanout),
        declare_exchange("orders", ExchangeKind::Direct),
        publish("", "jobs.a", "1"),
        publish("", "jobs.a", "2"),
        policy("stored", "^jobs", "queues", 9, r#"{"max-length":1}"#),
        publish("", "jobs.a", "3"),
        set_policy("limit", "^jobs", r#"{"max-length":2,"expires":60000}"#),
        set_policy("ae", "^orders$", r#"{"alternate-exchange":"ae"}"#),
        publish("", "jobs.a", "4"),
        declare_queue("jobs.b"),
        publish("orders", "none", "5"),
        delete_policy("stored"),
        publish("", "jobs.b", "6"),
        set_policy("limit", "^jobs", r#"{"max-length":1}"#),
        delete_policy("ae"),
        publish("", "jobs.a", "7"),
    ];
    let replay = |from: Harness, commands: &[Command]| {
        let mut h = from;
        for (i, command) in commands.iter().enumerate() {
            h.now_ms += 10 + i as u64;
            h.run(Some(c), command.clone());
        }
        h
    };
    let whole = replay(Harness::new(), &log);
    for cut in 0..=log.len() {
        let before = replay(Harness::new(), &log[..cut]);
        // What a snapshot carries: the broker, the policies, and which act
        // (each in its own encoding, as the state machine writes them),
        // and the log's time.
        let broker: Vec<u8> = bincode::serialize(&before.broker).expect("broker");
        let policies: Vec<u8> = bincode::serialize(before.broker.policies()).expect("policies");
        let acting = before.broker.policies().acting().clone();
        let mut restored: crate::Broker = bincode::deserialize(&broker).expect("broker");
        let mut carried: crate::policy::Policies = bincode::deserialize(&policies).expect("policies");
        carried.set_acting(acting);
        restored.set_policies(carried);
        restored.set_log_time_ms(before.broker.log_time_ms());
        let mut h = Harness::new();
        h.broker = restored;
        h.now_ms = before.now_ms;
        // The replay's clock goes on from where it was.
        let mut after = h;
        for (i, command) in log[cut..].iter().enumerate() {
            after.now_ms += 10 + (cut + i) as u64;
            after.run(Some(c), command.clone());
        }
        assert_eq!(after.broker, whole.broker, "cut at {cut}");
        for vhost in whole.broker.vhosts().values() {
            for (name, queue) in &vhost.queues {
                let other = &after.broker.vhosts()[&root()].queues[name];
                assert_eq!(other.policy, queue.policy, "cut at {cut}: queue {name}");
                assert_eq!(other.args, queue.args, "cut at {cut}: queue {name}");
                assert_eq!(other.last_used_ms, queue.last_used_ms, "cut at {cut}: queue {name}");
            }
            for (name, exchange) in &vhost.exchanges {
                let other = &after.broker.vhosts()[&root()].exchanges[name];
                assert_eq!(other.policy, exchange.policy, "cut at {cut}: exchange {name}");
                assert_eq!(other.policy_alternate, exchange.policy_alternate, "cut at {cut}");
            }
        }
    }
}
