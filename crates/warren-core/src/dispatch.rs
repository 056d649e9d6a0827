//! Dispatch: hands a queue's ready messages to its consumers, round-robin,
//! within their prefetch limits.

use std::collections::BTreeMap;

use crate::broker::{Broker, Ctx};
use crate::channel::Channel;
use crate::channel::Unacked;
use crate::consumer::{Consumer, ConsumerRef};
use crate::dead_letter::{dead_letters, DeathReason};
use crate::effect::Effect;
use crate::ids::ChannelId;
use crate::ids::{QueueName, VHost};
use crate::queue::Queue;

/// The index (in `queue.consumers`) of the consumer the next ready message
/// goes to: of those that may take one more, the first of the highest
/// priority (`x-priority`) in round-robin order.
pub(crate) fn idle_consumer(queue: &Queue, channels: &BTreeMap<ChannelId, Channel>) -> Option<usize> {
    idle_consumer_below(queue, channels, None)
}

/// A queue's consumer, with its channel: one lookup of the tag (a
/// string), which dispatch does for every message.
pub(crate) fn consumer_record<'a>(
    channels: &'a BTreeMap<ChannelId, Channel>,
    consumer: &ConsumerRef,
) -> Option<(&'a Channel, &'a Consumer)> {
    let channel = channels.get(&consumer.channel)?;
    Some((channel, channel.consumers.get(&consumer.tag)?))
}

/// The highest `x-priority` among the queue's consumers (0 without any).
fn top_priority(queue: &Queue, channels: &BTreeMap<ChannelId, Channel>) -> i32 {
    queue
        .consumers
        .iter()
        .filter_map(|c| consumer_record(channels, c))
        .map(|(_, c)| c.priority)
        .max()
        .unwrap_or(0)
}

/// [`idle_consumer`], stopping at the first candidate of priority `top`
/// (the highest any consumer has: none can beat it), so that a queue whose
/// consumers share one priority is served in O(1) a message as before.
fn idle_consumer_below(queue: &Queue, channels: &BTreeMap<ChannelId, Channel>, top: Option<i32>) -> Option<usize> {
    let mut best: Option<(i32, usize)> = None;
    for index in queue.dispatch_order() {
        let Some((channel, record)) = consumer_record(channels, &queue.consumers[index]) else {
            continue;
        };
        if !channel.can_take(record) {
            continue;
        }
        let priority = record.priority;
        if Some(priority) == top {
            return Some(index);
        }
        if best.is_none_or(|(highest, _)| priority > highest) {
            best = Some((priority, index));
        }
    }
    best.map(|(_, index)| index)
}

impl Broker {
    /// `Command::Written`: `count` deliveries (`bytes` of bodies) of the
    /// `no_ack` consumer `tag` reached its client; the consumer may be
    /// assigned that much more, so its queue is dispatched again.
    pub(crate) fn written(
        &mut self,
        ctx: &mut Ctx<'_>,
        channel: ChannelId,
        tag: &crate::ids::ConsumerTag,
        count: u32,
        bytes: u64,
    ) {
        let Some(consumer) = self.channels.get_mut(&channel).and_then(|c| c.consumers.get_mut(tag)) else {
            return;
        };
        consumer.in_flight = consumer.in_flight.saturating_sub(count);
        consumer.in_flight_bytes = consumer.in_flight_bytes.saturating_sub(bytes);
        ctx.touch(&consumer.vhost, &consumer.queue);
    }

    /// Delivers ready messages of queue `name` to consumers until it is
    /// empty or no consumer has credit.
    ///
    /// Messages already expired are dead-lettered when they reach the head.
    /// A message expiring exactly now (TTL 0) is still delivered if a
    /// consumer can take it; if none can, it expires at the end of the pass.
    /// Afterwards either the queue has no ready messages or no consumer may
    /// take one (checked by `check_invariants`).
    pub(crate) fn dispatch(&mut self, ctx: &mut Ctx<'_>, vhost: &VHost, name: &QueueName) {
        let Some(queue) = self.vhosts.get_mut(vhost).and_then(|v| v.queues.get_mut(name)) else {
            return;
        };
        if queue.is_stream() {
            self.dispatch_stream(ctx, vhost, name);
            return;
        }
        let channels = &mut self.channels;
        // Priorities do not change during a pass; credit does.
        let top = Some(top_priority(queue, channels));
        loop {
            let expired = queue.take_expired_head(ctx.now_ms, false);
            ctx.dead_letters
                .extend(dead_letters(vhost, queue, expired, DeathReason::Expired));
            if queue.ready.is_empty() {
                break;
            }
            let chosen = idle_consumer_below(queue, channels, top);
            let Some(index) = chosen else {
                break;
            };
            let target = queue.consumers[index].clone();
            let Some(channel) = channels.get_mut(&target.channel) else {
                break;
            };
            let Some(consumer) = channel.consumers.get(&target.tag) else {
                break;
            };
            let (no_ack, serial) = (consumer.no_ack, consumer.serial);
            let Some(entry) = queue.pop_front() else {
                break;
            };
            queue.next_consumer = (index + 1) % queue.consumers.len();
            let (message, redelivered) = (queue.delivered_message(&entry), entry.redelivered);
            if no_ack {
                queue.stats.deliver_no_ack += 1;
            } else {
                queue.stats.deliver += 1;
            }
            queue.stats.redeliver += u64::from(redelivered);
            let delivery_tag = if no_ack {
                if let Some(consumer) = channel.consumers.get_mut(&target.tag) {
                    consumer.in_flight += 1;
                    consumer.in_flight_bytes += message.body_len();
                }
                channel.take_delivery_tag()
            } else {
                queue.unacked += 1;
                channel.record_unacked(Unacked {
                    vhost: vhost.clone(),
                    queue: name.clone(),
                    queue_uid: queue.uid,
                    consumer: Some((target.tag.clone(), serial)),
                    entry,
                })
            };
            ctx.effects.push(Effect::Deliver {
                channel: target.channel,
                consumer_tag: target.tag,
                delivery_tag,
                redelivered,
                message,
            });
        }
        let expired = queue.take_expired_head(ctx.now_ms, true);
        ctx.dead_letters
            .extend(dead_letters(vhost, queue, expired, DeathReason::Expired));
    }
}
