//! The WebSocket media path over real sockets on loopback: an agent's media link
//! (`/api/agent/media`: challenge-response hello, wrong proofs refused), a viewer's WebSocket
//! (`/api/vms/{vmId}/stream`: token, VM, Origin), frames relayed without the session id and only
//! to the VM's own viewers, input relayed to the agent with the link's grant, a slow viewer
//! skipping to the next keyframe (and the agent asked for one), and the counters in `/metrics`.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use vdesk_controller::AppState;
use vdesk_protocol::wsmedia::{parse_frame, FrameHeader, WsCodec};
use vdesk_protocol::{Permission, VmId};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Server {
    addr: SocketAddr,
    state: AppState,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start() -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = AppState::new(config());
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

/// The next message (pings skipped): text as JSON, binary as `{"binary": [...]}`; `Null` once
/// closed.
async fn next(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("nothing in time")
        {
            Some(Ok(WsMessage::Text(t))) => return serde_json::from_str(t.as_str()).unwrap(),
            Some(Ok(WsMessage::Binary(b))) => return json!({"binary": b.to_vec()}),
            Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return Value::Null,
            Some(Ok(_)) => continue,
        }
    }
}

/// The next message that is not `wsStats`.
async fn next_not_stats(ws: &mut Ws) -> Value {
    loop {
        let v = next(ws).await;
        if v["type"] != "wsStats" {
            return v;
        }
    }
}

/// An agent's media link for `vm`, proving `secret`; returns it and the controller's answer.
async fn media_link(addr: SocketAddr, vm: &str, secret: &str) -> (Ws, Value) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/api/agent/media"))
        .await
        .unwrap();
    let challenge = next(&mut ws).await;
    assert_eq!(challenge["type"], "challenge");
    let nonce = challenge["nonce"].as_str().unwrap().to_owned();
    ws.send(WsMessage::text(hello_json(vm, secret, &nonce).to_string()))
        .await
        .unwrap();
    let answer = next(&mut ws).await;
    (ws, answer)
}

async fn viewer(addr: SocketAddr, vm: &str, token: &str) -> Result<Ws, u16> {
    let req = format!("ws://{addr}/api/vms/{vm}/stream?token={token}")
        .into_client_request()
        .unwrap();
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("{e}"),
    }
}

fn frame(session: &str, keyframe: bool, payload: &[u8]) -> WsMessage {
    WsMessage::binary(
        FrameHeader {
            keyframe,
            codec: WsCodec::H264,
            session,
            pts_us: 7,
            capture_us: 9,
        }
        .encode(payload),
    )
}

#[tokio::test]
async fn frames_and_input_cross_the_controller_for_the_vms_own_viewers_only() {
    let s = start().await;
    // A wrong proof is refused.
    let (_, refused) = media_link(s.addr, "demo", "not-the-secret-0123456789").await;
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["code"], "unauthorized");
    // No media link: the viewer is told, then closed.
    let mut early = viewer(s.addr, "demo", &viewer_token("demo")).await.unwrap();
    assert_eq!(next(&mut early).await["code"], "vm_offline");

    let (mut agent, welcome) = media_link(s.addr, "demo", TOKEN).await;
    assert_eq!(welcome["type"], "welcome");
    let (mut other_agent, _) = media_link(s.addr, "other", TOKEN).await;

    let view = mint("demo", Permission::View);
    let mut v = viewer(s.addr, "demo", &view).await.unwrap();
    let hello = next(&mut v).await;
    assert_eq!(hello["type"], "wsWelcome");
    assert_eq!(hello["grant"]["permission"], "view");
    assert!(hello["grant"].get("owner").is_none(), "{hello}");
    let sid = hello["sessionId"].as_str().unwrap().to_owned();
    let open = next(&mut agent).await;
    assert_eq!(open["type"], "wsOpen");
    assert_eq!(open["sessionId"], sid.as_str());
    assert_eq!(
        open["permission"], "view",
        "the agent gets the link's grant"
    );
    assert!(open["owner"].is_string());

    // Another VM's agent cannot put frames into this viewer's stream.
    other_agent
        .send(frame(&sid, true, b"intruder"))
        .await
        .unwrap();
    // The VM's own agent can; the viewer gets the frame without the session id.
    agent.send(frame(&sid, false, b"delta")).await.unwrap(); // before a keyframe: skipped
    agent.send(frame(&sid, true, b"key")).await.unwrap();
    let got = next_not_stats(&mut v).await;
    let bytes: Vec<u8> = serde_json::from_value(got["binary"].clone()).unwrap();
    let (h, start) = parse_frame(&bytes).unwrap();
    assert_eq!(
        (h.session, h.keyframe, h.pts_us, h.capture_us),
        ("", true, 7, 9)
    );
    assert_eq!(&bytes[start..], b"key");

    // Input goes to the agent as sent (the agent applies the grant), and its answer comes back.
    v.send(WsMessage::text(
        r#"{"type":"key","key":"a","code":"KeyA","down":true}"#,
    ))
    .await
    .unwrap();
    let input = next(&mut agent).await;
    assert_eq!(input["type"], "wsInput");
    assert_eq!(input["sessionId"], sid.as_str());
    assert!(input["text"].as_str().unwrap().contains("KeyA"));
    agent
        .send(WsMessage::text(
            json!({"type": "wsOutput", "sessionId": sid, "text": "{\"type\":\"notice\",\"code\":\"view_only\",\"message\":\"x\"}"}).to_string(),
        ))
        .await
        .unwrap();
    assert_eq!(next_not_stats(&mut v).await["code"], "view_only");
    // Garbage from the agent is dropped, the link stays.
    agent.send(WsMessage::binary(vec![1, 2])).await.unwrap();
    agent.send(WsMessage::text("{")).await.unwrap();

    // The viewer leaves: the agent is told.
    v.close(None).await.unwrap();
    let close = next(&mut agent).await;
    assert_eq!(close["type"], "wsClose");
    assert_eq!(close["sessionId"], sid.as_str());

    let metrics = body_text(
        send(
            &vdesk_controller::app(s.state.clone()),
            bearer(anon_get("/metrics"), ADMIN),
        )
        .await,
    )
    .await;
    assert!(metrics.contains("vdesk_ws_media_links 2"), "{metrics}");
    assert!(
        metrics.contains("vdesk_ws_frames_relayed_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vdesk_ws_viewers_opened_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_viewer_route_needs_a_token_for_the_vm_and_this_hosts_origin() {
    let s = start().await;
    let (_agent, _) = media_link(s.addr, "demo", TOKEN).await;
    assert_eq!(viewer(s.addr, "demo", "").await.err(), Some(401));
    assert_eq!(
        viewer(s.addr, "demo", &viewer_token("other")).await.err(),
        Some(403)
    );
    assert_eq!(viewer(s.addr, "demo", "bad.token").await.err(), Some(403));
    let mut req = format!(
        "ws://{}/api/vms/demo/stream?token={}",
        s.addr,
        viewer_token("demo")
    )
    .into_client_request()
    .unwrap();
    req.headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("a foreign Origin was let in: {:?}", other.is_ok()),
    }
}

#[tokio::test]
async fn a_viewer_that_does_not_read_skips_to_the_next_keyframe() {
    // Through the registry: a viewer whose socket task takes nothing.
    let state = AppState::new(config());
    let media = state.wsmedia();
    let vm = VmId::new("demo").unwrap();
    let (_, mut link) = media.attach_link(&vm);
    let open = media.open_viewer(&vm, Default::default(), 8).unwrap();
    assert!(link.try_recv().unwrap().contains("wsOpen"));
    let sid = open.id.as_str().to_owned();
    let bytes = |key| {
        FrameHeader {
            keyframe: key,
            codec: WsCodec::H264,
            session: &sid,
            pts_us: 0,
            capture_us: 0,
        }
        .encode(&[0; 100])
    };
    media.on_frame(&vm, &bytes(true)).unwrap();
    for _ in 0..100 {
        media.on_frame(&vm, &bytes(false)).unwrap();
        assert!(open.frames.depth() <= vdesk_controller::wsmedia::queue::VIEWER_QUEUE_FRAMES);
    }
    let asked = link.try_recv().unwrap();
    assert!(asked.contains("wsKeyframe"), "{asked}");
    assert!(open.frames.dropped() > 80, "{}", open.frames.dropped());
    // Waiting for a keyframe: deltas are not queued, the next keyframe is.
    assert_eq!(open.frames.depth(), 0);
    media.on_frame(&vm, &bytes(true)).unwrap();
    assert_eq!(open.frames.depth(), 1);
    tokio::time::sleep(Duration::from_millis(1)).await;
}
