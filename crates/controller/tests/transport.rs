//! How bytes get in, over real sockets on loopback: the challenge-response hello (a captured hello
//! cannot be replayed; the secret is not on the wire), the header deadline, the per-IP connection
//! cap, the hello deadline and the byte budget before hello on the agents' WebSocket, the cap on
//! event streams per session, and HTTPS served with `--tls-cert/--tls-key`.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use vdesk_controller::{AppState, Config};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Server {
    addr: SocketAddr,
    state: AppState,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(config: Config) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = AppState::new(config);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(vdesk_controller::serve(listener, state.clone(), async {
        let _ = stopped.await;
    }));
    Server {
        addr,
        state,
        _stop: stop,
    }
}

/// Next message from the controller (pings skipped); `Null` once the socket is closed.
async fn recv(ws: &mut Ws, wait: Duration) -> Value {
    loop {
        match tokio::time::timeout(wait, ws.next())
            .await
            .expect("nothing from the controller in time")
        {
            Some(Ok(WsMessage::Text(t))) => return serde_json::from_str(t.as_str()).unwrap(),
            Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return Value::Null,
            Some(Ok(_)) => continue,
        }
    }
}

async fn agent_socket(addr: SocketAddr) -> (Ws, String) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/api/agent/ws"))
        .await
        .unwrap();
    let challenge = recv(&mut ws, WAIT).await;
    assert_eq!(challenge["type"], "challenge", "{challenge}");
    let nonce = challenge["nonce"].as_str().unwrap().to_owned();
    assert_eq!(nonce.len(), 64, "32 random bytes, hex");
    (ws, nonce)
}

/// Reads until the peer closes; true if it did within `within` (false: still open).
async fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // e.g. an error response before the close
        }
    }
}

async fn healthz(tcp: &mut TcpStream) -> String {
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn a_captured_hello_is_refused_on_another_connection() {
    let server = start(config()).await;
    let (mut ws, nonce) = agent_socket(server.addr).await;
    let hello = hello_json("demo", TOKEN, &nonce);
    assert!(
        !hello.to_string().contains(TOKEN),
        "the secret is not on the wire: {hello}"
    );
    ws.send(WsMessage::Text(hello.to_string().into()))
        .await
        .unwrap();
    assert_eq!(recv(&mut ws, WAIT).await["type"], "welcome");
    drop(ws);

    // Someone who captured that hello replays it on a connection of their own.
    let (mut ws, other_nonce) = agent_socket(server.addr).await;
    assert_ne!(other_nonce, nonce, "a fresh nonce per connection");
    ws.send(WsMessage::Text(hello.to_string().into()))
        .await
        .unwrap();
    let reply = recv(&mut ws, WAIT).await;
    assert_eq!(reply["code"], "unauthorized", "{reply}");
    assert_eq!(recv(&mut ws, WAIT).await, Value::Null, "and closed");

    // A protocol 1 hello (the secret in clear) is refused by name.
    let (mut ws, _) = agent_socket(server.addr).await;
    let old = json!({"type": "hello", "vmId": "demo", "token": TOKEN,
                     "protocolVersion": 1, "agentVersion": "0.1.0"});
    ws.send(WsMessage::Text(old.to_string().into()))
        .await
        .unwrap();
    let reply = recv(&mut ws, WAIT).await;
    assert_eq!(reply["code"], "bad_request", "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("upgrade vdesk-agent"),
        "{reply}"
    );
}

#[tokio::test]
async fn connections_that_never_finish_their_headers_are_closed_at_the_deadline() {
    let mut config = config();
    config.header_timeout = Duration::from_secs(1);
    let server = start(config).await;
    let started = Instant::now();
    let mut conns = Vec::new();
    for _ in 0..50 {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: slow\r\nX-Slow: ")
            .await
            .unwrap();
        conns.push(tcp);
    }
    for tcp in &mut conns {
        assert!(
            closed_within(tcp, Duration::from_secs(6)).await,
            "a connection with unfinished headers is still open after {:?}",
            started.elapsed()
        );
    }
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed by the deadline, not at once"
    );
    // The server still serves.
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    assert!(healthz(&mut tcp).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn the_per_ip_cap_refuses_the_next_connection() {
    let mut config = config();
    config.max_conns_per_ip = 3;
    let server = start(config).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        assert!(healthz(&mut tcp).await.starts_with("HTTP/1.1 200"));
        open.push(tcp);
    }
    let mut fourth = TcpStream::connect(server.addr).await.unwrap();
    assert!(
        closed_within(&mut fourth, WAIT).await,
        "the 4th connection from one IP must be closed"
    );
    // The three are still served.
    assert!(healthz(&mut open[0]).await.starts_with("HTTP/1.1 200"));
    // One closes: its place is free again.
    drop(open.pop());
    let mut ok = false;
    for _ in 0..60 {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        if tcp
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
            .is_ok()
        {
            let mut buf = [0u8; 64];
            if let Ok(Ok(n)) = tokio::time::timeout(WAIT, tcp.read(&mut buf)).await {
                if buf[..n].starts_with(b"HTTP/1.1 200") {
                    ok = true;
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "a freed place is given to the next connection");
}

#[tokio::test]
async fn an_agent_that_says_nothing_is_dropped_at_the_hello_deadline() {
    let server = start(config()).await;
    let started = Instant::now();
    let (mut ws, _) = agent_socket(server.addr).await;
    let reply = recv(&mut ws, Duration::from_secs(10)).await;
    let waited = started.elapsed();
    assert_eq!(reply["code"], "bad_request", "{reply}");
    assert!(
        reply["message"].as_str().unwrap().contains("no hello"),
        "{reply}"
    );
    assert_eq!(recv(&mut ws, WAIT).await, Value::Null, "and closed");
    assert!(
        (Duration::from_millis(4500)..Duration::from_secs(8)).contains(&waited),
        "dropped after {waited:?}, not about 5 s"
    );
}

#[tokio::test]
async fn a_1_mib_frame_before_hello_is_refused_before_it_is_read() {
    let server = start(config()).await;
    // A hello with the right proof, padded to just under the 1 MiB frame limit that applies
    // after hello: fine for JSON, too much before registration.
    let (mut ws, nonce) = agent_socket(server.addr).await;
    let mut hello = hello_json("demo", TOKEN, &nonce);
    hello["agentVersion"] = Value::String("x".repeat(1024 * 1024 - 1024));
    assert!(hello.to_string().len() < vdesk_controller::agent_ws::MAX_FRAME_BYTES);
    let _ = ws.send(WsMessage::Text(hello.to_string().into())).await;
    let reply = recv(&mut ws, WAIT).await;
    assert_eq!(reply, Value::Null, "no welcome for a 1 MiB hello: {reply}");
    assert!(
        !server
            .state
            .relay(|r, _| r.vm(&vdesk_protocol::VmId::new("demo").unwrap()))
            .unwrap()
            .online
    );
    // The same hello at its normal size registers; after it, large frames are fine.
    let (mut ws, nonce) = agent_socket(server.addr).await;
    let hello = hello_json("demo", TOKEN, &nonce);
    ws.send(WsMessage::Text(hello.to_string().into()))
        .await
        .unwrap();
    assert_eq!(recv(&mut ws, WAIT).await["type"], "welcome");
    let big = json!({"type": "peerState", "sessionId": "0".repeat(32),
                     "state": "x".repeat(512 * 1024)});
    ws.send(WsMessage::Text(big.to_string().into()))
        .await
        .unwrap();
    let reply = recv(&mut ws, WAIT).await;
    assert_eq!(
        reply["type"], "error",
        "a large frame after hello is read (and answered): {reply}"
    );
    assert_ne!(recv_or_open(&mut ws).await, Value::Null, "still open");
}

/// `Value::Null` if the socket closed, `true` if it is still open after a short wait.
async fn recv_or_open(ws: &mut Ws) -> Value {
    match tokio::time::timeout(Duration::from_millis(300), ws.next()).await {
        Err(_) => Value::Bool(true),
        Ok(Some(Ok(WsMessage::Text(t)))) => serde_json::from_str(t.as_str()).unwrap(),
        Ok(Some(Ok(WsMessage::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => Value::Null,
        Ok(Some(Ok(_))) => Value::Bool(true),
    }
}

#[tokio::test]
async fn the_fifth_event_stream_of_a_session_gets_429() {
    let server = start(config()).await;
    let mut agent = FakeAgent::registered(&server.state, "demo").await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", server.addr);
    let token = viewer_token("demo");
    let created: Value = http
        .post(format!("{base}/api/webrtc/session"))
        .bearer_auth(&token)
        .json(&json!({"vmId": "demo", "offer": {"type": "offer", "sdp": OFFER}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["sessionId"].as_str().unwrap().to_owned();
    assert!(matches!(
        agent.recv().await,
        vdesk_protocol::ControllerToAgent::Offer { .. }
    ));
    let events = format!("{base}/api/webrtc/session/{id}/events?token={token}");
    let mut streams = Vec::new();
    for _ in 0..4 {
        let resp = http.get(&events).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        streams.push(resp);
    }
    let resp = http.get(&events).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--max-streams-per-session"),
        "{body}"
    );
    // One closes: its place is free again.
    drop(streams.pop());
    let mut reopened = false;
    for _ in 0..60 {
        let resp = http.get(&events).send().await.unwrap();
        if resp.status() == 200 {
            reopened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reopened, "a closed stream frees its place");
}

#[tokio::test]
async fn the_controller_serves_https_with_its_certificate() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = std::env::temp_dir().join(format!("vdesk-ctl-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let mut config = config();
    config.tls = Some(vdesk_controller::tls::server_config(&cert_path, &key_path).unwrap());
    let server = start(config).await;
    std::fs::remove_dir_all(&dir).unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(name, tcp)
        .await
        .unwrap();
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(WAIT, tls.read_to_end(&mut out)).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");

    // Plain HTTP on the TLS port gets no page.
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(WAIT, tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert!(!buf[..n].starts_with(b"HTTP/1.1 200"));
}
