//! What happened during a run, as the clients and the runner saw it:
//! every publish, confirm, delivery, error, leader sample and fault, with
//! its time since the start. The checks and the report are computed from
//! it after the run ([`crate::check`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use serde::Serialize;

/// One message: who published it, in which of its sessions
/// (connections), and its number in that session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct MessageId {
    pub publisher: u32,
    pub session: u32,
    pub seq: u64,
}

impl MessageId {
    /// The body of this message in run `run`: `chaos:RUN:P:S:SEQ:` and
    /// padding up to `size` bytes.
    pub fn body(&self, run: u64, size: usize) -> Vec<u8> {
        let mut body = format!("chaos:{run}:{}:{}:{}:", self.publisher, self.session, self.seq).into_bytes();
        if body.len() < size {
            body.resize(size, b'.');
        }
        body
    }

    /// Reads a body written by [`MessageId::body`]: `Some(Ok(id))` for a
    /// message of run `run`, `Some(Err(()))` for another run's, `None` for a
    /// body that is not the runner's at all.
    pub fn parse(body: &[u8], run: u64) -> Option<Result<Self, ()>> {
        let text = std::str::from_utf8(body.get(..body.len().min(96))?).ok()?;
        let mut fields = text.strip_prefix("chaos:")?.split(':');
        let body_run: u64 = fields.next()?.parse().ok()?;
        let publisher = fields.next()?.parse().ok()?;
        let session = fields.next()?.parse().ok()?;
        let seq = fields.next()?.parse().ok()?;
        fields.next()?;
        if body_run != run {
            return Some(Err(()));
        }
        Some(Ok(Self {
            publisher,
            session,
            seq,
        }))
    }
}

/// Which kind of client an error came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Publisher,
    Consumer,
}

/// Counts of one second of the run.
#[derive(Clone, Debug, Default)]
pub struct Second {
    pub published: u64,
    pub confirms: u64,
    pub nacks: u64,
    pub deliveries: u64,
    pub errors: u64,
    /// Confirm latencies of the confirms of this second, in ms.
    pub latencies_ms: Vec<f64>,
}

/// When a confirmed message was sent and confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Confirmed {
    pub sent_ms: u64,
    pub confirmed_ms: u64,
}

/// A fault as it was carried out.
#[derive(Clone, Debug, Serialize)]
pub struct FaultRecord {
    pub index: usize,
    pub kind: String,
    pub node: String,
    /// The node was the leader the runner last saw (`None`: no leader known).
    pub was_leader: Option<bool>,
    /// When the runner asked the platform for it.
    pub requested_ms: u64,
    /// When the platform's command returned: the fault is in effect (a
    /// `docker network disconnect` takes a few hundred ms).
    pub injected_ms: u64,
    /// When the fault was undone (the node started, resumed, reconnected);
    /// for a restart, when the restart command returned.
    pub healed_ms: Option<u64>,
    /// When the node answered as ready again.
    pub ready_ms: Option<u64>,
    /// What went wrong carrying it out, if anything.
    pub error: Option<String>,
}

/// A message delivered more than once without the redelivered flag, or
/// out of its publisher's order.
#[derive(Clone, Debug, Serialize)]
pub struct Anomaly {
    pub at_ms: u64,
    pub id: MessageId,
    pub detail: String,
}

/// Anomalies and errors kept at most (the counts go on).
const MAX_KEPT: usize = 100;

#[derive(Debug, Default)]
pub struct Records {
    pub published: u64,
    /// Confirmed ids: when each was sent and when its confirm came (ms
    /// since the start).
    pub confirmed: HashMap<MessageId, Confirmed>,
    pub nacked: u64,
    /// Sent, but the session died before its confirm: outcome unknown.
    pub unknown: u64,
    /// How often each id was delivered.
    pub delivered: HashMap<MessageId, u32>,
    pub foreign: u64,
    pub unflagged_duplicates: u64,
    pub order_violations: u64,
    pub anomalies: Vec<Anomaly>,
    /// Last first-time delivery per (consumer session, publisher, publisher session).
    last_seq: HashMap<(u64, u32, u32), u64>,
    pub errors: BTreeMap<&'static str, u64>,
    pub error_samples: Vec<(u64, String)>,
    pub seconds: Vec<Second>,
    /// (ms, leader) each time the leader seen changed.
    pub leaders: Vec<(u64, Option<String>)>,
    pub faults: Vec<FaultRecord>,
    confirmed_not_delivered: usize,
}

impl Records {
    fn second(&mut self, at_ms: u64) -> &mut Second {
        let index = usize::try_from(at_ms / 1000).unwrap_or(usize::MAX);
        if self.seconds.len() <= index {
            self.seconds.resize(index + 1, Second::default());
        }
        &mut self.seconds[index]
    }

    /// Every confirmed id was delivered at least once.
    pub fn all_confirmed_delivered(&self) -> bool {
        self.confirmed_not_delivered == 0
    }

    fn keep(&mut self, anomaly: Anomaly) {
        if self.anomalies.len() < MAX_KEPT {
            self.anomalies.push(anomaly);
        }
    }
}

/// The shared record of one run.
#[derive(Debug)]
pub struct History {
    start: Instant,
    records: Mutex<Records>,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
            records: Mutex::new(Records::default()),
        }
    }

    /// Milliseconds since the run started.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The records (a panicked task does not hide them).
    pub fn records(&self) -> MutexGuard<'_, Records> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn published(&self) {
        let now = self.now_ms();
        let mut records = self.records();
        records.published += 1;
        records.second(now).published += 1;
    }

    /// `id` was confirmed (ack) `latency_ms` after it was sent.
    pub fn confirmed(&self, id: MessageId, latency_ms: f64) {
        let now = self.now_ms();
        let mut records = self.records();
        // Whole milliseconds: the latency is measured apart, from an Instant.
        let sent_ms = now.saturating_sub(latency_ms as u64);
        let confirmed = Confirmed {
            sent_ms,
            confirmed_ms: now,
        };
        if records.confirmed.insert(id, confirmed).is_none() && !records.delivered.contains_key(&id) {
            records.confirmed_not_delivered += 1;
        }
        let second = records.second(now);
        second.confirms += 1;
        second.latencies_ms.push(latency_ms);
    }

    pub fn nacked(&self) {
        let now = self.now_ms();
        let mut records = self.records();
        records.nacked += 1;
        records.second(now).nacks += 1;
    }

    /// A publish whose confirm never came (its session died).
    pub fn unknown(&self) {
        self.records().unknown += 1;
    }

    /// `id` was delivered to consumer session `consumer`.
    pub fn delivered(&self, consumer: u64, id: MessageId, redelivered: bool) {
        let now = self.now_ms();
        let mut records = self.records();
        records.second(now).deliveries += 1;
        let count = records.delivered.entry(id).or_insert(0);
        *count += 1;
        let first = *count == 1;
        if first && records.confirmed.contains_key(&id) {
            records.confirmed_not_delivered -= 1;
        }
        if !first && !redelivered {
            records.unflagged_duplicates += 1;
            records.keep(Anomaly {
                at_ms: now,
                id,
                detail: "delivered again without the redelivered flag".to_owned(),
            });
        }
        if redelivered {
            return;
        }
        let key = (consumer, id.publisher, id.session);
        let last = records.last_seq.insert(key, id.seq);
        if let Some(last) = last.filter(|last| *last >= id.seq) {
            records.order_violations += 1;
            records.keep(Anomaly {
                at_ms: now,
                id,
                detail: format!(
                    "delivered after seq {last} of the same publisher session on consumer session {consumer} \
                     (neither redelivered)"
                ),
            });
        }
    }

    /// A delivery of another run's message (acked and otherwise ignored).
    pub fn foreign(&self) {
        self.records().foreign += 1;
    }

    /// A client session failed with `error`.
    pub fn error(&self, side: Side, error: String) {
        let now = self.now_ms();
        let mut records = self.records();
        let key = match side {
            Side::Publisher => "publisher",
            Side::Consumer => "consumer",
        };
        *records.errors.entry(key).or_insert(0) += 1;
        records.second(now).errors += 1;
        if records.error_samples.len() < MAX_KEPT {
            records.error_samples.push((now, error));
        }
    }

    /// The leader seen now (recorded when it changed).
    pub fn leader(&self, leader: Option<String>) {
        let now = self.now_ms();
        let mut records = self.records();
        if records.leaders.last().map(|(_, seen)| seen) != Some(&leader) {
            records.leaders.push((now, leader));
        }
    }

    /// The leader last seen.
    pub fn current_leader(&self) -> Option<String> {
        self.records().leaders.last().and_then(|(_, leader)| leader.clone())
    }

    /// Starts the record of a fault; returns its index.
    pub fn fault_injected(&self, kind: &str, node: &str, was_leader: Option<bool>) -> usize {
        let now = self.now_ms();
        let mut records = self.records();
        let index = records.faults.len();
        records.faults.push(FaultRecord {
            index,
            kind: kind.to_owned(),
            node: node.to_owned(),
            was_leader,
            requested_ms: now,
            injected_ms: now,
            healed_ms: None,
            ready_ms: None,
            error: None,
        });
        index
    }

    /// The platform carried the fault out.
    pub fn fault_in_effect(&self, index: usize) {
        let now = self.now_ms();
        if let Some(fault) = self.records().faults.get_mut(index) {
            fault.injected_ms = now;
        }
    }

    pub fn fault_healed(&self, index: usize) {
        let now = self.now_ms();
        if let Some(fault) = self.records().faults.get_mut(index) {
            fault.healed_ms = Some(now);
        }
    }

    pub fn fault_ready(&self, index: usize) {
        let now = self.now_ms();
        if let Some(fault) = self.records().faults.get_mut(index) {
            fault.ready_ms = Some(now);
        }
    }

    pub fn fault_failed(&self, index: usize, error: String) {
        if let Some(fault) = self.records().faults.get_mut(index) {
            fault.error.get_or_insert(error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{History, MessageId};

    fn id(publisher: u32, session: u32, seq: u64) -> MessageId {
        MessageId {
            publisher,
            session,
            seq,
        }
    }

    #[test]
    fn a_body_carries_its_id_and_run_and_is_padded_to_size() {
        let message = id(3, 0, u64::MAX);
        let body = message.body(77, 1024);
        assert_eq!(body.len(), 1024);
        assert_eq!(MessageId::parse(&body, 77), Some(Ok(message)));
        assert_eq!(MessageId::parse(&body, 78), Some(Err(())), "another run's message");
        let short = id(0, 0, 0).body(1, 0);
        assert_eq!(MessageId::parse(&short, 1), Some(Ok(id(0, 0, 0))), "no padding needed");
        for junk in [
            &b""[..],
            b"chaos:",
            b"chaos:1:2:3",
            "chaos:1:ü:3:4:".as_bytes(),
            b"hello",
        ] {
            assert_eq!(MessageId::parse(junk, 1), None, "{junk:?}");
        }
    }

    #[test]
    fn a_second_delivery_needs_the_redelivered_flag() {
        let history = History::new();
        history.confirmed(id(1, 0, 1), 1.0);
        history.delivered(1, id(1, 0, 1), false);
        assert!(history.records().all_confirmed_delivered());
        history.delivered(2, id(1, 0, 1), true);
        assert_eq!(history.records().unflagged_duplicates, 0);
        history.delivered(2, id(1, 0, 1), false);
        assert_eq!(history.records().unflagged_duplicates, 1);
    }

    #[test]
    fn order_is_checked_per_consumer_session_and_publisher_session() {
        let history = History::new();
        history.delivered(1, id(1, 0, 5), false);
        history.delivered(1, id(1, 1, 2), false); // another publisher session
        history.delivered(2, id(1, 0, 3), false); // another consumer session
        history.delivered(1, id(1, 0, 4), true); // redelivered: no order promised
        assert_eq!(history.records().order_violations, 0);
        history.delivered(1, id(1, 0, 4), false);
        assert_eq!(history.records().order_violations, 1);
    }

    #[test]
    fn a_confirm_after_its_delivery_still_counts_as_delivered() {
        let history = History::new();
        history.delivered(1, id(2, 0, 0), false);
        history.confirmed(id(2, 0, 0), 3.0);
        history.confirmed(id(2, 0, 1), 3.0);
        assert!(!history.records().all_confirmed_delivered());
        history.delivered(1, id(2, 0, 1), false);
        assert!(history.records().all_confirmed_delivered());
    }
}
