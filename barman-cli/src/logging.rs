//! The log file, as Barman keeps one: `log_file` from `[barman]`, at `log_level` (or
//! `--log-level`), appended to by every command. What goes there and not to the console:
//! hook script output, refused WAL details, retries, the reasons behind one-line errors.
//!
//! The file is opened for appending and never truncated; lines carry the time, the process
//! ID (several barman processes share the file), the level and the module.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::sync::Mutex;

use barman_core::config::Config;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

use crate::cli::LogLevel;

/// Barman's level names to tracing's (`CRITICAL` logs errors: tracing has nothing higher).
fn level_filter(name: &str) -> Option<tracing::level_filters::LevelFilter> {
    use tracing::level_filters::LevelFilter;
    Some(match name.trim().to_ascii_uppercase().as_str() {
        "NOTSET" | "DEBUG" => LevelFilter::DEBUG,
        "INFO" => LevelFilter::INFO,
        "WARNING" | "WARN" => LevelFilter::WARN,
        "ERROR" | "CRITICAL" => LevelFilter::ERROR,
        _ => return None,
    })
}

struct LocalTime;

impl FormatTime for LocalTime {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        write!(w, "{} [{}]", barman_core::output::local_now(), std::process::id())
    }
}

/// Starts logging to the configured `log_file`. A file that cannot be opened is said once on
/// stderr (as Barman: it then logs nowhere rather than mixing logs into the output).
pub fn init(config: &Config, cli_level: Option<LogLevel>) {
    let Some(path) = &config.global.log_file else { return };
    let level_name = match cli_level {
        Some(l) => format!("{l:?}"),
        None => config.global.log_level.clone(),
    };
    let level = level_filter(&level_name).unwrap_or(tracing::level_filters::LevelFilter::INFO);
    // 0600 like the catalog: the log names hosts, users and the servers' error texts.
    let file = match OpenOptions::new().create(true).append(true).mode(0o600).open(path) {
        Ok(f) => f,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "WARNING: cannot open the log file {}: {e}; not logging", path.display());
            return;
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(Mutex::new(file))
        .with_ansi(false)
        .with_timer(LocalTime)
        .with_max_level(level)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::level_filter;
    use tracing::level_filters::LevelFilter;

    #[test]
    fn barman_level_names() {
        assert_eq!(level_filter("info"), Some(LevelFilter::INFO));
        assert_eq!(level_filter("WARNING"), Some(LevelFilter::WARN));
        assert_eq!(level_filter("CRITICAL"), Some(LevelFilter::ERROR));
        assert_eq!(level_filter("DEBUG"), Some(LevelFilter::DEBUG));
        assert_eq!(level_filter("loud"), None);
    }
}
