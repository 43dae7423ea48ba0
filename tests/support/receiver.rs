//! A platform's push receiver for tests: a real HTTP server on 127.0.0.1:0 that records every
//! push as it arrives (before answering) and answers as the test scripts it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use rsa::RsaPublicKey;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::sha2::Sha256;
use rsa::signature::Verifier;
use serde_json::Value;

/// How the receiver answers one push.
#[derive(Clone, Debug)]
pub enum Reply {
    /// HTTP 200 `{"code":200}`: acknowledged.
    Ack,
    /// HTTP 200 with this body.
    Body(&'static str),
    /// This HTTP status with `{"code":200}`.
    Status(u16),
    /// Waits this long, then acknowledges.
    Hang(Duration),
}

/// One push as received.
#[derive(Clone, Debug)]
pub struct Received {
    /// `X-Carbon-Push-Id`.
    pub push_id: i64,
    /// `X-Carbon-Timestamp`.
    pub timestamp: String,
    /// `X-Carbon-Signature`.
    pub signature: String,
    /// The raw body.
    pub body: Bytes,
    /// The body as JSON.
    pub json: Value,
    /// When it arrived.
    pub at: Instant,
}

impl Received {
    /// Whether the signature is the server's over `timestamp + "." + body`.
    pub fn verifies_with(&self, public_key_pem: &str) -> bool {
        let Ok(key) = RsaPublicKey::from_public_key_pem(public_key_pem) else { return false };
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(&self.signature) else { return false };
        let Ok(signature) = Signature::try_from(bytes.as_slice()) else { return false };
        let mut message = format!("{}.", self.timestamp).into_bytes();
        message.extend_from_slice(&self.body);
        VerifyingKey::<Sha256>::new(key).verify(&message, &signature).is_ok()
    }

    /// The `transactionId`s of a bill push.
    pub fn transaction_ids(&self) -> Vec<String> {
        self.json["bill"]
            .as_array()
            .map(|rows| rows.iter().map(|row| row["transactionId"].as_str().unwrap_or_default().to_owned()).collect())
            .unwrap_or_default()
    }
}

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    script: VecDeque<Reply>,
    fallback: Option<Reply>,
}

/// A running receiver.
#[derive(Clone)]
pub struct Receiver {
    /// Its URL, to subscribe.
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

impl Receiver {
    /// Starts a receiver that acknowledges everything unless scripted otherwise.
    pub async fn start() -> Receiver {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = axum::Router::new().route("/push", axum::routing::post(receive)).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind receiver");
        let url = format!("http://{}/push", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, inner }
    }

    /// Answers the next pushes with `replies`, in order.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.lock().script.extend(replies);
    }

    /// Answers every push with `reply` once the script is used up (default: [`Reply::Ack`]).
    pub fn otherwise(&self, reply: Reply) {
        self.lock().fallback = Some(reply);
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.lock().received.clone()
    }

    /// Waits until `count` pushes have arrived; panics after `within`.
    pub async fn wait_for(&self, count: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {count} pushes arrived within {within:?}: {:?}",
                received.len(),
                received.iter().map(|r| (r.push_id, r.json.to_string())).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

async fn receive(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let received = Received {
        push_id: header("X-Carbon-Push-Id").parse().unwrap_or(-1),
        timestamp: header("X-Carbon-Timestamp"),
        signature: header("X-Carbon-Signature"),
        json: serde_json::from_slice(&body).unwrap_or(Value::Null),
        body,
        at: Instant::now(),
    };
    let reply = {
        let mut inner = inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        inner.received.push(received);
        let fallback = inner.fallback.clone().unwrap_or(Reply::Ack);
        inner.script.pop_front().unwrap_or(fallback)
    };
    let ack = r#"{"code":200}"#.to_owned();
    match reply {
        Reply::Ack => (StatusCode::OK, ack),
        Reply::Body(body) => (StatusCode::OK, body.to_owned()),
        Reply::Status(status) => (StatusCode::from_u16(status).unwrap(), ack),
        Reply::Hang(wait) => {
            tokio::time::sleep(wait).await;
            (StatusCode::OK, ack)
        }
    }
}
