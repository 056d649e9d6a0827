//! The conformance suite against both engines, and what only a disk engine
//! can show: data survives a reopen, the data directory is versioned, and a
//! held lock is retried.

use std::time::Duration;

use warren_store::{conformance, LogStore, MemStore, SledConfig, SledStore, StoreError};

fn small_sled_config() -> SledConfig {
    SledConfig {
        cache_capacity_bytes: 8 * 1024 * 1024,
        ..SledConfig::default()
    }
}

#[test]
fn mem_store_passes_the_conformance_suite() {
    conformance::run_all(|| ((), MemStore::new()));
}

#[test]
fn sled_store_passes_the_conformance_suite() {
    conformance::run_all(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path(), &small_sled_config()).expect("open sled");
        (dir, store)
    });
}

#[test]
fn sled_store_reads_back_everything_after_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = SledStore::open(dir.path(), &small_sled_config()).expect("open");
        let entries: Vec<(u64, Vec<u8>)> = (1..=100).map(|i| (i, vec![i as u8; 100])).collect();
        store.append(&entries).expect("append");
        store.purge_through(10).expect("purge");
        store.truncate_from(91).expect("truncate");
        store.put_meta("vote", b"term-7").expect("meta");
    }
    let store = SledStore::open(dir.path(), &small_sled_config()).expect("reopen");
    assert_eq!(store.first_index().expect("first"), Some(11));
    assert_eq!(store.last_entry().expect("last"), Some((90, vec![90; 100])));
    assert_eq!(store.range(0, 1000).expect("range").len(), 80);
    assert_eq!(store.get_meta("vote").expect("meta"), Some(b"term-7".to_vec()));
    assert!(store.size_on_disk() > 0);
}

#[test]
fn sled_data_dir_holds_a_version_file_and_rejects_another_version() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(SledStore::open(dir.path(), &small_sled_config()).expect("open"));
    let version = std::fs::read_to_string(dir.path().join("VERSION")).expect("VERSION file");
    assert_eq!(version.trim(), warren_store::FORMAT_VERSION.to_string());

    std::fs::write(dir.path().join("VERSION"), "99\n").expect("write");
    let reopened = SledStore::open(dir.path(), &small_sled_config());
    assert!(
        matches!(reopened, Err(StoreError::UnsupportedDataDir { .. })),
        "{reopened:?}"
    );
}

#[test]
fn sled_open_gives_up_on_a_lock_that_stays_held() {
    let dir = tempfile::tempdir().expect("tempdir");
    let _held = SledStore::open(dir.path(), &small_sled_config()).expect("open");
    let config = SledConfig {
        lock_retry_for: Duration::from_millis(200),
        ..small_sled_config()
    };
    let second = SledStore::open(dir.path(), &config);
    assert!(matches!(second, Err(StoreError::Locked { .. })), "{second:?}");
}

#[test]
fn sled_open_waits_for_a_lock_that_is_released() {
    let dir = tempfile::tempdir().expect("tempdir");
    let held = SledStore::open(dir.path(), &small_sled_config()).expect("open");
    held.put_meta("k", b"v").expect("meta");
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(held);
    });
    let reopened = SledStore::open(dir.path(), &small_sled_config()).expect("reopen after release");
    assert_eq!(reopened.get_meta("k").expect("meta"), Some(b"v".to_vec()));
    releaser.join().expect("releaser");
}

#[test]
fn sled_store_reads_a_snapshot_of_the_old_layout_and_moves_it_to_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = SledStore::open(dir.path(), &small_sled_config()).expect("open");
        // Before snapshots moved to a file they were a metadata value.
        store
            .put_meta(warren_store::SNAPSHOT_META_KEY, b"old snapshot")
            .expect("meta");
    }
    let store = SledStore::open(dir.path(), &small_sled_config()).expect("reopen");
    assert_eq!(store.get_snapshot().expect("read"), Some(b"old snapshot".to_vec()));
    store.put_snapshot(&[b"new ", b"snapshot"]).expect("write");
    assert_eq!(
        store.get_meta(warren_store::SNAPSHOT_META_KEY).expect("meta"),
        None,
        "the old copy is removed"
    );
    drop(store);
    let store = SledStore::open(dir.path(), &small_sled_config()).expect("reopen");
    assert_eq!(store.get_snapshot().expect("read"), Some(b"new snapshot".to_vec()));
    assert!(dir.path().join("snapshot").exists());
}
