//! The handshake: protocol header, `connection.start` … `open-ok`,
//! authentication, tune negotiation, and reading frames.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::info;
use warren_core::{reply_code, UserName, VHost};
use warren_wire::protocol::{connection, AMQPClass};
use warren_wire::types::{AMQPValue, FieldTable, LongString};
use warren_wire::Frame;

use crate::auth_mechanism::{login_name, AuthMechanism, PeerCertificate};
use crate::convert::{long, short};
use crate::error::AmqpError;
use crate::password::verify_login;

use super::{expected, wire_error, Connection};

impl Connection {
    pub(super) async fn handshake(&mut self) -> Result<(), AmqpError> {
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

    pub(super) fn start_method(&self) -> connection::Start {
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
            mechanisms: LongString::from(self.mechanisms_offered()),
            locales: LongString::from("en_US"),
        }
    }

    /// The mechanisms `connection.start` offers this connection: the
    /// configured ones, EXTERNAL only over TLS.
    fn mechanisms_offered(&self) -> String {
        let tls = self.client.ssl;
        let offered: Vec<&str> = self
            .frontend
            .config
            .auth_mechanisms
            .iter()
            .filter(|m| m.offered(tls))
            .map(|m| m.name())
            .collect();
        offered.join(" ")
    }

    /// Checks the credentials of `start-ok`.
    ///
    /// # Errors
    /// 503 COMMAND_INVALID for a mechanism that is unknown or not offered
    /// (RabbitMQ's texts); 403 ACCESS_REFUSED for an unknown user, a wrong
    /// password, an EXTERNAL login without a usable certificate, or a
    /// loopback-only user connecting from elsewhere.
    pub(super) fn authenticate(&mut self, start_ok: &connection::StartOk) -> Result<(), AmqpError> {
        let name = start_ok.mechanism.as_str();
        let invalid = |why: String| {
            AmqpError::connection_for(
                reply_code::COMMAND_INVALID,
                format!("COMMAND_INVALID - {why}"),
                (10, 11),
            )
        };
        let mechanism = match name.parse::<AuthMechanism>() {
            Err(_) => return Err(invalid(format!("unknown authentication mechanism '{name}'"))),
            Ok(m) if !m.offered(self.client.ssl) || !self.frontend.config.auth_mechanisms.contains(&m) => {
                return Err(invalid(format!("invalid authentication mechanism '{name}'")))
            }
            Ok(m) => m,
        };
        let refused = |why: &str| {
            AmqpError::connection_for(reply_code::ACCESS_REFUSED, format!("ACCESS_REFUSED - {why}"), (10, 11))
        };
        // As RabbitMQ tells a client that announced
        // authentication_failure_close: the reason goes to the log only.
        let login_refused = || {
            refused(&format!(
                "Login was refused using authentication mechanism {name}. For details see the broker logfile."
            ))
        };
        // Needed by EXTERNAL only, and only now.
        let certificate = std::mem::replace(&mut self.peer_certificate, PeerCertificate::NotTls);
        let username = match mechanism {
            AuthMechanism::External => {
                let username = login_name(&certificate, self.frontend.config.ssl_cert_login_from).map_err(|why| {
                    info!(conn = ?self.id, peer = %self.peer, "EXTERNAL login refused: {why}");
                    login_refused()
                })?;
                let known = self
                    .frontend
                    .node
                    .read(|broker| broker.user(&UserName::new(username.clone())).is_some());
                if !known {
                    info!(conn = ?self.id, peer = %self.peer, "EXTERNAL login refused: user '{username}' - invalid credentials");
                    return Err(login_refused());
                }
                username
            }
            AuthMechanism::Plain | AuthMechanism::AmqPlain => {
                let credentials = warren_wire::parse_sasl_response(name, start_ok.response.as_bytes())
                    .map_err(|e| refused(&e.to_string()))?;
                let stored = self.frontend.node.read(|broker| {
                    broker
                        .user(&UserName::new(credentials.username.clone()))
                        .map(|u| u.password_hash.clone())
                });
                if !verify_login(stored.as_deref(), &credentials.password) {
                    return Err(login_refused());
                }
                credentials.username
            }
        };
        if !may_connect_from(&self.frontend.config.loopback_users, &username, self.peer.ip()) {
            return Err(refused(&format!("user '{username}' can only connect via localhost")));
        }
        self.user = UserName::new(username);
        Ok(())
    }

    /// Applies the client's `tune-ok`: the smaller of both sides, 0 meaning
    /// "no limit" for frame_max and channel_max and "off" for heartbeats.
    pub(super) fn negotiate(&mut self, tune_ok: &connection::TuneOk) -> Result<(), AmqpError> {
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

    pub(super) async fn read_handshake_method(&mut self) -> Result<connection::AMQPMethod, AmqpError> {
        loop {
            match self.read_frame().await? {
                Frame::Heartbeat => continue,
                Frame::Method(0, AMQPClass::Connection(m)) => return Ok(m),
                _ => return Err(expected("a connection method on channel 0")),
            }
        }
    }

    pub(super) async fn read_frame(&mut self) -> Result<Frame, AmqpError> {
        loop {
            if let Some(frame) = self.decode()? {
                return Ok(frame);
            }
            self.read_more().await?;
        }
    }

    pub(super) async fn read_more(&mut self) -> Result<(), AmqpError> {
        self.inbuf.reserve(64 * 1024);
        let n = self.reader.read_buf(&mut self.inbuf).await?;
        if n == 0 {
            return Err(AmqpError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        self.read_counted(n);
        Ok(())
    }

    pub(super) fn decode(&mut self) -> Result<Option<Frame>, AmqpError> {
        let prefetch_size = warren_wire::peek_qos_prefetch_size(&self.inbuf);
        let frame = warren_wire::decode(&mut self.inbuf, self.frame_max).map_err(wire_error)?;
        if frame.is_some() {
            self.qos_prefetch_size = prefetch_size.unwrap_or(0);
        }
        Ok(frame)
    }
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
