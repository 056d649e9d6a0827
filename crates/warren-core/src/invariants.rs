//! The state's invariants, checked by tests after every batch.

use std::collections::{BTreeMap, BTreeSet};

use crate::broker::Broker;
use crate::consumer::ConsumerRef;
use crate::exchange::{Destination, Exchange};
use crate::ids::{ChannelId, ConsumerTag, MessageId, QueueName, VHost};

fn ensure(condition: bool, describe: impl FnOnce() -> String) -> Result<(), String> {
    if condition {
        Ok(())
    } else {
        Err(describe())
    }
}

/// See [`Broker::check_invariants`].
pub(crate) fn check(broker: &Broker) -> Result<(), String> {
    let mut seen: BTreeSet<MessageId> = BTreeSet::new();
    let mut unacked_per_queue: BTreeMap<(VHost, QueueName, u64), u64> = BTreeMap::new();
    let mut unacked_per_consumer: BTreeMap<(ChannelId, ConsumerTag, u64), u32> = BTreeMap::new();

    // A delivery from a stream leaves its message in the stream.
    let streams: BTreeSet<(VHost, QueueName, u64)> = broker
        .vhosts
        .iter()
        .flat_map(|(vhost, vh)| vh.queues.values().map(move |q| (vhost, q)))
        .filter(|(_, q)| q.is_stream())
        .map(|(vhost, q)| (vhost.clone(), q.name.clone(), q.uid))
        .collect();
    let queues: BTreeSet<(VHost, QueueName, u64)> = broker
        .vhosts
        .iter()
        .flat_map(|(vhost, vh)| vh.queues.values().map(move |q| (vhost.clone(), q.name.clone(), q.uid)))
        .collect();
    let mut seen_by_consumer = BTreeSet::new();
    for (id, channel) in &broker.channels {
        for (tag, unacked) in &channel.unacked {
            let message = unacked.entry.id;
            ensure(tag.0 > 0 && tag.0 < channel.next_delivery_tag, || {
                format!("{id:?}: tag {tag:?} not yet issued")
            })?;
            ensure(message.0 < broker.next_message_id, || {
                format!("{message:?} not yet issued")
            })?;
            let key = (unacked.vhost.clone(), unacked.queue.clone(), unacked.queue_uid);
            // A stream's message goes to each of its consumers once; that
            // of a deleted queue may have been a stream's.
            let from_stream = streams.contains(&key) || !queues.contains(&key);
            let once = if from_stream {
                seen_by_consumer.insert((message, *id, unacked.consumer.clone()))
            } else {
                seen.insert(message)
            };
            ensure(once, || format!("{message:?} unacked twice (channel {id:?})"))?;
            *unacked_per_queue.entry(key).or_default() += 1;
            if let Some((consumer, serial)) = &unacked.consumer {
                *unacked_per_consumer
                    .entry((*id, consumer.clone(), *serial))
                    .or_default() += 1;
            }
        }
        for (tag, consumer) in &channel.consumers {
            let queue = broker
                .vhosts
                .get(&consumer.vhost)
                .and_then(|v| v.queues.get(&consumer.queue))
                .filter(|q| q.uid == consumer.queue_uid);
            let Some(queue) = queue else {
                return Err(format!(
                    "consumer {tag} of {id:?} on missing queue '{}'",
                    consumer.queue
                ));
            };
            let reference = ConsumerRef {
                channel: *id,
                tag: tag.clone(),
            };
            ensure(queue.consumers.contains(&reference), || {
                format!("consumer {tag} of {id:?} unknown to queue '{}'", queue.name)
            })?;
            let expected = if consumer.no_ack {
                0
            } else {
                unacked_per_consumer
                    .get(&(*id, tag.clone(), consumer.serial))
                    .copied()
                    .unwrap_or(0)
            };
            ensure(consumer.unacked == expected, || {
                format!(
                    "consumer {tag} of {id:?} counts {} unacked, channel holds {expected}",
                    consumer.unacked
                )
            })?;
        }
    }

    for (vhost, vh) in &broker.vhosts {
        for exchange in Exchange::predeclared() {
            ensure(vh.exchanges.contains_key(&exchange.name), || {
                format!("{vhost}: {} missing", exchange.name)
            })?;
        }
        for exchange in vh.exchanges.values() {
            for binding in &exchange.bindings {
                let live = match &binding.destination {
                    Destination::Queue(queue) => vh.queues.contains_key(queue),
                    Destination::Exchange(other) => vh.exchanges.contains_key(other),
                };
                ensure(live, || {
                    format!(
                        "{vhost}: binding of '{}' to missing {:?}",
                        exchange.name, binding.destination
                    )
                })?;
            }
        }
        for queue in vh.queues.values() {
            let name = &queue.name;
            let mut previous_key = None;
            let mut bytes = 0;
            let ready = queue
                .ready
                .entries()
                .map_err(|e| format!("queue '{name}': a page cannot be read: {e}"))?;
            for entry in &ready {
                ensure(previous_key.is_none_or(|p| p < entry.order_key()), || {
                    format!("queue '{name}' ready out of order: {:?}", queue.ready)
                })?;
                ensure(entry.seq < queue.next_seq, || {
                    format!("queue '{name}' seq {} not yet issued", entry.seq)
                })?;
                ensure(entry.id.0 < broker.next_message_id, || {
                    format!("{:?} not yet issued", entry.id)
                })?;
                ensure(seen.insert(entry.id), || {
                    format!("{:?} in two places (queue '{name}')", entry.id)
                })?;
                previous_key = Some(entry.order_key());
                bytes += entry.message.body_len();
            }
            let expiries: BTreeSet<(u64, u64)> = ready
                .iter()
                .filter_map(|m| m.expires_at_ms.map(|at| (at, m.seq)))
                .collect();
            ensure(expiries == queue.expiries, || {
                format!("queue '{name}' expiry index out of date")
            })?;
            ensure(bytes == queue.ready_bytes, || {
                format!("queue '{name}' counts {} bytes, holds {bytes}", queue.ready_bytes)
            })?;
            let expected = unacked_per_queue
                .get(&(vhost.clone(), name.clone(), queue.uid))
                .copied()
                .unwrap_or(0);
            ensure(queue.unacked == expected, || {
                format!(
                    "queue '{name}' counts {} unacked, channels hold {expected}",
                    queue.unacked
                )
            })?;
            if queue.is_stream() {
                check_stream(broker, queue, &ready)?;
            } else {
                check_queue_consumers(broker, vhost, queue)?;
            }
        }
    }
    Ok(())
}

/// A stream holds the offsets from its first to its last without a gap,
/// its segments start at or before its first, and each consumer has read
/// to its end or has no credit.
fn check_stream(
    broker: &Broker,
    queue: &crate::queue::Queue,
    ready: &[crate::queue::QueuedMessage],
) -> Result<(), String> {
    let name = &queue.name;
    let first = ready.first().map_or(queue.next_seq, |m| m.seq);
    ensure(
        ready.iter().enumerate().all(|(i, m)| m.seq == first + i as u64)
            && first + ready.len() as u64 == queue.next_seq,
        || format!("stream '{name}' has a gap"),
    )?;
    ensure(
        ready.is_empty() || queue.segments.front().is_some_and(|s| s.first_seq <= first),
        || format!("stream '{name}' holds messages before its first segment"),
    )?;
    for reference in &queue.consumers {
        let channel = broker.channels.get(&reference.channel);
        let Some(consumer) = channel.and_then(|ch| ch.consumers.get(&reference.tag)) else {
            return Err(format!("stream '{name}' lists dead consumer {}", reference.tag));
        };
        let Some(next) = consumer.stream_next else {
            return Err(format!("consumer {} of stream '{name}' has no offset", reference.tag));
        };
        let can_take = channel.is_some_and(|ch| ch.consumer_can_take(&reference.tag));
        ensure(next >= queue.next_seq || !can_take, || {
            format!(
                "stream '{name}' has messages for consumer {} with credit",
                reference.tag
            )
        })?;
    }
    Ok(())
}

fn check_queue_consumers(broker: &Broker, vhost: &VHost, queue: &crate::queue::Queue) -> Result<(), String> {
    let name = &queue.name;
    let unique: BTreeSet<_> = queue.consumers.iter().collect();
    ensure(unique.len() == queue.consumers.len(), || {
        format!("queue '{name}' lists a consumer twice")
    })?;
    ensure(
        queue.consumers.is_empty() || queue.next_consumer < queue.consumers.len(),
        || format!("queue '{name}' round-robin cursor out of range"),
    )?;
    ensure(
        !(queue.auto_delete && queue.had_consumer && queue.consumers.is_empty()),
        || format!("auto-delete queue '{name}' outlived its last consumer"),
    )?;
    let mut exclusive = 0;
    for reference in &queue.consumers {
        let consumer = broker
            .channels
            .get(&reference.channel)
            .and_then(|ch| ch.consumers.get(&reference.tag));
        let Some(consumer) = consumer else {
            return Err(format!(
                "queue '{name}' lists dead consumer {} of {:?}",
                reference.tag, reference.channel
            ));
        };
        ensure(
            &consumer.vhost == vhost && &consumer.queue == name && consumer.queue_uid == queue.uid,
            || format!("consumer {} consumes elsewhere than queue '{name}'", reference.tag),
        )?;
        exclusive += usize::from(consumer.exclusive);
    }
    ensure(exclusive == 0 || queue.consumers.len() == 1, || {
        format!("queue '{name}' has an exclusive consumer among others")
    })?;
    if !queue.ready.is_empty() {
        let idle = crate::dispatch::idle_consumer(queue, &broker.channels);
        ensure(idle.is_none(), || {
            format!("queue '{name}' has ready messages and a consumer with credit")
        })?;
    }
    Ok(())
}
