//! fsync of sled's own files after each sled flush.
//!
//! Why: on Linux, sled 0.34.7 makes a flush "durable" with
//! `sync_file_range(2)` (`pagecache/iobuf.rs`), which writes the data pages
//! but neither the file's metadata (the size and block allocation of a file
//! that grew, as sled's log file does) nor the disk's cache: after a power
//! cut such a write may be gone (the man page says as much). Found by the
//! `orrery-faultfs` power-loss test (`tests/power_loss.rs`): every node lost
//! its votes and refused to start. A plain `fsync` of sled's files after
//! its flush closes the gap; flushes are rare (votes, purges, snapshots),
//! the write-ahead log carries the log entries.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// sled's directory, whose files are fsynced after each flush.
#[derive(Clone, Debug)]
pub struct SledFiles {
    dir: PathBuf,
}

impl SledFiles {
    pub fn new(dir: &Path) -> SledFiles {
        SledFiles {
            dir: dir.to_path_buf(),
        }
    }

    /// fsyncs sled's data files (`db`, `conf`, large values in `blobs/`)
    /// and their directories.
    pub fn sync(&self) -> io::Result<()> {
        for name in ["db", "conf"] {
            match File::open(self.dir.join(name)) {
                Ok(f) => f.sync_all()?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let blobs = self.dir.join("blobs");
        if let Ok(entries) = std::fs::read_dir(&blobs) {
            for e in entries.flatten() {
                // A blob sled removed meanwhile needs no sync.
                if let Ok(f) = File::open(e.path()) {
                    f.sync_all()?;
                }
            }
            File::open(&blobs)?.sync_all()?;
        }
        File::open(&self.dir)?.sync_all()
    }

    /// Flushes `tree` (sled's own flush), then fsyncs its files.
    pub fn flush_tree(&self, tree: &sled::Tree) -> sled::Result<usize> {
        let n = tree.flush()?;
        self.sync()?;
        Ok(n)
    }

    /// Flushes the whole database, then fsyncs its files.
    pub fn flush_db(&self, db: &sled::Db) -> sled::Result<usize> {
        let n = db.flush()?;
        self.sync()?;
        Ok(n)
    }
}
