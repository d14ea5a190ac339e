//! The agent's own `/metrics` (Prometheus text), off unless `--metrics-listen ADDR` is given (a
//! VM needs no open port): the last `SessionStats` of each live session, the same numbers the
//! controller shows. [`Registry`] is shared by the sessions (they write) and the endpoint (it
//! reads); [`serve`] is a deliberately tiny HTTP/1.1 responder for `GET /metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::{debug, info};
use vdesk_protocol::metrics::{
    write_family, write_session_metrics, SessionSample, PROMETHEUS_CONTENT_TYPE,
};
use vdesk_protocol::{SessionId, SessionStats};

use crate::media::audio::AudioViewerCounters;
use crate::media::MediaCounters;
use crate::stage_timing::StageTimes;

/// The last stats of every live session, by session id, the shared media's counters and the
/// stage times of one agent (it lives in the agent's `context::AgentContext`; sessions write to
/// it whether or not the endpoint is served). Cheap to clone: the clones share everything.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    sessions: Arc<Mutex<BTreeMap<SessionId, SessionStats>>>,
    media: Arc<Mutex<Option<Arc<MediaCounters>>>>,
    stage_times: Arc<StageTimes>,
    /// Each session's audio counters (sessions that receive sound).
    audio: Arc<Mutex<BTreeMap<SessionId, Arc<AudioViewerCounters>>>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<SessionId, SessionStats>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The stage times this registry reports (the capture and the encoders record into them).
    pub fn stage_times(&self) -> &Arc<StageTimes> {
        &self.stage_times
    }

    pub fn set(&self, id: &SessionId, stats: SessionStats) {
        self.lock().insert(id.clone(), stats);
    }

    pub fn remove(&self, id: &SessionId) {
        self.lock().remove(id);
        self.audio
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Session `id`'s audio counters (made on first call), reported until `remove`.
    pub fn audio_counters(&self, id: &SessionId) -> Arc<AudioViewerCounters> {
        self.audio
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.clone())
            .or_default()
            .clone()
    }

    /// The agent's shared media, whose encoders and captures are reported.
    pub fn set_media(&self, counters: Arc<MediaCounters>) {
        *self.media.lock().unwrap_or_else(|p| p.into_inner()) = Some(counters);
    }

    /// The metrics text for this agent (`vm` label on every session).
    pub fn render(&self, vm: &str) -> String {
        let map = self.lock();
        let mut out = render(vm, &map);
        if let Some(media) = &*self.media.lock().unwrap_or_else(|p| p.into_inner()) {
            render_media(&mut out, media);
        }
        render_audio(
            &mut out,
            vm,
            &self.audio.lock().unwrap_or_else(|p| p.into_inner()),
        );
        self.stage_times.render(&mut out);
        out
    }
}

/// Formats the sessions of `vm`; sessions are labelled by the first 8 characters of their id.
pub fn render(vm: &str, sessions: &BTreeMap<SessionId, SessionStats>) -> String {
    let mut out = String::new();
    write_family(
        &mut out,
        "vdesk_agent_sessions",
        "gauge",
        "Sessions this agent streams right now.",
        &[(String::new(), sessions.len() as f64)],
    );
    let shorts: Vec<(String, &SessionStats)> = sessions
        .iter()
        .map(|(id, s)| (id.as_str().chars().take(8).collect(), s))
        .collect();
    let samples: Vec<SessionSample<'_>> = shorts
        .iter()
        .map(|(short, stats)| SessionSample {
            labels: vec![("vm", vm), ("session", short.as_str())],
            stats,
        })
        .collect();
    write_session_metrics(&mut out, &samples);
    out
}

/// The shared media's gauges and counters.
pub fn render_media(out: &mut String, media: &MediaCounters) {
    let get = |v: &std::sync::atomic::AtomicU64| v.load(Ordering::Relaxed) as f64;
    for (name, kind, help, value) in [
        (
            "vdesk_agent_encoders",
            "gauge",
            "Encoders running now (one per codec and quality rung, shared by their viewers).",
            get(&media.encoders),
        ),
        (
            "vdesk_agent_captures",
            "gauge",
            "Screen captures running now.",
            get(&media.captures),
        ),
        (
            "vdesk_agent_encoders_started_total",
            "counter",
            "Encoders started so far.",
            get(&media.encoders_started),
        ),
        (
            "vdesk_agent_keyframes_forced_total",
            "counter",
            "Keyframes forced (viewers joining, PLI/FIR, viewers behind), after the per-encoder limit.",
            get(&media.keyframes_forced),
        ),
        (
            "vdesk_agent_frames_dropped_total",
            "counter",
            "Encoded frames viewers did not get (behind, or waiting for a keyframe).",
            get(&media.frames_dropped),
        ),
    ] {
        write_family(out, name, kind, help, &[(String::new(), value)]);
    }
}

/// Each session's audio counters, labelled like its other metrics.
pub fn render_audio(
    out: &mut String,
    vm: &str,
    sessions: &BTreeMap<SessionId, Arc<AudioViewerCounters>>,
) {
    if sessions.is_empty() {
        return;
    }
    type Field = fn(&AudioViewerCounters) -> &std::sync::atomic::AtomicU64;
    let families: [(&str, &str, Field); 3] = [
        (
            "vdesk_agent_audio_packets_total",
            "Opus packets sent to the session.",
            |c| &c.packets,
        ),
        (
            "vdesk_agent_audio_bytes_total",
            "Opus payload bytes sent to the session.",
            |c| &c.bytes,
        ),
        (
            "vdesk_agent_audio_packets_dropped_total",
            "Opus packets the session's full queue dropped.",
            |c| &c.dropped,
        ),
    ];
    for (name, help, field) in families {
        let values: Vec<(String, f64)> = sessions
            .iter()
            .map(|(id, c)| {
                let short: String = id.as_str().chars().take(8).collect();
                (
                    // Both are [A-Za-z0-9._-] (checked ids): nothing to escape.
                    format!("{{vm=\"{vm}\",session=\"{short}\"}}"),
                    field(c).load(Ordering::Relaxed) as f64,
                )
            })
            .collect();
        write_family(out, name, "counter", help, &values);
    }
}

/// Serves `GET /metrics` on `listener` until the task is dropped. Anything else gets a 404;
/// a client that sends nothing for 5 s is dropped.
pub async fn serve(listener: TcpListener, registry: Registry, vm: String) {
    if let Ok(addr) = listener.local_addr() {
        info!("metrics at http://{addr}/metrics");
    }
    loop {
        let Ok((mut sock, peer)) = listener.accept().await else {
            continue;
        };
        let registry = registry.clone();
        let vm = vm.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n = match tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let request = String::from_utf8_lossy(&buf[..n]);
            let line = request.lines().next().unwrap_or("");
            debug!(%peer, line, "metrics request");
            let response = respond(line, || registry.render(&vm));
            let _ = sock.write_all(response.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

/// The whole HTTP response to a request line.
pub fn respond(request_line: &str, body: impl FnOnce() -> String) -> String {
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, kind, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", PROMETHEUS_CONTENT_TYPE, body()),
        _ => (
            "404 Not Found",
            "text/plain",
            "only GET /metrics here\n".to_owned(),
        ),
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: char) -> SessionId {
        SessionId::parse(&c.to_string().repeat(32)).unwrap()
    }

    #[test]
    fn renders_each_session_with_vm_session_and_codec_labels() {
        let r = Registry::default();
        r.set(
            &id('a'),
            SessionStats {
                codec: "H264".into(),
                bitrate_kbps: 2500.0,
                target_kbps: 3000,
                fps: 30.0,
                rtt_ms: Some(12.5),
                fraction_lost: Some(0.0),
                nack_count: 4,
                ..Default::default()
            },
        );
        r.set(
            &id('b'),
            SessionStats {
                codec: "VP8".into(),
                ..Default::default()
            },
        );
        let text = r.render("demo");
        assert!(text.contains("vdesk_agent_sessions 2\n"), "{text}");
        assert!(text.contains(
            "vdesk_session_target_kbps{vm=\"demo\",session=\"aaaaaaaa\",codec=\"H264\"} 3000\n"
        ));
        assert!(text.contains(
            "vdesk_session_rtt_seconds{vm=\"demo\",session=\"aaaaaaaa\",codec=\"H264\"} 0.0125\n"
        ));
        assert!(text.contains(
            "vdesk_session_nacks_received_total{vm=\"demo\",session=\"aaaaaaaa\",codec=\"H264\"} 4\n"
        ));
        assert!(
            text.contains("vdesk_session_fps{vm=\"demo\",session=\"bbbbbbbb\",codec=\"VP8\"} 0\n")
        );
        // No RTT measured for b: no sample.
        assert!(!text.contains("vdesk_session_rtt_seconds{vm=\"demo\",session=\"bbbbbbbb\""));
        assert!(
            !text.contains(&"a".repeat(32)),
            "the full session id never appears"
        );
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            value.parse::<f64>().unwrap();
        }
        r.remove(&id('a'));
        assert!(r.render("demo").contains("vdesk_agent_sessions 1\n"));
        assert!(!r.render("demo").contains("vdesk_agent_encoders"));
        let media = Arc::new(MediaCounters::default());
        media.encoders.store(2, Ordering::Relaxed);
        r.set_media(media);
        assert!(r.render("demo").contains("vdesk_agent_encoders 2\n"));
    }

    #[test]
    fn only_get_metrics_is_served() {
        let ok = respond("GET /metrics HTTP/1.1", || "x 1\n".into());
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(ok.contains("Content-Type: text/plain; version=0.0.4"));
        assert!(ok.ends_with("\r\n\r\nx 1\n"));
        assert!(ok.contains("Content-Length: 4\r\n"));
        for bad in [
            "POST /metrics HTTP/1.1",
            "GET / HTTP/1.1",
            "",
            "\u{0}garbage",
        ] {
            assert!(
                respond(bad, || unreachable!()).starts_with("HTTP/1.1 404"),
                "{bad:?}"
            );
        }
    }
}
