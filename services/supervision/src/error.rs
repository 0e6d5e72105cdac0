//! Supervision's errors, grouped by what the caller can do about them, and their one mapping to
//! `google.rpc.Status`.

use tonic::Status;

use minqing_kit::error::{
    FieldViolations, StoreError, already_exists, failed_precondition, not_found, permission_denied,
};

/// What went wrong in a supervision operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A named resource does not exist: `(type, name)`.
    #[error("{1} not found")]
    NotFound(&'static str, String),
    /// The resource's state forbids it: `(reason code, subject, description)`.
    #[error("{2}")]
    Precondition(&'static str, String, String),
    /// It exists already and may be made only once: `(type, name, description)`.
    #[error("{2}")]
    Exists(&'static str, String, String),
    /// The caller may not: `(reason code, description)`.
    #[error("{1}")]
    Denied(&'static str, String),
    /// The request is malformed.
    #[error("invalid request")]
    Invalid(FieldViolations),
    /// The rows changed underneath; the operation is retried.
    #[error("changed concurrently")]
    Conflict,
    /// Retries ran out.
    #[error("the resource kept changing")]
    Aborted,
    /// Another service's event could not be read.
    #[error("undecodable event: {0}")]
    Decode(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The kit's authentication refused the call (UNAUTHENTICATED or PERMISSION_DENIED).
    #[error("{0}")]
    Auth(Box<Status>),
}

impl From<Status> for Error {
    fn from(status: Status) -> Self {
        Error::Auth(Box::new(status))
    }
}

impl Error {
    /// FAILED_PRECONDITION shorthand.
    pub fn precondition(
        code: &'static str,
        subject: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        Error::Precondition(code, subject.into(), description.into())
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match err {
            Error::NotFound(kind, name) => not_found(kind, &name),
            Error::Precondition(code, subject, description) => {
                failed_precondition(code, &subject, description)
            }
            Error::Denied(code, description) => permission_denied(code, description),
            Error::Exists(kind, name, description) => already_exists(kind, &name, description),
            Error::Invalid(v) => v.into_status(),
            Error::Conflict | Error::Aborted => {
                Status::aborted("the resource kept changing while this request ran; retry")
            }
            Error::Store(e) => e.to_status("accessing supervision's storage"),
            Error::Decode(e) => Status::internal(format!("undecodable event: {e}")),
            Error::Auth(status) => *status,
        }
    }
}

/// Pins an async block's output type, so `?` inside it knows its error type.
pub fn typed<T, F: std::future::Future<Output = Result<T, Error>>>(f: F) -> F {
    f
}

/// Runs the block (an async body returning `Result<T, Error>`) until it does not hit a
/// concurrent change, at most five times. A macro rather than a function taking an async
/// closure: the futures of async closures borrowing the handler's state are not provably
/// `Send` to tonic.
#[macro_export]
macro_rules! retry {
    ($body:block) => {{
        let mut attempts = 0;
        loop {
            attempts += 1;
            match $crate::error::typed(async $body).await {
                Err($crate::error::Error::Conflict) if attempts < 5 => continue,
                Err($crate::error::Error::Conflict) => break Err($crate::error::Error::Aborted),
                other => break other,
            }
        }
    }};
}
