//! Weft's deterministic simulator: many [`weft_protocol::replica::Replica`]s
//! in virtual time, on a modelled network, with faults, checked after every
//! run.
//!
//! - [`scenario`]: what to run, as TOML (built-ins ship in `scenarios/`).
//! - [`engine`]: the discrete-event loop: one event queue ordered by
//!   `(time, sequence)`, one seeded ChaCha8 RNG for everything, no wall clock,
//!   no threads, no tokio, no libp2p, no sled.
//! - [`gossip`]: the gossipsub-like overlay that stands in for libp2p.
//! - [`payload`]: the two payload modes (full: real automerge documents and
//!   ed25519 signatures; light: signed ids) behind one trait.
//! - [`light`]: the light replica state.
//! - [`check`]: the invariant checkers (convergence, authenticity, revoke wins,
//!   durability).
//! - [`report`]: `report.json` and the SVG plots.
//!
//! The same seed and inputs give the same trace digest and the same report,
//! byte for byte: every collection whose iteration order can reach a result is
//! a `BTreeMap`/`BTreeSet` (hash maps only serve lookups), and nothing reads
//! the clock.

pub mod check;
pub mod engine;
pub mod gossip;
pub mod light;
pub mod payload;
pub mod report;
pub mod scenario;

pub use engine::{Progress, run_scenario};
pub use report::Report;
pub use scenario::{Mode, Scenario};

/// Why a simulation could not run (an invariant failing is not an error: it
/// is a result, in [`Report::invariants`]).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The scenario file does not parse or makes no sense.
    #[error("invalid scenario: {0}")]
    Scenario(String),
    /// No built-in scenario has this name and no such file exists.
    #[error(
        "unknown scenario `{0}`: not a built-in (see `weft sim --list`) and not a readable file"
    )]
    UnknownScenario(String),
    /// Writing the report or the plots failed.
    #[error("cannot write the report to {path}: {reason}")]
    Report {
        /// Where.
        path: String,
        /// Why.
        reason: String,
    },
    /// Building the fixtures (keys, trust root, updates) failed.
    #[error("cannot build the simulated mesh: {0}")]
    Fixture(String),
}
