//! loom model of the combining actor (`engine::actor::Combiner`).
//!
//! # Invariant
//! Requests submitted from several threads are each applied exactly once, a
//! submitter's requests are applied in the order it made them, every
//! submitter is woken with its own request's result, and nobody deadlocks:
//! in particular not when the runner finishes its last batch while another
//! thread is enqueueing (the lost-wake-up window between the runner's final
//! `fetch_sub` on `pending` and a submitter's `fetch_add`). Batches never
//! overlap (only one runner at a time).
//!
//! # What the model covers
//! The real `Combiner` code (fast path, slow path, `drain`, `run`), with
//! `u64` requests and an `apply` closure that logs each batch into a loom
//! `Mutex<Vec<_>>`. The mailbox is the facade's loom stand-in (a FIFO under a
//! loom mutex) with crossbeam-channel's contract (multi-producer FIFO); the
//! completion slot is a loom `Mutex` + `Condvar`, so a missing wake-up shows
//! up as a loom deadlock.
//!
//! # What it does not cover
//! crossbeam-channel's own internals (the real mailbox); the file-level
//! `apply_batch` (covered by `table_publish.rs`); more than 3 threads or 2
//! requests per thread (bounded for time).
//!
//! # Injected bug
//! `bash .ci/loom-bugs actor_lost_wakeup`, i.e.
//! `RUSTFLAGS='--cfg loom -C debug-assertions --cfg loom_bug="actor_lost_wakeup"' \
//!  CARGO_TARGET_DIR=target/loom-bugs cargo test -p loom-tests --release \
//!  --test combining_actor -- tests::runner_finishes_while_another_enqueues`
//! makes the runner's final subtraction a non-atomic load + store; loom finds
//! the interleaving where a submitter's increment is overwritten, the runner
//! leaves, and the submitter waits forever ("deadlock"; loom's destructors
//! then panic while unwinding, so the test process aborts with SIGABRT).

#[cfg(loom)]
mod tests {
    use engine::actor::Combiner;
    use engine::sync::{Arc, Mutex};
    use loom::sync::atomic::{AtomicBool, Ordering};
    use loom::thread;
    use loom_tests::Bound;

    /// The model's state: the actor, the log of applied batches, and a flag
    /// that is set while a batch is being applied (to catch overlap).
    struct Actor {
        comb: Combiner<u64, u64>,
        log: Mutex<Vec<Vec<u64>>>,
        busy: AtomicBool,
    }

    impl Actor {
        fn new() -> Arc<Actor> {
            Arc::new(Actor { comb: Combiner::new(), log: Mutex::new(Vec::new()), busy: AtomicBool::new(false) })
        }

        /// Submits `req`; the result must be the request itself (its own
        /// completion, not someone else's).
        fn submit(&self, req: u64) {
            let apply = |batch: Vec<u64>| -> Vec<u64> {
                assert!(!self.busy.swap(true, Ordering::AcqRel), "two batches applied at once");
                self.log.lock().push(batch.clone());
                self.busy.store(false, Ordering::Release);
                batch
            };
            let got = self.comb.submit(req, &apply);
            assert_eq!(got, req, "submitter woken with another request's result");
        }

        /// Checks that exactly `expected` was applied, each once, in order per
        /// submitter (`req / 10` is the submitter, `req % 10` its sequence).
        fn check(&self, expected: &[u64]) {
            let all: Vec<u64> = self.log.lock().iter().flatten().copied().collect();
            let mut sorted = all.clone();
            sorted.sort_unstable();
            let mut want = expected.to_vec();
            want.sort_unstable();
            assert_eq!(sorted, want, "every request applied exactly once: {all:?}");
            for who in 0..10 {
                let mine: Vec<u64> = all.iter().copied().filter(|r| r / 10 == who).collect();
                assert!(mine.windows(2).all(|w| w[0] < w[1]), "submitter {who} out of order: {all:?}");
            }
        }
    }

    /// Two threads submit two requests each; the main thread only checks.
    #[test]
    fn two_submitters_two_requests_each() {
        loom_tests::check("combining_actor::two_submitters_two_requests_each", Bound::Exhaustive, || {
            let a = Actor::new();
            let hs: Vec<_> = [1u64, 2]
                .into_iter()
                .map(|who| {
                    let a = Arc::clone(&a);
                    thread::spawn(move || {
                        a.submit(who * 10 + 1);
                        a.submit(who * 10 + 2);
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
            let a = Actor::new();
            let hs: Vec<_> = [1u64, 2]
                .into_iter()
                .map(|who| {
                    let a = Arc::clone(&a);
                    thread::spawn(move || a.submit(who * 10 + 1))
                })
                .collect();
            a.submit(31);
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
            let a = Actor::new();
            let b = Arc::clone(&a);
            let h = thread::spawn(move || {
                b.submit(11);
                b.submit(12);
            });
            a.submit(21);
            h.join().unwrap();
            a.submit(22);
            a.check(&[11, 12, 21, 22]);
        });
    }
}
