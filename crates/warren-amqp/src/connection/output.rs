//! Writing to the client: frames, publisher confirms (coalesced into
//! runs), and closing a channel or the connection.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::{debug, info, warn};
use warren_core::{reply_code, AfterReturn, Message};
use warren_wire::protocol::{basic, channel, connection, AMQPClass};
use warren_wire::AMQPFrame;

use crate::channel::{ChannelState, Pending};
use crate::convert::{properties_ref, short};
use crate::counters::connection_counter;
use crate::error::AmqpError;

use super::{returning_unsent, ConfirmRun, Connection, CLOSE_OK_WAIT};

impl Connection {
    /// Confirms publish `seq` on `ch`. Acks are held back and coalesced:
    /// consecutive acks on a channel go out as one `basic.ack` with
    /// `multiple` set (before anything else is written on that channel, and
    /// at the latest when the output is flushed). Replies arrive in publish
    /// order, so every sequence number below the run is already confirmed.
    pub(super) fn send_confirm(&mut self, ch: u16, seq: u64, ack: bool) {
        if ack {
            crate::counters::bump(&self.frontend.counters.confirmed, 1);
            self.stats.bump(connection_counter::CONFIRM, 1);
            match self.confirms_due.iter_mut().find(|run| run.channel == ch) {
                Some(run) => run.last = seq,
                None => self.confirms_due.push(ConfirmRun {
                    channel: ch,
                    first: seq,
                    last: seq,
                }),
            }
            return;
        }
        let nack = basic::AMQPMethod::Nack(basic::Nack {
            delivery_tag: seq,
            multiple: false,
            requeue: false,
        });
        self.send_method(ch, AMQPClass::Basic(nack));
    }

    /// Writes the held-back acks of channel `only` (all channels: `None`).
    pub(super) fn write_confirms(&mut self, only: Option<u16>) {
        let mut i = 0;
        while i < self.confirms_due.len() {
            if only.is_some_and(|ch| ch != self.confirms_due[i].channel) {
                i += 1;
                continue;
            }
            let run = self.confirms_due.swap_remove(i);
            let ack = basic::AMQPMethod::Ack(basic::Ack {
                delivery_tag: run.last,
                multiple: run.last > run.first,
            });
            self.send_frame(&AMQPFrame::Method(run.channel, AMQPClass::Basic(ack)));
        }
    }

    /// Closes channel `ch` from the server side: tells the client, forgets
    /// what the channel awaited, and has the core requeue what it held.
    pub(super) async fn close_channel_by_server(
        &mut self,
        ch: u16,
        code: u16,
        text: &str,
        class_id: u16,
        method_id: u16,
    ) -> Result<(), AmqpError> {
        debug!(conn = ?self.id, channel = ch, code, text, "closing channel");
        let close = channel::Close {
            reply_code: code,
            reply_text: short(text),
            class_id,
            method_id,
        };
        self.send_method(ch, AMQPClass::Channel(channel::AMQPMethod::Close(close)));
        let slot = self.slot(ch);
        slot.state = ChannelState::ClosedByServer;
        slot.content = None;
        slot.drop_transaction();
        slot.draining = true;
        slot.discard_pending();
        let unsent = slot.credit.take_all_held();
        let command = returning_unsent(unsent, AfterReturn::CloseChannel);
        self.submit(ch, Pending::ServerClose, command).await
    }

    /// Sends `connection.close` and waits briefly for `close-ok`.
    pub(super) async fn close_connection(&mut self, code: u16, text: &str, class_id: u16, method_id: u16) {
        info!(conn = ?self.id, peer = %self.peer, code, text, "closing connection");
        let close = connection::Close {
            reply_code: code,
            reply_text: short(text),
            class_id,
            method_id,
        };
        self.send_method(0, AMQPClass::Connection(connection::AMQPMethod::Close(close)));
        if self.flush().await.is_err() {
            return;
        }
        // Drain until close-ok, anything unreadable, or the wait ends.
        let _ = tokio::time::timeout(CLOSE_OK_WAIT, async {
            loop {
                self.inbuf.reserve(4096);
                match self.reader.read_buf(&mut self.inbuf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                // A frame we cannot decode after our close is not worth an answer.
                let frame_max = self.frame_max.max(warren_wire::FRAME_MIN_SIZE);
                while let Ok(Some(frame)) = warren_wire::decode_frame(&mut self.inbuf, frame_max) {
                    if matches!(
                        frame,
                        AMQPFrame::Method(0, AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)))
                    ) {
                        return;
                    }
                }
            }
        })
        .await;
        let _ = self.writer.shutdown().await;
    }

    pub(super) fn send_frame(&mut self, frame: &AMQPFrame) {
        if let Err(e) = warren_wire::encode_frame(frame, &mut self.out) {
            warn!(conn = ?self.id, error = %e, "could not encode a frame");
        }
    }

    pub(super) fn send_method(&mut self, ch: u16, method: AMQPClass) {
        if !self.confirms_due.is_empty() {
            self.write_confirms(Some(ch));
        }
        self.send_frame(&AMQPFrame::Method(ch, method));
    }

    /// Sends a `basic.deliver`, written by hand (`warren_wire::encode_deliver`).
    pub(super) fn send_deliver(&mut self, ch: u16, deliver: &warren_wire::Deliver<'_>) {
        if !self.confirms_due.is_empty() {
            self.write_confirms(Some(ch));
        }
        warren_wire::encode_deliver(ch, deliver, &mut self.out);
    }

    /// Sends `message`'s header and body frames.
    ///
    /// # Errors
    /// 541 if the body is not in memory: the state machine reads every body
    /// back before it hands a message to a connection, so that is a bug.
    pub(super) fn send_content(&mut self, ch: u16, message: &Message) -> Result<(), AmqpError> {
        let Some(body) = message.body.inline() else {
            tracing::error!(conn = ?self.id, body = ?message.body, "a message reached a connection without its body");
            return Err(AmqpError::connection(
                reply_code::INTERNAL_ERROR,
                "INTERNAL_ERROR - a message body was not read back from the store",
            ));
        };
        let properties = properties_ref(&message.properties);
        if let Err(e) = warren_wire::encode_content_ref(ch, 60, &properties, body, self.frame_max, &mut self.out) {
            warn!(conn = ?self.id, error = %e, "could not encode content");
        }
        Ok(())
    }

    pub(super) async fn flush(&mut self) -> Result<(), AmqpError> {
        if !self.confirms_due.is_empty() {
            self.write_confirms(None);
        }
        if !self.out.is_empty() {
            self.writer.write_all(&self.out).await?;
            // A no-op on TCP; TLS may hold the last record until flushed.
            self.writer.flush().await?;
            self.stats.bump(connection_counter::SEND_OCT, self.out.len() as u64);
            self.stats.bump(connection_counter::SEND_CNT, 1);
            self.out.clear();
        }
        Ok(())
    }
}
