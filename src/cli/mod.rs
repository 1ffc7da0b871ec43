//! Command line: one file per subcommand; this file only parses and dispatches.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod daemon;
mod demo;
mod eval;
mod index;
mod model;
mod query;
mod synth;
mod train;

/// Find things in your photos by what you say, with a pixel mask of where they are.
#[derive(Debug, Parser)]
#[command(name = "photoseg", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a synthetic photo library, index it and run a few queries against the known truth.
    Demo(demo::DemoArgs),
    /// Index photo folders (features cached in SQLite); skips what is already current.
    Index(index::IndexArgs),
    /// Find the photos of every album that show EXPRESSION, with masks.
    Query(query::QueryArgs),
    /// Serve queries on D-Bus and keep the cache current while folders change.
    Daemon(daemon::DaemonArgs),
    /// Train GRSer on a data set by a recipe (default: the built-in model's).
    Train(train::TrainArgs),
    /// Measure a model on a data set (mIoU, positive / negative accuracy, Co-SOD metrics).
    Eval(eval::EvalArgs),
    /// Inspect, make, fetch, install and choose GRSer models.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// Write a synthetic data set: albums of generated scenes, referring expressions, exact masks.
    Synth(synth::SynthArgs),
}

/// Entry point of the binary: parse, run, print `photoseg: {err:#}` on failure.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("photoseg: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Writes a command's output to stdout; a closed pipe (`photoseg query ... | head`) is not an error.
pub(crate) fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(anyhow::anyhow!("cannot write the output: {e}")),
        _ => Ok(()),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Index(args) => index::run(args),
        Command::Query(args) => query::run(args),
        Command::Daemon(args) => daemon::run(args),
        Command::Train(args) => train::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Model(cmd) => model::run(cmd),
        Command::Synth(args) => synth::run(args),
    }
}
