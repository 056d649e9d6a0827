//! `warren-bench`: the load tool's pure parts (message stamps, loss and
//! duplicate accounting, latency percentiles), unit-tested here and used by
//! the `warren-perf` binary.

use std::collections::HashMap;

/// Bytes at the front of every body: producer id (u32), sequence (u64),
/// send time (u64, µs since the tool started), all big-endian.
pub const STAMP_LEN: usize = 20;

/// Writes the stamp into the front of `body` (which must hold `STAMP_LEN`).
pub fn stamp(body: &mut [u8], producer: u32, seq: u64, sent_us: u64) {
    body[0..4].copy_from_slice(&producer.to_be_bytes());
    body[4..12].copy_from_slice(&seq.to_be_bytes());
    body[12..20].copy_from_slice(&sent_us.to_be_bytes());
}

/// Reads a stamp; `None` if the body is too short.
pub fn read_stamp(body: &[u8]) -> Option<(u32, u64, u64)> {
    let producer = u32::from_be_bytes(body.get(0..4)?.try_into().ok()?);
    let seq = u64::from_be_bytes(body.get(4..12)?.try_into().ok()?);
    let sent = u64::from_be_bytes(body.get(12..20)?.try_into().ok()?);
    Some((producer, seq, sent))
}

/// Which (producer, seq) pairs were confirmed and which were consumed.
#[derive(Default)]
pub struct Ledger {
    confirmed: HashMap<u32, Vec<bool>>,
    consumed: HashMap<u32, Vec<u32>>,
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

impl Ledger {
    pub fn confirmed(&mut self, producer: u32, seq: u64) {
        *mark(self.confirmed.entry(producer).or_default(), seq) = true;
    }

    pub fn consumed(&mut self, producer: u32, seq: u64) {
        *mark(self.consumed.entry(producer).or_default(), seq) += 1;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_reads_back() {
        let mut body = vec![0u8; 64];
        stamp(&mut body, 3, 99, 123_456);
        assert_eq!(read_stamp(&body), Some((3, 99, 123_456)));
        assert_eq!(read_stamp(&body[..10]), None);
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
}
