//! Checks the viewer's JSON examples (`web/test/fixtures/messages.json`) against the Rust types:
//! each must deserialize into its type and serialize back to the same JSON. The viewer's unit tests
//! (`web/test/unit.test.mjs`) read the same file, so JS and Rust cannot drift apart unnoticed.
//! This file only reads that fixture; it must not grow a second copy of the examples.

use std::collections::BTreeSet;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use vdesk_protocol::{
    AgentToViewer, CandidateList, ControllerToViewer, CreateSession, ErrorBody, ErrorCode,
    PostCandidate, RtcConfig, SessionCreated, SessionDescription, ViewerToAgent, VmInfo, VmList,
};

fn fixtures() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../web/test/fixtures/messages.json"
    );
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {path}: {e}"))
}

/// Deserializes `json` as `T` and checks it serializes back to `expected`, and that `expected`
/// deserializes to the same value (for examples whose Rust form differs, such as `null`).
fn round_trip<T>(name: &str, json: &Value, expected: &Value)
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    let value: T = serde_json::from_value(json.clone())
        .unwrap_or_else(|e| panic!("{name}: does not deserialize: {e}\n{json:#}"));
    let back = serde_json::to_value(&value).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(&back, expected, "{name}: serializes to something else");
    let again: T = serde_json::from_value(expected.clone())
        .unwrap_or_else(|e| panic!("{name}: its serialized form does not deserialize: {e}"));
    assert_eq!(again, value, "{name}: serialized form means something else");
}

#[test]
fn every_viewer_message_matches_its_rust_type() {
    let f = fixtures();
    let messages = f["messages"].as_array().expect("messages is an array");
    let mut types_seen = BTreeSet::new();
    let mut events_seen = BTreeSet::new();
    for m in messages {
        let name = m["name"].as_str().expect("each message has a name");
        let json = &m["json"];
        let expected = m.get("reserialized").unwrap_or(json);
        let Some(rust) = m["rust"].as_str() else {
            // No Rust type (e.g. the 202 `{"status": "pending"}` of the answer poll).
            assert!(
                m["rust"].is_null(),
                "{name}: rust must be a type name or null"
            );
            continue;
        };
        types_seen.insert(rust);
        match rust {
            "VmInfo" => round_trip::<VmInfo>(name, json, expected),
            "VmList" => round_trip::<VmList>(name, json, expected),
            "RtcConfig" => round_trip::<RtcConfig>(name, json, expected),
            "CreateSession" => round_trip::<CreateSession>(name, json, expected),
            "SessionCreated" => round_trip::<SessionCreated>(name, json, expected),
            "PostCandidate" => round_trip::<PostCandidate>(name, json, expected),
            "SessionDescription" => round_trip::<SessionDescription>(name, json, expected),
            "CandidateList" => round_trip::<CandidateList>(name, json, expected),
            "ErrorBody" => round_trip::<ErrorBody>(name, json, expected),
            "ControllerToViewer" => {
                round_trip::<ControllerToViewer>(name, json, expected);
                let msg: ControllerToViewer =
                    serde_json::from_value(json.clone()).expect("checked above");
                assert_eq!(
                    json["type"],
                    msg.event_name(),
                    "{name}: type is the SSE event name"
                );
                events_seen.insert(msg.event_name());
            }
            "ViewerToAgent" => {
                round_trip::<ViewerToAgent>(name, json, expected);
                let text = serde_json::to_string(json).expect("a JSON value prints");
                ViewerToAgent::parse(&text)
                    .unwrap_or_else(|e| panic!("{name}: refused by the agent's checks: {e}"));
            }
            "AgentToViewer" => round_trip::<AgentToViewer>(name, json, expected),
            other => panic!("{name}: unknown Rust type {other}; add it to this test"),
        }
    }
    let all_types = [
        "VmInfo",
        "VmList",
        "RtcConfig",
        "CreateSession",
        "SessionCreated",
        "PostCandidate",
        "SessionDescription",
        "CandidateList",
        "ErrorBody",
        "ControllerToViewer",
        "ViewerToAgent",
        "AgentToViewer",
    ];
    for t in all_types {
        assert!(types_seen.contains(t), "no example of {t} in the fixtures");
    }
    let all_events = ["answer", "candidate", "peerState", "ended"];
    assert_eq!(
        events_seen,
        all_events.into_iter().collect(),
        "one example per viewer event"
    );
}

#[test]
fn end_of_candidates_is_null_or_an_empty_candidate() {
    let f = fixtures();
    let by_name = |n: &str| {
        f["messages"]
            .as_array()
            .and_then(|a| a.iter().find(|m| m["name"] == n))
            .unwrap_or_else(|| panic!("no fixture {n}"))["json"]
            .clone()
    };
    let post: PostCandidate = serde_json::from_value(by_name("postEndOfCandidates")).expect("null");
    assert!(post.candidate.is_end_of_candidates());
    let ControllerToViewer::Candidate { candidate } =
        serde_json::from_value(by_name("eventEndOfCandidates")).expect("candidate event")
    else {
        panic!("eventEndOfCandidates is not a candidate event");
    };
    assert!(candidate.is_end_of_candidates());
}

/// Every `ErrorCode`; the `match` stops compiling when a variant is added, so that the fixture's
/// list (which the viewer's unit tests use to check it has words for each code) is kept whole.
fn all_error_codes() -> Vec<ErrorCode> {
    use ErrorCode::*;
    let all = vec![
        BadRequest,
        NotFound,
        VmNotFound,
        SessionNotFound,
        AgentOffline,
        AgentDisconnected,
        Unauthorized,
        Forbidden,
        PayloadTooLarge,
        Conflict,
        TooManyRequests,
        AgentError,
        IdleTimeout,
        ViewerLeft,
        ShuttingDown,
        LinkExpired,
        ConnectTimeout,
        Internal,
        LinkRevoked,
        EndedByAdmin,
    ];
    for c in &all {
        match c {
            BadRequest | NotFound | VmNotFound | SessionNotFound | AgentOffline
            | AgentDisconnected | Unauthorized | Forbidden | PayloadTooLarge | Conflict
            | TooManyRequests | AgentError | IdleTimeout | ViewerLeft | ShuttingDown
            | LinkExpired | ConnectTimeout | Internal | LinkRevoked | EndedByAdmin => {}
        }
    }
    all
}

#[test]
fn fixture_lists_every_error_code() {
    let f = fixtures();
    let listed: BTreeSet<String> = f["errorCodes"]
        .as_array()
        .expect("errorCodes is an array")
        .iter()
        .map(|c| c.as_str().expect("codes are strings").to_owned())
        .collect();
    let rust: BTreeSet<String> = all_error_codes()
        .into_iter()
        .map(|c| match serde_json::to_value(c) {
            Ok(Value::String(s)) => s,
            other => panic!("ErrorCode serializes to {other:?}"),
        })
        .collect();
    assert_eq!(
        listed, rust,
        "web/test/fixtures/messages.json errorCodes vs ErrorCode"
    );
}
