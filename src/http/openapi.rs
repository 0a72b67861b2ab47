//! The OpenAPI 3.1 document, `GET /api/openapi.json`, and Swagger UI at `/api/docs`.
//!
//! The document comes from the same registration as the router: every API route is added with
//! `utoipa_axum::routes!` on an `OpenApiRouter`, from the handler's `#[utoipa::path]`, so a
//! route cannot be served without being documented (tests/integration/openapi.rs checks both
//! directions on a live server). What every route shares (the bearer token's 401/403, the
//! 503 of a standby or of a store being restored, the 413 of a body over BODY_LIMIT) is added
//! here once, by [`with_shared_answers`], rather than on each handler.

use axum::body::Bytes;
use axum::http::{header, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Router};
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{self, OpenApi as Document, Ref, RefOr};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::{Config, SwaggerUi};

use super::error::ErrorBody;
use super::{ApiError, AppState};

/// Where the document is served.
pub const DOCUMENT: &str = "/api/openapi.json";
/// Where Swagger UI is served (not in the document: it is a page, not the API).
pub const DOCS: &str = "/api/docs";

/// The name of the bearer-token security scheme (the `security` of [`ApiDoc`] repeats it).
const BEARER: &str = "bearer";

/// The document's fixed parts; the paths come from the routers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "eventvault",
        description = "Event registry and durable event bus on one RocksDB store, with \
            backups, an off-site repository, point-in-time restore and a standby. Every error \
            answers `{\"error\": {\"code\", \"message\"}}`. With ADMIN_TOKEN set, requests \
            need `Authorization: Bearer <token>`: the admin token may do everything; READ_TOKEN \
            may GET every route but the backup routes."
    ),
    security(("bearer" = [])),
    components(schemas(ErrorBody)),
    tags(
        (name = "events", description = "The event registry: events and their records"),
        (name = "bus", description = "The durable event bus"),
        (name = "backups", description = "Backups, restores, the catalogue and the audit trail"),
        (name = "operations", description = "Health, the standby and this document"),
    ),
    modifiers(&Shared)
)]
struct ApiDoc;

/// The routes of this module: the document itself.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(document))
}

/// The document as JSON, built once when the app is (cloning it shares the bytes).
#[derive(Clone)]
struct Served(Bytes);

/// Splits the routers into the axum router and the document, and serves the document and
/// Swagger UI from the router.
pub(super) fn finish(api: OpenApiRouter<AppState>) -> Router<AppState> {
    let (router, document) = OpenApiRouter::with_openapi(ApiDoc::openapi()).merge(api).split_for_parts();
    // The modifier ran on the fixed parts only: the shared answers go on the routes now.
    let document = with_shared_answers(document);
    let json = Bytes::from(document.to_json().unwrap_or_default());
    let docs: Router<AppState> = SwaggerUi::new(DOCS).config(Config::from(DOCUMENT)).into();
    router.layer(Extension(Served(json))).merge(docs.layer(middleware::map_response(docs_errors)))
}

/// Swagger UI answers a file it does not have with a bare 404 (and a page it cannot render
/// with its error as text): in the API's one error shape here too.
async fn docs_errors(response: Response) -> Response {
    match response.status() {
        StatusCode::NOT_FOUND => {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "Swagger UI has no such file").into_response()
        }
        status if status.is_server_error() => ApiError::internal("Swagger UI failed").into_response(),
        _ => response,
    }
}

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "operations",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 \
        document", content_type = "application/json", body = Object))
)]
async fn document(Extension(Served(json)): Extension<Served>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], json)
}

/// Adds the bearer security scheme. (It runs on the fixed parts, before the routers' paths
/// are merged in: the shared answers are added by [`with_shared_answers`].)
struct Shared;

impl Modify for Shared {
    fn modify(&self, openapi: &mut Document) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some(
            "ADMIN_TOKEN for everything; READ_TOKEN for GET on every route but the backup routes",
        ));
        components.add_security_scheme(BEARER, SecurityScheme::Http(scheme.build()));
    }
}

/// Adds the answers every route shares to each operation that does not list them itself.
fn with_shared_answers(mut document: Document) -> Document {
    for item in document.paths.paths.values_mut() {
        let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
        for operation in operations.into_iter().flatten() {
            shared_answers(operation);
        }
    }
    document
}

fn shared_answers(operation: &mut Operation) {
    // `security(())` marks an open route; the rest take the document's bearer requirement.
    let open =
        operation.security.as_ref().is_some_and(|s| s.iter().all(|r| *r == SecurityRequirement::default()));
    let mut add = |status: &str, description: &str| {
        let response = openapi::Response::builder()
            .description(description)
            .content("application/json", openapi::Content::new(Some(Ref::from_schema_name("ErrorBody"))))
            .build();
        operation.responses.responses.entry(status.to_owned()).or_insert(RefOr::T(response));
    };
    if !open {
        add("401", "`unauthorized`: no bearer token, or not a valid one (ADMIN_TOKEN is set)");
        add("403", "`forbidden`: the read token, on a backup route or a method other than GET");
        add(
            "503",
            "`unavailable` or `restoring`: the store is being restored (retry after Retry-After); \
             `standby`: this server is a standby and takes no writes",
        );
    }
    if operation.request_body.is_some() {
        add("413", "`payload_too_large`: the body is larger than BODY_LIMIT");
    }
}
