//! The REST API: routes only. Each handler parses, calls one domain function off the async
//! runtime, and maps the result.

mod admin;
pub mod auth;
mod backup;
mod bus;
mod drill;
pub mod error;
mod events;
pub mod extract;
mod health;
pub mod metrics;
mod openapi;
mod schema;
mod standby;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::sync::watch;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa_axum::router::OpenApiRouter;

pub use auth::Auth;
pub use error::{ApiError, ApiResult};
pub use openapi::{DOCS, DOCUMENT};

use crate::backup::BackupManager;
use crate::bus::Bus;
use crate::registry::Registry;
use crate::store::Store;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// The one store.
    pub store: Arc<Store>,
    /// The registry over it.
    pub registry: Registry,
    /// The bus over it.
    pub bus: Bus,
    /// Backups and restores.
    pub backups: Arc<BackupManager>,
    /// Tokens.
    pub auth: Arc<Auth>,
    /// When the server started.
    pub started: Instant,
    /// Becomes `true` when the server shuts down, so long-lived streams end.
    pub shutdown: watch::Receiver<bool>,
}

impl AppState {
    /// State over an open store.
    pub fn new(backups: Arc<BackupManager>, auth: Auth, shutdown: watch::Receiver<bool>) -> Self {
        let store = backups.store().clone();
        AppState {
            backups,
            registry: Registry::new(store.clone()),
            bus: Bus::new(store.clone()),
            store,
            auth: Arc::new(auth),
            started: Instant::now(),
            shutdown,
        }
    }
}

/// The whole application, ready to serve.
///
/// Every API route is registered through an `OpenApiRouter` with `routes!`, so the OpenAPI
/// document lists exactly what is served; an `/api` route added with axum's own `route` would be
/// missing from it (tests/integration/openapi.rs catches that).
pub fn app(state: AppState, body_limit: usize) -> Router {
    // Registry and bus requests pass the store gate, so a restore's swap waits for them; the
    // backup routes do not, since a restore holds the gate itself.
    let gated = OpenApiRouter::new()
        .merge(events::router())
        .merge(bus::router())
        .route_layer(middleware::from_fn_with_state(state.clone(), pass_gate));
    let api = OpenApiRouter::new()
        .merge(health::router())
        .merge(metrics::router())
        .merge(backup::router())
        .merge(drill::router())
        .merge(standby::router())
        .merge(openapi::router())
        .merge(gated);
    openapi::finish(api)
        // The admin page: not the API, so not in the document.
        .merge(admin::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), standby::refuse_writes))
        .layer(middleware::from_fn_with_state(state.clone(), auth::authorize))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(CatchPanicLayer::custom(|_| ApiError::internal("a handler panicked").into_response()))
        // Outermost (a router's layers wrap each route after it matched, so the route template
        // is known): it counts what every layer answered, refusals too.
        .layer(middleware::from_fn(metrics::track))
        .with_state(state)
}

/// Holds the store gate's read permit while a request runs (see [`Store`]).
async fn pass_gate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let gate = state.store.gate();
    let _permit = gate.read().await;
    next.run(req).await
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route; see the API reference in README.md")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}

/// Runs blocking store work on the blocking pool and maps its error.
pub async fn blocking<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> ApiResult<T>
where
    T: Send + 'static,
    E: Into<ApiError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(Into::into),
        Err(join) => Err(ApiError::internal(join)),
    }
}

/// A response body that is JSON already (stored documents go out as they are stored).
#[derive(Debug)]
pub struct RawJson(pub StatusCode, pub Vec<u8>);

impl RawJson {
    /// 200 with `body`.
    pub fn ok(body: Vec<u8>) -> Self {
        RawJson(StatusCode::OK, body)
    }
}

impl IntoResponse for RawJson {
    fn into_response(self) -> Response {
        let content_type = [(axum::http::header::CONTENT_TYPE, "application/json")];
        (self.0, content_type, self.1).into_response()
    }
}

/// Query of list routes.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

/// Checks a `limit` query parameter.
pub fn limit(limit: Option<usize>) -> ApiResult<usize> {
    match limit {
        None => Ok(100),
        Some(n @ 1..=1000) => Ok(n),
        Some(n) => {
            Err(ApiError::bad_request("invalid_limit", format!("limit must be between 1 and 1000, not {n}")))
        }
    }
}
