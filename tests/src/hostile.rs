//! A hostile peer: a libp2p client that speaks Weft's protocols (Noise,
//! Yamux, gossipsub on the update topic, the sync protocol) well enough to
//! be admitted, and then sends whatever a test asks for, unchecked:
//! garbage, forged updates, oversized gossip, replays, raw sync frames.
//!
//! It presents a real certificate (an admitted node gone bad), answers the
//! node's `Hello` and sync requests like an empty node, and keeps redialing
//! its targets (a revoked peer that will not go away). It can also push
//! bytes of its choosing through the sync protocol ([`Hostile::offer`]): it
//! names them among its heads, offers their hash when a node asks what it
//! lacks, and answers the node's `Fetch` with them. A silent one
//! ([`Hostile::start_silent`]) never presents its certificate, so it stays
//! connected but unadmitted until the node's admission timeout. It is
//! subscribed to the audit topic too, and publishes there on request.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use futures::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, StreamExt as _};
use libp2p::gossipsub::{self, IdentTopic, MessageAuthenticity, ValidationMode};
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, noise, tcp, yamux};
use tokio::sync::{mpsc, oneshot};
use weft_node::audit::AUDIT_TOPIC;
use weft_node::swarm::{SYNC_PROTOCOL, TOPIC, libp2p_keypair, message_id};
use weft_protocol::identity::SecretKey;
use weft_protocol::wire::{Hash, SyncRequest, SyncResponse, WireBytes};

/// The largest answer the hostile client reads (twice the node's limit).
const MAX_READ: usize = 16 * 1024 * 1024;

/// Writes requests as given (the test builds the frame, length prefix
/// and all, so it can lie about the length); reads length-prefixed answers.
#[derive(Clone, Copy, Debug, Default)]
pub struct RawCodec;

impl request_response::Codec for RawCodec {
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
        io.write_all(&req).await?;
        io.flush().await
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
        io.write_all(&res).await?;
        io.flush().await
    }
}

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_READ {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "frame too long"));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

/// `bytes` as one sync frame: a 4-byte big-endian length, then the bytes.
pub fn frame(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    gossipsub: gossipsub::Behaviour,
    sync: request_response::Behaviour<RawCodec>,
}

enum Cmd {
    Publish(IdentTopic, Vec<u8>, oneshot::Sender<Result<(), String>>),
    Request(PeerId, Vec<u8>, oneshot::Sender<Result<Vec<u8>, String>>),
    Connected(oneshot::Sender<BTreeSet<PeerId>>),
    TopicPeers(IdentTopic, oneshot::Sender<BTreeSet<PeerId>>),
    Offer(Offered),
}

/// Bytes offered by sync until each of `waiting` has fetched them.
struct Offered {
    /// The hash they are offered under.
    hash: Hash,
    bytes: Vec<u8>,
    /// The peers that have not fetched them yet.
    waiting: BTreeSet<PeerId>,
    /// Told when the last of `waiting` has fetched them.
    done: Option<oneshot::Sender<()>>,
}

/// The hash the bytes of an update or an order are offered under: its
/// change hash, or for bytes that have none, their SHA-256.
pub fn offer_hash(bytes: &[u8]) -> Hash {
    weft_protocol::boundary::change_bytes(bytes)
        .and_then(|c| Ok(weft_protocol::chunk::change_hash(&c)?))
        .map(|h| h.0)
        .unwrap_or_else(|_| {
            let id = message_id(bytes).0;
            let mut h = [0u8; 32];
            h.copy_from_slice(&id[..32]);
            h
        })
}

/// A running hostile client; dropping it stops it.
pub struct Hostile {
    /// Its peer id (the node id its certificate names).
    pub peer_id: PeerId,
    cmds: mpsc::Sender<Cmd>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Hostile {
    /// Starts a client with `key` and its signed certificate `cert`, dialing
    /// `targets` and redialing them every half second while not connected.
    pub fn start(key: &SecretKey, cert: Vec<u8>, targets: Vec<Multiaddr>) -> Result<Hostile> {
        Self::launch(key, Some(cert), targets)
    }

    /// Starts a client with `key` that never presents a certificate: it
    /// sends no `Hello` and leaves the node's unanswered, so it is connected
    /// but not admitted (until the node's admission timeout drops it).
    pub fn start_silent(key: &SecretKey, targets: Vec<Multiaddr>) -> Result<Hostile> {
        Self::launch(key, None, targets)
    }

    fn launch(key: &SecretKey, cert: Option<Vec<u8>>, targets: Vec<Multiaddr>) -> Result<Hostile> {
        let keypair = libp2p_keypair(key).map_err(|e| anyhow!(e))?;
        let peer_id = keypair.public().to_peer_id();
        // The node's anonymous envelope, and its ids (SHA-256 of the data)
        // for what it receives; what it publishes gets an id of its own, so
        // it can replay bytes the mesh has already seen.
        let replay = Arc::new(AtomicU64::new(0));
        let publishing = replay.clone();
        let gossip_config = gossipsub::ConfigBuilder::default()
            .validation_mode(ValidationMode::Anonymous)
            .message_id_fn(move |m: &gossipsub::Message| {
                let mut id = message_id(&m.data).0;
                let n = publishing.load(Ordering::Relaxed);
                if n != 0 {
                    id.extend_from_slice(&n.to_be_bytes());
                }
                gossipsub::MessageId::new(&id)
            })
            .max_transmit_size(MAX_READ)
            .heartbeat_interval(Duration::from_secs(1))
            .build()
            .map_err(|e| anyhow!("{e}"))?;
        let mut swarm: Swarm<Behaviour> = libp2p::SwarmBuilder::with_existing_identity(keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )?
            .with_behaviour(|_| {
                let gossipsub =
                    gossipsub::Behaviour::new(MessageAuthenticity::Anonymous, gossip_config)?;
                let sync = request_response::Behaviour::with_codec(
                    RawCodec,
                    [(StreamProtocol::new(SYNC_PROTOCOL), ProtocolSupport::Full)],
                    request_response::Config::default()
                        .with_request_timeout(Duration::from_secs(10)),
                );
                Ok(Behaviour { gossipsub, sync })
            })
            .map_err(|e| anyhow!("{e}"))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
            .build();
        let topic = IdentTopic::new(TOPIC);
        for t in [&topic, &IdentTopic::new(AUDIT_TOPIC)] {
            swarm
                .behaviour_mut()
                .gossipsub
                .subscribe(t)
                .map_err(|e| anyhow!("{e}"))?;
        }
        let (tx, rx) = mpsc::channel(16);
        let task = tokio::spawn(drive(swarm, cert, targets, rx, replay));
        Ok(Hostile {
            peer_id,
            cmds: tx,
            task,
        })
    }

    /// Publishes `bytes` on the update topic as they are.
    pub async fn publish(&self, bytes: Vec<u8>) -> Result<()> {
        self.publish_on(TOPIC, bytes).await
    }

    /// Publishes `bytes` on `topic` (the update topic or [`AUDIT_TOPIC`])
    /// as they are.
    pub async fn publish_on(&self, topic: &str, bytes: Vec<u8>) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Publish(IdentTopic::new(topic), bytes, tx))
            .await
            .map_err(|_| anyhow!("the hostile client stopped"))?;
        rx.await?
            .map_err(|e| anyhow!("gossipsub would not publish: {e}"))
    }

    /// Sends `raw` (a whole frame, see [`frame`]) on the sync protocol to
    /// `peer`; the answer frame's bytes, or why there was none.
    pub async fn request(&self, peer: PeerId, raw: Vec<u8>) -> Result<Result<Vec<u8>, String>> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Request(peer, raw, tx))
            .await
            .map_err(|_| anyhow!("the hostile client stopped"))?;
        Ok(rx.await?)
    }

    /// The peers it is connected to now.
    pub async fn connected(&self) -> Result<BTreeSet<PeerId>> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Connected(tx))
            .await
            .map_err(|_| anyhow!("the hostile client stopped"))?;
        Ok(rx.await?)
    }

    /// The peers gossipsub knows to be subscribed to the update topic.
    pub async fn topic_peers(&self) -> Result<BTreeSet<PeerId>> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::TopicPeers(IdentTopic::new(TOPIC), tx))
            .await
            .map_err(|_| anyhow!("the hostile client stopped"))?;
        Ok(rx.await?)
    }

    /// Pushes `bytes` to each of `peers` through the sync protocol, as a
    /// peer that holds an update they lack would: every half second it
    /// sends each peer that has not fetched them yet a `Heads` naming their
    /// hash ([`offer_hash`]), which makes the node ask for its heads; it
    /// answers with an `Offer` of that hash, and the node's `Fetch` of it
    /// with `bytes`, once per peer. Returns once every one of `peers` has
    /// fetched them, or fails after `timeout`.
    pub async fn offer(&self, bytes: Vec<u8>, peers: &[PeerId], timeout: Duration) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(Cmd::Offer(Offered {
                hash: offer_hash(&bytes),
                bytes,
                waiting: peers.iter().copied().collect(),
                done: Some(tx),
            }))
            .await
            .map_err(|_| anyhow!("the hostile client stopped"))?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => bail!("the hostile client stopped"),
            Err(_) => bail!("the nodes did not fetch the offered bytes within {timeout:?}"),
        }
    }

    /// Publishes, retrying while gossipsub knows no subscribed peer yet.
    pub async fn publish_when_ready(&self, bytes: Vec<u8>) -> Result<()> {
        self.publish_on_when_ready(TOPIC, bytes).await
    }

    /// Publishes on `topic`, retrying while gossipsub knows no subscribed
    /// peer yet.
    pub async fn publish_on_when_ready(&self, topic: &str, bytes: Vec<u8>) -> Result<()> {
        let start = std::time::Instant::now();
        loop {
            match self.publish_on(topic, bytes.clone()).await {
                Ok(()) => return Ok(()),
                Err(e) if start.elapsed() > Duration::from_secs(15) => {
                    bail!("publishing: {e:#}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

async fn drive(
    mut swarm: Swarm<Behaviour>,
    cert: Option<Vec<u8>>,
    targets: Vec<Multiaddr>,
    mut cmds: mpsc::Receiver<Cmd>,
    replay: Arc<AtomicU64>,
) {
    let mut published = 0u64;
    let mut offers: Vec<Offered> = Vec::new();
    let mut pending: HashMap<OutboundRequestId, oneshot::Sender<Result<Vec<u8>, String>>> =
        HashMap::new();
    let mut redial = tokio::time::interval(Duration::from_millis(500));
    let mut target_peers: HashMap<Multiaddr, PeerId> = HashMap::new();
    let hello = cert.as_ref().map(|cert| {
        SyncRequest::Hello {
            cert: cert.clone(),
            heads: Vec::new(),
            root: 1,
        }
        .to_bytes()
    });
    // The node's requests a silent client leaves unanswered (dropping a
    // channel would answer with an error).
    let mut unanswered = Vec::new();
    loop {
        tokio::select! {
            cmd = cmds.recv() => match cmd {
                None => return,
                Some(Cmd::Publish(topic, bytes, reply)) => {
                    published += 1;
                    replay.store(published, Ordering::Relaxed);
                    let r = swarm
                        .behaviour_mut()
                        .gossipsub
                        .publish(topic, bytes)
                        .map(|_| ())
                        .map_err(|e| e.to_string());
                    replay.store(0, Ordering::Relaxed);
                    let _ = reply.send(r);
                }
                Some(Cmd::Request(peer, raw, reply)) => {
                    let id = swarm.behaviour_mut().sync.send_request(&peer, raw);
                    pending.insert(id, reply);
                }
                Some(Cmd::Connected(reply)) => {
                    let _ = reply.send(swarm.connected_peers().copied().collect());
                }
                Some(Cmd::TopicPeers(topic, reply)) => {
                    let hash = topic.hash();
                    let peers = swarm
                        .behaviour()
                        .gossipsub
                        .all_peers()
                        .filter(|(_, topics)| topics.contains(&&hash))
                        .map(|(p, _)| *p)
                        .collect();
                    let _ = reply.send(peers);
                }
                Some(Cmd::Offer(offered)) => {
                    announce(&mut swarm, &offered);
                    offers.push(offered);
                }
            },
            _ = redial.tick() => {
                for o in &offers {
                    announce(&mut swarm, o);
                }
                for t in &targets {
                    let connected = target_peers.get(t).is_some_and(|p| swarm.is_connected(p));
                    if !connected {
                        let _ = swarm.dial(t.clone());
                    }
                }
            }
            event = swarm.select_next_some() => match event {
                SwarmEvent::ConnectionEstablished { peer_id, endpoint, num_established, .. } => {
                    target_peers.insert(endpoint.get_remote_address().clone(), peer_id);
                    if num_established.get() == 1
                        && let Some(hello) = &hello
                    {
                        // Show the certificate, as an honest node does.
                        swarm.behaviour_mut().sync.send_request(&peer_id, frame(hello));
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Sync(request_response::Event::Message {
                    peer, message, ..
                })) => match message {
                    request_response::Message::Request { request, channel, .. } => {
                        let Some(cert) = &cert else {
                            unanswered.push(channel);
                            continue;
                        };
                        // Answer like a node that holds nothing but what it
                        // offers this peer.
                        let offered: Vec<Hash> = offers
                            .iter()
                            .filter(|o| o.waiting.contains(&peer))
                            .map(|o| o.hash)
                            .collect();
                        let answer = match SyncRequest::from_bytes(&request) {
                            Ok(SyncRequest::Hello { .. }) => SyncResponse::Hello {
                                cert: cert.clone(),
                                heads: offered,
                                root: 1,
                            },
                            Ok(SyncRequest::Heads { .. }) => SyncResponse::Offer {
                                heads: offered.clone(),
                                hashes: offered,
                                more: false,
                                root: 1,
                            },
                            Ok(SyncRequest::Roots { .. }) => SyncResponse::Roots {
                                roots: Vec::new(),
                            },
                            Ok(SyncRequest::Fetch { hashes }) => SyncResponse::Updates {
                                updates: serve(&mut offers, &peer, &hashes),
                            },
                            Err(e) => SyncResponse::Refused { reason: e.to_string() },
                        };
                        let _ = swarm
                            .behaviour_mut()
                            .sync
                            .send_response(channel, frame(&answer.to_bytes()));
                    }
                    request_response::Message::Response { request_id, response } => {
                        if let Some(reply) = pending.remove(&request_id) {
                            let _ = reply.send(Ok(response));
                        }
                    }
                },
                SwarmEvent::Behaviour(BehaviourEvent::Sync(
                    request_response::Event::OutboundFailure { request_id, error, .. },
                )) => {
                    if let Some(reply) = pending.remove(&request_id) {
                        let _ = reply.send(Err(error.to_string()));
                    }
                }
                _ => {}
            },
        }
    }
}

/// Sends each peer still waiting for `offered` a `Heads` naming its hash,
/// so that the node asks for this client's heads (and is offered it). The
/// node's answer to it is not read.
fn announce(swarm: &mut Swarm<Behaviour>, offered: &Offered) {
    let heads = frame(
        &SyncRequest::Heads {
            heads: vec![offered.hash],
            root: 1,
        }
        .to_bytes(),
    );
    for peer in &offered.waiting {
        if swarm.is_connected(peer) {
            swarm.behaviour_mut().sync.send_request(peer, heads.clone());
        }
    }
}

/// The offered bytes among `hashes` that `peer` has not fetched yet; each
/// is marked fetched by it, and an offer every peer has fetched is done.
fn serve(offers: &mut Vec<Offered>, peer: &PeerId, hashes: &[Hash]) -> Vec<WireBytes> {
    let mut out = Vec::new();
    for o in offers.iter_mut() {
        if hashes.contains(&o.hash) && o.waiting.remove(peer) {
            out.push(WireBytes(o.bytes.clone()));
            if o.waiting.is_empty()
                && let Some(done) = o.done.take()
            {
                let _ = done.send(());
            }
        }
    }
    offers.retain(|o| !o.waiting.is_empty());
    out
}

/// Decodes a sync answer frame's bytes.
pub fn decode_response(bytes: &[u8]) -> Result<SyncResponse> {
    SyncResponse::from_bytes(bytes).context("the node's answer is not a sync response")
}
