//! The testkit's error: what went wrong, in words for a test failure.

use std::fmt;

/// A cluster operation or a check failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestkitError(String);

impl TestkitError {
    pub fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }
}

impl fmt::Display for TestkitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TestkitError {}
