//! The `ferry` command. `serve` runs the server; the upload and download clients follow.

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use ferry_server::config::ServeArgs;

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Resumable large-file transfers: server and clients"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (filesystem + SQLite by default; nothing else to install).
    Serve(ServeArgs),
}

fn main() -> anyhow::Result<()> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    match cli.command {
        Command::Serve(args) => {
            let sub = matches
                .subcommand_matches("serve")
                .expect("clap matched the serve subcommand");
            let args = args.with_config_file(sub)?;
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(ferry_server::serve(args))
        }
    }
}
