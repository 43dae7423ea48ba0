//! Onboarding of the run's own platform, provider and people through the admin API, then a
//! real access token and the people's authorizations through the platform API.

use std::sync::Arc;

use anyhow::{Context, bail, ensure};
use base64::Engine as _;
use reqwest::Method;
use serde_json::json;
use tokio::task::JoinSet;

use crate::load::{cid, master_cid};
use crate::wire::{AdminBody, Client, encrypt_app_id};

/// What onboarding made.
pub struct Onboarded {
    pub app_id: String,
    pub equity_cid: String,
}

/// What to onboard.
pub struct Setup<'a> {
    pub run_id: &'a str,
    pub people: usize,
    pub points_per_person: &'a str,
    /// A rules plugin (`.wasm` component) to install and activate for the platform.
    pub plugin: Option<&'a [u8]>,
    /// How many requests onboarding sends at once.
    pub parallel: usize,
}

/// Onboards everything and stores the platform's access token in `client`.
pub async fn onboard(client: &mut Client, setup: &Setup<'_>) -> anyhow::Result<Onboarded> {
    let run_id = setup.run_id;
    let key = client.admin(Method::GET, "/keys/public", AdminBody::None).await?;
    let public_key_pem = key["publicKeyPem"].as_str().context("no publicKeyPem in /keys/public")?.to_owned();

    let platform = client
        .admin(Method::POST, "/platforms", AdminBody::Json(json!({ "name": format!("loadgen {run_id}") })))
        .await?;
    let app_id = platform["appId"].as_str().context("no appId in the new platform")?.to_owned();

    if let Some(wasm) = setup.plugin {
        let body = json!({
            "platform": app_id,
            "wasmBase64": base64::engine::general_purpose::STANDARD.encode(wasm),
            "activate": true,
        });
        let installed = client.admin(Method::POST, "/plugins", AdminBody::Json(body)).await?;
        eprintln!("plugin installed and active for the platform: version {}", installed["version"]);
    }

    let equity_cid = format!("lg-{run_id}-shop");
    let provider = json!({ "equityCid": equity_cid, "name": format!("loadgen shop {run_id}"), "platforms": [app_id] });
    client.admin(Method::POST, "/providers", AdminBody::Json(provider)).await?;

    let mut csv = String::from("app_id,cid,master_cid\n");
    for index in 0..setup.people {
        csv.push_str(&format!("{app_id},{},{}\n", cid(run_id, index), master_cid(run_id, index)));
    }
    let imported = client.admin(Method::POST, "/ca/import", AdminBody::Text(csv)).await?;
    let refused = imported["refused"].as_array().map_or(0, Vec::len);
    ensure!(refused == 0, "the CA import refused {refused} mapping(s): {}", imported["refused"]);

    // The person rows: credits through the admin API.
    let shared = Arc::new(client.clone());
    for_each_person(setup, Arc::clone(&shared), {
        let run_id = run_id.to_owned();
        let amount = setup.points_per_person.to_owned();
        move |client, index| {
            let body = json!({
                "masterCid": master_cid(&run_id, index),
                "class": "a",
                "amount": amount,
                "externalId": format!("lg-{run_id}-grant-{index}"),
            });
            async move { client.admin(Method::POST, "/credits/points", AdminBody::Json(body)).await.map(drop) }
        }
    })
    .await
    .context("crediting the people")?;

    let encrypted = encrypt_app_id(&public_key_pem, &app_id)?;
    let answer = client.call(Method::POST, "/auth/getAccessToken", Some(&json!({ "appId": encrypted }))).await;
    if !answer.is_ok() {
        bail!("getAccessToken answered {} (HTTP {}): {}", answer.code_key(), answer.status, answer.msg);
    }
    let token = answer.content["accessToken"].as_str().context("getAccessToken answered no accessToken")?;
    client.token = Some(token.to_owned());

    let shared = Arc::new(client.clone());
    for_each_person(setup, shared, {
        let run_id = run_id.to_owned();
        move |client, index| {
            let body = json!({ "cid": cid(&run_id, index) });
            async move {
                let answer = client.call(Method::POST, "/auth/accountAuthorize", Some(&body)).await;
                if !answer.is_ok() {
                    bail!("accountAuthorize answered {} (HTTP {}): {}", answer.code_key(), answer.status, answer.msg);
                }
                Ok(())
            }
        }
    })
    .await
    .context("authorizing the people")?;

    Ok(Onboarded { app_id, equity_cid })
}

/// Runs `task` for every person, `setup.parallel` at a time; the first failure ends it.
async fn for_each_person<F, Fut>(setup: &Setup<'_>, client: Arc<Client>, task: F) -> anyhow::Result<()>
where
    F: Fn(Arc<Client>, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let parallel = setup.parallel.clamp(1, setup.people.max(1));
    let people = setup.people;
    let mut tasks = JoinSet::new();
    for lane in 0..parallel {
        let (client, task) = (Arc::clone(&client), task.clone());
        tasks.spawn(async move {
            for index in (lane..people).step_by(parallel) {
                task(Arc::clone(&client), index).await.with_context(|| format!("person {index}"))?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.context("an onboarding task panicked")??;
    }
    Ok(())
}
