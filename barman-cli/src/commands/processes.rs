//! The processes barman runs for a server and their lock files: list-processes,
//! terminate-process, lock-directory-cleanup.

use std::time::Duration;

use barman_core::catalog::process::{self, Terminated};
use barman_core::config::Config;
use serde_json::{json, Value};

use super::one_server;
use crate::cli::{Cli, Command};
use crate::output::{Mode, Output};

/// How long a terminated process gets to exit (Barman: ten checks a second apart).
const GRACE: Duration = Duration::from_secs(10);

/// Whether `cmd` belongs here and is built.
pub fn implemented(cmd: &Command) -> bool {
    matches!(cmd, Command::ListProcesses { .. } | Command::TerminateProcess { .. } | Command::LockDirectoryCleanup)
}

/// Runs one of this group's commands.
pub fn run(cli: &Cli, config: &Config, out: &mut Output) -> anyhow::Result<Option<u8>> {
    let lock_dir = &config.global.barman_lock_directory;
    match &cli.command {
        Command::ListProcesses { server_name } => {
            let Some(server) = one_server(config, server_name, out) else { return Ok(None) };
            let found = process::list_processes(lock_dir, &server.name)?;
            if out.mode() == Mode::Json {
                let list: Vec<Value> = found.iter().map(|p| json!({"pid": p.pid, "name": p.task})).collect();
                out.result(&server.name, Value::Array(list));
            } else if found.is_empty() {
                out.info(&format!("No active subprocesses found for server {}.", server.name));
            } else {
                out.info(&format!("Active subprocesses for server {}:", server.name));
                for p in &found {
                    out.info(&format!("{} {}", p.pid, p.task));
                }
            }
        }
        Command::TerminateProcess { server_name, task } => {
            let Some(server) = one_server(config, server_name, out) else { return Ok(None) };
            report_termination(&process::terminate(lock_dir, &server.name, task, GRACE)?, task, &server.name, true, out);
        }
        Command::LockDirectoryCleanup => {
            for path in process::cleanup_lock_directory(lock_dir)? {
                out.debug(&format!("{} deleted", path.display()));
            }
        }
        _ => unreachable!("filtered by implemented()"),
    }
    Ok(None)
}

/// Barman's lines for the end of a termination (`Server.kill`).
pub fn report_termination(outcome: &Terminated, task: &str, server: &str, fail_if_not_present: bool, out: &mut Output) {
    match outcome {
        Terminated::Stopped(p) => out.info(&format!("Stopped process {}({})", p.task, p.pid)),
        Terminated::StillRunning(p) => out.error(&format!("Cannot terminate process {}({})", p.task, p.pid)),
        Terminated::NotRunning if fail_if_not_present => {
            out.error(&format!("Termination of {task} failed: no such process for server {server}"))
        }
        Terminated::NotRunning => {}
    }
}
