//! Decoding sync messages (the frames of `/weft/sync/1`), as a request and
//! as a response. What decodes must re-encode to the same bytes and decode
//! again to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_protocol::wire::{SyncRequest, SyncResponse};

fuzz_target!(|data: &[u8]| {
    if let Err(e) = SyncRequest::from_bytes(data) {
        one_line(&e);
    }
    if let Err(e) = SyncResponse::from_bytes(data) {
        one_line(&e);
    }
    if let Ok(r) = SyncRequest::from_bytes(data) {
        let again = r.to_bytes();
        assert_eq!(again, data, "a second encoding of a request was accepted");
        assert_eq!(SyncRequest::from_bytes(&again).ok(), Some(r));
    }
    if let Ok(r) = SyncResponse::from_bytes(data) {
        let again = r.to_bytes();
        assert_eq!(again, data, "a second encoding of a response was accepted");
        assert_eq!(SyncResponse::from_bytes(&again).ok(), Some(r));
    }
});

/// A refusal is logged as one line, whatever the bytes held.
fn one_line(e: &dyn std::fmt::Display) {
    let text = e.to_string();
    assert!(
        !text.chars().any(char::is_control),
        "an error of more than one line: {text:?}"
    );
}
