//! Which of this node's proposer batches still await their outcome, and
//! the rule that answers them: every request gets exactly one reply, and
//! the replies to one channel go out in the order its requests were
//! submitted.
//!
//! The order matters because the AMQP front end matches replies to
//! requests by order (ADR 0002), and publisher confirms are coalesced into
//! `basic.ack` with `multiple` set. If the `Unavailable` replies of batch 2
//! went out before the broker replies of batch 1, batch 1's replies would
//! answer batch 2's publishes: a publish that was never committed would be
//! confirmed (and lost), and one that was committed nacked. That happened:
//! a leader that stepped down had batch 1 in its log, uncommitted, and
//! batch 2 rejected at once with `ForwardToLeader`; batch 1 was then
//! committed by the next term.
//!
//! So a batch's outcome is settled by whichever comes first — apply (the
//! broker's replies) or the proposer learning that the commit failed or is
//! unknown (`Unavailable`) — but replies are written out strictly in batch
//! order, under one lock:
//!
//! - a failed batch's `Unavailable` replies wait until every earlier batch
//!   has been answered;
//! - when batch `n` applies, every earlier batch still waiting never will
//!   (one run's batches reach the log in sequence order, and `sessions.rs`
//!   skips a late copy), so they are answered `Unavailable` first;
//! - a batch marked failed whose replies are still held back and that then
//!   applies gets the broker's replies: its true outcome.
//!
//! A follower that installs a snapshot skips the entries it covers, so
//! their replies would never come: installing fails every batch still in
//! flight ([`ProposalTracker::settle_all_failed`]).

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use warren_core::{ChannelId, CoreError, Effect};

use crate::effect_sink::EffectSink;
use crate::type_config::ProposalTag;

/// One batch of this run that has not been answered yet.
struct Waiting {
    /// The channels (of this node) its requests came from, in order.
    origins: Vec<ChannelId>,
    /// Set once the proposer found its commit failed or unknown; its
    /// `Unavailable` replies go out when every earlier batch is answered.
    failed: Option<String>,
}

/// The batches this run of this node's proposer has submitted and not yet
/// answered (see the module docs for the rule).
pub(crate) struct ProposalTracker {
    pub(crate) node: u64,
    pub(crate) incarnation: u64,
    /// Batch seq → what it waits for.
    in_flight: Mutex<BTreeMap<u64, Waiting>>,
}

impl ProposalTracker {
    pub(crate) fn new(node: u64) -> Self {
        Self {
            node,
            incarnation: rand::random(),
            in_flight: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Waiting>> {
        self.in_flight.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records batch `seq`, whose requests came from `origins`.
    pub(crate) fn register(&self, seq: u64, origins: Vec<ChannelId>) -> ProposalTag {
        self.lock().insert(seq, Waiting { origins, failed: None });
        ProposalTag {
            node: self.node,
            incarnation: self.incarnation,
            seq,
        }
    }

    /// Called by the proposer when batch `seq`'s commit failed or its
    /// outcome is unknown. Its `Unavailable` replies go to `sink` now, or
    /// once every earlier batch is answered. `true` if this settled the
    /// batch (it had neither applied nor failed before).
    pub(crate) fn fail(&self, seq: u64, reason: &str, sink: &dyn EffectSink) -> bool {
        let mut in_flight = self.lock();
        let Some(waiting) = in_flight.get_mut(&seq) else {
            return false;
        };
        if waiting.failed.is_some() {
            return false;
        }
        waiting.failed = Some(reason.to_owned());
        emit(sink, answer_failed_front(&mut in_flight));
        true
    }

    /// Fails every batch in flight (a snapshot was installed), answering
    /// them in order; returns how many requests were answered.
    pub(crate) fn settle_all_failed(&self, reason: &str, sink: &dyn EffectSink) -> usize {
        let mut in_flight = self.lock();
        let all = std::mem::take(&mut *in_flight);
        let replies: Vec<Effect> = all
            .into_values()
            .flat_map(|waiting| unavailable_replies(waiting.origins, waiting.failed.as_deref().unwrap_or(reason)))
            .collect();
        let answered = replies.len();
        emit(sink, replies);
        answered
    }

    /// Called by apply with the effects of the batch tagged `tag`: emits
    /// those for this node's connections, in order after the replies of
    /// every earlier batch of this run. The broker's replies are dropped if
    /// the batch was already answered `Unavailable`.
    pub(crate) fn applied(&self, tag: Option<&ProposalTag>, mut effects: Vec<Effect>, sink: &dyn EffectSink) {
        let node = self.node;
        let ours = |effect: &Effect| effect.channel().conn.node.0 == node;
        let Some(tag) = tag.filter(|tag| tag.node == self.node && tag.incarnation == self.incarnation) else {
            // Another node's batch, or one of an earlier run of this node:
            // no request of a live connection here waits for its replies.
            effects.retain(ours);
            emit(sink, effects);
            return;
        };
        let mut in_flight = self.lock();
        let later = in_flight.split_off(&tag.seq);
        let never_applied = std::mem::replace(&mut *in_flight, later);
        let mut out: Vec<Effect> = never_applied
            .into_values()
            .flat_map(|waiting| {
                let reason = waiting
                    .failed
                    .unwrap_or_else(|| "a later batch of this node was committed before it".to_owned());
                unavailable_replies(waiting.origins, &reason)
            })
            .collect();
        let replies_go_out = in_flight.remove(&tag.seq).is_some();
        effects.retain(|effect| ours(effect) && (replies_go_out || !matches!(effect, Effect::Reply { .. })));
        if out.is_empty() {
            // The usual case: no earlier batch failed; nothing to copy.
            out = effects;
        } else {
            out.extend(effects);
        }
        out.extend(answer_failed_front(&mut in_flight));
        emit(sink, out);
    }
}

/// Removes the failed batches at the front of `in_flight` (those with no
/// earlier batch still waiting) and returns their `Unavailable` replies.
fn answer_failed_front(in_flight: &mut BTreeMap<u64, Waiting>) -> Vec<Effect> {
    let mut replies = Vec::new();
    while let Some(entry) = in_flight.first_entry() {
        if entry.get().failed.is_none() {
            break;
        }
        let waiting = entry.remove();
        replies.extend(unavailable_replies(
            waiting.origins,
            waiting.failed.as_deref().unwrap_or_default(),
        ));
    }
    replies
}

fn emit(sink: &dyn EffectSink, effects: Vec<Effect>) {
    if !effects.is_empty() {
        sink.emit(effects);
    }
}

/// `Unavailable` replies to `origins`, one each.
pub(crate) fn unavailable_replies(origins: Vec<ChannelId>, reason: &str) -> Vec<Effect> {
    origins
        .into_iter()
        .map(|channel| Effect::Reply {
            channel,
            outcome: Err(CoreError::Unavailable(format!("command not committed: {reason}"))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use warren_core::{ConnectionId, NodeId, Outcome};

    use super::*;

    /// Records what was emitted, as (channel number, ok?) in order.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<(u16, bool)>>);

    impl EffectSink for Recorder {
        fn emit(&self, effects: Vec<Effect>) {
            let mut seen = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            for effect in effects {
                if let Effect::Reply { channel, outcome } = effect {
                    seen.push((channel.channel, outcome.is_ok()));
                }
            }
        }
    }

    impl Recorder {
        fn take(&self) -> Vec<(u16, bool)> {
            std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
        }
    }

    fn channel(node: u64, channel: u16) -> ChannelId {
        ChannelId {
            conn: ConnectionId {
                node: NodeId(node),
                boot: 1,
                seq: 1,
            },
            channel,
        }
    }

    /// The broker's reply to a request of `channel` on node 1.
    fn done(number: u16) -> Effect {
        Effect::Reply {
            channel: channel(1, number),
            outcome: Ok(Outcome::Done),
        }
    }

    #[test]
    fn a_batch_applied_before_its_failure_report_keeps_the_broker_replies() {
        let (tracker, sink) = (ProposalTracker::new(1), Recorder::default());
        let tag = tracker.register(1, vec![channel(1, 1)]);
        tracker.applied(Some(&tag), vec![done(1)], &sink);
        assert_eq!(sink.take(), [(1, true)]);
        assert!(!tracker.fail(1, "timeout", &sink), "already settled");
        assert_eq!(sink.take(), [], "no Unavailable reply after the broker's");
    }

    #[test]
    fn a_batch_reported_failed_before_it_applies_loses_its_broker_replies() {
        let (tracker, sink) = (ProposalTracker::new(1), Recorder::default());
        let tag = tracker.register(1, vec![channel(1, 1)]);
        assert!(tracker.fail(1, "timeout", &sink));
        assert_eq!(sink.take(), [(1, false)]);
        tracker.applied(Some(&tag), vec![done(1)], &sink);
        assert_eq!(sink.take(), [], "the broker replies are suppressed");
    }

    /// The lost-confirm bug: batch 2 is rejected at once while batch 1 is
    /// still in the log waiting for its commit. Batch 2's failure must not
    /// reach the channel before batch 1's replies.
    #[test]
    fn a_later_batch_that_fails_first_is_answered_after_the_earlier_one() {
        let (tracker, sink) = (ProposalTracker::new(1), Recorder::default());
        let first = tracker.register(1, vec![channel(1, 1)]);
        tracker.register(2, vec![channel(1, 1)]);
        assert!(tracker.fail(2, "ForwardToLeader", &sink));
        assert_eq!(sink.take(), [], "held back: batch 1 is not answered yet");
        tracker.applied(Some(&first), vec![done(1)], &sink);
        assert_eq!(
            sink.take(),
            [(1, true), (1, false)],
            "batch 1's reply, then batch 2's failure"
        );
    }

    #[test]
    fn a_batch_applied_while_earlier_ones_wait_answers_those_unavailable_first() {
        let (tracker, sink) = (ProposalTracker::new(1), Recorder::default());
        tracker.register(1, vec![channel(1, 1)]);
        tracker.register(2, vec![channel(1, 2)]);
        let third = tracker.register(3, vec![channel(1, 3)]);
        tracker.register(4, vec![channel(1, 4)]);
        tracker.applied(Some(&third), vec![done(3)], &sink);
        assert_eq!(sink.take(), [(1, false), (2, false), (3, true)]);
        assert!(!tracker.fail(1, "late report", &sink), "batch 1 was answered already");
        assert!(tracker.fail(4, "timeout", &sink));
        assert_eq!(sink.take(), [(4, false)], "nothing earlier waits: out at once");
    }

    #[test]
    fn a_failed_batch_held_back_that_then_applies_gets_its_true_outcome() {
        let (tracker, sink) = (ProposalTracker::new(1), Recorder::default());
        let first = tracker.register(1, vec![channel(1, 1)]);
        let second = tracker.register(2, vec![channel(1, 2)]);
        tracker.register(3, vec![channel(1, 3)]);
        assert!(tracker.fail(2, "timeout", &sink));
        assert!(tracker.fail(3, "timeout", &sink));
        assert_eq!(sink.take(), []);
        tracker.applied(Some(&first), vec![done(1)], &sink);
        assert_eq!(sink.take(), [(1, true), (2, false), (3, false)]);
        tracker.applied(Some(&second), vec![done(2)], &sink);
        assert_eq!(sink.take(), [], "answered Unavailable already");

        let (tracker, sink) = (ProposalTracker::new(1), Recorder::default());
        tracker.register(1, vec![channel(1, 1)]);
        let second = tracker.register(2, vec![channel(1, 2)]);
        assert!(tracker.fail(2, "timeout", &sink));
        tracker.applied(Some(&second), vec![done(2)], &sink);
        assert_eq!(
            sink.take(),
            [(1, false), (2, true)],
            "held back, then applied: the broker's reply"
        );
    }

    #[test]
    fn a_snapshot_install_fails_every_batch_in_flight_once_and_in_order() {
        let (tracker, sink) = (ProposalTracker::new(1), Recorder::default());
        let first = tracker.register(1, vec![channel(1, 1)]);
        tracker.register(2, vec![channel(1, 2), channel(1, 3)]);
        assert!(tracker.fail(2, "timeout", &sink));
        assert_eq!(tracker.settle_all_failed("snapshot", &sink), 3);
        assert_eq!(sink.take(), [(1, false), (2, false), (3, false)]);
        tracker.applied(Some(&first), vec![done(1)], &sink);
        assert_eq!(sink.take(), [], "a batch answered Unavailable gets no broker replies");
        assert!(!tracker.fail(2, "again", &sink), "nor a second failure");
    }

    #[test]
    fn batches_of_other_nodes_and_earlier_runs_pass_this_nodes_effects_through() {
        let (tracker, sink) = (ProposalTracker::new(1), Recorder::default());
        tracker.register(1, vec![channel(1, 1)]);
        let other_node = ProposalTag {
            node: 2,
            incarnation: tracker.incarnation,
            seq: 5,
        };
        let earlier_run = ProposalTag {
            node: 1,
            incarnation: tracker.incarnation.wrapping_add(1),
            seq: 5,
        };
        let foreign = Effect::Reply {
            channel: channel(2, 9),
            outcome: Ok(Outcome::Done),
        };
        tracker.applied(Some(&other_node), vec![done(7), foreign], &sink);
        tracker.applied(Some(&earlier_run), vec![done(8)], &sink);
        tracker.applied(None, vec![done(9)], &sink);
        assert_eq!(
            sink.take(),
            [(7, true), (8, true), (9, true)],
            "only node 1's, and batch 1 still waits"
        );
        assert!(tracker.fail(1, "timeout", &sink));
        assert_eq!(sink.take(), [(1, false)]);
    }
}
