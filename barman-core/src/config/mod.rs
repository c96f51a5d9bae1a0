//! Barman's configuration: the same INI files, read the way Barman 3 reads them.
//!
//! A site switching from Barman must not touch its configuration, so this module follows
//! `barman/config.py` (Barman 3.17) rule by rule, and says so where it deliberately does not.
//!
//! # Files
//!
//! [`locate_main_file`] picks the main file: `-c FILE`, else the first of `~/.barman.conf`,
//! `/etc/barman.conf`, `/etc/barman/barman.conf` that exists. [`Config::load`] reads it, then
//! every `*.conf` of `configuration_files_directory` in sorted order (hidden files excluded, as
//! Python's glob does), then `<barman_home>/.barman.auto.conf` if present. Included files may
//! define servers, but a `[barman]` section in them that changes anything is fatal.
//!
//! # Syntax and interpolation
//!
//! [`ini`] reads Python-`configparser` syntax and keeps the line of every key — the reason this
//! is our own small parser rather than the `configparser` crate, which cannot say where a value
//! came from. [`interpolate`] implements `%(name)s`. Barman's layering gives two passes, which
//! we reproduce:
//!
//! 1. when a file is merged, each of its values is interpolated against its own section and
//!    that file's `[DEFAULT]` (which is otherwise only a source of keys for the sections of the
//!    same file);
//! 2. when a server reads an option, the value is interpolated again, against the server's
//!    already computed options (`name`, `barman_home`, `backup_directory`, ...) then its section.
//!
//! So `%(name)s` resolves where Barman resolves it; a reference nobody defines, or a stray `%`,
//! is a [`ConfigError`] with `file:line`, because Barman stops there too.
//!
//! # Servers, scopes, defaults
//!
//! Every section except `[barman]` is a server (or a *model*, when it says `model = true`, which
//! must name its `cluster`).
//! [`options`] lists every option with its scope and default; [`server`] explains the lookup
//! order (server section, then `[barman]`, then default) and the checks Barman makes from
//! configuration alone. `all` is refused as a server name.
//!
//! # Errors and warnings
//!
//! Barman ignores a bad option value with a warning and carries on with the inherited or
//! default value, and reports a server's configuration problems through `barman check` while
//! other servers keep working. We do the same: such problems are [`ConfigWarning`]s (with
//! `file:line`) and [`ServerConfig::messages`]; a [`ConfigError`] is returned only where Barman
//! exits.
//!
//! # Deliberate differences from Barman
//!
//! - An empty directory option (`wals_directory =`) is refused with a warning and the default
//!   used; Barman would build paths such as `None/base`.
//! - When a later option interpolates a typed one (`%(archiver)s`), Barman substitutes Python's
//!   `str()` of the parsed value; we do that for booleans and integers, and use the written text
//!   for the rest (timedeltas, sets).
//! - A section repeated across files merges (later keys win) exactly as in Barman; we add a
//!   [`ConfigWarning::SectionRepeated`] naming both places so it does not go unnoticed.
//! - Files must be UTF-8; Python would use the locale's encoding.
//!
//!
//! # Models and `config-update`
//!
//! [`models`]: a server's `<backup_directory>/.active-model.auto` names the model whose
//! options replace the server's at every load (`config-switch`). [`changes`]: `config-update`'s
//! JSON requests, Barman's changes queue and the `.barman.auto.conf` they are written to.

pub mod changes;
pub mod global;
pub mod ini;
pub mod interpolate;
pub mod models;
pub mod options;
pub mod server;
pub mod values;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

pub use global::GlobalSettings;
pub use ini::Location;
pub use interpolate::InterpolationProblem;
pub use server::{ServerConfig, Source};
pub use values::{
    BackupCompression, BackupCompressionFormat, BackupCompressionLocation, BackupMethod, BackupOptions,
    CombineMode, Compression, CompressionLevel, CreateSlot, Encryption, IntervalUnit, RecoveryOptions,
    RetentionPolicy, ReuseBackup, StagingLocation, TimeInterval, WindowUnit,
};

/// Where Barman looks for its main file when `-c` is not given, in order.
pub const DEFAULT_LOCATIONS: [&str; 3] = ["~/.barman.conf", "/etc/barman.conf", "/etc/barman/barman.conf"];

/// Section names that cannot be servers (Barman's `FORBIDDEN_SERVER_NAMES`).
pub const RESERVED_SERVER_NAMES: [&str; 1] = ["all"];

/// A configuration problem Barman would stop on. Every variant says where.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `-c FILE` names nothing.
    #[error("configuration file '{}' does not exist", path.display())]
    NotFound {
        /// The path as given.
        path: PathBuf,
    },
    /// No `-c` and none of the default locations exists.
    #[error("could not find any configuration file at the default locations ({})", candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NoDefaultFile {
        /// The paths tried, in order.
        candidates: Vec<PathBuf>,
    },
    /// A file exists but cannot be read.
    #[error("cannot read configuration file '{}'", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// A file is not UTF-8.
    #[error("{location}: not valid UTF-8")]
    NotUtf8 {
        /// The first line holding invalid bytes.
        location: Location,
    },
    /// An option line before any `[section]`.
    #[error("{location}: no [section] header before this line: {text:?}")]
    MissingSectionHeader {
        /// The line.
        location: Location,
        /// Its text.
        text: String,
    },
    /// A line that is neither a header, an option nor a comment.
    #[error("{location}: cannot parse {text:?}: expected {expected}")]
    Syntax {
        /// The line.
        location: Location,
        /// Its text.
        text: String,
        /// What would have been valid.
        expected: &'static str,
    },
    /// `%(...)s` or `%` misuse in a value.
    #[error("{location}: cannot interpolate '{key}' in [{section}]: {problem}")]
    Interpolation {
        /// The key's line.
        location: Location,
        /// The section being read.
        section: String,
        /// The key.
        key: String,
        /// What is wrong.
        problem: InterpolationProblem,
    },
    /// The main file has no `[barman]` section.
    #[error("{}: no [barman] section (it holds the global settings and is required)", path.display())]
    NoBarmanSection {
        /// The main file.
        path: PathBuf,
    },
    /// `[barman]` lacks `barman_home`.
    #[error("{}: parameter \"barman_home\" is required in [barman] section", path.display())]
    MissingBarmanHome {
        /// The main file.
        path: PathBuf,
    },
    /// An included file changes `[barman]`.
    #[error("{location}: the configuration file contains a not empty [barman] section; global settings belong in the main file")]
    GlobalSectionInInclude {
        /// The included file's `[barman]` header.
        location: Location,
    },
    /// A reserved word used as a server name.
    #[error("{location}: the reserved word '{name}' is not allowed as server name; please rename it")]
    ReservedServerName {
        /// The header.
        location: Location,
        /// The name.
        name: String,
    },
    /// A model section without `cluster` (Barman: 'Parameter "cluster" is required', then exit).
    #[error("{location}: parameter \"cluster\" is required in [{section}] section (a model names the cluster of the servers it applies to)")]
    ModelWithoutCluster {
        /// The model's header.
        location: Location,
        /// The model.
        section: String,
    },
    /// A value Barman cannot proceed without parsing (`lock_directory_cleanup`, `model`).
    #[error("{location}: invalid value {value:?} for '{key}': {reason}")]
    InvalidValue {
        /// The key's line.
        location: Location,
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// What was expected.
        reason: String,
    },
}

/// Something wrong that Barman tolerates: reported, then ignored or worked around.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigWarning {
    /// A key Barman does not know in this section (Barman: 'Invalid configuration option').
    UnknownOption {
        /// Where.
        location: Location,
        /// Section name.
        section: String,
        /// The key.
        key: String,
    },
    /// A value its parser refused; the inherited or default value is used instead.
    InvalidValue {
        /// Where (`None` for a default that did not parse, which would be our bug).
        location: Option<Location>,
        /// The section the value came from.
        section: String,
        /// The key.
        key: String,
        /// The value after interpolation.
        value: String,
        /// What was expected.
        reason: String,
    },
    /// `configuration_files_directory` is not a directory; no file is included.
    NotADirectory {
        /// The option's line.
        location: Location,
        /// The path as written.
        path: PathBuf,
    },
    /// A `*.conf` entry that is not a regular file.
    DiscardedFile {
        /// The entry.
        path: PathBuf,
    },
    /// A section opened again (same file or a later one); keys merge, later values win.
    SectionRepeated {
        /// Section name.
        section: String,
        /// Its first header.
        first: Location,
        /// The later header.
        again: Location,
    },
    /// A per-server observation Barman logs as a warning (fallbacks, forced archiver).
    Server {
        /// The server.
        server: String,
        /// What happened.
        message: String,
    },
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigWarning::UnknownOption { location, section, key } => {
                write!(f, "{location}: unknown option '{key}' in [{section}] is ignored")
            }
            ConfigWarning::InvalidValue { location, section, key, value, reason } => {
                if let Some(location) = location {
                    write!(f, "{location}: ")?;
                }
                write!(f, "invalid value {value:?} for '{key}' in [{section}] is ignored: {reason}")
            }
            ConfigWarning::NotADirectory { location, path } => write!(
                f,
                "{location}: ignoring configuration_files_directory '{}': not a directory",
                path.display()
            ),
            ConfigWarning::DiscardedFile { path } => {
                write!(f, "discarding configuration file '{}': not a regular file", path.display())
            }
            ConfigWarning::SectionRepeated { section, first, again } => write!(
                f,
                "{again}: section [{section}] was already opened at {first}; its options are merged, later values win"
            ),
            ConfigWarning::Server { server, message } => write!(f, "server '{server}': {message}"),
        }
    }
}

/// A server's name: a section header of the configuration, case-sensitive, never `barman` or `all`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerName(String);

impl ServerName {
    /// The name as written in its header.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for ServerName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// A model section (`model = true`): named overrides a server may switch to ([`models`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Section name.
    pub name: String,
    /// Its `cluster` (required; `None` when written empty or `None`, as Barman reads it).
    pub cluster: Option<String>,
    /// Keys and values as written (after interpolation), with locations.
    pub options: Vec<(String, String, Location)>,
    /// The typed values it puts in place of a server's, by option name.
    pub(crate) overrides: Vec<models::Override>,
}

/// The whole configuration, loaded and typed.
#[derive(Debug, Clone)]
pub struct Config {
    /// The main file.
    pub main_file: PathBuf,
    /// Every file read, in order (main first).
    pub files: Vec<PathBuf>,
    /// `[barman]`.
    pub global: GlobalSettings,
    /// Servers by name.
    pub servers: BTreeMap<ServerName, ServerConfig>,
    /// Model sections by name.
    pub models: BTreeMap<String, ModelConfig>,
    /// Every section but `[barman]` as merged from all files: key, value after the per-file
    /// interpolation pass, location. What `config-update` reports as an option's old value.
    pub sections: BTreeMap<String, Vec<(String, String, Location)>>,
    /// Directories shared by two servers (Barman's `servers_msg_list`); shown by `check`.
    pub path_conflicts: Vec<String>,
    /// Everything tolerated but worth telling, in discovery order.
    pub warnings: Vec<ConfigWarning>,
}

/// The file-system operations loading needs, so that tests and the fuzzer can load from memory.
pub trait ConfigFs {
    /// Reads a whole file.
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>>;
    /// Whether `path` exists (any kind).
    fn exists(&self, path: &Path) -> bool;
    /// Whether `path` is a regular file (following symlinks).
    fn is_file(&self, path: &Path) -> bool;
    /// Whether `path` is a directory (following symlinks).
    fn is_dir(&self, path: &Path) -> bool;
    /// Non-hidden entries of `dir` whose name ends in `.conf`, any kind.
    fn conf_entries(&self, dir: &Path) -> Vec<PathBuf>;
    /// Python's `os.path.realpath`: symlinks resolved where the path exists.
    fn real_path(&self, path: &Path) -> PathBuf;
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFs;

impl ConfigFs for RealFs {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn is_file(&self, path: &Path) -> bool {
        path.is_file()
    }
    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }
    fn conf_entries(&self, dir: &Path) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| is_conf_name(p))
            .collect()
    }
    fn real_path(&self, path: &Path) -> PathBuf {
        // Canonicalize the longest existing prefix, keep the rest lexically normalized.
        let normal = normalize(path);
        let mut existing = normal.as_path();
        let mut rest = Vec::new();
        loop {
            if let Ok(real) = std::fs::canonicalize(existing) {
                let mut out = real;
                out.extend(rest.iter().rev());
                return out;
            }
            match (existing.parent(), existing.file_name()) {
                (Some(parent), Some(name)) => {
                    rest.push(name.to_owned());
                    existing = parent;
                }
                _ => return normal,
            }
        }
    }
}

fn is_conf_name(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".conf") && !n.starts_with('.'))
}

/// Removes `.` and resolves `..` lexically, as `os.path.normpath` does.
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// An in-memory file system: regular files only, directories implied by their paths.
#[derive(Debug, Clone, Default)]
pub struct MemoryFs {
    files: BTreeMap<PathBuf, Vec<u8>>,
}

impl MemoryFs {
    /// An empty file system.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a file.
    pub fn add(&mut self, path: impl Into<PathBuf>, content: impl Into<Vec<u8>>) -> &mut Self {
        self.files.insert(path.into(), content.into());
        self
    }
}

impl ConfigFs for MemoryFs {
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        self.files.get(path).cloned().ok_or_else(|| std::io::ErrorKind::NotFound.into())
    }
    fn exists(&self, path: &Path) -> bool {
        self.is_file(path) || self.is_dir(path)
    }
    fn is_file(&self, path: &Path) -> bool {
        self.files.contains_key(path)
    }
    fn is_dir(&self, path: &Path) -> bool {
        self.files.keys().any(|p| p.starts_with(path) && p != path)
    }
    fn conf_entries(&self, dir: &Path) -> Vec<PathBuf> {
        self.files
            .keys()
            .filter(|p| p.parent() == Some(dir) && is_conf_name(p))
            .cloned()
            .collect()
    }
    fn real_path(&self, path: &Path) -> PathBuf {
        normalize(path)
    }
}

/// Expands a leading `~` or `~/` with `home`, like Python's `os.path.expanduser`.
pub fn expand_user(path: &Path, home: Option<&Path>) -> PathBuf {
    match (path.strip_prefix("~"), home) {
        (Ok(rest), Some(home)) => home.join(rest),
        _ => path.to_path_buf(),
    }
}

/// Picks the main configuration file.
///
/// With `explicit` (`-c FILE`) that file must exist. Otherwise the first existing regular file of
/// `candidates` wins (`~` expanded with `home`); pass [`DEFAULT_LOCATIONS`] for Barman's list.
pub fn locate_main_file(
    fs: &dyn ConfigFs,
    explicit: Option<&Path>,
    candidates: &[&str],
    home: Option<&Path>,
) -> Result<PathBuf, ConfigError> {
    if let Some(path) = explicit {
        let expanded = expand_user(path, home);
        return if fs.exists(&expanded) {
            Ok(expanded)
        } else {
            Err(ConfigError::NotFound { path: path.to_path_buf() })
        };
    }
    let expanded: Vec<PathBuf> = candidates.iter().map(|c| expand_user(Path::new(c), home)).collect();
    expanded
        .iter()
        .find(|p| fs.is_file(p))
        .cloned()
        .ok_or(ConfigError::NoDefaultFile { candidates: expanded })
}

/// One merged option: key, value after the per-file interpolation pass, where it was written.
type MergedOption = (String, String, Location);

/// The merged sections of every file read so far (Barman's `ConfigMapping`).
#[derive(Default)]
struct Store {
    /// (name, first header, entries).
    sections: Vec<(String, Location, Vec<MergedOption>)>,
}

impl Store {
    fn section(&self, name: &str) -> Option<&[(String, String, Location)]> {
        self.sections.iter().find(|s| s.0 == name).map(|s| s.2.as_slice())
    }
}

/// Loads the main file at `path` and everything it includes, from the real file system.
impl Config {
    /// Reads the configuration starting from `main` (see [`locate_main_file`]); `~` in
    /// `configuration_files_directory` expands with `$HOME`.
    pub fn load(main: &Path) -> Result<Config, ConfigError> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        Config::load_with(&RealFs, main, home.as_deref())
    }

    /// [`Config::load`] over any [`ConfigFs`], with an explicit home directory.
    pub fn load_with(fs: &dyn ConfigFs, main: &Path, home: Option<&Path>) -> Result<Config, ConfigError> {
        Loader { fs, home, store: Store::default(), files: Vec::new(), warnings: Vec::new() }.run(main)
    }

    /// The configuration of server `name`.
    pub fn server(&self, name: &str) -> Option<&ServerConfig> {
        self.servers.get(name)
    }

    /// The model called `name`.
    pub fn model(&self, name: &str) -> Option<&ModelConfig> {
        self.models.get(name)
    }

    /// Barman's `Config.get(section, key)`: the value a section sets for `key` (not inherited
    /// from `[barman]`), quotes stripped; `None` when unset, empty or the literal `None`.
    pub fn section_value(&self, section: &str, key: &str) -> Option<String> {
        let entries = self.sections.get(section)?;
        let (_, raw, _) = entries.iter().find(|e| e.0 == key)?;
        let lookup = |n: &str| entries.iter().find(|e| e.0 == n).map(|e| e.1.as_str());
        let text = interpolate::interpolate(raw, &lookup).unwrap_or_else(|_| raw.clone());
        let text = server::strip_quotes(&text);
        (!text.is_empty() && text != "None").then(|| text.to_owned())
    }

    /// `<barman_home>/.barman.auto.conf`, the file `config-update` writes and every load reads
    /// last.
    pub fn auto_conf_path(&self) -> PathBuf {
        auto_conf_path(&self.global.barman_home.display().to_string())
    }
}

/// `<barman_home>/.barman.auto.conf` as Barman's `global_config` builds it (no `~` expansion).
fn auto_conf_path(barman_home: &str) -> PathBuf {
    PathBuf::from(format!("{barman_home}/.barman.auto.conf"))
}

struct Loader<'a> {
    fs: &'a dyn ConfigFs,
    home: Option<&'a Path>,
    store: Store,
    files: Vec<PathBuf>,
    warnings: Vec<ConfigWarning>,
}

impl Loader<'_> {
    fn run(mut self, main: &Path) -> Result<Config, ConfigError> {
        self.read_file(main)?;
        if self.store.section("barman").is_none() {
            return Err(ConfigError::NoBarmanSection { path: main.to_path_buf() });
        }
        let mut global_snapshot = self.global_items()?;

        let get_global = |store: &Store, key: &str| -> Option<(String, Location)> {
            let (_, value, location) = store.section("barman")?.iter().find(|e| e.0 == key)?;
            if value == "None" {
                return None;
            }
            Some((server::strip_quotes(value).to_owned(), location.clone()))
        };

        if let Some((dir, location)) = get_global(&self.store, "configuration_files_directory") {
            if !dir.is_empty() {
                let expanded = expand_user(Path::new(&dir), self.home);
                if self.fs.is_dir(&expanded) {
                    let mut entries = self.fs.conf_entries(&expanded);
                    entries.sort();
                    for entry in entries {
                        global_snapshot = self.include(&entry, global_snapshot)?;
                    }
                } else {
                    self.warnings.push(ConfigWarning::NotADirectory { location, path: PathBuf::from(dir) });
                }
            }
        }
        let home_text = get_global(&self.store, "barman_home").map(|(h, _)| h);
        let auto = auto_conf_path(home_text.as_deref().unwrap_or("None"));
        if self.fs.exists(&auto) {
            self.include(&auto, global_snapshot)?;
        }

        // validate_global_config
        let barman = self.store.section("barman").unwrap_or_default().to_vec();
        if !barman.iter().any(|e| e.0 == "barman_home") {
            return Err(ConfigError::MissingBarmanHome { path: main.to_path_buf() });
        }
        for (key, _, location) in &barman {
            if !options::allowed_in_global(key) {
                self.warnings.push(ConfigWarning::UnknownOption {
                    location: location.clone(),
                    section: "barman".to_owned(),
                    key: key.clone(),
                });
            }
        }
        let global = self.global_settings(&barman, home_text)?;

        let mut servers = BTreeMap::new();
        let mut models = BTreeMap::new();
        let sections = std::mem::take(&mut self.store.sections);
        // Models first: a server applies its active model whichever section comes first.
        let mut server_sections = Vec::new();
        for (name, header, entries) in &sections {
            if name == "barman" {
                continue;
            }
            if RESERVED_SERVER_NAMES.contains(&name.as_str()) {
                return Err(ConfigError::ReservedServerName { location: header.clone(), name: name.clone() });
            }
            // Barman's items(section): every value must interpolate against the section alone.
            for (key, value, location) in entries {
                let lookup = |n: &str| entries.iter().find(|e| e.0 == n).map(|e| e.1.as_str());
                interpolate::interpolate(value, &lookup).map_err(|problem| ConfigError::Interpolation {
                    location: location.clone(),
                    section: name.clone(),
                    key: key.clone(),
                    problem,
                })?;
            }
            if let Some((_, value, location)) = entries.iter().find(|e| e.0 == "model") {
                let is_model = values::parse_bool(value).map_err(|reason| ConfigError::InvalidValue {
                    location: location.clone(),
                    key: "model".to_owned(),
                    value: value.clone(),
                    reason,
                })?;
                if is_model {
                    self.unknown_keys(name, entries, options::allowed_in_model);
                    if !entries.iter().any(|e| e.0 == "cluster") {
                        return Err(ConfigError::ModelWithoutCluster { location: header.clone(), section: name.clone() });
                    }
                    models.insert(name.clone(), models::build_model(name, entries, &mut self.warnings));
                    continue;
                }
            }
            server_sections.push((name, entries));
        }
        for (name, entries) in server_sections {
            self.unknown_keys(name, entries, options::allowed_in_server);
            let mut vars = HashMap::new();
            vars.insert("name".to_owned(), name.clone());
            vars.insert("barman_home".to_owned(), global.barman_home.display().to_string());
            vars.insert("barman_lock_directory".to_owned(), global.barman_lock_directory.display().to_string());
            vars.insert("config_changes_queue".to_owned(), global.config_changes_queue.display().to_string());
            vars.insert(
                "lock_directory_cleanup".to_owned(),
                if global.lock_directory_cleanup { "True" } else { "False" }.to_owned(),
            );
            let lookup = server::Lookup { section: entries, global: &barman, vars };
            let mut settings = server::resolve(name, lookup, &mut self.warnings).map_err(|f| {
                ConfigError::Interpolation { location: f.location, section: f.section, key: f.key, problem: f.problem }
            })?;
            let active = models::find_active(self.fs, name, &settings, &models);
            if let models::Active::Model(model) = active {
                models::apply(&mut settings, model);
            }
            let mut cfg = ServerConfig::from_settings(name, settings, &mut self.warnings);
            match active {
                models::Active::None => {}
                models::Active::Model(model) => cfg.active_model = Some(model.name.clone()),
                models::Active::Refused(message) => cfg.disable_with(message),
            }
            servers.insert(ServerName(name.clone()), cfg);
        }
        let path_conflicts = check_conflicting_paths(self.fs, &mut servers);

        Ok(Config {
            main_file: main.to_path_buf(),
            files: self.files,
            global,
            servers,
            models,
            sections: sections.into_iter().filter(|s| s.0 != "barman").map(|(name, _, entries)| (name, entries)).collect(),
            path_conflicts,
            warnings: self.warnings,
        })
    }

    fn unknown_keys(&mut self, section: &str, entries: &[(String, String, Location)], allowed: fn(&str) -> bool) {
        for (key, _, location) in entries {
            if !allowed(key) {
                self.warnings.push(ConfigWarning::UnknownOption {
                    location: location.clone(),
                    section: section.to_owned(),
                    key: key.clone(),
                });
            }
        }
    }

    /// Reads one file and merges it (Barman's `ConfigMapping.read_config`).
    fn read_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let bytes = self.fs.read(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let line = good.iter().filter(|b| **b == b'\n').count() + 1;
            ConfigError::NotUtf8 { location: Location::new(path, u32::try_from(line).unwrap_or(u32::MAX)) }
        })?;
        let doc = ini::parse(path, &text)?;
        self.files.push(path.to_path_buf());
        self.merge(&doc)
    }

    fn merge(&mut self, doc: &ini::IniDocument) -> Result<(), ConfigError> {
        for section in &doc.sections {
            // Section keys first, then [DEFAULT] keys the section does not set.
            let mut entries: Vec<&ini::IniEntry> = section.entries.iter().collect();
            entries.extend(doc.defaults.iter().filter(|d| section.get(&d.key).is_none()));
            let visible = |name: &str| -> Option<&str> {
                section
                    .get(name)
                    .or_else(|| doc.defaults.iter().find(|d| d.key == name))
                    .map(|e| e.value.as_str())
            };
            let mut merged = Vec::new();
            for entry in entries {
                let location = doc.location(entry.line);
                let fail = |problem| ConfigError::Interpolation {
                    location: location.clone(),
                    section: section.name.clone(),
                    key: entry.key.clone(),
                    problem,
                };
                let value = interpolate::interpolate(&entry.value, &visible).map_err(fail)?;
                interpolate::check_set(&value).map_err(fail)?;
                merged.push((entry.key.clone(), value, location));
            }
            let first_header = doc.location(section.header_lines[0]);
            for again in &section.header_lines[1..] {
                self.warnings.push(ConfigWarning::SectionRepeated {
                    section: section.name.clone(),
                    first: first_header.clone(),
                    again: doc.location(*again),
                });
            }
            match self.store.sections.iter_mut().find(|s| s.0 == section.name) {
                Some((_, first, existing)) => {
                    // Repeating `[barman]` in an include is checked separately (it must not
                    // change anything); repeating a server is worth a word.
                    if section.name != "barman" {
                        self.warnings.push(ConfigWarning::SectionRepeated {
                        section: section.name.clone(),
                        first: first.clone(),
                        again: first_header,
                        });
                    }
                    for (key, value, location) in merged {
                        match existing.iter_mut().find(|e| e.0 == key) {
                            Some(e) => *e = (key, value, location),
                            None => existing.push((key, value, location)),
                        }
                    }
                }
                None => self.store.sections.push((section.name.clone(), first_header, merged)),
            }
        }
        Ok(())
    }

    /// `[barman]` as Barman's `items("barman")` sees it: interpolated against itself.
    fn global_items(&self) -> Result<Vec<(String, String)>, ConfigError> {
        let entries = self.store.section("barman").unwrap_or_default();
        let lookup = |n: &str| entries.iter().find(|e| e.0 == n).map(|e| e.1.as_str());
        entries
            .iter()
            .map(|(key, value, location)| {
                interpolate::interpolate(value, &lookup).map(|v| (key.clone(), v)).map_err(|problem| {
                    ConfigError::Interpolation {
                        location: location.clone(),
                        section: "barman".to_owned(),
                        key: key.clone(),
                        problem,
                    }
                })
            })
            .collect()
    }

    /// Barman's `load_config_file`: include one file; it must leave `[barman]` unchanged.
    fn include(&mut self, path: &Path, before: Vec<(String, String)>) -> Result<Vec<(String, String)>, ConfigError> {
        if !self.fs.is_file(path) {
            self.warnings.push(ConfigWarning::DiscardedFile { path: path.to_path_buf() });
            return Ok(before);
        }
        self.read_file(path)?;
        let after = self.global_items()?;
        let mut a = after.clone();
        let mut b = before;
        a.sort();
        a.dedup();
        b.sort();
        b.dedup();
        if a != b {
            let line = self
                .store
                .section("barman")
                .and_then(|s| s.iter().find(|e| e.2.path == path))
                .map_or(1, |e| e.2.line);
            return Err(ConfigError::GlobalSectionInInclude { location: Location::new(path, line) });
        }
        Ok(after)
    }

    fn global_settings(
        &self,
        barman: &[(String, String, Location)],
        home_text: Option<String>,
    ) -> Result<GlobalSettings, ConfigError> {
        let lookup = |n: &str| barman.iter().find(|e| e.0 == n).map(|e| e.1.as_str());
        let mut raw = Vec::new();
        for (key, value, location) in barman {
            let v = interpolate::interpolate(value, &lookup).map_err(|problem| ConfigError::Interpolation {
                location: location.clone(),
                section: "barman".to_owned(),
                key: key.clone(),
                problem,
            })?;
            raw.push((key.clone(), server::strip_quotes(&v).to_owned(), location.clone()));
        }
        // Barman's `get(...) or fallback`: absent, `None` and empty all take the fallback.
        let get = |key: &str| -> Option<(String, Location)> {
            raw.iter()
                .find(|e| e.0 == key && e.1 != "None" && !e.1.is_empty())
                .map(|e| (e.1.clone(), e.2.clone()))
        };
        let home = home_text.map(|h| server::strip_quotes(&h).to_owned()).unwrap_or_else(|| "None".to_owned());
        let lock_directory_cleanup = match get("lock_directory_cleanup") {
            None => true,
            Some((v, location)) => values::parse_bool(&v).map_err(|reason| ConfigError::InvalidValue {
                location,
                key: "lock_directory_cleanup".to_owned(),
                value: v,
                reason,
            })?,
        };
        let text = |key: &str| get(key).map(|(v, _)| v);
        Ok(GlobalSettings {
            barman_home: PathBuf::from(&home),
            barman_user: text("barman_user").unwrap_or_else(|| "barman".to_owned()),
            barman_lock_directory: PathBuf::from(text("barman_lock_directory").unwrap_or_else(|| home.clone())),
            lock_directory_cleanup,
            config_changes_queue: PathBuf::from(
                text("config_changes_queue").unwrap_or_else(|| format!("{home}/cfg_changes.queue")),
            ),
            configuration_files_directory: text("configuration_files_directory").map(PathBuf::from),
            log_file: text("log_file").map(PathBuf::from),
            log_format: text("log_format").unwrap_or_else(|| global::DEFAULT_LOG_FORMAT.to_owned()),
            log_level: text("log_level").unwrap_or_else(|| "INFO".to_owned()),
            raw,
        })
    }
}

/// Barman's `_check_conflicting_paths`: a directory used twice inside one server disables it; a
/// directory shared by two servers is reported globally. Returns the global messages.
fn check_conflicting_paths(fs: &dyn ConfigFs, servers: &mut BTreeMap<ServerName, ServerConfig>) -> Vec<String> {
    let mut seen: BTreeMap<PathBuf, (&'static str, String)> = BTreeMap::new();
    let mut global = Vec::new();
    for (name, cfg) in servers.iter_mut() {
        let mut paths = [
            ("backup_directory", cfg.backup_directory.clone()),
            ("basebackups_directory", cfg.basebackups_directory.clone()),
            ("errors_directory", cfg.errors_directory.clone()),
            ("incoming_wals_directory", cfg.incoming_wals_directory.clone()),
            ("streaming_wals_directory", cfg.streaming_wals_directory.clone()),
            ("wals_directory", cfg.wals_directory.clone()),
        ];
        paths.sort();
        for (label, path) in paths {
            let real = fs.real_path(&path);
            let shown = if real == path {
                format!("{label}={}", path.display())
            } else {
                format!("{label}={} (symlink to: {})", path.display(), real.display())
            };
            match seen.get(&real) {
                None => {
                    seen.insert(real, (label, name.0.clone()));
                }
                Some((other_label, other)) if *other == name.0 => {
                    let msg = format!("Conflicting path: {shown} conflicts with '{other_label}' for server '{other}'");
                    cfg.disable_with(msg);
                }
                Some((other_label, other)) => global.push(format!(
                    "Conflicting path: {shown} for server '{}' conflicts with '{other_label}' for server '{other}'",
                    name.0
                )),
            }
        }
    }
    global
}

#[cfg(test)]
mod tests;
