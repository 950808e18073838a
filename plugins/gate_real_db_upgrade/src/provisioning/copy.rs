//! A file copy that shares the blocks when the filesystem can (`ioctl(FICLONE)`: btrfs, XFS,
//! bcachefs, OCFS2): instant and free of extra space until the copy is written. Elsewhere
//! (ext4, tmpfs, across filesystems) a plain copy.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

/// `FICLONE` = `_IOW(0x94, 9, int)`.
const FICLONE: libc::c_ulong = 0x4004_9409;

/// How a copy was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyKind {
    /// Blocks shared (reflink).
    Reflink,
    /// Bytes copied.
    Plain,
}

impl CopyKind {
    /// `reflink` or `copy`.
    pub fn name(self) -> &'static str {
        match self {
            CopyKind::Reflink => "reflink",
            CopyKind::Plain => "copy",
        }
    }
}

/// Copies `from` to the new file `to` (mode 0644, which must not exist).
///
/// # Errors
/// Reading, creating or writing failed; a half-written `to` is removed.
pub fn reflink_or_copy(from: &Path, to: &Path) -> io::Result<CopyKind> {
    let mut source = File::open(from)?;
    let mut target = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(to)?;
    // SAFETY: both descriptors are open files owned by this function; FICLONE takes the
    // source descriptor as its argument and touches no memory of ours.
    let cloned = unsafe { libc::ioctl(target.as_raw_fd(), FICLONE as _, source.as_raw_fd()) };
    if cloned == 0 {
        return Ok(CopyKind::Reflink);
    }
    match io::copy(&mut source, &mut target).and_then(|_| target.sync_data()) {
        Ok(()) => Ok(CopyKind::Plain),
        Err(e) => {
            drop(target);
            let _ = fs::remove_file(to);
            Err(e)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn copies_a_read_only_file_into_a_writable_one() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("golden");
        fs::write(&from, b"seed bytes").unwrap();
        fs::set_permissions(&from, fs::Permissions::from_mode(0o444)).unwrap();
        let to = dir.path().join("run");
        reflink_or_copy(&from, &to).unwrap();
        assert_eq!(fs::read(&to).unwrap(), b"seed bytes");
        assert_eq!(
            fs::metadata(&to).unwrap().permissions().mode() & 0o777,
            0o644
        );
        // Writing the copy leaves the golden file as it was.
        fs::write(&to, b"changed").unwrap();
        assert_eq!(fs::read(&from).unwrap(), b"seed bytes");
        assert!(reflink_or_copy(&from, &to).is_err(), "never overwrites");
    }
}
