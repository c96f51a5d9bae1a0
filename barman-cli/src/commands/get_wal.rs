//! `barman get-wal`: one WAL file out of the catalog, to standard output (for a
//! `restore_command`) or into a directory, as Barman's.

use anyhow::Context as _;
use barman_core::compression::{Compression, WalCompression};
use barman_core::config::Config;
use barman_core::get_wal::{self, GetWalError, SendOptions};
use barman_core::storage::{AtomicFile, FILE_MODE};

use super::server_catalog;
use crate::cli::{Cli, Command};
use crate::output::Output;

/// Whether `cmd` belongs here and is built.
pub fn implemented(cmd: &Command) -> bool {
    matches!(cmd, Command::GetWal(_))
}

/// Runs `get-wal`; `Ok(Some(3))` for a name that is not WAL, as Barman.
pub fn run(cli: &Cli, config: &Config, out: &mut Output) -> anyhow::Result<Option<u8>> {
    let Command::GetWal(args) = &cli.command else { unreachable!("filtered by implemented()") };
    // Barman's get_server(skip_inactive=False, disabled_is_error=True): an inactive server
    // still serves its WAL (a passive node's restore must work).
    let Some(server) = config.server(&args.server_name) else {
        out.error(&format!("Unknown server '{}'", args.server_name));
        return Ok(None);
    };
    if server.disabled {
        for m in &server.messages {
            out.error(m);
        }
        return Ok(None);
    }
    if args.test {
        out.info(&format!("Ready to retrieve WAL files from the server {}", server.name));
        return Ok(None);
    }
    let compress_output = match (args.gzip, args.bzip2) {
        (true, _) => Some(Compression::Gzip),
        (false, true) => Some(Compression::Bzip2),
        _ => None,
    };
    if let (Some(c), true) = (compress_output, args.keep_compression) {
        out.error(&format!("argument `{c}` not allowed with argument `keep-compression`"));
        return Ok(None);
    }
    let catalog = server_catalog(config, server);
    let name = match get_wal::parse_name(&args.wal_name) {
        Ok(n) => n,
        Err(e) => {
            out.error(&e.to_string());
            return Ok(Some(3));
        }
    };
    if let Some(n) = args.peek {
        for found in get_wal::peek(&catalog, &name, usize::try_from(n).unwrap_or(usize::MAX)) {
            out.info(&found);
        }
        return Ok(None);
    }
    let compression = WalCompression::from_config(server).context("the server's WAL compression settings")?;
    let opts = SendOptions { compress_output, keep_compression: args.keep_compression, partial: args.partial };
    let result = match &args.output_directory {
        None => {
            let mut stdout = std::io::stdout().lock();
            get_wal::send(&catalog, &compression, &name, opts, &mut stdout).map(|_| ())
        }
        Some(dir) => {
            // Into a temporary file renamed at the end: a restore_command never sees half a
            // segment under the real name.
            let dest = std::path::Path::new(dir).join(name.to_string());
            let mut file = match AtomicFile::create(&dest, FILE_MODE) {
                Ok(f) => f,
                Err(e) => {
                    out.error(&format!("Unable to open '{}' file: {e}", dest.display()));
                    return Ok(Some(3));
                }
            };
            match get_wal::send(&catalog, &compression, &name, opts, &mut file) {
                Ok(from) => {
                    file.commit()?;
                    let sent = from.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
                    out.info(&format!(
                        "Sending WAL '{sent}' for server '{}' into '{}' file",
                        server.name,
                        dest.display()
                    ));
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
    };
    match result {
        Ok(()) => Ok(None),
        Err(e @ GetWalError::NotFound { .. }) => {
            out.error(&e.to_string());
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}
