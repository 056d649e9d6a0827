//! Access checks of one connection against the node's replica
//! ([`warren_core::access`]), cached: a publisher checks its exchange once,
//! not once a message, and never takes the state lock again until the
//! node's access epoch moves (a user or grant changed, or a snapshot came).

use std::collections::HashSet;

use warren_cluster::Node;
use warren_core::access::{Perm, ResourceKind};
use warren_core::{CoreError, UserName, VHost};

/// Checks allowed for one connection since the epoch it was filled in.
#[derive(Default)]
pub(crate) struct AccessCache {
    epoch: u64,
    allowed: HashSet<(ResourceKind, String, Perm)>,
}

/// Cached grants kept per connection; a client that touches more
/// resources than this starts over (RabbitMQ keeps 12 per channel).
const CACHE_LIMIT: usize = 256;

/// What an access check is about: the connection's user and vhost.
pub(crate) struct Subject<'a> {
    pub node: &'a Node,
    pub user: &'a UserName,
    pub vhost: &'a VHost,
}

impl AccessCache {
    /// Checks `perm` on the named resource.
    ///
    /// # Errors
    /// 403 ACCESS_REFUSED as RabbitMQ words it.
    pub(crate) fn check(
        &mut self,
        subject: &Subject<'_>,
        kind: ResourceKind,
        name: &str,
        perm: Perm,
    ) -> Result<(), CoreError> {
        self.refresh(subject.node);
        if self.allowed.contains(&(kind, name.to_owned(), perm)) {
            return Ok(());
        }
        subject
            .node
            .read(|broker| broker.access().check(subject.user, subject.vhost, kind, name, perm))?;
        self.remember(kind, name, perm);
        Ok(())
    }

    /// Checks that the user has any permission on the resource (what a
    /// passive declare needs).
    ///
    /// # Errors
    /// 403 ACCESS_REFUSED naming `configure`.
    pub(crate) fn check_any(&mut self, subject: &Subject<'_>, kind: ResourceKind, name: &str) -> Result<(), CoreError> {
        self.refresh(subject.node);
        let cached = [Perm::Read, Perm::Write, Perm::Configure]
            .into_iter()
            .any(|perm| self.allowed.contains(&(kind, name.to_owned(), perm)));
        if cached {
            return Ok(());
        }
        subject
            .node
            .read(|broker| broker.access().check_any(subject.user, subject.vhost, kind, name))
    }

    fn refresh(&mut self, node: &Node) {
        let epoch = node.access_epoch();
        if epoch != self.epoch {
            self.allowed.clear();
            self.epoch = epoch;
        }
    }

    fn remember(&mut self, kind: ResourceKind, name: &str, perm: Perm) {
        if self.allowed.len() >= CACHE_LIMIT {
            self.allowed.clear();
        }
        self.allowed.insert((kind, name.to_owned(), perm));
    }
}
