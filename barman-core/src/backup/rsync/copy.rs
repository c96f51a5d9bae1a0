//! The copy itself, as Barman's `RsyncCopyController` (`barman/copy_controller.py`) does it.
//!
//! Each directory (every tablespace, then PGDATA) is first *analysed*: the source is listed over
//! ssh, or locally for `backup_method = local-rsync` ([`Rsync::source`]; `rsync --list-only -r`,
//! with the item's filters), and so is the reference directory of the
//! previous backup when `reuse_backup` is `link` or `copy`. Each file then goes to one of two
//! lists:
//!
//! * *safe*: older than the safe horizon (the previous backup's `begin_time`: a file not
//!   touched since then was already the same when that backup began), or different in size or
//!   modification time from the reference (rsync's quick check will see the change anyway);
//! * *check*: the rest, whose size and time match the reference although it may have changed
//!   since the previous backup: it is copied with `--checksum`, so a change within the same
//!   second is not mistaken for no change.
//!
//! The directories are made first (one rsync, `--dirs`). The files are then shared out into
//! `parallel_jobs` lists per kind and copied by that many rsync processes at once, each given its
//! list on stdin (`--files-from=-`), with `--link-dest` / `--copy-dest` pointing at the reference,
//! so that unchanged files are hard-linked (or copied locally) instead of transferred.
//! `global/pg_control` is copied last, alone, as PostgreSQL requires, and then the configuration
//! files that live outside PGDATA.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::catalog::PyValue;
use crate::config::ReuseBackup;
use crate::ssh::{share_out, Rsync, SshError};

/// A directory to copy (a tablespace, or PGDATA).
#[derive(Debug, Clone)]
pub(crate) struct DirItem {
    /// `pgdata` or the tablespace's name: how the statistics name it.
    pub label: String,
    /// The directory on the PostgreSQL host (this host in local mode).
    pub src: String,
    /// Where it goes (made beforehand).
    pub dst: PathBuf,
    /// The same directory in the previous backup, for `reuse_backup`.
    pub reuse: Option<PathBuf>,
    /// rsync filter options (`--include=…`, `--exclude=…`, `--filter=P_…`), in order.
    pub filters: Vec<String>,
    /// `--bwlimit` in KB/s.
    pub bwlimit: Option<u64>,
}

/// A single file to copy.
#[derive(Debug, Clone)]
pub(crate) struct FileItem {
    /// `pg_control`, `config_file`, `hba_file`, `ident_file`.
    pub label: String,
    /// The file on the PostgreSQL host.
    pub src: String,
    /// The local file, or directory when it ends with `/`.
    pub dst: String,
    /// Whether a missing file is fine (`ident_file`, as PostgreSQL itself allows).
    pub optional: bool,
}

/// Everything to copy and how.
#[derive(Debug, Clone)]
pub(crate) struct CopyPlan {
    /// The tablespaces, then PGDATA.
    pub dirs: Vec<DirItem>,
    /// `global/pg_control`, copied after every directory.
    pub pg_control: FileItem,
    /// Configuration files outside PGDATA, copied last.
    pub config: Vec<FileItem>,
    /// `reuse_backup`.
    pub reuse: ReuseBackup,
    /// The previous backup's `begin_time` (seconds since the epoch), when there is one.
    pub safe_horizon: Option<i64>,
    /// `parallel_jobs`: rsync processes at once.
    pub jobs: usize,
}

/// The copy failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CopyError {
    /// An rsync run failed.
    #[error("data transfer failure on {label}")]
    Rsync {
        /// The item being copied.
        label: String,
        /// What rsync said.
        #[source]
        source: SshError,
    },
    /// rsync listed something barman-rs cannot use.
    #[error("{label}: unexpected line in the file list of rsync: {line:?}")]
    Listing {
        /// The item being listed.
        label: String,
        /// The line.
        line: String,
    },
}

/// One entry of `rsync --list-only`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListEntry {
    /// A directory (`d` mode).
    pub is_dir: bool,
    /// Bytes.
    pub size: u64,
    /// The modification time exactly as rsync printed it (`2026/01/05 12:00:00`, local time).
    pub date: String,
    /// The path relative to the listed directory (`.` for itself).
    pub path: String,
}

/// Parses `rsync --no-human-readable --list-only -r` output: `<mode> <size> <date> <time>
/// <path>` per line (Barman's `LIST_ONLY_RE`, for rsync compiled with `HAVE_STRFTIME`, as every
/// current build is). `None` for a line of another shape.
pub(crate) fn parse_list_line(line: &str) -> Option<ListEntry> {
    let mut rest = line.trim_end();
    let mut field = || {
        let s = rest.trim_start();
        let end = s.find(' ')?;
        let (f, r) = s.split_at(end);
        rest = r;
        Some(f)
    };
    let mode = field()?;
    let size = field()?;
    let day = field()?;
    let time = field()?;
    let path = rest.trim_start();
    let valid_day = day.len() == 10 && day.bytes().enumerate().all(|(i, b)| if i == 4 || i == 7 { b == b'/' } else { b.is_ascii_digit() });
    let valid_time = time.len() == 8 && time.bytes().enumerate().all(|(i, b)| if i == 2 || i == 5 { b == b':' } else { b.is_ascii_digit() });
    if mode.len() < 10 || !valid_day || !valid_time || path.is_empty() {
        return None;
    }
    Some(ListEntry { is_dir: mode.starts_with('d'), size: size.parse().ok()?, date: format!("{day} {time}"), path: path.to_owned() })
}

/// The epoch seconds of a listing date, read in this host's time zone as rsync printed it; the
/// later reading when the local time is ambiguous (a DST fold), so that a file is never taken
/// for older than it is. `None` when the local time does not exist.
pub(crate) fn list_date_epoch(date: &str) -> Option<i64> {
    use chrono::TimeZone as _;
    let naive = chrono::NaiveDateTime::parse_from_str(date, "%Y/%m/%d %H:%M:%S").ok()?;
    chrono::Local.from_local_datetime(&naive).latest().map(|t| t.timestamp())
}

/// A listed path that stays inside the directory it was listed from.
fn is_relative_inside(path: &str) -> bool {
    let p = Path::new(path);
    !p.as_os_str().is_empty() && p.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// What the analysis of one directory found.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Analysis {
    /// Directories to make, relative (with `.`).
    pub dirs: Vec<String>,
    /// Files copied with rsync's quick check: (size, path).
    pub safe: Vec<(u64, String)>,
    /// Files copied with `--checksum`: (size, path).
    pub check: Vec<(u64, String)>,
}

/// Sorts the source listing into [`Analysis`] lists against the reference listing (`None`
/// when it could not be read: every file newer than the horizon is then checked).
pub(crate) fn classify(source: Vec<ListEntry>, reference: Option<&HashMap<String, ListEntry>>, safe_horizon: Option<i64>) -> Analysis {
    let mut a = Analysis::default();
    for e in source {
        if e.is_dir {
            a.dirs.push(e.path);
            continue;
        }
        let older = safe_horizon.zip(list_date_epoch(&e.date)).is_some_and(|(horizon, t)| t < horizon);
        let safe = older
            || match reference {
                None => false,
                Some(r) => r.get(&e.path).is_none_or(|old| old.size != e.size || old.date != e.date),
            };
        if safe { a.safe.push((e.size, e.path)) } else { a.check.push((e.size, e.path)) }
    }
    a
}

/// One rsync run of the copy.
struct Job {
    /// Index of the item in [`Stats::labels`].
    item: usize,
    args: Vec<String>,
    stdin: Option<String>,
    bwlimit: Option<u64>,
}

/// Times of the copy, for `copy_stats`.
#[derive(Debug, Default)]
struct Stats {
    labels: Vec<String>,
    analysis: Vec<Option<(Duration, Duration)>>,
    jobs: Vec<(usize, Duration, Duration)>,
}

/// The copy's timings in Barman's `copy_stats` form, and `copy_time` alone.
#[derive(Debug, Clone)]
pub(crate) struct CopyOutcome {
    /// `copy_stats`, in the key order Barman writes.
    pub stats: Vec<(PyValue, PyValue)>,
    /// `copy_stats['copy_time']`.
    pub copy_time: f64,
}

/// Runs the plan: see the module documentation for the steps. On failure nothing more is
/// started; what was running finishes (or is stopped by cancelling `rsync`'s children).
pub(crate) fn copy(plan: &CopyPlan, rsync: &Rsync) -> Result<CopyOutcome, CopyError> {
    let t0 = Instant::now();
    let mut stats = Stats::default();
    let mut jobs = Vec::new();
    let reuse_opt = match plan.reuse {
        ReuseBackup::Link => Some("--link-dest"),
        ReuseBackup::Copy => Some("--copy-dest"),
        ReuseBackup::Off => None,
    };
    for item in &plan.dirs {
        let idx = stats.labels.len();
        stats.labels.push(item.label.clone());
        let start = t0.elapsed();
        let fail = |source| CopyError::Rsync { label: item.label.clone(), source };
        let reference = item.reuse.as_ref().filter(|r| reuse_opt.is_some() && r.is_dir());
        let ref_hash = match reference {
            None => Some(HashMap::new()),
            Some(dir) => match list(rsync, &item.label, &item.filters, &format!("{}/", dir.display())) {
                Ok(entries) => Some(entries.into_iter().filter(|e| !e.is_dir).map(|e| (e.path.clone(), e)).collect()),
                Err(e) => {
                    tracing::error!(
                        error = %crate::error_chain(&e),
                        "Unable to retrieve reference directory file list. Using only source file information to decide \
                         which files need to be copied with checksums enabled"
                    );
                    None
                }
            },
        };
        let source = list(rsync, &item.label, &item.filters, &rsync.source(&format!("{}/", item.src)))?;
        let analysis = classify(source, ref_hash.as_ref(), plan.safe_horizon);
        // The directories first, with their modes.
        let mut dir_list: String = analysis.dirs.iter().map(|d| format!("{d}\n")).collect();
        if dir_list.is_empty() {
            dir_list.push_str(".\n");
        }
        let mut args = vec!["--no-recursive".to_owned(), "--dirs".to_owned()];
        args.extend(item.filters.iter().cloned());
        args.extend(["--files-from=-".to_owned(), rsync.source(&format!("{}/", item.src)), format!("{}/", item.dst.display())]);
        rsync.run(&args, Some(&dir_list), None).map_err(fail)?;
        stats.analysis.push(Some((start, t0.elapsed())));

        for (files, checksum) in [(analysis.safe, false), (analysis.check, true)] {
            for bucket in share_out(files, plan.jobs) {
                let mut args = Vec::new();
                if let (Some(opt), Some(dir)) = (reuse_opt, reference) {
                    args.push(format!("{opt}={}", dir.display()));
                }
                args.push("--ignore-missing-args".to_owned());
                if checksum {
                    args.push("--checksum".to_owned());
                }
                args.extend(item.filters.iter().cloned());
                args.extend(["--files-from=-".to_owned(), rsync.source(&format!("{}/", item.src)), format!("{}/", item.dst.display())]);
                let stdin: String = bucket.iter().map(|p| format!("{p}\n")).collect();
                jobs.push(Job { item: idx, args, stdin: Some(stdin), bwlimit: item.bwlimit });
            }
        }
    }
    run_jobs(rsync, jobs, plan.jobs, &stats.labels, t0, &mut stats.jobs)?;

    // pg_control after everything else, then the configuration files.
    let mut last = Vec::new();
    for file in std::iter::once(&plan.pg_control).chain(&plan.config) {
        let idx = stats.labels.len();
        stats.labels.push(file.label.clone());
        stats.analysis.push(None);
        let mut args = Vec::new();
        if file.optional {
            args.push("--ignore-missing-args".to_owned());
        }
        args.extend([rsync.source(&file.src), file.dst.clone()]);
        last.push(Job { item: idx, args, stdin: None, bwlimit: None });
    }
    for job in last {
        run_jobs(rsync, vec![job], 1, &stats.labels, t0, &mut stats.jobs)?;
    }
    Ok(stats.outcome(t0.elapsed(), plan.jobs))
}

/// `rsync --no-human-readable --list-only -r <filters> <dir>`, parsed.
fn list(rsync: &Rsync, label: &str, filters: &[String], dir: &str) -> Result<Vec<ListEntry>, CopyError> {
    let mut args = vec!["--no-human-readable".to_owned(), "--list-only".to_owned(), "-r".to_owned()];
    args.extend(filters.iter().cloned());
    args.push(dir.to_owned());
    let out = rsync.run(&args, None, None).map_err(|source| CopyError::Rsync { label: label.to_owned(), source })?;
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            parse_list_line(line)
                .filter(|e| is_relative_inside(&e.path))
                .ok_or_else(|| CopyError::Listing { label: label.to_owned(), line: line.to_owned() })
        })
        .collect()
}

/// Runs `jobs` on `workers` threads; the first failure stops the starting of new ones.
fn run_jobs(
    rsync: &Rsync,
    jobs: Vec<Job>,
    workers: usize,
    labels: &[String],
    t0: Instant,
    done: &mut Vec<(usize, Duration, Duration)>,
) -> Result<(), CopyError> {
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let first_error: Mutex<Option<CopyError>> = Mutex::new(None);
    let finished: Mutex<Vec<(usize, Duration, Duration)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..workers.clamp(1, jobs.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(i).filter(|_| !failed.load(Ordering::Relaxed)) else { break };
                let start = t0.elapsed();
                match rsync.run(&job.args, job.stdin.as_deref(), job.bwlimit) {
                    Ok(_) => finished.lock().expect("no panics while held").push((job.item, start, t0.elapsed())),
                    Err(source) => {
                        failed.store(true, Ordering::Relaxed);
                        first_error
                            .lock()
                            .expect("no panics while held")
                            .get_or_insert(CopyError::Rsync { label: labels[job.item].clone(), source });
                    }
                }
            });
        }
    });
    done.extend(finished.into_inner().expect("threads joined"));
    match first_error.into_inner().expect("threads joined") {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e6
}

impl Stats {
    /// Barman's `RsyncCopyController.statistics()`.
    fn outcome(&self, total: Duration, workers: usize) -> CopyOutcome {
        let s = |k: &str| PyValue::Str(k.to_owned());
        let mut analysis_per_item = Vec::new();
        let (mut a_start, mut a_end): (Option<Duration>, Option<Duration>) = (None, None);
        for (label, times) in self.labels.iter().zip(&self.analysis) {
            if let Some((start, end)) = times {
                a_start = Some(a_start.map_or(*start, |t| t.min(*start)));
                a_end = Some(a_end.map_or(*end, |t| t.max(*end)));
                analysis_per_item.push((s(label), PyValue::Float(secs(*end - *start))));
            }
        }
        // Per item: first start, last end, and the sum of its jobs' times.
        let mut per_item: BTreeMap<usize, (Duration, Duration, Duration)> = BTreeMap::new();
        for &(item, start, end) in &self.jobs {
            let e = per_item.entry(item).or_insert((start, end, Duration::ZERO));
            e.0 = e.0.min(start);
            e.1 = e.1.max(end);
            e.2 += end - start;
        }
        let copy_start = per_item.values().map(|v| v.0).min().unwrap_or_default();
        let copy_end = per_item.values().map(|v| v.1).max().unwrap_or_default();
        let serialized: Duration = per_item.values().map(|v| v.2).sum();
        let copy_per_item = per_item.iter().map(|(i, v)| (s(&self.labels[*i]), PyValue::Float(secs(v.1 - v.0)))).collect();
        let serialized_per_item = per_item.iter().map(|(i, v)| (s(&self.labels[*i]), PyValue::Float(secs(v.2)))).collect();
        let copy_time = secs(copy_end.saturating_sub(copy_start));
        let stats = vec![
            (s("total_time"), PyValue::Float(secs(total))),
            (s("number_of_workers"), PyValue::Int(workers as i128)),
            (s("analysis_time_per_item"), PyValue::Dict(analysis_per_item)),
            (s("copy_time_per_item"), PyValue::Dict(copy_per_item)),
            (s("serialized_copy_time_per_item"), PyValue::Dict(serialized_per_item)),
            (s("analysis_time"), PyValue::Float(secs(a_end.unwrap_or_default().saturating_sub(a_start.unwrap_or_default())))),
            (s("copy_time"), PyValue::Float(copy_time)),
            (s("serialized_copy_time"), PyValue::Float(secs(serialized))),
        ];
        CopyOutcome { stats, copy_time }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(is_dir: bool, size: u64, date: &str, path: &str) -> ListEntry {
        ListEntry { is_dir, size, date: date.into(), path: path.into() }
    }

    #[test]
    fn parses_list_only_lines() {
        assert_eq!(
            parse_list_line("drwx------          4096 2026/01/05 12:00:01 ."),
            Some(entry(true, 4096, "2026/01/05 12:00:01", "."))
        );
        assert_eq!(
            parse_list_line("-rw-------          8192 2026/01/05 12:00:01 base/5/1259"),
            Some(entry(false, 8192, "2026/01/05 12:00:01", "base/5/1259"))
        );
        assert_eq!(
            parse_list_line("-rw-r--r--             3 2026/01/05 12:00:01 a file with spaces"),
            Some(entry(false, 3, "2026/01/05 12:00:01", "a file with spaces"))
        );
        for bad in ["", "total 3", "-rw------- 8,192 2026/01/05 12:00:01 x", "-rw------- 1 Thu Jun  5 18:00:00 2014 x", "-rw------- 1 2026/01/05 12:00:01"] {
            assert_eq!(parse_list_line(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn refuses_paths_outside() {
        assert!(is_relative_inside("base/5/1259") && is_relative_inside("."));
        assert!(!is_relative_inside("../x") && !is_relative_inside("/etc/passwd") && !is_relative_inside("a/../../b"));
    }

    #[test]
    fn classifies_as_barman() {
        let d = |t: &str| format!("2026/01/05 {t}");
        let horizon = list_date_epoch(&d("12:00:00"));
        let source = vec![
            entry(true, 4096, &d("11:00:00"), "base"),
            entry(false, 10, &d("11:00:00"), "old"),      // before the horizon: safe
            entry(false, 10, &d("12:30:00"), "same"),     // same size and time as the reference: check
            entry(false, 11, &d("12:30:00"), "grown"),    // differs from the reference: safe
            entry(false, 10, &d("12:30:00"), "touched"),  // another time: safe
            entry(false, 10, &d("12:30:00"), "new"),      // not in the reference: safe
        ];
        let reference: HashMap<String, ListEntry> = [
            entry(false, 10, &d("12:30:00"), "same"),
            entry(false, 10, &d("12:30:00"), "grown"),
            entry(false, 10, &d("12:20:00"), "touched"),
        ]
        .into_iter()
        .map(|e| (e.path.clone(), e))
        .collect();
        let a = classify(source.clone(), Some(&reference), horizon);
        assert_eq!(a.dirs, ["base"]);
        let names = |l: &[(u64, String)]| l.iter().map(|(_, p)| p.clone()).collect::<Vec<_>>();
        assert_eq!(names(&a.safe), ["old", "grown", "touched", "new"]);
        assert_eq!(names(&a.check), ["same"]);
        // The reference unreadable: everything after the horizon is checked.
        let a = classify(source.clone(), None, horizon);
        assert_eq!(names(&a.safe), ["old"]);
        // No previous backup: nothing to compare with, all safe.
        let a = classify(source, Some(&HashMap::new()), None);
        assert_eq!(a.check.len(), 0);
    }
}
