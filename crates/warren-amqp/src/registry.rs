//! The node's table of live AMQP connections. It is the [`EffectSink`] the
//! Raft state machine hands this node's effects to: each effect goes to the
//! connection it names, in apply order; effects for connections that are
//! gone (an earlier boot, a closed socket) are dropped — the core requeues
//! what they held when their close is applied.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::mpsc;
use warren_cluster::EffectSink;
use warren_core::{ConnectionId, Effect};

use crate::counters::{ConnectionCounters, CONNECTION_COUNTERS};

/// Effects for one connection, in apply order.
pub type EffectBatch = Vec<Effect>;

/// What `list-connections` and `/api/connections` show of an AMQP
/// client's connection.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientInfo {
    /// RabbitMQ's connection name: `peer -> local`.
    pub name: String,
    pub user: String,
    pub vhost: String,
    /// Milliseconds since the Unix epoch.
    pub connected_at_ms: u64,
    pub peer_host: String,
    pub peer_port: u16,
    pub host: String,
    pub port: u16,
    /// From the client's properties.
    pub product: String,
    pub platform: String,
    pub version: String,
    pub connection_name: String,
    /// The capabilities the client said it has.
    pub capabilities: Vec<String>,
    /// It came through the AMQPS (TLS) listener.
    pub ssl: bool,
    pub channel_max: u16,
    pub frame_max: u32,
    pub heartbeat_secs: u16,
    /// Channels open now.
    pub channels: u32,
    /// The connection's counters ([`CONNECTION_COUNTERS`]) when listed.
    pub counts: [u64; CONNECTION_COUNTERS.len()],
    /// Their rates per second over the last sampling interval
    /// ([`Registry::sample_rates`]; 0 before the second sample).
    pub rates: [f64; CONNECTION_COUNTERS.len()],
}

impl ClientInfo {
    /// The names of [`ClientInfo::to_cells`]' cells, in order.
    pub const COLUMNS: [&'static str; 21] = [
        "name",
        "user",
        "vhost",
        "connected_at",
        "peer_host",
        "peer_port",
        "host",
        "port",
        "product",
        "platform",
        "version",
        "connection_name",
        "capabilities",
        "channel_max",
        "frame_max",
        "timeout",
        "channels",
        "counts",
        "rates",
        "ssl",
        "number",
    ];

    /// The connection as a row of text (its number on its node last), to
    /// travel between nodes in an admin reply.
    pub fn to_cells(&self, number: u64) -> Vec<String> {
        vec![
            self.name.clone(),
            self.user.clone(),
            self.vhost.clone(),
            self.connected_at_ms.to_string(),
            self.peer_host.clone(),
            self.peer_port.to_string(),
            self.host.clone(),
            self.port.to_string(),
            self.product.clone(),
            self.platform.clone(),
            self.version.clone(),
            self.connection_name.clone(),
            self.capabilities.join(","),
            self.channel_max.to_string(),
            self.frame_max.to_string(),
            self.heartbeat_secs.to_string(),
            self.channels.to_string(),
            join(&self.counts),
            join(&self.rates),
            self.ssl.to_string(),
            number.to_string(),
        ]
    }

    /// The inverse of [`ClientInfo::to_cells`]; `None` for a row of another
    /// shape.
    pub fn from_cells(cells: &[String]) -> Option<(Self, u64)> {
        let [name, user, vhost, connected_at, peer_host, peer_port, host, port, product, platform, version, connection_name, capabilities, channel_max, frame_max, timeout, channels, counts, rates, ssl, number] =
            cells
        else {
            return None;
        };
        let info = Self {
            name: name.clone(),
            user: user.clone(),
            vhost: vhost.clone(),
            connected_at_ms: connected_at.parse().ok()?,
            peer_host: peer_host.clone(),
            peer_port: peer_port.parse().ok()?,
            host: host.clone(),
            port: port.parse().ok()?,
            product: product.clone(),
            platform: platform.clone(),
            version: version.clone(),
            connection_name: connection_name.clone(),
            capabilities: capabilities
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect(),
            channel_max: channel_max.parse().ok()?,
            frame_max: frame_max.parse().ok()?,
            heartbeat_secs: timeout.parse().ok()?,
            channels: channels.parse().ok()?,
            counts: split(counts)?,
            rates: split(rates)?,
            ssl: ssl.parse().ok()?,
        };
        Some((info, number.parse().ok()?))
    }
}

/// Numbers as one comma-separated cell.
fn join<T: ToString>(values: &[T]) -> String {
    values.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

/// The inverse of [`join`], for exactly `N` numbers.
fn split<T: std::str::FromStr, const N: usize>(cell: &str) -> Option<[T; N]> {
    let values: Vec<T> = cell.split(',').map(|v| v.parse().ok()).collect::<Option<_>>()?;
    values.try_into().ok()
}

/// An AMQP client in the registry: what it told, what it counts, and the
/// counts at the last rate sample.
struct Client {
    info: ClientInfo,
    counters: Arc<ConnectionCounters>,
    sampled: Option<(Instant, [u64; CONNECTION_COUNTERS.len()])>,
}

/// Live connections of this node.
#[derive(Default)]
pub struct Registry {
    // A std Mutex: held only to look up senders, never across an await.
    connections: Mutex<HashMap<ConnectionId, mpsc::UnboundedSender<EffectBatch>>>,
    /// AMQP clients among them (the management API's short-lived
    /// connections have none).
    clients: Mutex<HashMap<ConnectionId, Client>>,
    /// Why connections closed by an operator were closed, until each
    /// connection reads it.
    forced: Mutex<HashMap<ConnectionId, String>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a connection; its effects arrive on the returned receiver.
    ///
    /// The channel is unbounded so that apply never waits on a slow client;
    /// what it can hold is bounded by prefetch for consumers that ack (see
    /// docs/adr/0003).
    pub fn register(&self, id: ConnectionId) -> mpsc::UnboundedReceiver<EffectBatch> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().insert(id, tx);
        rx
    }

    /// Updates how many channels client `id` has open.
    pub fn set_channels(&self, id: ConnectionId, channels: u32) {
        if let Some(client) = lock(&self.clients).get_mut(&id) {
            client.info.channels = channels;
        }
    }

    /// [`Registry::register`] for an AMQP client, listed by
    /// [`Registry::clients`] (with what it counts in `counters`) until it
    /// is unregistered.
    pub fn register_client(
        &self,
        id: ConnectionId,
        info: ClientInfo,
        counters: Arc<ConnectionCounters>,
    ) -> mpsc::UnboundedReceiver<EffectBatch> {
        lock(&self.clients).insert(
            id,
            Client {
                info,
                counters,
                sampled: None,
            },
        );
        self.register(id)
    }

    /// Computes every client's rates from its counts since the previous
    /// call (the management API calls it every few seconds).
    pub fn sample_rates(&self) {
        let now = Instant::now();
        for client in lock(&self.clients).values_mut() {
            let counts = client.counters.snapshot();
            if let Some((then, before)) = client.sampled {
                let seconds = now.duration_since(then).as_secs_f64();
                if seconds > 0.0 {
                    client.info.rates = std::array::from_fn(|i| counts[i].saturating_sub(before[i]) as f64 / seconds);
                }
            }
            client.sampled = Some((now, counts));
        }
    }

    pub fn unregister(&self, id: ConnectionId) {
        self.lock().remove(&id);
        lock(&self.clients).remove(&id);
        lock(&self.forced).remove(&id);
    }

    /// The AMQP clients connected to this node, by connection id.
    pub fn clients(&self) -> Vec<(ConnectionId, ClientInfo)> {
        let mut clients: Vec<_> = lock(&self.clients)
            .iter()
            .map(|(id, client)| {
                let mut info = client.info.clone();
                info.counts = client.counters.snapshot();
                (*id, info)
            })
            .collect();
        clients.sort_by_key(|(id, _)| id.seq);
        clients
    }

    /// Closes the client connection named `name` (320 CONNECTION_FORCED
    /// with `reason`); false if this node has none of that name.
    pub fn close_client(&self, name: &str, reason: &str) -> bool {
        let found = lock(&self.clients)
            .iter()
            .find(|(_, client)| client.info.name == name)
            .map(|(id, _)| *id);
        let Some(id) = found else {
            return false;
        };
        self.force_close(&[id], reason);
        true
    }

    /// Connection `id` still gets effects: it was not dropped (the node
    /// declared down, caught up from a snapshot) or force-closed.
    pub fn is_registered(&self, id: ConnectionId) -> bool {
        self.lock().contains_key(&id)
    }

    /// Closes every client connection of this node (320 CONNECTION_FORCED
    /// with `reason`); how many there were.
    pub fn close_all_clients(&self, reason: &str) -> usize {
        let ids: Vec<ConnectionId> = lock(&self.clients).keys().copied().collect();
        self.force_close(&ids, reason);
        ids.len()
    }

    /// Records `reason` for `ids` and drops their effect senders: each
    /// connection sees its stream end, reads the reason and closes with
    /// 320 CONNECTION_FORCED.
    fn force_close(&self, ids: &[ConnectionId], reason: &str) {
        {
            let mut forced = lock(&self.forced);
            for id in ids {
                forced.insert(*id, reason.to_owned());
            }
        }
        let mut connections = self.lock();
        for id in ids {
            connections.remove(id);
        }
    }

    /// Why an operator closed connection `id`, if one did.
    pub fn forced_reason(&self, id: ConnectionId) -> Option<String> {
        lock(&self.forced).remove(&id)
    }

    /// Channels open on this node's AMQP clients.
    pub fn open_channels(&self) -> u64 {
        lock(&self.clients).values().map(|c| u64::from(c.info.channels)).sum()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ConnectionId, mpsc::UnboundedSender<EffectBatch>>> {
        // A poisoned map is still a valid map: a panic elsewhere must not stop delivery.
        self.connections.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl EffectSink for Registry {
    /// One batch per connection, each in the order of `effects`: a
    /// connection's effects keep their order, and those of different
    /// connections never had one (each connection is its own task). A
    /// publisher and a consumer on one node used to get a batch each per
    /// alternation (reply, delivery, reply, …): an allocation and a channel
    /// send per effect.
    fn emit(&self, effects: Vec<Effect>) {
        let Some(first) = effects.first().map(|effect| effect.channel().conn) else {
            return;
        };
        if effects.iter().all(|effect| effect.channel().conn == first) {
            send(&self.lock(), first, effects);
            return;
        }
        // Grouped before the lock is taken (connections register and leave
        // under it), each batch sized first: effects are large, and pushing
        // one by one copied a batch at every doubling (callgrind: 1.5 % of
        // a node's instructions with a publisher and a consumer on it).
        let mut counts: std::collections::BTreeMap<ConnectionId, usize> = std::collections::BTreeMap::new();
        for effect in &effects {
            *counts.entry(effect.channel().conn).or_default() += 1;
        }
        let mut batches: std::collections::BTreeMap<ConnectionId, EffectBatch> = counts
            .into_iter()
            .map(|(id, n)| (id, EffectBatch::with_capacity(n)))
            .collect();
        for effect in effects {
            if let Some(batch) = batches.get_mut(&effect.channel().conn) {
                batch.push(effect);
            }
        }
        let connections = self.lock();
        for (id, batch) in batches {
            send(&connections, id, batch);
        }
    }

    /// Closes the deleted user's client connections on this node.
    fn user_deleted(&self, name: &warren_core::UserName) {
        let names: Vec<String> = lock(&self.clients)
            .values()
            .filter(|client| client.info.user == name.as_str())
            .map(|client| client.info.name.clone())
            .collect();
        for connection in names {
            self.close_client(&connection, &format!("user '{name}' was deleted"));
        }
    }

    /// Drops every connection's sender: each live connection sees its
    /// effect stream end and closes with 320 CONNECTION_FORCED.
    fn drop_all_connections(&self) {
        let dropped = std::mem::take(&mut *self.lock());
        if !dropped.is_empty() {
            tracing::warn!(
                connections = dropped.len(),
                "connections out of step with the cluster state: closing them all"
            );
        }
    }
}

/// Locks one of the registry's maps; a poisoned map is still a valid map.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn send(connections: &HashMap<ConnectionId, mpsc::UnboundedSender<EffectBatch>>, id: ConnectionId, batch: EffectBatch) {
    if let Some(tx) = connections.get(&id) {
        // A closed receiver means the connection is going away; its close
        // command requeues what it held.
        let _ = tx.send(batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_connection_gets_its_effects_in_order_in_one_batch() {
        use warren_core::{ChannelId, NodeId, Outcome};
        let registry = Registry::default();
        let conn = |seq| ConnectionId {
            node: NodeId(1),
            boot: 1,
            seq,
        };
        let (a, b) = (conn(1), conn(2));
        let mut rx_a = registry.register(a);
        let mut rx_b = registry.register(b);
        let effect = |conn, channel| Effect::Reply {
            channel: ChannelId { conn, channel },
            outcome: Ok(Outcome::Done),
        };
        let channels = |batch: EffectBatch| batch.iter().map(|e| e.channel().channel).collect::<Vec<_>>();
        registry.emit(vec![
            effect(a, 1),
            effect(b, 1),
            effect(a, 2),
            effect(b, 2),
            effect(a, 3),
        ]);
        assert_eq!(rx_a.try_recv().map(channels), Ok(vec![1, 2, 3]));
        assert_eq!(rx_b.try_recv().map(channels), Ok(vec![1, 2]));
        assert!(rx_a.try_recv().is_err() && rx_b.try_recv().is_err(), "one batch each");
        registry.emit(vec![effect(b, 7), effect(b, 8)]);
        assert_eq!(rx_b.try_recv().map(channels), Ok(vec![7, 8]));
        assert!(rx_a.try_recv().is_err());
        registry.emit(Vec::new());
        assert!(rx_a.try_recv().is_err() && rx_b.try_recv().is_err());
        // A connection that is gone is skipped; the others still get theirs.
        drop(rx_a);
        registry.emit(vec![effect(a, 1), effect(b, 9)]);
        assert_eq!(rx_b.try_recv().map(channels), Ok(vec![9]));
    }

    #[test]
    fn a_connection_row_travels_between_nodes_whole() {
        let mut info = ClientInfo {
            name: "127.0.0.1:50000 -> 127.0.0.1:5671".to_owned(),
            user: "guest".to_owned(),
            vhost: "/".to_owned(),
            capabilities: vec!["publisher_confirms".to_owned(), "basic.nack".to_owned()],
            ssl: true,
            channel_max: 2047,
            ..ClientInfo::default()
        };
        info.counts[0] = 7;
        let cells = info.to_cells(42);
        assert_eq!(cells.len(), ClientInfo::COLUMNS.len());
        assert_eq!(ClientInfo::from_cells(&cells), Some((info.clone(), 42)));
        let plain = ClientInfo { ssl: false, ..info };
        assert_eq!(ClientInfo::from_cells(&plain.to_cells(1)), Some((plain, 1)));
        assert_eq!(ClientInfo::from_cells(&cells[1..]), None, "a row of another shape");
    }
}
