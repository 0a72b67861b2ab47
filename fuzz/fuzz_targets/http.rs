//! The REST API: every input is one request, sent with `oneshot` to the real application
//! (`eventvault::http::app`) over a real store in a scratch directory, as the server builds
//! it. The input is the request as text:
//!
//! ```text
//! POST /api/events/{event}/registrations?x=1
//! authorization: Bearer {admin}
//!
//! {"email":"ada@example.com"}
//! ```
//!
//! The request line, then header lines, then an empty line and the body. Everywhere,
//! `{event}`, `{record}`, `{backup}` and `{eventbackup}` become the ids and names of things
//! that exist (made again when an input deletes them), `{admin}` and `{read}` the two tokens,
//! so mutations reach past "not found". Inputs that are not a valid request are skipped.
//!
//! What must hold for every request:
//! - no 5xx but 507 (a full disk): a 500 is a bug, a 503 cannot happen without a concurrent
//!   restore;
//! - every error response has the API's one error shape, `{"error": {"code", "message"}}`;
//! - without a token, only `GET`/`HEAD /api/health` and the documentation (`/api/openapi.json`,
//!   `/api/docs…`) succeed; with the read token, only GET and HEAD.
//!
//! Requests change the store, so the world starts over every [`RESET_EVERY`] inputs: a fresh
//! store with the same kinds of fixtures, so that state (kept archives, thousands of event
//! backups) does not pile up and slow every later input down.

#![no_main]

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use axum::Router;
use clap::Parser;
use eventvault::backup::BackupManager;
use eventvault::config::Options;
use eventvault::http::{app, AppState, Auth};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tokio::sync::watch;
use tower::ServiceExt;

#[global_allocator]
static ALLOC: eventvault_fuzz::BoundedAlloc = eventvault_fuzz::BoundedAlloc;

/// Inputs between two fresh worlds.
const RESET_EVERY: u64 = 4096;
const ADMIN_TOKEN: &str = "fuzz-admin-token";
const READ_TOKEN: &str = "fuzz-read-token";
/// Largest request body (the server's default is 16 MiB; fuzz inputs are far smaller).
const BODY_LIMIT: usize = 1 << 20;
/// How long a response body is read: long enough for any finite body, short enough that an
/// endless one (the bus's Server-Sent Events) costs little.
const BODY_WAIT: Duration = Duration::from_millis(50);

/// The options of a server on `dir`, as the integration tests start one, with both tokens.
fn options(dir: &std::path::Path) -> Options {
    let arg = |p: &str| dir.join(p).into_os_string().into_string().expect("a UTF-8 scratch path");
    Options::try_parse_from([
        "eventvault".to_owned(),
        format!("--storage-dir={}", arg("storage")),
        format!("--backup-dir={}", arg("backups")),
        format!("--restore-dir={}", arg("restore")),
        "--listen-addr=127.0.0.1:0".to_owned(),
        format!("--admin-token={ADMIN_TOKEN}"),
        format!("--read-token={READ_TOKEN}"),
        "--block-cache-mb=8".to_owned(),
        "--auto-backup-enabled=false".to_owned(),
        "--auto-restore-enabled=false".to_owned(),
        "--max-backups=4".to_owned(),
        "--browse-cache-mb=16".to_owned(),
        "--restore-max-bytes=268435456".to_owned(),
        format!("--body-limit={BODY_LIMIT}"),
    ])
    .expect("valid options")
}

/// Ids and names that exist before each input.
#[derive(Default)]
struct Fixtures {
    event: String,
    record: String,
    backup: String,
    event_backup: String,
}

/// A server's state over a store of its own, and what is needed to tear it down.
struct World {
    app: Router,
    backups: Arc<BackupManager>,
    fixtures: Fixtures,
    /// An input may have deleted or replaced a fixture.
    stale: bool,
    _shutdown: watch::Sender<bool>,
    _lock: Box<dyn std::any::Any>,
    dir: tempfile::TempDir,
}

struct Harness {
    rt: tokio::runtime::Runtime,
    world: Option<World>,
    inputs: u64,
    /// `FUZZ_VERBOSE=1`: print every request and its answer (to see what seeds reach).
    verbose: bool,
}

thread_local! {
    static HARNESS: RefCell<Option<Harness>> = const { RefCell::new(None) };
}

/// A response, read.
struct Answer {
    status: StatusCode,
    body: Vec<u8>,
}

async fn send(app: &Router, req: Request<Body>) -> Answer {
    let response = app.clone().oneshot(req).await.expect("the router is infallible");
    let status = response.status();
    let body = match tokio::time::timeout(BODY_WAIT, response.into_body().collect()).await {
        Ok(Ok(collected)) => collected.to_bytes().to_vec(),
        Ok(Err(e)) => format!("<body error: {e}>").into_bytes(),
        Err(_) => b"<body still streaming>".to_vec(),
    };
    Answer { status, body }
}

/// A request the fixtures are made with; it must succeed.
async fn setup(app: &Router, method: Method, path: &str, body: &str) -> Value {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(Body::from(body.to_owned()))
        .expect("a valid setup request");
    let answer = send(app, req).await;
    assert!(
        answer.status.is_success(),
        "setup {path}: {} {}",
        answer.status,
        String::from_utf8_lossy(&answer.body)
    );
    serde_json::from_slice(&answer.body).expect("setup answers JSON")
}

/// Whether a GET of `path` succeeds.
async fn exists(app: &Router, path: &str) -> bool {
    let req = Request::get(path)
        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
        .body(Body::empty())
        .expect("a valid probe");
    send(app, req).await.status.is_success()
}

fn text(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_else(|| panic!("no {key} in {v}")).to_owned()
}

impl World {
    fn new(rt: &tokio::runtime::Runtime) -> World {
        let dir =
            tempfile::Builder::new().prefix("http-").tempdir_in(eventvault_fuzz::scratch()).expect("a dir");
        let opts = options(dir.path());
        let (backups, lock) = eventvault::server::start(&opts).expect("the server starts");
        let (shutdown, shutdown_rx) = watch::channel(false);
        let auth = Auth::new(opts.admin_token.as_deref(), opts.read_token.as_deref());
        let state = AppState::new(backups.clone(), auth, shutdown_rx);
        let app = app(state, opts.body_limit);
        let mut world = World {
            app,
            backups,
            fixtures: Fixtures::default(),
            stale: true,
            _shutdown: shutdown,
            _lock: Box::new(lock),
            dir,
        };
        rt.block_on(async {
            setup(
                &world.app,
                Method::POST,
                "/api/bus/emails",
                r#"{"type":"reminder.sent","data":{"to":"ada"}}"#,
            )
            .await;
            setup(&world.app, Method::PUT, "/api/bus/consumers/billing", r#"{"offset":1}"#).await;
            world.refresh().await;
        });
        world
    }

    /// Makes again what an input deleted (or a restore replaced): an event with records, a
    /// backup of it and an archive. Only what is gone is made, so this is cheap.
    async fn refresh(&mut self) {
        if !std::mem::take(&mut self.stale) {
            return;
        }
        let (app, f) = (&self.app, &mut self.fixtures);
        if f.event.is_empty() || !exists(app, &format!("/api/events/{}", f.event)).await {
            let event = setup(app, Method::POST, "/api/events", r#"{"name":"RustConf","city":"Lyon"}"#).await;
            f.event = text(&event, "id");
            f.record.clear();
            f.event_backup.clear();
            let batch = format!("/api/events/{}/payments/_batch", f.event);
            setup(app, Method::POST, &batch, r#"[{"amount":30},{"amount":45.5,"currency":"EUR"}]"#).await;
        }
        let record = format!("/api/events/{}/registrations", f.event);
        if f.record.is_empty() || !exists(app, &format!("{record}/{}", f.record)).await {
            let made =
                setup(app, Method::POST, &record, r#"{"email":"ada@example.com","ticket":"standard"}"#).await;
            f.record = text(&made, "id");
        }
        if f.event_backup.is_empty() || !exists(app, &format!("/api/backups/{}", f.event_backup)).await {
            let made = setup(app, Method::POST, &format!("/api/events/{}/backup", f.event), "").await;
            f.event_backup = text(&made, "name");
        }
        if f.backup.is_empty() || !exists(app, &format!("/api/backups/{}", f.backup)).await {
            let made = setup(app, Method::POST, "/api/backup/create", r#"{"label":"fixture"}"#).await;
            f.backup = text(&made, "name");
        }
    }

    /// Closes the store before the directory goes.
    fn close(self) {
        // A restore writes its pre-restore backup on a thread of its own: it finishes first.
        self.backups.wait_for_safety_copies();
        let _ = self.backups.store().close();
        drop(self.app);
        drop(self.backups);
        drop(self._lock);
        let _ = self.dir.close();
    }

    fn substitute(&self, raw: &[u8]) -> Vec<u8> {
        let f = &self.fixtures;
        let pairs: [(&[u8], &str); 6] = [
            (b"{event}", &f.event),
            (b"{record}", &f.record),
            (b"{backup}", &f.backup),
            (b"{eventbackup}", &f.event_backup),
            (b"{admin}", ADMIN_TOKEN),
            (b"{read}", READ_TOKEN),
        ];
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut rest = raw;
        'outer: while !rest.is_empty() {
            if rest[0] == b'{' {
                for (key, value) in pairs {
                    if rest.starts_with(key) {
                        out.extend_from_slice(value.as_bytes());
                        rest = &rest[key.len()..];
                        continue 'outer;
                    }
                }
            }
            out.push(rest[0]);
            rest = &rest[1..];
        }
        out
    }

    /// The request an input describes, or `None` when it is not one.
    fn request(&self, data: &[u8]) -> Option<(Request<Body>, Token)> {
        let (head, body) = match find(data, b"\n\n") {
            Some(i) => (&data[..i], &data[i + 2..]),
            None => (data, &[][..]),
        };
        let mut lines = head.split(|b| *b == b'\n');
        let first = lines.next()?;
        let space = first.iter().position(|b| *b == b' ')?;
        let method = Method::from_bytes(&first[..space]).ok()?;
        let uri = Uri::try_from(self.substitute(first[space + 1..].trim_ascii())).ok()?;
        let mut builder = Request::builder().method(method).uri(uri);
        let mut token = Token::None;
        for line in lines.filter(|l| !l.trim_ascii().is_empty()) {
            let colon = line.iter().position(|b| *b == b':')?;
            let name = HeaderName::from_bytes(line[..colon].trim_ascii()).ok()?;
            let value = HeaderValue::from_bytes(&self.substitute(line[colon + 1..].trim_ascii())).ok()?;
            if name == axum::http::header::AUTHORIZATION {
                token = token.and(&value);
            }
            builder = builder.header(name, value);
        }
        Some((builder.body(Body::from(self.substitute(body))).ok()?, token))
    }
}

/// Which token a request presents, as far as the server's rules go.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Token {
    None,
    Read,
    /// The admin token, an invalid one, or several headers.
    Other,
}

impl Token {
    fn and(self, value: &HeaderValue) -> Token {
        let bearer = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
        match (self, bearer) {
            (Token::None, Some(READ_TOKEN)) => Token::Read,
            _ => Token::Other,
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The API's one error shape.
fn is_error_shape(body: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<Value>(body) else { return false };
    v.as_object().is_some_and(|o| o.len() == 1)
        && v["error"]["code"].is_string()
        && v["error"]["message"].is_string()
}

/// What answers without a token: the health check and the API documentation (the OpenAPI
/// document, Swagger UI's page and assets).
fn is_open(method: &Method, path: &str) -> bool {
    let docs = path == "/api/openapi.json" || path == "/api/docs" || path.starts_with("/api/docs/");
    matches!(*method, Method::GET | Method::HEAD) && (path == "/api/health" || docs)
}

fn check(method: &Method, uri: &Uri, token: Token, answer: &Answer) -> Result<(), &'static str> {
    let status = answer.status;
    if status.is_server_error() && status != StatusCode::INSUFFICIENT_STORAGE {
        return Err("a server error");
    }
    if (status.is_client_error() || status.is_server_error())
        && method != Method::HEAD
        && !is_error_shape(&answer.body)
    {
        return Err("an error response not in the API's error shape");
    }
    if status.is_success() {
        if token == Token::None && !is_open(method, uri.path()) && uri.path().starts_with("/api") {
            return Err("success without a token");
        }
        if token == Token::Read && !matches!(*method, Method::GET | Method::HEAD) {
            return Err("success of a write with the read token");
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    HARNESS.with(|cell| {
        let mut cell = cell.borrow_mut();
        let harness = cell.get_or_insert_with(|| {
            // A 500's detail is logged, never answered: show errors, so a finding says why.
            let _ = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::ERROR)
                .with_writer(std::io::stderr)
                .try_init();
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            Harness { rt, world: None, inputs: 0, verbose: eventvault_fuzz::verbose() }
        });
        if harness.inputs % RESET_EVERY == 0 {
            if let Some(old) = harness.world.take() {
                old.close();
            }
            harness.world = Some(World::new(&harness.rt));
        }
        harness.inputs += 1;
        let world = harness.world.as_mut().expect("a world");
        harness.rt.block_on(world.refresh());
        let Some((req, token)) = world.request(data) else { return };
        let (method, uri, headers) = (req.method().clone(), req.uri().clone(), req.headers().clone());
        let answer = harness.rt.block_on(send(&world.app, req));
        // A restore writes its pre-restore backup on a thread of its own: finished before the
        // next input (and before libFuzzer exits the process under it).
        world.backups.wait_for_safety_copies();
        if harness.verbose {
            eprintln!("{method} {uri} -> {} {}", answer.status, String::from_utf8_lossy(&answer.body));
        }
        // Deletions, restores and purges may take fixtures away.
        let path = uri.path();
        world.stale |= answer.status.is_success()
            && (method == Method::DELETE || path.contains("restore") || path.contains("/backup/create"));
        if let Err(what) = check(&method, &uri, token, &answer) {
            panic!(
                "{what}: {} for {method} {uri}\nrequest headers: {headers:?}\nrequest body: {:?}\nresponse body: {}",
                answer.status,
                String::from_utf8_lossy(&data[find(data, b"\n\n").map_or(data.len(), |i| i + 2)..]),
                String::from_utf8_lossy(&answer.body),
            );
        }
    });
});
