//! `AppError`, the one error type of the HTTP API: a status, a stable [`ErrorCode`] and a short
//! message, rendered as `{"error": {"code", "message"}}`. It never carries a `Debug` dump or an
//! internal detail onto the wire.

use axum::http::StatusCode;
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
}

impl AppError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
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
            RelayError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
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
        (self.status, Json(body)).into_response()
    }
}
