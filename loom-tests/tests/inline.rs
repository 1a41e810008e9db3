//! loom model of a small file's inline bytes (`engine::data::inline::Inline`,
//! a hand-made reference count in a 16-byte header; issue 17, per-file cost).
//!
//! # Invariant
//! The bytes stay readable while any holder has them, the allocation is
//! freed exactly once, by the last holder to let go, after every other
//! holder's look at the bytes, and the charge goes back to the pool with it:
//! `used` is 0 once all are gone. loom's allocation tracking catches a leak
//! or a double free; under loom the bytes' length is a loom cell read by
//! every look at the bytes and taken by the last drop, so a look that is not
//! ordered before the free is a loom error.
//!
//! # What the model covers
//! The real `Inline::new`, `clone`, `bytes` and `drop` (the count's
//! release/acquire pair), holders on three threads (the main one, two
//! spawned) letting go in every order, one of them after cloning again.
//!
//! # What it does not cover
//! The bytes themselves (raw memory loom cannot see; the length cell stands
//! in for them, read at every look), the abort on a count past `u32::MAX / 2`.
//!
//! # Injected bug
//! * `bash .ci/loom-bugs inline_drop_relaxed`: the drop takes its count with
//!   relaxed ordering and no fence; `holders_let_go_on_three_threads` fails
//!   with loom's report of the free racing another holder's look.

#[cfg(loom)]
mod tests {
    use engine::data::inline::Inline;
    use engine::sector::Pool;
    use loom::thread;
    use loom_tests::{check, Bound, SS};

    #[test]
    fn holders_let_go_on_three_threads() {
        check("inline::holders_let_go_on_three_threads", Bound::Exhaustive, || {
            let pool = Pool::new(SS, 64, 1);
            let a = Inline::new(b"abcd", pool.reserve(4).unwrap().charge(4).unwrap());
            let (b, c) = (a.clone(), a.clone());
            let t1 = thread::spawn(move || {
                assert_eq!(b.bytes(), b"abcd");
                let again = b.clone();
                drop(b);
                assert_eq!(again.bytes(), b"abcd");
            });
            let t2 = thread::spawn(move || assert_eq!(c.bytes(), b"abcd"));
            assert_eq!(a.bytes(), b"abcd");
            drop(a);
            t1.join().unwrap();
            t2.join().unwrap();
            assert_eq!(pool.used(), 0, "the charge goes back with the last holder");
        });
    }
}
