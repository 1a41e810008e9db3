//! Byte layouts WinFsp exchanges with a file system, built and checked here
//! so that the glue only copies bytes: `FSP_FSCTL_FILE_INFO`,
//! `FSP_FSCTL_DIR_INFO` (the `read_directory` buffer), Windows `FILETIME`s,
//! self-relative security descriptors and reparse data buffers.

use engine::Time;

use super::nt::{self, NtStatus};

/// `FSP_FSCTL_FILE_INFO` (fsctl.h), field for field; the glue copies it into
/// `winfsp::filesystem::FileInfo`, which has the same fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct FileInfo {
    pub(crate) file_attributes: u32,
    pub(crate) reparse_tag: u32,
    pub(crate) allocation_size: u64,
    pub(crate) file_size: u64,
    pub(crate) creation_time: u64,
    pub(crate) last_access_time: u64,
    pub(crate) last_write_time: u64,
    pub(crate) change_time: u64,
    pub(crate) index_number: u64,
    pub(crate) hard_links: u32,
    pub(crate) ea_size: u32,
}

/// `sizeof(FSP_FSCTL_FILE_INFO)`.
pub(crate) const FILE_INFO_SIZE: usize = 72;
/// `sizeof(FSP_FSCTL_DIR_INFO)` without the name (static-asserted in fsctl.h).
pub(crate) const DIR_INFO_SIZE: usize = 104;
/// `FSP_FSCTL_DEFAULT_ALIGNMENT`: each entry starts on an 8-byte boundary.
const ALIGN: usize = 8;

impl FileInfo {
    /// The little-endian `FSP_FSCTL_FILE_INFO` bytes.
    pub(crate) fn to_bytes(self) -> [u8; FILE_INFO_SIZE] {
        let mut b = [0u8; FILE_INFO_SIZE];
        b[0..4].copy_from_slice(&self.file_attributes.to_le_bytes());
        b[4..8].copy_from_slice(&self.reparse_tag.to_le_bytes());
        let wide = [
            self.allocation_size,
            self.file_size,
            self.creation_time,
            self.last_access_time,
            self.last_write_time,
            self.change_time,
            self.index_number,
        ];
        for (i, v) in wide.iter().enumerate() {
            b[8 + 8 * i..16 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        b[64..68].copy_from_slice(&self.hard_links.to_le_bytes());
        b[68..72].copy_from_slice(&self.ea_size.to_le_bytes());
        b
    }
}

/// 100-ns intervals between 1601-01-01 (the `FILETIME` epoch) and 1970-01-01.
const EPOCH_DIFF_SECS: i64 = 11_644_473_600;

/// A Windows `FILETIME` (100 ns units since 1601) for `t`; 0 before 1601.
pub(crate) fn filetime(t: Time) -> u64 {
    let secs = t.secs.saturating_add(EPOCH_DIFF_SECS);
    if secs < 0 {
        return 0;
    }
    (secs as u64).saturating_mul(10_000_000).saturating_add(u64::from(t.nanos / 100))
}

/// The time of a `FILETIME`.
pub(crate) fn from_filetime(ft: u64) -> Time {
    let secs = (ft / 10_000_000) as i64 - EPOCH_DIFF_SECS;
    Time { secs, nanos: (ft % 10_000_000) as u32 * 100 }
}

/// Appends `FSP_FSCTL_DIR_INFO` entries to a `read_directory` buffer, as
/// `FspFileSystemAddDirInfo` does: each entry is its 104-byte header and the
/// UTF-16 name, padded to 8 bytes; the end of the listing is a zero `Size`.
pub(crate) struct DirBuf<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> DirBuf<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> DirBuf<'a> {
        DirBuf { buf, len: 0 }
    }

    /// Bytes written so far (what `read_directory` returns).
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Adds one entry; `false` (and nothing written) if it does not fit.
    /// `next_offset` is the marker WinFsp hands back to continue after this
    /// entry (the volume has `DirectoryMarkerAsNextOffset`).
    pub(crate) fn push(&mut self, name: &[u16], info: &FileInfo, next_offset: u64) -> bool {
        let size = DIR_INFO_SIZE + 2 * name.len();
        let Ok(size16) = u16::try_from(size) else { return false };
        let padded = size.next_multiple_of(ALIGN);
        if self.buf.len() - self.len < padded {
            return false;
        }
        let e = &mut self.buf[self.len..self.len + padded];
        e.fill(0);
        e[0..2].copy_from_slice(&size16.to_le_bytes());
        e[8..8 + FILE_INFO_SIZE].copy_from_slice(&info.to_bytes());
        e[80..88].copy_from_slice(&next_offset.to_le_bytes());
        for (i, c) in name.iter().enumerate() {
            e[DIR_INFO_SIZE + 2 * i..DIR_INFO_SIZE + 2 * i + 2].copy_from_slice(&c.to_le_bytes());
        }
        self.len += padded;
        true
    }

    /// Marks the end of the listing (if it fits; else WinFsp asks again).
    pub(crate) fn finish(&mut self) {
        if self.buf.len() - self.len >= 2 {
            self.buf[self.len..self.len + 2].fill(0);
            self.len += 2;
        }
    }
}

/// One entry decoded from a `read_directory` buffer (for tests).
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DirEntryBytes {
    pub(crate) name: String,
    pub(crate) attributes: u32,
    pub(crate) file_size: u64,
    pub(crate) index_number: u64,
    pub(crate) next_offset: u64,
}

/// Decodes a `read_directory` buffer: its entries and whether it ended with
/// the end-of-listing mark.
#[cfg(test)]
pub(crate) fn decode_dir(buf: &[u8]) -> (Vec<DirEntryBytes>, bool) {
    let u16_at = |o: usize| u16::from_le_bytes([buf[o], buf[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(buf[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(buf[o..o + 8].try_into().unwrap());
    let mut out = Vec::new();
    let mut o = 0;
    while o + 2 <= buf.len() {
        let size = usize::from(u16_at(o));
        if size == 0 {
            return (out, true);
        }
        assert!(size >= DIR_INFO_SIZE && o + size <= buf.len(), "entry at {o} of size {size}");
        let name: Vec<u16> = (0..(size - DIR_INFO_SIZE) / 2).map(|i| u16_at(o + DIR_INFO_SIZE + 2 * i)).collect();
        out.push(DirEntryBytes {
            name: String::from_utf16(&name).unwrap(),
            attributes: u32_at(o + 8),
            file_size: u64_at(o + 8 + 16),
            index_number: u64_at(o + 8 + 56),
            next_offset: u64_at(o + 80),
        });
        o += size.next_multiple_of(ALIGN);
    }
    (out, false)
}

/// `SECURITY_DESCRIPTOR_RELATIVE` (winnt.h): revision, sbz1, control,
/// then the offsets of owner, group, SACL and DACL.
const SD_HEADER: usize = 20;
/// `SE_SELF_RELATIVE` in the control word.
const SE_SELF_RELATIVE: u16 = 0x8000;

/// Checks that `sd` is a self-relative security descriptor whose parts lie
/// inside it (the kernel and WinFsp only hand those over; this guards what
/// is stored against truncation). Returns its length.
///
/// # Errors
/// `STATUS_INVALID_SECURITY_DESCR`.
pub(crate) fn check_security_descriptor(sd: &[u8]) -> Result<usize, NtStatus> {
    let bad = Err(nt::STATUS_INVALID_SECURITY_DESCR);
    if sd.len() < SD_HEADER || sd[0] != 1 {
        return bad;
    }
    let control = u16::from_le_bytes([sd[2], sd[3]]);
    if control & SE_SELF_RELATIVE == 0 {
        return bad;
    }
    for i in 0..4 {
        let off = u32::from_le_bytes(sd[4 + 4 * i..8 + 4 * i].try_into().unwrap_or([0xff; 4])) as usize;
        // A SID is at least 8 bytes, an ACL header 8 bytes.
        if off != 0 && (off < SD_HEADER || off.checked_add(8).is_none_or(|end| end > sd.len())) {
            return bad;
        }
    }
    Ok(sd.len())
}

/// The tag of a reparse data buffer.
///
/// # Errors
/// `STATUS_IO_REPARSE_DATA_INVALID` if it is shorter than its header, longer
/// than 16 KiB, or its length field disagrees with its size.
pub(crate) fn reparse_tag(data: &[u8]) -> Result<u32, NtStatus> {
    let bad = Err(nt::STATUS_IO_REPARSE_DATA_INVALID);
    if data.len() < nt::reparse::HEADER || data.len() > nt::reparse::MAX {
        return bad;
    }
    let tag = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
    let len = usize::from(u16::from_le_bytes([data[4], data[5]]));
    let header = if nt::reparse::is_microsoft(tag) { nt::reparse::HEADER } else { nt::reparse::GUID_HEADER };
    if data.len() < header || header + len != data.len() {
        return bad;
    }
    Ok(tag)
}

/// `FspFileSystemCanReplaceReparsePoint`: a reparse point may be replaced or
/// deleted only by data with the same tag (and, for non-Microsoft tags, the
/// same GUID).
///
/// # Errors
/// `STATUS_IO_REPARSE_TAG_MISMATCH`, `STATUS_REPARSE_ATTRIBUTE_CONFLICT`,
/// `STATUS_IO_REPARSE_DATA_INVALID`.
pub(crate) fn can_replace_reparse(current: &[u8], new: &[u8]) -> Result<(), NtStatus> {
    if current.len() < 4 || new.len() < 4 {
        return Err(nt::STATUS_IO_REPARSE_DATA_INVALID);
    }
    if current[..4] != new[..4] {
        return Err(nt::STATUS_IO_REPARSE_TAG_MISMATCH);
    }
    let tag = u32::from_le_bytes([current[0], current[1], current[2], current[3]]);
    if !nt::reparse::is_microsoft(tag) {
        let g = nt::reparse::GUID_HEADER;
        if current.len() < g || new.len() < g || current[8..g] != new[8..g] {
            return Err(nt::STATUS_REPARSE_ATTRIBUTE_CONFLICT);
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn filetimes() {
        assert_eq!(filetime(Time { secs: 0, nanos: 0 }), 116_444_736_000_000_000);
        let t = Time { secs: 1_700_000_000, nanos: 123_456_700 };
        assert_eq!(from_filetime(filetime(t)), t);
        assert_eq!(filetime(Time { secs: -EPOCH_DIFF_SECS - 1, nanos: 0 }), 0);
        assert_eq!(from_filetime(0), Time { secs: -EPOCH_DIFF_SECS, nanos: 0 });
        // Sub-100 ns precision is dropped, as NTFS does.
        assert_eq!(from_filetime(filetime(Time { secs: 5, nanos: 199 })), Time { secs: 5, nanos: 100 });
    }

    #[test]
    fn file_info_layout() {
        let fi = FileInfo {
            file_attributes: 0x20,
            reparse_tag: 7,
            allocation_size: 4096,
            file_size: 5,
            creation_time: 1,
            last_access_time: 2,
            last_write_time: 3,
            change_time: 4,
            index_number: 9,
            hard_links: 0,
            ea_size: 0,
        };
        let b = fi.to_bytes();
        assert_eq!(&b[0..4], &[0x20, 0, 0, 0]);
        assert_eq!(u64::from_le_bytes(b[8..16].try_into().unwrap()), 4096);
        assert_eq!(u64::from_le_bytes(b[16..24].try_into().unwrap()), 5);
        assert_eq!(u64::from_le_bytes(b[56..64].try_into().unwrap()), 9, "IndexNumber at 56");
    }

    #[test]
    fn dir_buffer_entries_align_and_end() {
        let name: Vec<u16> = "a.txt".encode_utf16().collect();
        let fi = FileInfo { file_size: 3, index_number: 42, ..FileInfo::default() };
        let mut raw = vec![0xAAu8; 256];
        let mut d = DirBuf::new(&mut raw);
        assert!(d.push(&name, &fi, 17));
        assert_eq!(d.len(), 120, "104 + 10 bytes, padded to 8");
        assert!(d.push(&name, &fi, 18));
        assert_eq!(d.len(), 240);
        assert!(!d.push(&name, &fi, 19), "does not fit in the 16 bytes left");
        d.finish();
        let n = d.len();
        assert_eq!(n, 242);
        let (entries, ended) = decode_dir(&raw[..n]);
        assert!(ended);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].name, "a.txt");
        assert_eq!((entries[0].file_size, entries[0].index_number, entries[0].next_offset), (3, 42, 17));
        assert_eq!(entries[1].next_offset, 18);
        // A full buffer gets no end mark.
        let mut raw = vec![0u8; 121];
        let mut d = DirBuf::new(&mut raw);
        assert!(d.push(&name, &fi, 1));
        d.finish();
        assert_eq!(d.len(), 120);
    }

    /// `O:BAG:BAD:(A;;FA;;;WD)` as `ConvertStringSecurityDescriptorToSecurityDescriptorW`
    /// makes it: self-relative, owner and group BUILTIN\Administrators, a DACL
    /// giving Everyone full access.
    pub(crate) fn sample_sd() -> Vec<u8> {
        let admins: [u8; 16] = [1, 2, 0, 0, 0, 0, 0, 5, 32, 0, 0, 0, 0x20, 2, 0, 0];
        let everyone: [u8; 12] = [1, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0];
        let ace_len = 8 + everyone.len();
        let acl_len = 8 + ace_len;
        let mut sd = vec![1, 0, 0x04, 0x80]; // revision 1, SE_DACL_PRESENT | SE_SELF_RELATIVE
        let owner = 20u32;
        let group = owner + 16;
        let dacl = group + 16;
        for off in [owner, group, 0, dacl] {
            sd.extend_from_slice(&off.to_le_bytes());
        }
        sd.extend_from_slice(&admins);
        sd.extend_from_slice(&admins);
        sd.extend_from_slice(&[2, 0]);
        sd.extend_from_slice(&(acl_len as u16).to_le_bytes());
        sd.extend_from_slice(&[1, 0, 0, 0]);
        sd.extend_from_slice(&[0, 0]); // ACCESS_ALLOWED_ACE_TYPE, no flags
        sd.extend_from_slice(&(ace_len as u16).to_le_bytes());
        sd.extend_from_slice(&0x001F_01FFu32.to_le_bytes()); // FILE_ALL_ACCESS
        sd.extend_from_slice(&everyone);
        sd
    }

    #[test]
    fn security_descriptors() {
        let sd = sample_sd();
        assert_eq!(check_security_descriptor(&sd), Ok(sd.len()));
        assert!(check_security_descriptor(&sd[..19]).is_err());
        assert!(check_security_descriptor(&sd[..40]).is_err(), "DACL past the end");
        let mut absolute = sd.clone();
        absolute[3] = 0;
        assert!(check_security_descriptor(&absolute).is_err(), "not self-relative");
        let mut rev = sd;
        rev[0] = 2;
        assert!(check_security_descriptor(&rev).is_err());
    }

    /// A symlink `REPARSE_DATA_BUFFER` to `target` (relative).
    pub(crate) fn symlink_reparse(target: &str) -> Vec<u8> {
        let t: Vec<u8> = target.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let n = t.len() as u16;
        let mut body = Vec::new();
        for v in [0, n, n, n] {
            body.extend_from_slice(&v.to_le_bytes()); // substitute off/len, print off/len
        }
        body.extend_from_slice(&1u32.to_le_bytes()); // SYMLINK_FLAG_RELATIVE
        body.extend_from_slice(&t);
        body.extend_from_slice(&t);
        let mut d = nt::reparse::TAG_SYMLINK.to_le_bytes().to_vec();
        d.extend_from_slice(&(body.len() as u16).to_le_bytes());
        d.extend_from_slice(&[0, 0]);
        d.extend_from_slice(&body);
        d
    }

    #[test]
    fn reparse_buffers() {
        let s = symlink_reparse("target");
        assert_eq!(reparse_tag(&s), Ok(nt::reparse::TAG_SYMLINK));
        assert!(reparse_tag(&s[..s.len() - 1]).is_err(), "length field disagrees");
        assert!(reparse_tag(&s[..4]).is_err());
        let j = {
            let mut j = s.clone();
            j[..4].copy_from_slice(&nt::reparse::TAG_MOUNT_POINT.to_le_bytes());
            j
        };
        assert_eq!(can_replace_reparse(&s, &symlink_reparse("other")), Ok(()));
        assert_eq!(can_replace_reparse(&s, &j), Err(nt::STATUS_IO_REPARSE_TAG_MISMATCH));
        // A third-party tag: the GUID must match too.
        let mut g1 = 0x0000_1234u32.to_le_bytes().to_vec();
        g1.extend_from_slice(&[0, 0, 0, 0]);
        g1.extend_from_slice(&[1; 16]);
        let mut g2 = g1.clone();
        g2[8] = 2;
        assert_eq!(reparse_tag(&g1), Ok(0x1234));
        assert_eq!(can_replace_reparse(&g1, &g1), Ok(()));
        assert_eq!(can_replace_reparse(&g1, &g2), Err(nt::STATUS_REPARSE_ATTRIBUTE_CONFLICT));
    }
}
