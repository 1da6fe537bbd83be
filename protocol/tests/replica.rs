//! The sans-IO replica, driven by hand: admission, gossip verdicts, bans, and
//! anti-entropy in bounded batches. Messages are handed from one replica's
//! outputs to another's inputs directly (this tests the state machine; the
//! libp2p driver has its own end-to-end suite in `tests/`).

use std::collections::{BTreeMap, VecDeque};

use weft_crdt::PolicyDoc;
use weft_protocol::identity::{NodeId, SecretKey};
use weft_protocol::replica::{
    Accepted, Command, Input, Output, Replica, ReplicaConfig, Timer, Verdict,
};
use weft_protocol::state::SignedState;
use weft_protocol::trust::{NodeCert, Operator, QuarantineLimits, Role, SignedNodeCert, TrustRoot};
use weft_protocol::update::{SignedUpdate, UpdateError, actor_for};
use weft_protocol::wire::{MAX_FETCH, SyncRequest};

const NOW_MS: u64 = 1_700_000_000_000;

/// A local submit, as the node's API makes it: the answer (the command's
/// last output) and the effects before it.
fn submit(r: &mut Replica<u8>, bytes: &[u8]) -> (Result<Accepted, UpdateError>, Vec<Output<u8>>) {
    let mut outs = r.handle(NOW_MS, 0, Input::Command(Command::Submit(bytes.into())));
    match outs.pop() {
        Some(Output::Submitted(answer)) => (answer, outs),
        other => panic!("a command's effects end with its answer, not {other:?}"),
    }
}

fn admin() -> SecretKey {
    SecretKey::from_seed([1; 32])
}

fn policy_only() -> SecretKey {
    SecretKey::from_seed([2; 32])
}

fn root() -> TrustRoot {
    TrustRoot {
        version: 1,
        expires: u64::MAX,
        root_keys: vec![SecretKey::from_seed([100; 32]).public()],
        root_threshold: 1,
        operators: vec![
            Operator {
                name: "admin".into(),
                key: admin().public(),
                roles: [Role::Policy, Role::Revoke, Role::Admit]
                    .into_iter()
                    .collect(),
            },
            Operator {
                name: "writer".into(),
                key: policy_only().public(),
                roles: [Role::Policy].into_iter().collect(),
            },
        ],
        policy_threshold: 1,
        revoke_threshold: 1,
        node_quarantine: QuarantineLimits::default(),
        max_token_ttl_secs: weft_protocol::trust::DEFAULT_MAX_TOKEN_TTL_SECS,
        accepted_heads: vec![],
    }
}

fn node_key(n: u8) -> SecretKey {
    SecretKey::from_seed([50 + n; 32])
}

fn node_id(n: u8) -> NodeId {
    NodeId::new(node_key(n).public())
}

fn cert(n: u8, issuer: &SecretKey, for_node: u8) -> Vec<u8> {
    SignedNodeCert::sign(
        &NodeCert {
            node: node_id(for_node),
            name: format!("n{n}"),
            issuer: issuer.public(),
            issued: 0,
            expires: u64::MAX,
        },
        issuer,
    )
    .to_bytes()
}

/// Replicas wired to each other by hand, with every message recorded.
struct Mesh {
    replicas: BTreeMap<u8, Replica<u8>>,
    queue: VecDeque<(u8, Input<u8>)>,
    requests: BTreeMap<u64, (u8, u8)>,
    next_request: u64,
    links: BTreeMap<u8, Vec<u8>>,
    outputs: Vec<(u8, Output<u8>)>,
    cut: bool,
}

impl Mesh {
    fn new() -> Self {
        Mesh {
            replicas: BTreeMap::new(),
            queue: VecDeque::new(),
            requests: BTreeMap::new(),
            next_request: 0,
            links: BTreeMap::new(),
            outputs: Vec::new(),
            cut: false,
        }
    }

    fn add(&mut self, n: u8, cert: Vec<u8>) {
        let mut r = Replica::new(
            SignedState::new(root()),
            node_id(n),
            cert,
            ReplicaConfig::default(),
        );
        r.start();
        self.replicas.insert(n, r);
    }

    fn connect(&mut self, a: u8, b: u8) {
        self.links.entry(a).or_default().push(b);
        self.links.entry(b).or_default().push(a);
        self.queue.push_back((
            a,
            Input::PeerConnected {
                peer: b,
                node: node_id(b),
            },
        ));
        self.queue.push_back((
            b,
            Input::PeerConnected {
                peer: a,
                node: node_id(a),
            },
        ));
        self.run();
    }

    fn input(&mut self, n: u8, input: Input<u8>) {
        self.queue.push_back((n, input));
        self.run();
    }

    fn submit(&mut self, n: u8, bytes: &[u8]) {
        let (answer, outs) = submit(self.replicas.get_mut(&n).unwrap(), bytes);
        answer.unwrap();
        self.carry(n, outs);
        self.run();
    }

    fn run(&mut self) {
        let mut steps = 0;
        while let Some((n, input)) = self.queue.pop_front() {
            steps += 1;
            assert!(steps < 100_000, "the mesh does not settle");
            let Some(r) = self.replicas.get_mut(&n) else {
                continue;
            };
            // Gossipsub forwards a message once its receiver accepts it.
            let forward = match &input {
                Input::Gossip { from, bytes } => Some((*from, bytes.clone())),
                _ => None,
            };
            let outs = r.handle(NOW_MS, steps, input);
            if let Some((from, bytes)) = forward
                && outs
                    .iter()
                    .any(|o| matches!(o, Output::Verdict(Verdict::Accept)))
                && !self.cut
            {
                for peer in self.links.get(&n).cloned().unwrap_or_default() {
                    if peer != from {
                        self.queue.push_back((
                            peer,
                            Input::Gossip {
                                from: n,
                                bytes: bytes.clone(),
                            },
                        ));
                    }
                }
            }
            self.carry(n, outs);
        }
    }

    fn carry(&mut self, n: u8, outs: Vec<Output<u8>>) {
        for o in outs {
            match &o {
                Output::Send { to, request } => {
                    self.next_request += 1;
                    self.requests.insert(self.next_request, (n, *to));
                    self.queue.push_back((
                        *to,
                        Input::Request {
                            from: n,
                            request_id: self.next_request,
                            request: request.clone(),
                        },
                    ));
                }
                Output::Respond {
                    request_id,
                    response,
                } => {
                    let (asker, me) = self.requests[request_id];
                    self.queue.push_back((
                        asker,
                        Input::Response {
                            from: me,
                            response: response.clone(),
                        },
                    ));
                }
                Output::Publish(bytes) if !self.cut => {
                    for peer in self.links.get(&n).cloned().unwrap_or_default() {
                        self.queue.push_back((
                            peer,
                            Input::Gossip {
                                from: n,
                                bytes: bytes.to_vec(),
                            },
                        ));
                    }
                }
                Output::Disconnect { peer, .. } | Output::Ban { peer, .. } => {
                    let peer = *peer;
                    self.links.entry(n).or_default().retain(|p| *p != peer);
                    self.links.entry(peer).or_default().retain(|p| *p != n);
                    self.queue
                        .push_back((peer, Input::PeerDisconnected { peer: n }));
                }
                _ => {}
            }
            self.outputs.push((n, o));
        }
    }

    fn state(&self, n: u8) -> &SignedState {
        self.replicas[&n].state()
    }
}

fn revocation(state: &SignedState, subject: &str, lane: u64) -> Vec<u8> {
    let mut doc = PolicyDoc::load(&state.doc().save()).unwrap();
    let c = doc
        .build_revoke(
            actor_for(&admin().public(), lane.to_be_bytes()),
            subject,
            "test",
            0,
        )
        .unwrap()
        .unwrap();
    let mut u = SignedUpdate::new(&c, 1);
    u.sign(&admin()).unwrap();
    u.to_bytes()
}

#[test]
fn gossip_reaches_admitted_peers() {
    let mut m = Mesh::new();
    for n in 1..=3 {
        m.add(n, cert(n, &admin(), n));
    }
    m.connect(1, 2);
    m.connect(2, 3);
    let u = revocation(m.state(1), r#"User::"eve""#, 0);
    m.submit(1, &u);
    for n in 1..=3 {
        assert!(
            m.state(n).view().revocation(r#"User::"eve""#).is_some(),
            "node {n}"
        );
    }
    // The submit path asks for persistence before anything else.
    assert!(
        m.outputs
            .iter()
            .any(|(n, o)| *n == 1 && matches!(o, Output::Persist { .. }))
    );
}

#[test]
fn late_joiner_catches_up_in_bounded_batches() {
    let mut m = Mesh::new();
    m.add(1, cert(1, &admin(), 1));
    m.add(2, cert(2, &admin(), 2));
    // Node 1 builds up 600 updates alone: more than two fetch batches.
    let mut doc = PolicyDoc::new();
    let mut batch = Vec::new();
    for i in 0..600u64 {
        let c = doc
            .build_revoke(
                actor_for(&admin().public(), [0; 8]),
                &format!(r#"User::"u{i}""#),
                "",
                0,
            )
            .unwrap()
            .unwrap();
        let mut u = SignedUpdate::new(&c, 1);
        u.sign(&admin()).unwrap();
        batch.push(u.to_bytes().into());
    }
    let r1 = m.replicas.get_mut(&1).unwrap();
    for r in r1.state_mut().ingest_batch(batch) {
        r.unwrap();
    }
    m.connect(1, 2);
    assert_eq!(m.state(2).update_count(), 600);
    assert_eq!(m.state(1).heads(), m.state(2).heads());
    let fetches: Vec<usize> = m
        .outputs
        .iter()
        .filter_map(|(_, o)| match o {
            Output::Send {
                request: SyncRequest::Fetch { hashes },
                ..
            } => Some(hashes.len()),
            _ => None,
        })
        .collect();
    assert!(
        fetches.len() >= 3,
        "expected several fetches, got {fetches:?}"
    );
    assert!(fetches.iter().all(|&n| n <= MAX_FETCH), "{fetches:?}");
}

#[test]
fn anti_entropy_heals_a_missed_gossip() {
    let mut m = Mesh::new();
    m.add(1, cert(1, &admin(), 1));
    m.add(2, cert(2, &admin(), 2));
    m.connect(1, 2);
    m.cut = true;
    let u = revocation(m.state(1), r#"User::"mallory""#, 0);
    m.submit(1, &u);
    assert!(m.state(2).view().revocation(r#"User::"mallory""#).is_none());
    m.cut = false;
    m.input(2, Input::Timer(Timer::AntiEntropy));
    assert!(m.state(2).view().revocation(r#"User::"mallory""#).is_some());
    assert_eq!(m.state(1).heads(), m.state(2).heads());
    // The timer re-arms itself.
    assert!(m.outputs.iter().any(|(n, o)| *n == 2
        && matches!(
            o,
            Output::Schedule {
                timer: Timer::AntiEntropy,
                ..
            }
        )));
}

/// Heads requests node `n` has sent so far.
fn heads_sent(m: &Mesh, n: u8) -> usize {
    m.outputs
        .iter()
        .filter(|(from, o)| {
            *from == n
                && matches!(
                    o,
                    Output::Send {
                        request: SyncRequest::Heads { .. },
                        ..
                    }
                )
        })
        .count()
}

#[test]
fn a_replica_a_peer_synced_with_skips_its_next_round_but_never_two() {
    let mut m = Mesh::new();
    m.add(1, cert(1, &admin(), 1));
    m.add(2, cert(2, &admin(), 2));
    m.connect(1, 2);
    let tick = |m: &mut Mesh, n: u8| {
        let before = heads_sent(m, n);
        m.input(n, Input::Timer(Timer::AntiEntropy));
        heads_sent(m, n) - before
    };
    // Nobody asked node 2 yet: it runs its round. Both states are empty
    // (their heads are the genesis change), and the exchange settles.
    assert_eq!(tick(&mut m, 2), 1);
    // Node 2's round asked node 1: node 1 skips its next one...
    assert_eq!(tick(&mut m, 1), 0);
    assert_eq!(m.replicas[&1].stats().rounds_skipped, 1);
    // ...and runs the one after, which asks node 2, which skips.
    assert_eq!(tick(&mut m, 1), 1);
    assert_eq!(tick(&mut m, 2), 0);
    // Never two in a row, however often node 1 asks.
    assert_eq!(tick(&mut m, 1), 1);
    assert_eq!(tick(&mut m, 2), 1);
    // Its own round does not count as being asked.
    assert_eq!(tick(&mut m, 2), 1);
    assert_eq!(m.replicas[&2].stats().rounds_skipped, 1);
    assert_eq!(m.replicas[&1].stats().rounds_skipped, 1);

    // Node 2's last rounds found node 1 equal: node 1 skips, then runs and
    // finds node 2 equal, which skips.
    assert_eq!(tick(&mut m, 1), 0);
    assert_eq!(tick(&mut m, 1), 1);
    assert_eq!(tick(&mut m, 2), 0);

    // A skipped round loses nothing: what node 1 missed comes with node 2's
    // next round, or with the round node 2 asked for.
    m.cut = true;
    let u = revocation(m.state(2), r#"User::"mallory""#, 0);
    m.submit(2, &u);
    m.cut = false;
    assert!(m.state(1).view().revocation(r#"User::"mallory""#).is_none());
    assert_eq!(tick(&mut m, 2), 1);
    assert!(m.state(1).view().revocation(r#"User::"mallory""#).is_some());
    // Node 2's round found node 1 behind: that exchange does not stand in
    // for node 1's own next round.
    assert_eq!(tick(&mut m, 1), 1);
    assert_eq!(m.replicas[&1].stats().rounds_skipped, 2);
}

#[test]
fn peers_without_a_valid_certificate_are_refused() {
    for bad in [
        cert(3, &policy_only(), 3), // issuer lacks the admit role
        cert(3, &admin(), 9),       // a certificate for another node
        b"not a certificate".to_vec(),
    ] {
        let mut m = Mesh::new();
        m.add(1, cert(1, &admin(), 1));
        m.add(3, bad);
        m.connect(1, 3);
        assert!(
            m.outputs
                .iter()
                .any(|(n, o)| *n == 1 && matches!(o, Output::Disconnect { peer: 3, .. })),
            "node 1 kept an unadmitted peer"
        );
        assert_eq!(m.replicas[&1].admitted_peers().count(), 0);
        // Nothing it gossips counts.
        let u = revocation(m.state(3), r#"User::"x""#, 0);
        let outs =
            m.replicas
                .get_mut(&1)
                .unwrap()
                .handle(NOW_MS, 0, Input::Gossip { from: 3, bytes: u });
        assert!(matches!(outs[0], Output::Verdict(Verdict::Ignore)));
        assert_eq!(m.state(1).update_count(), 0);
    }
}

#[test]
fn admission_deadline_disconnects_a_silent_peer() {
    let mut m = Mesh::new();
    m.add(1, cert(1, &admin(), 1));
    let r = m.replicas.get_mut(&1).unwrap();
    r.handle(
        NOW_MS,
        0,
        Input::PeerConnected {
            peer: 7,
            node: node_id(7),
        },
    );
    let outs = r.handle(NOW_MS, 0, Input::Timer(Timer::Admission(7)));
    assert!(matches!(
        outs.as_slice(),
        [Output::Disconnect { peer: 7, .. }]
    ));
}

#[test]
fn forged_gossip_is_rejected_penalized_then_banned() {
    let mut m = Mesh::new();
    m.add(1, cert(1, &admin(), 1));
    m.add(2, cert(2, &admin(), 2));
    m.connect(1, 2);
    let good = revocation(m.state(2), r#"User::"x""#, 0);
    let mut forged = SignedUpdate::from_bytes(&good).unwrap();
    forged.signatures[0].sig =
        SecretKey::from_seed([66; 32]).sign(weft_protocol::identity::Domain::Update, b"x");
    let forged = forged.to_bytes();
    let r1 = m.replicas.get_mut(&1).unwrap();
    for strike in 1..=3 {
        let outs = r1.handle(
            NOW_MS,
            0,
            Input::Gossip {
                from: 2,
                bytes: forged.clone(),
            },
        );
        assert!(
            matches!(
                outs[0],
                Output::Refused {
                    from: Some(2),
                    label: "bad_signature",
                    ..
                }
            ),
            "strike {strike}: {outs:?}"
        );
        assert!(matches!(outs[1], Output::Verdict(Verdict::Reject)));
        if strike < 3 {
            assert!(matches!(outs[2], Output::Penalize { peer: 2, .. }));
        } else {
            assert!(matches!(outs[2], Output::Ban { peer: 2, .. }));
        }
    }
    assert_eq!(r1.state().update_count(), 0);
    assert!(r1.is_banned(&node_id(2)));
    // It cannot come back.
    let outs = r1.handle(
        NOW_MS,
        0,
        Input::PeerConnected {
            peer: 2,
            node: node_id(2),
        },
    );
    assert!(matches!(outs.as_slice(), [Output::Ban { peer: 2, .. }]));
    // Garbage is rejected the same way.
    m.add(3, cert(3, &admin(), 3));
    m.connect(1, 3);
    let outs = m.replicas.get_mut(&1).unwrap().handle(
        NOW_MS,
        0,
        Input::Gossip {
            from: 3,
            bytes: vec![0; 40],
        },
    );
    assert!(matches!(
        outs[0],
        Output::Refused {
            from: Some(3),
            label: "malformed",
            ..
        }
    ));
    assert!(matches!(outs[1], Output::Verdict(Verdict::Reject)));
}

/// A sync message that does not decode is a strike: penalized twice, then
/// banned, and the state is untouched.
#[test]
fn malformed_sync_messages_are_strikes() {
    let mut m = Mesh::new();
    m.add(1, cert(1, &admin(), 1));
    m.add(2, cert(2, &admin(), 2));
    m.connect(1, 2);
    let r1 = m.replicas.get_mut(&1).unwrap();
    for strike in 1..=3 {
        let outs = r1.handle(
            NOW_MS,
            0,
            Input::Malformed {
                from: 2,
                reason: "not a sync request".into(),
            },
        );
        if strike < 3 {
            assert!(
                matches!(outs.as_slice(), [Output::Penalize { peer: 2, .. }]),
                "strike {strike}: {outs:?}"
            );
        } else {
            assert!(
                matches!(outs.as_slice(), [Output::Ban { peer: 2, .. }]),
                "strike {strike}: {outs:?}"
            );
        }
    }
    assert!(r1.is_banned(&node_id(2)));
    assert_eq!(r1.state().update_count(), 0);
}

#[test]
fn a_revoked_node_is_banned_and_stays_out() {
    let mut m = Mesh::new();
    for n in 1..=3 {
        m.add(n, cert(n, &admin(), n));
    }
    m.connect(1, 2);
    m.connect(1, 3);
    let u = revocation(m.state(1), &node_id(2).to_string(), 0);
    m.submit(1, &u);
    assert!(
        m.outputs
            .iter()
            .any(|(n, o)| *n == 1 && matches!(o, Output::Ban { peer: 2, .. }))
    );
    assert!(
        m.outputs
            .iter()
            .any(|(n, o)| *n == 3 && matches!(o, Output::Ban { peer: 2, .. }))
            || !m.links[&3].contains(&2)
    );
    let outs = m.replicas.get_mut(&1).unwrap().handle(
        NOW_MS,
        0,
        Input::PeerConnected {
            peer: 2,
            node: node_id(2),
        },
    );
    assert!(matches!(outs.as_slice(), [Output::Ban { peer: 2, .. }]));
    // Its sync requests are refused too.
    let outs = m.replicas.get_mut(&1).unwrap().handle(
        NOW_MS,
        0,
        Input::Request {
            from: 2,
            request_id: 1,
            request: SyncRequest::Heads {
                heads: vec![],
                root: 1,
            },
        },
    );
    assert!(matches!(outs.as_slice(), [Output::Respond { .. }]));
    if let Output::Respond { response, .. } = &outs[0] {
        assert!(matches!(
            response,
            weft_protocol::wire::SyncResponse::Refused { .. }
        ));
    }
}

/// A replica (node 3) driven by hand against two real peers (1 and 2) that
/// hold the same update, so that both offer it at the same time, as every
/// peer across a healed partition does.
struct TwoOffers {
    r3: Replica<u8>,
    peers: BTreeMap<u8, Replica<u8>>,
    /// Requests node 3 sent and not yet answered: (peer, request).
    sent: Vec<(u8, SyncRequest)>,
}

fn replica(n: u8) -> Replica<u8> {
    Replica::new(
        SignedState::new(root()),
        node_id(n),
        cert(n, &admin(), n),
        ReplicaConfig::default(),
    )
}

impl TwoOffers {
    fn new() -> Self {
        let mut r1 = replica(1);
        let u = revocation(r1.state(), r#"User::"eve""#, 0);
        submit(&mut r1, &u).0.unwrap();
        let mut r2 = replica(2);
        submit(&mut r2, &u).0.unwrap();
        TwoOffers::with(r1, r2)
    }

    /// Node 3 connected to `r1` and `r2`.
    fn with(r1: Replica<u8>, r2: Replica<u8>) -> Self {
        let mut t = TwoOffers {
            r3: replica(3),
            peers: [(1, r1), (2, r2)].into_iter().collect(),
            sent: Vec::new(),
        };
        for p in [1, 2] {
            let r = t.peers.get_mut(&p).unwrap();
            r.handle(
                NOW_MS,
                0,
                Input::PeerConnected {
                    peer: 3,
                    node: node_id(3),
                },
            );
            t.feed(
                NOW_MS,
                Input::PeerConnected {
                    peer: p,
                    node: node_id(p),
                },
            );
        }
        t
    }

    /// Hands `input` to node 3 and records what it sends.
    fn feed(&mut self, now: u64, input: Input<u8>) -> Vec<Output<u8>> {
        let outs = self.r3.handle(now, 0, input);
        for o in &outs {
            if let Output::Send { to, request } = o {
                self.sent.push((*to, request.clone()));
            }
        }
        outs
    }

    /// Answers node 3's oldest request to `peer` with that peer's real answer.
    fn answer(&mut self, now: u64, peer: u8) -> Vec<Output<u8>> {
        let i = self.sent.iter().position(|(p, _)| *p == peer).unwrap();
        let (_, request) = self.sent.remove(i);
        let outs = self.peers.get_mut(&peer).unwrap().handle(
            now,
            0,
            Input::Request {
                from: 3,
                request_id: 1,
                request,
            },
        );
        let response = outs
            .into_iter()
            .find_map(|o| match o {
                Output::Respond { response, .. } => Some(response),
                _ => None,
            })
            .unwrap();
        self.feed(
            now,
            Input::Response {
                from: peer,
                response,
            },
        )
    }

    /// Node 3's requests in flight to `peer` that are fetches.
    fn fetches_to(&self, peer: u8) -> usize {
        self.sent
            .iter()
            .filter(|(p, r)| *p == peer && matches!(r, SyncRequest::Fetch { .. }))
            .count()
    }

    /// Both peers have offered the update; the fetch goes to one of them.
    fn both_offered() -> Self {
        let mut t = TwoOffers::new();
        // Hello answers (admission), then the offers.
        for p in [1, 2] {
            t.answer(NOW_MS, p);
        }
        for p in [1, 2] {
            t.answer(NOW_MS, p);
        }
        t
    }
}

#[test]
fn an_update_offered_by_two_peers_is_fetched_once() {
    let mut t = TwoOffers::both_offered();
    assert_eq!(t.fetches_to(1), 1, "{:?}", t.sent);
    assert_eq!(t.fetches_to(2), 0, "the second offer waits: {:?}", t.sent);
    t.answer(NOW_MS + 100, 1);
    assert_eq!(t.r3.state().heads(), t.peers[&1].state().heads());
    // The retry timer finds nothing left to fetch.
    t.feed(NOW_MS + 1_000, Input::Timer(Timer::Fetch));
    assert_eq!(t.fetches_to(2), 0, "{:?}", t.sent);
    assert_eq!(t.r3.stats().synced, 1);
}

#[test]
fn a_failed_fetch_is_asked_of_the_other_peer_that_offered() {
    let mut t = TwoOffers::both_offered();
    assert_eq!(t.fetches_to(1), 1);
    t.sent.retain(|(p, _)| *p != 1);
    t.feed(NOW_MS + 30_000, Input::RequestFailed { peer: 1 });
    assert_eq!(t.fetches_to(2), 1, "{:?}", t.sent);
    t.answer(NOW_MS + 30_100, 2);
    assert_eq!(t.r3.state().heads(), t.peers[&2].state().heads());
}

#[test]
fn a_slow_fetch_is_hedged_with_the_other_peer_after_a_second() {
    let mut t = TwoOffers::both_offered();
    let hedge = ReplicaConfig::default().fetch_hedge_ms;
    let outs = t.feed(NOW_MS + hedge / 2, Input::Timer(Timer::Fetch));
    assert_eq!(t.fetches_to(2), 0, "not yet: {outs:?}");
    t.feed(NOW_MS + hedge, Input::Timer(Timer::Fetch));
    assert_eq!(t.fetches_to(2), 1, "{:?}", t.sent);
    t.answer(NOW_MS + hedge + 100, 2);
    assert_eq!(t.r3.state().heads(), t.peers[&2].state().heads());
    // The first answer, arriving late, changes nothing and asks for nothing.
    let outs = t.answer(NOW_MS + hedge + 200, 1);
    assert!(
        !outs.iter().any(|o| matches!(o, Output::Send { .. })),
        "{outs:?}"
    );
}

#[test]
fn a_guessed_dependency_holds_no_offer_back() {
    // Peer 2 holds two updates, the second on top of the first; peer 1
    // holds neither, yet relays the second by gossip.
    let mut r2 = replica(2);
    let u1 = revocation(r2.state(), r#"User::"a""#, 0);
    submit(&mut r2, &u1).0.unwrap();
    let u2 = revocation(r2.state(), r#"User::"b""#, 0);
    submit(&mut r2, &u2).0.unwrap();
    let mut t = TwoOffers::with(replica(1), r2);
    for p in [1, 2] {
        t.answer(NOW_MS, p);
    }
    // Whatever node 3 asked peer 1 so far, answered: it has nothing.
    while t.sent.iter().any(|(p, _)| *p == 1) {
        t.answer(NOW_MS, 1);
    }
    t.feed(NOW_MS, Input::Gossip { from: 1, bytes: u2 });
    assert_eq!(t.r3.state().held_count(), 1);
    assert_eq!(
        t.fetches_to(1),
        1,
        "the missing dependency, asked of the relay"
    );
    // Peer 2's offer is fetched at once, though peer 1 was asked first.
    t.answer(NOW_MS, 2);
    assert_eq!(t.fetches_to(2), 1, "{:?}", t.sent);
    t.answer(NOW_MS + 100, 2);
    assert_eq!(t.r3.state().heads(), t.peers[&2].state().heads());
    assert_eq!(t.r3.state().held_count(), 0);
}

/// A certificate for node `n` by the admin, valid until `expires` (Unix s).
fn cert_until(n: u8, expires: u64) -> Vec<u8> {
    SignedNodeCert::sign(
        &NodeCert {
            node: node_id(n),
            name: format!("n{n}"),
            issuer: admin().public(),
            issued: 0,
            expires,
        },
        &admin(),
    )
    .to_bytes()
}

/// Finding: a node certificate that expired while its node was connected
/// kept it admitted. The replica asks for a timer at the expiry and
/// disconnects the peer then, not before.
#[test]
fn a_certificate_that_expires_while_connected_ends_the_connection() {
    let mut r = replica(1);
    let expires = NOW_MS / 1000 + 60;
    r.handle(
        NOW_MS,
        0,
        Input::PeerConnected {
            peer: 2,
            node: node_id(2),
        },
    );
    let outs = r.handle(
        NOW_MS,
        0,
        Input::Request {
            from: 2,
            request_id: 1,
            request: SyncRequest::Hello {
                cert: cert_until(2, expires),
                heads: vec![],
                root: 1,
            },
        },
    );
    let after_ms = outs
        .iter()
        .find_map(|o| match o {
            Output::Schedule {
                after_ms,
                timer: Timer::Certificate(2),
            } => Some(*after_ms),
            _ => None,
        })
        .expect("a timer at the certificate's expiry");
    assert_eq!(after_ms, 60_000);
    assert_eq!(r.admitted_peers().count(), 1);
    // Early: still valid, looked at again at the expiry.
    let outs = r.handle(NOW_MS + 30_000, 0, Input::Timer(Timer::Certificate(2)));
    assert!(!outs.iter().any(|o| matches!(o, Output::Disconnect { .. })));
    assert!(outs.iter().any(|o| matches!(
        o,
        Output::Schedule {
            after_ms: 30_000,
            timer: Timer::Certificate(2)
        }
    )));
    // At the expiry: disconnected, and nothing it sends counts any more.
    let outs = r.handle(NOW_MS + 60_000, 0, Input::Timer(Timer::Certificate(2)));
    assert!(
        outs.iter().any(
            |o| matches!(o, Output::Disconnect { peer: 2, reason } if reason.contains("expired"))
        ),
        "{outs:?}"
    );
    assert_eq!(r.admitted_peers().count(), 0);
    let u = revocation(r.state(), r#"User::"x""#, 0);
    let outs = r.handle(NOW_MS + 60_001, 0, Input::Gossip { from: 2, bytes: u });
    assert!(matches!(outs[0], Output::Verdict(Verdict::Ignore)));
}

/// Version 2 of the root: the writer removed, vouching for `heads`.
fn root_v2(heads: Vec<[u8; 32]>) -> Vec<u8> {
    let mut r = root();
    r.version = 2;
    r.operators.retain(|o| o.name != "writer");
    r.accepted_heads = heads;
    weft_protocol::trust::SignedRoot::sign(&r, &[&SecretKey::from_seed([100; 32])]).to_bytes()
}

/// A bundle update by the writer (policy role), under `root_version`.
fn writer_bundle(state: &SignedState, root_version: u64, lane: u64) -> Vec<u8> {
    let mut doc = PolicyDoc::load(&state.doc().save()).unwrap();
    let mut content = weft_crdt::BundleContent::default();
    content
        .policies
        .insert("p".into(), "permit(principal, action, resource);".into());
    let c = doc
        .build_bundle(
            actor_for(&policy_only().public(), lane.to_be_bytes()),
            "main",
            &content,
            0,
        )
        .unwrap()
        .unwrap();
    let mut u = SignedUpdate::new(&c, root_version);
    u.sign(&policy_only()).unwrap();
    u.to_bytes()
}

/// A rotation submitted at one replica reaches the others by gossip, and a
/// replica that missed the gossip gets it at its next exchange with a peer;
/// every one of them then refuses the operator the rotation removed, under
/// the old root or the new.
#[test]
fn a_rotation_spreads_by_gossip_and_sync_and_a_removed_operator_writes_nowhere() {
    let mut m = Mesh::new();
    for n in 1..=4 {
        m.add(n, cert(n, &admin(), n));
    }
    m.connect(1, 2);
    m.connect(2, 3);
    let u = revocation(m.state(1), r#"User::"eve""#, 0);
    m.submit(1, &u);
    let heads: Vec<[u8; 32]> = m.state(1).heads().iter().map(|h| h.0).collect();
    let v2 = root_v2(heads);
    let (answer, outs) = submit(m.replicas.get_mut(&1).unwrap(), &v2);
    assert_eq!(
        answer.unwrap(),
        Accepted::Root {
            version: 2,
            adopted: true
        }
    );
    assert!(
        outs.iter()
            .any(|o| matches!(o, Output::RootAdopted { version: 2, .. }))
    );
    m.carry(1, outs);
    m.run();
    for n in 1..=3 {
        assert_eq!(m.state(n).root().version, 2, "replica {n}");
    }
    // Replica 4 was not connected: it learns at its first exchange.
    assert_eq!(m.state(4).root().version, 1);
    m.connect(4, 3);
    assert_eq!(m.state(4).root().version, 2);
    assert_eq!(m.state(4).signed_roots_after(1).len(), 1);
    // The same root again is a duplicate, not a new adoption.
    let (again, _) = submit(m.replicas.get_mut(&4).unwrap(), &v2);
    assert_eq!(
        again.unwrap(),
        Accepted::Root {
            version: 2,
            adopted: false
        }
    );
    // The writer is removed: refused everywhere, whichever root it names.
    for n in 1..=4 {
        let state = m.state(n).clone();
        for version in [1, 2] {
            let mut s = state.clone();
            let err = s.ingest(&writer_bundle(&state, version, 9)).unwrap_err();
            assert!(
                matches!(
                    err,
                    weft_protocol::update::UpdateError::UnknownSigner { .. }
                        | weft_protocol::update::UpdateError::RootVersion { .. }
                ),
                "replica {n}, root {version}: {err}"
            );
        }
    }
}

/// A root that does not verify as a rotation (not signed by the current
/// root keys) is rejected and its sender struck.
#[test]
fn a_forged_rotation_is_rejected() {
    let mut m = Mesh::new();
    m.add(1, cert(1, &admin(), 1));
    m.add(2, cert(2, &admin(), 2));
    m.connect(1, 2);
    let mut r = root();
    r.version = 2;
    r.root_keys = vec![SecretKey::from_seed([66; 32]).public()];
    let forged =
        weft_protocol::trust::SignedRoot::sign(&r, &[&SecretKey::from_seed([66; 32])]).to_bytes();
    let outs = m.replicas.get_mut(&1).unwrap().handle(
        NOW_MS,
        0,
        Input::Gossip {
            from: 2,
            bytes: forged,
        },
    );
    assert!(
        outs.iter()
            .any(|o| matches!(o, Output::Verdict(Verdict::Reject)))
    );
    assert!(
        outs.iter()
            .any(|o| matches!(o, Output::Penalize { peer: 2, .. }))
    );
    assert_eq!(m.state(1).root().version, 1);
}

/// What happens leaves the replica as outputs: a command's answer comes
/// last, after the `Persist` it needs; refusals (local or from a peer),
/// admissions and held updates are each told, and counted as they are told.
#[test]
fn the_replica_says_what_happened() {
    let mut m = Mesh::new();
    m.add(1, cert(1, &admin(), 1));
    m.add(2, cert(2, &admin(), 2));
    m.connect(1, 2);
    for (n, peer) in [(1, 2), (2, 1)] {
        assert!(
            m.outputs.iter().any(|(at, o)| *at == n
                && matches!(o, Output::Admitted { peer: p, node } if *p == peer && *node == node_id(peer))),
            "replica {n} tells it admitted {peer}"
        );
    }

    // An applied submit: persisted, published, then answered.
    let u = revocation(m.state(1), r#"User::"eve""#, 0);
    let (answer, outs) = submit(m.replicas.get_mut(&1).unwrap(), &u);
    let Ok(Accepted::Applied(hash)) = answer else {
        panic!("applied, not {answer:?}");
    };
    assert!(matches!(&outs[0], Output::Persist { hash: h, .. } if *h == hash));
    assert!(outs.iter().any(|o| matches!(o, Output::Publish(_))));
    // The same again: a duplicate, nothing to persist or publish.
    let (again, outs) = submit(m.replicas.get_mut(&1).unwrap(), &u);
    assert_eq!(again.unwrap(), Accepted::Duplicate(hash));
    assert!(outs.is_empty(), "{outs:?}");

    // A refused submit: the answer is the error, and a Refused for the record.
    let before = m.replicas[&1].stats().refused.get("malformed").copied();
    let (answer, outs) = submit(m.replicas.get_mut(&1).unwrap(), b"not an update");
    assert_eq!(answer.unwrap_err().label(), "malformed");
    assert!(matches!(
        outs.as_slice(),
        [Output::Refused { from: None, label: "malformed", reason }] if !reason.is_empty()
    ));
    assert_eq!(
        m.replicas[&1].stats().refused.get("malformed").copied(),
        Some(before.unwrap_or(0) + 1)
    );

    // A forged update gossiped by peer 2: refused, and blamed on it.
    let mut forged =
        SignedUpdate::from_bytes(&revocation(m.state(1), r#"User::"mal""#, 1)).unwrap();
    forged.signatures.clear();
    let outs = m.replicas.get_mut(&1).unwrap().handle(
        NOW_MS,
        0,
        Input::Gossip {
            from: 2,
            bytes: forged.to_bytes(),
        },
    );
    assert!(
        outs.iter().any(|o| matches!(
            o,
            Output::Refused {
                from: Some(2),
                label: "unsigned",
                ..
            }
        )),
        "{outs:?}"
    );
    assert!(
        outs.iter()
            .any(|o| matches!(o, Output::Verdict(Verdict::Reject)))
    );

    // An update whose dependency this replica lacks: held, persisted (it
    // was submitted here), told, and answered as held.
    let mut other = replica(3);
    let u1 = revocation(other.state(), r#"User::"a""#, 0);
    submit(&mut other, &u1).0.unwrap();
    let u2 = revocation(other.state(), r#"User::"b""#, 0);
    let mut fresh = replica(4);
    let (answer, outs) = submit(&mut fresh, &u2);
    let Ok(Accepted::Held(held)) = answer else {
        panic!("held, not {answer:?}");
    };
    assert!(matches!(&outs[0], Output::Persist { hash, .. } if *hash == held));
    assert!(
        outs.iter()
            .any(|o| matches!(o, Output::Held { hash, from: None } if *hash == held))
    );
}
