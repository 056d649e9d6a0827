//! The seed every random choice of a test run derives from.

/// Environment variable that fixes the seed (decimal or `0x…` hex).
pub const SEED_ENV: &str = "WARREN_TESTKIT_SEED";

/// The seed for this run: `WARREN_TESTKIT_SEED` if set and valid, a fresh
/// random one otherwise. Printed to stderr so a failing run can be
/// repeated with the same seed (thread scheduling still varies, so a
/// repeat makes the same fault choices, not necessarily the same
/// interleaving).
pub fn seed_from_env(test: &str) -> u64 {
    let seed = std::env::var(SEED_ENV)
        .ok()
        .and_then(|value| parse_seed(&value))
        .unwrap_or_else(rand::random);
    eprintln!("{test}: {SEED_ENV}={seed}");
    seed
}

fn parse_seed(value: &str) -> Option<u64> {
    let value = value.trim();
    match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => value.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_seed;

    #[test]
    fn seeds_parse_as_decimal_or_hex() {
        assert_eq!(parse_seed("42"), Some(42));
        assert_eq!(parse_seed(" 0x2a "), Some(42));
        assert_eq!(parse_seed("forty-two"), None);
    }
}
