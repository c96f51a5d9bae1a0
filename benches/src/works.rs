//! The measured works. Each tool of a work runs once per repetition, tools alternating
//! (`A B C A B C …`), so that a drift of the machine spreads over all of them. Before every
//! measured run the page cache is dropped (or, where not permitted, nothing is: see
//! [`CachePolicy`](crate::measure::CachePolicy)); preparation and clean-up are not timed.
//! A tool that fails is reported with its error and left out of the following repetitions.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context as _};
use barman_tests::{wait_for, RunCommand as _, BARMAN_USER, STREAMING_USER};

use crate::barman_py::{self, BarmanPy};
use crate::measure::{tree_bytes, Job, Sample};
use crate::report::{Goal, Row, Unit, Work};
use crate::site::Site;

/// One tool's measured run: the sample and the bytes it produced.
type Runner<'a> = Box<dyn FnMut() -> anyhow::Result<(Sample, Option<u64>)> + 'a>;

/// Runs every tool `reps` times, alternating; returns their rows.
fn alternate(work: &str, reps: usize, mut tools: Vec<(Row, Runner<'_>)>) -> Vec<Row> {
    for rep in 0..reps {
        for (row, run) in tools.iter_mut() {
            if row.note.is_some() {
                continue;
            }
            eprintln!("{work}: {} (run {}/{reps})", row.tool, rep + 1);
            match run() {
                Ok((sample, bytes)) => {
                    row.samples.push(sample);
                    if bytes.is_some() {
                        row.output_bytes = bytes;
                    }
                }
                Err(e) => {
                    eprintln!("{work}: {} failed: {e:#}", row.tool);
                    // The tool's own message, without the command line that precedes it.
                    let text = format!("{e:#}");
                    let first = text.lines().next().unwrap_or("");
                    let msg = first.split_once("): ").map_or(first, |(_, m)| m);
                    let short: String = msg.chars().take(140).collect();
                    row.note = Some(format!("failed: {short}"));
                }
            }
        }
    }
    tools.into_iter().map(|(row, _)| row).collect()
}

fn scratch(site: &Site) -> &Path {
    site.scratch.path()
}

/// Adds real Barman to `tools`: `runner` of what it needs (its site, a backup) when that is
/// ready, else a row that says why it was not run (`alternate` skips rows that carry a note;
/// the runner repeats the reason).
fn push_barman_py<'a, T>(
    tools: &mut Vec<(Row, Runner<'a>)>,
    ready: Result<T, &String>,
    runner: impl FnOnce(T) -> Runner<'a>,
) {
    let mut row = Row::new(barman_py::TOOL, false);
    match ready {
        Ok(t) => tools.push((row, runner(t))),
        Err(why) => {
            row.note = Some(format!("not run: {why}"));
            let why = why.clone();
            tools.push((row, Box::new(move || bail!("{why}"))));
        }
    }
}

/// Measures real Barman's `backup --wait pg` (zstd tar); returns the sample, the new backup's
/// ID and its size.
fn barman_py_backup(site: &Site, b: &BarmanPy) -> anyhow::Result<(Sample, String, u64)> {
    let before = b.backups();
    let job = b.job(&["backup", "--wait", "--wait-timeout", "300", "pg"]);
    site.cache.before_run()?;
    let sample = job.measure(scratch(site))?;
    let id = b
        .backups()
        .into_iter()
        .find(|id| !before.contains(id))
        .context("Barman's backup made no new backup")?;
    let bytes = b.check_zstd_backup(&id)?;
    Ok((sample, id, bytes))
}

/// Measures `barman backup --wait pg` with the current barman.conf; returns the sample, the
/// new backup's ID and its size.
fn barman_backup(site: &Site) -> anyhow::Result<(Sample, String, u64)> {
    barman_backup_with(site, true)
}

/// [`barman_backup`], optionally without `--wait` (then WAITING_FOR_WALS is accepted too).
fn barman_backup_with(site: &Site, wait: bool) -> anyhow::Result<(Sample, String, u64)> {
    let before = site.barman_backups();
    let args: &[&str] = if wait {
        &["backup", "--wait", "--wait-timeout", "300", "pg"]
    } else {
        &["backup", "pg"]
    };
    let job = site.barman(args);
    site.cache.before_run()?;
    let sample = job.measure(scratch(site))?;
    let id = site
        .barman_backups()
        .into_iter()
        .find(|id| !before.contains(id))
        .context("barman backup made no new backup")?;
    let info_path = site.barman_home.join("pg/meta").join(format!("{id}-backup.info"));
    let info = std::fs::read_to_string(&info_path)
        .with_context(|| format!("reading {}", info_path.display()))?;
    ensure!(
        info.lines()
            .any(|l| l == "status=DONE" || (!wait && l == "status=WAITING_FOR_WALS")),
        "backup {id} is not DONE:\n{info}"
    );
    let bytes = tree_bytes(&site.barman_home.join("pg/base").join(&id));
    Ok((sample, id, bytes))
}

/// Whether a barman-rs backup directory holds zstd-compressed tar files.
fn has_zst(site: &Site, id: &str) -> bool {
    let data = site.barman_home.join("pg/base").join(id).join("data");
    Site::entries(&data).iter().any(|n| n.ends_with(".tar.zst"))
}

/// Measures one pgBackRest full backup with `extra` options; returns the label and size.
fn pgbr_backup(site: &Site, extra: &[&str]) -> anyhow::Result<(Sample, String, u64)> {
    let before = site.pgbr_backups();
    let mut args = vec!["--stanza=bench", "--type=full"];
    args.extend_from_slice(extra);
    args.push("backup");
    let job = site.pgbackrest(&args)?;
    site.cache.before_run()?;
    let sample = job.measure(scratch(site))?;
    let label = site
        .pgbr_backups()
        .into_iter()
        .find(|l| !before.contains(l))
        .context("pgbackrest backup made no new backup")?;
    let bytes = tree_bytes(&site.path("pgbackrest/repo/backup/bench").join(&label));
    Ok((sample, label, bytes))
}

/// Measures pg_basebackup with `args` into a fresh directory, then removes it.
fn pg_basebackup(site: &Site, args: &[&str]) -> anyhow::Result<(Sample, Option<u64>)> {
    let out = site.fresh_dir("pg_basebackup-out", false)?;
    std::fs::remove_dir(&out)?;
    let job = site
        .pg_tool("pg_basebackup")
        .args(["-h", "127.0.0.1", "-p"])
        .args([site.pg.port().to_string()])
        .args(["-U", BARMAN_USER, "-c", "fast", "-X", "stream", "-D"])
        .args([out.as_os_str()])
        .args(args.iter().copied());
    site.cache.before_run()?;
    let sample = job.measure(scratch(site))?;
    let bytes = tree_bytes(&out);
    std::fs::remove_dir_all(&out)?;
    Ok((sample, Some(bytes)))
}

/// Full backup, uncompressed: barman-rs vs pg_basebackup -Ft / -Fp (and pgBackRest without
/// compression, for reference).
pub fn backup_plain(site: &Site) -> anyhow::Result<Work> {
    site.set_barman_extra(&[])?;
    let mut tools: Vec<(Row, Runner<'_>)> = vec![
        (
            Row::new("barman-rs", true),
            Box::new(|| {
                let (s, id, bytes) = barman_backup(site)?;
                site.drop_barman_backup(&id);
                Ok((s, Some(bytes)))
            }),
        ),
        (
            Row::new("barman-rs (no --wait)", true),
            Box::new(|| {
                let (s, id, bytes) = barman_backup_with(site, false)?;
                site.drop_barman_backup(&id);
                Ok((s, Some(bytes)))
            }),
        ),
        (
            Row::new("pg_basebackup -Ft", false),
            Box::new(|| pg_basebackup(site, &["-Ft"])),
        ),
        (
            Row::new("pg_basebackup -Fp", false),
            Box::new(|| pg_basebackup(site, &["-Fp"])),
        ),
    ];
    if site.pgbr_conf.is_some() {
        tools.push((
            Row::new("pgBackRest (compress-type=none)", false),
            Box::new(|| {
                let (s, _, bytes) = pgbr_backup(site, &["--compress-type=none"])?;
                Ok((s, Some(bytes)))
            }),
        ));
    }
    Ok(Work {
        name: "backup",
        title: "full backup, uncompressed, immediate checkpoint, WAL included".into(),
        unit: Unit::Seconds,
        rows: alternate("backup", site.size.reps, tools),
        goal: None,
        rss_goal: true,
    })
}

/// The barman.conf lines of a zstd backup.
const ZSTD_LINES: [&str; 2] = ["backup_compression = zstd", "backup_compression_level = 3"];

/// Full backup, zstd: barman-rs (when `backup_compression` works) vs pg_basebackup client-zstd
/// and server-zstd vs real Barman (`backup_compression = zstd`, tar: client-zstd level 3) vs
/// pgBackRest (zst level 3, process-max = cores).
pub fn backup_zstd(site: &Site) -> anyhow::Result<Work> {
    let mut tools: Vec<(Row, Runner<'_>)> = vec![
        (
            Row::new("barman-rs", true),
            Box::new(|| {
                site.set_barman_extra(&ZSTD_LINES)?;
                let result = barman_backup(site);
                site.set_barman_extra(&[])?;
                let (s, id, bytes) = result?;
                let zst = has_zst(site, &id);
                site.drop_barman_backup(&id);
                if !zst {
                    bail!("backup_compression = zstd not supported by this build (it made a plain backup)");
                }
                Ok((s, Some(bytes)))
            }),
        ),
        (
            Row::new("pg_basebackup client-zstd", false),
            Box::new(|| pg_basebackup(site, &["-Ft", "--compress=client-zstd"])),
        ),
        (
            Row::new("pg_basebackup server-zstd", false),
            Box::new(|| pg_basebackup(site, &["-Ft", "--compress=server-zstd"])),
        ),
    ];
    push_barman_py(&mut tools, site.barman_py.as_ref(), |b| {
        Box::new(move || {
            let (s, id, bytes) = barman_py_backup(site, b)?;
            b.delete_backup(&id)?;
            Ok((s, Some(bytes)))
        })
    });
    if site.pgbr_conf.is_some() {
        tools.push((
            Row::new("pgBackRest", false),
            Box::new(|| {
                let (s, _, bytes) = pgbr_backup(site, &[])?;
                Ok((s, Some(bytes)))
            }),
        ));
    }
    Ok(Work {
        name: "backup-zstd",
        title: "full backup, zstd level 3".into(),
        unit: Unit::Seconds,
        rows: alternate("backup-zstd", site.size.reps, tools),
        goal: Some(Goal::RatioAtMost { anchor: "pgBackRest", max: 0.5 }),
        rss_goal: true,
    })
}

/// Restore into an empty directory: barman-rs `recover -j cores` vs pgBackRest `restore`
/// (process-max = cores), of a plain backup and (when barman-rs makes them) of a zstd one;
/// real Barman's `recover --jobs cores` of its own zstd backup joins the zstd restore.
pub fn restore(site: &Site) -> anyhow::Result<Vec<Work>> {
    eprintln!("restore: taking the backups to restore (not timed)");
    site.set_barman_extra(&[])?;
    let (_, plain_id, _) = barman_backup(site)?;
    site.set_barman_extra(&ZSTD_LINES)?;
    let zstd_id = match barman_backup(site) {
        Ok((_, id, _)) if has_zst(site, &id) => Ok(id),
        Ok((_, id, _)) => {
            site.drop_barman_backup(&id);
            Err("backup_compression = zstd not supported by this build".to_owned())
        }
        Err(e) => Err(format!("zstd backup failed: {e:#}")),
    };
    site.set_barman_extra(&[])?;
    let barman_py_id = match &site.barman_py {
        Ok(b) => barman_py_backup(site, b)
            .map(|(_, id, _)| id)
            .map_err(|e| format!("its zstd backup failed: {}", barman_py::reason(&e))),
        Err(why) => Err(why.clone()),
    };
    let (pgbr_none, pgbr_zst) = if site.pgbr_conf.is_some() {
        let (_, none, _) = pgbr_backup(site, &["--compress-type=none"])?;
        let (_, zst, _) = pgbr_backup(site, &[])?;
        (Some(none), Some(zst))
    } else {
        (None, None)
    };
    let jobs = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .to_string();

    let barman_restore = |id: &str| -> anyhow::Result<(Sample, Option<u64>)> {
        let dest = site.fresh_dir("restore-dest", false)?;
        std::fs::remove_dir(&dest)?;
        let job = site.barman(&["recover", "-j", &jobs, "pg", id, dest.to_str().context("utf-8")?]);
        site.cache.before_run()?;
        let s = job.measure(scratch(site))?;
        let bytes = tree_bytes(&dest);
        ensure!(dest.join("PG_VERSION").is_file(), "recover left no PG_VERSION");
        std::fs::remove_dir_all(&dest)?;
        Ok((s, Some(bytes)))
    };
    let pgbr_restore = |label: &str| -> anyhow::Result<(Sample, Option<u64>)> {
        let dest = site.fresh_dir("restore-dest", true)?;
        let path_opt = format!("--pg1-path={}", dest.display());
        let set_opt = format!("--set={label}");
        let job = site.pgbackrest(&["--stanza=bench", &path_opt, &set_opt, "restore"])?;
        site.cache.before_run()?;
        let s = job.measure(scratch(site))?;
        let bytes = tree_bytes(&dest);
        ensure!(dest.join("PG_VERSION").is_file(), "restore left no PG_VERSION");
        std::fs::remove_dir_all(&dest)?;
        Ok((s, Some(bytes)))
    };

    let mut works = Vec::new();
    let mut tools: Vec<(Row, Runner<'_>)> = vec![(
        Row::new("barman-rs", true),
        Box::new(|| barman_restore(&plain_id)),
    )];
    if let Some(label) = &pgbr_none {
        tools.push((
            Row::new("pgBackRest", false),
            Box::new(move || pgbr_restore(label)),
        ));
    }
    works.push(Work {
        name: "restore",
        title: format!("restore of an uncompressed backup into an empty directory (-j / process-max {jobs})"),
        unit: Unit::Seconds,
        rows: alternate("restore", site.size.reps, tools),
        goal: Some(Goal::RatioAtMost { anchor: "pgBackRest", max: 0.7 }),
        rss_goal: true,
    });

    let mut tools: Vec<(Row, Runner<'_>)> = Vec::new();
    let mut missing = None;
    match &zstd_id {
        Ok(id) => tools.push((Row::new("barman-rs", true), Box::new(move || barman_restore(id)))),
        Err(why) => missing = Some(why.clone()),
    }
    if let Some(label) = &pgbr_zst {
        tools.push((
            Row::new("pgBackRest", false),
            Box::new(move || pgbr_restore(label)),
        ));
    }
    let barman_py_ready = match (&site.barman_py, &barman_py_id) {
        (Ok(b), Ok(id)) => Ok((b, id.as_str())),
        (Err(why), _) | (_, Err(why)) => Err(why),
    };
    push_barman_py(&mut tools, barman_py_ready, |(b, id)| {
        let jobs = jobs.as_str();
        Box::new(move || {
            let dest = site.fresh_dir("restore-dest", false)?;
            std::fs::remove_dir(&dest)?;
            let job = b.job(&["recover", "--jobs", jobs, "pg", id, dest.to_str().context("utf-8")?]);
            site.cache.before_run()?;
            let s = job.measure(scratch(site))?;
            let bytes = tree_bytes(&dest);
            ensure!(dest.join("PG_VERSION").is_file(), "Barman's recover left no PG_VERSION");
            std::fs::remove_dir_all(&dest)?;
            Ok((s, Some(bytes)))
        })
    });
    let mut rows = alternate("restore-zstd", site.size.reps, tools);
    if let Some(why) = missing {
        let mut row = Row::new("barman-rs", true);
        row.note = Some(why);
        rows.insert(0, row);
    }
    works.push(Work {
        name: "restore-zstd",
        title: "restore of a zstd backup into an empty directory".into(),
        unit: Unit::Seconds,
        rows,
        goal: Some(Goal::RatioAtMost { anchor: "pgBackRest", max: 0.7 }),
        rss_goal: true,
    });
    site.drop_barman_backup(&plain_id);
    if let Ok(id) = &zstd_id {
        site.drop_barman_backup(id);
    }
    if let (Ok(b), Ok(id)) = (&site.barman_py, &barman_py_id) {
        b.delete_backup(id)?;
    }
    Ok(works)
}

/// A shell script running `line(segment)` for each segment, stopping at the first failure.
fn loop_script(site: &Site, name: &str, segs: &[String], line: impl Fn(&str) -> String) -> anyhow::Result<std::path::PathBuf> {
    let mut text = String::from("#!/bin/sh\nset -e\n");
    for s in segs {
        text.push_str(&line(s));
        text.push('\n');
    }
    let path = site.path(name);
    std::fs::write(&path, text)?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

/// Checks that every segment in `out` is the staged one (a fast wrong answer does not count).
fn check_segments(site: &Site, out: &Path, segs: &[String]) -> anyhow::Result<()> {
    let wal = site.wal.borrow();
    let stage = &wal.as_ref().context("no WAL set")?.stage;
    for s in [&segs[0], &segs[segs.len() / 2], &segs[segs.len() - 1]] {
        let got = std::fs::read(out.join(s)).with_context(|| format!("{s} not restored"))?;
        ensure!(got == std::fs::read(stage.join(s))?, "{s}: restored bytes differ");
    }
    Ok(())
}

/// restore_command cost per segment over many segments, one process per segment as
/// PostgreSQL calls it: barman-rs `get-wal`, `barman-wal-restore` without and with prefetch
/// (through a stand-in ssh), pgBackRest `archive-get`, real Barman's `get-wal`. WAL is stored
/// zstd-compressed by all.
pub fn getwal(site: &Site) -> anyhow::Result<Work> {
    let wal = site.ensure_wal(site.size.wal_segments)?;
    let segs = wal.names.clone();
    let n = segs.len() as f64;
    let conf = site.barman_conf.display().to_string();
    let barman = site.bins.barman.display().to_string();
    let restore = site.bins.wal_restore.display().to_string();
    let path_env = format!(
        "{}:{}",
        site.tools_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let run_script = |script: &Path, out: &Path, server: bool| -> anyhow::Result<(Sample, Option<u64>)> {
        let job = Job::new("/bin/sh")
            .args([script.as_os_str()])
            .env("PATH", &path_env)
            .user(if server { site.user.clone() } else { None });
        site.cache.before_run()?;
        let mut s = job.measure(scratch(site))?;
        check_segments(site, out, &segs)?;
        s.value = Some(s.wall_s * 1000.0 / n);
        Ok((s, None))
    };

    let out_get = site.path("getwal-get");
    let s_get = loop_script(site, "getwal-get.sh", &segs, |s| {
        format!("{barman} -c {conf} get-wal pg {s} > {}/{s}", out_get.display())
    })?;
    let out_wr = site.path("getwal-wr");
    let s_wr = loop_script(site, "getwal-wr.sh", &segs, |s| {
        format!("{restore} -U barman -c {conf} 127.0.0.1 pg {s} {}/{s}", out_wr.display())
    })?;
    let out_wrp = site.path("getwal-wrp");
    let spool = site.path("getwal-spool");
    let s_wrp = loop_script(site, "getwal-wrp.sh", &segs, |s| {
        format!(
            "{restore} -p 4 --spool-dir {} -U barman -c {conf} 127.0.0.1 pg {s} {}/{s}",
            spool.display(),
            out_wrp.display()
        )
    })?;
    let out_pgbr = site.path("getwal-pgbr");
    let s_pgbr = match &site.pgbr_conf {
        Some(c) => Some(loop_script(site, "getwal-pgbr.sh", &segs, |s| {
            format!(
                "/usr/bin/pgbackrest --config={} --stanza=bench archive-get {s} {}/{s}",
                c.display(),
                out_pgbr.display()
            )
        })?),
        None => None,
    };
    let out_py = site.path("getwal-py");
    let s_py = match (&site.barman_py, &wal.barman_py) {
        (Ok(b), Ok(())) => Ok(loop_script(site, "getwal-py.sh", &segs, |s| {
            format!("{} get-wal pg {s} > {}/{s}", b.shell_prefix(), out_py.display())
        })?),
        (Err(why), _) | (_, Err(why)) => Err(why),
    };

    let mut tools: Vec<(Row, Runner<'_>)> = vec![
        (
            Row::new("barman-rs get-wal", true),
            Box::new(|| {
                site.fresh_dir("getwal-get", false)?;
                run_script(&s_get, &out_get, false)
            }),
        ),
        (
            Row::new("barman-rs barman-wal-restore", true),
            Box::new(|| {
                site.fresh_dir("getwal-wr", false)?;
                run_script(&s_wr, &out_wr, false)
            }),
        ),
        (
            Row::new("barman-rs barman-wal-restore -p 4", true),
            Box::new(|| {
                site.fresh_dir("getwal-wrp", false)?;
                site.fresh_dir("getwal-spool", false)?;
                run_script(&s_wrp, &out_wrp, false)
            }),
        ),
    ];
    if let Some(script) = &s_pgbr {
        tools.push((
            Row::new("pgbackrest archive-get", false),
            Box::new(|| {
                site.fresh_dir("getwal-pgbr", true)?;
                run_script(script, &out_pgbr, true)
            }),
        ));
    }
    push_barman_py(&mut tools, s_py.as_ref().map_err(|why| *why), |script: &PathBuf| {
        let out_py = &out_py;
        Box::new(move || {
            site.fresh_dir("getwal-py", false)?;
            run_script(script, out_py, false)
        })
    });
    Ok(Work {
        name: "getwal",
        title: format!("restore_command cost per segment, {} zstd-compressed segments, one call each", segs.len()),
        unit: Unit::MsPerSegment,
        rows: alternate("getwal", site.size.reps, tools),
        goal: Some(Goal::MaxValue(10.0)),
        rss_goal: false,
    })
}

/// archive-wal throughput: segments dropped in `incoming/`, then one `barman archive-wal`
/// (validation + zstd), vs pgBackRest `archive-push` once per segment (as archive_command).
pub fn archive(site: &Site) -> anyhow::Result<Work> {
    let wal = site.ensure_wal(site.size.wal_segments)?;
    let segs = wal.names.clone();
    let n = segs.len() as f64;
    let stage = wal.stage.clone();
    let arch = site.barman_home.join("arch");

    let mut tools: Vec<(Row, Runner<'_>)> = vec![(
        Row::new("barman-rs archive-wal", true),
        Box::new(|| {
            if arch.exists() {
                std::fs::remove_dir_all(&arch)?;
            }
            let incoming = arch.join("incoming");
            std::fs::create_dir_all(&incoming)?;
            for s in &segs {
                std::fs::copy(stage.join(s), incoming.join(s))?;
            }
            site.cache.before_run()?;
            let mut sample = site.barman(&["archive-wal", "arch"]).measure(scratch(site))?;
            let archived = segs
                .iter()
                .filter(|s| arch.join("wals").join(&s[..16]).join(s).is_file())
                .count();
            ensure!(
                archived == segs.len(),
                "archive-wal archived {archived} of {} segments (errors/: {:?})",
                segs.len(),
                Site::entries(&arch.join("errors"))
            );
            sample.value = Some(n / sample.wall_s);
            Ok((sample, Some(tree_bytes(&arch.join("wals")))))
        }),
    )];
    if let Some(conf) = &site.pgbr_arch_conf {
        let script = loop_script(site, "archive-pgbr.sh", &segs, |s| {
            format!(
                "/usr/bin/pgbackrest --config={} --stanza=bench archive-push {}/{s}",
                conf.display(),
                stage.display()
            )
        })?;
        let archive_dir = site.path("pgbackrest/repo-arch/archive/bench");
        tools.push((
            Row::new("pgbackrest archive-push", false),
            Box::new(move || {
                // Empty the archive but keep archive.info (the stanza).
                for id in Site::entries(&archive_dir) {
                    let p = archive_dir.join(&id);
                    if p.is_dir() {
                        for sub in Site::entries(&p) {
                            if sub.len() == 16 {
                                std::fs::remove_dir_all(p.join(sub))?;
                            }
                        }
                    }
                }
                let job = Job::new("/bin/sh").args([script.as_os_str()]).user(site.user.clone());
                site.cache.before_run()?;
                let mut sample = job.measure(scratch(site))?;
                sample.value = Some(n / sample.wall_s);
                Ok((sample, Some(tree_bytes(&archive_dir))))
            }),
        ));
    }
    Ok(Work {
        name: "archive",
        title: format!("archiving {} segments with validation and zstd compression", segs.len()),
        unit: Unit::SegmentsPerSecond,
        rows: alternate("archive", site.size.reps, tools),
        goal: Some(Goal::MinValue(200.0)),
        rss_goal: true,
    })
}

/// Parses `tps = 1234.5 (...)` from pgbench's report.
fn parse_tps(report: &str) -> anyhow::Result<f64> {
    report
        .lines()
        .find_map(|l| l.trim().strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no tps in pgbench output:\n{report}"))
}

/// pgbench -c 4 for a fixed time; returns its TPS.
fn pgbench(site: &Site) -> anyhow::Result<f64> {
    let out = site
        .pg
        .command("pgbench")
        .args(["-n", "-c", "4", "-j", "2", "-T"])
        .arg(site.size.pgbench_secs.to_string())
        .arg("-h")
        .arg(site.pg.socket_dir())
        .args(["-p", &site.pg.port().to_string(), "-U", "postgres", "postgres"])
        .run()?;
    parse_tps(&out)
}

/// Waits until `app` is the synchronous standby and has caught up.
fn wait_sync(site: &Site, app: &str) -> anyhow::Result<()> {
    wait_for(&format!("{app} to be the synchronous standby"), || {
        Ok(site.sql(&format!(
            "SELECT count(*) FROM pg_stat_replication WHERE application_name = '{app}' \
             AND sync_state = 'sync' AND state = 'streaming' \
             AND flush_lsn >= pg_current_wal_flush_lsn() - 16 * 1024 * 1024"
        ))? == "1")
    })
}

/// pgbench TPS with no standby, with pg_receivewal --synchronous and with barman-rs
/// receive-wal as the synchronous standby. CPU and RSS are the receiver's.
pub fn sync(site: &Site) -> anyhow::Result<Work> {
    site.stop_receiver()?;
    let recv_conn = format!("{} application_name=pg_receivewal", site.pg.conninfo(STREAMING_USER));
    let tools: Vec<(Row, Runner<'_>)> = vec![
        (
            {
                let mut row = Row::new("no standby", false);
                row.baseline = true;
                row
            },
            Box::new(|| {
                site.pg.set_conf("synchronous_standby_names", "")?;
                let tps = pgbench(site)?;
                Ok((
                    Sample { wall_s: site.size.pgbench_secs as f64, cpu_s: f64::NAN, rss_mib: f64::NAN, value: Some(tps), stdout: String::new() },
                    None,
                ))
            }),
        ),
        (
            Row::new("pg_receivewal --synchronous", false),
            Box::new(|| {
                let dir = site.fresh_dir("pg_receivewal", false)?;
                site.pg.set_conf("synchronous_standby_names", "pg_receivewal")?;
                let mut running = site
                    .pg_tool("pg_receivewal")
                    .args(["--synchronous", "-n", "-d", &recv_conn, "-D"])
                    .args([dir.as_os_str()])
                    .spawn_measured(scratch(site))?;
                let waited = wait_sync(site, "pg_receivewal");
                let tps = waited.and_then(|()| pgbench(site));
                ensure!(!running.exited(), "pg_receivewal exited during the run");
                let mut s = running.stop()?;
                let tps = tps?;
                s.value = Some(tps);
                Ok((s, None))
            }),
        ),
        (
            Row::new("barman-rs receive-wal", true),
            Box::new(|| {
                site.pg.set_conf("synchronous_standby_names", "barman_receive_wal")?;
                let mut running = site.barman(&["receive-wal", "pg"]).spawn_measured(scratch(site))?;
                let waited = wait_sync(site, "barman_receive_wal");
                let tps = waited.and_then(|()| pgbench(site));
                ensure!(!running.exited(), "barman receive-wal exited during the run");
                let mut s = running.stop()?;
                let tps = tps?;
                s.value = Some(tps);
                Ok((s, None))
            }),
        ),
    ];
    let rows = alternate("sync", site.size.reps, tools);
    site.pg.set_conf("synchronous_standby_names", "")?;
    site.start_receiver()?;
    Ok(Work {
        name: "sync",
        title: format!("pgbench -c 4 -j 2 -T {} TPS by synchronous standby", site.size.pgbench_secs),
        unit: Unit::Tps,
        rows,
        goal: Some(Goal::RatioAtLeast { anchor: "pg_receivewal --synchronous", min: 1.1 }),
        rss_goal: true,
    })
}
