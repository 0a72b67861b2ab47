//! `POST /api/backup/drill`: one restore drill now. A drill that fails is a finding its
//! report carries (200, `"outcome": "failed"`), not an error of the route; 409 while one runs.

use axum::extract::State;
use axum::routing::post;
use axum::Router;

use super::auth::Who;
use super::{blocking, ApiResult, AppState};
use crate::backup::DrillReport;

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/api/backup/drill", post(drill))
}

async fn drill(State(s): State<AppState>, Who(actor): Who) -> ApiResult<axum::Json<DrillReport>> {
    Ok(axum::Json(blocking(move || s.backups.drill(actor)).await?))
}
