//! A connection's view of one channel number: whether it is open, the
//! replies it still awaits from the core (in order), confirm mode, and the
//! content of a publish being assembled.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::BytesMut;
use warren_core::tx::{TxPublish, TxSettle, TxSettleKind};
use warren_core::{Command, DeliveryTag};

use warren_core::QueueName;
use warren_wire::protocol::basic::AMQPProperties;

use crate::credit::{ConsumerId, Credit};

/// How many writes (or body bytes) of a `no_ack` consumer's deliveries go
/// into one report to the core: an eighth of its window, so that it never
/// waits for one.
const NO_ACK_REPORT: u32 = warren_core::NO_ACK_WINDOW / 8;
const NO_ACK_REPORT_BYTES: u64 = warren_core::NO_ACK_WINDOW_BYTES / 8;

/// Where a channel number stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelState {
    /// Not open (never opened, or closed and acknowledged).
    Closed,
    Open,
    /// The client sent `channel.close`; `close-ok` goes out once the core
    /// has applied the close.
    ClosingByClient,
    /// The server sent `channel.close`; everything but `close-ok` (and a
    /// crossing `channel.close`) from the client is ignored.
    ClosedByServer,
}

/// What a request sent to the core is waiting for. The core replies to each
/// request exactly once and in order, so a FIFO per channel matches replies
/// to requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pending {
    /// A publish; `confirm_seq` is its publisher-confirm sequence number.
    Publish {
        confirm_seq: Option<u64>,
    },
    ExchangeDeclare {
        nowait: bool,
    },
    ExchangeDelete {
        nowait: bool,
    },
    ExchangeBind {
        nowait: bool,
    },
    ExchangeUnbind {
        nowait: bool,
    },
    QueueDeclare {
        nowait: bool,
    },
    QueueBind {
        nowait: bool,
    },
    QueueUnbind,
    QueuePurge {
        nowait: bool,
    },
    QueueDelete {
        nowait: bool,
    },
    Qos,
    Consume {
        nowait: bool,
        no_ack: bool,
    },
    Cancel {
        nowait: bool,
        /// The consumer's id in the channel's credit when the cancel was sent.
        consumer: ConsumerId,
    },
    /// A report of a `no_ack` consumer's writes (`Command::Written`): sent
    /// again if it fails, or the consumer's window would stay used.
    Written {
        consumer_tag: warren_core::ConsumerTag,
        count: u32,
        bytes: u64,
    },
    /// Held deliveries sent back (`Command::ReturnUnsent` with nothing
    /// after): sent again if it fails, or they would stay assigned.
    Unsent {
        tags: Vec<u64>,
    },
    Get {
        no_ack: bool,
    },
    /// ack, nack, reject: no reply on success.
    Settle {
        method_id: u16,
    },
    Recover {
        send_ok: bool,
    },
    /// `tx.commit`: send the returns, then `commit-ok`, when applied.
    TxCommit,
    /// The client's `channel.close`: send `close-ok` when applied.
    ChannelClose,
    /// The close the server issued after a channel error: when applied,
    /// deliveries of the closed incarnation have all been seen and dropped.
    ServerClose,
    /// The client's `connection.close` (sent on channel 0): send
    /// `connection.close-ok` when applied.
    ConnectionClose,
    /// A request of an earlier incarnation of this channel number, or the
    /// close the server issued: its reply is dropped.
    Discard,
}

impl Pending {
    /// (class id, method id) of the method that made this request, for the
    /// `channel.close` that reports its failure.
    pub fn method_ids(&self) -> (u16, u16) {
        match self {
            Pending::Publish { .. } => (60, 40),
            Pending::ExchangeDeclare { .. } => (40, 10),
            Pending::ExchangeDelete { .. } => (40, 20),
            Pending::ExchangeBind { .. } => (40, 30),
            Pending::ExchangeUnbind { .. } => (40, 40),
            Pending::QueueDeclare { .. } => (50, 10),
            Pending::QueueBind { .. } => (50, 20),
            Pending::QueuePurge { .. } => (50, 30),
            Pending::QueueDelete { .. } => (50, 40),
            Pending::QueueUnbind => (50, 50),
            Pending::Qos => (60, 10),
            Pending::Consume { .. } => (60, 20),
            Pending::Cancel { .. } => (60, 30),
            Pending::Written { .. } | Pending::Unsent { .. } => (60, 0),
            Pending::Get { .. } => (60, 70),
            Pending::Settle { method_id } => (60, *method_id),
            Pending::Recover { .. } => (60, 110),
            Pending::TxCommit => (90, 20),
            Pending::ChannelClose | Pending::ServerClose => (20, 40),
            Pending::ConnectionClose => (10, 50),
            Pending::Discard => (0, 0),
        }
    }
}

/// A `basic.publish` whose content is being received.
#[derive(Debug)]
pub struct PartialContent {
    pub exchange: String,
    pub routing_key: String,
    pub mandatory: bool,
    /// Set once the content header arrived.
    pub header: Option<(AMQPProperties, u64)>,
    pub body: BytesMut,
    /// `body`'s bytes, counted in the node's total of partly received
    /// bodies (the memory alarm's) for as long as this content lives.
    pub held: HeldBytes,
}

/// A share of a node-wide byte count, given back when dropped: however a
/// partly received body goes (completed, channel closed, connection lost),
/// the total stays right.
#[derive(Debug)]
pub struct HeldBytes {
    total: std::sync::Arc<std::sync::atomic::AtomicU64>,
    mine: u64,
}

impl HeldBytes {
    pub fn new(total: std::sync::Arc<std::sync::atomic::AtomicU64>) -> Self {
        Self { total, mine: 0 }
    }

    pub fn add(&mut self, bytes: u64) {
        self.mine += bytes;
        self.total.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for HeldBytes {
    fn drop(&mut self) {
        self.total.fetch_sub(self.mine, std::sync::atomic::Ordering::Relaxed);
    }
}

/// One channel number of a connection.
/// A connection's channels by number. foldhash, not the standard
/// SipHash: the connection looks its channel up about five times a
/// message (each frame, the publish, the delivery), and with SipHash
/// those lookups were 9 % of a node's instructions per message
/// (callgrind, 16 B transient messages). foldhash is seeded at random per
/// map, so a client cannot choose channel numbers that collide.
pub type ChannelMap = foldhash::HashMap<u16, ChannelSlot>;

#[derive(Debug)]
pub struct ChannelSlot {
    pub state: ChannelState,
    pub pending: VecDeque<Pending>,
    /// Deliveries are dropped until the core's reply to this channel's close
    /// arrives: they belong to the incarnation being closed, and the core
    /// requeues them when it applies the close.
    pub draining: bool,
    pub confirm: bool,
    pub next_confirm_seq: u64,
    /// The number of the last message sent to the core in parts.
    pub next_staged_body: u64,
    pub content: Option<PartialContent>,
    /// For methods that name the queue as "": the last queue declared here.
    pub last_queue: Option<QueueName>,
    /// Consumers of this incarnation that do not ack (for the counters).
    pub auto_ack_consumers: foldhash::HashSet<String>,
    /// Delivery tags sent that await an ack, in increasing order, each with
    /// the consumer it went to (0 for a `get-ok`): for the client-side
    /// prefetch, and the `acknowledged` counter (an ack with `multiple`
    /// settles a run).
    pub manual_tags: VecDeque<(u64, ConsumerId)>,
    /// What the client may be sent now, and the deliveries held until it
    /// may (ADR 0026).
    pub credit: Credit,
    /// The consumers of the settlements in a `tx.commit` under way: their
    /// credit comes back with its reply.
    pub committing_settles: Vec<ConsumerId>,
    /// Deliveries of each `no_ack` consumer written since the last report
    /// to the core (see [`Self::count_no_ack_written`]).
    pub no_ack_written: foldhash::HashMap<String, (u32, u64)>,
    /// When each delivery in `manual_tags` was sent, in tag order, for the
    /// consumer timeout; entries of settled tags are dropped lazily (those
    /// below the oldest outstanding tag).
    pub delivered_at: VecDeque<(u64, Instant)>,
    /// This incarnation has published (it counts as a publisher).
    pub published: bool,
    /// Set by `tx.select`: the transaction in progress.
    pub tx: Option<TxBuffer>,
    /// A `tx.commit` is under way: until its reply, any other method on
    /// the channel is RabbitMQ's 504 `unexpected command while processing
    /// 'tx.commit'`.
    pub committing: bool,
    /// A `tx.commit` waiting for the replies to requests sent before it:
    /// sent only if none of them failed, since a failure closes the
    /// channel and the client then takes the transaction as not done.
    pub deferred_commit: Option<warren_core::Command>,
}

/// What a settlement outside a transaction comes to (see
/// [`ChannelSlot::settle`]).
#[derive(Debug, PartialEq)]
pub struct Settled {
    /// For the core, in order.
    pub commands: Vec<Command>,
    /// How many deliveries the client had that it covers.
    pub taken: u64,
}

/// A transactional channel's publishes and settlements since its last
/// commit or rollback, held until `tx.commit` sends them to the core as
/// one command (ADR 0020).
#[derive(Debug)]
pub struct TxBuffer {
    pub publishes: Vec<TxPublish>,
    pub settles: Vec<TxSettle>,
    /// The delivery tags `settles` took from `manual_tags`, given back on
    /// rollback.
    pub settled_tags: Vec<(u64, ConsumerId)>,
    /// Its size as counted against the connection's `TX_MAX_BYTES`
    /// (bodies, encoded properties, names, a fixed cost an item), counted
    /// with the node's partly received bodies (the memory alarm's).
    pub held: HeldBytes,
}

impl TxBuffer {
    pub fn new(total: std::sync::Arc<std::sync::atomic::AtomicU64>) -> Self {
        Self {
            publishes: Vec::new(),
            settles: Vec::new(),
            settled_tags: Vec::new(),
            held: HeldBytes::new(total),
        }
    }

    /// Its size so far (see `held`).
    pub fn bytes(&self) -> u64 {
        self.held.mine
    }
}

impl Default for ChannelSlot {
    fn default() -> Self {
        Self {
            state: ChannelState::Closed,
            pending: VecDeque::new(),
            draining: false,
            confirm: false,
            next_confirm_seq: 1,
            next_staged_body: 0,
            content: None,
            last_queue: None,
            auto_ack_consumers: foldhash::HashSet::default(),
            manual_tags: VecDeque::new(),
            credit: Credit::default(),
            committing_settles: Vec::new(),
            no_ack_written: foldhash::HashMap::default(),
            delivered_at: VecDeque::new(),
            published: false,
            tx: None,
            committing: false,
            deferred_commit: None,
        }
    }
}

impl ChannelSlot {
    /// Opens a new incarnation on this number, keeping the reply FIFO (an
    /// earlier incarnation's replies may still be on their way).
    pub fn reopen(&mut self) {
        self.state = ChannelState::Open;
        self.confirm = false;
        self.next_confirm_seq = 1;
        self.content = None;
        self.last_queue = None;
        self.auto_ack_consumers.clear();
        self.manual_tags.clear();
        self.credit = Credit::default();
        self.no_ack_written.clear();
        self.delivered_at.clear();
        self.published = false;
        self.drop_transaction();
    }

    /// The channel closed: its transaction, and a commit not yet sent,
    /// are gone.
    pub fn drop_transaction(&mut self) {
        self.tx = None;
        self.committing = false;
        self.committing_settles.clear();
        self.deferred_commit = None;
    }

    /// A delivery to `consumer` (0: a `get-ok`) that awaits an ack, sent
    /// at `now`.
    pub fn record_delivery(&mut self, tag: u64, consumer: ConsumerId, now: Instant) {
        self.manual_tags.push_back((tag, consumer));
        self.prune_delivered_at();
        self.delivered_at.push_back((tag, now));
    }

    /// When the oldest delivery still awaiting an ack was sent (RabbitMQ's
    /// consumer timeout looks at the head of its unacked queue only).
    pub fn oldest_unacked_at(&mut self) -> Option<Instant> {
        self.prune_delivered_at();
        self.manual_tags.front()?;
        self.delivered_at.front().map(|(_, at)| *at)
    }

    /// Drops the times of tags below the oldest outstanding one: settled.
    fn prune_delivered_at(&mut self) {
        let oldest = self.manual_tags.front().map_or(u64::MAX, |(tag, _)| *tag);
        while self.delivered_at.front().is_some_and(|(tag, _)| *tag < oldest) {
            self.delivered_at.pop_front();
        }
    }

    /// Takes the delivery tags an ack, nack or reject of `tag` (with
    /// `multiple`) covers out of `manual_tags`, as RabbitMQ's
    /// `collect_acks` does: tag 0 with `multiple` is every one; otherwise
    /// `tag` itself must await an ack, and `multiple` adds every one below
    /// it. `None` (nothing taken) if `tag` is unknown.
    pub fn take_covered(&mut self, tag: u64, multiple: bool) -> Option<Vec<(u64, ConsumerId)>> {
        if multiple && tag == 0 {
            return Some(self.manual_tags.drain(..).collect());
        }
        let at = self.manual_tags.binary_search_by_key(&tag, |(t, _)| *t).ok()?;
        if multiple {
            return Some(self.manual_tags.drain(..=at).collect());
        }
        self.manual_tags.remove(at).map(|taken| vec![taken])
    }

    /// After `basic.recover`: the core requeues every unacked delivery of
    /// the channel, those a transaction settled included.
    pub fn forget_unacked(&mut self) {
        self.manual_tags.clear();
        self.credit.forget_unacked();
        if let Some(tx) = self.tx.as_mut() {
            tx.settled_tags.clear();
        }
    }

    /// Puts `tags` (taken by [`Self::take_covered`]) back among those
    /// awaiting an ack, in order.
    pub fn restore_tags(&mut self, tags: &[(u64, ConsumerId)]) {
        let mut all: Vec<(u64, ConsumerId)> = self.manual_tags.drain(..).chain(tags.iter().copied()).collect();
        all.sort_unstable();
        all.dedup();
        self.manual_tags = all.into();
    }

    /// An ack, nack or reject of `tag` (with `multiple`) outside a
    /// transaction, as the client sent it: the commands that carry it to
    /// the core, with the client's credit given back for what it covers
    /// (ADR 0026). `None` if `tag` was held and never sent (the client's
    /// 406 `unknown delivery tag`). A tag the client was not sent and that
    /// is not held goes to the core as it is (the core answers 406). A
    /// `multiple` that in the core would also cover held deliveries
    /// becomes one settlement per tag the client had.
    pub fn settle(&mut self, tag: u64, multiple: bool, how: TxSettleKind) -> Option<Settled> {
        if self.credit.is_held(tag) {
            return None;
        }
        let covers_held = self.credit.covers_held(tag, multiple);
        let one = |tag: u64, multiple: bool| match how {
            TxSettleKind::Ack => Command::Ack {
                delivery_tag: DeliveryTag(tag),
                multiple,
            },
            TxSettleKind::Requeue | TxSettleKind::Reject => Command::Nack {
                delivery_tag: DeliveryTag(tag),
                multiple,
                requeue: how == TxSettleKind::Requeue,
            },
        };
        let Some(taken) = self.take_covered(tag, multiple) else {
            return Some(Settled {
                commands: vec![one(tag, multiple)],
                taken: 0,
            });
        };
        self.credit.settled(taken.iter().map(|(_, consumer)| *consumer));
        let commands = if covers_held {
            taken.iter().map(|(tag, _)| one(*tag, false)).collect()
        } else if multiple && tag == 0 {
            // "Everything the client has": up to the last tag it was sent,
            // not deliveries the core assigned that are still on their way
            // to this node.
            taken.last().map(|(last, _)| one(*last, true)).into_iter().collect()
        } else {
            vec![one(tag, multiple)]
        };
        Some(Settled {
            commands,
            taken: taken.len() as u64,
        })
    }

    /// One more delivery (`bytes` of body) of the `no_ack` consumer `tag`
    /// written: the deliveries and bytes to report to the core once either
    /// reaches an eighth of the consumer's window
    /// ([`warren_core::NO_ACK_WINDOW`], [`warren_core::NO_ACK_WINDOW_BYTES`]),
    /// then counted afresh.
    pub fn count_no_ack_written(&mut self, tag: &str, bytes: u64) -> Option<(u32, u64)> {
        let written = match self.no_ack_written.get_mut(tag) {
            Some(written) => written,
            None => self.no_ack_written.entry(tag.to_owned()).or_insert((0, 0)),
        };
        written.0 += 1;
        written.1 += bytes;
        if written.0 < NO_ACK_REPORT && written.1 < NO_ACK_REPORT_BYTES {
            return None;
        }
        Some(std::mem::take(written))
    }

    /// Marks every awaited reply as belonging to a closed incarnation.
    pub fn discard_pending(&mut self) {
        for p in self.pending.iter_mut() {
            *p = Pending::Discard;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    fn slot_with(tags: &[u64]) -> ChannelSlot {
        ChannelSlot {
            manual_tags: tags.iter().map(|t| (*t, 0)).collect(),
            ..ChannelSlot::default()
        }
    }

    #[test]
    fn the_oldest_unacked_delivery_is_the_one_the_consumer_timeout_sees() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + std::time::Duration::from_millis(ms);
        let mut slot = ChannelSlot::default();
        assert_eq!(slot.oldest_unacked_at(), None);
        for tag in 1..=4 {
            slot.record_delivery(tag, 0, at(tag * 10));
        }
        assert_eq!(slot.oldest_unacked_at(), Some(at(10)));
        // Settled out of order: 2 is gone, 1 still waits.
        slot.take_covered(2, false);
        assert_eq!(slot.oldest_unacked_at(), Some(at(10)));
        slot.take_covered(1, false);
        assert_eq!(slot.oldest_unacked_at(), Some(at(30)), "2's time is skipped with it");
        slot.take_covered(4, true);
        assert_eq!(slot.oldest_unacked_at(), None);
        assert!(slot.delivered_at.is_empty(), "settled times are dropped");
        // Times of settled tags do not pile up while deliveries go on.
        for tag in 5..1005 {
            slot.record_delivery(tag, 0, at(tag));
            slot.take_covered(tag, false);
        }
        assert!(slot.delivered_at.len() <= 1, "{}", slot.delivered_at.len());
        slot.reopen();
        assert_eq!(slot.oldest_unacked_at(), None);
    }

    #[test]
    fn settled_tags_follow_rabbitmqs_collect_acks() {
        let mut slot = slot_with(&[2, 3, 5, 8]);
        // multiple with a tag that awaits no ack: unknown, even with
        // smaller ones waiting (RabbitMQ walks to the tag or fails).
        assert_eq!(slot.take_covered(4, true), None);
        assert_eq!(slot.take_covered(1, false), None);
        assert_eq!(slot.take_covered(5, true), Some(vec![(2, 0), (3, 0), (5, 0)]));
        assert_eq!(slot.take_covered(5, false), None, "taken already");
        slot.restore_tags(&[(3, 0), (2, 0)]);
        assert_eq!(slot.manual_tags, VecDeque::from(vec![(2, 0), (3, 0), (8, 0)]));
        assert_eq!(slot.take_covered(3, false), Some(vec![(3, 0)]));
        assert_eq!(slot.take_covered(0, true), Some(vec![(2, 0), (8, 0)]));
        assert_eq!(
            slot.take_covered(0, true),
            Some(vec![]),
            "tag 0 with multiple: every one, none left"
        );
        assert_eq!(slot.take_covered(0, false), None);
    }

    fn sent(slot: &mut ChannelSlot, consumer: &str, tag: u64) -> bool {
        let delivery = crate::credit::HeldDelivery {
            consumer_tag: warren_core::ConsumerTag::new(consumer),
            consumer: slot.credit.id_of(consumer),
            delivery_tag: tag,
            redelivered: false,
            message: Arc::new(warren_core::Message {
                exchange: warren_core::ExchangeName::new(""),
                routing_key: String::new(),
                properties: Arc::default(),
                body: bytes::Bytes::new().into(),
            }),
        };
        let id = delivery.consumer;
        let out = slot.credit.offer(delivery).is_some();
        if out {
            slot.record_delivery(tag, id, Instant::now());
        }
        out
    }

    fn ack(tag: u64, multiple: bool) -> Command {
        Command::Ack {
            delivery_tag: DeliveryTag(tag),
            multiple,
        }
    }

    #[test]
    fn a_settlement_carries_to_the_core_only_what_the_client_had() {
        let mut slot = ChannelSlot::default();
        slot.credit.qos(2, false);
        slot.credit.consume("c", false);
        for tag in 1..=4 {
            assert_eq!(sent(&mut slot, "c", tag), tag <= 2, "tag {tag}");
        }
        // 3 and 4 are held: acking one is the client's 406.
        assert_eq!(slot.settle(3, false, TxSettleKind::Ack), None);
        assert_eq!(slot.settle(4, true, TxSettleKind::Ack), None);
        // A get-ok's tag after the held ones, acked with multiple: one ack
        // per tag the client had, not a range over 3 and 4.
        slot.record_delivery(5, 0, Instant::now());
        slot.credit.got();
        let settled = slot.settle(5, true, TxSettleKind::Ack).expect("known tags");
        assert_eq!(settled.commands, vec![ack(1, false), ack(2, false), ack(5, false)]);
        assert_eq!(settled.taken, 3);
        // Acked: the held ones may go out now.
        let released: Vec<u64> = slot.credit.releasable().iter().map(|d| d.delivery_tag).collect();
        assert_eq!(released, vec![3, 4]);
        for tag in released {
            slot.record_delivery(tag, slot.credit.id_of("c"), Instant::now());
        }
        // Nothing held: a multiple nack goes as the client sent it.
        let settled = slot.settle(4, true, TxSettleKind::Requeue).expect("known tags");
        assert_eq!(
            settled.commands,
            vec![Command::Nack {
                delivery_tag: DeliveryTag(4),
                multiple: true,
                requeue: true,
            }]
        );
        // Tag 0 with multiple: up to the last tag sent, not past it.
        slot.record_delivery(7, 0, Instant::now());
        slot.record_delivery(9, 0, Instant::now());
        let settled = slot.settle(0, true, TxSettleKind::Ack).expect("all");
        assert_eq!(settled.commands, vec![ack(9, true)]);
        assert_eq!(slot.settle(0, true, TxSettleKind::Ack).expect("none").commands, vec![]);
        // A tag never seen: to the core as it is (its 406).
        let settled = slot.settle(99, false, TxSettleKind::Reject).expect("the core decides");
        assert_eq!(settled.taken, 0);
        assert_eq!(
            settled.commands,
            vec![Command::Nack {
                delivery_tag: DeliveryTag(99),
                multiple: false,
                requeue: false,
            }]
        );
    }

    #[test]
    fn held_bytes_are_given_back_when_dropped() {
        let total = Arc::new(AtomicU64::new(0));
        let mut a = HeldBytes::new(total.clone());
        let mut b = HeldBytes::new(total.clone());
        a.add(100);
        a.add(20);
        b.add(5);
        assert_eq!(total.load(Ordering::Relaxed), 125);
        drop(a);
        assert_eq!(total.load(Ordering::Relaxed), 5);
        drop(b);
        assert_eq!(total.load(Ordering::Relaxed), 0);
    }
}
