//! Pushes end to end (SPEC §7): a real server with its dispatcher, real receivers on loopback,
//! both backends.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use carbon_e2e::carbon_engine::amount::Points;
use carbon_e2e::carbon_engine::credit::Credit;
use carbon_e2e::carbon_engine::directory::Platform;
use carbon_e2e::carbon_engine::ids::{EquityCid, MasterCid, SubCid};
use carbon_e2e::carbon_engine::ledger::Asset;
use carbon_e2e::carbon_engine::order::OrderInput;
use carbon_e2e::carbon_engine::push::{BatchFilter, BatchStatus, PushKind};
use carbon_e2e::carbon_engine::testing::TestDb;
use carbon_e2e::receiver::{Receiver, Reply};
use carbon_e2e::{Server, json, on_both_backends};
use carbon_host::config::Config;
use carbon_host::metrics::PushEvent;
use serde_json::Value;

on_both_backends!(
    bills_go_out_in_batches_of_500_none_missing_none_twice,
    only_a_json_code_200_acknowledges,
    three_failed_attempts_dead_letter_then_later_batches_go_on_and_requeue_delivers,
    a_server_killed_mid_backlog_loses_nothing,
    authorization_changes_are_pushed_promptly,
    two_instances_never_send_one_batch_twice,
    a_dead_receiver_does_not_delay_other_platforms,
    loopback_urls_are_refused_by_default_and_again_at_send_time,
);

const ADMIN: &str = "an-admin-token-of-some-length";

/// Pushes in test time: loopback receivers allowed, short interval, poll, timeout and backoff.
fn fast() -> Config {
    Config {
        push_allow_private: true,
        push_interval: Duration::from_millis(300),
        push_poll: Duration::from_millis(50),
        push_timeout: Duration::from_secs(2),
        push_retry: Duration::from_millis(200),
        admin_token: Some(ADMIN.into()),
        ..Config::default()
    }
}

/// A server with one platform, a linked provider `shop-1`, and people `c-0`… mapped to
/// `m-0`… but not yet authorized.
struct Mall {
    server: Server,
    platform: Platform,
    token: String,
}

async fn mall(db: TestDb, config: Config, people: usize) -> Mall {
    let server = Server::start(db, config).await;
    let platform = onboard(&server, "mall", people).await;
    let token = server.token(platform.app_id.as_str()).await;
    Mall { server, platform, token }
}

async fn onboard(server: &Server, name: &str, people: usize) -> Platform {
    let engine = &server.engine;
    let platform = engine.add_platform(name, None).await.unwrap();
    engine
        .add_provider(&EquityCid::new("shop-1").unwrap(), "shop", std::slice::from_ref(&platform.app_id))
        .await
        .unwrap();
    for i in 0..people {
        let (cid, master) = (SubCid::new(format!("c-{i}")).unwrap(), MasterCid::new(format!("m-{i}")).unwrap());
        engine.map_cid(&platform, &cid, &master).await.unwrap();
    }
    platform
}

impl Mall {
    async fn post(&self, path: &str, body: Value) -> carbon_e2e::Answer {
        self.server.post(path, Some(&self.token), body).await
    }

    async fn subscribe(&self, url: &str, kind: i64) {
        let answer = self.post("/subscribe", json!({ "notifyUrl": url, "type": kind })).await;
        assert_eq!(answer.code(), 200, "{answer:?}");
    }

    async fn admin(&self, method: &str, path: &str) -> carbon_e2e::Answer {
        let headers = vec![("Authorization".to_owned(), format!("Bearer {ADMIN}"))];
        self.server.send(method, path, None, headers, None).await
    }

    /// Authorizes `c-0` and credits it `points` A.
    async fn buyer(&self, points: &str) {
        assert_eq!(self.post("/auth/accountAuthorize", json!({ "cid": "c-0" })).await.code(), 200);
        let amount = Points::parse("amount", points).unwrap();
        let credit = Credit::points(MasterCid::new("m-0").unwrap(), Asset::PointA, amount, "grant", None).unwrap();
        self.server.engine.credit(&credit).await.unwrap();
    }

    /// Settles orders `prefix-0000`… of 1 point each, one after another, through the engine.
    async fn settle(&self, prefix: &str, range: std::ops::Range<usize>) {
        for i in range {
            let order = OrderInput {
                cid: "c-0".into(),
                equity_cid: "shop-1".into(),
                transaction_id: format!("{prefix}-{i:04}"),
                transaction_point_a: Some("1".into()),
                transaction_time_ms: 1_712_629_830_000 + i as i64,
                transaction_type: "0".into(),
                data: vec!["充电宝".into()],
                ..OrderInput::default()
            }
            .validate()
            .unwrap();
            self.server.engine.settle(&self.platform, &order).await.unwrap();
        }
    }

    async fn batches(&self, filter: BatchFilter) -> Vec<carbon_e2e::carbon_engine::push::PushBatchInfo> {
        self.server.engine.store().push_batches(filter, 1000).await.unwrap()
    }

    fn count(&self, event: PushEvent, kind: PushKind) -> u64 {
        self.server.state.metrics.push_count(event, self.platform.id, kind)
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.server.base)).await.unwrap().text().await.unwrap()
    }
}

/// Waits until `condition` holds; panics after `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !condition().await {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn bills_go_out_in_batches_of_500_none_missing_none_twice(db: TestDb) {
    let m = mall(db, fast(), 1).await;
    m.buyer("2000").await;
    m.settle("o", 0..1201).await;
    // No subscription yet: the bills wait, and the lag shows it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let metrics = m.metrics().await;
    let pending = format!("carbon_push_pending_rows{{platform_id=\"{}\",type=\"bills\"}} 1201", m.platform.id.0);
    assert!(metrics.contains(&pending), "{pending} missing from\n{metrics}");
    assert!(m.batches(BatchFilter::All).await.is_empty(), "nothing is sealed without a subscription");

    let receiver = Receiver::start().await;
    m.subscribe(&receiver.url, 1).await;
    let pushes = receiver.wait_for(3, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pushes_after = receiver.received();
    assert_eq!(pushes_after.len(), 3, "exactly three pushes");

    let sizes: Vec<(i64, usize)> =
        pushes.iter().map(|p| (p.json["total"].as_i64().unwrap(), p.json["bill"].as_array().unwrap().len())).collect();
    assert_eq!(sizes, vec![(500, 500), (500, 500), (201, 201)]);
    assert!(pushes.windows(2).all(|pair| pair[0].push_id < pair[1].push_id), "batches in order");
    let sent: Vec<String> = pushes.iter().flat_map(|p| p.transaction_ids()).collect();
    let expected: Vec<String> = (0..1201).map(|i| format!("o-{i:04}")).collect();
    assert_eq!(sent, expected, "every bill once, in settlement order");
    assert!(pushes.iter().all(|p| p.verifies_with(&m.server.public_key_pem)), "signed with the server key");
    let now = carbon_e2e::carbon_engine::now_ms();
    assert!(pushes.iter().all(|p| (now - p.timestamp.parse::<i64>().unwrap()).abs() < 60_000));

    // The rows are exactly what getPointsBillInfo answers.
    let mut api_rows = BTreeMap::new();
    for page in 1..=3 {
        let answer = m
            .post(
                "/account/getPointsBillInfo",
                json!({ "beginTime": "2024-01-01 00:00:00", "endTime": "2025-01-01 00:00:00", "page": page, "pageSize": 500 }),
            )
            .await;
        for row in answer.body["content"]["bill"].as_array().unwrap() {
            api_rows.insert(row["transactionId"].as_str().unwrap().to_owned(), row.clone());
        }
    }
    assert_eq!(api_rows.len(), 1201);
    for row in pushes.iter().flat_map(|p| p.json["bill"].as_array().unwrap().clone()) {
        assert_eq!(Some(&row), api_rows.get(row["transactionId"].as_str().unwrap()));
    }

    let batches = m.batches(BatchFilter::All).await;
    assert!(batches.iter().all(|b| b.status == BatchStatus::Delivered && b.attempts == 0), "{batches:?}");
    assert_eq!(batches.iter().map(|b| b.rows).sum::<u64>(), 1201);
    assert_eq!((m.count(PushEvent::Sent, PushKind::Bills), m.count(PushEvent::Acked, PushKind::Bills)), (3, 3));
    let metrics = m.metrics().await;
    let acked = format!("carbon_push_acked_total{{platform_id=\"{}\",type=\"bills\"}} 3", m.platform.id.0);
    assert!(metrics.contains(&acked), "{acked} missing from\n{metrics}");
    let bills_pending = format!("carbon_push_pending_rows{{platform_id=\"{}\",type=\"bills\"}}", m.platform.id.0);
    assert!(!metrics.contains(&bills_pending), "no bill pending:\n{metrics}");
    // c-0's authorization waits: the platform never subscribed to type 2.
    let auth_pending =
        format!("carbon_push_pending_rows{{platform_id=\"{}\",type=\"authorization\"}} 1", m.platform.id.0);
    assert!(metrics.contains(&auth_pending), "{auth_pending} missing from\n{metrics}");
}

async fn only_a_json_code_200_acknowledges(db: TestDb) {
    let m = mall(db, fast(), 1).await;
    let receiver = Receiver::start().await;
    // Each failure is followed by an acknowledged retry of the same batch.
    let failures = [
        (Reply::Body(r#"{"code":500}"#), "answer code 500, not 200"),
        (Reply::Body("{}"), "answer has no code"),
        (Reply::Body("OK"), "answer is not JSON"),
        (Reply::Body(r#"{"code":"200"}"#), "answer code \"200\", not 200"),
        (Reply::Status(500), "HTTP 500"),
        (Reply::Status(302), "HTTP 302"),
        (Reply::Hang(Duration::from_secs(4)), "no answer within 2000 ms"),
    ];
    receiver.script(failures.iter().flat_map(|(reply, _)| [reply.clone(), Reply::Ack]));
    m.subscribe(&receiver.url, 2).await;
    // Seven changes of c-0: authorize, cancel, authorize, …
    for i in 0..failures.len() {
        if i % 2 == 0 {
            assert_eq!(m.post("/auth/accountAuthorize", json!({ "cid": "c-0" })).await.code(), 200);
        } else {
            let cancel = format!("{{\"platform\":\"{}\",\"cid\":\"c-0\"}}", m.platform.app_id);
            let headers = vec![("Authorization".to_owned(), format!("Bearer {ADMIN}"))];
            let answer = m.server.send("POST", "/admin/v1/authorizations/cancel", None, headers, Some(cancel)).await;
            assert_eq!(answer.code(), 200);
        }
    }
    let pushes = receiver.wait_for(2 * failures.len(), Duration::from_secs(30)).await;
    for (i, pair) in pushes.chunks(2).enumerate() {
        assert_eq!(pair[0].push_id, pair[1].push_id, "the failed batch is retried before the next one");
        assert_eq!(pair[0].json, json!({ "cid": "c-0", "type": if i % 2 == 0 { 1 } else { -1 } }));
    }
    eventually(Duration::from_secs(5), "all delivered", || async {
        m.batches(BatchFilter::All).await.iter().filter(|b| b.status == BatchStatus::Delivered).count()
            == failures.len()
    })
    .await;
    let mut batches = m.batches(BatchFilter::All).await;
    batches.reverse();
    for (batch, (_, error)) in batches.iter().zip(&failures) {
        assert_eq!((batch.attempts, batch.last_error.as_deref()), (1, Some(*error)), "{batch:?}");
    }
    let failed = m.count(PushEvent::Failed, PushKind::Authorization);
    assert_eq!((failed, m.count(PushEvent::Acked, PushKind::Authorization)), (7, 7));
}

async fn three_failed_attempts_dead_letter_then_later_batches_go_on_and_requeue_delivers(db: TestDb) {
    let m = mall(db, fast(), 1).await;
    m.buyer("10").await;
    let receiver = Receiver::start().await;
    receiver.script([Reply::Status(500), Reply::Status(500), Reply::Status(500)]);
    m.settle("o", 0..1).await;
    m.subscribe(&receiver.url, 1).await;
    receiver.wait_for(3, Duration::from_secs(10)).await;
    eventually(Duration::from_secs(5), "dead-lettered", || async { m.batches(BatchFilter::Dead).await.len() == 1 })
        .await;
    let dead = m.batches(BatchFilter::Dead).await.remove(0);
    assert_eq!((dead.attempts, dead.last_error.as_deref(), dead.rows), (3, Some("HTTP 500"), 1));
    let listed = m.admin("GET", "/admin/v1/pushes?dead=true").await;
    assert_eq!(listed.body["content"]["pushes"][0]["id"], dead.id, "{listed:?}");
    assert_eq!(listed.body["content"]["pushes"][0]["lastError"], "HTTP 500");
    let received = receiver.received();
    assert!(received.iter().all(|p| p.push_id == dead.id && p.transaction_ids() == ["o-0000"]));
    let (failed, dead_lettered) =
        (m.count(PushEvent::Failed, PushKind::Bills), m.count(PushEvent::DeadLettered, PushKind::Bills));
    assert_eq!((failed, dead_lettered), (3, 1));

    // The platform's later bills go on.
    m.settle("o", 1..2).await;
    let pushes = receiver.wait_for(4, Duration::from_secs(10)).await;
    assert_eq!(pushes[3].transaction_ids(), ["o-0001"]);
    assert_ne!(pushes[3].push_id, dead.id);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(receiver.received().len(), 4, "exactly three attempts of the dead batch");

    // The operator re-queues it: it is delivered.
    let requeued = m.admin("POST", &format!("/admin/v1/pushes/{}/requeue", dead.id)).await;
    assert_eq!(requeued.code(), 200, "{requeued:?}");
    let pushes = receiver.wait_for(5, Duration::from_secs(10)).await;
    assert_eq!((pushes[4].push_id, pushes[4].transaction_ids()), (dead.id, vec!["o-0000".to_owned()]));
    eventually(Duration::from_secs(5), "all delivered", || async {
        m.batches(BatchFilter::All).await.iter().all(|b| b.status == BatchStatus::Delivered)
    })
    .await;
    let again = m.admin("POST", &format!("/admin/v1/pushes/{}/requeue", dead.id)).await;
    assert_eq!(again.code(), 40901, "only dead batches are re-queued: {again:?}");
    assert_eq!(m.admin("POST", "/admin/v1/pushes/987654/requeue").await.code(), 40001);
}

async fn a_server_killed_mid_backlog_loses_nothing(db: TestDb) {
    let config = || Config { push_timeout: Duration::from_secs(1), ..fast() };
    let mut m = mall(db, config(), 1).await;
    m.buyer("2000").await;
    m.settle("o", 0..1001).await; // 500 + 500 + 1
    let receiver = Receiver::start().await;
    receiver.script([Reply::Ack, Reply::Hang(Duration::from_secs(30))]);
    m.subscribe(&receiver.url, 1).await;
    receiver.wait_for(2, Duration::from_secs(20)).await;
    // The second batch is in flight: the server dies.
    m.server.kill().await;
    let killed_at = Instant::now();
    let restarted = Server::start(m.server.db.share().await, config()).await;
    // Its lease (3 × 1 s) runs out; the new server sends the second batch again, then the third.
    let pushes = receiver.wait_for(4, Duration::from_secs(20)).await;
    assert!(killed_at.elapsed() >= Duration::from_secs(2), "the dead server's lease was honoured");
    assert_eq!(pushes[1].push_id, pushes[2].push_id, "the batch cut off is sent again");
    assert_eq!(pushes[1].body, pushes[2].body, "with the same content");
    let ids: BTreeSet<String> = pushes.iter().flat_map(|p| p.transaction_ids()).collect();
    assert_eq!(ids.len(), 1001, "nothing lost");
    eventually(Duration::from_secs(5), "all delivered", || async {
        let batches = restarted.engine.store().push_batches(BatchFilter::All, 10).await.unwrap();
        batches.len() == 3 && batches.iter().all(|b| b.status == BatchStatus::Delivered)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 4);
}

async fn authorization_changes_are_pushed_promptly(db: TestDb) {
    // The dispatcher polls rarely here: only its wake-up can make a push prompt.
    let m = mall(db, Config { push_poll: Duration::from_secs(30), ..fast() }, 2).await;
    let receiver = Receiver::start().await;
    m.subscribe(&receiver.url, 2).await;
    let started = Instant::now();
    assert_eq!(m.post("/auth/accountAuthorize", json!({ "cid": "c-1" })).await.code(), 200);
    let pushes = receiver.wait_for(1, Duration::from_secs(3)).await;
    assert_eq!(pushes[0].json, json!({ "cid": "c-1", "type": 1 }));
    assert!(pushes[0].verifies_with(&m.server.public_key_pem));
    assert_eq!(m.post("/auth/accountAuthorize", json!({ "cid": "c-1" })).await.code(), 200, "again: no change");
    let cancel = format!("{{\"platform\":\"{}\",\"cid\":\"c-1\"}}", m.platform.app_id);
    let headers = vec![("Authorization".to_owned(), format!("Bearer {ADMIN}"))];
    assert_eq!(m.server.send("POST", "/admin/v1/authorizations/cancel", None, headers, Some(cancel)).await.code(), 200);
    let pushes = receiver.wait_for(2, Duration::from_secs(3)).await;
    assert_eq!(pushes[1].json, json!({ "cid": "c-1", "type": -1 }));
    assert!(started.elapsed() < Duration::from_secs(10), "prompt, not on the 30 s poll");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 2, "authorizing twice pushed once");
    assert_eq!(m.count(PushEvent::Acked, PushKind::Authorization), 2);
}

async fn two_instances_never_send_one_batch_twice(db: TestDb) {
    // Two instances, two streams each at a time, against twelve streams of slow receivers.
    let config = || Config { push_concurrency: 2, ..fast() };
    let a = Server::start(db, config()).await;
    let b = Server::start(a.db.share().await, config()).await;
    let receiver = Receiver::start().await;
    receiver.otherwise(Reply::Hang(Duration::from_millis(100)));
    let mut platforms = Vec::new();
    for p in 0..6 {
        let platform = onboard(&a, &format!("mall-{p}"), 5).await;
        let store = a.engine.store();
        store.put_subscription(platform.id, 1, &receiver.url, 1).await.unwrap();
        store.put_subscription(platform.id, 2, &receiver.url, 1).await.unwrap();
        platforms.push(platform);
    }
    for platform in &platforms {
        for i in 0..5 {
            a.engine.authorize(platform, &SubCid::new(format!("c-{i}")).unwrap()).await.unwrap();
        }
        let credit = Credit::points(MasterCid::new("m-0").unwrap(), Asset::PointA, Points(100), "g", None).unwrap();
        a.engine.credit(&credit).await.unwrap();
        for i in 0..3 {
            let order = OrderInput {
                cid: "c-0".into(),
                equity_cid: "shop-1".into(),
                transaction_id: format!("{}-{i}", platform.name),
                transaction_point_a: Some("0.01".into()),
                transaction_time_ms: 1_712_629_830_000,
                transaction_type: "0".into(),
                data: vec!["x".into()],
                ..OrderInput::default()
            }
            .validate()
            .unwrap();
            b.engine.settle(platform, &order).await.unwrap();
        }
    }
    // 6 × 5 authorization changes, and 6 platforms' bills (one batch each, or more if the
    // interval cut them).
    let expected_rows = 6 * 5 + 6 * 3;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows: usize = receiver.received().iter().map(|p| p.json["bill"].as_array().map_or(1, Vec::len)).sum();
        if rows >= expected_rows {
            break;
        }
        assert!(Instant::now() < deadline, "{rows} of {expected_rows} rows arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pushes = receiver.received();
    let mut seen = BTreeMap::new();
    for push in &pushes {
        *seen.entry(push.push_id).or_insert(0) += 1;
    }
    assert!(seen.values().all(|n| *n == 1), "a batch was sent twice: {seen:?}");
    let rows: usize = pushes.iter().map(|p| p.json["bill"].as_array().map_or(1, Vec::len)).sum();
    assert_eq!(rows, expected_rows);
    let bills: BTreeSet<String> = pushes.iter().flat_map(|p| p.transaction_ids()).collect();
    assert_eq!(bills.len(), 18);
    let sent = |server: &Server| -> u64 {
        platforms
            .iter()
            .flat_map(|p| [(p.id, PushKind::Bills), (p.id, PushKind::Authorization)])
            .map(|(id, kind)| server.state.metrics.push_count(PushEvent::Sent, id, kind))
            .sum()
    };
    let (by_a, by_b) = (sent(&a), sent(&b));
    assert_eq!(by_a + by_b, pushes.len() as u64);
    assert!(by_a > 0 && by_b > 0, "both instances worked: {by_a} and {by_b}");
    let batches = a.engine.store().push_batches(BatchFilter::All, 1000).await.unwrap();
    assert!(batches.iter().all(|b| b.status == BatchStatus::Delivered && b.attempts == 0));
}

async fn a_dead_receiver_does_not_delay_other_platforms(db: TestDb) {
    let m = mall(db, fast(), 1).await;
    let other = onboard(&m.server, "other", 1).await;
    let (dead, alive) = (Receiver::start().await, Receiver::start().await);
    dead.otherwise(Reply::Hang(Duration::from_secs(30)));
    let store = m.server.engine.store();
    store.put_subscription(m.platform.id, 2, &dead.url, 1).await.unwrap();
    store.put_subscription(other.id, 2, &alive.url, 1).await.unwrap();
    m.server.engine.authorize(&m.platform, &SubCid::new("c-0").unwrap()).await.unwrap();
    dead.wait_for(1, Duration::from_secs(5)).await;
    let started = Instant::now();
    m.server.engine.authorize(&other, &SubCid::new("c-0").unwrap()).await.unwrap();
    let pushes = alive.wait_for(1, Duration::from_secs(5)).await;
    assert!(started.elapsed() < Duration::from_millis(1500), "took {:?}", started.elapsed());
    assert_eq!(pushes[0].json, json!({ "cid": "c-0", "type": 1 }));
    assert_eq!(dead.received().len(), 1, "the dead receiver's request is still hanging");
}

async fn loopback_urls_are_refused_by_default_and_again_at_send_time(db: TestDb) {
    let config = Config { push_allow_private: false, ..fast() };
    let m = mall(db, config, 1).await;
    let receiver = Receiver::start().await;
    for url in [receiver.url.clone(), receiver.url.replace("127.0.0.1", "localhost")] {
        let answer = m.post("/subscribe", json!({ "notifyUrl": url, "type": 2 })).await;
        assert_eq!((answer.code(), answer.msg().contains("notifyUrl")), (40001, true), "{answer:?}");
    }
    // A URL stored earlier (or allowed by another instance's settings) is checked again when sent.
    m.server.engine.store().put_subscription(m.platform.id, 2, &receiver.url, 1).await.unwrap();
    m.server.engine.authorize(&m.platform, &SubCid::new("c-0").unwrap()).await.unwrap();
    eventually(Duration::from_secs(10), "dead-lettered", || async { m.batches(BatchFilter::Dead).await.len() == 1 })
        .await;
    let dead = m.batches(BatchFilter::Dead).await.remove(0);
    let error = dead.last_error.unwrap_or_default();
    assert!(error.contains("notifyUrl refused") && error.contains("loopback"), "{error}");
    assert!(receiver.received().is_empty(), "nothing reached the loopback receiver");
    assert_eq!(m.count(PushEvent::DeadLettered, PushKind::Authorization), 1);
}
