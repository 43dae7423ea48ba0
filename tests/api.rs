//! The platform API end to end: a real server on a real port, real HTTP, both backends.

use std::time::Duration;

use carbon_e2e::carbon_engine::amount::Points;
use carbon_e2e::carbon_engine::credit::Credit;
use carbon_e2e::carbon_engine::directory::Platform;
use carbon_e2e::carbon_engine::ids::{EquityCid, MasterCid, SubCid};
use carbon_e2e::carbon_engine::ledger::Asset;
use carbon_e2e::carbon_engine::testing::TestDb;
use carbon_e2e::{Server, json, on_both_backends};
use carbon_host::config::Config;
use serde_json::Value;

on_both_backends!(
    a_platform_settles_refunds_and_reads_bills,
    authentication_is_checked_in_order,
    get_access_token_refuses_uniformly_and_is_rate_limited,
    bad_input_answers_40001_naming_the_field,
    business_errors_have_their_codes,
    platforms_see_only_their_own_people_and_bills,
    concurrent_settlements_over_http_never_overdraw,
    subscriptions_refuse_unsafe_urls,
    the_admin_api_offers_the_operator_operations,
    metrics_and_health_are_served,
    an_http_ca_resolves_cids,
    openapi_document_lists_every_endpoint,
);

/// A server with one platform, one linked provider and one person (cid `c-1`) mapped to
/// `m-1` but not yet authorized.
struct Mall {
    server: Server,
    platform: Platform,
    token: String,
}

async fn mall(db: TestDb, config: Config) -> Mall {
    let server = Server::start(db, config).await;
    let engine = &server.engine;
    let platform = engine.add_platform("mall", None).await.unwrap();
    engine
        .add_provider(&EquityCid::new("shop-1").unwrap(), "shop", std::slice::from_ref(&platform.app_id))
        .await
        .unwrap();
    engine.map_cid(&platform, &SubCid::new("c-1").unwrap(), &MasterCid::new("m-1").unwrap()).await.unwrap();
    let token = server.token(platform.app_id.as_str()).await;
    Mall { server, platform, token }
}

impl Mall {
    async fn credit(&self, master: &str, points: &str, external_id: &str) {
        let credit = Credit::points(
            MasterCid::new(master).unwrap(),
            Asset::PointA,
            Points::parse("amount", points).unwrap(),
            external_id,
            None,
        )
        .unwrap();
        self.server.engine.credit(&credit).await.unwrap();
    }

    async fn post(&self, path: &str, body: Value) -> carbon_e2e::Answer {
        self.server.post(path, Some(&self.token), body).await
    }
}

fn order(id: &str, a: &str) -> Value {
    json!({
        "cid": "c-1",
        "equityCid": "shop-1",
        "transactionId": id,
        "transactionPointA": a,
        "transactionTime": "2024-04-09 10:30:30",
        "transactionType": "0",
        "type": 0,
        "data": ["话费充值卡", "充电宝"],
    })
}

async fn a_platform_settles_refunds_and_reads_bills(db: TestDb) {
    let m = mall(db, Config::default()).await;
    m.server
        .engine
        .store()
        .upsert_license(
            &carbon_e2e::carbon_engine::store::License {
                name: "用户协议".into(),
                download_url: "https://x/a.pdf".into(),
            },
            1,
        )
        .await
        .unwrap();
    let licenses = m.server.get("/auth/equity/licenseAgreement", Some(&m.token)).await;
    assert_eq!(licenses.body["content"]["licenseList"][0]["downloadUrl"], "https://x/a.pdf");

    let authorized = m.post("/auth/accountAuthorize", json!({ "cid": "c-1" })).await;
    assert_eq!(
        (authorized.status, authorized.body.clone()),
        (200, json!({ "code": 200, "msg": "成功", "content": null }))
    );
    m.credit("m-1", "100", "grant-1").await;
    let info = m.post("/account/getPointInfo", json!({ "cid": "c-1" })).await;
    assert_eq!(
        info.body["content"],
        json!({ "pointInfo": [{ "pointType": 1, "pointBalance": "100" }, { "pointType": 2, "pointBalance": "0" }] })
    );

    let settled = m.post("/transaction/orderSettel", order("o-1", "12.5")).await;
    assert_eq!(settled.body, json!({ "code": 200, "msg": "成功", "content": "交易成功" }));
    let again = m.post("/transaction/orderSettel", order("o-1", "12.50")).await;
    assert_eq!(again.body["content"], "交易成功", "the same order again answers the original success");
    let mut refund = order("r-1", "-2.5");
    refund["parentTransactionId"] = json!("o-1");
    assert_eq!(m.post("/transaction/orderSettel", refund).await.code(), 200);
    let info = m.post("/account/getPointInfo", json!({ "cid": "c-1" })).await;
    assert_eq!(info.body["content"]["pointInfo"][0]["pointBalance"], "90");

    let bills = m
        .post(
            "/account/getPointsBillInfo",
            json!({ "beginTime": "2024-04-09 10:30:30", "endTime": "2024-04-09 10:30:30", "pageSize": 1 }),
        )
        .await;
    let content = &bills.body["content"];
    assert_eq!(
        (
            content["total"].clone(),
            content["totalCapped"].clone(),
            content["page"].clone(),
            content["pageSize"].clone()
        ),
        (json!(2), json!(false), json!(1), json!(1))
    );
    let bill = &content["bill"][0];
    assert_eq!(bill["transactionId"], "r-1");
    assert_eq!(bill["amount"], "-2.5");
    assert_eq!(bill["cid"], "c-1");
    assert_eq!(bill["parentTransactionId"], "o-1");
    assert_eq!(bill["transactionTime"], 1_712_629_830_000_i64);
    assert!(bill["transactionPaymentTime"].as_i64().unwrap() > 1_712_629_830_000);
    let none = m
        .post(
            "/account/getPointsBillInfo",
            json!({ "equityCid": "shop-1", "beginTime": "2024-04-09 10:30:31", "endTime": "2025-01-01 00:00:00" }),
        )
        .await;
    assert_eq!(none.body["content"]["total"], 0);

    let scenes = m.server.get("/auth/getReductionScene?cid=c-1", Some(&m.token)).await;
    assert_eq!(scenes.body["content"], json!({ "sceneList": [] }));
    assert!(m.server.engine.verify().await.unwrap().is_sound());
}

async fn authentication_is_checked_in_order(db: TestDb) {
    let m = mall(db, Config { token_ttl_secs: 1, ..Config::default() }).await;
    let body = Some(json!({ "cid": "c-1" }).to_string());
    let send = |token: Option<&'static str>, headers: Vec<(String, String)>| {
        let body = body.clone();
        let server = &m.server;
        async move { server.send("POST", "/account/getPointInfo", token, headers, body).await }
    };
    assert_eq!(send(None, Server::fresh_headers()).await.code(), 40101);
    assert_eq!(send(Some("not-a-token"), Server::fresh_headers()).await.code(), 40101);
    let token = m.token.clone();
    let with = |headers: Vec<(String, String)>| {
        let (token, body, server) = (token.clone(), body.clone(), &m.server);
        async move { server.send("POST", "/account/getPointInfo", Some(&token), headers, body).await }
    };
    let id = || uuid::Uuid::new_v4().to_string();
    let now = || carbon_e2e::carbon_engine::now_ms().to_string();
    let missing_id = with(vec![("timestamp".into(), now())]).await;
    assert_eq!((missing_id.status, missing_id.code()), (400, 40001));
    assert!(missing_id.msg().contains("transactionId"), "{}", missing_id.msg());
    assert_eq!(with(vec![("transactionId".into(), "123".into()), ("timestamp".into(), now())]).await.code(), 40001);
    assert_eq!(with(vec![("transactionId".into(), id())]).await.code(), 40001);
    let stale = (carbon_e2e::carbon_engine::now_ms() - 301_000).to_string();
    let old = with(vec![("transactionId".into(), id()), ("timestamp".into(), stale)]).await;
    assert_eq!((old.status, old.code()), (401, 40104));
    let headers = vec![("transactionId".into(), id()), ("timestamp".into(), now())];
    assert_eq!(with(headers.clone()).await.code(), 40301, "valid call: the cid has not authorized yet");
    let replay = with(headers).await;
    assert_eq!((replay.status, replay.code()), (409, 40105));
    // The token is checked before the headers: an expired token with bad headers is 40102.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let expired = with(vec![]).await;
    assert_eq!((expired.status, expired.code()), (401, 40102));
}

async fn get_access_token_refuses_uniformly_and_is_rate_limited(db: TestDb) {
    let m = mall(db, Config { token_rate_per_min: 5, ..Config::default() }).await;
    let app_id = m.platform.app_id.as_str();
    let oaep = m.server.post("/auth/getAccessToken", None, json!({ "appId": m.server.encrypt(app_id, true) })).await;
    assert_eq!(oaep.code(), 200, "OAEP-SHA256 is accepted: {oaep:?}");
    assert!(oaep.body["content"]["expireTime"].as_i64().unwrap() > carbon_e2e::carbon_engine::now_ms() + 86_000_000);
    for app_id_field in [json!("bm90IGVuY3J5cHRlZA=="), json!(m.server.encrypt("no-such-platform", false))] {
        let refused = m.server.post("/auth/getAccessToken", None, json!({ "appId": app_id_field })).await;
        assert_eq!((refused.status, refused.code()), (401, 40103));
        assert_eq!(refused.msg(), "appId cannot be decrypted or is not a registered platform");
    }
    // One token was taken by `mall`, three here: the fifth call is the last allowed.
    let fifth = m.server.post("/auth/getAccessToken", None, json!({ "appId": m.server.encrypt(app_id, false) })).await;
    assert_eq!(fifth.code(), 200);
    let sixth = m.server.post("/auth/getAccessToken", None, json!({ "appId": m.server.encrypt(app_id, false) })).await;
    assert_eq!((sixth.status, sixth.code()), (429, 42901));
}

async fn bad_input_answers_40001_naming_the_field(db: TestDb) {
    let m = mall(db, Config::default()).await;
    m.post("/auth/accountAuthorize", json!({ "cid": "c-1" })).await;
    m.credit("m-1", "100", "grant-1").await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({ "transactionPointA": 10 }), "transactionPointA"),
        (json!({ "transactionPointA": "1.001" }), "transactionPointA"),
        (json!({ "transactionPointA": "1e2" }), "transactionPointA"),
        (json!({ "data": ["一二三四五六七八九十一二三四五六七八九十一"] }), "data[0]"),
        (json!({ "data": [] }), "data"),
        (json!({ "transactionTime": "2024/04/09" }), "transactionTime"),
        (json!({ "type": 3 }), "type"),
        (json!({ "cid": 7 }), "cid"),
    ];
    for (patch, field) in cases {
        let mut body = order("o-bad", "1");
        for (key, value) in patch.as_object().unwrap() {
            body[key] = value.clone();
        }
        let answer = m.post("/transaction/orderSettel", body).await;
        assert_eq!((answer.status, answer.code()), (400, 40001), "{field}: {answer:?}");
        assert!(answer.msg().contains(field), "{field}: {}", answer.msg());
    }
    let too_deep = m
        .post(
            "/account/getPointsBillInfo",
            json!({ "beginTime": "2024-04-09 00:00:00", "endTime": "2024-04-10 00:00:00", "page": 21, "pageSize": 500 }),
        )
        .await;
    assert_eq!((too_deep.status, too_deep.code()), (400, 40001), "{too_deep:?}");
    assert!(too_deep.msg().contains("page") && too_deep.msg().contains("10000"), "{}", too_deep.msg());
    let not_json = m
        .server
        .send("POST", "/transaction/orderSettel", Some(&m.token), Server::fresh_headers(), Some("{oops".into()))
        .await;
    assert_eq!(not_json.code(), 40001);
    let huge = json!({ "cid": "x".repeat(70_000) }).to_string();
    let oversized =
        m.server.send("POST", "/account/getPointInfo", Some(&m.token), Server::fresh_headers(), Some(huge)).await;
    assert_eq!(oversized.code(), 40001);
    assert!(oversized.msg().contains("body"), "{}", oversized.msg());
    let unknown = m.server.get("/nowhere", None).await;
    assert_eq!((unknown.status, unknown.code(), unknown.body["content"].clone()), (404, 40400, Value::Null));
    let wrong_method = m.server.get("/transaction/orderSettel", Some(&m.token)).await;
    assert_eq!((wrong_method.status, wrong_method.code()), (405, 40500));
    assert_eq!(
        m.post("/account/getPointInfo", json!({ "cid": "c-1" })).await.body["content"]["pointInfo"][0]["pointBalance"],
        "100"
    );
}

async fn business_errors_have_their_codes(db: TestDb) {
    let m = mall(db, Config::default()).await;
    assert_eq!(m.post("/auth/accountAuthorize", json!({ "cid": "unknown" })).await.code(), 40401);
    assert_eq!(m.post("/transaction/orderSettel", order("o-0", "1")).await.code(), 40301);
    m.post("/auth/accountAuthorize", json!({ "cid": "c-1" })).await;
    m.credit("m-1", "10", "grant-1").await;
    let mut stranger = order("o-1", "1");
    stranger["equityCid"] = json!("stranger");
    assert_eq!(m.post("/transaction/orderSettel", stranger).await.code(), 40302);
    assert_eq!(m.post("/transaction/orderSettel", order("o-2", "10.01")).await.code(), 42201);
    let mut bad_type = order("o-3", "1");
    bad_type["transactionType"] = json!("no spaces allowed");
    assert_eq!(m.post("/transaction/orderSettel", bad_type).await.code(), 42202);
    assert_eq!(m.post("/transaction/orderSettel", order("o-4", "4")).await.code(), 200);
    let conflict = m.post("/transaction/orderSettel", order("o-4", "5")).await;
    assert_eq!((conflict.status, conflict.code()), (409, 40901));
    let mut orphan = order("r-1", "-1");
    orphan["parentTransactionId"] = json!("nope");
    assert_eq!(m.post("/transaction/orderSettel", orphan).await.code(), 40402);
    let mut too_much = order("r-2", "-4.01");
    too_much["parentTransactionId"] = json!("o-4");
    let answer = m.post("/transaction/orderSettel", too_much).await;
    assert_eq!((answer.status, answer.code()), (422, 42203));
}

async fn platforms_see_only_their_own_people_and_bills(db: TestDb) {
    let m = mall(db, Config::default()).await;
    let engine = &m.server.engine;
    let other = engine.add_platform("other", None).await.unwrap();
    engine.map_cid(&other, &SubCid::new("o-cid").unwrap(), &MasterCid::new("m-1").unwrap()).await.unwrap();
    let other_token = m.server.token(other.app_id.as_str()).await;
    m.post("/auth/accountAuthorize", json!({ "cid": "c-1" })).await;
    m.credit("m-1", "10", "grant-1").await;
    assert_eq!(m.post("/transaction/orderSettel", order("o-1", "1")).await.code(), 200);
    // The other platform cannot use the first platform's cid for the same person…
    let foreign = m.server.post("/auth/accountAuthorize", Some(&other_token), json!({ "cid": "c-1" })).await;
    assert_eq!(foreign.code(), 40401);
    let peek = m.server.post("/account/getPointInfo", Some(&other_token), json!({ "cid": "c-1" })).await;
    assert_eq!(peek.code(), 40301);
    // …sees the person through its own cid once authorized, and none of the first one's bills.
    m.server.post("/auth/accountAuthorize", Some(&other_token), json!({ "cid": "o-cid" })).await;
    let own = m.server.post("/account/getPointInfo", Some(&other_token), json!({ "cid": "o-cid" })).await;
    assert_eq!(own.body["content"]["pointInfo"][0]["pointBalance"], "9");
    let bills = m
        .server
        .post(
            "/account/getPointsBillInfo",
            Some(&other_token),
            json!({ "beginTime": "2000-01-01 00:00:00", "endTime": "2100-01-01 00:00:00" }),
        )
        .await;
    assert_eq!(bills.body["content"]["total"], 0);
    // The provider is not linked to the other platform.
    let mut theirs = order("o-2", "1");
    theirs["cid"] = json!("o-cid");
    assert_eq!(m.server.post("/transaction/orderSettel", Some(&other_token), theirs).await.code(), 40302);
}

async fn concurrent_settlements_over_http_never_overdraw(db: TestDb) {
    let m = mall(db, Config::default()).await;
    m.post("/auth/accountAuthorize", json!({ "cid": "c-1" })).await;
    m.credit("m-1", "20", "grant-1").await;
    let m = std::sync::Arc::new(m);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..60 {
        let m = m.clone();
        tasks.spawn(async move { m.post("/transaction/orderSettel", order(&format!("o-{i}"), "1")).await.code() });
    }
    let mut codes = std::collections::BTreeMap::new();
    while let Some(code) = tasks.join_next().await {
        *codes.entry(code.unwrap()).or_insert(0) += 1;
    }
    assert_eq!(codes, [(200, 20), (42201, 40)].into_iter().collect());
    assert!(m.server.engine.verify().await.unwrap().is_sound());
}

async fn subscriptions_refuse_unsafe_urls(db: TestDb) {
    let m = mall(db, Config::default()).await;
    let subscribe = |url: &str, kind: i64| m.post("/subscribe", json!({ "notifyUrl": url, "type": kind }));
    assert_eq!(subscribe("https://93.184.216.34/push/bills", 1).await.code(), 200);
    assert_eq!(subscribe("https://93.184.216.34/push/auth", 2).await.code(), 200);
    assert_eq!(subscribe("https://93.184.216.34/push/bills-v2", 1).await.code(), 200, "the same type overwrites");
    let store = m.server.engine.store();
    assert_eq!(
        store.subscription(m.platform.id, 1).await.unwrap().as_deref(),
        Some("https://93.184.216.34/push/bills-v2")
    );
    for (url, kind, field) in [
        ("http://127.0.0.1:9000/push", 1, "notifyUrl"),
        ("http://169.254.169.254/", 2, "notifyUrl"),
        ("https://user:secret@93.184.216.34/", 1, "notifyUrl"),
        ("ftp://93.184.216.34/", 1, "notifyUrl"),
        ("https://93.184.216.34/push", 3, "type"),
    ] {
        let answer = subscribe(url, kind).await;
        assert_eq!((answer.status, answer.code()), (400, 40001), "{url}");
        assert!(answer.msg().contains(field), "{url}: {}", answer.msg());
    }
    drop(m);
}

async fn the_admin_api_offers_the_operator_operations(db: TestDb) {
    const ADMIN: &str = "an-admin-token-of-some-length";
    let server = Server::start(db, Config { admin_token: Some(ADMIN.into()), ..Config::default() }).await;
    let admin = |method: &'static str, path: &'static str, body: Option<String>| {
        let server = &server;
        async move {
            let headers = vec![("Authorization".to_owned(), format!("Bearer {ADMIN}"))];
            server.send(method, path, None, headers, body).await
        }
    };
    let wrong =
        server.send("GET", "/admin/v1/verify", None, vec![("Authorization".into(), "Bearer nope".into())], None).await;
    assert_eq!((wrong.status, wrong.code()), (401, 40101));
    let added =
        admin("POST", "/admin/v1/platforms", Some(json!({ "name": "Mall", "appId": "app-1" }).to_string())).await;
    assert_eq!(added.body["content"]["appId"], "app-1");
    let twice =
        admin("POST", "/admin/v1/platforms", Some(json!({ "name": "Mall", "appId": "app-1" }).to_string())).await;
    assert_eq!(twice.code(), 40901);
    let listed = admin("GET", "/admin/v1/platforms", None).await;
    assert_eq!(listed.body["content"]["platforms"][0]["name"], "Mall");
    let provider = json!({ "equityCid": "shop-1", "name": "Tea", "platforms": ["app-1"] }).to_string();
    assert_eq!(admin("POST", "/admin/v1/providers", Some(provider)).await.code(), 200);
    let imported =
        admin("POST", "/admin/v1/ca/import", Some("app_id,cid,master_cid\napp-1,c-1,m-1\nbad-row\n".into())).await;
    assert_eq!(imported.body["content"]["inserted"], 1);
    assert_eq!(imported.body["content"]["refused"][0]["line"], 3);
    let credit = json!({ "masterCid": "m-1", "class": "a", "amount": "10.5", "externalId": "g-1" }).to_string();
    assert_eq!(admin("POST", "/admin/v1/credits/points", Some(credit.clone())).await.body["content"]["credited"], true);
    assert_eq!(admin("POST", "/admin/v1/credits/points", Some(credit)).await.body["content"]["credited"], false);
    let bad = json!({ "masterCid": "m-1", "class": "c", "amount": "1", "externalId": "g-2" }).to_string();
    let bad = admin("POST", "/admin/v1/credits/points", Some(bad)).await;
    assert_eq!((bad.code(), bad.msg().contains("class")), (40001, true), "{bad:?}");
    let reduction = json!({ "masterCid": "m-1", "kg": "2", "scene": "单车", "methodology": "SHCER020200120241", "externalId": "r-1" });
    assert_eq!(admin("POST", "/admin/v1/credits/reduction", Some(reduction.to_string())).await.code(), 200);
    let license = json!({ "name": "协议", "url": "https://x/a.pdf" }).to_string();
    assert_eq!(admin("POST", "/admin/v1/licenses", Some(license)).await.code(), 200);

    // The platform sees what the operator set up.
    let token = server.token("app-1").await;
    assert_eq!(server.post("/auth/accountAuthorize", Some(&token), json!({ "cid": "c-1" })).await.code(), 200);
    let info = server.post("/account/getPointInfo", Some(&token), json!({ "cid": "c-1" })).await;
    assert_eq!(info.body["content"]["pointInfo"][0]["pointBalance"], "10.5");
    let scenes = server.get("/auth/getReductionScene?cid=c-1", Some(&token)).await;
    assert_eq!(scenes.body["content"]["sceneList"], json!(["单车"]));
    let cancel = json!({ "platform": "app-1", "cid": "c-1" }).to_string();
    assert_eq!(admin("POST", "/admin/v1/authorizations/cancel", Some(cancel)).await.code(), 200);
    assert_eq!(server.post("/account/getPointInfo", Some(&token), json!({ "cid": "c-1" })).await.code(), 40301);

    let verified = admin("GET", "/admin/v1/verify", None).await;
    assert_eq!(verified.body["content"]["sound"], true, "{verified:?}");
    let before = admin("GET", "/admin/v1/keys/public", None).await.body["content"]["publicKeyPem"].clone();
    let rotated = admin("POST", "/admin/v1/keys/rotate", None).await.body["content"]["publicKeyPem"].clone();
    assert!(rotated.as_str().unwrap().starts_with("-----BEGIN PUBLIC KEY-----"));
    assert_ne!(before, rotated);
}

async fn metrics_and_health_are_served(db: TestDb) {
    let m = mall(db, Config::default()).await;
    m.post("/auth/accountAuthorize", json!({ "cid": "c-1" })).await;
    m.credit("m-1", "5", "g").await;
    m.post("/transaction/orderSettel", order("o-1", "1")).await;
    m.post("/transaction/orderSettel", order("o-2", "100")).await;
    let client = reqwest::Client::new();
    let text = |path: &'static str| {
        let (client, base) = (client.clone(), m.server.base.clone());
        async move { client.get(format!("{base}{path}")).send().await.unwrap().text().await.unwrap() }
    };
    assert_eq!(text("/healthz").await, "ok");
    assert_eq!(text("/readyz").await, "ready");
    let metrics = text("/metrics").await;
    for line in [
        "carbon_http_requests_total{route=\"/carbon-inclusion/apis/v1/transaction/orderSettel\",code=\"200\"} 1",
        "carbon_http_requests_total{route=\"/carbon-inclusion/apis/v1/transaction/orderSettel\",code=\"42201\"} 1",
        "carbon_settlement_seconds_count 2",
    ] {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }
}

/// A little CA: knows `c-9` of any platform as `m-9`, fails for `broken`.
async fn start_ca() -> String {
    use axum::extract::Path;
    use axum::http::StatusCode;
    async fn resolve(Path((_app_id, cid)): Path<(String, String)>) -> (StatusCode, String) {
        match cid.as_str() {
            "c-9" => (StatusCode::OK, json!({ "masterCid": "m-9" }).to_string()),
            "broken" => (StatusCode::INTERNAL_SERVER_ERROR, "down".into()),
            _ => (StatusCode::NOT_FOUND, String::new()),
        }
    }
    let app = axum::Router::new().route("/ca/cids/{app_id}/{cid}", axum::routing::get(resolve));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/ca", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

async fn an_http_ca_resolves_cids(db: TestDb) {
    let ca = start_ca().await;
    let m = mall(db, Config { ca_url: Some(ca), ..Config::default() }).await;
    assert_eq!(m.post("/auth/accountAuthorize", json!({ "cid": "c-9" })).await.code(), 200);
    m.credit("m-9", "3", "g").await;
    let info = m.post("/account/getPointInfo", json!({ "cid": "c-9" })).await;
    assert_eq!(info.body["content"]["pointInfo"][0]["pointBalance"], "3");
    // The local table is not consulted when an HTTP CA is configured: c-1 is unknown there.
    assert_eq!(m.post("/auth/accountAuthorize", json!({ "cid": "c-1" })).await.code(), 40401);
    let broken = m.post("/auth/accountAuthorize", json!({ "cid": "broken" })).await;
    assert_eq!((broken.status, broken.code(), broken.msg()), (500, 50001, "internal error"));
}

/// `GET /openapi.json` describes every endpoint with its method, headers and body schema.
async fn openapi_document_lists_every_endpoint(db: TestDb) {
    let server = Server::start(db, Config::default()).await;
    let response = reqwest::get(format!("{}/openapi.json", server.base)).await.unwrap();
    assert_eq!(response.status(), 200);
    let document: Value = response.json().await.unwrap();
    let version = document["openapi"].as_str().unwrap_or("");
    assert!(version.starts_with("3."), "openapi = {version:?}");
    // A `$ref` resolved within the document.
    let resolve = |schema: &Value| match schema["$ref"].as_str() {
        Some(reference) => document.pointer(reference.trim_start_matches('#')).expect("$ref resolves").clone(),
        None => schema.clone(),
    };
    let endpoints = [
        ("post", "/auth/getAccessToken"),
        ("get", "/auth/equity/licenseAgreement"),
        ("post", "/auth/accountAuthorize"),
        ("get", "/auth/getReductionScene"),
        ("post", "/account/getPointInfo"),
        ("post", "/account/getPointsBillInfo"),
        ("post", "/transaction/orderSettel"),
        ("post", "/subscribe"),
    ];
    assert_eq!(document["paths"].as_object().unwrap().len(), endpoints.len(), "{}", document["paths"]);
    for (method, path) in endpoints {
        let operation = &document["paths"][format!("{}{path}", carbon_e2e::API)][method];
        assert!(operation.is_object(), "{method} {path} missing");
        let parameters = operation["parameters"].as_array().unwrap();
        let named = |name: &str, place: &str| {
            parameters.iter().find(|parameter| parameter["name"] == name && parameter["in"] == place).cloned()
        };
        let request_id = named("transactionId", "header").unwrap_or_else(|| panic!("{path}: no transactionId"));
        assert_eq!(
            (request_id["required"].clone(), request_id["schema"]["format"].clone()),
            (json!(true), json!("uuid"))
        );
        let timestamp = named("timestamp", "header").unwrap_or_else(|| panic!("{path}: no timestamp"));
        assert_eq!(timestamp["schema"]["format"], "int64", "{path}");
        let authenticated = path != "/auth/getAccessToken";
        assert_eq!(named("Authorization", "header").is_some(), authenticated, "{path}");
        assert_eq!(operation["security"].is_array(), authenticated, "{path}");
        let success = resolve(&operation["responses"]["200"]["content"]["application/json"]["schema"]);
        assert_eq!(success["required"], json!(["code", "msg", "content"]), "{path}");
        for status in ["400", "409", "500"] {
            assert!(operation["responses"][status].is_object(), "{path}: no {status} answer");
        }
        assert_eq!(method == "post", operation["requestBody"]["required"] == json!(true), "{path}");
    }
    let scenes = &document["paths"][format!("{}/auth/getReductionScene", carbon_e2e::API)]["get"];
    assert!(
        scenes["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "cid" && p["in"] == "query"),
        "getReductionScene has its cid query parameter"
    );
    assert_eq!(document["components"]["securitySchemes"]["token"]["name"], "Authorization");

    let settle = &document["paths"][format!("{}/transaction/orderSettel", carbon_e2e::API)]["post"];
    let order = resolve(&settle["requestBody"]["content"]["application/json"]["schema"]);
    let required: Vec<&str> = order["required"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    for field in ["cid", "equityCid", "transactionId", "transactionTime", "transactionType", "data"] {
        assert!(required.contains(&field), "{field} not required in {order}");
    }
    for field in ["parentTransactionId", "transactionPointA", "transactionPointB", "type"] {
        assert!(!required.contains(&field), "{field} is optional");
    }
    assert_eq!(order["properties"]["transactionPointA"]["pattern"], r"^-?[0-9]{1,13}(\.[0-9]{1,2})?$");
    assert_eq!(
        (order["properties"]["data"]["minItems"].clone(), order["properties"]["data"]["maxItems"].clone()),
        (json!(1), json!(100))
    );
    for status in ["403", "404", "422", "503"] {
        assert!(settle["responses"][status].is_object(), "orderSettel: no {status} answer");
    }
}
