//! `eventvault worker`: follows the bus over HTTP and never opens the store.
//!
//! Delivery is at-least-once: a message's offset is committed on the server only after the
//! message was handled, so a crash of the worker or the server at any moment re-delivers at
//! most the messages whose commit had not landed.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use futures_util::StreamExt;
use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::config::WorkerOptions;

/// Why a session with the server ended without an error.
enum End {
    Shutdown,
    /// The server's log was replaced by a restore: read the offset again and resubscribe.
    Replaced,
}

/// Runs the worker until SIGTERM or SIGINT.
pub async fn run(opts: WorkerOptions) -> anyhow::Result<()> {
    if !crate::names::is_token(&opts.consumer, 128) {
        bail!("invalid consumer name {:?}: names match [A-Za-z0-9._-]{{1,128}}", opts.consumer);
    }
    let client = Client::builder().connect_timeout(Duration::from_secs(5)).build()?;
    let (stop_tx, stop) = watch::channel(false);
    let signals = crate::signals::ShutdownSignals::new()?;
    tokio::spawn(async move {
        signals.recv().await;
        let _ = stop_tx.send(true);
    });
    let mut worker = Worker { client, opts, stop, backoff: Backoff::default() };
    tracing::info!(server = %worker.opts.server, consumer = %worker.opts.consumer, "worker started");
    loop {
        match worker.session().await {
            Ok(End::Shutdown) => break,
            Ok(End::Replaced) => {
                tracing::warn!("the server's bus log was replaced by a restore (a new timeline); resyncing")
            }
            Err(e) => {
                let wait = worker.backoff.next(worker.opts.max_backoff_ms);
                tracing::warn!(error = %format!("{e:#}"), retry_in_ms = wait.as_millis() as u64, "bus unavailable");
                if worker.sleep(wait).await {
                    break;
                }
            }
        }
    }
    tracing::info!("worker stopped");
    Ok(())
}

struct Worker {
    client: Client,
    opts: WorkerOptions,
    stop: watch::Receiver<bool>,
    backoff: Backoff,
}

impl Worker {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.opts.server.trim_end_matches('/'))
    }

    fn auth(&self, req: RequestBuilder) -> RequestBuilder {
        match &self.opts.token {
            Some(token) if !token.is_empty() => req.bearer_auth(token),
            _ => req,
        }
    }

    /// Sleeps, or returns `true` at once when asked to stop.
    async fn sleep(&mut self, wait: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(wait) => *self.stop.borrow(),
            _ = self.stop.changed() => true,
        }
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// The committed offset and the timeline it was read on (none for a consumer without one:
    /// it starts from the beginning of whatever log there is).
    async fn offset(&self) -> anyhow::Result<(u64, Option<String>)> {
        let url = self.url(&format!("/api/bus/consumers/{}", self.opts.consumer));
        let response = self.auth(self.client.get(url)).send().await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok((0, None));
        }
        let body: Value = checked(response).await?.json().await?;
        let offset = body["offset"]
            .as_u64()
            .ok_or_else(|| anyhow!("the server sent an offset that is not a number"))?;
        Ok((offset, body["timeline"].as_str().map(str::to_owned)))
    }

    /// Commits `offset`, read on `timeline`. Returns `false` when the server's log is on
    /// another timeline by now (a restore replaced it): nothing was stored, and the session
    /// resyncs from the offset the restored log holds.
    async fn commit(&self, offset: u64, timeline: Option<&str>) -> anyhow::Result<bool> {
        let url = self.url(&format!("/api/bus/consumers/{}", self.opts.consumer));
        let body = json!({ "offset": offset, "timeline": timeline });
        let response = self.auth(self.client.put(url)).json(&body).send().await?;
        if response.status() == StatusCode::CONFLICT {
            let body: Value = response.json().await.unwrap_or_default();
            if body["error"]["code"] == "timeline_changed" {
                return Ok(false);
            }
            bail!("server answered 409: {}", body["error"]["message"].as_str().unwrap_or("no message"));
        }
        checked(response).await?;
        Ok(true)
    }

    /// One connection: read the offset, stream from it, handle and commit each message.
    async fn session(&mut self) -> anyhow::Result<End> {
        let (offset, read_on) = self.offset().await.context("reading the consumer offset")?;
        let mut url = self.url(&format!("/api/bus/stream?after={offset}"));
        if let Some(topic) = &self.opts.topic {
            url.push_str(&format!("&topic={topic}"));
        }
        let response = checked(self.auth(self.client.get(url)).send().await?).await?;
        tracing::info!(offset, "following the bus");
        self.backoff = Backoff::default();
        let mut body = response.bytes_stream();
        let mut parser = SseParser::default();
        // The timeline the stream reads (its first event): offsets are committed on it.
        // An offset read on another timeline than the stream's (a restore between the two
        // requests) is read again.
        let mut timeline: Option<String> = read_on;
        loop {
            let chunk = tokio::select! {
                chunk = body.next() => chunk,
                _ = self.stop.changed() => return Ok(End::Shutdown),
            };
            let chunk = match chunk {
                Some(chunk) => chunk.context("reading the stream")?,
                None => bail!("the server closed the stream"),
            };
            for event in parser.feed(&chunk) {
                match event.name.as_str() {
                    "message" => {
                        let message: Value =
                            serde_json::from_str(&event.data).context("decoding a message")?;
                        let seq = message["seq"].as_u64().ok_or_else(|| anyhow!("a message without seq"))?;
                        if !self.handle_until_done(&message).await {
                            return Ok(End::Shutdown);
                        }
                        if !self.commit(seq, timeline.as_deref()).await.context("committing the offset")? {
                            return Ok(End::Replaced);
                        }
                        if self.stopping() {
                            return Ok(End::Shutdown);
                        }
                    }
                    "timeline" => {
                        let data: Value =
                            serde_json::from_str(&event.data).context("decoding the timeline")?;
                        let id = data["timeline"].as_str().map(str::to_owned);
                        if timeline.is_some() && timeline != id {
                            return Ok(End::Replaced);
                        }
                        tracing::info!(
                            timeline = id.as_deref().unwrap_or("unknown"),
                            "on the server's timeline"
                        );
                        timeline = id;
                    }
                    "replaced" => return Ok(End::Replaced),
                    _ => {}
                }
            }
        }
    }

    /// Hands a message to the handler, retrying with backoff until it succeeds. Returns
    /// `false` when asked to stop before it did.
    async fn handle_until_done(&mut self, message: &Value) -> bool {
        let mut backoff = Backoff::default();
        loop {
            match self.handle(message).await {
                Ok(()) => return true,
                Err(e) => {
                    let wait = backoff.next(self.opts.max_backoff_ms);
                    tracing::error!(seq = %message["seq"], error = %format!("{e:#}"), "handler failed; retrying");
                    if self.sleep(wait).await {
                        return false;
                    }
                }
            }
        }
    }

    async fn handle(&self, message: &Value) -> anyhow::Result<()> {
        let line = serde_json::to_string(message)?;
        let Some(cmd) = &self.opts.exec else {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{line}")?;
            out.flush()?;
            return Ok(());
        };
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .env("EVENTVAULT_SEQ", message["seq"].to_string())
            .env("EVENTVAULT_TOPIC", message["topic"].as_str().unwrap_or_default())
            .env("EVENTVAULT_TYPE", message["type"].as_str().unwrap_or_default())
            .stdin(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A handler that does not read its stdin is fine: ignore a broken pipe.
            let _ = stdin.write_all(format!("{line}\n").as_bytes()).await;
        }
        let status = child.wait().await?;
        if !status.success() {
            bail!("{cmd:?} exited with {status}");
        }
        Ok(())
    }
}

/// Turns an HTTP error status into an error that carries the server's message.
async fn checked(response: reqwest::Response) -> anyhow::Result<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body: Value = response.json().await.unwrap_or_default();
    let message = body["error"]["message"].as_str().unwrap_or("no message").to_owned();
    Err(anyhow!("server answered {status}: {message}"))
}

/// Exponential backoff from 250 ms, doubling up to the configured maximum.
#[derive(Default)]
struct Backoff {
    attempt: u32,
}

impl Backoff {
    fn next(&mut self, max_ms: u64) -> Duration {
        let ms = 250u64.saturating_mul(1 << self.attempt.min(16)).min(max_ms.max(1));
        self.attempt += 1;
        Duration::from_millis(ms)
    }
}

/// One Server-Sent Event.
#[derive(Debug, Default, PartialEq)]
struct SseEvent {
    name: String,
    data: String,
}

/// Incremental Server-Sent Events parser (only the fields the bus sends).
#[derive(Default)]
struct SseParser {
    buffer: String,
}

impl SseParser {
    fn feed(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.buffer.push_str(&String::from_utf8_lossy(chunk));
        if self.buffer.contains('\r') {
            self.buffer = self.buffer.replace("\r\n", "\n");
        }
        let mut events = Vec::new();
        while let Some(end) = self.buffer.find("\n\n") {
            let block: String = self.buffer.drain(..end + 2).collect();
            let mut event = SseEvent { name: "message".into(), data: String::new() };
            let mut has_data = false;
            for line in block.lines() {
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "event" => event.name = value.to_owned(),
                    "data" => {
                        if has_data {
                            event.data.push('\n');
                        }
                        event.data.push_str(value);
                        has_data = true;
                    }
                    _ => {}
                }
            }
            if has_data {
                events.push(event);
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_parser_handles_split_chunks_and_comments() {
        let mut p = SseParser::default();
        assert!(p.feed(b": keep-alive\n\nid: 1\nevent: mess").is_empty());
        let events = p.feed(b"age\ndata: {\"seq\":1}\n\nevent: replaced\r\ndata: {}\r\n\r\n");
        assert_eq!(
            events,
            vec![
                SseEvent { name: "message".into(), data: "{\"seq\":1}".into() },
                SseEvent { name: "replaced".into(), data: "{}".into() },
            ]
        );
    }

    #[test]
    fn backoff_grows_and_caps() {
        let mut b = Backoff::default();
        assert_eq!(b.next(1000), Duration::from_millis(250));
        assert_eq!(b.next(1000), Duration::from_millis(500));
        assert_eq!(b.next(1000), Duration::from_millis(1000));
        assert_eq!(b.next(1000), Duration::from_millis(1000));
    }
}
