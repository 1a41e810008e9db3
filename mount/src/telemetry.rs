//! Usage over time: a sampler that keeps a bounded history of the pool's
//! counters, and the math that turns it into rates, trends and a forecast
//! of when the limit will be reached (`sectorfs stats`).
//!
//! # The sampler
//! One thread per mount ([`Telemetry::start`]) wakes every [`PERIOD`] and
//! reads the engine's counters (`Engine::stats`: a few relaxed atomic loads
//! and the pool's region lock for `mapped`, once a second), and pushes one
//! [`Sample`] into a ring of [`CAPACITY`] samples: [`LONG_WINDOW`] worth,
//! 32 bytes each, allocated once (about 10 KiB), the oldest overwritten. The
//! file-system hot path does nothing for it: the counters it reads exist
//! anyway. A thread rather than sampling on request, because the history
//! must exist when nobody asks (the first `stats` after an hour shows the
//! last 5 minutes). A stats request adds a *live* sample of the moment to
//! the computation without storing it, so a fast `--watch` does not flood
//! the ring, and the newest point is always now.
//!
//! # The math ([`Trends::compute`], platform-neutral, unit-tested)
//! * **Rates**: sector allocations and frees over the short window, in
//!   bytes/s: Δcount × sector size / Δt between its oldest sample and now.
//! * **Trends**: the least-squares slope of used bytes against time over the
//!   last [`SHORT_WINDOW`] and [`LONG_WINDOW`] (Prometheus' `deriv()`).
//!   Least squares rather than an EWMA: it is unbiased for linear growth
//!   (what a forecast extrapolates), its window means exactly "the last 10
//!   s", it uses real timestamps (a late tick on a loaded machine does not
//!   bend it), and it comes with a standard error, so a trend that noise
//!   explains can be told apart. An EWMA lags by its time constant and gives
//!   no such measure. Cost: O(samples) ≤ 301 per request.
//! * **Forecast**: seconds until `used` reaches the limit at the trend's
//!   slope: (limit − used now) / slope, from the short trend when it is
//!   significant (slope beyond [`T_MIN`] standard errors, at least 3
//!   points), else from the long trend when that one is; none when the
//!   basis is flat or falling or nothing is significant. 0 when full.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// How often the sampler records the counters.
pub(crate) const PERIOD: Duration = Duration::from_secs(1);
/// The short trend's window, in seconds.
pub(crate) const SHORT_WINDOW: f64 = 10.0;
/// The long trend's window, in seconds.
pub(crate) const LONG_WINDOW: f64 = 300.0;
/// Samples kept: the long window at one per [`PERIOD`], plus its first edge.
pub(crate) const CAPACITY: usize = 301;
/// A trend is significant when its slope is at least this many standard
/// errors away from zero (noise alone passes this rarely).
pub(crate) const T_MIN: f64 = 3.0;

/// The counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Sample {
    /// Seconds since the sampler started.
    pub(crate) t: f64,
    /// Bytes charged against the limit.
    pub(crate) used: u64,
    /// Sectors handed out so far.
    pub(crate) allocs: u64,
    /// Sectors given back so far (allocations minus sectors in use).
    pub(crate) frees: u64,
}

/// A least-squares line through `(t, used)` points.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Fit {
    /// Bytes per second.
    pub(crate) slope: f64,
    /// The slope's standard error (infinite with fewer than 3 points).
    pub(crate) stderr: f64,
    /// Points in the fit.
    pub(crate) n: usize,
    /// Seconds between the first and the last point.
    pub(crate) span: f64,
}

impl Fit {
    /// The least-squares fit of `points`; `None` with fewer than 2 points or
    /// no time between them.
    pub(crate) fn of(points: &[(f64, f64)]) -> Option<Fit> {
        let n = points.len();
        if n < 2 {
            return None;
        }
        // Centred sums (and y relative to the first point) keep the
        // precision with byte counts near 2^40.
        let y0 = points[0].1;
        let mt = points.iter().map(|p| p.0).sum::<f64>() / n as f64;
        let my = points.iter().map(|p| p.1 - y0).sum::<f64>() / n as f64;
        let (mut sxx, mut sxy) = (0.0, 0.0);
        for &(t, y) in points {
            let (dx, dy) = (t - mt, y - y0 - my);
            sxx += dx * dx;
            sxy += dx * dy;
        }
        let span = points[n - 1].0 - points[0].0;
        if sxx <= 0.0 || !sxx.is_finite() || span <= 0.0 {
            return None;
        }
        let slope = sxy / sxx;
        let stderr = if n > 2 {
            let ss: f64 = points.iter().map(|&(t, y)| (y - y0 - my - slope * (t - mt)).powi(2)).sum();
            (ss / (n - 2) as f64 / sxx).sqrt()
        } else {
            f64::INFINITY
        };
        Some(Fit { slope, stderr, n, span })
    }

    /// Whether the slope stands out of the noise ([`T_MIN`]).
    pub(crate) fn significant(&self) -> bool {
        self.n >= 3 && self.slope.abs() >= T_MIN * self.stderr
    }
}

/// What `stats` reports about usage over time.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Trends {
    /// Sector bytes allocated per second over the short window.
    pub(crate) alloc_rate: Option<f64>,
    /// Sector bytes freed per second over the short window.
    pub(crate) free_rate: Option<f64>,
    /// The short window's fit.
    pub(crate) short: Option<Fit>,
    /// The long window's fit.
    pub(crate) long: Option<Fit>,
    /// Seconds until the limit is reached at the trend (`None`: flat,
    /// falling, or not distinguishable from noise).
    pub(crate) seconds_to_full: Option<f64>,
}

impl Trends {
    /// The trends of `history` (oldest first, strictly before `now`) and the
    /// live sample `now`, for a pool of `limit` bytes in sectors of
    /// `sector_size` bytes.
    pub(crate) fn compute<'a>(
        history: impl IntoIterator<Item = &'a Sample>,
        now: Sample,
        limit: u64,
        sector_size: u64,
    ) -> Trends {
        let mut pts: Vec<Sample> =
            history.into_iter().filter(|s| s.t < now.t && s.t >= now.t - LONG_WINDOW).copied().collect();
        pts.push(now);
        let xy = |s: &[Sample]| s.iter().map(|p| (p.t, p.used as f64)).collect::<Vec<_>>();
        let short_from = pts.iter().position(|s| s.t >= now.t - SHORT_WINDOW).unwrap_or(pts.len() - 1);
        let short_pts = &pts[short_from..];
        let short = Fit::of(&xy(short_pts));
        let long = Fit::of(&xy(&pts));
        let first = short_pts[0];
        let dt = now.t - first.t;
        let rate = |a: u64, b: u64| (dt > 0.0).then(|| b.saturating_sub(a) as f64 * sector_size as f64 / dt);
        let basis = short.filter(Fit::significant).or(long.filter(Fit::significant));
        Trends {
            alloc_rate: rate(first.allocs, now.allocs),
            free_rate: rate(first.frees, now.frees),
            short,
            long,
            seconds_to_full: forecast(basis, now.used, limit),
        }
    }
}

/// One step of the memory-return policy (issue 17): free sector memory
/// above `reserve` that was already above it at the previous step (one
/// [`PERIOD`] ago) goes back to the OS ([`engine::sector::Pool::trim`]), so a
/// delete followed at once by a rewrite keeps its memory warm, and memory
/// that stays free returns within two periods. Returns the bytes given back.
pub(crate) fn trim_step(pool: &engine::sector::Pool, reserve: u64, was_over: &mut bool) -> u64 {
    let over = pool.stats().free_warm > reserve;
    let given = if over && *was_over { pool.trim(reserve) } else { 0 };
    *was_over = over;
    given
}

/// Free heap bytes kept below which the heap is never trimmed.
const HEAP_TRIM_MIN: u64 = 16 << 20;
/// How much the process's RSS must have grown since the last trim for
/// another, and how much a trim must give back for the next not to wait
/// longer.
const HEAP_TRIM_MOVED: u64 = 4 << 20;
/// The longest wait, in periods, between two trims that gave back little.
const HEAP_TRIM_MAX_WAIT: u32 = 64;

/// The heap's part of the memory-return policy (issue 17: "memory follows
/// use"). The metadata of deleted files (nodes, versions, names, directory
/// slots, xattr values) goes back to glibc's malloc, which keeps it in its
/// arenas: after 200,000 small files were created and deleted the daemon
/// held 77 MiB for 3 MiB of heap in use, until unmount. When more than
/// [`HEAP_TRIM_MIN`] of the heap is free at two steps in a row (it stayed
/// free for a period, as for sectors) and the process's RSS grew by
/// [`HEAP_TRIM_MOVED`] since the last trim, `malloc_trim(0)` gives the
/// heap's free pages back to the OS. So a heap that stays as it is costs
/// one trim, not one a second; and a heap filled and emptied again between
/// two steps is trimmed again. (Until 2026-12-07 the rule compared the free
/// heap at the last trim with the free heap now, which a fill and delete
/// within one period leaves where it was: a probe's repeated cycles of
/// files with 64 KiB xattrs left 129–198 MiB resident for 1 MiB in use.)
///
/// A trim walks every free block, and holds each arena's lock meanwhile:
/// it returns whole free pages, but free memory in holes between live
/// blocks (a heap where half of many small blocks were freed) it can only
/// walk (measured here: 500,000 such holes among 1,000,000 blocks of
/// 40–340 bytes, 116 ms; 200,000 such blocks all freed, 13 ms). So a trim
/// that gave back less than [`HEAP_TRIM_MOVED`] of RSS doubles the wait
/// before the next (up to [`HEAP_TRIM_MAX_WAIT`] periods); one that gave
/// back more resets it to a period. (RSS grows with file data too: then a
/// trim that finds little backs off the same way.)
#[derive(Debug)]
pub(crate) struct HeapTrim {
    was_over: bool,
    /// The process's RSS just after the last trim (0 before the first).
    rss_after: u64,
    /// Periods left before a trim may run again.
    wait: u32,
    /// The wait after the next trim that gives back little.
    backoff: u32,
}

impl Default for HeapTrim {
    fn default() -> Self {
        HeapTrim { was_over: false, rss_after: 0, wait: 0, backoff: 1 }
    }
}

impl HeapTrim {
    /// Whether to trim now, with `free` bytes free on the heap and `rss`
    /// bytes resident.
    pub(crate) fn due(&mut self, free: u64, rss: u64) -> bool {
        let over = free > HEAP_TRIM_MIN;
        let due = over && self.was_over && self.wait == 0 && rss >= self.rss_after.saturating_add(HEAP_TRIM_MOVED);
        self.was_over = over;
        self.wait = self.wait.saturating_sub(1);
        due
    }

    /// A trim took RSS from `before` to `after` bytes: sets the wait
    /// before the next.
    pub(crate) fn gave_back(&mut self, before: u64, after: u64) {
        self.backoff =
            if before.saturating_sub(after) < HEAP_TRIM_MOVED { (self.backoff * 2).min(HEAP_TRIM_MAX_WAIT) } else { 1 };
        self.wait = self.backoff;
        self.rss_after = after;
    }

    /// One step: trims the heap if [`HeapTrim::due`]. Returns whether it
    /// did (never where the allocator is not glibc's).
    pub(crate) fn step(&mut self) -> bool {
        let Some(heap) = crate::stats::heap() else { return false };
        // RSS matters only over the minimum (under it nothing is due): an
        // idle daemon with a small heap does not read /proc every step.
        let before = if heap.free > HEAP_TRIM_MIN { resident_bytes() } else { 0 };
        let due = self.due(heap.free, before);
        if due {
            heap_trim();
            self.gave_back(before, resident_bytes());
        }
        due
    }
}

/// This process's resident memory (`VmRSS`; 0 where unknown).
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok());
    kib.unwrap_or(0u64) * 1024
}

/// Gives glibc's free heap pages back to the OS.
fn heap_trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "mimalloc")))]
    // SAFETY: `malloc_trim` has no preconditions; it takes each arena's
    // lock while it returns that arena's free pages.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Seconds until `used` reaches `limit` at `basis`'s slope.
pub(crate) fn forecast(basis: Option<Fit>, used: u64, limit: u64) -> Option<f64> {
    if used >= limit {
        return Some(0.0);
    }
    let f = basis?;
    if f.slope <= 0.0 {
        return None;
    }
    let secs = (limit - used) as f64 / f.slope;
    secs.is_finite().then_some(secs)
}

/// A mount's sampler and its ring of samples.
#[derive(Debug)]
pub(crate) struct Telemetry {
    engine: Arc<engine::Engine>,
    start: Instant,
    /// At most [`CAPACITY`] samples, oldest first. Locked for a push once a
    /// second and for a copy-free read per stats request.
    ring: Mutex<VecDeque<Sample>>,
}

impl Telemetry {
    /// Telemetry of `engine`, without a sampler thread (tests tick by hand).
    pub(crate) fn new(engine: Arc<engine::Engine>) -> Telemetry {
        let t = Telemetry { engine, start: Instant::now(), ring: Mutex::new(VecDeque::with_capacity(CAPACITY)) };
        t.tick();
        t
    }

    /// Telemetry of `engine` with its sampler thread, which ends when the
    /// returned `Arc` is dropped (at the latest one [`PERIOD`] later).
    /// Start it after the stop signals are blocked: it inherits the mask.
    ///
    /// With `reserve`, each tick also gives free sector memory back to the
    /// OS beyond `reserve` bytes, once it has stayed free for a tick
    /// ([`trim_step`]).
    pub(crate) fn start(engine: Arc<engine::Engine>, reserve: Option<u64>) -> std::io::Result<Arc<Telemetry>> {
        let t = Arc::new(Telemetry::new(engine));
        let weak: Weak<Telemetry> = Arc::downgrade(&t);
        std::thread::Builder::new().name("sectorfs-telemetry".into()).spawn(move || {
            let mut next = Instant::now();
            let mut was_over = false;
            let mut heap = HeapTrim::default();
            loop {
                next += PERIOD;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
                let Some(t) = weak.upgrade() else { return };
                t.tick();
                // Before the heap trim, which then returns what it freed
                // (a big table goes back to the OS at once, as its own
                // mapping). Each shard is rebuilt under its write lock:
                // lookups in that shard wait for it (milliseconds for
                // hundreds of thousands of inodes, and only when the map is
                // three-quarters empty).
                t.engine.compact();
                if let Some(reserve) = reserve {
                    trim_step(t.engine.pool(), reserve, &mut was_over);
                    heap.step();
                }
                // After a long stall (suspend), start the rhythm afresh.
                if Instant::now() > next + PERIOD {
                    next = Instant::now();
                }
            }
        })?;
        Ok(t)
    }

    /// The counters now.
    fn sample(&self) -> Sample {
        let p = self.engine.stats().pool;
        Sample {
            t: self.start.elapsed().as_secs_f64(),
            used: p.used,
            allocs: p.allocs,
            frees: p.allocs.saturating_sub(p.sectors),
        }
    }

    /// Records one sample (the sampler thread, once per [`PERIOD`]).
    pub(crate) fn tick(&self) {
        let s = self.sample();
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if ring.len() == CAPACITY {
            ring.pop_front();
        }
        ring.push_back(s);
    }

    /// The trends up to now.
    pub(crate) fn trends(&self) -> Trends {
        let now = self.sample();
        let p = self.engine.stats().pool;
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        Trends::compute(ring.iter(), now, p.limit, p.sector_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: f64 = (1 << 20) as f64;

    /// A tiny deterministic generator (xorshift), uniform in [-1, 1).
    struct Noise(u64);
    impl Noise {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 52) as f64 - 1.0
        }
    }

    /// Samples at `t = 0, 1, ..` seconds with `used = f(t)`; the last is "now".
    fn run(secs: usize, jitter: f64, mut f: impl FnMut(f64) -> f64) -> (Vec<Sample>, Sample) {
        let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
        let mut v: Vec<Sample> = (0..=secs)
            .map(|i| {
                // Ticks come a little late on a busy machine.
                let t = i as f64 + jitter * (noise.next() + 1.0) / 2.0;
                Sample { t, used: f(t).max(0.0) as u64, allocs: 0, frees: 0 }
            })
            .collect();
        let now = v.pop().unwrap();
        (v, now)
    }

    #[test]
    fn steady_writer_predicts_full_within_20_percent() {
        let limit = 512u64 << 20;
        // 40 MiB/s from t = 0.3: full at 0.3 + 12.8 s. Asked at 3..12 s.
        let rate = 40.0 * MIB;
        let full_at = 0.3 + limit as f64 / rate;
        for at in 3..=12 {
            // Writes land in 4 MiB steps every 100 ms (a staircase).
            let (hist, now) = run(at, 0.2, |t| ((t - 0.3).max(0.0) * 10.0).floor() * 4.0 * MIB);
            let tr = Trends::compute(&hist, now, limit, 64 << 10);
            let pred = tr.seconds_to_full.unwrap_or_else(|| panic!("no forecast at {at} s: {tr:?}"));
            let real = full_at - now.t;
            assert!((pred / real - 1.0).abs() < 0.2, "at {at} s: predicted {pred:.2} s, real {real:.2} s");
            let short = tr.short.unwrap().slope;
            assert!((short / rate - 1.0).abs() < 0.2, "short trend {short} vs {rate}");
        }
    }

    #[test]
    fn noisy_steady_writer_still_predicts() {
        let limit = 8u64 << 30;
        let rate = 20.0 * MIB;
        let mut noise = Noise(12345);
        // ±30 MiB of churn (temporary files) around a 20 MiB/s rise, 60 s in.
        let (hist, now) = run(60, 0.3, |t| 1e9 + rate * t + 30.0 * MIB * noise.next());
        let tr = Trends::compute(&hist, now, limit, 64 << 10);
        let real = (limit as f64 - now.used as f64) / rate;
        let pred = tr.seconds_to_full.expect("a forecast");
        assert!((pred / real - 1.0).abs() < 0.2, "predicted {pred:.1} s, real {real:.1} s");
        let long = tr.long.unwrap().slope;
        assert!((long / rate - 1.0).abs() < 0.05, "long trend {long} vs {rate}");
    }

    #[test]
    fn flat_and_falling_give_no_forecast() {
        let limit = 1u64 << 30;
        let (hist, now) = run(30, 0.1, |_| 100.0 * MIB);
        let tr = Trends::compute(&hist, now, limit, 4096);
        assert_eq!(tr.seconds_to_full, None, "{tr:?}");
        assert_eq!(tr.short.unwrap().slope, 0.0);
        let (hist, now) = run(30, 0.1, |t| 900.0 * MIB - 10.0 * MIB * t);
        let tr = Trends::compute(&hist, now, limit, 4096);
        assert_eq!(tr.seconds_to_full, None, "{tr:?}");
        assert!(tr.short.unwrap().slope < 0.0 && tr.long.unwrap().slope < 0.0);
        // Rose for a long while, now falling: the short trend wins.
        let (hist, now) = run(120, 0.1, |t| if t < 110.0 { t * MIB } else { (220.0 - t) * MIB });
        let tr = Trends::compute(&hist, now, limit, 4096);
        assert!(tr.long.unwrap().slope > 0.0);
        assert_eq!(tr.seconds_to_full, None, "{tr:?}");
    }

    #[test]
    fn noise_gives_no_absurd_forecast() {
        let limit = 1u64 << 30;
        let mut forecasts = 0;
        for seed in 1..=200u64 {
            let mut noise = Noise(seed.wrapping_mul(0x2545_f491_4f6c_dd1d));
            // Usage wandering ±50 MiB around 300 MiB, no trend.
            let (hist, now) = run(40, 0.3, |_| 300.0 * MIB + 50.0 * MIB * noise.next());
            let tr = Trends::compute(&hist, now, limit, 4096);
            for f in [tr.short, tr.long].into_iter().flatten() {
                assert!(f.slope.is_finite() && f.stderr.is_finite() && f.slope.abs() < 20.0 * MIB, "{f:?}");
            }
            if let Some(s) = tr.seconds_to_full {
                forecasts += 1;
                // If noise passes for a trend, it is not an imminent one.
                assert!(s.is_finite() && s > 10.0, "seed {seed}: full in {s} s");
            }
        }
        assert!(forecasts <= 10, "{forecasts} of 200 pure-noise runs gave a forecast");
    }

    #[test]
    fn edges() {
        // No history: no trend, no rates, no forecast.
        let now = Sample { t: 0.0, used: 10, allocs: 1, frees: 0 };
        let tr = Trends::compute(&[], now, 100, 4096);
        assert_eq!(tr, Trends::default());
        // Full: 0 s, whatever the trend.
        let tr = Trends::compute(&[], Sample { used: 100, ..now }, 100, 4096);
        assert_eq!(tr.seconds_to_full, Some(0.0));
        // Two points: a slope, but not significant yet.
        let a = Sample { t: 0.0, used: 0, allocs: 0, frees: 0 };
        let b = Sample { t: 1.0, used: 4096, allocs: 2, frees: 1 };
        let tr = Trends::compute(&[a], b, 1 << 20, 4096);
        assert_eq!(tr.short.unwrap().slope, 4096.0);
        assert_eq!(tr.seconds_to_full, None);
        assert_eq!((tr.alloc_rate, tr.free_rate), (Some(8192.0), Some(4096.0)));
        // Samples at the same instant: no fit.
        assert_eq!(Fit::of(&[(1.0, 1.0), (1.0, 2.0)]), None);
        // Old samples fall out of both windows.
        let old = Sample { t: -1000.0, used: 0, allocs: 0, frees: 0 };
        let tr = Trends::compute(&[old], now, 100, 4096);
        assert_eq!(tr.long, None);
        // Huge counts keep their precision.
        let big = 1u64 << 50;
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, (big + i * 4096) as f64)).collect();
        let f = Fit::of(&pts).unwrap();
        assert!((f.slope - 4096.0).abs() < 1e-3 && f.significant(), "{f:?}");
    }

    #[test]
    fn the_heap_is_trimmed_once_it_stays_free_and_again_only_when_rss_grew() {
        let mut h = HeapTrim::default();
        let mib = 1u64 << 20;
        assert!(!h.due(100 * mib, 120 * mib), "not at the first step over the minimum");
        assert!(h.due(100 * mib, 120 * mib), "free for a period: trim");
        h.gave_back(120 * mib, 20 * mib);
        assert!(!h.due(100 * mib, 30 * mib), "a period's wait after a trim");
        assert!(!h.due(100 * mib, 20 * mib), "the same heap again: no second trim");
        assert!(!h.due(100 * mib, 22 * mib), "RSS grew less than the step");
        assert!(h.due(110 * mib, 40 * mib), "memory used since, and freed: trim again");
        h.gave_back(40 * mib, 20 * mib);
        assert!(!h.due(8 * mib, 40 * mib), "below the minimum");
        assert!(!h.due(40 * mib, 40 * mib), "over again, but only for one step");
        assert!(h.due(40 * mib, 40 * mib));
    }

    /// A heap filled and emptied again between two steps (the free heap
    /// the same at every step: a probe's create-and-delete cycles of files
    /// with 64 KiB xattrs) is trimmed again: its RSS grew.
    #[test]
    fn a_heap_filled_and_emptied_again_is_trimmed_again() {
        let mut h = HeapTrim::default();
        let mib = 1u64 << 20;
        assert!(!h.due(125 * mib, 129 * mib));
        assert!(h.due(125 * mib, 129 * mib), "the first cycle's free heap");
        h.gave_back(129 * mib, 4 * mib);
        assert!(!h.due(125 * mib, 4 * mib), "waits a period");
        assert!(!h.due(125 * mib, 4 * mib), "nothing happened");
        // The second cycle, between two steps: the same free heap, the
        // RSS of the first.
        assert!(h.due(125 * mib, 129 * mib), "the second cycle's heap is trimmed too");
        h.gave_back(129 * mib, 4 * mib);
        assert!(!h.due(125 * mib, 4 * mib) && !h.due(125 * mib, 4 * mib), "and not again while it stays");
    }

    #[test]
    fn resident_bytes_reads_this_process() {
        #[cfg(target_os = "linux")]
        assert!(resident_bytes() > 1 << 20, "{}", resident_bytes());
    }

    /// Trims that give back little (free memory in holes) back off,
    /// doubling up to the longest wait; one that gives back much resets.
    #[test]
    fn trims_that_give_back_little_back_off() {
        let mut h = HeapTrim::default();
        let mib = 1u64 << 20;
        let mut rss = 100 * mib;
        // RSS grows (file data), the free heap stays: steps to a trim.
        let next = |h: &mut HeapTrim, rss: &mut u64| {
            *rss += 8 * mib;
            let r = *rss;
            (1..=200).find(|_| h.due(100 * mib, r)).expect("a trim within 200 steps")
        };
        next(&mut h, &mut rss);
        let mut waits = Vec::new();
        for _ in 0..8 {
            h.gave_back(rss, rss - mib / 2);
            waits.push(next(&mut h, &mut rss));
        }
        assert_eq!(waits, [3, 5, 9, 17, 33, 65, 65, 65], "steps to the next trim");
        h.gave_back(rss, rss - 50 * mib);
        rss -= 50 * mib;
        assert_eq!(next(&mut h, &mut rss), 2);
    }

    #[test]
    fn trim_step_waits_a_period_then_keeps_the_reserve() {
        let e = engine::Engine::new(engine::Config { sector_size: 4096, ..engine::Config::default() }).unwrap();
        let pool = e.pool();
        // 16 MiB of sectors, then all freed (a file written, then deleted):
        // more than this thread's cache slot keeps.
        let f = e.create(engine::ROOT, b"f", 0o644, 0, 0).unwrap().ino;
        e.write(f, 0, &vec![1u8; 16 << 20]).unwrap();
        e.unlink(engine::ROOT, b"f").unwrap();
        e.forget(f, 1);
        let warm = pool.stats().free_warm;
        assert!(warm >= 16 << 20);
        let mut was = false;
        assert_eq!(trim_step(pool, 1 << 20, &mut was), 0, "not at the first step over the reserve");
        let given = trim_step(pool, 1 << 20, &mut was);
        assert!(given > 0 && pool.stats().returned == given);
        let st = pool.stats();
        // What is left warm: the reserve on the shared list, plus the
        // per-thread caches (at most CACHE_MAX units of CACHE_UNIT_MIN pages
        // each, one slot used here).
        let slot = (engine::sector::CACHE_MAX * engine::sector::CACHE_UNIT_MIN) as u64 * 4096;
        assert!(st.free_warm <= (1 << 20) + slot, "{st:?}");
        assert_eq!(trim_step(pool, 1 << 20, &mut was), 0, "nothing more to give back");
    }

    #[test]
    fn ring_is_bounded() {
        let e = Arc::new(engine::Engine::new(engine::Config::default()).unwrap());
        let t = Telemetry::new(e);
        for _ in 0..CAPACITY * 3 {
            t.tick();
        }
        let ring = t.ring.lock().unwrap();
        assert_eq!((ring.len(), ring.capacity() >= CAPACITY), (CAPACITY, true));
        drop(ring);
        let tr = t.trends();
        assert_eq!(tr.seconds_to_full, None);
        assert_eq!(tr.alloc_rate, Some(0.0));
    }
}
