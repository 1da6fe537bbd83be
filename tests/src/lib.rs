//! Shared helpers for the end-to-end suites.

pub mod delay;
pub mod hostile;
pub mod mesh;
pub mod netns;
