//! B4's reference: the least an HTTP service can do to store a record in RocksDB. One axum
//! handler parses the JSON body, gives it an id, and does one RocksDB put (WAL on, no fsync,
//! as eventvault's default). No auth, no bus, no counters, no checks.
//!
//! `cargo build --example reference`, then `reference <dir> <addr>`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;

type Db = Arc<rocksdb::DB>;

async fn put(
    State(db): State<Db>,
    Path((event, collection)): Path<(String, String)>,
    Json(mut body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let id = ulid::Ulid::new().to_string();
    body["id"] = Value::String(id.clone());
    let key = format!("r/{event}/{collection}/{id}");
    let bytes = serde_json::to_vec(&body).expect("a JSON value serialises");
    let db = db.clone();
    tokio::task::spawn_blocking(move || db.put(key, bytes)).await.expect("join").expect("put");
    (StatusCode::CREATED, Json(body))
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: reference <dir> <addr>");
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:5051".into());
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    let db: Db = Arc::new(rocksdb::DB::open(&opts, dir).expect("open RocksDB"));
    let app = Router::new().route("/api/events/{id}/{collection}", post(put)).with_state(db);
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    eprintln!("reference listening on http://{addr}");
    axum::serve(listener, app).await.expect("serve");
}
