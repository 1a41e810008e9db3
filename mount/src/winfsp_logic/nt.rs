//! Windows constants the translation needs, as plain numbers (from the
//! Windows SDK's `ntstatus.h`, `winnt.h`, `winioctl.h` and WinFsp's
//! `winfsp.h`), so that the code using them is tested on Linux.
//! `engine::ntstatus` has the codes of engine errors; these are the others.
#![allow(dead_code)] // a table: not every constant is used on every platform

/// An NTSTATUS value.
pub(crate) type NtStatus = i32;

const fn st(v: u32) -> NtStatus {
    v as i32
}

pub(crate) use engine::ntstatus::*;

pub(crate) const STATUS_SUCCESS: NtStatus = 0;
/// Informational: the name has a reparse point to follow.
pub(crate) const STATUS_REPARSE: NtStatus = st(0x0000_0104);
/// Warning: the buffer was too small for the whole result.
pub(crate) const STATUS_BUFFER_OVERFLOW: NtStatus = st(0x8000_0005);
pub(crate) const STATUS_INVALID_DEVICE_REQUEST: NtStatus = st(0xC000_0010);
pub(crate) const STATUS_OBJECT_PATH_NOT_FOUND: NtStatus = st(0xC000_003A);
pub(crate) const STATUS_EAS_NOT_SUPPORTED: NtStatus = st(0xC000_004F);
pub(crate) const STATUS_DELETE_PENDING: NtStatus = st(0xC000_0056);
pub(crate) const STATUS_INVALID_SECURITY_DESCR: NtStatus = st(0xC000_0079);
pub(crate) const STATUS_INSUFFICIENT_RESOURCES: NtStatus = st(0xC000_009A);
pub(crate) const STATUS_CANNOT_DELETE: NtStatus = st(0xC000_0121);
pub(crate) const STATUS_NOT_A_REPARSE_POINT: NtStatus = st(0xC000_0275);
pub(crate) const STATUS_IO_REPARSE_TAG_MISMATCH: NtStatus = st(0xC000_0277);
pub(crate) const STATUS_IO_REPARSE_DATA_INVALID: NtStatus = st(0xC000_0278);
pub(crate) const STATUS_REPARSE_ATTRIBUTE_CONFLICT: NtStatus = st(0xC000_02B2);

/// `FILE_ATTRIBUTE_*` (winnt.h).
pub(crate) mod attr {
    pub(crate) const READONLY: u32 = 0x1;
    pub(crate) const HIDDEN: u32 = 0x2;
    pub(crate) const SYSTEM: u32 = 0x4;
    pub(crate) const DIRECTORY: u32 = 0x10;
    pub(crate) const ARCHIVE: u32 = 0x20;
    pub(crate) const NORMAL: u32 = 0x80;
    pub(crate) const TEMPORARY: u32 = 0x100;
    pub(crate) const SPARSE_FILE: u32 = 0x200;
    pub(crate) const REPARSE_POINT: u32 = 0x400;
    pub(crate) const COMPRESSED: u32 = 0x800;
    pub(crate) const OFFLINE: u32 = 0x1000;
    pub(crate) const NOT_CONTENT_INDEXED: u32 = 0x2000;
    pub(crate) const ENCRYPTED: u32 = 0x4000;
    pub(crate) const NO_SCRUB_DATA: u32 = 0x2_0000;
    pub(crate) const PINNED: u32 = 0x8_0000;
    pub(crate) const UNPINNED: u32 = 0x10_0000;
    /// `INVALID_FILE_ATTRIBUTES`: "leave the attributes as they are".
    pub(crate) const INVALID: u32 = u32::MAX;
    /// What `SetFileAttributes`/create may set. Directory and reparse-point
    /// bits follow the node; compression, encryption and sparseness are not
    /// features of this file system (NTFS ignores them there too).
    pub(crate) const SETTABLE: u32 = READONLY
        | HIDDEN
        | SYSTEM
        | ARCHIVE
        | TEMPORARY
        | OFFLINE
        | NOT_CONTENT_INDEXED
        | NO_SCRUB_DATA
        | PINNED
        | UNPINNED;
}

/// `CreateOptions` bits (wdm.h) and the disposition in their top byte.
pub(crate) mod create {
    pub(crate) const FILE_DIRECTORY_FILE: u32 = 0x0000_0001;
    pub(crate) const FILE_WRITE_THROUGH: u32 = 0x0000_0002;
    pub(crate) const FILE_NON_DIRECTORY_FILE: u32 = 0x0000_0040;
    pub(crate) const FILE_DELETE_ON_CLOSE: u32 = 0x0000_1000;
    pub(crate) const FILE_OPEN_REPARSE_POINT: u32 = 0x0020_0000;
    pub(crate) const FILE_SUPERSEDE: u32 = 0;
    pub(crate) const FILE_OPEN: u32 = 1;
    pub(crate) const FILE_CREATE: u32 = 2;
    pub(crate) const FILE_OPEN_IF: u32 = 3;
    pub(crate) const FILE_OVERWRITE: u32 = 4;
    pub(crate) const FILE_OVERWRITE_IF: u32 = 5;
    /// The disposition of `create_options`.
    pub(crate) const fn disposition(create_options: u32) -> u32 {
        create_options >> 24
    }
}

/// `FspCleanup*` flags of WinFsp's Cleanup (winfsp.h).
pub(crate) mod cleanup {
    pub(crate) const DELETE: u32 = 0x01;
    pub(crate) const SET_ALLOCATION_SIZE: u32 = 0x02;
    pub(crate) const SET_ARCHIVE_BIT: u32 = 0x10;
    pub(crate) const SET_LAST_ACCESS_TIME: u32 = 0x20;
    pub(crate) const SET_LAST_WRITE_TIME: u32 = 0x40;
    pub(crate) const SET_CHANGE_TIME: u32 = 0x80;
}

/// Reparse tags (winnt.h).
pub(crate) mod reparse {
    pub(crate) const TAG_MOUNT_POINT: u32 = 0xA000_0003;
    pub(crate) const TAG_SYMLINK: u32 = 0xA000_000C;
    /// `IsReparseTagMicrosoft`.
    pub(crate) const fn is_microsoft(tag: u32) -> bool {
        tag & 0x8000_0000 != 0
    }
    /// `REPARSE_DATA_BUFFER_HEADER_SIZE`: tag, length, reserved.
    pub(crate) const HEADER: usize = 8;
    /// `REPARSE_GUID_DATA_BUFFER_HEADER_SIZE`: the header plus a GUID.
    pub(crate) const GUID_HEADER: usize = 24;
    /// `MAXIMUM_REPARSE_DATA_BUFFER_SIZE`.
    pub(crate) const MAX: usize = 16 * 1024;
}

/// `CTL_CODE(DeviceType, Function, Method, Access)` (winioctl.h).
pub(crate) const fn ctl_code(device: u32, function: u32, method: u32, access: u32) -> u32 {
    (device << 16) | (access << 14) | (function << 2) | method
}

/// `sectorfs stats X:`: the daemon answers this `DeviceIoControl` on any
/// handle of the mount with the stats JSON. WinFsp forwards only custom
/// device types (bit 0x8000) with `METHOD_BUFFERED`.
pub(crate) const IOCTL_SECTORFS_STATS: u32 = ctl_code(0x8000 + b'S' as u32, 0x801, 0, 0);

/// Largest `DeviceIoControl` buffer WinFsp forwards (`FSP_FSCTL_DEVICECONTROL_SIZEMAX`).
pub(crate) const DEVICECONTROL_SIZEMAX: usize = 4 * 1024;

/// `INFINITE` for `FileInfoTimeout`: turns on the Windows cache manager.
pub(crate) const TIMEOUT_INFINITE: u32 = u32::MAX;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_match_the_sdk() {
        // ntstatus.h
        assert_eq!(STATUS_OBJECT_PATH_NOT_FOUND as u32, 0xC000_003A);
        assert_eq!(STATUS_BUFFER_OVERFLOW as u32, 0x8000_0005);
        assert_eq!(STATUS_REPARSE, 0x104);
        assert_eq!(STATUS_CANNOT_DELETE as u32, 0xC000_0121);
        // winioctl.h: CTL_CODE(FILE_DEVICE_FILE_SYSTEM, 42, METHOD_BUFFERED, FILE_ANY_ACCESS)
        // is FSCTL_GET_REPARSE_POINT, 0x000900A8.
        assert_eq!(ctl_code(9, 42, 0, 0), 0x0009_00A8);
        assert_eq!(IOCTL_SECTORFS_STATS >> 16, 0x8053);
        assert_eq!(IOCTL_SECTORFS_STATS & 3, 0, "METHOD_BUFFERED");
        assert_eq!(create::disposition(create::FILE_OPEN_IF << 24 | create::FILE_DIRECTORY_FILE), 3);
        assert!(reparse::is_microsoft(reparse::TAG_SYMLINK) && !reparse::is_microsoft(0x1234));
    }
}
