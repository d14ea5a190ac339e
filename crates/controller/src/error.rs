//! `AppError`, the one error type of the HTTP API: a status, a stable [`ErrorCode`] and a short
//! message, rendered as `{"error": {"code", "message"}}`. It never carries a `Debug` dump or an
//! internal detail onto the wire.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tracing::debug;
use vdesk_protocol::{ErrorBody, ErrorCode, ErrorDetail, ValidationError};

use crate::relay::RelayError;

#[derive(Debug, Clone, PartialEq)]
pub struct AppError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// Seconds for a `Retry-After` header (rate limits).
    pub retry_after: Option<u64>,
}

impl AppError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 401 for a viewer route called without a token.
    pub fn no_viewer_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "this route needs a viewer token: open the link you were given (it ends in \
             ?token=...), or send Authorization: Bearer <token>",
        )
    }

    /// 401 with `message` (which names the credential that is missing).
    pub fn unauthorized_with(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    }

    /// 403: the credential is there but does not allow this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
    }

    /// 429 with a `Retry-After` of `retry_after` seconds (at least 1).
    pub fn rate_limited(message: impl Into<String>, retry_after: std::time::Duration) -> Self {
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::TooManyRequests,
            message,
        );
        e.retry_after = Some(retry_after.as_secs_f64().ceil().max(1.0) as u64);
        e
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "this route needs Authorization: Bearer <agent token>",
        )
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, what)
    }

    pub fn vm_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::VmNotFound, "VM not found")
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            format!("request body is larger than {limit} bytes"),
        )
    }
}

impl From<ValidationError> for AppError {
    fn from(e: ValidationError) -> Self {
        Self::bad_request(e.to_string())
    }
}

impl From<RelayError> for AppError {
    fn from(e: RelayError) -> Self {
        let status = match &e {
            RelayError::VmNotFound(_) => StatusCode::NOT_FOUND,
            RelayError::SessionNotFound => StatusCode::NOT_FOUND,
            RelayError::AgentOffline | RelayError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            RelayError::Ended { .. } => StatusCode::GONE,
            RelayError::Invalid(_) => StatusCode::BAD_REQUEST,
            RelayError::TooMany(_) | RelayError::Limit(_) => StatusCode::TOO_MANY_REQUESTS,
            RelayError::Conflict(_) => StatusCode::CONFLICT,
        };
        let message = match &e {
            RelayError::VmNotFound(_) => "VM not found".to_owned(),
            other => other.to_string(),
        };
        Self::new(status, e.code(), message)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        debug!(status = %self.status, code = ?self.code, message = %self.message, "request refused");
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}
