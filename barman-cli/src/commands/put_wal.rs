//! `barman put-wal`: WAL files arriving on standard input (a tar stream with a checksum
//! file, sent by `barman-wal-archive` over ssh) into the server's incoming directory.
//!
//! Exit statuses, as Barman's: 0 when the files were stored, were already there, or were a
//! mismatching duplicate set aside in `errors/` (so WAL does not pile up on PostgreSQL); 1
//! for any refusal (bad or missing checksum, unsupported member), which makes
//! `barman-wal-archive` fail and PostgreSQL retry.

use barman_core::config::Config;
use barman_core::put_wal::{self, Origin, Outcome, PutWalError};

use super::{one_server, server_catalog};
use crate::cli::{Cli, Command};
use crate::output::Output;

/// Whether `cmd` belongs here and is built.
pub fn implemented(cmd: &Command) -> bool {
    matches!(cmd, Command::PutWal { .. })
}

/// Runs `put-wal`.
pub fn run(cli: &Cli, config: &Config, out: &mut Output) -> anyhow::Result<Option<u8>> {
    let Command::PutWal { server_name, test } = &cli.command else { unreachable!("filtered by implemented()") };
    // Barman's get_server(inactive_is_error=True).
    let Some(server) = one_server(config, server_name, out) else { return Ok(None) };
    if *test {
        out.info(&format!("Ready to accept WAL files for the server {}", server.name));
        return Ok(None);
    }
    let catalog = server_catalog(config, server);
    let ssh = std::env::var("SSH_CONNECTION").ok();
    let origin = Origin::new(&server.name, ssh.as_deref());
    let now = time::OffsetDateTime::now_utc();
    let mut warnings = Vec::new();
    let result = put_wal::receive(&catalog, &origin, std::io::stdin().lock(), now, &mut |w| warnings.push(w));
    for w in &warnings {
        out.warning(w);
    }
    match result {
        Ok(outcomes) => {
            for o in outcomes {
                match o {
                    Outcome::Stored { .. } => {}
                    Outcome::Identical { name } => out.debug(&format!(
                        "Duplicate Files with Identical Checksums. File {name} already exists on server {}, \
                         and the checksums are identical. Skipping the file.",
                        server.name
                    )),
                    // Barman's words, including its missing space before the second checksum.
                    Outcome::Duplicate { name, existing, incoming, .. } => out.info(&format!(
                        "\tError: Duplicate Files Detected with Mismatched Checksums. File {name} already exists \
                         on server {} with checksum {existing}, but the checksum of the incoming file is{incoming}. \
                         The file has been moved to the errors directory.",
                        server.name
                    )),
                }
            }
            Ok(None)
        }
        Err(e @ PutWalError::Storage(_)) => Err(anyhow::Error::new(e).context(format!("put-wal for server '{}'", server.name))),
        Err(e) => {
            out.error(&e.to_string());
            Ok(None)
        }
    }
}
