//! The mutation gate: how a save gets one point in time across the whole
//! namespace (`image`) without stopping writers for the length of the stream.
//!
//! # Protocol
//! Every operation that changes what an image holds (a namespace change,
//! or any request through a node's actor submitted from outside a
//! namespace change) runs inside [`Gate::enter`]: a shared hold of one of
//! `slots` reader-writer locks, the one this thread maps to (a
//! "big-reader lock": a mutator touches only its own slot's cache line, so
//! different threads never contend on the gate). A capture takes
//! [`Gate::close`]: every slot's write lock, in slot order. While the gate is
//! closed, no mutation is in flight and none starts, so what the capture
//! copies out (directory entries and each node's published `Arc<Snap>`,
//! O(files) pointer copies, never file bytes) is the state after some prefix
//! of the linearised mutations: a point in time. Readers never enter the
//! gate, nor do the access-time updates they make (`Op::Accessed`): a
//! capture shows an access time from just before or just after it, and
//! never holds a reader up.
//!
//! # Fields and who touches them
//! * `slots[i]`: shared by the mutators mapped to slot `i` for the length of
//!   one operation; exclusive by a capture for the length of the copy. Its
//!   count of entries (`entered`) is raised by each mutator under its
//!   shared hold and read by anyone (`Gate::changes`: exact under a
//!   capture's exclusive hold, which no raise can overlap).
//! * `HELD` (thread-local): the address of the gate this thread holds
//!   shared, so a gated operation that calls another one (a namespace change
//!   submitting a time stamp through an actor, `setxattr` on an ACL name)
//!   does not take its slot twice: with a writer waiting, a second shared
//!   acquisition of a writer-preferring lock would wait for that writer,
//!   which waits for the first hold: a deadlock.
//!
//! # Lock order
//! The gate comes before every other engine lock (it is taken at the entry
//! of an operation, before directory locks, `life` or the actor). A thread
//! holding it shared waits only for threads that hold it too (a runner
//! applying its request, a directory lock's holder), never for one that has
//! not entered, so a closing capture cannot deadlock with them; the capture
//! itself takes only directory read locks (whose other holders are readers
//! or gated mutators that already left) and the inode map's shard locks.
//!
//! loom: `loom-tests/tests/image_gate.rs` (a capture sees a rename whole,
//! and a thread's two writes in order; injected bug `image_gate_open`).

use std::cell::Cell;

use crossbeam_utils::CachePadded;

use crate::sync::atomic::Ordering;
use crate::sync::{thread_local, RwLock, RwLockReadGuard, RwLockWriteGuard, TallyU64};

thread_local! {
    #[allow(clippy::missing_const_for_thread_local)] // loom's thread_local! has no const form
    static HELD: Cell<usize> = Cell::new(0);
    #[allow(clippy::missing_const_for_thread_local)]
    static SLOT: Cell<usize> = Cell::new(usize::MAX);
}
/// Hands each new thread the next slot (a hint; see the pool's `NEXT_SLOT`).
static NEXT_SLOT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The mutation gate (see the module doc).
pub(crate) struct Gate {
    slots: Box<[CachePadded<Slot>]>,
}

/// One slot: its lock, and how many mutations entered through it (a count
/// on the line its mutators write anyway), so that a save can tell whether
/// anything changed since another ([`Gate::changes`]).
struct Slot {
    lock: RwLock<()>,
    entered: TallyU64,
}

/// A mutator's shared hold (nothing if this thread already holds the gate).
pub(crate) struct Entered<'a> {
    guard: Option<RwLockReadGuard<'a, ()>>,
}

/// A capture's exclusive hold of every slot.
pub(crate) struct Closed<'a> {
    _guards: Vec<RwLockWriteGuard<'a, ()>>,
}

impl Gate {
    /// A gate of `slots` (at least one) locks.
    pub(crate) fn new(slots: usize) -> Gate {
        Gate {
            slots: (0..slots.max(1))
                .map(|_| CachePadded::new(Slot { lock: RwLock::new(()), entered: TallyU64::new(0) }))
                .collect(),
        }
    }

    fn addr(&self) -> usize {
        self as *const Gate as usize
    }

    /// Enters the gate for one mutation; waits while a capture holds it.
    pub(crate) fn enter(&self) -> Entered<'_> {
        // Injected bug (loom-tests/tests/image_gate.rs): mutators ignore the gate.
        if cfg!(loom_bug = "image_gate_open") || HELD.with(Cell::get) == self.addr() {
            return Entered { guard: None };
        }
        let n = self.slots.len();
        let slot = SLOT.with(|s| {
            if s.get() == usize::MAX {
                s.set(NEXT_SLOT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
            }
            s.get() % n
        });
        let guard = self.slots[slot].lock.read();
        self.slots[slot].entered.fetch_add(1, Ordering::Relaxed);
        HELD.with(|h| h.set(self.addr()));
        Entered { guard: Some(guard) }
    }

    /// Closes the gate: waits for the mutations in flight, then holds off
    /// new ones until the returned hold drops.
    pub(crate) fn close(&self) -> Closed<'_> {
        Closed { _guards: self.slots.iter().map(|s| s.lock.write()).collect() }
    }

    /// How many mutations have entered the gate so far (nested entries
    /// once; an entry whose operation then failed too). Exact while the
    /// caller holds the gate closed (each count changes only under its
    /// slot's shared hold); otherwise a value from around the call. The same
    /// count at a capture and later (gate closed both times, or nothing
    /// running) means nothing that an image holds changed in between,
    /// except access times (readers do not enter).
    pub(crate) fn changes(&self) -> u64 {
        self.slots.iter().map(|s| s.entered.load(Ordering::Relaxed)).sum()
    }
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        if self.guard.take().is_some() {
            HELD.with(|h| h.set(0));
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn nested_entries_take_the_slot_once() {
        let g = Gate::new(1);
        let a = g.enter();
        let b = g.enter();
        assert!(a.guard.is_some() && b.guard.is_none());
        drop(b);
        drop(a);
        // Closing after the holds are gone does not wait.
        drop(g.close());
        let c = g.enter();
        assert!(c.guard.is_some());
    }

    #[test]
    fn close_waits_for_a_mutation_in_flight() {
        use crate::sync::atomic::{AtomicBool, Ordering};
        let g = Gate::new(4);
        let closed = AtomicBool::new(false);
        std::thread::scope(|s| {
            let held = g.enter();
            s.spawn(|| {
                let _c = g.close();
                closed.store(true, Ordering::SeqCst);
            });
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert!(!closed.load(Ordering::SeqCst), "closed while a mutation was in flight");
            drop(held);
        });
        assert!(closed.load(Ordering::SeqCst));
    }
}
