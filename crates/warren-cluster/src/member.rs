//! What the membership records of a node: the address it is reached at
//! and its incarnation (ADR 0033) — which life of its data directory it
//! is, so that a Raft message reaches the copy of the node that
//! acknowledged what the membership counts on, and no other.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A member of the cluster as openraft's membership holds it.
///
/// It is stored as one string — the address, then, if the incarnation is
/// known, a NUL and the incarnation in hex — so that it has the shape of
/// openraft's `BasicNode { addr }`, which every log entry and snapshot
/// written before incarnations holds: those still decode (with an unknown
/// incarnation, 0), and no codec version was needed. No address contains
/// a NUL.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Member {
    /// `host:port` of the node's cluster port.
    pub addr: String,
    /// The node's incarnation; 0 when unknown (a member added by a build
    /// before incarnations): then nothing is checked against it.
    pub incarnation: u64,
}

impl Member {
    pub fn new(addr: impl Into<String>, incarnation: u64) -> Self {
        Self {
            addr: addr.into(),
            incarnation,
        }
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.incarnation == 0 {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{} (incarnation {:016x})", self.addr, self.incarnation)
        }
    }
}

/// Separates the address from the incarnation in the stored string.
const SEPARATOR: char = '\0';

impl Serialize for Member {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.incarnation == 0 {
            serializer.serialize_str(&self.addr)
        } else {
            serializer.serialize_str(&format!("{}{SEPARATOR}{:x}", self.addr, self.incarnation))
        }
    }
}

impl<'de> Deserialize<'de> for Member {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(MemberVisitor)
    }
}

struct MemberVisitor;

impl Visitor<'_> for MemberVisitor {
    type Value = Member;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an address, optionally followed by a NUL and an incarnation in hex")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Member, E> {
        match text.split_once(SEPARATOR) {
            None => Ok(Member::new(text, 0)),
            Some((addr, incarnation)) => {
                let incarnation = u64::from_str_radix(incarnation, 16)
                    .map_err(|_| E::custom(format!("a member's incarnation is not hex: {incarnation:?}")))?;
                Ok(Member::new(addr, incarnation))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_round_trips_with_and_without_an_incarnation() {
        for member in [
            Member::new("10.0.0.1:25672", 0),
            Member::new("warren-1.warren:25672", 0x5eed),
            Member::new("[::1]:25672", u64::MAX),
            Member::new("", 1),
        ] {
            let bytes = bincode::serialize(&member).expect("encode");
            assert_eq!(bincode::deserialize::<Member>(&bytes).expect("decode"), member);
        }
    }

    #[test]
    fn what_a_basic_node_wrote_decodes_as_a_member_of_unknown_incarnation() {
        let bytes = bincode::serialize(&openraft::BasicNode::new("warren-0.warren:25672")).expect("encode");
        assert_eq!(
            bincode::deserialize::<Member>(&bytes).expect("decode"),
            Member::new("warren-0.warren:25672", 0)
        );
        // And the other way: a member of unknown incarnation is a BasicNode.
        let bytes = bincode::serialize(&Member::new("a:1", 0)).expect("encode");
        assert_eq!(
            bincode::deserialize::<openraft::BasicNode>(&bytes)
                .expect("decode")
                .addr,
            "a:1"
        );
    }

    #[test]
    fn a_damaged_incarnation_is_an_error_not_a_guess() {
        let bytes = bincode::serialize("a:1\0not-hex").expect("encode");
        assert!(bincode::deserialize::<Member>(&bytes).is_err());
    }
}
