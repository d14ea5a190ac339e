//! Fuzz target: any bytes as a data-channel message to the agent (`ViewerToAgent::parse`), and
//! the injector's arithmetic (`vdesk_agent::input::plan`) on what parses, on a screen size taken
//! from the first bytes. Must never panic, and the events one message makes stay bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vdesk_agent::input::plan::{self, PointerEvent, MAX_EVENTS_PER_MESSAGE};
use vdesk_protocol::ViewerToAgent;

fuzz_target!(|data: &[u8]| {
    let (screen, text) = data.split_at(data.len().min(8));
    let mut size = [0u8; 8];
    size[..screen.len()].copy_from_slice(screen);
    let sw = u32::from_le_bytes([size[0], size[1], size[2], size[3]]);
    let sh = u32::from_le_bytes([size[4], size[5], size[6], size[7]]);
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let Ok(msg) = ViewerToAgent::parse(text) else {
        return;
    };
    let events = plan::pointer_events(&msg, sw, sh);
    assert!(events.len() <= MAX_EVENTS_PER_MESSAGE);
    for e in events {
        if let PointerEvent::Motion { x, y } = e {
            assert!(x >= 0 && y >= 0);
            assert!(sw == 0 || (x as u32) < sw);
            assert!(sh == 0 || (y as u32) < sh);
        }
    }
    if let ViewerToAgent::Wheel { dx, dy, .. } = msg {
        for (_, clicks) in plan::wheel_clicks(dx, dy) {
            assert!(clicks <= vdesk_protocol::MAX_WHEEL_STEPS.unsigned_abs());
        }
    }
});
