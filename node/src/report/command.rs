//! `weft report`: its arguments, fetching the evidence from a node through
//! [`crate::client`], and writing the JSON document or the HTML page.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, anyhow};
use clap::Args;

use super::html::render_html;
use super::model::{AuditEvidence, AuditVerify, ControlStatus, Report};
use crate::client::NodeClient;

/// What `weft report` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutFormat {
    /// One HTML page.
    Html,
    /// The JSON document.
    Json,
}

/// The format named by `path`'s extension: `.html` / `.htm` or `.json`.
pub fn out_format(path: &Path) -> Result<OutFormat, String> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("html" | "htm") => Ok(OutFormat::Html),
        Some("json") => Ok(OutFormat::Json),
        _ => Err(format!(
            "{} must end in .html or .json: the extension chooses the format",
            path.display()
        )),
    }
}

fn parse_out(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    out_format(&path)?;
    Ok(path)
}

/// `weft report`
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The node's API, like http://127.0.0.1:7100.
    #[arg(long, value_name = "URL")]
    pub node: String,
    /// Where to write the report: FILE.html (a readable page) or FILE.json
    /// (the evidence document); the extension chooses.
    #[arg(long, value_name = "FILE", value_parser = parse_out)]
    pub out: PathBuf,
    /// Print a JSON summary {"out", "format", "controls": {ID: STATUS}} instead of text.
    #[arg(long)]
    pub json: bool,
    /// How to reach the node's API over TLS, and with which credential.
    #[command(flatten)]
    pub client: crate::client::ClientArgs,
}

/// The long help of `weft report`.
pub const REPORT_LONG_ABOUT: &str = "Write a compliance report of a node's state.\n\n\
    Fetches the evidence from the node (GET /v1/report, and GET /v1/audit/status and \
    /v1/audit/verify when the node keeps an audit trail) and writes FILE.html, one \
    self-contained print-friendly page, or FILE.json, the same evidence as a stable JSON \
    document (format weft-report/v1). It holds the policies in force per bundle with who \
    signed them and when, the trust root and operator keys with their roles, the node's \
    certificate, the revocation and quarantine timeline, decision statistics, the audit \
    chain's verification, and a controls table mapping the evidence to SOC 2 CC6.1, \
    CC6.2, CC6.3, CC7.2, CC7.3 and ISO 27001 A.5.15, A.8.15, A.8.16 (met, partial, \
    not met or not available, derived from the data).\n\n\
    Example:\n  weft report --node http://127.0.0.1:7100 --out report.html";

/// Fetches the report of the node at `node` (`http://HOST:PORT`), with the
/// audit chain when the node has one.
pub fn fetch(node: &str, auth: &crate::client::ClientArgs) -> Result<Report> {
    let client = NodeClient::new(node, auth)?;
    let mut report: Report = client.get("/v1/report")?.json("a report")?;
    report.node.url = Some(client.base().to_owned());
    let verify = client
        .get("/v1/audit/verify")
        .ok()
        .and_then(|a| a.json::<AuditVerify>("an audit verification").ok());
    let audit = verify.map(|verify| AuditEvidence {
        status: client
            .get("/v1/audit/status")
            .ok()
            .and_then(|a| a.json("an audit status").ok()),
        verify,
    });
    report.set_audit(audit);
    Ok(report)
}

/// The report in the format `format`.
pub fn render(report: &Report, format: OutFormat) -> String {
    match format {
        OutFormat::Html => render_html(report),
        OutFormat::Json => {
            let mut s = serde_json::to_string_pretty(report).expect("a report serializes to JSON");
            s.push('\n');
            s
        }
    }
}

/// Runs `weft report`.
pub fn report(args: ReportArgs) -> Result<ExitCode> {
    let format = out_format(&args.out).map_err(|e| anyhow!(e))?;
    let report = fetch(&args.node, &args.client)?;
    std::fs::write(&args.out, render(&report, format))
        .map_err(|e| anyhow!("cannot write {}: {e}", args.out.display()))?;
    let count = |s: ControlStatus| report.controls.iter().filter(|c| c.status == s).count();
    if args.json {
        let controls: BTreeMap<&str, &str> = report
            .controls
            .iter()
            .map(|c| (c.id.as_str(), c.status.as_str()))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "out": args.out.display().to_string(),
                "format": match format { OutFormat::Html => "html", OutFormat::Json => "json" },
                "controls": controls,
            })
        );
    } else {
        eprintln!(
            "report on node {}: {} bundle(s), {} revocation(s), {} quarantine(s); controls: {} met, {} partial, {} not met, {} not available",
            report.node.node_id,
            report.bundles.len(),
            report.revocations.len(),
            report.quarantines.len(),
            count(ControlStatus::Met),
            count(ControlStatus::Partial),
            count(ControlStatus::NotMet),
            count(ControlStatus::NotAvailable),
        );
        println!("{}", args.out.display());
    }
    Ok(ExitCode::SUCCESS)
}
