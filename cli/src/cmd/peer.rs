//! `kith peer invite`, `kith peer add`, `kith peer list`.

use std::path::PathBuf;

use kith_node::control::{
    client::NodeClient,
    protocol::{addrs_from, peer_from},
};

use crate::args::PeerCommand;
use crate::context::Context;
use crate::error::CliError;
use crate::{exit, output};

fn node_dir(ctx: &Context) -> Result<PathBuf, CliError> {
    ctx.global.node.clone().ok_or_else(|| {
        CliError::Usage("no node folder: pass --node DIR or set KITH_NODE_DIR".into())
    })
}

pub(crate) async fn run(ctx: &Context, command: &PeerCommand) -> Result<u8, CliError> {
    let mut client = NodeClient::connect(&node_dir(ctx)?).await?;
    match command {
        PeerCommand::Invite => {
            let code = client.invite().await?;
            println!("{code}");
        }
        PeerCommand::Add(a) => {
            let peer = client.add_peer(&a.code).await?;
            if ctx.global.json {
                output::json(&serde_json::json!({ "peer_id": peer.to_string() }))?;
            } else {
                println!("{peer} is now a friend");
            }
        }
        PeerCommand::List => list(ctx, &mut client).await?,
    }
    Ok(exit::OK)
}

async fn list(ctx: &Context, client: &mut NodeClient) -> Result<(), CliError> {
    let peers = client.peers().await?;
    let rows: Vec<serde_json::Value> = peers
        .iter()
        .map(|p| {
            let peer = peer_from(&p.peer).map(|p| p.to_string()).unwrap_or_default();
            let state = match (p.connected, p.friend) {
                (true, _) => "connected",
                (false, true) => "unreachable",
                (false, false) => "discovered",
            };
            serde_json::json!({
                "peer_id": peer,
                "friend": p.friend,
                "state": state,
                "connection": p.connected.then_some("direct"),
                "reason": p.reason,
                "addresses": addrs_from(&p.addrs).iter().map(ToString::to_string).collect::<Vec<_>>(),
                "bytes_held_for_it": p.held_for_it,
                "bytes_held_by_it": p.held_by_it,
                "discovered_by": p.discovered,
            })
        })
        .collect();
    if ctx.global.json {
        return output::json(&rows);
    }
    if rows.is_empty() {
        println!("no peers yet: `kith peer invite` here, `kith peer add CODE` there");
        return Ok(());
    }
    for (row, p) in rows.iter().zip(&peers) {
        let state = match (p.connected, &p.reason, &p.discovered) {
            (true, None, _) => "connected (direct)".to_owned(),
            (true, Some(r), _) => format!("connected (direct), but {r}"),
            (false, Some(r), _) => format!("unreachable: {r}"),
            (false, None, Some(how)) => format!("discovered ({how}), not a friend"),
            (false, None, None) => "unreachable".to_owned(),
        };
        println!("{}", row["peer_id"].as_str().unwrap_or_default());
        println!("  state:        {state}");
        println!("  held for it:  {}", output::bytes(p.held_for_it));
        println!(
            "  held by it:   {}",
            p.held_by_it.map_or("unknown".to_owned(), output::bytes)
        );
    }
    Ok(())
}
