//! A message as the core keeps it: where it was published, its content
//! properties and its body (in memory, or in the node's body store).

use amq_protocol_types::FieldTable;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::ids::ExchangeName;

/// The fourteen AMQP `basic` content properties, in domain form.
///
/// They round-trip exactly: the front end converts from and to the wire's
/// property list without loss.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Properties {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub headers: Option<FieldTable>,
    pub delivery_mode: Option<u8>,
    pub priority: Option<u8>,
    pub correlation_id: Option<String>,
    pub reply_to: Option<String>,
    pub expiration: Option<String>,
    pub message_id: Option<String>,
    pub timestamp: Option<u64>,
    pub kind: Option<String>,
    pub user_id: Option<String>,
    pub app_id: Option<String>,
    pub cluster_id: Option<String>,
}

impl Properties {
    /// Equal, and with every floating-point header bit for bit the same
    /// (`==` holds `-0.0` and `0.0` equal): only then may two messages
    /// share one copy.
    pub fn identical(&self, other: &Properties) -> bool {
        self == other && headers_identical(self.headers.as_ref(), other.headers.as_ref())
    }

    /// `delivery_mode = 2`.
    pub fn is_persistent(&self) -> bool {
        self.delivery_mode == Some(2)
    }
}

/// A published message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// The exchange it was published to (or dead-lettered through).
    pub exchange: ExchangeName,
    pub routing_key: String,
    /// Shared: a node keeps one copy for a run of messages published with
    /// the same properties (encoded like a plain `Properties`; decoding
    /// shares them too, see [`shared_properties`]).
    #[serde(deserialize_with = "shared_properties")]
    pub properties: std::sync::Arc<Properties>,
    pub body: Body,
}

fn headers_identical(a: Option<&FieldTable>, b: Option<&FieldTable>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => tables_identical(a, b),
        (None, None) => true,
        _ => false,
    }
}

fn tables_identical(a: &FieldTable, b: &FieldTable) -> bool {
    a.inner().len() == b.inner().len()
        && a.inner()
            .iter()
            .zip(b.inner().iter())
            .all(|((ka, va), (kb, vb))| ka == kb && values_identical(va, vb))
}

fn values_identical(a: &amq_protocol_types::AMQPValue, b: &amq_protocol_types::AMQPValue) -> bool {
    use amq_protocol_types::AMQPValue;
    match (a, b) {
        (AMQPValue::Float(x), AMQPValue::Float(y)) => x.to_bits() == y.to_bits(),
        (AMQPValue::Double(x), AMQPValue::Double(y)) => x.to_bits() == y.to_bits(),
        (AMQPValue::FieldTable(x), AMQPValue::FieldTable(y)) => tables_identical(x, y),
        (AMQPValue::FieldArray(x), AMQPValue::FieldArray(y)) => {
            x.as_slice().len() == y.as_slice().len()
                && x.as_slice()
                    .iter()
                    .zip(y.as_slice())
                    .all(|(x, y)| values_identical(x, y))
        }
        _ => a == b,
    }
}

thread_local! {
    /// The properties decoded last on this thread.
    static LAST_PROPERTIES: std::cell::RefCell<Option<std::sync::Arc<Properties>>> =
        const { std::cell::RefCell::new(None) };
}

/// Decodes properties, sharing the copy decoded just before on this thread
/// when they are equal: a snapshot or a log of a publisher's messages then
/// holds their properties once, not once a message.
fn shared_properties<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<std::sync::Arc<Properties>, D::Error> {
    let decoded = Properties::deserialize(deserializer)?;
    Ok(LAST_PROPERTIES.with(|last| {
        let mut last = last.borrow_mut();
        match last.as_ref() {
            Some(previous) if previous.identical(&decoded) => previous.clone(),
            _ => {
                let fresh = std::sync::Arc::new(decoded);
                *last = Some(fresh.clone());
                fresh
            }
        }
    }))
}

impl Message {
    /// Bytes counted against `x-max-length-bytes` (the body, as RabbitMQ counts).
    pub fn body_len(&self) -> u64 {
        self.body.len()
    }
}

/// Where a message's body is: in memory, or in this node's body store.
///
/// A body arrives in memory (in a publish command); applying the publish
/// moves it to the node's body store when the node has one, and the queues
/// keep only its [`StoredBody`] handle (issue 9, ADR 0014). The handle is
/// node-local: each node writes the bodies it applies to its own store.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Body {
    Inline(Bytes),
    Stored(StoredBody),
}

/// A body in a node's body store: its segment file, the offset of its
/// record there, and its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StoredBody {
    pub segment: u32,
    pub offset: u32,
    pub len: u32,
}

impl Body {
    /// Its length in bytes, wherever it is.
    pub fn len(&self) -> u64 {
        match self {
            Body::Inline(bytes) => bytes.len() as u64,
            Body::Stored(stored) => u64::from(stored.len),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes, if they are in memory.
    pub fn inline(&self) -> Option<&Bytes> {
        match self {
            Body::Inline(bytes) => Some(bytes),
            Body::Stored(_) => None,
        }
    }

    /// Its length if it is held in memory, else 0.
    pub fn inline_len(&self) -> u64 {
        self.inline().map_or(0, |bytes| bytes.len() as u64)
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Self {
        Body::Inline(bytes)
    }
}

impl From<&'static [u8]> for Body {
    fn from(bytes: &'static [u8]) -> Self {
        Body::Inline(Bytes::from_static(bytes))
    }
}

/// Reads and writes a node's body store while a snapshot is encoded for,
/// or decoded from, another node (see [`with_body_codec`]).
pub trait BodyCodec {
    /// The bytes of a body in this node's store.
    ///
    /// # Errors
    /// The store cannot read it; the text says why.
    fn load(&self, at: &StoredBody) -> Result<Bytes, String>;

    /// Puts a body that arrived from another node into this node's store.
    ///
    /// # Errors
    /// The store cannot write it; the text says why.
    fn store(&self, body: &Bytes) -> Result<StoredBody, String>;
}

thread_local! {
    static CODEC: std::cell::RefCell<Option<std::rc::Rc<dyn BodyCodec>>> = const { std::cell::RefCell::new(None) };
    static LEGACY: std::cell::RefCell<bool> = const { std::cell::RefCell::new(false) };
}

/// Runs `f` (an encode or decode on this thread) with bodies made portable
/// through `codec`: a stored body is encoded as its bytes, read from the
/// store, and a body decoded from bytes is written to the store. This is how
/// a snapshot travels to another node, whose store is not this one's.
pub fn with_body_codec<R>(codec: std::rc::Rc<dyn BodyCodec>, f: impl FnOnce() -> R) -> R {
    with_local(&CODEC, Some(codec), f)
}

/// Runs `f` (a decode on this thread) reading bodies in the encoding of
/// codec version 1, where a body was its bytes with no variant tag.
pub fn with_legacy_bodies<R>(f: impl FnOnce() -> R) -> R {
    with_local(&LEGACY, true, f)
}

/// Runs `f` with no body codec on this thread, whatever was set: a page
/// of a queue is written and read in the node's own form (handles), also
/// while a snapshot travels.
pub fn without_body_codec<R>(f: impl FnOnce() -> R) -> R {
    with_local(&CODEC, None, f)
}

/// Runs `f` with the thread-local `slot` holding `value`, and puts the
/// previous value back afterwards, also when `f` panics.
pub(crate) fn with_local<T: 'static, R>(
    slot: &'static std::thread::LocalKey<std::cell::RefCell<T>>,
    value: T,
    f: impl FnOnce() -> R,
) -> R {
    struct Restore<T: 'static> {
        slot: &'static std::thread::LocalKey<std::cell::RefCell<T>>,
        previous: Option<T>,
    }
    impl<T: 'static> Drop for Restore<T> {
        fn drop(&mut self) {
            if let Some(previous) = self.previous.take() {
                self.slot.with(|cell| cell.replace(previous));
            }
        }
    }
    let previous = slot.with(|cell| cell.replace(value));
    let _restore = Restore {
        slot,
        previous: Some(previous),
    };
    f()
}

/// Whether a body codec is set on this thread (a snapshot is being
/// encoded for, or decoded from, another node).
pub(crate) fn body_codec_set() -> bool {
    CODEC.with(|slot| slot.borrow().is_some())
}

fn current_codec() -> Option<std::rc::Rc<dyn BodyCodec>> {
    CODEC.with(|slot| slot.borrow().clone())
}

/// The encoded form: a variant tag, then the bytes or the handle.
#[derive(Serialize)]
enum BodyRef<'a> {
    Inline(&'a Bytes),
    Stored(&'a StoredBody),
}

#[derive(Deserialize)]
enum BodyRepr {
    Inline(Bytes),
    Stored(StoredBody),
}

impl Serialize for Body {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Body::Inline(bytes) => BodyRef::Inline(bytes).serialize(serializer),
            Body::Stored(stored) => match current_codec() {
                Some(codec) => {
                    let bytes = codec.load(stored).map_err(serde::ser::Error::custom)?;
                    BodyRef::Inline(&bytes).serialize(serializer)
                }
                None => BodyRef::Stored(stored).serialize(serializer),
            },
        }
    }
}

impl<'de> Deserialize<'de> for Body {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bytes = if LEGACY.with(|flag| *flag.borrow()) {
            Bytes::deserialize(deserializer)?
        } else {
            match BodyRepr::deserialize(deserializer)? {
                BodyRepr::Inline(bytes) => bytes,
                BodyRepr::Stored(stored) => {
                    if current_codec().is_some() {
                        return Err(serde::de::Error::custom(
                            "a body handle of another node's store (a snapshot must carry bodies)",
                        ));
                    }
                    return Ok(Body::Stored(stored));
                }
            }
        };
        match current_codec() {
            Some(codec) => codec.store(&bytes).map(Body::Stored).map_err(serde::de::Error::custom),
            None => Ok(Body::Inline(bytes)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(key: &str, priority: Option<u8>) -> Message {
        Message {
            exchange: ExchangeName::from(""),
            routing_key: key.to_owned(),
            properties: std::sync::Arc::new(Properties {
                delivery_mode: Some(2),
                priority,
                ..Properties::default()
            }),
            body: Body::Inline(Bytes::from_static(b"b")),
        }
    }

    #[test]
    fn decoded_messages_share_equal_properties() {
        let messages = vec![message("a", None), message("b", None), message("c", Some(3))];
        let encoded = bincode::serialize(&messages).expect("encode");
        let decoded: Vec<Message> = bincode::deserialize(&encoded).expect("decode");
        assert_eq!(decoded, messages);
        assert!(std::sync::Arc::ptr_eq(&decoded[0].properties, &decoded[1].properties));
        assert!(!std::sync::Arc::ptr_eq(&decoded[1].properties, &decoded[2].properties));
    }

    #[test]
    fn properties_that_differ_only_in_a_float_s_sign_are_not_shared() {
        use amq_protocol_types::AMQPValue;
        let with_header = |value: f64| {
            let mut table = FieldTable::default();
            table.insert("x".into(), AMQPValue::Double(value));
            Properties {
                headers: Some(table),
                ..Properties::default()
            }
        };
        assert_eq!(with_header(0.0), with_header(-0.0), "== holds them equal");
        assert!(!with_header(0.0).identical(&with_header(-0.0)));
        assert!(with_header(1.5).identical(&with_header(1.5)));
        let mut messages = vec![message("a", None), message("b", None)];
        messages[0].properties = std::sync::Arc::new(with_header(0.0));
        messages[1].properties = std::sync::Arc::new(with_header(-0.0));
        let decoded: Vec<Message> =
            bincode::deserialize(&bincode::serialize(&messages).expect("encode")).expect("decode");
        assert!(!std::sync::Arc::ptr_eq(&decoded[0].properties, &decoded[1].properties));
        let sign = |m: &Message| match m.properties.headers.as_ref().and_then(|h| h.inner().get("x")) {
            Some(AMQPValue::Double(v)) => v.is_sign_negative(),
            _ => false,
        };
        assert!(!sign(&decoded[0]) && sign(&decoded[1]), "each keeps its own sign");
    }

    #[test]
    fn stored_and_inline_bodies_round_trip() {
        let stored = Body::Stored(StoredBody {
            segment: 1,
            offset: 2,
            len: 3,
        });
        for body in [Body::Inline(Bytes::new()), Body::Inline(Bytes::from("ü")), stored] {
            let encoded = bincode::serialize(&body).expect("encode");
            assert_eq!(bincode::deserialize::<Body>(&encoded).expect("decode"), body);
        }
    }
}
