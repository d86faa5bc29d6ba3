use super::*;
use proptest::prelude::*;

fn header(groups: Vec<GroupId>) -> BackupHeader {
    BackupHeader {
        cluster_id: "0123456789abcdef".into(),
        cluster_version: 3,
        build: "orrery test".into(),
        created_ms: 1_700_000_000_000,
        source_node: 2,
        shard_count: groups.len().saturating_sub(1) as u32,
        groups,
    }
}

fn sections(datas: &[Vec<u8>]) -> Vec<Section> {
    datas
        .iter()
        .enumerate()
        .map(|(i, d)| Section {
            group: i as u64,
            point: LogPoint {
                index: 100 + i as u64,
                term: 3,
                leader: 1 + i as u64 % 3,
            },
            data: d.clone(),
        })
        .collect()
}

fn encode(h: &BackupHeader, s: &[Section]) -> Vec<u8> {
    let mut out = Vec::new();
    write_backup(&mut out, h, s).expect("write");
    out
}

fn read_all(bytes: &[u8]) -> Result<(BackupHeader, Vec<Section>)> {
    let mut r = BackupReader::open(bytes)?;
    let mut out = Vec::new();
    while let Some(s) = r.next_section()? {
        out.push(s);
    }
    Ok((r.header().clone(), out))
}

#[test]
fn round_trip() {
    let datas = vec![b"placement".to_vec(), vec![], vec![7u8; 100_000]];
    let h = header(vec![0, 1, 2]);
    let s = sections(&datas);
    let bytes = encode(&h, &s);
    let (h2, s2) = read_all(&bytes).expect("read");
    assert_eq!(h2, h);
    assert_eq!(s2, s);
    let (_, table) = verify(&bytes[..]).expect("verify");
    assert_eq!(table.len(), 3);
    assert_eq!(table[2].bytes, 100_000);
    assert_eq!(table[1].point.index, 101);
}

/// Every single flipped byte (each bit pattern tried on a few positions,
/// one pattern on all) is refused.
#[test]
fn every_flipped_byte_is_detected() {
    let datas = vec![b"p".to_vec(), b"shard zero".to_vec(), vec![]];
    let bytes = encode(&header(vec![0, 1, 2]), &sections(&datas));
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x01;
        assert!(verify(&bad[..]).is_err(), "flip at byte {i} not detected");
    }
}

#[test]
fn truncation_and_trailing_bytes_are_refused() {
    let bytes = encode(
        &header(vec![0, 1]),
        &sections(&[b"a".to_vec(), b"b".to_vec()]),
    );
    for n in 0..bytes.len() {
        assert!(verify(&bytes[..n]).is_err(), "cut at {n} not detected");
    }
    let mut long = bytes.clone();
    long.push(0);
    assert!(matches!(
        verify(&long[..]),
        Err(BackupFileError::Damaged(m)) if m.contains("after")
    ));
}

#[test]
fn a_missing_group_is_refused_by_writer_and_reader() {
    let h = header(vec![0, 1, 2]);
    let s = sections(&[b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    // The writer will not finish without every group...
    assert!(write_backup(Vec::new(), &h, &s[..2]).is_err());
    // ... nor take them out of order.
    let (mut enc, _) = BackupEncoder::new(&h).expect("header");
    assert!(enc.section(1, LogPoint::default(), b"x").is_err());
    // A file whose header lists fewer groups than it holds is refused.
    let bytes = encode(&header(vec![0, 1]), &s[..2]);
    let mut spliced = bytes[..bytes.len()].to_vec();
    spliced.extend_from_slice(b"junk");
    assert!(verify(&spliced[..]).is_err());
}

#[test]
fn wrong_magic_and_format_are_named() {
    let bytes = encode(&header(vec![0]), &sections(&[b"a".to_vec()]));
    let mut bad = bytes.clone();
    bad[0] = b'X';
    assert!(matches!(verify(&bad[..]), Err(BackupFileError::BadMagic)));
    let mut bad = bytes.clone();
    bad[8] = 9;
    assert!(matches!(
        verify(&bad[..]),
        Err(BackupFileError::UnsupportedFormat(9))
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any contents round-trip, and any one byte changed to any other
    /// value is detected.
    #[test]
    fn round_trip_and_any_change_detected(
        datas in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..5),
        pos in any::<prop::sample::Index>(),
        delta in 1u8..=255,
    ) {
        let groups: Vec<GroupId> = (0..datas.len() as u64).collect();
        let h = header(groups);
        let s = sections(&datas);
        let bytes = encode(&h, &s);
        let (h2, s2) = read_all(&bytes).expect("read");
        prop_assert_eq!(h2, h);
        prop_assert_eq!(s2, s);
        let i = pos.index(bytes.len());
        let mut bad = bytes.clone();
        bad[i] = bad[i].wrapping_add(delta);
        prop_assert!(verify(&bad[..]).is_err(), "change at byte {} not detected", i);
    }
}
