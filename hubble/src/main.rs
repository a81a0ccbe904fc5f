//! The `hubble` binary: parses the command line, runs the command, and reports any error as
//! one line on stderr with a non-zero exit status.

use clap::{CommandFactory, FromArgMatches};
use hubble_cli::{
    cli::{filter_builder, Cli, Command},
    cmd, Error,
};

async fn run(cli: &Cli, matches: &clap::ArgMatches) -> Result<(), Error> {
    match &cli.command {
        Command::Observe(args) => {
            let sub = matches
                .subcommand_matches("observe")
                .expect("observe matches");
            let filters = filter_builder(sub)?;
            cmd::observe::run(cli, args, &filters).await
        }
        Command::Status => cmd::status::run(cli).await,
        Command::List { what } => cmd::list::run(cli, *what).await,
    }
}

fn main() -> anyhow::Result<()> {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match rt.block_on(run(&cli, &matches)) {
        Ok(()) => Ok(()),
        Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => {
            eprintln!("Error: {}", hubble_cli::error::one_line(&e.to_string()));
            std::process::exit(1);
        }
    }
}
