//! A standby's routes: `POST /api/standby/promote`, and the 503 its writes get.

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Who;
use super::error::ErrorBody;
use super::schema::Promoted;
use super::{blocking, ApiError, ApiResult, AppState};

const PROMOTE: &str = "/api/standby/promote";

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(promote))
}

/// Makes a standby the primary: it applies what it has, then takes writes on a new timeline.
#[utoipa::path(
    post,
    path = "/api/standby/promote",
    tag = "operations",
    responses(
        (status = 200, description = "Promoted", body = Promoted),
        (status = 400, description = "`invalid_options`: this server is not a standby", body = ErrorBody),
        (status = 409, description = "`busy`: another backup or restore is running", body = ErrorBody),
    )
)]
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
