//! Events and records: create, read, update, delete, pagination, If-Match.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::common::{data_dir, Api, Server};

#[tokio::test]
async fn event_crud_with_versions_and_if_match() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);

    let event = api.create("/api/events", json!({"name": "RustConf", "city": "Lyon", "id": "ignored"})).await;
    let id = event["id"].as_str().unwrap().to_owned();
    assert_ne!(id, "ignored", "the server sets ids");
    assert_eq!(event["name"], "RustConf");
    assert_eq!(event["version"], 1);
    assert!(event["createdAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(event["createdAt"], event["updatedAt"]);

    let (status, got) = api.get(&format!("/api/events/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, event);

    // PUT replaces the client fields and bumps the version.
    let (status, put) =
        api.call(Method::PUT, &format!("/api/events/{id}"), Some(json!({"name": "RustConf 2"}))).await;
    assert_eq!(status, StatusCode::OK, "{put}");
    assert_eq!(put["version"], 2);
    assert_eq!(put["createdAt"], event["createdAt"]);
    assert!(put.get("city").is_none(), "PUT replaces: {put}");

    // PATCH merges; null removes.
    let (status, patched) = api
        .call(Method::PATCH, &format!("/api/events/{id}"), Some(json!({"city": "Paris", "name": null})))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(patched["city"], "Paris");
    assert!(patched.get("name").is_none());
    assert_eq!(patched["version"], 3);

    // If-Match: a stale version is refused with 412 and changes nothing.
    let response = api
        .request(Method::PATCH, &format!("/api/events/{id}"))
        .header("If-Match", "2")
        .json(&json!({"city": "Berlin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PRECONDITION_FAILED);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "version_mismatch");
    assert_eq!(api.get(&format!("/api/events/{id}")).await.1["city"], "Paris");

    let response = api
        .request(Method::PATCH, &format!("/api/events/{id}"))
        .header("If-Match", "\"3\"")
        .json(&json!({"city": "Berlin"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let response = api
        .request(Method::DELETE, &format!("/api/events/{id}"))
        .header("If-Match", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PRECONDITION_FAILED);

    let (status, deleted) = api.call(Method::DELETE, &format!("/api/events/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(deleted["id"], id.as_str());
    assert_eq!(api.get(&format!("/api/events/{id}")).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn records_crud_and_event_delete_cascades() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    let event = api.create("/api/events", json!({"name": "Meetup"})).await;
    let id = event["id"].as_str().unwrap();

    let reg = api.create(&format!("/api/events/{id}/registrations"), json!({"email": "a@example.com"})).await;
    let rid = reg["id"].as_str().unwrap();
    assert_eq!(reg["version"], 1);
    let pay = api.create(&format!("/api/events/{id}/payments"), json!({"amount": 30})).await;

    let path = format!("/api/events/{id}/registrations/{rid}");
    assert_eq!(api.get(&path).await.1, reg);
    let (status, updated) = api.call(Method::PATCH, &path, Some(json!({"paid": true}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(updated["email"], "a@example.com");
    assert_eq!(updated["version"], 2);
    let (status, replaced) = api.call(Method::PUT, &path, Some(json!({"email": "b@example.com"}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        replaced,
        json!({"id": rid, "email": "b@example.com", "createdAt": reg["createdAt"], "updatedAt": replaced["updatedAt"], "version": 3})
    );

    // A batch is written atomically and listed in creation order.
    let batch: Vec<_> = (0..25).map(|i| json!({"n": i})).collect();
    let (status, created) = api.post(&format!("/api/events/{id}/registrations/_batch"), json!(batch)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["count"], 25);

    let (_, page) = api.get(&format!("/api/events/{id}/registrations")).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 26);
    assert_eq!(page["nextCursor"], serde_json::Value::Null);

    // Delete one record.
    assert_eq!(api.call(Method::DELETE, &path, None).await.0, StatusCode::OK);
    assert_eq!(api.get(&path).await.0, StatusCode::NOT_FOUND);
    assert_eq!(api.call(Method::DELETE, &path, None).await.0, StatusCode::NOT_FOUND);

    // Deleting the event deletes all its records.
    let (status, deleted) = api.call(Method::DELETE, &format!("/api/events/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(deleted["recordsDeleted"], json!({"payments": 1, "registrations": 25}));
    assert_eq!(api.get(&format!("/api/events/{id}/registrations")).await.0, StatusCode::NOT_FOUND);
    let pay_path = format!("/api/events/{id}/payments/{}", pay["id"].as_str().unwrap());
    assert_eq!(api.get(&pay_path).await.0, StatusCode::NOT_FOUND);
    let (_, health) = api.get("/api/health").await;
    assert_eq!(health["store"]["events"], 0);
}

#[tokio::test]
async fn pagination_walks_every_item_once() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(api.create("/api/events", json!({"n": i})).await["id"].as_str().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/events?limit=3&cursor={c}"),
            None => "/api/events?limit=3".to_owned(),
        };
        let (status, page) = api.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        pages += 1;
        seen.extend(page["items"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_owned()));
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ids, "creation order, each once");

    // Records paginate the same way.
    let event = &ids[0];
    let batch: Vec<_> = (0..5).map(|i| json!({"n": i})).collect();
    api.create(&format!("/api/events/{event}/guests/_batch"), json!(batch)).await;
    let (_, first) = api.get(&format!("/api/events/{event}/guests?limit=2")).await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let cursor = first["nextCursor"].as_str().unwrap();
    let (_, second) = api.get(&format!("/api/events/{event}/guests?limit=2&cursor={cursor}")).await;
    assert_eq!(second["items"][0]["n"], 2);
}

#[tokio::test]
async fn batch_answers_ids_and_echoes_documents_on_request() {
    let dir = data_dir();
    let server = Server::start(dir.path());
    let api = Api::new(&server);
    let event = api.create("/api/events", json!({"name": "batch"})).await;
    let id = event["id"].as_str().unwrap();
    let path = format!("/api/events/{id}/guests/_batch");

    // By default: the count and the ids, in the order of the request, and nothing else.
    let (status, answer) = api.post(&path, json!([{"n": 0}, {"n": 1, "id": "ignored"}, {"n": 2}])).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let ids: Vec<String> =
        answer["ids"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().to_owned()).collect();
    assert_eq!(answer, json!({"count": 3, "ids": ids}), "no items unless asked: {answer}");
    for (n, rid) in ids.iter().enumerate() {
        let (status, got) = api.get(&format!("/api/events/{id}/guests/{rid}")).await;
        assert_eq!(status, StatusCode::OK, "{got}");
        assert_eq!(got["n"], n);
    }
    let (status, page) = api.get(&format!("/api/events/{id}/guests")).await;
    assert_eq!(status, StatusCode::OK);
    let listed: Vec<&str> =
        page["items"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(listed, ids, "ids are in creation order");

    // ?echo=true adds the documents exactly as stored (and as the bus carries them).
    let (status, echoed) = api.post(&format!("{path}?echo=true"), json!([{"n": 3}, {"n": 4}])).await;
    assert_eq!(status, StatusCode::CREATED, "{echoed}");
    assert_eq!(echoed["count"], 2);
    let items = echoed["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    for (i, item) in items.iter().enumerate() {
        assert_eq!(item["id"], echoed["ids"][i]);
        assert_eq!(item["n"], 3 + i);
        assert_eq!(item["version"], 1);
        let (_, stored) = api.get(&format!("/api/events/{id}/guests/{}", item["id"].as_str().unwrap())).await;
        assert_eq!(&stored, item);
    }
    let messages = api.all_messages().await;
    let last = messages.last().unwrap();
    assert_eq!(
        (&last["type"], &last["recordId"], &last["data"]),
        (&json!("record.created"), &echoed["ids"][1], &items[1])
    );
    let (status, plain) = api.post(&format!("{path}?echo=false"), json!([{"n": 5}])).await;
    assert_eq!(status, StatusCode::CREATED, "{plain}");
    assert_eq!(plain.as_object().unwrap().keys().collect::<Vec<_>>(), ["count", "ids"]);

    // A value echo does not take is a 400 in the API's error shape, and nothing is written.
    let (status, err) = api.post(&format!("{path}?echo=yes"), json!([{"n": 6}])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["error"]["code"], "invalid_query", "{err}");
    let (_, page) = api.get(&format!("/api/events/{id}/guests")).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 6, "{page}");
}
