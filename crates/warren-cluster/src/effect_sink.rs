//! The seam between a node's state machine and its connections: where the
//! effects of applied entries go. Its own module, so the proposer, the
//! state machine and the tracker need not import it from `node.rs`, which
//! wires them together.

use warren_core::Effect;

/// Receives, after each applied entry, the effects addressed to this node
/// (`effect.channel().conn.node == own id`), in apply order — including
/// during the replay after a restart, when they address connections of an
/// earlier boot and should be dropped.
///
/// `emit` runs on the apply path: it must not block (push into bounded
/// per-connection queues, `try_send`, and deal with full queues without
/// waiting).
pub trait EffectSink: Send + Sync + 'static {
    fn emit(&self, effects: Vec<Effect>);

    /// This node's live connections no longer match the broker state and
    /// must all be closed (their clients reconnect):
    ///
    /// - the cluster declared this node down (`NodeDown` for its id was
    ///   applied, e.g. after it was cut off from the leader): the broker has
    ///   closed every connection of this node already;
    /// - this node installed a snapshot: the deliveries (and other effects)
    ///   of the entries it covers were never emitted, so a consumer here
    ///   would wait forever for messages the broker counts as delivered to
    ///   it. Closing the connection requeues them (`CloseConnection`).
    ///
    /// Called on the apply path; must not block.
    fn drop_all_connections(&self) {}

    /// The user `name` was deleted: this node's connections of that user
    /// are closed (320 CONNECTION_FORCED, as RabbitMQ closes them).
    /// Called on the apply path; must not block.
    fn user_deleted(&self, _name: &warren_core::UserName) {}

    /// Every committed batch this node applies, with all the effects its
    /// apply produced (for every node's connections, before the filter of
    /// [`EffectSink::emit`]). Nothing in a broker needs it; a test harness
    /// uses it to learn the outcome of requests whose replies it never
    /// got (an ack whose connection broke: did it commit?). Not called
    /// for entries a snapshot covers. Called on the apply path; must not
    /// block.
    fn applied(&self, _batch: &warren_core::Batch, _effects: &[Effect]) {}
}
