//! Decoding trust-root files (`trust.json`, the text form) and the binary
//! signed root and node certificate, then verifying what decodes: nothing
//! may panic, whatever the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_protocol::trust::{SignedNodeCert, SignedRoot, from_trust_file};

/// A fixed "now" (2026-01-01), so that runs replay.
const NOW: u64 = 1_767_225_600;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Some(signed) = ok(from_trust_file(text))
        && let Some(verified) = ok(signed.verify_initial(NOW))
    {
        ok(verified.verify_rotation(&signed, NOW));
    }
    if let Some(signed) = ok(SignedRoot::from_bytes(data)) {
        let _ = signed.root();
        ok(signed.verify_initial(NOW));
    }
    if let Some(cert) = ok(SignedNodeCert::from_bytes(data))
        && let Ok(signed) = from_trust_file(include_str!("../seed/trust.json"))
        && let Ok(v) = signed.verify_initial(NOW)
    {
        ok(cert.verify(&v.root, NOW));
    }
});

/// The value, or `None` after checking that the error is one line (a
/// refusal is logged and answered as one line, whatever the bytes held).
fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            let text = e.to_string();
            assert!(
                !text.chars().any(char::is_control),
                "an error of more than one line: {text:?}"
            );
            None
        }
    }
}
