//! Transactions: `tx.commit` of what a transactional channel published and
//! settled since its last commit or rollback (ADR 0020).
//!
//! The front end holds a transaction until the client commits it, then
//! sends it whole as one command, so a transaction is one Raft entry and
//! takes effect atomically on every node. Apply follows RabbitMQ's
//! `tx.commit`: every publish in order, then every settlement in order.
//! What can fail is checked before anything is applied (a missing or
//! internal exchange, a bad `expiration`, a direct reply-to request
//! without a reply consumer), so a failed commit changes nothing.
//! A publish a queue refuses (`x-overflow=reject-publish`) does not stop
//! the others: as RabbitMQ, the commit then reports a partial completion.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ack::Settle;
use crate::broker::{Broker, Ctx};
use crate::effect::Outcome;
use crate::error::CoreError;
use crate::ids::{ChannelId, DeliveryTag, VHost};
use crate::message::Message;
use crate::publish::message_ttl_ms;

/// A transaction as the client left it at `tx.commit`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Transaction {
    pub vhost: VHost,
    /// In the order they were published.
    pub publishes: Vec<TxPublish>,
    /// In the order the client sent them; each names the delivery tags it
    /// settles, resolved by the front end when the client sent it.
    pub settles: Vec<TxSettle>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TxPublish {
    pub mandatory: bool,
    pub message: Arc<Message>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TxSettle {
    pub tags: Vec<DeliveryTag>,
    pub how: TxSettleKind,
}

/// What a settlement in a transaction does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxSettleKind {
    /// `basic.ack`.
    Ack,
    /// `basic.nack` / `basic.reject` with `requeue`.
    Requeue,
    /// `basic.nack` / `basic.reject` without `requeue`.
    Reject,
}

impl From<TxSettleKind> for Settle {
    fn from(kind: TxSettleKind) -> Self {
        match kind {
            TxSettleKind::Ack => Settle::Ack,
            TxSettleKind::Requeue => Settle::Requeue,
            TxSettleKind::Reject => Settle::Reject,
        }
    }
}

impl Transaction {
    /// Roughly its size in an encoded entry: bodies and routing keys plus
    /// a fixed allowance per item.
    pub fn approximate_bytes(&self) -> u64 {
        const ITEM: u64 = 128;
        let publishes: u64 = self
            .publishes
            .iter()
            .map(|p| ITEM + p.message.body_len() + p.message.routing_key.len() as u64)
            .sum();
        let settles: u64 = self.settles.iter().map(|s| ITEM + 8 * s.tags.len() as u64).sum();
        publishes + settles
    }
}

impl Broker {
    /// `tx.commit`: applies `tx` for `channel`, or nothing if one of its
    /// publishes would fail.
    ///
    /// A settled tag the channel no longer holds is skipped: the front end
    /// checked every tag when the client sent it, so only a
    /// `basic.recover` since then (which requeued it) takes one away.
    ///
    /// # Errors
    /// What the first failing publish would have failed with: 404 no
    /// exchange, 403 internal exchange, 406 bad `expiration` or no reply
    /// consumer.
    pub(crate) fn commit(
        &mut self,
        ctx: &mut Ctx<'_>,
        channel: ChannelId,
        tx: &Transaction,
    ) -> Result<Outcome, CoreError> {
        for publish in &tx.publishes {
            self.check_publish(channel, &tx.vhost, &publish.message)?;
        }
        let mut returned = Vec::new();
        let mut rejected = false;
        for publish in &tx.publishes {
            if let Outcome::Published {
                rejected: refused,
                returned: back,
                ..
            } = self.publish(ctx, &tx.vhost, publish.mandatory, &publish.message)?
            {
                rejected |= refused;
                returned.extend(back);
            }
            // As if each publish were its own command (RabbitMQ routes and
            // delivers them one by one at commit): a consumer that can take
            // the message takes it before the next is enqueued, so a
            // length limit counts what it counts outside a transaction.
            self.settle_queues(ctx);
        }
        for settle in &tx.settles {
            self.settle_each(ctx, channel, settle.tags.clone(), settle.how.into());
        }
        Ok(Outcome::Committed { returned, rejected })
    }

    /// The checks `publish` makes before it changes anything, in its order
    /// (the front end also runs them on its node's state when a
    /// transactional publish arrives, to fail it then, as RabbitMQ does).
    ///
    /// # Errors
    /// 404 no exchange, 403 internal exchange, 406 no reply consumer or a
    /// bad `expiration`.
    pub fn check_publish(&self, channel: ChannelId, vhost: &VHost, message: &Arc<Message>) -> Result<(), CoreError> {
        self.check_exchange(vhost, &message.exchange)?;
        self.address_replies(Some(channel), message)?;
        message_ttl_ms(message.properties.expiration.as_deref())?;
        Ok(())
    }
}
