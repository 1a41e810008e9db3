//! The one place the engine gets its concurrency primitives from.
//!
//! Every atomic, `Arc`, lock, condition variable, mailbox, published pointer
//! (`ArcSwap`), sharded map (`ShardMap`) and every byte of sector memory
//! (`RawMem`) used by concurrent engine code is imported from here, never from
//! `std::sync`, `dashmap` or `crossbeam_channel` directly
//! (`clippy.toml` enforces it).
//!
//! Two mirror modules have the same names:
//!
//! * `real` (the default): std atomics and locks (without poisoning, as in
//!   tokio's `loom/std/mutex.rs`), `hazard::HazardSwap` (our own publication
//!   cell, with a loom model of its own: `loom-tests/tests/hazard.rs`), `dashmap::DashMap`,
//!   `crossbeam_channel`, and sector memory carved from private anonymous
//!   mappings.
//! * `model` (under `--cfg loom`): loom's primitives, and small stand-ins for
//!   the publication cell and the two crates loom cannot see inside (dashmap,
//!   crossbeam-channel). Each stand-in has exactly the methods the engine calls
//!   and the same contract, built from loom primitives so that loom sees its
//!   happens-before edges. Sector memory is one `loom::cell::UnsafeCell<u8>`
//!   per byte, so loom reports any unsynchronised access to sector bytes.
//!
//! What the models therefore check is *our* protocol on top of these handles
//! (publication order, reclamation, the combining actor, reservations), not
//! the internals of dashmap or crossbeam-channel, which are covered by those
//! crates' own Miri, TSan and test suites, nor the cell's (its own model).

#[doc(hidden)]
pub mod hazard;
#[cfg(not(loom))]
mod real;
#[cfg(not(loom))]
pub use real::*;

#[cfg(loom)]
mod model;
#[cfg(loom)]
pub use model::*;

/// Whether a hash map of `len` entries with room for `cap` is worth
/// rebuilding to fit (`ShardMap::shrink_if_sparse`, real and model): under
/// a quarter full, and big enough for its table to matter.
pub(crate) fn sparse(len: usize, cap: usize) -> bool {
    cap > 4096 && len < cap / 4
}

/// A value that carries its own key: what a [`ShardMap`] holds (the inode
/// map's nodes, by inode number).
pub trait Keyed {
    /// The value's key; the same for as long as the value is in a map.
    fn key(&self) -> &u64;
}
