//! Thin shell: parse, set up logging and the runtime, call `jsm_orgs::run`,
//! exit with its code.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use jsm_orgs::cli::Cli;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { jsm_orgs::Exit::Usage } else { jsm_orgs::Exit::Ok }.code();
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let tty = std::io::stderr().is_terminal();
    jsm_orgs::init_logging(if cli.quiet { 0 } else { 1 + cli.verbose }, tty);
    // The client side is I/O-bound and paced: one thread does it with far
    // fewer cross-thread wake-ups (CPU per request) than a thread pool. The
    // sandbox serves many connections and gets the pool.
    let mut builder = match cli.command {
        jsm_orgs::cli::Command::Sandbox(_) => tokio::runtime::Builder::new_multi_thread(),
        _ => tokio::runtime::Builder::new_current_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(jsm_orgs::Exit::Aborted.code());
        }
    };
    let env = jsm_orgs::Env::from_process();
    ExitCode::from(runtime.block_on(jsm_orgs::run(cli, &env, tty)))
}
