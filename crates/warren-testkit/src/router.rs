//! A node's [`EffectSink`]: hands each effect to the test connection it
//! is addressed to.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use tokio::sync::mpsc;
use warren_cluster::EffectSink;
use warren_core::{ConnectionId, Effect};

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
}

impl Router {
    pub fn new() -> Self {
        Self::default()
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
