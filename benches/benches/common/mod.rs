//! Shared by the micro-benchmarks: one Criterion configuration, small
//! enough that the whole suite runs in a few minutes on a shared 2-core
//! machine; and broker setup helpers.

// Each benchmark binary uses a part of this module.
#![allow(dead_code)]

use std::time::Duration;

use criterion::Criterion;
use warren_core::{Batch, Broker, ChannelId, Command, Effect, Request};

/// The time every benchmark batch is stamped with (apply reads no clock).
pub const NOW_MS: u64 = 1_795_000_000_000;

/// 20 samples, 1 s warm-up, 3 s measurement per benchmark.
pub fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

/// Applies `commands` from `origin` as one batch and panics on any error
/// reply: benchmark setup must not silently measure a broken state.
pub fn apply_ok(broker: &mut Broker, origin: ChannelId, commands: Vec<Command>) {
    let batch = batch(origin, commands);
    let mut effects = Vec::new();
    broker.apply(&batch, &mut effects);
    for effect in effects {
        if let Effect::Reply {
            outcome: Err(error), ..
        } = effect
        {
            panic!("benchmark setup failed: {error}");
        }
    }
}

/// A batch of `commands` from `origin`, stamped at [`NOW_MS`].
pub fn batch(origin: ChannelId, commands: impl IntoIterator<Item = Command>) -> Batch {
    Batch {
        now_ms: NOW_MS,
        requests: commands
            .into_iter()
            .map(|command| Request {
                origin: Some(origin),
                command,
            })
            .collect(),
    }
}
