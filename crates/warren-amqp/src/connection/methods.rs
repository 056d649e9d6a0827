//! Channel, exchange and queue methods, and the access checks and name
//! shortcuts they share.

use warren_core::access::{Perm, ResourceKind};
use warren_core::{reply_code, AfterReturn, Command, ExchangeKind, ExchangeName, QueueName, VHost};
use warren_wire::protocol::{channel, confirm, exchange, queue, AMQPClass};

use crate::access::Subject;
use crate::channel::{ChannelState, Pending};
use crate::error::AmqpError;
use crate::names::generated_queue_name;
use crate::shortcuts::{expand_binding_key, expand_queue_name, NoDeclaredQueue};

use super::{no_declared_queue, not_from_client, returning_unsent, Connection};

impl Connection {
    pub(super) async fn handle_method(&mut self, ch: u16, method: AMQPClass) -> Result<(), AmqpError> {
        let ids = (method.get_amqp_class_id(), method.get_amqp_method_id());
        let vhost = self.vhost.clone();
        match method {
            AMQPClass::Channel(m) => self.handle_channel_method(ch, m).await,
            AMQPClass::Exchange(m) => self.handle_exchange_method(ch, vhost, m).await,
            AMQPClass::Queue(m) => self.handle_queue_method(ch, vhost, m).await,
            AMQPClass::Basic(m) => self.handle_basic_method(ch, vhost, m).await,
            AMQPClass::Confirm(confirm::AMQPMethod::Select(select)) => {
                if self.slot(ch).tx.is_some() {
                    return Err(AmqpError::channel(
                        ch,
                        reply_code::PRECONDITION_FAILED,
                        "PRECONDITION_FAILED - cannot switch from tx to confirm mode",
                        ids,
                    ));
                }
                self.slot(ch).confirm = true;
                if !select.nowait {
                    self.send_method(
                        ch,
                        AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
                    );
                }
                Ok(())
            }
            AMQPClass::Tx(m) => self.handle_tx_method(ch, vhost, m, ids).await,
            AMQPClass::Access(_) => {
                let ok = warren_wire::protocol::access::RequestOk {};
                self.send_method(
                    ch,
                    AMQPClass::Access(warren_wire::protocol::access::AMQPMethod::RequestOk(ok)),
                );
                Ok(())
            }
            _ => Err(AmqpError::connection_for(
                reply_code::COMMAND_INVALID,
                "COMMAND_INVALID - method not valid from a client",
                ids,
            )),
        }
    }

    pub(super) async fn handle_channel_method(
        &mut self,
        ch: u16,
        method: channel::AMQPMethod,
    ) -> Result<(), AmqpError> {
        match method {
            channel::AMQPMethod::Open(_) => {
                Err(AmqpError::channel_error(format!("second 'channel.open' seen on {ch}")))
            }
            channel::AMQPMethod::Flow(flow) if flow.active => {
                self.send_method(
                    ch,
                    AMQPClass::Channel(channel::AMQPMethod::FlowOk(channel::FlowOk { active: true })),
                );
                Ok(())
            }
            channel::AMQPMethod::Flow(_) => Err(AmqpError::connection_for(
                reply_code::NOT_IMPLEMENTED,
                "NOT_IMPLEMENTED - active=false",
                (20, 20),
            )),
            channel::AMQPMethod::FlowOk(_) | channel::AMQPMethod::CloseOk(_) => Ok(()),
            channel::AMQPMethod::Close(_) => {
                let slot = self.slot(ch);
                slot.state = ChannelState::ClosingByClient;
                slot.draining = true;
                slot.content = None;
                slot.drop_transaction();
                let unsent = slot.credit.take_all_held();
                let command = returning_unsent(unsent, AfterReturn::CloseChannel);
                self.submit(ch, Pending::ChannelClose, command).await
            }
            channel::AMQPMethod::OpenOk(_) => Err(AmqpError::connection_for(
                reply_code::COMMAND_INVALID,
                "COMMAND_INVALID - channel.open-ok from a client",
                (20, 11),
            )),
        }
    }

    pub(super) async fn handle_exchange_method(
        &mut self,
        ch: u16,
        vhost: VHost,
        method: exchange::AMQPMethod,
    ) -> Result<(), AmqpError> {
        match method {
            exchange::AMQPMethod::Declare(m) => {
                let kind = match ExchangeKind::parse(m.kind.as_str()) {
                    Some(kind) => kind,
                    // A passive declare does not look at the type.
                    None if m.passive => ExchangeKind::Direct,
                    None => {
                        return Err(AmqpError::connection_for(
                            reply_code::COMMAND_INVALID,
                            format!("COMMAND_INVALID - unknown exchange type '{}'", m.kind.as_str()),
                            (40, 10),
                        ))
                    }
                };
                let name = m.exchange.as_str();
                if name.is_empty() {
                    // The default exchange is refused by the core, first.
                } else if m.passive {
                    self.authorize_any(ch, (40, 10), ResourceKind::Exchange, name)?;
                } else {
                    self.authorize(ch, (40, 10), &[(ResourceKind::Exchange, name, Perm::Configure)])?;
                    let more = warren_core::access::argument_checks(ResourceKind::Exchange, name, &m.arguments);
                    self.authorize_owned(ch, (40, 10), &more)?;
                }
                let command = Command::DeclareExchange {
                    vhost,
                    name: ExchangeName::new(m.exchange.as_str()),
                    kind,
                    passive: m.passive,
                    durable: m.durable,
                    auto_delete: m.auto_delete,
                    internal: m.internal,
                    arguments: m.arguments,
                };
                self.submit(ch, Pending::ExchangeDeclare { nowait: m.nowait }, command)
                    .await
            }
            exchange::AMQPMethod::Delete(m) => {
                let name = m.exchange.as_str();
                // The default and `amq.*` exchanges are refused by the core,
                // first, with their own texts.
                if !name.is_empty() && !name.starts_with("amq.") {
                    self.authorize(ch, (40, 20), &[(ResourceKind::Exchange, name, Perm::Configure)])?;
                }
                let command = Command::DeleteExchange {
                    vhost,
                    name: ExchangeName::new(m.exchange.as_str()),
                    if_unused: m.if_unused,
                };
                self.submit(ch, Pending::ExchangeDelete { nowait: m.nowait }, command)
                    .await
            }
            exchange::AMQPMethod::Bind(m) => {
                self.authorize(
                    ch,
                    (40, 30),
                    &[
                        (ResourceKind::Exchange, m.destination.as_str(), Perm::Write),
                        (ResourceKind::Exchange, m.source.as_str(), Perm::Read),
                    ],
                )?;
                let command = Command::BindExchange {
                    vhost,
                    destination: ExchangeName::new(m.destination.as_str()),
                    source: ExchangeName::new(m.source.as_str()),
                    routing_key: m.routing_key.as_str().to_owned(),
                    arguments: m.arguments,
                };
                self.submit(ch, Pending::ExchangeBind { nowait: m.nowait }, command)
                    .await
            }
            exchange::AMQPMethod::Unbind(m) => {
                self.authorize(
                    ch,
                    (40, 40),
                    &[
                        (ResourceKind::Exchange, m.destination.as_str(), Perm::Write),
                        (ResourceKind::Exchange, m.source.as_str(), Perm::Read),
                    ],
                )?;
                let command = Command::UnbindExchange {
                    vhost,
                    destination: ExchangeName::new(m.destination.as_str()),
                    source: ExchangeName::new(m.source.as_str()),
                    routing_key: m.routing_key.as_str().to_owned(),
                    arguments: m.arguments,
                };
                self.submit(ch, Pending::ExchangeUnbind { nowait: m.nowait }, command)
                    .await
            }
            other => Err(not_from_client(AMQPClass::Exchange(other))),
        }
    }

    pub(super) async fn handle_queue_method(
        &mut self,
        ch: u16,
        vhost: VHost,
        method: queue::AMQPMethod,
    ) -> Result<(), AmqpError> {
        match method {
            queue::AMQPMethod::Declare(m) => {
                if m.queue.as_str().is_empty() && !m.passive {
                    if let Some(module) = unnameable_queue_type(&m.arguments) {
                        return Err(AmqpError::channel(
                            ch,
                            reply_code::PRECONDITION_FAILED,
                            format!("PRECONDITION_FAILED - Cannot declare a server-named queue for type {module}"),
                            (50, 10),
                        ));
                    }
                }
                let name = if m.queue.as_str().is_empty() {
                    QueueName::new(generated_queue_name())
                } else {
                    QueueName::new(m.queue.as_str())
                };
                if m.passive {
                    self.authorize_any(ch, (50, 10), ResourceKind::Queue, name.as_str())?;
                } else {
                    self.authorize(ch, (50, 10), &[(ResourceKind::Queue, name.as_str(), Perm::Configure)])?;
                    let more = warren_core::access::argument_checks(ResourceKind::Queue, name.as_str(), &m.arguments);
                    self.authorize_owned(ch, (50, 10), &more)?;
                }
                self.slot(ch).last_queue = Some(name.clone());
                let command = Command::DeclareQueue {
                    vhost,
                    name,
                    passive: m.passive,
                    durable: m.durable,
                    exclusive: m.exclusive,
                    auto_delete: m.auto_delete,
                    arguments: m.arguments,
                };
                self.submit(ch, Pending::QueueDeclare { nowait: m.nowait }, command)
                    .await
            }
            queue::AMQPMethod::Bind(m) => {
                let (queue, routing_key) =
                    self.resolve_binding(ch, m.queue.as_str(), m.routing_key.as_str(), (50, 20))?;
                self.authorize(
                    ch,
                    (50, 20),
                    &[
                        (ResourceKind::Queue, queue.as_str(), Perm::Write),
                        (ResourceKind::Exchange, m.exchange.as_str(), Perm::Read),
                    ],
                )?;
                let command = Command::BindQueue {
                    vhost,
                    queue,
                    exchange: ExchangeName::new(m.exchange.as_str()),
                    routing_key,
                    arguments: m.arguments,
                };
                self.submit(ch, Pending::QueueBind { nowait: m.nowait }, command).await
            }
            queue::AMQPMethod::Unbind(m) => {
                let (queue, routing_key) =
                    self.resolve_binding(ch, m.queue.as_str(), m.routing_key.as_str(), (50, 50))?;
                self.authorize(
                    ch,
                    (50, 50),
                    &[
                        (ResourceKind::Queue, queue.as_str(), Perm::Write),
                        (ResourceKind::Exchange, m.exchange.as_str(), Perm::Read),
                    ],
                )?;
                let command = Command::UnbindQueue {
                    vhost,
                    queue,
                    exchange: ExchangeName::new(m.exchange.as_str()),
                    routing_key,
                    arguments: m.arguments,
                };
                self.submit(ch, Pending::QueueUnbind, command).await
            }
            queue::AMQPMethod::Purge(m) => {
                let queue = self.resolve_queue(ch, m.queue.as_str(), (50, 30))?;
                self.authorize(ch, (50, 30), &[(ResourceKind::Queue, queue.as_str(), Perm::Read)])?;
                self.submit(
                    ch,
                    Pending::QueuePurge { nowait: m.nowait },
                    Command::PurgeQueue { vhost, queue },
                )
                .await
            }
            queue::AMQPMethod::Delete(m) => {
                let queue = self.resolve_queue(ch, m.queue.as_str(), (50, 40))?;
                self.authorize(ch, (50, 40), &[(ResourceKind::Queue, queue.as_str(), Perm::Configure)])?;
                let command = Command::DeleteQueue {
                    vhost,
                    queue,
                    if_unused: m.if_unused,
                    if_empty: m.if_empty,
                };
                self.submit(ch, Pending::QueueDelete { nowait: m.nowait }, command)
                    .await
            }
            other => Err(not_from_client(AMQPClass::Queue(other))),
        }
    }

    /// Checks the connection's user may do each of `checks` in its vhost.
    ///
    /// # Errors
    /// 403 ACCESS_REFUSED on the channel, for the first check refused.
    pub(super) fn authorize(
        &mut self,
        ch: u16,
        ids: (u16, u16),
        checks: &[(ResourceKind, &str, Perm)],
    ) -> Result<(), AmqpError> {
        let subject = Subject {
            node: &self.frontend.node,
            user: &self.user,
            vhost: &self.vhost,
        };
        for &(kind, name, perm) in checks {
            self.access
                .check(&subject, kind, name, perm)
                .map_err(|e| AmqpError::channel(ch, e.reply_code(), e.to_string(), ids))?;
        }
        Ok(())
    }

    /// [`Connection::authorize`] for checks that own their names.
    ///
    /// # Errors
    /// 403 ACCESS_REFUSED on the channel, for the first check refused.
    pub(super) fn authorize_owned(
        &mut self,
        ch: u16,
        ids: (u16, u16),
        checks: &[(ResourceKind, String, Perm)],
    ) -> Result<(), AmqpError> {
        let borrowed: Vec<(ResourceKind, &str, Perm)> = checks
            .iter()
            .map(|(kind, name, perm)| (*kind, name.as_str(), *perm))
            .collect();
        self.authorize(ch, ids, &borrowed)
    }

    /// Checks the user has any permission on the resource (passive declares).
    ///
    /// # Errors
    /// 403 ACCESS_REFUSED on the channel.
    pub(super) fn authorize_any(
        &mut self,
        ch: u16,
        ids: (u16, u16),
        kind: ResourceKind,
        name: &str,
    ) -> Result<(), AmqpError> {
        let subject = Subject {
            node: &self.frontend.node,
            user: &self.user,
            vhost: &self.vhost,
        };
        self.access
            .check_any(&subject, kind, name)
            .map_err(|e| AmqpError::channel(ch, e.reply_code(), e.to_string(), ids))
    }

    /// The queue a method names; "" means the last queue declared on the
    /// channel (see [`crate::shortcuts`]).
    pub(super) fn resolve_queue(&mut self, ch: u16, name: &str, ids: (u16, u16)) -> Result<QueueName, AmqpError> {
        expand_queue_name(name, self.slot(ch).last_queue.as_ref()).map_err(|NoDeclaredQueue| no_declared_queue(ch, ids))
    }

    /// The queue and binding key of a `queue.bind`/`queue.unbind`, with
    /// both shortcuts expanded (see [`crate::shortcuts`]).
    pub(super) fn resolve_binding(
        &mut self,
        ch: u16,
        queue: &str,
        routing_key: &str,
        ids: (u16, u16),
    ) -> Result<(QueueName, String), AmqpError> {
        let last = self.slot(ch).last_queue.as_ref();
        let expanded =
            expand_queue_name(queue, last).and_then(|name| Ok((name, expand_binding_key(queue, routing_key, last)?)));
        expanded.map_err(|NoDeclaredQueue| no_declared_queue(ch, ids))
    }
}

/// RabbitMQ 3.10's module of a queue type that cannot be server-named
/// (`queue.declare` with an empty name): quorum queues and streams.
fn unnameable_queue_type(arguments: &warren_wire::types::FieldTable) -> Option<&'static str> {
    match warren_core::queue_args::queue_type(arguments)?.as_str() {
        "quorum" => Some("rabbit_quorum_queue"),
        "stream" => Some("rabbit_stream_queue"),
        _ => None,
    }
}
