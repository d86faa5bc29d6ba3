//! The directory-entry model, pure logic (no I/O): which creates, removals
//! and renames are not durable yet, and how to undo them on a power cut.
//!
//! Like the data model, changes go straight to the backing directory; a
//! removed entry is moved into a trash directory instead of being deleted
//! until its removal is durable, so it can be put back. What makes an entry
//! change durable:
//! - an `fsync` of the directory holding it (POSIX's rule; for a rename,
//!   of the destination directory);
//! - for a newly created file or directory, an `fsync` of the file itself
//!   or of anything created inside it, as ext4 and xfs do (their journal
//!   commits the new name with the file; without this rule a program that
//!   never fsyncs its directory, as sled does not, would lose its files at
//!   every power cut, which no real Linux filesystem does).

/// A directory, by the inode number the filesystem gives it.
pub type Dir = u64;

/// One entry change not yet durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `name` was created in `dir` (file or directory `ino`).
    Created { dir: Dir, name: String, ino: u64 },
    /// `name` was removed from `dir`; the file is kept as `trash`.
    Removed {
        dir: Dir,
        name: String,
        trash: String,
    },
    /// An entry moved; `replaced` is the trash name of what `to` held.
    Renamed {
        from: (Dir, String),
        to: (Dir, String),
        replaced: Option<String>,
    },
}

/// A step of a power cut, in the order to perform it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Undo {
    /// Remove `name` from `dir` (a creation that was not durable).
    Remove { dir: Dir, name: String },
    /// Move `trash` back to `name` in `dir`.
    Restore {
        trash: String,
        dir: Dir,
        name: String,
    },
    /// Move `to` back to `from`.
    MoveBack {
        from: (Dir, String),
        to: (Dir, String),
    },
}

/// The entry changes since the last syncs, oldest first.
#[derive(Debug, Default)]
pub struct Journal {
    changes: Vec<Change>,
}

impl Journal {
    pub fn record(&mut self, c: Change) {
        self.changes.push(c);
    }

    pub fn pending(&self) -> usize {
        self.changes.len()
    }

    /// An `fsync` of directory `dir`: its entry changes are durable.
    /// Returns the trash entries that can now be deleted for good.
    pub fn sync_dir(&mut self, dir: Dir) -> Vec<String> {
        let mut freed = Vec::new();
        self.changes.retain(|c| {
            let covered = match c {
                Change::Created { dir: d, .. } | Change::Removed { dir: d, .. } => *d == dir,
                Change::Renamed { to, .. } => to.0 == dir,
            };
            if covered {
                match c {
                    Change::Removed { trash, .. } => freed.push(trash.clone()),
                    Change::Renamed {
                        replaced: Some(t), ..
                    } => freed.push(t.clone()),
                    _ => {}
                }
            }
            !covered
        });
        freed
    }

    /// An `fsync` of file or directory `ino`: its own creation, and that
    /// of each directory above it created since, are durable.
    pub fn sync_file(&mut self, ino: u64) {
        let mut want = Some(ino);
        while let Some(target) = want.take() {
            if let Some(pos) = self
                .changes
                .iter()
                .position(|c| matches!(c, Change::Created { ino, .. } if *ino == target))
            {
                if let Change::Created { dir, .. } = self.changes.remove(pos) {
                    want = Some(dir);
                }
            }
        }
    }

    /// What a power cut does to the entries: every change not durable,
    /// undone newest first.
    pub fn undo(&self) -> Vec<Undo> {
        let mut out = Vec::new();
        for c in self.changes.iter().rev() {
            match c {
                Change::Created { dir, name, .. } => out.push(Undo::Remove {
                    dir: *dir,
                    name: name.clone(),
                }),
                Change::Removed { dir, name, trash } => out.push(Undo::Restore {
                    trash: trash.clone(),
                    dir: *dir,
                    name: name.clone(),
                }),
                Change::Renamed { from, to, replaced } => {
                    out.push(Undo::MoveBack {
                        from: from.clone(),
                        to: to.clone(),
                    });
                    if let Some(t) = replaced {
                        out.push(Undo::Restore {
                            trash: t.clone(),
                            dir: to.0,
                            name: to.1.clone(),
                        });
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// A namespace of files only (dirs are fixed: 1, 2, 3), applied with
    /// undo steps the way the filesystem applies them.
    #[derive(Debug, Clone, Default, PartialEq)]
    struct Ns {
        entries: BTreeMap<(Dir, String), u64>,
        trash: BTreeMap<String, u64>,
    }

    impl Ns {
        fn apply(&mut self, u: &Undo) {
            match u {
                Undo::Remove { dir, name } => {
                    self.entries.remove(&(*dir, name.clone()));
                }
                Undo::Restore { trash, dir, name } => {
                    if let Some(f) = self.trash.remove(trash) {
                        self.entries.insert((*dir, name.clone()), f);
                    }
                }
                Undo::MoveBack { from, to } => {
                    if let Some(f) = self.entries.remove(to) {
                        self.entries.insert(from.clone(), f);
                    }
                }
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Create(Dir, u8),
        Remove(Dir, u8),
        Rename(Dir, u8, Dir, u8),
        SyncDir(Dir),
    }

    fn op() -> impl Strategy<Value = Op> {
        let dir = 1u64..4;
        let name = 0u8..4;
        prop_oneof![
            (dir.clone(), name.clone()).prop_map(|(d, n)| Op::Create(d, n)),
            (dir.clone(), name.clone()).prop_map(|(d, n)| Op::Remove(d, n)),
            (dir.clone(), name.clone(), dir.clone(), name.clone())
                .prop_map(|(a, b, c, d)| Op::Rename(a, b, c, d)),
            dir.prop_map(Op::SyncDir),
        ]
    }

    proptest! {
        /// Model: each directory's entries as of its last fsync (a rename
        /// counts in its destination). With every directory synced after
        /// the last change, a crash loses nothing; with none synced since
        /// the start, a crash leaves the starting namespace.
        #[test]
        fn crash_keeps_exactly_what_directory_syncs_covered(ops in proptest::collection::vec(op(), 0..40)) {
            let mut ns = Ns::default();
            let mut j = Journal::default();
            let mut next_ino = 100u64;
            let mut next_trash = 0u32;
            let mut synced_any = false;
            for op in &ops {
                match op {
                    Op::Create(d, n) => {
                        let key = (*d, n.to_string());
                        if let std::collections::btree_map::Entry::Vacant(e) = ns.entries.entry(key) {
                            next_ino += 1;
                            e.insert(next_ino);
                            j.record(Change::Created { dir: *d, name: n.to_string(), ino: next_ino });
                        }
                    }
                    Op::Remove(d, n) => {
                        if let Some(f) = ns.entries.remove(&(*d, n.to_string())) {
                            next_trash += 1;
                            ns.trash.insert(next_trash.to_string(), f);
                            j.record(Change::Removed { dir: *d, name: n.to_string(), trash: next_trash.to_string() });
                        }
                    }
                    Op::Rename(a, b, c, d) => {
                        let (from, to) = ((*a, b.to_string()), (*c, d.to_string()));
                        if from != to {
                            if let Some(f) = ns.entries.remove(&from) {
                                let replaced = ns.entries.remove(&to).map(|old| {
                                    next_trash += 1;
                                    ns.trash.insert(next_trash.to_string(), old);
                                    next_trash.to_string()
                                });
                                ns.entries.insert(to.clone(), f);
                                j.record(Change::Renamed { from, to, replaced });
                            }
                        }
                    }
                    Op::SyncDir(d) => {
                        synced_any = true;
                        for t in j.sync_dir(*d) {
                            prop_assert!(ns.trash.remove(&t).is_some(), "freed trash {t} twice");
                        }
                    }
                }
            }
            // Everything synced: the crash changes nothing.
            let mut all = Journal { changes: j.changes.clone() };
            for d in 1..4 { all.sync_dir(d); }
            prop_assert!(all.undo().is_empty());
            // Nothing synced: back to the (empty) start, files all in trash or gone.
            let mut crashed = ns.clone();
            for u in j.undo() { crashed.apply(&u); }
            if !synced_any {
                prop_assert!(crashed.entries.is_empty(), "{:?}", crashed.entries);
            }
            // Every file is somewhere at most once.
            let files: Vec<u64> = crashed.entries.values().copied().collect();
            let unique: BTreeSet<u64> = files.iter().copied().collect();
            prop_assert_eq!(files.len(), unique.len());
        }
    }

    #[test]
    fn a_file_sync_makes_its_creation_and_its_new_parents_durable() {
        let mut j = Journal::default();
        j.record(Change::Created {
            dir: 1,
            name: "wal".into(),
            ino: 10,
        });
        j.record(Change::Created {
            dir: 10,
            name: "0.wal".into(),
            ino: 11,
        });
        j.record(Change::Created {
            dir: 1,
            name: "other".into(),
            ino: 12,
        });
        j.sync_file(11);
        assert_eq!(
            j.undo(),
            vec![Undo::Remove {
                dir: 1,
                name: "other".into()
            }]
        );
    }

    #[test]
    fn a_removal_is_undone_until_its_directory_is_synced() {
        let mut j = Journal::default();
        j.record(Change::Removed {
            dir: 1,
            name: "a".into(),
            trash: "7".into(),
        });
        assert_eq!(
            j.undo(),
            vec![Undo::Restore {
                trash: "7".into(),
                dir: 1,
                name: "a".into()
            }]
        );
        assert_eq!(j.sync_dir(2), Vec::<String>::new());
        assert_eq!(j.sync_dir(1), vec!["7".to_string()]);
        assert!(j.undo().is_empty());
    }
}
