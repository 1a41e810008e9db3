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
        let shift = match unit {
            "" => 0,
            "K" => 10,
            "M" => 20,
            "G" => 30,
            "T" => 40,
            "P" => 50,
            _ => return Err(format!("bad size unit in {s:?} (use K, M, G, T or %)")),
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

/// Default inode limit for a given memory limit: one inode per 4 KiB of
/// limit (tmpfs's rule of thumb), at least 1024.
pub(crate) fn default_max_files(size: u64) -> u64 {
    (size / 4096).max(1024)
}

/// Default number of FUSE worker threads: the number of cores, at least 2.
#[cfg_attr(windows, allow(dead_code))] // a Linux option
pub(crate) fn default_threads(cores: usize) -> usize {
    cores.max(2)
}

/// Physical memory of this machine in bytes, if known.
pub(crate) fn total_ram() -> Option<u64> {
    #[cfg(unix)]
    {
        // SAFETY: `sysconf` only reads configuration values; it has no
        // preconditions and touches no memory of ours.
        let (pages, page) = unsafe { (libc::sysconf(libc::_SC_PHYS_PAGES), libc::sysconf(libc::_SC_PAGESIZE)) };
        if pages > 0 && page > 0 {
            return Some(pages as u64 * page as u64);
        }
    }
    #[cfg(windows)]
    let ram = crate::win_daemon::total_ram();
    #[cfg(not(windows))]
    let ram = None;
    ram
}

#[cfg(test)]
mod tests {
    use super::*;

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
        for bad in ["", "M", "0", "0G", "-1G", "1.5G", "12X", "0%", "101%", "x%", "99999999999999999999", "16777216T"] {
            assert!(bad.parse::<SizeArg>().is_err(), "{bad:?} should not parse");
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
    fn defaults() {
        assert_eq!(default_threads(1), 2);
        assert_eq!(default_threads(8), 8);
        assert_eq!(default_max_files(1 << 30), 262144);
        assert_eq!(default_max_files(1 << 20), 1024);
        assert!(total_ram().is_some_and(|r| r > 0) || !cfg!(unix));
    }
}
