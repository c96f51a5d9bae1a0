//! The WAL receiver engine against real servers: what lands in `streaming/` is the server's
//! WAL byte for byte, and in synchronous mode a commit returns only once the receiver has its
//! WAL on disk.

use std::path::Path;
use std::time::Duration;

use anyhow::ensure;
use barman_core::receive_wal::{run, ReceiverNotice, ReceiverSettings};
use barman_replication::{ConnConfig, Connection, Lsn, SessionKind};
use barman_tests::{pg_test, wait_for, Cluster, ClusterOptions, RunCommand as _, STREAMING_USER};
use tokio::sync::watch;

fn settings(pg: &Cluster, dir: &Path) -> ReceiverSettings {
    ReceiverSettings {
        server: "pg".into(),
        conninfo: format!("{} passfile=/nonexistent", pg.conninfo(STREAMING_USER)),
        application_name: "barman_receive_wal".into(),
        slot: Some("barman".into()),
        streaming_dir: dir.to_owned(),
        system_id: None,
        status_interval: Duration::from_secs(10),
        receive_timeout: Some(Duration::from_secs(60)),
        reconnect: true,
    }
}

async fn create_slot(pg: &Cluster) -> anyhow::Result<()> {
    let cfg = ConnConfig::parse_with_env(&pg.conninfo(STREAMING_USER), |_| None)?;
    let mut c = Connection::connect(&cfg, SessionKind::Physical).await?;
    c.create_physical_slot("barman", false, true).await?;
    c.close().await?;
    Ok(())
}

/// Starts the receiver on a task; returns its stop switch and handle.
fn spawn_receiver(
    rt: &tokio::runtime::Runtime,
    s: ReceiverSettings,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<anyhow::Result<Vec<ReceiverNotice>>>) {
    let (tx, rx) = watch::channel(false);
    let handle = rt.spawn(async move {
        let mut notices = Vec::new();
        run(&s, rx, &mut |n| notices.push(n)).await?;
        Ok(notices)
    });
    (tx, handle)
}

fn complete_segments(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut v: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.len() == 24)
        .collect();
    v.sort();
    Ok(v)
}


pg_test!(received_segments_equal_the_servers, |major| {
    let pg = Cluster::start(ClusterOptions::new(major).wal_segsize_mb(1))?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(create_slot(&pg))?;
    let dir = tempfile::tempdir()?;
    let (stop, handle) = spawn_receiver(&rt, settings(&pg, dir.path()));
    for i in 0..3 {
        pg.generate_load(500 * (i + 1))?;
        pg.switch_wal()?;
    }
    wait_for("three complete segments", || Ok(complete_segments(dir.path())?.len() >= 3))?;
    stop.send(true)?;
    let notices = rt.block_on(handle)??;
    ensure!(matches!(notices.first(), Some(ReceiverNotice::Started { .. })), "notices {notices:?}");
    ensure!(notices.iter().any(|n| matches!(n, ReceiverNotice::FinishedSegment { .. })));

    for name in complete_segments(dir.path())? {
        let ours = std::fs::read(dir.path().join(&name))?;
        // The server may have recycled an old segment already; compare those it still has.
        if let Ok(theirs) = pg.read_data_file(&format!("pg_wal/{name}")) {
            ensure!(ours == theirs, "streaming/{name} differs from the server's pg_wal/{name}");
        }
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(dir.path().join(&name))?.permissions());
        ensure!(mode & 0o777 == 0o600, "{name} has mode {mode:o}");
    }
    let partials: Vec<_> = std::fs::read_dir(dir.path())?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".partial"))
        .collect();
    // The segment in progress, if WAL arrived after the last switch.
    ensure!(partials.len() <= 1, "at most one .partial, got {partials:?}");

    // Resuming starts at the .partial and leaves no gap.
    let before = complete_segments(dir.path())?;
    let (stop, handle) = spawn_receiver(&rt, settings(&pg, dir.path()));
    pg.generate_load(300)?;
    pg.switch_wal()?;
    wait_for("one more segment", || Ok(complete_segments(dir.path())?.len() > before.len()))?;
    stop.send(true)?;
    rt.block_on(handle)??;
    let after = complete_segments(dir.path())?;
    let seg_no = |n: &str| u64::from_str_radix(&n[16..], 16).unwrap() + (u64::from_str_radix(&n[8..16], 16).unwrap() << 32);
    for w in after.windows(2) {
        ensure!(seg_no(&w[1]) == seg_no(&w[0]) + 1, "gap between {} and {}", w[0], w[1]);
    }
    Ok(())
});

pg_test!(synchronous_commit_waits_for_the_receiver, |major| {
    let pg = Cluster::start(ClusterOptions::new(major))?;
    pg.sql("CREATE TABLE t (id int)")?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(create_slot(&pg))?;
    pg.set_conf("synchronous_standby_names", "barman_receive_wal")?;
    let dir = tempfile::tempdir()?;
    let (stop, handle) = spawn_receiver(&rt, settings(&pg, dir.path()));
    wait_for("the receiver to be the synchronous standby", || {
        Ok(pg.sql("SELECT sync_state FROM pg_stat_replication WHERE application_name = 'barman_receive_wal'")? == "sync")
    })?;

    // A commit returns, and by then the receiver reported (after fsync) its WAL flushed.
    let before: Lsn = pg.sql("SELECT pg_current_wal_lsn()")?.parse()?;
    pg.sql("INSERT INTO t VALUES (1)")?;
    let flushed: Lsn = pg.sql("SELECT flush_lsn FROM pg_stat_replication WHERE application_name = 'barman_receive_wal'")?.parse()?;
    ensure!(flushed > before, "commit returned but the receiver's flush {flushed} is not past {before}");
    let seg = pg.sql(&format!("SELECT pg_walfile_name('{before}')"))?;
    let ours = std::fs::read(dir.path().join(format!("{seg}.partial"))).or_else(|_| std::fs::read(dir.path().join(&seg)))?;
    let theirs = pg.read_data_file(&format!("pg_wal/{seg}"))?;
    let upto = (flushed.0 % (16 << 20)) as usize;
    ensure!(ours[..upto] == theirs[..upto], "the received bytes up to {flushed} differ from the server's");
    ensure!(upto == 0 || ours[..upto].iter().any(|&b| b != 0));

    // Receiver stopped: commits wait. Started again: they complete, nothing lost.
    stop.send(true)?;
    rt.block_on(handle)??;
    let pg = std::sync::Arc::new(pg);
    let writer = {
        let pg = pg.clone();
        std::thread::spawn(move || pg.sql("INSERT INTO t VALUES (2)"))
    };
    std::thread::sleep(Duration::from_secs(2));
    ensure!(!writer.is_finished(), "a synchronous commit returned with no synchronous standby");
    let (stop, handle) = spawn_receiver(&rt, settings(&pg, dir.path()));
    wait_for("the waiting commit to return", || Ok(writer.is_finished()))?;
    writer.join().expect("writer thread")?;
    ensure!(pg.sql("SELECT count(*) FROM t")? == "2");
    stop.send(true)?;
    rt.block_on(handle)??;
    Ok(())
});

// A server stop waits until the receiver confirms every byte sent as flushed: the receiver
// fsyncs when the WAL sender asks, so `pg_ctl stop` returns at once (with
// `wal_sender_timeout` at 10 min, a receiver that kept its tail unsynced would hold it past
// the harness's 60 s), and the `.partial` holds the WAL through the shutdown checkpoint.
pg_test!(a_server_stop_is_confirmed_and_streamed_to_its_last_record, |major| {
    let pg = Cluster::start(ClusterOptions::new(major).wal_segsize_mb(1).conf("wal_sender_timeout", "10min"))?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(create_slot(&pg))?;
    let dir = tempfile::tempdir()?;
    let (stop, handle) = spawn_receiver(&rt, settings(&pg, dir.path()));
    pg.generate_load(200)?;
    let partial = || -> anyhow::Result<Option<String>> {
        Ok(std::fs::read_dir(dir.path())?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .find(|n| n.ends_with(".partial")))
    };
    wait_for("a .partial segment", || Ok(partial()?.is_some()))?;
    pg.stop()?;

    let control = pg.command("pg_controldata").arg(pg.data_dir()).run()?;
    let checkpoint: Lsn = control
        .lines()
        .find_map(|l| l.strip_prefix("Latest checkpoint location:"))
        .ok_or_else(|| anyhow::anyhow!("no checkpoint location in pg_controldata:\n{control}"))?
        .trim()
        .parse()?;
    stop.send(true)?;
    rt.block_on(handle)??;

    let seg = 1024 * 1024;
    let name = partial()?.ok_or_else(|| anyhow::anyhow!("no .partial after the stop"))?;
    let name = name.trim_end_matches(".partial");
    let seg_start = u64::from_str_radix(&name[16..], 16)? * seg + (u64::from_str_radix(&name[8..16], 16)? << 32);
    ensure!(
        (seg_start..seg_start + seg).contains(&checkpoint.0),
        "shutdown checkpoint {checkpoint} is not in {name}"
    );
    // Through the first bytes of the shutdown checkpoint record (the last one written).
    let upto = (checkpoint.0 - seg_start + 64) as usize;
    let ours = std::fs::read(dir.path().join(format!("{name}.partial")))?;
    let theirs = pg.read_data_file(&format!("pg_wal/{name}"))?;
    if let Some(i) = ours[..upto].iter().zip(&theirs[..upto]).position(|(a, b)| a != b) {
        anyhow::bail!("{name}.partial differs from the server's at offset {i:#x} (checkpoint at {checkpoint})");
    }
    Ok(())
});
