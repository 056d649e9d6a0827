//! The Raft log's write path: `LogStore::append` of a batch of 1, 64 or 512
//! entries of 1 KiB, on `SegmentStore` (one write and one `fdatasync` per
//! append), on `SledStore` (one sled batch, one `flush` — a
//! `sync_file_range` — and, since issue 9, an `fdatasync` of sled's data
//! file), both in a temporary directory on the local disk, and on
//! `MemStore` for comparison.
//!
//! Indexes keep increasing, as in a Raft log; every 64 appends the log is
//! purged behind them (outside the timing) so the data directory stays
//! small. Throughput is in entries.

mod common;

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use warren_store::{LogStore, MemStore, SegmentConfig, SegmentStore, SledConfig, SledStore};

const BATCH_SIZES: [usize; 3] = [1, 64, 512];
const ENTRY_BYTES: usize = 1024;
const PURGE_EVERY: u64 = 64;

/// Times `iters` appends of `n`-entry batches on `store`, starting after its
/// last index; purges outside the timing.
fn timed_appends(store: &dyn LogStore, n: usize, iters: u64) -> Duration {
    let payload = vec![0xa5_u8; ENTRY_BYTES];
    let mut next = match store.last_entry().expect("read last entry") {
        Some((index, _)) => index + 1,
        None => 1,
    };
    let mut elapsed = Duration::ZERO;
    for i in 0..iters {
        // Built outside the timing: in Warren the entries arrive serialized.
        let entries: Vec<(u64, Vec<u8>)> = (0..n as u64).map(|k| (next + k, payload.clone())).collect();
        let start = Instant::now();
        store.append(&entries).expect("append");
        elapsed += start.elapsed();
        next += n as u64;
        if (i + 1) % PURGE_EVERY == 0 {
            store.purge_through(next - 1).expect("purge");
        }
    }
    elapsed
}

fn append(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = SledConfig {
        cache_capacity_bytes: 64 * 1024 * 1024,
        ..SledConfig::default()
    };
    let sled = SledStore::open(&dir.path().join("sled"), &config).expect("open sled store");
    let segments =
        SegmentStore::open(&dir.path().join("segments"), &SegmentConfig::default()).expect("open segment store");
    let mem = MemStore::new();
    let stores: [(&str, &dyn LogStore); 3] = [("segments", &segments), ("sled", &sled), ("mem", &mem)];
    for (name, store) in stores {
        let mut group = c.benchmark_group(format!("store/append_1KiB/{name}"));
        for n in BATCH_SIZES {
            group.throughput(Throughput::Elements(n as u64));
            group.bench_function(BenchmarkId::from_parameter(n), |b| {
                b.iter_custom(|iters| timed_appends(store, n, iters));
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = append
}
criterion_main!(benches);
