//! `orrery-faultfs mount BACKING MOUNTPOINT --control SOCKET`: mounts the
//! filesystem in the foreground until SIGTERM/SIGINT (a clean unmount) or a
//! power cut through the control socket. `orrery-faultfs ctl SOCKET CMD`
//! sends one command (`ping`, `stats`, `fail-fsync on|off`, `crash`,
//! `crash-tear`).

use anyhow::Context;
use clap::{Parser, Subcommand};
use orrery_faultfs::{control, fs::FaultFs, state::State};
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "A FUSE filesystem that loses what was not fsynced (for tests)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Mounts BACKING at MOUNTPOINT (foreground).
    Mount {
        backing: PathBuf,
        mountpoint: PathBuf,
        /// Unix socket for commands.
        #[arg(long)]
        control: PathBuf,
    },
    /// Sends one command to a mount's control socket and prints the reply.
    Ctl {
        control: PathBuf,
        command: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,fuser=warn".into()),
        )
        .init();
    match Cli::parse().cmd {
        Cmd::Ctl { control, command } => {
            println!("{}", control::send(&control, &command.join(" "))?);
            Ok(())
        }
        Cmd::Mount {
            backing,
            mountpoint,
            control,
        } => mount(backing, mountpoint, control),
    }
}

fn mount(backing: PathBuf, mountpoint: PathBuf, sock: PathBuf) -> anyhow::Result<()> {
    let backing = backing
        .canonicalize()
        .with_context(|| format!("backing directory {}", backing.display()))?;
    // SIGTERM/SIGINT are taken by sigwait below, in this thread only.
    let signals = block_signals();
    let fs = FaultFs::new(State::new(backing.clone()).context("preparing the backing directory")?);
    let shared = fs.shared();
    let session = orrery_faultfs::harness::spawn(fs, &mountpoint)
        .with_context(|| format!("mounting at {}", mountpoint.display()))?;
    tracing::info!(backing = %backing.display(), mountpoint = %mountpoint.display(), control = %sock.display(), "mounted");
    let mnt = mountpoint.clone();
    control::serve(&sock, shared, move || {
        // The mount is detached at once: the kernel's cached pages of it go
        // with it, as memory does in a power cut.
        orrery_faultfs::detach(&mnt);
        std::process::exit(0);
    })
    .with_context(|| format!("control socket {}", sock.display()))?;
    let sig = wait_signal(&signals);
    tracing::info!(signal = sig, "unmounting (clean: nothing is dropped)");
    // fuser's own unmount waits for its worker threads, which sit in a
    // read of /dev/fuse that only the unmount ends: detach, then exit.
    orrery_faultfs::detach(&mountpoint);
    let _ = std::fs::remove_file(&sock);
    drop(session);
    std::process::exit(0)
}

fn block_signals() -> libc::sigset_t {
    // SAFETY: plain libc signal-set calls on a local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_signal(set: &libc::sigset_t) -> i32 {
    let mut sig = 0;
    // SAFETY: `set` was initialised by block_signals.
    unsafe { libc::sigwait(set, &mut sig) };
    sig
}
