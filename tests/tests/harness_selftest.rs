//! Proves the harness itself on every major: clusters start, authenticate as configured, speak
//! TLS with the generated certificates, clone into a standby and promote to a new timeline.

use barman_tests::{
    pg_test, AuthMethod, Cluster, ClusterOptions, RunCommand as _, Sshd, BARMAN_USER, PASSWORD,
    STREAMING_USER, SUPERUSER,
};

use anyhow::{ensure, Context as _};

pg_test!(starts_with_trust, |major| {
    let pg = Cluster::start(ClusterOptions::new(major))?;
    let version = pg.sql("SELECT version()")?;
    ensure!(
        version.starts_with(&format!("PostgreSQL {major}.")),
        "version() = {version:?}"
    );
    let num: u32 = pg.sql("SHOW server_version_num")?.parse()?;
    ensure!(num / 10000 == major, "server_version_num = {num}");
    ensure!(
        pg.sql("SHOW data_checksums")? == "on",
        "data checksums are off"
    );
    ensure!(
        pg.sql("SHOW wal_level")? == "replica",
        "wal_level is not replica"
    );
    ensure!(pg.sql("SHOW fsync")? == "on", "fsync is off");
    ensure!(pg.system_identifier()? > 0, "system identifier is 0");
    ensure!(pg.timeline()? == 1, "a new cluster is not on timeline 1");
    // TCP with trust needs no password, for every role.
    for user in [SUPERUSER, BARMAN_USER, STREAMING_USER] {
        let who = pg.psql_tcp(user, None, "", "SELECT current_user")?;
        ensure!(who == user, "connected as {who:?}, not {user}");
    }
    pg.generate_load(1000)?;
    ensure!(
        pg.sql("SELECT count(*) FROM harness_load")? == "1000",
        "load rows missing"
    );
    let rows = pg.sql_rows("SELECT 1, 'a'; SELECT 2, 'b'")?;
    ensure!(rows == [["1", "a"], ["2", "b"]], "sql_rows gave {rows:?}");
    let lsn = pg.switch_wal()?;
    ensure!(lsn.contains('/'), "pg_switch_wal() = {lsn:?}");
    Ok(())
});

pg_test!(tls_verify_full, |major| {
    let pg = Cluster::start(
        ClusterOptions::new(major)
            .tls(true)
            .auth(AuthMethod::ScramSha256),
    )?;
    let ssl_query = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    let good = format!(
        "sslmode=verify-full sslrootcert={}",
        pg.ca_cert_path().display()
    );
    // libpq checks the certificate's names against `host`: localhost is a DNS SAN (every major);
    // 127.0.0.1 is an IP SAN, which libpq checks only since PostgreSQL 15 (psql 13/14 say "server certificate for \"localhost\" does not match host name \"127.0.0.1\"").
    let by_name = format!("{good} host=localhost hostaddr=127.0.0.1");
    let ssl = pg.psql_tcp(BARMAN_USER, Some(PASSWORD), &by_name, ssl_query)?;
    ensure!(ssl == "t", "pg_stat_ssl.ssl = {ssl:?}");
    if major >= 15 {
        pg.psql_tcp(BARMAN_USER, Some(PASSWORD), &good, ssl_query)
            .context("verify-full by IP SAN")?;
    }

    let wrong = format!(
        "sslmode=verify-full sslrootcert={}",
        pg.wrong_ca_cert_path().display()
    );
    let err = pg
        .psql_tcp(BARMAN_USER, Some(PASSWORD), &wrong, ssl_query)
        .err()
        .context("verify-full against an unrelated CA succeeded")?;
    ensure!(
        format!("{err:#}").contains("certificate verify failed"),
        "unexpected error: {err:#}"
    );

    let err = pg
        .psql_tcp(BARMAN_USER, Some(PASSWORD), "sslmode=disable", "SELECT 1")
        .err()
        .context("a connection without TLS was accepted")?;
    ensure!(
        format!("{err:#}").contains("no pg_hba.conf entry"),
        "unexpected error: {err:#}"
    );
    Ok(())
});

/// Right password accepted for both roles, wrong or missing password refused, and the stored
/// verifier is of the kind the method needs.
fn check_password_auth(major: u32, auth: AuthMethod, stored_prefix: &str) -> anyhow::Result<()> {
    let pg = Cluster::start(ClusterOptions::new(major).auth(auth))?;
    for user in [BARMAN_USER, STREAMING_USER] {
        let who = pg.psql_tcp(
            user,
            Some(pg.password()),
            "sslmode=disable",
            "SELECT current_user",
        )?;
        ensure!(who == user, "connected as {who:?}, not {user}");
        let err = pg
            .psql_tcp(
                user,
                Some("not-the-password"),
                "sslmode=disable",
                "SELECT 1",
            )
            .err()
            .with_context(|| format!("{user}: a wrong password was accepted"))?;
        ensure!(
            format!("{err:#}").contains("password authentication failed"),
            "unexpected error: {err:#}"
        );
        ensure!(
            pg.psql_tcp(user, None, "sslmode=disable", "SELECT 1")
                .is_err(),
            "{user}: no password was accepted"
        );
        let stored = pg.sql(&format!(
            "SELECT rolpassword FROM pg_authid WHERE rolname = '{user}'"
        ))?;
        ensure!(
            stored.starts_with(stored_prefix),
            "{user}: stored password {stored:?}"
        );
    }
    Ok(())
}

pg_test!(md5_auth, |major| {
    check_password_auth(major, AuthMethod::Md5, "md5")
});

pg_test!(scram_auth, |major| {
    check_password_auth(major, AuthMethod::ScramSha256, "SCRAM-SHA-256$")
});

pg_test!(cleartext_password_auth, |major| {
    check_password_auth(major, AuthMethod::Password, "SCRAM-SHA-256$")
});

pg_test!(standby_promote, |major| {
    let primary = Cluster::start(ClusterOptions::new(major))?;
    primary.generate_load(100)?;
    let standby = primary.create_standby()?;
    ensure!(
        standby.port() != primary.port(),
        "standby shares the primary's port"
    );
    ensure!(standby.in_recovery()?, "standby is not in recovery");
    ensure!(
        standby.system_identifier()? == primary.system_identifier()?,
        "system identifiers differ"
    );
    ensure!(
        standby.sql("SELECT count(*) FROM harness_load")? == "100",
        "standby lacks the rows"
    );
    let senders =
        primary.sql("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")?;
    ensure!(senders == "1", "primary has {senders} streaming senders");

    let timeline = standby.promote()?;
    ensure!(timeline == 2, "promoted to timeline {timeline}");
    ensure!(standby.timeline()? == 2, "timeline() after promotion");
    let history = String::from_utf8(standby.read_data_file("pg_wal/00000002.history")?)?;
    ensure!(history.starts_with("1\t"), "00000002.history = {history:?}");
    standby.sql("CREATE TABLE after_promotion (x int)")?;
    Ok(())
});

pg_test!(no_wal_senders, |major| {
    let pg = Cluster::start(
        ClusterOptions::new(major)
            .max_wal_senders(0)
            .replication_hba(false),
    )?;
    ensure!(
        pg.sql("SHOW max_wal_senders")? == "0",
        "max_wal_senders is not 0"
    );
    ensure!(
        pg.sql("SHOW wal_level")? == "replica",
        "wal_level is not replica"
    );
    ensure!(
        pg.sql("SHOW archive_mode")? == "on",
        "archive_mode is not on"
    );
    pg.generate_load(10)?;
    pg.switch_wal()?;
    Ok(())
});

pg_test!(conf_changes_and_pgbench, |major| {
    let pg = Cluster::start(ClusterOptions::new(major).conf("work_mem", "5MB"))?;
    ensure!(pg.sql("SHOW work_mem")? == "5MB", "extra_conf not applied");
    pg.set_conf("work_mem", "7MB")?; // reload
    ensure!(
        pg.sql("SHOW work_mem")? == "7MB",
        "set_conf with reload not applied"
    );
    pg.set_conf("max_wal_senders", "4")?; // restart
    ensure!(
        pg.sql("SHOW max_wal_senders")? == "4",
        "set_conf with restart not applied"
    );
    pg.stop()?;
    ensure!(pg.sql("SELECT 1").is_err(), "stopped server still answers");
    pg.restart()?;
    pg.pgbench_init(1)?;
    pg.pgbench(2, 20)?;
    pg.checkpoint()?;
    ensure!(
        pg.sql("SELECT count(*) FROM pgbench_history")? == "40",
        "pgbench did not run"
    );
    Ok(())
});

pg_test!(failed_start_shows_server_log, |major| {
    let err = Cluster::start(ClusterOptions::new(major).conf("shared_buffers", "lots"))
        .err()
        .context("a server with shared_buffers = 'lots' started")?;
    let text = format!("{err:#}");
    ensure!(text.contains("last lines of"), "no log tail in: {text}");
    ensure!(
        text.contains("shared_buffers"),
        "log tail does not name the setting: {text}"
    );
    Ok(())
});

/// The harness's sshd logs in as the server user with its key, runs commands there, and
/// carries rsync: the three things the ssh tests rely on.
#[test]
fn sshd_runs_commands_and_rsync_as_the_server_user() {
    let run = || -> anyhow::Result<()> {
        let sshd = Sshd::start()?;
        let who = sshd.run("id -un")?;
        ensure!(who.success && who.stdout.trim() == sshd.user(), "id -un through ssh: {who:?}");

        let src = tempfile::tempdir()?;
        std::fs::write(src.path().join("f"), b"over ssh")?;
        let dst = sshd.run("mktemp -d")?;
        ensure!(dst.success, "mktemp -d: {dst:?}");
        let dst = dst.stdout.trim().to_owned();
        let out = std::process::Command::new("rsync")
            .args(["-a", "-e", &sshd.ssh_transport()])
            .arg(src.path().join("f"))
            .arg(format!("{}@127.0.0.1:{dst}/", sshd.user()))
            .output_any()?;
        ensure!(out.success, "rsync through sshd: {out:?}\n{}", sshd.log_tail());
        let cat = sshd.run(&format!("cat {dst}/f && stat -c %U {dst}/f && rm -r {dst}"))?;
        ensure!(cat.stdout == format!("over ssh{}\n", sshd.user()), "{cat:?}");
        Ok(())
    };
    if let Err(e) = run() {
        panic!("{e:#}");
    }
}
