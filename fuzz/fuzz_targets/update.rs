//! Decoding and verifying a signed update file: the bytes of
//! `POST /v1/updates` and of every gossip message. Decoding must refuse
//! or accept without panicking; whatever decodes must re-encode to the same
//! bytes (one canonical encoding), and verification must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_protocol::update::SignedUpdate;

fuzz_target!(|data: &[u8]| {
    let Ok(update) = SignedUpdate::from_bytes(data) else {
        return;
    };
    assert_eq!(update.to_bytes(), data, "a second encoding was accepted");
    let _ = update.id();
    let _ = update.verify();
});
