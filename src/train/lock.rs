//! One process per run: a lock file in the run directory, held (an
//! advisory `flock`) for as long as a trainer lives. The kernel releases it
//! when the process ends, however it ends, so a killed run never leaves a
//! stale lock behind.

use super::error::{Result, TrainError};
use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside a run directory; it holds the owner's pid.
pub const LOCK_FILE: &str = "lock";

#[derive(Debug)]
pub struct RunLock {
    _file: File,
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock of `run_dir`, or fails naming the process that holds it.
    pub fn acquire(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join(LOCK_FILE);
        let io_error = |source| TrainError::Lock { path: path.clone(), source };
        let mut file =
            File::options().read(true).write(true).create(true).truncate(false).open(&path).map_err(io_error)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(TrainError::RunInUse { run: run_dir.to_path_buf(), pid: holder.trim().to_string() });
            }
            Err(TryLockError::Error(e)) => return Err(io_error(e)),
        }
        file.set_len(0).and_then(|()| file.rewind()).map_err(io_error)?;
        write!(file, "{}", std::process::id()).and_then(|()| file.flush()).map_err(io_error)?;
        Ok(Self { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).unwrap();
        let err = RunLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&format!("in use by process {}", std::process::id())), "{err}");
        drop(first);
        RunLock::acquire(dir.path()).unwrap();
    }
}
