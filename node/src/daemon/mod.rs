//! `kith node run`: the daemon. It owns the swarm, the hold, the peer book
//! and the control socket, and runs until its shutdown future completes.
//!
//! Tasks: one reads network events and answers inbound requests and shard
//! streams ([`inbound`]); one accepts control-socket connections, each
//! served by a task of its own ([`local`]); one redials unreachable
//! friends every `redial_secs`.

mod auth;
mod inbound;
mod local;

use std::{future::Future, path::Path, sync::Arc, time::Duration};

use kith_net::{NetBuilder, NetHandle};

use crate::{
    config::NodeConfig, friends::Friends, hold::Hold, layout::set_mode, peers::PeerBook,
    state::State, NodeDir, NodeError,
};

/// Environment variable that switches on a fault for tests.
pub const FAULT_ENV: &str = "KITH_NODE_FAULT";

/// Faults a test can ask a node for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Faults {
    /// Flip bytes in every shard served.
    pub(crate) corrupt_shards: bool,
}

impl Faults {
    fn from_env() -> Self {
        let value = std::env::var(FAULT_ENV).unwrap_or_default();
        let corrupt_shards = value.split(',').any(|f| f.trim() == "corrupt-shards");
        if corrupt_shards {
            tracing::warn!("fault mode: corrupting every shard served");
        }
        Self { corrupt_shards }
    }
}

/// What every task of the daemon shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: NodeConfig,
    pub(crate) net: NetHandle,
    pub(crate) hold: Arc<Hold>,
    pub(crate) book: Arc<PeerBook>,
    pub(crate) auth: auth::Auth,
    pub(crate) faults: Faults,
}

/// Runs the node in `dir` until `shutdown` completes, then stops cleanly
/// (the control socket is removed, the database closed).
pub async fn run(dir: &Path, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
    let dir = NodeDir::new(dir);
    let config = dir.load_config()?;
    let key = dir.load_identity()?;
    let socket = dir.socket();
    if tokio::net::UnixStream::connect(&socket).await.is_ok() {
        return Err(NodeError::AlreadyRunning {
            dir: dir.root().to_path_buf(),
        });
    }
    let state = Arc::new(State::open(&dir.database())?);
    let hold = Arc::new(Hold::open(Arc::clone(&state), dir.hold(), config.quota)?);
    let book = Arc::new(PeerBook::new(Friends::new(Arc::clone(&state)))?);

    // Friends' connections stay up while idle: the peers a backup stores
    // on must be connected when it starts, not after the next redial.
    let friends = Arc::clone(&book);
    let mut builder = NetBuilder::new(key)
        .mdns(config.mdns)
        .idle_connection_timeout(Duration::from_secs(config.idle_secs))
        .keep_connected(move |peer| friends.is_friend(peer));
    for addr in &config.listen {
        builder = builder.listen_on(addr.clone());
    }
    for addr in &config.bootstrap {
        builder = builder.bootstrap_peer(addr.clone());
    }
    let (net, events) = builder.spawn().await?;
    let addrs = net.listen_addrs().await?;
    tracing::info!(peer = %net.local_peer_id(), ?addrs, held = hold.total(), "node running");

    // A socket left by a killed daemon does not answer (checked above).
    let _ = std::fs::remove_file(&socket);
    let listener =
        tokio::net::UnixListener::bind(&socket).map_err(|e| NodeError::io(&socket, e))?;
    set_mode(&socket, 0o600)?;

    let shared = Arc::new(Shared {
        config,
        net: net.clone(),
        hold,
        book,
        auth: auth::Auth::default(),
        faults: Faults::from_env(),
    });
    let events_task = tokio::spawn(inbound::run(Arc::clone(&shared), events));
    let local_task = tokio::spawn(local::serve(Arc::clone(&shared), listener));
    let redial_task = tokio::spawn(redial(Arc::clone(&shared)));

    shutdown.await;
    tracing::info!("shutting down");
    local_task.abort();
    redial_task.abort();
    net.shutdown().await;
    events_task.abort();
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// Reconnects to friends that are not connected, at their recorded addresses.
async fn redial(shared: Arc<Shared>) {
    let every = Duration::from_secs(shared.config.redial_secs);
    loop {
        let connected = shared.net.connected_peers().await.unwrap_or_default();
        for (peer, _) in shared.book.friend_list() {
            if connected.contains(&peer) {
                continue;
            }
            if let Err(reason) = shared.book.connect(&shared.net, peer).await {
                tracing::debug!(%peer, reason, "friend unreachable");
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// Creates an invite code for this node and records its secret.
pub(crate) async fn make_invite(shared: &Shared) -> Result<String, NodeError> {
    let addrs: Vec<_> = shared
        .net
        .listen_addrs()
        .await?
        .into_iter()
        .filter(crate::peers::dialable)
        .collect();
    let code = crate::invite::InviteCode::new(shared.net.local_peer_id(), addrs);
    shared
        .book
        .friends()
        .create_invite(&code.secret, shared.config.invite_hours)?;
    Ok(code.encode())
}
