//! START_REPLICATION with barman-rs's own client: the WAL it receives is the server's, byte for
//! byte; flush reports move a slot; timeline ends are reported as the protocol says.

use anyhow::{ensure, Context};
use barman_replication::{Connection, Lsn, SessionKind, StreamEnd, StreamEvent, StreamOptions, TimelineId};
use barman_tests::{pg_test, Cluster, ClusterOptions, STREAMING_USER};

const SEG: u64 = 16 << 20;

fn block_on<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(f)
}

async fn connect(pg: &Cluster) -> anyhow::Result<Connection> {
    let cfg = barman_replication::ConnConfig::parse_with_env(&pg.conninfo(STREAMING_USER), |_| None)?;
    Ok(Connection::connect(&cfg, SessionKind::Physical).await?)
}

/// The name of the segment holding the byte at `lsn` on timeline `tli`, 16 MB segments.
fn segment_name(tli: u32, lsn: Lsn) -> String {
    let seg = lsn.0 / SEG;
    format!("{tli:08X}{:08X}{:08X}", seg / 0x100, seg % 0x100)
}

pg_test!(streamed_wal_matches_the_server_byte_for_byte, |major| {
    let pg = Cluster::start(ClusterOptions::new(major))?;
    block_on(async {
        let mut conn = connect(&pg).await?;
        conn.create_physical_slot("barman", false, true).await?;
        let sys = conn.identify_system().await?;
        let start = sys.xlogpos.segment_start(SEG);
        let seg_end = Lsn(start.0 + SEG);
        // Fill the rest of the segment and switch, so the whole segment is final on the server.
        pg.generate_load(2000)?;
        pg.switch_wal()?;

        let opts = StreamOptions { synchronous: true, ..Default::default() };
        let mut rx = conn.start_replication(Some("barman"), start, Some(sys.timeline), opts).await?;
        let mut segment = Vec::with_capacity(SEG as usize);
        while (segment.len() as u64) < SEG {
            match rx.next_event().await? {
                StreamEvent::WalData { start: at, data } => {
                    ensure!(at.0 == start.0 + segment.len() as u64, "WAL at {at} is not contiguous");
                    let take = (SEG as usize - segment.len()).min(data.len());
                    segment.extend_from_slice(&data[..take]);
                }
                StreamEvent::ReplyRequested => {}
                StreamEvent::End(e) => anyhow::bail!("stream ended early: {e:?}"),
            }
        }
        // Only now claim the segment durable: the slot must follow the reported flush.
        rx.flushed(seg_end).await?;
        let mut moved = false;
        for _ in 0..200 {
            let restart: Lsn = pg.sql("SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'barman'")?.parse()?;
            if restart >= seg_end {
                moved = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        ensure!(moved, "the slot did not advance to the reported flush position {seg_end}");
        ensure!(rx.stop().await? == StreamEnd::Stopped);

        let name = segment_name(sys.timeline.0, start);
        let on_server = pg.read_data_file(&format!("pg_wal/{name}")).with_context(|| format!("segment {name}"))?;
        ensure!(on_server.len() == segment.len(), "server segment is {} bytes", on_server.len());
        if let Some(i) = on_server.iter().zip(&segment).position(|(a, b)| a != b) {
            anyhow::bail!("streamed WAL differs from pg_wal/{name} at offset {i:#x}");
        }
        // The connection is usable after streaming.
        ensure!(conn.identify_system().await?.system_id == sys.system_id);
        conn.close().await?;
        Ok(())
    })
});

pg_test!(promotion_ends_the_timeline, |major| {
    let primary = Cluster::start(ClusterOptions::new(major))?;
    let standby = primary.create_standby()?;
    block_on(async {
        let mut conn = connect(&standby).await?;
        let sys = conn.identify_system().await?;
        ensure!(sys.timeline == TimelineId(1));
        let start = sys.xlogpos.segment_start(SEG);
        let mut rx = conn.start_replication(None, start, Some(TimelineId(1)), StreamOptions::default()).await?;
        let promote = std::thread::spawn(move || standby.promote().map(|tli| (tli, standby)));
        let mut received = start;
        let end = loop {
            match tokio::time::timeout(std::time::Duration::from_secs(60), rx.next_event()).await.context("no end of timeline within 60 s")?? {
                StreamEvent::WalData { start: at, data } => {
                    ensure!(at == received, "gap at {at}");
                    received = Lsn(at.0 + data.len() as u64);
                }
                StreamEvent::ReplyRequested => {}
                StreamEvent::End(end) => break end,
            }
        };
        let (tli, standby) = promote.join().expect("promote thread")?;
        ensure!(tli == 2);
        match end {
            StreamEnd::TimelineEnded { next_tli, next_start } => {
                ensure!(next_tli == TimelineId(2), "next timeline {next_tli}");
                ensure!(next_start <= received, "timeline 2 starts at {next_start}, after the {received} received");
            }
            other => anyhow::bail!("expected the timeline to end, got {other:?}"),
        }
        // The session goes on: the new timeline's history is there to fetch.
        let history = conn.timeline_history(TimelineId(2)).await?;
        ensure!(history.content[..] == standby.read_data_file("pg_wal/00000002.history")?[..]);
        conn.close().await?;
        Ok(())
    })
});

pg_test!(start_replication_errors_are_clear, |major| {
    let pg = Cluster::start(ClusterOptions::new(major))?;
    block_on(async {
        let mut conn = connect(&pg).await?;
        let sys = conn.identify_system().await?;
        let e = conn
            .start_replication(Some("nosuchslot"), sys.xlogpos.segment_start(SEG), None, StreamOptions::default())
            .await
            .expect_err("missing slot");
        ensure!(e.sqlstate() == Some("42704") && e.to_string().contains("nosuchslot"), "{e}");
        let ahead = Lsn(sys.xlogpos.0 + 64 * SEG).segment_start(SEG);
        // This error comes after CopyBothResponse (reference §2.8): from the first next_event.
        let mut rx = conn.start_replication(None, ahead, None, StreamOptions::default()).await?;
        let e = rx.next_event().await.expect_err("start ahead of flush");
        ensure!(e.to_string().contains("ahead of the WAL flush position"), "{e}");
        // Still usable.
        conn.identify_system().await?;
        conn.close().await?;
        Ok(())
    })
});
