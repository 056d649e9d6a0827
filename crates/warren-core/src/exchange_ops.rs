//! Exchange commands: declare, delete, exchange-to-exchange bind/unbind,
//! and the auto-delete cascade shared with queue deletion.

use amq_protocol_types::FieldTable;

use crate::broker::Broker;
use crate::command::ExchangeKind;
use crate::effect::Outcome;
use crate::error::CoreError;
use crate::exchange::{Binding, Destination, Exchange};
use crate::fail;
use crate::headers::XMatch;
use crate::ids::{ExchangeName, NodeId, VHost};
use crate::queue_args::inequivalence;
use crate::vhost::VHostState;

/// The attributes of an `exchange.declare`.
pub(crate) struct ExchangeSpec<'a> {
    pub kind: ExchangeKind,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    pub arguments: &'a FieldTable,
    /// `(node, boot)` of the declaring connection.
    pub home: Option<(NodeId, u64)>,
}

fn is_reserved(name: &str) -> bool {
    name.starts_with("amq.")
}

/// 406 unless `existing` has the attributes (and `alternate-exchange`)
/// `spec` asks for.
fn check_exchange_equivalent(vhost: &VHost, existing: &Exchange, spec: &ExchangeSpec<'_>) -> Result<(), CoreError> {
    let resource = fail::exchange_resource(vhost, &existing.name);
    if existing.kind != spec.kind {
        return Err(fail::inequivalent_arg(
            &resource,
            "type",
            spec.kind.as_str(),
            existing.kind.as_str(),
        ));
    }
    if existing.durable != spec.durable {
        return Err(fail::inequivalent_arg(
            &resource,
            "durable",
            spec.durable,
            existing.durable,
        ));
    }
    if existing.auto_delete != spec.auto_delete {
        return Err(fail::inequivalent_arg(
            &resource,
            "auto_delete",
            spec.auto_delete,
            existing.auto_delete,
        ));
    }
    if existing.internal != spec.internal {
        return Err(fail::inequivalent_arg(
            &resource,
            "internal",
            spec.internal,
            existing.internal,
        ));
    }
    // The one argument RabbitMQ compares (`rabbit_exchange:assert_args_equivalence`).
    let key = "alternate-exchange";
    let shown = inequivalence(
        key,
        spec.arguments.inner().get(key),
        existing.arguments.inner().get(key),
    );
    if let Some((received, current)) = shown {
        return Err(fail::inequivalent_values(&resource, key, &received, &current));
    }
    Ok(())
}

/// Validates binding arguments for a source of `kind`.
pub(crate) fn check_binding_arguments(kind: ExchangeKind, arguments: &FieldTable) -> Result<(), CoreError> {
    if kind == ExchangeKind::Headers {
        XMatch::parse(arguments)?;
    }
    Ok(())
}

impl Broker {
    /// `exchange.declare`.
    ///
    /// # Errors
    /// 403 for the default exchange (unless passive) or a new `amq.*` name;
    /// 404 passive and missing; 406 redeclared with other attributes.
    pub(crate) fn declare_exchange(
        &mut self,
        vhost: &VHost,
        name: &ExchangeName,
        passive: bool,
        spec: ExchangeSpec<'_>,
    ) -> Result<Outcome, CoreError> {
        if name.is_default() {
            // Passive or not, as RabbitMQ's `check_not_default_exchange`.
            return Err(fail::default_exchange_refused());
        }
        let vh = self.vhost_mut(vhost)?;
        if let Some(existing) = vh.exchanges.get(name) {
            if !passive {
                check_exchange_equivalent(vhost, existing, &spec)?;
            }
            return Ok(Outcome::ExchangeDeclared);
        }
        if passive {
            return Err(fail::no_exchange(vhost, name));
        }
        if is_reserved(name.as_str()) {
            return Err(fail::reserved_exchange_name(name));
        }
        let exchange = Exchange {
            name: name.clone(),
            kind: spec.kind,
            durable: spec.durable,
            auto_delete: spec.auto_delete,
            internal: spec.internal,
            arguments: spec.arguments.clone(),
            bindings: Vec::new(),
            home: spec.home,
            stats: crate::stats::ExchangeStats::default(),
            policy: None,
            policy_alternate: None,
        };
        vh.exchanges.insert(name.clone(), exchange);
        self.apply_policy_to_exchange(vhost, name);
        Ok(Outcome::ExchangeDeclared)
    }

    /// `exchange.delete`; deleting a missing exchange succeeds (RabbitMQ 3.x).
    ///
    /// # Errors
    /// 403 for the default exchange and `amq.*`; 406 `if_unused` while it
    /// has bindings as source.
    pub(crate) fn delete_exchange(
        &mut self,
        vhost: &VHost,
        name: &ExchangeName,
        if_unused: bool,
    ) -> Result<Outcome, CoreError> {
        if name.is_default() {
            return Err(fail::default_exchange_refused());
        }
        if is_reserved(name.as_str()) {
            return Err(fail::system_exchange_deletion(vhost, name));
        }
        let vh = self.vhost_mut(vhost)?;
        let Some(exchange) = vh.exchanges.get(name) else {
            return Ok(Outcome::ExchangeDeleted);
        };
        if if_unused && !exchange.bindings.is_empty() {
            return Err(fail::exchange_in_use(vhost, name));
        }
        remove_exchange(vh, name);
        Ok(Outcome::ExchangeDeleted)
    }

    /// `exchange.bind`: `source` routes matching messages on to `destination`.
    ///
    /// # Errors
    /// 403 if either is the default exchange; 404 if either is missing;
    /// 406 for a bad `x-match`.
    pub(crate) fn bind_exchange(
        &mut self,
        vhost: &VHost,
        destination: &ExchangeName,
        source: &ExchangeName,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> Result<Outcome, CoreError> {
        let vh = self.vhost_mut(vhost)?;
        let binding = checked_exchange_binding(vhost, vh, destination, source, routing_key, arguments)?;
        if let Some(source) = vh.exchanges.get_mut(source) {
            source.bind(binding);
        }
        Ok(Outcome::Done)
    }

    /// `exchange.unbind`: idempotent as `queue.unbind` is (a missing
    /// exchange or binding answers unbind-ok; arguments are not validated).
    ///
    /// # Errors
    /// 403 if either is the default exchange.
    pub(crate) fn unbind_exchange(
        &mut self,
        vhost: &VHost,
        destination: &ExchangeName,
        source: &ExchangeName,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> Result<Outcome, CoreError> {
        if source.is_default() || destination.is_default() {
            return Err(fail::default_exchange_refused());
        }
        let vh = self.vhost_mut(vhost)?;
        let binding = Binding {
            destination: Destination::Exchange(destination.clone()),
            routing_key: routing_key.to_owned(),
            arguments: arguments.clone(),
        };
        unbind(vh, source, &binding);
        Ok(Outcome::Done)
    }

    /// The vhost's state.
    ///
    /// # Errors
    /// 530 if it does not exist.
    pub(crate) fn vhost_mut(&mut self, vhost: &VHost) -> Result<&mut VHostState, CoreError> {
        self.vhosts.get_mut(vhost).ok_or_else(|| fail::vhost_not_found(vhost))
    }
}

/// The binding an `exchange.bind` names, after checking both ends.
fn checked_exchange_binding(
    vhost: &VHost,
    vh: &VHostState,
    destination: &ExchangeName,
    source: &ExchangeName,
    routing_key: &str,
    arguments: &FieldTable,
) -> Result<Binding, CoreError> {
    if source.is_default() || destination.is_default() {
        return Err(fail::default_exchange_refused());
    }
    let Some(source_exchange) = vh.exchanges.get(source) else {
        return Err(fail::no_exchange(vhost, source));
    };
    if !vh.exchanges.contains_key(destination) {
        return Err(fail::no_exchange(vhost, destination));
    }
    check_binding_arguments(source_exchange.kind, arguments)?;
    Ok(Binding {
        destination: Destination::Exchange(destination.clone()),
        routing_key: routing_key.to_owned(),
        arguments: arguments.clone(),
    })
}

/// Removes `binding` from `source`; an auto-delete source left without
/// bindings is deleted (with the cascade that implies).
pub(crate) fn unbind(vh: &mut VHostState, source: &ExchangeName, binding: &Binding) {
    let Some(exchange) = vh.exchanges.get_mut(source) else {
        return;
    };
    if exchange.unbind(binding) && exchange.auto_delete && exchange.bindings.is_empty() {
        remove_exchange(vh, source);
    }
}

/// Removes every binding to `destination`, then deletes the auto-delete
/// exchanges that lost their last binding, and so on transitively.
pub(crate) fn remove_bindings_to(vh: &mut VHostState, destination: &Destination) {
    let mut emptied = Vec::new();
    for exchange in vh.exchanges.values_mut() {
        if exchange.unbind_destination(destination) > 0 && exchange.auto_delete && exchange.bindings.is_empty() {
            emptied.push(exchange.name.clone());
        }
    }
    for name in emptied {
        remove_exchange(vh, &name);
    }
}

/// Deletes exchange `name` and every binding to it (cascading auto-delete).
pub(crate) fn remove_exchange(vh: &mut VHostState, name: &ExchangeName) {
    if vh.exchanges.remove(name).is_none() {
        return;
    }
    remove_bindings_to(vh, &Destination::Exchange(name.clone()));
}
