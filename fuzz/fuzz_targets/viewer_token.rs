//! Fuzz target: any string as a viewer token. Must never panic, and never be accepted (the
//! fuzzer does not know the secret).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vdesk_controller::viewer_token::verify;
use vdesk_controller::ControllerSecret;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    let secret = ControllerSecret::new("fuzz-controller-secret-0123456789");
    assert!(verify(&secret, token, 0).is_err(), "a forged token was accepted");
});
