use serde_json::Value;

/// Why the engine refused a request.
///
/// The variants are HKube's error classes; the API maps each to its HTTP status in one place.
/// Messages are HKube's texts where the reference quotes them.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// Bad input: a descriptor, an input string, a graph (HKube's `InvalidDataError`).
    #[error("{0}")]
    Invalid(String),
    /// The request is valid but not allowed in the job's current state (HKube's
    /// `ActionNotAllowed`), possibly with details such as the job ids in the way.
    #[error("{message}")]
    NotAllowed {
        message: String,
        details: Option<Value>,
    },
    /// A job, pipeline or algorithm that does not exist: the whole message, e.g.
    /// `algorithm foo Not Found`.
    #[error("{0}")]
    NotFound(String),
    /// The engine has shut down and takes no more requests.
    #[error("the engine has shut down")]
    Closed,
}

impl Error {
    pub fn not_allowed(message: impl Into<String>) -> Self {
        Error::NotAllowed {
            message: message.into(),
            details: None,
        }
    }

    /// `<what> <name> Not Found`, HKube's text for a missing resource.
    pub fn not_found(what: &str, name: &str) -> Self {
        Error::NotFound(format!("{what} {name} Not Found"))
    }
}

impl From<crate::spec::Error> for Error {
    fn from(error: crate::spec::Error) -> Self {
        Error::Invalid(error.to_string())
    }
}
