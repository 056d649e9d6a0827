//! `warren-amqp`: the AMQP 0-9-1 front end.
//!
//! It accepts TCP connections, runs the handshake (PLAIN / AMQPLAIN against
//! the replicated user table), and turns every client method into a core
//! command sent through this node's proposer. It decides nothing about
//! broker state: what the core's effects say (replies, deliveries, cancels)
//! it writes back to the client. It sits above `warren-cluster` (proposer,
//! local replica reads) and `warren-wire` (frames), beside nothing.

mod access;
mod auth_mechanism;
mod channel;
mod connection;
mod convert;
pub mod counters;
mod credit;
mod error;
pub mod flow;
mod frontend;
mod names;
pub mod password;
mod registry;
mod shortcuts;
mod transport;

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::{info, warn};

pub use auth_mechanism::{AuthMechanism, CertLoginFrom};
pub use error::AmqpError;
pub use frontend::{ExecuteError, Frontend, Session, EXECUTE_TIMEOUT};
pub use registry::{ClientInfo, EffectBatch, Registry};

/// RabbitMQ's default `consumer_timeout`: 30 minutes.
pub const DEFAULT_CONSUMER_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Front-end settings.
#[derive(Clone, Debug)]
pub struct AmqpConfig {
    /// Largest frame the server accepts and proposes in `connection.tune`.
    pub frame_max: u32,
    pub channel_max: u16,
    /// Heartbeat interval the server proposes; the client's answer wins.
    pub heartbeat: Duration,
    /// Largest message body accepted, in bytes (RabbitMQ's `max_message_size`).
    pub max_message_size: u64,
    /// Users that may only connect from loopback (RabbitMQ's `loopback_users`).
    pub loopback_users: Vec<String>,
    /// Time allowed from accept to `connection.open-ok`.
    pub handshake_timeout: Duration,
    /// Estimated bytes of ready messages above which publishing
    /// connections are blocked (0: never; see [`flow`]).
    pub queued_bytes_high_watermark: u64,
    /// Publishing connections are blocked while the file system of
    /// `data_dir` has fewer bytes available than this (0: never; RabbitMQ's
    /// `disk_free_limit`, default 50 MB).
    pub disk_free_limit: u64,
    /// Where the node keeps its data: the disk alarm measures its file
    /// system (`None`: no disk alarm).
    pub data_dir: Option<std::path::PathBuf>,
    /// A channel whose oldest delivery awaiting an ack is older than this
    /// is closed with 406 (RabbitMQ's `consumer_timeout`, 30 minutes by
    /// default; `None`: never).
    pub consumer_timeout: Option<Duration>,
    /// The SASL mechanisms offered, in this order (RabbitMQ's
    /// `auth_mechanisms`); EXTERNAL only on TLS connections.
    pub auth_mechanisms: Vec<AuthMechanism>,
    /// What names the user of an EXTERNAL login (RabbitMQ's
    /// `ssl_cert_login_from`).
    pub ssl_cert_login_from: CertLoginFrom,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        Self {
            frame_max: 131_072,
            channel_max: 2047,
            heartbeat: Duration::from_secs(60),
            max_message_size: 16 * 1024 * 1024,
            loopback_users: vec!["guest".to_owned()],
            handshake_timeout: Duration::from_secs(10),
            queued_bytes_high_watermark: 0,
            disk_free_limit: 50_000_000,
            data_dir: None,
            consumer_timeout: Some(DEFAULT_CONSUMER_TIMEOUT),
            auth_mechanisms: AuthMechanism::DEFAULT.to_vec(),
            ssl_cert_login_from: CertLoginFrom::default(),
        }
    }
}

/// Accepts AMQP connections on `listener` until `shutdown` completes, each
/// served by its own task; watches the memory and disk alarms meanwhile.
///
/// # Cancel safety
/// Dropping the future stops accepting and stops the disk watch; the
/// connections already accepted run on.
pub async fn serve(listener: TcpListener, frontend: Arc<Frontend>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let _disk_watch = match (&frontend.config.data_dir, frontend.config.disk_free_limit) {
        (Some(dir), limit) if limit != 0 => Some(AbortOnDrop(tokio::spawn(flow::watch_disk(
            dir.clone(),
            limit,
            frontend.alarms.clone(),
        )))),
        _ => None,
    };
    let watermark = frontend.config.queued_bytes_high_watermark;
    if watermark != 0 {
        // The alarm counts the body cache, which does not shrink when
        // queues drain: kept to a quarter of the watermark, it can clear.
        frontend.node.limit_body_cache(watermark / 4);
    }
    let mut memory_check = tokio::time::interval(flow::CHECK_EVERY);
    memory_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                info!("AMQP listener stopping");
                return;
            }
            _ = memory_check.tick(), if watermark != 0 => {
                let receiving = frontend.receiving_bytes.load(Ordering::Relaxed);
                flow::check(&frontend.node, watermark, receiving, &frontend.alarms);
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let seq = frontend.next_connection_seq();
                    let _ = stream.set_nodelay(true);
                    let local = stream.local_addr().ok();
                    let stream = transport::Transport::Plain(stream);
                    tokio::spawn(connection::serve_connection(stream, local, peer, frontend.clone(), seq));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// How long a client may take over the TLS handshake before the socket is
/// closed (RabbitMQ's `ssl_handshake_timeout` is 5 s; a slow link gets 10).
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts AMQP-over-TLS connections (`amqps`, ADR 0023) on `listener`
/// until `shutdown` completes: each socket's handshake runs in its own task
/// (bounded by [`TLS_HANDSHAKE_TIMEOUT`]), then the connection is served
/// as on the plain port. The alarms are watched by [`serve`], which must
/// run beside this.
///
/// # Cancel safety
/// Dropping the future stops accepting; accepted connections run on.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<tokio_rustls::rustls::ServerConfig>,
    frontend: Arc<Frontend>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                info!("AMQPS listener stopping");
                return;
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let local = stream.local_addr().ok();
                    let acceptor = acceptor.clone();
                    let frontend = frontend.clone();
                    tokio::spawn(async move {
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(tls)) => {
                                let seq = frontend.next_connection_seq();
                                let stream = transport::Transport::Tls(Box::new(tls));
                                connection::serve_connection(stream, local, peer, frontend, seq).await;
                            }
                            Ok(Err(e)) => info!(%peer, error = %e, "TLS handshake failed"),
                            Err(_) => info!(%peer, "TLS handshake timed out"),
                        }
                    });
                }
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Aborts its task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
