//! Run with `cargo run -p client-example -- --app-id APPID --cid c-1 --equity-cid shop-1 --public-key public.pem`
//! against a running `carbon-host serve` (see `examples/README.md` for onboarding).
//!
//! A platform's side of the API, step by step, over real HTTP: encrypt the appId with the
//! server's RSA public key (PKCS#1 v1.5, what Java's `Cipher.getInstance("RSA")` sends), get an
//! access token, authorize a person's cid, read their points, settle a purchase (and send it
//! again to show idempotency), refund part of it, read the points again and the bills.
//!
//! Every request carries the headers `Authorization` (the token), `transactionId` (a fresh UUID
//! per request) and `timestamp` (ms). Every answer is the envelope `{code, msg, content}`; the
//! client stops with a non-zero exit status at the first code other than 200.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use base64::Engine as _;
use reqwest::Method;
use rsa::pkcs8::DecodePublicKey;
use rsa::{Pkcs1v15Encrypt, RsaPublicKey};
use serde_json::{Value, json};

/// Base path of the platform API.
const API: &str = "/carbon-inclusion/apis/v1";

const HELP: &str = "\
client-example: talk to a running carbon-host as an equity platform would.

Usage:
  cargo run -p client-example -- [OPTIONS]

Options (each may also come from the environment variable shown):
  --base-url URL       server address            [CARBON_BASE_URL, default http://127.0.0.1:8080]
  --app-id ID          the platform's appId      [CARBON_APP_ID, required]
  --cid CID            sub-scene cid of a person [CARBON_CID, required]
  --equity-cid CID     the provider's account    [CARBON_EQUITY_CID, required]
  --public-key FILE    server public key PEM     [CARBON_PUBLIC_KEY, default public.pem]
                       (made with `carbon-host key show > public.pem`)
  --amount POINTS      class A points to spend   [CARBON_AMOUNT, default 12.5]
  --refund POINTS      class A points to refund  [CARBON_REFUND, default 2.5]
  --utc-offset +HH:MM  the server's wall-time zone offset for transactionTime and bill
                       ranges                    [CARBON_UTC_OFFSET, default +08:00, Asia/Shanghai]
  -h, --help           print this help

Exits 0 when every call answered code 200, 1 at the first other code or failure, 2 on bad usage.";

/// What the client was told, from flags first, then the environment, then defaults.
#[derive(Debug)]
struct Options {
    base_url: String,
    app_id: String,
    cid: String,
    equity_cid: String,
    public_key: String,
    amount: String,
    refund: String,
    utc_offset_minutes: i64,
}

/// Why the command line could not be used.
enum Usage {
    Help,
    Bad(String),
}

impl Options {
    /// Parses `args` (without the program name); `env` looks up environment variables.
    fn parse(args: impl IntoIterator<Item = String>, env: impl Fn(&str) -> Option<String>) -> Result<Self, Usage> {
        // (flag, environment variable, default)
        const KNOWN: [(&str, &str, Option<&str>); 8] = [
            ("--base-url", "CARBON_BASE_URL", Some("http://127.0.0.1:8080")),
            ("--app-id", "CARBON_APP_ID", None),
            ("--cid", "CARBON_CID", None),
            ("--equity-cid", "CARBON_EQUITY_CID", None),
            ("--public-key", "CARBON_PUBLIC_KEY", Some("public.pem")),
            ("--amount", "CARBON_AMOUNT", Some("12.5")),
            ("--refund", "CARBON_REFUND", Some("2.5")),
            ("--utc-offset", "CARBON_UTC_OFFSET", Some("+08:00")),
        ];
        let mut given: [Option<String>; KNOWN.len()] = Default::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "-h" || arg == "--help" {
                return Err(Usage::Help);
            }
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
                None => (arg, None),
            };
            let index = KNOWN
                .iter()
                .position(|(known, _, _)| *known == flag)
                .ok_or_else(|| Usage::Bad(format!("unknown argument `{flag}`")))?;
            let value = match inline {
                Some(value) => value,
                None => args.next().ok_or_else(|| Usage::Bad(format!("`{flag}` needs a value")))?,
            };
            given[index] = Some(value);
        }
        let mut values = KNOWN.iter().zip(given).map(|((flag, variable, default), value)| {
            value
                .or_else(|| env(variable))
                .or_else(|| default.map(str::to_owned))
                .ok_or_else(|| Usage::Bad(format!("`{flag}` (or {variable}) is required")))
        });
        let mut next = || values.next().expect("one value per known flag");
        Ok(Options {
            base_url: next()?.trim_end_matches('/').to_owned(),
            app_id: next()?,
            cid: next()?,
            equity_cid: next()?,
            public_key: next()?,
            amount: next()?,
            refund: next()?,
            utc_offset_minutes: {
                let text = next()?;
                parse_utc_offset(&text)
                    .ok_or_else(|| Usage::Bad(format!("--utc-offset: `{text}` is not like +08:00")))?
            },
        })
    }
}

/// `+08:00`, `-05:30` or `+8` → minutes east of UTC.
fn parse_utc_offset(text: &str) -> Option<i64> {
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => (1, text),
    };
    let (hours, minutes) = rest.split_once(':').unwrap_or((rest, "0"));
    let (hours, minutes): (i64, i64) = (hours.parse().ok()?, minutes.parse().ok()?);
    ((0..=14).contains(&hours) && (0..60).contains(&minutes)).then_some(sign * (hours * 60 + minutes))
}

/// Milliseconds since the Unix epoch, now.
fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// `ms` as wire time `yyyy-MM-dd HH:mm:ss`, wall time at `offset_minutes` east of UTC.
fn wall_time(ms: i64, offset_minutes: i64) -> String {
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

/// Reads the server's public key (X.509 SubjectPublicKeyInfo PEM, `-----BEGIN PUBLIC KEY-----`)
/// and encrypts `app_id` with PKCS#1 v1.5 padding, base64: the `appId` of `getAccessToken`.
fn encrypt_app_id(public_key_file: &str, app_id: &str) -> anyhow::Result<String> {
    let pem = std::fs::read_to_string(public_key_file)
        .with_context(|| format!("cannot read the public key file `{public_key_file}`"))?;
    let key = RsaPublicKey::from_public_key_pem(&pem)
        .with_context(|| format!("`{public_key_file}` is not a PEM public key (carbon-host key show)"))?;
    let ciphertext =
        key.encrypt(&mut rand::thread_rng(), Pkcs1v15Encrypt, app_id.as_bytes()).context("cannot encrypt the appId")?;
    Ok(base64::engine::general_purpose::STANDARD.encode(ciphertext))
}

/// `value` with long strings (the encrypted appId) cut short, for printing.
fn abbreviated(value: &Value) -> Value {
    match value {
        Value::String(text) if text.chars().count() > 48 => {
            json!(format!("{}…", text.chars().take(48).collect::<String>()))
        }
        Value::Object(fields) => fields.iter().map(|(key, value)| (key.clone(), abbreviated(value))).collect(),
        other => other.clone(),
    }
}

/// A platform's connection to the server.
struct Client {
    http: reqwest::Client,
    base_url: String,
    token: Option<String>,
}

impl Client {
    fn new(base_url: &str) -> anyhow::Result<Self> {
        Ok(Client {
            http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?,
            base_url: base_url.to_owned(),
            token: None,
        })
    }

    /// Sends one request under the API base path with fresh headers, prints its outcome, and
    /// returns the envelope's `content` when the code is 200.
    async fn call(&self, step: &str, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        println!("\n== {step}\n   {method} {API}{path}");
        let mut request = self
            .http
            .request(method, format!("{}{API}{path}", self.base_url))
            .header("transactionId", uuid::Uuid::new_v4().to_string())
            .header("timestamp", now_ms().to_string());
        if let Some(token) = &self.token {
            request = request.header("Authorization", token);
        }
        if let Some(body) = body {
            println!("   body: {}", abbreviated(&body));
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{step}: cannot reach {} (is `carbon-host serve` running?)", self.base_url))?;
        let status = response.status().as_u16();
        let text = response.text().await.with_context(|| format!("{step}: unreadable answer"))?;
        let envelope: Value = serde_json::from_str(&text)
            .with_context(|| format!("{step}: HTTP {status} without a JSON envelope: {text}"))?;
        let code = envelope["code"].as_i64().unwrap_or(-1);
        let msg = envelope["msg"].as_str().unwrap_or("");
        println!("   HTTP {status}, code {code}, msg {msg}");
        if code != 200 {
            bail!("{step} answered code {code} (HTTP {status}): {msg}");
        }
        Ok(envelope["content"].clone())
    }
}

/// The whole conversation; the first failure ends it.
async fn run(options: &Options) -> anyhow::Result<()> {
    let mut client = Client::new(&options.base_url)?;
    let now = now_ms();
    let order_time = wall_time(now, options.utc_offset_minutes);
    let order_id = format!("demo-{}", uuid::Uuid::new_v4().simple());
    let refund_id = format!("{order_id}-r1");
    println!(
        "server {} · appId {} · cid {} · equityCid {} · order {order_id}",
        options.base_url, options.app_id, options.cid, options.equity_cid
    );

    let encrypted = encrypt_app_id(&options.public_key, &options.app_id)?;
    let content = client
        .call("1. get an access token", Method::POST, "/auth/getAccessToken", Some(json!({ "appId": encrypted })))
        .await?;
    let token = content["accessToken"].as_str().context("getAccessToken answered no accessToken")?;
    let expires = content["expireTime"].as_i64().unwrap_or_default();
    println!("   token valid until {} (wall time at the offset given)", wall_time(expires, options.utc_offset_minutes));
    client.token = Some(token.to_owned());

    let cid = json!({ "cid": options.cid });
    client
        .call("2. the person authorizes this platform", Method::POST, "/auth/accountAuthorize", Some(cid.clone()))
        .await?;
    let points = client.call("3. points before", Method::POST, "/account/getPointInfo", Some(cid.clone())).await?;
    print_points(&points);

    let order = |id: &str, points: String, parent: Option<&str>| {
        let mut body = json!({
            "cid": options.cid,
            "equityCid": options.equity_cid,
            "transactionId": id,
            "transactionPointA": points,
            "transactionTime": order_time,
            "transactionType": "0",
            "type": 0,
            "data": ["话费充值卡", "充电宝"],
        });
        if let Some(parent) = parent {
            body["parentTransactionId"] = json!(parent);
        }
        body
    };
    let purchase = order(&order_id, options.amount.clone(), None);
    let content =
        client.call("4. settle a purchase", Method::POST, "/transaction/orderSettel", Some(purchase.clone())).await?;
    println!("   content: {content}");
    let content = client
        .call(
            "5. the same order again (a retry): the original success, nothing charged twice",
            Method::POST,
            "/transaction/orderSettel",
            Some(purchase),
        )
        .await?;
    println!("   content: {content}");
    let refund = order(&refund_id, format!("-{}", options.refund), Some(&order_id));
    client.call("6. refund part of it", Method::POST, "/transaction/orderSettel", Some(refund)).await?;
    let points = client.call("7. points after", Method::POST, "/account/getPointInfo", Some(cid)).await?;
    print_points(&points);

    let query = json!({
        "cid": options.cid,
        "equityCid": options.equity_cid,
        "beginTime": wall_time(now - 86_400_000, options.utc_offset_minutes),
        "endTime": wall_time(now + 86_400_000, options.utc_offset_minutes),
        "page": 1,
        "pageSize": 10,
    });
    let bills = client
        .call(
            "8. bills of this person and provider, a day either side of now",
            Method::POST,
            "/account/getPointsBillInfo",
            Some(query),
        )
        .await?;
    print_bills(&bills);
    println!("\nevery call answered 200");
    Ok(())
}

fn print_points(content: &Value) {
    for info in content["pointInfo"].as_array().into_iter().flatten() {
        println!("   pointType {}: {}", info["pointType"], info["pointBalance"].as_str().unwrap_or("?"));
    }
}

fn print_bills(content: &Value) {
    println!(
        "   {} bill(s), page {} of size {}, newest first:",
        content["total"], content["page"], content["pageSize"]
    );
    for bill in content["bill"].as_array().into_iter().flatten() {
        println!(
            "   {:<44} amount {:>8} (A {}, B {}) parent {}",
            bill["transactionId"].as_str().unwrap_or("?"),
            bill["amount"].as_str().unwrap_or("?"),
            bill["transactionPointA"].as_str().unwrap_or("?"),
            bill["transactionPointB"].as_str().unwrap_or("?"),
            bill["parentTransactionId"].as_str().unwrap_or("-"),
        );
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1), |name| std::env::var(name).ok()) {
        Ok(options) => options,
        Err(Usage::Help) => {
            println!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(Usage::Bad(reason)) => {
            eprintln!("error: {reason}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    match run(&options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("\nerror: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_time_is_shanghai_by_default() {
        // The seed's example: 2024-04-09 10:30:30 +08:00 = 1712629830000 ms.
        assert_eq!(wall_time(1_712_629_830_000, 480), "2024-04-09 10:30:30");
        assert_eq!(wall_time(0, 0), "1970-01-01 00:00:00");
        assert_eq!(wall_time(951_782_400_000, 0), "2000-02-29 00:00:00");
    }

    #[test]
    fn offsets_and_flags_parse() {
        assert_eq!(parse_utc_offset("+08:00"), Some(480));
        assert_eq!(parse_utc_offset("-05:30"), Some(-330));
        assert_eq!(parse_utc_offset("8"), Some(480));
        assert_eq!(parse_utc_offset("x"), None);
        let args = ["--app-id", "A", "--cid=c-1", "--equity-cid", "shop-1"].map(String::from);
        let Ok(options) = Options::parse(args, |_| None) else { panic!("valid flags") };
        assert_eq!(
            (options.app_id.as_str(), options.cid.as_str(), options.base_url.as_str()),
            ("A", "c-1", "http://127.0.0.1:8080")
        );
        assert!(matches!(Options::parse([], |_| None), Err(Usage::Bad(_))));
        let env = |name: &str| ["CARBON_APP_ID", "CARBON_CID", "CARBON_EQUITY_CID"].contains(&name).then(|| "x".into());
        assert!(Options::parse([], env).is_ok());
    }
}
