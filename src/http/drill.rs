//! `POST /api/backup/drill`: one restore drill now. A drill that fails is a finding its
//! report carries (200, `"outcome": "failed"`), not an error of the route; 409 while one runs.

use axum::extract::State;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Who;
use super::error::ErrorBody;
use super::{blocking, ApiResult, AppState};
use crate::backup::DrillReport;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(drill))
}

/// Restores the newest backup and an older one into a scratch directory and checks them
/// (see "Restore drills" in the README). Admin token.
#[utoipa::path(
    post,
    path = "/api/backup/drill",
    tag = "backups",
    responses(
        (status = 200, description = "The drill ran: `outcome` is `passed` or `failed`", body = DrillReport),
        (status = 400, description = "`invalid_options`: there is no backup to drill yet", body = ErrorBody),
        (status = 409, description = "`busy`: a drill is running", body = ErrorBody),
        (status = 502, description = "`repository_unavailable`: the repository cannot be listed", body = ErrorBody),
    )
)]
async fn drill(State(s): State<AppState>, Who(actor): Who) -> ApiResult<axum::Json<DrillReport>> {
    Ok(axum::Json(blocking(move || s.backups.drill(actor)).await?))
}
