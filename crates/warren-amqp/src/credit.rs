//! Consumer credit at the consumer's node (ADR 0026).
//!
//! The core assigns a consumer with a prefetch of `p` up to
//! [`warren_core::assigned_window`]`(p, lookahead)` deliveries (four
//! times `p` from [`warren_core::LOOKAHEAD_FROM`] on, as this build
//! asks), so that the next deliveries are already on this node when the
//! client acks: the client must still see
//! at most `p` unacked at a time. A channel's [`Credit`] decides which
//! deliveries go out now and holds the rest, in delivery-tag order, until
//! the client's acks make room: credit comes back when the ack is read
//! from the socket, not when it commits.
//!
//! Held deliveries were never sent: when they go back to their queues
//! (cancel, recover, channel or connection close) they go back as they
//! were, not redelivered (`Command::ReturnUnsent`).

use std::collections::VecDeque;
use std::sync::Arc;

use foldhash::HashMap;

use warren_core::{ConsumerTag, Message};

/// A delivery the core assigned that the client has not been sent.
#[derive(Debug)]
pub struct HeldDelivery {
    pub consumer_tag: ConsumerTag,
    /// The consumer's id in this channel's [`Credit`].
    pub consumer: ConsumerId,
    pub delivery_tag: u64,
    pub redelivered: bool,
    pub message: Arc<Message>,
}

/// A consumer as its channel's credit knows it: 0 for none (a
/// `basic.get`, or a consumer without a prefetch).
pub type ConsumerId = u32;

/// One consumer's limit and what it has been sent.
#[derive(Debug)]
struct Limit {
    prefetch: u16,
    unacked: u32,
}

/// The client-side prefetch of one channel: what it has been sent and
/// not settled, what it may be sent, and what waits.
#[derive(Debug, Default)]
pub struct Credit {
    /// `basic.qos global=false`: the prefetch of consumers created next.
    consumer_prefetch: u16,
    /// `basic.qos global=true`: a limit on all the channel's unacked.
    channel_prefetch: u16,
    ids: HashMap<String, ConsumerId>,
    limits: HashMap<ConsumerId, Limit>,
    next_id: ConsumerId,
    /// Deliveries and `get-ok`s sent that await a settlement.
    unacked: u32,
    held: VecDeque<HeldDelivery>,
}

impl Credit {
    /// `basic.qos`, in the order the core applies it.
    pub fn qos(&mut self, prefetch: u16, global: bool) {
        if global {
            self.channel_prefetch = prefetch;
        } else {
            self.consumer_prefetch = prefetch;
        }
    }

    /// `basic.consume` of `tag`, in the order the core applies it: it gets
    /// the prefetch in force now (`no_ack` consumers have none).
    pub fn consume(&mut self, tag: &str, no_ack: bool) {
        if no_ack {
            self.ids.remove(tag);
            return;
        }
        self.next_id += 1;
        let id = self.next_id;
        if let Some(old) = self.ids.insert(tag.to_owned(), id) {
            self.limits.remove(&old);
        }
        self.limits.insert(
            id,
            Limit {
                prefetch: self.consumer_prefetch,
                unacked: 0,
            },
        );
    }

    /// The consumer `tag` is gone (cancelled by the client or the server):
    /// its held deliveries are taken out, to be returned to their queues.
    pub fn cancelled(&mut self, tag: &str) -> Vec<u64> {
        let id = self.id_of(tag);
        self.cancelled_id(id, tag)
    }

    /// The consumer that was `id` when its cancel was sent is gone: as
    /// [`Self::cancelled`], but a consumer that has reused `tag` since (a
    /// `basic.consume` sent before the cancel's reply) keeps its limit.
    pub fn cancelled_id(&mut self, id: ConsumerId, tag: &str) -> Vec<u64> {
        if id == 0 {
            return Vec::new();
        }
        let taken = self.take_held_of_id(id);
        self.limits.remove(&id);
        if self.ids.get(tag) == Some(&id) {
            self.ids.remove(tag);
        }
        taken
    }

    /// Takes out the held deliveries of consumer `tag` (its cancel is being
    /// sent: they go back with it); its limit stays until the cancel is
    /// applied.
    pub fn take_held_of(&mut self, tag: &str) -> Vec<u64> {
        match self.ids.get(tag).copied() {
            Some(id) => self.take_held_of_id(id),
            None => Vec::new(),
        }
    }

    fn take_held_of_id(&mut self, id: ConsumerId) -> Vec<u64> {
        let mut taken = Vec::new();
        self.held.retain(|held| {
            let mine = held.consumer == id;
            if mine {
                taken.push(held.delivery_tag);
            }
            !mine
        });
        taken
    }

    /// Takes out every held delivery (the channel closes or recovers).
    pub fn take_all_held(&mut self) -> Vec<u64> {
        self.held.drain(..).map(|held| held.delivery_tag).collect()
    }

    /// Whether `tag` was assigned to this channel but not sent.
    pub fn is_held(&self, tag: u64) -> bool {
        // Held in tag order (deliveries arrive in tag order and leave from
        // the front; a cancel removes some): a search, not a scan per ack.
        self.held.binary_search_by_key(&tag, |held| held.delivery_tag).is_ok()
    }

    /// Whether a settlement of `tag` with `multiple` (tag 0: all) would
    /// cover, in the core, deliveries the client was never sent.
    pub fn covers_held(&self, tag: u64, multiple: bool) -> bool {
        let Some(first) = self.held.front() else {
            return false;
        };
        if multiple {
            tag == 0 || first.delivery_tag < tag
        } else {
            self.is_held(tag)
        }
    }

    /// The id of consumer `tag` (0 if it has no limit here).
    pub fn id_of(&self, tag: &str) -> ConsumerId {
        self.ids.get(tag).copied().unwrap_or(0)
    }

    /// A delivery from the core: `Some` if it may go to the client now
    /// (counted as sent), `None` if it is held behind earlier ones or the
    /// client's prefetch.
    pub fn offer(&mut self, delivery: HeldDelivery) -> Option<HeldDelivery> {
        if self.held.is_empty() && self.may_send(delivery.consumer) {
            self.count_sent(delivery.consumer);
            return Some(delivery);
        }
        self.held.push_back(delivery);
        None
    }

    /// A delivery from the core that must wait whatever the limits say
    /// (the node's delivery fence, ADR 0028): held behind the others.
    pub fn hold(&mut self, delivery: HeldDelivery) {
        self.held.push_back(delivery);
    }

    /// Deliveries are held.
    pub fn holds_any(&self) -> bool {
        !self.held.is_empty()
    }

    /// A `get-ok` sent: it counts against the channel's limit.
    pub fn got(&mut self) {
        self.unacked += 1;
    }

    /// The client settled deliveries sent to `consumers` (one id each; 0
    /// for a `get-ok`).
    pub fn settled(&mut self, consumers: impl IntoIterator<Item = ConsumerId>) {
        for id in consumers {
            self.unacked = self.unacked.saturating_sub(1);
            if let Some(limit) = self.limits.get_mut(&id) {
                limit.unacked = limit.unacked.saturating_sub(1);
            }
        }
    }

    /// `basic.recover` applied: nothing sent awaits a settlement any more.
    pub fn forget_unacked(&mut self) {
        self.unacked = 0;
        for limit in self.limits.values_mut() {
            limit.unacked = 0;
        }
    }

    /// The held deliveries that may go out now, in tag order (counted as
    /// sent). The first that may not stops the rest: tags reach the client
    /// in increasing order, as RabbitMQ sends them.
    pub fn releasable(&mut self) -> Vec<HeldDelivery> {
        let mut out = Vec::new();
        while let Some(first) = self.held.front() {
            if !self.may_send(first.consumer) {
                break;
            }
            let id = first.consumer;
            self.count_sent(id);
            out.extend(self.held.pop_front());
        }
        out
    }

    fn may_send(&self, id: ConsumerId) -> bool {
        let channel_ok = self.channel_prefetch == 0 || self.unacked < u32::from(self.channel_prefetch);
        let consumer_ok = self
            .limits
            .get(&id)
            .is_none_or(|limit| limit.prefetch == 0 || limit.unacked < u32::from(limit.prefetch));
        channel_ok && consumer_ok
    }

    fn count_sent(&mut self, id: ConsumerId) {
        self.unacked += 1;
        if let Some(limit) = self.limits.get_mut(&id) {
            limit.unacked += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(credit: &Credit, consumer: &str, tag: u64) -> HeldDelivery {
        HeldDelivery {
            consumer_tag: ConsumerTag::new(consumer),
            consumer: credit.id_of(consumer),
            delivery_tag: tag,
            redelivered: false,
            message: Arc::new(Message {
                exchange: warren_core::ExchangeName::new(""),
                routing_key: String::new(),
                properties: Arc::default(),
                body: bytes::Bytes::new().into(),
            }),
        }
    }

    fn offer(credit: &mut Credit, consumer: &str, tag: u64) -> bool {
        let d = delivery(credit, consumer, tag);
        credit.offer(d).is_some()
    }

    fn tags(released: Vec<HeldDelivery>) -> Vec<u64> {
        released.into_iter().map(|d| d.delivery_tag).collect()
    }

    #[test]
    fn a_consumer_is_sent_its_prefetch_and_the_rest_waits_for_acks() {
        let mut credit = Credit::default();
        credit.qos(2, false);
        credit.consume("c", false);
        let id = credit.id_of("c");
        assert!(offer(&mut credit, "c", 1));
        assert!(offer(&mut credit, "c", 2));
        assert!(!offer(&mut credit, "c", 3), "past the prefetch: held");
        assert!(!offer(&mut credit, "c", 4));
        assert!(credit.is_held(3) && !credit.is_held(2));
        assert!(tags(credit.releasable()).is_empty(), "no ack yet");
        credit.settled([id]);
        assert_eq!(tags(credit.releasable()), vec![3]);
        credit.settled([id, id]);
        assert_eq!(tags(credit.releasable()), vec![4]);
        assert!(offer(&mut credit, "c", 5), "room again, nothing held: straight out");
        assert!(!offer(&mut credit, "c", 6), "two unacked again");
    }

    #[test]
    fn a_later_delivery_never_overtakes_a_held_one() {
        let mut credit = Credit::default();
        credit.qos(1, false);
        credit.consume("a", false);
        credit.qos(0, false);
        credit.consume("b", false);
        assert!(offer(&mut credit, "a", 1));
        assert!(!offer(&mut credit, "a", 2));
        assert!(!offer(&mut credit, "b", 3), "b has room but 2 is held before it");
        credit.settled([credit.id_of("a")]);
        assert_eq!(tags(credit.releasable()), vec![2, 3]);
    }

    #[test]
    fn the_channel_limit_counts_every_consumer_and_get() {
        let mut credit = Credit::default();
        credit.qos(2, true);
        credit.consume("a", false);
        credit.consume("b", false);
        assert!(offer(&mut credit, "a", 1));
        credit.got();
        assert!(!offer(&mut credit, "b", 3), "a get-ok fills the channel's limit");
        credit.settled([0]);
        assert_eq!(tags(credit.releasable()), vec![3]);
    }

    #[test]
    fn no_ack_consumers_and_unlimited_ones_are_never_held() {
        let mut credit = Credit::default();
        credit.consume("unlimited", false);
        credit.qos(1, false);
        credit.consume("auto", true);
        for tag in 1..100 {
            assert!(offer(&mut credit, "unlimited", tag));
        }
        credit.qos(0, true);
        for tag in 100..200 {
            assert!(offer(&mut credit, "auto", tag));
        }
    }

    #[test]
    fn a_cancel_takes_out_only_that_consumers_held_deliveries() {
        let mut credit = Credit::default();
        credit.qos(1, false);
        credit.consume("a", false);
        credit.consume("b", false);
        assert!(offer(&mut credit, "a", 1));
        assert!(!offer(&mut credit, "a", 2));
        assert!(!offer(&mut credit, "b", 3));
        assert!(!offer(&mut credit, "a", 4));
        assert_eq!(credit.take_held_of("a"), vec![2, 4]);
        assert!(
            !offer(&mut credit, "a", 5),
            "still a's limit until the cancel is applied"
        );
        assert_eq!(credit.cancelled("a"), vec![5]);
        assert_eq!(tags(credit.releasable()), vec![3], "b's is no longer behind a's");
        assert!(
            offer(&mut credit, "a", 6),
            "a straggler of a cancelled consumer goes out"
        );
        assert!(credit.cancelled("a").is_empty(), "once");
        // A tag reused before the old consumer's cancel is applied keeps
        // the new consumer's limit.
        credit.consume("r", false);
        let old = credit.id_of("r");
        credit.consume("r", false);
        assert!(credit.cancelled_id(old, "r").is_empty());
        assert_ne!(credit.id_of("r"), 0, "the new consumer's limit stays");
        assert_eq!(credit.take_all_held(), Vec::<u64>::new());
    }

    #[test]
    fn a_settlement_covers_held_deliveries_only_where_the_core_would() {
        let mut credit = Credit::default();
        credit.qos(1, false);
        credit.consume("c", false);
        assert!(!credit.covers_held(0, true), "nothing held");
        assert!(offer(&mut credit, "c", 1));
        assert!(!offer(&mut credit, "c", 2));
        assert!(!offer(&mut credit, "c", 3));
        assert!(!credit.covers_held(1, false));
        assert!(!credit.covers_held(1, true), "tag 1 with multiple: 1 only");
        assert!(credit.covers_held(2, false));
        assert!(credit.covers_held(5, true), "a get-ok's tag past held ones");
        assert!(credit.covers_held(0, true), "tag 0 with multiple: all");
        assert_eq!(credit.take_all_held(), vec![2, 3]);
        assert!(!credit.covers_held(0, true));
    }

    #[test]
    fn recover_and_a_consumer_tag_reused_start_afresh() {
        let mut credit = Credit::default();
        credit.qos(1, false);
        credit.consume("c", false);
        assert!(offer(&mut credit, "c", 1));
        credit.forget_unacked();
        assert!(offer(&mut credit, "c", 2), "recovered: room again");
        let old = credit.id_of("c");
        credit.cancelled("c");
        credit.consume("c", false);
        let new = credit.id_of("c");
        assert_ne!(new, old);
        assert!(
            offer(&mut credit, "c", 3),
            "the new consumer starts with nothing unacked"
        );
        assert!(!offer(&mut credit, "c", 4));
        credit.settled([old]);
        assert!(
            tags(credit.releasable()).is_empty(),
            "an ack of the old consumer's is not the new one's credit"
        );
        credit.settled([new]);
        assert_eq!(tags(credit.releasable()), vec![4]);
    }
}
