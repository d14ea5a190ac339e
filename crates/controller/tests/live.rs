//! The controller on a real loopback socket: a fake agent over tokio-tungstenite, a viewer over
//! HTTP (reqwest) reading the event stream as raw chunks. Checks that answer and candidates flow
//! both ways, end-of-candidates included, and that an agent restarted without its sessions or
//! stopping the controller reaches the viewer as `ended`.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start() -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(vdesk_controller::serve(listener, state(), async move {
        let _ = stopped.await;
    }));
    Server {
        addr,
        stop: Some(stop),
        task,
    }
}

async fn agent(addr: SocketAddr) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/api/agent/ws"))
        .await
        .unwrap();
    let challenge = recv_ws(&mut ws).await;
    assert_eq!(challenge["type"], "challenge", "{challenge}");
    let nonce = challenge["nonce"].as_str().unwrap();
    send_ws(&mut ws, hello_json("demo", TOKEN, nonce)).await;
    assert_eq!(recv_ws(&mut ws).await["type"], "welcome");
    ws
}

async fn send_ws(ws: &mut Ws, v: Value) {
    ws.send(WsMessage::Text(v.to_string().into()))
        .await
        .unwrap();
}

/// Next JSON message from the controller (pings skipped); `Null` when the socket closed.
async fn recv_ws(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("agent waited too long")
        {
            Some(Ok(WsMessage::Text(t))) => return serde_json::from_str(t.as_str()).unwrap(),
            Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return Value::Null,
            Some(Ok(_)) => continue,
        }
    }
}

/// Reads `text/event-stream` from a streaming response, chunk by chunk.
struct Sse {
    resp: reqwest::Response,
    buf: String,
}

impl Sse {
    async fn open(client: &reqwest::Client, url: &str) -> Self {
        let resp = client.get(url).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-accel-buffering"], "no");
        Self {
            resp,
            buf: String::new(),
        }
    }

    /// Next event as (id, event, data); `None` when the stream ended.
    async fn next(&mut self) -> Option<(u64, String, Value)> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut ev = (0, String::new(), Value::Null);
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        ev.0 = v.parse().unwrap();
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        ev.1 = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        ev.2 = serde_json::from_str(v).unwrap();
                    }
                }
                if ev.1.is_empty() {
                    continue; // a comment (keep-alive)
                }
                return Some(ev);
            }
            let chunk = tokio::time::timeout(WAIT, self.resp.chunk())
                .await
                .expect("event stream stalled")
                .unwrap()?;
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
}

/// An HTTP client that sends VM demo's viewer token on every request.
fn viewer_client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "authorization",
        format!("Bearer {}", viewer_token("demo")).parse().unwrap(),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

async fn create_session(client: &reqwest::Client, addr: SocketAddr) -> Value {
    let resp = client
        .post(format!("http://{addr}/api/webrtc/session"))
        .header("content-type", "application/json")
        .body(json!({"vmId": "demo", "offer": {"type": "offer", "sdp": OFFER}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    serde_json::from_str(&resp.text().await.unwrap()).unwrap()
}

#[tokio::test]
async fn signalling_flows_both_ways_and_agent_death_ends_the_session() {
    let server = start().await;
    let addr = server.addr;
    let client = viewer_client();
    let mut ws = agent(addr).await;

    let created = create_session(&client, addr).await;
    let id = created["sessionId"].as_str().unwrap().to_owned();
    let mut sse = Sse::open(
        &client,
        &format!("http://{addr}{}", created["eventsUrl"].as_str().unwrap()),
    )
    .await;

    let offer = recv_ws(&mut ws).await;
    assert_eq!(offer["type"], "offer");
    assert_eq!(offer["sessionId"], id.as_str());
    assert_eq!(offer["sdp"], OFFER);

    // The viewer trickles before the agent has answered; end-of-candidates as null.
    let base = format!("http://{addr}/api/webrtc/session/{id}");
    for body in [
        json!({"candidate": cand(1), "from": "browser"}),
        json!({"candidate": null, "from": "browser"}),
    ] {
        let resp = client
            .post(format!("{base}/candidate"))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 204);
    }
    let c1 = recv_ws(&mut ws).await;
    assert_eq!(
        c1,
        json!({"type": "candidate", "sessionId": id, "candidate": cand(1)})
    );
    let c2 = recv_ws(&mut ws).await;
    assert_eq!(
        c2["candidate"]["candidate"], "",
        "end-of-candidates reaches the agent"
    );

    // The agent trickles one candidate before its answer, then answers and finishes.
    send_ws(
        &mut ws,
        json!({"type": "candidate", "sessionId": id, "candidate": cand(2)}),
    )
    .await;
    send_ws(
        &mut ws,
        json!({"type": "answer", "sessionId": id, "sdp": ANSWER}),
    )
    .await;
    send_ws(
        &mut ws,
        json!({"type": "candidate", "sessionId": id, "candidate": eoc()}),
    )
    .await;
    send_ws(
        &mut ws,
        json!({"type": "peerState", "sessionId": id, "state": "ice:connected"}),
    )
    .await;
    assert_eq!(
        sse.next().await.unwrap(),
        (1, "answer".into(), json!({"type": "answer", "sdp": ANSWER}))
    );
    assert_eq!(
        sse.next().await.unwrap(),
        (
            2,
            "candidate".into(),
            json!({"type": "candidate", "candidate": cand(2)})
        )
    );
    assert_eq!(
        sse.next().await.unwrap(),
        (
            3,
            "candidate".into(),
            json!({"type": "candidate", "candidate": eoc()})
        )
    );
    assert_eq!(sse.next().await.unwrap().1, "peerState");

    // The agent dies without a goodbye; the session waits for it (it may only have lost its
    // link). A new agent process comes back without the session: the viewer hears `ended`.
    drop(ws);
    let mut ws = agent(addr).await;
    send_ws(&mut ws, json!({"type": "resume", "sessions": []})).await;
    let ended = sse.next().await.unwrap();
    assert_eq!(ended.0, 5);
    assert_eq!(ended.1, "ended");
    assert_eq!(
        ended.2,
        json!({"type": "ended", "code": "agent_disconnected",
               "reason": "VM agent disconnected (it restarted without this session)"})
    );
    assert!(sse.next().await.is_none(), "stream closes after ended");

    let resp = client.get(format!("{base}/answer")).send().await.unwrap();
    assert_eq!(resp.status(), 410);
    let v: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    assert_eq!(v["error"]["code"], "agent_disconnected");
    // Once that agent is gone too, the VM is offline.
    drop(ws);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let resp = client
            .get(format!("http://{addr}/api/vms/demo"))
            .send()
            .await
            .unwrap();
        let v: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
        if v == json!({"vmId": "demo", "online": false}) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "VM still online: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let mut server = server;
    server.stop.take().unwrap().send(()).unwrap();
    tokio::time::timeout(WAIT, server.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn shutdown_tells_agent_and_viewer() {
    let mut server = start().await;
    let addr = server.addr;
    let client = viewer_client();
    let mut ws = agent(addr).await;
    let created = create_session(&client, addr).await;
    let mut sse = Sse::open(
        &client,
        &format!("http://{addr}{}", created["eventsUrl"].as_str().unwrap()),
    )
    .await;
    assert_eq!(recv_ws(&mut ws).await["type"], "offer");

    server.stop.take().unwrap().send(()).unwrap();
    let end = recv_ws(&mut ws).await;
    assert_eq!(end["type"], "endSession");
    assert_eq!(end["code"], "shutting_down");
    assert_eq!(
        recv_ws(&mut ws).await,
        Value::Null,
        "then the socket closes"
    );
    let ended = sse.next().await.unwrap();
    assert_eq!(ended.2["code"], "shutting_down");
    assert!(sse.next().await.is_none());
    tokio::time::timeout(WAIT, server.task)
        .await
        .expect("serve returns")
        .unwrap()
        .unwrap();
}
