//! A session ends by itself at its link's expiry (`SessionGrant::expires_at`), even when no
//! controller ends it: against the real agent loop (`signalling::run`) and a stand-in controller
//! on a loopback WebSocket. Also: across a reconnect, `resume` reports the grant unchanged, and
//! after the expiry the session is gone (the next `resume` lists nothing).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::time::{Duration, Instant};

use clap::Parser;
use common::{Browser, Xvfb};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use vdesk_agent::codec::Codec;
use vdesk_agent::config::{Args, Config};
use vdesk_agent::expiry::now_ms;
use vdesk_agent::pipeline::CaptureMode;
use vdesk_agent::session::Session;
use vdesk_protocol::{
    AgentToController, ClipboardPolicy, ControllerToAgent, ErrorCode, Permission, ResumedSession,
    SessionGrant, SessionId,
};

type Ws = WebSocketStream<TcpStream>;

/// The next message from the agent that `pick` wants (others are skipped), within 15 s.
async fn next_from_agent<T>(
    ws: &mut Ws,
    mut pick: impl FnMut(AgentToController) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("the agent said nothing in time")
            .expect("the agent closed the link")
            .unwrap();
        if let Message::Text(text) = frame {
            let msg: AgentToController = serde_json::from_str(&text).unwrap();
            if let Some(t) = pick(msg) {
                return t;
            }
        }
    }
}

async fn send(ws: &mut Ws, msg: &ControllerToAgent) {
    ws.send(Message::text(serde_json::to_string(msg).unwrap()))
        .await
        .unwrap();
}

/// Accepts the agent's next connection: challenge, hello, welcome, and its `resume` list.
// The handshake callback's error type is tungstenite's (a whole HTTP response).
#[allow(clippy::result_large_err)]
async fn accept(listener: &TcpListener) -> (Ws, Vec<ResumedSession>) {
    // The signalling link only: the agent's media link (`/api/agent/media`) is turned away.
    let mut ws = loop {
        let (tcp, _) = tokio::time::timeout(Duration::from_secs(20), listener.accept())
            .await
            .expect("the agent did not connect")
            .unwrap();
        let path = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let seen = path.clone();
        let ws = tokio_tungstenite::accept_hdr_async(
            tcp,
            move |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
                *seen.lock().unwrap() = req.uri().path().to_owned();
                Ok(resp)
            },
        )
        .await
        .unwrap();
        if path.lock().unwrap().ends_with("/api/agent/ws") {
            break ws;
        }
    };
    // The controller speaks first (a nonce the hello proves the secret over); the proof itself is
    // the controller's business and not checked here.
    send(
        &mut ws,
        &ControllerToAgent::Challenge {
            nonce: "0123456789abcdef0123456789abcdef".into(),
        },
    )
    .await;
    next_from_agent(&mut ws, |m| {
        matches!(m, AgentToController::Hello { .. }).then_some(())
    })
    .await;
    send(
        &mut ws,
        &ControllerToAgent::Welcome {
            ice_servers: vec![],
        },
    )
    .await;
    let resumed = next_from_agent(&mut ws, |m| match m {
        AgentToController::Resume { sessions } => Some(sessions),
        _ => None,
    })
    .await;
    (ws, resumed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ends_itself_when_its_link_expires() {
    gstreamer::init().unwrap();
    let x = Xvfb::start();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let args = Args::parse_from([
        "vdesk-agent",
        "--controller",
        &format!("http://{addr}"),
        "--vm-id",
        "expiry",
        "--token",
        "a-test-secret-0123456789",
        "--display",
        &x.display,
        "--codecs",
        "vp8",
    ]);
    let config = Config::from_args(&args, None).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(vdesk_agent::signalling::run(config, async {
        let _ = stopped.await;
    }));

    let (mut ws, resumed) = accept(&listener).await;
    assert!(resumed.is_empty());
    let browser = Browser::new();
    let session_id = SessionId::random();
    let grant = SessionGrant {
        permission: Permission::View,
        owner: Some("owner-tag".into()),
        expires_at: Some(now_ms() + 6_000),
        clipboard: ClipboardPolicy::FromVm,
        name: Some("tester".into()),
    };
    send(
        &mut ws,
        &ControllerToAgent::Offer {
            session_id: session_id.clone(),
            sdp: browser.offer().await,
            ice_servers: vec![],
            grant: grant.clone(),
        },
    )
    .await;
    next_from_agent(&mut ws, |m| {
        matches!(m, AgentToController::Answer { .. }).then_some(())
    })
    .await;

    // The link drops: the session is kept, and resumed with its grant as it came.
    drop(ws);
    let (mut ws, resumed) = accept(&listener).await;
    assert_eq!(resumed.len(), 1);
    assert_eq!(resumed[0].session_id, session_id);
    assert_eq!(
        resumed[0].grant, grant,
        "resume reports the grant unchanged"
    );

    // Nobody ends it: at the expiry the agent does, with link_expired.
    let (code, at) = next_from_agent(&mut ws, |m| match m {
        AgentToController::SessionEnded {
            session_id: id,
            code,
            ..
        } if id == session_id => Some((code, now_ms())),
        _ => None,
    })
    .await;
    assert_eq!(code, ErrorCode::LinkExpired);
    let expires_at = grant.expires_at.unwrap();
    assert!(at + 50 >= expires_at, "ended {} ms early", expires_at - at);
    assert!(at < expires_at + 3_000, "ended {} ms late", at - expires_at);

    // And it is gone: the next connection resumes nothing.
    drop(ws);
    let (ws, resumed) = accept(&listener).await;
    assert!(
        resumed.is_empty(),
        "an expired session was resumed: {resumed:?}"
    );
    stop.send(()).unwrap();
    drop(ws);
    tokio::time::timeout(Duration::from_secs(10), agent)
        .await
        .expect("the agent did not stop")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_session_ends_without_any_controller() {
    gstreamer::init().unwrap();
    let x = Xvfb::start();
    let browser = Browser::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let grant = SessionGrant {
        expires_at: Some(now_ms() + 1_500),
        ..SessionGrant::default()
    };
    let t0 = Instant::now();
    let hub = common::hub(&x.display, CaptureMode::Damage, 500);
    let _session = Session::start_with_input(
        &hub,
        SessionId::random(),
        &browser.offer().await,
        &[],
        &[Codec::Vp8],
        tx,
        grant,
        None,
    )
    .unwrap();
    let code = loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("the session did not end by itself")
            .unwrap();
        if let AgentToController::SessionEnded { code, .. } = msg {
            break code;
        }
    };
    assert_eq!(code, ErrorCode::LinkExpired);
    assert!(t0.elapsed() >= Duration::from_millis(1_000));
}
