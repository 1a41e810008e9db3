//! sectorfs engine: an in-memory file system whose file data lives in
//! fixed-size sectors.
//!
//! # Index
//! * [`Engine`]: the file system; every operation by inode number and name.
//! * Types: [`Attr`], [`SetAttr`], [`FileType`], [`Time`], [`DirEntry`],
//!   [`StatFs`], [`Stats`], [`Config`].
//! * POSIX ACLs: [`acl`] (format, validation, mode sync; `Config::posix_acl`).
//! * Images: [`image`] ([`Engine::snapshot`], [`Engine::load_image`], the
//!   format and its guarantees).
//! * Errors: [`Error`], with [`Error::errno`] and [`Error::ntstatus`].
//! * Internals (documented for contributors, in `docs/ARCHITECTURE.md`):
//!   `sync` (the loom facade), `sector` (pool, sectors, the persistent
//!   table), `data` (file contents), `actor` (the combining executor),
//!   `node` (inodes).
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod acl;
#[doc(hidden)]
pub mod actor;
pub mod budget;
#[doc(hidden)]
pub mod data;
mod dir;
mod engine;
mod error;
mod fault;
mod file;
mod gate;
mod hash;
pub mod image;
mod namespace;
mod node;
#[doc(hidden)]
pub mod sector;
#[doc(hidden)]
pub mod sync;
mod types;
mod xattr;

pub use engine::{sector_size_ok, Config, Engine, Stats, DEFAULT_SECTOR_SIZE, PREFERRED_IO};
pub use error::{errno, ntstatus, Error, Result};
pub use types::*;

const fn assert_send_sync<T: Send + Sync>() {}
const _: () = assert_send_sync::<Engine>();
