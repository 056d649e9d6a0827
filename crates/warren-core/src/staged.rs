//! Message bodies that arrive in parts (issue 9, item 5).
//!
//! One message is one Raft entry unless it is split: openraft 0.9 gives an
//! AppendEntries `heartbeat_interval` to be shipped and synced, and sends
//! heartbeats on the same stream, so an entry of tens of MiB starves the
//! followers past their election timeout. The front end therefore sends a
//! body larger than a part as `StageBody` commands (each its own entry)
//! followed by `PublishStaged`, which carries the last part and how many
//! parts and bytes came before it. Every part names its message (a number
//! the channel counts up) and its index. Apply collects the parts per
//! channel — a channel carries one content at a time and its commands are
//! applied in order — and publishes the whole message only if every part
//! of that message arrived, in order. If one was lost (its batch failed
//! while the leader changed), the publish is rejected (a nack) rather than
//! stored with a hole or with another message's part: a part that does not
//! follow the one before (another message, or a gap) spoils what was
//! staged until the next message's part 0.
//!
//! The parts are replicated state: they travel in snapshots beside the
//! broker (warren-cluster's `Replicated`), so a follower that installs a
//! snapshot taken between two parts assembles the same message.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::broker::{Broker, Ctx};
use crate::effect::Outcome;
use crate::error::CoreError;
use crate::ids::{ChannelId, ConnectionId, VHost};
use crate::message::{Body, Message};

/// The parts of one body received so far on a channel.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StagedBody {
    /// The message they belong to.
    pub body: u64,
    pub parts: Vec<Bytes>,
    pub bytes: u64,
    /// A part went missing: the message cannot be completed.
    pub spoiled: bool,
}

/// Every channel's body in progress.
pub type StagedBodies = BTreeMap<ChannelId, StagedBody>;

/// A `PublishStaged`: the end of body `body`. `message` carries the last
/// part; `parts` parts of `staged_bytes` bytes were staged before it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StagedPublish {
    pub vhost: VHost,
    pub mandatory: bool,
    pub message: Arc<Message>,
    pub body: u64,
    pub parts: u32,
    pub staged_bytes: u64,
}

impl Broker {
    /// `StageBody`: adds part `index` of message `body` to `channel`'s
    /// body in progress. Part 0 starts a new body; any other part must
    /// follow the last one of the same message, or the body is spoiled.
    pub(crate) fn stage_body(
        &mut self,
        channel: ChannelId,
        body: u64,
        index: u32,
        part: &Bytes,
    ) -> Result<Outcome, CoreError> {
        let staged = self.staged.entry(channel).or_default();
        if index == 0 {
            *staged = StagedBody {
                body,
                ..StagedBody::default()
            };
        } else if staged.body != body || staged.parts.len() != index as usize {
            staged.body = body;
            staged.spoiled = true;
        }
        if !staged.spoiled {
            staged.bytes += part.len() as u64;
            staged.parts.push(part.clone());
        }
        Ok(Outcome::Done)
    }

    /// `PublishStaged`: with the parts staged on `channel`, `end` is
    /// published as one message.
    ///
    /// # Errors
    /// As [`Broker::publish`]. Parts that do not make up `end`'s body are
    /// not an error: the publish is rejected (nacked).
    pub(crate) fn publish_staged(
        &mut self,
        ctx: &mut Ctx<'_>,
        channel: ChannelId,
        end: &StagedPublish,
    ) -> Result<Outcome, CoreError> {
        let staged = self.staged.remove(&channel).unwrap_or_default();
        let complete = !staged.spoiled
            && (end.parts == 0 || staged.body == end.body)
            && staged.parts.len() == end.parts as usize
            && staged.bytes == end.staged_bytes;
        if !complete {
            return Ok(Outcome::Published {
                routed: false,
                rejected: true,
                returned: None,
            });
        }
        let last: &[u8] = end.message.body.inline().map_or(&[], |bytes| bytes);
        let mut body = BytesMut::with_capacity(usize::try_from(staged.bytes).unwrap_or(0) + last.len());
        for part in &staged.parts {
            body.extend_from_slice(part);
        }
        body.extend_from_slice(last);
        let whole = Message {
            body: Body::Inline(body.freeze()),
            ..(*end.message).clone()
        };
        self.publish(ctx, &end.vhost, end.mandatory, &Arc::new(whole))
    }

    /// Forgets the bodies in progress on `channel` (it closed).
    pub(crate) fn drop_staged_channel(&mut self, channel: ChannelId) {
        self.staged.remove(&channel);
    }

    /// Forgets the bodies in progress on every channel of `conn`.
    pub(crate) fn drop_staged_connection(&mut self, conn: ConnectionId) {
        self.staged.retain(|channel, _| channel.conn != conn);
    }

    /// Bodies in progress on every channel, for snapshots.
    pub fn staged_bodies(&self) -> &StagedBodies {
        &self.staged
    }

    /// Restores the bodies in progress from a snapshot.
    pub fn set_staged_bodies(&mut self, staged: StagedBodies) {
        self.staged = staged;
    }

    /// Bytes of bodies in progress, for the memory alarm.
    pub(crate) fn staged_bytes(&self) -> u64 {
        self.staged.values().map(|s| s.bytes).sum()
    }
}
