//! The envelope `{code, msg, content}` and the one place engine errors become codes (SPEC §3).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use carbon_engine::EngineError;
use carbon_engine::order::FieldError;
use serde::Serialize;

/// The response envelope of every endpoint, success or error.
#[derive(Debug, Serialize)]
pub struct Envelope<T: Serialize> {
    /// 200 or an error code of SPEC §3.
    pub code: u32,
    /// `成功` or what went wrong.
    pub msg: String,
    /// The payload, `null` on errors.
    pub content: Option<T>,
}

/// The envelope code of a response, for metrics and logs.
#[derive(Clone, Copy, Debug)]
pub struct EnvelopeCode(pub u32);

/// A successful answer.
pub fn ok<T: Serialize>(content: Option<T>) -> Response {
    let envelope = Envelope { code: 200, msg: "成功".to_owned(), content };
    let mut response = (StatusCode::OK, Json(envelope)).into_response();
    response.extensions_mut().insert(EnvelopeCode(200));
    response
}

/// An error answer: a code of SPEC §3 and a message safe to show the caller.
#[derive(Debug)]
pub struct ApiError {
    /// The code.
    pub code: u32,
    /// The message.
    pub msg: String,
}

impl ApiError {
    /// An error with a code and message.
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        ApiError { code, msg: msg.into() }
    }

    /// 40001 naming a parameter.
    pub fn invalid(field: &str, reason: impl std::fmt::Display) -> Self {
        ApiError::new(40001, format!("invalid parameter {field}: {reason}"))
    }

    /// 50001, logging the cause and hiding it from the caller.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        ApiError::new(50001, "internal error")
    }

    /// The HTTP status of the code's class.
    pub fn status(&self) -> StatusCode {
        match self.code {
            40105 => StatusCode::CONFLICT,
            code => StatusCode::from_u16((code / 100) as u16).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        }
    }
}

impl From<FieldError> for ApiError {
    fn from(err: FieldError) -> Self {
        ApiError::invalid(&err.field, err.reason)
    }
}

impl From<EngineError> for ApiError {
    fn from(err: EngineError) -> Self {
        let code = match &err {
            EngineError::InvalidField(field) => return ApiError::invalid(&field.field, &field.reason),
            EngineError::UnknownPlatform(_) => 40103,
            EngineError::NotFound(_) => 40400,
            EngineError::UnknownProvider(_) | EngineError::ProviderNotLinked => 40302,
            EngineError::AlreadyExists(_) | EngineError::Conflict(_) | EngineError::OrderConflict => 40901,
            EngineError::NotAuthorized => 40301,
            EngineError::UnknownCid => 40401,
            EngineError::ParentNotFound => 40402,
            EngineError::InsufficientPoints(_) => 42201,
            EngineError::TransactionTypeRejected(_) => 42202,
            EngineError::RefundExceedsParent => 42203,
            EngineError::RulesRejected(_) => 42204,
            EngineError::RulesFailed(reason) => {
                tracing::warn!(%reason, "rules plugin failed");
                return ApiError::new(50301, "the platform's rules plugin failed");
            }
            EngineError::Store(cause) => return ApiError::internal(cause),
        };
        ApiError::new(code, err.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = (self.status(), self.code);
        let body: Envelope<()> = Envelope { code, msg: self.msg, content: None };
        let mut response = (status, Json(body)).into_response();
        response.extensions_mut().insert(EnvelopeCode(code));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_mirrors_the_code_class() {
        for (code, status) in [
            (40001, 400),
            (40102, 401),
            (40105, 409),
            (40302, 403),
            (40402, 404),
            (40901, 409),
            (42203, 422),
            (42901, 429),
            (50001, 500),
            (50301, 503),
        ] {
            assert_eq!(ApiError::new(code, "").status().as_u16(), status, "{code}");
        }
    }
}
