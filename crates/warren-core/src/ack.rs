//! Settling deliveries: `basic.ack`, `basic.nack`, `basic.reject`,
//! `basic.recover`.

use std::collections::BTreeSet;

use crate::broker::{Broker, Ctx, QueueKey};
use crate::channel::{Channel, Unacked};
use crate::dead_letter::{dead_letters, DeathReason};
use crate::effect::Outcome;
use crate::error::CoreError;
use crate::fail;
use crate::ids::{ChannelId, DeliveryTag};
use crate::queue::Queue;
use crate::queue_args::Overflow;

/// What becomes of a settled delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Settle {
    /// Acked: gone.
    Ack,
    /// Back to its queue at its original position, redelivered = true.
    Requeue,
    /// Rejected without requeue: dead-lettered (reason `rejected`) or dropped.
    Reject,
}

impl Broker {
    /// `basic.ack`.
    ///
    /// # Errors
    /// 406 `unknown delivery tag N` (nothing is acked then).
    pub(crate) fn ack(
        &mut self,
        ctx: &mut Ctx<'_>,
        channel: ChannelId,
        tag: DeliveryTag,
        multiple: bool,
    ) -> Result<Outcome, CoreError> {
        self.settle_tags(ctx, channel, tag, multiple, Settle::Ack)
    }

    /// `basic.nack` (and `basic.reject`, with `multiple = false`).
    ///
    /// # Errors
    /// 406 `unknown delivery tag N` (nothing is settled then).
    pub(crate) fn nack(
        &mut self,
        ctx: &mut Ctx<'_>,
        channel: ChannelId,
        tag: DeliveryTag,
        multiple: bool,
        requeue: bool,
    ) -> Result<Outcome, CoreError> {
        let how = if requeue { Settle::Requeue } else { Settle::Reject };
        self.settle_tags(ctx, channel, tag, multiple, how)
    }

    /// `basic.recover`: requeues every unacked delivery of the channel
    /// (RabbitMQ requeues whatever `requeue` says).
    ///
    /// # Errors
    /// 540 if a delivery from a stream is unacked (RabbitMQ 3.10's channel
    /// crashes there, 541; ADR 0030).
    pub(crate) fn recover(&mut self, ctx: &mut Ctx<'_>, channel: ChannelId) -> Result<Outcome, CoreError> {
        let Some(state) = self.channels.get(&channel) else {
            return Ok(Outcome::Done);
        };
        let tags: Vec<DeliveryTag> = state.unacked.keys().copied().collect();
        self.refuse_for_streams(channel, &tags, "basic.recover")?;
        self.settle_each(ctx, channel, tags, Settle::Requeue);
        Ok(Outcome::Done)
    }

    /// Puts deliveries of `channel` that its node never sent to the client
    /// back into their queues as they were: at their place, with their
    /// `redelivered` flag and return count unchanged, and not counted as
    /// delivered (ADR 0026). Tags not unacked on the channel are skipped
    /// (settled or requeued since).
    pub(crate) fn return_unsent(&mut self, ctx: &mut Ctx<'_>, channel: ChannelId, tags: &[DeliveryTag]) {
        let Some(state) = self.channels.get_mut(&channel) else {
            return;
        };
        let taken: Vec<Unacked> = tags.iter().filter_map(|t| state.take_unacked(*t)).collect();
        let mut returned = BTreeSet::new();
        for unacked in taken {
            let Unacked {
                vhost,
                queue: name,
                queue_uid,
                entry,
                consumer,
            } = unacked;
            let Some(queue) = self.vhosts.get_mut(&vhost).and_then(|v| v.queues.get_mut(&name)) else {
                continue;
            };
            if queue.uid != queue_uid {
                continue;
            }
            queue.unacked = queue.unacked.saturating_sub(1);
            if consumer.is_some() {
                queue.stats.deliver = queue.stats.deliver.saturating_sub(1);
                queue.stats.redeliver = queue.stats.redeliver.saturating_sub(u64::from(entry.redelivered));
            }
            if queue.is_stream() {
                // Nothing left the stream; its consumer reads it again.
                self.rewind_stream_consumer(channel, consumer.as_ref(), entry.seq);
                ctx.touch(&vhost, &name);
                continue;
            }
            queue.put_back(entry);
            ctx.touch(&vhost, &name);
            returned.insert((vhost, name));
        }
        self.trim_requeued(ctx, returned);
    }

    /// Settles the deliveries `tag`/`multiple` cover (tag 0 with
    /// `multiple` = all), then marks the channel's consumed queues for
    /// dispatch since it gained credit.
    fn settle_tags(
        &mut self,
        ctx: &mut Ctx<'_>,
        channel: ChannelId,
        tag: DeliveryTag,
        multiple: bool,
        how: Settle,
    ) -> Result<Outcome, CoreError> {
        // A channel the core has no state for yet holds no deliveries; it
        // is no different from one whose deliveries are all settled.
        let tags = match self.channels.get(&channel) {
            Some(state) => state.tags_covered(tag, multiple),
            None => Channel::default().tags_covered(tag, multiple),
        };
        let Some(tags) = tags else {
            return Err(fail::unknown_delivery_tag(tag));
        };
        if how != Settle::Ack {
            self.refuse_for_streams(channel, &tags, "basic.nack and basic.reject")?;
        }
        self.settle_each(ctx, channel, tags, how);
        Ok(Outcome::Done)
    }

    /// 540 (`what` not supported by stream queues) if one of `tags` of
    /// `channel` is a delivery from a stream.
    fn refuse_for_streams(&self, channel: ChannelId, tags: &[DeliveryTag], what: &str) -> Result<(), CoreError> {
        let Some(state) = self.channels.get(&channel) else {
            return Ok(());
        };
        for unacked in tags.iter().filter_map(|tag| state.unacked.get(tag)) {
            let queue = self
                .vhosts
                .get(&unacked.vhost)
                .and_then(|v| v.queues.get(&unacked.queue))
                .filter(|q| q.uid == unacked.queue_uid);
            if queue.is_some_and(Queue::is_stream) {
                return Err(crate::stream::not_supported(what, &unacked.vhost, &unacked.queue));
            }
        }
        Ok(())
    }

    pub(crate) fn settle_each(&mut self, ctx: &mut Ctx<'_>, channel: ChannelId, tags: Vec<DeliveryTag>, how: Settle) {
        let Some(state) = self.channels.get_mut(&channel) else {
            return;
        };
        let settled: Vec<Unacked> = tags.into_iter().filter_map(|t| state.take_unacked(t)).collect();
        for (vhost, queue) in state.consumed_queues() {
            ctx.touch(vhost, queue);
        }
        let mut requeued = BTreeSet::new();
        for unacked in settled {
            requeued.extend(self.settle_delivery(ctx, unacked, how));
        }
        self.trim_requeued(ctx, requeued);
    }

    /// After a batch of requeues into `queues`, drops (dead-letters, reason
    /// `maxlen`) the head of each drop-head queue the requeues took past
    /// its length limits, as RabbitMQ's `requeue_and_run` does with
    /// `maybe_drop_head` before dispatching.
    pub(crate) fn trim_requeued(&mut self, ctx: &mut Ctx<'_>, queues: BTreeSet<QueueKey>) {
        for (vhost, name) in queues {
            let Some(queue) = self.vhosts.get_mut(&vhost).and_then(|v| v.queues.get_mut(&name)) else {
                continue;
            };
            if queue.args.overflow != Overflow::DropHead || queue.is_stream() {
                continue;
            }
            let mut dropped = Vec::new();
            while queue.is_over_limits() {
                // None only if a page could not be read (the node stops).
                let Some(head) = queue.pop_front() else { break };
                dropped.push(head);
            }
            ctx.dead_letters
                .extend(dead_letters(&vhost, queue, dropped, DeathReason::MaxLen));
        }
    }

    /// Returns an unacked delivery (already taken from its channel) to its
    /// queue's accounting. If its queue is gone, the message just goes.
    /// Returns the queue it was requeued into, if it was: the caller trims
    /// those queues to their length limits once its requeues are done.
    pub(crate) fn settle_delivery(&mut self, ctx: &mut Ctx<'_>, unacked: Unacked, how: Settle) -> Option<QueueKey> {
        let Unacked {
            vhost,
            queue: name,
            queue_uid,
            entry,
            ..
        } = unacked;
        let queue = self.vhosts.get_mut(&vhost).and_then(|v| v.queues.get_mut(&name))?;
        if queue.uid != queue_uid {
            return None;
        }
        queue.unacked = queue.unacked.saturating_sub(1);
        if queue.is_stream() {
            // Settled or not, the message stays in the stream.
            queue.stats.ack += u64::from(how == Settle::Ack);
            return None;
        }
        match how {
            Settle::Ack => {
                queue.stats.ack += 1;
                None
            }
            Settle::Requeue => {
                if let Some(dead) = queue.requeue(entry) {
                    ctx.dead_letters
                        .extend(dead_letters(&vhost, queue, vec![dead], DeathReason::DeliveryLimit));
                    return None;
                }
                ctx.touch(&vhost, &name);
                Some((vhost, name))
            }
            Settle::Reject => {
                ctx.dead_letters
                    .extend(dead_letters(&vhost, queue, vec![entry], DeathReason::Rejected));
                None
            }
        }
    }
}
