//! Access checks of one connection against the node's replica
//! ([`warren_core::access`]), cached: a publisher checks its exchange once,
//! not once a message, and never takes the state lock again until the
//! node's access epoch moves (a user or grant changed, or a snapshot came).

use foldhash::{HashMap, HashSet};

use warren_cluster::Node;
use warren_core::access::{Perm, ResourceKind};
use warren_core::{CoreError, UserName, VHost};

/// Checks allowed for one connection since the epoch it was filled in.
#[derive(Default)]
pub(crate) struct AccessCache {
    epoch: u64,
    /// Names allowed, by kind and permission: looked up by `&str`, so a
    /// check that hits allocates nothing (a publish checks its exchange).
    allowed: HashMap<(ResourceKind, Perm), HashSet<String>>,
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
        if self.holds(kind, name, perm) {
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
            .any(|perm| self.holds(kind, name, perm));
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
            self.forget();
            self.epoch = epoch;
        }
    }

    fn holds(&self, kind: ResourceKind, name: &str, perm: Perm) -> bool {
        self.allowed
            .get(&(kind, perm))
            .is_some_and(|names| names.contains(name))
    }

    /// Names remembered, all kinds and permissions together (at most six
    /// sets: counted on a miss only).
    fn len(&self) -> usize {
        self.allowed.values().map(HashSet::len).sum()
    }

    fn forget(&mut self) {
        self.allowed.clear();
    }

    fn remember(&mut self, kind: ResourceKind, name: &str, perm: Perm) {
        if self.len() >= CACHE_LIMIT {
            self.forget();
        }
        self.allowed.entry((kind, perm)).or_default().insert(name.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_grant_is_found_by_name_kind_and_permission_only() {
        let mut cache = AccessCache::default();
        cache.remember(ResourceKind::Exchange, "amq.topic", Perm::Write);
        assert!(cache.holds(ResourceKind::Exchange, "amq.topic", Perm::Write));
        assert!(!cache.holds(ResourceKind::Exchange, "amq.topic", Perm::Read));
        assert!(!cache.holds(ResourceKind::Queue, "amq.topic", Perm::Write));
        assert!(!cache.holds(ResourceKind::Exchange, "amq.topi", Perm::Write));
        assert!(!cache.holds(ResourceKind::Exchange, "", Perm::Write));
        cache.remember(ResourceKind::Queue, "", Perm::Read);
        cache.remember(ResourceKind::Queue, "ünïcödé", Perm::Configure);
        assert!(cache.holds(ResourceKind::Queue, "", Perm::Read));
        assert!(cache.holds(ResourceKind::Queue, "ünïcödé", Perm::Configure));
        // The same grant twice counts once.
        cache.remember(ResourceKind::Queue, "", Perm::Read);
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn the_cache_starts_over_past_its_limit() {
        let mut cache = AccessCache::default();
        for i in 0..CACHE_LIMIT {
            cache.remember(ResourceKind::Queue, &format!("q{i}"), Perm::Read);
        }
        assert_eq!(cache.len(), CACHE_LIMIT);
        assert!(cache.holds(ResourceKind::Queue, "q0", Perm::Read));
        cache.remember(ResourceKind::Queue, "one more", Perm::Read);
        assert_eq!(cache.len(), 1);
        assert!(!cache.holds(ResourceKind::Queue, "q0", Perm::Read));
        assert!(cache.holds(ResourceKind::Queue, "one more", Perm::Read));
        cache.forget();
        assert!(!cache.holds(ResourceKind::Queue, "one more", Perm::Read));
        assert_eq!(cache.len(), 0);
    }
}
