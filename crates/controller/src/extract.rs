//! Request extractors that turn every kind of bad input into our JSON [`AppError`] naming what
//! is wrong: the JSON body (size limit -> 413, syntax or field errors -> 400 with the field's
//! path), and the path parameters `{vmId}` and `{side}`. They only parse. The session id `{id}`
//! is not here on purpose: handlers get it only from `access.rs`'s checked extractors
//! ([`crate::access::ViewerSession`], [`crate::access::SessionCaller`]), which parse it and check
//! the caller's right to that session in one step.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use vdesk_protocol::{Side, VmId};

use crate::error::AppError;
use crate::state::AppState;

/// A JSON body. The `Content-Type` is not checked (beacons and old frontends send text/plain).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, AppError> {
        let limit = state.config().max_body_bytes;
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                AppError::payload_too_large(limit)
            } else {
                AppError::bad_request("could not read the request body")
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses `bytes` as `T`; the error names the field (`offer.sdp: missing field ...`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AppError> {
    let not_json = |e: serde_json::Error| {
        AppError::bad_request(format!("request body is not valid JSON: {e}"))
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data if path != "." => {
                AppError::bad_request(format!("{path}: {inner}"))
            }
            serde_json::error::Category::Data => AppError::bad_request(format!("body: {inner}")),
            _ => not_json(inner),
        }
    })?;
    de.end().map_err(not_json)?;
    Ok(value)
}

pub(crate) async fn param(parts: &mut Parts, name: &str) -> Result<String, AppError> {
    let Path(mut params) = Path::<HashMap<String, String>>::from_request_parts(parts, &())
        .await
        .map_err(|_| AppError::bad_request(format!("{name} in the path is not valid UTF-8")))?;
    params
        .remove(name)
        .ok_or_else(|| AppError::bad_request(format!("{name} is missing from the path")))
}

/// `{vmId}`.
#[derive(Debug)]
pub struct VmParam(pub VmId);

impl<S: Send + Sync> FromRequestParts<S> for VmParam {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AppError> {
        let raw = param(parts, "vmId").await?;
        Ok(Self(VmId::new(raw)?))
    }
}

/// `{side}`: `vm` or `browser`.
#[derive(Debug)]
pub struct SideParam(pub Side);

impl<S: Send + Sync> FromRequestParts<S> for SideParam {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AppError> {
        match param(parts, "side").await?.as_str() {
            "vm" => Ok(Self(Side::Vm)),
            "browser" => Ok(Self(Side::Browser)),
            _ => Err(AppError::bad_request("side must be vm or browser")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vdesk_protocol::CreateSession;

    #[test]
    fn json_errors_name_the_field() {
        let e = parse_json::<CreateSession>(br#"{"vmId": "demo"}"#).unwrap_err();
        assert!(e.message.contains("offer"), "{}", e.message);
        let e = parse_json::<CreateSession>(br#"{"vmId": "a/b", "offer": {}}"#).unwrap_err();
        assert!(e.message.starts_with("vmId"), "{}", e.message);
        let e = parse_json::<CreateSession>(br#"{"vmId": "d", "offer": {"type": "x", "sdp": ""}}"#)
            .unwrap_err();
        assert!(e.message.starts_with("offer.type"), "{}", e.message);
        let e = parse_json::<CreateSession>(b"{not json").unwrap_err();
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
        let e = parse_json::<CreateSession>(b"").unwrap_err();
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }
}
