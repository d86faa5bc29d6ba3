//! The FUSE side: each request is passed through to the backing tree, and
//! every change goes through [`State`] so that a power cut can undo what
//! was not synced.
//!
//! No kernel write-back cache is asked for, so each `write(2)` reaches
//! [`FaultFs::write`] before it returns; the kernel's page cache of the
//! mount is dropped with the mount after a power cut (the harness
//! remounts). Syncs do not fsync the backing files: the backing tree stands
//! for the disk, and only the simulated power cut is meant to lose data.

use crate::state::{State, ROOT, TRASH};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};
use std::ffi::OsStr;
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const TTL: Duration = Duration::from_secs(1);

/// The filesystem; clones share one state (the control socket holds one).
#[derive(Clone)]
pub struct FaultFs {
    state: Arc<Mutex<State>>,
}

fn errno(e: io::Error) -> Errno {
    Errno::from(e)
}

fn attr(ino: u64, m: &Metadata) -> FileAttr {
    let t = |s: i64, ns: i64| {
        if s >= 0 {
            UNIX_EPOCH + Duration::new(s as u64, ns as u32)
        } else {
            UNIX_EPOCH
        }
    };
    let kind = if m.is_dir() {
        FileType::Directory
    } else if m.file_type().is_symlink() {
        FileType::Symlink
    } else {
        FileType::RegularFile
    };
    FileAttr {
        ino: INodeNo(ino),
        size: m.len(),
        blocks: m.blocks(),
        atime: t(m.atime(), m.atime_nsec()),
        mtime: t(m.mtime(), m.mtime_nsec()),
        ctime: t(m.ctime(), m.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind,
        perm: (m.mode() & 0o7777) as u16,
        nlink: m.nlink() as u32,
        uid: m.uid(),
        gid: m.gid(),
        rdev: m.rdev() as u32,
        blksize: 4096,
        flags: 0,
    }
}

/// The inode number the mount shows for backing metadata `m`.
fn ino_of(m: &Metadata, is_root: bool) -> u64 {
    if is_root {
        ROOT
    } else {
        m.ino()
    }
}

impl FaultFs {
    pub fn new(state: State) -> FaultFs {
        FaultFs {
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// The state, shared with the control socket.
    pub fn shared(&self) -> Arc<Mutex<State>> {
        self.state.clone()
    }

    /// The state, or EIO once the power was cut.
    fn live(&self) -> Result<MutexGuard<'_, State>, Errno> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.dead {
            return Err(Errno::EIO);
        }
        Ok(st)
    }

    fn file(&self, fh: FileHandle) -> Result<(u64, Arc<File>), Errno> {
        let st = self.live()?;
        st.files.get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    fn entry(&self, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        let mut st = self.live()?;
        if parent == ROOT && name == TRASH {
            return Err(Errno::ENOENT);
        }
        let p = st.child(parent, name).ok_or(Errno::ENOENT)?;
        let m = std::fs::symlink_metadata(&p).map_err(errno)?;
        let ino = ino_of(&m, false);
        st.link(ino, parent, name);
        Ok(attr(ino, &m))
    }

    fn getattr_of(&self, ino: u64) -> Result<FileAttr, Errno> {
        let st = self.live()?;
        let p = st.path(ino).ok_or(Errno::ENOENT)?;
        let m = std::fs::symlink_metadata(&p).map_err(errno)?;
        Ok(attr(ino_of(&m, ino == ROOT), &m))
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr_of(
        &self,
        ino: u64,
        mode: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        fh: Option<FileHandle>,
    ) -> Result<FileAttr, Errno> {
        let mut st = self.live()?;
        let p = st.path(ino).ok_or(Errno::ENOENT)?;
        if let Some(len) = size {
            let f = match fh.and_then(|fh| st.files.get(&fh.0).cloned()) {
                Some((_, f)) => f,
                None => Arc::new(OpenOptions::new().write(true).open(&p).map_err(errno)?),
            };
            st.set_len(ino, &f, len).map_err(errno)?;
        }
        if let Some(mode) = mode {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode & 0o7777))
                .map_err(errno)?;
        }
        if atime.is_some() || mtime.is_some() {
            let when = |t: TimeOrNow| match t {
                TimeOrNow::SpecificTime(t) => t,
                TimeOrNow::Now => SystemTime::now(),
            };
            let mut times = std::fs::FileTimes::new();
            if let Some(a) = atime {
                times = times.set_accessed(when(a));
            }
            if let Some(m) = mtime {
                times = times.set_modified(when(m));
            }
            // Times are not modelled: they are passed through as they are.
            File::options()
                .write(true)
                .open(&p)
                .or_else(|_| File::open(&p))
                .and_then(|f| f.set_times(times))
                .map_err(errno)?;
        }
        let m = std::fs::symlink_metadata(&p).map_err(errno)?;
        Ok(attr(ino_of(&m, ino == ROOT), &m))
    }

    fn open_of(&self, ino: u64, flags: i32) -> Result<FileHandle, Errno> {
        let mut st = self.live()?;
        let p = st.path(ino).ok_or(Errno::ENOENT)?;
        let f = open_backing(&p, flags, None)?;
        if flags & libc::O_TRUNC != 0 {
            st.set_len(ino, &f, 0).map_err(errno)?;
        }
        Ok(FileHandle(st.add_file(ino, f)))
    }

    fn create_of(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> Result<(FileAttr, FileHandle), Errno> {
        let mut st = self.live()?;
        if parent == ROOT && name == TRASH {
            return Err(Errno::EACCES);
        }
        let p = st.child(parent, name).ok_or(Errno::ENOENT)?;
        let existed = std::fs::symlink_metadata(&p).is_ok();
        if existed && flags & libc::O_EXCL != 0 {
            return Err(Errno::EEXIST);
        }
        let f = open_backing(&p, flags, Some(mode))?;
        let m = f.metadata().map_err(errno)?;
        let ino = m.ino();
        if existed {
            st.link(ino, parent, name);
            if flags & libc::O_TRUNC != 0 {
                st.set_len(ino, &f, 0).map_err(errno)?;
            }
        } else {
            st.created(parent, name, ino);
        }
        let m = f.metadata().map_err(errno)?;
        Ok((attr(ino, &m), FileHandle(st.add_file(ino, f))))
    }

    fn mkdir_of(&self, parent: u64, name: &OsStr, mode: u32) -> Result<FileAttr, Errno> {
        let mut st = self.live()?;
        if parent == ROOT && name == TRASH {
            return Err(Errno::EACCES);
        }
        let p = st.child(parent, name).ok_or(Errno::ENOENT)?;
        std::fs::DirBuilder::new()
            .mode(mode & 0o7777)
            .create(&p)
            .map_err(errno)?;
        let m = std::fs::symlink_metadata(&p).map_err(errno)?;
        st.created(parent, name, m.ino());
        Ok(attr(m.ino(), &m))
    }

    fn remove_of(&self, parent: u64, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let mut st = self.live()?;
        let p = st.child(parent, name).ok_or(Errno::ENOENT)?;
        let m = std::fs::symlink_metadata(&p).map_err(errno)?;
        if dir {
            if !m.is_dir() {
                return Err(Errno::ENOTDIR);
            }
            if std::fs::read_dir(&p).map_err(errno)?.next().is_some() {
                return Err(Errno::ENOTEMPTY);
            }
        } else if m.is_dir() {
            return Err(Errno::EISDIR);
        }
        st.remove(parent, name, &p).map_err(errno)
    }

    fn rename_of(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
    ) -> Result<(), Errno> {
        let mut st = self.live()?;
        if newparent == ROOT && newname == TRASH {
            return Err(Errno::EACCES);
        }
        let from = st.child(parent, name).ok_or(Errno::ENOENT)?;
        let to = st.child(newparent, newname).ok_or(Errno::ENOENT)?;
        st.rename((parent, name), (newparent, newname), &from, &to)
            .map_err(errno)
    }

    fn write_of(&self, fh: FileHandle, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        let mut st = self.live()?;
        let (ino, f) = st.files.get(&fh.0).cloned().ok_or(Errno::EBADF)?;
        st.write(ino, &f, offset, data).map_err(errno)?;
        Ok(data.len() as u32)
    }

    fn fsync_of(&self, ino: u64, fh: Option<FileHandle>, dir: bool) -> Result<(), Errno> {
        let mut st = self.live()?;
        if st.fail_fsync {
            tracing::info!(ino, "failing an fsync with EIO (fail-fsync mode)");
            return Err(Errno::EIO);
        }
        if dir {
            st.sync_dir(ino);
            return Ok(());
        }
        let f = fh.and_then(|fh| st.files.get(&fh.0).map(|(_, f)| f.clone()));
        st.sync_file(ino, f.as_deref()).map_err(errno)
    }

    fn readdir_of(&self, ino: u64) -> Result<Vec<(u64, FileType, std::ffi::OsString)>, Errno> {
        let st = self.live()?;
        let p = st.path(ino).ok_or(Errno::ENOENT)?;
        drop(st);
        let mut out = vec![
            (ino, FileType::Directory, ".".into()),
            (ino, FileType::Directory, "..".into()),
        ];
        let mut names = Vec::new();
        for e in std::fs::read_dir(&p).map_err(errno)? {
            let e = e.map_err(errno)?;
            if ino == ROOT && e.file_name() == TRASH {
                continue;
            }
            let kind = match e.file_type() {
                Ok(t) if t.is_dir() => FileType::Directory,
                Ok(t) if t.is_symlink() => FileType::Symlink,
                _ => FileType::RegularFile,
            };
            names.push((std::os::unix::fs::DirEntryExt::ino(&e), kind, e.file_name()));
        }
        names.sort_by(|a, b| a.2.cmp(&b.2));
        out.extend(names);
        Ok(out)
    }
}

/// Opens a backing file for a mount-side open. `O_APPEND` is left out: the
/// kernel already passes each append's offset, and `pwrite` on an
/// `O_APPEND` file would ignore it.
fn open_backing(p: &std::path::Path, flags: i32, create: Option<u32>) -> Result<File, Errno> {
    let acc = flags & libc::O_ACCMODE;
    let mut o = OpenOptions::new();
    o.read(true);
    o.write(acc == libc::O_WRONLY || acc == libc::O_RDWR || create.is_some());
    if let Some(mode) = create {
        o.create(true).mode(mode & 0o7777);
    }
    let r = o.open(p).or_else(|e| {
        // A write-only file the caller may not read: open it as asked.
        if e.kind() == io::ErrorKind::PermissionDenied && acc == libc::O_WRONLY {
            OpenOptions::new().write(true).open(p)
        } else {
            Err(e)
        }
    });
    r.map_err(errno)
}

impl Filesystem for FaultFs {
    fn init(&mut self, _req: &Request, _config: &mut KernelConfig) -> io::Result<()> {
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.entry(parent.0, name) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.getattr_of(ino.0) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.setattr_of(ino.0, mode, size, atime, mtime, fh) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        match self.mkdir_of(parent.0, name, mode & !umask) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.remove_of(parent.0, name, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.remove_of(parent.0, name, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if !flags.is_empty() {
            // RENAME_NOREPLACE / RENAME_EXCHANGE are not modelled.
            reply.error(Errno::EINVAL);
            return;
        }
        match self.rename_of(parent.0, name, newparent.0, newname) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.open_of(ino.0, flags.0) {
            Ok(fh) => reply.opened(fh, FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let read = self.file(fh).and_then(|(_, f)| {
            let mut buf = vec![0u8; size as usize];
            let mut got = 0;
            while got < buf.len() {
                match f.read_at(&mut buf[got..], offset + got as u64) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(errno(e)),
                }
            }
            buf.truncate(got);
            Ok(buf)
        });
        match read {
            Ok(b) => reply.data(&b),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.write_of(fh, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) is not a sync: nothing becomes durable here.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.files.remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.fsync_of(ino.0, Some(fh), false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.live() {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.readdir_of(ino.0) {
            Ok(entries) => {
                for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize)
                {
                    if reply.add(INodeNo(ino), (i + 1) as u64, kind, &name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.fsync_of(ino.0, None, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let root = st.path(ROOT);
        drop(st);
        let Some(c) =
            root.and_then(|r| std::ffi::CString::new(r.into_os_string().into_encoded_bytes()).ok())
        else {
            reply.error(Errno::EIO);
            return;
        };
        // SAFETY: `c` is a valid NUL-terminated path and `s` a plain struct
        // that statvfs fills in.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
            reply.error(errno(io::Error::last_os_error()));
            return;
        }
        reply.statfs(
            s.f_blocks,
            s.f_bfree,
            s.f_bavail,
            s.f_files,
            s.f_ffree,
            s.f_bsize as u32,
            s.f_namemax as u32,
            s.f_frsize as u32,
        );
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: fuser::ReplyXattr,
    ) {
        // No extended attributes (the kernel asks for security.capability
        // on every write); ENOSYS makes it stop asking.
        reply.error(Errno::ENOSYS);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.create_of(parent.0, name, mode & !umask, flags) {
            Ok((a, fh)) => reply.created(&TTL, &a, Generation(0), fh, FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }
}
