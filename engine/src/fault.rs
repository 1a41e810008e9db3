//! Test-only fault injection: failpoints at the places that can fail in
//! production.
//!
//! A site is `fail_point!("name")` or `fail_point!("name", |arg| early_return)`
//! (the [`fail`](https://docs.rs/fail) crate's macro and syntax). Without the
//! crate feature `failpoints` a site compiles to nothing; with it, a test arms
//! a site by name with `fail::cfg("name", "ACTIONS")` (or `FAILPOINTS=name=ACTIONS`
//! in a process that calls `fail::FailScenario::setup`), where ACTIONS is e.g.
//! `panic`, `return`, `1*off->return` (skip once, then fail every time),
//! `pause`, `sleep(100)`.
//!
//! | site | where | armed with `return` / `panic` |
//! |---|---|---|
//! | `region.map` | `sync::Region::map`: mapping a new 2 MiB region of sector memory | the OS refuses memory: the write fails with `OutOfMemory` (`ENOMEM`), nothing changed, nothing leaked |
//! | `data.apply` | `FileData::apply`, after each sector of a mutation was applied to the draft (every page already taken) | `panic`: the batch fails with `Internal`, and the draft's drop gives back every node and page the apply made (issue 18) |
//! | `node.publish` | `Node::apply_ops` (a batch, or the fast path's batch of one), after every request of the batch was applied to the private copy, before it is published | `panic`: every request of the batch gets `Internal` (`EIO`), the file stays at its last published version |
//!
//! The `sectorfs` daemon built with `--features failpoints` also arms sites at
//! run time through `setfattr -n user.sectorfs.failpoint -v 'name=ACTIONS'
//! MOUNTPOINT` (see `mount/src/fault.rs`), so real-mount tests can inject a
//! fault at one precise request.
//!
//! Reuse in another crate: depend on `fail` as an optional dependency behind a
//! `failpoints` feature, and copy the five-line macro below (its `cfg` is
//! evaluated in the crate that expands it).

/// A failpoint site (see the module doc); nothing without `failpoints`.
macro_rules! fail_point {
    ($($t:tt)*) => {
        #[cfg(feature = "failpoints")]
        fail::fail_point!($($t)*);
    };
}
pub(crate) use fail_point;
