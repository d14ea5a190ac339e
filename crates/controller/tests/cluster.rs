//! Two controllers joined by a real `nats-server -js` on loopback (`--cluster`): an agent on
//! node A, a viewer whose every request goes to node B (create, candidates, event stream, the
//! polling routes), and NATS going away (503 at once, never a hang). Skipped without
//! nats-server, except under CI=true, where that is a failure.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Nats {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Nats {
    /// `None` (skip) when nats-server is not installed and CI is not set.
    fn start() -> Option<Self> {
        Self::start_with(&[])
    }

    fn start_with(extra: &[&str]) -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("vdesk-nats-{}-{port}", std::process::id()));
        let spawned = Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(&dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(c) => c,
            Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("nats-server is needed under CI=true (scripts/deps.sh installs it): {e}")
            }
            Err(e) => {
                eprintln!("skipped: no nats-server ({e})");
                return None;
            }
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Self { child, port, dir })
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn node(nats: &str) -> SocketAddr {
    let state = state();
    state.join_cluster(nats).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(vdesk_controller::serve(
        listener,
        state,
        std::future::pending(),
    ));
    addr
}

async fn agent(addr: SocketAddr) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/api/agent/ws"))
        .await
        .unwrap();
    let challenge = recv_ws(&mut ws).await;
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

/// Next SSE event (event name, data) from a streaming response, keep-alives skipped.
async fn next_event(resp: &mut reqwest::Response, buf: &mut String) -> (String, Value) {
    loop {
        if let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut ev = (String::new(), Value::Null);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    ev.0 = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    ev.1 = serde_json::from_str(v).unwrap();
                }
            }
            if !ev.0.is_empty() {
                return ev;
            }
            continue;
        }
        let chunk = tokio::time::timeout(WAIT, resp.chunk())
            .await
            .expect("event stream stalled")
            .unwrap()
            .expect("event stream ended");
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

#[tokio::test]
async fn a_viewer_on_one_node_reaches_the_agent_on_another_and_nats_loss_is_a_quick_503() {
    let Some(nats) = Nats::start() else { return };
    let a = node(&nats.url()).await;
    let b = node(&nats.url()).await;
    let viewer = viewer_client();

    // Before any agent: the VM is offline everywhere.
    let mut ws = agent(a).await;
    // Node B learns from A's lease that the VM is online (the request is forwarded to A).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = viewer
            .get(format!("http://{b}/api/vms/demo"))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        if status == 200 && serde_json::from_str::<Value>(&body).unwrap()["online"] == true {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node B never saw the agent on node A: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The session POST through B reaches the agent on A.
    let resp = viewer
        .post(format!("http://{b}/api/webrtc/session"))
        .header("content-type", "application/json")
        .body(json!({"vmId": "demo", "offer": {"type": "offer", "sdp": OFFER}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let created: Value = resp.json().await.unwrap();
    let id = created["sessionId"].as_str().unwrap().to_owned();
    let offer = recv_ws(&mut ws).await;
    assert_eq!(offer["type"], "offer");
    assert_eq!(offer["sessionId"], id.as_str());

    // The event stream from B: the answer and the agent's candidate arrive through it.
    let mut sse = viewer
        .get(format!("http://{b}/api/webrtc/session/{id}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    assert_eq!(sse.headers()["content-type"], "text/event-stream");
    let mut buf = String::new();
    send_ws(
        &mut ws,
        json!({"type": "answer", "sessionId": id, "sdp": ANSWER}),
    )
    .await;
    send_ws(
        &mut ws,
        json!({"type": "candidate", "sessionId": id, "candidate": cand(2)}),
    )
    .await;
    assert_eq!(
        next_event(&mut sse, &mut buf).await,
        ("answer".into(), json!({"type": "answer", "sdp": ANSWER}))
    );
    let (name, data) = next_event(&mut sse, &mut buf).await;
    assert_eq!((name.as_str(), &data["candidate"]), ("candidate", &cand(2)));

    // A browser candidate posted to B reaches the agent; the polling routes work from B.
    let base = format!("http://{b}/api/webrtc/session/{id}");
    let r = viewer
        .post(format!("{base}/candidate"))
        .body(json!({"candidate": cand(1), "from": "browser"}).to_string())
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(recv_ws(&mut ws).await["candidate"], cand(1));
    let r = viewer.get(format!("{base}/answer")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["sdp"], ANSWER);
    let r = viewer
        .get(format!("{base}/candidates/vm"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.text().await.unwrap().contains("candidate"),
        "VM candidates polled through B"
    );

    // Another link's token is refused by the holder's own access check, through B.
    let other = viewer
        .get(format!("{base}/answer"))
        .header(
            "authorization",
            format!(
                "Bearer {}",
                mint("demo", vdesk_protocol::Permission::Control)
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 403);

    // NATS goes away: a new session through B fails at once with a clear 503, never hangs.
    drop(nats);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        viewer
            .post(format!("http://{b}/api/webrtc/session"))
            .header("content-type", "application/json")
            .body(json!({"vmId": "demo", "offer": {"type": "offer", "sdp": OFFER}}).to_string())
            .send(),
    )
    .await
    .expect("request hung while NATS was down")
    .unwrap();
    assert_eq!(r.status(), 503);
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "503 took {:?}",
        t0.elapsed()
    );
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cluster is unavailable"),
        "{body}"
    );
}

#[tokio::test]
async fn credentials_in_the_cluster_url_reach_nats() {
    let Some(nats) = Nats::start_with(&["--user", "vdesk", "--pass", "p@ss word"]) else {
        return;
    };
    let with = node(&format!(
        "nats://vdesk:p%40ss%20word@127.0.0.1:{}",
        nats.port
    ))
    .await;
    let without = node(&nats.url()).await;
    let viewer = viewer_client();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = viewer
            .get(format!("http://{with}/api/vms/demo"))
            .send()
            .await
            .unwrap();
        if r.status() != 503 {
            break; // the buckets opened: NATS accepted the URL's user and password
        }
        assert!(Instant::now() < deadline, "never authenticated to NATS");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = viewer
        .get(format!("http://{without}/api/vms/demo"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "no credentials, no cluster");
}

#[tokio::test]
async fn when_the_agent_moves_to_another_node_the_lease_follows_within_a_second() {
    let Some(nats) = Nats::start() else { return };
    let a = node(&nats.url()).await;
    let b = node(&nats.url()).await;
    let viewer = viewer_client();
    let ws = agent(a).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(ws); // the link to A drops (A died, say); the agent registers on B
    let mut ws = agent(b).await;
    let t0 = Instant::now();
    // A session created through A reaches the agent on B.
    loop {
        let r = viewer
            .post(format!("http://{a}/api/webrtc/session"))
            .header("content-type", "application/json")
            .body(json!({"vmId": "demo", "offer": {"type": "offer", "sdp": OFFER}}).to_string())
            .send()
            .await
            .unwrap();
        if r.status() == 201 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "lease did not follow the agent: {}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(recv_ws(&mut ws).await["type"], "offer");
}

#[tokio::test]
async fn a_link_revoked_on_one_node_is_refused_and_its_sessions_end_on_another_within_a_second() {
    let Some(nats) = Nats::start() else { return };
    let a = node(&nats.url()).await;
    let b = node(&nats.url()).await;
    let http = reqwest::Client::new();
    // The agent is on B: B serves the link's sessions itself and must learn of the revocation.
    let mut ws = agent(b).await;
    let minted: Value = http
        .post(format!("http://{a}/api/admin/links"))
        .bearer_auth(ADMIN)
        .json(&json!({"vmId": "demo", "permission": "control", "ttl": "1h", "name": "Ada"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (token, link) = (
        minted["token"].as_str().unwrap().to_owned(),
        minted["id"].as_str().unwrap().to_owned(),
    );
    let create = || {
        http.post(format!("http://{b}/api/webrtc/session"))
            .bearer_auth(&token)
            .json(&json!({"vmId": "demo", "offer": {"type": "offer", "sdp": OFFER}}))
            .send()
    };
    // (Each node opens its JetStream buckets once NATS answered: until then, 503.)
    let deadline = Instant::now() + Duration::from_secs(10);
    let r = loop {
        let r = create().await.unwrap();
        if r.status() != 503 || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.unwrap()["sessionId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(recv_ws(&mut ws).await["type"], "offer");

    let r = http
        .post(format!("http://{a}/api/admin/links/{link}/revoke"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let t0 = Instant::now();
    // B ends the link's live session: the agent is told.
    let end = recv_ws(&mut ws).await;
    assert_eq!(end["type"], "endSession", "{end}");
    assert_eq!(end["code"], "forbidden"); // link_revoked, in a code every agent knows
    assert_eq!(end["sessionId"], id.as_str());
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    // And B refuses the link from then on (it is B's own check: nothing is forwarded).
    let r = create().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "link_revoked"
    );
    let r = http
        .get(format!("http://{b}/api/webrtc/config"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
}
