//! `mount -t fuse.sectorfs` and `/etc/fstab`: the `mount.fuse3` helper
//! convention, translated to `sectorfs mount`.
//!
//! `mount -t fuse.sectorfs sectorfs /mnt/ram -o size=8G,mode=1777` (or the
//! fstab line `sectorfs /mnt/ram fuse.sectorfs size=8G,mode=1777 0 0`) makes
//! mount(8) run `mount.fuse3 sectorfs /mnt/ram -o rw,size=8G,mode=1777`,
//! which runs `sectorfs sectorfs /mnt/ram -o rw,size=8G,mode=1777,dev,suid`
//! through `sh -c` (the file system type after `fuse.` names the program,
//! found in `PATH`). [`helper_args`] turns that into the arguments of
//! `sectorfs mount`, so every value is checked by the same parser and a bad
//! one gets the same one-line error (exit status 2).
//!
//! Options, by tmpfs's names where tmpfs has one: `size=` (bytes with a
//! K/M/G/T suffix, or `N%` of RAM), `nr_inodes=` (a count with an optional
//! k/m/g suffix, powers of 1024 as tmpfs), `mode=`, `uid=`, `gid=`; and
//! sectorfs's own: `sector_size=`, `threads=`, `cache=`, `transport=`, `image=`, `label=` (also
//! FUSE's `fsname=`), `case_insensitive`, `allow_other`. The kernel's
//! `nosuid`, `nodev`, `noexec` and `ro` are passed to the mount, and
//! `relatime` (or `atime`), `noatime` and `strictatime` become `--atime`.
//! Options that change nothing here are accepted: `rw`, `suid`, `dev`,
//! `exec`, `async`, `nodiratime` (directory listings still update their
//! access time), `lazytime`, `default_permissions` (always on), `defaults`,
//! `auto`/`noauto`, `user`/`users`/`nouser`, `nofail`, `_netdev`, and
//! `x-*`/`comment=` (for systemd and fstab tools). Anything else is an
//! error naming the option.
//!
//! `mount -o remount,ro MOUNTPOINT` (and any `remount`) runs the helper with
//! `remount` among the options: [`remount`] then changes the kernel's flags
//! of the mount in place (`ro`/`rw`, `nosuid`, `nodev`, `noexec`, the access
//! time modes, `sync`, `dirsync`, `lazytime`, `nodiratime`), as the kernel
//! does for tmpfs. sectorfs's own options keep the values the disk was
//! mounted with (mount(8) passes fstab's along on a remount); a remount
//! that would change `size=` or another of them is not possible while the
//! disk is mounted, and they are ignored.

use std::ffi::OsString;

/// Whether `argv` (without the program name) is the helper form
/// `SOURCE MOUNTPOINT [-o OPTIONS]` or `MOUNTPOINT -o OPTIONS`, rather than
/// a `sectorfs` subcommand.
pub(crate) fn is_helper_form(args: &[OsString], subcommands: &[&str]) -> bool {
    let Some(first) = args.first().and_then(|a| a.to_str()) else {
        return false;
    };
    if first.starts_with('-') || subcommands.contains(&first) {
        return false;
    }
    // At least a mountpoint, or a source and a mountpoint.
    args.len() >= 2
}

/// The `sectorfs mount ...` arguments for a helper-form call (`args` without
/// the program name). Errors name the option.
pub(crate) fn helper_args(args: &[OsString]) -> Result<Vec<OsString>, String> {
    let Split { positional, opts, foreground } = split(args)?;
    let (source, mountpoint) = match positional.as_slice() {
        [mp] => (None, *mp),
        [src, mp] => (Some(*src), *mp),
        _ => return Err("expected SOURCE MOUNTPOINT [-o OPTIONS] (the mount.fuse3 convention)".into()),
    };
    let mut out: Vec<OsString> = vec!["mount".into(), mountpoint.clone()];
    // `--flag=value`, so that a value that starts with `-` (`size=-1`, a
    // source named `-h`) reaches the option's own check as a value.
    fn kv(flag: &str, value: impl std::fmt::Display) -> OsString {
        format!("{flag}={value}").into()
    }
    let mut label = None;
    let mut kernel: Vec<&str> = Vec::new();
    for opt in &last_of_each(&opts) {
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt.as_str(), None),
        };
        let need = || value.filter(|v| !v.is_empty()).ok_or_else(|| format!("option {key}= needs a value"));
        let flag = || match value {
            None => Ok(()),
            Some(_) => Err(format!("option {key} takes no value")),
        };
        match key {
            "size" => out.push(kv("--size", need()?)),
            "nr_inodes" => out.push(kv("--max-files", parse_count(need()?)?.to_string())),
            "mode" => out.push(kv("--mode", need()?)),
            "uid" => out.push(kv("--uid", need()?)),
            "gid" => out.push(kv("--gid", need()?)),
            "sector_size" => out.push(kv("--sector-size", need()?)),
            "threads" => out.push(kv("--threads", need()?)),
            "cache" => out.push(kv("--cache", need()?)),
            "transport" => out.push(kv("--transport", need()?)),
            "reserve" => out.push(kv("--reserve", need()?)),
            "image" => out.push(kv("--image", need()?)),
            "label" | "fsname" => label = Some(need()?.to_string()),
            "case_insensitive" => {
                flag()?;
                out.push("--case-insensitive".into());
            }
            "allow_other" => {
                flag()?;
                out.push("--allow-other".into());
            }
            "nosuid" | "suid" | "nodev" | "dev" | "noexec" | "exec" | "ro" | "rw" => {
                flag()?;
                kernel.push(key);
            }
            "atime" | "relatime" | "noatime" | "strictatime" => {
                flag()?;
                let mode = if key == "atime" { "relatime" } else { key };
                out.push(kv("--atime", mode));
            }
            "async" | "sync" | "nodiratime" | "diratime" | "lazytime" | "nolazytime" => flag()?,
            k if FOR_TOOLS.contains(&k) => flag()?,
            "comment" | "subtype" => {}
            k if k.starts_with("x-") => {}
            _ => return Err(format!("unknown mount option {opt:?} (see `sectorfs mount --help` and docs/GUIDE.md)")),
        }
    }
    // The source names the disk in `mount` and `df`, like a tmpfs's source,
    // unless a label says otherwise.
    if let Some(l) = label.or_else(|| source.and_then(|s| s.to_str()).map(str::to_string)) {
        out.push(kv("--label", l));
    }
    if !kernel.is_empty() {
        out.push(kv("--kernel-options", kernel.join(",")));
    }
    if foreground {
        out.push("--foreground".into());
    }
    Ok(out)
}

/// The helper form's arguments: the positional ones, the `-o` options (in
/// order, each list split at commas), and whether to stay in the
/// foreground.
struct Split<'a> {
    positional: Vec<&'a OsString>,
    opts: Vec<String>,
    foreground: bool,
}

fn split(args: &[OsString]) -> Result<Split<'_>, String> {
    let mut s = Split { positional: Vec::new(), opts: Vec::new(), foreground: false };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.to_str() {
            Some("-o") => {
                let o = it.next().ok_or("-o needs a list of options")?;
                let o = o.to_str().ok_or("mount options must be UTF-8")?;
                s.opts.extend(o.split(',').filter(|s| !s.is_empty()).map(str::to_string));
            }
            Some(o) if o.starts_with("-o") && o.len() > 2 => {
                s.opts.extend(o[2..].split(',').filter(|s| !s.is_empty()).map(str::to_string));
            }
            // Stay in the foreground (also how the background start re-runs
            // this command line for its daemon).
            Some("-f" | "--foreground") => s.foreground = true,
            // mount(8)'s verbose and no-mtab flags.
            Some("-v" | "-n") => {}
            Some(o) if o.starts_with('-') => return Err(format!("unknown argument {o:?}")),
            _ => s.positional.push(a),
        }
    }
    Ok(s)
}

/// Options for mount(8), fstab tools and FUSE that change nothing here.
const FOR_TOOLS: &[&str] = &[
    "default_permissions",
    "defaults",
    "auto",
    "noauto",
    "user",
    "users",
    "nouser",
    "nofail",
    "_netdev",
    "silent",
    "loud",
];

/// If the helper-form `args` ask for a remount (`remount` among the
/// options), the `mount(2)` flags to remount the mount point with, and
/// the mount point; `None` for a mount.
///
/// # Errors
/// An option that is neither a kernel flag nor one of sectorfs's (which a
/// remount ignores: they cannot change on a mounted disk), or bad
/// arguments.
#[cfg(target_os = "linux")]
pub(crate) fn remount_request(args: &[OsString]) -> Result<Option<(libc::c_ulong, OsString)>, String> {
    let Split { positional, opts, .. } = split(args)?;
    if !opts.iter().any(|o| o == "remount") {
        return Ok(None);
    }
    let mp = positional.last().ok_or("remount needs a mount point")?;
    let mut flags = libc::MS_REMOUNT;
    for opt in &last_of_each(&opts) {
        let key = opt.split_once('=').map_or(opt.as_str(), |(k, _)| k);
        flags |= match key {
            "ro" => libc::MS_RDONLY,
            "nosuid" => libc::MS_NOSUID,
            "nodev" => libc::MS_NODEV,
            "noexec" => libc::MS_NOEXEC,
            "noatime" => libc::MS_NOATIME,
            "strictatime" => libc::MS_STRICTATIME,
            "relatime" | "atime" => libc::MS_RELATIME,
            "nodiratime" => libc::MS_NODIRATIME,
            "sync" => libc::MS_SYNCHRONOUS,
            "dirsync" => libc::MS_DIRSYNC,
            "lazytime" => libc::MS_LAZYTIME,
            "remount" | "rw" | "suid" | "dev" | "exec" | "async" | "diratime" | "nolazytime" | "comment"
            | "subtype" => 0,
            k if FOR_TOOLS.contains(&k) => 0,
            // The FUSE mount's own, as /proc/mounts shows them (mount(8)
            // passes them along): fixed for the mount's life.
            "user_id" | "group_id" | "rootmode" | "max_read" | "blksize" | "fd" => 0,
            // sectorfs's own: they keep the values the disk was mounted with.
            "size" | "nr_inodes" | "mode" | "uid" | "gid" | "sector_size" | "threads" | "cache" | "transport"
            | "reserve" | "image" | "label" | "fsname" | "case_insensitive" | "allow_other" => 0,
            k if k.starts_with("x-") => 0,
            _ => return Err(format!("unknown mount option {opt:?} (see `sectorfs mount --help` and docs/GUIDE.md)")),
        };
    }
    Ok(Some((flags, (*mp).clone())))
}

/// Remounts `mp` with `flags` ([`remount_request`]): the kernel's flags of
/// the mount change in place; the disk and its daemon are untouched.
///
/// # Errors
/// The kernel's refusal (not a mount point, not permitted).
#[cfg(target_os = "linux")]
pub(crate) fn remount(flags: libc::c_ulong, mp: &std::ffi::OsStr) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(mp.as_bytes()).map_err(|_| "the mount point has a NUL byte")?;
    // SAFETY: NUL-terminated strings alive for the call; no data argument.
    let r = unsafe { libc::mount(c"sectorfs".as_ptr(), c.as_ptr(), std::ptr::null(), flags, std::ptr::null()) };
    if r != 0 {
        return Err(format!("cannot remount {}: {}", mp.to_string_lossy(), std::io::Error::last_os_error()));
    }
    Ok(())
}

/// The options with only the last of each repeated one kept, in order:
/// mount(8) and tmpfs take the last of `size=1G,size=2G` (fstab's options
/// and the command line's `-o` meet this way), and opposites such as
/// `noatime,strictatime` or `ro,rw` count as one option.
fn last_of_each(opts: &[String]) -> Vec<&String> {
    let key = |o: &str| -> String {
        let k = o.split_once('=').map_or(o, |(k, _)| k);
        match k {
            "atime" | "relatime" | "noatime" | "strictatime" => "atime",
            "label" | "fsname" => "label",
            "nosuid" => "suid",
            "nodev" => "dev",
            "noexec" => "exec",
            "ro" => "rw",
            k => k,
        }
        .to_string()
    };
    let mut seen = std::collections::HashSet::new();
    let mut kept: Vec<&String> = opts.iter().rev().filter(|o| seen.insert(key(o))).collect();
    kept.reverse();
    kept
}

/// A count with an optional `k`, `m` or `g` suffix (powers of 1024, as
/// tmpfs's `nr_inodes=`).
fn parse_count(s: &str) -> Result<u64, String> {
    crate::cli::parse_count(s).map_err(|e| format!("nr_inodes={s}: {e}"))
}

/// The kernel mount flags of `--kernel-options` (`[no]suid`, `[no]dev`,
/// `[no]exec`, `ro`/`rw`; the last of a pair wins). `None`: the default of
/// `sectorfs mount` (`nosuid`, `nodev`, `exec`, `rw`). `mount.fuse3` passes
/// `dev,suid` unless `nodev`/`nosuid` were given, as for any FUSE file
/// system mounted from fstab.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KernelOptions {
    pub(crate) suid: Option<bool>,
    pub(crate) dev: Option<bool>,
    pub(crate) exec: Option<bool>,
    pub(crate) ro: bool,
}

impl KernelOptions {
    /// The options as `mount(8)`/`fusermount3` spell them.
    pub(crate) fn words(&self) -> Vec<&'static str> {
        let mut w = vec![if self.ro { "ro" } else { "rw" }];
        let pick = |v: Option<bool>, yes: &'static str, no: &'static str| v.map(|on| if on { yes } else { no });
        w.extend(pick(self.suid, "suid", "nosuid"));
        w.extend(pick(self.dev, "dev", "nodev"));
        w.extend(pick(self.exec, "exec", "noexec"));
        w
    }
}

/// Parses `--kernel-options`.
pub(crate) fn parse_kernel_options(s: &str) -> Result<KernelOptions, String> {
    let mut k = KernelOptions::default();
    for o in s.split(',').filter(|o| !o.is_empty()) {
        match o {
            "suid" | "nosuid" => k.suid = Some(o == "suid"),
            "dev" | "nodev" => k.dev = Some(o == "dev"),
            "exec" | "noexec" => k.exec = Some(o == "exec"),
            "ro" | "rw" => k.ro = o == "ro",
            _ => return Err(format!("--kernel-options: unknown {o:?} ([no]suid, [no]dev, [no]exec, ro, rw)")),
        }
    }
    Ok(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    fn strs(v: Vec<OsString>) -> Vec<String> {
        v.into_iter().map(|s| s.into_string().unwrap()).collect()
    }

    const SUB: &[&str] = &["mount", "unmount", "umount", "stats", "help"];

    #[test]
    fn recognises_the_helper_form() {
        assert!(is_helper_form(&os(&["sectorfs", "/mnt/ram", "-o", "rw"]), SUB));
        assert!(is_helper_form(&os(&["/mnt/ram", "-o", "size=1G"]), SUB));
        assert!(!is_helper_form(&os(&["mount", "/mnt/ram"]), SUB));
        assert!(!is_helper_form(&os(&["stats", "/mnt/ram"]), SUB));
        assert!(!is_helper_form(&os(&["--help"]), SUB));
        assert!(!is_helper_form(&os(&["/mnt/ram"]), SUB));
        assert!(!is_helper_form(&os(&[]), SUB));
    }

    #[test]
    fn translates_tmpfs_and_own_options() {
        let got = strs(
            helper_args(&os(&[
                "ramdisk",
                "/mnt/ram",
                "-o",
                "rw,size=8G,nr_inodes=2m,mode=1777,uid=1000,gid=100,dev,suid,noatime,x-systemd.automount,cache=writethrough,transport=classic,sector_size=16K,threads=4,allow_other,case_insensitive",
            ]))
            .unwrap(),
        );
        assert_eq!(
            got,
            [
                "mount",
                "/mnt/ram",
                "--size=8G",
                "--max-files=2097152",
                "--mode=1777",
                "--uid=1000",
                "--gid=100",
                "--atime=noatime",
                "--cache=writethrough",
                "--transport=classic",
                "--sector-size=16K",
                "--threads=4",
                "--allow-other",
                "--case-insensitive",
                "--label=ramdisk",
                "--kernel-options=rw,dev,suid"
            ]
        );
    }

    /// The last of a repeated option wins, as for tmpfs (fstab's options
    /// and `mount -o` meet), opposites included.
    #[test]
    fn the_last_of_a_repeated_option_wins() {
        let got = strs(
            helper_args(&os(&["ram", "/m", "-o", "size=1G,noatime,nosuid,size=2G,strictatime,suid,label=a,fsname=b"]))
                .unwrap(),
        );
        assert_eq!(got, ["mount", "/m", "--size=2G", "--atime=strictatime", "--label=b", "--kernel-options=suid"]);
    }

    #[test]
    fn label_kernel_flags_and_no_source() {
        let got = strs(helper_args(&os(&["/mnt/ram", "-o", "nosuid,nodev,label=BUILD", "-v"])).unwrap());
        assert_eq!(got, ["mount", "/mnt/ram", "--label=BUILD", "--kernel-options=nosuid,nodev"]);
        let got = strs(helper_args(&os(&["src", "/m", "-osize=1G,fsname=x", "--foreground"])).unwrap());
        assert_eq!(got, ["mount", "/m", "--size=1G", "--label=x", "--foreground"]);
        let got = strs(helper_args(&os(&["src", "/m", "-o", "image=/var/lib/ram.img,nosuid"])).unwrap());
        assert_eq!(got, ["mount", "/m", "--image=/var/lib/ram.img", "--label=src", "--kernel-options=nosuid"]);
        assert!(helper_args(&os(&["s", "/m", "-o", "image="])).unwrap_err().contains("image="));
    }

    #[test]
    fn errors_name_the_option() {
        let e = helper_args(&os(&["s", "/m", "-o", "size=1G,bogus=3"])).unwrap_err();
        assert!(e.contains("bogus=3"), "{e}");
        assert!(helper_args(&os(&["s", "/m", "-o", "size="])).unwrap_err().contains("size="));
        assert!(helper_args(&os(&["s", "/m", "-o", "nosuid=1"])).unwrap_err().contains("no value"));
        assert!(helper_args(&os(&["s", "/m", "-o", "nr_inodes=lots"])).unwrap_err().contains("nr_inodes"));
        assert!(helper_args(&os(&["s", "/m", "/x", "-o", "rw"])).unwrap_err().contains("SOURCE MOUNTPOINT"));
        assert!(helper_args(&os(&["s", "/m", "-o"])).unwrap_err().contains("-o needs"));
        assert!(helper_args(&os(&["s", "/m", "--weird"])).unwrap_err().contains("--weird"));
    }

    #[test]
    fn counts_and_kernel_options() {
        assert_eq!(parse_count("2000"), Ok(2000));
        assert_eq!(parse_count("4k"), Ok(4096));
        assert_eq!(parse_count("1G"), Ok(1 << 30));
        assert!(parse_count("99999999999999g").is_err());
        let r = |a: &[&str]| remount_request(&os(a));
        assert_eq!(r(&["s", "/m", "-o", "rw,size=1G"]).unwrap(), None, "a mount, not a remount");
        let (flags, mp) = r(&["/m", "-o", "rw,remount,ro,nosuid,user_id=0,size=8G,relatime"]).unwrap().unwrap();
        assert_eq!(mp, "/m");
        assert_eq!(flags, libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_RELATIME);
        let (flags, _) = r(&["s", "/m", "-o", "remount,ro,rw"]).unwrap().unwrap();
        assert_eq!(flags, libc::MS_REMOUNT, "the last of ro and rw counts");
        assert!(r(&["/m", "-o", "remount,huge"]).unwrap_err().contains("huge"));
        let k = parse_kernel_options("nosuid,ro,dev,suid").unwrap();
        assert_eq!(k, KernelOptions { suid: Some(true), dev: Some(true), exec: None, ro: true });
        assert_eq!(k.words(), ["ro", "suid", "dev"]);
        assert_eq!(parse_kernel_options("").unwrap().words(), ["rw"]);
        assert!(parse_kernel_options("nosuid,huge").is_err());
    }
}
