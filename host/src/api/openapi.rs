//! The OpenAPI 3 document of the platform API, generated from the handlers' `#[utoipa::path]`
//! annotations and the request and answer types, served at `GET /openapi.json`.
//!
//! The types here exist for the document only: the envelope (`super::error::Envelope`) as the
//! schemas of a success and of an error, the headers every call carries, and the error answers
//! that every authenticated endpoint shares.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::{IntoParams, IntoResponses, Modify, OpenApi, PartialSchema, ToSchema};

use super::handlers;

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "carbon-inclusion platform API",
        description = "The API equity platforms call on the carbon-inclusion master platform: tokens, \
                       authorization, points, scenes, bills and settlement. Every answer is the envelope \
                       `{code, msg, content}`; decide on `code`, the HTTP status only mirrors its class. \
                       See docs/API.md for the order of checks and the meaning of every code."
    ),
    paths(
        handlers::get_access_token,
        handlers::license_agreement,
        handlers::account_authorize,
        handlers::get_reduction_scene,
        handlers::get_point_info,
        handlers::get_points_bill_info,
        handlers::order_settel,
        handlers::subscribe,
    ),
    modifiers(&TokenScheme),
    tags(
        (name = "auth", description = "Tokens, license agreements, authorization and scenes"),
        (name = "account", description = "Balances and bills"),
        (name = "transaction", description = "Settlement of purchases and refunds"),
        (name = "subscribe", description = "Where pushes go"),
    )
)]
pub struct ApiDoc;

/// Adds the security scheme `token`: the access token in the header `Authorization`.
struct TokenScheme;

impl Modify for TokenScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "The `accessToken` of getAccessToken; a `Bearer ` prefix is also accepted",
            ))),
        );
    }
}

/// The document as JSON, made once.
static DOCUMENT: LazyLock<String> =
    LazyLock::new(|| ApiDoc::openapi().to_json().expect("the OpenAPI document serializes"));

/// `GET /openapi.json`.
pub async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT.as_str())
}

/// The headers every call carries (the request's id and time).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code, reason = "a description for the document; never built")]
pub struct RequestHeaders {
    /// A UUID, new for every request (not the order id of `orderSettel`); a reused one answers 40105.
    #[param(rename = "transactionId", format = "uuid")]
    transaction_id: String,
    /// Milliseconds since the Unix epoch, within the configured window (300 s by default) of the
    /// server's clock, else 40104.
    #[param(example = 1712629830000_i64)]
    timestamp: i64,
}

/// The access token header of every endpoint but `getAccessToken`.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code, reason = "a description for the document; never built")]
pub struct TokenHeader {
    /// The `accessToken` of getAccessToken; a `Bearer ` prefix is also accepted.
    #[param(rename = "Authorization", min_length = 1)]
    authorization: String,
}

/// A successful answer: `code` 200, `msg` `成功` and the endpoint's `content`.
#[derive(ToSchema)]
#[allow(dead_code, reason = "a description for the document; never built")]
pub struct Answer<T> {
    /// Always 200 on success.
    #[schema(minimum = 200, maximum = 200)]
    code: u32,
    /// `成功`.
    #[schema(example = "成功")]
    msg: String,
    /// The endpoint's result.
    content: T,
}

/// An error answer: the code (see docs/API.md, "Error codes"), what went wrong, no content.
#[derive(ToSchema)]
#[allow(dead_code, reason = "a description for the document; never built")]
pub struct Failure {
    /// A code of the table in docs/API.md, e.g. 40001; its first three digits are the HTTP status
    /// (but 40105 is HTTP 409).
    #[schema(minimum = 40000, maximum = 59999, example = 40001)]
    code: u32,
    /// What went wrong; 40001 names the field.
    msg: String,
    /// Always `null`.
    content: NoContent,
}

/// `content` of endpoints that answer nothing: always `null`.
pub struct NoContent;

impl PartialSchema for NoContent {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new().schema_type(Type::Null).description(Some("Always `null`")).into()
    }
}

impl ToSchema for NoContent {}

/// The error answers every authenticated endpoint may give.
#[derive(IntoResponses)]
#[allow(dead_code, reason = "a description for the document; never built")]
pub enum AuthErrors {
    /// 40001: a header, the body or a query parameter is missing or malformed (`msg` names it).
    #[response(status = 400)]
    Invalid(Failure),
    /// 40101: token missing or unknown; 40102: token expired; 40104: timestamp outside the window.
    #[response(status = 401)]
    Unauthenticated(Failure),
    /// 40105: the transactionId header was used before.
    #[response(status = 409)]
    Replayed(Failure),
    /// 50001: internal error.
    #[response(status = 500)]
    Internal(Failure),
}

/// The schema of `orderSettel`'s `data`: 1 to 100 items of at most 20 characters each.
pub fn data_schema() -> ArrayBuilder {
    ArrayBuilder::new()
        .items(ObjectBuilder::new().schema_type(Type::String).max_length(Some(20)))
        .min_items(Some(1))
        .max_items(Some(100))
        .description(Some("What was bought: 1 to 100 items of at most 20 characters each"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_names_every_endpoint() {
        let document: serde_json::Value = serde_json::from_str(&DOCUMENT).unwrap();
        assert_eq!(document["paths"].as_object().unwrap().len(), 8);
    }
}
