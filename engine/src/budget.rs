//! The metadata budget (issue 17, item 4): what the engine keeps on the
//! heap besides file data, counted in bytes against a limit of its own, so
//! that the sector limit (`Config::max_bytes`) and this one together bound
//! the process.
//!
//! File data (sectors and inline buffers) is charged to the sector pool.
//! Everything else a user can make grow is charged here, at a fixed cost per
//! item that the per-file bench measured (`docs/BENCHMARKS.md`, "Per-file
//! memory" and "The metadata charge"), plus the bytes the user chose:
//! * an inode: [`INODE_COST`] (its node, its version, its inode-map slot),
//!   [`EXTRA_COST`] more for a directory, a symlink or a device, plus a symlink's
//!   target;
//! * a directory entry: [`ENTRY_COST`] plus the name;
//! * an extended attribute (ACLs included): [`XATTR_COST`] plus name and
//!   value.
//!
//! Not charged: what the data bounds already (sector tables: a few bytes per
//! sector), what requests hold while they run (a superseded version a
//! reader still has), and the daemon's transport buffers (a bounded reserve
//! of their own). The limit is like tmpfs's inode space (1 KiB per inode of
//! `nr_inodes`): by default [`PER_INODE`] times `Config::max_inodes`.
//!
//! Inode and entry charges are released by the operation that removes them
//! (the engine frees a node, a directory drops an entry); an attribute's
//! charge lives in its value (`XValue`), shared by every version of the
//! attribute map that holds it, and is released when the last one goes.

use std::ops::Deref;

use crate::sync::atomic::Ordering;
use crate::sync::{Arc, TallyU64};
use crate::{Error, Result};

/// Bytes of an inode: its node (64 bytes, an 80-byte heap block with its
/// `Arc`), its first version (112, 128) and its inode-map slot (about 12).
pub const INODE_COST: u64 = 232;
/// Bytes a directory, a symlink or a device adds to its inode (its boxed
/// `Extra`).
pub const EXTRA_COST: u64 = 144;
/// Bytes of a directory entry besides its name (a 40-byte slot, its index
/// bucket, and the slot vector's slack).
pub const ENTRY_COST: u64 = 64;
/// Bytes of an extended attribute besides its name and value (the map's
/// node and entry, the two boxes' headers).
pub const XATTR_COST: u64 = 160;
/// The default limit per inode of `Config::max_inodes` (tmpfs: 1 KiB).
pub const PER_INODE: u64 = 1024;

/// What an inode costs: with a boxed `Extra` (`extra`: a directory, a
/// symlink, a device with a number) or not, and a symlink target of
/// `target_len` bytes.
pub(crate) fn inode_cost(extra: bool, target_len: usize) -> u64 {
    INODE_COST + if extra { EXTRA_COST } else { 0 } + target_len as u64
}

/// What a directory entry named with `name_len` bytes costs.
pub(crate) fn entry_cost(name_len: usize) -> u64 {
    ENTRY_COST + name_len as u64
}

/// Bytes charged and the limit.
#[derive(Debug)]
pub(crate) struct MetaBudget {
    /// Accounting only (loom does not branch on it: `sync::TallyU64`).
    used: TallyU64,
    limit: u64,
}

impl MetaBudget {
    pub(crate) fn new(limit: u64) -> MetaBudget {
        MetaBudget { used: TallyU64::new(0), limit }
    }

    /// Charges `n` bytes, or `NoSpace` (nothing charged) if they would
    /// exceed the limit.
    pub(crate) fn charge(&self, n: u64) -> Result<()> {
        let mut cur = self.used.load(Ordering::Relaxed);
        loop {
            let new = cur.checked_add(n).filter(|&v| v <= self.limit).ok_or(Error::NoSpace)?;
            match self.used.compare_exchange_weak(cur, new, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(()),
                Err(now) => cur = now,
            }
        }
    }

    /// Charges `n` bytes even past the limit (what an image or the root
    /// needs: refused as a whole before, not one item at a time).
    pub(crate) fn force(&self, n: u64) {
        self.used.fetch_add(n, Ordering::Relaxed);
    }

    /// Gives back `n` bytes charged before.
    pub(crate) fn release(&self, n: u64) {
        let prev = self.used.fetch_sub(n, Ordering::Relaxed);
        debug_assert!(prev >= n, "metadata budget released {n} of {prev}");
    }

    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }
}

/// An extended attribute's value and its charge (name, value and
/// [`XATTR_COST`]), released when the value is dropped: by the last
/// version of the attribute map that holds it.
pub(crate) struct XValue {
    bytes: Box<[u8]>,
    budget: Arc<MetaBudget>,
    charged: u64,
}

impl XValue {
    /// `value`, charged for itself and a name of `name_len` bytes.
    ///
    /// # Errors
    /// `NoSpace` past the limit.
    pub(crate) fn new(budget: &Arc<MetaBudget>, name_len: usize, value: Box<[u8]>) -> Result<XValue> {
        let charged = Self::cost(name_len, &value);
        budget.charge(charged)?;
        Ok(XValue { bytes: value, budget: Arc::clone(budget), charged })
    }

    /// `value` charged past the limit ([`MetaBudget::force`]).
    pub(crate) fn forced(budget: &Arc<MetaBudget>, name_len: usize, value: Box<[u8]>) -> XValue {
        let charged = Self::cost(name_len, &value);
        budget.force(charged);
        XValue { bytes: value, budget: Arc::clone(budget), charged }
    }

    /// What an attribute named with `name_len` bytes holding `value` costs.
    fn cost(name_len: usize, value: &[u8]) -> u64 {
        XATTR_COST + name_len as u64 + value.len() as u64
    }
}

impl Deref for XValue {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for XValue {
    fn drop(&mut self) {
        self.budget.release(self.charged);
    }
}

impl std::fmt::Debug for XValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XValue").field("len", &self.bytes.len()).finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn charges_up_to_the_limit_and_gives_back() {
        let b = Arc::new(MetaBudget::new(1000));
        b.charge(600).unwrap();
        assert_eq!(b.charge(401), Err(Error::NoSpace));
        assert_eq!(b.used(), 600);
        b.charge(400).unwrap();
        assert_eq!(b.charge(1), Err(Error::NoSpace));
        b.release(1000);
        assert_eq!(b.charge(u64::MAX), Err(Error::NoSpace));
        let v = XValue::new(&b, 10, vec![7; 100].into()).unwrap();
        assert_eq!((&*v, b.used()), (&[7u8; 100][..], XATTR_COST + 110));
        assert_eq!(XValue::new(&b, 0, vec![0; 1000].into()).err(), Some(Error::NoSpace));
        drop(v);
        assert_eq!(b.used(), 0);
        let v = XValue::forced(&b, 0, vec![0; 2000].into());
        assert_eq!(b.used(), XATTR_COST + 2000);
        drop(v);
        assert_eq!(b.used(), 0);
    }
}
