//! Settling deliveries: `basic.ack`, `basic.nack`, `basic.reject`,
//! `basic.recover`.

use crate::broker::{Broker, Ctx};
use crate::channel::Unacked;
use crate::dead_letter::{dead_letters, DeathReason};
use crate::effect::Outcome;
use crate::error::CoreError;
use crate::fail;
use crate::ids::{ChannelId, DeliveryTag};

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
    pub(crate) fn recover(&mut self, ctx: &mut Ctx<'_>, channel: ChannelId) -> Result<Outcome, CoreError> {
        let Some(state) = self.channels.get(&channel) else {
            return Ok(Outcome::Done);
        };
        let tags: Vec<DeliveryTag> = state.unacked.keys().copied().collect();
        self.settle_each(ctx, channel, tags, Settle::Requeue);
        Ok(Outcome::Done)
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
        let tags = self
            .channels
            .get(&channel)
            .and_then(|ch| ch.tags_covered(tag, multiple));
        let Some(tags) = tags else {
            return Err(fail::unknown_delivery_tag(tag));
        };
        self.settle_each(ctx, channel, tags, how);
        Ok(Outcome::Done)
    }

    fn settle_each(&mut self, ctx: &mut Ctx<'_>, channel: ChannelId, tags: Vec<DeliveryTag>, how: Settle) {
        let Some(state) = self.channels.get_mut(&channel) else {
            return;
        };
        let settled: Vec<Unacked> = tags.into_iter().filter_map(|t| state.take_unacked(t)).collect();
        for (vhost, queue) in state.consumed_queues() {
            ctx.touch(vhost, queue);
        }
        for unacked in settled {
            self.settle_delivery(ctx, unacked, how);
        }
    }

    /// Returns an unacked delivery (already taken from its channel) to its
    /// queue's accounting. If its queue is gone, the message just goes.
    pub(crate) fn settle_delivery(&mut self, ctx: &mut Ctx<'_>, unacked: Unacked, how: Settle) {
        let Unacked {
            vhost,
            queue: name,
            queue_uid,
            entry,
            ..
        } = unacked;
        let Some(queue) = self.vhosts.get_mut(&vhost).and_then(|v| v.queues.get_mut(&name)) else {
            return;
        };
        if queue.uid != queue_uid {
            return;
        }
        queue.unacked = queue.unacked.saturating_sub(1);
        match how {
            Settle::Ack => {}
            Settle::Requeue => {
                queue.requeue(entry);
                ctx.touch(&vhost, &name);
            }
            Settle::Reject => {
                ctx.dead_letters
                    .extend(dead_letters(&vhost, queue, vec![entry], DeathReason::Rejected));
            }
        }
    }
}
