//! The library's error type. Every message names the file (and the position inside it where there
//! is one) and says what was expected, in lowercase, as ripgrep and candle do.
use std::path::PathBuf;

/// Errors of the library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O failure on a named path (missing file, full disk, permission).
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file whose content is not what its format says: `what` names the position and the
    /// expectation, e.g. "record 9,999 is truncated: expected 3,073 bytes, found 1,500".
    #[error("{file}: {what}")]
    Format { file: String, what: String },
    /// A configuration error: unknown key, wrong type, invalid value.
    #[error("{file}: {what}")]
    Config { file: String, what: String },
    /// A parameter outside its domain (an imbalance ratio below 1, k above the smallest class…).
    #[error("{0}")]
    Invalid(String),
    /// An error from libtorch.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`] on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An [`Error::Format`] for `file`.
    pub fn format(file: impl std::fmt::Display, what: impl Into<String>) -> Self {
        Error::Format {
            file: file.to_string(),
            what: what.into(),
        }
    }
}

/// Shorthand for an [`Error::Invalid`] built with `format!`.
#[macro_export]
macro_rules! invalid {
    ($($arg:tt)*) => { $crate::Error::Invalid(format!($($arg)*)) };
}
