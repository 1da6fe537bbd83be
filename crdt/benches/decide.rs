//! Decision latency at 10, 1,000, 10,000 and 100,000 policies, side by side in
//! one run: raw Cedar `Authorizer::is_authorized` over every policy, Weft's
//! indexed `decide()`, and regorus (Rego) on an equivalent data-driven policy.
//!
//! The policies are RBAC grants, `permit (principal in Group::"gN", action ==
//! Action::"read", resource in Folder::"fN");`, plus one forbid, in bundles of
//! at most 1,000. The request is allowed by the last grant. Regorus holds the
//! same grants as data (`grants[group][folder]`) and the request's groups and
//! folders as input.
//!
//! `weft_decide` repeats one request, so after the first it finds its policy
//! set in the index's cache; `weft_decide_rotating` cycles through up to 8,192
//! distinct users and documents (each under its own grant), more than the
//! cache holds, so at 10,000 policies and up most requests assemble their set;
//! `regorus_rotating` cycles through the same requests. Rotating requests also
//! touch memory that is cold in the CPU's caches, which costs both engines.
//!
//! Run: `cargo bench -p weft-crdt --bench decide` (under `cargo test` it runs
//! once at 10 and 1,000 policies only; `WEFT_BENCH_SIZES=10,10000` picks sizes).

use std::hint::black_box;
use std::str::FromStr;

use cedar_policy::{Authorizer, Context, Entities, EntityUid, Request as CedarRequest};
use std::time::{Duration, Instant};

use weft_crdt::{ActorId, BundleContent, PolicyDoc, Request, decide};

/// The grants `0..n-1` in bundles of at most 1,000 policies, the forbid in
/// the first, and entities putting alice in the last group and a doc in the
/// last folder.
fn bundles(n: usize) -> Vec<(String, BundleContent)> {
    let grants = n - 1;
    let mut out: Vec<(String, BundleContent)> = Vec::new();
    for i in 0..grants {
        if i % 1_000 == 0 {
            out.push((format!("rbac{}", i / 1_000), BundleContent::default()));
        }
        let b = &mut out.last_mut().expect("pushed above").1;
        b.policies.insert(
            format!("g{i}"),
            format!(
                r#"permit (principal in Group::"g{i}", action == Action::"read", resource in Folder::"f{i}");"#
            ),
        );
    }
    let first = &mut out[0].1;
    first.policies.insert(
        "deny-mallory".into(),
        r#"forbid (principal == User::"mallory", action, resource);"#.into(),
    );
    // alice and doc d under the last grant; userK and docK under grant K for
    // the rotating requests.
    let last = grants - 1;
    let mut entities = vec![
        format!(
            r#"{{"uid":{{"type":"User","id":"alice"}},"attrs":{{}},"parents":[{{"type":"Group","id":"g{last}"}}]}}"#
        ),
        format!(
            r#"{{"uid":{{"type":"Doc","id":"d"}},"attrs":{{}},"parents":[{{"type":"Folder","id":"f{last}"}}]}}"#
        ),
    ];
    for k in 0..rotating(n) {
        entities.push(format!(
            r#"{{"uid":{{"type":"User","id":"user{k}"}},"attrs":{{}},"parents":[{{"type":"Group","id":"g{k}"}}]}}"#
        ));
        entities.push(format!(
            r#"{{"uid":{{"type":"Doc","id":"doc{k}"}},"attrs":{{}},"parents":[{{"type":"Folder","id":"f{k}"}}]}}"#
        ));
    }
    first.entities = Some(format!("[{}]", entities.join(",")));
    out
}

/// How many distinct requests the rotating bench cycles through: more than
/// the index's set cache holds, once there are that many grants.
fn rotating(n: usize) -> usize {
    (n - 1).min(8_192)
}

const REGO: &str = r#"
package weft
import rego.v1

default allow := false

allow if {
    not data.forbidden[input.principal]
    input.action == "read"
    some g in input.groups
    some f in input.folders
    data.grants[g][f]
}
"#;

/// A regorus engine holding the same grants as data.
fn regorus_engine(n: usize) -> regorus::Engine {
    let grants = n - 1;
    let mut map = serde_json::Map::new();
    for i in 0..grants {
        map.insert(
            format!("g{i}"),
            serde_json::json!({ format!("f{i}"): true }),
        );
    }
    let data = serde_json::json!({ "grants": map, "forbidden": { "mallory": true } });
    let mut engine = regorus::Engine::new();
    engine
        .add_policy("weft.rego".into(), REGO.into())
        .expect("the Rego policy parses");
    engine
        .add_data(regorus::Value::from_json_str(&data.to_string()).expect("valid JSON"))
        .expect("data loads");
    engine
}

fn regorus_input(n: usize) -> regorus::Value {
    regorus_input_for("alice", n - 2)
}

fn regorus_input_for(principal: &str, grant: usize) -> regorus::Value {
    let last = grant;
    let input = serde_json::json!({
        "principal": principal,
        "action": "read",
        "groups": [format!("g{last}")],
        "folders": [format!("f{last}")],
    });
    regorus::Value::from_json_str(&input.to_string()).expect("valid JSON")
}

/// One contender: a name and a closure that makes one decision.
struct Contender<'a> {
    name: &'static str,
    run: Box<dyn FnMut() + 'a>,
    /// Calls per batch, calibrated so a batch takes about `BATCH_TARGET`.
    batch: u32,
    /// Mean time per call of each round's batch, in ns.
    samples: Vec<f64>,
}

const BATCH_TARGET: Duration = Duration::from_millis(2);

impl Contender<'_> {
    fn calibrate(&mut self) {
        let t = Instant::now();
        (self.run)();
        let one = t.elapsed().max(Duration::from_nanos(50));
        self.batch = (BATCH_TARGET.as_nanos() / one.as_nanos()).clamp(1, 100_000) as u32;
        for _ in 0..self.batch {
            (self.run)();
        }
    }

    fn round(&mut self) {
        let t = Instant::now();
        for _ in 0..self.batch {
            (self.run)();
        }
        self.samples
            .push(t.elapsed().as_nanos() as f64 / f64::from(self.batch));
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Runs the contenders in interleaved rounds (the order rotates each round),
/// so noise from other work on the machine falls on all of them alike, and
/// prints each one's median per-call time with the 10th-90th percentile of
/// the round means, and the median of the per-round ratios to regorus on the
/// same kind of traffic (one request, or rotating).
fn run_paired(n: usize, rounds: usize, contenders: &mut [Contender<'_>]) {
    for c in contenders.iter_mut() {
        c.calibrate();
    }
    for r in 0..rounds {
        let k = contenders.len();
        for i in 0..k {
            contenders[(i + r) % k].round();
        }
    }
    let samples_of = |name: &str| {
        contenders
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.samples.clone())
            .expect("the baseline is a contender")
    };
    for c in contenders.iter() {
        let base = if c.name.contains("rotating") {
            samples_of("regorus, rotating")
        } else {
            samples_of("regorus")
        };
        let mut sorted = c.samples.clone();
        sorted.sort_by(f64::total_cmp);
        let mut ratios: Vec<f64> = c.samples.iter().zip(&base).map(|(a, b)| a / b).collect();
        ratios.sort_by(f64::total_cmp);
        println!(
            "| {n} | {} | {:.2} µs | {:.2}-{:.2} µs | {:.3}× |",
            c.name,
            quantile(&sorted, 0.5) / 1e3,
            quantile(&sorted, 0.1) / 1e3,
            quantile(&sorted, 0.9) / 1e3,
            quantile(&ratios, 0.5),
        );
    }
}

fn main() {
    // `cargo test` runs benches unoptimized: keep the sizes small there.
    let bench = std::env::args().any(|a| a == "--bench");
    let sizes: Vec<usize> = match std::env::var("WEFT_BENCH_SIZES") {
        Ok(list) => list
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .expect("WEFT_BENCH_SIZES: comma-separated sizes")
            })
            .collect(),
        Err(_) if bench => vec![10, 1_000, 10_000, 100_000],
        Err(_) => vec![10, 1_000],
    };
    let rounds: usize = std::env::var("WEFT_BENCH_ROUNDS")
        .ok()
        .map(|r| r.parse().expect("WEFT_BENCH_ROUNDS: a number"))
        .unwrap_or(if bench { 60 } else { 2 });
    println!(
        "| policies | contender | median per call | p10-p90 of rounds | ÷ regorus (median of rounds) |"
    );
    println!("|---|---|---|---|---|");
    for n in sizes {
        let mut doc = PolicyDoc::new();
        for (i, (name, content)) in bundles(n).iter().enumerate() {
            let mut actor = vec![1u8; 40];
            actor[..8].copy_from_slice(&(i as u64).to_be_bytes());
            doc.build_bundle(ActorId::from(actor), name, content, 0)
                .expect("bundle builds");
        }
        // A few revocations, so the revocation check does real work.
        for i in 0..100u32 {
            let mut actor = vec![2u8; 40];
            actor[..4].copy_from_slice(&i.to_be_bytes());
            doc.build_revoke(ActorId::from(actor), &format!(r#"User::"gone{i}""#), "", 0)
                .expect("revocation builds");
        }
        let view = doc.view().clone();
        let uid = |s: &str| EntityUid::from_str(s).expect("valid uid");
        let req = Request::new(
            uid(r#"User::"alice""#),
            uid(r#"Action::"read""#),
            uid(r#"Doc::"d""#),
        );
        let d = decide(&view, &req);
        assert!(d.allow, "benchmark request should be allowed: {d:?}");
        assert_eq!(view.index().len(), n);

        let policies = view.policies().clone();
        assert_eq!(policies.policies().count(), n);
        let entities: Entities = view.entities().clone();
        let cedar_req = CedarRequest::new(
            uid(r#"User::"alice""#),
            uid(r#"Action::"read""#),
            uid(r#"Doc::"d""#),
            Context::empty(),
            None,
        )
        .expect("valid request");
        let authorizer = Authorizer::new();
        assert!(
            authorizer
                .is_authorized(&cedar_req, &policies, &entities)
                .decision()
                == cedar_policy::Decision::Allow
        );

        let mut engine = regorus_engine(n);
        let input = regorus_input(n);
        engine.set_input(input.clone());
        assert_eq!(
            engine
                .eval_rule("data.weft.allow".into())
                .expect("evaluates"),
            regorus::Value::from(true),
            "regorus should allow the benchmark request"
        );

        let rotation: Vec<Request> = (0..rotating(n))
            .map(|k| {
                Request::new(
                    uid(&format!(r#"User::"user{k}""#)),
                    uid(r#"Action::"read""#),
                    uid(&format!(r#"Doc::"doc{k}""#)),
                )
            })
            .collect();
        assert!(rotation.iter().all(|r| decide(&view, r).allow));
        let inputs: Vec<regorus::Value> = (0..rotating(n))
            .map(|k| regorus_input_for(&format!("user{k}"), k))
            .collect();
        let engine = std::cell::RefCell::new(engine);
        let (mut next_weft, mut next_rego) = (0, 0);
        let mut contenders = vec![
            Contender {
                name: "raw Cedar",
                run: Box::new(|| {
                    black_box(authorizer.is_authorized(&cedar_req, &policies, &entities));
                }),
                batch: 1,
                samples: Vec::new(),
            },
            Contender {
                name: "weft decide()",
                run: Box::new(|| {
                    black_box(decide(&view, &req));
                }),
                batch: 1,
                samples: Vec::new(),
            },
            Contender {
                name: "regorus",
                run: Box::new(|| {
                    let mut e = engine.borrow_mut();
                    e.set_input(input.clone());
                    black_box(e.eval_rule("data.weft.allow".into()).expect("evaluates"));
                }),
                batch: 1,
                samples: Vec::new(),
            },
            Contender {
                name: "weft decide(), rotating",
                run: Box::new(|| {
                    next_weft = (next_weft + 1) % rotation.len();
                    black_box(decide(&view, &rotation[next_weft]));
                }),
                batch: 1,
                samples: Vec::new(),
            },
            Contender {
                name: "regorus, rotating",
                run: Box::new(|| {
                    next_rego = (next_rego + 1) % inputs.len();
                    let mut e = engine.borrow_mut();
                    e.set_input(inputs[next_rego].clone());
                    black_box(e.eval_rule("data.weft.allow".into()).expect("evaluates"));
                }),
                batch: 1,
                samples: Vec::new(),
            },
        ];
        run_paired(n, rounds, &mut contenders);
    }
}
