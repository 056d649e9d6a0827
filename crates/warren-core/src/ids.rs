//! Identities. Core signatures never take bare strings or integers for these.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! string_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(String);

        impl $name {
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self(value.to_owned())
            }
        }
    };
}

string_newtype!(
    /// A virtual host, e.g. `/`.
    VHost
);
string_newtype!(
    /// An exchange name; the empty name is the default exchange.
    ExchangeName
);
string_newtype!(
    /// A queue name.
    QueueName
);
string_newtype!(
    /// A consumer tag, unique within its channel.
    ConsumerTag
);
string_newtype!(
    /// A user name.
    UserName
);

impl ExchangeName {
    /// The default (nameless) exchange.
    pub fn default_exchange() -> Self {
        Self(String::new())
    }
    pub fn is_default(&self) -> bool {
        self.0.is_empty()
    }
}

/// A node of the cluster (on Kubernetes: StatefulSet ordinal + 1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One AMQP connection: the node that holds it, that node's boot id (so
/// connections of an earlier run of the node can be told apart) and a
/// node-local sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ConnectionId {
    pub node: NodeId,
    pub boot: u64,
    pub seq: u64,
}

/// One channel of one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChannelId {
    pub conn: ConnectionId,
    pub channel: u16,
}

/// A delivery tag, assigned per channel by the core, starting at 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeliveryTag(pub u64);

/// A message's identity inside the broker, assigned by the core in log order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MessageId(pub u64);
