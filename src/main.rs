//! The `photoseg` binary: parse, dispatch, print the error chain.
use std::process::ExitCode;

fn main() -> ExitCode {
    photoseg::cli::main()
}
