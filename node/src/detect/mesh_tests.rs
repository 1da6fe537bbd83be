//! Tests of the summaries and the mesh view: the merge's algebra, a probe
//! spread over three sites, refused summaries, the cross-site signals.

use proptest::prelude::*;
use weft_protocol::identity::{NodeId, SecretKey};
use weft_protocol::summary::{MAX_SIGNED_SUMMARY_BYTES, PrincipalSummary, SignedSummary, Summary};

use super::mesh::{MeshConfig, MeshView, merge_sketch};
use super::summary::{Cell, SLOT_MS};
use super::*;

const T0: u64 = 1_767_600_000_000;

fn key(i: u8) -> SecretKey {
    SecretKey::from_seed([i + 1; 32])
}

fn node(i: u8) -> NodeId {
    NodeId::new(key(i).public())
}

fn ev(at_ms: u64, principal: &str, resource: String, allow: bool, site: u8) -> DecisionEvent {
    DecisionEvent {
        at_ms,
        principal: principal.into(),
        action: "Action::\"admin\"".into(),
        resource,
        allow,
        token_failed: false,
        site: Some(format!("site-{site}")),
    }
}

/// A mesh of `n` nodes as [`super::mesh_eval`] runs it: detectors with
/// summaries, views, and an exchange of signed bytes at each slot's end.
struct Mesh {
    detectors: Vec<Detector>,
    views: Vec<MeshView>,
    /// Whether the nodes exchange summaries at all.
    share: bool,
    /// A node cut off from the others (a partition), if any.
    cut: Option<usize>,
    local: Vec<Alert>,
    mesh: Vec<(usize, Alert)>,
}

impl Mesh {
    fn new(n: u8, share: bool) -> Mesh {
        Mesh {
            detectors: (0..n)
                .map(|_| {
                    let mut d = Detector::new(DetectorConfig::default(), 1);
                    d.enable_summaries();
                    d
                })
                .collect(),
            views: (0..n)
                .map(|_| MeshView::new(MeshConfig::default()))
                .collect(),
            share,
            cut: None,
            local: Vec::new(),
            mesh: Vec::new(),
        }
    }

    fn exchange(&mut self, now_ms: u64) {
        let mut sent = Vec::new();
        for (i, (d, v)) in self.detectors.iter_mut().zip(&mut self.views).enumerate() {
            v.advance(now_ms);
            for s in d.summarize(node(i as u8), now_ms) {
                v.ingest_local(&s).unwrap();
                sent.push((i, SignedSummary::sign(&s, &key(i as u8)).to_bytes()));
            }
        }
        if self.share {
            for (from, bytes) in &sent {
                for (j, v) in self.views.iter_mut().enumerate() {
                    let across = self.cut.is_some_and(|c| (c == j) != (c == *from));
                    if j != *from && !across {
                        v.ingest_bytes(bytes, |_| true).unwrap();
                    }
                }
            }
        }
        for (i, (d, v)) in self.detectors.iter().zip(&mut self.views).enumerate() {
            self.mesh
                .extend(d.check_mesh(v, now_ms).into_iter().map(|a| (i, a)));
        }
    }

    /// Replays `events` (in time order) at their sites.
    fn run(&mut self, events: &[DecisionEvent]) {
        let mut cur = None;
        for e in events {
            let slot = e.at_ms / SLOT_MS;
            if cur.is_some_and(|c| slot > c) {
                self.exchange(slot * SLOT_MS);
            }
            cur = Some(slot);
            let site: usize = e.site.as_deref().unwrap()[5..].parse().unwrap();
            self.local.extend(self.detectors[site].observe(e));
            if let Some(a) = self.views[site].observe_local(node(site as u8), e) {
                self.mesh.push((site, a));
            }
        }
        if let Some(c) = cur {
            self.exchange((c + 1) * SLOT_MS);
        }
    }
}

/// A probe of 60 s over three sites: 14 requests at each, over 14
/// resources, all denied: 42 denies in the mesh's window, 14 at any site,
/// under the deny floor of 30.
fn spread_probe() -> Vec<DecisionEvent> {
    let mut out = Vec::new();
    for k in 0..42u64 {
        out.push(ev(
            T0 + k * 1_400,
            "User::\"mallory\"",
            format!("Secret::\"s-{k}\""),
            false,
            (k % 3) as u8,
        ));
    }
    out
}

#[test]
fn a_probe_spread_over_three_sites_is_flagged_by_the_mesh_and_by_no_site_alone() {
    let probe = spread_probe();

    let mut alone = Mesh::new(3, false);
    alone.run(&probe);
    assert!(alone.local.is_empty(), "{:?}", alone.local);
    assert!(alone.mesh.is_empty(), "{:?}", alone.mesh);

    let mut mesh = Mesh::new(3, true);
    mesh.run(&probe);
    assert!(mesh.local.is_empty(), "{:?}", mesh.local);
    let sites: std::collections::BTreeSet<usize> = mesh.mesh.iter().map(|(i, _)| *i).collect();
    assert_eq!(sites.len(), 3, "every site that served the probe flags it");
    let (_, first) = &mesh.mesh[0];
    assert_eq!(first.principal, "User::\"mallory\"");
    // Denies at three sites: the spread signal, after 20 s (15 denies).
    assert_eq!(first.signal.as_deref(), Some("deny_spread"), "{first:?}");
    assert!(first.reason.contains("over 3 sites"), "{}", first.reason);
    assert!(first.at_ms <= T0 + 30_000, "{}", first.at_ms - T0);
}

#[test]
fn the_mesh_view_works_per_partition_side() {
    // 16 denies at each of three sites; site 2 is cut off. Sites 0 and 1
    // hear each other: 32 denies in their view cross the floor (30). Site 2
    // hears no one: its 16 do not.
    let mut probe = Vec::new();
    for k in 0..48u64 {
        probe.push(ev(
            T0 + k * 1_200,
            "User::\"mallory\"",
            format!("Secret::\"s-{k}\""),
            false,
            (k % 3) as u8,
        ));
    }
    let mut mesh = Mesh::new(3, true);
    mesh.cut = Some(2);
    mesh.run(&probe);
    assert!(mesh.local.is_empty());
    let sites: std::collections::BTreeSet<usize> = mesh.mesh.iter().map(|(i, _)| *i).collect();
    assert_eq!(sites, [0, 1].into_iter().collect(), "{:?}", mesh.mesh);
    assert!(
        mesh.mesh[0].1.reason.contains("at 2 sites"),
        "{}",
        mesh.mesh[0].1.reason
    );
}

#[test]
fn forged_unsigned_oversized_and_unadmitted_summaries_are_refused_and_change_nothing() {
    let mut view = MeshView::new(MeshConfig::default());
    view.advance(T0);
    let s = Summary {
        node: node(0),
        slot_start_ms: T0,
        slot_ms: SLOT_MS as u32,
        dropped: 0,
        principals: vec![PrincipalSummary {
            principal: "User::\"a\"".into(),
            requests: 40,
            denies: 40,
            token_failures: 0,
            resources: [u64::MAX; 4],
            actions: [1],
            pairs: [1, 0, 0, 0],
        }],
    };
    let good = SignedSummary::sign(&s, &key(0));
    let mut forged = SignedSummary::sign(&s, &key(1));
    forged.node = node(0);
    let mut unsigned = good.clone();
    unsigned.sig = weft_protocol::identity::Signature::from_bytes([0; 64]);
    let oversized = vec![7u8; MAX_SIGNED_SUMMARY_BYTES + 1];
    let admitted = |n: &NodeId| *n == node(0);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("forged", forged.to_bytes()),
        ("unsigned", unsigned.to_bytes()),
        ("oversized", oversized),
        ("garbage", b"WEFT\x71\x01\xff\xff".to_vec()),
    ];
    for (what, bytes) in cases {
        let e = view.ingest_bytes(&bytes, admitted).unwrap_err().to_string();
        assert!(!e.contains('\n') && !e.is_empty(), "{what}: {e}");
        assert!(e.starts_with("the detection summary"), "{what}: {e}");
        assert_eq!(view.cells(), 0, "{what}");
    }
    let other = SignedSummary::sign(&s, &key(2));
    let e = view.ingest(&other, admitted).unwrap_err();
    assert!(e.to_string().contains("not admitted"), "{e}");
    assert_eq!(view.cells(), 0);
    // Stale: a slot older than the window.
    let mut old = s.clone();
    old.slot_start_ms = T0 - 10 * SLOT_MS;
    let e = view
        .ingest(&SignedSummary::sign(&old, &key(0)), admitted)
        .unwrap_err();
    assert!(e.to_string().contains("older than the window"), "{e}");
    assert_eq!(view.sites(), 0);
    assert_eq!(view.ingest(&good, admitted).unwrap(), 1);
    assert_eq!(view.cells(), 1);
}

fn history_then(view: &mut MeshView, p: &str, sites: &[u8], slots: u64, from: u64) -> u64 {
    history_with_pairs(view, p, sites, slots, from, [1, 0, 0, 0])
}

/// [`history_then`] with this (action, resource type) pair sketch.
fn history_with_pairs(
    view: &mut MeshView,
    p: &str,
    sites: &[u8],
    slots: u64,
    from: u64,
    pairs: [u64; 4],
) -> u64 {
    let mut t = from;
    for _ in 0..slots {
        view.advance(t);
        for s in sites {
            let sum = Summary {
                node: node(*s),
                slot_start_ms: t,
                slot_ms: SLOT_MS as u32,
                dropped: 0,
                principals: vec![PrincipalSummary {
                    principal: p.into(),
                    requests: 1,
                    denies: 0,
                    token_failures: 0,
                    resources: [1, 0, 0, 0],
                    actions: [1],
                    pairs,
                }],
            };
            view.ingest(&SignedSummary::sign(&sum, &key(*s)), |_| true)
                .unwrap();
        }
        t += SLOT_MS;
    }
    t
}

#[test]
fn first_visits_to_three_sites_and_impossible_travel_alert_on_an_established_principal() {
    let served = |_: &str| true;
    // 40 slots at site 0: a history.
    let mut view = MeshView::new(MeshConfig::default());
    let t = history_then(&mut view, "User::\"u\"", &[0], 40, T0);
    let t = history_then(&mut view, "User::\"u\"", &[0], 7, t);
    assert!(view.check(t, served).is_empty());
    // Then at sites 1, 2 and 3 within a minute.
    let t2 = history_then(&mut view, "User::\"u\"", &[1, 2, 3], 1, t);
    let a = view.check(t2, served);
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0].signal.as_deref(), Some("first_visits"));

    // At one new site, twice while at home: impossible travel.
    let mut view = MeshView::new(MeshConfig::default());
    let t = history_then(&mut view, "User::\"v\"", &[0], 47, T0);
    let t = history_then(&mut view, "User::\"v\"", &[0, 5], 2, t);
    let a = view.check(t, served);
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0].signal.as_deref(), Some("impossible_travel"));

    // A shared account, at three sites at once in its history: plausible.
    let mut view = MeshView::new(MeshConfig::default());
    let t = history_then(&mut view, "Service::\"s\"", &[0, 1, 2], 47, T0);
    let t = history_then(&mut view, "Service::\"s\"", &[0, 1, 5], 2, t);
    assert!(view.check(t, served).is_empty());

    // A newcomer has no history to speak for it: nothing.
    let mut view = MeshView::new(MeshConfig::default());
    let t = history_then(&mut view, "User::\"n\"", &[0, 1, 2, 3], 3, T0);
    assert!(view.check(t, served).is_empty());
}

fn cell() -> impl Strategy<Value = Cell> {
    (
        0u32..50,
        0u32..50,
        0u32..50,
        prop::array::uniform4(any::<u64>()),
        any::<u64>(),
        prop::array::uniform4(any::<u64>()),
    )
        .prop_map(|(r, d, t, res, a, pairs)| Cell {
            requests: r,
            denies: d,
            token_failures: t,
            resources: res,
            actions: [a],
            pairs,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn sketch_merge_is_commutative_associative_idempotent(
        a in prop::array::uniform4(any::<u64>()),
        b in prop::array::uniform4(any::<u64>()),
        c in prop::array::uniform4(any::<u64>()),
    ) {
        prop_assert_eq!(merge_sketch(&a, &b), merge_sketch(&b, &a));
        prop_assert_eq!(
            merge_sketch(&merge_sketch(&a, &b), &c),
            merge_sketch(&a, &merge_sketch(&b, &c))
        );
        prop_assert_eq!(merge_sketch(&a, &a), a);
        let mut x = Cell { resources: a, ..Cell::default() };
        let y = Cell { resources: b, requests: 3, ..Cell::default() };
        let mut z = y;
        z.join(&x);
        x.join(&y);
        prop_assert_eq!(x, z);
        let once = x;
        x.join(&y);
        prop_assert_eq!(x, once);
    }

    /// Summaries of three sites over two slots, ingested in any order and
    /// some twice, give the same merged view.
    #[test]
    fn order_and_duplicates_do_not_change_the_merged_view(
        cells in prop::collection::vec((0u8..3, 0u64..2, 0usize..3, cell()), 1..12),
        order in any::<u64>(),
        dups in prop::collection::vec(0usize..12, 0..4),
    ) {
        let names = ["User::\"a\"", "User::\"b\"", "User::\"c\""];
        // One summary per (site, slot), its cells by principal; a cell
        // drawn twice for one line is joined first.
        let mut by: std::collections::BTreeMap<(u8, u64), std::collections::BTreeMap<usize, Cell>> =
            Default::default();
        for (site, slot, p, mut c) in cells {
            c.denies = c.denies.min(c.requests);
            c.token_failures = c.token_failures.min(c.requests);
            if c.requests == 0 {
                continue;
            }
            by.entry((site, slot)).or_default().entry(p).and_modify(|o| o.join(&c)).or_insert(c);
        }
        let signed: Vec<SignedSummary> = by
            .iter()
            .map(|((site, slot), ps)| {
                let s = Summary {
                    node: node(*site),
                    slot_start_ms: T0 + slot * SLOT_MS,
                    slot_ms: SLOT_MS as u32,
                    dropped: 0,
                    principals: ps
                        .iter()
                        .map(|(p, c)| PrincipalSummary {
                            principal: names[*p].into(),
                            requests: c.requests,
                            denies: c.denies,
                            token_failures: c.token_failures,
                            resources: c.resources,
                            actions: c.actions,
                            pairs: c.pairs,
                        })
                        .collect(),
                };
                SignedSummary::sign(&s, &key(*site))
            })
            .collect();
        let view_of = |list: &[&SignedSummary]| {
            let mut v = MeshView::new(MeshConfig::default());
            v.advance(T0 + 2 * SLOT_MS);
            for s in list {
                v.ingest(s, |_| true).unwrap();
            }
            names.map(|n| v.window(n))
        };
        let plain: Vec<&SignedSummary> = signed.iter().collect();
        let mut shuffled = plain.clone();
        let mut seed = order;
        for i in (1..shuffled.len()).rev() {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (seed >> 33) as usize % (i + 1));
        }
        for d in dups {
            if !plain.is_empty() {
                shuffled.push(plain[d % plain.len()]);
            }
        }
        prop_assert_eq!(view_of(&plain), view_of(&shuffled));
    }
}

#[test]
fn a_summary_holds_the_slot_and_the_busiest_principals() {
    let mut d = Detector::new(DetectorConfig::default(), 1);
    d.enable_summaries();
    for k in 0..5u64 {
        d.observe(&ev(
            T0 + k,
            "User::\"a\"",
            format!("Doc::\"{k}\""),
            k != 0,
            0,
        ));
    }
    d.observe(&ev(T0 + 5, "User::\"b\"", "Doc::\"x\"".into(), true, 0));
    assert!(
        d.summarize(node(0), T0 + SLOT_MS - 1).is_empty(),
        "the slot has not ended"
    );
    let s = d.summarize(node(0), T0 + SLOT_MS);
    assert_eq!(s.len(), 1);
    let s = &s[0];
    assert_eq!(s.slot_start_ms, T0);
    assert_eq!(s.principals.len(), 2);
    assert_eq!(s.principals[0].principal, "User::\"a\"");
    assert_eq!((s.principals[0].requests, s.principals[0].denies), (5, 1));
    assert_eq!(super::summary::popcount(&s.principals[0].resources), 5);
    // Nothing twice.
    assert!(d.summarize(node(0), T0 + 2 * SLOT_MS).is_empty());
    // Signed, encoded, decoded and verified, it is the same summary.
    let bytes = SignedSummary::sign(s, &key(0)).to_bytes();
    let (_, back) = SignedSummary::open(&bytes, |_| true).unwrap();
    assert_eq!(&back, s);
}

/// One slot of `p` at site 0 using the resources of `bits`, merged as
/// the node's own summary.
fn slot_with(view: &mut MeshView, p: &str, t: u64, bits: &[usize]) {
    view.advance(t);
    let mut resources = [0u64; 4];
    for b in bits {
        resources[b / 64] |= 1 << (b % 64);
    }
    let s = Summary {
        node: node(0),
        slot_start_ms: t,
        slot_ms: SLOT_MS as u32,
        dropped: 0,
        principals: vec![PrincipalSummary {
            principal: p.into(),
            requests: bits.len() as u32,
            denies: 0,
            token_failures: 0,
            resources,
            actions: [1],
            pairs: [1, 0, 0, 0],
        }],
    };
    view.ingest_local(&s).unwrap();
}

#[test]
fn resources_new_to_an_established_principal_alert_at_the_fourteenth_within_an_hour() {
    let served = |_: &str| true;
    let p = "User::\"w\"";
    let mut view = MeshView::new(MeshConfig::default());
    // Four hours of its working set, 20 resources, one a slot.
    let mut t = T0;
    for k in 0..1440usize {
        slot_with(&mut view, p, t, &[k % 20]);
        t += SLOT_MS;
    }
    assert!(view.check(t, served).is_empty());
    // Then a new resource every 3 minutes among its usual ones: nothing
    // for thirteen, an alert at the fourteenth.
    let mut alerts: Vec<Alert> = Vec::new();
    for n in 0..14usize {
        for k in 0..17usize {
            slot_with(&mut view, p, t, &[k % 20]);
            t += SLOT_MS;
            assert!(view.check(t, served).is_empty(), "{n} {k}");
        }
        slot_with(&mut view, p, t, &[n % 20, 100 + n]);
        t += SLOT_MS;
        alerts.extend(view.check(t, served));
        assert_eq!(alerts.is_empty(), n < 13, "after {} new: {alerts:?}", n + 1);
    }
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].signal.as_deref(), Some("new_resources"));
    assert!(alerts[0].reason.contains("14 bits"), "{}", alerts[0].reason);

    // The alert consumed them: thirteen more during its cool-down (15 min)
    // and one after it do not alert.
    for n in 0..13usize {
        slot_with(&mut view, p, t, &[140 + n]);
        t += 6 * SLOT_MS;
    }
    t += 30 * SLOT_MS;
    slot_with(&mut view, p, t, &[200]);
    assert!(view.check(t + SLOT_MS, served).is_empty());

    // A principal still meeting its world, fourteen new resources an hour
    // for five hours: as many as in the hour before, nothing.
    let mut view = MeshView::new(MeshConfig::default());
    let mut t = T0;
    for k in 0..1800usize {
        let new = if k % 25 == 0 { vec![k / 25] } else { vec![] };
        let mut bits = vec![k % 3];
        bits.extend(new);
        slot_with(&mut view, "User::\"slow\"", t, &bits);
        t += SLOT_MS;
        assert!(view.check(t, served).is_empty(), "{k}");
    }

    // A principal first seen an hour ago meeting 20 new resources: its
    // history is too young to speak for it.
    let mut view = MeshView::new(MeshConfig::default());
    let mut t = T0;
    for k in 0..360usize {
        slot_with(&mut view, "User::\"young\"", t, &[k % 20]);
        t += SLOT_MS;
    }
    for n in 0..20usize {
        slot_with(&mut view, "User::\"young\"", t, &[100 + n]);
        t += SLOT_MS;
        assert!(view.check(t, served).is_empty());
    }
}

/// An attack at site 1 that node 0's view did not alert on (node 0 did
/// not serve the principal then), then the principal back at node 0 at
/// its usual work, 20 minutes later; `told` says whether node 0 heard of
/// the alert raised at site 1.
fn back_home_after_an_attack_elsewhere(told: bool) -> Vec<Alert> {
    let p = "User::\"back\"";
    let mut view = MeshView::new(MeshConfig::default());
    let mut t = T0;
    for k in 0..1440usize {
        slot_with(&mut view, p, t, &[k % 20]);
        t += SLOT_MS;
    }
    view.advance(t);
    let mut resources = [0u64; 4];
    for b in 100..130 {
        resources[b / 64] |= 1 << (b % 64);
    }
    let attack = Summary {
        node: node(1),
        slot_start_ms: t,
        slot_ms: SLOT_MS as u32,
        dropped: 0,
        principals: vec![PrincipalSummary {
            principal: p.into(),
            requests: 30,
            denies: 0,
            token_failures: 0,
            resources,
            actions: [1],
            pairs: [1, 0, 0, 0],
        }],
    };
    view.ingest(&SignedSummary::sign(&attack, &key(1)), |_| true)
        .unwrap();
    assert!(view.check(t + SLOT_MS, |_| false).is_empty());
    if told {
        view.note_alert(p, t + 5_000);
    }
    t += 120 * SLOT_MS;
    let mut out = Vec::new();
    for k in 0..60usize {
        slot_with(&mut view, p, t, &[k % 20]);
        t += SLOT_MS;
        out.extend(view.check(t, |_| true));
    }
    out
}

#[test]
fn an_alert_raised_elsewhere_consumes_the_new_resources_it_was_about() {
    let untold = back_home_after_an_attack_elsewhere(false);
    assert_eq!(untold.len(), 1, "{untold:?}");
    assert_eq!(untold[0].signal.as_deref(), Some("new_resources"));
    let told = back_home_after_an_attack_elsewhere(true);
    assert!(told.is_empty(), "{told:?}");
}

#[test]
fn a_principal_meeting_new_resources_at_a_steady_fast_pace_is_not_flagged() {
    // An explorer: a new resource every minute, hour after hour (a user
    // browsing through tickets). As many in each hour as in the one
    // before, however many: nothing, until its sketch is full.
    let served = |_: &str| true;
    let p = "User::\"explorer\"";
    let mut view = MeshView::new(MeshConfig::default());
    let mut t = T0;
    for k in 0..1500usize {
        slot_with(&mut view, p, t, &[k / 6]);
        t += SLOT_MS;
        let a = view.check(t, served);
        assert!(a.is_empty(), "slot {k}: {a:?}");
    }
}

#[test]
fn a_probe_with_pairs_it_never_used_is_flagged_at_its_third_deny_on_the_spot() {
    // An established principal at its own site, then refused three times
    // on (admin, Secret), a pair its history never saw: the node's own
    // decision completes the signal, so the alert needs not wait for the
    // slot's end or for another site.
    let mut view = MeshView::new(MeshConfig::default());
    let p = "User::\"prober\"";
    // Its history, then a quiet minute: the probe is all its window holds.
    let t = history_then(&mut view, p, &[0], 40, T0) + 7 * SLOT_MS;
    let mut alerts = Vec::new();
    for k in 0..3u64 {
        let e = ev(
            t + 1_000 + k * 2_000,
            p,
            format!("Secret::\"s{k}\""),
            false,
            0,
        );
        let a = view.observe_local(node(0), &e);
        assert_eq!(a.is_some(), k == 2, "deny {}: {a:?}", k + 1);
        alerts.extend(a);
    }
    assert_eq!(alerts[0].signal.as_deref(), Some("new_pair_denies"));
    assert!(alerts[0].at_ms < t + SLOT_MS, "{:?}", alerts[0]);

    // The same denies on a pair its history knows: a refused retry, nothing.
    let mut view = MeshView::new(MeshConfig::default());
    let t = history_then(&mut view, p, &[0], 40, T0);
    let mut known = ev(t + 1_000, p, "Doc::\"d\"".into(), true, 0);
    known.action = "Action::\"view\"".into();
    view.observe_local(node(0), &known);
    view.advance(t + 8 * SLOT_MS);
    for k in 0..4u64 {
        let e = DecisionEvent {
            allow: false,
            at_ms: t + 9 * SLOT_MS + k * 1_000,
            ..known.clone()
        };
        assert!(view.observe_local(node(0), &e).is_none());
    }
}

#[test]
fn at_a_new_site_then_back_at_home_is_flagged_and_a_traveller_is_not() {
    let served = |_: &str| true;
    // At site 5, never used, then back at site 0 the next slot: an
    // intruder at a new site while the principal works at home.
    let mut view = MeshView::new(MeshConfig::default());
    let p = "User::\"v\"";
    let t = history_then(&mut view, p, &[0], 47, T0);
    let t = history_then(&mut view, p, &[5], 1, t);
    assert!(view.check(t, served).is_empty());
    let t = history_then(&mut view, p, &[0], 1, t);
    let a = view.check(t, served);
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0].signal.as_deref(), Some("impossible_travel"));
    assert!(a[0].reason.contains("back"), "{}", a[0].reason);

    // A traveller: at home, then at site 5 from then on, with its own
    // pairs: nothing.
    let mut view = MeshView::new(MeshConfig::default());
    let t = history_then(&mut view, "User::\"trav\"", &[0], 47, T0);
    let t = history_then(&mut view, "User::\"trav\"", &[5], 12, t);
    assert!(view.check(t, served).is_empty());

    // First visits to two sites within 15 min: flagged.
    let mut view = MeshView::new(MeshConfig::default());
    let t = history_then(&mut view, "User::\"w\"", &[0], 47, T0);
    let t = history_then(&mut view, "User::\"w\"", &[3], 1, t);
    assert!(view.check(t, served).is_empty());
    let t = history_then(&mut view, "User::\"w\"", &[4], 1, t);
    let a = view.check(t, served);
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0].signal.as_deref(), Some("first_visits"));
}

/// A local alert driven by new (action, resource type) pairs, for
/// `principal`, as a site's detector raises it.
fn new_pairs_alert(principal: &str, at_ms: u64) -> Alert {
    Alert {
        principal: principal.into(),
        score: 0.5,
        at_ms,
        features: vec![FeatureContribution {
            name: "new_pairs".into(),
            value: 6.0,
            baseline: 0.75,
            z: 4.0,
            contribution: 0.9,
        }],
        window_start_ms: at_ms,
        window_end_ms: at_ms,
        evidence: Vec::new(),
        reason: String::new(),
        floor: None,
        signal: None,
    }
}

#[test]
fn a_site_new_pair_alert_on_pairs_the_mesh_knows_is_explained_and_a_new_pair_is_not() {
    let p = "User::\"trav\"";
    let action = "Action::\"admin\"";
    // Its history: 47 slots at site 0 with the pair (admin, Doc).
    let mut view = MeshView::new(MeshConfig::default());
    let [b1, b2] = weft_protocol::summary::pair_bits(action, "Doc::\"a\"");
    let mut pairs = [0u64; 4];
    for b in [b1, b2] {
        pairs[b / 64] |= 1 << (b % 64);
    }
    let t = history_with_pairs(&mut view, p, &[0], 47, T0, pairs);
    // At site 5, whose detector has not seen it use the pair: the mesh has.
    let known = ev(t, p, "Doc::\"b\"".into(), true, 5);
    let o = view.observe_beside(node(5), &known, Some(new_pairs_alert(p, t)));
    assert!(o.explained && o.local.is_none(), "{o:?}");
    assert!(view.explains(&new_pairs_alert(p, t)));
    // A floor, or another driving feature, is never explained away.
    let mut floor = new_pairs_alert(p, t);
    floor.floor = Some("denies".into());
    assert!(!view.explains(&floor));
    let mut rate = new_pairs_alert(p, t);
    rate.features[0].name = "rate".into();
    assert!(!view.explains(&rate));
    // A pair it never used anywhere: not explained.
    let new = ev(t + 1, p, "Folder::\"x\"".into(), true, 5);
    let o = view.observe_beside(node(5), &new, Some(new_pairs_alert(p, t + 1)));
    assert!(!o.explained && o.local.is_some(), "{o:?}");
    // A principal the mesh has no history of: not explained.
    let stranger = "User::\"new\"";
    let _ = view.observe_local(node(5), &ev(t + 2, stranger, "Doc::\"a\"".into(), true, 5));
    assert!(!view.explains(&new_pairs_alert(stranger, t + 2)));
}

#[test]
fn resources_new_at_a_pace_rising_over_hours_alert_against_the_quieter_hour() {
    // Low and slow: nine new resources in an hour, then fourteen in the
    // next. Against the hour just before (nine) that is not twice as many;
    // against the quieter of the two hours before (none), it is.
    let served = |_: &str| true;
    let p = "User::\"ramp\"";
    let mut view = MeshView::new(MeshConfig::default());
    let mut t = T0;
    for k in 0..1440usize {
        slot_with(&mut view, p, t, &[k % 20]);
        t += SLOT_MS;
    }
    let mut alerts = Vec::new();
    let mut bit = 100;
    for k in 0..360usize {
        let mut bits = vec![k % 20];
        if k % 40 == 39 {
            bits.push(bit);
            bit += 1;
        }
        slot_with(&mut view, p, t, &bits);
        t += SLOT_MS;
        alerts.extend(view.check(t, served));
    }
    assert!(alerts.is_empty(), "{alerts:?}");
    for k in 0..375usize {
        let mut bits = vec![k % 20];
        if k % 25 == 24 {
            bits.push(bit);
            bit += 1;
        }
        slot_with(&mut view, p, t, &bits);
        t += SLOT_MS;
        alerts.extend(view.check(t, served));
    }
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0].signal.as_deref(), Some("new_resources"));
    assert!(
        alerts[0].reason.contains("0 in the quieter"),
        "{}",
        alerts[0].reason
    );
}

/// Nodes publish at their own point of each slot, spread over
/// `PUBLISH_SPREAD_MS` after the grace, so that a mesh's summaries do not
/// all arrive at once; each node's point is the same at every slot.
#[test]
fn nodes_publish_at_their_own_point_of_the_slot() {
    use super::summary::{PUBLISH_SPREAD_MS, SLOT_GRACE_MS, publish_due_ms, publish_offset_ms};
    let offsets: Vec<u64> = (0..200u8).map(|i| publish_offset_ms(&node(i))).collect();
    let mut buckets = [0usize; 5];
    for &o in &offsets {
        assert!(
            (SLOT_GRACE_MS..SLOT_GRACE_MS + PUBLISH_SPREAD_MS).contains(&o),
            "{o}"
        );
        buckets[((o - SLOT_GRACE_MS) * 5 / PUBLISH_SPREAD_MS) as usize] += 1;
    }
    // Spread over the whole span: every fifth of it holds 10-30% of them.
    assert!(
        buckets.iter().all(|&b| (20..=60).contains(&b)),
        "{buckets:?}"
    );
    assert_eq!(
        publish_offset_ms(&node(7)),
        offsets[7],
        "a node's point is fixed"
    );

    for offset in [
        SLOT_GRACE_MS,
        offsets[3],
        SLOT_GRACE_MS + PUBLISH_SPREAD_MS - 1,
    ] {
        for now in [
            T0,
            T0 + 1,
            T0 + offset - 1,
            T0 + offset,
            T0 + SLOT_MS - 1,
            T0 + 123_456,
        ] {
            let due = publish_due_ms(now, offset);
            assert!(due > now && due - now <= SLOT_MS, "{now} {offset} {due}");
            assert_eq!(due % SLOT_MS, offset, "{now} {offset} {due}");
        }
    }
}
