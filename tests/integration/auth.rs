//! Tokens: the auth matrix, and refusing an open non-loopback listener.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{bin, data_dir, Api, Server};

#[tokio::test]
async fn auth_matrix() {
    let dir = data_dir();
    let server =
        Server::start_with(dir.path(), 0, &[("ADMIN_TOKEN", "admin-secret"), ("READ_TOKEN", "read-secret")]);
    let anon = Api::new(&server);
    let admin = anon.with_token("admin-secret");
    let reader = anon.with_token("read-secret");
    let wrong = anon.with_token("admin-secret-not");

    let event = admin.create("/api/events", json!({"name": "secret"})).await;
    let id = event["id"].as_str().unwrap();
    let event_path = format!("/api/events/{id}");

    let cases: Vec<(&Api, Method, String, StatusCode)> = vec![
        (&anon, Method::GET, "/api/health".into(), StatusCode::OK),
        (&anon, Method::GET, "/api/events".into(), StatusCode::UNAUTHORIZED),
        (&anon, Method::POST, "/api/events".into(), StatusCode::UNAUTHORIZED),
        (&anon, Method::GET, "/api/bus".into(), StatusCode::UNAUTHORIZED),
        (&anon, Method::GET, "/api/nope".into(), StatusCode::UNAUTHORIZED),
        (&wrong, Method::GET, "/api/events".into(), StatusCode::UNAUTHORIZED),
        (&wrong, Method::GET, event_path.clone(), StatusCode::UNAUTHORIZED),
        (&reader, Method::GET, "/api/events".into(), StatusCode::OK),
        (&reader, Method::GET, event_path.clone(), StatusCode::OK),
        (&reader, Method::GET, "/api/bus".into(), StatusCode::OK),
        (&reader, Method::POST, "/api/events".into(), StatusCode::FORBIDDEN),
        (&reader, Method::PATCH, event_path.clone(), StatusCode::FORBIDDEN),
        (&reader, Method::DELETE, event_path.clone(), StatusCode::FORBIDDEN),
        (&reader, Method::PUT, "/api/bus/consumers/c".into(), StatusCode::FORBIDDEN),
        (&reader, Method::GET, format!("{event_path}/backup"), StatusCode::FORBIDDEN),
        (&reader, Method::GET, "/api/backups".into(), StatusCode::FORBIDDEN),
        (&reader, Method::GET, "/api/backup/history".into(), StatusCode::FORBIDDEN),
        (&reader, Method::GET, format!("{event_path}/guests"), StatusCode::OK),
        (&admin, Method::GET, format!("{event_path}/backup"), StatusCode::OK),
        (&admin, Method::GET, event_path.clone(), StatusCode::OK),
        (&admin, Method::PATCH, event_path.clone(), StatusCode::OK),
        (&admin, Method::POST, "/api/events".into(), StatusCode::CREATED),
    ];
    for (api, method, path, expected) in cases {
        let body = matches!(method, Method::POST | Method::PATCH | Method::PUT).then(|| json!({"offset": 0}));
        let (status, body) = api.call(method.clone(), &path, body).await;
        assert_eq!(status, expected, "{method} {path} with {:?}: {body}", api.token);
        if status.is_client_error() {
            assert!(body["error"]["message"].is_string(), "error shape: {body}");
        }
    }
    // The event was not changed by any refused request.
    assert_eq!(admin.get(&event_path).await.1["version"], 2);
    // A malformed Authorization header is a 401 too.
    let response =
        anon.request(Method::GET, "/api/events").header("Authorization", "Basic abc").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
}

#[test]
fn refuses_non_loopback_without_admin_token() {
    let dir = data_dir();
    let output = std::process::Command::new(bin())
        .arg("serve")
        .env("LISTEN_ADDR", "0.0.0.0:0")
        .env_remove("ADMIN_TOKEN")
        .env("STORAGE_DIR", dir.path().join("storage"))
        .env("BACKUP_DIR", dir.path().join("backups"))
        .env("RESTORE_DIR", dir.path().join("restore"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("without ADMIN_TOKEN"), "{stderr}");
    assert!(stderr.contains("--allow-unauthenticated"), "{stderr}");
}

#[tokio::test]
async fn the_scheme_is_case_insensitive_head_probes_health_and_a_token_no_client_can_send_is_refused() {
    let dir = data_dir();
    let server = Server::start_with(dir.path(), 0, &[("ADMIN_TOKEN", "admin-secret")]);
    let api = Api::new(&server);
    for header in ["bearer admin-secret", "BEARER admin-secret", "Bearer  admin-secret "] {
        let response =
            api.http.get(server.url("/api/backups")).header("authorization", header).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{header:?}");
    }
    let response =
        api.http.get(server.url("/api/backups")).header("authorization", "Basic YTpi").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("is not `Bearer <token>`"), "{body}");
    for path in ["/api/health", "/api/openapi.json"] {
        let response = api.request(Method::HEAD, path).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "HEAD {path} answers as its GET");
    }
    let response = api.request(Method::HEAD, "/api/backups").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    for token in ["tökén", "two words"] {
        let env = vec![("ADMIN_TOKEN".to_owned(), token.to_owned())];
        let Err((status, log)) = Server::try_start(dir.path(), 0, &env) else {
            panic!("{token:?} was accepted")
        };
        assert!(status.is_some_and(|s| !s.success()));
        assert!(log.join("\n").contains("visible ASCII"), "{log:?}");
    }
}
