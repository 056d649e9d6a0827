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
/// To match one key against many bindings, split it once: [`TopicKey`].
pub fn topic_matches(pattern: &str, routing_key: &str) -> bool {
    TopicKey::new(routing_key).matches(pattern)
}

/// A routing key split into words once, to be matched against every topic
/// binding of an exchange.
///
/// Matching is dynamic programming over the pattern's words: after each,
/// the set of `j` such that the pattern words seen so far can consume
/// exactly the first `j` key words. The set is a bit mask, and a literal
/// word is compared only with the key words at the set's positions, so a
/// match allocates nothing and usually compares a word or two; keys of
/// more than [`MASK_WORDS`] words take the general path.
pub struct TopicKey<'a> {
    key: &'a str,
    words: Vec<&'a str>,
}

impl<'a> TopicKey<'a> {
    pub fn new(routing_key: &'a str) -> Self {
        Self {
            key: routing_key,
            words: words(routing_key),
        }
    }

    /// Whether binding `pattern` matches this key.
    pub fn matches(&self, pattern: &str) -> bool {
        let key_len = self.words.len();
        if key_len > MASK_WORDS {
            return topic_matches_general(pattern, self.key);
        }
        // Bits 0..=key_len are the positions.
        let all: u128 = if key_len + 1 == 128 {
            u128::MAX
        } else {
            (1u128 << (key_len + 1)) - 1
        };
        let mut reachable: u128 = 1;
        for word in words_of(pattern) {
            reachable = match word {
                // Zero or more words: every position from the first reachable on.
                "#" => all & !((reachable & reachable.wrapping_neg()).wrapping_sub(1)),
                // Exactly one word.
                "*" => (reachable << 1) & all,
                literal => {
                    let mut next = 0;
                    // Position key_len has no word left to consume.
                    let mut positions = reachable & !(1u128 << key_len);
                    while positions != 0 {
                        let j = positions.trailing_zeros() as usize;
                        if self.words[j] == literal {
                            next |= 1u128 << (j + 1);
                        }
                        positions &= positions - 1;
                    }
                    next
                }
            };
            if reachable == 0 {
                return false;
            }
        }
        reachable & (1u128 << key_len) != 0
    }
}

/// Key words the bit-mask matcher handles (positions 0..=127 fit a `u128`).
/// A routing key is at most 255 bytes, so at most 128 words.
pub const MASK_WORDS: usize = 127;

/// The words of `key` without collecting them.
fn words_of(key: &str) -> impl Iterator<Item = &str> {
    let empty = key.is_empty();
    key.split('.').filter(move |_| !empty)
}

/// [`topic_matches`] for any number of key words (with allocation).
fn topic_matches_general(pattern: &str, routing_key: &str) -> bool {
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
    use crate::test_support::{reference_topic_match, topic_words};
    use proptest::prelude::*;

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

    #[test]
    fn keys_of_many_words_match_on_both_paths() {
        for words in [super::MASK_WORDS - 1, super::MASK_WORDS, super::MASK_WORDS + 1, 128] {
            let key = vec!["w"; words].join(".");
            assert!(topic_matches("#", &key), "{words} words");
            assert!(topic_matches("w.#.w", &key), "{words} words");
            assert!(topic_matches(&vec!["*"; words].join("."), &key), "{words} words");
            assert!(!topic_matches(&vec!["*"; words + 1].join("."), &key), "{words} words");
            assert!(!topic_matches(&vec!["*"; words - 1].join("."), &key), "{words} words");
            assert!(!topic_matches("w.x.#", &key), "{words} words");
        }
    }

    proptest! {
        #[test]
        fn the_mask_and_the_general_matcher_agree(
            pattern in proptest::collection::vec(prop_oneof!["a", "b", "", "ü", "\\*", "#"], 0..8),
            key in proptest::collection::vec(prop_oneof!["a", "b", "c", "", "ü"], 0..10),
        ) {
            let pattern = pattern.join(".");
            let key = key.join(".");
            prop_assert_eq!(topic_matches(&pattern, &key), super::topic_matches_general(&pattern, &key));
        }

        #[test]
        fn topic_matching_agrees_with_reference(
            pattern in proptest::collection::vec(prop_oneof!["a", "b", "", "ü", "\\*", "#"], 0..6),
            key in proptest::collection::vec(prop_oneof!["a", "b", "c", "", "ü"], 0..6),
        ) {
            let pattern = pattern.join(".");
            let key = key.join(".");
            prop_assert_eq!(
                topic_matches(&pattern, &key),
                reference_topic_match(&topic_words(&pattern), &topic_words(&key)),
                "pattern {:?} key {:?}", pattern, key
            );
        }
    }
}
