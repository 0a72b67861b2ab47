//! A standby's routes: `POST /api/standby/promote`, and the 503 its writes get.

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::Value;

use super::auth::Who;
use super::{blocking, ApiError, ApiResult, AppState};

const PROMOTE: &str = "/api/standby/promote";

pub(super) fn router() -> Router<AppState> {
    Router::new().route(PROMOTE, post(promote))
}

async fn promote(State(s): State<AppState>, Who(actor): Who) -> ApiResult<axum::Json<Value>> {
    Ok(axum::Json(blocking(move || s.backups.promote(actor)).await?))
}

/// While this server is a standby, every request that would change something gets 503
/// naming the primary (promotion excepted).
pub(super) async fn refuse_writes(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let reads = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !reads && req.uri().path() != PROMOTE {
        if let Some(message) = s.backups.standby_refusal() {
            return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "standby", message).into_response();
        }
    }
    next.run(req).await
}
