//! Constructors for the errors apply reports, worded as RabbitMQ words them
//! (`rabbit_channel`, `rabbit_amqqueue`, `rabbit_misc`), so clients and
//! their tests see familiar texts.

use std::fmt::Display;

use crate::error::CoreError;
use crate::ids::{ConsumerTag, DeliveryTag, ExchangeName, QueueName, VHost};

/// `queue 'q' in vhost '/'`, RabbitMQ's `rabbit_misc:rs/1` for a queue.
pub(crate) fn queue_resource(vhost: &VHost, queue: &QueueName) -> String {
    format!("queue '{queue}' in vhost '{vhost}'")
}

/// `exchange 'x' in vhost '/'`.
pub(crate) fn exchange_resource(vhost: &VHost, exchange: &ExchangeName) -> String {
    format!("exchange '{exchange}' in vhost '{vhost}'")
}

pub(crate) fn vhost_not_found(vhost: &VHost) -> CoreError {
    CoreError::NotAllowed(format!("vhost '{vhost}' not found"))
}

pub(crate) fn no_queue(vhost: &VHost, queue: &QueueName) -> CoreError {
    CoreError::NotFound(format!("no queue '{queue}' in vhost '{vhost}'"))
}

pub(crate) fn no_exchange(vhost: &VHost, exchange: &ExchangeName) -> CoreError {
    CoreError::NotFound(format!("no exchange '{exchange}' in vhost '{vhost}'"))
}

pub(crate) fn default_exchange_refused() -> CoreError {
    CoreError::AccessRefused("operation not permitted on the default exchange".to_owned())
}

pub(crate) fn reserved_exchange_name(exchange: &ExchangeName) -> CoreError {
    CoreError::AccessRefused(format!("exchange name '{exchange}' contains reserved prefix 'amq.*'"))
}

pub(crate) fn reserved_queue_name(queue: &QueueName) -> CoreError {
    CoreError::AccessRefused(format!("queue name '{queue}' contains reserved prefix 'amq.*'"))
}

pub(crate) fn system_exchange_deletion(vhost: &VHost, exchange: &ExchangeName) -> CoreError {
    CoreError::AccessRefused(format!(
        "deletion of system {} not allowed",
        exchange_resource(vhost, exchange)
    ))
}

pub(crate) fn internal_exchange(vhost: &VHost, exchange: &ExchangeName) -> CoreError {
    CoreError::AccessRefused(format!(
        "cannot publish to internal {}",
        exchange_resource(vhost, exchange)
    ))
}

/// 406 for a redeclare whose attribute `arg` differs from the current one.
pub(crate) fn inequivalent_arg(resource: &str, arg: &str, received: impl Display, current: impl Display) -> CoreError {
    CoreError::PreconditionFailed(format!(
        "inequivalent arg '{arg}' for {resource}: received '{received}' but current is '{current}'"
    ))
}

/// 406 for a redeclare whose argument `arg` differs; a missing one reads
/// `none`, unquoted (RabbitMQ `rabbit_misc:val/1`).
/// 406 for an argument a redeclare changed, its values as RabbitMQ shows
/// them ([`crate::queue_args::inequivalence`]).
pub(crate) fn inequivalent_values(resource: &str, arg: &str, received: &str, current: &str) -> CoreError {
    CoreError::PreconditionFailed(format!(
        "inequivalent arg '{arg}' for {resource}: received {received} but current is {current}"
    ))
}

/// 406 for a queue property its type does not allow (RabbitMQ
/// `rabbit_queue_type_util`: quorum queues are durable, not exclusive, not
/// auto-delete).
pub(crate) fn invalid_queue_property(vhost: &VHost, queue: &QueueName, property: &str) -> CoreError {
    CoreError::PreconditionFailed(format!(
        "invalid property '{property}' for {}",
        queue_resource(vhost, queue)
    ))
}

/// 406 for a queue argument of the wrong type or value.
pub(crate) fn invalid_queue_arg(vhost: &VHost, queue: &QueueName, arg: &str, reason: &str) -> CoreError {
    CoreError::PreconditionFailed(format!(
        "invalid arg '{arg}' for {}: {reason}",
        queue_resource(vhost, queue)
    ))
}

pub(crate) fn queue_locked(vhost: &VHost, queue: &QueueName) -> CoreError {
    CoreError::ResourceLocked(format!(
        "cannot obtain exclusive access to locked {}",
        queue_resource(vhost, queue)
    ))
}

pub(crate) fn queue_in_exclusive_use(vhost: &VHost, queue: &QueueName) -> CoreError {
    CoreError::AccessRefused(format!("{} in exclusive use", queue_resource(vhost, queue)))
}

pub(crate) fn queue_in_use(vhost: &VHost, queue: &QueueName) -> CoreError {
    CoreError::PreconditionFailed(format!("{} in use", queue_resource(vhost, queue)))
}

pub(crate) fn queue_not_empty(vhost: &VHost, queue: &QueueName) -> CoreError {
    CoreError::PreconditionFailed(format!("{} not empty", queue_resource(vhost, queue)))
}

pub(crate) fn exchange_in_use(vhost: &VHost, exchange: &ExchangeName) -> CoreError {
    CoreError::PreconditionFailed(format!("{} in use", exchange_resource(vhost, exchange)))
}

pub(crate) fn reused_consumer_tag(tag: &ConsumerTag) -> CoreError {
    CoreError::NotAllowed(format!("attempt to reuse consumer tag '{tag}'"))
}

pub(crate) fn unknown_delivery_tag(tag: DeliveryTag) -> CoreError {
    CoreError::PreconditionFailed(format!("unknown delivery tag {}", tag.0))
}

/// 406 for an `expiration` property RabbitMQ's `parse_expiration` refuses;
/// `reason` as it prints it (`no_integer`, `{value_negative,-1}`, …).
pub(crate) fn invalid_expiration(expiration: &str, reason: &str) -> CoreError {
    CoreError::PreconditionFailed(format!("invalid expiration '{expiration}': {reason}"))
}

pub(crate) fn invalid_x_match(value: &str) -> CoreError {
    CoreError::PreconditionFailed(format!(
        "invalid x-match field value '{value}'; expected all, any, all-with-x, or any-with-x"
    ))
}
