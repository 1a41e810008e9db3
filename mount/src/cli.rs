//! Command-line values: sizes (`512M`, `8G`, `50%`), permission modes
//! (`1777`), and the defaults that depend on the machine. Platform-neutral,
//! so it is unit-tested everywhere.

use std::fmt;
use std::str::FromStr;

/// A size given on the command line: bytes, or a share of the machine's RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SizeArg {
    /// An absolute number of bytes.
    Bytes(u64),
    /// A percentage of physical memory (`50%`).
    PercentOfRam(u32),
}

impl SizeArg {
    /// The size in bytes, given the machine's physical memory (`None`: unknown).
    pub(crate) fn resolve(self, ram: Option<u64>) -> Result<u64, String> {
        match self {
            SizeArg::Bytes(b) => Ok(b),
            SizeArg::PercentOfRam(p) => {
                let ram = ram.ok_or("the amount of RAM is unknown here; give --size in bytes (e.g. 8G)")?;
                Ok((u128::from(ram) * u128::from(p) / 100).min(u128::from(u64::MAX)) as u64)
            }
        }
    }
}

impl fmt::Display for SizeArg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SizeArg::Bytes(b) => f.write_str(&format_bytes(*b)),
            SizeArg::PercentOfRam(p) => write!(f, "{p}%"),
        }
    }
}

impl FromStr for SizeArg {
    type Err = String;

    /// `123` (bytes), `64K`, `512M`, `8G`, `1T` (powers of 1024; `KiB`, `k`,
    /// `KB`, ... accepted too), or `1..=100%` of RAM.
    fn from_str(s: &str) -> Result<SizeArg, String> {
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            let p: u32 = p.trim().parse().map_err(|_| format!("bad percentage {s:?} (expected e.g. 50%)"))?;
            if p == 0 || p > 100 {
                return Err(format!("percentage {s:?} out of range (1%..100%)"));
            }
            return Ok(SizeArg::PercentOfRam(p));
        }
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        if num.is_empty() {
            return Err(format!("bad size {s:?} (expected e.g. 512M, 8G or 50%)"));
        }
        let n: u64 = num.parse().map_err(|_| format!("size {s:?} is too large"))?;
        let unit = unit.trim().to_ascii_uppercase();
        let unit = unit.strip_suffix("IB").or_else(|| unit.strip_suffix('B')).unwrap_or(&unit);
        let unit = unit.strip_suffix('I').filter(|u| !u.is_empty()).unwrap_or(unit);
        let shift = match unit {
            "" => 0,
            "K" => 10,
            "M" => 20,
            "G" => 30,
            "T" => 40,
            "P" => 50,
            "E" => 60,
            _ => {
                return Err(format!(
                    "bad size unit in {s:?} (use K, M, G, T, P or E; or % where a share of RAM is allowed)"
                ))
            }
        };
        let bytes = n.checked_mul(1u64 << shift).ok_or_else(|| format!("size {s:?} is too large"))?;
        if bytes == 0 {
            return Err(format!("size {s:?} must be more than zero"));
        }
        Ok(SizeArg::Bytes(bytes))
    }
}

/// Parses a byte count that may not be a percentage (e.g. `--sector-size`).
pub(crate) fn parse_bytes(s: &str) -> Result<u64, String> {
    match s.parse::<SizeArg>()? {
        SizeArg::Bytes(b) => Ok(b),
        SizeArg::PercentOfRam(_) => Err(format!("{s:?}: a percentage is not allowed here")),
    }
}

/// Parses a count such as `2000000`, `2000k` or `2m` (powers of 1024, as
/// tmpfs's `nr_inodes`): `--max-files`.
#[cfg_attr(windows, allow(dead_code))] // a Linux option
pub(crate) fn parse_count(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, shift) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 20),
        Some('g' | 'G') => (&t[..t.len() - 1], 30),
        _ => (t, 0),
    };
    let n: u64 = num.parse().map_err(|_| format!("bad count {s:?} (expected e.g. 2000000, 2000k or 2m)"))?;
    n.checked_mul(1 << shift).ok_or_else(|| format!("count {s:?} is too large"))
}

/// Parses `--reserve`: a byte count, `0` allowed.
#[cfg_attr(windows, allow(dead_code))] // a Linux option
pub(crate) fn parse_reserve(s: &str) -> Result<u64, String> {
    if s.trim() == "0" {
        return Ok(0);
    }
    parse_bytes(s)
}

/// Parses an octal permission mode such as `1777`, `0755` or `0o700`.
#[cfg_attr(windows, allow(dead_code))] // a Linux option
pub(crate) fn parse_mode(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let t = t.strip_prefix("0o").unwrap_or(t);
    if t.is_empty() || !t.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(format!("bad mode {s:?} (expected octal, e.g. 1777 or 0755)"));
    }
    let m = u32::from_str_radix(t, 8).map_err(|_| format!("bad mode {s:?}"))?;
    if m > 0o7777 {
        return Err(format!("mode {s:?} is more than 7777"));
    }
    Ok(m)
}

/// `8 GiB`, `512 MiB`, `123 B`: the largest binary unit that divides evenly,
/// else one decimal.
pub(crate) fn format_bytes(b: u64) -> String {
    const UNITS: [(&str, u32); 5] = [("PiB", 50), ("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
    for (name, shift) in UNITS {
        let unit = 1u64 << shift;
        if b >= unit {
            return if b % unit == 0 {
                format!("{} {name}", b >> shift)
            } else {
                format!("{:.1} {name}", b as f64 / unit as f64)
            };
        }
    }
    format!("{b} B")
}

/// Default size of the RAM disk: half of RAM (like tmpfs).
pub(crate) const DEFAULT_SIZE: SizeArg = SizeArg::PercentOfRam(50);

/// Default inode limit: as tmpfs's `nr_inodes`, half as many as `ram` (the
/// memory the daemon may use, as for `--size` percentages) has 4 KiB pages,
/// whatever the size (a small disk of small files runs out of space, not of
/// inodes: a probe's `cp -r /usr` into a 256 MiB disk failed on 86 names
/// where tmpfs stored every one that fit); and never fewer than one per 4
/// KiB of `size` (a disk larger than memory) or 1024.
pub(crate) fn default_max_files(size: u64, ram: Option<u64>) -> u64 {
    let by_ram = ram.map_or(0, |r| r / 4096 / 2);
    (size / 4096).max(by_ram).max(1024)
}

/// Default number of FUSE worker threads: the number of cores, at least 2.
#[cfg_attr(windows, allow(dead_code))] // a Linux option
pub(crate) fn default_threads(cores: usize) -> usize {
    cores.max(2)
}

/// Bad command-line input (an option's value, not a failure while running):
/// printed as one line, exit status 2, as clap does for the errors it finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Usage(pub(crate) String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// The exit status for bad command-line input.
pub(crate) const USAGE_EXIT: u8 = 2;

/// Most `--threads` per core: workers beyond a few per core only wait.
#[cfg_attr(windows, allow(dead_code))] // a Linux mount check
pub(crate) const THREADS_PER_CORE: usize = 64;

/// Descriptors the daemon keeps for itself beside one `/dev/fuse` clone per
/// worker thread.
#[cfg_attr(windows, allow(dead_code))] // a Linux mount check
pub(crate) const FD_RESERVE: u64 = 64;

/// Longest `--label` in bytes (it becomes the mount's source, shown by
/// `mount` and `df`; the kernel takes at most a page for the whole option
/// string).
#[cfg_attr(windows, allow(dead_code))] // a Linux mount check
pub(crate) const LABEL_MAX: usize = 255;

/// Checks `--sector-size`: a power of two from 4K to 1M.
pub(crate) fn check_sector_size(b: u64) -> Result<usize, String> {
    if !engine::sector_size_ok(b) {
        return Err(format!("--sector-size {}: must be a power of two from 4K to 1M", format_bytes(b)));
    }
    Ok(b as usize)
}

/// The memory limit for `--size`, rounded up to whole sectors (as tmpfs
/// rounds its size up to whole pages), so `df` shows exactly the limit and a
/// limit below one sector still holds a sector of data; down where up
/// would pass `u64::MAX`.
pub(crate) fn round_limit(size: u64, sector: u64) -> u64 {
    size.checked_next_multiple_of(sector).unwrap_or(size / sector * sector)
}

/// Checks `--threads n` against the cores and the open-file limit `nofile`
/// (the hard limit: the daemon raises its soft limit as far as needed).
#[cfg_attr(windows, allow(dead_code))] // a Linux mount check
pub(crate) fn check_threads(n: usize, cores: usize, nofile: Option<u64>) -> Result<usize, String> {
    if n == 0 {
        return Err("--threads 0: at least one worker thread is needed".into());
    }
    let by_cores = cores.max(1).saturating_mul(THREADS_PER_CORE);
    if n > by_cores {
        return Err(format!(
            "--threads {n}: at most {by_cores} on this machine ({THREADS_PER_CORE} per core, {cores} cores; \
             the default is {})",
            default_threads(cores)
        ));
    }
    if let Some(limit) = nofile {
        let by_fds = limit.saturating_sub(FD_RESERVE);
        if by_fds == 0 {
            // Fewer threads cannot help (a probe was told "at most 0").
            return Err(format!(
                "the open-file limit ({limit}) is too low: the daemon keeps {FD_RESERVE} descriptors for itself \
                 and needs one more per worker thread; raise it with `ulimit -n` (at least {})",
                FD_RESERVE + 1
            ));
        }
        if n as u64 > by_fds {
            return Err(format!(
                "--threads {n}: at most {by_fds} with this open-file limit ({limit}; each thread holds one \
                 /dev/fuse descriptor); raise it with `ulimit -n` or give fewer threads"
            ));
        }
    }
    Ok(n)
}

/// Checks `--label`: 1 to [`LABEL_MAX`] bytes, no control characters.
#[cfg_attr(windows, allow(dead_code))] // a Linux mount check
pub(crate) fn check_label(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("--label must not be empty".into());
    }
    if s.len() > LABEL_MAX {
        return Err(format!("--label is {} bytes long; at most {LABEL_MAX}", s.len()));
    }
    if s.chars().any(char::is_control) {
        return Err(format!("--label {s:?} contains a control character"));
    }
    Ok(())
}

/// Checks `--uid`/`--gid`: `4294967295` is (uid_t)-1, "no change", not an id.
#[cfg_attr(windows, allow(dead_code))] // a Linux mount check
pub(crate) fn check_id(flag: &str, id: u32) -> Result<u32, String> {
    if id == u32::MAX {
        return Err(format!("{flag} {id}: not a valid id (it is -1, \"no id\")"));
    }
    Ok(id)
}

/// The hard limit on open files of this process, if known.
#[cfg_attr(windows, allow(dead_code))] // a Linux mount check
pub(crate) fn open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: `getrlimit` writes one `rlimit` into `r`, which lives
        // across the call.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0 {
            return Some(if r.rlim_max == libc::RLIM_INFINITY { u64::MAX } else { r.rlim_max });
        }
    }
    None
}

/// Raises this process's soft open-file limit to at least `need` (within
/// the hard limit). Best effort.
#[cfg_attr(windows, allow(dead_code))] // a Linux mount check
pub(crate) fn raise_open_file_limit(need: u64) {
    #[cfg(unix)]
    {
        let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: as in `open_file_limit`; `setrlimit` only reads `r`.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0
                && r.rlim_cur != libc::RLIM_INFINITY
                && r.rlim_cur < need
            {
                r.rlim_cur = need.min(r.rlim_max);
                libc::setrlimit(libc::RLIMIT_NOFILE, &r);
            }
        }
    }
    #[cfg(not(unix))]
    let _ = need;
}

/// The memory this process may use, in bytes, if known: the machine's
/// physical memory, or the limit of the memory cgroup it runs in (and of
/// that cgroup's ancestors) where that is lower. Percentages of `--size`
/// are of this, and a larger `--size` is warned about: the daemon holds the
/// disk in its own memory, so past this the OOM killer takes the daemon and
/// the whole disk with it (a probe in a 1.5 GiB cgroup of a 24 GiB machine
/// got a 12 GiB default).
pub(crate) fn total_ram() -> Option<u64> {
    #[cfg(unix)]
    {
        // SAFETY: `sysconf` only reads configuration values; it has no
        // preconditions and touches no memory of ours.
        let (pages, page) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
        if pages > 0 && page > 0 {
            let ram = pages as u64 * page as u64;
            #[cfg(target_os = "linux")]
            let ram = cgroup_memory_limit(&std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default(), |p| {
                std::fs::read_to_string(p).ok()
            })
            .map_or(ram, |l| l.min(ram));
            return Some(ram);
        }
    }
    #[cfg(windows)]
    let ram = crate::win_daemon::total_ram();
    #[cfg(not(windows))]
    let ram = None;
    ram
}

/// The lowest memory limit on the way from the cgroups of `proc_cgroup`
/// (the text of `/proc/self/cgroup`) up to the root: cgroup v2's
/// `memory.max` (the unified line `0::/path`), or v1's
/// `memory.limit_in_bytes` (the `memory` controller's line). `read` gives a
/// file's text under `/sys/fs/cgroup`. `None`: no limit found.
#[cfg(target_os = "linux")]
pub(crate) fn cgroup_memory_limit(proc_cgroup: &str, read: impl Fn(&str) -> Option<String>) -> Option<u64> {
    let mut lowest: Option<u64> = None;
    for line in proc_cgroup.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(_), Some(ctrl), Some(path)) = (f.next(), f.next(), f.next()) else { continue };
        let (base, file) = if ctrl.is_empty() {
            ("/sys/fs/cgroup", "memory.max")
        } else if ctrl.split(',').any(|c| c == "memory") {
            ("/sys/fs/cgroup/memory", "memory.limit_in_bytes")
        } else {
            continue;
        };
        let mut dir = path.trim_end_matches('/').to_string();
        loop {
            // "max" (v2) or a huge number (v1's "unlimited") parse to no limit.
            if let Some(l) = read(&format!("{base}{dir}/{file}")).and_then(|t| t.trim().parse::<u64>().ok()) {
                if l < 1 << 60 {
                    lowest = Some(lowest.map_or(l, |x| x.min(l)));
                }
            }
            match dir.rfind('/') {
                Some(i) => dir.truncate(i),
                None => break,
            }
        }
    }
    lowest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn cgroup_limits_v1_and_v2() {
        let files = |m: &[(&str, &str)]| {
            let m: std::collections::HashMap<String, String> =
                m.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            move |p: &str| m.get(p).cloned()
        };
        // v2: the lowest of the cgroup and its ancestors; "max" is none.
        let v2 = files(&[("/sys/fs/cgroup/a/b/memory.max", "max\n"), ("/sys/fs/cgroup/a/memory.max", "1610612736\n")]);
        assert_eq!(cgroup_memory_limit("0::/a/b\n", &v2), Some(1_610_612_736));
        assert_eq!(cgroup_memory_limit("0::/\n", &v2), None);
        // v1: the memory controller's line, maybe shared with others;
        // "unlimited" is a huge number.
        let v1 = files(&[
            ("/sys/fs/cgroup/memory/probe/memory.limit_in_bytes", "1610612736"),
            ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712"),
        ]);
        assert_eq!(cgroup_memory_limit("12:cpu,cpuacct:/x\n5:memory:/probe\n0::/y\n", &v1), Some(1_610_612_736));
        assert_eq!(cgroup_memory_limit("5:memory:/\n", &v1), None);
        assert_eq!(cgroup_memory_limit("garbage\n\n", &v1), None);
    }

    #[test]
    fn sizes() {
        assert_eq!("512M".parse(), Ok(SizeArg::Bytes(512 << 20)));
        assert_eq!("8G".parse(), Ok(SizeArg::Bytes(8 << 30)));
        assert_eq!("8g".parse(), Ok(SizeArg::Bytes(8 << 30)));
        assert_eq!("64K".parse(), Ok(SizeArg::Bytes(64 << 10)));
        assert_eq!("64KiB".parse(), Ok(SizeArg::Bytes(64 << 10)));
        assert_eq!("1TB".parse(), Ok(SizeArg::Bytes(1 << 40)));
        assert_eq!("4096".parse(), Ok(SizeArg::Bytes(4096)));
        assert_eq!(" 2 M ".parse(), Ok(SizeArg::Bytes(2 << 20)));
        assert_eq!("50%".parse(), Ok(SizeArg::PercentOfRam(50)));
        assert_eq!("100%".parse(), Ok(SizeArg::PercentOfRam(100)));
        assert_eq!("1Ki".parse(), Ok(SizeArg::Bytes(1 << 10)));
        assert_eq!("2P".parse(), Ok(SizeArg::Bytes(2 << 50)));
        assert_eq!("10E".parse(), Ok(SizeArg::Bytes(10 << 60)));
        for bad in [
            "",
            "M",
            "0",
            "0G",
            "-1G",
            "1.5G",
            "12X",
            "0%",
            "101%",
            "x%",
            "99999999999999999999",
            "16777216T",
            "16E",
            "I",
        ] {
            assert!(bad.parse::<SizeArg>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn counts() {
        assert_eq!(parse_count("2000000"), Ok(2_000_000));
        assert_eq!(parse_count("2m"), Ok(2 << 20));
        assert_eq!(parse_count("1k"), Ok(1024));
        assert_eq!(parse_count("3G"), Ok(3 << 30));
        for bad in ["", "k", "-1", "1.5m", "2x", "99999999999999999999", "17179869184g"] {
            assert!(parse_count(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn resolve_percent() {
        assert_eq!(SizeArg::PercentOfRam(50).resolve(Some(16 << 30)), Ok(8 << 30));
        assert_eq!(SizeArg::PercentOfRam(100).resolve(Some(u64::MAX)), Ok(u64::MAX));
        assert_eq!(SizeArg::Bytes(7).resolve(None), Ok(7));
        assert!(SizeArg::PercentOfRam(50).resolve(None).is_err());
    }

    #[test]
    fn bytes_only() {
        assert_eq!(parse_bytes("64K"), Ok(65536));
        assert!(parse_bytes("10%").is_err());
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("1777"), Ok(0o1777));
        assert_eq!(parse_mode("0755"), Ok(0o755));
        assert_eq!(parse_mode("0o700"), Ok(0o700));
        assert_eq!(parse_mode("7777"), Ok(0o7777));
        assert_eq!(parse_mode("0"), Ok(0));
        for bad in ["", "8", "17777", "rwx", "0x755", "-1"] {
            assert!(parse_mode(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn formatting() {
        assert_eq!(format_bytes(8 << 30), "8 GiB");
        assert_eq!(format_bytes(512 << 20), "512 MiB");
        assert_eq!(format_bytes(1536 << 20), "1.5 GiB");
        assert_eq!(format_bytes(100), "100 B");
        assert_eq!(SizeArg::PercentOfRam(50).to_string(), "50%");
    }

    #[test]
    fn checks() {
        assert_eq!(check_sector_size(64 << 10), Ok(64 << 10));
        for bad in [0, 3 << 10, 2048, 2 << 20, 96 << 10] {
            assert!(check_sector_size(bad).is_err(), "{bad}");
        }
        assert_eq!(round_limit(1024, 64 << 10), 64 << 10);
        assert_eq!(round_limit(128 << 10, 64 << 10), 128 << 10);
        assert_eq!(round_limit(u64::MAX, 64 << 10), u64::MAX - ((64 << 10) - 1));
        assert_eq!(check_threads(4, 2, Some(1024)), Ok(4));
        assert!(check_threads(0, 2, None).unwrap_err().contains("at least one"));
        let e = check_threads(100_000, 2, Some(1 << 20)).unwrap_err();
        assert!(e.contains("at most 128") && e.contains("2 cores"), "{e}");
        let e = check_threads(100, 2, Some(100)).unwrap_err();
        assert!(e.contains("at most 36") && e.contains("open-file limit"), "{e}");
        let e = check_threads(1, 2, Some(64)).unwrap_err();
        assert!(e.contains("open-file limit (64) is too low") && e.contains("at least 65"), "{e}");
        assert_eq!(check_label("scratch, fast"), Ok(()));
        assert!(check_label("").is_err());
        assert!(check_label(&"a".repeat(256)).is_err());
        assert_eq!(check_label(&"a".repeat(255)), Ok(()));
        assert!(check_label("a\nb").is_err());
        assert_eq!(check_id("--uid", 1000), Ok(1000));
        assert!(check_id("--uid", u32::MAX).is_err());
        assert!(open_file_limit().is_some_and(|n| n > 0) || !cfg!(unix));
    }

    #[test]
    fn defaults() {
        assert_eq!(default_threads(1), 2);
        assert_eq!(default_threads(8), 8);
        assert_eq!(default_max_files(1 << 30, None), 262144);
        assert_eq!(default_max_files(1 << 20, None), 1024);
        // tmpfs's: half the pages of memory, for any smaller disk.
        assert_eq!(default_max_files(256 << 20, Some(24 << 30)), 3 << 20);
        assert_eq!(default_max_files(1 << 20, Some(24 << 30)), 3 << 20);
        // A disk larger than memory: one per 4 KiB of it.
        assert_eq!(default_max_files(64 << 30, Some(24 << 30)), 16 << 20);
        assert!(total_ram().is_some_and(|r| r > 0) || !cfg!(unix));
    }
}
