//! Authentication of platform calls, in the order of the seed's 鉴权流程: token expired (40102),
//! token valid (40101), then the request headers — `transactionId` a UUID and `timestamp`
//! within the window (40001 / 40104) — and the request id not seen before (40105).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use base64::Engine as _;
use carbon_engine::directory::Platform;
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::ApiError;

/// The request headers every call carries, checked.
#[derive(Debug)]
pub struct RequestHeaders {
    /// The request's `transactionId` (a UUID, new per request).
    pub request_id: String,
}

/// An authenticated platform call: token checked, then headers.
#[derive(Debug)]
pub struct Caller {
    /// The calling platform.
    pub platform: Platform,
    /// The request's `transactionId`.
    pub request_id: String,
}

/// A new random access token and the sha256 (hex) under which it is stored.
pub fn new_token() -> (String, String) {
    let mut bytes = [0_u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let hash = token_hash(&token);
    (token, hash)
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok()).map(str::trim)
}

impl FromRequestParts<AppState> for RequestHeaders {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let headers = &parts.headers;
        let request_id =
            header(headers, "transactionId").ok_or_else(|| ApiError::invalid("transactionId", "header missing"))?;
        uuid::Uuid::parse_str(request_id).map_err(|_| ApiError::invalid("transactionId", "header must be a UUID"))?;
        let timestamp = header(headers, "timestamp").ok_or_else(|| ApiError::invalid("timestamp", "header missing"))?;
        let timestamp: i64 = timestamp
            .parse()
            .map_err(|_| ApiError::invalid("timestamp", "header must be milliseconds since the epoch"))?;
        let now = carbon_engine::now_ms();
        let window_ms = state.config.timestamp_window_secs as i64 * 1000;
        if (now - timestamp).abs() > window_ms {
            return Err(ApiError::new(
                40104,
                format!("timestamp is more than {} s away from server time", state.config.timestamp_window_secs),
            ));
        }
        // Inside the window a request id may be used once; after it, the timestamp check refuses.
        let expires_at = now.max(timestamp) + window_ms;
        let fresh =
            state.engine.store().record_request_id(request_id, now, expires_at).await.map_err(ApiError::internal)?;
        if !fresh {
            return Err(ApiError::new(40105, "transactionId of this request was used before"));
        }
        Ok(RequestHeaders { request_id: request_id.to_owned() })
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = header(&parts.headers, "Authorization")
            .map(|value| value.strip_prefix("Bearer ").unwrap_or(value).trim())
            .filter(|token| !token.is_empty())
            .ok_or_else(|| ApiError::new(40101, "Authorization token missing"))?;
        let hash = token_hash(token);
        let found = match state.tokens.get(&hash) {
            Some(found) => Some(found),
            None => {
                let found = state.engine.store().access_token(&hash).await.map_err(ApiError::internal)?;
                if let Some((platform, expires_at_ms)) = &found {
                    state.tokens.put(hash, platform.clone(), *expires_at_ms);
                }
                found
            }
        };
        let Some((platform, expires_at_ms)) = found else {
            return Err(ApiError::new(40101, "Authorization token unknown"));
        };
        if expires_at_ms <= carbon_engine::now_ms() {
            return Err(ApiError::new(40102, "Authorization token expired; get a new one"));
        }
        let headers = RequestHeaders::from_request_parts(parts, state).await?;
        Ok(Caller { platform, request_id: headers.request_id })
    }
}

/// Access tokens this instance has seen, by sha256. Sound because an issued token never
/// changes: it is never revoked, only expires, and the expiry is checked on every call.
/// Unknown tokens are not remembered, so a token issued by another instance is found in the
/// database on its first use here.
#[derive(Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<String, (Platform, i64)>>,
}

/// Most tokens remembered; past it, expired ones are dropped, then all if still full.
const TOKEN_CACHE_MAX: usize = 100_000;

impl TokenCache {
    fn get(&self, hash: &str) -> Option<(Platform, i64)> {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(hash).cloned()
    }

    fn put(&self, hash: String, platform: Platform, expires_at_ms: i64) {
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if entries.len() >= TOKEN_CACHE_MAX {
            let now = carbon_engine::now_ms();
            entries.retain(|_, (_, expires)| *expires > now);
            if entries.len() >= TOKEN_CACHE_MAX {
                entries.clear();
            }
        }
        entries.insert(hash, (platform, expires_at_ms));
    }
}

/// A fixed-window limit of calls per client address and minute.
pub struct RateLimiter {
    per_minute: u32,
    windows: Mutex<HashMap<IpAddr, (i64, u32)>>,
}

impl RateLimiter {
    /// Allows `per_minute` calls per address per minute.
    pub fn new(per_minute: u32) -> Self {
        RateLimiter { per_minute, windows: Mutex::new(HashMap::new()) }
    }

    /// Counts a call from `address`; `Err(42901)` when over the limit.
    pub fn check(&self, address: IpAddr) -> Result<(), ApiError> {
        let minute = carbon_engine::now_ms() / 60_000;
        let mut windows = self.windows.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if windows.len() > 100_000 {
            windows.retain(|_, (window, _)| *window == minute);
        }
        let entry = windows.entry(address).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        entry.1 += 1;
        if entry.1 > self.per_minute {
            return Err(ApiError::new(42901, "too many token requests from this address; retry in a minute"));
        }
        Ok(())
    }
}
