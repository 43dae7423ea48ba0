//! A platform's push receiver: what an equity platform runs at its `notifyUrl`.
//!
//! It checks that each push comes from the master platform — `X-Carbon-Signature` is base64
//! RSA-SHA256 (PKCS#1 v1.5) over `X-Carbon-Timestamp + "." + body`, made with the server's
//! private key — and that the timestamp is recent, prints what it got, and acknowledges with
//! `{"code":200}` (the seed's 应答机制). A push it has seen before (same `X-Carbon-Push-Id`) is
//! acknowledged again but not processed twice.
//!
//! ```sh
//! carbon-host key show > carbon-public.pem
//! cargo run -p receiver-example -- carbon-public.pem 127.0.0.1:9000
//! # then subscribe http://<this host>:9000/push for type 1 and/or 2
//! ```

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
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

/// Pushes whose timestamp is further than this from our clock are refused (replays).
const MAX_SKEW_MS: i64 = 5 * 60 * 1000;

struct Receiver {
    verifier: VerifyingKey<Sha256>,
    /// Push ids processed. A real platform keeps these in its database, with the bills.
    seen: Mutex<HashSet<String>>,
}

/// Whether `signature_b64` is the master platform's signature of `timestamp + "." + body`.
fn verify(verifier: &VerifyingKey<Sha256>, timestamp: &str, body: &[u8], signature_b64: &str) -> bool {
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(signature_b64.trim()) else { return false };
    let Ok(signature) = Signature::try_from(bytes.as_slice()) else { return false };
    let mut message = Vec::with_capacity(timestamp.len() + 1 + body.len());
    message.extend_from_slice(timestamp.as_bytes());
    message.push(b'.');
    message.extend_from_slice(body);
    verifier.verify(&message, &signature).is_ok()
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_millis() as i64).unwrap_or(0)
}

fn answer(status: StatusCode, code: u16, msg: &str) -> (StatusCode, String) {
    (status, serde_json::json!({ "code": code, "msg": msg }).to_string())
}

async fn receive(State(receiver): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok()).unwrap_or_default();
    let (timestamp, signature, push_id) =
        (header("X-Carbon-Timestamp"), header("X-Carbon-Signature"), header("X-Carbon-Push-Id"));
    if !verify(&receiver.verifier, timestamp, &body, signature) {
        eprintln!("refused a push with a bad signature");
        return answer(StatusCode::UNAUTHORIZED, 401, "bad signature");
    }
    if timestamp.parse::<i64>().map_or(true, |sent| (now_ms() - sent).abs() > MAX_SKEW_MS) {
        eprintln!("refused a push with a stale timestamp {timestamp}");
        return answer(StatusCode::UNAUTHORIZED, 401, "stale timestamp");
    }
    let Ok(push) = serde_json::from_slice::<Value>(&body) else {
        return answer(StatusCode::BAD_REQUEST, 400, "not JSON");
    };
    let first_time = receiver.seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(push_id.to_owned());
    if !first_time {
        println!("push {push_id}: seen before, acknowledged again");
        return answer(StatusCode::OK, 200, "ok");
    }
    if let Some(bills) = push["bill"].as_array() {
        println!("push {push_id}: {} bill(s)", push["total"]);
        for bill in bills {
            println!(
                "  {} cid={} equityCid={} amount={} type={}",
                bill["transactionId"], bill["cid"], bill["equityCid"], bill["amount"], bill["transactionType"]
            );
        }
    } else {
        let change = if push["type"] == 1 { "authorized" } else { "cancelled" };
        println!("push {push_id}: cid {} {change}", push["cid"]);
    }
    answer(StatusCode::OK, 200, "ok")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: receiver-example PUBLIC_KEY_PEM [LISTEN_ADDRESS, default 127.0.0.1:9000]";
    let pem_path = args.next().context(usage)?;
    let listen: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:9000").parse().context(usage)?;
    let pem = std::fs::read_to_string(&pem_path).with_context(|| format!("cannot read {pem_path}"))?;
    let public_key = RsaPublicKey::from_public_key_pem(&pem).context("not a PUBLIC KEY PEM")?;
    let receiver = Arc::new(Receiver { verifier: VerifyingKey::new(public_key), seen: Mutex::default() });
    let app = axum::Router::new().route("/push", axum::routing::post(receive)).with_state(receiver);
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    println!("receiving pushes at http://{}/push", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::RsaPrivateKey;
    use rsa::pkcs1v15::SigningKey;
    use rsa::signature::{SignatureEncoding, Signer};

    #[test]
    fn accepts_only_the_signed_timestamp_and_body() {
        let private = RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
        let verifier = VerifyingKey::<Sha256>::new(RsaPublicKey::from(&private));
        let body = br#"{"cid":"c-1","type":1}"#;
        let signature = SigningKey::<Sha256>::new(private).sign(br#"1712629830000.{"cid":"c-1","type":1}"#);
        let signature = base64::engine::general_purpose::STANDARD.encode(signature.to_bytes());
        assert!(verify(&verifier, "1712629830000", body, &signature));
        assert!(!verify(&verifier, "1712629830001", body, &signature));
        assert!(!verify(&verifier, "1712629830000", br#"{"cid":"c-2","type":1}"#, &signature));
        assert!(!verify(&verifier, "1712629830000", body, "not base64!"));
    }
}
