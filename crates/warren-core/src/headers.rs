//! Headers-exchange matching (RabbitMQ `rabbit_exchange_type_headers`).

use amq_protocol_types::{AMQPValue, FieldTable};

use crate::error::CoreError;
use crate::fail;

/// How a headers binding combines its arguments (`x-match`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchMode {
    /// Every binding argument must match (`all`, the default).
    All,
    /// At least one must match (`any`).
    Any,
}

/// The parsed `x-match` of a binding: the mode and whether `x-` keys take
/// part (`all-with-x`, `any-with-x`, RabbitMQ 3.10+).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XMatch {
    pub mode: MatchMode,
    pub with_x: bool,
}

impl XMatch {
    /// Reads `x-match` from binding arguments.
    ///
    /// # Errors
    /// 406 for an `x-match` that is not `all`, `any`, `all-with-x` or
    /// `any-with-x` (RabbitMQ validates it at bind time).
    pub fn parse(arguments: &FieldTable) -> Result<Self, CoreError> {
        let Some(value) = arguments.inner().get("x-match") else {
            return Ok(Self {
                mode: MatchMode::All,
                with_x: false,
            });
        };
        let text = string_value(value).unwrap_or_default();
        match text.as_str() {
            "all" => Ok(Self {
                mode: MatchMode::All,
                with_x: false,
            }),
            "any" => Ok(Self {
                mode: MatchMode::Any,
                with_x: false,
            }),
            "all-with-x" => Ok(Self {
                mode: MatchMode::All,
                with_x: true,
            }),
            "any-with-x" => Ok(Self {
                mode: MatchMode::Any,
                with_x: true,
            }),
            _ => Err(fail::invalid_x_match(&text)),
        }
    }
}

fn string_value(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

/// A value reduced to what RabbitMQ compares: integers of every width are
/// one class (`rabbit_misc:type_class`), floats another; we also treat short
/// and long strings as one class.
#[derive(Debug, PartialEq)]
enum Comparable<'a> {
    Int(i128),
    Float(f64),
    Bytes(&'a [u8]),
    Other(&'a AMQPValue),
}

fn comparable(value: &AMQPValue) -> Comparable<'_> {
    match value {
        AMQPValue::ShortShortInt(v) => Comparable::Int(i128::from(*v)),
        AMQPValue::ShortShortUInt(v) => Comparable::Int(i128::from(*v)),
        AMQPValue::ShortInt(v) => Comparable::Int(i128::from(*v)),
        AMQPValue::ShortUInt(v) => Comparable::Int(i128::from(*v)),
        AMQPValue::LongInt(v) => Comparable::Int(i128::from(*v)),
        AMQPValue::LongUInt(v) => Comparable::Int(i128::from(*v)),
        AMQPValue::LongLongInt(v) => Comparable::Int(i128::from(*v)),
        AMQPValue::Float(v) => Comparable::Float(f64::from(*v)),
        AMQPValue::Double(v) => Comparable::Float(*v),
        AMQPValue::LongString(s) => Comparable::Bytes(s.as_bytes()),
        AMQPValue::ShortString(s) => Comparable::Bytes(s.as_str().as_bytes()),
        other => Comparable::Other(other),
    }
}

/// Whether a binding argument (`pattern`) is satisfied by the message
/// header value `header`: a `Void` pattern asks only for presence.
fn value_matches(pattern: &AMQPValue, header: &AMQPValue) -> bool {
    matches!(pattern, AMQPValue::Void) || comparable(pattern) == comparable(header)
}

/// Whether a message with `headers` matches a headers binding with
/// `arguments`.
///
/// `x-match=all` (default): every considered binding argument is present in
/// the headers with an equal value (a void argument needs presence only);
/// with no considered arguments it matches everything. `x-match=any`: at
/// least one matches. Keys starting `x-` are not considered unless the mode
/// is `*-with-x`. An invalid `x-match` never matches (binding rejects it).
pub fn headers_match(arguments: &FieldTable, headers: Option<&FieldTable>) -> bool {
    let Ok(x_match) = XMatch::parse(arguments) else {
        return false;
    };
    let mut considered = arguments
        .inner()
        .iter()
        .filter(|(key, _)| key.as_str() != "x-match" && (x_match.with_x || !key.as_str().starts_with("x-")));
    let present = |key: &str, pattern: &AMQPValue| {
        headers
            .and_then(|h| h.inner().get(key))
            .is_some_and(|value| value_matches(pattern, value))
    };
    match x_match.mode {
        MatchMode::All => considered.all(|(key, pattern)| present(key.as_str(), pattern)),
        MatchMode::Any => considered.any(|(key, pattern)| present(key.as_str(), pattern)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol_types::{LongString, ShortString};
    use proptest::prelude::*;

    fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in entries {
            t.insert(ShortString::from(*k), v.clone());
        }
        t
    }

    fn s(v: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(v))
    }

    #[test]
    fn all_requires_every_argument() {
        let binding = table(&[("a", s("1")), ("b", s("2"))]);
        assert!(headers_match(
            &binding,
            Some(&table(&[("a", s("1")), ("b", s("2")), ("c", s("3"))]))
        ));
        assert!(!headers_match(&binding, Some(&table(&[("a", s("1"))]))));
        assert!(!headers_match(&binding, Some(&table(&[("a", s("1")), ("b", s("x"))]))));
        assert!(!headers_match(&binding, None));
    }

    #[test]
    fn any_requires_one_argument() {
        let binding = table(&[("x-match", s("any")), ("a", s("1")), ("b", s("2"))]);
        assert!(headers_match(&binding, Some(&table(&[("b", s("2"))]))));
        assert!(!headers_match(&binding, Some(&table(&[("b", s("3"))]))));
        assert!(!headers_match(
            &table(&[("x-match", s("any"))]),
            Some(&table(&[("b", s("3"))]))
        ));
    }

    #[test]
    fn all_with_no_arguments_matches_everything() {
        assert!(headers_match(&FieldTable::default(), None));
        assert!(headers_match(
            &table(&[("x-match", s("all"))]),
            Some(&table(&[("a", s("1"))]))
        ));
    }

    #[test]
    fn x_keys_are_ignored_unless_with_x() {
        let binding = table(&[("x-foo", s("1"))]);
        assert!(headers_match(&binding, None));
        let binding = table(&[("x-match", s("all-with-x")), ("x-foo", s("1"))]);
        assert!(!headers_match(&binding, None));
        assert!(headers_match(&binding, Some(&table(&[("x-foo", s("1"))]))));
    }

    #[test]
    fn void_argument_matches_presence_and_integers_compare_across_widths() {
        let binding = table(&[("a", AMQPValue::Void)]);
        assert!(headers_match(&binding, Some(&table(&[("a", s("anything"))]))));
        assert!(!headers_match(&binding, Some(&table(&[("b", s("1"))]))));
        let binding = table(&[("n", AMQPValue::ShortShortInt(5))]);
        assert!(headers_match(
            &binding,
            Some(&table(&[("n", AMQPValue::LongLongInt(5))]))
        ));
        assert!(!headers_match(
            &binding,
            Some(&table(&[("n", AMQPValue::LongLongInt(6))]))
        ));
    }

    #[test]
    fn invalid_x_match_is_rejected() {
        assert!(XMatch::parse(&table(&[("x-match", s("some"))])).is_err());
        assert!(XMatch::parse(&table(&[("x-match", s("any-with-x"))])).is_ok());
    }

    /// The reference: plain loops over string-valued tables.
    fn reference(any: bool, binding: &[(String, String)], headers: &[(String, String)]) -> bool {
        let considered: Vec<_> = binding.iter().filter(|(k, _)| !k.starts_with("x-")).collect();
        let hit = |k: &String, v: &String| headers.iter().any(|(hk, hv)| hk == k && hv == v);
        if any {
            considered.iter().any(|(k, v)| hit(k, v))
        } else {
            considered.iter().all(|(k, v)| hit(k, v))
        }
    }

    fn dedup(entries: Vec<(String, String)>) -> Vec<(String, String)> {
        let map: std::collections::BTreeMap<_, _> = entries.into_iter().collect();
        map.into_iter().collect()
    }

    proptest! {
        #[test]
        fn headers_matching_agrees_with_reference(
            any in any::<bool>(),
            binding in proptest::collection::vec(("(a|b||ü|x-d)", "(1|2||ß)"), 0..4),
            headers in proptest::collection::vec(("(a|b||ü|x-d)", "(1|2||ß)"), 0..4),
        ) {
            let binding = dedup(binding);
            let headers = dedup(headers);
            let mut args = table(&binding.iter().map(|(k, v)| (k.as_str(), s(v))).collect::<Vec<_>>());
            if any {
                args.insert(ShortString::from("x-match"), s("any"));
            }
            let header_table = table(&headers.iter().map(|(k, v)| (k.as_str(), s(v))).collect::<Vec<_>>());
            prop_assert_eq!(headers_match(&args, Some(&header_table)), reference(any, &binding, &headers));
        }
    }
}
