//! The bearer credential of an `Authorization` header's value, the one
//! parser behind `/v1/forward-auth` ([`crate::api::forward`]) and Envoy's
//! ext_authz `Check` ([`crate::extauthz`]).
//!
//! Rules: the scheme is `Bearer` in any case, then one or more spaces,
//! then the credential (a JWT or a `wtk1.` token), trimmed. Anything else
//! is refused in one sentence that never echoes the value (it may be a
//! secret). This file uses nothing but `std`, so the fuzz targets compile
//! it as it is.

/// The credential of `value` (an `Authorization` header's text), or why
/// it is not `Bearer <credential>`.
pub fn credential(value: &str) -> Result<&str, String> {
    let text = value.trim();
    let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
    let rest = rest.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || rest.is_empty() {
        return Err("the Authorization header is not `Bearer <JWT or wtk1 token>`".into());
    }
    Ok(rest)
}

#[cfg(test)]
mod tests {
    use super::credential;

    #[test]
    fn only_a_bearer_credential_is_taken() {
        assert_eq!(credential("Bearer abc.def"), Ok("abc.def"));
        assert_eq!(credential("bearer  wtk1.x "), Ok("wtk1.x"));
        for bad in ["Basic dTpw", "Bearer", "Bearer   ", "", "Bearerabc"] {
            let e = credential(bad).unwrap_err();
            assert!(!e.contains("dTpw"), "{e}");
        }
    }
}
