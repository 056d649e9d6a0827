//! The "last declared queue" shortcuts of AMQP 0-9-1 (§1.7.2.3), as
//! RabbitMQ's `rabbit_channel:expand_shortcuts` applies them.
//!
//! A method that names a queue may leave the name empty to mean the queue
//! most recently declared on the channel. `queue.bind` and `queue.unbind`
//! go one step further: when the queue name *and* the routing key are
//! both empty, the key becomes that queue's name too. An empty key with
//! a named queue stays empty: it is an ordinary binding key, and the one
//! kombu's `Queue(name, exchange=ex)` binds with. Issue 15: Warren once
//! replaced every empty key with the last queue's name, so a direct or
//! topic binding with key `""` never matched and confirmed publishes were
//! dropped.

use warren_core::QueueName;

/// An empty queue name with no queue declared on the channel yet.
/// RabbitMQ answers 404 `no previously declared queue`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NoDeclaredQueue;

/// The queue `name` means: itself, or `last` (the channel's most recently
/// declared queue) if it is empty.
///
/// ```text
/// ("q", _) -> q; ("", Some(last)) -> last; ("", None) -> Err
/// ```
///
/// # Errors
/// [`NoDeclaredQueue`] for an empty name and no `last`.
pub(crate) fn expand_queue_name(name: &str, last: Option<&QueueName>) -> Result<QueueName, NoDeclaredQueue> {
    if !name.is_empty() {
        return Ok(QueueName::new(name));
    }
    last.cloned().ok_or(NoDeclaredQueue)
}

/// The binding key of a `queue.bind`/`queue.unbind` naming queue `queue`
/// with `routing_key`: the last declared queue's name only when both are
/// empty, else the key as given (empty included).
///
/// ```text
/// ("q", "", _) -> ""; ("", "", Some(last)) -> last; ("", "k", _) -> k
/// ```
///
/// # Errors
/// [`NoDeclaredQueue`] when both are empty and there is no `last`.
pub(crate) fn expand_binding_key(
    queue: &str,
    routing_key: &str,
    last: Option<&QueueName>,
) -> Result<String, NoDeclaredQueue> {
    if !(queue.is_empty() && routing_key.is_empty()) {
        return Ok(routing_key.to_owned());
    }
    last.map(|q| q.as_str().to_owned()).ok_or(NoDeclaredQueue)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn q(name: &str) -> QueueName {
        QueueName::new(name)
    }

    #[test]
    fn an_empty_key_with_a_named_queue_stays_empty() {
        assert_eq!(expand_binding_key("pq", "", Some(&q("pq"))), Ok(String::new()));
        assert_eq!(expand_binding_key("pq", "", Some(&q("other"))), Ok(String::new()));
        assert_eq!(expand_binding_key("pq", "", None), Ok(String::new()));
    }

    #[test]
    fn an_empty_queue_and_key_mean_the_last_declared_queue() {
        assert_eq!(expand_queue_name("", Some(&q("last"))), Ok(q("last")));
        assert_eq!(expand_binding_key("", "", Some(&q("last"))), Ok("last".to_owned()));
        assert_eq!(expand_binding_key("", "k", Some(&q("last"))), Ok("k".to_owned()));
    }

    #[test]
    fn without_a_declared_queue_the_shortcuts_fail() {
        assert_eq!(expand_queue_name("", None), Err(NoDeclaredQueue));
        assert_eq!(expand_binding_key("", "", None), Err(NoDeclaredQueue));
        assert_eq!(expand_binding_key("", "k", None), Ok("k".to_owned()));
    }

    /// Names and keys as a client may send them: empty, unicode, up to a
    /// short string's 255 bytes.
    fn short_string() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            Just("x".repeat(255)),
            Just("ü".repeat(127)),
            "[a-z.#*]{0,12}",
            "\\PC{0,40}".prop_filter("a short string", |s| s.len() <= 255),
        ]
    }

    proptest! {
        #[test]
        fn a_key_is_replaced_only_when_queue_and_key_are_both_empty(
            queue in short_string(),
            key in short_string(),
            last in prop::option::of(short_string().prop_filter("a declared name", |s| !s.is_empty())),
        ) {
            let last = last.map(|name| q(&name));
            let expanded = expand_binding_key(&queue, &key, last.as_ref());
            match (queue.is_empty() && key.is_empty(), &last) {
                (false, _) => prop_assert_eq!(expanded, Ok(key.clone())),
                (true, Some(last)) => prop_assert_eq!(expanded, Ok(last.as_str().to_owned())),
                (true, None) => prop_assert_eq!(expanded, Err(NoDeclaredQueue)),
            }
            let name = expand_queue_name(&queue, last.as_ref());
            if queue.is_empty() {
                prop_assert_eq!(name, last.clone().ok_or(NoDeclaredQueue));
            } else {
                prop_assert_eq!(name, Ok(q(&queue)));
            }
        }
    }
}
