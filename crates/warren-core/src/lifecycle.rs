//! Closing channels and connections, node events, `Tick` expiry, and
//! vhost deletion.

use crate::ack::Settle;
use crate::broker::{Broker, Ctx, QueueKey};
use crate::dead_letter::{dead_letters, DeathReason};
use crate::effect::Outcome;
use crate::error::CoreError;
use crate::ids::{ChannelId, ConnectionId, NodeId, VHost};

impl Broker {
    /// The channel closed: its consumers are cancelled (auto-delete queues
    /// may go), its unacked deliveries requeued (redelivered = true), and
    /// the channel forgotten.
    pub(crate) fn close_channel(&mut self, ctx: &mut Ctx<'_>, id: ChannelId) {
        self.drop_staged_channel(id);
        let Some(channel) = self.channels.remove(&id) else {
            return;
        };
        for (tag, consumer) in &channel.consumers {
            self.detach_consumer(ctx, id, tag, consumer);
        }
        let mut requeued = std::collections::BTreeSet::new();
        for unacked in channel.unacked.into_values() {
            requeued.extend(self.settle_delivery(ctx, unacked, Settle::Requeue));
        }
        self.trim_requeued(ctx, requeued);
    }

    /// The connection closed: every channel of it closes, then the queues
    /// it exclusively owned are deleted.
    pub(crate) fn close_connection(&mut self, ctx: &mut Ctx<'_>, conn: ConnectionId) {
        self.drop_staged_connection(conn);
        let channels: Vec<ChannelId> = self.channels.keys().filter(|c| c.conn == conn).copied().collect();
        for channel in channels {
            self.close_channel(ctx, channel);
        }
        let owned = self.queues_where(|q| q.exclusive_owner == Some(conn));
        for (vhost, queue) in owned {
            self.remove_queue(ctx, &vhost, &queue);
        }
    }

    /// Every connection the state knows of (through channels or exclusive
    /// queues) that satisfies `filter`, sorted.
    fn connections_where(&self, filter: impl Fn(&ConnectionId) -> bool) -> Vec<ConnectionId> {
        let from_channels = self.channels.keys().chain(self.staged.keys()).map(|c| c.conn);
        let from_queues = self
            .vhosts
            .values()
            .flat_map(|v| v.queues.values())
            .filter_map(|q| q.exclusive_owner);
        let mut conns: Vec<ConnectionId> = from_channels.chain(from_queues).filter(|c| filter(c)).collect();
        conns.sort_unstable();
        conns.dedup();
        conns
    }

    /// Keys of the queues satisfying `filter`, sorted.
    fn queues_where(&self, filter: impl Fn(&crate::queue::Queue) -> bool) -> Vec<QueueKey> {
        self.vhosts
            .iter()
            .flat_map(|(vhost, v)| {
                v.queues
                    .values()
                    .filter(|q| filter(q))
                    .map(move |q| (vhost.clone(), q.name.clone()))
            })
            .collect()
    }

    /// Node `node` started with boot id `boot`: connections of its earlier
    /// boots are closed, and its non-durable queues of earlier boots deleted.
    pub(crate) fn node_started(&mut self, ctx: &mut Ctx<'_>, node: NodeId, boot: u64) {
        for conn in self.connections_where(|c| c.node == node && c.boot != boot) {
            self.close_connection(ctx, conn);
        }
        let lost = self.queues_where(|q| !q.durable && q.home.is_some_and(|(n, b)| n == node && b != boot));
        for (vhost, queue) in lost {
            self.remove_queue(ctx, &vhost, &queue);
        }
        for vh in self.vhosts.values_mut() {
            let lost: Vec<_> = vh
                .exchanges
                .values()
                .filter(|e| !e.durable && e.home.is_some_and(|(n, b)| n == node && b != boot))
                .map(|e| e.name.clone())
                .collect();
            for name in lost {
                crate::exchange_ops::remove_exchange(vh, &name);
            }
        }
    }

    /// Node `node` is gone: all its connections close (consumers cancelled,
    /// unacked requeued, exclusive queues deleted). Its non-durable queues
    /// stay until it restarts (`NodeStarted`).
    pub(crate) fn node_down(&mut self, ctx: &mut Ctx<'_>, node: NodeId) {
        for conn in self.connections_where(|c| c.node == node) {
            self.close_connection(ctx, conn);
        }
    }

    /// `Tick`: dead-letters or drops every message expired at `now_ms`,
    /// wherever it is in its queue, and deletes queues unused past their
    /// `x-expires`.
    pub(crate) fn tick(&mut self, ctx: &mut Ctx<'_>) {
        let now_ms = ctx.now_ms;
        for (vhost, vh) in &mut self.vhosts {
            for queue in vh.queues.values_mut() {
                let expired = queue.take_all_expired(now_ms);
                if expired.is_empty() {
                    continue;
                }
                ctx.dead_letters
                    .extend(dead_letters(vhost, queue, expired, DeathReason::Expired));
                ctx.touch(vhost, &queue.name);
            }
        }
        let unused = self.queues_where(|q| q.expiry_deadline_ms().is_some_and(|deadline| deadline <= now_ms));
        for (vhost, queue) in unused {
            self.remove_queue(ctx, &vhost, &queue);
        }
    }

    /// Deletes `vhost` and everything in it (consumers get cancelled).
    ///
    /// # Errors
    /// 404 if it does not exist.
    pub(crate) fn delete_vhost(&mut self, ctx: &mut Ctx<'_>, vhost: &VHost) -> Result<Outcome, CoreError> {
        let Some(vh) = self.vhosts.get(vhost) else {
            return Err(CoreError::NotFound(format!("no vhost '{vhost}'")));
        };
        let queues: Vec<_> = vh.queues.keys().cloned().collect();
        for queue in queues {
            self.remove_queue(ctx, vhost, &queue);
        }
        self.vhosts.remove(vhost);
        self.access.forget_vhost(vhost);
        self.policies.forget_vhost(vhost);
        Ok(Outcome::Done)
    }
}
