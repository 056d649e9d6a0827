//! Queue commands: declare, bind, unbind, purge, delete, and the removal
//! of a queue shared by every path that deletes one.

use std::collections::BTreeSet;

use amq_protocol_types::FieldTable;

use crate::broker::{Broker, Ctx};
use crate::effect::{Effect, Outcome};
use crate::error::CoreError;
use crate::exchange::{Binding, Destination};
use crate::exchange_ops::{check_binding_arguments, remove_bindings_to, unbind};
use crate::fail;
use crate::ids::{ExchangeName, QueueName, VHost};
use crate::queue::Queue;
use crate::queue_args::{check_equivalent, string, QueueArgs};
use crate::vhost::VHostState;

/// The attributes of a `queue.declare`.
pub(crate) struct QueueSpec<'a> {
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
    pub arguments: &'a FieldTable,
}

/// Whether a client may declare a queue of this name: not `amq.*`, except
/// the `amq.gen-…` names the front end generates.
fn is_reserved_queue_name(name: &QueueName) -> bool {
    name.as_str().starts_with("amq.") && !name.as_str().starts_with("amq.gen-")
}

/// The queue `name`, if the requesting connection may use it.
///
/// # Errors
/// 404 if missing; 405 if it is another connection's exclusive queue.
fn usable_queue<'a>(
    ctx: &Ctx<'_>,
    vh: &'a mut VHostState,
    vhost: &VHost,
    name: &QueueName,
) -> Result<&'a mut Queue, CoreError> {
    let Some(queue) = vh.queues.get_mut(name) else {
        return Err(fail::no_queue(vhost, name));
    };
    if !queue.accessible_by(ctx.origin.map(|c| c.conn)) {
        return Err(fail::queue_locked(vhost, name));
    }
    Ok(queue)
}

/// 406 if the queue's `x-queue-type` does not allow the attributes `spec`
/// asks for: a quorum queue or a stream is durable, not exclusive and not
/// auto-delete (RabbitMQ checks them in that order: auto-delete,
/// exclusive, durable); a stream's segments are at most 3 GB.
fn check_queue_type_properties(vhost: &VHost, name: &QueueName, spec: &QueueSpec<'_>) -> Result<(), CoreError> {
    let kind = spec.arguments.inner().get("x-queue-type").and_then(string);
    if kind.as_deref() != Some("quorum") && kind.as_deref() != Some("stream") {
        return Ok(());
    }
    let invalid = [
        (spec.auto_delete, "auto-delete"),
        (spec.exclusive, "exclusive-owner"),
        (!spec.durable, "non-durable"),
    ];
    if let Some((_, property)) = invalid.into_iter().find(|(bad, _)| *bad) {
        return Err(fail::invalid_queue_property(vhost, name, property));
    }
    let segment = spec.arguments.inner().get("x-stream-max-segment-size-bytes");
    if kind.as_deref() == Some("stream")
        && segment
            .and_then(crate::queue_args::integer)
            .is_some_and(|n| n > i128::from(crate::stream::MAX_SEGMENT_BYTES))
    {
        return Err(CoreError::PreconditionFailed(
            "Exceeded max value for x-stream-max-segment-size-bytes".to_owned(),
        ));
    }
    Ok(())
}

/// 405/406 unless `existing` has the attributes `spec` asks for.
fn check_queue_equivalent(
    ctx: &Ctx<'_>,
    vhost: &VHost,
    existing: &Queue,
    spec: &QueueSpec<'_>,
) -> Result<(), CoreError> {
    // Exclusivity differs: RabbitMQ's strict exclusive-access check says 405.
    if ctx.origin.is_some() && spec.exclusive != existing.exclusive_owner.is_some() {
        return Err(fail::queue_locked(vhost, &existing.name));
    }
    let resource = fail::queue_resource(vhost, &existing.name);
    if spec.durable != existing.durable {
        return Err(fail::inequivalent_arg(
            &resource,
            "durable",
            spec.durable,
            existing.durable,
        ));
    }
    if spec.auto_delete != existing.auto_delete {
        return Err(fail::inequivalent_arg(
            &resource,
            "auto_delete",
            spec.auto_delete,
            existing.auto_delete,
        ));
    }
    check_equivalent(vhost, &existing.name, spec.arguments, &existing.arguments)
}

impl Broker {
    /// `queue.declare`. Returns the ready message and consumer counts.
    /// Any declare counts as use for `x-expires`.
    ///
    /// # Errors
    /// 404 passive and missing; 405 another connection's exclusive queue
    /// (or exclusivity differs); 406 other attributes or arguments differ,
    /// an argument is invalid, or a new quorum queue is not durable or is
    /// exclusive or auto-delete; 403 a new `amq.*` name.
    pub(crate) fn declare_queue(
        &mut self,
        ctx: &mut Ctx<'_>,
        vhost: &VHost,
        name: &QueueName,
        passive: bool,
        spec: QueueSpec<'_>,
    ) -> Result<Outcome, CoreError> {
        let uid = self.take_uid();
        let now_ms = ctx.now_ms;
        let vh = self.vhost_mut(vhost)?;
        if vh.queues.contains_key(name) {
            let queue = usable_queue(ctx, vh, vhost, name)?;
            if !passive {
                check_queue_equivalent(ctx, vhost, queue, &spec)?;
                // Redeclaring renews an x-expires lease; a passive probe does not.
                queue.last_used_ms = now_ms;
            }
            // A stream's consumers read it without taking: RabbitMQ counts
            // none (and its messages, as here).
            let consumer_count = if queue.is_stream() { 0 } else { queue.consumer_count() };
            return Ok(Outcome::QueueDeclared {
                queue: name.clone(),
                message_count: queue.ready_count(),
                consumer_count,
                created: false,
            });
        }
        if passive {
            return Err(fail::no_queue(vhost, name));
        }
        if is_reserved_queue_name(name) {
            return Err(fail::reserved_queue_name(name));
        }
        let args = QueueArgs::parse(vhost, name, spec.arguments)?;
        check_queue_type_properties(vhost, name, &spec)?;
        let conn = ctx.origin.map(|c| c.conn);
        let queue = Queue {
            name: name.clone(),
            uid,
            durable: spec.durable,
            exclusive_owner: if spec.exclusive { conn } else { None },
            auto_delete: spec.auto_delete,
            arguments: spec.arguments.clone(),
            args,
            home: conn.map(|c| (c.node, c.boot)),
            ready: crate::ready::Ready::default(),
            expiries: BTreeSet::new(),
            ready_bytes: 0,
            unacked: 0,
            next_seq: 0,
            consumers: Vec::new(),
            next_consumer: 0,
            segments: std::collections::VecDeque::new(),
            had_consumer: false,
            last_used_ms: now_ms,
            stats: crate::stats::QueueStats::default(),
            policy: None,
        };
        vh.queues.insert(name.clone(), queue);
        self.apply_policy_to_queue(vhost, name);
        Ok(Outcome::QueueDeclared {
            queue: name.clone(),
            message_count: 0,
            consumer_count: 0,
            created: true,
        })
    }

    /// `queue.bind`; binding twice is fine.
    ///
    /// # Errors
    /// 403 the default exchange; 404 exchange or queue missing; 406 a bad
    /// `x-match`; 405 exclusive queue of another connection.
    pub(crate) fn bind_queue(
        &mut self,
        ctx: &mut Ctx<'_>,
        vhost: &VHost,
        queue: &QueueName,
        exchange: &ExchangeName,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> Result<Outcome, CoreError> {
        let vh = self.vhost_mut(vhost)?;
        let binding = checked_queue_binding(ctx, vh, vhost, queue, exchange, routing_key, arguments)?;
        if let Some(source) = vh.exchanges.get_mut(exchange) {
            source.bind(binding);
        }
        Ok(Outcome::Done)
    }

    /// `queue.unbind`. As in RabbitMQ 3.x (`rabbit_binding:remove`), it is
    /// idempotent: a missing exchange, queue or binding answers unbind-ok,
    /// and the arguments are not validated. aio-pika's RPC `close()`
    /// unbinds its auto-delete reply queue right after cancelling the
    /// queue's last consumer, when queue and exchange are already gone.
    ///
    /// # Errors
    /// 403 the default exchange; 405 the binding exists and its queue is
    /// another connection's exclusive queue.
    pub(crate) fn unbind_queue(
        &mut self,
        ctx: &mut Ctx<'_>,
        vhost: &VHost,
        queue: &QueueName,
        exchange: &ExchangeName,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> Result<Outcome, CoreError> {
        if exchange.is_default() {
            return Err(fail::default_exchange_refused());
        }
        let vh = self.vhost_mut(vhost)?;
        let binding = Binding {
            destination: Destination::Queue(queue.clone()),
            routing_key: routing_key.to_owned(),
            arguments: arguments.clone(),
        };
        let bound = vh
            .exchanges
            .get(exchange)
            .is_some_and(|x| x.bindings.contains(&binding));
        if !bound {
            return Ok(Outcome::Done);
        }
        usable_queue(ctx, vh, vhost, queue)?;
        unbind(vh, exchange, &binding);
        Ok(Outcome::Done)
    }

    /// `queue.purge`: drops every ready message (unacked ones stay).
    ///
    /// # Errors
    /// 404 missing; 405 another connection's exclusive queue.
    pub(crate) fn purge_queue(
        &mut self,
        ctx: &mut Ctx<'_>,
        vhost: &VHost,
        name: &QueueName,
    ) -> Result<Outcome, CoreError> {
        let vh = self.vhost_mut(vhost)?;
        let queue = usable_queue(ctx, vh, vhost, name)?;
        if queue.is_stream() {
            return Err(crate::stream::not_supported("queue.purge", vhost, name));
        }
        let purged = queue.purge();
        Ok(Outcome::QueuePurged {
            message_count: u32::try_from(purged).unwrap_or(u32::MAX),
        })
    }

    /// `queue.delete`; deleting a missing queue succeeds with count 0.
    ///
    /// # Errors
    /// 405 another connection's exclusive queue; 406 `if_unused` with
    /// consumers or `if_empty` with ready messages.
    pub(crate) fn delete_queue_command(
        &mut self,
        ctx: &mut Ctx<'_>,
        vhost: &VHost,
        name: &QueueName,
        if_unused: bool,
        if_empty: bool,
    ) -> Result<Outcome, CoreError> {
        let vh = self.vhost_mut(vhost)?;
        if !vh.queues.contains_key(name) {
            return Ok(Outcome::QueueDeleted { message_count: 0 });
        }
        let queue = usable_queue(ctx, vh, vhost, name)?;
        if queue.is_stream() {
            // RabbitMQ deletes a stream whatever `if_unused` and
            // `if_empty` say, and counts nothing.
            self.remove_queue(ctx, vhost, name);
            return Ok(Outcome::QueueDeleted { message_count: 0 });
        }
        if if_unused && !queue.consumers.is_empty() {
            return Err(fail::queue_in_use(vhost, name));
        }
        if if_empty && !queue.ready.is_empty() {
            return Err(fail::queue_not_empty(vhost, name));
        }
        let message_count = queue.ready_count();
        self.remove_queue(ctx, vhost, name);
        Ok(Outcome::QueueDeleted { message_count })
    }

    /// Deletes queue `name`: its ready messages go, its consumers are
    /// cancelled (`Effect::CancelConsumer` to each), its bindings are
    /// removed (auto-delete exchanges may follow). Its unacked deliveries
    /// stay in their channels, so acks of them remain valid; requeued,
    /// they are dropped.
    pub(crate) fn remove_queue(&mut self, ctx: &mut Ctx<'_>, vhost: &VHost, name: &QueueName) -> Option<Queue> {
        let vh = self.vhosts.get_mut(vhost)?;
        let queue = vh.queues.remove(name)?;
        remove_bindings_to(vh, &Destination::Queue(name.clone()));
        for consumer in &queue.consumers {
            if let Some(channel) = self.channels.get_mut(&consumer.channel) {
                channel.consumers.remove(&consumer.tag);
            }
            ctx.effects.push(Effect::CancelConsumer {
                channel: consumer.channel,
                consumer_tag: consumer.tag.clone(),
            });
        }
        Some(queue)
    }
}

/// The binding a `queue.bind` names, after checking both ends in
/// RabbitMQ's order: the default exchange (403), the exchange (404), the
/// queue (404), the arguments (406), exclusivity (405).
fn checked_queue_binding(
    ctx: &Ctx<'_>,
    vh: &mut VHostState,
    vhost: &VHost,
    queue: &QueueName,
    exchange: &ExchangeName,
    routing_key: &str,
    arguments: &FieldTable,
) -> Result<Binding, CoreError> {
    if exchange.is_default() {
        return Err(fail::default_exchange_refused());
    }
    let Some(source) = vh.exchanges.get(exchange) else {
        return Err(fail::no_exchange(vhost, exchange));
    };
    let kind = source.kind;
    if !vh.queues.contains_key(queue) {
        return Err(fail::no_queue(vhost, queue));
    }
    check_binding_arguments(kind, arguments)?;
    usable_queue(ctx, vh, vhost, queue)?;
    Ok(Binding {
        destination: Destination::Queue(queue.clone()),
        routing_key: routing_key.to_owned(),
        arguments: arguments.clone(),
    })
}
