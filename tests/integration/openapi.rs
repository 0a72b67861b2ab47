//! The OpenAPI document against what the server serves, in both directions: every operation
//! in it reaches a handler, no other method is served on its paths, every route the README
//! names is in it (and the README's list of routes is exactly the document's), and no API
//! route is registered outside the document. Schemathesis (`make api-check`) checks the
//! answers themselves against it.

use std::collections::BTreeSet;

use reqwest::{header, Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{data_dir, Api, Server};

const ADMIN: &str = "openapi-admin";

/// The message of the router's fallback 404: no route matched.
const NO_ROUTE: &str = "no such route";

/// `(METHOD, /path/{template})` of every operation in the document.
fn operations(document: &Value) -> BTreeSet<(String, String)> {
    let mut all = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in ["get", "put", "post", "delete", "patch", "head", "options", "trace"] {
            if item.get(method).is_some() {
                all.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    all
}

/// A concrete path for a template: each `{parameter}` becomes a valid name.
fn fill(template: &str) -> String {
    template
        .split('/')
        .map(|segment| if segment.starts_with('{') { "probe" } else { segment })
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether a concrete `path` matches a document `template`, `{x}` matching any one segment.
fn matches(template: &str, path: &str) -> bool {
    let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len() && t.iter().zip(&p).all(|(t, p)| t.starts_with('{') || t == p)
}

async fn fetch_document(server: &Server) -> Value {
    // Open without a token, as documentation is.
    let response = reqwest::get(server.url("/api/openapi.json")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()[header::CONTENT_TYPE].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("application/json"), "{content_type}");
    let text = response.text().await.unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("the document is not JSON ({e}): {text}"))
}

#[tokio::test]
async fn every_operation_in_the_document_reaches_a_handler() {
    let dir = data_dir();
    let server = Server::start_with(dir.path(), 0, &[("ADMIN_TOKEN", ADMIN), ("READ_TOKEN", "openapi-read")]);
    let document = fetch_document(&server).await;
    let version = document["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1."), "OpenAPI {version:?}");
    assert_eq!(document["components"]["securitySchemes"]["bearer"]["scheme"], "bearer", "{document}");
    let admin = Api::new(&server).with_token(ADMIN);
    let operations = operations(&document);
    assert!(operations.len() >= 30, "{operations:?}");

    for (method, template) in &operations {
        let path = fill(template);
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = admin.request(method.clone(), &path);
        if method != Method::GET {
            request = request.json(&json!({}));
        }
        // `send` returns with the headers, so the endless SSE stream is only opened.
        let response = request.send().await.unwrap();
        let status = response.status();
        let body = if status == StatusCode::OK && template == "/api/bus/stream" {
            String::new()
        } else {
            response.text().await.unwrap()
        };
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}: {body}");
        assert!(!body.contains(NO_ROUTE), "{method} {path} has no route: {status} {body}");
        assert!(status.as_u16() < 500, "{method} {path}: {status} {body}");
        // Every status a handler gave is one the document lists for the operation.
        let listed = &document["paths"][template][method.as_str().to_lowercase()]["responses"];
        assert!(listed.get(status.as_str()).is_some(), "{method} {path}: {status} is not documented: {body}");
    }

    // No other method is served on a documented path: the router's 405 answers them.
    let methods = [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE];
    let paths: BTreeSet<&String> = operations.iter().map(|(_, path)| path).collect();
    for template in paths {
        for method in &methods {
            if operations.contains(&(method.to_string(), template.clone())) {
                continue;
            }
            let path = fill(template);
            // A path that another template matches too (`/api/events/{id}/backup` is also
            // `/api/events/{id}/{collection}`; `…/_batch` is also `…/{record_id}`) is that
            // operation's business.
            let shadowed =
                operations.iter().any(|(m, t)| m == method.as_str() && t != template && matches(t, &path));
            if shadowed {
                continue;
            }
            let (status, body) = admin.call(method.clone(), &path, Some(json!({}))).await;
            assert_eq!(
                status,
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path} is served but not documented: {body}"
            );
            assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
        }
    }

    // Swagger UI is a page, not part of the API: open, and pointed at the document.
    let page = reqwest::get(server.url("/api/docs/")).await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    assert!(page.text().await.unwrap().contains("swagger-ui"));
    let config = reqwest::get(server.url("/api/docs/swagger-initializer.js")).await.unwrap();
    assert_eq!(config.status(), StatusCode::OK);
    assert!(config.text().await.unwrap().contains("/api/openapi.json"));
    // A file it does not have is a 404 in the API's error shape.
    let (status, body) = Api::new(&server).get("/api/docs/no-such-file.js").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found", "{body}");
    // Narrowly open: the rest of the API still wants the token.
    let (status, _) = Api::new(&server).get("/api/docsx").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = Api::new(&server).post("/api/openapi.json", json!({})).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// `METHOD /path` as the README writes a route, with the path up to a query or the end of the
/// code span.
fn readme_routes(text: &str) -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
        let mut rest = text;
        let marker = format!("{method} /");
        while let Some(at) = rest.find(&marker) {
            let path: String = rest[at + method.len() + 1..]
                .chars()
                .take_while(|c| !c.is_whitespace() && !"`?),;\"".contains(*c))
                .collect();
            routes.insert((method.to_owned(), path.trim_end_matches(['.', ':']).to_owned()));
            rest = &rest[at + marker.len()..];
        }
    }
    routes
}

#[tokio::test]
async fn every_route_the_readme_names_is_in_the_document_and_the_list_is_complete() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let document = fetch_document(&server).await;
    let operations = operations(&document);
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();

    // Anywhere in the README (route tables, prose): an API route that is in the document.
    for (method, path) in readme_routes(&readme).into_iter().filter(|(_, path)| path.starts_with("/api")) {
        let found = operations.iter().any(|(m, t)| *m == method && matches(t, &path));
        assert!(found, "README.md names {method} {path}, which the OpenAPI document does not list");
    }

    // The table of routes in "## API documentation" is the document's, route for route.
    let section = readme.split("\n## API documentation\n").nth(1).expect("README has ## API documentation");
    let section = section.split("\n## ").next().unwrap();
    let table: String = section.lines().filter(|l| l.starts_with('|')).collect::<Vec<_>>().join("\n");
    let listed = readme_routes(&table);
    let unlisted: Vec<_> = operations.difference(&listed).collect();
    let undocumented: Vec<_> = listed.difference(&operations).collect();
    assert!(unlisted.is_empty(), "README's table of routes lacks {unlisted:?}");
    assert!(undocumented.is_empty(), "README's table of routes names {undocumented:?}, not in the document");
    assert_eq!(listed.len(), operations.len());
}

#[test]
fn no_api_route_is_registered_outside_the_document() {
    // A route added with plain axum (`.route("/api/…", …)`) is served but missing from the
    // document; only `routes!(handler)` on an OpenApiRouter puts it in both. Routes outside
    // `/api` (pages, their assets) may be plain, with their path written out.
    let mut offenders = Vec::new();
    let mut stack = vec![std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/src"))];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for call in [".route(", ".route_service(", ".nest(", ".nest_service("] {
                for (at, _) in text.match_indices(call) {
                    let argument = text[at + call.len()..].trim_start();
                    let plain_page = argument.starts_with('"') && !argument.starts_with("\"/api");
                    if !plain_page {
                        let line = text[..at].lines().count();
                        offenders.push(format!("{}:{line}", path.display()));
                    }
                }
            }
        }
    }
    assert!(offenders.is_empty(), "API routes outside the OpenAPI document: {offenders:?}");
}
