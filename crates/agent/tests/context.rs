//! Integration tier: two agents in one process keep their encoder choices, metrics and stage
//! times apart (each has its own `AgentContext`, built as `main` builds it, instead of
//! process-wide registries). Agent A streams to a real in-process viewer from a real Xvfb;
//! agent B, beside it, has no viewer: none of A's sessions, encoders or frame times may show in
//! B's `/metrics` text, and an encoder failure marked in A does not change B's choice.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use common::peers::{until, Peer};
use common::Xvfb;
use gstreamer as gst;
use vdesk_agent::codec::Codec;
use vdesk_agent::context::AgentContext;
use vdesk_agent::encoder::{Choice, Kind};
use vdesk_agent::media::MediaHub;
use vdesk_agent::pipeline::CaptureMode;
use vdesk_agent::stage_timing::Stage;

/// One agent's context and media, its counters reported by its own metrics (as `Shared::new`).
fn agent(display: &str) -> (std::sync::Arc<AgentContext>, MediaHub) {
    let context = AgentContext::new(vec![Choice {
        codec: Codec::H264,
        kind: Kind::Va,
        why: "test".into(),
    }]);
    let hub = MediaHub::new(
        common::media(display, CaptureMode::Damage, 1000),
        context.clone(),
    );
    context.metrics.set_media(hub.counters());
    (context, hub)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_agents_in_one_process_keep_their_context_apart() {
    gst::init().unwrap();
    let x = Xvfb::start();
    let _painter = x.painter();
    let (a, hub_a) = agent(&x.display);
    let (b, _hub_b) = agent(&x.display);

    let mut viewer = Peer::start("a", &hub_a, &[Codec::Vp8]).await;
    until(&mut [&mut viewer], 20, "A's viewer decodes frames", |p| {
        p[0].frames() >= 3
    })
    .await;
    // A's stats loop reports every 500 ms: wait until A's metrics show its session.
    until(
        &mut [&mut viewer],
        10,
        "A's metrics show its session",
        |_| a.metrics.render("a").contains("vdesk_agent_sessions 1\n"),
    )
    .await;

    let text_a = a.metrics.render("a");
    let text_b = b.metrics.render("b");
    assert!(text_a.contains("vdesk_agent_encoders 1\n"), "{text_a}");
    assert!(text_b.contains("vdesk_agent_sessions 0\n"), "{text_b}");
    assert!(text_b.contains("vdesk_agent_encoders 0\n"), "{text_b}");
    assert!(text_b.contains("vdesk_agent_captures 0\n"), "{text_b}");
    assert!(
        !text_b.contains("session=\""),
        "no session of A in B: {text_b}"
    );

    let (encoded_a, _) = a.stage_times().get(Stage::Encode);
    let (captured_a, _) = a.stage_times().get(Stage::Capture);
    assert!(encoded_a >= 2 && captured_a >= 1, "A timed its frames");
    assert_eq!(b.stage_times().get(Stage::Encode).0, 0, "B encoded nothing");
    assert_eq!(
        b.stage_times().get(Stage::Capture).0,
        0,
        "B captured nothing"
    );
    assert!(
        text_b.contains("vdesk_agent_stage_seconds_count{stage=\"encode\"} 0\n"),
        "{text_b}"
    );

    a.encoders.mark_failed(Kind::Va, "test: no VA display in A");
    assert_eq!(a.encoders.for_codec(Codec::H264), Kind::X264);
    assert_eq!(
        b.encoders.for_codec(Codec::H264),
        Kind::Va,
        "A's failure is not B's"
    );
    drop(viewer);
}
