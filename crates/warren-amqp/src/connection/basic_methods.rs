//! `basic.*` and `tx.*` methods: publish, qos, consume, cancel, get,
//! settlements (with the client-side credit of ADR 0026), recover, and
//! transactions (ADR 0020).

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use warren_core::access::{Perm, ResourceKind};
use warren_core::tx::{Transaction, TxPublish, TxSettle, TxSettleKind};
use warren_core::{
    reply_code, AfterReturn, ChannelId, Command, ConsumerTag, DeliveryTag, ExchangeName, Message, VHost,
};
use warren_wire::protocol::{basic, tx, AMQPClass};

use crate::channel::{HeldBytes, PartialContent, Pending, TxBuffer};
use crate::convert::properties_to_wire;
use crate::counters::connection_counter;
use crate::error::AmqpError;
use crate::names::generated_consumer_tag;

use super::{not_from_client, returning_unsent, transaction_too_large, Connection, TX_ITEM_BYTES, TX_MAX_BYTES};

impl Connection {
    pub(super) async fn handle_basic_method(
        &mut self,
        ch: u16,
        vhost: VHost,
        method: basic::AMQPMethod,
    ) -> Result<(), AmqpError> {
        match method {
            basic::AMQPMethod::Publish(m) => {
                self.publishes = true;
                if m.immediate {
                    return Err(AmqpError::connection_for(
                        reply_code::NOT_IMPLEMENTED,
                        "NOT_IMPLEMENTED - immediate=true",
                        (60, 40),
                    ));
                }
                self.slot(ch).content = Some(PartialContent {
                    exchange: m.exchange.as_str().to_owned(),
                    routing_key: m.routing_key.as_str().to_owned(),
                    mandatory: m.mandatory,
                    header: None,
                    body: BytesMut::new(),
                    held: HeldBytes::new(self.frontend.receiving_bytes.clone()),
                });
                Ok(())
            }
            basic::AMQPMethod::Qos(m) => {
                if self.qos_prefetch_size != 0 {
                    // RabbitMQ 3.10: `rabbit_channel`, basic.qos.
                    return Err(AmqpError::connection_for(
                        reply_code::NOT_IMPLEMENTED,
                        format!("NOT_IMPLEMENTED - prefetch_size!=0 ({})", self.qos_prefetch_size),
                        (60, 10),
                    ));
                }
                self.slot(ch).credit.qos(m.prefetch_count, m.global);
                let command = Command::Qos {
                    prefetch_count: m.prefetch_count,
                    global: m.global,
                };
                self.submit(ch, Pending::Qos, command).await
            }
            basic::AMQPMethod::Consume(m) => {
                let queue = self.resolve_queue(ch, m.queue.as_str(), (60, 20))?;
                self.authorize(ch, (60, 20), &[(ResourceKind::Queue, queue.as_str(), Perm::Read)])?;
                let tag = if m.consumer_tag.as_str().is_empty() {
                    generated_consumer_tag()
                } else {
                    m.consumer_tag.as_str().to_owned()
                };
                self.slot(ch).credit.consume(&tag, m.no_ack);
                let command = Command::Consume {
                    vhost,
                    queue,
                    consumer_tag: ConsumerTag::new(tag),
                    no_ack: m.no_ack,
                    exclusive: m.exclusive,
                    arguments: m.arguments,
                    lookahead: warren_core::Lookahead::CURRENT,
                };
                let pending = Pending::Consume {
                    nowait: m.nowait,
                    no_ack: m.no_ack,
                };
                self.submit(ch, pending, command).await
            }
            basic::AMQPMethod::Cancel(m) => {
                // Its held deliveries go back with the cancel; any that
                // arrive before the cancel applies go back after it.
                let credit = &mut self.slot(ch).credit;
                let consumer = credit.id_of(m.consumer_tag.as_str());
                let unsent = credit.take_held_of(m.consumer_tag.as_str());
                let then = AfterReturn::Cancel {
                    consumer_tag: ConsumerTag::new(m.consumer_tag.as_str()),
                };
                let command = returning_unsent(unsent, then);
                let pending = Pending::Cancel {
                    nowait: m.nowait,
                    consumer,
                };
                self.submit(ch, pending, command).await
            }
            basic::AMQPMethod::Get(m) => {
                let queue = self.resolve_queue(ch, m.queue.as_str(), (60, 70))?;
                self.authorize(ch, (60, 70), &[(ResourceKind::Queue, queue.as_str(), Perm::Read)])?;
                self.submit(
                    ch,
                    Pending::Get { no_ack: m.no_ack },
                    Command::Get {
                        vhost,
                        queue,
                        no_ack: m.no_ack,
                    },
                )
                .await
            }
            basic::AMQPMethod::Ack(m) if self.slot(ch).tx.is_some() => {
                self.settle_in_tx(ch, m.delivery_tag, m.multiple, TxSettleKind::Ack, 80)
            }
            basic::AMQPMethod::Nack(m) if self.slot(ch).tx.is_some() => {
                let how = if m.requeue {
                    TxSettleKind::Requeue
                } else {
                    TxSettleKind::Reject
                };
                self.settle_in_tx(ch, m.delivery_tag, m.multiple, how, 120)
            }
            basic::AMQPMethod::Reject(m) if self.slot(ch).tx.is_some() => {
                let how = if m.requeue {
                    TxSettleKind::Requeue
                } else {
                    TxSettleKind::Reject
                };
                self.settle_in_tx(ch, m.delivery_tag, false, how, 90)
            }
            basic::AMQPMethod::Ack(m) => self.settle(ch, m.delivery_tag, m.multiple, TxSettleKind::Ack, 80).await,
            basic::AMQPMethod::Nack(m) => {
                let how = if m.requeue {
                    TxSettleKind::Requeue
                } else {
                    TxSettleKind::Reject
                };
                self.settle(ch, m.delivery_tag, m.multiple, how, 120).await
            }
            basic::AMQPMethod::Reject(m) => {
                let how = if m.requeue {
                    TxSettleKind::Requeue
                } else {
                    TxSettleKind::Reject
                };
                self.settle(ch, m.delivery_tag, false, how, 90).await
            }
            basic::AMQPMethod::Recover(basic::Recover { requeue: false })
            | basic::AMQPMethod::RecoverAsync(basic::RecoverAsync { requeue: false }) => {
                Err(AmqpError::connection_for(
                    reply_code::NOT_IMPLEMENTED,
                    "NOT_IMPLEMENTED - requeue=false",
                    (60, 110),
                ))
            }
            basic::AMQPMethod::Recover(_) => {
                let unsent = self.slot(ch).credit.take_all_held();
                let command = returning_unsent(unsent, AfterReturn::Recover);
                self.submit(ch, Pending::Recover { send_ok: true }, command).await
            }
            basic::AMQPMethod::RecoverAsync(_) => {
                let unsent = self.slot(ch).credit.take_all_held();
                let command = returning_unsent(unsent, AfterReturn::Recover);
                self.submit(ch, Pending::Recover { send_ok: false }, command).await
            }
            other => Err(not_from_client(AMQPClass::Basic(other))),
        }
    }

    /// `tx.select`, `tx.commit`, `tx.rollback` (ADR 0020).
    pub(super) async fn handle_tx_method(
        &mut self,
        ch: u16,
        vhost: VHost,
        method: tx::AMQPMethod,
        ids: (u16, u16),
    ) -> Result<(), AmqpError> {
        let receiving = self.frontend.receiving_bytes.clone();
        let slot = self.slot(ch);
        let not_transactional = || {
            AmqpError::channel(
                ch,
                reply_code::PRECONDITION_FAILED,
                "PRECONDITION_FAILED - channel is not transactional",
                ids,
            )
        };
        match method {
            tx::AMQPMethod::Select(_) => {
                if slot.confirm {
                    return Err(AmqpError::channel(
                        ch,
                        reply_code::PRECONDITION_FAILED,
                        "PRECONDITION_FAILED - cannot switch from confirm to tx mode",
                        ids,
                    ));
                }
                slot.tx.get_or_insert_with(|| TxBuffer::new(receiving));
                self.send_method(ch, AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})));
                Ok(())
            }
            tx::AMQPMethod::Commit(_) => {
                let Some(buffer) = slot.tx.replace(TxBuffer::new(receiving)) else {
                    return Err(not_transactional());
                };
                slot.committing_settles = buffer.settled_tags.iter().map(|(_, id)| *id).collect();
                let command = Command::Commit(Transaction {
                    vhost,
                    publishes: buffer.publishes,
                    settles: buffer.settles,
                });
                slot.committing = true;
                if slot.pending.is_empty() {
                    return self.submit(ch, Pending::TxCommit, command).await;
                }
                slot.deferred_commit = Some(command);
                Ok(())
            }
            tx::AMQPMethod::Rollback(_) => {
                let Some(buffer) = slot.tx.replace(TxBuffer::new(receiving)) else {
                    return Err(not_transactional());
                };
                slot.restore_tags(&buffer.settled_tags);
                self.send_method(ch, AMQPClass::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})));
                Ok(())
            }
            other => Err(not_from_client(AMQPClass::Tx(other))),
        }
    }

    /// A publish on a transactional channel: held until `tx.commit`.
    ///
    /// # Errors
    /// 404/403/406 as the publish would fail at commit; 406 if the
    /// transaction would pass [`TX_MAX_BYTES`].
    pub(super) fn publish_in_tx(
        &mut self,
        ch: u16,
        exchange: String,
        routing_key: String,
        mandatory: bool,
        properties: warren_core::Properties,
        body: BytesMut,
    ) -> Result<(), AmqpError> {
        let wire_properties = properties_to_wire(&properties);
        let mut header = BytesMut::new();
        let header_len = match warren_wire::encode_content(0, 60, &wire_properties, &[], 0, &mut header) {
            Ok(()) => header.len() as u64,
            Err(_) => u64::from(self.frame_max),
        };
        let len = TX_ITEM_BYTES + body.len() as u64 + header_len + (exchange.len() + routing_key.len()) as u64;
        let message = Arc::new(Message {
            exchange: ExchangeName::new(exchange),
            routing_key,
            properties: Arc::new(properties),
            body: body.freeze().into(),
        });
        // What would fail the publish fails it now, as RabbitMQ does (the
        // commit checks again: the exchange may go in between).
        let origin = ChannelId {
            conn: self.id,
            channel: ch,
        };
        let vhost = &self.vhost;
        if let Err(error) = self.frontend.node.read(|b| b.check_publish(origin, vhost, &message)) {
            return Err(AmqpError::channel(ch, error.reply_code(), error.to_string(), (60, 40)));
        }
        let Some(buffer) = self.slot(ch).tx.as_mut() else {
            return Ok(());
        };
        if buffer.bytes() + len > TX_MAX_BYTES {
            return Err(transaction_too_large(ch, (60, 40)));
        }
        buffer.held.add(len);
        buffer.publishes.push(TxPublish { mandatory, message });
        Ok(())
    }

    /// An ack, nack or reject on a transactional channel: its tags are
    /// checked and taken now (as RabbitMQ's `collect_acks` does), settled
    /// at `tx.commit`.
    ///
    /// # Errors
    /// 406 `unknown delivery tag N`.
    pub(super) fn settle_in_tx(
        &mut self,
        ch: u16,
        tag: u64,
        multiple: bool,
        how: TxSettleKind,
        method_id: u16,
    ) -> Result<(), AmqpError> {
        let slot = self.slot(ch);
        let Some(tags) = slot.take_covered(tag, multiple) else {
            return Err(unknown_delivery_tag(ch, tag, method_id));
        };
        if tags.is_empty() {
            return Ok(());
        }
        let acked = if how == TxSettleKind::Ack { tags.len() as u64 } else { 0 };
        if let Some(buffer) = slot.tx.as_mut() {
            let len = TX_ITEM_BYTES + 8 * tags.len() as u64;
            if buffer.bytes() + len > TX_MAX_BYTES {
                return Err(transaction_too_large(ch, (60, method_id)));
            }
            buffer.held.add(len);
            buffer.settled_tags.extend(&tags);
            buffer.settles.push(TxSettle {
                tags: tags.into_iter().map(|(tag, _)| DeliveryTag(tag)).collect(),
                how,
            });
        }
        crate::counters::bump(&self.frontend.counters.acknowledged, acked);
        self.stats.bump(connection_counter::ACK, acked);
        Ok(())
    }

    /// `basic.ack`, `basic.nack` or `basic.reject` outside a transaction.
    /// The client's credit comes back now, before the settlement commits
    /// (ADR 0026). A tag held and never sent is unknown to the client: 406,
    /// as RabbitMQ answers. A `multiple` that in the core would also cover
    /// held deliveries is sent as one settlement per tag the client has.
    ///
    /// # Errors
    /// 406 `unknown delivery tag N` for a held tag.
    pub(super) async fn settle(
        &mut self,
        ch: u16,
        tag: u64,
        multiple: bool,
        how: TxSettleKind,
        method_id: u16,
    ) -> Result<(), AmqpError> {
        let Some(settled) = self.slot(ch).settle(tag, multiple, how) else {
            return Err(unknown_delivery_tag(ch, tag, method_id));
        };
        if how == TxSettleKind::Ack {
            crate::counters::bump(&self.frontend.counters.acknowledged, settled.taken);
            self.stats.bump(connection_counter::ACK, settled.taken);
        }
        let commands = settled.commands;
        self.release_held(ch, Instant::now())?;
        for command in commands {
            self.submit(ch, Pending::Settle { method_id }, command).await?;
        }
        Ok(())
    }
}

/// RabbitMQ's 406 for a settlement of a tag the channel does not hold
/// unacked (`rabbit_channel:collect_acks`).
fn unknown_delivery_tag(ch: u16, tag: u64, method_id: u16) -> AmqpError {
    AmqpError::channel(
        ch,
        reply_code::PRECONDITION_FAILED,
        format!("PRECONDITION_FAILED - unknown delivery tag {tag}"),
        (60, method_id),
    )
}
