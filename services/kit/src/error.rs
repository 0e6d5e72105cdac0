//! One mapping from what went wrong to `google.rpc.Status` with details (AIP-193).
//!
//! Caller mistakes carry details the caller can act on: `BadRequest` field violations,
//! `PreconditionFailure`, `ResourceInfo`. Internal failures are logged with their whole cause
//! chain and answered with a generic message and a reason code, never the cause itself.

use std::fmt::Display;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of every Minqing error.
pub const ERROR_DOMAIN: &str = "minqing";

/// Collects every problem with a request before answering, so the caller learns all of them
/// at once rather than one per round trip.
#[derive(Debug, Default)]
pub struct FieldViolations {
    violations: Vec<(String, String)>,
}

impl FieldViolations {
    /// No problems yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a problem with `field` (a dotted path such as `place.location.latitude`).
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.violations.push((field.into(), description.into()));
    }

    /// Records a problem when `bad` holds.
    pub fn check(&mut self, bad: bool, field: impl Into<String>, description: impl Into<String>) {
        if bad {
            self.add(field, description);
        }
    }

    /// Whether any problem was found.
    pub fn is_empty(&self) -> bool {
        self.violations.is_empty()
    }

    /// The problems found so far.
    pub fn violations(&self) -> &[(String, String)] {
        &self.violations
    }

    /// `Ok` when there were none, else INVALID_ARGUMENT carrying them all.
    pub fn finish(self) -> Result<(), Status> {
        if self.violations.is_empty() {
            Ok(())
        } else {
            Err(self.into_status())
        }
    }

    /// INVALID_ARGUMENT carrying every violation.
    pub fn into_status(self) -> Status {
        let mut details = ErrorDetails::new();
        let summary = self
            .violations
            .iter()
            .map(|(f, d)| format!("{f}: {d}"))
            .collect::<Vec<_>>()
            .join("; ");
        for (field, description) in self.violations {
            details.add_bad_request_violation(field, description);
        }
        details.set_error_info("INVALID_ARGUMENT", ERROR_DOMAIN, []);
        Status::with_error_details(
            Code::InvalidArgument,
            format!("invalid request: {summary}"),
            details,
        )
    }
}

/// INVALID_ARGUMENT for one field.
pub fn invalid_field(field: impl Into<String>, description: impl Into<String>) -> Status {
    let mut v = FieldViolations::new();
    v.add(field, description);
    v.into_status()
}

/// NOT_FOUND naming the resource.
pub fn not_found(resource_type: &str, name: &str) -> Status {
    let mut details = ErrorDetails::new();
    details.set_resource_info(resource_type, name, "", format!("no such {resource_type}"));
    details.set_error_info("NOT_FOUND", ERROR_DOMAIN, []);
    Status::with_error_details(Code::NotFound, format!("{name} not found"), details)
}

/// FAILED_PRECONDITION: the request is well formed but the resource's state forbids it.
pub fn failed_precondition(kind: &str, subject: &str, description: impl Display) -> Status {
    let description = description.to_string();
    let mut details = ErrorDetails::new();
    details.add_precondition_failure_violation(kind, subject, description.clone());
    details.set_error_info(kind, ERROR_DOMAIN, []);
    Status::with_error_details(Code::FailedPrecondition, description, details)
}

/// ALREADY_EXISTS, e.g. a request id reused with a different request.
pub fn already_exists(resource_type: &str, name: &str, description: impl Display) -> Status {
    let description = description.to_string();
    let mut details = ErrorDetails::new();
    details.set_resource_info(resource_type, name, "", description.clone());
    details.set_error_info("ALREADY_EXISTS", ERROR_DOMAIN, []);
    Status::with_error_details(Code::AlreadyExists, description, details)
}

/// PERMISSION_DENIED with a reason code.
pub fn permission_denied(reason: &str, description: impl Display) -> Status {
    let mut details = ErrorDetails::new();
    details.set_error_info(reason, ERROR_DOMAIN, []);
    Status::with_error_details(Code::PermissionDenied, description.to_string(), details)
}

/// UNAUTHENTICATED: no token, or one that is not valid.
pub fn unauthenticated(description: impl Display) -> Status {
    let mut details = ErrorDetails::new();
    details.set_error_info("UNAUTHENTICATED", ERROR_DOMAIN, []);
    Status::with_error_details(Code::Unauthenticated, description.to_string(), details)
}

/// INTERNAL: logs the error with its whole chain and answers without revealing it.
pub fn internal(context: &str, err: &(dyn std::error::Error + 'static)) -> Status {
    tracing::error!(error = %chain(err), "{context}");
    let mut details = ErrorDetails::new();
    details.set_error_info("INTERNAL", ERROR_DOMAIN, []);
    Status::with_error_details(
        Code::Internal,
        format!("internal error while {context}"),
        details,
    )
}

/// UNAVAILABLE: a transient condition (the database is busy or unreachable); retry with backoff.
pub fn unavailable(context: &str, err: &(dyn std::error::Error + 'static)) -> Status {
    tracing::warn!(error = %chain(err), "{context}");
    let mut details = ErrorDetails::new();
    details.set_error_info("UNAVAILABLE", ERROR_DOMAIN, []);
    details.set_retry_info(Some(std::time::Duration::from_millis(200)));
    Status::with_error_details(
        Code::Unavailable,
        format!("temporarily unavailable while {context}; retry"),
        details,
    )
}

/// An error and its causes, joined by `: `.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// The storage failures a handler meets, sorted by what the caller can do about them.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Transient: pool exhausted, connection lost, database locked, serialization failure.
    #[error("storage temporarily unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// Anything else: a bug or a broken database.
    #[error("storage failure")]
    Other(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        if is_transient(&err) {
            StoreError::Unavailable(err)
        } else {
            StoreError::Other(err)
        }
    }
}

impl StoreError {
    /// The status for a caller, logging the cause.
    pub fn to_status(&self, context: &str) -> Status {
        match self {
            StoreError::Unavailable(_) => unavailable(context, self),
            StoreError::Other(_) => internal(context, self),
        }
    }
}

impl From<StoreError> for Status {
    fn from(err: StoreError) -> Self {
        err.to_status("accessing storage")
    }
}

/// Whether a database error is worth retrying.
pub fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => true,
        sqlx::Error::Database(db) => {
            let code = db.code().unwrap_or_default();
            // PostgreSQL: serialization failure, deadlock, too many connections, admin
            // shutdown. SQLite: SQLITE_BUSY (5) and SQLITE_LOCKED (6) with extended codes.
            matches!(&*code, "40001" | "40P01" | "53300" | "57P01" | "57P03")
                || code
                    .parse::<i32>()
                    .is_ok_and(|c| c & 0xff == 5 || c & 0xff == 6)
        }
        _ => false,
    }
}

/// Whether a database error is a unique-constraint violation.
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => db.is_unique_violation(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_become_bad_request_details() {
        let mut v = FieldViolations::new();
        v.add("title", "required");
        v.check(true, "place.district", "unknown district");
        v.check(false, "never", "added");
        let status = v.finish().unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        let bad = status.get_details_bad_request().unwrap();
        let fields: Vec<_> = bad
            .field_violations
            .iter()
            .map(|f| f.field.as_str())
            .collect();
        assert_eq!(fields, ["title", "place.district"]);
    }

    #[test]
    fn internal_hides_the_cause() {
        let err = std::io::Error::other("secret path /etc/x");
        let status = internal("saving", &err);
        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("secret"));
    }
}
