//! `barman`: the command line. Maps arguments to barman-core calls and renders the results;
//! no policy lives here.
//!
//! The command tree is Barman 3.x's. Commands not built yet say so and exit 1: a script that
//! depends on one fails loudly instead of believing it ran.

use std::process::ExitCode;

use clap::{Arg, ArgAction, Command};

/// Barman's commands, with the one-line description its manual gives each.
const COMMANDS: &[(&str, &str)] = &[
    ("archive-wal", "Move incoming WAL files into the archive"),
    ("backup", "Take a base backup of one or more servers"),
    ("check", "Check the connection and configuration of one or more servers"),
    ("check-backup", "Check that the WAL of a backup is all in the archive"),
    ("check-wal-archive", "Check that the WAL archive is safe for a new server"),
    ("config-switch", "Apply a configuration model to a server"),
    ("config-update", "Create or update configurations from JSON"),
    ("cron", "Run maintenance tasks (archive-wal, receive-wal, retention)"),
    ("delete", "Delete a backup"),
    ("diagnose", "Print diagnostic information as JSON"),
    ("generate-manifest", "Generate a backup_manifest for a backup"),
    ("get-wal", "Fetch a WAL file from the archive"),
    ("keep", "Keep a backup beyond the retention policy"),
    ("list-backups", "List the backups of one or more servers"),
    ("list-files", "List the files of a backup"),
    ("list-processes", "List the barman subprocesses of a server"),
    ("list-servers", "List the configured servers"),
    ("lock-directory-cleanup", "Remove unused lock files"),
    ("put-wal", "Receive a WAL file from a remote barman-wal-archive"),
    ("rebuild-xlogdb", "Rebuild the WAL index from the archive"),
    ("receive-wal", "Stream WAL from a server over the replication protocol"),
    ("recover", "Restore a backup, optionally to a point in time"),
    ("replication-status", "Show the replication status of a server"),
    ("show-backup", "Show the details of a backup"),
    ("show-servers", "Show the configuration of one or more servers"),
    ("status", "Show the status of one or more servers"),
    ("switch-wal", "Force the server to switch to a new WAL file"),
    ("sync-backup", "Copy a backup from the primary barman (passive node)"),
    ("sync-info", "Print the information a passive node needs"),
    ("sync-wals", "Copy WAL from the primary barman (passive node)"),
    ("terminate-process", "Terminate a barman subprocess of a server"),
    ("verify-backup", "Verify a backup with pg_verifybackup"),
];

/// Older names Barman still accepts.
const ALIASES: &[(&str, &str)] = &[("restore", "recover"), ("switch-xlog", "switch-wal")];

fn cli() -> Command {
    let mut cmd = Command::new("barman")
        .version(env!("CARGO_PKG_VERSION"))
        .about("barman-rs: Backup and Recovery Manager for PostgreSQL, compatible with Barman 3.x")
        .subcommand_required(true)
        .arg(Arg::new("config").short('c').long("config").value_name("CONFIG").global(true).help("Use the given configuration file"))
        .arg(Arg::new("quiet").short('q').long("quiet").action(ArgAction::SetTrue).global(true).help("Be quiet"))
        .arg(Arg::new("debug").short('d').long("debug").action(ArgAction::SetTrue).global(true).help("Debug output"))
        .arg(
            Arg::new("format")
                .short('f')
                .long("format")
                .value_parser(["json", "console"])
                .global(true)
                .help("Output format"),
        );
    for (name, about) in COMMANDS {
        let mut sub = Command::new(*name).about(*about).arg(
            Arg::new("args").num_args(0..).trailing_var_arg(true).allow_hyphen_values(true).help("Command arguments"),
        );
        for (alias, target) in ALIASES {
            if target == name {
                sub = sub.visible_alias(*alias);
            }
        }
        cmd = cmd.subcommand(sub);
    }
    cmd
}

fn main() -> ExitCode {
    let matches = cli().get_matches();
    let (name, _) = matches.subcommand().expect("subcommand_required");
    eprintln!("barman: the '{name}' command is not implemented yet in barman-rs {}", env!("CARGO_PKG_VERSION"));
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_tree_is_valid() {
        cli().debug_assert();
    }

    #[test]
    fn aliases_resolve() {
        let m = cli().try_get_matches_from(["barman", "restore", "pg", "latest", "/tmp/x"]).unwrap();
        assert_eq!(m.subcommand_name(), Some("recover"));
    }
}
