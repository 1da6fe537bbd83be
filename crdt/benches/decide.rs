//! `decide()` against raw Cedar `Authorizer::is_authorized` on the same
//! policies and entities, at 10, 1,000 and 10,000 policies.
//!
//! Run: `cargo bench -p weft-crdt --bench decide`

use std::hint::black_box;
use std::str::FromStr;

use cedar_policy::{Authorizer, Context, Entities, EntityUid, Request as CedarRequest};
use criterion::{BenchmarkId, Criterion, criterion_main};
use weft_crdt::{ActorId, BundleContent, PolicyDoc, Request, decide};

/// RBAC policies: `permit (principal in Group::"gN", action == Action::"read", resource in Folder::"fN");`
/// plus one forbid, and entities putting a user in the last group and a doc in the last folder.
fn bundle(n: usize) -> BundleContent {
    let mut b = BundleContent::default();
    for i in 0..n - 1 {
        b.policies.insert(
            format!("g{i}"),
            format!(
                r#"permit (principal in Group::"g{i}", action == Action::"read", resource in Folder::"f{i}");"#
            ),
        );
    }
    b.policies.insert(
        "deny-mallory".into(),
        r#"forbid (principal == User::"mallory", action, resource);"#.into(),
    );
    let last = n - 2;
    b.entities = Some(format!(
        r#"[{{"uid":{{"type":"User","id":"alice"}},"attrs":{{}},"parents":[{{"type":"Group","id":"g{last}"}}]}},
            {{"uid":{{"type":"Group","id":"g{last}"}},"attrs":{{}},"parents":[]}},
            {{"uid":{{"type":"Doc","id":"d"}},"attrs":{{}},"parents":[{{"type":"Folder","id":"f{last}"}}]}},
            {{"uid":{{"type":"Folder","id":"f{last}"}},"attrs":{{}},"parents":[]}}]"#
    ));
    b
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide");
    for n in [10usize, 1_000, 10_000] {
        let mut doc = PolicyDoc::new();
        doc.build_bundle(ActorId::from(vec![1u8; 40]), "rbac", &bundle(n), 0)
            .unwrap();
        // A few revocations, so the revocation check does real work.
        for i in 0..100u32 {
            let mut actor = vec![2u8; 40];
            actor[..4].copy_from_slice(&i.to_be_bytes());
            doc.build_revoke(ActorId::from(actor), &format!(r#"User::"gone{i}""#), "", 0)
                .unwrap();
        }
        let view = doc.view().clone();
        let uid = |s: &str| EntityUid::from_str(s).unwrap();
        let req = Request::new(
            uid(r#"User::"alice""#),
            uid(r#"Action::"read""#),
            uid(r#"Doc::"d""#),
        );
        let d = decide(&view, &req);
        assert!(d.allow, "benchmark request should be allowed: {d:?}");

        let policies = view.policies().clone();
        let entities: Entities = view.entities().clone();
        let cedar_req = CedarRequest::new(
            uid(r#"User::"alice""#),
            uid(r#"Action::"read""#),
            uid(r#"Doc::"d""#),
            Context::empty(),
            None,
        )
        .unwrap();
        let authorizer = Authorizer::new();
        group.bench_with_input(BenchmarkId::new("raw_cedar", n), &n, |b, _| {
            b.iter(|| black_box(authorizer.is_authorized(&cedar_req, &policies, &entities)))
        });
        group.bench_with_input(BenchmarkId::new("weft_decide", n), &n, |b, _| {
            b.iter(|| black_box(decide(&view, &req)))
        });
    }
    group.finish();
}

#[allow(missing_docs)]
mod harness {
    criterion::criterion_group!(benches, super::bench);
}
criterion_main!(harness::benches);
