//! Shared helpers for the end-to-end suites.

pub mod mesh;
pub mod netns;
