//! The weft node: the daemon that drives the replica on libp2p and serves the
//! HTTP API, and the library behind the `weft` command line.

pub mod admin;
pub mod anomaly;
pub mod api;
pub mod audit;
pub mod bearer;
pub mod client;
pub mod clock;
pub mod control;
pub mod daemon;
pub mod dashboard;
pub mod decision_id;
pub mod decision_log;
pub mod demo;
pub mod detect;
pub mod extauthz;
pub mod identity;
pub mod keyfile;
pub mod layout;
pub mod limits;
pub mod liveness;
pub mod metrics;
pub mod reload;
pub mod report;
pub mod respond;
pub mod rootchain;
pub mod settings;
#[cfg(feature = "sim")]
pub mod sim;
pub mod status;
pub mod store;
pub mod swarm;
pub mod task;
pub mod telemetry;
pub mod util;
