//! The Prometheus text format (version 0.0.4) of per-session stats, shared by the agent's
//! `--metrics-listen` endpoint and the controller's `GET /metrics` so that both expose the same
//! metric names. Pure string building: no I/O, no HTTP.

use std::fmt::Write as _;

use crate::messages::SessionStats;

/// `Content-Type` of the text exposition format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A label value with `\`, `"` and newlines escaped as the format requires.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// `{a="x",b="y"}` (or nothing for no labels).
pub fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// Writes one metric family: `# HELP`, `# TYPE`, then one sample per `(labels, value)`.
/// Non-finite values are skipped (they are never measured values).
pub fn write_family(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    samples: &[(String, f64)],
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        if value.is_finite() {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    }
}

/// One session to render: its labels (e.g. `vm`, `session`) and its stats. A `codec` label is
/// added from the stats.
#[derive(Debug)]
pub struct SessionSample<'a> {
    pub labels: Vec<(&'a str, &'a str)>,
    pub stats: &'a SessionStats,
}

type Getter = fn(&SessionStats) -> Option<f64>;

/// Every per-session metric: name, type, help, and how to read it (None = not measured yet).
const SESSION_METRICS: &[(&str, &str, &str, Getter)] = &[
    (
        "vdesk_session_bitrate_kbps",
        "gauge",
        "Measured video send rate, kbit/s.",
        |s| Some(s.bitrate_kbps),
    ),
    (
        "vdesk_session_target_kbps",
        "gauge",
        "Encoder bitrate target set by the rate controller, kbit/s.",
        |s| Some(f64::from(s.target_kbps)),
    ),
    (
        "vdesk_session_fps",
        "gauge",
        "Frames encoded per second.",
        |s| Some(s.fps),
    ),
    (
        "vdesk_session_rtt_seconds",
        "gauge",
        "Round-trip time from the viewer's last RTCP receiver report.",
        |s| s.rtt_ms.map(|v| v / 1000.0),
    ),
    (
        "vdesk_session_fraction_lost",
        "gauge",
        "Fraction of packets lost (0..1) over the last second, from the viewer's receiver reports.",
        |s| s.fraction_lost,
    ),
    (
        "vdesk_session_jitter_seconds",
        "gauge",
        "Interarrival jitter reported by the viewer.",
        |s| s.jitter_ms.map(|v| v / 1000.0),
    ),
    (
        "vdesk_session_packets_lost",
        "gauge",
        "Packets lost in total as the viewer reports it (can go down when late packets arrive).",
        |s| s.packets_lost.map(|v| v as f64),
    ),
    (
        "vdesk_session_packets_sent_total",
        "counter",
        "Video RTP packets sent.",
        |s| Some(s.packets_sent as f64),
    ),
    (
        "vdesk_session_bytes_sent_total",
        "counter",
        "Video RTP bytes sent.",
        |s| Some(s.bytes_sent as f64),
    ),
    (
        "vdesk_session_nacks_received_total",
        "counter",
        "NACKs received from the viewer.",
        |s| Some(s.nack_count as f64),
    ),
    (
        "vdesk_session_plis_received_total",
        "counter",
        "Picture loss indications received from the viewer.",
        |s| Some(s.pli_count as f64),
    ),
    (
        "vdesk_session_firs_received_total",
        "counter",
        "Full intra requests received from the viewer.",
        |s| Some(s.fir_count as f64),
    ),
    (
        "vdesk_session_keyframes_forced_total",
        "counter",
        "Keyframe requests that reached the encoder.",
        |s| Some(s.keyframes_forced as f64),
    ),
];

/// Writes every per-session family for `sessions` (HELP and TYPE even when there is none, so a
/// scraper sees the names from the start).
pub fn write_session_metrics(out: &mut String, sessions: &[SessionSample<'_>]) {
    for (name, kind, help, get) in SESSION_METRICS {
        let samples: Vec<(String, f64)> = sessions
            .iter()
            .filter_map(|s| {
                let value = get(s.stats)?;
                let mut pairs = s.labels.clone();
                pairs.push(("codec", s.stats.codec.as_str()));
                Some((labels(&pairs), value))
            })
            .collect();
        write_family(out, name, kind, help, &samples);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        assert_eq!(labels(&[]), "");
        assert_eq!(
            labels(&[("vm", "a\"b\\c\nd"), ("x", "y")]),
            r#"{vm="a\"b\\c\nd",x="y"}"#
        );
    }

    #[test]
    fn sessions_render_one_family_each_with_their_labels() {
        let stats = SessionStats {
            codec: "VP8".into(),
            bitrate_kbps: 1500.5,
            target_kbps: 2000,
            fps: 30.0,
            rtt_ms: Some(100.0),
            fraction_lost: None,
            ..Default::default()
        };
        let mut out = String::new();
        write_session_metrics(
            &mut out,
            &[SessionSample {
                labels: vec![("session", "0123abcd")],
                stats: &stats,
            }],
        );
        assert!(out.contains("# TYPE vdesk_session_bitrate_kbps gauge\n"));
        assert!(
            out.contains("vdesk_session_bitrate_kbps{session=\"0123abcd\",codec=\"VP8\"} 1500.5\n")
        );
        assert!(out.contains("vdesk_session_rtt_seconds{session=\"0123abcd\",codec=\"VP8\"} 0.1\n"));
        // Not measured: HELP/TYPE only, no sample.
        assert!(out.contains("# TYPE vdesk_session_fraction_lost gauge\n"));
        assert!(!out.contains("vdesk_session_fraction_lost{"));
        assert_eq!(out.matches("# HELP vdesk_session_fps ").count(), 1);
    }

    #[test]
    fn non_finite_values_are_skipped() {
        let mut out = String::new();
        write_family(
            &mut out,
            "m",
            "gauge",
            "h",
            &[(String::new(), f64::NAN), (String::new(), 1.0)],
        );
        assert_eq!(out, "# HELP m h\n# TYPE m gauge\nm 1\n");
    }
}
