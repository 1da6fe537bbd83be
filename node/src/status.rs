//! `weft status`: a running node's state (`GET /v1/status`), as the node's
//! JSON or as a readable summary.

use std::process::ExitCode;

use anyhow::{Result, anyhow};
use clap::Args;
use weft_protocol::time::format_timestamp;

use crate::client::NodeClient;
use crate::control::Status;

/// `weft status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The node's API, like http://127.0.0.1:7100.
    #[arg(long, value_name = "URL")]
    pub node: String,
    /// Print the node's status JSON as it is.
    #[arg(long)]
    pub json: bool,
    /// How to reach the node's API over TLS, and with which credential.
    #[command(flatten)]
    pub client: crate::client::ClientArgs,
}

/// Runs `weft status`.
pub fn status(args: StatusArgs) -> Result<ExitCode> {
    let client = NodeClient::new(&args.node, &args.client)?;
    let body = client.get("/v1/status")?.text()?;
    if args.json {
        println!("{}", body.trim());
        return Ok(ExitCode::SUCCESS);
    }
    let s: Status = serde_json::from_str(&body).map_err(|e| {
        anyhow!(
            "the node at {} sent a status this weft does not understand: {e}",
            client.base()
        )
    })?;
    print!("{}", render_status(&s));
    Ok(ExitCode::SUCCESS)
}

/// The reachability line, and the relay lines when there is something
/// to say: the relays this node listens through, what it relays for
/// others, its hole punches.
fn render_reachability(s: &Status) -> String {
    let r = &s.relay;
    let mut out = format!(
        "  reachable:   {}{}\n",
        if s.reachability.is_empty() {
            "unknown"
        } else {
            &s.reachability
        },
        match r.via.len() {
            0 => String::new(),
            n => format!(", through {n} relay(s)"),
        }
    );
    for a in &r.via {
        out += &format!("    via {a}\n");
    }
    if r.serving {
        out += &format!(
            "  relaying:    {} reservation(s), {} circuit(s); refused {} reservation(s), {} circuit(s)\n",
            r.reservations, r.circuits, r.refused_reservations, r.refused_circuits
        );
    }
    if r.hole_punches > 0 || r.hole_punch_failures > 0 {
        out += &format!(
            "  hole punch:  {} succeeded, {} failed{}\n",
            r.hole_punches,
            r.hole_punch_failures,
            r.last_hole_punch_error
                .as_ref()
                .map(|e| format!(" (last: {e})"))
                .unwrap_or_default()
        );
    }
    out
}

/// The readable form of a status.
pub fn render_status(s: &Status) -> String {
    let mut out = String::new();
    out += &format!("node {}\n", s.node_id);
    let expiry = format_timestamp(s.trust_root.expires);
    out += &format!(
        "  trust root:  version {}, expires {}{}\n",
        s.trust_root.version,
        expiry,
        if s.trust_root.expired {
            " (EXPIRED: still enforced; rotate it now)"
        } else {
            ""
        }
    );
    out += &format!(
        "  state:       {} update(s), {} held, digest {}\n",
        s.updates,
        s.held,
        s.digest.chars().take(16).collect::<String>()
    );
    out += &format!("  heads:       {}\n", s.heads.len());
    out += &format!(
        "  last sync:   {}\n",
        match s.last_sync_ms_ago {
            Some(ms) => format!("{:.1}s ago", ms as f64 / 1000.0),
            None => "never".into(),
        }
    );
    let admitted = s.peers.iter().filter(|p| p.admitted).count();
    let relayed_only = s
        .peers
        .iter()
        .filter(|p| p.route.as_deref() == Some("relayed"))
        .count();
    out += &format!(
        "  peers:       {} connected, {} admitted, {} reachable only through a relay\n",
        s.peers.len(),
        admitted,
        relayed_only
    );
    for p in &s.peers {
        out += &format!(
            "    {}  {}{}{}{}{}\n",
            p.node_id,
            if p.admitted {
                "admitted"
            } else {
                "NOT admitted"
            },
            if p.update_mesh {
                ", in update mesh"
            } else {
                ""
            },
            match (&p.transport, &p.route, &p.address) {
                (Some(t), Some(r), Some(a)) => format!("  {t} {r} {a}"),
                _ => String::new(),
            },
            p.rtt_ms
                .map(|ms| format!("  rtt {ms:.1} ms"))
                .unwrap_or_default(),
            p.score
                .map(|x| format!("  score {x:.1}"))
                .unwrap_or_default()
        );
    }
    out += &render_reachability(s);
    out += &format!("  bundles:     {}\n", s.bundles.len());
    for b in &s.bundles {
        out += &format!(
            "    {}  {} polic{}, signed by {}{}{}\n",
            b.name,
            b.policies,
            if b.policies == 1 { "y" } else { "ies" },
            if b.signers.is_empty() {
                "nobody known".to_owned()
            } else {
                b.signers.join(", ")
            },
            if b.conflicts > 0 {
                format!(", {} conflict(s)", b.conflicts)
            } else {
                String::new()
            },
            b.error
                .as_ref()
                .map(|e| format!("\n      ERROR: {e}"))
                .unwrap_or_default()
        );
    }
    out += &format!("  revocations: {}\n", s.revocations);
    out += &format!(
        "  traffic:     {} B in, {} B out\n",
        s.stats.bytes_in, s.stats.bytes_out
    );
    out += &format!(
        "  audit:       {} record(s), head {}, {}{}{}\n",
        s.audit.records,
        s.audit.head.chars().take(16).collect::<String>(),
        match &s.audit.last_checkpoint {
            Some(cp) => format!(
                "last checkpoint at record {} ({})",
                cp.seq,
                format_timestamp(cp.at_ms / 1000)
            ),
            None => "no checkpoint yet".to_owned(),
        },
        if s.audit.dropped > 0 {
            format!(
                ", {} event(s) DROPPED (queue full; recorded in the chain)",
                s.audit.dropped
            )
        } else {
            String::new()
        },
        if s.audit.waits > 0 {
            format!(
                ", {} decision(s) waited for room in the queue",
                s.audit.waits
            )
        } else {
            String::new()
        }
    );
    out += &format!(
        "  anomalies:   {} alert(s), {} quarantine(s) issued here, {} in force in the mesh{}\n",
        s.anomalies.alerts,
        s.anomalies.quarantines_issued,
        s.anomalies.active_quarantines,
        if s.anomalies.quarantines_refused > 0 {
            format!(
                ", {} not issued (trust root limits)",
                s.anomalies.quarantines_refused
            )
        } else {
            String::new()
        }
    );
    if let Some(m) = &s.anomalies.mesh {
        out += &format!(
            "  mesh view:   {} site(s) heard from, {} cell(s) held, {} alert(s); summaries: {} published, {} accepted, {} refused, {} ignored\n",
            m.sites,
            m.cells,
            m.alerts,
            m.summaries.published,
            m.summaries.accepted,
            m.summaries.refused,
            m.summaries.rate_limited
                + m.summaries.out_of_window
                + m.summaries.full
                + m.summaries.ignored,
        );
    }
    if !s.stats.refused.is_empty() {
        let refused: Vec<String> = s
            .stats
            .refused
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        out += &format!("  refused:     {}\n", refused.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_counts_peers_reachable_only_through_a_relay() {
        let peer = |route: &str, punched: bool| {
            serde_json::json!({
                "node_id": "n", "peer_id": "n", "admitted": true, "score": null,
                "transport": if route == "relayed" { "relayed" } else { "quic" },
                "address": "/ip4/203.0.113.9/udp/7101/quic-v1", "route": route,
                "hole_punched": punched,
            })
        };
        let status: Status = serde_json::from_value(serde_json::json!({
            "node_id": "me", "listen": [], "heads": [], "digest": "", "bundles": [],
            "revocations": 0, "conflicts": [], "updates": 0, "held": 0,
            "last_sync_ms_ago": null,
            "trust_root": {"version": 1, "expires": 0, "expired": false},
            "stats": {"applied": 0, "refused": {}, "sync_rounds": 0, "synced": 0, "bans": 0},
            "peers": [peer("relayed", false), peer("relayed", false),
                      peer("direct after hole punch", true), peer("direct", false)],
            "reachability": "private",
            "relay": {"serving": true, "reservations": 3, "circuits": 2,
                      "refused_reservations": 1, "refused_circuits": 4,
                      "via": ["/ip4/203.0.113.9/udp/7101/quic-v1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit"],
                      "hole_punches": 1, "hole_punch_failures": 0,
                      "last_hole_punch_error": null},
        }))
        .unwrap();
        let text = render_status(&status);
        assert!(
            text.contains("4 connected, 4 admitted, 2 reachable only through a relay"),
            "{text}"
        );
        assert!(text.contains("quic direct after hole punch"), "{text}");
        assert!(
            text.contains("reachable:   private, through 1 relay(s)"),
            "{text}"
        );
        assert!(
            text.contains("relaying:    3 reservation(s), 2 circuit(s); refused 1 reservation(s), 4 circuit(s)"),
            "{text}"
        );
        assert!(
            text.contains("hole punch:  1 succeeded, 0 failed"),
            "{text}"
        );
    }

    #[test]
    fn the_mesh_view_has_a_line_when_it_is_on() {
        let mut status: Status = serde_json::from_value(serde_json::json!({
            "node_id": "me", "listen": [], "heads": [], "digest": "", "bundles": [],
            "revocations": 0, "conflicts": [], "updates": 0, "held": 0,
            "last_sync_ms_ago": null, "peers": [],
            "trust_root": {"version": 1, "expires": 0, "expired": false},
            "stats": {"applied": 0, "refused": {}, "sync_rounds": 0, "synced": 0, "bans": 0},
            "anomalies": {"alerts": 2, "quarantines_issued": 1, "quarantines_refused": 0,
                          "dropped": 0, "active_quarantines": 1,
                          "mesh": {"sites": 3, "cells": 41, "histories": 12, "alerts": 1,
                                   "summaries": {"published": 9, "unpublished": 0,
                                                 "accepted": 18, "refused": 2,
                                                 "rate_limited": 1, "out_of_window": 1,
                                                 "full": 0, "ignored": 1}}},
        }))
        .unwrap();
        let text = render_status(&status);
        assert!(
            text.contains("mesh view:   3 site(s) heard from, 41 cell(s) held, 1 alert(s); summaries: 9 published, 18 accepted, 2 refused, 3 ignored"),
            "{text}"
        );
        status.anomalies.mesh = None;
        assert!(!render_status(&status).contains("mesh view"));
    }
}
