//! Barman's configuration models and `config-update` through the real `barman` binary: a
//! server whose own `conninfo` points at a dead primary, two models of its cluster (one dead,
//! one the live server), `config-switch` to the live one (check, show-servers, status and
//! diagnose show it; receive-wal is restarted with it; a backup works), `--reset` back; then
//! `config-update` writes `.barman.auto.conf` and the next command runs with it; `cron` applies
//! a queue left behind.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context as _};
use barman_tests::{pg_test, run_barman, wait_for, Cluster, ClusterOptions, BARMAN_USER, PASSWORD, STREAMING_USER};

/// Stops the receive-wal that `config-switch`/`config-update` start in the background, however
/// the test ends.
struct StopReceiver<'a>(&'a Path);

impl Drop for StopReceiver<'_> {
    fn drop(&mut self) {
        let _ = run_barman(self.0, &["receive-wal", "--stop", "pg"]);
    }
}

const DEAD: &str = "host=127.0.0.1 port=1 user=barman dbname=postgres connect_timeout=5";

fn write_config(home: &Path, pg: &Cluster) -> anyhow::Result<PathBuf> {
    let conn = format!("{} password={PASSWORD}", pg.conninfo(BARMAN_USER));
    let stream = format!("{} password={PASSWORD}", pg.conninfo(STREAMING_USER));
    let text = format!(
        "[barman]\nbarman_home = {home}\nbarman_user = root\nlog_level = INFO\nlog_file = {home}/barman.log\n\n\
         [pg]\ndescription = \"the old primary\"\nconninfo = {DEAD}\nstreaming_conninfo = {DEAD}\n\
         backup_method = postgres\nstreaming_archiver = on\narchiver = off\nslot_name = barman\ncreate_slot = auto\n\n\
         [pg:gone]\nmodel = true\ncluster = pg\nconninfo = {DEAD2}\nstreaming_conninfo = {DEAD2}\n\n\
         [pg:primary]\nmodel = true\ncluster = pg\ndescription = \"the new primary\"\nconninfo = {conn}\nstreaming_conninfo = {stream}\n\n\
         [elsewhere]\nmodel = true\ncluster = another\nconninfo = {conn}\n",
        home = home.display(),
        DEAD2 = DEAD.replace("port=1", "port=2"),
    );
    let path = home.join("barman.conf");
    std::fs::write(&path, text)?;
    Ok(path)
}

fn line<'a>(out: &'a str, key: &str) -> anyhow::Result<&'a str> {
    out.lines().map(str::trim_start).find(|l| l.starts_with(&format!("{key}:"))).with_context(|| format!("no '{key}' in:\n{out}"))
}

pg_test!(config_switch_reset_and_config_update, |major| {
    let pg = Cluster::start(ClusterOptions::new(major))?;
    let home_dir = tempfile::tempdir()?;
    let home = home_dir.path();
    let conf = write_config(home, &pg)?;
    let conf = conf.as_path();
    let _stop = StopReceiver(conf);
    let barman = |args: &[&str]| run_barman(conf, args);
    let active_file = home.join("pg/.active-model.auto");

    // The server's own settings: the old primary, unreachable.
    let r = barman(&["check", "pg"])?;
    ensure!(r.code == 1 && line(&r.stdout, "PostgreSQL")?.starts_with("PostgreSQL: FAILED"), "{r}");

    // Refusals, with Barman's messages; nothing recorded.
    let r = barman(&["config-switch", "pg"])?;
    ensure!(r.code == 1 && r.stderr.contains("Either a model name or '--reset' flag need to be given"), "{r}");
    let r = barman(&["config-switch", "pg", "nosuch"])?;
    ensure!(r.code == 1 && r.stderr.contains("Unknown model 'nosuch'"), "{r}");
    let r = barman(&["config-switch", "pg", "elsewhere"])?;
    ensure!(
        r.code == 1
            && r.stderr.contains("Model 'elsewhere' has 'cluster=another', which is not compatible with 'cluster=pg' from server 'pg'"),
        "{r}"
    );
    ensure!(!active_file.exists(), "a refused switch records nothing");

    // The failover: switch to the model whose conninfo reaches the live server.
    let r = barman(&["config-switch", "pg", "pg:primary"])?;
    ensure!(r.code == 0, "{r}");
    ensure!(r.stdout.starts_with("Applying model 'pg:primary' to server 'pg'\n"), "{r}");
    ensure!(
        r.stdout.contains(&format!(
            "Changing value of option 'conninfo' for server 'pg' from '{DEAD}' to '{} password=*REDACTED*' through the model 'pg:primary'",
            pg.conninfo(BARMAN_USER)
        )),
        "{r}"
    );
    ensure!(
        r.stdout.contains("Changing value of option 'description' for server 'pg' from 'the old primary' to 'the new primary'"),
        "{r}"
    );
    ensure!(!r.stdout.contains(PASSWORD) && !r.stderr.contains(PASSWORD), "no password printed: {r}");
    // restart_processes: receive-wal started at once with the model's streaming_conninfo.
    ensure!(r.stdout.ends_with("Starting streaming archiver for server pg\n"), "{r}");
    ensure!(std::fs::read_to_string(&active_file)? == "pg:primary", "the bare model name");
    ensure!(std::fs::metadata(&active_file)?.permissions().mode() & 0o777 == 0o600);
    let receiver_pid = || -> anyhow::Result<Option<String>> {
        let out = barman(&["list-processes", "pg"])?.stdout;
        Ok(out.lines().find(|l| l.ends_with(" receive-wal")).map(|l| l.split(' ').next().unwrap_or("").to_owned()))
    };
    wait_for("receive-wal to start", || Ok(receiver_pid()?.is_some()))?;
    let first_pid = receiver_pid()?.context("running")?;

    let r = barman(&["show-servers", "pg"])?;
    ensure!(r.code == 0 && line(&r.stdout, "active_model")? == "active_model: pg:primary", "{r}");
    ensure!(line(&r.stdout, "description")? == "description: the new primary", "{r}");
    ensure!(line(&r.stdout, "conninfo")? == format!("conninfo: {} password=*REDACTED*", pg.conninfo(BARMAN_USER)), "{r}");
    let j = barman(&["-f", "json", "show-servers", "pg"])?.json()?;
    ensure!(j["pg"]["active_model"] == "pg:primary", "{j}");
    let r = barman(&["status", "pg"])?;
    ensure!(line(&r.stdout, "Active configuration model")? == "Active configuration model: pg:primary", "{r}");
    let j = barman(&["diagnose"])?.json()?;
    ensure!(j["servers"]["pg"]["active_model"] == "pg:primary", "{}", j["servers"]["pg"]);

    // A backup through the model's connections, its WAL streamed by the restarted receiver.
    let r = barman(&["switch-wal", "--force", "--archive", "--archive-timeout", "60", "pg"])?;
    ensure!(r.code == 0, "{r}");
    let r = barman(&["backup", "--wait", "--wait-timeout", "60", "pg"])?;
    ensure!(r.code == 0 && r.stdout.contains("Backup completed"), "{r}");
    let r = barman(&["check", "pg"])?;
    ensure!(r.code == 0, "every check passes on the switched server: {r}");

    // Switching to the active model again changes nothing but restarts the receiver.
    let r = barman(&["config-switch", "pg", "pg:primary"])?;
    ensure!(r.code == 0, "{r}");
    ensure!(
        r.stdout
            == format!(
                "Model 'pg:primary' is already active for server 'pg', skipping...\nStopped process receive-wal({first_pid})\n\
                 Starting streaming archiver for server pg\n"
            ),
        "{r}"
    );
    wait_for("a new receive-wal", || Ok(receiver_pid()?.is_some_and(|p| p != first_pid)))?;

    // --reset: back to the server's own settings; the receiver started with them cannot connect.
    let r = barman(&["config-switch", "pg", "--reset"])?;
    ensure!(r.code == 0 && r.stdout.starts_with("Resetting the active model for the server pg\nStopped process receive-wal("), "{r}");
    ensure!(!active_file.exists(), "reset removes the file");
    let r = barman(&["show-servers", "pg"])?;
    ensure!(line(&r.stdout, "active_model")? == "active_model: None", "{r}");
    ensure!(line(&r.stdout, "conninfo")? == format!("conninfo: {DEAD}"), "{r}");
    let r = barman(&["check", "pg"])?;
    ensure!(r.code == 1 && line(&r.stdout, "PostgreSQL")?.starts_with("PostgreSQL: FAILED"), "{r}");
    let r = barman(&["list-backups", "pg"])?;
    ensure!(r.code == 0 && r.stdout.lines().count() == 1, "the catalog is the server's whatever its model: {r}");

    // A model that disappeared from the configuration disables the server, as in Barman.
    std::fs::write(&active_file, "pg:removed")?;
    let r = barman(&["check", "pg"])?;
    ensure!(
        r.code == 1
            && r.stdout.contains("Model 'pg:removed' is set as the active model for the server 'pg' but the model does not exist."),
        "{r}"
    );
    std::fs::remove_file(&active_file)?;

    // config-update: refused requests change nothing.
    let r = barman(&["config-update", r#"[{"scope": "server", "server_name": "pg", "nonsense": "1"}]"#])?;
    ensure!(r.code == 1 && r.stderr.contains("ERROR: Invalid option 'nonsense' for server 'pg'\n"), "{r}");
    ensure!(r.stderr.contains("Aborting config\u{2010}update: invalid section {'nonsense': '1', 'scope': 'server', 'server_name': 'pg'}"), "{r}");
    let r = barman(&["config-update", r#"[{"scope": "model", "model_name": "pg", "cluster": "pg"}]"#])?;
    ensure!(r.code == 1 && r.stderr.contains("'pg' is a server, not a model."), "{r}");
    ensure!(!home.join(".barman.auto.conf").exists());

    // config-update moves the server to the live primary; the next commands run with it.
    let conn = format!("{} password={PASSWORD}", pg.conninfo(BARMAN_USER));
    let stream = format!("{} password={PASSWORD}", pg.conninfo(STREAMING_USER));
    let request = serde_json::json!([
        {"scope": "server", "server_name": "pg", "conninfo": conn, "streaming_conninfo": stream, "description": "updated"},
        {"scope": "model", "model_name": "pg:later", "cluster": "pg", "compression": "gzip"},
    ])
    .to_string();
    let r = barman(&["config-update", &request])?;
    ensure!(r.code == 0, "{r}");
    ensure!(
        r.stdout.contains(&format!(
            "Changing value of option 'conninfo' for section 'pg' from '{DEAD}' to '{} password=*REDACTED*' through config-update.\n",
            pg.conninfo(BARMAN_USER)
        )),
        "{r}"
    );
    ensure!(r.stdout.contains("Changing value of option 'cluster' for section 'pg:later' from 'None' to 'pg' through config-update.\n"), "{r}");
    ensure!(r.stdout.ends_with("Starting streaming archiver for server pg\n"), "receive-wal restarted: {r}");
    let auto = home.join(".barman.auto.conf");
    let text = std::fs::read_to_string(&auto)?;
    ensure!(text.starts_with("[pg]\nconninfo = ") && text.contains("\n[pg:later]\nmodel = on\ncluster = pg\ncompression = gzip\n"), "{text}");
    ensure!(std::fs::metadata(&auto)?.permissions().mode() & 0o777 == 0o600);
    ensure!(std::fs::read_to_string(home.join("cfg_changes.queue"))? == "[]", "the queue is empty again");

    let r = barman(&["status", "pg"])?;
    ensure!(line(&r.stdout, "Description")? == "Description: updated", "{r}");
    let r = barman(&["check", "pg"])?;
    ensure!(line(&r.stdout, "PostgreSQL")? == "PostgreSQL: OK", "{r}");
    // The model created by config-update can be switched to.
    let r = barman(&["config-switch", "pg", "pg:later"])?;
    ensure!(r.code == 0 && r.stdout.contains("Changing value of option 'compression' for server 'pg' from 'None' to 'gzip'"), "{r}");
    let r = barman(&["show-servers", "pg"])?;
    ensure!(line(&r.stdout, "compression")? == "compression: gzip", "{r}");

    // A queue left behind (an interrupted config-update, or Barman's) is applied by cron first.
    let queue = home.join("cfg_changes.queue");
    std::fs::write(
        &queue,
        r#"[{"section": "pg", "changes_set": [{"key": "description", "value": "queued", "config_file": "/etc/barman.d/pg.conf"}]}]"#,
    )?;
    let r = barman(&["cron"])?;
    ensure!(
        r.stdout.contains("Changing value of option 'description' for section 'pg' from 'updated' to 'queued' through config-update.\n"),
        "{r}"
    );
    ensure!(std::fs::read_to_string(&queue)? == "[]", "applied and removed");
    let r = barman(&["status", "pg"])?;
    ensure!(line(&r.stdout, "Description")? == "Description: queued", "{r}");
    Ok(())
});
