//! Queue arguments (`x-message-ttl`, `x-max-length`, …): validation at
//! declare time and the equivalence check of a redeclare.

use amq_protocol_types::{AMQPValue, FieldTable};
use serde::{Deserialize, Serialize};

use crate::error::CoreError;
use crate::fail;
use crate::ids::{ExchangeName, QueueName, VHost};

/// What a queue does when a publish would take it past its length limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Overflow {
    /// Drop (or dead-letter) the oldest ready messages.
    #[default]
    DropHead,
    /// Refuse the new message (the publisher gets `basic.nack`).
    RejectPublish,
    /// Refuse it and dead-letter it.
    RejectPublishDlx,
}

/// The queue arguments the core acts on, parsed once at declare time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueArgs {
    pub message_ttl_ms: Option<u64>,
    pub expires_ms: Option<u64>,
    pub max_length: Option<u64>,
    pub max_length_bytes: Option<u64>,
    pub overflow: Overflow,
    pub dead_letter_exchange: Option<ExchangeName>,
    pub dead_letter_routing_key: Option<String>,
    pub max_priority: Option<u8>,
    pub single_active_consumer: bool,
}

/// The arguments each queue type of RabbitMQ 3.10.8 takes
/// (`capabilities/0` of `rabbit_classic_queue`, `rabbit_quorum_queue`,
/// `rabbit_stream_queue`): `(queue arguments, consumer arguments)`.
const CLASSIC: (&[&str], &[&str]) = (
    &[
        "x-expires",
        "x-message-ttl",
        "x-dead-letter-exchange",
        "x-dead-letter-routing-key",
        "x-max-length",
        "x-max-length-bytes",
        "x-max-priority",
        "x-overflow",
        "x-queue-mode",
        "x-queue-version",
        "x-single-active-consumer",
        "x-queue-type",
        "x-queue-master-locator",
    ],
    &["x-cancel-on-ha-failover", "x-priority", "x-credit"],
);
const QUORUM: (&[&str], &[&str]) = (
    &[
        "x-dead-letter-exchange",
        "x-dead-letter-routing-key",
        "x-dead-letter-strategy",
        "x-expires",
        "x-max-length",
        "x-max-length-bytes",
        "x-max-in-memory-length",
        "x-max-in-memory-bytes",
        "x-overflow",
        "x-single-active-consumer",
        "x-queue-type",
        "x-quorum-initial-group-size",
        "x-delivery-limit",
        "x-message-ttl",
        "x-queue-leader-locator",
    ],
    &["x-priority", "x-credit"],
);
const STREAM: (&[&str], &[&str]) = (
    &[
        "x-max-length-bytes",
        "x-queue-type",
        "x-max-age",
        "x-stream-max-segment-size-bytes",
        "x-initial-cluster-size",
        "x-queue-leader-locator",
    ],
    &["x-stream-offset", "x-credit"],
);

/// Which list of a queue type's arguments a check is about.
pub(crate) type ArgumentKind = fn((&'static [&'static str], &'static [&'static str])) -> &'static [&'static str];

/// The queue arguments of a type.
pub(crate) const QUEUE_ARGUMENTS: ArgumentKind = |t| t.0;

/// The `basic.consume` arguments of a type.
pub(crate) const CONSUMER_ARGUMENTS: ArgumentKind = |t| t.1;

/// RabbitMQ's `check_arguments_key`: an argument some queue type takes but
/// not this queue's (its `x-queue-type`, classic when missing) is refused,
/// the first in the table's order. Arguments no type knows are ignored.
///
/// # Errors
/// 406 `invalid arg 'x-…' for queue 'q' in vhost '/' of queue type
/// rabbit_quorum_queue` (or `rabbit_classic_queue`).
pub(crate) fn check_argument_keys(
    vhost: &VHost,
    queue: &QueueName,
    queue_type: Option<&str>,
    arguments: &FieldTable,
    kind: ArgumentKind,
) -> Result<(), CoreError> {
    let (own, module) = match queue_type {
        Some("quorum") => (kind(QUORUM), "rabbit_quorum_queue"),
        Some("stream") => (kind(STREAM), "rabbit_stream_queue"),
        _ => (kind(CLASSIC), "rabbit_classic_queue"),
    };
    for (key, _) in arguments {
        let key = key.as_str();
        let known = [CLASSIC, QUORUM, STREAM].into_iter().any(|t| kind(t).contains(&key));
        if known && !own.contains(&key) {
            return Err(CoreError::PreconditionFailed(format!(
                "invalid arg '{key}' for {} of queue type {module}",
                fail::queue_resource(vhost, queue)
            )));
        }
    }
    Ok(())
}

/// The `x-queue-type` of a declaration's arguments, if it names one.
pub fn queue_type(arguments: &FieldTable) -> Option<String> {
    arguments.inner().get("x-queue-type").and_then(string)
}

/// Whether the arguments declare `x-queue-type` = `kind`, without
/// allocating (asked for every delivery and requeue).
pub(crate) fn is_queue_type(arguments: &FieldTable, kind: &str) -> bool {
    match arguments.inner().get("x-queue-type") {
        Some(AMQPValue::LongString(s)) => s.as_bytes() == kind.as_bytes(),
        Some(AMQPValue::ShortString(s)) => s.as_str() == kind,
        _ => false,
    }
}

/// An AMQP integer of any width, if `value` is one.
pub(crate) fn integer(value: &AMQPValue) -> Option<i128> {
    Some(match value {
        AMQPValue::ShortShortInt(v) => i128::from(*v),
        AMQPValue::ShortShortUInt(v) => i128::from(*v),
        AMQPValue::ShortInt(v) => i128::from(*v),
        AMQPValue::ShortUInt(v) => i128::from(*v),
        AMQPValue::LongInt(v) => i128::from(*v),
        AMQPValue::LongUInt(v) => i128::from(*v),
        AMQPValue::LongLongInt(v) => i128::from(*v),
        AMQPValue::Timestamp(v) => i128::from(*v),
        _ => return None,
    })
}

/// A string value (short or long), if `value` is one.
pub(crate) fn string(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// RabbitMQ's name for a field type, used in error texts.
pub(crate) fn type_name(value: &AMQPValue) -> &'static str {
    match value {
        AMQPValue::Boolean(_) => "bool",
        AMQPValue::ShortShortInt(_) => "byte",
        AMQPValue::ShortShortUInt(_) => "unsignedbyte",
        AMQPValue::ShortInt(_) => "short",
        AMQPValue::ShortUInt(_) => "unsignedshort",
        AMQPValue::LongInt(_) => "signedint",
        AMQPValue::LongUInt(_) => "unsignedint",
        AMQPValue::LongLongInt(_) => "long",
        AMQPValue::Float(_) => "float",
        AMQPValue::Double(_) => "double",
        AMQPValue::DecimalValue(_) => "decimal",
        AMQPValue::ShortString(_) => "shortstr",
        AMQPValue::LongString(_) => "longstr",
        AMQPValue::FieldArray(_) => "array",
        AMQPValue::Timestamp(_) => "timestamp",
        AMQPValue::FieldTable(_) => "table",
        AMQPValue::ByteArray(_) => "bytearray",
        AMQPValue::Void => "void",
    }
}

/// A value as text for error messages and equivalence (`None` when it is
/// missing): integers of any width and strings of either kind print the
/// same.
pub(crate) fn display(value: Option<&AMQPValue>) -> Option<String> {
    let value = value?;
    if let Some(n) = integer(value) {
        return Some(n.to_string());
    }
    if let Some(s) = string(value) {
        return Some(s);
    }
    Some(match value {
        AMQPValue::Boolean(b) => b.to_string(),
        other => format!("{other:?}"),
    })
}

/// Why a value is unacceptable, worded like RabbitMQ's `{Reason, Value}`.
type Invalid = String;

fn non_negative(value: &AMQPValue) -> Result<u64, Invalid> {
    let Some(n) = integer(value) else {
        return Err(format!("{{unacceptable_type,{}}}", type_name(value)));
    };
    u64::try_from(n).map_err(|_| format!("{{value_negative,{n}}}"))
}

fn positive(value: &AMQPValue) -> Result<u64, Invalid> {
    let n = non_negative(value)?;
    if n == 0 {
        return Err("{value_zero,0}".to_owned());
    }
    Ok(n)
}

/// The values of `x-queue-leader-locator` RabbitMQ 3.10 knows (Warren
/// replicates every queue to every node: the locator changes nothing).
const LEADER_LOCATORS: [&str; 4] = ["client-local", "balanced", "random", "least-leaders"];

/// A stream's `x-max-age` (RabbitMQ's `check_max_age`): a long string of
/// a positive number and one unit of `Y` (365 days), `M` (30 days), `D`,
/// `h`, `m`, `s`, as milliseconds. The same grammar gives an interval for
/// `x-stream-offset`.
pub(crate) fn max_age_ms(value: &AMQPValue) -> Result<u64, Invalid> {
    let AMQPValue::LongString(text) = value else {
        return Err(format!("{{unacceptable_type,{}}}", type_name(value)));
    };
    duration_ms(&String::from_utf8_lossy(text.as_bytes())).ok_or_else(|| "invalid_max_age".to_owned())
}

/// `<digits><unit>` as milliseconds, if it is one and not zero.
pub(crate) fn duration_ms(text: &str) -> Option<u64> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().ok().filter(|n| *n > 0)?;
    let unit_ms: u64 = match unit {
        "Y" => 365 * 86_400_000,
        "M" => 30 * 86_400_000,
        "D" => 86_400_000,
        "h" => 3_600_000,
        "m" => 60_000,
        "s" => 1_000,
        _ => return None,
    };
    Some(number.saturating_mul(unit_ms))
}

fn text(value: &AMQPValue) -> Result<String, Invalid> {
    string(value).ok_or_else(|| format!("{{unacceptable_type,{}}}", type_name(value)))
}

fn boolean(value: &AMQPValue) -> Result<bool, Invalid> {
    match value {
        AMQPValue::Boolean(b) => Ok(*b),
        other => Err(format!("{{unacceptable_type,{}}}", type_name(other))),
    }
}

impl QueueArgs {
    /// Parses and validates `arguments` of queue `queue`.
    ///
    /// Unknown keys, and known ones the core does not act on
    /// (`x-queue-mode`, `x-queue-master-locator`, …), are accepted.
    ///
    /// # Errors
    /// 406 `invalid arg 'x-…' for queue 'q' in vhost '/': …` for a value of
    /// the wrong type or range.
    pub fn parse(vhost: &VHost, queue: &QueueName, arguments: &FieldTable) -> Result<Self, CoreError> {
        let mut args = QueueArgs::default();
        for (key, value) in arguments {
            let key = key.as_str();
            let invalid = |reason: Invalid| fail::invalid_queue_arg(vhost, queue, key, &reason);
            match key {
                "x-message-ttl" => args.message_ttl_ms = Some(non_negative(value).map_err(invalid)?),
                "x-expires" => args.expires_ms = Some(positive(value).map_err(invalid)?),
                "x-max-length" => args.max_length = Some(non_negative(value).map_err(invalid)?),
                "x-max-length-bytes" => args.max_length_bytes = Some(non_negative(value).map_err(invalid)?),
                "x-overflow" => {
                    args.overflow = match text(value).map_err(invalid)?.as_str() {
                        "drop-head" => Overflow::DropHead,
                        "reject-publish" => Overflow::RejectPublish,
                        "reject-publish-dlx" => Overflow::RejectPublishDlx,
                        _ => return Err(invalid("invalid_overflow".to_owned())),
                    }
                }
                "x-dead-letter-exchange" => {
                    args.dead_letter_exchange = Some(ExchangeName::new(text(value).map_err(invalid)?));
                }
                "x-dead-letter-routing-key" => args.dead_letter_routing_key = Some(text(value).map_err(invalid)?),
                "x-max-priority" => {
                    let n = non_negative(value).map_err(invalid)?;
                    let n = u8::try_from(n).map_err(|_| invalid(format!("{{value_too_large,{n}}}")))?;
                    args.max_priority = Some(n);
                }
                "x-single-active-consumer" => args.single_active_consumer = boolean(value).map_err(invalid)?,
                "x-max-age" => {
                    max_age_ms(value).map_err(invalid)?;
                }
                "x-stream-max-segment-size-bytes" => {
                    non_negative(value).map_err(invalid)?;
                }
                "x-initial-cluster-size" | "x-quorum-initial-group-size" => {
                    positive(value).map_err(invalid)?;
                }
                "x-queue-leader-locator" => {
                    let locator = text(value).map_err(invalid)?;
                    if !LEADER_LOCATORS.contains(&locator.as_str()) {
                        return Err(invalid("invalid_queue_locator_arg".to_owned()));
                    }
                }
                "x-queue-type" => {
                    let kind = text(value).map_err(invalid)?;
                    if kind != "classic" && kind != "quorum" && kind != "stream" {
                        return Err(invalid(format!("\"unsupported queue type '{kind}'\"")));
                    }
                }
                _ => {}
            }
        }
        check_argument_keys(
            vhost,
            queue,
            queue_type(arguments).as_deref(),
            arguments,
            QUEUE_ARGUMENTS,
        )?;
        if args.dead_letter_routing_key.is_some() && args.dead_letter_exchange.is_none() {
            return Err(fail::invalid_queue_arg(
                vhost,
                queue,
                "x-dead-letter-routing-key",
                "{routing_key_but_no_dlx_defined}",
            ));
        }
        Ok(args)
    }
}

/// Checks that a redeclare's `received` arguments repeat the `current` ones
/// for every key RabbitMQ compares. Integers compare by value whatever
/// their width; a missing `x-queue-type` equals `classic`.
///
/// # Errors
/// 406 `inequivalent arg 'x-…' for queue 'q' in vhost '/': received '…' but
/// current is '…'` (`none`, unquoted, for a missing argument).
pub fn check_equivalent(
    vhost: &VHost,
    queue: &QueueName,
    received: &FieldTable,
    current: &FieldTable,
) -> Result<(), CoreError> {
    // RabbitMQ compares the keys of the existing queue's type, in its order.
    let keys = match queue_type(current).as_deref() {
        Some("quorum") => QUORUM.0,
        Some("stream") => STREAM.0,
        _ => CLASSIC.0,
    };
    for key in keys {
        let shown = inequivalence(key, received.inner().get(*key), current.inner().get(*key));
        if let Some((new, old)) = shown {
            return Err(fail::inequivalent_values(
                &fail::queue_resource(vhost, queue),
                key,
                &new,
                &old,
            ));
        }
    }
    Ok(())
}

/// RabbitMQ's `assert_args_equivalence1` for one key: `None` when the two
/// are equivalent, else the received and current values as its error
/// shows them — `'5'` when both are there, `the value '5' of type
/// 'signedint'` beside `none` when one is missing. Integers of any width
/// compare by value; a missing `x-queue-type` equals `classic`.
pub(crate) fn inequivalence(
    key: &str,
    received: Option<&AMQPValue>,
    current: Option<&AMQPValue>,
) -> Option<(String, String)> {
    match (received, current) {
        (None, None) => None,
        (Some(new), Some(old)) => {
            if type_class(new) == type_class(old) && display(Some(new)) == display(Some(old)) {
                return None;
            }
            Some((plain(new), plain(old)))
        }
        (new, old) => {
            let present = new.or(old).and_then(string);
            if key == "x-queue-type" && present.as_deref() == Some("classic") {
                return None;
            }
            Some((typed(new), typed(old)))
        }
    }
}

/// RabbitMQ's `type_class`: integer widths (and decimals) are one class,
/// both float widths another.
fn type_class(value: &AMQPValue) -> &'static str {
    if integer(value).is_some() || matches!(value, AMQPValue::DecimalValue(_)) {
        return "int";
    }
    match value {
        AMQPValue::Float(_) | AMQPValue::Double(_) => "float",
        other => type_name(other),
    }
}

fn plain(value: &AMQPValue) -> String {
    format!("'{}'", display(Some(value)).unwrap_or_default())
}

fn typed(value: Option<&AMQPValue>) -> String {
    match value {
        None => "none".to_owned(),
        Some(v) => format!(
            "the value '{}' of type '{}'",
            display(Some(v)).unwrap_or_default(),
            type_name(v)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol_types::{LongString, ShortString};

    fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in entries {
            t.insert(ShortString::from(*k), v.clone());
        }
        t
    }

    fn parse(entries: &[(&str, AMQPValue)]) -> Result<QueueArgs, CoreError> {
        QueueArgs::parse(&VHost::from("/"), &QueueName::from("q"), &table(entries))
    }

    #[test]
    fn ttl_accepts_any_integer_width() {
        assert_eq!(
            parse(&[("x-message-ttl", AMQPValue::ShortShortUInt(5))])
                .unwrap()
                .message_ttl_ms,
            Some(5)
        );
        assert_eq!(
            parse(&[("x-message-ttl", AMQPValue::LongLongInt(0))])
                .unwrap()
                .message_ttl_ms,
            Some(0)
        );
    }

    #[test]
    fn negative_ttl_is_invalid() {
        let err = parse(&[("x-message-ttl", AMQPValue::LongInt(-1))]).unwrap_err();
        assert_eq!(
            err,
            CoreError::PreconditionFailed(
                "invalid arg 'x-message-ttl' for queue 'q' in vhost '/': {value_negative,-1}".into()
            )
        );
    }

    #[test]
    fn string_ttl_and_zero_expires_are_invalid() {
        assert!(parse(&[("x-message-ttl", AMQPValue::LongString(LongString::from("5")))]).is_err());
        assert!(parse(&[("x-expires", AMQPValue::LongInt(0))]).is_err());
        assert!(parse(&[("x-expires", AMQPValue::LongInt(1))]).is_ok());
    }

    #[test]
    fn overflow_and_queue_type_values_are_checked() {
        let s = |v: &str| AMQPValue::LongString(LongString::from(v));
        assert_eq!(
            parse(&[("x-overflow", s("reject-publish"))]).unwrap().overflow,
            Overflow::RejectPublish
        );
        assert!(parse(&[("x-overflow", s("nope"))]).is_err());
        assert!(parse(&[("x-queue-type", s("quorum"))]).is_ok());
        assert!(parse(&[("x-queue-type", s("stream"))]).is_ok());
        assert!(parse(&[("x-queue-type", s("lake"))]).is_err());
        assert!(parse(&[("x-queue-mode", s("lazy")), ("other", s("x"))]).is_ok());
        assert!(parse(&[("x-dead-letter-routing-key", s("k"))]).is_err());
    }

    #[test]
    fn stream_arguments_are_checked_as_rabbitmq_checks_them() {
        let s = |v: &str| AMQPValue::LongString(LongString::from(v));
        let stream = |key: &str, value: AMQPValue| parse(&[("x-queue-type", s("stream")), (key, value)]);
        for good in ["1s", "7D", "12h", "1Y", "30M", "90m", "0001s"] {
            assert!(stream("x-max-age", s(good)).is_ok(), "{good}");
        }
        for bad in ["", "h", "0h", "5", "1.5h", "1A", "1 h", "-1h", "1hh"] {
            assert_eq!(
                stream("x-max-age", s(bad)).unwrap_err().to_string(),
                "PRECONDITION_FAILED - invalid arg 'x-max-age' for queue 'q' in vhost '/': invalid_max_age",
                "{bad:?}"
            );
        }
        assert_eq!(
            stream("x-max-age", AMQPValue::LongInt(5)).unwrap_err().to_string(),
            "PRECONDITION_FAILED - invalid arg 'x-max-age' for queue 'q' in vhost '/': {unacceptable_type,signedint}"
        );
        assert_eq!(duration_ms("2m"), Some(120_000));
        assert_eq!(duration_ms("18446744073709551615Y"), Some(u64::MAX));
        assert!(stream("x-initial-cluster-size", AMQPValue::LongInt(0)).is_err());
        assert!(stream("x-initial-cluster-size", AMQPValue::LongInt(3)).is_ok());
        assert!(stream("x-stream-max-segment-size-bytes", AMQPValue::LongInt(-1)).is_err());
        assert!(stream("x-queue-leader-locator", s("balanced")).is_ok());
        assert_eq!(
            stream("x-queue-leader-locator", s("anywhere")).unwrap_err().to_string(),
            "PRECONDITION_FAILED - invalid arg 'x-queue-leader-locator' for queue 'q' in vhost '/': invalid_queue_locator_arg"
        );
        // What a stream refuses, RabbitMQ's way.
        for (key, value) in [
            ("x-max-length", AMQPValue::LongInt(5)),
            ("x-message-ttl", AMQPValue::LongInt(5)),
            ("x-overflow", s("drop-head")),
            ("x-dead-letter-exchange", s("dlx")),
            ("x-single-active-consumer", AMQPValue::Boolean(true)),
            ("x-delivery-limit", AMQPValue::LongInt(5)),
        ] {
            assert_eq!(
                stream(key, value).unwrap_err().to_string(),
                format!("PRECONDITION_FAILED - invalid arg '{key}' for queue 'q' in vhost '/' of queue type rabbit_stream_queue")
            );
        }
    }

    #[test]
    fn equivalence_ignores_integer_width_but_not_value() {
        let (v, q) = (VHost::from("/"), QueueName::from("q"));
        let a = table(&[("x-max-length", AMQPValue::LongInt(5))]);
        let b = table(&[("x-max-length", AMQPValue::ShortShortUInt(5))]);
        let c = table(&[("x-max-length", AMQPValue::LongInt(6))]);
        assert!(check_equivalent(&v, &q, &a, &b).is_ok());
        assert_eq!(
            check_equivalent(&v, &q, &c, &a).unwrap_err(),
            CoreError::PreconditionFailed(
                "inequivalent arg 'x-max-length' for queue 'q' in vhost '/': received '6' but current is '5'".into()
            )
        );
        assert_eq!(
            check_equivalent(&v, &q, &FieldTable::default(), &a).unwrap_err(),
            CoreError::PreconditionFailed(
                "inequivalent arg 'x-max-length' for queue 'q' in vhost '/': received none but current is the value '5' of type 'signedint'".into()
            )
        );
        let classic = table(&[("x-queue-type", AMQPValue::LongString(LongString::from("classic")))]);
        assert!(check_equivalent(&v, &q, &classic, &FieldTable::default()).is_ok());
    }
}
