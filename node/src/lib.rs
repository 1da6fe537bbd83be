//! The weft node library.

pub mod keyfile;
