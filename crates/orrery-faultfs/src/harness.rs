//! For test harnesses: the filesystem mounted from inside the test process
//! (its FUSE threads serve the node processes), a power cut, a remount.

use crate::control;
use crate::fs::FaultFs;
use crate::state::State;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

/// Why a test cannot mount (printed by tests that then skip), or `None`.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (FUSE mounts here need root)".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("no /dev/fuse".into());
    }
    if Command::new("fusermount3")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        return Some("no fusermount3 (apt-get install fuse3)".into());
    }
    None
}

/// Mounts `fs` at `mountpoint` on background threads. `allow_other`, so
/// node processes of any user can use it; `auto_unmount`, so a test that
/// dies leaves no mount behind.
pub fn spawn(fs: FaultFs, mountpoint: &Path) -> io::Result<fuser::BackgroundSession> {
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName("orrery-faultfs".into()),
        fuser::MountOption::AutoUnmount,
    ];
    config.acl = fuser::SessionACL::All;
    config.n_threads = Some(4);
    fuser::spawn_mount(fs, mountpoint, &config)
}

/// A mounted filesystem.
pub struct Mounted {
    state: Arc<Mutex<State>>,
    session: Option<fuser::BackgroundSession>,
    pub backing: PathBuf,
    pub mountpoint: PathBuf,
}

impl Mounted {
    /// Mounts `backing` (created if missing) at `mountpoint`.
    pub fn start(backing: &Path, mountpoint: &Path) -> io::Result<Mounted> {
        std::fs::create_dir_all(backing)?;
        std::fs::create_dir_all(mountpoint)?;
        let backing = backing.canonicalize()?;
        let fs = FaultFs::new(State::new(backing.clone())?);
        let state = fs.shared();
        let session = spawn(fs, mountpoint)?;
        Ok(Mounted {
            state,
            session: Some(session),
            backing,
            mountpoint: mountpoint.to_path_buf(),
        })
    }

    /// One control command (see [`control`]); `crash` and `crash-tear`
    /// are [`Mounted::power_cut`].
    pub fn command(&self, cmd: &str) -> io::Result<String> {
        let (reply, _) = control::handle(cmd, &self.state);
        if reply.starts_with("ok") {
            Ok(reply)
        } else {
            Err(io::Error::other(reply))
        }
    }

    /// Power cut: drops what was not synced (with `tear`, keeps half of the
    /// latest write) and detaches the mount. Kill the processes using it
    /// first. Returns the filesystem's report line.
    pub fn power_cut(self, tear: bool) -> io::Result<String> {
        self.command(if tear { "crash-tear" } else { "crash" })
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        detach(&self.mountpoint);
        if let Some(s) = self.session.take() {
            // Its threads end once the kernel lets go of the mount; a
            // process still holding a file there must not block the test.
            std::thread::spawn(move || drop(s));
        }
    }
}

/// Lazily unmounts `mountpoint` if anything is still mounted there.
pub fn detach(mountpoint: &Path) {
    let _ = Command::new("fusermount3")
        .arg("-u")
        .arg("-z")
        .arg(mountpoint)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
