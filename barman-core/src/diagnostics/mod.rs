//! Server diagnostics: what `barman status`, `show-servers`, `check`, `replication-status` and
//! `diagnose` learn about a server, as data.
//!
//! - [`facts`] reads the live facts of a PostgreSQL server (one SQL session, one replication
//!   session), never failing: what cannot be read is `None`, with the reason kept.
//! - [`catalog_view`] reads what the checks need from the catalog on disk.
//! - [`checks`] decides Barman's checks from those two (pure [`checks::evaluate`]).
//! - [`status`] builds the rows of `status` and the values of `show-servers`.
//! - [`replication`] lists the streaming clients; [`diagnose`] builds the support document.
//!
//! Rendering (console, JSON, Nagios) is in [`crate::output::render`]; nothing here prints.

pub mod catalog_view;
pub mod checks;
pub mod diagnose;
pub mod facts;
pub mod replication;
pub mod status;

pub use catalog_view::CatalogView;
pub use checks::{CheckResult, ServerCheck};
pub use facts::LiveFacts;
