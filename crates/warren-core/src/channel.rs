//! Per-channel state: qos, delivery tags, unacked deliveries, consumers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::consumer::Consumer;
use crate::ids::{ConsumerTag, DeliveryTag, QueueName, VHost};
use crate::queue::QueuedMessage;

/// A delivery (or `get-ok`) awaiting ack.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Unacked {
    pub vhost: VHost,
    pub queue: QueueName,
    /// The queue incarnation it came from; if the queue has since been
    /// deleted (or redeclared), acks are accepted and requeues drop it.
    pub queue_uid: u64,
    /// The consumer (tag, serial) it went to; `None` for `basic.get`.
    pub consumer: Option<(ConsumerTag, u64)>,
    pub entry: QueuedMessage,
}

/// A channel as the core knows it; created on its first channel-scoped command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Channel {
    /// Prefetch given to consumers created from now on (`qos global=false`).
    pub consumer_prefetch: u16,
    /// Limit on all unacked deliveries of the channel (`qos global=true`); 0 = none.
    pub channel_prefetch: u16,
    pub next_delivery_tag: u64,
    pub unacked: BTreeMap<DeliveryTag, Unacked>,
    pub consumers: BTreeMap<ConsumerTag, Consumer>,
    /// The tag of its direct reply-to consumer (`amq.rabbitmq.reply-to`).
    #[serde(default)]
    pub reply_consumer: Option<ConsumerTag>,
}

impl Default for Channel {
    fn default() -> Self {
        Self {
            consumer_prefetch: 0,
            channel_prefetch: 0,
            next_delivery_tag: 1,
            unacked: BTreeMap::new(),
            consumers: BTreeMap::new(),
            reply_consumer: None,
        }
    }
}

impl Channel {
    /// Whether `tag` names a consumer of this channel (queue or reply-to).
    pub fn has_consumer(&self, tag: &ConsumerTag) -> bool {
        self.consumers.contains_key(tag) || self.reply_consumer.as_ref() == Some(tag)
    }

    /// Whether the channel-wide prefetch (`qos global=true`) allows one
    /// more acked delivery. Exact: the lookahead of ADR 0026 is per
    /// consumer, whose record says whether it applies.
    pub fn has_credit(&self) -> bool {
        self.room().is_none_or(|room| room > 0)
    }

    /// How many more acked deliveries the channel-wide prefetch allows
    /// (`None`: none set).
    pub fn room(&self) -> Option<usize> {
        (self.channel_prefetch != 0).then(|| usize::from(self.channel_prefetch).saturating_sub(self.unacked.len()))
    }

    /// How many more deliveries manual-ack consumer `tag` may be
    /// assigned now: its own room and the channel's (`usize::MAX` for
    /// neither limited; 0 for no such consumer).
    pub fn consumer_room(&self, tag: &ConsumerTag) -> usize {
        let Some(consumer) = self.consumers.get(tag) else {
            return 0;
        };
        let own = consumer.room().map_or(usize::MAX, |room| room as usize);
        own.min(self.room().unwrap_or(usize::MAX))
    }

    /// Whether consumer `tag` may receive one more message now.
    pub fn consumer_can_take(&self, tag: &ConsumerTag) -> bool {
        self.consumers.get(tag).is_some_and(|consumer| self.can_take(consumer))
    }

    /// [`Channel::consumer_can_take`] for a consumer of this channel
    /// already looked up.
    pub fn can_take(&self, consumer: &Consumer) -> bool {
        // A `no_ack` consumer's deliveries do not count against the
        // channel's prefetch, only against its own window.
        consumer.has_credit() && (consumer.no_ack || self.has_credit())
    }

    /// Assigns the next delivery tag.
    pub fn take_delivery_tag(&mut self) -> DeliveryTag {
        let tag = DeliveryTag(self.next_delivery_tag);
        self.next_delivery_tag += 1;
        tag
    }

    /// Records an unacked delivery and returns its tag.
    pub fn record_unacked(&mut self, unacked: Unacked) -> DeliveryTag {
        let tag = self.take_delivery_tag();
        if let Some((consumer_tag, serial)) = &unacked.consumer {
            if let Some(consumer) = self.consumers.get_mut(consumer_tag).filter(|c| c.serial == *serial) {
                consumer.unacked += 1;
            }
        }
        self.unacked.insert(tag, unacked);
        tag
    }

    /// The tags an ack/nack of `tag` (with `multiple`) covers, or `None` if
    /// it names an unknown tag (RabbitMQ `collect_acks`): tag 0 with
    /// `multiple` means every unacked delivery.
    pub fn tags_covered(&self, tag: DeliveryTag, multiple: bool) -> Option<Vec<DeliveryTag>> {
        if multiple && tag.0 == 0 {
            return Some(self.unacked.keys().copied().collect());
        }
        if !self.unacked.contains_key(&tag) {
            return None;
        }
        if !multiple {
            return Some(vec![tag]);
        }
        Some(self.unacked.range(..=tag).map(|(t, _)| *t).collect())
    }

    /// Removes the unacked delivery `tag`, crediting its consumer back.
    pub fn take_unacked(&mut self, tag: DeliveryTag) -> Option<Unacked> {
        let unacked = self.unacked.remove(&tag)?;
        if let Some((consumer_tag, serial)) = &unacked.consumer {
            if let Some(consumer) = self.consumers.get_mut(consumer_tag).filter(|c| c.serial == *serial) {
                consumer.unacked = consumer.unacked.saturating_sub(1);
            }
        }
        Some(unacked)
    }

    /// Queues this channel's consumers read from (to re-run dispatch when
    /// the channel gains credit).
    pub fn consumed_queues(&self) -> impl Iterator<Item = (&VHost, &QueueName)> {
        self.consumers.values().map(|c| (&c.vhost, &c.queue))
    }
}
