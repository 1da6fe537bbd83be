//! Detection across sites on the node: the gossip of signed detection
//! summaries, and the node's mesh view that merges them.
//!
//! Every 10 s slot ([`SLOT_MS`]) the detector task summarizes what this
//! node decided ([`crate::detect::summary`]), merges its own summary into
//! the view and hands it to the node task, which signs it with the node key
//! and gossips it on [`SUMMARY_TOPIC`] with the node's certificate
//! ([`SummaryGossip`]). A summary that arrives goes through
//! [`MeshDetect::receive`] before gossipsub forwards anything, in this
//! order, each step refusing with the view unchanged:
//!
//! 1. the peer that passed it on must be admitted (otherwise ignored);
//! 2. the size, before anything is decoded, then the envelope only (the
//!    summary's body stays opaque bytes);
//! 3. the certificate must verify under this node's trust root now and be
//!    the certificate of the node that signed the summary: only certified
//!    nodes are admitted, as for quarantine orders (otherwise refused);
//! 4. the node must be neither this one nor revoked (otherwise ignored);
//! 5. the node's rate: at most [`SUMMARY_BURST`] summaries at once and one
//!    per [`SUMMARY_REFILL_MS`] after that, two per slot where an honest
//!    node sends one (otherwise ignored);
//! 6. the summary's signature, then its body and its bounds, then its slot
//!    against the window, then the view's bounds
//!    ([`MeshView::ingest`]): a bad signature or body is refused, a slot
//!    out of the window or a full view ignored.
//!
//! A refused summary is reported to gossipsub as `Reject` (peer scoring
//! counts it against the peer that sent it: an honest peer forwards only
//! what it accepted, and these checks give every node the same answer); an
//! ignored one as `Ignore` (neither forwarded nor held against anyone: a
//! slot can be late, a node's rate or the view's room is this node's view
//! of things). Only a merged summary is forwarded.
//!
//! The view (per principal, per slot, per site: counts and sketches for the
//! last minute, then a bounded history) is the detector's
//! [`MeshView`], bounded by its [`MeshConfig`]; there is no collector, so
//! during a partition each side scores on the sites it still hears from.
//! What is counted ([`MeshStatus`]) shows in `/v1/status` under
//! `anomalies.mesh` and in `/metrics` as
//! `weft_detect_summaries_total{outcome}`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use weft_protocol::identity::NodeId;
use weft_protocol::summary_gossip::SummaryGossip;
use weft_protocol::trust::TrustRoot;

use crate::detect::mesh::{MeshConfig, MeshView, Refused};
use crate::detect::summary::SLOT_MS;
use crate::detect::{DetectorConfig, Floors};

/// The gossipsub topic of signed detection summaries.
pub const SUMMARY_TOPIC: &str = "weft/summaries/v1";

/// Summaries one node may have taken in at once. Four: an honest node
/// sends one a slot, two when its detector task was held up past a slot's
/// end.
pub const SUMMARY_BURST: u32 = 4;

/// After [`SUMMARY_BURST`], one more summary of a node every this long:
/// 5 s, two per slot.
pub const SUMMARY_REFILL_MS: u64 = SLOT_MS / 2;

/// Nodes whose rate is kept at most; past it the one heard from longest
/// ago is forgotten. Only certified nodes get one (the certificate is
/// checked first), so this bounds memory, not who is heard.
pub const MAX_RATED_NODES: usize = 1024;

/// The settings of the mesh view for a detector with `cfg`: its absolute
/// floors applied to the merged window (none when it has none: the learned
/// model alone has no floor on the mesh either), the rest the defaults.
pub fn mesh_config(cfg: &DetectorConfig) -> MeshConfig {
    let none = Floors {
        denies: u32::MAX,
        deny_resources: u32::MAX,
        resources: u32::MAX,
        actions: u32::MAX,
    };
    MeshConfig {
        floors: cfg.floors.clone().unwrap_or(none),
        ..MeshConfig::default()
    }
}

/// What became of a summary, as counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// This node's own, handed to gossipsub.
    Published,
    /// This node's own, not gossiped: it has no certificate, or the node
    /// task's queue was full.
    Unpublished,
    /// A peer's, merged into the view (and forwarded).
    Accepted,
    /// A peer's, refused: malformed, forged, or of a node without a valid
    /// certificate (`Reject`).
    Refused,
    /// A peer's, over its node's rate (`Ignore`).
    RateLimited,
    /// A peer's, of a slot outside the window: too old, or ahead of this
    /// node's clock (`Ignore`).
    OutOfWindow,
    /// A peer's, while the view holds as many sites or cells as it may
    /// (`Ignore`).
    Full,
    /// A peer's, passed on by a peer not admitted, or of this node or of a
    /// revoked node (`Ignore`).
    Ignored,
}

impl Outcome {
    /// Every outcome, in [`SummaryCounts`] order.
    pub const ALL: [Outcome; 8] = [
        Outcome::Published,
        Outcome::Unpublished,
        Outcome::Accepted,
        Outcome::Refused,
        Outcome::RateLimited,
        Outcome::OutOfWindow,
        Outcome::Full,
        Outcome::Ignored,
    ];

    /// The metric label.
    pub const fn label(self) -> &'static str {
        match self {
            Outcome::Published => "published",
            Outcome::Unpublished => "unpublished",
            Outcome::Accepted => "accepted",
            Outcome::Refused => "refused",
            Outcome::RateLimited => "rate_limited",
            Outcome::OutOfWindow => "out_of_window",
            Outcome::Full => "full",
            Outcome::Ignored => "ignored",
        }
    }
}

/// What [`MeshDetect::receive`] made of a gossiped summary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    /// Merged: accept it (gossipsub forwards it).
    Merged {
        /// The node that signed it.
        node: NodeId,
        /// Principals merged.
        principals: usize,
    },
    /// Not merged, no one's fault that this node can show: ignore it.
    Ignored(Outcome, String),
    /// Forged or malformed: reject it (peer scoring counts it).
    Refused(String),
}

/// What a gossiped summary is checked against.
pub struct Arrival<'a> {
    /// The trust root this node runs under.
    pub root: &'a TrustRoot,
    /// Now, Unix ms.
    pub now_ms: u64,
    /// This node.
    pub own: NodeId,
    /// Whether the peer that passed it on is admitted.
    pub from_admitted: bool,
    /// Whether a node is revoked.
    pub revoked: &'a dyn Fn(&NodeId) -> bool,
}

/// Summaries by outcome since start.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryCounts {
    /// This node's own, gossiped.
    pub published: u64,
    /// This node's own, not gossiped (no certificate, or a full queue).
    pub unpublished: u64,
    /// Peers', merged.
    pub accepted: u64,
    /// Peers', refused: malformed, forged, or of a node without a valid
    /// certificate.
    pub refused: u64,
    /// Peers', over their node's rate.
    pub rate_limited: u64,
    /// Peers', of a slot outside the window.
    pub out_of_window: u64,
    /// Peers', while the view was full.
    pub full: u64,
    /// Peers', from a peer not admitted, or of this node or a revoked one.
    pub ignored: u64,
}

impl SummaryCounts {
    /// Each outcome's label and count, in [`Outcome::ALL`] order.
    pub fn by_label(&self) -> [(&'static str, u64); 8] {
        [
            (Outcome::Published.label(), self.published),
            (Outcome::Unpublished.label(), self.unpublished),
            (Outcome::Accepted.label(), self.accepted),
            (Outcome::Refused.label(), self.refused),
            (Outcome::RateLimited.label(), self.rate_limited),
            (Outcome::OutOfWindow.label(), self.out_of_window),
            (Outcome::Full.label(), self.full),
            (Outcome::Ignored.label(), self.ignored),
        ]
    }
}

/// The mesh view's figures in `/v1/status` (`anomalies.mesh`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshStatus {
    /// Sites (nodes, this one included) the view has heard from.
    pub sites: usize,
    /// Cells (principal, slot, site) held for the window.
    pub cells: usize,
    /// Principals with a history in the view.
    pub histories: usize,
    /// Alerts the mesh view raised since start (also counted in
    /// `anomalies.alerts`).
    pub alerts: u64,
    /// Summaries by outcome since start.
    pub summaries: SummaryCounts,
}

/// One node's token bucket.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: u32,
    at_ms: u64,
}

/// Per-node rates of summaries: a token bucket per certified node.
#[derive(Debug, Default)]
struct Rates {
    nodes: BTreeMap<NodeId, Bucket>,
}

impl Rates {
    /// The node's bucket, refilled to `now_ms` (made full when new).
    fn bucket(&mut self, node: &NodeId, now_ms: u64) -> &mut Bucket {
        if !self.nodes.contains_key(node)
            && self.nodes.len() >= MAX_RATED_NODES
            && let Some(oldest) = self
                .nodes
                .iter()
                .min_by_key(|(_, b)| b.at_ms)
                .map(|(n, _)| *n)
        {
            self.nodes.remove(&oldest);
        }
        let b = self.nodes.entry(*node).or_insert(Bucket {
            tokens: SUMMARY_BURST,
            at_ms: now_ms,
        });
        let refills = now_ms.saturating_sub(b.at_ms) / SUMMARY_REFILL_MS;
        if refills > 0 {
            b.tokens = b
                .tokens
                .saturating_add(u32::try_from(refills).unwrap_or(u32::MAX))
                .min(SUMMARY_BURST);
            b.at_ms = if b.tokens == SUMMARY_BURST {
                now_ms
            } else {
                b.at_ms + refills * SUMMARY_REFILL_MS
            };
        }
        b
    }

    /// Whether `node` may have one more summary taken in now.
    fn has_room(&mut self, node: &NodeId, now_ms: u64) -> bool {
        self.bucket(node, now_ms).tokens > 0
    }

    /// One summary of `node` was taken in.
    fn take(&mut self, node: &NodeId, now_ms: u64) {
        let b = self.bucket(node, now_ms);
        b.tokens = b.tokens.saturating_sub(1);
    }
}

/// The node's mesh view and what comes and goes on [`SUMMARY_TOPIC`],
/// shared by the node task (which takes in peers' summaries) and the
/// detector task (which merges its own decisions, checks and summarizes).
#[derive(Debug)]
pub struct MeshDetect {
    view: Mutex<MeshView>,
    rates: Mutex<Rates>,
    counts: [AtomicU64; 8],
    alerts: AtomicU64,
    heard: Notify,
}

impl MeshDetect {
    /// An empty view with `cfg`.
    pub fn new(cfg: MeshConfig) -> Self {
        MeshDetect {
            view: Mutex::new(MeshView::new(cfg)),
            rates: Mutex::default(),
            counts: Default::default(),
            alerts: AtomicU64::new(0),
            heard: Notify::new(),
        }
    }

    /// The view, locked (never held across an await).
    pub fn view(&self) -> MutexGuard<'_, MeshView> {
        self.view.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes when a peer's summary was merged: the detector task checks
    /// the principals it touched.
    pub fn heard(&self) -> &Notify {
        &self.heard
    }

    /// Counts one summary's outcome.
    pub fn count(&self, outcome: Outcome) {
        let i = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one alert of the mesh view.
    pub fn count_alert(&self) {
        self.alerts.fetch_add(1, Ordering::Relaxed);
    }

    /// A summary as gossiped, the whole way in (see the module doc). On
    /// anything but [`Received::Merged`] the view is unchanged.
    pub fn receive(&self, bytes: &[u8], arrival: &Arrival<'_>) -> Received {
        let r = self.check_and_merge(bytes, arrival);
        let outcome = match &r {
            Received::Merged { .. } => Outcome::Accepted,
            Received::Ignored(o, _) => *o,
            Received::Refused(_) => Outcome::Refused,
        };
        self.count(outcome);
        if matches!(r, Received::Merged { .. }) {
            self.heard.notify_one();
        }
        r
    }

    fn check_and_merge(&self, bytes: &[u8], arrival: &Arrival<'_>) -> Received {
        if !arrival.from_admitted {
            return Received::Ignored(
                Outcome::Ignored,
                "passed on by a peer that is not admitted".into(),
            );
        }
        let gossip = match SummaryGossip::from_bytes(bytes) {
            Ok(g) => g,
            Err(e) => return Received::Refused(e.to_string()),
        };
        let node = match gossip.certified(arrival.root, arrival.now_ms / 1000) {
            Ok(n) => n,
            Err(e) => return Received::Refused(e.to_string()),
        };
        if node == arrival.own {
            return Received::Ignored(Outcome::Ignored, "this node's own summary".into());
        }
        if (arrival.revoked)(&node) {
            return Received::Ignored(
                Outcome::Ignored,
                format!("the detection summary is from node {node}, which is revoked"),
            );
        }
        let mut rates = self.rates.lock().unwrap_or_else(|e| e.into_inner());
        if !rates.has_room(&node, arrival.now_ms) {
            return Received::Ignored(
                Outcome::RateLimited,
                format!("node {node} sent more detection summaries than its rate allows"),
            );
        }
        let merged = {
            let mut view = self.view();
            view.advance(arrival.now_ms);
            view.ingest(&gossip.summary, |n| *n == node)
        };
        match merged {
            Ok(principals) => {
                rates.take(&node, arrival.now_ms);
                Received::Merged { node, principals }
            }
            Err(e @ (Refused::Stale(_) | Refused::Ahead(_))) => {
                Received::Ignored(Outcome::OutOfWindow, e.to_string())
            }
            Err(e @ Refused::Full(_)) => Received::Ignored(Outcome::Full, e.to_string()),
            Err(e @ (Refused::Summary(_) | Refused::SlotLength(_))) => {
                Received::Refused(e.to_string())
            }
        }
    }

    /// The figures for `/v1/status`.
    pub fn status(&self) -> MeshStatus {
        let (sites, cells, histories) = {
            let v = self.view();
            (v.sites(), v.cells(), v.histories())
        };
        let c = |o: Outcome| {
            let i = Outcome::ALL.iter().position(|x| *x == o).unwrap_or(0);
            self.counts[i].load(Ordering::Relaxed)
        };
        MeshStatus {
            sites,
            cells,
            histories,
            alerts: self.alerts.load(Ordering::Relaxed),
            summaries: SummaryCounts {
                published: c(Outcome::Published),
                unpublished: c(Outcome::Unpublished),
                accepted: c(Outcome::Accepted),
                refused: c(Outcome::Refused),
                rate_limited: c(Outcome::RateLimited),
                out_of_window: c(Outcome::OutOfWindow),
                full: c(Outcome::Full),
                ignored: c(Outcome::Ignored),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_protocol::identity::SecretKey;
    use weft_protocol::summary::{PrincipalSummary, SignedSummary, Summary};
    use weft_protocol::trust::{NodeCert, Operator, Role, SignedNodeCert};

    const NOW_MS: u64 = 1_767_571_200_000;

    fn key(n: u8) -> SecretKey {
        SecretKey::from_seed([n; 32])
    }

    fn root(operator: &SecretKey) -> TrustRoot {
        TrustRoot {
            version: 1,
            expires: NOW_MS / 1000 + 86_400,
            root_keys: vec![key(90).public()],
            root_threshold: 1,
            operators: vec![Operator {
                name: "alice".into(),
                key: operator.public(),
                roles: Role::ALL.into_iter().collect(),
            }],
            policy_threshold: 1,
            revoke_threshold: 1,
            node_quarantine: Default::default(),
            max_token_ttl_secs: weft_protocol::trust::DEFAULT_MAX_TOKEN_TTL_SECS,
            accepted_heads: Vec::new(),
        }
    }

    fn cert(node: NodeId, issuer: &SecretKey) -> SignedNodeCert {
        SignedNodeCert::sign(
            &NodeCert {
                node,
                name: "site".into(),
                issuer: issuer.public(),
                issued: NOW_MS / 1000 - 60,
                expires: NOW_MS / 1000 + 3600,
            },
            issuer,
        )
    }

    /// A slot of `node` in which `who` was denied `denies` times over as
    /// many resources.
    fn summary(node: NodeId, slot_start_ms: u64, who: &str, denies: u32) -> Summary {
        let mut resources = [0u64; 4];
        for i in 0..denies {
            let b = weft_protocol::summary::sketch_bit(&format!("Secret::\"s{i}\""), 256);
            resources[b / 64] |= 1 << (b % 64);
        }
        Summary {
            node,
            slot_start_ms,
            slot_ms: SLOT_MS as u32,
            dropped: 0,
            principals: vec![PrincipalSummary {
                principal: who.into(),
                requests: denies,
                denies,
                token_failures: 0,
                resources,
                actions: [1],
                pairs: [1, 0, 0, 0],
            }],
        }
    }

    fn gossip(signer: &SecretKey, s: &Summary, cert: SignedNodeCert) -> Vec<u8> {
        SummaryGossip {
            summary: SignedSummary::sign(s, signer),
            cert,
        }
        .to_bytes()
    }

    struct World {
        alice: SecretKey,
        root: TrustRoot,
        own: NodeId,
    }

    impl World {
        fn new() -> Self {
            let alice = key(1);
            World {
                root: root(&alice),
                alice,
                own: NodeId::new(key(50).public()),
            }
        }

        fn arrival<'a>(&'a self, revoked: &'a dyn Fn(&NodeId) -> bool) -> Arrival<'a> {
            Arrival {
                root: &self.root,
                now_ms: NOW_MS + 500,
                own: self.own,
                from_admitted: true,
                revoked,
            }
        }
    }

    fn slot() -> u64 {
        NOW_MS / SLOT_MS * SLOT_MS - SLOT_MS
    }

    #[test]
    fn a_certified_summary_is_merged_and_counted() {
        let w = World::new();
        let mesh = MeshDetect::new(MeshConfig::default());
        let k = key(2);
        let node = NodeId::new(k.public());
        let bytes = gossip(
            &k,
            &summary(node, slot(), "User::\"m\"", 12),
            cert(node, &w.alice),
        );
        let no = |_: &NodeId| false;
        let r = mesh.receive(&bytes, &w.arrival(&no));
        assert_eq!(
            r,
            Received::Merged {
                node,
                principals: 1
            }
        );
        let st = mesh.status();
        assert_eq!((st.sites, st.cells), (1, 1));
        assert_eq!(st.summaries.accepted, 1);
        assert_eq!(mesh.view().window("User::\"m\"").total.denies, 12);
    }

    /// Forged, uncertified and malformed summaries are refused, the view
    /// unchanged; the same summaries signed as they should be are merged.
    #[test]
    fn forged_and_uncertified_summaries_change_nothing() {
        let w = World::new();
        let mesh = MeshDetect::new(MeshConfig::default());
        let no = |_: &NodeId| false;
        let k = key(2);
        let node = NodeId::new(k.public());
        let rogue = key(3);
        let rogue_node = NodeId::new(rogue.public());
        let s = summary(node, slot(), "User::\"m\"", 40);
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "a node whose certificate it signed itself",
                gossip(
                    &rogue,
                    &summary(rogue_node, slot(), "User::\"m\"", 40),
                    cert(rogue_node, &rogue),
                ),
            ),
            (
                "a node with no certificate, sent with another's",
                gossip(
                    &rogue,
                    &summary(rogue_node, slot(), "User::\"m\"", 40),
                    cert(node, &w.alice),
                ),
            ),
            ("a summary of a certified node signed by another key", {
                let mut signed = SignedSummary::sign(&s, &rogue);
                signed.node = node;
                SummaryGossip {
                    summary: signed,
                    cert: cert(node, &w.alice),
                }
                .to_bytes()
            }),
            ("garbage", b"WEFT\x72\x01not a summary".to_vec()),
            (
                "oversized",
                vec![0; weft_protocol::summary_gossip::MAX_SUMMARY_GOSSIP_BYTES + 1],
            ),
        ];
        for (what, bytes) in &cases {
            let r = mesh.receive(bytes, &w.arrival(&no));
            assert!(matches!(r, Received::Refused(_)), "{what}: {r:?}");
        }
        let st = mesh.status();
        assert_eq!((st.sites, st.cells, st.summaries.refused), (0, 0, 5));
        assert_eq!(mesh.view().window("User::\"m\"").total.requests, 0);

        // The control: the same summary, signed by its node.
        let r = mesh.receive(&gossip(&k, &s, cert(node, &w.alice)), &w.arrival(&no));
        assert!(matches!(r, Received::Merged { .. }), "{r:?}");
        assert_eq!(mesh.view().window("User::\"m\"").total.denies, 40);
    }

    #[test]
    fn ignored_unadmitted_own_revoked_stale_and_over_the_rate() {
        let w = World::new();
        let mesh = MeshDetect::new(MeshConfig::default());
        let no = |_: &NodeId| false;
        let k = key(2);
        let node = NodeId::new(k.public());
        let c = cert(node, &w.alice);

        let bytes = gossip(&k, &summary(node, slot(), "User::\"m\"", 3), c.clone());
        let mut a = w.arrival(&no);
        a.from_admitted = false;
        assert!(matches!(
            mesh.receive(&bytes, &a),
            Received::Ignored(Outcome::Ignored, _)
        ));
        let revoked = |n: &NodeId| *n == node;
        assert!(matches!(
            mesh.receive(&bytes, &w.arrival(&revoked)),
            Received::Ignored(Outcome::Ignored, _)
        ));
        let own = key(50);
        let own_bytes = gossip(
            &own,
            &summary(w.own, slot(), "User::\"m\"", 3),
            cert(w.own, &w.alice),
        );
        assert!(matches!(
            mesh.receive(&own_bytes, &w.arrival(&no)),
            Received::Ignored(Outcome::Ignored, _)
        ));
        let stale = gossip(
            &k,
            &summary(node, slot() - 60 * SLOT_MS, "User::\"m\"", 3),
            c.clone(),
        );
        assert!(matches!(
            mesh.receive(&stale, &w.arrival(&no)),
            Received::Ignored(Outcome::OutOfWindow, _)
        ));
        assert_eq!(mesh.status().cells, 0);

        // Four at once, then one per five seconds.
        for i in 0..SUMMARY_BURST {
            let b = gossip(
                &k,
                &summary(node, slot(), &format!("User::\"u{i}\""), 1),
                c.clone(),
            );
            assert!(matches!(
                mesh.receive(&b, &w.arrival(&no)),
                Received::Merged { .. }
            ));
        }
        let over = gossip(&k, &summary(node, slot(), "User::\"over\"", 1), c.clone());
        assert!(matches!(
            mesh.receive(&over, &w.arrival(&no)),
            Received::Ignored(Outcome::RateLimited, _)
        ));
        let mut later = w.arrival(&no);
        later.now_ms += SUMMARY_REFILL_MS;
        assert!(matches!(
            mesh.receive(&over, &later),
            Received::Merged { .. }
        ));
        let st = mesh.status().summaries;
        assert_eq!(
            (st.accepted, st.rate_limited, st.out_of_window, st.ignored),
            (5, 1, 1, 3)
        );
    }

    /// A refused summary does not spend its node's rate: garbage sent in a
    /// certified node's name does not silence it.
    #[test]
    fn forgeries_do_not_spend_a_nodes_rate() {
        let w = World::new();
        let mesh = MeshDetect::new(MeshConfig::default());
        let no = |_: &NodeId| false;
        let k = key(2);
        let node = NodeId::new(k.public());
        let c = cert(node, &w.alice);
        let s = summary(node, slot(), "User::\"m\"", 3);
        for _ in 0..10 {
            let mut signed = SignedSummary::sign(&s, &key(3));
            signed.node = node;
            let b = SummaryGossip {
                summary: signed,
                cert: c.clone(),
            }
            .to_bytes();
            assert!(matches!(
                mesh.receive(&b, &w.arrival(&no)),
                Received::Refused(_)
            ));
        }
        assert!(matches!(
            mesh.receive(&gossip(&k, &s, c), &w.arrival(&no)),
            Received::Merged { .. }
        ));
    }

    /// Damaged gossip (bytes flipped, cut short, lengthened) never
    /// panics, and changes the view only when what is left still verifies
    /// and is merged.
    #[test]
    fn damaged_summaries_never_panic_and_change_nothing() {
        let w = World::new();
        let mesh = MeshDetect::new(MeshConfig::default());
        let no = |_: &NodeId| false;
        let k = key(2);
        let node = NodeId::new(k.public());
        let good = gossip(
            &k,
            &summary(node, slot(), "User::\"m\"", 7),
            cert(node, &w.alice),
        );
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut merged = 0;
        for _ in 0..1_500 {
            let mut bytes = good.clone();
            match next() % 3 {
                0 => {
                    for _ in 0..1 + next() % 4 {
                        let i = (next() as usize) % bytes.len();
                        bytes[i] ^= 1 << (next() % 8);
                    }
                }
                1 => bytes.truncate((next() as usize) % bytes.len()),
                _ => bytes.extend((0..1 + next() % 16).map(|_| next() as u8)),
            }
            if bytes == good {
                continue;
            }
            let cells = mesh.status().cells;
            match mesh.receive(&bytes, &w.arrival(&no)) {
                Received::Merged { .. } => merged += 1,
                _ => assert_eq!(mesh.status().cells, cells),
            }
        }
        // Every byte is under a signature or the envelope's canonical form.
        assert_eq!(merged, 0);
        assert_eq!(mesh.status().cells, 0);
        assert!(matches!(
            mesh.receive(&good, &w.arrival(&no)),
            Received::Merged { .. }
        ));
    }

    #[test]
    fn the_mesh_floors_follow_the_detectors() {
        let on = mesh_config(&DetectorConfig::default());
        assert_eq!(on.floors, Floors::default());
        let off = mesh_config(&DetectorConfig {
            floors: None,
            ..DetectorConfig::default()
        });
        assert_eq!(off.floors.denies, u32::MAX);
    }
}
