//! Running a program and turning its failure into an error that shows what happened.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

use anyhow::{bail, Context as _};

/// What a finished program printed, and how it ended.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    /// Whether it exited with status 0.
    pub success: bool,
    /// Exit status, as text (`exit status: 2`, `signal: 9`).
    pub status: String,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

/// Extension of [`Command`]: run to completion and fail with the command line, exit status and
/// both outputs, so a failed `initdb` or `psql` explains itself in the test report.
pub trait RunCommand {
    /// Runs the program with stdin closed; `Ok(stdout)` when it exits with 0.
    fn run(&mut self) -> anyhow::Result<String>;
    /// Like [`run`](Self::run), writing `input` to its stdin first.
    fn run_with_stdin(&mut self, input: &[u8]) -> anyhow::Result<String>;
    /// Runs the program and returns its output whatever the exit status (for negative tests:
    /// a connection that must be refused). Fails only if it cannot be started.
    fn output_any(&mut self) -> anyhow::Result<CommandOutput>;
}

impl RunCommand for Command {
    fn run(&mut self) -> anyhow::Result<String> {
        self.stdin(Stdio::null());
        let out = self
            .output()
            .with_context(|| format!("cannot start {}", describe(self)))?;
        check(self, out)
    }

    fn run_with_stdin(&mut self, input: &[u8]) -> anyhow::Result<String> {
        self.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self
            .spawn()
            .with_context(|| format!("cannot start {}", describe(self)))?;
        let mut stdin = child.stdin.take().context("child has no stdin")?;
        // A program that fails early closes its stdin: ignore EPIPE, report its exit instead.
        let _ = stdin.write_all(input);
        drop(stdin);
        let out = child
            .wait_with_output()
            .with_context(|| format!("cannot wait for {}", describe(self)))?;
        check(self, out)
    }

    fn output_any(&mut self) -> anyhow::Result<CommandOutput> {
        self.stdin(Stdio::null());
        let out = self
            .output()
            .with_context(|| format!("cannot start {}", describe(self)))?;
        Ok(CommandOutput {
            success: out.status.success(),
            status: out.status.to_string(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

fn check(cmd: &Command, out: Output) -> anyhow::Result<String> {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!(
            "{} failed ({}): {}{}",
            describe(cmd),
            out.status,
            stderr.trim(),
            if stdout.trim().is_empty() {
                String::new()
            } else {
                format!("\nstdout: {}", stdout.trim())
            }
        );
    }
    Ok(stdout)
}

/// `program arg arg ...`, without the environment (which `Command`'s `Debug` would print).
pub(crate) fn describe(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}
