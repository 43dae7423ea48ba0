//! The wire: one HTTP client for the platform API and the admin API, the envelope, the
//! RSA-encrypted appId and wire times.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use base64::Engine as _;
use reqwest::Method;
use rsa::pkcs8::DecodePublicKey;
use rsa::{Pkcs1v15Encrypt, RsaPublicKey};
use serde_json::Value;

/// Base path of the platform API.
pub const API: &str = "/carbon-inclusion/apis/v1";

/// Base path of the admin API.
pub const ADMIN: &str = "/admin/v1";

/// What one request came back with.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status; 0 when no answer arrived (connection error or timeout).
    pub status: u16,
    /// The envelope's `code`; `None` without an answer or without a JSON envelope.
    pub code: Option<i64>,
    /// The envelope's `msg`, or the transport error.
    pub msg: String,
    /// The envelope's `content`.
    pub content: Value,
}

impl Answer {
    /// Code 200 in a JSON envelope.
    pub fn is_ok(&self) -> bool {
        self.code == Some(200)
    }

    /// The key under which the report counts this answer: `200`, `42201`, `transport`,
    /// `HTTP 502 (no envelope)`.
    pub fn code_key(&self) -> String {
        match (self.status, self.code) {
            (0, _) => "transport".to_owned(),
            (_, Some(code)) => code.to_string(),
            (status, None) => format!("HTTP {status} (no envelope)"),
        }
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// `+08:00`, `-05:30` or `+8` → minutes east of UTC.
pub fn parse_utc_offset(text: &str) -> Option<i64> {
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => (1, text),
    };
    let (hours, minutes) = rest.split_once(':').unwrap_or((rest, "0"));
    let (hours, minutes): (i64, i64) = (hours.parse().ok()?, minutes.parse().ok()?);
    ((0..=14).contains(&hours) && (0..60).contains(&minutes)).then_some(sign * (hours * 60 + minutes))
}

/// `ms` as wire time `yyyy-MM-dd HH:mm:ss`, wall time at `offset_minutes` east of UTC.
pub fn wall_time(ms: i64, offset_minutes: i64) -> String {
    let seconds = ms.div_euclid(1000) + offset_minutes * 60;
    let (days, second_of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Days since 1970-01-01 → civil date (Howard Hinnant's `civil_from_days`).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

/// Encrypts `app_id` with the server's public key (SubjectPublicKeyInfo PEM), PKCS#1 v1.5
/// padding, base64: the `appId` field of `getAccessToken`.
pub fn encrypt_app_id(public_key_pem: &str, app_id: &str) -> anyhow::Result<String> {
    let key = RsaPublicKey::from_public_key_pem(public_key_pem).context("the server's public key is not a PEM")?;
    let ciphertext =
        key.encrypt(&mut rand::thread_rng(), Pkcs1v15Encrypt, app_id.as_bytes()).context("cannot encrypt the appId")?;
    Ok(base64::engine::general_purpose::STANDARD.encode(ciphertext))
}

/// Cents as a decimal string: `1250` → `"12.50"`, `-5` → `"-0.05"`.
pub fn cents(amount: i64) -> String {
    let sign = if amount < 0 { "-" } else { "" };
    let amount = amount.unsigned_abs();
    format!("{sign}{}.{:02}", amount / 100, amount % 100)
}

/// A connection pool to one server, shared by every worker.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base_url: String,
    admin_token: String,
    /// The platform's access token, once fetched.
    pub token: Option<String>,
}

impl Client {
    /// A pool of up to `connections` keep-alive connections to `base_url`.
    pub fn new(base_url: &str, admin_token: &str, connections: usize, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .pool_max_idle_per_host(connections)
            .tcp_nodelay(true)
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Client {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            admin_token: admin_token.to_owned(),
            token: None,
        })
    }

    /// Sends one platform API request with fresh headers (a new UUID `transactionId` and the
    /// current `timestamp`) and the access token when there is one. Never fails: a transport
    /// error is an [`Answer`] with status 0.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Answer {
        let mut request = self
            .http
            .request(method, format!("{}{API}{path}", self.base_url))
            .header("transactionId", uuid::Uuid::new_v4().to_string())
            .header("timestamp", now_ms().to_string());
        if let Some(token) = &self.token {
            request = request.header("Authorization", token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        send(request).await
    }

    /// Sends one admin API request (`/admin/v1{path}`) with the bearer admin token; fails unless
    /// the answer is code 200, and returns its `content`.
    pub async fn admin(&self, method: Method, path: &str, body: AdminBody) -> anyhow::Result<Value> {
        let mut request =
            self.http.request(method.clone(), format!("{}{ADMIN}{path}", self.base_url)).bearer_auth(&self.admin_token);
        request = match body {
            AdminBody::None => request,
            AdminBody::Json(value) => request.json(&value),
            AdminBody::Text(text) => request.header("Content-Type", "text/csv").body(text),
        };
        let answer = send(request).await;
        if !answer.is_ok() {
            bail!(
                "admin {method} {ADMIN}{path} answered {} (HTTP {}): {}",
                answer.code_key(),
                answer.status,
                answer.msg
            );
        }
        Ok(answer.content)
    }
}

/// The body of an admin request.
pub enum AdminBody {
    None,
    Json(Value),
    Text(String),
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = match request.send().await {
        Ok(response) => response,
        Err(err) => return transport(err),
    };
    let status = response.status().as_u16();
    let text = match response.text().await {
        Ok(text) => text,
        Err(err) => return transport(err),
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(envelope) if envelope["code"].is_i64() => Answer {
            status,
            code: envelope["code"].as_i64(),
            msg: envelope["msg"].as_str().unwrap_or_default().to_owned(),
            content: envelope["content"].clone(),
        },
        _ => Answer { status, code: None, msg: text.chars().take(200).collect(), content: Value::Null },
    }
}

fn transport(err: reqwest::Error) -> Answer {
    let kind = if err.is_timeout() { "timeout" } else { "connection" };
    Answer { status: 0, code: None, msg: format!("{kind}: {err}"), content: Value::Null }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_formats() {
        assert_eq!(wall_time(1_712_629_830_000, 480), "2024-04-09 10:30:30");
        assert_eq!(parse_utc_offset("+08:00"), Some(480));
        assert_eq!(parse_utc_offset("-05:30"), Some(-330));
        assert_eq!(parse_utc_offset("x"), None);
        assert_eq!(cents(1250), "12.50");
        assert_eq!(cents(-5), "-0.05");
        assert_eq!(cents(100), "1.00");
    }
}
