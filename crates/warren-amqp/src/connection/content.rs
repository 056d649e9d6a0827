//! Content assembly: a publish's header and body frames, and the publish
//! they complete (in one command, or in parts for large bodies).

use std::sync::Arc;

use warren_core::access::{Perm, ResourceKind};
use warren_core::staged::StagedPublish;
use warren_core::{reply_code, Command, ExchangeName, Message};

use crate::channel::Pending;
use crate::convert::properties_from_wire;
use crate::counters::connection_counter;
use crate::error::AmqpError;

use super::{Connection, STAGED_PART_BYTES};

impl Connection {
    pub(super) async fn handle_content_header(
        &mut self,
        ch: u16,
        header: Box<warren_wire::AMQPContentHeader>,
    ) -> Result<(), AmqpError> {
        let max = self.frontend.config.max_message_size;
        let frame_max = self.frame_max;
        let slot = self.slot(ch);
        let Some(content) = slot.content.as_mut() else {
            return Err(AmqpError::unexpected_frame(format!(
                "content header on channel {ch} without a publish"
            )));
        };
        if content.header.is_some() {
            return Err(AmqpError::unexpected_frame(format!(
                "second content header on channel {ch}"
            )));
        }
        if header.class_id != 60 {
            return Err(AmqpError::unexpected_frame(format!(
                "content header of class {} on channel {ch}, expected 60",
                header.class_id
            )));
        }
        if header.body_size > max {
            slot.content = None;
            return Err(AmqpError::channel(
                ch,
                reply_code::PRECONDITION_FAILED,
                format!(
                    "PRECONDITION_FAILED - message size {} is larger than configured max size {max}",
                    header.body_size
                ),
                (60, 40),
            ));
        }
        // The size was checked against the configured maximum, so this
        // reservation is bounded.
        // Grow with the frames rather than reserving a large body up front
        // on every channel.
        // A body that fits in one frame is taken as that frame's buffer
        // (`handle_content_body`), so only a longer one reserves here.
        if header.body_size > u64::from(frame_max) {
            content.body.reserve(frame_max as usize);
        }
        content.header = Some((header.properties, header.body_size));
        if header.body_size == 0 {
            return self.complete_publish(ch).await;
        }
        Ok(())
    }

    pub(super) async fn handle_content_body(&mut self, ch: u16, body: Vec<u8>) -> Result<(), AmqpError> {
        let slot = self.slot(ch);
        let Some(content) = slot.content.as_mut() else {
            return Err(AmqpError::unexpected_frame(format!(
                "content body on channel {ch} without a publish"
            )));
        };
        let Some((_, size)) = content.header.as_ref() else {
            return Err(AmqpError::unexpected_frame(format!(
                "content body on channel {ch} before its header"
            )));
        };
        let size = *size;
        let received = content.body.len() as u64 + body.len() as u64;
        if received > size {
            return Err(AmqpError::connection(
                reply_code::FRAME_ERROR,
                format!("FRAME_ERROR - content body on channel {ch} is {received} bytes, longer than the {size} its header declared"),
            ));
        }
        content.held.add(body.len() as u64);
        if content.body.is_empty() && received == size {
            // The whole body in one frame: its buffer, not a copy.
            content.body = bytes::BytesMut::from(bytes::Bytes::from(body));
        } else {
            content.body.extend_from_slice(&body);
        }
        if received == size {
            return self.complete_publish(ch).await;
        }
        Ok(())
    }

    pub(super) async fn complete_publish(&mut self, ch: u16) -> Result<(), AmqpError> {
        let slot = self.slot(ch);
        let Some(content) = slot.content.take() else {
            return Ok(());
        };
        let Some((properties, _)) = content.header else {
            return Ok(());
        };
        let properties = properties_from_wire(&properties);
        if let Some(user_id) = &properties.user_id {
            if user_id.as_str() != self.user.as_str() {
                return Err(AmqpError::channel(
                    ch,
                    reply_code::PRECONDITION_FAILED,
                    format!(
                        "PRECONDITION_FAILED - user_id property set to '{user_id}' but authenticated user was '{}'",
                        self.user
                    ),
                    (60, 40),
                ));
            }
        }
        self.authorize(
            ch,
            (60, 40),
            &[(ResourceKind::Exchange, &content.exchange, Perm::Write)],
        )?;
        let counters = &self.frontend.counters;
        crate::counters::bump(&counters.received, 1);
        counters.message_size(content.body.len() as u64);
        self.stats.bump(connection_counter::PUBLISH, 1);
        let slot = self.channels.entry(ch).or_default();
        slot.published = true;
        if slot.confirm {
            crate::counters::bump(&counters.received_confirm, 1);
        }
        let confirm_seq = slot.confirm.then(|| {
            let seq = slot.next_confirm_seq;
            slot.next_confirm_seq += 1;
            seq
        });
        if slot.tx.is_some() {
            return self.publish_in_tx(
                ch,
                content.exchange,
                content.routing_key,
                content.mandatory,
                properties,
                content.body,
            );
        }
        let mut body = content.body.freeze();
        // A large body goes in parts, each its own Raft entry
        // (warren_core::staged); their replies carry nothing to tell.
        let mut parts = 0u32;
        let mut staged_bytes = 0u64;
        let staged_body = if body.len() > STAGED_PART_BYTES {
            let slot = self.slot(ch);
            slot.next_staged_body += 1;
            slot.next_staged_body
        } else {
            0
        };
        while body.len() > STAGED_PART_BYTES {
            let part = body.split_to(STAGED_PART_BYTES);
            staged_bytes += part.len() as u64;
            let command = Command::StageBody {
                body: staged_body,
                index: parts,
                part,
            };
            parts += 1;
            self.submit(ch, Pending::Discard, command).await?;
        }
        let message = Arc::new(Message {
            exchange: ExchangeName::new(content.exchange),
            routing_key: content.routing_key,
            properties: Arc::new(properties),
            body: body.into(),
        });
        let vhost = self.vhost.clone();
        let command = if parts == 0 {
            Command::Publish {
                vhost,
                mandatory: content.mandatory,
                message,
            }
        } else {
            Command::PublishStaged(StagedPublish {
                vhost,
                mandatory: content.mandatory,
                message,
                body: staged_body,
                parts,
                staged_bytes,
            })
        };
        self.submit(ch, Pending::Publish { confirm_seq }, command).await
    }
}
