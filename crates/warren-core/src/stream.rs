//! Stream queues (`x-queue-type = stream`, ADR 0030): an append-only log
//! read by each consumer from its own offset, as RabbitMQ 3.9+ offers
//! them over AMQP 0-9-1.
//!
//! A stream is a queue whose ready messages are never taken by a
//! delivery: the message with `seq` n is the stream's offset n, and each
//! consumer keeps the offset it reads next ([`Consumer::stream_next`]).
//! Its messages are paged to the node's store like any backlog
//! ([`crate::ready`]). Acks only give the consumer its credit back; nacks,
//! rejects, `basic.get`, `queue.purge` and `basic.recover` are refused
//! with 540, and a closed channel requeues nothing.
//!
//! Retention follows RabbitMQ's: the stream is cut into segments of
//! `x-stream-max-segment-size-bytes` (body bytes here; 500 MB by default),
//! and only when a new segment starts are whole old segments dropped: the
//! oldest while the stream is over `x-max-length-bytes` (the newest always
//! stays), and those whose last message is older than `x-max-age`.

use std::sync::Arc;

use amq_protocol_types::{AMQPValue, FieldTable};
use serde::{Deserialize, Serialize};

use crate::broker::{Broker, Ctx};
use crate::channel::Unacked;
use crate::effect::Effect;
use crate::error::CoreError;
use crate::fail;
use crate::ids::{MessageId, QueueName, VHost};
use crate::message::Message;
use crate::queue::{Queue, QueuedMessage};
use crate::queue_args::{duration_ms, integer, string, type_name};

/// RabbitMQ's default `x-stream-max-segment-size-bytes`.
pub const DEFAULT_SEGMENT_BYTES: u64 = 500_000_000;

/// The largest `x-stream-max-segment-size-bytes` RabbitMQ accepts.
pub const MAX_SEGMENT_BYTES: u64 = 3_000_000_000;

/// Messages a dispatch pass reads from the stream at a time for one
/// consumer.
const READ_BATCH: usize = 128;

/// One segment of a stream: where it starts, its body bytes, and when its
/// last message was appended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamSegment {
    pub first_seq: u64,
    pub bytes: u64,
    pub last_ms: u64,
}

/// Where a new consumer of a stream starts (`x-stream-offset`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StreamStart {
    First,
    Last,
    Next,
    Offset(u64),
    /// The first message appended at or after this time (ms since epoch).
    Timestamp(u64),
}

/// RabbitMQ's `parse_offset_arg` of a `basic.consume`'s `x-stream-offset`:
/// `first`, `last` or `next` in any string type, an AMQP timestamp
/// (seconds), an interval in `x-max-age`'s grammar (`"1h"`: that long
/// before `now_ms`), or an integer offset (a negative one reads from the
/// first). `next` without the argument.
///
/// # Errors
/// 406 `invalid arg 'x-stream-offset' for queue 'q' in vhost '/':
/// {invalid_stream_offset_arg,{longstr,<<"5x">>}}`. RabbitMQ's channel
/// crashes (541) on a value of another type; Warren says 406 the same way.
pub(crate) fn stream_start(
    vhost: &VHost,
    queue: &QueueName,
    arguments: &FieldTable,
    now_ms: u64,
) -> Result<StreamStart, CoreError> {
    let Some(value) = arguments.inner().get("x-stream-offset") else {
        return Ok(StreamStart::Next);
    };
    match string(value).as_deref() {
        Some("first") => return Ok(StreamStart::First),
        Some("last") => return Ok(StreamStart::Last),
        Some("next") => return Ok(StreamStart::Next),
        Some(other) => {
            return match duration_ms(other) {
                Some(ago) => Ok(StreamStart::Timestamp(now_ms.saturating_sub(ago))),
                None => Err(fail::invalid_queue_arg(
                    vhost,
                    queue,
                    "x-stream-offset",
                    &format!("{{invalid_stream_offset_arg,{{{},<<{other:?}>>}}}}", type_name(value)),
                )),
            };
        }
        None => {}
    }
    if let AMQPValue::Timestamp(seconds) = value {
        return Ok(StreamStart::Timestamp(seconds.saturating_mul(1000)));
    }
    match integer(value) {
        Some(offset) => Ok(StreamStart::Offset(u64::try_from(offset).unwrap_or(0))),
        None => Err(fail::invalid_queue_arg(
            vhost,
            queue,
            "x-stream-offset",
            &format!(
                "{{invalid_stream_offset_arg,{{{},{}}}}}",
                type_name(value),
                shown(value)
            ),
        )),
    }
}

fn shown(value: &AMQPValue) -> String {
    match value {
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::Float(f) => f.to_string(),
        AMQPValue::Double(d) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// 540 for what a stream does not do (`basic.get`, `queue.purge`,
/// `basic.nack` and `basic.reject`, `basic.recover`), worded as RabbitMQ's
/// `"… not supported by stream queues queue 'q' in vhost '/'"`.
pub(crate) fn not_supported(what: &str, vhost: &VHost, queue: &QueueName) -> CoreError {
    CoreError::NotImplemented(format!(
        "{what} not supported by stream queues {}",
        fail::queue_resource(vhost, queue)
    ))
}

/// The checks RabbitMQ's `rabbit_stream_queue:consume` makes, in its
/// order: a consumer prefetch is required (406), `no_ack` is refused
/// (540), and so is a channel with a global prefetch (540).
pub(crate) fn check_stream_consumer(
    vhost: &VHost,
    queue: &QueueName,
    prefetch: u16,
    no_ack: bool,
    global_prefetch: u16,
) -> Result<(), CoreError> {
    let resource = fail::queue_resource(vhost, queue);
    if prefetch == 0 {
        return Err(CoreError::PreconditionFailed(format!(
            "consumer prefetch count is not set for '{resource}'"
        )));
    }
    if no_ack {
        return Err(CoreError::NotImplemented(format!(
            "automatic acknowledgement not supported by stream queues {resource}"
        )));
    }
    if global_prefetch != 0 {
        return Err(CoreError::NotImplemented(format!(
            "{resource} does not support global qos"
        )));
    }
    Ok(())
}

impl Queue {
    /// Whether it was declared `x-queue-type = stream`.
    pub fn is_stream(&self) -> bool {
        crate::queue_args::is_queue_type(&self.arguments, "stream")
    }

    /// Its `x-stream-max-segment-size-bytes`.
    fn segment_bytes(&self) -> u64 {
        self.arguments
            .inner()
            .get("x-stream-max-segment-size-bytes")
            .and_then(integer)
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(DEFAULT_SEGMENT_BYTES)
    }

    /// Its `x-max-age`, in ms.
    fn max_age_ms(&self) -> Option<u64> {
        let value = self.arguments.inner().get("x-max-age")?;
        crate::queue_args::max_age_ms(value).ok()
    }

    /// The offset of its first retained message (its next offset when it
    /// holds none).
    pub fn stream_first(&mut self) -> u64 {
        self.ready.front().map_or(self.next_seq, |m| m.seq)
    }

    /// Appends a message to the stream at `now_ms`: a new segment starts
    /// when the last reached its size, and then retention runs.
    pub(crate) fn append(&mut self, id: MessageId, message: Arc<Message>, now_ms: u64) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let message = with_offset(&message, seq);
        let bytes = message.body_len();
        let segment_bytes = self.segment_bytes();
        let rolled = match self.segments.back_mut() {
            Some(last) if last.bytes < segment_bytes => {
                last.bytes += bytes;
                last.last_ms = now_ms;
                false
            }
            _ => {
                self.segments.push_back(StreamSegment {
                    first_seq: seq,
                    bytes,
                    last_ms: now_ms,
                });
                true
            }
        };
        self.insert(QueuedMessage {
            id,
            seq,
            message,
            redelivered: false,
            expires_at_ms: None,
            priority: 0,
            returns: 0,
            appended_ms: now_ms,
        });
        if rolled {
            self.apply_retention(now_ms);
        }
    }

    /// Drops whole segments, oldest first, while the stream is over
    /// `x-max-length-bytes` or their last message is older than
    /// `x-max-age`; the newest segment always stays.
    fn apply_retention(&mut self, now_ms: u64) {
        let max_bytes = self.args.max_length_bytes;
        let oldest_kept = self.max_age_ms().map(|age| now_ms.saturating_sub(age));
        let mut total: u64 = self.segments.iter().map(|s| s.bytes).sum();
        while self.segments.len() > 1 {
            let Some(oldest) = self.segments.front() else { break };
            let too_big = max_bytes.is_some_and(|max| total > max);
            let too_old = oldest_kept.is_some_and(|limit| oldest.last_ms < limit);
            if !too_big && !too_old {
                break;
            }
            total -= oldest.bytes;
            self.segments.pop_front();
            let until = self.segments.front().map_or(self.next_seq, |s| s.first_seq);
            while self.ready.front().is_some_and(|m| m.seq < until) {
                if self.pop_front().is_none() {
                    break;
                }
            }
        }
    }

    /// The offset a new consumer starting at `start` reads first.
    pub(crate) fn stream_offset_of(&mut self, start: StreamStart) -> u64 {
        let first = self.stream_first();
        match start {
            StreamStart::First => first,
            StreamStart::Last => self.next_seq.saturating_sub(1).max(first),
            StreamStart::Next => self.next_seq,
            StreamStart::Offset(offset) => offset.max(first),
            StreamStart::Timestamp(ms) => self.ready.first_appended_at_or_after(ms).unwrap_or(self.next_seq),
        }
    }
}

/// `message` as the stream keeps it at offset `seq`: with the
/// `x-stream-offset` header (a long) its deliveries carry, as RabbitMQ's
/// do; added once, when appended, not at every delivery.
fn with_offset(message: &Message, seq: u64) -> Arc<Message> {
    let mut message = message.clone();
    let properties = Arc::make_mut(&mut message.properties);
    let headers = properties.headers.get_or_insert_with(FieldTable::default);
    headers.insert(
        "x-stream-offset".into(),
        AMQPValue::LongLongInt(i64::try_from(seq).unwrap_or(i64::MAX)),
    );
    Arc::new(message)
}

impl Broker {
    /// Dispatch of a stream: each consumer gets the messages from its
    /// offset on, within its prefetch; nothing leaves the stream.
    pub(crate) fn dispatch_stream(&mut self, ctx: &mut Ctx<'_>, vhost: &VHost, name: &QueueName) {
        let Some(queue) = self.vhosts.get_mut(vhost).and_then(|v| v.queues.get_mut(name)) else {
            return;
        };
        let first = queue.stream_first();
        for target in queue.consumers.clone() {
            let Some(channel) = self.channels.get_mut(&target.channel) else {
                continue;
            };
            while let Some(consumer) = channel.consumers.get_mut(&target.tag) {
                let next = consumer.stream_next.unwrap_or(queue.next_seq).max(first);
                consumer.stream_next = Some(next);
                let serial = consumer.serial;
                // No more than the consumer may take now: a read clones.
                let room = channel.consumer_room(&target.tag).min(READ_BATCH);
                if next >= queue.next_seq || room == 0 {
                    break;
                }
                let batch = queue.ready.read_from(next, room);
                if batch.is_empty() {
                    break;
                }
                for entry in batch {
                    let seq = entry.seq;
                    let message = Arc::clone(&entry.message);
                    queue.stats.deliver += 1;
                    queue.unacked += 1;
                    let delivery_tag = channel.record_unacked(Unacked {
                        vhost: vhost.clone(),
                        queue: name.clone(),
                        queue_uid: queue.uid,
                        consumer: Some((target.tag.clone(), serial)),
                        entry,
                    });
                    if let Some(consumer) = channel.consumers.get_mut(&target.tag) {
                        consumer.stream_next = Some(seq + 1);
                    }
                    ctx.effects.push(Effect::Deliver {
                        channel: target.channel,
                        consumer_tag: target.tag.clone(),
                        delivery_tag,
                        redelivered: false,
                        message,
                    });
                }
            }
        }
    }

    /// A stream consumer's deliveries its node never sent went back
    /// (ADR 0026): it reads again from the first of them, if it is still
    /// there.
    pub(crate) fn rewind_stream_consumer(
        &mut self,
        channel: crate::ids::ChannelId,
        consumer: Option<&(crate::ids::ConsumerTag, u64)>,
        seq: u64,
    ) {
        let Some((tag, serial)) = consumer else { return };
        let Some(consumer) = self
            .channels
            .get_mut(&channel)
            .and_then(|c| c.consumers.get_mut(tag))
            .filter(|c| c.serial == *serial)
        else {
            return;
        };
        consumer.stream_next = Some(consumer.stream_next.map_or(seq, |next| next.min(seq)));
    }
}
