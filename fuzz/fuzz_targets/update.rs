//! Decoding and verifying a signed update file: the bytes of
//! `POST /v1/updates` and of every gossip message. Decoding must refuse
//! or accept without panicking; whatever decodes must re-encode to the same
//! bytes (one canonical encoding), and verification must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_protocol::update::SignedUpdate;

fuzz_target!(|data: &[u8]| {
    // libfuzzer-sys aborts on any panic, even one the code under test
    // catches. `PolicyDoc::parse_change` catches automerge's parser panics
    // on purpose (and refuses the bytes), so the hook stays quiet; a panic
    // anywhere else still unwinds into libfuzzer's handler and is reported.
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let update = match SignedUpdate::from_bytes(data) {
        Ok(update) => update,
        Err(e) => return one_line(&e),
    };
    assert_eq!(update.to_bytes(), data, "a second encoding was accepted");
    let _ = update.id();
    if let Err(e) = weft_protocol::boundary::decode_verified(data) {
        one_line(&e);
    }
});

/// A refusal is logged and answered as one line, whatever the bytes held.
fn one_line(e: &dyn std::fmt::Display) {
    let text = e.to_string();
    assert!(
        !text.chars().any(char::is_control),
        "an error of more than one line: {text:?}"
    );
}
