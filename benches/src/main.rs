//! Benchmark harness: barman-rs against pg_basebackup, pg_receivewal, pgBackRest and real
//! Barman (PyPI), side by side in one run on one machine, on one cached dataset.
//!
//! ```sh
//! cargo run -p barman-benches --release -- [--size quick|full] [--only backup,restore,getwal,archive,sync]
//! ```
//!
//! The run: build (or reuse) the barman-rs release binaries, install the anchors when missing
//! (`pgbackrest` and GNU `time` from apt, Barman from PyPI into a venv of the cache:
//! [`barman_py`]), build or reuse the dataset ([`dataset`]), start a cluster on a copy of it
//! with every archive attached ([`site`]), run the works ([`works`]),
//! print a markdown table and write every sample as JSON to `target/bench/` ([`report`]).
//! Goals from the benchmark issue are shown beside the figures, never asserted.
//!
//! Not part of CI: a quick run takes a few minutes and needs root (PostgreSQL runs as the
//! `postgres` user, caches are dropped with `/proc/sys/vm/drop_caches`).

mod barman_py;
mod dataset;
mod measure;
mod report;
mod site;
mod works;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context as _};
use clap::Parser;
use serde_json::json;

use crate::dataset::Size;
use crate::measure::CachePolicy;
use crate::site::{Bins, Site};

/// The works, in the order they run.
const ALL_WORKS: [&str; 5] = ["backup", "restore", "getwal", "archive", "sync"];

#[derive(Debug, Parser)]
#[command(name = "barman-benches", about = "barman-rs against pg_basebackup, pg_receivewal, pgBackRest and real Barman, same machine, same run")]
struct Args {
    /// Dataset and run size: quick (≈ 300 MB, a few minutes) or full (≈ 3 GB).
    #[arg(long, default_value = "quick", value_parser = ["quick", "full"])]
    size: String,
    /// Comma-separated works: backup (uncompressed and zstd), restore, getwal, archive, sync.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Repetitions of each tool (default: 3 quick, 5 full; at least 3 is advised).
    #[arg(long)]
    reps: Option<usize>,
    /// PostgreSQL major (pgBackRest 2.45 from Debian 12 supports up to 15).
    #[arg(long, default_value_t = 15)]
    pg_major: u32,
    /// Do not drop the page cache before measured runs.
    #[arg(long)]
    warm: bool,
    /// Where the cache and results go (default: <workspace>/target/bench).
    #[arg(long)]
    out_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("barman-benches: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let mut size = match args.size.as_str() {
        "full" => Size::FULL,
        _ => Size::QUICK,
    };
    if let Some(r) = args.reps {
        size.reps = r.max(1);
    }
    let only: Vec<String> = if args.only.is_empty() {
        ALL_WORKS.iter().map(|s| (*s).to_owned()).collect()
    } else {
        for w in &args.only {
            if !ALL_WORKS.contains(&w.as_str()) {
                bail!("unknown work {w:?}; choose from {}", ALL_WORKS.join(","));
            }
        }
        args.only.clone()
    };
    let out_dir = args.out_dir.clone().unwrap_or_else(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        manifest.parent().unwrap_or(manifest).join("target/bench")
    });
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;

    choose_pg_binaries(args.pg_major);
    let bins = build_barman()?;
    ensure_apt("/usr/bin/time", "time")?;
    let pgbackrest = ensure_apt("/usr/bin/pgbackrest", "pgbackrest").is_ok();
    if !pgbackrest {
        eprintln!("pgBackRest could not be installed: its rows are left out");
    }
    let barman_py = barman_py::install(&out_dir.join("cache")).map_err(|e| {
        eprintln!("Barman {} could not be installed ({e:#}): its rows say so", barman_py::VERSION);
        format!("not installed: {}", barman_py::reason(&e))
    });
    let cache = if args.warm { CachePolicy::Warm } else { CachePolicy::detect() };
    eprintln!("caches: {}", cache.describe());

    let data = dataset::cached_data_dir(&out_dir.join("cache"), args.pg_major, &size)?;
    let site = Site::start(args.pg_major, &data, bins.clone(), cache, size, pgbackrest, barman_py)?;
    let db_bytes: u64 = site
        .sql("SELECT sum(pg_database_size(oid)) FROM pg_database")?
        .parse()
        .context("database size")?;
    eprintln!("site: PostgreSQL {} on port {}, {} MB of databases", args.pg_major, site.pg.port(), db_bytes / 1_000_000);

    let mut results = Vec::new();
    for w in &only {
        match w.as_str() {
            "backup" => {
                results.push(works::backup_plain(&site)?);
                results.push(works::backup_zstd(&site)?);
            }
            "restore" => results.extend(works::restore(&site)?),
            "getwal" => results.push(works::getwal(&site)?),
            "archive" => results.push(works::archive(&site)?),
            "sync" => results.push(works::sync(&site)?),
            _ => unreachable!("checked above"),
        }
    }

    let context = json!({
        "size": size.name,
        "repetitions": size.reps,
        "dataset": {
            "pgbench_scale": size.pgbench_scale,
            "text_rows": size.text_rows,
            "database_bytes": db_bytes,
            "wal_segments": size.wal_segments,
            "pgbench_seconds": size.pgbench_secs,
        },
        "caches": cache.describe(),
        "machine": machine(),
        "versions": versions(&site),
        "client_cpu_only": "CPU and RSS are those of the measured client process tree (GNU time); the server's own CPU is not included",
    });
    let table = report::markdown(&results);
    println!("## barman-rs benchmarks ({} run)\n", size.name);
    println!("{}\n", context_lines(&context));
    println!("{table}");
    let doc = report::json(&results, context);
    let stamp = Command::new("date").arg("+%Y%m%dT%H%M%S").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default();
    let text = serde_json::to_string_pretty(&doc)?;
    let file = out_dir.join(format!("results-{}-{stamp}.json", size.name));
    std::fs::write(&file, &text).with_context(|| format!("writing {}", file.display()))?;
    std::fs::write(out_dir.join("latest.json"), &text)?;
    std::fs::write(out_dir.join("latest.md"), &table)?;
    eprintln!("results: {}", file.display());
    Ok(())
}

fn context_lines(c: &serde_json::Value) -> String {
    let s = |p: &str| c.pointer(p).map(|v| v.to_string().trim_matches('"').to_owned()).unwrap_or_default();
    format!(
        "- machine: {} cores, {} RAM, {}\n- versions: {}, barman-rs {}, {}, {}, Barman {}\n- dataset: pgbench scale {} + {} random-text rows = {} MB; {} WAL segments; pgbench {} s\n- {} repetitions per tool, alternating; {}\n- CPU s and peak RSS are the measured client's process tree (GNU time), not the server's",
        s("/machine/cores"), s("/machine/memory"), s("/machine/kernel"),
        s("/versions/postgres"), s("/versions/barman_rs"), s("/versions/pgbackrest"), s("/versions/pg_basebackup"), s("/versions/barman_python"),
        s("/dataset/pgbench_scale"), s("/dataset/text_rows"),
        c.pointer("/dataset/database_bytes").and_then(|v| v.as_u64()).unwrap_or(0) / 1_000_000,
        s("/dataset/wal_segments"), s("/dataset/pgbench_seconds"),
        s("/repetitions"), s("/caches"),
    )
}

fn first_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

fn machine() -> serde_json::Value {
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned()))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| format!("{:.0} GiB", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned()))
        .unwrap_or_default();
    json!({
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu": cpu,
        "memory": mem,
        "kernel": first_line("uname", &["-sr"]),
    })
}

fn versions(site: &Site) -> serde_json::Value {
    let git = Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "describe", "--always", "--dirty"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    json!({
        "postgres": first_line(&site.pg.bin_dir().join("postgres").display().to_string(), &["--version"]),
        "pg_basebackup": first_line(&site.pg.bin_dir().join("pg_basebackup").display().to_string(), &["--version"]),
        "pgbackrest": first_line("/usr/bin/pgbackrest", &["version"]),
        "barman_rs": git,
        "barman_python": match &site.barman_py {
            Ok(b) => b.version.clone(),
            Err(why) => format!("not measured ({why})"),
        },
    })
}

/// Builds the barman-rs binaries of this workspace in this profile (never measure stale
/// binaries), and returns their paths (next to this executable).
fn build_barman() -> anyhow::Result<Bins> {
    let exe = std::env::current_exe().context("locating this executable")?;
    let dir = exe.parent().context("executable has no directory")?.to_path_buf();
    if let Ok(cargo) = std::env::var("CARGO") {
        let release = dir.file_name().is_some_and(|n| n == "release");
        if !release {
            eprintln!("warning: not a release build; run with `cargo run --release -p barman-benches`");
        }
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "-p", "barman-cli", "--bins"]);
        if release {
            cmd.arg("--release");
        }
        if let Some(target) = dir.parent() {
            cmd.env("CARGO_TARGET_DIR", target);
        }
        let status = cmd.status().context("cargo build -p barman-cli")?;
        if !status.success() {
            bail!("cargo build -p barman-cli failed");
        }
    }
    let bins = Bins {
        barman: dir.join("barman"),
        wal_restore: dir.join("barman-wal-restore"),
    };
    for b in [&bins.barman, &bins.wal_restore] {
        if !b.is_file() {
            bail!("{} missing: build with cargo build --release -p barman-cli", b.display());
        }
    }
    Ok(bins)
}

/// Prefers Debian's own build of `major` (`/usr/lib/postgresql/<major>/bin`) unless
/// `PG_BIN_DIR` says otherwise: the `pg-install` builds of some majors lack zstd, and without
/// it pg_basebackup's `client-zstd`/`server-zstd` anchors cannot run.
fn choose_pg_binaries(major: u32) {
    if std::env::var_os("PG_BIN_DIR").is_some_and(|v| !v.is_empty()) {
        return;
    }
    let debian = PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"));
    let zstd = Command::new(debian.join("pg_config"))
        .arg("--configure")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--with-zstd"));
    if debian.join("postgres").is_file() && zstd {
        // Single-threaded start-up: nothing reads the environment concurrently.
        std::env::set_var("PG_BIN_DIR", &debian);
    }
}

/// Installs Debian package `package` when `path` is missing.
fn ensure_apt(path: &str, package: &str) -> anyhow::Result<()> {
    if Path::new(path).exists() {
        return Ok(());
    }
    eprintln!("installing {package} (apt-get install -y {package})");
    let status = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .with_context(|| format!("apt-get install {package}"))?;
    if !status.success() || !Path::new(path).exists() {
        bail!("apt-get install {package} failed");
    }
    Ok(())
}
