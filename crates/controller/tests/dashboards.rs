//! `docs/grafana-dashboard.json` and `docs/prometheus-alerts.yml` against the controller's own
//! `/metrics` text: every `vdesk_*` name they use is a family the controller renders (with a live
//! session's stats, so the per-session families are there too), and every `reason` the alerts
//! match is an error code a session can end with. A renamed metric fails here, not in production.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use vdesk_controller::metrics::render;
use vdesk_controller::relay::{Counters, MetricsSnapshot, SessionMetrics};
use vdesk_protocol::{ErrorCode, SessionStats, VmId};

/// The family names of `/metrics` (its `# TYPE` lines), with every optional stat present.
fn families() -> BTreeSet<String> {
    let mut counters = Counters::default();
    counters.sessions_ended.insert("connect_timeout".into(), 1);
    let snapshot = MetricsSnapshot {
        agents_online: 1,
        vms_known: 1,
        sessions_open: 1,
        counters,
        sessions: vec![SessionMetrics {
            vm: VmId::new("demo").unwrap(),
            session: "0123456789abcdef0123456789abcdef".into(),
            stats: SessionStats {
                codec: "H264".into(),
                rtt_ms: Some(1.0),
                fraction_lost: Some(0.0),
                packets_lost: Some(0),
                jitter_ms: Some(1.0),
                ..SessionStats::default()
            },
        }],
    };
    render(&snapshot)
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect()
}

/// Every `vdesk_...` word of a text.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("vdesk_") {
        let word: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + word.len()..];
        names.insert(word);
    }
    names
}

fn doc(name: &str) -> String {
    std::fs::read_to_string(format!("{}/../../docs/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn check(name: &str, least: usize) {
    let known = families();
    let used = names_in(&doc(name));
    let unknown: Vec<_> = used.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "{name} uses metrics /metrics does not have: {unknown:?}"
    );
    assert!(used.len() >= least, "{name} uses only {used:?}");
}

#[test]
fn the_dashboard_uses_only_metrics_the_controller_exports() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&doc("grafana-dashboard.json")).unwrap();
    assert!(dashboard["panels"].as_array().unwrap().len() >= 10);
    check("grafana-dashboard.json", 15);
}

#[test]
fn the_alerts_use_only_metrics_and_reasons_the_controller_exports() {
    let rules = doc("prometheus-alerts.yml");
    check("prometheus-alerts.yml", 3);
    for alert in [
        "VdeskAgentOffline",
        "VdeskSessionsFailingToConnect",
        "VdeskRelayErrors",
    ] {
        assert!(rules.contains(&format!("alert: {alert}")), "no {alert}");
    }
    // Every reason="..." / reason=~"a|b" is an ErrorCode's wire name.
    for part in rules.split("reason=").skip(1) {
        let quoted = part.trim_start_matches('~').strip_prefix('"').unwrap();
        for reason in quoted[..quoted.find('"').unwrap()].split('|') {
            let code: Result<ErrorCode, _> = serde_json::from_value(serde_json::json!(reason));
            assert!(code.is_ok(), "reason {reason:?} is not an error code");
        }
    }
}
