//! This node's incarnation (ADR 0033): a random number drawn when the
//! node's store is created, kept in the data directory beside it, carried
//! by every cluster RPC the node makes and recorded in the membership when
//! the node joins. A node whose store was wiped, replaced or swapped with
//! another node's is another incarnation, and the cluster can tell.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::ClusterError;

/// The file in the data directory that holds the node id and incarnation.
pub const INCARNATION_FILE: &str = "incarnation";

/// Shared by the node (which settles it at start) and its RPC client
/// (which sends it). 0 until settled.
#[derive(Debug, Default)]
pub struct IncarnationCell {
    value: AtomicU64,
    /// Where it is kept, if anywhere (in-process test clusters keep it in
    /// memory, one cell per node across its restarts).
    file: Option<PathBuf>,
}

impl IncarnationCell {
    /// A cell kept in memory only.
    pub fn new() -> Self {
        Self::default()
    }

    /// A cell kept in `data_dir`'s [`INCARNATION_FILE`].
    pub fn persisted_in(data_dir: &Path) -> Self {
        Self {
            value: AtomicU64::new(0),
            file: Some(data_dir.join(INCARNATION_FILE)),
        }
    }

    /// The incarnation, 0 before [`IncarnationCell::settle`].
    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Acquire)
    }

    /// Decides node `node_id`'s incarnation at start. `fresh`: its store
    /// holds no log and no vote. `recorded`: the incarnation this node's
    /// own membership records for it (`None` if none, or unknown).
    ///
    /// A fresh store is a new incarnation, whatever the file says (a store
    /// lost with its file kept is still lost). A store with a log keeps
    /// the kept one — unless the file names another node (a data
    /// directory moved from one node to another) or differs from what the
    /// membership recorded (the file was replaced or lost; a lost file is
    /// otherwise an upgrade from a build without incarnations: a new one
    /// is drawn). A cell kept in memory that is still empty takes what the
    /// membership recorded.
    ///
    /// # Errors
    /// [`ClusterError::Refused`] in the two cases above: the operator must
    /// put the right directory back, or remove the node and join it as new.
    pub fn settle(&self, node_id: u64, fresh: bool, recorded: Option<u64>) -> Result<u64, ClusterError> {
        let kept = match &self.file {
            Some(file) => read_file(file).map_err(|e| ClusterError::Config(e.to_string()))?,
            None => match self.get() {
                0 => None,
                value => Some((node_id, value)),
            },
        };
        let refused = |reason: String| ClusterError::Refused { node: node_id, reason };
        let value = match kept {
            Some((owner, _)) if !fresh && owner != node_id => {
                return Err(refused(format!(
                    "this data directory belongs to node {owner}, not to node {node_id} \
                     (its {INCARNATION_FILE} file says so): a volume was moved between nodes. \
                     Give each node its own directory back"
                )))
            }
            Some((_, kept)) if !fresh => {
                if let Some(recorded) = recorded.filter(|&r| r != kept) {
                    return Err(refused(format!(
                        "the membership records node {node_id} as incarnation {recorded:016x}, its data \
                         directory holds {kept:016x}: the directory was replaced. Remove the node \
                         (`warren ctl --server <a member> remove-node {node_id}`), empty its data \
                         directory and start it again: it joins as a new member"
                    )));
                }
                kept
            }
            // A cell kept nowhere that knows nothing yet (a test that
            // reopens a store with a new configuration) takes what the
            // membership recorded: it had no file to lose.
            None if !fresh && self.file.is_none() => recorded.unwrap_or_else(draw),
            None if !fresh => {
                if let Some(recorded) = recorded {
                    return Err(refused(format!(
                        "the membership records node {node_id} as incarnation {recorded:016x}, but its \
                         data directory has no {INCARNATION_FILE} file: it was lost or the directory \
                         replaced. Remove the node (`warren ctl --server <a member> remove-node \
                         {node_id}`), empty its data directory and start it again: it joins as a new member"
                    )));
                }
                let value = draw();
                tracing::info!(
                    node = node_id,
                    incarnation = format!("{value:016x}"),
                    "a store from before incarnations: this node's incarnation drawn"
                );
                value
            }
            _ => draw(),
        };
        if let Some(file) = &self.file {
            if kept.map(|(_, k)| k) != Some(value) {
                write_file(file, node_id, value).map_err(|e| {
                    ClusterError::Config(format!("could not keep the incarnation in {}: {e}", file.display()))
                })?;
            }
        }
        self.value.store(value, Ordering::Release);
        Ok(value)
    }
}

/// A random incarnation, never 0 (which means unknown).
fn draw() -> u64 {
    rand::random::<u64>().max(1)
}

/// `node <id> incarnation <hex>`.
fn read_file(file: &Path) -> std::io::Result<Option<(u64, u64)>> {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let words: Vec<&str> = text.split_whitespace().collect();
    let parsed = match words.as_slice() {
        ["node", id, "incarnation", value] => id.parse().ok().zip(u64::from_str_radix(value, 16).ok()),
        _ => None,
    };
    parsed.map(Some).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is damaged: {text:?}", file.display()),
        )
    })
}

/// Writes through a temporary file and a rename, synced.
fn write_file(file: &Path, node_id: u64, value: u64) -> std::io::Result<()> {
    crate::cluster_id::write_synced(file, format!("node {node_id} incarnation {value:016x}\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_store_draws_one_and_a_restart_keeps_it() {
        let dir = tempfile::tempdir().expect("dir");
        let first = IncarnationCell::persisted_in(dir.path())
            .settle(2, true, None)
            .expect("fresh");
        assert_ne!(first, 0);
        let again = IncarnationCell::persisted_in(dir.path());
        assert_eq!(again.settle(2, false, Some(first)).expect("restart"), first);
        assert_eq!(again.get(), first);
    }

    #[test]
    fn a_wiped_store_is_a_new_incarnation_even_if_the_file_stayed() {
        let dir = tempfile::tempdir().expect("dir");
        let first = IncarnationCell::persisted_in(dir.path())
            .settle(2, true, None)
            .expect("fresh");
        let second = IncarnationCell::persisted_in(dir.path())
            .settle(2, true, None)
            .expect("wiped");
        assert_ne!(first, second);
        let kept = IncarnationCell::persisted_in(dir.path())
            .settle(2, false, None)
            .expect("restart");
        assert_eq!(kept, second);
    }

    #[test]
    fn another_nodes_directory_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        IncarnationCell::persisted_in(dir.path())
            .settle(1, true, None)
            .expect("fresh");
        let error = IncarnationCell::persisted_in(dir.path())
            .settle(3, false, None)
            .expect_err("node 3 on node 1's directory");
        assert!(error.to_string().contains("belongs to node 1"), "{error}");
    }

    #[test]
    fn a_file_that_differs_from_the_membership_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let value = IncarnationCell::persisted_in(dir.path())
            .settle(2, true, None)
            .expect("fresh");
        let error = IncarnationCell::persisted_in(dir.path())
            .settle(2, false, Some(value ^ 1))
            .expect_err("replaced");
        assert!(error.to_string().contains("remove-node 2"), "{error}");
    }

    #[test]
    fn a_lost_file_is_an_upgrade_unless_the_membership_recorded_one() {
        let dir = tempfile::tempdir().expect("dir");
        let drawn = IncarnationCell::persisted_in(dir.path())
            .settle(2, false, None)
            .expect("upgrade");
        assert_ne!(drawn, 0);
        std::fs::remove_file(dir.path().join(INCARNATION_FILE)).expect("rm");
        let error = IncarnationCell::persisted_in(dir.path())
            .settle(2, false, Some(drawn))
            .expect_err("lost");
        assert!(error.to_string().contains("no incarnation file"), "{error}");
    }

    #[test]
    fn a_damaged_file_stops_the_start() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join(INCARNATION_FILE), "node two\n").expect("write");
        assert!(matches!(
            IncarnationCell::persisted_in(dir.path()).settle(2, false, None),
            Err(ClusterError::Config(_))
        ));
    }

    #[test]
    fn an_empty_cell_in_memory_takes_what_the_membership_recorded() {
        assert_eq!(IncarnationCell::new().settle(4, false, Some(7)).expect("reopened"), 7);
        assert_ne!(IncarnationCell::new().settle(4, false, None).expect("reopened"), 0);
    }

    #[test]
    fn a_cell_in_memory_keeps_its_value_across_restarts_of_its_node() {
        let cell = IncarnationCell::new();
        let first = cell.settle(4, true, None).expect("fresh");
        assert_eq!(cell.settle(4, false, Some(first)).expect("restart"), first);
        assert_ne!(cell.settle(4, true, None).expect("wiped"), first);
    }
}
