//! Console, JSON and Nagios renderings of the diagnostics, after Barman's
//! `ConsoleOutputWriter`, `JsonOutputWriter` and `NagiosOutputWriter` (`barman/output.py`).
//!
//! Console functions return lines (without the newline); the caller prints them, applying
//! password redaction as Barman's console writer does. JSON functions return the value to
//! merge under the server's name.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::pretty_size;
use crate::diagnostics::checks::ServerCheck;
use crate::diagnostics::replication::{diff_lsn, ReplicationStatus, ReplicationTarget};
use crate::diagnostics::status::{ShowValue, StatusRow};

/// ANSI colours, on only when asked (`--color`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Colors {
    /// Whether to emit escape codes.
    pub enabled: bool,
}

impl Colors {
    fn paint(self, text: &str, code: &str) -> String {
        if self.enabled {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
    /// Green.
    pub fn green(self, t: &str) -> String {
        self.paint(t, "32")
    }
    /// Red.
    pub fn red(self, t: &str) -> String {
        self.paint(t, "31")
    }
    /// Yellow.
    pub fn yellow(self, t: &str) -> String {
        self.paint(t, "33")
    }
}

/// `Server <name>:` with Barman's suffix for inactive or disabled servers.
pub fn server_heading(name: &str, active: bool, disabled: bool) -> String {
    if !active {
        format!("Server {name} (inactive):")
    } else if disabled {
        format!("Server {name} (WARNING: disabled):")
    } else {
        format!("Server {name}:")
    }
}

/// The console lines of `check` for one server.
pub fn check_console(check: &ServerCheck, colors: Colors) -> Vec<String> {
    let mut lines = vec![server_heading(&check.server, check.active, check.disabled)];
    for r in &check.results {
        let word = if r.ok { colors.green("OK") } else { colors.red("FAILED") };
        match r.hint.as_deref().filter(|h| !h.is_empty()) {
            Some(h) => lines.push(format!("\t{}: {word} ({h})", r.name)),
            None => lines.push(format!("\t{}: {word}", r.name)),
        }
        lines.extend(r.details.iter().map(|d| format!("\t\t{d}")));
    }
    lines
}

/// Barman's `_mangle_key`: lower case, spaces and dashes to `_`, dots dropped.
pub fn mangle_key(name: &str) -> String {
    name.to_lowercase().replace([' ', '-'], "_").replace('.', "")
}

/// `{"<check_key>": {"hint": "...", "status": "OK|FAILED"}, …}` for one server.
pub fn check_json(check: &ServerCheck) -> Value {
    let mut m = Map::new();
    for r in &check.results {
        m.insert(
            mangle_key(&r.name),
            json!({"hint": r.hint.clone().unwrap_or_default(), "status": if r.ok { "OK" } else { "FAILED" }}),
        );
    }
    Value::Object(m)
}

/// The Nagios report of a `check --nagios` run and its exit status (0 OK, 2 CRITICAL).
///
/// `global_error` is set when something failed outside any server's checks (an unknown
/// server, configuration errors): Barman then prints only `BARMAN CRITICAL - Global
/// configuration errors`.
pub fn check_nagios(checks: &[ServerCheck], global_error: bool) -> (Vec<String>, u8) {
    let servers: Vec<&str> = checks.iter().map(|c| c.server.as_str()).collect();
    let issues: Vec<&ServerCheck> = checks.iter().filter(|c| c.failed()).collect();
    let error = global_error || checks.iter().any(ServerCheck::counts_as_failure);
    let mut perf = Vec::new();
    for c in checks {
        for r in &c.results {
            match (r.name.as_str(), r.perfdata) {
                ("backup minimum size", Some(n)) => perf.push(format!("{}={n}B", c.server)),
                ("wal size", Some(n)) => perf.push(format!("{}_wals={n}B", c.server)),
                _ => {}
            }
        }
    }
    let perf = if perf.is_empty() { String::new() } else { format!("|{}", perf.join(" ")) };
    if issues.is_empty() && error {
        return (vec!["BARMAN CRITICAL - Global configuration errors".to_owned()], 2);
    }
    if !issues.is_empty() && error {
        let summary: Vec<String> = issues
            .iter()
            .map(|c| {
                let failed: Vec<&str> = c.results.iter().filter(|r| !r.ok).map(|r| r.name.as_str()).collect();
                format!("{} FAILED: {}", c.server, failed.join(", "))
            })
            .collect();
        let first = if servers.len() == 1 {
            format!("BARMAN CRITICAL - server {} has issues * {}{perf}", servers[0], summary.join(" * "))
        } else {
            format!(
                "BARMAN CRITICAL - {} server out of {} have issues * {}{perf}",
                issues.len(),
                servers.len(),
                summary.join(" * ")
            )
        };
        let mut lines = vec![first];
        for c in &issues {
            for r in c.results.iter().filter(|r| !r.ok) {
                match r.hint.as_deref().filter(|h| !h.is_empty()) {
                    Some(h) => lines.push(format!("{}.{}: FAILED ({h})", c.server, r.name)),
                    None => lines.push(format!("{}.{}: FAILED", c.server, r.name)),
                }
            }
        }
        return (lines, 2);
    }
    let ignoring: String = issues.iter().map(|c| format!(" * IGNORING: {}", c.server)).collect();
    let good: Vec<&str> = servers.iter().copied().filter(|s| !issues.iter().any(|c| c.server == *s)).collect();
    let line = match good.len() {
        0 => format!("BARMAN OK - No server configured{ignoring}"),
        1 => format!("BARMAN OK - Ready to serve the Espresso backup for {}{ignoring}{perf}", good[0]),
        n => format!("BARMAN OK - Ready to serve the Espresso backup for {n} servers * {}{ignoring}{perf}", good.join(" * ")),
    };
    (vec![line], 0)
}

/// The console lines of `status` for one server.
pub fn status_console(server: &str, rows: &[StatusRow]) -> Vec<String> {
    let mut lines = vec![format!("Server {server}:")];
    lines.extend(rows.iter().map(|r| format!("\t{}: {}", r.description, r.message)));
    lines
}

/// `{"<key>": {"description": …, "message": …}}` for one server.
pub fn status_json(rows: &[StatusRow]) -> Value {
    let m: Map<String, Value> =
        rows.iter().map(|r| (r.key.to_owned(), json!({"description": r.description, "message": r.message}))).collect();
    Value::Object(m)
}

/// `show-servers`' heading suffix: `(inactive)`, `(WARNING: disabled)` or nothing.
pub fn show_suffix(active: bool, disabled: bool) -> Option<&'static str> {
    if !active {
        Some("(inactive)")
    } else if disabled {
        Some("(WARNING: disabled)")
    } else {
        None
    }
}

/// The console lines of `show-servers` for one server.
pub fn show_console(server: &str, suffix: Option<&str>, values: &BTreeMap<String, ShowValue>) -> Vec<String> {
    let heading = match suffix {
        Some(s) => format!("Server {server} {s}:"),
        None => format!("Server {server}:"),
    };
    let mut lines = vec![heading];
    lines.extend(values.iter().map(|(k, v)| format!("\t{k}: {}", v.python_str())));
    lines
}

/// The JSON object of `show-servers` for one server (a `null` never hides the heading's
/// description, as in Barman).
pub fn show_json(suffix: Option<&str>, values: &BTreeMap<String, ShowValue>) -> Value {
    let mut m = Map::new();
    m.insert("description".into(), suffix.map_or(Value::Null, |s| Value::String(s.to_owned())));
    for (k, v) in values {
        if matches!(v, ShowValue::None) && m.contains_key(k) {
            continue;
        }
        m.insert(k.clone(), v.to_json());
    }
    Value::Object(m)
}

fn sync_stage(c: &crate::diagnostics::replication::ReplicationClient) -> (&'static str, String) {
    let d = |l: &Option<String>| diff_lsn(l.as_deref(), c.current_lsn.as_deref());
    let (client_type, max) = if c.replay_lsn.is_none() { ("WAL streamer", 3) } else { ("standby", 5) };
    let stage = if c.replay_lsn.is_some() && d(&c.replay_lsn) == Some(0) {
        "5/5 Hot standby (max)".to_owned()
    } else if c.replay_lsn.is_some() && d(&c.flush_lsn) == Some(0) {
        "4/5 2-safe".to_owned()
    } else if d(&c.write_lsn) == Some(0) {
        format!("3/{max} Remote write")
    } else if d(&c.sent_lsn) == Some(0) {
        format!("2/{max} WAL Sent (min)")
    } else {
        format!("1/{max} 1-safe")
    };
    (client_type, stage)
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + &c.as_str().to_lowercase(),
        None => String::new(),
    }
}

/// The console lines of `replication-status` for one server.
pub fn replication_console(server: &str, target: ReplicationTarget, minimal: bool, status: &ReplicationStatus) -> Vec<String> {
    let title = target.title();
    let mut lines = Vec::new();
    if minimal {
        match &status.server_lsn {
            Some(lsn) => lines.push(format!("{} for master '{server}' (LSN @ {lsn}):", capitalize_first(title))),
            None => lines.push(format!("{} for slave '{server}':", capitalize_first(title))),
        }
    } else {
        lines.push(format!("Status of {title} for server '{server}':"));
        if let Some(lsn) = &status.server_lsn {
            lines.push(format!("  Current LSN on master: {lsn}"));
        }
    }
    if status.clients.is_empty() {
        lines.push(format!("  No {title} attached"));
        return lines;
    }
    let or = |v: &Option<String>, d: &str| v.clone().unwrap_or_else(|| d.to_owned());
    if minimal {
        for (i, c) in status.clients.iter().enumerate() {
            let n = i + 1;
            let addr = or(&c.client_addr, "socket");
            let user = or(&c.usename, "None");
            let app = or(&c.application_name, "None");
            if c.replay_lsn.is_none() {
                lines.push(format!(
                    "  {n}. W) {user}@{addr} S:{} W:{} P:{} AN:{app}",
                    or(&c.sent_lsn, "None"),
                    or(&c.write_lsn, "None"),
                    c.sync_priority
                ));
            } else {
                let s = or(&c.sync_state, "?").chars().next().unwrap_or('?').to_ascii_uppercase();
                lines.push(format!(
                    "  {n}. {s}) {user}@{addr} S:{} F:{} R:{} P:{} AN:{app}",
                    or(&c.sent_lsn, "None"),
                    or(&c.flush_lsn, "None"),
                    or(&c.replay_lsn, "None"),
                    c.sync_priority
                ));
            }
        }
        return lines;
    }
    lines.push(format!("  Number of {title}: {}", status.clients.len()));
    for (i, c) in status.clients.iter().enumerate() {
        let n = i + 1;
        lines.push(String::new());
        let (client_type, stage) = sync_stage(c);
        let sync_state = or(&c.sync_state, "");
        if c.sync_priority > 0 {
            lines.push(format!("  {n}. #{} {} {client_type}", c.sync_priority, capitalize(&sync_state)));
        } else {
            lines.push(format!("  {n}. {} {client_type}", capitalize(&sync_state)));
        }
        lines.push(format!("     Application name: {}", or(&c.application_name, "None")));
        lines.push(format!("     Sync stage      : {stage}"));
        match &c.client_addr {
            Some(addr) => {
                lines.push("     Communication   : TCP/IP".to_owned());
                lines.push(format!(
                    "     IP Address      : {addr} / Port: {} / Host: {}",
                    or(&c.client_port, "None"),
                    or(&c.client_hostname, "-")
                ));
            }
            None => lines.push("     Communication   : Unix domain socket".to_owned()),
        }
        lines.push(format!("     User name       : {}", or(&c.usename, "None")));
        lines.push(format!("     Current state   : {} ({sync_state})", or(&c.state, "None")));
        if let Some(slot) = &c.slot_name {
            lines.push(format!("     Replication slot: {slot}"));
        }
        lines.push(format!("     WAL sender PID  : {}", or(&c.pid, "None")));
        lines.push(format!("     Started at      : {}", or(&c.backend_start, "None")));
        if let Some(xmin) = &c.backend_xmin {
            lines.push(format!("     Standby's xmin  : {xmin}"));
        }
        for (label, lsn) in [("Sent LSN   ", &c.sent_lsn), ("Write LSN  ", &c.write_lsn), ("Flush LSN  ", &c.flush_lsn), ("Replay LSN ", &c.replay_lsn)] {
            if let Some(l) = lsn {
                let diff = diff_lsn(Some(l), c.current_lsn.as_deref()).unwrap_or(0);
                lines.push(format!("     {label}: {l} (diff: {})", pretty_size(diff as f64)));
            }
        }
    }
    lines
}

fn capitalize_first(s: &str) -> String {
    // Python's str.capitalize(): first upper, the rest lower.
    capitalize(s)
}

/// The JSON object of `replication-status` for one server.
pub fn replication_json(target: ReplicationTarget, minimal: bool, status: &ReplicationStatus) -> Value {
    let title = target.title();
    let key = mangle_key(title);
    let mut m = Map::new();
    m.insert("server_lsn".into(), status.server_lsn.clone().map_or(Value::Null, Value::String));
    if status.clients.is_empty() {
        m.insert(key, json!([]));
        m.insert("standby_info".into(), Value::String(format!("No {title} attached")));
        return Value::Object(m);
    }
    let opt = |v: &Option<String>| v.clone().map_or(Value::Null, Value::String);
    let mut list = Vec::new();
    for c in &status.clients {
        let mut o = Map::new();
        if minimal {
            o.insert("user_name".into(), opt(&c.usename));
            o.insert("client_addr".into(), Value::String(c.client_addr.clone().unwrap_or_else(|| "socket".into())));
            o.insert("sent_lsn".into(), opt(&c.sent_lsn));
            o.insert("sync_priority".into(), json!(c.sync_priority));
            o.insert("application_name".into(), opt(&c.application_name));
            if c.replay_lsn.is_none() {
                o.insert("write_lsn".into(), opt(&c.write_lsn));
            } else {
                let s = c.sync_state.clone().unwrap_or_default().chars().next().map(|ch| ch.to_ascii_uppercase().to_string());
                o.insert("sync_state".into(), s.map_or(Value::Null, Value::String));
                o.insert("flush_lsn".into(), opt(&c.flush_lsn));
                o.insert("replay_lsn".into(), opt(&c.replay_lsn));
            }
        } else {
            let (client_type, stage) = sync_stage(c);
            let sync_state = c.sync_state.clone().unwrap_or_default();
            let name = if c.sync_priority > 0 {
                format!("#{} {} {client_type}", c.sync_priority, capitalize(&sync_state))
            } else {
                format!("{} {client_type}", capitalize(&sync_state))
            };
            o.insert("name".into(), Value::String(name));
            o.insert("application_name".into(), opt(&c.application_name));
            o.insert("sync_stage".into(), Value::String(stage));
            match &c.client_addr {
                Some(addr) => {
                    o.insert("communication".into(), json!("TCP/IP"));
                    o.insert("ip_address".into(), json!(addr));
                    o.insert("port".into(), c.client_port.as_deref().and_then(|p| p.parse::<i64>().ok()).map_or(Value::Null, Value::from));
                    o.insert("host".into(), opt(&c.client_hostname));
                }
                None => {
                    o.insert("communication".into(), json!("Unix domain socket"));
                }
            }
            o.insert("user_name".into(), opt(&c.usename));
            o.insert("current_state".into(), opt(&c.state));
            o.insert("current_sync_state".into(), opt(&c.sync_state));
            if let Some(slot) = &c.slot_name {
                o.insert("replication_slot".into(), json!(slot));
            }
            o.insert("wal_sender_pid".into(), c.pid.as_deref().and_then(|p| p.parse::<i64>().ok()).map_or(Value::Null, Value::from));
            o.insert("started_at".into(), opt(&c.backend_start));
            if let Some(xmin) = &c.backend_xmin {
                o.insert("standbys_xmin".into(), json!(xmin));
            }
            for (k, lsn) in [("sent", &c.sent_lsn), ("write", &c.write_lsn), ("flush", &c.flush_lsn), ("replay", &c.replay_lsn)] {
                if let Some(l) = lsn {
                    let diff = diff_lsn(Some(l), c.current_lsn.as_deref()).unwrap_or(0);
                    o.insert(format!("{k}_lsn"), json!(l));
                    o.insert(format!("{k}_lsn_diff"), json!(pretty_size(diff as f64)));
                    o.insert(format!("{k}_lsn_diff_bytes"), json!(diff));
                }
            }
        }
        list.push(Value::Object(o));
    }
    m.insert(key, Value::Array(list));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnostics::checks::CheckResult;

    fn check(server: &str, results: &[(&str, bool, Option<&str>, Option<u64>)]) -> ServerCheck {
        ServerCheck {
            server: server.into(),
            active: true,
            disabled: false,
            results: results
                .iter()
                .map(|(n, ok, h, p)| CheckResult {
                    name: (*n).into(),
                    ok: *ok,
                    hint: h.map(Into::into),
                    perfdata: *p,
                    details: vec![],
                })
                .collect(),
        }
    }

    #[test]
    fn nagios_like_barman() {
        let ok = check("pg", &[("PostgreSQL", true, None, None), ("backup minimum size", true, Some("35.8 MiB"), Some(37_576_284)), ("wal size", true, Some("0 B"), Some(0))]);
        assert_eq!(
            check_nagios(std::slice::from_ref(&ok), false),
            (vec!["BARMAN OK - Ready to serve the Espresso backup for pg|pg=37576284B pg_wals=0B".to_owned()], 0)
        );
        let bad = check("pg", &[("backup minimum size", true, None, Some(37_576_284)), ("wal size", true, None, Some(1_003_202)), ("archiver errors", false, Some("unknown: 1, duplicates: 1"), None)]);
        assert_eq!(
            check_nagios(&[bad], false),
            (
                vec![
                    "BARMAN CRITICAL - server pg has issues * pg FAILED: archiver errors|pg=37576284B pg_wals=1003202B".to_owned(),
                    "pg.archiver errors: FAILED (unknown: 1, duplicates: 1)".to_owned()
                ],
                2
            )
        );
        assert_eq!(check_nagios(&[], true), (vec!["BARMAN CRITICAL - Global configuration errors".to_owned()], 2));
        assert_eq!(check_nagios(&[], false).0, vec!["BARMAN OK - No server configured".to_owned()]);
        let mut inactive = check("old", &[("PostgreSQL", false, None, None)]);
        inactive.active = false;
        let two = check("pg2", &[]);
        assert_eq!(
            check_nagios(&[inactive, two], false).0,
            vec!["BARMAN OK - Ready to serve the Espresso backup for pg2 * IGNORING: old".to_owned()]
        );
    }

    #[test]
    fn check_lines_and_keys() {
        let c = check("pg", &[("PostgreSQL", true, None, None), ("receive-wal running", false, Some("See the Barman log file for more details"), None)]);
        assert_eq!(
            check_console(&c, Colors::default()),
            vec!["Server pg:", "\tPostgreSQL: OK", "\treceive-wal running: FAILED (See the Barman log file for more details)"]
        );
        assert_eq!(mangle_key("superuser or standard user with backup privileges"), "superuser_or_standard_user_with_backup_privileges");
        assert_eq!(mangle_key("receive-wal running"), "receive_wal_running");
        assert_eq!(
            crate::output::python_json(&check_json(&c)),
            r#"{"postgresql": {"hint": "", "status": "OK"}, "receive_wal_running": {"hint": "See the Barman log file for more details", "status": "FAILED"}}"#
        );
    }
}
