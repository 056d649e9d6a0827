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

/// The arguments a redeclare must repeat unchanged (RabbitMQ's
/// `declare_args/0` and `consume_args`' queue-level relatives).
const EQUIVALENCE_KEYS: &[&str] = &[
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-expires",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-message-ttl",
    "x-overflow",
    "x-queue-type",
    "x-single-active-consumer",
];

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
                        other => return Err(invalid(format!("{{unacceptable_value,\"{other}\"}}"))),
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
                "x-queue-type" => {
                    let kind = text(value).map_err(invalid)?;
                    if kind != "classic" && kind != "quorum" {
                        return Err(invalid(format!("{{unsupported_queue_type,\"{kind}\"}}")));
                    }
                }
                _ => {}
            }
        }
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
    for key in EQUIVALENCE_KEYS {
        let mut new = display(received.inner().get(*key));
        let mut old = display(current.inner().get(*key));
        if *key == "x-queue-type" {
            for value in [&mut new, &mut old] {
                value.get_or_insert_with(|| "classic".to_owned());
            }
        }
        if new != old {
            return Err(fail::inequivalent_optional_arg(
                &fail::queue_resource(vhost, queue),
                key,
                new.as_deref(),
                old.as_deref(),
            ));
        }
    }
    Ok(())
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
        assert!(parse(&[("x-queue-type", s("stream"))]).is_err());
        assert!(parse(&[("x-queue-mode", s("lazy")), ("other", s("x"))]).is_ok());
        assert!(parse(&[("x-dead-letter-routing-key", s("k"))]).is_err());
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
                "inequivalent arg 'x-max-length' for queue 'q' in vhost '/': received none but current is '5'".into()
            )
        );
        let classic = table(&[("x-queue-type", AMQPValue::LongString(LongString::from("classic")))]);
        assert!(check_equivalent(&v, &q, &classic, &FieldTable::default()).is_ok());
    }
}
