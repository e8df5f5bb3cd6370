//! Durable write-then-rename: an interrupted save, a killed process or a
//! power loss never replaces a good file with part of a new one. The data
//! is fsynced before the rename and the directory after it, so the rename
//! itself survives a power loss too. Also the private scratch directories
//! (`mkdtemp`, 0700) that exports are written into.

use std::fs::File;
use std::io;
use std::path::Path;

/// Calls `write` on a fresh temporary path in `path`'s directory (unique
/// per call, so concurrent writers never share it), fsyncs what it wrote,
/// renames it over `path` and fsyncs the directory. On failure the
/// temporary file is removed and `path` is untouched. The file gets the
/// permissions `open(2)` would give a new file (0666 less the umask), not
/// a temporary file's private 0600, so that teammates on shared storage
/// can read checkpoints as they read everything else the user writes.
pub fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> io::Result<()>) -> io::Result<()> {
    let dir = parent(path);
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut builder = tempfile::Builder::new();
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let tmp = builder.prefix(&format!(".{name}.")).suffix(".tmp").tempfile_in(dir)?;
    write(tmp.path())?;
    // The writer may have written through its own handle (libtorch does), so sync by path.
    File::open(tmp.path())?.sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// [`write_atomically`] for in-memory contents.
pub fn write_bytes_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    write_atomically(path, |tmp| std::fs::write(tmp, contents))
}

/// A fresh directory under the temp dir with an unpredictable name (as
/// `mkdtemp`), readable by this user alone (0700), removed when dropped.
pub fn private_dir(prefix: &str) -> io::Result<tempfile::TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix);
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700));
    builder.tempdir()
}

/// Makes the entries of `dir` (creations, renames, removals) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Makes a file's contents durable.
pub fn sync_file(path: &Path) -> io::Result<()> {
    File::open(path)?.sync_all()
}

fn parent(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_write_keeps_the_old_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_bytes_atomically(&path, b"good").unwrap();
        let err = write_atomically(&path, |tmp| {
            std::fs::write(tmp, b"half")?;
            Err(io::Error::other("disk full"))
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"good");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn concurrent_writers_never_share_a_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.pt");
        std::thread::scope(|scope| {
            for i in 0..8u8 {
                let path = &path;
                scope.spawn(move || {
                    for _ in 0..50 {
                        write_atomically(path, |tmp| {
                            std::fs::write(tmp, vec![i; 4096])?;
                            std::thread::yield_now();
                            // Had another thread written the same temporary, this would fail.
                            assert_eq!(std::fs::read(tmp)?, vec![i; 4096]);
                            Ok(())
                        })
                        .unwrap();
                    }
                });
            }
        });
        let last = std::fs::read(&path).unwrap();
        assert!(last.len() == 4096 && last.iter().all(|&b| b == last[0]));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
