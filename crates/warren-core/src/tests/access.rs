//! Users' permissions as replicated state: grants, their removal with the
//! user or the vhost, and the one-time initialization.

use crate::access::{Perm, ResourceKind};
use crate::command::Command;
use crate::error::CoreError;
use crate::ids::{UserName, VHost};
use crate::test_support::{chan, Harness};

fn put_user(h: &mut Harness, name: &str) {
    h.run(
        None,
        Command::PutUser {
            name: UserName::from(name),
            password_hash: "hash".into(),
            tags: Vec::new(),
        },
    );
}

fn set_permissions(user: &str, vhost: &str, patterns: [&str; 3]) -> Command {
    let [configure, write, read] = patterns.map(str::to_owned);
    Command::SetPermissions {
        user: UserName::from(user),
        vhost: VHost::from(vhost),
        configure,
        write,
        read,
    }
}

fn may(h: &Harness, user: &str, vhost: &str, name: &str, perm: Perm) -> bool {
    h.broker
        .access()
        .check(
            &UserName::from(user),
            &VHost::from(vhost),
            ResourceKind::Queue,
            name,
            perm,
        )
        .is_ok()
}

#[test]
fn permissions_are_granted_replaced_and_cleared() {
    let mut h = Harness::new();
    put_user(&mut h, "bob");
    let c = chan(1, 1);
    h.ok(c, set_permissions("bob", "/", ["^bob\\.", "", ".*"]));
    assert!(may(&h, "bob", "/", "bob.jobs", Perm::Configure));
    assert!(!may(&h, "bob", "/", "jobs", Perm::Configure));
    assert!(!may(&h, "bob", "/", "bob.jobs", Perm::Write));
    h.ok(c, set_permissions("bob", "/", ["", ".*", ""]));
    assert!(!may(&h, "bob", "/", "bob.jobs", Perm::Configure), "replaced");
    assert!(may(&h, "bob", "/", "bob.jobs", Perm::Write));
    h.ok(
        c,
        Command::ClearPermissions {
            user: UserName::from("bob"),
            vhost: VHost::from("/"),
        },
    );
    assert!(!h.broker.access().may_open(&UserName::from("bob"), &VHost::from("/")));
}

#[test]
fn grants_to_unknown_users_or_vhosts_and_bad_patterns_are_refused() {
    let mut h = Harness::new();
    put_user(&mut h, "bob");
    let c = chan(1, 1);
    assert_eq!(
        h.call(c, set_permissions("nobody", "/", [".*"; 3])),
        Err(CoreError::NotFound("no user 'nobody'".into()))
    );
    assert_eq!(
        h.call(c, set_permissions("bob", "nowhere", [".*"; 3])),
        Err(CoreError::NotFound("no vhost 'nowhere'".into()))
    );
    let bad = h.call(c, set_permissions("bob", "/", [".*", "(", ".*"]));
    assert!(matches!(bad, Err(CoreError::PreconditionFailed(_))), "{bad:?}");
    assert!(h.broker.access().permissions().next().is_none(), "nothing stored");
}

#[test]
fn deleting_a_user_or_a_vhost_drops_its_grants() {
    let mut h = Harness::new();
    put_user(&mut h, "bob");
    put_user(&mut h, "alice");
    h.run(
        None,
        Command::DeclareVHost {
            vhost: VHost::from("v"),
        },
    );
    let c = chan(1, 1);
    for (user, vhost) in [("bob", "/"), ("bob", "v"), ("alice", "v")] {
        h.ok(c, set_permissions(user, vhost, [".*"; 3]));
    }
    h.run(
        None,
        Command::DeleteVHost {
            vhost: VHost::from("v"),
        },
    );
    let left: Vec<_> = h
        .broker
        .access()
        .permissions()
        .map(|(u, v, _)| (u.to_string(), v.to_string()))
        .collect();
    assert_eq!(left, vec![("bob".to_owned(), "/".to_owned())]);
    h.run(
        None,
        Command::DeleteUser {
            name: UserName::from("bob"),
        },
    );
    assert!(h.broker.access().permissions().next().is_none());
    h.run(
        None,
        Command::DeclareVHost {
            vhost: VHost::from("v"),
        },
    );
    assert!(
        !h.broker.access().may_open(&UserName::from("alice"), &VHost::from("v")),
        "a vhost of the same name starts without grants"
    );
}

#[test]
fn init_access_grants_every_user_every_vhost_once() {
    let mut h = Harness::new();
    put_user(&mut h, "guest");
    h.run(
        None,
        Command::DeclareVHost {
            vhost: VHost::from("v"),
        },
    );
    assert!(!h.broker.access().is_initialized());
    h.run(None, Command::InitAccess);
    assert!(h.broker.access().is_initialized());
    for vhost in ["/", "v"] {
        assert!(may(&h, "guest", vhost, "anything", Perm::Configure));
    }
    h.ok(
        chan(1, 1),
        Command::ClearPermissions {
            user: UserName::from("guest"),
            vhost: VHost::from("v"),
        },
    );
    put_user(&mut h, "late");
    h.run(None, Command::InitAccess);
    assert!(
        !may(&h, "guest", "v", "anything", Perm::Read),
        "a second run grants nothing"
    );
    assert!(!may(&h, "late", "/", "anything", Perm::Read));
}

#[test]
fn policies_are_put_replaced_deleted_and_go_with_their_vhost() {
    use crate::policy::Policy;
    let mut h = Harness::new();
    h.run(
        None,
        Command::DeclareVHost {
            vhost: VHost::from("v"),
        },
    );
    let policy = |vhost: &str, priority: i64| Policy {
        vhost: VHost::from(vhost),
        name: "ttl".into(),
        pattern: ".*".into(),
        apply_to: "queues".into(),
        priority,
        definition: r#"{"message-ttl":1000}"#.into(),
    };
    let c = chan(1, 1);
    h.ok(c, Command::PutPolicy(policy("/", 1)));
    h.ok(c, Command::PutPolicy(policy("/", 2)));
    h.ok(c, Command::PutPolicy(policy("v", 1)));
    assert_eq!(
        h.broker.policies().get(&VHost::from("/"), "ttl").map(|p| p.priority),
        Some(2)
    );
    assert!(matches!(
        h.call(c, Command::PutPolicy(policy("nowhere", 1))),
        Err(CoreError::NotFound(_))
    ));
    let delete = |vhost: &str| Command::DeletePolicy {
        vhost: VHost::from(vhost),
        name: "ttl".into(),
    };
    h.ok(c, delete("/"));
    assert!(matches!(h.call(c, delete("/")), Err(CoreError::NotFound(_))));
    h.run(
        None,
        Command::DeleteVHost {
            vhost: VHost::from("v"),
        },
    );
    assert!(h.broker.policies().iter().next().is_none());
}

#[test]
fn the_first_cluster_id_applied_names_the_cluster_for_good() {
    let mut h = Harness::new();
    assert_eq!(h.broker.cluster_id(), None);
    let set = |id: &str| Command::SetClusterId { id: id.to_owned() };
    h.ok(chan(1, 1), set("first"));
    h.ok(chan(1, 1), set("second"));
    assert_eq!(h.broker.cluster_id(), Some("first"), "later proposals change nothing");
    let mut fresh = Harness::new();
    for bad in [String::new(), "x".repeat(crate::broker::MAX_CLUSTER_ID_LEN + 1)] {
        let refused = fresh.call(chan(1, 1), set(&bad)).expect_err("refused");
        assert_eq!(
            refused.reply_code(),
            crate::reply_code::PRECONDITION_FAILED,
            "{} bytes",
            bad.len()
        );
    }
    assert_eq!(fresh.broker.cluster_id(), None);
    fresh.ok(chan(1, 1), set(&"é".repeat(32)));
    assert_eq!(
        fresh.broker.cluster_id().map(str::len),
        Some(64),
        "64 bytes is the limit"
    );
}
