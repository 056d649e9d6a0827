//! openraft's own conformance suite against our log store and state
//! machine, on every storage engine.

#![allow(clippy::result_large_err)] // openraft's StorageError, as its Suite returns it

use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use warren_cluster::{EffectSink, RaftLogStore, StateMachine, TypeConfig};
use warren_core::Effect;
use warren_store::{LogStore, MemStore, SegmentConfig, SegmentStore, SledConfig, SledStore};

struct DropEffects;

impl EffectSink for DropEffects {
    fn emit(&self, _effects: Vec<Effect>) {}
}

async fn build_on(store: Arc<dyn LogStore>) -> Result<(RaftLogStore, StateMachine), StorageError<u64>> {
    let log = RaftLogStore::open(store.clone()).await?;
    let state_machine = StateMachine::open(1, store, Arc::new(DropEffects)).await?;
    Ok((log, state_machine))
}

struct OnMemStore;

impl StoreBuilder<TypeConfig, RaftLogStore, StateMachine, ()> for OnMemStore {
    async fn build(&self) -> Result<((), RaftLogStore, StateMachine), StorageError<u64>> {
        let (log, state_machine) = build_on(Arc::new(MemStore::new())).await?;
        Ok(((), log, state_machine))
    }
}

struct OnSled;

impl StoreBuilder<TypeConfig, RaftLogStore, StateMachine, tempfile::TempDir> for OnSled {
    async fn build(&self) -> Result<(tempfile::TempDir, RaftLogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = SledConfig {
            cache_capacity_bytes: 8 * 1024 * 1024,
            ..SledConfig::default()
        };
        let store = SledStore::open(dir.path(), &config).expect("open sled");
        let (log, state_machine) = build_on(Arc::new(store)).await?;
        Ok((dir, log, state_machine))
    }
}

struct OnSegments;

impl StoreBuilder<TypeConfig, RaftLogStore, StateMachine, tempfile::TempDir> for OnSegments {
    async fn build(&self) -> Result<(tempfile::TempDir, RaftLogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = SegmentConfig {
            segment_bytes: 4096,
            ..SegmentConfig::default()
        };
        let store = SegmentStore::open(dir.path(), &config).expect("open segments");
        let (log, state_machine) = build_on(Arc::new(store)).await?;
        Ok((dir, log, state_machine))
    }
}

#[test]
fn raft_storage_on_segments_passes_openraft_suite() -> Result<(), StorageError<u64>> {
    Suite::test_all(OnSegments)
}

#[test]
fn raft_storage_on_mem_store_passes_openraft_suite() -> Result<(), StorageError<u64>> {
    Suite::test_all(OnMemStore)
}

#[test]
fn raft_storage_on_sled_passes_openraft_suite() -> Result<(), StorageError<u64>> {
    Suite::test_all(OnSled)
}
