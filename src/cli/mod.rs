//! Command line: one file per subcommand; this file only parses and dispatches.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod synth;

/// Find things in your photos by what you say, with a pixel mask of where they are.
#[derive(Debug, Parser)]
#[command(name = "photoseg", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Not built yet: see issue "The photo library" (index, query, demo).
    Demo,
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

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo => anyhow::bail!("`photoseg demo` is not built yet: it needs the built-in model (issue 3) and the library (issue 4)"),
        Command::Synth(args) => synth::run(args),
    }
}
