//! Shared helpers for the end-to-end suites.

pub mod corpus;
pub mod delay;
pub mod hostile;
pub mod inputs;
pub mod mesh;
pub mod metrics;
pub mod nat;
pub mod netns;
pub mod proxy;
