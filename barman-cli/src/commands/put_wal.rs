//! `barman put-wal`: WAL files arriving on standard input (a tar stream with an MD5SUMS
//! file, sent by `barman-wal-archive` over ssh) into the server's incoming directory.

use barman_core::config::Config;

use crate::cli::{Cli, Command};
use crate::output::Output;

/// Whether `cmd` belongs here and is built.
pub fn implemented(cmd: &Command) -> bool {
    let _ = cmd;
    false
}

/// Runs `put-wal`.
pub fn run(cli: &Cli, config: &Config, out: &mut Output) -> anyhow::Result<Option<u8>> {
    let _ = (config, out);
    unreachable!("{} is not built yet", cli.command.name())
}
