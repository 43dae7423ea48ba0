//! The endpoints of SPEC §4, under `/carbon-inclusion/apis/v1`. Handlers stay thin: decode,
//! call the engine, shape the answer.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Query, State};
use axum::response::Response;
use carbon_engine::bill::BillQuery;
use carbon_engine::ids::{AppId, EquityCid, SubCid};
use carbon_engine::order::OrderInput;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::auth::{Caller, RequestHeaders, new_token};
use super::body::JsonBody;
use super::error::{ApiError, ok};
use super::openapi::{
    Answer, AuthErrors, Failure, NoContent, RequestHeaders as RequestHeadersDoc, TokenHeader, data_schema,
};
use super::wire_time::parse_wire_time;
use crate::wire::BillRow;

/// Body of `getAccessToken`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenRequest {
    /// The appId, RSA-encrypted with the server's public key (PKCS#1 v1.5, or OAEP with SHA-256
    /// for hash and MGF1), base64 with the standard alphabet.
    #[schema(min_length = 1)]
    app_id: String,
}

/// `content` of `getAccessToken`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessToken {
    /// The token; send it as `Authorization`.
    access_token: String,
    /// When it expires, milliseconds since the Unix epoch.
    expire_time: i64,
}

/// `POST /auth/getAccessToken`.
#[utoipa::path(
    post,
    path = "/carbon-inclusion/apis/v1/auth/getAccessToken",
    operation_id = "getAccessToken",
    tag = "auth",
    summary = "Exchange the encrypted appId for an access token",
    params(RequestHeadersDoc),
    request_body = TokenRequest,
    responses(
        (status = 200, description = "The token", body = Answer<AccessToken>),
        (status = 400, description = "40001: a header or the body is malformed", body = Failure),
        (status = 401, description = "40103: appId refused; 40104: timestamp outside the window", body = Failure),
        (status = 409, description = "40105: the transactionId header was used before", body = Failure),
        (status = 429, description = "42901: too many token requests from this address", body = Failure),
        (status = 500, description = "50001: internal error", body = Failure),
    ),
)]
pub async fn get_access_token(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    _headers: RequestHeaders,
    JsonBody(body): JsonBody<TokenRequest>,
) -> Result<Response, ApiError> {
    state.token_rate.check(peer.ip())?;
    let refused = || ApiError::new(40103, "appId cannot be decrypted or is not a registered platform");
    let mut found = None;
    for candidate in state.decryptor().candidates(&body.app_id) {
        let Ok(app_id) = AppId::new(candidate) else { continue };
        found = state.engine.store().platform_by_app_id(&app_id).await.map_err(ApiError::internal)?;
        if found.is_some() {
            break;
        }
    }
    let platform = found.ok_or_else(refused)?;
    let (token, hash) = new_token();
    let expire_time = carbon_engine::now_ms() + state.config.token_ttl_secs as i64 * 1000;
    state.engine.store().insert_access_token(&hash, platform.id, expire_time).await.map_err(ApiError::internal)?;
    Ok(ok(Some(AccessToken { access_token: token, expire_time })))
}

/// `content` of `licenseAgreement`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LicenseList {
    /// The agreements, in the order the operator added them.
    license_list: Vec<LicenseItem>,
}

/// One license agreement.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LicenseItem {
    /// Its name.
    name: String,
    /// Where its PDF is downloaded.
    download_url: String,
}

/// `GET /auth/equity/licenseAgreement`.
#[utoipa::path(
    get,
    path = "/carbon-inclusion/apis/v1/auth/equity/licenseAgreement",
    operation_id = "licenseAgreement",
    tag = "auth",
    summary = "The license agreements a person signs",
    params(TokenHeader, RequestHeadersDoc),
    security(("token" = [])),
    responses((status = 200, description = "The agreements", body = Answer<LicenseList>), AuthErrors),
)]
pub async fn license_agreement(State(state): State<AppState>, _caller: Caller) -> Result<Response, ApiError> {
    let licenses = state.engine.store().licenses().await.map_err(ApiError::internal)?;
    let license_list = licenses
        .into_iter()
        .map(|license| LicenseItem { name: license.name, download_url: license.download_url })
        .collect();
    Ok(ok(Some(LicenseList { license_list })))
}

/// A body (or query) naming one person by this platform's sub-scene cid.
#[derive(Deserialize, ToSchema)]
pub struct CidRequest {
    /// The person's sub-scene cid at this platform.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$"
    )]
    cid: String,
}

fn sub_cid(cid: String) -> Result<SubCid, ApiError> {
    SubCid::new(cid).map_err(|err| ApiError::invalid("cid", err))
}

/// `POST /auth/accountAuthorize`.
#[utoipa::path(
    post,
    path = "/carbon-inclusion/apis/v1/auth/accountAuthorize",
    operation_id = "accountAuthorize",
    tag = "auth",
    summary = "The person authorizes this platform",
    params(TokenHeader, RequestHeadersDoc),
    security(("token" = [])),
    request_body = CidRequest,
    responses(
        (status = 200, description = "Authorized", body = Answer<NoContent>),
        AuthErrors,
        (status = 404, description = "40401: the CA knows no master cid for this cid", body = Failure),
        (
            status = 409,
            description = "40105: the transactionId header was used before; 40901: the HTTP CA now maps the cid \
                           to another master cid",
            body = Failure
        ),
    ),
)]
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

/// `content` of `getReductionScene`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SceneList {
    /// The scenes the person was credited reductions in, sorted, each once.
    scene_list: Vec<String>,
}

/// `GET /auth/getReductionScene?cid=`.
#[utoipa::path(
    get,
    path = "/carbon-inclusion/apis/v1/auth/getReductionScene",
    operation_id = "getReductionScene",
    tag = "auth",
    summary = "The scenes in which the person was credited emission reductions",
    params(
        TokenHeader,
        RequestHeadersDoc,
        (
            "cid" = String,
            Query,
            min_length = 1,
            max_length = 128,
            pattern = r"^[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$",
            description = "The person's sub-scene cid"
        ),
    ),
    security(("token" = [])),
    responses(
        (status = 200, description = "The scenes", body = Answer<SceneList>),
        AuthErrors,
        (status = 403, description = "40301: the cid has not authorized this platform", body = Failure),
    ),
)]
pub async fn get_reduction_scene(
    State(state): State<AppState>,
    caller: Caller,
    query: Result<Query<CidRequest>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|_| ApiError::invalid("cid", "query parameter missing"))?;
    let scenes = state.engine.scenes(&caller.platform, &sub_cid(query.cid)?).await?;
    Ok(ok(Some(SceneList { scene_list: scenes })))
}

/// `content` of `getPointInfo`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PointInfo {
    /// Always two entries: class A (type 1), then class B (type 2).
    point_info: Vec<PointBalance>,
}

/// The balance of one class of points.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PointBalance {
    /// 1 = class A (I类), 2 = class B (II类).
    #[schema(minimum = 1, maximum = 2)]
    point_type: u8,
    /// The balance, a decimal string.
    #[schema(example = "90")]
    point_balance: String,
}

/// `POST /account/getPointInfo`.
#[utoipa::path(
    post,
    path = "/carbon-inclusion/apis/v1/account/getPointInfo",
    operation_id = "getPointInfo",
    tag = "account",
    summary = "The person's balances of class A and class B points",
    params(TokenHeader, RequestHeadersDoc),
    security(("token" = [])),
    request_body = CidRequest,
    responses(
        (status = 200, description = "The balances", body = Answer<PointInfo>),
        AuthErrors,
        (status = 403, description = "40301: the cid has not authorized this platform", body = Failure),
    ),
)]
pub async fn get_point_info(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CidRequest>,
) -> Result<Response, ApiError> {
    let balances = state.engine.point_balances(&caller.platform, &sub_cid(body.cid)?).await?;
    Ok(ok(Some(PointInfo {
        point_info: vec![
            PointBalance { point_type: 1, point_balance: balances.point_a.to_string() },
            PointBalance { point_type: 2, point_balance: balances.point_b.to_string() },
        ],
    })))
}

/// Body of `getPointsBillInfo`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BillRequest {
    /// Only this person's bills (sub-scene cid); absent or empty: everyone's.
    #[schema(
        max_length = 128,
        pattern = r"^$|^[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$"
    )]
    cid: Option<String>,
    /// Only this provider's bills; absent or empty: every provider's.
    #[schema(
        max_length = 128,
        pattern = r"^$|^[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$"
    )]
    equity_cid: Option<String>,
    /// From this `transactionTime`, inclusive, `yyyy-MM-dd HH:mm:ss`.
    #[schema(
        pattern = r"^[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01]) (?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]$",
        example = "2024-04-09 00:00:00"
    )]
    begin_time: String,
    /// Up to this `transactionTime`, inclusive (the whole second), `yyyy-MM-dd HH:mm:ss`.
    #[schema(
        pattern = r"^[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01]) (?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]$",
        example = "2024-04-09 23:59:59"
    )]
    end_time: String,
    /// Page number, from 1; default 1. `page × pageSize` is at most 10000.
    #[schema(minimum = 1, maximum = 10000)]
    page: Option<u32>,
    /// Rows per page, 1 to 500; default 10.
    #[schema(minimum = 1, maximum = 500)]
    page_size: Option<u32>,
}

/// `content` of `getPointsBillInfo`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BillList {
    /// Rows matching the query over all pages, counted up to 10000.
    total: u64,
    /// More rows match than `total` says: the count stopped at 10000 (narrow the time range).
    total_capped: bool,
    /// The page, as used.
    page: u32,
    /// Rows per page, as used.
    page_size: u32,
    /// The rows of this page, newest `transactionTime` first.
    bill: Vec<BillRow>,
}

/// `POST /account/getPointsBillInfo`.
#[utoipa::path(
    post,
    path = "/carbon-inclusion/apis/v1/account/getPointsBillInfo",
    operation_id = "getPointsBillInfo",
    tag = "account",
    summary = "The bills this platform settled",
    params(TokenHeader, RequestHeadersDoc),
    security(("token" = [])),
    request_body = BillRequest,
    responses((status = 200, description = "One page of bills", body = Answer<BillList>), AuthErrors),
)]
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
    let bill = page.bills.into_iter().map(BillRow::from).collect();
    Ok(ok(Some(BillList {
        total: page.total,
        total_capped: page.total_capped,
        page: query.page,
        page_size: query.page_size,
        bill,
    })))
}

/// Body of `orderSettel`: a purchase (positive amounts) or a refund (negative amounts).
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SettleRequest {
    /// The person's sub-scene cid.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$"
    )]
    cid: String,
    /// The provider's cid.
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$"
    )]
    equity_cid: String,
    /// The order id, unique per platform forever (not the header of the same name).
    #[schema(
        min_length = 1,
        max_length = 128,
        pattern = r"^[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$"
    )]
    transaction_id: String,
    /// The purchase a refund returns; required on refunds.
    #[schema(
        max_length = 128,
        pattern = r"^$|^[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$"
    )]
    parent_transaction_id: Option<String>,
    /// Class A points: positive on a purchase, negative on a refund; absent = "0".
    #[schema(pattern = r"^-?[0-9]{1,13}(\.[0-9]{1,2})?$", example = "12.5")]
    transaction_point_a: Option<String>,
    /// Class B points: positive on a purchase, negative on a refund; absent = "0".
    #[schema(pattern = r"^-?[0-9]{1,13}(\.[0-9]{1,2})?$", example = "0")]
    transaction_point_b: Option<String>,
    /// When the order was placed, `yyyy-MM-dd HH:mm:ss`.
    #[schema(
        pattern = r"^[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01]) (?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]$",
        example = "2024-04-09 10:30:30"
    )]
    transaction_time: String,
    /// The order type, defined by the platform and checked by its rules.
    #[schema(min_length = 1, max_length = 64, example = "0")]
    transaction_type: String,
    /// 1: convert emission reductions when points are short; 0 (default): do not.
    #[serde(rename = "type")]
    #[schema(minimum = 0, maximum = 1)]
    convert_type: Option<i64>,
    /// What was bought: 1 to 100 items of at most 20 characters each.
    #[schema(schema_with = data_schema)]
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
#[utoipa::path(
    post,
    path = "/carbon-inclusion/apis/v1/transaction/orderSettel",
    operation_id = "orderSettel",
    tag = "transaction",
    summary = "Settle a purchase or a refund paid in carbon points",
    params(TokenHeader, RequestHeadersDoc),
    security(("token" = [])),
    request_body = SettleRequest,
    responses(
        (status = 200, description = "Settled (or settled before with the same content)", body = Answer<String>),
        AuthErrors,
        (
            status = 403,
            description = "40301: the cid has not authorized this platform; 40302: the provider is not linked",
            body = Failure
        ),
        (status = 404, description = "40402: the parent purchase of a refund was not found", body = Failure),
        (
            status = 409,
            description = "40105: the transactionId header was used before; 40901: this order id was settled \
                           with other content",
            body = Failure
        ),
        (
            status = 422,
            description = "42201: insufficient points; 42202: transactionType rejected; 42203: refund exceeds \
                           its purchase; 42204: the rules rejected the order",
            body = Failure
        ),
        (status = 503, description = "50301: the platform's rules plugin failed", body = Failure),
    ),
)]
pub async fn order_settel(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<SettleRequest>,
) -> Result<Response, ApiError> {
    let order = order_input(body, state.config.timezone)?;
    let outcome = state.engine.settle(&caller.platform, &order).await?;
    tracing::info!(request = %caller.request_id, order = %order.transaction_id, ?outcome, "settled");
    state.metrics.record_settled(outcome);
    Ok(ok(Some("交易成功")))
}

/// Body of `subscribe`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscribeRequest {
    /// Where pushes of this type go: a public `http` or `https` URL without user or password.
    #[schema(min_length = 1, max_length = 2048, format = "uri", example = "https://mall.example.com/carbon/bills")]
    notify_url: String,
    /// 1 = bills, 2 = authorization changes.
    #[serde(rename = "type")]
    #[schema(minimum = 1, maximum = 2)]
    kind: i64,
}

/// `POST /subscribe`: where pushes of one type go (1 = bills, 2 = authorization changes).
#[utoipa::path(
    post,
    path = "/carbon-inclusion/apis/v1/subscribe",
    operation_id = "subscribe",
    tag = "subscribe",
    summary = "Set where the pushes of one type go",
    params(TokenHeader, RequestHeadersDoc),
    security(("token" = [])),
    request_body = SubscribeRequest,
    responses((status = 200, description = "Subscribed", body = Answer<NoContent>), AuthErrors),
)]
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
