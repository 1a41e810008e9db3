//! `ArcSwap`'s contract without arc-swap's writer cost (issue 18): a
//! published `Arc` that readers load without touching its reference count,
//! whose `swap` only *reads* other threads' lines unless one of them holds
//! the old version.
//!
//! # Why
//! arc-swap's `swap` walks one node per thread that ever loaded and does a
//! `fetch_add` and a `fetch_sub` on a counter in each (`reserve_writer`, so
//! that a node being helped is not reused), so two threads publishing
//! versions of two different files write each other's lines on every write
//! (docs/BENCHMARKS.md, "Where the rest goes": two threads scaled 1.47–1.58x
//! where two processes scale 1.95x). Here a writer writes nothing but its own
//! cell, and a reader's line, only to take over a reader's reference (below).
//!
//! # The protocol (hazard slots, as arc-swap's "debts" without helping)
//! * Every thread owns a *chunk* of [`SLOTS`] slots (one cache line) from a
//!   global list that only grows (a chunk is reused by a later thread, never
//!   freed). A slot is null or holds a pointer its thread is reading.
//! * `load`: `p = cell.load()`; store `p` in a free slot of the thread;
//!   a SeqCst fence; load the cell again. Equal: `p` is protected, the
//!   guard reads it. Different: the thread takes the slot back with a CAS
//!   `p → null`; if that CAS fails, a writer *paid* for `p` (see `swap`) and
//!   the thread owns one count of it, which it drops; then it tries again.
//! * Dropping a guard: CAS its slot `p → null`. If that fails, a writer paid:
//!   the guard owns one count of `p` and drops it.
//! * `swap(new)`: swap the cell, a SeqCst fence, then read every slot of
//!   every chunk; for a slot holding the old pointer: add one to its
//!   count and CAS the slot `old → null`; if that CAS fails the reader has
//!   let go meanwhile, so take the count back. Return the old `Arc`.
//!
//! Why a reader is never left unprotected: a SeqCst fence stands between
//! its slot store and its second load, and another between the writer's
//! swap and its reads of the slots. If the reader's fence comes first in
//! their single total order, the writer's reads see the slot store (`p`, or
//! a later value: the reader let go); if the writer's comes first, the
//! reader's second load sees the swap and it retracts. So when `swap`
//! returns, every guard of the old version is counted in the old `Arc`, as
//! `sync::ArcSwap::swap` promises (`Arc::get_mut` on it succeeds exactly when
//! no reader holds it). A pointer a slot still holds is never freed: a
//! guard's pointer is either published or paid for. The slot CASes order a
//! reader's reads before the writer's later `get_mut` or drop (release on
//! the reader's side, acquire on the writer's, failure included).
//!
//! loom: `loom-tests/tests/hazard.rs` runs readers against swaps and the
//! writer's own `load_writer`, with injected bugs (`cfg(loom_bug =
//! "hazard_no_recheck")`: the reader does not load the cell again;
//! `writer_load_uncounted`: the writer's load takes no count) that it
//! catches.

use std::cell::Cell;
use std::marker::PhantomData;
use std::ptr;

use super::atomic::{fence, AtomicBool, AtomicPtr, Ordering};
use super::{arc_decrement, arc_increment, Arc};

/// Slots per chunk: guards one thread may hold at once before it borrows a
/// spare chunk (the engine holds one or two).
pub const SLOTS: usize = 8;

/// One thread's slots, in one cache line of their own.
#[repr(align(128))]
struct Chunk {
    slots: [AtomicPtr<()>; SLOTS],
    /// Owned by a thread (or borrowed for one slow load).
    claimed: AtomicBool,
    /// The next chunk of the list (set before the chunk is published).
    next: AtomicPtr<Chunk>,
}

#[cfg(not(loom))]
static HEAD: AtomicPtr<Chunk> = AtomicPtr::new(ptr::null_mut());

#[cfg(loom)]
loom::lazy_static! {
    static ref HEAD: AtomicPtr<Chunk> = AtomicPtr::new(ptr::null_mut());
}

/// The chunks, newest first.
fn chunks() -> impl Iterator<Item = &'static Chunk> {
    let mut c = HEAD.load(Ordering::Acquire);
    std::iter::from_fn(move || {
        // SAFETY: chunks are leaked (never freed) and published with
        // release after their `next` was set.
        let r = unsafe { c.as_ref()? };
        c = r.next.load(Ordering::Acquire);
        Some(r)
    })
}

/// Claims a free chunk, or adds one to the list.
fn claim() -> &'static Chunk {
    for c in chunks() {
        if !c.claimed.load(Ordering::Relaxed)
            && c.claimed.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_ok()
        {
            return c;
        }
    }
    let c: &'static Chunk = Box::leak(Box::new(Chunk {
        slots: std::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
        claimed: AtomicBool::new(true),
        next: AtomicPtr::new(ptr::null_mut()),
    }));
    let mut head = HEAD.load(Ordering::Acquire);
    loop {
        c.next.store(head, Ordering::Relaxed);
        match HEAD.compare_exchange(head, ptr::from_ref(c).cast_mut(), Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return c,
            Err(now) => head = now,
        }
    }
}

/// This thread's chunk and which of its slots are in use.
struct Local {
    chunk: Cell<Option<&'static Chunk>>,
    used: Cell<u8>,
}

impl Drop for Local {
    fn drop(&mut self) {
        // Guards are !Send, so none outlives its thread, except one kept in
        // another thread-local that is dropped later: then the chunk stays
        // claimed (128 bytes kept) rather than lend that guard's slot to
        // the next thread.
        if let (Some(c), 0) = (self.chunk.get(), self.used.get()) {
            c.claimed.store(false, Ordering::Release);
        }
    }
}

super::thread_local! {
    // loom's `thread_local!` takes no `const` block.
    #[allow(clippy::missing_const_for_thread_local)]
    static LOCAL: Local = Local { chunk: Cell::new(None), used: Cell::new(0) };
}

/// A published `Arc<T>`: lock-free loads, swaps that pay readers' debts.
pub struct HazardSwap<T> {
    ptr: AtomicPtr<T>,
    _owns: PhantomData<Arc<T>>,
}

// SAFETY: it owns one count of an `Arc<T>` and hands out `&T` and `Arc<T>`
// to any thread, as `Arc<T>` itself may be shared when `T: Send + Sync`.
unsafe impl<T: Send + Sync> Send for HazardSwap<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for HazardSwap<T> {}

/// A read guard: the version it loaded stays alive while it lives. Keep it
/// on the stack (it is neither `Send` nor `Sync`).
pub struct HazardGuard<T> {
    p: *const T,
    /// The slot protecting `p` and its index in this thread's chunk; `None`:
    /// the guard owns one count of `p` (loaded on the slow path).
    slot: Option<(&'static AtomicPtr<()>, u8)>,
}

impl<T> std::ops::Deref for HazardGuard<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: `p` is protected by the guard's slot (the writer that
        // swaps it out pays for it before it can be freed) or counted.
        unsafe { &*self.p }
    }
}

impl<T> Drop for HazardGuard<T> {
    fn drop(&mut self) {
        match self.slot {
            Some((slot, i)) => {
                let p = self.p.cast_mut().cast::<()>();
                if slot.compare_exchange(p, ptr::null_mut(), Ordering::Release, Ordering::Acquire).is_err() {
                    // SAFETY: a writer paid for `p` (added a count and
                    // cleared the slot): that count is this guard's.
                    unsafe { arc_decrement(self.p) };
                }
                // During thread exit the local may be gone; the chunk is
                // released by its destructor then, and the bit is moot.
                let _ = LOCAL.try_with(|l| l.used.set(l.used.get() & !(1 << i)));
            }
            // SAFETY: the slow path took one count of `p` for this guard.
            None => unsafe { arc_decrement(self.p) },
        }
    }
}

impl<T> HazardSwap<T> {
    /// Publishes `value` as the first version.
    pub fn new(value: Arc<T>) -> Self {
        HazardSwap { ptr: AtomicPtr::new(Arc::into_raw(value).cast_mut()), _owns: PhantomData }
    }

    /// Protects the current version with `slot`; returns it.
    fn protect(&self, slot: &AtomicPtr<()>) -> *const T {
        loop {
            let p = self.ptr.load(Ordering::Acquire);
            // Release: a writer whose scan reads this (and so does not pay
            // for the version an earlier guard of this slot held) still
            // sees everything this thread did through that guard.
            slot.store(p.cast(), Ordering::Release);
            // Orders the slot store before the second load against the
            // writer's fence between its swap and its scan (store-load:
            // only a SeqCst fence on both sides does it).
            fence(Ordering::SeqCst);
            // Injected bug when on (loom-tests/tests/hazard.rs): the reader
            // trusts its first load, which a swap may have freed already.
            #[cfg(loom_bug = "hazard_no_recheck")]
            return p;
            #[cfg(not(loom_bug = "hazard_no_recheck"))]
            if self.ptr.load(Ordering::Acquire) == p {
                return p;
            }
            #[cfg(not(loom_bug = "hazard_no_recheck"))]
            if slot.compare_exchange(p.cast(), ptr::null_mut(), Ordering::Release, Ordering::Acquire).is_err() {
                // SAFETY: a writer paid for `p`: this thread owns that count.
                unsafe { arc_decrement(p) };
            }
        }
    }

    /// The current version, without taking a lock or a count.
    pub fn load(&self) -> HazardGuard<T> {
        // `try_with`: a load from another thread-local's destructor, after
        // this thread's local is gone, takes the slow path.
        let fast = LOCAL.try_with(|l| {
            let used = l.used.get();
            if used == u8::MAX {
                return None;
            }
            let i = (!used).trailing_zeros() as u8;
            let chunk = match l.chunk.get() {
                Some(c) => c,
                None => {
                    let c = claim();
                    l.chunk.set(Some(c));
                    c
                }
            };
            l.used.set(used | 1 << i);
            Some((&chunk.slots[i as usize], i))
        });
        match fast.ok().flatten() {
            Some((slot, i)) => HazardGuard { p: self.protect(slot), slot: Some((slot, i)) },
            None => HazardGuard { p: Arc::into_raw(self.load_slow()), slot: None },
        }
    }

    /// The current version, counted, through a borrowed chunk (a thread that
    /// holds [`SLOTS`] guards already, or whose local is gone).
    fn load_slow(&self) -> Arc<T> {
        let c = claim();
        let p = self.protect(&c.slots[0]);
        // SAFETY: `p` is protected by the slot: alive, and its count may be
        // raised.
        unsafe { arc_increment(p) };
        if c.slots[0]
            .compare_exchange(p.cast_mut().cast(), ptr::null_mut(), Ordering::Release, Ordering::Acquire)
            .is_err()
        {
            // SAFETY: a writer paid for `p` as well: drop its count.
            unsafe { arc_decrement(p) };
        }
        c.claimed.store(false, Ordering::Release);
        // SAFETY: one count of `p` was taken above for this `Arc`.
        unsafe { Arc::from_raw(p) }
    }

    /// The current version as an owned `Arc`.
    pub fn load_full(&self) -> Arc<T> {
        let g = self.load();
        // SAFETY: `g` keeps `p` alive while its count is raised.
        unsafe { arc_increment(g.p) };
        // SAFETY: the count raised above is this `Arc`'s.
        unsafe { Arc::from_raw(g.p) }
    }

    /// The current version as an owned `Arc`, for the cell's one writer:
    /// no hazard slot (whose line every other thread's `swap` then reads),
    /// one count taken on the version itself. A node's runner starts each
    /// batch with it.
    ///
    /// # Safety
    /// No other thread swaps, stores or drops the cell until this returns
    /// (the caller is its only writer): the cell's own count keeps the
    /// version alive while this one is taken.
    pub unsafe fn load_writer(&self) -> Arc<T> {
        // Acquire: the previous writer (another thread, handed the role
        // with release/acquire) published it; this also orders our reads.
        let p = self.ptr.load(Ordering::Acquire);
        // Injected bug (loom-tests/tests/hazard.rs): no count of its own, so
        // the writer's `Arc` and the cell's share one.
        #[cfg(not(loom_bug = "writer_load_uncounted"))]
        // SAFETY: `p` is the cell's, counted by it, and nobody can swap it
        // out meanwhile (the caller's contract).
        unsafe {
            arc_increment(p)
        };
        // SAFETY: the count taken above is this `Arc`'s.
        unsafe { Arc::from_raw(p) }
    }

    /// Publishes `value` and returns the old version, counted exactly: every
    /// guard still holding it has a count in it when this returns.
    pub fn swap(&self, value: Arc<T>) -> Arc<T> {
        let old = self.ptr.swap(Arc::into_raw(value).cast_mut(), Ordering::AcqRel);
        fence(Ordering::SeqCst);
        Self::pay(old);
        // SAFETY: the cell's count of `old`, now the caller's.
        unsafe { Arc::from_raw(old) }
    }

    /// Gives every guard still protecting `old` (taken out of the cell by
    /// the caller, who still owns its count) a count of its own.
    fn pay(old: *const T) {
        let key: *mut () = old.cast_mut().cast();
        for c in chunks() {
            for slot in &c.slots {
                if slot.load(Ordering::Acquire) == key {
                    // SAFETY: this call still owns the cell's count of `old`.
                    unsafe { arc_increment(old) };
                    if slot.compare_exchange(key, ptr::null_mut(), Ordering::AcqRel, Ordering::Acquire).is_err() {
                        // The reader let go first: take the count back
                        // (ours keeps `old` alive).
                        // SAFETY: the count was raised just above.
                        unsafe { arc_decrement(old) };
                    }
                }
            }
        }
    }

    /// Publishes `value`; the old version goes when its last reader is done.
    pub fn store(&self, value: Arc<T>) {
        drop(self.swap(value));
    }
}

impl<T> Drop for HazardSwap<T> {
    fn drop(&mut self) {
        // A guard may outlive its cell (it borrows nothing): pay its debt
        // first, as `swap` does.
        let p = self.ptr.load(Ordering::Acquire);
        fence(Ordering::SeqCst);
        Self::pay(p);
        // SAFETY: the cell's own count.
        drop(unsafe { Arc::from_raw(p) });
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for HazardSwap<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("HazardSwap").field(&&*self.load()).finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A value that counts its drops.
    struct Counted(u64, &'static AtomicUsize);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.1.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn more_guards_than_slots_take_counts() {
        static DROPS: AtomicUsize = AtomicUsize::new(0);
        let cell = HazardSwap::new(Arc::new(Counted(1, &DROPS)));
        // Twice the slots: the last ones are counted (the slow path).
        let guards: Vec<_> = (0..2 * SLOTS).map(|_| cell.load()).collect();
        assert!(guards.iter().all(|g| g.0 == 1));
        let mut old = cell.swap(Arc::new(Counted(2, &DROPS)));
        assert!(Arc::get_mut(&mut old).is_none(), "guards hold the old version");
        assert_eq!(Arc::strong_count(&old), 1 + 2 * SLOTS, "each guard paid for or counted once");
        drop(guards);
        assert!(Arc::get_mut(&mut old).is_some());
        drop(old);
        assert_eq!(DROPS.load(Ordering::Relaxed), 1);
        assert_eq!(cell.load().0, 2);
        // A thread's slots are free again: a new guard is a fast one.
        assert!(cell.load().slot.is_some());
        drop(cell);
        assert_eq!(DROPS.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_guard_outlives_its_cell() {
        static DROPS: AtomicUsize = AtomicUsize::new(0);
        let cell = HazardSwap::new(Arc::new(Counted(7, &DROPS)));
        let g = cell.load();
        drop(cell);
        assert_eq!((g.0, DROPS.load(Ordering::Relaxed)), (7, 0));
        drop(g);
        assert_eq!(DROPS.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn threads_reuse_chunks() {
        let cell = Arc::new(HazardSwap::new(Arc::new(0u64)));
        for _ in 0..64 {
            let c = Arc::clone(&cell);
            std::thread::spawn(move || assert_eq!(*c.load(), 0)).join().unwrap();
        }
        // Threads one after another: a handful of chunks, not 64 (other
        // tests of this binary run beside this one and claim their own).
        let n = chunks().count();
        assert!(n < 32, "{n} chunks for threads that ran one at a time");
    }

    #[test]
    fn readers_and_writers_agree() {
        static DROPS: AtomicUsize = AtomicUsize::new(0);
        let cell = Arc::new(HazardSwap::new(Arc::new(Counted(0, &DROPS))));
        let swaps = 20_000u64;
        std::thread::scope(|s| {
            for _ in 0..3 {
                let c = &cell;
                s.spawn(move || {
                    let mut last = 0;
                    while last < swaps {
                        let g = c.load();
                        let v = g.0;
                        assert!(v >= last, "versions only move forward: {v} after {last}");
                        let full = c.load_full();
                        assert!(full.0 >= v);
                        assert_eq!(g.0, v, "a guard's version does not change");
                        last = v;
                    }
                });
            }
            for i in 1..=swaps {
                let mut old = cell.swap(Arc::new(Counted(i, &DROPS)));
                if let Some(m) = Arc::get_mut(&mut old) {
                    // Nobody else holds it: safe to change (a reader that
                    // did would see a version going backwards).
                    m.0 = 0;
                }
            }
        });
        assert_eq!(DROPS.load(Ordering::Relaxed), swaps as usize, "every old version dropped once");
    }
}
