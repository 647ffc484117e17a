//! Deterministic tar writing: ustar headers with mtime 0, uid/gid 0, no user or
//! group names, fixed modes, entries in the order given (callers sort).

use std::io::{self, Write};

use tar::{EntryType, Header};

/// Mode of regular files.
pub(crate) const FILE_MODE: u32 = 0o644;
/// Mode of directories.
pub(crate) const DIR_MODE: u32 = 0o755;

/// A tar stream whose bytes depend only on the entries appended.
pub(crate) struct TarWriter<W: Write> {
    inner: tar::Builder<W>,
}

impl<W: Write> TarWriter<W> {
    pub(crate) fn new(w: W) -> Self {
        Self {
            inner: tar::Builder::new(w),
        }
    }

    /// A directory entry; `path` ends with `/`.
    pub(crate) fn dir(&mut self, path: &str) -> io::Result<()> {
        let mut header = header(EntryType::Directory, DIR_MODE, 0);
        self.inner.append_data(&mut header, path, io::empty())
    }

    /// A regular file.
    pub(crate) fn file(&mut self, path: &str, data: &[u8]) -> io::Result<()> {
        let mut header = header(EntryType::Regular, FILE_MODE, data.len() as u64);
        self.inner.append_data(&mut header, path, data)
    }

    /// Writes the end-of-archive blocks and returns the writer.
    pub(crate) fn finish(self) -> io::Result<W> {
        self.inner.into_inner()
    }
}

fn header(kind: EntryType, mode: u32, size: u64) -> Header {
    let mut h = Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(size);
    h
}
