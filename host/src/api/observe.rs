//! Per-request observation: a tracing span carrying the request's `transactionId`, one log
//! line per answer, and the request and settlement metrics.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::AppState;
use super::error::EnvelopeCode;

/// Wraps every route and fallback.
pub async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let transaction_id =
        request.headers().get("transactionId").and_then(|value| value.to_str().ok()).unwrap_or("-").to_owned();
    let span =
        tracing::info_span!("request", transaction_id = %transaction_id, method = %request.method(), route = %route);
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let code = response
        .extensions()
        .get::<EnvelopeCode>()
        .map(|code| code.0)
        .unwrap_or_else(|| u32::from(response.status().as_u16()));
    state.metrics.record_request(&route, code);
    if route.ends_with("/transaction/orderSettel") {
        state.metrics.observe_settlement(elapsed);
    }
    span.in_scope(|| tracing::info!(code, latency_us = elapsed.as_micros() as u64, "answered"));
    response
}
