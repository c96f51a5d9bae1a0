//! The PostgreSQL wire protocol as barman-rs speaks it: physical replication, spoken natively.
//!
//! This crate is a building block, not an application: it knows nothing of Barman's catalog.
//!
//! * [`lsn`] — the protocol's quantities: [`Lsn`], [`TimelineId`], [`SystemId`].

#![warn(missing_docs)]

pub mod lsn;

pub use lsn::{Lsn, SystemId, TimelineId};
