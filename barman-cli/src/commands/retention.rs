//! Commands that remove or protect backups: delete, keep.

use barman_core::config::Config;

use crate::cli::{Cli, Command};
use crate::output::Output;

/// Whether `cmd` belongs here and is built.
pub fn implemented(cmd: &Command) -> bool {
    let _ = cmd;
    false
}

/// Runs one of this group's commands.
pub fn run(cli: &Cli, config: &Config, out: &mut Output) -> anyhow::Result<Option<u8>> {
    let _ = (config, out);
    unreachable!("{} is not built yet", cli.command.name())
}
