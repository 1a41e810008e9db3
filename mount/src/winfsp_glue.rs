//! Windows: the `winfsp` crate's `FileSystemContext`, each method one call
//! into [`WinFs`] (`winfsp_logic`, where every decision is made and tested).
//! This file converts types, copies bytes, and hands winfsp an explicit
//! NTSTATUS for every failure (never an `io::ErrorKind`, which winfsp-rs
//! turns into `STATUS_UNEXPECTED_IO_ERROR` for kinds it does not know).
//!
//! Only a Windows machine with WinFsp exercises this file (the Linux CI
//! type-checks it with `.ci/windows-check`); its `unsafe` blocks copy between
//! WinFsp's buffers and ours and call WinFsp's security helper.

use std::ffi::{c_void, OsString};
use std::os::windows::ffi::OsStringExt;

use winfsp::filesystem::{
    DirMarker, FileInfo as FspFileInfo, FileSecurity, FileSystemContext, ModificationDescriptor, OpenFileInfo,
    VolumeInfo as FspVolumeInfo,
};
use winfsp::{FspError, U16CStr};
use winfsp_sys::{FILE_ACCESS_RIGHTS, FILE_FLAGS_AND_ATTRIBUTES};

use crate::winfsp_logic::{ByName, FileInfo, Handle, NtStatus, VolumeInfo, WinFs};

/// `STATUS_BUFFER_OVERFLOW`.
const STATUS_BUFFER_OVERFLOW: NtStatus = 0x8000_0005_u32 as i32;
/// `STATUS_OBJECT_PATH_NOT_FOUND`.
const STATUS_OBJECT_PATH_NOT_FOUND: NtStatus = 0xC000_003A_u32 as i32;

/// The file system WinFsp's dispatcher threads call.
pub(crate) struct Glue {
    pub(crate) fs: WinFs,
}

fn err(s: NtStatus) -> FspError {
    FspError::NTSTATUS(s)
}

fn fill(out: &mut FspFileInfo, i: &FileInfo) {
    out.file_attributes = i.file_attributes;
    out.reparse_tag = i.reparse_tag;
    out.allocation_size = i.allocation_size;
    out.file_size = i.file_size;
    out.creation_time = i.creation_time;
    out.last_access_time = i.last_access_time;
    out.last_write_time = i.last_write_time;
    out.change_time = i.change_time;
    out.index_number = i.index_number;
    out.hard_links = i.hard_links;
    out.ea_size = i.ea_size;
}

fn fill_volume(out: &mut FspVolumeInfo, v: &VolumeInfo) {
    out.total_size = v.total_size;
    out.free_size = v.free_size;
    out.set_volume_label(OsString::from_wide(&v.label));
}

/// Copies `src` into a WinFsp security descriptor buffer.
fn copy_to_void(dst: &mut [c_void], src: &[u8]) -> Result<(), FspError> {
    if src.len() > dst.len() {
        return Err(err(STATUS_BUFFER_OVERFLOW));
    }
    // SAFETY: 1. `dst` is WinFsp's buffer of `dst.len()` bytes (`c_void` has
    // size 1, and winfsp-rs builds the slice from the buffer's byte size), so
    // `src.len() <= dst.len()` bytes are writable there. 2. `src` is our own
    // slice and cannot overlap WinFsp's buffer.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst.as_mut_ptr().cast::<u8>(), src.len()) };
    Ok(())
}

/// The bytes of a security descriptor WinFsp passes in.
fn void_bytes(sd: &[c_void]) -> &[u8] {
    // SAFETY: `c_void` has size 1 and winfsp-rs builds the slice from the
    // descriptor's length (`GetSecurityDescriptorLength`), so it covers
    // exactly that many initialized bytes, for the lifetime of `sd`.
    unsafe { std::slice::from_raw_parts(sd.as_ptr().cast::<u8>(), sd.len()) }
}

/// The resume cookie in a `read_directory` marker. The volume has
/// `DirectoryMarkerAsNextOffset`, so WinFsp's marker is the 8-byte
/// `NextOffset` of the last entry it received (plus a terminating NUL),
/// which winfsp-rs hands over as a wide string.
fn marker_offset(marker: &DirMarker<'_>) -> Option<u64> {
    let m = marker.inner_as_cstr()?;
    // SAFETY: with DirectoryMarkerAsNextOffset the FSD sends a marker of
    // exactly 8 bytes followed by a 2-byte NUL (winfsp src/sys/dirctl.c:
    // Marker.Size = Length + sizeof(WCHAR)), so 8 bytes are readable at the
    // marker's address, which need not be 8-aligned (hence read_unaligned).
    Some(unsafe { std::ptr::read_unaligned(m.as_ptr().cast::<u64>()) })
}

impl FileSystemContext for Glue {
    type FileContext = Handle;

    fn get_security_by_name(
        &self,
        file_name: &U16CStr,
        security_descriptor: Option<&mut [c_void]>,
        reparse_point_resolver: impl FnOnce(&U16CStr) -> Option<FileSecurity>,
    ) -> winfsp::Result<FileSecurity> {
        let want = security_descriptor.is_some();
        match self.fs.get_security_by_name(file_name.as_slice(), want).map_err(err)? {
            ByName::ReparseInPath => reparse_point_resolver(file_name).ok_or(err(STATUS_OBJECT_PATH_NOT_FOUND)),
            ByName::Found { attributes, security } => {
                let sd = security.unwrap_or_default();
                if let Some(buf) = security_descriptor {
                    copy_to_void(buf, &sd)?;
                }
                Ok(FileSecurity { reparse: false, sz_security_descriptor: sd.len() as u64, attributes })
            }
        }
    }

    fn open(
        &self,
        file_name: &U16CStr,
        create_options: u32,
        _granted_access: FILE_ACCESS_RIGHTS,
        file_info: &mut OpenFileInfo,
    ) -> winfsp::Result<Handle> {
        let o = self.fs.open(file_name.as_slice(), create_options).map_err(err)?;
        fill(file_info.as_mut(), &o.info);
        Ok(o.handle)
    }

    fn close(&self, context: Handle) {
        self.fs.close(context);
    }

    fn create(
        &self,
        file_name: &U16CStr,
        create_options: u32,
        _granted_access: FILE_ACCESS_RIGHTS,
        file_attributes: FILE_FLAGS_AND_ATTRIBUTES,
        security_descriptor: Option<&[c_void]>,
        allocation_size: u64,
        extra_buffer: Option<&[u8]>,
        extra_buffer_is_reparse_point: bool,
        file_info: &mut OpenFileInfo,
    ) -> winfsp::Result<Handle> {
        let o = self
            .fs
            .create(
                file_name.as_slice(),
                create_options,
                file_attributes,
                security_descriptor.map(void_bytes),
                allocation_size,
                extra_buffer,
                extra_buffer_is_reparse_point,
            )
            .map_err(err)?;
        fill(file_info.as_mut(), &o.info);
        Ok(o.handle)
    }

    fn cleanup(&self, context: &Handle, file_name: Option<&U16CStr>, flags: u32) {
        self.fs.cleanup(context, file_name.map(U16CStr::as_slice), flags);
    }

    fn flush(&self, context: Option<&Handle>, file_info: &mut FspFileInfo) -> winfsp::Result<()> {
        if let Some(i) = self.fs.flush(context).map_err(err)? {
            fill(file_info, &i);
        }
        Ok(())
    }

    fn get_file_info(&self, context: &Handle, file_info: &mut FspFileInfo) -> winfsp::Result<()> {
        fill(file_info, &self.fs.get_file_info(context).map_err(err)?);
        Ok(())
    }

    fn get_security(&self, context: &Handle, security_descriptor: Option<&mut [c_void]>) -> winfsp::Result<u64> {
        let sd = self.fs.get_security(context).map_err(err)?;
        if let Some(buf) = security_descriptor {
            copy_to_void(buf, &sd)?;
        }
        Ok(sd.len() as u64)
    }

    fn set_security(
        &self,
        context: &Handle,
        security_information: u32,
        modification_descriptor: ModificationDescriptor,
    ) -> winfsp::Result<()> {
        let cur = self.fs.get_security(context).map_err(err)?;
        let new = crate::win_daemon::modify_security(&cur, security_information, modification_descriptor.as_mut_ptr())
            .map_err(err)?;
        self.fs.store_security(context, &new).map_err(err)
    }

    fn overwrite(
        &self,
        context: &Handle,
        file_attributes: FILE_FLAGS_AND_ATTRIBUTES,
        replace_file_attributes: bool,
        allocation_size: u64,
        _extra_buffer: Option<&[u8]>,
        file_info: &mut FspFileInfo,
    ) -> winfsp::Result<()> {
        let i = self.fs.overwrite(context, file_attributes, replace_file_attributes, allocation_size).map_err(err)?;
        fill(file_info, &i);
        Ok(())
    }

    fn read_directory(
        &self,
        context: &Handle,
        _pattern: Option<&U16CStr>,
        marker: DirMarker<'_>,
        buffer: &mut [u8],
    ) -> winfsp::Result<u32> {
        self.fs.read_directory(context, marker_offset(&marker), buffer).map_err(err)
    }

    fn rename(
        &self,
        context: &Handle,
        file_name: &U16CStr,
        new_file_name: &U16CStr,
        replace_if_exists: bool,
    ) -> winfsp::Result<()> {
        self.fs.rename(context, file_name.as_slice(), new_file_name.as_slice(), replace_if_exists).map_err(err)
    }

    fn set_basic_info(
        &self,
        context: &Handle,
        file_attributes: u32,
        creation_time: u64,
        last_access_time: u64,
        last_write_time: u64,
        last_change_time: u64,
        file_info: &mut FspFileInfo,
    ) -> winfsp::Result<()> {
        let i = self
            .fs
            .set_basic_info(
                context,
                file_attributes,
                creation_time,
                last_access_time,
                last_write_time,
                last_change_time,
            )
            .map_err(err)?;
        fill(file_info, &i);
        Ok(())
    }

    fn set_delete(&self, context: &Handle, _file_name: &U16CStr, delete_file: bool) -> winfsp::Result<()> {
        self.fs.set_delete(context, delete_file).map_err(err)
    }

    fn set_file_size(
        &self,
        context: &Handle,
        new_size: u64,
        set_allocation_size: bool,
        file_info: &mut FspFileInfo,
    ) -> winfsp::Result<()> {
        fill(file_info, &self.fs.set_file_size(context, new_size, set_allocation_size).map_err(err)?);
        Ok(())
    }

    fn read(&self, context: &Handle, buffer: &mut [u8], offset: u64) -> winfsp::Result<u32> {
        self.fs.read(context, offset, buffer).map_err(err)
    }

    fn write(
        &self,
        context: &Handle,
        buffer: &[u8],
        offset: u64,
        write_to_eof: bool,
        constrained_io: bool,
        file_info: &mut FspFileInfo,
    ) -> winfsp::Result<u32> {
        let (n, i) = self.fs.write(context, buffer, offset, write_to_eof, constrained_io).map_err(err)?;
        fill(file_info, &i);
        Ok(n)
    }

    fn get_volume_info(&self, out_volume_info: &mut FspVolumeInfo) -> winfsp::Result<()> {
        fill_volume(out_volume_info, &self.fs.volume_info());
        Ok(())
    }

    fn set_volume_label(&self, volume_label: &U16CStr, volume_info: &mut FspVolumeInfo) -> winfsp::Result<()> {
        fill_volume(volume_info, &self.fs.set_volume_label(volume_label.as_slice()));
        Ok(())
    }

    fn get_reparse_point_by_name(
        &self,
        file_name: &U16CStr,
        _is_directory: bool,
        buffer: &mut [u8],
    ) -> winfsp::Result<u64> {
        Ok(self.fs.get_reparse_point_by_name(file_name.as_slice(), buffer).map_err(err)? as u64)
    }

    fn get_reparse_point(&self, context: &Handle, _file_name: &U16CStr, buffer: &mut [u8]) -> winfsp::Result<u64> {
        Ok(self.fs.get_reparse_point(context, buffer).map_err(err)? as u64)
    }

    fn set_reparse_point(&self, context: &Handle, _file_name: &U16CStr, buffer: &[u8]) -> winfsp::Result<()> {
        self.fs.set_reparse_point(context, buffer).map_err(err)
    }

    fn delete_reparse_point(&self, context: &Handle, _file_name: &U16CStr, buffer: &[u8]) -> winfsp::Result<()> {
        self.fs.delete_reparse_point(context, buffer).map_err(err)
    }

    fn control(&self, _context: &Handle, control_code: u32, _input: &[u8], output: &mut [u8]) -> winfsp::Result<u32> {
        self.fs.control(control_code, output).map_err(err)
    }
}
