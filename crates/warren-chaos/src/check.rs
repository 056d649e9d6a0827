//! The verdict on a run: what was lost, duplicated or reordered, how long
//! each fault kept publishers from a confirm, and the per-second series
//! the report draws.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::history::{Anomaly, FaultRecord, MessageId, Records};

/// One check and whether it held.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub passed: bool,
    pub detail: String,
}

/// A fault and what it did to the confirms.
#[derive(Clone, Debug, Serialize)]
pub struct FaultOutcome {
    #[serde(flatten)]
    pub record: FaultRecord,
    /// From the injection to the first confirm of a message sent after
    /// it (a confirm of a message sent before may still arrive after the
    /// fault: it tells nothing about the cluster's state after it).
    pub gap_to_next_confirm_ms: Option<u64>,
    /// The longest time without a confirm from the injection to the next
    /// fault (or the end of publishing).
    pub longest_gap_ms: Option<u64>,
    /// A confirm came after the node was ready again.
    pub progress_after_recovery: bool,
}

/// One second of the run.
#[derive(Clone, Debug, Serialize)]
pub struct SecondOut {
    pub t: u64,
    pub published: u64,
    pub confirms: u64,
    pub nacks: u64,
    pub deliveries: u64,
    pub errors: u64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub latency_max_ms: Option<f64>,
}

/// Everything a run measured and concluded.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    #[serde(flatten)]
    pub facts: RunFacts,
    pub published: u64,
    pub confirmed: usize,
    pub nacked: u64,
    /// Sent, but the publisher's session died before the confirm.
    pub unknown: u64,
    pub delivered_unique: usize,
    pub deliveries: u64,
    /// Deliveries beyond the first of each message.
    pub redeliveries: u64,
    pub unflagged_duplicates: u64,
    pub order_violations: u64,
    /// Delivered messages whose confirm never came (allowed).
    pub delivered_unconfirmed: usize,
    /// Other runs' messages delivered (acked and ignored).
    pub foreign: u64,
    pub lost: usize,
    pub lost_sample: Vec<MessageId>,
    pub errors: BTreeMap<String, u64>,
    pub error_samples: Vec<(u64, String)>,
    pub anomalies: Vec<Anomaly>,
    pub faults: Vec<FaultOutcome>,
    /// Median of `gap_to_next_confirm_ms` over the kills of the leader.
    pub leader_kill_gap_median_ms: Option<u64>,
    /// Median of `gap_to_next_confirm_ms` over all faults.
    pub fault_gap_median_ms: Option<u64>,
    /// The longest time without a confirm while publishers ran, and where.
    pub longest_gap_ms: u64,
    pub longest_gap_from_ms: u64,
    pub leaders: Vec<(u64, Option<String>)>,
    pub series: Vec<SecondOut>,
    pub checks: Vec<Check>,
}

impl Summary {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|check| check.passed)
    }
}

/// The run's facts that are not in the records.
#[derive(Clone, Debug, Serialize)]
pub struct RunFacts {
    pub seed: u64,
    pub run: u64,
    pub platform: String,
    pub schedule: String,
    pub nodes: Vec<String>,
    pub duration_ms: u64,
    pub publishing_started_ms: u64,
    /// When publishing stopped (ms since the start).
    pub publishing_ended_ms: u64,
    /// Out-of-order first deliveries are reported, not failed.
    pub tolerate_reordering: bool,
}

/// Lost ids listed at most.
const LOST_SAMPLE: usize = 20;

/// Judges the run recorded in `records`.
pub fn summarise(records: &Records, facts: RunFacts) -> Summary {
    let mut lost: Vec<MessageId> = records
        .confirmed
        .keys()
        .filter(|id| !records.delivered.contains_key(id))
        .copied()
        .collect();
    lost.sort_unstable();
    let deliveries: u64 = records.delivered.values().map(|count| u64::from(*count)).sum();
    let delivered_unconfirmed = records
        .delivered
        .keys()
        .filter(|id| !records.confirmed.contains_key(id))
        .count();
    let mut confirm_times: Vec<u64> = records.confirmed.values().map(|c| c.confirmed_ms).collect();
    confirm_times.sort_unstable();
    let by_sent = FirstConfirms::new(records.confirmed.values().map(|c| (c.sent_ms, c.confirmed_ms)));

    let faults: Vec<FaultOutcome> = records
        .faults
        .iter()
        .enumerate()
        .map(|(i, fault)| {
            let window_end = records
                .faults
                .get(i + 1)
                .map_or(facts.publishing_ended_ms, |next| next.injected_ms);
            outcome(fault, &confirm_times, &by_sent, window_end)
        })
        .collect();
    let leader_kills: Vec<u64> = faults
        .iter()
        .filter(|f| f.record.kind == "kill" && f.record.was_leader == Some(true))
        .filter_map(|f| f.gap_to_next_confirm_ms)
        .collect();
    let all_gaps: Vec<u64> = faults.iter().filter_map(|f| f.gap_to_next_confirm_ms).collect();
    let (longest_gap_ms, longest_gap_from_ms) =
        longest_gap(&confirm_times, facts.publishing_started_ms, facts.publishing_ended_ms);

    let mut checks = vec![
        Check {
            name: "the workload ran",
            passed: !confirm_times.is_empty(),
            detail: format!("{} messages confirmed", confirm_times.len()),
        },
        Check {
            name: "no confirmed message lost",
            passed: lost.is_empty(),
            detail: if lost.is_empty() {
                format!("all {} confirmed messages were delivered", confirm_times.len())
            } else {
                format!(
                    "{} confirmed messages never delivered, e.g. {:?}",
                    lost.len(),
                    lost.first()
                )
            },
        },
        Check {
            name: "duplicates only as redeliveries",
            passed: records.unflagged_duplicates == 0,
            detail: format!(
                "{} redeliveries, {} deliveries again without the redelivered flag",
                deliveries.saturating_sub(records.delivered.len() as u64),
                records.unflagged_duplicates
            ),
        },
        Check {
            name: "per-publisher order on each consumer",
            passed: records.order_violations == 0 || facts.tolerate_reordering,
            detail: format!(
                "{} first deliveries out of publish order{}",
                records.order_violations,
                if facts.tolerate_reordering && records.order_violations > 0 {
                    " (tolerated: --tolerate-reordering)"
                } else {
                    ""
                }
            ),
        },
    ];
    let unrecovered: Vec<String> = faults
        .iter()
        .filter(|f| f.record.error.is_some() || f.record.ready_ms.is_none())
        .map(|f| {
            format!(
                "#{} {} {}: {}",
                f.record.index,
                f.record.kind,
                f.record.node,
                f.record.error.as_deref().unwrap_or("never ready again")
            )
        })
        .collect();
    checks.push(Check {
        name: "every fault carried out and recovered from",
        passed: unrecovered.is_empty(),
        detail: if unrecovered.is_empty() {
            format!("{} faults", faults.len())
        } else {
            unrecovered.join("; ")
        },
    });
    let stalled: Vec<String> = faults
        .iter()
        .filter(|f| !f.progress_after_recovery)
        .map(|f| format!("#{} {} {}", f.record.index, f.record.kind, f.record.node))
        .collect();
    checks.push(Check {
        name: "confirms after every recovery",
        passed: stalled.is_empty(),
        detail: if stalled.is_empty() {
            "every fault was followed by a confirm once its node was ready".to_owned()
        } else {
            format!("no confirm after the recovery from {}", stalled.join(", "))
        },
    });

    Summary {
        facts,
        published: records.published,
        confirmed: confirm_times.len(),
        nacked: records.nacked,
        unknown: records.unknown,
        delivered_unique: records.delivered.len(),
        deliveries,
        redeliveries: deliveries.saturating_sub(records.delivered.len() as u64),
        unflagged_duplicates: records.unflagged_duplicates,
        order_violations: records.order_violations,
        delivered_unconfirmed,
        foreign: records.foreign,
        lost: lost.len(),
        lost_sample: lost.into_iter().take(LOST_SAMPLE).collect(),
        errors: records.errors.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        error_samples: records.error_samples.clone(),
        anomalies: records.anomalies.clone(),
        faults,
        leader_kill_gap_median_ms: median(leader_kills),
        fault_gap_median_ms: median(all_gaps),
        longest_gap_ms,
        longest_gap_from_ms,
        leaders: records.leaders.clone(),
        series: records
            .seconds
            .iter()
            .zip(0u64..)
            .map(|(s, t)| second_out(t, s))
            .collect(),
        checks,
    }
}

/// For any time `t`, the first confirm of a message sent at or after `t`.
pub struct FirstConfirms {
    /// Send times, sorted.
    sent: Vec<u64>,
    /// `earliest[i]`: the earliest confirm among `sent[i..]`.
    earliest: Vec<u64>,
}

impl FirstConfirms {
    pub fn new(pairs: impl Iterator<Item = (u64, u64)>) -> Self {
        let mut pairs: Vec<(u64, u64)> = pairs.collect();
        pairs.sort_unstable();
        let mut earliest = vec![0; pairs.len()];
        let mut min = u64::MAX;
        for (i, (_, confirmed)) in pairs.iter().enumerate().rev() {
            min = min.min(*confirmed);
            earliest[i] = min;
        }
        Self {
            sent: pairs.into_iter().map(|(sent, _)| sent).collect(),
            earliest,
        }
    }

    /// The first confirm of a message sent at or after `t`.
    pub fn after(&self, t: u64) -> Option<u64> {
        self.earliest.get(self.sent.partition_point(|sent| *sent < t)).copied()
    }
}

fn outcome(fault: &FaultRecord, confirm_times: &[u64], by_sent: &FirstConfirms, window_end: u64) -> FaultOutcome {
    let next = by_sent.after(fault.injected_ms);
    let recovered = fault.ready_ms.or(fault.healed_ms);
    let progress_after_recovery = recovered.is_some_and(|r| by_sent.after(r).is_some_and(|c| c <= window_end.max(r)));
    let longest = longest_gap(confirm_times, fault.injected_ms, window_end.max(fault.injected_ms)).0;
    FaultOutcome {
        record: fault.clone(),
        gap_to_next_confirm_ms: next.map(|c| c.saturating_sub(fault.injected_ms)),
        longest_gap_ms: Some(longest),
        progress_after_recovery,
    }
}

/// The longest stretch of `[from, to]` without a confirm (confirm times
/// sorted), and where it starts.
pub fn longest_gap(confirm_times: &[u64], from: u64, to: u64) -> (u64, u64) {
    let start = confirm_times.partition_point(|c| *c < from);
    let end = confirm_times.partition_point(|c| *c <= to);
    let mut previous = from;
    let mut best = (0, from);
    for &time in &confirm_times[start..end] {
        if time - previous > best.0 {
            best = (time - previous, previous);
        }
        previous = time;
    }
    if to.saturating_sub(previous) > best.0 {
        best = (to - previous, previous);
    }
    best
}

fn median(mut values: Vec<u64>) -> Option<u64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    Some(values[values.len() / 2])
}

/// The `q` quantile of sorted `values` (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn second_out(t: u64, second: &crate::history::Second) -> SecondOut {
    let mut latencies = second.latencies_ms.clone();
    latencies.sort_unstable_by(f64::total_cmp);
    SecondOut {
        t,
        published: second.published,
        confirms: second.confirms,
        nacks: second.nacks,
        deliveries: second.deliveries,
        errors: second.errors,
        latency_p50_ms: quantile(&latencies, 0.5),
        latency_p99_ms: quantile(&latencies, 0.99),
        latency_max_ms: latencies.last().copied(),
    }
}

#[cfg(test)]
mod tests {
    use super::{longest_gap, median, quantile, FirstConfirms};

    #[test]
    fn the_first_confirm_after_a_time_ignores_messages_sent_before_it() {
        // (sent, confirmed): the one sent at 90 is confirmed at 150, after
        // the fault at 100, but was sent before it.
        let confirms = FirstConfirms::new([(90, 150), (120, 400), (130, 300), (500, 510)].into_iter());
        assert_eq!(confirms.after(100), Some(300));
        assert_eq!(confirms.after(0), Some(150));
        assert_eq!(confirms.after(301), Some(510));
        assert_eq!(confirms.after(501), None);
        assert_eq!(FirstConfirms::new(std::iter::empty()).after(0), None);
    }

    #[test]
    fn the_longest_gap_counts_the_edges_of_the_window() {
        assert_eq!(longest_gap(&[], 100, 400), (300, 100), "no confirm at all");
        assert_eq!(longest_gap(&[150, 200, 900], 100, 1000), (700, 200));
        assert_eq!(longest_gap(&[50, 150, 160], 100, 1000), (840, 160), "the tail");
        assert_eq!(longest_gap(&[500], 0, 0), (0, 0), "an empty window");
    }

    #[test]
    fn median_and_quantiles_of_small_sets() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![5]), Some(5));
        assert_eq!(median(vec![9, 1, 5]), Some(5));
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), Some(2.0));
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.99), Some(4.0));
    }
}
