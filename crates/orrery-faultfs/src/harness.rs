//! For test harnesses: a mount run as its own process (the binary), so a
//! power cut can drop it as a real one would, and a fresh one remounted.

use crate::control;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// A running `orrery-faultfs mount`.
pub struct Mounted {
    child: Option<Child>,
    pub backing: PathBuf,
    pub mountpoint: PathBuf,
    pub control: PathBuf,
}

impl Mounted {
    /// Mounts `backing` at `mountpoint` with the binary `bin`, logging to
    /// `log`, and waits until it answers.
    pub fn start(bin: &Path, backing: &Path, mountpoint: &Path, log: &Path) -> io::Result<Mounted> {
        std::fs::create_dir_all(backing)?;
        std::fs::create_dir_all(mountpoint)?;
        let control = mountpoint.with_extension("faultfs.sock");
        let _ = std::fs::remove_file(&control);
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = Command::new(bin)
            .arg("mount")
            .arg(backing)
            .arg(mountpoint)
            .arg("--control")
            .arg(&control)
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?;
        let mut m = Mounted {
            child: Some(child),
            backing: backing.to_path_buf(),
            mountpoint: mountpoint.to_path_buf(),
            control,
        };
        let start = Instant::now();
        loop {
            if control::send(&m.control, "ping").is_ok() {
                return Ok(m);
            }
            if let Some(c) = m.child.as_mut() {
                if let Some(st) = c.try_wait()? {
                    m.child = None;
                    return Err(io::Error::other(format!(
                        "orrery-faultfs exited at once ({st}); see {}",
                        log.display()
                    )));
                }
            }
            if start.elapsed() > Duration::from_secs(20) {
                return Err(io::Error::other("orrery-faultfs did not come up in 20 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn command(&self, cmd: &str) -> io::Result<String> {
        control::send(&self.control, cmd)
    }

    /// Power cut: drops what was not synced (with `tear`, keeps half of the
    /// latest write), detaches the mount and waits for the process to end.
    /// Returns the filesystem's report line.
    pub fn power_cut(mut self, tear: bool) -> io::Result<String> {
        let reply = self.command(if tear { "crash-tear" } else { "crash" })?;
        if let Some(mut c) = self.child.take() {
            let start = Instant::now();
            while c.try_wait()?.is_none() {
                if start.elapsed() > Duration::from_secs(20) {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(reply)
    }
}

impl Drop for Mounted {
    /// A clean unmount (SIGTERM); nothing is dropped.
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let start = Instant::now();
            while matches!(c.try_wait(), Ok(None)) && start.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        detach(&self.mountpoint);
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
