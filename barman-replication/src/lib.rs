//! The PostgreSQL wire protocol as barman-rs speaks it: physical replication, spoken natively.
//!
//! This crate is a building block, not an application: it knows nothing of Barman's catalog.
//!
//! * [`lsn`] — the protocol's quantities: [`Lsn`], [`TimelineId`], [`SystemId`].

#![warn(missing_docs)]

pub mod basebackup;
pub mod codec;
pub mod lsn;

pub use lsn::{Lsn, SystemId, TimelineId};
pub mod commands;
pub mod conn;
pub mod conninfo;
pub mod error;
pub mod pgpass;
pub mod stream;
pub mod tls;

pub use basebackup::{BaseBackupEvent, BaseBackupOptions, BaseBackupReader, TablespaceEntry};
pub use commands::{CreatedSlot, IdentifySystem, ReplicationSlot, TimelineHistoryFile};
pub use conn::{Connection, QueryResult, SessionKind};
pub use conninfo::{ChannelBindingMode, ConnConfig, Host, SslMode};
pub use error::{Error, Target};
pub use stream::{StreamEnd, StreamEvent, StreamOptions, WalReceiver, WalStream};
