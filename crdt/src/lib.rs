//! Weft's replicated data model.
//!
//! The mesh state is one automerge document holding policy bundles,
//! revocations and quarantines ([`schema`]). Every change to it is one
//! operator-authored automerge change; this crate builds such changes
//! ([`PolicyDoc::build_bundle`], [`PolicyDoc::build_revoke`],
//! [`PolicyDoc::build_reinstate`]), says which paths a change touches before
//! it is applied ([`PolicyDoc::summarize`]), applies changes idempotently,
//! and keeps a materialized [`PolicyView`] up to date incrementally. The pure
//! [`decide()`] answers authorization requests against a view.
//!
//! The crate has no signatures, no I/O, no clock and no async: time comes in
//! as an argument, and `protocol` decides who may write what.

/// The hasher of the hash sets a decision looks entity uids up in (the
/// revoked uids, the scope index): foldhash with a fixed seed, so this crate
/// draws no randomness (ARCHITECTURE.md, deterministic core). SipHash, the
/// standard library's default, was a third of a decision's time. A fixed
/// seed is safe here: the keys are uids from operator-signed policies and
/// revocations, which no peer or client can choose; a request's uids are
/// only looked up. Nothing iterates these sets into a result.
pub type FastHash = foldhash::fast::FixedState;

pub mod bundle;
pub mod decide;
pub mod doc;
pub mod index;
pub mod issuers;
pub mod quarantine;
pub mod routes;
pub mod schema;
pub mod template;
pub mod view;

pub use automerge::{ActorId, Change, ChangeHash, ScalarValue, legacy};
pub use bundle::{BundleContent, BundleError, ParsedBundle, TemplateLink};
pub use decide::{
    Decision, Request, RequestEntityError, check_request_entities, decide, decide_at, decide_full,
};
pub use doc::{Applied, CrdtError, MAX_CHANGE_TIME, PolicyDoc, Refusal};
pub use index::{IndexedPolicy, ScopeIndex};
pub use quarantine::{QuarantineHit, QuarantineRecord, QuarantineRules};
pub use schema::{ChangeSummary, Path, SchemaViolation, Section};
pub use view::{
    BundleState, Conflict, ConflictSide, Gateway, OpRef, PolicyView, Revocation, ViewSummary,
};
