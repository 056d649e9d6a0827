//! An in-process Raft network with injected faults.
//!
//! Every node of a [`crate::Cluster`] gets a [`FaultNetwork`] that names
//! it as the sender; all of them share one [`FaultNet`]: the registry of
//! running nodes (by id; a node's address is `node-<id>`), the current
//! [`Faults`], and one seeded RNG. An RPC — openraft's append, vote and
//! snapshot, and Warren's forward, join and status — goes through
//! [`FaultNet::transmit`]: the request leg may be refused (isolated node,
//! cut link: `Unreachable`), dropped, or delayed; then the target's handle
//! is called; then the response leg may be lost (a cut link back, or a
//! drop after delivery), which leaves the caller with an ambiguous
//! outcome, as a real network does.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use warren_cluster::Member;
use warren_cluster::{BoxFuture, JoinMode, Node, PeerError, Peers, Proposal, TypeConfig};

/// The address a node of the in-process network has.
pub fn node_addr(node_id: u64) -> String {
    format!("node-{node_id}")
}

/// The node id in an address made by [`node_addr`].
pub fn addr_node(addr: &str) -> Option<u64> {
    addr.strip_prefix("node-")?.parse().ok()
}

/// The faults in force. Changing them affects RPCs that start (or reach a
/// later leg) afterwards.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// Every link to and from these nodes is down.
    pub isolated: BTreeSet<u64>,
    /// Directed links `(from, to)` that are down.
    pub cut: BTreeSet<(u64, u64)>,
    /// Each leg of an RPC waits a random time in this range.
    pub delay_ms: Option<Range<u64>>,
    /// Fraction of RPCs lost before reaching the target.
    pub drop_request: f64,
    /// Fraction of RPCs whose response is lost after the target handled it.
    pub drop_response: f64,
}

impl Faults {
    /// No faults at all.
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether a message from `from` reaches `to`.
    pub fn link_up(&self, from: u64, to: u64) -> bool {
        !self.isolated.contains(&from) && !self.isolated.contains(&to) && !self.cut.contains(&(from, to))
    }
}

/// Why an RPC did not complete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lost {
    /// Nothing was delivered: the link is down or the target is not running.
    Unreachable(String),
    /// The request was dropped on the way (nothing was delivered).
    RequestDropped(String),
    /// The target handled the request; the response was lost.
    ResponseLost(String),
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lost::Unreachable(why) => write!(f, "unreachable: {why}"),
            Lost::RequestDropped(why) => write!(f, "request dropped: {why}"),
            Lost::ResponseLost(why) => write!(f, "response lost: {why}"),
        }
    }
}

/// Counters of what the network did, for test logs.
#[derive(Debug, Default)]
pub struct NetStats {
    pub delivered: AtomicU64,
    pub refused: AtomicU64,
    pub requests_dropped: AtomicU64,
    pub responses_lost: AtomicU64,
}

/// The shared in-process network: registry, faults, RNG.
pub struct FaultNet {
    seed: u64,
    nodes: Mutex<BTreeMap<u64, Node>>,
    faults: Mutex<Faults>,
    rng: Mutex<StdRng>,
    stats: NetStats,
}

impl std::fmt::Debug for FaultNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultNet")
            .field("seed", &self.seed)
            .field("faults", &self.faults())
            .finish_non_exhaustive()
    }
}

/// What one leg of an RPC does, drawn from the faults and the RNG.
enum Leg {
    Pass(Option<Duration>),
    Down,
    Drop,
}

impl FaultNet {
    /// A network with no nodes and no faults; every random choice comes
    /// from an RNG seeded with `seed`.
    pub fn new(seed: u64) -> Arc<Self> {
        Arc::new(Self {
            seed,
            nodes: Mutex::new(BTreeMap::new()),
            faults: Mutex::new(Faults::none()),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            stats: NetStats::default(),
        })
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The network handle of node `from`.
    pub fn endpoint(self: &Arc<Self>, from: u64) -> FaultNetwork {
        FaultNetwork {
            from,
            net: self.clone(),
        }
    }

    /// Makes `node` reachable under its id.
    pub fn register(&self, node: Node) {
        let id = node.metrics().node_id;
        self.nodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, node);
    }

    /// `node_id` is no longer reachable (stopped).
    pub fn unregister(&self, node_id: u64) {
        self.nodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&node_id);
    }

    fn node(&self, node_id: u64) -> Option<Node> {
        self.nodes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&node_id)
            .cloned()
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Replaces the faults in force.
    pub fn set_faults(&self, faults: Faults) {
        tracing::info!(?faults, "faults changed");
        *self.faults.lock().unwrap_or_else(PoisonError::into_inner) = faults;
    }

    /// Changes the faults in force.
    pub fn update_faults(&self, change: impl FnOnce(&mut Faults)) {
        let mut faults = self.faults();
        change(&mut faults);
        self.set_faults(faults);
    }

    /// Cuts every link to and from `node`.
    pub fn isolate(&self, node: u64) {
        self.update_faults(|f| {
            f.isolated.insert(node);
        });
    }

    /// Cuts the directed link `from → to`.
    pub fn cut(&self, from: u64, to: u64) {
        self.update_faults(|f| {
            f.cut.insert((from, to));
        });
    }

    /// Removes every fault.
    pub fn heal(&self) {
        self.set_faults(Faults::none());
    }

    pub fn stats(&self) -> &NetStats {
        &self.stats
    }

    /// A uniformly random number in `range`, from the run's RNG.
    pub fn random_in(&self, range: Range<u64>) -> u64 {
        if range.is_empty() {
            return range.start;
        }
        self.rng.lock().unwrap_or_else(PoisonError::into_inner).gen_range(range)
    }

    /// `true` with probability `p`, from the run's RNG.
    pub fn chance(&self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        self.rng
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .gen_bool(p.min(1.0))
    }

    fn draw_leg(&self, from: u64, to: u64, drop: f64) -> Leg {
        let faults = self.faults();
        if !faults.link_up(from, to) {
            return Leg::Down;
        }
        let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        if drop > 0.0 && rng.gen_bool(drop.min(1.0)) {
            return Leg::Drop;
        }
        let delay = faults
            .delay_ms
            .filter(|range| !range.is_empty())
            .map(|range| Duration::from_millis(rng.gen_range(range)));
        Leg::Pass(delay)
    }

    /// Sends one RPC from `from` to `to` under the current faults: `call`
    /// runs with the target's [`Node`] if the request leg gets through;
    /// its result comes back if the response leg gets through.
    ///
    /// # Errors
    /// [`Lost`] says which leg failed and whether the target acted.
    pub async fn transmit<T, F, Fut>(&self, from: u64, to: u64, call: F) -> Result<T, Lost>
    where
        F: FnOnce(Node) -> Fut,
        Fut: Future<Output = T>,
    {
        let (drop_request, drop_response) = {
            let faults = self.faults();
            (faults.drop_request, faults.drop_response)
        };
        match self.draw_leg(from, to, drop_request) {
            Leg::Down => return Err(self.refused(from, to)),
            Leg::Drop => {
                self.stats.requests_dropped.fetch_add(1, Ordering::Relaxed);
                return Err(Lost::RequestDropped(format!("{from} → {to}")));
            }
            Leg::Pass(delay) => {
                if let Some(delay) = delay {
                    tokio::time::sleep(delay).await;
                    // The link may have gone down while the request travelled.
                    if !self.faults().link_up(from, to) {
                        return Err(self.refused(from, to));
                    }
                }
            }
        }
        let Some(node) = self.node(to) else {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            return Err(Lost::Unreachable(format!("node {to} is not running")));
        };
        let response = call(node).await;
        match self.draw_leg(to, from, drop_response) {
            Leg::Down | Leg::Drop => {
                self.stats.responses_lost.fetch_add(1, Ordering::Relaxed);
                return Err(Lost::ResponseLost(format!("{to} → {from}")));
            }
            Leg::Pass(Some(delay)) => {
                tokio::time::sleep(delay).await;
                if !self.faults().link_up(to, from) {
                    self.stats.responses_lost.fetch_add(1, Ordering::Relaxed);
                    return Err(Lost::ResponseLost(format!("{to} → {from} went down")));
                }
            }
            Leg::Pass(None) => {}
        }
        self.stats.delivered.fetch_add(1, Ordering::Relaxed);
        Ok(response)
    }

    fn refused(&self, from: u64, to: u64) -> Lost {
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        Lost::Unreachable(format!("link {from} → {to} is down"))
    }
}

/// One node's view of the [`FaultNet`]: openraft's network factory and
/// client, and Warren's [`Peers`].
#[derive(Clone, Debug)]
pub struct FaultNetwork {
    from: u64,
    net: Arc<FaultNet>,
}

/// openraft's connection from one node to one target.
#[derive(Clone, Debug)]
pub struct FaultClient {
    from: u64,
    target: u64,
    /// The target's incarnation as the caller's membership records it.
    target_incarnation: u64,
    net: Arc<FaultNet>,
}

impl RaftNetworkFactory<TypeConfig> for FaultNetwork {
    type Network = FaultClient;

    async fn new_client(&mut self, target: u64, node: &Member) -> Self::Network {
        FaultClient {
            from: self.from,
            target,
            target_incarnation: node.incarnation,
            net: self.net.clone(),
        }
    }
}

fn rpc_error<E: std::error::Error>(lost: &Lost) -> RPCError<u64, Member, E> {
    let error = std::io::Error::other(lost.to_string());
    match lost {
        Lost::Unreachable(_) => RPCError::Unreachable(Unreachable::new(&error)),
        Lost::RequestDropped(_) | Lost::ResponseLost(_) => RPCError::Network(NetworkError::new(&error)),
    }
}

fn timed_out<E: std::error::Error>(target: u64, ttl: Duration) -> RPCError<u64, Member, E> {
    let error = std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("node {target}: no answer within {ttl:?}"),
    );
    RPCError::Network(NetworkError::new(&error))
}

impl FaultClient {
    async fn call<T, E, F, Fut>(
        &self,
        option: &RPCOption,
        call: F,
    ) -> Result<T, RPCError<u64, Member, RaftError<u64, E>>>
    where
        E: std::error::Error,
        F: FnOnce(Node) -> Fut,
        Fut: Future<Output = Result<T, RaftError<u64, E>>>,
    {
        let ttl = option.hard_ttl();
        // A node that takes no Raft messages yet (ADR 0022) refuses them,
        // as does a node the message was not meant for (ADR 0033): as the
        // gRPC service does.
        let (from, target, target_incarnation) = (self.from, self.target, self.target_incarnation);
        let gated = |node: Node| async move {
            if !node.takes_raft_messages() {
                return Err(format!("node {target} takes no Raft messages yet"));
            }
            node.check_callee(from, target, target_incarnation)?;
            Ok(call(node).await)
        };
        let sent = tokio::time::timeout(ttl, self.net.transmit(self.from, self.target, gated)).await;
        match sent {
            Err(_) => Err(timed_out(self.target, ttl)),
            Ok(Err(lost)) => Err(rpc_error(&lost)),
            Ok(Ok(Err(refused))) => Err(rpc_error(&Lost::Unreachable(refused))),
            Ok(Ok(Ok(answer))) => match answer {
                // A stopped target answers `Fatal`; to the sender that is a node it cannot reach.
                Err(RaftError::Fatal(fatal)) => {
                    Err(rpc_error(&Lost::Unreachable(format!("node {}: {fatal}", self.target))))
                }
                Err(remote) => Err(RPCError::RemoteError(RemoteError::new(self.target, remote))),
                Ok(response) => Ok(response),
            },
        }
    }
}

impl RaftNetwork<TypeConfig> for FaultClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, Member, RaftError<u64>>> {
        self.call(&option, |node| async move { node.append_entries(rpc).await })
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, Member, RaftError<u64, InstallSnapshotError>>> {
        self.call(&option, |node| async move { node.raft().install_snapshot(rpc).await })
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, Member, RaftError<u64>>> {
        self.call(&option, |node| async move { node.raft().vote(rpc).await })
            .await
    }

    /// Shorter than openraft's 500 ms, so a healed link is used again soon.
    fn backoff(&self) -> Backoff {
        Backoff::new(std::iter::repeat(Duration::from_millis(100)))
    }
}

fn peer_lost(what: &str, lost: &Lost) -> PeerError {
    PeerError::Failed(format!("{what}: {lost}"))
}

impl Peers for FaultNetwork {
    fn forward(&self, addr: &str, proposal: Proposal) -> BoxFuture<Result<(), PeerError>> {
        let net = self.net.clone();
        let from = self.from;
        let target = addr_node(addr);
        let addr = addr.to_owned();
        Box::pin(async move {
            let Some(to) = target else {
                return Err(PeerError::Failed(format!("forward: no node at {addr}")));
            };
            let sent = net
                .transmit(from, to, |node| async move { node.write_forwarded(proposal).await })
                .await;
            match sent {
                Ok(committed) => committed.map(|_index| ()),
                Err(lost) => Err(peer_lost(&format!("forward to {addr}"), &lost)),
            }
        })
    }

    fn join(
        &self,
        via: &str,
        node_id: u64,
        addr: &str,
        incarnation: u64,
        mode: JoinMode,
    ) -> BoxFuture<Result<u64, PeerError>> {
        let net = self.net.clone();
        let from = self.from;
        let target = addr_node(via);
        let via = via.to_owned();
        let addr = addr.to_owned();
        Box::pin(async move {
            let Some(to) = target else {
                return Err(PeerError::Failed(format!("join: no node at {via}")));
            };
            let sent = net
                .transmit(from, to, |node| async move {
                    node.add_voter(node_id, &addr, incarnation, mode).await
                })
                .await;
            sent.unwrap_or_else(|lost| Err(peer_lost(&format!("join through {via}"), &lost)))
        })
    }

    fn in_a_cluster(&self, addr: &str) -> BoxFuture<Result<bool, PeerError>> {
        self.status_of(addr, |status| !status.members.is_empty())
    }

    fn applied_index(&self, addr: &str) -> BoxFuture<Result<Option<u64>, PeerError>> {
        self.status_of(addr, |status| status.last_applied)
    }

    fn stand_for_election(&self, addr: &str, leader_id: u64, term: u64) -> BoxFuture<Result<(), PeerError>> {
        let net = self.net.clone();
        let from = self.from;
        let target = addr_node(addr);
        let addr = addr.to_owned();
        Box::pin(async move {
            let Some(to) = target else {
                return Err(PeerError::Failed(format!("stand-for-election: no node at {addr}")));
            };
            let sent = net
                .transmit(from, to, |node| async move {
                    node.stand_for_election(leader_id, term).await
                })
                .await;
            sent.unwrap_or_else(|lost| Err(peer_lost(&format!("stand-for-election at {addr}"), &lost)))
        })
    }

    /// A stopped node's process is gone (as a killed process's port
    /// refuses and a removed container's name stops resolving) when the
    /// link to it is up; a paused node, or one behind a cut link, does not
    /// answer, which is not gone. The default's TCP probe would call every
    /// in-process node gone: its name resolves nowhere.
    fn process_gone(&self, addr: &str) -> BoxFuture<bool> {
        let gone = match addr_node(addr) {
            None => true,
            Some(to) => {
                // The refusal has to come back: both ways up.
                let faults = self.net.faults();
                faults.link_up(self.from, to) && faults.link_up(to, self.from) && self.net.node(to).is_none()
            }
        };
        Box::pin(async move { gone })
    }
}

impl FaultNetwork {
    /// `read` of the status of the node at `addr`, over the faulty network
    /// (the in-process `Status` RPC).
    fn status_of<T: Send + 'static>(
        &self,
        addr: &str,
        read: impl FnOnce(warren_cluster::NodeStatus) -> T + Send + 'static,
    ) -> BoxFuture<Result<T, PeerError>> {
        let net = self.net.clone();
        let from = self.from;
        let target = addr_node(addr);
        let addr = addr.to_owned();
        Box::pin(async move {
            let Some(to) = target else {
                return Err(PeerError::Failed(format!("status: no node at {addr}")));
            };
            net.transmit(from, to, |node| async move { read(node.metrics()) })
                .await
                .map_err(|lost| peer_lost(&format!("status of {addr}"), &lost))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip() {
        assert_eq!(addr_node(&node_addr(7)), Some(7));
        assert_eq!(addr_node("127.0.0.1:25672"), None);
    }

    #[test]
    fn isolation_and_cuts_take_links_down() {
        let faults = Faults {
            isolated: BTreeSet::from([3]),
            cut: BTreeSet::from([(1, 2)]),
            ..Faults::none()
        };
        assert!(!faults.link_up(1, 2), "cut one way");
        assert!(faults.link_up(2, 1), "the other way stays up");
        assert!(!faults.link_up(3, 1));
        assert!(!faults.link_up(1, 3));
        assert!(faults.link_up(1, 4));
    }

    #[tokio::test]
    async fn a_down_link_never_reaches_the_target() {
        let net = FaultNet::new(1);
        net.cut(1, 2);
        let reached = Arc::new(AtomicU64::new(0));
        let touched = reached.clone();
        let sent = net
            .transmit(1, 2, |_node| async move {
                touched.fetch_add(1, Ordering::Relaxed);
            })
            .await;
        assert!(
            matches!(&sent, Err(Lost::Unreachable(why)) if why.contains("link")),
            "{sent:?}"
        );
        assert_eq!(reached.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_same_seed_draws_the_same_choices() {
        let draws = |seed| {
            let net = FaultNet::new(seed);
            (0..32).map(|_| net.random_in(0..1000)).collect::<Vec<_>>()
        };
        assert_eq!(draws(9), draws(9));
        assert_ne!(draws(9), draws(10));
    }
}
