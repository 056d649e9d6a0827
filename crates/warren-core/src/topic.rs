//! Topic-exchange matching: `*` matches exactly one word, `#` zero or more;
//! words are separated by `.` (RabbitMQ `rabbit_exchange_type_topic`).

/// The words of a routing key or binding pattern. The empty key has no
/// words (as in RabbitMQ), `"a..b"` has three (`a`, ``, `b`).
fn words(key: &str) -> Vec<&str> {
    if key.is_empty() {
        Vec::new()
    } else {
        key.split('.').collect()
    }
}

/// Whether binding `pattern` matches `routing_key`.
///
/// ```
/// # use warren_core::topic::topic_matches;
/// assert!(topic_matches("a.*.c", "a.b.c"));
/// assert!(topic_matches("a.#", "a"));
/// assert!(topic_matches("#", ""));
/// assert!(!topic_matches("*", ""));
/// assert!(!topic_matches("a.*", "a.b.c"));
/// ```
///
/// Runs in O(pattern words × key words): `reachable[j]` says whether the
/// pattern words seen so far can consume exactly the first `j` key words.
pub fn topic_matches(pattern: &str, routing_key: &str) -> bool {
    let pattern = words(pattern);
    let key = words(routing_key);
    let mut reachable = vec![false; key.len() + 1];
    reachable[0] = true;
    for word in pattern {
        let mut next = vec![false; key.len() + 1];
        match word {
            "#" => {
                // Zero or more words: once reachable, everything after is too.
                let mut seen = false;
                for j in 0..=key.len() {
                    seen |= reachable[j];
                    next[j] = seen;
                }
            }
            "*" => {
                // Exactly one word: shift reachability by one.
                next[1..].copy_from_slice(&reachable[..key.len()]);
            }
            literal => {
                for j in 1..=key.len() {
                    next[j] = reachable[j - 1] && key[j - 1] == literal;
                }
            }
        }
        reachable = next;
    }
    reachable[key.len()]
}

#[cfg(test)]
mod tests {
    use super::topic_matches;
    use proptest::prelude::*;

    /// The obviously-correct recursive definition.
    fn reference(pattern: &[&str], key: &[&str]) -> bool {
        match pattern.split_first() {
            None => key.is_empty(),
            Some((&"#", rest)) => (0..=key.len()).any(|skip| reference(rest, &key[skip..])),
            Some((&"*", rest)) => !key.is_empty() && reference(rest, &key[1..]),
            Some((word, rest)) => key.first() == Some(word) && reference(rest, &key[1..]),
        }
    }

    fn split(s: &str) -> Vec<&str> {
        if s.is_empty() {
            vec![]
        } else {
            s.split('.').collect()
        }
    }

    #[test]
    fn star_matches_exactly_one_word() {
        assert!(topic_matches("a.*", "a.b"));
        assert!(!topic_matches("a.*", "a"));
        assert!(!topic_matches("a.*", "a.b.c"));
        assert!(!topic_matches("*", ""));
    }

    #[test]
    fn hash_matches_zero_or_more_words() {
        assert!(topic_matches("a.#", "a"));
        assert!(topic_matches("a.#", "a.b.c"));
        assert!(topic_matches("#", ""));
        assert!(topic_matches("#", "x.y"));
        assert!(topic_matches("#.b.#", "b"));
        assert!(topic_matches("a.#.c", "a.c"));
        assert!(!topic_matches("a.#.c", "a.b"));
    }

    #[test]
    fn literal_words_must_be_equal() {
        assert!(topic_matches("stock.usd.nyse", "stock.usd.nyse"));
        assert!(!topic_matches("stock.usd.nyse", "stock.eur.nyse"));
        assert!(topic_matches("", ""));
        assert!(!topic_matches("", "a"));
        assert!(topic_matches("a..b", "a..b"));
        assert!(topic_matches("a.*.b", "a..b"));
    }

    proptest! {
        #[test]
        fn topic_matching_agrees_with_reference(
            pattern in proptest::collection::vec(prop_oneof!["a", "b", "", "\\*", "#"], 0..6),
            key in proptest::collection::vec(prop_oneof!["a", "b", "c", ""], 0..6),
        ) {
            let pattern = pattern.join(".");
            let key = key.join(".");
            prop_assert_eq!(
                topic_matches(&pattern, &key),
                reference(&split(&pattern), &split(&key)),
                "pattern {:?} key {:?}", pattern, key
            );
        }
    }
}
