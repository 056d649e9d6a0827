//! The one conformance suite every [`LogStore`] engine must pass.
//!
//! Engines call [`run_all`] from a test with a factory that returns a fresh,
//! empty store (and a guard, e.g. the temporary directory, dropped after the
//! case). Each case panics with a message naming what broke.

use crate::log_store::LogStore;

/// A named conformance case.
pub type Case = (&'static str, fn(&dyn LogStore));

/// Every case of the suite.
pub const CASES: &[Case] = &[
    ("empty_store_has_nothing", empty_store_has_nothing),
    (
        "appended_entries_read_back_in_order",
        appended_entries_read_back_in_order,
    ),
    ("append_replaces_an_existing_index", append_replaces_an_existing_index),
    ("range_respects_its_bounds", range_respects_its_bounds),
    (
        "indexes_sort_numerically_not_lexically",
        indexes_sort_numerically_not_lexically,
    ),
    ("truncate_removes_the_suffix", truncate_removes_the_suffix),
    ("purge_removes_the_prefix", purge_removes_the_prefix),
    ("meta_put_get_overwrite_delete", meta_put_get_overwrite_delete),
    ("meta_and_log_are_independent", meta_and_log_are_independent),
    ("empty_and_large_values_round_trip", empty_and_large_values_round_trip),
    ("snapshot_put_get_replace", snapshot_put_get_replace),
];

/// Runs every case against a fresh store from `make`.
///
/// # Panics
/// When a case fails, naming it.
pub fn run_all<G, S: LogStore>(mut make: impl FnMut() -> (G, S)) {
    for (name, case) in CASES {
        let (guard, store) = make();
        eprintln!("store conformance: {name}");
        case(&store);
        drop(store);
        drop(guard);
    }
}

fn entries(indexes: impl IntoIterator<Item = u64>) -> Vec<(u64, Vec<u8>)> {
    indexes
        .into_iter()
        .map(|index| (index, format!("entry-{index}").into_bytes()))
        .collect()
}

fn indexes(read: &[(u64, Vec<u8>)]) -> Vec<u64> {
    read.iter().map(|(index, _)| *index).collect()
}

fn empty_store_has_nothing(store: &dyn LogStore) {
    assert_eq!(store.first_index().unwrap_or_else(|e| panic!("{e}")), None);
    assert_eq!(store.last_entry().unwrap_or_else(|e| panic!("{e}")), None);
    assert!(store.range(0, u64::MAX).unwrap_or_else(|e| panic!("{e}")).is_empty());
    assert_eq!(store.get_meta("vote").unwrap_or_else(|e| panic!("{e}")), None);
}

fn appended_entries_read_back_in_order(store: &dyn LogStore) {
    store.append(&entries(1..=3)).unwrap_or_else(|e| panic!("{e}"));
    store.append(&entries(4..=5)).unwrap_or_else(|e| panic!("{e}"));
    store.append(&[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.range(0, 100).unwrap_or_else(|e| panic!("{e}")), entries(1..=5));
    assert_eq!(store.first_index().unwrap_or_else(|e| panic!("{e}")), Some(1));
    assert_eq!(
        store.last_entry().unwrap_or_else(|e| panic!("{e}")),
        Some((5, b"entry-5".to_vec()))
    );
}

fn append_replaces_an_existing_index(store: &dyn LogStore) {
    store.append(&entries(1..=3)).unwrap_or_else(|e| panic!("{e}"));
    store
        .append(&[(3, b"replaced".to_vec())])
        .unwrap_or_else(|e| panic!("{e}"));
    let read = store.range(3, 4).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read, vec![(3, b"replaced".to_vec())]);
}

fn range_respects_its_bounds(store: &dyn LogStore) {
    store.append(&entries(10..20)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        indexes(&store.range(12, 15).unwrap_or_else(|e| panic!("{e}"))),
        vec![12, 13, 14]
    );
    assert_eq!(indexes(&store.range(0, 11).unwrap_or_else(|e| panic!("{e}"))), vec![10]);
    assert_eq!(
        indexes(&store.range(19, u64::MAX).unwrap_or_else(|e| panic!("{e}"))),
        vec![19]
    );
    assert!(store.range(15, 15).unwrap_or_else(|e| panic!("{e}")).is_empty());
    assert!(store.range(15, 12).unwrap_or_else(|e| panic!("{e}")).is_empty());
    assert!(store.range(20, 30).unwrap_or_else(|e| panic!("{e}")).is_empty());
}

fn indexes_sort_numerically_not_lexically(store: &dyn LogStore) {
    let wanted = vec![1, 255, 256, 65_535, 65_536, 1 << 40, u64::MAX - 1];
    let mut shuffled = wanted.clone();
    shuffled.reverse();
    store.append(&entries(shuffled)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        indexes(&store.range(0, u64::MAX).unwrap_or_else(|e| panic!("{e}"))),
        wanted
    );
    assert_eq!(store.first_index().unwrap_or_else(|e| panic!("{e}")), Some(1));
    let last = store
        .last_entry()
        .unwrap_or_else(|e| panic!("{e}"))
        .map(|(index, _)| index);
    assert_eq!(last, Some(u64::MAX - 1));
}

fn truncate_removes_the_suffix(store: &dyn LogStore) {
    store.append(&entries(1..=10)).unwrap_or_else(|e| panic!("{e}"));
    store.truncate_from(11).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        store
            .last_entry()
            .unwrap_or_else(|e| panic!("{e}"))
            .map(|(index, _)| index),
        Some(10)
    );
    store.truncate_from(6).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        indexes(&store.range(0, 100).unwrap_or_else(|e| panic!("{e}"))),
        vec![1, 2, 3, 4, 5]
    );
    store
        .append(&[(6, b"new-6".to_vec())])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        store.last_entry().unwrap_or_else(|e| panic!("{e}")),
        Some((6, b"new-6".to_vec()))
    );
    store.truncate_from(0).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.first_index().unwrap_or_else(|e| panic!("{e}")), None);
}

fn purge_removes_the_prefix(store: &dyn LogStore) {
    store.append(&entries(1..=10)).unwrap_or_else(|e| panic!("{e}"));
    store.purge_through(0).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.first_index().unwrap_or_else(|e| panic!("{e}")), Some(1));
    store.purge_through(4).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.first_index().unwrap_or_else(|e| panic!("{e}")), Some(5));
    assert_eq!(
        indexes(&store.range(0, 100).unwrap_or_else(|e| panic!("{e}"))),
        vec![5, 6, 7, 8, 9, 10]
    );
    store.append(&entries(11..=12)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        store
            .last_entry()
            .unwrap_or_else(|e| panic!("{e}"))
            .map(|(index, _)| index),
        Some(12)
    );
    store.purge_through(u64::MAX).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.first_index().unwrap_or_else(|e| panic!("{e}")), None);
    assert_eq!(store.last_entry().unwrap_or_else(|e| panic!("{e}")), None);
}

fn meta_put_get_overwrite_delete(store: &dyn LogStore) {
    store.put_meta("vote", b"v1").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        store.get_meta("vote").unwrap_or_else(|e| panic!("{e}")),
        Some(b"v1".to_vec())
    );
    store.put_meta("vote", b"v2").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        store.get_meta("vote").unwrap_or_else(|e| panic!("{e}")),
        Some(b"v2".to_vec())
    );
    store.delete_meta("vote").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.get_meta("vote").unwrap_or_else(|e| panic!("{e}")), None);
    store.delete_meta("never-written").unwrap_or_else(|e| panic!("{e}"));
}

fn meta_and_log_are_independent(store: &dyn LogStore) {
    store.put_meta("snapshot", b"state").unwrap_or_else(|e| panic!("{e}"));
    store.append(&entries(1..=3)).unwrap_or_else(|e| panic!("{e}"));
    store.purge_through(u64::MAX).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        store.get_meta("snapshot").unwrap_or_else(|e| panic!("{e}")),
        Some(b"state".to_vec())
    );
    store.delete_meta("snapshot").unwrap_or_else(|e| panic!("{e}"));
    store.append(&entries(4..=4)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.first_index().unwrap_or_else(|e| panic!("{e}")), Some(4));
}

fn empty_and_large_values_round_trip(store: &dyn LogStore) {
    let large: Vec<u8> = (0..4 * 1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    store
        .append(&[(1, Vec::new()), (2, large.clone())])
        .unwrap_or_else(|e| panic!("{e}"));
    store.put_meta("empty", &[]).unwrap_or_else(|e| panic!("{e}"));
    store.put_meta("large", &large).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        store.range(1, 3).unwrap_or_else(|e| panic!("{e}")),
        vec![(1, Vec::new()), (2, large.clone())]
    );
    assert_eq!(
        store.get_meta("empty").unwrap_or_else(|e| panic!("{e}")),
        Some(Vec::new())
    );
    assert_eq!(store.get_meta("large").unwrap_or_else(|e| panic!("{e}")), Some(large));
}

fn snapshot_put_get_replace(store: &dyn LogStore) {
    assert_eq!(store.get_snapshot().unwrap_or_else(|e| panic!("{e}")), None);
    let big = vec![7u8; 3 << 20];
    store.put_snapshot(&[b"head", &big]).unwrap_or_else(|e| panic!("{e}"));
    let read = store.get_snapshot().unwrap_or_else(|e| panic!("{e}")).expect("stored");
    assert_eq!(read.len(), 4 + big.len());
    assert!(read.starts_with(b"head") && read[4..] == big[..]);
    store.put_snapshot(&[b"second"]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        store.get_snapshot().unwrap_or_else(|e| panic!("{e}")),
        Some(b"second".to_vec())
    );
    store.put_meta("vote", b"v").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        store.get_snapshot().unwrap_or_else(|e| panic!("{e}")),
        Some(b"second".to_vec()),
        "metadata does not touch the snapshot"
    );
}
