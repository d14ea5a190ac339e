//! The panic boundary: every closure the agent hands to GStreamer or GLib (signal handlers, pad
//! probes, bus handlers, promise callbacks, data-channel handlers) runs inside `catch`, so that a
//! bug in one session's callback is logged and that callback returns a default, instead of
//! unwinding into C (which aborts the whole agent and every other session with it).
//!
//! This relies on the workspace building with `panic = "unwind"` (Rust's default): a
//! `panic = "abort"` profile would defeat it, and `tests::no_profile_aborts_on_panic` checks the
//! workspace's `Cargo.toml` for one.

use std::panic::{catch_unwind, AssertUnwindSafe};

use tracing::error;

/// Runs `f`; if it panics, logs the panic with `what` (the callback's name) and returns
/// `default`. State the closure shared may be half updated after a panic: the callers keep such
/// state behind mutexes that recover from poisoning, or in atomics.
pub fn catch<R>(what: &'static str, default: R, f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".to_owned());
            error!(
                callback = what,
                "bug: a callback panicked (caught at the GLib boundary): {message}"
            );
            default
        }
    }
}

/// Runs `f` like `catch`; true if it panicked (for callbacks whose caller must then clean up,
/// e.g. end the session whose answer will never come).
pub fn panicked(what: &'static str, f: impl FnOnce()) -> bool {
    catch(what, true, || {
        f();
        false
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_is_caught_and_the_default_returned() {
        assert_eq!(catch("test", 7, || 42), 42);
        let r = catch("test", 7, || -> i32 { panic!("boom") });
        assert_eq!(r, 7);
        let s = String::from("formatted");
        let r = catch("test", None, || -> Option<u8> { panic!("{s}") });
        assert_eq!(r, None);
        // Arithmetic overflow in a debug build is a panic like any other.
        let big = std::hint::black_box(i32::MIN);
        assert_eq!(catch("test", 0, || big.abs()), 0);
        assert!(panicked("test", || panic!("boom")));
        assert!(!panicked("test", || {}));
    }

    #[test]
    fn a_panic_inside_a_real_glib_callback_is_caught() {
        use gstreamer as gst;
        gst::init().ok();
        // A bus sync handler runs from C (gst_bus_post): without `catch`, the panic would
        // unwind into C and abort the test process.
        let bus = gst::Bus::new();
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let c = calls.clone();
        bus.set_sync_handler(move |_, _| {
            catch("test bus handler", gst::BusSyncReply::Drop, || {
                c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                panic!("bug in a handler");
            })
        });
        let msg = gst::message::Eos::new();
        bus.post(msg).ok();
        bus.post(gst::message::Eos::new()).ok();
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    #[test]
    fn no_profile_aborts_on_panic() {
        let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml");
        let text = std::fs::read_to_string(manifest).unwrap_or_default();
        assert!(text.contains("[workspace]"), "read {manifest}");
        let squashed: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        assert!(
            !squashed.contains("panic=\"abort\""),
            "a panic = \"abort\" profile makes guard::catch useless: a panic in a GLib \
             callback would end the agent"
        );
    }
}
