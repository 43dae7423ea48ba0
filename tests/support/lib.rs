//! End-to-end harness: a real `carbon-host` on a real port (127.0.0.1:0) over a real database,
//! and a client that speaks the wire protocol (RSA-encrypted appId, token, headers).

use base64::Engine as _;
use carbon_engine::Engine;
use carbon_engine::testing::TestDb;
use carbon_host::api::AppState;
use carbon_host::config::Config;
use rsa::pkcs8::DecodePublicKey;
use rsa::{Oaep, Pkcs1v15Encrypt, RsaPublicKey};
use serde_json::Value;
use tokio::sync::oneshot;

pub use carbon_engine;
pub use serde_json::json;

/// The freshly built component `plugins/<name>` (e.g. `default`, `mall`, `hostile`).
pub fn plugin(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARBON_PLUGIN_DIR")).join(format!("{name}_rules.wasm"));
    std::fs::read(&path).unwrap_or_else(|err| panic!("plugin {} not built: {err}", path.display()))
}
pub mod receiver;

/// Base path of the platform API.
pub const API: &str = "/carbon-inclusion/apis/v1";

/// Runs each named story against a server on SQLite and one on PostgreSQL, each with group
/// commit as `carbon-host serve` runs it.
#[macro_export]
macro_rules! on_both_backends {
    ($($story:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $story() {
                    let options = $crate::carbon_engine::testing::serving();
                    super::$story($crate::carbon_engine::testing::sqlite_with(options).await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $story() {
                    let options = $crate::carbon_engine::testing::serving();
                    match $crate::carbon_engine::testing::postgres_with(options).await {
                        Some(db) => super::$story(db).await,
                        None => eprintln!("CARBON_TEST_PG_URL=off: PostgreSQL half skipped"),
                    }
                }
            )*
        }
    };
}

/// A running server.
pub struct Server {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The engine behind it, for onboarding and credits.
    pub engine: Engine,
    /// Its plugin registry.
    pub plugins: std::sync::Arc<carbon_engine::rules::registry::PluginRegistry>,
    /// The database.
    pub db: TestDb,
    /// The server's state (metrics, configuration).
    pub state: AppState,
    /// The server's public key PEM.
    pub public_key_pem: String,
    public_key: RsaPublicKey,
    client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// A response: HTTP status and the decoded envelope.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The JSON body.
    pub body: Value,
}

impl Answer {
    /// The envelope's `code`.
    pub fn code(&self) -> i64 {
        self.body["code"].as_i64().unwrap_or_else(|| panic!("no code in {}", self.body))
    }

    /// The envelope's `msg`.
    pub fn msg(&self) -> &str {
        self.body["msg"].as_str().unwrap_or("")
    }
}

impl Server {
    /// Starts a server on `db` with `config` (its listen address is ignored: port 0 is used).
    pub async fn start(db: TestDb, config: Config) -> Server {
        let state = carbon_host::server::state(db.store.clone(), config).await.expect("server state");
        let (engine, plugins) = (state.engine.clone(), state.plugins.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (shutdown, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(carbon_host::server::serve(listener, state.clone(), async {
            let _ = stopped.await;
        }));
        let key = engine.store().current_server_key().await.unwrap().expect("server key made on start");
        Server {
            base,
            engine,
            plugins,
            db,
            state,
            public_key: RsaPublicKey::from_public_key_pem(&key.public_key_pem).expect("public key PEM"),
            public_key_pem: key.public_key_pem,
            client: reqwest::Client::new(),
            shutdown: Some(shutdown),
            task,
        }
    }

    /// Kills the server as a crash would: its tasks stop wherever they are, mid-request
    /// included, and nothing is cleaned up (leases stay held until they expire).
    pub async fn kill(&mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
        self.shutdown.take();
    }

    /// Encrypts `app_id` as a platform would (PKCS#1 v1.5, or OAEP-SHA256), base64.
    pub fn encrypt(&self, app_id: &str, oaep: bool) -> String {
        let mut rng = rand::thread_rng();
        let ciphertext = if oaep {
            self.public_key.encrypt(&mut rng, Oaep::new::<rsa::sha2::Sha256>(), app_id.as_bytes())
        } else {
            self.public_key.encrypt(&mut rng, Pkcs1v15Encrypt, app_id.as_bytes())
        };
        base64::engine::general_purpose::STANDARD.encode(ciphertext.unwrap())
    }

    /// Gets an access token for `app_id`.
    pub async fn token(&self, app_id: &str) -> String {
        let answer = self.post("/auth/getAccessToken", None, json!({ "appId": self.encrypt(app_id, false) })).await;
        assert_eq!(answer.code(), 200, "{answer:?}");
        answer.body["content"]["accessToken"].as_str().unwrap().to_owned()
    }

    /// Fresh, valid request headers: a new UUID and the current time.
    pub fn fresh_headers() -> Vec<(String, String)> {
        vec![
            ("transactionId".into(), uuid::Uuid::new_v4().to_string()),
            ("timestamp".into(), carbon_engine::now_ms().to_string()),
        ]
    }

    /// POSTs `body` to `path` under the API with fresh headers.
    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Answer {
        self.send("POST", path, token, Self::fresh_headers(), Some(body.to_string())).await
    }

    /// GETs `path` under the API with fresh headers.
    pub async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.send("GET", path, token, Self::fresh_headers(), None).await
    }

    /// Sends a request exactly as given.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        headers: Vec<(String, String)>,
        body: Option<String>,
    ) -> Answer {
        // Paths of the platform API are given without the base path; others (health, unknown
        // routes) as they are.
        let is_api = ["/auth/", "/account/", "/transaction/", "/subscribe"].iter().any(|p| path.starts_with(p));
        let url = if is_api { format!("{}{API}{path}", self.base) } else { format!("{}{path}", self.base) };
        let mut request = self.client.request(method.parse().unwrap(), url);
        if let Some(token) = token {
            request = request.header("Authorization", token);
        }
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if let Some(body) = body {
            request = request.header("Content-Type", "application/json").body(body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
        Answer { status, body }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}
