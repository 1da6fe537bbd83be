//! Weft's replicated data model.
//!
//! The mesh state is one automerge document holding policy bundles,
//! revocations and quarantines ([`schema`]). Every change to it is one
//! operator-authored automerge change; this crate builds such changes
//! ([`PolicyDoc::build_bundle`], [`PolicyDoc::build_revoke`],
//! [`PolicyDoc::build_reinstate`]), says which paths a change touches before
//! it is applied ([`PolicyDoc::summarize`]), applies changes idempotently,
//! and keeps a materialized [`PolicyView`] up to date incrementally. The pure
//! [`decide`] answers authorization requests against a view.
//!
//! The crate has no signatures, no I/O, no clock and no async: time comes in
//! as an argument, and `protocol` decides who may write what.

pub mod bundle;
pub mod decide;
pub mod doc;
pub mod index;
pub mod quarantine;
pub mod schema;
pub mod view;

pub use automerge::{ActorId, Change, ChangeHash, ScalarValue, legacy};
pub use bundle::{BundleContent, BundleError, ParsedBundle, TemplateLink};
pub use decide::{Decision, Request, decide, decide_at, decide_full};
pub use doc::{Applied, CrdtError, PolicyDoc, Refusal};
pub use index::{IndexedPolicy, ScopeIndex};
pub use quarantine::{QuarantineHit, QuarantineRecord, QuarantineRules};
pub use schema::{ChangeSummary, Path, SchemaViolation, Section};
pub use view::{BundleState, Conflict, ConflictSide, PolicyView, Revocation, ViewSummary};
