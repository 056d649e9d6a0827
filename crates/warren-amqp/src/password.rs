//! Password hashing as RabbitMQ stores it (`rabbit_password_hashing_sha256`):
//! base64(salt(4) ++ sha256(salt ++ password)).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha256};

/// Hashes `password` with a fresh random 4-byte salt.
pub fn hash_password(password: &str) -> String {
    let salt: [u8; 4] = rand::random();
    hash_with_salt(salt, password)
}

fn hash_with_salt(salt: [u8; 4], password: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(password.as_bytes());
    let mut stored = salt.to_vec();
    stored.extend_from_slice(&hasher.finalize());
    STANDARD.encode(stored)
}

/// A well-formed stored value (salt 0, the hash of a password no client
/// sends) hashed against when a login names no user, so that the work
/// done, and so the time taken, does not tell which user names exist.
const NO_USER: &str = "AAAAALU762znzehimJ7EHItp95OKs5Ei8lGHkiaHQaW7Qwmr";

/// Whether a login with `password` succeeds for a user whose stored hash
/// is `stored` (`None`: no such user — refused after the same hashing as
/// for a user that exists).
pub fn verify_login(stored: Option<&str>, password: &str) -> bool {
    match stored {
        Some(hash) => verify_password(hash, password),
        None => {
            std::hint::black_box(verify_password(NO_USER, password));
            false
        }
    }
}

/// Whether `password` matches `stored` (a value made by [`hash_password`]).
/// A malformed stored value never matches.
pub fn verify_password(stored: &str, password: &str) -> bool {
    let Ok(raw) = STANDARD.decode(stored) else {
        return false;
    };
    let Some(salt) = raw.get(..4).and_then(|s| <[u8; 4]>::try_from(s).ok()) else {
        return false;
    };
    constant_time_eq(hash_with_salt(salt, password).as_bytes(), stored.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hashed_password_verifies_and_a_wrong_one_does_not() {
        let stored = hash_password("s3cret");
        assert!(verify_password(&stored, "s3cret"));
        assert!(!verify_password(&stored, "s3cres"));
        assert!(!verify_password("not base64!", "s3cret"));
        assert!(!verify_password("", ""));
    }

    #[test]
    fn a_login_without_a_user_hashes_as_one_with_a_user_and_is_refused() {
        // The stand-in hash is well formed, so the same SHA-256 runs.
        let raw = STANDARD.decode(NO_USER).expect("base64");
        assert_eq!(raw.len(), 4 + 32);
        assert!(verify_password(NO_USER, "\0 no user"), "a real hash of a real password");
        assert!(
            !verify_login(None, "\0 no user"),
            "but no login succeeds without a user"
        );
        assert!(!verify_login(None, ""));
        let stored = hash_password("pw");
        assert!(verify_login(Some(&stored), "pw"));
        assert!(!verify_login(Some(&stored), "pW"));
    }

    #[test]
    fn two_hashes_of_one_password_differ_by_salt() {
        assert_ne!(hash_password("guest"), hash_password("guest"));
    }
}
