//! The real `vdesk-controller` binary with `RUST_LOG=trace`, driven through every authenticated
//! path (agent hello right and wrong, admin API, viewer token in header and in `?token=`, TURN
//! credentials, session routes): no secret, token or credential appears in its log.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::OFFER;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "log-test-controller-secret-5f1e2d3c4b5a6978";
const ADMIN: &str = "log-test-admin-token-0a1b2c3d4e5f";
const TURN_SECRET: &str = "log-test-turn-secret-99887766";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn no_secret_reaches_the_log() {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("vdesk-log-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log_path = dir.join("controller.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vdesk-controller"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--vm", "demo"])
        .args(["--turn-server", "turn:192.0.2.1:3478"])
        .env("VDESK_SECRET", SECRET)
        .env("VDESK_ADMIN_TOKEN", ADMIN)
        .env("VDESK_TURN_SECRET", TURN_SECRET)
        .env("RUST_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..100 {
        if http.get(format!("{base}/healthz")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_vdesk-controller"))
        .args(["agent-secret", "--vm", "demo"])
        .env("VDESK_SECRET", SECRET)
        .output()
        .unwrap();
    let agent_secret = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert_eq!(agent_secret.len(), 64);

    // A wrong hello, then the right one.
    for token in ["wrong-agent-secret-000000000000", agent_secret.as_str()] {
        let (mut ws, _) =
            tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/api/agent/ws"))
                .await
                .unwrap();
        let challenge = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let challenge: Value = serde_json::from_str(challenge.to_text().unwrap()).unwrap();
        let proof = vdesk_protocol::hello_proof(
            token,
            challenge["nonce"].as_str().unwrap(),
            &vdesk_protocol::VmId::new("demo").unwrap(),
        );
        let hello = json!({"type": "hello", "vmId": "demo", "proof": proof,
                           "protocolVersion": 2, "agentVersion": "log-test"});
        ws.send(Message::Text(hello.to_string().into()))
            .await
            .unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let reply: Value = serde_json::from_str(reply.to_text().unwrap()).unwrap();
        if token == agent_secret {
            assert_eq!(reply["type"], "welcome", "{reply}");
            // Keep it: sessions need it online.
            tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} });
        } else {
            assert_eq!(reply["code"], "unauthorized", "{reply}");
        }
    }

    let link: Value = http
        .post(format!("{base}/api/admin/links"))
        .bearer_auth(ADMIN)
        .json(&json!({"vmId": "demo", "permission": "control"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = link["token"].as_str().unwrap().to_owned();
    // A wrong admin token too.
    let resp = http
        .post(format!("{base}/api/admin/links"))
        .bearer_auth("not-the-admin-token-000")
        .json(&json!({"vmId": "demo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);

    let config: Value = http
        .get(format!("{base}/api/webrtc/config?token={token}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let turn_credential = config["iceServers"][0]["credential"]
        .as_str()
        .unwrap()
        .to_owned();

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
    let session = format!("{base}/api/webrtc/session/{id}");
    let events = http
        .get(format!("{session}/events?token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    drop(events);
    let resp = http
        .post(format!("{session}/candidate?token={token}"))
        .json(&json!({"candidate": {"candidate": "", "sdpMLineIndex": 0}, "from": "browser"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let resp = http
        .delete(format!("{session}?token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = child.kill();
    let _ = child.wait();

    let text = std::fs::read_to_string(&log_path).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        text.contains("session created") && text.contains("agent registered"),
        "the log is the one of this run:\n{text}"
    );
    let (_, signature) = token.split_once('.').unwrap();
    for (what, secret) in [
        ("controller secret", SECRET),
        ("admin token", ADMIN),
        ("TURN secret", TURN_SECRET),
        ("agent secret", agent_secret.as_str()),
        ("viewer token", token.as_str()),
        ("viewer token signature", signature),
        ("TURN credential", turn_credential.as_str()),
    ] {
        assert!(!text.contains(secret), "the {what} is in the log:\n{text}");
    }
}
