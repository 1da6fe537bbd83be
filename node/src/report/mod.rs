//! The compliance report: `weft report --node URL --out FILE.html|FILE.json`.
//!
//! A node answers `GET /v1/report` with the evidence it holds (a [`Report`]
//! whose `audit` is `null`); the CLI adds the audit chain's status and
//! verification from `GET /v1/audit/status` and `GET /v1/audit/verify` when
//! the node has them, derives the controls table, and writes either the JSON
//! document or one self-contained, print-friendly HTML page.
//!
//! # The JSON document (`"format": "weft-report/v1"`)
//! Fields are only ever added. Times are Unix seconds; `null` where a time
//! was not recorded.
//!
//! | field | what it holds |
//! |---|---|
//! | `format`, `generated_at` | `"weft-report/v1"`; when the node assembled the evidence |
//! | `node` | `node_id`, `url`, `digest`, `heads`, `updates`, `held`, `last_sync_ms_ago`, `stale` |
//! | `trust_root` | `version`, `expires`, `expired`, `root_keys`, `root_threshold`, `policy_threshold`, `revoke_threshold`, `quarantine` {`allowed`, `max_ttl_secs`, `max_per_node_per_hour`}, `operators` [{`name`, `key`, `roles`}] |
//! | `certificates` | `node` (this node's: `node_id`, `name`, `issuer`, `issuer_name`, `issued`, `expires`, `valid`, `error`, or `null`), `peers` [{`node_id`, `admitted`, `name`, `expires`}] (the certificate each connected peer was admitted with), `note` |
//! | `bundles` | [{`name`, `description`, `policies` [{`id`, `text`}], `policy_count`, `error`, `conflicts`, `signers` [{`name`, `key`, `roles`}], `changes` [{`hash`, `time`, `signers`}]}] |
//! | `revocations` | [{`subject`, `reason`, `signers`, `time`, `changes`}] |
//! | `quarantines` | [{`subject`, `record`, `reason`, `signers`, `time`}] |
//! | `timeline` | revocations and quarantines by time (unrecorded times last): [{`time`, `kind`, `subject`, `reason`, `signers`}] |
//! | `decisions` | `allow`, `deny`, `revoked`, `total` since the node started, and `updates_applied`, `updates_refused` {reason: n}, `sync_rounds`, `synced`, `bans`, `conflicts` |
//! | `audit` | `null` when the node has no audit trail, else {`status`: `GET /v1/audit/status` or `null`, `verify`: `GET /v1/audit/verify`} |
//! | `notes` | sentences on what is missing or partial |
//! | `controls` | [{`id`, `framework`, `title`, `asks`, `evidence` [section names], `status`: `met`\|`partial`\|`not met`\|`not available`, `why`}], one per control: SOC 2 CC6.1, CC6.2, CC6.3, CC7.2, CC7.3; ISO 27001 A.5.15, A.8.15, A.8.16 |
//!
//! # The files
//! - `model`: the document's types.
//! - `build`: a report from a node's evidence, the notes, the audit chain.
//! - `controls`: the controls table, one function per control.
//! - `html`: the HTML page (a maud template: every string escaped).
//! - `command`: `weft report`, its arguments, fetching and writing.

mod build;
mod command;
mod controls;
mod html;
mod model;
#[cfg(test)]
mod tests;

pub use command::{OutFormat, REPORT_LONG_ABOUT, ReportArgs, fetch, out_format, render, report};
pub use controls::controls;
pub use html::render_html;
pub use model::{
    AuditEvidence, AuditVerify, Certificates, Control, ControlStatus, DecisionStats, FORMAT,
    NodeSummary, PeerCert, Report, TimelineEntry,
};
