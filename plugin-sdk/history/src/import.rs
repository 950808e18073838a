//! What `import-logs` reads: the `.log` files under the directories (or the files) given, and
//! the fingerprint that recognises a file imported before (the SHA-256 of its content, so a
//! copied or renamed log is not counted twice).

use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// The `.log` files under `paths` (a file given by name is taken whatever its name), sorted
/// within each directory; what could not be listed, with why.
pub fn log_files(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<(PathBuf, String)>) {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        match std::fs::metadata(path) {
            Ok(m) if m.is_dir() => walk(path, &mut files, &mut problems),
            Ok(_) => files.push(path.clone()),
            Err(e) => problems.push((path.clone(), e.to_string())),
        }
    }
    (files, problems)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>, problems: &mut Vec<(PathBuf, String)>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            problems.push((dir.to_path_buf(), e.to_string()));
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            walk(&path, files, problems);
        } else if path.extension().is_some_and(|e| e == "log") {
            files.push(path);
        }
    }
}

/// The hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The dataset an original log belongs to: the original named each dataset's log
/// `<dataset>.log`.
pub fn dataset_of(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn logs_are_found_and_fingerprinted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/b.log"), "x").unwrap();
        std::fs::write(dir.path().join("a.log"), "x").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        let missing = dir.path().join("missing");
        let (files, problems) = log_files(&[dir.path().to_path_buf(), missing.clone()]);
        assert_eq!(
            files,
            vec![dir.path().join("a.log"), dir.path().join("sub/b.log")]
        );
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, missing);
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(dataset_of(Path::new("/x/user_001.log")), "user_001");
    }
}
