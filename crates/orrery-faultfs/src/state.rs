//! The filesystem's bookkeeping: which backing path each inode is at, the
//! open files, and the durability models (data per file, entries per
//! directory), plus the power cut that applies them to the backing tree.

use crate::journal::{Change, Journal, Undo};
use crate::shadow::Shadow;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The inode number FUSE gives the root.
pub const ROOT: u64 = 1;
/// Where removed entries wait (hidden at the root) until their removal is
/// durable.
pub const TRASH: &str = ".faultfs-trash";

struct Node {
    parent: u64,
    name: OsString,
}

/// What a power cut did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CutReport {
    /// Files whose content went back to their last sync.
    pub files_reverted: usize,
    /// Unsynced bytes dropped (past the durable length, or overwritten).
    pub bytes_dropped: u64,
    /// Directory entry changes undone.
    pub entries_undone: usize,
    /// Bytes of the latest write kept by a torn write.
    pub torn_kept: Option<usize>,
}

pub struct State {
    root: PathBuf,
    nodes: HashMap<u64, Node>,
    pub files: HashMap<u64, (u64, Arc<File>)>,
    next_fh: u64,
    shadows: HashMap<u64, Shadow>,
    journal: Journal,
    next_trash: u64,
    /// The inode of the latest write (a torn write tears that one).
    last_write: Option<u64>,
    pub fail_fsync: bool,
    /// Set by a power cut: the filesystem answers EIO to everything after.
    pub dead: bool,
}

impl State {
    pub fn new(root: PathBuf) -> io::Result<State> {
        // Trash left by an earlier mount holds removals that were durable
        // (or a clean unmount): it goes now.
        let trash = root.join(TRASH);
        if trash.exists() {
            std::fs::remove_dir_all(&trash)?;
        }
        std::fs::create_dir_all(&trash)?;
        Ok(State {
            root,
            nodes: HashMap::new(),
            files: HashMap::new(),
            next_fh: 1,
            shadows: HashMap::new(),
            journal: Journal::default(),
            next_trash: 0,
            last_write: None,
            fail_fsync: false,
            dead: false,
        })
    }

    /// The backing path of inode `ino`, if known and not removed.
    pub fn path(&self, ino: u64) -> Option<PathBuf> {
        if ino == ROOT {
            return Some(self.root.clone());
        }
        let mut parts = Vec::new();
        let mut at = ino;
        while at != ROOT {
            let n = self.nodes.get(&at)?;
            parts.push(n.name.clone());
            at = n.parent;
            if parts.len() > 4096 {
                return None;
            }
        }
        let mut p = self.root.clone();
        for part in parts.iter().rev() {
            p.push(part);
        }
        Some(p)
    }

    pub fn child(&self, parent: u64, name: &OsStr) -> Option<PathBuf> {
        Some(self.path(parent)?.join(name))
    }

    /// Notes that `name` in `parent` is inode `ino`.
    pub fn link(&mut self, ino: u64, parent: u64, name: &OsStr) {
        if ino != ROOT {
            self.nodes.insert(
                ino,
                Node {
                    parent,
                    name: name.to_owned(),
                },
            );
        }
    }

    pub fn add_file(&mut self, ino: u64, f: File) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.files.insert(fh, (ino, Arc::new(f)));
        fh
    }

    pub fn trash_dir(&self) -> PathBuf {
        self.root.join(TRASH)
    }

    fn shadow(&mut self, ino: u64, f: &File) -> io::Result<&mut Shadow> {
        Ok(match self.shadows.entry(ino) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            // Untouched since mount: what the file holds is durable.
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(Shadow::new(f.metadata()?.len()))
            }
        })
    }

    /// Saves the durable bytes in `[start, end)` of `f` before they change.
    fn save(&mut self, ino: u64, f: &File, start: u64, end: u64) -> io::Result<()> {
        let shadow = self.shadow(ino, f)?;
        for (s, e) in shadow.unsaved(start, end) {
            let mut buf = vec![0u8; (e - s) as usize];
            let mut got = 0;
            // The file may be shorter than its durable length (truncated
            // since); what is missing was saved by that truncation.
            while got < buf.len() {
                let n = f.read_at(&mut buf[got..], s + got as u64)?;
                if n == 0 {
                    break;
                }
                got += n;
            }
            buf.truncate(got);
            shadow.save(s, buf);
        }
        Ok(())
    }

    /// A write through the model: old durable bytes saved, then written.
    pub fn write(&mut self, ino: u64, f: &File, offset: u64, data: &[u8]) -> io::Result<()> {
        self.save(ino, f, offset, offset + data.len() as u64)?;
        f.write_all_at(data, offset)?;
        self.shadow(ino, f)?.wrote(offset, data);
        self.last_write = Some(ino);
        Ok(())
    }

    /// A truncation or extension through the model.
    pub fn set_len(&mut self, ino: u64, f: &File, len: u64) -> io::Result<()> {
        let cur = f.metadata()?.len();
        self.save(ino, f, len, cur.max(len))?;
        f.set_len(len)?;
        self.shadow(ino, f)?.resized();
        Ok(())
    }

    /// `fsync`/`fdatasync` of a file (or directory) `ino`.
    pub fn sync_file(&mut self, ino: u64, f: Option<&File>) -> io::Result<()> {
        if let Some(f) = f {
            let len = f.metadata()?.len();
            self.shadow(ino, f)?.sync(len);
        }
        self.journal.sync_file(ino);
        Ok(())
    }

    /// `fsync` of directory `dir`: its entry changes are durable, and the
    /// entries it removed can go for good.
    pub fn sync_dir(&mut self, dir: u64) {
        for t in self.journal.sync_dir(dir) {
            let p = self.trash_dir().join(&t);
            let gone = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            if let Err(e) = gone {
                tracing::warn!(path = %p.display(), error = %e, "could not delete a removed entry");
            }
        }
        self.journal.sync_file(dir);
    }

    pub fn created(&mut self, dir: u64, name: &OsStr, ino: u64) {
        self.link(ino, dir, name);
        self.journal.record(Change::Created {
            dir,
            name: name.to_string_lossy().into_owned(),
            ino,
        });
    }

    /// Moves `path` into the trash instead of deleting it; returns its
    /// trash name.
    fn move_to_trash(&mut self, path: &Path) -> io::Result<String> {
        self.next_trash += 1;
        let t = self.next_trash.to_string();
        std::fs::rename(path, self.trash_dir().join(&t))?;
        Ok(t)
    }

    /// unlink/rmdir of `name` in `dir` (checked by the caller).
    pub fn remove(&mut self, dir: u64, name: &OsStr, path: &Path) -> io::Result<()> {
        let ino = std::fs::symlink_metadata(path)?.ino();
        let trash = self.move_to_trash(path)?;
        self.nodes.remove(&ino);
        self.journal.record(Change::Removed {
            dir,
            name: name.to_string_lossy().into_owned(),
            trash,
        });
        Ok(())
    }

    /// rename of `from` (in `fdir`) to `to` (in `tdir`).
    pub fn rename(
        &mut self,
        (fdir, fname): (u64, &OsStr),
        (tdir, tname): (u64, &OsStr),
        from: &Path,
        to: &Path,
    ) -> io::Result<()> {
        let moved = std::fs::symlink_metadata(from)?;
        let replaced = match std::fs::symlink_metadata(to) {
            Ok(old) => {
                if old.is_dir() && std::fs::read_dir(to)?.next().is_some() {
                    return Err(io::Error::from_raw_os_error(libc::ENOTEMPTY));
                }
                if old.is_dir() != moved.is_dir() {
                    let code = if old.is_dir() {
                        libc::EISDIR
                    } else {
                        libc::ENOTDIR
                    };
                    return Err(io::Error::from_raw_os_error(code));
                }
                self.nodes.remove(&old.ino());
                Some(self.move_to_trash(to)?)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        std::fs::rename(from, to)?;
        self.link(moved.ino(), tdir, tname);
        self.journal.record(Change::Renamed {
            from: (fdir, fname.to_string_lossy().into_owned()),
            to: (tdir, tname.to_string_lossy().into_owned()),
            replaced,
        });
        Ok(())
    }

    /// Counts for the control socket's `stats`.
    pub fn stats(&self) -> String {
        let dirty = self
            .shadows
            .iter()
            .filter(|(ino, s)| {
                let len = self
                    .path(**ino)
                    .and_then(|p| std::fs::metadata(p).ok())
                    .map_or(s.durable_len(), |m| m.len());
                !s.is_clean(len)
            })
            .count();
        let held: usize = self.shadows.values().map(Shadow::held_bytes).sum();
        format!(
            "dirty_files={dirty} held_bytes={held} pending_entries={} fail_fsync={}",
            self.journal.pending(),
            self.fail_fsync
        )
    }

    /// The power cut: every entry change and every write not covered by a
    /// sync is undone on the backing tree (with `tear`, half of the latest
    /// write stays), and the filesystem refuses everything after.
    pub fn power_cut(&mut self, tear: bool) -> CutReport {
        self.dead = true;
        self.files.clear();
        let mut report = CutReport::default();
        for u in self.journal.undo() {
            report.entries_undone += 1;
            if let Err(e) = self.undo(&u) {
                tracing::warn!(step = ?u, error = %e, "undoing an entry change failed");
            }
        }
        let shadows = std::mem::take(&mut self.shadows);
        for (ino, shadow) in shadows {
            let Some(path) = self.path(ino) else { continue };
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.ino() != ino || !meta.is_file() || shadow.is_clean(meta.len()) {
                continue;
            }
            let keep = if tear && self.last_write == Some(ino) {
                shadow.last_write_len().map(|n| n / 2)
            } else {
                None
            };
            let r = shadow.restore(keep);
            report.files_reverted += 1;
            report.bytes_dropped += meta.len().saturating_sub(shadow.durable_len());
            report.bytes_dropped += r.writes.iter().map(|(_, d)| d.len() as u64).sum::<u64>();
            if keep.is_some() {
                report.torn_kept = keep;
            }
            let applied = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| {
                    for (off, d) in &r.writes {
                        f.write_all_at(d, *off)?;
                    }
                    f.set_len(r.len)?;
                    if let Some((off, d)) = &r.torn {
                        f.write_all_at(d, *off)?;
                    }
                    f.sync_all()
                });
            if let Err(e) = applied {
                tracing::warn!(path = %path.display(), error = %e, "reverting a file failed");
            }
        }
        let trash = self.trash_dir();
        if let Err(e) = std::fs::remove_dir_all(&trash).and_then(|_| std::fs::create_dir(&trash)) {
            tracing::warn!(error = %e, "emptying the trash failed");
        }
        report
    }

    fn undo(&mut self, u: &Undo) -> io::Result<()> {
        match u {
            Undo::Remove { dir, name } => {
                let p = self.child(*dir, OsStr::new(name)).ok_or_else(gone)?;
                if std::fs::symlink_metadata(&p)?.is_dir() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                }
            }
            Undo::Restore { trash, dir, name } => {
                let from = self.trash_dir().join(trash);
                let to = self.child(*dir, OsStr::new(name)).ok_or_else(gone)?;
                let ino = std::fs::symlink_metadata(&from)?.ino();
                std::fs::rename(&from, &to)?;
                self.link(ino, *dir, OsStr::new(name));
                Ok(())
            }
            Undo::MoveBack { from, to } => {
                let src = self.child(to.0, OsStr::new(&to.1)).ok_or_else(gone)?;
                let dst = self.child(from.0, OsStr::new(&from.1)).ok_or_else(gone)?;
                let ino = std::fs::symlink_metadata(&src)?.ino();
                std::fs::rename(&src, &dst)?;
                self.link(ino, from.0, OsStr::new(&from.1));
                Ok(())
            }
        }
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, "directory no longer known")
}
