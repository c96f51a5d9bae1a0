//! Custom compression filters: a shell command reading stdin and writing stdout, run with
//! `sh -c` (Barman wraps the filter in a shell function fed `< "$1"` and writing `> "$2"`;
//! pipes give the same bytes without temporary files).
//!
//! A child process has two pipes that must both keep moving, so one side is pumped by a
//! thread: [`FilterWriter`] copies the child's stdout into the caller's writer on a thread
//! while the caller writes stdin; [`FilterReader`] feeds stdin from the caller's reader on a
//! thread while the caller reads stdout. stderr is drained by a third thread (keeping its
//! last few KiB for the error message), so a chatty filter never blocks.

use std::ffi::OsString;
use std::io::{self, Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::thread::JoinHandle;

use super::CompressionError;

/// How much of a filter's stderr is kept for the error message.
const STDERR_KEEP: usize = 4096;

fn shell(command: &str, path_prefix: Option<&str>) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(command);
    if let Some(prefix) = path_prefix.filter(|p| !p.is_empty()) {
        let mut path = OsString::from(prefix);
        if let Some(old) = std::env::var_os("PATH") {
            path.push(":");
            path.push(old);
        }
        cmd.env("PATH", path);
    }
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

fn spawn(command: &str, path_prefix: Option<&str>) -> Result<Child, CompressionError> {
    shell(command, path_prefix)
        .spawn()
        .map_err(|source| CompressionError::Spawn { command: command.to_owned(), source })
}

fn drain_stderr(child: &mut Child) -> Option<JoinHandle<Vec<u8>>> {
    let mut stderr = child.stderr.take()?;
    Some(std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            kept.extend_from_slice(&buf[..n]);
            if kept.len() > STDERR_KEEP {
                kept.drain(..kept.len() - STDERR_KEEP);
            }
        }
        kept
    }))
}

/// Waits for the child and turns an unsuccessful exit into [`CompressionError::FilterFailed`].
fn reap(
    command: &str,
    child: &mut Child,
    stderr: Option<JoinHandle<Vec<u8>>>,
) -> Result<(), CompressionError> {
    let status = child
        .wait()
        .map_err(|source| CompressionError::Spawn { command: command.to_owned(), source })?;
    let stderr = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
    if status.success() {
        Ok(())
    } else {
        Err(CompressionError::FilterFailed {
            command: command.to_owned(),
            status,
            stderr: String::from_utf8_lossy(&stderr).trim().to_owned(),
        })
    }
}

/// A running filter whose stdin is written by the caller and whose stdout goes to `W`.
pub struct FilterWriter<W: Write + Send + 'static> {
    command: String,
    child: Child,
    stdin: Option<ChildStdin>,
    pump: Option<JoinHandle<io::Result<W>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

impl<W: Write + Send + 'static> FilterWriter<W> {
    /// Starts `command` with its output going to `out`.
    pub fn spawn(command: &str, path_prefix: Option<&str>, mut out: W) -> Result<Self, CompressionError> {
        let mut child = spawn(command, path_prefix)?;
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let stderr = drain_stderr(&mut child);
        let pump = std::thread::spawn(move || -> io::Result<W> {
            io::copy(&mut stdout, &mut out)?;
            Ok(out)
        });
        Ok(FilterWriter { command: command.to_owned(), child, stdin, pump: Some(pump), stderr })
    }

    /// Closes the filter's input, waits for it to exit and returns the writer its output went
    /// to.
    pub fn finish(mut self) -> Result<W, CompressionError> {
        drop(self.stdin.take());
        let pumped = self.pump.take().expect("pump present until finish").join();
        let stderr = self.stderr.take();
        reap(&self.command, &mut self.child, stderr)?;
        match pumped {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(source)) => Err(CompressionError::Io { algorithm: super::Compression::Custom, source }),
            Err(_) => Err(CompressionError::Io {
                algorithm: super::Compression::Custom,
                source: io::Error::other("output thread panicked"),
            }),
        }
    }
}

impl<W: Write + Send + 'static> Write for FilterWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stdin.as_mut().ok_or_else(|| io::Error::other("filter input closed"))?.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.stdin.as_mut() {
            Some(s) => s.flush(),
            None => Ok(()),
        }
    }
}

impl<W: Write + Send + 'static> Drop for FilterWriter<W> {
    fn drop(&mut self) {
        if self.pump.is_some() {
            drop(self.stdin.take());
            let _ = self.child.kill();
            let _ = self.child.wait();
            if let Some(p) = self.pump.take() {
                let _ = p.join();
            }
            if let Some(e) = self.stderr.take() {
                let _ = e.join();
            }
        }
    }
}

/// A running filter fed from a reader on a thread; reading it yields the filter's output.
/// Reaching the end of that output waits for the filter and fails if it failed.
pub struct FilterReader {
    command: String,
    child: Child,
    stdout: ChildStdout,
    feeder: Option<JoinHandle<io::Result<()>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
    done: bool,
}

impl FilterReader {
    /// Starts `command` reading `input`.
    pub fn spawn<R: Read + Send + 'static>(
        command: &str,
        path_prefix: Option<&str>,
        mut input: R,
    ) -> Result<Self, CompressionError> {
        let mut child = spawn(command, path_prefix)?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let stdout = child.stdout.take().expect("stdout is piped");
        let stderr = drain_stderr(&mut child);
        let feeder = std::thread::spawn(move || -> io::Result<()> {
            match io::copy(&mut input, &mut stdin) {
                // The filter may stop reading early; its exit status decides.
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
                other => other.map(drop),
            }
        });
        Ok(FilterReader {
            command: command.to_owned(),
            child,
            stdout,
            feeder: Some(feeder),
            stderr,
            done: false,
        })
    }

    fn finish(&mut self) -> io::Result<()> {
        self.done = true;
        let fed = self.feeder.take().map(|f| f.join());
        reap(&self.command, &mut self.child, self.stderr.take()).map_err(io::Error::other)?;
        match fed {
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) => Err(io::Error::other("input thread panicked")),
            _ => Ok(()),
        }
    }
}

impl Read for FilterReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        let n = self.stdout.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.finish()?;
        }
        Ok(n)
    }
}

impl Drop for FilterReader {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.child.kill();
            let _ = self.child.wait();
            if let Some(f) = self.feeder.take() {
                let _ = f.join();
            }
            if let Some(e) = self.stderr.take() {
                let _ = e.join();
            }
        }
    }
}
