//! Bad input: each mistake gets its 4xx in the one error shape, and the server keeps serving.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{data_dir, Api, Server};

/// (method, path, raw body, headers, status, error code)
type Case = (Method, String, Option<String>, Vec<(&'static str, &'static str)>, StatusCode, &'static str);

#[tokio::test]
async fn bad_input_table() {
    let dir = data_dir();
    let server = Server::start_with(dir.path(), 0, &[("BODY_LIMIT", "65536")]);
    let api = Api::new(&server);
    let event = api.create("/api/events", json!({"name": "E"})).await;
    let id = event["id"].as_str().unwrap().to_owned();
    let record = api.create(&format!("/api/events/{id}/guests"), json!({"n": 1})).await;
    let rid = record["id"].as_str().unwrap().to_owned();

    let huge = format!("{{\"blob\":\"{}\"}}", "x".repeat(100 << 10));
    let too_many: Vec<_> = (0..10_001).map(|_| json!({})).collect();
    let too_many = serde_json::to_string(&too_many).unwrap();
    let rec = format!("/api/events/{id}/guests/{rid}");

    let cases: Vec<Case> = vec![
        (
            Method::POST,
            "/api/events".into(),
            Some("{\"name\":".into()),
            vec![],
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            Method::POST,
            "/api/events".into(),
            Some("not json".into()),
            vec![],
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            Method::POST,
            "/api/events".into(),
            Some("".into()),
            vec![],
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            Method::POST,
            "/api/events".into(),
            Some("[1,2]".into()),
            vec![],
            StatusCode::BAD_REQUEST,
            "invalid_document",
        ),
        (
            Method::POST,
            "/api/events".into(),
            Some("\"str\"".into()),
            vec![],
            StatusCode::BAD_REQUEST,
            "invalid_document",
        ),
        (
            Method::POST,
            "/api/events".into(),
            Some(huge.clone()),
            vec![],
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            Method::POST,
            format!("/api/events/{id}/Bad!"),
            Some("{}".into()),
            vec![],
            StatusCode::BAD_REQUEST,
            "invalid_collection",
        ),
        (
            Method::POST,
            format!("/api/events/{id}/9lives"),
            Some("{}".into()),
            vec![],
            StatusCode::BAD_REQUEST,
            "invalid_collection",
        ),
        (
            Method::GET,
            format!("/api/events/{id}/{}", "a".repeat(65)),
            None,
            vec![],
            StatusCode::BAD_REQUEST,
            "invalid_collection",
        ),
        (Method::GET, "/api/events/bad.id".into(), None, vec![], StatusCode::BAD_REQUEST, "invalid_id"),
        (Method::GET, "/api/events/a%2Fb".into(), None, vec![], StatusCode::BAD_REQUEST, "invalid_id"),
        (Method::GET, "/api/events/01UNKNOWN".into(), None, vec![], StatusCode::NOT_FOUND, "not_found"),
        (
            Method::GET,
            "/api/events/01UNKNOWN/guests".into(),
            None,
            vec![],
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::POST,
            "/api/events/01UNKNOWN/guests".into(),
            Some("{}".into()),
            vec![],
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::GET,
            format!("/api/events/{id}/guests/01UNKNOWN"),
            None,
            vec![],
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::POST,
            format!("/api/events/{id}/guests/_batch"),
            Some("{}".into()),
            vec![],
            StatusCode::BAD_REQUEST,
            "invalid_document",
        ),
        (
            Method::POST,
            format!("/api/events/{id}/guests/_batch"),
            Some("[{}, 3]".into()),
            vec![],
            StatusCode::BAD_REQUEST,
            "invalid_document",
        ),
        (
            Method::POST,
            format!("/api/events/{id}/guests/_batch"),
            Some(too_many),
            vec![],
            StatusCode::BAD_REQUEST,
            "batch_too_large",
        ),
        (Method::GET, "/api/events?limit=0".into(), None, vec![], StatusCode::BAD_REQUEST, "invalid_limit"),
        (
            Method::GET,
            "/api/events?limit=1001".into(),
            None,
            vec![],
            StatusCode::BAD_REQUEST,
            "invalid_limit",
        ),
        (Method::GET, "/api/events?limit=abc".into(), None, vec![], StatusCode::BAD_REQUEST, "invalid_query"),
        (Method::GET, "/api/events?limit=-1".into(), None, vec![], StatusCode::BAD_REQUEST, "invalid_query"),
        (
            Method::GET,
            "/api/events?cursor=zzz".into(),
            None,
            vec![],
            StatusCode::BAD_REQUEST,
            "invalid_cursor",
        ),
        (
            Method::PATCH,
            rec.clone(),
            Some("{}".into()),
            vec![("If-Match", "abc")],
            StatusCode::BAD_REQUEST,
            "invalid_if_match",
        ),
        (Method::PATCH, rec.clone(), Some("[1]".into()), vec![], StatusCode::BAD_REQUEST, "invalid_document"),
        (Method::PUT, rec.clone(), Some("null".into()), vec![], StatusCode::BAD_REQUEST, "invalid_document"),
        (
            Method::POST,
            "/api/bus/registry".into(),
            Some("{\"type\":\"x\"}".into()),
            vec![],
            StatusCode::BAD_REQUEST,
            "reserved_topic",
        ),
        (
            Method::POST,
            "/api/bus/Bad".into(),
            Some("{\"type\":\"x\"}".into()),
            vec![],
            StatusCode::BAD_REQUEST,
            "invalid_topic",
        ),
        (
            Method::POST,
            "/api/bus/mine".into(),
            Some("{\"type\":5}".into()),
            vec![],
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            Method::POST,
            "/api/bus/mine".into(),
            Some("{\"data\":1}".into()),
            vec![],
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            Method::POST,
            "/api/bus/mine".into(),
            Some("{\"type\":\"a b\"}".into()),
            vec![],
            StatusCode::BAD_REQUEST,
            "invalid_type",
        ),
        (Method::GET, "/api/bus?after=-4".into(), None, vec![], StatusCode::BAD_REQUEST, "invalid_query"),
        (Method::GET, "/api/bus?topic=UPPER".into(), None, vec![], StatusCode::BAD_REQUEST, "invalid_topic"),
        (
            Method::GET,
            "/api/bus/stream".into(),
            None,
            vec![("Last-Event-ID", "x")],
            StatusCode::BAD_REQUEST,
            "invalid_last_event_id",
        ),
        (
            Method::GET,
            "/api/bus/stream?topic=a/b".into(),
            None,
            vec![],
            StatusCode::BAD_REQUEST,
            "invalid_topic",
        ),
        (
            Method::PUT,
            "/api/bus/consumers/c".into(),
            Some("{\"offset\":99}".into()),
            vec![],
            StatusCode::BAD_REQUEST,
            "offset_past_end",
        ),
        (
            Method::PUT,
            "/api/bus/consumers/c".into(),
            Some("{\"offset\":\"1\"}".into()),
            vec![],
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            Method::PUT,
            "/api/bus/consumers/a%20b".into(),
            Some("{\"offset\":1}".into()),
            vec![],
            StatusCode::BAD_REQUEST,
            "invalid_consumer",
        ),
        (Method::GET, "/api/bus/consumers/nobody".into(), None, vec![], StatusCode::NOT_FOUND, "not_found"),
        (Method::GET, "/api/nothing-here".into(), None, vec![], StatusCode::NOT_FOUND, "not_found"),
        (Method::GET, "/nothing-here".into(), None, vec![], StatusCode::NOT_FOUND, "not_found"),
        (
            Method::DELETE,
            "/api/events".into(),
            None,
            vec![],
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Method::GET,
            format!("/api/events/{id}/guests/_batch"),
            None,
            vec![],
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (method, path, body, headers, expected, code) in cases {
        let mut req = api.request(method.clone(), &path);
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let response = req.send().await.unwrap();
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        assert_eq!(status, expected, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], code, "{method} {path}: {body}");
        assert!(!body["error"]["message"].as_str().unwrap_or_default().is_empty(), "{method} {path}: {body}");
    }

    // Nothing changed, and the server still serves.
    assert_eq!(api.get(&rec).await.1, record);
    assert_eq!(api.get(&format!("/api/events/{id}")).await.1, event);
    let (status, health) = api.get("/api/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["store"]["lastSeq"], 2);
    api.create("/api/events", json!({"still": "serving"})).await;
    assert!(!server.log().contains("panicked"));
}

#[tokio::test]
async fn a_body_without_content_type_is_accepted_as_json() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    let response =
        api.request(Method::POST, "/api/events").body("{\"name\":\"curl -d\"}").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
}

/// Keys are looked up once each: a record of 500,000 keys (7 MB, within BODY_LIMIT) is
/// stored in a moment, not after the billions of comparisons a scan per key would take.
#[tokio::test]
async fn a_record_of_many_keys_is_stored_without_a_scan_per_key() {
    let dir = crate::common::data_dir();
    let server = crate::common::Server::start(dir.path());
    let api = crate::common::Api::new(&server);
    let event = api.create("/api/events", serde_json::json!({"name": "wide"})).await;
    let id = event["id"].as_str().unwrap();
    let wide: serde_json::Map<String, serde_json::Value> =
        (0..500_000).map(|i| (format!("k{i}"), serde_json::json!(i))).collect();
    let path = format!("/api/events/{id}/things");
    let sent = api.post(&path, serde_json::Value::Object(wide));
    let (status, record) =
        tokio::time::timeout(std::time::Duration::from_secs(120), sent).await.expect("answered, not stuck");
    assert_eq!(status, reqwest::StatusCode::CREATED);
    assert_eq!(record["k499999"], 499_999);
}
