//! `barman check-wal-archive` as a user runs it before pointing a new server at an archive:
//! an empty archive passes; once WAL from a real cluster is archived it fails with Barman's
//! message, unless `--timeline` names a timeline later than any archived file's.

use anyhow::ensure;
use barman_tests::{pg_test, BarmanSite, Cluster, ClusterOptions};

const PASSED: &str = "Server pg:\n - WAL archive check for server pg passed\n";

pg_test!(check_wal_archive_empty_then_archived, |major| {
    let pg = Cluster::start(ClusterOptions::new(major).wal_segsize_mb(1))?;
    let site = BarmanSite::new(&pg, &["archiver = on", "streaming_archiver = off"])?;

    // A new site: no xlog.db yet (it is built from the empty wals/ first, as Barman does).
    let r = site.run(&["check-wal-archive", "pg"])?;
    ensure!(r.code == 0 && r.stdout == PASSED && r.stderr.is_empty(), "{r}");
    let r = site.run(&["-f", "json", "check-wal-archive", "--timeline", "1", "pg"])?;
    ensure!(r.code == 0 && r.stdout == r#"{"pg": "WAL archive check for server pg passed"}"#, "{r}");
    let r = site.run(&["check-wal-archive", "all"])?;
    ensure!(r.code == 1 && r.stderr.contains("ERROR: You cannot use 'all' in a single server context"), "{r}");

    // Two segments of timeline 1 from the server, archived as its archive_command would.
    let incoming = site.server_dir().join("incoming");
    std::fs::create_dir_all(&incoming)?;
    for _ in 0..2 {
        pg.generate_load(100)?;
        let name = pg.sql("SELECT pg_walfile_name(pg_current_wal_lsn())")?;
        pg.switch_wal()?;
        std::fs::write(incoming.join(&name), pg.read_data_file(&format!("pg_wal/{name}"))?)?;
    }
    let archived = site.run(&["archive-wal", "pg"])?;
    ensure!(archived.code == 0 && archived.stdout.lines().filter(|l| l.starts_with("\t0")).count() == 2, "{archived}");

    let r = site.run(&["check-wal-archive", "pg"])?;
    let failed = "WAL archive check failed for server pg: Expected empty archive";
    ensure!(r.code == 1 && r.stdout == "Server pg:\n" && r.stderr == format!("ERROR: {failed}\n"), "{r}");
    let log = std::fs::read_to_string(site.home.path().join("barman.log"))?;
    ensure!(log.contains(failed), "the failure is logged too: {log}");
    let r = site.run(&["-f", "json", "check-wal-archive", "pg"])?;
    ensure!(r.code == 1 && r.stdout == format!(r#"{{"_ERROR": ["{failed}"], "pg": {{}}}}"#), "{r}");

    // The archived files are all on timeline 1: a server on timeline 1 would clash with them,
    // one promoted to timeline 2 would not.
    let r = site.run(&["check-wal-archive", "--timeline", "1", "pg"])?;
    ensure!(
        r.code == 1
            && r.stderr
                == "ERROR: WAL archive check failed for server pg: Found 2 files in WAL archive equal to or newer than timeline 1\n",
        "{r}"
    );
    let r = site.run(&["check-wal-archive", "--timeline", "2", "pg"])?;
    ensure!(r.code == 0 && r.stdout == PASSED, "{r}");
    Ok(())
});
