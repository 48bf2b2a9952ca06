//! Delivers [`Notification`]s: a JSON POST to the pipeline's webhook, retried with backoff on a
//! network error or a 5xx answer, and a record of each delivery in the store (HKube's record,
//! reference §3.10), which `GET /webhooks/status|results|list/{jobId}` show.
//!
//! Each delivery is its own task, bounded in number and in time; a job's deliveries to one
//! webhook go one after the other, in the order of its statuses. A receiver that refuses,
//! fails or hangs costs its deliveries their attempts and nothing else. The engine only ever
//! sends into an unbounded channel, so it never waits on a receiver.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use super::{Kind, Notification};
use crate::engine::now_ms;
use crate::store::Store;

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// How deliveries are tried.
#[derive(Debug, Clone)]
pub struct WebhookOptions {
    /// Tries per delivery, the first included (HKube: 3).
    pub attempts: u32,
    /// The wait before the second try; each later wait doubles.
    pub first_retry: Duration,
    /// The longest one try may take, connection and answer included.
    pub timeout: Duration,
    /// Deliveries under way at once; more wait for a free slot.
    pub concurrent: usize,
    /// Where stored results are, as results documents name it (`storageModule`).
    pub storage_module: &'static str,
}

impl Default for WebhookOptions {
    fn default() -> Self {
        WebhookOptions {
            attempts: 3,
            first_retry: Duration::from_secs(2),
            timeout: Duration::from_secs(10),
            concurrent: 64,
            storage_module: "@hkube/fs-adapter",
        }
    }
}

/// The delivery service, running.
#[derive(Debug)]
pub struct Webhooks {
    task: tokio::task::JoinHandle<()>,
}

impl Webhooks {
    /// Starts delivering on the current tokio runtime; the engine sends to the returned
    /// sender (`Engine::with_notifications`).
    pub fn start(
        options: WebhookOptions,
        store: Arc<dyn Store>,
    ) -> (mpsc::UnboundedSender<Notification>, Webhooks) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Notification>();
        let client = https_client();
        let slots = Arc::new(Semaphore::new(options.concurrent.max(1)));
        let options = Arc::new(options);
        let task = tokio::spawn(async move {
            // The last delivery of each job's webhook: the next one waits for it, so a
            // receiver gets a job's statuses in the order they happened.
            let mut chains: HashMap<(String, Kind), JoinHandle<()>> = HashMap::new();
            while let Some(notification) = rx.recv().await {
                chains.retain(|_, delivery| !delivery.is_finished());
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                let (client, options, store) = (client.clone(), options.clone(), store.clone());
                let chain = (notification.job_id.clone(), notification.kind);
                let previous = chains.remove(&chain);
                let delivery = tokio::spawn(async move {
                    if let Some(previous) = previous {
                        let _ = previous.await;
                    }
                    let record = deliver(&client, &options, &notification).await;
                    let (job_id, kind) = (notification.job_id.clone(), notification.kind);
                    let saved = tokio::task::spawn_blocking(move || {
                        store.add_webhook_record(&job_id, kind.as_str(), &record)
                    })
                    .await;
                    if let Ok(Err(error)) = saved {
                        eprintln!(
                            "hkube: job {}: the record of its {} webhook was not kept: {error}",
                            notification.job_id,
                            notification.kind.as_str()
                        );
                    }
                    drop(slot);
                });
                chains.insert(chain, delivery);
            }
            for (_, delivery) in chains {
                let _ = delivery.await;
            }
        });
        (tx, Webhooks { task })
    }

    /// Waits until every notification handed over has been delivered or given up; returns
    /// once every sender is gone (the engine has stopped) and the last delivery ended.
    pub async fn finished(self) {
        let _ = self.task.await;
    }
}

/// http and https (rustls with aws-lc-rs, the system's roots, as the CLI's client).
fn https_client() -> HttpsClient {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match builder.with_provider_and_native_roots(provider.clone()) {
        Ok(builder) => builder,
        Err(error) => {
            // http receivers still work; https ones fail with a certificate error, recorded.
            eprintln!("hkube: webhooks: the system's certificates could not be read: {error}");
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map(|b| {
                    b.with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth()
                });
            match config {
                Ok(config) => hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config),
                Err(_) => hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
                    rustls::ClientConfig::builder()
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth(),
                ),
            }
        }
    };
    let connector = builder.https_or_http().enable_http1().build();
    Client::builder(TokioExecutor::new()).build(connector)
}

/// How one try ended.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    /// The receiver answered with this status.
    Status(u16, String),
    /// No answer: the error's short name (HKube records `ECONNREFUSED` and the like) and text.
    NoAnswer(String, String),
}

impl Answer {
    /// A 5xx or no answer may be passing; a 4xx will not change on a retry.
    fn worth_retrying(&self) -> bool {
        match self {
            Answer::Status(code, _) => *code >= 500,
            Answer::NoAnswer(..) => true,
        }
    }
    fn succeeded(&self) -> bool {
        matches!(self, Answer::Status(code, _) if *code < 400)
    }
}

/// Tries a delivery until it succeeds, fails for good or runs out of tries; returns its record.
async fn deliver(client: &HttpsClient, options: &WebhookOptions, n: &Notification) -> Value {
    let body = body_of(n, options);
    let bytes = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    let mut wait = options.first_retry;
    let mut attempt = 1;
    let answer = loop {
        let answer = post(client, &n.url, bytes.clone(), options.timeout).await;
        if answer.succeeded() || !answer.worth_retrying() || attempt >= options.attempts {
            break answer;
        }
        tokio::time::sleep(wait).await;
        wait = wait.saturating_mul(2);
        attempt += 1;
    };
    record(n, &body, &answer, attempt)
}

/// What is POSTed: the status document for progress; for the result, the results document as
/// `GET /exec/results/{jobId}` answers it.
fn body_of(n: &Notification, options: &WebhookOptions) -> Value {
    let mut body = n.body.clone();
    if n.kind == Kind::Result {
        if let Value::Object(map) = &mut body {
            map.insert("storageModule".into(), json!(options.storage_module));
        }
    }
    body
}

/// HKube's delivery record, with the number of tries and, when there was no answer, why.
fn record(n: &Notification, body: &Value, answer: &Answer, attempts: u32) -> Value {
    let (status_code, status_message) = match answer {
        Answer::Status(code, reason) => (json!(code), json!(reason)),
        Answer::NoAnswer(code, message) => (json!(code), json!(message)),
    };
    json!({
        "jobId": n.job_id,
        "url": n.url,
        "pipelineStatus": body.get("status").cloned().unwrap_or(Value::Null),
        "status": "completed",
        "responseStatus": if answer.succeeded() { "succeed" } else { "failed" },
        "httpResponse": {"statusCode": status_code, "statusMessage": status_message},
        "attempts": attempts,
        "timestamp": now_ms(),
    })
}

async fn post(client: &HttpsClient, url: &str, body: Bytes, timeout: Duration) -> Answer {
    let request = hyper::Request::post(url)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body));
    let request = match request {
        Ok(request) => request,
        Err(error) => return Answer::NoAnswer("EINVALIDURL".into(), error.to_string()),
    };
    let exchange = async {
        let response = client.request(request).await?;
        let status = response.status();
        // The body is read (and dropped) so the connection can be reused.
        let _ = response.into_body().collect().await;
        Ok::<_, hyper_util::client::legacy::Error>(status)
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(status)) => Answer::Status(
            status.as_u16(),
            status.canonical_reason().unwrap_or("").to_string(),
        ),
        Ok(Err(error)) => Answer::NoAnswer(error_code(&error), error_text(&error)),
        Err(_) => Answer::NoAnswer(
            "ETIMEDOUT".into(),
            format!("no answer within {} s", timeout.as_secs_f64()),
        ),
    }
}

/// Node's names for what went wrong, as HKube's records carry them.
fn error_code(error: &hyper_util::client::legacy::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "ECONNREFUSED",
                std::io::ErrorKind::ConnectionReset => "ECONNRESET",
                std::io::ErrorKind::TimedOut => "ETIMEDOUT",
                std::io::ErrorKind::NotFound => "ENOTFOUND",
                _ => "EIO",
            }
            .to_string();
        }
        source = current.source();
    }
    if error.is_connect() {
        "ECONNREFUSED".into()
    } else {
        "EPROTO".into()
    }
}

/// The whole chain of causes, so the record says what failed.
fn error_text(error: &hyper_util::client::legacy::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
