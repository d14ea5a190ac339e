//! `GET /api/webrtc/session/{id}/events`: the session's events as server-sent events. A new
//! stream replays the log (after `Last-Event-ID`, if given), then gets live events the moment the
//! relay produces them; a `: keep-alive` comment goes out every 10 s, and the stream ends after
//! `ended`. While a stream is open its session is not idle. Needs the session's viewer token
//! (`?token=`, since `EventSource` cannot set headers). At most `--max-streams-per-session`
//! streams per session are open at once; the next one gets 429. No relay logic here.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream, StreamExt};
use tokio::sync::mpsc;
use vdesk_protocol::{ControllerToViewer, ErrorCode, SessionId};

use crate::access::ViewerSession;
use crate::error::AppError;
use crate::state::{AppState, ViewerEvent};

/// Interval of the `: keep-alive` comments.
pub const KEEP_ALIVE: Duration = Duration::from_secs(10);

#[utoipa::path(get, path = "/api/webrtc/session/{id}/events", tag = "viewer",
    security(("bearer" = []), ("token" = [])),
    params(("id" = SessionId, Path, description = "The session"),
        ("Last-Event-ID" = Option<u64>, Header, description = "Replay the events after this one")),
    responses((status = 200, description = "Server-sent events: `event:` is the type, `data:` the JSON",
        content_type = "text/event-stream", body = String)))]
pub(crate) async fn events(
    State(state): State<AppState>,
    ViewerSession { id, .. }: ViewerSession,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let after = match headers.get("last-event-id") {
        None => 0,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| AppError::bad_request("Last-Event-ID must be an event id (a number)"))?,
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let max = state.config().max_streams_per_session;
    let replay = {
        let mut hub = state.hub();
        if hub.open_streams(&id) >= max {
            return Err(AppError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::TooManyRequests,
                format!(
                    "this session already has {max} event streams open \
                     (--max-streams-per-session); close one first"
                ),
            ));
        }
        let replay = hub.relay.stream_opened(&id, after, Instant::now())?;
        hub.add_stream(id.clone(), tx);
        replay
    };
    let guard = StreamGuard {
        state: state.clone(),
        session: id,
    };
    let sse = Sse::new(event_stream(replay, rx, guard))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"));
    let mut resp = sse.into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

/// Replay, then live events, ending after `ended` (or when the relay drops the sender).
fn event_stream(
    replay: Vec<ViewerEvent>,
    rx: mpsc::UnboundedReceiver<ViewerEvent>,
    guard: StreamGuard,
) -> impl Stream<Item = Result<Event, Infallible>> + Send {
    let live = stream::unfold((rx, guard), |(mut rx, guard)| async move {
        rx.recv().await.map(|ev| (ev, (rx, guard)))
    });
    stream::iter(replay)
        .chain(live)
        .scan(false, |done, (seq, ev)| {
            // Nothing after `ended`, even if a second one were queued.
            let out = (!*done).then(|| {
                *done = matches!(ev, ControllerToViewer::Ended { .. });
                to_event(seq, &ev)
            });
            std::future::ready(out)
        })
        .map(Ok)
}

fn to_event(seq: u64, ev: &ControllerToViewer) -> Event {
    let data = serde_json::to_string(ev).unwrap_or_else(|_| "{}".to_owned());
    Event::default()
        .id(seq.to_string())
        .event(ev.event_name())
        .data(data)
}

/// Tells the relay the stream closed (the viewer went away or `ended` was sent).
struct StreamGuard {
    state: AppState,
    session: SessionId,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let session = self.session.clone();
        self.state.relay(|r, now| r.stream_closed(&session, now));
    }
}
