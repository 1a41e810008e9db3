//! loom model of the combining actor (`engine::actor::Combiner`).
//!
//! # Invariant
//! Requests submitted from several threads are each applied exactly once, a
//! submitter's requests are applied in the order it made them, every
//! submitter is woken with its own request's result, and nobody deadlocks:
//! in particular not when the runner finishes its last batch while another
//! thread is enqueueing (the lost-wake-up window between the runner's final
//! `fetch_sub` on `pending` and a submitter's `fetch_add`). Batches never
//! overlap (only one runner at a time), also when the runner role is handed
//! over through a completion slot (a bound of one batch per runner). A batch
//! whose apply function panics completes every one of its requests with
//! `Error::Internal`, publishes nothing, and the actor keeps serving.
//!
//! # What the model covers
//! The real `Combiner` code (fast path, slow path, `end_batch`, hand-over,
//! `run`, the panic guard), with `u64` requests and an `apply` closure that
//! logs each batch into a loom `Mutex<Vec<_>>` and "publishes" the batch at
//! its end (appends it to `state`, as a file's apply stores one table at the
//! end of its batch). The mailbox is the facade's loom stand-in (a FIFO under
//! a loom mutex) with crossbeam-channel's contract (multi-producer FIFO); the
//! completion slot is a loom `Mutex` + `Condvar`, so a missing wake-up shows
//! up as a loom deadlock. Submitters call through `catch_unwind`, as the FUSE
//! frontend's `call()` does, so an escaped panic is not itself the failure:
//! the requests left waiting by it are.
//!
//! # What it does not cover
//! crossbeam-channel's own internals (the real mailbox); the file-level
//! `Node::apply_ops` (covered by `table_publish.rs`); more than 3 threads or 2
//! requests per thread (bounded for time).
//!
//! # Injected bugs (`bash .ci/loom-bugs NAME`)
//! * `actor_lost_wakeup` (`runner_finishes_while_another_enqueues`): the
//!   runner's final subtraction is a non-atomic load + store; loom finds the
//!   interleaving where a submitter's increment is overwritten, the runner
//!   leaves, and the submitter waits forever ("deadlock"; loom's destructors
//!   then panic while unwinding, so the test process aborts with SIGABRT).
//! * `actor_handover_keeps_running` (`handover_after_every_batch`): the old
//!   runner goes on after handing the role over; two batches overlap.
//! * `actor_panic_unwinds` (`panicking_batch_fails_alone`): no panic guard;
//!   the panic leaves `pending` counted and the next submitter waits forever.

#[cfg(loom)]
mod tests {
    use std::panic::{catch_unwind, AssertUnwindSafe};

    use engine::actor::Combiner;
    use engine::sync::{Arc, Mutex};
    use engine::Error;
    use loom::sync::atomic::{AtomicBool, Ordering};
    use loom::thread;
    use loom_tests::Bound;

    /// The request that makes `apply` panic (in `panicking_batch_fails_alone`).
    const POISON: u64 = 99;

    /// The model's state: the actor, the log of applied batches, what was
    /// published, and a flag that is set while a batch is being applied (to
    /// catch overlap).
    struct Actor {
        comb: Combiner<u64, Result<u64, Error>>,
        log: Mutex<Vec<Vec<u64>>>,
        state: Mutex<Vec<u64>>,
        busy: AtomicBool,
    }

    impl Actor {
        fn new(max_batches: usize) -> Arc<Actor> {
            quiet_injected_panics();
            Arc::new(Actor {
                comb: Combiner::with_max_batches(max_batches),
                log: Mutex::new(Vec::new()),
                state: Mutex::new(Vec::new()),
                busy: AtomicBool::new(false),
            })
        }

        /// Submits `req` through `catch_unwind` (as the FUSE frontend does) and
        /// returns what its submitter got: `Ok(req)` (its own completion, not
        /// someone else's) or `Err(Internal)` (its batch panicked).
        fn submit(&self, req: u64) -> Result<u64, Error> {
            let apply = |batch: Vec<u64>| -> Vec<Result<u64, Error>> {
                assert!(!self.busy.swap(true, Ordering::AcqRel), "two batches applied at once");
                self.log.lock().push(batch.clone());
                if batch.contains(&POISON) {
                    self.busy.store(false, Ordering::Release);
                    panic!("injected panic");
                }
                // Published at the end of the batch, like a file's table.
                self.state.lock().extend(&batch);
                self.busy.store(false, Ordering::Release);
                batch.into_iter().map(Ok).collect()
            };
            let got = catch_unwind(AssertUnwindSafe(|| self.comb.submit(req, &apply))).unwrap_or(Err(Error::Internal));
            match got {
                Ok(r) => assert_eq!(r, req, "submitter woken with another request's result"),
                Err(e) => assert_eq!(e, Error::Internal, "only a panic fails a request"),
            }
            got
        }

        /// Checks that exactly `expected` was applied, each once, in order per
        /// submitter (`req / 10` is the submitter, `req % 10` its sequence),
        /// and that only whole batches without the poison were published.
        fn check(&self, expected: &[u64]) {
            let log = self.log.lock().clone();
            let all: Vec<u64> = log.iter().flatten().copied().collect();
            let mut sorted = all.clone();
            sorted.sort_unstable();
            let mut want = expected.to_vec();
            want.sort_unstable();
            assert_eq!(sorted, want, "every request applied exactly once: {all:?}");
            for who in 0..10 {
                let mine: Vec<u64> = all.iter().copied().filter(|r| r / 10 == who).collect();
                assert!(mine.windows(2).all(|w| w[0] < w[1]), "submitter {who} out of order: {all:?}");
            }
            let published: Vec<u64> = log.iter().filter(|b| !b.contains(&POISON)).flatten().copied().collect();
            assert_eq!(*self.state.lock(), published, "a panicking batch published nothing: {log:?}");
        }

        /// Whether `req` was applied in the same batch as the poison.
        fn batched_with_poison(&self, req: u64) -> bool {
            self.log.lock().iter().any(|b| b.contains(&POISON) && b.contains(&req))
        }
    }

    /// The injected panics are expected: keep the default hook's message for
    /// every other panic (a real failure).
    fn quiet_injected_panics() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let default = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                if info.payload().downcast_ref::<&str>() != Some(&"injected panic") {
                    default(info);
                }
            }));
        });
    }

    /// Two threads submit two requests each; the main thread only checks.
    #[test]
    fn two_submitters_two_requests_each() {
        loom_tests::check("combining_actor::two_submitters_two_requests_each", Bound::Exhaustive, || {
            let a = Actor::new(engine::actor::MAX_BATCHES);
            let hs: Vec<_> = [1u64, 2]
                .into_iter()
                .map(|who| {
                    let a = Arc::clone(&a);
                    thread::spawn(move || {
                        a.submit(who * 10 + 1).unwrap();
                        a.submit(who * 10 + 2).unwrap();
                    })
                })
                .collect();
            for h in hs {
                h.join().unwrap();
            }
            a.check(&[11, 12, 21, 22]);
        });
    }

    /// Three submitters (two spawned threads and the main thread), one
    /// request each: the slow path, handing over the runner role twice.
    #[test]
    fn three_submitters_one_request_each() {
        loom_tests::check("combining_actor::three_submitters_one_request_each", Bound::Preemptions(3), || {
            let a = Actor::new(engine::actor::MAX_BATCHES);
            let hs: Vec<_> = [1u64, 2]
                .into_iter()
                .map(|who| {
                    let a = Arc::clone(&a);
                    thread::spawn(move || a.submit(who * 10 + 1).unwrap())
                })
                .collect();
            a.submit(31).unwrap();
            for h in hs {
                h.join().unwrap();
            }
            a.check(&[11, 21, 31]);
        });
    }

    /// The lost-wake-up window: a runner finishing (its request done, about
    /// to subtract and leave) while a second thread enqueues and a third
    /// submits after that. Each thread submits once and then once more, so
    /// both "runner leaves" and "runner hands over" are reached.
    #[test]
    fn runner_finishes_while_another_enqueues() {
        loom_tests::check("combining_actor::runner_finishes_while_another_enqueues", Bound::Exhaustive, || {
            let a = Actor::new(engine::actor::MAX_BATCHES);
            let b = Arc::clone(&a);
            let h = thread::spawn(move || {
                b.submit(11).unwrap();
                b.submit(12).unwrap();
            });
            a.submit(21).unwrap();
            h.join().unwrap();
            a.submit(22).unwrap();
            a.check(&[11, 12, 21, 22]);
        });
    }

    /// A runner may serve one batch only: whenever requests are still
    /// counted after it, the role passes through a completion slot to the
    /// submitter of the next one. Three submitters, the main thread twice:
    /// every request applied once, in order, everyone woken with its own
    /// result, batches never overlap (the old runner must not go on).
    #[test]
    fn handover_after_every_batch() {
        loom_tests::check("combining_actor::handover_after_every_batch", Bound::Preemptions(3), || {
            let a = Actor::new(1);
            let hs: Vec<_> = [1u64, 2]
                .into_iter()
                .map(|who| {
                    let a = Arc::clone(&a);
                    thread::spawn(move || a.submit(who * 10 + 1).unwrap())
                })
                .collect();
            a.submit(31).unwrap();
            a.submit(32).unwrap();
            for h in hs {
                h.join().unwrap();
            }
            a.check(&[11, 21, 31, 32]);
            assert_eq!(a.comb.pending(), 0);
        });
    }

    /// A batch that panics: the poisoned request and every request batched
    /// with it get `Internal`; everything else gets its own result; nothing
    /// of that batch is published; afterwards the actor still serves (the
    /// main thread's last request). A bound of one batch per runner, so a
    /// panic in a handed-over runner is reached too, and three submitters,
    /// so the poison shares a batch with another request (the model checks
    /// that some execution reached that).
    #[test]
    fn panicking_batch_fails_alone() {
        static SHARED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        loom_tests::check("combining_actor::panicking_batch_fails_alone", Bound::Preemptions(3), || {
            let a = Actor::new(1);
            let hs: Vec<_> = [1u64, 2]
                .into_iter()
                .map(|who| {
                    let a = Arc::clone(&a);
                    thread::spawn(move || {
                        let req = who * 10 + 1;
                        let r = a.submit(req);
                        assert_eq!(r.is_err(), a.batched_with_poison(req), "{req} fails iff batched with the poison");
                    })
                })
                .collect();
            assert_eq!(a.submit(POISON), Err(Error::Internal), "the poisoned request fails");
            for h in hs {
                h.join().unwrap();
            }
            if a.log.lock().iter().any(|b| b.contains(&POISON) && b.len() > 1) {
                SHARED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            assert_eq!(a.submit(31), Ok(31), "the actor keeps serving after a panic");
            a.check(&[11, 21, POISON, 31]);
            assert_eq!(a.comb.pending(), 0);
        });
        assert!(SHARED.load(std::sync::atomic::Ordering::Relaxed) > 0, "no execution batched the poison with another");
    }
}
