//! The two payload modes behind one trait.
//!
//! - [`FullPayload`]: the real `SignedState` (automerge documents, ed25519
//!   signatures checked on every ingest, authorization against the trust
//!   root); updates are built with crdt's builders on the state of the node
//!   the operator submits to, exactly as `weft bundle create --node` and
//!   `weft revoke --node` do; decisions are `weft_crdt::decide` on the view.
//! - [`LightPayload`]: [`LightState`], updates as signed ids (see
//!   [`crate::light`]).
//!
//! Both share the [`Fixture`]: one operator with every role, a trust root,
//! and a key and a real admission certificate for every node.

use std::rc::Rc;
use std::str::FromStr;

use rand::{Rng, RngCore};
use rand_chacha::ChaCha8Rng;
use weft_crdt::{BundleContent, ChangeHash, PolicyDoc, Request, decide};
use weft_protocol::identity::{NodeId, SecretKey, Signature};
use weft_protocol::replica::ReplicaState;
use weft_protocol::state::SignedState;
use weft_protocol::trust::{NodeCert, Operator, QuarantineLimits, Role, SignedNodeCert, TrustRoot};
use weft_protocol::update::{SignedUpdate, UpdateSignature, actor_for};

use crate::SimError;
use crate::light::{self, LightKind, LightShared, LightState};
use crate::scenario::Sabotage;

/// Virtual time 0 is this Unix time (2026-01-01T00:00:00Z), in ms: node
/// clocks read `EPOCH_MS + virtual time + skew`.
pub const EPOCH_MS: u64 = 1_767_225_600_000;

/// What an update does to a subject.
pub use crate::light::LightKind as Action;

/// A Byzantine node's forgery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forgery {
    /// Claims the operator's key with a signature that does not verify.
    BadSignature,
    /// Properly signed, but by the node's own key, which is no operator.
    Unauthorized,
}

/// Keys, trust root and certificates of a simulated mesh.
pub struct Fixture {
    /// The one operator (every role).
    pub operator: SecretKey,
    /// Its seed (keys are not `Clone`).
    pub operator_seed: [u8; 32],
    /// Every node's key seed.
    pub node_seeds: Vec<[u8; 32]>,
    /// The trust root.
    pub root: TrustRoot,
    /// Every node's key.
    pub node_keys: Vec<SecretKey>,
    /// Every node's id.
    pub node_ids: Vec<NodeId>,
    /// Every node's encoded certificate.
    pub certs: Vec<Vec<u8>>,
}

impl Fixture {
    /// Keys for `nodes` nodes, drawn from `rng`.
    pub fn new(nodes: usize, rng: &mut ChaCha8Rng) -> Self {
        let mut seed = || {
            let mut s = [0u8; 32];
            rng.fill_bytes(&mut s);
            s
        };
        let operator_seed = seed();
        let operator = SecretKey::from_seed(operator_seed);
        let root_key = SecretKey::from_seed(seed());
        let root = TrustRoot {
            version: 1,
            expires: u64::MAX,
            root_keys: vec![root_key.public()],
            root_threshold: 1,
            operators: vec![Operator {
                name: "ops".into(),
                key: operator.public(),
                roles: Role::ALL.into_iter().collect(),
            }],
            policy_threshold: 1,
            revoke_threshold: 1,
            node_quarantine: QuarantineLimits::default(),
            max_token_ttl_secs: weft_protocol::trust::DEFAULT_MAX_TOKEN_TTL_SECS,
            accepted_heads: vec![],
        };
        let node_seeds: Vec<[u8; 32]> = (0..nodes).map(|_| seed()).collect();
        let node_keys: Vec<SecretKey> = node_seeds
            .iter()
            .map(|s| SecretKey::from_seed(*s))
            .collect();
        let node_ids: Vec<NodeId> = node_keys.iter().map(|k| NodeId::new(k.public())).collect();
        let certs = node_ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                SignedNodeCert::sign(
                    &NodeCert {
                        node: *id,
                        name: format!("n{i}"),
                        issuer: operator.public(),
                        issued: EPOCH_MS / 1000,
                        expires: EPOCH_MS / 1000 + 10 * 365 * 86_400,
                    },
                    &operator,
                )
                .to_bytes()
            })
            .collect();
        Fixture {
            operator,
            operator_seed,
            node_seeds,
            root,
            node_keys,
            node_ids,
            certs,
        }
    }
}

/// What the simulator needs from a payload mode.
pub trait Payload {
    /// The replica state.
    type State: ReplicaState;
    /// The fixture.
    fn fixture(&self) -> &Fixture;
    /// A fresh state (genesis only).
    fn fresh(&self) -> Self::State;
    /// An operator update doing `action` to subject `k`, built on `on`.
    fn author(&mut self, on: &Self::State, action: Action, k: u32) -> Result<Vec<u8>, SimError>;
    /// Node `n`'s forgery built on `on`; also the id it would have if applied.
    fn forge(
        &mut self,
        on: &Self::State,
        n: usize,
        what: Forgery,
        rng: &mut ChaCha8Rng,
    ) -> (Vec<u8>, Option<ChangeHash>);
    /// Whether `state` allows subject `k` (a real decision).
    fn allows(&self, state: &Self::State, k: u32) -> bool;
    /// Subjects whose revocation `state` holds.
    fn revoked_subjects(&self, state: &Self::State) -> Vec<u32>;
    /// Whether `hash` is applied in `state`.
    fn contains(&self, state: &Self::State, hash: &ChangeHash) -> bool {
        state.update_bytes(hash).is_some()
    }
    /// How many updates `state` has applied.
    fn count(&self, state: &Self::State) -> usize;
}

/// Full mode: the real `SignedState`.
pub struct FullPayload {
    fx: Fixture,
    nonce: u64,
    requests: Vec<Request>,
}

impl FullPayload {
    /// Full mode over `fx`, with `subjects` subjects.
    pub fn new(fx: Fixture, subjects: u32) -> Result<Self, SimError> {
        let uid = |s: &str| {
            cedar_policy::EntityUid::from_str(s).map_err(|e| SimError::Fixture(e.to_string()))
        };
        let requests = (0..subjects)
            .map(|k| {
                Ok(Request::new(
                    uid(&light::subject_text(k))?,
                    uid("Action::\"view\"")?,
                    uid("Doc::\"d\"")?,
                ))
            })
            .collect::<Result<_, SimError>>()?;
        Ok(FullPayload {
            fx,
            nonce: 0,
            requests,
        })
    }

    fn next_actor(&mut self, key: &SecretKey) -> weft_crdt::ActorId {
        self.nonce += 1;
        actor_for(&key.public(), self.nonce.to_be_bytes())
    }

    fn change_on(
        &mut self,
        on: &SignedState,
        key: &SecretKey,
        action: Action,
        k: u32,
    ) -> Result<weft_crdt::Change, SimError> {
        let fx = |e: &dyn std::fmt::Display| SimError::Fixture(e.to_string());
        let mut doc = PolicyDoc::load(&on.doc().save()).map_err(|e| fx(&e))?;
        let actor = self.next_actor(key);
        let change = match action {
            LightKind::Grant => {
                let mut content = BundleContent::default();
                content.policies.insert(
                    "p".into(),
                    format!(
                        "permit(principal == {}, action, resource);",
                        light::subject_text(k)
                    ),
                );
                content.description = Some(format!("grant {}", self.nonce));
                doc.build_bundle(actor, &format!("g{k}"), &content, 0)
            }
            LightKind::Revoke => doc.build_revoke(actor, &light::subject_text(k), "simulated", 0),
        }
        .map_err(|e| fx(&e))?;
        change.ok_or_else(|| SimError::Fixture("the builder wrote no change".into()))
    }
}

impl Payload for FullPayload {
    type State = SignedState;

    fn fixture(&self) -> &Fixture {
        &self.fx
    }

    fn fresh(&self) -> SignedState {
        SignedState::new(self.fx.root.clone())
    }

    fn author(&mut self, on: &SignedState, action: Action, k: u32) -> Result<Vec<u8>, SimError> {
        let op = SecretKey::from_seed(self.fx.operator_seed);
        let change = self.change_on(on, &op, action, k)?;
        let mut u = SignedUpdate::new(&change, self.fx.root.version);
        u.sign(&op).map_err(|e| SimError::Fixture(e.to_string()))?;
        Ok(u.to_bytes())
    }

    fn forge(
        &mut self,
        on: &SignedState,
        n: usize,
        what: Forgery,
        rng: &mut ChaCha8Rng,
    ) -> (Vec<u8>, Option<ChangeHash>) {
        let k = rng.random_range(0..self.requests.len().max(1) as u32);
        match what {
            Forgery::Unauthorized => {
                let key = SecretKey::from_seed(self.fx.node_seeds[n]);
                let Ok(change) = self.change_on(on, &key, Action::Grant, k) else {
                    return (Vec::new(), None);
                };
                let hash = change.hash();
                let mut u = SignedUpdate::new(&change, self.fx.root.version);
                if u.sign(&key).is_err() {
                    return (Vec::new(), None);
                }
                (u.to_bytes(), Some(hash))
            }
            Forgery::BadSignature => {
                let op = SecretKey::from_seed(self.fx.operator_seed);
                let Ok(change) = self.change_on(on, &op, Action::Grant, k) else {
                    return (Vec::new(), None);
                };
                let hash = change.hash();
                let mut sig = [0u8; 64];
                rng.fill_bytes(&mut sig);
                let mut u = SignedUpdate::new(&change, self.fx.root.version);
                u.signatures.push(UpdateSignature {
                    key: op.public(),
                    sig: Signature::from_bytes(sig),
                });
                (u.to_bytes(), Some(hash))
            }
        }
    }

    fn allows(&self, state: &SignedState, k: u32) -> bool {
        self.requests
            .get(k as usize)
            .is_some_and(|r| decide(state.view(), r).allow)
    }

    fn revoked_subjects(&self, state: &SignedState) -> Vec<u32> {
        state
            .view()
            .revocations()
            .filter_map(|r| light::subject_index(&r.subject))
            .collect()
    }

    fn count(&self, state: &SignedState) -> usize {
        state.update_count()
    }
}

/// Light mode: [`LightState`].
pub struct LightPayload {
    fx: Fixture,
    shared: Rc<LightShared>,
    seq: u64,
}

impl LightPayload {
    /// Light mode over `fx`.
    pub fn new(fx: Fixture, sabotage: &Sabotage) -> Self {
        let shared = Rc::new(LightShared::new(
            fx.root.clone(),
            sabotage.skip_signature_check,
            sabotage.grant_lifts_revocation,
        ));
        LightPayload { fx, shared, seq: 0 }
    }
}

impl Payload for LightPayload {
    type State = LightState;

    fn fixture(&self) -> &Fixture {
        &self.fx
    }

    fn fresh(&self) -> LightState {
        LightState::new(self.shared.clone())
    }

    fn author(&mut self, on: &LightState, action: Action, k: u32) -> Result<Vec<u8>, SimError> {
        self.seq += 1;
        let heads = on.heads();
        Ok(light::encode(
            &self.fx.operator,
            self.seq,
            action,
            k,
            &heads,
        ))
    }

    fn forge(
        &mut self,
        on: &LightState,
        n: usize,
        what: Forgery,
        rng: &mut ChaCha8Rng,
    ) -> (Vec<u8>, Option<ChangeHash>) {
        self.seq += 1;
        let heads = on.heads();
        let k = rng.random_range(0..64);
        let bytes = match what {
            Forgery::Unauthorized => {
                light::encode(&self.fx.node_keys[n], self.seq, Action::Grant, k, &heads)
            }
            Forgery::BadSignature => {
                let mut b = light::body(
                    &self.fx.operator.public(),
                    self.seq,
                    Action::Grant,
                    k,
                    &heads,
                );
                let mut sig = [0u8; 64];
                rng.fill_bytes(&mut sig);
                b.extend_from_slice(&sig);
                b
            }
        };
        let id = light::claimed_id(&bytes);
        (bytes, id)
    }

    fn allows(&self, state: &LightState, k: u32) -> bool {
        state.allows(k)
    }

    fn revoked_subjects(&self, state: &LightState) -> Vec<u32> {
        state.revoked().iter().copied().collect()
    }

    fn count(&self, state: &LightState) -> usize {
        state.len()
    }
}
