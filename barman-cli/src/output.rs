//! The output channel of one run, after Barman's output writers (`barman/output.py`).
//!
//! Console: information on stdout; `WARNING:`, `ERROR:` and `DEBUG:` lines on stderr; every
//! line passes through `redact_passwords`. JSON: messages are collected under `_INFO`,
//! `_WARNING`, `_ERROR`, `_DEBUG` and results under the server's name, then printed as one
//! document without a trailing newline when the run closes. Nagios: nothing is printed until
//! the end. An error sets the exit status to 1, as Barman's `output.error` does.

use std::io::Write as _;

use barman_core::output::{python_json, redact_json, redact_passwords, render::Colors};
use serde_json::{Map, Value};

/// Where messages and results go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Text.
    Console,
    /// One JSON document.
    Json,
    /// Silent until the Nagios summary.
    Nagios,
}

/// The output of one run.
#[derive(Debug)]
pub struct Output {
    mode: Mode,
    quiet: bool,
    debug: bool,
    /// Colours for OK/FAILED and the message prefixes.
    pub colors: Colors,
    json: Map<String, Value>,
    error: bool,
}

impl Output {
    /// A new channel.
    pub fn new(mode: Mode, quiet: bool, debug: bool, colors: Colors) -> Output {
        Output { mode, quiet, debug, colors, json: Map::new(), error: false }
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Switches to the Nagios writer (`check --nagios`).
    pub fn set_nagios(&mut self) {
        self.mode = Mode::Nagios;
    }

    /// Whether an error was reported.
    pub fn error_occurred(&self) -> bool {
        self.error
    }

    /// Marks the run as failed without a message (a failed check).
    pub fn set_error(&mut self) {
        self.error = true;
    }

    fn field(&mut self, key: &str, message: &str) {
        let list = self.json.entry(key.to_owned()).or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(items) = list {
            items.push(Value::String(message.to_owned()));
        }
    }

    /// An informational line (stdout).
    pub fn info(&mut self, message: &str) {
        match self.mode {
            Mode::Console if !self.quiet => println_out(message),
            Mode::Json => self.field("_INFO", message),
            _ => {}
        }
    }

    /// A warning (stderr).
    pub fn warning(&mut self, message: &str) {
        match self.mode {
            Mode::Console => eprintln_err(&self.colors.yellow(&format!("WARNING: {message}"))),
            Mode::Json => self.field("_WARNING", message),
            Mode::Nagios => {}
        }
    }

    /// An error (stderr); the run will exit 1.
    pub fn error(&mut self, message: &str) {
        self.error = true;
        match self.mode {
            Mode::Console => eprintln_err(&self.colors.red(&format!("ERROR: {message}"))),
            Mode::Json => self.field("_ERROR", message),
            Mode::Nagios => {}
        }
    }

    /// A debug line (stderr, only with `-d`).
    pub fn debug(&mut self, message: &str) {
        if !self.debug {
            return;
        }
        match self.mode {
            Mode::Console => eprintln_err(&format!("DEBUG: {message}")),
            Mode::Json => self.field("_DEBUG", message),
            Mode::Nagios => {}
        }
    }

    /// Stores a JSON result under `key` (a server name).
    pub fn result(&mut self, key: &str, value: Value) {
        self.json.insert(key.to_owned(), value);
    }

    /// Prints the JSON document (in JSON mode) and returns the exit status.
    pub fn close(mut self) -> u8 {
        if self.mode == Mode::Json && !self.quiet {
            let mut doc = Value::Object(std::mem::take(&mut self.json));
            redact_json(&mut doc);
            let text = python_json(&doc);
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        }
        u8::from(self.error)
    }
}

/// Prints one line on stdout, passwords redacted; a closed pipe is not an error.
pub fn println_out(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", redact_passwords(line));
}

fn eprintln_err(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{}", redact_passwords(line));
}
