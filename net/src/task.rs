//! The network task: owns the Swarm, takes [`Command`]s from handles,
//! answers inbound control requests through the response queue, and turns
//! swarm events into [`NetEvent`]s for the node.
//!
//! The task never awaits the node: events go out with `try_send`, so a slow
//! node cannot stall pings and keep-alives. When the event channel is full an
//! inbound control request is answered `Busy` and other events are dropped.

use std::collections::HashMap;

use futures::StreamExt;
use libp2p::{
    identify, kad, mdns, ping,
    request_response::{self, OutboundRequestId, ResponseChannel},
    swarm::{
        behaviour::toggle::Toggle,
        dial_opts::{DialOpts, PeerCondition},
        ConnectionId, NetworkBehaviour, SwarmEvent,
    },
    Multiaddr, PeerId, Swarm,
};
use tokio::sync::{mpsc, oneshot};

use crate::{
    builder::KAD_PROTOCOL,
    codec::{ControlCodec, WireRequest},
    event::{ControlResponder, DiscoverySource, NetEvent, ResponseQueue},
    handle::{split_peer, Command},
    message::{ControlResponse, ErrorCode, ErrorReply},
    NetError,
};

/// Addresses without their `/p2p/<peer id>` suffix, deduplicated, in order.
fn bare_addrs<'a>(addrs: impl IntoIterator<Item = &'a Multiaddr>) -> Vec<Multiaddr> {
    let mut out: Vec<Multiaddr> = Vec::new();
    for addr in addrs {
        let (bare, _) = split_peer(addr);
        if !out.contains(&bare) {
            out.push(bare);
        }
    }
    out
}

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) kad: kad::Behaviour<kad::store::MemoryStore>,
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
    pub(crate) control: request_response::Behaviour<ControlCodec>,
    pub(crate) stream: libp2p_stream::Behaviour,
    pub(crate) inbound: crate::per_peer::PerPeer<crate::inbound::Handler>,
    pub(crate) keep: crate::per_peer::PerPeer<crate::keep::Handler>,
}

type Reply<T> = oneshot::Sender<Result<T, NetError>>;

pub(crate) struct Task {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<NetEvent>,
    responses: mpsc::Receiver<(ResponseChannel<ControlResponse>, ControlResponse)>,
    response_queue: ResponseQueue,
    listen_addrs: Vec<Multiaddr>,
    dials: HashMap<ConnectionId, (Multiaddr, Reply<PeerId>)>,
    requests: HashMap<OutboundRequestId, (PeerId, Reply<ControlResponse>)>,
    finds: HashMap<kad::QueryId, (PeerId, Reply<Vec<Multiaddr>>)>,
    bootstraps: HashMap<kad::QueryId, Reply<()>>,
    dropped_events: u64,
}

impl Task {
    pub(crate) fn new(
        swarm: Swarm<Behaviour>,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<NetEvent>,
        responses: mpsc::Receiver<(ResponseChannel<ControlResponse>, ControlResponse)>,
        response_queue: ResponseQueue,
        listen_addrs: Vec<Multiaddr>,
    ) -> Self {
        Self {
            swarm,
            commands,
            events,
            responses,
            response_queue,
            listen_addrs,
            dials: HashMap::new(),
            requests: HashMap::new(),
            finds: HashMap::new(),
            bootstraps: HashMap::new(),
            dropped_events: 0,
        }
    }

    pub(crate) async fn run(mut self) {
        loop {
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    None | Some(Command::Shutdown) => break,
                    Some(cmd) => self.on_command(cmd),
                },
                Some((channel, response)) = self.responses.recv() => {
                    if self.swarm.behaviour_mut().control.send_response(channel, response).is_err() {
                        tracing::debug!("control response not sent: the requester is gone");
                    }
                }
                ev = self.swarm.select_next_some() => self.on_swarm_event(ev),
            }
        }
        tracing::debug!(peer = %self.swarm.local_peer_id(), "network task stopped");
    }

    fn emit(&mut self, event: NetEvent) {
        match self.events.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(NetEvent::InboundRequest {
                peer,
                responder,
                ..
            })) => {
                tracing::debug!(%peer, "event queue full; answering Busy");
                let busy = ControlResponse::Error(ErrorReply::new(
                    ErrorCode::Busy,
                    "the node is overloaded; retry later",
                ));
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .control
                    .send_response(responder.channel, busy);
            }
            Err(mpsc::error::TrySendError::Full(event)) => {
                self.dropped_events += 1;
                tracing::warn!(
                    dropped = self.dropped_events,
                    ?event,
                    "event queue full; event dropped"
                );
            }
            Err(mpsc::error::TrySendError::Closed(NetEvent::InboundRequest {
                responder, ..
            })) => {
                let gone = ControlResponse::Error(ErrorReply::new(
                    ErrorCode::Internal,
                    "the node is not accepting requests",
                ));
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .control
                    .send_response(responder.channel, gone);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Dial { peer, addr, reply } => self.dial(peer, addr, reply),
            Command::AddAddress { peer, addr } => {
                self.swarm.add_peer_address(peer, addr.clone());
                self.swarm.behaviour_mut().kad.add_address(&peer, addr);
            }
            Command::Request {
                peer,
                request,
                reply,
            } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .control
                    .send_request(&peer, WireRequest::Decoded(request));
                self.requests.insert(id, (peer, reply));
            }
            Command::FindPeer { peer, reply } => {
                let id = self.swarm.behaviour_mut().kad.get_closest_peers(peer);
                self.finds.insert(id, (peer, reply));
            }
            Command::Bootstrap { reply } => match self.swarm.behaviour_mut().kad.bootstrap() {
                Ok(id) => {
                    self.bootstraps.insert(id, reply);
                }
                Err(kad::NoKnownPeers()) => {
                    let _ = reply.send(Err(NetError::NoKnownPeers));
                }
            },
            Command::ConnectedPeers { reply } => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
            Command::ListenAddrs { reply } => {
                let _ = reply.send(self.listen_addrs.clone());
            }
            Command::Shutdown => {}
        }
    }

    fn dial(&mut self, peer: Option<PeerId>, addr: Multiaddr, reply: Reply<PeerId>) {
        let opts = match peer {
            Some(peer) if self.swarm.is_connected(&peer) => {
                let _ = reply.send(Ok(peer));
                return;
            }
            Some(peer) => DialOpts::peer_id(peer)
                .addresses(vec![addr.clone()])
                .condition(PeerCondition::Always)
                .build(),
            None => DialOpts::unknown_peer_id().address(addr.clone()).build(),
        };
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.dials.insert(id, (addr, reply));
            }
            Err(e) => {
                let _ = reply.send(Err(NetError::Dial {
                    addr,
                    reason: e.to_string(),
                }));
            }
        }
    }

    fn on_swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        match ev {
            SwarmEvent::Behaviour(ev) => self.on_behaviour_event(ev),
            SwarmEvent::NewListenAddr { address, .. } => {
                if !self.listen_addrs.contains(&address) {
                    self.listen_addrs.push(address.clone());
                }
                self.emit(NetEvent::Listening { addr: address });
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| a != &address);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                if let Some((_, reply)) = self.dials.remove(&connection_id) {
                    let _ = reply.send(Ok(peer_id));
                }
                if num_established.get() == 1 {
                    self.emit(NetEvent::PeerConnected {
                        peer: peer_id,
                        addr: endpoint.get_remote_address().clone(),
                    });
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => self.emit(NetEvent::PeerDisconnected { peer: peer_id }),
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                error,
                ..
            } => {
                if let Some((addr, reply)) = self.dials.remove(&connection_id) {
                    let _ = reply.send(Err(NetError::Dial {
                        addr,
                        reason: error.to_string(),
                    }));
                }
            }
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, ev: BehaviourEvent) {
        match ev {
            BehaviourEvent::Control(ev) => self.on_control(ev),
            BehaviourEvent::Kad(ev) => self.on_kad(ev),
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                if info.protocols.contains(&KAD_PROTOCOL) {
                    for addr in &info.listen_addrs {
                        self.swarm
                            .behaviour_mut()
                            .kad
                            .add_address(&peer_id, addr.clone());
                    }
                }
                self.emit(NetEvent::PeerIdentified {
                    peer: peer_id,
                    listen_addrs: info.listen_addrs,
                });
            }
            // libp2p leaves the health check to its user. Kept connections
            // (friends) never close on their own, so one to a peer that
            // vanished without closing it would stay up. A peer that does
            // not speak ping is not a failure.
            BehaviourEvent::Ping(ping::Event {
                peer,
                connection,
                result: Err(failure),
            }) if !matches!(failure, ping::Failure::Unsupported) => {
                tracing::debug!(%peer, %failure, "ping failed; closing the connection");
                self.swarm.close_connection(connection);
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                let mut by_peer: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
                for (peer, addr) in found {
                    self.swarm.add_peer_address(peer, addr.clone());
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer, addr.clone());
                    by_peer.entry(peer).or_default().push(addr);
                }
                for (peer, addrs) in by_peer {
                    self.emit(NetEvent::PeerDiscovered {
                        peer,
                        addrs,
                        source: DiscoverySource::Mdns,
                    });
                }
            }
            _ => {}
        }
    }

    fn on_control(&mut self, ev: request_response::Event<WireRequest, ControlResponse>) {
        use request_response::{Event, Message, OutboundFailure};
        match ev {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => match request {
                WireRequest::Decoded(request) => self.emit(NetEvent::InboundRequest {
                    peer,
                    request,
                    responder: ControlResponder {
                        channel,
                        queue: self.response_queue.clone(),
                    },
                }),
                WireRequest::Undecodable(reply) => {
                    tracing::debug!(%peer, %reply, "refusing undecodable control request");
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .control
                        .send_response(channel, ControlResponse::Error(reply));
                }
            },
            Event::Message {
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some((peer, reply)) = self.requests.remove(&request_id) {
                    let _ = reply.send(match response {
                        ControlResponse::Error(reply) => Err(NetError::Refused { peer, reply }),
                        other => Ok(other),
                    });
                }
            }
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some((_, reply)) = self.requests.remove(&request_id) {
                    let _ = reply.send(Err(match error {
                        OutboundFailure::UnsupportedProtocols => NetError::Unsupported {
                            peer,
                            protocol: "/kith/control/1",
                        },
                        other => NetError::Request {
                            peer,
                            reason: other.to_string(),
                        },
                    }));
                }
            }
            Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound control request failed");
            }
            Event::ResponseSent { .. } => {}
        }
    }

    fn known_addresses(&mut self, peer: PeerId) -> Vec<Multiaddr> {
        let Some(bucket) = self.swarm.behaviour_mut().kad.kbucket(peer) else {
            return Vec::new();
        };
        let found = bucket
            .iter()
            .find(|entry| *entry.node.key.preimage() == peer)
            .map(|entry| bare_addrs(entry.node.value.iter()))
            .unwrap_or_default();
        found
    }

    fn on_kad(&mut self, ev: kad::Event) {
        match ev {
            kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            } => match result {
                kad::QueryResult::GetClosestPeers(result) => {
                    let Some((target, _)) = self.finds.get(&id) else {
                        return;
                    };
                    let target = *target;
                    let found = match &result {
                        Ok(ok) => ok.peers.iter().find(|p| p.peer_id == target),
                        Err(kad::GetClosestPeersError::Timeout { peers, .. }) => {
                            peers.iter().find(|p| p.peer_id == target)
                        }
                    }
                    .filter(|p| !p.addrs.is_empty())
                    .map(|p| bare_addrs(&p.addrs));
                    if let Some(addrs) = found {
                        if let Some((_, reply)) = self.finds.remove(&id) {
                            let _ = reply.send(Ok(addrs));
                        }
                        if let Some(mut query) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                            query.finish();
                        }
                    } else if step.last {
                        // The lookup may end without listing the target's
                        // addresses while our routing table learnt them.
                        let known = self.known_addresses(target);
                        if let Some((_, reply)) = self.finds.remove(&id) {
                            let _ = reply.send(if known.is_empty() {
                                Err(NetError::PeerNotFound(target))
                            } else {
                                Ok(known)
                            });
                        }
                    }
                }
                kad::QueryResult::Bootstrap(result) if result.is_err() || step.last => {
                    if let Some(reply) = self.bootstraps.remove(&id) {
                        let _ = reply.send(match result {
                            Ok(_) => Ok(()),
                            Err(e) => Err(NetError::Request {
                                peer: *self.swarm.local_peer_id(),
                                reason: format!("DHT bootstrap: {e}"),
                            }),
                        });
                    }
                }
                _ => {}
            },
            kad::Event::RoutingUpdated {
                peer,
                addresses,
                is_new_peer: true,
                ..
            } => self.emit(NetEvent::PeerDiscovered {
                peer,
                addrs: addresses.into_vec(),
                source: DiscoverySource::Dht,
            }),
            _ => {}
        }
    }
}
