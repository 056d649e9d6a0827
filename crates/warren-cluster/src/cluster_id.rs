//! The cluster's id as this node knows it: set by the first
//! `SetClusterId` the cluster applied (ADR 0022), learned from the log or
//! a snapshot and kept in a file of the data directory (so that a
//! restarted node knows it before it has applied its log again), carried
//! in every cluster RPC this node makes, and compared with the id a
//! caller carries.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The file in the data directory that holds the id.
pub const CLUSTER_ID_FILE: &str = "cluster-id";

/// Empty until this node learned the cluster's id; then that id for good
/// (a cluster is never renamed). Shared by the node's state machine,
/// which fills it, and its RPC client and service, which read it.
#[derive(Debug, Default)]
pub struct ClusterIdCell {
    id: OnceLock<String>,
    /// Where the id is kept, if anywhere.
    file: Option<PathBuf>,
}

impl ClusterIdCell {
    /// A cell kept nowhere (in-process test clusters).
    pub fn new() -> Self {
        Self::default()
    }

    /// A cell kept in `data_dir`'s [`CLUSTER_ID_FILE`]: filled from it now
    /// if it is there, written when the id is learned.
    pub fn persisted_in(data_dir: &Path) -> Self {
        let file = data_dir.join(CLUSTER_ID_FILE);
        let cell = Self {
            id: OnceLock::new(),
            file: Some(file.clone()),
        };
        if let Ok(text) = std::fs::read_to_string(&file) {
            let id = text.trim();
            if !id.is_empty() {
                let _ = cell.id.set(id.to_owned());
            }
        }
        cell
    }

    /// The id, once known.
    pub fn get(&self) -> Option<&str> {
        self.id.get().map(String::as_str)
    }

    /// Records `id` (and writes it to the file). A second, different id
    /// cannot come from one cluster's log: it is logged and ignored.
    pub fn learn(&self, id: &str) {
        if self.id.set(id.to_owned()).is_err() {
            if self.get() != Some(id) {
                tracing::error!(known = ?self.get(), other = id, "a second cluster id for this node: ignored");
            }
            return;
        }
        tracing::info!(cluster_id = id, "this node's cluster id");
        if let Some(file) = &self.file {
            if let Err(e) = write_file(file, id) {
                tracing::warn!(file = %file.display(), error = %e, "could not keep the cluster id");
            }
        }
    }
}

/// Writes `id` to `file` through a temporary file and a rename, synced.
fn write_file(file: &Path, id: &str) -> std::io::Result<()> {
    write_synced(file, format!("{id}\n").as_bytes())
}

/// Replaces `file` with `contents` through a temporary file and a rename,
/// the file and its directory synced: after a crash the file holds either
/// the old contents or the new ones. Shared with the incarnation file.
pub(crate) fn write_synced(file: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let temporary = file.with_extension("tmp");
    let mut out = std::fs::File::create(&temporary)?;
    out.write_all(contents)?;
    out.sync_all()?;
    std::fs::rename(&temporary, file)?;
    if let Some(dir) = file.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_id_stays() {
        let cell = ClusterIdCell::new();
        assert_eq!(cell.get(), None);
        cell.learn("a");
        cell.learn("b");
        assert_eq!(cell.get(), Some("a"));
    }

    #[test]
    fn a_persisted_id_is_there_at_the_next_open() {
        let dir = tempfile::tempdir().expect("dir");
        let cell = ClusterIdCell::persisted_in(dir.path());
        assert_eq!(cell.get(), None);
        cell.learn("c0ffee");
        let reopened = ClusterIdCell::persisted_in(dir.path());
        assert_eq!(reopened.get(), Some("c0ffee"));
        assert_eq!(ClusterIdCell::persisted_in(&dir.path().join("nowhere")).get(), None);
    }
}
