//! `sectorfs stats`: how a running mount reports its counters and trends.
//!
//! The daemon answers `getxattr(<mountpoint>, "user.sectorfs.stats")` on the
//! root directory (Windows: an `IOCTL` on the volume) with one flat JSON
//! object, [`Report`], written and read with `serde_json`. The attribute is
//! virtual: it is not listed by `listxattr`, and setting or removing it
//! fails with `EPERM`. Anyone who may read the root directory may read it,
//! e.g. `getfattr -n user.sectorfs.stats /mnt`.
//!
//! Every counter is an unsigned integer under a fixed key (`used_bytes`,
//! `pid`, `req_<opcode>`, ...); the trends ([`crate::telemetry`]) are
//! numbers that may be negative or fractional, and `null` when there is no
//! value (no history yet; no forecast when usage is flat or falling).
//!
//! The CLI prints it as a table, as the JSON itself (`--json`), in the
//! Prometheus text format (`--prometheus`), or as one line per interval
//! (`--watch`). Platform-neutral: rendering and parsing are tested
//! everywhere.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cli::format_bytes;
use crate::telemetry::Trends;

/// The virtual extended attribute on the root directory.
pub(crate) const STATS_XATTR: &str = "user.sectorfs.stats";

/// The prefix of the per-opcode request counters in the JSON object.
pub(crate) const REQ_PREFIX: &str = "req_";

/// A mount's counters and trends: the JSON object of the stats attribute.
/// Keys are the field names. Fields a daemon does not send read as 0 or
/// `None`, and keys this version does not know are kept in `other`, so old
/// and new `sectorfs` binaries read each other's reports.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub(crate) struct Report {
    /// Bytes charged against the limit (sectors, inline data, reservations).
    pub(crate) used_bytes: u64,
    /// `limit_bytes - used_bytes`.
    pub(crate) free_bytes: u64,
    /// The memory limit (`--size`).
    pub(crate) limit_bytes: u64,
    /// Highest `used_bytes` since the mount.
    pub(crate) peak_bytes: u64,
    /// Sum of file sizes (holes included).
    pub(crate) logical_bytes: u64,
    /// Private memory mapped from the OS for sectors.
    pub(crate) mapped_bytes: u64,
    /// Free sector memory kept resident for reuse (the warm reserve).
    #[serde(default)]
    pub(crate) reserve_bytes: u64,
    /// Free sector memory given back to the OS (mapped, not resident).
    #[serde(default)]
    pub(crate) returned_bytes: u64,
    /// File data shared between files by clones (`cp`, `copy_file_range`:
    /// issue 20), charged once in `used_bytes`: pages held by more than one
    /// file, times the page size.
    #[serde(default)]
    pub(crate) shared_bytes: u64,
    /// Copies held beside `used_bytes`, outside the limit, for as long as
    /// the memory they replace is: pages an overwrite copied while a
    /// reader may still hold the old ones (a bounded, transient reserve:
    /// 0 when nothing is being overwritten).
    #[serde(default)]
    pub(crate) replacing_bytes: u64,
    /// Bytes in use on the daemon's heap: its metadata (inodes, names,
    /// directory entries, sector tables, xattrs, inline file data, request
    /// buffers). File data in sectors is never on the heap. 0 where the
    /// allocator cannot tell (not glibc).
    #[serde(default)]
    pub(crate) heap_bytes: u64,
    /// Bytes the heap's allocator keeps free (glibc's arenas: freed
    /// metadata not yet given back; the heap trim returns it once it stays
    /// free, `telemetry::HeapTrim`); resident as far as it was touched. 0
    /// where the allocator cannot tell.
    #[serde(default)]
    pub(crate) heap_free_bytes: u64,
    /// Metadata charged against its own limit (the engine's `budget`:
    /// inodes, names, symlink targets, extended attributes), at the costs
    /// the per-file bench measured; `heap_bytes` is what the heap holds.
    #[serde(default)]
    pub(crate) metadata_bytes: u64,
    /// The metadata limit: 1 KiB per inode of `--max-files` (tmpfs's
    /// inode space). Past it, creating names and setting attributes fail
    /// with ENOSPC.
    #[serde(default)]
    pub(crate) metadata_limit_bytes: u64,
    /// Bytes of page-cache writeback (stores through a shared mapping;
    /// writes with `--cache writeback`) refused at the limit since the
    /// mount. The kernel reports `ENOSPC` for them at the file's next
    /// `fsync`, `msync` or `close`; a program that checks none of them has
    /// lost them.
    #[serde(default)]
    pub(crate) writeback_refused_bytes: u64,
    /// Sectors held by files.
    pub(crate) sectors: u64,
    /// Bytes per sector.
    pub(crate) sector_size: u64,
    /// Sectors handed out since the mount.
    pub(crate) sector_allocs: u64,
    /// Sectors given back since the mount (`sector_allocs - sectors`).
    pub(crate) sector_frees: u64,
    /// Inodes in use.
    pub(crate) files: u64,
    /// The inode limit.
    pub(crate) max_files: u64,
    /// The daemon's process id.
    pub(crate) pid: u64,
    /// How FUSE requests travel: `uring` or `classic` (`--transport`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) transport: Option<String>,
    /// Requests served through the io_uring queues (the rest came over
    /// `/dev/fuse` reads: forgets, interrupts, and all of them on `classic`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ring_requests: Option<u64>,
    /// Request and reply buffers of the transport, at most (a bounded
    /// reserve: ring entries and classic workers' read buffers; pages are
    /// touched only as far as requests fill them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) transport_buffer_bytes: Option<u64>,
    /// Sector bytes allocated per second over the short window.
    pub(crate) alloc_rate_bytes_per_s: Option<f64>,
    /// Sector bytes freed per second over the short window.
    pub(crate) free_rate_bytes_per_s: Option<f64>,
    /// Least-squares slope of `used_bytes` over the short window (signed).
    pub(crate) trend_short_bytes_per_s: Option<f64>,
    /// Seconds the short trend covers (up to 10).
    pub(crate) trend_short_window_s: Option<f64>,
    /// Least-squares slope of `used_bytes` over the long window (signed).
    pub(crate) trend_long_bytes_per_s: Option<f64>,
    /// Seconds the long trend covers (up to 300).
    pub(crate) trend_long_window_s: Option<f64>,
    /// Seconds until `used_bytes` reaches the limit at the trend; `None`
    /// when flat, falling or indistinguishable from noise; 0 when full.
    pub(crate) seconds_to_full: Option<f64>,
    /// `req_<opcode>` request counters, and keys of newer daemons.
    #[serde(flatten)]
    pub(crate) other: BTreeMap<String, serde_json::Value>,
}

/// `x` to one decimal (the JSON shows no false precision).
fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The width of [`Report::to_table`]'s label column.
const TABLE_LABEL_WIDTH: usize = 27;

impl Report {
    /// The counters of `engine` for the daemon `pid`, with `trends` if the
    /// mount keeps them.
    pub(crate) fn new(engine: &engine::Engine, pid: u32, trends: Option<&Trends>) -> Report {
        let st = engine.stats();
        let p = st.pool;
        // One `mallinfo2` (it walks every arena under its lock).
        let heap = heap();
        let mut r = Report {
            used_bytes: p.used,
            free_bytes: p.limit.saturating_sub(p.used),
            limit_bytes: p.limit,
            peak_bytes: p.peak,
            logical_bytes: st.logical_bytes,
            mapped_bytes: p.mapped,
            reserve_bytes: p.free_warm,
            returned_bytes: p.returned,
            shared_bytes: p.shared_pages * p.page_size,
            replacing_bytes: p.forced,
            heap_bytes: heap.as_ref().map_or(0, |h| h.in_use),
            heap_free_bytes: heap.as_ref().map_or(0, |h| h.free),
            metadata_bytes: st.meta_bytes,
            metadata_limit_bytes: st.max_meta_bytes,
            sectors: p.sectors,
            sector_size: p.sector_size,
            sector_allocs: p.allocs,
            sector_frees: p.allocs.saturating_sub(p.sectors),
            files: st.inodes,
            max_files: st.max_inodes,
            pid: u64::from(pid),
            ..Report::default()
        };
        if let Some(t) = trends {
            r.alloc_rate_bytes_per_s = t.alloc_rate.map(round1);
            r.free_rate_bytes_per_s = t.free_rate.map(round1);
            r.trend_short_bytes_per_s = t.short.map(|f| round1(f.slope));
            r.trend_short_window_s = t.short.map(|f| round1(f.span));
            r.trend_long_bytes_per_s = t.long.map(|f| round1(f.slope));
            r.trend_long_window_s = t.long.map(|f| round1(f.span));
            r.seconds_to_full = t.seconds_to_full.map(|s| (s * 100.0).round() / 100.0);
        }
        r
    }

    /// Adds the request counters as `req_<opcode>`.
    #[cfg_attr(windows, allow(dead_code))] // the Linux frontend counts
    pub(crate) fn add_requests(&mut self, req: &crate::requests::Requests) {
        for (name, n) in req.snapshot() {
            self.other.insert(format!("{REQ_PREFIX}{name}"), n.into());
        }
    }

    /// `(opcode, count)` of every request counter, by name.
    pub(crate) fn requests(&self) -> impl Iterator<Item = (&str, u64)> + '_ {
        self.other.iter().filter_map(|(k, v)| Some((k.strip_prefix(REQ_PREFIX)?, v.as_u64()?)))
    }

    /// Requests served, all opcodes.
    pub(crate) fn requests_total(&self) -> u64 {
        self.requests().map(|(_, n)| n).sum()
    }

    /// The JSON object, on one line.
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a report always serializes")
    }

    /// Parses what [`Report::to_json`] writes.
    pub(crate) fn from_json(s: &str) -> Result<Report, String> {
        serde_json::from_str(s).map_err(|e| format!("{e} in {s:?}"))
    }

    /// Used share of the limit, in percent.
    fn use_percent(&self) -> Option<f64> {
        (self.limit_bytes > 0).then(|| self.used_bytes as f64 * 100.0 / self.limit_bytes as f64)
    }

    /// A human-readable table, one counter per line, then the trends.
    pub(crate) fn to_table(&self) -> String {
        let mut s = String::new();
        // The labels' column: the longest label and two spaces.
        const W: usize = TABLE_LABEL_WIDTH;
        let bytes = |v: u64| format!("{} ({v} bytes)", format_bytes(v));
        let rows = [
            ("used", bytes(self.used_bytes)),
            ("free", bytes(self.free_bytes)),
            ("limit", bytes(self.limit_bytes)),
            ("peak used", bytes(self.peak_bytes)),
            ("file bytes (logical)", bytes(self.logical_bytes)),
            ("memory mapped", bytes(self.mapped_bytes)),
            ("free, kept warm", bytes(self.reserve_bytes)),
            ("free, given back", bytes(self.returned_bytes)),
            ("shared by clones", bytes(self.shared_bytes)),
            ("overwrite copies", bytes(self.replacing_bytes)),
            ("metadata (heap)", bytes(self.heap_bytes)),
            ("heap free, kept by malloc", bytes(self.heap_free_bytes)),
            ("metadata charged", bytes(self.metadata_bytes)),
            ("metadata limit", bytes(self.metadata_limit_bytes)),
            ("writeback refused", bytes(self.writeback_refused_bytes)),
            ("sectors in use", self.sectors.to_string()),
            ("sector size", bytes(self.sector_size)),
            ("sector allocations", self.sector_allocs.to_string()),
            ("sector frees", self.sector_frees.to_string()),
            ("inodes in use", self.files.to_string()),
            ("inode limit", self.max_files.to_string()),
            ("daemon pid", self.pid.to_string()),
        ];
        for (label, v) in rows {
            let _ = writeln!(s, "{label:<W$}{v}");
        }
        if let Some(t) = &self.transport {
            let buf =
                self.transport_buffer_bytes.map_or(String::new(), |b| format!(", buffers up to {}", format_bytes(b)));
            let ring = self.ring_requests.map_or(String::new(), |n| format!(", {n} requests through the ring"));
            let _ = writeln!(s, "{:<W$}{t}{ring}{buf}", "transport");
        }
        if let Some(p) = self.use_percent() {
            let _ = writeln!(s, "{:<W$}{p:.1}%", "use");
        }
        if let (Some(a), Some(f)) = (self.alloc_rate_bytes_per_s, self.free_rate_bytes_per_s) {
            let over = self.trend_short_window_s.map_or(String::new(), |w| format!(" (last {})", format_duration(w)));
            let _ = writeln!(s, "{:<W$}{} allocated, {} freed{over}", "sector churn", format_rate(a), format_rate(f));
        }
        if let Some(t) = self.trend_line() {
            let _ = writeln!(s, "{:<W$}{t}", "trend");
        }
        let reqs: Vec<(&str, u64)> = self.requests().collect();
        if !reqs.is_empty() {
            let _ = writeln!(s, "{:<W$}{}", "requests served", self.requests_total());
            let mut busy: Vec<_> = reqs.into_iter().filter(|&(_, v)| v > 0).collect();
            busy.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            for line in busy.chunks(4) {
                let items: Vec<String> = line.iter().map(|(k, v)| format!("{k} {v}")).collect();
                let _ = writeln!(s, "{:<W$}{}", "", items.join(", "));
            }
        }
        s
    }

    /// "+12.3 MiB/s (10 s), +8.1 MiB/s (5 min); full in 3 min 20 s".
    fn trend_line(&self) -> Option<String> {
        let one =
            |v: Option<f64>, w: Option<f64>| Some(format!("{} ({})", format_rate_signed(v?), format_duration(w?)));
        let parts: Vec<String> = [
            one(self.trend_short_bytes_per_s, self.trend_short_window_s),
            one(self.trend_long_bytes_per_s, self.trend_long_window_s),
        ]
        .into_iter()
        .flatten()
        .collect();
        if parts.is_empty() {
            return None;
        }
        Some(format!("{}; {}", parts.join(", "), self.full_in()))
    }

    /// "full in 3 min 20 s", "full now", or why there is no forecast.
    fn full_in(&self) -> String {
        match self.seconds_to_full {
            Some(s) if s <= 0.0 => "full now".into(),
            Some(s) => format!("full in {}", format_duration(s)),
            None if self.trend_short_bytes_per_s.is_some_and(|t| t > 0.0) => "no clear trend to full".into(),
            None => "not filling up".into(),
        }
    }

    /// The Prometheus text exposition format (version 0.0.4), every sample
    /// labelled `mountpoint`: for node_exporter's textfile collector or a
    /// scrape. Values without a reading (no forecast) are left out.
    pub(crate) fn to_prometheus(&self, mountpoint: &str) -> String {
        let mp = format!("mountpoint=\"{}\"", escape_label(mountpoint));
        let mut s = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(&str, Option<f64>)]| {
            let _ = writeln!(s, "# HELP sectorfs_{name} {help}");
            let _ = writeln!(s, "# TYPE sectorfs_{name} {kind}");
            for (labels, v) in samples {
                if let Some(v) = v {
                    let sep = if labels.is_empty() { "" } else { "," };
                    let _ = writeln!(s, "sectorfs_{name}{{{mp}{sep}{labels}}} {v}");
                }
            }
        };
        let n = |v: u64| Some(v as f64);
        family("used_bytes", "gauge", "Bytes charged against the limit.", &[("", n(self.used_bytes))]);
        family("free_bytes", "gauge", "Bytes left under the limit.", &[("", n(self.free_bytes))]);
        family("limit_bytes", "gauge", "The memory limit.", &[("", n(self.limit_bytes))]);
        family("peak_bytes", "gauge", "Highest used bytes since the mount.", &[("", n(self.peak_bytes))]);
        family("logical_bytes", "gauge", "Sum of file sizes, holes included.", &[("", n(self.logical_bytes))]);
        family("mapped_bytes", "gauge", "Memory mapped from the OS for sectors.", &[("", n(self.mapped_bytes))]);
        family("reserve_bytes", "gauge", "Free sector memory kept resident for reuse.", &[("", n(self.reserve_bytes))]);
        family("returned_bytes", "gauge", "Free sector memory given back to the OS.", &[("", n(self.returned_bytes))]);
        family(
            "shared_bytes",
            "gauge",
            "File data shared between files by clones, charged once.",
            &[("", n(self.shared_bytes))],
        );
        family(
            "replacing_bytes",
            "gauge",
            "Copies made by overwrites whose replaced memory a reader may still hold, outside the limit.",
            &[("", n(self.replacing_bytes))],
        );
        family(
            "heap_bytes",
            "gauge",
            "Daemon heap in use: metadata, inline data, buffers.",
            &[("", n(self.heap_bytes))],
        );
        family(
            "heap_free_bytes",
            "gauge",
            "Daemon heap the allocator keeps free (freed metadata not yet given back to the OS).",
            &[("", n(self.heap_free_bytes))],
        );
        family(
            "metadata_bytes",
            "gauge",
            "Metadata charged against the metadata limit: inodes, names, symlink targets, xattrs.",
            &[("", n(self.metadata_bytes))],
        );
        family("metadata_limit_bytes", "gauge", "The metadata limit.", &[("", n(self.metadata_limit_bytes))]);
        family(
            "writeback_refused_bytes_total",
            "counter",
            "Page-cache writeback (mmap stores) refused at the limit; reported as ENOSPC at fsync, msync or close.",
            &[("", n(self.writeback_refused_bytes))],
        );
        family("sectors", "gauge", "Sectors held by files.", &[("", n(self.sectors))]);
        family("sector_size_bytes", "gauge", "Bytes per sector.", &[("", n(self.sector_size))]);
        family("files", "gauge", "Inodes in use.", &[("", n(self.files))]);
        family("max_files", "gauge", "The inode limit.", &[("", n(self.max_files))]);
        family("sector_allocs_total", "counter", "Sectors handed out.", &[("", n(self.sector_allocs))]);
        family("sector_frees_total", "counter", "Sectors given back.", &[("", n(self.sector_frees))]);
        if let Some(t) = &self.transport {
            let l = format!("transport=\"{}\"", escape_label(t));
            family("transport_info", "gauge", "The FUSE transport in use (value 1).", &[(l.as_str(), Some(1.0))]);
        }
        if let Some(r) = self.ring_requests {
            family("ring_requests_total", "counter", "Requests served through the io_uring queues.", &[("", n(r))]);
        }
        if let Some(b) = self.transport_buffer_bytes {
            let help = "Request and reply buffers of the transport, at most.";
            family("transport_buffer_bytes", "gauge", help, &[("", n(b))]);
        }
        let rate = "Sector bytes per second over the last 10 s.";
        family("alloc_rate_bytes_per_second", "gauge", rate, &[("", self.alloc_rate_bytes_per_s)]);
        family("free_rate_bytes_per_second", "gauge", rate, &[("", self.free_rate_bytes_per_s)]);
        family(
            "trend_bytes_per_second",
            "gauge",
            "Least-squares slope of used bytes over the window (10s, 300s).",
            &[("window=\"10s\"", self.trend_short_bytes_per_s), ("window=\"300s\"", self.trend_long_bytes_per_s)],
        );
        family(
            "seconds_to_full",
            "gauge",
            "Seconds until the limit is reached at the current trend (absent: not filling up).",
            &[("", self.seconds_to_full)],
        );
        let ops: Vec<(String, Option<f64>)> =
            self.requests().map(|(op, v)| (format!("op=\"{}\"", escape_label(op)), n(v))).collect();
        if !ops.is_empty() {
            let ops: Vec<(&str, Option<f64>)> = ops.iter().map(|(l, v)| (l.as_str(), *v)).collect();
            family("requests_total", "counter", "FUSE requests served, by opcode.", &ops);
        }
        s
    }
}

/// A Prometheus label value: `\`, `"` and newline escaped.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// "12.3 MiB/s": a rate in binary units with one decimal.
pub(crate) fn format_rate(bps: f64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bps.abs();
    if v < 1024.0 {
        return format!("{v:.0} B/s");
    }
    let mut unit = "B";
    for u in UNITS {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}/s")
}

/// "+12.3 MiB/s", "-512.0 KiB/s", "0 B/s".
pub(crate) fn format_rate_signed(bps: f64) -> String {
    let r = format_rate(bps);
    if r.starts_with("0 ") {
        r
    } else if bps < 0.0 {
        format!("-{r}")
    } else {
        format!("+{r}")
    }
}

/// "< 1 s", "45 s", "3 min 20 s", "2 h 5 min", "3 d 4 h".
pub(crate) fn format_duration(secs: f64) -> String {
    if !secs.is_finite() {
        return "forever".into();
    }
    if secs < 1.0 {
        return if secs <= 0.0 { "0 s".into() } else { "< 1 s".into() };
    }
    let s = secs.round() as u64;
    let pair = |a: u64, ua: &str, b: u64, ub: &str| {
        if b == 0 {
            format!("{a} {ua}")
        } else {
            format!("{a} {ua} {b} {ub}")
        }
    };
    match s {
        0..60 => format!("{s} s"),
        60..3600 => pair(s / 60, "min", s % 60, "s"),
        3600..86400 => pair(s / 3600, "h", s % 3600 / 60, "min"),
        _ => pair(s / 86400, "d", s % 86400 / 3600, "h"),
    }
}

/// How `sectorfs stats` prints a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// The human table (or, with `--watch`, one line per interval).
    Table,
    /// The JSON object (one per line with `--watch`).
    Json,
    /// The Prometheus text format.
    Prometheus,
}

/// Prints one report in `format` (`mountpoint`: the label of the
/// Prometheus samples). A closed stdout (`| head`) is not an error.
pub(crate) fn print(r: &Report, format: Format, mountpoint: &str) -> anyhow::Result<ExitCode> {
    let text = match format {
        Format::Table => r.to_table(),
        Format::Json => r.to_json() + "\n",
        Format::Prometheus => r.to_prometheus(mountpoint),
    };
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// The header of `--watch`'s lines.
pub(crate) const WATCH_HEADER: &str = "      used       free   use%   trend (10 s)       full in     req/s";

/// One `--watch` line; `req_rate` from the previous report, if any.
pub(crate) fn watch_line(r: &Report, req_rate: Option<f64>) -> String {
    let pct = r.use_percent().map_or("-".into(), |p| format!("{p:.1}%"));
    let trend = r.trend_short_bytes_per_s.map_or("-".into(), format_rate_signed);
    let full = match r.seconds_to_full {
        Some(s) if s <= 0.0 => "full".into(),
        Some(s) => format_duration(s),
        None => "-".into(),
    };
    let req = req_rate.map_or("-".into(), |v| format!("{v:.0}"));
    format!(
        "{:>10} {:>10} {pct:>6} {trend:>14} {full:>13} {req:>9}",
        format_bytes(r.used_bytes),
        format_bytes(r.free_bytes)
    )
}

/// A mount's daemon did not answer in time (`sectorfs stats`, `sectorfs
/// unmount`): stopped or hung.
#[derive(Debug)]
pub(crate) struct NoAnswer {
    pub(crate) mountpoint: String,
    pub(crate) within: Duration,
}

impl std::fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the daemon of {0} did not answer within {1} s (stopped, or hung?); `sectorfs unmount --force {0}` \
             (as root) takes the disk away without it",
            self.mountpoint,
            self.within.as_secs()
        )
    }
}

impl std::error::Error for NoAnswer {}

/// `sectorfs stats --watch`: one line (or JSON object) per `every`, until
/// `wait` says stop (Ctrl-C: status 0) or the mount goes away or its daemon stops answering (a
/// one-line error, status 1). `read` asks the mount; `wait(d)` sleeps `d` and
/// returns true if the user asked to stop. Each read is one GETXATTR of
/// our own, taken out of the requests/s.
pub(crate) fn watch(
    shown: &str,
    every: Duration,
    format: Format,
    mut read: impl FnMut() -> anyhow::Result<Report>,
    mut wait: impl FnMut(Duration) -> bool,
    out: &mut impl Write,
) -> anyhow::Result<ExitCode> {
    let mut prev: Option<(Instant, u64)> = None;
    let mut next = Instant::now();
    loop {
        let r = match read() {
            Ok(r) => r,
            Err(e) if prev.is_none() || e.is::<NoAnswer>() => return Err(e),
            Err(e) => anyhow::bail!("{shown} went away (unmounted or its daemon ended): {e:#}"),
        };
        let now = Instant::now();
        let total = r.requests_total();
        let rate = prev.map(|(t, n)| total.saturating_sub(n).saturating_sub(1) as f64 / (now - t).as_secs_f64());
        let text = match format {
            Format::Json => r.to_json(),
            _ if prev.is_none() => format!("{WATCH_HEADER}\n{}", watch_line(&r, rate)),
            _ => watch_line(&r, rate),
        };
        prev = Some((now, total));
        match writeln!(out, "{text}").and_then(|()| out.flush()) {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
            Err(e) => return Err(e.into()),
            Ok(()) => {}
        }
        // A steady rhythm: the next line is due `every` after the last one.
        next += every;
        let now = Instant::now();
        if next < now {
            next = now;
        }
        if wait(next - now) {
            return Ok(ExitCode::SUCCESS);
        }
    }
}

/// Bytes of the process heap.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Heap {
    /// Small blocks in use plus large mmapped blocks: everything the daemon
    /// keeps besides sector memory is there.
    pub(crate) in_use: u64,
    /// What malloc keeps free in its arenas (the heap trim's measure,
    /// `telemetry::HeapTrim`).
    pub(crate) free: u64,
}

/// The heap, from glibc's `mallinfo2` (`None`: another allocator).
pub(crate) fn heap() -> Option<Heap> {
    #[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "mimalloc")))]
    {
        // SAFETY: `mallinfo2` has no preconditions; it returns a plain struct
        // by value (glibc 2.33+; the binary links against the system glibc).
        let m = unsafe { libc::mallinfo2() };
        Some(Heap { in_use: (m.uordblks + m.hblkhd) as u64, free: m.fordblks as u64 })
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu", not(feature = "mimalloc"))))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::{Fit, Trends};

    fn trends() -> Trends {
        let fit = |slope, span| Some(Fit { slope, stderr: 0.0, n: 10, span });
        Trends {
            alloc_rate: Some(13.0 * 1048576.0),
            free_rate: Some(1048576.0),
            short: fit(12.3 * 1048576.0, 10.0),
            long: fit(8.1 * 1048576.0, 300.0),
            seconds_to_full: Some(200.0),
        }
    }

    #[test]
    fn json_round_trip() {
        let e = engine::Engine::new(engine::Config::default()).unwrap();
        let mut s = Report::new(&e, 42, Some(&trends()));
        s.add_requests(&crate::requests::Requests::default());
        let j = s.to_json();
        assert!(j.starts_with("{\"used_bytes\":"), "{j}");
        assert!(j.contains("\"pid\":42,") && j.contains("\"files\":1,") && j.contains("\"req_lookup\":0"), "{j}");
        assert!(j.contains("\"seconds_to_full\":200.0"), "{j}");
        assert_eq!(Report::from_json(&j), Ok(s.clone()));
        assert_eq!(s.requests().count(), crate::requests::OPS.len());
        // No trends: null, and null reads back as None.
        let s = Report::new(&e, 1, None);
        let j = s.to_json();
        assert!(j.contains("\"seconds_to_full\":null"), "{j}");
        assert_eq!(Report::from_json(&j), Ok(s));
    }

    #[test]
    fn json_old_and_new_daemons() {
        // An older daemon: fewer keys. A newer one: keys we do not know.
        let s = Report::from_json(" { \"used_bytes\" : 1 , \"pid\":2, \"req_write\": 3, \"x\": [1.5] } ").unwrap();
        assert_eq!((s.used_bytes, s.pid, s.seconds_to_full), (1, 2, None));
        assert_eq!(s.requests().collect::<Vec<_>>(), vec![("write", 3)]);
        assert_eq!(Report::from_json("{}"), Ok(Report::default()));
        for bad in ["", "[]", "{a:1}", "{\"used_bytes\":x}", "{\"used_bytes\"}", "{\"used_bytes\":-1}"] {
            assert!(Report::from_json(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn table_shows_counters_and_trends() {
        let row = |label: &str, v: &str| format!("{label:<TABLE_LABEL_WIDTH$}{v}");
        let s = Report { used_bytes: 1 << 20, limit_bytes: 4 << 20, files: 3, ..Report::default() };
        let t = s.to_table();
        assert!(t.contains(&row("used", "1 MiB (1048576 bytes)")), "{t}");
        assert!(t.contains(&row("inodes in use", "3")), "{t}");
        assert!(t.contains(&row("use", "25.0%")), "{t}");
        assert!(!t.contains("trend"), "{t}");
        // Every label ends two spaces or more before its value.
        for line in t.lines().filter(|l| !l.starts_with(' ')) {
            assert!(line.get(TABLE_LABEL_WIDTH - 2..TABLE_LABEL_WIDTH) == Some("  "), "{line:?}");
        }
        let e = engine::Engine::new(engine::Config::default()).unwrap();
        let t = Report::new(&e, 1, Some(&trends())).to_table();
        assert!(t.contains(&row("trend", "+12.3 MiB/s (10 s), +8.1 MiB/s (5 min); full in 3 min 20 s")), "{t}");
        assert!(t.contains(&row("sector churn", "13.0 MiB/s allocated, 1.0 MiB/s freed (last 10 s)")), "{t}");
        let flat = Trends { seconds_to_full: None, short: None, ..trends() };
        let t = Report::new(&e, 1, Some(&flat)).to_table();
        assert!(t.contains("+8.1 MiB/s (5 min); not filling up"), "{t}");
    }

    #[test]
    fn human_units() {
        assert_eq!(format_rate_signed(12.3 * 1048576.0), "+12.3 MiB/s");
        assert_eq!(format_rate_signed(-512.0 * 1024.0), "-512.0 KiB/s");
        assert_eq!(format_rate_signed(0.2), "0 B/s");
        assert_eq!(format_rate(100.0), "100 B/s");
        assert_eq!(format_duration(0.0), "0 s");
        assert_eq!(format_duration(0.4), "< 1 s");
        assert_eq!(format_duration(45.2), "45 s");
        assert_eq!(format_duration(200.0), "3 min 20 s");
        assert_eq!(format_duration(300.0), "5 min");
        assert_eq!(format_duration(7500.0), "2 h 5 min");
        assert_eq!(format_duration(3.0 * 86400.0 + 4.0 * 3600.0), "3 d 4 h");
    }

    #[test]
    fn prometheus_text() {
        let mut r = Report { used_bytes: 5, sector_allocs: 7, ..Report::default() };
        r.other.insert("req_lookup".into(), 9u64.into());
        let p = r.to_prometheus("/mnt/a \"b\"\\");
        assert!(p.contains("# TYPE sectorfs_used_bytes gauge\n"), "{p}");
        assert!(p.contains("sectorfs_used_bytes{mountpoint=\"/mnt/a \\\"b\\\"\\\\\"} 5\n"), "{p}");
        assert!(p.contains("# TYPE sectorfs_sector_allocs_total counter\n"), "{p}");
        assert!(p.contains("sectorfs_requests_total{mountpoint=\"/mnt/a \\\"b\\\"\\\\\",op=\"lookup\"} 9\n"), "{p}");
        // No forecast: the family is declared, without a sample.
        assert!(p.contains("# TYPE sectorfs_seconds_to_full gauge\n") && !p.contains("sectorfs_seconds_to_full{"));
    }

    #[test]
    fn watch_lines_and_end() {
        let e = engine::Engine::new(engine::Config { max_bytes: 4 << 20, ..engine::Config::default() }).unwrap();
        let mut r = Report::new(&e, 1, Some(&trends()));
        let mut n = 0;
        let mut out = Vec::new();
        let read = || {
            n += 1;
            r.other.insert("req_getxattr".into(), (n as u64).into());
            if n <= 3 {
                Ok(r.clone())
            } else {
                Err(anyhow::anyhow!("not a sectorfs mount"))
            }
        };
        let err = watch("/m", Duration::ZERO, Format::Table, read, |_| false, &mut out).unwrap_err();
        assert_eq!(format!("{err:#}"), "/m went away (unmounted or its daemon ended): not a sectorfs mount");
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(lines[0], WATCH_HEADER);
        assert!(lines[1].contains("+12.3 MiB/s") && lines[1].contains("3 min 20 s"), "{text}");
        assert!(lines[1].trim_end().ends_with('-') && lines[2].trim_end().ends_with(" 0"), "{text}");
        // Stopped (Ctrl-C) after the first line: status 0.
        let mut out = Vec::new();
        let code = watch("/m", Duration::ZERO, Format::Json, || Ok(Report::default()), |_| true, &mut out).unwrap();
        assert_eq!(code, ExitCode::SUCCESS);
        assert_eq!(String::from_utf8(out).unwrap().lines().count(), 1);
        // The first read fails: its own error.
        let err =
            watch("/m", Duration::ZERO, Format::Table, || Err(anyhow::anyhow!("nope")), |_| false, &mut Vec::new());
        assert_eq!(err.unwrap_err().to_string(), "nope");
    }
}
