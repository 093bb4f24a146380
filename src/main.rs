//! The `eshop` binary: parses the command line and runs the subcommand
//! (see the `eshop` library).

use clap::Parser;
use eshop::Stop;
use eshop::cli::{Cli, init_logging, logs_to_stderr};

/// A request allocates and frees many small objects; mimalloc handles that
/// pattern with less CPU than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _tracing = init_logging(cli.log_format, logs_to_stderr(&cli.command))?;
    eshop::run(cli.command, Stop::on_signal()).await
}
