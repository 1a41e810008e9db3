//! loom models of the engine's concurrent structures; see `tests/` and the
//! "loom models" section of `docs/ARCHITECTURE.md`.
//!
//! Every model runs the engine's real code through its `engine::sync` facade,
//! which under `--cfg loom` maps to loom's primitives and to loom-visible
//! stand-ins for arc-swap, dashmap and crossbeam-channel. Run them all with
//! `bash .ci/loom`. This library only holds the helpers the models share; it
//! is empty without `--cfg loom`.

#[cfg(loom)]
pub use helpers::*;

#[cfg(loom)]
mod helpers {
    use engine::{Config, Engine};
    use loom::sync::atomic::{AtomicUsize, Ordering};

    /// How a model bounds its exploration.
    ///
    /// The rule the models follow: a model is [`Bound::Exhaustive`] when its
    /// full exploration fits the CI budget (the two-thread models: at most
    /// about 100 s each, most well under 10 s), so CI checks every
    /// interleaving of it. A model whose full exploration does not fit (the
    /// three-thread pool models, `ns_races::two_links_race`) is
    /// [`Bound::Env`]: `LOOM_MAX_PREEMPTIONS` (2 in `.ci/loom`) bounds it,
    /// and a deeper run just raises the variable. Two three-thread models
    /// that afford a fixed deeper bound in CI use [`Bound::Preemptions`].
    #[derive(Debug, Clone, Copy)]
    pub enum Bound {
        /// `LOOM_MAX_PREEMPTIONS` from the environment (2 in `.ci/loom`;
        /// unset: no bound).
        Env,
        /// Exactly this many preemptions, whatever the environment says (a
        /// small model that affords more, or a large one that needs fewer).
        Preemptions(usize),
        /// Every interleaving (no preemption bound).
        Exhaustive,
    }

    /// A model builder with the given bound.
    pub fn builder(bound: Bound) -> loom::model::Builder {
        let mut b = loom::model::Builder::new();
        match bound {
            Bound::Env => {}
            Bound::Preemptions(n) => b.preemption_bound = Some(n),
            Bound::Exhaustive => b.preemption_bound = None,
        }
        b
    }

    /// Explores `f` with [`builder`]`(bound)`; see [`check_with`].
    pub fn check<F>(name: &str, bound: Bound, f: F)
    where
        F: Fn() + Sync + Send + 'static,
    {
        check_with(name, builder(bound), f);
    }

    /// Explores `f` with the builder `b` and prints how many executions loom
    /// ran (visible with `--nocapture`), which the docs quote.
    pub fn check_with<F>(name: &str, b: loom::model::Builder, f: F)
    where
        F: Fn() + Sync + Send + 'static,
    {
        // Models of one test binary run one at a time: the pool maps threads
        // to cache slots with a process-wide std counter (`NEXT_SLOT`, a
        // hint that loom does not see), and a model running beside another
        // would see that counter move in the middle of an execution, which
        // makes the execution non-deterministic for loom ("Reached
        // unexpected exploration state").
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        // A plain std atomic: it counts executions across the whole model and
        // is not part of any execution (loom must not see it).
        let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = std::sync::Arc::clone(&runs);
        let start = std::time::Instant::now();
        let bound = b.preemption_bound;
        b.check(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            f();
        });
        println!(
            "loom model {name}: {} executions, preemption bound {bound:?}, {:.2?}",
            runs.load(std::sync::atomic::Ordering::Relaxed),
            start.elapsed()
        );
    }

    /// Bytes of one sector in every model.
    pub const SS: usize = 16;

    /// Bytes of one page (the unit of copy-on-write) in the engine models:
    /// two pages per sector, so a write inside a sector copies one page and
    /// shares the other.
    pub const PS: usize = 8;

    /// An engine with 16-byte sectors of two 8-byte pages, `max_bytes` of
    /// memory, inline data up to `inline_max` bytes and ONE cache slot (the
    /// page a thread frees is the next one any thread gets, so reuse after a
    /// premature free shows up as a data race on loom cells).
    pub fn tiny_engine(max_bytes: u64, inline_max: usize) -> Engine {
        Engine::new_unchecked(Config {
            sector_size: SS,
            page_size: PS,
            max_bytes,
            max_inodes: 16,
            inline_max,
            cache_slots: 1,
            ..Config::default()
        })
    }

    /// The bytes of lent slices, in order.
    pub fn flat(s: &[std::io::IoSlice<'_>]) -> Vec<u8> {
        s.iter().flat_map(|p| p.iter().copied()).collect()
    }

    /// Reads `len` bytes at 0 with `read_with`: the lent bytes at a first
    /// look, then (after a scheduling point, `tick`, the writers free to
    /// run) at a second; both must agree. Returns them.
    pub fn read_lent(e: &Engine, ino: u64, len: usize, tick: &AtomicUsize) -> Vec<u8> {
        e.read_with(ino, 0, len, |s| {
            let first = flat(s);
            tick.fetch_add(1, Ordering::SeqCst);
            assert_eq!(first, flat(s), "lent bytes changed while held");
            first
        })
        .expect("read_with")
    }
}
