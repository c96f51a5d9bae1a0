//! The benchmark dataset, built once per (major, size) and cached as a stopped data directory.
//!
//! pgbench tables at a chosen scale plus `bench_text`, rows of random hexadecimal text (four
//! `md5(random())` per row), so that compression has real work to do (zstd takes it to about
//! half, not to nothing). The cache lives in `target/bench/cache/pg<major>-<size>/data`; a
//! `complete` file beside it records the parameters, so a change of parameters rebuilds it.
//! Each run copies the cache into a fresh cluster directory, so every run starts from the same
//! bytes.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context as _};
use barman_tests::{Cluster, ClusterOptions, RunCommand as _};

/// The size of a run: dataset, WAL volume, pgbench duration, repetitions.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    /// `quick` or `full`.
    pub name: &'static str,
    /// `pgbench -i -s` (scale 1 ≈ 15 MB).
    pub pgbench_scale: u32,
    /// Rows of `bench_text` (≈ 170 bytes each on disk).
    pub text_rows: u64,
    /// Full WAL segments served by get-wal and archived by archive-wal.
    pub wal_segments: usize,
    /// Seconds of each pgbench run.
    pub pgbench_secs: u32,
    /// Measured repetitions of every tool (after no warm-up: caches are dropped instead).
    pub reps: usize,
}

impl Size {
    /// ≈ 300 MB cluster, a few minutes in all on 2 cores.
    pub const QUICK: Size = Size {
        name: "quick",
        pgbench_scale: 10,
        text_rows: 900_000,
        wal_segments: 32,
        pgbench_secs: 8,
        reps: 3,
    };
    /// ≈ 3 GB cluster.
    pub const FULL: Size = Size {
        name: "full",
        pgbench_scale: 100,
        text_rows: 9_000_000,
        wal_segments: 200,
        pgbench_secs: 30,
        reps: 5,
    };

    fn key(&self, major: u32) -> String {
        format!(
            "major={major} scale={} text_rows={} v1",
            self.pgbench_scale, self.text_rows
        )
    }
}

/// The settings every benchmark cluster runs with (on top of the test harness's own).
pub fn cluster_options(major: u32) -> ClusterOptions {
    ClusterOptions::new(major)
        .conf("shared_buffers", "256MB")
        .conf("max_wal_size", "4GB")
        .conf("checkpoint_timeout", "30min")
        .conf("max_connections", "50")
}

/// Returns the cached data directory for `size`, building it first when missing or stale.
pub fn cached_data_dir(cache_root: &Path, major: u32, size: &Size) -> anyhow::Result<PathBuf> {
    let dir = cache_root.join(format!("pg{major}-{}", size.name));
    let marker = dir.join("complete");
    let data = dir.join("data");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(size.key(major).as_str())
        && data.is_dir()
    {
        eprintln!("dataset: cached in {}", data.display());
        return Ok(data);
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    eprintln!(
        "dataset: building PostgreSQL {major} pgbench scale {} + {} rows of random text (once; cached in {})",
        size.pgbench_scale,
        size.text_rows,
        dir.display()
    );
    let pg = Cluster::start(cluster_options(major))?;
    pg.pgbench_init(size.pgbench_scale)
        .context("pgbench -i")?;
    // In batches of 1M rows, so that no single statement holds everything.
    pg.sql("CREATE TABLE bench_text (id bigint PRIMARY KEY, body text NOT NULL)")?;
    let mut done = 0u64;
    while done < size.text_rows {
        let n = (size.text_rows - done).min(1_000_000);
        pg.sql(&format!(
            "INSERT INTO bench_text SELECT g, md5(random()::text) || ' ' || md5(random()::text) \
             || ' ' || md5(random()::text) || ' ' || md5(random()::text) \
             FROM generate_series({}, {}) g",
            done + 1,
            done + n
        ))?;
        done += n;
    }
    pg.sql("VACUUM ANALYZE")?;
    pg.sql("CHECKPOINT")?;
    let bytes: u64 = pg
        .sql("SELECT sum(pg_database_size(oid)) FROM pg_database")?
        .parse()
        .context("database size")?;
    pg.stop()?;
    let tmp = dir.join("data.tmp");
    Command::new("cp")
        .arg("-a")
        .arg(pg.data_dir())
        .arg(&tmp)
        .run()
        .context("copying the dataset into the cache")?;
    std::fs::rename(&tmp, &data).context("renaming the cached dataset")?;
    std::fs::write(&marker, size.key(major)).context("writing the cache marker")?;
    eprintln!("dataset: {} MB of databases", bytes / 1_000_000);
    ensure!(data.is_dir(), "cache {} missing after build", data.display());
    Ok(data)
}
