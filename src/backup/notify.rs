//! Failure notifications: a JSON POST to WEBHOOK_URL when a backup, a repository upload, a
//! restore, a drill or shipping fails, when backups go stale, and when each recovers.
//!
//! Nothing waits for a notification: [`Notifier`] queues it (at most [`QUEUE`]; beyond that
//! it is dropped and counted) and one thread delivers the queue in order, retrying with
//! exponential backoff. A notice carries what failed and the error's message, never a token,
//! a key or the webhook secret; with WEBHOOK_SECRET its body is signed with HMAC-SHA256 in
//! the [`SIGNATURE_HEADER`] header (`sha256=<hex>`), and its `id` lets a receiver drop a
//! replayed one.

use std::collections::HashMap;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Mutex;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use super::config::WebhookConfig;
use crate::observe;

/// The header of the body's signature.
pub const SIGNATURE_HEADER: &str = "X-Eventvault-Signature";
/// Notices waiting for delivery, at most.
const QUEUE: usize = 256;
/// How long one delivery attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a notice is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A backup (a whole-store archive or an event backup) was not written.
    Backup,
    /// A backup was not stored in the repository.
    RepoUpload,
    /// A restore (of any kind, dry runs included) failed.
    Restore,
    /// A restore drill found a backup that does not restore.
    Drill,
    /// Shipping the bus log to the repository fails or lags beyond SHIP_MAX_LAG_SECS.
    Shipping,
    /// The data changed and the newest backup is older than twice the backup interval.
    StaleBackups,
}

impl Subject {
    /// Its name in a notice.
    pub fn as_str(self) -> &'static str {
        match self {
            Subject::Backup => "backup",
            Subject::RepoUpload => "repo_upload",
            Subject::Restore => "restore",
            Subject::Drill => "drill",
            Subject::Shipping => "shipping",
            Subject::StaleBackups => "stale_backups",
        }
    }
}

/// Sends notices, when WEBHOOK_URL is set.
#[derive(Debug)]
pub struct Notifier {
    queue: Option<SyncSender<Vec<u8>>>,
    /// What is failing now (a subject and its scope: the kind of backup, the backup a restore
    /// read), with the message it failed with: a success of the same sends a recovery.
    failing: Mutex<HashMap<(Subject, String), String>>,
    host: String,
}

impl Notifier {
    /// A notifier that sends to `config`, or one that sends nothing.
    pub fn new(config: Option<WebhookConfig>) -> Notifier {
        let queue = config.and_then(|config| {
            let (tx, rx) = sync_channel(QUEUE);
            let spawned = std::thread::Builder::new()
                .name("webhook".into())
                .spawn(move || deliver_all(&config, rx));
            match spawned {
                Ok(_) => Some(tx),
                Err(e) => {
                    tracing::error!(error = %e, "the webhook thread did not start; no notifications will be sent");
                    None
                }
            }
        });
        Notifier { queue, failing: Mutex::new(HashMap::new()), host: super::config::host_name() }
    }

    /// Whether notices go anywhere.
    pub fn enabled(&self) -> bool {
        self.queue.is_some()
    }

    /// `subject` is failing since before this process started (a failed drill, which the
    /// audit trail keeps): its next success sends a recovery, and nothing is sent now.
    pub fn failing_since_before(&self, subject: Subject, message: &str) {
        self.lock().insert((subject, String::new()), message.to_owned());
    }

    /// `subject` failed (within `scope`: say, `full` backups, or restores of one backup): a
    /// notice every time.
    pub fn failed(&self, subject: Subject, scope: &str, message: &str, details: Value) {
        self.lock().insert((subject, scope.to_owned()), message.to_owned());
        self.send("failed", subject, message, details);
    }

    /// `subject` went well within `scope`: a recovery notice when it was failing there.
    pub fn succeeded(&self, subject: Subject, scope: &str, details: Value) {
        let was = self.lock().remove(&(subject, scope.to_owned()));
        if let Some(failure) = was {
            let message = format!("{} recovered (it had failed: {failure})", subject.as_str());
            self.send("recovered", subject, &message, details);
        }
    }

    /// A condition that holds (`Some(why)`) or not: a notice when it starts, and a recovery
    /// when it ends, not one per check.
    pub fn condition(&self, subject: Subject, failing: Option<String>) {
        let key = (subject, String::new());
        let mut states = self.lock();
        match (failing, states.contains_key(&key)) {
            (Some(why), false) => {
                states.insert(key, why.clone());
                drop(states);
                self.send("failed", subject, &why, Value::Null);
            }
            (None, true) => {
                drop(states);
                self.succeeded(subject, "", Value::Null);
            }
            _ => {}
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(Subject, String), String>> {
        self.failing.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send(&self, event: &str, subject: Subject, message: &str, details: Value) {
        let Some(queue) = &self.queue else { return };
        let notice = json!({
            "id": ulid::Ulid::new().to_string(),
            "event": event,
            "subject": subject.as_str(),
            "message": crate::untrusted::bounded(message),
            "at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "host": self.host,
            "service": "eventvault",
            "version": env!("CARGO_PKG_VERSION"),
            "details": details,
        });
        let body = serde_json::to_vec(&notice).unwrap_or_default();
        match queue.try_send(body) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                metrics::counter!(observe::WEBHOOKS, "outcome" => "dropped").increment(1);
                tracing::warn!(subject = subject.as_str(), "webhook queue full: a notification was dropped");
            }
            Err(TrySendError::Disconnected(_)) => {
                tracing::warn!(
                    subject = subject.as_str(),
                    "the webhook thread ended: a notification was dropped"
                );
            }
        }
    }
}

/// The signature header's value for `body`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Why one attempt failed, and whether another may help.
#[derive(Debug)]
struct Failed {
    why: String,
    retry: bool,
}

fn deliver_all(config: &WebhookConfig, queue: Receiver<Vec<u8>>) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "the webhook thread has no runtime; no notifications will be sent");
            return;
        }
    };
    let client = match reqwest::Client::builder()
        .timeout(ATTEMPT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "no HTTP client for the webhook; no notifications will be sent");
            return;
        }
    };
    // In order: a recovery never arrives before the failure it ends.
    while let Ok(body) = queue.recv() {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(config.first_wait)
            .with_max_delay(Duration::from_secs(60))
            .with_max_times(config.retries)
            .with_jitter();
        let attempt = || post(&client, config, &body);
        let sent =
            runtime
                .block_on(attempt.retry(backoff).sleep(tokio::time::sleep).when(|e: &Failed| e.retry).notify(
                |e: &Failed, wait| tracing::info!(error = %e.why, ?wait, "webhook delivery failed; retrying"),
            ));
        match sent {
            Ok(()) => metrics::counter!(observe::WEBHOOKS, "outcome" => "delivered").increment(1),
            Err(e) => {
                metrics::counter!(observe::WEBHOOKS, "outcome" => "failed").increment(1);
                tracing::error!(receiver = %config.shown(), error = %e.why, "a webhook notification could not be delivered");
            }
        }
    }
}

async fn post(client: &reqwest::Client, config: &WebhookConfig, body: &[u8]) -> Result<(), Failed> {
    let mut request = client
        .post(config.url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(reqwest::header::USER_AGENT, concat!("eventvault/", env!("CARGO_PKG_VERSION")))
        .body(body.to_vec());
    if let Some(secret) = &config.secret {
        request = request.header(SIGNATURE_HEADER, signature(secret, body));
    }
    match request.send().await {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => {
            let status = response.status();
            // A receiver that refuses the notice will refuse it again; one that is overloaded
            // or down may not.
            let retry = status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
            Err(Failed { why: format!("the receiver answered {status}"), retry })
        }
        Err(e) => Err(Failed { why: e.without_url().to_string(), retry: true }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body_in_hex() {
        // RFC 4231, test case 2.
        let sig = signature("Jefe", b"what do ya want for nothing?");
        assert_eq!(sig, "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn a_condition_notifies_when_it_starts_and_when_it_ends_not_on_every_check() {
        let notifier = Notifier::new(None);
        notifier.condition(Subject::Shipping, Some("lag 90 s".into()));
        let key = (Subject::Shipping, String::new());
        assert!(notifier.lock().contains_key(&key));
        notifier.condition(Subject::Shipping, Some("lag 95 s".into()));
        assert_eq!(notifier.lock().get(&key).map(String::as_str), Some("lag 90 s"));
        notifier.condition(Subject::Shipping, None);
        assert!(notifier.lock().is_empty());
    }

    #[test]
    fn a_success_recovers_only_its_own_scope() {
        let notifier = Notifier::new(None);
        notifier.failed(Subject::Backup, "full", "disk full", Value::Null);
        notifier.succeeded(Subject::Backup, "event", Value::Null);
        assert_eq!(notifier.lock().len(), 1, "an event backup does not recover full backups");
        notifier.succeeded(Subject::Backup, "full", Value::Null);
        assert!(notifier.lock().is_empty());
    }
}
