//! The `signaldesk` binary: sets the allocator, parses the command line, starts logging, runs the
//! command (src/cli/) and maps its outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;

mod cli;

/// Model forward passes allocate and free large tensors on every op; glibc maps and unmaps them
/// each time (zeroing fresh pages), mimalloc reuses them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    cli::init_tracing(cli.verbose, cli.log_format);
    match cli::run(cli) {
        Ok(code) => code,
        // The reader went away (`signaldesk search ... | head -1`): nothing to say, nobody to
        // say it to.
        Err(e) if cli::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", cli::describe(&e));
            ExitCode::from(2)
        }
    }
}
