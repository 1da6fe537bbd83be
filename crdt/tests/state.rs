//! Behaviour of the replicated state: builders, schema checks, revoke-wins,
//! conflicts, the last good version, and fail-closed decisions.

use std::str::FromStr;

use automerge::transaction::Transactable;
use automerge::{ActorId, ObjType, ROOT, ReadDoc};
use cedar_policy::{Context, EntityUid};
use weft_crdt::{Applied, BundleContent, CrdtError, PolicyDoc, Request, decide};

fn uid(s: &str) -> EntityUid {
    EntityUid::from_str(s).unwrap()
}

fn actor(n: u8) -> ActorId {
    ActorId::from(vec![n; 40])
}

fn req(p: &str) -> Request {
    Request::new(uid(p), uid(r#"Action::"view""#), uid(r#"Doc::"d""#))
}

fn bundle(policies: &[(&str, &str)]) -> BundleContent {
    BundleContent {
        policies: policies
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

const ALLOW_ALICE: &str = r#"permit(principal == User::"alice", action, resource);"#;
const ALLOW_ALL: &str = r#"permit(principal, action, resource);"#;

#[test]
fn bundle_then_revoke_then_reinstate() {
    let mut doc = PolicyDoc::new();
    doc.build_bundle(actor(1), "main", &bundle(&[("a", ALLOW_ALICE)]), 1)
        .unwrap()
        .unwrap();
    let d = decide(doc.view(), &req(r#"User::"alice""#));
    assert!(d.allow);
    assert_eq!(d.reasons, vec!["main/a".to_string()]);
    assert!(!decide(doc.view(), &req(r#"User::"bob""#)).allow);

    doc.build_revoke(actor(2), r#"User::"alice""#, "left", 2)
        .unwrap()
        .unwrap();
    let d = decide(doc.view(), &req(r#"User::"alice""#));
    assert!(!d.allow && d.revoked);
    assert_eq!(
        doc.view().revocation(r#"User::"alice""#).unwrap().reason,
        "left"
    );

    doc.build_reinstate(actor(3), r#"User::"alice""#, 3)
        .unwrap()
        .unwrap();
    assert!(decide(doc.view(), &req(r#"User::"alice""#)).allow);
}

#[test]
fn same_content_builds_nothing() {
    let mut doc = PolicyDoc::new();
    let b = bundle(&[("a", ALLOW_ALICE)]);
    assert!(doc.build_bundle(actor(1), "main", &b, 1).unwrap().is_some());
    assert!(doc.build_bundle(actor(2), "main", &b, 2).unwrap().is_none());
}

#[test]
fn apply_is_idempotent_and_holds_missing_deps() {
    let mut author = PolicyDoc::new();
    let c1 = author
        .build_bundle(actor(1), "main", &bundle(&[("a", ALLOW_ALICE)]), 1)
        .unwrap()
        .unwrap();
    let c2 = author
        .build_revoke(actor(2), r#"User::"bob""#, "", 2)
        .unwrap()
        .unwrap();

    let mut replica = PolicyDoc::new();
    let before = replica.save();
    match replica.apply(c2.clone()) {
        Err(CrdtError::MissingDeps(d)) => assert_eq!(d, vec![c1.hash()]),
        other => panic!("expected missing deps, got {other:?}"),
    }
    assert_eq!(replica.save(), before, "a held change must not alter state");
    assert!(matches!(
        replica.apply(c1.clone()).unwrap(),
        Applied::New(_)
    ));
    assert!(matches!(replica.apply(c1).unwrap(), Applied::Duplicate));
    assert!(matches!(replica.apply(c2).unwrap(), Applied::New(_)));
    assert_eq!(replica.view().summary(), author.view().summary());
}

#[test]
fn revoke_wins_over_concurrent_reinstatement() {
    let mut a = PolicyDoc::new();
    a.build_bundle(actor(1), "main", &bundle(&[("all", ALLOW_ALL)]), 1)
        .unwrap();
    a.build_revoke(actor(2), r#"User::"eve""#, "first", 2)
        .unwrap()
        .unwrap();
    let mut b = PolicyDoc::load(&a.save()).unwrap();
    // Concurrently: a revokes eve again (a new record), b reinstates eve having
    // seen only the first revocation.
    let again = a
        .build_revoke(actor(3), r#"User::"eve""#, "second", 3)
        .unwrap()
        .unwrap();
    let reinstate = b
        .build_reinstate(actor(4), r#"User::"eve""#, 3)
        .unwrap()
        .unwrap();
    assert!(decide(b.view(), &req(r#"User::"eve""#)).allow);
    a.apply(reinstate).unwrap();
    b.apply(again).unwrap();
    for doc in [&a, &b] {
        let d = decide(doc.view(), &req(r#"User::"eve""#));
        assert!(d.revoked, "a concurrent reinstatement lifted a revocation");
    }
    assert_eq!(a.view().summary(), b.view().summary());
    // A reinstatement that follows both lifts it.
    a.build_reinstate(actor(5), r#"User::"eve""#, 4)
        .unwrap()
        .unwrap();
    assert!(decide(a.view(), &req(r#"User::"eve""#)).allow);
}

#[test]
fn revocation_covers_descendants_and_resources() {
    let mut doc = PolicyDoc::new();
    let mut b = bundle(&[("all", ALLOW_ALL)]);
    b.entities = Some(
        r#"[{"uid":{"type":"User","id":"alice"},"attrs":{},"parents":[{"type":"Group","id":"staff"}]},
            {"uid":{"type":"Group","id":"staff"},"attrs":{},"parents":[]}]"#
            .into(),
    );
    doc.build_bundle(actor(1), "main", &b, 1).unwrap();
    assert!(decide(doc.view(), &req(r#"User::"alice""#)).allow);
    doc.build_revoke(actor(2), r#"Group::"staff""#, "", 2)
        .unwrap()
        .unwrap();
    let d = decide(doc.view(), &req(r#"User::"alice""#));
    assert!(d.revoked);
    assert_eq!(d.revoked_subject.as_deref(), Some(r#"Group::"staff""#));
    // A request entity that puts bob in the revoked group is denied too.
    let mut r = req(r#"User::"bob""#);
    r.entities = vec![cedar_policy::Entity::new_no_attrs(
        uid(r#"User::"bob""#),
        [uid(r#"Group::"staff""#)].into(),
    )];
    assert!(decide(doc.view(), &r).revoked);
    // The resource side.
    doc.build_revoke(actor(3), r#"Doc::"d""#, "", 3)
        .unwrap()
        .unwrap();
    assert!(decide(doc.view(), &req(r#"User::"carol""#)).revoked);
}

#[test]
fn writes_outside_the_schema_are_refused() {
    let mut doc = PolicyDoc::new();
    let before = doc.save();
    let mut evil = automerge::Automerge::load(&doc.save())
        .unwrap()
        .with_actor(actor(9));
    let mut tx = evil.transaction();
    tx.put(ROOT, "evil", "x").unwrap();
    tx.commit();
    let change = evil.get_last_local_change().unwrap();
    let err = doc.apply(change).unwrap_err();
    assert!(matches!(err, CrdtError::Schema(_)), "{err}");
    assert_eq!(doc.save(), before);

    // A string where a bundle map belongs.
    let mut evil = automerge::Automerge::load(&doc.save())
        .unwrap()
        .with_actor(actor(9));
    let (_, bundles) = evil.get(ROOT, "bundles").unwrap().unwrap();
    let mut tx = evil.transaction();
    tx.put(&bundles, "main", "not a map").unwrap();
    tx.commit();
    let err = doc
        .apply(evil.get_last_local_change().unwrap())
        .unwrap_err();
    assert!(err.to_string().contains("bundles/main"), "{err}");

    // A list inside a bundle.
    let mut evil = automerge::Automerge::load(&doc.save())
        .unwrap()
        .with_actor(actor(9));
    let (_, bundles) = evil.get(ROOT, "bundles").unwrap().unwrap();
    let mut tx = evil.transaction();
    let b = tx.put_object(&bundles, "main", ObjType::Map).unwrap();
    tx.put_object(&b, "policies", ObjType::List).unwrap();
    tx.commit();
    assert!(doc.apply(evil.get_last_local_change().unwrap()).is_err());
    assert_eq!(doc.save(), before);
}

#[test]
fn summary_names_the_paths() {
    let mut author = PolicyDoc::new();
    let c = author
        .build_bundle(actor(1), "team", &bundle(&[("a", ALLOW_ALICE)]), 1)
        .unwrap()
        .unwrap();
    let fresh = PolicyDoc::new();
    let s = fresh.summarize(&c).unwrap();
    let paths: Vec<String> = s.paths.iter().map(ToString::to_string).collect();
    assert_eq!(
        paths,
        vec![
            "bundles/team",
            "bundles/team/policies",
            "bundles/team/policies/a"
        ]
    );
    let r = author
        .build_revoke(actor(2), r#"User::"x""#, "", 2)
        .unwrap()
        .unwrap();
    let s = author.summarize(&r).unwrap();
    assert_eq!(
        s.revocations().into_iter().collect::<Vec<_>>(),
        vec![r#"User::"x""#]
    );
}

#[test]
fn concurrent_edits_surface_a_conflict_and_resolve_alike() {
    let mut a = PolicyDoc::new();
    a.build_bundle(actor(1), "main", &bundle(&[("p", ALLOW_ALICE)]), 1)
        .unwrap();
    let mut b = PolicyDoc::load(&a.save()).unwrap();
    let ca = a
        .build_bundle(actor(2), "main", &bundle(&[("p", ALLOW_ALL)]), 2)
        .unwrap()
        .unwrap();
    let cb = b
        .build_bundle(
            actor(3),
            "main",
            &bundle(&[(
                "p",
                r#"permit(principal == User::"bob", action, resource);"#,
            )]),
            2,
        )
        .unwrap()
        .unwrap();
    a.apply(cb).unwrap();
    b.apply(ca).unwrap();
    assert_eq!(a.view().summary(), b.view().summary());
    let conflicts: Vec<_> = a.view().conflicts().cloned().collect();
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].path, "bundles/main/policies/p");
    assert_eq!(conflicts[0].sides.len(), 2);
    assert_eq!(conflicts[0].sides.iter().filter(|s| s.winner).count(), 1);
    let actors: Vec<&str> = conflicts[0]
        .sides
        .iter()
        .map(|s| s.actor.as_str())
        .collect();
    assert!(actors.contains(&hex::encode(vec![2u8; 40]).as_str()));
    assert!(actors.contains(&hex::encode(vec![3u8; 40]).as_str()));
}

#[test]
fn invalid_merge_keeps_the_last_good_version() {
    // One operator adds a schema (valid with the existing policy); another,
    // concurrently, adds a policy on a type the schema lacks. Each is valid on
    // its own; the merge is not.
    let schema =
        r#"entity User; entity Doc; action view appliesTo { principal: User, resource: Doc };"#;
    let p1 = r#"permit(principal == User::"alice", action == Action::"view", resource);"#;
    let mut a = PolicyDoc::new();
    a.build_bundle(actor(1), "main", &bundle(&[("p1", p1)]), 1)
        .unwrap();
    let mut b = PolicyDoc::load(&a.save()).unwrap();
    let mut with_schema = bundle(&[("p1", p1)]);
    with_schema.schema = Some(schema.into());
    let ca = a
        .build_bundle(actor(2), "main", &with_schema, 2)
        .unwrap()
        .unwrap();
    let cb = b
        .build_bundle(
            actor(3),
            "main",
            &bundle(&[
                ("p1", p1),
                (
                    "robot",
                    r#"permit(principal == Robot::"r", action, resource);"#,
                ),
            ]),
            2,
        )
        .unwrap()
        .unwrap();
    a.apply(cb).unwrap();
    b.apply(ca).unwrap();
    let state = a.view().bundle("main").unwrap();
    assert!(
        state.error.is_some(),
        "the merged bundle should not validate"
    );
    assert!(state.fallback_from.is_some());
    assert!(state.effective.is_some());
    // Same answer on both sides and after a rebuild from scratch.
    assert_eq!(a.view().summary(), b.view().summary());
    assert_eq!(a.rebuild().unwrap().view().summary(), a.view().summary());
    // alice's permit holds in either surviving version.
    assert!(decide(a.view(), &req(r#"User::"alice""#)).allow);
}

#[test]
fn erroring_forbid_fails_closed() {
    let mut doc = PolicyDoc::new();
    doc.build_bundle(
        actor(1),
        "main",
        &bundle(&[
            ("all", ALLOW_ALL),
            // Errors when context.level is missing: the forbid must not be skipped.
            (
                "gate",
                r#"forbid(principal, action, resource) unless { context.level > 3 };"#,
            ),
        ]),
        1,
    )
    .unwrap();
    let d = decide(doc.view(), &req(r#"User::"alice""#));
    assert!(!d.allow, "an erroring forbid let the request through");
    assert_eq!(d.reasons, vec!["main/gate".to_string()]);
    assert!(!d.errors.is_empty());
    // With the attribute present the forbid evaluates and the permit holds.
    let r = Request::with_context(
        uid(r#"User::"alice""#),
        uid(r#"Action::"view""#),
        uid(r#"Doc::"d""#),
        Context::from_json_str(r#"{"level": 5}"#, None).unwrap(),
        vec![],
    )
    .unwrap();
    assert!(decide(doc.view(), &r).allow);
    // An erroring permit only fails to grant.
    let mut doc = PolicyDoc::new();
    doc.build_bundle(
        actor(1),
        "main",
        &bundle(&[(
            "p",
            r#"permit(principal, action, resource) when { context.level > 3 };"#,
        )]),
        1,
    )
    .unwrap();
    let d = decide(doc.view(), &req(r#"User::"alice""#));
    assert!(!d.allow && !d.errors.is_empty());
}

#[test]
fn load_refuses_foreign_documents() {
    let mut other = automerge::Automerge::new();
    let mut tx = other.transaction();
    tx.put(ROOT, "x", 1).unwrap();
    tx.commit();
    assert!(matches!(
        PolicyDoc::load(&other.save()),
        Err(CrdtError::NotWeftState)
    ));
    assert!(PolicyDoc::load(b"garbage").is_err());
}

#[test]
fn a_schema_change_alone_refreshes_the_action_entities() {
    let entities = r#"[{"uid":{"type":"User","id":"bob"},"attrs":{},"parents":[]}]"#;
    let mut content = bundle(&[("p", ALLOW_ALICE)]);
    content.entities = Some(entities.into());
    let mut doc = PolicyDoc::new();
    doc.build_bundle(actor(1), "main", &content, 1)
        .unwrap()
        .unwrap();
    let before = doc.view().summary().entities;
    // Same entities file, now with a schema that declares actions.
    content.schema = Some(
        "entity User; entity Doc; action view appliesTo { principal: User, resource: Doc };".into(),
    );
    doc.build_bundle(actor(1), "main", &content, 2)
        .unwrap()
        .unwrap();
    let after = doc.view().summary().entities;
    assert_ne!(before, after);
    assert!(after.iter().any(|e| e == r#"Action::"view""#), "{after:?}");
    assert_eq!(after, doc.rebuild().unwrap().view().summary().entities);
}

#[test]
fn a_large_load_reads_revocations_like_one_by_one() {
    // Enough subjects for the one-pass read on load, some of them revoked
    // concurrently by two authors (a conflict), some reinstated.
    let mut a = PolicyDoc::new();
    for i in 0..150 {
        a.build_revoke(actor(1), &format!(r#"User::"u{i}""#), "left", i)
            .unwrap()
            .unwrap();
    }
    let mut b = PolicyDoc::load(&a.save()).unwrap();
    for i in (0..150).step_by(7) {
        a.build_revoke(actor(2), &format!(r#"User::"u{i}""#), "a", 200)
            .unwrap()
            .unwrap();
        b.build_revoke(actor(3), &format!(r#"User::"u{i}""#), "b", 200)
            .unwrap()
            .unwrap();
    }
    for i in (1..150).step_by(11) {
        a.build_reinstate(actor(2), &format!(r#"User::"u{i}""#), 300)
            .unwrap();
    }
    for r in a.apply_batch(b.changes()) {
        r.unwrap();
    }
    let rebuilt = a.rebuild().unwrap();
    assert_eq!(rebuilt.view().summary(), a.view().summary());
    let conflicted = a.view().revocation(r#"User::"u7""#).unwrap();
    assert_eq!(conflicted.actors.len(), 2, "{conflicted:?}");
    assert!(a.view().revocation(r#"User::"u12""#).is_none());
    for i in 0..150 {
        let r = req(&format!(r#"User::"u{i}""#));
        assert_eq!(
            decide(rebuilt.view(), &r).revoked,
            decide(a.view(), &r).revoked
        );
    }
}
