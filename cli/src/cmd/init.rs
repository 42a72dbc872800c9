//! `kith init`.

use kith_engine::keys::format_paper_key;
use kith_engine::{InitOptions, MasterSecret, Repository};

use crate::args::InitArgs;
use crate::context::{kdf, Context};
use crate::error::CliError;
use crate::{exit, output};

/// Creates the repository and tells the user its master key once.
pub(crate) async fn create(
    ctx: &Context,
    kdf_args: &crate::args::KdfArgs,
    pack_size_mib: u32,
) -> Result<(Repository, MasterSecret), CliError> {
    let password = ctx.init_password()?;
    let pack_size = pack_size_mib
        .checked_mul(1024 * 1024)
        .ok_or_else(|| CliError::Usage("pack size too large".into()))?;
    let options = InitOptions::default()
        .kdf(kdf(kdf_args))
        .pack_size(pack_size);
    if ctx.on_peers()? {
        return crate::peers::init(
            ctx.global.node.as_ref(),
            &password,
            &options,
            ctx.cache_dir(),
        )
        .await;
    }
    let (repo, master) =
        Repository::init(ctx.backend().await?, &password, &options, ctx.cache_dir()).await?;
    Ok((repo, master))
}

pub(crate) fn announce(ctx: &Context, repo: &Repository, master: &MasterSecret) {
    if ctx.global.quiet {
        return;
    }
    eprintln!(
        "created repository {} at {}",
        &repo.config().id_hex()[..8],
        ctx.location()
    );
    eprintln!();
    eprintln!("Master key (paper key). Write it down and keep it somewhere safe: with it alone,");
    eprintln!("everything can be restored even if every password is lost. It is shown only now;");
    eprintln!("`kith key export-master` prints it again after asking for a password.");
    eprintln!();
    eprintln!("    {}", format_paper_key(master));
    eprintln!();
}

pub(crate) async fn run(ctx: &Context, args: &InitArgs) -> Result<u8, CliError> {
    let (repo, master) = create(ctx, &args.kdf, args.pack_size).await?;
    if ctx.global.json {
        output::json(&serde_json::json!({
            "id": repo.config().id_hex(),
            "location": ctx.location(),
            "master_key": format_paper_key(&master),
        }))?;
    } else {
        announce(ctx, &repo, &master);
    }
    Ok(exit::OK)
}
