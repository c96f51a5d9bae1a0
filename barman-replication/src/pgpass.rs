//! The password file, `~/.pgpass` (or `passfile` / `PGPASSFILE`), as libpq reads it.
//!
//! Each line is `hostname:port:database:username:password`; `*` matches anything, `\:` and
//! `\\` escape, lines starting with `#` are comments, and the first match wins. A Unix-socket
//! connection matches the host name `localhost`, and a physical replication connection matches
//! the database name `replication`. As in libpq, a file that group or others can read is
//! ignored, with a warning, since it would leak the passwords in it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Looks up a password for the given connection parameters. Any read problem means "no
/// password from the file"; the connection attempt then fails with its own clear error.
pub fn lookup(file: &Path, host: &str, port: u16, database: &str, user: &str) -> Option<String> {
    let meta = std::fs::metadata(file).ok()?;
    if !meta.is_file() {
        return None;
    }
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(
            "password file \"{}\" has group or world access; permissions should be u=rw (0600) or less",
            file.display()
        );
        return None;
    }
    let text = std::fs::read_to_string(file).ok()?;
    find(&text, host, &port.to_string(), database, user)
}

/// Finds the first line of `text` matching the four keys.
pub fn find(text: &str, host: &str, port: &str, database: &str, user: &str) -> Option<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(split_line)
        .find(|f| {
            let m = |pat: &str, v: &str| pat == "*" || pat == v;
            m(&f[0], host) && m(&f[1], port) && m(&f[2], database) && m(&f[3], user)
        })
        .map(|mut f| f.swap_remove(4))
}

/// Splits a line into its five fields, undoing `\` escapes; `None` if it has fewer.
fn split_line(line: &str) -> Option<Vec<String>> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    fields.last_mut()?.push(n);
                }
            }
            // The password is the rest of the line: colons in it need no escape.
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => fields.last_mut()?.push(c),
        }
    }
    (fields.len() == 5).then_some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        let text = "# comment\n\
                    pg1:5432:postgres:barman:first\n\
                    *:*:replication:streaming_barman:repl\\:pw\n\
                    localhost:*:*:*:local:with:colons\n\
                    *:*:*:barman:fallback\n";
        assert_eq!(find(text, "pg1", "5432", "postgres", "barman").as_deref(), Some("first"));
        assert_eq!(find(text, "pg1", "5433", "postgres", "barman").as_deref(), Some("fallback"));
        assert_eq!(find(text, "x", "1", "replication", "streaming_barman").as_deref(), Some("repl:pw"));
        assert_eq!(find(text, "localhost", "5432", "db", "u").as_deref(), Some("local:with:colons"));
        assert_eq!(find(text, "x", "1", "db", "nobody"), None);
    }

    #[test]
    fn refuses_readable_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pgpass");
        std::fs::write(&p, "*:*:*:*:pw\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(lookup(&p, "h", 1, "d", "u"), None);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(lookup(&p, "h", 1, "d", "u").as_deref(), Some("pw"));
    }
}
