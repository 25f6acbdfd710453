//! `jsm-orgs completions SHELL`: a shell completion script (clap_complete)
//! or, for `man`, the roff man page (clap_mangen), on stdout. Both are
//! generated from the one clap definition in `cli`, so they never drift from
//! the real flags.

use clap::CommandFactory;

use crate::cli::Cli;
use crate::error::{Error, Exit};
use crate::settings::CompletionTarget;

pub fn run(target: CompletionTarget) -> Result<Exit, Error> {
    let mut cmd = Cli::command();
    let mut out = std::io::stdout().lock();
    match target {
        CompletionTarget::Shell(shell) => clap_complete::generate(shell, &mut cmd, "jsm-orgs", &mut out),
        CompletionTarget::Man => clap_mangen::Man::new(cmd)
            .render(&mut out)
            .map_err(|e| Error::Io(format!("cannot write the man page: {e}")))?,
    }
    Ok(Exit::Ok)
}
