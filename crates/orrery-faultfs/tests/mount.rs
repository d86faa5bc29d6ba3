//! The filesystem mounted for real (root and /dev/fuse; skipped with the
//! reason printed otherwise): what a power cut keeps and drops, torn
//! writes, and fsync failing with EIO.

use orrery_faultfs::Mounted;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

fn mount(dir: &Path) -> Option<Mounted> {
    if let Some(why) = orrery_faultfs::unavailable() {
        println!("SKIPPED: {why}");
        return None;
    }
    Some(Mounted::start(&dir.join("backing"), &dir.join("mnt")).expect("mount"))
}

fn sync_dir(p: &Path) {
    File::open(p).unwrap().sync_all().unwrap();
}

#[test]
fn a_power_cut_drops_exactly_what_was_not_synced() {
    let dir = tempfile::tempdir().unwrap();
    let Some(m) = mount(dir.path()) else { return };
    let mnt = m.mountpoint.clone();
    // A log written and synced, then appended to without a sync.
    let mut log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(mnt.join("log"))
        .unwrap();
    log.write_all(b"one;two;").unwrap();
    log.sync_data().unwrap();
    log.write_all(b"three;").unwrap();
    // An overwrite of synced bytes, not synced.
    let mut over = File::create(mnt.join("over")).unwrap();
    over.write_all(b"AAAAAAAA").unwrap();
    over.sync_all().unwrap();
    std::os::unix::fs::FileExt::write_all_at(&over, b"BB", 3).unwrap();
    sync_dir(&mnt);
    // Entries changed after the directory's last sync.
    std::fs::write(mnt.join("unsynced-new"), b"x").unwrap();
    std::fs::create_dir(mnt.join("d")).unwrap();
    std::fs::write(mnt.join("d/inner"), b"kept").unwrap();
    // A file sync makes its creation and its new directory durable.
    File::options()
        .write(true)
        .open(mnt.join("d/inner"))
        .unwrap()
        .sync_all()
        .unwrap();
    // Read back through the mount before the cut: everything is there.
    assert_eq!(std::fs::read(mnt.join("log")).unwrap(), b"one;two;three;");
    assert_eq!(std::fs::read(mnt.join("over")).unwrap(), b"AAABBAAA");
    let stats = m.command("stats").unwrap();
    assert!(stats.contains("dirty_files=3"), "{stats}");
    drop((log, over));

    let backing = m.backing.clone();
    let report = m.power_cut(false).unwrap();
    assert!(report.contains("files_reverted=2"), "{report}");
    assert_eq!(std::fs::read(backing.join("log")).unwrap(), b"one;two;");
    assert_eq!(std::fs::read(backing.join("over")).unwrap(), b"AAAAAAAA");
    assert!(
        !backing.join("unsynced-new").exists(),
        "an entry created after the last directory sync survived"
    );
    assert_eq!(std::fs::read(backing.join("d/inner")).unwrap(), b"kept");

    // Remounted, it serves what survived.
    let m = mount(dir.path()).unwrap();
    assert_eq!(
        std::fs::read(m.mountpoint.join("log")).unwrap(),
        b"one;two;"
    );
}

#[test]
fn removals_and_renames_come_back_unless_the_directory_was_synced() {
    let dir = tempfile::tempdir().unwrap();
    let Some(m) = mount(dir.path()) else { return };
    let mnt = m.mountpoint.clone();
    for name in ["a", "b", "c"] {
        let mut f = File::create(mnt.join(name)).unwrap();
        f.write_all(name.as_bytes()).unwrap();
        f.sync_all().unwrap();
    }
    sync_dir(&mnt);
    std::fs::remove_file(mnt.join("a")).unwrap();
    std::fs::rename(mnt.join("b"), mnt.join("c")).unwrap();
    std::fs::create_dir(mnt.join("sub")).unwrap();
    sync_dir(&mnt.join("sub"));
    std::fs::rename(mnt.join("c"), mnt.join("sub/moved")).unwrap();
    assert!(!mnt.join("a").exists());
    let backing = m.backing.clone();
    m.power_cut(false).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&backing)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != orrery_faultfs::state::TRASH)
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b", "c", "sub"]);
    assert_eq!(std::fs::read(backing.join("a")).unwrap(), b"a");
    assert_eq!(std::fs::read(backing.join("b")).unwrap(), b"b");
    assert_eq!(std::fs::read(backing.join("c")).unwrap(), b"c");
}

#[test]
fn a_torn_write_keeps_half_of_the_latest_write() {
    let dir = tempfile::tempdir().unwrap();
    let Some(m) = mount(dir.path()) else { return };
    let mut f = File::create(m.mountpoint.join("wal")).unwrap();
    f.write_all(b"head").unwrap();
    f.sync_all().unwrap();
    sync_dir(&m.mountpoint);
    f.write_all(b"0123456789").unwrap();
    drop(f);
    let backing = m.backing.clone();
    let report = m.power_cut(true).unwrap();
    assert!(report.contains("torn_kept=5"), "{report}");
    assert_eq!(std::fs::read(backing.join("wal")).unwrap(), b"head01234");
}

#[test]
fn fail_fsync_mode_fails_every_sync_with_eio() {
    let dir = tempfile::tempdir().unwrap();
    let Some(m) = mount(dir.path()) else { return };
    let mut f = File::create(m.mountpoint.join("x")).unwrap();
    f.write_all(b"1").unwrap();
    f.sync_all().unwrap();
    m.command("fail-fsync on").unwrap();
    f.write_all(b"2").unwrap();
    let e = f.sync_data().unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    assert_eq!(
        File::open(&m.mountpoint)
            .unwrap()
            .sync_all()
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EIO)
    );
    m.command("fail-fsync off").unwrap();
    drop(f);
    let backing = m.backing.clone();
    m.power_cut(false).unwrap();
    // The failed sync made nothing durable.
    assert_eq!(std::fs::read(backing.join("x")).unwrap(), b"1");
}
