//! Hook scripts as Barman runs them, observed by a script that records its environment.

use std::path::Path;

use anyhow::{ensure, Context as _};
use barman_tests::{pg_test, wait_for, BarmanSite, Cluster, ClusterOptions};

/// A hook that appends its `BARMAN_*` environment (sorted, one block per run) to
/// `<dir>/<name>.env` and exits `exit`.
fn recorder(dir: &Path, name: &str, exit: i32) -> anyhow::Result<String> {
    let script = dir.join(format!("{name}.sh"));
    std::fs::write(&script, format!("#!/bin/sh\n{{ env | grep ^BARMAN_ | sort; echo --; }} >> {}/{name}.env\nexit {exit}\n", dir.display()))?;
    Ok(format!("sh {}", script.display()))
}

/// The runs recorded by [`recorder`], each as its `KEY=value` lines.
fn runs(dir: &Path, name: &str) -> anyhow::Result<Vec<Vec<String>>> {
    let text = std::fs::read_to_string(dir.join(format!("{name}.env"))).with_context(|| format!("{name} never ran"))?;
    Ok(text.split("--\n").filter(|b| !b.is_empty()).map(|b| b.lines().map(str::to_owned).collect()).collect())
}

fn get<'a>(run: &'a [String], key: &str) -> &'a str {
    run.iter().find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('='))).unwrap_or("<unset>")
}

pg_test!(archive_hooks_see_barmans_environment, |major| {
    let pg = Cluster::start(ClusterOptions::new(major))?;
    let hooks = tempfile::tempdir()?;
    let h = hooks.path();
    let pre = format!("pre_archive_script = {}", recorder(h, "pre", 0)?);
    let post = format!("post_archive_script = {}", recorder(h, "post", 1)?);
    let site = BarmanSite::new(&pg, &["compression = gzip", &pre, &post])?;
    ensure!(site.run(&["receive-wal", "--create-slot", "pg"])?.code == 0);
    let _receiver = site.spawn(&["receive-wal", "pg"])?;
    let r = site.run(&["switch-wal", "--force", "--archive", "--archive-timeout", "60", "pg"])?;
    ensure!(r.code == 0, "a failing post script changes nothing: {r}");

    let (pre, post) = (runs(h, "pre")?, runs(h, "post")?);
    ensure!(!pre.is_empty() && pre.len() == post.len(), "one pre and one post run per file: {pre:?} {post:?}");
    let (first_pre, first_post) = (&pre[0], &post[0]);
    let segment = get(first_pre, "BARMAN_SEGMENT");
    let config = site.config.display().to_string();
    for (run, phase) in [(first_pre, "pre"), (first_post, "post")] {
        ensure!(get(run, "BARMAN_HOOK") == "archive_script" && get(run, "BARMAN_PHASE") == phase, "{run:?}");
        ensure!(get(run, "BARMAN_SERVER") == "pg" && get(run, "BARMAN_RETRY") == "0", "{run:?}");
        ensure!(get(run, "BARMAN_CONFIGURATION") == config && get(run, "BARMAN_ERROR").is_empty(), "{run:?}");
        ensure!(get(run, "BARMAN_SEGMENT") == segment, "{run:?}");
    }
    let streamed = site.server_dir().join("streaming").join(segment);
    ensure!(get(first_pre, "BARMAN_FILE") == streamed.display().to_string(), "{first_pre:?}");
    ensure!(get(first_pre, "BARMAN_SIZE") == "16777216" && get(first_pre, "BARMAN_COMPRESSION").is_empty(), "{first_pre:?}");
    let archived = site.server_dir().join("wals").join(&segment[..16]).join(segment);
    ensure!(get(first_post, "BARMAN_FILE") == archived.display().to_string(), "{first_post:?}");
    ensure!(get(first_post, "BARMAN_COMPRESSION") == "gzip", "{first_post:?}");
    ensure!(get(first_post, "BARMAN_SIZE") == std::fs::metadata(&archived)?.len().to_string(), "{first_post:?}");
    ensure!(get(first_pre, "BARMAN_TIMESTAMP") == get(first_post, "BARMAN_TIMESTAMP"), "the source's time, both");
    // A failing hook is only logged, in the log file, with what it printed.
    let log = std::fs::read_to_string(site.home.path().join("barman.log"))?;
    ensure!(log.contains("post.sh returned 1"), "{log}");
    Ok(())
});

pg_test!(a_pre_archive_retry_hook_exiting_63_stops_archiving, |major| {
    let pg = Cluster::start(ClusterOptions::new(major))?;
    let hooks = tempfile::tempdir()?;
    let stop = format!("pre_archive_retry_script = {}", recorder(hooks.path(), "stop", 63)?);
    let site = BarmanSite::new(&pg, &[&stop])?;
    ensure!(site.run(&["receive-wal", "--create-slot", "pg"])?.code == 0);
    let _receiver = site.spawn(&["receive-wal", "pg"])?;
    pg.switch_wal()?;
    pg.sql("CREATE TABLE after_the_switch (i int)")?;
    let ran = hooks.path().join("stop.env");
    wait_for("the pre-archive retry hook to run", || {
        site.run(&["archive-wal", "pg"])?;
        pg.sql("INSERT INTO after_the_switch VALUES (1)")?;
        Ok(ran.exists())
    })?;
    let stopped = runs(hooks.path(), "stop")?;
    ensure!(get(&stopped[0], "BARMAN_HOOK") == "archive_retry_script" && get(&stopped[0], "BARMAN_RETRY") == "1", "{stopped:?}");
    let r = site.run(&["archive-wal", "pg"])?;
    ensure!(r.code == 1 && r.stderr.contains("exit code: 63"), "{r}");
    let segment = get(&stopped[0], "BARMAN_SEGMENT");
    ensure!(site.server_dir().join("streaming").join(segment).exists(), "the file stays where it was");
    let xlogdb = std::fs::read_to_string(site.server_dir().join("wals/pg-xlog.db")).unwrap_or_default();
    ensure!(!xlogdb.contains(segment), "{xlogdb}");
    Ok(())
});

pg_test!(backup_recovery_and_delete_hooks, |major| {
    let pg = Cluster::start(ClusterOptions::new(major))?;
    let hooks = tempfile::tempdir()?;
    let h = hooks.path();
    let flag = h.join("refuse");
    let gate = h.join("gate.sh");
    std::fs::write(&gate, format!("#!/bin/sh\n[ -e {} ] && exit 63\nexit 0\n", flag.display()))?;
    let lines = [
        format!("pre_backup_script = {}", recorder(h, "pre_backup", 0)?),
        format!("pre_backup_retry_script = sh {}", gate.display()),
        format!("post_backup_script = {}", recorder(h, "post_backup", 0)?),
        format!("pre_recovery_script = {}", recorder(h, "pre_recovery", 0)?),
        format!("post_recovery_script = {}", recorder(h, "post_recovery", 0)?),
        format!("pre_delete_script = {}", recorder(h, "pre_delete", 0)?),
        format!("post_delete_script = {}", recorder(h, "post_delete", 0)?),
        format!("pre_wal_delete_script = {}", recorder(h, "pre_wal_delete", 0)?),
    ];
    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
    let site = BarmanSite::new(&pg, &lines)?;
    ensure!(site.run(&["receive-wal", "--create-slot", "pg"])?.code == 0);
    let _receiver = site.spawn(&["receive-wal", "pg"])?;
    let r = site.run(&["switch-wal", "--force", "--archive", "--archive-timeout", "60", "pg"])?;
    ensure!(r.code == 0, "{r}");
    pg.sql("CREATE TABLE t (id int); INSERT INTO t VALUES (1)")?;

    let r = site.run(&["backup", "--wait", "--wait-timeout", "60", "pg"])?;
    ensure!(r.code == 0, "{r}");
    let (pre, post) = (runs(h, "pre_backup")?, runs(h, "post_backup")?);
    let id = get(&pre[0], "BARMAN_BACKUP_ID").to_owned();
    ensure!(get(&pre[0], "BARMAN_STATUS") == "EMPTY" && get(&pre[0], "BARMAN_PHASE") == "pre", "{pre:?}");
    ensure!(get(&pre[0], "BARMAN_BACKUP_DIR") == site.server_dir().join("base").join(&id).display().to_string());
    ensure!(get(&post[0], "BARMAN_STATUS") == "DONE" && get(&post[0], "BARMAN_BACKUP_ID") == id, "after --wait: {post:?}");
    // The first backup purged the WAL before it, each file between wal_delete hooks.
    let wal_deleted = runs(h, "pre_wal_delete")?;
    ensure!(get(&wal_deleted[0], "BARMAN_HOOK") == "wal_delete_script", "{wal_deleted:?}");

    // A pre backup retry hook exiting 63 fails the backup before any copy; the post hook sees it.
    std::fs::write(&flag, "")?;
    let r = site.run(&["backup", "pg"])?;
    ensure!(
        r.code == 1 && r.stderr.contains("Backup failed starting backup.\nDETAILS: Abort 'pre_backup_retry_script' retry hook script"),
        "{r}"
    );
    let post = runs(h, "post_backup")?;
    let failed = post.last().context("post hook of the failed backup")?;
    ensure!(get(failed, "BARMAN_STATUS") == "FAILED" && get(failed, "BARMAN_PREVIOUS_ID") == id, "{failed:?}");
    ensure!(get(failed, "BARMAN_ERROR").starts_with("failure starting backup (Abort"), "{failed:?}");
    let failed_id = get(failed, "BARMAN_BACKUP_ID").to_owned();

    let restored = Cluster::reserve(ClusterOptions::new(major))?;
    let dest = restored.data_dir();
    let r = site.run(&["recover", "pg", &id, dest.to_str().context("utf-8")?, "--target-immediate"])?;
    ensure!(r.code == 0, "{r}");
    for name in ["pre_recovery", "post_recovery"] {
        let run = &runs(h, name)?[0];
        ensure!(get(run, "BARMAN_DESTINATION_DIRECTORY") == dest.display().to_string(), "{run:?}");
        ensure!(get(run, "BARMAN_RECOVER_OPTIONS") == r#"{"target_immediate": true}"#, "{run:?}");
        ensure!(get(run, "BARMAN_BACKUP_ID") == id && get(run, "BARMAN_TABLESPACES").is_empty(), "{run:?}");
    }

    let r = site.run(&["delete", "pg", &failed_id])?;
    ensure!(r.code == 0, "{r}");
    let (pre, post) = (runs(h, "pre_delete")?, runs(h, "post_delete")?);
    ensure!(get(&pre[0], "BARMAN_BACKUP_ID") == failed_id && get(&pre[0], "BARMAN_STATUS") == "FAILED", "{pre:?}");
    ensure!(get(&post[0], "BARMAN_PHASE") == "post" && get(&post[0], "BARMAN_HOOK") == "delete_script", "{post:?}");
    Ok(())
});
