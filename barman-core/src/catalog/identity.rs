//! `<backup_directory>/identity.json`: which PostgreSQL cluster this server directory belongs
//! to, written once at first contact and checked by `check` ("systemid coherence").
//!
//! Barman (`Server.write_identity_file`) writes it with
//! `json.dump({...}, indent=4, sort_keys=True)` followed by `"\n"`:
//!
//! ```text
//! {
//!     "systemid": "7712085579849293106",
//!     "version": "15"
//! }
//! ```
//!
//! Both values are JSON *strings* (the system identifier as decimal digits, the major version
//! as `"15"`, or `"9.6"` before PostgreSQL 10). barman-rs reproduces Python's `json.dump`
//! formatting exactly ([`super::pyjson`]: four-space indent, `",\n"` separators, `": "`,
//! sorted keys, `ensure_ascii` escapes), keeps unknown keys for the round trip, and accepts a
//! numeric `systemid` on reading.

use std::collections::BTreeMap;
use std::path::Path;

use barman_replication::SystemId;
use serde_json::Value;

use super::pyjson::Json;
use super::CatalogError;
use crate::storage::{self, atomic_write, FILE_MODE};

/// The contents of identity.json.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerIdentity {
    /// The cluster's system identifier.
    pub systemid: SystemId,
    /// The PostgreSQL major version, as Barman spells it (`"15"`, `"9.6"`).
    pub version: String,
    /// Other keys, kept as found.
    pub extra: BTreeMap<String, Value>,
}

impl ServerIdentity {
    /// Parses the file's bytes; `path` is only used in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self, CatalogError> {
        let problem = |p: String| CatalogError::Identity { path: path.to_path_buf(), problem: p };
        let value: Value = serde_json::from_slice(bytes).map_err(|e| problem(e.to_string()))?;
        let Value::Object(map) = value else {
            return Err(problem("expected a JSON object".to_owned()));
        };
        let mut extra: BTreeMap<String, Value> = map.into_iter().collect();
        let systemid = match extra.remove("systemid") {
            Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                s.parse().ok()
            }
            Some(Value::Number(n)) => n.as_u64(),
            _ => None,
        }
        .ok_or_else(|| problem("\"systemid\" must be a string of decimal digits".to_owned()))?;
        let version = match extra.remove("version") {
            Some(Value::String(s)) => s,
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(problem("\"version\" must be a string like \"15\"".to_owned())),
        };
        Ok(ServerIdentity { systemid: SystemId(systemid), version, extra })
    }

    /// The file's bytes, as Python's `json.dump(indent=4, sort_keys=True)` plus a newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut map: BTreeMap<String, Value> = self.extra.clone();
        map.insert("systemid".into(), Value::String(self.systemid.to_string()));
        map.insert("version".into(), Value::String(self.version.clone()));
        // The map is sorted, and so are the objects inside the values (serde_json's map).
        let doc = Json::Object(map.iter().map(|(k, v)| (k.clone(), Json::from_value(v))).collect());
        let mut out = doc.dumps(Some(4));
        out.push('\n');
        out.into_bytes()
    }

    /// Reads identity.json; `None` when it does not exist yet.
    pub fn read(path: &Path) -> Result<Option<Self>, CatalogError> {
        match storage::fs::read_if_exists(path)? {
            Some(bytes) => Ok(Some(Self::parse(&bytes, path)?)),
            None => Ok(None),
        }
    }

    /// Writes identity.json atomically and durably.
    pub fn write(&self, path: &Path) -> Result<(), CatalogError> {
        atomic_write(path, &self.to_bytes(), FILE_MODE)?;
        Ok(())
    }

    /// Writes identity.json unless it exists — Barman never rewrites it. Returns whether it
    /// wrote.
    pub fn write_if_missing(&self, path: &Path) -> Result<bool, CatalogError> {
        if storage::fs::exists(path)? {
            return Ok(false);
        }
        self.write(path)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_round_trips_byte_for_byte() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/catalog/identity.json");
        let bytes = std::fs::read(&path).unwrap();
        let id = ServerIdentity::parse(&bytes, &path).unwrap();
        assert_eq!(id.systemid, SystemId(7712085579849293106));
        assert_eq!(id.version, "15");
        assert_eq!(id.to_bytes(), bytes);
        assert_eq!(bytes.len(), 63);
    }

    #[test]
    fn extra_keys_and_python_formatting() {
        let text = br#"{"version": "9.6", "zeta": [1, 2.5, {}], "alpha": {"b": null, "a": "caf\u00e9 \ud83d\ude00\u007f"}, "systemid": 42}"#;
        let id = ServerIdentity::parse(text, Path::new("identity.json")).unwrap();
        let out = String::from_utf8(id.to_bytes()).unwrap();
        let want = "{\n    \"alpha\": {\n        \"a\": \"caf\\u00e9 \\ud83d\\ude00\\u007f\",\n        \"b\": null\n    },\n    \"systemid\": \"42\",\n    \"version\": \"9.6\",\n    \"zeta\": [\n        1,\n        2.5,\n        {}\n    ]\n}\n";
        assert_eq!(out, want);
        assert_eq!(ServerIdentity::parse(out.as_bytes(), Path::new("x")).unwrap(), id);
    }

    #[test]
    fn bad_files_name_the_path() {
        for bad in [&b"{"[..], b"[]", b"{\"version\": \"15\"}", b"{\"systemid\": \"12a\", \"version\": \"15\"}",
            b"{\"systemid\": \"1\"}"] {
            let err = ServerIdentity::parse(bad, Path::new("/b/pg/identity.json")).unwrap_err();
            assert!(err.to_string().starts_with("/b/pg/identity.json: "), "{err}");
        }
    }

    #[test]
    fn write_if_missing_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.json");
        let a = ServerIdentity { systemid: SystemId(1), version: "15".into(), extra: BTreeMap::new() };
        let b = ServerIdentity { systemid: SystemId(2), ..a.clone() };
        assert!(ServerIdentity::read(&path).unwrap().is_none());
        assert!(a.write_if_missing(&path).unwrap());
        assert!(!b.write_if_missing(&path).unwrap());
        assert_eq!(ServerIdentity::read(&path).unwrap(), Some(a));
    }
}
