//! `warren-bench`: the load tool's pure parts (message stamps, loss and
//! duplicate accounting, latency percentiles), unit-tested here and used by
//! the `warren-perf` binary.

use std::collections::HashMap;

/// Bytes at the front of every body: producer id (u16), sequence (48 bits),
/// send time (u64, µs since the tool started), all big-endian. Sixteen bytes,
/// so the 16-byte case of the comparison carries a full stamp.
pub const STAMP_LEN: usize = 16;

/// The most producers one run can stamp apart.
pub const MAX_PRODUCERS: u32 = 1 << 16;

/// Writes the stamp into the front of `body` (which must hold `STAMP_LEN`).
/// The producer id keeps its low 16 bits and the sequence its low 48.
pub fn stamp(body: &mut [u8], producer: u32, seq: u64, sent_us: u64) {
    body[0..2].copy_from_slice(&(producer as u16).to_be_bytes());
    body[2..8].copy_from_slice(&seq.to_be_bytes()[2..8]);
    body[8..16].copy_from_slice(&sent_us.to_be_bytes());
}

/// Reads a stamp; `None` if the body is too short.
pub fn read_stamp(body: &[u8]) -> Option<(u32, u64, u64)> {
    let producer = u16::from_be_bytes(body.get(0..2)?.try_into().ok()?);
    let mut seq = [0u8; 8];
    seq[2..8].copy_from_slice(body.get(2..8)?);
    let sent = u64::from_be_bytes(body.get(8..16)?.try_into().ok()?);
    Some((u32::from(producer), u64::from_be_bytes(seq), sent))
}

/// The URIs one client cycles through: it starts at its own (client index
/// modulo the list, so clients spread over the nodes) and moves to the next
/// after each connection error.
#[derive(Clone, Debug)]
pub struct UriRing {
    uris: Vec<String>,
    at: usize,
}

impl UriRing {
    /// # Panics
    /// `uris` is empty.
    pub fn new(uris: Vec<String>, client: usize) -> Self {
        assert!(!uris.is_empty(), "at least one URI");
        let at = client % uris.len();
        Self { uris, at }
    }

    pub fn current(&self) -> &str {
        &self.uris[self.at]
    }

    /// Moves to the next URI (wrapping) and returns it.
    pub fn advance(&mut self) -> &str {
        self.at = (self.at + 1) % self.uris.len();
        self.current()
    }
}

/// User plus system CPU time of this process (all threads), µs, from
/// `/proc/self/stat`; `None` off Linux.
pub fn process_cpu_us() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_proc_stat_cpu_ticks(&stat).map(|ticks| ticks * (1_000_000 / CLOCK_TICKS_PER_SEC))
}

/// `USER_HZ`: the unit of `/proc/*/stat` times; 100 on every Linux ABI.
pub const CLOCK_TICKS_PER_SEC: u64 = 100;

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line, in clock
/// ticks. The command name (field 2) may hold spaces and parentheses, so
/// fields are counted from the last `)`.
pub fn parse_proc_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state is field 3, so utime (14) is the 12th here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU µs per message of a run: each message is published once and
/// consumed once, so this divides by the larger of the two counts (a
/// producer-only or consumer-only run divides by its own count).
pub fn cpu_us_per_msg(cpu_us: u64, published: u64, consumed: u64) -> f64 {
    let n = published.max(consumed);
    if n == 0 {
        0.0
    } else {
        cpu_us as f64 / n as f64
    }
}

/// Which (producer, seq) pairs were confirmed and which were consumed.
#[derive(Default)]
pub struct Ledger {
    confirmed: HashMap<u32, Vec<bool>>,
    consumed: HashMap<u32, Vec<u32>>,
    /// Distinct messages consumed so far.
    consumed_unique: u64,
    /// Confirmed messages not consumed yet.
    confirmed_pending: u64,
}

/// Loss accounting at the end of a run.
#[derive(Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Accounting {
    pub confirmed: u64,
    pub consumed_unique: u64,
    /// Confirmed but never consumed.
    pub lost: u64,
    /// Deliveries beyond the first of a message.
    pub duplicates: u64,
}

fn mark<T: Clone + Default>(v: &mut Vec<T>, seq: u64) -> &mut T {
    let i = usize::try_from(seq).unwrap_or(usize::MAX);
    if v.len() <= i {
        v.resize(i + 1, T::default());
    }
    &mut v[i]
}

/// The entry for (`producer`, `seq`), or the default if never marked.
fn at<T: Copy + Default>(map: &HashMap<u32, Vec<T>>, producer: u32, seq: u64) -> T {
    map.get(&producer)
        .and_then(|v| v.get(usize::try_from(seq).ok()?))
        .copied()
        .unwrap_or_default()
}

impl Ledger {
    pub fn confirmed(&mut self, producer: u32, seq: u64) {
        let confirmed = mark(self.confirmed.entry(producer).or_default(), seq);
        if *confirmed {
            return;
        }
        *confirmed = true;
        if at(&self.consumed, producer, seq) == 0 {
            self.confirmed_pending += 1;
        }
    }

    pub fn consumed(&mut self, producer: u32, seq: u64) {
        let count = mark(self.consumed.entry(producer).or_default(), seq);
        *count += 1;
        if *count == 1 {
            self.consumed_unique += 1;
            if at(&self.confirmed, producer, seq) {
                self.confirmed_pending -= 1;
            }
        }
    }

    /// Distinct messages consumed (duplicates count once): what a drain
    /// waits for. Counting deliveries instead let a run with redeliveries
    /// stop draining early and report the rest as lost.
    pub fn consumed_unique(&self) -> u64 {
        self.consumed_unique
    }

    /// Confirmed messages not consumed yet: 0 once a confirmed run drained.
    pub fn confirmed_pending(&self) -> u64 {
        self.confirmed_pending
    }

    pub fn account(&self) -> Accounting {
        let mut a = Accounting::default();
        for (producer, seqs) in &self.consumed {
            for (seq, &n) in seqs.iter().enumerate() {
                if n > 0 {
                    a.consumed_unique += 1;
                    a.duplicates += u64::from(n - 1);
                }
                let _ = (producer, seq);
            }
        }
        for (producer, seqs) in &self.confirmed {
            let consumed = self.consumed.get(producer);
            for (seq, &ok) in seqs.iter().enumerate() {
                if !ok {
                    continue;
                }
                a.confirmed += 1;
                if consumed.and_then(|c| c.get(seq)).copied().unwrap_or(0) == 0 {
                    a.lost += 1;
                }
            }
        }
        a
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p95: u64,
    pub p99: u64,
    pub max: u64,
}

/// Nearest-rank percentiles of `samples` (sorted in place).
pub fn percentiles(samples: &mut [u64]) -> Percentiles {
    if samples.is_empty() {
        return Percentiles::default();
    }
    samples.sort_unstable();
    let rank = |p: f64| {
        let n = samples.len();
        let idx = ((p / 100.0) * n as f64).ceil() as usize;
        samples[idx.clamp(1, n) - 1]
    };
    Percentiles {
        p50: rank(50.0),
        p95: rank(95.0),
        p99: rank(99.0),
        max: samples[samples.len() - 1],
    }
}

/// The longest time between two consecutive events (publisher confirms):
/// under steady load with a leader killed, the time from the kill to the
/// first confirm after it, give or take one confirm interval.
#[derive(Clone, Copy, Debug, Default)]
pub struct LongestGap {
    last: Option<std::time::Instant>,
    longest: Option<std::time::Duration>,
}

impl LongestGap {
    pub fn observe(&mut self, at: std::time::Instant) {
        if let Some(last) = self.last {
            let gap = at.saturating_duration_since(last);
            self.longest = Some(self.longest.map_or(gap, |longest| longest.max(gap)));
        }
        self.last = Some(self.last.map_or(at, |last| last.max(at)));
    }

    /// `None` until two events were seen.
    pub fn longest(&self) -> Option<std::time::Duration> {
        self.longest
    }
}

/// The `basic.consume` arguments of a stream consumer reading from
/// `offset` (`first`, `last`, `next`, or an integer), or none.
pub fn stream_offset_arguments(offset: Option<&str>) -> lapin::types::FieldTable {
    let mut arguments = lapin::types::FieldTable::default();
    if let Some(offset) = offset {
        let value = match offset.parse::<i64>() {
            Ok(n) => lapin::types::AMQPValue::LongLongInt(n),
            Err(_) => lapin::types::AMQPValue::LongString(offset.into()),
        };
        arguments.insert("x-stream-offset".into(), value);
    }
    arguments
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ledger_counts_distinct_consumes_and_confirmed_ones_still_pending() {
        let mut ledger = Ledger::default();
        ledger.confirmed(1, 0);
        ledger.confirmed(1, 1);
        ledger.consumed(1, 2); // consumed before (or without) its confirm
        assert_eq!((ledger.consumed_unique(), ledger.confirmed_pending()), (1, 2));
        ledger.consumed(1, 0);
        ledger.consumed(1, 0); // a redelivery: counts once
        assert_eq!((ledger.consumed_unique(), ledger.confirmed_pending()), (2, 1));
        ledger.confirmed(1, 2); // its confirm came after the delivery
        ledger.confirmed(1, 0); // a repeated confirm changes nothing
        assert_eq!(ledger.confirmed_pending(), 1, "only seq 1 is still missing");
        ledger.consumed(1, 1);
        assert_eq!((ledger.consumed_unique(), ledger.confirmed_pending()), (3, 0));
        let a = ledger.account();
        assert_eq!((a.consumed_unique, a.duplicates, a.lost), (3, 1, 0));
    }

    #[test]
    fn a_stamp_reads_back() {
        let mut body = vec![0u8; 64];
        stamp(&mut body, 3, 99, 123_456);
        assert_eq!(read_stamp(&body), Some((3, 99, 123_456)));
        assert_eq!(read_stamp(&body[..10]), None);
        let mut exact = vec![0u8; STAMP_LEN];
        stamp(&mut exact, 65_535, (1 << 48) - 1, u64::MAX);
        assert_eq!(read_stamp(&exact), Some((65_535, (1 << 48) - 1, u64::MAX)));
    }

    #[test]
    fn uri_rings_spread_clients_and_rotate_on_errors() {
        let uris: Vec<String> = ["a", "b", "c"].iter().map(|s| (*s).to_owned()).collect();
        let starts: Vec<String> = (0..4)
            .map(|client| UriRing::new(uris.clone(), client).current().to_owned())
            .collect();
        assert_eq!(starts, ["a", "b", "c", "a"]);
        let mut ring = UriRing::new(uris, 1);
        assert_eq!(ring.advance(), "c");
        assert_eq!(ring.advance(), "a");
        assert_eq!(ring.advance(), "b");
        let mut single = UriRing::new(vec!["only".to_owned()], 5);
        assert_eq!(single.advance(), "only");
    }

    #[test]
    fn proc_stat_cpu_is_utime_plus_stime() {
        let line = "4242 (warren perf) (x)) S 1 4242 4242 0 -1 4194560 1200 0 0 0 250 75 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_proc_stat_cpu_ticks(line), Some(325));
        assert_eq!(parse_proc_stat_cpu_ticks("1 (short) S 1 2"), None);
        assert!(process_cpu_us().is_some());
    }

    #[test]
    fn cpu_per_message_divides_by_messages_moved() {
        assert!((cpu_us_per_msg(1_000, 100, 100) - 10.0).abs() < 1e-9);
        assert!((cpu_us_per_msg(1_000, 0, 50) - 20.0).abs() < 1e-9);
        assert!((cpu_us_per_msg(1_000, 0, 0)).abs() < 1e-9);
    }

    #[test]
    fn the_ledger_counts_lost_and_duplicated_messages() {
        let mut ledger = Ledger::default();
        for seq in 0..5 {
            ledger.confirmed(1, seq);
        }
        ledger.consumed(1, 0);
        ledger.consumed(1, 1);
        ledger.consumed(1, 1);
        ledger.consumed(1, 4);
        ledger.consumed(2, 0); // consumed but never confirmed: neither lost nor duplicate
        let a = ledger.account();
        assert_eq!(
            a,
            Accounting {
                confirmed: 5,
                consumed_unique: 4,
                lost: 2,
                duplicates: 1
            }
        );
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut samples: Vec<u64> = (1..=100).rev().collect();
        let p = percentiles(&mut samples);
        assert_eq!(
            p,
            Percentiles {
                p50: 50,
                p95: 95,
                p99: 99,
                max: 100
            }
        );
        assert_eq!(percentiles(&mut []), Percentiles::default());
        assert_eq!(percentiles(&mut [7]).p99, 7);
    }

    #[test]
    fn the_longest_gap_is_the_largest_distance_between_consecutive_events() {
        let base = std::time::Instant::now();
        let at = |ms: u64| base + std::time::Duration::from_millis(ms);
        let mut gap = LongestGap::default();
        assert_eq!(gap.longest(), None);
        for ms in [0, 10, 20, 1520, 1530, 1600] {
            gap.observe(at(ms));
        }
        assert_eq!(gap.longest(), Some(std::time::Duration::from_millis(1500)));
        // An event reported late (from another producer) does not shrink it
        // or count as a gap.
        gap.observe(at(1590));
        gap.observe(at(1610));
        assert_eq!(gap.longest(), Some(std::time::Duration::from_millis(1500)));
    }
}
