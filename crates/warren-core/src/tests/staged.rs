//! Bodies that arrive in parts (issue 9, item 5; `crate::staged`).

use std::sync::Arc;

use bytes::Bytes;

use crate::staged::StagedPublish;
use crate::test_support::*;
use crate::{Body, Command, Message, Outcome};

/// Part `index` of message `body`.
fn stage(body: u64, index: u32, part: &str) -> Command {
    Command::StageBody {
        body,
        index,
        part: Bytes::copy_from_slice(part.as_bytes()),
    }
}

fn staged_end(queue: &str, body: u64, last: &str, parts: u32, staged_bytes: u64) -> StagedPublish {
    StagedPublish {
        vhost: root(),
        mandatory: false,
        message: Arc::new(message("", queue, last)),
        body,
        parts,
        staged_bytes,
    }
}

fn publish_staged(queue: &str, body: u64, last: &str, parts: u32, staged_bytes: u64) -> Command {
    Command::PublishStaged(staged_end(queue, body, last, parts, staged_bytes))
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
    h.ok(c, stage(1, 0, "ab"));
    h.ok(c, stage(1, 1, "cd"));
    assert!(matches!(
        h.call(c, publish_staged("q", 1, "ef", 2, 4)),
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
    h.ok(c, stage(1, 0, "ab"));
    // The second part's batch was lost (a leader change): 1 part of 2.
    assert_eq!(h.call(c, publish_staged("q", 1, "ef", 2, 4)), Ok(rejected()));
    h.ok(c, stage(2, 0, "ab"));
    assert_eq!(
        h.call(c, publish_staged("q", 2, "ef", 1, 3)),
        Ok(rejected()),
        "wrong size"
    );
    h.ok(c, stage(3, 0, "ab"));
    h.ok(c, stage(3, 2, "ef"));
    assert_eq!(
        h.call(c, publish_staged("q", 3, "gh", 3, 6)),
        Ok(rejected()),
        "part 1 missing"
    );
    assert!(h.drain(c, "q").is_empty());
    // The next message starts afresh.
    h.ok(c, stage(4, 0, "xy"));
    h.ok(c, publish_staged("q", 4, "z", 1, 2));
    assert_eq!(h.drain(c, "q"), ["xyz"]);
}

/// A review's case: message B's part 0 committed, then a leader change
/// lost B's part 1, B's end and A's part 0; A's part 1 and end came
/// through. Two parts of the same size are staged either way, so counts
/// and sizes alone would publish B0 + A1 + A's end as A, and confirm it.
#[test]
fn parts_of_two_messages_never_make_one() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue("q"));
    h.ok(c, stage(1, 0, "B0"));
    h.ok(c, stage(2, 1, "A1"));
    assert_eq!(h.call(c, publish_staged("q", 2, "A2", 2, 4)), Ok(rejected()));
    assert!(h.drain(c, "q").is_empty());
}

#[test]
fn a_first_part_drops_what_an_unfinished_message_left() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, declare_queue("q"));
    h.ok(c, stage(1, 0, "stale"));
    h.ok(c, stage(2, 0, "ab"));
    h.ok(c, publish_staged("q", 2, "c", 1, 2));
    assert_eq!(h.drain(c, "q"), ["abc"]);
}

#[test]
fn channels_stage_apart_and_closing_drops_their_parts() {
    let mut h = Harness::new();
    let (a, b) = (chan(1, 1), chan(1, 2));
    let other = chan(2, 1);
    h.ok(a, declare_queue("q"));
    h.ok(a, stage(1, 0, "a1"));
    h.ok(b, stage(1, 0, "b1"));
    h.ok(other, stage(1, 0, "o1"));
    h.ok(b, publish_staged("q", 1, "b2", 1, 2));
    assert_eq!(h.drain(a, "q"), ["b1b2"]);
    h.ok(a, Command::CloseChannel);
    assert_eq!(h.broker.staged_bodies().len(), 1, "only the other connection's is left");
    h.run(None, Command::CloseConnection { conn: other.conn });
    assert!(h.broker.staged_bodies().is_empty());
    assert_eq!(
        h.call(a, publish_staged("q", 1, "x", 1, 2)),
        Ok(rejected()),
        "its parts went with the close"
    );
}

#[test]
fn a_node_restart_drops_the_parts_of_its_old_connections() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, stage(1, 0, "part"));
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
    h.ok(c, stage(1, 0, "12345"));
    assert_eq!(h.broker.held_backlog(), (0, 5));
}

#[test]
fn a_mandatory_unroutable_staged_message_is_returned_whole() {
    let mut h = Harness::new();
    let c = chan(1, 1);
    h.ok(c, stage(1, 0, "ab"));
    let command = Command::PublishStaged(StagedPublish {
        mandatory: true,
        ..staged_end("nowhere", 1, "c", 1, 2)
    });
    match h.call(c, command) {
        Ok(Outcome::Published {
            routed: false,
            returned: Some(returned),
            ..
        }) => {
            let returned: &Message = &returned;
            assert_eq!(returned.body, Body::from(&b"abc"[..]));
        }
        other => panic!("{other:?}"),
    }
}
