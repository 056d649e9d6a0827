//! Bodies that arrive in parts (issue 9, item 5; `crate::staged`).

use std::sync::Arc;

use bytes::Bytes;

use crate::test_support::*;
use crate::{Command, Message, Outcome};

fn stage(part: &str, first: bool) -> Command {
    Command::StageBody {
        part: Bytes::copy_from_slice(part.as_bytes()),
        first,
    }
}

fn publish_staged(queue: &str, last: &str, parts: u32, staged_bytes: u64) -> Command {
    Command::PublishStaged {
        vhost: root(),
        mandatory: false,
        message: Arc::new(message("", queue, last)),
        parts,
        staged_bytes,
    }
}

fn rejected() -> Outcome {
    Outcome::Published {
        routed: false,
        rejected: true,
        returned: None,
    }
}

#[test]
fn parts_are_published_as_one_message() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue("q"));
    h.ok(c, stage("ab", true));
    h.ok(c, stage("cd", false));
    assert!(matches!(
        h.call(c, publish_staged("q", "ef", 2, 4)),
        Ok(Outcome::Published {
            routed: true,
            rejected: false,
            ..
        })
    ));
    assert_eq!(h.drain(c, "q"), ["abcdef"]);
    assert!(h.broker.staged_bodies().is_empty(), "nothing left staged");
}

#[test]
fn a_missing_part_rejects_the_message_instead_of_storing_a_hole() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue("q"));
    h.ok(c, stage("ab", true));
    // The second part's batch was lost (a leader change): 1 part of 2.
    assert_eq!(h.call(c, publish_staged("q", "ef", 2, 4)), Ok(rejected()));
    assert_eq!(h.call(c, publish_staged("q", "ef", 1, 3)), Ok(rejected()), "wrong size");
    assert!(h.drain(c, "q").is_empty());
    // The next message starts afresh.
    h.ok(c, stage("xy", true));
    h.ok(c, publish_staged("q", "z", 1, 2));
    assert_eq!(h.drain(c, "q"), ["xyz"]);
}

#[test]
fn a_first_part_drops_what_an_unfinished_message_left() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue("q"));
    h.ok(c, stage("stale", true));
    h.ok(c, stage("ab", true));
    h.ok(c, publish_staged("q", "c", 1, 2));
    assert_eq!(h.drain(c, "q"), ["abc"]);
}

#[test]
fn channels_stage_apart_and_closing_drops_their_parts() {
    let mut h = Harness::new();
    let (a, b) = (chan(1, 1), chan(1, 2));
    let other = chan(2, 1);
    h.ok(a, declare_queue("q"));
    h.ok(a, stage("a1", true));
    h.ok(b, stage("b1", true));
    h.ok(other, stage("o1", true));
    h.ok(b, publish_staged("q", "b2", 1, 2));
    assert_eq!(h.drain(a, "q"), ["b1b2"]);
    h.ok(a, Command::CloseChannel);
    assert_eq!(h.broker.staged_bodies().len(), 1, "only the other connection's is left");
    h.run(None, Command::CloseConnection { conn: other.conn });
    assert!(h.broker.staged_bodies().is_empty());
    assert_eq!(
        h.call(a, publish_staged("q", "x", 1, 2)),
        Ok(rejected()),
        "its parts went with the close"
    );
}

#[test]
fn a_node_restart_drops_the_parts_of_its_old_connections() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, stage("part", true));
    h.run(
        None,
        Command::NodeStarted {
            node: c.conn.node,
            boot: c.conn.boot + 1,
        },
    );
    assert!(h.broker.staged_bodies().is_empty());
}

#[test]
fn staged_bytes_count_toward_the_held_backlog() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, stage("12345", true));
    assert_eq!(h.broker.held_backlog(), (0, 5));
}

#[test]
fn a_mandatory_unroutable_staged_message_is_returned_whole() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, stage("ab", true));
    let command = Command::PublishStaged {
        vhost: root(),
        mandatory: true,
        message: Arc::new(message("", "nowhere", "c")),
        parts: 1,
        staged_bytes: 2,
    };
    match h.call(c, command) {
        Ok(Outcome::Published {
            routed: false,
            returned: Some(returned),
            ..
        }) => {
            let returned: &Message = &returned;
            assert_eq!(&returned.body[..], b"abc");
        }
        other => panic!("{other:?}"),
    }
}
