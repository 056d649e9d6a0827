//! The history the test clients observe, and the checks run on it.
//!
//! Clients append [`Event`]s to one [`Ledger`]; its order is the order in
//! which the events happened in this process (appends are serialized).
//! Events are recorded so that a correct broker can never be flagged:
//! a release (ack, nack, close) is recorded *before* its command is
//! submitted, and a delivery *after* the node applied it, so a delivery
//! the broker makes after a release always lands after it in the ledger.
//! [`check_history`] then looks for:
//!
//! - a confirmed message that was never acked ([`Violation::Lost`]);
//! - a message delivered while another channel still held it
//!   ([`Violation::HeldTwice`]);
//! - a repeat delivery without the `redelivered` flag
//!   ([`Violation::RedeliveredFlagMissing`]);
//! - a delivery after an ack of the message was confirmed
//!   ([`Violation::DeliveredAfterAck`]);
//! - replies no correct broker gives to these clients
//!   ([`Violation::Unexpected`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use warren_core::ChannelId;

/// A test message's identity, carried in its body.
pub type MsgId = u64;

/// Something a test client observed or did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The publish was confirmed (`Published`, routed, not rejected).
    Confirmed { id: MsgId },
    /// The publish's outcome is unknown (`Unavailable`, or no reply).
    Unknown { id: MsgId },
    /// A `Deliver` reached the client on `channel`.
    Delivered {
        id: MsgId,
        channel: ChannelId,
        redelivered: bool,
    },
    /// The client is about to submit an ack or nack of `id` on `channel`:
    /// from here on it no longer counts as holding it.
    Released { id: MsgId, channel: ChannelId },
    /// The ack of `id` on `channel` was confirmed (reply `Ok`).
    Acked { id: MsgId, channel: ChannelId },
    /// The ack of `id` (`delivery_tag` on `channel`) was submitted but
    /// its reply never came (`Unavailable`, the connection broke, the node
    /// stopped). [`check_history`] learns from the cluster whether it took
    /// effect: if it did, the message is consumed; if not, closing the
    /// channel requeued it and it must be delivered (and acked) again.
    AckUnknown {
        id: MsgId,
        channel: ChannelId,
        delivery_tag: u64,
    },
    /// The client gave up `channel` (closed it, lost its connection, its
    /// node was stopped): it holds nothing from here on.
    ChannelGone { channel: ChannelId },
    /// A reply or effect no correct broker sends these clients.
    Unexpected { what: String },
}

impl Event {
    /// The message the event is about, if any.
    pub fn message(&self) -> Option<MsgId> {
        match self {
            Event::Confirmed { id }
            | Event::Unknown { id }
            | Event::Delivered { id, .. }
            | Event::Released { id, .. }
            | Event::Acked { id, .. }
            | Event::AckUnknown { id, .. } => Some(*id),
            Event::ChannelGone { .. } | Event::Unexpected { .. } => None,
        }
    }
}

/// An event and its position in the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub at: u64,
    pub event: Event,
}

/// The shared, append-only history of one test.
#[derive(Debug, Default)]
pub struct Ledger {
    history: Mutex<History>,
    next_id: AtomicU64,
}

#[derive(Debug, Default)]
struct History {
    records: Vec<Record>,
    /// Channels recorded gone: a delivery read from one afterwards (an
    /// effect still queued when its node was killed) never reached the
    /// client, and is not recorded.
    gone: std::collections::HashSet<ChannelId>,
}

impl Ledger {
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh message id (unique within this ledger).
    pub fn next_id(&self) -> MsgId {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Appends `event`; `false` (and nothing recorded) for a delivery on a
    /// channel already recorded gone: the client must treat its connection
    /// as closed.
    pub fn record(&self, event: Event) -> bool {
        let mut history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        match &event {
            Event::Delivered { channel, .. } if history.gone.contains(channel) => return false,
            Event::ChannelGone { channel } => {
                history.gone.insert(*channel);
            }
            _ => {}
        }
        let at = history.records.len() as u64;
        history.records.push(Record { at, event });
        true
    }

    /// A copy of the history so far.
    pub fn records(&self) -> Vec<Record> {
        self.history
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .records
            .clone()
    }

    /// The events that name message `id`, for failure reports.
    pub fn history_of(&self, id: MsgId) -> Vec<Record> {
        self.records()
            .into_iter()
            .filter(|record| record.event.message() == Some(id))
            .collect()
    }

    /// Counts for test logs.
    pub fn summary(&self) -> Summary {
        let records = self.records();
        let mut summary = Summary::default();
        for record in &records {
            match record.event {
                Event::Confirmed { .. } => summary.confirmed += 1,
                Event::Unknown { .. } => summary.unknown += 1,
                Event::Delivered { redelivered, .. } => {
                    summary.delivered += 1;
                    if redelivered {
                        summary.redelivered += 1;
                    }
                }
                Event::Acked { .. } => summary.acked += 1,
                Event::AckUnknown { .. } => summary.ack_unknown += 1,
                Event::ChannelGone { .. } => summary.channels_gone += 1,
                Event::Released { .. } | Event::Unexpected { .. } => {}
            }
        }
        summary
    }
}

/// Event counts of a ledger.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub confirmed: u64,
    pub unknown: u64,
    pub delivered: u64,
    pub redelivered: u64,
    pub acked: u64,
    pub ack_unknown: u64,
    pub channels_gone: u64,
}

/// A broken guarantee found in a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// Confirmed to its publisher, never acked by a consumer (neither a
    /// confirmed ack nor one of unknown outcome that took effect).
    Lost {
        id: MsgId,
    },
    /// Delivered to `to` at `at` while `holders` still held it.
    HeldTwice {
        id: MsgId,
        to: ChannelId,
        holders: Vec<ChannelId>,
        at: u64,
    },
    /// Delivered again at `at` with `redelivered = false`.
    RedeliveredFlagMissing {
        id: MsgId,
        to: ChannelId,
        at: u64,
    },
    /// Delivered at `at`, after its ack was confirmed at `acked_at`.
    DeliveredAfterAck {
        id: MsgId,
        to: ChannelId,
        at: u64,
        acked_at: u64,
    },
    Unexpected {
        what: String,
        at: u64,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Lost { id } => write!(f, "message {id} was confirmed but never acked by a consumer"),
            Violation::HeldTwice { id, to, holders, at } => write!(
                f,
                "#{at}: message {id} delivered to {} while {} still held it",
                show(to),
                holders.iter().map(show).collect::<Vec<_>>().join(", ")
            ),
            Violation::RedeliveredFlagMissing { id, to, at } => write!(
                f,
                "#{at}: message {id} delivered again to {} with redelivered = false",
                show(to)
            ),
            Violation::DeliveredAfterAck { id, to, at, acked_at } => write!(
                f,
                "#{at}: message {id} delivered to {} after its ack was confirmed at #{acked_at}",
                show(to)
            ),
            Violation::Unexpected { what, at } => write!(f, "#{at}: unexpected: {what}"),
        }
    }
}

/// `n<node>/b<boot>/c<seq>/ch<channel>`.
pub fn show(channel: &ChannelId) -> String {
    format!(
        "n{}/b{:x}/c{}/ch{}",
        channel.conn.node.0, channel.conn.boot, channel.conn.seq, channel.channel
    )
}

/// Every violation in `records` (see the module doc). Call it once the
/// system is quiet and the queue was drained: every confirmed message
/// must have been acked by then. `took_effect(channel, delivery_tag)`
/// says whether an ack of unknown outcome was applied: one that was
/// consumes its message from that point of the history on, one that was
/// not consumes nothing (at least once: its message must come back).
pub fn check_history(records: &[Record], took_effect: impl Fn(ChannelId, u64) -> bool) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut confirmed: BTreeSet<MsgId> = BTreeSet::new();
    let mut acked: BTreeMap<MsgId, u64> = BTreeMap::new();
    let mut delivered_before: BTreeSet<MsgId> = BTreeSet::new();
    // Which channels hold each message now, and which messages each channel holds.
    let mut holders: BTreeMap<MsgId, BTreeSet<ChannelId>> = BTreeMap::new();
    let mut held: BTreeMap<ChannelId, BTreeSet<MsgId>> = BTreeMap::new();

    for Record { at, event } in records {
        let at = *at;
        match event {
            Event::Confirmed { id } => {
                confirmed.insert(*id);
            }
            Event::Unknown { .. } => {}
            Event::Delivered {
                id,
                channel,
                redelivered,
            } => {
                if let Some(&acked_at) = acked.get(id) {
                    violations.push(Violation::DeliveredAfterAck {
                        id: *id,
                        to: *channel,
                        at,
                        acked_at,
                    });
                }
                let current = holders.entry(*id).or_default();
                if !current.is_empty() {
                    violations.push(Violation::HeldTwice {
                        id: *id,
                        to: *channel,
                        holders: current.iter().copied().collect(),
                        at,
                    });
                }
                if !delivered_before.insert(*id) && !redelivered {
                    violations.push(Violation::RedeliveredFlagMissing {
                        id: *id,
                        to: *channel,
                        at,
                    });
                }
                current.insert(*channel);
                held.entry(*channel).or_default().insert(*id);
            }
            Event::Released { id, channel } => {
                if let Some(current) = holders.get_mut(id) {
                    current.remove(channel);
                }
                if let Some(ids) = held.get_mut(channel) {
                    ids.remove(id);
                }
            }
            Event::Acked { id, .. } => {
                acked.entry(*id).or_insert(at);
            }
            Event::AckUnknown {
                id,
                channel,
                delivery_tag,
            } => {
                if took_effect(*channel, *delivery_tag) {
                    acked.entry(*id).or_insert(at);
                }
            }
            Event::ChannelGone { channel } => {
                for id in held.remove(channel).unwrap_or_default() {
                    if let Some(current) = holders.get_mut(&id) {
                        current.remove(channel);
                    }
                }
            }
            Event::Unexpected { what } => violations.push(Violation::Unexpected { what: what.clone(), at }),
        }
    }
    violations.extend(
        confirmed
            .into_iter()
            .filter(|id| !acked.contains_key(id))
            .map(|id| Violation::Lost { id }),
    );
    violations
}

#[cfg(test)]
mod tests {
    use warren_core::{ConnectionId, NodeId};

    use super::*;

    fn channel(node: u64, seq: u64) -> ChannelId {
        ChannelId {
            conn: ConnectionId {
                node: NodeId(node),
                boot: 1,
                seq,
            },
            channel: 1,
        }
    }

    fn history(events: Vec<Event>) -> Vec<Record> {
        let ledger = Ledger::new();
        for event in events {
            ledger.record(event);
        }
        ledger.records()
    }

    fn delivered(id: MsgId, channel: ChannelId, redelivered: bool) -> Event {
        Event::Delivered {
            id,
            channel,
            redelivered,
        }
    }

    /// The history's violations when no ack of unknown outcome took effect.
    fn check(records: &[Record]) -> Vec<Violation> {
        check_history(records, |_, _| false)
    }

    /// Delivered, released, acked: the happy path of one message.
    fn consumed(id: MsgId, channel: ChannelId) -> Vec<Event> {
        vec![
            delivered(id, channel, false),
            Event::Released { id, channel },
            Event::Acked { id, channel },
        ]
    }

    #[test]
    fn a_clean_history_passes() {
        let (a, b) = (channel(1, 1), channel(2, 1));
        let mut events = vec![
            Event::Confirmed { id: 1 },
            Event::Confirmed { id: 2 },
            Event::Unknown { id: 3 },
        ];
        events.extend(consumed(1, a));
        // 2 goes to a, a's connection dies, 2 is redelivered to b.
        events.push(delivered(2, a, false));
        events.push(Event::ChannelGone { channel: a });
        events.extend([
            delivered(2, b, true),
            Event::Released { id: 2, channel: b },
            Event::Acked { id: 2, channel: b },
        ]);
        assert_eq!(check(&history(events)), Vec::new());
    }

    #[test]
    fn a_confirmed_message_never_acked_is_lost() {
        let a = channel(1, 1);
        let mut events = vec![Event::Confirmed { id: 1 }, Event::Confirmed { id: 2 }];
        events.extend(consumed(1, a));
        // Delivered but only released (the ack's outcome stayed unknown): still lost.
        events.extend([delivered(2, a, false), Event::Released { id: 2, channel: a }]);
        assert_eq!(check(&history(events)), vec![Violation::Lost { id: 2 }]);
    }

    fn ack_unknown(id: MsgId, channel: ChannelId, delivery_tag: u64) -> Event {
        Event::AckUnknown {
            id,
            channel,
            delivery_tag,
        }
    }

    /// Two messages on one channel, both acks of unknown outcome, then the
    /// channel is gone and nothing comes back.
    fn two_unknown_acks(a: ChannelId) -> Vec<Record> {
        history(vec![
            Event::Confirmed { id: 1 },
            Event::Confirmed { id: 2 },
            delivered(1, a, false),
            Event::Released { id: 1, channel: a },
            delivered(2, a, false),
            Event::Released { id: 2, channel: a },
            ack_unknown(1, a, 1),
            ack_unknown(2, a, 2),
            Event::ChannelGone { channel: a },
        ])
    }

    #[test]
    fn an_ack_of_unknown_outcome_consumes_its_message_only_if_it_took_effect() {
        let a = channel(1, 1);
        let records = two_unknown_acks(a);
        // Only the first ack was applied: the second message had to come
        // back when the channel went, and it did not.
        assert_eq!(
            check_history(&records, |ch, tag| ch == a && tag == 1),
            vec![Violation::Lost { id: 2 }]
        );
        assert_eq!(check_history(&records, |_, _| true), Vec::new());
        assert_eq!(
            check(&records),
            vec![Violation::Lost { id: 1 }, Violation::Lost { id: 2 }]
        );
    }

    #[test]
    fn an_ack_that_did_not_take_effect_is_followed_by_a_redelivery() {
        let (a, b) = (channel(1, 1), channel(2, 1));
        let mut events = two_unknown_acks(a).into_iter().map(|r| r.event).collect::<Vec<_>>();
        events.extend([
            delivered(2, b, true),
            Event::Released { id: 2, channel: b },
            Event::Acked { id: 2, channel: b },
        ]);
        let records = history(events);
        assert_eq!(check_history(&records, |_, tag| tag == 1), Vec::new());
        // Had the second ack taken effect, the redelivery would come after
        // its message was consumed.
        assert!(matches!(
            check_history(&records, |_, _| true).as_slice(),
            [Violation::DeliveredAfterAck { id: 2, .. }]
        ));
    }

    #[test]
    fn an_unknown_publish_need_not_arrive() {
        let events = vec![Event::Unknown { id: 1 }];
        assert_eq!(check(&history(events)), Vec::new());
    }

    #[test]
    fn a_delivery_while_another_channel_holds_the_message_is_flagged() {
        let (a, b) = (channel(1, 1), channel(2, 1));
        let events = vec![
            Event::Confirmed { id: 1 },
            delivered(1, a, false),
            delivered(1, b, true),
        ];
        let violations = check(&history(events));
        assert!(
            violations.contains(&Violation::HeldTwice {
                id: 1,
                to: b,
                holders: vec![a],
                at: 2
            }),
            "{violations:?}"
        );
    }

    #[test]
    fn a_release_of_another_message_does_not_free_the_held_one() {
        let (a, b) = (channel(1, 1), channel(2, 1));
        let events = vec![
            delivered(1, a, false),
            delivered(2, a, false),
            Event::Released { id: 2, channel: a },
            delivered(1, b, true),
        ];
        let violations = check(&history(events));
        assert!(
            matches!(violations.as_slice(), [Violation::HeldTwice { id: 1, .. }]),
            "{violations:?}"
        );
    }

    #[test]
    fn a_requeue_after_a_release_is_no_double_hold_but_needs_the_redelivered_flag() {
        let (a, b) = (channel(1, 1), channel(2, 1));
        let events = vec![
            delivered(1, a, false),
            Event::Released { id: 1, channel: a },
            delivered(1, b, false),
        ];
        assert_eq!(
            check(&history(events)),
            vec![Violation::RedeliveredFlagMissing { id: 1, to: b, at: 2 }]
        );
    }

    #[test]
    fn a_delivery_after_a_confirmed_ack_is_flagged() {
        let (a, b) = (channel(1, 1), channel(2, 1));
        let mut events = consumed(1, a);
        events.push(delivered(1, b, true));
        assert_eq!(
            check(&history(events)),
            vec![Violation::DeliveredAfterAck {
                id: 1,
                to: b,
                at: 3,
                acked_at: 2
            }]
        );
    }

    #[test]
    fn unexpected_replies_are_violations() {
        let events = vec![Event::Unexpected {
            what: "ack refused".to_owned(),
        }];
        assert_eq!(check(&history(events)).len(), 1);
    }

    #[test]
    fn a_delivery_read_after_its_channel_was_recorded_gone_is_not_recorded() {
        let ledger = Ledger::new();
        let a = channel(1, 1);
        assert!(ledger.record(delivered(1, a, false)));
        assert!(ledger.record(Event::ChannelGone { channel: a }));
        assert!(
            !ledger.record(delivered(2, a, false)),
            "the node was killed: never received"
        );
        assert!(ledger.record(delivered(2, channel(2, 1), false)));
        assert_eq!(ledger.records().len(), 3);
    }

    #[test]
    fn the_summary_counts_events() {
        let ledger = Ledger::new();
        for event in consumed(1, channel(1, 1)) {
            ledger.record(event);
        }
        ledger.record(Event::Confirmed { id: 1 });
        let summary = ledger.summary();
        assert_eq!((summary.confirmed, summary.delivered, summary.acked), (1, 1, 1));
    }
}
