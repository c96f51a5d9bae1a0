//! Configuration models: named sets of overrides a server switches to (`barman config-switch`),
//! as Barman 3.19's `ModelConfig`, `ServerConfig.apply_model` and `Config._apply_models`.
//!
//! A model is a section with `model = true` and a `cluster`; it may set any server option except
//! the directories and hook scripts (Barman's `_KEYS_BLACKLIST`). Which model is active for a
//! server is not in the configuration files but in `<backup_directory>/.active-model.auto`,
//! whose whole content is the model's name (no newline), written by `config-switch` and removed
//! by `config-switch --reset`. Every configuration load reads that file and, when the model's
//! `cluster` equals the server's, replaces the server's values with the model's — before the
//! checks Barman's `Server.__init__` makes, so they judge the effective values, as in Barman.
//!
//! Barman applies the overrides to a server whose options are already computed, and we do it at
//! the same point: a server default derived from another option keeps the value computed from
//! the server's own settings (`streaming_conninfo`, when unset, stays the server's `conninfo`
//! even when the model changes `conninfo`). A model meant to move a server to a new primary
//! therefore sets both, as Barman's documentation does.
//!
//! A model value that is empty or `None` overrides nothing (Barman's `get_override_options`
//! yields only values that are not `None`), and a value its parser refuses is ignored with a
//! warning, like any other option.
//!
//! Deliberate difference: a server whose active model exists but belongs to another cluster
//! is **disabled** with Barman's message (`barman check` shows it, commands on it refuse).
//! Barman prints the error and carries on with the server's own settings; after a failover
//! those are the ones pointing at the old primary, which is the danger the active model was
//! there to avoid. A model that no longer exists disables the server, as in Barman.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::ini::Location;
use super::interpolate;
use super::options::{self, Value, SERVER_OPTIONS};
use super::server::{self, Setting, Source};
use super::values::Parsed;
use super::{ConfigFs, ConfigWarning, ModelConfig, ServerConfig};
use crate::storage::{self, StorageError, DIR_MODE, FILE_MODE};

/// The file in a server's `backup_directory` naming its active model.
pub const ACTIVE_MODEL_FILE: &str = ".active-model.auto";

/// Where `server`'s active model is recorded.
pub fn active_model_path(server: &ServerConfig) -> PathBuf {
    server.backup_directory.join(ACTIVE_MODEL_FILE)
}

/// One option a model overrides: the typed value and where the model writes it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Override {
    pub(crate) key: &'static str,
    pub(crate) value: Value,
    pub(crate) location: Location,
}

/// A model cannot be applied to a server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// The model's `cluster` is not the server's (Barman's text).
    #[error("Model '{model}' has 'cluster={}', which is not compatible with 'cluster={}' from server '{server}'", py_str(.model_cluster), py_str(.server_cluster))]
    ClusterMismatch {
        /// The model.
        model: String,
        /// Its `cluster`.
        model_cluster: Option<String>,
        /// The server.
        server: String,
        /// The server's `cluster`.
        server_cluster: Option<String>,
    },
}

fn py_str(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("None")
}

/// What `config-switch SERVER MODEL` is about to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    /// The model is already the server's active one: nothing to write.
    AlreadyActive,
    /// The model becomes the active one.
    Apply,
}

impl ModelConfig {
    /// The options this model overrides, by name (what `config-switch` reports on).
    pub fn override_keys(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.overrides.iter().map(|o| o.key)
    }

    /// Whether `server` may switch to this model (Barman's `apply_model` tests, in its order).
    pub fn check_switch(&self, server: &ServerConfig) -> Result<Switch, ModelError> {
        if self.cluster != server.cluster {
            return Err(ModelError::ClusterMismatch {
                model: self.name.clone(),
                model_cluster: self.cluster.clone(),
                server: server.name.clone(),
                server_cluster: server.cluster.clone(),
            });
        }
        if server.active_model.as_deref() == Some(self.name.as_str()) {
            return Ok(Switch::AlreadyActive);
        }
        Ok(Switch::Apply)
    }
}

/// Records `model` as `server`'s active model, durably, mode 0600 (the content is the bare
/// name, as Barman writes it). Creates `backup_directory` if the server never ran.
pub fn write_active_model(server: &ServerConfig, model: &str) -> Result<(), StorageError> {
    storage::create_dir_all_durable(&server.backup_directory, DIR_MODE)?;
    storage::atomic_write(&active_model_path(server), model.as_bytes(), FILE_MODE)
}

/// Forgets `server`'s active model, durably; `false` when none was recorded.
pub fn remove_active_model(server: &ServerConfig) -> Result<bool, StorageError> {
    let path = active_model_path(server);
    if !storage::fs::exists(&path)? {
        return Ok(false);
    }
    storage::fs::remove_file_if_exists(&path)?;
    storage::fsync_dir(&server.backup_directory)?;
    Ok(true)
}

/// Builds a model from its merged section: `cluster` and the typed overrides, warnings for
/// values that do not parse (the key checks were made by the loader).
pub(crate) fn build_model(
    name: &str,
    entries: &[(String, String, Location)],
    warnings: &mut Vec<ConfigWarning>,
) -> ModelConfig {
    let mut cluster = None;
    let mut overrides = Vec::new();
    for (key, _, location) in entries {
        let Some(text) = read(name, entries, key) else { continue };
        if key == "cluster" {
            cluster = Some(text);
            continue;
        }
        // `model` is not an override; a fixed key (`disabled`) is not settable anywhere.
        let Some(spec) = SERVER_OPTIONS.iter().find(|o| o.name == key) else { continue };
        if spec.fixed || !options::allowed_in_model(key) {
            continue;
        }
        match spec.kind.parse(&text) {
            Ok(Parsed::Value(value)) => overrides.push(Override { key: spec.name, value, location: location.clone() }),
            Ok(Parsed::Unset | Parsed::Inherit) => {}
            Err(reason) => warnings.push(ConfigWarning::InvalidValue {
                location: Some(location.clone()),
                section: name.to_owned(),
                key: key.clone(),
                value: text,
                reason,
            }),
        }
    }
    overrides.sort_by_key(|o| o.key);
    ModelConfig { name: name.to_owned(), cluster, options: entries.to_vec(), overrides }
}

/// Barman's `Config.get` for a model option: interpolated (`%(name)s` is the model's name),
/// one pair of quotes stripped; `None` for an empty value or the literal `None`.
fn read(model: &str, entries: &[(String, String, Location)], key: &str) -> Option<String> {
    let (_, raw, _) = entries.iter().find(|e| e.0 == key)?;
    let lookup = |n: &str| -> Option<&str> {
        if n == "name" {
            return Some(model);
        }
        entries.iter().find(|e| e.0 == n).map(|e| e.1.as_str())
    };
    // The loader already refused sections whose values do not interpolate.
    let text = interpolate::interpolate(raw, &lookup).unwrap_or_else(|_| raw.clone());
    let text = server::strip_quotes(&text);
    (!text.is_empty() && text != "None").then(|| text.to_owned())
}

/// The outcome of reading a server's `.active-model.auto` at load.
pub(crate) enum Active<'m> {
    /// No file, or an empty one: the server's own settings.
    None,
    /// A model of the server's cluster: apply it.
    Model(&'m ModelConfig),
    /// The server cannot run as configured: disable it with this message.
    Refused(String),
}

/// Reads the active model of the server whose settings are `settings` (Barman's
/// `_apply_models` for one server).
pub(crate) fn find_active<'m>(
    fs: &dyn ConfigFs,
    server: &str,
    settings: &BTreeMap<&'static str, Setting>,
    models: &'m BTreeMap<String, ModelConfig>,
) -> Active<'m> {
    let text = |key: &str| match settings.get(key).and_then(|s| s.value.as_ref()) {
        Some(Value::Text(t)) => Some(t.clone()),
        _ => None,
    };
    let Some(dir) = text("backup_directory") else { return Active::None };
    let path = Path::new(&dir).join(ACTIVE_MODEL_FILE);
    let name = match fs.read(&path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        // A backup_directory that does not exist (or cannot: a file in its path) records nothing;
        // the directory checks report it.
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => {
            return Active::None
        }
        Err(e) => {
            return Active::Refused(format!(
                "Cannot read the active model of server '{server}' from {}: {e}",
                path.display()
            ))
        }
    };
    if name.is_empty() {
        return Active::None;
    }
    let Some(model) = models.get(&name) else {
        return Active::Refused(format!(
            "Model '{name}' is set as the active model for the server '{server}' but the model does not exist."
        ));
    };
    let server_cluster = text("cluster");
    if model.cluster != server_cluster {
        let e = ModelError::ClusterMismatch {
            model: name,
            model_cluster: model.cluster.clone(),
            server: server.to_owned(),
            server_cluster,
        };
        return Active::Refused(e.to_string());
    }
    Active::Model(model)
}

/// Replaces the server's settings with `model`'s overrides (Barman's `setattr` loop).
pub(crate) fn apply(settings: &mut BTreeMap<&'static str, Setting>, model: &ModelConfig) {
    for o in &model.overrides {
        settings.insert(
            o.key,
            Setting {
                value: Some(o.value.clone()),
                source: Source::Model { model: model.name.clone(), location: o.location.clone() },
            },
        );
    }
}
