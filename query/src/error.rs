//! The one error type of the crate, sorted by who has to act: the user (a bad lake
//! argument, bad SQL) or the operator (the lake cannot be read, the query failed while
//! running, the output cannot be written).

use std::io;
use std::path::PathBuf;

use arrow::error::ArrowError;
use datafusion::error::DataFusionError;

use crate::output::OutputFormat;

/// Why a query over the lake did not produce its answer.
///
/// [`QueryError::is_user_error`] tells the user's mistakes (fix the command and run it
/// again) from failures of the lake or of the machine. Messages name the thing at fault
/// (the path, the table, the column) and carry the underlying message in their text, so
/// printing the error alone (`{err}`) is enough; no `source()` chain is exposed, so that
/// printing the chain (anyhow's `{err:#}`) does not repeat the same words.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The lake argument names no lake: the path does not exist or is not a directory.
    #[error("no lake at {path}: {reason}")]
    NoLake {
        /// The lake as given by the user.
        path: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The lake argument cannot be understood (empty, unknown URL scheme, no bucket).
    #[error("bad lake `{lake}`: {reason}; expected a directory, file://PATH or s3://BUCKET/PREFIX")]
    BadLake {
        /// The lake as given by the user.
        lake: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The lake or the request is of a kind this build cannot serve yet (an `s3://` lake).
    #[error("{0}")]
    Unsupported(String),

    /// The SQL is wrong: it does not parse, names an unknown table or column, mixes
    /// types, holds several statements, or tries to change something (DDL, DML, `SET`).
    /// The message is DataFusion's, which names the problem.
    #[error("invalid query: {message}")]
    InvalidQuery {
        /// What is wrong with the query.
        message: String,
    },

    /// A file or directory of the lake could not be read.
    #[error("cannot read the lake at {}: {error}", path.display())]
    LakeIo {
        /// The path that failed.
        path: PathBuf,
        /// The I/O error.
        error: io::Error,
    },

    /// The query was valid but failed while running (unreadable Parquet file, I/O error,
    /// a cast that failed on a value, memory exhausted).
    #[error("query failed: {}", .0.strip_backtrace())]
    Execution(Box<DataFusionError>),

    /// The rows could not be rendered in the requested format.
    #[error("cannot format the result as {format}: {error}")]
    Format {
        /// The requested format.
        format: OutputFormat,
        /// The formatter's error.
        error: ArrowError,
    },

    /// The rendered rows could not be written out (a closed pipe, a full disk).
    #[error("cannot write the result: {error}")]
    Output {
        /// The I/O error.
        error: io::Error,
    },
}

impl QueryError {
    /// Whether the user can fix this by changing the command: a missing or malformed
    /// lake, an unsupported lake kind, or invalid SQL. Everything else is a failure of
    /// the lake, the machine or the output.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            QueryError::NoLake { .. }
                | QueryError::BadLake { .. }
                | QueryError::Unsupported(_)
                | QueryError::InvalidQuery { .. }
        )
    }

    /// Whether the output was closed by its reader (e.g. `rushhour query … | head`),
    /// which a command line usually treats as a normal end rather than a failure.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, QueryError::Output { error } if error.kind() == io::ErrorKind::BrokenPipe)
    }

    /// Sorts a DataFusion error by who is at fault, looking at the innermost DataFusion
    /// error (DataFusion wraps plan errors in diagnostics and context).
    pub(crate) fn from_datafusion(err: DataFusionError) -> QueryError {
        match err.find_root() {
            DataFusionError::Plan(_)
            | DataFusionError::SQL(..)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_)
            | DataFusionError::Configuration(_) => QueryError::InvalidQuery {
                message: err.strip_backtrace(),
            },
            _ => QueryError::Execution(Box::new(err)),
        }
    }

    /// An output failure.
    pub(crate) fn output(error: io::Error) -> QueryError {
        QueryError::Output { error }
    }

    /// Sorts an error of an Arrow writer: its I/O errors are output failures, the rest
    /// are values the format cannot represent.
    pub(crate) fn from_writer(format: OutputFormat, err: ArrowError) -> QueryError {
        match err {
            ArrowError::IoError(_, error) => QueryError::Output { error },
            error => QueryError::Format { format, error },
        }
    }
}
