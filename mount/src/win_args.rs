//! `sectorfs mount` on Windows: the options (memfs/memefs spellings where
//! they have one), their checks and defaults. Platform-neutral, so the
//! Windows command line is tested on Linux; sizes and defaults come from
//! [`crate::cli`], shared with the Linux side.

use clap::Args;

use crate::cli::{self, SizeArg};

/// What memfs mounts with: SYSTEM, Administrators and Everyone have full
/// access; owner and group are the Administrators.
pub(crate) const DEFAULT_ROOT_SDDL: &str = "O:BAG:BAD:P(A;;FA;;;SY)(A;;FA;;;BA)(A;;FA;;;WD)";

/// `FileInfoTimeout` by default: metadata stays in WinFsp's caches for ~49
/// days (the mount is its only writer, and WinFsp drops what its own
/// requests change), while file data is not cached by Windows (only
/// `INFINITE` turns the cache manager on): each byte is held once.
pub(crate) const DEFAULT_FILE_INFO_TIMEOUT: u32 = u32::MAX - 1;

/// Options of `sectorfs mount` on Windows.
#[derive(Debug, Args)]
pub(crate) struct WinMountArgs {
    /// A drive letter (`X:`), `*` for the last free one, or a directory that
    /// does not exist yet (WinFsp creates it).
    #[arg(value_name = "MOUNTPOINT")]
    pub(crate) mountpoint: Option<String>,
    /// The mount point, memfs style (the same as MOUNTPOINT).
    #[arg(short = 'm', long = "mount-point", value_name = "MOUNTPOINT", conflicts_with = "mountpoint")]
    pub(crate) mount_point: Option<String>,
    /// Memory limit for file data: bytes with a unit (512M, 8G) or a share of RAM (50%).
    /// [default: 50%]
    #[arg(short = 's', long, value_name = "SIZE")]
    pub(crate) size: Option<SizeArg>,
    /// Most files and directories; also bounds their metadata at 1 KiB each.
    /// [default: one per 4 KiB of --size]
    #[arg(short = 'n', long, value_name = "N")]
    pub(crate) max_files: Option<u64>,
    /// Bytes per sector: a power of two from 4K to 1M.
    #[arg(long, value_name = "SIZE", default_value = "4K", value_parser = cli::parse_bytes)]
    pub(crate) sector_size: u64,
    /// WinFsp dispatcher threads. [default: WinFsp's choice, from the number of cores]
    #[arg(long, value_name = "N")]
    pub(crate) threads: Option<u32>,
    /// Case-insensitive, case-preserving names (as NTFS).
    #[arg(short = 'i', long)]
    pub(crate) case_insensitive: bool,
    /// Volume label (at most 32 characters).
    #[arg(short = 'l', long, value_name = "NAME", default_value = "sectorfs")]
    pub(crate) label: String,
    /// Serve as the network share \SERVER\SHARE (one or two leading backslashes);
    /// then MOUNTPOINT may be left out.
    #[arg(short = 'u', long = "unc-prefix", value_name = "\\SERVER\\SHARE")]
    pub(crate) unc_prefix: Option<String>,
    /// Security descriptor of the root directory, in SDDL (file rights such as FA, no generic rights).
    #[arg(short = 'S', long = "root-sddl", value_name = "SDDL", default_value = DEFAULT_ROOT_SDDL)]
    pub(crate) root_sddl: String,
    /// File system name that programs see (at most 15 characters; some want "NTFS").
    #[arg(short = 'F', long = "fs-name", value_name = "NAME", default_value = "sectorfs")]
    pub(crate) fs_name: String,
    /// How long WinFsp caches file information, in milliseconds, or `infinite`
    /// (also turns the Windows cache manager on: faster small I/O, but file
    /// data is then held twice, by the RAM disk and by the Windows cache).
    /// [default: ~49 days for metadata, no data cache]
    #[arg(short = 't', long = "file-info-timeout", value_name = "MS", value_parser = parse_timeout)]
    pub(crate) file_info_timeout: Option<u32>,
    /// Stay in the foreground (otherwise: return once the mount is ready).
    #[arg(short, long)]
    pub(crate) foreground: bool,
}

/// Where a volume is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MountTarget {
    /// A drive letter, upper case.
    Drive(char),
    /// The last free drive letter (`*`), chosen by WinFsp.
    NextFreeDrive,
    /// A directory path (WinFsp creates it).
    Dir(String),
    /// No mount point: only the UNC prefix serves it.
    None,
}

impl MountTarget {
    /// What to open to reach the mounted volume's root: `X:\`, the
    /// directory, or `\\server\share`.
    pub(crate) fn root_path(&self, unc: Option<&str>) -> Option<String> {
        match self {
            MountTarget::Drive(c) => Some(format!("{c}:\\")),
            MountTarget::Dir(d) => Some(d.clone()),
            MountTarget::NextFreeDrive | MountTarget::None => unc.map(|p| format!("\\{p}")),
        }
    }
}

/// Parses `X:`, `x`, `X:\`, `*` or a directory path.
pub(crate) fn parse_mount_target(s: &str) -> Result<MountTarget, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("the mount point is empty".into());
    }
    if t == "*" {
        return Ok(MountTarget::NextFreeDrive);
    }
    let b = t.as_bytes();
    let letter = b[0].is_ascii_alphabetic();
    if letter && (b.len() == 1 || (b.len() == 2 && b[1] == b':') || (b.len() == 3 && &b[1..] == b":\\")) {
        return Ok(MountTarget::Drive(char::from(b[0].to_ascii_uppercase())));
    }
    if b.len() > 1 && b[1] == b':' && (b.len() <= 3 || !letter) {
        return Err(format!("bad drive {t:?} (expected e.g. X:)"));
    }
    Ok(MountTarget::Dir(t.trim_end_matches(['\\', '/']).to_string()))
}

/// The last free drive letter from Z: down to D: in `GetLogicalDrives`'s
/// bit mask (bit 0 is A:), as WinFsp picks for `*`.
pub(crate) fn last_free_drive(used: u32) -> Option<char> {
    (3..26u8).rev().find(|&i| used & (1 << i) == 0).map(|i| char::from(b'A' + i))
}

/// Normalizes a UNC prefix to WinFsp's `\server\share` (one backslash).
pub(crate) fn parse_unc_prefix(s: &str) -> Result<String, String> {
    let t = s.trim().trim_start_matches('\\');
    let parts: Vec<&str> = t.split('\\').collect();
    if parts.len() < 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(format!("bad UNC prefix {s:?} (expected \\SERVER\\SHARE)"));
    }
    let p = format!("\\{t}");
    if p.encode_utf16().count() > 191 {
        return Err(format!("UNC prefix {s:?} is longer than 191 characters"));
    }
    Ok(p)
}

/// Parses a `FileInfoTimeout`: milliseconds, or `infinite` / `-1`.
pub(crate) fn parse_timeout(s: &str) -> Result<u32, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("infinite") || t == "-1" {
        return Ok(u32::MAX);
    }
    t.parse().map_err(|_| format!("bad timeout {s:?} (milliseconds, or infinite)"))
}

/// Everything `mount` needs, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WinSettings {
    pub(crate) target: MountTarget,
    pub(crate) unc_prefix: Option<String>,
    pub(crate) size: u64,
    pub(crate) max_files: u64,
    pub(crate) sector_size: u64,
    pub(crate) threads: u32,
    pub(crate) case_insensitive: bool,
    pub(crate) label: String,
    pub(crate) root_sddl: String,
    pub(crate) fs_name: String,
    pub(crate) file_info_timeout: u32,
}

impl WinMountArgs {
    /// Checks the options; `ram` is the machine's memory (for `50%`).
    pub(crate) fn settings(&self, ram: Option<u64>) -> Result<WinSettings, String> {
        let unc_prefix = self.unc_prefix.as_deref().filter(|p| !p.is_empty()).map(parse_unc_prefix).transpose()?;
        let target = match self.mountpoint.as_deref().or(self.mount_point.as_deref()) {
            Some(m) => parse_mount_target(m)?,
            None if unc_prefix.is_some() => MountTarget::None,
            None => return Err("give a mount point (X:, * or a directory), or a UNC prefix with -u".into()),
        };
        let sector_size = cli::check_sector_size(self.sector_size)?;
        let size = cli::round_limit(self.size.unwrap_or(cli::DEFAULT_SIZE).resolve(ram)?, sector_size as u64);
        let max_files = self.max_files.unwrap_or_else(|| cli::default_max_files(size, ram));
        if max_files == 0 {
            return Err("--max-files must be at least 1".into());
        }
        if self.label.encode_utf16().count() > 32 {
            return Err(format!("label {:?} is longer than 32 characters", self.label));
        }
        let n = self.fs_name.encode_utf16().count();
        if n == 0 || n > 15 {
            return Err(format!("file system name {:?}: 1 to 15 characters", self.fs_name));
        }
        if self.root_sddl.trim().is_empty() {
            return Err("--root-sddl is empty".into());
        }
        Ok(WinSettings {
            target,
            unc_prefix,
            size,
            max_files,
            sector_size: self.sector_size,
            threads: self.threads.unwrap_or(0),
            case_insensitive: self.case_insensitive,
            label: self.label.clone(),
            root_sddl: self.root_sddl.clone(),
            fs_name: self.fs_name.clone(),
            file_info_timeout: self.file_info_timeout.unwrap_or(DEFAULT_FILE_INFO_TIMEOUT),
        })
    }
}

/// The name of the event a mount waits on to unmount: one per mount point
/// in the session (`Local\`), created by the daemon, so that only its user
/// (and administrators) can open it: `sectorfs unmount` sets it.
pub(crate) fn unmount_event_name(target: &MountTarget, unc: Option<&str>) -> Result<String, String> {
    let key = match target {
        MountTarget::Drive(c) => format!("{c}:"),
        MountTarget::Dir(d) => d.to_uppercase(),
        MountTarget::None | MountTarget::NextFreeDrive => match unc {
            Some(p) => p.to_uppercase(),
            None => return Err("a mount on the next free drive is unmounted by its drive letter".into()),
        },
    };
    // Object names may not contain backslashes past the namespace.
    let key: String = key.chars().map(|c| if c == '\\' || c == '/' { '|' } else { c }).collect();
    Ok(format!("Local\\sectorfs-unmount-{key}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: WinMountArgs,
    }

    fn parse(args: &[&str]) -> Result<WinSettings, String> {
        let t = T::try_parse_from(std::iter::once("mount").chain(args.iter().copied())).map_err(|e| e.to_string())?;
        t.a.settings(Some(16 << 30))
    }

    #[test]
    fn memfs_spellings() {
        let s = parse(&[
            "-m",
            "R:",
            "-s",
            "2G",
            "-n",
            "5000",
            "-i",
            "-l",
            "RAM",
            "-u",
            "\\\\srv\\share",
            "-S",
            "O:BAG:BAD:(A;;FA;;;WD)",
            "-F",
            "NTFS",
            "-t",
            "1000",
            "-f",
        ])
        .unwrap();
        assert_eq!(s.target, MountTarget::Drive('R'));
        assert_eq!((s.size, s.max_files, s.case_insensitive), (2 << 30, 5000, true));
        assert_eq!((s.label.as_str(), s.fs_name.as_str()), ("RAM", "NTFS"));
        assert_eq!(s.unc_prefix.as_deref(), Some("\\srv\\share"));
        assert_eq!(s.root_sddl, "O:BAG:BAD:(A;;FA;;;WD)");
        assert_eq!(s.file_info_timeout, 1000);
        // memefs's -s takes plain bytes.
        assert_eq!(parse(&["X:", "-s", "1073741824"]).unwrap().size, 1 << 30);
    }

    #[test]
    fn long_options_and_defaults() {
        let s = parse(&["x", "--size", "25%", "--case-insensitive", "--label", "L", "--threads", "4"]).unwrap();
        assert_eq!(s.target, MountTarget::Drive('X'));
        assert_eq!((s.size, s.threads, s.label.as_str()), (4 << 30, 4, "L"));
        let d = parse(&["*"]).unwrap();
        assert_eq!(d.target, MountTarget::NextFreeDrive);
        assert_eq!(
            (d.size, d.max_files, d.sector_size),
            (8 << 30, (8 << 30) / 4096, engine::DEFAULT_SECTOR_SIZE as u64)
        );
        assert_eq!(
            (d.root_sddl.as_str(), d.fs_name.as_str(), d.label.as_str()),
            (DEFAULT_ROOT_SDDL, "sectorfs", "sectorfs")
        );
        assert_eq!(d.file_info_timeout, DEFAULT_FILE_INFO_TIMEOUT);
        assert_eq!(parse(&["X:", "-t", "infinite"]).unwrap().file_info_timeout, u32::MAX);
        let u = parse(&["-u", "\\srv\\s"]).unwrap();
        assert_eq!((u.target, u.unc_prefix.as_deref()), (MountTarget::None, Some("\\srv\\s")));
        assert_eq!(parse(&["C:\\mnt\\ram\\"]).unwrap().target, MountTarget::Dir("C:\\mnt\\ram".into()));
    }

    #[test]
    fn errors_are_clear() {
        for (args, want) in [
            (&[][..], "give a mount point"),
            (&["X:", "-m", "Y:"][..], "cannot be used with"),
            (&["X:", "--size", "lots"][..], "bad size"),
            (&["X:", "--sector-size", "3K"][..], "power of two"),
            (&["X:", "-n", "0"][..], "at least 1"),
            (&["X:", "-l", &"x".repeat(33)][..], "longer than 32"),
            (&["X:", "-F", "a-very-long-fs-name"][..], "1 to 15"),
            (&["X:", "-u", "\\srv"][..], "bad UNC prefix"),
            (&["X:", "-t", "soon"][..], "bad timeout"),
            (&["1:"][..], "bad drive"),
        ] {
            let e = parse(args).unwrap_err();
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }

    #[test]
    fn paths_and_event_names() {
        assert_eq!(MountTarget::Drive('X').root_path(None).as_deref(), Some("X:\\"));
        assert_eq!(MountTarget::None.root_path(Some("\\srv\\s")).as_deref(), Some("\\\\srv\\s"));
        assert_eq!(unmount_event_name(&MountTarget::Drive('R'), None).unwrap(), "Local\\sectorfs-unmount-R:");
        assert_eq!(
            unmount_event_name(&MountTarget::Dir("c:\\Mnt\\Ram".into()), None).unwrap(),
            "Local\\sectorfs-unmount-C:|MNT|RAM"
        );
        assert_eq!(unmount_event_name(&MountTarget::None, Some("\\srv\\s")).unwrap(), "Local\\sectorfs-unmount-|SRV|S");
        assert!(unmount_event_name(&MountTarget::NextFreeDrive, None).is_err());
        assert_eq!(last_free_drive(0), Some('Z'));
        assert_eq!(last_free_drive(1 << 25 | 1 << 24 | 0b100), Some('X'));
        assert_eq!(last_free_drive(!0b111), None);
    }
}
