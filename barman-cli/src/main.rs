//! `barman`: the command line. Maps arguments to barman-core calls and renders the results;
//! no policy lives here.
//!
//! The command tree is Barman 3.x's ([`cli`]). Commands whose engine is not built yet say so
//! and exit 1: a script that depends on one fails loudly instead of believing it ran.
//!
//! Exit statuses, as Barman's: 0 success; 1 when an error was reported or a check failed;
//! 2 for a usage error (clap) and for `check --nagios` CRITICAL.

mod cli;
mod commands;
mod logging;
mod output;

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::{Cli, Color, Command, Format};
use crate::output::{Mode, Output};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let colors = barman_core::output::render::Colors {
        enabled: match cli.color {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => std::io::stdout().is_terminal() && std::io::stderr().is_terminal(),
        },
    };
    if let Command::Completions { shell } = &cli.command {
        commands::completions(*shell);
        return ExitCode::SUCCESS;
    }
    if let Command::Man { directory } = &cli.command {
        return match commands::man_pages(directory) {
            Ok(n) => {
                println!("{n} man pages written to {}", directory.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ERROR: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if !commands::implemented(&cli.command) {
        eprintln!(
            "barman: the '{}' command is not implemented yet in barman-rs {}",
            cli.command.name(),
            env!("CARGO_PKG_VERSION")
        );
        return ExitCode::FAILURE;
    }
    let mode = match cli.format {
        Format::Console => Mode::Console,
        Format::Json => Mode::Json,
    };
    let mut out = Output::new(mode, cli.quiet, cli.debug, colors);
    let code = match commands::run(&cli, &mut out) {
        Ok(Some(code)) => {
            out.close();
            code
        }
        Ok(None) => out.close(),
        Err(e) => {
            out.error(&format!("{e:#}"));
            out.close()
        }
    };
    ExitCode::from(code)
}
