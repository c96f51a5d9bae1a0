//! Loader tests: whole configurations in memory, and the sample tree in `testdata/config/`.

use std::path::{Path, PathBuf};

use super::*;

/// The sample tree, mounted where it would live: `/etc/barman.conf` and `/etc/barman.d/`.
fn sample_fs() -> MemoryFs {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/config");
    let mut fs = MemoryFs::new();
    fs.add("/etc/barman.conf", std::fs::read(root.join("barman.conf")).expect("sample main file"));
    let mut entries: Vec<_> = std::fs::read_dir(root.join("barman.d"))
        .expect("sample directory")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().expect("file name").to_owned();
        fs.add(Path::new("/etc/barman.d").join(name), std::fs::read(&path).expect("sample file"));
    }
    fs
}

fn load(files: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let mut fs = MemoryFs::new();
    for (path, text) in files {
        fs.add(*path, *text);
    }
    Config::load_with(&fs, Path::new(files[0].0), Some(Path::new("/home/op")))
}

fn load_ok(files: &[(&str, &str)]) -> Config {
    load(files).unwrap_or_else(|e| panic!("loads: {e}"))
}

fn warnings(cfg: &Config) -> Vec<String> {
    cfg.warnings.iter().map(ToString::to_string).collect()
}

const HEAD: &str = "[barman]\nbarman_home = /var/lib/barman\n";

#[test]
fn sample_tree_loads_like_barman() {
    let cfg = Config::load_with(&sample_fs(), Path::new("/etc/barman.conf"), None).expect("loads");
    assert_eq!(
        cfg.files,
        ["/etc/barman.conf", "/etc/barman.d/legacy.conf", "/etc/barman.d/ssh-pg.conf", "/etc/barman.d/streaming-pg.conf"]
            .map(PathBuf::from)
    );
    assert_eq!(cfg.global.barman_home, Path::new("/var/lib/barman"));
    assert_eq!(cfg.global.barman_lock_directory, Path::new("/var/lib/barman"));
    assert_eq!(cfg.global.log_file.as_deref(), Some(Path::new("/var/log/barman/barman.log")));
    let names: Vec<&str> = cfg.servers.keys().map(ServerName::as_str).collect();
    assert_eq!(names, ["legacy", "ssh-pg", "streaming-pg"]);

    let s = cfg.server("streaming-pg").expect("server");
    assert_eq!(s.description.as_deref(), Some("Example of PostgreSQL Database (Streaming-Only)"));
    assert_eq!(s.backup_method, BackupMethod::Postgres);
    assert!(s.streaming_archiver && !s.archiver, "no archiver forcing for a streaming server");
    assert_eq!(s.slot_name.as_deref(), Some("barman"));
    assert_eq!(s.create_slot, CreateSlot::Auto);
    assert_eq!(s.streaming_conninfo.as_deref(), Some("host=pg user=streaming_barman"));
    assert_eq!(s.backup_compression, Some(BackupCompression::Zstd));
    assert_eq!(s.backup_compression_level, Some(3));
    assert_eq!(s.last_backup_minimum_size, Some(1 << 30));
    // Inherited from [barman]:
    assert_eq!(s.compression, Some(Compression::Gzip));
    assert_eq!(s.minimum_redundancy, 1);
    assert_eq!(s.path_prefix.as_deref(), Some("/usr/pgsql-16/bin"));
    assert_eq!(s.last_backup_maximum_age, Some(TimeInterval { count: 1, unit: IntervalUnit::Week }));
    assert_eq!(s.retention_policy, Some(RetentionPolicy::RecoveryWindow { count: 4, unit: WindowUnit::Weeks }));
    // keepalive_interval is not inherited from [barman] in Barman 3.17 (BARMAN_KEYS typo).
    assert_eq!(s.keepalive_interval, 60);
    // Derived directories.
    assert_eq!(s.backup_directory, Path::new("/var/lib/barman/streaming-pg"));
    assert_eq!(s.basebackups_directory, Path::new("/var/lib/barman/streaming-pg/base"));
    assert_eq!(s.wals_directory, Path::new("/var/lib/barman/streaming-pg/wals"));
    assert_eq!(s.xlogdb_directory, Path::new("/var/lib/barman/streaming-pg/wals"));
    assert_eq!(s.streaming_wals_directory, Path::new("/var/lib/barman/streaming-pg/streaming"));
    assert_eq!(s.incoming_wals_directory, Path::new("/var/lib/barman/streaming-pg/incoming"));
    assert_eq!(s.errors_directory, Path::new("/var/lib/barman/streaming-pg/errors"));
    assert_eq!(s.cluster.as_deref(), Some("streaming-pg"));
    assert_eq!(s.streaming_archiver_name.as_deref(), Some("barman_receive_wal"));
    assert!(!s.disabled && s.messages.is_empty(), "{:?}", s.messages);
    assert_eq!(s.source("compression"), Some(&Source::Global(Location::new("/etc/barman.conf", 9))));
    assert_eq!(s.source("slot_name"), Some(&Source::Server(Location::new("/etc/barman.d/streaming-pg.conf", 7))));
    assert_eq!(s.source("wals_directory"), Some(&Source::Default));

    let r = cfg.server("ssh-pg").expect("server");
    assert_eq!(r.backup_method, BackupMethod::Rsync);
    assert_eq!(r.ssh_command.as_deref(), Some("ssh postgres@pg"));
    assert_eq!(r.reuse_backup, Some(ReuseBackup::Link));
    assert!(r.backup_options.concurrent_backup);
    assert_eq!(r.bandwidth_limit, Some(4000));
    let tbs = r.tablespace_bandwidth_limit.as_ref().expect("rules");
    assert_eq!(tbs.iter().collect::<Vec<_>>(), [(&"tbs1".to_owned(), &1000)]);
    assert_eq!(r.retention_policy, Some(RetentionPolicy::Redundancy(3)));
    assert_eq!(r.streaming_conninfo, r.conninfo, "streaming_conninfo defaults to conninfo");
    assert_eq!(r.pre_backup_script.as_deref(), Some("/etc/barman/hooks/pre.sh"));
    assert_eq!(r.post_backup_retry_script.as_deref(), Some("/etc/barman/hooks/post-retry.sh"));

    let l = cfg.server("legacy").expect("server");
    assert!(l.active, "invalid 'active' falls back to the default");
    assert_eq!(l.compression, Some(Compression::Gzip), "invalid value falls back to [barman]");
    assert_eq!(l.last_backup_minimum_size, None);
    assert_eq!(l.backup_directory, Path::new("/srv/barman/legacy01"));
    assert_eq!(l.basebackups_directory, Path::new("/srv/barman/legacy01/base"));
    assert_eq!(l.retention_policy, None);
    assert!(l.disabled);
    assert_eq!(
        l.messages,
        ["Conflicting path: wals_directory=/srv/wals/legacy conflicts with 'incoming_wals_directory' for server 'legacy'"]
    );

    assert_eq!(
        warnings(&cfg),
        [
            "/etc/barman.d/legacy.conf:9: unknown option 'cluster_id' in [legacy] is ignored",
            "/etc/barman.d/legacy.conf:13: unknown option 'favourite_colour' in [legacy] is ignored",
            "/etc/barman.d/legacy.conf:5: invalid value \"maybe\" for 'active' in [legacy] is ignored: expected a boolean (true|t|yes|1|on or false|f|no|0|off)",
            "/etc/barman.d/legacy.conf:6: invalid value \"rar\" for 'compression' in [legacy] is ignored: expected a WAL compression (one of: gzip, bzip2, pygzip, pybzip2, pigz, xz, zstd, lz4, snappy, custom)",
            "/etc/barman.d/legacy.conf:7: invalid value \"1 GB\" for 'last_backup_minimum_size' in [legacy] is ignored: expected a size such as `1 Gi` (N with an optional k, Ki, M, Mi, G, Gi, T or Ti)",
            "server 'legacy': Invalid retention_policy setting \"KEEP 3\" for server \"legacy\": cannot parse retention policy \"KEEP 3\": expected `REDUNDANCY n` or `RECOVERY WINDOW OF n DAYS|WEEKS|MONTHS`; no retention policy is enforced",
            "server 'ssh-pg': Invalid tablespace_bandwidth_limit rule 'bad'",
        ]
    );
}

#[test]
fn locating_the_main_file() {
    let mut fs = MemoryFs::new();
    fs.add("/etc/barman.conf", "").add("/etc/barman/barman.conf", "").add("/home/op/x.conf", "");
    let home = Some(Path::new("/home/op"));
    let found = locate_main_file(&fs, None, &DEFAULT_LOCATIONS, home).expect("found");
    assert_eq!(found, Path::new("/etc/barman.conf"));
    fs.add("/home/op/.barman.conf", "");
    let found = locate_main_file(&fs, None, &DEFAULT_LOCATIONS, home).expect("found");
    assert_eq!(found, Path::new("/home/op/.barman.conf"));
    let explicit = locate_main_file(&fs, Some(Path::new("~/x.conf")), &DEFAULT_LOCATIONS, home).expect("found");
    assert_eq!(explicit, Path::new("/home/op/x.conf"));
    let err = locate_main_file(&fs, Some(Path::new("/nope.conf")), &DEFAULT_LOCATIONS, home).expect_err("missing");
    assert_eq!(err.to_string(), "configuration file '/nope.conf' does not exist");
    let err = locate_main_file(&MemoryFs::new(), None, &DEFAULT_LOCATIONS, home).expect_err("none");
    assert_eq!(
        err.to_string(),
        "could not find any configuration file at the default locations (/home/op/.barman.conf, /etc/barman.conf, /etc/barman/barman.conf)"
    );
}

#[test]
fn precedence_server_over_global_over_default() {
    let text = format!(
        "{HEAD}compression = zstd\nbasebackup_retry_times = 2\nencryption = gpg\ncheck_timeout = 10\n\
         [a]\nconninfo = x\narchiver = on\ncompression = lz4\nencryption = none\ncheck_timeout =\n\
         [b]\nconninfo = x\narchiver = on\ncompression =\nbasebackup_retry_times = lots\n"
    );
    let cfg = load_ok(&[("/etc/barman.conf", &text)]);
    let a = cfg.server("a").expect("a");
    let b = cfg.server("b").expect("b");
    assert_eq!(a.compression, Some(Compression::Lz4));
    assert_eq!(a.basebackup_retry_times, 2);
    assert_eq!(a.encryption, Some(Encryption::Gpg), "'none' inherits, as in Barman");
    assert_eq!(a.check_timeout, 10, "an empty int is invalid, so [barman]'s value is used");
    assert_eq!(b.compression, None, "an empty value unsets without inheriting");
    assert_eq!(b.basebackup_retry_times, 2);
    assert_eq!(b.retention_policy_mode, "auto");
    assert_eq!(
        warnings(&cfg),
        [
            "/etc/barman.conf:12: invalid value \"\" for 'check_timeout' in [a] is ignored: expected an integer",
            "/etc/barman.conf:17: invalid value \"lots\" for 'basebackup_retry_times' in [b] is ignored: expected an integer",
        ]
    );
}

#[test]
fn interpolation_follows_configparser() {
    let text = "[DEFAULT]\nroot = /srv\n\
                [barman]\nbarman_home = %(root)s/barman\nlog_file = %(barman_home)s/log\n\
                [pg]\nconninfo = host=pg\nbackup_directory = %(root)s/%(tag)s\ntag = x%%%%y\narchiver = on\n\
                description = \"100%%%% safe\"\n";
    // Barman interpolates when merging a file and again when reading, so a literal `%` needs
    // `%%%%`; `%%` alone makes Barman stop (see `fatal_errors_carry_file_and_line`).
    let cfg = load_ok(&[("/etc/barman.conf", text)]);
    assert_eq!(cfg.global.barman_home, Path::new("/srv/barman"));
    assert_eq!(cfg.global.log_file.as_deref(), Some(Path::new("/srv/barman/log")));
    let pg = cfg.server("pg").expect("pg");
    assert_eq!(pg.backup_directory, Path::new("/srv/x%y"));
    assert_eq!(pg.wals_directory, Path::new("/srv/x%y/wals"));
    assert_eq!(pg.description.as_deref(), Some("100% safe"));
}

#[test]
fn fatal_errors_carry_file_and_line() {
    let table: Vec<(Vec<(&str, String)>, &str)> = vec![
        (
            vec![("/etc/barman.conf", format!("{HEAD}[pg]\nconninfo = %(host)s\n"))],
            "/etc/barman.conf:4: cannot interpolate 'conninfo' in [pg]: '%(host)s' refers to an option that is not defined where it is visible",
        ),
        (
            vec![("/etc/barman.conf", format!("{HEAD}[pg]\ndescription = 100%\n"))],
            "/etc/barman.conf:4: cannot interpolate 'description' in [pg]: bad '%' at \"%\": expected '%%' or '%(name)s'",
        ),
        (
            // `%%` becomes `%` at merge time, and Barman's ConfigParser.set then refuses it.
            vec![("/etc/barman.conf", format!("{HEAD}[pg]\ndescription = 100%%\n"))],
            "/etc/barman.conf:4: cannot interpolate 'description' in [pg]: bad '%' at \"%\": expected '%%' or '%(name)s'",
        ),
        (
            vec![("/etc/barman.conf", format!("{HEAD}[all]\nconninfo = x\n"))],
            "/etc/barman.conf:3: the reserved word 'all' is not allowed as server name; please rename it",
        ),
        (
            vec![("/etc/barman.conf", "[pg]\nconninfo = x\n".to_owned())],
            "/etc/barman.conf: no [barman] section (it holds the global settings and is required)",
        ),
        (
            vec![("/etc/barman.conf", "[barman]\nlog_level = INFO\n".to_owned())],
            "/etc/barman.conf: parameter \"barman_home\" is required in [barman] section",
        ),
        (
            vec![("/etc/barman.conf", format!("{HEAD}lock_directory_cleanup = sometimes\n"))],
            "/etc/barman.conf:3: invalid value \"sometimes\" for 'lock_directory_cleanup': expected a boolean (true|t|yes|1|on or false|f|no|0|off)",
        ),
        (
            vec![("/etc/barman.conf", format!("{HEAD}[m]\nmodel = perhaps\n"))],
            "/etc/barman.conf:4: invalid value \"perhaps\" for 'model': expected a boolean (true|t|yes|1|on or false|f|no|0|off)",
        ),
        (
            vec![
                ("/etc/barman.conf", format!("{HEAD}configuration_files_directory = /etc/barman.d\n")),
                ("/etc/barman.d/pg.conf", "[pg]\nconninfo = x\n\n[barman]\ncompression = gzip\n".to_owned()),
            ],
            "/etc/barman.d/pg.conf:5: the configuration file contains a not empty [barman] section; global settings belong in the main file",
        ),
        (
            vec![
                ("/etc/barman.conf", format!("{HEAD}configuration_files_directory = /etc/barman.d\n")),
                ("/etc/barman.d/pg.conf", "[pg]\nconninfo = x\nbroken line\n".to_owned()),
            ],
            "/etc/barman.d/pg.conf:3: cannot parse \"broken line\": expected a `key = value` or `key: value` line, a [section] header or a comment",
        ),
    ];
    for (files, message) in table {
        let files: Vec<(&str, &str)> = files.iter().map(|(p, t)| (*p, t.as_str())).collect();
        let err = load(&files).expect_err(message);
        assert_eq!(err.to_string(), message);
    }
}

#[test]
fn includes_merge_sections_and_accept_an_unchanged_barman_section() {
    let cfg = load_ok(&[
        ("/etc/barman.conf", &format!("{HEAD}configuration_files_directory = ~/conf.d\n[pg]\nconninfo = a\narchiver = on\n")),
        ("/home/op/conf.d/a.conf", "[barman]\nbarman_home = /var/lib/barman\n[pg]\nconninfo = b\n"),
        ("/home/op/conf.d/.hidden.conf", "this is not read\n"),
        ("/home/op/conf.d/b.conf.bak", "nor this\n"),
    ]);
    assert_eq!(cfg.server("pg").and_then(|s| s.conninfo.as_deref()), Some("b"));
    assert_eq!(
        warnings(&cfg),
        ["/home/op/conf.d/a.conf:3: section [pg] was already opened at /etc/barman.conf:4; its options are merged, later values win"]
    );
    let cfg = load_ok(&[("/etc/barman.conf", &format!("{HEAD}configuration_files_directory = /nowhere\n"))]);
    assert_eq!(
        warnings(&cfg),
        ["/etc/barman.conf:3: ignoring configuration_files_directory '/nowhere': not a directory"]
    );
}

#[test]
fn server_checks_disable_only_the_broken_server() {
    let cfg = load_ok(&[(
        "/etc/barman.conf",
        &format!(
            "{HEAD}[noconn]\nbackup_method = postgres\n[stream]\nconninfo = x\nstreaming_archiver = on\n\
             [quiet]\nconninfo = x\n[passive]\nprimary_ssh_command = ssh barman@primary\n\
             [twin]\nconninfo = x\narchiver = on\nbackup_directory = /var/lib/barman/quiet\n"
        ),
    )]);
    let noconn = cfg.server("noconn").expect("server");
    assert!(noconn.disabled);
    assert_eq!(
        noconn.messages,
        [
            "PostgreSQL connection: Missing 'conninfo' parameter for server 'noconn'",
            "Streaming connection: Missing 'streaming_conninfo' parameter for server 'noconn'",
        ]
    );
    assert_eq!(
        cfg.server("stream").expect("server").messages,
        ["Streaming-only archiver requires 'streaming_conninfo' and 'slot_name' options to be properly configured"]
    );
    let quiet = cfg.server("quiet").expect("server");
    assert!(quiet.archiver && !quiet.disabled, "archiver forced on");
    assert!(!cfg.server("passive").expect("server").disabled);
    assert!(warnings(&cfg).contains(
        &"server 'quiet': No archiver enabled for server 'quiet'. Please turn on 'archiver', 'streaming_archiver' or both; forcing 'archiver = on'".to_owned()
    ));
    // Every derived directory of `twin` collides with `quiet`'s, as Barman would list them.
    assert_eq!(cfg.path_conflicts.len(), 6);
    assert_eq!(
        cfg.path_conflicts[0],
        "Conflicting path: backup_directory=/var/lib/barman/quiet for server 'twin' conflicts with 'backup_directory' for server 'quiet'"
    );
}

#[test]
fn models_are_not_servers() {
    let cfg = load_ok(&[(
        "/etc/barman.conf",
        &format!("{HEAD}[pg]\nconninfo = x\narchiver = on\n[pg:dr]\nmodel = true\ncluster = pg\nconninfo = y\nwals_directory = /w\n"),
    )]);
    assert_eq!(cfg.servers.len(), 1);
    assert_eq!(cfg.models["pg:dr"].cluster.as_deref(), Some("pg"));
    assert_eq!(warnings(&cfg), ["/etc/barman.conf:10: unknown option 'wals_directory' in [pg:dr] is ignored"]);
}

const MODELS: &str = "[pg]\nconninfo = host=old\narchiver = on\n\
    [pg:new]\nmodel = true\ncluster = pg\nconninfo = host=new\ncompression = gzip\ndescription =\n\
    [other:x]\nmodel = on\ncluster = other\nconninfo = host=other\n";
const ACTIVE: &str = "/var/lib/barman/pg/.active-model.auto";

#[test]
fn the_active_model_is_applied_at_load() {
    let cfg = load_ok(&[("/etc/barman.conf", &format!("{HEAD}{MODELS}")), (ACTIVE, "pg:new\n")]);
    let pg = cfg.server("pg").expect("server");
    assert_eq!(pg.active_model.as_deref(), Some("pg:new"));
    assert_eq!(pg.conninfo.as_deref(), Some("host=new"));
    assert_eq!(pg.compression, Some(Compression::Gzip));
    // Computed from the server's own conninfo before the model applied, as in Barman.
    assert_eq!(pg.streaming_conninfo.as_deref(), Some("host=old"));
    // An empty model value overrides nothing.
    assert_eq!(pg.description, None);
    assert_eq!(
        pg.source("conninfo"),
        Some(&Source::Model { model: "pg:new".into(), location: Location::new("/etc/barman.conf", 9) })
    );
    assert!(!pg.disabled, "{:?}", pg.messages);
    assert_eq!(cfg.models["pg:new"].override_keys().collect::<Vec<_>>(), ["compression", "conninfo"]);

    // No file, or an empty one: the server's own settings.
    for files in [vec![], vec![(ACTIVE, " \n")]] {
        let mut all = vec![("/etc/barman.conf", format!("{HEAD}{MODELS}"))];
        all.extend(files.into_iter().map(|(p, t)| (p, t.to_owned())));
        let refs: Vec<(&str, &str)> = all.iter().map(|(p, t)| (*p, t.as_str())).collect();
        let cfg = load_ok(&refs);
        let pg = cfg.server("pg").expect("server");
        assert_eq!((pg.active_model.as_deref(), pg.conninfo.as_deref()), (None, Some("host=old")));
    }
}

#[test]
fn a_model_the_server_cannot_take_disables_it() {
    let cfg = load_ok(&[("/etc/barman.conf", &format!("{HEAD}{MODELS}")), (ACTIVE, "gone")]);
    let pg = cfg.server("pg").expect("server");
    assert!(pg.disabled && pg.active_model.is_none());
    assert_eq!(
        pg.messages,
        ["Model 'gone' is set as the active model for the server 'pg' but the model does not exist."]
    );
    let cfg = load_ok(&[("/etc/barman.conf", &format!("{HEAD}{MODELS}")), (ACTIVE, "other:x")]);
    let pg = cfg.server("pg").expect("server");
    assert!(pg.disabled);
    assert_eq!(pg.conninfo.as_deref(), Some("host=old"));
    assert_eq!(
        pg.messages,
        ["Model 'other:x' has 'cluster=other', which is not compatible with 'cluster=pg' from server 'pg'"]
    );
}

#[test]
fn server_checks_judge_the_effective_values() {
    // No conninfo of its own: the model's makes the server usable.
    let text = format!("{HEAD}[pg]\narchiver = on\n[pg:new]\nmodel = true\ncluster = pg\nconninfo = host=new\nbackup_options = nonsense\n");
    let cfg = load_ok(&[("/etc/barman.conf", &text)]);
    assert!(cfg.server("pg").expect("server").disabled);
    let cfg = load_ok(&[("/etc/barman.conf", &text), (ACTIVE, "pg:new")]);
    let pg = cfg.server("pg").expect("server");
    assert!(!pg.disabled, "{:?}", pg.messages);
    // A model value its parser refuses is a warning and overrides nothing.
    assert!(warnings(&cfg).iter().any(|w| w.contains("'backup_options' in [pg:new] is ignored")), "{:?}", warnings(&cfg));
    assert_eq!(cfg.models["pg:new"].override_keys().collect::<Vec<_>>(), ["conninfo"]);
}

#[test]
fn switching_checks_the_cluster_and_the_active_model() {
    let cfg = load_ok(&[("/etc/barman.conf", &format!("{HEAD}{MODELS}")), (ACTIVE, "pg:new")]);
    let pg = cfg.server("pg").expect("server");
    assert_eq!(cfg.models["pg:new"].check_switch(pg), Ok(models::Switch::AlreadyActive));
    assert_eq!(
        cfg.models["other:x"].check_switch(pg).map_err(|e| e.to_string()),
        Err("Model 'other:x' has 'cluster=other', which is not compatible with 'cluster=pg' from server 'pg'".to_owned())
    );
    let cfg = load_ok(&[("/etc/barman.conf", &format!("{HEAD}{MODELS}"))]);
    assert_eq!(cfg.models["pg:new"].check_switch(cfg.server("pg").expect("server")), Ok(models::Switch::Apply));
}

#[test]
fn a_model_needs_a_cluster() {
    let e = load(&[("/etc/barman.conf", &format!("{HEAD}[m]\nmodel = on\nconninfo = x\n"))]).expect_err("refused");
    assert_eq!(
        e.to_string(),
        "/etc/barman.conf:3: parameter \"cluster\" is required in [m] section (a model names the cluster of the servers it applies to)"
    );
}

mod proptests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn loading_never_panics(text in "([\\[\\]=:#;% \t\r\na-z_()0-9]|barman|barman_home|conninfo|\n  ){0,300}") {
            let _ = load(&[("/etc/barman.conf", &text)]);
        }

        #[test]
        fn loading_arbitrary_text_never_panics(text in "\\PC*") {
            let full = format!("{HEAD}{text}");
            let _ = load(&[("/etc/barman.conf", &full)]);
        }
    }
}
