//! The endpoints of SPEC §4, under `/carbon-inclusion/apis/v1`. Handlers stay thin: decode,
//! call the engine, shape the answer.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Query, State};
use axum::response::Response;
use carbon_engine::bill::BillQuery;
use carbon_engine::ids::{AppId, EquityCid, SubCid};
use carbon_engine::order::OrderInput;
use serde::Deserialize;
use serde_json::json;

use super::AppState;
use super::auth::{Caller, RequestHeaders, new_token};
use super::body::JsonBody;
use super::error::{ApiError, ok};
use super::wire_time::parse_wire_time;
use crate::wire::BillRow;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRequest {
    app_id: String,
}

/// `POST /auth/getAccessToken`.
pub async fn get_access_token(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    _headers: RequestHeaders,
    JsonBody(body): JsonBody<TokenRequest>,
) -> Result<Response, ApiError> {
    state.token_rate.check(peer.ip())?;
    let refused = || ApiError::new(40103, "appId cannot be decrypted or is not a registered platform");
    let app_id = state.decryptor().decrypt_text(&body.app_id).ok_or_else(refused)?;
    let app_id = AppId::new(app_id).map_err(|_| refused())?;
    let platform = state.engine.store().platform_by_app_id(&app_id).await.map_err(ApiError::internal)?;
    let platform = platform.ok_or_else(refused)?;
    let (token, hash) = new_token();
    let expire_time = carbon_engine::now_ms() + state.config.token_ttl_secs as i64 * 1000;
    state.engine.store().insert_access_token(&hash, platform.id, expire_time).await.map_err(ApiError::internal)?;
    Ok(ok(Some(json!({ "accessToken": token, "expireTime": expire_time }))))
}

/// `GET /auth/equity/licenseAgreement`.
pub async fn license_agreement(State(state): State<AppState>, _caller: Caller) -> Result<Response, ApiError> {
    let licenses = state.engine.store().licenses().await.map_err(ApiError::internal)?;
    let list: Vec<_> = licenses
        .into_iter()
        .map(|license| json!({ "name": license.name, "downloadUrl": license.download_url }))
        .collect();
    Ok(ok(Some(json!({ "licenseList": list }))))
}

#[derive(Deserialize)]
pub struct CidRequest {
    cid: String,
}

fn sub_cid(cid: String) -> Result<SubCid, ApiError> {
    SubCid::new(cid).map_err(|err| ApiError::invalid("cid", err))
}

/// `POST /auth/accountAuthorize`.
pub async fn account_authorize(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CidRequest>,
) -> Result<Response, ApiError> {
    let cid = sub_cid(body.cid)?;
    let master_cid = state.ca.resolve(&caller.platform, &cid).await.map_err(ApiError::internal)?;
    let master_cid = master_cid.ok_or_else(|| ApiError::from(carbon_engine::EngineError::UnknownCid))?;
    state.engine.authorize_resolved(&caller.platform, &cid, &master_cid).await?;
    state.push_wake.notify_one();
    Ok(ok::<()>(None))
}

/// `GET /auth/getReductionScene?cid=`.
pub async fn get_reduction_scene(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<CidRequest>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|_| ApiError::invalid("cid", "query parameter missing"))?;
    let scenes = state.engine.scenes(&caller.platform, &sub_cid(query.cid)?).await?;
    Ok(ok(Some(json!({ "sceneList": scenes }))))
}

/// `POST /account/getPointInfo`.
pub async fn get_point_info(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CidRequest>,
) -> Result<Response, ApiError> {
    let balances = state.engine.point_balances(&caller.platform, &sub_cid(body.cid)?).await?;
    Ok(ok(Some(json!({ "pointInfo": [
        { "pointType": 1, "pointBalance": balances.point_a.to_string() },
        { "pointType": 2, "pointBalance": balances.point_b.to_string() },
    ] }))))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BillRequest {
    cid: Option<String>,
    equity_cid: Option<String>,
    begin_time: String,
    end_time: String,
    page: Option<u32>,
    page_size: Option<u32>,
}

/// `POST /account/getPointsBillInfo`.
pub async fn get_points_bill_info(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<BillRequest>,
) -> Result<Response, ApiError> {
    let zone = state.config.timezone;
    let query = BillQuery {
        cid: body.cid.filter(|cid| !cid.is_empty()).map(sub_cid).transpose()?,
        equity_cid: body
            .equity_cid
            .filter(|cid| !cid.is_empty())
            .map(|cid| EquityCid::new(cid).map_err(|err| ApiError::invalid("equityCid", err)))
            .transpose()?,
        begin_ms: parse_wire_time("beginTime", &body.begin_time, zone)?,
        // Wire times have whole seconds; the end second is included whole.
        end_ms: parse_wire_time("endTime", &body.end_time, zone)? + 999,
        page: body.page.unwrap_or(1),
        page_size: body.page_size.unwrap_or(10),
    };
    let page = state.engine.bills(&caller.platform, &query).await?;
    let bills: Vec<BillRow> = page.bills.into_iter().map(BillRow::from).collect();
    Ok(ok(Some(json!({
        "total": page.total,
        "page": query.page,
        "pageSize": query.page_size,
        "bill": bills,
    }))))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettleRequest {
    cid: String,
    equity_cid: String,
    transaction_id: String,
    parent_transaction_id: Option<String>,
    transaction_point_a: Option<String>,
    transaction_point_b: Option<String>,
    transaction_time: String,
    transaction_type: String,
    #[serde(rename = "type")]
    convert_type: Option<i64>,
    data: Vec<String>,
}

/// Validates an `orderSettel` body into an order (also used by `carbon-host plugin run`).
pub fn order_from_json(bytes: &[u8], zone: chrono_tz::Tz) -> Result<carbon_engine::order::Order, ApiError> {
    order_input(super::body::decode(bytes)?, zone)
}

fn order_input(body: SettleRequest, zone: chrono_tz::Tz) -> Result<carbon_engine::order::Order, ApiError> {
    Ok(OrderInput {
        transaction_time_ms: parse_wire_time("transactionTime", &body.transaction_time, zone)?,
        cid: body.cid,
        equity_cid: body.equity_cid,
        transaction_id: body.transaction_id,
        parent_transaction_id: body.parent_transaction_id,
        transaction_point_a: body.transaction_point_a,
        transaction_point_b: body.transaction_point_b,
        transaction_type: body.transaction_type,
        convert_type: body.convert_type,
        data: body.data,
    }
    .validate()?)
}

/// `POST /transaction/orderSettel` (the seed's spelling).
pub async fn order_settel(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<SettleRequest>,
) -> Result<Response, ApiError> {
    let order = order_input(body, state.config.timezone)?;
    let outcome = state.engine.settle(&caller.platform, &order).await?;
    tracing::info!(request = %caller.request_id, order = %order.transaction_id, ?outcome, "settled");
    Ok(ok(Some("交易成功")))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscribeRequest {
    notify_url: String,
    #[serde(rename = "type")]
    kind: i64,
}

/// `POST /subscribe`: where pushes of one type go (1 = bills, 2 = authorization changes).
pub async fn subscribe(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<SubscribeRequest>,
) -> Result<Response, ApiError> {
    if !matches!(body.kind, 1 | 2) {
        return Err(ApiError::invalid("type", format!("must be 1 (bills) or 2 (authorization), not {}", body.kind)));
    }
    let url = crate::notify_url::check(&body.notify_url, state.config.push_allow_private)
        .await
        .map_err(|reason| ApiError::invalid("notifyUrl", reason))?;
    state
        .engine
        .store()
        .put_subscription(caller.platform.id, body.kind, url.as_str(), carbon_engine::now_ms())
        .await
        .map_err(ApiError::internal)?;
    // Whatever waited for this subscription goes out now.
    state.push_wake.notify_one();
    Ok(ok::<()>(None))
}
