//! One AMQP connection: the handshake, then a loop that reads frames from
//! the socket, turns methods into core commands, and writes what the core's
//! effects say (replies, deliveries, cancels) back to the client.
//!
//! The task owns its socket and its channels; it shares nothing but the
//! proposer (to send commands) and the registry (to receive effects).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use warren_core::{
    reply_code, AfterReturn, ChannelId, Command, ConnectionId, ConsumerTag, DeliveryTag, Request, UserName, VHost,
};
use warren_wire::protocol::{channel, connection, AMQPClass};
use warren_wire::{AMQPFrame, Frame, WireError};

use crate::access::AccessCache;
use crate::channel::{ChannelMap, ChannelSlot, ChannelState, Pending};
use crate::convert::short;
use crate::counters::connection_counter;
use crate::error::AmqpError;
use crate::registry::EffectBatch;
use crate::transport::{Reader, Transport, Writer};
use crate::Frontend;

mod basic_methods;
mod content;
mod deliveries;
mod handshake;
mod methods;
mod output;
mod replies;

/// Bytes buffered for the socket before a write is forced mid-batch.
const WRITE_HIGH_WATER: usize = 256 * 1024;
/// A message body larger than this is sent to the core in parts of this
/// size, each its own Raft entry (issue 9, item 5; `warren_core::staged`).
pub(crate) const STAGED_PART_BYTES: usize = 256 * 1024;
/// The most message-body bytes a transaction holds before `tx.commit`:
/// a transaction is one Raft entry, and an entry far larger than a staged
/// part would starve heartbeats as an unsplit large body does (ADR 0020).
pub(crate) const TX_MAX_BYTES: u64 = 4 * 1024 * 1024;
/// What each publish or settlement of a transaction counts toward
/// [`TX_MAX_BYTES`] beside its bodies, properties, names and tags.
const TX_ITEM_BYTES: u64 = 128;
/// Bytes a held (blocked) publishing connection still reads, unhandled,
/// to notice the client closing its socket.
const HELD_READ_BYTES: usize = 64 * 1024;

/// How often a connection whose deliveries the node's fence holds asks
/// whether they may go (ADR 0028).
const FENCE_CHECK: Duration = Duration::from_millis(50);
/// How long the server waits for `connection.close-ok` after its own close.
const CLOSE_OK_WAIT: Duration = Duration::from_secs(1);

/// Serves one accepted socket until it closes. Never panics on client input;
/// whatever happens, the connection's state in the core is closed after it.
pub(crate) async fn serve_connection(
    stream: Transport,
    local: Option<SocketAddr>,
    peer: SocketAddr,
    frontend: Arc<Frontend>,
    seq: u64,
) {
    let _live = frontend.live_connection();
    let local = local.map_or_else(|| "?".to_owned(), |a| a.to_string());
    let id = ConnectionId {
        node: frontend.node_id,
        boot: frontend.boot,
        seq,
    };
    let ssl = matches!(stream, Transport::Tls(_));
    let peer_certificate = stream.peer_certificate();
    let (reader, writer) = stream.split();
    let mut conn = Connection {
        id,
        peer,
        client: crate::registry::ClientInfo {
            host: local.rsplit_once(':').map_or_else(String::new, |(h, _)| h.to_owned()),
            port: local.rsplit_once(':').and_then(|(_, p)| p.parse().ok()).unwrap_or(0),
            ssl,
            ..crate::registry::ClientInfo::default()
        },
        listed_channels: 0,
        channels_opened: 0,
        listed_closed: 0,
        listed_publishers: 0,
        stats: Arc::default(),
        local,
        frontend: frontend.clone(),
        reader,
        writer,
        inbuf: BytesMut::with_capacity(64 * 1024),
        out: BytesMut::with_capacity(64 * 1024),
        frame_max: frontend.config.frame_max,
        channel_max: frontend.config.channel_max,
        heartbeat: Duration::ZERO,
        vhost: VHost::new("/"),
        user: UserName::default(),
        cancel_notify: false,
        blocked_notify: false,
        publishes: false,
        blocked: false,
        channels: ChannelMap::default(),
        last_read: Instant::now(),
        registered: false,
        client_closing: false,
        closed: false,
        confirms_due: Vec::new(),
        qos_prefetch_size: 0,
        access: AccessCache::default(),
        unsent_due: Vec::new(),
        written_due: Vec::new(),
        fence_holding: false,
        peer_certificate,
    };
    let result = conn.run().await;
    match &result {
        Ok(()) => debug!(conn = ?id, %peer, "connection closed"),
        Err(e) => info!(conn = ?id, %peer, error = %e, "connection ended"),
    }
    if conn.registered {
        conn.forget_channels();
        frontend.registry.unregister(id);
        // Deliveries held for the client go back as they were, each
        // channel closing with them (no dispatch back to it in between).
        for (channel, tags) in conn.take_all_held() {
            let request = Request {
                origin: Some(ChannelId { conn: id, channel }),
                command: Command::ReturnUnsent {
                    tags: tags.into_iter().map(DeliveryTag).collect(),
                    then: AfterReturn::CloseChannel,
                },
            };
            if frontend.proposer.submit(request).await.is_err() {
                break;
            }
        }
        let close = Request {
            origin: None,
            command: Command::CloseConnection { conn: id },
        };
        if frontend.proposer.submit(close).await.is_err() {
            warn!(conn = ?id, "could not propose the close of a connection: node shutting down");
        }
    }
}

struct Connection {
    id: ConnectionId,
    peer: SocketAddr,
    /// This end of the socket, for the connection's name.
    local: String,
    /// What the client told of itself in `start-ok`, for listings.
    client: crate::registry::ClientInfo,
    /// Open channels as last told to the registry.
    listed_channels: u32,
    /// Channels opened on this connection, those counted as closed in the
    /// node's counters, and the publishers counted in its gauge.
    channels_opened: u64,
    listed_closed: u64,
    listed_publishers: u64,
    /// This connection's statistics (bytes, socket reads and writes,
    /// messages), listed by the registry.
    stats: Arc<crate::counters::ConnectionCounters>,
    frontend: Arc<Frontend>,
    reader: Reader,
    writer: Writer,
    inbuf: BytesMut,
    out: BytesMut,
    frame_max: u32,
    channel_max: u16,
    heartbeat: Duration,
    vhost: VHost,
    user: UserName,
    /// The client said `consumer_cancel_notify` in its capabilities.
    cancel_notify: bool,
    /// The client said `connection.blocked` in its capabilities.
    blocked_notify: bool,
    /// This connection has published: the memory alarm blocks it.
    publishes: bool,
    /// Reading is held by the memory alarm (and, with `blocked_notify`,
    /// the client was sent `connection.blocked`).
    blocked: bool,
    channels: ChannelMap,
    last_read: Instant,
    registered: bool,
    /// The client sent connection.close; close-ok waits for the core.
    client_closing: bool,
    /// close-ok was sent: the loop ends after the next flush.
    closed: bool,
    /// Publisher-confirm acks not yet written, one run per channel.
    confirms_due: Vec<ConfirmRun>,
    /// The `prefetch-size` of the last frame decoded, if it was a
    /// `basic.qos` (the codec drops the field).
    qos_prefetch_size: u32,
    /// Access checks already passed (see [`crate::access`]).
    access: AccessCache,
    /// Held deliveries of cancelled consumers, per channel, to send back
    /// to their queues (`Command::ReturnUnsent`) once the reply or effect
    /// being handled is done.
    unsent_due: Vec<(u16, Vec<u64>)>,
    /// Writes of `no_ack` consumers' deliveries to report to the core
    /// (`Command::Written`): channel, consumer, (deliveries, body bytes).
    written_due: Vec<(u16, ConsumerTag, (u32, u64))>,
    /// Deliveries are held by the node's delivery fence (ADR 0028): check
    /// every [`FENCE_CHECK`] whether they may go.
    fence_holding: bool,
    /// The client's TLS certificate, for an EXTERNAL login; dropped once
    /// the login is done.
    peer_certificate: crate::auth_mechanism::PeerCertificate,
}

/// Consecutive publisher confirms (acks) of one channel, held back to go
/// out as one `basic.ack` with `multiple` set.
struct ConfirmRun {
    channel: u16,
    first: u64,
    last: u64,
}

impl Connection {
    async fn run(&mut self) -> Result<(), AmqpError> {
        let handshake_timeout = self.frontend.config.handshake_timeout;
        let outcome = match tokio::time::timeout(handshake_timeout, self.handshake()).await {
            Err(_) => return Err(AmqpError::Io(std::io::ErrorKind::TimedOut.into())),
            Ok(outcome) => outcome,
        };
        let outcome = match outcome {
            Ok(()) => {
                let mut info = std::mem::take(&mut self.client);
                info.name = format!("{} -> {}", self.peer, self.local);
                info.user = self.user.to_string();
                info.vhost = self.vhost.to_string();
                info.connected_at_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                info.peer_host = self.peer.ip().to_string();
                info.peer_port = self.peer.port();
                info.channel_max = self.channel_max;
                info.frame_max = self.frame_max;
                info.heartbeat_secs = u16::try_from(self.heartbeat.as_secs()).unwrap_or(u16::MAX);
                let mut effects = self
                    .frontend
                    .registry
                    .register_client(self.id, info, self.stats.clone());
                crate::counters::bump(&self.frontend.counters.connections_opened, 1);
                self.registered = true;
                self.main_loop(&mut effects).await
            }
            Err(e) => Err(e),
        };
        match outcome {
            Err(AmqpError::Connection {
                code,
                text,
                class_id,
                method_id,
            }) => {
                self.close_connection(code, &text, class_id, method_id).await;
                Err(AmqpError::Connection {
                    code,
                    text,
                    class_id,
                    method_id,
                })
            }
            other => other,
        }
    }

    async fn main_loop(&mut self, effects: &mut mpsc::UnboundedReceiver<EffectBatch>) -> Result<(), AmqpError> {
        let heartbeat_on = !self.heartbeat.is_zero();
        let tick = if heartbeat_on {
            self.heartbeat / 2
        } else {
            Duration::from_secs(3600)
        };
        let mut heartbeat = tokio::time::interval(tick.max(Duration::from_millis(100)));
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut alarm = self.frontend.alarms.subscribe();
        let consumer_timeout = self.frontend.config.consumer_timeout;
        let mut ack_check = tokio::time::interval(consumer_timeout.map_or(Duration::from_secs(3600), |timeout| {
            (timeout / 10).clamp(Duration::from_millis(100), Duration::from_secs(60))
        }));
        ack_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut fence_check = tokio::time::interval(FENCE_CHECK);
        fence_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // An alarm holds a publishing connection at its next
            // `basic.publish`: that frame and what follows wait in `inbuf`.
            // Everything before it is handled — acks, and the rest of a
            // content already started (whose partly received body counts
            // toward the memory alarm, so it must be able to finish).
            let held = self.publishes && *alarm.borrow_and_update();
            while !(held && self.next_frame_is_publish()) {
                let Some(frame) = self.decode()? else {
                    break;
                };
                if self.client_closing {
                    // After connection.close the client sends nothing we act on.
                    continue;
                }
                self.handle_frame(frame).await?;
                if self.out.len() > WRITE_HIGH_WATER {
                    self.flush().await?;
                }
            }
            // Held, at most `HELD_READ_BYTES` more are read (and not
            // handled), so that a client that goes away is noticed. A change
            // of the alarm since `held` was read wakes `changed` below.
            self.list_channels();
            let hold = self.publishes && *alarm.borrow();
            self.set_blocked(hold);
            self.flush().await?;
            self.inbuf.reserve(64 * 1024);
            // Every branch is cancel safe: `recv` and `read_buf` lose nothing
            // when another branch wins; `tick` and `changed` only mark time.
            tokio::select! {
                batch = effects.recv() => {
                    let Some(batch) = batch else {
                        if let Some(reason) = self.frontend.registry.forced_reason(self.id) {
                            return Err(AmqpError::connection(
                                reply_code::CONNECTION_FORCED,
                                format!("CONNECTION_FORCED - {reason}"),
                            ));
                        }
                        // The registry let go of this connection: the
                        // cluster declared this node down, or the node
                        // caught up from a snapshot (see
                        // `EffectSink::drop_all_connections`).
                        return Err(AmqpError::connection(
                            reply_code::CONNECTION_FORCED,
                            "CONNECTION_FORCED - broker forced connection closure with reason \
                             'this node lost step with the cluster (cut off, or caught up from a snapshot); reconnect'",
                        ));
                    };
                    self.handle_effects(batch).await?;
                    while let Ok(batch) = effects.try_recv() {
                        self.handle_effects(batch).await?;
                        if self.out.len() > WRITE_HIGH_WATER {
                            self.flush().await?;
                        }
                    }
                    if self.closed {
                        self.flush().await?;
                        return Ok(());
                    }
                }
                // Only a publishing connection cares: consumers are never
                // blocked, so an alarm change need not wake them.
                changed = alarm.changed(), if self.publishes => {
                    // The sender lives in the front end, which outlives
                    // every connection.
                    changed.map_err(|_| AmqpError::Io(std::io::ErrorKind::BrokenPipe.into()))?;
                }
                read = self.reader.read_buf(&mut self.inbuf), if !hold || self.inbuf.len() < HELD_READ_BYTES => {
                    match read? {
                        0 => return Ok(()),
                        n => self.read_counted(n),
                    }
                }
                _ = fence_check.tick(), if self.fence_holding => {
                    self.release_after_fence()?;
                }
                _ = ack_check.tick(), if consumer_timeout.is_some() => {
                    if let Some(timeout) = consumer_timeout {
                        self.close_channels_past_the_consumer_timeout(timeout).await?;
                    }
                }
                _ = heartbeat.tick(), if heartbeat_on => {
                    // Little is read and nothing handled while blocked: the
                    // client's heartbeats wait, as with RabbitMQ.
                    if !hold && self.last_read.elapsed() > self.heartbeat * 2 {
                        warn!(conn = ?self.id, peer = %self.peer, "missed heartbeats from client, closing");
                        return Err(AmqpError::Io(std::io::ErrorKind::TimedOut.into()));
                    }
                    self.send_frame(&AMQPFrame::Heartbeat);
                }
            }
        }
    }

    /// Closes with 406 every open channel whose oldest delivery awaiting an
    /// ack was sent more than `timeout` ago, with RabbitMQ 3.x's text (its
    /// unacked messages go back to their queues, as for any close).
    async fn close_channels_past_the_consumer_timeout(&mut self, timeout: Duration) -> Result<(), AmqpError> {
        let now = Instant::now();
        let late: Vec<u16> = self
            .channels
            .iter_mut()
            .filter(|(_, slot)| slot.state == ChannelState::Open)
            .filter_map(|(ch, slot)| {
                let oldest = slot.oldest_unacked_at()?;
                (now.duration_since(oldest) > timeout).then_some(*ch)
            })
            .collect();
        for ch in late {
            let millis = timeout.as_millis();
            warn!(conn = ?self.id, channel = ch, timeout_ms = %millis, "consumer timeout: closing the channel");
            let text = format!(
                "PRECONDITION_FAILED - delivery acknowledgement on channel {ch} timed out. Timeout value used: \
                 {millis} ms. This timeout value can be configured, see consumers doc guide to learn more"
            );
            self.close_channel_by_server(ch, reply_code::PRECONDITION_FAILED, &text, 0, 0)
                .await?;
        }
        Ok(())
    }

    /// Whether `inbuf` starts with a `basic.publish` method frame (type 1,
    /// class 60, method 40: bytes 0, 7–8 and 9–10 of the frame).
    fn next_frame_is_publish(&self) -> bool {
        let b = &self.inbuf;
        b.len() >= 11 && b[0] == 1 && b[7..9] == 60u16.to_be_bytes() && b[9..11] == 40u16.to_be_bytes()
    }

    /// Enters or leaves the blocked state; tells a client that asked for
    /// it with `connection.blocked` / `connection.unblocked`.
    fn set_blocked(&mut self, hold: bool) {
        if hold == self.blocked {
            return;
        }
        self.blocked = hold;
        if hold {
            debug!(conn = ?self.id, peer = %self.peer, "memory alarm: publishing connection blocked");
            if self.blocked_notify {
                self.send_method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::Blocked(connection::Blocked {
                        reason: short(self.frontend.alarms.reason()),
                    })),
                );
            }
        } else {
            debug!(conn = ?self.id, peer = %self.peer, "memory alarm cleared: connection unblocked");
            // The time spent blocked is not a missed heartbeat.
            self.last_read = Instant::now();
            if self.blocked_notify {
                self.send_method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::Unblocked(connection::Unblocked {})),
                );
            }
        }
    }

    async fn handle_frame(&mut self, frame: Frame) -> Result<(), AmqpError> {
        match frame {
            Frame::Heartbeat => Ok(()),
            Frame::InvalidHeartbeat(ch) => Err(AmqpError::connection(
                reply_code::FRAME_ERROR,
                format!("FRAME_ERROR - heartbeat frame on channel {ch}, expected channel 0"),
            )),
            Frame::Method(0, AMQPClass::Connection(m)) => self.handle_connection_method(m).await,
            Frame::Method(0, other) => Err(AmqpError::connection_for(
                reply_code::COMMAND_INVALID,
                "COMMAND_INVALID - only connection methods may be sent on channel 0",
                (other.get_amqp_class_id(), other.get_amqp_method_id()),
            )),
            Frame::Method(ch, AMQPClass::Connection(_)) => Err(AmqpError::connection(
                reply_code::COMMAND_INVALID,
                format!("COMMAND_INVALID - connection method on channel {ch}"),
            )),
            Frame::Method(ch, method) => {
                self.handle_channel_frame(ch, ChannelFrame::Method(method)).await?;
                Ok(())
            }
            Frame::Header(ch, header) => {
                self.handle_channel_frame(ch, ChannelFrame::Header(header)).await?;
                Ok(())
            }
            Frame::Body(ch, body) => {
                self.handle_channel_frame(ch, ChannelFrame::Body(body)).await?;
                Ok(())
            }
        }
    }

    async fn handle_connection_method(&mut self, method: connection::AMQPMethod) -> Result<(), AmqpError> {
        match method {
            connection::AMQPMethod::Close(close) => {
                debug!(conn = ?self.id, code = close.reply_code, text = %close.reply_text, "client closed connection");
                // close-ok goes out once the core has applied the close, so a
                // client that saw close-ok also sees its exclusive queues gone
                // and its unacked messages requeued.
                self.client_closing = true;
                for (ch, tags) in self.take_all_held() {
                    let command = Command::ReturnUnsent {
                        tags: tags.into_iter().map(DeliveryTag).collect(),
                        then: AfterReturn::CloseChannel,
                    };
                    self.submit(ch, Pending::Discard, command).await?;
                }
                let command = Command::CloseConnection { conn: self.id };
                self.submit(0, Pending::ConnectionClose, command).await?;
                Ok(())
            }
            // A crossing close-ok for a close we never sent, or blocked/unblocked
            // echoes: nothing to do.
            connection::AMQPMethod::CloseOk(_)
            | connection::AMQPMethod::Blocked(_)
            | connection::AMQPMethod::Unblocked(_) => Ok(()),
            connection::AMQPMethod::UpdateSecret(_) => {
                self.send_method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::UpdateSecretOk(connection::UpdateSecretOk {})),
                );
                Ok(())
            }
            other => Err(AmqpError::connection_for(
                reply_code::COMMAND_INVALID,
                "COMMAND_INVALID - connection method not allowed after the handshake",
                (10, AMQPClass::Connection(other).get_amqp_method_id()),
            )),
        }
    }

    async fn handle_channel_frame(&mut self, ch: u16, frame: ChannelFrame) -> Result<(), AmqpError> {
        if ch > self.channel_max {
            return Err(AmqpError::connection(
                reply_code::NOT_ALLOWED,
                format!(
                    "NOT_ALLOWED - channel {ch} is above the negotiated channel_max ({})",
                    self.channel_max
                ),
            ));
        }
        let state = self.slot(ch).state;
        match state {
            ChannelState::Closed => match frame {
                ChannelFrame::Method(AMQPClass::Channel(channel::AMQPMethod::Open(_))) => {
                    self.slot(ch).reopen();
                    self.channels_opened += 1;
                    crate::counters::bump(&self.frontend.counters.channels_opened, 1);
                    self.send_method(ch, AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})));
                    Ok(())
                }
                _ => Err(AmqpError::channel_error(format!(
                    "expected 'channel.open' on channel {ch}"
                ))),
            },
            ChannelState::ClosedByServer => {
                match frame {
                    ChannelFrame::Method(AMQPClass::Channel(channel::AMQPMethod::CloseOk(_))) => {
                        self.slot(ch).state = ChannelState::Closed;
                    }
                    ChannelFrame::Method(AMQPClass::Channel(channel::AMQPMethod::Close(_))) => {
                        self.send_method(
                            ch,
                            AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                        );
                        self.slot(ch).state = ChannelState::Closed;
                    }
                    // AMQP 0-9-1 §2.2.3: after sending close, discard everything but close-ok.
                    _ => {}
                }
                Ok(())
            }
            ChannelState::ClosingByClient => Ok(()),
            ChannelState::Open => {
                let result = match frame {
                    ChannelFrame::Method(method) => {
                        if self.slot(ch).content.is_some() {
                            return Err(AmqpError::unexpected_frame(format!(
                                "method frame on channel {ch} while content was expected"
                            )));
                        }
                        if self.slot(ch).committing && !matches!(method, AMQPClass::Channel(_)) {
                            return Err(AmqpError::channel_error(
                                "unexpected command while processing 'tx.commit'",
                            ));
                        }
                        self.handle_method(ch, method).await
                    }
                    ChannelFrame::Header(header) => self.handle_content_header(ch, header).await,
                    ChannelFrame::Body(body) => self.handle_content_body(ch, body).await,
                };
                match result {
                    Err(AmqpError::Channel {
                        channel,
                        code,
                        text,
                        class_id,
                        method_id,
                    }) => {
                        self.close_channel_by_server(channel, code, &text, class_id, method_id)
                            .await
                    }
                    other => other,
                }
            }
        }
    }

    /// `n` bytes were read from the socket.
    fn read_counted(&mut self, n: usize) {
        self.last_read = Instant::now();
        self.stats.bump(connection_counter::RECV_OCT, n as u64);
        self.stats.bump(connection_counter::RECV_CNT, 1);
    }

    /// Tells the registry how many channels are open, when that changed,
    /// and the node's counters how many were opened and closed since the
    /// last call and how many publish.
    fn list_channels(&mut self) {
        let (open, publishing) = self
            .channels
            .values()
            .filter(|slot| matches!(slot.state, ChannelState::Open | ChannelState::ClosingByClient))
            .fold((0u64, 0u64), |(open, publishing), slot| {
                (open + 1, publishing + u64::from(slot.published))
            });
        let listed = u32::try_from(open).unwrap_or(u32::MAX);
        if listed != self.listed_channels {
            self.listed_channels = listed;
            self.frontend.registry.set_channels(self.id, listed);
        }
        // Every channel opened here is open now or closed: the closed
        // count never goes back.
        let closed = self.channels_opened.saturating_sub(open);
        let counters = &self.frontend.counters;
        if closed > self.listed_closed {
            crate::counters::bump(&counters.channels_closed, closed - self.listed_closed);
            self.listed_closed = closed;
        }
        if publishing > self.listed_publishers {
            crate::counters::bump(&counters.publishers, publishing - self.listed_publishers);
        } else if publishing < self.listed_publishers {
            crate::counters::drop_by(&counters.publishers, self.listed_publishers - publishing);
        }
        self.listed_publishers = publishing;
    }

    /// The connection is gone: its channels count as closed and its
    /// publishers no longer publish.
    fn forget_channels(&mut self) {
        let counters = &self.frontend.counters;
        crate::counters::bump(&counters.channels_closed, self.channels_opened - self.listed_closed);
        self.listed_closed = self.channels_opened;
        crate::counters::drop_by(&counters.publishers, self.listed_publishers);
        self.listed_publishers = 0;
        crate::counters::bump(&counters.connections_closed, 1);
    }

    fn slot(&mut self, ch: u16) -> &mut ChannelSlot {
        self.channels.entry(ch).or_default()
    }
}

enum ChannelFrame {
    Method(AMQPClass),
    Header(Box<warren_wire::AMQPContentHeader>),
    Body(Vec<u8>),
}

/// Whether `user` may log in from `peer`: users listed in `loopback_users`
/// (RabbitMQ's default: `guest`) only from a loopback address, including an
/// IPv4 loopback address mapped into IPv6.
/// 406 for what would take a transaction past [`TX_MAX_BYTES`].
/// The command for a cancel, recover or channel close (`then`) whose
/// channel holds `unsent` deliveries never sent to the client: they go
/// back to their queues in the same request ([`Command::ReturnUnsent`]).
fn returning_unsent(unsent: Vec<u64>, then: AfterReturn) -> Command {
    if !unsent.is_empty() {
        return Command::ReturnUnsent {
            tags: unsent.into_iter().map(DeliveryTag).collect(),
            then,
        };
    }
    match then {
        AfterReturn::Cancel { consumer_tag } => Command::Cancel { consumer_tag },
        AfterReturn::Recover => Command::Recover { requeue: true },
        AfterReturn::CloseChannel => Command::CloseChannel,
        AfterReturn::Nothing => Command::ReturnUnsent {
            tags: Vec::new(),
            then: AfterReturn::Nothing,
        },
    }
}

fn transaction_too_large(ch: u16, ids: (u16, u16)) -> AmqpError {
    AmqpError::channel(
        ch,
        reply_code::PRECONDITION_FAILED,
        format!(
            "PRECONDITION_FAILED - a transaction holds at most {TX_MAX_BYTES} bytes (message bodies, properties and settlements); commit before adding more"
        ),
        ids,
    )
}

fn expected(what: &str) -> AmqpError {
    AmqpError::connection(
        reply_code::COMMAND_INVALID,
        format!("COMMAND_INVALID - expected {what}"),
    )
}

/// 404 for an empty queue name on a channel that declared no queue yet.
fn no_declared_queue(ch: u16, ids: (u16, u16)) -> AmqpError {
    AmqpError::channel(
        ch,
        reply_code::NOT_FOUND,
        "NOT_FOUND - no previously declared queue",
        ids,
    )
}

fn not_from_client(method: AMQPClass) -> AmqpError {
    AmqpError::connection_for(
        reply_code::COMMAND_INVALID,
        "COMMAND_INVALID - a server-to-client method sent by the client",
        (method.get_amqp_class_id(), method.get_amqp_method_id()),
    )
}

fn wire_error(error: WireError) -> AmqpError {
    AmqpError::connection(error.reply_code(), error.to_string())
}
