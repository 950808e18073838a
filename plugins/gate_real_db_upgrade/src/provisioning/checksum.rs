//! The seed's checksum (sha256 of the dump file), cached: a 1 GB dump takes seconds to hash,
//! and every run needs the checksum to find its golden copy.
//!
//! The cache is one small JSON file per seed path under `<state>/sums/` (named by a hash of
//! the path), holding the file's identity (device, inode, size, modification time in ns) and
//! its checksum. A file whose identity changed is hashed again; the new entry is written to a
//! temporary file and renamed, so concurrent jobs never read half an entry.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    path: PathBuf,
    identity: Identity,
    sha256: String,
}

fn identity(path: &Path) -> io::Result<Identity> {
    let meta = fs::metadata(path)?;
    Ok(Identity {
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.size(),
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
    })
}

/// Hex of the sha256 of `bytes`.
pub fn hex_sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The sha256 of the file's contents, hex.
///
/// # Errors
/// The file cannot be read.
pub fn hash_file(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// The sha256 of `path` (hex), from the cache in `cache_dir` when the file is unchanged.
/// A cache that cannot be read or written only costs the hashing.
///
/// # Errors
/// The file cannot be read.
pub fn seed_checksum(path: &Path, cache_dir: &Path) -> io::Result<String> {
    let before = identity(path)?;
    let key = hex_sha256(path.as_os_str().as_encoded_bytes());
    let entry_path = cache_dir.join(format!("{}.json", &key[..32]));
    let cached = fs::read(&entry_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Entry>(&bytes).ok())
        .filter(|e| e.path == path && e.identity == before);
    if let Some(entry) = cached {
        return Ok(entry.sha256);
    }
    let sha256 = hash_file(path)?;
    // Changed while we read it: do not cache a checksum of a mix.
    if identity(path)? != before {
        return Ok(sha256);
    }
    let entry = Entry {
        path: path.to_path_buf(),
        identity: before,
        sha256: sha256.clone(),
    };
    if let Err(e) = write_entry(&entry_path, &entry) {
        tracing::warn!("cannot cache the checksum in {}: {e}", entry_path.display());
    }
    Ok(sha256)
}

fn write_entry(path: &Path, entry: &Entry) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    let json = serde_json::to_vec(entry).map_err(io::Error::other)?;
    fs::write(&tmp, json)?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cached_until_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let seed = dir.path().join("seed.sql");
        let cache = dir.path().join("sums");
        fs::write(&seed, "abc").unwrap();
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(seed_checksum(&seed, &cache).unwrap(), abc);
        assert_eq!(fs::read_dir(&cache).unwrap().count(), 1);
        // The cache answers: a forged entry for the same identity is believed.
        let entry_path = fs::read_dir(&cache)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let forged = fs::read_to_string(&entry_path)
            .unwrap()
            .replace(abc, "forged");
        fs::write(&entry_path, forged).unwrap();
        assert_eq!(seed_checksum(&seed, &cache).unwrap(), "forged");
        // A changed file (new size and time) is hashed again.
        fs::write(&seed, "abcd").unwrap();
        assert_eq!(seed_checksum(&seed, &cache).unwrap(), hex_sha256(b"abcd"));
        assert!(seed_checksum(&dir.path().join("missing"), &cache).is_err());
    }
}
