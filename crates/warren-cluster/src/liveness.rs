//! Leader-side failure detection: which members answered the leader's Raft
//! RPCs lately, and the task that proposes `NodeDown` for a member that has
//! not answered past a configured time, or that has left the membership.
//! The same network wrapper also bounds the bytes of one AppendEntries
//! (`append_budget_bytes`).
//!
//! Contact is observed where it happens: [`TrackingNetwork`] wraps the
//! node's Raft network (gRPC in production, testkit's in-process one in
//! tests) and records every RPC a member answered. The leader sends
//! heartbeats every `heartbeat_interval_ms`, so a live member answers
//! several times a second even in an idle cluster.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::Member;
use openraft::error::{Fatal, InstallSnapshotError, RPCError, RaftError, ReplicationClosed, StreamingError};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, SnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{LogId, Raft, ServerState, Snapshot, Vote};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use warren_core::{Batch, Command, NodeId, Request};

use crate::handover::NotCommitted;
use crate::type_config::{Proposal, TypeConfig};

/// When each member last answered one of this node's Raft RPCs, and when
/// this node sent the latest request a member accepted.
#[derive(Debug, Default)]
pub(crate) struct Contacts {
    last_answer: Mutex<HashMap<u64, Instant>>,
    /// Per member, when this node sent the latest append (or vote request,
    /// or snapshot) it accepted. The time of sending, not of the answer:
    /// an answer read late, after this process was paused, tells of a
    /// member that accepted this node as leader back then, not now.
    last_accepted: Mutex<HashMap<u64, Instant>>,
}

impl Contacts {
    fn answered(&self, node: u64) {
        self.answered_at(node, Instant::now());
    }

    fn answered_at(&self, node: u64, at: Instant) {
        self.last_answer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(node, at);
    }

    fn last_answer(&self, node: u64) -> Option<Instant> {
        self.last_answer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&node)
            .copied()
    }

    fn accepted(&self, node: u64, sent: Instant) {
        let mut accepted = self.last_accepted.lock().unwrap_or_else(PoisonError::into_inner);
        let at = accepted.entry(node).or_insert(sent);
        *at = (*at).max(sent);
    }

    /// How long ago (ms) a majority of `voters` last accepted this node:
    /// the time since the request sent the longest ago among the most
    /// recent ones of a majority, `me` counting as accepting now. A voter
    /// that never accepted counts as never; `u64::MAX` if no majority
    /// ever did. As leader, this is how long it has gone without a
    /// majority behind it, measured on this node's monotonic clock (which
    /// runs on while the process is stopped), unlike openraft's
    /// `millis_since_quorum_ack`, which is as old as the last metrics
    /// report: read right after a pause, that still says "in touch".
    pub(crate) fn majority_accepted_ms_ago(&self, voters: impl Iterator<Item = u64>, me: u64) -> u64 {
        self.majority_accepted_ms_ago_at(voters, me, Instant::now())
    }

    fn majority_accepted_ms_ago_at(&self, voters: impl Iterator<Item = u64>, me: u64, now: Instant) -> u64 {
        let accepted = self.last_accepted.lock().unwrap_or_else(PoisonError::into_inner);
        let mut ages: Vec<u64> = voters
            .map(|voter| {
                if voter == me {
                    return 0;
                }
                accepted.get(&voter).map_or(u64::MAX, |sent| {
                    u64::try_from(now.saturating_duration_since(*sent).as_millis()).unwrap_or(u64::MAX)
                })
            })
            .collect();
        ages.sort_unstable();
        // The majority's oldest: with n voters, the (n/2 + 1)-th youngest.
        ages.get(ages.len() / 2).copied().unwrap_or(u64::MAX)
    }

    /// Records the outcome of one RPC to `node`: any answer from it (a
    /// remote error included) shows it is alive.
    fn observe<T, E: std::error::Error>(&self, node: u64, outcome: &Result<T, RPCError<u64, Member, E>>) {
        if matches!(outcome, Ok(_) | Err(RPCError::RemoteError(_))) {
            self.answered(node);
        }
    }
}

/// Wraps a Raft network and records in [`Contacts`] which members answer.
pub(crate) struct TrackingNetwork<N> {
    pub(crate) inner: N,
    pub(crate) contacts: Arc<Contacts>,
    /// Bytes of entries per AppendEntries at most (see [`trim_to_budget`]).
    pub(crate) append_budget: u64,
}

/// A client of [`TrackingNetwork`].
pub(crate) struct TrackingClient<C> {
    inner: C,
    target: u64,
    contacts: Arc<Contacts>,
    /// Bytes of entries the next AppendEntries may carry: halved after one
    /// that got no answer in time, doubled back after answers, never above
    /// `max_append_budget` nor below [`MIN_APPEND_BUDGET`].
    append_budget: u64,
    max_append_budget: u64,
    /// An AppendEntries was sent and its outcome not seen: openraft drops
    /// the call at its timeout, so this is how a timeout is noticed.
    append_unfinished: bool,
}

/// The smallest adaptive AppendEntries budget (one entry always goes).
const MIN_APPEND_BUDGET: u64 = 16 << 10;

impl<N: RaftNetworkFactory<TypeConfig>> RaftNetworkFactory<TypeConfig> for TrackingNetwork<N> {
    type Network = TrackingClient<N::Network>;

    async fn new_client(&mut self, target: u64, node: &Member) -> Self::Network {
        TrackingClient {
            inner: self.inner.new_client(target, node).await,
            target,
            contacts: self.contacts.clone(),
            append_budget: self.append_budget,
            max_append_budget: self.append_budget,
            append_unfinished: false,
        }
    }
}

impl<C> TrackingClient<C> {
    fn shrink_append_budget(&mut self) {
        let floor = MIN_APPEND_BUDGET.min(self.max_append_budget);
        self.append_budget = (self.append_budget / 2).max(floor);
    }
}

impl<C: RaftNetwork<TypeConfig>> RaftNetwork<TypeConfig> for TrackingClient<C> {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, Member, RaftError<u64>>> {
        let mut rpc = rpc;
        // A follower that cannot take a request within the RPC timeout
        // (a slow disk, a debug build, a busy machine) would get the same
        // request again and again: smaller requests until it answers.
        if std::mem::replace(&mut self.append_unfinished, true) {
            self.shrink_append_budget();
        }
        let trimmed_to = trim_to_budget(&mut rpc, self.append_budget);
        let carried_entries = !rpc.entries.is_empty();
        let sent = Instant::now();
        let outcome = self.inner.append_entries(rpc, option).await;
        self.append_unfinished = false;
        self.contacts.observe(self.target, &outcome);
        if matches!(&outcome, Ok(answer) if !matches!(answer, AppendEntriesResponse::HigherVote(_))) {
            self.contacts.accepted(self.target, sent);
        }
        match &outcome {
            Ok(_) if carried_entries => {
                self.append_budget = self.append_budget.saturating_mul(2).min(self.max_append_budget);
            }
            Err(RPCError::Timeout(_) | RPCError::Network(_)) => self.shrink_append_budget(),
            _ => {}
        }
        match (outcome, trimmed_to) {
            // The follower has everything up to the last entry sent: openraft
            // sends the rest in the next request.
            (Ok(AppendEntriesResponse::Success), Some(last)) => Ok(AppendEntriesResponse::PartialSuccess(Some(last))),
            (outcome, _) => outcome,
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, Member, RaftError<u64, InstallSnapshotError>>> {
        let (sent, rpc_vote) = (Instant::now(), rpc.vote);
        let outcome = self.inner.install_snapshot(rpc, option).await;
        self.contacts.observe(self.target, &outcome);
        if matches!(&outcome, Ok(answer) if answer.vote == rpc_vote) {
            self.contacts.accepted(self.target, sent);
        }
        outcome
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, Member, RaftError<u64>>> {
        let sent = Instant::now();
        let outcome = self.inner.vote(rpc, option).await;
        self.contacts.observe(self.target, &outcome);
        if matches!(&outcome, Ok(answer) if answer.vote_granted) {
            self.contacts.accepted(self.target, sent);
        }
        outcome
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote<u64>,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<u64>, StreamingError<TypeConfig, Fatal<u64>>> {
        let sent = Instant::now();
        let outcome = self.inner.full_snapshot(vote, snapshot, cancel, option).await;
        if let Ok(answer) = &outcome {
            self.contacts.answered(self.target);
            if answer.vote == vote {
                self.contacts.accepted(self.target, sent);
            }
        }
        outcome
    }

    fn backoff(&self) -> Backoff {
        self.inner.backoff()
    }
}

/// Keeps the longest prefix of `rpc.entries` whose encoded size fits in
/// `budget` (always the first entry). Returns the log id of the last entry
/// kept if it dropped any; the caller then reports the follower's `Success`
/// as `PartialSuccess` up to that entry, and openraft sends the rest next.
///
/// Why (`append_budget_bytes`): openraft 0.9 gives every AppendEntries RPC
/// `heartbeat_interval` (100 ms) and sends up to `max_payload_entries` (300)
/// entries in one. Warren's
/// entries are batches of up to `max_batch` commands, so 300 of them can be
/// tens of megabytes: a follower catching up after missing 100k 1 KiB
/// messages got requests it could not take in 100 ms, and the leader timed
/// out and resent them for 18 s. Bounded by bytes, each request fits.
fn trim_to_budget(rpc: &mut AppendEntriesRequest<TypeConfig>, budget: u64) -> Option<LogId<u64>> {
    // The first entry always goes: nothing to size for a heartbeat or a
    // single entry (the usual request of a follower that keeps up).
    if rpc.entries.len() < 2 {
        return None;
    }
    let mut total: u64 = 0;
    let mut keep = rpc.entries.len();
    for (i, entry) in rpc.entries.iter().enumerate() {
        // An entry bincode cannot size would fail to encode in any request.
        total = total.saturating_add(bincode::serialized_size(entry).unwrap_or(0));
        if total > budget && i > 0 {
            keep = i;
            break;
        }
    }
    if keep == rpc.entries.len() {
        return None;
    }
    rpc.entries.truncate(keep);
    rpc.entries.last().map(|entry| entry.log_id)
}

/// What the detector needs.
pub(crate) struct Detector {
    pub(crate) node_id: u64,
    pub(crate) raft: Raft<TypeConfig>,
    pub(crate) contacts: Arc<Contacts>,
    /// A member silent this long is declared down.
    pub(crate) down_after: Duration,
    /// Stamps the verdict's batch, as the proposer stamps its own.
    pub(crate) clock: Arc<crate::clock::LeaderClock>,
    /// The gate of this node's writes (a hand-over closes it: ADR 0035).
    pub(crate) hold: Arc<crate::handover::WriteHold>,
}

impl Detector {
    /// Runs until aborted (node shutdown) or the proposer is gone.
    pub(crate) fn spawn(self) -> JoinHandle<()> {
        tokio::spawn(self.run())
    }

    async fn run(self) {
        let check_every = (self.down_after / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut interval = tokio::time::interval(check_every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leadership = Leadership::default();
        loop {
            interval.tick().await;
            let (state, term, members) = {
                let metrics = self.raft.metrics();
                let metrics = metrics.borrow();
                let members: BTreeSet<u64> = metrics.membership_config.nodes().map(|(id, _)| *id).collect();
                (metrics.state, metrics.current_term, members)
            };
            if state != ServerState::Leader {
                leadership = Leadership::default();
                continue;
            }
            let now = Instant::now();
            if leadership.term != Some(term) {
                // A new leadership: members get `down_after` from now to answer.
                leadership = Leadership {
                    term: Some(term),
                    since: now,
                    ..Leadership::default()
                };
            }
            for node in leadership.verdicts(self.node_id, &members, now, self.down_after, &self.contacts) {
                if let Err(reason) = self.declare_down(node).await {
                    tracing::warn!(node = self.node_id, down = node, term, reason, "NodeDown not committed");
                    // Still silent at the next check: declared again, if
                    // this node still leads in this term.
                    leadership.down.remove(&node);
                }
            }
        }
    }

    /// Appends `NodeDown` for `node` to this node's log as leader and waits
    /// for the commit.
    ///
    /// Straight into openraft, not through the proposer: the verdict is
    /// this leader's, valid only while it leads. The proposer would forward
    /// it to a new leader after losing leadership (and resubmit it after a
    /// failed commit), so a leader cut off from the majority, whose members
    /// all look silent to it, would have the healthy majority declared down
    /// once the partition heals. Appended here, an entry of a deposed
    /// leader is either already in the majority's log (the verdict was made
    /// while it still led them) or is overwritten by the new leader's log.
    async fn declare_down(&self, node: u64) -> Result<(), String> {
        let proposal = Proposal {
            tag: None,
            batch: Batch {
                now_ms: self.clock.stamp(),
                requests: vec![Request {
                    origin: None,
                    command: Command::NodeDown { node: NodeId(node) },
                }],
            },
        };
        let responded = {
            let _append = self.hold.append().await;
            self.raft.client_write_ff(proposal).await
        };
        match crate::handover::committed(responded, self.down_after.max(MIN_COMMIT_WAIT)).await {
            Ok(_) => Ok(()),
            Err(NotCommitted::NotLeader { leader_id, .. }) => {
                Err(format!("this node no longer leads (leader: {leader_id:?})"))
            }
            Err(NotCommitted::Failed(reason)) => Err(reason),
        }
    }
}

/// The least time [`Detector::declare_down`] waits for a commit.
const MIN_COMMIT_WAIT: Duration = Duration::from_secs(1);

/// The detector's view during one term of this node's leadership.
#[derive(Debug)]
struct Leadership {
    term: Option<u64>,
    since: Instant,
    /// Members seen in the membership during this leadership.
    seen: BTreeSet<u64>,
    /// Declared down and silent since.
    down: BTreeSet<u64>,
}

impl Default for Leadership {
    fn default() -> Self {
        Self {
            term: None,
            since: Instant::now(),
            seen: BTreeSet::new(),
            down: BTreeSet::new(),
        }
    }
}

impl Leadership {
    /// The members to declare down now: silent past `down_after` (counting
    /// from the start of this leadership at the earliest), or gone from the
    /// membership. Each once, until it answers again.
    fn verdicts(
        &mut self,
        own: u64,
        members: &BTreeSet<u64>,
        now: Instant,
        down_after: Duration,
        contacts: &Contacts,
    ) -> Vec<u64> {
        let mut verdicts = Vec::new();
        for &node in members.iter().filter(|&&node| node != own) {
            self.seen.insert(node);
            let last = contacts
                .last_answer(node)
                .filter(|&at| at > self.since)
                .unwrap_or(self.since);
            if now.saturating_duration_since(last) >= down_after {
                if self.down.insert(node) {
                    tracing::warn!(
                        node = own,
                        down = node,
                        silent_ms = now.saturating_duration_since(last).as_millis() as u64,
                        "member unreachable: declaring it down"
                    );
                    verdicts.push(node);
                }
            } else if self.down.remove(&node) {
                tracing::info!(node = own, member = node, "member answers again");
            }
        }
        let left: Vec<u64> = self.seen.difference(members).copied().collect();
        for node in left {
            self.seen.remove(&node);
            if self.down.insert(node) {
                tracing::info!(node = own, left = node, "member left the cluster: declaring it down");
                verdicts.push(node);
            }
        }
        verdicts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    const DOWN_AFTER: Duration = Duration::from_secs(3);

    /// A leadership that started at `base`, and a clock relative to it.
    fn leadership_at(base: Instant) -> Leadership {
        Leadership {
            since: base,
            ..Leadership::default()
        }
    }

    fn ms(base: Instant, millis: u64) -> Instant {
        base + Duration::from_millis(millis)
    }

    #[test]
    fn a_silent_member_is_declared_down_once_after_the_timeout() {
        let base = Instant::now();
        let contacts = Contacts::default();
        let mut leadership = leadership_at(base);
        let all = members(&[1, 2, 3]);
        contacts.answered_at(2, ms(base, 100));
        contacts.answered_at(3, ms(base, 100));
        assert!(leadership
            .verdicts(1, &all, ms(base, 100), DOWN_AFTER, &contacts)
            .is_empty());
        contacts.answered_at(2, ms(base, 2100));
        assert!(
            leadership
                .verdicts(1, &all, ms(base, 2100), DOWN_AFTER, &contacts)
                .is_empty(),
            "2 s of silence is not yet 3 s"
        );
        contacts.answered_at(2, ms(base, 3100));
        assert_eq!(
            leadership.verdicts(1, &all, ms(base, 3100), DOWN_AFTER, &contacts),
            vec![3]
        );
        contacts.answered_at(2, ms(base, 4100));
        assert!(
            leadership
                .verdicts(1, &all, ms(base, 4100), DOWN_AFTER, &contacts)
                .is_empty(),
            "declared once"
        );
        contacts.answered_at(3, ms(base, 4200));
        assert!(leadership
            .verdicts(1, &all, ms(base, 4200), DOWN_AFTER, &contacts)
            .is_empty());
        contacts.answered_at(2, ms(base, 8000));
        assert_eq!(
            leadership.verdicts(1, &all, ms(base, 8000), DOWN_AFTER, &contacts),
            vec![3],
            "silent again after answering: declared again"
        );
    }

    #[test]
    fn a_new_leader_gives_members_the_whole_timeout_from_its_start() {
        let base = Instant::now();
        let contacts = Contacts::default();
        // An answer from before this leadership does not count, but the
        // clock starts with the leadership.
        contacts.answered_at(2, base);
        let mut leadership = leadership_at(ms(base, 10_000));
        let both = members(&[1, 2]);
        assert!(leadership
            .verdicts(1, &both, ms(base, 12_000), DOWN_AFTER, &contacts)
            .is_empty());
        assert_eq!(
            leadership.verdicts(1, &both, ms(base, 13_000), DOWN_AFTER, &contacts),
            vec![2]
        );
    }

    #[test]
    fn a_member_that_leaves_is_declared_down() {
        let base = Instant::now();
        let contacts = Contacts::default();
        let mut leadership = leadership_at(base);
        contacts.answered_at(2, ms(base, 10));
        contacts.answered_at(3, ms(base, 10));
        assert!(leadership
            .verdicts(1, &members(&[1, 2, 3]), ms(base, 20), DOWN_AFTER, &contacts)
            .is_empty());
        assert_eq!(
            leadership.verdicts(1, &members(&[1, 2]), ms(base, 30), DOWN_AFTER, &contacts),
            vec![3]
        );
        assert!(leadership
            .verdicts(1, &members(&[1, 2]), ms(base, 40), DOWN_AFTER, &contacts)
            .is_empty());
    }

    fn append_of(entries: u64) -> AppendEntriesRequest<TypeConfig> {
        let leader = openraft::CommittedLeaderId::new(1, 1);
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            leader_commit: None,
            entries: (1..=entries)
                .map(|index| openraft::Entry {
                    log_id: LogId::new(leader, index),
                    payload: openraft::EntryPayload::Normal(Proposal {
                        tag: None,
                        batch: Batch {
                            now_ms: index,
                            requests: Vec::new(),
                        },
                    }),
                })
                .collect(),
        }
    }

    #[test]
    fn an_append_is_trimmed_to_the_entries_that_fit_the_budget() {
        let mut rpc = append_of(10);
        let one = bincode::serialized_size(&rpc.entries[0]).expect("size");
        assert_eq!(trim_to_budget(&mut rpc, one * 100), None, "all fit");
        assert_eq!(rpc.entries.len(), 10);
        let last = trim_to_budget(&mut rpc, one * 3 + one / 2);
        assert_eq!(rpc.entries.len(), 3);
        assert_eq!(last.map(|id| id.index), Some(3));
        let last = trim_to_budget(&mut rpc, 1);
        assert_eq!(rpc.entries.len(), 1, "the first entry always goes");
        assert_eq!(last.map(|id| id.index), Some(1));
        let mut empty = append_of(0);
        assert_eq!(trim_to_budget(&mut empty, 1), None, "a heartbeat is left alone");
    }

    fn client_with_budget(max: u64) -> TrackingClient<()> {
        TrackingClient {
            inner: (),
            target: 2,
            contacts: Arc::new(Contacts::default()),
            append_budget: max,
            max_append_budget: max,
            append_unfinished: false,
        }
    }

    #[test]
    fn the_append_budget_halves_down_to_its_floor() {
        let mut client = client_with_budget(1 << 20);
        client.shrink_append_budget();
        assert_eq!(client.append_budget, 512 << 10);
        for _ in 0..20 {
            client.shrink_append_budget();
        }
        assert_eq!(client.append_budget, MIN_APPEND_BUDGET);
        let mut small = client_with_budget(4096);
        small.shrink_append_budget();
        assert_eq!(
            small.append_budget, 4096,
            "never below a configured budget smaller than the floor"
        );
    }

    #[test]
    fn only_answers_count_as_contact() {
        let contacts = Contacts::default();
        let unreachable: Result<(), RPCError<u64, Member, RaftError<u64>>> = Err(RPCError::Unreachable(
            openraft::error::Unreachable::new(&std::io::Error::other("down")),
        ));
        contacts.observe(2, &unreachable);
        assert_eq!(contacts.last_answer(2), None);
        contacts.observe(2, &Ok::<(), RPCError<u64, Member, RaftError<u64>>>(()));
        assert!(contacts.last_answer(2).is_some());
    }

    #[test]
    fn a_leader_is_in_touch_while_a_majority_accepted_lately() {
        let base = Instant::now();
        let contacts = Contacts::default();
        let three = || [1, 2, 3].into_iter();
        assert_eq!(
            contacts.majority_accepted_ms_ago_at(three(), 1, base),
            u64::MAX,
            "none accepted yet"
        );
        contacts.accepted(3, base);
        assert_eq!(contacts.majority_accepted_ms_ago_at(three(), 1, ms(base, 700)), 700);
        contacts.accepted(2, ms(base, 500));
        assert_eq!(
            contacts.majority_accepted_ms_ago_at(three(), 1, ms(base, 700)),
            200,
            "itself and the one that accepted last"
        );
        // An answer read late, to a request sent before: does not go back.
        contacts.accepted(2, ms(base, 100));
        assert_eq!(contacts.majority_accepted_ms_ago_at(three(), 1, ms(base, 700)), 200);
        // Five voters: itself and two others.
        let five = || [1, 2, 3, 4, 5].into_iter();
        assert_eq!(contacts.majority_accepted_ms_ago_at(five(), 1, ms(base, 700)), 700);
        assert_eq!(
            contacts.majority_accepted_ms_ago_at([1].into_iter(), 1, base),
            0,
            "a single voter"
        );
        assert_eq!(
            contacts.majority_accepted_ms_ago_at(std::iter::empty(), 1, base),
            u64::MAX
        );
    }

    /// Answers appends after `delay`: success, or a higher vote.
    struct Delayed {
        delay: Duration,
        higher_vote: bool,
    }

    impl RaftNetwork<TypeConfig> for Delayed {
        async fn append_entries(
            &mut self,
            _rpc: AppendEntriesRequest<TypeConfig>,
            _option: RPCOption,
        ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, Member, RaftError<u64>>> {
            tokio::time::sleep(self.delay).await;
            Ok(if self.higher_vote {
                AppendEntriesResponse::HigherVote(Vote::new(9, 3))
            } else {
                AppendEntriesResponse::Success
            })
        }

        async fn install_snapshot(
            &mut self,
            _rpc: InstallSnapshotRequest<TypeConfig>,
            _option: RPCOption,
        ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, Member, RaftError<u64, InstallSnapshotError>>> {
            Err(RPCError::Unreachable(openraft::error::Unreachable::new(
                &std::io::Error::other("not in this test"),
            )))
        }

        async fn vote(
            &mut self,
            _rpc: VoteRequest<u64>,
            _option: RPCOption,
        ) -> Result<VoteResponse<u64>, RPCError<u64, Member, RaftError<u64>>> {
            Err(RPCError::Unreachable(openraft::error::Unreachable::new(
                &std::io::Error::other("not in this test"),
            )))
        }
    }

    #[tokio::test]
    async fn an_accepted_append_counts_from_when_it_was_sent() {
        let contacts = Arc::new(Contacts::default());
        let mut client = TrackingClient {
            inner: Delayed {
                delay: Duration::from_millis(400),
                higher_vote: false,
            },
            target: 2,
            contacts: contacts.clone(),
            append_budget: 1 << 20,
            max_append_budget: 1 << 20,
            append_unfinished: false,
        };
        let option = RPCOption::new(Duration::from_secs(10));
        client.append_entries(append_of(0), option.clone()).await.ok();
        // Answered just now, but sent 0.4 s ago (a pause in between, say).
        let age = contacts.majority_accepted_ms_ago([1, 2].into_iter(), 1);
        assert!((400..u64::MAX).contains(&age), "{age}");
        assert!(contacts.last_answer(2).is_some());
        // A member that answers with a higher vote no longer accepts it.
        client.inner.higher_vote = true;
        client.inner.delay = Duration::ZERO;
        client.append_entries(append_of(0), option).await.ok();
        let age = contacts.majority_accepted_ms_ago([1, 2].into_iter(), 1);
        assert!((400..u64::MAX).contains(&age), "{age}");
    }
}
