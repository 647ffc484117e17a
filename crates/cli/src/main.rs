//! `wisp`: run, serve and compile Wasm apps. A thin layer over `wisp-runtime`.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

mod commands;
mod logging;
mod options;

fn main() -> ExitCode {
    let cli = commands::Cli::parse();
    logging::init(cli.default_log_level());
    match cli.execute() {
        Ok(code) => code,
        Err(e) => {
            // One line per cause, outermost first, like ripgrep and spin.
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
