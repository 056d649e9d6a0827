//! `basic.publish`: routing, per-message TTL and enqueueing with the
//! length limits.

use std::sync::Arc;

use crate::broker::{Broker, Ctx};
use crate::dead_letter::{dead_letters, DeathReason};
use crate::dispatch::{consumer_record, idle_consumer};
use crate::effect::Outcome;
use crate::error::CoreError;
use crate::fail;
use crate::ids::{QueueName, VHost};
use crate::message::Message;
use crate::queue_args::Overflow;
use crate::reply_to::parse_reply_address;

/// What enqueueing one message into one queue did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Enqueued {
    Accepted,
    /// `x-overflow=reject-publish(-dlx)` refused it.
    Rejected,
    /// The queue no longer exists.
    Missing,
}

/// The per-message TTL of an `expiration` property, in ms, read as
/// RabbitMQ's `parse_expiration` reads it (Erlang's `string:to_integer`:
/// an optional sign and digits, nothing after them; 0 to ten years).
///
/// ```text
/// None -> Ok(None); "60000" -> Ok(Some(60000)); "+5" -> Ok(Some(5));
/// "soon" -> no_integer; "5 " -> {leftover_string," "}; "-1" -> {value_negative,-1}
/// ```
///
/// # Errors
/// 406 `invalid expiration '…': <reason>` with RabbitMQ's reason.
pub(crate) fn message_ttl_ms(expiration: Option<&str>) -> Result<Option<u64>, CoreError> {
    /// Ten years, RabbitMQ's `check_expiry` bound.
    const MAX_MS: i128 = 315_360_000_000;
    let Some(expiration) = expiration else {
        return Ok(None);
    };
    let refuse = |reason: String| fail::invalid_expiration(expiration, &reason);
    let unsigned = expiration.strip_prefix(['+', '-']).unwrap_or(expiration);
    let digits = unsigned.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(refuse("no_integer".to_owned()));
    }
    let (number, rest) = unsigned.split_at(digits);
    if !rest.is_empty() {
        return Err(refuse(format!("{{leftover_string,\"{rest}\"}}")));
    }
    // Longer than an i128 holds is far past the bound either way.
    let magnitude = number.parse::<i128>().unwrap_or(i128::MAX);
    let n = if expiration.starts_with('-') {
        -magnitude
    } else {
        magnitude
    };
    if n < 0 {
        return Err(refuse(format!("{{value_negative,{n}}}")));
    }
    if n > MAX_MS {
        // The digits as given: Erlang's integers have no upper bound.
        let shown = number.trim_start_matches('0');
        return Err(refuse(format!("{{value_too_large,{shown}}}")));
    }
    Ok(Some(n as u64))
}

/// The expiry time of a message entering a queue at `now_ms`: the smaller
/// of the queue's and the message's TTL.
pub(crate) fn expires_at_ms(now_ms: u64, queue_ttl_ms: Option<u64>, message_ttl_ms: Option<u64>) -> Option<u64> {
    let ttl = match (queue_ttl_ms, message_ttl_ms) {
        (Some(a), Some(b)) => a.min(b),
        (ttl, None) | (None, ttl) => ttl?,
    };
    Some(now_ms.saturating_add(ttl))
}

impl Broker {
    /// `basic.publish` of `message` (its `exchange` and `routing_key` say where).
    /// Direct reply-to requests and replies take their own path (see
    /// [`crate::reply_to`]).
    ///
    /// `routed` iff some queue matched; `rejected` iff a matched queue
    /// refused it for its length limit; `returned` carries the message iff
    /// `mandatory` and unroutable.
    ///
    /// # Errors
    /// 404 exchange missing; 403 internal exchange; 406 bad `expiration`,
    /// or `reply_to = amq.rabbitmq.reply-to` without a reply consumer.
    pub(crate) fn publish(
        &mut self,
        ctx: &mut Ctx<'_>,
        vhost: &VHost,
        mandatory: bool,
        message: &Arc<Message>,
    ) -> Result<Outcome, CoreError> {
        // RabbitMQ's order (`rabbit_channel`, basic.publish): the exchange
        // (404), internal (403), direct reply-to (406), expiration (406).
        self.check_exchange(vhost, &message.exchange)?;
        let message = &self.address_replies(ctx.origin, message)?;
        let ttl_ms = message_ttl_ms(message.properties.expiration.as_deref())?;
        if message.exchange.is_default() {
            if let Some(target) = parse_reply_address(&message.routing_key) {
                let routed = self.deliver_reply(ctx, target, message);
                let returned = (mandatory && !routed).then(|| Arc::clone(message));
                return Ok(Outcome::Published {
                    routed,
                    rejected: false,
                    returned,
                });
            }
        }
        let vh = self.vhost_mut(vhost)?;
        let targets = vh.route(&message.exchange, message);
        let message = &if targets.is_empty() || self.taken_at_once(vhost, &targets) {
            Arc::clone(message)
        } else {
            spill(ctx, message)
        };
        let mut rejected = false;
        for queue in &targets {
            rejected |= self.enqueue(ctx, vhost, queue, Arc::clone(message), ttl_ms) == Enqueued::Rejected;
        }
        let routed = !targets.is_empty();
        let returned = (mandatory && !routed).then(|| Arc::clone(message));
        self.stats.publish += 1;
        if let Some(exchange) = self
            .vhosts
            .get_mut(vhost)
            .and_then(|v| v.exchanges.get_mut(&message.exchange))
        {
            exchange.stats.publish_in += 1;
            exchange.stats.publish_out += u64::from(routed);
        }
        if !routed {
            if mandatory {
                self.stats.return_unroutable += 1;
            } else {
                self.stats.drop_unroutable += 1;
            }
        }
        Ok(Outcome::Published {
            routed,
            rejected,
            returned,
        })
    }

    /// Whether a message routed to `targets` leaves the broker in this
    /// request: every target has nothing ready, only `no_ack` consumers,
    /// and one of them can take it now. Its body then never needs the
    /// node's store (a transient consumer that keeps up, issue 11): it is
    /// delivered from memory and forgotten. If dispatch keeps it after all
    /// (a consumer it did not expect), it stays in memory, as on a node
    /// without a store; what is kept is the same either way.
    fn taken_at_once(&self, vhost: &VHost, targets: &[QueueName]) -> bool {
        let Some(vh) = self.vhosts.get(vhost) else {
            return false;
        };
        targets.iter().all(|name| {
            let Some(queue) = vh.queues.get(name) else {
                return false;
            };
            if queue.is_stream() || !queue.ready.is_empty() {
                return false;
            }
            // One pass, one lookup a consumer: every one `no_ack`, and one
            // that dispatch would try free.
            let mut one_can_take = false;
            for (index, c) in queue.consumers.iter().enumerate() {
                match consumer_record(&self.channels, c) {
                    Some((channel, consumer)) if consumer.no_ack => {
                        one_can_take |= queue.dispatches_to(index) && channel.can_take(consumer);
                    }
                    _ => return false,
                }
            }
            one_can_take
        })
    }

    /// 404 if `vhost` or exchange `name` (other than the default) is
    /// missing, 403 if the exchange is internal.
    pub(crate) fn check_exchange(&self, vhost: &VHost, name: &crate::ids::ExchangeName) -> Result<(), CoreError> {
        let vh = self.vhosts.get(vhost).ok_or_else(|| fail::vhost_not_found(vhost))?;
        if name.is_default() {
            return Ok(());
        }
        let Some(exchange) = vh.exchanges.get(name) else {
            return Err(fail::no_exchange(vhost, name));
        };
        if exchange.internal {
            return Err(fail::internal_exchange(vhost, name));
        }
        Ok(())
    }

    /// Puts `message` at the tail of queue `name`, applying the queue's
    /// length limits (drop-head dead-letters the oldest with reason
    /// `maxlen`; reject-publish refuses it). The queue is marked for
    /// dispatch, which also expires a TTL-0 message no consumer took.
    pub(crate) fn enqueue(
        &mut self,
        ctx: &mut Ctx<'_>,
        vhost: &VHost,
        name: &QueueName,
        message: Arc<Message>,
        message_ttl_ms: Option<u64>,
    ) -> Enqueued {
        let id = self.take_message_id();
        let Some(queue) = self.vhosts.get_mut(vhost).and_then(|v| v.queues.get_mut(name)) else {
            return Enqueued::Missing;
        };
        if queue.is_stream() {
            // No TTL, length limit or dead-lettering: retention (ADR 0030).
            queue.append(id, message, ctx.now_ms);
            queue.stats.publish += 1;
            ctx.touch(vhost, name);
            return Enqueued::Accepted;
        }
        if queue.args.overflow != Overflow::DropHead && queue.would_overflow(message.body_len()) {
            if queue.args.overflow == Overflow::RejectPublishDlx {
                let refused = crate::queue::QueuedMessage {
                    id,
                    seq: 0,
                    message,
                    redelivered: false,
                    expires_at_ms: None,
                    priority: 0,
                    returns: 0,
                    appended_ms: 0,
                };
                ctx.dead_letters
                    .extend(dead_letters(vhost, queue, vec![refused], DeathReason::MaxLen));
            }
            return Enqueued::Rejected;
        }
        let expires_at = expires_at_ms(ctx.now_ms, queue.args.message_ttl_ms, message_ttl_ms);
        queue.push_back(id, message, expires_at);
        queue.stats.publish += 1;
        // A message an idle consumer can take right away is never counted
        // against the limits (RabbitMQ delivers it before enqueueing).
        let deliverable_now = queue.ready.len() == 1 && idle_consumer(queue, &self.channels).is_some();
        let mut dropped = Vec::new();
        while queue.is_over_limits() && !deliverable_now {
            // None only if a page could not be read (the node stops).
            let Some(head) = queue.pop_front() else { break };
            dropped.push(head);
        }
        ctx.dead_letters
            .extend(dead_letters(vhost, queue, dropped, DeathReason::MaxLen));
        ctx.touch(vhost, name);
        Enqueued::Accepted
    }
}

/// `message` with its body moved to the node's body store, if the node has
/// one and the body is in memory.
fn spill(ctx: &mut Ctx<'_>, message: &Arc<Message>) -> Arc<Message> {
    let (Some(spill), Some(_)) = (ctx.spill.as_deref_mut(), message.body.inline()) else {
        return Arc::clone(message);
    };
    match spill(message) {
        Some(kept) => Arc::new(kept),
        None => Arc::clone(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiration_parses_non_negative_integers_only() {
        assert_eq!(message_ttl_ms(None), Ok(None));
        assert_eq!(message_ttl_ms(Some("60000")), Ok(Some(60000)));
        assert_eq!(message_ttl_ms(Some("+5")), Ok(Some(5)));
        assert_eq!(message_ttl_ms(Some("0")), Ok(Some(0)));
        assert_eq!(message_ttl_ms(Some("315360000000")), Ok(Some(315_360_000_000)));
        let refused = |e: &str| message_ttl_ms(Some(e)).unwrap_err().to_string();
        // RabbitMQ 3.10.8's texts (parse_expiration, check_expiry).
        for (expiration, reason) in [
            ("soon", "no_integer"),
            ("", "no_integer"),
            (" 5", "no_integer"),
            ("-", "no_integer"),
            ("5 ", "{leftover_string,\" \"}"),
            ("1.5", "{leftover_string,\".5\"}"),
            ("-1", "{value_negative,-1}"),
            ("315360000001", "{value_too_large,315360000001}"),
            (
                "099999999999999999999999999999999999999999",
                "{value_too_large,99999999999999999999999999999999999999999}",
            ),
        ] {
            assert_eq!(
                refused(expiration),
                format!("PRECONDITION_FAILED - invalid expiration '{expiration}': {reason}")
            );
        }
    }

    #[test]
    fn effective_expiry_is_the_smaller_ttl() {
        assert_eq!(expires_at_ms(100, None, None), None);
        assert_eq!(expires_at_ms(100, Some(50), None), Some(150));
        assert_eq!(expires_at_ms(100, None, Some(7)), Some(107));
        assert_eq!(expires_at_ms(100, Some(50), Some(7)), Some(107));
        assert_eq!(expires_at_ms(100, Some(0), Some(7)), Some(100));
    }
}
