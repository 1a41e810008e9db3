//! Sectors and pages: fixed-size blocks of file data (this file: the page
//! contract, who may touch which bytes), the pool they come from and the
//! exact memory limit (`pool.rs`: [`Pool`], [`Reservation`], [`Charge`]),
//! and the persistent table that maps a file's page indices to pages
//! (`table.rs`).
//!
//! # Sectors and pages
//! A file's data is allocated in *sectors* (`--sector-size`, 64 KiB by
//! default): a hole is a whole absent sector, and writing into one takes a
//! whole fresh sector. Each sector is `sector_size / page_size` *pages*
//! (4 KiB), and the page is the unit of copy-on-write: overwriting 4 KiB of
//! a sector that readers can see copies at most that one page into a fresh
//! one, never the other 60 KiB (issue 18). The pages of a sector are usually
//! one contiguous run (the pool hands them out so), but need not be: the
//! table maps every page on its own.
//!
//! # Page contract (who may touch which bytes)
//! A page is reached from the tables of one or more versions of its file.
//! Each page slot of a table leaf carries `init`: the number of leading
//! bytes of the page that have ever been written (or zeroed); bytes at
//! `init..` have never been exposed to any reader, because a version only
//! lets readers see bytes below its file size, and the runner raises `init`
//! past every byte before a version that exposes it is published. Hence:
//!
//! 1. Readers read only bytes of a page below the file size of a version
//!    they hold, so below the `init` the page had when that version was
//!    published.
//! 2. The file's runner (the one thread applying a batch) may write bytes at
//!    `init..` in place even while readers use the page: no reader reads
//!    there (rule 1), so there is no data race.
//! 3. Below `init`, the runner writes in place only if the page is *fresh*:
//!    taken in the batch being built, so no version that was ever published
//!    reaches it. Otherwise it copies the page (copy-on-write) into a fresh
//!    one. `init` never goes down (truncation leaves it), so rule 2 never
//!    reaches below a byte that some version showed.
//! 4. `init` lives in the draft's private leaf; only the runner reads or
//!    writes it.
//! 5. A page that a newer version no longer reaches is *retired* into the
//!    version that still reaches it, and goes back to the pool only when that
//!    version and every older one are gone (no reader can reach it any more:
//!    `crate::node`, "Versions"). Until then nobody writes it.
//!
//! A page may sit in table slots of two files, or at two indices of one (a
//! clone: `Engine::copy_file_range`, issue 20). Such a page is marked
//! *shared* in each leaf, with `init` at the page size, and is never written
//! in place: rule 2 never applies, and rule 3 does not either even if the
//! page is fresh (`Leaf::marked_fresh` and `LeafMut::is_fresh` say "fresh
//! and not shared"). Rule 5 holds per slot: each slot is one holder, given
//! up by its own file's version protocol, and the page goes back to the
//! pool with the last ([`Pool::free_pages`], `pool.rs` "Shared pages").
//!
//! Rules 1–3 and 5 hold for as long as a reader holds a version, not only at
//! the moment it copies: that is what lets `RawMem::lend` hand out slices
//! of the memory itself for the length of a `read_with`.
//!
//! loom: `table_publish.rs` (no torn read, no byte written while readable),
//! `reclaim.rs` (freed only after the last reader), `read_with.rs`
//! (no byte written while lent, pages reused only after the lender let go)
//! and `clone_share.rs` (a shared page freed only with its last holder).

mod pool;
pub mod table;

pub(crate) use pool::Transit;
pub use pool::{Charge, Pool, PoolStats, Reservation, CACHE_BATCH, CACHE_MAX, CACHE_UNIT_MIN, PAGE};
pub use table::SLOT_COST;
