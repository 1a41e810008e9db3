//! The per-file actor: a combining executor that linearises a file's
//! mutations without a thread per file and without a lock on the read path.
//!
//! # State
//! * `pending` (atomic): the number of requests *counted* and not yet
//!   completed. It functions as the runner lock: whoever moves it from 0 to
//!   non-zero is the **runner** and stays runner until it moves it back to 0
//!   or hands the role over (below).
//! * `mailbox`: requests from submitters that were not the runner, each with
//!   its completion slot (`Done`).
//! * A completion slot is written once by the runner, under its mutex, with
//!   either the request's result or the runner role itself (a hand-over), and
//!   read by its submitter.
//!
//! # Protocol
//! 1. *Fast path.* A submitter that moves `pending` 0 → 1 with a CAS is the
//!    runner and applies its own request directly (borrowed, no mailbox, and
//!    through the caller's batch-of-one function: no `Vec`), as a batch of one.
//! 2. *Slow path.* Otherwise it sends its request (made owned) with a
//!    completion slot into the mailbox, and only **then** increments
//!    `pending`. If that increment moved it from 0, it is the runner;
//!    otherwise it waits on its completion slot.
//! 3. The runner repeatedly takes exactly as many requests from the mailbox as
//!    it knows are counted (`budget`), applies them as one batch (the caller's
//!    apply function publishes one new version per batch), completes each,
//!    and subtracts `budget` from `pending`. If that leaves 0 it stops being
//!    runner; otherwise the difference is the next budget.
//! 4. *Hand-over.* A runner serves at most [`MAX_BATCHES`] batches. If after
//!    its last one `pending` is still non-zero, it does not subtract the rest:
//!    it takes the next counted request from the mailbox and writes the role
//!    into that request's completion slot (`Wake::Run`, with the request and
//!    the remaining budget). Its submitter wakes as the runner, starts its
//!    first batch with its own request, and follows step 3. So the thread
//!    that happens to be runner returns to its caller after a bounded number
//!    of batches, however many writers keep the file busy (without this, with
//!    three or more writers one runner could serve the others forever).
//! 5. *Panics.* A batch is applied under `catch_unwind`. If the apply function
//!    panics, every request of that batch completes with
//!    [`Outcome::panicked`] (`Error::Internal`, EIO), and the protocol goes on
//!    exactly as after a normal batch (subtract, continue, hand over or
//!    leave). The apply function publishes only at its end, so the file stays
//!    at its last published version, and whatever the batch had taken
//!    (reservations, sectors) is dropped while unwinding.
//!
//! Why it is right: a request is counted only after it is in the mailbox, and
//! the runner subtracts only what it completed, so `pending` never reaches 0
//! while a counted request waits (no lost wake-up: the submitter that moves
//! it off 0 becomes runner itself, and a hand-over never subtracts).
//! Counted requests are in the mailbox before the runner reads the count
//! (release on the increment, acquire on the subtraction), so taking `budget`
//! of them always succeeds. Only one thread is runner at a time: the role
//! passes only through `pending` reaching 0 or through one completion slot
//! (whose mutex also orders the old runner's writes before the new runner's),
//! so batches never overlap: every request is applied exactly once, and a
//! submitter's requests are applied in the order it made them (it waits for
//! each before making the next).
//!
//! loom: `loom-tests/tests/combining_actor.rs` (hand-over with a bound of one
//! batch, and a batch that panics).

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::sync::atomic::{AtomicU32, Ordering};
use crate::sync::{spin_loop, Arc, Condvar, Mailbox, Mutex};

/// Most batches one runner applies before it hands the role over.
///
/// The runner is also a submitter whose own request is done after its first
/// batch; this bounds how long its caller waits for work that is not its own.
/// A hand-over costs one wake-up of a thread that was going to be woken for
/// its result anyway, so a small bound costs little.
pub const MAX_BATCHES: usize = 4;

/// A request that can be made owned to cross threads.
pub trait Request<'a>: Sized {
    /// The owned form, sent through the mailbox.
    type Owned: Send + 'static;
    /// Makes the request owned (copies borrowed payloads).
    fn into_owned(self) -> Self::Owned;
    /// Views an owned request as a request again.
    fn from_owned(o: Self::Owned) -> Self;
}

/// A result that can say "this request's batch panicked".
pub trait Outcome {
    /// The result of each request of a batch whose apply function panicked.
    fn panicked() -> Self;
}

impl<T> Outcome for Result<T, crate::Error> {
    fn panicked() -> Self {
        Err(crate::Error::Internal)
    }
}

/// What a waiting submitter is woken with.
enum Wake<O, R> {
    /// Its request was applied (or its batch panicked): the result.
    Done(R),
    /// It is the runner now: its own request (taken out of the mailbox) and
    /// the number of counted requests, its own included.
    Run(O, usize),
}

struct Done<O, R> {
    slot: Mutex<Option<Wake<O, R>>>,
    cv: Condvar,
}

impl<O, R> Done<O, R> {
    fn new() -> Self {
        Done { slot: Mutex::new(None), cv: Condvar::new() }
    }
    fn wake(&self, w: Wake<O, R>) {
        *self.slot.lock() = Some(w);
        self.cv.notify_all();
    }
    fn wait(&self) -> Wake<O, R> {
        let mut g = self.slot.lock();
        loop {
            if let Some(w) = g.take() {
                return w;
            }
            g = self.cv.wait(g);
        }
    }
}

type Job<O, R> = (O, Arc<Done<O, R>>);

/// A combining executor for one object's mutations.
///
/// 16 bytes (one per inode; issue 17): `pending` is a `u32` (it counts
/// requests whose submitters wait for them, so at most one per submitting
/// thread), the bound a `u32`, and an idle mailbox one pointer.
pub struct Combiner<O: Send + 'static, R: Send + 'static> {
    pending: AtomicU32,
    max_batches: u32,
    mailbox: Mailbox<Job<O, R>>,
}

impl<O: Send + 'static, R: Send + 'static + Outcome> Default for Combiner<O, R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<O: Send + 'static, R: Send + 'static> std::fmt::Debug for Combiner<O, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Combiner").field("pending", &self.pending.load(Ordering::Relaxed)).finish()
    }
}

impl<O: Send + 'static, R: Send + 'static + Outcome> Combiner<O, R> {
    /// An idle executor.
    pub fn new() -> Self {
        Self::with_max_batches(MAX_BATCHES)
    }

    /// An idle executor whose runners hand over after `n` batches (at least
    /// one). For loom models and tests; internal, not semver.
    #[doc(hidden)]
    pub fn with_max_batches(n: usize) -> Self {
        let max_batches = n.clamp(1, u32::MAX as usize) as u32;
        Combiner { pending: AtomicU32::new(0), max_batches, mailbox: Mailbox::new() }
    }

    /// Requests counted and not yet completed (for tests).
    #[doc(hidden)]
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire) as usize
    }

    /// Submits `req` and returns its result once it has been applied.
    ///
    /// `apply` applies a batch in order and returns one result per request;
    /// every submitter of one executor must pass an equivalent `apply` (the
    /// runner's is used for everyone's requests). If `apply` panics, every
    /// request of that batch gets [`Outcome::panicked`].
    pub fn submit<'a, Q>(&self, req: Q, apply: &dyn Fn(Vec<Q>) -> Vec<R>) -> R
    where
        Q: Request<'a, Owned = O>,
    {
        // As `guarded` does for a batch: anything but exactly one result
        // counts as a failed batch.
        let one = |q: Q| {
            let mut v = apply(vec![q]);
            if v.len() == 1 { v.pop() } else { None }.unwrap_or_else(R::panicked)
        };
        self.submit_with(req, &one, apply)
    }

    /// [`Combiner::submit`] with `one`, which applies a batch of exactly one
    /// request (equivalent to `apply(vec![req])`): the fast path (nobody
    /// else running) calls it with the caller's own request, so that path
    /// needs no `Vec` (no allocation).
    pub fn submit_with<'a, Q>(&self, req: Q, one: &dyn Fn(Q) -> R, apply: &dyn Fn(Vec<Q>) -> Vec<R>) -> R
    where
        Q: Request<'a, Owned = O>,
    {
        if self.pending.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            let r = guarded_one(one, req);
            if let Some(budget) = self.end_batch(1, 1) {
                self.run(None, budget, 1, apply);
            }
            return r;
        }
        let done = Arc::new(Done::new());
        self.mailbox.send((req.into_owned(), Arc::clone(&done)));
        if self.pending.fetch_add(1, Ordering::AcqRel) == 0 {
            self.run(None, 1, 0, apply);
        }
        loop {
            match done.wait() {
                Wake::Done(r) => return r,
                // Our own request is the first of our first batch, which
                // completes `done` with its result.
                Wake::Run(own, budget) => self.run(Some((own, Arc::clone(&done))), budget, 0, apply),
            }
        }
    }

    /// After a batch of `taken` requests, the `served`-th of this runner:
    /// leaves (`None`) if nothing else is counted, hands over if `served`
    /// reached the bound, else returns the next budget.
    fn end_batch(&self, taken: usize, served: usize) -> Option<usize> {
        // At most `pending`, a u32.
        let taken = taken as u32;
        #[cfg(not(loom_bug = "actor_lost_wakeup"))]
        let prev = self.pending.fetch_sub(taken, Ordering::AcqRel);
        // Injected bug (loom-tests/tests/combining_actor.rs): a non-atomic subtraction.
        #[cfg(loom_bug = "actor_lost_wakeup")]
        let prev = {
            let p = self.pending.load(Ordering::Acquire);
            self.pending.store(p - taken, Ordering::Release);
            p
        };
        if prev == taken {
            return None;
        }
        let budget = (prev - taken) as usize;
        if served >= self.max_batches as usize {
            let (own, done) = self.take_counted();
            done.wake(Wake::Run(own, budget));
            // Injected bug (combining_actor.rs): the old runner carries on after
            // handing over, so two runners apply batches at once.
            #[cfg(loom_bug = "actor_handover_keeps_running")]
            return Some(budget);
            #[cfg(not(loom_bug = "actor_handover_keeps_running"))]
            return None;
        }
        Some(budget)
    }

    /// Takes one counted request out of the mailbox.
    fn take_counted(&self) -> Job<O, R> {
        loop {
            match self.mailbox.try_recv() {
                Some(job) => return job,
                // Cannot happen (counted requests are in the mailbox before
                // the count is visible); yield rather than fail if it did.
                None => spin_loop(),
            }
        }
    }

    /// The runner loop: `budget` counted requests, `first` (a hand-over's
    /// own request, already out of the mailbox) and the rest in the mailbox;
    /// `served` batches already applied by this runner.
    fn run<'a, Q: Request<'a, Owned = O>>(
        &self,
        mut first: Option<Job<O, R>>,
        mut budget: usize,
        mut served: usize,
        apply: &dyn Fn(Vec<Q>) -> Vec<R>,
    ) {
        loop {
            let mut reqs = Vec::with_capacity(budget);
            let mut dones = Vec::with_capacity(budget);
            if let Some((o, d)) = first.take() {
                reqs.push(Q::from_owned(o));
                dones.push(d);
            }
            while reqs.len() < budget {
                let (o, d) = self.take_counted();
                reqs.push(Q::from_owned(o));
                dones.push(d);
            }
            let mut results = guarded(apply, reqs).into_iter();
            for d in dones {
                d.wake(Wake::Done(results.next().unwrap_or_else(R::panicked)));
            }
            served += 1;
            match self.end_batch(budget, served) {
                Some(b) => budget = b,
                None => return,
            }
        }
    }
}

/// Applies one batch; if `apply` panics (or returns too few results), every
/// request of the batch gets [`Outcome::panicked`].
fn guarded<Q, R: Outcome>(apply: &dyn Fn(Vec<Q>) -> Vec<R>, reqs: Vec<Q>) -> Vec<R> {
    let n = reqs.len();
    // `AssertUnwindSafe`: after a panic nothing the batch touched is used
    // again except through what `apply` published, and `apply` publishes only
    // at its end (a panic before that leaves the last published version).
    #[cfg(not(loom_bug = "actor_panic_unwinds"))]
    let out = catch_unwind(AssertUnwindSafe(|| apply(reqs))).ok().filter(|r| r.len() == n);
    // Injected bug (combining_actor.rs): no guard, a panic unwinds out of the
    // runner and leaves `pending` counted with nobody to run it.
    #[cfg(loom_bug = "actor_panic_unwinds")]
    let out = Some(apply(reqs));
    out.unwrap_or_else(|| (0..n).map(|_| R::panicked()).collect())
}

/// Applies a batch of one request, as [`guarded`] does a batch.
fn guarded_one<Q, R: Outcome>(one: &dyn Fn(Q) -> R, req: Q) -> R {
    // `AssertUnwindSafe`: as in `guarded`.
    #[cfg(not(loom_bug = "actor_panic_unwinds"))]
    let out = catch_unwind(AssertUnwindSafe(|| one(req))).unwrap_or_else(|_| R::panicked());
    // Injected bug (combining_actor.rs): no guard (as in `guarded`).
    #[cfg(loom_bug = "actor_panic_unwinds")]
    let out = one(req);
    out
}

impl Request<'_> for u64 {
    type Owned = u64;
    fn into_owned(self) -> u64 {
        self
    }
    fn from_owned(o: u64) -> u64 {
        o
    }
}
