//! `barman diagnose`: one JSON document with the versions, the configuration and the live
//! facts of every server (Barman's `barman/diagnose.py`).
//!
//! Deliberate differences from Barman: passwords inside connection strings are redacted
//! (Barman prints them); `system_info` describes barman-rs (`barman_ver` is barman-rs'
//! version, `python_*` and `rsync_ver` are absent); each backup is the key/value pairs of its
//! backup.info with numbers and `None` typed, not Barman's full object rendering.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::catalog_view::CatalogView;
use super::facts::LiveFacts;
use super::status::{config_values, remote_values, ShowValue};
use crate::config::{Config, ServerConfig};

/// The facts of one server that diagnose reports.
#[derive(Debug, Clone)]
pub struct ServerDiagnosis<'a> {
    /// Its configuration.
    pub config: &'a ServerConfig,
    /// Live facts.
    pub live: LiveFacts,
    /// Catalog view.
    pub catalog: CatalogView,
}

/// Builds the diagnose document. `timestamp` is the ISO-8601 local time of the run.
pub fn diagnose(config: &Config, servers: &[ServerDiagnosis<'_>], version: &str, timestamp: &str) -> Value {
    let mut global = Map::new();
    for (k, v, _) in &config.global.raw {
        global.insert(k.clone(), Value::String(v.clone()));
    }
    let g = &config.global;
    let path = |p: &std::path::Path| Value::String(p.display().to_string());
    global.insert("barman_home".into(), path(&g.barman_home));
    global.insert("barman_lock_directory".into(), path(&g.barman_lock_directory));
    global.insert("barman_user".into(), Value::String(g.barman_user.clone()));
    global.insert("config_changes_queue".into(), path(&g.config_changes_queue));
    global.insert(
        "configuration_files_directory".into(),
        g.configuration_files_directory.as_deref().map_or(Value::Null, path),
    );
    global.insert("lock_directory_cleanup".into(), Value::Bool(g.lock_directory_cleanup));
    global.insert("log_file".into(), g.log_file.as_deref().map_or(Value::Null, path));
    global.insert("log_level".into(), Value::String(g.log_level.clone()));
    global.insert("errors_list".into(), json!(config.path_conflicts));

    let kernel = std::fs::read_to_string("/proc/version").map(|s| s.trim().to_owned()).unwrap_or_default();
    let release = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_owned())))
        .unwrap_or_default();
    let system_info = json!({
        "barman_ver": version,
        "kernel_ver": kernel,
        "release": release,
        "timestamp": timestamp,
    });

    let mut out_servers = Map::new();
    for s in servers {
        let cfg = s.config;
        let to_json = |m: BTreeMap<String, ShowValue>| -> Map<String, Value> { m.into_iter().map(|(k, v)| (k, v.to_json())).collect() };
        let mut status = to_json(remote_values(cfg, &s.live));
        // Barman's V2 encoder: decimals as numbers, datetimes ISO-8601, records as lists.
        for key in ["current_size", "current_archived_wals_per_second"] {
            if let Some(Value::String(t)) = status.get(key) {
                if let Ok(n) = t.parse::<f64>() {
                    status.insert(key.to_owned(), json!(n));
                }
            }
        }
        for (k, v) in status.iter_mut() {
            if k.ends_with("_time") || k == "stats_reset" {
                if let Value::String(t) = v {
                    *t = t.replacen(' ', "T", 1);
                }
            }
        }
        if let Some(slot) = s.live.postgres.as_ref().and_then(|p| p.replication_slot.as_ref()) {
            status.insert("replication_slot".into(), json!([slot.slot_name, slot.active, slot.restart_lsn]));
        }
        let backups: Map<String, Value> =
            s.catalog.backups.iter().map(|b| (b.id.clone(), backup_info_json(cfg, &b.id))).collect();
        let mut last_per_tli = Map::new();
        for e in &s.catalog.xlog {
            if e.name.len() == 24 && e.name.bytes().all(|b| b.is_ascii_hexdigit()) {
                last_per_tli.insert(
                    e.name[..8].to_owned(),
                    json!({"compression": e.compression, "encryption": null, "name": e.name, "size": e.size, "time": e.time}),
                );
            }
        }
        out_servers.insert(
            cfg.name.clone(),
            json!({
                "active_model": cfg.active_model,
                "backups": backups,
                "config": to_json(config_values(cfg)),
                "msg_list": cfg.messages,
                "status": status,
                "wals": {"last_archived_wal_per_timeline": last_per_tli},
            }),
        );
    }
    let models: Map<String, Value> = config
        .models
        .iter()
        .map(|(name, m)| {
            let options: Map<String, Value> = m.options.iter().map(|(k, v, _)| (k.clone(), Value::String(v.clone()))).collect();
            (name.clone(), json!({ "config": options }))
        })
        .collect();
    let mut doc = json!({
        "global": {"config": global, "system_info": system_info},
        "models": models,
        "servers": out_servers,
    });
    crate::output::redact_json(&mut doc);
    doc
}

/// A backup.info as JSON: integers and `None` typed, times ISO-8601, the rest text.
fn backup_info_json(cfg: &ServerConfig, id: &str) -> Value {
    let meta = cfg.backup_directory.join("meta").join(format!("{id}-backup.info"));
    let legacy = cfg.basebackups_directory.join(id).join("backup.info");
    let text = std::fs::read_to_string(&meta).or_else(|_| std::fs::read_to_string(&legacy)).unwrap_or_default();
    let mut m = Map::new();
    m.insert("backup_id".into(), Value::String(id.to_owned()));
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else { continue };
        let value = if v == "None" {
            Value::Null
        } else if let Ok(n) = v.parse::<i64>() {
            json!(n)
        } else if k.ends_with("_time") {
            Value::String(v.replacen(' ', "T", 1))
        } else {
            Value::String(v.to_owned())
        };
        m.insert(k.to_owned(), value);
    }
    Value::Object(m)
}
