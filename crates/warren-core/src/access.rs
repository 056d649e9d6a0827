//! Who may do what: per-vhost permissions of users, as RabbitMQ's internal
//! authorisation backend keeps them (issue 10, ADR 0015).
//!
//! A user may open a connection to a vhost where it has permissions (any
//! three patterns, even empty ones). Each AMQP operation then needs
//! `configure`, `write` or `read` on a named exchange or queue: the
//! operation's pattern must match the name somewhere (an unanchored search,
//! as Erlang's `re:run`); an empty pattern matches only the empty name.
//! The default exchange is checked under the name `amq.default`.
//!
//! The checks run in the front end against the node's replica (RabbitMQ
//! checks in the channel process too); the core only stores the grants.
//! A grant made on another node takes effect here once this node has
//! applied it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::CoreError;
use crate::ids::{UserName, VHost};

/// One of the three permissions RabbitMQ grants per vhost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Perm {
    Configure,
    Write,
    Read,
}

impl Perm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Configure => "configure",
            Self::Write => "write",
            Self::Read => "read",
        }
    }
}

/// What a permission is checked on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceKind {
    Exchange,
    Queue,
}

impl ResourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exchange => "exchange",
            Self::Queue => "queue",
        }
    }
}

/// A permission's regular expression, compiled on first use.
#[derive(Clone)]
pub struct Pattern {
    source: String,
    compiled: OnceLock<Option<regex::Regex>>,
}

impl Pattern {
    /// A pattern, checked: the error says what is wrong with it.
    ///
    /// # Errors
    /// The text of the regular expression's syntax error.
    pub fn parse(source: &str) -> Result<Self, String> {
        let pattern = Self::unchecked(source);
        if !source.is_empty() && pattern.regex().is_none() {
            return Err(compile(source).err().unwrap_or_default());
        }
        Ok(pattern)
    }

    /// A pattern as stored (a stored pattern that does not compile matches
    /// nothing).
    fn unchecked(source: &str) -> Self {
        Self {
            source: source.to_owned(),
            compiled: OnceLock::new(),
        }
    }

    /// Full access: `.*`.
    pub fn everything() -> Self {
        Self::unchecked(".*")
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the pattern matches `name` (an unanchored search; the empty
    /// pattern matches only the empty name).
    pub fn matches(&self, name: &str) -> bool {
        if self.source.is_empty() {
            return name.is_empty();
        }
        self.regex().is_some_and(|regex| regex.is_match(name))
    }

    fn regex(&self) -> Option<&regex::Regex> {
        self.compiled.get_or_init(|| compile(&self.source).ok()).as_ref()
    }
}

fn compile(source: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(source)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| e.to_string())
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.source, f)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Pattern {}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.source.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(|s| Self::unchecked(&s))
    }
}

/// A user's permissions in one vhost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    pub configure: Pattern,
    pub write: Pattern,
    pub read: Pattern,
}

impl Permission {
    /// `.*` for all three.
    pub fn full() -> Self {
        Self {
            configure: Pattern::everything(),
            write: Pattern::everything(),
            read: Pattern::everything(),
        }
    }

    pub fn pattern(&self, perm: Perm) -> &Pattern {
        match perm {
            Perm::Configure => &self.configure,
            Perm::Write => &self.write,
            Perm::Read => &self.read,
        }
    }
}

/// Every grant. Kept beside the broker in snapshots (the broker's own
/// encoding predates it), like bodies arriving in parts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    permissions: BTreeMap<(UserName, VHost), Permission>,
    /// Whether [`crate::Command::InitAccess`] has run. A state from a build
    /// before permissions has not: its users keep full access when the
    /// node starts (they had it).
    initialized: bool,
}

impl Access {
    pub fn is_initialized(&self) -> bool {
        self.initialized
    }

    pub fn permission(&self, user: &UserName, vhost: &VHost) -> Option<&Permission> {
        self.permissions.get(&(user.clone(), vhost.clone()))
    }

    /// Every grant, by user then vhost.
    pub fn permissions(&self) -> impl Iterator<Item = (&UserName, &VHost, &Permission)> {
        self.permissions.iter().map(|((u, v), p)| (u, v, p))
    }

    pub(crate) fn set(&mut self, user: UserName, vhost: VHost, permission: Permission) {
        self.permissions.insert((user, vhost), permission);
    }

    pub(crate) fn clear(&mut self, user: &UserName, vhost: &VHost) -> bool {
        self.permissions.remove(&(user.clone(), vhost.clone())).is_some()
    }

    pub(crate) fn forget_user(&mut self, user: &UserName) {
        self.permissions.retain(|(u, _), _| u != user);
    }

    pub(crate) fn forget_vhost(&mut self, vhost: &VHost) {
        self.permissions.retain(|(_, v), _| v != vhost);
    }

    pub(crate) fn mark_initialized(&mut self) {
        self.initialized = true;
    }

    /// Whether `user` may open connections to `vhost`.
    pub fn may_open(&self, user: &UserName, vhost: &VHost) -> bool {
        self.permissions.contains_key(&(user.clone(), vhost.clone()))
    }

    /// Checks `perm` on the named resource.
    ///
    /// # Errors
    /// 403 ACCESS_REFUSED, worded as RabbitMQ words it.
    pub fn check(
        &self,
        user: &UserName,
        vhost: &VHost,
        kind: ResourceKind,
        name: &str,
        perm: Perm,
    ) -> Result<(), CoreError> {
        let name = match (kind, name) {
            (ResourceKind::Exchange, "") => "amq.default",
            _ => name,
        };
        let allowed = self
            .permission(user, vhost)
            .is_some_and(|p| p.pattern(perm).matches(name));
        if allowed {
            Ok(())
        } else {
            Err(refused(user, vhost, kind, name, perm))
        }
    }

    /// Checks that `user` has any of the three permissions on the resource
    /// (what a passive declare needs); the refusal names `configure`.
    ///
    /// # Errors
    /// 403 ACCESS_REFUSED.
    pub fn check_any(&self, user: &UserName, vhost: &VHost, kind: ResourceKind, name: &str) -> Result<(), CoreError> {
        [Perm::Read, Perm::Write]
            .into_iter()
            .find_map(|perm| self.check(user, vhost, kind, name, perm).ok())
            .map_or_else(|| self.check(user, vhost, kind, name, Perm::Configure), Ok)
    }
}

/// What declaring `name` (of `kind`) with `arguments` needs beyond
/// `configure` on it, as RabbitMQ checks it: an `alternate-exchange` needs
/// read on the exchange and write on the alternate; an
/// `x-dead-letter-exchange` needs read on the queue and write on the dead
/// letter exchange. RabbitMQ checks these only when the object is new;
/// Warren checks them on every declare that names one (the front end
/// cannot know reliably that the object will still exist when the
/// declare is applied, and the stricter rule cannot let a check be
/// skipped).
pub fn argument_checks(
    kind: ResourceKind,
    name: &str,
    arguments: &amq_protocol_types::FieldTable,
) -> Vec<(ResourceKind, String, Perm)> {
    use amq_protocol_types::AMQPValue;
    let key = match kind {
        ResourceKind::Exchange => "alternate-exchange",
        ResourceKind::Queue => "x-dead-letter-exchange",
    };
    let target = match arguments.inner().get(key) {
        Some(AMQPValue::LongString(value)) => String::from_utf8_lossy(value.as_bytes()).into_owned(),
        Some(AMQPValue::ShortString(value)) => value.as_str().to_owned(),
        _ => return Vec::new(),
    };
    vec![
        (kind, name.to_owned(), Perm::Read),
        (ResourceKind::Exchange, target, Perm::Write),
    ]
}

fn refused(user: &UserName, vhost: &VHost, kind: ResourceKind, name: &str, perm: Perm) -> CoreError {
    CoreError::AccessRefused(format!(
        "{} access to {} '{name}' in vhost '{vhost}' refused for user '{user}'",
        perm.as_str(),
        kind.as_str()
    ))
}

/// The text RabbitMQ closes a connection with when the user has no
/// permissions in the vhost it opens (530 NOT_ALLOWED).
pub fn vhost_refused(user: &UserName, vhost: &VHost) -> CoreError {
    CoreError::NotAllowed(format!("access to vhost '{vhost}' refused for user '{user}'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(configure: &str, write: &str, read: &str) -> Access {
        let mut access = Access::default();
        access.set(
            UserName::from("bob"),
            VHost::from("/"),
            Permission {
                configure: Pattern::parse(configure).unwrap(),
                write: Pattern::parse(write).unwrap(),
                read: Pattern::parse(read).unwrap(),
            },
        );
        access
    }

    fn check(access: &Access, kind: ResourceKind, name: &str, perm: Perm) -> Result<(), CoreError> {
        access.check(&UserName::from("bob"), &VHost::from("/"), kind, name, perm)
    }

    #[test]
    fn patterns_search_unanchored_and_the_empty_pattern_matches_only_the_empty_name() {
        let access = grant("^app\\.", "logs", "");
        assert!(check(&access, ResourceKind::Queue, "app.jobs", Perm::Configure).is_ok());
        assert!(check(&access, ResourceKind::Queue, "my.app.jobs", Perm::Configure).is_err());
        assert!(check(&access, ResourceKind::Exchange, "app-logs-1", Perm::Write).is_ok());
        assert!(check(&access, ResourceKind::Queue, "", Perm::Read).is_ok());
        assert!(check(&access, ResourceKind::Queue, "x", Perm::Read).is_err());
        assert!(check(&access, ResourceKind::Queue, "ünïcødé", Perm::Write).is_err());
    }

    #[test]
    fn the_default_exchange_is_checked_as_amq_default() {
        let access = grant("", "^amq\\.default$", "");
        assert!(check(&access, ResourceKind::Exchange, "", Perm::Write).is_ok());
        let refused = check(&grant("", "^$", ""), ResourceKind::Exchange, "", Perm::Write).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "ACCESS_REFUSED - write access to exchange 'amq.default' in vhost '/' refused for user 'bob'"
        );
    }

    #[test]
    fn refusals_name_the_permission_the_resource_and_the_user() {
        let access = grant("", "", "");
        let error = check(&access, ResourceKind::Queue, "jobs", Perm::Read).unwrap_err();
        assert_eq!(error.reply_code(), crate::reply_code::ACCESS_REFUSED);
        assert_eq!(
            error.to_string(),
            "ACCESS_REFUSED - read access to queue 'jobs' in vhost '/' refused for user 'bob'"
        );
        let other_vhost = access.check(
            &UserName::from("bob"),
            &VHost::from("other"),
            ResourceKind::Queue,
            "jobs",
            Perm::Read,
        );
        assert!(other_vhost.is_err(), "no grant in that vhost");
    }

    #[test]
    fn a_passive_declare_needs_any_permission_and_refuses_with_configure() {
        let access = grant("", "", "^jobs$");
        assert!(access
            .check_any(&UserName::from("bob"), &VHost::from("/"), ResourceKind::Queue, "jobs")
            .is_ok());
        let error = access
            .check_any(&UserName::from("bob"), &VHost::from("/"), ResourceKind::Queue, "other")
            .unwrap_err();
        assert!(
            error.to_string().starts_with("ACCESS_REFUSED - configure access"),
            "{error}"
        );
    }

    #[test]
    fn bad_patterns_are_refused_when_parsed_and_match_nothing_when_stored() {
        assert!(Pattern::parse("(unclosed").is_err());
        assert!(Pattern::parse("").is_ok());
        let stored: Pattern = stored_pattern("(unclosed");
        assert!(!stored.matches("(unclosed"));
        assert!(!stored.matches(""));
    }

    fn stored_pattern(source: &str) -> Pattern {
        let bytes = bincode::serialize(&source.to_owned()).unwrap();
        bincode::deserialize(&bytes).unwrap()
    }

    #[test]
    fn alternate_and_dead_letter_exchanges_need_read_here_and_write_there() {
        use amq_protocol_types::{AMQPValue, FieldTable};
        let mut arguments = FieldTable::default();
        arguments.insert("x-dead-letter-exchange".into(), AMQPValue::LongString("dlx".into()));
        assert_eq!(
            argument_checks(ResourceKind::Queue, "q", &arguments),
            vec![
                (ResourceKind::Queue, "q".to_owned(), Perm::Read),
                (ResourceKind::Exchange, "dlx".to_owned(), Perm::Write)
            ]
        );
        assert!(argument_checks(ResourceKind::Exchange, "x", &arguments).is_empty());
        let mut alternate = FieldTable::default();
        alternate.insert("alternate-exchange".into(), AMQPValue::ShortString("ae".into()));
        assert_eq!(
            argument_checks(ResourceKind::Exchange, "x", &alternate),
            vec![
                (ResourceKind::Exchange, "x".to_owned(), Perm::Read),
                (ResourceKind::Exchange, "ae".to_owned(), Perm::Write)
            ]
        );
    }

    #[test]
    fn opening_a_vhost_needs_a_grant_there() {
        let access = grant("", "", "");
        assert!(access.may_open(&UserName::from("bob"), &VHost::from("/")));
        assert!(!access.may_open(&UserName::from("bob"), &VHost::from("other")));
        assert!(!access.may_open(&UserName::from("alice"), &VHost::from("/")));
    }
}
