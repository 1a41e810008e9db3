//! The engine's one error type, and its two mappings: to a Linux errno and to
//! a Windows NTSTATUS. Both are exhaustive `match`es, so a new variant breaks
//! the build until both say what it means.

/// Everything an engine operation can fail with.
///
/// A failed operation changes nothing (the error is found before any mutation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Error {
    /// No such file, directory or inode (`ENOENT`).
    #[error("no such file or directory")]
    NotFound,
    /// The name already exists (`EEXIST`).
    #[error("file exists")]
    Exists,
    /// The directory is not empty (`ENOTEMPTY`).
    #[error("directory not empty")]
    NotEmpty,
    /// A directory was needed (`ENOTDIR`).
    #[error("not a directory")]
    NotDir,
    /// A non-directory was needed (`EISDIR`).
    #[error("is a directory")]
    IsDir,
    /// A name component is longer than 255 bytes (`ENAMETOOLONG`).
    #[error("name longer than 255 bytes")]
    NameTooLong,
    /// A name is empty, `.`/`..` where not allowed, or has `/` or NUL (`EINVAL`).
    #[error("invalid name (empty, '.', '..', or containing '/' or NUL)")]
    InvalidName,
    /// An argument is out of range or flags are unknown (`EINVAL`).
    #[error("invalid argument")]
    InvalidArgument,
    /// The memory limit would be passed (`ENOSPC`).
    #[error("no space left: the memory limit would be passed")]
    NoSpace,
    /// The inode limit would be passed (`ENOSPC`).
    #[error("no inodes left: the file count limit would be passed")]
    NoInodes,
    /// A directory would be moved below itself (`EINVAL`).
    #[error("a directory cannot be moved below itself")]
    WouldLoop,
    /// An offset or length overflows (`EOVERFLOW`).
    #[error("offset or length overflows")]
    Overflow,
    /// The file would pass the maximum file size (`EFBIG`).
    #[error("file too large")]
    FileTooBig,
    /// Too many hard links (`EMLINK`).
    #[error("too many links")]
    TooManyLinks,
    /// No such extended attribute (`ENODATA`).
    #[error("no such extended attribute")]
    NoData,
    /// The caller's buffer is too small (`ERANGE`).
    #[error("result larger than the buffer")]
    Range,
    /// An extended attribute value or name list is too large (`E2BIG`).
    #[error("extended attribute too large")]
    TooBig,
    /// Permission denied by mode bits (`EACCES`).
    #[error("permission denied")]
    Access,
    /// Operation not permitted for this caller (`EPERM`).
    #[error("operation not permitted")]
    Permission,
    /// Not supported by this file system or file type (`EOPNOTSUPP`).
    #[error("operation not supported")]
    NotSupported,
    /// The target is busy, e.g. renaming the root (`EBUSY`).
    #[error("resource busy")]
    Busy,
    /// A symlink target is empty (`EINVAL`).
    #[error("bad symlink target")]
    BadTarget,
    /// `SEEK_DATA`/`SEEK_HOLE` at or past the end of the file (`ENXIO`).
    #[error("offset at or past the end of the file")]
    NoSuchOffset,
    /// The request failed inside the engine (a bug: the request panicked);
    /// the file was left at its last published state (`EIO`).
    #[error("internal error: the request failed inside the file system and changed nothing")]
    Internal,
    /// The operating system refused memory for file data although the limit
    /// was not reached (`ENOMEM`); nothing was changed.
    #[error("out of memory: the system refused memory for file data")]
    OutOfMemory,
}

/// Linux errno values (platform-neutral constants, so the table is tested everywhere).
pub mod errno {
    #![allow(missing_docs)]
    pub const EPERM: i32 = 1;
    pub const ENOENT: i32 = 2;
    pub const EIO: i32 = 5;
    pub const E2BIG: i32 = 7;
    pub const EACCES: i32 = 13;
    pub const EBUSY: i32 = 16;
    pub const EEXIST: i32 = 17;
    pub const EXDEV: i32 = 18;
    pub const ENOTDIR: i32 = 20;
    pub const EISDIR: i32 = 21;
    pub const EINVAL: i32 = 22;
    pub const EFBIG: i32 = 27;
    pub const ENOSPC: i32 = 28;
    pub const EMLINK: i32 = 31;
    pub const ERANGE: i32 = 34;
    pub const ENAMETOOLONG: i32 = 36;
    pub const ENOSYS: i32 = 38;
    pub const ENOTEMPTY: i32 = 39;
    pub const ENODATA: i32 = 61;
    pub const EOVERFLOW: i32 = 75;
    pub const EOPNOTSUPP: i32 = 95;
    pub const ENXIO: i32 = 6;
    pub const ENOMEM: i32 = 12;
}

/// Windows NTSTATUS values (plain constants so the table is tested on Linux).
pub mod ntstatus {
    #![allow(missing_docs)]
    pub const STATUS_OBJECT_NAME_NOT_FOUND: i32 = 0xC000_0034_u32 as i32;
    pub const STATUS_OBJECT_NAME_COLLISION: i32 = 0xC000_0035_u32 as i32;
    pub const STATUS_DIRECTORY_NOT_EMPTY: i32 = 0xC000_0101_u32 as i32;
    pub const STATUS_NOT_A_DIRECTORY: i32 = 0xC000_0103_u32 as i32;
    pub const STATUS_FILE_IS_A_DIRECTORY: i32 = 0xC000_00BA_u32 as i32;
    pub const STATUS_NAME_TOO_LONG: i32 = 0xC000_0106_u32 as i32;
    pub const STATUS_OBJECT_NAME_INVALID: i32 = 0xC000_0033_u32 as i32;
    pub const STATUS_INVALID_PARAMETER: i32 = 0xC000_000D_u32 as i32;
    pub const STATUS_DISK_FULL: i32 = 0xC000_007F_u32 as i32;
    pub const STATUS_INTEGER_OVERFLOW: i32 = 0xC000_0095_u32 as i32;
    pub const STATUS_FILE_TOO_LARGE: i32 = 0xC000_0904_u32 as i32;
    pub const STATUS_TOO_MANY_LINKS: i32 = 0xC000_0265_u32 as i32;
    pub const STATUS_NONEXISTENT_EA_ENTRY: i32 = 0xC000_0051_u32 as i32;
    pub const STATUS_BUFFER_TOO_SMALL: i32 = 0xC000_0023_u32 as i32;
    pub const STATUS_EA_TOO_LARGE: i32 = 0xC000_0050_u32 as i32;
    pub const STATUS_ACCESS_DENIED: i32 = 0xC000_0022_u32 as i32;
    pub const STATUS_NOT_SUPPORTED: i32 = 0xC000_00BB_u32 as i32;
    pub const STATUS_DEVICE_BUSY: i32 = 0x8000_0011_u32 as i32;
    pub const STATUS_END_OF_FILE: i32 = 0xC000_0011_u32 as i32;
    pub const STATUS_INTERNAL_ERROR: i32 = 0xC000_00E5_u32 as i32;
    pub const STATUS_NO_MEMORY: i32 = 0xC000_0017_u32 as i32;
}

impl Error {
    /// The Linux errno for this error.
    pub fn errno(self) -> i32 {
        use errno::*;
        match self {
            Error::NotFound => ENOENT,
            Error::Exists => EEXIST,
            Error::NotEmpty => ENOTEMPTY,
            Error::NotDir => ENOTDIR,
            Error::IsDir => EISDIR,
            Error::NameTooLong => ENAMETOOLONG,
            Error::InvalidName => EINVAL,
            Error::InvalidArgument => EINVAL,
            Error::NoSpace => ENOSPC,
            Error::NoInodes => ENOSPC,
            Error::WouldLoop => EINVAL,
            Error::Overflow => EOVERFLOW,
            Error::FileTooBig => EFBIG,
            Error::TooManyLinks => EMLINK,
            Error::NoData => ENODATA,
            Error::Range => ERANGE,
            Error::TooBig => E2BIG,
            Error::Access => EACCES,
            Error::Permission => EPERM,
            Error::NotSupported => EOPNOTSUPP,
            Error::Busy => EBUSY,
            Error::BadTarget => EINVAL,
            Error::NoSuchOffset => ENXIO,
            Error::Internal => EIO,
            Error::OutOfMemory => ENOMEM,
        }
    }

    /// The Windows NTSTATUS for this error.
    pub fn ntstatus(self) -> i32 {
        use ntstatus::*;
        match self {
            Error::NotFound => STATUS_OBJECT_NAME_NOT_FOUND,
            Error::Exists => STATUS_OBJECT_NAME_COLLISION,
            Error::NotEmpty => STATUS_DIRECTORY_NOT_EMPTY,
            Error::NotDir => STATUS_NOT_A_DIRECTORY,
            Error::IsDir => STATUS_FILE_IS_A_DIRECTORY,
            Error::NameTooLong => STATUS_NAME_TOO_LONG,
            Error::InvalidName => STATUS_OBJECT_NAME_INVALID,
            Error::InvalidArgument => STATUS_INVALID_PARAMETER,
            Error::NoSpace => STATUS_DISK_FULL,
            Error::NoInodes => STATUS_DISK_FULL,
            Error::WouldLoop => STATUS_INVALID_PARAMETER,
            Error::Overflow => STATUS_INTEGER_OVERFLOW,
            Error::FileTooBig => STATUS_FILE_TOO_LARGE,
            Error::TooManyLinks => STATUS_TOO_MANY_LINKS,
            Error::NoData => STATUS_NONEXISTENT_EA_ENTRY,
            Error::Range => STATUS_BUFFER_TOO_SMALL,
            Error::TooBig => STATUS_EA_TOO_LARGE,
            Error::Access => STATUS_ACCESS_DENIED,
            Error::Permission => STATUS_ACCESS_DENIED,
            Error::NotSupported => STATUS_NOT_SUPPORTED,
            Error::Busy => STATUS_DEVICE_BUSY,
            Error::BadTarget => STATUS_INVALID_PARAMETER,
            Error::NoSuchOffset => STATUS_END_OF_FILE,
            Error::Internal => STATUS_INTERNAL_ERROR,
            Error::OutOfMemory => STATUS_NO_MEMORY,
        }
    }
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::errno::*;
    use super::ntstatus::*;
    use super::Error::{self, *};

    /// Every variant with its errno and NTSTATUS, written out independently
    /// of the two tables above.
    const TABLE: [(Error, i32, i32); 25] = [
        (NotFound, ENOENT, STATUS_OBJECT_NAME_NOT_FOUND),
        (Exists, EEXIST, STATUS_OBJECT_NAME_COLLISION),
        (NotEmpty, ENOTEMPTY, STATUS_DIRECTORY_NOT_EMPTY),
        (NotDir, ENOTDIR, STATUS_NOT_A_DIRECTORY),
        (IsDir, EISDIR, STATUS_FILE_IS_A_DIRECTORY),
        (NameTooLong, ENAMETOOLONG, STATUS_NAME_TOO_LONG),
        (InvalidName, EINVAL, STATUS_OBJECT_NAME_INVALID),
        (InvalidArgument, EINVAL, STATUS_INVALID_PARAMETER),
        (NoSpace, ENOSPC, STATUS_DISK_FULL),
        (NoInodes, ENOSPC, STATUS_DISK_FULL),
        (WouldLoop, EINVAL, STATUS_INVALID_PARAMETER),
        (Overflow, EOVERFLOW, STATUS_INTEGER_OVERFLOW),
        (FileTooBig, EFBIG, STATUS_FILE_TOO_LARGE),
        (TooManyLinks, EMLINK, STATUS_TOO_MANY_LINKS),
        (NoData, ENODATA, STATUS_NONEXISTENT_EA_ENTRY),
        (Range, ERANGE, STATUS_BUFFER_TOO_SMALL),
        (TooBig, E2BIG, STATUS_EA_TOO_LARGE),
        (Access, EACCES, STATUS_ACCESS_DENIED),
        (Permission, EPERM, STATUS_ACCESS_DENIED),
        (NotSupported, EOPNOTSUPP, STATUS_NOT_SUPPORTED),
        (Busy, EBUSY, STATUS_DEVICE_BUSY),
        (BadTarget, EINVAL, STATUS_INVALID_PARAMETER),
        (NoSuchOffset, ENXIO, STATUS_END_OF_FILE),
        (Internal, EIO, STATUS_INTERNAL_ERROR),
        (OutOfMemory, ENOMEM, STATUS_NO_MEMORY),
    ];

    /// The row of each variant: adding a variant breaks this match until the
    /// table has a row for it.
    fn row(e: Error) -> usize {
        match e {
            NotFound => 0,
            Exists => 1,
            NotEmpty => 2,
            NotDir => 3,
            IsDir => 4,
            NameTooLong => 5,
            InvalidName => 6,
            InvalidArgument => 7,
            NoSpace => 8,
            NoInodes => 9,
            WouldLoop => 10,
            Overflow => 11,
            FileTooBig => 12,
            TooManyLinks => 13,
            NoData => 14,
            Range => 15,
            TooBig => 16,
            Access => 17,
            Permission => 18,
            NotSupported => 19,
            Busy => 20,
            BadTarget => 21,
            NoSuchOffset => 22,
            Internal => 23,
            OutOfMemory => 24,
        }
    }

    #[test]
    fn every_variant_maps_to_its_errno_and_ntstatus() {
        for (i, (e, errno, status)) in TABLE.iter().enumerate() {
            assert_eq!(row(*e), i, "{e:?} listed once, in order");
            assert_eq!(e.errno(), *errno, "{e:?} errno");
            assert_eq!(e.ntstatus(), *status, "{e:?} NTSTATUS");
        }
    }

    #[test]
    fn constants_have_the_platform_values() {
        // Linux asm-generic/errno-base.h and errno.h.
        let linux = [
            (EPERM, 1),
            (ENOENT, 2),
            (EIO, 5),
            (ENXIO, 6),
            (ENOMEM, 12),
            (E2BIG, 7),
            (EACCES, 13),
            (EBUSY, 16),
            (EEXIST, 17),
            (EXDEV, 18),
            (ENOTDIR, 20),
            (EISDIR, 21),
            (EINVAL, 22),
            (EFBIG, 27),
            (ENOSPC, 28),
            (EMLINK, 31),
            (ERANGE, 34),
            (ENAMETOOLONG, 36),
            (ENOSYS, 38),
            (ENOTEMPTY, 39),
            (ENODATA, 61),
            (EOVERFLOW, 75),
            (EOPNOTSUPP, 95),
        ];
        for (c, v) in linux {
            assert_eq!(c, v);
        }
        // ntstatus.h: every error above is an error (severity 3) except
        // STATUS_DEVICE_BUSY, a warning (severity 2).
        for (_, _, s) in TABLE {
            let sev = (s as u32) >> 30;
            assert!(sev == 3 || s == STATUS_DEVICE_BUSY, "{s:#x}");
        }
        assert_eq!(STATUS_OBJECT_NAME_NOT_FOUND as u32, 0xC000_0034);
        assert_eq!(STATUS_DISK_FULL as u32, 0xC000_007F);
        assert_eq!(STATUS_END_OF_FILE as u32, 0xC000_0011);
        assert_eq!(STATUS_INTERNAL_ERROR as u32, 0xC000_00E5);
        assert_eq!(STATUS_NO_MEMORY as u32, 0xC000_0017);
    }

    #[test]
    fn display_is_human_readable() {
        for (e, _, _) in TABLE {
            let s = e.to_string();
            assert!(!s.is_empty() && s.is_ascii(), "{e:?}");
        }
        assert_eq!(NameTooLong.to_string(), "name longer than 255 bytes");
    }
}
