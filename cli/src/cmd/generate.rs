//! `kith generate`: completions and the man page, from the clap definitions.

use std::io::Write;

use clap::CommandFactory;

use crate::args::{Cli, GenerateCommand};
use crate::error::CliError;
use crate::exit;

pub(crate) fn run(command: &GenerateCommand) -> Result<u8, CliError> {
    let mut cli = Cli::command();
    let mut out = std::io::stdout().lock();
    match command {
        GenerateCommand::Completions { shell } => {
            clap_complete::generate(*shell, &mut cli, "kith", &mut out);
        }
        GenerateCommand::Man => {
            clap_mangen::Man::new(cli).render(&mut out)?;
        }
    }
    out.flush()?;
    Ok(exit::OK)
}
