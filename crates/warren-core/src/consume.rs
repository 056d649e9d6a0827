//! Channel-scoped consuming commands: `basic.qos`, `basic.consume`,
//! `basic.cancel`, `basic.get`.

use amq_protocol_types::{AMQPValue, FieldTable};

use crate::broker::{Broker, Ctx};
use crate::channel::Unacked;
use crate::consumer::{Consumer, ConsumerRef};
use crate::dead_letter::{dead_letters, DeathReason};
use crate::effect::Outcome;
use crate::error::CoreError;
use crate::fail;
use crate::ids::{ChannelId, ConsumerTag, QueueName, VHost};
use crate::queue_args::{check_argument_keys, queue_type, type_name, CONSUMER_ARGUMENTS};
use crate::reply_to::REPLY_QUEUE;
use crate::stream::{check_stream_consumer, not_supported, stream_start};

/// What a `basic.consume` asks for.
pub(crate) struct ConsumeSpec<'a> {
    pub tag: &'a ConsumerTag,
    pub no_ack: bool,
    pub exclusive: bool,
    pub arguments: &'a FieldTable,
    pub lookahead: crate::Lookahead,
}

/// The AMQP field types RabbitMQ accepts where it wants an integer
/// (`?INTEGER_ARG_TYPES`; a timestamp is not one).
fn is_integer_field(value: &AMQPValue) -> bool {
    matches!(
        value,
        AMQPValue::ShortShortInt(_)
            | AMQPValue::ShortShortUInt(_)
            | AMQPValue::ShortInt(_)
            | AMQPValue::ShortUInt(_)
            | AMQPValue::LongInt(_)
            | AMQPValue::LongUInt(_)
            | AMQPValue::LongLongInt(_)
    )
}

/// The consumer priority `x-priority` gives (RabbitMQ's consumer
/// priorities), 0 without it; a value past `i32` is clamped.
fn consumer_priority(arguments: &FieldTable) -> i32 {
    let clamp = |v: i64| i32::try_from(v).unwrap_or(if v < 0 { i32::MIN } else { i32::MAX });
    match arguments.inner().get("x-priority") {
        Some(AMQPValue::ShortShortInt(v)) => i32::from(*v),
        Some(AMQPValue::ShortShortUInt(v)) => i32::from(*v),
        Some(AMQPValue::ShortInt(v)) => i32::from(*v),
        Some(AMQPValue::ShortUInt(v)) => i32::from(*v),
        Some(AMQPValue::LongInt(v)) => *v,
        Some(AMQPValue::LongUInt(v)) => clamp(i64::from(*v)),
        Some(AMQPValue::LongLongInt(v)) => clamp(*v),
        _ => 0,
    }
}

/// Validates `basic.consume` arguments as RabbitMQ's
/// `check_consume_arguments`: `x-priority` must be an integer; other
/// arguments are accepted (and ignored).
///
/// # Errors
/// 406 `invalid arg 'x-priority' for queue 'q' in vhost '/': {unacceptable_type,longstr}`.
fn check_consume_arguments(vhost: &VHost, queue: &QueueName, arguments: &FieldTable) -> Result<(), CoreError> {
    let key = "x-priority";
    match arguments.inner().get(key) {
        Some(value) if !is_integer_field(value) => Err(fail::invalid_queue_arg(
            vhost,
            queue,
            key,
            &format!("{{unacceptable_type,{}}}", type_name(value)),
        )),
        _ => Ok(()),
    }
}

impl Broker {
    /// `basic.qos`: `global=false` sets the prefetch of consumers created
    /// afterwards on the channel; `global=true` limits all unacked
    /// deliveries of the channel. 0 means unlimited.
    pub(crate) fn qos(
        &mut self,
        ctx: &mut Ctx<'_>,
        channel: ChannelId,
        prefetch_count: u16,
        global: bool,
    ) -> Result<Outcome, CoreError> {
        let state = self.channel_mut(channel);
        if global {
            state.channel_prefetch = prefetch_count;
        } else {
            state.consumer_prefetch = prefetch_count;
        }
        let queues: Vec<_> = state.consumed_queues().map(|(v, q)| (v.clone(), q.clone())).collect();
        for (vhost, queue) in queues {
            ctx.touch(&vhost, &queue);
        }
        Ok(Outcome::Done)
    }

    /// `basic.consume`. The reply (`consume-ok`) precedes the first
    /// delivery, since dispatch runs after the reply.
    ///
    /// # Errors
    /// 530 tag already used on the channel; 404 queue missing; 405
    /// another connection's exclusive queue; 406 a non-integer
    /// `x-priority`; 403 exclusive consumer requested on a queue with
    /// consumers, or the queue has one.
    pub(crate) fn consume(
        &mut self,
        ctx: &mut Ctx<'_>,
        channel: ChannelId,
        vhost: &VHost,
        name: &QueueName,
        spec: ConsumeSpec<'_>,
    ) -> Result<Outcome, CoreError> {
        let ConsumeSpec {
            tag,
            no_ack,
            exclusive,
            arguments,
            lookahead,
        } = spec;
        if self.channels.get(&channel).is_some_and(|ch| ch.has_consumer(tag)) {
            return Err(fail::reused_consumer_tag(tag));
        }
        if name.as_str() == REPLY_QUEUE {
            return self.consume_replies(channel, tag, no_ack);
        }
        let serial = self.take_uid();
        let Some(queue) = self.vhosts.get_mut(vhost).and_then(|v| v.queues.get_mut(name)) else {
            return Err(fail::no_queue(vhost, name));
        };
        if !queue.accessible_by(Some(channel.conn)) {
            return Err(fail::queue_locked(vhost, name));
        }
        check_consume_arguments(vhost, name, arguments)?;
        let kind = queue_type(&queue.arguments);
        check_argument_keys(vhost, name, kind.as_deref(), arguments, CONSUMER_ARGUMENTS)?;
        let stream_next = if queue.is_stream() {
            let start = stream_start(vhost, name, arguments, ctx.now_ms)?;
            let state = self.channels.get(&channel);
            check_stream_consumer(
                vhost,
                name,
                state.map_or(0, |c| c.consumer_prefetch),
                no_ack,
                state.map_or(0, |c| c.channel_prefetch),
            )?;
            Some(queue.stream_offset_of(start))
        } else {
            None
        };
        let channels = &self.channels;
        let has_exclusive_consumer = queue.consumers.iter().any(|c| {
            channels
                .get(&c.channel)
                .and_then(|ch| ch.consumers.get(&c.tag))
                .is_some_and(|c| c.exclusive)
        });
        // A stream takes `exclusive` and does not enforce it (RabbitMQ 3.10).
        if stream_next.is_none() && (has_exclusive_consumer || (exclusive && !queue.consumers.is_empty())) {
            return Err(fail::queue_in_exclusive_use(vhost, name));
        }
        queue.consumers.push(ConsumerRef {
            channel,
            tag: tag.clone(),
        });
        queue.had_consumer = true;
        queue.last_used_ms = ctx.now_ms;
        let queue_uid = queue.uid;
        let state = self.channels.entry(channel).or_default();
        let consumer = Consumer {
            vhost: vhost.clone(),
            queue: name.clone(),
            queue_uid,
            serial,
            no_ack,
            exclusive,
            prefetch: state.consumer_prefetch,
            unacked: 0,
            priority: consumer_priority(spec.arguments),
            in_flight: 0,
            in_flight_bytes: 0,
            lookahead,
            stream_next,
        };
        state.consumers.insert(tag.clone(), consumer);
        ctx.touch(vhost, name);
        Ok(Outcome::ConsumeOk {
            consumer_tag: tag.clone(),
        })
    }

    /// `basic.cancel`. An unknown tag is fine (RabbitMQ answers cancel-ok).
    /// Deliveries to the consumer stay unacked on the channel.
    pub(crate) fn cancel(
        &mut self,
        ctx: &mut Ctx<'_>,
        channel: ChannelId,
        tag: &ConsumerTag,
    ) -> Result<Outcome, CoreError> {
        if let Some(state) = self.channels.get_mut(&channel) {
            if state.reply_consumer.as_ref() == Some(tag) {
                state.reply_consumer = None;
            }
        }
        let removed = self.channels.get_mut(&channel).and_then(|ch| ch.consumers.remove(tag));
        if let Some(consumer) = removed {
            self.detach_consumer(ctx, channel, tag, &consumer);
        }
        Ok(Outcome::CancelOk {
            consumer_tag: tag.clone(),
        })
    }

    /// Removes a consumer (already gone from its channel) from its queue. A
    /// queue left without consumers starts its `x-expires` clock, and an
    /// auto-delete queue that had consumers is deleted.
    pub(crate) fn detach_consumer(
        &mut self,
        ctx: &mut Ctx<'_>,
        channel: ChannelId,
        tag: &ConsumerTag,
        consumer: &Consumer,
    ) {
        let vhost = &consumer.vhost;
        let Some(queue) = self
            .vhosts
            .get_mut(vhost)
            .and_then(|v| v.queues.get_mut(&consumer.queue))
        else {
            return;
        };
        if queue.uid != consumer.queue_uid {
            return;
        }
        queue.remove_consumer(&ConsumerRef {
            channel,
            tag: tag.clone(),
        });
        if !queue.consumers.is_empty() {
            // A single-active-consumer queue may have a new active consumer.
            ctx.touch(vhost, &consumer.queue);
            return;
        }
        queue.last_used_ms = ctx.now_ms;
        if queue.auto_delete && queue.had_consumer {
            self.remove_queue(ctx, vhost, &consumer.queue);
        }
    }

    /// `basic.get`: the head ready message, or `GetEmpty`. Counts as use
    /// for `x-expires`.
    ///
    /// # Errors
    /// 404 queue missing; 405 another connection's exclusive queue.
    pub(crate) fn get(
        &mut self,
        ctx: &mut Ctx<'_>,
        channel: ChannelId,
        vhost: &VHost,
        name: &QueueName,
        no_ack: bool,
    ) -> Result<Outcome, CoreError> {
        let Some(queue) = self.vhosts.get_mut(vhost).and_then(|v| v.queues.get_mut(name)) else {
            return Err(fail::no_queue(vhost, name));
        };
        if !queue.accessible_by(Some(channel.conn)) {
            return Err(fail::queue_locked(vhost, name));
        }
        if queue.is_stream() {
            return Err(not_supported("basic.get", vhost, name));
        }
        queue.last_used_ms = ctx.now_ms;
        let expired = queue.take_expired_head(ctx.now_ms, true);
        ctx.dead_letters
            .extend(dead_letters(vhost, queue, expired, DeathReason::Expired));
        let Some(entry) = queue.pop_front() else {
            return Ok(Outcome::GetEmpty);
        };
        let message_count = queue.ready_count();
        let (message, redelivered) = (queue.delivered_message(&entry), entry.redelivered);
        if no_ack {
            queue.stats.get_no_ack += 1;
        } else {
            queue.stats.get += 1;
        }
        queue.stats.redeliver += u64::from(redelivered);
        let state = self.channels.entry(channel).or_default();
        let delivery_tag = if no_ack {
            state.take_delivery_tag()
        } else {
            queue.unacked += 1;
            state.record_unacked(Unacked {
                vhost: vhost.clone(),
                queue: name.clone(),
                queue_uid: queue.uid,
                consumer: None,
                entry,
            })
        };
        Ok(Outcome::GetOk {
            delivery_tag,
            redelivered,
            message_count,
            message,
        })
    }
}
