//! Bearer-token auth: ADMIN_TOKEN may do everything, READ_TOKEN only GET.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ApiError, AppState};
use crate::backup::audit::Actor;
use crate::client::{CLI, CLIENT_HEADER};

/// The configured tokens. With no admin token, the API is open.
#[derive(Debug, Default, Clone)]
pub struct Auth {
    admin: Option<[u8; 32]>,
    read: Option<[u8; 32]>,
    metrics_public: bool,
}

impl Auth {
    /// Tokens from the options; empty strings count as unset.
    pub fn new(admin: Option<&str>, read: Option<&str>) -> Self {
        let digest = |t: Option<&str>| t.filter(|t| !t.is_empty()).map(|t| Sha256::digest(t).into());
        Auth { admin: digest(admin), read: digest(read), metrics_public: false }
    }

    /// With `/metrics` open to everyone (METRICS_PUBLIC).
    pub fn metrics_public(mut self, public: bool) -> Self {
        self.metrics_public = public;
        self
    }

    /// Whether any token is required.
    pub fn enabled(&self) -> bool {
        self.admin.is_some()
    }
}

/// Comparing digests keeps the comparison constant-time whatever the tokens' lengths.
fn matches(presented: &[u8; 32], expected: Option<&[u8; 32]>) -> bool {
    expected.is_some_and(|e| bool::from(presented.ct_eq(e)))
}

/// Who sent a request, for the audit trail: set by [`authorize`].
#[derive(Debug, Clone, Copy)]
pub struct Who(pub Actor);

impl<S: Send + Sync> FromRequestParts<S> for Who {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<Who>().copied().unwrap_or(Who(Actor::Admin)))
    }
}

/// Backup routes need the admin token even to read: `/api/backup…`, and an event's backups
/// at `/api/events/{id}/backup`.
fn is_backup_route(path: &str) -> bool {
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    path.starts_with("/api/backup") || matches!(parts.as_slice(), ["", "api", "events", _, "backup"])
}

/// The API routes anyone may GET: the health check, and the documentation (the OpenAPI
/// document and Swagger UI's page and assets).
fn is_open_route(path: &str) -> bool {
    path == "/api/health"
        || path == super::DOCUMENT
        || path == super::DOCS
        || path.strip_prefix(super::DOCS).is_some_and(|rest| rest.starts_with('/'))
}

/// An admin request names the CLI as its actor when the CLI forwarded it.
fn admin_actor(req: &Request) -> Actor {
    match req.headers().get(CLIENT_HEADER).and_then(|v| v.to_str().ok()) {
        Some(CLI) => Actor::Cli,
        _ => Actor::Admin,
    }
}

pub(super) async fn authorize(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    // Pages and their assets are open (the data they show is not); `/metrics` is API data.
    let open = match path.as_str() {
        super::metrics::PATH => state.auth.metrics_public,
        // HEAD as its GET: probes often ask with HEAD.
        _ => {
            !path.starts_with("/api")
                || (matches!(*req.method(), Method::GET | Method::HEAD) && is_open_route(&path))
        }
    };
    if open || !state.auth.enabled() {
        // Without ADMIN_TOKEN every caller has the admin's rights.
        let actor = admin_actor(&req);
        req.extensions_mut().insert(Who(actor));
        return next.run(req).await;
    }
    let Some(header) = req.headers().get(header::AUTHORIZATION) else {
        return ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "send Authorization: Bearer <token>")
            .into_response();
    };
    // The scheme is case-insensitive (RFC 7235); tokens are visible ASCII (checked at startup),
    // so a header that is not cannot hold one.
    let presented = header
        .to_str()
        .ok()
        .and_then(|v| v.trim_start().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| -> [u8; 32] { Sha256::digest(t.trim()).into() });
    let Some(presented) = presented else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the Authorization header is not `Bearer <token>` with a token of visible ASCII characters",
        )
        .into_response();
    };
    if matches(&presented, state.auth.admin.as_ref()) {
        let actor = admin_actor(&req);
        req.extensions_mut().insert(Who(actor));
        return next.run(req).await;
    }
    if matches(&presented, state.auth.read.as_ref()) {
        req.extensions_mut().insert(Who(Actor::Read));
        if is_backup_route(&path) {
            return ApiError::new(StatusCode::FORBIDDEN, "forbidden", "backup routes need the admin token")
                .into_response();
        }
        if matches!(*req.method(), Method::GET | Method::HEAD) {
            return next.run(req).await;
        }
        return ApiError::new(StatusCode::FORBIDDEN, "forbidden", "the read token allows GET requests only")
            .into_response();
    }
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "the bearer token is not valid").into_response()
}
