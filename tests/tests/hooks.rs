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
