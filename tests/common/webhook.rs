//! A small webhook receiver: an HTTP server on 127.0.0.1 that keeps every POST it gets.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::Value;

/// One notification as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub body: Vec<u8>,
    pub json: Value,
    pub signature: Option<String>,
}

/// The receiver; stops when dropped.
pub struct Receiver {
    pub url: String,
    got: Arc<Mutex<Vec<Received>>>,
    /// How many POSTs to refuse before accepting, and with which status (to exercise retries).
    refuse: Arc<Mutex<(usize, StatusCode)>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let got = Arc::new(Mutex::new(Vec::new()));
        let refuse = Arc::new(Mutex::new((0, StatusCode::SERVICE_UNAVAILABLE)));
        let app = Router::new().route("/hook", post(receive)).with_state((got.clone(), refuse.clone()));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver { url, got, refuse, task }
    }

    /// Answers the next `n` POSTs with 503.
    pub fn refuse_next(&self, n: usize) {
        self.refuse_next_with(n, StatusCode::SERVICE_UNAVAILABLE);
    }

    /// Answers the next `n` POSTs with `status`.
    pub fn refuse_next_with(&self, n: usize, status: StatusCode) {
        *self.refuse.lock().unwrap() = (n, status);
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits (at most `secs`) for a notice whose `event` and `subject` are these.
    pub async fn wait_for(&self, secs: u64, event: &str, subject: &str) -> Received {
        let what = format!("a {event} notice about {subject}");
        crate::common::wait_for(secs, &what, || async {
            self.received().into_iter().find(|r| r.json["event"] == event && r.json["subject"] == subject)
        })
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Shared = (Arc<Mutex<Vec<Received>>>, Arc<Mutex<(usize, StatusCode)>>);

async fn receive(State((got, refuse)): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    {
        let mut refuse = refuse.lock().unwrap();
        if refuse.0 > 0 {
            refuse.0 -= 1;
            return refuse.1;
        }
    }
    let signature = headers.get("x-eventvault-signature").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    got.lock().unwrap().push(Received { body: body.to_vec(), json, signature });
    StatusCode::NO_CONTENT
}
