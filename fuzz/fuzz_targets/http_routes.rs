//! Fuzz target: the controller's router (`app()`, as `oneshot` requests) fed a route chosen by
//! the first byte and the rest of the input as the body, with a valid viewer token or none.
//! Must never panic and never answer 5xx.
#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;
use vdesk_controller::viewer_token::{mint, unix_now};
use vdesk_controller::{app, AgentToken, AppState, Config, ControllerSecret};
use vdesk_protocol::{Permission, VmId};

struct World {
    rt: tokio::runtime::Runtime,
    state: AppState,
    token: String,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let mut c = Config::new(AgentToken::new("0123456789abcdef0123456789abcdef"));
        c.secret = ControllerSecret::new("fuzz-controller-secret-0123456789");
        c.vms = VmId::new("demo").into_iter().collect();
        let token = mint(&c.secret, &VmId::new("demo").expect("valid"), Permission::Control, unix_now() + 86_400);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        World { rt, state: AppState::new(c), token }
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else { return };
    let w = world();
    let id = "0123456789abcdef0123456789abcdef";
    let (method, uri) = match sel % 6 {
        0 => ("POST", "/api/webrtc/session".to_owned()),
        1 => ("POST", format!("/api/webrtc/session/{id}/candidate")),
        2 => ("POST", "/api/admin/links".to_owned()),
        3 => ("GET", format!("/api/webrtc/session/{id}/events")),
        4 => ("GET", "/api/webrtc/config".to_owned()),
        _ => ("DELETE", format!("/api/webrtc/session/{id}")),
    };
    let mut req = match Request::builder().method(method).uri(uri).body(Body::from(body.to_vec())) {
        Ok(r) => r,
        Err(_) => return,
    };
    if sel & 0x80 != 0 {
        if let Ok(v) = format!("Bearer {}", w.token).parse() {
            req.headers_mut().insert("authorization", v);
        }
    }
    let resp = w.rt.block_on(app(w.state.clone()).oneshot(req));
    let status = resp.map(|r| r.status().as_u16()).unwrap_or(0);
    assert!(status < 500, "status {status}");
});
