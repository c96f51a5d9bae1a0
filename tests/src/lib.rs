//! Harness: real PostgreSQL clusters (majors 13–18) for end-to-end tests.
//!
//! barman-rs is tested against real servers, never mocks (DESIGN.md §5). This crate starts them:
//!
//! - [`pg_bin_dir`] finds the binaries of one major (from `PG_BIN_DIR`, or by running
//!   `../shared/tools/pg-install <major>`), and [`majors`] says which majors this run covers.
//! - [`pg_test!`] turns one test body into six `#[test]`s, one per major.
//! - [`Cluster`] is one running server in its own temporary directory, on its own port, with the
//!   roles, `pg_hba.conf`, TLS certificates and WAL settings a test asks for in [`ClusterOptions`].
//!   It offers SQL and WAL helpers, can clone itself into a streaming standby
//!   ([`Cluster::create_standby`]) that can be promoted ([`Cluster::promote`]), and is stopped and
//!   removed on drop, also when the test panics.
//!
//! Everything here is synchronous (`std::process`): a test that needs async code builds its own
//! runtime. The harness shells out to `initdb`, `pg_ctl`, `psql`, `pg_basebackup` and `pgbench`;
//! barman-rs itself never uses those tools.
//!
//! # Example
//!
//! ```no_run
//! use barman_tests::{pg_test, AuthMethod, Cluster, ClusterOptions};
//!
//! pg_test!(version_matches, |major| {
//!     let pg = Cluster::start(ClusterOptions::new(major).auth(AuthMethod::ScramSha256))?;
//!     let num: u32 = pg.sql("SHOW server_version_num")?.parse()?;
//!     anyhow::ensure!(num / 10000 == major, "server reports {num}");
//!     Ok(())
//! });
//! # fn main() {}
//! ```
//!
//! # Running as root
//!
//! PostgreSQL refuses to run as root. When the tests run as root, every server-side program
//! (`initdb`, `pg_ctl`, `postgres`, `pg_basebackup`) runs as an unprivileged user
//! ([`ServerUser`]: `postgres` when it exists, otherwise a system user `barman-test` created on
//! first use) and the cluster's directory tree is owned by it. Client programs (`psql`,
//! `pgbench`, barman-rs itself) keep running as the current user.
//!
//! # Environment
//!
//! | variable | effect |
//! |---|---|
//! | `BARMAN_TEST_PG_MAJORS` | comma-separated majors to run, e.g. `13,15,18` (default: 13–18) |
//! | `PG_BIN_DIR` | use these binaries; only their major runs |
//! | `BARMAN_PG_INSTALL` | path of the `pg-install` script |
//! | `PGBINS_DIR` | cache of `pg-install` (as root, defaults to `/var/cache/pgbins`) |
//! | `BARMAN_TEST_KEEP=1` | keep each cluster's directory after the test (the path is printed) |
//!
//! A test process killed by a signal (e.g. a nextest timeout) cannot run `Drop`; its server keeps
//! running until killed by hand (`pg_ctl stop -D <dir>/data`; the directories are
//! `/tmp/barman-pg-*`).
#![warn(missing_docs)]

mod barman_bin;
mod cluster;
mod command;
mod pg_bin;
mod proxy;
mod server_user;
mod sshd;
mod tls;

pub use barman_bin::{barman_bin, run_barman, BackgroundBarman, BarmanRun, BarmanSite};
pub use cluster::{
    wait_for, AuthMethod, Cluster, ClusterOptions, BARMAN_USER, PASSWORD, STREAMING_USER, SUPERUSER,
};
pub use command::{CommandOutput, RunCommand};
pub use pg_bin::{majors, pg_bin_dir, ALL_MAJORS};
pub use proxy::{Proxy, ProxyMode};
pub use server_user::{is_root, server_user, ServerUser};
pub use sshd::Sshd;

/// Re-exported so that [`pg_test!`] expands to paths that exist in every test crate.
#[doc(hidden)]
pub use anyhow as __anyhow;

/// Runs one generated test for `major`: skips it when the major is not selected by [`majors`],
/// and panics with the whole error chain (`{:#}`) when `test` fails.
///
/// This is what [`pg_test!`] calls; use it directly for a test that should run for one major only.
pub fn run_pg_test(major: u32, test: fn(u32) -> anyhow::Result<()>) {
    if !majors().contains(&major) {
        println!(
            "skipped: PostgreSQL {major} not in BARMAN_TEST_PG_MAJORS \
             (selected: {:?}; PG_BIN_DIR also limits the majors)",
            majors()
        );
        return;
    }
    if let Err(e) = test(major) {
        panic!("PostgreSQL {major}: {e:#}");
    }
}

/// Writes a test once and runs it against every PostgreSQL major, 13 to 18.
///
/// ```ignore
/// pg_test!(identify_system, |major| {
///     let pg = Cluster::start(ClusterOptions::new(major))?;
///     /* ... uses `major`, returns anyhow::Result<()> ... */
///     Ok(())
/// });
/// ```
///
/// expands to a module `identify_system` holding `#[test] fn pg13()` … `fn pg18()` (reported as
/// `identify_system::pg13` …), each calling [`run_pg_test`]: a major not selected by [`majors`]
/// returns early and prints `skipped: ...`, an `Err` fails the test with its `{:#}` chain.
/// Select majors with `cargo nextest run -E 'test(/pg13$/)'`, or with `BARMAN_TEST_PG_MAJORS`.
///
/// A module rather than `identify_system_pg13` names: `macro_rules!` cannot build new
/// identifiers without a proc-macro crate (`paste`, unmaintained). The body sees the items of
/// the enclosing module (`use super::*` is generated). Attributes written before the name
/// (`#[ignore]`, doc comments) are put on every generated test.
#[macro_export]
macro_rules! pg_test {
    ($(#[$attr:meta])* $name:ident, |$major:ident| $body:block) => {
        #[allow(non_snake_case)]
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn body($major: u32) -> $crate::__anyhow::Result<()> $body

            $crate::pg_test!(@one $(#[$attr])* pg13, 13);
            $crate::pg_test!(@one $(#[$attr])* pg14, 14);
            $crate::pg_test!(@one $(#[$attr])* pg15, 15);
            $crate::pg_test!(@one $(#[$attr])* pg16, 16);
            $crate::pg_test!(@one $(#[$attr])* pg17, 17);
            $crate::pg_test!(@one $(#[$attr])* pg18, 18);
        }
    };
    (@one $(#[$attr:meta])* $fn_name:ident, $num:literal) => {
        #[test]
        $(#[$attr])*
        fn $fn_name() {
            $crate::run_pg_test($num, body);
        }
    };
}
