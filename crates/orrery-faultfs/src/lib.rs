//! A FUSE filesystem for tests that loses what was not fsynced.
//!
//! Mounted over a node's data directory, it passes every operation through
//! to a backing directory, but remembers what each file and directory held
//! at its last `fsync`/`fdatasync`. On command (the control socket, see
//! [`control`]) it cuts the power: every write and every directory entry
//! change (create, unlink, rename) not covered by a sync is undone on the
//! backing tree, optionally keeping half of the latest write (a torn
//! write), and the mount is dropped. A mode makes every fsync fail with
//! EIO. The idea is that of Jepsen's lazyfs; the code is our own.
//!
//! The durability models are pure logic ([`shadow`] for file data,
//! [`journal`] for entries) with property tests against simpler models;
//! [`state`] applies them to the backing tree and [`fs`] is the FUSE side.

pub mod control;
pub mod fs;
pub mod harness;
pub mod journal;
pub mod shadow;
pub mod state;

pub use harness::{detach, unavailable, Mounted};
