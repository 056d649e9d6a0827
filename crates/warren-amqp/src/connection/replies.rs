//! Requests to the core and its replies: the per-channel FIFO of pending
//! requests, and what each outcome means for the client.

use std::time::Instant;

use tracing::warn;
use warren_core::{reply_code, ChannelId, Command, CoreError, Message, Outcome, Request};
use warren_wire::protocol::{basic, channel, connection, exchange, queue, tx, AMQPClass};

use crate::channel::{ChannelState, Pending};
use crate::convert::short;
use crate::counters::connection_counter;
use crate::error::AmqpError;

use super::Connection;

impl Connection {
    /// Sends `command` for channel `ch` to the proposer, remembering what its
    /// reply is for.
    pub(super) async fn submit(&mut self, ch: u16, pending: Pending, command: Command) -> Result<(), AmqpError> {
        self.slot(ch).pending.push_back(pending);
        let origin = ChannelId {
            conn: self.id,
            channel: ch,
        };
        self.frontend
            .proposer
            .submit(Request {
                origin: Some(origin),
                command,
            })
            .await
            .map_err(|_| {
                AmqpError::connection(reply_code::INTERNAL_ERROR, "INTERNAL_ERROR - the node is shutting down")
            })
    }

    pub(super) async fn handle_reply(&mut self, ch: u16, outcome: Result<Outcome, CoreError>) -> Result<(), AmqpError> {
        let Some(slot) = self.channels.get_mut(&ch) else {
            warn!(conn = ?self.id, channel = ch, "a reply from the core that no request awaits");
            return Ok(());
        };
        let Some(pending) = slot.pending.pop_front() else {
            warn!(conn = ?self.id, channel = ch, "a reply from the core that no request awaits");
            return Ok(());
        };
        if matches!(pending, Pending::TxCommit) {
            slot.committing = false;
            let settled = std::mem::take(&mut slot.committing_settles);
            slot.credit.settled(settled);
        }
        let commit_waits = slot.deferred_commit.is_some();
        let result = self.apply_reply(ch, pending, outcome);
        let result = match result {
            Err(AmqpError::Channel {
                channel,
                code,
                text,
                class_id,
                method_id,
            }) => {
                if self
                    .channels
                    .get(&channel)
                    .is_some_and(|s| s.state == ChannelState::Open)
                {
                    self.close_channel_by_server(channel, code, &text, class_id, method_id)
                        .await?;
                }
                Ok(())
            }
            other => other,
        };
        if commit_waits {
            self.send_deferred_commit(ch).await?;
        }
        self.release_held(ch, Instant::now())?;
        self.report_written_due().await?;
        self.return_unsent_due().await?;
        result
    }

    /// Sends a `tx.commit` held back for the replies before it once they
    /// all came and the channel is still open (a failure closed it and
    /// dropped the commit).
    pub(super) async fn send_deferred_commit(&mut self, ch: u16) -> Result<(), AmqpError> {
        let Some(slot) = self.channels.get_mut(&ch) else {
            return Ok(());
        };
        if !slot.pending.is_empty() || slot.state != ChannelState::Open {
            return Ok(());
        }
        let Some(command) = slot.deferred_commit.take() else {
            return Ok(());
        };
        self.submit(ch, Pending::TxCommit, command).await
    }

    /// Writes what one reply from the core means for the client.
    pub(super) fn apply_reply(
        &mut self,
        ch: u16,
        pending: Pending,
        outcome: Result<Outcome, CoreError>,
    ) -> Result<(), AmqpError> {
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(error) => return self.reply_error(ch, pending, error),
        };
        match (pending, outcome) {
            (Pending::Discard | Pending::Written { .. } | Pending::Unsent { .. }, _) => {}
            (Pending::ServerClose, _) => self.slot(ch).draining = false,
            (Pending::ConnectionClose, _) => {
                self.send_method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
                );
                self.closed = true;
            }
            (Pending::ChannelClose, _) => {
                self.send_method(
                    ch,
                    AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                );
                let slot = self.slot(ch);
                slot.state = ChannelState::Closed;
                slot.draining = false;
            }
            (
                Pending::Publish { confirm_seq },
                Outcome::Published {
                    routed,
                    rejected,
                    returned,
                },
            ) => {
                let counters = &self.frontend.counters;
                let counter = match (routed, returned.is_some()) {
                    (true, _) => &counters.routed,
                    (false, true) => &counters.unroutable_returned,
                    (false, false) => &counters.unroutable_dropped,
                };
                crate::counters::bump(counter, 1);
                if let Some(message) = returned {
                    self.send_return(ch, &message)?;
                }
                if let Some(seq) = confirm_seq {
                    self.send_confirm(ch, seq, !rejected);
                }
            }
            (Pending::ExchangeDeclare { nowait }, _) => {
                if !nowait {
                    self.send_method(
                        ch,
                        AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {})),
                    );
                }
            }
            (Pending::ExchangeDelete { nowait }, _) => {
                if !nowait {
                    self.send_method(
                        ch,
                        AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {})),
                    );
                }
            }
            (Pending::ExchangeBind { nowait }, _) => {
                if !nowait {
                    self.send_method(
                        ch,
                        AMQPClass::Exchange(exchange::AMQPMethod::BindOk(exchange::BindOk {})),
                    );
                }
            }
            (Pending::ExchangeUnbind { nowait }, _) => {
                if !nowait {
                    self.send_method(
                        ch,
                        AMQPClass::Exchange(exchange::AMQPMethod::UnbindOk(exchange::UnbindOk {})),
                    );
                }
            }
            (
                Pending::QueueDeclare { nowait },
                Outcome::QueueDeclared {
                    queue,
                    message_count,
                    consumer_count,
                    created,
                },
            ) => {
                let counters = &self.frontend.counters;
                crate::counters::bump(&counters.queues_declared, 1);
                crate::counters::bump(&counters.queues_created, u64::from(created));
                if !nowait {
                    let ok = queue::DeclareOk {
                        queue: short(queue.as_str()),
                        message_count,
                        consumer_count,
                    };
                    self.send_method(ch, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok)));
                }
            }
            (Pending::QueueBind { nowait }, _) => {
                if !nowait {
                    self.send_method(ch, AMQPClass::Queue(queue::AMQPMethod::BindOk(queue::BindOk {})));
                }
            }
            (Pending::QueueUnbind, _) => {
                self.send_method(ch, AMQPClass::Queue(queue::AMQPMethod::UnbindOk(queue::UnbindOk {})));
            }
            (Pending::QueuePurge { nowait }, Outcome::QueuePurged { message_count }) => {
                if !nowait {
                    let ok = queue::PurgeOk { message_count };
                    self.send_method(ch, AMQPClass::Queue(queue::AMQPMethod::PurgeOk(ok)));
                }
            }
            (Pending::QueueDelete { nowait }, Outcome::QueueDeleted { message_count }) => {
                crate::counters::bump(&self.frontend.counters.queues_deleted, 1);
                if !nowait {
                    let ok = queue::DeleteOk { message_count };
                    self.send_method(ch, AMQPClass::Queue(queue::AMQPMethod::DeleteOk(ok)));
                }
            }
            (Pending::Qos, _) => {
                self.send_method(ch, AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})));
            }
            (Pending::Consume { nowait, no_ack }, Outcome::ConsumeOk { consumer_tag }) => {
                let auto_ack = &mut self.slot(ch).auto_ack_consumers;
                if no_ack {
                    auto_ack.insert(consumer_tag.as_str().to_owned());
                } else {
                    auto_ack.remove(consumer_tag.as_str());
                }
                if !nowait {
                    let ok = basic::ConsumeOk {
                        consumer_tag: short(consumer_tag.as_str()),
                    };
                    self.send_method(ch, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(ok)));
                }
            }
            (Pending::Cancel { nowait, consumer }, Outcome::CancelOk { consumer_tag }) => {
                let slot = self.slot(ch);
                slot.auto_ack_consumers.remove(consumer_tag.as_str());
                // Deliveries assigned before the cancel applied and still
                // held go back now (the cancel took those held before it).
                let unsent = slot.credit.cancelled_id(consumer, consumer_tag.as_str());
                self.unsent_due.push((ch, unsent));
                if !nowait {
                    let ok = basic::CancelOk {
                        consumer_tag: short(consumer_tag.as_str()),
                    };
                    self.send_method(ch, AMQPClass::Basic(basic::AMQPMethod::CancelOk(ok)));
                }
            }
            (
                Pending::Get { no_ack },
                Outcome::GetOk {
                    delivery_tag,
                    redelivered,
                    message_count,
                    message,
                },
            ) => {
                let counters = &self.frontend.counters;
                if no_ack {
                    crate::counters::bump(&counters.delivered_get_auto_ack, 1);
                } else {
                    crate::counters::bump(&counters.delivered_get_manual_ack, 1);
                    let slot = self.slot(ch);
                    slot.record_delivery(delivery_tag.0, 0, Instant::now());
                    slot.credit.got();
                }
                crate::counters::bump(&self.frontend.counters.redelivered, u64::from(redelivered));
                self.stats.bump(connection_counter::DELIVER_GET, 1);
                self.stats.bump(connection_counter::REDELIVER, u64::from(redelivered));
                let ok = basic::GetOk {
                    delivery_tag: delivery_tag.0,
                    redelivered,
                    exchange: short(message.exchange.as_str()),
                    routing_key: short(&message.routing_key),
                    message_count,
                };
                self.send_method(ch, AMQPClass::Basic(basic::AMQPMethod::GetOk(ok)));
                self.send_content(ch, &message)?;
            }
            (Pending::Get { .. }, Outcome::GetEmpty) => {
                crate::counters::bump(&self.frontend.counters.get_empty, 1);
                self.send_method(ch, AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {})));
            }
            (Pending::Settle { .. }, _) => {}
            (Pending::TxCommit, Outcome::Committed { returned, rejected }) => {
                for message in returned {
                    crate::counters::bump(&self.frontend.counters.unroutable_returned, 1);
                    self.send_return(ch, &message)?;
                }
                if rejected {
                    // RabbitMQ's answer when a queue refused a publish of
                    // the transaction (the others took effect).
                    return Err(AmqpError::channel(
                        ch,
                        reply_code::PRECONDITION_FAILED,
                        "PRECONDITION_FAILED - partial tx completion",
                        (90, 20),
                    ));
                }
                self.send_method(ch, AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})));
            }
            (Pending::Recover { send_ok }, _) => {
                // Every delivery applied before the recover was requeued by
                // it (effects arrive in log order), and only those: held
                // ones too.
                let slot = self.slot(ch);
                slot.forget_unacked();
                slot.credit.take_all_held();
                if send_ok {
                    self.send_method(ch, AMQPClass::Basic(basic::AMQPMethod::RecoverOk(basic::RecoverOk {})));
                }
            }
            (pending, outcome) => {
                warn!(conn = ?self.id, channel = ch, ?pending, ?outcome, "a reply that does not fit its request");
                return Err(AmqpError::connection(
                    reply_code::INTERNAL_ERROR,
                    "INTERNAL_ERROR - the broker answered a request with an unrelated outcome",
                ));
            }
        }
        Ok(())
    }

    /// `basic.return` of an unroutable mandatory message.
    pub(super) fn send_return(&mut self, ch: u16, message: &Message) -> Result<(), AmqpError> {
        let ret = basic::Return {
            reply_code: reply_code::NO_ROUTE,
            reply_text: short("NO_ROUTE"),
            exchange: short(message.exchange.as_str()),
            routing_key: short(&message.routing_key),
        };
        self.send_method(ch, AMQPClass::Basic(basic::AMQPMethod::Return(ret)));
        self.send_content(ch, message)
    }

    pub(super) fn reply_error(&mut self, ch: u16, pending: Pending, error: CoreError) -> Result<(), AmqpError> {
        // Reports of writes and returns of held deliveries must take
        // effect: a failed one (its batch failed) goes again.
        let pending = match pending {
            Pending::Written {
                consumer_tag,
                count,
                bytes,
            } => {
                self.written_due.push((ch, consumer_tag, (count, bytes)));
                return Ok(());
            }
            Pending::Unsent { tags } => {
                self.unsent_due.push((ch, tags));
                return Ok(());
            }
            other => other,
        };
        match (&pending, &error) {
            (Pending::Discard, _) => return Ok(()),
            (Pending::ServerClose, _) => {
                self.slot(ch).draining = false;
                return Ok(());
            }
            (Pending::ConnectionClose, _) => return self.apply_reply(ch, pending, Ok(Outcome::Done)),
            (Pending::ChannelClose, _) => {
                // The close could not be committed; the client still gets its
                // close-ok, and the core cleans up when the connection goes.
                return self.apply_reply(ch, pending, Ok(Outcome::Done));
            }
            (Pending::Publish { confirm_seq: Some(seq) }, CoreError::Unavailable(_)) => {
                self.send_confirm(ch, *seq, false);
                return Ok(());
            }
            _ => {}
        }
        let ids = pending.method_ids();
        let text = error.to_string();
        if error.is_connection_error() {
            return Err(AmqpError::connection_for(error.reply_code(), text, ids));
        }
        Err(AmqpError::channel(ch, error.reply_code(), text, ids))
    }
}
