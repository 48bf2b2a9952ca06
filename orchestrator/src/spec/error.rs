use std::fmt;

/// A descriptor or input string that cannot be accepted.
///
/// The message is the whole user-facing text: where HKube's reference quotes an error, the text
/// is HKube's word for word (clients match on it); otherwise it names what is wrong, where (node
/// name, input index) and how to fix it. Every spec error is a validation error (HTTP 400 at the
/// API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
}

impl Error {
    pub fn new(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
        }
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}
