//! The broker state and its apply function.
//!
//! CONTRACT (used by the front end and the Raft glue; keep these signatures):
//! - `Broker::new()` has vhost `/` with the default exchange and `amq.direct`,
//!   `amq.fanout`, `amq.topic`, `amq.headers`, `amq.match` pre-declared, and no users.
//! - `apply` is deterministic: same state + same batch = same state + same effects.
//! - Every request with an origin gets exactly one `Effect::Reply`, and effects
//!   are pushed in the order a client must see them (e.g. `consume-ok` before
//!   the first `deliver` to that consumer; `get-ok` reply carries its message).
//! - `Broker` is `Serialize + Deserialize` (snapshots) and `Clone`.
//!
//! The command handlers live in sibling modules (`exchange_ops`,
//! `queue_ops`, `publish`, `consume`, `ack`, `lifecycle`), each an
//! `impl Broker` block; this file holds the state and the apply loop.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::channel::Channel;
use crate::command::{AfterReturn, Batch, Command};
use crate::dead_letter::DeadLetter;
use crate::effect::{Effect, Outcome};
use crate::error::CoreError;
use crate::fail;
use crate::ids::{ChannelId, MessageId, NodeId, QueueName, UserName, VHost};
use crate::vhost::VHostState;

/// A user of the broker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub name: UserName,
    /// base64(salt(4) ++ sha256(salt ++ password)), as RabbitMQ stores it.
    pub password_hash: String,
    pub tags: Vec<String>,
}

/// A channel as listings show it ([`Broker::channel_summaries`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelSummary {
    pub id: ChannelId,
    pub prefetch: u16,
    pub global_prefetch: u16,
    pub unacked: u64,
    pub consumers: u64,
}

/// One row of `list-queues`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSummary {
    pub vhost: VHost,
    pub name: QueueName,
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
    pub messages_ready: u64,
    pub messages_unacked: u64,
    pub consumers: u64,
}

/// The whole replicated broker state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Broker {
    pub(crate) vhosts: BTreeMap<VHost, VHostState>,
    pub(crate) users: BTreeMap<UserName, User>,
    /// Channels that issued a channel-scoped command and are not closed.
    pub(crate) channels: BTreeMap<ChannelId, Channel>,
    pub(crate) next_message_id: u64,
    /// Source of queue incarnation ids and consumer serials.
    pub(crate) next_uid: u64,
    /// Bodies arriving in parts ([`crate::staged`]). Not in the broker's
    /// own encoding (older snapshots lack it): snapshots carry it beside
    /// the broker.
    #[serde(skip)]
    pub(crate) staged: crate::staged::StagedBodies,
    /// Users' permissions. Beside the broker in snapshots, as `staged`.
    #[serde(skip)]
    pub(crate) access: crate::access::Access,
    /// Policies. Beside the broker in snapshots, as `staged`.
    #[serde(skip)]
    pub(crate) policies: crate::policy::Policies,
    /// Message counts beyond the queues' ([`crate::stats`]).
    #[serde(skip)]
    pub(crate) stats: crate::stats::BrokerStats,
    /// The cluster's id ([`Command::SetClusterId`]); snapshots carry it
    /// beside the broker, as they carry the permissions.
    #[serde(skip)]
    pub(crate) cluster_id: Option<String>,
    /// The latest batch time applied (the log's time): a node that leads
    /// next never stamps below it (ADR 0032), also after it restarted
    /// from a snapshot or installed one. Snapshots carry it beside the
    /// broker, as they carry the cluster id.
    #[serde(skip)]
    pub(crate) log_time_ms: u64,
}

/// The longest cluster id [`Command::SetClusterId`] takes.
pub const MAX_CLUSTER_ID_LEN: usize = 64;

/// A queue's key across vhosts.
pub(crate) type QueueKey = (VHost, QueueName);

/// The state of applying one request: its time and origin, the effects
/// sink, and the follow-up work (dead letters to republish, queues whose
/// consumers may now receive) done after its reply is pushed.
pub(crate) struct Ctx<'a> {
    pub now_ms: u64,
    pub origin: Option<ChannelId>,
    pub effects: &'a mut Vec<Effect>,
    pub dirty: BTreeSet<QueueKey>,
    pub dead_letters: VecDeque<DeadLetter>,
    /// Effects that must follow the request's reply (direct reply-to
    /// deliveries made while handling a publish).
    pub after_reply: Vec<Effect>,
    /// Moves a routed body to the node's body store (see
    /// [`Broker::apply_spilling`]); `None` keeps bodies in memory.
    pub spill: Option<&'a mut Spill<'a>>,
}

/// Given a routed message whose body is in memory, writes the body to the
/// node's body store and returns the message as the node keeps it (the
/// body's handle in place of its bytes, and possibly properties shared with
/// earlier messages); `None` keeps it as it is (the store failed: the
/// caller finds out).
pub type Spill<'s> = dyn FnMut(&crate::message::Message) -> Option<crate::message::Message> + 's;

impl Ctx<'_> {
    /// Marks a queue for a dispatch pass once the request is answered.
    pub fn touch(&mut self, vhost: &VHost, queue: &QueueName) {
        self.dirty.insert((vhost.clone(), queue.clone()));
    }
}

impl Default for Broker {
    fn default() -> Self {
        Self::new()
    }
}

impl Broker {
    /// A fresh broker: vhost `/` with its pre-declared exchanges, no users.
    pub fn new() -> Self {
        let mut vhosts = BTreeMap::new();
        vhosts.insert(VHost::from("/"), VHostState::new());
        Self {
            vhosts,
            users: BTreeMap::new(),
            channels: BTreeMap::new(),
            next_message_id: 1,
            next_uid: 1,
            staged: crate::staged::StagedBodies::new(),
            access: crate::access::Access::default(),
            policies: crate::policy::Policies::default(),
            stats: crate::stats::BrokerStats::default(),
            cluster_id: None,
            log_time_ms: 0,
        }
    }

    /// Applies every request of `batch` in order, appending effects.
    pub fn apply(&mut self, batch: &Batch, effects: &mut Vec<Effect>) {
        self.apply_spilling(batch, effects, None);
    }

    /// [`Broker::apply`], moving the body of every message that reaches a
    /// queue to the node's body store through `spill`: the queues then hold
    /// its handle, not its bytes. The same commands give the same state
    /// and effects with or without it, but for where bodies are.
    pub fn apply_spilling(&mut self, batch: &Batch, effects: &mut Vec<Effect>, mut spill: Option<&mut Spill<'_>>) {
        self.log_time_ms = self.log_time_ms.max(batch.now_ms);
        // A reply for each request, and a delivery for most publishes: room
        // for both up front, not a copy of the effects at each doubling.
        effects.reserve(batch.requests.len().saturating_mul(2));
        for request in &batch.requests {
            let mut ctx = Ctx {
                now_ms: batch.now_ms,
                origin: request.origin,
                effects,
                dirty: BTreeSet::new(),
                dead_letters: VecDeque::new(),
                after_reply: Vec::new(),
                spill: match spill.as_mut() {
                    Some(spill) => Some(&mut **spill),
                    None => None,
                },
            };
            let outcome = self.execute(&mut ctx, &request.command);
            if let (Some(channel), Some(outcome)) = (request.origin, outcome) {
                ctx.effects.push(Effect::Reply { channel, outcome });
            }
            self.settle(&mut ctx);
        }
    }

    /// Runs one command. `None` when it is ignored (a channel-scoped
    /// command without origin).
    fn execute(&mut self, ctx: &mut Ctx<'_>, command: &Command) -> Option<Result<Outcome, CoreError>> {
        if let Some(vhost) = command_vhost(command) {
            if !self.vhosts.contains_key(vhost) {
                return Some(Err(fail::vhost_not_found(vhost)));
            }
        }
        let outcome = match command {
            Command::DeclareExchange {
                vhost,
                name,
                kind,
                passive,
                durable,
                auto_delete,
                internal,
                arguments,
            } => {
                let spec = crate::exchange_ops::ExchangeSpec {
                    kind: *kind,
                    durable: *durable,
                    auto_delete: *auto_delete,
                    internal: *internal,
                    arguments,
                    home: ctx.origin.map(|c| (c.conn.node, c.conn.boot)),
                };
                self.declare_exchange(vhost, name, *passive, spec)
            }
            Command::DeleteExchange { vhost, name, if_unused } => self.delete_exchange(vhost, name, *if_unused),
            Command::BindExchange {
                vhost,
                destination,
                source,
                routing_key,
                arguments,
            } => self.bind_exchange(vhost, destination, source, routing_key, arguments),
            Command::UnbindExchange {
                vhost,
                destination,
                source,
                routing_key,
                arguments,
            } => self.unbind_exchange(vhost, destination, source, routing_key, arguments),
            Command::DeclareQueue {
                vhost,
                name,
                passive,
                durable,
                exclusive,
                auto_delete,
                arguments,
            } => {
                let spec = crate::queue_ops::QueueSpec {
                    durable: *durable,
                    exclusive: *exclusive,
                    auto_delete: *auto_delete,
                    arguments,
                };
                self.declare_queue(ctx, vhost, name, *passive, spec)
            }
            Command::BindQueue {
                vhost,
                queue,
                exchange,
                routing_key,
                arguments,
            } => self.bind_queue(ctx, vhost, queue, exchange, routing_key, arguments),
            Command::UnbindQueue {
                vhost,
                queue,
                exchange,
                routing_key,
                arguments,
            } => self.unbind_queue(ctx, vhost, queue, exchange, routing_key, arguments),
            Command::PurgeQueue { vhost, queue } => self.purge_queue(ctx, vhost, queue),
            Command::DeleteQueue {
                vhost,
                queue,
                if_unused,
                if_empty,
            } => self.delete_queue_command(ctx, vhost, queue, *if_unused, *if_empty),
            Command::Publish {
                vhost,
                mandatory,
                message,
            } => self.publish(ctx, vhost, *mandatory, message),
            Command::StageBody { body, index, part } => {
                let channel = ctx.origin?;
                self.stage_body(channel, *body, *index, part)
            }
            Command::PublishStaged(end) => {
                let channel = ctx.origin?;
                self.publish_staged(ctx, channel, end)
            }
            Command::Commit(tx) => {
                let channel = ctx.origin?;
                self.commit(ctx, channel, tx)
            }
            Command::Qos { prefetch_count, global } => {
                let channel = ctx.origin?;
                self.qos(ctx, channel, *prefetch_count, *global)
            }
            Command::Consume {
                vhost,
                queue,
                consumer_tag,
                no_ack,
                exclusive,
                arguments,
                lookahead,
            } => {
                let channel = ctx.origin?;
                let spec = crate::consume::ConsumeSpec {
                    tag: consumer_tag,
                    no_ack: *no_ack,
                    exclusive: *exclusive,
                    arguments,
                    lookahead: *lookahead,
                };
                self.consume(ctx, channel, vhost, queue, spec)
            }
            Command::Cancel { consumer_tag } => {
                let channel = ctx.origin?;
                self.cancel(ctx, channel, consumer_tag)
            }
            Command::Get { vhost, queue, no_ack } => {
                let channel = ctx.origin?;
                self.get(ctx, channel, vhost, queue, *no_ack)
            }
            Command::Ack { delivery_tag, multiple } => {
                let channel = ctx.origin?;
                self.ack(ctx, channel, *delivery_tag, *multiple)
            }
            Command::Nack {
                delivery_tag,
                multiple,
                requeue,
            } => {
                let channel = ctx.origin?;
                self.nack(ctx, channel, *delivery_tag, *multiple, *requeue)
            }
            Command::Reject { delivery_tag, requeue } => {
                let channel = ctx.origin?;
                self.nack(ctx, channel, *delivery_tag, false, *requeue)
            }
            Command::Recover { requeue: _ } => {
                let channel = ctx.origin?;
                self.recover(ctx, channel)
            }
            Command::CloseChannel => {
                let channel = ctx.origin?;
                self.close_channel(ctx, channel);
                Ok(Outcome::Done)
            }
            Command::Written {
                consumer_tag,
                count,
                bytes,
            } => {
                let channel = ctx.origin?;
                self.written(ctx, channel, consumer_tag, *count, *bytes);
                Ok(Outcome::Done)
            }
            Command::ReturnUnsent { tags, then } => {
                let channel = ctx.origin?;
                self.return_unsent(ctx, channel, tags);
                match then {
                    AfterReturn::Nothing => Ok(Outcome::Done),
                    AfterReturn::Cancel { consumer_tag } => self.cancel(ctx, channel, consumer_tag),
                    AfterReturn::Recover => self.recover(ctx, channel),
                    AfterReturn::CloseChannel => {
                        self.close_channel(ctx, channel);
                        Ok(Outcome::Done)
                    }
                }
            }
            Command::CloseConnection { conn } => {
                self.close_connection(ctx, *conn);
                Ok(Outcome::Done)
            }
            Command::Tick => {
                self.tick(ctx);
                Ok(Outcome::Done)
            }
            Command::NodeStarted { node, boot } => {
                self.node_started(ctx, *node, *boot);
                Ok(Outcome::Done)
            }
            Command::NodeDown { node } => {
                self.node_down(ctx, *node);
                Ok(Outcome::Done)
            }
            Command::DeclareVHost { vhost } => {
                self.vhosts.entry(vhost.clone()).or_default();
                Ok(Outcome::Done)
            }
            Command::DeleteVHost { vhost } => self.delete_vhost(ctx, vhost),
            Command::PutUser {
                name,
                password_hash,
                tags,
            } => {
                let user = User {
                    name: name.clone(),
                    password_hash: password_hash.clone(),
                    tags: tags.clone(),
                };
                self.users.insert(name.clone(), user);
                Ok(Outcome::Done)
            }
            Command::DeleteUser { name } => {
                self.users.remove(name);
                self.access.forget_user(name);
                Ok(Outcome::Done)
            }
            Command::SetPermissions {
                user,
                vhost,
                configure,
                write,
                read,
            } => self.set_permissions(user, vhost, [configure, write, read]),
            Command::ClearPermissions { user, vhost } => {
                self.access.clear(user, vhost);
                Ok(Outcome::Done)
            }
            Command::InitAccess => {
                self.init_access();
                Ok(Outcome::Done)
            }
            Command::SetClusterId { id } => {
                if id.is_empty() || id.len() > MAX_CLUSTER_ID_LEN {
                    return Some(Err(CoreError::PreconditionFailed(format!(
                        "a cluster id of {} bytes (1 to {MAX_CLUSTER_ID_LEN})",
                        id.len()
                    ))));
                }
                self.cluster_id.get_or_insert_with(|| id.clone());
                Ok(Outcome::Done)
            }
            Command::PutPolicy(policy) | Command::SetPolicy(policy) => {
                if !self.vhosts.contains_key(&policy.vhost) {
                    return Some(Err(CoreError::NotFound(format!("no vhost '{}'", policy.vhost))));
                }
                let acts = matches!(command, Command::SetPolicy(_));
                let acted = self.policies.put(policy.clone(), acts);
                // A store-only `PutPolicy` over a store-only policy changes
                // nothing that acts (what it meant when it was written).
                if acts || acted {
                    self.apply_policies(ctx, &policy.vhost);
                }
                Ok(Outcome::Done)
            }
            Command::DeletePolicy { vhost, name } => match self.policies.remove(vhost, name) {
                Some(acted) => {
                    if acted {
                        self.apply_policies(ctx, vhost);
                    }
                    Ok(Outcome::Done)
                }
                None => Err(CoreError::NotFound(format!("no policy '{name}' in vhost '{vhost}'"))),
            },
        };
        Some(outcome)
    }

    /// Follow-up work of a request, after its reply: republish dead
    /// letters and run dispatch on touched queues until nothing is left
    /// (dispatch can expire messages, which can dead-letter them).
    fn settle(&mut self, ctx: &mut Ctx<'_>) {
        let after_reply = std::mem::take(&mut ctx.after_reply);
        ctx.effects.extend(after_reply);
        self.settle_queues(ctx);
    }

    /// Republishes dead letters and runs dispatch on touched queues until
    /// nothing is left.
    pub(crate) fn settle_queues(&mut self, ctx: &mut Ctx<'_>) {
        loop {
            if let Some(dead_letter) = ctx.dead_letters.pop_front() {
                self.republish_dead_letter(ctx, dead_letter);
                continue;
            }
            let Some((vhost, queue)) = ctx.dirty.pop_first() else {
                break;
            };
            self.dispatch(ctx, &vhost, &queue);
        }
    }

    /// A fresh message id.
    pub(crate) fn take_message_id(&mut self) -> MessageId {
        let id = MessageId(self.next_message_id);
        self.next_message_id += 1;
        id
    }

    /// A fresh queue incarnation id or consumer serial.
    pub(crate) fn take_uid(&mut self) -> u64 {
        let uid = self.next_uid;
        self.next_uid += 1;
        uid
    }

    /// The channel `id`, created on first use.
    pub(crate) fn channel_mut(&mut self, id: ChannelId) -> &mut Channel {
        self.channels.entry(id).or_default()
    }

    /// The earliest time (ms since epoch) at which a `Tick` would change
    /// something (a message or queue expires), if any.
    pub fn next_expiry_ms(&self) -> Option<u64> {
        self.vhosts
            .values()
            .flat_map(|v| v.queues.values())
            .flat_map(|q| [q.next_message_expiry_ms(), q.expiry_deadline_ms()])
            .flatten()
            .min()
    }

    pub fn user(&self, name: &UserName) -> Option<&User> {
        self.users.get(name)
    }

    /// Every user, by name.
    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    /// Every vhost and what it holds (read-only: for listings such as the
    /// management API).
    pub fn vhosts(&self) -> &BTreeMap<VHost, crate::vhost::VHostState> {
        &self.vhosts
    }

    /// Every channel that has issued a channel-scoped command and is not
    /// closed: its id, prefetch (per consumer, and global), unacked
    /// deliveries and consumers.
    pub fn channel_summaries(&self) -> impl Iterator<Item = ChannelSummary> + '_ {
        self.channels.iter().map(|(id, channel)| ChannelSummary {
            id: *id,
            prefetch: channel.consumer_prefetch,
            global_prefetch: channel.channel_prefetch,
            unacked: channel.unacked.len() as u64,
            consumers: channel.consumers.len() as u64,
        })
    }

    /// Every consumer, by channel then tag.
    pub fn consumers(&self) -> impl Iterator<Item = (ChannelId, &crate::ids::ConsumerTag, &crate::consumer::Consumer)> {
        self.channels
            .iter()
            .flat_map(|(id, channel)| channel.consumers.iter().map(move |(tag, c)| (*id, tag, c)))
    }

    /// Users' permissions.
    pub fn access(&self) -> &crate::access::Access {
        &self.access
    }

    /// The cluster's id, once one was set ([`Command::SetClusterId`]).
    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster_id.as_deref()
    }

    /// Restores the cluster id a snapshot carried.
    pub fn set_cluster_id(&mut self, id: Option<String>) {
        self.cluster_id = id;
    }

    /// The latest batch time this broker applied (0 before any).
    pub fn log_time_ms(&self) -> u64 {
        self.log_time_ms
    }

    /// Restores the log's time a snapshot carried.
    pub fn set_log_time_ms(&mut self, log_time_ms: u64) {
        self.log_time_ms = log_time_ms;
    }

    /// Message counts beyond the queues' (each queue has its own).
    pub fn stats(&self) -> crate::stats::BrokerStats {
        self.stats
    }

    /// Policies.
    pub fn policies(&self) -> &crate::policy::Policies {
        &self.policies
    }

    /// Restores the policies from a snapshot.
    pub fn set_policies(&mut self, policies: crate::policy::Policies) {
        self.policies = policies;
        self.reapply_policies();
    }

    /// Restores the permissions from a snapshot.
    pub fn set_access(&mut self, access: crate::access::Access) {
        self.access = access;
    }

    fn set_permissions(
        &mut self,
        user: &UserName,
        vhost: &VHost,
        [configure, write, read]: [&String; 3],
    ) -> Result<Outcome, CoreError> {
        use crate::access::{Pattern, Permission};
        if !self.users.contains_key(user) {
            return Err(CoreError::NotFound(format!("no user '{user}'")));
        }
        if !self.vhosts.contains_key(vhost) {
            return Err(CoreError::NotFound(format!("no vhost '{vhost}'")));
        }
        let parse = |source: &String| {
            Pattern::parse(source)
                .map_err(|e| CoreError::PreconditionFailed(format!("invalid regular expression '{source}': {e}")))
        };
        let permission = Permission {
            configure: parse(configure)?,
            write: parse(write)?,
            read: parse(read)?,
        };
        self.access.set(user.clone(), vhost.clone(), permission);
        Ok(Outcome::Done)
    }

    /// Every user gets full permissions on every vhost, once.
    fn init_access(&mut self) {
        if self.access.is_initialized() {
            return;
        }
        for user in self.users.keys() {
            for vhost in self.vhosts.keys() {
                self.access
                    .set(user.clone(), vhost.clone(), crate::access::Permission::full());
            }
        }
        self.access.mark_initialized();
    }

    pub fn has_users(&self) -> bool {
        !self.users.is_empty()
    }

    pub fn has_vhost(&self, vhost: &VHost) -> bool {
        self.vhosts.contains_key(vhost)
    }

    /// Messages held in memory — ready in any queue, or delivered and not
    /// yet acknowledged — and their body bytes (plus bodies still arriving
    /// in parts): what the memory
    /// high-watermark watches (issue 9). O(queues + unacked deliveries).
    pub fn held_backlog(&self) -> (u64, u64) {
        self.held_backlog_with(false)
    }

    /// [`Broker::held_backlog`] for a node that keeps queued bodies in its
    /// body store (`bodies_on_disk`): then only bodies still arriving in
    /// parts count as body bytes in memory.
    pub fn held_backlog_with(&self, bodies_on_disk: bool) -> (u64, u64) {
        let (ready, ready_bytes) = if bodies_on_disk {
            // Paged messages are on disk, their bodies too.
            (self.ready_layout().0, 0)
        } else {
            self.ready_backlog()
        };
        self.channels
            .values()
            .flat_map(|channel| channel.unacked.values())
            .fold(
                (ready, ready_bytes + self.staged_bytes()),
                |(messages, bytes), unacked| (messages + 1, bytes + unacked.entry.message.body.inline_len()),
            )
    }

    /// Consumers on the channels of `node`'s connections (direct reply-to
    /// consumers not counted).
    pub fn consumer_count_of(&self, node: NodeId) -> u64 {
        self.channels
            .iter()
            .filter(|(c, _)| c.conn.node == node)
            .map(|(_, channel)| channel.consumers.len() as u64)
            .sum()
    }

    /// Messages ready in all queues, and their body bytes. O(queues).
    pub fn ready_backlog(&self) -> (u64, u64) {
        self.all_queues().fold((0, 0), |(messages, bytes), queue| {
            (messages + queue.ready.len() as u64, bytes + queue.ready_bytes)
        })
    }

    /// The body of every message the broker holds: ready in a queue, or
    /// delivered and awaiting an ack. (Bodies arriving in parts are in
    /// memory and not among them.)
    pub fn held_bodies(&self) -> impl Iterator<Item = &crate::message::Body> {
        let ready = self.all_queues().flat_map(|queue| queue.ready.in_memory());
        let unacked = self
            .channels
            .values()
            .flat_map(|channel| channel.unacked.values())
            .map(|unacked| &unacked.entry);
        ready.chain(unacked).map(|entry| &entry.message.body)
    }

    /// Every queue of every vhost.
    fn all_queues(&self) -> impl Iterator<Item = &crate::queue::Queue> {
        self.vhosts.values().flat_map(|vhost| vhost.queues.values())
    }

    /// Ready messages held in memory and ready messages in pages, over
    /// every queue (issue 9: the second grows with a backlog, the first
    /// should not). O(queues).
    pub fn ready_layout(&self) -> (u64, u64) {
        self.all_queues().fold((0, 0), |(in_memory, paged), queue| {
            let held = queue.ready.in_memory_len() as u64;
            (in_memory + held, paged + queue.ready.len() as u64 - held)
        })
    }

    /// The pages of every queue's backlog (their bodies are not among
    /// [`Broker::held_bodies`]).
    pub fn held_pages(&self) -> impl Iterator<Item = &crate::ready::Page> {
        self.all_queues().flat_map(|queue| queue.ready.pages())
    }

    /// Every queue, sorted by vhost and name.
    pub fn queue_summaries(&self) -> Vec<QueueSummary> {
        self.vhosts
            .iter()
            .flat_map(|(vhost, state)| {
                state.queues.values().map(move |q| QueueSummary {
                    vhost: vhost.clone(),
                    name: q.name.clone(),
                    durable: q.durable,
                    exclusive: q.exclusive_owner.is_some(),
                    auto_delete: q.auto_delete,
                    messages_ready: q.ready.len() as u64,
                    messages_unacked: q.unacked,
                    consumers: q.consumers.len() as u64,
                })
            })
            .collect()
    }

    /// Checks the state's invariants: every message is ready, unacked or gone
    /// (counts add up between queues and channels), bindings point at live
    /// objects, consumers point at live queues and channels.
    ///
    /// # Errors
    /// A description of the first violated invariant.
    pub fn check_invariants(&self) -> Result<(), String> {
        crate::invariants::check(self)
    }
}

/// The vhost a command names, if any (it must exist).
fn command_vhost(command: &Command) -> Option<&VHost> {
    match command {
        Command::DeclareExchange { vhost, .. }
        | Command::DeleteExchange { vhost, .. }
        | Command::BindExchange { vhost, .. }
        | Command::UnbindExchange { vhost, .. }
        | Command::DeclareQueue { vhost, .. }
        | Command::BindQueue { vhost, .. }
        | Command::UnbindQueue { vhost, .. }
        | Command::PurgeQueue { vhost, .. }
        | Command::DeleteQueue { vhost, .. }
        | Command::Publish { vhost, .. }
        | Command::PublishStaged(crate::staged::StagedPublish { vhost, .. })
        | Command::Commit(crate::tx::Transaction { vhost, .. })
        | Command::Consume { vhost, .. }
        | Command::Get { vhost, .. } => Some(vhost),
        _ => None,
    }
}
