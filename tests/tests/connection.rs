//! The native replication connection against real servers: every authentication method,
//! TLS with each verification mode, the replication commands, and the refusals an operator
//! must be able to read.

use std::os::unix::fs::PermissionsExt;

use anyhow::{ensure, Context};
use barman_core::error_chain;
use barman_replication::{ConnConfig, Connection, Error, SessionKind, SystemId, TimelineId};
use barman_tests::{pg_test, AuthMethod, Cluster, ClusterOptions, BARMAN_USER, PASSWORD, STREAMING_USER, SUPERUSER};

/// Runs an async test body on a small runtime; the harness itself is synchronous.
fn block_on<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(f)
}

/// Parses a conninfo with an empty environment, so the developer's `PG*` variables, `~/.pgpass`
/// and `~/.postgresql/root.crt` never change a test's outcome.
fn conf(conninfo: &str) -> anyhow::Result<ConnConfig> {
    let mut c = ConnConfig::parse_with_env(conninfo, |_| None)?;
    if c.passfile.is_none() {
        c.passfile = Some("/nonexistent/pgpass".into());
    }
    Ok(c)
}

async fn connect(conninfo: &str, kind: SessionKind) -> anyhow::Result<Connection> {
    Ok(Connection::connect(&conf(conninfo)?, kind).await?)
}

async fn connect_err(conninfo: &str, kind: SessionKind) -> anyhow::Result<Error> {
    match Connection::connect(&conf(conninfo)?, kind).await {
        Ok(_) => anyhow::bail!("connecting with {conninfo:?} succeeded, expected a failure"),
        Err(e) => Ok(e),
    }
}


/// IDENTIFY_SYSTEM must agree with `pg_control_system()` and the server's timeline.
async fn check_identify(pg: &Cluster, conn: &mut Connection) -> anyhow::Result<()> {
    let sys = conn.identify_system().await?;
    ensure!(sys.system_id == SystemId(pg.system_identifier()?), "system id {} differs from pg_control's", sys.system_id);
    ensure!(sys.timeline == TimelineId(pg.timeline()?), "timeline {} differs from the server's", sys.timeline);
    ensure!(sys.dbname.is_none(), "a physical session reports no database");
    ensure!(conn.server_major() == pg.major(), "server_version {:?} is not major {}", conn.parameter("server_version"), pg.major());
    Ok(())
}

pg_test!(scram_commands_and_slots, |major| {
    let pg = Cluster::start(ClusterOptions::new(major).auth(AuthMethod::ScramSha256))?;
    let base = format!("{} password={PASSWORD}", pg.conninfo(STREAMING_USER));
    block_on(async {
        let mut repl = connect(&base, SessionKind::Physical).await?;
        check_identify(&pg, &mut repl).await?;
        let seg = repl.show("wal_segment_size").await?;
        ensure!(seg == "16MB", "wal_segment_size {seg}");

        // A permanent slot that reserves WAL at once.
        let created = repl.create_physical_slot("barman", false, true).await?;
        ensure!(created.name == "barman");
        let rows = pg.sql_rows("SELECT slot_type, restart_lsn IS NOT NULL, temporary FROM pg_replication_slots WHERE slot_name = 'barman'")?;
        ensure!(rows == vec![vec!["physical".to_owned(), "t".into(), "f".into()]], "pg_replication_slots: {rows:?}");
        let server_restart = pg.sql("SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'barman'")?;
        let dup = repl.create_physical_slot("barman", false, true).await.expect_err("duplicate slot");
        ensure!(dup.sqlstate() == Some("42710"), "duplicate slot: {dup}");

        // Its position, the way each major allows.
        let slot = if major >= 15 {
            let missing = repl.read_replication_slot("nosuchslot").await?;
            ensure!(missing.is_none(), "a missing slot reads as None");
            repl.read_replication_slot("barman").await?
        } else {
            let e = repl.read_replication_slot("barman").await.expect_err("13/14 have no READ_REPLICATION_SLOT");
            ensure!(matches!(e, Error::UnsupportedByServer { needs: 15, .. }), "{e}");
            let mut sql = connect(&base, SessionKind::Normal).await?;
            let s = sql.replication_slot_via_sql("barman").await?;
            sql.close().await?;
            s
        }
        .context("slot barman not found")?;
        ensure!(slot.slot_type == "physical");
        ensure!(slot.restart_lsn.map(|l| l.to_string()) == Some(server_restart.clone()), "restart_lsn {:?} vs {server_restart}", slot.restart_lsn);
        if major >= 15 {
            ensure!(slot.restart_tli == Some(TimelineId(1)), "restart_tli {:?}", slot.restart_tli);
        }

        // A temporary slot lives as long as its session.
        let mut other = connect(&base, SessionKind::Physical).await?;
        other.create_physical_slot("barman_tmp", true, false).await?;
        ensure!(pg.sql("SELECT temporary FROM pg_replication_slots WHERE slot_name = 'barman_tmp'")? == "t");
        other.close().await?;
        let mut gone = false;
        for _ in 0..100 {
            if pg.sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'barman_tmp'")? == "0" {
                gone = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        ensure!(gone, "temporary slot still there after its session closed");

        repl.drop_replication_slot("barman", false).await?;
        ensure!(pg.sql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'barman'")? == "0", "slot not dropped");
        let e = repl.drop_replication_slot("barman", false).await.expect_err("drop of a missing slot");
        ensure!(e.sqlstate() == Some("42704"), "{e}");
        repl.close().await?;

        // A normal SQL session on the same server.
        let mut sql = connect(&format!("{} password={PASSWORD}", pg.conninfo(BARMAN_USER)), SessionKind::Normal).await?;
        let r = sql.simple_query("SELECT current_user, 1 + 1").await?;
        ensure!(r[0].text(0, 0) == Some(BARMAN_USER) && r[0].text(0, 1) == Some("2"), "SQL result {:?}", r[0].rows);
        sql.close().await?;

        // The password from PGPASSWORD, and from a password file.
        let env_conf = ConnConfig::parse_with_env(&pg.conninfo(STREAMING_USER), |k| (k == "PGPASSWORD").then(|| PASSWORD.to_owned()))?;
        Connection::connect(&env_conf, SessionKind::Physical).await?.close().await?;
        let dir = tempfile::tempdir()?;
        let passfile = dir.path().join("pgpass");
        std::fs::write(&passfile, format!("127.0.0.1:{}:replication:{STREAMING_USER}:{PASSWORD}\n", pg.port()))?;
        std::fs::set_permissions(&passfile, std::fs::Permissions::from_mode(0o600))?;
        let with_file = format!("{} passfile={}", pg.conninfo(STREAMING_USER), passfile.display());
        connect(&with_file, SessionKind::Physical).await?.close().await?;

        // Wrong and missing passwords: clear, naming user and server, never the password.
        let wrong = "not-the-password-42";
        let e = connect_err(&format!("{} password={wrong}", pg.conninfo(STREAMING_USER)), SessionKind::Physical).await?;
        let msg = error_chain(&e);
        ensure!(e.sqlstate() == Some("28P01"), "{msg}");
        ensure!(msg.contains(STREAMING_USER) && msg.contains("127.0.0.1") && msg.contains(&pg.port().to_string()), "{msg}");
        ensure!(!msg.contains(wrong) && !format!("{e:?}").contains(wrong), "the password leaked: {msg}");
        let e = connect_err(&pg.conninfo(STREAMING_USER), SessionKind::Physical).await?;
        ensure!(matches!(e, Error::NoPassword { .. }), "{e}");
        ensure!(error_chain(&e).contains("no password was supplied") || error_chain(&e).contains("none was supplied"), "{e}");
        Ok(())
    })?;
    Ok(())
});

pg_test!(md5_and_trust, |major| {
    let pg = Cluster::start(ClusterOptions::new(major).auth(AuthMethod::Md5))?;
    ensure!(pg.sql(&format!("SELECT left(rolpassword, 3) FROM pg_authid WHERE rolname = '{STREAMING_USER}'"))? == "md5");
    block_on(async {
        let mut repl = connect(&format!("{} password={PASSWORD}", pg.conninfo(STREAMING_USER)), SessionKind::Physical).await?;
        check_identify(&pg, &mut repl).await?;
        repl.close().await?;
        let e = connect_err(&format!("{} password=wrong", pg.conninfo(BARMAN_USER)), SessionKind::Normal).await?;
        ensure!(e.sqlstate() == Some("28P01") && error_chain(&e).contains(BARMAN_USER), "{}", error_chain(&e));
        // Trust over the Unix socket, in both session kinds.
        let mut local = connect(&pg.socket_conninfo(SUPERUSER), SessionKind::Physical).await?;
        check_identify(&pg, &mut local).await?;
        local.close().await?;
        let mut local = connect(&pg.socket_conninfo(SUPERUSER), SessionKind::Normal).await?;
        ensure!(local.simple_query("SELECT 1").await?[0].text(0, 0) == Some("1"));
        local.close().await
            .map_err(anyhow::Error::from)
    })
});

pg_test!(cleartext_password, |major| {
    let pg = Cluster::start(ClusterOptions::new(major).auth(AuthMethod::Password))?;
    block_on(async {
        let mut repl = connect(&format!("{} password={PASSWORD}", pg.conninfo(STREAMING_USER)), SessionKind::Physical).await?;
        check_identify(&pg, &mut repl).await?;
        repl.close().await?;
        let e = connect_err(&format!("{} password=wrong", pg.conninfo(STREAMING_USER)), SessionKind::Physical).await?;
        ensure!(e.sqlstate() == Some("28P01"), "{}", error_chain(&e));
        Ok(())
    })
});

pg_test!(tls_modes, |major| {
    let pg = Cluster::start(ClusterOptions::new(major).auth(AuthMethod::ScramSha256).tls(true))?;
    let base = format!("{} password={PASSWORD}", pg.conninfo(STREAMING_USER));
    let ca = pg.ca_cert_path();
    block_on(async {
        // verify-full with the right CA, by address and by name; SCRAM runs with channel
        // binding (SCRAM-SHA-256-PLUS), which fails if our tls-server-end-point hash is wrong.
        for conninfo in [
            format!("{base} sslmode=verify-full sslrootcert={}", ca.display()),
            format!("{} sslmode=verify-full sslrootcert={}", base.replace("host=127.0.0.1", "host=localhost"), ca.display()),
            format!("{base} sslmode=verify-ca sslrootcert={}", ca.display()),
        ] {
            let mut repl = connect(&conninfo, SessionKind::Physical).await.with_context(|| conninfo.clone())?;
            ensure!(repl.is_tls(), "not encrypted: {conninfo}");
            check_identify(&pg, &mut repl).await?;
            repl.close().await?;
        }
        let mut sql = connect(&format!("{base} sslmode=verify-full sslrootcert={}", ca.display()), SessionKind::Normal).await?;
        let r = sql.simple_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").await?;
        ensure!(r[0].text(0, 0) == Some("t"), "pg_stat_ssl says {:?}", r[0].text(0, 0));
        sql.close().await?;

        // require and prefer encrypt without a root certificate.
        for mode in ["require", "prefer"] {
            let repl = connect(&format!("{base} sslmode={mode} sslrootcert=/nonexistent/root.crt"), SessionKind::Physical).await?;
            ensure!(repl.is_tls(), "sslmode={mode} did not encrypt");
            repl.close().await?;
        }

        // The wrong CA fails the handshake, clearly.
        let e = connect_err(&format!("{base} sslmode=verify-full sslrootcert={}", pg.wrong_ca_cert_path().display()), SessionKind::Physical).await?;
        let msg = error_chain(&e);
        ensure!(matches!(e, Error::TlsHandshake { .. }), "{msg}");
        ensure!(msg.contains("TLS handshake") && msg.contains("127.0.0.1") && msg.to_lowercase().contains("certificate"), "{msg}");

        // verify-full without any root certificate: refused before connecting.
        let e = connect_err(&format!("{base} sslmode=verify-full sslrootcert=/nonexistent/root.crt"), SessionKind::Physical).await?;
        ensure!(error_chain(&e).contains("/nonexistent/root.crt"), "{}", error_chain(&e));

        // hostssl only: a plain connection is refused by pg_hba.conf.
        let e = connect_err(&format!("{base} sslmode=disable"), SessionKind::Physical).await?;
        ensure!(e.sqlstate() == Some("28000") && error_chain(&e).contains("pg_hba.conf"), "{}", error_chain(&e));
        Ok(())
    })
});

pg_test!(timeline_history_after_promotion, |major| {
    let primary = Cluster::start(ClusterOptions::new(major))?;
    let standby = primary.create_standby()?;
    let tli = standby.promote()?;
    ensure!(tli == 2, "promotion made timeline {tli}");
    let on_disk = standby.read_data_file("pg_wal/00000002.history")?;
    block_on(async {
        let mut repl = connect(&standby.conninfo(STREAMING_USER), SessionKind::Physical).await?;
        let sys = repl.identify_system().await?;
        ensure!(sys.timeline == TimelineId(2), "timeline after promotion: {}", sys.timeline);
        ensure!(sys.system_id == SystemId(primary.system_identifier()?), "a promoted standby keeps the system id");
        let history = repl.timeline_history(TimelineId(2)).await?;
        ensure!(history.filename == "00000002.history");
        ensure!(history.content[..] == on_disk[..], "TIMELINE_HISTORY differs from pg_wal/00000002.history:\n{:?}\n{:?}",
            String::from_utf8_lossy(&history.content), String::from_utf8_lossy(&on_disk));
        // Timeline 1 has no history file.
        let e = repl.timeline_history(TimelineId(1)).await.expect_err("timeline 1 has no history");
        ensure!(e.db_error().is_some(), "{e}");
        repl.close().await?;
        Ok(())
    })
});

pg_test!(refusals_are_clear, |major| {
    let no_senders = Cluster::start(ClusterOptions::new(major).max_wal_senders(0))?;
    let no_hba = Cluster::start(ClusterOptions::new(major).replication_hba(false))?;
    block_on(async {
        let e = connect_err(&no_senders.conninfo(STREAMING_USER), SessionKind::Physical).await?;
        let msg = error_chain(&e);
        ensure!(msg.contains("max_wal_senders") && msg.contains("raise max_wal_senders"), "{msg}");

        let e = connect_err(&no_hba.conninfo(STREAMING_USER), SessionKind::Physical).await?;
        let msg = error_chain(&e);
        ensure!(e.sqlstate() == Some("28000"), "{msg}");
        ensure!(msg.contains("pg_hba.conf") && msg.contains("host replication"), "{msg}");
        // Ordinary sessions are unaffected.
        connect(&no_hba.conninfo(BARMAN_USER), SessionKind::Normal).await?.close().await?;

        // Nothing listening: the error names the server.
        let port = no_hba.port();
        drop(no_hba);
        let e = connect_err(&format!("host=127.0.0.1 port={port} user=barman connect_timeout=5"), SessionKind::Physical).await?;
        ensure!(matches!(e, Error::Connect { .. }) && error_chain(&e).contains(&port.to_string()), "{}", error_chain(&e));
        Ok(())
    })
});
