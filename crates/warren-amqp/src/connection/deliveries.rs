//! Effects from the core: deliveries (held or written by the channel's
//! credit, ADR 0026), server cancels, and the returns of held deliveries.

use std::time::Instant;

use warren_core::{AfterReturn, Command, DeliveryTag, Effect};
use warren_wire::protocol::{basic, AMQPClass};

use crate::channel::{ChannelState, Pending};
use crate::convert::short;
use crate::counters::connection_counter;
use crate::credit::HeldDelivery;
use crate::error::AmqpError;
use crate::registry::EffectBatch;

use super::Connection;

impl Connection {
    pub(super) async fn handle_effects(&mut self, batch: EffectBatch) -> Result<(), AmqpError> {
        // One clock read a batch: the consumer timeout needs no finer time.
        let now = Instant::now();
        // Asked once a batch, and only if it delivers to a manual consumer.
        let mut fenced: Option<bool> = None;
        for effect in batch {
            match effect {
                Effect::Reply { channel, outcome } => self.handle_reply(channel.channel, outcome).await?,
                Effect::Deliver {
                    channel,
                    consumer_tag,
                    delivery_tag,
                    redelivered,
                    message,
                } => {
                    if !self.accepts_deliveries(channel.channel) {
                        continue;
                    }
                    let slot = self.channels.entry(channel.channel).or_default();
                    let manual = !slot.auto_ack_consumers.contains(consumer_tag.as_str());
                    let delivery = HeldDelivery {
                        consumer: slot.credit.id_of(consumer_tag.as_str()),
                        consumer_tag,
                        delivery_tag: delivery_tag.0,
                        redelivered,
                        message,
                    };
                    // A no-ack consumer has no prefetch: its window in the
                    // core comes back as its deliveries are written; a
                    // manual one gets what its client-side prefetch allows
                    // (ADR 0026).
                    let now_out = if manual {
                        // A node that may have been declared down holds
                        // them back (ADR 0028): they may be on their way
                        // to another consumer already.
                        if *fenced.get_or_insert_with(|| deliveries_held_back(&self.frontend, self.id)) {
                            slot.credit.hold(delivery);
                            self.fence_holding = true;
                            None
                        } else {
                            slot.credit.offer(delivery)
                        }
                    } else {
                        let bytes = delivery.message.body_len();
                        if let Some(written) = slot.count_no_ack_written(delivery.consumer_tag.as_str(), bytes) {
                            self.written_due
                                .push((channel.channel, delivery.consumer_tag.clone(), written));
                        }
                        Some(delivery)
                    };
                    if let Some(delivery) = now_out {
                        self.write_delivery(channel.channel, delivery, manual, now)?;
                    }
                }
                Effect::CancelConsumer { channel, consumer_tag } => {
                    let slot = self.slot(channel.channel);
                    slot.auto_ack_consumers.remove(consumer_tag.as_str());
                    let unsent = slot.credit.cancelled(consumer_tag.as_str());
                    self.unsent_due.push((channel.channel, unsent));
                    self.release_held(channel.channel, now)?;
                    if self.cancel_notify && self.accepts_deliveries(channel.channel) {
                        let cancel = basic::Cancel {
                            consumer_tag: short(consumer_tag.as_str()),
                            nowait: true,
                        };
                        self.send_method(channel.channel, AMQPClass::Basic(basic::AMQPMethod::Cancel(cancel)));
                    }
                }
            }
        }
        self.report_written_due().await?;
        self.return_unsent_due().await
    }

    /// Writes a delivery to the client; `manual`: it awaits an ack (sent
    /// at `now`, for the consumer timeout).
    pub(super) fn write_delivery(
        &mut self,
        ch: u16,
        delivery: HeldDelivery,
        manual: bool,
        now: Instant,
    ) -> Result<(), AmqpError> {
        let counters = &self.frontend.counters;
        let slot = self.channels.entry(ch).or_default();
        if manual {
            crate::counters::bump(&counters.delivered_consume_manual_ack, 1);
            slot.record_delivery(delivery.delivery_tag, delivery.consumer, now);
        } else {
            crate::counters::bump(&counters.delivered_consume_auto_ack, 1);
        }
        let redelivered = delivery.redelivered;
        crate::counters::bump(&counters.redelivered, u64::from(redelivered));
        self.stats.bump(connection_counter::DELIVER_GET, 1);
        self.stats.bump(connection_counter::REDELIVER, u64::from(redelivered));
        let message = &delivery.message;
        let deliver = warren_wire::Deliver {
            consumer_tag: delivery.consumer_tag.as_str(),
            delivery_tag: delivery.delivery_tag,
            redelivered,
            exchange: message.exchange.as_str(),
            routing_key: &message.routing_key,
        };
        self.send_deliver(ch, &deliver);
        self.send_content(ch, message)
    }

    /// Writes the held deliveries of channel `ch` that the client's
    /// prefetch now allows.
    pub(super) fn release_held(&mut self, ch: u16, now: Instant) -> Result<(), AmqpError> {
        if !self.accepts_deliveries(ch) {
            return Ok(());
        }
        if !self.slot(ch).credit.holds_any() {
            return Ok(());
        }
        if deliveries_held_back(&self.frontend, self.id) {
            self.fence_holding = true;
            return Ok(());
        }
        let released = self.slot(ch).credit.releasable();
        for delivery in released {
            self.write_delivery(ch, delivery, true, now)?;
        }
        Ok(())
    }

    /// Once the delivery fence lifts, writes what every channel holds and
    /// the prefetch allows (ADR 0028).
    pub(super) fn release_after_fence(&mut self) -> Result<(), AmqpError> {
        if deliveries_held_back(&self.frontend, self.id) {
            return Ok(());
        }
        self.fence_holding = false;
        let now = Instant::now();
        let channels: Vec<u16> = self.channels.keys().copied().collect();
        for ch in channels {
            self.release_held(ch, now)?;
        }
        Ok(())
    }

    /// Reports the deliveries of `no_ack` consumers written since the last
    /// report (`Command::Written`), for the channels still open.
    pub(super) async fn report_written_due(&mut self) -> Result<(), AmqpError> {
        for (ch, consumer_tag, (count, bytes)) in std::mem::take(&mut self.written_due) {
            if !self.accepts_deliveries(ch) {
                continue;
            }
            let command = Command::Written {
                consumer_tag: consumer_tag.clone(),
                count,
                bytes,
            };
            let pending = Pending::Written {
                consumer_tag,
                count,
                bytes,
            };
            self.submit(ch, pending, command).await?;
        }
        Ok(())
    }

    /// Sends the held deliveries of cancelled consumers back to their
    /// queues, for the channels still open.
    pub(super) async fn return_unsent_due(&mut self) -> Result<(), AmqpError> {
        for (ch, tags) in std::mem::take(&mut self.unsent_due) {
            if tags.is_empty() || !self.accepts_deliveries(ch) {
                continue;
            }
            let command = Command::ReturnUnsent {
                tags: tags.iter().copied().map(DeliveryTag).collect(),
                then: AfterReturn::Nothing,
            };
            self.submit(ch, Pending::Unsent { tags }, command).await?;
        }
        Ok(())
    }

    /// Takes every channel's held deliveries out (the connection closes).
    pub(super) fn take_all_held(&mut self) -> Vec<(u16, Vec<u64>)> {
        let mut held: Vec<(u16, Vec<u64>)> = self
            .channels
            .iter_mut()
            .filter(|(_, slot)| slot.state == ChannelState::Open && !slot.draining)
            .map(|(ch, slot)| (*ch, slot.credit.take_all_held()))
            .filter(|(_, tags)| !tags.is_empty())
            .collect();
        held.sort_unstable_by_key(|(ch, _)| *ch);
        held
    }

    pub(super) fn accepts_deliveries(&self, ch: u16) -> bool {
        self.channels
            .get(&ch)
            .is_some_and(|s| s.state == ChannelState::Open && !s.draining)
    }
}

/// Deliveries to manual-ack consumers must wait: the node's fence is
/// up (ADR 0028), or this connection was dropped — the node applied a
/// verdict that handed its deliveries to others, and the end of the
/// effect stream that tells it so is still behind batches queued
/// before (found in review: the fence alone lifts once the verdict is
/// applied, before the connection has seen it).
fn deliveries_held_back(frontend: &crate::frontend::Frontend, id: warren_core::ConnectionId) -> bool {
    !frontend.registry.is_registered(id) || frontend.node.deliveries_fenced()
}
