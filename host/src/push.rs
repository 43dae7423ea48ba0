//! The push dispatcher (SPEC §7), a task of `carbon-host serve`.
//!
//! Every `push_poll` (and whenever this instance changes an authorization or takes a
//! subscription) it claims streams — one per (platform, type) subscription — that have work
//! due, up to `push_concurrency` at a time, and drains each in its own task: renew the lease,
//! send the oldest pending batch, record the answer, repeat; seal waiting rows into batches
//! when none is pending and sealing is due. A failed attempt puts the batch into backoff and
//! ends the drain, so one stream never holds a slot while it waits. Only the lease holder
//! sends a stream's batches, so they go in order and, while instances live, once.
//!
//! **Ack rule (seed §应答机制):** delivered only when the answer is HTTP 2xx with a JSON body
//! whose `code` is the number 200. Anything else — another code, no code, not JSON, an HTTP
//! error, a redirect, no answer within `push_timeout` — is a failed attempt.
//!
//! **Architecture invariant:** the URL is checked again at send time, and names are resolved
//! through a resolver that refuses private, loopback and link-local addresses (unless
//! `push_allow_private`), so the check holds for the very addresses connected to; redirects
//! are not followed and environment proxies are not used.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use carbon_engine::now_ms;
use carbon_engine::push::{AttemptOutcome, PushBatch, PushKind, PushPayload, PushStream, backoff_ms};
use carbon_engine::store::Store;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::api::AppState;
use crate::metrics::PushEvent;
use crate::notify_url;
use crate::wire::BillRow;

/// Largest acknowledgement body read; a longer one is a failed attempt.
const MAX_ACK_BYTES: usize = 64 * 1024;
/// Longest `last_error` kept for operators.
const MAX_ERROR_CHARS: usize = 500;

/// Batches sealed in one transaction (the rest are sealed when these are out).
fn batches_per_seal(kind: PushKind) -> u32 {
    match kind {
        PushKind::Bills => 20,
        PushKind::Authorization => 100,
    }
}

/// The lease on a stream: long enough for one request (bounded by the timeout) and the
/// database writes around it. Renewed before every request.
pub fn lease(timeout: Duration) -> Duration {
    timeout * 3
}

/// An identifier of this process for lease claims: host, pid and a random suffix.
fn instance_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "carbon-host".to_owned());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &suffix[..8])
}

/// Runs the dispatcher until `stop` turns true (or its sender is dropped); then stops claiming
/// and lets each stream finish the request it is making. The caller bounds that wait.
pub async fn run(state: AppState, mut stop: watch::Receiver<bool>) {
    let dispatcher = match Dispatcher::new(state) {
        Ok(dispatcher) => Arc::new(dispatcher),
        Err(err) => {
            tracing::error!(%err, "push dispatcher cannot start");
            return;
        }
    };
    let config = dispatcher.state.config.clone();
    let mut workers = JoinSet::new();
    let mut ticks = tokio::time::interval(config.push_poll);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(instance = %dispatcher.instance, "push dispatcher started");
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = dispatcher.state.push_wake.notified() => {}
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
        while workers.try_join_next().is_some() {}
        let free = (config.push_concurrency as usize).saturating_sub(workers.len());
        if free == 0 {
            continue;
        }
        let claimed = dispatcher
            .store()
            .claim_push_streams(
                &dispatcher.instance,
                now_ms(),
                dispatcher.lease_ms,
                config.push_interval.as_millis() as i64,
                free as u32,
            )
            .await;
        match claimed {
            Ok(streams) => {
                for stream in streams {
                    workers.spawn(dispatcher.clone().drain(stream));
                }
            }
            Err(err) => tracing::warn!(%err, "cannot claim push streams"),
        }
    }
    dispatcher.stopping.store(true, Ordering::Relaxed);
    while workers.join_next().await.is_some() {}
    tracing::info!(instance = %dispatcher.instance, "push dispatcher stopped");
}

/// Whether a stream's drain goes on after a send.
enum Next {
    /// Send the next batch.
    Continue,
    /// The head batch waits for a retry: give the stream up.
    Stop,
}

struct Dispatcher {
    state: AppState,
    client: reqwest::Client,
    instance: String,
    lease_ms: i64,
    stopping: AtomicBool,
}

impl Dispatcher {
    fn new(state: AppState) -> anyhow::Result<Self> {
        let config = &state.config;
        let mut client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(config.push_timeout)
            .user_agent(concat!("carbon-host/", env!("CARGO_PKG_VERSION"), " push"));
        if !config.push_allow_private {
            client = client.dns_resolver(Arc::new(PublicOnlyResolver));
        }
        Ok(Dispatcher {
            client: client.build()?,
            instance: instance_id(),
            lease_ms: lease(config.push_timeout).as_millis() as i64,
            stopping: AtomicBool::new(false),
            state,
        })
    }

    fn store(&self) -> &Arc<dyn Store> {
        self.state.engine.store()
    }

    /// Sends the stream's due batches in order until it has nothing due, a batch must wait
    /// for a retry, the claim is lost or the dispatcher stops; then gives the stream up.
    async fn drain(self: Arc<Self>, stream: PushStream) {
        let mut seal_allowed = stream.seal_due;
        loop {
            if self.stopping.load(Ordering::Relaxed) {
                break;
            }
            let now = now_ms();
            match self.store().renew_push_stream(&stream, now, self.lease_ms).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(platform = stream.platform_id.0, kind = %stream.kind, "push stream lease lost");
                    return;
                }
                Err(err) => {
                    tracing::warn!(%err, "cannot renew a push stream lease");
                    break;
                }
            }
            let head = match self.store().head_push_batch(stream.platform_id, stream.kind).await {
                Ok(head) => head,
                Err(err) => {
                    tracing::warn!(%err, "cannot read the next push batch");
                    break;
                }
            };
            match head {
                Some(batch) if batch.next_attempt_at_ms <= now => match self.send(&stream, &batch).await {
                    Next::Continue => {}
                    Next::Stop => break,
                },
                Some(_) => break,
                None if seal_allowed => {
                    let most = batches_per_seal(stream.kind);
                    match self.store().seal_push_batches(&stream, now, most).await {
                        Ok(Some(made)) => {
                            // A full seal leaves rows behind: seal again once these are out.
                            seal_allowed = made == most;
                            if made == 0 {
                                break;
                            }
                        }
                        Ok(None) => return,
                        Err(err) => {
                            tracing::warn!(%err, "cannot seal push batches");
                            break;
                        }
                    }
                }
                None => break,
            }
        }
        if let Err(err) = self.store().release_push_stream(&stream, now_ms()).await {
            tracing::warn!(%err, "cannot release a push stream (its lease will expire)");
        }
    }

    /// One attempt at `batch`, recorded.
    async fn send(&self, stream: &PushStream, batch: &PushBatch) -> Next {
        let body = match self.store().push_payload(batch.id).await {
            Ok(payload) => body(payload),
            Err(err) => {
                tracing::warn!(%err, batch = batch.id, "cannot read a push batch");
                return Next::Stop;
            }
        };
        let metrics = &self.state.metrics;
        metrics.record_push(PushEvent::Sent, stream.platform_id, stream.kind);
        let started = std::time::Instant::now();
        let outcome = self.deliver(&stream.notify_url, batch.id, &body).await;
        let (platform, kind, id) = (stream.platform_id.0, stream.kind, batch.id);
        match outcome {
            Ok(()) => {
                metrics.record_push(PushEvent::Acked, stream.platform_id, stream.kind);
                tracing::info!(platform, %kind, batch = id, elapsed_ms = started.elapsed().as_millis() as u64, "push delivered");
                if let Err(err) = self.store().record_push_delivered(id, now_ms()).await {
                    // It will be sent again once the lease expires: a duplicate, never a loss.
                    tracing::warn!(%err, batch = id, "cannot record a delivered push");
                    return Next::Stop;
                }
                Next::Continue
            }
            Err(reason) => {
                metrics.record_push(PushEvent::Failed, stream.platform_id, stream.kind);
                let reason: String = reason.chars().take(MAX_ERROR_CHARS).collect();
                let attempt = batch.attempts + 1;
                let retry_ms = self.state.config.push_retry.as_millis() as i64;
                let retry_at = now_ms().saturating_add(backoff_ms(retry_ms, attempt));
                match self.store().record_push_failed(id, batch.attempts, &reason, retry_at).await {
                    Ok(AttemptOutcome::DeadLettered) => {
                        metrics.record_push(PushEvent::DeadLettered, stream.platform_id, stream.kind);
                        tracing::warn!(platform, %kind, batch = id, attempt, %reason, "push dead-lettered");
                        Next::Continue
                    }
                    Ok(AttemptOutcome::RetryAt(_)) => {
                        tracing::info!(platform, %kind, batch = id, attempt, %reason, "push attempt failed");
                        Next::Stop
                    }
                    Ok(AttemptOutcome::Stale) => Next::Stop,
                    Err(err) => {
                        tracing::warn!(%err, batch = id, "cannot record a failed push");
                        Next::Stop
                    }
                }
            }
        }
    }

    /// Sends `body` signed to `url`; `Err` says why the attempt failed.
    async fn deliver(&self, url: &str, batch_id: i64, body: &[u8]) -> Result<(), String> {
        let config = &self.state.config;
        let exchange = async {
            let url = notify_url::check(url, config.push_allow_private)
                .await
                .map_err(|reason| format!("notifyUrl refused: {reason}"))?;
            let timestamp = now_ms().to_string();
            let signature = self.state.signer().sign(&timestamp, body);
            let mut response = self
                .client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json; charset=utf-8")
                .header("X-Carbon-Timestamp", &timestamp)
                .header("X-Carbon-Signature", signature)
                .header("X-Carbon-Push-Id", batch_id.to_string())
                .body(body.to_vec())
                .send()
                .await
                .map_err(describe)?;
            let status = response.status();
            let mut answer = Vec::new();
            while let Some(chunk) = response.chunk().await.map_err(describe)? {
                if answer.len() + chunk.len() > MAX_ACK_BYTES {
                    return Err(format!("answer longer than {MAX_ACK_BYTES} bytes"));
                }
                answer.extend_from_slice(&chunk);
            }
            if !status.is_success() {
                return Err(format!("HTTP {}", status.as_u16()));
            }
            acknowledged(&answer)
        };
        tokio::time::timeout(config.push_timeout, exchange)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {} ms", config.push_timeout.as_millis())))
    }
}

/// The JSON body of a push: `{"total", "bill": [...]}` or `{"cid", "type"}`.
fn body(payload: PushPayload) -> Vec<u8> {
    let value = match payload {
        PushPayload::Bills(bills) => {
            let rows: Vec<BillRow> = bills.into_iter().map(BillRow::from).collect();
            json!({ "total": rows.len(), "bill": rows })
        }
        PushPayload::Authorization { cid, change } => json!({ "cid": cid.as_str(), "type": change }),
    };
    serde_json::to_vec(&value).expect("a JSON value serializes")
}

/// The seed's ack rule: a JSON body whose `code` is the number 200.
fn acknowledged(answer: &[u8]) -> Result<(), String> {
    let value: Value = serde_json::from_slice(answer).map_err(|_| "answer is not JSON".to_owned())?;
    match value.get("code") {
        Some(code) if code.as_i64() == Some(200) => Ok(()),
        Some(code) => Err(format!("answer code {code}, not 200")),
        None => Err("answer has no code".to_owned()),
    }
}

/// A transport error with its causes, e.g. `error sending request: … connection refused`.
fn describe(err: reqwest::Error) -> String {
    if err.is_timeout() {
        return "timed out".to_owned();
    }
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Resolves names like the system does, but refuses a name that resolves to any private,
/// loopback or link-local address, so a name re-pointed after `subscribe` cannot reach them.
struct PublicOnlyResolver;

impl reqwest::dns::Resolve for PublicOnlyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addresses: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(address) = addresses.iter().find(|address| !notify_url::is_public(address.ip())) {
                let refused = format!("{host} resolves to {}, a private, loopback or link-local address", address.ip());
                return Err(refused.into());
            }
            Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_json_code_200_acknowledges() {
        assert_eq!(acknowledged(br#"{"code":200}"#), Ok(()));
        assert_eq!(acknowledged(br#"{"code": 200, "msg": "ok", "content": null}"#), Ok(()));
        assert_eq!(acknowledged(br#"{"code":500}"#), Err("answer code 500, not 200".into()));
        assert_eq!(acknowledged(br#"{"code":"200"}"#), Err(r#"answer code "200", not 200"#.into()));
        assert_eq!(acknowledged(b"{}"), Err("answer has no code".into()));
        assert_eq!(acknowledged(b"OK"), Err("answer is not JSON".into()));
        assert_eq!(acknowledged(b""), Err("answer is not JSON".into()));
    }

    #[tokio::test]
    async fn names_resolving_to_loopback_are_refused() {
        use reqwest::dns::Resolve as _;
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let err = PublicOnlyResolver.resolve(name).await.err().expect("refused");
        assert!(err.to_string().contains("private, loopback or link-local"), "{err}");
    }

    #[test]
    fn bodies_have_the_seed_shapes() {
        let cid = carbon_engine::ids::SubCid::new("c-1").unwrap();
        let value: Value = serde_json::from_slice(&body(PushPayload::Authorization { cid, change: -1 })).unwrap();
        assert_eq!(value, json!({ "cid": "c-1", "type": -1 }));
        let value: Value = serde_json::from_slice(&body(PushPayload::Bills(Vec::new()))).unwrap();
        assert_eq!(value, json!({ "total": 0, "bill": [] }));
    }
}
