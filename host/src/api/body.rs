//! JSON bodies: size-limited, decoded with the path of the offending field in every error.

use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A JSON body of type `T`; any failure is 40001 naming the field.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::to_bytes(request.into_body(), MAX_BODY_BYTES)
            .await
            .map_err(|_| ApiError::invalid("body", format!("larger than {MAX_BODY_BYTES} bytes or unreadable")))?;
        decode(&bytes).map(JsonBody)
    }
}

/// Decodes `bytes` as `T`, naming the field that failed.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(deserializer).map_err(|err| {
        let path = err.path().to_string();
        let field = if path == "." || path == "?" || path.is_empty() { "body".to_owned() } else { path };
        ApiError::invalid(&field, err.into_inner())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Order {
        cid: String,
        data: Vec<String>,
    }

    #[test]
    fn errors_name_the_field() {
        let err = decode::<Order>(br#"{"cid": 5, "data": []}"#).unwrap_err();
        assert!(err.msg.starts_with("invalid parameter cid:"), "{}", err.msg);
        let err = decode::<Order>(br#"{"cid": "c", "data": [1]}"#).unwrap_err();
        assert!(err.msg.starts_with("invalid parameter data[0]:"), "{}", err.msg);
        let err = decode::<Order>(br#"{"data": []}"#).unwrap_err();
        assert!(err.msg.contains("missing field `cid`"), "{}", err.msg);
        let err = decode::<Order>(b"not json").unwrap_err();
        assert_eq!(err.code, 40001);
        let err = decode::<Order>(b"{oops").unwrap_err();
        assert!(err.msg.starts_with("invalid parameter body:"), "{}", err.msg);
    }
}
