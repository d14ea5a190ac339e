//! The injector's arithmetic, as pure functions with no X connection, so that a property test and
//! a fuzz target can run it on any message: what X pointer events a viewer's pointer or wheel
//! message becomes on a screen of a given size. Every count is bounded by a small constant and
//! every conversion is checked or clamped, whatever the message says (`ViewerToAgent::parse`
//! checks it first, but this does not rely on that).

use vdesk_protocol::{FramePoint, ViewerToAgent, MAX_WHEEL_STEPS};

/// One XTEST event the injector sends for a pointer message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointerEvent {
    /// Move the pointer to this root-window pixel.
    Motion { x: i16, y: i16 },
    /// Press (`down`) or release an X button.
    Button { button: u8, down: bool },
}

/// Most events one message may turn into: a motion, then a press and a release per wheel notch
/// on both axes, or one button.
pub const MAX_EVENTS_PER_MESSAGE: usize = 1 + 2 * 2 * MAX_WHEEL_STEPS.unsigned_abs() as usize;

/// The pixel of `at` on a `screen_w`×`screen_h` screen, in XTEST's signed 16-bit coordinates
/// (clamped: X screens are at most 32767 pixels wide).
pub fn screen_point(at: &FramePoint, screen_w: u32, screen_h: u32) -> (i16, i16) {
    let (x, y) = at.to_screen(screen_w, screen_h);
    let clamp = |v: u32| i16::try_from(v).unwrap_or(i16::MAX);
    (clamp(x), clamp(y))
}

/// The X button and the number of clicks for each wheel axis: `dy > 0` is button 5 (down),
/// `dy < 0` 4 (up), `dx > 0` 7 (right), `dx < 0` 6 (left). At most `MAX_WHEEL_STEPS` each.
pub fn wheel_clicks(dx: i32, dy: i32) -> [(u8, u32); 2] {
    let max = MAX_WHEEL_STEPS.unsigned_abs();
    let axis =
        |n: i32, pos: u8, neg: u8| (if n > 0 { pos } else { neg }, n.unsigned_abs().min(max));
    [axis(dy, 5, 4), axis(dx, 7, 6)]
}

/// The pointer events of a pointer, button or wheel message (empty for the other kinds: keys,
/// clipboard, resize and control are not pointer input). The button state (what is held) is the
/// injector's: a `Button { down: false }` here is sent only if it holds that button.
pub fn pointer_events(msg: &ViewerToAgent, screen_w: u32, screen_h: u32) -> Vec<PointerEvent> {
    let motion = |at: &FramePoint| {
        let (x, y) = screen_point(at, screen_w, screen_h);
        PointerEvent::Motion { x, y }
    };
    match msg {
        ViewerToAgent::PointerMove { at } => vec![motion(at)],
        ViewerToAgent::PointerButton { button, down, at } => {
            vec![
                motion(at),
                PointerEvent::Button {
                    button: *button,
                    down: *down,
                },
            ]
        }
        ViewerToAgent::Wheel { dx, dy, at } => {
            let mut out = vec![motion(at)];
            for (button, clicks) in wheel_clicks(*dx, *dy) {
                for _ in 0..clicks {
                    out.push(PointerEvent::Button { button, down: true });
                    out.push(PointerEvent::Button {
                        button,
                        down: false,
                    });
                }
            }
            out
        }
        ViewerToAgent::Key { .. }
        | ViewerToAgent::ReleaseAll
        | ViewerToAgent::Clipboard { .. }
        | ViewerToAgent::Resize { .. }
        | ViewerToAgent::RequestControl
        | ViewerToAgent::ReleaseControl
        | ViewerToAgent::GiveControl { .. }
        | ViewerToAgent::TakeControl => Vec::new(),
    }
}

/// How many keycodes a keyboard mapping from `min` to `max` holds (`None` if the server's
/// numbers make no sense: X keeps `8 <= min <= max <= 255`, so at most 248).
pub fn keycode_count(min: u8, max: u8) -> Option<u8> {
    max.checked_sub(min)?.checked_add(1)
}

/// Most keys one viewer may hold down at once; a key-down beyond it is dropped. (Real keyboards
/// roll over at far fewer; this only bounds what a hostile viewer can make the agent remember.)
pub const MAX_HELD_KEYS: usize = 64;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use vdesk_protocol::{MAX_INPUT_MESSAGE_BYTES, MAX_SCREEN_EDGE};

    #[test]
    fn the_review_s_wheel_message_is_refused_and_its_arithmetic_is_bounded() {
        let text = r#"{"type":"wheel","dx":0,"dy":-2147483648,"x":1,"y":1,"w":2,"h":2}"#;
        assert!(ViewerToAgent::parse(text).is_err());
        // Even if it got past the parser, the injector would click at most MAX_WHEEL_STEPS.
        let msg = ViewerToAgent::Wheel {
            dx: i32::MIN,
            dy: i32::MAX,
            at: FramePoint {
                x: i32::MIN,
                y: i32::MAX,
                w: u32::MAX,
                h: 0,
            },
        };
        let events = pointer_events(&msg, u32::MAX, u32::MAX);
        assert_eq!(events.len(), MAX_EVENTS_PER_MESSAGE);
        assert_eq!(wheel_clicks(i32::MIN, i32::MIN), [(4, 50), (6, 50)]);
        assert_eq!(wheel_clicks(3, -2), [(4, 2), (7, 3)]);
        assert_eq!(wheel_clicks(0, 0)[0].1, 0);
    }

    #[test]
    fn points_land_on_the_screen_in_xtest_range() {
        let p = FramePoint {
            x: 100,
            y: 50,
            w: 200,
            h: 100,
        };
        assert_eq!(screen_point(&p, 400, 200), (200, 100));
        assert_eq!(screen_point(&p, 0, 0), (0, 0));
        // A screen wider than XTEST's coordinates: clamped, not wrapped to a negative x.
        let far = FramePoint {
            x: 199,
            y: 0,
            w: 200,
            h: 100,
        };
        assert_eq!(screen_point(&far, 100_000, 100).0, i16::MAX);
    }

    #[test]
    fn keycode_counts_are_checked() {
        assert_eq!(keycode_count(8, 255), Some(248));
        assert_eq!(keycode_count(0, 255), None);
        assert_eq!(keycode_count(9, 8), None);
    }

    /// Strings that are close to valid input messages, with extreme numbers where numbers go.
    fn near_messages() -> impl Strategy<Value = String> {
        let int = prop_oneof![
            any::<i32>().prop_map(|v| v.to_string()),
            any::<i64>().prop_map(|v| v.to_string()),
            any::<u32>().prop_map(|v| v.to_string()),
            (-60i32..60).prop_map(|v| v.to_string()),
            (1u32..=9000).prop_map(|v| v.to_string()),
            Just("-2147483648".to_owned()),
            Just("2147483648".to_owned()),
            Just("4294967296".to_owned()),
            Just("1e10".to_owned()),
            Just("-0".to_owned()),
            Just("null".to_owned()),
        ];
        let kind = prop::sample::select(vec![
            "pointerMove",
            "pointerButton",
            "wheel",
            "key",
            "releaseAll",
            "clipboard",
            "resize",
            "nope",
        ]);
        let fields = prop::collection::vec(
            (
                prop::sample::select(vec![
                    "x", "y", "w", "h", "dx", "dy", "button", "width", "height", "down", "key",
                    "code", "text", "more",
                ]),
                prop_oneof![
                    int.clone(),
                    Just("true".to_owned()),
                    "\"[a-zA-Z0-9 ]{0,40}\"".prop_map(|s| s),
                ],
            ),
            0..10,
        );
        // Whole messages of each kind: i32 fields anywhere in i32 (edges often), frame sizes
        // mostly valid, so that most of them get past serde to the range checks.
        let i32s = prop_oneof![
            any::<i32>(),
            Just(i32::MIN),
            Just(i32::MAX),
            Just(i32::MIN + 1),
            -60i32..60,
        ];
        let edge = prop_oneof![1u32..=9000, Just(0u32), Just(u32::MAX)];
        let whole = (
            0usize..4,
            i32s.clone(),
            i32s.clone(),
            edge.clone(),
            edge,
            i32s.clone(),
            i32s,
        )
            .prop_map(|(k, x, y, w, h, a, b)| {
                let at = format!(r#""x":{x},"y":{y},"w":{w},"h":{h}"#);
                match k {
                    0 => format!(r#"{{"type":"pointerMove",{at}}}"#),
                    1 => format!(
                        r#"{{"type":"pointerButton","button":{},"down":true,{at}}}"#,
                        a & 0xff
                    ),
                    2 => format!(r#"{{"type":"wheel","dx":{a},"dy":{b},{at}}}"#),
                    _ => format!(
                        r#"{{"type":"resize","width":{},"height":{}}}"#,
                        a.unsigned_abs(),
                        b.unsigned_abs()
                    ),
                }
            });
        prop_oneof![
            whole,
            (kind, fields).prop_map(|(kind, fields)| {
                let mut s = format!(r#"{{"type":"{kind}""#);
                for (k, v) in fields {
                    s.push_str(&format!(r#","{k}":{v}"#));
                }
                s.push('}');
                s
            }),
            ".{0,200}",
        ]
    }

    fn check_bounds(msg: &ViewerToAgent, sw: u32, sh: u32) {
        let events = pointer_events(msg, sw, sh);
        assert!(events.len() <= MAX_EVENTS_PER_MESSAGE);
        for e in events {
            match e {
                PointerEvent::Motion { x, y } => {
                    assert!(x >= 0 && y >= 0);
                    assert!(sw == 0 || u32::from(x.unsigned_abs()) < sw);
                    assert!(sh == 0 || u32::from(y.unsigned_abs()) < sh);
                }
                PointerEvent::Button { button, .. } => {
                    assert!(matches!(button, 1..=9), "{button}");
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

        /// Whatever text arrives: `parse` does not panic, what it accepts is within the
        /// protocol's limits, and the injector's arithmetic on it stays bounded.
        #[test]
        fn parse_and_plan_never_panic_and_stay_bounded(
            text in near_messages(),
            sw in prop_oneof![Just(0u32), 1u32..=MAX_SCREEN_EDGE, any::<u32>()],
            sh in prop_oneof![Just(0u32), 1u32..=MAX_SCREEN_EDGE, any::<u32>()],
        ) {
            if let Ok(msg) = ViewerToAgent::parse(&text) {
                prop_assert!(text.len() <= MAX_INPUT_MESSAGE_BYTES);
                check_bounds(&msg, sw, sh);
            }
        }

        /// The arithmetic alone, on messages the parser would refuse too.
        #[test]
        fn plan_is_bounded_for_any_numbers(
            dx in any::<i32>(), dy in any::<i32>(), x in any::<i32>(), y in any::<i32>(),
            w in any::<u32>(), h in any::<u32>(), sw in any::<u32>(), sh in any::<u32>(),
            button in any::<u8>(),
        ) {
            let at = FramePoint { x, y, w, h };
            check_bounds(&ViewerToAgent::Wheel { dx, dy, at }, sw, sh);
            check_bounds(&ViewerToAgent::PointerMove { at }, sw, sh);
            let events = pointer_events(&ViewerToAgent::PointerButton { button, down: true, at }, sw, sh);
            prop_assert_eq!(events.len(), 2);
        }
    }
}
