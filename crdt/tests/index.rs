//! Differential test of the scope index: the indexed `decide()` must answer
//! exactly as full Cedar evaluation of every policy in force (`decide_full`):
//! the same decision, the same determining policies and the same errors, for
//! random policy sets (scopes of every kind, `when`/`unless` clauses that may
//! error, templates and links, action groups, deep entity hierarchies, several
//! bundles) and random requests (with entities of their own), before and after
//! the bundles change.

use std::str::FromStr;

use cedar_policy::{Context, Entity, EntityUid};
use proptest::prelude::*;
use weft_crdt::{ActorId, BundleContent, PolicyDoc, Request, decide, decide_full};

const USERS: usize = 4;
const GROUPS: usize = 5;
const FOLDERS: usize = 4;
const DOCS: usize = 4;
const ACTIONS: [&str; 4] = ["read", "write", "delete", "share"];
const ACTION_GROUPS: [&str; 2] = ["readish", "all"];

fn user(i: usize) -> String {
    format!(r#"User::"u{i}""#)
}
fn group(i: usize) -> String {
    format!(r#"Group::"g{i}""#)
}
fn folder(i: usize) -> String {
    format!(r#"Folder::"f{i}""#)
}
fn doc(i: usize) -> String {
    format!(r#"Doc::"d{i}""#)
}
fn action(a: &str) -> String {
    format!(r#"Action::"{a}""#)
}

/// Something a principal slot or constraint can name: users, groups, and one
/// entity that no store holds.
fn principal_entity() -> impl Strategy<Value = String> {
    prop_oneof![
        (0..USERS).prop_map(user),
        (0..GROUPS).prop_map(group),
        Just(r#"User::"ghost""#.to_owned()),
    ]
}

fn resource_entity() -> impl Strategy<Value = String> {
    prop_oneof![
        (0..DOCS).prop_map(doc),
        (0..FOLDERS).prop_map(folder),
        Just(r#"Doc::"ghost""#.to_owned()),
    ]
}

fn action_entity() -> impl Strategy<Value = String> {
    prop_oneof![
        (0..ACTIONS.len()).prop_map(|i| action(ACTIONS[i])),
        (0..ACTION_GROUPS.len()).prop_map(|i| action(ACTION_GROUPS[i])),
        Just(action("unknown")),
    ]
}

fn principal_scope(slot: bool) -> impl Strategy<Value = String> {
    let base = prop_oneof![
        Just("principal".to_owned()),
        principal_entity().prop_map(|e| format!("principal == {e}")),
        principal_entity().prop_map(|e| format!("principal in {e}")),
        prop_oneof![Just("User"), Just("Group")].prop_map(|t| format!("principal is {t}")),
        (prop_oneof![Just("User"), Just("Group")], principal_entity())
            .prop_map(|(t, e)| format!("principal is {t} in {e}")),
    ];
    if slot {
        prop_oneof![
            Just("principal == ?principal".to_owned()),
            Just("principal in ?principal".to_owned()),
            Just("principal is User in ?principal".to_owned()),
        ]
        .boxed()
    } else {
        base.boxed()
    }
}

fn resource_scope(slot: bool) -> impl Strategy<Value = String> {
    let base = prop_oneof![
        Just("resource".to_owned()),
        resource_entity().prop_map(|e| format!("resource == {e}")),
        resource_entity().prop_map(|e| format!("resource in {e}")),
        prop_oneof![Just("Doc"), Just("Folder")].prop_map(|t| format!("resource is {t}")),
        (prop_oneof![Just("Doc"), Just("Folder")], resource_entity())
            .prop_map(|(t, e)| format!("resource is {t} in {e}")),
    ];
    if slot {
        prop_oneof![
            Just("resource == ?resource".to_owned()),
            Just("resource in ?resource".to_owned()),
        ]
        .boxed()
    } else {
        base.boxed()
    }
}

fn action_scope() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("action".to_owned()),
        action_entity().prop_map(|e| format!("action == {e}")),
        action_entity().prop_map(|e| format!("action in {e}")),
        prop::collection::vec(action_entity(), 1..3)
            .prop_map(|es| format!("action in [{}]", es.join(", "))),
    ]
}

/// Conditions, some of which error (a missing attribute or context field).
fn condition() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => Just(String::new()),
        1 => (0i64..4).prop_map(|n| format!(" when {{ principal.level > {n} }}")),
        1 => Just(r#" unless { resource.secret }"#.to_owned()),
        1 => Just(" when { context.flag }".to_owned()),
        1 => Just(" when { resource.owner == principal }".to_owned()),
        1 => Just(" when { principal has level && principal.level >= 2 }".to_owned()),
        1 => Just(" unless { principal in Group::\"g0\" }".to_owned()),
    ]
}

#[derive(Clone, Debug)]
struct PolicySpec {
    forbid: bool,
    template: bool,
    principal: String,
    action: String,
    resource: String,
    condition: String,
}

fn policy_spec() -> impl Strategy<Value = PolicySpec> {
    (any::<bool>(), prop::bool::weighted(0.2)).prop_flat_map(|(forbid, template)| {
        (
            principal_scope(template),
            action_scope(),
            resource_scope(template),
            condition(),
        )
            .prop_map(move |(principal, action, resource, condition)| PolicySpec {
                forbid,
                template,
                principal,
                action,
                resource,
                condition,
            })
    })
}

impl PolicySpec {
    fn text(&self) -> String {
        format!(
            "{} ({}, {}, {}){};",
            if self.forbid { "forbid" } else { "permit" },
            self.principal,
            self.action,
            self.resource,
            self.condition
        )
    }

    fn slots(&self) -> Vec<&'static str> {
        let mut s = Vec::new();
        if self.principal.contains("?principal") {
            s.push("?principal");
        }
        if self.resource.contains("?resource") {
            s.push("?resource");
        }
        s
    }
}

/// A random entity hierarchy: users in groups, groups in lower groups (so
/// chains run deep), docs in folders, folders in lower folders, actions in
/// action groups. Some entities lack the attributes conditions read.
#[derive(Clone, Debug)]
struct World {
    user_groups: Vec<Vec<usize>>,
    group_parents: Vec<Vec<usize>>,
    doc_folders: Vec<Vec<usize>>,
    folder_parents: Vec<Vec<usize>>,
    user_level: Vec<Option<i64>>,
    doc_attrs: Vec<Option<(bool, usize)>>,
    action_groups: Vec<Vec<usize>>,
}

fn parents(n: usize, of: usize) -> impl Strategy<Value = Vec<Vec<usize>>> {
    prop::collection::vec(prop::collection::vec(0..of, 0..3), n).prop_map(|mut v| {
        for p in &mut v {
            p.sort();
            p.dedup();
        }
        v
    })
}

fn world() -> impl Strategy<Value = World> {
    (
        parents(USERS, GROUPS),
        parents(GROUPS, GROUPS),
        parents(DOCS, FOLDERS),
        parents(FOLDERS, FOLDERS),
        prop::collection::vec(prop::option::of(0i64..5), USERS),
        prop::collection::vec(prop::option::of((any::<bool>(), 0..USERS)), DOCS),
        parents(ACTIONS.len(), ACTION_GROUPS.len()),
    )
        .prop_map(
            |(
                user_groups,
                mut group_parents,
                doc_folders,
                mut folder_parents,
                user_level,
                doc_attrs,
                action_groups,
            )| {
                // Only point "down" the index so the hierarchy is acyclic.
                for (i, p) in group_parents.iter_mut().enumerate() {
                    p.retain(|&q| q < i);
                }
                for (i, p) in folder_parents.iter_mut().enumerate() {
                    p.retain(|&q| q < i);
                }
                World {
                    user_groups,
                    group_parents,
                    doc_folders,
                    folder_parents,
                    user_level,
                    doc_attrs,
                    action_groups,
                }
            },
        )
}

fn uid_json(ty: &str, id: &str) -> serde_json::Value {
    serde_json::json!({"type": ty, "id": id})
}

impl World {
    fn entities_json(&self) -> String {
        let mut out = Vec::new();
        for (i, groups) in self.user_groups.iter().enumerate() {
            let mut attrs = serde_json::Map::new();
            if let Some(l) = self.user_level[i] {
                attrs.insert("level".into(), l.into());
            }
            out.push(serde_json::json!({
                "uid": uid_json("User", &format!("u{i}")),
                "attrs": attrs,
                "parents": groups.iter().map(|g| uid_json("Group", &format!("g{g}"))).collect::<Vec<_>>(),
            }));
        }
        for (i, ps) in self.group_parents.iter().enumerate() {
            out.push(serde_json::json!({
                "uid": uid_json("Group", &format!("g{i}")),
                "attrs": {},
                "parents": ps.iter().map(|g| uid_json("Group", &format!("g{g}"))).collect::<Vec<_>>(),
            }));
        }
        for (i, fs) in self.doc_folders.iter().enumerate() {
            let mut attrs = serde_json::Map::new();
            if let Some((secret, owner)) = self.doc_attrs[i] {
                attrs.insert("secret".into(), secret.into());
                attrs.insert(
                    "owner".into(),
                    serde_json::json!({"__entity": uid_json("User", &format!("u{owner}"))}),
                );
            }
            out.push(serde_json::json!({
                "uid": uid_json("Doc", &format!("d{i}")),
                "attrs": attrs,
                "parents": fs.iter().map(|f| uid_json("Folder", &format!("f{f}"))).collect::<Vec<_>>(),
            }));
        }
        for (i, ps) in self.folder_parents.iter().enumerate() {
            out.push(serde_json::json!({
                "uid": uid_json("Folder", &format!("f{i}")),
                "attrs": {},
                "parents": ps.iter().map(|f| uid_json("Folder", &format!("f{f}"))).collect::<Vec<_>>(),
            }));
        }
        for (i, gs) in self.action_groups.iter().enumerate() {
            let mut parents: Vec<_> = gs
                .iter()
                .map(|g| uid_json("Action", ACTION_GROUPS[*g]))
                .collect();
            if i == 0 {
                parents.push(uid_json("Action", "readish"));
            }
            out.push(serde_json::json!({
                "uid": uid_json("Action", ACTIONS[i]),
                "attrs": {},
                "parents": parents,
            }));
        }
        out.push(serde_json::json!({
            "uid": uid_json("Action", "readish"),
            "attrs": {},
            "parents": [uid_json("Action", "all")],
        }));
        out.push(serde_json::json!({"uid": uid_json("Action", "all"), "attrs": {}, "parents": []}));
        serde_json::Value::Array(out).to_string()
    }
}

/// Bundle contents: the policies split over bundles, entities in the first.
fn bundles(
    world: &World,
    specs: &[PolicySpec],
    link_targets: &[(String, String)],
) -> Vec<(String, BundleContent)> {
    let mut out: Vec<(String, BundleContent)> = (0..3)
        .map(|i| (format!("b{i}"), BundleContent::default()))
        .collect();
    out[0].1.entities = Some(world.entities_json());
    let mut links: Vec<Vec<serde_json::Value>> = vec![Vec::new(); 3];
    for (i, spec) in specs.iter().enumerate() {
        let b = i % 3;
        let id = format!("p{i}");
        out[b].1.policies.insert(id.clone(), spec.text());
        if spec.template {
            for (n, (p, r)) in link_targets.iter().enumerate().take(2 + i % 2) {
                let mut slots = serde_json::Map::new();
                for slot in spec.slots() {
                    let v = if slot == "?principal" { p } else { r };
                    slots.insert(slot.into(), v.clone().into());
                }
                links[b].push(serde_json::json!({
                    "template": id, "id": format!("{id}-link{n}"), "slots": slots,
                }));
            }
        }
    }
    for (b, l) in links.into_iter().enumerate() {
        if !l.is_empty() {
            out[b].1.links = Some(serde_json::Value::Array(l).to_string());
        }
    }
    out.retain(|(_, c)| !c.policies.is_empty() || c.entities.is_some());
    out
}

#[derive(Clone, Debug)]
struct RequestSpec {
    principal: String,
    action: String,
    resource: String,
    flag: Option<bool>,
    /// Entities that come with the request: a new user in some groups, or a
    /// new doc in some folders.
    extra: Option<(bool, Vec<usize>)>,
}

fn request_spec() -> impl Strategy<Value = RequestSpec> {
    (
        prop_oneof![4 => principal_entity(), 1 => Just(r#"User::"visitor""#.to_owned())],
        action_entity(),
        prop_oneof![4 => resource_entity(), 1 => Just(r#"Doc::"upload""#.to_owned())],
        prop::option::of(any::<bool>()),
        prop::option::of((any::<bool>(), prop::collection::vec(0..GROUPS, 0..3))),
    )
        .prop_map(|(principal, action, resource, flag, extra)| RequestSpec {
            principal,
            action,
            resource,
            flag,
            extra,
        })
}

impl RequestSpec {
    fn build(&self) -> Request {
        let uid = |s: &str| EntityUid::from_str(s).unwrap();
        let context = match self.flag {
            Some(f) => Context::from_json_value(serde_json::json!({"flag": f}), None).unwrap(),
            None => Context::empty(),
        };
        let mut entities = Vec::new();
        if let Some((is_user, parents)) = &self.extra {
            let json = if *is_user {
                serde_json::json!({
                    "uid": uid_json("User", "visitor"),
                    "attrs": {"level": 3},
                    "parents": parents.iter().map(|g| uid_json("Group", &format!("g{g}"))).collect::<Vec<_>>(),
                })
            } else {
                serde_json::json!({
                    "uid": uid_json("Doc", "upload"),
                    "attrs": {"secret": false, "owner": {"__entity": uid_json("User", "visitor")}},
                    "parents": parents.iter().map(|f| uid_json("Folder", &format!("f{}", f % FOLDERS))).collect::<Vec<_>>(),
                })
            };
            entities.push(Entity::from_json_value(json, None).unwrap());
        }
        Request::with_context(
            uid(&self.principal),
            uid(&self.action),
            uid(&self.resource),
            context,
            entities,
        )
        .unwrap()
    }
}

fn link_target() -> impl Strategy<Value = (String, String)> {
    (principal_entity(), resource_entity())
}

fn apply_all(doc: &mut PolicyDoc, bundles: &[(String, BundleContent)], seq: u8) {
    for (i, (name, content)) in bundles.iter().enumerate() {
        let mut actor = vec![seq; 40];
        actor[0] = i as u8;
        doc.build_bundle(ActorId::from(actor), name, content, i64::from(seq))
            .unwrap();
    }
}

fn assert_same(doc: &PolicyDoc, requests: &[RequestSpec]) -> Result<(), TestCaseError> {
    let view = doc.view();
    for spec in requests {
        let req = spec.build();
        let indexed = decide(view, &req);
        let full = decide_full(view, &req);
        prop_assert_eq!(
            &indexed,
            &full,
            "request {:?}\npolicies:\n{}",
            spec,
            view.policies().to_string()
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Indexed and full evaluation agree on random worlds, policies and
    /// requests, and still agree after every bundle is replaced by another.
    #[test]
    fn indexed_decide_equals_full_evaluation(
        world in world(),
        specs in prop::collection::vec(policy_spec(), 1..24),
        links in prop::collection::vec(link_target(), 3),
        next in prop::collection::vec(policy_spec(), 0..16),
        requests in prop::collection::vec(request_spec(), 16),
    ) {
        let mut doc = PolicyDoc::new();
        let first = bundles(&world, &specs, &links);
        apply_all(&mut doc, &first, 1);
        assert_same(&doc, &requests)?;

        // Replace the bundles' content: the index must follow.
        let second = bundles(&world, &next, &links);
        let mut names: Vec<String> = first.iter().map(|(n, _)| n.clone()).collect();
        names.extend(second.iter().map(|(n, _)| n.clone()));
        names.sort();
        names.dedup();
        let replaced: Vec<(String, BundleContent)> = names
            .into_iter()
            .map(|n| {
                let c = second
                    .iter()
                    .find(|(m, _)| *m == n)
                    .map(|(_, c)| c.clone())
                    .unwrap_or_default();
                (n, c)
            })
            .collect();
        apply_all(&mut doc, &replaced, 2);
        prop_assert_eq!(doc.view().index().len(), doc.view().policies().policies().count());
        assert_same(&doc, &requests)?;
    }
}

/// The index leaves out policies whose scope cannot match, and keeps the
/// rest: a hand-made case with a known answer.
#[test]
fn index_finds_only_matching_scopes() {
    let mut b = BundleContent::default();
    b.policies.insert(
        "alice".into(),
        r#"permit (principal == User::"alice", action, resource);"#.into(),
    );
    b.policies.insert(
        "staff".into(),
        r#"permit (principal in Group::"staff", action == Action::"read", resource in Folder::"f");"#
            .into(),
    );
    b.policies.insert(
        "other".into(),
        r#"permit (principal in Group::"other", action, resource);"#.into(),
    );
    b.policies.insert(
        "docs".into(),
        r#"forbid (principal, action, resource is Doc) when { resource.secret };"#.into(),
    );
    b.entities = Some(
        r#"[{"uid":{"type":"User","id":"alice"},"attrs":{},"parents":[{"type":"Group","id":"staff"}]},
            {"uid":{"type":"Group","id":"staff"},"attrs":{},"parents":[]},
            {"uid":{"type":"Doc","id":"d"},"attrs":{"secret":false},"parents":[{"type":"Folder","id":"f"}]},
            {"uid":{"type":"Folder","id":"f"},"attrs":{},"parents":[]}]"#
            .into(),
    );
    let mut doc = PolicyDoc::new();
    doc.build_bundle(ActorId::from(vec![1u8; 40]), "t", &b, 0)
        .unwrap();
    let view = doc.view();
    let uid = |s: &str| EntityUid::from_str(s).unwrap();
    let ids = |p: &str, a: &str, r: &str| {
        let mut v: Vec<String> = view
            .index()
            .candidates(view.entities(), &uid(p), &uid(a), &uid(r))
            .into_iter()
            .map(|c| c.id.to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        ids(r#"User::"alice""#, r#"Action::"read""#, r#"Doc::"d""#),
        ["t/alice", "t/docs", "t/staff"]
    );
    assert_eq!(
        ids(r#"User::"alice""#, r#"Action::"write""#, r#"Doc::"d""#),
        ["t/alice", "t/docs"]
    );
    assert_eq!(
        ids(r#"User::"bob""#, r#"Action::"read""#, r#"Folder::"f""#),
        Vec::<String>::new()
    );
    let d = decide(
        view,
        &Request::new(
            uid(r#"User::"alice""#),
            uid(r#"Action::"read""#),
            uid(r#"Doc::"d""#),
        ),
    );
    assert!(d.allow);
    assert_eq!(d.reasons, ["t/alice", "t/staff"]);
}
