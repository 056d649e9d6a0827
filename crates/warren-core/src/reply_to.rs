//! Direct reply-to (`amq.rabbitmq.reply-to`, RabbitMQ's RPC fast path):
//! a requester consumes from the pseudo-queue `amq.rabbitmq.reply-to`
//! (no-ack), publishes requests with `reply_to = amq.rabbitmq.reply-to`,
//! which the core rewrites to `amq.rabbitmq.reply-to.<token>` naming the
//! requester's channel; a reply published to the default exchange with that
//! routing key goes straight to the requester's reply consumer, never
//! through a queue.

use std::sync::Arc;

use crate::broker::{Broker, Ctx};
use crate::effect::{Effect, Outcome};
use crate::error::CoreError;
use crate::ids::{ChannelId, ConnectionId, ConsumerTag, NodeId};
use crate::message::Message;

/// The pseudo-queue a requester consumes from.
pub const REPLY_QUEUE: &str = "amq.rabbitmq.reply-to";

const REPLY_PREFIX: &str = "amq.rabbitmq.reply-to.";

/// The `reply_to` address of `channel`'s reply consumer.
///
/// ```text
/// node 1, boot 7, seq 3, channel 2 -> "amq.rabbitmq.reply-to.1.7.3.2"
/// ```
pub fn reply_address(channel: ChannelId) -> String {
    let ChannelId { conn, channel } = channel;
    format!("{REPLY_PREFIX}{}.{}.{}.{channel}", conn.node.0, conn.boot, conn.seq)
}

/// The channel a reply routing key addresses, if it is one.
pub fn parse_reply_address(routing_key: &str) -> Option<ChannelId> {
    let token = routing_key.strip_prefix(REPLY_PREFIX)?;
    let mut parts = token.split('.');
    let node = parts.next()?.parse().ok()?;
    let boot = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let channel = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    Some(ChannelId {
        conn: ConnectionId {
            node: NodeId(node),
            boot,
            seq,
        },
        channel,
    })
}

impl Broker {
    /// `basic.consume` on `amq.rabbitmq.reply-to`.
    ///
    /// # Errors
    /// 406 unless `no_ack` (RabbitMQ: replies cannot be acknowledged).
    pub(crate) fn consume_replies(
        &mut self,
        channel: ChannelId,
        tag: &ConsumerTag,
        no_ack: bool,
    ) -> Result<Outcome, CoreError> {
        if !no_ack {
            return Err(CoreError::PreconditionFailed(
                "reply consumer cannot acknowledge".to_owned(),
            ));
        }
        self.channel_mut(channel).reply_consumer = Some(tag.clone());
        Ok(Outcome::ConsumeOk {
            consumer_tag: tag.clone(),
        })
    }

    /// Rewrites `reply_to = amq.rabbitmq.reply-to` of a request published
    /// from `origin` to the origin's reply address.
    ///
    /// # Errors
    /// 406 if the publishing channel has no reply consumer.
    pub(crate) fn address_replies(
        &self,
        origin: Option<ChannelId>,
        message: &Arc<Message>,
    ) -> Result<Arc<Message>, CoreError> {
        if message.properties.reply_to.as_deref() != Some(REPLY_QUEUE) {
            return Ok(Arc::clone(message));
        }
        let consumer = origin
            .and_then(|o| self.channels.get(&o))
            .and_then(|ch| ch.reply_consumer.as_ref());
        let (Some(origin), Some(_)) = (origin, consumer) else {
            return Err(CoreError::PreconditionFailed(
                "fast reply consumer does not exist".to_owned(),
            ));
        };
        let mut rewritten = (**message).clone();
        Arc::make_mut(&mut rewritten.properties).reply_to = Some(reply_address(origin));
        Ok(Arc::new(rewritten))
    }

    /// Delivers a reply published to the default exchange with a reply
    /// address. Returns whether a reply consumer took it (unroutable
    /// otherwise). The delivery follows the publisher's reply.
    pub(crate) fn deliver_reply(&mut self, ctx: &mut Ctx<'_>, target: ChannelId, message: &Arc<Message>) -> bool {
        let Some(channel) = self.channels.get_mut(&target) else {
            return false;
        };
        let Some(consumer_tag) = channel.reply_consumer.clone() else {
            return false;
        };
        let delivery_tag = channel.take_delivery_tag();
        ctx.after_reply.push(Effect::Deliver {
            channel: target,
            consumer_tag,
            delivery_tag,
            redelivered: false,
            message: Arc::clone(message),
        });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_addresses_round_trip() {
        let channel = ChannelId {
            conn: ConnectionId {
                node: NodeId(1),
                boot: 7,
                seq: 3,
            },
            channel: 2,
        };
        assert_eq!(reply_address(channel), "amq.rabbitmq.reply-to.1.7.3.2");
        assert_eq!(parse_reply_address(&reply_address(channel)), Some(channel));
        assert_eq!(parse_reply_address("amq.rabbitmq.reply-to.1.7.3"), None);
        assert_eq!(parse_reply_address("amq.rabbitmq.reply-to.1.7.3.2.9"), None);
        assert_eq!(parse_reply_address("q"), None);
    }
}
