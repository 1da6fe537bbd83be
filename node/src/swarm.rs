//! The libp2p swarm of a node: its behaviours and the sync codec. The
//! transports under it (TCP and QUIC, DNS, the byte counters) are
//! [`crate::transport`]; the node task ([`crate::task`]) owns the swarm
//! and drives it.
//!
//! Behaviours:
//! - an allow/block list, which refuses connections from banned peers (and
//!   from peers cut off by a partition the demo or a test sets up);
//! - connection limits: in all, per peer, per remote IP address and in
//!   their handshake ([`crate::limits`]);
//! - gossipsub on [`TOPIC`] with manual validation: a message is forwarded
//!   only after the replica has verified the operator signatures on it; a
//!   forged one is rejected and peer scoring punishes the peer that sent
//!   it. Message ids are the SHA-256 of the data, so the same update
//!   published by two nodes is one message. Audit checkpoints
//!   ([`crate::audit::AUDIT_TOPIC`]) and detection summaries
//!   ([`crate::mesh_detect::SUMMARY_TOPIC`]) have topics of their own,
//!   validated and scored the same way;
//! - request-response on [`SYNC_PROTOCOL`] for anti-entropy, with
//!   length-prefixed frames bounded by [`MAX_WIRE_BYTES`];
//! - identify;
//! - ping, every [`PING_INTERVAL`]: the node task closes a connection that
//!   has answered no ping for [`SILENT_CONNECTION`], so a peer behind a
//!   partition is found out in seconds and redialed, instead of waiting on
//!   TCP retransmissions that back off to minutes;
//! - Kademlia among admitted peers and, when asked for, mDNS
//!   ([`crate::discovery`]);
//! - NAT traversal ([`crate::relay`]): the circuit relay v2 server (on
//!   `relay = true` nodes, for admitted peers only) and client (on every
//!   node), DCUtR hole punching on relayed connections, and autonat.
//!
//! A dial given several addresses of a peer ranks them as libp2p's smart
//! dialing does: QUIC first, TCP a moment later (30 ms on a private
//! network, 250 ms on a public one) if QUIC has not connected by then, so
//! a peer that has both is reached over QUIC unless UDP is blocked; a
//! relayed address (`/p2p-circuit`) 250 ms after the direct ones.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use libp2p::gossipsub::{
    self, IdentTopic, MessageAuthenticity, MessageId, PeerScoreParams, PeerScoreThresholds,
    TopicScoreParams, ValidationMode,
};
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, allow_block_list, autonat, connection_limits, dcutr,
    identify, identity, kad, mdns, ping, relay,
};
use sha2::{Digest as _, Sha256};
use weft_protocol::identity::SecretKey;
use weft_protocol::update::MAX_UPDATE_BYTES;
use weft_protocol::wire::{MAX_WIRE_BYTES, SyncResponse};

/// The gossipsub topic that carries signed updates.
pub const TOPIC: &str = "weft/updates/v1";

/// The request-response protocol of anti-entropy sync.
pub const SYNC_PROTOCOL: &str = "/weft/sync/1";

/// The identify protocol version string.
pub const IDENTIFY_PROTOCOL: &str = "/weft/1.0.0";

/// How long an idle connection stays open. One hour: the update topic is
/// quiet, and a mesh that tears its connections down between updates would
/// pay a handshake and a fresh admission on every one.
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(3600);

/// How often a node pings each peer it is connected to.
pub const PING_INTERVAL: Duration = Duration::from_secs(1);

/// How long one ping may go unanswered.
pub const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a connection may go without answering a ping before the node
/// task closes it. libp2p's ping reports a connection's first timeout to
/// nobody, and its next only after a new stream failed to open (ten
/// seconds more), so the node task keeps the time of each connection's
/// last answer itself. Three seconds: far above a WAN round trip, well
/// below the time TCP's backed-off retransmissions take to notice a heal.
pub const SILENT_CONNECTION: Duration = Duration::from_secs(3);

pub use crate::transport::{CONNECT_TIMEOUT, HANDSHAKE_TIMEOUT, Traffic};

/// How long a sync request may take. Thirty seconds: a `Fetch` answer can be
/// [`MAX_WIRE_BYTES`] (8 MiB), which a slow link needs a while to carry.
pub const SYNC_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest gossip message: a signed update plus room for the gossipsub
/// envelope (source, sequence number, signature, topic).
const MAX_GOSSIP_BYTES: usize = MAX_UPDATE_BYTES + 64 * 1024;

// ---------------------------------------------------------------------------
// The sync codec

/// Length-prefixed frames: a 4-byte big-endian length, then that many bytes.
/// A frame longer than [`MAX_WIRE_BYTES`] is refused before anything is
/// allocated for it. Decoding the bytes into sync messages is the driver's
/// job, so that a bad message can be blamed on its peer.
#[derive(Clone, Copy, Debug, Default)]
pub struct SyncCodec;

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_WIRE_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a sync frame of {len} bytes is over the limit of {MAX_WIRE_BYTES}"),
        ));
    }
    let mut buf = Vec::with_capacity(len.min(64 * 1024));
    io.take(len as u64).read_to_end(&mut buf).await?;
    if buf.len() != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the sync frame ended early",
        ));
    }
    Ok(buf)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, bytes: &[u8]) -> io::Result<()> {
    if bytes.len() > MAX_WIRE_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "refusing to send a sync frame of {} bytes, over the limit of {MAX_WIRE_BYTES}",
                bytes.len()
            ),
        ));
    }
    let len =
        u32::try_from(bytes.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(bytes).await?;
    io.flush().await
}

impl request_response::Codec for SyncCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &res).await
    }
}

/// Trims an `Updates` answer so that it encodes within [`MAX_WIRE_BYTES`]
/// (the replica bounds the count, the driver the bytes). The asker fetches
/// what was left out in its next round.
pub(crate) fn fit_response(response: SyncResponse) -> SyncResponse {
    let SyncResponse::Updates { mut updates } = response else {
        return response;
    };
    // Each item costs its bytes plus a varint length; leave room for the envelope.
    let budget = MAX_WIRE_BYTES - 1024;
    let mut total = 0usize;
    let keep = updates
        .iter()
        .take_while(|u| {
            total += u.0.len() + 10;
            total <= budget
        })
        .count();
    updates.truncate(keep);
    SyncResponse::Updates { updates }
}

// ---------------------------------------------------------------------------
// The behaviour

/// The node's network behaviour.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    /// Refuses connections from banned (and partitioned) peers. First, so a
    /// refused connection never reaches the others.
    pub(crate) blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    /// Refuses connections past the total, per-peer and pending-incoming
    /// limits ([`crate::limits`]).
    pub(crate) limits: connection_limits::Behaviour,
    /// Refuses inbound connections from an address that holds its limit.
    pub(crate) per_ip: crate::limits::PerIpLimit,
    /// Gossip of signed updates, audit checkpoints and detection
    /// summaries (gossipsub, its handlers woken by [`crate::gossip`]).
    pub(crate) gossipsub: crate::gossip::Gossip,
    /// Anti-entropy sync.
    pub(crate) sync: request_response::Behaviour<SyncCodec>,
    /// Exchanges listen addresses and protocol versions.
    pub(crate) identify: identify::Behaviour,
    /// Measures each connection's round trip and finds dead ones.
    pub(crate) ping: ping::Behaviour,
    /// Kademlia among admitted peers (off with `discovery = false`).
    pub(crate) kad: Toggle<kad::Behaviour<kad::store::MemoryStore>>,
    /// mDNS on the local network (on with `mdns = true`).
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
    /// The circuit relay v2 server, for admitted peers only (on with
    /// `relay = true`).
    pub(crate) relay: Toggle<relay::Behaviour>,
    /// The circuit relay v2 client: reservations on relays, and dials
    /// through them.
    pub(crate) relay_client: relay::client::Behaviour,
    /// Hole punching on relayed connections.
    pub(crate) dcutr: dcutr::Behaviour,
    /// Whether the node can be dialed from outside (off only in tests).
    pub(crate) autonat: Toggle<autonat::Behaviour>,
}

/// The gossipsub configuration. The measurements behind each setting are
/// in BENCHMARKS.md, "Propagation".
///
/// - `mesh_n` 3, `mesh_n_low` 1: sparse meshes, about one eager copy of an
///   update per node; a 3-node site (2 peers each) is never under-populated.
/// - `mesh_outbound_min` 1: the most a node that dialled one peer can have.
/// - `mesh_n_high` 12: above a typical node's connection count, so meshes
///   are not pruned (and their peers left waiting for IHAVE) as they grow.
/// - `history_gossip` 1: an id goes into IHAVE for one heartbeat, to
///   `gossip_lazy` (6) peers outside the mesh: the repair path for a node
///   that missed every eager copy.
/// - `flood_publish` (the default): a node's own updates go to every peer
///   with a good score, the first hop's redundancy a sparse mesh needs.
/// - Anonymous envelope (`ValidationMode::Anonymous`): updates carry their
///   operators' signatures, which the replica checks before Accept, and the
///   message id is the SHA-256 of the data ([`message_id`]), so a source,
///   sequence number and envelope signature would add bytes and no
///   authenticity. A Reject still penalizes the peer that delivered it.
/// - Manual validation, a 1 s heartbeat, and messages up to a signed
///   update's limit plus the envelope.
pub fn gossipsub_config() -> Result<gossipsub::Config, String> {
    gossipsub::ConfigBuilder::default()
        .validate_messages()
        .validation_mode(ValidationMode::Anonymous)
        .message_id_fn(|m: &gossipsub::Message| message_id(&m.data))
        .max_transmit_size(MAX_GOSSIP_BYTES)
        .mesh_n(3)
        .mesh_n_low(1)
        .mesh_n_high(12)
        .mesh_outbound_min(1)
        .history_gossip(1)
        .heartbeat_interval(Duration::from_secs(1))
        .build()
        .map_err(|e| format!("invalid gossipsub configuration: {e}"))
}

/// The gossipsub message id of a message: the SHA-256 of its data, so a
/// message is the same message whoever relays it.
pub fn message_id(data: &[u8]) -> MessageId {
    MessageId::from(Sha256::digest(data).to_vec())
}

/// Peer-score parameters for a quiet topic, and their thresholds.
///
/// Updates are rare (a few a day), so the delivery-rate terms that suit
/// busy topics would punish honest peers for having nothing to say:
/// `mesh_message_deliveries_weight` (P3) and the mesh failure penalty (P3b)
/// are 0. What is left:
/// - P1, time in mesh: a small bonus, at most 1 point after an hour;
/// - P2, first deliveries: 1 point each, at most 10, decaying over an hour;
/// - P4, invalid messages: −20 × count², decaying over an hour. The score
///   of a peer that forges updates, starting from at most +10 (the topic
///   score cap), is at most −10 after one (below the gossip threshold, −5: no
///   gossip is exchanged with it), at most −70 after two (below the publish
///   threshold, −50: our own updates no longer go to it), and at most −170
///   after three (below the graylist threshold, −100: everything it sends is
///   ignored). The third is also the replica's third strike, so the peer is
///   banned at the same moment gossipsub stops listening to it.
/// - Audit checkpoints are scored the same way, and detection summaries
///   too, but for P2 at a tenth of the weight: every node sends one every
///   10 s, so first deliveries there are cheap.
/// - IP colocation (P6) is off (weight 0): admission is by certificate, not
///   by address, and several nodes behind one NAT (or on one test host) are
///   normal.
///
/// Thresholds: gossip −5, publish −50, graylist −100, accept PX 10 (PX is
/// off), opportunistic graft 0.5 (a mesh whose median peer has not yet
/// earned half a point of P1 gets one better peer grafted).
pub fn peer_score(topic: &IdentTopic) -> (PeerScoreParams, PeerScoreThresholds) {
    let hour = Duration::from_secs(3600);
    let topic_params = TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 1.0 / 3600.0,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 3600.0,
        first_message_deliveries_weight: 1.0,
        first_message_deliveries_decay: gossipsub::score_parameter_decay(hour),
        first_message_deliveries_cap: 10.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -20.0,
        invalid_message_deliveries_decay: gossipsub::score_parameter_decay(hour),
        ..TopicScoreParams::default()
    };
    let mut params = PeerScoreParams {
        topic_score_cap: 10.0,
        ip_colocation_factor_weight: 0.0,
        ..PeerScoreParams::default()
    };
    // Audit checkpoints are scored alike: a forged one counts as invalid.
    params.topics.insert(
        IdentTopic::new(crate::audit::AUDIT_TOPIC).hash(),
        topic_params.clone(),
    );
    // So are detection summaries, with first deliveries worth a tenth
    // (at most 1 point): every node sends one every 10 s, which at full
    // weight would fill the topic score cap on summaries alone. A forged
    // summary costs what a forged update does.
    params.topics.insert(
        IdentTopic::new(crate::mesh_detect::SUMMARY_TOPIC).hash(),
        TopicScoreParams {
            first_message_deliveries_weight: 0.1,
            ..topic_params.clone()
        },
    );
    params.topics.insert(topic.hash(), topic_params);
    let thresholds = PeerScoreThresholds {
        gossip_threshold: -5.0,
        publish_threshold: -50.0,
        graylist_threshold: -100.0,
        accept_px_threshold: 10.0,
        opportunistic_graft_threshold: 0.5,
    };
    (params, thresholds)
}

/// What the behaviour is built from besides the key.
struct Parts<'a> {
    topic: &'a IdentTopic,
    limits: &'a crate::limits::ConnectionLimits,
    discovery: &'a crate::discovery::DiscoveryOptions,
    relay_client: relay::client::Behaviour,
    admitted: &'a crate::relay::Admitted,
}

fn build_behaviour(
    key: &identity::Keypair,
    parts: Parts<'_>,
    metrics: &mut prometheus_client::registry::Registry,
) -> Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
    let Parts {
        topic,
        limits,
        discovery,
        relay_client,
        admitted,
    } = parts;
    let local = key.public().to_peer_id();
    let relay = discovery
        .relay
        .server
        .then(|| crate::relay::server(local, &discovery.relay, admitted));
    let autonat = discovery
        .relay
        .probe_reachability
        .then(|| crate::relay::autonat(local));
    let kad = discovery
        .kademlia
        .then(|| crate::discovery::kademlia(local));
    let mdns = if discovery.mdns {
        Some(
            mdns::tokio::Behaviour::new(mdns::Config::default(), local)
                .map_err(|e| format!("cannot start mDNS (mdns = true): {e}"))?,
        )
    } else {
        None
    };
    let mut gossipsub =
        gossipsub::Behaviour::new(MessageAuthenticity::Anonymous, gossipsub_config()?)?
            .with_metrics(
                metrics.sub_registry_with_prefix("libp2p_gossipsub"),
                gossipsub::MetricsConfig::default(),
            );
    let (params, thresholds) = peer_score(topic);
    gossipsub.with_peer_score(params, thresholds)?;
    gossipsub.subscribe(topic)?;
    gossipsub.subscribe(&IdentTopic::new(crate::audit::AUDIT_TOPIC))?;
    gossipsub.subscribe(&IdentTopic::new(crate::mesh_detect::SUMMARY_TOPIC))?;
    let sync = request_response::Behaviour::with_codec(
        SyncCodec,
        [(StreamProtocol::new(SYNC_PROTOCOL), ProtocolSupport::Full)],
        request_response::Config::default().with_request_timeout(SYNC_REQUEST_TIMEOUT),
    );
    let identify = identify::Behaviour::new(identify::Config::new(
        IDENTIFY_PROTOCOL.into(),
        key.public(),
    ));
    Ok(Behaviour {
        blocked: allow_block_list::Behaviour::default(),
        limits: connection_limits::Behaviour::new(limits.libp2p()),
        per_ip: crate::limits::PerIpLimit::new(limits.per_ip),
        gossipsub: crate::gossip::Gossip::new(gossipsub),
        sync,
        identify,
        ping: ping::Behaviour::new(
            ping::Config::new()
                .with_interval(PING_INTERVAL)
                .with_timeout(PING_TIMEOUT),
        ),
        kad: kad.into(),
        mdns: mdns.into(),
        relay: relay.into(),
        relay_client,
        dcutr: dcutr::Behaviour::new(local),
        autonat: autonat.into(),
    })
}

/// The libp2p keypair of a node key: the same ed25519 key, so the peer id
/// is the node id.
pub fn libp2p_keypair(key: &SecretKey) -> Result<identity::Keypair, String> {
    use ed25519_dalek::pkcs8::DecodePrivateKey as _;
    // SecretKey does not hand out its seed; its PKCS#8 document does.
    let pem = key.to_pkcs8_pem();
    let signing = ed25519_dalek::SigningKey::from_pkcs8_pem(&pem)
        .map_err(|e| format!("the node key is not an ed25519 PKCS#8 document: {e}"))?;
    let seed = zeroize::Zeroizing::new(signing.to_bytes());
    identity::Keypair::ed25519_from_bytes(*seed)
        .map_err(|e| format!("the node key is not a usable libp2p key: {e}"))
}

/// Builds the swarm: the transports of [`crate::transport`] (their bytes
/// counted into `traffic`), and [`Behaviour`] with these connection
/// `limits` and `discovery`, its gossipsub metrics registered in
/// `metrics`; the relay server, if any, serves the peers in `admitted`
/// only. Dials rank a peer's addresses QUIC first (see the module doc).
pub(crate) fn build_swarm(
    key: identity::Keypair,
    topic: &IdentTopic,
    traffic: Arc<Traffic>,
    limits: &crate::limits::ConnectionLimits,
    discovery: &crate::discovery::DiscoveryOptions,
    admitted: &crate::relay::Admitted,
    metrics: &mut prometheus_client::registry::Registry,
) -> Result<Swarm<Behaviour>, String> {
    let topic = topic.clone();
    let (relay_transport, relay_client) = relay::client::new(key.public().to_peer_id());
    let parts = Parts {
        topic: &topic,
        limits,
        discovery,
        relay_client,
        admitted,
    };
    Ok(libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_other_transport(|key| crate::transport::build(key, traffic, relay_transport))
        .map_err(|e| format!("cannot set up the transports: {e}"))?
        .with_behaviour(|key| build_behaviour(key, parts, metrics))
        .map_err(|e| format!("cannot set up the network behaviour: {e}"))?
        .with_swarm_config(|c| {
            c.with_idle_connection_timeout(IDLE_CONNECTION_TIMEOUT)
                .with_smart_dial()
        })
        .build())
}

/// Splits a trailing `/p2p/PEER` off an address.
pub fn split_p2p(mut addr: Multiaddr) -> (Multiaddr, Option<PeerId>) {
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => {
            addr.pop();
            (addr, Some(peer))
        }
        _ => (addr, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_protocol::identity::NodeId;
    use weft_protocol::wire::WireBytes;

    #[test]
    fn seed_roundtrips_through_pkcs8() {
        let key = SecretKey::from_seed([7; 32]);
        let kp = libp2p_keypair(&key).unwrap();
        assert_eq!(
            kp.public().to_peer_id().to_string(),
            NodeId::new(key.public()).to_string()
        );
    }

    #[test]
    fn gossipsub_config_and_scores_are_valid() {
        gossipsub_config().unwrap();
        let (p, t) = peer_score(&IdentTopic::new(TOPIC));
        p.validate().unwrap();
        t.validate().unwrap();
    }

    #[test]
    fn big_answers_are_trimmed() {
        let big = WireBytes(vec![0u8; 3 * 1024 * 1024]);
        let r = fit_response(SyncResponse::Updates {
            updates: vec![big.clone(), big.clone(), big.clone(), big],
        });
        let SyncResponse::Updates { updates } = &r else {
            panic!()
        };
        assert_eq!(updates.len(), 2);
        assert!(r.to_bytes().len() <= MAX_WIRE_BYTES);
    }

    #[tokio::test]
    async fn frames_over_the_limit_are_refused_before_reading() {
        let mut bytes = ((MAX_WIRE_BYTES + 1) as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0; 16]);
        let mut io = futures::io::Cursor::new(bytes);
        let err = read_frame(&mut io).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let mut ok = Vec::new();
        write_frame(&mut futures::io::Cursor::new(&mut ok), b"hello")
            .await
            .unwrap();
        let back = read_frame(&mut futures::io::Cursor::new(ok)).await.unwrap();
        assert_eq!(back, b"hello");
        let mut short = 10u32.to_be_bytes().to_vec();
        short.extend_from_slice(b"abc");
        assert!(
            read_frame(&mut futures::io::Cursor::new(short))
                .await
                .is_err()
        );
    }
}
