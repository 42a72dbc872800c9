//! `kith node init`, `kith node run`, `kith node info`.

use kith_node::{control::client::NodeClient, size::parse_size, NodeConfig, NodeDir, NodeError};

use crate::args::{NodeCommand, NodeDirArgs, NodeInitArgs};
use crate::context::Context;
use crate::error::CliError;
use crate::exit;

pub(crate) async fn run(ctx: &Context, command: &NodeCommand) -> Result<u8, CliError> {
    match command {
        NodeCommand::Init(a) => init(ctx, a),
        NodeCommand::Run(a) => {
            kith_node::daemon::run(&a.dir, shutdown_signal()).await?;
            Ok(exit::OK)
        }
        NodeCommand::Info(a) => info(ctx, a).await,
    }
}

fn parse_addrs(list: &[String], flag: &str) -> Result<Vec<kith_node::Multiaddr>, CliError> {
    list.iter()
        .map(|s| {
            s.parse()
                .map_err(|e| CliError::Usage(format!("{flag} {s}: not a multiaddr: {e}")))
        })
        .collect()
}

fn init(ctx: &Context, a: &NodeInitArgs) -> Result<u8, CliError> {
    let mut config = NodeConfig::default();
    if !a.listen.is_empty() {
        config.listen = parse_addrs(&a.listen, "--listen")?;
    }
    config.bootstrap = parse_addrs(&a.bootstrap, "--bootstrap")?;
    if let Some(q) = &a.quota {
        config.quota = parse_size(q).map_err(|e| CliError::Usage(format!("--quota: {e}")))?;
    }
    config.mdns = a.mdns;
    config.always_on = a.always_on;
    let dir = NodeDir::new(&a.dir);
    let peer = dir.init(&config)?;
    if ctx.global.json {
        crate::output::json(&serde_json::json!({
            "peer_id": peer.to_string(),
            "dir": a.dir.display().to_string(),
        }))?;
    } else {
        println!("created node {peer} in {}", a.dir.display());
        println!("start it with: kith node run --dir {}", a.dir.display());
    }
    Ok(exit::OK)
}

async fn info(ctx: &Context, a: &NodeDirArgs) -> Result<u8, CliError> {
    let (peer, addrs, running) = match NodeClient::connect(&a.dir).await {
        Ok(mut client) => {
            let (peer, addrs) = client.info().await?;
            (peer, addrs, true)
        }
        Err(NodeError::NotRunning { .. }) => {
            let dir = NodeDir::new(&a.dir);
            let config = dir.load_config()?;
            let key = dir.load_identity()?;
            (key.public().to_peer_id(), config.listen, false)
        }
        Err(e) => return Err(e.into()),
    };
    if ctx.global.json {
        crate::output::json(&serde_json::json!({
            "peer_id": peer.to_string(),
            "addresses": addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "running": running,
        }))?;
    } else {
        println!("peer id: {peer}");
        println!(
            "{}",
            if running {
                "running; listening on:"
            } else {
                "not running; configured to listen on:"
            }
        );
        for addr in &addrs {
            println!("  {addr}");
        }
    }
    Ok(exit::OK)
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            // Without a SIGTERM handler, wait for SIGINT alone.
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
