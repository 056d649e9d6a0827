//! Applying policies to queues and exchanges (ADR 0017): when a queue or an
//! exchange is made, when a policy is set or deleted, and after a snapshot
//! is restored. What applies is a function of the replicated state, so
//! every replica computes the same.

use std::collections::BTreeSet;

use crate::broker::{Broker, Ctx};
use crate::exchange::Exchange;
use crate::ids::{ExchangeName, QueueName, VHost};
use crate::policy::{effective_queue_args, policy_alternate, Matcher, Target};
use crate::queue::Queue;
use crate::queue_args::QueueArgs;

fn target_of(queue: &Queue) -> Target {
    if queue.is_quorum() {
        Target::QuorumQueue
    } else if queue.is_stream() {
        Target::Stream
    } else {
        Target::ClassicQueue
    }
}

/// Sets `queue`'s arguments as they act and the name of the policy behind
/// them.
fn apply_to_queue(matcher: &Matcher<'_>, vhost: &VHost, queue: &mut Queue) {
    let applied = matcher
        .find(queue.name.as_str(), target_of(queue))
        .and_then(|(policy, definition)| {
            effective_queue_args(vhost, &queue.name, &queue.arguments, definition).map(|args| (policy, args))
        });
    match applied {
        Some((policy, args)) => {
            queue.args = args;
            queue.policy = Some(policy.name.clone());
        }
        None => {
            // Its own arguments parsed when it was declared.
            if let Ok(own) = QueueArgs::parse(vhost, &queue.name, &queue.arguments) {
                queue.args = own;
            }
            queue.policy = None;
        }
    }
}

fn apply_to_exchange(matcher: &Matcher<'_>, exchange: &mut Exchange) {
    match matcher.find(exchange.name.as_str(), Target::Exchange) {
        Some((policy, definition)) => {
            exchange.policy = Some(policy.name.clone());
            exchange.policy_alternate = policy_alternate(definition);
        }
        None => {
            exchange.policy = None;
            exchange.policy_alternate = None;
        }
    }
}

impl Broker {
    /// Applies `vhost`'s policies to every queue and exchange in it. A
    /// drop-head queue that a lower limit leaves over its length drops
    /// (dead-letters, reason `maxlen`) its head at once, as RabbitMQ does;
    /// a queue whose `expires` changed starts its lease again now (as
    /// RabbitMQ restarts the expiry timer), so a policy does not delete an
    /// idle queue the moment it is set.
    pub(crate) fn apply_policies(&mut self, ctx: &mut Ctx<'_>, vhost: &VHost) {
        let over: BTreeSet<(VHost, QueueName)> = {
            let matcher = Matcher::new(&self.policies, vhost);
            let Some(state) = self.vhosts.get_mut(vhost) else {
                return;
            };
            for exchange in state.exchanges.values_mut() {
                apply_to_exchange(&matcher, exchange);
            }
            state
                .queues
                .values_mut()
                .filter_map(|queue| {
                    let expires = queue.args.expires_ms;
                    apply_to_queue(&matcher, vhost, queue);
                    if queue.args.expires_ms != expires {
                        queue.last_used_ms = ctx.now_ms;
                    }
                    // A stream's limits act when its next segment starts.
                    (queue.is_over_limits() && !queue.is_stream()).then(|| (vhost.clone(), queue.name.clone()))
                })
                .collect()
        };
        self.trim_requeued(ctx, over);
    }

    /// Applies the policies to queue `name` (just declared).
    pub(crate) fn apply_policy_to_queue(&mut self, vhost: &VHost, name: &QueueName) {
        let matcher = Matcher::new(&self.policies, vhost);
        if matcher.is_empty() {
            return;
        }
        if let Some(queue) = self.vhosts.get_mut(vhost).and_then(|v| v.queues.get_mut(name)) {
            apply_to_queue(&matcher, vhost, queue);
        }
    }

    /// Applies the policies to exchange `name` (just declared).
    pub(crate) fn apply_policy_to_exchange(&mut self, vhost: &VHost, name: &ExchangeName) {
        let matcher = Matcher::new(&self.policies, vhost);
        if matcher.is_empty() {
            return;
        }
        if let Some(exchange) = self.vhosts.get_mut(vhost).and_then(|v| v.exchanges.get_mut(name)) {
            apply_to_exchange(&matcher, exchange);
        }
    }

    /// Applies every vhost's policies after a snapshot was restored (what
    /// is not encoded — the names of the policies behind queues and an
    /// exchange's alternate from a policy — is computed again). Nothing is
    /// trimmed: the restored state already holds what trimming did.
    pub(crate) fn reapply_policies(&mut self) {
        let vhosts: Vec<VHost> = self.vhosts.keys().cloned().collect();
        for vhost in vhosts {
            let matcher = Matcher::new(&self.policies, &vhost);
            if let Some(state) = self.vhosts.get_mut(&vhost) {
                for exchange in state.exchanges.values_mut() {
                    apply_to_exchange(&matcher, exchange);
                }
                for queue in state.queues.values_mut() {
                    apply_to_queue(&matcher, &vhost, queue);
                }
            }
        }
    }
}
