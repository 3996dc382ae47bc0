//! storagetapper: consistent, parallel, resumable logical backups of MySQL/MariaDB tables.
//!
//! The crate is a library with a thin binary on top (`src/main.rs`): the CLI in [`cli`], the
//! manifest and its validation in [`manifest`], the source in [`source`], the backup driver in
//! [`snapshot`], the destination in [`sink`], the state table in [`state`].

pub mod binlog;
pub mod changelog;
pub mod cli;
pub mod crypto;
pub mod format;
pub mod kafka;
pub mod kafka_backup;
pub mod layout;
pub mod manifest;
pub mod progress;
pub mod replay;
pub mod restore;
pub mod schema;
pub mod sink;
pub mod snapshot;
pub mod source;
pub mod state;
pub mod tail;
pub mod throttle;
pub mod value;
pub mod verify;
