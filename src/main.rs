//! `puente`: the facade binary. `puente serve` runs the server; the other subcommands are
//! clients of a running server (through the `puente-client` crate).

#![warn(clippy::too_many_lines)]
#![cfg_attr(test, allow(clippy::too_many_lines))]

/// mimalloc: +17–20% durable transfers/s over the system allocator (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod allocator;
mod cli;
mod config;
mod data_dir;
mod disk;
mod logging;
mod workload;

use clap::{CommandFactory, FromArgMatches};

fn main() -> std::process::ExitCode {
    allocator::set_options();
    let matches = cli::Args::command().get_matches();
    let args = match cli::Args::from_arg_matches(&matches) {
        Ok(args) => args.with_sources(&matches),
        Err(error) => error.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
