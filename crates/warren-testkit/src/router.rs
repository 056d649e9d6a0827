//! A node's [`EffectSink`]: hands each effect to the test connection it
//! is addressed to.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc;
use warren_cluster::EffectSink;
use warren_core::{Batch, ChannelId, Command, ConnectionId, Effect, Outcome};

/// The acks that took effect anywhere in the cluster: `(channel, delivery
/// tag)` of every `Ack` that some node applied with the reply `Done`.
/// Every node of a test cluster reports into one record, across restarts,
/// so it holds every committed ack (each committed entry is applied by
/// the node that commits it, or by the node whose snapshot covers it): it
/// tells whether an ack whose reply never came consumed its message
/// (the ledger's `AckUnknown`).
#[derive(Debug, Default)]
pub struct AppliedAcks {
    acks: Mutex<HashSet<(ChannelId, u64)>>,
}

impl AppliedAcks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Did the ack of `delivery_tag` on `channel` take effect?
    pub fn contains(&self, channel: ChannelId, delivery_tag: u64) -> bool {
        self.acks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&(channel, delivery_tag))
    }

    /// Records the acks of `batch` that `effects` answered `Done`. A
    /// request with an origin gets exactly one reply, in request order per
    /// channel (the broker's `apply`), so the n-th request of a channel
    /// pairs with the n-th reply to it.
    fn record(&self, batch: &Batch, effects: &[Effect]) {
        let mut replies: HashMap<ChannelId, VecDeque<bool>> = HashMap::new();
        for effect in effects {
            if let Effect::Reply { channel, outcome } = effect {
                replies
                    .entry(*channel)
                    .or_default()
                    .push_back(matches!(outcome, Ok(Outcome::Done)));
            }
        }
        let mut acks = self.acks.lock().unwrap_or_else(PoisonError::into_inner);
        for request in &batch.requests {
            let Some(channel) = request.origin else { continue };
            let done = replies.get_mut(&channel).and_then(VecDeque::pop_front);
            if let (
                Command::Ack {
                    delivery_tag,
                    multiple: false,
                },
                Some(true),
            ) = (&request.command, done)
            {
                acks.insert((channel, delivery_tag.0));
            }
        }
    }
}

/// Routes effects by connection. Effects for connections it does not know
/// (earlier boots replayed after a restart, connections given up) are
/// dropped, as a node's front end drops them.
///
/// The per-connection queues are unbounded: `emit` must not block, and a
/// dropped effect would look like a broker bug to the checks. Test loads
/// are small and clients drain their queue continuously.
#[derive(Debug, Default)]
pub struct Router {
    connections: Mutex<HashMap<ConnectionId, mpsc::UnboundedSender<Effect>>>,
    /// Times the node dropped all its connections.
    dropped_all: AtomicU64,
    /// Where this node reports the acks it applies.
    acks: Arc<AppliedAcks>,
}

impl Router {
    /// A router reporting the acks its node applies to `acks`.
    pub fn new(acks: Arc<AppliedAcks>) -> Self {
        Self {
            acks,
            ..Self::default()
        }
    }

    /// Starts routing `conn`'s effects to the returned receiver.
    pub fn register(&self, conn: ConnectionId) -> mpsc::UnboundedReceiver<Effect> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(conn, tx);
        rx
    }

    /// Stops routing `conn`'s effects.
    pub fn unregister(&self, conn: ConnectionId) {
        self.connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&conn);
    }

    /// Drops every connection (their receivers see the end of the stream),
    /// as a stopped node's sockets close.
    /// Returns the connections it dropped.
    pub fn close_all(&self) -> Vec<ConnectionId> {
        let mut connections = self.connections.lock().unwrap_or_else(PoisonError::into_inner);
        let closed = connections.keys().copied().collect();
        connections.clear();
        closed
    }

    /// How many times the node dropped all its connections (snapshot
    /// installs, `NodeDown` for this node).
    pub fn times_all_dropped(&self) -> u64 {
        self.dropped_all.load(Ordering::Relaxed)
    }
}

impl EffectSink for Router {
    /// The node installed a snapshot (or was declared down): its clients
    /// see their effect stream end and give their connections up, as AMQP
    /// clients whose sockets the node closed would.
    fn drop_all_connections(&self) {
        self.dropped_all.fetch_add(1, Ordering::Relaxed);
        self.close_all();
    }

    fn applied(&self, batch: &Batch, effects: &[Effect]) {
        self.acks.record(batch, effects);
    }

    fn emit(&self, effects: Vec<Effect>) {
        let connections = self.connections.lock().unwrap_or_else(PoisonError::into_inner);
        for effect in effects {
            if let Some(tx) = connections.get(&effect.channel().conn) {
                // A closed receiver: the client already gave the connection up.
                let _ = tx.send(effect);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use warren_core::{CoreError, DeliveryTag, NodeId, Request};

    use super::*;

    fn channel(seq: u64) -> ChannelId {
        ChannelId {
            conn: ConnectionId {
                node: NodeId(1),
                boot: 1,
                seq,
            },
            channel: 1,
        }
    }

    fn ack(channel: ChannelId, tag: u64) -> Request {
        Request {
            origin: Some(channel),
            command: Command::Ack {
                delivery_tag: DeliveryTag(tag),
                multiple: false,
            },
        }
    }

    fn reply(channel: ChannelId, outcome: Result<Outcome, CoreError>) -> Effect {
        Effect::Reply { channel, outcome }
    }

    #[test]
    fn only_acks_answered_done_are_recorded_paired_per_channel_in_order() {
        let (a, b) = (channel(1), channel(2));
        let batch = Batch {
            now_ms: 1,
            requests: vec![ack(a, 1), ack(b, 7), ack(a, 2), ack(a, 3)],
        };
        let refused = || Err(CoreError::PreconditionFailed("unknown delivery tag".to_owned()));
        // b's reply comes between a's, as replies of one batch interleave.
        let effects = vec![
            reply(a, Ok(Outcome::Done)),
            reply(b, refused()),
            reply(a, refused()),
            reply(a, Ok(Outcome::Done)),
        ];
        let acks = AppliedAcks::new();
        acks.record(&batch, &effects);
        assert!(acks.contains(a, 1));
        assert!(!acks.contains(a, 2), "refused");
        assert!(acks.contains(a, 3));
        assert!(!acks.contains(b, 7), "refused");
    }
}
