//! A small file's bytes: one allocation, a 16-byte header, shared by the
//! versions of the file that hold them, charged against the limit for
//! exactly their length until the last of those versions lets go.
//!
//! Issue 17, per-file cost: `triomphe`'s thin `Arc` of a header and a slice
//! spent 32 bytes of header (a word of count, the pool, the length twice),
//! a 144-byte heap chunk for 100 bytes; this header is a 32-bit count, a
//! 32-bit length and the pool, a 128-byte chunk. The bytes are written once,
//! before the first reference is handed out, and never after.
//!
//! # The count (as the standard library's `Arc`)
//! A clone adds one (relaxed: the cloner holds a reference, so the count
//! cannot reach zero meanwhile); a drop takes one with release ordering,
//! and the drop that takes the last one fences with acquire before it reads
//! the header and frees the allocation, so every other holder's reads of the
//! bytes happen before the free. loom: `loom-tests/tests/inline.rs`, which
//! catches the injected bug `inline_drop_relaxed` (the last drop without
//! the release/acquire pair); under loom the length is a loom cell read by
//! every look at the bytes and by the last drop, so a look not ordered
//! before the free is a loom error.

use std::alloc::{handle_alloc_error, Layout};
use std::ptr::NonNull;

use crate::sector::{Charge, Pool};
use crate::sync::atomic::{fence, AtomicU32, Ordering};
use crate::sync::UnsafeCell;

/// What precedes the bytes.
#[repr(C)]
struct Head {
    /// References to the allocation (versions holding the bytes).
    count: AtomicU32,
    /// The bytes' length. A cell only for loom, which checks its reads
    /// (every look at the bytes) against the last drop; never written
    /// after [`Inline::new`].
    len: UnsafeCell<u32>,
    /// Who to give the charge back to.
    pool: Pool,
}

#[cfg(all(not(loom), target_pointer_width = "64"))]
const _: () = assert!(std::mem::size_of::<Head>() == 16);

/// A count this high is a leak of references (each one a version, 112
/// bytes or more): abort as the standard `Arc` does rather than let it wrap.
const MAX_COUNT: u32 = u32::MAX / 2;

/// A small file's bytes (at most `u32::MAX`), charged to a pool already:
/// the charge goes back when the last clone is dropped.
pub struct Inline(NonNull<Head>);

// SAFETY: the bytes and the length are never written after `new` (before
// the first reference exists), the count is atomic, and `Pool` is `Send +
// Sync`: sharing or sending a reference shares only those. The allocation
// is freed once, by the drop that takes the count to zero, after an acquire
// fence that orders every other holder's reads before it.
unsafe impl Send for Inline {}
// SAFETY: as for `Send`.
unsafe impl Sync for Inline {}

impl Inline {
    /// `bytes` (at most `u32::MAX` of them; a sector at most in practice),
    /// charged by `charge` (of exactly their length), which this keeps.
    pub fn new(bytes: &[u8], charge: Charge) -> Inline {
        debug_assert_eq!(charge.bytes(), bytes.len() as u64, "inline bytes are charged their length");
        let len = u32::try_from(bytes.len()).expect("inline bytes fit a sector");
        let pool = charge.keep();
        let layout = Self::layout(len);
        // SAFETY: the layout is not zero-sized (the header is not).
        let p = unsafe { crate::sync::alloc(layout) }.cast::<Head>();
        let Some(p) = NonNull::new(p) else { handle_alloc_error(layout) };
        // SAFETY: `p` is a fresh allocation of `layout`: room for the
        // header, aligned for it, and `len` bytes right after it.
        unsafe {
            p.as_ptr().write(Head { count: AtomicU32::new(1), len: UnsafeCell::new(len), pool });
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), p.as_ptr().add(1).cast::<u8>(), bytes.len());
        }
        Inline(p)
    }

    /// The allocation for `len` bytes: the header, then the bytes.
    fn layout(len: u32) -> Layout {
        // A header and at most 4 GiB: never past `isize::MAX`.
        let bytes = Layout::array::<u8>(len as usize).expect("at most 4 GiB");
        Layout::new::<Head>().extend(bytes).expect("at most 4 GiB").0.pad_to_align()
    }

    fn head(&self) -> &Head {
        // SAFETY: the allocation lives while any `Inline` of it does (the
        // count), and this one is borrowed.
        unsafe { self.0.as_ref() }
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the length was written in `new` and never after.
        let len = self.head().len.with(|l| unsafe { *l });
        // SAFETY: `len` bytes follow the header (`new`), initialised, never
        // written again, and alive while `self` is borrowed (the count).
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().add(1).cast::<u8>(), len as usize) }
    }
}

impl Clone for Inline {
    fn clone(&self) -> Inline {
        // Relaxed: the caller's reference keeps the count above zero.
        if self.head().count.fetch_add(1, Ordering::Relaxed) >= MAX_COUNT {
            std::process::abort();
        }
        Inline(self.0)
    }
}

impl Drop for Inline {
    fn drop(&mut self) {
        #[cfg(not(loom_bug = "inline_drop_relaxed"))]
        {
            if self.head().count.fetch_sub(1, Ordering::Release) != 1 {
                return;
            }
            fence(Ordering::Acquire);
        }
        // Injected bug (loom-tests/tests/inline.rs): the last drop is not
        // ordered after the other holders' reads of the bytes.
        #[cfg(loom_bug = "inline_drop_relaxed")]
        if self.head().count.fetch_sub(1, Ordering::Relaxed) != 1 {
            return;
        }
        let p = self.0.as_ptr();
        // SAFETY: the count reached zero here, after every other holder's
        // release (the fence), so this is the only access left; the header
        // was written in `new` and is read (the pool moved out) once.
        let (len, pool) = unsafe { ((*p).len.with_mut(|l| *l), std::ptr::read(&raw const (*p).pool)) };
        // SAFETY: allocated in `new` with this layout (the same length),
        // and nobody reaches it any more. The count needs no drop.
        unsafe { crate::sync::dealloc(p.cast::<u8>(), Self::layout(len)) };
        pool.uncharge(u64::from(len));
    }
}

impl std::fmt::Debug for Inline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inline").field("len", &self.bytes().len()).finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// The bytes read back as written, clones share them, and the charge
    /// goes back with the last clone, not before.
    #[test]
    fn the_last_clone_gives_the_charge_back() {
        let pool = Pool::new(4096, 1 << 20, 1);
        for len in [0usize, 1, 15, 16, 100, 4096] {
            let bytes: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let charge = pool.reserve(len as u64).unwrap().charge(len as u64).unwrap();
            let a = Inline::new(&bytes, charge);
            let b = a.clone();
            let c = b.clone();
            assert_eq!(a.bytes(), &bytes[..]);
            assert_eq!(c.bytes().as_ptr(), a.bytes().as_ptr(), "shared, not copied");
            drop(a);
            drop(c);
            assert_eq!(pool.used(), len as u64, "held by one clone");
            assert_eq!(b.bytes(), &bytes[..]);
            drop(b);
            assert_eq!(pool.used(), 0, "the charge goes with the last");
        }
    }

    /// What a 100-byte file's bytes cost (issue 17): a 16-byte header
    /// (and padding to its alignment): 120 bytes, a 128-byte glibc chunk.
    #[test]
    fn the_header_is_sixteen_bytes() {
        assert_eq!(Inline::layout(100).size(), 120);
        assert_eq!(Inline::layout(0).size(), 16);
    }
}
