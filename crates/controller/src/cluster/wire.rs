//! How a viewer request and its response travel between cluster nodes in one NATS message: a
//! JSON head (method, URI, headers, client address; or status and headers), a newline, the raw
//! body. Hop-by-hop headers stay behind. Malformed messages are errors, never panics.

use std::net::SocketAddr;

use axum::body::Body;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::Forwarded;

/// Largest body carried (NATS's default payload limit is 1 MiB).
const MAX_BODY: usize = 900 * 1024;

#[derive(Debug, Serialize, Deserialize)]
pub struct WireRequest {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub peer: Option<SocketAddr>,
    /// For an event stream: the subject its bytes go to.
    #[serde(default)]
    pub stream_to: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireResponse {
    status: u16,
    headers: Vec<(String, String)>,
}

fn hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection" | "transfer-encoding" | "content-length" | "keep-alive" | "upgrade"
    )
}

fn headers_of(h: &axum::http::HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .filter(|(k, _)| !hop_by_hop(k.as_str()))
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect()
}

fn join(head: &impl Serialize, body: &[u8]) -> Result<Bytes, String> {
    let mut out = serde_json::to_vec(head).map_err(|e| e.to_string())?;
    out.push(b'\n');
    out.extend_from_slice(body);
    Ok(out.into())
}

fn split(msg: &[u8]) -> Result<(&[u8], &[u8]), String> {
    let at = msg
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("forwarded message without a head")?;
    Ok((&msg[..at], &msg[at + 1..]))
}

/// A request as a message; `stream_to` for an event stream.
pub async fn encode_request(
    req: Request,
    peer: Option<SocketAddr>,
    stream_to: Option<&str>,
) -> Result<Bytes, String> {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| format!("request body over {MAX_BODY} bytes"))?;
    let head = WireRequest {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: headers_of(&parts.headers),
        peer,
        stream_to: stream_to.map(str::to_owned),
    };
    join(&head, &body)
}

fn request_from(head: &WireRequest, body: &[u8]) -> Result<Request, String> {
    let method: Method = head.method.parse().map_err(|_| "bad method")?;
    let uri: Uri = head.uri.parse().map_err(|_| "bad URI")?;
    let mut req = Request::new(Body::from(body.to_vec()));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    for (k, v) in &head.headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::try_from(k.as_str()),
            HeaderValue::try_from(v.as_str()),
        ) {
            req.headers_mut().append(k, v);
        }
    }
    req.extensions_mut().insert(Forwarded);
    if let Some(peer) = head.peer {
        req.extensions_mut().insert(ConnectInfo(peer));
    }
    Ok(req)
}

/// A forwarded plain request, marked [`Forwarded`], with the client's address.
pub fn decode_request(msg: &[u8]) -> Result<Request, String> {
    let (head, body) = split(msg)?;
    let head: WireRequest = serde_json::from_slice(head).map_err(|e| e.to_string())?;
    request_from(&head, body)
}

/// A forwarded event-stream request and the subject its bytes go to.
pub fn decode_stream_request(msg: &[u8]) -> Result<(Request, String), String> {
    let (head, body) = split(msg)?;
    let head: WireRequest = serde_json::from_slice(head).map_err(|e| e.to_string())?;
    let to = head
        .stream_to
        .clone()
        .filter(|s| s.starts_with("vdesk.sse.") && !s.contains([' ', '*', '>']))
        .ok_or("event stream request without a valid subject")?;
    Ok((request_from(&head, body)?, to))
}

/// A response as a message (its body read whole).
pub async fn encode_response(resp: Response) -> Result<Bytes, String> {
    let (parts, body) = resp.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| format!("response body over {MAX_BODY} bytes"))?;
    let head = WireResponse {
        status: parts.status.as_u16(),
        headers: headers_of(&parts.headers),
    };
    join(&head, &body)
}

pub fn decode_response(msg: &[u8]) -> Result<Response, String> {
    let (head, body) = split(msg)?;
    let head: WireResponse = serde_json::from_slice(head).map_err(|e| e.to_string())?;
    let mut resp = Response::new(Body::from(body.to_vec()));
    *resp.status_mut() = StatusCode::from_u16(head.status).map_err(|_| "bad status")?;
    for (k, v) in &head.headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::try_from(k.as_str()),
            HeaderValue::try_from(v.as_str()),
        ) {
            resp.headers_mut().append(k, v);
        }
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_crosses_whole_and_arrives_marked_forwarded() {
        let req = Request::builder()
            .method("POST")
            .uri("/api/webrtc/session?x=1")
            .header("authorization", "Bearer t")
            .header("content-length", "2")
            .body(Body::from("{}"))
            .unwrap();
        let peer: SocketAddr = "192.0.2.7:5000".parse().unwrap();
        let msg = encode_request(req, Some(peer), None).await.unwrap();
        let back = decode_request(&msg).unwrap();
        assert_eq!(back.method(), Method::POST);
        assert_eq!(back.uri(), "/api/webrtc/session?x=1");
        assert_eq!(back.headers()["authorization"], "Bearer t");
        assert!(back.headers().get("content-length").is_none());
        assert!(back.extensions().get::<Forwarded>().is_some());
        assert_eq!(
            back.extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .unwrap()
                .0,
            peer
        );
        let body = axum::body::to_bytes(back.into_body(), 10).await.unwrap();
        assert_eq!(&body[..], b"{}");
    }

    #[tokio::test]
    async fn a_response_crosses_whole() {
        let resp = Response::builder()
            .status(410)
            .header("content-type", "application/json")
            .body(Body::from("{\"a\":1}\n"))
            .unwrap();
        let back = decode_response(&encode_response(resp).await.unwrap()).unwrap();
        assert_eq!(back.status(), 410);
        assert_eq!(back.headers()["content-type"], "application/json");
        let body = axum::body::to_bytes(back.into_body(), 100).await.unwrap();
        assert_eq!(&body[..], b"{\"a\":1}\n");
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        for msg in [
            &b""[..],
            b"{",
            b"{}\n",
            b"not json\nbody",
            b"{\"method\":\"\\u0000\",\"uri\":\"/\",\"headers\":[],\"peer\":null}\n",
        ] {
            assert!(decode_request(msg).is_err());
            assert!(decode_response(msg).is_err());
        }
        let no_subject = b"{\"method\":\"GET\",\"uri\":\"/\",\"headers\":[],\"peer\":null,\"stream_to\":\"evil.>\"}\n";
        assert!(decode_stream_request(no_subject).is_err());
    }
}
