//! What `barman-wal-archive` and `barman-wal-restore` share: the ssh command line that runs
//! `barman` on the Barman host, Barman's `ERROR:` reporting, and how a child's exit status
//! becomes ours.
//!
//! Both helpers run `ssh [-p PORT] -q -T USER@HOST barman …` exactly as Barman's Python
//! clients (`barman/clients/walarchive.py`, `walrestore.py`) do, so an existing
//! `authorized_keys` `command=` restriction written for Barman keeps matching.

use std::process::{Command, ExitCode, ExitStatus};

/// `ssh [-p PORT] -q -T USER@HOST barman`: the start of every remote command. `-q` keeps
/// ssh's own warnings out of PostgreSQL's log; `-T` because no terminal is wanted.
pub fn ssh_command(port: Option<&str>, user: &str, host: &str) -> Command {
    let mut cmd = Command::new("ssh");
    if let Some(port) = port {
        cmd.arg("-p").arg(port);
    }
    cmd.args(["-q", "-T"]).arg(format!("{user}@{host}")).arg("barman");
    cmd
}

/// Prints `ERROR: message` on stderr and returns `status` as the exit code, as Barman's
/// `exit_with_error`.
pub fn fail(message: &str, status: u8) -> ExitCode {
    eprintln!("ERROR: {message}");
    ExitCode::from(status)
}

/// The exit code of a finished child, as Python's `returncode` becomes `sys.exit`'s status.
/// A child killed by a signal has no code; Python would exit with a negative number wrapped
/// to 8 bits, barman-rs reports 128 + the signal, the shell's convention.
pub fn exit_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(1),
        (None, Some(sig)) => u8::try_from((128 + sig) & 0xff).unwrap_or(1),
        (None, None) => 1,
    }
}

/// `--test`: runs the remote command, prints everything it wrote followed by an empty line
/// (Barman prints the captured output with `print`), and exits with its status, unmapped.
pub fn connectivity_test(mut cmd: Command) -> ExitCode {
    match cmd.output() {
        Ok(out) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            println!("{text}");
            ExitCode::from(exit_code(out.status))
        }
        Err(e) => fail(&format!("Impossible to invoke remote barman: {e}"), 2),
    }
}
