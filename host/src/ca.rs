//! The CA resolver: which master cid stands behind a platform's sub-scene cid.
//!
//! Two implementations: [`LocalCa`], the mapping table operators import (default), and
//! [`HttpCa`], which asks an HTTP service (`CARBON_CA_URL`). The HTTP contract:
//!
//! ```text
//! GET {base}/cids/{appId}/{cid}        (both path segments percent-encoded)
//! 200 {"masterCid": "M-123"}           the cid is known
//! 404                                  the cid is unknown (→ 40401)
//! anything else, or no answer in 5 s   the CA failed (→ 50001, logged)
//! ```
//!
//! Whatever the HTTP CA answers is kept in the local table, so settlement never waits on it.

use std::time::Duration;

use async_trait::async_trait;
use carbon_engine::Engine;
use carbon_engine::directory::Platform;
use carbon_engine::ids::{MasterCid, SubCid};

/// How long the HTTP CA may take to answer.
const CA_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the CA could not answer.
#[derive(Debug, thiserror::Error)]
#[error("CA unavailable: {0}")]
pub struct CaError(pub String);

/// Resolves sub-scene cids to master cids.
#[async_trait]
pub trait CaResolver: Send + Sync {
    /// The master cid of `cid` under `platform`, or `None` if the CA does not know it.
    async fn resolve(&self, platform: &Platform, cid: &SubCid) -> Result<Option<MasterCid>, CaError>;
}

/// The local mapping table (`carbon-host ca import`).
pub struct LocalCa(pub Engine);

#[async_trait]
impl CaResolver for LocalCa {
    async fn resolve(&self, platform: &Platform, cid: &SubCid) -> Result<Option<MasterCid>, CaError> {
        self.0.resolve_cid(platform, cid).await.map_err(|err| CaError(err.to_string()))
    }
}

/// An HTTP CA service.
pub struct HttpCa {
    base: url::Url,
    client: reqwest::Client,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct CaAnswer {
    master_cid: String,
}

impl HttpCa {
    /// A resolver asking the service at `base` (e.g. `https://ca.example/api`).
    pub fn new(base: &str) -> anyhow::Result<Self> {
        let base = url::Url::parse(base).map_err(|err| anyhow::anyhow!("ca_url / CARBON_CA_URL: {err}"))?;
        anyhow::ensure!(base.scheme() == "http" || base.scheme() == "https", "ca_url / CARBON_CA_URL must be http(s)");
        anyhow::ensure!(!base.cannot_be_a_base(), "ca_url / CARBON_CA_URL cannot be a base URL");
        Ok(HttpCa { base, client: reqwest::Client::builder().timeout(CA_TIMEOUT).build()? })
    }
}

#[async_trait]
impl CaResolver for HttpCa {
    async fn resolve(&self, platform: &Platform, cid: &SubCid) -> Result<Option<MasterCid>, CaError> {
        let mut url = self.base.clone();
        url.path_segments_mut().map_err(|_| CaError("bad base URL".into()))?.pop_if_empty().extend([
            "cids",
            platform.app_id.as_str(),
            cid.as_str(),
        ]);
        let response = self.client.get(url).send().await.map_err(|err| CaError(err.to_string()))?;
        match response.status().as_u16() {
            404 => Ok(None),
            200 => {
                let answer: CaAnswer = response.json().await.map_err(|err| CaError(format!("bad answer: {err}")))?;
                MasterCid::new(answer.master_cid).map(Some).map_err(|err| CaError(format!("bad masterCid: {err}")))
            }
            status => Err(CaError(format!("answered HTTP {status}"))),
        }
    }
}
