//! Requests served, by FUSE opcode: cheap enough to leave on (one relaxed
//! atomic add per request, against ~10 µs of transport per request), and
//! reported by `sectorfs stats` (`req_<opcode>` in `--json`), so that the
//! round trips a user operation costs can be counted on a live mount
//! (`docs/BENCHMARKS.md`, "Requests per operation").
//!
//! Requests the session layer answers itself (`INIT`, `DESTROY`,
//! `INTERRUPT`, and opcodes sectorfs does not serve) are not counted.

use std::sync::atomic::{AtomicU64, Ordering};

/// The opcodes sectorfs serves, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(windows, allow(dead_code))] // the Linux frontend counts
pub(crate) enum Op {
    Lookup,
    Forget,
    Getattr,
    Setattr,
    Readlink,
    Mknod,
    Mkdir,
    Unlink,
    Rmdir,
    Symlink,
    Rename,
    Link,
    Open,
    Read,
    Write,
    Flush,
    Release,
    Fsync,
    Opendir,
    Readdir,
    Readdirplus,
    Releasedir,
    Fsyncdir,
    Statfs,
    Setxattr,
    Getxattr,
    Listxattr,
    Removexattr,
    Access,
    Create,
    Fallocate,
    Lseek,
    CopyFileRange,
    BatchForget,
    Tmpfile,
    Statx,
    Syncfs,
    Ioctl,
}

/// Every [`Op`], in report order, with its name in `stats`.
pub(crate) const OPS: [(Op, &str); 38] = [
    (Op::Lookup, "lookup"),
    (Op::Forget, "forget"),
    (Op::Getattr, "getattr"),
    (Op::Setattr, "setattr"),
    (Op::Readlink, "readlink"),
    (Op::Mknod, "mknod"),
    (Op::Mkdir, "mkdir"),
    (Op::Unlink, "unlink"),
    (Op::Rmdir, "rmdir"),
    (Op::Symlink, "symlink"),
    (Op::Rename, "rename"),
    (Op::Link, "link"),
    (Op::Open, "open"),
    (Op::Read, "read"),
    (Op::Write, "write"),
    (Op::Flush, "flush"),
    (Op::Release, "release"),
    (Op::Fsync, "fsync"),
    (Op::Opendir, "opendir"),
    (Op::Readdir, "readdir"),
    (Op::Readdirplus, "readdirplus"),
    (Op::Releasedir, "releasedir"),
    (Op::Fsyncdir, "fsyncdir"),
    (Op::Statfs, "statfs"),
    (Op::Setxattr, "setxattr"),
    (Op::Getxattr, "getxattr"),
    (Op::Listxattr, "listxattr"),
    (Op::Removexattr, "removexattr"),
    (Op::Access, "access"),
    (Op::Create, "create"),
    (Op::Fallocate, "fallocate"),
    (Op::Lseek, "lseek"),
    (Op::CopyFileRange, "copy_file_range"),
    (Op::BatchForget, "batch_forget"),
    (Op::Tmpfile, "tmpfile"),
    (Op::Statx, "statx"),
    (Op::Syncfs, "syncfs"),
    (Op::Ioctl, "ioctl"),
];

/// One counter per [`Op`].
#[derive(Debug)]
pub(crate) struct Requests([AtomicU64; OPS.len()]);

impl Default for Requests {
    fn default() -> Requests {
        Requests(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl Requests {
    /// Counts one request of `op`.
    #[inline]
    #[cfg_attr(windows, allow(dead_code))]
    pub(crate) fn count(&self, op: Op) {
        // Relaxed: a statistic, read with no ordering against anything.
        self.0[op as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// `(name, count)` for every opcode, in [`OPS`] order.
    pub(crate) fn snapshot(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        OPS.iter().map(|&(op, name)| (name, self.0[op as usize].load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_table_matches_the_enum() {
        for (i, (op, _)) in OPS.iter().enumerate() {
            assert_eq!(*op as usize, i, "{op:?} out of order");
        }
    }

    #[test]
    fn counts() {
        let r = Requests::default();
        r.count(Op::Write);
        r.count(Op::Write);
        r.count(Op::Lookup);
        let s: Vec<_> = r.snapshot().collect();
        assert_eq!(s.len(), OPS.len());
        assert!(s.contains(&("write", 2)) && s.contains(&("lookup", 1)) && s.contains(&("create", 0)));
    }
}
