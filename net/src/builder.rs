//! [`NetBuilder`]: the knobs of a kith swarm, ending in one `spawn` step.

use std::{collections::HashSet, sync::Arc, time::Duration};

use futures::StreamExt;
use libp2p::{
    identify, identity::Keypair, kad, mdns, noise, ping, request_response,
    swarm::behaviour::toggle::Toggle, swarm::SwarmEvent, tcp, Multiaddr, PeerId, StreamProtocol,
    SwarmBuilder,
};
use tokio::sync::{mpsc, Semaphore};

use crate::{
    codec::{ControlCodec, CONTROL_PROTOCOL},
    event::NetEvent,
    handle::{split_peer, NetHandle},
    keep::KeepPeers,
    shard::{read_inbound, SHARD_PROTOCOL},
    task::{Behaviour, Task},
    NetError,
};

/// Kademlia protocol name of kith's private DHT (not the public IPFS DHT).
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/kith/kad/1");

/// Identify protocol version string kith peers announce.
pub const IDENTIFY_VERSION: &str = "/kith/1";

/// Inbound shard streams whose header is being read at once; more are reset.
const MAX_PENDING_INBOUND_SHARDS: usize = 32;

/// Configures and starts a kith swarm: TCP (TLS or noise, yamux) and QUIC
/// transports, identify, ping, Kademlia on `/kith/kad/1`, optional mDNS,
/// `/kith/control/1` and `/kith/shard/1`.
#[derive(Debug)]
pub struct NetBuilder {
    keypair: Keypair,
    listen: Vec<Multiaddr>,
    bootstrap: Vec<Multiaddr>,
    mdns: bool,
    request_timeout: Duration,
    idle_connection_timeout: Duration,
    keep: KeepPeers,
    ping: ping::Config,
    event_capacity: usize,
    command_capacity: usize,
}

impl NetBuilder {
    /// Starts a configuration for the node identity `keypair` (see
    /// [`crate::load_or_create_identity`]). By default it listens nowhere,
    /// has no bootstrap peers and mDNS off.
    pub fn new(keypair: Keypair) -> Self {
        Self {
            keypair,
            listen: Vec::new(),
            bootstrap: Vec::new(),
            mdns: false,
            request_timeout: Duration::from_secs(30),
            idle_connection_timeout: Duration::from_secs(60),
            keep: KeepPeers::none(),
            ping: ping::Config::new(),
            event_capacity: 256,
            command_capacity: 64,
        }
    }

    /// Listens on `addr`, e.g. `/ip4/0.0.0.0/tcp/0` or `/ip4/0.0.0.0/udp/0/quic-v1`.
    pub fn listen_on(mut self, addr: Multiaddr) -> Self {
        self.listen.push(addr);
        self
    }

    /// Adds a DHT bootstrap peer; `addr` must end in `/p2p/<peer id>`.
    pub fn bootstrap_peer(mut self, addr: Multiaddr) -> Self {
        self.bootstrap.push(addr);
        self
    }

    /// Enables mDNS discovery on the local network.
    pub fn mdns(mut self, enabled: bool) -> Self {
        self.mdns = enabled;
        self
    }

    /// How long an outbound control request waits for its answer.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How long a connection with no open streams stays up, unless its
    /// peer is kept ([`NetBuilder::keep_connected`]).
    pub fn idle_connection_timeout(mut self, timeout: Duration) -> Self {
        self.idle_connection_timeout = timeout;
        self
    }

    /// Keeps connections to the peers for which `keep` answers true open
    /// while idle (a node's friends); others close after the idle timeout.
    /// `keep` is asked whenever a connection falls idle and when its idle
    /// timer runs out, on the network task: it must answer at once.
    pub fn keep_connected(
        mut self,
        keep: impl Fn(&PeerId) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.keep = KeepPeers::new(keep);
        self
    }

    /// How often each connection is pinged and how long an answer may
    /// take (15 s and 20 s by default; a peer that does not even accept
    /// the ping's stream fails after libp2p's 10 s upgrade timeout). A
    /// failed ping closes the connection (libp2p reports one after two
    /// failures in a row): it is how a kept connection to a peer that
    /// vanished without closing it (power cut, dropped link) ends.
    pub fn ping(mut self, interval: Duration, timeout: Duration) -> Self {
        self.ping = ping::Config::new()
            .with_interval(interval)
            .with_timeout(timeout);
        self
    }

    /// Capacity of the event channel to the node (at least 1). When it is
    /// full, inbound control requests are answered `Busy` and peer events
    /// are dropped (and logged).
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.event_capacity = capacity.max(1);
        self
    }

    /// Builds the swarm, binds the listen addresses (waiting until each has
    /// reported its address), and spawns the network task on the current
    /// tokio runtime. Returns the handle and the node's event receiver.
    pub async fn spawn(self) -> Result<(NetHandle, mpsc::Receiver<NetEvent>), NetError> {
        let mut bootstrap = Vec::new();
        for addr in &self.bootstrap {
            match split_peer(addr) {
                (bare, Some(peer)) => bootstrap.push((peer, bare)),
                (_, None) => return Err(NetError::AddressWithoutPeerId(addr.clone())),
            }
        }
        let setup = |e: &dyn std::fmt::Display| NetError::Setup {
            reason: e.to_string(),
        };
        let mdns_on = self.mdns;
        let request_timeout = self.request_timeout;
        let (inbound, incoming) = crate::inbound::behaviour(SHARD_PROTOCOL);
        let mut swarm = SwarmBuilder::with_existing_identity(self.keypair)
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                (crate::secure::Config::new, noise::Config::new),
                crate::muxer::Config::default,
            )
            .map_err(|e| setup(&e))?
            .with_quic()
            .with_behaviour(|key| {
                let peer_id = key.public().to_peer_id();
                let mut kad_config = kad::Config::new(KAD_PROTOCOL);
                kad_config.set_query_timeout(Duration::from_secs(30));
                let mut kad = kad::Behaviour::with_config(
                    peer_id,
                    kad::store::MemoryStore::new(peer_id),
                    kad_config,
                );
                // Without an external-address confirmation libp2p would keep
                // kad in client mode; kith peers are few and all serve.
                kad.set_mode(Some(kad::Mode::Server));
                let mdns = if mdns_on {
                    Some(mdns::tokio::Behaviour::new(
                        mdns::Config::default(),
                        peer_id,
                    )?)
                } else {
                    None
                };
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Behaviour {
                    identify: identify::Behaviour::new(
                        identify::Config::new(IDENTIFY_VERSION.to_owned(), key.public())
                            .with_agent_version(format!("kith-net/{}", env!("CARGO_PKG_VERSION"))),
                    ),
                    ping: ping::Behaviour::new(self.ping),
                    kad,
                    mdns: Toggle::from(mdns),
                    control: request_response::Behaviour::with_codec(
                        ControlCodec,
                        [(CONTROL_PROTOCOL, request_response::ProtocolSupport::Full)],
                        request_response::Config::default()
                            .with_request_timeout(request_timeout)
                            .with_max_concurrent_streams(64),
                    ),
                    stream: libp2p_stream::Behaviour::new(),
                    inbound,
                    keep: crate::keep::behaviour(self.keep),
                })
            })
            .map_err(|e| setup(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(self.idle_connection_timeout))
            .build();

        let mut waiting = HashSet::new();
        for addr in &self.listen {
            let id = swarm
                .listen_on(addr.clone())
                .map_err(|e| NetError::Listen {
                    addr: addr.clone(),
                    reason: e.to_string(),
                })?;
            waiting.insert(id);
        }
        let mut listen_addrs = Vec::new();
        let deadline = tokio::time::sleep(Duration::from_secs(10));
        tokio::pin!(deadline);
        while !waiting.is_empty() {
            tokio::select! {
                ev = swarm.select_next_some() => match ev {
                    SwarmEvent::NewListenAddr { listener_id, address } => {
                        waiting.remove(&listener_id);
                        listen_addrs.push(address);
                    }
                    SwarmEvent::ListenerClosed { listener_id, reason, .. } => {
                        waiting.remove(&listener_id);
                        tracing::warn!(?reason, "listener closed during startup");
                    }
                    SwarmEvent::ListenerError { error, .. } => {
                        tracing::warn!(%error, "listener error during startup");
                    }
                    _ => {}
                },
                () = &mut deadline => {
                    return Err(NetError::Setup { reason: "listeners did not report an address within 10 s".to_owned() });
                }
            }
        }

        for (peer, addr) in &bootstrap {
            swarm.add_peer_address(*peer, addr.clone());
            swarm.behaviour_mut().kad.add_address(peer, addr.clone());
        }

        let peer_id = *swarm.local_peer_id();
        let control = swarm.behaviour().stream.new_control();
        let (events_tx, events_rx) = mpsc::channel(self.event_capacity);
        let (commands_tx, commands_rx) = mpsc::channel(self.command_capacity);
        let (responses_tx, responses_rx) = mpsc::channel(self.command_capacity);

        let shard_events = events_tx.clone();
        tokio::spawn(async move {
            let permits = Arc::new(Semaphore::new(MAX_PENDING_INBOUND_SHARDS));
            let mut incoming = incoming;
            while let Some((peer, stream)) = incoming.recv().await {
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    tracing::debug!(%peer, "too many pending inbound shard streams; resetting");
                    continue;
                };
                let events = shard_events.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    match read_inbound(peer, stream).await {
                        Ok(Some(inbound)) => {
                            let _ = events.send(NetEvent::InboundShard(inbound)).await;
                        }
                        Ok(None) => {}
                        Err(error) => tracing::debug!(%peer, %error, "bad inbound shard stream"),
                    }
                });
            }
        });

        let task = Task::new(
            swarm,
            commands_rx,
            events_tx,
            responses_rx,
            responses_tx,
            listen_addrs,
        );
        tokio::spawn(task.run());
        if !bootstrap.is_empty() {
            // Best effort: the DHT fills as connections come up.
            let _ = commands_tx.try_send(crate::handle::Command::Bootstrap {
                reply: tokio::sync::oneshot::channel().0,
            });
        }
        Ok((
            NetHandle {
                peer_id,
                commands: commands_tx,
                streams: control,
            },
            events_rx,
        ))
    }
}
