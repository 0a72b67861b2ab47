//! The one error shape of the API, `{"error": {"code", "message"}}`, and the exhaustive
//! mapping from each subsystem's errors to HTTP statuses.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::{backup, bus, registry, store};

/// The body of every error answer, as the OpenAPI document describes it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The code and message of an error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable code to act on, e.g. `not_found`, `invalid_id`, `version_mismatch`.
    #[schema(example = "not_found")]
    pub code: &'static str,
    /// What to fix, for a person; a 5xx says only to look at the server log.
    pub message: String,
}

/// An error as the client sees it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// A client error with a message that says what to fix.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }

    /// 400 with a message.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// A server-side failure: the detail is logged here and never sent to the client.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the server log has the details",
        )
    }

    /// 507: a write that did not fit on the disk, so it changed nothing.
    fn disk_full() -> Self {
        Self::new(
            StatusCode::INSUFFICIENT_STORAGE,
            "disk_full",
            "not enough disk space; the live data is unchanged",
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Messages may quote input (a name, a parser's complaint): bounded and escaped.
        let message = crate::untrusted::bounded(&self.message);
        let body = Json(ErrorBody { error: ErrorDetail { code: self.code, message } });
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<store::Error> for ApiError {
    fn from(e: store::Error) -> Self {
        match e {
            store::Error::Closed => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the store is not open right now; retry shortly",
            ),
            store::Error::Frozen => Self::new(StatusCode::SERVICE_UNAVAILABLE, "restoring", e.to_string()),
            store::Error::Rocks(ref rocks) if is_disk_full(rocks) => {
                tracing::error!(error = %e, "the store's disk is full");
                Self::disk_full()
            }
            store::Error::Rocks(_)
            | store::Error::NewerFormat { .. }
            | store::Error::Foreign { .. }
            | store::Error::Corrupt { .. }
            | store::Error::Fault(_)
            | store::Error::Locked { .. }
            | store::Error::Io { .. } => Self::internal(e),
        }
    }
}

/// Whether RocksDB failed for want of disk space: it reports ENOSPC as an IO error with the
/// sub-code text "No space left on device" (its own `Status::NoSpace`, and the system's message).
fn is_disk_full(e: &rocksdb::Error) -> bool {
    e.kind() == rocksdb::ErrorKind::IOError && e.as_ref().contains("No space left on device")
}

impl From<registry::Error> for ApiError {
    fn from(e: registry::Error) -> Self {
        use registry::Error as E;
        let message = e.to_string();
        match e {
            E::InvalidId(_) => Self::bad_request("invalid_id", message),
            E::InvalidCollection(_) => Self::bad_request("invalid_collection", message),
            E::ReservedCollection(_) => Self::bad_request("reserved_collection", message),
            E::ChangedSinceBackup(_) => Self::new(StatusCode::CONFLICT, "changed_during_backup", message),
            E::NotAnObject(_) => Self::bad_request("invalid_document", message),
            E::InvalidJson(_) => Self::bad_request("invalid_json", message),
            E::InvalidCursor => Self::bad_request("invalid_cursor", message),
            E::BatchTooLarge { .. } => Self::bad_request("batch_too_large", message),
            E::DocumentTooLarge { .. } => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "document_too_large", message)
            }
            E::EventNotFound(_) | E::RecordNotFound { .. } => {
                Self::new(StatusCode::NOT_FOUND, "not_found", message)
            }
            E::VersionMismatch { .. } => {
                Self::new(StatusCode::PRECONDITION_FAILED, "version_mismatch", message)
            }
            E::Unreplayable(_) => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "unreplayable_log", message),
            E::Store(e) => e.into(),
        }
    }
}

impl From<bus::Error> for ApiError {
    fn from(e: bus::Error) -> Self {
        use bus::Error as E;
        let message = e.to_string();
        match e {
            E::InvalidTopic(_) => Self::bad_request("invalid_topic", message),
            E::ReservedTopic(_) => Self::bad_request("reserved_topic", message),
            E::InvalidType(_) => Self::bad_request("invalid_type", message),
            E::InvalidConsumer(_) => Self::bad_request("invalid_consumer", message),
            E::OffsetPastEnd { .. } => Self::bad_request("offset_past_end", message),
            E::UnknownConsumer(_) => Self::new(StatusCode::NOT_FOUND, "not_found", message),
            E::TimelineChanged { .. } => Self::new(StatusCode::CONFLICT, "timeline_changed", message),
            E::Store(e) => e.into(),
        }
    }
}

/// The status of an event deletion refused because its backup failed with `source`: the
/// client can act on a full disk (507) and on a document too large to back up (422); the
/// rest is the server's failure.
fn blocked_status(source: &backup::Error) -> StatusCode {
    use backup::Error as E;
    match source {
        E::DiskFull { .. } => StatusCode::INSUFFICIENT_STORAGE,
        E::DocumentTooLarge { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        E::Incomplete { source, .. } | E::DeleteBlocked { source, .. } => blocked_status(source),
        E::InvalidName(_)
        | E::InvalidLabel(_)
        | E::NotFound(_)
        | E::Busy(_)
        | E::Damaged { .. }
        | E::NewerFormat { .. }
        | E::InvalidOptions(_)
        | E::Unreachable(_)
        | E::DrillFailed(_)
        | E::EventExists(_)
        | E::Io { .. }
        | E::Repo(_)
        | E::Registry(_)
        | E::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Result of handlers.
pub type ApiResult<T> = Result<T, ApiError>;

impl From<backup::Error> for ApiError {
    fn from(e: backup::Error) -> Self {
        use backup::Error as E;
        let message = e.to_string();
        match e {
            E::InvalidName(_) => Self::bad_request("invalid_backup_name", message),
            E::InvalidLabel(_) => Self::bad_request("invalid_label", message),
            E::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "not_found", message),
            E::Busy(_) => Self::new(StatusCode::CONFLICT, "busy", message),
            E::Damaged { .. } => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "damaged_archive", message),
            E::NewerFormat { .. } => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "newer_format", message),
            E::DiskFull { .. } => {
                tracing::error!(error = %message, "backup or restore failed");
                Self::disk_full()
            }
            E::InvalidOptions(_) => Self::bad_request("invalid_options", message),
            E::Unreachable(_) => Self::new(StatusCode::CONFLICT, "point_unreachable", message),
            // A drill's failure is a finding its report carries (200); never a route's answer.
            E::DrillFailed(_) => Self::internal(message),
            E::EventExists(_) => Self::new(StatusCode::CONFLICT, "event_exists", message),
            E::DocumentTooLarge { .. } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "document_too_large", message)
            }
            E::DeleteBlocked { ref source, .. } => {
                tracing::error!(error = %message, "event deletion blocked");
                Self::new(blocked_status(source), "backup_failed", message)
            }
            E::Incomplete { done, source } => {
                let mut error = Self::from(*source);
                error.message = format!("{} ({done})", error.message);
                error
            }
            E::Io { .. } => Self::internal(e),
            E::Repo(repo) => match repo {
                backup::repo::Error::Unavailable(_) => {
                    tracing::error!(error = %message, "the backup repository failed");
                    Self::new(StatusCode::BAD_GATEWAY, "repository_unavailable", message)
                }
                backup::repo::Error::Missing(_) | backup::repo::Error::Empty(_) => {
                    Self::new(StatusCode::NOT_FOUND, "not_found", message)
                }
                backup::repo::Error::NoRoom(_) => {
                    tracing::error!(error = %message, "a restore from the repository does not fit");
                    Self::new(StatusCode::INSUFFICIENT_STORAGE, "disk_full", message)
                }
                backup::repo::Error::Damaged(_) => {
                    Self::new(StatusCode::UNPROCESSABLE_ENTITY, "damaged_backup", message)
                }
                // The request is sound; this server lacks the key it needs (REPO_IDENTITY_FILE).
                backup::repo::Error::NoKey(_) => {
                    Self::new(StatusCode::CONFLICT, "identity_required", message)
                }
                backup::repo::Error::Config(_) | backup::repo::Error::Local(_) => Self::internal(message),
            },
            E::Registry(e) => e.into(),
            E::Store(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(e: backup::Error) -> StatusCode {
        ApiError::from(e).status()
    }

    #[test]
    fn a_blocked_deletion_answers_what_the_client_can_act_on() {
        let blocked =
            |source| backup::Error::DeleteBlocked { event_id: "e".into(), source: Box::new(source) };
        let full = || backup::Error::DiskFull { path: "/x".into(), source: std::io::Error::other("full") };
        let large = || backup::Error::DocumentTooLarge { size: 20 << 20, max: 16 << 20 };
        assert_eq!(status(large()), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(status(blocked(full())), StatusCode::INSUFFICIENT_STORAGE);
        assert_eq!(status(blocked(large())), StatusCode::UNPROCESSABLE_ENTITY);
        let fault = backup::Error::Store(store::Error::Closed);
        assert_eq!(status(blocked(fault)), StatusCode::INTERNAL_SERVER_ERROR);
        let io = backup::Error::Io { path: "/x".into(), source: std::io::Error::other("eio") };
        assert_eq!(status(blocked(io)), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
