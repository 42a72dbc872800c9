//! `kith key`.

use kith_engine::keys::format_paper_key;
use kith_engine::{Access, Credentials, Error};

use crate::args::KeyCommand;
use crate::context::{kdf, Context};
use crate::error::CliError;
use crate::{exit, output};

pub(crate) async fn run(ctx: &Context, command: &KeyCommand) -> Result<u8, CliError> {
    let (mut repo, credentials) = ctx.open_with_credentials().await?;
    match command {
        KeyCommand::Add {
            write_only,
            new_password_file,
            kdf: k,
        } => {
            let password = ctx.new_password(new_password_file.as_ref())?;
            let access = if *write_only {
                Access::WriteOnly
            } else {
                Access::Full
            };
            let id = repo.add_key(&password, access, kdf(k)).await?;
            if ctx.global.json {
                output::json(&serde_json::json!({"id": id.to_hex(), "write_only": write_only}))?;
            } else if !ctx.global.quiet {
                println!(
                    "added {} key {}",
                    if *write_only { "write-only" } else { "full" },
                    id.short()
                );
            }
        }
        KeyCommand::List => {
            let keys = repo.keys().await?;
            if ctx.global.json {
                let list: Vec<_> = keys
                    .iter()
                    .map(|k| match &k.info {
                        Ok(i) => serde_json::json!({
                            "id": k.id.to_hex(),
                            "current": k.current,
                            "access": match i.access { Access::Full => "full", Access::WriteOnly => "write-only" },
                            "host": i.host,
                            "username": i.user,
                            "created": output::rfc3339(i.created),
                        }),
                        Err(e) => serde_json::json!({"id": k.id.to_hex(), "current": k.current, "error": e}),
                    })
                    .collect();
                output::json(&list)?;
            } else {
                println!(
                    " {:<10} {:<11} {:<12} {:<16} created",
                    "id", "access", "user", "host"
                );
                for k in &keys {
                    let mark = if k.current { "*" } else { " " };
                    match &k.info {
                        Ok(i) => println!(
                            "{mark}{:<10} {:<11} {:<12} {:<16} {}",
                            k.id.short(),
                            match i.access {
                                Access::Full => "full",
                                Access::WriteOnly => "write-only",
                            },
                            i.user,
                            i.host,
                            output::local_time(i.created)
                        ),
                        Err(e) => println!("{mark}{:<10} damaged: {e}", k.id.short()),
                    }
                }
            }
        }
        KeyCommand::Remove { id } => {
            let id = repo.find_key(id).await?;
            repo.remove_key(&id).await?;
            if !ctx.global.quiet {
                println!("removed key {}", id.short());
            }
        }
        KeyCommand::Passwd {
            new_password_file,
            kdf: k,
        } => {
            let password = ctx.new_password(new_password_file.as_ref())?;
            let id = repo.change_password(&password, kdf(k)).await?;
            if !ctx.global.quiet {
                println!("password changed; the key is now {}", id.short());
            }
        }
        KeyCommand::ExportMaster => {
            let master = repo.master().ok_or(Error::WriteOnly {
                operation: "exporting the master key",
            })?;
            println!("{}", format_paper_key(master));
        }
        KeyCommand::RotateMaster {
            new_password_file,
            kdf: k,
        } => {
            let password = match (new_password_file, &credentials) {
                (None, Credentials::Password(p)) => p.clone(),
                (file, _) => ctx.new_password(file.as_ref())?,
            };
            if password.is_empty() {
                return Err(CliError::Usage("an empty password is not allowed".into()));
            }
            let (master, key) = repo.rotate_master(&password, kdf(k)).await?;
            let paper = format_paper_key(&master);
            if ctx.global.json {
                output::json(&serde_json::json!({"master_key": paper, "key": key.to_hex()}))?;
            } else {
                eprintln!("The master key was replaced. Every other key file was removed; add them again with `kith key add`.");
                eprintln!("The password of key {} opens the repository. New master key (paper key), shown once:", key.short());
                eprintln!();
                eprintln!("    {paper}");
                eprintln!();
                eprintln!("Keep it somewhere safe: the old one no longer opens the repository.");
            }
        }
    }
    Ok(exit::OK)
}
