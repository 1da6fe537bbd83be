//! The report's unit tests: assembling, controls, HTML escaping, formats.

use std::path::Path;

use super::*;
use crate::control::evidence::{
    BundleEvidence, CertEvidence, ChangeEvidence, NodeEvidence, OperatorEvidence, PolicyEvidence,
    QuarantineEvidence, QuarantineLimitsEvidence, RevocationEvidence, RootEvidence, SignerEvidence,
};
use crate::dashboard::DecisionCounts;

fn evidence() -> NodeEvidence {
    let alice = SignerEvidence {
        name: Some("alice".into()),
        key: "ed25519.A".into(),
        roles: vec!["policy".into(), "revoke".into()],
    };
    NodeEvidence {
        // The node's status as `GET /v1/status` gives it.
        status: serde_json::from_value(serde_json::json!({
            "node_id": "12D3KooWnode",
            "listen": [],
            "peers": [],
            "heads": ["ab"],
            "digest": "d1",
            "bundles": [],
            "revocations": 1,
            "conflicts": [],
            "updates": 2,
            "held": 0,
            "last_sync_ms_ago": null,
            "trust_root": {"version": 1, "expires": 4_000_000_000u64, "expired": false},
            "stats": {"applied": 0, "refused": {}, "sync_rounds": 0, "synced": 0, "bans": 0},
        }))
        .unwrap(),
        root: RootEvidence {
            version: 1,
            expires: 4_000_000_000,
            expired: false,
            root_keys: vec!["ed25519.R".into()],
            root_threshold: 1,
            policy_threshold: 2,
            revoke_threshold: 1,
            quarantine: QuarantineLimitsEvidence {
                allowed: false,
                max_ttl_secs: 3600,
                max_per_node_per_hour: 5,
            },
            operators: vec![OperatorEvidence {
                name: "alice".into(),
                key: "ed25519.A".into(),
                roles: vec!["policy".into(), "revoke".into()],
            }],
        },
        bundles: vec![BundleEvidence {
            name: "web<script>".into(),
            description: None,
            policies: vec![PolicyEvidence {
                id: "p".into(),
                text: "permit(principal, action, resource) when { \"<script>alert(1)</script>\" == \"x\" };".into(),
            }],
            policy_count: 1,
            error: None,
            conflicts: 0,
            signers: vec![alice.clone()],
            changes: vec![ChangeEvidence {
                hash: "c1".into(),
                time: Some(1_700_000_000),
                signers: vec!["alice".into()],
            }],
        }],
        revocations: vec![RevocationEvidence {
            subject: "User::\"mallory\"".into(),
            reason: "<script>alert('x')</script> & more".into(),
            signers: vec![alice],
            time: Some(1_700_000_100),
            changes: vec![ChangeEvidence {
                hash: "c2".into(),
                time: Some(1_700_000_100),
                signers: vec!["alice".into()],
            }],
        }],
        quarantines: vec![],
    }
}

fn cert(valid: bool) -> CertEvidence {
    CertEvidence {
        node_id: "12D3KooWnode".into(),
        name: "n1".into(),
        issuer: "ed25519.A".into(),
        issuer_name: Some("alice".into()),
        issued: 1_700_000_000,
        expires: 4_000_000_000,
        valid,
        error: None,
    }
}

fn report() -> Report {
    Report::from_node(
        evidence(),
        Some(cert(true)),
        DecisionCounts {
            allow: 3,
            deny: 1,
            revoked: 2,
        },
        false,
        1_700_000_200,
    )
}

fn status(r: &Report, id: &str) -> ControlStatus {
    r.controls.iter().find(|c| c.id == id).unwrap().status
}

#[test]
fn the_html_escapes_every_string_from_the_evidence() {
    let html = render_html(&report());
    assert!(!html.contains("<script"), "unescaped script tag");
    assert!(html.contains("&lt;script&gt;alert('x')&lt;/script&gt; &amp; more"));
    assert!(html.contains("web&lt;script&gt;"));
    assert!(html.contains("User::&quot;mallory&quot;"));
    for id in [
        "CC6.1", "CC6.2", "CC6.3", "CC7.2", "CC7.3", "A.5.15", "A.8.15", "A.8.16",
    ] {
        assert!(html.contains(id), "{id}");
    }
    assert!(html.contains("2023-11-14T22:13:20Z"), "a readable time");
}

#[test]
fn controls_follow_the_data() {
    let r = report();
    assert_eq!(r.controls.len(), 8);
    assert_eq!(status(&r, "CC6.1"), ControlStatus::Met);
    assert_eq!(status(&r, "CC6.2"), ControlStatus::Met);
    assert_eq!(status(&r, "CC6.3"), ControlStatus::Met);
    assert_eq!(status(&r, "A.5.15"), ControlStatus::Met);
    // No audit trail: logging is not available, monitoring partial.
    assert_eq!(status(&r, "A.8.15"), ControlStatus::NotAvailable);
    assert_eq!(status(&r, "A.8.16"), ControlStatus::Partial);
    assert_eq!(status(&r, "CC7.2"), ControlStatus::Partial);
    assert_eq!(status(&r, "CC7.3"), ControlStatus::Partial);
    assert!(r.notes.iter().any(|n| n.contains("no audit trail")));

    // A verified audit chain.
    let mut ok = r.clone();
    ok.set_audit(Some(AuditEvidence {
        status: None,
        verify: AuditVerify {
            ok: true,
            records: 10,
            checkpoints: 1,
            first_bad: None,
            error: None,
        },
    }));
    for id in ["A.8.15", "A.8.16", "CC7.2", "CC7.3"] {
        assert_eq!(status(&ok, id), ControlStatus::Met, "{id}");
    }
    assert!(ok.notes.is_empty(), "{:?}", ok.notes);

    // A broken one.
    let mut bad = r.clone();
    bad.set_audit(Some(AuditEvidence {
        status: None,
        verify: AuditVerify {
            ok: false,
            records: 10,
            checkpoints: 1,
            first_bad: Some(4),
            error: Some("hash mismatch".into()),
        },
    }));
    assert_eq!(status(&bad, "A.8.15"), ControlStatus::NotMet);
    assert!(bad.controls[6].why.contains("record 4"));

    // No bundles, one signer enough, no certificate, stale.
    let mut e = evidence();
    e.bundles.clear();
    e.root.policy_threshold = 1;
    let thin = Report::from_node(e, None, DecisionCounts::default(), true, 1);
    assert_eq!(status(&thin, "CC6.1"), ControlStatus::NotAvailable);
    assert_eq!(status(&thin, "A.5.15"), ControlStatus::NotAvailable);
    assert_eq!(status(&thin, "CC6.2"), ControlStatus::Partial);
    assert_eq!(status(&thin, "CC6.3"), ControlStatus::Partial);
    assert_eq!(status(&thin, "A.8.16"), ControlStatus::Partial);

    // A change without a recorded time.
    let mut e = evidence();
    e.revocations[0].time = None;
    e.revocations[0].changes[0].time = None;
    let untimed = Report::from_node(e, Some(cert(true)), DecisionCounts::default(), false, 1);
    assert!(untimed.notes.iter().any(|n| n.contains("recorded no time")));
    assert!(render_html(&untimed).contains("time not recorded"));
}

#[test]
fn the_timeline_is_ordered_by_time() {
    let mut e = evidence();
    let mut early = e.revocations[0].clone();
    early.subject = "User::\"early\"".into();
    early.time = Some(5);
    let mut unknown = e.revocations[0].clone();
    unknown.subject = "User::\"unknown\"".into();
    unknown.time = None;
    e.revocations.push(unknown);
    e.revocations.push(early);
    e.quarantines.push(QuarantineEvidence {
        subject: "User::\"q\"".into(),
        record: serde_json::json!({"reason": "scan"}),
        reason: Some("scan".into()),
        signers: vec![],
        time: Some(6),
    });
    let r = Report::from_node(e, None, DecisionCounts::default(), false, 1);
    let order: Vec<&str> = r.timeline.iter().map(|t| t.subject.as_str()).collect();
    assert_eq!(
        order,
        [
            "User::\"early\"",
            "User::\"q\"",
            "User::\"mallory\"",
            "User::\"unknown\""
        ]
    );
    assert_eq!(r.timeline[1].kind, "quarantine");
}

#[test]
fn the_extension_chooses_the_format() {
    assert_eq!(out_format(Path::new("r.html")), Ok(OutFormat::Html));
    assert_eq!(out_format(Path::new("R.HTM")), Ok(OutFormat::Html));
    assert_eq!(out_format(Path::new("a/r.json")), Ok(OutFormat::Json));
    assert!(
        out_format(Path::new("r.pdf"))
            .unwrap_err()
            .contains(".html or .json")
    );
    assert!(out_format(Path::new("report")).is_err());
}

#[test]
fn the_json_round_trips() {
    let r = report();
    let text = render(&r, OutFormat::Json);
    let back: Report = serde_json::from_str(&text).unwrap();
    assert_eq!(back, r);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["format"], FORMAT);
    assert_eq!(v["controls"][6]["status"], "not available");
    assert!(v["audit"].is_null());
}
