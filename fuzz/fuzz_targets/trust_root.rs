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
        && let Ok(signed) = from_trust_file(text)
        && let Ok(verified) = signed.verify_initial(NOW)
    {
        let _ = verified.verify_rotation(&signed, NOW);
    }
    if let Ok(signed) = SignedRoot::from_bytes(data) {
        let _ = signed.root();
        let _ = signed.verify_initial(NOW);
    }
    if let Ok(cert) = SignedNodeCert::from_bytes(data)
        && let Ok(signed) = from_trust_file(include_str!("../seed/trust.json"))
        && let Ok(v) = signed.verify_initial(NOW)
    {
        let _ = cert.verify(&v.root, NOW);
    }
});
