//! Tests of the detector on small generated traces.

use std::sync::OnceLock;

use super::traces::{AttackKind, Trace, TraceConfig, generate};

use super::eval::{EvalConfig, evaluate};
use super::*;

fn trace() -> &'static Trace {
    static T: OnceLock<Trace> = OnceLock::new();
    T.get_or_init(|| {
        generate(&TraceConfig {
            seed: 11,
            principals: 150,
            hours: 24,
            attacks_per_kind: Some(3),
            ..TraceConfig::default()
        })
    })
}

fn alerts(t: &Trace, seed: u64) -> Vec<Alert> {
    let mut d = Detector::new(DetectorConfig::default(), seed);
    t.events
        .iter()
        .filter_map(|e| d.observe(&e.decision))
        .collect()
}

fn all_alerts() -> &'static Vec<Alert> {
    static A: OnceLock<Vec<Alert>> = OnceLock::new();
    A.get_or_init(|| alerts(trace(), 1))
}

/// The first alert on the principal of an incident, within it (plus 5 min).
fn alert_for(kind: AttackKind) -> Vec<&'static Alert> {
    let t = trace();
    t.incidents
        .iter()
        .filter(|i| i.kind == kind)
        .filter_map(|i| {
            all_alerts().iter().find(|a| {
                a.principal == i.principal && a.at_ms >= i.start_ms && a.at_ms <= i.end_ms + 300_000
            })
        })
        .collect()
}

#[test]
fn detect_every_attack_kind_on_a_small_trace() {
    for kind in AttackKind::ALL {
        let n = trace().incidents.iter().filter(|i| i.kind == kind).count();
        let found = alert_for(kind);
        assert!(
            found.len() >= n,
            "{kind:?}: {} of {n} detected",
            found.len()
        );
    }
}

#[test]
fn detect_explanations_name_the_driving_feature() {
    let expect: [(AttackKind, &[&str]); 5] = [
        // Stuffing comes from sites all over the mesh, so it is often the
        // first denied request from a site the principal never used that
        // alerts, before failures pile up.
        (
            AttackKind::CredentialStuffing,
            &["token_failures", "new_sites"],
        ),
        (AttackKind::PrivilegeProbing, &["deny_ratio"]),
        (
            AttackKind::BulkExfiltration,
            &["rate", "distinct_resources", "new_resources_1h"],
        ),
        (AttackKind::LateralMovement, &["new_sites", "new_pairs"]),
        (AttackKind::LowAndSlow, &["new_resources_1h"]),
    ];
    for (kind, names) in expect {
        for a in alert_for(kind) {
            let top: Vec<&str> = a.features.iter().take(3).map(|f| f.name.as_str()).collect();
            assert!(
                names.iter().any(|n| top.contains(n)),
                "{kind:?}: top features {top:?}, expected one of {names:?}: {a:#?}"
            );
            assert!(!a.evidence.is_empty() && !a.reason.is_empty());
            assert!(a.window_start_ms < a.window_end_ms);
            assert!(a.score >= DetectorConfig::default().threshold || a.floor.is_some());
            let f = &a.features[0];
            assert!(f.value > f.baseline, "{f:?}");
        }
    }
}

#[test]
fn detect_no_alert_on_a_new_employee_a_batch_job_or_a_traveller() {
    let t = trace();
    let from = t.header.start_ms + t.header.warmup_ms;
    let kinds: std::collections::BTreeSet<_> =
        t.surprises.iter().map(|s| s.kind.as_str()).collect();
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["batch_job", "new_employee", "traveller"]
    );
    for s in &t.surprises {
        let hit: Vec<_> = all_alerts()
            .iter()
            .filter(|a| a.principal == s.principal && a.at_ms >= from)
            .collect();
        assert!(hit.is_empty(), "{}: {hit:#?}", s.kind);
    }
}

#[test]
fn detect_false_positives_stay_rare() {
    let r = evaluate(trace(), &EvalConfig::default());
    assert!(
        r.detector.fp_per_1000_principals_per_day <= 15.0,
        "{:#?}",
        r.detector
    );
}

#[test]
fn detect_same_seed_same_alerts() {
    let t = generate(&TraceConfig {
        seed: 5,
        principals: 60,
        hours: 24,
        attacks_per_kind: Some(1),
        ..TraceConfig::default()
    });
    let a = alerts(&t, 7);
    let b = alerts(&t, 7);
    assert!(!a.is_empty());
    assert_eq!(a, b);
}

fn ev(at_ms: u64, principal: &str, resource: &str) -> DecisionEvent {
    DecisionEvent {
        at_ms,
        principal: principal.into(),
        action: "Action::\"view\"".into(),
        resource: resource.into(),
        allow: true,
        token_failed: false,
        site: Some("site-0".into()),
    }
}

#[test]
fn detect_principal_cap_evicts_least_recently_seen() {
    let cfg = DetectorConfig {
        max_principals: 10,
        ..DetectorConfig::default()
    };
    let mut d = Detector::new(cfg, 1);
    for i in 0..100u64 {
        d.observe(&ev(i * 1000, &format!("User::\"p{i}\""), "Doc::\"a\""));
        // p0 stays recent, so it survives.
        d.observe(&ev(i * 1000 + 1, "User::\"p0\"", "Doc::\"a\""));
    }
    assert_eq!(d.tracked(), 10);
    assert_eq!(d.evicted(), 90);
    assert!(d.principals.contains_key("User::\"p0\""));
    assert!(d.principals.contains_key("User::\"p99\""));
    assert!(!d.principals.contains_key("User::\"p1\""));
    assert_eq!(d.by_recency.len(), 10);
}

#[test]
fn detect_memory_per_principal_is_bounded() {
    let mut d = Detector::new(DetectorConfig::default(), 1);
    d.observe(&ev(0, "User::\"busy\"", "Doc::\"0\""));
    let one = d.memory_bytes_estimate();
    // 200,000 requests over distinct resources, actions and sites.
    for i in 1..200_000u64 {
        let mut e = ev(i * 50, "User::\"busy\"", &format!("Doc::\"{i}\""));
        e.action = format!("Action::\"a{}\"", i % 1000);
        e.site = Some(format!("site-{}", i % 500));
        e.allow = i % 3 != 0;
        d.observe(&e);
    }
    assert_eq!(d.memory_bytes_estimate(), one);
    assert_eq!(d.tracked(), 1);
    let per_principal = one - d.trees.memory_bytes();
    assert!(per_principal < 2048, "{per_principal} bytes");
}

#[test]
fn detect_a_restored_detector_goes_on_exactly_as_the_saved_one() {
    let t = trace();
    let split = t.header.start_ms + t.header.warmup_ms;
    let (before, after): (Vec<_>, Vec<_>) = t
        .events
        .iter()
        .map(|e| &e.decision)
        .partition(|e| e.at_ms < split);
    let mut saved = Detector::new(DetectorConfig::default(), 7);
    for e in &before {
        saved.observe(e);
    }
    let bytes = saved.save();
    let mut restored = Detector::restore(DetectorConfig::default(), &bytes).expect("restores");
    assert_eq!(restored.tracked(), saved.tracked());
    assert_eq!(restored.save(), bytes, "saving again gives the same bytes");
    let mut fresh = Detector::new(DetectorConfig::default(), 7);
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    for ev in &after {
        a.extend(saved.observe(ev));
        b.extend(restored.observe(ev));
        c.extend(fresh.observe(ev));
    }
    assert!(
        a.len() >= 10,
        "the scored half has attacks: {} alerts",
        a.len()
    );
    assert_eq!(a, b, "the restored detector raises exactly the same alerts");
    assert_ne!(
        a, c,
        "a detector that starts over has no baselines and alerts differently"
    );
}

#[test]
fn detect_bad_saved_state_is_refused_with_a_reason() {
    let t = trace();
    let split = t.header.start_ms + t.header.warmup_ms;
    let mut d = Detector::new(DetectorConfig::default(), 3);
    for e in t.events.iter().take_while(|e| e.decision.at_ms < split) {
        d.observe(&e.decision);
    }
    assert!(d.tracked() > 100, "{} principals", d.tracked());
    let bytes = d.save();
    for cut in [0, 1, 10, bytes.len() / 2, bytes.len() - 1] {
        let err = Detector::restore(DetectorConfig::default(), &bytes[..cut])
            .err()
            .unwrap_or_else(|| panic!("{cut} bytes of {} restored", bytes.len()));
        assert!(err.contains("does not decode"), "{err}");
    }
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| i.wrapping_mul(2_654_435_761) as u8)
        .collect();
    assert!(Detector::restore(DetectorConfig::default(), &garbage).is_err());
    let other_window = DetectorConfig {
        window_ms: 120_000,
        ..DetectorConfig::default()
    };
    let err = Detector::restore(other_window, &bytes)
        .err()
        .expect("another window is refused");
    assert!(err.contains("another window"), "{err}");
    // A smaller cap keeps the most recently seen.
    let small = DetectorConfig {
        max_principals: 10,
        ..DetectorConfig::default()
    };
    let r = Detector::restore(small, &bytes).unwrap();
    assert_eq!(r.tracked(), 10);
    assert_eq!(r.evicted(), d.evicted() + (d.tracked() as u64 - 10));
}

/// Twenty ordinary principals for 45 s, then `User::"mallory"`'s burst:
/// 1,500 requests in one second over 1,500 resources never seen and four
/// actions, all but one in twenty denied (the probe).
fn fresh_start_with_a_burst() -> Vec<DecisionEvent> {
    let t0 = 1_767_600_000_000u64;
    let mut out = Vec::new();
    for ms in (0..45_000).step_by(250) {
        let u = (ms / 250) % 20;
        out.push(DecisionEvent {
            allow: ms % 3_000 != 0,
            ..ev(
                t0 + ms,
                &format!("User::\"u{u}\""),
                &format!("Doc::\"d{}\"", ms % 7),
            )
        });
    }
    let actions = ["view", "edit", "delete", "admin"];
    for (k, action) in (0..1_500u64).zip(actions.iter().cycle()) {
        out.push(DecisionEvent {
            at_ms: t0 + 45_000 + k * 2 / 3,
            principal: "User::\"mallory\"".into(),
            action: format!("Action::\"{action}\""),
            resource: format!("Secret::\"s{k}\""),
            allow: k % 20 == 0,
            token_failed: false,
            site: Some("site-0".into()),
        });
    }
    out
}

#[test]
fn detect_a_fresh_detector_flags_a_gross_burst_at_once() {
    let events = fresh_start_with_a_burst();
    let mut d = Detector::new(DetectorConfig::default(), 1);
    let alerts: Vec<Alert> = events.iter().filter_map(|e| d.observe(e)).collect();
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let a = &alerts[0];
    assert_eq!(a.principal, "User::\"mallory\"");
    assert_eq!(a.floor.as_deref(), Some("denies"), "{a:#?}");
    // The 30th deny is about the 32nd request: within 25 ms of the start.
    assert!(a.at_ms - events[0].at_ms - 45_000 <= 25, "{a:#?}");
    assert!(a.reason.contains("absolute floor"), "{}", a.reason);
    assert!(a.evidence[0].contains("denies of"), "{:?}", a.evidence);

    // The learned model alone is blind there: the trees hold no window yet.
    let mut blind = Detector::new(
        DetectorConfig {
            floors: None,
            ..DetectorConfig::default()
        },
        1,
    );
    assert!(events.iter().all(|e| blind.observe(e).is_none()));
}

#[test]
fn detect_each_floor_alerts_on_its_own() {
    let t0 = 1_767_600_000_000u64;
    // 400 distinct resources, all allowed: the resources floor.
    let mut d = Detector::new(DetectorConfig::default(), 3);
    let sweep = (0..400u64)
        .filter_map(|k| d.observe(&ev(t0 + k * 100, "User::\"s\"", &format!("Doc::\"{k}\""))))
        .next()
        .expect("a sweep alerts");
    assert_eq!(sweep.floor.as_deref(), Some("resources"), "{sweep:#?}");
    // 40 actions over 2 resources, allowed: the actions floor.
    let mut d = Detector::new(DetectorConfig::default(), 3);
    let spread = (0..40u64)
        .filter_map(|k| {
            d.observe(&DecisionEvent {
                action: format!("Action::\"a{k}\""),
                ..ev(t0 + k * 500, "User::\"a\"", &format!("Doc::\"{}\"", k % 2))
            })
        })
        .next()
        .expect("a spread of actions alerts");
    assert_eq!(spread.floor.as_deref(), Some("actions"), "{spread:#?}");
    // A client retrying one refused request twice a second: no floor.
    let mut d = Detector::new(DetectorConfig::default(), 3);
    for k in 0..600u64 {
        let e = DecisionEvent {
            allow: false,
            ..ev(t0 + k * 500, "User::\"retry\"", "Doc::\"gone\"")
        };
        assert!(d.observe(&e).is_none(), "request {k}");
    }
    // A batch job: 300 queries a minute over 120 tables, for ten minutes.
    let mut d = Detector::new(DetectorConfig::default(), 3);
    for k in 0..3_000u64 {
        let e = ev(
            t0 + k * 200,
            "Service::\"batch\"",
            &format!("Db::\"t{}\"", k * 7 % 120),
        );
        assert!(d.observe(&e).is_none(), "query {k}");
    }
}

#[test]
fn detect_floors_change_no_figure_of_the_warm_evaluation_but_the_fresh_one() {
    let off = EvalConfig {
        detector: DetectorConfig {
            floors: None,
            ..DetectorConfig::default()
        },
        ..EvalConfig::default()
    };
    let warm_on = evaluate(trace(), &EvalConfig::default());
    let warm_off = evaluate(trace(), &off);
    assert_eq!(
        warm_on.detector.false_positives,
        warm_off.detector.false_positives
    );
    let all = |r: &eval::EvalReport| r.detector.kinds.last().map(|k| k.detected);
    assert!(all(&warm_on) >= all(&warm_off));

    let fresh_on = evaluate(
        trace(),
        &EvalConfig {
            fresh: true,
            ..EvalConfig::default()
        },
    );
    let fresh_off = evaluate(trace(), &EvalConfig { fresh: true, ..off });
    assert_eq!(fresh_on.mode, "fresh");
    assert_eq!(
        fresh_on.detector.kinds[5].incidents,
        trace().incidents.len()
    );
    assert_eq!(fresh_on.scored_hours, fresh_off.scored_hours);
    assert!(
        all(&fresh_on) >= all(&fresh_off),
        "{fresh_on:#?} {fresh_off:#?}"
    );
    assert!(
        fresh_on.detector.false_positives <= fresh_off.detector.false_positives,
        "{fresh_on:#?}"
    );
}

/// 200 ordinary principals, one request each every 10 s over three
/// resources of their own, for `minutes`; then `User::"u7"` makes 30
/// requests in 30 s over 30 resources it never used, with an action it
/// never used: far from its baseline, far under every floor.
fn ordinary_then_a_first_busy_minute(minutes: u64) -> Vec<DecisionEvent> {
    let t0 = 1_767_600_000_000u64;
    let mut out = Vec::new();
    for slot in 0..minutes * 6 {
        for i in 0..200u64 {
            out.push(ev(
                t0 + slot * 10_000 + i * 10,
                &format!("User::\"u{i}\""),
                &format!("Doc::\"d{i}-{}\"", slot % 3),
            ));
        }
    }
    let t = t0 + minutes * 60_000;
    for k in 0..30u64 {
        out.push(DecisionEvent {
            action: "Action::\"edit\"".into(),
            ..ev(
                t + k * 1_000 + 5,
                "User::\"u7\"",
                &format!("Repo::\"r{k}\""),
            )
        });
    }
    out
}

#[test]
fn detect_the_model_does_not_alert_while_the_detector_learns() {
    // Ten minutes into a fresh detector, the trees hold their reference
    // and a model without a learning period alerts on a principal's first
    // busy minute, which says nothing of a principal it has known for ten
    // minutes (a batch job's nightly run, a user's first new pairs).
    let events = ordinary_then_a_first_busy_minute(10);
    let run = |learning_ms: u64| -> Vec<Alert> {
        let mut d = Detector::new(
            DetectorConfig {
                learning_ms,
                ..DetectorConfig::default()
            },
            1,
        );
        events.iter().filter_map(|e| d.observe(e)).collect()
    };
    let unlearned = run(0);
    assert_eq!(unlearned.len(), 1, "{unlearned:#?}");
    assert_eq!(unlearned[0].principal, "User::\"u7\"");
    assert_eq!(unlearned[0].floor, None, "{unlearned:#?}");
    // Within the default learning period (12 h), only the floors alert.
    assert!(run(DetectorConfig::default().learning_ms).is_empty());
    // Once it is over, the model alerts as before.
    assert_eq!(run(5 * 60_000).len(), 1);
    // A gross burst crosses a floor whatever the learning period.
    let mut d = Detector::new(DetectorConfig::default(), 1);
    assert!(d.learning(0));
    let burst: Vec<Alert> = fresh_start_with_a_burst()
        .iter()
        .filter_map(|e| d.observe(e))
        .collect();
    assert_eq!(burst.len(), 1);
    assert!(burst[0].floor.is_some());
}

#[test]
fn detect_a_restored_detector_keeps_its_learning_period() {
    let t0 = 1_767_600_000_000u64;
    let mut d = Detector::new(DetectorConfig::default(), 1);
    d.observe(&ev(t0, "User::\"a\"", "Doc::\"x\""));
    let back = Detector::restore(DetectorConfig::default(), &d.save()).expect("restores");
    let twelve_h = DetectorConfig::default().learning_ms;
    assert!(back.learning(t0 + twelve_h - 1));
    assert!(!back.learning(t0 + twelve_h));
}

#[test]
fn detect_a_state_saved_without_a_learning_start_is_past_it() {
    // A state saved before the learning period existed (version 1: the
    // same layout without its start) restores as past it.
    let t0 = 1_767_600_000_000u64;
    let mut d = Detector::new(DetectorConfig::default(), 1);
    d.observe(&ev(t0, "User::\"a\"", "Doc::\"x\""));
    let mut bytes = d.save();
    let tail = postcard::to_allocvec(&Some(t0)).expect("encodes");
    assert!(bytes.ends_with(&tail));
    bytes.truncate(bytes.len() - tail.len());
    assert_eq!(bytes[0], 2);
    bytes[0] = 1;
    let back = Detector::restore(DetectorConfig::default(), &bytes).expect("restores");
    assert!(!back.learning(t0));
    assert_eq!(back.tracked(), 1);
}
