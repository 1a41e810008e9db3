//! loom model of the sector pool (`engine::sector::Pool`): per-thread cache
//! slots in front of the shared free list, under concurrent reserve /
//! allocate / free.
//!
//! # Invariant
//! * No sector is handed out twice: each thread writes its own mark into
//!   every byte of each sector it holds and reads it back before freeing; a
//!   sector held by two threads at once would be a loom data race on its
//!   cells (and a changed mark).
//! * None is leaked and the counters are exact: with every sector and
//!   reservation held by the main thread, `stats().sectors` and `used` equal
//!   what is held, and `free_sectors() + held` equals everything mapped;
//!   after dropping them, `used == 0`, `sectors == 0` and every mapped
//!   sector is free again (loom's own leak check covers the `Arc`s).
//!
//! # What the model covers
//! The real `Pool`, `Reservation::take_pages` and `Pool::free_pages` code:
//! the slot mutexes, the shared list's mutex, region mapping on a miss
//! (64-byte regions of four 16-byte pages under loom; here a page is a whole
//! sector), refills in batches, and the `used`/`pages` atomics. Page bytes
//! are loom cells. With two slots,
//! threads map to slots in the order they first touch the pool; which thread
//! gets slot 0 may differ between executions (a std counter, invisible to
//! loom), but the mapping is a relabelling of symmetric slots, so the
//! explored interleavings are the same.
//!
//! A full slot spilling half its sectors to the shared list while another
//! thread, its own slot empty, refills from that list (or maps a region if
//! it comes first) and a third frees into either slot: the one model where
//! the shared list holds freed sectors under contention
//! (`spill_races_refill`, which first fills a slot to `CACHE_MAX` = 64 free
//! sectors single-threaded, so it raises loom's branch limit).
//!
//! `Pool::trim` (giving free sectors' pages back to the OS) racing a refill
//! from the same shared list and a free (`trim_races_alloc_and_free`), and
//! reuse of the cold sectors (`cold_sectors_are_reused`).
//!
//! # What it does not cover
//! The real mmapped regions (`sync::real`), which the unit and stress tests
//! cover, and the OS refusing memory (the stand-in `Region::map` never
//! fails, so `NoSpace` from `take_mem` is not reached); more than three
//! threads or two slots. The limit under racing
//! reservations is `limit_reservation.rs`.

#[cfg(loom)]
mod tests {
    use engine::sector::{Pool, Reservation, CACHE_MAX};
    use engine::sync::Page;
    use loom::thread;
    use loom_tests::{Bound, SS};

    /// A page this model holds: given back to the pool on drop.
    struct Sector {
        m: Page,
        pool: Pool,
    }

    impl Drop for Sector {
        fn drop(&mut self) {
            // SAFETY: taken from this pool by `take`, held only here, and
            // not used after this.
            unsafe { self.pool.free_pages(&[self.m]) };
        }
    }

    /// Allocates `n` sectors (one page each here) from one reservation and
    /// marks every byte.
    fn take(pool: &Pool, n: usize, mark: u8) -> (Reservation, Vec<Sector>) {
        let mut r = pool.reserve((n * SS) as u64).expect("the limit is ample here");
        let mut v = Vec::new();
        r.take_pages(n, &mut |m| v.push(Sector { m, pool: pool.clone() })).expect("reserved pages");
        for s in &v {
            // SAFETY: a page just handed out is this thread's alone unless
            // the pool hands it out twice, which is what the model checks
            // (loom reports the double hand-out as a race on these cells).
            unsafe { s.m.mem(SS).write(0, &[mark; SS]) };
        }
        (r, v)
    }

    /// Checks each sector still holds `mark` (nobody else wrote it).
    fn verify(v: &[Sector], mark: u8) {
        for s in v {
            let mut b = [0u8; SS];
            // SAFETY: as in `take`: nobody else may touch a page this
            // thread holds; a double hand-out is the race loom reports.
            unsafe { s.m.mem(SS).read(0, &mut b) };
            assert_eq!(b, [mark; SS], "a sector was handed out twice");
        }
    }

    fn check_counts(pool: &Pool, held: usize) {
        let st = pool.stats();
        assert_eq!(st.sectors, held as u64, "sectors in use");
        assert_eq!(st.used, (held * SS) as u64, "bytes charged");
        assert_eq!(pool.free_sectors() + held, st.mapped as usize / SS, "a sector leaked");
    }

    /// Two threads each allocate two sectors (missing in their slot, mapping
    /// or refilling), free one, allocate again and hand the rest to main.
    #[test]
    fn alloc_free_two_threads_two_slots() {
        loom_tests::check("pool::alloc_free_two_threads_two_slots", Bound::Env, || {
            let pool = Pool::new(SS, 16 * SS as u64, 2);
            let hs: Vec<_> = [1u8, 2]
                .into_iter()
                .map(|mark| {
                    let pool = pool.clone();
                    thread::spawn(move || {
                        let (r, mut v) = take(&pool, 2, mark);
                        drop(r);
                        verify(&v, mark);
                        drop(v.pop());
                        let (r2, v2) = take(&pool, 1, mark + 10);
                        drop(r2);
                        verify(&v, mark);
                        verify(&v2, mark + 10);
                        v.extend(v2);
                        v
                    })
                })
                .collect();
            let held: Vec<Sector> = hs.into_iter().flat_map(|h| h.join().unwrap()).collect();
            check_counts(&pool, held.len());
            drop(held);
            check_counts(&pool, 0);
        });
    }

    /// One shared slot: a thread frees sectors another allocated while a
    /// third allocates from the same slot, so freed memory is reused at once.
    #[test]
    fn free_and_reuse_one_slot_three_threads() {
        loom_tests::check("pool::free_and_reuse_one_slot_three_threads", Bound::Env, || {
            let pool = Pool::new(SS, 16 * SS as u64, 1);
            let (r, given) = take(&pool, 2, 7);
            drop(r);
            let freer = thread::spawn(move || {
                verify(&given, 7);
                drop(given);
            });
            let p2 = pool.clone();
            let taker = thread::spawn(move || {
                let (_r, v) = take(&p2, 2, 8);
                verify(&v, 8);
                v
            });
            let (_r, mine) = take(&pool, 1, 9);
            freer.join().unwrap();
            let theirs = taker.join().unwrap();
            verify(&mine, 9);
            verify(&theirs, 8);
            check_counts(&pool, 3);
            drop((mine, theirs));
            check_counts(&pool, 0);
        });
    }

    /// The shared list under contention. The main thread fills its slot to
    /// exactly `CACHE_MAX` free sectors (single-threaded set-up), then frees
    /// one more, which spills half the slot to the shared list, while a
    /// second thread (its own slot empty) allocates two sectors, refilling
    /// from the shared list or mapping a region if it gets there first, and
    /// a third frees two sectors it was given (into whichever slot it maps
    /// to). No sector is handed out twice, and the counts are exact.
    #[test]
    fn spill_races_refill() {
        let mut b = loom_tests::builder(Bound::Env);
        b.max_branches = 20_000;
        loom_tests::check_with("pool::spill_races_refill", b, || {
            let pool = Pool::new(SS, 256 * SS as u64, 2);
            // 4 sectors per region: allocating n maps ceil(n / 4) regions and
            // leaves the rest of the last one in this thread's slot.
            let n = CACHE_MAX + 3;
            let (r, mut v) = take(&pool, n, 1);
            drop(r);
            let in_slot = pool.free_sectors();
            // Free until the slot holds CACHE_MAX (no spill yet); keep 3.
            let keep_back = v.split_off(v.len() - 3);
            let excess = v.len() + in_slot - CACHE_MAX;
            let spare = v.split_off(v.len() - excess);
            drop(v);
            assert_eq!(pool.free_sectors(), CACHE_MAX);
            let mut keep_back = keep_back.into_iter();
            let last = keep_back.next().expect("kept");
            let given: Vec<_> = keep_back.collect();
            let p2 = pool.clone();
            let taker = thread::spawn(move || {
                let (_r, v) = take(&p2, 2, 8);
                verify(&v, 8);
                v
            });
            let freer = thread::spawn(move || {
                verify(&given, 1);
                drop(given);
            });
            drop(last); // CACHE_MAX + 1 in the slot: spills half to the shared list
            freer.join().unwrap();
            let theirs = taker.join().unwrap();
            verify(&theirs, 8);
            verify(&spare, 1);
            check_counts(&pool, theirs.len() + spare.len());
            drop((theirs, spare));
            check_counts(&pool, 0);
        });
    }

    /// Giving free sectors' pages back to the OS (`Pool::trim`, issue 17)
    /// while another thread refills its empty slot from the same shared list
    /// and writes what it gets, and main frees into its own slot: a sector is
    /// given back only while this call alone owns it (off the warm list, not
    /// yet on the cold one), so the allocator's writes and the trim's zeroing
    /// never touch the same cells (the injected bug `pool_trim_in_list`
    /// zeroes sectors still on the list: a loom race). Afterwards the counts
    /// are exact, the trimmed bytes are reported as returned, and a sector
    /// taken from the cold list works like any other.
    #[test]
    fn trim_races_alloc_and_free() {
        let mut b = loom_tests::builder(Bound::Env);
        b.max_branches = 20_000;
        loom_tests::check_with("pool::trim_races_alloc_and_free", b, || {
            let pool = Pool::new(SS, 256 * SS as u64, 2);
            // Single-threaded set-up: free CACHE_MAX + 1 sectors into this
            // thread's slot, which spills half of them to the shared list.
            let (r, mut v) = take(&pool, CACHE_MAX + 2, 1);
            drop(r);
            let mine = v.pop().expect("kept");
            drop(v);
            assert!(pool.free_sectors() > CACHE_MAX, "set-up: sectors on the shared list");
            // Trim the whole shared list (keep nothing warm there): the
            // allocator's refill takes from the same list.
            let keep = 0;
            let p2 = pool.clone();
            let taker = thread::spawn(move || {
                let (_r, v) = take(&p2, 2, 8);
                verify(&v, 8);
                v
            });
            let p3 = pool.clone();
            let trimmer = thread::spawn(move || p3.trim(keep));
            drop(mine); // into main's slot, concurrently
            let theirs = taker.join().unwrap();
            let returned = trimmer.join().unwrap();
            verify(&theirs, 8);
            check_counts(&pool, theirs.len());
            assert!(returned > 0, "the shared list was trimmed");
            // What the trim gave back is cold now, less what the allocator
            // took from the cold list after it.
            assert!(pool.stats().returned <= returned, "returned bytes reported");
            drop(theirs);
            check_counts(&pool, 0);
        });
    }

    /// A sector whose pages were given back is handed out again once no warm
    /// sector is left, and reads as written (single thread).
    #[test]
    fn cold_sectors_are_reused() {
        let mut b = loom_tests::builder(Bound::Exhaustive);
        b.max_branches = 20_000;
        loom_tests::check_with("pool::cold_sectors_are_reused", b, || {
            let pool = Pool::new(SS, 256 * SS as u64, 1);
            let (r, v) = take(&pool, CACHE_MAX + 2, 1);
            drop(r);
            drop(v);
            let returned = pool.trim(0);
            assert!(returned > 0);
            assert_eq!(pool.stats().returned, returned);
            // Take everything that is free: the slot, then the cold list.
            let mapped = pool.stats().mapped;
            let all = pool.free_sectors();
            let (_r, v) = take(&pool, all, 5);
            verify(&v, 5);
            assert_eq!(pool.stats().mapped, mapped, "no new region while cold sectors are left");
            assert_eq!(pool.stats().returned, 0);
            drop(v);
            check_counts(&pool, 0);
        });
    }
}
