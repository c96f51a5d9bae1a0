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
    /// `[server] `, put before every line of a channel made by [`Output::labelled`].
    label: Option<String>,
}

impl Output {
    /// A new channel.
    pub fn new(mode: Mode, quiet: bool, debug: bool, colors: Colors) -> Output {
        Output { mode, quiet, debug, colors, json: Map::new(), error: false, label: None }
    }

    /// A channel for one of several servers worked on at the same time (`backup all`): the
    /// same mode and switches, every line of every message prefixed with `[label] ` so that
    /// concurrent output stays readable (each message is still written whole), and no
    /// progress bars. Its JSON and error state join this channel's with [`Output::absorb`].
    pub fn labelled(&self, label: &str) -> Output {
        Output { label: Some(format!("[{label}] ")), ..Output::new(self.mode, self.quiet, self.debug, self.colors) }
    }

    /// Takes back a channel made by [`Output::labelled`]: its JSON messages and results, and
    /// whether it reported an error.
    pub fn absorb(&mut self, other: Output) {
        self.error |= other.error;
        for (key, value) in other.json {
            match (self.json.get_mut(&key), value) {
                (Some(Value::Array(mine)), Value::Array(theirs)) => mine.extend(theirs),
                (_, value) => {
                    self.json.insert(key, value);
                }
            }
        }
    }

    /// `message` with the label before each of its lines.
    fn text<'m>(&self, message: &'m str) -> std::borrow::Cow<'m, str> {
        match &self.label {
            None => message.into(),
            Some(label) => message.lines().map(|l| format!("{label}{l}")).collect::<Vec<_>>().join("\n").into(),
        }
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether a person is watching: console output, not `-q`, stderr a terminal. Progress
    /// bars are drawn only then.
    pub fn interactive(&self) -> bool {
        use std::io::IsTerminal as _;
        self.mode == Mode::Console && !self.quiet && self.label.is_none() && std::io::stderr().is_terminal()
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
        let labelled = self.text(message);
        let message: &str = &labelled;
        match self.mode {
            Mode::Console if !self.quiet => println_out(message),
            Mode::Json => self.field("_INFO", message),
            _ => {}
        }
    }

    /// A warning (stderr).
    pub fn warning(&mut self, message: &str) {
        let labelled = self.text(message);
        let message: &str = &labelled;
        match self.mode {
            Mode::Console => eprintln_err(&self.colors.yellow(&format!("WARNING: {message}"))),
            Mode::Json => self.field("_WARNING", message),
            Mode::Nagios => {}
        }
    }

    /// An error (stderr); the run will exit 1.
    pub fn error(&mut self, message: &str) {
        self.error = true;
        let labelled = self.text(message);
        let message: &str = &labelled;
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
        let labelled = self.text(message);
        let message: &str = &labelled;
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

/// Progress of a long copy: a bar on stderr (bytes, rate, ETA) when a person watches, a log
/// line every 30 seconds otherwise. Never on stdout, whose lines are Barman's.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    what: String,
    last_log: std::time::Instant,
}

impl Progress {
    /// Progress of `what` (`backup 20261125T123210`).
    pub fn new(out: &Output, what: &str) -> Progress {
        let bar = out.interactive().then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_message(what.to_owned());
            bar
        });
        Progress { bar, what: what.to_owned(), last_log: std::time::Instant::now() }
    }

    /// `done` bytes of an estimated `total`.
    pub fn update(&mut self, done: u64, total: Option<u64>) {
        match &self.bar {
            Some(bar) => {
                // The server's estimate can be short (files grow during the backup).
                bar.set_length(total.unwrap_or(0).max(done));
                bar.set_position(done);
            }
            None if self.last_log.elapsed() >= std::time::Duration::from_secs(30) => {
                self.last_log = std::time::Instant::now();
                let of = total.map(|t| format!(" of about {}", barman_core::output::pretty_size(t as f64))).unwrap_or_default();
                tracing::info!("{}: {} copied{of}", self.what, barman_core::output::pretty_size(done as f64));
            }
            None => {}
        }
    }

    /// Removes the bar (the lines that follow are Barman's).
    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
