//! `GET /metrics`: the controller's numbers in the Prometheus text format: agents online,
//! sessions open, sessions created and ended (by reason), messages relayed, and the last stats
//! each agent reported for each live session (`sessionStats`). Rendering is a pure function of a
//! [`MetricsSnapshot`]; the route only takes the snapshot under the relay's lock.
//! It needs the admin token (`--admin-token`), as the admin API does.

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use vdesk_protocol::metrics::{
    labels, write_family, write_session_metrics, SessionSample, PROMETHEUS_CONTENT_TYPE,
};

use crate::relay::MetricsSnapshot;
use crate::state::AppState;

/// Behind the admin token, like the rest of the admin API: the numbers name VMs and sessions.
#[utoipa::path(get, path = "/metrics", tag = "admin", security(("bearer" = [])),
    responses((status = 200, description = "The Prometheus text format",
        content_type = "text/plain", body = String)))]
pub(crate) async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(e) = crate::access::admin(&state, &headers) {
        return e.into_response();
    }
    let snapshot = state.relay(|r, _| r.metrics());
    let mut body = render(&snapshot);
    state.wsmedia().render_metrics(&mut body);
    ([(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)], body).into_response()
}

/// The whole `/metrics` body.
pub fn render(m: &MetricsSnapshot) -> String {
    let mut out = String::new();
    let one = |v: f64| vec![(String::new(), v)];
    write_family(
        &mut out,
        "vdesk_agents_online",
        "gauge",
        "Agents registered right now.",
        &one(m.agents_online as f64),
    );
    write_family(
        &mut out,
        "vdesk_vms_known",
        "gauge",
        "VMs known (configured or seen).",
        &one(m.vms_known as f64),
    );
    write_family(
        &mut out,
        "vdesk_sessions_open",
        "gauge",
        "Signalling sessions open right now.",
        &one(m.sessions_open as f64),
    );
    let c = &m.counters;
    write_family(
        &mut out,
        "vdesk_sessions_created_total",
        "counter",
        "Sessions created.",
        &one(c.sessions_created as f64),
    );
    let ended: Vec<(String, f64)> = c
        .sessions_ended
        .iter()
        .map(|(code, n)| (labels(&[("reason", code)]), *n as f64))
        .collect();
    write_family(
        &mut out,
        "vdesk_sessions_ended_total",
        "counter",
        "Sessions ended, by reason (the error code they ended with).",
        &ended,
    );
    let relayed = vec![
        (
            labels(&[("direction", "from_agent")]),
            c.agent_messages as f64,
        ),
        (
            labels(&[("direction", "to_agent")]),
            c.controller_messages as f64,
        ),
        (
            labels(&[("direction", "to_viewer")]),
            c.viewer_messages as f64,
        ),
    ];
    write_family(
        &mut out,
        "vdesk_relay_messages_total",
        "counter",
        "Signalling messages relayed, by direction.",
        &relayed,
    );
    let sessions: Vec<SessionSample<'_>> = m
        .sessions
        .iter()
        .map(|s| SessionSample {
            labels: vec![("vm", s.vm.as_str()), ("session", s.session.as_str())],
            stats: &s.stats,
        })
        .collect();
    write_session_metrics(&mut out, &sessions);
    out
}
