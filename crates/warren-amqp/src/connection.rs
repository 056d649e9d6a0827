//! One AMQP connection: the handshake, then a loop that reads frames from
//! the socket, turns methods into core commands, and writes what the core's
//! effects say (replies, deliveries, cancels) back to the client.
//!
//! The task owns its socket and its channels; it shares nothing but the
//! proposer (to send commands) and the registry (to receive effects).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};
use warren_core::access::{Perm, ResourceKind};
use warren_core::staged::StagedPublish;
use warren_core::tx::{Transaction, TxPublish, TxSettle, TxSettleKind};
use warren_core::{
    reply_code, AfterReturn, ChannelId, Command, ConnectionId, ConsumerTag, CoreError, DeliveryTag, Effect,
    ExchangeKind, ExchangeName, Message, Outcome, QueueName, Request, UserName, VHost,
};
use warren_wire::protocol::{basic, channel, confirm, connection, exchange, queue, tx, AMQPClass};
use warren_wire::types::{AMQPValue, FieldTable, LongString};
use warren_wire::{AMQPFrame, WireError};

use crate::access::{AccessCache, Subject};
use crate::channel::{ChannelSlot, ChannelState, HeldBytes, PartialContent, Pending, TxBuffer};
use crate::convert::{long, properties_from_wire, properties_to_wire, short};
use crate::counters::connection_counter;
use crate::credit::HeldDelivery;
use crate::error::AmqpError;
use crate::names::{generated_consumer_tag, generated_queue_name};
use crate::password::verify_login;
use crate::registry::EffectBatch;
use crate::shortcuts::{expand_binding_key, expand_queue_name, NoDeclaredQueue};
use crate::transport::{Reader, Transport, Writer};
use crate::Frontend;

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
        channels: HashMap::new(),
        last_read: Instant::now(),
        registered: false,
        client_closing: false,
        closed: false,
        confirms_due: Vec::new(),
        qos_prefetch_size: 0,
        access: AccessCache::default(),
        unsent_due: Vec::new(),
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
    channels: HashMap<u16, ChannelSlot>,
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

    // ----- handshake -------------------------------------------------------

    async fn handshake(&mut self) -> Result<(), AmqpError> {
        loop {
            match warren_wire::check_protocol_header(&self.inbuf) {
                Ok(Some(())) => break,
                Ok(None) => self.read_more().await?,
                Err(_) => {
                    // AMQP 0-9-1 §4.2.2: answer a bad header with ours, then close.
                    self.writer.write_all(&warren_wire::PROTOCOL_HEADER).await?;
                    self.writer.flush().await?;
                    return Err(AmqpError::Io(std::io::ErrorKind::InvalidData.into()));
                }
            }
        }
        let _ = self.inbuf.split_to(warren_wire::PROTOCOL_HEADER.len());

        self.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::Start(self.start_method())),
        );
        self.flush().await?;

        let start_ok = match self.read_handshake_method().await? {
            connection::AMQPMethod::StartOk(m) => m,
            _ => return Err(expected("connection.start-ok")),
        };
        self.authenticate(&start_ok)?;
        self.client = client_info(&start_ok.client_properties, std::mem::take(&mut self.client));
        self.cancel_notify = client_capability(&start_ok.client_properties, "consumer_cancel_notify");
        self.blocked_notify = client_capability(&start_ok.client_properties, "connection.blocked");

        let config = &self.frontend.config;
        let tune = connection::Tune {
            channel_max: config.channel_max,
            frame_max: config.frame_max,
            heartbeat: u16::try_from(config.heartbeat.as_secs()).unwrap_or(u16::MAX),
        };
        self.send_method(0, AMQPClass::Connection(connection::AMQPMethod::Tune(tune)));
        self.flush().await?;

        let tune_ok = match self.read_handshake_method().await? {
            connection::AMQPMethod::TuneOk(m) => m,
            _ => return Err(expected("connection.tune-ok")),
        };
        self.negotiate(&tune_ok)?;

        let open = match self.read_handshake_method().await? {
            connection::AMQPMethod::Open(m) => m,
            _ => return Err(expected("connection.open")),
        };
        let vhost = VHost::new(open.virtual_host.as_str());
        if !self.frontend.node.read(|broker| broker.has_vhost(&vhost)) {
            return Err(AmqpError::connection_for(
                reply_code::NOT_ALLOWED,
                format!("NOT_ALLOWED - vhost {vhost} not found"),
                (10, 40),
            ));
        }
        if !self
            .frontend
            .node
            .read(|broker| broker.access().may_open(&self.user, &vhost))
        {
            let refused = warren_core::access::vhost_refused(&self.user, &vhost);
            return Err(AmqpError::connection_for(
                refused.reply_code(),
                refused.to_string(),
                (10, 40),
            ));
        }
        self.vhost = vhost;
        self.send_method(
            0,
            AMQPClass::Connection(connection::AMQPMethod::OpenOk(connection::OpenOk {})),
        );
        self.flush().await?;
        info!(conn = ?self.id, peer = %self.peer, user = %self.user, vhost = %self.vhost, "connection opened");
        Ok(())
    }

    fn start_method(&self) -> connection::Start {
        let mut capabilities = FieldTable::default();
        for name in [
            "publisher_confirms",
            "exchange_exchange_bindings",
            "basic.nack",
            "consumer_cancel_notify",
            "connection.blocked",
            "authentication_failure_close",
            "per_consumer_qos",
        ] {
            capabilities.insert(short(name), AMQPValue::Boolean(true));
        }
        let mut props = FieldTable::default();
        props.insert(short("product"), AMQPValue::LongString(long("Warren")));
        props.insert(short("version"), AMQPValue::LongString(long(env!("CARGO_PKG_VERSION"))));
        props.insert(short("platform"), AMQPValue::LongString(long("Rust")));
        props.insert(
            short("information"),
            AMQPValue::LongString(long("A Raft-replicated AMQP 0-9-1 broker")),
        );
        props.insert(short("capabilities"), AMQPValue::FieldTable(capabilities));
        connection::Start {
            version_major: 0,
            version_minor: 9,
            server_properties: props,
            mechanisms: LongString::from("PLAIN AMQPLAIN"),
            locales: LongString::from("en_US"),
        }
    }

    /// Checks the credentials of `start-ok`.
    ///
    /// # Errors
    /// 403 ACCESS_REFUSED for an unknown user, a wrong password, an unknown
    /// mechanism, or a loopback-only user connecting from elsewhere.
    fn authenticate(&mut self, start_ok: &connection::StartOk) -> Result<(), AmqpError> {
        let mechanism = start_ok.mechanism.as_str();
        let refused = |why: &str| {
            AmqpError::connection_for(reply_code::ACCESS_REFUSED, format!("ACCESS_REFUSED - {why}"), (10, 11))
        };
        let credentials = warren_wire::parse_sasl_response(mechanism, start_ok.response.as_bytes())
            .map_err(|e| refused(&e.to_string()))?;
        let name = UserName::new(credentials.username.clone());
        let stored = self
            .frontend
            .node
            .read(|broker| broker.user(&name).map(|u| u.password_hash.clone()));
        let ok = verify_login(stored.as_deref(), &credentials.password);
        if !ok {
            return Err(refused(&format!(
                "Login was refused using authentication mechanism {mechanism}. For details see the broker logfile."
            )));
        }
        if !may_connect_from(
            &self.frontend.config.loopback_users,
            &credentials.username,
            self.peer.ip(),
        ) {
            return Err(refused(&format!(
                "user '{}' can only connect via localhost",
                credentials.username
            )));
        }
        self.user = name;
        Ok(())
    }

    /// Applies the client's `tune-ok`: the smaller of both sides, 0 meaning
    /// "no limit" for frame_max and channel_max and "off" for heartbeats.
    fn negotiate(&mut self, tune_ok: &connection::TuneOk) -> Result<(), AmqpError> {
        let config = &self.frontend.config;
        // As RabbitMQ: a client may lower the server's limits, never raise them.
        if config.frame_max != 0 && tune_ok.frame_max > config.frame_max {
            return Err(AmqpError::connection_for(
                reply_code::NOT_ALLOWED,
                format!(
                    "NOT_ALLOWED - frame_max={} > {} max size",
                    tune_ok.frame_max, config.frame_max
                ),
                (10, 31),
            ));
        }
        if config.channel_max != 0 && tune_ok.channel_max > config.channel_max {
            return Err(AmqpError::connection_for(
                reply_code::NOT_ALLOWED,
                format!(
                    "NOT_ALLOWED - channel_max={} > {} max size",
                    tune_ok.channel_max, config.channel_max
                ),
                (10, 31),
            ));
        }
        self.frame_max = negotiate_limit(config.frame_max, tune_ok.frame_max);
        if self.frame_max < warren_wire::FRAME_MIN_SIZE {
            return Err(AmqpError::connection_for(
                reply_code::NOT_ALLOWED,
                format!(
                    "NOT_ALLOWED - frame_max={} < {} min size",
                    self.frame_max,
                    warren_wire::FRAME_MIN_SIZE
                ),
                (10, 31),
            ));
        }
        self.channel_max = negotiate_limit(u32::from(config.channel_max), u32::from(tune_ok.channel_max))
            .try_into()
            .unwrap_or(config.channel_max);
        self.heartbeat = Duration::from_secs(u64::from(tune_ok.heartbeat));
        Ok(())
    }

    async fn read_handshake_method(&mut self) -> Result<connection::AMQPMethod, AmqpError> {
        loop {
            match self.read_frame().await? {
                AMQPFrame::Heartbeat => continue,
                AMQPFrame::Method(0, AMQPClass::Connection(m)) => return Ok(m),
                _ => return Err(expected("a connection method on channel 0")),
            }
        }
    }

    async fn read_frame(&mut self) -> Result<AMQPFrame, AmqpError> {
        loop {
            if let Some(frame) = self.decode()? {
                return Ok(frame);
            }
            self.read_more().await?;
        }
    }

    async fn read_more(&mut self) -> Result<(), AmqpError> {
        self.inbuf.reserve(64 * 1024);
        let n = self.reader.read_buf(&mut self.inbuf).await?;
        if n == 0 {
            return Err(AmqpError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        self.read_counted(n);
        Ok(())
    }

    fn decode(&mut self) -> Result<Option<AMQPFrame>, AmqpError> {
        let prefetch_size = warren_wire::peek_qos_prefetch_size(&self.inbuf);
        let frame = warren_wire::decode_frame(&mut self.inbuf, self.frame_max).map_err(wire_error)?;
        if frame.is_some() {
            self.qos_prefetch_size = prefetch_size.unwrap_or(0);
        }
        Ok(frame)
    }

    // ----- main loop -------------------------------------------------------

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

    async fn handle_frame(&mut self, frame: AMQPFrame) -> Result<(), AmqpError> {
        match frame {
            AMQPFrame::Heartbeat => Ok(()),
            AMQPFrame::InvalidHeartbeat(ch) => Err(AmqpError::connection(
                reply_code::FRAME_ERROR,
                format!("FRAME_ERROR - heartbeat frame on channel {ch}, expected channel 0"),
            )),
            AMQPFrame::ProtocolHeader(_) => Err(AmqpError::unexpected_frame("protocol header after the handshake")),
            AMQPFrame::Method(0, AMQPClass::Connection(m)) => self.handle_connection_method(m).await,
            AMQPFrame::Method(0, other) => Err(AmqpError::connection_for(
                reply_code::COMMAND_INVALID,
                "COMMAND_INVALID - only connection methods may be sent on channel 0",
                (other.get_amqp_class_id(), other.get_amqp_method_id()),
            )),
            AMQPFrame::Method(ch, AMQPClass::Connection(_)) => Err(AmqpError::connection(
                reply_code::COMMAND_INVALID,
                format!("COMMAND_INVALID - connection method on channel {ch}"),
            )),
            AMQPFrame::Method(ch, method) => {
                self.handle_channel_frame(ch, ChannelFrame::Method(method)).await?;
                Ok(())
            }
            AMQPFrame::Header(ch, header) => {
                self.handle_channel_frame(ch, ChannelFrame::Header(header)).await?;
                Ok(())
            }
            AMQPFrame::Body(ch, body) => {
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

    // ----- channel methods -------------------------------------------------

    async fn handle_method(&mut self, ch: u16, method: AMQPClass) -> Result<(), AmqpError> {
        let ids = (method.get_amqp_class_id(), method.get_amqp_method_id());
        let vhost = self.vhost.clone();
        match method {
            AMQPClass::Channel(m) => self.handle_channel_method(ch, m).await,
            AMQPClass::Exchange(m) => self.handle_exchange_method(ch, vhost, m).await,
            AMQPClass::Queue(m) => self.handle_queue_method(ch, vhost, m).await,
            AMQPClass::Basic(m) => self.handle_basic_method(ch, vhost, m).await,
            AMQPClass::Confirm(confirm::AMQPMethod::Select(select)) => {
                if self.slot(ch).tx.is_some() {
                    return Err(AmqpError::channel(
                        ch,
                        reply_code::PRECONDITION_FAILED,
                        "PRECONDITION_FAILED - cannot switch from tx to confirm mode",
                        ids,
                    ));
                }
                self.slot(ch).confirm = true;
                if !select.nowait {
                    self.send_method(
                        ch,
                        AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
                    );
                }
                Ok(())
            }
            AMQPClass::Tx(m) => self.handle_tx_method(ch, vhost, m, ids).await,
            AMQPClass::Access(_) => {
                let ok = warren_wire::protocol::access::RequestOk {};
                self.send_method(
                    ch,
                    AMQPClass::Access(warren_wire::protocol::access::AMQPMethod::RequestOk(ok)),
                );
                Ok(())
            }
            _ => Err(AmqpError::connection_for(
                reply_code::COMMAND_INVALID,
                "COMMAND_INVALID - method not valid from a client",
                ids,
            )),
        }
    }

    async fn handle_channel_method(&mut self, ch: u16, method: channel::AMQPMethod) -> Result<(), AmqpError> {
        match method {
            channel::AMQPMethod::Open(_) => {
                Err(AmqpError::channel_error(format!("second 'channel.open' seen on {ch}")))
            }
            channel::AMQPMethod::Flow(flow) if flow.active => {
                self.send_method(
                    ch,
                    AMQPClass::Channel(channel::AMQPMethod::FlowOk(channel::FlowOk { active: true })),
                );
                Ok(())
            }
            channel::AMQPMethod::Flow(_) => Err(AmqpError::connection_for(
                reply_code::NOT_IMPLEMENTED,
                "NOT_IMPLEMENTED - active=false",
                (20, 20),
            )),
            channel::AMQPMethod::FlowOk(_) | channel::AMQPMethod::CloseOk(_) => Ok(()),
            channel::AMQPMethod::Close(_) => {
                let slot = self.slot(ch);
                slot.state = ChannelState::ClosingByClient;
                slot.draining = true;
                slot.content = None;
                slot.drop_transaction();
                let unsent = slot.credit.take_all_held();
                let command = returning_unsent(unsent, AfterReturn::CloseChannel);
                self.submit(ch, Pending::ChannelClose, command).await
            }
            channel::AMQPMethod::OpenOk(_) => Err(AmqpError::connection_for(
                reply_code::COMMAND_INVALID,
                "COMMAND_INVALID - channel.open-ok from a client",
                (20, 11),
            )),
        }
    }

    async fn handle_exchange_method(
        &mut self,
        ch: u16,
        vhost: VHost,
        method: exchange::AMQPMethod,
    ) -> Result<(), AmqpError> {
        match method {
            exchange::AMQPMethod::Declare(m) => {
                let kind = match ExchangeKind::parse(m.kind.as_str()) {
                    Some(kind) => kind,
                    // A passive declare does not look at the type.
                    None if m.passive => ExchangeKind::Direct,
                    None => {
                        return Err(AmqpError::connection_for(
                            reply_code::COMMAND_INVALID,
                            format!("COMMAND_INVALID - unknown exchange type '{}'", m.kind.as_str()),
                            (40, 10),
                        ))
                    }
                };
                let name = m.exchange.as_str();
                if name.is_empty() {
                    // The default exchange is refused by the core, first.
                } else if m.passive {
                    self.authorize_any(ch, (40, 10), ResourceKind::Exchange, name)?;
                } else {
                    self.authorize(ch, (40, 10), &[(ResourceKind::Exchange, name, Perm::Configure)])?;
                    let more = warren_core::access::argument_checks(ResourceKind::Exchange, name, &m.arguments);
                    self.authorize_owned(ch, (40, 10), &more)?;
                }
                let command = Command::DeclareExchange {
                    vhost,
                    name: ExchangeName::new(m.exchange.as_str()),
                    kind,
                    passive: m.passive,
                    durable: m.durable,
                    auto_delete: m.auto_delete,
                    internal: m.internal,
                    arguments: m.arguments,
                };
                self.submit(ch, Pending::ExchangeDeclare { nowait: m.nowait }, command)
                    .await
            }
            exchange::AMQPMethod::Delete(m) => {
                let name = m.exchange.as_str();
                // The default and `amq.*` exchanges are refused by the core,
                // first, with their own texts.
                if !name.is_empty() && !name.starts_with("amq.") {
                    self.authorize(ch, (40, 20), &[(ResourceKind::Exchange, name, Perm::Configure)])?;
                }
                let command = Command::DeleteExchange {
                    vhost,
                    name: ExchangeName::new(m.exchange.as_str()),
                    if_unused: m.if_unused,
                };
                self.submit(ch, Pending::ExchangeDelete { nowait: m.nowait }, command)
                    .await
            }
            exchange::AMQPMethod::Bind(m) => {
                self.authorize(
                    ch,
                    (40, 30),
                    &[
                        (ResourceKind::Exchange, m.destination.as_str(), Perm::Write),
                        (ResourceKind::Exchange, m.source.as_str(), Perm::Read),
                    ],
                )?;
                let command = Command::BindExchange {
                    vhost,
                    destination: ExchangeName::new(m.destination.as_str()),
                    source: ExchangeName::new(m.source.as_str()),
                    routing_key: m.routing_key.as_str().to_owned(),
                    arguments: m.arguments,
                };
                self.submit(ch, Pending::ExchangeBind { nowait: m.nowait }, command)
                    .await
            }
            exchange::AMQPMethod::Unbind(m) => {
                self.authorize(
                    ch,
                    (40, 40),
                    &[
                        (ResourceKind::Exchange, m.destination.as_str(), Perm::Write),
                        (ResourceKind::Exchange, m.source.as_str(), Perm::Read),
                    ],
                )?;
                let command = Command::UnbindExchange {
                    vhost,
                    destination: ExchangeName::new(m.destination.as_str()),
                    source: ExchangeName::new(m.source.as_str()),
                    routing_key: m.routing_key.as_str().to_owned(),
                    arguments: m.arguments,
                };
                self.submit(ch, Pending::ExchangeUnbind { nowait: m.nowait }, command)
                    .await
            }
            other => Err(not_from_client(AMQPClass::Exchange(other))),
        }
    }

    async fn handle_queue_method(&mut self, ch: u16, vhost: VHost, method: queue::AMQPMethod) -> Result<(), AmqpError> {
        match method {
            queue::AMQPMethod::Declare(m) => {
                let name = if m.queue.as_str().is_empty() {
                    QueueName::new(generated_queue_name())
                } else {
                    QueueName::new(m.queue.as_str())
                };
                if m.passive {
                    self.authorize_any(ch, (50, 10), ResourceKind::Queue, name.as_str())?;
                } else {
                    self.authorize(ch, (50, 10), &[(ResourceKind::Queue, name.as_str(), Perm::Configure)])?;
                    let more = warren_core::access::argument_checks(ResourceKind::Queue, name.as_str(), &m.arguments);
                    self.authorize_owned(ch, (50, 10), &more)?;
                }
                self.slot(ch).last_queue = Some(name.clone());
                let command = Command::DeclareQueue {
                    vhost,
                    name,
                    passive: m.passive,
                    durable: m.durable,
                    exclusive: m.exclusive,
                    auto_delete: m.auto_delete,
                    arguments: m.arguments,
                };
                self.submit(ch, Pending::QueueDeclare { nowait: m.nowait }, command)
                    .await
            }
            queue::AMQPMethod::Bind(m) => {
                let (queue, routing_key) =
                    self.resolve_binding(ch, m.queue.as_str(), m.routing_key.as_str(), (50, 20))?;
                self.authorize(
                    ch,
                    (50, 20),
                    &[
                        (ResourceKind::Queue, queue.as_str(), Perm::Write),
                        (ResourceKind::Exchange, m.exchange.as_str(), Perm::Read),
                    ],
                )?;
                let command = Command::BindQueue {
                    vhost,
                    queue,
                    exchange: ExchangeName::new(m.exchange.as_str()),
                    routing_key,
                    arguments: m.arguments,
                };
                self.submit(ch, Pending::QueueBind { nowait: m.nowait }, command).await
            }
            queue::AMQPMethod::Unbind(m) => {
                let (queue, routing_key) =
                    self.resolve_binding(ch, m.queue.as_str(), m.routing_key.as_str(), (50, 50))?;
                self.authorize(
                    ch,
                    (50, 50),
                    &[
                        (ResourceKind::Queue, queue.as_str(), Perm::Write),
                        (ResourceKind::Exchange, m.exchange.as_str(), Perm::Read),
                    ],
                )?;
                let command = Command::UnbindQueue {
                    vhost,
                    queue,
                    exchange: ExchangeName::new(m.exchange.as_str()),
                    routing_key,
                    arguments: m.arguments,
                };
                self.submit(ch, Pending::QueueUnbind, command).await
            }
            queue::AMQPMethod::Purge(m) => {
                let queue = self.resolve_queue(ch, m.queue.as_str(), (50, 30))?;
                self.authorize(ch, (50, 30), &[(ResourceKind::Queue, queue.as_str(), Perm::Read)])?;
                self.submit(
                    ch,
                    Pending::QueuePurge { nowait: m.nowait },
                    Command::PurgeQueue { vhost, queue },
                )
                .await
            }
            queue::AMQPMethod::Delete(m) => {
                let queue = self.resolve_queue(ch, m.queue.as_str(), (50, 40))?;
                self.authorize(ch, (50, 40), &[(ResourceKind::Queue, queue.as_str(), Perm::Configure)])?;
                let command = Command::DeleteQueue {
                    vhost,
                    queue,
                    if_unused: m.if_unused,
                    if_empty: m.if_empty,
                };
                self.submit(ch, Pending::QueueDelete { nowait: m.nowait }, command)
                    .await
            }
            other => Err(not_from_client(AMQPClass::Queue(other))),
        }
    }

    async fn handle_basic_method(&mut self, ch: u16, vhost: VHost, method: basic::AMQPMethod) -> Result<(), AmqpError> {
        match method {
            basic::AMQPMethod::Publish(m) => {
                self.publishes = true;
                if m.immediate {
                    return Err(AmqpError::connection_for(
                        reply_code::NOT_IMPLEMENTED,
                        "NOT_IMPLEMENTED - immediate=true",
                        (60, 40),
                    ));
                }
                self.slot(ch).content = Some(PartialContent {
                    exchange: m.exchange.as_str().to_owned(),
                    routing_key: m.routing_key.as_str().to_owned(),
                    mandatory: m.mandatory,
                    header: None,
                    body: BytesMut::new(),
                    held: HeldBytes::new(self.frontend.receiving_bytes.clone()),
                });
                Ok(())
            }
            basic::AMQPMethod::Qos(m) => {
                if self.qos_prefetch_size != 0 {
                    // RabbitMQ 3.10: `rabbit_channel`, basic.qos.
                    return Err(AmqpError::connection_for(
                        reply_code::NOT_IMPLEMENTED,
                        format!("NOT_IMPLEMENTED - prefetch_size!=0 ({})", self.qos_prefetch_size),
                        (60, 10),
                    ));
                }
                self.slot(ch).credit.qos(m.prefetch_count, m.global);
                let command = Command::Qos {
                    prefetch_count: m.prefetch_count,
                    global: m.global,
                };
                self.submit(ch, Pending::Qos, command).await
            }
            basic::AMQPMethod::Consume(m) => {
                let queue = self.resolve_queue(ch, m.queue.as_str(), (60, 20))?;
                self.authorize(ch, (60, 20), &[(ResourceKind::Queue, queue.as_str(), Perm::Read)])?;
                let tag = if m.consumer_tag.as_str().is_empty() {
                    generated_consumer_tag()
                } else {
                    m.consumer_tag.as_str().to_owned()
                };
                self.slot(ch).credit.consume(&tag, m.no_ack);
                let command = Command::Consume {
                    vhost,
                    queue,
                    consumer_tag: ConsumerTag::new(tag),
                    no_ack: m.no_ack,
                    exclusive: m.exclusive,
                    arguments: m.arguments,
                };
                let pending = Pending::Consume {
                    nowait: m.nowait,
                    no_ack: m.no_ack,
                };
                self.submit(ch, pending, command).await
            }
            basic::AMQPMethod::Cancel(m) => {
                // Its held deliveries go back with the cancel; any that
                // arrive before the cancel applies go back after it.
                let unsent = self.slot(ch).credit.take_held_of(m.consumer_tag.as_str());
                let then = AfterReturn::Cancel {
                    consumer_tag: ConsumerTag::new(m.consumer_tag.as_str()),
                };
                let command = returning_unsent(unsent, then);
                self.submit(ch, Pending::Cancel { nowait: m.nowait }, command).await
            }
            basic::AMQPMethod::Get(m) => {
                let queue = self.resolve_queue(ch, m.queue.as_str(), (60, 70))?;
                self.authorize(ch, (60, 70), &[(ResourceKind::Queue, queue.as_str(), Perm::Read)])?;
                self.submit(
                    ch,
                    Pending::Get { no_ack: m.no_ack },
                    Command::Get {
                        vhost,
                        queue,
                        no_ack: m.no_ack,
                    },
                )
                .await
            }
            basic::AMQPMethod::Ack(m) if self.slot(ch).tx.is_some() => {
                self.settle_in_tx(ch, m.delivery_tag, m.multiple, TxSettleKind::Ack, 80)
            }
            basic::AMQPMethod::Nack(m) if self.slot(ch).tx.is_some() => {
                let how = if m.requeue {
                    TxSettleKind::Requeue
                } else {
                    TxSettleKind::Reject
                };
                self.settle_in_tx(ch, m.delivery_tag, m.multiple, how, 120)
            }
            basic::AMQPMethod::Reject(m) if self.slot(ch).tx.is_some() => {
                let how = if m.requeue {
                    TxSettleKind::Requeue
                } else {
                    TxSettleKind::Reject
                };
                self.settle_in_tx(ch, m.delivery_tag, false, how, 90)
            }
            basic::AMQPMethod::Ack(m) => self.settle(ch, m.delivery_tag, m.multiple, TxSettleKind::Ack, 80).await,
            basic::AMQPMethod::Nack(m) => {
                let how = if m.requeue {
                    TxSettleKind::Requeue
                } else {
                    TxSettleKind::Reject
                };
                self.settle(ch, m.delivery_tag, m.multiple, how, 120).await
            }
            basic::AMQPMethod::Reject(m) => {
                let how = if m.requeue {
                    TxSettleKind::Requeue
                } else {
                    TxSettleKind::Reject
                };
                self.settle(ch, m.delivery_tag, false, how, 90).await
            }
            basic::AMQPMethod::Recover(basic::Recover { requeue: false })
            | basic::AMQPMethod::RecoverAsync(basic::RecoverAsync { requeue: false }) => {
                Err(AmqpError::connection_for(
                    reply_code::NOT_IMPLEMENTED,
                    "NOT_IMPLEMENTED - requeue=false",
                    (60, 110),
                ))
            }
            basic::AMQPMethod::Recover(_) => {
                let unsent = self.slot(ch).credit.take_all_held();
                let command = returning_unsent(unsent, AfterReturn::Recover);
                self.submit(ch, Pending::Recover { send_ok: true }, command).await
            }
            basic::AMQPMethod::RecoverAsync(_) => {
                let unsent = self.slot(ch).credit.take_all_held();
                let command = returning_unsent(unsent, AfterReturn::Recover);
                self.submit(ch, Pending::Recover { send_ok: false }, command).await
            }
            other => Err(not_from_client(AMQPClass::Basic(other))),
        }
    }

    /// `tx.select`, `tx.commit`, `tx.rollback` (ADR 0020).
    async fn handle_tx_method(
        &mut self,
        ch: u16,
        vhost: VHost,
        method: tx::AMQPMethod,
        ids: (u16, u16),
    ) -> Result<(), AmqpError> {
        let receiving = self.frontend.receiving_bytes.clone();
        let slot = self.slot(ch);
        let not_transactional = || {
            AmqpError::channel(
                ch,
                reply_code::PRECONDITION_FAILED,
                "PRECONDITION_FAILED - channel is not transactional",
                ids,
            )
        };
        match method {
            tx::AMQPMethod::Select(_) => {
                if slot.confirm {
                    return Err(AmqpError::channel(
                        ch,
                        reply_code::PRECONDITION_FAILED,
                        "PRECONDITION_FAILED - cannot switch from confirm to tx mode",
                        ids,
                    ));
                }
                slot.tx.get_or_insert_with(|| TxBuffer::new(receiving));
                self.send_method(ch, AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})));
                Ok(())
            }
            tx::AMQPMethod::Commit(_) => {
                let Some(buffer) = slot.tx.replace(TxBuffer::new(receiving)) else {
                    return Err(not_transactional());
                };
                slot.committing_settles = buffer.settled_tags.iter().map(|(_, id)| *id).collect();
                let command = Command::Commit(Transaction {
                    vhost,
                    publishes: buffer.publishes,
                    settles: buffer.settles,
                });
                slot.committing = true;
                if slot.pending.is_empty() {
                    return self.submit(ch, Pending::TxCommit, command).await;
                }
                slot.deferred_commit = Some(command);
                Ok(())
            }
            tx::AMQPMethod::Rollback(_) => {
                let Some(buffer) = slot.tx.replace(TxBuffer::new(receiving)) else {
                    return Err(not_transactional());
                };
                slot.restore_tags(&buffer.settled_tags);
                self.send_method(ch, AMQPClass::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})));
                Ok(())
            }
            other => Err(not_from_client(AMQPClass::Tx(other))),
        }
    }

    /// A publish on a transactional channel: held until `tx.commit`.
    ///
    /// # Errors
    /// 404/403/406 as the publish would fail at commit; 406 if the
    /// transaction would pass [`TX_MAX_BYTES`].
    fn publish_in_tx(
        &mut self,
        ch: u16,
        exchange: String,
        routing_key: String,
        mandatory: bool,
        properties: warren_core::Properties,
        body: BytesMut,
    ) -> Result<(), AmqpError> {
        let wire_properties = properties_to_wire(&properties);
        let mut header = BytesMut::new();
        let header_len = match warren_wire::encode_content(0, 60, &wire_properties, &[], 0, &mut header) {
            Ok(()) => header.len() as u64,
            Err(_) => u64::from(self.frame_max),
        };
        let len = TX_ITEM_BYTES + body.len() as u64 + header_len + (exchange.len() + routing_key.len()) as u64;
        let message = Arc::new(Message {
            exchange: ExchangeName::new(exchange),
            routing_key,
            properties: Arc::new(properties),
            body: body.freeze().into(),
        });
        // What would fail the publish fails it now, as RabbitMQ does (the
        // commit checks again: the exchange may go in between).
        let origin = ChannelId {
            conn: self.id,
            channel: ch,
        };
        let vhost = &self.vhost;
        if let Err(error) = self.frontend.node.read(|b| b.check_publish(origin, vhost, &message)) {
            return Err(AmqpError::channel(ch, error.reply_code(), error.to_string(), (60, 40)));
        }
        let Some(buffer) = self.slot(ch).tx.as_mut() else {
            return Ok(());
        };
        if buffer.bytes() + len > TX_MAX_BYTES {
            return Err(transaction_too_large(ch, (60, 40)));
        }
        buffer.held.add(len);
        buffer.publishes.push(TxPublish { mandatory, message });
        Ok(())
    }

    /// An ack, nack or reject on a transactional channel: its tags are
    /// checked and taken now (as RabbitMQ's `collect_acks` does), settled
    /// at `tx.commit`.
    ///
    /// # Errors
    /// 406 `unknown delivery tag N`.
    fn settle_in_tx(
        &mut self,
        ch: u16,
        tag: u64,
        multiple: bool,
        how: TxSettleKind,
        method_id: u16,
    ) -> Result<(), AmqpError> {
        let slot = self.slot(ch);
        let Some(tags) = slot.take_covered(tag, multiple) else {
            return Err(AmqpError::channel(
                ch,
                reply_code::PRECONDITION_FAILED,
                format!("PRECONDITION_FAILED - unknown delivery tag {tag}"),
                (60, method_id),
            ));
        };
        if tags.is_empty() {
            return Ok(());
        }
        let acked = if how == TxSettleKind::Ack { tags.len() as u64 } else { 0 };
        if let Some(buffer) = slot.tx.as_mut() {
            let len = TX_ITEM_BYTES + 8 * tags.len() as u64;
            if buffer.bytes() + len > TX_MAX_BYTES {
                return Err(transaction_too_large(ch, (60, method_id)));
            }
            buffer.held.add(len);
            buffer.settled_tags.extend(&tags);
            buffer.settles.push(TxSettle {
                tags: tags.into_iter().map(|(tag, _)| DeliveryTag(tag)).collect(),
                how,
            });
        }
        crate::counters::bump(&self.frontend.counters.acknowledged, acked);
        self.stats.bump(connection_counter::ACK, acked);
        Ok(())
    }

    /// Checks the connection's user may do each of `checks` in its vhost.
    ///
    /// # Errors
    /// 403 ACCESS_REFUSED on the channel, for the first check refused.
    fn authorize(&mut self, ch: u16, ids: (u16, u16), checks: &[(ResourceKind, &str, Perm)]) -> Result<(), AmqpError> {
        let subject = Subject {
            node: &self.frontend.node,
            user: &self.user,
            vhost: &self.vhost,
        };
        for &(kind, name, perm) in checks {
            self.access
                .check(&subject, kind, name, perm)
                .map_err(|e| AmqpError::channel(ch, e.reply_code(), e.to_string(), ids))?;
        }
        Ok(())
    }

    /// [`Connection::authorize`] for checks that own their names.
    ///
    /// # Errors
    /// 403 ACCESS_REFUSED on the channel, for the first check refused.
    fn authorize_owned(
        &mut self,
        ch: u16,
        ids: (u16, u16),
        checks: &[(ResourceKind, String, Perm)],
    ) -> Result<(), AmqpError> {
        let borrowed: Vec<(ResourceKind, &str, Perm)> = checks
            .iter()
            .map(|(kind, name, perm)| (*kind, name.as_str(), *perm))
            .collect();
        self.authorize(ch, ids, &borrowed)
    }

    /// Checks the user has any permission on the resource (passive declares).
    ///
    /// # Errors
    /// 403 ACCESS_REFUSED on the channel.
    fn authorize_any(&mut self, ch: u16, ids: (u16, u16), kind: ResourceKind, name: &str) -> Result<(), AmqpError> {
        let subject = Subject {
            node: &self.frontend.node,
            user: &self.user,
            vhost: &self.vhost,
        };
        self.access
            .check_any(&subject, kind, name)
            .map_err(|e| AmqpError::channel(ch, e.reply_code(), e.to_string(), ids))
    }

    /// The queue a method names; "" means the last queue declared on the
    /// channel (see [`crate::shortcuts`]).
    fn resolve_queue(&mut self, ch: u16, name: &str, ids: (u16, u16)) -> Result<QueueName, AmqpError> {
        expand_queue_name(name, self.slot(ch).last_queue.as_ref()).map_err(|NoDeclaredQueue| no_declared_queue(ch, ids))
    }

    /// The queue and binding key of a `queue.bind`/`queue.unbind`, with
    /// both shortcuts expanded (see [`crate::shortcuts`]).
    fn resolve_binding(
        &mut self,
        ch: u16,
        queue: &str,
        routing_key: &str,
        ids: (u16, u16),
    ) -> Result<(QueueName, String), AmqpError> {
        let last = self.slot(ch).last_queue.as_ref();
        let expanded =
            expand_queue_name(queue, last).and_then(|name| Ok((name, expand_binding_key(queue, routing_key, last)?)));
        expanded.map_err(|NoDeclaredQueue| no_declared_queue(ch, ids))
    }

    // ----- content -----------------------------------------------------------

    async fn handle_content_header(
        &mut self,
        ch: u16,
        header: warren_wire::AMQPContentHeader,
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
        let capacity = usize::try_from(header.body_size.min(u64::from(frame_max))).unwrap_or(0);
        content.body.reserve(capacity);
        content.header = Some((header.properties, header.body_size));
        if header.body_size == 0 {
            return self.complete_publish(ch).await;
        }
        Ok(())
    }

    async fn handle_content_body(&mut self, ch: u16, body: Vec<u8>) -> Result<(), AmqpError> {
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
        content.body.extend_from_slice(&body);
        content.held.add(body.len() as u64);
        if received == size {
            return self.complete_publish(ch).await;
        }
        Ok(())
    }

    async fn complete_publish(&mut self, ch: u16) -> Result<(), AmqpError> {
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

    // ----- to the core and back ------------------------------------------------

    /// Sends `command` for channel `ch` to the proposer, remembering what its
    /// reply is for.
    async fn submit(&mut self, ch: u16, pending: Pending, command: Command) -> Result<(), AmqpError> {
        self.slot(ch).pending.push_back(pending);
        let origin = ChannelId {
            conn: self.id,
            channel: ch,
        };
        self.frontend
            .proposer
            .submit(Request {
                origin: Some(origin),
                command,
            })
            .await
            .map_err(|_| {
                AmqpError::connection(reply_code::INTERNAL_ERROR, "INTERNAL_ERROR - the node is shutting down")
            })
    }

    async fn handle_effects(&mut self, batch: EffectBatch) -> Result<(), AmqpError> {
        // One clock read a batch: the consumer timeout needs no finer time.
        let now = Instant::now();
        for effect in batch {
            match effect {
                Effect::Reply { channel, outcome } => self.handle_reply(channel.channel, outcome).await?,
                Effect::Deliver {
                    channel,
                    consumer_tag,
                    delivery_tag,
                    redelivered,
                    message,
                } => {
                    if !self.accepts_deliveries(channel.channel) {
                        continue;
                    }
                    let slot = self.channels.entry(channel.channel).or_default();
                    let manual = !slot.auto_ack_consumers.contains(consumer_tag.as_str());
                    let delivery = HeldDelivery {
                        consumer: slot.credit.id_of(consumer_tag.as_str()),
                        consumer_tag,
                        delivery_tag: delivery_tag.0,
                        redelivered,
                        message,
                    };
                    // A no-ack consumer has no prefetch; a manual one gets
                    // what its client-side prefetch allows (ADR 0026).
                    let now_out = if manual {
                        slot.credit.offer(delivery)
                    } else {
                        Some(delivery)
                    };
                    if let Some(delivery) = now_out {
                        self.write_delivery(channel.channel, delivery, manual, now)?;
                    }
                }
                Effect::CancelConsumer { channel, consumer_tag } => {
                    let slot = self.slot(channel.channel);
                    slot.auto_ack_consumers.remove(consumer_tag.as_str());
                    let unsent = slot.credit.cancelled(consumer_tag.as_str());
                    self.unsent_due.push((channel.channel, unsent));
                    self.release_held(channel.channel, now)?;
                    if self.cancel_notify && self.accepts_deliveries(channel.channel) {
                        let cancel = basic::Cancel {
                            consumer_tag: short(consumer_tag.as_str()),
                            nowait: true,
                        };
                        self.send_method(channel.channel, AMQPClass::Basic(basic::AMQPMethod::Cancel(cancel)));
                    }
                }
            }
        }
        self.return_unsent_due().await
    }

    /// Writes a delivery to the client; `manual`: it awaits an ack (sent
    /// at `now`, for the consumer timeout).
    fn write_delivery(&mut self, ch: u16, delivery: HeldDelivery, manual: bool, now: Instant) -> Result<(), AmqpError> {
        let counters = &self.frontend.counters;
        let slot = self.channels.entry(ch).or_default();
        if manual {
            crate::counters::bump(&counters.delivered_consume_manual_ack, 1);
            slot.record_delivery(delivery.delivery_tag, delivery.consumer, now);
        } else {
            crate::counters::bump(&counters.delivered_consume_auto_ack, 1);
        }
        let redelivered = delivery.redelivered;
        crate::counters::bump(&counters.redelivered, u64::from(redelivered));
        self.stats.bump(connection_counter::DELIVER_GET, 1);
        self.stats.bump(connection_counter::REDELIVER, u64::from(redelivered));
        let message = &delivery.message;
        let deliver = basic::Deliver {
            consumer_tag: short(delivery.consumer_tag.as_str()),
            delivery_tag: delivery.delivery_tag,
            redelivered,
            exchange: short(message.exchange.as_str()),
            routing_key: short(&message.routing_key),
        };
        self.send_method(ch, AMQPClass::Basic(basic::AMQPMethod::Deliver(deliver)));
        self.send_content(ch, message)
    }

    /// Writes the held deliveries of channel `ch` that the client's
    /// prefetch now allows.
    fn release_held(&mut self, ch: u16, now: Instant) -> Result<(), AmqpError> {
        if !self.accepts_deliveries(ch) {
            return Ok(());
        }
        let released = self.slot(ch).credit.releasable();
        for delivery in released {
            self.write_delivery(ch, delivery, true, now)?;
        }
        Ok(())
    }

    /// Sends the held deliveries of cancelled consumers back to their
    /// queues, for the channels still open.
    async fn return_unsent_due(&mut self) -> Result<(), AmqpError> {
        for (ch, tags) in std::mem::take(&mut self.unsent_due) {
            if tags.is_empty() || !self.accepts_deliveries(ch) {
                continue;
            }
            let command = Command::ReturnUnsent {
                tags: tags.into_iter().map(DeliveryTag).collect(),
                then: AfterReturn::Nothing,
            };
            self.submit(ch, Pending::Discard, command).await?;
        }
        Ok(())
    }

    /// Takes every channel's held deliveries out (the connection closes).
    fn take_all_held(&mut self) -> Vec<(u16, Vec<u64>)> {
        let mut held: Vec<(u16, Vec<u64>)> = self
            .channels
            .iter_mut()
            .filter(|(_, slot)| slot.state == ChannelState::Open && !slot.draining)
            .map(|(ch, slot)| (*ch, slot.credit.take_all_held()))
            .filter(|(_, tags)| !tags.is_empty())
            .collect();
        held.sort_unstable_by_key(|(ch, _)| *ch);
        held
    }

    /// `basic.ack`, `basic.nack` or `basic.reject` outside a transaction.
    /// The client's credit comes back now, before the settlement commits
    /// (ADR 0026). A tag held and never sent is unknown to the client: 406,
    /// as RabbitMQ answers. A `multiple` that in the core would also cover
    /// held deliveries is sent as one settlement per tag the client has.
    ///
    /// # Errors
    /// 406 `unknown delivery tag N` for a held tag.
    async fn settle(
        &mut self,
        ch: u16,
        tag: u64,
        multiple: bool,
        how: TxSettleKind,
        method_id: u16,
    ) -> Result<(), AmqpError> {
        let slot = self.slot(ch);
        if slot.credit.is_held(tag) {
            return Err(AmqpError::channel(
                ch,
                reply_code::PRECONDITION_FAILED,
                format!("PRECONDITION_FAILED - unknown delivery tag {tag}"),
                (60, method_id),
            ));
        }
        let covers_held = slot.credit.covers_held(tag, multiple);
        let one = |tag: u64, multiple: bool| match how {
            TxSettleKind::Ack => Command::Ack {
                delivery_tag: DeliveryTag(tag),
                multiple,
            },
            TxSettleKind::Requeue | TxSettleKind::Reject => Command::Nack {
                delivery_tag: DeliveryTag(tag),
                multiple,
                requeue: how == TxSettleKind::Requeue,
            },
        };
        let commands = match slot.take_covered(tag, multiple) {
            // Not a tag the client was sent: the core answers (406).
            None => vec![one(tag, multiple)],
            Some(taken) => {
                slot.credit.settled(taken.iter().map(|(_, consumer)| *consumer));
                if how == TxSettleKind::Ack {
                    let acked = taken.len() as u64;
                    crate::counters::bump(&self.frontend.counters.acknowledged, acked);
                    self.stats.bump(connection_counter::ACK, acked);
                }
                if covers_held {
                    taken.into_iter().map(|(tag, _)| one(tag, false)).collect()
                } else {
                    vec![one(tag, multiple)]
                }
            }
        };
        self.release_held(ch, Instant::now())?;
        for command in commands {
            self.submit(ch, Pending::Settle { method_id }, command).await?;
        }
        Ok(())
    }

    fn accepts_deliveries(&self, ch: u16) -> bool {
        self.channels
            .get(&ch)
            .is_some_and(|s| s.state == ChannelState::Open && !s.draining)
    }

    async fn handle_reply(&mut self, ch: u16, outcome: Result<Outcome, CoreError>) -> Result<(), AmqpError> {
        let Some(slot) = self.channels.get_mut(&ch) else {
            warn!(conn = ?self.id, channel = ch, "a reply from the core that no request awaits");
            return Ok(());
        };
        let Some(pending) = slot.pending.pop_front() else {
            warn!(conn = ?self.id, channel = ch, "a reply from the core that no request awaits");
            return Ok(());
        };
        if matches!(pending, Pending::TxCommit) {
            slot.committing = false;
            let settled = std::mem::take(&mut slot.committing_settles);
            slot.credit.settled(settled);
        }
        let commit_waits = slot.deferred_commit.is_some();
        let result = self.apply_reply(ch, pending, outcome);
        let result = match result {
            Err(AmqpError::Channel {
                channel,
                code,
                text,
                class_id,
                method_id,
            }) => {
                if self
                    .channels
                    .get(&channel)
                    .is_some_and(|s| s.state == ChannelState::Open)
                {
                    self.close_channel_by_server(channel, code, &text, class_id, method_id)
                        .await?;
                }
                Ok(())
            }
            other => other,
        };
        if commit_waits {
            self.send_deferred_commit(ch).await?;
        }
        self.release_held(ch, Instant::now())?;
        self.return_unsent_due().await?;
        result
    }

    /// Sends a `tx.commit` held back for the replies before it once they
    /// all came and the channel is still open (a failure closed it and
    /// dropped the commit).
    async fn send_deferred_commit(&mut self, ch: u16) -> Result<(), AmqpError> {
        let Some(slot) = self.channels.get_mut(&ch) else {
            return Ok(());
        };
        if !slot.pending.is_empty() || slot.state != ChannelState::Open {
            return Ok(());
        }
        let Some(command) = slot.deferred_commit.take() else {
            return Ok(());
        };
        self.submit(ch, Pending::TxCommit, command).await
    }

    /// Writes what one reply from the core means for the client.
    fn apply_reply(&mut self, ch: u16, pending: Pending, outcome: Result<Outcome, CoreError>) -> Result<(), AmqpError> {
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(error) => return self.reply_error(ch, pending, error),
        };
        match (pending, outcome) {
            (Pending::Discard, _) => {}
            (Pending::ServerClose, _) => self.slot(ch).draining = false,
            (Pending::ConnectionClose, _) => {
                self.send_method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
                );
                self.closed = true;
            }
            (Pending::ChannelClose, _) => {
                self.send_method(
                    ch,
                    AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                );
                let slot = self.slot(ch);
                slot.state = ChannelState::Closed;
                slot.draining = false;
            }
            (
                Pending::Publish { confirm_seq },
                Outcome::Published {
                    routed,
                    rejected,
                    returned,
                },
            ) => {
                let counters = &self.frontend.counters;
                let counter = match (routed, returned.is_some()) {
                    (true, _) => &counters.routed,
                    (false, true) => &counters.unroutable_returned,
                    (false, false) => &counters.unroutable_dropped,
                };
                crate::counters::bump(counter, 1);
                if let Some(message) = returned {
                    self.send_return(ch, &message)?;
                }
                if let Some(seq) = confirm_seq {
                    self.send_confirm(ch, seq, !rejected);
                }
            }
            (Pending::ExchangeDeclare { nowait }, _) => {
                if !nowait {
                    self.send_method(
                        ch,
                        AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {})),
                    );
                }
            }
            (Pending::ExchangeDelete { nowait }, _) => {
                if !nowait {
                    self.send_method(
                        ch,
                        AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {})),
                    );
                }
            }
            (Pending::ExchangeBind { nowait }, _) => {
                if !nowait {
                    self.send_method(
                        ch,
                        AMQPClass::Exchange(exchange::AMQPMethod::BindOk(exchange::BindOk {})),
                    );
                }
            }
            (Pending::ExchangeUnbind { nowait }, _) => {
                if !nowait {
                    self.send_method(
                        ch,
                        AMQPClass::Exchange(exchange::AMQPMethod::UnbindOk(exchange::UnbindOk {})),
                    );
                }
            }
            (
                Pending::QueueDeclare { nowait },
                Outcome::QueueDeclared {
                    queue,
                    message_count,
                    consumer_count,
                    created,
                },
            ) => {
                let counters = &self.frontend.counters;
                crate::counters::bump(&counters.queues_declared, 1);
                crate::counters::bump(&counters.queues_created, u64::from(created));
                if !nowait {
                    let ok = queue::DeclareOk {
                        queue: short(queue.as_str()),
                        message_count,
                        consumer_count,
                    };
                    self.send_method(ch, AMQPClass::Queue(queue::AMQPMethod::DeclareOk(ok)));
                }
            }
            (Pending::QueueBind { nowait }, _) => {
                if !nowait {
                    self.send_method(ch, AMQPClass::Queue(queue::AMQPMethod::BindOk(queue::BindOk {})));
                }
            }
            (Pending::QueueUnbind, _) => {
                self.send_method(ch, AMQPClass::Queue(queue::AMQPMethod::UnbindOk(queue::UnbindOk {})));
            }
            (Pending::QueuePurge { nowait }, Outcome::QueuePurged { message_count }) => {
                if !nowait {
                    let ok = queue::PurgeOk { message_count };
                    self.send_method(ch, AMQPClass::Queue(queue::AMQPMethod::PurgeOk(ok)));
                }
            }
            (Pending::QueueDelete { nowait }, Outcome::QueueDeleted { message_count }) => {
                crate::counters::bump(&self.frontend.counters.queues_deleted, 1);
                if !nowait {
                    let ok = queue::DeleteOk { message_count };
                    self.send_method(ch, AMQPClass::Queue(queue::AMQPMethod::DeleteOk(ok)));
                }
            }
            (Pending::Qos, _) => {
                self.send_method(ch, AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})));
            }
            (Pending::Consume { nowait, no_ack }, Outcome::ConsumeOk { consumer_tag }) => {
                let auto_ack = &mut self.slot(ch).auto_ack_consumers;
                if no_ack {
                    auto_ack.insert(consumer_tag.as_str().to_owned());
                } else {
                    auto_ack.remove(consumer_tag.as_str());
                }
                if !nowait {
                    let ok = basic::ConsumeOk {
                        consumer_tag: short(consumer_tag.as_str()),
                    };
                    self.send_method(ch, AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(ok)));
                }
            }
            (Pending::Cancel { nowait }, Outcome::CancelOk { consumer_tag }) => {
                let slot = self.slot(ch);
                slot.auto_ack_consumers.remove(consumer_tag.as_str());
                // Deliveries assigned before the cancel applied and still
                // held go back now (the cancel took those held before it).
                let unsent = slot.credit.cancelled(consumer_tag.as_str());
                self.unsent_due.push((ch, unsent));
                if !nowait {
                    let ok = basic::CancelOk {
                        consumer_tag: short(consumer_tag.as_str()),
                    };
                    self.send_method(ch, AMQPClass::Basic(basic::AMQPMethod::CancelOk(ok)));
                }
            }
            (
                Pending::Get { no_ack },
                Outcome::GetOk {
                    delivery_tag,
                    redelivered,
                    message_count,
                    message,
                },
            ) => {
                let counters = &self.frontend.counters;
                if no_ack {
                    crate::counters::bump(&counters.delivered_get_auto_ack, 1);
                } else {
                    crate::counters::bump(&counters.delivered_get_manual_ack, 1);
                    let slot = self.slot(ch);
                    slot.record_delivery(delivery_tag.0, 0, Instant::now());
                    slot.credit.got();
                }
                crate::counters::bump(&self.frontend.counters.redelivered, u64::from(redelivered));
                self.stats.bump(connection_counter::DELIVER_GET, 1);
                self.stats.bump(connection_counter::REDELIVER, u64::from(redelivered));
                let ok = basic::GetOk {
                    delivery_tag: delivery_tag.0,
                    redelivered,
                    exchange: short(message.exchange.as_str()),
                    routing_key: short(&message.routing_key),
                    message_count,
                };
                self.send_method(ch, AMQPClass::Basic(basic::AMQPMethod::GetOk(ok)));
                self.send_content(ch, &message)?;
            }
            (Pending::Get { .. }, Outcome::GetEmpty) => {
                crate::counters::bump(&self.frontend.counters.get_empty, 1);
                self.send_method(ch, AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {})));
            }
            (Pending::Settle { .. }, _) => {}
            (Pending::TxCommit, Outcome::Committed { returned, rejected }) => {
                for message in returned {
                    crate::counters::bump(&self.frontend.counters.unroutable_returned, 1);
                    self.send_return(ch, &message)?;
                }
                if rejected {
                    // RabbitMQ's answer when a queue refused a publish of
                    // the transaction (the others took effect).
                    return Err(AmqpError::channel(
                        ch,
                        reply_code::PRECONDITION_FAILED,
                        "PRECONDITION_FAILED - partial tx completion",
                        (90, 20),
                    ));
                }
                self.send_method(ch, AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})));
            }
            (Pending::Recover { send_ok }, _) => {
                // Every delivery applied before the recover was requeued by
                // it (effects arrive in log order), and only those: held
                // ones too.
                let slot = self.slot(ch);
                slot.forget_unacked();
                slot.credit.take_all_held();
                if send_ok {
                    self.send_method(ch, AMQPClass::Basic(basic::AMQPMethod::RecoverOk(basic::RecoverOk {})));
                }
            }
            (pending, outcome) => {
                warn!(conn = ?self.id, channel = ch, ?pending, ?outcome, "a reply that does not fit its request");
                return Err(AmqpError::connection(
                    reply_code::INTERNAL_ERROR,
                    "INTERNAL_ERROR - the broker answered a request with an unrelated outcome",
                ));
            }
        }
        Ok(())
    }

    /// `basic.return` of an unroutable mandatory message.
    fn send_return(&mut self, ch: u16, message: &Message) -> Result<(), AmqpError> {
        let ret = basic::Return {
            reply_code: reply_code::NO_ROUTE,
            reply_text: short("NO_ROUTE"),
            exchange: short(message.exchange.as_str()),
            routing_key: short(&message.routing_key),
        };
        self.send_method(ch, AMQPClass::Basic(basic::AMQPMethod::Return(ret)));
        self.send_content(ch, message)
    }

    fn reply_error(&mut self, ch: u16, pending: Pending, error: CoreError) -> Result<(), AmqpError> {
        match (&pending, &error) {
            (Pending::Discard, _) => return Ok(()),
            (Pending::ServerClose, _) => {
                self.slot(ch).draining = false;
                return Ok(());
            }
            (Pending::ConnectionClose, _) => return self.apply_reply(ch, pending, Ok(Outcome::Done)),
            (Pending::ChannelClose, _) => {
                // The close could not be committed; the client still gets its
                // close-ok, and the core cleans up when the connection goes.
                return self.apply_reply(ch, pending, Ok(Outcome::Done));
            }
            (Pending::Publish { confirm_seq: Some(seq) }, CoreError::Unavailable(_)) => {
                self.send_confirm(ch, *seq, false);
                return Ok(());
            }
            _ => {}
        }
        let ids = pending.method_ids();
        let text = error.to_string();
        if error.is_connection_error() {
            return Err(AmqpError::connection_for(error.reply_code(), text, ids));
        }
        Err(AmqpError::channel(ch, error.reply_code(), text, ids))
    }

    /// Confirms publish `seq` on `ch`. Acks are held back and coalesced:
    /// consecutive acks on a channel go out as one `basic.ack` with
    /// `multiple` set (before anything else is written on that channel, and
    /// at the latest when the output is flushed). Replies arrive in publish
    /// order, so every sequence number below the run is already confirmed.
    fn send_confirm(&mut self, ch: u16, seq: u64, ack: bool) {
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
    fn write_confirms(&mut self, only: Option<u16>) {
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
    async fn close_channel_by_server(
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
    async fn close_connection(&mut self, code: u16, text: &str, class_id: u16, method_id: u16) {
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

    // ----- writing ---------------------------------------------------------------

    fn send_frame(&mut self, frame: &AMQPFrame) {
        if let Err(e) = warren_wire::encode_frame(frame, &mut self.out) {
            warn!(conn = ?self.id, error = %e, "could not encode a frame");
        }
    }

    fn send_method(&mut self, ch: u16, method: AMQPClass) {
        if !self.confirms_due.is_empty() {
            self.write_confirms(Some(ch));
        }
        self.send_frame(&AMQPFrame::Method(ch, method));
    }

    /// Sends `message`'s header and body frames.
    ///
    /// # Errors
    /// 541 if the body is not in memory: the state machine reads every body
    /// back before it hands a message to a connection, so that is a bug.
    fn send_content(&mut self, ch: u16, message: &Message) -> Result<(), AmqpError> {
        let Some(body) = message.body.inline() else {
            tracing::error!(conn = ?self.id, body = ?message.body, "a message reached a connection without its body");
            return Err(AmqpError::connection(
                reply_code::INTERNAL_ERROR,
                "INTERNAL_ERROR - a message body was not read back from the store",
            ));
        };
        let properties = properties_to_wire(&message.properties);
        if let Err(e) = warren_wire::encode_content(ch, 60, &properties, body, self.frame_max, &mut self.out) {
            warn!(conn = ?self.id, error = %e, "could not encode content");
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), AmqpError> {
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

enum ChannelFrame {
    Method(AMQPClass),
    Header(warren_wire::AMQPContentHeader),
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

fn may_connect_from(loopback_users: &[String], user: &str, peer: std::net::IpAddr) -> bool {
    !loopback_users.iter().any(|u| u == user) || peer.to_canonical().is_loopback()
}

/// The smaller of the server's and the client's limit; 0 means "none".
fn negotiate_limit(server: u32, client: u32) -> u32 {
    match (server, client) {
        (0, c) => c,
        (s, 0) => s,
        (s, c) => s.min(c),
    }
}

/// `info` with what the client's properties say of it.
fn client_info(properties: &FieldTable, mut info: crate::registry::ClientInfo) -> crate::registry::ClientInfo {
    let text = |key: &str| match properties.inner().get(key) {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Some(AMQPValue::ShortString(s)) => s.as_str().to_owned(),
        _ => String::new(),
    };
    info.product = text("product");
    info.platform = text("platform");
    info.version = text("version");
    info.connection_name = text("connection_name");
    if let Some(AMQPValue::FieldTable(caps)) = properties.inner().get("capabilities") {
        info.capabilities = caps
            .inner()
            .iter()
            .filter(|(_, v)| matches!(v, AMQPValue::Boolean(true)))
            .map(|(k, _)| k.as_str().to_owned())
            .collect();
    }
    info
}

fn client_capability(client_properties: &FieldTable, name: &str) -> bool {
    let Some(AMQPValue::FieldTable(caps)) = client_properties.inner().get("capabilities") else {
        return false;
    };
    matches!(caps.inner().get(name), Some(AMQPValue::Boolean(true)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_may_connect_only_from_loopback_and_others_from_anywhere() {
        let loopback_users = vec!["guest".to_owned()];
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
        assert!(may_connect_from(&loopback_users, "guest", ip("127.0.0.1")));
        assert!(may_connect_from(&loopback_users, "guest", ip("::1")));
        assert!(may_connect_from(&loopback_users, "guest", ip("::ffff:127.0.0.1")));
        assert!(!may_connect_from(&loopback_users, "guest", ip("10.1.2.3")));
        assert!(!may_connect_from(&loopback_users, "guest", ip("::ffff:10.1.2.3")));
        assert!(may_connect_from(&loopback_users, "alice", ip("10.1.2.3")));
        assert!(
            may_connect_from(&[], "guest", ip("10.1.2.3")),
            "an empty list lets guest in from anywhere"
        );
    }

    #[test]
    fn limits_negotiate_to_the_smaller_with_zero_meaning_none() {
        assert_eq!(negotiate_limit(131_072, 0), 131_072);
        assert_eq!(negotiate_limit(131_072, 4096), 4096);
        assert_eq!(negotiate_limit(2047, 65_535), 2047);
        assert_eq!(negotiate_limit(0, 10), 10);
    }
}
