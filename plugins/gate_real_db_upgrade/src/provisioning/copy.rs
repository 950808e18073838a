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
    copy_file(from, to, true)
}

/// Copies the directory tree `from` to the new directory `to`, file by file as
/// [`reflink_or_copy`] but without syncing (for throw-away copies: a crash loses nothing
/// anyone needs). Symbolic links and special files are left out. `Reflink` when every file
/// was reflinked.
///
/// # Errors
/// Reading, creating or writing failed (what was copied stays: the caller removes `to`).
pub fn copy_tree(from: &Path, to: &Path) -> io::Result<CopyKind> {
    fs::create_dir(to)?;
    let mut kind = CopyKind::Reflink;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let file_type = entry.file_type()?;
        let copied = if file_type.is_dir() {
            copy_tree(&source, &target)?
        } else if file_type.is_file() {
            copy_file(&source, &target, false)?
        } else {
            continue;
        };
        if copied == CopyKind::Plain {
            kind = CopyKind::Plain;
        }
    }
    Ok(kind)
}

fn copy_file(from: &Path, to: &Path, sync: bool) -> io::Result<CopyKind> {
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
    let copied =
        io::copy(&mut source, &mut target)
            .and_then(|_| if sync { target.sync_data() } else { Ok(()) });
    match copied {
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
