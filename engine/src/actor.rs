//! The per-file actor: a combining executor that linearises a file's
//! mutations without a thread per file and without a lock on the read path.
//!
//! # State
//! * `pending` (atomic): the number of requests *counted* and not yet
//!   completed. It functions as the runner lock: whoever moves it from 0 to
//!   non-zero is the **runner** and stays runner until it moves it back to 0.
//! * `mailbox`: requests from submitters that were not the runner.
//!
//! # Protocol
//! 1. *Fast path.* A submitter that moves `pending` 0 → 1 with a CAS is the
//!    runner and applies its own request directly (borrowed, no allocation,
//!    no mailbox), as a batch of one.
//! 2. *Slow path.* Otherwise it sends its request (made owned) with a
//!    completion slot into the mailbox, and only **then** increments
//!    `pending`. If that increment moved it from 0, it is the runner;
//!    otherwise it waits on its completion slot.
//! 3. The runner repeatedly takes exactly as many requests from the mailbox as
//!    it knows are counted (`budget`), applies them as one batch (the caller's
//!    apply function publishes one new version per batch), completes each,
//!    and subtracts `budget` from `pending`. If that leaves 0 it stops being
//!    runner; otherwise the difference is the next budget.
//!
//! Why it is right: a request is counted only after it is in the mailbox, and
//! the runner subtracts only what it took, so `pending` never reaches 0 while
//! a counted request waits (no lost wake-up: the submitter that moves it off 0
//! becomes runner itself). Counted requests are in the mailbox before the
//! runner reads the count (release on the increment, acquire on the
//! subtraction), so taking `budget` of them always succeeds. Only one thread
//! is runner at a time, so batches never overlap: every request is applied
//! exactly once, and a submitter's requests are applied in the order it made
//! them (it waits for each before making the next).
//!
//! loom: `loom-tests/tests/combining_actor.rs`.

use crate::sync::atomic::{AtomicUsize, Ordering};
use crate::sync::{spin_loop, Arc, Condvar, Mailbox, Mutex};

/// A request that can be made owned to cross threads.
pub trait Request<'a>: Sized {
    /// The owned form, sent through the mailbox.
    type Owned: Send + 'static;
    /// Makes the request owned (copies borrowed payloads).
    fn into_owned(self) -> Self::Owned;
    /// Views an owned request as a request again.
    fn from_owned(o: Self::Owned) -> Self;
}

struct Done<R> {
    slot: Mutex<Option<R>>,
    cv: Condvar,
}

impl<R> Done<R> {
    fn complete(&self, r: R) {
        *self.slot.lock() = Some(r);
        self.cv.notify_all();
    }
    fn wait(&self) -> R {
        let mut g = self.slot.lock();
        loop {
            if let Some(r) = g.take() {
                return r;
            }
            g = self.cv.wait(g);
        }
    }
}

type Job<O, R> = (O, Arc<Done<R>>);

/// A combining executor for one object's mutations.
pub struct Combiner<O: Send + 'static, R: Send + 'static> {
    pending: AtomicUsize,
    mailbox: Mailbox<Job<O, R>>,
}

impl<O: Send + 'static, R: Send + 'static> Default for Combiner<O, R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<O: Send + 'static, R: Send + 'static> std::fmt::Debug for Combiner<O, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Combiner").field("pending", &self.pending.load(Ordering::Relaxed)).finish()
    }
}

impl<O: Send + 'static, R: Send + 'static> Combiner<O, R> {
    /// An idle executor.
    pub fn new() -> Self {
        Combiner { pending: AtomicUsize::new(0), mailbox: Mailbox::new() }
    }

    /// Submits `req` and returns its result once it has been applied.
    ///
    /// `apply` applies a batch in order and returns one result per request;
    /// every submitter of one executor must pass an equivalent `apply` (the
    /// runner's is used for everyone's requests).
    pub fn submit<'a, Q>(&self, req: Q, apply: &dyn Fn(Vec<Q>) -> Vec<R>) -> R
    where
        Q: Request<'a, Owned = O>,
    {
        if self.pending.compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            let mut out = apply(vec![req]).into_iter();
            self.drain(1, apply);
            // `apply` returns one result per request.
            return out.next().expect("apply returned a result per request");
        }
        let done = Arc::new(Done { slot: Mutex::new(None), cv: Condvar::new() });
        self.mailbox.send((req.into_owned(), Arc::clone(&done)));
        if self.pending.fetch_add(1, Ordering::AcqRel) == 0 {
            self.run(1, apply);
        }
        done.wait()
    }

    /// Completes `finished` requests already applied by the runner, then runs
    /// whatever else was counted meanwhile.
    fn drain<'a, Q: Request<'a, Owned = O>>(&self, finished: usize, apply: &dyn Fn(Vec<Q>) -> Vec<R>) {
        let prev = self.pending.fetch_sub(finished, Ordering::AcqRel);
        if prev != finished {
            self.run(prev - finished, apply);
        }
    }

    /// The runner loop, starting with `budget` counted requests in the mailbox.
    fn run<'a, Q: Request<'a, Owned = O>>(&self, mut budget: usize, apply: &dyn Fn(Vec<Q>) -> Vec<R>) {
        loop {
            let mut reqs = Vec::with_capacity(budget);
            let mut dones = Vec::with_capacity(budget);
            while reqs.len() < budget {
                match self.mailbox.try_recv() {
                    Some((o, d)) => {
                        reqs.push(Q::from_owned(o));
                        dones.push(d);
                    }
                    // Cannot happen (counted requests are in the mailbox before
                    // the count is visible); yield rather than fail if it did.
                    None => spin_loop(),
                }
            }
            let results = apply(reqs);
            for (d, r) in dones.into_iter().zip(results) {
                d.complete(r);
            }
            #[cfg(not(loom_bug = "actor_lost_wakeup"))]
            let prev = self.pending.fetch_sub(budget, Ordering::AcqRel);
            // Injected bug (loom-tests/tests/combining_actor.rs): a non-atomic subtraction.
            #[cfg(loom_bug = "actor_lost_wakeup")]
            let prev = {
                let p = self.pending.load(Ordering::Acquire);
                self.pending.store(p - budget, Ordering::Release);
                p
            };
            if prev == budget {
                return;
            }
            budget = prev - budget;
        }
    }
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
