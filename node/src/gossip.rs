//! gossipsub, with every connection of a peer woken when there is
//! something to send to it.
//!
//! # Why
//! libp2p-gossipsub (0.50) keeps one outgoing queue per peer, shared by the
//! connection handlers of all that peer's connections. A push onto it
//! wakes only the handlers that wait on it, and a handler waits on it only
//! once it holds an outbound gossipsub stream. A handler without one opens
//! one when it is polled and finds the queue non-empty, and it is polled
//! only when something else happens on its connection.
//!
//! So when a peer's connection that carried the stream closes while
//! another stays (the node closes a duplicate TCP connection after an
//! autonat dial-back or a simultaneous dial, the TCP connection once QUIC
//! has settled, the relayed one once a hole punch has succeeded), the
//! next messages to that peer wait in the queue until its remaining
//! connection is polled for another reason: the next ping, up to
//! [`crate::swarm::PING_INTERVAL`] later. Until then an update reaches that
//! peer only by IHAVE from another node.
//!
//! # What [`Gossip`] adds
//! Each connection's handler is wrapped ([`Handler`]). A handler that
//! holds no outbound stream and has not asked for one leaves its waker in
//! a list shared with the behaviour when it goes idle. The behaviour wakes
//! every waker on the list (and empties it) after each call that can queue
//! a message: [`Gossip::publish`], [`Gossip::report_message_validation_result`],
//! an event from a connection (an IWANT answered, a GRAFT), a closed
//! connection, and at most every [`HEARTBEAT_WAKE`] while polled (the
//! heartbeat's IHAVE and GRAFT). A woken handler finds the queue non-empty
//! and opens its stream; from then on it waits on the queue itself and
//! leaves the list. Handlers that hold a stream are never on the list, so
//! the list holds a peer's second connections only, and each wake-up is
//! one poll of an idle connection. A stream that fails later is not seen
//! from outside the handler: that handler stays off the list, and opens a
//! new stream on its next poll with a message waiting, as gossipsub alone
//! does.
//!
//! Everything else is gossipsub's own: [`Gossip`] dereferences to
//! [`gossipsub::Behaviour`] for the rest of its methods.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::gossipsub::{self, MessageAcceptance, MessageId, PublishError, TopicHash};
use libp2p::swarm::handler::ConnectionEvent;
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, FromSwarm,
    NetworkBehaviour, SubstreamProtocol, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};

/// How often, at most, a poll of the behaviour wakes the waiting handlers,
/// for what the heartbeat queued.
pub const HEARTBEAT_WAKE: Duration = Duration::from_millis(250);

type Inner = gossipsub::Behaviour;
type InnerHandler = THandler<Inner>;

/// The wakers of the handlers that hold no outbound stream, by connection.
#[derive(Debug, Clone, Default)]
struct Waiting(Arc<Mutex<HashMap<ConnectionId, Waker>>>);

impl Waiting {
    fn insert(&self, id: ConnectionId, waker: &Waker) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match map.get_mut(&id) {
            Some(w) if w.will_wake(waker) => {}
            Some(w) => w.clone_from(waker),
            None => {
                map.insert(id, waker.clone());
            }
        }
    }

    fn remove(&self, id: ConnectionId) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    fn wake_all(&self) {
        let woken: Vec<Waker> = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, w)| w)
            .collect();
        for w in woken {
            w.wake();
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// gossipsub whose connection handlers are woken when a message may wait
/// for them (see the module doc).
pub struct Gossip {
    inner: Inner,
    waiting: Waiting,
    woken: Instant,
}

impl Gossip {
    /// Wraps a configured gossipsub behaviour.
    pub fn new(inner: Inner) -> Self {
        Gossip {
            inner,
            waiting: Waiting::default(),
            woken: Instant::now(),
        }
    }

    /// [`gossipsub::Behaviour::publish`], then a wake-up.
    pub fn publish(
        &mut self,
        topic: impl Into<TopicHash>,
        data: impl Into<Vec<u8>>,
    ) -> Result<MessageId, PublishError> {
        let published = self.inner.publish(topic, data);
        self.wake();
        published
    }

    /// [`gossipsub::Behaviour::report_message_validation_result`] (an
    /// accepted message is forwarded), then a wake-up.
    pub fn report_message_validation_result(
        &mut self,
        id: &MessageId,
        source: &PeerId,
        acceptance: MessageAcceptance,
    ) -> bool {
        let known = self
            .inner
            .report_message_validation_result(id, source, acceptance);
        self.wake();
        known
    }

    fn wake(&mut self) {
        self.waiting.wake_all();
        self.woken = Instant::now();
    }

    fn wrap(&self, id: ConnectionId, inner: InnerHandler) -> Handler {
        Handler {
            inner,
            id,
            waiting: self.waiting.clone(),
            stream: Stream::None,
        }
    }
}

impl Deref for Gossip {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl DerefMut for Gossip {
    fn deref_mut(&mut self) -> &mut Inner {
        &mut self.inner
    }
}

impl NetworkBehaviour for Gossip {
    type ConnectionHandler = Handler;
    type ToSwarm = gossipsub::Event;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(id, local, remote)
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<Handler, ConnectionDenied> {
        let inner = self
            .inner
            .handle_established_inbound_connection(id, peer, local, remote)?;
        Ok(self.wrap(id, inner))
    }

    fn handle_pending_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: Option<PeerId>,
        addresses: &[Multiaddr],
        role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner
            .handle_pending_outbound_connection(id, peer, addresses, role)
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role: Endpoint,
        port_use: PortUse,
    ) -> Result<Handler, ConnectionDenied> {
        let inner = self
            .inner
            .handle_established_outbound_connection(id, peer, addr, role, port_use)?;
        Ok(self.wrap(id, inner))
    }

    fn on_swarm_event(&mut self, event: FromSwarm<'_>) {
        let closed = matches!(event, FromSwarm::ConnectionClosed(_));
        self.inner.on_swarm_event(event);
        if closed {
            self.wake();
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.inner.on_connection_handler_event(peer, id, event);
        self.wake();
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        let polled = self.inner.poll(cx);
        if self.woken.elapsed() >= HEARTBEAT_WAKE {
            self.wake();
        }
        polled
    }
}

/// Where a handler's outbound gossipsub stream stands, as seen from
/// outside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    /// None held, none asked for: the handler waits on [`Waiting`].
    None,
    /// Asked for.
    Opening,
    /// Held: the handler waits on the queue itself.
    Open,
}

/// gossipsub's connection handler, which leaves its waker with the
/// behaviour while it holds no outbound stream.
pub struct Handler {
    inner: InnerHandler,
    id: ConnectionId,
    waiting: Waiting,
    stream: Stream,
}

impl Drop for Handler {
    fn drop(&mut self) {
        self.waiting.remove(self.id);
    }
}

impl ConnectionHandler for Handler {
    type FromBehaviour = <InnerHandler as ConnectionHandler>::FromBehaviour;
    type ToBehaviour = <InnerHandler as ConnectionHandler>::ToBehaviour;
    type InboundProtocol = <InnerHandler as ConnectionHandler>::InboundProtocol;
    type OutboundProtocol = <InnerHandler as ConnectionHandler>::OutboundProtocol;
    type InboundOpenInfo = <InnerHandler as ConnectionHandler>::InboundOpenInfo;
    type OutboundOpenInfo = <InnerHandler as ConnectionHandler>::OutboundOpenInfo;

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol, Self::InboundOpenInfo> {
        self.inner.listen_protocol()
    }

    fn connection_keep_alive(&self) -> bool {
        self.inner.connection_keep_alive()
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<
        ConnectionHandlerEvent<Self::OutboundProtocol, Self::OutboundOpenInfo, Self::ToBehaviour>,
    > {
        let polled = self.inner.poll(cx);
        match &polled {
            Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest { .. }) => {
                self.stream = Stream::Opening;
                self.waiting.remove(self.id);
            }
            Poll::Pending if self.stream == Stream::None => {
                self.waiting.insert(self.id, cx.waker())
            }
            _ => {}
        }
        polled
    }

    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<Option<Self::ToBehaviour>> {
        self.inner.poll_close(cx)
    }

    fn on_behaviour_event(&mut self, event: Self::FromBehaviour) {
        self.inner.on_behaviour_event(event);
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<
            '_,
            Self::InboundProtocol,
            Self::OutboundProtocol,
            Self::InboundOpenInfo,
            Self::OutboundOpenInfo,
        >,
    ) {
        match &event {
            ConnectionEvent::FullyNegotiatedOutbound(_) => self.stream = Stream::Open,
            ConnectionEvent::DialUpgradeError(_) => self.stream = Stream::None,
            _ => {}
        }
        self.inner.on_connection_event(event);
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt as _;
    use libp2p::gossipsub::{IdentTopic, MessageAuthenticity};
    use libp2p::swarm::SwarmEvent;
    use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
    use libp2p::{Swarm, SwarmBuilder, noise, tcp, yamux};

    use super::*;

    /// What the scenario needs of either behaviour.
    trait Publisher: NetworkBehaviour<ToSwarm = gossipsub::Event> {
        fn send(&mut self, data: &[u8]);
        fn meshed(&self) -> bool;
    }

    impl Publisher for Inner {
        fn send(&mut self, data: &[u8]) {
            self.publish(IdentTopic::new("t"), data).unwrap();
        }
        fn meshed(&self) -> bool {
            self.all_mesh_peers().count() > 0
        }
    }

    impl Publisher for Gossip {
        fn send(&mut self, data: &[u8]) {
            self.publish(IdentTopic::new("t"), data).unwrap();
        }
        fn meshed(&self) -> bool {
            self.all_mesh_peers().count() > 0
        }
    }

    /// A swarm with gossipsub alone (no ping, nothing else that would
    /// poll a connection), subscribed to one topic.
    fn swarm<B: Publisher>(wrap: fn(Inner) -> B) -> Swarm<B> {
        SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(|key| {
                let config = gossipsub::ConfigBuilder::default()
                    .heartbeat_interval(Duration::from_millis(100))
                    .build()
                    .unwrap();
                let mut g =
                    gossipsub::Behaviour::new(MessageAuthenticity::Signed(key.clone()), config)
                        .unwrap();
                g.subscribe(&IdentTopic::new("t")).unwrap();
                wrap(g)
            })
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build()
    }

    /// Drives both swarms until `done` says so or `limit` passes; whether
    /// it did.
    async fn drive<B: Publisher>(
        a: &mut Swarm<B>,
        b: &mut Swarm<B>,
        limit: Duration,
        mut done: impl FnMut(
            Option<&SwarmEvent<gossipsub::Event>>,
            Option<&SwarmEvent<gossipsub::Event>>,
            &Swarm<B>,
        ) -> bool,
    ) -> bool {
        let until = tokio::time::Instant::now() + limit;
        loop {
            let (ea, eb) = tokio::select! {
                e = a.select_next_some() => (Some(e), None),
                e = b.select_next_some() => (None, Some(e)),
                () = tokio::time::sleep_until(until) => return false,
            };
            if done(ea.as_ref(), eb.as_ref(), a) {
                return true;
            }
        }
    }

    fn got(e: Option<&SwarmEvent<gossipsub::Event>>, data: &[u8]) -> bool {
        matches!(e, Some(SwarmEvent::Behaviour(gossipsub::Event::Message { message, .. })) if message.data == data)
    }

    /// Two peers with one connection, a message through it; then a second
    /// connection (as an autonat dial-back opens), the first closed (as
    /// the node closes a duplicate), and a second message. How long the
    /// second message took, if it arrived within 1.5 s.
    async fn second_message_after_close<B: Publisher>(wrap: fn(Inner) -> B) -> Option<Duration> {
        let (mut a, mut b) = (swarm(wrap), swarm(wrap));
        a.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .unwrap();
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = a.select_next_some().await {
                break address;
            }
        };
        let a_id = *a.local_peer_id();
        b.dial(addr.clone()).unwrap();
        let mut first = None;
        assert!(
            drive(&mut a, &mut b, Duration::from_secs(10), |ea, _, a| {
                if let Some(SwarmEvent::ConnectionEstablished { connection_id, .. }) = ea {
                    first = Some(*connection_id);
                }
                a.behaviour().meshed()
            })
            .await,
            "no mesh"
        );
        a.behaviour_mut().send(b"one");
        assert!(
            drive(&mut a, &mut b, Duration::from_secs(10), |_, eb, _| got(
                eb, b"one"
            ))
            .await,
            "the first message did not arrive"
        );
        b.dial(
            DialOpts::peer_id(a_id)
                .addresses(vec![addr])
                .condition(PeerCondition::Always)
                .build(),
        )
        .unwrap();
        assert!(
            drive(&mut a, &mut b, Duration::from_secs(10), |ea, _, _| {
                matches!(ea, Some(SwarmEvent::ConnectionEstablished { num_established, .. }) if num_established.get() == 2)
            })
            .await,
            "no second connection"
        );
        // A few heartbeats with nothing to send.
        drive(&mut a, &mut b, Duration::from_millis(300), |_, _, _| false).await;
        let first = first.expect("the first connection");
        assert!(a.close_connection(first));
        assert!(
            drive(&mut a, &mut b, Duration::from_secs(10), |ea, _, _| {
                matches!(ea, Some(SwarmEvent::ConnectionClosed { connection_id, num_established: 1, .. }) if *connection_id == first)
            })
            .await,
            "the first connection did not close"
        );
        // What gossipsub tells the remaining connection is delivered, and
        // a few more heartbeats pass with nothing to send.
        drive(&mut a, &mut b, Duration::from_millis(300), |_, _, _| false).await;
        let sent = Instant::now();
        a.behaviour_mut().send(b"two");
        drive(&mut a, &mut b, Duration::from_millis(1500), |_, eb, _| {
            got(eb, b"two")
        })
        .await
        .then(|| sent.elapsed())
    }

    #[tokio::test]
    async fn a_message_goes_out_at_once_on_the_remaining_connection() {
        let took = second_message_after_close(Gossip::new).await;
        assert!(
            took.is_some_and(|t| t < Duration::from_millis(500)),
            "the second message took {took:?}"
        );
    }

    /// The behaviour of libp2p-gossipsub that [`Gossip`] makes up for: if
    /// this fails, gossipsub wakes its handlers itself and this module can
    /// go.
    #[tokio::test]
    async fn plain_gossipsub_leaves_the_message_waiting() {
        let took = second_message_after_close(|g: Inner| g).await;
        assert!(took.is_none(), "the second message took {took:?}");
    }

    #[test]
    fn a_dropped_handler_leaves_the_waiting_list() {
        let waiting = Waiting::default();
        let id = ConnectionId::new_unchecked(7);
        waiting.insert(id, futures::task::noop_waker_ref());
        assert_eq!(waiting.len(), 1);
        waiting.remove(id);
        assert_eq!(waiting.len(), 0);
        waiting.insert(id, futures::task::noop_waker_ref());
        waiting.wake_all();
        assert_eq!(waiting.len(), 0, "a wake-up empties the list");
    }
}
