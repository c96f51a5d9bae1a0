//! `barman config-update`: configuration changes sent as JSON, queued, then written to
//! `<barman_home>/.barman.auto.conf`, as Barman 3.19's `ConfigChangesProcessor`.
//!
//! # The request
//!
//! A JSON array of objects, one per section:
//! `[{"scope": "server", "server_name": "pg", "archiver": "on"}]`. `scope` is `server` or
//! `model`, the name is under `server_name` or `model_name`, every other key is an option
//! ([`parse_request`]). Barman's checks, in its order and with its messages: the scope; the
//! name; a server may not be updated as a model nor a model as a server; a new model needs a
//! `cluster` (and gets `model = on`); every key must be an option of that scope (a model may not
//! set directories or hook scripts); every value must pass its option's parser. The first
//! invalid section aborts the whole request before anything is written.
//!
//! # The queue
//!
//! Valid requests are appended to the changes queue (`config_changes_queue`, default
//! `<barman_home>/cfg_changes.queue`): a JSON list, `json.dump(…, indent=2)` of
//! `{"section", "changes_set": [{"key", "value", "config_file"}]}` objects, the file Barman
//! reads. [`process_pending`] (run by `config-update` right after queueing, and by `cron`)
//! applies the queued sets in order; each set is removed from the queue, durably, once its
//! changes are durable, so a crash re-applies at most one set (writing the same values again).
//! Both run under Barman's `.config-update.lock`, so Barman and barman-rs exclude each other.
//!
//! # `.barman.auto.conf`
//!
//! Read last at every load, so its values win over every other file. Each change sets
//! `key = value` in the change's section of that file (the section is added if missing); the
//! file is rewritten whole, durably (temporary file, fsync, rename, directory fsync), mode 0600.
//!
//! Before anything is queued, the configuration is loaded as it would be with the new
//! `.barman.auto.conf` in place; a request that would leave a configuration that does not load
//! (a `%` that does not interpolate, a `[barman]` or `[all]` section name, a name that breaks
//! the INI syntax) is refused. Barman writes such values and fails at the next command.
//!
//! # Deliberate differences from Barman
//!
//! - Every change goes to `.barman.auto.conf`, as Barman's documentation of `config-update`
//!   says. Barman's code edits the file an option already comes from when there is one (the
//!   server's include file, or even `/etc/barman.conf` for an option inherited from
//!   `[barman]`); the effective configuration is the same, since `.barman.auto.conf` is read
//!   last, and site-managed files are never rewritten. A queued change naming another
//!   `config_file` (written by Barman) is applied to `.barman.auto.conf` too.
//! - `.barman.auto.conf` is rewritten from its parsed content: comments in it are not kept.
//! - Values may be JSON strings, numbers or booleans (`10`, `true` are written as text); Barman
//!   fails later on anything but strings. `null`, arrays, objects and multi-line values are
//!   refused.
//! - `serde_json` keeps object keys sorted, so a section's options are validated, written and
//!   quoted in error messages in alphabetical order rather than in the request's order.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value as JsonValue};

use super::ini::{self, Location};
use super::options::{self, Kind, SERVER_OPTIONS};
use super::{values, Config, ConfigError, ConfigFs, RealFs};
use crate::catalog::pyjson::Json;
use crate::catalog::pyliteral::{float_repr, str_repr};
use crate::catalog::{CatalogError, CatalogLock, LockKind};
use crate::storage::{self, StorageError, FILE_MODE};

/// One option to set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigChange {
    /// The option.
    pub key: String,
    /// Its new value, as it will be written.
    pub value: String,
    /// The file Barman's queue names for it (barman-rs always writes `.barman.auto.conf`).
    pub config_file: Option<String>,
}

/// The changes of one section (Barman's `ConfigChangeSet`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeSet {
    /// The server or model.
    pub section: String,
    /// Its options, in the order they are applied.
    pub changes: Vec<ConfigChange>,
}

/// Something to tell the user while changes are applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// An option was written (Barman's INFO line).
    Changed {
        /// The section.
        section: String,
        /// The option.
        key: String,
        /// The value the section set before, as the loaded configuration has it.
        from: Option<String>,
        /// The new value.
        to: String,
    },
    /// The queue file is not JSON (or empty); it is taken as empty (Barman's WARNING).
    MalformedQueue {
        /// The queue file.
        path: PathBuf,
    },
}

impl std::fmt::Display for Notice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Notice::Changed { section, key, from, to } => write!(
                f,
                "Changing value of option '{key}' for section '{section}' from '{}' to '{to}' through config-update.",
                from.as_deref().unwrap_or("None")
            ),
            Notice::MalformedQueue { path } => {
                write!(f, "Malformed or empty configuration change queue: {}", path.display())
            }
        }
    }
}

/// Why a request or the queue could not be processed.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The argument is not JSON.
    #[error("the configuration changes are not valid JSON: {reason}")]
    NotJson {
        /// serde_json's message.
        reason: String,
    },
    /// JSON, but not a list of objects.
    #[error("the configuration changes must be a JSON array of objects, one per section")]
    NotAList,
    /// A section failed Barman's checks; `problem` is Barman's message.
    #[error("{problem}")]
    InvalidSection {
        /// The section as Python's `repr` of its dict.
        section: String,
        /// What is wrong, in Barman's words.
        problem: String,
    },
    /// With the changes written, the configuration would not load.
    #[error("the configuration changes would leave a configuration that does not load")]
    WouldNotLoad {
        /// What the load says.
        #[source]
        source: ConfigError,
    },
    /// `.config-update.lock` is held by another process.
    #[error("another process is updating barman configuration files")]
    Busy,
    /// The lock could not be taken.
    #[error("cannot take the configuration update lock")]
    Lock {
        /// Why.
        #[source]
        source: CatalogError,
    },
    /// The queue file is JSON but not a list of change sets; it is left as it is.
    #[error("{}: not a queue of configuration changes: {reason}", path.display())]
    MalformedQueue {
        /// The queue file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `.barman.auto.conf` cannot be parsed, so it cannot be edited.
    #[error("cannot edit the configuration file")]
    AutoConf {
        /// The parse error (with file and line).
        #[source]
        source: ConfigError,
    },
    /// Applying a queued set failed; it stays queued, with the ones after it.
    #[error("cannot apply the changes of section [{section}]")]
    Apply {
        /// The set's section.
        section: String,
        /// Why.
        #[source]
        source: Box<ChangeError>,
    },
    /// Reading or writing a file failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// `config-update JSON`: checks the request, queues it and applies the queue, under the lock.
/// Returns the sets applied (older queued ones included), for the caller to restart the
/// servers' processes.
pub fn update(config: &Config, json: &str, notify: &mut dyn FnMut(Notice)) -> Result<Vec<ChangeSet>, ChangeError> {
    let _lock = lock(config)?;
    let sets = parse_request(config, json)?;
    if !sets.is_empty() {
        let auto = config.auto_conf_path();
        let current = read_text(&auto)?;
        let text = edit_auto_conf(&auto, current.as_deref(), &sets)?;
        trial_load(config, &auto, &text)?;
        let queue_path = &config.global.config_changes_queue;
        let mut queue = read_queue(queue_path, notify)?.unwrap_or_default();
        queue.extend(sets);
        write_queue(queue_path, &queue)?;
    }
    process_locked(config, notify)
}

/// Applies what the queue holds (Barman's `cron` does this first), under the lock.
pub fn process_pending(config: &Config, notify: &mut dyn FnMut(Notice)) -> Result<Vec<ChangeSet>, ChangeError> {
    let _lock = lock(config)?;
    process_locked(config, notify)
}

fn lock(config: &Config) -> Result<CatalogLock, ChangeError> {
    CatalogLock::try_acquire(&config.global.barman_lock_directory, "", LockKind::ConfigUpdate).map_err(|e| match e {
        CatalogError::LockBusy { .. } => ChangeError::Busy,
        source => ChangeError::Lock { source },
    })
}

fn process_locked(config: &Config, notify: &mut dyn FnMut(Notice)) -> Result<Vec<ChangeSet>, ChangeError> {
    let path = &config.global.config_changes_queue;
    let loaded = read_queue(path, notify)?;
    let must_write = loaded.is_none();
    let mut queue = loaded.unwrap_or_default();
    let mut applied = Vec::new();
    while let Some(set) = queue.first() {
        apply_set(config, set, notify)
            .map_err(|e| ChangeError::Apply { section: set.section.clone(), source: Box::new(e) })?;
        applied.push(queue.remove(0));
        write_queue(path, &queue)?;
    }
    // Barman rewrites the queue on every pass: a missing or unreadable one becomes `[]`.
    if must_write && applied.is_empty() {
        write_queue(path, &queue)?;
    }
    Ok(applied)
}

fn apply_set(config: &Config, set: &ChangeSet, notify: &mut dyn FnMut(Notice)) -> Result<(), ChangeError> {
    let auto = config.auto_conf_path();
    let current = read_text(&auto)?;
    let text = edit_auto_conf(&auto, current.as_deref(), std::slice::from_ref(set))?;
    storage::atomic_write(&auto, text.as_bytes(), FILE_MODE)?;
    for c in &set.changes {
        notify(Notice::Changed {
            section: set.section.clone(),
            key: c.key.clone(),
            from: config.section_value(&set.section, &c.key),
            to: c.value.clone(),
        });
    }
    Ok(())
}

fn read_text(path: &Path) -> Result<Option<String>, ChangeError> {
    let Some(bytes) = storage::fs::read_if_exists(path)? else { return Ok(None) };
    String::from_utf8(bytes).map(Some).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = good.iter().filter(|b| **b == b'\n').count() + 1;
        let location = Location::new(path, u32::try_from(line).unwrap_or(u32::MAX));
        ChangeError::AutoConf { source: ConfigError::NotUtf8 { location } }
    })
}

// ---------------------------------------------------------------------------------------------
// The request

/// Checks a `config-update` request against the loaded configuration (Barman's
/// `_validate_section` for each object, in order). Every change is addressed to
/// `.barman.auto.conf`.
pub fn parse_request(config: &Config, json: &str) -> Result<Vec<ChangeSet>, ChangeError> {
    let doc: JsonValue = serde_json::from_str(json).map_err(|e| ChangeError::NotJson { reason: e.to_string() })?;
    let JsonValue::Array(items) = doc else { return Err(ChangeError::NotAList) };
    let auto = config.auto_conf_path().display().to_string();
    items
        .iter()
        .map(|item| match item {
            JsonValue::Object(map) => validate_section(config, map, &auto),
            _ => Err(ChangeError::NotAList),
        })
        .collect()
}

fn validate_section(config: &Config, map: &Map<String, JsonValue>, auto: &str) -> Result<ChangeSet, ChangeError> {
    let repr = py_repr(&JsonValue::Object(map.clone()));
    let fail = |problem: String| ChangeError::InvalidSection { section: repr.clone(), problem };
    let scope = match map.get("scope") {
        Some(JsonValue::String(s)) if s == "server" || s == "model" => s.as_str(),
        other => {
            return Err(fail(format!(
                "Invalid section {repr}: 'scope' is invalid: '{}'. It should be either 'server' or 'model'.",
                other.map_or_else(|| "None".to_owned(), py_str)
            )))
        }
    };
    let name_key = if scope == "server" { "server_name" } else { "model_name" };
    let name = match map.get(name_key) {
        None => return Err(fail(format!("Invalid section {repr}: '{name_key}' is missing."))),
        Some(JsonValue::String(n)) => n.as_str(),
        Some(other) => {
            return Err(fail(format!("Invalid section {repr}: '{name_key}' must be a string, not {}.", py_repr(other))))
        }
    };
    let mut opts: Vec<(&str, &JsonValue)> =
        map.iter().filter(|(k, _)| *k != "scope" && *k != name_key).map(|(k, v)| (k.as_str(), v)).collect();
    let model_on = JsonValue::String("on".to_owned());
    if scope == "server" && config.model(name).is_some() {
        return Err(fail(format!("Invalid section {repr}: '{name}' is a model, not a server.")));
    }
    if scope == "model" {
        if config.server(name).is_some() {
            return Err(fail(format!("Invalid section {repr}: '{name}' is a server, not a model.")));
        }
        if config.model(name).is_none() {
            // `model = on` makes the new section a model, whatever the request forgot.
            if !opts.iter().any(|(k, _)| *k == "model") {
                opts.insert(0, ("model", &model_on));
            }
            if !opts.iter().any(|(k, _)| *k == "cluster") {
                return Err(fail(format!("Invalid section {repr}: new model but 'cluster' is missing.")));
            }
        }
    }
    let mut changes = Vec::new();
    for (key, value) in opts {
        let valid = if scope == "server" { options::allowed_in_server(key) } else { options::allowed_in_model(key) };
        if !valid {
            return Err(fail(format!("Invalid option '{key}' for {scope} '{name}'")));
        }
        let invalid = |reason: &str| fail(format!("Validation failed for {scope} '{name}': key '{key}' -> {reason}"));
        let text = match value {
            JsonValue::String(s) => s.clone(),
            JsonValue::Number(n) => n.to_string(),
            JsonValue::Bool(b) => b.to_string(),
            other => return Err(invalid(&format!("expected a string, not {}", py_repr(other)))),
        };
        if text.contains(['\n', '\r']) {
            return Err(invalid("a value cannot span lines"));
        }
        check_value(key, &text).map_err(|reason| invalid(&reason))?;
        changes.push(ConfigChange { key: key.to_owned(), value: text, config_file: Some(auto.to_owned()) });
    }
    Ok(ChangeSet { section: name.to_owned(), changes })
}

/// Runs the option's parser where Barman has one (free text and directories have none).
fn check_value(key: &str, text: &str) -> Result<(), String> {
    if key == "model" {
        return values::parse_bool(text).map(drop);
    }
    match SERVER_OPTIONS.iter().find(|o| o.name == key) {
        Some(spec) if !matches!(spec.kind, Kind::Text | Kind::Directory) => spec.kind.parse(text).map(drop),
        _ => Ok(()),
    }
}

/// Python's `repr()` of a JSON-decoded value (as Barman's messages quote a section).
fn py_repr(v: &JsonValue) -> String {
    match v {
        JsonValue::Null => "None".to_owned(),
        JsonValue::Bool(true) => "True".to_owned(),
        JsonValue::Bool(false) => "False".to_owned(),
        JsonValue::Number(n) => match n.as_f64().filter(|_| n.is_f64()) {
            Some(f) => float_repr(f),
            None => n.to_string(),
        },
        JsonValue::String(s) => str_repr(s),
        JsonValue::Array(items) => format!("[{}]", items.iter().map(py_repr).collect::<Vec<_>>().join(", ")),
        JsonValue::Object(m) => format!(
            "{{{}}}",
            m.iter().map(|(k, v)| format!("{}: {}", str_repr(k), py_repr(v))).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Python's `str()`.
fn py_str(v: &JsonValue) -> String {
    match v {
        JsonValue::String(s) => s.clone(),
        other => py_repr(other),
    }
}

// ---------------------------------------------------------------------------------------------
// .barman.auto.conf

/// The new text of `.barman.auto.conf` (`current`, or nothing) with `sets` applied: existing
/// keys are changed in place, new ones appended to their section, new sections appended.
pub fn edit_auto_conf(path: &Path, current: Option<&str>, sets: &[ChangeSet]) -> Result<String, ChangeError> {
    let doc = match current {
        Some(text) => ini::parse(path, text).map_err(|source| ChangeError::AutoConf { source })?,
        None => ini::IniDocument { path: path.to_path_buf(), defaults: Vec::new(), sections: Vec::new() },
    };
    let pairs = |entries: &[ini::IniEntry]| -> Vec<(String, String)> {
        entries.iter().map(|e| (e.key.clone(), e.value.clone())).collect()
    };
    let mut sections: Vec<(String, Vec<(String, String)>)> =
        doc.sections.iter().map(|s| (s.name.clone(), pairs(&s.entries))).collect();
    for set in sets {
        let index = match sections.iter().position(|s| s.0 == set.section) {
            Some(i) => i,
            None => {
                sections.push((set.section.clone(), Vec::new()));
                sections.len() - 1
            }
        };
        let entries = &mut sections[index].1;
        for c in &set.changes {
            match entries.iter_mut().find(|(k, _)| *k == c.key) {
                Some(entry) => entry.1 = c.value.clone(),
                None => entries.push((c.key.clone(), c.value.clone())),
            }
        }
    }
    let mut blocks = Vec::new();
    if !doc.defaults.is_empty() {
        blocks.push(("DEFAULT".to_owned(), pairs(&doc.defaults)));
    }
    blocks.extend(sections);
    let mut out = String::new();
    for (i, (name, entries)) in blocks.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("[{name}]\n"));
        for (key, value) in entries {
            if value.is_empty() {
                out.push_str(&format!("{key} =\n"));
            } else {
                // A value continued over lines (only a hand-edited file has them) stays one.
                out.push_str(&format!("{key} = {}\n", value.replace('\n', "\n\t")));
            }
        }
    }
    Ok(out)
}

/// The real file system with one file replaced: the configuration as the next load will see it.
struct WithFile<'a> {
    path: &'a Path,
    content: &'a [u8],
}

impl ConfigFs for WithFile<'_> {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        if path == self.path {
            return Ok(self.content.to_vec());
        }
        RealFs.read(path)
    }
    fn exists(&self, path: &Path) -> bool {
        path == self.path || RealFs.exists(path)
    }
    fn is_file(&self, path: &Path) -> bool {
        path == self.path || RealFs.is_file(path)
    }
    fn is_dir(&self, path: &Path) -> bool {
        RealFs.is_dir(path)
    }
    fn conf_entries(&self, dir: &Path) -> Vec<PathBuf> {
        RealFs.conf_entries(dir)
    }
    fn real_path(&self, path: &Path) -> PathBuf {
        RealFs.real_path(path)
    }
}

fn trial_load(config: &Config, auto: &Path, text: &str) -> Result<(), ChangeError> {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let fs = WithFile { path: auto, content: text.as_bytes() };
    Config::load_with(&fs, &config.main_file, home.as_deref()).map(drop).map_err(|source| ChangeError::WouldNotLoad { source })
}

// ---------------------------------------------------------------------------------------------
// The queue

/// The queued sets; `None` when the file is missing, or not JSON (a warning says so), which
/// Barman takes as an empty queue.
fn read_queue(path: &Path, notify: &mut dyn FnMut(Notice)) -> Result<Option<Vec<ChangeSet>>, ChangeError> {
    let Some(bytes) = storage::fs::read_if_exists(path)? else { return Ok(None) };
    let Ok(doc) = serde_json::from_slice::<JsonValue>(&bytes) else {
        notify(Notice::MalformedQueue { path: path.to_path_buf() });
        return Ok(None);
    };
    parse_queue(&doc).map(Some).map_err(|reason| ChangeError::MalformedQueue { path: path.to_path_buf(), reason })
}

fn parse_queue(doc: &JsonValue) -> Result<Vec<ChangeSet>, String> {
    fn keys_are(m: &Map<String, JsonValue>, keys: &[&str]) -> bool {
        m.len() == keys.len() && keys.iter().all(|k| m.contains_key(*k))
    }
    let JsonValue::Array(items) = doc else { return Err("expected a list".to_owned()) };
    items
        .iter()
        .map(|item| {
            let set = match item {
                JsonValue::Object(m) if keys_are(m, &["section", "changes_set"]) => m,
                other => return Err(format!("expected a {{\"section\", \"changes_set\"}} object, found {other}")),
            };
            let Some(JsonValue::String(section)) = set.get("section") else {
                return Err("'section' is not a string".to_owned());
            };
            let Some(JsonValue::Array(list)) = set.get("changes_set") else {
                return Err(format!("'changes_set' of section '{section}' is not a list"));
            };
            let changes = list
                .iter()
                .map(|c| {
                    let bad = || format!("malformed change in section '{section}': {c}");
                    let JsonValue::Object(m) = c else { return Err(bad()) };
                    if !keys_are(m, &["key", "value", "config_file"]) {
                        return Err(bad());
                    }
                    let key = m["key"].as_str().ok_or_else(bad)?.to_owned();
                    let value = match &m["value"] {
                        JsonValue::String(s) => s.clone(),
                        JsonValue::Number(n) => n.to_string(),
                        JsonValue::Bool(b) => b.to_string(),
                        _ => return Err(bad()),
                    };
                    let config_file = match &m["config_file"] {
                        JsonValue::String(s) => Some(s.clone()),
                        JsonValue::Null => None,
                        _ => return Err(bad()),
                    };
                    Ok(ConfigChange { key, value, config_file })
                })
                .collect::<Result<_, _>>()?;
            Ok(ChangeSet { section: section.clone(), changes })
        })
        .collect()
}

/// The queue as Barman writes it (`json.dump(queue, indent=2)`, no final newline), durably.
fn write_queue(path: &Path, queue: &[ChangeSet]) -> Result<(), ChangeError> {
    let doc = Json::Array(
        queue
            .iter()
            .map(|set| {
                let changes = set
                    .changes
                    .iter()
                    .map(|c| {
                        Json::Object(vec![
                            ("key".to_owned(), Json::Str(c.key.clone())),
                            ("value".to_owned(), Json::Str(c.value.clone())),
                            ("config_file".to_owned(), Json::opt_str(c.config_file.clone())),
                        ])
                    })
                    .collect();
                Json::Object(vec![
                    ("section".to_owned(), Json::Str(set.section.clone())),
                    ("changes_set".to_owned(), Json::Array(changes)),
                ])
            })
            .collect(),
    );
    storage::atomic_write(path, doc.dumps(Some(2)).as_bytes(), FILE_MODE)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MemoryFs;

    fn memory_config(extra: &str) -> Config {
        let mut fs = MemoryFs::new();
        fs.add(
            "/etc/barman.conf",
            format!(
                "[barman]\nbarman_home = /var/lib/barman\n[pg]\nconninfo = host=a\narchiver = on\n\
                 [pg:dr]\nmodel = true\ncluster = pg\nconninfo = host=b\n{extra}"
            ),
        );
        Config::load_with(&fs, Path::new("/etc/barman.conf"), None).expect("loads")
    }

    fn problem(config: &Config, json: &str) -> String {
        match parse_request(config, json) {
            Err(ChangeError::InvalidSection { problem, .. }) => problem,
            other => panic!("expected an invalid section: {other:?}"),
        }
    }

    #[test]
    fn requests_are_checked_with_barmans_messages() {
        let c = memory_config("");
        assert_eq!(
            problem(&c, r#"[{"server_name": "pg"}]"#),
            "Invalid section {'server_name': 'pg'}: 'scope' is invalid: 'None'. It should be either 'server' or 'model'."
        );
        assert_eq!(
            problem(&c, r#"[{"scope": "server", "archiver": "on"}]"#),
            "Invalid section {'archiver': 'on', 'scope': 'server'}: 'server_name' is missing."
        );
        assert_eq!(
            problem(&c, r#"[{"scope": "server", "server_name": "pg:dr"}]"#),
            "Invalid section {'scope': 'server', 'server_name': 'pg:dr'}: 'pg:dr' is a model, not a server."
        );
        assert_eq!(
            problem(&c, r#"[{"scope": "model", "model_name": "pg"}]"#),
            "Invalid section {'model_name': 'pg', 'scope': 'model'}: 'pg' is a server, not a model."
        );
        assert_eq!(
            problem(&c, r#"[{"scope": "model", "model_name": "new"}]"#),
            "Invalid section {'model_name': 'new', 'scope': 'model'}: new model but 'cluster' is missing."
        );
        assert_eq!(
            problem(&c, r#"[{"scope": "server", "server_name": "pg", "nonsense": "1"}]"#),
            "Invalid option 'nonsense' for server 'pg'"
        );
        assert_eq!(
            problem(&c, r#"[{"scope": "model", "model_name": "pg:dr", "wals_directory": "/w"}]"#),
            "Invalid option 'wals_directory' for model 'pg:dr'"
        );
        assert!(problem(&c, r#"[{"scope": "server", "server_name": "pg", "archiver": "maybe"}]"#)
            .starts_with("Validation failed for server 'pg': key 'archiver' -> "));
        assert!(problem(&c, r#"[{"scope": "server", "server_name": "pg", "conninfo": null}]"#)
            .ends_with("key 'conninfo' -> expected a string, not None"));
        assert!(problem(&c, r#"[{"scope": "server", "server_name": "pg", "description": "a\nb"}]"#)
            .ends_with("a value cannot span lines"));
        assert!(matches!(parse_request(&c, "{"), Err(ChangeError::NotJson { .. })));
        assert!(matches!(parse_request(&c, r#"{"scope": "server"}"#), Err(ChangeError::NotAList)));
    }

    #[test]
    fn valid_requests_address_the_auto_conf() {
        let c = memory_config("");
        let sets = parse_request(
            &c,
            r#"[{"scope": "server", "server_name": "pg", "archiver_batch_size": 10, "network_compression": true},
                {"scope": "model", "model_name": "pg:new", "cluster": "pg"}]"#,
        )
        .expect("valid");
        let auto = Some("/var/lib/barman/.barman.auto.conf".to_owned());
        let change = |k: &str, v: &str| ConfigChange { key: k.into(), value: v.into(), config_file: auto.clone() };
        assert_eq!(
            sets,
            [
                ChangeSet {
                    section: "pg".into(),
                    changes: vec![change("archiver_batch_size", "10"), change("network_compression", "true")]
                },
                ChangeSet { section: "pg:new".into(), changes: vec![change("model", "on"), change("cluster", "pg")] },
            ]
        );
    }

    #[test]
    fn the_auto_conf_is_edited_in_place_and_extended() {
        let path = Path::new("/h/.barman.auto.conf");
        let current = "[DEFAULT]\nx = 1\n\n[pg]\n# a comment\narchiver = off\ndescription = old\n\n[other]\nk = v\n";
        let set = |section: &str, changes: &[(&str, &str)]| ChangeSet {
            section: section.into(),
            changes: changes
                .iter()
                .map(|(k, v)| ConfigChange { key: (*k).into(), value: (*v).into(), config_file: None })
                .collect(),
        };
        let text = edit_auto_conf(
            path,
            Some(current),
            &[set("pg", &[("archiver", "on"), ("conninfo", "host=b")]), set("new", &[("model", "on"), ("cluster", "")])],
        )
        .expect("edits");
        assert_eq!(
            text,
            "[DEFAULT]\nx = 1\n\n[pg]\narchiver = on\ndescription = old\nconninfo = host=b\n\n[other]\nk = v\n\n[new]\nmodel = on\ncluster =\n"
        );
        assert_eq!(edit_auto_conf(path, None, &[set("pg", &[("a", "b")])]).expect("new"), "[pg]\na = b\n");
    }

    #[test]
    fn the_queue_is_written_as_barman_writes_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cfg_changes.queue");
        write_queue(&path, &[]).expect("writes");
        assert_eq!(std::fs::read_to_string(&path).expect("reads"), "[]");
        let set = ChangeSet {
            section: "pg".into(),
            changes: vec![ConfigChange { key: "archiver".into(), value: "on".into(), config_file: Some("/h/.barman.auto.conf".into()) }],
        };
        write_queue(&path, std::slice::from_ref(&set)).expect("writes");
        let text = std::fs::read_to_string(&path).expect("reads");
        assert_eq!(
            text,
            "[\n  {\n    \"section\": \"pg\",\n    \"changes_set\": [\n      {\n        \"key\": \"archiver\",\n        \
             \"value\": \"on\",\n        \"config_file\": \"/h/.barman.auto.conf\"\n      }\n    ]\n  }\n]"
        );
        assert_eq!(read_queue(&path, &mut |_| {}).expect("reads"), Some(vec![set]));
        std::fs::write(&path, "").expect("empties");
        let mut notices = Vec::new();
        assert_eq!(read_queue(&path, &mut |n| notices.push(n)).expect("tolerated"), None);
        assert_eq!(notices, [Notice::MalformedQueue { path: path.clone() }]);
        std::fs::write(&path, r#"[{"section": "pg"}]"#).expect("writes");
        assert!(matches!(read_queue(&path, &mut |_| {}), Err(ChangeError::MalformedQueue { .. })));
    }

    fn site(dir: &Path) -> PathBuf {
        let main = dir.join("barman.conf");
        std::fs::write(
            &main,
            format!("[barman]\nbarman_home = {}\n[pg]\nconninfo = host=a\narchiver = on\n", dir.display()),
        )
        .expect("writes");
        main
    }

    #[test]
    fn update_writes_the_auto_conf_and_the_next_load_sees_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let main = site(dir.path());
        let config = Config::load(&main).expect("loads");
        let mut notices = Vec::new();
        let applied = update(
            &config,
            r#"[{"scope": "server", "server_name": "pg", "conninfo": "host=b", "description": "moved"}]"#,
            &mut |n| notices.push(n.to_string()),
        )
        .expect("applies");
        assert_eq!(applied.len(), 1);
        assert_eq!(
            notices,
            [
                "Changing value of option 'conninfo' for section 'pg' from 'host=a' to 'host=b' through config-update.",
                "Changing value of option 'description' for section 'pg' from 'None' to 'moved' through config-update.",
            ]
        );
        let auto = dir.path().join(".barman.auto.conf");
        assert_eq!(std::fs::read_to_string(&auto).expect("written"), "[pg]\nconninfo = host=b\ndescription = moved\n");
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&auto).expect("stat").permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(dir.path().join("cfg_changes.queue")).expect("queue"), "[]");
        let next = Config::load(&main).expect("loads");
        let pg = next.server("pg").expect("server");
        assert_eq!(pg.conninfo.as_deref(), Some("host=b"));
        assert_eq!(pg.source("conninfo"), Some(&crate::config::Source::Server(Location::new(&auto, 2))));
    }

    #[test]
    fn update_refuses_what_would_not_load_and_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config::load(&site(dir.path())).expect("loads");
        for json in [
            r#"[{"scope": "server", "server_name": "pg", "description": "100% sure"}]"#,
            r#"[{"scope": "server", "server_name": "all", "conninfo": "host=x"}]"#,
            r#"[{"scope": "server", "server_name": "barman", "conninfo": "host=x"}]"#,
        ] {
            let e = update(&config, json, &mut |_| {}).expect_err(json);
            assert!(matches!(e, ChangeError::WouldNotLoad { .. }), "{json}: {e:?}");
        }
        assert!(!dir.path().join(".barman.auto.conf").exists());
        assert!(!dir.path().join("cfg_changes.queue").exists());
    }

    #[test]
    fn a_queue_left_by_barman_is_applied_to_the_auto_conf() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = Config::load(&site(dir.path())).expect("loads");
        let queue = dir.path().join("cfg_changes.queue");
        std::fs::write(
            &queue,
            r#"[{"section": "pg", "changes_set": [{"key": "archiver_batch_size", "value": 5, "config_file": "/etc/barman.d/pg.conf"}]}]"#,
        )
        .expect("writes");
        let applied = process_pending(&config, &mut |_| {}).expect("applies");
        assert_eq!(applied[0].changes[0].value, "5");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(".barman.auto.conf")).expect("written"),
            "[pg]\narchiver_batch_size = 5\n"
        );
        assert_eq!(std::fs::read_to_string(&queue).expect("queue"), "[]");

        let _held = CatalogLock::try_acquire(dir.path(), "", LockKind::ConfigUpdate).expect("lock");
        assert!(matches!(process_pending(&config, &mut |_| {}), Err(ChangeError::Busy)));
    }
}
